//! ResourceQuotas and LimitRanges, with upstream's defaults and validation. The ResourceQuota
//! step of admission (`admission/quota.rs`) charges writes to quotas, and the LimitRanger
//! plugin applies LimitRanges to pods.

use k8s_openapi::api::core::v1;
use serde_json::{Value, json};

use super::{Cause, KindStrategy, ObjectType, Typed, cause};
use crate::apiserver::protobuf;

pub struct ResourceQuota;

pub static RESOURCE_QUOTA: ResourceQuota = ResourceQuota;

static RESOURCE_QUOTA_TYPE: Typed<v1::ResourceQuota> = Typed::new();

const SCOPES: [&str; 6] = [
    "BestEffort",
    "CrossNamespacePodAffinity",
    "NotBestEffort",
    "NotTerminating",
    "PriorityClass",
    "Terminating",
];

impl KindStrategy for ResourceQuota {
    fn object_type(&self) -> &dyn ObjectType {
        &RESOURCE_QUOTA_TYPE
    }

    fn protobuf(&self) -> Option<&'static protobuf::Message> {
        Some(&protobuf::RESOURCE_QUOTA)
    }

    /// Quantities that parse and are not negative, known scopes, and scope selectors whose
    /// operators have the values they need.
    fn validate(&self, object: &Value, causes: &mut Vec<Cause>) {
        for (resource, value) in object["spec"]["hard"].as_object().into_iter().flatten() {
            let path = format!("spec.hard[{resource}]");
            let text = value.as_str().unwrap_or_default();
            match bosun_api::quantity::parse(text) {
                Err(_) => causes.push(not_a_quantity(&path, text)),
                Ok(amount) if amount < 0.0 => causes.push(cause(
                    &path,
                    format!("Invalid value: {text:?}: must be greater than or equal to 0"),
                )),
                Ok(_) => {}
            }
        }
        let supported = || {
            let names: Vec<String> = SCOPES.iter().map(|s| format!("{s:?}")).collect();
            format!("supported values: {}", names.join(", "))
        };
        for (i, scope) in object["spec"]["scopes"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let scope = scope.as_str().unwrap_or_default();
            if !SCOPES.contains(&scope) {
                causes.push(cause(
                    &format!("spec.scopes[{i}]"),
                    format!("Unsupported value: {scope:?}: {}", supported()),
                ));
            }
        }
        let expressions = object["spec"]["scopeSelector"]["matchExpressions"].as_array();
        for (i, expression) in expressions.into_iter().flatten().enumerate() {
            let path = format!("spec.scopeSelector.matchExpressions[{i}]");
            let scope = expression["scopeName"].as_str().unwrap_or_default();
            if !SCOPES.contains(&scope) {
                causes.push(cause(
                    &format!("{path}.scopeName"),
                    format!("Unsupported value: {scope:?}: {}", supported()),
                ));
            }
            let operator = expression["operator"].as_str().unwrap_or_default();
            let values = expression["values"].as_array().map_or(0, Vec::len);
            match operator {
                "In" | "NotIn" if values == 0 => causes.push(cause(
                    &format!("{path}.values"),
                    "Required value: must be at least one value when `operator` is 'In' or 'NotIn' for scope selector",
                )),
                "Exists" | "DoesNotExist" if values > 0 => causes.push(cause(
                    &format!("{path}.values"),
                    "Invalid value: must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
                )),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => causes.push(cause(
                    &format!("{path}.operator"),
                    format!(
                        "Unsupported value: {other:?}: supported values: \"DoesNotExist\", \"Exists\", \"In\", \"NotIn\""
                    ),
                )),
            }
        }
    }
}

fn not_a_quantity(path: &str, text: &str) -> Cause {
    cause(
        path,
        format!(
            "Invalid value: {text:?}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        ),
    )
}

pub struct LimitRange;

pub static LIMIT_RANGE: LimitRange = LimitRange;

static LIMIT_RANGE_TYPE: Typed<v1::LimitRange> = Typed::new();

const TYPES: [&str; 3] = ["Pod", "Container", "PersistentVolumeClaim"];

impl KindStrategy for LimitRange {
    fn object_type(&self) -> &dyn ObjectType {
        &LIMIT_RANGE_TYPE
    }

    /// Upstream's defaults of a `Container` item: the default limit is the max, the default
    /// request the default limit, else the min.
    fn defaults(&self, object: &mut Value, _creating: bool) {
        let Some(items) = object
            .pointer_mut("/spec/limits")
            .and_then(Value::as_array_mut)
        else {
            return;
        };
        for item in items.iter_mut().filter(|i| i["type"] == "Container") {
            for (from, to) in [
                ("max", "default"),
                ("default", "defaultRequest"),
                ("min", "defaultRequest"),
            ] {
                let Some(source) = item[from].as_object().cloned() else {
                    continue;
                };
                if !item[to].is_object() {
                    item[to] = json!({});
                }
                let target = item[to].as_object_mut().expect("an object");
                for (resource, value) in source {
                    target.entry(resource).or_insert(value);
                }
            }
        }
    }

    fn validate(&self, object: &Value, causes: &mut Vec<Cause>) {
        let items = object
            .pointer("/spec/limits")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            validate_item(&format!("spec.limits[{i}]"), item, causes);
        }
    }
}

