//! The one error type of the cache API and of every backend.

use std::time::Duration;

/// A boxed error from a backend's client library (a socket error, a SQL error, ...).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a cache operation.
///
/// Backends return it from [`Backend`](crate::backend::Backend) methods and [`Cache`](crate::Cache)
/// returns it to callers. A corrupt or foreign stored entry is *not* an error: reading it is a
/// miss and a warning in the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `incr`/`decr` (or `incr_version`) on a key that is not in the cache.
    #[error("key `{key}` is not in the cache, so it cannot be incremented or decremented; `set` it first")]
    KeyNotFound {
        /// The key as the caller gave it.
        key: String,
    },
    /// `incr`/`decr` on a value that is not a 64-bit integer.
    #[error(
        "the value of key `{key}` is not an integer, so it cannot be incremented or decremented"
    )]
    NotAnInteger {
        /// The key as the caller gave it.
        key: String,
    },
    /// `incr`/`decr` would overflow a signed 64-bit integer.
    #[error("incrementing key `{key}` would overflow a 64-bit integer")]
    Overflow {
        /// The key as the caller gave it.
        key: String,
    },
    /// The key cannot be stored by this backend (too long, spaces or control characters).
    #[error("invalid cache key `{key}`: {reason}")]
    InvalidKey {
        /// The key as the caller gave it (possibly shortened for the message).
        key: String,
        /// What is wrong and what to change.
        reason: String,
    },
    /// The value is larger than the backend (or the cache's `max_entry_size`) accepts, so it was
    /// not stored. A `set` also removed any older value under the key, so no stale value stays.
    #[error("value of {size} bytes for key `{key}` is larger than the cache accepts ({limit} bytes): it was not stored, and on `set` the older value was removed; store less, or raise the limit (the cache's `max_entry_size`, or the server's item size)")]
    ValueTooLarge {
        /// The key as the caller gave it.
        key: String,
        /// The encoded size in bytes.
        size: usize,
        /// The backend's limit in bytes.
        limit: usize,
    },
    /// The value could not be serialized.
    #[error("cannot serialize the value for key `{key}`: {source}")]
    Serialize {
        /// The key as the caller gave it.
        key: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The backend did not answer in time.
    #[error("{backend} did not answer within {after:?}")]
    Timeout {
        /// The backend's name (`redis`, `memcached`, ...).
        backend: &'static str,
        /// The configured bound.
        after: Duration,
    },
    /// The backend failed (connection refused, server error, I/O error, ...).
    #[error("{backend} failed: {message}")]
    Backend {
        /// The backend's name (`redis`, `memcached`, ...).
        backend: &'static str,
        /// What failed, in words.
        message: String,
        /// The client library's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The backend cannot do this operation at all (for example `keys` on memcached).
    #[error("{backend} does not support {operation}: {why}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// The operation asked for.
        operation: &'static str,
        /// Why, and what to do instead.
        why: &'static str,
    },
}

impl Error {
    /// A backend failure with a message and the client library's error.
    pub fn backend(
        backend: &'static str,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            backend,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A backend failure described by a message only.
    pub fn backend_msg(backend: &'static str, message: impl Into<String>) -> Self {
        Error::Backend {
            backend,
            message: message.into(),
            source: None,
        }
    }

    /// Whether the error says the backend is unreachable or failing (as opposed to a mistake in
    /// the request such as a bad key). Only these are turned into misses in degrade mode.
    pub fn is_backend_failure(&self) -> bool {
        matches!(self, Error::Backend { .. } | Error::Timeout { .. })
    }

    /// Re-labels the key in key-carrying variants: backends see the final stored key, callers
    /// want to read the key they passed.
    pub(crate) fn with_user_key(self, user_key: &str) -> Self {
        let key = user_key.to_owned();
        match self {
            Error::KeyNotFound { .. } => Error::KeyNotFound { key },
            Error::NotAnInteger { .. } => Error::NotAnInteger { key },
            Error::Overflow { .. } => Error::Overflow { key },
            Error::ValueTooLarge { size, limit, .. } => Error::ValueTooLarge { key, size, limit },
            other => other,
        }
    }
}

/// With the `axum` feature, a handler can use `?` on cache calls: a backend that is down or
/// slow answers `503 Service Unavailable`, any other cache error `500 Internal Server Error`,
/// each with a short fixed text. The response never carries the key, the value or the
/// backend's message (they may be private); the full error goes to the log instead.
#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Error {
    fn into_response(self) -> axum_core::response::Response {
        use http::StatusCode;
        let (status, text) = if self.is_backend_failure() {
            (StatusCode::SERVICE_UNAVAILABLE, "cache unavailable\n")
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, "cache error\n")
        };
        tracing::error!(error = %self, status = status.as_u16(), "cache error answered");
        (status, text).into_response()
    }
}

/// `Result` with webcache's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
