//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), for the clients that send
//! them: kubectl's generators (`kubectl create namespace|configmap|secret|deployment|job|
//! cronjob|service|serviceaccount|quota|role|rolebinding|…`, `kubectl expose`, `kubectl
//! autoscale`) use client-go's typed clients, which encode built-in kinds as protobuf.
//!
//! A body is Kubernetes' envelope: the magic `k8s\0`, then a `runtime.Unknown` message
//! (`typeMeta` = 1 with `apiVersion` = 1 and `kind` = 2, `raw` = 2, `contentEncoding` = 3,
//! `contentType` = 4) whose `raw` bytes are the object's own message. The object is decoded
//! into JSON with the field tables below (the field numbers of Kubernetes' `generated.proto`
//! files), and from there goes the same way as a JSON body. The tables cover the kinds and
//! fields those generators write; a field Bosun does not know is refused with a 415 rather
//! than dropped. Answers are always JSON, which client-go reads too.

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// The media type of a protobuf body.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// Why a protobuf body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("a protobuf body starts with the magic bytes k8s\\0")]
    NoMagic,
    #[error("content encoding {0:?} is not supported")]
    Encoding(String),
    #[error("Bosun does not read {kind} ({api_version}) as protobuf; send it as JSON")]
    UnknownKind { api_version: String, kind: String },
    #[error(
        "field {number} of {message} is not one Bosun reads from protobuf; send the object as JSON"
    )]
    UnknownField { number: u32, message: &'static str },
    #[error("field {number} ({name}) has the wrong wire type")]
    WrongWireType { number: u32, name: &'static str },
    #[error("wire type {0} is not supported")]
    UnsupportedWireType(u64),
    #[error("a map entry without a key")]
    MapEntryWithoutKey,
    #[error("a string that is not UTF-8")]
    NotUtf8,
    #[error("a truncated varint")]
    TruncatedVarint,
    #[error("a varint longer than 10 bytes")]
    LongVarint,
    #[error("a truncated field")]
    TruncatedField,
}

/// How a field's bytes become JSON.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    /// An int Go always writes and JSON leaves out at 0 (a non-pointer field).
    Int0,
    Bool,
    /// A bool Go always writes and JSON leaves out when false.
    Bool0,
    Msg(&'static Message),
    /// `bytes`, as base64 (empty bytes left out).
    Bytes,
    /// `map<string, string>`.
    StrMap,
    /// `map<string, bytes>`, values as base64.
    BytesMap,
    /// `map<string, Quantity>`.
    QuantityMap,
    /// One `resource.Quantity`.
    Quantity,
    /// `metav1.Time` (`seconds` = 1, `nanos` = 2); the zero time is left out.
    Time,
    /// `intstr.IntOrString` (`type` = 1, `intVal` = 2, `strVal` = 3).
    IntOrString,
    /// Read past: a status, which clients do not set (the server keeps its own).
    Skip,
}

struct Field {
    number: u32,
    name: &'static str,
    ty: Ty,
    repeated: bool,
}

pub struct Message {
    name: &'static str,
    fields: &'static [Field],
}

const fn f(number: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        number,
        name,
        ty,
        repeated: false,
    }
}

const fn rep(number: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        number,
        name,
        ty,
        repeated: true,
    }
}

use Ty::{
    Bool, Bool0, Bytes, BytesMap, Int, Int0, IntOrString, Msg, Quantity, QuantityMap, Skip, Str,
    StrMap, Time,
};

static OWNER_REFERENCE: Message = Message {
    name: "OwnerReference",
    fields: &[
        f(1, "kind", Str),
        f(3, "name", Str),
        f(4, "uid", Str),
        f(5, "apiVersion", Str),
        f(6, "controller", Bool),
        f(7, "blockOwnerDeletion", Bool),
    ],
};

static OBJECT_META: Message = Message {
    name: "ObjectMeta",
    fields: &[
        f(1, "name", Str),
        f(2, "generateName", Str),
        f(3, "namespace", Str),
        f(4, "selfLink", Str),
        f(5, "uid", Str),
        f(6, "resourceVersion", Str),
        f(7, "generation", Int0),
        f(8, "creationTimestamp", Time),
        f(9, "deletionTimestamp", Time),
        f(10, "deletionGracePeriodSeconds", Int),
        f(11, "labels", StrMap),
        f(12, "annotations", StrMap),
        rep(13, "ownerReferences", Msg(&OWNER_REFERENCE)),
        rep(14, "finalizers", Str),
        // managedFields, sent back by clients that update what they read (`kubectl
        // certificate approve`): read past, so the stored ones stay, as for a JSON write
        // without them.
        f(17, "managedFields", Skip),
    ],
};

