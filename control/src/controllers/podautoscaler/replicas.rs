//! The replica count one metric asks for, as upstream's replica calculator works it out.
//!
//! - Pods being deleted or failed are ignored; pending pods are unready; pods with no sample
//!   are missing. For CPU, a pod also counts as unready while it starts: within the CPU
//!   initialization period if it is not ready or its sample began before it became ready,
//!   and after it if it has never been ready within the initial readiness delay.
//! - The usage ratio is taken over the ready pods with samples. Within the tolerance (10%) of
//!   the target nothing changes. Otherwise, if no pod is missing and no unready pod could
//!   damp a scale-up, the answer is `ceil(ratio × ready pods)`.
//! - Else the ratio is taken again with missing pods counted at the target (at 100% of their
//!   request for utilization) when scaling down and at zero when scaling up, and unready
//!   pods at zero when scaling up. If that second ratio is within tolerance or flips the
//!   direction, nothing changes.
//!
//! Values are in thousandths of their unit (millicores, millibytes), as upstream's are.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;

/// One pod's reading of a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// In thousandths.
    pub value: i64,
    /// When the reading's window ended.
    pub timestamp: SystemTime,
    pub window: Duration,
}

/// Pod name → its reading.
pub(crate) type Samples = BTreeMap<String, Sample>;

/// Why no replica count could be worked out, in upstream's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
    #[error("no metrics returned matched known pods")]
    NoMatchedPods,
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest {
        resource: String,
        container: String,
        pod: String,
    },
}

/// The selected pods and their readings, taken at `now`.
pub(crate) struct Observed<'a> {
    pub pods: &'a [&'a Pod],
    pub samples: Samples,
    pub now: SystemTime,
}

/// What a calculation proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Proposal {
    pub replicas: i32,
    /// Percent of the requests, for utilization targets.
    pub utilization: Option<i32>,
    /// The average value per pod, in thousandths.
    pub average: i64,
}

/// The calculator's settings (kube-controller-manager's `--horizontal-pod-autoscaler-*`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Calculator {
    /// How far from 1 the usage ratio must be to scale (0.1).
    pub tolerance: f64,
    /// How long after its start a pod's CPU sample may be skewed by its start (5 min).
    pub cpu_initialization_period: Duration,
    /// How long after its start a pod may be unready without that being held against it (30 s).
    pub initial_readiness_delay: Duration,
}

#[derive(Debug, Default)]
struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

impl Calculator {
    /// The replicas for a utilization target (percent of the pods' requests).
    pub fn utilization_replicas(
        &self,
        current: i32,
        target: i32,
        cpu: bool,
        requests: &BTreeMap<String, i64>,
        observed: Observed,
    ) -> Result<Proposal, Error> {
        let Observed {
            pods,
            mut samples,
            now,
        } = observed;
        if pods.is_empty() {
            return Err(Error::NoPods);
        }
        let groups = self.group(pods, &samples, cpu, now);
        remove(&mut samples, &groups.ignored);
        remove(&mut samples, &groups.unready);
        if samples.is_empty() {
            return Err(Error::NoMetrics);
        }
        let (ratio, utilization, average) = utilization_ratio(&samples, requests, target)?;
        let proposal = |replicas| Proposal {
            replicas,
            utilization: Some(utilization),
            average,
        };
        let scale_up_with_unready = !groups.unready.is_empty() && ratio > 1.0;
        if !scale_up_with_unready && groups.missing.is_empty() {
            if (1.0 - ratio).abs() <= self.tolerance {
                return Ok(proposal(current));
            }
            return Ok(proposal(ceil(ratio * groups.ready as f64)));
        }
        for pod in &groups.missing {
            // Scaling down, a missing pod counts as using its request (or the target, if
            // that is higher); scaling up, as using nothing.
            let value = if ratio < 1.0 {
                requests.get(pod).copied().unwrap_or(0) * i64::from(target.max(100)) / 100
            } else {
                0
            };
            samples.insert(pod.clone(), filled(value, now));
        }
        if scale_up_with_unready {
            for pod in &groups.unready {
                samples.insert(pod.clone(), filled(0, now));
            }
        }
        let (new_ratio, _, _) = utilization_ratio(&samples, requests, target)?;
        Ok(proposal(self.damped(
            current,
            ratio,
            new_ratio,
            samples.len(),
        )))
    }

