//! CertificateSigningRequests (certificates.k8s.io/v1): a request for a certificate from the
//! cluster CA. The requester (`spec.username`, `groups`, `uid`) is set from who created it,
//! by the `CertificateSigning` admission plugin; `approval` (what `kubectl certificate
//! approve|deny` writes) changes only `status.conditions`; the signer (a controller) writes
//! `status.certificate` through `status`.

use base64::Engine as _;
#[cfg(test)]
use bosun_api::certificates::CLIENT_SIGNER;
use k8s_openapi::api::certificates::v1;
use serde_json::{Value, json};

use super::{Cause, Cell, Column, KindStrategy, ObjectType, Subresource, Typed, cause, col, items};
use crate::apiserver::protobuf::{self, Message};

/// Key usages a request may name (upstream's list).
const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

pub struct CertificateSigningRequest;

static TYPE: Typed<v1::CertificateSigningRequest> = Typed::new();

impl KindStrategy for CertificateSigningRequest {
    fn object_type(&self) -> &dyn ObjectType {
        &TYPE
    }

    fn validate(&self, object: &Value, causes: &mut Vec<Cause>) {
        let spec = &object["spec"];
        match spec["request"].as_str().map(decode) {
            None => causes.push(cause("spec.request", "Required value")),
            Some(Err(why)) => causes.push(cause("spec.request", format!("Invalid value: {why}"))),
            Some(Ok(pem)) => {
                if let Err(why) = crate::pki::parse_request(&pem) {
                    causes.push(cause("spec.request", format!("Invalid value: {why}")));
                }
            }
        }
        match spec["signerName"].as_str() {
            None | Some("") => causes.push(cause("spec.signerName", "Required value")),
            Some(name) if !name.contains('/') => causes.push(cause(
                "spec.signerName",
                format!("Invalid value: {name:?}: should be a domain with at least two segments separated by dots and a path, as kubernetes.io/kube-apiserver-client"),
            )),
            Some(_) => {}
        }
        let usages = items(object, "/spec/usages");
        if usages.is_empty() {
            causes.push(cause("spec.usages", "Required value"));
        }
        for (i, usage) in usages.iter().enumerate() {
            if !usage.as_str().is_some_and(|u| USAGES.contains(&u)) {
                causes.push(cause(
                    &format!("spec.usages[{i}]"),
                    format!("Unsupported value: {usage}"),
                ));
            }
        }
        if let Some(seconds) = spec["expirationSeconds"].as_i64()
            && seconds < 600
        {
            causes.push(cause(
                "spec.expirationSeconds",
                format!("Invalid value: {seconds}: may not specify a duration less than 600 seconds (10 minutes)"),
            ));
        }
        validate_conditions(object, causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        // An approval or a denial stays.
        for kind in ["Approved", "Denied"] {
            if has_condition(old, kind) && !has_condition(new, kind) {
                causes.push(cause(
                    "status.conditions",
                    format!("Forbidden: updates may not remove a condition of type {kind:?}"),
                ));
            }
        }
        if old
            .pointer("/status/certificate")
            .is_some_and(|c| !c.is_null())
            && old.pointer("/status/certificate") != new.pointer("/status/certificate")
        {
            causes.push(cause(
                "status.certificate",
                "Forbidden: updates may not modify existing certificate content",
            ));
        }
    }

    /// The spec never changes after creation.
    fn prepare_for_update(&self, old: &Value, new: &mut Value) {
        new["spec"] = old["spec"].clone();
    }

    fn subresources(&self) -> &'static [Subresource] {
        &[Subresource {
            name: "approval",
            group: "certificates.k8s.io",
            version: "v1",
            kind: "CertificateSigningRequest",
            verbs: &["get", "patch", "update"],
            writes: &["/status/conditions"],
        }]
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn protobuf(&self) -> Option<&'static Message> {
        Some(&protobuf::CERTIFICATE_SIGNING_REQUEST)
    }
}

