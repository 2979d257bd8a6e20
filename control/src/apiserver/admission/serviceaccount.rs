//! ServiceAccount admission, as upstream's: a new pod runs as `spec.serviceAccountName`
//! (`default` unless it says), and gets the projected volume `kube-api-access-XXXXX` (a token
//! of its account bound to it, the cluster CA from `kube-root-ca.crt`, its namespace),
//! mounted read-only at `/var/run/secrets/kubernetes.io/serviceaccount` in every container,
//! unless the pod or its account sets `automountServiceAccountToken: false` or a container
//! already mounts something there.
//!
//! Where upstream refuses a pod whose account does not exist yet, Bosun admits it without the
//! volume: a namespace's `default` account is made by a controller moments after the
//! namespace, and a cluster run without that controller still runs pods.

use rand::Rng as _;
use serde_json::{Value, json};

use super::{Operation, Plugin, Request};
use crate::apiserver::status::ApiResult;
use crate::store::{self, Key, Store};

/// Where the volume is mounted.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// How long the volume's token lives (upstream's 3607 s, an hour and a bit).
const TOKEN_SECONDS: i64 = 3607;

pub struct ServiceAccount;

#[async_trait::async_trait]
impl Plugin for ServiceAccount {
    fn name(&self) -> &'static str {
        "ServiceAccount"
    }

    async fn admit(&self, store: &dyn Store, request: &mut Request<'_>) -> ApiResult<()> {
        if request.operation != Operation::Create
            || request.subresource.is_some()
            || !request.is("", "Pod")
        {
            return Ok(());
        }
        let namespace = request.namespace.unwrap_or("default");
        let pod = &mut *request.object;
        let Some(spec) = pod.get_mut("spec").filter(|s| s.is_object()) else {
            return Ok(());
        };
        let account = spec["serviceAccountName"]
            .as_str()
            .or(spec["serviceAccount"].as_str())
            .filter(|a| !a.is_empty())
            .unwrap_or("default")
            .to_string();
        spec["serviceAccountName"] = json!(account);
        spec["serviceAccount"] = json!(account);
        if spec["automountServiceAccountToken"] == json!(false) {
            return Ok(());
        }
        let key = Key::new("serviceaccounts", namespace, &account);
        let stored = match store.get(&key).await {
            Ok(object) => object,
            Err(store::Error::NotFound { .. }) => return Ok(()),
            Err(error) => {
                return Err(crate::apiserver::status::ApiError::from_store(
                    error,
                    bosun_api::resources::find("", "v1", "serviceaccounts").expect("registered"),
                    &account,
                ));
            }
        };
        if stored.value["automountServiceAccountToken"] == json!(false) {
            return Ok(());
        }
        mount_token(spec);
        Ok(())
    }
}

/// Adds the volume and its mounts, unless a container mounts something at [`MOUNT_PATH`].
fn mount_token(spec: &mut Value) {
    let containers = ["initContainers", "containers"];
    let taken = containers.iter().any(|list| {
        spec[*list].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["volumeMounts"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == MOUNT_PATH))
            })
        })
    });
    if taken {
        return;
    }
    let suffix: String = {
        const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut rng = rand::thread_rng();
        (0..5)
            .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
            .collect()
    };
    let name = format!("kube-api-access-{suffix}");
    let volume = json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    match spec["volumes"].as_array_mut() {
        Some(volumes) => volumes.push(volume),
        None => spec["volumes"] = json!([volume]),
    }
    for list in containers {
        for container in spec[list].as_array_mut().into_iter().flatten() {
            let mount = json!({"name": name, "mountPath": MOUNT_PATH, "readOnly": true});
            match container["volumeMounts"].as_array_mut() {
                Some(mounts) => mounts.push(mount),
                None => container["volumeMounts"] = json!([mount]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_mounts_the_token_unless_the_path_is_taken() {
        let mut spec = json!({"containers": [{"name": "a"}, {"name": "b", "volumeMounts": [{"name": "x", "mountPath": "/x"}]}]});
        mount_token(&mut spec);
        let volume = spec["volumes"][0]["name"].as_str().unwrap().to_string();
        assert!(volume.starts_with("kube-api-access-"), "{volume}");
        assert_eq!(spec["containers"][0]["volumeMounts"][0]["name"], volume);
        assert_eq!(
            spec["containers"][1]["volumeMounts"][1]["mountPath"],
            MOUNT_PATH
        );
        let mut taken = json!({"containers": [{"name": "a", "volumeMounts": [{"name": "mine", "mountPath": MOUNT_PATH}]}]});
        mount_token(&mut taken);
        assert!(taken.get("volumes").is_none());
    }
}
