//! [`LogThrottle`]: the one rule for "a warning at most every N seconds", shared by the cache's
//! degrade mode and the page cache's backend warnings, so a failing backend cannot flood a log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets one message through per interval; the others should go to a quieter level.
///
/// ```
/// use std::time::Duration;
/// use webcache::backend::LogThrottle;
///
/// let throttle = LogThrottle::new(Duration::from_secs(10));
/// assert!(throttle.ready());
/// assert!(!throttle.ready()); // the next one within 10 s
/// ```
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    started: Instant,
    /// Milliseconds since `started` of the last message let through, plus one (0 = never).
    last_ms: AtomicU64,
}

impl LogThrottle {
    /// A throttle letting one message through every `interval`.
    pub fn new(interval: Duration) -> Self {
        LogThrottle {
            interval,
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Whether a message may go through now (at most one caller per interval gets `true`).
    pub fn ready(&self) -> bool {
        let now = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let interval = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        let due = last == 0 || now.saturating_sub(last) >= interval;
        due && self
            .last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_per_interval() {
        let throttle = LogThrottle::new(Duration::from_millis(50));
        assert!(throttle.ready());
        assert!(!throttle.ready());
        std::thread::sleep(Duration::from_millis(60));
        assert!(throttle.ready());
        assert!(!throttle.ready());
    }
}
