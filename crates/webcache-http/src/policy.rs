//! What may be stored, for how long, and when a stored page may be used: the two policies of
//! the page-cache layer.
//!
//! Rules common to both (stricter than Django where that protects users):
//!
//! | rule | stored? |
//! |---|---|
//! | status other than 200 | Django policy: no (a 304 gets caching headers, but is not stored); shared-cache policy: below |
//! | `Cache-Control: private` or `no-store` (any case, with or without a field value) | no (shared cache: `must-understand` with a known status overrides `no-store`, RFC 9111 §5.2.2.3) |
//! | `Cache-Control: no-cache` | Django policy: no; shared-cache policy: stored (with a validator), revalidated on every use |
//! | `Vary: *` | no |
//! | `Set-Cookie` in the response | no (Django refuses only when the response varies on `Cookie` and the request had no cookie; a cookie-setting page is personal far more often than not) |
//! | request with a non-empty `Authorization`, response not `public` | `Vary: Authorization` is added, so the page is only ever served to the same credentials |
//! | body larger than the layer's `max_body` | no (streamed through, never buffered whole) |
//! | a `Cache-Control` or `Vary` that does not parse (RFC 9111 §5.2, RFC 9110 §5.6: a stray or unbalanced quote, a space around `=`, bytes outside ASCII); under the shared-cache policy also an unparsable `Date` or `Age`, or request `Cache-Control` | no, and the Django policy leaves such a `Cache-Control` as it is: a directive the parser could not read may have been `private` |
//!
//! Every reason for not storing is a [`NotStored`]. Delta-seconds (`max-age`, `s-maxage`,
//! `Age`) larger than 2^31 count as 2^31 seconds (RFC 9111 §1.2.2), and every lifetime, age and
//! date is computed with saturating arithmetic, so no header value can make the policy panic.
//! Error pages (any status but 200, and 304 under the Django policy) get no caching headers.
//!
//! [`Policy::Django`] then follows Django's `UpdateCacheMiddleware`: the layer's timeout wins,
//! otherwise the response's `max-age` (0 = do not store), otherwise the layer's default TTL;
//! `Expires` and `max-age` are patched to match (the smaller `max-age` wins).
//!
//! [`Policy::SharedCache`] is an RFC 9111 shared cache. It stores any final status with
//! explicit freshness (`max-age`, `s-maxage`, `Expires`) or `public`, and without them the
//! heuristically cacheable statuses (200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501;
//! a 206 only for a request with `Range`), never a 1xx or a 304 (§3, §4.2.2). It obeys its own
//! targeted field (RFC 9213; `Webcache-Cache-Control` unless
//! [`SharedCachePolicy::targeted_field`] says otherwise), else `CDN-Cache-Control`, else
//! `Cache-Control`. Freshness comes only from the origin
//! (`s-maxage`, then `max-age`, then `Expires` − `Date` — `Expires` in any of the three HTTP date
//! formats, any case, an invalid one meaning stale —, then 10% of the time since
//! `Last-Modified`, capped; `no-cache` means stale at once); a request with `Authorization` is stored only when the response is
//! `public`, has `s-maxage` or `must-revalidate` (§3.5); a request's `no-store` bypasses the
//! cache and its `no-cache` (or `Pragma: no-cache`) or a `max-age` smaller than the page's age
//! forces revalidation, as do a `min-fresh` longer than the page's remaining freshness; a stale
//! page with a validator (`ETag`, `Last-Modified`) is kept a while and revalidated with a
//! conditional request (a 304 refreshes the stored headers). A successful unsafe request (POST,
//! PUT, DELETE, ...) invalidates the pages of its URL (§4.4).
//!
//! ## Stale pages
//!
//! A page past its freshness may still be served, within a window: the response's
//! `stale-while-revalidate` and `stale-if-error` (RFC 5861), or the layer's grace
//! ([`CachePageLayer::grace`](crate::CachePageLayer::grace), Varnish's `grace`), whichever is
//! longer. The page is kept in the backend for its freshness plus the longer window.
//!
//! | | Django policy | shared-cache policy |
//! |---|---|---|
//! | within `max(stale-while-revalidate, grace)` | served at once (`x-cache: STALE`, `Age`), one refresh per page and process in the background | the same |
//! | within `max(stale-if-error, grace)`, the inner service fails (an error, a 5xx — the proxy's 502/504 for a refused or timed-out origin —, a body that breaks off) | the stale page answers (`STALE`) | the same |
//! | page with `must-revalidate`, `proxy-revalidate` or `no-cache` | never stale (RFC 9111 §4.2.4) | never stale |
//! | page with `s-maxage` | as any page | only its own `stale-while-revalidate` / `stale-if-error`: `s-maxage` implies `proxy-revalidate` (§5.2.2.10), so neither the grace nor `max-stale` apply |
//! | request `max-stale[=N]` | ignored (Django reads no request directives) | a stale page (at most `N` s stale) is served (`STALE`), refreshed only within its stale-while-revalidate window |
//! | request `no-cache`, `max-age`, `min-fresh` | ignored | a page they refuse is not served stale, not even on error (unless `max-stale` allows) |
//!
//! Django's middleware itself never serves stale; the Django policy honours the RFC 5861
//! directives and the grace because that is what `webcache serve` and the site-wide layer's
//! users want: no request waits on an expiry, and a failing view does not turn a page that
//! expired a second ago into an error.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::header::RANGE;
use http::header::{AGE, AUTHORIZATION, DATE, ETAG, EXPIRES, LAST_MODIFIED, PRAGMA, SET_COOKIE};
use http::{HeaderMap, HeaderName, StatusCode};

use crate::headers::{
    delta_seconds, parse_http_date, parse_vary, patch_response_headers, patch_vary_headers,
    targeted_cache_control, CacheControl, Unparsable, MAX_DELTA_SECONDS,
};
use crate::stored::StoredResponse;

/// Which responses the page-cache layer stores, for how long, and when it uses them.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Policy {
    /// Django's cache middleware (`cache_page`, the per-site middleware): the default.
    #[default]
    Django,
    /// An RFC 9111 shared cache, for the caching reverse proxy.
    SharedCache(SharedCachePolicy),
}

impl Policy {
    /// Django's cache middleware rules.
    pub fn django() -> Self {
        Policy::Django
    }

    /// RFC 9111 shared-cache rules with default settings.
    pub fn shared_cache() -> Self {
        Policy::SharedCache(SharedCachePolicy::default())
    }

    /// Whether a successful unsafe request invalidates the stored pages of its URL.
    pub fn invalidates_on_unsafe(&self) -> bool {
        matches!(self, Policy::SharedCache(_))
    }
}

