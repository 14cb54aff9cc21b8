//! [`CachePage`]: the page-cache service. The way a request travels:
//!
//! 1. Not GET/HEAD (or refused by the policy): passed to the inner service, `x-cache: BYPASS`;
//!    under the shared-cache policy a successful unsafe request invalidates its URL's pages.
//! 2. Lookup: one backend read in the common case (see [`key`](crate::key)). A fresh page is
//!    answered at once (`HIT`, with `Age`, and 304/412 when the request's preconditions say so).
//! 3. Miss: one request per key and process computes the page ([`SingleFlight`]); the others
//!    wait (bounded) and get the same page if it was stored and varies the same way, otherwise
//!    they call the inner service themselves. The computing request strips the preconditions
//!    (so the inner service answers a full, storable 200, evaluated here), sends HEAD as GET,
//!    and under the shared-cache policy revalidates a stale page with its validators.
//! 4. The policy decides; a storable body is buffered up to `max_body` and stored, anything
//!    else streams through. Backend failures are logged and count as misses: the site keeps
//!    answering.
//!
//! [`SingleFlight`]: webcache_core::SingleFlight

use std::convert::Infallible;
use std::fmt;
use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{AGE, CONTENT_LENGTH, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use tower::Service;
use webcache_core::{SingleFlight, Timeout};

use crate::body::{buffer, Buffered, CacheBody, PageBody};
use crate::conditional;
use crate::headers::{patch_vary_headers, vary_names};
use crate::key::{self, VaryMemo};
use crate::layer::Settings;
use crate::policy::{Decision, Exchange, Usable};
use crate::session_mark::SessionMark;
use crate::stored::{self, Entry, StoredResponse};

/// How often backend failures are logged as warnings (the rest go to debug).
const WARN_INTERVAL_MS: u64 = 10_000;
/// How often a process waiting on another process's lock looks for the page.
const LOCK_POLL: Duration = Duration::from_millis(25);

/// The value of the diagnostic header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Hit,
    Miss,
    Bypass,
}

impl Outcome {
    fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Bypass => "BYPASS",
        })
    }
}

/// The state shared by every clone of one [`CachePage`].
pub(crate) struct Shared {
    settings: Settings,
    flights: Arc<SingleFlight<Option<Arc<StoredResponse>>>>,
    memo: Arc<VaryMemo>,
    last_warn_ms: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        settings: Settings,
        flights: Arc<SingleFlight<Option<Arc<StoredResponse>>>>,
        memo: Arc<VaryMemo>,
    ) -> Self {
        Shared {
            settings,
            flights,
            memo,
            last_warn_ms: AtomicU64::new(0),
        }
    }
}

/// A service that answers GET and HEAD from the page cache; built by
/// [`CachePageLayer`](crate::CachePageLayer).
#[derive(Clone)]
pub struct CachePage<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for CachePage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachePage")
            .field("inner", &self.inner)
            .field("key_prefix", &self.shared.settings.key_prefix)
            .finish_non_exhaustive()
    }
}

impl<S> CachePage<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        CachePage { inner, shared }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CachePage<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: PageBody,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready is the one to call (tower's usual swap).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move { shared.handle(inner, req).await })
    }
}

type Reply<R, E> = Result<Response<CacheBody<R>>, E>;

/// What the page cache needs of the service it wraps: a service of HTTP requests whose future
/// and error can cross threads (the page is computed in a shared, spawned-safe future).
pub(crate) trait InnerService<B, R>:
    Service<Request<B>, Response = Response<R>, Future: Send, Error: Send> + Send
{
}

impl<T, B, R> InnerService<B, R> for T where
    T: Service<Request<B>, Response = Response<R>, Future: Send, Error: Send> + Send
{
}

