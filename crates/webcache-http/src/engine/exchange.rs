//! The exchange with the inner service on a miss: the request is prepared (GET for HEAD,
//! preconditions stripped, a stale page's validators added), the answer decided on (a 304
//! merged into the stale page, the session mark, the policy) and its body buffered, teed or
//! streamed through. What it came to is published to the requests that waited.
//!
//! # HEAD (RFC 9111 §4.3.5)
//!
//! - **Nothing stored:** a HEAD is asked as GET, so that the page is stored and the next GET
//!   is a hit; the client gets the GET's headers without its body. Asking HEAD would leave
//!   nothing to store (a HEAD answer is never stored as a page: it has no body).
//! - **A stored page that cannot answer as it is** (stale and to be revalidated, or the request
//!   asks for a revalidation: `no-cache`, `max-age=0`) and that has a validator: the HEAD is
//!   forwarded as HEAD, made conditional with the page's validators. A 304 updates the page as
//!   for a GET (§4.3.4). A 200 whose validators (`ETag` strongly, `Last-Modified`) match the
//!   page's and whose `Content-Length`, if any, is the page's length updates the page's
//!   headers and freshness by the same merge as a 304 (§3.2, [`PageCacheEngine::update_stored`]);
//!   any other 200 makes the page invalid (it is deleted: the next GET asks the origin). The
//!   page updated is the one stored variant that the request selects: under `Vary`, the other
//!   variants could not have been chosen for it (§4.1). The client gets the origin's HEAD answer.
//! - **A stored page without a validator**: a HEAD answer could never be matched with it
//!   ([`conditional::head_describes_stored`]), so the HEAD is asked as GET and refreshes it.
//! - A background refresh of a page served stale (stale-while-revalidate, grace) asks GET
//!   whatever the method of the request that started it: it is there to store the page.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{
    CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, RANGE,
    SET_COOKIE,
};
use http::response::Parts;
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use webcache_core::backend::Leader;

use super::respond::{self, Outcome};
use super::{InnerService, PageCacheEngine, Published, Reply, Stale};
use crate::body::{buffer, Buffered, CacheBody, PageBody};
use crate::conditional;
use crate::headers::{patch_vary_headers, vary_names, CacheControl};
use crate::hop::is_hop_by_hop;
use crate::key;
use crate::policy::{Decision, Exchange};
use crate::session_mark::SessionMark;
use crate::stored::StoredResponse;
use crate::tags;

/// The largest gateway error (502/503/504) that is repeated to the requests that waited for
/// the one that got it, rather than each of them asking a failing origin again.
const SHARED_ERROR_MAX: u64 = 64 * 1024;

