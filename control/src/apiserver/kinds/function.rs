//! `serving.bosun.dev/v1` Functions (the type is `bosun_api::function::Function`): defaults,
//! the checks that get a 422 with field paths, and what `kubectl get functions` shows.

use bosun_api::function::{Function as FunctionType, Metric};
use serde_json::{Value, json};

use super::{
    Cell, Column, KindStrategy, ObjectType, Typed, cause, col, ensure_object, pod, set_default,
};
use crate::apiserver::status::Cause;

pub struct Function;

static FUNCTION: Typed<FunctionType> = Typed::new();

impl KindStrategy for Function {
    fn object_type(&self) -> &dyn ObjectType {
        &FUNCTION
    }

    fn defaults(&self, object: &mut Value, _creating: bool) {
        ensure_object(object, "/spec/scale");
        set_default(object, "/spec/scale/min", json!(0));
        set_default(object, "/spec/scale/max", json!(100));
        set_default(object, "/spec/scale/metric", json!("concurrency"));
        let metric = object
            .pointer("/spec/scale/metric")
            .and_then(Value::as_str)
            .and_then(Metric::parse)
            .unwrap_or(Metric::Concurrency);
        set_default(
            object,
            "/spec/scale/target",
            json!(metric.default_target() as i64),
        );
        set_default(object, "/spec/scale/scaleToZeroAfter", json!("30s"));
        set_default(object, "/spec/scale/stableWindow", json!("60s"));
        set_default(object, "/spec/containerConcurrency", json!(0));
        set_default(object, "/spec/timeout", json!("60s"));
        pod::template_defaults(object);
    }

    fn check_name(&self, name: &str) -> Result<(), bosun_api::names::NameError> {
        // The name is a Service's and a host name's label.
        bosun_api::names::check_dns1123_label(name)
    }

    fn validate(&self, object: &Value, causes: &mut Vec<Cause>) {
        validate_template(object, causes);
        validate_scale(object, causes);
        if let Some(n) = object
            .pointer("/spec/containerConcurrency")
            .and_then(Value::as_i64)
            .filter(|n| *n < 0)
        {
            causes.push(cause(
                "spec.containerConcurrency",
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            ));
        }
        positive_duration(object, "/spec/timeout", "spec.timeout", causes);
        validate_triggers(object, causes);
    }

    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            col("URL", "string", Cell::Field("/status/url")),
            col("READY", "string", Cell::Computed(ready)),
            col("REPLICAS", "integer", Cell::Field("/status/replicas")),
            col("METRIC", "string", Cell::Field("/spec/scale/metric")),
        ];
        COLUMNS
    }
}

fn validate_template(object: &Value, causes: &mut Vec<Cause>) {
    let containers = object
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if containers == 0 {
        causes.push(cause(
            "spec.template.spec.containers",
            "Required value: the first container is the function's wasi:http component",
        ));
        return;
    }
    if let Some(spec) = object.pointer("/spec/template/spec") {
        pod::validate_spec(spec, "spec.template.spec", causes);
    }
}

fn validate_scale(object: &Value, causes: &mut Vec<Cause>) {
    let int = |field: &str| object.pointer(&format!("/spec/scale/{field}"))?.as_i64();
    let min = int("min");
    let max = int("max");
    if let Some(min) = min.filter(|m| *m < 0) {
        causes.push(cause(
            "spec.scale.min",
            format!("Invalid value: {min}: must be greater than or equal to 0"),
        ));
    }
    if let Some(max) = max.filter(|m| *m < 1) {
        causes.push(cause(
            "spec.scale.max",
            format!("Invalid value: {max}: must be greater than or equal to 1"),
        ));
    }
    if let (Some(min), Some(max)) = (min, max)
        && min > max
    {
        causes.push(cause(
            "spec.scale.min",
            format!("Invalid value: {min}: must be less than or equal to spec.scale.max ({max})"),
        ));
    }
    let metric = object.pointer("/spec/scale/metric").and_then(Value::as_str);
    if let Some(metric) = metric.filter(|m| Metric::parse(m).is_none()) {
        causes.push(cause(
            "spec.scale.metric",
            format!("Unsupported value: {metric:?}: supported values: \"concurrency\", \"rps\""),
        ));
    }
    if let Some(target) = int("target").filter(|t| *t <= 0) {
        causes.push(cause(
            "spec.scale.target",
            format!("Invalid value: {target}: must be greater than 0"),
        ));
    }
    positive_duration(
        object,
        "/spec/scale/scaleToZeroAfter",
        "spec.scale.scaleToZeroAfter",
        causes,
    );
    positive_duration(
        object,
        "/spec/scale/stableWindow",
        "spec.scale.stableWindow",
        causes,
    );
}

/// A duration field (`30s`) that must be more than zero, if it is set.
fn positive_duration(object: &Value, pointer: &str, field: &str, causes: &mut Vec<Cause>) {
    let Some(text) = object.pointer(pointer).and_then(Value::as_str) else {
        return;
    };
    match bosun_api::duration::parse(text) {
        Ok(d) if !d.is_zero() => {}
        Ok(_) => causes.push(cause(
            field,
            format!("Invalid value: {text:?}: must be more than zero"),
        )),
        Err(e) => causes.push(cause(field, format!("Invalid value: {text:?}: {e}"))),
    }
}

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

fn validate_triggers(object: &Value, causes: &mut Vec<Cause>) {
    let triggers = object
        .pointer("/spec/triggers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, trigger) in triggers.iter().enumerate() {
        let at = format!("spec.triggers[{i}].cron");
        let Some(cron) = trigger.get("cron") else {
            causes.push(cause(
                &at,
                "Required value: a trigger needs a cron schedule",
            ));
            continue;
        };
        let schedule = cron["schedule"].as_str().unwrap_or_default();
        if let Err(e) = bosun_api::cron::Schedule::parse(schedule) {
            causes.push(cause(
                &format!("{at}.schedule"),
                format!("Invalid value: {schedule:?}: {}", e.reason),
            ));
        }
        if let Err(reason) = crate::objects::time_zone(cron["timeZone"].as_str()) {
            causes.push(cause(
                &format!("{at}.timeZone"),
                format!("Invalid value: {reason}"),
            ));
        }
        if let Some(method) = cron["method"].as_str().filter(|m| !METHODS.contains(m)) {
            causes.push(cause(
                &format!("{at}.method"),
                format!("Unsupported value: {method:?}: supported values: {METHODS:?}"),
            ));
        }
        if let Some(path) = cron["path"].as_str().filter(|p| !p.starts_with('/')) {
            causes.push(cause(
                &format!("{at}.path"),
                format!("Invalid value: {path:?}: must start with /"),
            ));
        }
        if let Some(s) = cron["startingDeadlineSeconds"].as_i64().filter(|s| *s < 0) {
            causes.push(cause(
                &format!("{at}.startingDeadlineSeconds"),
                format!("Invalid value: {s}: must be greater than or equal to 0"),
            ));
        }
    }
}

/// `True`, `False` or `Unknown`: the Ready condition's status.
fn ready(function: &Value) -> Value {
    let status = function
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .unwrap_or("Unknown");
    json!(status)
}
