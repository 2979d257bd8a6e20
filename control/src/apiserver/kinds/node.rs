//! Nodes and RuntimeClasses: what `kubectl get nodes` and `kubectl get runtimeclasses` show,
//! and the nodes' `proxy` subresource (served by `apiserver/nodes.rs`).

use k8s_openapi::api::{core::v1, node::v1 as node_v1};
use serde_json::{Value, json};

use super::{
    Cell, Column, KindStrategy, ObjectType, Plain, Subresource, Typed, col, items, or_none, wide,
};

pub struct Node;

static NODE_TYPE: Typed<v1::Node> = Typed::new();

impl KindStrategy for Node {
    fn object_type(&self) -> &dyn ObjectType {
        &NODE_TYPE
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn subresources(&self) -> &'static [Subresource] {
        &[Subresource {
            name: "proxy",
            group: "",
            version: "v1",
            kind: "NodeProxyOptions",
            verbs: &["get"],
            writes: &[],
        }]
    }
}

static COLUMNS: &[Column] = &[
    col("STATUS", "string", Cell::Computed(status)),
    col("ROLES", "string", Cell::Computed(roles)),
    col(
        "VERSION",
        "string",
        Cell::Field("/status/nodeInfo/kubeletVersion"),
    ),
    wide("INTERNAL-IP", "string", Cell::Computed(internal_ip)),
    wide(
        "OS-IMAGE",
        "string",
        Cell::Field("/status/nodeInfo/osImage"),
    ),
    wide(
        "KERNEL-VERSION",
        "string",
        Cell::Field("/status/nodeInfo/kernelVersion"),
    ),
];

fn status(node: &Value) -> Value {
    let ready = items(node, "/status/conditions")
        .into_iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .map_or("Unknown", |s| match s {
            "True" => "Ready",
            "False" => "NotReady",
            _ => "Unknown",
        });
    let mut status = ready.to_string();
    if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push_str(",SchedulingDisabled");
    }
    json!(status)
}

fn roles(node: &Value) -> Value {
    let roles: Vec<&str> = node
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

fn internal_ip(node: &Value) -> Value {
    or_none(
        items(node, "/status/addresses")
            .into_iter()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .unwrap_or_default()
            .to_string(),
    )
}

pub static RUNTIME_CLASS: Plain<node_v1::RuntimeClass> =
    Plain::new(&[col("HANDLER", "string", Cell::Field("/handler"))], None);
