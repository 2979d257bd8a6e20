//! Functions' cron triggers: on each trigger's schedule (cron syntax and time zones, as
//! CronJobs take them, through [`super::cronjob::next_after`]), the Function is called over
//! HTTP through a node's function gateway, which wakes it from zero when needed.
//!
//! - **At most once per tick.** The controller runs under the controllers' leader Lease, and
//!   writes the tick to the Function's `status.triggers[i].lastScheduleTime` before it calls:
//!   a new leader after a failover does not call the same tick again.
//! - **Missed ticks.** A tick later than the trigger's `startingDeadlineSeconds` (10 s when
//!   unset) is skipped with a `TriggerMissed` Event, as a CronJob skips what it missed.
//! - **Calls.** A call goes to a Ready node that serves the gateway (its
//!   `serving.bosun.dev/gateway` annotation: `PORT DOMAIN`), at its InternalIP (else its
//!   ExternalIP), with
//!   `Host: NAME.NAMESPACE.DOMAIN`, and waits at most the Function's timeout. Each call is an
//!   Event: `TriggerCalled` with `cron trigger 0: POST /tick 200 in 3 ms`, or `TriggerFailed`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bosun_api::function::{CronTrigger, Function, GATEWAY_ANNOTATION, TriggerStatus};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{ControllersConfig, Error};
use crate::events::{Recorder, reference};

/// How late a tick may be called when its trigger does not say.
const DEFAULT_STARTING_DEADLINE: i64 = 10;
/// How often the schedules are looked at.
const PERIOD: Duration = Duration::from_secs(1);

pub async fn run(client: kube::Client, config: ControllersConfig) {
    let (store, events) = super::watch_functions(client.clone());
    tokio::spawn(async move {
        use futures::StreamExt;
        let mut events = std::pin::pin!(events);
        while events.next().await.is_some() {}
    });
    let recorder = Recorder::start(client.clone(), "function-triggers", config.events.clone());
    let http = reqwest::Client::new();
    let mut ticker = tokio::time::interval(PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for function in store.state() {
            if function.spec.triggers.is_empty() || function.meta().deletion_timestamp.is_some() {
                continue;
            }
            if let Err(error) = tick(&client, &http, &recorder, &function).await {
                tracing::warn!(%error, function = %function.name_any(), "cron triggers");
            }
        }
    }
}

/// What to do with a trigger now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Due {
    Nothing,
    /// Call for this scheduled time.
    Call(Timestamp),
    /// Skip this (the latest) scheduled time: it is later than the deadline.
    Missed(Timestamp),
}

/// The latest scheduled time in `(last, now]`, and whether it is still in time. A trigger
/// never handled counts from the Function's creation.
fn due(trigger: &CronTrigger, last: Timestamp, now: Timestamp) -> Due {
    let Ok(schedule) = bosun_api::cron::Schedule::parse(&trigger.schedule) else {
        return Due::Nothing;
    };
    let Ok(zone) = crate::objects::time_zone(trigger.time_zone.as_deref()) else {
        return Due::Nothing;
    };
    let mut latest = None;
    let mut t = last;
    while let Some(next) = super::cronjob::next_after(&schedule, &zone, t) {
        if next > now {
            break;
        }
        latest = Some(next);
        t = next;
    }
    let Some(latest) = latest else {
        return Due::Nothing;
    };
    let deadline = trigger
        .starting_deadline_seconds
        .unwrap_or(DEFAULT_STARTING_DEADLINE);
    if now.duration_since(latest).as_secs() > deadline {
        Due::Missed(latest)
    } else {
        Due::Call(latest)
    }
}

async fn tick(
    client: &kube::Client,
    http: &reqwest::Client,
    recorder: &Recorder,
    function: &Arc<Function>,
) -> Result<(), Error> {
    let now = Timestamp::now();
    let created = function
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    let mut statuses = function
        .status
        .as_ref()
        .map(|s| s.triggers.clone())
        .unwrap_or_default();
    statuses.resize(function.spec.triggers.len(), TriggerStatus::default());
    let mut calls = Vec::new();
    for (i, trigger) in function.spec.triggers.iter().enumerate() {
        let Some(cron) = &trigger.cron else {
            continue;
        };
        let last = statuses[i]
            .last_schedule_time
            .as_ref()
            .map_or(created, |t| t.0);
        match due(cron, last, now) {
            Due::Nothing => {}
            Due::Missed(at) => {
                statuses[i].last_schedule_time = Some(Time(at));
                recorder.warning(
                    reference(function.as_ref()),
                    "TriggerMissed",
                    format!("cron trigger {i}: missed the tick of {at}, later than its starting deadline"),
                );
            }
            Due::Call(at) => {
                statuses[i].last_schedule_time = Some(Time(at));
                calls.push((i, cron.clone()));
            }
        }
    }
    let before = function
        .status
        .as_ref()
        .map(|s| s.triggers.clone())
        .unwrap_or_default();
    if statuses == before {
        return Ok(());
    }
    // Written before calling: a tick is called at most once, across failovers too.
    let namespace = function.namespace().unwrap_or_default();
    let api: Api<Function> = Api::namespaced(client.clone(), &namespace);
    api.patch_status(
        &function.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"triggers": statuses}})),
    )
    .await?;
    for (i, cron) in calls {
        let (client, http, recorder, function) = (
            client.clone(),
            http.clone(),
            recorder.clone(),
            function.clone(),
        );
        tokio::spawn(async move {
            let (reason, message) = match call(&client, &http, &function, &cron).await {
                Ok((status, took)) => (
                    "TriggerCalled",
                    format!(
                        "cron trigger {i}: {} {} {status} in {} ms",
                        method(&cron),
                        path(&cron),
                        took.as_millis()
                    ),
                ),
                Err(why) => (
                    "TriggerFailed",
                    format!("cron trigger {i}: {} {}: {why}", method(&cron), path(&cron)),
                ),
            };
            recorder.normal(reference(function.as_ref()), reason, message);
        });
    }
    Ok(())
}

