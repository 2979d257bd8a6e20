//! The process's own series beyond the API server's requests: the store, the scheduler, the
//! controllers' work and leader election, with the names Kubernetes components use, so
//! dashboards and alerts made for them carry over. `GET /metrics` on the API port writes them
//! beside the request series (`apiserver::instrument`).
//!
//! - `etcd_request_duration_seconds{operation, type}`: each store call, as kube-apiserver
//!   times its storage (the store is PostgreSQL or SQLite here, as it is for k3s' kine);
//! - `scheduler_schedule_attempts_total{result, profile}` and
//!   `scheduler_scheduling_attempt_duration_seconds{result, profile}`: each attempt to place
//!   a pod, from taking it off the queue to its binding (`scheduled`, `unschedulable`,
//!   `error`);
//! - `workqueue_adds_total{name}`, `workqueue_depth{name}`, `workqueue_work_duration_seconds`
//!   and `workqueue_retries_total{name}` for the controllers run through `controllers::drive`.
//!   kube-rs starts a triggered reconcile at once rather than queueing it, so the depth is the
//!   reconciles started and not yet finished;
//! - `leader_election_master_status{name}`: 1 while this process holds the Lease `name`.
//!
//! The series are process-wide (one scheduler, one controller manager and one store per
//! `bosun server`), held by the `prometheus-client` crate.

use std::sync::OnceLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub operation: &'static str,
    /// The resource, as the store keys it (`pods`, `deployments.apps`).
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub result: &'static str,
    pub profile: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    pub name: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The series.
pub struct Telemetry {
    pub store: HistogramFamily<StoreLabels>,
    pub schedule_attempts: Family<AttemptLabels, Counter>,
    pub schedule_durations: HistogramFamily<AttemptLabels>,
    pub queue_adds: Family<NameLabel, Counter>,
    pub queue_depth: Family<NameLabel, Gauge>,
    pub queue_work: HistogramFamily<NameLabel>,
    pub queue_retries: Family<NameLabel, Counter>,
    pub leader: Family<NameLabel, Gauge>,
}

fn latency() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The process's series.
pub fn global() -> &'static Telemetry {
    static GLOBAL: OnceLock<Telemetry> = OnceLock::new();
    GLOBAL.get_or_init(|| Telemetry {
        store: Family::new_with_constructor(latency),
        schedule_attempts: Family::default(),
        schedule_durations: Family::new_with_constructor(latency),
        queue_adds: Family::default(),
        queue_depth: Family::default(),
        queue_work: Family::new_with_constructor(latency),
        queue_retries: Family::default(),
        leader: Family::default(),
    })
}

impl Telemetry {
    /// Adds every series to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "etcd_request_duration_seconds",
            "Store request latency in seconds for each operation and object type",
            self.store.clone(),
        );
        registry.register(
            "scheduler_schedule_attempts",
            "Number of attempts to schedule pods, by the result",
            self.schedule_attempts.clone(),
        );
        registry.register(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            self.schedule_durations.clone(),
        );
        registry.register(
            "workqueue_adds",
            "Total number of adds handled by workqueue (reconciles started)",
            self.queue_adds.clone(),
        );
        registry.register(
            "workqueue_depth",
            "Current depth of workqueue (reconciles started and not yet finished)",
            self.queue_depth.clone(),
        );
        registry.register(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            self.queue_work.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Total number of retries handled by workqueue",
            self.queue_retries.clone(),
        );
        registry.register(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease",
            self.leader.clone(),
        );
    }

    /// Times a store call of `operation` on `kind` until the guard drops.
    pub fn store_call(&self, operation: &'static str, kind: &str) -> Timer<'_, StoreLabels> {
        Timer {
            family: &self.store,
            labels: StoreLabels {
                operation,
                r#type: kind.to_string(),
            },
            started: Instant::now(),
        }
    }

    /// Counts and times one scheduling attempt that began at `started`.
    pub fn schedule_attempt(&self, result: &'static str, started: Instant) {
        let labels = AttemptLabels {
            result,
            profile: "default-scheduler",
        };
        self.schedule_attempts.get_or_create(&labels).inc();
        self.schedule_durations
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }

    /// Marks whether this process holds the Lease `name`.
    pub fn set_leader(&self, name: &str, leading: bool) {
        self.leader
            .get_or_create(&NameLabel { name: name.into() })
            .set(i64::from(leading));
    }

    /// Counts a reconcile of the controller `name` until the guard drops.
    pub fn reconcile(&self, name: &str) -> Work<'_> {
        let label = NameLabel { name: name.into() };
        self.queue_adds.get_or_create(&label).inc();
        self.queue_depth.get_or_create(&label).inc();
        Work {
            telemetry: self,
            label,
            started: Instant::now(),
        }
    }
}

/// Observes its elapsed time when dropped.
pub struct Timer<'a, L: Clone + std::hash::Hash + Eq> {
    family: &'a HistogramFamily<L>,
    labels: L,
    started: Instant,
}

impl<L: Clone + std::hash::Hash + Eq> Drop for Timer<'_, L> {
    fn drop(&mut self) {
        self.family
            .get_or_create(&self.labels)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// A reconcile in progress.
pub struct Work<'a> {
    telemetry: &'a Telemetry,
    label: NameLabel,
    started: Instant,
}

impl Drop for Work<'_> {
    fn drop(&mut self) {
        self.telemetry.queue_depth.get_or_create(&self.label).dec();
        self.telemetry
            .queue_work
            .get_or_create(&self.label)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_written_with_kubernetes_names() {
        let telemetry = global();
        drop(telemetry.store_call("get", "pods"));
        telemetry.schedule_attempt("scheduled", Instant::now());
        telemetry.set_leader("bosun-scheduler", true);
        drop(telemetry.reconcile("replicaset"));
        let mut registry = Registry::default();
        telemetry.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains(".."), "{text}");
        for series in [
            r#"etcd_request_duration_seconds_count{operation="get",type="pods"} "#,
            r#"scheduler_schedule_attempts_total{result="scheduled",profile="default-scheduler"} "#,
            r#"scheduler_scheduling_attempt_duration_seconds_count{result="scheduled",profile="default-scheduler"} 1"#,
            r#"leader_election_master_status{name="bosun-scheduler"} 1"#,
            r#"workqueue_adds_total{name="replicaset"} "#,
            r#"workqueue_depth{name="replicaset"} 0"#,
            r#"workqueue_work_duration_seconds_count{name="replicaset"} "#,
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
    }
}
