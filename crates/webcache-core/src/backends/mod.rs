//! The backends that need no server: [`LocMem`] (the embedded default) and [`Dummy`].
//!
//! Server backends (Redis, Memcached, databases, files) live in their own crates and are
//! enabled by features of the `webcache` crate.

mod dummy;
mod locmem;
mod lru;
mod near;

pub use dummy::Dummy;
pub use locmem::{
    LocMem, LocMemConfig, DEFAULT_CULL_FREQUENCY, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES,
};
pub use near::{NearCache, DEFAULT_NEAR_MAX_ENTRIES};
