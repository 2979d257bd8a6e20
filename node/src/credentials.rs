//! The node's own identity: a client certificate for `system:node:NAME` in `system:nodes`,
//! which the Node authorizer and NodeRestriction admission know (the node reads what its
//! pods use and writes its own objects, and nothing else).
//!
//! The node gets it once through a CertificateSigningRequest for the signer
//! `kubernetes.io/kube-apiserver-client-kubelet`, with one of two [`Bootstrap`] credentials:
//! - a kubeconfig that may approve the request (the admin's: `bosun up`, or
//!   `bosun node --kubeconfig`), which creates and approves it;
//! - the cluster token (`bosun node --server URL --token TOKEN`, as k3s agents join): the node
//!   first fetches the CA from `/cacerts` and trusts it only if the server proves it holds the
//!   token ([`bosun_tls::verify_join_proof`] of a fresh nonce), then creates the request with
//!   the token, and the control plane approves it for holders of the token.
//!
//! The key, the certificate and the CA are kept in `DATA_DIR/identity/` (`node.key`,
//! `node.crt`, `ca.crt`), so a restarted node reuses them (with a token, the CA stays pinned;
//! with a kubeconfig, a certificate of another CA is replaced). Before the certificate is [`RENEW_AT`] through its life the
//! node asks for a new one with the old one (approved by the control plane, since a node may
//! renew its own) and shows it from the next connection on, without restarting anything.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// How far through its life a certificate is renewed.
pub const RENEW_AT: f64 = 0.8;
const POLL: Duration = Duration::from_millis(250);

/// What the node proves itself with the first time.
pub enum Bootstrap {
    /// Credentials that may create and approve the node's request (the admin kubeconfig).
    Kubeconfig(Box<kube::Config>),
    /// The cluster token, and where a server is (`https://HOST:PORT`).
    Token { server: String, token: String },
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach {server} for the cluster CA: {reason}")]
    FetchCa { server: String, reason: String },
    #[error(
        "{server} could not prove it holds the cluster token: wrong token, or not this cluster's server"
    )]
    WrongToken { server: String },
    #[error("invalid server URL {0:?}")]
    Server(String),
    #[error("TLS: {0}")]
    Tls(#[from] bosun_tls::Error),
    #[error("cannot make the node's key or certificate request: {0}")]
    Key(#[from] rcgen::Error),
    #[error("the API refused the certificate request: {0}")]
    Api(#[from] kube::Error),
    #[error("the certificate request {name} was {outcome}: {message}")]
    Refused {
        name: String,
        outcome: String,
        message: String,
    },
    #[error(
        "no certificate for the node's request {name} within {waited:?} (approve it: kubectl certificate approve {name})"
    )]
    Timeout { name: String, waited: Duration },
    #[error("the node's certificate is not a valid X.509 certificate: {0}")]
    Certificate(String),
}

