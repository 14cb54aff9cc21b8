//! `set KEY VALUE` and `add KEY VALUE`: store a JSON value (`add` only if the key is absent).

use serde_json::value::RawValue;
use webcache::{Cache, Timeout};

use super::{timeout, OpError, Reply, Write};

pub(super) async fn set(cache: &Cache, key: &str, write: Write) -> Result<Reply, OpError> {
    let (value, timeout) = parse(write)?;
    cache.set(key, &value, timeout).await?;
    Ok(Reply::Stored)
}

pub(super) async fn add(cache: &Cache, key: &str, write: Write) -> Result<Reply, OpError> {
    let (value, timeout) = parse(write)?;
    Ok(Reply::Added(cache.add(key, &value, timeout).await?))
}

/// The value and its timeout. The JSON text is checked and kept as it is (never built into a
/// `serde_json::Value`, which for an array of numbers takes many times the text's size), so a
/// large value is held as its text, the serialized copy and the stored entry at most.
fn parse(write: Write) -> Result<(Box<RawValue>, Timeout), OpError> {
    let timeout = timeout(write.seconds, write.forever)?;
    let mut text = write.value;
    // Stored without surrounding whitespace, so ` 42` is still an integer `incr` can use.
    text.truncate(text.trim_end().len());
    let leading = text.len() - text.trim_start().len();
    text.drain(..leading);
    let value = RawValue::from_string(text).map_err(|e| {
        OpError::Usage(format!(
            "VALUE must be JSON ({e}); quote text as '\"text\"', numbers as 42, objects as '{{\"a\": 1}}'"
        ))
    })?;
    Ok((value, timeout))
}
