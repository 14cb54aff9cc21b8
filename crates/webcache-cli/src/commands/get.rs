//! `get KEY`: a value, decoded for people.

use serde_json::{json, Value};
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
/// text when they are UTF-8 or as a hex preview, cached pages as status, headers and size.
fn describe(cache: &Cache, raw: &Bytes) -> Value {
    let options = cache.options();
    match entry::decode_for(raw, options.max_entry_size, options.serializer) {
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
