//! The stored entry format, the same for every backend.
//!
//! ```text
//! integer values:  ASCII decimal digits, e.g. b"42" or b"-7"   (so INCR works natively)
//! everything else: [0xF5][format version = 1][codec][flags] [fresh until] [length] payload
//!                  codec: 0 = raw bytes, 1 = JSON
//!                  flags: bit 0 = payload is LZ4-compressed, preceded by its u32 LE length
//!                         bit 1 = the entry has a stale window: a u64 LE follows the header,
//!                                 the time it stops being fresh (milliseconds since the Unix
//!                                 epoch); the backend keeps it until its window ends
//! ```
//!
//! The fresh-until time is an extension of version 1, not a new version: an entry without a
//! stale window is byte for byte what earlier builds write and read, and every entry earlier
//! builds wrote reads as before. A build from before the extension reads an entry that has one
//! as unreadable (a miss plus a warning, its unknown flag named), and its `get_or_set` replaces
//! it with a plain entry, so processes of both builds can share a cache during an upgrade.
//!
//! `0xF5` can never start a UTF-8 string nor an integer, so a value written by another program
//! (or garbage) is recognised as foreign and read as a miss, never misread.
//!
//! The header tells the decoded size before anything is decompressed (the u32 length of a
//! compressed payload), so a reader refuses an entry larger than its limit
//! ([`DEFAULT_MAX_ENTRY_SIZE`], or the cache's `max_entry_size`) without allocating it: a small
//! compressed entry cannot make every reader expand a gigabyte of zeros. The decompressor is also
//! bounded by that length, so an entry that lies about it is refused as well.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

/// First byte of every framed entry.
pub const MAGIC: u8 = 0xF5;
/// The entry format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 4;
const FLAG_LZ4: u8 = 1;
const FLAG_FRESH_UNTIL: u8 = 2;
const KNOWN_FLAGS: u8 = FLAG_LZ4 | FLAG_FRESH_UNTIL;
/// The length prefix of a compressed payload.
const LEN_PREFIX: usize = 4;
/// The fresh-until time of an entry with a stale window.
const FRESH_UNTIL_LEN: usize = 8;

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
    Ok(frame(Codec::Json, &json, compress_min_bytes, None))
}

/// Encodes raw bytes as an entry.
pub fn encode_bytes(data: &[u8], compress_min_bytes: Option<usize>) -> Bytes {
    frame(Codec::Bytes, data, compress_min_bytes, None)
}

/// Encodes a serde value as a JSON entry that is fresh until `fresh_until` and stale after it
/// (see [`fresh_until`]). Integers are framed too (plain digits have no header to hold the
/// time), so `incr` does not apply to such an entry.
pub fn encode_json_fresh_until<T: Serialize + ?Sized>(
    value: &T,
    compress_min_bytes: Option<usize>,
    fresh_until: SystemTime,
) -> Result<Bytes, serde_json::Error> {
    let json = serde_json::to_vec(value)?;
    Ok(frame(
        Codec::Json,
        &json,
        compress_min_bytes,
        Some(fresh_until),
    ))
}

/// Encodes raw bytes as an entry that is fresh until `fresh_until` (see [`fresh_until`]).
pub fn encode_bytes_fresh_until(
    data: &[u8],
    compress_min_bytes: Option<usize>,
    fresh_until: SystemTime,
) -> Bytes {
    frame(Codec::Bytes, data, compress_min_bytes, Some(fresh_until))
}

/// When the entry in `raw` stops being fresh, read from its header alone; `None` for an entry
/// without a stale window (fresh until the backend drops it), an integer, or bytes that are
/// not an entry. Past that time the entry is stale: the backend still holds it until its
/// window ends, and [`Cache::get_or_set_with_stale`](crate::Cache::get_or_set_with_stale)
/// serves it while refreshing it.
pub fn fresh_until(raw: &[u8]) -> Option<SystemTime> {
    match header(raw) {
        Ok(Some(h)) => h.fresh_until,
        _ => None,
    }
}

