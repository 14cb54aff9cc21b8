//! The circuit breaker every [`Cache`](crate::Cache) puts in front of a server backend: once
//! the server is known to be down, calls fail at once instead of each waiting for a connect or
//! pool timeout.
//!
//! - **Closed** (normal): calls go through. Connection failures in a row are counted; an
//!   answer (a value, a miss, or a usage error such as "not an integer") resets the count.
//!   Other backend errors (a server's error reply, or a backend's own fail-fast while it
//!   marks one of its servers down) neither count nor reset.
//! - **Open**: after `failures` connection failures in a row, calls fail at once with an
//!   [`Error::Backend`] that says since when the backend is down (in degrade mode: a miss or a
//!   dropped write, as for any backend failure).
//! - **Half-open**: after a delay (50 ms, doubling after every failed trial, at most
//!   `max_delay`), one call is let through as a trial. Its success closes the breaker; its
//!   failure opens it again. So the cache is back within `max_delay` of the server's return.
//!
//! What counts as a connection failure: a timeout, or an I/O error of a
//! connection kind (refused, reset, aborted, broken pipe, unreachable...) anywhere in the
//! error's cause chain. Mistakes in a request (a bad key, `incr` on a missing key, a value too
//! large) and server-side refusals never trip it.
//!
//! # One breaker per node
//!
//! A backend that spreads keys over several servers (Redis Cluster masters, client-side Redis
//! shards, a memcached pool) keeps a [`NodeBreakers`]: the same breaker, one per node, so one
//! dead server makes only its own keys fail fast while keys on the others keep working. Its
//! failures reach the cache marked with their node ([`NodeFailure`] in the cause chain), and
//! the cache's own breaker does not count them: it opens only for failures of the backend as a
//! whole, which is also what a node failure becomes once every known node is down.

use std::collections::HashMap;
use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::error::Error;

/// Connection failures in a row that open the breaker of a server backend, unless configured
/// (`breaker_failures`; 0 turns the breaker off).
pub const DEFAULT_BREAKER_FAILURES: u32 = 3;

/// The longest wait between two trial calls while a backend is down, unless configured
/// (`breaker_max_delay`): also how long after the server's return the cache may still fail.
pub const DEFAULT_BREAKER_MAX_DELAY: Duration = Duration::from_secs(1);

/// The wait before the first trial call; it doubles after each failed trial.
const FIRST_DELAY: Duration = Duration::from_millis(50);

/// Whether `error` says the server could not be reached or did not answer: the failures that
/// count towards opening the breaker.
pub(crate) fn is_outage(error: &Error) -> bool {
    match error {
        Error::Timeout { .. } => true,
        Error::Backend { .. } => {
            let mut cause = error.source();
            while let Some(e) = cause {
                // One node's failure, already counted by that node's breaker: not an outage of
                // the whole backend.
                if e.is::<NodeFailure>() {
                    return false;
                }
                if let Some(io) = e.downcast_ref::<std::io::Error>() {
                    if is_connection_kind(io.kind()) {
                        return true;
                    }
                    // An I/O error wrapping another: its `source()` skips the wrapped error.
                    if let Some(inner) = io.get_ref() {
                        cause = Some(inner);
                        continue;
                    }
                }
                cause = e.source();
            }
            false
        }
        _ => false,
    }
}

enum Outcome<'a> {
    /// The backend answered: a value, a miss, or a usage error.
    Answered,
    /// The backend could not be reached.
    Outage(&'a Error),
    /// Some other backend failure: says nothing either way.
    Unclear(&'a Error),
}

fn outcome<T>(result: &Result<T, Error>) -> Outcome<'_> {
    match result {
        Ok(_) => Outcome::Answered,
        Err(e) if is_outage(e) => Outcome::Outage(e),
        Err(e @ Error::Backend { .. }) => Outcome::Unclear(e),
        Err(_) => Outcome::Answered,
    }
}

fn is_connection_kind(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::BrokenPipe
            | ErrorKind::TimedOut
            | ErrorKind::UnexpectedEof
            | ErrorKind::AddrNotAvailable
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::NetworkDown
    )
}

