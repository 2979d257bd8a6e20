//! HorizontalPodAutoscalers (autoscaling/v2).

use k8s_openapi::api::autoscaling::v2;
use serde_json::{Value, json};

use super::{Cell, Column, KindStrategy, ObjectType, Typed, col};
use crate::apiserver::protobuf::{self, Message};

pub struct HorizontalPodAutoscaler;

static TYPE: Typed<v2::HorizontalPodAutoscaler> = Typed::new();

impl KindStrategy for HorizontalPodAutoscaler {
    fn object_type(&self) -> &'static dyn ObjectType {
        &TYPE
    }

    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            col("REFERENCE", "string", Cell::Computed(reference)),
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

fn reference(hpa: &Value) -> Value {
    let field = |name: &str| {
        hpa.pointer(&format!("/spec/scaleTargetRef/{name}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    json!(format!("{}/{}", field("kind"), field("name")))
}
