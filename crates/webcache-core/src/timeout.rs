//! How long an entry is kept.

use std::time::Duration;

/// How long a value is kept, as given to `set`, `add`, `touch` and friends.
///
/// Converts from a [`Duration`] or a number of seconds, so most calls read naturally:
///
/// ```
/// use std::time::Duration;
/// use webcache::Timeout;
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
    ///
    /// Negative and NaN seconds are refused (`None`): in a configuration file they are a
    /// mistake, not a request to store nothing. Seconds too many to represent (`1e30`, `inf`)
    /// are [`Timeout::Forever`], as in [`Timeout::from_secs_f64`].
    pub fn parse(text: &str) -> Option<Timeout> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("forever") || text.eq_ignore_ascii_case("none") {
            return Some(Timeout::Forever);
        }
        let secs: f64 = text.parse().ok()?;
        if secs < 0.0 {
            return None;
        }
        Timeout::from_secs_f64(secs)
    }

    /// The timeout for a number of seconds, or `None` for NaN (which is no number of seconds).
    ///
    /// The one rule for fractional seconds, shared by [`From<f64>`](#impl-From<f64>-for-Timeout)
    /// and [`parse`](Timeout::parse):
    /// - zero, negative and `-inf` mean "do not keep" (Django's "already expired");
    /// - a positive number is never zero: below a nanosecond it is kept for one nanosecond;
    /// - more seconds than a [`Duration`] holds (about 5.8e11 years), and `+inf`, saturate to
    ///   [`Timeout::Forever`]: a timeout too large to represent keeps the value, it never
    ///   deletes it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use webcache::Timeout;
    /// assert_eq!(Timeout::from_secs_f64(1e30), Some(Timeout::Forever));
    /// assert_eq!(Timeout::from_secs_f64(f64::INFINITY), Some(Timeout::Forever));
    /// assert_eq!(Timeout::from_secs_f64(1e-12), Some(Timeout::After(Duration::from_nanos(1))));
    /// assert!(Timeout::from_secs_f64(-3.0).is_some_and(|t| t.is_zero()));
    /// assert_eq!(Timeout::from_secs_f64(f64::NAN), None);
    /// ```
    pub fn from_secs_f64(secs: f64) -> Option<Timeout> {
        if secs.is_nan() {
            return None;
        }
        if secs <= 0.0 {
            return Some(Timeout::After(Duration::ZERO));
        }
        Some(match Duration::try_from_secs_f64(secs) {
            Ok(d) => Timeout::After(d.max(Duration::from_nanos(1))),
            // Positive and not NaN, so the only failure left is overflow.
            Err(_) => Timeout::Forever,
        })
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
    /// Fractions of a second are kept; zero or negative seconds mean "do not keep"; more
    /// seconds than a [`Duration`] holds (or `+inf`) mean forever, never zero (see
    /// [`Timeout::from_secs_f64`]). NaN is no number of seconds: it gives
    /// [`Timeout::Default`], the cache's configured default, rather than deleting the value.
    fn from(secs: f64) -> Self {
        Timeout::from_secs_f64(secs).unwrap_or(Timeout::Default)
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

/// A key's remaining lifetime split at its fresh-until time, as
/// [`Cache::lifetime`](crate::Cache::lifetime) reports it: what [`Ttl`] says, and how much of
/// it is fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// The key is not in the cache (or has expired).
    Missing,
    /// The key never expires.
    Forever,
    /// The key is fresh for `fresh`, then kept and served stale for `stale` more.
    Expires {
        /// How long the value is still fresh: zero once it is stale.
        fresh: Duration,
        /// How long it is then served stale while it is refreshed (see
        /// [`Cache::get_or_set_with_stale`](crate::Cache::get_or_set_with_stale)): zero for a
        /// value stored without a stale window.
        stale: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn huge_timeouts_saturate_to_forever_never_zero() {
        for secs in [1e30, f64::MAX, f64::INFINITY, 1.9e19, 2f64.powi(64)] {
            assert_eq!(Timeout::from(secs), Timeout::Forever, "{secs}");
            assert_eq!(
                Timeout::parse(&secs.to_string()),
                Some(Timeout::Forever),
                "{secs}"
            );
        }
        assert_eq!(Timeout::parse("inf"), Some(Timeout::Forever));
        // The largest number of seconds a Duration holds is still a duration.
        assert_eq!(
            Timeout::from(1.8e19),
            Timeout::After(Duration::from_secs(18_000_000_000_000_000_000))
        );
    }

    #[test]
    fn nan_is_the_default_and_a_configuration_error() {
        assert_eq!(Timeout::from(f64::NAN), Timeout::Default);
        assert_eq!(Timeout::parse("NaN"), None);
        assert_eq!(Timeout::parse("-1"), None);
        assert!(Timeout::from(-1.0).is_zero());
        assert!(Timeout::from(f64::NEG_INFINITY).is_zero());
        assert!(Timeout::from(-0.0).is_zero());
    }

    /// Orders timeouts by how long they keep a value (`Default` has no place in it).
    fn keeps_for(t: Timeout) -> Option<Duration> {
        match t {
            Timeout::After(d) => Some(d),
            Timeout::Forever => Some(Duration::MAX),
            Timeout::Default => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn every_f64_has_a_sensible_timeout(secs in proptest::num::f64::ANY, other in proptest::num::f64::ANY) {
            let t = Timeout::from(secs);
            if secs.is_nan() {
                prop_assert_eq!(t, Timeout::Default);
                return Ok(());
            }
            // Zero exactly when the caller asked for no time at all.
            prop_assert_eq!(t.is_zero(), secs <= 0.0);
            prop_assert_ne!(t, Timeout::Default);
            if secs >= 2f64.powi(64) {
                prop_assert_eq!(t, Timeout::Forever);
            }
            // More seconds never keep a value for less time.
            if !other.is_nan() {
                let (a, b) = (keeps_for(t), keeps_for(Timeout::from(other)));
                if secs <= other {
                    prop_assert!(a <= b, "{secs} -> {t:?}, {other} -> {b:?}");
                }
            }
            // The configuration parser agrees for every non-negative number.
            if secs >= 0.0 {
                prop_assert_eq!(Timeout::parse(&secs.to_string()), Some(t));
            }
        }
    }
}
