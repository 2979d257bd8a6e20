//! Who is asking (authentication) and may they (authorization), as kube-apiserver does it.
//!
//! - [`authn`]: bearer tokens (the admin's, `--token-auth-file`) and client certificates from
//!   the cluster CA (CN the user, O the groups). A request with both is the token's.
//! - [`impersonation`]: `Impersonate-User`, `-Group`, `-Uid` and `-Extra-*`, each allowed by
//!   the `impersonate` verb.
//! - [`node`]: the Node authorizer: nodes read what their pods use, and hold the static
//!   rules of a node agent.
//! - [`rbac`]: Roles, ClusterRoles and their bindings, decided from an in-memory index kept
//!   by a watch of the store, and the bootstrap policy.
//! - [`review`]: the access and rules reviews (`kubectl auth can-i`) and `kubectl auth whoami`.
//!
//! The middleware [`authenticate`] runs before every handler: anonymous requests get 401
//! (except [`is_public`] paths), impersonation is applied, and non-resource paths (`/api`,
//! `/openapi/v3`, `/metrics`…) are authorized with the lowercase method as the verb. Handlers
//! authorize resource requests themselves through [`authorize`], which answers Kubernetes'
//! exact Forbidden message.

pub mod authn;
pub mod impersonation;
pub mod join;
pub mod namespaces;
pub mod node;
pub mod oidc;
pub mod rbac;
pub mod review;
pub mod serviceaccount;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use authn::Authenticator;

use super::status::ApiError;

/// Everyone authenticated is in this group.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Members are allowed everything, before any authorizer is asked (as upstream's
/// privileged-groups authorizer).
pub const MASTERS: &str = "system:masters";
/// The prefix of ServiceAccounts' user names: `system:serviceaccount:NS:NAME`.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// A user in `groups` and, as every authenticated user, in `system:authenticated`.
    pub fn new(name: impl Into<String>, groups: impl IntoIterator<Item = String>) -> Self {
        let mut groups: Vec<String> = groups.into_iter().collect();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.to_string());
        }
        Self {
            name: name.into(),
            groups,
            ..Default::default()
        }
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The user as reviews and audit events present it (`authentication.k8s.io/v1`
    /// UserInfo).
    pub fn info(&self) -> serde_json::Value {
        let mut info = serde_json::json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            info["uid"] = serde_json::json!(self.uid);
        }
        if !self.extra.is_empty() {
            info["extra"] = serde_json::json!(self.extra);
        }
        info
    }

    /// `(namespace, name)` if this is a ServiceAccount.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        self.name
            .strip_prefix(SERVICE_ACCOUNT_PREFIX)?
            .split_once(':')
    }
}

/// The user a request was impersonated from: a request extension beside the [`User`] it acts
/// as, for the audit log.
#[derive(Debug, Clone)]
pub struct ImpersonatedBy(pub User);

/// What a request wants to do, in RBAC's terms.
#[derive(Debug, Clone, Copy)]
pub enum Attributes<'a> {
    Resource(ResourceAttributes<'a>),
    /// A path outside the resource tree (`/api`, `/healthz`, `/metrics`), with the lowercase
    /// method as its verb.
    NonResource {
        verb: &'a str,
        path: &'a str,
    },
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ResourceAttributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    /// `None` (or empty) at the cluster scope.
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

impl Attributes<'_> {
    pub fn verb(&self) -> &str {
        match self {
            Attributes::Resource(r) => r.verb,
            Attributes::NonResource { verb, .. } => verb,
        }
    }
}

/// An authorizer's answer, with its reason (for the Forbidden message, reviews and audit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(String),
    Deny(String),
    /// Neither: the next authorizer decides; after the last, the request is denied.
    NoOpinion(String),
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    pub fn reason(&self) -> &str {
        match self {
            Decision::Allow(r) | Decision::Deny(r) | Decision::NoOpinion(r) => r,
        }
    }
}

/// One rule as a rules review reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

/// The rules a user holds in a namespace, as far as the authorizer can tell.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub rules: Vec<PolicyRule>,
    /// Some rules could not be listed (a binding to a missing role, an authorizer that
    /// cannot enumerate): the list may be short.
    pub incomplete: bool,
    pub errors: Vec<String>,
}

