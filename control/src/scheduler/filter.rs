//! Filter plugins: may this pod go to this node? Each plugin that says no gives the reasons
//! Kubernetes would give, and [`FitError`] sums them over the nodes into the message of the
//! pod's `PodScheduled=False` condition.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::cache::{Cache, NodeInfo};
use super::pod::PodInfo;

/// A filter plugin's answer: `Err` lists why the node was refused.
pub type Verdict = Result<(), Vec<Reason>>;

/// Why one node was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Unschedulable,
    NodeName,
    NotReady,
    UntoleratedTaint { key: String, value: String },
    NodeAffinity,
    Insufficient(&'static str),
    TooManyPods,
    Ports,
    AntiAffinity,
    ExistingAntiAffinity,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::NodeName => f.write_str("node(s) didn't match the requested node name"),
            Reason::NotReady => f.write_str("node(s) were not ready"),
            Reason::UntoleratedTaint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Reason::NodeAffinity => {
                f.write_str("node(s) didn't match Pod's node affinity/selector")
            }
            Reason::Insufficient(resource) => write!(f, "Insufficient {resource}"),
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::Ports => {
                f.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Reason::AntiAffinity => f.write_str("node(s) didn't match pod anti-affinity rules"),
            Reason::ExistingAntiAffinity => {
                f.write_str("node(s) didn't satisfy existing pods anti-affinity rules")
            }
        }
    }
}

/// No node fits: how many nodes there were and why each was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FitError {
    pub nodes: usize,
    pub reasons: BTreeMap<Reason, usize>,
}

impl FitError {
    pub fn add(&mut self, reasons: &[Reason]) {
        for r in reasons {
            *self.reasons.entry(r.clone()).or_default() += 1;
        }
    }
}

impl fmt::Display for FitError {
    /// `0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient memory.`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(reason, count)| format!("{count} {reason}"))
            .collect();
        parts.sort();
        if parts.is_empty() {
            write!(f, "0/{} nodes are available.", self.nodes)
        } else {
            write!(
                f,
                "0/{} nodes are available: {}.",
                self.nodes,
                parts.join(", ")
            )
        }
    }
}

/// Facts computed once per pod before the nodes are visited: the topology domains that
/// anti-affinity rules close to it.
#[derive(Debug, Default)]
pub struct Prepared {
    /// (topology key, values) where a pod matching one of this pod's terms runs.
    own: Vec<(String, HashSet<String>)>,
    /// (topology key, values) where a running pod's term matches this pod.
    existing: Vec<(String, HashSet<String>)>,
}

pub fn prepare(pod: &PodInfo, cache: &Cache) -> Prepared {
    let mut prepared = Prepared::default();
    if pod.anti_affinity.is_empty() && cache.anti_affinity_pods() == 0 {
        return prepared;
    }
    for term in &pod.anti_affinity {
        let mut values = HashSet::new();
        for node in cache.nodes() {
            if let Some(value) = node.topology_value(&term.topology_key)
                && node.pods.iter().any(|other| {
                    other.key != pod.key && term.matches(&other.namespace, &other.labels)
                })
            {
                values.insert(value.to_string());
            }
        }
        prepared.own.push((term.topology_key.clone(), values));
    }
    if cache.anti_affinity_pods() > 0 {
        for node in cache.nodes() {
            for other in node.pods.iter().filter(|o| o.key != pod.key) {
                for term in &other.anti_affinity {
                    if term.matches(&pod.namespace, &pod.labels)
                        && let Some(value) = node.topology_value(&term.topology_key)
                    {
                        match prepared
                            .existing
                            .iter_mut()
                            .find(|(k, _)| *k == term.topology_key)
                        {
                            Some((_, values)) => {
                                values.insert(value.to_string());
                            }
                            None => prepared.existing.push((
                                term.topology_key.clone(),
                                HashSet::from([value.to_string()]),
                            )),
                        }
                    }
                }
            }
        }
    }
    prepared
}

/// Runs every filter plugin; `Err` carries the reasons the node was refused. Plugins that
/// cannot refuse this pod (no ports asked for, no selector, no anti-affinity anywhere) are
/// skipped: this runs for hundreds of nodes per decision.
pub fn check(pod: &PodInfo, node: &NodeInfo, prepared: &Prepared) -> Verdict {
    if node.node.is_none() {
        return Err(vec![Reason::NotReady]);
    }
    node_unschedulable(pod, node, prepared)?;
    node_name(pod, node, prepared)?;
    node_ready(pod, node, prepared)?;
    if !node.taints.is_empty() {
        taint_toleration(pod, node, prepared)?;
    }
    if !pod.node_selector.is_empty() || pod.required_terms.is_some() {
        node_affinity(pod, node, prepared)?;
    }
    resources_fit(pod, node, prepared)?;
    if !pod.host_ports.is_empty() {
        node_ports(pod, node, prepared)?;
    }
    if !prepared.own.is_empty() {
        anti_affinity(pod, node, prepared)?;
    }
    if !prepared.existing.is_empty() {
        existing_anti_affinity(pod, node, prepared)?;
    }
    Ok(())
}

