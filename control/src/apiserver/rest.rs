//! The generic REST verbs: one handler for every resource in the registry (get, list, watch,
//! create, update, patch, delete, deletecollection, and the `status` and `scale`
//! subresources). What the request names and asks is parsed in [`super::request`]; reads go
//! through [`super::read`]; what differs by kind is the kind's strategy ([`super::kinds`]).

use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions;
use serde_json::{Value, json};

use super::admission::{self, Operation};
use super::auth::{self, Attributes, ResourceAttributes, User};
use super::read::{get, list};
use super::request::{self, ListOptions, Parsed, Query, Target, WatchOptions};
use super::status::{ApiError, ApiResult};
use super::{ApiState, kinds, patch, protobuf, table, watch};
use crate::store::Object;

/// Largest request body accepted (the store's object limit plus room for the envelope).
const MAX_BODY: usize = crate::store::MAX_OBJECT_BYTES + 64 * 1024;

/// Who writes, and whether for real.
#[derive(Clone, Copy)]
struct Caller<'a> {
    user: &'a User,
    dry_run: bool,
}

pub async fn core(state: State<ApiState>, request: Request) -> Response {
    handle(state, true, request).await
}

pub async fn grouped(state: State<ApiState>, request: Request) -> Response {
    handle(state, false, request).await
}

async fn handle(State(state): State<ApiState>, core: bool, request: Request) -> Response {
    // One span per request, so that what a request causes can be followed in the log.
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        user_agent = request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
    );
    match tracing::Instrument::instrument(serve(&state, core, request), span).await {
        Ok(response) => response,
        Err(error) => {
            // An oversized body was left unread: the connection cannot carry another request,
            // so tell the client not to reuse it (HTTP/2 drops this header; streams are reset
            // on their own there).
            let unread_body = error.code == StatusCode::PAYLOAD_TOO_LARGE;
            let mut response = error.into_response();
            if unread_body {
                response.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
            }
            response
        }
    }
}