static LABEL_SELECTOR_REQUIREMENT: Message = Message {
    name: "LabelSelectorRequirement",
    fields: &[
        f(1, "key", Str),
        f(2, "operator", Str),
        rep(3, "values", Str),
    ],
};

static LABEL_SELECTOR: Message = Message {
    name: "LabelSelector",
    fields: &[
        f(1, "matchLabels", StrMap),
        rep(2, "matchExpressions", Msg(&LABEL_SELECTOR_REQUIREMENT)),
    ],
};

static NAMESPACE_SPEC: Message = Message {
    name: "NamespaceSpec",
    fields: &[rep(1, "finalizers", Str)],
};

pub static NAMESPACE: Message = Message {
    name: "Namespace",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&NAMESPACE_SPEC)),
        f(3, "status", Skip),
    ],
};

pub static CONFIG_MAP: Message = Message {
    name: "ConfigMap",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "data", StrMap),
        f(3, "binaryData", BytesMap),
        f(4, "immutable", Bool),
    ],
};

pub static SECRET: Message = Message {
    name: "Secret",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "data", BytesMap),
        f(3, "type", Str),
        f(4, "stringData", StrMap),
        f(5, "immutable", Bool),
    ],
};

static LOCAL_OBJECT_REFERENCE: Message = Message {
    name: "LocalObjectReference",
    fields: &[f(1, "name", Str)],
};

pub static SERVICE_ACCOUNT: Message = Message {
    name: "ServiceAccount",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        rep(3, "imagePullSecrets", Msg(&LOCAL_OBJECT_REFERENCE)),
        f(4, "automountServiceAccountToken", Bool),
    ],
};

static SCOPED_RESOURCE_SELECTOR_REQUIREMENT: Message = Message {
    name: "ScopedResourceSelectorRequirement",
    fields: &[
        f(1, "scopeName", Str),
        f(2, "operator", Str),
        rep(3, "values", Str),
    ],
};

static SCOPE_SELECTOR: Message = Message {
    name: "ScopeSelector",
    fields: &[rep(
        1,
        "matchExpressions",
        Msg(&SCOPED_RESOURCE_SELECTOR_REQUIREMENT),
    )],
};

static RESOURCE_QUOTA_SPEC: Message = Message {
    name: "ResourceQuotaSpec",
    fields: &[
        f(1, "hard", QuantityMap),
        rep(2, "scopes", Str),
        f(3, "scopeSelector", Msg(&SCOPE_SELECTOR)),
    ],
};

pub static RESOURCE_QUOTA: Message = Message {
    name: "ResourceQuota",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&RESOURCE_QUOTA_SPEC)),
        f(3, "status", Skip),
    ],
};

static CONTAINER_PORT: Message = Message {
    name: "ContainerPort",
    fields: &[
        f(1, "name", Str),
        f(2, "hostPort", Int0),
        f(3, "containerPort", Int),
        f(4, "protocol", Str),
        f(5, "hostIP", Str),
    ],
};

static ENV_VAR: Message = Message {
    name: "EnvVar",
    fields: &[f(1, "name", Str), f(2, "value", Str)],
};

static RESOURCE_REQUIREMENTS: Message = Message {
    name: "ResourceRequirements",
    fields: &[f(1, "limits", QuantityMap), f(2, "requests", QuantityMap)],
};

static CONTAINER: Message = Message {
    name: "Container",
    fields: &[
        f(1, "name", Str),
        f(2, "image", Str),
        rep(3, "command", Str),
        rep(4, "args", Str),
        f(5, "workingDir", Str),
        rep(6, "ports", Msg(&CONTAINER_PORT)),
        rep(7, "env", Msg(&ENV_VAR)),
        f(8, "resources", Msg(&RESOURCE_REQUIREMENTS)),
        f(13, "terminationMessagePath", Str),
        f(14, "imagePullPolicy", Str),
        f(16, "stdin", Bool0),
        f(17, "stdinOnce", Bool0),
        f(18, "tty", Bool0),
        f(20, "terminationMessagePolicy", Str),
    ],
};

