//! Admission: what the API server does to an object between decoding and storing it.
//! Metadata (uid, creationTimestamp, generation, generateName), per-kind defaults as the
//! Kubernetes API applies them for the fields users meet, and validation: a typed decode
//! through k8s-openapi plus the checks that give users field-level `Invalid` errors.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bosun_api::names;
use bosun_api::resources::Resource;
use rand::Rng;
use serde_json::{Map, Value, json};

use super::status::{ApiError, ApiResult, Cause};

/// What to do with fields the kind does not have (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    /// The default, as in Kubernetes: accept, but say so in `Warning` headers.
    Warn,
    Strict,
}

/// The field-validation mode of a request and the warnings it collects.
#[derive(Debug)]
pub struct FieldCheck {
    pub mode: FieldValidation,
    pub warnings: Vec<String>,
}

impl FieldCheck {
    pub fn new(mode: FieldValidation) -> Self {
        Self {
            mode,
            warnings: Vec::new(),
        }
    }

    /// From the `fieldValidation` query parameter.
    pub fn from_query(value: Option<&str>) -> ApiResult<Self> {
        let mode = match value {
            None | Some("") | Some("Warn") => FieldValidation::Warn,
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation must be one of Ignore, Warn or Strict, not {other:?}"
                )));
            }
        };
        Ok(Self::new(mode))
    }
}

/// How long new pods tolerate a node going not-ready or unreachable before the node
/// lifecycle controller evicts them (Kubernetes' DefaultTolerationSeconds admission).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultTolerations {
    pub not_ready_seconds: i64,
    pub unreachable_seconds: i64,
}

impl Default for DefaultTolerations {
    fn default() -> Self {
        Self {
            not_ready_seconds: 300,
            unreachable_seconds: 300,
        }
    }
}

