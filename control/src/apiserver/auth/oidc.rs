//! OpenID Connect ID tokens from an external issuer (`--oidc-issuer-url`,
//! `--oidc-client-id`, `--oidc-username-claim`, `--oidc-groups-claim`, `--oidc-ca-file`), as
//! kube-apiserver's OIDC authenticator: the issuer's keys come from its discovery document's
//! `jwks_uri`, fetched at start and again every few minutes and whenever a token names a key
//! not seen yet; a token is accepted when its signature (ES256 or RS256) verifies, `iss` is
//! the issuer, `aud` names the client id, and it has not expired. The user is the username
//! claim (prefixed `ISSUER#` unless the claim is `email`, as upstream; an `email` whose
//! `email_verified` is false is refused), the groups the groups claim.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::signature;
use serde_json::Value;

use super::User;

/// How often the issuer's keys are read again.
const REFRESH: Duration = Duration::from_secs(300);
/// The least time between two reads for an unknown key.
const MIN_REFRESH: Duration = Duration::from_secs(10);

/// Why the issuer's keys could not be read, or a token is refused.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("--oidc-ca-file: {0}")]
    Ca(reqwest::Error),
    #[error("cannot make a client for the issuer: {0}")]
    Client(reqwest::Error),
    #[error("cannot read {url}: {source}")]
    Fetch { url: String, source: reqwest::Error },
    #[error("the issuer's discovery document has no jwks_uri")]
    NoJwksUri,
    #[error("not a JWT")]
    Malformed,
    #[error("another issuer")]
    Issuer,
    #[error("no key {0:?} from the issuer")]
    UnknownKey(String),
    #[error("the signature does not verify")]
    Signature,
    #[error("not for this client id")]
    Audience,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("no {0:?} claim")]
    NoUsername(String),
    #[error("the email is not verified")]
    EmailNotVerified,
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer_url: String,
    pub client_id: String,
    pub username_claim: String,
    pub groups_claim: Option<String>,
    /// PEM CAs to trust for the issuer (else the system's roots).
    pub ca_pem: Option<String>,
}

/// A verifying key of the issuer.
enum Key {
    Ec(Vec<u8>),
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

pub struct Oidc {
    config: OidcConfig,
    keys: RwLock<HashMap<String, Key>>,
    client: reqwest::Client,
    last_read: std::sync::Mutex<Option<Instant>>,
}

impl Oidc {
    /// Starts reading the issuer's keys (now, then every few minutes). An issuer that does
    /// not answer yet is tried again; its tokens are refused meanwhile.
    pub fn start(config: OidcConfig) -> Result<Arc<Self>, OidcError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let roots: Vec<reqwest::Certificate> = match &config.ca_pem {
            Some(pem) => {
                reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(OidcError::Ca)?
            }
            None => rustls_native_certs::load_native_certs()
                .certs
                .iter()
                .filter_map(|c| reqwest::Certificate::from_der(c).ok())
                .collect(),
        };
        let mut client = reqwest::Client::builder().timeout(Duration::from_secs(10));
        for root in roots {
            client = client.add_root_certificate(root);
        }
        let oidc = Arc::new(Self {
            config,
            keys: RwLock::default(),
            client: client.build().map_err(OidcError::Client)?,
            last_read: std::sync::Mutex::new(None),
        });
        let weak = Arc::downgrade(&oidc);
        tokio::spawn(async move {
            loop {
                let Some(oidc) = weak.upgrade() else { return };
                let wait = match oidc.read_keys().await {
                    Ok(count) => {
                        tracing::debug!(count, "read the OIDC issuer's keys");
                        REFRESH
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the OIDC issuer's keys");
                        MIN_REFRESH
                    }
                };
                drop(oidc);
                tokio::time::sleep(wait).await;
            }
        });
        Ok(oidc)
    }

