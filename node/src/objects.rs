//! The API objects a pod's containers refer to, for their environment and their volumes:
//! ConfigMaps and Secrets of the pod's namespace (each read once per container start) and the
//! pod's downward API fields.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::Api;

/// Why what a container refers to (objects, fields, volumes, limits) cannot be had or used:
/// the message of the kubelet's CreateContainerConfigError. The pod's worker tries again with
/// back-off.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {kind} {name:?}: {source}")]
    Read {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} has no key {key:?}")]
    NoKey {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    NoEnvKey {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("env {0:?} has an empty valueFrom")]
    EmptyValueFrom(String),
    #[error("unsupported downward API field {0:?}")]
    UnsupportedField(String),
    #[error("no container {0:?} for resourceFieldRef")]
    NoContainer(String),
    #[error("unsupported resource {0:?}")]
    UnsupportedResource(String),
    #[error("invalid divisor for {0}")]
    Divisor(String),
    #[error(transparent)]
    Quantity(#[from] bosun_api::quantity::Error),
    #[error("volumeMount {0:?} names no volume of the pod")]
    NoVolume(String),
    #[error("subPath {0:?} must be a relative path inside the volume")]
    SubPath(String),
    #[error("volumeMount {name:?} at {path}: WASI can only mount directories")]
    NotADirectory { name: String, path: String },
    #[error("hostPath {0} is not a directory")]
    HostPathNotDirectory(String),
    #[error(
        "hostPath type {0} cannot be mounted into a Wasm guest: WASI preopens directories only"
    )]
    HostPathType(String),
    #[error(
        "projected volume {0}: only configMap, secret, downwardAPI and serviceAccountToken sources are supported"
    )]
    ProjectedSource(String),
    #[error("cannot get a token of serviceaccount {account}: {source}")]
    Token {
        account: String,
        #[source]
        source: kube::Error,
    },
    #[error("volume {name}: type {kind} is not supported by bosun node")]
    VolumeType { name: String, kind: String },
    #[error("downwardAPI item {0:?}: only fieldRef is supported")]
    DownwardItem(String),
    #[error("item path {0:?} must be relative")]
    ItemPath(String),
    #[error("mode {mode:o} of {path} is not a file mode")]
    Mode { mode: i32, path: String },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// An I/O failure on `path`, for `map_err`.
    pub fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self + use<> {
        let path = path.to_path_buf();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// The pods' ServiceAccount tokens, kept until they are 80% through their life (as the
/// kubelet's token manager), so a volume refreshed every few seconds asks for a new token
/// only when the old one nears its end.
#[derive(Default)]
pub struct TokenCache {
    tokens: std::sync::Mutex<HashMap<TokenKey, CachedToken>>,
}

/// Pod uid, account, audience, lifetime in seconds.
type TokenKey = (String, String, String, i64);

struct CachedToken {
    token: String,
    refresh_at: std::time::Instant,
    expires_at: std::time::Instant,
}

/// Reads ConfigMaps and Secrets of the pod's namespace, each once per container start.
pub struct Sources<'a> {
    pub client: &'a kube::Client,
    pub namespace: &'a str,
    pub pod: &'a Pod,
    pub host_ip: String,
    pub pod_ip: String,
    configmaps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
    tokens: Option<&'a TokenCache>,
}

impl<'a> Sources<'a> {
    pub fn new(client: &'a kube::Client, pod: &'a Pod, host_ip: String, pod_ip: String) -> Self {
        Self {
            client,
            namespace: pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod,
            host_ip,
            pod_ip,
            configmaps: HashMap::new(),
            secrets: HashMap::new(),
            tokens: None,
        }
    }