/// The node's client and what it was made with.
pub struct Credentials {
    pub client: kube::Client,
    /// The cluster CA (PEM), which the node's own server trusts for the API server.
    pub ca_pem: String,
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for Credentials {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// What is kept in `DATA_DIR/identity/`.
struct Stored {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl Stored {
    const FILES: [&'static str; 3] = ["ca.crt", "node.crt", "node.key"];

    fn read(dir: &Path) -> Option<Self> {
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
        Some(Self {
            ca_pem: read(Self::FILES[0])?,
            cert_pem: read(Self::FILES[1])?,
            key_pem: read(Self::FILES[2])?,
        })
    }

    fn write(&self, dir: &Path) -> Result<(), CredentialsError> {
        use std::io::Write as _;
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| CredentialsError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("cannot create", dir))?;
        let texts = [&self.ca_pem, &self.cert_pem, &self.key_pem];
        for (file, text) in Self::FILES.iter().zip(texts) {
            // Written aside and renamed, so a crash never leaves half a key.
            let path = dir.join(file);
            let temporary = dir.join(format!(".{file}.new"));
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temporary)
                .map_err(io("cannot write", &temporary))?;
            out.write_all(text.as_bytes())
                .map_err(io("cannot write", &temporary))?;
            std::fs::rename(&temporary, &path).map_err(io("cannot write", &path))?;
        }
        Ok(())
    }
}

/// A certificate's subject common name and validity.
struct Validity {
    common_name: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Validity {
    fn of(cert_pem: &str) -> Result<Self, CredentialsError> {
        let der = bosun_tls::certificates_der(cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| CredentialsError::Certificate("no certificate".into()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CredentialsError::Certificate(e.to_string()))?;
        let at = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
        };
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(Self {
            common_name,
            not_before: at(cert.validity().not_before),
            not_after: at(cert.validity().not_after),
        })
    }

    /// When to renew: [`RENEW_AT`] through the certificate's life.
    fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life.mul_f64(RENEW_AT)
    }
}

/// The user a node named `name` is.
pub fn user_name(name: &str) -> String {
    format!("system:node:{name}")
}

/// The node's client: from its stored certificate when it has a valid one for `name`,
/// otherwise after getting one with `bootstrap`. Keeps renewing it in the background for as
/// long as the returned [`Credentials`] live.
pub async fn establish(
    name: &str,
    data_dir: &Path,
    bootstrap: Bootstrap,
    user_agent: &str,
    timeout: Duration,
) -> Result<Credentials, CredentialsError> {
    let dir = data_dir.join("identity");
    let user = user_name(name);
    // The server is the one given now (a restarted `bosun up` may listen elsewhere); a
    // kubeconfig also names the CA, which a kept certificate must belong to.
    let (server, given_ca) = match &bootstrap {
        Bootstrap::Kubeconfig(config) => {
            let ca_pem = config
                .root_cert
                .iter()
                .flatten()
                .map(|der| pem("CERTIFICATE", der))
                .collect::<String>();
            (config.cluster_url.to_string(), Some(ca_pem))
        }
        Bootstrap::Token { server, .. } => (server.clone(), None),
    };
    let server = server.trim_end_matches('/').to_string();
    let usable = |stored: &Stored| {
        given_ca.as_ref().is_none_or(|ca| *ca == stored.ca_pem)
            && Validity::of(&stored.cert_pem)
                .is_ok_and(|v| v.common_name == user && v.not_after > SystemTime::now())
    };
    let stored = match Stored::read(&dir).filter(usable) {
        Some(stored) => stored,
        None => {
            let (client, ca_pem, approve) = match bootstrap {
                Bootstrap::Kubeconfig(config) => (
                    kube::Client::try_from(*config)?,
                    given_ca.unwrap_or_default(),
                    true,
                ),
                Bootstrap::Token { server, token } => {
                    let ca_pem = fetch_ca(&server, &token).await?;
                    let mut config = kube::Config::new(
                        server
                            .parse()
                            .map_err(|_| CredentialsError::Server(server.clone()))?,
                    );
                    config.root_cert = Some(bosun_tls::certificates_der(&ca_pem)?);
                    config.auth_info.token = Some(token.into());
                    (kube::Client::try_from(config)?, ca_pem, false)
                }
            };
            let (cert_pem, key_pem) = request_certificate(&client, name, approve, timeout).await?;
            let stored = Stored {
                ca_pem,
                cert_pem,
                key_pem,
            };
            stored.write(&dir)?;
            tracing::info!(user, "the node has its client certificate");
            stored
        }
    };
    let identity = Arc::new(bosun_tls::RotatingIdentity::new(
        &bosun_tls::Identity::from_pem(&stored.cert_pem, &stored.key_pem)?,
    )?);
    let client = client(&server, &stored.ca_pem, identity.clone(), user_agent)?;
    let renewal = tokio::spawn(renew(
        client.clone(),
        name.to_string(),
        dir,
        identity,
        timeout,
    ));
    Ok(Credentials {
        client,
        ca_pem: stored.ca_pem,
        renewal,
    })
}

/// A kube client that shows the node's current certificate on every new connection.
fn client(
    server: &str,
    ca_pem: &str,
    identity: Arc<bosun_tls::RotatingIdentity>,
    user_agent: &str,
) -> Result<kube::Client, CredentialsError> {
    use kube::client::ConfigExt as _;
    let url = server
        .parse()
        .map_err(|_| CredentialsError::Server(server.to_string()))?;
    let mut config = kube::Config::new(url);
    if let Ok(agent) = http::HeaderValue::from_str(user_agent) {
        config.headers.push((http::header::USER_AGENT, agent));
    }
    let tls = bosun_tls::rotating_client_config(ca_pem, identity)?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    // kube's own builder gives up connecting after 30 s too (and has no read timeout: a watch
    // ends by the server's timeoutSeconds).
    http.set_connect_timeout(Some(Duration::from_secs(30)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .layer(config.extra_headers_layer()?)
        .map_err(
            |e: hyper_util::client::legacy::Error| -> Box<dyn std::error::Error + Send + Sync> {
                e.into()
            },
        )
        .service(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https),
        );
    Ok(kube::Client::new(service, config.default_namespace))
}

/// `GET SERVER/cacerts?nonce=N` without trusting the server yet; the CA it answers is
/// accepted only with a proof that checks against `token`.
async fn fetch_ca(server: &str, token: &str) -> Result<String, CredentialsError> {
    use http_body_util::BodyExt as _;
    let failed = |reason: String| CredentialsError::FetchCa {
        server: server.to_string(),
        reason,
    };
    let nonce: String = (0..16).map(|_| format!("{:02x}", rand_byte())).collect();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(bosun_tls::unverified_client_config()?)
        .https_only()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Empty<bytes::Bytes>>(https);
    let uri: http::Uri = format!("{}/cacerts?nonce={nonce}", server.trim_end_matches('/'))
        .parse()
        .map_err(|_| CredentialsError::Server(server.to_string()))?;
    let response = tokio::time::timeout(Duration::from_secs(30), client.get(uri))
        .await
        .map_err(|_| failed("no answer within 30s".into()))?
        .map_err(|e| failed(e.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status())));
    }
    let proof = response
        .headers()
        .get("bosun-token-proof")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| failed(e.to_string()))?
        .to_bytes();
    let ca_pem = String::from_utf8_lossy(&body).into_owned();
    if !bosun_tls::verify_join_proof(token, &nonce, &ca_pem, &proof) {
        return Err(CredentialsError::WrongToken {
            server: server.to_string(),
        });
    }
    Ok(ca_pem)
}

