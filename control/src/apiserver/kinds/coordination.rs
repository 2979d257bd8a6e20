//! Leases (coordination.k8s.io): node heartbeats and leader election.

use k8s_openapi::api::coordination::v1;

use super::{Cell, Plain, col};

pub static LEASE: Plain<v1::Lease> = Plain::new(
    &[col("HOLDER", "string", Cell::Field("/spec/holderIdentity"))],
    None,
);