impl PageCacheEngine {
    /// Calls the inner service for a page, decides, stores (after answering), and tells the
    /// requests that waited what came of it (through `leader`, when this request leads).
    pub(super) async fn fetch<S, B, R>(
        &self,
        mut inner: S,
        mut req: Request<B>,
        primary: &str,
        flight_key: &str,
        stale: Option<Stale>,
        leader: Option<Leader<Published>>,
    ) -> Reply<R, S::Error>
    where
        S: InnerService<B, R>,
        B: Send,
        R: PageBody,
    {
        let method = req.method().clone();
        let request_headers = req.headers().clone();
        let session = req.extensions().get::<SessionMark>().cloned();
        let asked_head = prepare(&mut req, stale.as_ref().map(|s| &s.page));
        // Before the inner service reads the data the page is built from (see `PageStore::pin`).
        let pinned = self.store.pin().await;
        let request_time = SystemTime::now();
        // An error of the inner service drops `leader`: the waiters ask for themselves (unless
        // a stale page answers instead).
        let response = match inner.call(req).await {
            Ok(response) => response,
            Err(error) => {
                return match stale {
                    Some(stale) if stale.if_error => {
                        tracing::warn!(
                            key = primary,
                            "the inner service failed; the stale page answers (stale-if-error)"
                        );
                        Ok(self.stale_on_error(stale.page, &method, &request_headers, leader))
                    }
                    _ => Err(error),
                };
            }
        };
        let response_time = SystemTime::now();
        let (mut parts, body) = response.into_parts();
        let times = (request_time, response_time);
        let tags = tags::take(
            &mut parts.headers,
            &mut parts.extensions,
            self.settings.keep_tag_headers,
        );

        let stale = match stale {
            Some(stale)
                if parts.status == StatusCode::NOT_MODIFIED && stale.page.has_validator() =>
            {
                let writer = self
                    .update_writer(primary, &stale.page, pinned, tags.unwrap_or_default())
                    .await;
                return Ok(self
                    .revalidated(
                        stale.page,
                        &parts,
                        &method,
                        &request_headers,
                        primary,
                        times,
                        leader,
                        writer,
                    )
                    .await);
            }
            // A 5xx (the proxy's 502 and 504 for a refused or timed-out origin included).
            Some(stale) if stale.if_error && parts.status.is_server_error() => {
                tracing::warn!(
                    key = primary,
                    status = parts.status.as_u16(),
                    "the inner service failed; the stale page answers (stale-if-error)"
                );
                return Ok(self.stale_on_error(stale.page, &method, &request_headers, leader));
            }
            Some(stale) if asked_head => {
                let update = (parts.status == StatusCode::OK
                    && conditional::head_describes_stored(
                        &parts.headers,
                        &stale.page.headers,
                        stale.page.body.len(),
                    ))
                .then_some((pinned, tags.unwrap_or_default()));
                let page = stale.page;
                return Ok(self
                    .head_answered(
                        page,
                        parts,
                        body,
                        update,
                        &request_headers,
                        primary,
                        times,
                        leader,
                    )
                    .await);
            }
            other => other,
        };

        // A page that read the session belongs to its user (see `SessionMark`).
        if let Some(mark) = &session {
            if mark.varies_on_cookie() {
                patch_vary_headers(&mut parts.headers, &["Cookie"]);
            }
            if mark.is_personal() {
                tracing::debug!(key = primary, "response not stored: it read the session");
                return Ok(self
                    .not_stored(parts, body, &method, &request_headers, flight_key, leader)
                    .await);
            }
        }
        let decision = self.settings.policy.decide(&mut Exchange {
            request: &request_headers,
            // Statuses the layer stores as 200s under the Django policy are decided as 200s.
            status: if matches!(self.settings.policy, crate::Policy::Django)
                && self.settings.keys.stores_status(parts.status)
            {
                StatusCode::OK
            } else {
                parts.status
            },
            response: &mut parts.headers,
            layer_timeout: self.settings.timeout,
            default_ttl: self.settings.default_ttl,
            request_time,
            response_time,
            grace: self.settings.grace,
        });
        let (fresh_for, initial_age, keep) = match decision {
            Decision::Store {
                fresh_for,
                initial_age,
                keep,
            } => (fresh_for, initial_age, keep),
            Decision::Skip(reason) => {
                crate::metrics::not_stored(&reason);
                tracing::debug!(key = primary, reason = %reason, "response not stored");
                return Ok(self
                    .not_stored(parts, body, &method, &request_headers, flight_key, leader)
                    .await);
            }
        };
        if let Some(store) = &self.settings.keys.store {
            if !store(parts.status, &parts.headers) {
                tracing::debug!(
                    key = primary,
                    "response not stored: the layer's store_if refused it"
                );
                return Ok(self
                    .not_stored(parts, body, &method, &request_headers, flight_key, leader)
                    .await);
            }
        }
        let writer = match tags.map(|tags| self.store.writer(pinned, tags)) {
            Ok(Some(writer)) => writer,
            Ok(None) => {
                tracing::debug!(
                    key = primary,
                    "response not stored: the first tagged page of this layer (its tags were not pinned before the handler ran; later ones are)"
                );
                return Ok(self
                    .not_stored(parts, body, &method, &request_headers, flight_key, leader)
                    .await);
            }
            Err(why) => {
                tracing::debug!(key = primary, "response not stored: its tags: {why}");
                return Ok(self
                    .not_stored(parts, body, &method, &request_headers, flight_key, leader)
                    .await);
            }
        };
        let Some(mut vary) = vary_header_names(&parts.headers) else {
            tracing::debug!(
                key = primary,
                "response not stored: a Vary name does not parse"
            );
            return Ok(self
                .not_stored(parts, body, &method, &request_headers, flight_key, leader)
                .await);
        };
        // A ranged answer is stored under the URL's ranged answers, one per `Range`.
        if self.respond.ranges && method == Method::GET && request_headers.contains_key(RANGE) {
            vary.push(RANGE);
            vary.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            vary.dedup();
        }
        let limit = self.settings.max_body;
        // A body's exact size hint counts as a declared length: axum's bodies carry one, and
        // hyper writes it as `Content-Length` only after the layer has answered.
        let declared = declared_length(&parts.headers).or_else(|| body.size_hint().exact());
        if declared.is_some_and(|n| n > limit as u64) {
            tracing::debug!(
                key = primary,
                "response body larger than max_body; streamed through"
            );
            return Ok(self
                .not_stored(parts, body, &method, &request_headers, flight_key, leader)
                .await);
        }
        if declared.is_none() && is_event_stream(&parts.headers) {
            tracing::debug!(
                key = primary,
                "an event stream is passed through, not stored"
            );
            return Ok(self
                .not_stored(parts, body, &method, &request_headers, flight_key, leader)
                .await);
        }
        let values = key::vary_values(&vary, &request_headers);
        let mut headers = parts.headers.clone();
        retain_stored(&mut headers, self.settings.header.as_ref());
        let page = StoredResponse {
            status: parts.status,
            headers,
            body: bytes::Bytes::new(),
            stored_at: response_time,
            fresh_for,
            initial_age,
            vary: vary.into_iter().zip(values).collect(),
        };

        if declared.is_none() && method != Method::HEAD {
            // Unknown length: stream it to the client at once and store the copy when it ends.
            let (body, copy) = CacheBody::tee(body, limit);
            let engine = self.clone();
            let primary = primary.to_owned();
            let flight_key = flight_key.to_owned();
            tokio::spawn(async move {
                match copy.await {
                    Ok(data) => {
                        let page = Arc::new(StoredResponse { body: data, ..page });
                        engine.stored(&primary, &flight_key, page, keep, leader, writer);
                    }
                    Err(_) => {
                        engine.uncacheable.remember(&flight_key);
                        if let Some(leader) = leader {
                            leader.publish(Published::NotStorable);
                        }
                    }
                }
            });
            let response = Response::from_parts(parts, body);
            return Ok(self.respond.pass(response, &method, &request_headers));
        }

        match buffer(body, limit).await {
            Buffered::Complete(data) => {
                let page = StoredResponse { body: data, ..page };
                self.stored(
                    primary,
                    flight_key,
                    Arc::new(page.clone()),
                    keep,
                    leader,
                    writer,
                );
                Ok(self.respond.page(
                    page,
                    &method,
                    &request_headers,
                    response_time,
                    Outcome::Miss,
                ))
            }
            Buffered::Failed(_) if stale.as_ref().is_some_and(|s| s.if_error) => {
                tracing::warn!(
                    key = primary,
                    "the inner service's body broke off; the stale page answers (stale-if-error)"
                );
                let page = stale.map(|s| s.page).unwrap_or(page);
                Ok(self.stale_on_error(page, &method, &request_headers, leader))
            }
            Buffered::Failed(error) => {
                // Nothing was sent yet: a 502 (504 for a timeout) in words, never an empty reply
                // or a page that looks complete. The waiters ask for themselves.
                let (status, message) = crate::gateway::broken_body(error.as_ref());
                tracing::warn!(key = primary, "{}", message.trim_end());
                drop(leader);
                Ok(self
                    .respond
                    .mark(respond::text(status, message), Outcome::Miss))
            }
            other => {
                tracing::debug!(
                    key = primary,
                    "response body too large or not storable; streamed through"
                );
                self.uncacheable.remember(flight_key);
                if let Some(leader) = leader {
                    leader.publish(Published::NotStorable);
                }
                let response = Response::from_parts(parts, other.into_body());
                Ok(self.respond.pass(response, &method, &request_headers))
            }
        }
    }