static COLUMNS: &[Column] = &[
    col("SignerName", "string", Cell::Field("/spec/signerName")),
    col("Requestor", "string", Cell::Field("/spec/username")),
    col(
        "RequestedDuration",
        "string",
        Cell::Computed(requested_duration),
    ),
    col("Condition", "string", Cell::Computed(condition)),
];

#[derive(Debug, thiserror::Error)]
enum RequestText {
    #[error("not base64: {0}")]
    NotBase64(#[from] base64::DecodeError),
    #[error("not PEM text")]
    NotText,
}

/// `spec.request`: base64 of the PEM text.
fn decode(request: &str) -> Result<String, RequestText> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(request)?;
    String::from_utf8(bytes).map_err(|_| RequestText::NotText)
}

pub fn has_condition(object: &Value, kind: &str) -> bool {
    items(object, "/status/conditions")
        .iter()
        .any(|c| c["type"] == kind && c["status"] != "False")
}

fn validate_conditions(object: &Value, causes: &mut Vec<Cause>) {
    if has_condition(object, "Approved") && has_condition(object, "Denied") {
        causes.push(cause(
            "status.conditions",
            "Invalid value: Approved and Denied conditions are mutually exclusive",
        ));
    }
}

fn requested_duration(object: &Value) -> Value {
    match object["spec"]["expirationSeconds"].as_u64() {
        Some(seconds) => json!(bosun_api::time::short_age(std::time::Duration::from_secs(
            seconds
        ))),
        None => json!("<none>"),
    }
}

/// Upstream's CONDITION column: the condition types, then `Issued` once signed.
fn condition(object: &Value) -> Value {
    let mut shown: Vec<String> = items(object, "/status/conditions")
        .iter()
        .filter_map(|c| c["type"].as_str().map(String::from))
        .collect();
    if object
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty())
    {
        shown.push("Issued".into());
    }
    if shown.is_empty() {
        json!("Pending")
    } else {
        json!(shown.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pem: &str) -> Value {
        json!({
            "metadata": {"name": "carol"},
            "spec": {
                "request": base64::engine::general_purpose::STANDARD.encode(pem),
                "signerName": CLIENT_SIGNER,
                "usages": ["client auth"],
                "expirationSeconds": 3600,
            },
        })
    }

    #[test]
    fn a_request_must_be_a_signed_csr_for_a_known_signer_and_usages() {
        let (pem, _key) = crate::pki::client_request("carol", &["qa"]).unwrap();
        let mut causes = Vec::new();
        CertificateSigningRequest.validate(&request(&pem), &mut causes);
        assert!(
            causes.is_empty(),
            "{:?}",
            causes.iter().map(|c| &c.message).collect::<Vec<_>>()
        );

        let mut bad = request(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        );
        bad["spec"]["usages"] = json!(["flying"]);
        bad["spec"]["expirationSeconds"] = json!(60);
        bad["spec"]["signerName"] = json!("nobody");
        let mut causes = Vec::new();
        CertificateSigningRequest.validate(&bad, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.request",
                "spec.signerName",
                "spec.usages[0]",
                "spec.expirationSeconds"
            ]
        );
    }

    #[test]
    fn an_approval_is_never_taken_back() {
        let (pem, _key) = crate::pki::client_request("carol", &[]).unwrap();
        let mut approved = request(&pem);
        approved["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        let mut both = approved.clone();
        both["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "Denied", "status": "True"}));
        let mut causes = Vec::new();
        CertificateSigningRequest.validate(&both, &mut causes);
        assert_eq!(causes.len(), 1);
        let mut causes = Vec::new();
        CertificateSigningRequest.validate_update(&approved, &request(&pem), &mut causes);
        assert_eq!(causes.len(), 1);
        assert_eq!(condition(&approved), "Approved");
        assert_eq!(condition(&request(&pem)), "Pending");
    }
}
