//! The file backend of webcache (work in progress: not yet implemented).
#![forbid(unsafe_code)]

use std::sync::Arc;

use webcache_core::config::{BackendSpec, ConfigError};
use webcache_core::Backend;

/// Builds the backend a cache URL describes.
pub async fn from_spec(spec: &mut BackendSpec) -> Result<Arc<dyn Backend>, ConfigError> {
    Err(spec.error("url", "the file backend is not implemented yet"))
}
