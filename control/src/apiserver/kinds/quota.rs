//! ResourceQuotas and LimitRanges (stored and served; the quota and limit admission plugins
//! arrive with the multi-tenancy work).

use k8s_openapi::api::core::v1;

use super::Plain;
use crate::apiserver::protobuf;

pub static RESOURCE_QUOTA: Plain<v1::ResourceQuota> =
    Plain::new(&[], Some(&protobuf::RESOURCE_QUOTA));

pub static LIMIT_RANGE: Plain<v1::LimitRange> = Plain::new(&[], None);