    async fn read_keys(&self) -> Result<usize, OidcError> {
        *self.last_read.lock().expect("not poisoned") = Some(Instant::now());
        let issuer = self.config.issuer_url.trim_end_matches('/');
        let discovery = self
            .fetch(&format!("{issuer}/.well-known/openid-configuration"))
            .await?;
        let jwks_uri = discovery["jwks_uri"].as_str().ok_or(OidcError::NoJwksUri)?;
        let jwks = self.fetch(jwks_uri).await?;
        let mut keys = HashMap::new();
        for key in jwks["keys"].as_array().into_iter().flatten() {
            let kid = key["kid"].as_str().unwrap_or_default().to_string();
            let part = |name: &str| key[name].as_str().and_then(|v| B64URL.decode(v).ok());
            let parsed = match key["kty"].as_str() {
                Some("EC") if key["crv"] == "P-256" => match (part("x"), part("y")) {
                    (Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                        let mut point = vec![4];
                        point.extend(x);
                        point.extend(y);
                        Some(Key::Ec(point))
                    }
                    _ => None,
                },
                Some("RSA") => match (part("n"), part("e")) {
                    (Some(n), Some(e)) => Some(Key::Rsa { n, e }),
                    _ => None,
                },
                _ => None,
            };
            if let Some(parsed) = parsed {
                keys.insert(kid, parsed);
            }
        }
        let count = keys.len();
        *self.keys.write().expect("not poisoned") = keys;
        Ok(count)
    }

    async fn fetch(&self, url: &str) -> Result<Value, OidcError> {
        let failed = |source| OidcError::Fetch {
            url: url.to_string(),
            source,
        };
        self.client
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(failed)?
            .json()
            .await
            .map_err(failed)
    }

    /// Reads the keys again soon, unless it was done a moment ago.
    fn refresh_soon(self: &Arc<Self>) {
        let recent = self
            .last_read
            .lock()
            .expect("not poisoned")
            .is_some_and(|at| at.elapsed() < MIN_REFRESH);
        if !recent {
            let oidc = self.clone();
            tokio::spawn(async move {
                let _ = oidc.read_keys().await;
            });
        }
    }

    /// The user an ID token names, or why it is refused.
    pub fn authenticate(self: &Arc<Self>, token: &str) -> Result<User, OidcError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(OidcError::Malformed);
        };
        let decode = |part: &str| -> Result<Value, OidcError> {
            B64URL
                .decode(part)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or(OidcError::Malformed)
        };
        let header = decode(header)?;
        let claims = decode(payload)?;
        if claims["iss"] != self.config.issuer_url.as_str() {
            return Err(OidcError::Issuer);
        }
        let signature = B64URL.decode(sig).map_err(|_| OidcError::Malformed)?;
        let signed = &token[..token.rfind('.').unwrap_or(0)];
        let kid = header["kid"].as_str().unwrap_or_default();
        {
            let keys = self.keys.read().expect("not poisoned");
            let key = match keys.get(kid) {
                Some(key) => key,
                None if keys.len() == 1 && kid.is_empty() => keys.values().next().expect("one"),
                None => {
                    drop(keys);
                    self.refresh_soon();
                    return Err(OidcError::UnknownKey(kid.to_string()));
                }
            };
            let verified = match (header["alg"].as_str(), key) {
                (Some("ES256"), Key::Ec(point)) => {
                    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                        .verify(signed.as_bytes(), &signature)
                        .is_ok()
                }
                (Some("RS256"), Key::Rsa { n, e }) => signature::RsaPublicKeyComponents { n, e }
                    .verify(
                        &signature::RSA_PKCS1_2048_8192_SHA256,
                        signed.as_bytes(),
                        &signature,
                    )
                    .is_ok(),
                _ => false,
            };
            if !verified {
                return Err(OidcError::Signature);
            }
        }
        let audience_ok = match &claims["aud"] {
            Value::String(aud) => *aud == self.config.client_id,
            Value::Array(list) => list.iter().any(|a| *a == self.config.client_id.as_str()),
            _ => false,
        };
        if !audience_ok {
            return Err(OidcError::Audience);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        match claims["exp"].as_i64() {
            Some(exp) if exp > now => {}
            _ => return Err(OidcError::Expired),
        }
        if claims["nbf"].as_i64().is_some_and(|nbf| nbf > now + 60) {
            return Err(OidcError::NotYetValid);
        }
        let claim = self.config.username_claim.as_str();
        let name = claims[claim]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| OidcError::NoUsername(claim.to_string()))?;
        if claim == "email" && claims["email_verified"] == Value::Bool(false) {
            return Err(OidcError::EmailNotVerified);
        }
        let name = if claim == "email" {
            name.to_string()
        } else {
            format!("{}#{name}", self.config.issuer_url)
        };
        let groups: Vec<String> = match self.config.groups_claim.as_deref().map(|g| &claims[g]) {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|g| g.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        Ok(User::new(name, groups))
    }
}
