//! Images: Wasm artifacts pulled from OCI registries into a content-addressed cache on disk.
//!
//! The cache lives under the node's data directory:
//! - `blobs/sha256/<hex>`: layer contents, named by their digest and verified against it
//!   while they are written (a partial or corrupt download never gets the name);
//! - `refs/<hex of the reference>.json`: what a reference (`registry/repo:tag`) resolved to
//!   at its last pull, so `IfNotPresent` and `Never` can start without the registry.
//!
//! Four families of Wasm artifacts are understood, by their layer media type (see
//! [`WASM_LAYER_TYPES`]) or, for OCI 1.1 artifacts, by `artifactType: application/wasm`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use futures::StreamExt as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Layer media types that hold a Wasm module or component.
pub const WASM_LAYER_TYPES: [&str; 3] = [
    // wasm-to-oci and the original "config v0" artifacts.
    "application/wasm",
    // The CNCF TAG-Runtime Wasm OCI artifact layout (config v1).
    "application/vnd.wasm.content.layer.v1+wasm",
    // Components published by wkg and other Bytecode Alliance tools.
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
];

/// The OCI 1.1 `artifactType` of a Wasm artifact.
pub const WASM_ARTIFACT_TYPE: &str = "application/wasm";

/// Kubernetes' `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The policy a container asked for, or Kubernetes' default for its image: `Always` for
    /// `:latest` or no tag, else `IfNotPresent`.
    pub fn of(policy: Option<&str>, image: &str) -> Self {
        match policy {
            Some("Always") => Self::Always,
            Some("Never") => Self::Never,
            Some("IfNotPresent") => Self::IfNotPresent,
            _ => {
                let name = image.rsplit('/').next().unwrap_or(image);
                if image.contains('@') || name.split_once(':').is_some_and(|(_, t)| t != "latest") {
                    Self::IfNotPresent
                } else {
                    Self::Always
                }
            }
        }
    }
}

/// A pulled image, ready to run.
#[derive(Clone)]
pub struct Image {
    /// `registry/repository@sha256:…` of the manifest: the container's `imageID`.
    pub image_id: String,
    /// The digest of the Wasm layer.
    pub digest: String,
    pub wasm: Arc<[u8]>,
    /// Whether getting it went to the registry (false when the cache had it).
    pub pulled: bool,
}

/// Why an image could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PullError {
    #[error("invalid image name {image:?}: {reason}")]
    InvalidName { image: String, reason: String },
    #[error("container image {0:?} is not present with pull policy of Never")]
    NeverPull(String),
    #[error("failed to pull image {image:?}: {reason}")]
    Registry { image: String, reason: String },
    #[error("image {image:?} is not a Wasm artifact: {reason}")]
    NotWasm { image: String, reason: NotWasm },
    #[error("image cache: {0}")]
    Cache(String),
}

impl PullError {
    /// The reason a container waits with, as the kubelet words it.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidName { .. } => "InvalidImageName",
            Self::NeverPull(_) => "ErrImageNeverPull",
            _ => "ErrImagePull",
        }
    }
}

/// Credentials for one registry host.
#[derive(Clone)]
pub struct Credential {
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A `.dockerconfigjson` that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error("not a docker config: {0}")]
    Json(#[from] serde_json::Error),
    #[error("auth of {server} is {problem}")]
    Auth {
        server: String,
        problem: &'static str,
    },
}

/// The credentials in a `kubernetes.io/dockerconfigjson` secret's `.dockerconfigjson`.
pub fn parse_docker_config(json: &[u8]) -> Result<Vec<Credential>, DockerConfigError> {
    #[derive(Deserialize)]
    struct Config {
        #[serde(default)]
        auths: HashMap<String, Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    let config: Config = serde_json::from_slice(json)?;
    let mut out = Vec::new();
    for (server, entry) in config.auths {
        let (username, password) = match (entry.username, entry.password, entry.auth) {
            (Some(u), Some(p), _) => (u, p),
            (_, _, Some(auth)) => {
                let bad = |problem| DockerConfigError::Auth {
                    server: server.clone(),
                    problem,
                };
                let decoded = B64.decode(auth.trim()).map_err(|_| bad("not base64"))?;
                let text = String::from_utf8(decoded).map_err(|_| bad("not UTF-8"))?;
                let (u, p) = text
                    .split_once(':')
                    .ok_or_else(|| bad("not user:password"))?;
                (u.to_string(), p.to_string())
            }
            _ => continue,
        };
        out.push(Credential {
            registry: registry_host(&server),
            username,
            password,
        });
    }
    Ok(out)
}

/// `https://host:port/v1/` → `host:port`, as docker config keys are written.
fn registry_host(server: &str) -> String {
    let s = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => host.to_string(),
    }
}

