//! Sessions shared with a Django site: the records of Django's `cache` session engine
//! (`django.contrib.sessions.backends.cache`), read and written under the same keys, so a user
//! logged in on the Django side is logged in on the Rust side, and the other way round.
//!
//! Django keeps a session under the cache key `django.contrib.sessions.cache<session key>`
//! (with the cache's `KEY_PREFIX` and `VERSION`: `prefix:1:django.contrib.sessions.cache…`),
//! its value the session dictionary itself, and sends the session key in the `sessionid`
//! cookie (unsigned: only the key travels). [`DjangoSessionStore`] reads and writes those
//! records through a cache alias with `serializer = "django_json"`, the format of
//! django-redis's `JSONSerializer`; the Django side must use that serializer (its default,
//! pickle, cannot be read outside Python) and no compressor, and both sides the same Redis
//! database, `KEY_PREFIX` and `VERSION`.
//!
//! ```python
//! # settings.py on the Django side
//! CACHES = {"default": {
//!     "BACKEND": "django_redis.cache.RedisCache",
//!     "LOCATION": "redis://127.0.0.1:6379/2",
//!     "KEY_PREFIX": "shop",
//!     "OPTIONS": {"SERIALIZER": "django_redis.serializers.json.JSONSerializer"},
//! }}
//! SESSION_ENGINE = "django.contrib.sessions.backends.cache"
//! ```
//!
//! ```toml
//! # webcache.toml on the Rust side
//! [caches.default]
//! url = "redis://127.0.0.1:6379/2"
//! key_prefix = "shop"
//! serializer = "django_json"
//! ```
//!
//! What the store does as Django does: new session keys are 32 characters of `a-z0-9` from a
//! CSPRNG, created with `add` (never overwriting another session, retried on collision); the
//! record expires after `_session_expiry` seconds when the session holds an integer there,
//! otherwise after the cookie age ([`DjangoSessionStore::with_age`], Django's
//! `SESSION_COOKIE_AGE`, two weeks by default). A session key that Django would not have made
//! (not 8 to 64 characters of `a-z0-9`) is never looked up: it is no session. Values must be
//! JSON, which is what the JSON serializer allows on the Django side too (no datetimes or
//! model instances in the session without converting them).

use std::time::Duration;

use http::HeaderMap;
use rand::Rng;
use serde_json::{Map, Value};
use webcache_core::codec::Serializer;
use webcache_core::{Cache, Timeout};

/// The name of Django's session cookie (`SESSION_COOKIE_NAME`).
pub const DJANGO_SESSION_COOKIE: &str = "sessionid";

/// The prefix Django's cache session engine puts before a session key.
pub const DJANGO_KEY_PREFIX: &str = "django.contrib.sessions.cache";

/// Django's default `SESSION_COOKIE_AGE`: two weeks.
pub const DJANGO_SESSION_COOKIE_AGE: Duration = Duration::from_secs(14 * 24 * 3600);

/// The session key Django uses for the logged-in user's id.
pub const DJANGO_USER_ID: &str = "_auth_user_id";

/// The data of one session: Django's session dictionary.
pub type SessionData = Map<String, Value>;

/// Why a [`DjangoSessionStore`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DjangoSessionError {
    /// The cache does not write Django's format.
    #[error(
        "cache `{alias}` writes with the {serializer:?} serializer, which Django cannot read; \
         configure it with `serializer = \"django_json\"` (and django-redis with its JSONSerializer)"
    )]
    WrongSerializer {
        /// The alias.
        alias: String,
        /// Its serializer.
        serializer: Serializer,
    },
    /// No free session key was found (the cache kept answering that every new key exists).
    #[error("no free session key after {0} attempts; is the cache answering `add` correctly?")]
    NoFreeKey(u32),
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] webcache_core::Error),
}

/// How many fresh keys [`DjangoSessionStore::create`] tries before giving up (a collision of
/// 165-bit random keys means the cache is broken, not unlucky).
const CREATE_ATTEMPTS: u32 = 16;

/// Reads and writes Django's cache-session records; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct DjangoSessionStore {
    cache: Cache,
    age: Duration,
}

impl DjangoSessionStore {
    /// A store over `cache`, which must use the `django_json` serializer.
    pub fn new(cache: Cache) -> Result<Self, DjangoSessionError> {
        let serializer = cache.options().serializer;
        if serializer != Serializer::DjangoJson {
            return Err(DjangoSessionError::WrongSerializer {
                alias: cache.alias().to_owned(),
                serializer,
            });
        }
        Ok(DjangoSessionStore {
            cache,
            age: DJANGO_SESSION_COOKIE_AGE,
        })
    }

