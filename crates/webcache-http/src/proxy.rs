//! The caching reverse proxy: [`Origin`], a tower service that forwards any request to an
//! upstream HTTP server, and [`proxy_router`], the page-cache layer in front of it.
//!
//! What `webcache proxy --upstream URL [--default-ttl N]` serves:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = webcache_core::Cache::locmem();
//! // Without --default-ttl: an RFC 9111 shared cache; with it: Django's site-wide rules.
//! let app = webcache_http::proxy_router("http://127.0.0.1:8000", cache, None)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use futures::future::BoxFuture;
use http::header::{CONTENT_TYPE, HOST};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, Service};
use webcache_core::Cache;

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
/// HTTP/1.1 server and returns its response unchanged, except hop-by-hop headers. The `Host`
/// header is passed as the client sent it, as Varnish does. An unreachable upstream gives 502.
#[derive(Clone)]
pub struct Origin {
    client: Client<HttpConnector, Body>,
    scheme: Scheme,
    authority: http::uri::Authority,
    base_path: String,
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin")
            .field(
                "upstream",
                &format_args!("{}://{}{}", self.scheme, self.authority, self.base_path),
            )
            .finish()
    }
}

impl Origin {
    /// An origin at `upstream` (`http://127.0.0.1:8000`, optionally with a base path that is
    /// prepended to every request path). HTTPS upstreams are not supported.
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
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Origin {
            client,
            scheme,
            authority,
            base_path,
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

fn bad_gateway(message: String) -> Response<Body> {
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
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
        Box::pin(async move {
            let target = match target {
                Ok(t) => t,
                Err(e) => return Ok(bad_gateway(format!("cannot build the upstream URL: {e}"))),
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
            match client.request(req).await {
                Ok(response) => {
                    let (mut parts, body) = response.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    Ok(Response::from_parts(parts, Body::new(body)))
                }
                Err(e) => {
                    tracing::warn!("upstream request failed: {e}");
                    Ok(bad_gateway(format!("the upstream did not answer: {e}")))
                }
            }
        })
    }
}

/// The page cache in front of `upstream`, as a service: `layer` decides the policy and
/// settings.
pub fn proxy_service(
    upstream: &str,
    layer: &CachePageLayer,
) -> Result<CachePage<Origin>, ProxyError> {
    Ok(layer.layer(Origin::new(upstream)?))
}

/// The caching reverse proxy as an axum `Router` answering every path and method:
/// `default_ttl = None` gives an RFC 9111 shared cache ([`Policy::SharedCache`]);
/// `Some(ttl)` gives Django's site-wide middleware rules ([`Policy::Django`]), keeping cacheable
/// 200s without freshness information for `ttl`. Use [`proxy_router_with`] for other settings.
pub fn proxy_router(
    upstream: &str,
    cache: Cache,
    default_ttl: Option<Duration>,
) -> Result<Router, ProxyError> {
    let layer = CachePageLayer::new(cache);
    let layer = match default_ttl {
        None => layer.policy(Policy::shared_cache()),
        Some(ttl) => layer.policy(Policy::Django).default_ttl(ttl),
    };
    proxy_router_with(upstream, &layer)
}

/// [`proxy_router`] with a fully configured layer.
pub fn proxy_router_with(upstream: &str, layer: &CachePageLayer) -> Result<Router, ProxyError> {
    Ok(Router::new().fallback_service(proxy_service(upstream, layer)?))
}
