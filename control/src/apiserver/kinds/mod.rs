//! What the API server knows about each kind: one [`KindStrategy`] per kind, in a file per
//! kind or family of kinds, as kube-apiserver's `strategy.go` files are. A strategy holds the
//! kind's k8s-openapi type (strict decoding and the OpenAPI schemas), its defaults and
//! validation, what an update keeps, its subresources beyond `status` and `scale`, its
//! deletion hooks, its table columns and its protobuf message.
//!
//! The registry entry in `bosun_api::resources` says where a kind is served (group, version,
//! plural, scope, short names, field selectors); the strategy says how it behaves. The generic
//! REST code (`rest.rs`) and admission ask the strategy and never match on kind names.
//! Adding a kind: a registry entry, a file here, and its line in [`STRATEGIES`]
//! (ARCHITECTURE.md has the checklist).

mod apps;
mod autoscaling;
mod batch;
pub mod certificates;
mod config;
mod coordination;
mod event;
mod function;
mod namespace;
mod networkpolicy;
mod node;
pub(super) mod pod;
mod priorityclass;
mod quota;
mod rbac;
mod service;
pub(super) mod serviceaccount;

use std::marker::PhantomData;
use std::sync::OnceLock;

use bosun_api::names;
use bosun_api::resources::Resource;
use k8s_openapi::schemars::JsonSchema;
use k8s_openapi::schemars::generate::SchemaGenerator;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::protobuf::Message;
use super::status::Cause;

pub use priorityclass::{HIGHEST_USER_DEFINABLE_PRIORITY, SYSTEM_PRIORITY_CLASSES};

/// Every kind's strategy. A kind's line here is what makes the API server know it.
static STRATEGIES: &[&dyn KindStrategy] = &[
    &namespace::Namespace,
    &pod::Pod,
    &node::Node,
    &event::CORE_EVENT,
    &config::ConfigMap,
    &config::Secret,
    &service::Service,
    &service::ENDPOINTS,
    &serviceaccount::ServiceAccount,
    &quota::RESOURCE_QUOTA,
    &quota::LIMIT_RANGE,
    &apps::Deployment,
    &apps::ReplicaSet,
    &batch::Job,
    &batch::CronJob,
    &autoscaling::HorizontalPodAutoscaler,
    &coordination::LEASE,
    &rbac::ROLE,
    &rbac::ROLE_BINDING,
    &rbac::CLUSTER_ROLE,
    &rbac::CLUSTER_ROLE_BINDING,
    &service::ENDPOINT_SLICE,
    &event::EVENT,
    &node::RUNTIME_CLASS,
    &priorityclass::PriorityClass,
    &networkpolicy::NetworkPolicy,
    &function::Function,
    &certificates::CertificateSigningRequest,
];

/// The strategy of a served resource. Every registry entry has one (a test checks it). It is
/// asked for on every request and for every listed item, so the registry's entries are matched
/// to their strategies once, and looked up by the entry's address.
pub fn for_resource(resource: &Resource) -> &'static dyn KindStrategy {
    static BY_ENTRY: OnceLock<Vec<&'static dyn KindStrategy>> = OnceLock::new();
    let by_entry = BY_ENTRY.get_or_init(|| {
        bosun_api::resources::RESOURCES
            .iter()
            .map(find_strategy)
            .collect()
    });
    bosun_api::resources::RESOURCES
        .iter()
        .position(|entry| std::ptr::eq(entry, resource))
        .map_or_else(|| find_strategy(resource), |i| by_entry[i])
}

fn find_strategy(resource: &Resource) -> &'static dyn KindStrategy {
    STRATEGIES
        .iter()
        .copied()
        .find(|s| {
            let t = s.object_type();
            t.group() == resource.group
                && t.version() == resource.version
                && t.kind() == resource.kind
        })
        .unwrap_or_else(|| panic!("no strategy for {}", resource.api_version()))
}

/// An object as this endpoint presents it (two API versions may share one store: events).
pub fn presented(resource: &Resource, mut value: Value) -> Value {
    value["apiVersion"] = json!(resource.api_version());
    value["kind"] = json!(resource.kind);
    for_resource(resource).present(resource, &mut value);
    value
}

/// The protobuf message of `kind` at `api_version`, for the kinds read as protobuf.
pub(crate) fn protobuf_message(api_version: &str, kind: &str) -> Option<&'static Message> {
    match bosun_api::resources::by_kind(api_version, kind) {
        Some(resource) => for_resource(resource).protobuf(),
        // What subresources and reviews are sent (TokenRequest, SelfSubjectAccessReview…).
        None => super::protobuf::unregistered(api_version, kind),
    }
}

/// How one kind behaves in the API server. Every method but [`object_type`] has the default
/// most kinds want.
///
/// [`object_type`]: KindStrategy::object_type
pub trait KindStrategy: Send + Sync {
    /// The kind's Rust type.
    fn object_type(&self) -> &dyn ObjectType;