/// Settings of the RFC 9111 shared-cache policy: the defaults, changed with the setters of the
/// same names (`#[non_exhaustive]`, so a setting added later breaks no caller).
///
/// ```
/// use std::time::Duration;
/// use webcache::http::{Policy, SharedCachePolicy};
/// let edge = Policy::SharedCache(
///     SharedCachePolicy::default().max_heuristic(Duration::from_secs(3600)),
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SharedCachePolicy {
    /// The fraction of the time since `Last-Modified` used as heuristic freshness (RFC 9111
    /// §4.2.2 suggests 10%).
    pub heuristic_fraction: f64,
    /// The longest heuristic freshness.
    pub max_heuristic: Duration,
    /// How long a stale page with a validator is kept for revalidation.
    pub keep_stale: Duration,
    /// This cache's own targeted cache-control field (RFC 9213), default
    /// `Webcache-Cache-Control`: when a response has it (and it parses), it replaces
    /// `CDN-Cache-Control` and `Cache-Control` for this cache. Neither targeted field is passed
    /// on to clients.
    pub targeted_field: HeaderName,
}

/// The default own targeted cache-control field of the shared cache.
const WEBCACHE_CACHE_CONTROL: HeaderName = HeaderName::from_static("webcache-cache-control");
/// The targeted field every CDN cache obeys (RFC 9213 §3).
pub(crate) const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The statuses a shared cache may store without explicit freshness, with a heuristic
/// lifetime (RFC 9110 §15.1): 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501.
/// They are also the statuses whose caching rules this cache implements, so the ones it stores
/// under `must-understand` (RFC 9111 §5.2.2.3).
pub(crate) fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

impl Default for SharedCachePolicy {
    fn default() -> Self {
        SharedCachePolicy {
            heuristic_fraction: 0.1,
            max_heuristic: Duration::from_secs(24 * 3600),
            keep_stale: Duration::from_secs(600),
            targeted_field: WEBCACHE_CACHE_CONTROL,
        }
    }
}

impl SharedCachePolicy {
    /// Sets `heuristic_fraction`.
    pub fn heuristic_fraction(mut self, fraction: f64) -> Self {
        self.heuristic_fraction = fraction;
        self
    }

    /// Sets `max_heuristic`.
    pub fn max_heuristic(mut self, longest: Duration) -> Self {
        self.max_heuristic = longest;
        self
    }

    /// Sets `keep_stale`.
    pub fn keep_stale(mut self, keep: Duration) -> Self {
        self.keep_stale = keep;
        self
    }

    /// Sets `targeted_field`.
    pub fn targeted_field(mut self, field: HeaderName) -> Self {
        self.targeted_field = field;
        self
    }
}

/// The parts of an exchange a policy looks at.
pub(crate) struct Exchange<'a> {
    pub(crate) request: &'a HeaderMap,
    pub(crate) status: StatusCode,
    /// The response headers; the Django policy patches them.
    pub(crate) response: &'a mut HeaderMap,
    /// The layer's own timeout (`cache_page(timeout)`), which wins under the Django policy.
    pub(crate) layer_timeout: Option<Duration>,
    /// Used when neither the layer nor the response says how long.
    pub(crate) default_ttl: Duration,
    /// When the request was sent to the inner service and when its response arrived.
    pub(crate) request_time: SystemTime,
    pub(crate) response_time: SystemTime,
    /// The layer's grace: how long past its freshness a page may be served stale.
    pub(crate) grace: Duration,
}

/// The verdict on a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Store it: fresh for `fresh_for` from an age of `initial_age`, kept `keep` in the backend.
    Store {
        fresh_for: Duration,
        initial_age: Duration,
        keep: Duration,
    },
    /// Do not store it, for this reason (logged at debug level).
    Skip(NotStored),
}

/// Why a response is not stored: what the page cache logs (at debug level), and what metrics
/// and diagnostics can count. `Display` gives a sentence for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotStored {
    /// Django policy: only 200 responses are stored. Shared-cache policy: the status is not
    /// heuristically cacheable (RFC 9110 §15.1) and the response gives no explicit freshness
    /// (`max-age`, `s-maxage`, `Expires`) and is not `public`; or it is interim (1xx) or a 304.
    StatusNotCacheable(StatusCode),
    /// Shared-cache policy: `must-understand` on a status whose caching rules this cache does
    /// not implement (RFC 9111 §5.2.2.3).
    StatusNotUnderstood(StatusCode),
    /// Shared-cache policy: a 206 to a request without `Range` (it cannot stand for the whole
    /// page, and no request would ask for that part again).
    PartialWithoutRange,
    /// `Vary: *`: the response depends on more than the request says.
    VaryStar,
    /// The response sets a cookie, so it is most likely personal.
    SetsCookie,
    /// The response's `Cache-Control` has this directive: `private`, `no-cache` (Django policy
    /// only: the shared cache stores it and revalidates it on every use) or `no-store`.
    CacheControlForbids(&'static str),
    /// Django policy: the layer's timeout or the response's `max-age` is zero.
    MaxAgeZero,
    /// Shared-cache policy: the request said `Cache-Control: no-store`.
    RequestNoStore,
    /// Shared-cache policy: the request carried `Authorization` and the response is not
    /// `public`, has no `s-maxage` and no `must-revalidate` (RFC 9111 §3.5).
    Authorized,
    /// Shared-cache policy: the response gives no freshness lifetime (no `s-maxage`,
    /// `max-age`, `Expires` or `Last-Modified`).
    NoFreshness,
    /// Shared-cache policy: the response arrived stale and has no validator to revalidate with.
    AlreadyStale,
    /// A caching header of the response (or the request's `Cache-Control`) does not parse.
    UnparsableHeader(Unparsable),
}

impl fmt::Display for NotStored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotStored::StatusNotCacheable(status) => write!(
                f,
                "status {} is not stored (Django policy: only 200; shared cache: explicit freshness, public, or a heuristically cacheable status)",
                status.as_u16()
            ),
            NotStored::StatusNotUnderstood(status) => write!(
                f,
                "the response has must-understand and its status {} is not one this cache implements",
                status.as_u16()
            ),
            NotStored::PartialWithoutRange => {
                f.write_str("a 206 answered a request without Range")
            }
            NotStored::VaryStar => f.write_str("the response has Vary: *"),
            NotStored::SetsCookie => f.write_str("the response sets a cookie"),
            NotStored::CacheControlForbids(directive) => {
                write!(f, "the response has Cache-Control: {directive}")
            }
            NotStored::MaxAgeZero => f.write_str("the timeout or max-age is 0"),
            NotStored::RequestNoStore => f.write_str("the request said Cache-Control: no-store"),
            NotStored::Authorized => f.write_str(
                "the request was authorized and the response is not public, has no s-maxage and no must-revalidate",
            ),
            NotStored::NoFreshness => f.write_str("the response gives no freshness lifetime"),
            NotStored::AlreadyStale => {
                f.write_str("the response arrived stale and has no validator")
            }
            NotStored::UnparsableHeader(which) => which.fmt(f),
        }
    }
}

