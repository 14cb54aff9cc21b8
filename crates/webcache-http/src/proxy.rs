//! The caching reverse proxy: [`Origin`], a tower service that forwards any request to an
//! upstream HTTP server, and [`proxy_router`], the page-cache layer in front of it.
//!
//! What `webcache proxy --upstream URL [--default-ttl N]` serves:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::net::SocketAddr;
//! let cache = webcache::Cache::locmem();
//! // Without --default-ttl: an RFC 9111 shared cache; with it: Django's site-wide rules.
//! let app = webcache::http::proxy_router("http://127.0.0.1:8000", cache, None)?;
//! // TCP_NODELAY, as `webcache proxy` sets it (the crate README's "Serving: turn Nagle off").
//! use axum::serve::ListenerExt as _;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080")
//!     .await?
//!     .tap_io(|tcp| {
//!         let _ = tcp.set_nodelay(true);
//!     });
//! // With the peer's address, so that the origin learns who asked (X-Forwarded-For, Forwarded).
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! # Ok(()) }
//! ```
//!
//! How the proxy treats a hostile origin and what it tells the origin: see [`Origin`].

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use http::header::{CONTENT_TYPE, FORWARDED, HOST};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::{capture_connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use webcache_core::{BoxError, Cache};

use crate::hop::strip_hop_by_hop;
use crate::layer::CachePageLayer;
use crate::policy::Policy;
use crate::service::CachePage;

/// Why a proxy cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The upstream is not an `http://host[:port][/path]` URL.
    #[error("invalid upstream `{upstream}`: {reason}; give it as http://HOST[:PORT][/PATH]")]
    InvalidUpstream {
        /// The upstream as given.
        upstream: String,
        /// What is wrong.
        reason: String,
    },
}

/// A tower service that forwards every request (any method, headers, body) to an upstream
/// HTTP/1.1 server and returns its response unchanged, except hop-by-hop headers and the
/// forwarding fields (below). The `Host` header is passed on as it is; behind the page-cache
/// layer it is the request's one effective host, the one the key was computed for.
///
/// A hostile or broken origin is answered in words, never with an empty reply or a truncated
/// page that looks complete:
///
/// - an origin that does not accept the connection within the connect timeout, or does not
///   send its response head within the first-byte timeout, gives **504**; one that refuses the
///   connection or answers garbage gives **502**;
/// - a body that ends before its `Content-Length` or its last chunk, or that is still running
///   at the total timeout, is an error: if nothing was sent to the client yet (the page layer
///   was buffering it to store it) the client gets 502 (504 for the timeout; this answer is
///   given by [`proxy_router`] and its siblings, not by [`proxy_service`]), otherwise the
///   connection is aborted, so the client sees an incomplete message. Such a page is never
///   stored.
///
/// The origin learns who asked: the peer (from axum's `ConnectInfo<SocketAddr>`) is appended
/// to `X-Forwarded-For` and to an RFC 7239 `Forwarded` element (`for=..;proto=http;host=..`),
/// and `X-Real-IP`, `X-Forwarded-Proto` and `X-Forwarded-Host` are set. What the client sent in
/// those fields (and any other `X-Forwarded-*`) is dropped, since anyone can write them, unless
/// [`Origin::trust_forwarded`] says the client is a proxy of yours (a TLS terminator in front).
/// Served without connect info, the peer is unknown: `Forwarded` says `for=unknown` and no
/// `X-Forwarded-For` or `X-Real-IP` is sent.
///
/// ```
/// # fn build() -> Result<(), webcache::http::ProxyError> {
/// use std::time::Duration;
/// let origin = webcache::http::Origin::new("http://127.0.0.1:8000")?
///     .connect_timeout(Duration::from_secs(3))
///     .first_byte_timeout(Duration::from_secs(30))
///     .total_timeout(Duration::from_secs(300));
/// let app = webcache::http::proxy_router_with_origin(
///     origin,
///     &webcache::http::CachePageLayer::new(webcache::Cache::locmem()),
/// );
/// # let _ = app; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Origin {
    client: Client<HttpConnector, Body>,
    scheme: Scheme,
    authority: http::uri::Authority,
    base_path: String,
    connect_timeout: Duration,
    first_byte_timeout: Duration,
    total_timeout: Duration,
    trust_forwarded: bool,
    /// `http://host:port/base`, for messages.
    upstream: Arc<str>,
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin")
            .field("upstream", &self.upstream)
            .field("connect_timeout", &self.connect_timeout)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("total_timeout", &self.total_timeout)
            .field("trust_forwarded", &self.trust_forwarded)
            .finish()
    }
}

