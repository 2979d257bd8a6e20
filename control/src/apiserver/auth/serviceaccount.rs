//! ServiceAccount tokens: JWTs (ES256) signed by the cluster's ServiceAccount key (one of the
//! cluster secrets, so every server signs and verifies alike), issued by TokenRequest
//! (`POST …/serviceaccounts/NAME/token`, `kubectl create token`) and checked on every request
//! that carries one.
//!
//! A token names its ServiceAccount and, when bound, a Pod or a Secret, each with its uid. It
//! is refused once it expires, when its audience is not one the API server accepts, and as
//! soon as its ServiceAccount or bound object is deleted (or replaced by one with another
//! uid): the authenticator keeps those objects' uids in memory from a watch of the store, so
//! it learns of a deletion when the store does, not at a cache expiry. The issuer's discovery
//! documents (`/.well-known/openid-configuration`, `/openid/v1/jwks`) let third parties check
//! tokens themselves.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::User;
use crate::store::{self, Key, Object, Store};

/// The default issuer (`--service-account-issuer`), as kube-apiserver's.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc";
/// How long a requested token lives unless the request says (an hour).
pub const DEFAULT_EXPIRATION: Duration = Duration::from_secs(3600);
/// The shortest a token may be asked to live (upstream's 10 minutes).
pub const MIN_EXPIRATION: Duration = Duration::from_secs(600);
/// The longest (a year).
pub const MAX_EXPIRATION: Duration = Duration::from_secs(365 * 24 * 3600);

const SERVICE_ACCOUNTS: &str = "serviceaccounts";
const PODS: &str = "pods";
const SECRETS: &str = "secrets";

/// An object a token names: its name and uid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Ref>,
}

/// A token's claims, as upstream's bound tokens carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

/// Signs and verifies tokens with the cluster's key.
pub struct Signer {
    key: EcdsaKeyPair,
    kid: String,
    /// `--service-account-issuer`.
    pub issuer: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("invalid ServiceAccount signing key: {0}")]
    Key(String),
    #[error("serviceaccount {0} is gone")]
    AccountGone(String),
    #[error("the token's bound {kind} {name} is gone")]
    BoundObjectGone { kind: &'static str, name: String },
    #[error("not a JWT")]
    Malformed,
    #[error("the token is not signed by this cluster")]
    Signature,
    #[error("the token's issuer is not this cluster's")]
    Issuer,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is not for this audience")]
    Audience,
}

impl Signer {
    /// A signer with the PKCS#8 ECDSA P-256 key of the cluster secrets.
    pub fn new(pkcs8: &[u8], issuer: impl Into<String>) -> Result<Self, TokenError> {
        let rng = ring::rand::SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                .map_err(|e| TokenError::Key(e.to_string()))?;
        let kid = B64URL.encode(Sha256::digest(key.public_key().as_ref()));
        Ok(Self {
            key,
            kid,
            issuer: issuer.into(),
        })
    }

    /// The signed token of `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(serde_json::to_vec(claims).expect("claims serialize"))
        );
        let rng = ring::rand::SystemRandom::new();
        let signature = self
            .key
            .sign(&rng, signing_input.as_bytes())
            .expect("ECDSA signing does not fail");
        format!("{signing_input}.{}", B64URL.encode(signature.as_ref()))
    }

    /// The claims of a token this cluster signed, valid at `now` for one of `audiences`.
    pub fn verify(
        &self,
        token: &str,
        audiences: &[String],
        now: SystemTime,
    ) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Value = B64URL
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or(TokenError::Malformed)?;
        if header["alg"] != "ES256" {
            return Err(TokenError::Signature);
        }
        let signature = B64URL
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let signed = &token[..header_and_payload_len(token)];
        signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        )
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| TokenError::Signature)?;
        let claims: Claims = B64URL
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer);
        }
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        // A minute of slack for clocks, as upstream's.
        if now + 60 < claims.nbf {
            return Err(TokenError::NotYetValid);
        }
        if !claims.aud.iter().any(|a| audiences.contains(a)) {
            return Err(TokenError::Audience);
        }
        Ok(claims)
    }

    /// `/.well-known/openid-configuration`.
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// `/openid/v1/jwks`: the public key as a JWK.
    pub fn jwks(&self) -> Value {
        // An uncompressed point: 0x04, then x and y.
        let point = self.key.public_key().as_ref();
        json!({"keys": [{
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": B64URL.encode(&point[1..33]),
            "y": B64URL.encode(&point[33..65]),
        }]})
    }
}

fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

/// The uids of the objects tokens name, by namespace and name, kept by a watch.
#[derive(Default)]
struct Uids {
    by_resource: HashMap<&'static str, HashMap<(String, String), String>>,
}

/// ServiceAccount tokens: the signer, the audiences the API server accepts, and what the
/// authenticator needs to know about the objects tokens name.
pub struct ServiceAccountTokens {
    pub signer: Signer,
    /// The audiences the API server accepts (its issuer, as upstream's default
    /// `--api-audiences`).
    pub api_audiences: Vec<String>,
    uids: RwLock<Uids>,
}

impl ServiceAccountTokens {
    /// Starts following ServiceAccounts, Pods and Secrets in `store`; returns once they are
    /// read.
    pub async fn start(store: Arc<dyn Store>, signer: Signer) -> store::Result<Arc<Self>> {
        let tokens = Arc::new(Self {
            api_audiences: vec![signer.issuer.clone()],
            signer,
            uids: RwLock::default(),
        });
        store::follow::follow(store, &[SERVICE_ACCOUNTS, PODS, SECRETS], &tokens).await?;
        Ok(tokens)
    }

    fn uid(&self, resource: &str, namespace: &str, name: &str) -> Option<String> {
        self.uids
            .read()
            .expect("the token cache lock is not poisoned")
            .by_resource
            .get(resource)?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The user a ServiceAccount token names, or why it is refused.
    pub fn authenticate(&self, token: &str) -> Result<User, TokenError> {
        let claims = self
            .signer
            .verify(token, &self.api_audiences, SystemTime::now())?;
        let k = &claims.kubernetes;
        let ns = k.namespace.as_str();
        if self
            .uid(SERVICE_ACCOUNTS, ns, &k.serviceaccount.name)
            .as_deref()
            != Some(k.serviceaccount.uid.as_str())
        {
            return Err(TokenError::AccountGone(format!(
                "{ns}/{}",
                k.serviceaccount.name
            )));
        }
        for (resource, bound) in [(PODS, &k.pod), (SECRETS, &k.secret)] {
            if let Some(bound) = bound
                && self.uid(resource, ns, &bound.name).as_deref() != Some(bound.uid.as_str())
            {
                return Err(TokenError::BoundObjectGone {
                    kind: resource,
                    name: format!("{ns}/{}", bound.name),
                });
            }
        }
        let mut user = User::new(
            format!(
                "{}{ns}:{}",
                super::SERVICE_ACCOUNT_PREFIX,
                k.serviceaccount.name
            ),
            [
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{ns}"),
            ],
        );
        user.uid = k.serviceaccount.uid.clone();
        let mut extra = BTreeMap::new();
        if let Some(pod) = &k.pod {
            extra.insert(
                "authentication.kubernetes.io/pod-name".to_string(),
                vec![pod.name.clone()],
            );
            extra.insert(
                "authentication.kubernetes.io/pod-uid".to_string(),
                vec![pod.uid.clone()],
            );
        }
        extra.insert(
            "authentication.kubernetes.io/credential-id".to_string(),
            vec![format!("JTI={}", claims.jti)],
        );
        user.extra = extra;
        Ok(user)
    }
}

impl store::follow::Sink for ServiceAccountTokens {
    fn reset(&self, resource: &str, objects: &[Object]) {
        let Some(resource) = [SERVICE_ACCOUNTS, PODS, SECRETS]
            .into_iter()
            .find(|r| *r == resource)
        else {
            return;
        };
        let map = objects
            .iter()
            .map(|o| {
                (
                    (o.key.namespace.clone(), o.key.name.clone()),
                    uid_of(&o.value),
                )
            })
            .collect();
        self.uids
            .write()
            .expect("the token cache lock is not poisoned")
            .by_resource
            .insert(resource, map);
    }

