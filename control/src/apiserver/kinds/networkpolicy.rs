//! NetworkPolicies (networking.k8s.io/v1), with upstream's defaults (`policyTypes`, a port's
//! protocol) and validation: selectors, peers, ports and `endPort`, and `ipBlock` CIDRs whose
//! `except` blocks lie inside them.

use std::net::IpAddr;

use bosun_api::cidr::Ipv4Cidr;
use k8s_openapi::api::networking::v1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use super::{Cell, Column, KindStrategy, ObjectType, Typed, cause, col, or_none};
use crate::apiserver::status::Cause;
use crate::objects::label_selector;

pub struct NetworkPolicy;

static TYPE: Typed<v1::NetworkPolicy> = Typed::new();

const DIRECTIONS: [(&str, &str, &str); 2] =
    [("ingress", "from", "Ingress"), ("egress", "to", "Egress")];

impl KindStrategy for NetworkPolicy {
    fn object_type(&self) -> &dyn ObjectType {
        &TYPE
    }

    /// A policy without `policyTypes` is an Ingress policy, and an Egress one too when it has
    /// egress rules; a port without a protocol is TCP.
    fn defaults(&self, object: &mut Value, _creating: bool) {
        let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        if spec
            .get("policyTypes")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            let mut types = vec![json!("Ingress")];
            if spec.get("egress").and_then(Value::as_array).is_some() {
                types.push(json!("Egress"));
            }
            spec.insert("policyTypes".into(), Value::Array(types));
        }
        for (direction, _, _) in DIRECTIONS {
            for rule in spec
                .get_mut(direction)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                for port in rule
                    .get_mut("ports")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(port) = port.as_object_mut() {
                        port.entry("protocol").or_insert(json!("TCP"));
                    }
                }
            }
        }
    }

    fn validate(&self, object: &Value, causes: &mut Vec<Cause>) {
        let spec = &object["spec"];
        selector("spec.podSelector", &spec["podSelector"], causes);
        let types = spec["policyTypes"].as_array().cloned().unwrap_or_default();
        for (i, kind) in types.iter().enumerate() {
            if !matches!(kind.as_str(), Some("Ingress" | "Egress")) {
                causes.push(cause(
                    &format!("spec.policyTypes[{i}]"),
                    format!("Unsupported value: {kind}: supported values: \"Egress\", \"Ingress\""),
                ));
            }
        }
        if types.len() > 2 {
            causes.push(cause(
                "spec.policyTypes",
                format!(
                    "Invalid value: {}: may not specify more than two policyTypes",
                    json!(types)
                ),
            ));
        }
        for (direction, peers, _) in DIRECTIONS {
            let rules = spec[direction].as_array().cloned().unwrap_or_default();
            for (i, rule) in rules.iter().enumerate() {
                let path = format!("spec.{direction}[{i}]");
                for (j, port) in rule["ports"].as_array().into_iter().flatten().enumerate() {
                    validate_port(&format!("{path}.ports[{j}]"), port, causes);
                }
                for (j, peer) in rule[peers].as_array().into_iter().flatten().enumerate() {
                    validate_peer(&format!("{path}.{peers}[{j}]"), peer, causes);
                }
            }
        }
    }

    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[col("POD-SELECTOR", "string", Cell::Computed(pod_selector))];
        COLUMNS
    }
}

