//! Bosun's one HTTPS serving path: rustls (the ring provider) in front of an axum router,
//! HTTP/2 and HTTP/1.1 (with upgrades), for the API server's port and the node's port.
//! [`server_config`] makes the rustls configuration from PEM, optionally asking for (or
//! requiring) client certificates from given CAs; [`serve`] accepts connections until shutdown
//! and hands each request the client's verified certificate as a [`PeerCertificate`]
//! extension. The other end,
//! [`client_config`], is how the API server reaches a node's port with its client
//! certificate.
//!
//! It depends on neither the control plane nor the node; both depend on it, as on `bosun-api`.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid PEM in {what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("invalid client CA certificate: {0}")]
    ClientCa(rustls::Error),
    #[error("cannot verify client certificates: {0}")]
    ClientVerifier(String),
    #[error("TLS configuration rejected: {0}")]
    Config(#[from] rustls::Error),
}

/// A certificate chain and its private key: what one side shows the other.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let chain = certificates(cert_pem, "certificate")?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| Error::Pem {
                what: "private key",
                reason: e.to_string(),
            })?
            .ok_or(Error::Pem {
                what: "private key",
                reason: "no key found".into(),
            })?;
        Ok(Self { chain, key })
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// The certificates of a PEM bundle, DER-encoded (for [`ClientCerts`]).
pub fn certificates_der(pem: &str) -> Result<Vec<Vec<u8>>, Error> {
    Ok(certificates(pem, "CA certificate")?
        .into_iter()
        .map(|c| c.to_vec())
        .collect())
}

fn certificates(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, Error> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            what,
            reason: e.to_string(),
        })
}

/// A rustls client configuration that trusts only the PEM certificates in `roots_pem` and
/// presents `identity`.
pub fn client_config(roots_pem: &str, identity: &Identity) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(roots_pem, "server certificate")? {
        roots.add(cert)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?)
}

/// A client identity that can be replaced while connections are made with it: each new
/// TLS handshake shows the latest (a node's certificate, renewed before it expires).
#[derive(Debug)]
pub struct RotatingIdentity(std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>);

impl RotatingIdentity {
    pub fn new(identity: &Identity) -> Result<Self, Error> {
        Ok(Self(std::sync::RwLock::new(Arc::new(certified(identity)?))))
    }

    /// Shows `identity` from the next handshake on.
    pub fn set(&self, identity: &Identity) -> Result<(), Error> {
        let key = Arc::new(certified(identity)?);
        *self.0.write().expect("the identity lock is not poisoned") = key;
        Ok(())
    }
}

fn certified(identity: &Identity) -> Result<rustls::sign::CertifiedKey, Error> {
    let key = rustls::crypto::ring::sign::any_supported_type(&identity.key)?;
    Ok(rustls::sign::CertifiedKey::new(identity.chain.clone(), key))
}

impl rustls::client::ResolvesClientCert for RotatingIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.0
                .read()
                .expect("the identity lock is not poisoned")
                .clone(),
        )
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// [`client_config`] with an identity that may change.
pub fn rotating_client_config(
    roots_pem: &str,
    identity: Arc<RotatingIdentity>,
) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(roots_pem, "server certificate")? {
        roots.add(cert)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_cert_resolver(identity))
}

/// Which client certificates a server asks for.
#[derive(Debug, Clone, Copy)]
pub enum ClientCerts<'a> {
    /// None: every client is anonymous at the TLS layer.
    None,
    /// Only clients with a certificate from one of these CAs (DER) get through the handshake.
    Required(&'a [Vec<u8>]),
    /// A client may show a certificate from one of these CAs (DER); one that shows another is
    /// refused, one that shows none gets through.
    Optional(&'a [Vec<u8>]),
}

/// The client's certificate (DER), verified against the server's client CAs during the
/// handshake: an extension of every request on a connection whose client showed one.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Arc<CertificateDer<'static>>);

/// A rustls server configuration for a PEM certificate chain and key, asking for the client
/// certificates `clients` says.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    clients: ClientCerts<'_>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let Identity { chain: certs, key } = Identity::from_pem(cert_pem, key_pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let (cas, optional) = match clients {
        ClientCerts::None => (None, false),
        ClientCerts::Required(cas) => (Some(cas), false),
        ClientCerts::Optional(cas) => (Some(cas), true),
    };
    let mut config = match cas {
        None => builder.with_no_client_auth().with_single_cert(certs, key)?,
        Some(cas) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in cas {
                roots
                    .add(rustls::pki_types::CertificateDer::from(ca.clone()))
                    .map_err(Error::ClientCa)?;
            }
            let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            if optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| Error::ClientVerifier(e.to_string()))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TLS connections on `listener` and serves `app` on each until `shutdown` resolves.
/// A failed handshake (not TLS, or no acceptable client certificate) ends that connection
/// only.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    // Out of file descriptors, most likely: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
            };
            let peer_certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| PeerCertificate(Arc::new(leaf.clone().into_owned())));
            let app = app.map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
                if let Some(certificate) = &peer_certificate {
                    request.extensions_mut().insert(certificate.clone());
                }
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            });
            let service = TowerToHyperService::new(app);
            if let Err(error) = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}

/// A client configuration that accepts any server certificate: only for fetching a CA whose
/// authenticity is checked by other means ([`verify_join_proof`]) before anything secret is
/// sent.
pub fn unverified_client_config() -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
            .with_no_client_auth(),
    )
}

#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How a server proves, to a node that joins with the cluster token, that the CA it hands
/// out is the cluster's: an HMAC-SHA256, keyed with the token, of the node's nonce and the CA
/// (hex). Only a holder of the token can make it; the node checks it before it trusts the CA
/// or sends the token anywhere.
pub fn join_proof(token: &str, nonce: &str, ca_pem: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.as_bytes());
    let mut context = ring::hmac::Context::with_key(&key);
    for part in [
        b"bosun-join".as_slice(),
        nonce.as_bytes(),
        ca_pem.as_bytes(),
    ] {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    context
        .sign()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `proof` is [`join_proof`]'s for these (compared in constant time).
pub fn verify_join_proof(token: &str, nonce: &str, ca_pem: &str, proof: &str) -> bool {
    let expected = join_proof(token, nonce, ca_pem);
    expected.len() == proof.len()
        && expected
            .bytes()
            .zip(proof.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}
