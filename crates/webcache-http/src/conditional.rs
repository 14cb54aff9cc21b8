//! Conditional requests (RFC 9110 §13): `If-Match`, `If-Unmodified-Since`, `If-None-Match`,
//! `If-Modified-Since`, evaluated against a response's `ETag` and `Last-Modified`, and
//! [`ConditionalGetLayer`], Django's `ConditionalGetMiddleware` (an `ETag` from a body hash
//! when the handler sets none).

use std::fmt;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::header::{
    CONTENT_LENGTH, ETAG, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE,
    LAST_MODIFIED,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use tower::{Layer, Service};

use crate::body::{buffer, Buffered, CacheBody, PageBody};
use crate::headers::{parse_http_date, CacheControl};

/// What the preconditions of a request say about a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// No condition, or all conditions hold: send the response.
    Proceed,
    /// `If-None-Match` or `If-Modified-Since` matched on GET/HEAD: send 304.
    NotModified,
    /// `If-Match` or `If-Unmodified-Since` failed (or `If-None-Match` matched on another
    /// method): send 412.
    Failed,
}

/// Evaluates the request's preconditions against the validators in `response` (RFC 9110
/// §13.2.2 order). Only meaningful for a 2xx response.
pub fn evaluate(method: &Method, request: &HeaderMap, response: &HeaderMap) -> Precondition {
    if !is_conditional(request) {
        return Precondition::Proceed;
    }
    let etag = response.get(ETAG).and_then(|v| v.to_str().ok());
    let last_modified = response.get(LAST_MODIFIED).and_then(parse_http_date);
    let safe = method == Method::GET || method == Method::HEAD;

    if let Some(if_match) = request.get(IF_MATCH).and_then(|v| v.to_str().ok()) {
        if !matches_list(if_match, etag, true) {
            return Precondition::Failed;
        }
    } else if let Some(since) = request.get(IF_UNMODIFIED_SINCE).and_then(parse_http_date) {
        // As Django: without a Last-Modified the condition cannot be shown to hold.
        if last_modified.is_none_or(|lm| lm > since) {
            return Precondition::Failed;
        }
    }
    if let Some(if_none) = request.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        if matches_list(if_none, etag, false) {
            return if safe {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if safe {
        if let (Some(since), Some(lm)) = (
            request.get(IF_MODIFIED_SINCE).and_then(parse_http_date),
            last_modified,
        ) {
            if lm <= since {
                return Precondition::NotModified;
            }
        }
    }
    Precondition::Proceed
}

/// Whether the request carries any precondition header.
pub fn is_conditional(request: &HeaderMap) -> bool {
    [
        IF_MATCH,
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_UNMODIFIED_SINCE,
    ]
    .iter()
    .any(|h| request.contains_key(h))
}

/// Removes the precondition headers (the page cache evaluates them itself against the full
/// response, so that the inner service answers with something storable).
pub(crate) fn strip_conditions(request: &mut HeaderMap) {
    for h in [
        IF_MATCH,
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_UNMODIFIED_SINCE,
    ] {
        request.remove(h);
    }
}

/// Whether `etag` matches the entity-tag list `list` (`*` matches any existing tag). Strong
/// comparison refuses weak tags.
fn matches_list(list: &str, etag: Option<&str>, strong: bool) -> bool {
    let list = list.trim();
    if list == "*" {
        return etag.is_some() || !strong;
    }
    let Some(etag) = etag else { return false };
    let (etag_weak, etag_opaque) = split_weak(etag.trim());
    if strong && etag_weak {
        return false;
    }
    list.split(',').map(str::trim).any(|candidate| {
        let (weak, opaque) = split_weak(candidate);
        !(strong && weak) && opaque == etag_opaque
    })
}

fn split_weak(tag: &str) -> (bool, &str) {
    match tag.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, tag),
    }
}