fn http_client(connect_timeout: Duration) -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

impl Origin {
    /// How long connecting to the upstream may take unless configured: 10 s. nginx waits 60 s
    /// and Varnish 3.5 s; a connection on a working network takes milliseconds, and every
    /// second spent here is a second the client (and the requests waiting on the same page)
    /// waits.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long the upstream may take to send its response head unless configured: 60 s, as
    /// nginx's `proxy_read_timeout` and Varnish's `first_byte_timeout`.
    pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
    /// How long a whole exchange (head and body) may take unless configured: one hour, a
    /// backstop against an origin that trickles a body forever rather than a limit on pages
    /// (500 MB at 150 kB/s fit).
    pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(3600);

    /// An origin at `upstream` (`http://127.0.0.1:8000`, optionally with a base path that is
    /// prepended to every request path), with the default timeouts and forwarding fields that
    /// are not trusted. HTTPS upstreams are not supported.
    pub fn new(upstream: &str) -> Result<Self, ProxyError> {
        let invalid = |reason: &str| ProxyError::InvalidUpstream {
            upstream: upstream.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = upstream
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| invalid("it has no scheme"))?;
        if scheme != Scheme::HTTP {
            return Err(invalid("only http:// upstreams are supported"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| invalid("it has no host"))?;
        if uri.query().is_some() {
            return Err(invalid("it has a query string"));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Origin {
            client: http_client(Self::DEFAULT_CONNECT_TIMEOUT),
            upstream: format!("{scheme}://{authority}{base_path}").into(),
            scheme,
            authority,
            base_path,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            first_byte_timeout: Self::DEFAULT_FIRST_BYTE_TIMEOUT,
            total_timeout: Self::DEFAULT_TOTAL_TIMEOUT,
            trust_forwarded: false,
        })
    }

    /// How long establishing a TCP connection may take (default
    /// [`DEFAULT_CONNECT_TIMEOUT`](Self::DEFAULT_CONNECT_TIMEOUT)); past it the client gets 504.
    /// With several addresses for the upstream's name, each gets an equal share.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self.client = http_client(timeout);
        self
    }

    /// How long the upstream may take to send its response head, counted from the moment the
    /// connection is established or taken from the pool (default
    /// [`DEFAULT_FIRST_BYTE_TIMEOUT`](Self::DEFAULT_FIRST_BYTE_TIMEOUT)); past it the client
    /// gets 504.
    #[must_use]
    pub fn first_byte_timeout(mut self, timeout: Duration) -> Self {
        self.first_byte_timeout = timeout;
        self
    }

    /// How long the whole exchange may take, body included (default
    /// [`DEFAULT_TOTAL_TIMEOUT`](Self::DEFAULT_TOTAL_TIMEOUT); `Duration::MAX` for none, e.g.
    /// for endless event streams). Hit before the head, it is a 504; hit while the body
    /// streams, the body fails: a 504 if nothing was sent to the client yet, an aborted
    /// connection otherwise, never a truncated page that looks complete.
    #[must_use]
    pub fn total_timeout(mut self, timeout: Duration) -> Self {
        self.total_timeout = timeout;
        self
    }

    /// Whether the client's own `X-Forwarded-For`, `X-Real-IP`, `Forwarded` and
    /// `X-Forwarded-*` fields are kept (and the peer appended to them). Off by default: anyone
    /// can write them, so they are dropped and replaced with what this proxy saw. Turn it on
    /// only when every client is a proxy of yours (a TLS terminator on the same host).
    #[must_use]
    pub fn trust_forwarded(mut self, trust: bool) -> Self {
        self.trust_forwarded = trust;
        self
    }

    /// Sends `req` and waits for the response head: the connection within the connect
    /// timeout (the connector's), then the head within the first-byte timeout counted from the
    /// moment a connection was established or taken from the pool, all within the total
    /// deadline. A failure is the proxy's own answer, in words.
    async fn head(
        &self,
        client: &Client<HttpConnector, Body>,
        mut req: Request<Body>,
        total_deadline: tokio::time::Instant,
    ) -> Result<Response<hyper::body::Incoming>, Response<Body>> {
        let upstream = &self.upstream;
        let total = || {
            tracing::warn!("upstream {upstream}: no response head within the total timeout");
            gateway_error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "gateway timeout: the upstream {upstream} sent no answer within {:?} (total timeout, Origin::total_timeout)\n",
                    self.total_timeout
                ),
            )
        };
        let mut connection = capture_connection(&mut req);
        let request = client.request(req);
        let mut request = std::pin::pin!(request);
        // Until a connection is there: bounded by the connect timeout (a failure, timeout
        // included, ends `request`) and the total deadline.
        let early = tokio::select! {
            biased;
            result = &mut request => Some(result),
            _ = connection.wait_for_connection_metadata() => None,
            () = tokio::time::sleep_until(total_deadline) => return Err(total()),
        };
        let result = match early {
            Some(result) => result,
            None => {
                let first_byte = tokio::time::Instant::now()
                    .checked_add(self.first_byte_timeout)
                    .unwrap_or(total_deadline);
                match tokio::time::timeout_at(first_byte.min(total_deadline), request).await {
                    Ok(result) => result,
                    Err(_) if first_byte >= total_deadline => return Err(total()),
                    Err(_) => {
                        tracing::warn!(
                            "upstream {upstream}: no response head within the first-byte timeout"
                        );
                        return Err(gateway_error(
                            StatusCode::GATEWAY_TIMEOUT,
                            format!(
                                "gateway timeout: the upstream {upstream} sent no answer within {:?} of connecting (first-byte timeout, Origin::first_byte_timeout)\n",
                                self.first_byte_timeout
                            ),
                        ));
                    }
                }
            }
        };
        result.map_err(|e| {
            if crate::gateway::is_timeout(&e) {
                tracing::warn!("upstream {upstream}: connect timeout: {e}");
                return gateway_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "gateway timeout: could not connect to the upstream {upstream} within {:?} (Origin::connect_timeout)\n",
                        self.connect_timeout
                    ),
                );
            }
            tracing::warn!("upstream {upstream}: request failed: {e}");
            let cause = std::error::Error::source(&e)
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            gateway_error(
                StatusCode::BAD_GATEWAY,
                format!("bad gateway: the upstream {upstream} did not answer: {e}{cause}\n"),
            )
        })
    }

    fn target(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let pq = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let path = format!("{}{}", self.base_path, pq);
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
    }
}

