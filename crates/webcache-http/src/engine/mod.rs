//! The page cache's engine, [`PageCacheEngine`]. The way a request travels:
//!
//! 1. **Admission.** One effective host ([`crate::host`]): a request with two `Host` fields, an
//!    HTTP/1.1 request without one, or a host outside the allow-list gets 400 and goes no
//!    further. Methods other than GET/HEAD, upgrades and requests the policy refuses pass to the
//!    inner service (`x-cache: BYPASS`); under the shared-cache policy a successful unsafe
//!    request invalidates its URL's pages. Hop-by-hop fields ([`crate::hop`]) are removed before
//!    anything reads the request, so a field named in `Connection` cannot vary a key.
//! 2. **Lookup** ([`store`]): one backend read in the common case, its bytes decoded where
//!    they lie (header values and body are slices of the read buffer). A fresh page is answered at
//!    once (`HIT`, with `Age`, and 304/412 when the request's preconditions say so). A stale
//!    page within its stale-while-revalidate window (or the grace) is answered at once too
//!    (`STALE`), and this very request refreshes it in a task of its own that outlives it:
//!    it joins the miss path's single flight, so one refresh runs per page and process, and a
//!    failed refresh leaves the stale page in place. The rules are the policy's
//!    ([`crate::policy`], "Stale pages").
//! 3. **Miss** ([`miss`]): one request per key and process asks the inner service; the others
//!    wait (bounded) and are told what came of it: the page (a `HIT` if their variant matches),
//!    a gateway error (repeated), a stale page that answered for a failing inner service
//!    (`STALE`, if their own stale-if-error window allows), or "not storable" (they ask for
//!    themselves, and the key skips the single flight for a while).
//! 4. **Exchange** ([`exchange`]): the request is prepared (HEAD asked as GET, except for a
//!    stored page to revalidate, which a HEAD answer may update: RFC 9111 §4.3.5; preconditions
//!    stripped, a stale page's validators added); an error or a 5xx of the inner service is
//!    answered with the stale page within its stale-if-error window (or the grace); the answer
//!    is decided on by the session mark and the [`Policy`](crate::Policy); a storable body is buffered (known length) or teed (unknown
//!    length: streamed at once, stored when it ends), anything else streams through.
//! 5. **Store** ([`store`]): after answering, in the background, bounded by the store timeout.
//!    Backend failures are logged and count as misses: the site keeps answering.
//!
//! Responses are built in [`respond`].
//!
//! # Without waiting
//!
//! Steps 1 and 2 need no I/O when the store has the page at hand (locmem; the near tier's
//! trusted copies): [`PageCacheEngine::front`] runs them inside `Service::call`, and a hit is
//! answered there, with no future, no box and no clone of the inner service. Whatever must
//! wait (a backend read over the network, the inner service, the miss path) is handed, as a
//! [`Later`], to [`PageCacheEngine::finish`]. Both run the same steps ([`PageStore::lookup`]
//! and [`PageStore::lookup_now`] share one lookup; one `decide` follows either), so the rules
//! have one home.

mod exchange;
mod miss;
mod range;
mod respond;
mod store;

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{CONTENT_LOCATION, HOST, IF_RANGE, LOCATION, RANGE, UPGRADE};
use http::request::Parts;
use http::{Extensions, HeaderMap, Method, Request, Response, StatusCode, Uri};
use tower::Service;
use webcache_core::backend::SingleFlight;

pub(crate) use miss::Uncacheable;
pub(crate) use respond::internal_error;
pub(crate) use respond::Outcome;
use respond::Responder;
pub(crate) use store::{Lookup, PageStore, StoreState};

use crate::body::{CacheBody, PageBody};
use crate::hop::strip_hop_by_hop;
use crate::host;
use crate::key;
use crate::layer::Settings;
use crate::policy::Usable;
use crate::stored::StoredResponse;

/// What the request that computed a page hands the requests that waited for it.
#[derive(Debug, Clone)]
pub(crate) enum Published {
    /// The page, stored: the waiters answer from it when they ask for the same variant.
    Page(Arc<StoredResponse>),
    /// A small gateway error (502/503/504), not stored: the waiters repeat it rather than each
    /// asking a failing origin again.
    Error(Arc<StoredResponse>),
    /// The answer is not storable: the waiters ask the inner service themselves.
    NotStorable,
    /// The inner service failed and this stale page answered instead (stale-if-error): the
    /// waiters whose own window allows it answer with it too (`x-cache: STALE`).
    Stale(Arc<StoredResponse>),
}

/// A stored page that is not fresh for a request (or that the request refused), handed to the
/// miss path: its validators make the request a revalidation, and it may answer when the
/// inner service fails.
#[derive(Debug, Clone)]
pub(crate) struct Stale {
    pub(crate) page: StoredResponse,
    /// Whether the page may answer when the inner service fails (an error, a 5xx): within its
    /// `stale-if-error` window or the grace.
    pub(crate) if_error: bool,
}

