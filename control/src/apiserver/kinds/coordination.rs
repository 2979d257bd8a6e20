//! Leases (coordination.k8s.io): node heartbeats and leader election.

use k8s_openapi::api::coordination::v1;

use super::{Cell, Column, KindStrategy, ObjectType, Typed, col};

pub struct Lease;

static TYPE: Typed<v1::Lease> = Typed::new();

impl KindStrategy for Lease {
    fn object_type(&self) -> &'static dyn ObjectType {
        &TYPE
    }

    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[col("HOLDER", "string", Cell::Field("/spec/holderIdentity"))];
        COLUMNS
    }
}
