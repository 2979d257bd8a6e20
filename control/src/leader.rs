//! Leader election through a coordination.k8s.io/v1 Lease, as client-go's `leaderelection`
//! does it: one active holder per lease, everyone else on hot standby.
//!
//! Entry point: [`LeaderElector::run`], which runs a piece of work only while this process
//! holds the lease and stops it the moment the lease cannot be renewed. The scheduler and the
//! controller manager each run under their own lease.
//!
//! Expiry is judged by the local clock from when this process last saw the lease record
//! change, never by comparing another machine's `renewTime` with ours, so clock skew between
//! servers cannot make two leaders.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

/// How long a lease lasts and how its holder keeps it.
#[derive(Debug, Clone)]
pub struct LeaseTiming {
    /// How long a standby waits, after the last change it saw, before taking the lease.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby retries.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    /// kube-scheduler's defaults.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Competes for one Lease on behalf of one identity.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
}

/// The lease record as last seen, and when we saw it change.
struct Observed {
    record: (Option<String>, Option<Timestamp>, Option<String>),
    since: Instant,
}

impl LeaderElector {
    pub fn new(client: kube::Client, namespace: &str, name: &str, timing: LeaseTiming) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity(),
            timing,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Runs `work` each time this process becomes the leader, until `shutdown` resolves. When
    /// the lease cannot be renewed within the renew deadline, the work is dropped (so it
    /// stops at its next await point) and the elector goes back to standing by. On shutdown
    /// a held lease is released, so a standby takes over at once.
    pub async fn run<W, F>(&self, mut work: W, shutdown: impl Future<Output = ()>)
    where
        W: FnMut() -> F,
        F: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        let telemetry = crate::telemetry::global();
        telemetry.set_leader(&self.name, false);
        let mut observed: Option<Observed> = None;
        loop {
            // Stand by until the lease is ours.
            loop {
                match self.try_acquire_or_renew(&mut observed).await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(lease = %self.name, %error, "cannot read or take the lease")
                    }
                }
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(jittered(self.timing.retry_period)) => {}
                }
            }
            tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
            telemetry.set_leader(&self.name, true);
            // Boxed so that dropping it below really stops the work.
            let mut leading = Box::pin(work());
            let mut last_renewal = Instant::now();
            let mut work_ended = false;
            let lost = loop {
                tokio::select! {
                    _ = &mut shutdown => break false,
                    // Work that ends on its own keeps the lease until shutdown, so that no one
                    // else starts the same work.
                    _ = &mut leading, if !work_ended => work_ended = true,
                    _ = tokio::time::sleep(self.timing.retry_period) => {
                        match self.try_acquire_or_renew(&mut observed).await {
                            Ok(true) => last_renewal = Instant::now(),
                            Ok(false) => break true,
                            Err(error) => {
                                tracing::warn!(lease = %self.name, %error, "cannot renew the lease");
                                if last_renewal.elapsed() >= self.timing.renew_deadline {
                                    break true;
                                }
                            }
                        }
                    }
                }
            };
            drop(leading);
            telemetry.set_leader(&self.name, false);
            if !lost {
                self.release().await;
                return;
            }
            tracing::warn!(lease = %self.name, identity = %self.identity, "lost the lease; standing by");
        }
    }

    /// Takes the lease if it is free, expired or ours; returns whether we hold it now.
    async fn try_acquire_or_renew(&self, observed: &mut Option<Observed>) -> kube::Result<bool> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec_for_us(None, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = (
            holder.clone(),
            spec.renew_time.as_ref().map(|t| t.0),
            lease.metadata.resource_version.clone(),
        );
        let since = match observed.take() {
            Some(o) if o.record == record => o.since,
            _ => Instant::now(),
        };
        *observed = Some(Observed { record, since });
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(self.timing.lease_duration);
        let ours = holder.as_deref() == Some(self.identity.as_str());
        if !ours && holder.is_some() && since.elapsed() < duration {
            return Ok(false);
        }
        lease.spec = Some(self.spec_for_us(Some(&spec), now));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec_for_us(&self, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let was_ours = previous.and_then(|p| p.holder_identity.as_deref()) == Some(&self.identity);
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs().max(1) as i32),
            acquire_time: match previous {
                Some(p) if was_ours => p.acquire_time.clone(),
                _ => Some(MicroTime(now)),
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(match previous {
                Some(_) if !was_ours => transitions + 1,
                _ => transitions,
            }),
            ..Default::default()
        }
    }

    /// Gives the lease up (empty holder, one-second duration), as client-go's
    /// `ReleaseOnCancel` does.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        if let Err(error) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(lease = %self.name, %error, "cannot release the lease");
        }
    }
}

/// `hostname_randomhex`: unique per process, readable in `kubectl get lease -o yaml`.
fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "bosun".to_string());
    format!("{host}_{:016x}", rand::random::<u64>())
}

/// Standbys retry at slightly different times so they do not collide every period.
fn jittered(period: Duration) -> Duration {
    period + period.mul_f64(rand::random::<f64>() * 0.2)
}