    /// Fills in the defaults the Kubernetes API gives the fields users meet. `creating` is
    /// false on updates (defaults that only a new object gets are skipped).
    fn defaults(&self, _object: &mut Value, _creating: bool) {}

    /// The rule for the object's name: a DNS-1123 subdomain unless the kind says otherwise.
    fn check_name(&self, name: &str) -> Result<(), bosun_api::names::NameError> {
        names::check_dns1123_subdomain(name)
    }

    /// Field-level checks of an admitted object, beyond its name and metadata.
    fn validate(&self, _object: &Value, _causes: &mut Vec<Cause>) {}

    /// Checks of an update against the object it replaces (immutable fields).
    fn validate_update(&self, _old: &Value, _new: &Value, _causes: &mut Vec<Cause>) {}

    /// What an update of the object itself (not a subresource) keeps from `old`, beyond the
    /// identity fields and `status` every kind keeps.
    fn prepare_for_update(&self, _old: &Value, _new: &mut Value) {}

    /// Subresources other than `status` and `scale` (which the registry entry declares).
    fn subresources(&self) -> &'static [Subresource] {
        &[]
    }

    /// Whether a marked object waits for someone other than its finalizers before it goes
    /// (a pod for its node, a namespace for the namespace controller).
    fn awaits_others(&self, _object: &Value) -> bool {
        false
    }

    /// Changes to an object as it is marked for deletion (a namespace turns `Terminating`).
    fn mark_deleting(&self, _object: &mut Value) {}

    /// An object as the endpoint of `resource` presents it, for kinds served by two API
    /// versions from one store (events).
    fn present(&self, _resource: &Resource, _object: &mut Value) {}

    /// The columns of `kubectl get` between NAME and AGE.
    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[];
        COLUMNS
    }

    /// The protobuf message of the kind (the field numbers of Kubernetes' `generated.proto`),
    /// for the kinds that kubectl's generators send as protobuf.
    fn protobuf(&self) -> Option<&'static Message> {
        None
    }
}

/// A kind with nothing of its own but its type, table columns and protobuf message.
pub struct Plain<T> {
    object_type: Typed<T>,
    columns: &'static [Column],
    protobuf: Option<&'static Message>,
}

impl<T> Plain<T> {
    pub const fn new(columns: &'static [Column], protobuf: Option<&'static Message>) -> Self {
        Self {
            object_type: Typed::new(),
            columns,
            protobuf,
        }
    }
}

impl<T> KindStrategy for Plain<T>
where
    Typed<T>: ObjectType,
{
    fn object_type(&self) -> &dyn ObjectType {
        &self.object_type
    }

    fn columns(&self) -> &'static [Column] {
        self.columns
    }

    fn protobuf(&self) -> Option<&'static Message> {
        self.protobuf
    }
}

/// A subresource a kind serves, as discovery lists it.
#[derive(Debug, Clone, Copy)]
pub struct Subresource {
    pub name: &'static str,
    /// The kind the subresource reads or writes, and its group and version.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
    /// What an update through it changes, as JSON pointers (a namespace's `finalize`: its
    /// `/spec/finalizers`); the rest of the object is kept as stored. Empty for subresources
    /// that are not updated, and for `status`, which writes `/status`.
    pub writes: &'static [&'static str],
}

/// Every subresource of `resource`: `status` and `scale` where the registry entry has them,
/// then the kind's own.
pub fn subresources(resource: &Resource) -> Vec<Subresource> {
    let mut out = Vec::new();
    if resource.status {
        out.push(Subresource {
            name: "status",
            group: resource.group,
            version: resource.version,
            kind: resource.kind,
            verbs: &["get", "patch", "update"],
            writes: &["/status"],
        });
    }
    if resource.scale {
        out.push(Subresource {
            name: "scale",
            group: "autoscaling",
            version: "v1",
            kind: "Scale",
            verbs: &["get", "patch", "update"],
            writes: &[],
        });
    }
    out.extend_from_slice(for_resource(resource).subresources());
    out
}

/// The type-dependent part of a strategy, over the k8s-openapi type (see [`Typed`]).
pub trait ObjectType: Send + Sync {
    fn group(&self) -> &'static str;
    fn version(&self) -> &'static str;
    fn kind(&self) -> &'static str;
    /// The resource's plural, as the type's URL names it.
    fn plural(&self) -> &'static str;
    fn namespaced(&self) -> bool;
    /// Decodes a JSON object into the type (a wrong field type is an error, as in Kubernetes)
    /// and encodes it again: what the round trip loses are fields the kind does not have.
    fn round_trip(&self, value: &Value) -> Result<Value, serde_json::Error>;
    /// Adds the type's schema, and those of the types it contains, to `generator`; returns
    /// the schema's name (`io.k8s.api.core.v1.Pod`).
    fn add_schema(&self, generator: &mut SchemaGenerator) -> String;
}

