//! `get KEY`: a value, decoded for people.

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use tower_sessions::session::Record;
use webcache::backend::entry::{self, Decoded};
use webcache::bytes::Bytes;
use webcache::Cache;

use super::{OpError, Reply};

/// Reads the stored entry through the cache (its timeouts, degrade mode and metrics apply).
pub(super) async fn run(cache: &Cache, key: &str) -> Result<Reply, OpError> {
    let stored = cache.get_raw(key).await?;
    Ok(Reply::Value(stored.map(|raw| describe(cache, &raw))))
}

/// A stored entry, decoded for people: JSON values as they are, integers as numbers, bytes as
/// text when they are UTF-8 or as a hex preview, cached pages as status, headers and size,
/// session records with their id and expiry as people read them.
fn describe(cache: &Cache, raw: &Bytes) -> Value {
    let options = cache.options();
    let decoded = entry::decode_for(raw, options.max_entry_size, options.serializer);
    if let Ok(decoded @ (Decoded::Json(_) | Decoded::MsgPack(_))) = &decoded {
        if let Ok(record) = webcache::codec::deserialize::<Record>(decoded.clone()) {
            return describe_session(&record);
        }
    }
    match decoded {
        Ok(Decoded::Integer(n)) => json!(n),
        Ok(Decoded::Json(payload)) => serde_json::from_slice(&payload)
            .unwrap_or_else(|e| json!({"corrupt": format!("JSON entry that does not parse: {e}")})),
        // MessagePack describes itself: shown as the JSON it reads as.
        Ok(decoded @ Decoded::MsgPack(_)) => webcache::codec::deserialize::<Value>(decoded)
            .unwrap_or_else(
                |e| json!({"corrupt": format!("MessagePack entry that does not parse: {e}")}),
            ),
        // postcard does not: only the type that wrote it can read it.
        Ok(Decoded::Postcard(payload)) => json!({
            "postcard_bytes": payload.len(),
            "hex": hex_preview(&payload),
        }),
        Ok(Decoded::Bytes(bytes)) => describe_bytes(&bytes),
        Err(e) => json!({ "corrupt": e.to_string(), "size": raw.len(), "hex": hex_preview(raw) }),
    }
}

/// A tower-sessions record (as the session stores write it): its id as the cookie carries it
/// and its expiry as a UTC date and the seconds left, instead of the serialized forms (a
/// 128-bit number and a tuple of date parts).
fn describe_session(record: &Record) -> Value {
    // Whole seconds: people read dates, not nanoseconds.
    let expires = record.expiry_date.to_offset(UtcOffset::UTC);
    let expires = expires.replace_nanosecond(0).unwrap_or(expires);
    let left = (expires - OffsetDateTime::now_utc()).whole_seconds();
    json!({
        "session_id": record.id.to_string(),
        "expires": expires.format(&Rfc3339).unwrap_or_else(|_| expires.to_string()),
        "expires_in_seconds": left.max(0),
        "expired": left <= 0,
        "data": record.data,
    })
}

fn describe_bytes(bytes: &Bytes) -> Value {
    if let Some(page) = crate::pages::describe(bytes) {
        return page;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({ "bytes": bytes.len(), "hex": hex_preview(bytes) }),
    }
}

fn hex_preview(bytes: &[u8]) -> String {
    let mut out: String = bytes.iter().take(32).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 32 {
        out.push_str("...");
    }
    out
}