/// Whether a stored page can be used for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usable {
    /// Fresh, and the request accepts it: a hit.
    Fresh,
    /// Stale, and may be served at once (`x-cache: STALE`); `refresh` when it is within its
    /// stale-while-revalidate window (or the grace), so one refresh runs in the background.
    Stale { refresh: bool },
    /// Stale or refused by the request: ask the inner service (with the page's validators,
    /// if any). `if_error`: when it fails (an error, a 5xx), the page may be served instead
    /// (stale-if-error, or the grace).
    Revalidate { if_error: bool },
}

/// How long past its freshness a stored page may be served stale (RFC 5861, and the layer's
/// grace), or `None` when it must never be (RFC 9111 §4.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StaleWindows {
    /// Served at once while one refresh runs: `stale-while-revalidate`, or the grace.
    while_revalidate: Duration,
    /// Served when the inner service fails: `stale-if-error`, or the grace.
    if_error: Duration,
    /// Whether a client's `max-stale` may have it served stale (not under `s-maxage`, which
    /// implies `proxy-revalidate` for a shared cache, RFC 9111 §5.2.2.10).
    client_may_extend: bool,
}

fn authorized(request: &HeaderMap) -> bool {
    request.get(AUTHORIZATION).is_some_and(|v| !v.is_empty())
}

/// The longest duration the policy works with (RFC 9111 §1.2.2).
const MAX_DELTA: Duration = Duration::from_secs(MAX_DELTA_SECONDS);

impl Policy {
    /// Whether the request may use the cache at all (`false`: pass it to the inner service
    /// untouched, `x-cache: BYPASS`). Under the shared-cache policy a request whose
    /// `Cache-Control` does not parse is passed through too: it might have said `no-store`.
    pub(crate) fn may_use_cache(&self, request: &HeaderMap) -> bool {
        match self {
            Policy::Django => true,
            Policy::SharedCache(_) => {
                CacheControl::from_headers(request).is_ok_and(|cc| !cc.has("no-store"))
            }
        }
    }

    /// Decides whether the response is stored; may patch its headers.
    pub(crate) fn decide(&self, ex: &mut Exchange<'_>) -> Decision {
        match self.verdict(ex) {
            Ok(store) => store,
            Err(reason) => Decision::Skip(reason),
        }
    }

    fn verdict(&self, ex: &mut Exchange<'_>) -> Result<Decision, NotStored> {
        let cc = self.response_cache_control(ex.response);
        // An unreadable Cache-Control might have said `public`, or not: vary to be safe.
        if authorized(ex.request) && !cc.as_ref().is_ok_and(|cc| cc.has("public")) {
            patch_vary_headers(ex.response, &["authorization"]);
        }
        let shared = matches!(self, Policy::SharedCache(_));
        // Error pages get no caching headers (not even under the Django policy); the shared
        // cache never stores an interim answer or a 304 (which only updates a stored page).
        if !shared && ex.status != StatusCode::OK && ex.status != StatusCode::NOT_MODIFIED
            || shared && (ex.status.is_informational() || ex.status == StatusCode::NOT_MODIFIED)
        {
            return Err(NotStored::StatusNotCacheable(ex.status));
        }
        let cc = cc.map_err(NotStored::UnparsableHeader)?;
        let vary = parse_vary(ex.response).map_err(NotStored::UnparsableHeader)?;
        if vary.iter().any(|n| n == "*") {
            return Err(NotStored::VaryStar);
        }
        if ex.response.contains_key(SET_COOKIE) {
            return Err(NotStored::SetsCookie);
        }
        // §5.2.2.3: must-understand stands for no-store unless this cache knows the status.
        let understood = shared && cc.has("must-understand");
        if understood && !heuristically_cacheable(ex.status) {
            return Err(NotStored::StatusNotUnderstood(ex.status));
        }
        // The shared cache stores a no-cache page and revalidates it on every use (§5.2.2.4).
        let forbidding: &[&'static str] = if shared {
            &["private", "no-store"]
        } else {
            &["private", "no-cache", "no-store"]
        };
        for directive in forbidding {
            if cc.has(directive) && !(understood && *directive == "no-store") {
                return Err(NotStored::CacheControlForbids(directive));
            }
        }
        match self {
            Policy::Django => {
                let ttl = ex
                    .layer_timeout
                    .or_else(|| cc.seconds("max-age").map(Duration::from_secs))
                    .unwrap_or(ex.default_ttl)
                    .min(MAX_DELTA);
                if ttl.is_zero() {
                    return Err(NotStored::MaxAgeZero);
                }
                patch_response_headers(ex.response, ttl);
                if ex.status != StatusCode::OK {
                    return Err(NotStored::StatusNotCacheable(ex.status));
                }
                Ok(Decision::Store {
                    fresh_for: ttl,
                    initial_age: Duration::ZERO,
                    keep: ttl
                        .saturating_add(self.stale_keep(&cc, ex.grace))
                        .min(MAX_DELTA),
                })
            }
            Policy::SharedCache(settings) => {
                // §3, §4.2.2: explicit freshness (or public) for any final status, a heuristic
                // lifetime only for the statuses that allow one.
                let explicit = cc.has("s-maxage")
                    || cc.has("max-age")
                    || ex.response.contains_key(EXPIRES)
                    || cc.has("public");
                if !explicit && !heuristically_cacheable(ex.status) {
                    return Err(NotStored::StatusNotCacheable(ex.status));
                }
                if ex.status == StatusCode::PARTIAL_CONTENT && !ex.request.contains_key(RANGE) {
                    return Err(NotStored::PartialWithoutRange);
                }
                let request_cc =
                    CacheControl::from_headers(ex.request).map_err(NotStored::UnparsableHeader)?;
                if request_cc.has("no-store") {
                    return Err(NotStored::RequestNoStore);
                }
                if authorized(ex.request)
                    && !(cc.has("public") || cc.has("s-maxage") || cc.has("must-revalidate"))
                {
                    return Err(NotStored::Authorized);
                }
                let date = response_date(ex.response)?;
                // no-cache: stored (with a validator, below), but stale at once, so every use
                // revalidates (§5.2.2.4).
                let fresh_for = if cc.has("no-cache") {
                    Duration::ZERO
                } else {
                    settings
                        .lifetime(&cc, ex.response, date.unwrap_or(ex.response_time))
                        .ok_or(NotStored::NoFreshness)?
                };
                let initial_age =
                    initial_age(ex.response, date, ex.request_time, ex.response_time)?;
                let validators =
                    ex.response.contains_key(ETAG) || ex.response.contains_key(LAST_MODIFIED);
                // Kept while fresh, then (with a validator) a while for revalidation, or while
                // it may be served stale, whichever is longer.
                let remaining = fresh_for.saturating_sub(initial_age);
                let revalidation = if validators {
                    remaining.saturating_add(settings.keep_stale)
                } else {
                    remaining
                };
                let servable = fresh_for
                    .saturating_add(self.stale_keep(&cc, ex.grace))
                    .saturating_sub(initial_age);
                let keep = revalidation.max(servable);
                if keep.is_zero() {
                    return Err(NotStored::AlreadyStale);
                }
                Ok(Decision::Store {
                    fresh_for,
                    initial_age,
                    keep: keep.min(MAX_DELTA),
                })
            }
        }
    }

