//! The pod a container runs in, as the downward API tells it.
//!
//! Kubernetes (and Bosun) pass a pod's identity to its containers through environment
//! variables the manifest maps with `valueFrom.fieldRef`. [`Pod::current`] reads the
//! conventional names; a manifest that wants them all says:
//!
//! ```yaml
//! env:
//! - name: POD_NAME
//!   valueFrom: {fieldRef: {fieldPath: metadata.name}}
//! - name: POD_NAMESPACE
//!   valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
//! - name: POD_UID
//!   valueFrom: {fieldRef: {fieldPath: metadata.uid}}
//! - name: POD_IP
//!   valueFrom: {fieldRef: {fieldPath: status.podIP}}
//! - name: NODE_NAME
//!   valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
//! - name: SERVICE_ACCOUNT
//!   valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}
//! ```

use std::net::IpAddr;

/// What the container knows about its pod. A field is `None` when the manifest does not map
/// it (or maps it to an empty value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pod {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub ip: Option<IpAddr>,
    pub node: Option<String>,
    pub service_account: Option<String>,
}

impl Pod {
    /// The pod of this container, from `POD_NAME`, `POD_NAMESPACE`, `POD_UID`, `POD_IP`,
    /// `NODE_NAME` and `SERVICE_ACCOUNT`.
    pub fn current() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The pod described by `lookup` (an environment: a variable's name → its value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        Self {
            name: get("POD_NAME"),
            namespace: get("POD_NAMESPACE"),
            uid: get("POD_UID"),
            ip: get("POD_IP").and_then(|ip| ip.parse().ok()),
            node: get("NODE_NAME"),
            service_account: get("SERVICE_ACCOUNT"),
        }
    }

    /// `namespace/name`, or what is known of it (`?` for a missing part).
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.namespace.as_deref().unwrap_or("?"),
            self.name.as_deref().unwrap_or("?")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_downward_api_names_and_skips_empty_or_bad_values() {
        let env = |name: &str| match name {
            "POD_NAME" => Some("web-1".to_string()),
            "POD_NAMESPACE" => Some("shop".to_string()),
            "POD_IP" => Some("10.88.0.7".to_string()),
            "NODE_NAME" => Some(String::new()),
            "POD_UID" => Some("not checked".to_string()),
            _ => None,
        };
        let pod = Pod::from_lookup(env);
        assert_eq!(pod.name.as_deref(), Some("web-1"));
        assert_eq!(pod.ip, Some("10.88.0.7".parse().unwrap()));
        assert_eq!(pod.node, None);
        assert_eq!(pod.service_account, None);
        assert_eq!(pod.key(), "shop/web-1");
        let bad_ip = Pod::from_lookup(|n| (n == "POD_IP").then(|| "x".to_string()));
        assert_eq!(bad_ip.ip, None);
        assert_eq!(bad_ip.key(), "?/?");
    }
}
