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
        // The inner body streaming through while a copy is kept for storing (a body of unknown
        // length: the client gets every frame at once, the page is stored when it ends).
        Tee { #[pin] body: B, copy: Option<Copy> },
    }
}

/// The copy a [`CacheBody`] keeps of a body streaming through, handed over when the body ends
/// within the limit; dropped (so nothing is stored) when it grows past the limit, has trailers,
/// fails, or the client goes away.
struct Copy {
    chunks: Vec<Bytes>,
    total: usize,
    limit: usize,
    done: tokio::sync::oneshot::Sender<Bytes>,
}

impl Copy {
    /// Keeps `frame`'s data; `false` when the copy must be given up.
    fn keep(&mut self, frame: &Frame<Bytes>) -> bool {
        let Some(data) = frame.data_ref() else {
            return false; // trailers are not stored
        };
        self.total = self.total.saturating_add(data.len());
        if self.total > self.limit {
            return false;
        }
        self.chunks.push(data.clone());
        true
    }

    fn finish(self) {
        let _ = self.done.send(join(self.chunks, self.total));
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

    /// `body` streaming through; when it ends whole and within `limit` bytes, its bytes are
    /// sent on the returned channel.
    pub(crate) fn tee(body: B, limit: usize) -> (Self, tokio::sync::oneshot::Receiver<Bytes>) {
        let (done, receiver) = tokio::sync::oneshot::channel();
        let copy = Copy {
            chunks: Vec::new(),
            total: 0,
            limit,
            done,
        };
        (
            Self::from(Kind::Tee {
                body,
                copy: Some(copy),
            }),
            receiver,
        )
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
            Proj::Tee { mut body, copy } => {
                let polled = std::task::ready!(body.as_mut().poll_frame(cx));
                match &polled {
                    Some(Ok(frame)) => {
                        if copy.as_mut().is_some_and(|c| !c.keep(frame)) {
                            *copy = None;
                        }
                        // A reader may stop at the last frame without asking for the end.
                        if body.is_end_stream() {
                            if let Some(c) = copy.take() {
                                c.finish();
                            }
                        }
                    }
                    Some(Err(_)) => *copy = None,
                    None => {
                        if let Some(c) = copy.take() {
                            c.finish();
                        }
                    }
                }
                Poll::Ready(polled.map(|r| r.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Prefixed { prefix, rest } => prefix.is_empty() && rest.is_end_stream(),
            Kind::Failed { error } => error.is_none(),
            // Never claimed ended early: the copy is handed over when the body says `None`.
            Kind::Tee { .. } => false,
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
            Kind::Tee { body, .. } => body.size_hint(),
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
    let data: Vec<Bytes> = chunks
        .into_iter()
        .filter_map(|f| f.into_data().ok())
        .collect();
    Buffered::Complete(join(data, total))
}

/// One `Bytes` of several, without a copy when there is one.
fn join(mut chunks: Vec<Bytes>, total: usize) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut joined = bytes::BytesMut::with_capacity(total);
            for chunk in chunks {
                joined.extend_from_slice(&chunk);
            }
            joined.freeze()
        }
    }
}