static POD_SPEC: Message = Message {
    name: "PodSpec",
    fields: &[
        rep(2, "containers", Msg(&CONTAINER)),
        f(3, "restartPolicy", Str),
        f(4, "terminationGracePeriodSeconds", Int),
        f(5, "activeDeadlineSeconds", Int),
        f(6, "dnsPolicy", Str),
        f(7, "nodeSelector", StrMap),
        f(8, "serviceAccountName", Str),
        f(9, "serviceAccount", Str),
        f(10, "nodeName", Str),
        f(11, "hostNetwork", Bool0),
        f(12, "hostPID", Bool0),
        f(13, "hostIPC", Bool0),
        rep(15, "imagePullSecrets", Msg(&LOCAL_OBJECT_REFERENCE)),
        f(16, "hostname", Str),
        f(17, "subdomain", Str),
        f(19, "schedulerName", Str),
        rep(20, "initContainers", Msg(&CONTAINER)),
        f(21, "automountServiceAccountToken", Bool),
        f(24, "priorityClassName", Str),
        f(25, "priority", Int),
        f(27, "shareProcessNamespace", Bool),
        f(29, "runtimeClassName", Str),
        f(30, "enableServiceLinks", Bool),
        f(31, "preemptionPolicy", Str),
        f(35, "setHostnameAsFQDN", Bool),
        f(37, "hostUsers", Bool),
    ],
};

static POD_TEMPLATE_SPEC: Message = Message {
    name: "PodTemplateSpec",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&POD_SPEC)),
    ],
};

static ROLLING_UPDATE_DEPLOYMENT: Message = Message {
    name: "RollingUpdateDeployment",
    fields: &[
        f(1, "maxUnavailable", IntOrString),
        f(2, "maxSurge", IntOrString),
    ],
};

static DEPLOYMENT_STRATEGY: Message = Message {
    name: "DeploymentStrategy",
    fields: &[
        f(1, "type", Str),
        f(2, "rollingUpdate", Msg(&ROLLING_UPDATE_DEPLOYMENT)),
    ],
};

static DEPLOYMENT_SPEC: Message = Message {
    name: "DeploymentSpec",
    fields: &[
        f(1, "replicas", Int),
        f(2, "selector", Msg(&LABEL_SELECTOR)),
        f(3, "template", Msg(&POD_TEMPLATE_SPEC)),
        f(4, "strategy", Msg(&DEPLOYMENT_STRATEGY)),
        f(5, "minReadySeconds", Int0),
        f(6, "revisionHistoryLimit", Int),
        f(7, "paused", Bool0),
        f(9, "progressDeadlineSeconds", Int),
    ],
};

pub static DEPLOYMENT: Message = Message {
    name: "Deployment",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&DEPLOYMENT_SPEC)),
        f(3, "status", Skip),
    ],
};

static JOB_SPEC: Message = Message {
    name: "JobSpec",
    fields: &[
        f(1, "parallelism", Int),
        f(2, "completions", Int),
        f(3, "activeDeadlineSeconds", Int),
        f(4, "selector", Msg(&LABEL_SELECTOR)),
        f(5, "manualSelector", Bool),
        f(6, "template", Msg(&POD_TEMPLATE_SPEC)),
        f(7, "backoffLimit", Int),
        f(8, "ttlSecondsAfterFinished", Int),
        f(9, "completionMode", Str),
        f(10, "suspend", Bool),
    ],
};

pub static JOB: Message = Message {
    name: "Job",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&JOB_SPEC)),
        f(3, "status", Skip),
    ],
};

static JOB_TEMPLATE_SPEC: Message = Message {
    name: "JobTemplateSpec",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&JOB_SPEC)),
    ],
};

static CRON_JOB_SPEC: Message = Message {
    name: "CronJobSpec",
    fields: &[
        f(1, "schedule", Str),
        f(2, "startingDeadlineSeconds", Int),
        f(3, "concurrencyPolicy", Str),
        f(4, "suspend", Bool),
        f(5, "jobTemplate", Msg(&JOB_TEMPLATE_SPEC)),
        f(6, "successfulJobsHistoryLimit", Int),
        f(7, "failedJobsHistoryLimit", Int),
        f(8, "timeZone", Str),
    ],
};

pub static CRON_JOB: Message = Message {
    name: "CronJob",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&CRON_JOB_SPEC)),
        f(3, "status", Skip),
    ],
};

// autoscaling/v2, which `kubectl autoscale` writes (it falls back to v1 only when v2 fails).

static CROSS_VERSION_OBJECT_REFERENCE: Message = Message {
    name: "CrossVersionObjectReference",
    fields: &[
        f(1, "kind", Str),
        f(2, "name", Str),
        f(3, "apiVersion", Str),
    ],
};

static METRIC_TARGET: Message = Message {
    name: "MetricTarget",
    fields: &[
        f(1, "type", Str),
        f(2, "value", Quantity),
        f(3, "averageValue", Quantity),
        f(4, "averageUtilization", Int),
    ],
};

static METRIC_IDENTIFIER: Message = Message {
    name: "MetricIdentifier",
    fields: &[f(1, "name", Str), f(2, "selector", Msg(&LABEL_SELECTOR))],
};

static RESOURCE_METRIC_SOURCE: Message = Message {
    name: "ResourceMetricSource",
    fields: &[f(1, "name", Str), f(2, "target", Msg(&METRIC_TARGET))],
};

