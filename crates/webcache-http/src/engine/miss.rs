//! The miss path: one request per key and process asks the inner service (with a cross-process
//! lock, one in total); the others wait, bounded, and are told what came of it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use std::panic::AssertUnwindSafe;

use bytes::Buf;
use futures::FutureExt;
use http::Request;
use http_body::Body;
use webcache_core::backend::{Followed, Joined, Leader};

use super::respond::Outcome;
use super::{InnerService, PageCacheEngine, Published, Reply, Stale};
use crate::body::PageBody;
use crate::policy::Usable;
use crate::stored::StoredResponse;

/// How often a process waiting on another process's lock looks for the page.
const LOCK_POLL: Duration = Duration::from_millis(25);
/// How long a key whose answer was not storable skips the single flight (Varnish's
/// hit-for-miss): requests for it go to the inner service concurrently, never one by one.
const UNCACHEABLE_FOR: Duration = Duration::from_secs(30);
/// The most keys remembered as not storable; when full the memory is emptied (which costs at
/// most one serialised round per key).
const UNCACHEABLE_MAX: usize = 10_000;

impl PageCacheEngine {
    /// Answers a request whose page was not found fresh.
    pub(super) async fn miss<S, B, R>(
        &self,
        inner: S,
        req: Request<B>,
        primary: &str,
        flight_key: &str,
        stale: Option<Stale>,
    ) -> Reply<R, S::Error>
    where
        S: InnerService<B, R>,
        B: Send,
        R: PageBody,
    {
        if self.uncacheable.contains(flight_key) {
            return self
                .fetch(inner, req, primary, flight_key, stale, None)
                .await;
        }
        match self.flights.join(flight_key) {
            Joined::Leader(leader) => {
                self.lead(inner, req, primary, flight_key, stale, leader)
                    .await
            }
            Joined::Follower(follower) => {
                match crate::metrics::waiting(follower.wait_at_most(self.settings.stampede_wait))
                    .await
                {
                    Followed::Shared(Published::Page(page)) if page.matches(req.headers()) => {
                        let page = StoredResponse::clone(&page);
                        Ok(self.respond.page(
                            page,
                            req.method(),
                            req.headers(),
                            SystemTime::now(),
                            Outcome::Hit,
                        ))
                    }
                    // The leader's inner service failed and its stale page answered: so does
                    // this request's, if its own window allows.
                    Followed::Shared(Published::Stale(page))
                        if stale.as_ref().is_some_and(|s| s.if_error)
                            && page.matches(req.headers()) =>
                    {
                        let page = StoredResponse::clone(&page);
                        Ok(self.respond.page(
                            page,
                            req.method(),
                            req.headers(),
                            SystemTime::now(),
                            Outcome::Stale,
                        ))
                    }
                    Followed::Shared(Published::Error(answer)) => {
                        let answer = StoredResponse::clone(&answer);
                        Ok(self.respond.page(
                            answer,
                            req.method(),
                            req.headers(),
                            SystemTime::now(),
                            Outcome::Miss,
                        ))
                    }
                    // Not storable, another variant, the leader failed, or it took too long.
                    outcome => {
                        tracing::debug!(
                            key = flight_key,
                            ?outcome,
                            "waited for a concurrent miss in vain"
                        );
                        self.fetch(inner, req, primary, flight_key, stale, None)
                            .await
                    }
                }
            }
        }
    }

    /// The request that computes the page, under the cross-process lock when one is set.
    async fn lead<S, B, R>(
        &self,
        inner: S,
        req: Request<B>,
        primary: &str,
        flight_key: &str,
        stale: Option<Stale>,
        leader: Leader<Published>,
    ) -> Reply<R, S::Error>
    where
        S: InnerService<B, R>,
        B: Send,
        R: PageBody,
    {
        let Some(lock) = &self.settings.lock else {
            return self
                .fetch(inner, req, primary, flight_key, stale, Some(leader))
                .await;
        };
        let lock_key = format!("{flight_key}.lock");
        let wait = self.settings.stampede_wait;
        match lock.try_lock(&lock_key, wait).await {
            Ok(true) => {
                let reply = self
                    .fetch(inner, req, primary, flight_key, stale, Some(leader))
                    .await;
                if let Err(e) = lock.unlock(&lock_key).await {
                    self.store.warn_backend("unlock", &e);
                }
                reply
            }
            Ok(false) => {
                // Another process computes the page: wait for it to appear.
                let started = tokio::time::Instant::now();
                while started.elapsed() < wait {
                    tokio::time::sleep(LOCK_POLL).await;
                    let found = self.store.lookup(primary, req.headers()).await;
                    if let Some(page) = found.page {
                        let now = SystemTime::now();
                        let usable = self.settings.policy.usable(
                            &page,
                            req.headers(),
                            now,
                            self.settings.grace,
                        );
                        if usable == Usable::Fresh {
                            leader.publish(Published::Page(std::sync::Arc::new(page.clone())));
                            return Ok(self.respond.page(
                                page,
                                req.method(),
                                req.headers(),
                                now,
                                Outcome::Hit,
                            ));
                        }
                    }
                }
                self.fetch(inner, req, primary, flight_key, stale, Some(leader))
                    .await
            }
            Err(e) => {
                self.store.warn_backend("lock", &e);
                self.fetch(inner, req, primary, flight_key, stale, Some(leader))
                    .await
            }
        }
    }
}

