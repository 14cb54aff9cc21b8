//! "Log out everywhere": a generation per user, checked when a session is loaded.
//!
//! A session logged in with `log_in` carries its user and the user's generation at that time
//! (in [`USER_FIELD`] of its data). The current generation of each user is one cache entry
//! (`<prefix>user.<user>`, a random number, kept forever). Ending all sessions of a user writes
//! a new random generation; every session that carries the old one is refused (and deleted)
//! at its next load, in every process, on every backend: it needs no atomic counter, no index
//! of ids to keep in step, and no scan of keys. A lost generation entry (evicted, or a cache
//! that was cleared) ends the user's sessions too: the safe side.

use rand::Rng;
use serde_json::json;
use tower_sessions::session::Record;
use tower_sessions::session_store::Result as StoreResult;
use tower_sessions::Session;
use webcache_core::{Cache, Timeout};

use crate::{backend, Keys};

/// The field of a session's data that ties it to its user (`{"user": ..., "generation": ...}`),
/// written by `log_in` of [`CacheStore`](crate::CacheStore) or
/// [`CachedDbStore`](crate::CachedDbStore). Handlers should leave it alone.
pub const USER_FIELD: &str = "_webcache.user";

/// Why logging in, or ending a user's sessions, failed.
#[derive(Debug, thiserror::Error)]
pub enum UserSessionError {
    /// The cache (or database) holding the user's generation failed.
    #[error("session store: {0}")]
    Cache(#[from] webcache_core::Error),
    /// The session itself could not be loaded or changed.
    #[error("session: {0}")]
    Session(#[from] tower_sessions::session::Error),
    /// The cache accepted no generation for the user (a cache in degrade mode whose server is
    /// down): the login would not be seen by `end_user_sessions`, so it is refused.
    #[error("the session store keeps no generation for this user (is the cache down?)")]
    Unavailable,
}

/// The generations of a store's users: in `cache`, and first in `durable` when the store has a
/// durable side (the `cached_db` engine), which is then the reference.
pub(crate) struct Generations<'a> {
    pub(crate) cache: &'a Cache,
    pub(crate) durable: Option<&'a Cache>,
    pub(crate) keys: &'a Keys,
}

impl Generations<'_> {
    /// Where a generation is decided: the database if any, else the cache.
    fn reference(&self) -> &Cache {
        self.durable.unwrap_or(self.cache)
    }

    /// The current generation of `user`, if any.
    async fn current(&self, user: &str) -> Result<Option<u64>, webcache_core::Error> {
        let key = self.keys.user_generation(user);
        let Some(durable) = self.durable else {
            return self.cache.get(&key).await;
        };
        match self.cache.get::<u64>(&key).await {
            Ok(Some(generation)) => return Ok(Some(generation)),
            Ok(None) => {}
            Err(e) => tracing::warn!(alias = self.cache.alias(), "generation read failed: {e}"),
        }
        let generation: Option<u64> = durable.get(&key).await?;
        if let Some(generation) = generation {
            let _ = self.cache.set(&key, &generation, Timeout::Forever).await;
        }
        Ok(generation)
    }

    /// The current generation of `user`, creating one if it has none. `add` makes two
    /// concurrent first logins agree on one generation.
    async fn current_or_new(&self, user: &str) -> Result<u64, UserSessionError> {
        if let Some(generation) = self.current(user).await? {
            return Ok(generation);
        }
        let key = self.keys.user_generation(user);
        let fresh: u64 = rand::rng().random();
        self.reference().add(&key, &fresh, Timeout::Forever).await?;
        let generation: Option<u64> = self.reference().get(&key).await?;
        let generation = generation.ok_or(UserSessionError::Unavailable)?;
        if self.durable.is_some() {
            let _ = self.cache.set(&key, &generation, Timeout::Forever).await;
        }
        Ok(generation)
    }

    /// Ends every session of `user`: a new generation, in the reference store first, then in
    /// the cache in front of it (an error there is returned: the cache would still accept the
    /// old sessions).
    pub(crate) async fn end(&self, user: &str) -> Result<(), UserSessionError> {
        let key = self.keys.user_generation(user);
        let fresh: u64 = rand::rng().random();
        self.reference().set(&key, &fresh, Timeout::Forever).await?;
        if self.durable.is_some() {
            self.cache.set(&key, &fresh, Timeout::Forever).await?;
        }
        Ok(())
    }

    /// Whether `record` may still be used: it is tied to no user, or to its user's current
    /// generation. A malformed tie is refused.
    pub(crate) async fn still_valid(&self, record: &Record) -> StoreResult<bool> {
        let Some(tie) = record.data.get(USER_FIELD) else {
            return Ok(true);
        };
        let (Some(user), Some(generation)) = (tie["user"].as_str(), tie["generation"].as_u64())
        else {
            return Ok(false);
        };
        let current = self.current(user).await.map_err(backend)?;
        Ok(current == Some(generation))
    }
}

/// Logs `session` in as `user` (see `CacheStore::log_in`).
pub(crate) async fn log_in(
    generations: &Generations<'_>,
    session: &Session,
    user: &str,
) -> Result<(), UserSessionError> {
    let generation = generations.current_or_new(user).await?;
    session.cycle_id().await?;
    session
        .insert(USER_FIELD, json!({"user": user, "generation": generation}))
        .await?;
    Ok(())
}