/// Gives a new pod the not-ready and unreachable NoExecute tolerations it does not have.
pub fn add_default_tolerations(resource: &Resource, pod: &mut Value, defaults: DefaultTolerations) {
    if resource.kind != "Pod" || !resource.group.is_empty() {
        return;
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let Value::Array(list) = spec.entry("tolerations").or_insert_with(|| json!([])) else {
        return;
    };
    for (key, seconds) in [
        ("node.kubernetes.io/not-ready", defaults.not_ready_seconds),
        (
            "node.kubernetes.io/unreachable",
            defaults.unreachable_seconds,
        ),
    ] {
        let tolerated = list.iter().any(|t| {
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let exists_all = t.get("key").is_none_or(|k| k == "")
                && t.get("operator").and_then(Value::as_str) == Some("Exists");
            (t.get("key").and_then(Value::as_str) == Some(key) || exists_all)
                && (effect.is_empty() || effect == "NoExecute")
        });
        if !tolerated {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
}

/// Fills in metadata and defaults for a new object and validates it; returns its name.
pub fn prepare_create(
    resource: &Resource,
    namespace: Option<&str>,
    body: &mut Value,
    fields: &mut FieldCheck,
) -> ApiResult<String> {
    check_type(resource, body)?;
    check_unknown_fields(resource, body, fields)?;
    let object = body.as_object_mut().expect("checked");
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    if metadata
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        let Some(prefix) = metadata.get("generateName").and_then(Value::as_str) else {
            return Err(ApiError::invalid(
                resource,
                "",
                vec![cause(
                    "metadata.name",
                    "Required value: name or generateName is required",
                )],
            ));
        };
        let name = format!("{prefix}{}", random_suffix());
        metadata.insert("name".into(), json!(name));
    }
    if metadata
        .get("resourceVersion")
        .is_some_and(|v| !v.is_null())
    {
        let name = metadata["name"].as_str().unwrap_or_default().to_string();
        return Err(ApiError::bad_request(format!(
            "resourceVersion should not be set on objects to be created ({name})"
        )));
    }
    set_namespace(resource, namespace, metadata)?;
    metadata.insert("uid".into(), json!(new_uid()));
    metadata.insert(
        "creationTimestamp".into(),
        json!(bosun_api::time::rfc3339(SystemTime::now())),
    );
    metadata.insert("generation".into(), json!(1));
    for transient in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        metadata.remove(transient);
    }
    let name = metadata["name"].as_str().unwrap_or_default().to_string();
    defaults(resource, body, true);
    validate(resource, &name, body)?;
    Ok(name)
}

/// Prepares a replacement of `old` by `new` (a PUT of the object or of its `status`): keeps
/// what clients may not change, bumps `generation` when the spec changed, validates.
pub fn prepare_update(
    resource: &Resource,
    name: &str,
    old: &Value,
    new: &mut Value,
    subresource: Option<&str>,
    fields: &mut FieldCheck,
) -> ApiResult<()> {
    check_type(resource, new)?;
    check_unknown_fields(resource, new, fields)?;
    let body_name = new.pointer("/metadata/name").and_then(Value::as_str);
    if body_name.is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            body_name.unwrap_or_default()
        )));
    }
    match subresource {
        // A status update changes only the status.
        Some("status") => {
            let status = new.get("status").cloned();
            *new = with_resource_version(old.clone(), new);
            match status {
                Some(status) => new["status"] = status,
                None => drop(new.as_object_mut().map(|o| o.remove("status"))),
            }
        }
        // `finalize` changes only a namespace's `spec.finalizers`.
        Some("finalize") => {
            let finalizers = new.pointer("/spec/finalizers").cloned();
            *new = with_resource_version(old.clone(), new);
            if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                match finalizers {
                    Some(f) => spec.insert("finalizers".into(), f),
                    None => spec.remove("finalizers"),
                };
            }
        }
        _ => {
            // A namespace's spec.finalizers change only through `finalize`.
            if resource.kind == "Namespace" && resource.group.is_empty() {
                match old.pointer("/spec/finalizers") {
                    Some(f) => {
                        ensure_object(new, "/spec");
                        new["spec"]["finalizers"] = f.clone();
                    }
                    None => drop(
                        new.get_mut("spec")
                            .and_then(Value::as_object_mut)
                            .map(|s| s.remove("finalizers")),
                    ),
                }
            }
            // The main resource never changes status where a status subresource exists.
            if resource.status {
                match old.get("status") {
                    Some(status) => new["status"] = status.clone(),
                    None => drop(new.as_object_mut().map(|o| o.remove("status"))),
                }
            }
        }
    }
    let object = new.as_object_mut().expect("checked");
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    metadata.insert("name".into(), json!(name));
    // A write that does not send managedFields keeps them (server-side apply's ownership).
    if metadata.get("managedFields").is_none_or(Value::is_null)
        && let Some(managed) = old.pointer("/metadata/managedFields")
    {
        metadata.insert("managedFields".into(), managed.clone());
    }
    for kept in [
        "uid",
        "creationTimestamp",
        "namespace",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old.pointer(&format!("/metadata/{kept}")) {
            Some(v) => metadata.insert(kept.into(), v.clone()),
            None => metadata.remove(kept),
        };
    }
    defaults(resource, new, false);
    if old.get("spec") != new.get("spec") {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        new["metadata"]["generation"] = json!(generation + 1);
    }
    validate(resource, name, new)
}

/// `old` with `new`'s resourceVersion (the precondition of a status update).
fn with_resource_version(mut old: Value, new: &Value) -> Value {
    if let Some(rv) = new.pointer("/metadata/resourceVersion") {
        old["metadata"]["resourceVersion"] = rv.clone();
    }
    old
}

fn cause(field: &str, message: impl Into<String>) -> Cause {
    Cause {
        field: field.into(),
        message: message.into(),
    }
}

fn check_type(resource: &Resource, body: &mut Value) -> ApiResult<()> {
    let Some(object) = body.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let api_version = resource.api_version();
    match object.get("apiVersion").and_then(Value::as_str) {
        None => drop(object.insert("apiVersion".into(), json!(api_version))),
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match object.get("kind").and_then(Value::as_str) {
        None => drop(object.insert("kind".into(), json!(resource.kind))),
        Some(k) if k == resource.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                resource.kind
            )));
        }
    }
    Ok(())
}