/// Decides whether a user may perform a request. Asynchronous, so that an authorizer may read
/// what it needs.
#[async_trait::async_trait]
pub trait Authorizer: Send + Sync {
    async fn authorize(&self, user: &User, attributes: &Attributes<'_>) -> Decision;

    /// What `user` may do in `namespace` (empty: cluster-wide rules only), for
    /// SelfSubjectRulesReview.
    async fn rules(&self, user: &User, namespace: &str) -> Rules {
        let _ = (user, namespace);
        Rules {
            incomplete: true,
            ..Default::default()
        }
    }
}

/// Every authenticated user may do everything: for in-process tests of other parts.
pub struct AllowAuthenticated;

#[async_trait::async_trait]
impl Authorizer for AllowAuthenticated {
    async fn authorize(&self, _: &User, _: &Attributes<'_>) -> Decision {
        Decision::Allow(String::new())
    }
}

/// Authorizers asked in order, after the privileged group: the first that allows or denies
/// decides; if none does, the request is denied with their reasons.
pub struct Union(pub Vec<Arc<dyn Authorizer>>);

#[async_trait::async_trait]
impl Authorizer for Union {
    async fn authorize(&self, user: &User, attributes: &Attributes<'_>) -> Decision {
        if user.in_group(MASTERS) {
            return Decision::Allow(String::new());
        }
        let mut reasons = Vec::new();
        for authorizer in &self.0 {
            match authorizer.authorize(user, attributes).await {
                Decision::NoOpinion(reason) => {
                    if !reason.is_empty() {
                        reasons.push(reason);
                    }
                }
                decided => return decided,
            }
        }
        Decision::NoOpinion(reasons.join("; "))
    }

    async fn rules(&self, user: &User, namespace: &str) -> Rules {
        let mut all = Rules::default();
        if user.in_group(MASTERS) {
            all.rules.push(PolicyRule {
                verbs: vec!["*".into()],
                api_groups: vec!["*".into()],
                resources: vec!["*".into()],
                ..Default::default()
            });
            all.rules.push(PolicyRule {
                verbs: vec!["*".into()],
                non_resource_urls: vec!["*".into()],
                ..Default::default()
            });
        }
        for authorizer in &self.0 {
            let rules = authorizer.rules(user, namespace).await;
            all.rules.extend(rules.rules);
            all.incomplete |= rules.incomplete;
            all.errors.extend(rules.errors);
        }
        all
    }
}

/// Kubernetes' message for a denied request (upstream's `forbiddenMessage`).
pub fn forbidden_message(user: &User, attributes: &Attributes<'_>) -> String {
    match attributes {
        Attributes::NonResource { verb, path } => {
            format!("User {:?} cannot {verb} path {path:?}", user.name)
        }
        Attributes::Resource(r) => {
            let resource = match r.subresource {
                Some(sub) if !sub.is_empty() => format!("{}/{sub}", r.resource),
                _ => r.resource.to_string(),
            };
            match r.namespace.filter(|ns| !ns.is_empty()) {
                Some(ns) => format!(
                    "User {:?} cannot {} resource {resource:?} in API group {:?} in the namespace {ns:?}",
                    user.name, r.verb, r.group
                ),
                None => format!(
                    "User {:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
                    user.name, r.verb, r.group
                ),
            }
        }
    }
}

/// The 403 for a denied request, as kube-apiserver writes it: `pods is forbidden: User
/// "alice" cannot list resource "pods" in API group "" in the namespace "team-b"`, with the
/// authorizer's reason after a colon when it gave one.
pub fn forbidden(user: &User, attributes: &Attributes<'_>, reason: &str) -> ApiError {
    let mut message = forbidden_message(user, attributes);
    if !reason.is_empty() {
        message = format!("{message}: {reason}");
    }
    match attributes {
        Attributes::NonResource { .. } => ApiError::forbidden(format!("forbidden: {message}")),
        Attributes::Resource(r) => {
            let qualified = if r.group.is_empty() {
                r.resource.to_string()
            } else {
                format!("{}.{}", r.resource, r.group)
            };
            let full = match r.name.filter(|n| !n.is_empty()) {
                Some(name) => format!("{qualified} {name:?} is forbidden: {message}"),
                None => format!("{qualified} is forbidden: {message}"),
            };
            ApiError::forbidden_on(full, r.group, r.resource, r.name.unwrap_or(""))
        }
    }
}

/// Asks `authorizer`, and answers 403 unless it allows.
pub async fn authorize(
    authorizer: &dyn Authorizer,
    user: &User,
    attributes: &Attributes<'_>,
) -> Result<(), ApiError> {
    let decision = authorizer.authorize(user, attributes).await;
    super::audit::record_decision(decision.allowed(), decision.reason());
    match decision {
        Decision::Allow(_) => Ok(()),
        Decision::Deny(reason) | Decision::NoOpinion(reason) => {
            tracing::debug!(user = %user.name, ?attributes, %reason, "forbidden");
            Err(forbidden(user, attributes, &reason))
        }
    }
}

/// Paths anyone may read: health, readiness, the version, and the ServiceAccount issuer's
/// discovery documents.
pub fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/livez"
            | "/readyz"
            | "/version"
            | "/.well-known/openid-configuration"
            | "/openid/v1/jwks"
            | "/cacerts"
    )
}

