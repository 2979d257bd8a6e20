//! The scheduling queue: pending pods in order of `spec.priority`, then age. A pod that did
//! not fit waits in *unschedulable* until the cluster changes (a node appears or changes, a
//! pod goes away) and then retries after its back-off; one whose bind failed retries after
//! its back-off. Back-off doubles per attempt from `initial` to `max`, as kube-scheduler's.
//!
//! Time is passed in, so the queue is plain data and its tests need no clock.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::time::Instant;

use super::pod::PodKey;

#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// An unschedulable pod is retried after this long even if nothing seemed to change.
    pub max_unschedulable: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_unschedulable: Duration::from_secs(300),
        }
    }
}

const STALE_SCAN_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Backoff,
    Unschedulable,
    /// Popped: a decision or a bind is in progress.
    InFlight,
}

#[derive(Debug)]
struct Entry {
    pod: Arc<Pod>,
    state: State,
    attempts: u32,
    /// Identifies the heap item that is current for this entry.
    seq: u64,
    backoff_until: Instant,
    unschedulable_since: Instant,
    /// The cluster-change counter when the pod was popped.
    popped_at_change: u64,
}

/// Orders the active heap: higher priority first, then older, then first queued.
#[derive(Debug, PartialEq, Eq)]
struct Ready {
    priority: i32,
    created: i64,
    seq: u64,
    key: PodKey,
}

impl Ord for Ready {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then(other.created.cmp(&self.created))
            .then(other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug)]
pub struct Queue {
    options: QueueOptions,
    entries: HashMap<PodKey, Entry>,
    active: BinaryHeap<Ready>,
    backoff: BinaryHeap<Reverse<(Instant, u64, PodKey)>>,
    seq: u64,
    /// Bumped on every cluster change that may make unschedulable pods fit.
    changes: u64,
    /// When [`Queue::flush`] next looks for pods unschedulable for too long (the scan is
    /// over every entry, so it runs at most once a second, not on every pop).
    next_stale_scan: Option<Instant>,
}

