//! What may be stored, for how long, and when a stored page may be used: the two policies of
//! the page-cache layer.
//!
//! Rules common to both (stricter than Django where that protects users):
//!
//! | rule | stored? |
//! |---|---|
//! | status other than 200 | no (a 304 gets caching headers under the Django policy, but is not stored) |
//! | `Cache-Control: private`, `no-cache` or `no-store` (any case, with or without a field value) | no |
//! | `Vary: *` | no |
//! | `Set-Cookie` in the response | no (Django refuses only when the response varies on `Cookie` and the request had no cookie; a cookie-setting page is personal far more often than not) |
//! | request with a non-empty `Authorization`, response not `public` | `Vary: Authorization` is added, so the page is only ever served to the same credentials |
//! | body larger than the layer's `max_body` | no (streamed through, never buffered whole) |
//!
//! [`Policy::Django`] then follows Django's `UpdateCacheMiddleware`: the layer's timeout wins,
//! otherwise the response's `max-age` (0 = do not store), otherwise the layer's default TTL;
//! `Expires` and `max-age` are patched to match (the smaller `max-age` wins).
//!
//! [`Policy::SharedCache`] is an RFC 9111 shared cache: freshness comes only from the origin
//! (`s-maxage`, then `max-age`, then `Expires` − `Date`, then 10% of the time since
//! `Last-Modified`, capped); a request with `Authorization` is stored only when the response is
//! `public`, has `s-maxage` or `must-revalidate` (§3.5); a request's `no-store` bypasses the
//! cache and its `no-cache` (or `Pragma: no-cache`) or a `max-age` smaller than the page's age
//! forces revalidation; a stale page with a validator (`ETag`, `Last-Modified`) is kept a while
//! and revalidated with a conditional request (a 304 refreshes the stored headers). Stale pages
//! are never served without revalidation, which honours `must-revalidate` and
//! `proxy-revalidate`. A successful unsafe request (POST, PUT, DELETE, ...) invalidates the
//! pages of its URL (§4.4).

use std::time::{Duration, SystemTime};

use http::header::{AGE, AUTHORIZATION, DATE, ETAG, EXPIRES, LAST_MODIFIED, PRAGMA, SET_COOKIE};
use http::{HeaderMap, StatusCode};

use crate::headers::{
    parse_http_date, patch_response_headers, patch_vary_headers, vary_names, CacheControl,
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

/// Settings of the RFC 9111 shared-cache policy.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedCachePolicy {
    /// The fraction of the time since `Last-Modified` used as heuristic freshness (RFC 9111
    /// §4.2.2 suggests 10%).
    pub heuristic_fraction: f64,
    /// The longest heuristic freshness.
    pub max_heuristic: Duration,
    /// How long a stale page with a validator is kept for revalidation.
    pub keep_stale: Duration,
}

impl Default for SharedCachePolicy {
    fn default() -> Self {
        SharedCachePolicy {
            heuristic_fraction: 0.1,
            max_heuristic: Duration::from_secs(24 * 3600),
            keep_stale: Duration::from_secs(600),
        }
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
    Skip(&'static str),
}

/// Whether a stored page can be used for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usable {
    Fresh,
    /// Stale or refused by the request: revalidate if it has a validator, else fetch anew.
    Revalidate,
}

fn authorized(request: &HeaderMap) -> bool {
    request.get(AUTHORIZATION).is_some_and(|v| !v.is_empty())
}

impl Policy {
    /// Whether the request may use the cache at all (`false`: pass it to the inner service
    /// untouched, `x-cache: BYPASS`).
    pub(crate) fn may_use_cache(&self, request: &HeaderMap) -> bool {
        match self {
            Policy::Django => true,
            Policy::SharedCache(_) => !CacheControl::from_headers(request).has("no-store"),
        }
    }