    /// The replicas for an average value per pod (a resource's `AverageValue`, or a Pods
    /// metric), `target` in thousandths.
    pub fn average_replicas(
        &self,
        current: i32,
        target: i64,
        cpu: bool,
        observed: Observed,
    ) -> Result<Proposal, Error> {
        let Observed {
            pods,
            mut samples,
            now,
        } = observed;
        if pods.is_empty() {
            return Err(Error::NoPods);
        }
        let groups = self.group(pods, &samples, cpu, now);
        remove(&mut samples, &groups.ignored);
        remove(&mut samples, &groups.unready);
        if samples.is_empty() {
            return Err(Error::NoMetrics);
        }
        let (ratio, average) = usage_ratio(&samples, target);
        let proposal = |replicas| Proposal {
            replicas,
            utilization: None,
            average,
        };
        let scale_up_with_unready = !groups.unready.is_empty() && ratio > 1.0;
        if !scale_up_with_unready && groups.missing.is_empty() {
            if (1.0 - ratio).abs() <= self.tolerance {
                return Ok(proposal(current));
            }
            return Ok(proposal(ceil(ratio * groups.ready as f64)));
        }
        for pod in &groups.missing {
            let value = if ratio < 1.0 { target } else { 0 };
            samples.insert(pod.clone(), filled(value, now));
        }
        if scale_up_with_unready {
            for pod in &groups.unready {
                samples.insert(pod.clone(), filled(0, now));
            }
        }
        let (new_ratio, _) = usage_ratio(&samples, target);
        Ok(proposal(self.damped(
            current,
            ratio,
            new_ratio,
            samples.len(),
        )))
    }

    /// The second pass's answer: no change if the filled-in ratio is within tolerance or
    /// points the other way, or if the count would move against the ratio.
    fn damped(&self, current: i32, ratio: f64, new_ratio: f64, counted: usize) -> i32 {
        if (1.0 - new_ratio).abs() <= self.tolerance
            || (ratio < 1.0 && new_ratio > 1.0)
            || (ratio > 1.0 && new_ratio < 1.0)
        {
            return current;
        }
        let replicas = ceil(new_ratio * counted as f64);
        if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
            return current;
        }
        replicas
    }

    fn group(&self, pods: &[&Pod], samples: &Samples, cpu: bool, now: SystemTime) -> Groups {
        let mut groups = Groups::default();
        for pod in pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let status = pod.status.as_ref();
            let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
            if pod.metadata.deletion_timestamp.is_some() || phase == "Failed" {
                groups.ignored.insert(name);
                continue;
            }
            if phase == "Pending" {
                groups.unready.insert(name);
                continue;
            }
            let Some(sample) = samples.get(&name) else {
                groups.missing.insert(name);
                continue;
            };
            if cpu && self.unready_for_cpu(pod, sample, now) {
                groups.unready.insert(name);
                continue;
            }
            groups.ready += 1;
        }
        groups
    }

    fn unready_for_cpu(&self, pod: &Pod, sample: &Sample, now: SystemTime) -> bool {
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        let started = status
            .and_then(|s| s.start_time.as_ref())
            .map(|t| SystemTime::from(t.0));
        let (Some(ready), Some(started)) = (ready, started) else {
            return true;
        };
        let transition = ready
            .last_transition_time
            .as_ref()
            .map_or(started, |t| SystemTime::from(t.0));
        if started + self.cpu_initialization_period > now {
            // Still starting: its sample counts only once it is ready and a whole window of
            // it came after that.
            ready.status == "False" || sample.timestamp < transition + sample.window
        } else {
            // Unready now and never ready since its start.
            ready.status == "False" && started + self.initial_readiness_delay > transition
        }
    }
}

fn filled(value: i64, now: SystemTime) -> Sample {
    Sample {
        value,
        timestamp: now,
        window: Duration::ZERO,
    }
}

fn remove(samples: &mut Samples, pods: &BTreeSet<String>) {
    for pod in pods {
        samples.remove(pod);
    }
}

fn ceil(value: f64) -> i32 {
    value.ceil().clamp(0.0, f64::from(i32::MAX)) as i32
}

/// (usage ÷ target, utilization in whole percent, average value per pod), over the pods that
/// have both a sample and a request.
fn utilization_ratio(
    samples: &Samples,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), Error> {
    let (mut used, mut requested, mut counted) = (0i64, 0i64, 0i64);
    for (pod, sample) in samples {
        if let Some(request) = requests.get(pod) {
            used += sample.value;
            requested += request;
            counted += 1;
        }
    }
    if requested == 0 {
        return Err(Error::NoMatchedPods);
    }
    let utilization = (used * 100 / requested) as i32;
    Ok((
        f64::from(utilization) / f64::from(target),
        utilization,
        used / counted,
    ))
}

