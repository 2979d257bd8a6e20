//! Consistent, paginated lists: every page of one list is read at the same revision.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bosun_api::{fields, labels};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::codec::Codec;
use super::{Backend, Error, ListRequest, ListResult, RangeQuery, Result};

/// Rows read from the datastore per round trip when a selector filters them.
const SCAN_PAGE: usize = 500;

/// The `continue` token: where the previous page stopped and at which revision.
#[derive(Serialize, Deserialize)]
struct Continue {
    rv: i64,
    ns: String,
    name: String,
}

impl Continue {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("serializable"))
    }

    fn decode(token: &str) -> Result<Self> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|e| Error::InvalidContinue(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::InvalidContinue(e.to_string()))
    }
}

/// Whether an object passes a list's or watch's selectors.
pub(crate) fn selected(
    labels: &labels::Selector,
    fields: &fields::Selector,
    value: &Value,
) -> bool {
    if !labels.is_empty() {
        let empty = serde_json::Map::new();
        let set = value
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        if !labels.matches(set) {
            return false;
        }
    }
    fields.matches(value)
}

pub(crate) async fn list<B: Backend + ?Sized>(
    backend: &B,
    codec: &Codec,
    request: &ListRequest,
) -> Result<ListResult> {
    let (mut revision, mut after) = match &request.continue_token {
        Some(token) => {
            let c = Continue::decode(token)?;
            (Some(c.rv), Some((c.ns, c.name)))
        }
        None => (request.revision, None),
    };
    let filtering = !request.labels.is_empty() || !request.fields.is_empty();
    let page = match request.limit {
        0 => SCAN_PAGE,
        n if filtering => n.max(SCAN_PAGE),
        n => n,
    };
    let mut items = Vec::new();
    loop {
        let (rev, rows) = backend
            .range(&RangeQuery {
                resource: &request.resource,
                namespace: request.namespace.as_deref(),
                after: after.as_ref().map(|(ns, n)| (ns.as_str(), n.as_str())),
                revision,
                limit: page as i64,
            })
            .await?;
        revision = Some(rev);
        let exhausted = rows.len() < page;
        let count = rows.len();
        for (i, row) in rows.into_iter().enumerate() {
            after = Some((row.key.namespace.clone(), row.key.name.clone()));
            let object = codec.decode(&row.key, &row.value, row.revision, row.create_revision)?;
            if !selected(&request.labels, &request.fields, &object.value) {
                continue;
            }
            items.push(object);
            if request.limit > 0 && items.len() == request.limit {
                let last_row = exhausted && i + 1 == count;
                let continue_token = (!last_row).then(|| {
                    let (ns, name) = after.take().expect("set above");
                    Continue { rv: rev, ns, name }.encode()
                });
                return Ok(ListResult {
                    revision: rev,
                    items,
                    continue_token,
                });
            }
        }
        if exhausted {
            return Ok(ListResult {
                revision: rev,
                items,
                continue_token: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = Continue {
            rv: 42,
            ns: "default".into(),
            name: "web".into(),
        }
        .encode();
        let back = Continue::decode(&token).unwrap();
        assert_eq!(
            (back.rv, back.ns.as_str(), back.name.as_str()),
            (42, "default", "web")
        );
        assert!(matches!(
            Continue::decode("not a token!"),
            Err(Error::InvalidContinue(_))
        ));
        assert!(matches!(
            Continue::decode(&URL_SAFE_NO_PAD.encode(b"{}")),
            Err(Error::InvalidContinue(_))
        ));
    }
}
