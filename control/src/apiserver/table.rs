//! Server-side printing: `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` gets a
//! `meta.k8s.io/v1` Table with the columns kubectl users expect, computed from the columns of
//! the kind's strategy.

use std::time::SystemTime;

use bosun_api::resources::Resource;
use serde_json::{Value, json};

use super::kinds::{self, Cell};

/// What each row carries besides its cells (`?includeObject=`): kubectl asks for the whole
/// object when it sorts (`--sort-by`) or prints custom columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn from_query(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("") | Some("Metadata") => Ok(Include::Metadata),
            Some("None") => Ok(Include::None),
            Some("Object") => Ok(Include::Object),
            Some(other) => Err(format!(
                "includeObject must be None, Metadata or Object, not {other:?}"
            )),
        }
    }

    fn row_object(self, item: &Value) -> Value {
        match self {
            Include::None => Value::Null,
            Include::Object => item.clone(),
            Include::Metadata => json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": item.get("metadata").cloned().unwrap_or(json!({})),
            }),
        }
    }
}

pub fn from_list(resource: &Resource, list: &Value, include: Include) -> Value {
    let items = list["items"].as_array().cloned().unwrap_or_default();
    from_objects(resource, &items, Some(list["metadata"].clone()), include)
}

pub fn from_objects(
    resource: &Resource,
    items: &[Value],
    list_metadata: Option<Value>,
    include: Include,
) -> Value {
    let kind_columns = kinds::for_resource(resource).columns();
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}),
    ];
    for c in kind_columns {
        columns.push(json!({"name": c.name, "type": c.format, "format": "", "description": c.name, "priority": i32::from(c.wide)}));
    }
    columns.push(
        json!({"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0}),
    );
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut cells = vec![item.pointer("/metadata/name").cloned().unwrap_or(json!(""))];
            for c in kind_columns {
                cells.push(cell(c.cell, c.format, item));
            }
            cells.push(json!(age(item)));
            json!({"cells": cells, "object": include.row_object(item)})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata.unwrap_or(json!({})),
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn age(item: &Value) -> String {
    item.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(bosun_api::time::parse_rfc3339)
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or_else(|| "<unknown>".to_string(), bosun_api::time::short_age)
}

fn cell(cell: Cell, format: &str, item: &Value) -> Value {
    match cell {
        Cell::Field(pointer) => match (item.pointer(pointer), format) {
            (Some(Value::Null) | None, "integer") => json!(0),
            (Some(Value::Null) | None, _) => json!("<none>"),
            (Some(Value::String(s)), _) if s.is_empty() => json!("<none>"),
            (Some(v), _) => v.clone(),
        },
        Cell::Computed(compute) => compute(item),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_api::resources::find;

    #[test]
    fn pod_rows_have_kubectl_columns() {
        let pod = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.88.0.5", "containerStatuses": [
                {"ready": true, "restartCount": 2}, {"ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let table = from_objects(
            find("", "v1", "pods").unwrap(),
            std::slice::from_ref(&pod),
            None,
            Include::Metadata,
        );
        let full = from_objects(
            find("", "v1", "pods").unwrap(),
            &[pod],
            None,
            Include::Object,
        );
        assert_eq!(
            full["rows"][0]["object"]["spec"]["nodeName"], "n1",
            "--sort-by needs whole objects"
        );
        let names: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["Name", "READY", "STATUS", "RESTARTS", "IP", "NODE", "Age"]
        );
        let cells = &table["rows"][0]["cells"];
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "3");
        assert_eq!(cells[4], "10.88.0.5");
        assert!(cells[6].as_str().unwrap().ends_with('y'));
        assert_eq!(table["columnDefinitions"][4]["priority"], 1);
    }
}
