//! ServiceAccounts.

use k8s_openapi::api::core::v1;
use serde_json::{Value, json};

use super::{Cell, Plain, col, items};
use crate::apiserver::protobuf;

pub static SERVICE_ACCOUNT: Plain<v1::ServiceAccount> = Plain::new(
    &[col("SECRETS", "integer", Cell::Computed(secrets))],
    Some(&protobuf::SERVICE_ACCOUNT),
);

fn secrets(account: &Value) -> Value {
    json!(items(account, "/secrets").len())
}