    /// Whether a stored page can be served to this request, fresh or stale. `grace` is the
    /// layer's. A fresh page under the Django policy costs one comparison; nothing here reads
    /// the backend.
    pub(crate) fn usable(
        &self,
        page: &StoredResponse,
        request: &HeaderMap,
        now: SystemTime,
        grace: Duration,
    ) -> Usable {
        let age = page.age(now);
        let requested = match self {
            // Django's middleware ignores the request's Cache-Control.
            Policy::Django => {
                if age < page.fresh_for {
                    return Usable::Fresh;
                }
                Requested::default()
            }
            Policy::SharedCache(_) => match Requested::from_headers(request) {
                Some(requested) => requested,
                // A request Cache-Control that does not parse might have said no-cache.
                None => return Usable::Revalidate { if_error: false },
            },
        };
        // §5.2.1.4 no-cache, §5.2.1.1 max-age: the client wants the page validated, or
        // younger; no stale answer then (only max-stale would allow one, for max-age).
        if requested.no_cache || requested.max_age.is_some_and(|max| age > max) {
            return Usable::Revalidate { if_error: false };
        }
        if age < page.fresh_for {
            // §5.2.1.3 min-fresh: fresh for at least that much longer.
            return if requested
                .min_fresh
                .is_some_and(|min| page.fresh_for - age < min)
            {
                Usable::Revalidate { if_error: false }
            } else {
                Usable::Fresh
            };
        }
        let staleness = age - page.fresh_for;
        let windows = self
            .response_cache_control(&page.headers)
            .ok()
            .and_then(|cc| self.stale_windows(&cc, grace));
        let Some(windows) = windows else {
            return Usable::Revalidate { if_error: false };
        };
        let refresh = staleness < windows.while_revalidate;
        // §5.2.1.2 max-stale: the client accepts this much staleness (any, without a value).
        if windows.client_may_extend
            && requested
                .max_stale
                .is_some_and(|max| max.is_none_or(|max| staleness <= max))
        {
            return Usable::Stale { refresh };
        }
        if requested.max_age.is_some() || requested.min_fresh.is_some() {
            return Usable::Revalidate { if_error: false };
        }
        if refresh {
            Usable::Stale { refresh }
        } else {
            Usable::Revalidate {
                if_error: staleness < windows.if_error,
            }
        }
    }
}

/// The request directives that decide whether a stored page may answer it (RFC 9111 §5.2.1).
#[derive(Debug, Default)]
struct Requested {
    no_cache: bool,
    max_age: Option<Duration>,
    min_fresh: Option<Duration>,
    /// `Some(None)`: any staleness; `Some(Some(d))`: at most `d`.
    max_stale: Option<Option<Duration>>,
}

impl Requested {
    /// The request's directives, or `None` when its `Cache-Control` does not parse.
    fn from_headers(request: &HeaderMap) -> Option<Self> {
        let cc = CacheControl::from_headers(request).ok()?;
        // §5.4: Pragma: no-cache counts only without a Cache-Control.
        let pragma_no_cache = !request.contains_key(http::header::CACHE_CONTROL)
            && request
                .get(PRAGMA)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("no-cache"));
        let seconds = |name| cc.seconds(name).map(Duration::from_secs);
        Some(Requested {
            no_cache: cc.has("no-cache") || pragma_no_cache,
            max_age: seconds("max-age"),
            min_fresh: seconds("min-fresh"),
            max_stale: cc.has("max-stale").then(|| {
                cc.get("max-stale")
                    .map(|v| Duration::from_secs(delta_seconds(v.as_bytes()).unwrap_or(0)))
            }),
        })
    }
}

impl Policy {
    /// The stale windows of a page with these response directives (one home for the rules of
    /// serving stale; see the module docs): `None` when `must-revalidate`, `proxy-revalidate`
    /// or `no-cache` forbid it. Under the shared-cache policy `s-maxage` implies
    /// `proxy-revalidate` (RFC 9111 §5.2.2.10): only the response's own `stale-while-revalidate`
    /// and `stale-if-error` (explicit permission, RFC 5861) then apply, never the grace or a
    /// client's `max-stale`.
    fn stale_windows(&self, cc: &CacheControl, grace: Duration) -> Option<StaleWindows> {
        if ["must-revalidate", "proxy-revalidate", "no-cache"]
            .iter()
            .any(|d| cc.has(d))
        {
            return None;
        }
        let seconds = |name| cc.seconds(name).map_or(Duration::ZERO, Duration::from_secs);
        let strict = matches!(self, Policy::SharedCache(_)) && cc.has("s-maxage");
        let grace = if strict { Duration::ZERO } else { grace };
        Some(StaleWindows {
            while_revalidate: seconds("stale-while-revalidate").max(grace).min(MAX_DELTA),
            if_error: seconds("stale-if-error").max(grace).min(MAX_DELTA),
            client_may_extend: !strict,
        })
    }

    /// How long past its freshness a page with these response directives is kept in the
    /// backend so that it can be served stale.
    fn stale_keep(&self, cc: &CacheControl, grace: Duration) -> Duration {
        self.stale_windows(cc, grace)
            .map_or(Duration::ZERO, |w| w.while_revalidate.max(w.if_error))
    }
}

impl Policy {
    /// The response directives this cache obeys: under the shared-cache policy its own
    /// targeted field, else `CDN-Cache-Control`, else `Cache-Control` (RFC 9213 §2.1: a
    /// targeted field that is empty or does not parse is ignored); under the Django policy
    /// `Cache-Control`.
    pub(crate) fn response_cache_control(
        &self,
        headers: &HeaderMap,
    ) -> Result<CacheControl, Unparsable> {
        if let Policy::SharedCache(settings) = self {
            for name in [&settings.targeted_field, &CDN_CACHE_CONTROL] {
                if let Some(cc) = targeted_cache_control(headers, name) {
                    return Ok(cc);
                }
            }
        }
        CacheControl::from_headers(headers)
    }

    /// The targeted cache-control fields (RFC 9213) this cache obeys and does not pass on to
    /// clients: none under the Django policy.
    pub(crate) fn targeted_fields(&self) -> Vec<HeaderName> {
        match self {
            Policy::Django => Vec::new(),
            Policy::SharedCache(settings) => {
                vec![settings.targeted_field.clone(), CDN_CACHE_CONTROL]
            }
        }
    }

