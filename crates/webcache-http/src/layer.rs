//! [`CachePageLayer`]: the configuration of the page cache, and the `Layer` that wraps a
//! service in [`CachePage`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, StatusCode};
use tower::Layer;
use webcache_core::backend::SingleFlight;
use webcache_core::{Cache, Timeout};

use crate::engine::{PageCacheEngine, Published, StoreState, Uncacheable};
use crate::host::AllowedHosts;
use crate::page_key::{KeyRules, QueryParams};
use crate::policy::Policy;
use crate::service::CachePage;

/// The key prefix of pages unless configured otherwise (Django uses
/// `views.decorators.cache.cache_page`).
pub const DEFAULT_KEY_PREFIX: &str = "views.cache_page";
/// How long a page is kept when neither the layer nor the response says (Django's
/// `CACHE_MIDDLEWARE_SECONDS`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// The largest body buffered for storing; larger responses stream through.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// How long concurrent misses wait for the one request that computes the page.
pub const DEFAULT_STAMPEDE_WAIT: Duration = Duration::from_secs(10);
/// How long storing a page (after the client was answered) may take before it is given up.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// A lock shared by several processes, so that a missing page is computed once in total
/// rather than once per process. Implement it over a distributed lock (Redis `SET NX PX`);
/// [`CacheLock`] implements it over any shared cache with `add`.
pub trait StampedeLock: Send + Sync + fmt::Debug + 'static {
    /// Tries to take the lock named `key` for at most `ttl`; returns whether it was taken.
    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, webcache_core::Result<bool>>;
    /// Releases a lock taken with [`try_lock`](StampedeLock::try_lock).
    fn unlock<'a>(&'a self, key: &'a str) -> BoxFuture<'a, webcache_core::Result<()>>;
}

/// A [`StampedeLock`] over a shared [`Cache`]: `add` takes the lock (atomic on Redis,
/// memcached and SQL), `delete` releases it, and the lock expires by itself after its TTL
/// if its holder dies.
#[derive(Debug, Clone)]
pub struct CacheLock {
    cache: Cache,
}

impl CacheLock {
    /// A lock over `cache` (which must be shared by the processes, e.g. Redis).
    pub fn new(cache: Cache) -> Self {
        CacheLock { cache }
    }
}

impl StampedeLock for CacheLock {
    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, webcache_core::Result<bool>> {
        Box::pin(async move { self.cache.add_bytes(key, b"1", ttl).await })
    }

    fn unlock<'a>(&'a self, key: &'a str) -> BoxFuture<'a, webcache_core::Result<()>> {
        Box::pin(async move { self.cache.delete(key).await.map(drop) })
    }
}

/// The settings of a page cache.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) cache: Cache,
    pub(crate) timeout: Option<Duration>,
    /// The key rules and predicates (the key prefix among them).
    pub(crate) keys: KeyRules,
    pub(crate) policy: Policy,
    pub(crate) default_ttl: Duration,
    pub(crate) max_body: usize,
    pub(crate) header: Option<HeaderName>,
    pub(crate) stampede_wait: Duration,
    pub(crate) lock: Option<Arc<dyn StampedeLock>>,
    pub(crate) allowed_hosts: AllowedHosts,
    pub(crate) store_timeout: Duration,
    pub(crate) grace: Duration,
    pub(crate) keep_tag_headers: bool,
    /// Whether pages may be compressed by the cache's codec (see
    /// [`CachePageLayer::compress_pages`]).
    pub(crate) compress_pages: bool,
}

impl Settings {
    /// The handle pages are read and written through: uncompressed unless asked, so that a
    /// hit hands out the stored body without a copy.
    pub(crate) fn page_cache(&self) -> Cache {
        if self.compress_pages {
            self.cache.clone()
        } else {
            self.cache.uncompressed()
        }
    }
}

/// A tower layer that caches whole responses: Django's `cache_page` and per-site cache
/// middleware.
///
/// Wrap one handler (`get(handler.layer(layer))`: the `method_decorator` case), one route
/// (`.route_layer(layer)` or `route(..).layer(layer)`) or a whole `Router` (`.layer(layer)`).
/// What is stored and for how long is the [`Policy`]'s business; see the crate docs for the
/// rules and the key layout.
///
/// ```
/// use axum::{routing::get, Router};
/// use webcache::Cache;
/// use webcache::http::CachePageLayer;
///
/// let cache = Cache::locmem();
/// let app: Router = Router::new()
///     .route("/hello", get(|| async { "hello" }))
///     .route_layer(CachePageLayer::new(cache).timeout(60));
/// ```
#[derive(Clone)]
pub struct CachePageLayer {
    settings: Settings,
    state: Arc<StoreState>,
    flights: SingleFlight<Published>,
    uncacheable: Arc<Uncacheable>,
}