/// (average ÷ target, the average), over every sample.
fn usage_ratio(samples: &Samples, target: i64) -> (f64, i64) {
    let total: i64 = samples.values().map(|s| s.value).sum();
    let average = total / samples.len().max(1) as i64;
    (average as f64 / target as f64, average)
}

/// Each pod's request of `resource` (in thousandths), summed over its containers (or only
/// `container`'s) and its restartable init containers. A container without one is an error,
/// with upstream's wording.
pub(crate) fn requests(
    pods: &[&Pod],
    resource: &str,
    container: Option<&str>,
) -> Result<BTreeMap<String, i64>, Error> {
    let mut out = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(spec) = pod.spec.as_ref() else {
            continue;
        };
        let sidecars = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        let mut sum = 0i64;
        for c in spec.containers.iter().chain(sidecars) {
            if container.is_some_and(|wanted| wanted != c.name) {
                continue;
            }
            let request = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .and_then(|q| bosun_api::quantity::parse(&q.0).ok());
            match request {
                Some(value) => sum += thousandths(value),
                None => {
                    return Err(Error::MissingRequest {
                        resource: resource.to_string(),
                        container: c.name.clone(),
                        pod: name,
                    });
                }
            }
        }
        out.insert(name, sum);
    }
    Ok(out)
}

