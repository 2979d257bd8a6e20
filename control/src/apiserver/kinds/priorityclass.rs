//! PriorityClasses (scheduling.k8s.io/v1): named priorities that pods ask for by
//! `priorityClassName`. The admission plugin `admission/priority.rs` turns the name into the
//! pod's `spec.priority`, by which the scheduler's queue orders pods.

use k8s_openapi::api::scheduling::v1;
use serde_json::{Value, json};

use super::{Cell, Column, KindStrategy, ObjectType, Typed, cause, col, set_default};
use crate::apiserver::status::Cause;

/// The highest value a class that is not a system class may have, as in Kubernetes.
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;

/// The classes every cluster has, with their values (Kubernetes' own).
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i64)] = &[
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];

pub struct PriorityClass;

static TYPE: Typed<v1::PriorityClass> = Typed::new();

impl KindStrategy for PriorityClass {
    fn object_type(&self) -> &dyn ObjectType {
        &TYPE
    }

    fn defaults(&self, object: &mut Value, _creating: bool) {
        set_default(object, "/preemptionPolicy", json!("PreemptLowerPriority"));
    }

    fn validate(&self, object: &Value, causes: &mut Vec<Cause>) {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let system = SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _)| *n == name);
        let value = object.get("value").and_then(Value::as_i64).unwrap_or(0);
        match system {
            Some((_, system_value)) if value != *system_value => causes.push(cause(
                "value",
                format!("Invalid value: {value}: the value of {name} is {system_value}"),
            )),
            Some(_) => {}
            None if name.starts_with("system-") => causes.push(cause(
                "metadata.name",
                "Forbidden: priority class names with 'system-' prefix are reserved for system use only",
            )),
            None if value > HIGHEST_USER_DEFINABLE_PRIORITY => causes.push(cause(
                "value",
                format!(
                    "Forbidden: maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"
                ),
            )),
            None => {}
        }
        if let Some(policy) = object.get("preemptionPolicy").and_then(Value::as_str)
            && !matches!(policy, "PreemptLowerPriority" | "Never")
        {
            causes.push(cause(
                "preemptionPolicy",
                format!("Unsupported value: {policy:?}: supported values: \"Never\", \"PreemptLowerPriority\""),
            ));
        }
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        for field in ["value", "preemptionPolicy"] {
            if old.get(field) != new.get(field) {
                causes.push(cause(field, "Forbidden: may not be changed in an update."));
            }
        }
    }

    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            col("VALUE", "integer", Cell::Field("/value")),
            col("GLOBAL-DEFAULT", "string", Cell::Computed(global_default)),
        ];
        COLUMNS
    }
}

fn global_default(class: &Value) -> Value {
    json!(class.get("globalDefault") == Some(&json!(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes(class: Value) -> Vec<String> {
        let mut causes = Vec::new();
        PriorityClass.validate(&class, &mut causes);
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn user_classes_stay_below_the_system_range() {
        assert!(causes(json!({"metadata": {"name": "high"}, "value": 1_000_000_000})).is_empty());
        let too_high = causes(json!({"metadata": {"name": "high"}, "value": 1_000_000_001}));
        assert_eq!(too_high.len(), 1);
        assert!(too_high[0].starts_with("value: Forbidden: maximum allowed value"));
        let reserved = causes(json!({"metadata": {"name": "system-mine"}, "value": 5}));
        assert!(
            reserved[0].contains("reserved for system use only"),
            "{reserved:?}"
        );
        assert!(
            causes(json!({"metadata": {"name": "system-node-critical"}, "value": 2_000_001_000}))
                .is_empty()
        );
        let policy =
            causes(json!({"metadata": {"name": "p"}, "value": 1, "preemptionPolicy": "Sometimes"}));
        assert!(
            policy[0].starts_with("preemptionPolicy: Unsupported value"),
            "{policy:?}"
        );
    }

    #[test]
    fn value_and_policy_do_not_change() {
        let old = json!({"value": 5, "preemptionPolicy": "Never"});
        let mut causes = Vec::new();
        PriorityClass.validate_update(
            &old,
            &json!({"value": 6, "preemptionPolicy": "Never"}),
            &mut causes,
        );
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "value");
    }
}
