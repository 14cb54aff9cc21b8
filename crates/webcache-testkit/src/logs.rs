//! Capturing what a test's code logs.

use tracing::subscriber::DefaultGuard;
use tracing::Subscriber;

/// Makes `subscriber` this thread's default until the guard is dropped, so that a test sees
/// what its own code logs, whatever the other tests running at once do.
///
/// `tracing` caches, per call site, whether any subscriber wants it. A call site first reached
/// by another test's thread while this one was being installed can keep "nobody" cached and
/// stay silent here (a test that then finds no log line fails on a busy machine only), so the
/// cache is rebuilt once the subscriber is in place.
pub fn capture_on_this_thread<S>(subscriber: S) -> DefaultGuard
where
    S: Subscriber + Send + Sync + 'static,
{
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    guard
}
