//! [`CachePage`]: the page cache as a tower `Service`. It hands each request to the engine
//! ([`crate::engine`]), and turns a panic anywhere below it into a 500 that is logged, never an
//! empty reply.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt;
use http::{Request, Response};
use tower::Service;

use crate::body::{CacheBody, PageBody};
use crate::engine::{internal_error, Front, PageCacheEngine, Reply};
use crate::future::CachePageFuture;

/// A service that answers GET and HEAD from the page cache; built by
/// [`CachePageLayer`](crate::CachePageLayer).
#[derive(Clone)]
pub struct CachePage<S> {
    inner: S,
    /// Shared, so that a request costs one reference count, not a copy of the settings.
    engine: Arc<PageCacheEngine>,
}

impl<S: fmt::Debug> fmt::Debug for CachePage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachePage")
            .field("inner", &self.inner)
            .field("keys", &self.engine.settings.keys)
            .finish_non_exhaustive()
    }
}

impl<S> CachePage<S> {
    pub(crate) fn new(inner: S, engine: PageCacheEngine) -> Self {
        CachePage {
            inner,
            engine: Arc::new(engine),
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CachePage<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: PageBody,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = CachePageFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // What needs no waiting is answered here: a hit the store has at hand costs no future,
        // no box and no clone of the inner service.
        let route = crate::metrics::route(req.extensions());
        let (engine, inner) = (&self.engine, &self.inner);
        let front = std::panic::catch_unwind(AssertUnwindSafe(|| {
            crate::metrics::observe_now(route, || engine.front(inner, req))
        }));
        let later = match front {
            Ok(Front::Answered(response)) => return CachePageFuture::ready(Ok(response)),
            Ok(Front::Later(later)) => later,
            Err(panic) => return CachePageFuture::ready(answer_panic(Err(panic))),
        };
        // The service that was polled ready is the one to call (tower's usual swap).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let route = crate::metrics::route(later.extensions());
        let rest = self.engine.clone().finish(inner, *later);
        // Combinators, not an async block: the engine's future is held once in the box (an
        // async block would keep it again in its await state, and move it on every request).
        CachePageFuture::later(Box::pin(
            AssertUnwindSafe(crate::metrics::observe(route, rest))
                .catch_unwind()
                .map(answer_panic),
        ))
    }
}

/// A panic (a bug here or in the inner service) must not leave the client with an empty reply:
/// it is logged and answered with a 500.
fn answer_panic<R, E>(reply: Result<Reply<R, E>, Box<dyn std::any::Any + Send>>) -> Reply<R, E> {
    reply.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %what, "the page cache panicked; answered 500");
        Ok(internal_error())
    })
}