/// Whether `path` names a resource (and is authorized by its handler) rather than being a
/// non-resource URL: `/api/v1/{resource}…` or `/apis/{group}/{version}/{resource}…`.
pub fn is_resource_path(path: &str) -> bool {
    let segments = path.split('/').filter(|s| !s.is_empty()).count();
    (path.starts_with("/api/") && segments >= 3) || (path.starts_with("/apis/") && segments >= 4)
}

/// What the middleware needs: who is who, and who may do what.
pub struct AuthState {
    pub authenticator: Arc<Authenticator>,
    pub authorizer: Arc<dyn Authorizer>,
}

/// Middleware: rejects requests without known credentials (401), applies impersonation,
/// authorizes non-resource paths, and stores the [`User`] in the request's extensions for the
/// handlers.
pub async fn authenticate(
    State(auth): State<Arc<AuthState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    if is_public(&path) {
        return next.run(request).await;
    }
    let Some(user) = auth.authenticator.authenticate(&request) else {
        return ApiError::unauthorized().into_response();
    };
    let user = match impersonation::apply(&*auth.authorizer, user, request.headers()).await {
        Ok(impersonation::Outcome::Impersonating { user, by }) => {
            request.extensions_mut().insert(ImpersonatedBy(by));
            user
        }
        Ok(impersonation::Outcome::Itself(user)) => user,
        Err(error) => return error.into_response(),
    };
    if !is_resource_path(&path) {
        let verb = request.method().as_str().to_ascii_lowercase();
        let attributes = Attributes::NonResource {
            verb: &verb,
            path: &path,
        };
        if let Err(error) = authorize(&*auth.authorizer, &user, &attributes).await {
            return error.into_response();
        }
    }
    request.extensions_mut().insert(user);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> User {
        User::new("alice", [])
    }

    #[test]
    fn forbidden_messages_are_upstreams() {
        let list_pods = Attributes::Resource(ResourceAttributes {
            verb: "list",
            resource: "pods",
            namespace: Some("team-b"),
            ..Default::default()
        });
        assert_eq!(
            forbidden(&alice(), &list_pods, "").message,
            r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "team-b""#
        );
        let get_scale = Attributes::Resource(ResourceAttributes {
            verb: "get",
            group: "apps",
            resource: "deployments",
            subresource: Some("scale"),
            namespace: Some("a"),
            name: Some("web"),
        });
        assert_eq!(
            forbidden(&alice(), &get_scale, "").message,
            r#"deployments.apps "web" is forbidden: User "alice" cannot get resource "deployments/scale" in API group "apps" in the namespace "a""#
        );
        let nodes = Attributes::Resource(ResourceAttributes {
            verb: "watch",
            resource: "nodes",
            ..Default::default()
        });
        assert_eq!(
            forbidden(&alice(), &nodes, "RBAC: role missing").message,
            r#"nodes is forbidden: User "alice" cannot watch resource "nodes" in API group "" at the cluster scope: RBAC: role missing"#
        );
        let path = Attributes::NonResource {
            verb: "get",
            path: "/metrics",
        };
        assert_eq!(
            forbidden(&alice(), &path, "").message,
            r#"forbidden: User "alice" cannot get path "/metrics""#
        );
    }

    #[test]
    fn resource_paths_are_told_from_the_others() {
        for path in [
            "/api/v1/pods",
            "/api/v1/namespaces/a/pods/b/log",
            "/apis/apps/v1/deployments",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        ] {
            assert!(is_resource_path(path), "{path}");
        }
        for path in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/openapi/v3",
            "/metrics",
        ] {
            assert!(!is_resource_path(path), "{path}");
        }
    }

    #[test]
    fn service_accounts_are_read_from_the_name() {
        let sa = User::new("system:serviceaccount:team-a:builder", []);
        assert_eq!(sa.service_account(), Some(("team-a", "builder")));
        assert_eq!(alice().service_account(), None);
        assert!(alice().in_group(AUTHENTICATED));
    }
}
