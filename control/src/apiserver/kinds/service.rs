//! Services and their endpoints (Endpoints, EndpointSlices). A Service's cluster IP and node
//! ports are handed out by the admission plugin `admission/services.rs`, which needs the store;
//! what needs only the object is here.

use k8s_openapi::api::{core::v1, discovery::v1 as discovery_v1};
use serde_json::{Value, json};

use super::{
    Cell, Column, KindStrategy, ObjectType, Plain, Typed, cause, col, ensure_object, items,
    or_none, set_default, wide,
};
use crate::apiserver::protobuf::{self, Message};
use crate::apiserver::status::Cause;

pub struct Service;

static SERVICE: Typed<v1::Service> = Typed::new();

impl KindStrategy for Service {
    fn object_type(&self) -> &dyn ObjectType {
        &SERVICE
    }

    fn defaults(&self, object: &mut Value, _creating: bool) {
        ensure_object(object, "/spec");
        set_default(object, "/spec/type", json!("ClusterIP"));
        set_default(object, "/spec/sessionAffinity", json!("None"));
        if let Some(Value::Array(ports)) = object.pointer_mut("/spec/ports") {
            for port in ports {
                set_default(port, "/protocol", json!("TCP"));
                if let Some(p) = port.get("port").cloned() {
                    set_default(port, "/targetPort", p);
                }
            }
        }
    }

    fn check_name(&self, name: &str) -> Result<(), bosun_api::names::NameError> {
        bosun_api::names::check_dns1123_label(name)
    }

    fn validate(&self, object: &Value, causes: &mut Vec<Cause>) {
        for (i, port) in items(object, "/spec/ports").into_iter().enumerate() {
            let p = port.get("port").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&p) {
                causes.push(cause(
                    &format!("spec.ports[{i}].port"),
                    format!("Invalid value: {p}: must be between 1 and 65535, inclusive"),
                ));
            }
        }
    }

    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            col("TYPE", "string", Cell::Field("/spec/type")),
            col("CLUSTER-IP", "string", Cell::Field("/spec/clusterIP")),
            col("EXTERNAL-IP", "string", Cell::Computed(external_ip)),
            col("PORT(S)", "string", Cell::Computed(ports)),
            wide("SELECTOR", "string", Cell::Computed(selector)),
        ];
        COLUMNS
    }

    fn protobuf(&self) -> Option<&'static Message> {
        Some(&protobuf::SERVICE)
    }
}

fn external_ip(service: &Value) -> Value {
    let ingress: Vec<String> = items(service, "/status/loadBalancer/ingress")
        .into_iter()
        .filter_map(|i| {
            i["ip"]
                .as_str()
                .or(i["hostname"].as_str())
                .map(String::from)
        })
        .chain(
            items(service, "/spec/externalIPs")
                .into_iter()
                .filter_map(|v| v.as_str().map(String::from)),
        )
        .collect();
    or_none(ingress.join(","))
}

fn ports(service: &Value) -> Value {
    or_none(
        items(service, "/spec/ports")
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
    )
}

fn selector(service: &Value) -> Value {
    or_none(
        service
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
    )
}

pub static ENDPOINTS: Plain<v1::Endpoints> = Plain::new(
    &[col("ENDPOINTS", "string", Cell::Computed(endpoints))],
    None,
);

fn endpoints(object: &Value) -> Value {
    let mut out = Vec::new();
    for subset in items(object, "/subsets") {
        for address in items(subset, "/addresses") {
            for port in items(subset, "/ports") {
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

pub static ENDPOINT_SLICE: Plain<discovery_v1::EndpointSlice> = Plain::new(
    &[
        col("ADDRESSTYPE", "string", Cell::Field("/addressType")),
        col("PORTS", "string", Cell::Computed(slice_ports)),
        col("ENDPOINTS", "string", Cell::Computed(slice_endpoints)),
    ],
    None,
);

fn slice_ports(slice: &Value) -> Value {
    or_none(
        items(slice, "/ports")
            .into_iter()
            .map(|p| p["port"].to_string())
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn slice_endpoints(slice: &Value) -> Value {
    or_none(
        items(slice, "/endpoints")
            .into_iter()
            .flat_map(|e| items(e, "/addresses"))
            .filter_map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(","),
    )
}
