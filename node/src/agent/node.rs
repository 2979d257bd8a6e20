//! The Node object and the node's Lease: registration, status from real readings, heartbeat.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bosun_api::cidr::Ipv4Cidr;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::Agent;

/// The label a node carries for each runtime it offers, `bosun.dev/runtime.<handler>=true`;
/// RuntimeClasses select nodes by it.
pub const RUNTIME_LABEL_PREFIX: &str = "bosun.dev/runtime.";

/// The node annotation holding its log server's certificate (PEM), which the API server
/// trusts for that node alone when it proxies `pods/log`.
pub const SERVING_CERT_ANNOTATION: &str = "bosun.dev/serving-certificate";

/// What the node measured about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReadings {
    pub cpus: u32,
    pub memory_total: u64,
    pub memory_available: u64,
    pub disk_total: u64,
    pub disk_available: u64,
    pub pids_in_use: u64,
    pub pid_max: u64,
}

impl NodeReadings {
    /// Reads /proc and the file system holding `data_dir`.
    pub fn read(data_dir: &Path) -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib = |key: &str| {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0)
                * 1024
        };
        let (disk_total, disk_available) = statvfs(data_dir).unwrap_or((0, 0));
        // /proc/loadavg's fourth field is "runnable/total" scheduling entities.
        let pids_in_use = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| {
                l.split_whitespace()
                    .nth(3)
                    .and_then(|f| f.split_once('/'))
                    .and_then(|(_, total)| total.parse().ok())
            })
            .unwrap_or(0);
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(32768);
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_total: kib("MemTotal:"),
            memory_available: kib("MemAvailable:"),
            disk_total,
            disk_available,
            pids_in_use,
            pid_max,
        }
    }

    /// The kubelet's default hard eviction thresholds: memory.available < 100Mi.
    pub fn memory_pressure(&self) -> bool {
        self.memory_available < 100 << 20
    }

    /// nodefs.available < 10%.
    pub fn disk_pressure(&self) -> bool {
        self.disk_total > 0 && self.disk_available * 10 < self.disk_total
    }

    /// Fewer than 10% of the PIDs left.
    pub fn pid_pressure(&self) -> bool {
        self.pids_in_use * 10 > self.pid_max * 9
    }
}

fn statvfs(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `s` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let block = s.f_frsize as u64;
    Some((s.f_blocks as u64 * block, s.f_bavail as u64 * block))
}

