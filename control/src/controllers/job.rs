//! The Job controller: runs pods until `completions` of them succeed, as
//! kube-controller-manager's does.
//!
//! One reconcile lists the Job's pods (from the API, like the ReplicaSet controller) and:
//! - counts active, succeeded and failed pods (a pod's container restarts count as failures
//!   under `restartPolicy: OnFailure`);
//! - fails the Job when failures exceed `backoffLimit` (BackoffLimitExceeded) or it ran longer
//!   than `activeDeadlineSeconds` (DeadlineExceeded), deleting its active pods;
//! - completes it when `completions` pods succeeded (NonIndexed), every index succeeded
//!   (Indexed), or, without `completions`, once one pod succeeded and none is active;
//! - otherwise keeps `min(parallelism, what is left)` pods active: new pods after a failure
//!   wait a back-off (`--job-backoff`, doubling per failure, at most 6 minutes), surplus
//!   pods are deleted; a suspended Job has none;
//! - `completionMode: Indexed` gives each pod an index (the annotation and label
//!   `batch.kubernetes.io/job-completion-index`, and `JOB_COMPLETION_INDEX` in every
//!   container's environment) and reports `completedIndexes`;
//! - `ttlSecondsAfterFinished` deletes the finished Job (and, through the garbage collector,
//!   its pods) that long after it finished.
//!
//! Counts come from the pods that exist: a finished pod deleted by hand is forgotten (as in
//! Kubernetes before its job-tracking finalizers).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::{ControllersConfig, Error};
use crate::events::{Recorder, reference};
use crate::objects::{controller_of, controller_reference, label_selector, pod_ready, selects};

/// The annotation and label with a pod's completion index.
pub const INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The longest wait before a replacement of a failed pod.
const MAX_BACKOFF: Duration = Duration::from_secs(360);

struct Context {
    client: kube::Client,
    recorder: Recorder,
    backoff: Duration,
}

/// Runs until the watches end (never, with a live client).
pub async fn run(client: kube::Client, config: ControllersConfig) {
    let jobs: Api<Job> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let context = Arc::new(Context {
        recorder: Recorder::start(client.clone(), "job-controller", config.events),
        client,
        backoff: config.job_backoff,
    });
    let controller =
        Controller::new(jobs, watcher::Config::default()).owns(pods, watcher::Config::default());
    super::drive(controller, "job", reconcile, context, config.retry).await;
}

fn finished(status: &JobStatus) -> Option<&JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.annotations().get(INDEX)?.parse().ok()
}

/// When the pod's containers last finished (for the failure back-off).
fn finished_at(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| {
            let state = c.state.as_ref()?.terminated.as_ref()?;
            state.finished_at.as_ref().map(|t| t.0)
        })
        .max()
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

