//! Helpers shared by core's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Records the warnings logged on this thread while it lives, so a test can check the log
/// line a behaviour promises (use a current-thread runtime).
pub struct LogCapture {
    lines: Arc<Mutex<Vec<String>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl LogCapture {
    /// Starts capturing on the current thread.
    pub fn start() -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let guard = webcache_testkit::logs::capture_on_this_thread(Collector(lines.clone()));
        LogCapture {
            lines,
            _guard: guard,
        }
    }

    /// The warnings so far, one line each (message and fields).
    pub fn warnings(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Panics unless some warning contains `needle`.
    pub fn assert_warned(&self, needle: &str) {
        let warnings = self.warnings();
        assert!(
            warnings.iter().any(|w| w.contains(needle)),
            "no warning contains {needle:?}; warnings: {warnings:#?}"
        );
    }
}

struct Collector(Arc<Mutex<Vec<String>>>);

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, "{}={} ", field.name(), value);
    }
}

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        if *event.metadata().level() == Level::WARN {
            let mut line = Line(String::new());
            event.record(&mut line);
            self.0.lock().unwrap().push(line.0);
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
