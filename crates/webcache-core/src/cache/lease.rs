//! One computation per key across processes, for the stale family
//! ([`get_or_set_with_stale`](Cache::get_or_set_with_stale)) and
//! [`try_get_or_set_with_lock`](Cache::try_get_or_set_with_lock): a short lease taken with the
//! backend's atomic `add`, so it works on every backend.
//!
//! In-process [`SingleFlight`](crate::SingleFlight) already lets one caller per key compute;
//! the lease makes that caller the only one among every process sharing the backend:
//!
//! - **Refresh of a stale value:** the process that takes the lease refreshes; the others keep
//!   serving the stale value and try again a little later (by then the value is usually fresh
//!   and nobody needs to).
//! - **Miss:** the process that takes the lease computes; the others poll for its value and
//!   return it as soon as it is stored. A poller takes the lease over when it is released
//!   without a value (the computation failed) or expires (its holder died), and after
//!   [`MISS_WAIT_LIMIT`] it computes without it: a slow or stuck process elsewhere delays a
//!   miss, it never blocks it.
//!
//! The lease lives under `webcache:lease:<sha-256 of the stored key>`: a fixed length that
//! every backend's key rules accept whatever the stored key, and a name no key of the default
//! key function reaches (its version part is a number), so `keys` never lists a lease. It
//! expires after [`LEASE_TTL`] unless its holder renews it (every [`RENEW_EVERY`] while the
//! computation runs), so a computation of any length keeps it and a holder that crashed
//! blocks nobody for longer than [`LEASE_TTL`]. It is released (deleted) once the value is
//! written.
//!
//! When the backend fails to take the lease (down, timed out, circuit breaker open), or there
//! is no tokio runtime to poll and renew with, the caller computes as it would without one:
//! the lease saves work, correctness never depends on it.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::future::{select, Either};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Cache, Outcome};
use crate::entry;
use crate::error::Error;
use crate::timeout::{Expiry, Timeout};

/// How long a lease lasts unless renewed: how long a crashed holder delays the next
/// computation.
const LEASE_TTL: Duration = Duration::from_secs(5);

/// How often a holder renews its lease while computing: well within [`LEASE_TTL`], so a
/// holder on a busy machine does not lose it.
const RENEW_EVERY: Duration = Duration::from_secs(1);

/// The first pause of a process that waits for another's value on a miss; it doubles up to
/// [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(20);

/// The longest pause between two looks at the value while another process computes it.
const POLL_MAX: Duration = Duration::from_millis(250);

/// The longest a miss waits for another process's computation before computing itself.
const MISS_WAIT_LIMIT: Duration = Duration::from_secs(30);

/// How long a process that found the lease taken waits before it may try to refresh again.
const BUSY_BACKOFF: Duration = Duration::from_millis(500);

/// The start of every lease's key.
const LEASE_PREFIX: &str = "webcache:lease:";

/// What trying to take a lease came to.
pub(super) enum Taken {
    /// This process holds the lease: it computes, then releases it.
    Held(Lease),
    /// Another process holds it.
    Busy,
    /// Nothing is known (the backend failed, or there is no runtime): compute as without one.
    Unknown,
}

/// A lease this process holds. Dropped without [`release`](Lease::release), it expires by
/// itself after [`LEASE_TTL`].
pub(super) struct Lease {
    cache: Cache,
    key: String,
    /// Whether [`release`](Lease::release) ran (then `Drop` has nothing to do).
    released: bool,
}

impl Cache {
    /// Tries to take the lease on the stored key `full`.
    pub(super) async fn take_lease(&self, full: &str) -> Taken {
        if tokio::runtime::Handle::try_current().is_err() {
            // Renewing and polling need a runtime's timer.
            return Taken::Unknown;
        }
        let key = format!("{LEASE_PREFIX}{:x}", Sha256::digest(full.as_bytes()));
        let added = self
            .guard_strict(
                "add",
                self.inner.backend.add(
                    &key,
                    Bytes::copy_from_slice(full.as_bytes()),
                    Expiry::After(LEASE_TTL),
                ),
            )
            .await;
        match added {
            Ok(true) => Taken::Held(Lease {
                cache: self.clone(),
                key,
                released: false,
            }),
            Ok(false) => Taken::Busy,
            Err(e) => {
                tracing::debug!(alias = %self.alias(), key = full, "no cross-process lease, computing without one: {e}");
                Taken::Unknown
            }
        }
    }

