use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::{Backend, BackendStats, KeyStream};
use crate::error::{Error, Result};
use crate::timeout::{Expiry, Ttl};

/// A cache that stores nothing, as Django's `DummyCache`: for development and for turning
/// caching off without changing code (`dummy://`).
///
/// Semantics: every read misses; `set` and `set_many` succeed and keep nothing; `add` returns
/// `true` (it "would have been stored"); `delete`, `touch` and `has_key` return `false`;
/// `incr`/`decr` fail with [`Error::KeyNotFound`]; `ttl` is [`Ttl::Missing`]; `keys` is empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct DummyBackend;

#[async_trait]
impl Backend for DummyBackend {
    fn name(&self) -> &'static str {
        "dummy"
    }

    async fn get(&self, _key: &str) -> Result<Option<Bytes>> {
        Ok(None)
    }

    async fn set(&self, _key: &str, _value: Bytes, _expiry: Expiry) -> Result<()> {
        Ok(())
    }

    async fn add(&self, _key: &str, _value: Bytes, _expiry: Expiry) -> Result<bool> {
        Ok(true)
    }

    async fn set_if_present(&self, _key: &str, _value: Bytes, _expiry: Expiry) -> Result<bool> {
        // Nothing is ever present.
        Ok(false)
    }

    async fn delete(&self, _key: &str) -> Result<bool> {
        Ok(false)
    }

    async fn touch(&self, _key: &str, _expiry: Expiry) -> Result<bool> {
        Ok(false)
    }

    async fn incr(&self, key: &str, _delta: i64) -> Result<i64> {
        Err(Error::KeyNotFound {
            key: key.to_owned(),
        })
    }

    async fn ttl(&self, _key: &str) -> Result<Ttl> {
        Ok(Ttl::Missing)
    }

    async fn clear(&self, _prefix: Option<&str>) -> Result<()> {
        Ok(())
    }

    fn scan(&self, _pattern: &str) -> KeyStream {
        Box::pin(futures::stream::empty())
    }

    async fn stats(&self) -> Result<BackendStats> {
        Ok(BackendStats {
            entries: Some(0),
            bytes: Some(0),
            extra: Vec::new(),
        })
    }
}