    /// Whether the request said `Cache-Control: only-if-cached` (RFC 9111 §5.2.1.7): it wants
    /// a stored answer or a 504, never one from the origin. Only the shared cache reads it.
    pub(crate) fn only_if_cached(&self, request: &HeaderMap) -> bool {
        matches!(self, Policy::SharedCache(_))
            && request.contains_key(http::header::CACHE_CONTROL)
            && CacheControl::from_headers(request).is_ok_and(|cc| cc.has("only-if-cached"))
    }
}

impl SharedCachePolicy {
    /// The freshness lifetime (RFC 9111 §4.2.1), at most [`MAX_DELTA_SECONDS`], or `None` when
    /// the response gives none. `date` is the response's `Date`, or when it was received.
    fn lifetime(
        &self,
        cc: &CacheControl,
        headers: &HeaderMap,
        date: SystemTime,
    ) -> Option<Duration> {
        if let Some(s) = cc.seconds("s-maxage").or_else(|| cc.seconds("max-age")) {
            return Some(Duration::from_secs(s));
        }
        if let Some(expires) = headers.get(EXPIRES) {
            // An invalid Expires (such as "0") means already expired (§5.3).
            return Some(
                parse_http_date(expires)
                    .and_then(|e| e.duration_since(date).ok())
                    .unwrap_or_default()
                    .min(MAX_DELTA),
            );
        }
        let last_modified = headers.get(LAST_MODIFIED).and_then(parse_http_date)?;
        let since = date.duration_since(last_modified).ok()?;
        // A fraction that is negative, not a number or too large gives no or the longest
        // heuristic freshness, never a panic.
        let heuristic = Duration::try_from_secs_f64(since.as_secs_f64() * self.heuristic_fraction)
            .unwrap_or(if self.heuristic_fraction > 0.0 {
                MAX_DELTA
            } else {
                Duration::ZERO
            });
        Some(heuristic.min(self.max_heuristic).min(MAX_DELTA))
    }
}

/// The response's `Date`: `None` when absent, an error when present but not a date (a cache
/// cannot tell how old such a response is).
fn response_date(headers: &HeaderMap) -> Result<Option<SystemTime>, NotStored> {
    headers
        .get(DATE)
        .map(|v| parse_http_date(v).ok_or(NotStored::UnparsableHeader(Unparsable::Date)))
        .transpose()
}

/// The response's `Age` (RFC 9111 §5.1: of a list, the first member), at most
/// [`MAX_DELTA_SECONDS`]; an error when it is not a number of seconds. (§5.1 lets a cache ignore
/// an invalid `Age`; this one refuses to store the response instead, since it cannot tell how
/// old it is.)
fn age_header(headers: &HeaderMap) -> Result<Duration, NotStored> {
    let Some(value) = headers.get(AGE) else {
        return Ok(Duration::ZERO);
    };
    let first = value
        .as_bytes()
        .split(|b| *b == b',')
        .next()
        .unwrap_or_default();
    let first = first.trim_ascii();
    delta_seconds(first)
        .map(Duration::from_secs)
        .ok_or(NotStored::UnparsableHeader(Unparsable::Age))
}