    /// These sources keep the pod's ServiceAccount tokens in `tokens`.
    pub fn with_tokens(mut self, tokens: &'a TokenCache) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// A token of the pod's ServiceAccount, bound to the pod, for `audience` (the API
    /// server's when `None`), living `expiration_seconds`: the cached one while it is less
    /// than 80% through its life, else a new one from TokenRequest.
    pub async fn service_account_token(
        &mut self,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<String, ConfigError> {
        use std::time::{Duration, Instant};
        let spec = self.pod.spec.as_ref();
        let account = spec
            .and_then(|s| s.service_account_name.clone())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        let key = (
            uid.clone(),
            account.clone(),
            audience.unwrap_or_default().to_string(),
            expiration_seconds,
        );
        let now = Instant::now();
        if let Some(cache) = self.tokens {
            let mut tokens = cache
                .tokens
                .lock()
                .expect("the token cache is not poisoned");
            tokens.retain(|_, t| t.expires_at > now);
            if let Some(cached) = tokens.get(&key).filter(|t| t.refresh_at > now) {
                return Ok(cached.token.clone());
            }
        }
        let api: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(self.client.clone(), self.namespace);
        let request: k8s_openapi::api::authentication::v1::TokenRequest =
            serde_json::from_value(serde_json::json!({
                "spec": {
                    "audiences": audience.map(|a| vec![a]).unwrap_or_default(),
                    "expirationSeconds": expiration_seconds,
                    "boundObjectRef": {
                        "kind": "Pod",
                        "apiVersion": "v1",
                        "name": self.pod.metadata.name.clone().unwrap_or_default(),
                        "uid": uid,
                    },
                },
            }))
            .expect("a valid TokenRequest");
        let answered = api
            .create_token_request(&account, &Default::default(), &request)
            .await
            .map_err(|source| ConfigError::Token {
                account: format!("{}/{account}", self.namespace),
                source,
            })?;
        let token = answered.status.map(|s| s.token).unwrap_or_default();
        if let Some(cache) = self.tokens {
            let life = Duration::from_secs(expiration_seconds.max(0) as u64);
            cache
                .tokens
                .lock()
                .expect("the token cache is not poisoned")
                .insert(
                    key,
                    CachedToken {
                        token: token.clone(),
                        refresh_at: now + life.mul_f64(0.8),
                        expires_at: now + life,
                    },
                );
        }
        Ok(token)
    }

    pub async fn configmap(&mut self, name: &str) -> Result<Option<&ConfigMap>, ConfigError> {
        if !self.configmaps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), self.namespace);
            let found = api
                .get_opt(name)
                .await
                .map_err(|source| ConfigError::Read {
                    kind: "configmap",
                    name: name.to_string(),
                    source,
                })?;
            self.configmaps.insert(name.to_string(), found);
        }
        Ok(self.configmaps[name].as_ref())
    }

    pub async fn secret(&mut self, name: &str) -> Result<Option<&Secret>, ConfigError> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), self.namespace);
            let found = api
                .get_opt(name)
                .await
                .map_err(|source| ConfigError::Read {
                    kind: "secret",
                    name: name.to_string(),
                    source,
                })?;
            self.secrets.insert(name.to_string(), found);
        }
        Ok(self.secrets[name].as_ref())
    }
}

/// The values of a ConfigMap (text and binary data) as strings.
pub fn configmap_data(cm: &ConfigMap) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    out.extend(
        cm.binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone())),
    );
    out
}

/// The values of a Secret (`data` and, if the API server left it, `stringData`).
pub fn secret_data(secret: &Secret) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    out.extend(
        secret
            .string_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
    );
    out
}

/// A downward API field of the pod.
pub fn field_value(sources: &Sources<'_>, path: &str) -> Result<String, ConfigError> {
    let meta = &sources.pod.metadata;
    let spec = sources.pod.spec.as_ref();
    let keyed = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"))
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => sources.namespace.to_string(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => sources.host_ip.clone(),
        "status.podIP" | "status.podIPs" => sources.pod_ip.clone(),
        _ => {
            if let Some(key) = keyed("metadata.labels") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(key))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(key) = keyed("metadata.annotations") {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(key))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(ConfigError::UnsupportedField(path.to_string()));
            }
        }
    })
}
