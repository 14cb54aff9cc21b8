//! A backend written outside this repository (here, in this test file) is configured by URL and
//! in `webcache.toml` once its factory is registered, like the backends compiled in.

use std::io::Write;
use std::sync::Arc;

use webcache::backend::{Backend, BackendFactory, BackendStats, KeyStream, Scheme};
use webcache::backends::{LocMemBackend, LocMemConfig};
use webcache::bytes::Bytes;
use webcache::config::{BackendSpec, ConfigError};
use webcache::{Caches, Expiry, Ttl};

/// A backend of our own: an in-process store that remembers a `label` from its URL.
#[derive(Debug)]
struct LabelledBackend {
    label: String,
    store: LocMemBackend,
}

#[webcache::backend::async_trait]
impl Backend for LabelledBackend {
    fn name(&self) -> &'static str {
        "labelled"
    }
    fn inner(&self) -> Option<&dyn Backend> {
        Some(&self.store)
    }
    async fn get(&self, key: &str) -> webcache::Result<Option<Bytes>> {
        self.store.get(key).await
    }
    async fn set(&self, key: &str, value: Bytes, expiry: Expiry) -> webcache::Result<()> {
        self.store.set(key, value, expiry).await
    }
    async fn add(&self, key: &str, value: Bytes, expiry: Expiry) -> webcache::Result<bool> {
        self.store.add(key, value, expiry).await
    }
    async fn set_if_present(
        &self,
        key: &str,
        value: Bytes,
        expiry: Expiry,
    ) -> webcache::Result<bool> {
        self.store.set_if_present(key, value, expiry).await
    }
    async fn delete(&self, key: &str) -> webcache::Result<bool> {
        self.store.delete(key).await
    }
    async fn touch(&self, key: &str, expiry: Expiry) -> webcache::Result<bool> {
        self.store.touch(key, expiry).await
    }
    async fn incr(&self, key: &str, delta: i64) -> webcache::Result<i64> {
        self.store.incr(key, delta).await
    }
    async fn ttl(&self, key: &str) -> webcache::Result<Ttl> {
        self.store.ttl(key).await
    }
    async fn clear(&self, prefix: Option<&str>) -> webcache::Result<()> {
        self.store.clear(prefix).await
    }
    fn scan(&self, pattern: &str) -> KeyStream {
        self.store.scan(pattern)
    }
    async fn stats(&self) -> webcache::Result<BackendStats> {
        self.store.stats().await
    }
}

/// Its factory: the `labelled://` scheme with one option of its own, `label`.
#[derive(Debug)]
struct LabelledFactory;

#[webcache::backend::async_trait]
impl BackendFactory for LabelledFactory {
    fn schemes(&self) -> &[Scheme] {
        &[Scheme {
            name: "labelled",
            usage: "labelled://?label=TEXT",
        }]
    }
    fn options(&self) -> &[&str] {
        &["label"]
    }
    async fn build(&self, spec: &mut BackendSpec) -> Result<Arc<dyn Backend>, ConfigError> {
        let label = spec.take_str("label").unwrap_or_default();
        spec.finish(self.options())?;
        Ok(Arc::new(LabelledBackend {
            label,
            store: LocMemBackend::private(LocMemConfig::default()),
        }))
    }
}

#[tokio::test]
async fn a_registered_backend_is_configured_by_url_and_toml() {
    // Before it is registered, the scheme is unknown (and the error lists the known ones).
    let unknown = Caches::from_url("labelled://")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        unknown.contains("unknown scheme `labelled`")
            && unknown.contains("accepted schemes: locmem, dummy"),
        "{unknown}"
    );

    Caches::register(LabelledFactory);

    let caches = Caches::from_url("labelled://?label=from-url&timeout=5&key_prefix=app")
        .await
        .unwrap();
    let cache = caches.default_cache();
    assert_eq!(
        cache.backend_as::<LabelledBackend>().unwrap().label,
        "from-url"
    );
    // A wrapper is transparent to `backend_as`, whatever it is, through `Backend::inner`.
    assert!(cache.backend_as::<LocMemBackend>().is_some());
    cache
        .set("k", "v", webcache::Timeout::Default)
        .await
        .unwrap();
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("v")
    );
    // The common options were taken by the cache, not handed to the backend.
    assert_eq!(cache.options().key_prefix, "app");

    let dir = std::env::temp_dir().join(format!("webcache-outside-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("webcache.toml");
    write!(
        std::fs::File::create(&path).unwrap(),
        "[caches.default]\nurl = \"labelled://\"\nlabel = \"from-toml\"\n"
    )
    .unwrap();
    let caches = Caches::from_toml_file(&path).await.unwrap();
    let backend = caches
        .default_cache()
        .backend_as::<LabelledBackend>()
        .unwrap();
    assert_eq!(backend.label, "from-toml");
    std::fs::remove_dir_all(&dir).unwrap();

    // Its own options are checked like a built-in backend's, and listed when one is wrong.
    let err = Caches::from_url("labelled://?colour=blue")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "`colour`: unknown option for the `labelled` backend; accepted options: label, timeout"
        ),
        "{err}"
    );
    // Once registered, the scheme is among the accepted ones.
    let err = Caches::from_url("labeled://")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("accepted schemes: labelled, locmem"), "{err}");
}