/// A quantity in thousandths of its unit.
pub(crate) fn thousandths(value: f64) -> i64 {
    (value * 1000.0).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CALCULATOR: Calculator = Calculator {
        tolerance: 0.1,
        cpu_initialization_period: Duration::from_secs(300),
        initial_readiness_delay: Duration::from_secs(30),
    };

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    fn rfc3339(t: SystemTime) -> String {
        bosun_api::time::rfc3339(t)
    }

    /// A running pod requesting `request` millicores, started at `started` and ready (or
    /// not) since `since`.
    fn pod(name: &str, phase: &str, request: i64, ready: bool, started: u64, since: u64) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "main", "resources": {"requests": {"cpu": format!("{request}m")}}}]},
            "status": {
                "phase": phase,
                "startTime": rfc3339(at(started)),
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                "lastTransitionTime": rfc3339(at(since))}],
            },
        }))
        .unwrap()
    }

    fn samples(values: &[(&str, i64)], timestamp: u64) -> Samples {
        values
            .iter()
            .map(|(pod, value)| {
                let sample = Sample {
                    value: *value,
                    timestamp: at(timestamp),
                    window: Duration::from_secs(30),
                };
                (pod.to_string(), sample)
            })
            .collect()
    }

    fn seen<'a>(pods: &'a [&'a Pod], samples: Samples, now: SystemTime) -> Observed<'a> {
        Observed { pods, samples, now }
    }

    /// (current replicas, target %, pods, samples, expected replicas, expected utilization)
    /// at ten minutes in, pods long started and ready unless the row says otherwise.
    #[test]
    fn cpu_utilization_follows_upstreams_formula() {
        let now = at(600);
        type Row = (&'static str, i32, i32, Vec<Pod>, Samples, i32, Option<i32>);
        let rows: Vec<Row> = vec![
            (
                "scale up: 3 pods at 90% of 100m each against 30%",
                3,
                30,
                vec![
                    pod("a", "Running", 100, true, 0, 10),
                    pod("b", "Running", 100, true, 0, 10),
                    pod("c", "Running", 100, true, 0, 10),
                ],
                samples(&[("a", 90), ("b", 90), ("c", 90)], 590),
                9,
                Some(90),
            ),
            (
                "within the 10% tolerance nothing moves",
                3,
                50,
                vec![
                    pod("a", "Running", 100, true, 0, 10),
                    pod("b", "Running", 100, true, 0, 10),
                    pod("c", "Running", 100, true, 0, 10),
                ],
                samples(&[("a", 54), ("b", 54), ("c", 54)], 590),
                3,
                Some(54),
            ),
            (
                "scale down: 4 pods at 10% against 50%",
                4,
                50,
                vec![
                    pod("a", "Running", 100, true, 0, 10),
                    pod("b", "Running", 100, true, 0, 10),
                    pod("c", "Running", 100, true, 0, 10),
                    pod("d", "Running", 100, true, 0, 10),
                ],
                samples(&[("a", 10), ("b", 10), ("c", 10), ("d", 10)], 590),
                1,
                Some(10),
            ),
            (
                "a missing pod counts at its request when scaling down: (10+10+100)/300 = 40% → no move below the 3 current",
                3,
                50,
                vec![
                    pod("a", "Running", 100, true, 0, 10),
                    pod("b", "Running", 100, true, 0, 10),
                    pod("c", "Running", 100, true, 0, 10),
                ],
                samples(&[("a", 10), ("b", 10)], 590),
                3,
                Some(10),
            ),
            (
                "a missing pod counts at zero when scaling up: (100+100+0)/300 = 66% against 50%",
                3,
                50,
                vec![
                    pod("a", "Running", 100, true, 0, 10),
                    pod("b", "Running", 100, true, 0, 10),
                    pod("c", "Running", 100, true, 0, 10),
                ],
                samples(&[("a", 100), ("b", 100)], 590),
                4,
                Some(100),
            ),
            (
                "an unready pod damps a scale-up: (80+0)/200 = 40% against 50% flips the direction",
                2,
                50,
                vec![
                    pod("a", "Running", 100, true, 0, 10),
                    pod("b", "Running", 100, false, 590, 595),
                ],
                samples(&[("a", 80), ("b", 500)], 598),
                2,
                Some(80),
            ),
            (
                "a pending pod is unready, and counts at zero: (200+0)/200 = 100% against 50%",
                2,
                50,
                vec![
                    pod("a", "Running", 100, true, 0, 10),
                    pod("b", "Pending", 100, false, 590, 590),
                ],
                samples(&[("a", 200)], 598),
                4,
                Some(200),
            ),
            (
                "a pod that started recently but whose sample postdates readiness by a window counts",
                1,
                50,
                vec![pod("a", "Running", 100, true, 500, 510)],
                samples(&[("a", 100)], 590),
                2,
                Some(100),
            ),
            (
                "a sample that began before the pod was ready is ignored while it starts",
                2,
                50,
                vec![
                    pod("a", "Running", 100, true, 0, 10),
                    pod("b", "Running", 100, true, 580, 585),
                ],
                samples(&[("a", 100), ("b", 900)], 590),
                2,
                Some(100),
            ),
        ];
        for (what, current, target, pods, samples, replicas, utilization) in rows {
            let pods: Vec<&Pod> = pods.iter().collect();
            let requests = requests(&pods, "cpu", None).unwrap();
            let proposal = CALCULATOR
                .utilization_replicas(current, target, true, &requests, seen(&pods, samples, now))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(proposal.replicas, replicas, "{what}");
            assert_eq!(proposal.utilization, utilization, "{what}");
        }
    }

    #[test]
    fn average_values_follow_upstreams_formula() {
        let now = at(600);
        let pods = [
            pod("a", "Running", 100, true, 0, 10),
            pod("b", "Running", 100, true, 0, 10),
        ];
        let pods: Vec<&Pod> = pods.iter().collect();
        // 30 requests/s per pod against 10: 6 replicas.
        let p = CALCULATOR
            .average_replicas(
                2,
                10_000,
                false,
                seen(&pods, samples(&[("a", 30_000), ("b", 30_000)], 599), now),
            )
            .unwrap();
        assert_eq!((p.replicas, p.average, p.utilization), (6, 30_000, None));
        // One pod without a reading while the other is below target: it counts at the
        // target, (5+10)/2 = 7.5 → ratio 0.75 → ceil(1.5) = 2, the current count.
        let p = CALCULATOR
            .average_replicas(
                2,
                10_000,
                false,
                seen(&pods, samples(&[("a", 5_000)], 599), now),
            )
            .unwrap();
        assert_eq!(p.replicas, 2);
    }

    #[test]
    fn bad_inputs_get_upstreams_messages() {
        let now = at(600);
        let none: Vec<&Pod> = Vec::new();
        assert_eq!(
            CALCULATOR
                .utilization_replicas(
                    1,
                    50,
                    true,
                    &BTreeMap::new(),
                    seen(&none, Samples::new(), now)
                )
                .unwrap_err()
                .to_string(),
            "no pods returned by selector while calculating replica count"
        );
        let pending = [pod("a", "Pending", 100, false, 590, 590)];
        let pending: Vec<&Pod> = pending.iter().collect();
        assert_eq!(
            CALCULATOR
                .average_replicas(
                    1,
                    1000,
                    true,
                    seen(&pending, samples(&[("a", 5)], 599), now)
                )
                .unwrap_err()
                .to_string(),
            "did not receive metrics for targeted pods (pods might be unready)"
        );
        let bare: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1"},
            "spec": {"containers": [{"name": "main"}]},
        }))
        .unwrap();
        assert_eq!(
            requests(&[&bare], "cpu", None).unwrap_err().to_string(),
            "missing request for cpu in container main of Pod web-1"
        );
    }
}
