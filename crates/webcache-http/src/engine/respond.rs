//! Responses the page cache builds: from a stored page, a passed-through answer on its way
//! out, and the answers it gives itself (400 for a refused host, 500 for a bug).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{AGE, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

use super::range::{self, RangeAnswer};
use crate::body::CacheBody;
use crate::conditional;
use crate::host::HostRefusal;
use crate::stored::StoredResponse;

/// The value of the diagnostic header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Answered from a stored page (also a page a concurrent request just stored, and a stale
    /// page revalidated with a 304).
    Hit,
    /// The inner service answered.
    Miss,
    /// Answered from a stored page past its freshness, within its stale window: at once while
    /// a refresh runs in the background, or because the inner service failed.
    Stale,
    /// The cache did not handle the request (unsafe method, refused host, `no-store` request).
    Bypass,
}

impl Outcome {
    fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Stale => "STALE",
            Outcome::Bypass => "BYPASS",
        })
    }
}

/// Builds responses with one layer's diagnostic header.
#[derive(Debug, Clone)]
pub(crate) struct Responder {
    pub(crate) header: Option<HeaderName>,
    /// Whether a GET with `Range` on a stored complete page is answered with that range
    /// (shared-cache policy; see [`range`]).
    pub(crate) ranges: bool,
    /// The targeted cache-control fields (RFC 9213) this cache obeys: never passed on.
    pub(crate) targeted: Arc<[HeaderName]>,
}

impl Responder {
    /// A response built from a page: `Age`, `Content-Length`, preconditions, HEAD, and a
    /// single byte range of a complete page when the request asks for one.
    pub(crate) fn page<R>(
        &self,
        page: StoredResponse,
        method: &Method,
        request: &HeaderMap,
        now: SystemTime,
        outcome: Outcome,
    ) -> Response<CacheBody<R>> {
        let age = page.age(now);
        let ranged = (self.ranges
            && page.status == StatusCode::OK
            && *method == Method::GET
            && request.contains_key(http::header::RANGE))
        .then(|| range::answer(request, &page.headers, &page.body))
        .flatten();
        let body_len = page.body.len();
        let body = if *method == Method::HEAD {
            CacheBody::empty()
        } else {
            CacheBody::full(page.body)
        };
        let mut response = Response::new(body);
        *response.status_mut() = page.status;
        *response.headers_mut() = page.headers;
        if !states_length(response.headers(), body_len) {
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(body_len));
        }
        if matches!(outcome, Outcome::Hit | Outcome::Stale) || age >= Duration::from_secs(1) {
            response.headers_mut().insert(AGE, age_value(age.as_secs()));
        }
        if page.status == StatusCode::OK {
            let precondition = conditional::evaluate(method, request, response.headers());
            conditional::apply(precondition, &mut response);
        }
        // Preconditions first (RFC 9110 §13.2.2): a 304 or 412 is not narrowed to a range.
        if response.status() == StatusCode::OK {
            if let Some(answer) = ranged {
                let (status, body, length, content_range) = match answer {
                    RangeAnswer::Partial(part, content_range) => {
                        let length = part.len();
                        (
                            StatusCode::PARTIAL_CONTENT,
                            CacheBody::full(part),
                            length,
                            content_range,
                        )
                    }
                    RangeAnswer::Unsatisfiable(content_range) => (
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        CacheBody::empty(),
                        0,
                        content_range,
                    ),
                };
                *response.status_mut() = status;
                *response.body_mut() = body;
                let headers = response.headers_mut();
                headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
                headers.insert(CONTENT_RANGE, content_range);
            }
        }
        self.mark(response, outcome)
    }

    /// A response that was not stored, on its way out: preconditions, HEAD, `MISS`.
    pub(crate) fn pass<R>(
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

    /// Sets the diagnostic header, and removes the targeted cache-control fields that were
    /// meant for this cache only.
    pub(crate) fn mark<R>(&self, mut response: Response<R>, outcome: Outcome) -> Response<R> {
        for name in self.targeted.iter() {
            response.headers_mut().remove(name);
        }
        crate::metrics::outcome(outcome);
        if let Some(name) = &self.header {
            response.headers_mut().insert(name.clone(), outcome.value());
        }
        response
    }

    /// 400 for a request whose host is refused: nothing is looked up, stored or forwarded.
    pub(crate) fn refuse<R>(&self, refusal: HostRefusal) -> Response<CacheBody<R>> {
        let response = text(StatusCode::BAD_REQUEST, refusal.message());
        self.mark(response, Outcome::Bypass)
    }
}

/// Whether `headers` state exactly one `Content-Length`, of `length` written as plain digits
/// (a page stored with its length: nothing to format or parse on a hit). Compared as text: a
/// sign, a leading zero or a space is not the canonical length, and is replaced by it.
fn states_length(headers: &HeaderMap, length: usize) -> bool {
    let mut stated = headers.get_all(CONTENT_LENGTH).iter();
    match (stated.next(), stated.next()) {
        (Some(value), None) => value.as_bytes() == itoa::Buffer::new().format(length).as_bytes(),
        _ => false,
    }
}

/// The most seconds of `Age` answered from a table made once; older pages format theirs.
const AGES: u64 = 4096;

/// The `Age` value for `seconds`: from a table shared by every hit for the first [`AGES`]
/// seconds of a page's life (a hit then formats and allocates nothing for it).
fn age_value(seconds: u64) -> HeaderValue {
    static TABLE: std::sync::LazyLock<Vec<HeaderValue>> = std::sync::LazyLock::new(|| {
        // One buffer for every value, kept for the life of the process: each value is a
        // slice of it, which a response clones without touching a reference count.
        let text: &'static str = Box::leak(
            (0..AGES)
                .map(|n| n.to_string())
                .collect::<String>()
                .into_boxed_str(),
        );
        let mut at = 0;
        (0..AGES)
            .map(|n| {
                let len = n.to_string().len();
                let digits = bytes::Bytes::from_static(&text.as_bytes()[at..at + len]);
                at += len;
                HeaderValue::from_maybe_shared(digits).unwrap_or_else(|_| HeaderValue::from(n))
            })
            .collect()
    });
    usize::try_from(seconds)
        .ok()
        .and_then(|i| TABLE.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(seconds))
}

/// A plain-text answer of the layer's own.
pub(crate) fn text<R>(
    status: StatusCode,
    message: impl Into<bytes::Bytes>,
) -> Response<CacheBody<R>> {
    let message = message.into();
    let length = message.len();
    let mut response = Response::new(CacheBody::full(message));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// The answer when the page cache itself failed (a bug): a 500 in words, never an empty reply.
pub(crate) fn internal_error<R>() -> Response<CacheBody<R>> {
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error in the page cache; the error is logged\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_values_from_the_table_are_the_formatted_ones() {
        for seconds in [
            0,
            1,
            9,
            10,
            99,
            100,
            1234,
            AGES - 1,
            AGES,
            AGES + 1,
            u64::MAX,
        ] {
            assert_eq!(age_value(seconds), HeaderValue::from(seconds), "{seconds}");
        }
    }

    #[test]
    fn a_length_is_stated_only_by_one_matching_field() {
        let mut headers = HeaderMap::new();
        assert!(!states_length(&headers, 5));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(states_length(&headers, 5));
        assert!(!states_length(&headers, 6));
        headers.append(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(
            !states_length(&headers, 5),
            "two fields are replaced by one"
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("+5"));
        assert!(!states_length(&headers, 5), "a sign is not a length");
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("05"));
        assert!(!states_length(&headers, 5), "nor a leading zero");
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("1024"));
        assert!(states_length(&headers, 1024));
    }
}
