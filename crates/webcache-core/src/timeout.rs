//! How long an entry is kept.

use std::time::Duration;

/// How long a value is kept, as given to `set`, `add`, `touch` and friends.
///
/// Converts from a [`Duration`] or a number of seconds, so most calls read naturally:
///
/// ```
/// use std::time::Duration;
/// use webcache_core::Timeout;
///
/// assert_eq!(Timeout::from(60), Timeout::After(Duration::from_secs(60)));
/// assert_eq!(Timeout::from(0.5), Timeout::After(Duration::from_millis(500)));
/// // Zero means "do not keep": `set` stores nothing and removes an older value.
/// assert!(Timeout::from(0).is_zero());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timeout {
    /// The cache's configured default (300 seconds unless configured otherwise).
    #[default]
    Default,
    /// Never expires (it can still be evicted by a bounded backend).
    Forever,
    /// Expires after this long. `Duration::ZERO` means "do not keep".
    After(Duration),
}

impl Timeout {
    /// Whether this timeout means "do not keep".
    pub fn is_zero(&self) -> bool {
        matches!(self, Timeout::After(d) if d.is_zero())
    }

    /// Resolves `Default` against the cache's default.
    pub fn resolve(self, default: Timeout) -> Timeout {
        match self {
            Timeout::Default => match default {
                // A default of `Default` would be a loop; treat it as the documented 300 s.
                Timeout::Default => Timeout::After(DEFAULT_TIMEOUT),
                other => other,
            },
            other => other,
        }
    }

    /// Parses a configuration value: seconds (`300`, `0.5`) or `forever`/`none`.
    pub fn parse(text: &str) -> Option<Timeout> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("forever") || text.eq_ignore_ascii_case("none") {
            return Some(Timeout::Forever);
        }
        let secs: f64 = text.parse().ok()?;
        Duration::try_from_secs_f64(secs).ok().map(Timeout::After)
    }
}

/// The default timeout of a cache that configures none: 300 seconds, as in Django.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

impl From<Duration> for Timeout {
    fn from(d: Duration) -> Self {
        Timeout::After(d)
    }
}

impl From<u64> for Timeout {
    fn from(secs: u64) -> Self {
        Timeout::After(Duration::from_secs(secs))
    }
}

impl From<u32> for Timeout {
    fn from(secs: u32) -> Self {
        Timeout::After(Duration::from_secs(secs.into()))
    }
}

impl From<i32> for Timeout {
    /// Negative seconds mean "already expired", as in Django: the same as zero.
    fn from(secs: i32) -> Self {
        Timeout::After(Duration::from_secs(secs.max(0).unsigned_abs().into()))
    }
}

impl From<f64> for Timeout {
    /// Fractions of a second are kept; negative or NaN seconds mean "do not keep".
    fn from(secs: f64) -> Self {
        Timeout::After(Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO))
    }
}

impl From<Option<Duration>> for Timeout {
    /// `None` means forever, as Django's `timeout=None`.
    fn from(d: Option<Duration>) -> Self {
        d.map_or(Timeout::Forever, Timeout::After)
    }
}

/// When a stored entry expires, as a backend sees it: already resolved, never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Keep until deleted or evicted.
    Never,
    /// Expire after this (non-zero) duration from now.
    After(Duration),
}

impl Expiry {
    /// The duration, if any.
    pub fn duration(self) -> Option<Duration> {
        match self {
            Expiry::Never => None,
            Expiry::After(d) => Some(d),
        }
    }
}

/// The remaining lifetime of a key, as `ttl` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key is not in the cache (or has expired).
    Missing,
    /// The key never expires.
    Forever,
    /// The key expires after this long.
    Remaining(Duration),
}
