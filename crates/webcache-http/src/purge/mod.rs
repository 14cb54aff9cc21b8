//! [`PurgeLayer`]: `PURGE` requests from allowed clients drop a URL's pages, as Varnish and
//! nginx users do.
//!
//! ```text
//! PURGE /products?page=2 HTTP/1.1        drops that URL's page and all its variants
//! Host: shop.example
//! Authorization: Bearer <token>          (or a client address in the allow-list)
//!
//! PURGE / HTTP/1.1                        with the header, invalidates tags instead
//! Webcache-Invalidate-Tags: products, product:42
//! ```
//!
//! Answers: `200` (purged), `404` (nothing was stored), `403` (not an allowed client: neither
//! the token nor an allowed address; PURGE is refused by everyone until one is configured),
//! `400` (a request whose host is not one effective host), `502` (the cache failed). Other
//! methods pass to the inner service untouched.

mod access;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::{HeaderName, Request, Response, StatusCode};
use tower::{Layer, Service};

pub use access::InvalidAddress;
use access::PurgeAccess;

use crate::host::{self, AllowedHosts};
use crate::Pages;

/// The header of a `PURGE` that invalidates tags instead of one URL.
pub const INVALIDATE_TAGS: HeaderName = HeaderName::from_static("webcache-invalidate-tags");

/// A tower layer answering `PURGE` requests in front of a site or a proxy; put it outside the
/// page-cache layer, and serve with `into_make_service_with_connect_info::<SocketAddr>()` when
/// allowing by address.
///
/// `PURGE /path` drops that URL's page and all its variants; with a
/// `Webcache-Invalidate-Tags: a, b` header it invalidates those tags instead. Answers: `200`
/// (purged), `404` (nothing was stored), `403` (neither the token nor an allowed address:
/// nobody is allowed until one is configured), `400` (no single effective host), `502` (the
/// cache failed). Other methods pass to the inner service untouched.
///
/// ```
/// use axum::{routing::get, Router};
/// use webcache::Cache;
/// use webcache::http::{CachePageLayer, PurgeLayer};
///
/// let pages = CachePageLayer::new(Cache::locmem());
/// let purge = PurgeLayer::new(pages.pages())
///     .token("s3cret-from-the-deploy-secrets")
///     .allow_from(["127.0.0.1", "10.0.0.0/8"])
///     .expect("addresses parse");
/// let app: Router = Router::new()
///     .route("/", get(|| async { "home" }))
///     .layer(pages)
///     .layer(purge);
/// ```
#[derive(Clone, Debug)]
pub struct PurgeLayer {
    pages: Pages,
    access: Arc<PurgeAccess>,
}

impl PurgeLayer {
    /// Answers `PURGE` for the pages of `pages`; nobody is allowed until a token or addresses
    /// are given.
    pub fn new(pages: Pages) -> Self {
        PurgeLayer {
            pages,
            access: Arc::new(PurgeAccess::default()),
        }
    }

    /// Allows clients that send `Authorization: Bearer <token>` (compared in constant time).
    /// An empty token allows nobody.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.access).set_token(token.into());
        self
    }

    /// Allows clients from these addresses or networks (`127.0.0.1`, `::1`, `10.0.0.0/8`),
    /// read from the connection (axum's `ConnectInfo<SocketAddr>`), never from a header.
    pub fn allow_from<I, S>(mut self, addresses: I) -> Result<Self, InvalidAddress>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Arc::make_mut(&mut self.access).allow_from(addresses)?;
        Ok(self)
    }
}

impl<S> Layer<S> for PurgeLayer {
    type Service = Purge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Purge {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`PurgeLayer`].
#[derive(Clone, Debug)]
pub struct Purge<S> {
    inner: S,
    layer: PurgeLayer,
}

/// The future of [`Purge`].
pub type PurgeFuture<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

impl<S, B> Service<Request<B>> for Purge<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Send,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = PurgeFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if req.method().as_str() != "PURGE" {
            return Box::pin(self.inner.call(req));
        }
        let layer = self.layer.clone();
        Box::pin(async move { Ok(layer.answer(req).await) })
    }
}

impl PurgeLayer {
    async fn answer<B>(&self, req: Request<B>) -> Response<Body> {
        if !self.access.allows(&req) {
            return text(
                StatusCode::FORBIDDEN,
                "PURGE refused: send the purge token (Authorization: Bearer ...) or purge from an allowed address (configure them on the PurgeLayer, or `webcache proxy --purge-token / --purge-from`)\n",
            );
        }
        let (mut parts, _) = req.into_parts();
        if let Some(tags) = parts.headers.get(&INVALIDATE_TAGS) {
            let Ok(tags) = tags.to_str() else {
                return text(StatusCode::BAD_REQUEST, "the tags are not visible ASCII\n");
            };
            let tags: Vec<&str> = tags
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            return match self.pages.invalidate_tags(&tags).await {
                Ok(()) => text(
                    StatusCode::OK,
                    format!("invalidated {} tag(s)\n", tags.len()),
                ),
                Err(e) => text(StatusCode::BAD_GATEWAY, format!("the cache failed: {e}\n")),
            };
        }
        if let Err(refusal) = host::settle(
            parts.version,
            &parts.uri,
            &mut parts.headers,
            &AllowedHosts::default(),
        ) {
            return text(StatusCode::BAD_REQUEST, refusal.message());
        }
        let primary = self
            .pages
            .keys()
            .primary_key(&parts.uri, &parts.headers, None);
        match self.pages.purge_key(&primary).await {
            Ok(true) => text(StatusCode::OK, "purged\n"),
            Ok(false) => text(StatusCode::NOT_FOUND, "not in the cache\n"),
            Err(e) => text(StatusCode::BAD_GATEWAY, format!("the cache failed: {e}\n")),
        }
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Body::from(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
