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
    let etag = response.get(ETAG).map(HeaderValue::as_bytes);
    let last_modified = response.get(LAST_MODIFIED).and_then(parse_http_date);
    let safe = method == Method::GET || method == Method::HEAD;

    if let Some(if_match) = request.get(IF_MATCH) {
        // A list that does not parse cannot be shown to match: the condition fails.
        if matches_list(if_match.as_bytes(), etag, true) != Some(true) {
            return Precondition::Failed;
        }
    } else if let Some(since) = request.get(IF_UNMODIFIED_SINCE).and_then(parse_http_date) {
        // As Django: without a Last-Modified the condition cannot be shown to hold.
        if last_modified.is_none_or(|lm| lm > since) {
            return Precondition::Failed;
        }
    }
    if let Some(if_none) = request.get(IF_NONE_MATCH) {
        // A list that does not parse matches nothing: the full response is sent (and
        // If-Modified-Since is not consulted, as for any present If-None-Match).
        if matches_list(if_none.as_bytes(), etag, false) == Some(true) {
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

/// Whether `If-Range` (RFC 9110 §13.1.5) holds for the stored `response`: an entity-tag must
/// be strong and equal to the response's strong `ETag`; a date must equal its
/// `Last-Modified` exactly. Anything else (a weak tag, a value that is neither) fails, and the
/// full representation is sent instead of the range.
pub(crate) fn if_range_holds(if_range: &HeaderValue, response: &HeaderMap) -> bool {
    let value = if_range.as_bytes().trim_ascii();
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        let Some(asked) = parse_etag(value) else {
            return false;
        };
        let current = response.get(ETAG).and_then(|e| parse_etag(e.as_bytes()));
        return current.is_some_and(|c| !asked.weak && !c.weak && c.opaque == asked.opaque);
    }
    match (
        parse_http_date(if_range),
        response.get(LAST_MODIFIED).and_then(parse_http_date),
    ) {
        (Some(asked), Some(last_modified)) => asked == last_modified,
        _ => false,
    }
}

/// Whether a 200 answer to a HEAD request describes the stored GET response `stored` (whose
/// body is `stored_len` bytes long), so that its header fields may update it (RFC 9111
/// §4.3.5): every validator the HEAD answer carries matches the stored one (`ETag` compared
/// strongly, `Last-Modified` as a date), and its `Content-Length`, when it has one, is the
/// stored body's length.
///
/// A HEAD answer with no validator at all does not describe the stored body (the RFC's rule
/// would hold vacuously): nothing ties the two, so the stored page is treated as stale, the
/// side of the RFC's SHOULD that costs one request and never serves a changed body.
pub(crate) fn head_describes_stored(
    head: &HeaderMap,
    stored: &HeaderMap,
    stored_len: usize,
) -> bool {
    let etag = head.get(ETAG);
    let last_modified = head.get(LAST_MODIFIED);
    if etag.is_none() && last_modified.is_none() {
        return false;
    }
    if let Some(etag) = etag {
        let same = match (
            parse_etag(etag.as_bytes()),
            stored.get(ETAG).and_then(|e| parse_etag(e.as_bytes())),
        ) {
            (Some(head), Some(stored)) => {
                !head.weak && !stored.weak && head.opaque == stored.opaque
            }
            _ => false,
        };
        if !same {
            return false;
        }
    }
    if let Some(last_modified) = last_modified {
        let same = match (
            parse_http_date(last_modified),
            stored.get(LAST_MODIFIED).and_then(parse_http_date),
        ) {
            (Some(head), Some(stored)) => head == stored,
            _ => false,
        };
        if !same {
            return false;
        }
    }
    match head.get(CONTENT_LENGTH) {
        None => true,
        Some(length) => length
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n == stored_len as u64),
    }
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

/// Whether the representation's `etag` (the raw `ETag` value) passes the entity-tag list
/// `list` (RFC 9110 §13.1.1/§13.1.2): `*` matches when there is an `ETag`, otherwise one of the
/// listed tags must compare equal to it (strongly: both strong and the same; weakly: the same
/// opaque tag). Returns `None` when `list` does not parse.
fn matches_list(list: &[u8], etag: Option<&[u8]>, strong: bool) -> Option<bool> {
    let tags = match parse_etag_list(list)? {
        EtagList::Any => return Some(etag.is_some() || !strong),
        EtagList::Tags(tags) => tags,
    };
    // An ETag that is not an entity-tag cannot be compared with anything.
    let Some(current) = etag.and_then(parse_etag) else {
        return Some(false);
    };
    Some(tags.iter().any(|candidate| {
        candidate.opaque == current.opaque && !(strong && (candidate.weak || current.weak))
    }))
}

/// An entity-tag (RFC 9110 §8.8.3): `W/` when weak, then the opaque tag with its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    opaque: &'a [u8],
}

