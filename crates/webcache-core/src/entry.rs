//! The stored entry format, the same for every backend.
//!
//! ```text
//! integer values:  ASCII decimal digits, e.g. b"42" or b"-7"   (so INCR works natively)
//! everything else: [0xF5][format version = 1][codec][flags] payload
//!                  codec: 0 = raw bytes, 1 = JSON
//!                  flags: bit 0 = payload is LZ4-compressed, preceded by its u32 LE length
//! ```
//!
//! `0xF5` can never start a UTF-8 string nor an integer, so a value written by another program
//! (or garbage) is recognised as foreign and read as a miss, never misread.
//!
//! The header tells the decoded size before anything is decompressed (the u32 length of a
//! compressed payload), so a reader refuses an entry larger than its limit
//! ([`DEFAULT_MAX_ENTRY_SIZE`], or the cache's `max_entry_size`) without allocating it: a small
//! compressed entry cannot make every reader expand a gigabyte of zeros. The decompressor is also
//! bounded by that length, so an entry that lies about it is refused as well.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

/// First byte of every framed entry.
pub const MAGIC: u8 = 0xF5;
/// The entry format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 4;
const FLAG_LZ4: u8 = 1;
/// The length prefix of a compressed payload.
const LEN_PREFIX: usize = 4;

/// The largest decoded (decompressed) value [`decode`] accepts, and the default of a cache's
/// `max_entry_size`: 64 MiB.
pub const DEFAULT_MAX_ENTRY_SIZE: usize = 64 << 20;

/// How the payload of a framed entry is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    /// Raw bytes, returned as they are (pages, blobs).
    Bytes = 0,
    /// JSON, for any serde type (readable in `redis-cli`).
    Json = 1,
}

/// A decoded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// An integer stored as ASCII digits.
    Integer(i64),
    /// A JSON document (decompressed).
    Json(Bytes),
    /// Raw bytes (decompressed).
    Bytes(Bytes),
}

/// Why stored bytes are not a readable entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt or foreign cache entry: {0}")]
pub struct CorruptEntry(pub String);

/// Encodes a serde value: integers as ASCII digits, anything else as a JSON entry.
pub fn encode_json<T: Serialize + ?Sized>(
    value: &T,
    compress_min_bytes: Option<usize>,
) -> Result<Bytes, serde_json::Error> {
    let json = serde_json::to_vec(value)?;
    if parse_integer(&json).is_some() {
        return Ok(Bytes::from(json));
    }
    Ok(frame(Codec::Json, &json, compress_min_bytes))
}

/// Encodes raw bytes as an entry.
pub fn encode_bytes(data: &[u8], compress_min_bytes: Option<usize>) -> Bytes {
    frame(Codec::Bytes, data, compress_min_bytes)
}

/// Encodes an integer the way `incr` expects it.
pub fn encode_integer(value: i64) -> Bytes {
    Bytes::from(value.to_string())
}

fn frame(codec: Codec, payload: &[u8], compress_min_bytes: Option<usize>) -> Bytes {
    if let Some(min) = compress_min_bytes {
        // A payload whose length does not fit the u32 prefix is stored uncompressed.
        if let (true, Ok(len)) = (payload.len() >= min, u32::try_from(payload.len())) {
            let compressed = lz4_flex::block::compress(payload);
            // Keep the compressed form only when it actually saves space.
            if compressed.len() + LEN_PREFIX < payload.len() {
                let mut out = BytesMut::with_capacity(HEADER_LEN + LEN_PREFIX + compressed.len());
                out.put_slice(&[MAGIC, FORMAT_VERSION, codec as u8, FLAG_LZ4]);
                out.put_u32_le(len);
                out.put_slice(&compressed);
                return out.freeze();
            }
        }
    }
    let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
    out.put_slice(&[MAGIC, FORMAT_VERSION, codec as u8, 0]);
    out.put_slice(payload);
    out.freeze()
}

/// Decodes stored bytes, accepting values up to [`DEFAULT_MAX_ENTRY_SIZE`]; see
/// [`decode_limited`].
pub fn decode(raw: &Bytes) -> Result<Decoded, CorruptEntry> {
    decode_limited(raw, DEFAULT_MAX_ENTRY_SIZE)
}