fn rand_byte() -> u8 {
    let mut byte = [0u8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte)
        .expect("the system's random source works");
    byte[0]
}

/// Creates the node's request (approving it when `approve`) and waits for its certificate:
/// (certificate, key), PEM.
async fn request_certificate(
    client: &kube::Client,
    name: &str,
    approve: bool,
    timeout: Duration,
) -> Result<(String, String), CredentialsError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, user_name(name));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params.serialize_request(&key)?.pem()?;
    let signing = Signing {
        signer: bosun_api::certificates::NODE_CLIENT_SIGNER,
        usages: &["digital signature", "key encipherment", "client auth"],
        expiration: None,
        generate_name: "node-csr-",
        approval: approve.then_some(Approval {
            reason: "NodeBootstrap",
            message: "approved by the node with its bootstrap credentials",
        }),
        timeout,
    };
    let cert_pem = signing
        .certificate(client, &request, |csr| {
            tracing::info!(
                csr,
                "the bootstrap credentials may not approve the node's request; waiting"
            )
        })
        .await?;
    Ok((cert_pem, key.serialize_pem()))
}

/// A certificate through the CSR API (`certificates.k8s.io/v1`): what the node's own
/// certificate and `bosun kubeconfig` both go through.
pub struct Signing<'a> {
    pub signer: &'a str,
    pub usages: &'a [&'a str],
    /// `spec.expirationSeconds`; `None`: the signer's longest.
    pub expiration: Option<Duration>,
    /// The request's `metadata.generateName`.
    pub generate_name: &'a str,
    /// Approve the request with this condition, if the caller may.
    pub approval: Option<Approval<'a>>,
    /// How long to wait for the certificate.
    pub timeout: Duration,
}

