//! ConfigMaps and Secrets: keys checked as Kubernetes does, a Secret's write-only
//! `stringData` folded into `data`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::api::core::v1;
use serde_json::{Value, json};

use super::{
    Cell, Column, KindStrategy, ObjectType, Typed, cause, col, ensure_object, set_default,
};
use crate::apiserver::protobuf::{self, Message};
use crate::apiserver::status::Cause;

pub struct ConfigMap;

static CONFIG_MAP: Typed<v1::ConfigMap> = Typed::new();

impl KindStrategy for ConfigMap {
    fn object_type(&self) -> &dyn ObjectType {
        &CONFIG_MAP
    }

    fn validate(&self, object: &Value, causes: &mut Vec<Cause>) {
        validate_keys(object, causes);
    }

    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[col("DATA", "integer", Cell::Computed(data_count))];
        COLUMNS
    }

    fn protobuf(&self) -> Option<&'static Message> {
        Some(&protobuf::CONFIG_MAP)
    }
}

pub struct Secret;

static SECRET: Typed<v1::Secret> = Typed::new();

impl KindStrategy for Secret {
    fn object_type(&self) -> &dyn ObjectType {
        &SECRET
    }

    fn defaults(&self, object: &mut Value, _creating: bool) {
        set_default(object, "/type", json!("Opaque"));
        // stringData is write-only: it is merged into data, base64-encoded.
        if let Some(Value::Object(string_data)) =
            object.as_object_mut().and_then(|o| o.remove("stringData"))
        {
            ensure_object(object, "/data");
            if let Some(Value::Object(data)) = object.get_mut("data") {
                for (k, v) in string_data {
                    let text = v.as_str().unwrap_or_default();
                    data.insert(k, json!(B64.encode(text)));
                }
            }
        }
    }

    fn validate(&self, object: &Value, causes: &mut Vec<Cause>) {
        validate_keys(object, causes);
    }

    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            col("TYPE", "string", Cell::Field("/type")),
            col("DATA", "integer", Cell::Computed(data_count)),
        ];
        COLUMNS
    }

    fn protobuf(&self) -> Option<&'static Message> {
        Some(&protobuf::SECRET)
    }
}

fn validate_keys(object: &Value, causes: &mut Vec<Cause>) {
    for field in ["data", "binaryData"] {
        if let Some(Value::Object(data)) = object.get(field) {
            for key in data.keys() {
                let ok = !key.is_empty()
                    && key.len() <= 253
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
                if !ok {
                    causes.push(cause(&format!("{field}[{key}]"), format!("Invalid value: {key:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'")));
                }
            }
        }
    }
}

fn data_count(object: &Value) -> Value {
    let count = ["data", "binaryData"]
        .iter()
        .filter_map(|f| object.get(*f).and_then(Value::as_object))
        .map(|m| m.len())
        .sum::<usize>();
    json!(count)
}
