//! The registry builds caches from TOML and URLs, and explains mistakes.

use std::io::Write;

use webcache::config::ConfigError;
use webcache::Caches;

#[tokio::test]
async fn builds_aliases_from_urls_and_isolates_locmem_names() {
    let caches = Caches::from_urls([
        ("default", "locmem://registry-a?timeout=60"),
        ("other", "locmem://registry-b"),
        ("off", "dummy://"),
    ])
    .await
    .unwrap();
    assert_eq!(
        caches.aliases().collect::<Vec<_>>(),
        ["default", "off", "other"]
    );
    let default = caches.get("default").unwrap();
    default
        .set("k", "a", webcache::Timeout::Default)
        .await
        .unwrap();
    assert_eq!(
        caches
            .get("other")
            .unwrap()
            .get::<String>("k")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        caches.get("off").unwrap().get::<String>("k").await.unwrap(),
        None
    );
    // Same locmem name = same store, as Django's LOCATION.
    let again = Caches::from_url("locmem://registry-a").await.unwrap();
    assert_eq!(
        again
            .default_cache()
            .get::<String>("k")
            .await
            .unwrap()
            .as_deref(),
        Some("a")
    );
    let err = caches.get("sessions").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no cache alias `sessions`; configured aliases: default, off, other"
    );
}

#[tokio::test]
async fn builds_aliases_from_a_toml_file() {
    let dir = std::env::temp_dir().join(format!("webcache-registry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("webcache.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(
        f,
        "[caches.default]\nurl = \"locmem://toml\"\nkey_prefix = \"shop\"\nmax_entries = 10\ntimeout = \"forever\"\n\n[caches]\nsessions = \"locmem://toml-sessions\""
    )
    .unwrap();
    drop(f);
    let caches = Caches::from_toml_file(&path).await.unwrap();
    let default = caches.default_cache();
    assert_eq!(default.options().key_prefix, "shop");
    assert_eq!(default.make_key("k").unwrap(), "shop:1:k");
    default
        .set("k", &1, webcache::Timeout::Default)
        .await
        .unwrap();
    assert_eq!(default.ttl("k").await.unwrap(), webcache::Ttl::Forever);
    assert!(caches.get("sessions").is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_default_cache_is_the_default_alias_or_else_the_first_one() {
    let with_default = Caches::from_urls([("a", "locmem://dc-a"), ("default", "locmem://dc-d")])
        .await
        .unwrap();
    assert_eq!(with_default.default_cache().alias(), "default");
    // No `default` alias: the first in name order answers (never a panic).
    let without = Caches::from_urls([("zeta", "locmem://dc-z"), ("beta", "locmem://dc-b")])
        .await
        .unwrap();
    assert_eq!(without.default_cache().alias(), "beta");
    // And an empty configuration is refused where it is built, not where it is read.
    let empty = webcache::config::CachesConfig::from_urls(std::iter::empty::<(&str, &str)>());
    if let Ok(config) = empty {
        assert!(Caches::from_config(config).await.is_err());
    }
}

async fn error_of(url: &str) -> String {
    Caches::from_url(url).await.unwrap_err().to_string()
}

#[tokio::test]
async fn mistakes_are_explained() {
    assert_eq!(
        error_of("locmem://?max_entries=lots").await,
        "cache `default`: `max_entries`: `lots` is not valid; expected a whole number of entries"
    );
    assert!(error_of("locmem://?colour=blue")
        .await
        .contains("`colour`: unknown option for the `locmem` backend; accepted options: max_entries, max_bytes, cull_frequency, timeout"));
    assert!(error_of("ftp://host")
        .await
        .contains("unknown scheme `ftp`"));
    assert!(error_of("dummy://?timeout=-")
        .await
        .contains("`timeout`: `-` is not a timeout"));
    assert!(error_of("locmem://a/b").await.contains("not a locmem name"));
    let missing = Caches::from_config(Default::default()).await.unwrap_err();
    assert!(matches!(missing, ConfigError::Invalid { .. }));
    assert!(missing.to_string().contains("WEBCACHE_URL"));
}

#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn a_scheme_without_its_feature_names_the_feature() {
    assert!(error_of("redis://127.0.0.1:6379/0")
        .await
        .contains("needs webcache's `redis` cargo feature"));
}