static CONTAINER_RESOURCE_METRIC_SOURCE: Message = Message {
    name: "ContainerResourceMetricSource",
    fields: &[
        f(1, "name", Str),
        f(2, "target", Msg(&METRIC_TARGET)),
        f(3, "container", Str),
    ],
};

static PODS_METRIC_SOURCE: Message = Message {
    name: "PodsMetricSource",
    fields: &[
        f(1, "metric", Msg(&METRIC_IDENTIFIER)),
        f(2, "target", Msg(&METRIC_TARGET)),
    ],
};

static OBJECT_METRIC_SOURCE: Message = Message {
    name: "ObjectMetricSource",
    fields: &[
        f(1, "describedObject", Msg(&CROSS_VERSION_OBJECT_REFERENCE)),
        f(2, "target", Msg(&METRIC_TARGET)),
        f(3, "metric", Msg(&METRIC_IDENTIFIER)),
    ],
};

static EXTERNAL_METRIC_SOURCE: Message = Message {
    name: "ExternalMetricSource",
    fields: &[
        f(1, "metric", Msg(&METRIC_IDENTIFIER)),
        f(2, "target", Msg(&METRIC_TARGET)),
    ],
};

static METRIC_SPEC: Message = Message {
    name: "MetricSpec",
    fields: &[
        f(1, "type", Str),
        f(2, "object", Msg(&OBJECT_METRIC_SOURCE)),
        f(3, "pods", Msg(&PODS_METRIC_SOURCE)),
        f(4, "resource", Msg(&RESOURCE_METRIC_SOURCE)),
        f(5, "external", Msg(&EXTERNAL_METRIC_SOURCE)),
        f(
            7,
            "containerResource",
            Msg(&CONTAINER_RESOURCE_METRIC_SOURCE),
        ),
    ],
};

static HPA_SCALING_POLICY: Message = Message {
    name: "HPAScalingPolicy",
    fields: &[
        f(1, "type", Str),
        f(2, "value", Int0),
        f(3, "periodSeconds", Int0),
    ],
};

static HPA_SCALING_RULES: Message = Message {
    name: "HPAScalingRules",
    fields: &[
        f(1, "selectPolicy", Str),
        rep(2, "policies", Msg(&HPA_SCALING_POLICY)),
        f(3, "stabilizationWindowSeconds", Int),
        f(4, "tolerance", Quantity),
    ],
};

static HPA_BEHAVIOR: Message = Message {
    name: "HorizontalPodAutoscalerBehavior",
    fields: &[
        f(1, "scaleUp", Msg(&HPA_SCALING_RULES)),
        f(2, "scaleDown", Msg(&HPA_SCALING_RULES)),
    ],
};

static HPA_SPEC: Message = Message {
    name: "HorizontalPodAutoscalerSpec",
    fields: &[
        f(1, "scaleTargetRef", Msg(&CROSS_VERSION_OBJECT_REFERENCE)),
        f(2, "minReplicas", Int),
        // Go always writes it, and so does JSON (no omitempty): 0 stays 0.
        f(3, "maxReplicas", Int),
        rep(4, "metrics", Msg(&METRIC_SPEC)),
        f(5, "behavior", Msg(&HPA_BEHAVIOR)),
    ],
};

pub static HORIZONTAL_POD_AUTOSCALER: Message = Message {
    name: "HorizontalPodAutoscaler",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&HPA_SPEC)),
        f(3, "status", Skip),
    ],
};

static SERVICE_PORT: Message = Message {
    name: "ServicePort",
    fields: &[
        f(1, "name", Str),
        f(2, "protocol", Str),
        f(3, "port", Int),
        f(4, "targetPort", IntOrString),
        f(5, "nodePort", Int0),
        f(6, "appProtocol", Str),
    ],
};

static SERVICE_SPEC: Message = Message {
    name: "ServiceSpec",
    fields: &[
        rep(1, "ports", Msg(&SERVICE_PORT)),
        f(2, "selector", StrMap),
        f(3, "clusterIP", Str),
        f(4, "type", Str),
        rep(5, "externalIPs", Str),
        f(7, "sessionAffinity", Str),
        f(8, "loadBalancerIP", Str),
        rep(9, "loadBalancerSourceRanges", Str),
        f(10, "externalName", Str),
        f(11, "externalTrafficPolicy", Str),
        f(12, "healthCheckNodePort", Int0),
        f(13, "publishNotReadyAddresses", Bool0),
        f(17, "ipFamilyPolicy", Str),
        rep(18, "clusterIPs", Str),
        rep(19, "ipFamilies", Str),
        f(20, "allocateLoadBalancerNodePorts", Bool),
        f(21, "loadBalancerClass", Str),
        f(22, "internalTrafficPolicy", Str),
    ],
};