impl Shared {
    async fn handle<S, B, R>(&self, mut inner: S, req: Request<B>) -> Reply<R, S::Error>
    where
        S: InnerService<B, R>,
        B: Send,
        R: PageBody,
    {
        let policy = &self.settings.policy;
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD {
            let invalidate = (!method.is_safe() && policy.invalidates_on_unsafe())
                .then(|| key::primary_key(&self.settings.key_prefix, req.uri(), req.headers()));
            let response = inner.call(req).await?;
            if let Some(primary) = invalidate {
                let status = response.status();
                if status.is_success() || status.is_redirection() {
                    self.invalidate(&primary).await;
                }
            }
            return Ok(self.mark(response.map(CacheBody::inner), Outcome::Bypass));
        }
        if !policy.may_use_cache(req.headers()) {
            let response = inner.call(req).await?;
            return Ok(self.mark(response.map(CacheBody::inner), Outcome::Bypass));
        }

        let primary = key::primary_key(&self.settings.key_prefix, req.uri(), req.headers());
        let (found, flight_key) = self.lookup(&primary, req.headers()).await;
        let mut stale = None;
        if let Some(page) = found {
            let now = SystemTime::now();
            match policy.usable(&page, req.headers(), now) {
                Usable::Fresh => {
                    return Ok(self.respond(page, &method, req.headers(), now, Outcome::Hit));
                }
                Usable::Revalidate => {
                    let validators =
                        page.headers.contains_key(ETAG) || page.headers.contains_key(LAST_MODIFIED);
                    if validators {
                        stale = Some(page);
                    }
                }
            }
        }
        // Boxed so that the future of a hit stays small: the miss path's state (single flight,
        // inner call, buffering, store) is large and would be moved on every request.
        Box::pin(self.miss(inner, req, &primary, &flight_key, stale)).await
    }

