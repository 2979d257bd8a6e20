//! `?watch=true`: a stream of JSON watch events (`{"type": "ADDED", "object": …}`), one per
//! line, with bookmarks, `timeoutSeconds`, and an `ERROR` event carrying a 410 Status when the
//! requested revision has been compacted.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::read::list;
use super::request::{Target, WatchOptions};
use super::status::{ApiError, ApiResult};
use super::{ApiState, kinds};
use crate::store::{EventType, WatchRequest};

fn line(kind: &str, object: &Value) -> Bytes {
    let mut bytes =
        serde_json::to_vec(&json!({"type": kind, "object": object})).expect("serializable");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

pub async fn serve(
    state: &ApiState,
    target: &Target,
    options: &WatchOptions,
) -> ApiResult<Response> {
    let resource = target.resource;
    let (timeout, bookmarks, send_initial) =
        (options.timeout, options.bookmarks, options.send_initial);
    let bookmark_interval = state.bookmark_interval.max(Duration::from_millis(10));

    // Without a revision (or with sendInitialEvents) the watch starts with the current state,
    // as synthetic ADDED events, then follows from the revision of that list.
    let mut initial = Vec::new();
    let after = match options.resource_version {
        Some(rv) if !send_initial => rv,
        _ => {
            let list = list(state, target, &options.initial_list()).await?;
            initial = list["items"].as_array().cloned().unwrap_or_default();
            list["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0)
        }
    };
    let request = WatchRequest {
        resource: resource.storage_name(),
        namespace: target.namespace.clone(),
        labels: options.labels.clone(),
        fields: options.fields.clone(),
        after,
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(256);
    let stream = match state.store.watch(request).await {
        Ok(stream) => Some(stream),
        Err(crate::store::Error::Gone {
            requested,
            compacted,
        }) => {
            let status = ApiError::gone(format!(
                "too old resource version: {requested} ({compacted})"
            ))
            .status_object();
            let _ = tx.send(Ok(line("ERROR", &status))).await;
            None
        }
        Err(e) => return Err(ApiError::from_store(e, resource, "")),
    };
    let kind = resource.kind;
    let api_version = resource.api_version();
    tokio::spawn(async move {
        let Some(mut stream) = stream else { return };
        for item in &initial {
            if tx.send(Ok(line("ADDED", item))).await.is_err() {
                return;
            }
        }
        let bookmark = |rv: i64, initial_end: bool| {
            let mut metadata = json!({"resourceVersion": rv.to_string()});
            if initial_end {
                metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            line(
                "BOOKMARK",
                &json!({"kind": kind, "apiVersion": api_version, "metadata": metadata}),
            )
        };
        let mut last = after;
        if send_initial && bookmarks && tx.send(Ok(bookmark(last, true))).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + bookmark_interval,
            bookmark_interval,
        );
        loop {
            let bytes = tokio::select! {
                () = &mut deadline => return,
                // The client went away: let go of the store's watch now, not at the next event.
                () = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => bookmark(last, false),
                next = stream.next() => match next {
                    Some(Ok(event)) => {
                        last = event.revision;
                        let kind = match event.kind {
                            EventType::Added => "ADDED",
                            EventType::Modified => "MODIFIED",
                            EventType::Deleted => "DELETED",
                        };
                        line(kind, &kinds::presented(resource, event.object.value.clone()))
                    }
                    Some(Err(error)) => {
                        let status = match error {
                            crate::store::Error::Gone { requested, compacted } => ApiError::gone(format!("too old resource version: {requested} ({compacted})")),
                            other => ApiError::from_store(other, resource, ""),
                        };
                        let _ = tx.send(Ok(line("ERROR", &status.status_object()))).await;
                        return;
                    }
                    None => return,
                },
            };
            if tx.send(Ok(bytes)).await.is_err() {
                return;
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}