impl PageCacheEngine {
    /// Refreshes a page served stale, in a task of its own that outlives the request: one per
    /// page and process (the miss path's single flight; a request that finds a refresh or a
    /// miss of the page under way starts none). `req` is the request that found the page
    /// stale; the page stays the fallback if the inner service fails.
    pub(super) fn refresh<S, B, R>(
        &self,
        inner: S,
        mut req: Request<B>,
        primary: &str,
        flight_key: String,
        page: StoredResponse,
    ) where
        S: InnerService<B, R> + 'static,
        B: Send + 'static,
        R: PageBody,
    {
        // A hit is answered in `Service::call`, which a caller may make outside the runtime
        // (and poll the answer inside it): the refresh is left to a later request then.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(key = flight_key, "no runtime to refresh a stale page in");
            return;
        };
        let Joined::Leader(leader) = self.flights.join(&flight_key) else {
            return;
        };
        // A refresh is there to store the page: GET, even when a HEAD found it stale.
        super::exchange::ask_as_get(&mut req);
        let engine = self.clone();
        let primary = primary.to_owned();
        runtime.spawn(async move {
            // A request that read the stale page just before the previous refresh stored its
            // page may start this one after it ended: the page is looked up again (one read
            // per refresh, none per hit) so that such a refresh asks nobody.
            let found = engine.store.lookup(&primary, req.headers()).await;
            if let Some(page) = found.page {
                let usable = engine.settings.policy.usable(
                    &page,
                    req.headers(),
                    SystemTime::now(),
                    engine.settings.grace,
                );
                if usable == Usable::Fresh {
                    leader.publish(Published::Page(std::sync::Arc::new(page)));
                    return;
                }
            }
            let stale = Some(Stale {
                page,
                if_error: true,
            });
            let refresh = engine.lead(inner, req, &primary, &flight_key, stale, leader);
            match AssertUnwindSafe(refresh).catch_unwind().await {
                Ok(Ok(response)) => engine.drain(response.into_body()).await,
                Ok(Err(_)) => tracing::warn!(
                    key = flight_key,
                    "background refresh failed: the inner service returned an error; the stale page stays"
                ),
                Err(_) => tracing::error!(key = flight_key, "background refresh panicked"),
            }
        });
    }

    /// Reads the body of a refresh's answer that nobody receives, so that a body of unknown
    /// length (teed) is stored when it ends; bounded by the largest storable body and the
    /// stampede wait, so an endless stream is not read forever.
    async fn drain<R: Body + Unpin>(&self, mut body: R) {
        let limit = self.settings.max_body;
        let read = async {
            let mut total = 0usize;
            while let Some(Ok(frame)) = http_body_util::BodyExt::frame(&mut body).await {
                total = total.saturating_add(frame.data_ref().map_or(0, |d| d.remaining()));
                if total > limit {
                    break;
                }
            }
        };
        let wait = self.settings.stampede_wait.max(self.settings.store_timeout);
        let _ = tokio::time::timeout(wait, read).await;
    }
}

/// Keys whose last answer was not storable, for a short while.
#[derive(Debug, Default)]
pub(crate) struct Uncacheable {
    until: Mutex<HashMap<String, Instant>>,
}

impl Uncacheable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn remember(&self, key: &str) {
        let mut map = self.lock();
        if map.len() >= UNCACHEABLE_MAX {
            map.clear();
        }
        map.insert(key.to_owned(), Instant::now() + UNCACHEABLE_FOR);
    }

    pub(crate) fn forget(&self, key: &str) {
        let mut map = self.lock();
        if !map.is_empty() {
            map.remove(key);
        }
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        let mut map = self.lock();
        match map.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                map.remove(key);
                false
            }
            None => false,
        }
    }
}
