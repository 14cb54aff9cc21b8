//! Options apply in layers (defaults, the file, `WEBCACHE_URL`): an option a layer gives wins
//! over the layers before it even when it equals the default.
//!
//! One test in its own binary: it sets `WEBCACHE_URL`, which every test of a binary shares.

use std::io::Write;
use std::time::Duration;

use webcache::{Caches, Timeout};

#[tokio::test]
async fn webcache_url_options_win_over_the_file_even_when_they_equal_the_default() {
    let dir = std::env::temp_dir().join(format!("webcache-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("webcache.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(
        f,
        "[caches.default]\nurl = \"locmem://layers-file\"\ntimeout = 60\nversion = 2\n\
         key_prefix = \"shop\"\non_error = \"degrade\"\nmax_entries = 10\n"
    )
    .unwrap();
    drop(f);

    // Without the environment, the file's values hold.
    std::env::remove_var("WEBCACHE_URL");
    let caches = Caches::from_toml_file(&path).await.unwrap();
    let options = caches.default_cache().options();
    assert_eq!(
        options.default_timeout,
        Timeout::After(Duration::from_secs(60))
    );
    assert_eq!(options.version, 2);

    // The URL gives the defaults (300 s, version 1, raise) explicitly: they win.
    std::env::set_var(
        "WEBCACHE_URL",
        "locmem://layers-env?timeout=300&version=1&on_error=raise",
    );
    let caches = Caches::from_toml_file(&path).await.unwrap();
    let options = caches.default_cache().options();
    assert_eq!(
        options.default_timeout,
        Timeout::After(Duration::from_secs(300))
    );
    assert_eq!(options.version, 1);
    assert_eq!(options.on_error, webcache::OnError::Raise);
    // What the URL does not give keeps the file's value.
    assert_eq!(options.key_prefix, "shop");
    assert_eq!(caches.default_cache().make_key("k").unwrap(), "shop:1:k");

    // A fallback URL is a layer below the environment too.
    std::env::set_var("WEBCACHE_URL", "locmem://layers-env?version=1");
    let caches = Caches::from_env_or("locmem://layers-fallback?version=3&timeout=5")
        .await
        .unwrap();
    let options = caches.default_cache().options();
    assert_eq!(options.version, 1);
    assert_eq!(
        options.default_timeout,
        Timeout::After(Duration::from_secs(5))
    );

    std::env::remove_var("WEBCACHE_URL");
    std::fs::remove_dir_all(&dir).unwrap();
}
