//! Capturing what a test's code logs.

use std::sync::Once;

use tracing::subscriber::{DefaultGuard, Interest};
use tracing::{span, Event, Metadata, Subscriber};

/// Makes `subscriber` this thread's default until the guard is dropped, so that a test sees
/// what its own code logs, whatever the other tests running at once do.
///
/// `tracing` caches, per call site, whether any subscriber wants it. A call site first reached
/// by another test's thread while no capturing subscriber exists is cached as "nobody wants
/// it", and stays silent for a test that installs one later (a test that then finds no log
/// line fails on a busy machine only: seen in CI, also after the cache was rebuilt, since a
/// call site registering at that very moment misses the rebuild). So the first capture of
/// the process installs a global subscriber that wants nothing but asks to be asked each time:
/// from then on no call site is cached as unwanted, and each event asks the thread's own
/// subscriber.
pub fn capture_on_this_thread<S>(subscriber: S) -> DefaultGuard
where
    S: Subscriber + Send + Sync + 'static,
{
    static ASK_EVERY_TIME: Once = Once::new();
    ASK_EVERY_TIME.call_once(|| {
        // Fails only if the process already has a global subscriber, which then decides.
        let _ = tracing::subscriber::set_global_default(AskEveryTime);
    });
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    guard
}

/// The global subscriber of a test process that captures logs: records nothing, and has every
/// call site ask the current subscriber each time (see [`capture_on_this_thread`]).
struct AskEveryTime;

impl Subscriber for AskEveryTime {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn enabled(&self, _: &Metadata<'_>) -> bool {
        false
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, _: &Event<'_>) {}

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}
