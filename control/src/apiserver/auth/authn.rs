//! Authentication: who a request's credentials say it is.
//!
//! - Bearer tokens, looked up by SHA-256 hash (tokens are never kept in clear): the bootstrap
//!   admin's (`system:admin` in `system:masters`) and those of `--token-auth-file`.
//! - Client certificates: the TLS layer has verified the chain against the cluster CA before
//!   the request arrives ([`bosun_tls::PeerCertificate`]); the subject's CN is the user name and
//!   each O a group, as in Kubernetes.
//!
//! A request that carries both a bearer token and a certificate is the token's; an unknown
//! token is refused even with a good certificate.

use std::collections::HashMap;
use std::path::Path;

use axum::extract::Request;
use axum::http::header::AUTHORIZATION;

use std::sync::Arc;

use super::oidc::Oidc;
use super::serviceaccount::{ServiceAccountTokens, looks_like_jwt};
use super::{MASTERS, User};
use crate::store::bootstrap::hash_token;

/// The bootstrap admin.
pub const ADMIN: &str = "system:admin";

/// Known bearer tokens, by hash, and ServiceAccount tokens.
#[derive(Default)]
pub struct Authenticator {
    tokens: HashMap<String, User>,
    service_accounts: Option<Arc<ServiceAccountTokens>>,
    oidc: Option<Arc<Oidc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("token file {path}, line {line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
}

impl Authenticator {
    /// An authenticator that knows the bootstrap admin's token hash.
    pub fn with_admin(admin_token_hash: String) -> Self {
        let mut tokens = HashMap::new();
        tokens.insert(admin_token_hash, User::new(ADMIN, [MASTERS.to_string()]));
        Self {
            tokens,
            service_accounts: None,
            oidc: None,
        }
    }

    /// Also accepts the cluster token, as the user nodes join with
    /// ([`super::join::BOOTSTRAP_USER`]).
    pub fn with_bootstrap_token(mut self, token_hash: String) -> Self {
        self.tokens.insert(
            token_hash,
            User::new(
                super::join::BOOTSTRAP_USER,
                [super::join::BOOTSTRAPPERS.to_string()],
            ),
        );
        self
    }

    /// Also accepts ID tokens of an OIDC issuer.
    pub fn with_oidc(mut self, oidc: Arc<Oidc>) -> Self {
        self.oidc = Some(oidc);
        self
    }

    /// Also accepts ServiceAccount tokens.
    pub fn with_service_accounts(mut self, tokens: Arc<ServiceAccountTokens>) -> Self {
        self.service_accounts = Some(tokens);
        self
    }

    /// Adds the tokens of a Kubernetes static token file: `token,user,uid[,"group1,group2"]`
    /// per line (CSV; blank lines and lines starting with `#` are skipped).
    pub fn add_token_file(&mut self, path: &Path) -> Result<usize, TokenFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut added = 0;
        for (index, line) in text.lines().enumerate() {
            let error = |reason: String| TokenFileError::Line {
                path: shown.clone(),
                line: index + 1,
                reason,
            };
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let fields = csv_fields(line).map_err(error)?;
            if fields.len() < 3 {
                return Err(error(format!(
                    "expected token,user,uid[,groups], found {} fields",
                    fields.len()
                )));
            }
            let (token, name, uid) = (&fields[0], &fields[1], &fields[2]);
            if token.is_empty() || name.is_empty() {
                return Err(error(
                    "the token and the user name must not be empty".into(),
                ));
            }
            let groups = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(String::from)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let mut user = User::new(name.clone(), groups);
            user.uid = uid.clone();
            if self.tokens.insert(hash_token(token), user).is_some() {
                return Err(error("this token appears twice".into()));
            }
            added += 1;
        }
        Ok(added)
    }

    /// The user a request's credentials name, or `None` (401).
    pub fn authenticate(&self, request: &Request) -> Option<User> {
        if let Some(header) = request.headers().get(AUTHORIZATION) {
            let token = header.to_str().ok()?.strip_prefix("Bearer ")?.trim();
            return self.token_user(token);
        }
        let certificate = request.extensions().get::<bosun_tls::PeerCertificate>()?;
        certificate_user(&certificate.0)
    }

    /// The user a bearer token names: a static one, or a ServiceAccount's.
    pub fn token_user(&self, token: &str) -> Option<User> {
        if let Some(user) = self.tokens.get(&hash_token(token)) {
            return Some(user.clone());
        }
        if !looks_like_jwt(token) {
            return None;
        }
        let mut refusals = Vec::new();
        if let Some(service_accounts) = &self.service_accounts {
            match service_accounts.authenticate(token) {
                Ok(user) => return Some(user),
                Err(why) => refusals.push(why.to_string()),
            }
        }
        if let Some(oidc) = &self.oidc {
            match oidc.authenticate(token) {
                Ok(user) => return Some(user),
                Err(why) => refusals.push(why.to_string()),
            }
        }
        tracing::debug!(?refusals, "token refused");
        None
    }
}

/// The user a (verified) client certificate names: CN the name, each O a group.
pub fn certificate_user(der: &[u8]) -> Option<User> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = certificate.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?;
    if name.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(String::from);
    Some(User::new(name, groups))
}

/// The fields of one CSV line: comma-separated, a field in double quotes may hold commas and
/// `""` for a quote.
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field is not closed".into()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim().to_string());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field.trim().to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn bearer(token: &str) -> Request {
        Request::builder()
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    }

    #[test]
    fn only_known_tokens_authenticate() {
        let auth = Authenticator::with_admin(hash_token("secret"));
        let admin = auth.authenticate(&bearer("secret")).unwrap();
        assert_eq!(admin.name, ADMIN);
        assert!(admin.in_group(MASTERS));
        assert!(auth.authenticate(&bearer("secreT")).is_none());
        assert!(auth.authenticate(&bearer("")).is_none());
        let anonymous = Request::builder().body(Body::empty()).unwrap();
        assert!(auth.authenticate(&anonymous).is_none());
    }

    #[test]
    fn a_token_file_names_users_uids_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.csv");
        std::fs::write(
            &path,
            "# automation\nt1,alice,1001,\"dev,ops\"\n\nt2,bob,1002\n",
        )
        .unwrap();
        let mut auth = Authenticator::default();
        assert_eq!(auth.add_token_file(&path).unwrap(), 2);
        let alice = auth.token_user("t1").unwrap();
        assert_eq!((alice.name.as_str(), alice.uid.as_str()), ("alice", "1001"));
        assert_eq!(alice.groups, ["dev", "ops", "system:authenticated"]);
        assert_eq!(
            auth.token_user("t2").unwrap().groups,
            ["system:authenticated"]
        );
        std::fs::write(&path, "t1,alice\n").unwrap();
        let error = auth.add_token_file(&path).unwrap_err().to_string();
        assert!(
            error.contains("line 1") && error.contains("2 fields"),
            "{error}"
        );
        std::fs::write(&path, "t1,alice,1,\"dev\n").unwrap();
        assert!(auth.add_token_file(&path).is_err());
    }

    #[test]
    fn a_certificate_names_its_user_and_groups() {
        let ca = crate::pki::Ca::generate("test-ca").unwrap();
        let issued = ca.issue_client("alice", &["team-a"]).unwrap();
        let der = rustls_pemfile_der(&issued.cert_pem);
        let user = certificate_user(&der).unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["team-a", "system:authenticated"]);
    }

    fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
        use base64::Engine as _;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }
}