pub static SERVICE: Message = Message {
    name: "Service",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&SERVICE_SPEC)),
        f(3, "status", Skip),
    ],
};

static POLICY_RULE: Message = Message {
    name: "PolicyRule",
    fields: &[
        rep(1, "verbs", Str),
        rep(2, "apiGroups", Str),
        rep(3, "resources", Str),
        rep(4, "resourceNames", Str),
        rep(5, "nonResourceURLs", Str),
    ],
};

pub static ROLE: Message = Message {
    name: "Role",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        rep(2, "rules", Msg(&POLICY_RULE)),
    ],
};

static SUBJECT: Message = Message {
    name: "Subject",
    fields: &[
        f(1, "kind", Str),
        f(2, "apiGroup", Str),
        f(3, "name", Str),
        f(4, "namespace", Str),
    ],
};

static ROLE_REF: Message = Message {
    name: "RoleRef",
    fields: &[f(1, "apiGroup", Str), f(2, "kind", Str), f(3, "name", Str)],
};

pub static ROLE_BINDING: Message = Message {
    name: "RoleBinding",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        rep(2, "subjects", Msg(&SUBJECT)),
        f(3, "roleRef", Msg(&ROLE_REF)),
    ],
};

static RESOURCE_ATTRIBUTES: Message = Message {
    name: "ResourceAttributes",
    fields: &[
        f(1, "namespace", Str),
        f(2, "verb", Str),
        f(3, "group", Str),
        f(4, "version", Str),
        f(5, "resource", Str),
        f(6, "subresource", Str),
        f(7, "name", Str),
        // Field and label selectors narrow a list; authorization here does not read them.
        f(8, "fieldSelector", Skip),
        f(9, "labelSelector", Skip),
    ],
};

static NON_RESOURCE_ATTRIBUTES: Message = Message {
    name: "NonResourceAttributes",
    fields: &[f(1, "path", Str), f(2, "verb", Str)],
};

static SELF_SUBJECT_ACCESS_REVIEW_SPEC: Message = Message {
    name: "SelfSubjectAccessReviewSpec",
    fields: &[
        f(1, "resourceAttributes", Msg(&RESOURCE_ATTRIBUTES)),
        f(2, "nonResourceAttributes", Msg(&NON_RESOURCE_ATTRIBUTES)),
    ],
};

/// `kubectl auth can-i`'s request.
pub static SELF_SUBJECT_ACCESS_REVIEW: Message = Message {
    name: "SelfSubjectAccessReview",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&SELF_SUBJECT_ACCESS_REVIEW_SPEC)),
        f(3, "status", Skip),
    ],
};

static SELF_SUBJECT_RULES_REVIEW_SPEC: Message = Message {
    name: "SelfSubjectRulesReviewSpec",
    fields: &[f(1, "namespace", Str)],
};

/// `kubectl auth can-i --list`'s request.
pub static SELF_SUBJECT_RULES_REVIEW: Message = Message {
    name: "SelfSubjectRulesReview",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&SELF_SUBJECT_RULES_REVIEW_SPEC)),
        f(3, "status", Skip),
    ],
};

static SUBJECT_ACCESS_REVIEW_SPEC: Message = Message {
    name: "SubjectAccessReviewSpec",
    fields: &[
        f(1, "resourceAttributes", Msg(&RESOURCE_ATTRIBUTES)),
        f(2, "nonResourceAttributes", Msg(&NON_RESOURCE_ATTRIBUTES)),
        f(3, "user", Str),
        rep(4, "groups", Str),
        f(6, "uid", Str),
    ],
};

/// SubjectAccessReview and LocalSubjectAccessReview (the same fields).
pub static SUBJECT_ACCESS_REVIEW: Message = Message {
    name: "SubjectAccessReview",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&SUBJECT_ACCESS_REVIEW_SPEC)),
        f(3, "status", Skip),
    ],
};

/// `kubectl auth whoami`'s request.
pub static SELF_SUBJECT_REVIEW: Message = Message {
    name: "SelfSubjectReview",
    fields: &[f(1, "metadata", Msg(&OBJECT_META)), f(2, "status", Skip)],
};

static CSR_SPEC: Message = Message {
    name: "CertificateSigningRequestSpec",
    fields: &[
        f(1, "request", Bytes),
        f(2, "username", Str),
        f(3, "uid", Str),
        rep(4, "groups", Str),
        rep(5, "usages", Str),
        // `extra` (map to ExtraValue): set by the server from the requester, never by clients.
        f(6, "extra", Skip),
        f(7, "signerName", Str),
        f(8, "expirationSeconds", Int),
    ],
};

