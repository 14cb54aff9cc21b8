//! What every test binary of this crate shares.
#![allow(dead_code)] // Not every test binary uses every helper.

use std::io::Write;
use std::sync::{Arc, Mutex};

use webcache_core::config::CacheConfig;
use webcache_core::{Cache, Error};
use webcache_redis::RedisBackend;

/// A backend built from a cache URL, as an application's configuration would build it.
pub(crate) async fn backend(url: &str) -> RedisBackend {
    let mut spec = CacheConfig::from_url("default", url).unwrap().backend;
    RedisBackend::from_spec(&mut spec).await.unwrap()
}

/// The warnings logged on this thread while the guard lives (a `#[tokio::test]` body runs on
/// the test's own thread, so the backend's warnings for its calls land here).
pub(crate) struct Warnings {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Warnings {
    pub(crate) fn capture() -> Warnings {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = SharedBuffer(buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        Warnings {
            buffer,
            _guard: webcache_testkit::logs::capture_on_this_thread(subscriber),
        }
    }

    /// Everything logged so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }
}

#[derive(Clone)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Values under the cache's prefix that webcache did not write and that are not Redis strings
/// (a list, a hash): a read is a miss with a warning naming the key and the type, `incr` is
/// [`Error::NotAnInteger`] (a mistake to fix, not a backend failure), the foreign value is left
/// alone by both, and `set` replaces it. `cli` runs a `redis-cli` command where the key lives.
pub(crate) async fn foreign_values_are_misses_and_not_integers(
    cache: &Cache,
    cli: impl Fn(&[&str]) -> String,
) {
    let list = cache.make_key("list").unwrap();
    let hash = cache.make_key("hash").unwrap();
    assert_eq!(cli(&["rpush", &list, "a", "b"]).trim(), "2");
    assert_eq!(cli(&["hset", &hash, "field", "value"]).trim(), "1");

    let warnings = Warnings::capture();
    assert_eq!(cache.get::<String>("list").await.unwrap(), None);
    assert_eq!(cache.get_bytes("hash").await.unwrap(), None);
    let logged = warnings.text();
    assert!(
        logged.contains(&list) && logged.contains("Redis list"),
        "the miss is logged with the key and the type: {logged}"
    );
    assert!(
        logged.contains(&hash) && logged.contains("Redis hash"),
        "the miss is logged with the key and the type: {logged}"
    );
    let found: std::collections::HashMap<String, String> =
        cache.get_many(["list", "hash"]).await.unwrap();
    assert!(found.is_empty(), "{found:?}");

    for key in ["list", "hash"] {
        let err = cache.incr(key, 1).await.unwrap_err();
        assert!(
            matches!(&err, Error::NotAnInteger { key: k } if k == key),
            "{err:?}"
        );
        assert!(!err.is_backend_failure(), "{err:?}");
    }
    assert_eq!(cli(&["llen", &list]).trim(), "2", "the list is untouched");

    cache.set("list", &41, 60).await.unwrap();
    assert_eq!(cache.incr("list", 1).await.unwrap(), 42);
}

/// Redis `INCRBY` takes only the canonical decimal form of an `i64`: anything else stored
/// under a key (`042`, ` 42`, `4.2`, a number past the `i64` range such as u64::MAX) is
/// [`Error::NotAnInteger`], a sum past the range is [`Error::Overflow`]; neither is a backend
/// failure, and the stored value is unchanged.
pub(crate) async fn incr_refusals_are_usage_errors(cache: &Cache, cli: impl Fn(&[&str]) -> String) {
    for (i, value) in ["042", " 42", "4.2", "18446744073709551615", "+1"]
        .into_iter()
        .enumerate()
    {
        let name = format!("odd{i}");
        let key = cache.make_key(&name).unwrap();
        assert_eq!(cli(&["set", &key, value]).trim(), "OK");
        let err = cache.incr(&name, 1).await.unwrap_err();
        assert!(
            matches!(&err, Error::NotAnInteger { key: k } if *k == name),
            "{value:?}: {err:?}"
        );
        assert_eq!(cli(&["get", &key]).trim_end_matches('\n'), value);
    }
    for (name, value, delta) in [
        ("max", i64::MAX, 1),
        ("min", i64::MIN, -1),
        ("far", 5, i64::MAX),
    ] {
        let key = cache.make_key(name).unwrap();
        assert_eq!(cli(&["set", &key, &value.to_string()]).trim(), "OK");
        let err = cache.incr(name, delta).await.unwrap_err();
        assert!(
            matches!(&err, Error::Overflow { key: k } if k == name),
            "{name}: {err:?}"
        );
        assert!(!err.is_backend_failure(), "{err:?}");
        assert_eq!(cli(&["get", &key]).trim(), value.to_string());
    }
}
