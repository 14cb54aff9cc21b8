//! The stored entry format, the same for every backend.
//!
//! ```text
//! integer values:  ASCII decimal digits, e.g. b"42" or b"-7"   (so INCR works natively)
//! everything else: [0xF5][format version = 1][codec][flags] [fresh until] [length] payload
//!                  codec: 0 = raw bytes, 1 = JSON, 2 = MessagePack, 3 = postcard
//!                  flags: bit 0 = payload is LZ4-compressed, preceded by its u32 LE length
//!                         bit 1 = the entry has a stale window: a u64 LE follows the header,
//!                                 the time it stops being fresh (milliseconds since the Unix
//!                                 epoch); the backend keeps it until its window ends
//!                         bit 2 = the entry carries tags: after the fresh-until time (if any),
//!                                 a u16 LE count, then per tag a u16 LE length, the tag's
//!                                 UTF-8 name and the u64 LE version it had when the value
//!                                 was read (see `Cache::tagged`)
//!                         bit 3 = payload is zstd-compressed, preceded by its u32 LE length
//!                                 (never together with bit 0)
//! django_json:     plain JSON, no header (see `Serializer::DjangoJson`)
//! ```
//!
//! The codec and the compression are read from each entry's header, never from the reader's
//! settings ([`crate::codec`]): an alias whose serializer or compressor changed keeps
//! reading what it wrote before. A build that does not know a codec or a compression flag reads
//! such an entry as unreadable (a miss plus a warning).
//!
//! The fresh-until time and the tags are extensions of version 1, not a new version: an entry
//! without them is byte for byte what earlier builds write and read, and every entry earlier
//! builds wrote reads as before. A build from before an extension reads an entry that has it
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
//! bounded by that length, so an entry that lies about it is refused as well. Both rules hold
//! for LZ4 and zstd alike (a zstd frame is decompressed into a buffer of the declared size at
//! most, and fails when it would need more).

use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::codec::{self, Compressor, Encoding, Serializer};

/// First byte of every framed entry.
pub const MAGIC: u8 = 0xF5;
/// The entry format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 4;
const FLAG_LZ4: u8 = 1;
const FLAG_FRESH_UNTIL: u8 = 2;
const FLAG_TAGS: u8 = 4;
const FLAG_ZSTD: u8 = 8;
const KNOWN_FLAGS: u8 = FLAG_LZ4 | FLAG_FRESH_UNTIL | FLAG_TAGS | FLAG_ZSTD;
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
    /// MessagePack (maps with field names).
    MsgPack = 2,
    /// postcard.
    Postcard = 3,
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
    /// A MessagePack document (decompressed).
    MsgPack(Bytes),
    /// A postcard document (decompressed).
    Postcard(Bytes),
}

/// Why stored bytes are not a readable entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt or foreign cache entry: {0}")]
pub struct CorruptEntry(pub String);

/// What an entry's header carries besides its value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta<'a> {
    /// When the value stops being fresh (it has a stale window after that); see
    /// [`fresh_until`].
    pub fresh_until: Option<SystemTime>,
    /// The tags the value carries and the version each had when the value was read; see
    /// [`tags`]. At most `u16::MAX` tags of at most `u16::MAX` bytes each (the cache allows far
    /// fewer).
    pub tags: &'a [(String, u64)],
}

impl Meta<'_> {
    /// Whether the header carries nothing beyond the version 1 fields.
    fn is_plain(&self) -> bool {
        self.fresh_until.is_none() && self.tags.is_empty()
    }
}

/// Encodes a serde value with header extras (`meta`). Integers are plain digits only when there
/// are none (digits have no header to hold them), so `incr` does not apply to a tagged or
/// windowed integer.
pub fn encode_json_with<T: Serialize + ?Sized>(
    value: &T,
    compress_min_bytes: Option<usize>,
    meta: Meta<'_>,
) -> Result<Bytes, serde_json::Error> {
    encode_value(value, &lz4(compress_min_bytes), meta)
}

/// Encodes raw bytes with header extras (`meta`).
pub fn encode_bytes_with(data: &[u8], compress_min_bytes: Option<usize>, meta: Meta<'_>) -> Bytes {
    encode_bytes_as(data, &lz4(compress_min_bytes), meta)
}

