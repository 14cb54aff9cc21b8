//! Cache-related response headers: `Cache-Control` parsing and patching, `Vary`, `Expires`,
//! and the Django helpers built on them (`cache_control`, `never_cache`, `vary_on_headers`,
//! `vary_on_cookie`), both as functions on a [`HeaderMap`] and as tower layers.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::header::{CACHE_CONTROL, EXPIRES, VARY};
use http::{HeaderMap, HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::future::MapHeadersFuture;

/// The directives of the `Cache-Control` header fields of a message, in order.
///
/// Directive names are lower-cased; values keep their case with surrounding quotes removed.
/// Several header lines are read as one comma-separated list, as RFC 9110 says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    directives: Vec<(String, Option<String>)>,
}

impl CacheControl {
    /// Parses every `Cache-Control` line of `headers`. Unreadable (non-UTF-8) lines are skipped.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut cc = CacheControl::default();
        for value in headers.get_all(CACHE_CONTROL) {
            if let Ok(text) = value.to_str() {
                cc.parse_into(text);
            }
        }
        cc
    }

    /// Parses one header value.
    pub fn parse(text: &str) -> Self {
        let mut cc = CacheControl::default();
        cc.parse_into(text);
        cc
    }

    fn parse_into(&mut self, text: &str) {
        for part in split_list(text) {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n.trim(), Some(unquote(v.trim()).to_owned())),
                None => (part.trim(), None),
            };
            if !name.is_empty() {
                self.directives.push((name.to_ascii_lowercase(), value));
            }
        }
    }

    /// Whether the directive is present (with or without a value: `private="set-cookie"` counts
    /// as `private`, which is the safe reading for a cache).
    pub fn has(&self, name: &str) -> bool {
        self.directives.iter().any(|(n, _)| n == name)
    }

    /// The value of the first occurrence of a directive.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// A delta-seconds directive (`max-age`, `s-maxage`). A present but unreadable value reads
    /// as 0 (RFC 9111 §4.2.1: treat an invalid freshness as stale).
    pub fn seconds(&self, name: &str) -> Option<u64> {
        if !self.has(name) {
            return None;
        }
        Some(
            self.get(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0),
        )
    }

    /// Sets a directive, replacing an older occurrence.
    pub fn set(&mut self, name: &str, value: Option<String>) {
        let name = name.to_ascii_lowercase();
        self.directives.retain(|(n, _)| *n != name);
        self.directives.push((name, value));
    }

    /// Removes a directive.
    pub fn remove(&mut self, name: &str) {
        self.directives.retain(|(n, _)| n != name);
    }

    /// Whether there are no directives.
    pub fn is_empty(&self) -> bool {
        self.directives.is_empty()
    }

    /// Writes the directives back as one `Cache-Control` field (or removes the field when there
    /// are none).
    pub fn write_to(&self, headers: &mut HeaderMap) {
        if self.is_empty() {
            headers.remove(CACHE_CONTROL);
            return;
        }
        match HeaderValue::from_str(&self.to_string()) {
            Ok(v) => {
                headers.insert(CACHE_CONTROL, v);
            }
            Err(_) => tracing::warn!(
                "Cache-Control directives are not a valid header value; left unchanged"
            ),
        }
    }
}

impl fmt::Display for CacheControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.directives.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
            if let Some(v) = value {
                let token = !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if token {
                    write!(f, "={v}")?;
                } else {
                    write!(f, "=\"{}\"", v.replace('"', "\\\""))?;
                }
            }
        }
        Ok(())
    }
}

/// Splits a comma-separated header list, keeping commas inside quoted strings.
fn split_list(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, b) in text.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// What [`patch_cache_control`] changes, Django's `patch_cache_control(**kwargs)` as a builder.
///
/// ```
/// use std::time::Duration;
/// use webcache_http::headers::{patch_cache_control, CacheControlPatch};
/// let mut headers = http::HeaderMap::new();
/// headers.insert("cache-control", "public, max-age=600".parse().unwrap());
/// patch_cache_control(&mut headers, &CacheControlPatch::new().private().max_age(Duration::from_secs(60)));
/// assert_eq!(headers["cache-control"], "private, max-age=60");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControlPatch {
    set: Vec<(String, Option<String>)>,
}

impl CacheControlPatch {
    /// An empty patch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Any directive, with or without a value.
    pub fn directive(mut self, name: &str, value: Option<&str>) -> Self {
        self.set
            .push((name.to_ascii_lowercase(), value.map(str::to_owned)));
        self
    }