/// Waits until the control plane has given the node a podCIDR (the node IPAM controller does
/// it within moments of registration).
pub(super) async fn wait_for_pod_cidr(agent: &Agent) -> Ipv4Cidr {
    let api: Api<Node> = Api::all(agent.client.clone());
    let started = Instant::now();
    let mut told = Instant::now();
    loop {
        match api.get(&agent.config.name).await {
            Ok(node) => {
                let cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref());
                match cidr.map(str::parse::<Ipv4Cidr>) {
                    Some(Ok(cidr)) => return cidr,
                    Some(Err(error)) => {
                        tracing::warn!(%error, "the node's spec.podCIDR is not a usable IPv4 block")
                    }
                    None => {}
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the node"),
        }
        if told.elapsed() >= Duration::from_secs(10) {
            tracing::warn!(
                waited_seconds = started.elapsed().as_secs(),
                "still waiting for the control plane to give this node a podCIDR (is the server's nodeipam controller running?)"
            );
            told = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A node's pod block and the address its pods are reached through, if it has both.
pub(super) fn pod_route(node: &Node) -> Option<(Ipv4Cidr, Ipv4Addr)> {
    let cidr = node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()?;
    let ip = node
        .status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .parse()
        .ok()?;
    Some((cidr, ip))
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn labels(agent: &Agent) -> Value {
    json!({
        "kubernetes.io/hostname": agent.config.name,
        "kubernetes.io/os": std::env::consts::OS,
        "kubernetes.io/arch": arch(),
        "beta.kubernetes.io/os": std::env::consts::OS,
        "beta.kubernetes.io/arch": arch(),
        format!("{RUNTIME_LABEL_PREFIX}wasmtime"): "true",
    })
}

/// The status fields that change only with the machine, not with time.
/// The node condition saying whether pods get their own network (`False`) or share the
/// node's (`True`, for want of privileges). Not `NetworkUnavailable`: pods still run.
pub const POD_NETWORK_CONDITION: &str = "bosun.dev/PodNetworkUnavailable";

fn status(agent: &Agent, readings: &NodeReadings, previous: Option<&Value>) -> Value {
    let c = &agent.config;
    let resources = json!({
        "cpu": readings.cpus.to_string(),
        "memory": format!("{}Ki", readings.memory_total / 1024),
        "ephemeral-storage": format!("{}Ki", readings.disk_total / 1024),
        "pods": c.max_pods.to_string(),
    });
    let condition = |kind: &str, pressure: bool, ok: (&str, &str), bad: (&str, &str)| {
        let (status, (reason, message)) = if pressure {
            ("True", bad)
        } else {
            ("False", ok)
        };
        json!({"type": kind, "status": status, "reason": reason, "message": message})
    };
    let mut conditions = vec![
        condition(
            "MemoryPressure",
            readings.memory_pressure(),
            (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
        ),
        condition(
            "DiskPressure",
            readings.disk_pressure(),
            ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("KubeletHasDiskPressure", "kubelet has disk pressure"),
        ),
        condition(
            "PIDPressure",
            readings.pid_pressure(),
            (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
        ),
        json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
               "message": "bosun node is posting ready status"}),
    ];
    if let Some(network) = agent.network.get() {
        conditions.push(match network.fallback_reason() {
            Some(reason) => condition(
                POD_NETWORK_CONDITION,
                true,
                ("", ""),
                (
                    "HostNetworkFallback",
                    &format!("pods share the node's network: {reason}"),
                ),
            ),
            None => condition(
                POD_NETWORK_CONDITION,
                false,
                (
                    "PodNetworkReady",
                    "each pod has its own network namespace and IP",
                ),
                ("", ""),
            ),
        });
    }
    let now = Timestamp::now().to_string();
    for condition in &mut conditions {
        let before = previous
            .and_then(|p| p.pointer("/conditions"))
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|p| p["type"] == condition["type"]));
        let since = match before {
            Some(b) if b["status"] == condition["status"] => b["lastTransitionTime"].clone(),
            _ => json!(now),
        };
        condition["lastTransitionTime"] = since;
        condition["lastHeartbeatTime"] = json!(now);
    }
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions,
        "addresses": [
            {"type": "InternalIP", "address": agent.node_ip.to_string()},
            {"type": "Hostname", "address": c.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": c.port}},
        "nodeInfo": node_info(),
    })
}

fn node_info() -> Value {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let os_image = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".to_string());
    json!({
        "machineID": read("/etc/machine-id"),
        "systemUUID": read("/sys/class/dmi/id/product_uuid"),
        "bootID": read("/proc/sys/kernel/random/boot_id"),
        "kernelVersion": read("/proc/sys/kernel/osrelease"),
        "osImage": os_image,
        "operatingSystem": std::env::consts::OS,
        "architecture": arch(),
        "containerRuntimeVersion": format!("wasmtime://{}", crate::runtime::wasmtime::VERSION),
        "kubeletVersion": format!("v{}-bosun", env!("CARGO_PKG_VERSION")),
        "kubeProxyVersion": "",
    })
}

/// Creates the Node, or adopts the one a previous run of this node left, and writes its
/// status.
/// `gateway`: whether the node serves the function gateway (published for the control plane).
pub(super) async fn register(agent: &Agent, gateway: bool) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(agent.client.clone());
    let name = &agent.config.name;
    let mut metadata = json!({"labels": labels(agent), "annotations": {}});
    if let Some(cert) = &agent.serving_cert {
        metadata["annotations"][SERVING_CERT_ANNOTATION] = json!(cert);
    }
    // Null removes it from a Node adopted from a run that had a gateway.
    metadata["annotations"][bosun_api::function::GATEWAY_ANNOTATION] = if gateway {
        json!(format!(
            "{} {}",
            agent.config.function_port, agent.config.function_domain
        ))
    } else {
        serde_json::Value::Null
    };
    match api.get_opt(name).await? {
        None => {
            let mut annotations = metadata["annotations"].clone();
            if let Some(map) = annotations.as_object_mut() {
                map.retain(|_, v| !v.is_null());
            }
            let node: Node = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": { "name": name, "labels": metadata["labels"],
                              "annotations": annotations },
            }))
            .expect("a valid Node");
            match api.create(&PostParams::default(), &node).await {
                Ok(_) => tracing::info!(node = %name, "registered the node"),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Some(_) => {
            api.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": metadata })),
            )
            .await?;
            tracing::info!(node = %name, "adopted the existing node object");
        }
    }
    write_status(agent).await
}