/// Upstream's checks of one item: a known type, quantities that parse, and
/// min ≤ defaultRequest ≤ default ≤ max with a ratio of at least 1.
fn validate_item(path: &str, item: &Value, causes: &mut Vec<Cause>) {
    let kind = item["type"].as_str().unwrap_or_default();
    if !TYPES.contains(&kind) {
        causes.push(cause(
            &format!("{path}.type"),
            format!(
                "Unsupported value: {kind:?}: supported values: \"Container\", \"PersistentVolumeClaim\", \"Pod\""
            ),
        ));
    }
    if kind == "Pod" {
        for field in ["default", "defaultRequest"] {
            if item[field].as_object().is_some_and(|m| !m.is_empty()) {
                causes.push(cause(
                    &format!("{path}.{field}"),
                    "Forbidden: may not be specified when `type` is 'Pod'",
                ));
            }
        }
    }
    let fields = [
        "min",
        "max",
        "default",
        "defaultRequest",
        "maxLimitRequestRatio",
    ];
    let mut parsed: std::collections::BTreeMap<&str, Vec<(String, f64, String)>> =
        Default::default();
    for field in fields {
        for (resource, value) in item[field].as_object().into_iter().flatten() {
            let text = value.as_str().unwrap_or_default();
            match bosun_api::quantity::parse(text) {
                Ok(amount) => parsed.entry(field).or_default().push((
                    resource.clone(),
                    amount,
                    text.to_string(),
                )),
                Err(_) => causes.push(not_a_quantity(&format!("{path}.{field}[{resource}]"), text)),
            }
        }
    }
    let get = |field: &str, resource: &str| {
        parsed
            .get(field)
            .and_then(|list| list.iter().find(|(r, _, _)| r == resource))
            .map(|(_, amount, text)| (*amount, text.as_str()))
    };
    let mut resources: Vec<&str> = parsed
        .values()
        .flatten()
        .map(|(r, _, _)| r.as_str())
        .collect();
    resources.sort();
    resources.dedup();
    for resource in resources {
        let min = get("min", resource);
        let max = get("max", resource);
        let default = get("default", resource);
        let default_request = get("defaultRequest", resource);
        let ratio = get("maxLimitRequestRatio", resource);
        let mut greater = |field: &str,
                           at: Option<(f64, &str)>,
                           what: &str,
                           bound: Option<(f64, &str)>,
                           bound_what: &str| {
            if let (Some((value, text)), Some((limit, limit_text))) = (at, bound)
                && value > limit
            {
                causes.push(cause(
                    &format!("{path}.{field}[{resource}]"),
                    format!(
                        "Invalid value: {text:?}: {what} value {text} is greater than {bound_what} value {limit_text}"
                    ),
                ));
            }
        };
        greater("min", min, "min", max, "max");
        greater(
            "defaultRequest",
            min,
            "min",
            default_request,
            "default request",
        );
        greater(
            "defaultRequest",
            default_request,
            "default request",
            max,
            "max",
        );
        greater(
            "defaultRequest",
            default_request,
            "default request",
            default,
            "default limit",
        );
        greater("default", min, "min", default, "default");
        greater("default", default, "default", max, "max");
        if let Some((value, text)) = ratio
            && value < 1.0
        {
            causes.push(cause(
                &format!("{path}.maxLimitRequestRatio[{resource}]"),
                format!("Invalid value: {text:?}: ratio {text} is less than 1"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_items_get_upstreams_defaults() {
        let mut range = json!({"spec": {"limits": [
            {"type": "Container", "max": {"memory": "1Gi"}, "min": {"cpu": "100m"}},
        ]}});
        LIMIT_RANGE.defaults(&mut range, true);
        let item = &range["spec"]["limits"][0];
        assert_eq!(item["default"], json!({"memory": "1Gi"}));
        assert_eq!(
            item["defaultRequest"],
            json!({"memory": "1Gi", "cpu": "100m"})
        );
    }

    #[test]
    fn min_above_max_and_bad_quantities_are_invalid_with_their_paths() {
        let range = json!({"spec": {"limits": [
            {"type": "Container", "min": {"memory": "2Gi"}, "max": {"memory": "1Gi"},
             "maxLimitRequestRatio": {"cpu": "500m"}},
            {"type": "Pod", "max": {"cpu": "lots"}, "default": {"cpu": "1"}},
            {"type": "Node"},
        ]}});
        let mut causes = Vec::new();
        LIMIT_RANGE.validate(&range, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"spec.limits[0].min[memory]"), "{fields:?}");
        assert!(
            fields.contains(&"spec.limits[0].maxLimitRequestRatio[cpu]"),
            "{fields:?}"
        );
        assert!(fields.contains(&"spec.limits[1].max[cpu]"), "{fields:?}");
        assert!(fields.contains(&"spec.limits[1].default"), "{fields:?}");
        assert!(fields.contains(&"spec.limits[2].type"), "{fields:?}");
        let min = causes
            .iter()
            .find(|c| c.field == "spec.limits[0].min[memory]")
            .unwrap();
        assert_eq!(
            min.message,
            "Invalid value: \"2Gi\": min value 2Gi is greater than max value 1Gi"
        );
    }
}
