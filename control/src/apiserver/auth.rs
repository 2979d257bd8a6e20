//! Who is asking (authentication) and may they (authorization).
//!
//! Authentication: bearer tokens, compared by SHA-256 hash (tokens are never kept in clear).
//! Today the only identity is the bootstrap admin (`system:masters`). Authorization is a trait
//! so that RBAC (the multi-tenancy work) replaces [`AllowAuthenticated`] without touching the
//! handlers.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use subtle::ConstantTimeEq;

use super::status::ApiError;
use crate::store::bootstrap::hash_token;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// What a request wants to do, in RBAC's terms.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// Decides whether a user may perform a request. Asynchronous, so that an authorizer may read
/// what it needs (RBAC's roles and bindings, from a cache kept by a watch or from the store).
#[async_trait::async_trait]
pub trait Authorizer: Send + Sync {
    /// `Err` says why not.
    async fn authorize(&self, user: &User, request: &Attributes<'_>) -> Result<(), String>;
}

/// Every authenticated user may do everything: the policy until RBAC is enforced.
pub struct AllowAuthenticated;

#[async_trait::async_trait]
impl Authorizer for AllowAuthenticated {
    async fn authorize(&self, _: &User, _: &Attributes<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// Known bearer tokens, by hash.
pub struct Authenticator {
    tokens: Vec<(String, User)>,
}

impl Authenticator {
    /// An authenticator that knows the bootstrap admin's token hash.
    pub fn with_admin(admin_token_hash: String) -> Self {
        Self {
            tokens: vec![(
                admin_token_hash,
                User {
                    name: "system:admin".into(),
                    groups: vec!["system:masters".into(), "system:authenticated".into()],
                },
            )],
        }
    }

    pub fn authenticate(&self, bearer: &str) -> Option<User> {
        let presented = hash_token(bearer);
        self.tokens
            .iter()
            .find(|(hash, _)| bool::from(hash.as_bytes().ct_eq(presented.as_bytes())))
            .map(|(_, user)| user.clone())
    }
}

/// Paths anyone may read: health, readiness and the version.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
}

/// Middleware: rejects requests without a known bearer token (401), and stores the [`User`] in
/// the request's extensions for the handlers.
pub async fn authenticate(
    State(authenticator): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    if is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let user = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| authenticator.authenticate(token.trim()));
    match user {
        Some(user) => {
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        None => ApiError::unauthorized().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_admin_token_authenticates() {
        let auth = Authenticator::with_admin(hash_token("secret"));
        assert_eq!(auth.authenticate("secret").unwrap().name, "system:admin");
        assert!(auth.authenticate("secreT").is_none());
        assert!(auth.authenticate("").is_none());
    }
}
