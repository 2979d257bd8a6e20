//! Admission: what the API server does to an object between decoding and storing it.
//!
//! First the kind's own preparation (`prepare_create`, `prepare_update`): the typed decode
//! through k8s-openapi (`?fieldValidation=`), metadata (uid, creationTimestamp, generation,
//! generateName), the kind strategy's defaults and its validation, with field-level `Invalid`
//! errors. Then the [`Chain`] of admission plugins over a typed [`Request`]: every mutating
//! plugin in order, then every validating one, as kube-apiserver runs its admission plugins.
//!
//! Plugins: [`namespace::NamespaceLifecycle`] (no new objects in a missing or terminating
//! namespace, the system namespaces are not deleted), [`tolerations::DefaultTolerationSeconds`],
//! [`priority::Priority`] (a pod's `priorityClassName` becomes its `spec.priority`),
//! [`services::ServiceAllocation`] (cluster IPs and node ports), [`noderestriction::NodeRestriction`]
//! (a node writes only its own Node, Lease and pods), [`limitranger::LimitRanger`] (a pod's
//! defaults and bounds from its namespace's LimitRanges).

pub mod certificates;
pub mod escalation;
mod limitranger;
mod namespace;
pub mod noderestriction;
mod priority;
pub mod quota;
pub mod serviceaccount;
pub mod services;
mod tolerations;

use std::sync::Arc;
use std::time::SystemTime;

use bosun_api::names;
use bosun_api::resources::Resource;
use rand::Rng;
use serde_json::{Map, Value, json};

use super::auth::User;
use super::kinds::{self, cause};
use super::status::{ApiError, ApiResult, Cause};
use crate::store::{Object, Store};

pub use services::ServiceRanges;
pub use tolerations::DefaultTolerations;

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

/// What a write does, in admission's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

/// One write as the admission plugins see it.
pub struct Request<'a> {
    pub operation: Operation,
    pub resource: &'static Resource,
    /// `status`, `scale`, `finalize`…; None for the object itself.
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub user: &'a User,
    /// The object to be stored: the new one on create and update, the current one on delete.
    pub object: &'a mut Value,
    /// The object being replaced, on update.
    pub old: Option<&'a Value>,
    /// A dry run: plugins check, but take nothing (no addresses, no ports).
    pub dry_run: bool,
}

impl Request<'_> {
    /// Whether this is a write of the kind `kind` in the group `group`.
    pub fn is(&self, group: &str, kind: &str) -> bool {
        self.resource.group == group && self.resource.kind == kind
    }
}

/// An admission plugin. A plugin that only mutates leaves [`validate`] alone, and the other
/// way round. A plugin that must be atomic with the write (quota) gets the store's
/// transaction through a hook of its own when it arrives; see ARCHITECTURE.md.
///
/// [`validate`]: Plugin::validate
#[async_trait::async_trait]
pub trait Plugin: Send + Sync {
    /// The plugin's name, as kube-apiserver's `--enable-admission-plugins` names it.
    fn name(&self) -> &'static str;

    /// Changes the object (defaults that need the store or the server's configuration).
    async fn admit(&self, _store: &dyn Store, _request: &mut Request<'_>) -> ApiResult<()> {
        Ok(())
    }

    /// Accepts or refuses the write, without changing it.
    async fn validate(&self, _store: &dyn Store, _request: &Request<'_>) -> ApiResult<()> {
        Ok(())
    }

    /// The object is gone from the store: lets go of what the plugin held for it.
    async fn deleted(&self, _store: &dyn Store, _resource: &Resource, _object: &Value) {}
}

/// The server's configuration of its admission plugins.
#[derive(Debug, Clone, Copy, Default)]
pub struct Config {
    pub default_tolerations: DefaultTolerations,
    pub service_ranges: ServiceRanges,
}

/// The ordered admission plugins of a server, and the ResourceQuota step that stores what
/// they admitted.
pub struct Chain {
    plugins: Vec<Arc<dyn Plugin>>,
    quota: Option<Arc<quota::ResourceQuota>>,
}

impl Chain {
    /// The plugins every Bosun server runs, in their order.
    pub fn standard(config: Config) -> Self {
        Self::new(vec![
            Arc::new(namespace::NamespaceLifecycle),
            Arc::new(noderestriction::NodeRestriction),
            Arc::new(tolerations::DefaultTolerationSeconds(
                config.default_tolerations,
            )),
            Arc::new(limitranger::LimitRanger),
            Arc::new(serviceaccount::ServiceAccount),
            Arc::new(priority::Priority),
            Arc::new(services::ServiceAllocation(config.service_ranges)),
        ])
    }

    pub fn new(plugins: Vec<Arc<dyn Plugin>>) -> Self {
        Self {
            plugins,
            quota: None,
        }
    }

    /// This chain charging what it admits to ResourceQuotas.
    pub fn with_quota(mut self, quota: Arc<quota::ResourceQuota>) -> Self {
        self.quota = Some(quota);
        self
    }