/// Milliseconds since the Unix epoch, saturating (a time before the epoch is the epoch).
fn to_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The latest fresh-until time read: the end of year 9999, which every platform's clock holds.
const MAX_MILLIS: u64 = 253_402_300_799_999;

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms.min(MAX_MILLIS)))
        .unwrap_or(UNIX_EPOCH)
}

/// Encodes an integer the way `incr` expects it.
pub fn encode_integer(value: i64) -> Bytes {
    Bytes::from(value.to_string())
}

fn frame(
    codec: Codec,
    payload: &[u8],
    compress_min_bytes: Option<usize>,
    fresh_until: Option<SystemTime>,
) -> Bytes {
    let (window_flag, extension) = match fresh_until {
        Some(_) => (FLAG_FRESH_UNTIL, FRESH_UNTIL_LEN),
        None => (0, 0),
    };
    let head = |out: &mut BytesMut, flags: u8| {
        out.put_slice(&[MAGIC, FORMAT_VERSION, codec as u8, flags | window_flag]);
        if let Some(t) = fresh_until {
            out.put_u64_le(to_millis(t));
        }
    };
    if let Some(min) = compress_min_bytes {
        // A payload whose length does not fit the u32 prefix is stored uncompressed.
        if let (true, Ok(len)) = (payload.len() >= min, u32::try_from(payload.len())) {
            let compressed = lz4_flex::block::compress(payload);
            // Keep the compressed form only when it actually saves space.
            if compressed.len() + LEN_PREFIX < payload.len() {
                let mut out =
                    BytesMut::with_capacity(HEADER_LEN + extension + LEN_PREFIX + compressed.len());
                head(&mut out, FLAG_LZ4);
                out.put_u32_le(len);
                out.put_slice(&compressed);
                return out.freeze();
            }
        }
    }
    let mut out = BytesMut::with_capacity(HEADER_LEN + extension + payload.len());
    head(&mut out, 0);
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
    let Some(Header {
        size,
        compressed,
        payload_start,
        ..
    }) = header(raw)?
    else {
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
    let payload = if compressed {
        // At most `size` bytes are written: the decompressor fails rather than grow its output.
        let data = lz4_flex::block::decompress(&raw[payload_start..], size)
            .map_err(|e| CorruptEntry(format!("bad compressed payload: {e}")))?;
        if data.len() != size {
            return Err(CorruptEntry(format!(
                "the compressed payload holds {} bytes, its header says {size}",
                data.len()
            )));
        }
        Bytes::from(data)
    } else {
        raw.slice(payload_start..)
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
    Ok(header(raw)?.map(|h| h.size))
}

/// What the header of a framed entry says.
struct Header {
    /// The size of the value once decoded.
    size: usize,
    compressed: bool,
    /// Where the payload (compressed or not) starts.
    payload_start: usize,
    fresh_until: Option<SystemTime>,
}

/// Reads and checks the header of a framed entry; `None` for bytes that are not framed.
fn header(raw: &[u8]) -> Result<Option<Header>, CorruptEntry> {
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
    if flags & !KNOWN_FLAGS != 0 {
        return Err(CorruptEntry(format!("unknown flags {flags:#04x}")));
    }
    let mut at = HEADER_LEN;
    let mut fresh_until = None;
    if flags & FLAG_FRESH_UNTIL != 0 {
        let Some(&[a, b, c, d, e, f, g, h]) = raw.get(at..at + FRESH_UNTIL_LEN) else {
            return Err(CorruptEntry("truncated fresh-until time".into()));
        };
        fresh_until = Some(from_millis(u64::from_le_bytes([a, b, c, d, e, f, g, h])));
        at += FRESH_UNTIL_LEN;
    }
    let compressed = flags & FLAG_LZ4 != 0;
    let size = if compressed {
        let Some(&[a, b, c, d]) = raw.get(at..at + LEN_PREFIX) else {
            return Err(CorruptEntry("truncated compressed payload".into()));
        };
        at += LEN_PREFIX;
        u32::from_le_bytes([a, b, c, d]) as usize
    } else {
        raw.len() - at
    };
    Ok(Some(Header {
        size,
        compressed,
        payload_start: at,
        fresh_until,
    }))
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
    fn entries_without_a_window_are_the_version_1_format() {
        // Byte for byte what builds before the stale window wrote, so they still read them.
        assert_eq!(
            &encode_bytes(b"hi", None)[..],
            &[MAGIC, 1, 0, 0, b'h', b'i']
        );
        assert_eq!(
            &encode_json("hi", None).unwrap()[..],
            b"\xF5\x01\x01\x00\"hi\""
        );
        assert_eq!(fresh_until(&encode_bytes(b"hi", None)), None);
        assert_eq!(fresh_until(b"42"), None);
        assert_eq!(fresh_until(b"garbage"), None);
    }

    #[test]
    fn the_fresh_until_time_rides_in_the_header() {
        let at = UNIX_EPOCH + Duration::from_millis(1_780_000_000_123);
        let text = "stale ".repeat(1000);
        for min in [None, Some(16)] {
            let enc = encode_bytes_fresh_until(text.as_bytes(), min, at);
            assert_eq!(enc[3] & FLAG_FRESH_UNTIL, FLAG_FRESH_UNTIL);
            assert_eq!(fresh_until(&enc), Some(at));
            assert_eq!(decoded_size(&enc), Ok(Some(text.len())));
            assert_eq!(
                decode(&enc).unwrap(),
                Decoded::Bytes(Bytes::from(text.clone()))
            );
            let enc = encode_json_fresh_until(&text, min, at).unwrap();
            assert_eq!(fresh_until(&enc), Some(at));
            let Decoded::Json(json) = decode(&enc).unwrap() else {
                panic!("not json")
            };
            assert_eq!(serde_json::from_slice::<String>(&json).unwrap(), text);
        }
        // An integer with a window is framed: plain digits have no header to hold the time.
        let enc = encode_json_fresh_until(&42, None, at).unwrap();
        assert_eq!(enc[0], MAGIC);
        assert_eq!(
            decode(&enc).unwrap(),
            Decoded::Json(Bytes::from_static(b"42"))
        );
        // The time is kept to the millisecond; a time before the epoch is the epoch.
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(
            fresh_until(&encode_bytes_fresh_until(b"", None, before)),
            Some(UNIX_EPOCH)
        );
        // A time beyond what a clock holds is read as far away, not as already stale.
        let mut far = vec![MAGIC, 1, 0, FLAG_FRESH_UNTIL];
        far.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(fresh_until(&far).is_some_and(|t| t > SystemTime::now()));
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
            &[MAGIC, 1, 1, 4],
            // A window flag without its 8-byte time, or with the time but no length prefix.
            &[MAGIC, 1, 1, 2, 0, 0, 0],
            &[MAGIC, 1, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0],
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
                        let flags = flags % 5;
                        let mut raw = vec![MAGIC, FORMAT_VERSION, codec % 3, flags];
                        if flags & FLAG_FRESH_UNTIL != 0 {
                            raw.extend_from_slice(&u64::from(len).to_le_bytes());
                        }
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
                let until = UNIX_EPOCH + Duration::from_millis(u64::from(data.len() as u32) * 997);
                let windowed = encode_bytes_fresh_until(&data, min, until);
                prop_assert_eq!(fresh_until(&windowed), Some(until));
                prop_assert_eq!(decode(&windowed), Ok(Decoded::Bytes(Bytes::from(data.clone()))));
                let encoded = encode_bytes(&data, min);
                prop_assert_eq!(fresh_until(&encoded), None);
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
                windowed in any::<bool>(),
            ) {
                let mut raw = if windowed {
                    encode_bytes_fresh_until(&data, Some(0), SystemTime::now()).to_vec()
                } else {
                    encode_bytes(&data, Some(0)).to_vec()
                };
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
