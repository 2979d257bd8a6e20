//! ServiceAllocation: the checks of a Service that need the server's ranges, and the cluster
//! IPs and node ports the API server hands out when a Service is created or changed.
//!
//! Each address or port in use has a record in the store (resource `ipaddresses` named by the
//! IP, `servicenodeports` named by the number, as Kubernetes' `IPAddress` objects), naming the
//! Service that holds it. Creating a record fails if it exists, so two API servers on one
//! database can never hand out the same one. Records are not removed when a Service goes or
//! lets one go: a record whose Service no longer exists, or no longer uses it, is free and is
//! taken over (compare-and-swap on its revision) by the next allocation that wants it. So a
//! server that crashes between allocating and storing the Service leaks nothing.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use bosun_api::cidr::Ipv4Cidr;
use bosun_api::resources::Resource;
use rand::Rng;
use serde_json::{Value, json};

use super::{Operation, Plugin, Request};
use crate::apiserver::kinds::cause;
use crate::apiserver::status::{ApiError, ApiResult, Cause};
use crate::store::{self, Key, Store};

const IP_RECORDS: &str = "ipaddresses";
const PORT_RECORDS: &str = "servicenodeports";

/// How long a record is held for a Service that is still being created.
const CREATION_GRACE_SECS: u64 = 60;

/// Where cluster IPs and node ports come from (`--service-cidr`, `--service-node-port-range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRanges {
    pub cidr: Ipv4Cidr,
    pub node_ports: (u16, u16),
}

impl Default for ServiceRanges {
    fn default() -> Self {
        Self {
            cidr: "10.89.0.0/16".parse().expect("a valid block"),
            node_ports: (30000, 32767),
        }
    }
}

/// Parses a port range as `--service-node-port-range` takes it: `30000-32767`.
pub fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let (low, high) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not a port range like 30000-32767"))?;
    let low: u16 = low
        .trim()
        .parse()
        .map_err(|_| format!("{low:?} is not a port"))?;
    let high: u16 = high
        .trim()
        .parse()
        .map_err(|_| format!("{high:?} is not a port"))?;
    if low == 0 || low > high {
        return Err(format!("{text:?} is not a range of ports from low to high"));
    }
    Ok((low, high))
}

/// The admission plugin: allocates on create and update of a Service, releases on delete.
pub struct ServiceAllocation(pub ServiceRanges);

/// What an allocation works with.
struct Allocation<'a> {
    store: &'a dyn Store,
    service_ranges: ServiceRanges,
}