fn priority_of(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

fn created_of(pod: &Pod) -> i64 {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}

impl Queue {
    pub fn new(options: QueueOptions) -> Self {
        Self {
            options,
            entries: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            seq: 0,
            changes: 0,
            next_stale_scan: None,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn is_in_flight(&self, key: &str) -> bool {
        self.entries
            .get(key)
            .is_some_and(|e| e.state == State::InFlight)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn activate(&mut self, key: &PodKey) {
        let seq = self.next_seq();
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        entry.state = State::Active;
        entry.seq = seq;
        self.active.push(Ready {
            priority: priority_of(&entry.pod),
            created: created_of(&entry.pod),
            seq,
            key: key.clone(),
        });
    }

    fn back_off(&mut self, key: &PodKey, now: Instant) {
        let seq = self.next_seq();
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if entry.backoff_until <= now {
            self.activate(key);
            return;
        }
        entry.state = State::Backoff;
        entry.seq = seq;
        self.backoff
            .push(Reverse((entry.backoff_until, seq, key.clone())));
    }

    /// A pending pod was created or changed.
    pub fn add_or_update(&mut self, key: PodKey, pod: Arc<Pod>, now: Instant) {
        match self.entries.get_mut(&key) {
            None => {
                self.entries.insert(
                    key.clone(),
                    Entry {
                        pod,
                        state: State::Active,
                        attempts: 0,
                        seq: 0,
                        backoff_until: now,
                        unschedulable_since: now,
                        popped_at_change: 0,
                    },
                );
                self.activate(&key);
            }
            Some(entry) => {
                let priority_changed = priority_of(&entry.pod) != priority_of(&pod);
                // Only a change to what the scheduler reads may make the pod fit; its own
                // status condition coming back through the watch does not.
                let relevant =
                    entry.pod.spec != pod.spec || entry.pod.metadata.labels != pod.metadata.labels;
                entry.pod = pod;
                match entry.state {
                    State::InFlight => {}
                    State::Active if priority_changed => self.activate(&key),
                    State::Active | State::Backoff => {}
                    // The pod itself changed, so it may fit now.
                    State::Unschedulable if relevant => self.back_off(&key, now),
                    State::Unschedulable => {}
                }
            }
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// The next pod to schedule (marked in flight), moving pods whose back-off has ended
    /// and pods unschedulable for too long into the active heap first.
    pub fn pop(&mut self, now: Instant) -> Option<(PodKey, Arc<Pod>)> {
        self.flush(now);
        while let Some(ready) = self.active.pop() {
            let Some(entry) = self.entries.get_mut(&ready.key) else {
                continue;
            };
            if entry.state != State::Active || entry.seq != ready.seq {
                continue;
            }
            entry.state = State::InFlight;
            entry.popped_at_change = self.changes;
            return Some((ready.key, entry.pod.clone()));
        }
        None
    }

    fn flush(&mut self, now: Instant) {
        while let Some(Reverse((until, seq, key))) = self.backoff.peek().cloned() {
            if until > now {
                break;
            }
            self.backoff.pop();
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.state == State::Backoff && e.seq == seq)
            {
                self.activate(&key);
            }
        }
        if self.next_stale_scan.is_some_and(|t| t > now) {
            return;
        }
        self.next_stale_scan = Some(now + STALE_SCAN_INTERVAL.min(self.options.max_unschedulable));
        let stale: Vec<PodKey> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.state == State::Unschedulable
                    && now.duration_since(e.unschedulable_since) >= self.options.max_unschedulable
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.back_off(&key, now);
        }
    }

    fn backoff_for(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        self.options
            .initial_backoff
            .saturating_mul(factor)
            .min(self.options.max_backoff)
    }

    /// The pod was bound (or went away): it leaves the queue.
    pub fn done(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// No node fits. The pod waits for a cluster change, unless one happened while it was
    /// being decided, in which case it only backs off.
    pub fn unschedulable(&mut self, key: &PodKey, now: Instant) {
        let backoff = match self.entries.get(key) {
            Some(e) => self.backoff_for(e.attempts + 1),
            None => return,
        };
        let changes = self.changes;
        let entry = self.entries.get_mut(key).expect("checked above");
        entry.attempts += 1;
        entry.backoff_until = now + backoff;
        if entry.popped_at_change != changes {
            self.back_off(key, now);
        } else {
            entry.state = State::Unschedulable;
            entry.unschedulable_since = now;
        }
    }

    /// Deciding or binding failed for a reason other than fit: retry after back-off.
    pub fn failed(&mut self, key: &PodKey, now: Instant) {
        let backoff = match self.entries.get(key) {
            Some(e) => self.backoff_for(e.attempts + 1),
            None => return,
        };
        let entry = self.entries.get_mut(key).expect("checked above");
        entry.attempts += 1;
        entry.backoff_until = now + backoff;
        self.back_off(key, now);
    }

    /// Something changed that may make unschedulable pods fit.
    pub fn cluster_changed(&mut self, now: Instant) {
        self.changes += 1;
        let waiting: Vec<PodKey> = self
            .entries
            .iter()
            .filter(|(_, e)| e.state == State::Unschedulable)
            .map(|(k, _)| k.clone())
            .collect();
        for key in waiting {
            self.back_off(&key, now);
        }
    }

    /// When the next back-off ends or an unschedulable pod is due a retry anyway.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let backoff = self.backoff.peek().map(|Reverse((t, _, _))| *t);
        let stale = self
            .entries
            .values()
            .filter(|e| e.state == State::Unschedulable)
            .map(|e| e.unschedulable_since + self.options.max_unschedulable)
            .min();
        backoff.into_iter().chain(stale).min()
    }

    /// Keys of every queued pod (for a resync after a re-list).
    pub fn keys(&self) -> Vec<PodKey> {
        self.entries.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    fn pod(name: &str, priority: i32, created: i64) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                priority: Some(priority),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn queue() -> Queue {
        Queue::new(QueueOptions {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
            max_unschedulable: Duration::from_secs(60),
        })
    }

    #[test]
    fn pops_by_priority_then_age() {
        let now = Instant::now();
        let mut q = queue();
        q.add_or_update("default/young".into(), pod("young", 0, 200), now);
        q.add_or_update("default/old".into(), pod("old", 0, 100), now);
        q.add_or_update("default/urgent".into(), pod("urgent", 10, 300), now);
        let order: Vec<_> = std::iter::from_fn(|| q.pop(now).map(|(k, _)| k)).collect();
        assert_eq!(order, ["default/urgent", "default/old", "default/young"]);
    }

    #[test]
    fn unschedulable_pods_wait_for_a_change_then_back_off() {
        let now = Instant::now();
        let mut q = queue();
        let key: PodKey = "default/p".into();
        q.add_or_update(key.clone(), pod("p", 0, 1), now);
        q.pop(now).unwrap();
        q.unschedulable(&key, now);
        assert!(
            q.pop(now + Duration::from_secs(30)).is_none(),
            "waits for a change"
        );
        q.cluster_changed(now + Duration::from_millis(100));
        assert!(
            q.pop(now + Duration::from_millis(500)).is_none(),
            "still backing off"
        );
        assert_eq!(q.pop(now + Duration::from_secs(1)).unwrap().0, key);
    }

    #[test]
    fn a_change_during_the_decision_is_not_missed() {
        let now = Instant::now();
        let mut q = queue();
        let key: PodKey = "default/p".into();
        q.add_or_update(key.clone(), pod("p", 0, 1), now);
        q.pop(now).unwrap();
        q.cluster_changed(now);
        q.unschedulable(&key, now);
        assert_eq!(q.pop(now + Duration::from_secs(1)).unwrap().0, key);
    }

    #[test]
    fn back_off_doubles_up_to_the_maximum() {
        let now = Instant::now();
        let mut q = queue();
        let key: PodKey = "default/p".into();
        q.add_or_update(key.clone(), pod("p", 0, 1), now);
        let mut t = now;
        let mut waits = Vec::new();
        for _ in 0..6 {
            q.pop(t).unwrap();
            q.failed(&key, t);
            let next = q.next_wakeup().unwrap();
            waits.push((next - t).as_secs());
            t = next;
        }
        assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn unschedulable_pods_are_retried_after_the_maximum_wait() {
        let now = Instant::now();
        let mut q = queue();
        let key: PodKey = "default/p".into();
        q.add_or_update(key.clone(), pod("p", 0, 1), now);
        q.pop(now).unwrap();
        q.unschedulable(&key, now);
        assert_eq!(q.next_wakeup(), Some(now + Duration::from_secs(60)));
        assert_eq!(q.pop(now + Duration::from_secs(60)).unwrap().0, key);
    }

    #[test]
    fn an_update_while_in_flight_is_kept_for_the_retry() {
        let now = Instant::now();
        let mut q = queue();
        let key: PodKey = "default/p".into();
        q.add_or_update(key.clone(), pod("p", 0, 1), now);
        q.pop(now).unwrap();
        q.add_or_update(key.clone(), pod("p", 5, 1), now);
        assert!(q.pop(now).is_none(), "in flight pods are not popped twice");
        q.failed(&key, now);
        let (_, p) = q.pop(now + Duration::from_secs(1)).unwrap();
        assert_eq!(p.spec.as_ref().unwrap().priority, Some(5));
    }
}