/// NodeUnschedulable: cordoned nodes take only pods that tolerate the cordon's taint.
pub fn node_unschedulable(pod: &PodInfo, node: &NodeInfo, _: &Prepared) -> Verdict {
    if !node.unschedulable {
        return Ok(());
    }
    let cordon = Taint {
        key: "node.kubernetes.io/unschedulable".to_string(),
        effect: "NoSchedule".to_string(),
        ..Default::default()
    };
    if pod.tolerations.iter().any(|t| tolerates(t, &cordon)) {
        Ok(())
    } else {
        Err(vec![Reason::Unschedulable])
    }
}

/// NodeName: a pod that names a node fits only there.
pub fn node_name(pod: &PodInfo, node: &NodeInfo, _: &Prepared) -> Verdict {
    match pod.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        Some(name) if !name.is_empty() && name != node.name => Err(vec![Reason::NodeName]),
        _ => Ok(()),
    }
}

/// NodeReady: only nodes whose Ready condition is True.
pub fn node_ready(_: &PodInfo, node: &NodeInfo, _: &Prepared) -> Verdict {
    if node.ready {
        Ok(())
    } else {
        Err(vec![Reason::NotReady])
    }
}

/// TaintToleration: every NoSchedule and NoExecute taint must be tolerated.
pub fn taint_toleration(pod: &PodInfo, node: &NodeInfo, _: &Prepared) -> Verdict {
    for taint in &node.taints {
        if matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            && !pod.tolerations.iter().any(|t| tolerates(t, taint))
        {
            return Err(vec![Reason::UntoleratedTaint {
                key: taint.key.clone(),
                value: taint.value.clone().unwrap_or_default(),
            }]);
        }
    }
    Ok(())
}

/// Whether a toleration matches a taint (key, operator Equal/Exists, value, effect).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = toleration.key.as_deref().unwrap_or_default();
    let exists = toleration.operator.as_deref() == Some("Exists");
    let key_ok = (key.is_empty() && exists) || key == taint.key;
    let value_ok = exists
        || toleration.value.as_deref().unwrap_or_default()
            == taint.value.as_deref().unwrap_or_default();
    effect_ok && key_ok && value_ok
}

/// NodeSelector and NodeAffinity: `spec.nodeSelector` (with the RuntimeClass's) and one of
/// the required terms.
pub fn node_affinity(pod: &PodInfo, node: &NodeInfo, _: &Prepared) -> Verdict {
    let selector_ok = pod.node_selector.matches(&node.labels);
    let terms_ok = pod
        .required_terms
        .as_ref()
        .is_none_or(|terms| terms.iter().any(|t| t.matches(&node.name, &node.labels)));
    if selector_ok && terms_ok {
        Ok(())
    } else {
        Err(vec![Reason::NodeAffinity])
    }
}