/// An answer of the proxy itself, in words.
fn gateway_error(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Why an upstream body failed, carried as the body's error so that a layer in front can
/// answer in words (see [`fail_closed`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamBodyError {
    /// The total timeout passed while the body was being read.
    #[error("the upstream {upstream} did not finish its answer within the total timeout of {timeout:?} (Origin::total_timeout)")]
    TotalTimeout {
        upstream: Arc<str>,
        timeout: Duration,
    },
    /// The body ended early or the connection failed.
    #[error("the upstream {upstream} broke off its answer: {source}")]
    Broken {
        upstream: Arc<str>,
        source: hyper::Error,
    },
}

pin_project! {
    /// The upstream's body, failing (never ending cleanly) when the upstream breaks off or the
    /// total timeout passes.
    struct UpstreamBody {
        #[pin]
        body: hyper::body::Incoming,
        #[pin]
        deadline: tokio::time::Sleep,
        upstream: Arc<str>,
        timeout: Duration,
        failed: bool,
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let timed_out = || UpstreamBodyError::TotalTimeout {
            upstream: this.upstream.clone(),
            timeout: *this.timeout,
        };
        if *this.failed {
            // Polled again after an error: fail again rather than end as if complete.
            return Poll::Ready(Some(Err(timed_out().into())));
        }
        match this.body.poll_frame(cx) {
            Poll::Ready(Some(Err(source))) => {
                *this.failed = true;
                let error = UpstreamBodyError::Broken {
                    upstream: this.upstream.clone(),
                    source,
                };
                tracing::warn!("{error}");
                return Poll::Ready(Some(Err(error.into())));
            }
            Poll::Ready(frame) => return Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {}
        }
        if this.deadline.poll(cx).is_ready() {
            *this.failed = true;
            let error = timed_out();
            tracing::warn!("{error}");
            return Poll::Ready(Some(Err(error.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        !self.failed && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The hop-by-hop-free request is about to leave: says who asked (see the module docs).
fn set_forwarded(headers: &mut HeaderMap, peer: Option<IpAddr>, trust: bool) {
    const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

    if !trust {
        let theirs: Vec<HeaderName> = headers
            .keys()
            .filter(|n| n.as_str().starts_with("x-forwarded-"))
            .cloned()
            .chain([X_REAL_IP, FORWARDED])
            .collect();
        for name in theirs {
            headers.remove(name);
        }
    }
    let host = headers.get(HOST).cloned();
    // Several fields of one list are one list (RFC 9110 §5.3): joined, then ours appended.
    let append = |headers: &mut HeaderMap, name: HeaderName, ours: &[u8]| {
        let mut value: Vec<u8> = Vec::new();
        for field in headers.get_all(&name) {
            value.extend_from_slice(field.as_bytes());
            value.extend_from_slice(b", ");
        }
        value.extend_from_slice(ours);
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            headers.insert(name, value);
        }
    };
    let keep_or_set = |headers: &mut HeaderMap, name: HeaderName, ours: HeaderValue| {
        if !headers.contains_key(&name) {
            headers.insert(name, ours);
        }
    };
    if let Some(ip) = peer {
        append(headers, X_FORWARDED_FOR, ip.to_string().as_bytes());
        keep_or_set(headers, X_REAL_IP, HeaderValue::from(IpValue(ip)));
    }
    keep_or_set(headers, X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = &host {
        keep_or_set(headers, X_FORWARDED_HOST, host.clone());
    }
    append(headers, FORWARDED, &forwarded_element(peer, host.as_ref()));
}

/// An IP address as a header value.
struct IpValue(IpAddr);

impl From<IpValue> for HeaderValue {
    fn from(ip: IpValue) -> Self {
        // An address's text is ASCII digits, dots, colons and hex letters: always valid.
        HeaderValue::from_str(&ip.0.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
    }
}

/// One RFC 7239 element: `for=192.0.2.1;proto=http;host=example.com`, an IPv6 node quoted and
/// bracketed, an unknown peer `for=unknown`, a host that is not a token quoted.
fn forwarded_element(peer: Option<IpAddr>, host: Option<&HeaderValue>) -> Vec<u8> {
    let node = match peer {
        Some(IpAddr::V4(ip)) => ip.to_string(),
        Some(IpAddr::V6(ip)) => format!("\"[{ip}]\""),
        None => "unknown".to_owned(),
    };
    let mut element = format!("for={node};proto=http").into_bytes();
    if let Some(host) = host {
        element.extend_from_slice(b";host=");
        let host = host.as_bytes();
        if !host.is_empty() && host.iter().all(|b| is_tchar(*b)) {
            element.extend_from_slice(host);
        } else {
            element.push(b'"');
            for &b in host {
                if b == b'"' || b == b'\\' {
                    element.push(b'\\');
                }
                element.push(b);
            }
            element.push(b'"');
        }
    }
    element
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Service<Request<Body>> for Origin {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let client = self.client.clone();
        let target = self.target(req.uri());
        let origin = self.clone();
        Box::pin(async move {
            let start = tokio::time::Instant::now();
            let total_deadline = start
                .checked_add(origin.total_timeout)
                .unwrap_or_else(|| start + Duration::from_secs(86_400 * 365 * 30));
            let target = match target {
                Ok(t) => t,
                Err(e) => {
                    return Ok(gateway_error(
                        StatusCode::BAD_GATEWAY,
                        format!("cannot build the upstream URL: {e}\n"),
                    ))
                }
            };
            // An HTTP/2 client names the site in the URI, not in Host: keep it for the origin.
            if !req.headers().contains_key(HOST) {
                if let Some(authority) = req.uri().authority() {
                    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                        req.headers_mut().insert(HOST, host);
                    }
                }
            }
            *req.uri_mut() = target;
            *req.version_mut() = http::Version::HTTP_11;
            strip_hop_by_hop(req.headers_mut());
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip());
            if peer.is_none() {
                tracing::debug!(
                    "the peer address is unknown (serve with into_make_service_with_connect_info::<SocketAddr>()); forwarding for=unknown"
                );
            }
            set_forwarded(req.headers_mut(), peer, origin.trust_forwarded);
            let response = match origin.head(&client, req, total_deadline).await {
                Ok(response) => response,
                Err(answer) => return Ok(answer),
            };
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let body = UpstreamBody {
                body,
                deadline: tokio::time::sleep_until(total_deadline),
                upstream: origin.upstream.clone(),
                timeout: origin.total_timeout,
                failed: false,
            };
            Ok(Response::from_parts(parts, Body::new(body)))
        })
    }
}

/// A response whose body fails before its first byte (the page layer was buffering it, or the
/// upstream broke off at once) is answered with 502 (504 for a timeout) in words, instead of a
/// connection closed without a reply. A body that fails later has its head out already: the
/// connection is aborted, so the client sees an incomplete message.
async fn fail_closed(response: Response<Body>) -> Response<Body> {
    let (parts, mut body) = response.into_parts();
    match body.frame().now_or_never() {
        Some(Some(Err(e))) => {
            let (status, message) = crate::gateway::broken_body(e.into_inner().as_ref());
            gateway_error(status, message)
        }
        Some(Some(Ok(first))) => Response::from_parts(
            parts,
            Body::new(Resumed {
                first: Some(first),
                rest: body,
            }),
        ),
        Some(None) | None => Response::from_parts(parts, body),
    }
}

pin_project! {
    /// A body whose first frame was read ahead: that frame, then the rest, with the same size
    /// hint as before.
    struct Resumed {
        first: Option<Frame<Bytes>>,
        #[pin]
        rest: Body,
    }
}

impl http_body::Body for Resumed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        match this.first.take() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => this.rest.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let first = self
            .first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |d| d.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(first));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(first));
        }
        hint
    }
}