#[tracing::instrument(name = "reconcile", skip_all, fields(job = %kube::ResourceExt::name_any(&*job), namespace = ?job.metadata.namespace))]
async fn reconcile(job: Arc<Job>, context: Arc<Context>) -> Result<Action, Error> {
    let namespace = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let jobs: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
    let pods_api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let now = Timestamp::now();

    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if let Some(done) = finished(&old) {
        return expire(&jobs, &job, done, now).await;
    }
    let selector = label_selector(&spec.selector.clone().unwrap_or_default())
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| {
            selects(&selector, &p.metadata)
                && controller_of(&p.metadata).is_some_and(|o| o.uid == uid)
        })
        .collect();
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let active: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            !matches!(phase(p), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_none()
        })
        .collect();
    let succeeded: Vec<&Pod> = pods.iter().filter(|p| phase(p) == "Succeeded").collect();
    let failed_pods: Vec<&Pod> = pods.iter().filter(|p| phase(p) == "Failed").collect();
    let restarts: i32 = if on_failure {
        pods.iter()
            .flat_map(|p| {
                p.status
                    .iter()
                    .flat_map(|s| s.container_statuses.iter().flatten())
            })
            .map(|c| c.restart_count)
            .sum()
    } else {
        0
    };
    let failed = failed_pods.len() as i32 + restarts;
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let suspended = spec.suspend == Some(true);
    let done_indexes: BTreeSet<i32> = succeeded.iter().filter_map(|p| index_of(p)).collect();

    let mut status = JobStatus {
        active: Some(active.len() as i32),
        ready: Some(active.iter().filter(|p| pod_ready(p)).count() as i32),
        succeeded: Some(succeeded.len() as i32),
        failed: Some(failed),
        start_time: old.start_time.clone(),
        completion_time: None,
        conditions: old.conditions.clone(),
        completed_indexes: indexed
            .then(|| ranges(&done_indexes))
            .filter(|r| !r.is_empty()),
        ..old.clone()
    };
    if status.start_time.is_none() && !suspended {
        status.start_time = Some(Time(now));
    }

    let deadline_passed = spec
        .active_deadline_seconds
        .zip(status.start_time.as_ref())
        .is_some_and(|(seconds, start)| now.duration_since(start.0).as_secs() >= seconds);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let complete = match (indexed, completions) {
        (true, Some(n)) => (0..n).all(|i| done_indexes.contains(&i)),
        (false, Some(n)) => succeeded.len() as i32 >= n,
        (_, None) => !succeeded.is_empty() && active.is_empty(),
    };
    let failure = if deadline_passed && !complete {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline".to_string(),
        ))
    } else if failed > backoff_limit && !complete {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".to_string(),
        ))
    } else {
        None
    };
    let mut recheck = None;
    if let Some((reason, message)) = failure {
        delete_pods(&context, &job, &pods_api, &active, active.len()).await;
        status.active = Some(0);
        set_condition(&mut status, "FailureTarget", reason, &message, now);
        set_condition(&mut status, "Failed", reason, &message, now);
        context
            .recorder
            .warning(reference(job.as_ref()), reason, message);
    } else if complete {
        delete_pods(&context, &job, &pods_api, &active, active.len()).await;
        status.active = Some(0);
        status.completion_time = Some(Time(now));
        set_condition(
            &mut status,
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            now,
        );
        set_condition(
            &mut status,
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            now,
        );
        context.recorder.normal(
            reference(job.as_ref()),
            "Completed",
            "Job completed".to_string(),
        );
    } else if suspended {
        delete_pods(&context, &job, &pods_api, &active, active.len()).await;
        status.active = Some(0);
        set_condition(
            &mut status,
            "Suspended",
            "JobSuspended",
            "Job suspended",
            now,
        );
    } else {
        status.conditions = status
            .conditions
            .map(|c| c.into_iter().filter(|c| c.type_ != "Suspended").collect());
        // Indexes still to run (Indexed), or how many more pods (NonIndexed).
        let wanted: Vec<Option<i32>> = if indexed {
            let running: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
            (0..completions.unwrap_or(0))
                .filter(|i| !done_indexes.contains(i) && !running.contains(i))
                .take((parallelism as usize).saturating_sub(active.len()))
                .map(Some)
                .collect()
        } else {
            let left = match completions {
                Some(n) => (n - succeeded.len() as i32).max(0),
                // Work queue: no new pods once one succeeded.
                None if !succeeded.is_empty() => 0,
                None => parallelism,
            };
            let want = parallelism.min(left) as usize;
            vec![None; want.saturating_sub(active.len())]
        };
        let surplus = if indexed {
            0
        } else {
            let left = completions.map_or(parallelism, |n| (n - succeeded.len() as i32).max(0));
            active.len().saturating_sub(parallelism.min(left) as usize)
        };
        if surplus > 0 {
            delete_pods(&context, &job, &pods_api, &active, surplus).await;
        }
        if !wanted.is_empty() {
            let wait = backoff_left(&failed_pods, failed, context.backoff, now);
            if wait.is_zero() {
                create_pods(&context, &job, &pods_api, &wanted).await?;
            } else {
                recheck = Some(wait);
            }
        }
        if let Some(seconds) = spec.active_deadline_seconds
            && let Some(start) = status.start_time.as_ref()
        {
            let left = seconds - now.duration_since(start.0).as_secs();
            let left = Duration::from_secs(left.max(0) as u64 + 1);
            recheck = Some(recheck.map_or(left, |r: Duration| r.min(left)));
        }
    }
    if status != old {
        jobs.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    }
    Ok(recheck.map_or_else(Action::await_change, Action::requeue))
}

