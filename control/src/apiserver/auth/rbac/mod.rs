//! The RBAC authorizer: Roles, ClusterRoles, RoleBindings and ClusterRoleBindings with
//! Kubernetes' semantics ([`rules`]), decided from an in-memory index that a watch of the
//! store keeps current, never from a store read per request. [`bootstrap`] holds the policy
//! every cluster starts with.
//!
//! As upstream: a request at the cluster scope is allowed by the rules of the ClusterRoles
//! bound to the user by ClusterRoleBindings; a request in a namespace also by the rules the
//! namespace's RoleBindings grant (a Role of the namespace, or a ClusterRole). RBAC never
//! denies; it has no opinion, and the request is refused when no authorizer allows it.

pub mod bootstrap;
pub mod rules;

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use super::{Attributes, Authorizer, Decision, PolicyRule, Rules, User};
use crate::store::{self, Store};

/// The store names of the four kinds the index follows.
const ROLES: &str = "roles.rbac.authorization.k8s.io";
const CLUSTER_ROLES: &str = "clusterroles.rbac.authorization.k8s.io";
const ROLE_BINDINGS: &str = "rolebindings.rbac.authorization.k8s.io";
const CLUSTER_ROLE_BINDINGS: &str = "clusterrolebindings.rbac.authorization.k8s.io";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RoleRef {
    pub api_group: String,
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Subject {
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
}

impl Subject {
    /// Whether this subject of a binding in `binding_namespace` (empty for a
    /// ClusterRoleBinding) names `user`.
    fn applies_to(&self, user: &User, binding_namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => self.name == user.name,
            "Group" => user.in_group(&self.name),
            "ServiceAccount" => {
                let namespace = self
                    .namespace
                    .as_deref()
                    .filter(|ns| !ns.is_empty())
                    .unwrap_or(binding_namespace);
                user.service_account() == Some((namespace, self.name.as_str()))
            }
            _ => false,
        }
    }

    /// Upstream's `describeSubject`.
    fn describe(&self, binding_namespace: &str) -> String {
        match self.kind.as_str() {
            "ServiceAccount" => {
                let namespace = self
                    .namespace
                    .as_deref()
                    .filter(|ns| !ns.is_empty())
                    .unwrap_or(binding_namespace);
                format!("{} {:?}", self.kind, format!("{namespace}/{}", self.name))
            }
            _ => format!("{} {:?}", self.kind, self.name),
        }
    }
}

/// A RoleBinding or ClusterRoleBinding, as the index keeps it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Binding {
    #[serde(skip)]
    pub name: String,
    pub role_ref: RoleRef,
    pub subjects: Vec<Subject>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RoleObject {
    rules: Vec<PolicyRule>,
}

type RuleSet = Arc<[PolicyRule]>;

/// Why a binding's role reference grants nothing: upstream's messages.
#[derive(Debug, thiserror::Error)]
pub enum RoleRefError {
    #[error("clusterrole.rbac.authorization.k8s.io {0:?} not found")]
    ClusterRoleNotFound(String),
    #[error("role.rbac.authorization.k8s.io {0:?} not found")]
    RoleNotFound(String),
    #[error("unsupported role reference kind: {0:?}")]
    Kind(String),
}

#[derive(Default)]
struct Index {
    cluster_roles: HashMap<String, RuleSet>,
    /// Namespace → name → rules.
    roles: HashMap<String, HashMap<String, RuleSet>>,
    cluster_bindings: BTreeMap<String, Arc<Binding>>,
    /// Namespace → name → binding.
    bindings: HashMap<String, BTreeMap<String, Arc<Binding>>>,
}

impl Index {
    fn apply(
        &mut self,
        resource: &str,
        namespace: &str,
        name: &str,
        value: Option<&serde_json::Value>,
    ) {
        match resource {
            CLUSTER_ROLES | ROLES => {
                let rules = value.map(|v| -> RuleSet {
                    serde_json::from_value::<RoleObject>(v.clone())
                        .unwrap_or_default()
                        .rules
                        .into()
                });
                let map = if resource == CLUSTER_ROLES {
                    &mut self.cluster_roles
                } else {
                    self.roles.entry(namespace.to_string()).or_default()
                };
                match rules {
                    Some(rules) => {
                        map.insert(name.to_string(), rules);
                    }
                    None => {
                        map.remove(name);
                    }
                }
            }
            CLUSTER_ROLE_BINDINGS | ROLE_BINDINGS => {
                let binding = value.map(|v| {
                    let mut binding: Binding =
                        serde_json::from_value(v.clone()).unwrap_or_default();
                    binding.name = name.to_string();
                    Arc::new(binding)
                });
                let map = if resource == CLUSTER_ROLE_BINDINGS {
                    &mut self.cluster_bindings
                } else {
                    self.bindings.entry(namespace.to_string()).or_default()
                };
                match binding {
                    Some(binding) => {
                        map.insert(name.to_string(), binding);
                    }
                    None => {
                        map.remove(name);
                    }
                }
            }
            _ => {}
        }
    }

    fn clear(&mut self, resource: &str) {
        match resource {
            CLUSTER_ROLES => self.cluster_roles.clear(),
            ROLES => self.roles.clear(),
            CLUSTER_ROLE_BINDINGS => self.cluster_bindings.clear(),
            ROLE_BINDINGS => self.bindings.clear(),
            _ => {}
        }
    }

