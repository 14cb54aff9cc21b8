//! The backend conformance suite of webcache, written once and run against every backend, and
//! fixtures that start real servers (`redis-server`, `memcached`, PostgreSQL) on free loopback
//! ports for the backends' tests.
//!
//! A backend's test file runs the whole suite with one line:
//!
//! ```ignore
//! webcache_testkit::conformance_suite!(MyHarness::new());
//! ```
//!
//! where `MyHarness` implements [`Harness`]: it hands out backends (sharing one server is fine:
//! every case uses its own random key prefix) and says what the backend can do.
//!
//! Beyond the suite, [`races`] holds the races between two independent clients of one store
//! that backends shared by several processes must win, and [`bench`](mod@bench) the round driver of the
//! backends' throughput benchmarks.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)]

pub mod bench;
pub mod cases;
pub mod races;
pub mod servers;

use std::sync::Arc;
use std::time::Duration;

use webcache_core::{Backend, Cache, CacheOptions};

/// What a backend under test can do; cases that need a missing capability are skipped with a
/// message (never silently passed).
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// Timeouts shorter than a second are honoured (memcached rounds up to whole seconds).
    pub subsecond_expiry: bool,
    /// `scan`/`keys` can list keys.
    pub keys: bool,
    /// Extra time to wait after an expiry, for backends whose clock is coarse.
    pub expiry_slack: Duration,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            subsecond_expiry: true,
            keys: true,
            expiry_slack: Duration::from_millis(150),
        }
    }
}

/// A backend under test.
#[async_trait::async_trait]
pub trait Harness: Send + Sync {
    /// A backend to test. Several calls may share one server and one keyspace: the cases keep
    /// apart by key prefix.
    async fn backend(&self) -> Arc<dyn Backend>;

    /// A backend bounded to `max_entries`, if the backend supports an entry bound.
    async fn bounded_backend(&self, _max_entries: u64) -> Option<Arc<dyn Backend>> {
        None
    }

    /// What the backend can do.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}

/// A cache over a backend from `harness`, with a random key prefix so cases do not see each
/// other's keys.
pub async fn cache(harness: &dyn Harness) -> Cache {
    cache_with(harness, CacheOptions::default()).await
}

/// Like [`cache`] with custom options (the prefix is still made unique).
pub async fn cache_with(harness: &dyn Harness, options: CacheOptions) -> Cache {
    let backend = harness.backend().await;
    Cache::new(backend, unique(options))
}

fn unique(mut options: CacheOptions) -> CacheOptions {
    options.key_prefix = format!("{}t{:08x}", options.key_prefix, rand::random::<u32>());
    options
}

/// Runs the whole conformance suite against a [`Harness`]: expands to one `#[tokio::test]` per
/// case in [`cases`], so each case passes or fails on its own.
///
/// The calling crate needs `tokio` (with `macros` and `rt-multi-thread`) as a dev-dependency.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:expr) => {
        $crate::__conformance_cases!($harness;
            get_missing_is_none,
            set_then_get,
            set_replaces,
            add_twice,
            add_after_expiry,
            add_zero_timeout_stores_nothing,
            none_and_unit_values_are_hits,
            get_or_returns_default,
            get_many_returns_only_present_keys,
            set_many_then_get_many,
            set_many_zero_timeout_removes,
            delete_returns_whether_deleted,
            delete_many_counts,
            has_key,
            incr_and_decr,
            incr_missing_key_is_error,
            incr_non_integer_is_error,
            incr_keeps_expiry,
            concurrent_incr_is_atomic,
            expires_after_one_second,
            fractional_timeout,
            zero_timeout_stores_nothing_and_removes_old_value,
            forever_timeout,
            default_timeout_applies,
            long_timeout_stays_relative,
            huge_timeout_keeps_the_value,
            touch,
            ttl_reports_missing_forever_and_remaining,
            versions_isolate,
            incr_and_decr_version,
            prefixes_isolate,
            clear_removes_only_own_prefix,
            unicode_keys_and_values,
            binary_values,
            many_data_types,
            large_values_round_trip,
            get_or_set_stores_and_returns,
            get_or_set_returns_the_winners_value,
            concurrent_get_or_set_runs_once,
            keys_by_pattern,
            eviction_keeps_the_bound,
            corrupt_entries_are_misses,
            get_or_set_repairs_unreadable_entries,
            key_rules_are_enforced,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                $crate::cases::$case(&harness).await;
            }
        )*
    };
}
