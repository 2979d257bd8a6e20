//! Server-side printing: `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` gets a
//! `meta.k8s.io/v1` Table with the columns kubectl users expect, computed from the registry's
//! column list.

use std::time::SystemTime;

use bosun_api::resources::{Column, Resource};
use serde_json::{Value, json};

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
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}),
    ];
    for c in resource.columns {
        columns.push(json!({"name": c.name, "type": c.kind, "format": "", "description": c.name, "priority": i32::from(c.wide)}));
    }
    columns.push(
        json!({"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0}),
    );
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut cells = vec![item.pointer("/metadata/name").cloned().unwrap_or(json!(""))];
            for c in resource.columns {
                cells.push(cell(c.column, c.kind, item));
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

fn cell(column: Column, kind: &str, item: &Value) -> Value {
    match column {
        Column::Name => item.pointer("/metadata/name").cloned().unwrap_or(json!("")),
        Column::Age => json!(age(item)),
        Column::Field(pointer) => match (item.pointer(pointer), kind) {
            (Some(Value::Null) | None, "integer") => json!(0),
            (Some(Value::Null) | None, _) => json!("<none>"),
            (Some(Value::String(s)), _) if s.is_empty() => json!("<none>"),
            (Some(v), _) => v.clone(),
        },
        Column::Computed(name) => computed(name, item),
    }
}

fn strings(v: Option<&Value>) -> Vec<&Value> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn or_none(s: String) -> Value {
    json!(if s.is_empty() {
        "<none>".to_string()
    } else {
        s
    })
}

/// `app=web,tier=front` from a `spec.selector.matchLabels` (what `-o wide` and Scale show).
pub fn selector_string(item: &Value) -> String {
    item.pointer("/spec/selector/matchLabels")
        .or_else(|| {
            item.pointer("/spec/selector")
                .filter(|s| s.get("matchLabels").is_none() && s.get("matchExpressions").is_none())
        })
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn computed(name: &str, item: &Value) -> Value {
    let statuses = strings(item.pointer("/status/containerStatuses"));
    match name {
        "pod-ready" => {
            let total = strings(item.pointer("/spec/containers")).len();
            let ready = statuses
                .iter()
                .filter(|s| s["ready"] == json!(true))
                .count();
            json!(format!("{ready}/{total}"))
        }
        "pod-status" => {
            if item.pointer("/metadata/deletionTimestamp").is_some() {
                return json!("Terminating");
            }
            let reason = statuses.iter().find_map(|s| {
                s.pointer("/state/waiting/reason")
                    .or_else(|| s.pointer("/state/terminated/reason"))
                    .and_then(Value::as_str)
            });
            json!(
                reason
                    .or_else(|| item.pointer("/status/reason").and_then(Value::as_str))
                    .or_else(|| item.pointer("/status/phase").and_then(Value::as_str))
                    .unwrap_or("Unknown")
            )
        }
        "pod-restarts" => {
            let restarts: i64 = statuses
                .iter()
                .filter_map(|s| s["restartCount"].as_i64())
                .sum();
            json!(restarts.to_string())
        }
        "node-status" => {
            let ready = strings(item.pointer("/status/conditions"))
                .into_iter()
                .find(|c| c["type"] == "Ready")
                .and_then(|c| c["status"].as_str())
                .map_or("Unknown", |s| match s {
                    "True" => "Ready",
                    "False" => "NotReady",
                    _ => "Unknown",
                });
            let mut status = ready.to_string();
            if item.pointer("/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            json!(status)
        }
        "node-roles" => {
            let roles: Vec<&str> = item
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .collect()
                })
                .unwrap_or_default();
            or_none(roles.join(","))
        }
        "node-internal-ip" => or_none(
            strings(item.pointer("/status/addresses"))
                .into_iter()
                .find(|a| a["type"] == "InternalIP")
                .and_then(|a| a["address"].as_str())
                .unwrap_or_default()
                .to_string(),
        ),
        "event-object" => {
            let o = item.get("involvedObject").or_else(|| item.get("regarding"));
            let kind = o
                .and_then(|o| o["kind"].as_str())
                .unwrap_or_default()
                .to_lowercase();
            let name = o.and_then(|o| o["name"].as_str()).unwrap_or_default();
            json!(format!("{kind}/{name}"))
        }
        "data-count" => {
            let count = ["data", "binaryData"]
                .iter()
                .filter_map(|f| item.get(*f).and_then(Value::as_object))
                .map(|m| m.len())
                .sum::<usize>();
            json!(count)
        }
        "secrets-count" => json!(strings(item.get("secrets")).len()),
        "service-external-ip" => {
            let ingress: Vec<String> = strings(item.pointer("/status/loadBalancer/ingress"))
                .into_iter()
                .filter_map(|i| {
                    i["ip"]
                        .as_str()
                        .or(i["hostname"].as_str())
                        .map(String::from)
                })
                .chain(
                    strings(item.pointer("/spec/externalIPs"))
                        .into_iter()
                        .filter_map(|v| v.as_str().map(String::from)),
                )
                .collect();
            or_none(ingress.join(","))
        }
        "service-ports" => or_none(
            strings(item.pointer("/spec/ports"))
                .into_iter()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(np) => format!("{}:{np}/{proto}", p["port"]),
                        None => format!("{}/{proto}", p["port"]),
                    }
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        "service-selector" => or_none(
            item.pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
        ),
        "endpoints" => {
            let mut out = Vec::new();
            for subset in strings(item.get("subsets")) {
                for address in strings(subset.get("addresses")) {
                    for port in strings(subset.get("ports")) {
                        out.push(format!(
                            "{}:{}",
                            address["ip"].as_str().unwrap_or_default(),
                            port["port"]
                        ));
                    }
                }
            }
            or_none(out.join(","))
        }
        "deploy-ready" => json!(format!(
            "{}/{}",
            item.pointer("/status/readyReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            item.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        )),
        "containers" | "images" => {
            let field = if name == "containers" {
                "name"
            } else {
                "image"
            };
            or_none(
                strings(item.pointer("/spec/template/spec/containers"))
                    .into_iter()
                    .filter_map(|c| c[field].as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            )
        }
        "label-selector" => or_none(selector_string(item)),
        "job-status" => {
            let conditions = strings(item.pointer("/status/conditions"));
            let has = |t: &str| {
                conditions
                    .iter()
                    .any(|c| c["type"] == t && c["status"] == "True")
            };
            json!(if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if item.pointer("/spec/suspend") == Some(&json!(true)) {
                "Suspended"
            } else {
                "Running"
            })
        }
        "job-completions" => json!(format!(
            "{}/{}",
            item.pointer("/status/succeeded")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            item.pointer("/spec/completions")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        )),
        "cronjob-active" => json!(strings(item.pointer("/status/active")).len()),
        "hpa-reference" => json!(format!(
            "{}/{}",
            item.pointer("/spec/scaleTargetRef/kind")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            item.pointer("/spec/scaleTargetRef/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
        )),
        "slice-ports" => or_none(
            strings(item.get("ports"))
                .into_iter()
                .map(|p| p["port"].to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        "slice-endpoints" => or_none(
            strings(item.get("endpoints"))
                .into_iter()
                .flat_map(|e| strings(e.get("addresses")))
                .filter_map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => json!("<unknown>"),
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
