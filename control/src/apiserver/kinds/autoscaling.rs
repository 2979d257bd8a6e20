//! HorizontalPodAutoscalers (autoscaling/v2): upstream's defaults (`minReplicas: 1`, a CPU
//! target of 80% when no metric is given, and the default scaling rules filled into a
//! `behavior` that is given), its validation, and `kubectl get hpa`'s TARGETS column.

use k8s_openapi::api::autoscaling::v2;
use serde_json::{Value, json};

use super::{
    Cell, Column, KindStrategy, ObjectType, Typed, cause, col, ensure_object, items, set_default,
};
use crate::apiserver::protobuf::{self, Message};
use crate::apiserver::status::Cause;

pub struct HorizontalPodAutoscaler;

static HPA: Typed<v2::HorizontalPodAutoscaler> = Typed::new();

/// The CPU utilization an HPA without metrics aims at, as upstream defaults it.
const DEFAULT_CPU_UTILIZATION: i64 = 80;

impl KindStrategy for HorizontalPodAutoscaler {
    fn object_type(&self) -> &dyn ObjectType {
        &HPA
    }

    fn defaults(&self, object: &mut Value, _creating: bool) {
        ensure_object(object, "/spec");
        set_default(object, "/spec/minReplicas", json!(1));
        let no_metrics = object
            .pointer("/spec/metrics")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if no_metrics {
            object["spec"]["metrics"] = json!([{
                "type": "Resource",
                "resource": {"name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION,
                }},
            }]);
        }
        // Only a behavior that is given gets its missing rules; without one the controller
        // applies upstream's behavior-less rules (`scaleUpLimit`, its stabilization flag).
        if object
            .pointer("/spec/behavior")
            .is_some_and(Value::is_object)
        {
            for (direction, policies, window) in [
                (
                    "scaleUp",
                    json!([
                        {"type": "Pods", "value": 4, "periodSeconds": 15},
                        {"type": "Percent", "value": 100, "periodSeconds": 15},
                    ]),
                    Some(0),
                ),
                (
                    "scaleDown",
                    json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
                    // The controller's --horizontal-pod-autoscaler-downscale-stabilization.
                    None,
                ),
            ] {
                let rules = format!("/spec/behavior/{direction}");
                ensure_object(object, &rules);
                set_default(object, &format!("{rules}/selectPolicy"), json!("Max"));
                set_default(object, &format!("{rules}/policies"), policies);
                if let Some(window) = window {
                    set_default(
                        object,
                        &format!("{rules}/stabilizationWindowSeconds"),
                        json!(window),
                    );
                }
            }
        }
    }

    fn validate(&self, object: &Value, causes: &mut Vec<Cause>) {
        validate_spec(object, causes);
    }

    fn validate_update(&self, _old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        validate_spec(new, causes);
    }

    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            col("REFERENCE", "string", Cell::Computed(reference)),
            col("TARGETS", "string", Cell::Computed(targets)),
            col("MINPODS", "integer", Cell::Field("/spec/minReplicas")),
            col("MAXPODS", "integer", Cell::Field("/spec/maxReplicas")),
            col(
                "REPLICAS",
                "integer",
                Cell::Field("/status/currentReplicas"),
            ),
        ];
        COLUMNS
    }

    fn protobuf(&self) -> Option<&'static Message> {
        Some(&protobuf::HORIZONTAL_POD_AUTOSCALER)
    }
}

fn validate_spec(hpa: &Value, causes: &mut Vec<Cause>) {
    let int = |pointer: &str| hpa.pointer(pointer).and_then(Value::as_i64);
    for field in ["kind", "name"] {
        let given = hpa
            .pointer(&format!("/spec/scaleTargetRef/{field}"))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        if !given {
            causes.push(cause(
                &format!("spec.scaleTargetRef.{field}"),
                "Required value",
            ));
        }
    }
    let min = int("/spec/minReplicas").unwrap_or(1);
    if min < 1 {
        causes.push(cause(
            "spec.minReplicas",
            format!("Invalid value: {min}: must be greater than or equal to 1"),
        ));
    }
    match int("/spec/maxReplicas") {
        None => causes.push(cause("spec.maxReplicas", "Required value")),
        Some(max) if max < 1 => causes.push(cause(
            "spec.maxReplicas",
            format!("Invalid value: {max}: must be greater than or equal to 1"),
        )),
        Some(max) if max < min => causes.push(cause(
            "spec.maxReplicas",
            format!("Invalid value: {max}: must be greater than or equal to `minReplicas`"),
        )),
        Some(_) => {}
    }
    for (i, metric) in items(hpa, "/spec/metrics").into_iter().enumerate() {
        validate_metric(metric, &format!("spec.metrics[{i}]"), causes);
    }
    for direction in ["scaleUp", "scaleDown"] {
        if let Some(rules) = hpa.pointer(&format!("/spec/behavior/{direction}")) {
            validate_rules(rules, &format!("spec.behavior.{direction}"), causes);
        }
    }
}