/// The encoding of the functions that take only a threshold: JSON, LZ4.
fn lz4(compress_min_bytes: Option<usize>) -> Encoding {
    Encoding {
        serializer: Serializer::Json,
        compressor: Compressor::Lz4,
        zstd_level: codec::DEFAULT_ZSTD_LEVEL,
        compress_min_bytes,
    }
}

/// Encodes a serde value with an alias's serializer and compressor (`encoding`) and header
/// extras (`meta`). Integers are plain digits with every serializer when there are no extras.
/// With [`Serializer::DjangoJson`] a value without extras is plain, uncompressed JSON.
/// Serializer errors (a map with non-string keys in JSON, a value postcard cannot write) are
/// returned as `serde_json::Error`s carrying the serializer's message.
pub fn encode_value<T: Serialize + ?Sized>(
    value: &T,
    encoding: &Encoding,
    meta: Meta<'_>,
) -> Result<Bytes, serde_json::Error> {
    let foreign = |e: &dyn std::fmt::Display| -> serde_json::Error {
        serde::ser::Error::custom(format!("{e}"))
    };
    let (codec, payload) = match encoding.serializer {
        Serializer::Json | Serializer::DjangoJson => {
            let json = serde_json::to_vec(value)?;
            // Django's JSON entries have no header; its integers are digits too.
            let plain = encoding.serializer == Serializer::DjangoJson;
            if meta.is_plain() && (plain || parse_integer(&json).is_some()) {
                return Ok(Bytes::from(json));
            }
            (Codec::Json, json)
        }
        Serializer::MsgPack | Serializer::Postcard => {
            if let (true, Some(n)) = (meta.is_plain(), codec::as_integer(value)) {
                return Ok(encode_integer(n));
            }
            if encoding.serializer == Serializer::MsgPack {
                let payload = rmp_serde::to_vec_named(value).map_err(|e| foreign(&e))?;
                (Codec::MsgPack, payload)
            } else {
                let payload = postcard::to_allocvec(value).map_err(|e| foreign(&e))?;
                (Codec::Postcard, payload)
            }
        }
    };
    Ok(frame(codec, &payload, encoding, meta))
}

/// Encodes raw bytes with an alias's compressor (`encoding`) and header extras (`meta`). Raw
/// bytes are always framed, with every serializer.
pub fn encode_bytes_as(data: &[u8], encoding: &Encoding, meta: Meta<'_>) -> Bytes {
    frame(Codec::Bytes, data, encoding, meta)
}

/// Encodes a serde value: integers as ASCII digits, anything else as a JSON entry.
pub fn encode_json<T: Serialize + ?Sized>(
    value: &T,
    compress_min_bytes: Option<usize>,
) -> Result<Bytes, serde_json::Error> {
    encode_json_with(value, compress_min_bytes, Meta::default())
}

/// Encodes raw bytes as an entry.
pub fn encode_bytes(data: &[u8], compress_min_bytes: Option<usize>) -> Bytes {
    encode_bytes_with(data, compress_min_bytes, Meta::default())
}

/// Encodes a serde value as a JSON entry that is fresh until `fresh_until` and stale after it
/// (see [`fresh_until`]). Integers are framed too (plain digits have no header to hold the
/// time), so `incr` does not apply to such an entry.
pub fn encode_json_fresh_until<T: Serialize + ?Sized>(
    value: &T,
    compress_min_bytes: Option<usize>,
    fresh_until: SystemTime,
) -> Result<Bytes, serde_json::Error> {
    let meta = Meta {
        fresh_until: Some(fresh_until),
        tags: &[],
    };
    encode_json_with(value, compress_min_bytes, meta)
}

