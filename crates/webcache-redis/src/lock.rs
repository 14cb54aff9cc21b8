//! A distributed lock on Redis, and a `get_or_set` that computes once across processes.

use std::future::Future;
use std::time::{Duration, Instant};

use redis::{RedisResult, Script};
use serde::de::DeserializeOwned;
use serde::Serialize;
use webcache_core::{Cache, Error, Result, Timeout};

use crate::backend::RedisBackend;

/// Deletes the lock only if it still holds our token: a holder whose lock expired and was
/// taken by another process must not release the other's lock.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Extends the lock only if it still holds our token.
const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

/// A held lock: the key `SET NX PX` created with a random token.
///
/// Release it with [`release`](RedisLock::release). A lock that is never released (the
/// process died, the release failed) expires after its time to live, so it cannot block
/// others for ever; keep the time to live longer than the work it guards, or
/// [`extend`](RedisLock::extend) it.
#[derive(Debug)]
#[must_use = "a lock is held until released or expired"]
pub struct RedisLock {
    backend: RedisBackend,
    key: String,
    token: String,
}

impl RedisLock {
    /// The lock's key in Redis.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The random token that proves ownership (what [`RedisBackend::unlock`] needs).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Releases the lock. Returns `false` when it was no longer ours (it expired, and maybe
    /// another process holds it now, which this call leaves alone).
    pub async fn release(self) -> Result<bool> {
        self.backend.unlock(&self.key, &self.token).await
    }

    /// Gives the lock a new time to live from now; `false` when it is no longer ours.
    pub async fn extend(&self, ttl: Duration) -> Result<bool> {
        let script = Script::new(EXTEND);
        let mut invocation = script.key(&self.key);
        invocation
            .arg(&self.token)
            .arg(ttl.as_millis().max(1) as u64);
        let mut conn = self.backend.writer_for(&self.key);
        let extended: RedisResult<i64> = self
            .backend
            .bounded(invocation.invoke_async(&mut conn))
            .await?;
        Ok(extended.map_err(|e| self.backend.fail("lock extend", e))? == 1)
    }
}

impl RedisBackend {
    /// Takes the lock `key` (a final Redis key) for `ttl` if nobody holds it: `SET key token NX
    /// PX ttl` with a random token. `None` when another holder has it.
    pub async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<RedisLock>> {
        let token = format!("{:032x}", rand::random::<u128>());
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        let taken: Option<String> = self.write(key, "lock", &cmd).await?;
        Ok(taken.map(|_| RedisLock {
            backend: self.clone(),
            key: key.to_owned(),
            token,
        }))
    }

    /// Takes the lock `key` for `ttl`, retrying until `wait` has passed; `None` if it stayed
    /// taken.
    pub async fn lock(
        &self,
        key: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<RedisLock>> {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(lock) = self.try_lock(key, ttl).await? {
                return Ok(Some(lock));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Releases the lock `key` if it holds `token` (atomically, with a script); returns
    /// whether it did.
    pub async fn unlock(&self, key: &str, token: &str) -> Result<bool> {
        let script = Script::new(RELEASE);
        let mut invocation = script.key(key);
        invocation.arg(token);
        let mut conn = self.writer_for(key);
        let released: RedisResult<i64> = self.bounded(invocation.invoke_async(&mut conn)).await?;
        Ok(released.map_err(|e| self.fail("unlock", e))? == 1)
    }
}

/// How [`get_or_set_locked`] waits for another process's computation: the defaults, changed
/// with the setters of the same names (`#[non_exhaustive]`, so an option added later breaks no
/// caller), e.g. `LockOptions::default().wait(Duration::from_secs(30))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockOptions {
    /// The lock's time to live: longer than the computation takes.
    pub ttl: Duration,
    /// How long to wait for another process's value before computing it here anyway.
    pub wait: Duration,
    /// How often to look for the other process's value while waiting.
    pub poll: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            ttl: Duration::from_secs(30),
            wait: Duration::from_secs(10),
            poll: Duration::from_millis(25),
        }
    }
}

impl LockOptions {
    /// Sets `ttl`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets `wait`.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Sets `poll`.
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
}

/// [`Cache::try_get_or_set_with`] whose computation runs once across every process sharing
/// the Redis server, not only within this one: the computing process holds the lock
/// `prefix:version:key:lock`; the others wait (up to `options.wait`) for its value.
///
/// `cache` must store in the same Redis as `redis` (typically
/// `Cache::new(Arc::new(redis.clone()), options)`). If the lock cannot be taken because Redis
/// fails, the value is computed without it (and the cache's `on_error` decides about the
/// rest); if the waiting times out, it is computed here as well, so a crashed holder delays
/// others by at most `options.wait`.
///
/// ```no_run
/// # async fn demo() -> webcache_core::Result<()> {
/// use std::sync::Arc;
/// use webcache_core::{Cache, CacheOptions};
/// use webcache_redis::{get_or_set_locked, LockOptions, RedisBackend};
///
/// let redis = RedisBackend::from_url("redis://127.0.0.1:6379/2")?;
/// let cache = Cache::new(Arc::new(redis.clone()), CacheOptions::default());
/// let report: String = get_or_set_locked(&cache, &redis, "report", 60, LockOptions::default(), || async {
///     Ok::<_, webcache_core::Error>("expensive".to_owned())
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn get_or_set_locked<T, E, F, Fut>(
    cache: &Cache,
    redis: &RedisBackend,
    key: &str,
    timeout: impl Into<Timeout>,
    options: LockOptions,
    compute: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + Send,
    E: From<Error>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let timeout = timeout.into();
    cache
        .try_get_or_set_with(key, timeout, || async {
            let lock_key = format!("{}:lock", cache.make_key(key)?);
            let started = Instant::now();
            loop {
                let lock = match redis.try_lock(&lock_key, options.ttl).await {
                    Ok(lock) => lock,
                    Err(e) if e.is_backend_failure() => {
                        tracing::debug!(key, "computing without the Redis lock: {e}");
                        return compute().await;
                    }
                    Err(e) => return Err(E::from(e)),
                };
                if let Some(lock) = lock {
                    // The holder before us may have stored the value just before releasing.
                    if let Some(value) = cache.get::<T>(key).await? {
                        let _ = lock.release().await;
                        return Ok(value);
                    }
                    let result = compute().await;
                    if let Ok(value) = &result {
                        // Store before releasing, so that waiters find the value once the
                        // lock is gone.
                        cache.set(key, value, timeout).await?;
                    }
                    if let Err(e) = lock.release().await {
                        tracing::debug!(
                            key,
                            "releasing the Redis lock failed (it expires by itself): {e}"
                        );
                    }
                    return result;
                }
                // Someone else computes: wait for their value, or for their lock to go.
                loop {
                    if let Some(value) = cache.get::<T>(key).await? {
                        return Ok(value);
                    }
                    if started.elapsed() >= options.wait {
                        tracing::debug!(
                            key,
                            "waited {:?} for another process's value; computing it here",
                            options.wait
                        );
                        return compute().await;
                    }
                    tokio::time::sleep(options.poll).await;
                    if !redis.has_lock(&lock_key).await {
                        break;
                    }
                }
            }
        })
        .await
}

impl RedisBackend {
    /// Whether the lock `key` is held; a failure reads as "not held" so that waiters move on.
    async fn has_lock(&self, key: &str) -> bool {
        webcache_core::backend::Backend::has_key(self, key)
            .await
            .unwrap_or(false)
    }

    /// The connection for writes to `key`.
    pub(crate) fn writer_for(&self, key: &str) -> crate::conn::Conn {
        self.topology().writer_for(key.as_bytes())
    }
}
