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