async fn serve(state: &ApiState, core: bool, request: Request) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let rest = path
        .strip_prefix(if core { "/api" } else { "/apis" })
        .unwrap_or("");
    let query = request::query(parts.uri.query());
    let target = match request::parse(core, rest)? {
        Parsed::Target(target) => target,
        Parsed::Document(document) => return Ok(axum::Json(document).into_response()),
    };
    let user = parts
        .extensions
        .get::<User>()
        .cloned()
        .ok_or_else(ApiError::unauthorized)?;
    let verb = request::verb(&parts.method, &target, &query);
    let attributes = Attributes::Resource(ResourceAttributes {
        verb,
        group: target.resource.group,
        resource: target.resource.plural,
        subresource: target.subresource.as_deref(),
        namespace: target.namespace.as_deref(),
        name: target.name.as_deref(),
    });
    auth::authorize(&*state.authorizer, &user, &attributes).await?;
    if let Some(sub) = target.subresource.as_deref() {
        let allowed = kinds::subresources(target.resource)
            .iter()
            .any(|s| s.name == sub && s.verbs.contains(&verb));
        if !allowed {
            return Err(ApiError::not_found_path(path));
        }
    }
    let as_table = wants_table(&parts.headers);
    let include = table::Include::from_query(query.get("includeObject").map(String::as_str))
        .map_err(ApiError::bad_request)?;
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::too_large(format!("the request body is larger than {MAX_BODY} bytes"))
    })?;
    let caller = Caller {
        user: &user,
        dry_run: query.get("dryRun").is_some_and(|d| d == "All"),
    };
    let manager = field_manager(&query, &parts.headers);
    let mut fields =
        admission::FieldCheck::from_query(query.get("fieldValidation").map(String::as_str))?;
    match verb {
        "watch" => {
            let options = WatchOptions::from_query(target.resource, &query)?;
            watch::serve(state, &target, &options).await
        }
        "list" => {
            let options = ListOptions::from_query(target.resource, &query)?;
            let list = list(state, &target, &options).await?;
            Ok(if as_table {
                axum::Json(table::from_list(target.resource, &list, include)).into_response()
            } else {
                axum::Json(list).into_response()
            })
        }
        "get" if target.subresource.as_deref() == Some("proxy") => {
            let path = target.proxy_path.as_deref().unwrap_or_default();
            super::nodes::proxy(state, target.name(), path, parts.uri.query()).await
        }
        "get" if target.subresource.as_deref() == Some("log") => {
            let pod = get(state, &target).await?;
            let namespace = target.namespace.as_deref().unwrap_or("default");
            super::logs::pod_log(state, namespace, target.name(), &pod.value, &query).await
        }
        "get" => {
            let object = get(state, &target).await?;
            let object = match target.subresource.as_deref() {
                Some("scale") => scale_of(&object),
                _ => object.value,
            };
            Ok(if as_table && target.subresource.is_none() {
                axum::Json(table::from_objects(
                    target.resource,
                    std::slice::from_ref(&object),
                    None,
                    include,
                ))
                .into_response()
            } else {
                axum::Json(object).into_response()
            })
        }
        "create" if target.subresource.as_deref() == Some("binding") => {
            kinds::pod::bind(state, &target, decode(&parts.headers, &body)?).await
        }
        "create" if target.subresource.as_deref() == Some("token") => {
            kinds::serviceaccount::request_token(
                state,
                &user,
                &target,
                decode(&parts.headers, &body)?,
            )
            .await
        }
        "create" if target.name.is_none() => {
            let created = create(
                state,
                &target,
                decode(&parts.headers, &body)?,
                Some(&manager),
                caller,
                &mut fields,
            )
            .await?;
            Ok(with_warnings(
                (StatusCode::CREATED, axum::Json(created)).into_response(),
                &fields,
            ))
        }
        "update" if target.name.is_some() => {
            let updated = update(
                state,
                &target,
                decode(&parts.headers, &body)?,
                &manager,
                caller,
                &mut fields,
            )
            .await?;
            Ok(with_warnings(axum::Json(updated).into_response(), &fields))
        }
        "patch" if target.name.is_some() => {
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if content_type.starts_with("application/apply-patch+yaml") {
                let manager = query
                    .get("fieldManager")
                    .filter(|m| !m.is_empty())
                    .ok_or_else(|| {
                        ApiError::bad_request("fieldManager is required for apply requests")
                    })?;
                let config: Value = serde_yaml::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("invalid apply body: {e}")))?;
                let force = query.get("force").is_some_and(|f| f == "true");
                let (status, applied) =
                    apply_object(state, &target, config, manager, force, caller, &mut fields)
                        .await?;
                return Ok(with_warnings(
                    (status, axum::Json(applied)).into_response(),
                    &fields,
                ));
            }
            let kind = patch::Kind::from_content_type(content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
            let patch: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("invalid patch: {e}")))?;
            let patched =
                patch_object(state, &target, kind, &patch, &manager, caller, &mut fields).await?;
            Ok(with_warnings(axum::Json(patched).into_response(), &fields))
        }
        "delete" => delete(state, &target, &body, &query, caller).await,
        "deletecollection" => delete_collection(state, &target, &query, caller).await,
        _ => Err(ApiError::method_not_allowed(format!(
            "{} is not supported on {path}",
            parts.method
        ))),
    }
}

/// The field manager a write other than apply is recorded under: `?fieldManager=`, else the
/// client's User-Agent up to its first `/` (`kubectl`, `kube-rs`), as Kubernetes names it.
fn field_manager(query: &Query, headers: &HeaderMap) -> String {
    if let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) {
        return manager.clone();
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let prefix = agent.split('/').next().unwrap_or_default();
    prefix.chars().take(128).collect()
}

/// Adds a `Warning: 299 - "…"` header per warning, as the Kubernetes API reports them.
fn with_warnings(mut response: Response, fields: &admission::FieldCheck) -> Response {
    for warning in &fields.warnings {
        let text = format!("299 - {:?}", warning);
        if let Ok(value) = header::HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|accept| accept.split(',').next())
        .is_some_and(|first| first.contains("as=Table"))
}

/// Decodes a request body: JSON, or YAML when the client says so.
fn decode(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if content_type.starts_with(protobuf::MEDIA_TYPE) {
        return protobuf::decode(body, kinds::protobuf_message).map_err(|why| {
            ApiError::unsupported_media_type_because(content_type, &why.to_string())
        });
    }
    let value: Value = if content_type.contains("yaml") {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid YAML: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("the request body must be an object"));
    }
    Ok(value)
}