/// Deletes a finished Job once `ttlSecondsAfterFinished` has passed since it finished.
async fn expire(
    jobs: &Api<Job>,
    job: &Job,
    done: &JobCondition,
    now: Timestamp,
) -> Result<Action, Error> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(Action::await_change());
    };
    let finished = job
        .status
        .as_ref()
        .and_then(|s| s.completion_time.as_ref())
        .or(done.last_transition_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(now);
    let age = now.duration_since(finished).as_secs();
    if age < i64::from(ttl) {
        return Ok(Action::requeue(Duration::from_secs(
            (i64::from(ttl) - age) as u64,
        )));
    }
    match jobs
        .delete(&job.name_any(), &DeleteParams::foreground())
        .await
    {
        Ok(_) => tracing::info!(job = %job.name_any(), "deleted a finished job after its TTL"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// How much longer new pods wait after `failed` failures: `base` doubled per failure after
/// the first, at most six minutes, counted from the last failed pod's end.
fn backoff_left(failed_pods: &[&Pod], failed: i32, base: Duration, now: Timestamp) -> Duration {
    if failed <= 0 {
        return Duration::ZERO;
    }
    let wait = base
        .saturating_mul(1 << (failed - 1).min(16))
        .min(MAX_BACKOFF);
    let Some(last) = failed_pods.iter().filter_map(|p| finished_at(p)).max() else {
        return Duration::ZERO;
    };
    let since = now.duration_since(last).as_secs_f64().max(0.0);
    Duration::from_secs_f64((wait.as_secs_f64() - since).max(0.0))
}

/// `0-2,4,6-7`, as Kubernetes writes completed indexes.
fn ranges(indexes: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().expect("peeked");
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

fn set_condition(status: &mut JobStatus, type_: &str, reason: &str, message: &str, now: Timestamp) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
    {
        return;
    }
    conditions.retain(|c| c.type_ != type_);
    conditions.push(JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

/// A pod of the Job from its template; `index` for Indexed Jobs.
fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let mut generate_name = format!("{}-", job.name_any());
    if let Some(index) = index {
        labels.insert(INDEX.into(), index.to_string());
        annotations.insert(INDEX.into(), index.to_string());
        generate_name = format!("{}-{index}-", job.name_any());
        for container in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            container.env.get_or_insert_with(Vec::new).insert(
                0,
                EnvVar {
                    name: "JOB_COMPLETION_INDEX".into(),
                    value: Some(index.to_string()),
                    value_from: None,
                },
            );
        }
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![controller_reference(job)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

async fn create_pods(
    context: &Context,
    job: &Job,
    api: &Api<Pod>,
    wanted: &[Option<i32>],
) -> Result<(), Error> {
    let params = PostParams::default();
    let pods: Vec<Pod> = wanted.iter().map(|index| pod_for(job, *index)).collect();
    let results = futures::future::join_all(pods.iter().map(|pod| api.create(&params, pod))).await;
    for result in results {
        match result {
            Ok(pod) => context.recorder.normal(
                reference(job),
                "SuccessfulCreate",
                format!("Created pod: {}", pod.name_any()),
            ),
            Err(error) => {
                context.recorder.warning(
                    reference(job),
                    "FailedCreate",
                    format!("Error creating: {error}"),
                );
                return Err(error.into());
            }
        }
    }
    Ok(())
}

async fn delete_pods(context: &Context, job: &Job, api: &Api<Pod>, active: &[&Pod], count: usize) {
    // The newest go first.
    let mut victims: Vec<&&Pod> = active.iter().collect();
    victims.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp.clone()));
    for pod in victims.into_iter().take(count) {
        match api.delete(&pod.name_any(), &DeleteParams::default()).await {
            Ok(_) => context.recorder.normal(
                reference(job),
                "SuccessfulDelete",
                format!("Deleted pod: {}", pod.name_any()),
            ),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => {
                tracing::warn!(%error, pod = %pod.name_any(), "cannot delete a job's pod")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_are_written_as_ranges() {
        let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
        assert_eq!(ranges(&set(&[])), "");
        assert_eq!(ranges(&set(&[3])), "3");
        assert_eq!(ranges(&set(&[0, 1, 2, 4, 6, 7])), "0-2,4,6-7");
    }

    #[test]
    fn backoff_doubles_per_failure_from_the_last_failure() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Failed", "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T00:00:10Z"}}}]},
        }))
        .unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let base = Duration::from_secs(10);
        assert_eq!(
            backoff_left(&[&pod], 1, base, at("2026-01-01T00:00:14Z")),
            Duration::from_secs(6)
        );
        assert_eq!(
            backoff_left(&[&pod], 3, base, at("2026-01-01T00:00:14Z")),
            Duration::from_secs(36)
        );
        assert_eq!(
            backoff_left(&[&pod], 1, base, at("2026-01-01T00:01:00Z")),
            Duration::ZERO
        );
        assert_eq!(
            backoff_left(&[], 0, base, at("2026-01-01T00:00:14Z")),
            Duration::ZERO
        );
        assert_eq!(
            backoff_left(&[&pod], 30, base, at("2026-01-01T00:00:10Z")),
            MAX_BACKOFF
        );
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "work", "namespace": "default", "uid": "u"},
            "spec": {"completionMode": "Indexed", "completions": 3,
                     "template": {"metadata": {"labels": {"app": "w"}},
                                  "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}},
        }))
        .unwrap();
        let pod = pod_for(&job, Some(2));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("work-2-"));
        assert_eq!(pod.annotations()[INDEX], "2");
        assert_eq!(pod.labels()[INDEX], "2");
        let env = pod.spec.unwrap().containers[0].env.clone().unwrap();
        assert_eq!(
            (env[0].name.as_str(), env[0].value.as_deref()),
            ("JOB_COMPLETION_INDEX", Some("2"))
        );
    }
}