/// A strong `ETag` for a body: a quoted SHA-256 prefix (128 bits, ample against collisions
/// between versions of one resource).
pub fn etag_for(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let mut tag = String::with_capacity(34);
    tag.push('"');
    for b in &digest[..16] {
        tag.push_str(&format!("{b:02x}"));
    }
    tag.push('"');
    HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// Turns `response` into a 304 or 412 as `outcome` says (headers kept, body dropped).
pub(crate) fn apply<B>(outcome: Precondition, response: &mut Response<CacheBody<B>>) {
    let status = match outcome {
        Precondition::Proceed => return,
        Precondition::NotModified => StatusCode::NOT_MODIFIED,
        Precondition::Failed => StatusCode::PRECONDITION_FAILED,
    };
    *response.status_mut() = status;
    *response.body_mut() = CacheBody::empty();
    let headers = response.headers_mut();
    headers.remove(CONTENT_LENGTH);
    if status == StatusCode::PRECONDITION_FAILED {
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
}

/// The largest body [`ConditionalGetLayer`] hashes by default (larger ones pass without an
/// `ETag`, and are not buffered).
pub const DEFAULT_ETAG_MAX_BODY: usize = 1 << 20;

/// Django's `ConditionalGetMiddleware` as a layer: on GET and HEAD, a 200 response without
/// `ETag` gets one from a hash of its body (unless `Cache-Control: no-store`), then
/// `If-None-Match`/`If-Modified-Since` give 304 and failed `If-Match`/`If-Unmodified-Since`
/// give 412. Other methods pass through.
///
/// Put it *inside* the page-cache layer so the hash is computed once, on a miss, and stored
/// with the page.
#[derive(Debug, Clone, Copy)]
pub struct ConditionalGetLayer {
    max_body: usize,
}

impl Default for ConditionalGetLayer {
    fn default() -> Self {
        ConditionalGetLayer {
            max_body: DEFAULT_ETAG_MAX_BODY,
        }
    }
}

impl ConditionalGetLayer {
    /// The layer with the default body limit for hashing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bodies larger than this are streamed through without an `ETag`.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }
}

impl<S> Layer<S> for ConditionalGetLayer {
    type Service = ConditionalGet<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConditionalGet {
            inner,
            max_body: self.max_body,
        }
    }
}

/// The service built by [`ConditionalGetLayer`].
#[derive(Clone)]
pub struct ConditionalGet<S> {
    inner: S,
    max_body: usize,
}

impl<S: fmt::Debug> fmt::Debug for ConditionalGet<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionalGet")
            .field("inner", &self.inner)
            .field("max_body", &self.max_body)
            .finish()
    }
}

impl<S, B, ResBody> Service<Request<B>> for ConditionalGet<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Send,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: PageBody,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = req.method().clone();
        let applies = method == Method::GET || method == Method::HEAD;
        let request_headers = if applies {
            req.headers().clone()
        } else {
            HeaderMap::new()
        };
        let max_body = self.max_body;
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await?;
            if !applies || response.status() != StatusCode::OK {
                return Ok(response.map(CacheBody::inner));
            }
            let (mut parts, body) = response.into_parts();
            let needs_etag = !parts.headers.contains_key(ETAG)
                && !CacheControl::from_headers(&parts.headers).has("no-store");
            let body = if needs_etag {
                match buffer(body, max_body).await {
                    Buffered::Complete(data) => {
                        parts.headers.insert(ETAG, etag_for(&data));
                        CacheBody::full(data)
                    }
                    other => other.into_body(),
                }
            } else {
                CacheBody::inner(body)
            };
            let mut response = Response::from_parts(parts, body);
            let outcome = evaluate(&method, &request_headers, response.headers());
            apply(outcome, &mut response);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn rfc_order_and_comparisons() {
        let resp = h(&[
            ("etag", "W/\"a\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        let get = Method::GET;
        assert_eq!(
            evaluate(&get, &h(&[("if-none-match", "\"a\"")]), &resp),
            Precondition::NotModified
        );
        assert_eq!(
            evaluate(&get, &h(&[("if-none-match", "\"b\", W/\"a\"")]), &resp),
            Precondition::NotModified
        );
        assert_eq!(
            evaluate(&get, &h(&[("if-none-match", "\"b\"")]), &resp),
            Precondition::Proceed
        );
        // If-Match uses strong comparison: a weak tag never matches.
        assert_eq!(
            evaluate(&get, &h(&[("if-match", "W/\"a\"")]), &resp),
            Precondition::Failed
        );
        assert_eq!(
            evaluate(&get, &h(&[("if-match", "*")]), &resp),
            Precondition::Proceed
        );
        assert_eq!(
            evaluate(
                &get,
                &h(&[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")]),
                &resp
            ),
            Precondition::NotModified
        );
        assert_eq!(
            evaluate(
                &get,
                &h(&[("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT")]),
                &resp
            ),
            Precondition::Proceed
        );
        assert_eq!(
            evaluate(
                &get,
                &h(&[("if-unmodified-since", "Sat, 05 Nov 1994 08:49:37 GMT")]),
                &resp
            ),
            Precondition::Failed
        );
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            evaluate(
                &get,
                &h(&[
                    ("if-none-match", "\"zz\""),
                    ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")
                ]),
                &resp
            ),
            Precondition::Proceed
        );
        assert_eq!(
            evaluate(&Method::PUT, &h(&[("if-none-match", "*")]), &resp),
            Precondition::Failed
        );
    }
}
