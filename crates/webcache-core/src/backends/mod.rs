//! The backends that need no server: [`LocMemBackend`] (the embedded default) and [`DummyBackend`].
//!
//! Server backends (Redis, Memcached, databases, files) live in their own crates and are
//! enabled by features of the `webcache` crate.

mod dummy;
mod locmem;
mod lru;
mod near;

pub use crate::factory::{DummyFactory, LocMemFactory};
pub use dummy::DummyBackend;
pub(crate) use locmem::OPTIONS as LOCMEM_OPTIONS;
pub use locmem::{
    LocMemBackend, LocMemConfig, DEFAULT_CULL_FREQUENCY, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES,
};
pub use near::{NearCache, DEFAULT_NEAR_MAX_ENTRIES};