/// RFC 9111 §4.2.3: the age of a response when it arrived, at most [`MAX_DELTA_SECONDS`].
fn initial_age(
    headers: &HeaderMap,
    date: Option<SystemTime>,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Result<Duration, NotStored> {
    let age_value = age_header(headers)?;
    let apparent = date
        .and_then(|d| response_time.duration_since(d).ok())
        .unwrap_or_default();
    let delay = response_time
        .duration_since(request_time)
        .unwrap_or_default();
    Ok(apparent.max(age_value.saturating_add(delay)).min(MAX_DELTA))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn decide(
        policy: &Policy,
        req: &[(&'static str, &'static str)],
        resp: &[(&'static str, &'static str)],
    ) -> (Decision, HeaderMap) {
        let mut request = HeaderMap::new();
        for (k, v) in req {
            request.append(*k, HeaderValue::from_static(v));
        }
        let mut response = HeaderMap::new();
        for (k, v) in resp {
            response.append(*k, HeaderValue::from_static(v));
        }
        let now = SystemTime::now();
        let d = policy.decide(&mut Exchange {
            request: &request,
            status: StatusCode::OK,
            response: &mut response,
            layer_timeout: None,
            default_ttl: Duration::from_secs(600),
            request_time: now,
            response_time: now,
            grace: Duration::ZERO,
        });
        (d, response)
    }

    #[test]
    fn django_ttl_order_and_patching() {
        let (d, h) = decide(&Policy::Django, &[], &[("cache-control", "max-age=30")]);
        assert!(
            matches!(d, Decision::Store { fresh_for, .. } if fresh_for == Duration::from_secs(30))
        );
        assert!(h.contains_key(EXPIRES));
        let (d, _) = decide(&Policy::Django, &[], &[]);
        assert!(
            matches!(d, Decision::Store { fresh_for, .. } if fresh_for == Duration::from_secs(600))
        );
        let (d, _) = decide(&Policy::Django, &[], &[("cache-control", "max-age=0")]);
        assert_eq!(d, Decision::Skip(NotStored::MaxAgeZero));
        let (d, _) = decide(&Policy::Django, &[], &[("cache-control", "No-Cache=\"x\"")]);
        assert_eq!(
            d,
            Decision::Skip(NotStored::CacheControlForbids("no-cache"))
        );
    }

    /// RFC 9111 §3, §4.2.2, §5.2.2.3, §5.2.2.4: what the shared cache stores beyond 200s.
    #[test]
    fn shared_cache_statuses_no_cache_and_must_understand() {
        let rfc = Policy::shared_cache();
        let lm: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";
        let stored = |status: u16, resp: Headers<'_>| {
            let (d, _) = decide_raw(&rfc, StatusCode::from_u16(status).unwrap(), &[], resp);
            d
        };
        // Heuristically cacheable statuses with a Last-Modified; the others only with
        // explicit freshness.
        for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert!(
                matches!(
                    stored(status, &[("last-modified", lm)]),
                    Decision::Store { .. }
                ),
                "{status}"
            );
        }
        for status in [302, 307, 403, 500, 503] {
            assert_eq!(
                stored(status, &[("last-modified", lm)]),
                Decision::Skip(NotStored::StatusNotCacheable(
                    StatusCode::from_u16(status).unwrap()
                ))
            );
            for explicit in [
                &[("cache-control", &b"max-age=60"[..])][..],
                &[("cache-control", b"public"), ("last-modified", lm)],
            ] {
                assert!(
                    matches!(stored(status, explicit), Decision::Store { .. }),
                    "{status}"
                );
            }
        }
        assert_eq!(
            stored(206, &[("cache-control", b"max-age=60")]),
            Decision::Skip(NotStored::PartialWithoutRange)
        );
        for status in [103, 304] {
            assert_eq!(
                stored(status, &[("cache-control", b"max-age=60")]),
                Decision::Skip(NotStored::StatusNotCacheable(
                    StatusCode::from_u16(status).unwrap()
                ))
            );
        }
        // no-cache: stored stale at once when it has a validator.
        assert!(matches!(
            stored(200, &[("cache-control", b"no-cache, max-age=60"), ("etag", b"\"a\"")]),
            Decision::Store { fresh_for, .. } if fresh_for.is_zero()
        ));
        assert_eq!(
            stored(200, &[("cache-control", b"no-cache")]),
            Decision::Skip(NotStored::AlreadyStale)
        );
        // must-understand: no-store is ignored for a known status only.
        let mu: Headers<'_> = &[("cache-control", b"must-understand, no-store, max-age=60")];
        assert!(matches!(stored(200, mu), Decision::Store { .. }));
        assert_eq!(
            stored(500, mu),
            Decision::Skip(NotStored::StatusNotUnderstood(
                StatusCode::INTERNAL_SERVER_ERROR
            ))
        );
        assert_eq!(
            stored(200, &[("cache-control", b"no-store, max-age=60")]),
            Decision::Skip(NotStored::CacheControlForbids("no-store"))
        );
        // The Django policy is unchanged.
        let (d, _) = decide_raw(
            &Policy::Django,
            StatusCode::NOT_FOUND,
            &[],
            &[("cache-control", b"max-age=60")],
        );
        assert_eq!(
            d,
            Decision::Skip(NotStored::StatusNotCacheable(StatusCode::NOT_FOUND))
        );
    }

    /// RFC 9213: the own targeted field wins over CDN-Cache-Control, which wins over
    /// Cache-Control; one that does not parse is ignored.
    #[test]
    fn rfc9213_targeted_fields_override_cache_control() {
        let rfc = Policy::shared_cache();
        let fresh = |resp: Headers<'_>| match decide_raw(&rfc, StatusCode::OK, &[], resp).0 {
            Decision::Store { fresh_for, .. } => Some(fresh_for.as_secs()),
            Decision::Skip(_) => None,
        };
        assert_eq!(
            fresh(&[
                ("cache-control", b"no-store"),
                ("cdn-cache-control", b"max-age=30")
            ]),
            Some(30)
        );
        assert_eq!(
            fresh(&[
                ("cache-control", b"max-age=10"),
                ("cdn-cache-control", b"max-age=30"),
                ("webcache-cache-control", b"max-age=60"),
            ]),
            Some(60)
        );
        assert_eq!(
            fresh(&[
                ("cache-control", b"max-age=10"),
                ("cdn-cache-control", b"no-store")
            ]),
            None
        );
        // Not a structured dictionary (upper case, a space around `=`): Cache-Control rules.
        assert_eq!(
            fresh(&[
                ("cache-control", b"max-age=10"),
                ("cdn-cache-control", b"Max-Age=30")
            ]),
            Some(10)
        );
        assert_eq!(
            fresh(&[("cache-control", b"max-age=10"), ("cdn-cache-control", b"")]),
            Some(10)
        );
        let (d, _) = decide_raw(
            &Policy::Django,
            StatusCode::OK,
            &[],
            &[
                ("cache-control", b"max-age=10"),
                ("cdn-cache-control", b"no-store"),
            ],
        );
        assert!(matches!(d, Decision::Store { .. }));
    }

    #[test]
    fn shared_cache_freshness_sources() {
        let p = Policy::shared_cache();
        let (d, _) = decide(&p, &[], &[("cache-control", "max-age=10, s-maxage=20")]);
        assert!(
            matches!(d, Decision::Store { fresh_for, .. } if fresh_for == Duration::from_secs(20))
        );
        let (d, _) = decide(&p, &[], &[]);
        assert_eq!(d, Decision::Skip(NotStored::NoFreshness));
        let (d, _) = decide(&p, &[], &[("expires", "0")]);
        assert_eq!(d, Decision::Skip(NotStored::AlreadyStale));
        let (d, _) = decide(
            &p,
            &[("authorization", "Basic x")],
            &[("cache-control", "max-age=10")],
        );
        assert_eq!(d, Decision::Skip(NotStored::Authorized));
        let (d, h) = decide(
            &p,
            &[("authorization", "Basic x")],
            &[("cache-control", "s-maxage=10")],
        );
        assert!(matches!(d, Decision::Store { .. }));
        assert_eq!(h["vary"], "authorization");
    }

    fn decide_raw(
        policy: &Policy,
        status: StatusCode,
        req: &[(&'static str, &[u8])],
        resp: &[(&'static str, &[u8])],
    ) -> (Decision, HeaderMap) {
        let mut request = HeaderMap::new();
        for (k, v) in req {
            request.append(*k, HeaderValue::from_bytes(v).unwrap());
        }
        let mut response = HeaderMap::new();
        for (k, v) in resp {
            response.append(*k, HeaderValue::from_bytes(v).unwrap());
        }
        let now = SystemTime::now();
        let d = policy.decide(&mut Exchange {
            request: &request,
            status,
            response: &mut response,
            layer_timeout: None,
            default_ttl: Duration::from_secs(600),
            request_time: now,
            response_time: now,
            grace: Duration::ZERO,
        });
        (d, response)
    }

    type Headers<'a> = &'a [(&'static str, &'a [u8])];
    type Case<'a> = (&'a Policy, StatusCode, Headers<'a>, Headers<'a>, NotStored);

    #[test]
    fn every_reason_is_typed() {
        let django = Policy::Django;
        let rfc = Policy::shared_cache();
        let ok = StatusCode::OK;
        let cases: [Case<'_>; 12] = [
            (
                &django,
                StatusCode::NOT_FOUND,
                &[],
                &[],
                NotStored::StatusNotCacheable(StatusCode::NOT_FOUND),
            ),
            (
                &django,
                StatusCode::NOT_MODIFIED,
                &[],
                &[],
                NotStored::StatusNotCacheable(StatusCode::NOT_MODIFIED),
            ),
            (
                &django,
                ok,
                &[],
                &[("vary", b"accept, *")],
                NotStored::VaryStar,
            ),
            (
                &django,
                ok,
                &[],
                &[("set-cookie", b"a=b")],
                NotStored::SetsCookie,
            ),
            (
                &django,
                ok,
                &[],
                &[("cache-control", b"max-age=60, Private")],
                NotStored::CacheControlForbids("private"),
            ),
            (
                &django,
                ok,
                &[],
                &[("cache-control", b"no-store")],
                NotStored::CacheControlForbids("no-store"),
            ),
            (
                &django,
                ok,
                &[],
                &[("cache-control", b"private, x=\"\xe9\"")],
                NotStored::UnparsableHeader(Unparsable::CacheControl),
            ),
            (
                &django,
                ok,
                &[],
                &[("vary", b"x-\xe9")],
                NotStored::UnparsableHeader(Unparsable::Vary),
            ),
            (
                &rfc,
                ok,
                &[("cache-control", b"no-store")],
                &[("cache-control", b"max-age=60")],
                NotStored::RequestNoStore,
            ),
            (
                &rfc,
                ok,
                &[("cache-control", b"no-store, \"")],
                &[("cache-control", b"max-age=60")],
                NotStored::UnparsableHeader(Unparsable::CacheControl),
            ),
            (
                &rfc,
                ok,
                &[],
                &[("cache-control", b"max-age=60"), ("date", b"soon")],
                NotStored::UnparsableHeader(Unparsable::Date),
            ),
            (
                &rfc,
                ok,
                &[],
                &[("cache-control", b"max-age=60"), ("age", b"1e3")],
                NotStored::UnparsableHeader(Unparsable::Age),
            ),
        ];
        for (policy, status, req, resp, reason) in cases {
            let (d, _) = decide_raw(policy, status, req, resp);
            assert_eq!(
                d,
                Decision::Skip(reason),
                "{policy:?} {status} {req:?} {resp:?}"
            );
        }
        let (d, _) = decide_raw(
            &rfc,
            ok,
            &[],
            &[("cache-control", b"max-age=60"), ("age", b"60")],
        );
        assert_eq!(d, Decision::Skip(NotStored::AlreadyStale));
        assert_eq!(
            NotStored::UnparsableHeader(Unparsable::Vary).to_string(),
            Unparsable::Vary.to_string()
        );
    }

    #[test]
    fn an_unparsable_cache_control_still_gets_vary_authorization() {
        let (d, h) = decide_raw(
            &Policy::Django,
            StatusCode::OK,
            &[("authorization", b"Basic x")],
            &[("cache-control", b"public, x=\"")],
        );
        assert_eq!(
            d,
            Decision::Skip(NotStored::UnparsableHeader(Unparsable::CacheControl))
        );
        assert_eq!(h["vary"], "authorization");
        assert_eq!(h["cache-control"], "public, x=\"");
        assert!(!h.contains_key(EXPIRES));
    }

    fn decide_with_grace(
        policy: &Policy,
        resp: &[(&'static str, &'static str)],
        grace: u64,
    ) -> Decision {
        let mut response = HeaderMap::new();
        for (k, v) in resp {
            response.append(*k, HeaderValue::from_static(v));
        }
        let now = SystemTime::now();
        policy.decide(&mut Exchange {
            request: &HeaderMap::new(),
            status: StatusCode::OK,
            response: &mut response,
            layer_timeout: None,
            default_ttl: Duration::from_secs(600),
            request_time: now,
            response_time: now,
            grace: Duration::from_secs(grace),
        })
    }

    fn keep(d: Decision) -> u64 {
        match d {
            Decision::Store { keep, .. } => keep.as_secs(),
            Decision::Skip(reason) => panic!("not stored: {reason}"),
        }
    }

    /// RFC 5861: a page is kept for its freshness plus the longer of its stale windows and the
    /// grace; never longer than fresh when it must not be served stale (RFC 9111 §4.2.4).
    #[test]
    fn rfc5861_stale_windows_lengthen_what_is_kept() {
        for policy in [Policy::Django, Policy::shared_cache()] {
            let cc = "max-age=60, stale-while-revalidate=30, stale-if-error=90";
            assert_eq!(
                keep(decide_with_grace(&policy, &[("cache-control", cc)], 0)),
                150
            );
            assert_eq!(
                keep(decide_with_grace(&policy, &[("cache-control", cc)], 300)),
                360
            );
            for forbids in [
                "max-age=60, must-revalidate, stale-if-error=90",
                "max-age=60, proxy-revalidate, stale-while-revalidate=90",
            ] {
                let d = decide_with_grace(&policy, &[("cache-control", forbids)], 300);
                assert_eq!(keep(d), 60, "{policy:?} {forbids}");
            }
        }
        // s-maxage implies proxy-revalidate for the shared cache: no grace, its own windows only.
        let rfc = Policy::shared_cache();
        let d = decide_with_grace(&rfc, &[("cache-control", "s-maxage=60")], 300);
        assert_eq!(keep(d), 60);
        let d = decide_with_grace(
            &rfc,
            &[("cache-control", "s-maxage=60, stale-if-error=30")],
            300,
        );
        assert_eq!(keep(d), 90);
        // A page that arrives within its stale window is stored, and kept only for what is left.
        let d = decide_with_grace(
            &rfc,
            &[
                ("cache-control", "max-age=10, stale-while-revalidate=100"),
                ("age", "30"),
            ],
            0,
        );
        assert_eq!(keep(d), 80);
    }

    #[test]
    fn lifetimes_and_ages_saturate() {
        let rfc = Policy::shared_cache();
        let (d, _) = decide_raw(
            &rfc,
            StatusCode::OK,
            &[],
            &[("cache-control", b"s-maxage=99999999999999999999999")],
        );
        assert_eq!(
            d,
            Decision::Store {
                fresh_for: MAX_DELTA,
                initial_age: Duration::ZERO,
                keep: MAX_DELTA
            }
        );
        let (d, _) = decide_raw(
            &rfc,
            StatusCode::OK,
            &[],
            &[
                ("cache-control", b"max-age=18446744073709551615"),
                ("etag", b"\"x\""),
            ],
        );
        assert!(
            matches!(d, Decision::Store { fresh_for, keep, .. } if fresh_for == MAX_DELTA && keep == MAX_DELTA)
        );
        let (d, _) = decide_raw(
            &rfc,
            StatusCode::OK,
            &[],
            &[
                ("cache-control", b"max-age=60"),
                ("age", b"99999999999999999999, 3"),
                ("etag", b"\"x\""),
            ],
        );
        assert!(
            matches!(d, Decision::Store { initial_age, keep, .. } if initial_age == MAX_DELTA && keep == Duration::from_secs(600))
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::headers::strategies::header_value;
    use proptest::prelude::*;

    const NAMES: [&str; 12] = [
        "cache-control",
        "vary",
        "age",
        "date",
        "expires",
        "last-modified",
        "etag",
        "set-cookie",
        "authorization",
        "pragma",
        "x-other",
        "cache-control",
    ];

    fn header_map() -> impl Strategy<Value = HeaderMap> {
        proptest::collection::vec((proptest::sample::select(&NAMES[..]), header_value()), 0..8)
            .prop_map(|pairs| {
                let mut h = HeaderMap::new();
                for (name, value) in pairs {
                    h.append(name, value);
                }
                h
            })
    }

    fn policy() -> impl Strategy<Value = Policy> {
        prop_oneof![
            Just(Policy::Django),
            Just(Policy::shared_cache()),
            (any::<f64>(), any::<u64>(), any::<u64>()).prop_map(|(f, max, keep)| {
                Policy::SharedCache(
                    SharedCachePolicy::default()
                        .heuristic_fraction(f)
                        .max_heuristic(Duration::from_secs(max))
                        .keep_stale(Duration::from_secs(keep)),
                )
            }),
        ]
    }

    /// A `Cache-Control` of the directives that decide staleness, with values that are
    /// numbers, huge numbers, or junk.
    fn staleness_directives() -> impl Strategy<Value = String> {
        let name = proptest::sample::select(vec![
            "max-age",
            "s-maxage",
            "min-fresh",
            "max-stale",
            "no-cache",
            "must-revalidate",
            "proxy-revalidate",
            "stale-while-revalidate",
            "stale-if-error",
        ]);
        let value = prop_oneof![
            Just(None),
            (0u64..2000).prop_map(|n| Some(n.to_string())),
            Just(Some("99999999999999999999999".to_owned())),
            "[a-z\\-]{1,4}".prop_map(Some),
        ];
        proptest::collection::vec((name, value), 0..5).prop_map(|ds| {
            ds.into_iter()
                .map(|(n, v)| v.map_or(n.to_owned(), |v| format!("{n}={v}")))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any staleness directives in the request and the stored page, any age and grace: a
        /// fresh verdict only for a fresh page, a stale answer only for a stale page whose
        /// directives allow it (RFC 9111 §4.2.4), and never one for a request that said
        /// no-cache; never a panic.
        #[test]
        fn usable_serves_stale_only_when_allowed(
            policy in policy(),
            request_cc in staleness_directives(),
            page_cc in staleness_directives(),
            age in 0u64..2000,
            grace in 0u64..2000,
        ) {
            let now = SystemTime::now();
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_str(&page_cc).unwrap());
            let mut request = HeaderMap::new();
            request.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_str(&request_cc).unwrap());
            let page = StoredResponse {
                status: StatusCode::OK,
                headers,
                body: bytes::Bytes::new(),
                stored_at: now - Duration::from_secs(age),
                fresh_for: Duration::from_secs(600),
                initial_age: Duration::ZERO,
                vary: Vec::new(),
            };
            let usable = policy.usable(&page, &request, now, Duration::from_secs(grace));
            let page_cc = CacheControl::parse(&page_cc).unwrap();
            let request_cc = CacheControl::parse(&request_cc).unwrap();
            match usable {
                Usable::Fresh => prop_assert!(age < 600),
                Usable::Stale { .. } => {
                    prop_assert!(age >= 600);
                    for forbids in ["must-revalidate", "proxy-revalidate", "no-cache"] {
                        prop_assert!(!page_cc.has(forbids));
                    }
                }
                Usable::Revalidate { .. } => {}
            }
            let shared = matches!(policy, Policy::SharedCache(_));
            if shared && request_cc.has("no-cache") {
                prop_assert_eq!(usable, Usable::Revalidate { if_error: false });
            }
            // Within the grace, nothing forbidding and no request directive: served stale.
            let quiet_request = !shared || request_cc.is_empty();
            let forbidding = ["must-revalidate", "proxy-revalidate", "no-cache"]
                .iter()
                .any(|d| page_cc.has(d))
                || (shared && page_cc.has("s-maxage"));
            if age >= 600 && age - 600 < grace && quiet_request && !forbidding {
                prop_assert_eq!(usable, Usable::Stale { refresh: true });
            }
        }

        /// Any request and response headers, any status, any clocks: a decision, never a
        /// panic; never a store when a caching header does not parse; never a duration
        /// beyond 2^31 s.
        #[test]
        fn decide_never_panics_and_never_stores_what_it_cannot_read(
            policy in policy(),
            request in header_map(),
            mut response in header_map(),
            status in proptest::sample::select(vec![200u16, 304, 404, 500]),
            layer_timeout in proptest::option::of(any::<u64>()),
            clocks in (any::<u32>(), any::<u32>()),
            grace in any::<u64>(),
        ) {
            let unreadable = policy.response_cache_control(&response).is_err()
                || parse_vary(&response).is_err()
                || (matches!(policy, Policy::SharedCache(_))
                    && (response_date(&response).is_err() || age_header(&response).is_err()
                        || CacheControl::from_headers(&request).is_err()));
            let request_time = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(clocks.0));
            let response_time = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(clocks.1));
            let status = StatusCode::from_u16(status).unwrap();
            let decision = policy.decide(&mut Exchange {
                request: &request,
                status,
                response: &mut response,
                layer_timeout: layer_timeout.map(Duration::from_secs),
                default_ttl: Duration::from_secs(600),
                request_time,
                response_time,
                grace: Duration::from_secs(grace),
            });
            if let Decision::Store { fresh_for, initial_age, keep } = decision {
                prop_assert!(!unreadable, "stored with an unreadable header: {response:?}");
                if matches!(policy, Policy::SharedCache(_)) {
                    prop_assert!(status != StatusCode::NOT_MODIFIED);
                    let cc = policy.response_cache_control(&response).unwrap();
                    prop_assert!(
                        heuristically_cacheable(status)
                            || cc.has("max-age") || cc.has("s-maxage") || cc.has("public")
                            || response.contains_key(EXPIRES)
                    );
                } else {
                    prop_assert_eq!(status, StatusCode::OK);
                }
                prop_assert!(fresh_for <= MAX_DELTA && initial_age <= MAX_DELTA && keep <= MAX_DELTA);
                prop_assert!(!keep.is_zero());
            }
            let _ = policy.may_use_cache(&request);
        }

        /// Any request and stored headers, any age and grace: a verdict, never a panic; a
        /// request whose Cache-Control does not parse never gets a stored page unchecked; a
        /// page whose Cache-Control forbids stale (or does not parse) is never served stale,
        /// not even on error (RFC 9111 §4.2.4).
        #[test]
        fn usable_never_panics(
            policy in policy(),
            request in header_map(),
            stored in header_map(),
            age in 0u64..1200,
            grace in proptest::option::of(any::<u64>()),
        ) {
            let now = SystemTime::now();
            let page = StoredResponse {
                status: StatusCode::OK,
                headers: stored,
                body: bytes::Bytes::new(),
                stored_at: now - Duration::from_secs(age),
                fresh_for: Duration::from_secs(600),
                initial_age: Duration::ZERO,
                vary: Vec::new(),
            };
            let grace = Duration::from_secs(grace.unwrap_or(0));
            let usable = policy.usable(&page, &request, now, grace);
            if matches!(policy, Policy::SharedCache(_))
                && CacheControl::from_headers(&request).is_err()
            {
                prop_assert_eq!(usable, Usable::Revalidate { if_error: false });
            }
            if age < 600 && policy == Policy::Django {
                prop_assert_eq!(usable, Usable::Fresh);
            }
            let forbids = CacheControl::from_headers(&page.headers).map_or(true, |cc| {
                cc.has("must-revalidate") || cc.has("proxy-revalidate") || cc.has("no-cache")
            });
            if age >= 600 {
                prop_assert!(usable != Usable::Fresh);
                if forbids {
                    prop_assert_eq!(usable, Usable::Revalidate { if_error: false });
                }
            }
        }
    }
}
