//! The resource registry: every kind the API server serves, with what the generic REST code
//! needs to know about it (group, version, plural, scope, short names, subresources, the
//! extra field selectors it supports). How each kind behaves (defaults, validation, table
//! columns) is its strategy in the API server (`control/src/apiserver/kinds/`).
//!
//! Adding a kind is one entry here plus its strategy there.

/// One served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub status: bool,
    pub scale: bool,
    /// Field selectors beyond `metadata.name` and `metadata.namespace`.
    pub fields: &'static [&'static str],
    /// Where the objects are stored when two API versions serve one resource (events).
    pub storage: Option<&'static str>,
}

impl Resource {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store's name for this resource: `pods`, `deployments.apps`.
    pub fn storage_name(&self) -> String {
        if let Some(storage) = self.storage {
            return storage.to_string();
        }
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether `field` may be used in a field selector on this resource.
    pub fn supports_field(&self, field: &str) -> bool {
        matches!(field, "metadata.name")
            || (self.namespaced && field == "metadata.namespace")
            || self.fields.contains(&field)
    }
}

const NONE: &[&str] = &[];
const ALL: &[&str] = &["all"];

const fn resource(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
) -> Resource {
    Resource {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        short_names: NONE,
        categories: NONE,
        status: false,
        scale: false,
        fields: NONE,
        storage: None,
    }
}

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
];

/// Every resource Bosun serves.
pub static RESOURCES: &[Resource] = &[
    Resource {
        short_names: &["ns"],
        status: true,
        fields: &["status.phase"],
        ..resource("", "v1", "Namespace", "namespaces", "namespace", false)
    },
    Resource {
        short_names: &["po"],
        categories: ALL,
        status: true,
        fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ..resource("", "v1", "Pod", "pods", "pod", true)
    },
    Resource {
        short_names: &["no"],
        status: true,
        fields: &["spec.unschedulable"],
        ..resource("", "v1", "Node", "nodes", "node", false)
    },
    Resource {
        short_names: &["ev"],
        fields: EVENT_FIELDS,
        storage: Some("events"),
        ..resource("", "v1", "Event", "events", "event", true)
    },
    Resource {
        short_names: &["cm"],
        ..resource("", "v1", "ConfigMap", "configmaps", "configmap", true)
    },
    Resource {
        fields: &["type"],
        ..resource("", "v1", "Secret", "secrets", "secret", true)
    },
    Resource {
        short_names: &["svc"],
        categories: ALL,
        status: true,
        ..resource("", "v1", "Service", "services", "service", true)
    },
    Resource {
        short_names: &["ep"],
        ..resource("", "v1", "Endpoints", "endpoints", "endpoints", true)
    },
    Resource {
        short_names: &["sa"],
        ..resource(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            "serviceaccount",
            true,
        )
    },
    Resource {
        short_names: &["quota"],
        status: true,
        ..resource(
            "",
            "v1",
            "ResourceQuota",
            "resourcequotas",
            "resourcequota",
            true,
        )
    },
    Resource {
        short_names: &["limits"],
        ..resource("", "v1", "LimitRange", "limitranges", "limitrange", true)
    },
    Resource {
        short_names: &["deploy"],
        categories: ALL,
        status: true,
        scale: true,
        ..resource(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            "deployment",
            true,
        )
    },
    Resource {
        short_names: &["rs"],
        categories: ALL,
        status: true,
        scale: true,
        ..resource(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            "replicaset",
            true,
        )
    },
    Resource {
        categories: ALL,
        status: true,
        ..resource("batch", "v1", "Job", "jobs", "job", true)
    },
    Resource {
        short_names: &["cj"],
        categories: ALL,
        status: true,
        ..resource("batch", "v1", "CronJob", "cronjobs", "cronjob", true)
    },
    Resource {
        short_names: &["hpa"],
        categories: ALL,
        status: true,
        ..resource(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            "horizontalpodautoscaler",
            true,
        )
    },
    Resource {
        ..resource(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            "lease",
            true,
        )
    },
    resource(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        "role",
        true,
    ),
    resource(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        true,
    ),
    resource(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        false,
    ),
    resource(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
    ),
    Resource {
        short_names: &["csr"],
        status: true,
        fields: &["spec.signerName"],
        ..resource(
            "certificates.k8s.io",
            "v1",
            "CertificateSigningRequest",
            "certificatesigningrequests",
            "certificatesigningrequest",
            false,
        )
    },
    Resource {
        ..resource(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            "endpointslice",
            true,
        )
    },
    Resource {
        short_names: &["ev"],
        fields: EVENT_FIELDS,
        storage: Some("events"),
        ..resource("events.k8s.io", "v1", "Event", "events", "event", true)
    },
    Resource {
        ..resource(
            "node.k8s.io",
            "v1",
            "RuntimeClass",
            "runtimeclasses",
            "runtimeclass",
            false,
        )
    },
    Resource {
        short_names: &["pc"],
        ..resource(
            "scheduling.k8s.io",
            "v1",
            "PriorityClass",
            "priorityclasses",
            "priorityclass",
            false,
        )
    },
    Resource {
        short_names: &["netpol"],
        ..resource(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            "networkpolicy",
            true,
        )
    },
    Resource {
        short_names: &["fn"],
        categories: ALL,
        status: true,
        ..resource(
            crate::function::GROUP,
            "v1",
            "Function",
            "functions",
            "function",
            true,
        )
    },
];