    fn apply(&self, resource: &str, key: &Key, value: Option<&Value>) {
        let Some(resource) = [SERVICE_ACCOUNTS, PODS, SECRETS]
            .into_iter()
            .find(|r| *r == resource)
        else {
            return;
        };
        let mut uids = self
            .uids
            .write()
            .expect("the token cache lock is not poisoned");
        let map = uids.by_resource.entry(resource).or_default();
        let at = (key.namespace.clone(), key.name.clone());
        match value {
            Some(value) => map.insert(at, uid_of(value)),
            None => map.remove(&at),
        };
    }
}

fn uid_of(value: &Value) -> String {
    value["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `GET /.well-known/openid-configuration`.
pub async fn serve_discovery(
    axum::extract::State(state): axum::extract::State<crate::apiserver::ApiState>,
) -> axum::response::Response {
    serve_document(&state, Signer::discovery)
}

/// `GET /openid/v1/jwks`.
pub async fn serve_jwks(
    axum::extract::State(state): axum::extract::State<crate::apiserver::ApiState>,
) -> axum::response::Response {
    serve_document(&state, Signer::jwks)
}

fn serve_document(
    state: &crate::apiserver::ApiState,
    document: fn(&Signer) -> Value,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match &state.service_accounts {
        Some(tokens) => axum::Json(document(&tokens.signer)).into_response(),
        None => crate::apiserver::status::ApiError::not_found_path("the ServiceAccount issuer")
            .into_response(),
    }
}

/// Whether a bearer token looks like a JWT (three base64url parts, a JSON header).
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.matches('.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let rng = ring::rand::SystemRandom::new();
        let key = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        Signer::new(key.as_ref(), DEFAULT_ISSUER).unwrap()
    }

    fn claims(now: i64) -> Claims {
        Claims {
            iss: DEFAULT_ISSUER.into(),
            sub: "system:serviceaccount:a:builder".into(),
            aud: vec![DEFAULT_ISSUER.into()],
            exp: now + 600,
            iat: now,
            nbf: now,
            jti: "j".into(),
            kubernetes: KubernetesClaims {
                namespace: "a".into(),
                serviceaccount: Ref {
                    name: "builder".into(),
                    uid: "u1".into(),
                },
                pod: None,
                secret: None,
            },
        }
    }

    #[test]
    fn tokens_verify_only_as_signed_in_time_and_for_their_audience() {
        let signer = signer();
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let audiences = vec![DEFAULT_ISSUER.to_string()];
        let token = signer.sign(&claims(secs));
        assert!(looks_like_jwt(&token));
        assert_eq!(
            signer.verify(&token, &audiences, now).unwrap(),
            claims(secs)
        );
        // Expired.
        let later = now + Duration::from_secs(601);
        assert_eq!(
            signer.verify(&token, &audiences, later),
            Err(TokenError::Expired)
        );
        // Another audience.
        assert_eq!(
            signer.verify(&token, &["vault".to_string()], now),
            Err(TokenError::Audience)
        );
        // Tampered: another ServiceAccount in the payload, same signature.
        let mut forged = claims(secs);
        forged.kubernetes.serviceaccount.name = "admin".into();
        let forged_payload = B64URL.encode(serde_json::to_vec(&forged).unwrap());
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(
            signer.verify(&tampered, &audiences, now),
            Err(TokenError::Signature)
        );
        // Another cluster's key.
        assert_eq!(
            super::tests::signer().verify(&token, &audiences, now),
            Err(TokenError::Signature)
        );
        assert_eq!(
            signer.verify("a.b", &audiences, now),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn the_jwks_carries_the_public_point() {
        let signer = signer();
        let jwks = signer.jwks();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "EC");
        assert_eq!(B64URL.decode(key["x"].as_str().unwrap()).unwrap().len(), 32);
        assert_eq!(key["kid"], signer.kid);
        assert_eq!(
            signer.discovery()["jwks_uri"],
            "https://kubernetes.default.svc/openid/v1/jwks"
        );
    }
}