/// Creates the object `body` describes. `manager` is recorded as the owner of its fields, but
/// for a server-side apply, which wrote its own managedFields (None). The fields admission
/// plugins add are not the manager's, as in Kubernetes.
async fn create(
    state: &ApiState,
    target: &Target,
    mut body: Value,
    manager: Option<&str>,
    caller: Caller<'_>,
    fields: &mut admission::FieldCheck,
) -> ApiResult<Value> {
    let name = admission::prepare_create(
        target.resource,
        target.namespace.as_deref(),
        &mut body,
        fields,
    )?;
    if let Some(manager) = manager {
        super::apply::record_update(
            None,
            &mut body,
            manager,
            None,
            target.resource.status,
            &now(),
        );
    }
    state
        .admission
        .run(
            &*state.store,
            &mut admission::Request {
                operation: Operation::Create,
                resource: target.resource,
                subresource: None,
                namespace: target.namespace.as_deref(),
                name: &name,
                user: caller.user,
                object: &mut body,
                old: None,
                dry_run: caller.dry_run,
            },
        )
        .await?;
    if caller.dry_run {
        return Ok(body);
    }
    let created = state
        .admission
        .store(
            &*state.store,
            admission::quota::Write::create(target.resource, target.key(&name), body),
        )
        .await?;
    Ok(kinds::presented(target.resource, created.value))
}

/// The resourceVersion a client sent, as a store precondition.
fn precondition(body: &Value) -> ApiResult<Option<i64>> {
    match body.pointer("/metadata/resourceVersion") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(rv)) if rv.is_empty() => Ok(None),
        Some(Value::String(rv)) => rv
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid resourceVersion {other}"
        ))),
    }
}

async fn update(
    state: &ApiState,
    target: &Target,
    body: Value,
    manager: &str,
    caller: Caller<'_>,
    fields: &mut admission::FieldCheck,
) -> ApiResult<Value> {
    let expected = precondition(&body)?;
    let current = get(state, target).await?;
    if target.subresource.as_deref() == Some("scale") {
        let replicas = body
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .ok_or_else(|| ApiError::bad_request("a Scale needs spec.replicas"))?;
        let mut scaled = current.value.clone();
        scaled["spec"]["replicas"] = json!(replicas);
        let updated = store_update(
            state,
            target,
            &current.value,
            scaled,
            expected.or(Some(current.revision)),
            Writer {
                subresource: Some("scale"),
                manager: Some(manager),
            },
            caller,
            fields,
        )
        .await?;
        return Ok(scale_of(&Object {
            value: updated,
            ..current
        }));
    }
    store_update(
        state,
        target,
        &current.value,
        body,
        expected,
        Writer {
            subresource: target.subresource.as_deref(),
            manager: Some(manager),
        },
        caller,
        fields,
    )
    .await
}

/// Who writes through `store_update`, and where.
#[derive(Clone, Copy)]
struct Writer<'a> {
    /// `status`, `scale`, `finalize`, or None for the object itself.
    subresource: Option<&'a str>,
    /// Recorded in managedFields as the owner of what the write changed (an `Update`); None
    /// for a server-side apply, which has written its own managedFields.
    manager: Option<&'a str>,
}

/// Admits a replacement of `old` by `new` and writes it.
#[allow(clippy::too_many_arguments)]
async fn store_update(
    state: &ApiState,
    target: &Target,
    old: &Value,
    mut new: Value,
    expected: Option<i64>,
    writer: Writer<'_>,
    caller: Caller<'_>,
    fields: &mut admission::FieldCheck,
) -> ApiResult<Value> {
    // The scale subresource writes the whole object (with the new replicas) here.
    let sub = writer.subresource.filter(|s| *s != "scale");
    admission::prepare_update(target.resource, target.name(), old, &mut new, sub, fields)?;
    if let Some(manager) = writer.manager {
        super::apply::record_update(
            Some(old),
            &mut new,
            manager,
            writer.subresource,
            target.resource.status,
            &now(),
        );
    }
    state
        .admission
        .run(
            &*state.store,
            &mut admission::Request {
                operation: Operation::Update,
                resource: target.resource,
                subresource: writer.subresource,
                namespace: target.namespace.as_deref(),
                name: target.name(),
                user: caller.user,
                object: &mut new,
                old: Some(old),
                dry_run: caller.dry_run,
            },
        )
        .await?;
    if caller.dry_run {
        return Ok(new);
    }
    let updated = state
        .admission
        .store(
            &*state.store,
            admission::quota::Write::update(
                target.resource,
                target.key(target.name()),
                new,
                old,
                expected,
            ),
        )
        .await?;
    let value = kinds::presented(target.resource, updated.value);
    finish_deletion_if_done(state, target, value).await
}

