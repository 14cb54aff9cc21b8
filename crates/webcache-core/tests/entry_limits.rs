//! The entry size limit (`max_entry_size`): a decompression bomb is refused from its header,
//! before anything is decompressed, as a miss plus a warning; a value over the limit is not
//! written.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use webcache_core::backend::entry::{self, Decoded};
use webcache_core::backend::Backend;
use webcache_core::backends::{LocMemBackend, LocMemConfig};
use webcache_core::bytes::Bytes;
use webcache_core::{Cache, CacheOptions, Error, Expiry, DEFAULT_MAX_ENTRY_SIZE};

use common::LogCapture;

/// A real LZ4 entry whose payload expands to `size` zero bytes: one literal zero, then one
/// match of offset 1 repeated for the whole length (the length spelled as a run of 255s, about
/// size / 255 bytes), then the five literals a block ends with.
fn bomb(size: usize) -> Bytes {
    let match_len = size - 6;
    let extra = match_len - 4 - 15;
    let mut out = vec![entry::MAGIC, entry::FORMAT_VERSION, 0, 1];
    out.extend_from_slice(&u32::try_from(size).unwrap().to_le_bytes());
    out.extend_from_slice(&[0x1F, 0x00, 0x01, 0x00]);
    out.resize(out.len() + extra / 255, 0xFF);
    out.push(u8::try_from(extra % 255).unwrap());
    out.extend_from_slice(&[0x50, 0, 0, 0, 0, 0]);
    Bytes::from(out)
}

/// The highest resident memory of this process so far, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn the_crafted_bomb_is_a_real_lz4_entry() {
    // Small enough to expand here: proves the bytes below are what they claim to be.
    let small = bomb(1 << 20);
    assert!(small.len() < 5_000, "{}", small.len());
    let Ok(Decoded::Bytes(zeros)) = entry::decode_limited(&small, 1 << 20) else {
        panic!("the crafted bomb does not decode");
    };
    assert!(zeros.len() == 1 << 20 && zeros.iter().all(|&b| b == 0));
    let Err(err) = entry::decode_limited(&small, (1 << 20) - 1) else {
        panic!("a limit one byte short let the entry through");
    };
    assert!(
        err.to_string().contains("1048576 bytes once decoded")
            && err.to_string().contains("max_entry_size"),
        "{err}"
    );
}

#[test]
fn a_header_that_lies_about_the_size_is_refused() {
    let real = bomb(1 << 16);
    // Claims fewer bytes than the payload expands to: the decompressor stops at the claim.
    let mut fewer = real.to_vec();
    fewer[4..8].copy_from_slice(&1000u32.to_le_bytes());
    assert!(entry::decode(&Bytes::from(fewer)).is_err());
    // Claims more: the payload does not fill it.
    let mut more = real.to_vec();
    more[4..8].copy_from_slice(&(1u32 << 20).to_le_bytes());
    let err = entry::decode(&Bytes::from(more)).unwrap_err();
    assert!(err.to_string().contains("header says"), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_gigabyte_bomb_is_a_miss_and_a_warning_without_being_expanded() {
    let log = LogCapture::start();
    let backend = Arc::new(LocMemBackend::private(LocMemConfig::default()));
    let cache = Cache::new(backend.clone(), CacheOptions::default());
    let gib = bomb(1 << 30);
    assert!(
        gib.len() < 5 << 20,
        "a 1 GiB bomb weighs {} bytes",
        gib.len()
    );
    let full = cache.make_key("bomb").unwrap();
    backend
        .set(&full, gib, Expiry::After(Duration::from_secs(60)))
        .await
        .unwrap();
    let before = peak_rss();
    for _ in 0..3 {
        assert!(cache.get_bytes("bomb").await.unwrap().is_none());
        assert!(cache.get::<String>("bomb").await.unwrap().is_none());
    }
    let grown = peak_rss().saturating_sub(before);
    assert!(
        grown < 256 << 20,
        "reading the bomb raised the peak memory by {grown} bytes: it was expanded"
    );
    log.assert_warned("1073741824 bytes once decoded");
    // get_or_set replaces it rather than expanding it on every call.
    let v: String = cache
        .get_or_set_with("bomb", 60, || async { "defused".to_owned() })
        .await
        .unwrap();
    assert_eq!(v, "defused");
    assert_eq!(
        cache.get::<String>("bomb").await.unwrap().as_deref(),
        Some("defused")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_limit_is_configurable_and_refuses_writes_too() {
    let log = LogCapture::start();
    let backend: Arc<dyn Backend> = Arc::new(LocMemBackend::private(LocMemConfig::default()));
    let roomy = Cache::new(backend.clone(), CacheOptions::default());
    let tight = Cache::new(
        backend,
        CacheOptions::builder().max_entry_size(1000).build(),
    );
    let big = vec![7u8; 2000];
    roomy.set_bytes("big", &big, 60).await.unwrap();
    assert!(roomy.get_bytes("big").await.unwrap().as_deref() == Some(&big[..]));
    // Compressed or not, the decoded size is what counts.
    roomy.set("text", &"x".repeat(100_000), 60).await.unwrap();
    assert!(roomy.get_raw("text").await.unwrap().unwrap().len() < 1000);
    assert!(tight.get_bytes("big").await.unwrap().is_none());
    assert!(tight.get::<String>("text").await.unwrap().is_none());
    log.assert_warned("more than the limit of 1000");

    // Writing over the limit is refused, and `set` leaves no stale value behind.
    tight.set_bytes("w", b"small", 60).await.unwrap();
    let err = tight.set_bytes("w", &big, 60).await.unwrap_err();
    assert!(
        matches!(err, Error::ValueTooLarge { ref key, size: 2000, limit: 1000 } if key == "w"),
        "{err:?}"
    );
    assert!(err.to_string().contains("max_entry_size"), "{err}");
    assert_eq!(tight.get_bytes("w").await.unwrap(), None);
    tight.set("s", "small", 60).await.unwrap();
    assert!(matches!(
        tight.set_many([("s", "x".repeat(5000))], 60).await,
        Err(Error::ValueTooLarge { .. })
    ));
    assert!(!tight.has_key("s").await.unwrap());
    assert!(matches!(
        tight.add("a", &"x".repeat(5000), 60).await,
        Err(Error::ValueTooLarge { .. })
    ));
    assert!(matches!(
        tight
            .get_or_set_with("g", 60, || async { "x".repeat(5000) })
            .await,
        Err(Error::ValueTooLarge { .. })
    ));
    assert!(!tight.has_key("g").await.unwrap());
}

#[test]
fn the_default_limit_is_64_mib() {
    assert_eq!(DEFAULT_MAX_ENTRY_SIZE, 64 << 20);
    assert_eq!(
        CacheOptions::default().max_entry_size,
        DEFAULT_MAX_ENTRY_SIZE
    );
}
