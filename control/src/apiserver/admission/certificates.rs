//! CertificateSigningRequests' admission, as upstream's CertificateSubjectRestriction,
//! CertificateApproval and CertificateSigning plugins and its CSR strategy:
//! - a new request records who asked (`spec.username`, `uid`, `groups`, `extra`), whatever the
//!   body said;
//! - approving or denying (`approval`) needs the `approve` verb on the request's signer
//!   (`signers` in certificates.k8s.io, by name or as `DOMAIN/*`);
//! - writing a certificate (`status`) needs the `sign` verb on it.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Operation, Plugin, Request};
use crate::apiserver::auth::{Attributes, Authorizer, ResourceAttributes, User};
use crate::apiserver::kinds::certificates::has_condition;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::store::Store;

const GROUP: &str = "certificates.k8s.io";

pub struct CertificateSigning {
    pub authorizer: Arc<dyn Authorizer>,
}

#[async_trait::async_trait]
impl Plugin for CertificateSigning {
    fn name(&self) -> &'static str {
        "CertificateSigning"
    }

    async fn admit(&self, _store: &dyn Store, request: &mut Request<'_>) -> ApiResult<()> {
        if request.operation == Operation::Create
            && request.subresource.is_none()
            && request.is(GROUP, "CertificateSigningRequest")
        {
            let user = request.user;
            let spec = &mut request.object["spec"];
            if !spec.is_object() {
                *spec = json!({});
            }
            spec["username"] = json!(user.name);
            spec["groups"] = json!(user.groups);
            set_or_remove(spec, "uid", (!user.uid.is_empty()).then(|| json!(user.uid)));
            set_or_remove(
                spec,
                "extra",
                (!user.extra.is_empty()).then(|| json!(user.extra)),
            );
        }
        Ok(())
    }

    async fn validate(&self, _store: &dyn Store, request: &Request<'_>) -> ApiResult<()> {
        if request.operation != Operation::Update || !request.is(GROUP, "CertificateSigningRequest")
        {
            return Ok(());
        }
        let old = request.old.unwrap_or(&Value::Null);
        let signer = request.object["spec"]["signerName"]
            .as_str()
            .unwrap_or_default();
        let verb = match request.subresource {
            Some("approval")
                if ["Approved", "Denied"]
                    .iter()
                    .any(|c| has_condition(request.object, c) && !has_condition(old, c)) =>
            {
                "approve"
            }
            Some("status")
                if request.object.pointer("/status/certificate")
                    != old.pointer("/status/certificate") =>
            {
                "sign"
            }
            _ => return Ok(()),
        };
        if self.may(request.user, verb, signer).await {
            return Ok(());
        }
        Err(ApiError::forbidden_on(
            format!(
                "certificatesigningrequests.{GROUP} {:?} is forbidden: user not permitted to {verb} requests with signerName {signer:?}",
                request.name
            ),
            GROUP,
            "certificatesigningrequests",
            request.name,
        ))
    }
}

impl CertificateSigning {
    /// Whether `user` may `verb` the signer by its name or its domain's wildcard.
    async fn may(&self, user: &User, verb: &str, signer: &str) -> bool {
        let wildcard = signer
            .split_once('/')
            .map(|(domain, _)| format!("{domain}/*"));
        for name in std::iter::once(signer.to_string()).chain(wildcard) {
            let attributes = Attributes::Resource(ResourceAttributes {
                verb,
                group: GROUP,
                resource: "signers",
                name: Some(&name),
                ..Default::default()
            });
            if self.authorizer.authorize(user, &attributes).await.allowed() {
                return true;
            }
        }
        false
    }
}

fn set_or_remove(object: &mut Value, key: &str, value: Option<Value>) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    match value {
        Some(value) => map.insert(key.to_string(), value),
        None => map.remove(key),
    };
}