    /// Sessions without `_session_expiry` last `age` (set it to Django's
    /// `SESSION_COOKIE_AGE`).
    pub fn with_age(mut self, age: Duration) -> Self {
        self.age = age;
        self
    }

    /// The session key in the request's `sessionid` cookie, if it is one Django could have
    /// made.
    pub fn session_key_from_cookies(headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == DJANGO_SESSION_COOKIE)
            .map(|(_, value)| value.trim_matches('"'))
            .filter(|key| is_valid_key(key))
            .map(str::to_owned)
    }

    /// The data of the session `session_key`, or `None` when there is no such session (never
    /// created, expired, deleted, unreadable, or a key Django would not have made).
    pub async fn load(&self, session_key: &str) -> Result<Option<SessionData>, DjangoSessionError> {
        if !is_valid_key(session_key) {
            return Ok(None);
        }
        Ok(self.cache.get(&cache_key(session_key)).await?)
    }

    /// Creates a session holding `data` under a new key, and returns the key (the value of the
    /// `sessionid` cookie to send).
    pub async fn create(&self, data: &SessionData) -> Result<String, DjangoSessionError> {
        for _ in 0..CREATE_ATTEMPTS {
            let key = new_key();
            if self
                .cache
                .add(&cache_key(&key), data, self.timeout(data))
                .await?
            {
                return Ok(key);
            }
        }
        Err(DjangoSessionError::NoFreeKey(CREATE_ATTEMPTS))
    }

    /// Replaces the data of the session `session_key` (as Django's `save`).
    pub async fn save(
        &self,
        session_key: &str,
        data: &SessionData,
    ) -> Result<(), DjangoSessionError> {
        if !is_valid_key(session_key) {
            return Err(webcache_core::Error::InvalidKey {
                key: session_key.to_owned(),
                reason: "not a session key Django would make (8 to 64 characters of a-z0-9)"
                    .to_owned(),
            }
            .into());
        }
        self.cache
            .set(&cache_key(session_key), data, self.timeout(data))
            .await?;
        Ok(())
    }

    /// Ends the session `session_key` (log out); returns whether it existed.
    pub async fn delete(&self, session_key: &str) -> Result<bool, DjangoSessionError> {
        if !is_valid_key(session_key) {
            return Ok(false);
        }
        Ok(self.cache.delete(&cache_key(session_key)).await?)
    }

    /// The id of the user logged in to the session (`_auth_user_id`), if any.
    pub fn user_id(data: &SessionData) -> Option<&str> {
        data.get(DJANGO_USER_ID).and_then(Value::as_str)
    }

    /// How long the record lives: `_session_expiry` seconds when the session sets it as an
    /// integer (Django's `set_expiry(seconds)`), otherwise the cookie age.
    fn timeout(&self, data: &SessionData) -> Timeout {
        let seconds = data
            .get("_session_expiry")
            .and_then(Value::as_u64)
            .filter(|s| *s > 0);
        Timeout::After(seconds.map_or(self.age, Duration::from_secs))
    }
}

/// The cache key (before prefix and version) of a session.
fn cache_key(session_key: &str) -> String {
    format!("{DJANGO_KEY_PREFIX}{session_key}")
}

/// What Django's session keys look like (it makes 32 characters of `a-z0-9`; it accepts any
/// key of 8 characters or more, but only keys it made exist).
fn is_valid_key(key: &str) -> bool {
    (8..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A new session key as Django makes them: 32 characters of `a-z0-9` from a CSPRNG.
fn new_key() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_are_djangos() {
        let key = new_key();
        assert_eq!(key.len(), 32);
        assert!(is_valid_key(&key));
        assert_ne!(key, new_key());
        for bad in [
            "",
            "short",
            "ABCDEFGHIJ",
            "abc:1:defgh",
            "abcdefgh*",
            &"a".repeat(65),
        ] {
            assert!(!is_valid_key(bad), "{bad}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            "csrftoken=x; sessionid=abcdefgh12345678; theme=dark"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            DjangoSessionStore::session_key_from_cookies(&headers).as_deref(),
            Some("abcdefgh12345678")
        );
        headers.insert(http::header::COOKIE, "sessionid=../etc:*".parse().unwrap());
        assert_eq!(DjangoSessionStore::session_key_from_cookies(&headers), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any cookie header: no panic, and what is found is a valid key.
        #[test]
        fn cookie_parsing_never_panics(raw in prop::collection::vec(any::<u8>(), 0..128)) {
            let mut headers = HeaderMap::new();
            if let Ok(value) = http::HeaderValue::from_bytes(&raw) {
                headers.insert(http::header::COOKIE, value);
            }
            if let Some(key) = DjangoSessionStore::session_key_from_cookies(&headers) {
                prop_assert!(is_valid_key(&key));
            }
        }
    }
}
