//! Jobs and CronJobs (batch/v1).

use k8s_openapi::api::batch::v1;
use serde_json::{Value, json};

use super::pod::{template_containers, template_defaults, template_images, validate_template};
use super::{
    Cell, Column, KindStrategy, ObjectType, Typed, cause, col, ensure_object, items, set_default,
    wide,
};
use crate::apiserver::protobuf::{self, Message};
use crate::apiserver::status::Cause;

pub struct Job;

static JOB: Typed<v1::Job> = Typed::new();

impl KindStrategy for Job {
    fn object_type(&self) -> &dyn ObjectType {
        &JOB
    }

    fn defaults(&self, object: &mut Value, creating: bool) {
        ensure_object(object, "/spec");
        if creating {
            generate_selector(object);
        }
        set_default(object, "/spec/parallelism", json!(1));
        set_default(object, "/spec/backoffLimit", json!(6));
        set_default(object, "/spec/completionMode", json!("NonIndexed"));
        set_default(object, "/spec/suspend", json!(false));
        if object.pointer("/spec/completions").is_none() {
            set_default(object, "/spec/completions", json!(1));
        }
        template_defaults(object);
    }

    fn validate(&self, object: &Value, causes: &mut Vec<Cause>) {
        validate_template(object, false, causes);
    }

    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            col("STATUS", "string", Cell::Computed(status)),
            col("COMPLETIONS", "string", Cell::Computed(completions)),
            wide("CONTAINERS", "string", Cell::Computed(template_containers)),
            wide("IMAGES", "string", Cell::Computed(template_images)),
        ];
        COLUMNS
    }

    fn protobuf(&self) -> Option<&'static Message> {
        Some(&protobuf::JOB)
    }
}

/// A Job without `manualSelector: true` selects its pods by its UID: the selector and the
/// template labels (`batch.kubernetes.io/controller-uid`, `batch.kubernetes.io/job-name` and
/// their legacy short forms) are generated, as Kubernetes does.
fn generate_selector(job: &mut Value) {
    if job.pointer("/spec/manualSelector") == Some(&json!(true)) {
        return;
    }
    let uid = job.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
    let name = job
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null);
    if job.pointer("/spec/selector").is_none() {
        job["spec"]["selector"] =
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    }
    ensure_object(job, "/spec/template");
    ensure_object(job, "/spec/template/metadata");
    ensure_object(job, "/spec/template/metadata/labels");
    if let Some(Value::Object(labels)) = job.pointer_mut("/spec/template/metadata/labels") {
        for (key, value) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels.entry(key).or_insert_with(|| value.clone());
        }
    }
}

fn status(job: &Value) -> Value {
    let conditions = items(job, "/status/conditions");
    let has = |t: &str| {
        conditions
            .iter()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    json!(if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if job.pointer("/spec/suspend") == Some(&json!(true)) {
        "Suspended"
    } else {
        "Running"
    })
}

fn completions(job: &Value) -> Value {
    json!(format!(
        "{}/{}",
        job.pointer("/status/succeeded")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        job.pointer("/spec/completions")
            .and_then(Value::as_i64)
            .unwrap_or(1)
    ))
}

pub struct CronJob;

static CRON_JOB: Typed<v1::CronJob> = Typed::new();

impl KindStrategy for CronJob {
    fn object_type(&self) -> &dyn ObjectType {
        &CRON_JOB
    }

    fn defaults(&self, object: &mut Value, _creating: bool) {
        ensure_object(object, "/spec");
        set_default(object, "/spec/concurrencyPolicy", json!("Allow"));
        set_default(object, "/spec/suspend", json!(false));
        set_default(object, "/spec/successfulJobsHistoryLimit", json!(3));
        set_default(object, "/spec/failedJobsHistoryLimit", json!(1));
    }

    fn validate(&self, object: &Value, causes: &mut Vec<Cause>) {
        let schedule = object
            .pointer("/spec/schedule")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Err(e) = bosun_api::cron::Schedule::parse(schedule) {
            causes.push(cause(
                "spec.schedule",
                format!("Invalid value: {schedule:?}: {}", e.reason),
            ));
        }
        let zone = object.pointer("/spec/timeZone").and_then(Value::as_str);
        if let Err(reason) = crate::objects::time_zone(zone) {
            causes.push(cause("spec.timeZone", format!("Invalid value: {reason}")));
        }
    }

    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            col("SCHEDULE", "string", Cell::Field("/spec/schedule")),
            col("TIMEZONE", "string", Cell::Field("/spec/timeZone")),
            col("SUSPEND", "string", Cell::Field("/spec/suspend")),
            col("ACTIVE", "integer", Cell::Computed(active)),
            col(
                "LAST SCHEDULE",
                "date",
                Cell::Field("/status/lastScheduleTime"),
            ),
        ];
        COLUMNS
    }

    fn protobuf(&self) -> Option<&'static Message> {
        Some(&protobuf::CRON_JOB)
    }
}

fn active(cron_job: &Value) -> Value {
    json!(items(cron_job, "/status/active").len())
}