    /// The rules a role reference names from a binding in `namespace` (empty for a
    /// ClusterRoleBinding), or upstream's not-found message.
    fn role_rules(&self, role_ref: &RoleRef, namespace: &str) -> Result<RuleSet, RoleRefError> {
        match role_ref.kind.as_str() {
            "ClusterRole" => self
                .cluster_roles
                .get(&role_ref.name)
                .cloned()
                .ok_or_else(|| RoleRefError::ClusterRoleNotFound(role_ref.name.clone())),
            "Role" if !namespace.is_empty() => self
                .roles
                .get(namespace)
                .and_then(|roles| roles.get(&role_ref.name))
                .cloned()
                .ok_or_else(|| RoleRefError::RoleNotFound(role_ref.name.clone())),
            kind => Err(RoleRefError::Kind(kind.to_string())),
        }
    }

    /// Calls `visit` with each rule set bound to `user` at the cluster scope and, with a
    /// namespace, in it (upstream's `VisitRulesFor`), with where it came from; stops when
    /// `visit` returns false. Bindings to missing roles add to `errors`.
    fn visit(
        &self,
        user: &User,
        namespace: &str,
        errors: &mut Vec<String>,
        mut visit: impl FnMut(&dyn Fn() -> String, &[PolicyRule]) -> bool,
    ) {
        for binding in self.cluster_bindings.values() {
            let Some(subject) = binding.subjects.iter().find(|s| s.applies_to(user, "")) else {
                continue;
            };
            match self.role_rules(&binding.role_ref, "") {
                Ok(rules) => {
                    let source = || {
                        format!(
                            "ClusterRoleBinding {:?} of {} {:?} to {}",
                            binding.name,
                            binding.role_ref.kind,
                            binding.role_ref.name,
                            subject.describe("")
                        )
                    };
                    if !visit(&source, &rules) {
                        return;
                    }
                }
                Err(error) => errors.push(error.to_string()),
            }
        }
        if namespace.is_empty() {
            return;
        }
        let Some(bindings) = self.bindings.get(namespace) else {
            return;
        };
        for binding in bindings.values() {
            let Some(subject) = binding
                .subjects
                .iter()
                .find(|s| s.applies_to(user, namespace))
            else {
                continue;
            };
            match self.role_rules(&binding.role_ref, namespace) {
                Ok(rules) => {
                    let source = || {
                        format!(
                            "RoleBinding {:?} of {} {:?} to {}",
                            format!("{}/{namespace}", binding.name),
                            binding.role_ref.kind,
                            binding.role_ref.name,
                            subject.describe(namespace)
                        )
                    };
                    if !visit(&source, &rules) {
                        return;
                    }
                }
                Err(error) => errors.push(error.to_string()),
            }
        }
    }
}

/// The RBAC authorizer and its index.
pub struct Rbac {
    index: RwLock<Index>,
}

impl Rbac {
    /// Reads the policy from `store` and keeps following it. Returns once the first reading is
    /// complete, so that the server never decides from an empty index.
    pub async fn start(store: Arc<dyn Store>) -> store::Result<Arc<Self>> {
        let rbac = Arc::new(Self {
            index: RwLock::new(Index::default()),
        });
        store::follow::follow(
            store,
            &[CLUSTER_ROLES, ROLES, CLUSTER_ROLE_BINDINGS, ROLE_BINDINGS],
            &rbac,
        )
        .await?;
        Ok(rbac)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index
            .write()
            .expect("the RBAC index lock is not poisoned")
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index
            .read()
            .expect("the RBAC index lock is not poisoned")
    }

    /// Every rule `user` holds in `namespace` (cluster-wide ones included), for escalation
    /// checks; with the errors of bindings to missing roles.
    pub fn user_rules(&self, user: &User, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        self.read().visit(user, namespace, &mut errors, |_, set| {
            rules.extend_from_slice(set);
            true
        });
        (rules, errors)
    }

    /// The rules a binding's role reference grants, or why it cannot be resolved.
    pub fn role_rules(
        &self,
        role_ref: &RoleRef,
        namespace: &str,
    ) -> Result<Vec<PolicyRule>, RoleRefError> {
        self.read()
            .role_rules(role_ref, namespace)
            .map(|rules| rules.to_vec())
    }
}

impl store::follow::Sink for Rbac {
    fn reset(&self, resource: &str, objects: &[store::Object]) {
        let mut index = self.write();
        index.clear(resource);
        for object in objects {
            index.apply(
                resource,
                &object.key.namespace,
                &object.key.name,
                Some(&object.value),
            );
        }
    }

    fn apply(&self, resource: &str, key: &store::Key, value: Option<&serde_json::Value>) {
        self.write()
            .apply(resource, &key.namespace, &key.name, value);
    }
}

#[async_trait::async_trait]
impl Authorizer for Rbac {
    async fn authorize(&self, user: &User, attributes: &Attributes<'_>) -> Decision {
        let namespace = match attributes {
            Attributes::Resource(r) => r.namespace.unwrap_or(""),
            Attributes::NonResource { .. } => "",
        };
        let mut errors = Vec::new();
        let mut allowed_by = None;
        self.read()
            .visit(user, namespace, &mut errors, |source, rules| {
                if rules.iter().any(|rule| rules::allows(rule, attributes)) {
                    allowed_by = Some(source());
                    return false;
                }
                true
            });
        match allowed_by {
            Some(source) => Decision::Allow(format!("RBAC: allowed by {source}")),
            None if errors.is_empty() => Decision::NoOpinion(String::new()),
            None => Decision::NoOpinion(format!("RBAC: {}", aggregate(&errors))),
        }
    }

    async fn rules(&self, user: &User, namespace: &str) -> Rules {
        let (rules, errors) = self.user_rules(user, namespace);
        Rules {
            rules,
            incomplete: !errors.is_empty(),
            errors,
        }
    }
}

/// Upstream's aggregate error text: one error as it is, several in brackets.
fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}