    /// A page was stored: in the background, and handed to the requests that waited.
    fn stored(
        &self,
        primary: &str,
        flight_key: &str,
        page: Arc<StoredResponse>,
        keep: Duration,
        leader: Option<Leader<Published>>,
        writer: webcache_core::Cache,
    ) {
        self.uncacheable.forget(flight_key);
        self.store.store_later(primary, page.clone(), keep, writer);
        if let Some(leader) = leader {
            leader.publish(Published::Page(page));
        }
    }

    /// The inner service failed and a stale page within its stale-if-error window (or the
    /// grace) answers instead; the requests that waited are told, and answer with it too if
    /// their own window allows.
    fn stale_on_error<R>(
        &self,
        page: StoredResponse,
        method: &Method,
        request_headers: &HeaderMap,
        leader: Option<Leader<Published>>,
    ) -> Response<CacheBody<R>> {
        if let Some(leader) = leader {
            leader.publish(Published::Stale(Arc::new(page.clone())));
        }
        self.respond.page(
            page,
            method,
            request_headers,
            SystemTime::now(),
            Outcome::Stale,
        )
    }

    /// A 304 answered the revalidation of a stale page: the page is updated with the 304's
    /// headers (RFC 9111 §4.3.4) and answers.
    #[allow(clippy::too_many_arguments)]
    async fn revalidated<R>(
        &self,
        page: StoredResponse,
        parts: &Parts,
        method: &Method,
        request_headers: &HeaderMap,
        primary: &str,
        times: (SystemTime, SystemTime),
        leader: Option<Leader<Published>>,
        writer: webcache_core::Cache,
    ) -> Response<CacheBody<R>> {
        let page = self
            .update_stored(
                page,
                &parts.headers,
                request_headers,
                primary,
                times,
                leader,
                writer,
            )
            .await;
        self.respond
            .page(page, method, request_headers, times.1, Outcome::Hit)
    }

