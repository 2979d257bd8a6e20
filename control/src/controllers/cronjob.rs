//! The CronJob controller: creates a Job at each scheduled time, as kube-controller-manager's
//! does.
//!
//! A reconcile lists the CronJob's Jobs, keeps `status.active` and `lastSuccessfulTime`,
//! deletes finished Jobs beyond `successfulJobsHistoryLimit` (3) and `failedJobsHistoryLimit`
//! (1), then looks for the latest scheduled time since the last one it ran (in `timeZone`,
//! else UTC; walking civil minutes so daylight-saving gaps and repeats behave as in the zone).
//! A time older than `startingDeadlineSeconds` is missed, not run. `concurrencyPolicy`:
//! `Allow` runs Jobs side by side, `Forbid` skips a time while a Job is active, `Replace`
//! deletes the active Jobs first. The Job is named `<cronjob>-<minutes since the epoch>`, so a
//! time is never run twice. `suspend` stops new Jobs. The reconcile comes back at the next
//! scheduled time.

use std::sync::Arc;
use std::time::Duration;

use bosun_api::cron::Schedule;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{ToSpan, Zoned};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::{ControllersConfig, Error};
use crate::events::{Recorder, reference};
use crate::objects::{controller_of, controller_reference, time_zone};

/// The annotation with the time a Job was scheduled for.
pub const SCHEDULED: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Scheduled times looked at in one pass before giving up on catching up.
const MAX_MISSED: usize = 100;

struct Context {
    client: kube::Client,
    recorder: Recorder,
}

/// Runs until the watches end (never, with a live client).
pub async fn run(client: kube::Client, config: ControllersConfig) {
    let cronjobs: Api<CronJob> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    let context = Arc::new(Context {
        recorder: Recorder::start(client.clone(), "cronjob-controller", config.events),
        client,
    });
    let controller = Controller::new(cronjobs, watcher::Config::default())
        .owns(jobs, watcher::Config::default());
    super::drive(controller, "cronjob", reconcile, context, config.retry).await;
}

/// The first scheduled time strictly after `after`, within about five years.
pub fn next_after(schedule: &Schedule, zone: &TimeZone, after: Timestamp) -> Option<Timestamp> {
    let start = after.to_zoned(zone.clone());
    // The next whole minute, as a civil time in the zone.
    let mut t: DateTime = start
        .datetime()
        .with()
        .second(0)
        .subsec_nanosecond(0)
        .build()
        .ok()?
        .checked_add(1.minute())
        .ok()?;
    let limit = t.checked_add(5.years()).ok()?;
    while t < limit {
        let month = t.month() as u32;
        if !schedule.month_matches(month) {
            t = t
                .first_of_month()
                .checked_add(1.month())
                .ok()?
                .with()
                .hour(0)
                .minute(0)
                .build()
                .ok()?;
            continue;
        }
        let weekday = t.weekday().to_sunday_zero_offset() as u32;
        if !schedule.day_matches(t.day() as u32, weekday) {
            t = t
                .date()
                .checked_add(1.day())
                .ok()?
                .to_datetime(jiff::civil::Time::midnight());
            continue;
        }
        if !schedule.hour_matches(t.hour() as u32) {
            t = t
                .with()
                .minute(0)
                .build()
                .ok()?
                .checked_add(1.hour())
                .ok()?;
            continue;
        }
        if !schedule.minute_matches(t.minute() as u32) {
            t = t.checked_add(1.minute()).ok()?;
            continue;
        }
        // A civil time the zone skips (a daylight-saving gap) does not exist there.
        let zoned: Zoned = zone.to_ambiguous_zoned(t).compatible().ok()?;
        if zoned.datetime() == t && zoned.timestamp() > after {
            return Some(zoned.timestamp());
        }
        t = t.checked_add(1.minute()).ok()?;
    }
    None
}

/// The latest scheduled time in `(since, now]`, and how many there were.
fn latest_due(
    schedule: &Schedule,
    zone: &TimeZone,
    since: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, usize) {
    let mut latest = None;
    let mut count = 0;
    let mut t = since;
    while let Some(next) = next_after(schedule, zone, t) {
        if next > now || count >= MAX_MISSED {
            break;
        }
        latest = Some(next);
        count += 1;
        t = next;
    }
    (latest, count)
}

