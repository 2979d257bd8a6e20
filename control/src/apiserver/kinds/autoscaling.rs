//! HorizontalPodAutoscalers (autoscaling/v2).

use k8s_openapi::api::autoscaling::v2;
use serde_json::{Value, json};

use super::{Cell, Plain, col};
use crate::apiserver::protobuf;

pub static HORIZONTAL_POD_AUTOSCALER: Plain<v2::HorizontalPodAutoscaler> = Plain::new(
    &[
        col("REFERENCE", "string", Cell::Computed(reference)),
        col("MINPODS", "integer", Cell::Field("/spec/minReplicas")),
        col("MAXPODS", "integer", Cell::Field("/spec/maxReplicas")),
        col(
            "REPLICAS",
            "integer",
            Cell::Field("/status/currentReplicas"),
        ),
    ],
    Some(&protobuf::HORIZONTAL_POD_AUTOSCALER),
);

fn reference(hpa: &Value) -> Value {
    let field = |name: &str| {
        hpa.pointer(&format!("/spec/scaleTargetRef/{name}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    json!(format!("{}/{}", field("kind"), field("name")))
}
