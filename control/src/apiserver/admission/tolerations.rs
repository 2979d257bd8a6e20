//! DefaultTolerationSeconds, as in Kubernetes: a new pod tolerates its node going not-ready or
//! unreachable for a while (300 s) before the node lifecycle controller evicts it.

use serde_json::{Value, json};

use super::{Operation, Plugin, Request};
use crate::apiserver::status::ApiResult;
use crate::store::Store;

/// How long new pods tolerate a node going not-ready or unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultTolerations {
    pub not_ready_seconds: i64,
    pub unreachable_seconds: i64,
}

impl Default for DefaultTolerations {
    fn default() -> Self {
        Self {
            not_ready_seconds: 300,
            unreachable_seconds: 300,
        }
    }
}

pub struct DefaultTolerationSeconds(pub DefaultTolerations);

#[async_trait::async_trait]
impl Plugin for DefaultTolerationSeconds {
    fn name(&self) -> &'static str {
        "DefaultTolerationSeconds"
    }

    async fn admit(&self, _store: &dyn Store, request: &mut Request<'_>) -> ApiResult<()> {
        if request.operation == Operation::Create
            && request.subresource.is_none()
            && request.is("", "Pod")
        {
            add(request.object, self.0);
        }
        Ok(())
    }
}

/// Gives a pod the not-ready and unreachable NoExecute tolerations it does not have.
fn add(pod: &mut Value, defaults: DefaultTolerations) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let Value::Array(list) = spec.entry("tolerations").or_insert_with(|| json!([])) else {
        return;
    };
    for (key, seconds) in [
        ("node.kubernetes.io/not-ready", defaults.not_ready_seconds),
        (
            "node.kubernetes.io/unreachable",
            defaults.unreachable_seconds,
        ),
    ] {
        let tolerated = list.iter().any(|t| {
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let exists_all = t.get("key").is_none_or(|k| k == "")
                && t.get("operator").and_then(Value::as_str) == Some("Exists");
            (t.get("key").and_then(Value::as_str) == Some(key) || exists_all)
                && (effect.is_empty() || effect == "NoExecute")
        });
        if !tolerated {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_both_tolerations_unless_they_have_them() {
        let mut pod = json!({"spec": {"containers": []}});
        add(&mut pod, DefaultTolerations::default());
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(pod["spec"]["tolerations"][1]["tolerationSeconds"], 300);
        let mut tolerant = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        add(&mut tolerant, DefaultTolerations::default());
        assert_eq!(tolerant["spec"]["tolerations"].as_array().unwrap().len(), 1);
    }
}