/// What the breaker says about a call about to be made.
pub(crate) enum Admit<'a> {
    /// Go ahead; report the outcome with [`Breaker::record`].
    Call,
    /// Go ahead as the trial call; the guard reports the outcome (a dropped guard is a failure).
    Trial(Trial<'a>),
    /// Do not call: the backend is down. The error says since when.
    Refuse(Error),
}

/// One circuit breaker, shared by the clones of a [`Cache`](crate::Cache).
#[derive(Debug)]
pub(crate) struct Breaker {
    backend: &'static str,
    threshold: u32,
    max_delay: Duration,
    /// Connection failures in a row.
    failures: AtomicU32,
    /// Mirrors `state.is_some()`, so that the normal path costs one atomic load.
    open: AtomicBool,
    state: Mutex<Option<Open>>,
}

#[derive(Debug)]
struct Open {
    since: SystemTime,
    last_error: String,
    delay: Duration,
    next_trial: Instant,
    /// When the running trial call started, if one runs.
    trial_started: Option<Instant>,
}

impl Breaker {
    /// A breaker that opens after `threshold` connection failures in a row (at least 1).
    pub(crate) fn new(backend: &'static str, threshold: u32, max_delay: Duration) -> Self {
        Breaker {
            backend,
            threshold: threshold.max(1),
            max_delay: max_delay.max(FIRST_DELAY),
            failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
            state: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Open>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether calls are being refused (or tried) because the backend is down.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Whether a call may go to the backend now.
    pub(crate) fn admit(&self) -> Admit<'_> {
        if !self.open.load(Ordering::Acquire) {
            return Admit::Call;
        }
        let mut state = self.lock();
        let Some(open) = state.as_mut() else {
            return Admit::Call;
        };
        let now = Instant::now();
        // A trial that neither ends nor is dropped (a backend without a timeout of its own, on
        // a hung server) must not keep the breaker shut for good: after ten times the longest
        // delay, another call may try.
        let due = match open.trial_started {
            None => now >= open.next_trial,
            Some(started) => now >= started + self.max_delay * 10,
        };
        if due {
            open.trial_started = Some(now);
            return Admit::Trial(Trial {
                breaker: self,
                done: false,
            });
        }
        let next = if open.trial_started.is_some() {
            "a trial call is under way".to_owned()
        } else {
            let wait = open.next_trial.saturating_duration_since(now);
            format!("the next trial in {} ms", wait.as_millis())
        };
        Admit::Refuse(Error::backend_msg(
            self.backend,
            format!(
                "down since {} ({} connection failures in a row; the last: {}); calls fail at once \
                 until the server answers a trial call ({next})",
                utc(open.since),
                self.failures.load(Ordering::Relaxed),
                open.last_error,
            ),
        ))
    }

    /// Reports the outcome of a call admitted with [`Admit::Call`].
    pub(crate) fn record<T>(&self, result: &Result<T, Error>) {
        match outcome(result) {
            Outcome::Answered => self.answered(),
            Outcome::Outage(e) => self.failed(e, false),
            Outcome::Unclear(_) => {}
        }
    }

    fn answered(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.open.load(Ordering::Acquire) {
            let mut state = self.lock();
            if let Some(open) = state.take() {
                self.open.store(false, Ordering::Release);
                tracing::info!(
                    backend = self.backend,
                    "cache backend answers again after being down since {}; the circuit breaker is closed",
                    utc(open.since)
                );
            }
        }
    }

    fn failed(&self, error: &Error, trial: bool) {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let mut state = self.lock();
        match state.as_mut() {
            Some(open) => {
                open.last_error = error.to_string();
                if trial {
                    open.trial_started = None;
                    open.delay = (open.delay * 2).min(self.max_delay);
                    open.next_trial = Instant::now() + open.delay;
                }
            }
            None if failures >= self.threshold => {
                tracing::warn!(
                    backend = self.backend,
                    "cache backend failed {failures} times in a row; calls fail at once until it answers again: {error}"
                );
                *state = Some(Open {
                    since: SystemTime::now(),
                    last_error: error.to_string(),
                    delay: FIRST_DELAY,
                    next_trial: Instant::now() + FIRST_DELAY,
                    trial_started: None,
                });
                self.open.store(true, Ordering::Release);
            }
            None => {}
        }
    }
}

/// The one call let through while the breaker is open. Dropping it without an outcome (the
/// caller gave up) counts as a failed trial, so the next one is not blocked forever.
pub(crate) struct Trial<'a> {
    breaker: &'a Breaker,
    done: bool,
}

