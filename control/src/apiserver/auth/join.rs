//! Nodes joining with the cluster token (`bosun node --server URL --token TOKEN`), as k3s
//! agents do:
//! - `GET /cacerts?nonce=N` (open to anyone) answers the cluster CA and, in the
//!   `Bosun-Token-Proof` header, [`bosun_tls::join_proof`] of it: the node trusts the CA only
//!   if the proof checks against its token, so a server without the token cannot pose as
//!   the cluster, and the node never sends the token to one;
//! - the token itself then authenticates as [`BOOTSTRAP_USER`] in [`BOOTSTRAPPERS`], which
//!   the bootstrap policy lets create CertificateSigningRequests and have a node client
//!   certificate approved (`certificatesigningrequests/nodeclient`) and nothing else.

use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::apiserver::ApiState;
use crate::apiserver::status::ApiError;

/// Who the cluster token is when it is used as a bearer token.
pub const BOOTSTRAP_USER: &str = "system:bootstrap:cluster-token";
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// The header of the proof.
pub const PROOF_HEADER: &str = "bosun-token-proof";

/// What the CA endpoint hands out and proves with.
pub struct Join {
    pub ca_pem: String,
    pub token: String,
}

#[derive(serde::Deserialize)]
pub struct Params {
    nonce: Option<String>,
}

/// `GET /cacerts[?nonce=N]`.
pub async fn serve(State(state): State<ApiState>, Query(params): Query<Params>) -> Response {
    let Some(join) = state.join.as_ref() else {
        return ApiError::not_found_path("/cacerts").into_response();
    };
    let mut response = join.ca_pem.clone().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-pem-file"),
    );
    if let Some(nonce) = params.nonce {
        if nonce.is_empty() || nonce.len() > 128 {
            return ApiError::bad_request("the nonce must have 1 to 128 characters")
                .into_response();
        }
        let proof = bosun_tls::join_proof(&join.token, &nonce, &join.ca_pem);
        response.headers_mut().insert(
            PROOF_HEADER,
            HeaderValue::from_str(&proof).expect("hex is a valid header value"),
        );
    }
    response
}
