//! What [`#[cached]`](crate::cached) expands to calls. Hidden: its names are not a stable API;
//! the rules are written once in the attribute's docs (`webcache-macros`).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use webcache_core::backend::LogThrottle;
use webcache_core::{Cache, Error, Timeout, DEGRADE_LOG_INTERVAL};

use crate::Caches;

/// Where a memoized call finds its cache: the value of `cache = <expr>`, or the argument marked
/// `#[cache]`. The expansion calls it through a reference, so method-call auto-deref reaches
/// it through `&`, `Arc`, `LazyLock`, axum's `State` and the like.
pub trait CacheSource {
    /// The cache for `alias` (`None`: the default one).
    fn webcache_cache(&self, alias: Option<&str>) -> Result<Cache, Error>;
}

impl CacheSource for Cache {
    fn webcache_cache(&self, alias: Option<&str>) -> Result<Cache, Error> {
        match alias {
            Some(alias) if alias != self.alias() => Err(Error::backend_msg(
                "webcache",
                format!(
                    "#[cached(alias = \"{alias}\")] was given the `{}` cache itself; give it the `Caches` to choose from, or drop `alias`",
                    self.alias()
                ),
            )),
            _ => Ok(self.clone()),
        }
    }
}

impl CacheSource for Caches {
    fn webcache_cache(&self, alias: Option<&str>) -> Result<Cache, Error> {
        match alias {
            None => Ok(self.default_cache().clone()),
            Some(alias) => self
                .get(alias)
                .cloned()
                .map_err(|e| Error::backend("webcache", format!("#[cached]: {e}"), e)),
        }
    }
}

/// `OnceLock::get()`: `None` until the application has set its caches up.
impl<S: CacheSource + ?Sized> CacheSource for Option<&S> {
    fn webcache_cache(&self, alias: Option<&str>) -> Result<Cache, Error> {
        match self {
            Some(source) => source.webcache_cache(alias),
            None => Err(Error::backend_msg(
                "webcache",
                "#[cached]: the cache is not set up yet (its `cache = ...` expression gave None); set it up before the first call",
            )),
        }
    }
}

/// The default key: the function's path, `:`, the key arguments as a JSON array
/// (`app::users::profile:[7,"en"]`). One [`arg`](KeyBuilder::arg) call per argument, each at
/// the argument's span, so a type that is not `Serialize` is reported at its argument.
pub struct KeyBuilder {
    key: Result<String, Error>,
    path: &'static str,
    first: bool,
}

impl KeyBuilder {
    /// Starts the key of the function at `path`.
    pub fn new(path: &'static str) -> Self {
        KeyBuilder {
            key: Ok(format!("{path}:[")),
            path,
            first: true,
        }
    }

    /// Appends one argument.
    pub fn arg<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        if let Ok(key) = &mut self.key {
            if !self.first {
                key.push(',');
            }
            self.first = false;
            match serde_json::to_string(value) {
                Ok(json) => key.push_str(&json),
                Err(source) => {
                    self.key = Err(Error::Serialize {
                        key: self.path.to_owned(),
                        source,
                    })
                }
            }
        }
        self
    }

    /// The key, or the error of an argument that did not serialize.
    pub fn finish(self) -> Result<String, Error> {
        self.key.map(|mut key| {
            key.push(']');
            key
        })
    }
}

/// Gives an async block the function's return type, so `?` and `return` in the body mean what
/// they mean in the function.
pub fn typed<R, F: Future<Output = R>>(body: F) -> F {
    body
}

/// Why a memoized computation did not give a value to store.
#[derive(Debug)]
pub enum Fail<E> {
    /// The cache failed.
    Cache(Error),
    /// The body failed (or, for `Option`, gave `None`, which is not stored).
    Body(E),
}

impl<E> From<Error> for Fail<E> {
    fn from(e: Error) -> Self {
        Fail::Cache(e)
    }
}

impl<E: fmt::Display> fmt::Display for Fail<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Cache(e) => write!(f, "{e}"),
            Fail::Body(e) => write!(f, "{e}"),
        }
    }
}

/// A body that gave `None` where `None` is not stored.
#[derive(Debug)]
pub struct NotStored;

impl fmt::Display for NotStored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the function returned None, which is not cached")
    }
}

/// Never: the body of a function that cannot fail.
pub type Never = Infallible;

enum State<Fut: Future> {
    Pending(Pin<Box<Fut>>),
    Done(Fut::Output),
}

/// The body of a function without an error to return (`T`, `Option<T>`), run at most once per
/// call whatever the cache does: by the cache on a miss, or by the call itself when the cache
/// failed before running it. A value it gave is kept (a clone) for a cache that failed after.
pub struct Once<Fut: Future> {
    state: Arc<Mutex<State<Fut>>>,
    /// `Clone::clone` of the value, taken where `Clone` is required once (in [`Once::new`]),
    /// so a value that is not `Clone` is one error at the function, not one per call.
    copy: fn(&Fut::Output) -> Fut::Output,
}

