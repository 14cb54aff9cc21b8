//! Recognising cached pages when inspecting: status, headers and body size instead of bytes.

use serde_json::{json, Value};
use webcache::bytes::Bytes;
use webcache::http::{inspect, StoredSummary};

/// A cached page (or a page's Vary list) described for people, if `bytes` holds one.
pub(crate) fn describe(bytes: &Bytes) -> Option<Value> {
    Some(match inspect(bytes.clone())? {
        StoredSummary::Page {
            status,
            headers,
            body_bytes,
            age,
            fresh_for,
            vary,
        } => json!({
            "page": {
                "status": status,
                "headers": headers.into_iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
                "body_bytes": body_bytes,
                "age_seconds": age.as_secs(),
                "fresh_for_seconds": fresh_for.as_secs(),
                "vary": vary.into_iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
            }
        }),
        StoredSummary::VaryList(names) => json!({ "page_varies_on": names }),
    })
}
