//! Whatever bytes a backend holds, the cache serves a value only when they decode as an entry
//! of the requested kind: a decode error is a miss, never garbage and never a panic.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use webcache_core::backend::entry::{self, Decoded};
use webcache_core::backend::Backend;
use webcache_core::backends::{LocMemBackend, LocMemConfig};
use webcache_core::bytes::Bytes;
use webcache_core::{Cache, CacheOptions, Expiry};

/// Stored bytes: garbage, framed headers with any codec, flags and claimed length, digits.
fn stored() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        (
            0u8..5,
            prop_oneof![0u8..3, Just(8u8)],
            0u32..256,
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(codec, flags, len, body)| {
                let mut raw = vec![entry::MAGIC, entry::FORMAT_VERSION, codec, flags];
                if flags == 1 || flags == 8 {
                    raw.extend_from_slice(&len.to_le_bytes());
                }
                raw.extend_from_slice(&body);
                raw
            }),
        "-?[0-9 +]{0,21}".prop_map(String::into_bytes),
        "[\"a-z0-9{}:,]{0,16}".prop_map(|json| {
            let mut raw = vec![entry::MAGIC, entry::FORMAT_VERSION, 1, 0];
            raw.extend_from_slice(json.as_bytes());
            raw
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn only_what_decodes_is_served(raw in stored(), limit in 0usize..96) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let backend = Arc::new(LocMemBackend::private(LocMemConfig::default()));
        let cache = Cache::new(
            backend.clone(),
            CacheOptions::builder()
.max_entry_size(limit)
.build(),
        );
        let raw = Bytes::from(raw);
        let expected = entry::decode_limited(&raw, limit);
        let (bytes, value) = runtime.block_on(async {
            let full = cache.make_key("k").unwrap();
            backend
                .set(&full, raw.clone(), Expiry::After(Duration::from_secs(60)))
                .await
                .unwrap();
            (
                cache.get_bytes("k").await.unwrap(),
                cache.get::<serde_json::Value>("k").await.unwrap(),
            )
        });
        match &expected {
            Ok(Decoded::Bytes(payload)) => prop_assert_eq!(bytes.as_ref(), Some(payload)),
            _ => prop_assert_eq!(bytes, None),
        }
        // Every codec (JSON, MessagePack, postcard) is served only when it decodes and parses.
        let parsed = match &expected {
            Ok(decoded) => webcache_core::codec::deserialize(decoded.clone()).ok(),
            Err(_) => None,
        };
        prop_assert_eq!(value, parsed);
    }
}
