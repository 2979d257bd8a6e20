//! Roles and bindings (rbac.authorization.k8s.io). Their names are path segments, not DNS
//! names (`system:node`), as upstream's `ValidateRBACName`. The authorizer that reads them is
//! `auth::rbac`; escalation prevention is the `RBACEscalation` admission plugin. A
//! ClusterRole's protobuf message has the Role's fields (and an aggregation rule, not read),
//! a ClusterRoleBinding's the RoleBinding's.

use k8s_openapi::api::rbac::v1;

use super::{Column, KindStrategy, ObjectType, Typed};
use crate::apiserver::protobuf::{self, Message};

/// A strategy for the four RBAC kinds.
pub struct Rbac<T> {
    object_type: Typed<T>,
    protobuf: &'static Message,
}

impl<T> Rbac<T> {
    const fn new(protobuf: &'static Message) -> Self {
        Self {
            object_type: Typed::new(),
            protobuf,
        }
    }
}

impl<T> KindStrategy for Rbac<T>
where
    Typed<T>: ObjectType,
{
    fn object_type(&self) -> &dyn ObjectType {
        &self.object_type
    }

    fn check_name(&self, name: &str) -> Result<(), bosun_api::names::NameError> {
        bosun_api::names::check_path_segment_name(name)
    }

    fn columns(&self) -> &'static [Column] {
        &[]
    }

    fn protobuf(&self) -> Option<&'static Message> {
        Some(self.protobuf)
    }
}

pub static ROLE: Rbac<v1::Role> = Rbac::new(&protobuf::ROLE);
pub static CLUSTER_ROLE: Rbac<v1::ClusterRole> = Rbac::new(&protobuf::ROLE);
pub static ROLE_BINDING: Rbac<v1::RoleBinding> = Rbac::new(&protobuf::ROLE_BINDING);
pub static CLUSTER_ROLE_BINDING: Rbac<v1::ClusterRoleBinding> = Rbac::new(&protobuf::ROLE_BINDING);