/// The resource served at `group`/`version` under `plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource a user means by `name`, as kubectl reads it: a plural, singular, kind or
/// short name in any case, optionally followed by `.GROUP` (`deployments.apps`, `deploy`,
/// `Pod`). The first registered match wins (core/v1 events before events.k8s.io).
pub fn lookup(name: &str) -> Option<&'static Resource> {
    let name = name.to_ascii_lowercase();
    let (base, group) = match name.split_once('.') {
        Some((base, group)) => (base.to_string(), Some(group.to_string())),
        None => (name, None),
    };
    RESOURCES.iter().find(|r| {
        let names = r.plural == base
            || r.singular == base
            || r.kind.eq_ignore_ascii_case(&base)
            || r.short_names.contains(&base.as_str());
        names && group.as_deref().is_none_or(|g| r.group == g)
    })
}

/// The resource of objects with `apiVersion` and `kind` (as a manifest names them).
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// The resources of one group version, in registry order.
pub fn in_group_version(group: &str, version: &str) -> impl Iterator<Item = &'static Resource> {
    let (group, version) = (group.to_string(), version.to_string());
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// Every (group, version) served, core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn users_name_resources_as_kubectl_reads_them() {
        for name in [
            "deployments",
            "deployment",
            "Deployment",
            "deploy",
            "deployments.apps",
        ] {
            assert_eq!(
                super::lookup(name).map(|r| r.plural),
                Some("deployments"),
                "{name}"
            );
        }
        assert_eq!(super::lookup("ev").map(|r| r.group), Some(""));
        assert_eq!(
            super::lookup("events.events.k8s.io").map(|r| r.group),
            Some("events.k8s.io")
        );
        assert!(super::lookup("deployments.batch").is_none());
        assert!(super::lookup("widgets").is_none());
        assert_eq!(
            super::by_kind("apps/v1", "ReplicaSet").map(|r| r.plural),
            Some("replicasets")
        );
        assert_eq!(
            super::by_kind("v1", "ConfigMap").map(|r| r.plural),
            Some("configmaps")
        );
        assert!(super::by_kind("v2", "ConfigMap").is_none());
    }

    use super::*;

    #[test]
    fn every_kind_is_registered_once_per_group_version() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.version == b.version && a.plural == b.plural),
                    "{} registered twice",
                    a.plural
                );
            }
        }
    }

    #[test]
    fn storage_names() {
        assert_eq!(find("", "v1", "pods").unwrap().storage_name(), "pods");
        assert_eq!(
            find("apps", "v1", "deployments").unwrap().storage_name(),
            "deployments.apps"
        );
        // Both Event APIs share one store.
        assert_eq!(
            find("events.k8s.io", "v1", "events")
                .unwrap()
                .storage_name(),
            find("", "v1", "events").unwrap().storage_name()
        );
    }

    #[test]
    fn field_selectors_per_kind() {
        let pods = find("", "v1", "pods").unwrap();
        assert!(pods.supports_field("spec.nodeName"));
        assert!(pods.supports_field("metadata.namespace"));
        assert!(!pods.supports_field("spec.containers"));
        let nodes = find("", "v1", "nodes").unwrap();
        assert!(!nodes.supports_field("metadata.namespace"));
    }
}