/// The reason and message of an Approved condition.
pub struct Approval<'a> {
    pub reason: &'a str,
    pub message: &'a str,
}

impl Signing<'_> {
    /// Creates a request for `request_pem` (a PKCS#10 request, PEM), approves it when asked
    /// and allowed (otherwise `waiting` is told the request's name: someone else must), and
    /// waits for the certificate (PEM). A denied or failed request is an error with its
    /// message.
    pub async fn certificate(
        &self,
        client: &kube::Client,
        request_pem: &str,
        waiting: impl FnOnce(&str),
    ) -> Result<String, CredentialsError> {
        let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
        let mut spec = json!({
            "request": base64::engine::general_purpose::STANDARD.encode(request_pem),
            "signerName": self.signer,
            "usages": self.usages,
        });
        if let Some(expiration) = self.expiration {
            spec["expirationSeconds"] = json!(expiration.as_secs());
        }
        let csr: CertificateSigningRequest = serde_json::from_value(json!({
            "metadata": {"generateName": self.generate_name},
            "spec": spec,
        }))
        .expect("a valid CertificateSigningRequest");
        let created = csrs.create(&PostParams::default(), &csr).await?;
        let name = created.metadata.name.unwrap_or_default();
        if let Some(approval) = &self.approval {
            let condition = json!({"status": {"conditions": [{
                "type": "Approved",
                "status": "True",
                "reason": approval.reason,
                "message": approval.message,
            }]}});
            match csrs
                .patch_subresource(
                    "approval",
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&condition),
                )
                .await
            {
                Ok(_) => {}
                // Someone else may approve it (the control plane, or a person).
                Err(kube::Error::Api(e)) if e.code == 403 => waiting(&name),
                Err(e) => return Err(e.into()),
            }
        }
        let started = tokio::time::Instant::now();
        loop {
            let csr = csrs.get(&name).await?;
            let status = csr.status.unwrap_or_default();
            for condition in status.conditions.iter().flatten() {
                if (condition.type_ == "Denied" || condition.type_ == "Failed")
                    && condition.status != "False"
                {
                    return Err(CredentialsError::Refused {
                        name,
                        outcome: condition.type_.to_lowercase(),
                        message: format!(
                            "{} {}",
                            condition.reason.as_deref().unwrap_or_default(),
                            condition.message.as_deref().unwrap_or_default()
                        )
                        .trim()
                        .to_string(),
                    });
                }
            }
            if let Some(certificate) = status.certificate.filter(|c| !c.0.is_empty()) {
                return String::from_utf8(certificate.0)
                    .map_err(|_| CredentialsError::Certificate("not PEM".into()));
            }
            if started.elapsed() > self.timeout {
                return Err(CredentialsError::Timeout {
                    name,
                    waited: self.timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Renews the certificate [`RENEW_AT`] through its life, with itself, for ever.
async fn renew(
    client: kube::Client,
    name: String,
    dir: PathBuf,
    identity: Arc<bosun_tls::RotatingIdentity>,
    timeout: Duration,
) {
    let mut retry = Duration::from_secs(1);
    loop {
        let Some(stored) = Stored::read(&dir) else {
            tracing::warn!(dir = %dir.display(), "the node's identity files are gone; not renewing");
            return;
        };
        let wait = Validity::of(&stored.cert_pem)
            .ok()
            .and_then(|v| v.renew_at().duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        tokio::time::sleep(wait).await;
        let renewed = async {
            let (cert_pem, key_pem) = request_certificate(&client, &name, false, timeout).await?;
            let fresh = Stored {
                cert_pem,
                key_pem,
                ..stored
            };
            identity.set(&bosun_tls::Identity::from_pem(
                &fresh.cert_pem,
                &fresh.key_pem,
            )?)?;
            fresh.write(&dir)
        };
        match renewed.await {
            Ok(()) => {
                tracing::info!("renewed the node's client certificate");
                retry = Duration::from_secs(1);
            }
            Err(error) => {
                tracing::warn!(%error, ?retry, "cannot renew the node's client certificate");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// DER as PEM with `label` (`CERTIFICATE`).
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
