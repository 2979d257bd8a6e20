//! Deployments and ReplicaSets (apps/v1).

use k8s_openapi::api::apps::v1;
use serde_json::{Value, json};

use super::pod::{template_containers, template_defaults, template_images, validate_template};
use super::{
    Cell, Column, KindStrategy, ObjectType, Typed, col, ensure_object, or_none, selector_string,
    set_default, wide,
};
use crate::apiserver::protobuf::{self, Message};
use crate::apiserver::status::Cause;

pub struct Deployment;

static DEPLOYMENT: Typed<v1::Deployment> = Typed::new();

impl KindStrategy for Deployment {
    fn object_type(&self) -> &dyn ObjectType {
        &DEPLOYMENT
    }

    fn defaults(&self, object: &mut Value, _creating: bool) {
        ensure_object(object, "/spec");
        set_default(object, "/spec/replicas", json!(1));
        set_default(object, "/spec/revisionHistoryLimit", json!(10));
        set_default(object, "/spec/progressDeadlineSeconds", json!(600));
        set_default(
            object,
            "/spec/strategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
        );
        template_defaults(object);
    }

    fn validate(&self, object: &Value, causes: &mut Vec<Cause>) {
        validate_template(object, true, causes);
    }

    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            col("READY", "string", Cell::Computed(ready)),
            col(
                "UP-TO-DATE",
                "integer",
                Cell::Field("/status/updatedReplicas"),
            ),
            col(
                "AVAILABLE",
                "integer",
                Cell::Field("/status/availableReplicas"),
            ),
            wide("CONTAINERS", "string", Cell::Computed(template_containers)),
            wide("IMAGES", "string", Cell::Computed(template_images)),
            wide("SELECTOR", "string", Cell::Computed(selector)),
        ];
        COLUMNS
    }

    fn protobuf(&self) -> Option<&'static Message> {
        Some(&protobuf::DEPLOYMENT)
    }
}

fn ready(deployment: &Value) -> Value {
    let count = |pointer: &str| {
        deployment
            .pointer(pointer)
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    json!(format!(
        "{}/{}",
        count("/status/readyReplicas"),
        count("/spec/replicas")
    ))
}

fn selector(object: &Value) -> Value {
    or_none(selector_string(object))
}

pub struct ReplicaSet;

static REPLICA_SET: Typed<v1::ReplicaSet> = Typed::new();

impl KindStrategy for ReplicaSet {
    fn object_type(&self) -> &dyn ObjectType {
        &REPLICA_SET
    }

    fn defaults(&self, object: &mut Value, _creating: bool) {
        ensure_object(object, "/spec");
        set_default(object, "/spec/replicas", json!(1));
        template_defaults(object);
    }

    fn validate(&self, object: &Value, causes: &mut Vec<Cause>) {
        validate_template(object, true, causes);
    }

    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            col("DESIRED", "integer", Cell::Field("/spec/replicas")),
            col("CURRENT", "integer", Cell::Field("/status/replicas")),
            col("READY", "integer", Cell::Field("/status/readyReplicas")),
            wide("CONTAINERS", "string", Cell::Computed(template_containers)),
            wide("IMAGES", "string", Cell::Computed(template_images)),
            wide("SELECTOR", "string", Cell::Computed(selector)),
        ];
        COLUMNS
    }
}
