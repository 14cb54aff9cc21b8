//! Progress of long work (`clear`, `del --pattern`) on a terminal, and its end on Ctrl-C.
//!
//! A counter with a rate on standard error, rewritten in place at most ten times a second, and
//! only when both standard output and standard error are terminals and the output is not
//! `--json`: piped or scripted output gets nothing but the result.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The exit code of an interrupted command (128 + SIGINT, as shells report it).
pub(crate) const INTERRUPTED: i32 = 130;

/// How many keys a long command has handled, shown on a terminal.
pub(crate) struct Progress {
    /// What is counted: "deleted", "cleared".
    verb: &'static str,
    shown: bool,
    started: Instant,
    /// When the line was last drawn.
    drawn: Mutex<Option<Instant>>,
    done: AtomicU64,
}

impl Progress {
    pub(crate) fn new(verb: &'static str, as_json: bool) -> Progress {
        Progress {
            verb,
            shown: !as_json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal(),
            started: Instant::now(),
            drawn: Mutex::new(None),
            done: AtomicU64::new(0),
        }
    }

    /// Counts without drawing anything: for work whose output is its own progress (`keys`).
    pub(crate) fn counting(verb: &'static str) -> Progress {
        Progress {
            shown: false,
            ..Progress::new(verb, true)
        }
    }

    /// Hears that `done` keys are handled so far.
    pub(crate) fn update(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
        if !self.shown {
            return;
        }
        let Ok(mut drawn) = self.drawn.lock() else {
            return;
        };
        let now = Instant::now();
        if drawn.is_some_and(|at| now.duration_since(at) < Duration::from_millis(100)) {
            return;
        }
        *drawn = Some(now);
        let seconds = now.duration_since(self.started).as_secs_f64().max(0.001);
        let rate = done as f64 / seconds;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{} {done} keys ({rate:.0}/s)\x1b[K", self.verb);
        let _ = err.flush();
    }

    /// How many keys were handled so far.
    pub(crate) fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Clears the line, before the result is printed.
    pub(crate) fn finish(&self) {
        if self.shown && self.drawn.lock().is_ok_and(|d| d.is_some()) {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }

    /// Ends the command after Ctrl-C: what was done, on standard error (and as the `--json`
    /// error); returns [`INTERRUPTED`].
    pub(crate) fn interrupted(&self, as_json: bool) -> i32 {
        let message = format!("interrupted: {} {} keys", self.verb, self.done());
        self.interrupted_with(&message, Some(self.done()), as_json)
    }

    /// Ends the command after Ctrl-C when the work runs in a running app (`--app`): the app
    /// goes on with it, and this process cannot know how far it got, so it says that instead
    /// of a count.
    pub(crate) fn interrupted_remote(&self, app: &str, as_json: bool) -> i32 {
        let message = format!(
            "interrupted: stopped waiting; the app at {app} goes on until the work is done \
             (`webcache stats --app {app}` shows its cache)"
        );
        self.interrupted_with(&message, None, as_json)
    }

    /// `done`: how many keys were handled, when this process knows.
    fn interrupted_with(&self, message: &str, done: Option<u64>, as_json: bool) -> i32 {
        self.finish();
        if as_json {
            let line = match done {
                Some(done) => serde_json::json!({ "ok": false, "error": message, "done": done }),
                None => serde_json::json!({ "ok": false, "error": message }),
            };
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        } else {
            crate::output::note(format_args!("{message}"));
        }
        INTERRUPTED
    }
}
