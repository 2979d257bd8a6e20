//! Every namespace's `default` ServiceAccount (upstream's `serviceaccount` controller) and
//! its `kube-root-ca.crt` ConfigMap with the cluster CA (`root-ca-cert-publisher`), so pods'
//! ServiceAccount volumes have an account to request tokens for and a CA to check the API
//! server with. A deleted one comes back; a namespace being deleted gets none.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{ControllersConfig, Error};
use crate::objects::deleting;

/// The ConfigMap every namespace gets, with the cluster CA under `ca.crt`.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const DEFAULT: &str = "default";

struct Context {
    client: kube::Client,
    root_ca: Option<String>,
}

pub async fn run(client: kube::Client, config: ControllersConfig) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::all(client.clone());
    let configmaps: Api<ConfigMap> = Api::all(client.clone());
    let in_namespace =
        |namespace: Option<String>| namespace.map(|ns| ObjectRef::<Namespace>::new(&ns));
    let controller = Controller::new(namespaces, watcher::Config::default())
        .watches(
            accounts,
            watcher::Config::default().fields(&format!("metadata.name={DEFAULT}")),
            move |account| in_namespace(account.namespace()),
        )
        .watches(
            configmaps,
            watcher::Config::default().fields(&format!("metadata.name={ROOT_CA_CONFIGMAP}")),
            move |configmap| in_namespace(configmap.namespace()),
        );
    let context = Arc::new(Context {
        client,
        root_ca: config.root_ca.clone(),
    });
    super::drive(
        controller,
        "serviceaccount",
        reconcile,
        context,
        config.retry,
    )
    .await;
}

#[tracing::instrument(name = "reconcile", skip_all, fields(namespace = %namespace.name_any()))]
async fn reconcile(namespace: Arc<Namespace>, context: Arc<Context>) -> Result<Action, Error> {
    if deleting(namespace.meta()) {
        return Ok(Action::await_change());
    }
    let ns = namespace.name_any();
    let accounts: Api<ServiceAccount> = Api::namespaced(context.client.clone(), &ns);
    if accounts.get_opt(DEFAULT).await?.is_none() {
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": DEFAULT}})).expect("valid");
        create(accounts.create(&PostParams::default(), &account).await)?;
    }
    if let Some(ca) = &context.root_ca {
        let configmaps: Api<ConfigMap> = Api::namespaced(context.client.clone(), &ns);
        match configmaps.get_opt(ROOT_CA_CONFIGMAP).await? {
            None => {
                let configmap: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": ROOT_CA_CONFIGMAP},
                    "data": {"ca.crt": ca},
                }))
                .expect("valid");
                create(configmaps.create(&PostParams::default(), &configmap).await)?;
            }
            Some(existing) => {
                let current = existing.data.as_ref().and_then(|d| d.get("ca.crt"));
                if current != Some(ca) {
                    configmaps
                        .patch(
                            ROOT_CA_CONFIGMAP,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"data": {"ca.crt": ca}})),
                        )
                        .await?;
                }
            }
        }
    }
    Ok(Action::await_change())
}

/// A create that lost to another writer (or to the namespace going away) is fine.
fn create<T>(result: Result<T, kube::Error>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 || e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
