//! Score plugins: among the nodes that fit, which is best? Each plugin scores every feasible
//! node from 0 to [`MAX_SCORE`] (normalised over the nodes where the raw value is relative),
//! and the weighted sum picks the node.

use std::str::FromStr;

use super::cache::NodeInfo;
use super::filter::tolerates;
use super::pod::PodInfo;

pub const MAX_SCORE: i64 = 100;

/// How much each score plugin counts; Kubernetes' default weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weights {
    pub least_allocated: i64,
    pub balanced_allocation: i64,
    pub node_affinity: i64,
    pub taint_toleration: i64,
    pub spread: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            least_allocated: 1,
            balanced_allocation: 1,
            node_affinity: 2,
            taint_toleration: 3,
            spread: 2,
        }
    }
}

impl FromStr for Weights {
    type Err = String;

    /// `least-allocated=1,balanced-allocation=1,node-affinity=2,taint-toleration=3,spread=2`;
    /// plugins not named keep their default weight.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut weights = Weights::default();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?}: expected PLUGIN=WEIGHT"))?;
            let value: i64 = value
                .trim()
                .parse()
                .ok()
                .filter(|v| *v >= 0)
                .ok_or_else(|| format!("{pair:?}: a weight is a whole number ≥ 0"))?;
            let slot = match name.trim() {
                "least-allocated" => &mut weights.least_allocated,
                "balanced-allocation" => &mut weights.balanced_allocation,
                "node-affinity" => &mut weights.node_affinity,
                "taint-toleration" => &mut weights.taint_toleration,
                "spread" => &mut weights.spread,
                other => {
                    return Err(format!(
                        "unknown score plugin {other:?} (least-allocated, balanced-allocation, \
                         node-affinity, taint-toleration, spread)"
                    ));
                }
            };
            *slot = value;
        }
        Ok(weights)
    }
}

/// Scores `nodes` for `pod`: one weighted total per node, in order. One pass gathers every
/// plugin's raw value per node; the relative ones are then normalised over the nodes.
pub fn score(pod: &PodInfo, nodes: &[&NodeInfo], weights: &Weights) -> Vec<i64> {
    let affinity_on = weights.node_affinity != 0 && !pod.preferred_terms.is_empty();
    let taints_on = weights.taint_toleration != 0;
    let spread_on = weights.spread != 0 && pod.owner.is_some();
    let mut total = Vec::with_capacity(nodes.len());
    let mut affinity = Vec::new();
    let mut taints = Vec::new();
    let mut spread = Vec::new();
    for node in nodes {
        let (cpu, memory) = fractions(pod, node);
        total.push(
            weights.least_allocated * least_allocated_of(cpu, memory)
                + weights.balanced_allocation * balanced_allocation_of(cpu, memory),
        );
        if affinity_on {
            affinity.push(preferred_affinity(pod, node));
        }
        if taints_on {
            taints.push(intolerable_soft_taints(pod, node));
        }
        if spread_on {
            spread.push(same_owner(pod, node));
        }
    }
    let mut add = |weight: i64, raw: &mut Vec<i64>, reverse: bool| {
        if raw.is_empty() {
            // The plugin has nothing to tell the nodes apart (a reversed score is then the
            // same full score everywhere, which changes no choice).
            return;
        }
        normalize(raw, reverse);
        for (t, s) in total.iter_mut().zip(raw.iter()) {
            *t += weight * s;
        }
    };
    add(weights.node_affinity, &mut affinity, false);
    add(weights.taint_toleration, &mut taints, true);
    add(weights.spread, &mut spread, true);
    total
}

/// Scales raw values to 0..=MAX_SCORE by the largest; `reverse` makes smaller better.
fn normalize(values: &mut [i64], reverse: bool) {
    let max = values.iter().copied().max().unwrap_or(0);
    for v in values.iter_mut() {
        *v = match (max, reverse) {
            (0, true) => MAX_SCORE,
            (0, false) => 0,
            (max, false) => *v * MAX_SCORE / max,
            (max, true) => MAX_SCORE - *v * MAX_SCORE / max,
        };
    }
}

