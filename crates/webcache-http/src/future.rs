//! Named futures: the page-cache service's (an answer made at once, or the rest of it boxed),
//! and the small header layers'.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderMap, Response};
use pin_project_lite::pin_project;

use crate::engine::Reply;

/// The future of [`CachePage`](crate::CachePage): ready at once when the answer needed no
/// waiting (a hit the store had at hand, a refused host), else the rest of the answer (the
/// backend, the inner service, the miss path), boxed.
pub struct CachePageFuture<R, E> {
    state: State<R, E>,
}

enum State<R, E> {
    Ready(std::future::Ready<Reply<R, E>>),
    Later(BoxFuture<'static, Reply<R, E>>),
}

impl<R, E> CachePageFuture<R, E> {
    pub(crate) fn ready(reply: Reply<R, E>) -> Self {
        CachePageFuture {
            state: State::Ready(std::future::ready(reply)),
        }
    }

    pub(crate) fn later(rest: BoxFuture<'static, Reply<R, E>>) -> Self {
        CachePageFuture {
            state: State::Later(rest),
        }
    }
}

impl<R, E> Future for CachePageFuture<R, E> {
    type Output = Reply<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            State::Ready(ready) => Pin::new(ready).poll(cx),
            State::Later(rest) => rest.as_mut().poll(cx),
        }
    }
}

impl<R, E> std::fmt::Debug for CachePageFuture<R, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            State::Ready(_) => f
                .debug_struct("CachePageFuture")
                .field("state", &"ready")
                .finish(),
            // The size of the boxed future: allocated and moved for each request that waits.
            State::Later(rest) => f
                .debug_struct("CachePageFuture")
                .field("state", &"later")
                .field("bytes", &std::mem::size_of_val(&**rest))
                .finish(),
        }
    }
}

pin_project! {
    /// The future of [`ResponseHeaders`](crate::headers::ResponseHeaders): the inner future,
    /// then the header patch.
    pub struct MapHeadersFuture<F> {
        #[pin]
        inner: F,
        patch: Arc<dyn Fn(&mut HeaderMap) + Send + Sync>,
    }
}

impl<F> MapHeadersFuture<F> {
    pub(crate) fn new(inner: F, patch: Arc<dyn Fn(&mut HeaderMap) + Send + Sync>) -> Self {
        MapHeadersFuture { inner, patch }
    }
}

impl<F, B, E> Future for MapHeadersFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        (this.patch)(response.headers_mut());
        Poll::Ready(Ok(response))
    }
}