    /// A HEAD asked as HEAD for a stored page that could not answer as it was has its 200 or
    /// other answer (RFC 9111 §4.3.5; the 304 and stale-if-error cases are the GET's). With
    /// `update` (the answer describes the page: [`conditional::head_describes_stored`]; the
    /// pinned handle and the answer's tags), the page's headers are updated as for a 304;
    /// a 200 that does not describe it makes it invalid; any other status leaves it as it
    /// is. The client gets the origin's answer, never stored as a page.
    #[allow(clippy::too_many_arguments)]
    async fn head_answered<R: PageBody>(
        &self,
        page: StoredResponse,
        parts: Parts,
        body: R,
        update: Option<(Option<webcache_core::Cache>, Vec<String>)>,
        request_headers: &HeaderMap,
        primary: &str,
        times: (SystemTime, SystemTime),
        leader: Option<Leader<Published>>,
    ) -> Response<CacheBody<R>> {
        if let Some((pinned, tags)) = update {
            let writer = self.update_writer(primary, &page, pinned, tags).await;
            self.update_stored(
                page,
                &parts.headers,
                request_headers,
                primary,
                times,
                leader,
                writer,
            )
            .await;
        } else {
            // The requests that waited ask for themselves.
            drop(leader);
            if parts.status == StatusCode::OK {
                tracing::debug!(
                    key = primary,
                    "a HEAD answer does not describe the stored page: the page is dropped"
                );
                self.store.drop_page(primary, &page).await;
            }
        }
        let response = Response::from_parts(parts, CacheBody::inner(body));
        self.respond.pass(response, &Method::HEAD, request_headers)
    }

    /// The handle an updated page (after a 304 or a HEAD answer) is written through: the page
    /// keeps the tags it was stored with, and gains any the answer names. The answer says the
    /// data did not change: without a pin, the versions of now do.
    async fn update_writer(
        &self,
        primary: &str,
        page: &StoredResponse,
        pinned: Option<webcache_core::Cache>,
        tags: Vec<String>,
    ) -> webcache_core::Cache {
        let mut kept = self.store.stored_tags(primary, page).await;
        kept.extend(tags);
        let unpinned = self.store.cache.tagged(&kept);
        self.store.writer(pinned, kept).unwrap_or(unpinned)
    }

    /// Updates a stored page with the header fields of an answer that says it is still the
    /// same (a 304, §4.3.4, or a HEAD answer, §4.3.5): each field the answer carries replaces
    /// the stored ones of its name (§3.2), and the freshness is decided anew from the merged
    /// headers; the page is stored anew (and handed to the requests that waited), or dropped
    /// if no longer storable. Returns the page as updated.
    #[allow(clippy::too_many_arguments)]
    async fn update_stored(
        &self,
        mut page: StoredResponse,
        answer: &HeaderMap,
        request_headers: &HeaderMap,
        primary: &str,
        (request_time, response_time): (SystemTime, SystemTime),
        leader: Option<Leader<Published>>,
        writer: webcache_core::Cache,
    ) -> StoredResponse {
        let diagnostic = self.settings.header.as_ref();
        for name in answer.keys() {
            if is_stored_header(name, diagnostic) {
                page.headers.remove(name);
            }
        }
        for (name, value) in answer {
            if is_stored_header(name, diagnostic) {
                page.headers.append(name.clone(), value.clone());
            }
        }
        let decision = self.settings.policy.decide(&mut Exchange {
            request: request_headers,
            status: page.status,
            response: &mut page.headers,
            layer_timeout: self.settings.timeout,
            default_ttl: self.settings.default_ttl,
            request_time,
            response_time,
            grace: self.settings.grace,
        });
        page.stored_at = response_time;
        match decision {
            Decision::Store {
                fresh_for,
                initial_age,
                keep,
            } => {
                page.fresh_for = fresh_for;
                page.initial_age = initial_age;
                let flight_key = primary.to_owned();
                self.stored(
                    primary,
                    &flight_key,
                    Arc::new(page.clone()),
                    keep,
                    leader,
                    writer,
                );
            }
            Decision::Skip(reason) => {
                crate::metrics::not_stored(&reason);
                tracing::debug!(key = primary, reason = %reason, "revalidated page is no longer stored");
                page.fresh_for = Duration::ZERO;
                page.initial_age = Duration::ZERO;
                // The page's own entry (its variant's, when the URL's pages vary), not the
                // URL's vary list, which the other variants are found by.
                self.store.drop_page(primary, &page).await;
            }
        }
        page
    }