/// The fractions of cpu and memory the node would have in use with this pod.
fn fractions(pod: &PodInfo, node: &NodeInfo) -> (f64, f64) {
    let fraction = |used: i64, want: i64, alloc: i64| {
        if alloc <= 0 {
            1.0
        } else {
            ((used + want) as f64 / alloc as f64).min(1.0)
        }
    };
    (
        fraction(
            node.nonzero_requested.milli_cpu,
            pod.nonzero.milli_cpu,
            node.allocatable.milli_cpu,
        ),
        fraction(
            node.nonzero_requested.memory,
            pod.nonzero.memory,
            node.allocatable.memory,
        ),
    )
}

/// LeastAllocated: the mean free share of cpu and memory after placing the pod.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let (cpu, memory) = fractions(pod, node);
    least_allocated_of(cpu, memory)
}

fn least_allocated_of(cpu: f64, memory: f64) -> i64 {
    (((1.0 - cpu) + (1.0 - memory)) / 2.0 * MAX_SCORE as f64) as i64
}

/// BalancedAllocation: cpu and memory used in equal shares score best.
pub fn balanced_allocation(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let (cpu, memory) = fractions(pod, node);
    balanced_allocation_of(cpu, memory)
}

fn balanced_allocation_of(cpu: f64, memory: f64) -> i64 {
    let deviation = (cpu - memory).abs() / 2.0;
    ((1.0 - deviation) * MAX_SCORE as f64) as i64
}

/// NodeAffinity (preferred): the summed weights of the preferred terms the node matches.
pub fn preferred_affinity(pod: &PodInfo, node: &NodeInfo) -> i64 {
    pod.preferred_terms
        .iter()
        .filter(|(_, term)| term.matches(&node.name, &node.labels))
        .map(|(weight, _)| i64::from(*weight))
        .sum()
}

/// TaintToleration (PreferNoSchedule): how many soft taints the pod does not tolerate.
pub fn intolerable_soft_taints(pod: &PodInfo, node: &NodeInfo) -> i64 {
    node.taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| {
            !pod.tolerations.iter().any(|tol| {
                tol.effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
                    && tolerates(tol, t)
            })
        })
        .count() as i64
}

