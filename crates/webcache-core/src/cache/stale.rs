//! Stale windows for values: a value kept past its fresh time is served at once while one
//! refresh runs in the background (stale-while-revalidate), and kept when that refresh fails
//! (stale-if-error), until its window ends.
//!
//! The entry records when it stops being fresh ([`entry::fresh_until`]); the backend keeps it
//! for the fresh time plus the window. Backends know nothing of it. One computation across
//! processes comes from a lease (`cache/lease.rs`) taken with the backend's own atomic `add`.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::lease::Taken;
use super::{Cache, Outcome, Read};
use crate::entry;
use crate::error::{Error, Result};
use crate::single_flight::Joined;
use crate::timeout::{Expiry, Lifetime, Timeout, Ttl};

/// A value's fresh time and the stale window after it, both non-zero.
#[derive(Debug, Clone, Copy)]
struct Window {
    fresh: Duration,
    stale: Duration,
}

impl Window {
    /// How long the backend keeps the entry: the fresh time and the window.
    fn expiry(self) -> Expiry {
        Expiry::After(self.fresh.saturating_add(self.stale))
    }
}

impl Cache {
    /// [`get_or_set_with`](Cache::get_or_set_with) with a stale window: the value is fresh for
    /// `fresh`, then kept `stale_for` longer, during which a caller gets it at once while one
    /// refresh runs in the background.
    ///
    /// - **Fresh:** the stored value, as `get_or_set_with`.
    /// - **Stale (within the window):** the stored value at once; `compute` runs in a spawned
    ///   task (so it outlives this call) and its value replaces the stale one. One refresh per
    ///   key at a time in this process, and one across the processes sharing the backend: the
    ///   refresh first takes a short lease with the backend's atomic `add`; callers meanwhile,
    ///   here or elsewhere, get the stale value and start none.
    /// - **Past the window, or missing:** the caller computes and waits, as with
    ///   `get_or_set_with` (one computation per key in this process). Across processes the one
    ///   that takes the lease computes; the others poll for its value (for at most 30 s, then
    ///   they compute too) and return it.
    ///
    /// The lease expires unless its holder renews it while computing, so a process that died
    /// mid-computation holds the others up for at most a few seconds; when the backend cannot
    /// take it (down, circuit open) the caller computes as it would without one.
    ///
    /// A `fresh` that never expires ([`Timeout::Forever`]) or keeps nothing (zero), and a
    /// zero `stale_for`, leave nothing to be stale: the call is `get_or_set_with`. Plain reads
    /// ([`get`](Cache::get)) return a stale value as they return any value the backend still
    /// holds; freshness matters only here. [`lifetime`](Cache::lifetime) tells how long a key
    /// stays fresh and then stale; `touch` changes how long the backend keeps an entry, not its
    /// fresh time.
    ///
    /// The refresh is spawned on the current tokio runtime; outside one it runs before the call
    /// returns. See [`try_get_or_set_with_stale`](Cache::try_get_or_set_with_stale) for a
    /// computation that can fail.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> webcache::Result<()> {
    /// use std::time::Duration;
    /// use webcache::{Cache, Lifetime};
    ///
    /// let cache = Cache::locmem();
    /// // Fresh for 60 s; for 10 minutes after that, served at once while one call refreshes it.
    /// let rates: Vec<f64> = cache
    ///     .get_or_set_with_stale("rates", 60, Duration::from_secs(600), || async {
    ///         vec![1.08, 0.86] // fetch_rates().await
    ///     })
    ///     .await?;
    /// assert_eq!(rates, [1.08, 0.86]);
    /// let Lifetime::Expires { fresh, stale } = cache.lifetime("rates").await? else {
    ///     unreachable!("the value was just stored for 60 s + 600 s")
    /// };
    /// assert!(fresh <= Duration::from_secs(60) && stale >= Duration::from_secs(599));
    /// # Ok(()) }
    /// ```
    pub async fn get_or_set_with_stale<T, F, Fut>(
        &self,
        key: &str,
        fresh: impl Into<Timeout>,
        stale_for: Duration,
        compute: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (value, _) = self
            .get_or_set_with_stale_outcome(key, fresh, stale_for, compute)
            .await?;
        Ok(value)
    }

