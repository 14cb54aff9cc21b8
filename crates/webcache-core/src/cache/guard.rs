//! Every backend call of a [`Cache`] goes through here: the operation timeout, the circuit
//! breaker, failure counting, and degrade mode (a failure becomes a miss or a dropped write,
//! logged at most once per [`DEGRADE_LOG_INTERVAL`](super::DEGRADE_LOG_INTERVAL)).

use std::future::Future;
use std::sync::atomic::Ordering;

use futures::StreamExt;

use crate::backend::KeyStream;
use crate::breaker::{Admit, Breaker};
use crate::error::{Error, Result};

use super::{metrics_export, Cache, OnError};

impl Cache {
    /// [`guard_strict`](Self::guard_strict) for a stream: the breaker admits the call and
    /// hears its first outcome (the first key, the end, or an error); each item must arrive
    /// within the operation timeout; later failures count too.
    pub(super) fn guard_stream(&self, operation: &'static str, stream: KeyStream) -> KeyStream {
        let cache = self.clone();
        futures::stream::once(async move {
            let mut stream = stream;
            let admit = cache.inner.breaker.as_ref().map(Breaker::admit);
            if let Some(Admit::Refuse(e)) = admit {
                cache.note_failure(operation, &e);
                return futures::stream::once(async { Err(e) }).boxed();
            }
            let first = cache.next_within(&mut stream).await;
            // The end of the listing is an answer too.
            let ended: Result<()> = Ok(());
            match (admit, &cache.inner.breaker, &first) {
                (Some(Admit::Trial(trial)), _, Some(result)) => trial.record(result),
                (Some(Admit::Trial(trial)), _, None) => trial.record(&ended),
                (_, Some(breaker), Some(result)) => breaker.record(result),
                (_, Some(breaker), None) => breaker.record(&ended),
                _ => {}
            }
            if let Some(Err(e)) = &first {
                cache.note_failure(operation, e);
            }
            let Some(first) = first else {
                return futures::stream::empty().boxed();
            };
            let stop = matches!(first, Err(Error::Timeout { .. }));
            let rest = futures::stream::unfold(
                (cache, stream, stop),
                move |(cache, mut stream, stop)| async move {
                    if stop {
                        return None;
                    }
                    let item = cache.next_within(&mut stream).await?;
                    if let Some(breaker) = &cache.inner.breaker {
                        breaker.record(&item);
                    }
                    if let Err(e) = &item {
                        cache.note_failure(operation, e);
                    }
                    // A hung backend would make the next poll wait again: end the stream here.
                    let stop = matches!(item, Err(Error::Timeout { .. }));
                    Some((item, (cache, stream, stop)))
                },
            );
            futures::stream::once(async { first }).chain(rest).boxed()
        })
        .flatten()
        .boxed()
    }

    /// The next item of `stream`, or [`Error::Timeout`] if it does not come within the
    /// operation timeout.
    async fn next_within(&self, stream: &mut KeyStream) -> Option<Result<String>> {
        match self.inner.options.operation_timeout {
            None => stream.next().await,
            Some(after) => tokio::time::timeout(after, stream.next())
                .await
                .unwrap_or_else(|_| {
                    Some(Err(Error::Timeout {
                        backend: self.inner.backend.name(),
                        after,
                    }))
                }),
        }
    }

    /// Runs a backend call with the operation timeout, counting failures; in degrade mode a
    /// backend failure becomes `degraded()`.
    pub(super) async fn guard<R>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<R>>,
        degraded: impl FnOnce() -> R,
    ) -> Result<R> {
        match self.guard_strict(operation, call).await {
            Err(e) if e.is_backend_failure() && self.inner.options.on_error == OnError::Degrade => {
                self.log_degraded(operation, &e);
                Ok(degraded())
            }
            other => other,
        }
    }

    /// Like [`guard`](Self::guard) but never degrades: for operations whose result cannot be
    /// made up (`incr`, `stats`).
    pub(super) async fn guard_strict<R>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<R>>,
    ) -> Result<R> {
        let call = metrics_export::observe(self, operation, call);
        let admit = self.inner.breaker.as_ref().map(Breaker::admit);
        let result = match admit {
            // The backend is known to be down: fail at once.
            Some(Admit::Refuse(e)) => Err(e),
            admit => {
                let mut timed_out = false;
                let result = match self.inner.options.operation_timeout {
                    None => call.await,
                    Some(after) => tokio::time::timeout(after, call).await.unwrap_or_else(|_| {
                        timed_out = true;
                        Err(Error::Timeout {
                            backend: self.inner.backend.name(),
                            after,
                        })
                    }),
                };
                match (admit, &self.inner.breaker) {
                    (Some(Admit::Trial(trial)), _) => trial.record(&result),
                    // The call may have been about one node only: its breaker counted it.
                    (_, Some(_)) if timed_out && self.some_node_up() => {}
                    (_, Some(breaker)) => breaker.record(&result),
                    _ => {}
                }
                result
            }
        };
        if let Err(e) = &result {
            self.note_failure(operation, e);
        }
        result
    }

    /// Whether the backend keeps a breaker per node and some node is up: a timeout of the
    /// cache's own then belongs to the node the call was about, not to the whole backend.
    fn some_node_up(&self) -> bool {
        self.inner
            .backend
            .node_breakers()
            .is_some_and(crate::breaker::NodeBreakers::some_node_up)
    }

    /// Counts a backend failure in the metrics (other errors are the caller's).
    pub(super) fn note_failure(&self, operation: &'static str, e: &Error) {
        if e.is_backend_failure() {
            self.inner.counters.errors.fetch_add(1, Ordering::Relaxed);
            metrics_export::failure(self, operation);
            if self.inner.options.on_error == OnError::Raise {
                tracing::debug!(alias = %self.alias(), operation, "cache backend failed: {e}");
            }
        }
    }

    pub(super) fn log_degraded(&self, operation: &'static str, error: &Error) {
        if self.inner.degrade_log.ready() {
            tracing::warn!(
                alias = %self.alias(),
                operation,
                "cache backend is failing; serving misses and dropping writes until it recovers: {error}"
            );
        }
    }
}
