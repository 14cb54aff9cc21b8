//! `ttl KEY`: seconds left (fresh, then stale for a value kept with a stale window),
//! `forever`, or missing.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use webcache::{Cache, Lifetime as Split};

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
    Seconds(Left),
}

/// The seconds a key has left: fresh, then stale (zero without a stale window).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Left {
    fresh: f64,
    stale: f64,
}

impl fmt::Display for Left {
    /// The number of seconds, for a unit to follow (`57.481` s); with a stale window, both
    /// parts (`fresh for 57.481 s, then stale for 300` s).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Left { fresh, stale } = *self;
        if stale <= 0.0 {
            write!(f, "{fresh}")
        } else if fresh <= 0.0 {
            write!(f, "stale, kept for {stale}")
        } else {
            write!(f, "fresh for {fresh} s, then stale for {stale}")
        }
    }
}

impl Lifetime {
    /// As `--json` prints it: seconds, `{"fresh": s, "stale": s}` for a value with a stale
    /// window, "forever", or null.
    pub(crate) fn to_json(self) -> Value {
        match self {
            Lifetime::Missing => Value::Null,
            Lifetime::Forever => json!("forever"),
            Lifetime::Seconds(Left { fresh, stale }) if stale <= 0.0 => json!(fresh),
            Lifetime::Seconds(Left { fresh, stale }) => json!({"fresh": fresh, "stale": stale}),
        }
    }
}

/// Asks through the cache (its timeouts, degrade mode and metrics apply).
pub(super) async fn run(cache: &Cache, key: &str) -> Result<Reply, OpError> {
    Ok(Reply::Ttl(match cache.lifetime(key).await? {
        Split::Missing => Lifetime::Missing,
        Split::Forever => Lifetime::Forever,
        Split::Expires { fresh, stale } => Lifetime::Seconds(Left {
            fresh: round_ms(fresh),
            stale: round_ms(stale),
        }),
    }))
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_parts_are_shown_when_there_is_a_window() {
        let show = |fresh, stale| {
            let l = Lifetime::Seconds(Left { fresh, stale });
            let Lifetime::Seconds(left) = l else {
                unreachable!()
            };
            // As the human output prints it: the seconds, then their unit.
            (format!("{left} s"), l.to_json())
        };
        assert_eq!(show(57.481, 0.0), ("57.481 s".into(), json!(57.481)));
        assert_eq!(
            show(57.5, 300.0),
            (
                "fresh for 57.5 s, then stale for 300 s".into(),
                json!({"fresh": 57.5, "stale": 300.0})
            )
        );
        assert_eq!(
            show(0.0, 12.25),
            (
                "stale, kept for 12.25 s".into(),
                json!({"fresh": 0.0, "stale": 12.25})
            )
        );
    }
}