fn validate_metric(metric: &Value, path: &str, causes: &mut Vec<Cause>) {
    let text = |pointer: &str| metric.pointer(pointer).and_then(Value::as_str);
    match text("/type") {
        Some("Resource") | Some("ContainerResource") => {
            let source = if text("/type") == Some("Resource") {
                "resource"
            } else {
                "containerResource"
            };
            let Some(resource) = metric.get(source).filter(|r| r.is_object()) else {
                causes.push(cause(
                    &format!("{path}.{source}"),
                    "Required value: must populate information for the given metric source",
                ));
                return;
            };
            if resource
                .get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(cause(&format!("{path}.{source}.name"), "Required value"));
            }
            if source == "containerResource"
                && resource
                    .get("container")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            {
                causes.push(cause(
                    &format!("{path}.{source}.container"),
                    "Required value",
                ));
            }
            let target = &resource["target"];
            let target_path = format!("{path}.{source}.target");
            match target.get("type").and_then(Value::as_str) {
                Some("Utilization") => {
                    let utilization = target.get("averageUtilization").and_then(Value::as_i64);
                    if utilization.is_none_or(|u| u <= 0) {
                        causes.push(cause(
                            &format!("{target_path}.averageUtilization"),
                            "Required value: must set either a target raw value or a target utilization greater than 0",
                        ));
                    }
                }
                Some("AverageValue") => {
                    positive_quantity(target, "averageValue", &target_path, causes)
                }
                other => causes.push(cause(
                    &format!("{target_path}.type"),
                    format!(
                        "Unsupported value: {:?}: supported values: \"Utilization\", \"AverageValue\"",
                        other.unwrap_or_default()
                    ),
                )),
            }
        }
        Some("Pods") => {
            let Some(pods) = metric.get("pods").filter(|p| p.is_object()) else {
                causes.push(cause(
                    &format!("{path}.pods"),
                    "Required value: must populate information for the given metric source",
                ));
                return;
            };
            if pods
                .pointer("/metric/name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(cause(&format!("{path}.pods.metric.name"), "Required value"));
            }
            let target = &pods["target"];
            let target_path = format!("{path}.pods.target");
            if target.get("type").and_then(Value::as_str) == Some("AverageValue") {
                positive_quantity(target, "averageValue", &target_path, causes);
            } else {
                causes.push(cause(
                    &format!("{target_path}.type"),
                    "Unsupported value: must be AverageValue for a Pods metric",
                ));
            }
        }
        Some("Object") | Some("External") => {}
        other => causes.push(cause(
            &format!("{path}.type"),
            format!(
                "Unsupported value: {:?}: supported values: \"ContainerResource\", \"External\", \"Object\", \"Pods\", \"Resource\"",
                other.unwrap_or_default()
            ),
        )),
    }
}

fn positive_quantity(target: &Value, field: &str, path: &str, causes: &mut Vec<Cause>) {
    let value = target.get(field).and_then(Value::as_str);
    match value.map(bosun_api::quantity::parse) {
        Some(Ok(v)) if v > 0.0 => {}
        Some(Ok(_)) => causes.push(cause(
            &format!("{path}.{field}"),
            "Invalid value: must be positive",
        )),
        Some(Err(e)) => causes.push(cause(
            &format!("{path}.{field}"),
            format!("Invalid value: {e}"),
        )),
        None => causes.push(cause(&format!("{path}.{field}"), "Required value")),
    }
}

fn validate_rules(rules: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(window) = rules
        .get("stabilizationWindowSeconds")
        .and_then(Value::as_i64)
        && !(0..=3600).contains(&window)
    {
        causes.push(cause(
            &format!("{path}.stabilizationWindowSeconds"),
            format!("Invalid value: {window}: must be between 0 and 3600"),
        ));
    }
    let select = rules.get("selectPolicy").and_then(Value::as_str);
    if let Some(select) = select
        && !["Max", "Min", "Disabled"].contains(&select)
    {
        causes.push(cause(
            &format!("{path}.selectPolicy"),
            format!(
                "Unsupported value: {select:?}: supported values: \"Disabled\", \"Max\", \"Min\""
            ),
        ));
    }
    let policies = rules.get("policies").and_then(Value::as_array);
    if select != Some("Disabled") && policies.is_some_and(Vec::is_empty) {
        causes.push(cause(
            &format!("{path}.policies"),
            "Required value: must specify at least one Policy",
        ));
    }
    for (i, policy) in policies.into_iter().flatten().enumerate() {
        let at = format!("{path}.policies[{i}]");
        let kind = policy.get("type").and_then(Value::as_str);
        if !matches!(kind, Some("Pods") | Some("Percent")) {
            causes.push(cause(
                &format!("{at}.type"),
                format!(
                    "Unsupported value: {:?}: supported values: \"Percent\", \"Pods\"",
                    kind.unwrap_or_default()
                ),
            ));
        }
        let value = policy.get("value").and_then(Value::as_i64).unwrap_or(0);
        if value <= 0 {
            causes.push(cause(
                &format!("{at}.value"),
                format!("Invalid value: {value}: must be greater than zero"),
            ));
        }
        let period = policy
            .get("periodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if !(1..=1800).contains(&period) {
            causes.push(cause(
                &format!("{at}.periodSeconds"),
                format!("Invalid value: {period}: must be greater than zero and less than or equal to 1800"),
            ));
        }
    }
}