impl Trial<'_> {
    /// Reports the trial call's outcome.
    pub(crate) fn record<T>(mut self, result: &Result<T, Error>) {
        self.done = true;
        match outcome(result) {
            Outcome::Answered => self.breaker.answered(),
            // Only an answer proves the server back.
            Outcome::Outage(e) | Outcome::Unclear(e) => self.breaker.failed(e, true),
        }
    }
}

impl Drop for Trial<'_> {
    fn drop(&mut self) {
        if !self.done {
            let abandoned =
                Error::backend_msg(self.breaker.backend, "the trial call was abandoned");
            self.breaker.failed(&abandoned, true);
        }
    }
}

/// A failure that concerns one node of a backend (one Redis Cluster master, one shard, one
/// memcached server), found in the cause chain of the [`Error::Backend`] that
/// [`NodeBreakers::call`] returns. The cache's own breaker does not count it: the node's
/// breaker already did, and keys on other nodes still work.
#[derive(Debug)]
pub struct NodeFailure {
    node: String,
    cause: Error,
}

impl NodeFailure {
    /// The node that failed, as the backend names it (`host:port`).
    pub fn node(&self) -> &str {
        &self.node
    }
}

impl fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}: {}", self.node, self.cause)
    }
}

impl std::error::Error for NodeFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// One circuit breaker per node of a backend that spreads its keys over several servers: the
/// breaker of this module, kept per node by the backend crate, so that a dead server makes its
/// own keys fail fast (no wait for a connect or response timeout) while the keys of healthy
/// servers keep working. See the [module documentation](self).
///
/// The backend names its nodes (any stable string, `host:port` reads best in messages),
/// [`register`](Self::register)s those it knows of, and runs each call about one node through
/// [`call`](Self::call).
#[derive(Debug)]
pub struct NodeBreakers {
    backend: &'static str,
    threshold: u32,
    max_delay: Duration,
    nodes: Mutex<HashMap<String, Arc<Breaker>>>,
}

impl NodeBreakers {
    /// Breakers for the nodes of `backend` that open after [`DEFAULT_BREAKER_FAILURES`]
    /// connection failures in a row and try again at least every [`DEFAULT_BREAKER_MAX_DELAY`].
    pub fn new(backend: &'static str) -> Self {
        Self::with_limits(backend, DEFAULT_BREAKER_FAILURES, DEFAULT_BREAKER_MAX_DELAY)
    }

    /// Breakers that open after `failures` connection failures in a row (at least 1) and wait
    /// at most `max_delay` between trial calls.
    pub fn with_limits(backend: &'static str, failures: u32, max_delay: Duration) -> Self {
        NodeBreakers {
            backend,
            threshold: failures,
            max_delay,
            nodes: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Breaker>>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn breaker(&self, node: &str) -> Arc<Breaker> {
        let mut nodes = self.lock();
        if let Some(breaker) = nodes.get(node) {
            return breaker.clone();
        }
        let breaker = Arc::new(Breaker::new(self.backend, self.threshold, self.max_delay));
        nodes.insert(node.to_owned(), breaker.clone());
        breaker
    }

    /// Makes the backend's nodes known (adding to those already known), so that one node's
    /// failures are told from the whole backend's: only when every known node is down does a
    /// failure count as the backend's own.
    pub fn register<I, S>(&self, nodes: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for node in nodes {
            self.breaker(node.as_ref());
        }
    }

    /// The nodes whose breaker is open now.
    pub fn down(&self) -> Vec<String> {
        let mut down: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, b)| b.is_open())
            .map(|(node, _)| node.clone())
            .collect();
        down.sort();
        down
    }

