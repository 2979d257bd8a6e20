//! ServiceAccounts.

use k8s_openapi::api::core::v1;
use serde_json::{Value, json};

use super::{Cell, Column, KindStrategy, ObjectType, Typed, col, items};
use crate::apiserver::protobuf::{self, Message};

pub struct ServiceAccount;

static TYPE: Typed<v1::ServiceAccount> = Typed::new();

impl KindStrategy for ServiceAccount {
    fn object_type(&self) -> &'static dyn ObjectType {
        &TYPE
    }

    fn columns(&self) -> &'static [Column] {
        const COLUMNS: &[Column] = &[col("SECRETS", "integer", Cell::Computed(secrets))];
        COLUMNS
    }

    fn protobuf(&self) -> Option<&'static Message> {
        Some(&protobuf::SERVICE_ACCOUNT)
    }
}

fn secrets(account: &Value) -> Value {
    json!(items(account, "/secrets").len())
}