/// What a reference resolved to at its last pull.
#[derive(Debug, Serialize, Deserialize)]
struct RefRecord {
    reference: String,
    image_id: String,
    digest: String,
}

/// The node's image store.
pub struct Images {
    /// For anonymous pulls.
    client: Client,
    /// One client per credential: oci-client keeps the first login it is given for a
    /// registry, so a shared client would lend one pod's credentials to the next.
    logged_in: Mutex<HashMap<(String, String, String), Client>>,
    insecure: Vec<String>,
    blobs: PathBuf,
    refs: PathBuf,
    /// Layers in memory while some container uses them.
    loaded: Mutex<HashMap<String, Weak<[u8]>>>,
}

impl Images {
    /// Opens (creating) the cache under `dir`. Registries in `insecure` are spoken to over
    /// plain HTTP; every other one over HTTPS.
    pub fn open(dir: &Path, insecure: &[String]) -> std::io::Result<Self> {
        let blobs = dir.join("blobs").join("sha256");
        let refs = dir.join("refs");
        std::fs::create_dir_all(&blobs)?;
        std::fs::create_dir_all(&refs)?;
        install_crypto_provider();
        Ok(Self {
            client: Self::new_client(insecure),
            logged_in: Mutex::new(HashMap::new()),
            insecure: insecure.to_vec(),
            blobs,
            refs,
            loaded: Mutex::new(HashMap::new()),
        })
    }

    fn new_client(insecure: &[String]) -> Client {
        Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure.to_vec()),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            user_agent: concat!("bosun/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        })
    }

    /// The client for `credential` (anonymous without one).
    fn client_for(&self, credential: Option<&Credential>) -> Client {
        let Some(c) = credential else {
            return self.client.clone();
        };
        let key = (c.registry.clone(), c.username.clone(), c.password.clone());
        let mut clients = self.logged_in.lock().unwrap();
        if clients.len() > 256 {
            clients.clear();
        }
        clients
            .entry(key)
            .or_insert_with(|| Self::new_client(&self.insecure))
            .clone()
    }

    /// The image for `image` under `policy`, pulling it if needed with the first credential
    /// that names its registry (anonymous without one).
    pub async fn ensure(
        &self,
        image: &str,
        policy: PullPolicy,
        credentials: &[Credential],
    ) -> Result<Image, PullError> {
        let reference: Reference =
            image
                .parse()
                .map_err(|e: oci_client::ParseError| PullError::InvalidName {
                    image: image.to_string(),
                    reason: e.to_string(),
                })?;
        if policy != PullPolicy::Always
            && let Some(found) = self.cached(&reference)?
        {
            return Ok(found);
        }
        if policy == PullPolicy::Never {
            return Err(PullError::NeverPull(image.to_string()));
        }
        let registry = reference.resolve_registry().to_string();
        let credential = credentials
            .iter()
            .find(|c| c.registry == registry || c.registry == reference.registry());
        let auth = credential.map_or(RegistryAuth::Anonymous, |c| {
            RegistryAuth::Basic(c.username.clone(), c.password.clone())
        });
        let client = self.client_for(credential);
        let registry_error = |e: oci_client::errors::OciDistributionError| PullError::Registry {
            image: image.to_string(),
            reason: e.to_string(),
        };
        let (manifest, manifest_digest) = client
            .pull_image_manifest(&reference, &auth)
            .await
            .map_err(registry_error)?;
        let layer = wasm_layer(&manifest).map_err(|reason| PullError::NotWasm {
            image: image.to_string(),
            reason,
        })?;
        let path = self.blob_path(&layer.digest)?;
        if !path.exists() {
            Self::download(&client, &reference, layer, &path)
                .await
                .map_err(|e| match e {
                    Download::Registry(e) => registry_error(e),
                    Download::Io(e) => PullError::Cache(e),
                })?;
        }
        let record = RefRecord {
            reference: reference.whole(),
            image_id: format!(
                "{}/{}@{manifest_digest}",
                reference.registry(),
                reference.repository()
            ),
            digest: layer.digest.clone(),
        };
        self.save_record(&reference, &record)?;
        let wasm = self.load(&record.digest)?;
        Ok(Image {
            image_id: record.image_id,
            digest: record.digest,
            wasm,
            pulled: true,
        })
    }

