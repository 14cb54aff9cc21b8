//! Expiry times as memcached wants them: whole seconds, relative up to 30 days, absolute beyond.

use webcache_core::Expiry;

use crate::server::Server;

/// Memcached reads expiry times above this many seconds as absolute unix times.
const RELATIVE_LIMIT: u64 = 30 * 24 * 3600;

/// Whole seconds for an expiry: rounded up, plus one for memcached's once-a-second clock.
/// Zero means "no expiry" to memcached. Beyond 30 days the time is sent as an absolute date
/// computed from an estimate of the server's clock (good to about a second each way), so it is
/// made two seconds short instead, so that the entry never outlives its timeout.
pub(crate) fn expiry_secs(expiry: Expiry) -> u64 {
    match expiry {
        Expiry::Never => 0,
        Expiry::After(d) => {
            let secs = (d.as_secs() + u64::from(d.subsec_nanos() > 0)).saturating_add(1);
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
    if secs <= RELATIVE_LIMIT {
        return secs;
    }
    u64::try_from(server.server_now())
        .unwrap_or(0)
        .saturating_add(secs)
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
    }
}
