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
//! A backend that cannot do what a case needs (an entry bound, sub-second expiry, listing keys)
//! names that case with its reason; the case is then reported by `cargo test` as `ignored`,
//! counted in the summary, and runs only with `--ignored`:
//!
//! ```ignore
//! webcache_testkit::conformance_suite!(MyHarness::new(); skip: {
//!     eviction_keeps_the_bound: "the server evicts by memory, not by an entry bound",
//! });
//! ```
//!
//! A case whose capability is missing but that is not listed fails, saying what to list: a
//! skipped case is never reported as a pass. A listed name that is not a case does not compile.
//!
//! # Checking that a test catches what it claims
//!
//! A test that cannot fail proves nothing. When adding one, break the line it is about (return
//! early, drop the check, flip the condition), run that test alone
//! (`cargo test -p CRATE --test FILE -- NAME`), see it fail with a message that names the fault,
//! then restore the line.
//!
//! Beyond the suite, [`races`] holds the races between two independent clients of one store
//! that backends shared by several processes must win, and [`bench`](mod@bench) the round driver of the
//! backends' throughput benchmarks.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)]

pub mod bench;
pub mod cases;
pub mod forwarding;
pub mod logs;
pub mod races;
pub mod servers;

use std::sync::Arc;
use std::time::Duration;

use webcache_core::backend::Backend;
use webcache_core::{Cache, CacheOptions};

/// What a backend under test can do. A case that needs a missing capability fails unless the
/// suite's invocation lists it under `skip:` (then it is reported as ignored, with its reason).
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
/// `conformance_suite!(harness; skip: { case: "reason", ... })` marks the cases the backend
/// cannot run as `#[ignore = "reason"]` (see the crate docs).
///
/// The calling crate needs `tokio` (with `macros` and `rt-multi-thread`) as a dev-dependency.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:expr) => {
        $crate::conformance_suite!($harness; skip: {});
    };
    ($harness:expr; skip: { $($skip:ident : $why:literal),* $(,)? }) => {
        $crate::__conformance_cases!(($) $harness; [$($skip: $why),*];
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
            incr_overflow_is_an_error_and_leaves_the_value,
            foreign_integers_are_not_reinterpreted,
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
            get_or_set_says_what_it_did,
            keys_by_pattern,
            eviction_keeps_the_bound,
            corrupt_entries_are_misses,
            get_or_set_repairs_unreadable_entries,
            key_rules_are_enforced,
            stale_value_is_served_at_once_with_one_refresh,
            past_the_stale_window_callers_wait,
            failing_refresh_serves_stale_until_the_window_ends,
            tagged_entries_are_misses_after_invalidation,
            invalidation_reaches_other_clients,
            data_read_before_an_invalidation_does_not_survive_it,
            missing_tag_versions_are_never_trusted,
            bad_tags_are_refused,
            set_if_present_writes_only_present_keys,
            set_if_present_over_an_expired_key_is_false,
            set_if_present_never_resurrects_a_deleted_key,
            get_ready_answers_as_get_does,
            get_bytes_now_answers_as_get_bytes_does,
            expire_at_and_persist,
            delete_pattern_is_scoped,
            every_codec_round_trips,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    (($d:tt) $harness:expr; [$($skip:ident : $why:literal),*]; $($case:ident),* $(,)?) => {
        // A skipped name must be a case: a typo does not compile.
        $(const _: () = {
            let _ = $crate::cases::$skip;
        };)*
        // Skipped cases match their own arm (an ident in a matcher matches only itself).
        macro_rules! __conformance_case {
            $(($skip) => {
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = $why]
                async fn $skip() {
                    let harness = $harness;
                    $crate::cases::$skip(&harness).await;
                }
            };)*
            ($d other:ident) => {
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $d other() {
                    let harness = $harness;
                    $crate::cases::$d other(&harness).await;
                }
            };
        }
        $(__conformance_case!($case);)*
    };
}