/// An object marked for deletion goes once its last finalizer is removed.
async fn finish_deletion_if_done(
    state: &ApiState,
    target: &Target,
    value: Value,
) -> ApiResult<Value> {
    let marked = value.pointer("/metadata/deletionTimestamp").is_some();
    let finalizers = value
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if marked && !finalizers && !kinds::for_resource(target.resource).awaits_others(&value) {
        let name = target.name();
        let rv = value
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|r| r.parse().ok());
        match state.store.delete(&target.key(name), rv).await {
            Ok(deleted) => {
                let admission = &state.admission;
                admission
                    .deleted(&*state.store, target.resource, &deleted.value)
                    .await;
            }
            Err(crate::store::Error::NotFound { .. })
            | Err(crate::store::Error::Conflict { .. }) => {}
            Err(e) => return Err(ApiError::from_store(e, target.resource, name)),
        }
    }
    Ok(value)
}

/// Kubernetes' `GuaranteedUpdate`: `$attempt` (an expression evaluated anew for each try)
/// reads the object and writes its new version with the revision it read as the
/// precondition; when another write came in between (a stale write), it is tried again on the
/// newer version, up to five times. A macro rather than a function over an async closure,
/// whose future the compiler cannot yet prove `Send` for axum.
macro_rules! guaranteed_update {
    ($target:expr, $attempt:expr) => {{
        let mut result = Err(ApiError::conflict(
            $target.resource,
            $target.name(),
            "too many concurrent writers",
        ));
        for _ in 0..5 {
            match $attempt.await {
                Err(e) if e.is_stale_write() => continue,
                other => {
                    result = other;
                    break;
                }
            }
        }
        result
    }};
}
pub(super) use guaranteed_update;

async fn patch_object(
    state: &ApiState,
    target: &Target,
    kind: patch::Kind,
    patch: &Value,
    manager: &str,
    caller: Caller<'_>,
    fields: &mut admission::FieldCheck,
) -> ApiResult<Value> {
    // A patch without a resourceVersion must not fail because someone else wrote first.
    guaranteed_update!(
        target,
        patch_once(state, target, kind, patch, manager, caller, fields)
    )
}

async fn patch_once(
    state: &ApiState,
    target: &Target,
    kind: patch::Kind,
    patch: &Value,
    manager: &str,
    caller: Caller<'_>,
    fields: &mut admission::FieldCheck,
) -> ApiResult<Value> {
    let current = get(state, target).await?;
    let base = match target.subresource.as_deref() {
        Some("scale") => scale_of(&current),
        _ => current.value.clone(),
    };
    let patched = patch::apply(kind, &base, patch).map_err(|e| {
        ApiError::invalid(
            target.resource,
            target.name(),
            vec![super::status::Cause {
                field: "patch".into(),
                message: e.to_string(),
            }],
        )
    })?;
    if precondition(&patched)?.is_some_and(|rv| rv != current.revision) {
        return Err(ApiError::precondition_failed(
            target.resource,
            target.name(),
        ));
    }
    let new = match target.subresource.as_deref() {
        Some("scale") => {
            let replicas = patched
                .pointer("/spec/replicas")
                .cloned()
                .unwrap_or(json!(0));
            let mut v = current.value.clone();
            v["spec"]["replicas"] = replicas;
            v
        }
        _ => patched,
    };
    let writer = Writer {
        subresource: target.subresource.as_deref(),
        manager: Some(manager),
    };
    let value = store_update(
        state,
        target,
        &current.value,
        new,
        Some(current.revision),
        writer,
        caller,
        fields,
    )
    .await?;
    Ok(match target.subresource.as_deref() {
        Some("scale") => scale_of(&Object { value, ..current }),
        _ => value,
    })
}