    /// The image as last pulled, if its layer is still cached.
    fn cached(&self, reference: &Reference) -> Result<Option<Image>, PullError> {
        let path = self.record_path(reference);
        let record: RefRecord = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(record) => record,
                Err(_) => return Ok(None),
            },
            Err(_) => return Ok(None),
        };
        if !self.blob_path(&record.digest)?.exists() {
            return Ok(None);
        }
        let wasm = self.load(&record.digest)?;
        Ok(Some(Image {
            image_id: record.image_id,
            digest: record.digest,
            wasm,
            pulled: false,
        }))
    }

    async fn download(
        client: &Client,
        reference: &Reference,
        layer: &OciDescriptor,
        path: &Path,
    ) -> Result<(), Download> {
        let io = |what: &str, e: std::io::Error| Download::Io(format!("{what}: {e}"));
        let temp = path.with_extension(format!(
            "partial-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let file = tokio::fs::File::create(&temp)
            .await
            .map_err(|e| io("cannot create a blob", e))?;
        // oci-client checks the bytes against the layer's digest as they arrive.
        let result = client.pull_blob(reference, layer, file).await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(Download::Registry(e));
        }
        tokio::fs::rename(&temp, path)
            .await
            .map_err(|e| io("cannot store a blob", e))
    }

    fn load(&self, digest: &str) -> Result<Arc<[u8]>, PullError> {
        let mut loaded = self.loaded.lock().unwrap();
        if let Some(wasm) = loaded.get(digest).and_then(Weak::upgrade) {
            return Ok(wasm);
        }
        let path = self.blob_path(digest)?;
        let bytes = std::fs::read(&path)
            .map_err(|e| PullError::Cache(format!("cannot read {}: {e}", path.display())))?;
        let wasm: Arc<[u8]> = bytes.into();
        loaded.retain(|_, w| w.strong_count() > 0);
        loaded.insert(digest.to_string(), Arc::downgrade(&wasm));
        Ok(wasm)
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, PullError> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| PullError::Cache(format!("unsupported digest {digest:?}")))?;
        Ok(self.blobs.join(hex))
    }

    fn record_path(&self, reference: &Reference) -> PathBuf {
        let hash = Sha256::digest(reference.whole().as_bytes());
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        self.refs.join(format!("{hex}.json"))
    }

    fn save_record(&self, reference: &Reference, record: &RefRecord) -> Result<(), PullError> {
        let path = self.record_path(reference);
        let temp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(record).expect("a record serializes");
        std::fs::write(&temp, bytes)
            .and_then(|()| std::fs::rename(&temp, &path))
            .map_err(|e| PullError::Cache(format!("cannot write {}: {e}", path.display())))
    }

    /// The digests of the layers some pod holds (pod workers keep their images while the pod
    /// lives).
    pub fn in_use(&self) -> HashSet<String> {
        let mut loaded = self.loaded.lock().unwrap();
        loaded.retain(|_, w| w.strong_count() > 0);
        loaded.keys().cloned().collect()
    }

    /// Deletes the least recently used blobs not in `in_use` until the cache holds at most
    /// `max_bytes`. Returns how many bytes it freed.
    pub fn collect_garbage(&self, max_bytes: u64, in_use: &HashSet<String>) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.blobs) else {
            return 0;
        };
        let mut blobs: Vec<(SystemTime, u64, PathBuf, String)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                let name = e.file_name().into_string().ok()?;
                let used = meta.accessed().or_else(|_| meta.modified()).ok()?;
                Some((used, meta.len(), e.path(), format!("sha256:{name}")))
            })
            .collect();
        let mut total: u64 = blobs.iter().map(|b| b.1).sum();
        blobs.sort_by_key(|b| b.0);
        let mut freed = 0;
        for (_, size, path, digest) in blobs {
            if total <= max_bytes {
                break;
            }
            if in_use.contains(&digest) || std::fs::remove_file(&path).is_err() {
                continue;
            }
            total -= size;
            freed += size;
        }
        freed
    }
}

/// How a pushed artifact is laid out: the four families the node pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `application/vnd.wasm.config.v0+json` config, `application/wasm` layer (the default,
    /// as `wkg oci push` writes it).
    ConfigV0,
    /// `application/vnd.wasm.config.v1+json`, `application/vnd.wasm.content.layer.v1+wasm`.
    ContentV1,
    /// OCI 1.1: `artifactType: application/wasm`, empty config, an untyped layer.
    Artifact,
    /// `application/vnd.bytecodealliance.wasm.component.layer.v0+wasm`.
    ComponentV0,
}