impl fmt::Debug for CachePageLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("CachePageLayer")
            .field("cache", &s.cache)
            .field("timeout", &s.timeout)
            .field("keys", &s.keys)
            .field("policy", &s.policy)
            .field("default_ttl", &s.default_ttl)
            .field("max_body", &s.max_body)
            .field("header", &s.header)
            .field("stampede_wait", &s.stampede_wait)
            .field("lock", &s.lock)
            .field("allowed_hosts", &s.allowed_hosts)
            .field("store_timeout", &s.store_timeout)
            .field("grace", &s.grace)
            .field("keep_tag_headers", &s.keep_tag_headers)
            .field("compress_pages", &s.compress_pages)
            .finish()
    }
}

/// Django's `cache_page(timeout)`: a [`CachePageLayer`] whose `timeout` wins over the
/// response's `max-age`. The timeout is given as to [`Cache::set`]: seconds (`60`), a
/// [`Duration`], or a [`Timeout`] (see [`CachePageLayer::timeout`]).
pub fn cache_page(cache: Cache, timeout: impl Into<Timeout>) -> CachePageLayer {
    CachePageLayer::new(cache).timeout(timeout)
}

/// How long a page keeps for a timeout given to the layer: the one rule for
/// [`CachePageLayer::timeout`], [`default_ttl`](CachePageLayer::default_ttl) and
/// [`grace`](CachePageLayer::grace). [`Timeout::Default`] is `cache`'s default timeout, as in
/// the cache API. [`Timeout::Forever`] and anything longer are bounded by the longest
/// delta-seconds HTTP knows ([`MAX_DELTA_SECONDS`](crate::headers::MAX_DELTA_SECONDS), 2^31 s,
/// about 68 years): the page's `Cache-Control: max-age` and `Expires` need a number, and the
/// policy works within that bound anyway.
fn page_duration(cache: &Cache, timeout: impl Into<Timeout>) -> Duration {
    let longest = Duration::from_secs(crate::headers::MAX_DELTA_SECONDS);
    match timeout.into().resolve(cache.options().default_timeout) {
        Timeout::After(duration) => duration.min(longest),
        // `resolve` leaves no `Default`: this is `Forever`.
        Timeout::Forever | Timeout::Default => longest,
    }
}

impl CachePageLayer {
    /// A page cache over `cache` with the Django policy and default settings.
    pub fn new(cache: Cache) -> Self {
        CachePageLayer {
            settings: Settings {
                cache,
                timeout: None,
                keys: KeyRules::new(DEFAULT_KEY_PREFIX.to_owned()),
                policy: Policy::Django,
                default_ttl: DEFAULT_TTL,
                max_body: DEFAULT_MAX_BODY,
                header: Some(HeaderName::from_static("x-cache")),
                stampede_wait: DEFAULT_STAMPEDE_WAIT,
                lock: None,
                allowed_hosts: AllowedHosts::default(),
                store_timeout: DEFAULT_STORE_TIMEOUT,
                grace: Duration::ZERO,
                keep_tag_headers: false,
                compress_pages: false,
            },
            state: Arc::default(),
            flights: SingleFlight::new(),
            uncacheable: Arc::default(),
        }
    }

    /// Keep pages this long, whatever their `max-age` says (Django's `cache_page(timeout)`).
    /// Given as to [`Cache::set`]: seconds (`60`, `0.5`), a [`Duration`], [`Timeout::Forever`]
    /// (bounded by 2^31 s, about 68 years, since the page's `max-age` needs a number), or
    /// [`Timeout::Default`] (the cache's default timeout). Zero stores nothing. Ignored by the
    /// shared-cache policy, where the origin decides.
    ///
    /// ```
    /// use std::time::Duration;
    /// use webcache::{Cache, Timeout};
    /// use webcache::http::{cache_page, CachePageLayer};
    ///
    /// let cache = Cache::locmem();
    /// let _minute = cache_page(cache.clone(), 60);
    /// let _also = CachePageLayer::new(cache.clone()).timeout(Duration::from_secs(60));
    /// let _kept = CachePageLayer::new(cache.clone()).timeout(Timeout::Forever);
    /// let _cache_default = CachePageLayer::new(cache).timeout(Timeout::Default);
    /// ```
    pub fn timeout(mut self, timeout: impl Into<Timeout>) -> Self {
        self.settings.timeout = Some(page_duration(&self.settings.cache, timeout));
        self
    }