/// Server-side apply (`apply.rs`): creates the object if it is missing, else merges the
/// manager's configuration in, with its field ownership; 201 or 200 and the object.
async fn apply_object(
    state: &ApiState,
    target: &Target,
    config: Value,
    manager: &str,
    force: bool,
    caller: Caller<'_>,
    fields: &mut admission::FieldCheck,
) -> ApiResult<(StatusCode, Value)> {
    let name = target.name();
    if target.subresource.is_some() {
        return Err(ApiError::bad_request(
            "server-side apply to a subresource is not supported",
        ));
    }
    if !config.is_object() {
        return Err(ApiError::bad_request("an apply body must be an object"));
    }
    let api_version = target.resource.api_version();
    if config["apiVersion"] != json!(api_version) || config["kind"] != json!(target.resource.kind) {
        return Err(ApiError::bad_request(format!(
            "an apply body for {} must say apiVersion: {api_version} and kind: {}",
            target.resource.plural, target.resource.kind
        )));
    }
    if let Some(named) = config.pointer("/metadata/name").and_then(Value::as_str)
        && named != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({named}) does not match the name on the URL ({name})"
        )));
    }
    guaranteed_update!(
        target,
        apply_once(state, target, &config, manager, force, caller, fields)
    )
}

async fn apply_once(
    state: &ApiState,
    target: &Target,
    config: &Value,
    manager: &str,
    force: bool,
    caller: Caller<'_>,
    fields: &mut admission::FieldCheck,
) -> ApiResult<(StatusCode, Value)> {
    let name = target.name();
    let has_status = target.resource.status;
    let now = now();
    let current = match get(state, target).await {
        Ok(current) => current,
        Err(e) if e.code == StatusCode::NOT_FOUND => {
            let mut body = super::apply::create(config.clone(), manager, has_status, &now);
            body["metadata"]["name"] = json!(name);
            return match create(state, target, body, None, caller, fields).await {
                // Created by someone else meanwhile: apply to theirs.
                Err(e) if e.code == StatusCode::CONFLICT => {
                    Err(ApiError::stale_write(target.resource, name))
                }
                other => other.map(|v| (StatusCode::CREATED, v)),
            };
        }
        Err(e) => return Err(e),
    };
    let new = super::apply::apply(&current.value, config, manager, force, has_status, &now)
        .map_err(|conflicts| {
            let list: Vec<String> = conflicts
                .iter()
                .map(super::apply::Conflict::message)
                .collect();
            ApiError::apply_conflict(format!(
                "Apply failed with {} conflict{}: {}",
                list.len(),
                if list.len() == 1 { "" } else { "s" },
                list.join("; ")
            ))
        })?;
    let writer = Writer {
        subresource: None,
        manager: None,
    };
    store_update(
        state,
        target,
        &current.value,
        new,
        Some(current.revision),
        writer,
        caller,
        fields,
    )
    .await
    .map(|v| (StatusCode::OK, v))
}

fn now() -> String {
    bosun_api::time::rfc3339(SystemTime::now())
}

fn scale_of(object: &Object) -> Value {
    let v = &object.value;
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": v["metadata"]["name"],
            "namespace": v["metadata"]["namespace"],
            "uid": v["metadata"]["uid"],
            "resourceVersion": v["metadata"]["resourceVersion"],
            "creationTimestamp": v["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": v.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": v.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": kinds::selector_string(v),
        },
    })
}