/// Decodes stored bytes, refusing an entry whose decoded value is larger than `max_size` bytes
/// before decompressing it. Never panics; anything unexpected is a [`CorruptEntry`].
pub fn decode_limited(raw: &Bytes, max_size: usize) -> Result<Decoded, CorruptEntry> {
    let Some(size) = decoded_size(raw)? else {
        return parse_integer(raw)
            .map(Decoded::Integer)
            .ok_or_else(|| CorruptEntry("it is neither a webcache entry nor an integer".into()));
    };
    if size > max_size {
        return Err(CorruptEntry(format!(
            "it holds {size} bytes once decoded, more than the limit of {max_size} \
             (raise the cache's `max_entry_size` if such values are expected)"
        )));
    }
    let flags = raw[3];
    let payload = if flags & FLAG_LZ4 != 0 {
        // At most `size` bytes are written: the decompressor fails rather than grow its output.
        let data = lz4_flex::block::decompress(&raw[HEADER_LEN + LEN_PREFIX..], size)
            .map_err(|e| CorruptEntry(format!("bad compressed payload: {e}")))?;
        if data.len() != size {
            return Err(CorruptEntry(format!(
                "the compressed payload holds {} bytes, its header says {size}",
                data.len()
            )));
        }
        Bytes::from(data)
    } else {
        raw.slice(HEADER_LEN..)
    };
    match raw[2] {
        0 => Ok(Decoded::Bytes(payload)),
        1 => Ok(Decoded::Json(payload)),
        other => Err(CorruptEntry(format!("unknown codec {other}"))),
    }
}

/// The size of the value a framed entry holds once decoded, read from its header alone; `None`
/// for bytes that are not framed (an integer or garbage). Checks the header on the way.
pub(crate) fn decoded_size(raw: &[u8]) -> Result<Option<usize>, CorruptEntry> {
    if raw.first() != Some(&MAGIC) {
        return Ok(None);
    }
    if raw.len() < HEADER_LEN {
        return Err(CorruptEntry("truncated header".into()));
    }
    if raw[1] != FORMAT_VERSION {
        return Err(CorruptEntry(format!(
            "entry format version {} (this build reads version {FORMAT_VERSION})",
            raw[1]
        )));
    }
    let flags = raw[3];
    if flags & !FLAG_LZ4 != 0 {
        return Err(CorruptEntry(format!("unknown flags {flags:#04x}")));
    }
    if flags & FLAG_LZ4 == 0 {
        return Ok(Some(raw.len() - HEADER_LEN));
    }
    match raw.get(HEADER_LEN..HEADER_LEN + LEN_PREFIX) {
        Some(&[a, b, c, d]) => Ok(Some(u32::from_le_bytes([a, b, c, d]) as usize)),
        _ => Err(CorruptEntry("truncated compressed payload".into())),
    }
}