/// The [`ObjectType`] of the k8s-openapi type `T`.
pub struct Typed<T>(PhantomData<fn() -> T>);

impl<T> Typed<T> {
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for Typed<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ObjectType for Typed<T>
where
    T: k8s_openapi::Resource + DeserializeOwned + Serialize + JsonSchema + 'static,
    T::Scope: 'static,
{
    fn group(&self) -> &'static str {
        T::GROUP
    }

    fn version(&self) -> &'static str {
        T::VERSION
    }

    fn kind(&self) -> &'static str {
        T::KIND
    }

    fn plural(&self) -> &'static str {
        T::URL_PATH_SEGMENT
    }

    fn namespaced(&self) -> bool {
        std::any::TypeId::of::<T::Scope>()
            == std::any::TypeId::of::<k8s_openapi::NamespaceResourceScope>()
    }

    fn round_trip(&self, value: &Value) -> Result<Value, serde_json::Error> {
        serde_json::to_value(T::deserialize(value)?)
    }

    fn add_schema(&self, generator: &mut SchemaGenerator) -> String {
        generator.subschema_for::<T>();
        T::schema_name().into_owned()
    }
}

/// A column of `kubectl get` output.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    /// The Table's column type: "string", "integer" or "date".
    pub format: &'static str,
    pub cell: Cell,
    /// Shown only with `-o wide` (priority 1 in the Table).
    pub wide: bool,
}

/// How a column's cell is computed from an object.
#[derive(Debug, Clone, Copy)]
pub enum Cell {
    /// The value at a JSON pointer (`/spec/type`), as it is.
    Field(&'static str),
    /// A kind-specific computation.
    Computed(fn(&Value) -> Value),
}

pub(crate) const fn col(name: &'static str, format: &'static str, cell: Cell) -> Column {
    Column {
        name,
        format,
        cell,
        wide: false,
    }
}

pub(crate) const fn wide(name: &'static str, format: &'static str, cell: Cell) -> Column {
    Column {
        name,
        format,
        cell,
        wide: true,
    }
}

pub(crate) fn cause(field: &str, message: impl Into<String>) -> Cause {
    Cause {
        field: field.into(),
        message: message.into(),
    }
}

/// Sets the field at `pointer` unless it has a value; its parent must exist.
pub(crate) fn set_default(object: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer with a key");
    if let Some(Value::Object(map)) = object.pointer_mut(parent)
        && map.get(key).is_none_or(Value::is_null)
    {
        map.insert(key.to_string(), value);
    }
}

/// Makes the field at `pointer` an empty object if it is missing; its parent must exist.
pub(crate) fn ensure_object(object: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer with a key");
    if let Some(Value::Object(map)) = object.pointer_mut(parent) {
        map.entry(key).or_insert_with(|| json!({}));
    }
}

/// The array at `pointer`, or none.
pub(crate) fn items<'a>(object: &'a Value, pointer: &str) -> Vec<&'a Value> {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// A string cell, `<none>` when empty.
pub(crate) fn or_none(s: String) -> Value {
    json!(if s.is_empty() {
        "<none>".to_string()
    } else {
        s
    })
}

/// `app=web,tier=front` from a `spec.selector.matchLabels` (what `-o wide` and Scale show).
pub(crate) fn selector_string(item: &Value) -> String {
    item.pointer("/spec/selector/matchLabels")
        .or_else(|| {
            item.pointer("/spec/selector")
                .filter(|s| s.get("matchLabels").is_none() && s.get("matchExpressions").is_none())
        })
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_kind_has_one_strategy_of_its_type() {
        for resource in bosun_api::resources::RESOURCES {
            let matching = STRATEGIES
                .iter()
                .filter(|s| {
                    let t = s.object_type();
                    (t.group(), t.version(), t.kind())
                        == (resource.group, resource.version, resource.kind)
                })
                .count();
            assert_eq!(matching, 1, "{} {}", resource.api_version(), resource.kind);
        }
        assert_eq!(STRATEGIES.len(), bosun_api::resources::RESOURCES.len());
    }

    #[test]
    fn the_registry_agrees_with_the_types() {
        for resource in bosun_api::resources::RESOURCES {
            let t = for_resource(resource).object_type();
            assert_eq!(t.plural(), resource.plural, "{}", resource.kind);
            assert_eq!(t.namespaced(), resource.namespaced, "{}", resource.kind);
            let mut generator =
                k8s_openapi::schemars::generate::SchemaSettings::openapi3().into_generator();
            let name = t.add_schema(&mut generator);
            assert!(name.ends_with(&format!(".{}", resource.kind)), "{name}");
        }
    }
}