/// Deletes an object. Without a resourceVersion precondition, a write that lands between
/// reading the object and deleting it (a status update, a controller's patch) does not fail
/// the delete with a conflict: it is tried again on the new version, as Kubernetes' guaranteed
/// updates do.
async fn delete(
    state: &ApiState,
    target: &Target,
    body: &[u8],
    query: &Query,
    caller: Caller<'_>,
) -> ApiResult<Response> {
    let options: DeleteOptions = if body.is_empty() {
        DeleteOptions::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let preconditions = options.preconditions.clone().unwrap_or_default();
    if preconditions.resource_version.is_some() {
        return delete_once(state, target, &options, query, caller).await;
    }
    guaranteed_update!(target, delete_once(state, target, &options, query, caller))
}

async fn delete_once(
    state: &ApiState,
    target: &Target,
    options: &DeleteOptions,
    query: &Query,
    caller: Caller<'_>,
) -> ApiResult<Response> {
    let mut current = get(state, target).await?;
    state
        .admission
        .run(
            &*state.store,
            &mut admission::Request {
                operation: Operation::Delete,
                resource: target.resource,
                subresource: None,
                namespace: target.namespace.as_deref(),
                name: target.name(),
                user: caller.user,
                object: &mut current.value,
                old: None,
                dry_run: caller.dry_run,
            },
        )
        .await?;
    let preconditions = options.preconditions.clone().unwrap_or_default();
    if let Some(uid) = preconditions.uid.as_deref()
        && current
            .value
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            != Some(uid)
    {
        return Err(ApiError::conflict(
            target.resource,
            target.name(),
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                current.value["metadata"]["uid"]
            ),
        ));
    }
    let expected = match preconditions.resource_version.as_deref() {
        Some(rv) => Some(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
        None => None,
    };
    let grace = options
        .grace_period_seconds
        .or_else(|| query.get("gracePeriodSeconds").and_then(|g| g.parse().ok()))
        .or_else(|| {
            current
                .value
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(0);
    // Foreground and Orphan deletion are finalizers the garbage collector acts on.
    let policy = options
        .propagation_policy
        .as_deref()
        .or_else(|| query.get("propagationPolicy").map(String::as_str))
        .or_else(|| (options.orphan_dependents == Some(true)).then_some("Orphan"));
    let finalizer = match policy {
        None | Some("Background") => None,
        Some("Foreground") => Some("foregroundDeletion"),
        Some("Orphan") => Some("orphan"),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid propagationPolicy {other:?}: Orphan, Background or Foreground"
            )));
        }
    };
    if caller.dry_run {
        return Ok(axum::Json(current.value).into_response());
    }
    let strategy = kinds::for_resource(target.resource);
    let mut marked = current.value.clone();
    if let Some(finalizer) = finalizer {
        let list = marked["metadata"]
            .as_object_mut()
            .expect("an object has metadata")
            .entry("finalizers")
            .or_insert_with(|| json!([]));
        if let Value::Array(list) = list
            && !list.iter().any(|f| f == finalizer)
        {
            list.push(json!(finalizer));
        }
    }
    let has_finalizers = marked
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let previous_grace = current
        .value
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    // A second delete may only shorten the grace period.
    let grace = previous_grace.map_or(grace, |g| g.min(grace));
    marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    if has_finalizers || strategy.awaits_others(&marked) {
        // Mark it; finalizers (or the pod's node) finish the deletion.
        let when = SystemTime::now() + Duration::from_secs(grace.max(0) as u64);
        if current
            .value
            .pointer("/metadata/deletionTimestamp")
            .is_none()
            || previous_grace.is_some_and(|g| grace < g)
        {
            marked["metadata"]["deletionTimestamp"] = json!(bosun_api::time::rfc3339(when));
        }
        strategy.mark_deleting(&mut marked);
        if marked == current.value {
            return Ok((StatusCode::ACCEPTED, axum::Json(current.value)).into_response());
        }
        let key = target.key(target.name());
        let updated = state
            .store
            .update(&key, marked, expected.or(Some(current.revision)))
            .await
            .map_err(|e| ApiError::from_store(e, target.resource, target.name()))?;
        return Ok((
            StatusCode::ACCEPTED,
            axum::Json(kinds::presented(target.resource, updated.value)),
        )
            .into_response());
    }
    let deleted = state
        .store
        .delete(
            &target.key(target.name()),
            expected.or(Some(current.revision)),
        )
        .await
        .map_err(|e| ApiError::from_store(e, target.resource, target.name()))?;
    state
        .admission
        .deleted(&*state.store, target.resource, &deleted.value)
        .await;
    Ok(axum::Json(kinds::presented(target.resource, deleted.value)).into_response())
}

async fn delete_collection(
    state: &ApiState,
    target: &Target,
    query: &Query,
    caller: Caller<'_>,
) -> ApiResult<Response> {
    let list = list(
        state,
        target,
        &ListOptions::from_query(target.resource, query)?,
    )
    .await?;
    for item in list["items"].as_array().into_iter().flatten() {
        let name = item
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let namespace = item
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(String::from);
        let one = Target {
            resource: target.resource,
            namespace: namespace.or(target.namespace.clone()),
            name: Some(name.to_string()),
            subresource: None,
            proxy_path: None,
        };
        match delete(state, &one, &[], query, caller).await {
            Ok(_) => {}
            Err(e) if e.code == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    Ok(axum::Json(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
    )
    .into_response())
}
