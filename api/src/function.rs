//! `serving.bosun.dev/v1` `Function`: a wasi:http component served with scale to zero.
//!
//! The wire type, its defaults and the names the control plane and the nodes agree on. The API
//! server checks it (`control/src/apiserver/kinds/function.rs`); the Function controller turns
//! it into a Deployment and a Service of the same name.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use serde::{Deserialize, Serialize};

/// The API group of Functions.
pub const GROUP: &str = "serving.bosun.dev";
/// `serving.bosun.dev/v1`.
pub const API_VERSION: &str = "serving.bosun.dev/v1";
/// The label on a Function's Deployment, Service and pods that names the Function.
pub const FUNCTION_LABEL: &str = "serving.bosun.dev/function";
/// The annotation a node's activator writes on a Function that has requests waiting and no
/// ready replica (the time it asked, RFC 3339); the control plane scales the Function up and
/// removes it.
pub const ACTIVATION_ANNOTATION: &str = "serving.bosun.dev/activation-requested";
/// The annotation on a Function's Service with its request timeout (`60s`), for the nodes'
/// gateways.
pub const TIMEOUT_ANNOTATION: &str = "serving.bosun.dev/timeout";
/// The Node annotation with the node's function gateway, `PORT DOMAIN` (`8081 fn.local`),
/// absent when the node serves none: where the control plane calls Functions (cron triggers).
pub const GATEWAY_ANNOTATION: &str = "serving.bosun.dev/gateway";
/// The start of the message a node gives a Function's container that is no wasi:http
/// component (its Waiting state's message); the function controller reports it.
pub const NOT_A_FUNCTION: &str = "not a wasi:http component";
/// Where a Function's requests arrive by default: `NAME.NAMESPACE.<domain>`.
pub const DEFAULT_DOMAIN: &str = "fn.local";

/// The port a function container serves on, which its Service targets: its first TCP
/// `containerPort`, else 8080.
pub fn serving_port(container: &Container) -> i32 {
    container
        .ports
        .iter()
        .flatten()
        .find(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .map_or(8080, |p| p.container_port)
}

/// A wasi:http component served by Bosun: a Deployment of its pods behind a Service, scaled
/// on its load, to zero when idle.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "dev.bosun.serving.v1.Function")]
pub struct Function {
    /// `serving.bosun.dev/v1`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// `Function`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What to run and how to scale it.
    #[serde(default)]
    pub spec: FunctionSpec,
    /// What the Function controller last saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "FunctionStatus")]
    pub status: Option<FunctionStatus>,
}

/// What to run and how to scale it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "dev.bosun.serving.v1.FunctionSpec")]
pub struct FunctionSpec {
    /// The pods to run: `containers[0]` is the wasi:http component, served on its first TCP
    /// `containerPort` (8080 when none is declared).
    #[serde(default)]
    pub template: PodTemplateSpec,
    /// How many replicas, and on what load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Scale")]
    pub scale: Option<Scale>,
    /// Requests one replica serves at once; 0 is the node's share (see the node's README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<i64>,
    /// How long one request may take (`60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Calls made to the Function on a schedule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
}

/// How many replicas, and on what load.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "dev.bosun.serving.v1.Scale")]
pub struct Scale {
    /// The fewest replicas; 0 (the default) lets the Function scale to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i32>,
    /// The most replicas (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i32>,
    /// What a replica's load is measured in: `concurrency` (requests in flight, the default)
    /// or `rps` (requests per second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The load one replica should carry: default 10 for concurrency, 100 for rps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<i32>,
    /// With no request for this long, the Function goes to zero replicas (`30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero_after: Option<String>,
    /// The window the load is averaged over (`60s`); a panic window of a tenth of it reacts
    /// to bursts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_window: Option<String>,
}

/// A call made to the Function on a schedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "dev.bosun.serving.v1.Trigger")]
pub struct Trigger {
    /// A schedule in cron's syntax, as CronJobs take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "CronTrigger")]
    pub cron: Option<CronTrigger>,
}

/// When and what to call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "dev.bosun.serving.v1.CronTrigger")]
pub struct CronTrigger {
    /// `*/5 * * * *`, `@hourly`.
    pub schedule: String,
    /// The schedule's time zone (`Europe/Paris`); UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The path called (`/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The method (`POST`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The request's body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// How late a tick may still be called, in seconds; later ones are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<i64>,
}

/// What the Function controller last saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "dev.bosun.serving.v1.FunctionStatus")]
pub struct FunctionStatus {
    /// Where the Function answers: `http://NAME.NAMESPACE.<domain>` at any node's function
    /// port, and `http://NAME.NAMESPACE` inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Replicas asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Replicas ready to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// `Ready` (the Function can take requests, waking if needed) and `Active` (it has
    /// replicas; `False` with reason `ScaledToZero` when it has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Each trigger's last scheduled time that was called (or skipped), by index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerStatus>,
}

/// What happened to one trigger.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "dev.bosun.serving.v1.TriggerStatus")]
pub struct TriggerStatus {
    /// The last scheduled time handled: called, or skipped as missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

impl k8s_openapi::Resource for Function {
    const API_VERSION: &'static str = API_VERSION;
    const GROUP: &'static str = GROUP;
    const KIND: &'static str = "Function";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "functions";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for Function {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What a replica's load is measured in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Requests in flight.
    Concurrency,
    /// Requests per second.
    Rps,
}

impl Metric {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "concurrency" => Some(Self::Concurrency),
            "rps" => Some(Self::Rps),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Concurrency => "concurrency",
            Self::Rps => "rps",
        }
    }

    /// The target per replica when the Function does not say.
    pub fn default_target(self) -> f64 {
        match self {
            Self::Concurrency => 10.0,
            Self::Rps => 100.0,
        }
    }
}

