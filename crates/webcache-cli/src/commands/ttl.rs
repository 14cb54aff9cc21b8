//! `ttl KEY`: seconds left, `forever`, or missing.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use webcache::{Cache, Ttl};

use super::{OpError, Reply};

/// A key's remaining lifetime, as `ttl` reports it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Lifetime {
    /// No such key.
    Missing,
    /// No expiry.
    Forever,
    /// Seconds left, to the millisecond.
    Seconds(f64),
}

impl Lifetime {
    /// As `--json` prints it: seconds, "forever", or null.
    pub(crate) fn to_json(self) -> Value {
        match self {
            Lifetime::Missing => Value::Null,
            Lifetime::Forever => json!("forever"),
            Lifetime::Seconds(s) => json!(s),
        }
    }
}

/// Asks through the cache (its timeouts, degrade mode and metrics apply).
pub(super) async fn run(cache: &Cache, key: &str) -> Result<Reply, OpError> {
    Ok(Reply::Ttl(match cache.ttl(key).await? {
        Ttl::Missing => Lifetime::Missing,
        Ttl::Forever => Lifetime::Forever,
        Ttl::Remaining(d) => Lifetime::Seconds(round_ms(d)),
    }))
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