    /// Decides whether the response is stored; may patch its headers.
    pub(crate) fn decide(&self, ex: &mut Exchange<'_>) -> Decision {
        let request_cc = CacheControl::from_headers(ex.request);
        let cc = CacheControl::from_headers(ex.response);
        if authorized(ex.request) && !cc.has("public") {
            patch_vary_headers(ex.response, &["authorization"]);
        }
        if ex.status != StatusCode::OK && ex.status != StatusCode::NOT_MODIFIED {
            return Decision::Skip("status is not 200");
        }
        if vary_names(ex.response).iter().any(|n| n == "*") {
            return Decision::Skip("Vary: *");
        }
        if ex.response.contains_key(SET_COOKIE) {
            return Decision::Skip("the response sets a cookie");
        }
        for directive in ["private", "no-cache", "no-store"] {
            if cc.has(directive) {
                return Decision::Skip("Cache-Control forbids storing");
            }
        }
        match self {
            Policy::Django => {
                let ttl = ex
                    .layer_timeout
                    .or_else(|| cc.seconds("max-age").map(Duration::from_secs))
                    .unwrap_or(ex.default_ttl);
                if ttl.is_zero() {
                    return Decision::Skip("max-age=0");
                }
                patch_response_headers(ex.response, ttl);
                if ex.status != StatusCode::OK {
                    return Decision::Skip("status is not 200");
                }
                Decision::Store {
                    fresh_for: ttl,
                    initial_age: Duration::ZERO,
                    keep: ttl,
                }
            }
            Policy::SharedCache(settings) => {
                if ex.status != StatusCode::OK {
                    return Decision::Skip("status is not 200");
                }
                if request_cc.has("no-store") {
                    return Decision::Skip("the request said no-store");
                }
                if authorized(ex.request)
                    && !(cc.has("public") || cc.has("s-maxage") || cc.has("must-revalidate"))
                {
                    return Decision::Skip(
                        "authorised request; response not public, no s-maxage or must-revalidate",
                    );
                }
                let Some(fresh_for) = settings.lifetime(&cc, ex.response, ex.response_time) else {
                    return Decision::Skip("no freshness information");
                };
                let initial_age = initial_age(ex.response, ex.request_time, ex.response_time);
                let validators =
                    ex.response.contains_key(ETAG) || ex.response.contains_key(LAST_MODIFIED);
                let remaining = fresh_for.saturating_sub(initial_age);
                let keep = remaining
                    + if validators {
                        settings.keep_stale
                    } else {
                        Duration::ZERO
                    };
                if keep.is_zero() {
                    return Decision::Skip("already stale and no validator");
                }
                Decision::Store {
                    fresh_for,
                    initial_age,
                    keep,
                }
            }
        }
    }

    /// Whether a stored page can be served to this request as it is.
    pub(crate) fn usable(
        &self,
        page: &StoredResponse,
        request: &HeaderMap,
        now: SystemTime,
    ) -> Usable {
        if !page.is_fresh(now) {
            return Usable::Revalidate;
        }
        match self {
            Policy::Django => Usable::Fresh,
            Policy::SharedCache(_) => {
                let cc = CacheControl::from_headers(request);
                let pragma_no_cache = !request.contains_key(http::header::CACHE_CONTROL)
                    && request
                        .get(PRAGMA)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.to_ascii_lowercase().contains("no-cache"));
                let too_old = cc
                    .seconds("max-age")
                    .is_some_and(|max| page.age(now) > Duration::from_secs(max));
                if cc.has("no-cache") || pragma_no_cache || too_old {
                    Usable::Revalidate
                } else {
                    Usable::Fresh
                }
            }
        }
    }
}

impl SharedCachePolicy {
    /// The freshness lifetime (RFC 9111 §4.2.1), or `None` when the response gives none.
    fn lifetime(
        &self,
        cc: &CacheControl,
        headers: &HeaderMap,
        response_time: SystemTime,
    ) -> Option<Duration> {
        if let Some(s) = cc.seconds("s-maxage").or_else(|| cc.seconds("max-age")) {
            return Some(Duration::from_secs(s));
        }
        let date = headers
            .get(DATE)
            .and_then(parse_http_date)
            .unwrap_or(response_time);
        if let Some(expires) = headers.get(EXPIRES) {
            // An invalid Expires (such as "0") means already expired.
            return Some(
                parse_http_date(expires)
                    .and_then(|e| e.duration_since(date).ok())
                    .unwrap_or_default(),
            );
        }
        let last_modified = headers.get(LAST_MODIFIED).and_then(parse_http_date)?;
        let since = date.duration_since(last_modified).ok()?;
        Some(
            since
                .mul_f64(self.heuristic_fraction)
                .min(self.max_heuristic),
        )
    }
}

/// RFC 9111 §4.2.3: the age of a response when it arrived.
fn initial_age(
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let age_value = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or_default();
    let date = headers.get(DATE).and_then(parse_http_date);
    let apparent = date
        .and_then(|d| response_time.duration_since(d).ok())
        .unwrap_or_default();
    let delay = response_time
        .duration_since(request_time)
        .unwrap_or_default();
    apparent.max(age_value + delay)
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
        assert!(matches!(d, Decision::Skip(_)));
        let (d, _) = decide(&Policy::Django, &[], &[("cache-control", "No-Cache=\"x\"")]);
        assert!(matches!(d, Decision::Skip(_)));
    }

    #[test]
    fn shared_cache_freshness_sources() {
        let p = Policy::shared_cache();
        let (d, _) = decide(&p, &[], &[("cache-control", "max-age=10, s-maxage=20")]);
        assert!(
            matches!(d, Decision::Store { fresh_for, .. } if fresh_for == Duration::from_secs(20))
        );
        let (d, _) = decide(&p, &[], &[]);
        assert_eq!(d, Decision::Skip("no freshness information"));
        let (d, _) = decide(&p, &[], &[("expires", "0")]);
        assert!(matches!(d, Decision::Skip(_)));
        let (d, _) = decide(
            &p,
            &[("authorization", "Basic x")],
            &[("cache-control", "max-age=10")],
        );
        assert!(matches!(d, Decision::Skip(_)));
        let (d, h) = decide(
            &p,
            &[("authorization", "Basic x")],
            &[("cache-control", "s-maxage=10")],
        );
        assert!(matches!(d, Decision::Store { .. }));
        assert_eq!(h["vary"], "authorization");
    }
}
