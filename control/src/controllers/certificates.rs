//! The CSR signing controller (`csrsigning`): signs approved CertificateSigningRequests of the
//! API server's client signers with the cluster CA, as upstream's controller-manager does with
//! `--cluster-signing-*` (the server hands the CA to its own controller manager):
//! - `kubernetes.io/kube-apiserver-client`: any subject, usages among `client auth`,
//!   `digital signature` and `key encipherment`, `client auth` required;
//! - `kubernetes.io/kube-apiserver-client-kubelet`: a node's, `system:node:NAME` in exactly
//!   `system:nodes`, with the same usages.
//!
//! The certificate lives for `spec.expirationSeconds`, capped by `--cluster-signing-duration`.
//! A request the signer will not sign gets a `Failed` condition with the reason; a denied
//! one is left alone.
//!
//! It also approves node client certificates by itself (upstream's `csrapproving`): a pending
//! `kube-apiserver-client-kubelet` request that the signer would sign is approved when a
//! SubjectAccessReview says its requester may `create` `certificatesigningrequests/nodeclient`
//! (a node joining with the cluster token) or, for a request for its own name,
//! `certificatesigningrequests/selfnodeclient` (a node renewing its certificate).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bosun_api::certificates::{CLIENT_SIGNER, NODE_CLIENT_SIGNER};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::{ControllersConfig, Error};
use crate::pki::Ca;

const ALLOWED_USAGES: &[&str] = &["client auth", "digital signature", "key encipherment"];

/// What the signer signs with.
#[derive(Clone)]
pub struct Signing {
    pub ca: Arc<Ca>,
    /// The longest a certificate lives (`--cluster-signing-duration`, a year).
    pub max_duration: Duration,
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing")
            .field("max_duration", &self.max_duration)
            .finish_non_exhaustive()
    }
}

struct Context {
    client: kube::Client,
    signing: Signing,
}

pub async fn run(client: kube::Client, config: ControllersConfig) {
    let Some(signing) = config.signing.clone() else {
        tracing::info!("no cluster CA given to the controller manager: CSRs are not signed");
        return;
    };
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    let context = Arc::new(Context { client, signing });
    super::drive(controller, "csrsigning", reconcile, context, config.retry).await;
}

fn condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status != "False"))
}

/// Why the signer refuses a request it would otherwise sign, or `None`.
fn refusal(csr: &CertificateSigningRequest, subject: &Subject) -> Option<String> {
    let usages = csr.spec.usages.as_deref().unwrap_or_default();
    if let Some(usage) = usages
        .iter()
        .find(|u| !ALLOWED_USAGES.contains(&u.as_str()))
    {
        return Some(format!(
            "usage {usage:?} is not allowed for {}",
            csr.spec.signer_name
        ));
    }
    if !usages.iter().any(|u| u == "client auth") {
        return Some("the usages must include \"client auth\"".into());
    }
    if csr.spec.signer_name == NODE_CLIENT_SIGNER {
        if !subject.common_name.starts_with("system:node:") {
            return Some(format!(
                "the common name {:?} must start with \"system:node:\"",
                subject.common_name
            ));
        }
        if subject.organizations != ["system:nodes"] {
            return Some("the organization must be exactly [\"system:nodes\"]".into());
        }
    }
    None
}

struct Subject {
    common_name: String,
    organizations: Vec<String>,
}

fn subject(pem: &str) -> Result<Subject, String> {
    let request = crate::pki::parse_request(pem).map_err(|e| e.to_string())?;
    let text = |value: &rcgen::DnValue| match value {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
        rcgen::DnValue::Ia5String(s) => s.as_str().to_string(),
        _ => String::new(),
    };
    let mut common_name = String::new();
    let mut organizations = Vec::new();
    for (kind, value) in request.params.distinguished_name.iter() {
        match kind {
            rcgen::DnType::CommonName => common_name = text(value),
            rcgen::DnType::OrganizationName => organizations.push(text(value)),
            _ => {}
        }
    }
    Ok(Subject {
        common_name,
        organizations,
    })
}