    /// [`get_or_set_with_stale`](Cache::get_or_set_with_stale) that also says what it did:
    /// [`Outcome::Hit`] (fresh), [`Outcome::Stale`] (served stale, a refresh started),
    /// [`Outcome::Computed`] or [`Outcome::Waited`] (for a concurrent caller here, or another
    /// process holding the lease). See [`Outcome`].
    pub async fn get_or_set_with_stale_outcome<T, F, Fut>(
        &self,
        key: &str,
        fresh: impl Into<Timeout>,
        stale_for: Duration,
        compute: F,
    ) -> Result<(T, Outcome)>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.try_get_or_set_with_stale_outcome(key, fresh, stale_for, move || async move {
            Ok::<T, Error>(compute().await)
        })
        .await
    }

    /// [`get_or_set_with_stale`](Cache::get_or_set_with_stale) for a computation that can
    /// fail. A caller that computes (a miss, or past the window) gets the error and nothing is
    /// stored. A background refresh that fails keeps the stale value, which is served until
    /// its window ends (stale-if-error); the failure is logged as a warning, and the next
    /// caller within the window starts another refresh.
    pub async fn try_get_or_set_with_stale<T, E, F, Fut>(
        &self,
        key: &str,
        fresh: impl Into<Timeout>,
        stale_for: Duration,
        compute: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        E: From<Error> + fmt::Display + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let (value, _) = self
            .try_get_or_set_with_stale_outcome(key, fresh, stale_for, compute)
            .await?;
        Ok(value)
    }

    /// [`try_get_or_set_with_stale`](Cache::try_get_or_set_with_stale) that also says what it
    /// did (see [`get_or_set_with_stale_outcome`](Cache::get_or_set_with_stale_outcome)): the
    /// one home of the stale family's rules, which the other forms call.
    pub async fn try_get_or_set_with_stale_outcome<T, E, F, Fut>(
        &self,
        key: &str,
        fresh: impl Into<Timeout>,
        stale_for: Duration,
        compute: F,
    ) -> Result<(T, Outcome), E>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        E: From<Error> + fmt::Display + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let window = match fresh.into().resolve(self.inner.options.default_timeout) {
            Timeout::After(fresh) if !fresh.is_zero() && !stale_for.is_zero() => Window {
                fresh,
                stale: stale_for,
            },
            // Nothing can be stale: never expires, keeps nothing, or no window.
            other => return self.try_get_or_set_with_outcome(key, other, compute).await,
        };
        let full = self.make_key(key)?;
        if let Some(raw) = self.backend_get(&full).await? {
            if let Some(value) =
                self.count(Read::GetOrSetStale, key, self.decode_typed::<T>(key, &raw))
            {
                if entry::fresh_until(&raw).is_some_and(|t| t <= SystemTime::now()) {
                    self.refresh(key, full, window, compute).await;
                    return Ok((value, Outcome::Stale));
                }
                return Ok((value, Outcome::Hit));
            }
        } else {
            self.count(Read::GetOrSetStale, key, None::<()>);
        }
        self.compute_and_add_leased(key, &full, window.expiry(), Some(window.fresh), compute)
            .await
    }

    /// Starts the one refresh of a stale value, unless a computation for the key is already
    /// under way in this process (a refresh, or a caller's after a miss) or, by its lease, in
    /// another process.
    async fn refresh<T, E, F, Fut>(&self, key: &str, full: String, window: Window, compute: F)
    where
        T: Serialize + Send + 'static,
        E: fmt::Display + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let Joined::Leader(leader) = self.inner.flights.join(&full) else {
            return;
        };
        let cache = self.clone();
        let key = key.to_owned();
        let task = async move {
            let lease = match cache.take_lease(&full).await {
                Taken::Held(lease) => {
                    // Another process may have refreshed it between our read and our lease.
                    if cache.fresh_now(&full).await {
                        lease.release().await;
                        return;
                    }
                    Some(lease)
                }
                // Another process refreshes: keep serving stale, and let this process try
                // again only after a pause (the flight stays ours until then).
                Taken::Busy => return Cache::busy_backoff().await,
                Taken::Unknown => None,
            };
            // Tags are pinned before the value is computed from the data they name.
            let writer = cache.handle_for_compute().await;
            let computed = match &lease {
                Some(lease) => lease.renewing(compute()).await,
                None => compute().await,
            };
            // The value is encoded at once: only bytes are held across the write.
            let stored = match (writer, computed.map_err(|e| e.to_string())) {
                (Err(e), _) => Err(e.to_string()),
                (Ok(None), _) => Err("the tag versions could not be read".to_owned()),
                (_, Err(why)) => Err(why),
                (Ok(Some(writer)), Ok(value)) => match writer.stamp_or_skip(&key).await {
                    Err(e) => Err(e.to_string()),
                    Ok(None) => Err("its tags were invalidated while it was computed".to_owned()),
                    Ok(Some(tags)) => {
                        match cache.encode_entry(&key, &value, Some(window.fresh), &tags) {
                            Err(e) => Err(e.to_string()),
                            Ok(bytes) => cache.store_refreshed(&full, bytes, window).await,
                        }
                    }
                },
            };
            if let Some(lease) = lease {
                lease.release().await;
            }
            match stored {
                // Callers that missed meanwhile wait for this value rather than compute.
                Ok(bytes) => leader.publish(bytes),
                // Dropping the leader abandons the flight: waiters compute for themselves, and
                // the stale value stays until its window ends.
                Err(why) => tracing::warn!(
                    alias = %cache.alias(),
                    key,
                    "refreshing a stale value failed; it is served stale until its window ends: {why}"
                ),
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(task)),
            Err(_) => task.await,
        }
    }

    /// Stores a refreshed value over the stale one.
    async fn store_refreshed(
        &self,
        full: &str,
        encoded: Bytes,
        window: Window,
    ) -> std::result::Result<Bytes, String> {
        self.guard(
            "set",
            self.inner
                .backend
                .set(full, encoded.clone(), window.expiry()),
            || (),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(encoded)
    }

    /// Encodes a value for the `get_or_set` family: fresh until the backend drops it, or for
    /// `fresh_for` when it has a stale window.
    pub(super) fn encode_entry<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        fresh_for: Option<Duration>,
        tags: &[(String, u64)],
    ) -> Result<Bytes> {
        let fresh_until = fresh_for.map(|fresh_for| {
            SystemTime::now()
                .checked_add(fresh_for)
                .unwrap_or_else(SystemTime::now)
        });
        self.encode_meta(key, value, entry::Meta { fresh_until, tags })
    }

    /// How long `key` stays fresh and then stale: [`Lifetime::Expires`] (its `stale` part is
    /// zero for a value stored without a stale window), [`Lifetime::Forever`] or
    /// [`Lifetime::Missing`]. Two backend calls (`ttl` and `get`), for inspection.
    pub async fn lifetime(&self, key: &str) -> Result<Lifetime> {
        let full = self.make_key(key)?;
        let remaining = match self
            .guard("ttl", self.inner.backend.ttl(&full), || Ttl::Missing)
            .await?
        {
            Ttl::Missing => return Ok(Lifetime::Missing),
            Ttl::Forever => return Ok(Lifetime::Forever),
            Ttl::Remaining(d) => d,
        };
        let Some(raw) = self.backend_get(&full).await? else {
            return Ok(Lifetime::Missing);
        };
        let fresh = match entry::fresh_until(&raw) {
            None => remaining,
            Some(until) => until
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(remaining),
        };
        Ok(Lifetime::Expires {
            fresh,
            stale: remaining - fresh,
        })
    }
}