static CSR_CONDITION: Message = Message {
    name: "CertificateSigningRequestCondition",
    fields: &[
        f(1, "type", Str),
        f(2, "reason", Str),
        f(3, "message", Str),
        f(4, "lastUpdateTime", Time),
        f(5, "lastTransitionTime", Time),
        f(6, "status", Str),
    ],
};

static CSR_STATUS: Message = Message {
    name: "CertificateSigningRequestStatus",
    fields: &[
        rep(1, "conditions", Msg(&CSR_CONDITION)),
        f(2, "certificate", Bytes),
    ],
};

/// What `kubectl certificate approve|deny` sends to `approval` (the whole request).
pub static CERTIFICATE_SIGNING_REQUEST: Message = Message {
    name: "CertificateSigningRequest",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&CSR_SPEC)),
        f(3, "status", Msg(&CSR_STATUS)),
    ],
};

static BOUND_OBJECT_REFERENCE: Message = Message {
    name: "BoundObjectReference",
    fields: &[
        f(1, "kind", Str),
        f(2, "apiVersion", Str),
        f(3, "name", Str),
        f(4, "uid", Str),
    ],
};

static TOKEN_REQUEST_SPEC: Message = Message {
    name: "TokenRequestSpec",
    fields: &[
        rep(1, "audiences", Str),
        f(3, "boundObjectRef", Msg(&BOUND_OBJECT_REFERENCE)),
        f(4, "expirationSeconds", Int),
    ],
};

/// `kubectl create token`'s request.
pub static TOKEN_REQUEST: Message = Message {
    name: "TokenRequest",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&TOKEN_REQUEST_SPEC)),
        f(3, "status", Skip),
    ],
};

/// The messages of what clients send that is not a registered kind: a subresource's body or
/// a review.
pub fn unregistered(api_version: &str, kind: &str) -> Option<&'static Message> {
    Some(match (api_version, kind) {
        ("authentication.k8s.io/v1", "TokenRequest") => &TOKEN_REQUEST,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => &SELF_SUBJECT_REVIEW,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => &SELF_SUBJECT_ACCESS_REVIEW,
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => &SELF_SUBJECT_RULES_REVIEW,
        ("authorization.k8s.io/v1", "SubjectAccessReview" | "LocalSubjectAccessReview") => {
            &SUBJECT_ACCESS_REVIEW
        }
        _ => return None,
    })
}

