//! A Rust service and a Django site sharing one Redis: values and sessions cross in both
//! directions, against a real Django 5.2 + django-redis (JSONSerializer) and a real
//! redis-server. The Django side is `tests/django/peer.py`, run with the Python that has Django
//! (`WEBCACHE_DJANGO_PYTHON`, else the venv `scripts/test` makes, else `python3`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use serde_json::{json, Value};
use webcache_core::codec::Serializer;
use webcache_core::{Cache, CacheOptions};
use webcache_sessions::django::{DjangoSessionStore, SessionData};
use webcache_testkit::servers::redis::RedisServer;

/// Where `scripts/test` installs Django and django-redis.
const VENV_PYTHON: &str = "/tmp/webcache-django-peer/bin/python";

/// A Python that can import Django and django-redis; fails the test saying what to install.
fn python() -> String {
    let candidates = std::env::var("WEBCACHE_DJANGO_PYTHON")
        .into_iter()
        .chain([VENV_PYTHON.to_owned(), "python3".to_owned()]);
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", "import django, django_redis"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return python;
        }
    }
    panic!(
        "these tests need Python 3 with Django 5.2 and django-redis: run scripts/test (it installs \
         them), or `python3 -m venv /tmp/webcache-django-peer && /tmp/webcache-django-peer/bin/pip \
         install 'django>=5.2,<6' 'django-redis>=6'`, or point WEBCACHE_DJANGO_PYTHON at a Python \
         that has them"
    );
}

/// Django's side: runs one command of `peer.py` and returns what it printed.
struct Django {
    python: String,
    redis_url: String,
    prefix: String,
}

impl Django {
    fn run(&self, args: &[&str]) -> Value {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/django/peer.py");
        let out = Command::new(&self.python)
            .arg(script)
            .args([&self.redis_url, &self.prefix])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "django {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Both sides on one Redis database under one random prefix.
async fn setup() -> (Cache, Django) {
    let python = python();
    let redis_url = RedisServer::shared().url(3);
    let prefix = format!("shop{:08x}", rand_u32());
    let mut config = webcache_core::config::CacheConfig::from_url("default", &redis_url).unwrap();
    let backend = webcache::build_backend(&mut config.backend).await.unwrap();
    let cache = Cache::new(
        Arc::clone(&backend),
        CacheOptions::builder()
            .key_prefix(prefix.clone())
            .serializer(Serializer::DjangoJson)
            .build(),
    );
    (
        cache,
        Django {
            python,
            redis_url,
            prefix,
        },
    )
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_cross_both_ways() {
    let (cache, django) = setup().await;
    // Django writes, Rust reads.
    django.run(&["write-cache"]);
    let got: Option<Value> = cache.get("from_django").await.unwrap();
    assert_eq!(
        got,
        Some(json!({"name": "Zoë", "list": [1, 2.5, null, true], "nested": {"a": "b"}}))
    );
    assert_eq!(cache.get::<i64>("count").await.unwrap(), Some(42));
    assert_eq!(cache.incr("count", 1).await.unwrap(), 43);
    assert_eq!(
        cache.get::<String>("text").await.unwrap().as_deref(),
        Some("42")
    );

    // Rust writes, Django reads.
    cache
        .set(
            "from_rust",
            &json!({"ids": [1, 2, 3], "ok": true, "name": "Zoë"}),
            60,
        )
        .await
        .unwrap();
    cache.set("n", &7, 60).await.unwrap();
    cache.set("s", "a string", 60).await.unwrap();
    assert_eq!(
        django.run(&["read-cache", "from_rust"]),
        json!({"ids": [1, 2, 3], "ok": true, "name": "Zoë"})
    );
    assert_eq!(django.run(&["read-cache", "n"]), json!(7));
    assert_eq!(django.run(&["read-cache", "count"]), json!(43));
    assert_eq!(django.run(&["read-cache", "s"]), json!("a string"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_logged_in_on_one_side_is_logged_in_on_the_other() {
    let (cache, django) = setup().await;
    let store = DjangoSessionStore::new(cache.clone()).unwrap();

    // Logged in on the Django side: the Rust side sees the user and the cart.
    let key = django.run(&["login", "17"]);
    let key = key.as_str().unwrap();
    let data = store.load(key).await.unwrap().expect("Django's session");
    assert_eq!(DjangoSessionStore::user_id(&data), Some("17"));
    assert_eq!(data["items"], json!(["from-django"]));

    // The Rust side adds to the cart; Django's own view (through its session middleware and
    // the sessionid cookie) sees it and adds another item.
    let mut data = data;
    data.insert("items".into(), json!(["from-django", "from-rust"]));
    store.save(key, &data).await.unwrap();
    let page = django.run(&["cart", key, "from-django-view"]);
    assert_eq!(
        page,
        json!({"items": ["from-django", "from-rust", "from-django-view"], "user": "17", "sessionid": key})
    );
    let data = store.load(key).await.unwrap().unwrap();
    assert_eq!(
        data["items"],
        json!(["from-django", "from-rust", "from-django-view"])
    );

    // Logged in on the Rust side: Django loads the session by its cookie.
    let mut mine = SessionData::new();
    mine.insert("_auth_user_id".into(), json!("99"));
    mine.insert("items".into(), json!(["rust"]));
    let rust_key = store.create(&mine).await.unwrap();
    assert_eq!(
        django.run(&["read-session", &rust_key]),
        json!({"_auth_user_id": "99", "items": ["rust"]})
    );
    let page = django.run(&["cart", &rust_key, "x"]);
    assert_eq!(page["user"], json!("99"));
    assert_eq!(page["items"], json!(["rust", "x"]));

    // Logging out on the Rust side ends it for Django too.
    assert!(store.delete(&rust_key).await.unwrap());
    assert_eq!(django.run(&["read-session", &rust_key]), Value::Null);
    assert!(store.load(&rust_key).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_over_another_serializer_is_refused() {
    let err = DjangoSessionStore::new(Cache::locmem()).unwrap_err();
    assert!(err.to_string().contains("django_json"), "{err}");
}