/// Parses the canonical ASCII decimal form of an `i64` (what `incr` reads and writes): exactly
/// what `i64`'s `Display` writes, the rule of Redis's `INCRBY`. No sign but a leading `-`, no
/// leading zeros (`042`), no `-0`, no spaces: such values, written by another program, are not
/// integers, so `incr` refuses them on every backend instead of reading `042` as 42 on some.
pub fn parse_integer(raw: &[u8]) -> Option<i64> {
    let digits = raw.strip_prefix(b"-").unwrap_or(raw);
    let negative = digits.len() < raw.len();
    let canonical = match digits {
        [] => false,
        [b'0'] => !negative,
        [first, ..] => {
            *first != b'0' && digits.len() <= 19 && digits.iter().all(u8::is_ascii_digit)
        }
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_plain_digits() {
        assert_eq!(&encode_json(&42u8, None).unwrap()[..], b"42");
        assert_eq!(&encode_json(&-7i64, None).unwrap()[..], b"-7");
        assert_eq!(
            decode(&Bytes::from_static(b"-7")).unwrap(),
            Decoded::Integer(-7)
        );
        // u64 beyond i64 is framed JSON, not an incr-able integer.
        let big = encode_json(&u64::MAX, None).unwrap();
        assert_eq!(big[0], MAGIC);
    }

    #[test]
    fn only_canonical_decimals_are_integers() {
        for (raw, n) in [
            ("0", 0),
            ("7", 7),
            ("-7", -7),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
        ] {
            assert_eq!(parse_integer(raw.as_bytes()), Some(n), "{raw}");
        }
        for raw in [
            "",
            "-",
            "042",
            "00",
            "-0",
            "-042",
            "+1",
            " 1",
            "1 ",
            "1\n",
            "1.0",
            "1e3",
            "0x10",
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "١",
        ] {
            assert_eq!(parse_integer(raw.as_bytes()), None, "{raw:?}");
            // Not an integer, and not an entry either: a foreign value, read as a miss.
            assert!(
                decode(&Bytes::copy_from_slice(raw.as_bytes())).is_err(),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn round_trips_with_and_without_compression() {
        let text = "webcache ".repeat(1000);
        for min in [None, Some(16)] {
            let enc = encode_json(&text, min).unwrap();
            let Decoded::Json(payload) = decode(&enc).unwrap() else {
                panic!("not json")
            };
            assert_eq!(serde_json::from_slice::<String>(&payload).unwrap(), text);
            let enc = encode_bytes(text.as_bytes(), min);
            assert_eq!(
                decode(&enc).unwrap(),
                Decoded::Bytes(Bytes::from(text.clone()))
            );
        }
        assert!(encode_bytes(text.as_bytes(), Some(16)).len() < text.len() / 4);
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for raw in [
            &b""[..],
            b"hello",
            &[MAGIC],
            &[MAGIC, 9, 1, 0],
            &[MAGIC, 1, 7, 0],
            &[MAGIC, 1, 1, 0x80],
            &[MAGIC, 1, 1, 1, 0xff, 0xff, 0xff, 0x7f, 1, 2],
            &[MAGIC, 1, 1, 1, 10, 0, 0, 0, 0xff],
            b"12345678901234567890123",
        ] {
            assert!(decode(&Bytes::copy_from_slice(raw)).is_err(), "{raw:?}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Bytes that often look like an entry: framed headers with any flags and lengths.
        fn stored() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64),
                (
                    any::<u8>(),
                    any::<u8>(),
                    any::<u32>(),
                    prop::collection::vec(any::<u8>(), 0..64)
                )
                    .prop_map(|(codec, flags, len, body)| {
                        let mut raw = vec![MAGIC, FORMAT_VERSION, codec % 3, flags % 3];
                        raw.extend_from_slice(&len.to_le_bytes());
                        raw.extend_from_slice(&body);
                        raw
                    }),
                "-?[0-9]{0,21}".prop_map(String::into_bytes),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// Any stored bytes decode or are refused, never a panic; what decodes is what an
            /// encoder would have written, within the limit.
            #[test]
            fn decoding_never_panics(raw in stored(), limit in 0usize..128) {
                let raw = Bytes::from(raw);
                match decode_limited(&raw, limit) {
                    Err(_) => {}
                    Ok(Decoded::Integer(n)) => prop_assert_eq!(raw, Bytes::from(n.to_string())),
                    Ok(Decoded::Bytes(payload)) | Ok(Decoded::Json(payload)) => {
                        prop_assert_eq!(raw[0], MAGIC);
                        prop_assert!(payload.len() <= limit);
                        prop_assert_eq!(decoded_size(&raw), Ok(Some(payload.len())));
                    }
                }
            }

            /// Every integer encodes as digits that decode to it.
            #[test]
            fn integers_round_trip(n in any::<i64>()) {
                prop_assert_eq!(decode(&encode_integer(n)), Ok(Decoded::Integer(n)));
                prop_assert_eq!(encode_json(&n, Some(0)).unwrap(), Bytes::from(n.to_string()));
            }
        }

        // Fewer cases: compressing is slow in a debug build.
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            /// What is encoded decodes to itself, compressed or not, with any threshold.
            #[test]
            fn encoding_round_trips(
                data in prop::collection::vec(prop_oneof![Just(b'a'), any::<u8>()], 0..1024),
                min in prop::option::of(0usize..1024),
            ) {
                let encoded = encode_bytes(&data, min);
                prop_assert_eq!(decoded_size(&encoded), Ok(Some(data.len())));
                prop_assert_eq!(decode(&encoded), Ok(Decoded::Bytes(Bytes::from(data.clone()))));
                // One byte short of the size is refused, before decompressing.
                if !data.is_empty() {
                    prop_assert!(decode_limited(&encoded, data.len() - 1).is_err());
                }
                let text = String::from_utf8_lossy(&data).into_owned();
                let Ok(Decoded::Json(json)) = decode(&encode_json(&text, min).unwrap()) else {
                    return Err(TestCaseError::fail("a string did not encode as JSON"));
                };
                prop_assert_eq!(serde_json::from_slice::<String>(&json).unwrap(), text);
            }

            /// A damaged entry is refused or decodes to something of its declared size; it
            /// never panics.
            #[test]
            fn damaged_entries_never_panic(
                data in prop::collection::vec(prop_oneof![Just(b'z'), any::<u8>()], 1..512),
                at in any::<prop::sample::Index>(),
                byte in any::<u8>(),
            ) {
                let mut raw = encode_bytes(&data, Some(0)).to_vec();
                let i = at.index(raw.len());
                raw[i] = byte;
                let raw = Bytes::from(raw);
                if let Ok(Decoded::Bytes(payload) | Decoded::Json(payload)) = decode(&raw) {
                    prop_assert_eq!(decoded_size(&raw), Ok(Some(payload.len())));
                }
            }
        }
    }
}
