//! ServiceAccounts, and their `token` subresource: TokenRequest (`kubectl create token`)
//! issues a JWT for the account, for the audiences asked (the API server's by default), for
//! `expirationSeconds` (an hour by default, at least 10 minutes), bound to a Pod or a Secret
//! of the namespace when asked. The signing and the checking are `auth::serviceaccount`'s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bosun_api::resources::find;
use k8s_openapi::api::core::v1;
use serde_json::{Value, json};

use super::{Cell, KindStrategy, ObjectType, Subresource, Typed, col, items};
use crate::apiserver::ApiState;
use crate::apiserver::auth::serviceaccount::{
    Claims, DEFAULT_EXPIRATION, KubernetesClaims, MAX_EXPIRATION, MIN_EXPIRATION, Ref,
};
use crate::apiserver::protobuf::{self, Message};
use crate::apiserver::read::get;
use crate::apiserver::request::Target;
use crate::apiserver::status::{ApiError, ApiResult};

pub struct ServiceAccount;

static TYPE: Typed<v1::ServiceAccount> = Typed::new();

impl KindStrategy for ServiceAccount {
    fn object_type(&self) -> &dyn ObjectType {
        &TYPE
    }

    fn subresources(&self) -> &'static [Subresource] {
        &[Subresource {
            name: "token",
            group: "authentication.k8s.io",
            version: "v1",
            kind: "TokenRequest",
            verbs: &["create"],
            writes: &[],
        }]
    }

    fn columns(&self) -> &'static [super::Column] {
        COLUMNS
    }

    fn protobuf(&self) -> Option<&'static Message> {
        Some(&protobuf::SERVICE_ACCOUNT)
    }
}

static COLUMNS: &[super::Column] = &[col("SECRETS", "integer", Cell::Computed(secrets))];

fn secrets(account: &Value) -> Value {
    json!(items(account, "/secrets").len())
}

/// `POST serviceaccounts/{name}/token`: a TokenRequest answered with its token.
pub async fn request_token(
    state: &ApiState,
    user: &crate::apiserver::auth::User,
    target: &Target,
    body: Value,
) -> ApiResult<Response> {
    let tokens = state
        .service_accounts
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("this server issues no ServiceAccount tokens"))?;
    let namespace = target.namespace.as_deref().unwrap_or_default();
    let account = get(state, target).await?;
    let spec = &body["spec"];
    let audiences: Vec<String> = match spec["audiences"].as_array() {
        Some(list) if !list.is_empty() => list
            .iter()
            .map(|a| a.as_str().unwrap_or_default().to_string())
            .collect(),
        _ => tokens.api_audiences.clone(),
    };
    let expiration = match spec["expirationSeconds"].as_i64() {
        None => DEFAULT_EXPIRATION,
        Some(seconds) if seconds < MIN_EXPIRATION.as_secs() as i64 => {
            return Err(invalid(
                "spec.expirationSeconds",
                &format!(
                    "Invalid value: {seconds}: may not specify a duration less than 10 minutes"
                ),
            ));
        }
        Some(seconds) => Duration::from_secs(seconds as u64).min(MAX_EXPIRATION),
    };
    let mut claims_pod = None;
    let mut claims_secret = None;
    let bound = spec.get("boundObjectRef").filter(|b| !b.is_null());
    let mut bound_pod = None;
    if let Some(bound) = bound {
        let kind = bound["kind"].as_str().unwrap_or_default();
        let plural = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            other => {
                return Err(invalid(
                    "spec.boundObjectRef.kind",
                    &format!("Unsupported value: {other:?}: supported values: \"Pod\", \"Secret\""),
                ));
            }
        };
        let name = bound["name"].as_str().unwrap_or_default();
        let resource = find("", "v1", plural).expect("registered");
        let object = crate::apiserver::read::get(
            state,
            &Target {
                resource,
                namespace: Some(namespace.to_string()),
                name: Some(name.to_string()),
                subresource: None,
                proxy_path: None,
            },
        )
        .await?;
        let uid = object.value["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(wanted) = bound["uid"].as_str().filter(|u| !u.is_empty())
            && wanted != uid
        {
            return Err(ApiError::conflict(
                resource,
                name,
                &format!(
                    "the UID in the bound object reference ({wanted}) does not match the {kind}'s ({uid})"
                ),
            ));
        }
        let reference = Some(Ref {
            name: name.to_string(),
            uid,
        });
        if kind == "Pod" {
            bound_pod = Some(object.value);
        }
        match kind {
            "Pod" => claims_pod = reference,
            _ => claims_secret = reference,
        }
    }
    crate::apiserver::admission::noderestriction::check_token_request(
        user,
        target.name(),
        bound.and_then(|b| b["kind"].as_str()),
        bound_pod.as_ref(),
    )?;
    let now = SystemTime::now();
    let issued_at = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let account_name = target.name();
    let claims = Claims {
        iss: tokens.signer.issuer.clone(),
        sub: format!("system:serviceaccount:{namespace}:{account_name}"),
        aud: audiences.clone(),
        exp: issued_at + expiration.as_secs() as i64,
        iat: issued_at,
        nbf: issued_at,
        jti: crate::apiserver::admission::new_uid(),
        kubernetes: KubernetesClaims {
            namespace: namespace.to_string(),
            serviceaccount: Ref {
                name: account_name.to_string(),
                uid: account.value["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            },
            pod: claims_pod,
            secret: claims_secret,
        },
    };
    let token = tokens.signer.sign(&claims);
    let mut answer = body.clone();
    answer["apiVersion"] = json!("authentication.k8s.io/v1");
    answer["kind"] = json!("TokenRequest");
    answer["metadata"] = json!({
        "name": account_name,
        "namespace": namespace,
        "creationTimestamp": bosun_api::time::rfc3339(now),
    });
    answer["spec"]["audiences"] = json!(audiences);
    answer["spec"]["expirationSeconds"] = json!(expiration.as_secs());
    answer["status"] = json!({
        "token": token,
        "expirationTimestamp": bosun_api::time::rfc3339(now + expiration),
    });
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

fn invalid(field: &str, message: &str) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("TokenRequest.authentication.k8s.io is invalid: {field}: {message}"),
    );
    error.details = Some(json!({
        "kind": "TokenRequest",
        "group": "authentication.k8s.io",
        "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}],
    }));
    error
}