/// The JSON object a protobuf body holds. `message_of` gives the message of an API version's
/// kind, if Bosun reads it as protobuf (the kind's strategy says). The error says what could
/// not be read.
pub fn decode(
    body: &[u8],
    message_of: impl Fn(&str, &str) -> Option<&'static Message>,
) -> Result<Value, Error> {
    let envelope = body.strip_prefix(MAGIC).ok_or(Error::NoMagic)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    let mut encoding = String::new();
    for field in Fields::new(envelope) {
        let (number, wire) = field?;
        match (number, wire) {
            (1, Wire::Bytes(type_meta)) => {
                for field in Fields::new(type_meta) {
                    match field? {
                        (1, Wire::Bytes(b)) => api_version = utf8(b)?,
                        (2, Wire::Bytes(b)) => kind = utf8(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(bytes)) => raw = bytes,
            (3, Wire::Bytes(b)) => encoding = utf8(b)?,
            _ => {}
        }
    }
    if !encoding.is_empty() {
        return Err(Error::Encoding(encoding));
    }
    let Some(message) = message_of(&api_version, &kind) else {
        return Err(Error::UnknownKind { api_version, kind });
    };
    let mut object = decode_message(raw, message)?;
    object.insert("apiVersion".into(), json!(api_version));
    object.insert("kind".into(), json!(kind));
    Ok(Value::Object(object))
}

fn decode_message(bytes: &[u8], message: &Message) -> Result<Map<String, Value>, Error> {
    let mut out = Map::new();
    for field in Fields::new(bytes) {
        let (number, wire) = field?;
        let spec =
            message
                .fields
                .iter()
                .find(|f| f.number == number)
                .ok_or(Error::UnknownField {
                    number,
                    message: message.name,
                })?;
        let Some(value) = decode_value(spec, wire)? else {
            continue;
        };
        match spec.ty {
            StrMap | BytesMap | QuantityMap => {
                let (key, value) = value
                    .as_array()
                    .and_then(|kv| Some((kv.first()?.as_str()?.to_string(), kv.get(1)?.clone())))
                    .ok_or(Error::MapEntryWithoutKey)?;
                let map = out.entry(spec.name).or_insert_with(|| json!({}));
                map[key] = value;
            }
            _ if spec.repeated => {
                let list = out.entry(spec.name).or_insert_with(|| json!([]));
                list.as_array_mut().expect("a list").push(value);
            }
            _ => {
                out.insert(spec.name.into(), value);
            }
        }
    }
    Ok(out)
}

/// One field's value; `None` for what JSON would leave out (empty strings, the zero time).
/// Map entries come back as `[key, value]`.
fn decode_value(spec: &Field, wire: Wire) -> Result<Option<Value>, Error> {
    let wrong = || Error::WrongWireType {
        number: spec.number,
        name: spec.name,
    };
    Ok(match (spec.ty, wire) {
        (Skip, _) => None,
        (Str, Wire::Bytes(b)) => {
            let s = utf8(b)?;
            // Go writes its zero strings; JSON omits them (a list keeps its items).
            (!s.is_empty() || spec.repeated).then(|| json!(s))
        }
        (Bytes, Wire::Bytes(b)) => {
            (!b.is_empty()).then(|| json!(base64::engine::general_purpose::STANDARD.encode(b)))
        }
        (Int, Wire::Varint(v)) => Some(json!(v as i64)),
        (Int0, Wire::Varint(v)) => (v != 0).then(|| json!(v as i64)),
        (Bool, Wire::Varint(v)) => Some(json!(v != 0)),
        (Bool0, Wire::Varint(v)) => (v != 0).then_some(json!(true)),
        (Msg(message), Wire::Bytes(b)) => Some(Value::Object(decode_message(b, message)?)),
        (StrMap | BytesMap | QuantityMap, Wire::Bytes(b)) => {
            let mut key = String::new();
            let mut value = Value::String(String::new());
            for field in Fields::new(b) {
                match (field?, spec.ty) {
                    ((1, Wire::Bytes(k)), _) => key = utf8(k)?,
                    ((2, Wire::Bytes(v)), StrMap) => value = json!(utf8(v)?),
                    ((2, Wire::Bytes(v)), BytesMap) => {
                        value = json!(base64::engine::general_purpose::STANDARD.encode(v))
                    }
                    ((2, Wire::Bytes(v)), QuantityMap) => value = quantity(v)?,
                    _ => return Err(wrong()),
                }
            }
            Some(json!([key, value]))
        }
        (Quantity, Wire::Bytes(b)) => Some(quantity(b)?),
        (Time, Wire::Bytes(b)) => {
            let (mut seconds, mut nanos) = (0i64, 0i64);
            for field in Fields::new(b) {
                match field? {
                    (1, Wire::Varint(s)) => seconds = s as i64,
                    (2, Wire::Varint(n)) => nanos = n as i64,
                    _ => return Err(wrong()),
                }
            }
            (seconds != 0 || nanos != 0).then(|| {
                let at =
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.max(0) as u64);
                json!(bosun_api::time::rfc3339(at))
            })
        }
        (IntOrString, Wire::Bytes(b)) => {
            let (mut is_string, mut int, mut string) = (false, 0i64, String::new());
            for field in Fields::new(b) {
                match field? {
                    (1, Wire::Varint(t)) => is_string = t == 1,
                    (2, Wire::Varint(i)) => int = i as i32 as i64,
                    (3, Wire::Bytes(s)) => string = utf8(s)?,
                    _ => return Err(wrong()),
                }
            }
            Some(if is_string { json!(string) } else { json!(int) })
        }
        _ => return Err(wrong()),
    })
}

/// A `resource.Quantity` message: its one field, the string form.
fn quantity(bytes: &[u8]) -> Result<Value, Error> {
    for field in Fields::new(bytes) {
        if let (1, Wire::Bytes(s)) = field? {
            return Ok(json!(utf8(s)?));
        }
    }
    Ok(json!("0"))
}

fn utf8(bytes: &[u8]) -> Result<String, Error> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::NotUtf8)
}