    /// The miss path: one computation per key in this process (and, with a cross-process
    /// lock, in total); the others wait at most `stampede_wait`.
    async fn miss<S, B, R>(
        &self,
        inner: S,
        req: Request<B>,
        primary: &str,
        flight_key: &str,
        stale: Option<StoredResponse>,
    ) -> Reply<R, S::Error>
    where
        S: InnerService<B, R>,
        B: Send,
        R: PageBody,
    {
        let method = req.method().clone();
        let request_headers = req.headers().clone();
        let leader = AtomicBool::new(false);
        let mut slot: Option<(S, Request<B>)> = Some((inner, req));
        let mut own: Option<Reply<R, S::Error>> = None;
        let shared_page = {
            let slot = &mut slot;
            let own = &mut own;
            let leader = &leader;
            let flight = self.flights.run(flight_key, move || {
                leader.store(true, Ordering::Relaxed);
                async move {
                    let Some((inner, req)) = slot.take() else {
                        return Ok::<_, Infallible>(None);
                    };
                    let (reply, page) = self
                        .fetch_locked(inner, req, primary, flight_key, stale)
                        .await;
                    *own = Some(reply);
                    Ok(page)
                }
            });
            let mut flight = std::pin::pin!(flight);
            let mut deadline = std::pin::pin!(tokio::time::sleep(self.settings.stampede_wait));
            // The leader is never cut short: only a waiter gives up after the bound.
            poll_fn(|cx| {
                if let Poll::Ready(result) = flight.as_mut().poll(cx) {
                    return Poll::Ready(result.ok());
                }
                if !leader.load(Ordering::Relaxed) && deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await
        };
        if let Some(reply) = own {
            return reply;
        }
        if let Some((Some(page), _)) = shared_page {
            if page.matches(&request_headers) {
                let page = StoredResponse::clone(&page);
                return Ok(self.respond(
                    page,
                    &method,
                    &request_headers,
                    SystemTime::now(),
                    Outcome::Hit,
                ));
            }
        }
        // Timed out, or the page was not shareable (not storable, or another variant).
        match slot.take() {
            Some((inner, req)) => self.fetch(inner, req, primary, None).await.0,
            None => Ok(internal_error()),
        }
    }

    /// [`fetch`](Self::fetch) under the cross-process lock, when one is configured.
    async fn fetch_locked<S, B, R>(
        &self,
        inner: S,
        req: Request<B>,
        primary: &str,
        flight_key: &str,
        stale: Option<StoredResponse>,
    ) -> (Reply<R, S::Error>, Option<Arc<StoredResponse>>)
    where
        S: InnerService<B, R>,
        B: Send,
        R: PageBody,
    {
        let Some(lock) = &self.settings.lock else {
            return self.fetch(inner, req, primary, stale).await;
        };
        let lock_key = format!("{flight_key}.lock");
        let wait = self.settings.stampede_wait;
        match lock.try_lock(&lock_key, wait).await {
            Ok(true) => {
                let result = self.fetch(inner, req, primary, stale).await;
                if let Err(e) = lock.unlock(&lock_key).await {
                    self.warn_backend("unlock", &e);
                }
                result
            }
            Ok(false) => {
                // Another process computes the page: wait for it to appear.
                let started = tokio::time::Instant::now();
                while started.elapsed() < wait {
                    tokio::time::sleep(LOCK_POLL).await;
                    let (found, _) = self.lookup(primary, req.headers()).await;
                    if let Some(page) = found {
                        let now = SystemTime::now();
                        if self.settings.policy.usable(&page, req.headers(), now) == Usable::Fresh {
                            let method = req.method().clone();
                            let shared = Arc::new(page.clone());
                            return (
                                Ok(self.respond(page, &method, req.headers(), now, Outcome::Hit)),
                                Some(shared),
                            );
                        }
                    }
                }
                self.fetch(inner, req, primary, stale).await
            }
            Err(e) => {
                self.warn_backend("lock", &e);
                self.fetch(inner, req, primary, stale).await
            }
        }
    }

    /// Calls the inner service, decides, stores. Returns the reply for this request and the
    /// stored page, which concurrent waiters can use.
    async fn fetch<S, B, R>(
        &self,
        mut inner: S,
        mut req: Request<B>,
        primary: &str,
        stale: Option<StoredResponse>,
    ) -> (Reply<R, S::Error>, Option<Arc<StoredResponse>>)
    where
        S: InnerService<B, R>,
        B: Send,
        R: PageBody,
    {
        let method = req.method().clone();
        let request_headers = req.headers().clone();
        let session = req.extensions().get::<SessionMark>().cloned();
        // The stored page must be the full GET answer: HEAD is asked as GET, and preconditions
        // are evaluated here against the full response.
        *req.method_mut() = Method::GET;
        conditional::strip_conditions(req.headers_mut());
        if let Some(page) = &stale {
            if let Some(etag) = page.headers.get(ETAG) {
                req.headers_mut().insert(IF_NONE_MATCH, etag.clone());
            }
            if let Some(lm) = page.headers.get(LAST_MODIFIED) {
                req.headers_mut().insert(IF_MODIFIED_SINCE, lm.clone());
            }
        }
        let request_time = SystemTime::now();
        let response = match inner.call(req).await {
            Ok(r) => r,
            Err(e) => return (Err(e), None),
        };
        let response_time = SystemTime::now();
        let (mut parts, body) = response.into_parts();

        if let (Some(mut page), StatusCode::NOT_MODIFIED) = (stale, parts.status) {
            // RFC 9111 §4.3.4: the 304's headers replace the stored ones.
            for name in parts.headers.keys() {
                if is_stored_header(name, self.settings.header.as_ref()) {
                    page.headers.remove(name);
                }
            }
            for (name, value) in &parts.headers {
                if is_stored_header(name, self.settings.header.as_ref()) {
                    page.headers.append(name.clone(), value.clone());
                }
            }
            let decision = self.settings.policy.decide(&mut Exchange {
                request: &request_headers,
                status: StatusCode::OK,
                response: &mut page.headers,
                layer_timeout: self.settings.timeout,
                default_ttl: self.settings.default_ttl,
                request_time,
                response_time,
            });
            page.stored_at = response_time;
            let mut shared = None;
            match decision {
                Decision::Store {
                    fresh_for,
                    initial_age,
                    keep,
                } => {
                    page.fresh_for = fresh_for;
                    page.initial_age = initial_age;
                    self.store(primary, &page, keep).await;
                    shared = Some(Arc::new(page.clone()));
                }
                Decision::Skip(reason) => {
                    tracing::debug!(
                        key = primary,
                        reason = %reason,
                        "revalidated page is no longer stored"
                    );
                    page.fresh_for = Duration::ZERO;
                    page.initial_age = Duration::ZERO;
                    self.delete(primary).await;
                }
            }
            let reply = self.respond(page, &method, &request_headers, response_time, Outcome::Hit);
            return (Ok(reply), shared);
        }

        // A page that read the session belongs to its user (see `SessionMark`).
        if let Some(mark) = &session {
            if mark.varies_on_cookie() {
                patch_vary_headers(&mut parts.headers, &["Cookie"]);
            }
            if mark.is_personal() {
                tracing::debug!(key = primary, "response not stored: it read the session");
                let response = Response::from_parts(parts, CacheBody::inner(body));
                return (Ok(self.pass(response, &method, &request_headers)), None);
            }
        }
        let decision = self.settings.policy.decide(&mut Exchange {
            request: &request_headers,
            status: parts.status,
            response: &mut parts.headers,
            layer_timeout: self.settings.timeout,
            default_ttl: self.settings.default_ttl,
            request_time,
            response_time,
        });
        let vary = match decision {
            Decision::Store { .. } => vary_header_names(&parts.headers),
            Decision::Skip(_) => None,
        };
        let (
            Decision::Store {
                fresh_for,
                initial_age,
                keep,
            },
            Some(vary),
        ) = (decision, vary)
        else {
            if let Decision::Skip(reason) = decision {
                tracing::debug!(key = primary, reason = %reason, "response not stored");
            }
            let response = Response::from_parts(parts, CacheBody::inner(body));
            return (Ok(self.pass(response, &method, &request_headers)), None);
        };
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let buffered = if declared.is_some_and(|n| n > self.settings.max_body as u64) {
            Buffered::PassThrough(Vec::new(), body)
        } else {
            buffer(body, self.settings.max_body).await
        };
        let Buffered::Complete(data) = buffered else {
            tracing::debug!(
                key = primary,
                "response body too large or not storable; streamed through"
            );
            let response = Response::from_parts(parts, buffered.into_body());
            return (Ok(self.pass(response, &method, &request_headers)), None);
        };
        let mut headers = parts.headers;
        headers.retain_stored(self.settings.header.as_ref());
        let values = key::vary_values(&vary, &request_headers);
        let page = StoredResponse {
            status: parts.status,
            headers,
            body: data,
            stored_at: response_time,
            fresh_for,
            initial_age,
            vary: vary.into_iter().zip(values).collect(),
        };
        self.store(primary, &page, keep).await;
        let shared = Arc::new(page.clone());
        let reply = self.respond(
            page,
            &method,
            &request_headers,
            response_time,
            Outcome::Miss,
        );
        (Ok(reply), Some(shared))
    }

    /// Finds the page for a request: returns it (if any) and the key a miss computes under.
    async fn lookup(&self, primary: &str, request: &HeaderMap) -> (Option<StoredResponse>, String) {
        let remembered = self.memo.get(primary);
        let mut miss_key = primary.to_owned();
        if let Some(names) = &remembered {
            let variant = key::variant_key(primary, names, &key::vary_values(names, request));
            if let Some(Entry::Page(page)) = self.read(&variant).await {
                if page.matches(request) {
                    return (Some(page), variant);
                }
            }
            miss_key = variant;
        }
        match self.read(primary).await {
            Some(Entry::Page(page)) if page.vary.is_empty() => {
                if remembered.is_some() {
                    self.memo.remember(primary, &[]);
                }
                (Some(page), primary.to_owned())
            }
            Some(Entry::Vary(names)) => {
                self.memo.remember(primary, &names);
                let variant = key::variant_key(primary, &names, &key::vary_values(&names, request));
                if remembered.as_deref() == Some(&names[..]) {
                    return (None, variant);
                }
                match self.read(&variant).await {
                    Some(Entry::Page(page)) if page.matches(request) => (Some(page), variant),
                    _ => (None, variant),
                }
            }
            _ => (None, miss_key),
        }
    }

    async fn read(&self, key: &str) -> Option<Entry> {
        match self.settings.cache.get_bytes(key).await {
            Ok(Some(raw)) => match stored::decode(raw) {
                Ok(entry) => Some(entry),
                Err(e) => {
                    tracing::warn!(key, "{e}; treated as a miss");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                self.warn_backend("get", &e);
                None
            }
        }
    }

    async fn store(&self, primary: &str, page: &StoredResponse, keep: Duration) {
        let names = page.vary_names();
        let timeout = Timeout::After(keep);
        let cache = &self.settings.cache;
        let result = if names.is_empty() {
            cache.set_bytes(primary, &page.encode(), timeout).await
        } else {
            let values: Vec<Option<Bytes>> = page.vary.iter().map(|(_, v)| v.clone()).collect();
            let variant = key::variant_key(primary, &names, &values);
            match cache.set_bytes(&variant, &page.encode(), timeout).await {
                Ok(()) => {
                    cache
                        .set_bytes(primary, &stored::encode_vary(&names), timeout)
                        .await
                }
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(()) => self.memo.remember(primary, &names),
            Err(e) => self.warn_backend("set", &e),
        }
    }

    async fn delete(&self, key: &str) {
        if let Err(e) = self.settings.cache.delete(key).await {
            self.warn_backend("delete", &e);
        }
    }

    /// Removes a URL's page, its vary entry and every variant (found with `keys`; a backend
    /// that cannot list keys keeps its variants until they expire).
    async fn invalidate(&self, primary: &str) {
        use futures::TryStreamExt;

        self.delete(primary).await;
        let cache = &self.settings.cache;
        let variants: Result<Vec<String>, _> =
            cache.keys(&format!("{primary}.*")).try_collect().await;
        match variants {
            Ok(keys) if !keys.is_empty() => {
                if let Err(e) = cache.delete_many(&keys).await {
                    self.warn_backend("delete_many", &e);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(key = primary, "variants not invalidated: {e}"),
        }
    }

    /// A response built from a page.
    fn respond<R>(
        &self,
        page: StoredResponse,
        method: &Method,
        request: &HeaderMap,
        now: SystemTime,
        outcome: Outcome,
    ) -> Response<CacheBody<R>> {
        let age = page.age(now);
        let body_len = page.body.len();
        let body = if *method == Method::HEAD {
            CacheBody::empty()
        } else {
            CacheBody::full(page.body)
        };
        let mut response = Response::new(body);
        *response.status_mut() = page.status;
        *response.headers_mut() = page.headers;
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(body_len));
        if outcome == Outcome::Hit || age >= Duration::from_secs(1) {
            response
                .headers_mut()
                .insert(AGE, HeaderValue::from(age.as_secs()));
        }
        if page.status == StatusCode::OK {
            let precondition = conditional::evaluate(method, request, response.headers());
            conditional::apply(precondition, &mut response);
        }
        self.mark(response, outcome)
    }

    /// A response that was not stored, on its way out: preconditions, HEAD, `MISS`.
    fn pass<R>(
        &self,
        mut response: Response<CacheBody<R>>,
        method: &Method,
        request: &HeaderMap,
    ) -> Response<CacheBody<R>> {
        if *method == Method::HEAD {
            *response.body_mut() = CacheBody::empty();
        }
        if response.status() == StatusCode::OK {
            let precondition = conditional::evaluate(method, request, response.headers());
            conditional::apply(precondition, &mut response);
        }
        self.mark(response, Outcome::Miss)
    }

    fn mark<R>(&self, mut response: Response<R>, outcome: Outcome) -> Response<R> {
        if let Some(name) = &self.settings.header {
            response.headers_mut().insert(name.clone(), outcome.value());
        }
        response
    }

    /// Logs a backend failure: a warning at most every 10 s, debug otherwise.
    fn warn_backend(&self, operation: &'static str, error: &webcache_core::Error) {
        let now = u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_INTERVAL_MS
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                alias = %self.settings.cache.alias(),
                operation,
                "page cache backend failed; serving without the cache: {error}"
            );
        } else {
            tracing::debug!(operation, "page cache backend failed: {error}");
        }
    }
}

/// The header names a response varies on, parsed; `None` when one is not a valid header name
/// (such a response cannot be keyed safely, so it is not stored).
fn vary_header_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names: Vec<HeaderName> = vary_names(headers)
        .iter()
        .map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect::<Option<_>>()?;
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

/// Whether a response header belongs in a stored page (not hop-by-hop, not recomputed on
/// every answer).
fn is_stored_header(name: &HeaderName, diagnostic: Option<&HeaderName>) -> bool {
    !(crate::hop::is_hop_by_hop(name)
        || name == CONTENT_LENGTH
        || name == AGE
        || diagnostic == Some(name))
}

trait RetainStored {
    fn retain_stored(&mut self, diagnostic: Option<&HeaderName>);
}

impl RetainStored for HeaderMap {
    fn retain_stored(&mut self, diagnostic: Option<&HeaderName>) {
        let drop: Vec<HeaderName> = self
            .keys()
            .filter(|n| !is_stored_header(n, diagnostic))
            .cloned()
            .collect();
        for name in drop {
            self.remove(name);
        }
    }
}

/// The answer for a state the code never reaches (the single-flight closure runs at most once
/// and only with the request in hand), rather than a panic.
fn internal_error<R>() -> Response<CacheBody<R>> {
    let mut response = Response::new(CacheBody::empty());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}