#[async_trait::async_trait]
impl Plugin for ServiceAllocation {
    fn name(&self) -> &'static str {
        "ServiceAllocation"
    }

    async fn admit(&self, store: &dyn Store, request: &mut Request<'_>) -> ApiResult<()> {
        if !request.is("", "Service") || request.subresource.is_some() {
            return Ok(());
        }
        let state = Allocation {
            store,
            service_ranges: self.0,
        };
        match (request.operation, request.old) {
            (Operation::Create, _) => {
                admit_create(
                    &state,
                    request.resource,
                    request.name,
                    request.object,
                    request.dry_run,
                )
                .await
            }
            (Operation::Update, Some(old)) => {
                admit_update(
                    &state,
                    request.resource,
                    request.name,
                    old,
                    request.object,
                    request.dry_run,
                )
                .await
            }
            _ => Ok(()),
        }
    }

    async fn deleted(&self, store: &dyn Store, resource: &Resource, object: &Value) {
        if resource.group.is_empty() && resource.kind == "Service" {
            let state = Allocation {
                store,
                service_ranges: self.0,
            };
            release(&state, object).await;
        }
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn service_type(service: &Value) -> &str {
    str_at(service, "/spec/type").unwrap_or("ClusterIP")
}

fn has_node_ports(service: &Value) -> bool {
    matches!(service_type(service), "NodePort" | "LoadBalancer")
}

fn ports(service: &Value) -> Vec<Value> {
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The checks Kubernetes makes on a Service's spec that do not need the store.
fn validate(ranges: &ServiceRanges, service: &Value, causes: &mut Vec<Cause>) {
    let kind = service_type(service);
    if !matches!(
        kind,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        causes.push(cause(
            "spec.type",
            format!("Unsupported value: {kind:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
        ));
    }
    if kind == "ExternalName"
        && str_at(service, "/spec/externalName")
            .unwrap_or("")
            .is_empty()
    {
        causes.push(cause("spec.externalName", "Required value"));
    }
    match str_at(service, "/spec/sessionAffinity").unwrap_or("None") {
        "None" | "ClientIP" => {}
        other => causes.push(cause(
            "spec.sessionAffinity",
            format!("Unsupported value: {other:?}: supported values: \"ClientIP\", \"None\""),
        )),
    }
    match str_at(service, "/spec/clusterIP").unwrap_or("") {
        "" => {}
        "None" if has_node_ports(service) => causes.push(cause(
            "spec.clusterIP",
            format!("Invalid value: \"None\": may not be set to 'None' for {kind} services"),
        )),
        "None" => {}
        ip => match ip.parse::<Ipv4Addr>() {
            _ if kind == "ExternalName" => causes.push(cause(
                "spec.clusterIP",
                "Invalid value: must be empty for ExternalName services",
            )),
            Ok(addr) if ranges.cidr.contains(addr) => {}
            Ok(_) => causes.push(cause(
                "spec.clusterIP",
                format!(
                    "Invalid value: {ip:?}: provided IP is not in the valid range. The range of valid IPs is {}",
                    ranges.cidr
                ),
            )),
            Err(_) => causes.push(cause(
                "spec.clusterIP",
                format!("Invalid value: {ip:?}: must be a valid IPv4 address"),
            )),
        },
    }
    let ports = ports(service);
    let mut names = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = |field: &str| format!("spec.ports[{i}].{field}");
        let name = port.get("name").and_then(Value::as_str).unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            causes.push(cause(&at("name"), "Required value"));
        }
        if !name.is_empty() && !names.insert(name.to_string()) {
            causes.push(cause(&at("name"), format!("Duplicate value: {name:?}")));
        }
        let protocol = port
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP");
        if !matches!(protocol, "TCP" | "UDP") {
            causes.push(cause(
                &at("protocol"),
                format!("Unsupported value: {protocol:?}: supported values: \"TCP\", \"UDP\""),
            ));
        }
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !seen.insert((number, protocol.to_string())) {
            causes.push(cause(
                &at("port"),
                format!("Duplicate value: {{\"port\": {number}, \"protocol\": {protocol:?}}}"),
            ));
        }
        match port.get("targetPort") {
            None => {}
            Some(Value::Number(n)) if n.as_i64().is_some_and(|n| (1..=65535).contains(&n)) => {}
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 15 => {}
            Some(other) => causes.push(cause(
                &at("targetPort"),
                format!("Invalid value: {other}: must be a port number (1-65535) or an IANA service name"),
            )),
        }
        if let Some(node_port) = port.get("nodePort").filter(|p| !p.is_null()) {
            let n = node_port.as_i64().unwrap_or(-1);
            let (low, high) = ranges.node_ports;
            if !has_node_ports(service) {
                causes.push(cause(
                    &at("nodePort"),
                    format!("Forbidden: may not be used when `type` is '{kind}'"),
                ));
            } else if !(i64::from(low)..=i64::from(high)).contains(&n) {
                causes.push(cause(
                    &at("nodePort"),
                    format!("Invalid value: {node_port}: provided port is not in the valid range. The range of valid ports is {low}-{high}"),
                ));
            }
        }
    }
    if ports.is_empty()
        && kind != "ExternalName"
        && str_at(service, "/spec/clusterIP") != Some("None")
    {
        causes.push(cause("spec.ports", "Required value"));
    }
}

/// Who holds a record: the Service's namespace, name and UID.
fn holder(service: &Value) -> Value {
    json!({
        "service": {
            "namespace": str_at(service, "/metadata/namespace").unwrap_or(""),
            "name": str_at(service, "/metadata/name").unwrap_or(""),
            "uid": str_at(service, "/metadata/uid").unwrap_or(""),
        },
        "allocatedAt": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    })
}

/// Whether the Service a record names still uses what the record is for. A record whose
/// Service does not exist (yet) is held for a grace period: the Service may be being created.
async fn held(
    state: &Allocation<'_>,
    record: &Value,
    uses: impl Fn(&Value) -> bool,
) -> ApiResult<bool> {
    let namespace = str_at(record, "/service/namespace").unwrap_or("");
    let name = str_at(record, "/service/name").unwrap_or("");
    let service = match state
        .store
        .get(&Key::new("services", namespace, name))
        .await
    {
        Ok(service) => Some(service.value),
        Err(store::Error::NotFound { .. }) => None,
        Err(e) => return Err(ApiError::internal(e.to_string())),
    };
    match service {
        Some(service) if str_at(&service, "/metadata/uid") == str_at(record, "/service/uid") => {
            Ok(uses(&service))
        }
        _ => {
            let allocated = record
                .get("allocatedAt")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            Ok(now < allocated + CREATION_GRACE_SECS)
        }
    }
}

/// Frees what a deleted Service held (best effort: a record left behind is taken over when
/// wanted, see the module's documentation).
async fn release(state: &Allocation<'_>, service: &Value) {
    let mut keys = Vec::new();
    if let Some(ip) = cluster_ip_of(service) {
        keys.push(Key::new(IP_RECORDS, "", ip));
    }
    if has_node_ports(service) {
        for port in ports(service) {
            if let Some(n) = port.get("nodePort").and_then(Value::as_i64) {
                keys.push(Key::new(PORT_RECORDS, "", n.to_string()));
            }
        }
    }
    for key in keys {
        let Ok(record) = state.store.get(&key).await else {
            continue;
        };
        if str_at(&record.value, "/service/uid") == str_at(service, "/metadata/uid")
            && let Err(error) = state.store.delete(&key, Some(record.revision)).await
        {
            tracing::debug!(%error, %key, "cannot free a Service's allocation");
        }
    }
}

/// Takes the record `key` for `service` if it is free; `Ok(false)` if someone holds it.
async fn claim(
    state: &Allocation<'_>,
    key: &Key,
    service: &Value,
    uses: impl Fn(&Value) -> bool,
) -> ApiResult<bool> {
    match state.store.create(key, holder(service)).await {
        Ok(_) => return Ok(true),
        Err(store::Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(ApiError::internal(e.to_string())),
    }
    let current = match state.store.get(key).await {
        Ok(current) => current,
        // Freed in between: try once more.
        Err(store::Error::NotFound { .. }) => {
            return Ok(state.store.create(key, holder(service)).await.is_ok());
        }
        Err(e) => return Err(ApiError::internal(e.to_string())),
    };
    let same_service = str_at(&current.value, "/service/uid") == str_at(service, "/metadata/uid");
    if same_service || !held(state, &current.value, uses).await? {
        return match state
            .store
            .update(key, holder(service), Some(current.revision))
            .await
        {
            Ok(_) => Ok(true),
            Err(store::Error::Conflict { .. } | store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(ApiError::internal(e.to_string())),
        };
    }
    Ok(false)
}

fn cluster_ip_of(service: &Value) -> Option<&str> {
    str_at(service, "/spec/clusterIP").filter(|ip| !ip.is_empty() && *ip != "None")
}

fn uses_ip(ip: String) -> impl Fn(&Value) -> bool {
    move |service| cluster_ip_of(service) == Some(ip.as_str())
}

fn uses_port(port: i64) -> impl Fn(&Value) -> bool {
    move |service| {
        has_node_ports(service)
            && ports(service)
                .iter()
                .any(|p| p.get("nodePort").and_then(Value::as_i64) == Some(port))
    }
}

/// Gives `service` a cluster IP: the one it asks for if free, else a random free one.
async fn allocate_ip(
    state: &Allocation<'_>,
    resource: &Resource,
    name: &str,
    service: &mut Value,
) -> ApiResult<()> {
    let cidr = state.service_ranges.cidr;
    if let Some(ip) = cluster_ip_of(service).map(str::to_string) {
        let key = Key::new(IP_RECORDS, "", &ip);
        if !claim(state, &key, service, uses_ip(ip.clone())).await? {
            return Err(ApiError::invalid(
                resource,
                name,
                vec![cause(
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: [{ip:?}]: failed to allocate IP {ip}: provided IP is already allocated"
                    ),
                )],
            ));
        }
        service["spec"]["clusterIPs"] = json!([ip]);
        return Ok(());
    }
    // Neither the network address, the first one (Kubernetes keeps it for the `kubernetes`
    // Service) nor the broadcast address.
    let usable = cidr.size().saturating_sub(3);
    let start = rand::thread_rng().gen_range(0..usable.max(1));
    for step in 0..usable {
        let Some(ip) = cidr.nth(2 + (start + step) % usable) else {
            continue;
        };
        let text = ip.to_string();
        if claim(
            state,
            &Key::new(IP_RECORDS, "", &text),
            service,
            uses_ip(text.clone()),
        )
        .await?
        {
            service["spec"]["clusterIP"] = json!(text);
            service["spec"]["clusterIPs"] = json!([text]);
            return Ok(());
        }
    }
    Err(ApiError::internal(format!(
        "failed to allocate a service IP: range {cidr} is full"
    )))
}

/// Gives every port of `service` that needs one a node port, keeping those in `old` for the
/// same port and protocol.
async fn allocate_node_ports(
    state: &Allocation<'_>,
    resource: &Resource,
    name: &str,
    service: &mut Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    let keep = |port: &Value| -> Option<i64> {
        let old = old.filter(|o| has_node_ports(o))?;
        ports(old)
            .into_iter()
            .find(|p| {
                p.get("port") == port.get("port") && p.get("protocol") == port.get("protocol")
            })
            .and_then(|p| p.get("nodePort").and_then(Value::as_i64))
    };
    let mut ports = ports(service);
    let mut taken = BTreeSet::new();
    for (i, port) in ports.iter_mut().enumerate() {
        let wanted = port
            .get("nodePort")
            .and_then(Value::as_i64)
            .or_else(|| keep(port));
        if let Some(number) = wanted {
            // One Service may use a node port for TCP and UDP alike.
            if taken.contains(&number)
                || claim(
                    state,
                    &Key::new(PORT_RECORDS, "", number.to_string()),
                    service,
                    uses_port(number),
                )
                .await?
            {
                taken.insert(number);
                port["nodePort"] = json!(number);
                continue;
            }
            return Err(ApiError::invalid(
                resource,
                name,
                vec![cause(
                    &format!("spec.ports[{i}].nodePort"),
                    format!("Invalid value: {number}: provided port is already allocated"),
                )],
            ));
        }
        let (low, high) = state.service_ranges.node_ports;
        let count = i64::from(high) - i64::from(low) + 1;
        let start = rand::thread_rng().gen_range(0..count);
        let mut found = None;
        for step in 0..count {
            let number = i64::from(low) + (start + step) % count;
            if taken.contains(&number) {
                continue;
            }
            let key = Key::new(PORT_RECORDS, "", number.to_string());
            if claim(state, &key, service, uses_port(number)).await? {
                found = Some(number);
                break;
            }
        }
        let number = found.ok_or_else(|| {
            ApiError::internal(format!(
                "failed to allocate a node port: range {low}-{high} is full"
            ))
        })?;
        taken.insert(number);
        port["nodePort"] = json!(number);
    }
    service["spec"]["ports"] = json!(ports);
    Ok(())
}

/// Validates a new Service and gives it its cluster IP and node ports. A dry run validates
/// only. If storing the Service then fails, what was allocated is free again once the grace
/// for Services being created has passed.
async fn admit_create(
    state: &Allocation<'_>,
    resource: &Resource,
    name: &str,
    service: &mut Value,
    dry_run: bool,
) -> ApiResult<()> {
    let mut causes = Vec::new();
    validate(&state.service_ranges, service, &mut causes);
    if !causes.is_empty() {
        return Err(ApiError::invalid(resource, name, causes));
    }
    if dry_run || service_type(service) == "ExternalName" {
        return Ok(());
    }
    give_cluster_ip(state, resource, name, service).await?;
    if has_node_ports(service) {
        allocate_node_ports(state, resource, name, service, None).await?;
        if service.pointer("/spec/externalTrafficPolicy").is_none() {
            service["spec"]["externalTrafficPolicy"] = json!("Cluster");
        }
    }
    Ok(())
}

/// A cluster IP for a Service that has none (headless if it asks for `None`), and the
/// address-family fields that go with it.
async fn give_cluster_ip(
    state: &Allocation<'_>,
    resource: &Resource,
    name: &str,
    service: &mut Value,
) -> ApiResult<()> {
    if str_at(service, "/spec/clusterIP") == Some("None") {
        service["spec"]["clusterIPs"] = json!(["None"]);
    } else {
        allocate_ip(state, resource, name, service).await?;
    }
    set_families(service);
    Ok(())
}

fn set_families(service: &mut Value) {
    let spec = &mut service["spec"];
    if spec.get("ipFamilies").is_none() {
        spec["ipFamilies"] = json!(["IPv4"]);
    }
    if spec.get("ipFamilyPolicy").is_none() {
        spec["ipFamilyPolicy"] = json!("SingleStack");
    }
    if spec.get("internalTrafficPolicy").is_none() {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
}

/// Validates a changed Service: the cluster IP stays (an update that leaves it out keeps it, as
/// `kubectl replace` relies on), node ports are kept for ports that had them, allocated for
/// new ones and dropped when the type no longer has them.
async fn admit_update(
    state: &Allocation<'_>,
    resource: &Resource,
    name: &str,
    old: &Value,
    service: &mut Value,
    dry_run: bool,
) -> ApiResult<()> {
    let mut causes = Vec::new();
    validate(&state.service_ranges, service, &mut causes);
    let old_ip = str_at(old, "/spec/clusterIP").unwrap_or("").to_string();
    let new_ip = str_at(service, "/spec/clusterIP").unwrap_or("").to_string();
    if new_ip.is_empty() && service_type(service) != "ExternalName" {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if let Some(v) = old.pointer(&format!("/spec/{field}")) {
                service["spec"][field] = v.clone();
            }
        }
    } else if new_ip != old_ip && service_type(old) != "ExternalName" {
        causes.push(cause(
            "spec.clusterIPs[0]",
            format!("Invalid value: {new_ip:?}: may not change once set"),
        ));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(resource, name, causes));
    }
    if dry_run {
        return Ok(());
    }
    if service_type(old) == "ExternalName" && service_type(service) != "ExternalName" {
        give_cluster_ip(state, resource, name, service).await?;
    }
    if has_node_ports(service) {
        allocate_node_ports(state, resource, name, service, Some(old)).await?;
    } else if let Some(Value::Array(ports)) = service.pointer_mut("/spec/ports") {
        for port in ports {
            if let Some(port) = port.as_object_mut() {
                port.remove("nodePort");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(service: Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate(&ServiceRanges::default(), &service, &mut causes);
        causes.into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn port_ranges_parse_low_to_high() {
        assert_eq!(parse_port_range("30000-32767"), Ok((30000, 32767)));
        assert!(parse_port_range("32767-30000").is_err());
        assert!(parse_port_range("30000").is_err());
        assert!(parse_port_range("0-10").is_err());
    }

    #[test]
    fn bad_services_name_every_bad_field() {
        assert!(invalid(json!({"spec": {"ports": [{"port": 80}]}})).is_empty());
        assert_eq!(
            invalid(json!({"spec": {
                "type": "Magic",
                "clusterIP": "10.1.0.1",
                "sessionAffinity": "Sticky",
                "ports": [
                    {"port": 80, "protocol": "SCTP", "nodePort": 31000},
                    {"name": "b", "port": 81, "targetPort": 0},
                ],
            }})),
            [
                "spec.type",
                "spec.sessionAffinity",
                "spec.clusterIP",
                "spec.ports[0].name",
                "spec.ports[0].protocol",
                "spec.ports[0].nodePort",
                "spec.ports[1].targetPort",
            ]
        );
        assert_eq!(
            invalid(
                json!({"spec": {"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80, "nodePort": 80}]}})
            ),
            ["spec.clusterIP", "spec.ports[0].nodePort"]
        );
        assert_eq!(
            invalid(json!({"spec": {"type": "ExternalName"}})),
            ["spec.externalName"]
        );
        assert!(invalid(json!({"spec": {"clusterIP": "None"}})).is_empty());
    }
}