/// The value of `If-Match` / `If-None-Match`: `*` or a list of entity-tags.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EtagList<'a> {
    Any,
    Tags(Vec<EntityTag<'a>>),
}

/// RFC 9110 §8.8.3 `etagc`: any visible character but `"`, and `obs-text`.
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

/// An entity-tag at the start of `text`, and what follows it. Commas inside the quotes are
/// part of the tag.
fn take_etag(text: &[u8]) -> Option<(EntityTag<'_>, &[u8])> {
    let (weak, quoted) = match text.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let inner = quoted.strip_prefix(b"\"")?;
    let len = inner.iter().position(|b| !is_etagc(*b))?;
    if inner.get(len) != Some(&b'"') {
        return None;
    }
    let (opaque, rest) = quoted.split_at(len + 2);
    Some((EntityTag { weak, opaque }, rest))
}

/// An `ETag` value: one entity-tag, optionally surrounded by whitespace.
fn parse_etag(value: &[u8]) -> Option<EntityTag<'_>> {
    let (tag, rest) = take_etag(value.trim_ascii())?;
    rest.is_empty().then_some(tag)
}

/// `If-Match` / `If-None-Match`: `*`, or a comma-separated list of entity-tags (empty elements
/// and whitespace allowed, RFC 9110 §5.6.1). `None` when it is neither.
fn parse_etag_list(value: &[u8]) -> Option<EtagList<'_>> {
    let trimmed = value.trim_ascii();
    if trimmed == b"*" {
        return Some(EtagList::Any);
    }
    let mut tags = Vec::new();
    let mut rest = trimmed;
    loop {
        let start = rest
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b','))
            .unwrap_or(rest.len());
        rest = &rest[start..];
        if rest.is_empty() {
            break;
        }
        let (tag, after) = take_etag(rest)?;
        tags.push(tag);
        let after = after.trim_ascii_start();
        rest = match after.split_first() {
            None => after,
            Some((b',', more)) => more,
            Some(_) => return None,
        };
    }
    // An empty list is not a valid field value (`1#entity-tag`).
    (!tags.is_empty()).then_some(EtagList::Tags(tags))
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
            // A Cache-Control that does not parse might say no-store: no hash then either.
            let needs_etag = !parts.headers.contains_key(ETAG)
                && CacheControl::from_headers(&parts.headers).is_ok_and(|cc| !cc.has("no-store"));
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

    #[test]
    fn entity_tag_lists_keep_commas_inside_tags() {
        assert_eq!(
            parse_etag_list(b" W/\"a,b\" ,, \"x\"\t"),
            Some(EtagList::Tags(vec![
                EntityTag {
                    weak: true,
                    opaque: b"\"a,b\""
                },
                EntityTag {
                    weak: false,
                    opaque: b"\"x\""
                },
            ]))
        );
        assert_eq!(parse_etag_list(b" * "), Some(EtagList::Any));
        for bad in [
            &b""[..],
            b",",
            b"*, \"a\"",
            b"\"a",
            b"a",
            b"\"a\" \"b\"",
            b"w/\"a\"",
            b"\"a\"b\"",
        ] {
            assert_eq!(
                parse_etag_list(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_etag(b"\"\xe9t\xe9\""),
            Some(EntityTag {
                weak: false,
                opaque: b"\"\xe9t\xe9\""
            })
        );
        let resp = h(&[("etag", "\"a,b\"")]);
        assert_eq!(
            evaluate(
                &Method::GET,
                &h(&[("if-none-match", "\"a\", \"b\"")]),
                &resp
            ),
            Precondition::Proceed
        );
        assert_eq!(
            evaluate(
                &Method::GET,
                &h(&[("if-none-match", "\"x\", \"a,b\"")]),
                &resp
            ),
            Precondition::NotModified
        );
        assert_eq!(
            evaluate(&Method::GET, &h(&[("if-match", "\"a,b\"")]), &resp),
            Precondition::Proceed
        );
        // An ETag that is not an entity-tag matches no list, and `*` still means "one exists".
        let unquoted = h(&[("etag", "abc")]);
        assert_eq!(
            evaluate(&Method::GET, &h(&[("if-none-match", "abc")]), &unquoted),
            Precondition::Proceed
        );
        assert_eq!(
            evaluate(&Method::GET, &h(&[("if-match", "*")]), &unquoted),
            Precondition::Proceed
        );
        // An If-None-Match that does not parse is not a reason to look at If-Modified-Since.
        let resp = h(&[
            ("etag", "\"a\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert_eq!(
            evaluate(
                &Method::GET,
                &h(&[
                    ("if-none-match", "\"a"),
                    ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")
                ]),
                &resp
            ),
            Precondition::Proceed
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::headers::strategies::header_value;
    use proptest::prelude::*;

    fn tag() -> impl Strategy<Value = (bool, String)> {
        (any::<bool>(), "[!#-~]{0,8}")
    }

    fn write(tag: &(bool, String)) -> String {
        format!("{}\"{}\"", if tag.0 { "W/" } else { "" }, tag.1)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes as ETag, If-Match and If-None-Match: an answer, never a panic; what
        /// parses is made of whole quoted tags.
        #[test]
        fn preconditions_never_panic(
            etag in proptest::option::of(header_value()),
            if_match in proptest::option::of(header_value()),
            if_none_match in proptest::option::of(header_value()),
        ) {
            let mut request = HeaderMap::new();
            if let Some(v) = if_match.clone() { request.insert(IF_MATCH, v); }
            if let Some(v) = if_none_match.clone() { request.insert(IF_NONE_MATCH, v); }
            let mut response = HeaderMap::new();
            if let Some(v) = etag { response.insert(ETAG, v); }
            let _ = evaluate(&Method::GET, &request, &response);
            for list in [if_match, if_none_match].into_iter().flatten() {
                if let Some(EtagList::Tags(tags)) = parse_etag_list(list.as_bytes()) {
                    for t in tags {
                        prop_assert!(t.opaque.len() >= 2);
                        prop_assert_eq!(t.opaque[0], b'"');
                        prop_assert_eq!(t.opaque[t.opaque.len() - 1], b'"');
                        prop_assert!(!t.opaque[1..t.opaque.len() - 1].contains(&b'"'));
                    }
                }
            }
        }

        /// Any bytes as If-Range, ETag and Last-Modified: an answer, never a panic; a tag
        /// holds only when both are strong and the same, a date only when it is the
        /// Last-Modified (RFC 9110 §13.1.5).
        #[test]
        fn if_range_holds_only_for_the_same_strong_validator(
            if_range in header_value(),
            etag in proptest::option::of(header_value()),
            asked in tag(),
            current in tag(),
            secs in 0u64..4_000_000_000,
            other in 0u64..4_000_000_000,
        ) {
            let mut response = HeaderMap::new();
            if let Some(v) = etag { response.insert(ETAG, v); }
            let _ = if_range_holds(&if_range, &response);
            let mut response = HeaderMap::new();
            response.insert(ETAG, HeaderValue::from_str(&write(&current)).unwrap());
            let holds = if_range_holds(&HeaderValue::from_str(&write(&asked)).unwrap(), &response);
            prop_assert_eq!(holds, !asked.0 && !current.0 && asked.1 == current.1);
            let date = |s: u64| crate::headers::http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
            response.insert(LAST_MODIFIED, date(secs));
            prop_assert_eq!(if_range_holds(&date(other), &response), other == secs);
        }

        /// Any bytes as a HEAD answer's validators and length: an answer, never a panic; it
        /// describes the stored page exactly when the strong tags, the dates and the length
        /// are the same (RFC 9111 §4.3.5).
        #[test]
        fn a_head_answer_describes_only_the_same_page(
            etag in proptest::option::of(header_value()),
            last_modified in proptest::option::of(header_value()),
            length in proptest::option::of(header_value()),
            head_tag in tag(),
            stored_tag in tag(),
            secs in 0u64..4_000_000_000,
            other in 0u64..4_000_000_000,
            head_len in 0usize..4,
            stored_len in 0usize..4,
        ) {
            let mut head = HeaderMap::new();
            if let Some(v) = etag.clone() { head.insert(ETAG, v); }
            if let Some(v) = last_modified.clone() { head.insert(LAST_MODIFIED, v); }
            if let Some(v) = length { head.insert(CONTENT_LENGTH, v); }
            let mut stored = HeaderMap::new();
            if let Some(v) = etag { stored.insert(ETAG, v); }
            if let Some(v) = last_modified { stored.insert(LAST_MODIFIED, v); }
            let _ = head_describes_stored(&head, &stored, stored_len);

            let date = |s: u64| crate::headers::http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
            let mut head = HeaderMap::new();
            head.insert(ETAG, HeaderValue::from_str(&write(&head_tag)).unwrap());
            head.insert(LAST_MODIFIED, date(secs));
            head.insert(CONTENT_LENGTH, HeaderValue::from(head_len));
            let mut stored = HeaderMap::new();
            stored.insert(ETAG, HeaderValue::from_str(&write(&stored_tag)).unwrap());
            stored.insert(LAST_MODIFIED, date(other));
            let same_tag = !head_tag.0 && !stored_tag.0 && head_tag.1 == stored_tag.1;
            prop_assert_eq!(
                head_describes_stored(&head, &stored, stored_len),
                same_tag && secs == other && head_len == stored_len
            );
            // A validator the HEAD answer does not carry is not compared.
            head.remove(ETAG);
            head.remove(CONTENT_LENGTH);
            prop_assert_eq!(head_describes_stored(&head, &stored, stored_len), secs == other);
            // Without any validator, nothing ties the answer to the stored body.
            head.remove(LAST_MODIFIED);
            prop_assert!(!head_describes_stored(&head, &stored, stored_len));
        }

        /// Lists of tags (commas inside them included) match exactly the tags they hold.
        #[test]
        fn tag_lists_match_exactly_their_tags(
            list in proptest::collection::vec(tag(), 1..5),
            current in tag(),
            sep in "[ \t]{0,2},[ \t]{0,2}",
        ) {
            let text: Vec<String> = list.iter().map(write).collect();
            let text = text.join(&sep);
            let etag = write(&current);
            let weak_match = list.iter().any(|t| t.1 == current.1);
            let strong_match = !current.0 && list.iter().any(|t| !t.0 && t.1 == current.1);
            prop_assert_eq!(matches_list(text.as_bytes(), Some(etag.as_bytes()), false), Some(weak_match));
            prop_assert_eq!(matches_list(text.as_bytes(), Some(etag.as_bytes()), true), Some(strong_match));
        }
    }
}
