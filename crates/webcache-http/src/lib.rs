#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// Library code answers every failure with an error, never a panic; tests may unwrap.
#![warn(clippy::unwrap_used)]

mod body;
pub mod conditional;
mod engine;
mod future;
mod gateway;
pub mod headers;
mod hop;
mod host;
mod key;
mod layer;
pub mod metrics;
mod page_key;
mod pages;
pub mod policy;
#[cfg(feature = "proxy")]
mod proxy;
mod purge;
mod service;
mod session_mark;
mod stored;
mod tags;

pub use body::{CacheBody, PageBody};
pub use conditional::{ConditionalGet, ConditionalGetLayer};
pub use future::{CachePageFuture, MapHeadersFuture};
pub use headers::{
    cache_control, never_cache, vary_on_cookie, vary_on_headers, CacheControlPatch,
    ResponseHeaders, ResponseHeadersLayer,
};
pub use layer::{
    cache_page, CacheLock, CachePageLayer, StampedeLock, DEFAULT_KEY_PREFIX, DEFAULT_MAX_BODY,
    DEFAULT_STAMPEDE_WAIT, DEFAULT_STORE_TIMEOUT, DEFAULT_TTL,
};
pub use page_key::{KeyFn, SkipFn, StoreFn, DEFAULT_IGNORED_QUERY_PARAMS};
pub use pages::{Pages, PurgeError};
pub use policy::{NotStored, Policy, SharedCachePolicy};
#[cfg(feature = "proxy")]
pub use proxy::{
    proxy_layer, proxy_router, proxy_router_with, proxy_router_with_origin, proxy_service, Origin,
    ProxyError,
};
pub use purge::{InvalidAddress, Purge, PurgeFuture, PurgeLayer, INVALIDATE_TAGS};
pub use service::CachePage;
pub use session_mark::SessionMark;
pub use stored::{inspect, StoredSummary};
pub use tags::{BadTags, PageTags, CACHE_TAG, SURROGATE_KEY};
