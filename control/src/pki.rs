//! The cluster's certificate authority and the certificates it issues (rcgen).
//!
//! One CA per cluster, created by the first server and shared through the bootstrap secrets.
//! Every server issues its own serving certificate from it at start, with the names and
//! addresses it is reached by, so clients that trust the CA (the kubeconfig carries it) need
//! no `--insecure-skip-tls-verify`.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("certificate generation failed: {0}")]
pub struct Error(#[from] rcgen::Error);

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a certificate signing request cannot be signed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("not a PEM certificate request with a valid signature: {0}")]
    Invalid(rcgen::Error),
    #[error("the request's subject has no common name (the user name)")]
    NoCommonName,
    #[error(transparent)]
    Sign(#[from] Error),
}

impl From<rcgen::Error> for RequestError {
    fn from(error: rcgen::Error) -> Self {
        Self::Sign(Error(error))
    }
}

/// A PEM certificate signing request, its signature verified: the subject and key it asks
/// for. Refused without a common name.
pub fn parse_request(pem: &str) -> Result<rcgen::CertificateSigningRequestParams, RequestError> {
    let request =
        rcgen::CertificateSigningRequestParams::from_pem(pem).map_err(RequestError::Invalid)?;
    let has_name = request
        .params
        .distinguished_name
        .get(&DnType::CommonName)
        .is_some();
    if !has_name {
        return Err(RequestError::NoCommonName);
    }
    Ok(request)
}

/// The PEM certificate signing request of a new key for `user` in `groups`, and the key.
pub fn client_request(user: &str, groups: &[&str]) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, user);
    for group in groups {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *group);
    }
    let request = params.serialize_request(&key)?;
    Ok((request.pem()?, key.serialize_pem()))
}

/// The cluster CA, PEM-encoded.
#[derive(Clone, Serialize, Deserialize)]
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate and its private key, PEM-encoded.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn generate(common_name: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A TLS server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, common_name: &str, names: &[String]) -> Result<Issued> {
        self.issue(common_name, names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A TLS client certificate for `common_name` in `organizations` (Kubernetes reads the
    /// common name as the user and each organization as a group).
    pub fn issue_client(&self, common_name: &str, organizations: &[&str]) -> Result<Issued> {
        self.issue_with(
            common_name,
            organizations,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    /// Signs a PEM certificate signing request as a client certificate valid from now for
    /// `valid_for`: its subject as asked (CN the user, O the groups), client authentication
    /// only, whatever other usages or names the request asked for. The request's signature
    /// must verify.
    pub fn sign_client_request(
        &self,
        request_pem: &str,
        valid_for: std::time::Duration,
    ) -> Result<String, RequestError> {
        let request = parse_request(request_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, KeyPair::from_pem(&self.key_pem)?)?;
        let mut params = request.params.clone();
        params.subject_alt_names.clear();
        params.is_ca = IsCa::NoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let now = time::OffsetDateTime::now_utc();
        // A little slack for clocks that run behind: five minutes, or a tenth of a short
        // certificate's life (whose holder renews it through its life, counted from here).
        let slack = (valid_for / 10).min(std::time::Duration::from_secs(300));
        params.not_before = now - time::Duration::try_from(slack).unwrap_or_default();
        params.not_after = now + valid_for;
        let request = rcgen::CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        };
        Ok(request.signed_by(&issuer)?.pem())
    }

    fn issue(
        &self,
        common_name: &str,
        names: &[String],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Issued> {
        self.issue_with(common_name, &[], names, usage)
    }

    fn issue_with(
        &self,
        common_name: &str,
        organizations: &[&str],
        names: &[String],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Issued> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, KeyPair::from_pem(&self.key_pem)?)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for organization in organizations {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *organization);
        }
        for name in names {
            params.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into()?),
            });
        }
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
