//! Per-alias serializers and compressors: an alias switched from one to another keeps reading
//! what it wrote before (each entry names its codec), a zstd bomb is refused from its header,
//! and the options parse from URLs and TOML.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use webcache_core::backend::entry::{self, Decoded};
use webcache_core::backend::Backend;
use webcache_core::backends::{LocMemBackend, LocMemConfig};
use webcache_core::codec::{Compressor, Serializer};
use webcache_core::config::{CacheConfig, CachesConfig};
use webcache_core::{Cache, CacheOptions, Expiry};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    lines: Vec<(String, u32)>,
    note: Option<String>,
}

fn order() -> Order {
    Order {
        id: 7,
        lines: (0..300).map(|i| (format!("sku-{i}"), i)).collect(),
        note: Some("leave at the door".into()),
    }
}

fn cache(backend: &Arc<dyn Backend>, serializer: Serializer, compressor: Compressor) -> Cache {
    Cache::new(
        backend.clone(),
        CacheOptions::builder()
            .serializer(serializer)
            .compressor(compressor)
            .compress_min_bytes(256)
            .build(),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn an_alias_switched_to_another_codec_reads_its_old_entries() {
    let backend: Arc<dyn Backend> = Arc::new(LocMemBackend::private(LocMemConfig::default()));
    let settings = [
        (Serializer::Json, Compressor::Lz4),
        (Serializer::MsgPack, Compressor::Zstd),
        (Serializer::Postcard, Compressor::None),
        (Serializer::Postcard, Compressor::Zstd),
        (Serializer::MsgPack, Compressor::Lz4),
        (Serializer::Json, Compressor::Zstd),
        (Serializer::DjangoJson, Compressor::Lz4),
    ];
    // Each setting writes its own keys; then every setting reads every key.
    for (i, (s, c)) in settings.iter().enumerate() {
        let writer = cache(&backend, *s, *c);
        writer
            .set(&format!("order-{i}"), &order(), 60)
            .await
            .unwrap();
        writer.set(&format!("n-{i}"), &41, 60).await.unwrap();
        assert_eq!(writer.incr(&format!("n-{i}"), 1).await.unwrap(), 42);
        writer
            .set_bytes(&format!("page-{i}"), &[b'x'; 1000], 60)
            .await
            .unwrap();
    }
    let mut codecs = std::collections::BTreeSet::new();
    for (s, c) in settings {
        let reader = cache(&backend, s, c);
        for (i, (written_by, _)) in settings.iter().enumerate() {
            let got: Option<Order> = reader.get(&format!("order-{i}")).await.unwrap();
            // Django's plain JSON has no header: only a django_json alias reads it (to any
            // other, bytes without the header are foreign); everything else reads everywhere.
            let plain = *written_by == Serializer::DjangoJson && s != Serializer::DjangoJson;
            let expected = (!plain).then(order);
            assert_eq!(got, expected, "{s:?}/{c:?} reading order-{i}");
            let n: Option<i64> = reader.get(&format!("n-{i}")).await.unwrap();
            assert_eq!(n, Some(42));
            let page = reader.get_bytes(&format!("page-{i}")).await.unwrap();
            assert_eq!(page.as_deref(), Some(&[b'x'; 1000][..]));
            let raw = reader
                .get_raw(&format!("order-{i}"))
                .await
                .unwrap()
                .unwrap();
            codecs.insert(format!("{:?}", raw.get(..4)));
        }
    }
    // The entries really differ: JSON+LZ4, MessagePack+zstd, postcard plain, ...
    assert_eq!(codecs.len(), settings.len(), "{codecs:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_zstd_bomb_in_the_backend_is_a_miss() {
    let backend: Arc<dyn Backend> = Arc::new(LocMemBackend::private(LocMemConfig::default()));
    let reader = Cache::new(
        backend.clone(),
        CacheOptions::builder().max_entry_size(1 << 20).build(),
    );
    let frame = zstd_frame_of_zeros(32 << 20);
    for claimed in [32u32 << 20, 1000] {
        let mut raw = vec![entry::MAGIC, entry::FORMAT_VERSION, 1, 8];
        raw.extend_from_slice(&claimed.to_le_bytes());
        raw.extend_from_slice(&frame);
        let full = reader.make_key("bomb").unwrap();
        backend
            .set(&full, raw.into(), Expiry::After(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(reader.get::<String>("bomb").await.unwrap(), None);
    }
}

/// A zstd frame of `n` zeros, a few KiB long.
fn zstd_frame_of_zeros(n: usize) -> Vec<u8> {
    let raw = entry::encode_bytes_as(
        &vec![0u8; n],
        &webcache_core::codec::Encoding {
            compressor: Compressor::Zstd,
            compress_min_bytes: Some(0),
            ..Default::default()
        },
        entry::Meta::default(),
    );
    assert_eq!(raw[3], 8, "zstd flag");
    assert!(raw.len() < 8192, "{}", raw.len());
    let Ok(Decoded::Bytes(back)) = entry::decode_limited(&raw, n) else {
        panic!("not a real zstd entry");
    };
    assert_eq!(back.len(), n);
    raw[8..].to_vec()
}

#[test]
fn the_options_parse_from_urls_and_toml() {
    let c = CacheConfig::from_url(
        "default",
        "locmem://?serializer=msgpack&compressor=zstd&zstd_level=9&compress_min_bytes=512",
    )
    .unwrap();
    assert_eq!(c.options.serializer, Serializer::MsgPack);
    assert_eq!(c.options.compressor, Compressor::Zstd);
    assert_eq!(c.options.zstd_level, 9);
    assert_eq!(c.options.compress_min_bytes, Some(512));
    let toml = r#"
        [caches.default]
        url = "locmem://"
        serializer = "django_json"
        compressor = "none"
        [caches.pages]
        url = "locmem://pages"
        serializer = "postcard"
    "#;
    let all = CachesConfig::from_toml_str(toml, Path::new("webcache.toml")).unwrap();
    assert_eq!(all.caches[0].options.serializer, Serializer::DjangoJson);
    assert_eq!(all.caches[0].options.compressor, Compressor::None);
    assert_eq!(all.caches[1].options.serializer, Serializer::Postcard);
    assert_eq!(all.caches[1].options.compressor, Compressor::Lz4);

    for (url, says) in [
        (
            "locmem://?serializer=pickle",
            "\"json\", \"msgpack\", \"postcard\" or \"django_json\"",
        ),
        ("locmem://?compressor=gzip", "\"lz4\", \"zstd\" or \"none\""),
        ("locmem://?zstd_level=99", "out of range"),
        ("locmem://?zstd_level=high", "a zstd level from"),
    ] {
        let err = CacheConfig::from_url("default", url)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{url}: {err}");
    }
}