/// Reads the node and writes its status.
pub(super) async fn write_status(agent: &Agent) -> Result<(), kube::Error> {
    write_readings(agent, &NodeReadings::read(&agent.config.data_dir)).await
}

async fn write_readings(agent: &Agent, readings: &NodeReadings) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(agent.client.clone());
    let current = api.get_status(&agent.config.name).await?;
    let previous = serde_json::to_value(&current.status).ok();
    let status = status(agent, readings, previous.as_ref());
    api.patch_status(
        &agent.config.name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}

/// What decides whether the Node's status needs writing: the conditions' verdicts and the
/// advertised resources, not the exact readings.
fn verdict(agent: &Agent, readings: &NodeReadings) -> (bool, bool, bool, u32, u64, Option<bool>) {
    (
        readings.memory_pressure(),
        readings.disk_pressure(),
        readings.pid_pressure(),
        readings.cpus,
        readings.memory_total >> 20,
        agent.network.get().map(|n| n.fallback_reason().is_some()),
    )
}

/// Re-reads the node every `status_update_period` and writes its status when a verdict
/// changed, and at least every five minutes as the kubelet does.
pub(super) async fn keep_status(agent: Arc<Agent>) {
    const REPORT_AT_LEAST_EVERY: Duration = Duration::from_secs(300);
    let mut last = verdict(&agent, &NodeReadings::read(&agent.config.data_dir));
    let mut written = Instant::now();
    let mut tick = tokio::time::interval(agent.config.status_update_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let readings = NodeReadings::read(&agent.config.data_dir);
        let now = verdict(&agent, &readings);
        if now == last
            && written.elapsed() < REPORT_AT_LEAST_EVERY
            && server_says_ready(&agent).await
        {
            continue;
        }
        match write_readings(&agent, &readings).await {
            Ok(()) => {
                last = now;
                written = Instant::now();
            }
            Err(error) => tracing::warn!(%error, "cannot update the node's status"),
        }
    }
}

/// Whether the Node object says Ready=True. The node lifecycle controller sets it to Unknown
/// when the Lease was not renewed in time (this process was frozen, or cut off); the next
/// status write says Ready again. An unanswered question counts as ready (nothing to fix).
async fn server_says_ready(agent: &Agent) -> bool {
    let api: Api<Node> = Api::all(agent.client.clone());
    match api.get_status(&agent.config.name).await {
        Ok(node) => node
            .status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        Err(_) => true,
    }
}

/// Renews the node's Lease in `kube-node-lease` every quarter of the lease duration,
/// creating it (owned by the Node, so it goes with it) when missing.
pub(super) async fn heartbeat(agent: Arc<Agent>) {
    let period = (agent.config.lease_duration / 4).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = renew(&agent).await {
            tracing::warn!(%error, "cannot renew the node lease");
        }
    }
}

async fn renew(agent: &Agent) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(agent.client.clone(), "kube-node-lease");
    let name = &agent.config.name;
    let seconds = agent.config.lease_duration.as_secs().max(1);
    let now = MicroTime(Timestamp::now());
    let spec = json!({
        "holderIdentity": name,
        "leaseDurationSeconds": seconds,
        "renewTime": now,
    });
    match api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let node = Api::<Node>::all(agent.client.clone()).get(name).await?;
            let mut owner = BTreeMap::new();
            owner.insert("apiVersion", json!("v1"));
            owner.insert("kind", json!("Node"));
            owner.insert("name", json!(name));
            owner.insert("uid", json!(node.metadata.uid));
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "kube-node-lease",
                             "ownerReferences": [owner]},
                "spec": spec,
            }))
            .expect("a valid Lease");
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        other => other.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_real() {
        let r = NodeReadings::read(Path::new("/"));
        assert!(r.cpus >= 1);
        assert!(r.memory_total > 0 && r.memory_available <= r.memory_total);
        assert!(r.disk_total > 0);
        assert!(r.pids_in_use > 0 && r.pid_max > r.pids_in_use);
    }

    #[test]
    fn pressure_thresholds() {
        let mut r = NodeReadings {
            cpus: 2,
            memory_total: 8 << 30,
            memory_available: 4 << 30,
            disk_total: 100,
            disk_available: 50,
            pids_in_use: 100,
            pid_max: 1000,
        };
        assert!(!r.memory_pressure() && !r.disk_pressure() && !r.pid_pressure());
        r.memory_available = 50 << 20;
        r.disk_available = 9;
        r.pids_in_use = 901;
        assert!(r.memory_pressure() && r.disk_pressure() && r.pid_pressure());
    }
}
