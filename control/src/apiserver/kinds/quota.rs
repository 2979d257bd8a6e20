//! ResourceQuotas and LimitRanges (stored and served; the quota and limit admission plugins
//! arrive with the multi-tenancy work).

use k8s_openapi::api::core::v1;

use super::{KindStrategy, ObjectType, Typed};
use crate::apiserver::protobuf::{self, Message};

pub struct ResourceQuota;

static RESOURCE_QUOTA: Typed<v1::ResourceQuota> = Typed::new();

impl KindStrategy for ResourceQuota {
    fn object_type(&self) -> &'static dyn ObjectType {
        &RESOURCE_QUOTA
    }

    fn protobuf(&self) -> Option<&'static Message> {
        Some(&protobuf::RESOURCE_QUOTA)
    }
}

pub struct LimitRange;

static LIMIT_RANGE: Typed<v1::LimitRange> = Typed::new();

impl KindStrategy for LimitRange {
    fn object_type(&self) -> &'static dyn ObjectType {
        &LIMIT_RANGE
    }
}
