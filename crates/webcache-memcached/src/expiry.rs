//! Expiry times as memcached wants them: whole seconds, relative up to 30 days, absolute beyond.

use webcache_core::Expiry;

use crate::server::Server;

/// Memcached reads expiry times above this many seconds as absolute unix times.
const RELATIVE_LIMIT: u64 = 30 * 24 * 3600;

/// The latest absolute expiry memcached accepts: it reads the time into a signed 32-bit number.
/// Past it (January 2038) it answers `HD` yet stores nothing (and the older value is gone), and
/// a number past 64 bits is `CLIENT_ERROR bad token`; so later times are sent as this one.
const ABSOLUTE_MAX: u64 = i32::MAX as u64;

/// Whole seconds for an expiry: rounded up, plus one for memcached's once-a-second clock.
/// Zero means "no expiry" to memcached. Beyond 30 days the time is sent as an absolute date
/// computed from an estimate of the server's clock (good to about a second each way), so it is
/// made two seconds short instead, so that the entry never outlives its timeout.
pub(crate) fn expiry_secs(expiry: Expiry) -> u64 {
    match expiry {
        Expiry::Never => 0,
        Expiry::After(d) => {
            let secs = d
                .as_secs()
                .saturating_add(u64::from(d.subsec_nanos() > 0))
                .saturating_add(1);
            if secs > RELATIVE_LIMIT {
                secs - 3
            } else {
                secs
            }
        }
    }
}

/// The `T` token for `secs` seconds from now: relative up to 30 days, an absolute unix time on
/// the server's clock beyond.
pub(crate) fn exptime_token(server: &Server, secs: u64) -> u64 {
    token_at(server.server_now(), secs)
}

/// [`exptime_token`] when the server's clock reads `server_now`. A time later than memcached can
/// hold becomes the latest it can ([`ABSOLUTE_MAX`]): a huge timeout keeps the value as long as
/// memcached can, never drops it.
fn token_at(server_now: i64, secs: u64) -> u64 {
    if secs <= RELATIVE_LIMIT {
        return secs;
    }
    u64::try_from(server_now)
        .unwrap_or(0)
        .saturating_add(secs)
        .min(ABSOLUTE_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expiry_rounds_up_with_a_spare_second() {
        assert_eq!(expiry_secs(Expiry::Never), 0);
        assert_eq!(expiry_secs(Expiry::After(Duration::from_millis(300))), 2);
        assert_eq!(expiry_secs(Expiry::After(Duration::from_secs(1))), 2);
        assert_eq!(expiry_secs(Expiry::After(Duration::from_millis(1001))), 3);
        let days_31 = Duration::from_secs(31 * 24 * 3600);
        assert_eq!(expiry_secs(Expiry::After(days_31)), days_31.as_secs() - 2);
        // No overflow at the top of `Duration`'s range.
        assert_eq!(expiry_secs(Expiry::After(Duration::MAX)), u64::MAX - 3);
    }

    #[test]
    fn tokens_never_pass_what_memcached_accepts() {
        let now = 1_800_000_000;
        assert_eq!(token_at(now, 60), 60);
        assert_eq!(token_at(now, RELATIVE_LIMIT), RELATIVE_LIMIT);
        assert_eq!(
            token_at(now, RELATIVE_LIMIT + 1),
            1_800_000_000 + RELATIVE_LIMIT + 1
        );
        for secs in [400_000_000, 1 << 40, u64::MAX] {
            assert_eq!(token_at(now, secs), ABSOLUTE_MAX, "{secs}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Every timeout gives a token memcached stores: relative up to 30 days, otherwise an
        /// absolute time after now and no later than memcached's last second.
        #[test]
        fn every_timeout_gives_a_storable_token(secs: u64, nanos in 0u32..1_000_000_000, now in 0i64..2_000_000_000) {
            let token = token_at(now, expiry_secs(Expiry::After(Duration::new(secs, nanos))));
            proptest::prop_assert!(token > 0);
            proptest::prop_assert!(token <= RELATIVE_LIMIT || (token > now.unsigned_abs() && token <= ABSOLUTE_MAX));
        }
    }
}