/// Pushes `wasm` to `image` (`registry/repository:tag`) as a Wasm artifact. Returns the
/// manifest's URL.
pub async fn push(
    image: &str,
    wasm: Vec<u8>,
    layout: Layout,
    insecure: bool,
    credential: Option<&Credential>,
) -> Result<String, PullError> {
    push_with_progress(image, wasm, layout, insecure, credential, Arc::new(|_| {})).await
}

/// How many bytes of a pushed layer the registry has been handed so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// [`push`], telling `progress` how far the upload of the Wasm layer is (it is sent in 1 MiB
/// chunks).
pub async fn push_with_progress(
    image: &str,
    wasm: Vec<u8>,
    layout: Layout,
    insecure: bool,
    credential: Option<&Credential>,
    progress: Progress,
) -> Result<String, PullError> {
    const CHUNK: usize = 1024 * 1024;
    use oci_client::client::{Config, ImageLayer};
    let reference: Reference =
        image
            .parse()
            .map_err(|e: oci_client::ParseError| PullError::InvalidName {
                image: image.to_string(),
                reason: e.to_string(),
            })?;
    install_crypto_provider();
    let protocol = if insecure {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    let client = Client::new(ClientConfig {
        protocol,
        user_agent: concat!("bosun/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    });
    let component = wasm.len() >= 8 && wasm[6..8] == [1, 0];
    let layer_digest = format!("sha256:{:x}", Sha256::digest(&wasm));
    let (config_type, layer_type) = match layout {
        Layout::ConfigV0 => ("application/vnd.wasm.config.v0+json", "application/wasm"),
        Layout::ContentV1 => (
            "application/vnd.wasm.config.v1+json",
            "application/vnd.wasm.content.layer.v1+wasm",
        ),
        Layout::Artifact => (
            "application/vnd.oci.empty.v1+json",
            "application/octet-stream",
        ),
        Layout::ComponentV0 => (
            "application/vnd.wasm.config.v0+json",
            "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
        ),
    };
    let config_data = if layout == Layout::Artifact {
        b"{}".to_vec()
    } else {
        serde_json::to_vec(&serde_json::json!({
            "architecture": "wasm",
            "os": if component { "wasip2" } else { "wasip1" },
            "layerDigests": [layer_digest],
        }))
        .expect("a config serializes")
    };
    let size = wasm.len() as u64;
    let layer = ImageLayer::new(wasm, layer_type.to_string(), None);
    let data = layer.data.clone();
    let config = Config::new(config_data, config_type.to_string(), None);
    let mut manifest = OciImageManifest::build(&[layer], &config, None);
    if layout == Layout::Artifact {
        manifest.artifact_type = Some(WASM_ARTIFACT_TYPE.to_string());
    }
    let auth = credential.map_or(RegistryAuth::Anonymous, |c| {
        RegistryAuth::Basic(c.username.clone(), c.password.clone())
    });
    let failed = |e: oci_client::errors::OciDistributionError| PullError::Registry {
        image: image.to_string(),
        reason: e.to_string(),
    };
    client
        .auth(&reference, &auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(failed)?;
    // The layer goes up in chunks; each one is counted as the uploader takes it.
    let chunks: Vec<bytes::Bytes> = (0..data.len())
        .step_by(CHUNK)
        .map(|start| data.slice(start..(start + CHUNK).min(data.len())))
        .collect();
    let mut sent = 0u64;
    let stream = futures::stream::iter(chunks).map(move |chunk| {
        sent += chunk.len() as u64;
        progress(sent);
        Ok(chunk)
    });
    let layer_digest = &manifest.layers[0].digest;
    client
        .push_blob_stream(&reference, stream, layer_digest, Some(size))
        .await
        .map_err(failed)?;
    client
        .push_blob(&reference, config.data, &manifest.config.digest)
        .await
        .map_err(failed)?;
    client
        .push_manifest(&reference, &manifest.into())
        .await
        .map_err(failed)
}

/// oci-client's reqwest is built without a default crypto provider (no C build): use ring,
/// as the rest of Bosun does, unless the process chose one already.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

enum Download {
    Registry(oci_client::errors::OciDistributionError),
    Io(String),
}

/// Why an image's manifest holds no Wasm binary.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotWasm {
    #[error("it has more than one Wasm layer")]
    TwoLayers,
    #[error("config {config} with layers [{}] (a Linux container image needs the runc runtime)", layers.join(", "))]
    Other { config: String, layers: Vec<String> },
}

/// The layer of `manifest` that holds the Wasm binary.
pub fn wasm_layer(manifest: &OciImageManifest) -> Result<&OciDescriptor, NotWasm> {
    let mut wasm = manifest
        .layers
        .iter()
        .filter(|l| WASM_LAYER_TYPES.contains(&l.media_type.as_str()));
    match (wasm.next(), wasm.next()) {
        (Some(layer), None) => return Ok(layer),
        (Some(_), Some(_)) => return Err(NotWasm::TwoLayers),
        (None, _) => {}
    }
    if manifest.artifact_type.as_deref() == Some(WASM_ARTIFACT_TYPE)
        && let [layer] = manifest.layers.as_slice()
    {
        return Ok(layer);
    }
    Err(NotWasm::Other {
        config: manifest.config.media_type.clone(),
        layers: manifest
            .layers
            .iter()
            .map(|l| l.media_type.clone())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pull_policy_follows_the_tag() {
        assert_eq!(PullPolicy::of(None, "r:5000/app"), PullPolicy::Always);
        assert_eq!(
            PullPolicy::of(None, "r:5000/app:latest"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::of(None, "r:5000/app:v1"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::of(None, "app@sha256:00"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(PullPolicy::of(Some("Never"), "app"), PullPolicy::Never);
    }

    #[test]
    fn docker_config_credentials() {
        let json = br#"{"auths":{"https://reg.example:5000/v1/":{"auth":"dXNlcjpwYTpzcw=="},
            "other":{"username":"a","password":"b"}}}"#;
        let mut creds = parse_docker_config(json).unwrap();
        creds.sort_by(|a, b| a.registry.cmp(&b.registry));
        assert_eq!(creds[1].registry, "reg.example:5000");
        assert_eq!(creds[1].username, "user");
        assert_eq!(creds[1].password, "pa:ss");
        assert_eq!(creds[0].registry, "other");
        assert!(parse_docker_config(b"{").is_err());
        assert!(parse_docker_config(br#"{"auths":{"x":{"auth":"!!"}}}"#).is_err());
    }

    #[test]
    fn garbage_collection_frees_unused_blobs_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::open(dir.path(), &[]).unwrap();
        let hex = |c: char| c.to_string().repeat(64);
        for (i, c) in ['a', 'b', 'c'].into_iter().enumerate() {
            let path = images.blob_path(&format!("sha256:{}", hex(c))).unwrap();
            std::fs::write(&path, vec![0u8; 1000]).unwrap();
            let when =
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 * (i as u64 + 1));
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_times(
                std::fs::FileTimes::new()
                    .set_accessed(when)
                    .set_modified(when),
            )
            .unwrap();
        }
        // 'a' is the oldest but in use; 'b' goes first, then nothing more is needed.
        let keep = [format!("sha256:{}", hex('a'))].into_iter().collect();
        assert_eq!(images.collect_garbage(2000, &keep), 1000);
        let left: HashSet<String> = std::fs::read_dir(&images.blobs)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, [hex('a'), hex('c')].into_iter().collect());
        // A held image counts as in use.
        let held = images.load(&format!("sha256:{}", hex('c'))).unwrap();
        assert!(images.in_use().contains(&format!("sha256:{}", hex('c'))));
        drop(held);
        assert!(images.in_use().is_empty());
    }

    fn descriptor(media_type: &str) -> OciDescriptor {
        OciDescriptor {
            media_type: media_type.to_string(),
            digest: "sha256:0".to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn wasm_layers_are_recognised() {
        let mut manifest = OciImageManifest {
            config: descriptor("application/vnd.wasm.config.v0+json"),
            layers: vec![descriptor("application/wasm")],
            ..Default::default()
        };
        assert!(wasm_layer(&manifest).is_ok());
        manifest.layers = vec![descriptor(
            "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
        )];
        assert!(wasm_layer(&manifest).is_ok());
        manifest.layers = vec![descriptor("application/octet-stream")];
        manifest.artifact_type = Some(WASM_ARTIFACT_TYPE.to_string());
        assert!(wasm_layer(&manifest).is_ok());
        manifest.artifact_type = None;
        manifest.layers = vec![descriptor("application/vnd.oci.image.layer.v1.tar+gzip")];
        let err = wasm_layer(&manifest).unwrap_err().to_string();
        assert!(err.contains("tar+gzip"), "{err}");
    }
}