/// Where a request's answer stands after the part that needs no waiting
/// ([`PageCacheEngine::front`]).
pub(crate) enum Front<B, R> {
    /// Answered: a refused host, or a page the store had at hand.
    Answered(Response<CacheBody<R>>),
    /// The rest waits for the inner service or the backend ([`PageCacheEngine::finish`]).
    /// Boxed: a hit moves only its answer on the way out.
    Later(Box<Later<B>>),
}

/// What a step of the engine comes to (unboxed, unlike [`Front`]: most steps lead to another).
enum Next<B, R> {
    /// The answer.
    Answer(Response<CacheBody<R>>),
    /// A lookup of the page (admitted; or the URL's ranged answers, after the complete page).
    LookUp(Cacheable<B>),
    /// Something that waits.
    Wait(Later<B>),
}

/// What a request does next, when it must wait.
pub(crate) enum Later<B> {
    /// Look its page up (the backend needs I/O, or the URL's ranged answers are next).
    Lookup(Cacheable<B>),
    /// Pass to the inner service (`x-cache: BYPASS`); after a successful unsafe request, the
    /// pages of its URL (key, URI, host) are invalidated.
    Bypass {
        req: Request<B>,
        invalidate: Option<(String, Uri, Vec<u8>)>,
    },
    /// A ranged request that the complete page cannot answer, with `If-Range`: whether the
    /// stored part still matches is the origin's to say.
    AskForRange(Request<B>),
    /// The miss path, with the stored page that could not answer (if any).
    Miss {
        req: Request<B>,
        primary: String,
        /// The variant's key when the URL's pages vary (see [`store::Lookup`]).
        variant: Option<String>,
        /// Boxed: a stored page is large, and most requests never carry one.
        stale: Option<Box<Stale>>,
    },
}

impl<B> Later<B> {
    /// The extensions of the request being answered.
    pub(crate) fn extensions(&self) -> &Extensions {
        match self {
            Later::Lookup(Cacheable { parts, .. }) => &parts.extensions,
            Later::Bypass { req, .. } | Later::AskForRange(req) | Later::Miss { req, .. } => {
                req.extensions()
            }
        }
    }
}

impl<B> Cacheable<B> {
    fn into_request(self) -> Request<B> {
        Request::from_parts(self.parts, self.body)
    }
}

/// A request the cache may answer: its method and the key its page is looked up under.
///
/// Held in parts: a hit reads them and never needs the request again (each rebuild moves it).
pub(crate) struct Cacheable<B> {
    parts: Parts,
    body: B,
    /// The page's key; for a ranged request the complete page cannot answer, the key of the
    /// URL's ranged answers.
    primary: String,
    /// Whether the complete page was already looked at for a ranged request.
    range_checked: bool,
}

/// A reply of the page cache.
pub(crate) type Reply<R, E> = Result<Response<CacheBody<R>>, E>;

/// What the page cache needs of the service it wraps: a service of HTTP requests whose future
/// and error can cross threads.
pub(crate) trait InnerService<B, R>:
    Service<Request<B>, Response = Response<R>, Future: Send, Error: Send> + Send
{
}

impl<T, B, R> InnerService<B, R> for T where
    T: Service<Request<B>, Response = Response<R>, Future: Send, Error: Send> + Send
{
}

/// The page cache: settings, the page store, the flights of concurrent misses, and the keys
/// lately not storable. Cheap to clone (shared state behind `Arc`s).
#[derive(Clone)]
pub(crate) struct PageCacheEngine {
    pub(crate) settings: Arc<Settings>,
    pub(crate) store: PageStore,
    pub(crate) flights: SingleFlight<Published>,
    pub(crate) uncacheable: Arc<Uncacheable>,
    pub(crate) respond: Responder,
}

impl PageCacheEngine {
    /// The engine of one layer; the state is shared by every service the layer makes.
    pub(crate) fn new(
        settings: Settings,
        state: Arc<StoreState>,
        flights: SingleFlight<Published>,
        uncacheable: Arc<Uncacheable>,
    ) -> Self {
        PageCacheEngine {
            store: PageStore {
                cache: settings.page_cache(),
                store_timeout: settings.store_timeout,
                state,
            },
            respond: Responder {
                header: settings.header.clone(),
                ranges: matches!(settings.policy, crate::Policy::SharedCache(_)),
                targeted: settings.policy.targeted_fields().into(),
            },
            settings: Arc::new(settings),
            flights,
            uncacheable,
        }
    }