    /// `public` (removes `private`).
    pub fn public(self) -> Self {
        self.directive("public", None)
    }
    /// `private` (removes `public`).
    pub fn private(self) -> Self {
        self.directive("private", None)
    }
    /// `no-cache`.
    pub fn no_cache(self) -> Self {
        self.directive("no-cache", None)
    }
    /// `no-store`.
    pub fn no_store(self) -> Self {
        self.directive("no-store", None)
    }
    /// `must-revalidate`.
    pub fn must_revalidate(self) -> Self {
        self.directive("must-revalidate", None)
    }
    /// `proxy-revalidate`.
    pub fn proxy_revalidate(self) -> Self {
        self.directive("proxy-revalidate", None)
    }
    /// `no-transform`.
    pub fn no_transform(self) -> Self {
        self.directive("no-transform", None)
    }
    /// `immutable`.
    pub fn immutable(self) -> Self {
        self.directive("immutable", None)
    }
    /// `max-age` (when the response already has one, the smaller wins).
    pub fn max_age(self, d: Duration) -> Self {
        self.directive("max-age", Some(&d.as_secs().to_string()))
    }
    /// `s-maxage`.
    pub fn s_maxage(self, d: Duration) -> Self {
        self.directive("s-maxage", Some(&d.as_secs().to_string()))
    }
}

/// Django's `patch_cache_control`: adds or replaces directives. When both the response and the
/// patch have `max-age`, the smaller wins; `private` and `public` replace each other.
pub fn patch_cache_control(headers: &mut HeaderMap, patch: &CacheControlPatch) {
    let mut cc = CacheControl::from_headers(headers);
    for (name, value) in &patch.set {
        match name.as_str() {
            "private" => cc.remove("public"),
            "public" => cc.remove("private"),
            _ => {}
        }
        let mut value = value.clone();
        if name == "max-age" {
            if let (Some(old), Some(new)) = (
                cc.seconds("max-age"),
                value.as_deref().and_then(|v| v.parse::<u64>().ok()),
            ) {
                value = Some(old.min(new).to_string());
            }
        }
        cc.set(name, value);
    }
    cc.write_to(headers);
}

/// Django's `patch_response_headers`: sets `Expires` to now + `ttl` when absent and patches
/// `max-age` to at most `ttl`.
pub fn patch_response_headers(headers: &mut HeaderMap, ttl: Duration) {
    if !headers.contains_key(EXPIRES) {
        headers.insert(EXPIRES, http_date(SystemTime::now() + ttl));
    }
    patch_cache_control(headers, &CacheControlPatch::new().max_age(ttl));
}

/// Django's `add_never_cache_headers`: `Expires` now and
/// `Cache-Control: max-age=0, no-cache, no-store, must-revalidate, private`.
pub fn add_never_cache_headers(headers: &mut HeaderMap) {
    headers.insert(EXPIRES, http_date(SystemTime::now()));
    patch_cache_control(
        headers,
        &CacheControlPatch::new()
            .max_age(Duration::ZERO)
            .no_cache()
            .no_store()
            .must_revalidate()
            .private(),
    );
}

