//! Events expire: Kubernetes keeps each Event for `--event-ttl` (default 1 h) after its last
//! write, so that they never pile up. Here every API server sweeps the stored events now and
//! then and deletes those whose newest timestamp is older than the TTL. The delete carries
//! the revision it read, so an event updated meanwhile (a repeat bumping `count`) survives.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::store::{self, Key, ListRequest, Store};

const PAGE: usize = 500;

/// Sweeps every `interval` until dropped.
pub async fn expire_events_periodically(store: Arc<dyn Store>, ttl: Duration, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match expire_events(&*store, ttl, SystemTime::now()).await {
            Ok(0) => {}
            Ok(expired) => tracing::debug!(expired, "expired events"),
            Err(error) => tracing::warn!(%error, "cannot expire events"),
        }
    }
}

/// Deletes the events last written more than `ttl` before `now`; returns how many.
pub async fn expire_events(
    store: &dyn Store,
    ttl: Duration,
    now: SystemTime,
) -> store::Result<usize> {
    let mut expired = 0;
    let mut continue_token = None;
    loop {
        let page = store
            .list(&ListRequest {
                resource: "events".to_string(),
                namespace: None,
                labels: Default::default(),
                fields: Default::default(),
                limit: PAGE,
                continue_token: continue_token.take(),
                revision: None,
            })
            .await?;
        for event in &page.items {
            let old = last_written(&event.value)
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > ttl);
            if !old {
                continue;
            }
            let key = Key::new(
                "events",
                event
                    .value
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                event
                    .value
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            );
            match store.delete(&key, Some(event.revision)).await {
                Ok(_) => expired += 1,
                Err(store::Error::NotFound { .. } | store::Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        match page.continue_token {
            Some(token) => continue_token = Some(token),
            None => return Ok(expired),
        }
    }
}

/// The newest of an event's timestamps, in either API version's fields.
fn last_written(event: &Value) -> Option<SystemTime> {
    [
        "/lastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
        "/deprecatedLastTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .filter_map(|p| event.pointer(p).and_then(Value::as_str))
    .filter_map(bosun_api::time::parse_rfc3339)
    .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_newest_timestamp_counts() {
        let event = json!({
            "metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
            "lastTimestamp": "2026-01-01T00:10:00Z",
            "eventTime": "2026-01-01T00:05:00.123456Z",
        });
        let t = last_written(&event).unwrap();
        assert_eq!(
            t,
            bosun_api::time::parse_rfc3339("2026-01-01T00:10:00Z").unwrap()
        );
        assert!(last_written(&json!({})).is_none());
    }
}