/// A Function's scaling with every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Scaling {
    pub min: i32,
    pub max: i32,
    pub metric: Metric,
    pub target: f64,
    pub scale_to_zero_after: Duration,
    pub stable_window: Duration,
}

impl FunctionSpec {
    /// The scaling, defaults filled in. Values the API server would have refused read as
    /// their defaults.
    pub fn scaling(&self) -> Scaling {
        let scale = self.scale.clone().unwrap_or_default();
        let metric = scale
            .metric
            .as_deref()
            .and_then(Metric::parse)
            .unwrap_or(Metric::Concurrency);
        let duration = |text: Option<&str>, default| {
            text.and_then(|t| crate::duration::parse(t).ok())
                .unwrap_or(default)
        };
        Scaling {
            min: scale.min.unwrap_or(0).max(0),
            max: scale.max.unwrap_or(100).max(1),
            metric,
            target: scale
                .target
                .filter(|t| *t > 0)
                .map_or(metric.default_target(), f64::from),
            scale_to_zero_after: duration(
                scale.scale_to_zero_after.as_deref(),
                Duration::from_secs(30),
            ),
            stable_window: duration(scale.stable_window.as_deref(), Duration::from_secs(60)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_reads_back_as_it_was_written() {
        let text = r#"{"apiVersion":"serving.bosun.dev/v1","kind":"Function",
            "metadata":{"name":"hello","namespace":"default"},
            "spec":{"template":{"spec":{"containers":[{"name":"fn","image":"r/hello:v1"}]}},
                    "scale":{"min":0,"max":10,"metric":"rps","target":50,"scaleToZeroAfter":"45s"},
                    "triggers":[{"cron":{"schedule":"*/5 * * * *","timeZone":"Europe/Paris","path":"/tick"}}]}}"#;
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let function: Function = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(serde_json::to_value(&function).unwrap(), value);
        let scaling = function.spec.scaling();
        assert_eq!(scaling.metric, Metric::Rps);
        assert_eq!((scaling.min, scaling.max, scaling.target), (0, 10, 50.0));
        assert_eq!(scaling.scale_to_zero_after, Duration::from_secs(45));
        assert_eq!(scaling.stable_window, Duration::from_secs(60));
    }

    #[test]
    fn an_empty_scale_is_the_defaults() {
        let scaling = FunctionSpec::default().scaling();
        assert_eq!(
            scaling,
            Scaling {
                min: 0,
                max: 100,
                metric: Metric::Concurrency,
                target: 10.0,
                scale_to_zero_after: Duration::from_secs(30),
                stable_window: Duration::from_secs(60),
            }
        );
    }
}