/// The header names listed in the response's `Vary` fields, lower-cased, in order, without
/// duplicates. `*` is kept as `*`.
pub fn vary_names(headers: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for value in headers.get_all(VARY) {
        let Ok(text) = value.to_str() else { continue };
        for name in split_list(text) {
            let name = name.to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// Whether the response's `Vary` lists `name` (case-insensitive).
pub fn has_vary_header(headers: &HeaderMap, name: &str) -> bool {
    vary_names(headers)
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
}

/// Django's `patch_vary_headers`: adds `names` to `Vary` unless already there (an existing
/// `Vary: *` stays `*`).
pub fn patch_vary_headers(headers: &mut HeaderMap, names: &[&str]) {
    let mut current = vary_names(headers);
    if current.iter().any(|n| n == "*") {
        return;
    }
    let original_len = current.len();
    for name in names {
        let lower = name.to_ascii_lowercase();
        if !current.contains(&lower) {
            current.push(lower);
        }
    }
    if current.len() == original_len && headers.get_all(VARY).iter().count() <= 1 {
        return;
    }
    let mut joined = String::new();
    for (i, n) in current.iter().enumerate() {
        if i > 0 {
            joined.push_str(", ");
        }
        let _ = write!(joined, "{n}");
    }
    match HeaderValue::from_str(&joined) {
        Ok(v) => {
            headers.insert(VARY, v);
        }
        Err(_) => tracing::warn!("Vary names are not a valid header value; left unchanged"),
    }
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`) as a header value.
pub fn http_date(at: SystemTime) -> HeaderValue {
    // An IMF-fixdate is always visible ASCII.
    HeaderValue::from_str(&httpdate::fmt_http_date(at))
        .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// Parses an HTTP date header value.
pub fn parse_http_date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

type Patch = Arc<dyn Fn(&mut HeaderMap) + Send + Sync>;

/// A layer that edits the headers of every response of the wrapped service; what the helper
/// functions [`cache_control`], [`never_cache`], [`vary_on_headers`] and [`vary_on_cookie`]
/// return. Like Django's decorators, it can wrap one handler, one route or a whole router.
#[derive(Clone)]
pub struct ResponseHeadersLayer {
    patch: Patch,
}

impl fmt::Debug for ResponseHeadersLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseHeadersLayer")
            .finish_non_exhaustive()
    }
}

impl ResponseHeadersLayer {
    /// A layer that applies `patch` to every response's headers.
    pub fn new(patch: impl Fn(&mut HeaderMap) + Send + Sync + 'static) -> Self {
        ResponseHeadersLayer {
            patch: Arc::new(patch),
        }
    }
}

impl<S> Layer<S> for ResponseHeadersLayer {
    type Service = ResponseHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseHeaders {
            inner,
            patch: self.patch.clone(),
        }
    }
}

/// The service built by [`ResponseHeadersLayer`].
#[derive(Clone)]
pub struct ResponseHeaders<S> {
    inner: S,
    patch: Patch,
}

impl<S: fmt::Debug> fmt::Debug for ResponseHeaders<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseHeaders")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Service<Request<B>> for ResponseHeaders<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = MapHeadersFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        MapHeadersFuture::new(self.inner.call(req), self.patch.clone())
    }
}

/// Django's `@cache_control(...)` as a layer: patches `Cache-Control` on every response.
pub fn cache_control(patch: CacheControlPatch) -> ResponseHeadersLayer {
    ResponseHeadersLayer::new(move |h| patch_cache_control(h, &patch))
}

/// Django's `@never_cache` as a layer: see [`add_never_cache_headers`].
pub fn never_cache() -> ResponseHeadersLayer {
    ResponseHeadersLayer::new(add_never_cache_headers)
}

/// Django's `@vary_on_headers(...)` as a layer.
pub fn vary_on_headers(names: &[&str]) -> ResponseHeadersLayer {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    ResponseHeadersLayer::new(move |h| {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        patch_vary_headers(h, &refs);
    })
}

/// Django's `@vary_on_cookie` as a layer.
pub fn vary_on_cookie() -> ResponseHeadersLayer {
    vary_on_headers(&["cookie"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_values_and_case() {
        let cc = CacheControl::parse("Public, MAX-AGE=60, private=\"Set-Cookie, X\", no-cache");
        assert!(cc.has("public"));
        assert!(cc.has("private"));
        assert_eq!(cc.get("private"), Some("Set-Cookie, X"));
        assert_eq!(cc.seconds("max-age"), Some(60));
        assert_eq!(
            CacheControl::parse("max-age=abc").seconds("max-age"),
            Some(0)
        );
    }

    #[test]
    fn patch_keeps_the_smaller_max_age() {
        let mut h = HeaderMap::new();
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("max-age=30, public"),
        );
        patch_cache_control(
            &mut h,
            &CacheControlPatch::new().max_age(Duration::from_secs(60)),
        );
        assert_eq!(h[CACHE_CONTROL], "public, max-age=30");
        patch_cache_control(
            &mut h,
            &CacheControlPatch::new()
                .max_age(Duration::from_secs(10))
                .private(),
        );
        assert_eq!(h[CACHE_CONTROL], "max-age=10, private");
    }

    #[test]
    fn vary_patch_dedups_case_insensitively() {
        let mut h = HeaderMap::new();
        h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        patch_vary_headers(&mut h, &["accept-encoding", "Cookie"]);
        assert_eq!(h[VARY], "accept-encoding, cookie");
        h.insert(VARY, HeaderValue::from_static("*"));
        patch_vary_headers(&mut h, &["cookie"]);
        assert_eq!(h[VARY], "*");
    }
}