impl<Fut: Future> Clone for Once<Fut> {
    fn clone(&self) -> Self {
        Once {
            state: self.state.clone(),
            copy: self.copy,
        }
    }
}

impl<Fut: Future> Once<Fut> {
    /// Holds `body` until it is run.
    pub fn new(body: Fut) -> Self
    where
        Fut::Output: Clone,
    {
        Once {
            state: Arc::new(Mutex::new(State::Pending(Box::pin(body)))),
            copy: Fut::Output::clone,
        }
    }

    /// Runs the body (or returns what it gave), keeping a copy of its value.
    pub async fn run(&self) -> Fut::Output {
        let mut state = self.state.lock().await;
        match &mut *state {
            State::Done(value) => (self.copy)(value),
            State::Pending(body) => {
                let value = body.as_mut().await;
                *state = State::Done((self.copy)(&value));
                value
            }
        }
    }

    /// The cache failed: logs it (at most one warning per interval), then gives the body's
    /// value, running the body if it has not run.
    pub async fn without_cache(self, function: &str, error: &Error) -> Fut::Output {
        log_uncached(function, error);
        self.run().await
    }
}

static UNCACHED_LOG: LazyLock<LogThrottle> =
    LazyLock::new(|| LogThrottle::new(DEGRADE_LOG_INTERVAL));

/// One warning per interval for calls that went on without their cache, the others at debug.
fn log_uncached(function: &str, error: &Error) {
    if UNCACHED_LOG.ready() {
        tracing::warn!(
            function,
            "#[cached] call went on without its cache (the function has no error to return it in): {error}"
        );
    } else {
        tracing::debug!(
            function,
            "#[cached] call went on without its cache: {error}"
        );
    }
}

/// An error stored by `cache_errors`, as its JSON: the stored value is `Result<T, StoredError>`,
/// so the calls that read and write it need no bound on the error type; [`ErrorCodec`] holds
/// the one place that does.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredError(serde_json::Value);

/// The `Serialize + DeserializeOwned` of a `cache_errors` function's error type, required once
/// (in [`ErrorCodec::new`], at the option), so an error type without them is one compile error
/// at the attribute, not one per call that stores or reads it.
pub struct ErrorCodec<E> {
    encode: fn(&E) -> serde_json::Result<serde_json::Value>,
    decode: fn(serde_json::Value) -> serde_json::Result<E>,
}

impl<E> Clone for ErrorCodec<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for ErrorCodec<E> {}

impl<E> ErrorCodec<E> {
    /// The codec of the error type of `Result<T, E>` (given as a `PhantomData` of the
    /// function's return type, so aliases such as `io::Result<T>` work).
    pub fn new<T>(_return_type: PhantomData<Result<T, E>>) -> Self
    where
        E: Serialize + DeserializeOwned,
    {
        ErrorCodec {
            encode: |error| serde_json::to_value(error),
            decode: serde_json::from_value,
        }
    }

    /// The error to store; `None` when it does not serialize (it is then returned, not stored).
    pub fn encode(&self, error: &E) -> Option<StoredError> {
        (self.encode)(error).ok().map(StoredError)
    }

    /// The stored error back. One that no longer reads as `E` (its type changed since it was
    /// stored) is deleted, so that the next call runs the body, and this call gets a cache
    /// error.
    pub async fn decode(&self, cache: &Cache, key: &str, stored: StoredError) -> Result<E, Error> {
        let decoded = self.decode_read(key, stored);
        if decoded.is_err() {
            let _ = cache.delete(key).await;
        }
        decoded
    }

    /// The stored error back, for the `_cached` sibling, which only reads.
    pub fn decode_read(&self, key: &str, stored: StoredError) -> Result<E, Error> {
        (self.decode)(stored.0).map_err(|e| {
            Error::backend(
                "webcache",
                format!("#[cached]: the error stored under `{key}` does not read as the function's error type"),
                e,
            )
        })
    }
}

/// `error_ttl`: an error this call computed and stored (with the function's ttl, through the
/// cache's single flight and lock) is kept for `error_ttl` instead. A failure to change it is
/// logged; the error then lives for the function's ttl.
pub async fn keep_error_for(cache: &Cache, key: &str, error_ttl: Timeout) {
    if let Err(e) = cache.touch(key, error_ttl).await {
        tracing::warn!(
            key,
            "#[cached(error_ttl)]: could not set the stored error's ttl, it is kept for the function's ttl: {e}"
        );
    }
}