/// Encodes raw bytes as an entry that is fresh until `fresh_until` (see [`fresh_until`]).
pub fn encode_bytes_fresh_until(
    data: &[u8],
    compress_min_bytes: Option<usize>,
    fresh_until: SystemTime,
) -> Bytes {
    let meta = Meta {
        fresh_until: Some(fresh_until),
        tags: &[],
    };
    encode_bytes_with(data, compress_min_bytes, meta)
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

/// Whether the entry in `raw` carries tags, from its first four bytes alone (the cheap test on
/// every read; [`tags`] reads them).
pub fn has_tags(raw: &[u8]) -> bool {
    matches!(raw, [MAGIC, FORMAT_VERSION, _, flags, ..] if flags & FLAG_TAGS != 0)
}

/// The tags the entry in `raw` carries, each with the version it had when the value was read;
/// empty for an entry without tags, an integer, or bytes that are not an entry.
pub fn tags(raw: &[u8]) -> Result<Vec<(&str, u64)>, CorruptEntry> {
    let Some(h) = header(raw)? else {
        return Ok(Vec::new());
    };
    let Some((start, count)) = h.tags else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(count);
    let mut at = start;
    for _ in 0..count {
        // `header` walked this section already: every read here is in bounds.
        let (tag, next) = read_tag(raw, at)?;
        out.push(tag);
        at = next;
    }
    Ok(out)
}

/// Reads one tag of the tag section at `at`: the tag and where the next one starts.
fn read_tag(raw: &[u8], at: usize) -> Result<((&str, u64), usize), CorruptEntry> {
    let truncated = || CorruptEntry("truncated tag section".into());
    let &[a, b] = raw.get(at..at + 2).ok_or_else(truncated)? else {
        return Err(truncated());
    };
    let len = usize::from(u16::from_le_bytes([a, b]));
    let name_at = at + 2;
    let name = raw.get(name_at..name_at + len).ok_or_else(truncated)?;
    let name = std::str::from_utf8(name).map_err(|_| CorruptEntry("a tag is not UTF-8".into()))?;
    let version_at = name_at + len;
    let Some(&[v0, v1, v2, v3, v4, v5, v6, v7]) = raw.get(version_at..version_at + 8) else {
        return Err(truncated());
    };
    let version = u64::from_le_bytes([v0, v1, v2, v3, v4, v5, v6, v7]);
    Ok(((name, version), version_at + 8))
}

/// The latest fresh-until time read: the end of year 9999, which every platform's clock holds.
const MAX_MILLIS: u64 = 253_402_300_799_999;

/// A stored fresh-until time, read: at most [`MAX_MILLIS`], whatever the bytes say.
fn from_millis(ms: u64) -> SystemTime {
    crate::backend::unix_ms::time(ms.min(MAX_MILLIS))
}

/// Encodes an integer the way `incr` expects it.
pub fn encode_integer(value: i64) -> Bytes {
    Bytes::from(value.to_string())
}

fn frame(codec: Codec, payload: &[u8], encoding: &Encoding, meta: Meta<'_>) -> Bytes {
    let tags = &meta.tags[..meta.tags.len().min(usize::from(u16::MAX))];
    let mut flags_extra = 0;
    let mut extension = 0;
    if meta.fresh_until.is_some() {
        flags_extra |= FLAG_FRESH_UNTIL;
        extension += FRESH_UNTIL_LEN;
    }
    if !tags.is_empty() {
        flags_extra |= FLAG_TAGS;
        extension += 2 + tags
            .iter()
            .map(|(name, _)| 2 + name.len().min(usize::from(u16::MAX)) + 8)
            .sum::<usize>();
    }
    let head = |out: &mut BytesMut, flags: u8| {
        out.put_slice(&[MAGIC, FORMAT_VERSION, codec as u8, flags | flags_extra]);
        if let Some(t) = meta.fresh_until {
            out.put_u64_le(crate::backend::unix_ms::of(t));
        }
        if !tags.is_empty() {
            out.put_u16_le(tags.len() as u16);
            for (name, version) in tags {
                // A name longer than the u16 length is cut at a character boundary: the cache
                // never writes one (its tags are keys of at most a few hundred bytes).
                let mut end = name.len().min(usize::from(u16::MAX));
                while !name.is_char_boundary(end) {
                    end -= 1;
                }
                out.put_u16_le(end as u16);
                out.put_slice(&name.as_bytes()[..end]);
                out.put_u64_le(*version);
            }
        }
    };
    // Django's format is never compressed: Django could not read it.
    let compressor = match encoding.serializer {
        Serializer::DjangoJson => Compressor::None,
        _ => encoding.compressor,
    };
    if let (Some(min), false) = (encoding.compress_min_bytes, compressor == Compressor::None) {
        // A payload whose length does not fit the u32 prefix is stored uncompressed.
        if let (true, Ok(len)) = (payload.len() >= min, u32::try_from(payload.len())) {
            let (flag, compressed) = match compressor {
                Compressor::Zstd => (
                    FLAG_ZSTD,
                    zstd::bulk::compress(payload, encoding.zstd_level).unwrap_or_else(|e| {
                        tracing::warn!("zstd could not compress a value, stored as it is: {e}");
                        Vec::new()
                    }),
                ),
                _ => (FLAG_LZ4, lz4_flex::block::compress(payload)),
            };
            // Keep the compressed form only when it actually saves space.
            if !compressed.is_empty() && compressed.len() + LEN_PREFIX < payload.len() {
                let mut out =
                    BytesMut::with_capacity(HEADER_LEN + extension + LEN_PREFIX + compressed.len());
                head(&mut out, flag);
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
    decode_for(raw, max_size, Serializer::Json)
}

/// Decodes stored bytes for an alias whose serializer is `serializer`: as
/// [`decode_limited`], except that with [`Serializer::DjangoJson`] bytes that are neither a
/// framed entry nor an integer are read as plain JSON (what Django writes; whether it parses
/// is for the reader of the value to find out). Every other serializer reads every framed
/// entry, whatever its codec.
pub fn decode_for(
    raw: &Bytes,
    max_size: usize,
    serializer: Serializer,
) -> Result<Decoded, CorruptEntry> {
    let too_large = |size: usize| {
        CorruptEntry(format!(
            "it holds {size} bytes once decoded, more than the limit of {max_size} \
             (raise the cache's `max_entry_size` if such values are expected)"
        ))
    };
    let Some(Header {
        size,
        compression,
        payload_start,
        ..
    }) = header(raw)?
    else {
        if let Some(n) = parse_integer(raw) {
            return Ok(Decoded::Integer(n));
        }
        if serializer == Serializer::DjangoJson {
            if raw.len() > max_size {
                return Err(too_large(raw.len()));
            }
            return Ok(Decoded::Json(raw.clone()));
        }
        return Err(CorruptEntry(
            "it is neither a webcache entry nor an integer".into(),
        ));
    };
    if size > max_size {
        return Err(too_large(size));
    }
    let payload = if compression != 0 {
        // At most `size` bytes are written: the decompressors fail rather than grow their
        // output, so a small payload that expands hugely is refused without allocating it.
        let compressed = &raw[payload_start..];
        let data = if compression == FLAG_ZSTD {
            zstd::bulk::decompress(compressed, size)
                .map_err(|e| CorruptEntry(format!("bad zstd payload: {e}")))?
        } else {
            lz4_flex::block::decompress(compressed, size)
                .map_err(|e| CorruptEntry(format!("bad compressed payload: {e}")))?
        };
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
        2 => Ok(Decoded::MsgPack(payload)),
        3 => Ok(Decoded::Postcard(payload)),
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
    /// The compression flag (`FLAG_LZ4`, `FLAG_ZSTD`), 0 when the payload is not compressed.
    compression: u8,
    /// Where the payload (compressed or not) starts.
    payload_start: usize,
    fresh_until: Option<SystemTime>,
    /// Where the tag section's first tag starts, and how many tags it holds.
    tags: Option<(usize, usize)>,
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
    let mut tags = None;
    if flags & FLAG_TAGS != 0 {
        let Some(&[a, b]) = raw.get(at..at + 2) else {
            return Err(CorruptEntry("truncated tag section".into()));
        };
        let count = usize::from(u16::from_le_bytes([a, b]));
        at += 2;
        tags = Some((at, count));
        for _ in 0..count {
            at = read_tag(raw, at)?.1;
        }
    }
    let compression = flags & (FLAG_LZ4 | FLAG_ZSTD);
    if compression == FLAG_LZ4 | FLAG_ZSTD {
        return Err(CorruptEntry(format!(
            "both the LZ4 and the zstd flag are set (flags {flags:#04x})"
        )));
    }
    let size = if compression != 0 {
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
        compression,
        payload_start: at,
        fresh_until,
        tags,
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
    use std::time::{Duration, UNIX_EPOCH};

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
    fn tagged_integers_are_framed_and_untagged_ones_stay_digits() {
        let stamped = [("products".to_owned(), 7u64)];
        let meta = Meta {
            fresh_until: None,
            tags: &stamped,
        };
        let raw = encode_json_with(&42, None, meta).unwrap();
        assert_eq!(raw[0], MAGIC);
        assert_eq!(tags(&raw).unwrap(), [("products", 7)]);
        assert_eq!(
            decode(&raw).unwrap(),
            Decoded::Json(Bytes::from_static(b"42"))
        );
        assert_eq!(
            &encode_json_with(&42, None, Meta::default()).unwrap()[..],
            b"42"
        );
        assert!(!has_tags(b"42") && !has_tags(&encode_bytes(b"x", None)));
        // A section cut short is corrupt, not a panic, and not an entry without tags.
        let cut = &raw[..raw.len() - 4 - 8];
        assert!(tags(cut).is_err() && decode(&Bytes::copy_from_slice(cut)).is_err());
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

    /// Every encoding of the cache's options, for the tests that go through all of them.
    fn encodings(min: Option<usize>) -> Vec<Encoding> {
        let mut all = Vec::new();
        for (_, serializer) in Serializer::NAMES {
            for (_, compressor) in Compressor::NAMES {
                all.push(Encoding {
                    serializer: *serializer,
                    compressor: *compressor,
                    zstd_level: 3,
                    compress_min_bytes: min,
                });
            }
        }
        all
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Product {
        id: u32,
        name: String,
        tags: Vec<String>,
        price: Option<f64>,
    }

    #[test]
    fn every_serializer_and_compressor_round_trips_and_names_itself() {
        let products: Vec<Product> = (0..200)
            .map(|id| Product {
                id,
                name: format!("product {id}"),
                tags: vec!["red".into(), "sale".into()],
                price: (id % 3 != 0).then_some(f64::from(id) * 1.5),
            })
            .collect();
        for encoding in encodings(Some(64)) {
            let raw = encode_value(&products, &encoding, Meta::default()).unwrap();
            // Any reader decodes it, whatever its own serializer: the header names the codec.
            for (_, reader) in Serializer::NAMES {
                let decoded = decode_for(&raw, DEFAULT_MAX_ENTRY_SIZE, *reader);
                // Plain Django JSON has no header: only a django_json alias takes it for JSON.
                if encoding.serializer == Serializer::DjangoJson && *reader != encoding.serializer {
                    assert!(decoded.is_err(), "{reader:?} took plain JSON");
                    continue;
                }
                let decoded = decoded.unwrap();
                let back: Vec<Product> = codec::deserialize(decoded).unwrap();
                assert_eq!(back, products, "{encoding:?} read by {reader:?}");
            }
            let compressed = match (encoding.serializer, encoding.compressor) {
                (Serializer::DjangoJson, _) | (_, Compressor::None) => 0,
                (_, Compressor::Lz4) => FLAG_LZ4,
                (_, Compressor::Zstd) => FLAG_ZSTD,
            };
            if encoding.serializer == Serializer::DjangoJson {
                assert_eq!(raw[0], b'[', "django_json is plain JSON");
            } else {
                assert_eq!(raw[3] & (FLAG_LZ4 | FLAG_ZSTD), compressed, "{encoding:?}");
            }
            // Integers stay digits with every serializer (incr works on them).
            assert_eq!(
                &encode_value(&42, &encoding, Meta::default()).unwrap()[..],
                b"42"
            );
            let bytes = encode_bytes_as(&raw, &encoding, Meta::default());
            assert_eq!(decode(&bytes).unwrap(), Decoded::Bytes(raw.clone()));
        }
    }

    #[test]
    fn django_json_is_plain_json_and_reads_plain_json() {
        let django = Encoding {
            serializer: Serializer::DjangoJson,
            ..Encoding::default()
        };
        let raw =
            encode_value(&serde_json::json!({"a": [1, 2]}), &django, Meta::default()).unwrap();
        assert_eq!(&raw[..], br#"{"a":[1,2]}"#);
        // What Python's json.dumps writes (spaces after separators) reads back.
        let written = Bytes::from_static(br#"{"items": ["x", "y"], "n": 1.5}"#);
        let decoded = decode_for(&written, 1024, Serializer::DjangoJson).unwrap();
        assert_eq!(decoded, Decoded::Json(written.clone()));
        // Another alias does not take foreign bytes for JSON, and the size limit holds.
        assert!(decode_for(&written, 1024, Serializer::Json).is_err());
        assert!(decode_for(&written, 8, Serializer::DjangoJson).is_err());
        // Tags need the header: such an entry is framed even for django_json.
        let stamped = [("t".to_owned(), 1u64)];
        let meta = Meta {
            fresh_until: None,
            tags: &stamped,
        };
        assert_eq!(encode_value("v", &django, meta).unwrap()[0], MAGIC);
    }

    /// A zstd entry whose payload is `frame` and whose header claims `claimed` bytes.
    fn zstd_entry(claimed: u32, frame: &[u8]) -> Bytes {
        let mut raw = vec![MAGIC, FORMAT_VERSION, Codec::Bytes as u8, FLAG_ZSTD];
        raw.extend_from_slice(&claimed.to_le_bytes());
        raw.extend_from_slice(frame);
        Bytes::from(raw)
    }

    #[test]
    fn a_zstd_bomb_is_refused_without_expanding_it() {
        let huge = 16usize << 20;
        let frame = zstd::bulk::compress(&vec![0u8; huge], 19).unwrap();
        assert!(frame.len() < 4096, "{} bytes", frame.len());
        // Honest about its size: refused from the header, over the limit.
        let honest = zstd_entry(huge as u32, &frame);
        let err = decode_limited(&honest, 1 << 20).unwrap_err();
        assert!(err.0.contains("more than the limit"), "{err}");
        assert!(decode_limited(&honest, huge).is_ok());
        // Lying about it (claims 100 bytes): the decompressor stops at 100 bytes and fails.
        let liar = zstd_entry(100, &frame);
        let err = decode_limited(&liar, 1 << 20).unwrap_err();
        assert!(err.0.contains("zstd"), "{err}");
        // Claiming fewer bytes than the frame holds when it is small is refused too.
        let small = zstd::bulk::compress(b"hello world", 3).unwrap();
        assert!(decode_limited(&zstd_entry(5, &small), 1024).is_err());
        assert!(decode_limited(&zstd_entry(50, &small), 1024).is_err());
        assert_eq!(
            decode_limited(&zstd_entry(11, &small), 1024).unwrap(),
            Decoded::Bytes(Bytes::from_static(b"hello world"))
        );
        // Both compression flags at once is corrupt, not a guess.
        let mut both = zstd_entry(11, &small).to_vec();
        both[3] |= FLAG_LZ4;
        assert!(decode(&Bytes::from(both)).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// A real zstd frame under any claimed size and any limit: refused, or exactly the
            /// claimed size within the limit.
            #[test]
            fn zstd_claims_are_checked(
                data in prop::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..4096),
                claimed in prop_oneof![Just(None), any::<u32>().prop_map(Some)],
                limit in 0usize..8192,
            ) {
                let frame = zstd::bulk::compress(&data, 1).unwrap();
                let claimed = claimed.unwrap_or(data.len() as u32);
                match decode_limited(&zstd_entry(claimed, &frame), limit) {
                    Err(_) => prop_assert!(claimed as usize != data.len() || data.len() > limit),
                    Ok(Decoded::Bytes(payload)) => {
                        prop_assert!(payload.len() <= limit);
                        prop_assert_eq!(payload, Bytes::from(data));
                    }
                    Ok(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
                }
            }

            /// Arbitrary bytes under a zstd header, and arbitrary bytes read by a django_json
            /// alias: refused or within the limit, never a panic.
            #[test]
            fn outside_bytes_never_panic(
                body in prop::collection::vec(any::<u8>(), 0..256),
                claimed in any::<u32>(),
                limit in 0usize..1024,
            ) {
                if let Ok(Decoded::Bytes(p)) = decode_limited(&zstd_entry(claimed, &body), limit) {
                    prop_assert!(p.len() <= limit);
                }
                let raw = Bytes::from(body);
                match decode_for(&raw, limit, Serializer::DjangoJson) {
                    Ok(Decoded::Json(p)) if raw.first() != Some(&MAGIC) => {
                        prop_assert!(p.len() <= limit);
                        let _ = codec::deserialize::<serde_json::Value>(Decoded::Json(p));
                    }
                    _ => {}
                }
            }

            /// The MessagePack and postcard readers take any bytes without panicking (they
            /// read what other processes wrote).
            #[test]
            fn typed_readers_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
                let body = Bytes::from(body);
                for decoded in [Decoded::MsgPack(body.clone()), Decoded::Postcard(body.clone())] {
                    let _ = codec::deserialize::<serde_json::Value>(decoded.clone());
                    let _ = codec::deserialize::<Vec<Product>>(decoded.clone());
                    let _ = codec::deserialize::<Vec<String>>(decoded.clone());
                    let _ = codec::deserialize::<std::collections::HashMap<String, u64>>(decoded);
                }
            }

            /// Whatever the encoding, a value reads back as itself.
            #[test]
            fn every_encoding_round_trips(
                names in prop::collection::vec("[a-zé ]{0,40}", 0..40),
                min in prop::option::of(0usize..512),
            ) {
                for encoding in encodings(min) {
                    let raw = encode_value(&names, &encoding, Meta::default()).unwrap();
                    let decoded = decode_for(&raw, DEFAULT_MAX_ENTRY_SIZE, encoding.serializer);
                    let back: Vec<String> = codec::deserialize(decoded.unwrap()).unwrap();
                    prop_assert_eq!(&back, &names);
                }
            }
        }

        /// Bytes that often look like an entry: framed headers with any flags and lengths.
        fn stored() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64),
                (
                    any::<u8>(),
                    any::<u8>(),
                    any::<u32>(),
                    prop::collection::vec(any::<u8>(), 0..64),
                    prop::collection::vec((0u16..6, any::<u64>()), 0..4),
                )
                    .prop_map(|(codec, flags, len, body, tags)| {
                        let flags = flags % 16;
                        let mut raw = vec![MAGIC, FORMAT_VERSION, codec % 5, flags];
                        if flags & FLAG_FRESH_UNTIL != 0 {
                            raw.extend_from_slice(&u64::from(len).to_le_bytes());
                        }
                        if flags & FLAG_TAGS != 0 {
                            // Often a well-formed section, sometimes one that lies about counts
                            // and lengths.
                            raw.extend_from_slice(
                                &(tags.len() as u16 + (len as u16 & 1)).to_le_bytes(),
                            );
                            for (n, version) in tags {
                                raw.extend_from_slice(&n.to_le_bytes());
                                raw.extend(std::iter::repeat_n(b't', usize::from(n)));
                                raw.extend_from_slice(&version.to_le_bytes());
                            }
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
                // The tag reader never panics either, and agrees with the decoder.
                if let (Ok(_), Err(e)) = (decode_limited(&raw, usize::MAX), tags(&raw)) {
                    return Err(TestCaseError::fail(format!("decodes but its tags do not: {e}")));
                }
                match decode_limited(&raw, limit) {
                    Err(_) => {}
                    Ok(Decoded::Integer(n)) => prop_assert_eq!(raw, Bytes::from(n.to_string())),
                    Ok(Decoded::Bytes(payload) | Decoded::Json(payload) | Decoded::MsgPack(payload) | Decoded::Postcard(payload)) => {
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

            /// Tags and a window ride in the header beside any payload and read back as written.
            #[test]
            fn tags_round_trip(
                data in prop::collection::vec(any::<u8>(), 0..256),
                names in prop::collection::vec("[a-z:0-9é]{0,12}", 0..6),
                min in prop::option::of(0usize..64),
                windowed in any::<bool>(),
            ) {
                let stamped: Vec<(String, u64)> = names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.clone(), (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
                    .collect();
                let until = windowed.then(|| UNIX_EPOCH + Duration::from_millis(1_780_000_000_000));
                let meta = Meta { fresh_until: until, tags: &stamped };
                let raw = encode_bytes_with(&data, min, meta);
                prop_assert_eq!(has_tags(&raw), !stamped.is_empty());
                let read: Vec<(String, u64)> =
                    tags(&raw).unwrap().into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
                prop_assert_eq!(read, stamped);
                prop_assert_eq!(fresh_until(&raw), until);
                prop_assert_eq!(decode(&raw), Ok(Decoded::Bytes(Bytes::from(data))));
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