    fn all_down(&self) -> bool {
        self.lock().values().all(|b| b.is_open())
    }

    /// Runs `call`, a call about `node` only, through that node's breaker: while the node is
    /// known to be down it fails at once; otherwise its outcome counts for the node (a call
    /// dropped before it ends counts as a failure: its caller gave up waiting; so calls to
    /// several nodes at once run to their ends, `join_all` rather than `try_join_all`, or a
    /// fast failure on one node would count against the others). A failure comes
    /// back marked with the node ([`NodeFailure`]), unless every known node is down: then it is
    /// the whole backend's, and the cache's own breaker counts it.
    pub async fn call<T>(
        &self,
        node: &str,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let breaker = self.breaker(node);
        let result = match breaker.admit() {
            Admit::Refuse(e) => return Err(self.scoped(node, e)),
            Admit::Trial(trial) => {
                let result = call.await;
                trial.record(&result);
                result
            }
            Admit::Call => {
                let pending = Pending {
                    breaker: &breaker,
                    done: false,
                };
                let result = call.await;
                pending.record(&result);
                result
            }
        };
        result.map_err(|e| match is_outage(&e) {
            true => self.scoped(node, e),
            false => e,
        })
    }

    /// Whether a failure that the cache saw about no node in particular (its own operation
    /// timeout) may still be one node's: some node is up. The cache's breaker leaves such
    /// failures to the nodes' breakers (a dropped call counts for its node).
    pub(crate) fn some_node_up(&self) -> bool {
        !self.all_down()
    }

    /// `error` marked as `node`'s, unless every known node is down (then it is the whole
    /// backend's).
    fn scoped(&self, node: &str, error: Error) -> Error {
        if self.all_down() {
            return error;
        }
        mark_node(self.backend, node, error)
    }
}

/// `error` marked as one node's ([`NodeFailure`]) if it is an outage (a connection failure or
/// a timeout), unchanged otherwise: for a backend over several servers that keeps each
/// server's health itself (memcached's pool marks a server down and takes it out of its ring)
/// and wants the cache's own breaker to leave one server's failures alone. Call it only while
/// some other server is up: when all are down, the failure is the whole backend's.
pub fn node_failure(backend: &'static str, node: &str, error: Error) -> Error {
    if !is_outage(&error) {
        return error;
    }
    mark_node(backend, node, error)
}

/// Work over several servers that goes on past a failing one (clearing, deleting by pattern):
/// every server is tried, and the first failure is the answer, so that the caller knows part
/// of the work did not happen. One home for that rule, for a backend over several servers and
/// for the callers that walk one.
///
/// ```
/// use webcache_core::backend::FirstFailure;
/// use webcache_core::Error;
///
/// let mut failures = FirstFailure::default();
/// let mut removed = 0;
/// for deleted in [Ok(2), Err(Error::backend_msg("redis", "node b is down")), Ok(3)] {
///     if let Some(n) = failures.keep(deleted) {
///         removed += n;
///     }
/// }
/// assert_eq!(removed, 5, "the servers after the failing one were still tried");
/// assert!(failures.or(removed).is_err());
/// ```
#[derive(Debug, Default)]
pub struct FirstFailure(Option<Error>);

impl FirstFailure {
    /// `result`'s value; `None` for an error, which is kept if it is the first.
    pub fn keep<T>(&mut self, result: Result<T, Error>) -> Option<T> {
        result.map_err(|e| self.0.get_or_insert(e)).ok()
    }

    /// `done` when nothing failed, the first failure otherwise.
    pub fn or<T>(self, done: T) -> Result<T, Error> {
        self.0.map_or(Ok(done), Err)
    }
}

fn mark_node(backend: &'static str, node: &str, error: Error) -> Error {
    // "redis failed: node N: SCAN on ... failed: ...", not "redis failed: node N: redis
    // failed: ...": the backend's own failure is named once.
    let message = match &error {
        Error::Backend {
            backend: same,
            message,
            ..
        } if *same == backend => format!("node {node}: {message}"),
        _ => format!("node {node}: {error}"),
    };
    Error::backend(
        backend,
        message,
        NodeFailure {
            node: node.to_owned(),
            cause: error,
        },
    )
}