#[tracing::instrument(name = "reconcile", skip_all, fields(csr = %csr.name_any()))]
async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let signer = csr.spec.signer_name.as_str();
    let issued = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    let api: Api<CertificateSigningRequest> = Api::all(context.client.clone());
    let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    let undecided = !["Approved", "Denied", "Failed"]
        .iter()
        .any(|c| condition(&csr, c));
    if signer == NODE_CLIENT_SIGNER && undecided && !issued {
        if let Some(reason) = auto_approval(&context.client, &csr, &pem).await? {
            let approval = json!({"status": {"conditions": [{
                "type": "Approved",
                "status": "True",
                "reason": "AutoApproved",
                "message": reason,
                "lastUpdateTime": bosun_api::time::rfc3339(std::time::SystemTime::now()),
            }]}});
            api.patch_subresource(
                "approval",
                &csr.name_any(),
                &PatchParams::default(),
                &Patch::Merge(approval),
            )
            .await?;
        }
        // The approval is a change: the next round signs.
        return Ok(Action::await_change());
    }
    if issued
        || ![CLIENT_SIGNER, NODE_CLIENT_SIGNER].contains(&signer)
        || !condition(&csr, "Approved")
        || condition(&csr, "Denied")
        || condition(&csr, "Failed")
    {
        return Ok(Action::await_change());
    }
    let outcome = subject(&pem).and_then(|subject| match refusal(&csr, &subject) {
        Some(why) => Err(why),
        None => {
            let wanted = csr
                .spec
                .expiration_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .unwrap_or(context.signing.max_duration);
            context
                .signing
                .ca
                .sign_client_request(&pem, wanted.min(context.signing.max_duration))
                .map_err(|e| e.to_string())
        }
    });
    let status = match outcome {
        Ok(certificate) => json!({
            "certificate": base64::engine::general_purpose::STANDARD.encode(certificate),
        }),
        Err(why) => {
            tracing::info!(%why, "not signing");
            let mut conditions = csr
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .map(|c| serde_json::to_value(c).unwrap_or_default())
                .unwrap_or_else(|| json!([]));
            if let Some(list) = conditions.as_array_mut() {
                list.push(json!({
                    "type": "Failed",
                    "status": "True",
                    "reason": "SignerValidationFailure",
                    "message": why,
                    "lastUpdateTime": bosun_api::time::rfc3339(std::time::SystemTime::now()),
                }));
            }
            json!({"conditions": conditions})
        }
    };
    match api
        .patch_status(
            &csr.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        // Signed already, by a round that ran on a fresher copy.
        Err(kube::Error::Api(e))
            if e.code == 422 && e.message.contains("existing certificate content") =>
        {
            Ok(Action::await_change())
        }
        Err(e) => Err(e.into()),
    }
}

/// Why a node client certificate request is approved without a person, or `None` (it waits
/// for `kubectl certificate approve`).
async fn auto_approval(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
    pem: &str,
) -> Result<Option<&'static str>, Error> {
    let Ok(subject) = subject(pem) else {
        return Ok(None);
    };
    if refusal(csr, &subject).is_some() {
        return Ok(None);
    }
    let spec = &csr.spec;
    let requester = spec.username.as_deref().unwrap_or_default();
    let (subresource, reason) = if requester == subject.common_name {
        (
            "selfnodeclient",
            "Auto approving self kubelet client certificate after SubjectAccessReview.",
        )
    } else {
        (
            "nodeclient",
            "Auto approving kubelet client certificate after SubjectAccessReview.",
        )
    };
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": requester,
            "uid": spec.uid,
            "groups": spec.groups,
            "extra": spec.extra,
            "resourceAttributes": {
                "group": "certificates.k8s.io",
                "resource": "certificatesigningrequests",
                "subresource": subresource,
                "verb": "create",
            },
        },
    }))
    .expect("a valid SubjectAccessReview");
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    let answered = reviews.create(&PostParams::default(), &review).await?;
    Ok(answered.status.is_some_and(|s| s.allowed).then_some(reason))
}