fn set_namespace(
    resource: &Resource,
    namespace: Option<&str>,
    metadata: &mut Map<String, Value>,
) -> ApiResult<()> {
    let in_body = metadata.get("namespace").and_then(Value::as_str);
    match (resource.namespaced, namespace) {
        (true, Some(ns)) => {
            if in_body.is_some_and(|b| !b.is_empty() && b != ns) {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({}) does not match the namespace sent on the request ({ns})",
                    in_body.unwrap_or_default()
                )));
            }
            metadata.insert("namespace".into(), json!(ns));
        }
        (true, None) => return Err(ApiError::bad_request("a namespace is required")),
        (false, _) => drop(metadata.remove("namespace")),
    }
    Ok(())
}

fn random_suffix() -> String {
    // The alphabet Kubernetes uses for generated names: no vowels, no look-alikes.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A random (version 4) UUID.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn set_default(object: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer with a key");
    if let Some(Value::Object(map)) = object.pointer_mut(parent)
        && map.get(key).is_none_or(Value::is_null)
    {
        map.insert(key.to_string(), value);
    }
}

fn ensure_object(object: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer with a key");
    if let Some(Value::Object(map)) = object.pointer_mut(parent) {
        map.entry(key).or_insert_with(|| json!({}));
    }
}

/// A Job without `manualSelector: true` selects its pods by its UID: the selector and the
/// template labels (`batch.kubernetes.io/controller-uid`, `batch.kubernetes.io/job-name` and
/// their legacy short forms) are generated, as Kubernetes does.
fn job_selector(job: &mut Value) {
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

/// The pod-template defaults (a Pod's `spec`, or a template's `spec`).
fn pod_spec_defaults(spec: &mut Value) {
    set_default(spec, "/restartPolicy", json!("Always"));
    set_default(spec, "/terminationGracePeriodSeconds", json!(30));
    set_default(spec, "/dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "/schedulerName", json!("default-scheduler"));
    set_default(spec, "/securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for container in containers {
                let image = container.get("image").and_then(Value::as_str).unwrap_or("");
                let tag = image.rsplit('/').next().unwrap_or("");
                let policy =
                    if image.contains('@') || (tag.contains(':') && !tag.ends_with(":latest")) {
                        "IfNotPresent"
                    } else {
                        "Always"
                    };
                set_default(container, "/imagePullPolicy", json!(policy));
                set_default(
                    container,
                    "/terminationMessagePath",
                    json!("/dev/termination-log"),
                );
                set_default(container, "/terminationMessagePolicy", json!("File"));
                set_default(container, "/resources", json!({}));
                if let Some(Value::Array(ports)) = container.get_mut("ports") {
                    for port in ports {
                        set_default(port, "/protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

fn defaults(resource: &Resource, object: &mut Value, creating: bool) {
    match (resource.group, resource.kind) {
        ("", "Pod") => {
            ensure_object(object, "/spec");
            if let Some(spec) = object.get_mut("spec") {
                pod_spec_defaults(spec);
            }
            if creating {
                ensure_object(object, "/status");
                set_default(object, "/status/phase", json!("Pending"));
            }
        }
        ("", "Namespace") => {
            ensure_object(object, "/status");
            set_default(object, "/status/phase", json!("Active"));
            if creating {
                // The namespace controller's finalizer: it empties the namespace on deletion.
                ensure_object(object, "/spec");
                set_default(object, "/spec/finalizers", json!(["kubernetes"]));
            }
        }
        ("", "Secret") => {
            set_default(object, "/type", json!("Opaque"));
            // stringData is write-only: it is merged into data, base64-encoded.
            if let Some(Value::Object(string_data)) =
                object.as_object_mut().and_then(|o| o.remove("stringData"))
            {
                ensure_object(object, "/data");
                if let Some(Value::Object(data)) = object.get_mut("data") {
                    for (k, v) in string_data {
                        let text = v.as_str().unwrap_or_default();
                        data.insert(k, json!(B64.encode(text)));
                    }
                }
            }
        }
        ("", "Service") => {
            ensure_object(object, "/spec");
            set_default(object, "/spec/type", json!("ClusterIP"));
            set_default(object, "/spec/sessionAffinity", json!("None"));
            if let Some(Value::Array(ports)) = object.pointer_mut("/spec/ports") {
                for port in ports {
                    set_default(port, "/protocol", json!("TCP"));
                    if let Some(p) = port.get("port").cloned() {
                        set_default(port, "/targetPort", p);
                    }
                }
            }
        }
        ("apps", "Deployment") => {
            ensure_object(object, "/spec");
            set_default(object, "/spec/replicas", json!(1));
            set_default(object, "/spec/revisionHistoryLimit", json!(10));
            set_default(object, "/spec/progressDeadlineSeconds", json!(600));
            set_default(
                object,
                "/spec/strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            );
            template_defaults(object);
        }
        ("apps", "ReplicaSet") => {
            ensure_object(object, "/spec");
            set_default(object, "/spec/replicas", json!(1));
            template_defaults(object);
        }
        ("batch", "Job") => {
            ensure_object(object, "/spec");
            if creating {
                job_selector(object);
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
        ("batch", "CronJob") => {
            ensure_object(object, "/spec");
            set_default(object, "/spec/concurrencyPolicy", json!("Allow"));
            set_default(object, "/spec/suspend", json!(false));
            set_default(object, "/spec/successfulJobsHistoryLimit", json!(3));
            set_default(object, "/spec/failedJobsHistoryLimit", json!(1));
        }
        _ => {}
    }
}

fn template_defaults(object: &mut Value) {
    if let Some(spec) = object.pointer_mut("/spec/template/spec") {
        pod_spec_defaults(spec);
    }
}

/// Decodes the object into its k8s-openapi type (wrong field types are a 400, as in
/// Kubernetes) and encodes it again: what the round trip loses are fields the kind lacks.
/// `None` for kinds without a type.
fn decode_typed(resource: &Resource, value: &Value) -> Result<Option<Value>, String> {
    struct RoundTrip<'a>(&'a Value);
    impl super::kinds::KindVisitor for RoundTrip<'_> {
        type Output = Result<Value, String>;
        fn visit<T>(self) -> Self::Output
        where
            T: serde::de::DeserializeOwned + serde::Serialize + k8s_openapi::schemars::JsonSchema,
        {
            let typed = T::deserialize(self.0).map_err(|e| e.to_string())?;
            serde_json::to_value(typed).map_err(|e| e.to_string())
        }
    }
    super::kinds::visit(resource.group, resource.kind, RoundTrip(value)).transpose()
}

/// Paths (`spec.replicass`) present in `input` but lost by the typed round trip.
fn lost_fields(input: &Value, output: &Value, path: &str, lost: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                if value.is_null() {
                    continue;
                }
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match b.get(key) {
                    Some(kept) => lost_fields(value, kept, &at, lost),
                    None => lost.push(at),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                lost_fields(x, y, &format!("{path}[{i}]"), lost);
            }
        }
        _ => {}
    }
}

/// Decodes the body as its kind (a type error is a 400, as in Kubernetes) and applies
/// `?fieldValidation=` to the fields the kind does not have.
fn check_unknown_fields(
    resource: &Resource,
    body: &Value,
    fields: &mut FieldCheck,
) -> ApiResult<()> {
    let round_trip = decode_typed(resource, body).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: {e}",
            resource.kind,
            resource.api_version(),
            resource.kind
        ))
    })?;
    let Some(round_trip) = round_trip.filter(|_| fields.mode != FieldValidation::Ignore) else {
        return Ok(());
    };
    let mut lost = Vec::new();
    lost_fields(body, &round_trip, "", &mut lost);
    if lost.is_empty() {
        return Ok(());
    }
    let messages: Vec<String> = lost
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    match fields.mode {
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
            resource.kind,
            resource.api_version(),
            resource.kind,
            messages.join(", ")
        ))),
        _ => {
            fields.warnings.extend(messages);
            Ok(())
        }
    }
}