    /// Stores an admitted create or update: charged to the namespace's quotas in the same
    /// transaction when the chain has the ResourceQuota step, else written as it is.
    pub async fn store(&self, store: &dyn Store, write: quota::Write) -> ApiResult<Object> {
        match &self.quota {
            Some(quota) => quota.write(store, write).await,
            None => quota::uncharged(store, write).await,
        }
    }

    /// This chain with `plugin` at its end.
    pub fn with(mut self, plugin: Arc<dyn Plugin>) -> Self {
        self.plugins.push(plugin);
        self
    }

    /// Runs every mutating plugin, then every validating one; the first refusal ends it.
    pub async fn run(&self, store: &dyn Store, request: &mut Request<'_>) -> ApiResult<()> {
        for plugin in &self.plugins {
            plugin.admit(store, request).await?;
        }
        for plugin in &self.plugins {
            plugin.validate(store, request).await?;
        }
        Ok(())
    }

    /// Tells every plugin that an object is gone.
    pub async fn deleted(&self, store: &dyn Store, resource: &Resource, object: &Value) {
        for plugin in &self.plugins {
            plugin.deleted(store, resource, object).await;
        }
    }

    /// The plugins' names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.plugins.iter().map(|p| p.name()).collect();
        if self.quota.is_some() {
            names.push("ResourceQuota");
        }
        names
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
    let strategy = kinds::for_resource(resource);
    strategy.defaults(body, true);
    let mut causes = Vec::new();
    strategy.validate(body, &mut causes);
    validate(resource, &name, body, causes)?;
    Ok(name)
}

/// Prepares a replacement of `old` by `new` (a PUT of the object or of its `status`): keeps
/// what clients may not change, bumps `generation` when the spec changed, validates.
/// Sets (or, with `None`, removes) the value at a JSON pointer of object keys, creating the
/// objects on the way.
fn set_pointer(object: &mut Value, pointer: &str, value: Option<Value>) {
    let mut keys: Vec<&str> = pointer.split('/').skip(1).collect();
    let Some(last) = keys.pop() else { return };
    let mut at = object;
    for key in keys {
        if !at.get(key).is_some_and(Value::is_object) {
            if value.is_none() {
                return;
            }
            at[key] = json!({});
        }
        at = &mut at[key];
    }
    let Some(map) = at.as_object_mut() else {
        return;
    };
    match value {
        Some(value) => map.insert(last.to_string(), value),
        None => map.remove(last),
    };
}

pub fn prepare_update(
    resource: &Resource,
    name: &str,
    old: &Value,
    new: &mut Value,
    subresource: Option<&str>,
    fields: &mut FieldCheck,
) -> ApiResult<()> {
    let strategy = kinds::for_resource(resource);
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
        // Another subresource changes only what it writes (a namespace's `finalize`, its
        // `spec.finalizers`).
        Some(sub) if sub != "scale" => {
            let writes = kinds::subresources(resource)
                .into_iter()
                .find(|s| s.name == sub)
                .map(|s| s.writes)
                .unwrap_or_default();
            let written: Vec<Option<Value>> =
                writes.iter().map(|p| new.pointer(p).cloned()).collect();
            *new = with_resource_version(old.clone(), new);
            for (pointer, value) in writes.iter().zip(written) {
                set_pointer(new, pointer, value);
            }
        }
        _ => {
            strategy.prepare_for_update(old, new);
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
    strategy.defaults(new, false);
    if old.get("spec") != new.get("spec") {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        new["metadata"]["generation"] = json!(generation + 1);
    }
    let mut causes = Vec::new();
    strategy.validate(new, &mut causes);
    strategy.validate_update(old, new, &mut causes);
    validate(resource, name, new, causes)
}

/// `old` with `new`'s resourceVersion (the precondition of a status update).
fn with_resource_version(mut old: Value, new: &Value) -> Value {
    if let Some(rv) = new.pointer("/metadata/resourceVersion") {
        old["metadata"]["resourceVersion"] = rv.clone();
    }
    old
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
    let round_trip = kinds::for_resource(resource)
        .object_type()
        .round_trip(body)
        .map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: {e}",
                resource.kind,
                resource.api_version(),
                resource.kind
            ))
        })?;
    if fields.mode == FieldValidation::Ignore {
        return Ok(());
    }
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

/// The checks every kind shares (name, labels, annotations), then the kind's own `causes`.
fn validate(
    resource: &Resource,
    name: &str,
    object: &Value,
    kind_causes: Vec<Cause>,
) -> ApiResult<()> {
    let mut causes = Vec::new();
    if let Err(reason) = kinds::for_resource(resource).check_name(name) {
        causes.push(cause(
            "metadata.name",
            format!("Invalid value: {name:?}: {reason}"),
        ));
    }
    check_map_keys(object, "labels", &mut causes, true);
    check_map_keys(object, "annotations", &mut causes, false);
    causes.extend(kind_causes);
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
        assert_eq!(s["data"]["password"], "aHVudGVyMg==");
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