/// The page cache in front of `upstream`, as a service: `layer` decides the policy and
/// settings. This is the bare pair: a body that fails before its first byte closes the
/// connection without a reply; [`proxy_router_with_origin`] answers it with 502/504.
pub fn proxy_service(
    upstream: &str,
    layer: &CachePageLayer,
) -> Result<CachePage<Origin>, ProxyError> {
    Ok(layer.layer(Origin::new(upstream)?))
}

/// The caching reverse proxy as an axum `Router` answering every path and method:
/// `default_ttl = None` gives an RFC 9111 shared cache ([`Policy::SharedCache`]);
/// `Some(ttl)` gives Django's site-wide middleware rules ([`Policy::Django`]), keeping cacheable
/// 200s without freshness information for `ttl`. Use [`proxy_router_with`] for other settings
/// and [`proxy_router_with_origin`] for other timeouts. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so the origin learns the peer.
pub fn proxy_router(
    upstream: &str,
    cache: Cache,
    default_ttl: Option<Duration>,
) -> Result<Router, ProxyError> {
    proxy_router_with(upstream, &proxy_layer(cache, default_ttl))
}

/// The page-cache layer of [`proxy_router`], to configure further (allowed hosts, limits):
/// `default_ttl = None` gives an RFC 9111 shared cache, `Some(ttl)` Django's site-wide rules.
pub fn proxy_layer(cache: Cache, default_ttl: Option<Duration>) -> CachePageLayer {
    let layer = CachePageLayer::new(cache);
    match default_ttl {
        None => layer.policy(Policy::shared_cache()),
        Some(ttl) => layer.policy(Policy::Django).default_ttl(ttl),
    }
}