fn reference(hpa: &Value) -> Value {
    let field = |name: &str| {
        hpa.pointer(&format!("/spec/scaleTargetRef/{name}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    json!(format!("{}/{}", field("kind"), field("name")))
}

/// `cpu: 12%/50%, memory: <unknown>/64Mi + 1 more...`, as kubectl prints an HPA's metrics: the
/// first two, each as current over target.
fn targets(hpa: &Value) -> Value {
    let specs = items(hpa, "/spec/metrics");
    if specs.is_empty() {
        return json!("<none>");
    }
    let statuses = items(hpa, "/status/currentMetrics");
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let shown: Vec<String> = specs
        .iter()
        .take(2)
        .enumerate()
        .map(|(i, spec)| {
            let status = statuses.get(i).copied();
            let unknown = || "<unknown>".to_string();
            match spec["type"].as_str() {
                Some(kind @ ("Resource" | "ContainerResource")) => {
                    let source = if kind == "Resource" {
                        "resource"
                    } else {
                        "containerResource"
                    };
                    let name = spec[source]["name"].as_str().unwrap_or_default();
                    let target = &spec[source]["target"];
                    let current = status.map(|s| &s[source]["current"]);
                    if let Some(value) = text(target.get("averageValue")) {
                        let now = text(current.and_then(|c| c.get("averageValue")));
                        format!("{name}: {}/{value}", now.unwrap_or_else(unknown))
                    } else {
                        let now = current
                            .and_then(|c| c.get("averageUtilization"))
                            .and_then(Value::as_i64)
                            .map(|u| format!("{u}%"));
                        let goal = target
                            .get("averageUtilization")
                            .and_then(Value::as_i64)
                            .map_or("<auto>".to_string(), |u| format!("{u}%"));
                        format!("{name}: {}/{goal}", now.unwrap_or_else(unknown))
                    }
                }
                Some("Pods") => {
                    let goal = text(spec.pointer("/pods/target/averageValue")).unwrap_or_default();
                    let now = text(status.and_then(|s| s.pointer("/pods/current/averageValue")));
                    format!("{}/{goal}", now.unwrap_or_else(unknown))
                }
                Some(other) => format!("<{other} metric>"),
                None => unknown(),
            }
        })
        .collect();
    let mut out = shown.join(", ");
    if specs.len() > 2 {
        out.push_str(&format!(" + {} more...", specs.len() - 2));
    }
    json!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(mut hpa: Value) -> Value {
        HorizontalPodAutoscaler.defaults(&mut hpa, true);
        hpa
    }

    fn problems(hpa: Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate_spec(&defaulted(hpa), &mut causes);
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_are_upstreams() {
        let hpa = defaulted(json!({"spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5,
        }}));
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert!(hpa["spec"].get("behavior").is_none());
        let with_behavior = defaulted(json!({"spec": {"behavior": {"scaleDown": {
            "stabilizationWindowSeconds": 30,
        }}}}));
        let behavior = &with_behavior["spec"]["behavior"];
        assert_eq!(behavior["scaleUp"]["stabilizationWindowSeconds"], 0);
        assert_eq!(behavior["scaleUp"]["policies"].as_array().unwrap().len(), 2);
        assert_eq!(behavior["scaleDown"]["stabilizationWindowSeconds"], 30);
        assert_eq!(behavior["scaleDown"]["policies"][0]["type"], "Percent");
        assert_eq!(behavior["scaleDown"]["selectPolicy"], "Max");
    }

    #[test]
    fn bad_specs_name_their_fields() {
        assert!(
            problems(json!({"spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3,
            }}))
            .is_empty()
        );
        let found = problems(json!({"spec": {
            "scaleTargetRef": {"kind": "Deployment"},
            "minReplicas": 4, "maxReplicas": 3,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}},
                {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "ten"}}},
                {"type": "Bogus"},
            ],
            "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 0}]}},
        }}));
        for field in [
            "spec.scaleTargetRef.name",
            "spec.maxReplicas: Invalid value: 3: must be greater than or equal to `minReplicas`",
            "spec.metrics[0].resource.target.averageUtilization",
            "spec.metrics[1].pods.target.averageValue",
            "spec.metrics[2].type",
            "spec.behavior.scaleUp.policies[0].value",
            "spec.behavior.scaleUp.policies[0].periodSeconds",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(field)),
                "{field} in {found:#?}"
            );
        }
    }

    #[test]
    fn targets_read_like_kubectls() {
        let hpa = json!({"spec": {"metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "64Mi"}}},
            {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
        ]}, "status": {"currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12, "averageValue": "12m"}}},
        ]}});
        assert_eq!(
            targets(&hpa),
            "cpu: 12%/50%, memory: <unknown>/64Mi + 1 more..."
        );
    }
}