    /// The prefix of page keys (default `views.cache_page`); give each layer its own to keep
    /// their pages apart (Django's `key_prefix`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.keys.prefix = prefix.into();
        self
    }

    /// Forward the tag headers (`Cache-Tag`, `Surrogate-Key`) to the client instead of
    /// removing them (the default removes them: they name the data a page was built from,
    /// which is the site's business). Forward them when a CDN in front reads them too.
    pub fn keep_tag_headers(mut self, keep: bool) -> Self {
        self.settings.keep_tag_headers = keep;
        self
    }

    /// Let the cache's codec compress large pages (the cache's `compress_min_bytes`, 32 KiB
    /// by default). Off by default: a compressed page is decompressed into a new buffer on
    /// every hit, which costs more CPU than the memory it saves on most sites (a 100 KB page
    /// hit spent a third of its time decompressing in `scripts/bench-scale`); pages that the
    /// origin already compresses (`Content-Encoding: gzip`) gain nothing. Turn it on when
    /// memory (or the network to a Redis server) is the limit, not CPU.
    pub fn compress_pages(mut self, compress: bool) -> Self {
        self.settings.compress_pages = compress;
        self
    }

    /// Say that this layer's pages carry tags: every miss then pins the tag versions before
    /// the handler runs (one more read per miss), so even the first tagged page is stored.
    /// Without it the layer learns it from the first tagged response, which is answered but
    /// not stored (nothing pinned its tags).
    pub fn tagged_pages(self) -> Self {
        self.pages().store().expect_tags();
        self
    }

    /// A handle on the pages this layer stores: purge a URL with all its variants, invalidate
    /// tags. It shares the layer's state, so this process's pages still being written are
    /// dropped too.
    pub fn pages(&self) -> crate::Pages {
        crate::Pages::with_store(
            self.settings.keys.clone(),
            crate::engine::PageStore {
                cache: self.settings.page_cache(),
                store_timeout: self.settings.store_timeout,
                state: self.state.clone(),
            },
        )
    }

    /// Leave these query parameters out of page keys (names, or prefixes ending in `*`),
    /// instead of the default [`DEFAULT_IGNORED_QUERY_PARAMS`](crate::DEFAULT_IGNORED_QUERY_PARAMS)
    /// (tracking parameters such as `utm_*`, `fbclid`, `gclid`). An empty list keys on every
    /// parameter.
    pub fn ignore_query_params<I, S>(mut self, params: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.settings.keys.query =
            QueryParams::AllBut(params.into_iter().map(Into::into).collect());
        self
    }

    /// Key pages on these query parameters only (any others are left out).
    pub fn key_query_params<I, S>(mut self, params: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.settings.keys.query = QueryParams::Only(params.into_iter().map(Into::into).collect());
        self
    }

    /// Sort the query parameters before keying, so that `?a=1&b=2` and `?b=2&a=1` are one page
    /// (only when the site does not care about their order: off by default).
    pub fn sort_query_params(mut self, sort: bool) -> Self {
        self.settings.keys.sort_query = sort;
        self
    }

    /// Add these request headers' values to page keys (a page per tenant header, say). Unlike
    /// `Vary`, the page itself need not say so.
    pub fn key_headers<I>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        self.settings.keys.headers.extend(names);
        self
    }

    /// Add these cookies' values to page keys (a page per `lang` cookie, say), rather than
    /// varying on the whole `Cookie` header.
    pub fn key_cookies<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.settings
            .keys
            .cookies
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// Add a value computed from the request to page keys: a logged-in user's id or a tenant,
    /// for pages that are per user but cacheable. `None` adds nothing. The request's
    /// extensions are there (what an authentication layer put in them).
    pub fn key_with(
        mut self,
        compute: impl Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.settings.keys.computed = Some(Arc::new(compute));
        self
    }

    /// Skip the cache for the requests `skip` says (`true`: passed through, `x-cache: BYPASS`,
    /// neither looked up nor stored); e.g. when a preview cookie is present.
    pub fn skip_if(
        mut self,
        skip: impl Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.settings.keys.skip = Some(Arc::new(skip));
        self
    }

    /// Store only the responses `store` accepts (status and headers), on top of the policy's
    /// rules (it can only refuse).
    pub fn store_if(
        mut self,
        store: impl Fn(StatusCode, &HeaderMap) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.settings.keys.store = Some(Arc::new(store));
        self
    }

    /// Under the Django policy, also store these statuses as 200s are stored (Django stores
    /// only 200; e.g. `[301, 404]`). Every other rule still applies. The shared-cache policy
    /// has the RFC's own rules and ignores this.
    pub fn cache_statuses<I: IntoIterator<Item = StatusCode>>(mut self, statuses: I) -> Self {
        self.settings.keys.statuses.extend(statuses);
        self
    }

    /// The key the page for `request` is stored under (Django's `get_cache_key`), with this
    /// layer's rules: to purge or prefill it from code. The request's `Host` is used as given.
    pub fn cache_key_for<B>(&self, request: &http::Request<B>) -> String {
        let mut parts = http::Request::new(()).into_parts().0;
        parts.method = request.method().clone();
        parts.uri = request.uri().clone();
        parts.headers = request.headers().clone();
        parts.version = request.version();
        let parts = self.settings.keys.needs_parts().then_some(&parts);
        self.settings
            .keys
            .primary_key(request.uri(), request.headers(), parts)
    }

    /// The storage policy: [`Policy::Django`] (the default) or [`Policy::SharedCache`].
    pub fn policy(mut self, policy: Policy) -> Self {
        self.settings.policy = policy;
        self
    }

    /// How long pages are kept when neither the layer's timeout nor the response's `max-age`
    /// says (default 600 s). Used by the Django policy. Given as [`timeout`](Self::timeout) is
    /// (`600`, a [`Duration`], [`Timeout::Forever`], [`Timeout::Default`] for the cache's
    /// default timeout); zero stores only pages that say how long.
    pub fn default_ttl(mut self, ttl: impl Into<Timeout>) -> Self {
        self.settings.default_ttl = page_duration(&self.settings.cache, ttl);
        self
    }

    /// The largest body buffered for storing (default 1 MiB). Larger responses stream through
    /// unbuffered and are not stored.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.settings.max_body = bytes;
        self
    }

    /// The diagnostic header (`HIT`, `STALE`, `MISS`, `BYPASS`); default `x-cache`.
    pub fn diagnostic_header(mut self, name: HeaderName) -> Self {
        self.settings.header = Some(name);
        self
    }

    /// Sends no diagnostic header.
    pub fn without_diagnostic_header(mut self) -> Self {
        self.settings.header = None;
        self
    }

    /// How long concurrent misses of one page wait for the request computing it before they
    /// compute it themselves (default 10 s).
    pub fn stampede_wait(mut self, wait: Duration) -> Self {
        self.settings.stampede_wait = wait;
        self
    }

    /// Also take a lock shared with other processes before computing a missing page, so it is
    /// computed once in total; the other processes poll the cache until the page appears (at
    /// most the stampede wait).
    pub fn cross_process_lock(mut self, lock: impl StampedeLock) -> Self {
        self.settings.lock = Some(Arc::new(lock));
        self
    }

    /// The hosts this layer answers for, as Django's `ALLOWED_HOSTS`: `example.com` (that name),
    /// `.example.com` (the domain and its subdomains), `*` (any). Requests for other hosts get
    /// 400 and are neither stored nor passed on. Default: any host (the request's one effective
    /// host is still decided and checked for shape; see the crate docs).
    pub fn allowed_hosts<I, H>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = H>,
        H: AsRef<str>,
    {
        self.settings.allowed_hosts = AllowedHosts::new(hosts);
        self
    }

    /// How long writing a page to the backend may take (default 5 s). Pages are written after
    /// the client was answered, so a slow backend never delays a response; past this the write
    /// is given up and logged.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.settings.store_timeout = timeout;
        self
    }

    /// How long past its freshness a page may still be served stale (Varnish's `grace`;
    /// default zero: only what the pages' own `stale-while-revalidate` and `stale-if-error`
    /// allow, RFC 5861). Within it a request gets the stale page at once (`x-cache: STALE`)
    /// while one refresh per page and process runs in the background, and a failing inner
    /// service (an error, a 5xx, the proxy's 502/504 for a refused or timed-out origin) is
    /// answered with the stale page. Pages are kept in the backend that much longer. Never
    /// for pages with `must-revalidate`, `proxy-revalidate` or `no-cache`, nor, under the
    /// shared-cache policy, for pages with `s-maxage` (see [`crate::policy`]).
    ///
    /// Given as [`timeout`](Self::timeout) is (`3600`, a [`Duration`], [`Timeout::Forever`]
    /// for as long as HTTP counts, [`Timeout::Default`] for the cache's default timeout).
    pub fn grace(mut self, grace: impl Into<Timeout>) -> Self {
        self.settings.grace = page_duration(&self.settings.cache, grace);
        self
    }

    /// The cache pages are stored in.
    pub fn cache(&self) -> &Cache {
        &self.settings.cache
    }
}

impl<S> Layer<S> for CachePageLayer {
    type Service = CachePage<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CachePage::new(
            inner,
            PageCacheEngine::new(
                self.settings.clone(),
                self.state.clone(),
                self.flights.clone(),
                self.uncacheable.clone(),
            ),
        )
    }
}
