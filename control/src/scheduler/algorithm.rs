//! One scheduling decision: visit nodes (rotating the starting point between decisions),
//! keep those every filter plugin accepts until enough are found, score them, pick the best.
//!
//! Like kube-scheduler, a large cluster is not searched exhaustively: once a share of the
//! nodes has been found feasible (`percentageOfNodesToScore`, adaptive by default: 50 % of
//! the nodes minus 1 % per 125 nodes, at least 5 %, never fewer than 100 nodes) the search
//! stops. Rotation spreads the search over all nodes across decisions.

use super::cache::Cache;
use super::filter::{self, FitError};
use super::pod::PodInfo;
use super::score::{self, Weights};

/// Below this many nodes every node is examined.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
const MIN_FEASIBLE_PERCENTAGE: usize = 5;

/// The decision procedure and the little state it carries between decisions.
#[derive(Debug, Clone)]
pub struct Algorithm {
    pub weights: Weights,
    /// `None`: adaptive, as kube-scheduler's default.
    pub percentage_of_nodes_to_score: Option<u32>,
    next_start: usize,
    /// xorshift state for breaking ties (cheap; nothing here needs a strong generator).
    rng: u64,
}

impl Default for Algorithm {
    fn default() -> Self {
        Self::new(Weights::default(), None)
    }
}

impl Algorithm {
    pub fn new(weights: Weights, percentage_of_nodes_to_score: Option<u32>) -> Self {
        Self {
            weights,
            percentage_of_nodes_to_score,
            next_start: 0,
            rng: rand::random::<u64>() | 1,
        }
    }

