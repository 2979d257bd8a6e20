//! API errors and where they become `metav1.Status` responses: the one place that maps a
//! failure to an HTTP code and a Kubernetes reason. Only 5xx causes are logged as errors.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bosun_api::resources::Resource;
use serde_json::{Value, json};

use crate::store;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// A write lost a race with another (its revision precondition, taken from the read it
    /// was computed from, failed): the read-modify-write may be tried again.
    stale: bool,
}

/// One invalid field, as `details.causes` lists them.
pub struct Cause {
    pub field: String,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub(crate) fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            stale: false,
        }
    }

    fn with_details(mut self, resource: &Resource, name: &str) -> Self {
        let mut details = json!({"name": name, "kind": resource.plural});
        if !resource.group.is_empty() {
            details["group"] = json!(resource.group);
        }
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    /// Forbidden, with the details naming what was refused (`kind` is the resource's plural,
    /// as upstream's `NewForbidden` writes it).
    pub fn forbidden_on(message: impl Into<String>, group: &str, plural: &str, name: &str) -> Self {
        let mut error = Self::forbidden(message);
        let mut details = json!({"name": name, "kind": plural});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        error.details = Some(details);
        error
    }

    pub fn not_found_path(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn not_found(resource: &Resource, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} {name:?} not found", qualified(resource)),
        )
        .with_details(resource, name)
    }

    pub fn already_exists(resource: &Resource, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} {name:?} already exists", qualified(resource)),
        )
        .with_details(resource, name)
    }

    /// Upstream's `NewForbidden` for an admission refusal: `pods "p" is forbidden: why`.
    pub fn forbidden_by(resource: &Resource, name: &str, why: &str) -> Self {
        Self::forbidden_on(
            format!("{} {name:?} is forbidden: {why}", qualified(resource)),
            resource.group,
            resource.plural,
            name,
        )
    }

    pub fn conflict(resource: &Resource, name: &str, why: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: {why}",
                qualified(resource)
            ),
        )
        .with_details(resource, name)
    }

    /// A write that lost a race: another write came in since the object was read.
    pub fn stale_write(resource: &Resource, name: &str) -> Self {
        Self {
            stale: true,
            ..Self::conflict(
                resource,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        }
    }

    /// A client's resourceVersion precondition does not hold: the same answer as a stale
    /// write, but trying again cannot help.
    pub fn precondition_failed(resource: &Resource, name: &str) -> Self {
        Self {
            stale: false,
            ..Self::stale_write(resource, name)
        }
    }

    /// Whether a read-modify-write that got this error may be tried again.
    pub fn is_stale_write(&self) -> bool {
        self.stale
    }

    /// 422 with the invalid fields, worded as Kubernetes does:
    /// `Pod "x" is invalid: spec.containers[0].name: Required value`.
    /// Server-side apply met fields other managers own (409, reason Conflict).
    pub fn apply_conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", message)
    }

    pub fn invalid(resource: &Resource, name: &str, causes: Vec<Cause>) -> Self {
        let summary: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let message = match summary.len() {
            1 => format!("{} {name:?} is invalid: {}", resource.kind, summary[0]),
            _ => format!(
                "{} {name:?} is invalid: [{}]",
                resource.kind,
                summary.join(", ")
            ),
        };
        let mut error = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
            .with_details(resource, name);
        if let Some(details) = error.details.as_mut() {
            details["kind"] = json!(resource.kind);
            details["causes"] = causes
                .iter()
                .map(|c| json!({"reason": "FieldValueInvalid", "message": c.message, "field": c.field}))
                .collect();
        }
        error
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            message,
        )
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type}"),
        )
    }

    /// A body in a format Bosun reads only in part (protobuf), with what it could not read.
    pub fn unsupported_media_type_because(content_type: &str, why: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body of the request ({content_type}) could not be read: {why}"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// Maps a store error for an object of `resource` named `name`.
    pub fn from_store(error: store::Error, resource: &Resource, name: &str) -> Self {
        use store::Error as E;
        match error {
            E::NotFound { .. } => Self::not_found(resource, name),
            E::AlreadyExists { .. } => Self::already_exists(resource, name),
            E::Conflict { .. } => Self::stale_write(resource, name),
            E::Gone {
                requested,
                compacted,
            } => Self::gone(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            E::TooNew { requested, current } => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            ),
            E::InvalidKey { reason, .. } => Self::invalid(
                resource,
                name,
                vec![Cause {
                    field: "metadata.name".into(),
                    message: format!("Invalid value: {name:?}: {reason}"),
                }],
            ),
            E::InvalidValue { reason, .. } => Self::bad_request(reason),
            E::TooLarge { size, .. } => Self::too_large(format!(
                "the object is {size} bytes, more than the limit of {} bytes",
                store::MAX_OBJECT_BYTES
            )),
            E::InvalidContinue(reason) => {
                Self::bad_request(format!("invalid continue token: {reason}"))
            }
            error if error.is_unavailable() => Self::unavailable(error.to_string()),
            error => Self::internal(error.to_string()),
        }
    }

    pub fn status_object(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// `pods`, or `deployments.apps`, as Kubernetes names a resource in messages.
fn qualified(resource: &Resource) -> String {
    if resource.group.is_empty() {
        resource.plural.to_string()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code.is_server_error() {
            tracing::error!(code = self.code.as_u16(), reason = self.reason, message = %self.message, "request failed");
        }
        (self.code, axum::Json(self.status_object())).into_response()
    }
}
