//! Events, served as core/v1 and as events.k8s.io/v1 from one store: the writer's version
//! decides how one is stored, and each endpoint renames the fields to its own.

use bosun_api::resources::Resource;
use k8s_openapi::api::{core::v1, events::v1 as events_v1};
use serde_json::{Value, json};

use super::{Cell, Column, KindStrategy, ObjectType, Typed, col};

/// Events of one API version: core/v1 (`to_core`) or events.k8s.io/v1.
pub struct Events<T> {
    object_type: Typed<T>,
    to_core: bool,
    columns: &'static [Column],
}

pub static CORE_EVENT: Events<v1::Event> = Events {
    object_type: Typed::new(),
    to_core: true,
    columns: &[
        col("TYPE", "string", Cell::Field("/type")),
        col("REASON", "string", Cell::Field("/reason")),
        col("OBJECT", "string", Cell::Computed(object)),
        col("MESSAGE", "string", Cell::Field("/message")),
    ],
};

pub static EVENT: Events<events_v1::Event> = Events {
    object_type: Typed::new(),
    to_core: false,
    columns: &[
        col("TYPE", "string", Cell::Field("/type")),
        col("REASON", "string", Cell::Field("/reason")),
        col("OBJECT", "string", Cell::Computed(object)),
        col("MESSAGE", "string", Cell::Field("/note")),
    ],
};

impl<T> KindStrategy for Events<T>
where
    Typed<T>: ObjectType,
{
    fn object_type(&self) -> &dyn ObjectType {
        &self.object_type
    }

    fn present(&self, _resource: &Resource, event: &mut Value) {
        convert(event, self.to_core);
    }

    fn columns(&self) -> &'static [Column] {
        self.columns
    }
}

fn object(event: &Value) -> Value {
    let o = event
        .get("involvedObject")
        .or_else(|| event.get("regarding"));
    let kind = o
        .and_then(|o| o["kind"].as_str())
        .unwrap_or_default()
        .to_lowercase();
    let name = o.and_then(|o| o["name"].as_str()).unwrap_or_default();
    json!(format!("{kind}/{name}"))
}

/// The fields core/v1 and events.k8s.io/v1 Events name differently, as (core, events.k8s.io).
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// Renames an Event's fields to those of core/v1 (`to_core`) or of events.k8s.io/v1, as the
/// Kubernetes API server converts between the two.
fn convert(value: &mut Value, to_core: bool) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    for (core, new) in RENAMED {
        let (from, to) = if to_core { (new, core) } else { (core, new) };
        if let Some(v) = object.remove(*from)
            && !object.contains_key(*to)
        {
            object.insert(to.to_string(), v);
        }
    }
}
