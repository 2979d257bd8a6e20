//! Roles and bindings (rbac.authorization.k8s.io): stored and served; the RBAC authorizer
//! arrives with the multi-tenancy work. A ClusterRole's message has the Role's fields (and an
//! aggregation rule, not read), a ClusterRoleBinding's the RoleBinding's.

use k8s_openapi::api::rbac::v1;

use super::Plain;
use crate::apiserver::protobuf;

pub static ROLE: Plain<v1::Role> = Plain::new(&[], Some(&protobuf::ROLE));
pub static CLUSTER_ROLE: Plain<v1::ClusterRole> = Plain::new(&[], Some(&protobuf::ROLE));
pub static ROLE_BINDING: Plain<v1::RoleBinding> = Plain::new(&[], Some(&protobuf::ROLE_BINDING));
pub static CLUSTER_ROLE_BINDING: Plain<v1::ClusterRoleBinding> =
    Plain::new(&[], Some(&protobuf::ROLE_BINDING));
