//! `set KEY VALUE` and `add KEY VALUE`: store a JSON value (`add` only if the key is absent).

use serde_json::Value;
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

/// The value and its timeout. The JSON text is dropped once parsed, so a large value is held
/// once as text or as a value, never both while it is stored.
fn parse(write: Write) -> Result<(Value, Timeout), OpError> {
    let timeout = timeout(write.seconds, write.forever)?;
    let value = serde_json::from_str(&write.value).map_err(|e| {
        OpError::Usage(format!(
            "VALUE must be JSON ({e}); quote text as '\"text\"', numbers as 42, objects as '{{\"a\": 1}}'"
        ))
    })?;
    Ok((value, timeout))
}