/// Field-level checks of an admitted object (its types were checked when it was decoded).
fn validate(resource: &Resource, name: &str, object: &Value) -> ApiResult<()> {
    let mut causes = Vec::new();
    let name_check = match resource.kind {
        "Namespace" | "Service" => names::check_dns1123_label(name),
        _ => names::check_dns1123_subdomain(name),
    };
    if let Err(reason) = name_check {
        causes.push(cause(
            "metadata.name",
            format!("Invalid value: {name:?}: {reason}"),
        ));
    }
    check_map_keys(object, "labels", &mut causes, true);
    check_map_keys(object, "annotations", &mut causes, false);
    match (resource.group, resource.kind) {
        ("", "Pod") => {
            if let Some(spec) = object.get("spec") {
                validate_pod_spec(spec, "spec", &mut causes);
            }
        }
        ("apps", "Deployment" | "ReplicaSet") | ("batch", "Job") => {
            validate_template(resource, object, &mut causes);
        }
        ("batch", "CronJob") => {
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
        ("", "ConfigMap" | "Secret") => {
            for field in ["data", "binaryData"] {
                if let Some(Value::Object(data)) = object.get(field) {
                    for key in data.keys() {
                        let ok = !key.is_empty()
                            && key.len() <= 253
                            && key
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
                        if !ok {
                            causes.push(cause(&format!("{field}[{key}]"), format!("Invalid value: {key:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'")));
                        }
                    }
                }
            }
        }
        ("", "Service") => {
            if let Some(Value::Array(ports)) = object.pointer("/spec/ports") {
                for (i, port) in ports.iter().enumerate() {
                    let p = port.get("port").and_then(Value::as_i64).unwrap_or(0);
                    if !(1..=65535).contains(&p) {
                        causes.push(cause(
                            &format!("spec.ports[{i}].port"),
                            format!("Invalid value: {p}: must be between 1 and 65535, inclusive"),
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(resource, name, causes))
    }
}

fn check_map_keys(object: &Value, field: &str, causes: &mut Vec<Cause>, values_are_labels: bool) {
    let Some(Value::Object(map)) = object.pointer(&format!("/metadata/{field}")) else {
        return;
    };
    for (key, value) in map {
        if let Err(reason) = names::check_qualified_name(key) {
            causes.push(cause(
                &format!("metadata.{field}"),
                format!("Invalid value: {key:?}: {reason}"),
            ));
        }
        if values_are_labels
            && let Err(reason) = names::check_label_value(value.as_str().unwrap_or_default())
        {
            causes.push(cause(
                &format!("metadata.{field}"),
                format!("Invalid value: {value}: {reason}"),
            ));
        }
    }
}

fn validate_template(resource: &Resource, object: &Value, causes: &mut Vec<Cause>) {
    if let Some(replicas) = object.pointer("/spec/replicas").and_then(Value::as_i64)
        && replicas < 0
    {
        causes.push(cause(
            "spec.replicas",
            format!("Invalid value: {replicas}: must be greater than or equal to 0"),
        ));
    }
    let labels = object
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object);
    let selector = object.get("spec").and_then(|s| s.get("selector"));
    match (resource.kind, selector) {
        ("Job", None) => {}
        (_, None) => causes.push(cause("spec.selector", "Required value")),
        (_, Some(selector)) => {
            let matches = selector
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(|want| {
                    want.iter()
                        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
                });
            if !matches {
                causes.push(cause(
                    "spec.template.metadata.labels",
                    "Invalid value: `selector` does not match template `labels`",
                ));
            }
        }
    }
    match object.pointer("/spec/template/spec") {
        Some(spec) => validate_pod_spec(spec, "spec.template.spec", causes),
        None => causes.push(cause("spec.template.spec.containers", "Required value")),
    }
}

fn validate_pod_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let mut seen = Vec::new();
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        causes.push(cause(&format!("{path}.containers"), "Required value"));
    }
    for list in ["initContainers", "containers"] {
        for (i, container) in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("{path}.{list}[{i}]");
            let name = container.get("name").and_then(Value::as_str).unwrap_or("");
            if let Err(reason) = names::check_dns1123_label(name) {
                causes.push(cause(
                    &format!("{at}.name"),
                    format!("Invalid value: {name:?}: {reason}"),
                ));
            } else if seen.contains(&name) {
                causes.push(cause(
                    &format!("{at}.name"),
                    format!("Duplicate value: {name:?}"),
                ));
            }
            seen.push(name);
            // A Wasm guest is no process tree: there is nothing to run a command in. Linux
            // containers (the runc RuntimeClass) can have them.
            let wasm = spec.get("runtimeClassName").and_then(Value::as_str) != Some("runc");
            for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                if wasm && container.pointer(&format!("/{probe}/exec")).is_some() {
                    causes.push(cause(
                        &format!("{at}.{probe}.exec"),
                        "Forbidden: exec probes have no meaning for Wasm containers (there is \
                         no process to run a command in); use httpGet or tcpSocket",
                    ));
                }
            }
            if container
                .get("image")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(cause(&format!("{at}.image"), "Required value"));
            }
            for kind in ["limits", "requests"] {
                if let Some(Value::Object(quantities)) =
                    container.pointer(&format!("/resources/{kind}"))
                {
                    for (resource, q) in quantities {
                        let text = q
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| q.to_string());
                        if bosun_api::quantity::parse(&text).is_err() {
                            causes.push(cause(&format!("{at}.resources.{kind}[{resource}]"), format!("Invalid value: {text:?}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")));
                        }
                    }
                }
            }
        }
    }
    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str)
        && !matches!(policy, "Always" | "OnFailure" | "Never")
    {
        causes.push(cause(&format!("{path}.restartPolicy"), format!("Unsupported value: {policy:?}: supported values: \"Always\", \"OnFailure\", \"Never\"")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_api::resources::find;

    fn strict() -> FieldCheck {
        FieldCheck::new(FieldValidation::Strict)
    }

    #[test]
    fn exec_probes_are_refused_for_wasm_pods() {
        let pods = find("", "v1", "pods").unwrap();
        let probe = json!({"exec": {"command": ["true"]}});
        let body = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "i", "livenessProbe": probe}]}});
        let err =
            prepare_create(pods, Some("default"), &mut body.clone(), &mut strict()).unwrap_err();
        assert!(
            err.message.contains("spec.containers[0].livenessProbe.exec: Forbidden: exec probes have no meaning for Wasm containers"),
            "{}",
            err.message
        );
        let mut runc = body.clone();
        runc["spec"]["runtimeClassName"] = json!("runc");
        prepare_create(pods, Some("default"), &mut runc, &mut strict()).unwrap();
        let mut http = body;
        http["spec"]["containers"][0]["livenessProbe"] = json!({"httpGet": {"port": 8080}});
        prepare_create(pods, Some("default"), &mut http, &mut strict()).unwrap();
    }

    #[test]
    fn unknown_fields_are_refused_under_strict_and_warned_otherwise() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        let body = json!({"metadata": {"name": "d"}, "spec": {"replicass": 3, "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicyy": "x"}]}}}});
        let err =
            prepare_create(deploy, Some("default"), &mut body.clone(), &mut strict()).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.contains(r#"unknown field "spec.replicass""#),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains(r#"unknown field "spec.template.spec.containers[0].imagePullPolicyy""#),
            "{}",
            err.message
        );
        let mut warn = FieldCheck::new(FieldValidation::Warn);
        prepare_create(deploy, Some("default"), &mut body.clone(), &mut warn).unwrap();
        assert_eq!(warn.warnings.len(), 2);
        let mut ignore = FieldCheck::new(FieldValidation::Ignore);
        prepare_create(deploy, Some("default"), &mut body.clone(), &mut ignore).unwrap();
        assert!(ignore.warnings.is_empty());
    }

    fn pods() -> &'static Resource {
        find("", "v1", "pods").unwrap()
    }

    #[test]
    fn create_fills_metadata_and_pod_defaults() {
        let mut pod = json!({"metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "app", "image": "reg/app:v1"}]}});
        let name = prepare_create(pods(), Some("default"), &mut pod, &mut strict()).unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(pod["metadata"]["namespace"], "default");
        assert_eq!(pod["metadata"]["uid"].as_str().unwrap().len(), 36);
        assert_eq!(pod["metadata"]["generation"], 1);
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(
            pod["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        add_default_tolerations(pods(), &mut pod, DefaultTolerations::default());
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(pod["spec"]["tolerations"][1]["tolerationSeconds"], 300);
        assert_eq!(pod["status"]["phase"], "Pending");
    }

    #[test]
    fn invalid_pods_list_every_bad_field() {
        let mut pod = json!({"metadata": {"name": "x", "labels": {"ok": "-bad"}}, "spec": {
            "restartPolicy": "Sometimes",
            "containers": [{"name": "Bad_Name", "image": ""}, {"name": "a", "image": "i", "resources": {"limits": {"memory": "lots"}}}, {"name": "a", "image": "i"}]}});
        let err = prepare_create(pods(), Some("default"), &mut pod, &mut strict()).unwrap_err();
        assert_eq!(err.code, 422);
        let fields: Vec<String> = err.details.unwrap()["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap().to_string())
            .collect();
        for want in [
            "metadata.labels",
            "spec.containers[0].name",
            "spec.containers[0].image",
            "spec.containers[1].resources.limits[memory]",
            "spec.containers[2].name",
            "spec.restartPolicy",
        ] {
            assert!(
                fields.iter().any(|f| f == want),
                "{want} missing from {fields:?}"
            );
        }
    }

    #[test]
    fn wrong_kinds_and_types_are_bad_requests() {
        let mut wrong_kind = json!({"kind": "Service", "metadata": {"name": "x"}});
        let err = prepare_create(pods(), Some("d"), &mut wrong_kind, &mut strict()).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.contains("does not match the expected kind"),
            "{}",
            err.message
        );
        let mut wrong_type =
            json!({"metadata": {"name": "x"}, "spec": {"containers": "not a list"}});
        assert_eq!(
            prepare_create(pods(), Some("d"), &mut wrong_type, &mut strict())
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        let mut d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let err = prepare_create(deploy, Some("default"), &mut d, &mut strict()).unwrap_err();
        assert!(err.message.contains("selector"), "{}", err.message);
    }

    #[test]
    fn secrets_fold_string_data_into_data() {
        let secrets = find("", "v1", "secrets").unwrap();
        let mut s = json!({"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}});
        prepare_create(secrets, Some("default"), &mut s, &mut strict()).unwrap();
        assert_eq!(s["data"]["password"], B64.encode("hunter2"));
        assert!(s.get("stringData").is_none());
        assert_eq!(s["type"], "Opaque");
    }

    #[test]
    fn updates_keep_identity_and_bump_generation_on_spec_change() {
        let mut old = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "i:1"}]}});
        prepare_create(pods(), Some("default"), &mut old, &mut strict()).unwrap();
        let mut new = json!({"metadata": {"name": "p", "uid": "forged"}, "spec": {"containers": [{"name": "a", "image": "i:2"}]}, "status": {"phase": "Running"}});
        prepare_update(pods(), "p", &old, &mut new, None, &mut strict()).unwrap();
        assert_eq!(new["metadata"]["uid"], old["metadata"]["uid"]);
        assert_eq!(new["metadata"]["generation"], 2);
        assert_eq!(
            new["status"]["phase"], "Pending",
            "status changes only through /status"
        );
    }
}