/// Spreading: how many pods of the same controlling owner the node already runs.
pub fn same_owner(pod: &PodInfo, node: &NodeInfo) -> i64 {
    pod.owner
        .and_then(|o| node.owners.get(&o))
        .map(|c| i64::from(*c))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{cache_of, info, node, pod};
    use serde_json::json;
    use std::sync::Arc;

    /// The node `score` prefers among `nodes` for `p`, with only `weights` active.
    fn best(p: &PodInfo, cache: &crate::scheduler::cache::Cache, weights: Weights) -> String {
        let nodes: Vec<_> = cache.nodes().iter().collect();
        let scores = score(p, &nodes, &weights);
        let max = *scores.iter().max().unwrap();
        assert_eq!(
            scores.iter().filter(|s| **s == max).count(),
            1,
            "a unique best: {scores:?}"
        );
        nodes[scores.iter().position(|s| *s == max).unwrap()]
            .name
            .clone()
    }

    fn only(name: &str) -> Weights {
        let zero = Weights {
            least_allocated: 0,
            balanced_allocation: 0,
            node_affinity: 0,
            taint_toleration: 0,
            spread: 0,
        };
        match name {
            "least" => Weights {
                least_allocated: 1,
                ..zero
            },
            "balanced" => Weights {
                balanced_allocation: 1,
                ..zero
            },
            "affinity" => Weights {
                node_affinity: 1,
                ..zero
            },
            "taint" => Weights {
                taint_toleration: 1,
                ..zero
            },
            "spread" => Weights { spread: 1, ..zero },
            _ => unreachable!(),
        }
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let mut cache = cache_of(&[
            node("busy", "4", "8Gi", json!({})),
            node("idle", "4", "8Gi", json!({})),
        ]);
        cache.assume(Arc::new(info(pod("x", "3", "6Gi", json!({})))), "busy");
        let p = info(pod("p", "500m", "1Gi", json!({})));
        assert_eq!(best(&p, &cache, only("least")), "idle");
    }

    #[test]
    fn balanced_allocation_prefers_even_use() {
        // "cpu-heavy" already has its cpu used; a memory-hungry pod evens it out.
        let mut cache = cache_of(&[
            node("cpu-heavy", "4", "8Gi", json!({})),
            node("mem-heavy", "4", "8Gi", json!({})),
        ]);
        cache.assume(Arc::new(info(pod("x", "3", "1Gi", json!({})))), "cpu-heavy");
        cache.assume(Arc::new(info(pod("y", "1", "6Gi", json!({})))), "mem-heavy");
        let p = info(pod("p", "100m", "5Gi", json!({})));
        assert_eq!(best(&p, &cache, only("balanced")), "cpu-heavy");
    }

    #[test]
    fn preferred_affinity_weights_count() {
        let cache = cache_of(&[
            node(
                "a",
                "4",
                "8Gi",
                json!({"metadata": {"labels": {"disk": "ssd"}}}),
            ),
            node(
                "b",
                "4",
                "8Gi",
                json!({"metadata": {"labels": {"disk": "ssd", "zone": "z1"}}}),
            ),
            node("c", "4", "8Gi", json!({})),
        ]);
        let term = |w: i32, key: &str| json!({"weight": w, "preference": {"matchExpressions": [{"key": key, "operator": "Exists"}]}});
        let p = info(pod(
            "p",
            "",
            "",
            json!({"spec": {"affinity": {"nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [term(10, "disk"), term(5, "zone")]}}}}),
        ));
        assert_eq!(best(&p, &cache, only("affinity")), "b");
    }

    #[test]
    fn prefer_no_schedule_taints_are_avoided_unless_tolerated() {
        let soft = json!({"spec": {"taints": [{"key": "spot", "effect": "PreferNoSchedule"}]}});
        let cache = cache_of(&[
            node("spot", "4", "8Gi", soft),
            node("plain", "4", "8Gi", json!({})),
        ]);
        assert_eq!(
            best(&info(pod("p", "", "", json!({}))), &cache, only("taint")),
            "plain"
        );
        let tolerant = info(pod(
            "p",
            "",
            "",
            json!({"spec": {"tolerations": [{"key": "spot", "operator": "Exists"}]}}),
        ));
        let nodes: Vec<_> = cache.nodes().iter().collect();
        let scores = score(&tolerant, &nodes, &only("taint"));
        assert_eq!(scores[0], scores[1], "a tolerated soft taint costs nothing");
    }

    #[test]
    fn pods_of_one_owner_spread_across_nodes() {
        let owned = |name: &str| {
            pod(
                name,
                "",
                "",
                json!({"metadata": {"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-1", "controller": true}]}}),
            )
        };
        let mut cache = cache_of(&[
            node("a", "4", "8Gi", json!({})),
            node("b", "4", "8Gi", json!({})),
        ]);
        cache.assume(Arc::new(info(owned("web-1"))), "a");
        assert_eq!(best(&info(owned("web-2")), &cache, only("spread")), "b");
    }

    #[test]
    fn weights_parse_from_the_flag() {
        let w: Weights = "spread=5, least-allocated=0".parse().unwrap();
        assert_eq!((w.spread, w.least_allocated, w.taint_toleration), (5, 0, 3));
        assert!("spread".parse::<Weights>().is_err());
        assert!(
            "magic=1"
                .parse::<Weights>()
                .unwrap_err()
                .contains("unknown score plugin")
        );
        assert!("spread=-1".parse::<Weights>().is_err());
    }
}