/// [`proxy_router`] with a fully configured layer.
pub fn proxy_router_with(upstream: &str, layer: &CachePageLayer) -> Result<Router, ProxyError> {
    Ok(proxy_router_with_origin(Origin::new(upstream)?, layer))
}

/// [`proxy_router`] with a configured [`Origin`] (timeouts, trusted forwarding fields) and
/// layer.
pub fn proxy_router_with_origin(origin: Origin, layer: &CachePageLayer) -> Router {
    Router::new()
        .fallback_service(layer.layer(origin))
        .layer(axum::middleware::map_response(fail_closed))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    /// The `host` parameter that follows our element's `for` and `proto`, unquoted (RFC 7239
    /// §4); it must be the last thing in the field.
    fn host_param(after_proto: &[u8]) -> Option<Vec<u8>> {
        let rest = after_proto.strip_prefix(b";host=")?;
        if rest.first() != Some(&b'"') {
            return Some(rest.to_vec());
        }
        let mut out = Vec::new();
        let mut bytes = rest[1..].iter();
        while let Some(&b) = bytes.next() {
            match b {
                b'\\' => out.push(*bytes.next()?),
                b'"' => return bytes.next().is_none().then_some(out),
                _ => out.push(b),
            }
        }
        None
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the client wrote, the fields never panic, what was not trusted is gone,
        /// and the host reaches the origin intact inside a well-formed element.
        #[test]
        fn forwarding_fields_hold_for_any_input(
            host in proptest::collection::vec(any::<u8>(), 0..40),
            theirs in proptest::collection::vec(any::<u8>(), 0..40),
            v6 in any::<bool>(),
            known in any::<bool>(),
            trust in any::<bool>(),
        ) {
            let mut headers = HeaderMap::new();
            let host = HeaderValue::from_bytes(&host).ok();
            if let Some(host) = &host {
                headers.insert(HOST, host.clone());
            }
            if let Ok(value) = HeaderValue::from_bytes(&theirs) {
                for name in ["x-forwarded-for", "forwarded", "x-real-ip", "x-forwarded-host"] {
                    headers.append(name, value.clone());
                }
            }
            let peer: Option<IpAddr> = known.then(|| {
                if v6 { "2001:db8::1".parse().unwrap() } else { "192.0.2.1".parse().unwrap() }
            });
            set_forwarded(&mut headers, peer, trust);
            let forwarded = headers.get(FORWARDED).unwrap().as_bytes().to_vec();
            prop_assert_eq!(headers.get_all(FORWARDED).iter().count(), 1);
            let node: &[u8] = match (known, v6) {
                (false, _) => b"for=unknown;proto=http",
                (true, false) => b"for=192.0.2.1;proto=http",
                (true, true) => b"for=\"[2001:db8::1]\";proto=http",
            };
            let element_at = forwarded.windows(node.len()).rposition(|w| w == node);
            prop_assert!(element_at.is_some());
            if !trust {
                prop_assert_eq!(element_at, Some(0));
                let xff = headers.get("x-forwarded-for").map(|v| v.as_bytes().to_vec());
                let ip = peer.map(|p| p.to_string().into_bytes());
                prop_assert_eq!(xff, ip);
            }
            match &host {
                Some(host) if !host.is_empty() => {
                    let after = &forwarded[element_at.unwrap_or(0) + node.len()..];
                    prop_assert_eq!(host_param(after), Some(host.as_bytes().to_vec()));
                }
                _ => {}
            }
        }
    }

    #[test]
    fn a_host_with_separators_is_quoted_and_escaped() {
        let host = HeaderValue::from_static("a;host=\"b\\\", for=evil");
        let element = forwarded_element(None, Some(&host));
        assert_eq!(
            element,
            b"for=unknown;proto=http;host=\"a;host=\\\"b\\\\\\\", for=evil\""
        );
        let after = &element[b"for=unknown;proto=http".len()..];
        assert_eq!(host_param(after).unwrap(), host.as_bytes());
    }

    #[test]
    fn an_empty_host_is_quoted() {
        let element = forwarded_element(None, Some(&HeaderValue::from_static("")));
        assert_eq!(element, b"for=unknown;proto=http;host=\"\"");
    }
}
