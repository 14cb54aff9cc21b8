//! [`CacheBody`]: the response body of the page-cache layer. A hit is one [`Bytes`] (shared
//! with the decoded entry, not copied); a response that is not stored streams through.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use webcache_core::BoxError;

pin_project! {
    /// The body of a response that passed the page-cache layer: a stored page (one frame,
    /// sharing the decoded entry's buffer), or the inner service's body streaming through.
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = Proj]
    enum Kind<B> {
        // A stored (or just buffered) body, sent in one frame.
        Full { data: Option<Bytes> },
        // The inner service's body, untouched.
        Inner { #[pin] body: B },
        // A body that turned out not to be storable (too large, trailers): the frames already
        // read, then the rest of the inner body.
        Prefixed { prefix: VecDeque<Frame<Bytes>>, #[pin] rest: B },
        // The inner body failed while it was being buffered: the error is passed on.
        Failed { error: Option<BoxError> },
    }
}

impl<B> CacheBody<B> {
    /// A body of `data` (an empty one is sent as no frame at all).
    pub fn full(data: Bytes) -> Self {
        Self::from(Kind::Full {
            data: (!data.is_empty()).then_some(data),
        })
    }

    /// An empty body (HEAD, 304).
    pub fn empty() -> Self {
        Self::from(Kind::Full { data: None })
    }

    /// The inner service's body, passed through.
    pub fn inner(body: B) -> Self {
        Self::from(Kind::Inner { body })
    }

    pub(crate) fn prefixed(prefix: Vec<Frame<Bytes>>, rest: B) -> Self {
        Self::from(Kind::Prefixed {
            prefix: prefix.into(),
            rest,
        })
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self::from(Kind::Failed { error: Some(error) })
    }

    fn from(kind: Kind<B>) -> Self {
        CacheBody { kind }
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            Proj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Proj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            Proj::Prefixed { prefix, rest } => match prefix.pop_front() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None => rest.poll_frame(cx).map_err(Into::into),
            },
            Proj::Failed { error } => Poll::Ready(error.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Prefixed { prefix, rest } => prefix.is_empty() && rest.is_end_stream(),
            Kind::Failed { error } => error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Inner { body } => body.size_hint(),
            Kind::Prefixed { prefix, rest } => {
                let buffered: u64 = prefix
                    .iter()
                    .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
                    .sum();
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + buffered);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + buffered);
                }
                hint
            }
            Kind::Failed { .. } => SizeHint::new(),
        }
    }
}

/// What the page cache needs of a response body: bytes it can buffer, or stream on.
pub trait PageBody: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static {}

impl<T> PageBody for T where T: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static {}

/// The result of reading a body into memory up to a limit.
pub(crate) enum Buffered<B> {
    /// The whole body, in one `Bytes` (no copy when it came in one frame).
    Complete(Bytes),
    /// Not storable: larger than the limit, or it has trailers. The frames read so far and the
    /// rest of the body, to be passed through.
    PassThrough(Vec<Frame<Bytes>>, B),
    /// The body failed.
    Failed(BoxError),
}

impl<B> Buffered<B> {
    /// The body to send when the buffered one is not kept.
    pub(crate) fn into_body(self) -> CacheBody<B> {
        match self {
            Buffered::Complete(data) => CacheBody::full(data),
            Buffered::PassThrough(prefix, rest) => CacheBody::prefixed(prefix, rest),
            Buffered::Failed(error) => CacheBody::failed(error),
        }
    }
}

/// Reads `body` whole if it is at most `limit` bytes, without copying a single-frame body.
pub(crate) async fn buffer<B>(mut body: B, limit: usize) -> Buffered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;

    if body.size_hint().lower() > limit as u64 {
        return Buffered::PassThrough(Vec::new(), body);
    }
    let mut chunks: Vec<Frame<Bytes>> = Vec::new();
    let mut total = 0usize;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Buffered::Failed(e.into()),
            Some(Ok(frame)) => {
                let len = frame.data_ref().map_or(0, Bytes::len);
                let trailers = frame.is_trailers();
                total = total.saturating_add(len);
                chunks.push(frame);
                if trailers || total > limit {
                    return Buffered::PassThrough(chunks, body);
                }
            }
        }
    }
    let mut data: Vec<Bytes> = chunks
        .into_iter()
        .filter_map(|f| f.into_data().ok())
        .collect();
    match data.len() {
        0 => Buffered::Complete(Bytes::new()),
        1 => Buffered::Complete(data.pop().unwrap_or_default()),
        _ => {
            let mut joined = bytes::BytesMut::with_capacity(total);
            for chunk in data {
                joined.extend_from_slice(&chunk);
            }
            Buffered::Complete(joined.freeze())
        }
    }
}