    /// [`try_get_or_set_with`](Cache::try_get_or_set_with) computed once across every process
    /// sharing the backend, not only once in this one: on a miss, the process that takes the
    /// cache's lease computes; the others wait for its value and return it (the miss path of
    /// [`get_or_set_with_stale`](Cache::get_or_set_with_stale), without a stale window).
    ///
    /// For a computation costly enough that several processes (or several `Cache` handles on
    /// their own connections) must not run it at once. It costs one `add` and one `delete` on
    /// the backend per miss, and the waiters poll for the value (every 20 ms, backing off to
    /// 250 ms). A holder that dies delays the others by at most a few seconds; a holder slower
    /// than 30 s, or a backend that cannot take the lease, lets the others compute too: the
    /// lease saves work, correctness never depends on it. An error is returned to the caller
    /// that computed and nothing is stored; a waiter then takes the lease over and computes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> webcache::Result<()> {
    /// use webcache::{Cache, Error};
    ///
    /// let cache = Cache::locmem();
    /// let report: String = cache
    ///     .try_get_or_set_with_lock("report:2026-11", 3600, || async {
    ///         Ok::<_, Error>("built once, whatever the number of processes".to_owned())
    ///     })
    ///     .await?;
    /// assert_eq!(cache.get::<String>("report:2026-11").await?, Some(report));
    /// # Ok(()) }
    /// ```
    pub async fn try_get_or_set_with_lock<T, E, F, Fut>(
        &self,
        key: &str,
        timeout: impl Into<Timeout>,
        compute: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Send,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(value) = self.get::<T>(key).await? {
            return Ok(value);
        }
        let full = self.make_key(key)?;
        let timeout = timeout.into();
        match self.expiry(timeout) {
            Some(expiry) => self
                .compute_and_add_leased(key, &full, expiry, None, compute)
                .await
                .map(|(value, _)| value),
            // Nothing is kept, so there is nothing for another process to wait for.
            None => self.try_get_or_set_with(key, timeout, compute).await,
        }
    }

