//! One container of a pod, as its worker tracks it: a [`Slot`] with its [`State`] (waiting,
//! launching, running, terminated), restart count, back-off and probes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::time::Instant;

use super::probe::Probes;
use crate::images::Image;
use crate::runtime::{self, Exit};

/// A started container, whatever runs it.
pub(super) type Handle = Arc<dyn runtime::Container>;

/// A run that ended.
#[derive(Clone)]
pub(super) struct Finished {
    pub exit: Exit,
    /// None when it never started (or its start is unknown).
    pub started_at: Option<Time>,
    pub finished_at: Time,
    pub container_id: String,
}

pub(super) enum State {
    /// Not running; started when `retry_at` has passed (or at once without one).
    Waiting {
        reason: String,
        message: Option<String>,
        retry_at: Option<Instant>,
    },
    /// Pulling or starting.
    Launching,
    Running {
        started_at: Time,
        since: Instant,
        handle: Handle,
        container_id: String,
    },
    Terminated(Finished),
}

/// One container of the pod (an init container or an app container).
pub(super) struct Slot {
    pub spec: Container,
    pub state: State,
    pub restart_count: i32,
    pub last: Option<Finished>,
    /// The back-off the next failure waits.
    pub backoff: Option<Duration>,
    pub image_id: String,
    /// Whether it ever ran (a later start is a restart).
    pub started_once: bool,
    pub pull_failures: u32,
    /// Held for the pod's life: the image cache keeps what live pods use.
    pub image: Option<Image>,
    /// The probes of the current run (while it runs).
    pub probes: Option<Probes>,
    /// Counts the container's runs, so that a late probe result of an earlier one is ignored.
    pub run: u64,
    /// An init container with `restartPolicy: Always`: a sidecar that runs for the pod's life.
    pub sidecar: bool,
    /// A sidecar that has started (its startup probe passed): the next init container may go.
    pub sidecar_started: bool,
}

impl Slot {
    pub fn new(spec: Container, waiting_reason: &str) -> Self {
        let spec_is_sidecar = spec.restart_policy.as_deref() == Some("Always");
        Self {
            spec,
            state: State::Waiting {
                reason: waiting_reason.to_string(),
                message: None,
                retry_at: None,
            },
            restart_count: 0,
            last: None,
            backoff: None,
            image_id: String::new(),
            started_once: false,
            pull_failures: 0,
            image: None,
            probes: None,
            run: 0,
            sidecar: spec_is_sidecar,
            sidecar_started: false,
        }
    }

    /// Done as far as the init sequence is concerned: completed, or a sidecar that started.
    pub fn init_done(&self) -> bool {
        self.succeeded() || (self.sidecar && self.sidecar_started)
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// Running and past its startup probe, if it has one.
    pub fn started(&self) -> bool {
        self.is_running() && self.probes.as_ref().is_none_or(|p| p.started)
    }

    /// Running, started (its startup probe passed) and ready (its readiness probe passed).
    pub fn ready(&self) -> bool {
        self.is_running() && self.probes.as_ref().is_none_or(|p| p.started && p.ready)
    }

    pub fn succeeded(&self) -> bool {
        matches!(&self.state, State::Terminated(f) if f.exit.code == 0)
    }

    pub fn due(&self, now: Instant) -> bool {
        matches!(&self.state, State::Waiting { retry_at, .. } if retry_at.is_none_or(|t| t <= now))
    }

    /// The handle of the current run.
    pub fn handle(&self) -> Option<&Handle> {
        match &self.state {
            State::Running { handle, .. } => Some(handle),
            _ => None,
        }
    }

    /// Waits `delay` before the next start, with `reason` and `message` shown meanwhile.
    pub fn wait(&mut self, reason: &str, message: String, delay: Duration) {
        self.state = State::Waiting {
            reason: reason.to_string(),
            message: Some(message),
            retry_at: Some(Instant::now() + delay),
        };
    }

    /// Adopts what a previous run of the agent reported: finished containers stay finished;
    /// ones that were running died with that agent and count a restart.
    pub fn resume(&mut self, previous: &ContainerStatus, keeps_finished: impl Fn(i32) -> bool) {
        self.restart_count = previous.restart_count;
        self.image_id = previous.image_id.clone();
        let state = previous.state.as_ref();
        let container_id = previous.container_id.clone().unwrap_or_default();
        if let Some(t) = state.and_then(|s| s.terminated.as_ref())
            && keeps_finished(t.exit_code)
        {
            self.state = State::Terminated(Finished {
                exit: Exit {
                    code: t.exit_code,
                    reason: t.reason.clone().unwrap_or_default(),
                    message: t.message.clone(),
                },
                started_at: t.started_at.clone(),
                finished_at: t.finished_at.clone().unwrap_or_else(now),
                container_id,
            });
            self.started_once = true;
            return;
        }
        let ran = state.is_some_and(|s| s.running.is_some() || s.terminated.is_some())
            || previous
                .last_state
                .as_ref()
                .is_some_and(|s| s.terminated.is_some());
        if ran {
            self.started_once = true;
            self.last = Some(Finished {
                exit: Exit {
                    code: 137,
                    reason: "ContainerStatusUnknown".to_string(),
                    message: Some("the node agent restarted while the container ran".to_string()),
                },
                started_at: state
                    .and_then(|s| s.running.as_ref())
                    .and_then(|r| r.started_at.clone()),
                finished_at: now(),
                container_id,
            });
        }
    }
}

/// Now, to the second (as the Kubernetes API keeps times).
pub(super) fn now() -> Time {
    use k8s_openapi::jiff::Timestamp;
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// The kubelet's back-off: `initial`, doubled each time, capped at `max`.
pub(super) fn next_backoff(
    current: &mut Option<Duration>,
    initial: Duration,
    max: Duration,
) -> Duration {
    let next = match *current {
        None => initial,
        Some(d) => (d * 2).min(max),
    };
    *current = Some(next);
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap() {
        let mut b = None;
        let s = Duration::from_secs;
        let seq: Vec<Duration> = (0..7)
            .map(|_| next_backoff(&mut b, s(10), s(300)))
            .collect();
        assert_eq!(seq, [s(10), s(20), s(40), s(80), s(160), s(300), s(300)]);
    }
}