    /// How many feasible nodes to look for in a cluster of `all` nodes.
    pub fn feasible_nodes_to_find(&self, all: usize) -> usize {
        if all < MIN_FEASIBLE_NODES_TO_FIND {
            return all;
        }
        let percentage = match self.percentage_of_nodes_to_score {
            Some(p) if p >= 100 => return all,
            Some(p) if p > 0 => p as usize,
            _ => (50usize.saturating_sub(all / 125)).max(MIN_FEASIBLE_PERCENTAGE),
        };
        (all * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
    }

    /// Picks a node for `pod`, or says why none fits.
    pub fn schedule(&mut self, pod: &PodInfo, cache: &Cache) -> Result<String, FitError> {
        let nodes = cache.nodes();
        let existing = cache.node_count();
        let want = self.feasible_nodes_to_find(existing);
        let prepared = filter::prepare(pod, cache);
        let mut feasible = Vec::with_capacity(want.min(nodes.len()));
        let mut error = FitError {
            nodes: existing,
            ..FitError::default()
        };
        let len = nodes.len();
        let start = if len == 0 { 0 } else { self.next_start % len };
        let mut visited = 0;
        for i in 0..len {
            if feasible.len() >= want {
                break;
            }
            visited = i + 1;
            let node = &nodes[(start + i) % len];
            if node.node.is_none() {
                continue;
            }
            match filter::check(pod, node, &prepared) {
                Ok(()) => feasible.push(node),
                Err(reasons) => error.add(&reasons),
            }
        }
        self.next_start = if len == 0 { 0 } else { (start + visited) % len };
        match feasible.len() {
            0 => Err(error),
            1 => Ok(feasible[0].name.clone()),
            _ => {
                let scores = score::score(pod, &feasible, &self.weights);
                Ok(feasible[pick_best(&scores, &mut self.rng)].name.clone())
            }
        }
    }
}

/// The index of the highest score; ties are broken at random (reservoir sampling), so
/// equally good nodes share the load.
fn pick_best(scores: &[i64], rng: &mut u64) -> usize {
    let mut best = 0;
    let mut ties = 1u32;
    for (i, &s) in scores.iter().enumerate().skip(1) {
        if s > scores[best] {
            best = i;
            ties = 1;
        } else if s == scores[best] {
            ties += 1;
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            if rng.is_multiple_of(u64::from(ties)) {
                best = i;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{cache_of, info, node, pod};
    use proptest::prelude::*;
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn large_clusters_are_sampled_like_kube_scheduler() {
        let a = Algorithm::default();
        assert_eq!(a.feasible_nodes_to_find(50), 50);
        assert_eq!(a.feasible_nodes_to_find(1000), 420, "50% - 1000/125 = 42%");
        assert_eq!(a.feasible_nodes_to_find(5000), 500, "at least 5%, here 10%");
        assert_eq!(a.feasible_nodes_to_find(200), 100, "never fewer than 100");
        let all = Algorithm::new(Weights::default(), Some(100));
        assert_eq!(all.feasible_nodes_to_find(1000), 1000);
    }

    #[test]
    fn rotation_visits_every_node_over_time() {
        // 300 nodes, 100 needed per decision: successive decisions start further on.
        let nodes: Vec<_> = (0..300)
            .map(|i| node(&format!("n{i}"), "100", "100Gi", json!({})))
            .collect();
        let cache = cache_of(&nodes);
        let mut a = Algorithm::new(
            Weights {
                least_allocated: 0,
                balanced_allocation: 0,
                node_affinity: 0,
                taint_toleration: 0,
                spread: 0,
            },
            Some(1),
        );
        let mut seen = std::collections::HashSet::new();
        for i in 0..30 {
            seen.insert(
                a.schedule(&info(pod(&format!("p{i}"), "", "", json!({}))), &cache)
                    .unwrap(),
            );
        }
        assert!(
            seen.len() > 20,
            "choices spread over the cluster: {}",
            seen.len()
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Schedule { cpu: u16, memory: u16, owner: u8 },
        Delete(usize),
        Confirm(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u16..2500, 0u16..3000, 0u8..3).prop_map(|(cpu, memory, owner)| Op::Schedule { cpu, memory, owner }),
            1 => any::<usize>().prop_map(Op::Delete),
            1 => any::<usize>().prop_map(Op::Confirm),
        ]
    }

    proptest! {
        /// After any sequence of decisions, confirmations and deletions, every bound pod fit
        /// its node when placed and no node is over-committed.
        #[test]
        fn no_node_is_ever_overcommitted(ops in proptest::collection::vec(op(), 1..120), nodes in 1usize..6) {
            let nodes: Vec<_> = (0..nodes).map(|i| node(&format!("n{i}"), "4", "4Gi", json!({"status": {"allocatable": {"pods": "8"}}}))).collect();
            let mut cache = cache_of(&nodes);
            let mut algorithm = Algorithm::default();
            let mut placed: Vec<(String, String)> = Vec::new();
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Schedule { cpu, memory, owner } => {
                        let p = pod(&format!("p{i}"), &format!("{cpu}m"), &format!("{memory}Mi"), json!({"metadata": {"ownerReferences": [
                            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": format!("o{owner}"), "controller": true}]}}));
                        let p = Arc::new(info(p));
                        if let Ok(name) = algorithm.schedule(&p, &cache) {
                            let n = cache.node(&name).unwrap();
                            prop_assert!(n.requested.milli_cpu + p.requests.milli_cpu <= n.allocatable.milli_cpu);
                            prop_assert!(n.requested.memory + p.requests.memory <= n.allocatable.memory);
                            prop_assert!(n.requested.pods < n.allocatable.pods);
                            cache.assume(p.clone(), &name);
                            placed.push((p.key.clone(), name));
                        }
                    }
                    Op::Delete(i) if !placed.is_empty() => {
                        let (key, _) = placed.remove(i % placed.len());
                        prop_assert!(cache.remove_pod(&key));
                    }
                    Op::Confirm(i) if !placed.is_empty() => {
                        // The watch confirms an assumed pod: accounting must not double.
                        let (key, name) = placed[i % placed.len()].clone();
                        let existing = cache.node(&name).unwrap().pods.iter().find(|p| p.key == key).unwrap().clone();
                        cache.add_bound(existing, &name);
                    }
                    _ => {}
                }
                for n in cache.nodes() {
                    prop_assert!(n.requested.milli_cpu <= n.allocatable.milli_cpu, "{} cpu", n.name);
                    prop_assert!(n.requested.memory <= n.allocatable.memory, "{} memory", n.name);
                    prop_assert!(n.requested.pods <= n.allocatable.pods, "{} pods", n.name);
                    let sum: i64 = n.pods.iter().map(|p| p.requests.milli_cpu).sum();
                    prop_assert_eq!(sum, n.requested.milli_cpu);
                }
            }
        }
    }
}