    /// The key of the request's page, by the layer's rules (the request's parts are handed
    /// to a computed value only when one is part of the key).
    fn primary_key(&self, parts: &Parts) -> String {
        let keys = &self.settings.keys;
        let computed = keys.computed.is_some().then_some(parts);
        keys.primary_key(&parts.uri, &parts.headers, computed)
    }

    /// The part of a request's answer that needs no waiting: admission, the key, and the
    /// lookup and answer when the store has the page at hand (a hit over locmem is answered
    /// here, without a future). What remains is [`finish`](Self::finish)'s.
    pub(crate) fn front<S, B, R>(&self, inner: &S, req: Request<B>) -> Front<B, R>
    where
        S: InnerService<B, R> + Clone + 'static,
        B: Send + 'static,
        R: PageBody,
    {
        let mut next = self.admit(req);
        loop {
            let cacheable = match next {
                Next::Answer(response) => return Front::Answered(response),
                Next::Wait(later) => return Front::Later(Box::new(later)),
                Next::LookUp(cacheable) => cacheable,
            };
            let headers = &cacheable.parts.headers;
            let Some(found) = self.store.lookup_now(&cacheable.primary, headers) else {
                return Front::Later(Box::new(Later::Lookup(cacheable)));
            };
            next = self.decide(inner, cacheable, found);
        }
    }

    /// The rest of a request's answer, after [`front`](Self::front): lookups that wait for the
    /// backend, the inner service, the miss path. The engine is owned (a reference count) so
    /// that the future is `'static` without a wrapper around it.
    pub(crate) async fn finish<S, B, R>(
        self: Arc<Self>,
        mut inner: S,
        mut later: Later<B>,
    ) -> Reply<R, S::Error>
    where
        S: InnerService<B, R> + Clone + 'static,
        B: Send + 'static,
        R: PageBody,
    {
        loop {
            match later {
                Later::Lookup(cacheable) => {
                    let headers = &cacheable.parts.headers;
                    let found = self.store.lookup(&cacheable.primary, headers).await;
                    later = match self.decide(&inner, cacheable, found) {
                        Next::Answer(response) => return Ok(response),
                        Next::LookUp(cacheable) => Later::Lookup(cacheable),
                        Next::Wait(later) => later,
                    };
                }
                Later::Bypass { req, invalidate } => {
                    let response = inner.call(req).await?;
                    if let Some((primary, uri, host)) = invalidate {
                        let status = response.status();
                        if status.is_success() || status.is_redirection() {
                            self.invalidate_after_unsafe(&primary, &uri, &host, response.headers())
                                .await;
                        }
                    }
                    return Ok(self
                        .respond
                        .mark(response.map(CacheBody::inner), Outcome::Bypass));
                }
                Later::AskForRange(req) => {
                    let response = inner.call(req).await?;
                    return Ok(self
                        .respond
                        .mark(response.map(CacheBody::inner), Outcome::Miss));
                }
                Later::Miss {
                    req,
                    primary,
                    variant,
                    stale,
                } => {
                    let flight_key = variant.as_deref().unwrap_or(&primary);
                    // Boxed so that the future of a hit stays small: the miss path's state
                    // (single flight, inner call, buffering, store) is large.
                    let stale = stale.map(|stale| *stale);
                    return Box::pin(self.miss(inner, req, &primary, flight_key, stale)).await;
                }
            }
        }
    }

    /// Admission (a refused host is answered here), the requests that bypass the cache, and
    /// the key of the others.
    fn admit<B, R>(&self, req: Request<B>) -> Next<B, R> {
        // In parts throughout: the URI is read while the headers change, without a copy, and
        // the request is put back together only if it leaves for the inner service.
        let (mut parts, body) = req.into_parts();
        let settled = host::settle(
            parts.version,
            &parts.uri,
            &mut parts.headers,
            &self.settings.allowed_hosts,
        );
        if let Err(refusal) = settled {
            tracing::debug!(?refusal, "request refused for its host");
            return Next::Answer(self.respond.refuse(refusal));
        }
        let policy = &self.settings.policy;
        let method = &parts.method;
        if method != Method::GET && method != Method::HEAD || parts.headers.contains_key(UPGRADE) {
            let invalidate = (!method.is_safe() && policy.invalidates_on_unsafe()).then(|| {
                let host = parts.headers.get(HOST).map(|h| h.as_bytes().to_vec());
                let primary = self.primary_key(&parts);
                (primary, parts.uri.clone(), host.unwrap_or_default())
            });
            let req = Request::from_parts(parts, body);
            return Next::Wait(Later::Bypass { req, invalidate });
        }
        strip_hop_by_hop(&mut parts.headers);
        let skipped = || {
            self.settings
                .keys
                .skip
                .as_ref()
                .is_some_and(|skip| skip(&parts))
        };
        if !policy.may_use_cache(&parts.headers) || skipped() {
            let req = Request::from_parts(parts, body);
            return Next::Wait(Later::Bypass {
                req,
                invalidate: None,
            });
        }
        let primary = self.primary_key(&parts);
        Next::LookUp(Cacheable {
            parts,
            body,
            primary,
            range_checked: false,
        })
    }

