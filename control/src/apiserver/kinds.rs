//! The k8s-openapi type behind each served kind, for the parts of the API server that need
//! the type itself rather than JSON: strict decoding in admission, and the type schemas of
//! the OpenAPI documents. A [`KindVisitor`] is called with the kind's type.

use k8s_openapi::schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Something to do with a kind's Rust type.
pub trait KindVisitor {
    type Output;
    fn visit<T: DeserializeOwned + Serialize + JsonSchema>(self) -> Self::Output;
}

/// Calls `visitor` with the type of `kind` in `group`; `None` for kinds without one.
pub fn visit<V: KindVisitor>(group: &str, kind: &str, visitor: V) -> Option<V::Output> {
    use k8s_openapi::api::{
        apps, autoscaling, batch, coordination, core, discovery, events, node, rbac,
    };
    Some(match (group, kind) {
        ("", "Namespace") => visitor.visit::<core::v1::Namespace>(),
        ("", "Pod") => visitor.visit::<core::v1::Pod>(),
        ("", "Node") => visitor.visit::<core::v1::Node>(),
        ("", "Event") => visitor.visit::<core::v1::Event>(),
        ("", "ConfigMap") => visitor.visit::<core::v1::ConfigMap>(),
        ("", "Secret") => visitor.visit::<core::v1::Secret>(),
        ("", "Service") => visitor.visit::<core::v1::Service>(),
        ("", "Endpoints") => visitor.visit::<core::v1::Endpoints>(),
        ("", "ServiceAccount") => visitor.visit::<core::v1::ServiceAccount>(),
        ("", "ResourceQuota") => visitor.visit::<core::v1::ResourceQuota>(),
        ("", "LimitRange") => visitor.visit::<core::v1::LimitRange>(),
        ("apps", "Deployment") => visitor.visit::<apps::v1::Deployment>(),
        ("apps", "ReplicaSet") => visitor.visit::<apps::v1::ReplicaSet>(),
        ("batch", "Job") => visitor.visit::<batch::v1::Job>(),
        ("batch", "CronJob") => visitor.visit::<batch::v1::CronJob>(),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            visitor.visit::<autoscaling::v2::HorizontalPodAutoscaler>()
        }
        ("coordination.k8s.io", "Lease") => visitor.visit::<coordination::v1::Lease>(),
        ("rbac.authorization.k8s.io", "Role") => visitor.visit::<rbac::v1::Role>(),
        ("rbac.authorization.k8s.io", "RoleBinding") => visitor.visit::<rbac::v1::RoleBinding>(),
        ("rbac.authorization.k8s.io", "ClusterRole") => visitor.visit::<rbac::v1::ClusterRole>(),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            visitor.visit::<rbac::v1::ClusterRoleBinding>()
        }
        ("discovery.k8s.io", "EndpointSlice") => visitor.visit::<discovery::v1::EndpointSlice>(),
        ("events.k8s.io", "Event") => visitor.visit::<events::v1::Event>(),
        ("node.k8s.io", "RuntimeClass") => visitor.visit::<node::v1::RuntimeClass>(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Name;

    impl KindVisitor for Name {
        type Output = String;
        fn visit<T: DeserializeOwned + Serialize + JsonSchema>(self) -> String {
            T::schema_name().into_owned()
        }
    }

    #[test]
    fn every_served_kind_has_its_type() {
        for resource in bosun_api::resources::RESOURCES {
            let name = visit(resource.group, resource.kind, Name)
                .unwrap_or_else(|| panic!("no type for {}", resource.kind));
            assert!(name.ends_with(&format!(".{}", resource.kind)), "{name}");
        }
    }
}