/// A call admitted by a node's breaker while it is closed: dropped without an outcome (the
/// caller's own timeout gave up on it), it counts as a failure of the node.
struct Pending<'a> {
    breaker: &'a Breaker,
    done: bool,
}

impl Pending<'_> {
    fn record<T>(mut self, result: &Result<T, Error>) {
        self.done = true;
        self.breaker.record(result);
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            let abandoned = Error::Timeout {
                backend: self.breaker.backend,
                after: Duration::ZERO,
            };
            self.breaker.failed(&abandoned, false);
        }
    }
}

/// `2026-11-30 12:30:01 UTC`: a wall-clock time for messages, without a date crate.
fn utc(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Error {
        Error::backend(
            "test",
            "cannot connect",
            std::io::Error::from(ErrorKind::ConnectionRefused),
        )
    }

    #[test]
    fn what_counts_as_an_outage() {
        assert!(is_outage(&refused()));
        assert!(is_outage(&Error::Timeout {
            backend: "test",
            after: Duration::from_secs(1)
        }));
        // A cause further down the chain counts too.
        let wrapped = std::io::Error::other(std::io::Error::from(ErrorKind::BrokenPipe));
        assert!(is_outage(&Error::backend("test", "w", wrapped)));
        // The server answered, or the request was wrong: never an outage.
        assert!(!is_outage(&Error::backend_msg("test", "WRONGTYPE")));
        assert!(!is_outage(&Error::backend(
            "file",
            "cannot write",
            std::io::Error::from(ErrorKind::PermissionDenied)
        )));
        assert!(!is_outage(&Error::KeyNotFound { key: "k".into() }));
        assert!(!is_outage(&Error::InvalidKey {
            key: "k".into(),
            reason: "r".into()
        }));
    }

    #[test]
    fn a_nodes_failure_names_the_backend_once() {
        let err = node_failure("test", "10.0.0.1:6379", refused());
        assert_eq!(
            err.to_string(),
            "test failed: node 10.0.0.1:6379: cannot connect"
        );
        let timeout = Error::Timeout {
            backend: "test",
            after: Duration::from_secs(1),
        };
        assert_eq!(
            node_failure("test", "n", timeout).to_string(),
            "test failed: node n: test did not answer within 1s"
        );
        // The cause stays whole below it.
        let cause = std::error::Error::source(&err).expect("the node failure is the source");
        assert_eq!(
            cause.to_string(),
            "node 10.0.0.1:6379: test failed: cannot connect"
        );
    }

    #[test]
    fn opens_after_the_threshold_and_a_trial_closes_it() {
        let b = Breaker::new("test", 3, Duration::from_secs(1));
        for _ in 0..2 {
            assert!(matches!(b.admit(), Admit::Call));
            b.record::<()>(&Err(refused()));
        }
        // An answer in between resets the count; an unclear failure does not.
        b.record(&Ok(()));
        b.record::<()>(&Err(refused()));
        b.record::<()>(&Err(Error::backend_msg("test", "server 1 is marked down")));
        b.record::<()>(&Err(Error::KeyNotFound { key: "k".into() }));
        for _ in 0..3 {
            assert!(matches!(b.admit(), Admit::Call));
            b.record::<()>(&Err(refused()));
        }
        let Admit::Refuse(err) = b.admit() else {
            panic!("the breaker should be open");
        };
        let text = err.to_string();
        assert!(
            text.contains("down since") && text.contains("UTC"),
            "{text}"
        );
        assert!(err.is_backend_failure());
        // After the first delay, one trial goes through, and only one.
        std::thread::sleep(FIRST_DELAY * 2);
        let Admit::Trial(trial) = b.admit() else {
            panic!("a trial is due");
        };
        assert!(matches!(b.admit(), Admit::Refuse(_)));
        // A trial that gets no answer keeps the breaker open.
        trial.record::<()>(&Err(Error::backend_msg("test", "server 1 is marked down")));
        assert!(matches!(b.admit(), Admit::Refuse(_)));
        std::thread::sleep(FIRST_DELAY * 3);
        let Admit::Trial(trial) = b.admit() else {
            panic!("a trial is due");
        };
        trial.record(&Ok(()));
        assert!(matches!(b.admit(), Admit::Call));
    }

    #[test]
    fn a_trial_that_never_ends_does_not_block_the_next_for_good() {
        let max_delay = FIRST_DELAY;
        let b = Breaker::new("test", 1, max_delay);
        b.record::<()>(&Err(refused()));
        std::thread::sleep(FIRST_DELAY * 2);
        let Admit::Trial(hung) = b.admit() else {
            panic!("a trial is due");
        };
        assert!(matches!(b.admit(), Admit::Refuse(_)));
        std::thread::sleep(max_delay * 11);
        let Admit::Trial(next) = b.admit() else {
            panic!("a hung trial must not block the next one");
        };
        next.record(&Ok(()));
        assert!(matches!(b.admit(), Admit::Call));
        drop(hung);
    }

    #[test]
    fn an_abandoned_trial_reopens_with_a_longer_delay() {
        let b = Breaker::new("test", 1, Duration::from_secs(1));
        b.record::<()>(&Err(refused()));
        std::thread::sleep(FIRST_DELAY * 2);
        let Admit::Trial(trial) = b.admit() else {
            panic!("a trial is due");
        };
        drop(trial);
        assert!(matches!(b.admit(), Admit::Refuse(_)));
        let delay = b.lock().as_ref().map(|o| o.delay);
        assert_eq!(delay, Some(FIRST_DELAY * 2));
    }

    /// One node's failures open only its breaker and reach the cache marked as the node's (so
    /// the cache's breaker does not count them); once every known node is down, they are the
    /// whole backend's again.
    #[tokio::test]
    async fn node_breakers_keep_failures_to_their_node() {
        let nodes = NodeBreakers::with_limits("test", 2, Duration::from_secs(1));
        nodes.register(["a", "b"]);
        let cache = Breaker::new("test", 1, Duration::from_secs(1));
        for _ in 0..2 {
            let err = nodes
                .call::<()>("a", async { Err(refused()) })
                .await
                .unwrap_err();
            assert!(!is_outage(&err), "{err}");
            assert!(err.to_string().contains("node a"), "{err}");
            cache.record::<()>(&Err(err));
        }
        assert!(
            !cache.is_open(),
            "one node's failures opened the cache's breaker"
        );
        assert_eq!(nodes.down(), ["a"]);
        // Node a fails at once, without running the call; node b works.
        let err = nodes
            .call::<()>("a", async { panic!("a refused call ran") })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("fail at once"), "{err}");
        nodes.call("b", async { Ok(()) }).await.unwrap();
        // A call dropped before its end (the caller's own timeout) counts for its node.
        for _ in 0..2 {
            let hung = nodes.call::<()>("b", futures::future::pending());
            assert!(tokio::time::timeout(Duration::from_millis(1), hung)
                .await
                .is_err());
        }
        assert_eq!(nodes.down(), ["a", "b"]);
        assert!(!nodes.some_node_up());
        // Every node down: the backend as a whole is, and the cache's breaker counts it.
        std::thread::sleep(FIRST_DELAY * 2);
        let err = nodes
            .call::<()>("a", async { Err(refused()) })
            .await
            .unwrap_err();
        assert!(is_outage(&err), "{err}");
        // A trial that answers closes the node's breaker.
        std::thread::sleep(FIRST_DELAY * 3);
        nodes.call("b", async { Ok(()) }).await.unwrap();
        assert_eq!(nodes.down(), ["a"]);
        // Mistakes in a request are nobody's outage and pass unchanged.
        let err = nodes
            .call::<()>("b", async { Err(Error::KeyNotFound { key: "k".into() }) })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::KeyNotFound { .. }));
        assert!(matches!(
            node_failure("test", "b", Error::KeyNotFound { key: "k".into() }),
            Error::KeyNotFound { .. }
        ));
    }

    #[test]
    fn utc_formats_known_instants() {
        let at = |secs| utc(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(at(1_796_041_801), "2026-11-30 12:30:01 UTC");
    }
}
