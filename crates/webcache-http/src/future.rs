//! Named futures of the small header layers (the page-cache service itself returns a boxed
//! future: it awaits the backend, the inner service and the single-flight state in turn).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{HeaderMap, Response};
use pin_project_lite::pin_project;

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