    /// The miss path of the stale family and of
    /// [`try_get_or_set_with_lock`](Cache::try_get_or_set_with_lock):
    /// [`compute_and_add`](Cache::compute_and_add) run by the one process that holds the
    /// lease; the others wait for its value (see the module docs). `fresh_for`: the fresh part
    /// of a value with a stale window. A value that another process computed comes back as
    /// [`Outcome::Waited`].
    pub(super) async fn compute_and_add_leased<T, E, F, Fut>(
        &self,
        key: &str,
        full: &str,
        expiry: Expiry,
        fresh_for: Option<Duration>,
        compute: F,
    ) -> Result<(T, Outcome), E>
    where
        T: Serialize + DeserializeOwned + Send,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // The lease outlives the computation: it is released once the value is written.
        let held = Mutex::new(None);
        // Set when another process's value came back in place of a computation here.
        let stored_elsewhere = AtomicBool::new(false);
        let result = self
            .compute_and_add(key, full, Some(expiry), fresh_for, || async {
                let lease = match self.await_lease::<T>(key, full).await? {
                    Waited::Stored(value) => {
                        stored_elsewhere.store(true, Ordering::Relaxed);
                        return Ok(value);
                    }
                    Waited::Compute(lease) => lease,
                };
                let value = match &lease {
                    Some(lease) => lease.renewing(compute()).await,
                    None => compute().await,
                };
                *held.lock().unwrap_or_else(|p| p.into_inner()) = lease;
                value
            })
            .await;
        let lease = held.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Some(lease) = lease {
            lease.release().await;
        }
        let (value, outcome) = result?;
        if stored_elsewhere.load(Ordering::Relaxed) {
            return Ok((value, Outcome::Waited));
        }
        Ok((value, outcome))
    }

    /// Waits until this process may compute `full` (it holds the lease, or nothing is known)
    /// or another process stored its value.
    async fn await_lease<T: DeserializeOwned>(
        &self,
        key: &str,
        full: &str,
    ) -> Result<Waited<T>, Error> {
        let deadline = Instant::now() + MISS_WAIT_LIMIT;
        let mut pause = POLL_FIRST;
        loop {
            match self.take_lease(full).await {
                Taken::Held(lease) => {
                    // The holder before us may have written its value and released just now.
                    if let Some(value) = self.stored::<T>(key, full).await? {
                        lease.release().await;
                        return Ok(Waited::Stored(value));
                    }
                    return Ok(Waited::Compute(Some(lease)));
                }
                Taken::Unknown => return Ok(Waited::Compute(None)),
                Taken::Busy if Instant::now() >= deadline => {
                    tracing::warn!(
                        alias = %self.alias(),
                        key,
                        "another process has been computing this value for {MISS_WAIT_LIMIT:?}; computing it here too"
                    );
                    return Ok(Waited::Compute(None));
                }
                Taken::Busy => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(POLL_MAX);
                    if let Some(value) = self.stored::<T>(key, full).await? {
                        return Ok(Waited::Stored(value));
                    }
                }
            }
        }
    }

    /// The value stored under `full`, if it reads as `T`.
    async fn stored<T: DeserializeOwned>(&self, key: &str, full: &str) -> Result<Option<T>, Error> {
        let raw = self.backend_get(full).await?;
        Ok(raw.and_then(|raw| self.decode_typed(key, &raw)))
    }

    /// Whether the entry under `full` is fresh now (another process refreshed it): then a
    /// refresh that was started on a stale read has nothing left to do.
    pub(super) async fn fresh_now(&self, full: &str) -> bool {
        match self.backend_get(full).await {
            Ok(Some(raw)) => entry::fresh_until(&raw).is_some_and(|t| t > SystemTime::now()),
            _ => false,
        }
    }

    /// Pauses after finding the lease taken, so that a process tries at most once per
    /// [`BUSY_BACKOFF`] while another one refreshes.
    pub(super) async fn busy_backoff() {
        tokio::time::sleep(BUSY_BACKOFF).await;
    }
}

/// What waiting for the lease came to on a miss.
enum Waited<T> {
    /// Another process stored the value meanwhile.
    Stored(T),
    /// Compute here: with the lease, or without one when nothing is known.
    Compute(Option<Lease>),
}

impl Lease {
    /// Runs `work` while renewing the lease.
    pub(super) async fn renewing<F: Future>(&self, work: F) -> F::Output {
        let renew = async {
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + RENEW_EVERY, RENEW_EVERY);
            loop {
                ticks.tick().await;
                let renewed = self
                    .cache
                    .guard_strict(
                        "touch",
                        self.cache
                            .inner
                            .backend
                            .touch(&self.key, Expiry::After(LEASE_TTL)),
                    )
                    .await;
                // Gone (it expired while this process stalled, or was cleared): another
                // process may compute too, which costs work, not correctness.
                if let Ok(false) = renewed {
                    return;
                }
            }
        };
        match select(pin!(work), pin!(renew)).await {
            Either::Left((output, _)) => output,
            Either::Right(((), work)) => work.await,
        }
    }

    /// Deletes the lease: the next stale read anywhere may refresh again.
    pub(super) async fn release(mut self) {
        self.released = true;
        let deleted = self
            .cache
            .guard_strict("delete", self.cache.inner.backend.delete(&self.key))
            .await;
        if let Err(e) = deleted {
            // It expires by itself.
            tracing::debug!(alias = %self.cache.alias(), lease = self.key, "releasing a lease failed; it expires within {LEASE_TTL:?}: {e}");
        }
    }
}

impl Drop for Lease {
    /// A computation cancelled while holding the lease (its caller went away) releases it in
    /// the background, so that other processes need not wait for it to expire.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (backend, key) = (
                self.cache.inner.backend.clone(),
                std::mem::take(&mut self.key),
            );
            drop(runtime.spawn(async move { backend.delete(&key).await }));
        }
    }
}
