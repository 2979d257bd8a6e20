//! RBAC's escalation prevention, as upstream's role and binding storage does it: a user may
//! only write a Role or ClusterRole whose rules they already hold (in that namespace, or
//! cluster-wide), unless they may `escalate` it; and may only bind a role whose rules they
//! hold, unless they may `bind` it. `system:masters` may do both.

use std::sync::Arc;

use serde_json::Value;

use super::{Operation, Plugin, Request};
use crate::apiserver::auth::rbac::{Rbac, RoleRef, rules};
use crate::apiserver::auth::{
    Attributes, Authorizer, MASTERS, PolicyRule, ResourceAttributes, User,
};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::store::Store;

const GROUP: &str = "rbac.authorization.k8s.io";

pub struct RbacEscalation {
    pub rbac: Arc<Rbac>,
    pub authorizer: Arc<dyn Authorizer>,
}

#[async_trait::async_trait]
impl Plugin for RbacEscalation {
    fn name(&self) -> &'static str {
        "RBACEscalation"
    }

    async fn validate(&self, _store: &dyn Store, request: &Request<'_>) -> ApiResult<()> {
        if request.resource.group != GROUP
            || request.subresource.is_some()
            || request.operation == Operation::Delete
            || request.user.in_group(MASTERS)
        {
            return Ok(());
        }
        let namespace = request.namespace.unwrap_or("");
        match request.resource.kind {
            "Role" | "ClusterRole" => self.check_role(request, namespace).await,
            "RoleBinding" | "ClusterRoleBinding" => self.check_binding(request, namespace).await,
            _ => Ok(()),
        }
    }
}

impl RbacEscalation {
    async fn allowed(
        &self,
        user: &User,
        verb: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> bool {
        let attributes = Attributes::Resource(ResourceAttributes {
            verb,
            group: GROUP,
            resource: plural,
            subresource: None,
            namespace: Some(namespace).filter(|ns| !ns.is_empty()),
            name: Some(name),
        });
        self.authorizer.authorize(user, &attributes).await.allowed()
    }

    async fn check_role(&self, request: &Request<'_>, namespace: &str) -> ApiResult<()> {
        let wanted = rules_of(request.object);
        if let Some(old) = request.old
            && rules_of(old) == wanted
            && old.get("aggregationRule") == request.object.get("aggregationRule")
        {
            return Ok(());
        }
        let plural = request.resource.plural;
        if self
            .allowed(request.user, "escalate", plural, namespace, request.name)
            .await
        {
            return Ok(());
        }
        // Only who holds everything may create a role that aggregates others' rules.
        let wanted = if request
            .object
            .get("aggregationRule")
            .is_some_and(|a| !a.is_null())
        {
            vec![PolicyRule {
                verbs: vec!["*".into()],
                api_groups: vec!["*".into()],
                resources: vec!["*".into()],
                ..Default::default()
            }]
        } else {
            wanted
        };
        self.confirm_no_escalation(request, namespace, &wanted)
    }

    async fn check_binding(&self, request: &Request<'_>, namespace: &str) -> ApiResult<()> {
        let role_ref: RoleRef =
            serde_json::from_value(request.object["roleRef"].clone()).unwrap_or_default();
        if let Some(old) = request.old
            && old.get("roleRef") == request.object.get("roleRef")
            && old.get("subjects") == request.object.get("subjects")
        {
            return Ok(());
        }
        let role_plural = match role_ref.kind.as_str() {
            "ClusterRole" => "clusterroles",
            _ => "roles",
        };
        if self
            .allowed(request.user, "bind", role_plural, namespace, &role_ref.name)
            .await
        {
            return Ok(());
        }
        let granted = self
            .rbac
            .role_rules(&role_ref, namespace)
            .map_err(|why| self.forbidden(request, why.to_string()))?;
        self.confirm_no_escalation(request, namespace, &granted)
    }

    fn confirm_no_escalation(
        &self,
        request: &Request<'_>,
        namespace: &str,
        wanted: &[PolicyRule],
    ) -> ApiResult<()> {
        let (held, errors) = self.rbac.user_rules(request.user, namespace);
        let missing = rules::uncovered(&held, wanted);
        if missing.is_empty() {
            return Ok(());
        }
        let groups = request
            .user
            .groups
            .iter()
            .map(|g| format!("{g:?}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut message = format!(
            "user {:?} (groups=[{groups}]) is attempting to grant RBAC permissions not currently held:\n{}",
            request.user.name,
            missing
                .iter()
                .map(rules::describe)
                .collect::<Vec<_>>()
                .join("\n")
        );
        if !errors.is_empty() {
            message.push_str(&format!("; resolution errors: {}", errors.join(", ")));
        }
        Err(self.forbidden(request, message))
    }

    fn forbidden(&self, request: &Request<'_>, why: String) -> ApiError {
        let plural = request.resource.plural;
        ApiError::forbidden_on(
            format!("{plural}.{GROUP} {:?} is forbidden: {why}", request.name),
            GROUP,
            plural,
            request.name,
        )
    }
}

fn rules_of(object: &Value) -> Vec<PolicyRule> {
    serde_json::from_value(object["rules"].clone()).unwrap_or_default()
}
