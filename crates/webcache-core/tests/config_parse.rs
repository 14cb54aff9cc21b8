//! The configuration parsers take text from files and the environment: arbitrary input never
//! panics, and a layer that parses overrides only what it gives.

use std::path::Path;

use proptest::prelude::*;
use webcache_core::config::{CacheConfig, CachesConfig};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_urls_and_files_never_panic(text in ".{0,80}", scheme in "(locmem|dummy|redis|file)") {
        let _ = CacheConfig::from_url("default", &text);
        let _ = CacheConfig::from_url("default", &format!("{scheme}://?{text}"));
        let _ = CachesConfig::from_toml_str(&text, Path::new("w.toml"));
        let _ = CachesConfig::default().with_default_url(&text);
    }

    /// Whatever version the file gives, a `WEBCACHE_URL` version replaces it, and a URL
    /// without one keeps it.
    #[test]
    fn the_later_layer_wins_for_what_it_gives(file in -5i64..5, url in -5i64..5) {
        let file_cfg = || CachesConfig::from_toml_str(
            &format!("[caches.default]\nurl = \"locmem://\"\nversion = {file}\n"),
            Path::new("w.toml"),
        ).unwrap();
        let merged = file_cfg().with_default_url(&format!("dummy://?version={url}")).unwrap();
        prop_assert_eq!(merged.get("default").unwrap().options.version, url);
        let kept = file_cfg().with_default_url("dummy://").unwrap();
        prop_assert_eq!(kept.get("default").unwrap().options.version, file);
    }
}
