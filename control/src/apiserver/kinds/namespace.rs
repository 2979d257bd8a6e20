//! Namespaces: created with the namespace controller's finalizer, changed only through
//! `finalize`, `Terminating` while being emptied, removed once the controller is done.

use k8s_openapi::api::core::v1;
use serde_json::{Value, json};

use super::{
    Cell, Column, KindStrategy, ObjectType, Subresource, Typed, col, ensure_object, set_default,
};
use crate::apiserver::protobuf::{self, Message};

pub struct Namespace;

static TYPE: Typed<v1::Namespace> = Typed::new();

impl KindStrategy for Namespace {
    fn object_type(&self) -> &dyn ObjectType {
        &TYPE
    }

    fn defaults(&self, object: &mut Value, creating: bool) {
        ensure_object(object, "/status");
        set_default(object, "/status/phase", json!("Active"));
        if creating {
            // The namespace controller's finalizer: it empties the namespace on deletion.
            ensure_object(object, "/spec");
            set_default(object, "/spec/finalizers", json!(["kubernetes"]));
        }
    }

    fn check_name(&self, name: &str) -> Result<(), bosun_api::names::NameError> {
        bosun_api::names::check_dns1123_label(name)
    }

    /// `spec.finalizers` changes only through `finalize`.
    fn prepare_for_update(&self, old: &Value, new: &mut Value) {
        match old.pointer("/spec/finalizers") {
            Some(f) => {
                ensure_object(new, "/spec");
                new["spec"]["finalizers"] = f.clone();
            }
            None => drop(
                new.get_mut("spec")
                    .and_then(Value::as_object_mut)
                    .map(|s| s.remove("finalizers")),
            ),
        }
    }

    fn subresources(&self) -> &'static [Subresource] {
        &[Subresource {
            name: "finalize",
            group: "",
            version: "v1",
            kind: "Namespace",
            verbs: &["update"],
            writes: &["/spec/finalizers"],
        }]
    }

    /// A namespace goes once the namespace controller has emptied it and cleared
    /// `spec.finalizers` through `finalize`.
    fn awaits_others(&self, namespace: &Value) -> bool {
        namespace
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
    }

    fn mark_deleting(&self, namespace: &mut Value) {
        namespace["status"]["phase"] = json!("Terminating");
    }

    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[col("STATUS", "string", Cell::Field("/status/phase"))];
        COLUMNS
    }

    fn protobuf(&self) -> Option<&'static Message> {
        Some(&protobuf::NAMESPACE)
    }
}
