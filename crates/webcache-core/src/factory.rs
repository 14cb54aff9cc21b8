//! Building a backend from a cache URL: the [`BackendFactory`] each backend crate exports.
//!
//! Core only *parses* URLs (into a [`BackendSpec`]); which schemes exist is known by the
//! factories alone. The `webcache` crate's registry lists the factories compiled into a build
//! (and any a user registers), finds the one that answers for a spec's scheme and lets it build
//! the backend. A backend written outside this repository becomes configurable by URL by
//! implementing this trait and registering it.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::Backend;
use crate::backends::{DummyBackend, LocMemBackend, LOCMEM_OPTIONS};
use crate::config::{BackendSpec, ConfigError};

/// One URL scheme a factory answers for, with the usage shown in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    /// The scheme, lower case, without `:` (`redis`, `locmem`, ...).
    pub name: &'static str,
    /// How a URL of this scheme looks, for errors that list the accepted schemes
    /// (`redis://[user:pass@]host:port/db`).
    pub usage: &'static str,
}

/// Builds backends for some URL schemes: what a backend crate registers so that its backend can
/// be configured by URL or in `webcache.toml`.
///
/// ```
/// use std::sync::Arc;
/// use webcache::backend::{Backend, BackendFactory, Scheme};
/// use webcache::backends::DummyBackend;
/// use webcache::config::{BackendSpec, ConfigError};
///
/// #[derive(Debug)]
/// struct Nothing;
///
/// #[webcache::backend::async_trait]
/// impl BackendFactory for Nothing {
///     fn schemes(&self) -> &[Scheme] {
///         &[Scheme { name: "nothing", usage: "nothing://  (stores nothing either)" }]
///     }
///     fn options(&self) -> &[&str] {
///         &[]
///     }
///     async fn build(&self, spec: &mut BackendSpec) -> Result<Arc<dyn Backend>, ConfigError> {
///         spec.finish(self.options())?;
///         Ok(Arc::new(DummyBackend))
///     }
/// }
/// ```
#[async_trait]
pub trait BackendFactory: Send + Sync + fmt::Debug + 'static {
    /// The URL schemes this factory builds backends for.
    fn schemes(&self) -> &[Scheme];

    /// The backend's own options (besides the common ones every cache takes), for errors that
    /// list what is accepted.
    fn options(&self) -> &[&str];

    /// Builds the backend `spec` describes. Takes the options it knows from `spec` and refuses
    /// the others ([`BackendSpec::finish`] with [`options`](Self::options)). A bad URL or option
    /// is a [`ConfigError`] naming the field; whether a server is dialled here is the backend's
    /// choice (see its docs).
    async fn build(&self, spec: &mut BackendSpec) -> Result<Arc<dyn Backend>, ConfigError>;

    /// Whether this factory answers for `scheme` (lower case).
    fn answers(&self, scheme: &str) -> bool {
        self.schemes().iter().any(|s| s.name == scheme)
    }
}

/// The factory of [`LocMemBackend`]: `locmem://[name]?max_entries=N&max_bytes=N&cull_frequency=N`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocMemFactory;

#[async_trait]
impl BackendFactory for LocMemFactory {
    fn schemes(&self) -> &[Scheme] {
        &[Scheme {
            name: "locmem",
            usage: "locmem://[name]?max_entries=N&max_bytes=N&cull_frequency=N  (in-process, the default)",
        }]
    }

    fn options(&self) -> &[&str] {
        LOCMEM_OPTIONS
    }

    async fn build(&self, spec: &mut BackendSpec) -> Result<Arc<dyn Backend>, ConfigError> {
        Ok(Arc::new(LocMemBackend::from_spec(spec)?))
    }
}

/// The factory of [`DummyBackend`]: `dummy://`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DummyFactory;

#[async_trait]
impl BackendFactory for DummyFactory {
    fn schemes(&self) -> &[Scheme] {
        &[Scheme {
            name: "dummy",
            usage: "dummy://  (stores nothing)",
        }]
    }

    fn options(&self) -> &[&str] {
        &[]
    }

    async fn build(&self, spec: &mut BackendSpec) -> Result<Arc<dyn Backend>, ConfigError> {
        spec.finish(self.options())?;
        Ok(Arc::new(DummyBackend))
    }
}