/// A field's payload on the wire.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of a message, in order.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn varint(&mut self) -> Result<u64, Error> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.rest.split_first().ok_or(Error::TruncatedVarint)?;
            self.rest = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Error::LongVarint)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.rest.len() < n {
            return Err(Error::TruncatedField);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Wire<'a>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = (|| {
            let tag = self.varint()?;
            let number = (tag >> 3) as u32;
            let wire = match tag & 7 {
                0 => Wire::Varint(self.varint()?),
                1 => {
                    self.take(8)?;
                    Wire::Fixed
                }
                2 => {
                    let len = self.varint()? as usize;
                    Wire::Bytes(self.take(len)?)
                }
                5 => {
                    self.take(4)?;
                    Wire::Fixed
                }
                other => return Err(Error::UnsupportedWireType(other)),
            };
            Ok((number, wire))
        })();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &[u8]) -> Result<Value, String> {
        super::decode(body, crate::apiserver::kinds::protobuf_message).map_err(|e| e.to_string())
    }

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes(number: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(u64::from(number << 3 | 2), &mut out);
        varint(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    fn int(number: u32, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(u64::from(number << 3), &mut out);
        varint(v, &mut out);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [bytes(1, api_version.as_bytes()), bytes(2, kind.as_bytes())].concat();
        [MAGIC.to_vec(), bytes(1, &type_meta), bytes(2, raw)].concat()
    }

    #[test]
    fn a_config_map_decodes_with_its_maps_and_without_zero_values() {
        let entry = |k: &str, v: &str| {
            bytes(
                2,
                &[bytes(1, k.as_bytes()), bytes(2, v.as_bytes())].concat(),
            )
        };
        let meta = [
            bytes(1, b"settings"),
            bytes(2, b""),
            bytes(8, &[]),
            bytes(11, &[bytes(1, b"app"), bytes(2, b"web")].concat()),
        ]
        .concat();
        let raw = [
            bytes(1, &meta),
            entry("color", "blue"),
            entry("size", "3"),
            int(4, 1),
        ]
        .concat();
        let object = decode(&envelope("v1", "ConfigMap", &raw)).unwrap();
        assert_eq!(
            object,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "settings", "labels": {"app": "web"}},
                "data": {"color": "blue", "size": "3"},
                "immutable": true
            })
        );
    }

    #[test]
    fn int_or_string_and_repeated_messages_decode() {
        let port = |n: u64, target: &[u8]| bytes(1, &[int(3, n), bytes(4, target)].concat());
        let by_number = [int(1, 0), int(2, 8080)].concat();
        let by_name = [int(1, 1), bytes(3, b"http")].concat();
        let spec = [
            port(80, &by_number),
            port(443, &by_name),
            bytes(4, b"ClusterIP"),
        ]
        .concat();
        let raw = [bytes(1, &bytes(1, b"web")), bytes(2, &spec)].concat();
        let object = decode(&envelope("v1", "Service", &raw)).unwrap();
        assert_eq!(
            object["spec"],
            json!({"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": "http"}], "type": "ClusterIP"})
        );
    }

    #[test]
    fn an_autoscaler_decodes_as_kubectl_autoscale_writes_it() {
        let target = [
            bytes(1, b"Deployment"),
            bytes(2, b"web"),
            bytes(3, b"apps/v1"),
        ]
        .concat();
        let utilization = [bytes(1, b"Utilization"), int(4, 80)].concat();
        let cpu = [bytes(1, b"cpu"), bytes(2, &utilization)].concat();
        let metric = [bytes(1, b"Resource"), bytes(4, &cpu)].concat();
        let memory = [bytes(1, b"AverageValue"), bytes(3, &bytes(1, b"256Mi"))].concat();
        let by_memory = [
            bytes(1, b"Resource"),
            bytes(4, &[bytes(1, b"memory"), bytes(2, &memory)].concat()),
        ]
        .concat();
        let spec = [
            bytes(1, &target),
            int(2, 2),
            int(3, 5),
            bytes(4, &metric),
            bytes(4, &by_memory),
        ]
        .concat();
        let raw = [bytes(1, &bytes(1, b"web")), bytes(2, &spec), bytes(3, &[])].concat();
        let object = decode(&envelope("autoscaling/v2", "HorizontalPodAutoscaler", &raw)).unwrap();
        assert_eq!(
            object["spec"],
            json!({
                "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                "minReplicas": 2,
                "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80}}},
                    {"type": "Resource", "resource": {"name": "memory",
                        "target": {"type": "AverageValue", "averageValue": "256Mi"}}},
                ]
            })
        );
        // autoscaling/v1 numbers its fields otherwise (4 is targetCPUUtilizationPercentage).
        let err = decode(&envelope("autoscaling/v1", "HorizontalPodAutoscaler", &raw)).unwrap_err();
        assert!(err.contains("send it as JSON"), "{err}");
    }

    #[test]
    fn unknown_fields_kinds_and_bad_bytes_are_refused() {
        let raw = [bytes(1, &bytes(1, b"x")), int(9, 1)].concat();
        let err = decode(&envelope("v1", "ConfigMap", &raw)).unwrap_err();
        assert!(err.contains("field 9 of ConfigMap"), "{err}");
        let err = decode(&envelope("v1", "Pod", &[])).unwrap_err();
        assert!(err.contains("send it as JSON"), "{err}");
        assert!(decode(b"{\"kind\":\"Pod\"}").unwrap_err().contains("magic"));
        let truncated = [MAGIC.to_vec(), vec![0x0a, 0x05, 0x01]].concat();
        assert!(decode(&truncated).unwrap_err().contains("truncated"));
    }
}
