//! Roles and bindings (rbac.authorization.k8s.io): stored and served; the RBAC authorizer
//! arrives with the multi-tenancy work.

use k8s_openapi::api::rbac::v1;

use super::{KindStrategy, ObjectType, Typed};
use crate::apiserver::protobuf::{self, Message};

pub struct Role;
pub struct ClusterRole;
pub struct RoleBinding;
pub struct ClusterRoleBinding;

static ROLE: Typed<v1::Role> = Typed::new();
static CLUSTER_ROLE: Typed<v1::ClusterRole> = Typed::new();
static ROLE_BINDING: Typed<v1::RoleBinding> = Typed::new();
static CLUSTER_ROLE_BINDING: Typed<v1::ClusterRoleBinding> = Typed::new();

impl KindStrategy for Role {
    fn object_type(&self) -> &'static dyn ObjectType {
        &ROLE
    }

    fn protobuf(&self) -> Option<&'static Message> {
        Some(&protobuf::ROLE)
    }
}

impl KindStrategy for ClusterRole {
    fn object_type(&self) -> &'static dyn ObjectType {
        &CLUSTER_ROLE
    }

    /// A ClusterRole's message has the Role's fields (and an aggregation rule, not read).
    fn protobuf(&self) -> Option<&'static Message> {
        Some(&protobuf::ROLE)
    }
}

impl KindStrategy for RoleBinding {
    fn object_type(&self) -> &'static dyn ObjectType {
        &ROLE_BINDING
    }

    fn protobuf(&self) -> Option<&'static Message> {
        Some(&protobuf::ROLE_BINDING)
    }
}

impl KindStrategy for ClusterRoleBinding {
    fn object_type(&self) -> &'static dyn ObjectType {
        &CLUSTER_ROLE_BINDING
    }

    fn protobuf(&self) -> Option<&'static Message> {
        Some(&protobuf::ROLE_BINDING)
    }
}