    /// An answer that is not stored: streamed through at once. The requests that waited ask
    /// for themselves (and this URL skips the single flight for a while, so such requests are
    /// never serialised), except after a small gateway error, which they repeat.
    async fn not_stored<R: PageBody>(
        &self,
        parts: Parts,
        body: R,
        method: &Method,
        request_headers: &HeaderMap,
        flight_key: &str,
        leader: Option<Leader<Published>>,
    ) -> Response<CacheBody<R>> {
        if let Some(leader) = leader {
            let length = declared_length(&parts.headers).or_else(|| body.size_hint().exact());
            if is_shareable_error(&parts, length) {
                match buffer(body, SHARED_ERROR_MAX as usize).await {
                    Buffered::Complete(data) => {
                        let mut headers = parts.headers.clone();
                        retain_stored(&mut headers, self.settings.header.as_ref());
                        let answer = StoredResponse {
                            status: parts.status,
                            headers,
                            body: data.clone(),
                            stored_at: SystemTime::now(),
                            fresh_for: Duration::ZERO,
                            initial_age: Duration::ZERO,
                            vary: Vec::new(),
                        };
                        leader.publish(Published::Error(Arc::new(answer)));
                        let response = Response::from_parts(parts, CacheBody::full(data));
                        return self.respond.pass(response, method, request_headers);
                    }
                    // Trailers or a failed body: the waiters ask for themselves.
                    other => {
                        drop(leader);
                        let response = Response::from_parts(parts, other.into_body());
                        return self.respond.pass(response, method, request_headers);
                    }
                }
            }
            leader.publish(Published::NotStorable);
        }
        self.uncacheable.remember(flight_key);
        let response = Response::from_parts(parts, CacheBody::inner(body));
        self.respond.pass(response, method, request_headers)
    }
}

/// The request as the inner service gets it on a miss: the stored page must be the full GET
/// answer, so HEAD is asked as GET and preconditions are evaluated here against the full
/// response; a stale page's validators turn it into a revalidation. A HEAD for a stale page
/// with a validator stays a HEAD (see the module docs); returns whether it did.
fn prepare<B>(req: &mut Request<B>, stale: Option<&StoredResponse>) -> bool {
    let head = req.method() == Method::HEAD && stale.is_some_and(StoredResponse::has_validator);
    if head {
        // HEAD has no ranges (RFC 9110 §14.2).
        req.headers_mut().remove(RANGE);
    } else {
        ask_as_get(req);
    }
    conditional::strip_conditions(req.headers_mut());
    if let Some(page) = stale {
        if let Some(etag) = page.headers.get(ETAG) {
            req.headers_mut().insert(IF_NONE_MATCH, etag.clone());
        }
        if let Some(lm) = page.headers.get(LAST_MODIFIED) {
            req.headers_mut().insert(IF_MODIFIED_SINCE, lm.clone());
        }
    }
    head
}

/// Makes a HEAD (or GET) request ask for the complete GET answer, the one a page is stored
/// from: HEAD has no ranges (RFC 9110 §14.2), so a HEAD's `Range` goes too.
pub(super) fn ask_as_get<B>(req: &mut Request<B>) {
    if req.method() == Method::HEAD {
        req.headers_mut().remove(RANGE);
    }
    *req.method_mut() = Method::GET;
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// `text/event-stream`: a stream that never ends by design, passed through as it comes.
fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// A gateway error (502, 503, 504) small enough, and not personal, that the requests waiting
/// for the same page may get it too.
fn is_shareable_error(parts: &Parts, length: Option<u64>) -> bool {
    matches!(
        parts.status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    ) && !parts.headers.contains_key(SET_COOKIE)
        && CacheControl::from_headers(&parts.headers).is_ok_and(|cc| !cc.has("private"))
        && length.is_some_and(|n| n <= SHARED_ERROR_MAX)
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
    !(is_hop_by_hop(name)
        || name == CONTENT_LENGTH
        || name == http::header::AGE
        || diagnostic == Some(name))
}

fn retain_stored(headers: &mut HeaderMap, diagnostic: Option<&HeaderName>) {
    let drop: Vec<HeaderName> = headers
        .keys()
        .filter(|n| !is_stored_header(n, diagnostic))
        .cloned()
        .collect();
    for name in drop {
        headers.remove(name);
    }
}
