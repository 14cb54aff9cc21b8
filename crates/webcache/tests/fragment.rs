//! Template fragments over locmem and a real Redis: rendered once per key, stored under the
//! public key, invalidated from code; the minijinja `cache` function on both runtime flavors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use webcache::fragment::{fragment, fragment_key, try_fragment};
use webcache::{Cache, Caches};

async fn cache(backend: &str) -> Cache {
    let prefix = format!("f{}", rand_suffix());
    let url = match backend {
        "locmem" => format!("locmem://{prefix}"),
        #[cfg(feature = "redis")]
        "redis" => format!(
            "{}?key_prefix={prefix}",
            webcache_testkit::servers::redis::RedisServer::shared().url(0)
        ),
        other => panic!("no backend {other} in this build"),
    };
    Caches::from_url(&url)
        .await
        .unwrap()
        .default_cache()
        .clone()
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

async fn sidebar(cache: &Cache, user: &str, renders: &AtomicUsize) -> String {
    fragment(cache, "sidebar", &[&user], 60, || async {
        renders.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        format!("<aside>{user}</aside>")
    })
    .await
    .unwrap()
}

async fn fragments_render_once_per_key(backend: &str) {
    let cache = cache(backend).await;
    let renders = AtomicUsize::new(0);
    let all = futures::future::join_all((0..8).map(|_| sidebar(&cache, "alice", &renders))).await;
    assert!(all.iter().all(|html| html == "<aside>alice</aside>"));
    assert_eq!(
        renders.load(Ordering::SeqCst),
        1,
        "8 concurrent misses, one render"
    );
    assert_eq!(sidebar(&cache, "bob", &renders).await, "<aside>bob</aside>");
    assert_eq!(
        renders.load(Ordering::SeqCst),
        2,
        "another vary_on value, another fragment"
    );
    // Stored under the public key, which code can read and delete.
    let key = fragment_key("sidebar", &[&"alice"]);
    assert_eq!(
        cache.get::<String>(&key).await.unwrap().as_deref(),
        Some("<aside>alice</aside>")
    );
    assert!(cache.delete(&key).await.unwrap());
    sidebar(&cache, "alice", &renders).await;
    assert_eq!(renders.load(Ordering::SeqCst), 3);
    // A fragment written through a tagged handle goes with its tag.
    let tagged = cache.tagged(["product:42"]);
    let card = || async { format!("card {}", renders.fetch_add(1, Ordering::SeqCst)) };
    let first = fragment(&tagged, "card", &[&42], 60, card).await.unwrap();
    assert_eq!(
        fragment(&tagged, "card", &[&42], 60, card).await.unwrap(),
        first
    );
    cache.invalidate_tags(["product:42"]).await.unwrap();
    assert_ne!(
        fragment(&tagged, "card", &[&42], 60, card).await.unwrap(),
        first
    );
    // A failed render is returned and not stored.
    let failed: Result<String, webcache::Error> =
        try_fragment(&cache, "broken", &[], 60, || async {
            Err(webcache::Error::backend_msg("template", "no such variable"))
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(
        cache
            .get::<String>(&fragment_key("broken", &[]))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn locmem_fragments_render_once_per_key() {
    fragments_render_once_per_key("locmem").await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_fragments_render_once_per_key() {
    fragments_render_once_per_key("redis").await;
}

#[test]
fn fragment_keys_keep_values_apart() {
    // Django's `:`-joined MD5 gives these one key.
    assert_ne!(
        fragment_key("f", &[&"a:", &"b"]),
        fragment_key("f", &[&"a", &":b"])
    );
    assert_ne!(
        fragment_key("f", &[&"ab"]),
        fragment_key("f", &[&"a", &"b"])
    );
    assert_ne!(fragment_key("f", &[]), fragment_key("f", &[&""]));
    assert_eq!(fragment_key("f", &[&7]), fragment_key("f", &[&"7"]));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Two different lists of values never share a key; a key is printable ASCII.
    #[test]
    fn different_vary_on_lists_have_different_keys(
        a in proptest::collection::vec(".{0,6}", 0..4),
        b in proptest::collection::vec(".{0,6}", 0..4),
    ) {
        let key = |v: &[String]| {
            let values: Vec<&dyn std::fmt::Display> = v.iter().map(|s| s as &dyn std::fmt::Display).collect();
            fragment_key("name", &values)
        };
        proptest::prop_assert_eq!(a == b, key(&a) == key(&b));
        proptest::prop_assert!(key(&a).bytes().all(|c| c.is_ascii_graphic()));
    }
}

#[cfg(feature = "minijinja")]
mod templates {
    use super::*;
    use std::sync::Arc;

    use minijinja::{context, Environment};
    use webcache::fragment::minijinja::{add_to, block_on, render};

    const PAGE: &str = r#"<h1>{{ title }}</h1>{% call cache(60, "sidebar", user) %}<aside>{{ user }} #{{ count() }}: {{ upstream() }}</aside>{% endcall %}"#;

    /// An environment whose `count` counts the fragment's renders and whose `upstream` is
    /// async data, reached with `block_on`.
    fn env(cache: Cache, renders: Arc<AtomicUsize>) -> Arc<Environment<'static>> {
        let mut env = Environment::new();
        add_to(&mut env, cache);
        env.add_function("count", move || renders.fetch_add(1, Ordering::SeqCst) + 1);
        env.add_function("upstream", || {
            block_on(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                "fetched".to_owned()
            })
        });
        env.add_template("page.html", PAGE).unwrap();
        env.add_template(
            "forever.html",
            r#"{% call cache(none, "forever") %}x{% endcall %}"#,
        )
        .unwrap();
        env.add_template(
            "bad.html",
            r#"{% call cache("soon", "bad") %}x{% endcall %}"#,
        )
        .unwrap();
        env.add_template("plain.html", r#"{{ cache(60, "plain") }}"#)
            .unwrap();
        Arc::new(env)
    }

    async fn page(env: &Arc<Environment<'static>>, title: &str, user: &str) -> String {
        let (env, title, user) = (env.clone(), title.to_owned(), user.to_owned());
        render(move || {
            env.get_template("page.html")?
                .render(context! { title => title, user => user })
        })
        .await
        .unwrap()
    }

    async fn the_cache_function_stores_the_block(backend: &str) {
        let cache = cache(backend).await;
        let renders = Arc::new(AtomicUsize::new(0));
        let env = env(cache.clone(), renders.clone());
        assert_eq!(
            page(&env, "one", "<al>").await,
            "<h1>one</h1><aside>&lt;al&gt; #1: fetched</aside>"
        );
        // The block is not rendered again, nor escaped twice; the rest of the page is.
        assert_eq!(
            page(&env, "two", "<al>").await,
            "<h1>two</h1><aside>&lt;al&gt; #1: fetched</aside>"
        );
        assert_eq!(renders.load(Ordering::SeqCst), 1);
        // Code reaches the fragment by the same key: a template string and a Rust &str agree.
        let key = fragment_key("sidebar", &[&"<al>"]);
        assert!(cache.delete(&key).await.unwrap());
        assert!(page(&env, "three", "<al>").await.contains("#2"));
        assert!(page(&env, "four", "bob").await.contains("bob #3"));
        // `none` keeps it forever, as Django's `{% cache None %}`.
        let env2 = env.clone();
        render(move || env2.get_template("forever.html")?.render(()))
            .await
            .unwrap();
        assert_eq!(
            cache.ttl(&fragment_key("forever", &[])).await.unwrap(),
            webcache::Ttl::Forever
        );
        // Mistakes are template errors that say what to write.
        let env2 = env.clone();
        let bad = render(move || env2.get_template("bad.html")?.render(()))
            .await
            .unwrap_err();
        assert!(
            format!("{bad:#}").contains("not a number of seconds"),
            "{bad:#}"
        );
        let env2 = env.clone();
        let plain = render(move || env2.get_template("plain.html")?.render(()))
            .await
            .unwrap_err();
        assert!(format!("{plain:#}").contains("{% call cache("), "{plain:#}");
        // Rendered without `render`, the cache cannot be reached: an error, not a panic.
        let direct = env
            .get_template("page.html")
            .unwrap()
            .render(context! { title => "x", user => "carol" })
            .unwrap_err();
        assert!(
            format!("{direct:#}").contains("webcache::fragment::minijinja::render"),
            "{direct:#}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn locmem_on_a_current_thread_runtime() {
        the_cache_function_stores_the_block("locmem").await;
    }

    #[cfg(feature = "redis")]
    #[tokio::test(flavor = "current_thread")]
    async fn redis_on_a_current_thread_runtime() {
        the_cache_function_stores_the_block("redis").await;
    }

    #[cfg(feature = "redis")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_on_a_multi_thread_runtime() {
        the_cache_function_stores_the_block("redis").await;
    }
}