fn job_finished(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

fn object_reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

#[tracing::instrument(name = "reconcile", skip_all, fields(cronjob = %kube::ResourceExt::name_any(&*cj), namespace = ?cj.metadata.namespace))]
async fn reconcile(cj: Arc<CronJob>, context: Arc<Context>) -> Result<Action, Error> {
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = cj.namespace().unwrap_or_default();
    let name = cj.name_any();
    let jobs_api: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
    let cronjobs: Api<CronJob> = Api::namespaced(context.client.clone(), &namespace);
    let spec = cj.spec.clone().unwrap_or_default();
    let old = cj.status.clone().unwrap_or_default();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let now = Timestamp::now();

    let mut jobs: Vec<Job> = jobs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| controller_of(&j.metadata).is_some_and(|o| o.uid == uid))
        .collect();
    jobs.sort_by_key(|j| j.metadata.creation_timestamp.clone());
    let mut status = CronJobStatus {
        active: None,
        last_schedule_time: old.last_schedule_time.clone(),
        last_successful_time: old.last_successful_time.clone(),
    };
    for job in &jobs {
        match job_finished(job) {
            None => status
                .active
                .get_or_insert_with(Vec::new)
                .push(object_reference(job)),
            Some(kind) => {
                let was_active = old
                    .active
                    .iter()
                    .flatten()
                    .any(|a| a.uid == job.metadata.uid);
                if was_active {
                    context.recorder.normal(
                        reference(cj.as_ref()),
                        "SawCompletedJob",
                        format!("Saw completed job: {}, status: {kind}", job.name_any()),
                    );
                }
                if kind == "Complete" {
                    let done = job.status.as_ref().and_then(|s| s.completion_time.clone());
                    if done.as_ref().map(|t| t.0)
                        > status.last_successful_time.as_ref().map(|t| t.0)
                    {
                        status.last_successful_time = done;
                    }
                }
            }
        }
    }
    // What the finished Jobs say is stored before any of them is pruned, so that a failed
    // write cannot lose it with the Job.
    write_status(&cronjobs, &name, &old, &status).await?;
    let old = status.clone();
    prune(
        &context,
        &cj,
        &jobs_api,
        &jobs,
        "Complete",
        spec.successful_jobs_history_limit.unwrap_or(3),
    )
    .await?;
    prune(
        &context,
        &cj,
        &jobs_api,
        &jobs,
        "Failed",
        spec.failed_jobs_history_limit.unwrap_or(1),
    )
    .await?;

    let schedule = match Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            context
                .recorder
                .warning(reference(cj.as_ref()), "UnparseableSchedule", e.to_string());
            write_status(&cronjobs, &name, &old, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let zone = match time_zone(spec.time_zone.as_deref()) {
        Ok(z) => z,
        Err(message) => {
            context
                .recorder
                .warning(reference(cj.as_ref()), "UnknownTimeZone", message);
            write_status(&cronjobs, &name, &old, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let next_wake = |from: Timestamp| {
        next_after(&schedule, &zone, from).map(|t| {
            let wait = t.duration_since(Timestamp::now()).as_secs_f64().max(0.0);
            Duration::from_secs_f64(wait) + Duration::from_millis(100)
        })
    };
    if spec.suspend == Some(true) {
        write_status(&cronjobs, &name, &old, &status).await?;
        return Ok(Action::await_change());
    }

    let created = cj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let mut since = status
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(created);
    if let Some(deadline) = spec.starting_deadline_seconds {
        let earliest = now - jiff::SignedDuration::from_secs(deadline.max(0));
        if earliest > since {
            since = earliest;
        }
    }
    let (due, missed) = latest_due(&schedule, &zone, since, now);
    let Some(due) = due else {
        write_status(&cronjobs, &name, &old, &status).await?;
        return Ok(next_wake(now).map_or_else(Action::await_change, Action::requeue));
    };
    if missed >= MAX_MISSED {
        context.recorder.warning(
            reference(cj.as_ref()),
            "TooManyMissedTimes",
            "too many missed start times: check clock skew, or set startingDeadlineSeconds"
                .to_string(),
        );
    }
    let active = status.active.clone().unwrap_or_default();
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            context.recorder.normal(
                reference(cj.as_ref()),
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid"
                    .to_string(),
            );
            write_status(&cronjobs, &name, &old, &status).await?;
            // Looked at again when the active Job finishes (it is owned), or at the next time.
            return Ok(next_wake(now).map_or_else(Action::await_change, Action::requeue));
        }
        Some("Replace") => {
            for job in &active {
                let job_name = job.name.clone().unwrap_or_default();
                match jobs_api
                    .delete(&job_name, &DeleteParams::background())
                    .await
                {
                    Ok(_) => context.recorder.normal(
                        reference(cj.as_ref()),
                        "SuccessfulDelete",
                        format!("Deleted job {job_name}"),
                    ),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            status.active = None;
        }
        _ => {}
    }
    let job = job_for(&cj, due);
    match jobs_api.create(&PostParams::default(), &job).await {
        Ok(job) => {
            context.recorder.normal(
                reference(cj.as_ref()),
                "SuccessfulCreate",
                format!("Created job {}", job.name_any()),
            );
            status
                .active
                .get_or_insert_with(Vec::new)
                .push(object_reference(&job));
        }
        // Already made for this time (by an earlier pass whose status write was lost).
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => {
            context.recorder.warning(
                reference(cj.as_ref()),
                "FailedCreate",
                format!("Error creating job: {e}"),
            );
            return Err(e.into());
        }
    }
    status.last_schedule_time = Some(Time(due));
    write_status(&cronjobs, &name, &old, &status).await?;
    Ok(next_wake(now).map_or_else(Action::await_change, Action::requeue))
}

async fn write_status(
    api: &Api<CronJob>,
    name: &str,
    old: &CronJobStatus,
    status: &CronJobStatus,
) -> Result<(), Error> {
    if old == status {
        return Ok(());
    }
    // `active: null` must clear the list, so the whole status is sent.
    let body = json!({"status": {
        "active": status.active,
        "lastScheduleTime": status.last_schedule_time,
        "lastSuccessfulTime": status.last_successful_time,
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(body))
        .await?;
    Ok(())
}

/// Deletes the oldest finished Jobs of one kind (`Complete` or `Failed`) beyond `limit`.
async fn prune(
    context: &Context,
    cj: &CronJob,
    api: &Api<Job>,
    jobs: &[Job],
    kind: &str,
    limit: i32,
) -> Result<(), Error> {
    let finished: Vec<&Job> = jobs
        .iter()
        .filter(|j| job_finished(j) == Some(kind) && j.metadata.deletion_timestamp.is_none())
        .collect();
    let surplus = finished.len().saturating_sub(limit.max(0) as usize);
    for job in finished.into_iter().take(surplus) {
        match api
            .delete(&job.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => context.recorder.normal(
                reference(cj),
                "SuccessfulDelete",
                format!("Deleted job {}", job.name_any()),
            ),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The Job for the time `due`.
fn job_for(cj: &CronJob, due: Timestamp) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED.into(), due.to_string());
    Job {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}-{}",
                cj.name_any(),
                due.as_second().div_euclid(60)
            )),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_reference(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn next_times_in_utc() {
        let every = Schedule::parse("*/1 * * * *").unwrap();
        let utc = TimeZone::UTC;
        assert_eq!(
            next_after(&every, &utc, at("2026-03-01T10:00:30Z")),
            Some(at("2026-03-01T10:01:00Z"))
        );
        assert_eq!(
            next_after(&every, &utc, at("2026-03-01T10:01:00Z")),
            Some(at("2026-03-01T10:02:00Z"))
        );
        let monthly = Schedule::parse("@monthly").unwrap();
        assert_eq!(
            next_after(&monthly, &utc, at("2026-12-15T00:00:00Z")),
            Some(at("2027-01-01T00:00:00Z"))
        );
        let leap = Schedule::parse("0 12 29 feb *").unwrap();
        assert_eq!(
            next_after(&leap, &utc, at("2026-03-01T00:00:00Z")),
            Some(at("2028-02-29T12:00:00Z"))
        );
        let weekdays = Schedule::parse("30 9 * * mon-fri").unwrap();
        // 2026-11-28 is a Saturday.
        assert_eq!(
            next_after(&weekdays, &utc, at("2026-11-28T00:00:00Z")),
            Some(at("2026-11-30T09:30:00Z"))
        );
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        let berlin = time_zone(Some("Europe/Berlin")).unwrap();
        let daily = Schedule::parse("0 9 * * *").unwrap();
        // 09:00 in Berlin is 08:00 UTC in winter, 07:00 in summer.
        assert_eq!(
            next_after(&daily, &berlin, at("2026-01-10T12:00:00Z")),
            Some(at("2026-01-11T08:00:00Z"))
        );
        assert_eq!(
            next_after(&daily, &berlin, at("2026-07-10T12:00:00Z")),
            Some(at("2026-07-11T07:00:00Z"))
        );
        // 02:30 does not exist in Berlin on 2026-03-29: that day is skipped.
        let gap = Schedule::parse("30 2 * * *").unwrap();
        assert_eq!(
            next_after(&gap, &berlin, at("2026-03-28T12:00:00Z")),
            Some(at("2026-03-30T00:30:00Z"))
        );
        assert!(time_zone(Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn the_latest_missed_time_is_the_one_run() {
        let every = Schedule::parse("*/5 * * * *").unwrap();
        let (due, count) = latest_due(
            &every,
            &TimeZone::UTC,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T00:17:00Z"),
        );
        assert_eq!(due, Some(at("2026-01-01T00:15:00Z")));
        assert_eq!(count, 3);
        let (due, _) = latest_due(
            &every,
            &TimeZone::UTC,
            at("2026-01-01T00:15:00Z"),
            at("2026-01-01T00:17:00Z"),
        );
        assert_eq!(due, None);
    }
}