/// NodeResourcesFit: cpu, memory (for wasm, the memory limit) and the pod count.
pub fn resources_fit(pod: &PodInfo, node: &NodeInfo, _: &Prepared) -> Verdict {
    let want = &pod.requests;
    let free = |alloc: i64, used: i64| alloc - used;
    let mut reasons = Vec::new();
    if free(node.allocatable.pods, node.requested.pods) < 1 {
        reasons.push(Reason::TooManyPods);
    }
    if want.milli_cpu > 0
        && want.milli_cpu > free(node.allocatable.milli_cpu, node.requested.milli_cpu)
    {
        reasons.push(Reason::Insufficient("cpu"));
    }
    if want.memory > 0 && want.memory > free(node.allocatable.memory, node.requested.memory) {
        reasons.push(Reason::Insufficient("memory"));
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

/// NodePorts: requested host ports must be free on the node.
pub fn node_ports(pod: &PodInfo, node: &NodeInfo, _: &Prepared) -> Verdict {
    if pod
        .host_ports
        .iter()
        .any(|want| node.used_ports.iter().any(|used| want.conflicts(used)))
    {
        return Err(vec![Reason::Ports]);
    }
    Ok(())
}

/// InterPodAntiAffinity, the pod's own terms: no matching pod in the node's domain.
pub fn anti_affinity(_: &PodInfo, node: &NodeInfo, prepared: &Prepared) -> Verdict {
    blocked(node, &prepared.own, Reason::AntiAffinity)
}

/// InterPodAntiAffinity, symmetric: no running pod whose term rejects this pod.
pub fn existing_anti_affinity(_: &PodInfo, node: &NodeInfo, prepared: &Prepared) -> Verdict {
    blocked(node, &prepared.existing, Reason::ExistingAntiAffinity)
}

fn blocked(node: &NodeInfo, domains: &[(String, HashSet<String>)], reason: Reason) -> Verdict {
    for (key, values) in domains {
        if node.topology_value(key).is_some_and(|v| values.contains(v)) {
            return Err(vec![reason]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::pod::PodInfo;
    use crate::scheduler::testing::{cache_of, info, node, pod};
    use k8s_openapi::api::node::v1::RuntimeClass;
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::Arc;

    const GI: &str = "4Gi";

    /// Runs every filter for one pod against one node (alone in the cache).
    fn fits(pod: &PodInfo, node: Arc<k8s_openapi::api::core::v1::Node>) -> Verdict {
        let cache = cache_of(std::slice::from_ref(&node));
        let prepared = prepare(pod, &cache);
        check(pod, &cache.nodes()[0], &prepared)
    }

    #[test]
    fn node_level_filters() {
        let plain = || info(pod("p", "100m", "64Mi", json!({})));
        let tolerant = |tolerations| {
            info(pod(
                "p",
                "",
                "",
                json!({"spec": {"tolerations": tolerations}}),
            ))
        };
        let taint = |effect: &str| json!({"spec": {"taints": [{"key": "gpu", "value": "yes", "effect": effect}]}});
        let cases: Vec<(&str, PodInfo, serde_json::Value, Verdict)> = vec![
            ("plain pod, plain node", plain(), json!({}), Ok(())),
            (
                "cordoned",
                plain(),
                json!({"spec": {"unschedulable": true}}),
                Err(vec![Reason::Unschedulable]),
            ),
            (
                "cordon tolerated",
                tolerant(
                    json!([{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]),
                ),
                json!({"spec": {"unschedulable": true}}),
                Ok(()),
            ),
            (
                "not ready",
                plain(),
                json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
                Err(vec![Reason::NotReady]),
            ),
            (
                "untolerated NoSchedule",
                plain(),
                taint("NoSchedule"),
                Err(vec![Reason::UntoleratedTaint {
                    key: "gpu".into(),
                    value: "yes".into(),
                }]),
            ),
            (
                "untolerated NoExecute",
                plain(),
                taint("NoExecute"),
                Err(vec![Reason::UntoleratedTaint {
                    key: "gpu".into(),
                    value: "yes".into(),
                }]),
            ),
            (
                "PreferNoSchedule only scores",
                plain(),
                taint("PreferNoSchedule"),
                Ok(()),
            ),
            (
                "Equal toleration",
                tolerant(json!([{"key": "gpu", "value": "yes", "effect": "NoSchedule"}])),
                taint("NoSchedule"),
                Ok(()),
            ),
            (
                "Equal toleration, other value",
                tolerant(json!([{"key": "gpu", "value": "no"}])),
                taint("NoSchedule"),
                Err(vec![Reason::UntoleratedTaint {
                    key: "gpu".into(),
                    value: "yes".into(),
                }]),
            ),
            (
                "Exists toleration",
                tolerant(json!([{"key": "gpu", "operator": "Exists"}])),
                taint("NoExecute"),
                Ok(()),
            ),
            (
                "tolerate everything",
                tolerant(json!([{"operator": "Exists"}])),
                taint("NoSchedule"),
                Ok(()),
            ),
            (
                "toleration for another effect",
                tolerant(json!([{"key": "gpu", "operator": "Exists", "effect": "NoExecute"}])),
                taint("NoSchedule"),
                Err(vec![Reason::UntoleratedTaint {
                    key: "gpu".into(),
                    value: "yes".into(),
                }]),
            ),
        ];
        for (name, pod, extra, want) in cases {
            let got = fits(&pod, node("n1", "2", GI, extra));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn node_selector_and_affinity() {
        let labels = json!({"metadata": {"labels": {"zone": "a", "cores": "8", "runtime.bosun.dev/runc": "true"}}});
        let with_affinity = |exprs: serde_json::Value| {
            info(pod(
                "p",
                "",
                "",
                json!({"spec": {"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": exprs}]}}}}}),
            ))
        };
        let cases = vec![
            (
                "selector matches",
                info(pod(
                    "p",
                    "",
                    "",
                    json!({"spec": {"nodeSelector": {"zone": "a"}}}),
                )),
                true,
            ),
            (
                "selector differs",
                info(pod(
                    "p",
                    "",
                    "",
                    json!({"spec": {"nodeSelector": {"zone": "b"}}}),
                )),
                false,
            ),
            (
                "In",
                with_affinity(json!([{"key": "zone", "operator": "In", "values": ["a", "b"]}])),
                true,
            ),
            (
                "NotIn",
                with_affinity(json!([{"key": "zone", "operator": "NotIn", "values": ["a"]}])),
                false,
            ),
            (
                "Exists",
                with_affinity(json!([{"key": "cores", "operator": "Exists"}])),
                true,
            ),
            (
                "DoesNotExist",
                with_affinity(json!([{"key": "gpu", "operator": "DoesNotExist"}])),
                true,
            ),
            (
                "Gt",
                with_affinity(json!([{"key": "cores", "operator": "Gt", "values": ["4"]}])),
                true,
            ),
            (
                "Lt",
                with_affinity(json!([{"key": "cores", "operator": "Lt", "values": ["4"]}])),
                false,
            ),
            (
                "matchFields metadata.name",
                info(pod(
                    "p",
                    "",
                    "",
                    json!({"spec": {"affinity": {"nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]},
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z"]}]}]}}}}}),
                )),
                false,
            ),
            (
                "any one term suffices",
                info(pod(
                    "p",
                    "",
                    "",
                    json!({"spec": {"affinity": {"nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z"]}]},
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}}}),
                )),
                true,
            ),
        ];
        for (name, pod, want) in cases {
            let got = fits(&pod, node("n1", "2", GI, labels.clone()));
            assert_eq!(got.is_ok(), want, "{name}: {got:?}");
            if !want {
                assert_eq!(got, Err(vec![Reason::NodeAffinity]), "{name}");
            }
        }
    }

    #[test]
    fn resources_fit_counts_cpu_memory_and_pods() {
        let n = || {
            node(
                "n1",
                "1",
                "1Gi",
                json!({"status": {"allocatable": {"pods": "1"}}}),
            )
        };
        assert_eq!(fits(&info(pod("p", "1", "1Gi", json!({}))), n()), Ok(()));
        assert_eq!(
            fits(&info(pod("p", "1500m", "2Gi", json!({}))), n()),
            Err(vec![
                Reason::Insufficient("cpu"),
                Reason::Insufficient("memory")
            ])
        );
        let mut cache = cache_of(&[n()]);
        cache.assume(Arc::new(info(pod("q", "", "", json!({})))), "n1");
        let p = info(pod("p", "", "", json!({})));
        let prepared = prepare(&p, &cache);
        assert_eq!(
            check(&p, &cache.nodes()[0], &prepared),
            Err(vec![Reason::TooManyPods])
        );
    }

    #[test]
    fn a_wasm_container_reserves_its_memory_limit_a_runc_one_its_request() {
        let spec = json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {
            "requests": {"memory": "100Mi"}, "limits": {"memory": "2Gi"}}}]}});
        let wasm = info(pod("p", "", "", spec.clone()));
        assert_eq!(wasm.requests.memory, 2 << 30);
        let mut classes = HashMap::new();
        let runc: RuntimeClass =
            serde_json::from_value(json!({"metadata": {"name": "runc"}, "handler": "runc"}))
                .unwrap();
        classes.insert("runc".to_string(), runc);
        let mut spec = spec;
        spec["spec"]["runtimeClassName"] = json!("runc");
        let linux = PodInfo::new(pod("p", "", "", spec), &classes).unwrap();
        assert_eq!(linux.requests.memory, 100 << 20);
        assert_eq!(
            fits(&wasm, node("n1", "2", "1Gi", json!({}))),
            Err(vec![Reason::Insufficient("memory")])
        );
    }

    #[test]
    fn init_containers_are_counted_the_kubernetes_way() {
        let c = |name: &str, cpu: &str, always: bool| {
            let mut c =
                json!({"name": name, "image": "i", "resources": {"requests": {"cpu": cpu}}});
            if always {
                c["restartPolicy"] = json!("Always");
            }
            c
        };
        // Plain init containers run one at a time: the pod needs max(sum(app), max(init)).
        let p = info(pod(
            "p",
            "",
            "",
            json!({"spec": {
            "initContainers": [c("i1", "2", false), c("i2", "500m", false)],
            "containers": [c("a", "300m", false), c("b", "300m", false)]}}),
        ));
        assert_eq!(p.requests.milli_cpu, 2000);
        // A sidecar (restartable init container) keeps running beside the later init
        // containers and the app.
        let p = info(pod(
            "p",
            "",
            "",
            json!({"spec": {
            "initContainers": [c("side", "200m", true), c("i1", "1", false)],
            "containers": [c("a", "300m", false)]}}),
        ));
        assert_eq!(p.requests.milli_cpu, 1200, "max(200m + 1, 300m + 200m)");
    }

    #[test]
    fn host_ports_must_be_free() {
        let with_port = |name: &str, ip: &str, port: i32| {
            pod(
                name,
                "",
                "",
                json!({"spec": {"containers": [{"name": "c", "image": "i",
                "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip}]}]}}),
            )
        };
        let mut cache = cache_of(&[node("n1", "2", GI, json!({}))]);
        cache.assume(Arc::new(info(with_port("a", "", 8080))), "n1");
        for (name, ip, port, ok) in [
            ("same port", "", 8080, false),
            ("specific ip on wildcard", "10.0.0.1", 8080, false),
            ("other port", "", 8081, true),
        ] {
            let p = info(with_port("p", ip, port));
            let prepared = prepare(&p, &cache);
            assert_eq!(
                check(&p, &cache.nodes()[0], &prepared).is_ok(),
                ok,
                "{name}"
            );
        }
    }

    #[test]
    fn pod_anti_affinity_on_hostname_works_both_ways() {
        let anti = |name: &str, app: &str| {
            pod(
                name,
                "",
                "",
                json!({"metadata": {"labels": {"app": app}}, "spec": {"affinity": {"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}]}}}}),
            )
        };
        let mut cache = cache_of(&[
            node("n1", "2", GI, json!({})),
            node("n2", "2", GI, json!({})),
        ]);
        cache.assume(Arc::new(info(anti("web-1", "web"))), "n1");
        let second = info(anti("web-2", "web"));
        let prepared = prepare(&second, &cache);
        assert_eq!(
            check(&second, cache.node("n1").unwrap(), &prepared),
            Err(vec![Reason::AntiAffinity])
        );
        assert_eq!(check(&second, cache.node("n2").unwrap(), &prepared), Ok(()));
        // A pod without terms is still kept away from a pod whose term rejects it.
        let plain = info(pod(
            "plain",
            "",
            "",
            json!({"metadata": {"labels": {"app": "web"}}}),
        ));
        let prepared = prepare(&plain, &cache);
        assert_eq!(
            check(&plain, cache.node("n1").unwrap(), &prepared),
            Err(vec![Reason::ExistingAntiAffinity])
        );
        // Other namespaces are not affected.
        let elsewhere = info(pod(
            "x",
            "",
            "",
            json!({"metadata": {"namespace": "other", "labels": {"app": "web"}}}),
        ));
        let prepared = prepare(&elsewhere, &cache);
        assert_eq!(
            check(&elsewhere, cache.node("n1").unwrap(), &prepared),
            Ok(())
        );
    }

    #[test]
    fn runtime_class_constraints_are_merged_into_the_pod() {
        let runc: RuntimeClass = serde_json::from_value(json!({
            "metadata": {"name": "runc"}, "handler": "runc",
            "scheduling": {"nodeSelector": {"runtime.bosun.dev/runc": "true"},
                           "tolerations": [{"key": "linux-only", "operator": "Exists"}]}}))
        .unwrap();
        let classes = HashMap::from([("runc".to_string(), runc)]);
        let p = PodInfo::new(
            pod("p", "", "", json!({"spec": {"runtimeClassName": "runc"}})),
            &classes,
        )
        .unwrap();
        let plain_node = node("n1", "2", GI, json!({}));
        let runc_node = node(
            "n2",
            "2",
            GI,
            json!({
            "metadata": {"labels": {"runtime.bosun.dev/runc": "true"}},
            "spec": {"taints": [{"key": "linux-only", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(fits(&p, plain_node), Err(vec![Reason::NodeAffinity]));
        assert_eq!(fits(&p, runc_node), Ok(()));
        let err = PodInfo::new(
            pod("p", "", "", json!({"spec": {"runtimeClassName": "gvisor"}})),
            &classes,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "RuntimeClass \"gvisor\" not found");
    }

    #[test]
    fn fit_error_reads_like_kubernetes() {
        let mut e = FitError {
            nodes: 3,
            ..Default::default()
        };
        e.add(&[Reason::Insufficient("memory")]);
        e.add(&[Reason::Insufficient("memory")]);
        e.add(&[Reason::UntoleratedTaint {
            key: "dedicated".into(),
            value: "db".into(),
        }]);
        assert_eq!(
            e.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 2 Insufficient memory."
        );
    }
}