    /// What a looked-up request comes to: an answer (a fresh page; a stale one within its
    /// window, whose refresh this request starts; `only-if-cached` with nothing usable), or
    /// what it does next.
    fn decide<S, B, R>(
        &self,
        inner: &S,
        mut cacheable: Cacheable<B>,
        mut found: Lookup,
    ) -> Next<B, R>
    where
        S: InnerService<B, R> + Clone + 'static,
        B: Send + 'static,
        R: PageBody,
    {
        let policy = &self.settings.policy;
        let headers = &cacheable.parts.headers;
        let method = &cacheable.parts.method;
        // A ranged GET (shared cache) is answered from the complete page when it is fresh;
        // otherwise from, and stored under, the URL's ranged answers (see `key::range_primary`).
        if !cacheable.range_checked
            && self.respond.ranges
            && method == Method::GET
            && headers.contains_key(RANGE)
        {
            let complete = found.page.as_ref().is_some_and(|page| {
                page.status == StatusCode::OK
                    && policy.usable(page, headers, SystemTime::now(), self.settings.grace)
                        == Usable::Fresh
            });
            if !complete {
                if headers.contains_key(IF_RANGE) && !policy.only_if_cached(headers) {
                    // Whether the stored part still matches is the origin's to say.
                    return Next::Wait(Later::AskForRange(cacheable.into_request()));
                }
                cacheable.primary = key::range_primary(&cacheable.primary);
                cacheable.range_checked = true;
                return Next::LookUp(cacheable);
            }
        }
        let mut stale = None;
        if let Some(page) = found.page.take() {
            let now = SystemTime::now();
            match policy.usable(&page, headers, now, self.settings.grace) {
                Usable::Fresh => {
                    return Next::Answer(self.respond.page(
                        page,
                        method,
                        headers,
                        now,
                        Outcome::Hit,
                    ));
                }
                // Within its stale window: answered at once, and (once per page and process)
                // refreshed in the background with this very request. A key whose last answer
                // was not storable takes the miss path instead, the page as its fallback.
                Usable::Stale { refresh } => {
                    let flight_key = found.flight_key(&cacheable.primary);
                    if !refresh || !self.uncacheable.contains(flight_key) {
                        let response =
                            self.respond
                                .page(page.clone(), method, headers, now, Outcome::Stale);
                        if refresh {
                            let flight_key = flight_key.to_owned();
                            let primary = std::mem::take(&mut cacheable.primary);
                            let req = cacheable.into_request();
                            self.refresh(inner.clone(), req, &primary, flight_key, page);
                        }
                        return Next::Answer(response);
                    }
                    stale = Some(Stale {
                        page,
                        if_error: true,
                    });
                }
                Usable::Revalidate { if_error } => stale = Some(Stale { page, if_error }),
            }
        }
        // §5.2.1.7: nothing stored may answer, and the client wants nothing from the origin.
        if policy.only_if_cached(headers) {
            return Next::Answer(self.respond.mark(
                respond::text(
                    StatusCode::GATEWAY_TIMEOUT,
                    "gateway timeout: the request said Cache-Control: only-if-cached and no stored answer can be used\n",
                ),
                Outcome::Miss,
            ));
        }
        let primary = std::mem::take(&mut cacheable.primary);
        Next::Wait(Later::Miss {
            req: cacheable.into_request(),
            primary,
            variant: found.variant,
            stale: stale.map(Box::new),
        })
    }
}

impl PageCacheEngine {
    /// After a successful unsafe request (RFC 9111 §4.4): drops the pages of its URL (the
    /// complete page, its variants and its ranged answers) and those of the URLs its
    /// `Location` and `Content-Location` name on the same host.
    async fn invalidate_after_unsafe(
        &self,
        primary: &str,
        uri: &Uri,
        host: &[u8],
        response: &HeaderMap,
    ) {
        let prefix = &self.settings.keys.prefix;
        let mut keys = vec![primary.to_owned()];
        for name in [LOCATION, CONTENT_LOCATION] {
            for value in response.get_all(&name) {
                match key::same_host_key(prefix, value.as_bytes(), uri, host) {
                    Some(key) if !keys.contains(&key) => keys.push(key),
                    Some(_) => {}
                    None => tracing::debug!(
                        header = %name,
                        "not invalidated: another host, or not a URI reference"
                    ),
                }
            }
        }
        for key in keys {
            for key in [key::range_primary(&key), key] {
                if let Err(e) = self.store.invalidate(&key).await {
                    self.store.warn_backend("invalidate", &e);
                }
            }
        }
    }
}
