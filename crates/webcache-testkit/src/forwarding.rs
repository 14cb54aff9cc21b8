//! [`Forwarding`]: a real backend seen through a wrapper that watches, or holds, some of its
//! calls. Tests use it to count a hit's backend reads, or to keep a page's write under way
//! for as long as they want, without writing out every method of [`Backend`] again.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use webcache_core::backend::{Backend, BackendStats, KeyRules, KeyStream, NodeBreakers};
use webcache_core::bytes::Bytes;
use webcache_core::{Expiry, Result, Ttl};

/// A call as [`Forwarding`]'s hook sees it: the [`Backend`] method's name and the keys it
/// names.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The method: `get`, `get_ready`, `set`, `add`, `delete_many`, ...
    pub method: &'static str,
    /// The keys it names.
    pub keys: Keys<'a>,
}

/// The keys a [`Call`] names.
#[derive(Debug, Clone, Copy)]
pub enum Keys<'a> {
    /// One key.
    One(&'a str),
    /// Several keys.
    Many(&'a [String]),
    /// This many entries (`set_many`).
    Entries(usize),
    /// None in particular (`clear`, `scan`, `stats`, `close`).
    All,
}

impl Call<'_> {
    /// How many keys this call reads (`get`, `get_ready`, `peek`, `has_key`, `get_many`).
    pub fn reads(&self) -> usize {
        match (self.method, self.keys) {
            ("get" | "get_ready" | "peek" | "has_key", _) => 1,
            ("get_many", Keys::Many(keys)) => keys.len(),
            _ => 0,
        }
    }
}

/// What the hook answers: the future the call waits for before it is forwarded (ready at once
/// for a hook that only watches).
pub type Hold = BoxFuture<'static, ()>;

/// Forwards every call to `inner`, after `hook` has seen it and the future it returned is
/// done (`get_ready` and `scan` answer without waiting: the hook sees them, and cannot hold
/// them). Transparent: [`Backend::inner`] is `inner`, so a cache over it still finds the real
/// backend's own extras.
pub struct Forwarding {
    inner: Arc<dyn Backend>,
    name: &'static str,
    hook: Box<dyn for<'a> Fn(Call<'a>) -> Hold + Send + Sync>,
}

impl Forwarding {
    /// `inner` seen through `hook`, under `name`.
    pub fn new(
        name: &'static str,
        inner: Arc<dyn Backend>,
        hook: impl for<'a> Fn(Call<'a>) -> Hold + Send + Sync + 'static,
    ) -> Forwarding {
        Forwarding {
            inner,
            name,
            hook: Box::new(hook),
        }
    }

    /// The hook's answer when it does not hold the call.
    pub fn go_on() -> Hold {
        Box::pin(std::future::ready(()))
    }

    /// What the hook makes of a call of `method` on `keys`.
    fn see(&self, method: &'static str, keys: Keys<'_>) -> Hold {
        (self.hook)(Call { method, keys })
    }
}

impl fmt::Debug for Forwarding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forwarding")
            .field("name", &self.name)
            .field("inner", &self.inner.name())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Backend for Forwarding {
    fn name(&self) -> &'static str {
        self.name
    }
    fn key_rules(&self) -> KeyRules {
        self.inner.key_rules()
    }
    fn inner(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    fn node_breakers(&self) -> Option<&NodeBreakers> {
        self.inner.node_breakers()
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.see("get", Keys::One(key)).await;
        self.inner.get(key).await
    }
    fn get_ready(&self, key: &str) -> Option<Option<Bytes>> {
        // Answered without waiting, so never held: a hook's future is dropped unawaited.
        let found = self.inner.get_ready(key)?;
        drop(self.see("get_ready", Keys::One(key)));
        Some(found)
    }
    async fn set(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<()> {
        self.see("set", Keys::One(key)).await;
        self.inner.set(key, value, expiry).await
    }
    async fn add(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        self.see("add", Keys::One(key)).await;
        self.inner.add(key, value, expiry).await
    }
    async fn set_if_present(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        self.see("set_if_present", Keys::One(key)).await;
        self.inner.set_if_present(key, value, expiry).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.see("delete", Keys::One(key)).await;
        self.inner.delete(key).await
    }
    async fn touch(&self, key: &str, expiry: Expiry) -> Result<bool> {
        self.see("touch", Keys::One(key)).await;
        self.inner.touch(key, expiry).await
    }
    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.see("incr", Keys::One(key)).await;
        self.inner.incr(key, delta).await
    }
    async fn ttl(&self, key: &str) -> Result<Ttl> {
        self.see("ttl", Keys::One(key)).await;
        self.inner.ttl(key).await
    }
    async fn clear(&self, prefix: Option<&str>) -> Result<()> {
        self.see("clear", Keys::All).await;
        self.inner.clear(prefix).await
    }
    fn scan(&self, pattern: &str) -> KeyStream {
        // The stream is handed back at once, so the call is seen but never held.
        drop(self.see("scan", Keys::All));
        self.inner.scan(pattern)
    }
    async fn stats(&self) -> Result<BackendStats> {
        self.see("stats", Keys::All).await;
        self.inner.stats().await
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>> {
        self.see("get_many", Keys::Many(keys)).await;
        self.inner.get_many(keys).await
    }
    async fn set_many(&self, entries: Vec<(String, Bytes)>, expiry: Expiry) -> Result<()> {
        self.see("set_many", Keys::Entries(entries.len())).await;
        self.inner.set_many(entries, expiry).await
    }
    async fn delete_many(&self, keys: &[String]) -> Result<u64> {
        self.see("delete_many", Keys::Many(keys)).await;
        self.inner.delete_many(keys).await
    }
    async fn peek(&self, key: &str) -> Result<Option<Bytes>> {
        self.see("peek", Keys::One(key)).await;
        self.inner.peek(key).await
    }
    async fn has_key(&self, key: &str) -> Result<bool> {
        self.see("has_key", Keys::One(key)).await;
        self.inner.has_key(key).await
    }
    async fn close(&self) -> Result<()> {
        self.see("close", Keys::All).await;
        self.inner.close().await
    }
}