fn method(cron: &CronTrigger) -> &str {
    cron.method.as_deref().unwrap_or("POST")
}

fn path(cron: &CronTrigger) -> &str {
    cron.path.as_deref().unwrap_or("/")
}

/// Why a trigger's call got no answer.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("cannot list nodes: {0}")]
    Nodes(#[from] kube::Error),
    #[error("no Ready node serves the function gateway")]
    NoGateway,
    #[error("bad method {0:?}")]
    Method(String),
    #[error("{0}")]
    Http(#[from] reqwest::Error),
}

/// Calls the Function through a Ready node's gateway; its status code and how long it took.
async fn call(
    client: &kube::Client,
    http: &reqwest::Client,
    function: &Function,
    cron: &CronTrigger,
) -> Result<(u16, Duration), CallError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let nodes = nodes.list(&ListParams::default()).await?;
    let (address, port, domain) = nodes
        .items
        .iter()
        .filter(|n| super::nodelifecycle::ready_status(n).as_deref() == Some("True"))
        .find_map(|n| {
            let (port, domain) = n.annotations().get(GATEWAY_ANNOTATION)?.split_once(' ')?;
            let address = super::servicelb::node_ip(n)?;
            Some((address, port.to_string(), domain.to_string()))
        })
        .ok_or(CallError::NoGateway)?;
    let host = format!(
        "{}.{}.{domain}",
        function.name_any(),
        function.namespace().unwrap_or_default()
    );
    let timeout = function
        .spec
        .timeout
        .as_deref()
        .and_then(|t| bosun_api::duration::parse(t).ok())
        .unwrap_or(Duration::from_secs(60));
    let method = reqwest::Method::from_bytes(method(cron).as_bytes())
        .map_err(|_| CallError::Method(method(cron).to_string()))?;
    let started = Instant::now();
    let response = http
        .request(method, format!("http://{address}:{port}{}", path(cron)))
        .header(reqwest::header::HOST, host)
        .body(cron.body.clone().unwrap_or_default())
        .timeout(timeout)
        .send()
        .await?;
    Ok((response.status().as_u16(), started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn every(schedule: &str, deadline: Option<i64>) -> CronTrigger {
        CronTrigger {
            schedule: schedule.to_string(),
            starting_deadline_seconds: deadline,
            ..Default::default()
        }
    }

    #[test]
    fn a_tick_is_due_once_and_only_in_time() {
        let t = every("*/5 * * * *", None);
        let last = at("2026-12-04T10:00:00Z");
        assert_eq!(due(&t, last, at("2026-12-04T10:04:59Z")), Due::Nothing);
        assert_eq!(
            due(&t, last, at("2026-12-04T10:05:03Z")),
            Due::Call(at("2026-12-04T10:05:00Z"))
        );
        // Already handled.
        assert_eq!(
            due(&t, at("2026-12-04T10:05:00Z"), at("2026-12-04T10:05:04Z")),
            Due::Nothing
        );
        // Late past the default deadline (10 s): skipped, the latest one only.
        assert_eq!(
            due(&t, last, at("2026-12-04T10:16:00Z")),
            Due::Missed(at("2026-12-04T10:15:00Z"))
        );
        let patient = every("*/5 * * * *", Some(120));
        assert_eq!(
            due(&patient, last, at("2026-12-04T10:16:00Z")),
            Due::Call(at("2026-12-04T10:15:00Z"))
        );
    }

    #[test]
    fn time_zones_move_the_tick() {
        let t = CronTrigger {
            time_zone: Some("Europe/Paris".to_string()),
            ..every("0 9 * * *", None)
        };
        // 09:00 in Paris in December is 08:00 UTC.
        assert_eq!(
            due(&t, at("2026-12-04T07:00:00Z"), at("2026-12-04T08:00:02Z")),
            Due::Call(at("2026-12-04T08:00:00Z"))
        );
    }
}