/// The policy's pod selector as kubectl prints it (`app=web`, `<none>` for every pod).
fn pod_selector(policy: &Value) -> Value {
    let text = serde_json::from_value::<LabelSelector>(policy["spec"]["podSelector"].clone())
        .ok()
        .and_then(|s| label_selector(&s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    or_none(text)
}

fn selector(path: &str, value: &Value, causes: &mut Vec<Cause>) {
    if value.is_null() {
        return;
    }
    let parsed = serde_json::from_value::<LabelSelector>(value.clone())
        .map_err(|e| e.to_string())
        .and_then(|s| label_selector(&s).map_err(|e| e.to_string()));
    if let Err(why) = parsed {
        causes.push(cause(path, format!("Invalid value: {value}: {why}")));
    }
}

fn validate_port(path: &str, port: &Value, causes: &mut Vec<Cause>) {
    if let Some(protocol) = port["protocol"].as_str()
        && !matches!(protocol, "TCP" | "UDP" | "SCTP")
    {
        causes.push(cause(
            &format!("{path}.protocol"),
            format!(
                "Unsupported value: {protocol:?}: supported values: \"SCTP\", \"TCP\", \"UDP\""
            ),
        ));
    }
    let number = match &port["port"] {
        Value::Number(n) => {
            let n = n.as_i64().unwrap_or(0);
            if !(1..=65535).contains(&n) {
                causes.push(cause(
                    &format!("{path}.port"),
                    format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
                ));
            }
            Some(n)
        }
        Value::String(name) => {
            if let Err(why) = bosun_api::names::check_port_name(name) {
                causes.push(cause(
                    &format!("{path}.port"),
                    format!("Invalid value: {name:?}: {why}"),
                ));
            }
            None
        }
        _ => None,
    };
    let Some(end) = port["endPort"].as_i64() else {
        return;
    };
    match (&port["port"], number) {
        (Value::Null, _) => causes.push(cause(
            &format!("{path}.port"),
            "Required value: must specify port when endPort is specified",
        )),
        (_, None) => causes.push(cause(
            &format!("{path}.endPort"),
            "Forbidden: may not be specified when `port` is non-numeric",
        )),
        (_, Some(start)) if end < start => causes.push(cause(
            &format!("{path}.endPort"),
            format!("Invalid value: {end}: must be greater than or equal to `port`"),
        )),
        _ => {}
    }
}

fn validate_peer(path: &str, peer: &Value, causes: &mut Vec<Cause>) {
    let selectors = ["podSelector", "namespaceSelector"]
        .iter()
        .filter(|f| !peer[**f].is_null())
        .count();
    let block = &peer["ipBlock"];
    match (selectors, block.is_null()) {
        (0, true) => causes.push(cause(path, "Required value: must specify a peer")),
        (1.., false) => causes.push(cause(
            path,
            "Forbidden: may not specify more than 1 peer type",
        )),
        _ => {}
    }
    selector(&format!("{path}.podSelector"), &peer["podSelector"], causes);
    selector(
        &format!("{path}.namespaceSelector"),
        &peer["namespaceSelector"],
        causes,
    );
    if block.is_null() {
        return;
    }
    let cidr_text = block["cidr"].as_str().unwrap_or_default();
    if cidr_text.is_empty() {
        causes.push(cause(&format!("{path}.ipBlock.cidr"), "Required value"));
        return;
    }
    if !is_cidr(cidr_text) {
        causes.push(invalid_cidr(&format!("{path}.ipBlock.cidr"), cidr_text));
        return;
    }
    let outer = cidr_text.parse::<Ipv4Cidr>().ok();
    for (k, except) in block["except"].as_array().into_iter().flatten().enumerate() {
        let field = format!("{path}.ipBlock.except[{k}]");
        let text = except.as_str().unwrap_or_default();
        if !is_cidr(text) {
            causes.push(invalid_cidr(&field, text));
            continue;
        }
        if let (Some(outer), Ok(inner)) = (outer, text.parse::<Ipv4Cidr>())
            && !(inner.prefix() > outer.prefix() && outer.contains(inner.network()))
        {
            causes.push(cause(
                &field,
                format!("Invalid value: {text:?}: must be a strict subset of `cidr`"),
            ));
        }
    }
}

/// Whether `text` is an IPv4 or IPv6 block (`10.0.0.0/8`, `2001:db8::/64`).
fn is_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    match (address.parse::<IpAddr>(), prefix.parse::<u8>()) {
        (Ok(IpAddr::V4(_)), Ok(p)) => p <= 32,
        (Ok(IpAddr::V6(_)), Ok(p)) => p <= 128,
        _ => false,
    }
}

fn invalid_cidr(path: &str, text: &str) -> Cause {
    cause(
        path,
        format!(
            "Invalid value: {text:?}: must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes(policy: Value) -> Vec<String> {
        let mut policy = policy;
        NetworkPolicy.defaults(&mut policy, true);
        let mut causes = Vec::new();
        NetworkPolicy.validate(&policy, &mut causes);
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_follow_upstream() {
        let mut policy =
            json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}});
        NetworkPolicy.defaults(&mut policy, true);
        assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(policy["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn bad_peers_and_ports_name_their_fields() {
        let found = causes(json!({"spec": {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "Near"}]},
            "ingress": [{
                "from": [{}, {"ipBlock": {"cidr": "10.0.0.0/33"}},
                         {"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.2.0.0/24", "10.1.0.0/16"]}},
                         {"podSelector": {}, "ipBlock": {"cidr": "10.0.0.0/8"}}],
                "ports": [{"port": 0}, {"port": "http", "endPort": 90}, {"endPort": 9}, {"port": 90, "endPort": 80},
                          {"port": 53, "protocol": "ICMP"}]
            }]
        }}));
        let expected = [
            "spec.podSelector: Invalid value",
            "spec.ingress[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ingress[0].ports[1].endPort: Forbidden: may not be specified when `port` is non-numeric",
            "spec.ingress[0].ports[2].port: Required value: must specify port when endPort is specified",
            "spec.ingress[0].ports[3].endPort: Invalid value: 80: must be greater than or equal to `port`",
            "spec.ingress[0].ports[4].protocol: Unsupported value: \"ICMP\"",
            "spec.ingress[0].from[0]: Required value: must specify a peer",
            "spec.ingress[0].from[1].ipBlock.cidr: Invalid value: \"10.0.0.0/33\": must be a valid CIDR value",
            "spec.ingress[0].from[2].ipBlock.except[0]: Invalid value: \"10.2.0.0/24\": must be a strict subset of `cidr`",
            "spec.ingress[0].from[2].ipBlock.except[1]: Invalid value: \"10.1.0.0/16\": must be a strict subset of `cidr`",
            "spec.ingress[0].from[3]: Forbidden: may not specify more than 1 peer type",
        ];
        for want in expected {
            assert!(
                found.iter().any(|f| f.starts_with(want)),
                "{want}\n{found:#?}"
            );
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }

    #[test]
    fn a_good_policy_passes() {
        let found = causes(json!({"spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {}},
                                  {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                         "ports": [{"port": 5432}, {"port": 8000, "endPort": 8100}, {"port": "metrics"}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "2001:db8::/64"}}]}]
        }}));
        assert!(found.is_empty(), "{found:#?}");
        assert_eq!(
            pod_selector(&json!({"spec": {"podSelector": {"matchLabels": {"app": "db"}}}})),
            "app=db"
        );
        assert_eq!(
            pod_selector(&json!({"spec": {"podSelector": {}}})),
            "<none>"
        );
    }
}
