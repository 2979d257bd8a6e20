//! `bosun kubeconfig --user NAME [--group G]… [--namespace NS] [--expiry 24h] [-o FILE]`: a
//! kubeconfig for a new user, through the Kubernetes CSR flow with the caller's credentials.
//!
//! It makes a key and a certificate request for NAME in the groups (CN and O), creates a
//! CertificateSigningRequest for `kubernetes.io/kube-apiserver-client`, approves it when the
//! caller may (`certificatesigningrequests/approval` and `approve` on the signer; otherwise it
//! says who must, and waits), waits for the certificate, and prints the kubeconfig on stdout
//! and nothing else (or writes FILE, 0600).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bosun_api::certificates::CLIENT_SIGNER;
use bosun_node::credentials::{Approval, Signing, pem};

use super::client::default_kubeconfig;
use super::node::kube_config;
use super::server::duration;

#[derive(clap::Args)]
pub struct Args {
    /// The new user's name (the certificate's CN).
    #[arg(long)]
    user: String,
    /// A group the user is in (the certificate's O; repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// The namespace of the kubeconfig's context.
    #[arg(long)]
    namespace: Option<String>,
    /// How long the certificate lives (at most the server's `--cluster-signing-duration`).
    #[arg(long, value_parser = duration)]
    expiry: Option<Duration>,
    /// Write the kubeconfig here (0600) instead of stdout.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// The caller's kubeconfig. Default: $KUBECONFIG (its first file), else the admin
    /// kubeconfig in the default data directory.
    #[arg(long, env = "BOSUN_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// How long to wait for the approval and the certificate.
    #[arg(long, default_value = "15m", value_parser = duration)]
    timeout: Duration,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.user.is_empty() {
        bail!("--user must not be empty");
    }
    if let Some(expiry) = args.expiry
        && expiry < Duration::from_secs(600)
    {
        bail!("--expiry must be at least 10m");
    }
    let path = match &args.kubeconfig {
        Some(path) => path.clone(),
        None => default_kubeconfig()?,
    };
    let kubeconfig = user_kubeconfig(
        &path,
        &args.user,
        &args.groups,
        args.namespace.as_deref(),
        args.expiry,
        args.timeout,
    )
    .await?;
    match &args.output {
        Some(file) => write_private(file, &kubeconfig)?,
        None => print!("{kubeconfig}"),
    }
    Ok(())
}

/// A kubeconfig for `user` in `groups`, whose certificate is issued through the CSR flow with
/// the credentials of the kubeconfig at `path`.
pub async fn user_kubeconfig(
    path: &std::path::Path,
    user: &str,
    groups: &[String],
    namespace: Option<&str>,
    expiry: Option<Duration>,
    timeout: Duration,
) -> anyhow::Result<String> {
    let config = kube_config(path, "bosun-kubeconfig").await?;
    let server = config.cluster_url.to_string();
    let ca_pem = config
        .root_cert
        .as_ref()
        .map(|certs| {
            certs
                .iter()
                .map(|der| pem("CERTIFICATE", der))
                .collect::<String>()
        })
        .unwrap_or_default();
    let client = kube::Client::try_from(config)
        .with_context(|| format!("cannot make a client from {}", path.display()))?;

    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    let (request_pem, key_pem) = bosun_control::pki::client_request(user, &groups)
        .context("cannot make a certificate request")?;
    let signing = Signing {
        signer: CLIENT_SIGNER,
        usages: &["client auth", "digital signature", "key encipherment"],
        expiration: expiry,
        generate_name: &format!("{}-", csr_name_prefix(user)),
        approval: Some(Approval {
            reason: "BosunKubeconfig",
            message: "approved by bosun kubeconfig",
        }),
        timeout,
    };
    let certificate = signing
        .certificate(&client, &request_pem, |name| {
            eprintln!(
                "you may not approve certificate requests; waiting for someone who may: kubectl certificate approve {name}"
            )
        })
        .await?;
    Ok(kubeconfig_yaml(
        &server,
        &ca_pem,
        user,
        &certificate,
        &key_pem,
        namespace,
    ))
}

/// The request's certificate once issued; an error if it is denied or fails.
fn csr_name_prefix(user: &str) -> String {
    let cleaned: String = user
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let cleaned = cleaned.trim_matches('-');
    let cleaned: String = cleaned.chars().take(40).collect();
    if cleaned.is_empty() {
        "user".into()
    } else {
        cleaned.trim_end_matches('-').to_string()
    }
}

fn kubeconfig_yaml(
    server: &str,
    ca_pem: &str,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
    namespace: Option<&str>,
) -> String {
    let namespace = namespace
        .map(|ns| format!("    namespace: {ns}\n"))
        .unwrap_or_default();
    let user_yaml = serde_json::to_string(user).expect("a string");
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: bosun\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n\
         - name: {user_yaml}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n\
         contexts:\n\
         - name: bosun\n  context:\n    cluster: bosun\n    user: {user_yaml}\n{namespace}\
         current-context: bosun\n",
        server = server.trim_end_matches('/'),
        ca = B64.encode(ca_pem),
        cert = B64.encode(cert_pem),
        key = B64.encode(key_pem),
    )
}

pub fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_names_are_dns_safe() {
        assert_eq!(csr_name_prefix("alice"), "alice");
        assert_eq!(csr_name_prefix("system:node:Web-1"), "system-node-web-1");
        assert_eq!(csr_name_prefix("::"), "user");
    }
}
