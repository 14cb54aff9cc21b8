//! The stored form of a page: status, headers, body, when it was stored, how long it is fresh,
//! and the request header values it was stored for, in a compact binary layout.
//!
//! ```text
//! page: 'P' 2 | status u16 | stored_at ms u64 | fresh_for ms u64 | initial_age ms u64
//!       | vary count u16 | (name, present u8, [value len u32, value])*
//!       | header count u16 | (name, value len u32, value)* | body (to the end)
//! vary: 'V' 2 | name count u16 | name* [| variant count u16 | (len u16, id)*]
//! name: number u8 (1 and up: a known name, see [`names`]) | 0 | len u16 | bytes
//! ```
//!
//! Version 1 spelled every name out (`len u16 | bytes`, no number); its entries still decode.
//!
//! The vary entry lists the variants stored under it (their key suffixes), so that invalidating
//! a URL costs one read and one delete of its own keys, never a scan of the keyspace. Entries
//! written before the list existed end after the names and decode with no variants.
//!
//! Decoding slices the stored `Bytes`: header values and the body share the buffer the backend
//! returned, nothing is copied. A corrupt entry decodes to an error, which the layer treats as a
//! miss (and logs). Every hit decodes its entry: a memo of decoded heads (sessions 12 and 13)
//! cost more in memory traffic than the decoding it saved (BENCHMARKS.md, session 14).

mod names;

use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use webcache_core::backend::unix_ms;

/// The version written; [`decode`] reads it and version 1.
const VERSION: u8 = 2;

/// A page as stored.
#[derive(Debug, Clone)]
pub(crate) struct StoredResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) stored_at: SystemTime,
    /// The freshness lifetime: fresh while `initial_age + (now - stored_at) < fresh_for`.
    pub(crate) fresh_for: Duration,
    /// The response's age when it was stored (RFC 9111 §4.2.3; zero for in-process pages).
    pub(crate) initial_age: Duration,
    /// The varied request headers and the values this page was stored for.
    pub(crate) vary: Vec<(HeaderName, Option<Bytes>)>,
}

/// What a page key holds.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    Page(StoredResponse),
    /// The page varies on these request headers; look under the variant key.
    Vary(VaryList),
}

/// A URL's vary entry: the request headers its pages vary on, and the variants stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VaryList {
    pub(crate) names: Vec<HeaderName>,
    /// The key suffixes of the variants stored (see [`crate::key::variant_key`]).
    pub(crate) variants: Vec<String>,
}

impl StoredResponse {
    /// The current age (RFC 9111 §4.2.3).
    pub(crate) fn age(&self, now: SystemTime) -> Duration {
        self.initial_age + now.duration_since(self.stored_at).unwrap_or_default()
    }

    /// Whether the page carries a validator (`ETag` or `Last-Modified`), so a stale copy can be
    /// revalidated rather than fetched anew.
    pub(crate) fn has_validator(&self) -> bool {
        self.headers.contains_key(http::header::ETAG)
            || self.headers.contains_key(http::header::LAST_MODIFIED)
    }

    /// Whether `request` has the same values for the varied headers as the stored request.
    pub(crate) fn matches(&self, request: &HeaderMap) -> bool {
        if self.vary.is_empty() {
            return true;
        }
        let names: Vec<HeaderName> = self.vary.iter().map(|(n, _)| n.clone()).collect();
        let values = crate::key::vary_values(&names, request);
        self.vary
            .iter()
            .zip(values)
            .all(|((_, stored), asked)| *stored == asked)
    }

    pub(crate) fn vary_names(&self) -> Vec<HeaderName> {
        self.vary.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The request values this page was stored for, in the order of [`Self::vary_names`].
    pub(crate) fn vary_values(&self) -> Vec<Option<Bytes>> {
        self.vary.iter().map(|(_, v)| v.clone()).collect()
    }

    pub(crate) fn encode(&self) -> Bytes {
        let headers_len: usize = self
            .headers
            .iter()
            .map(|(n, v)| 7 + n.as_str().len() + v.len())
            .sum();
        let mut out = BytesMut::with_capacity(40 + headers_len + self.body.len());
        out.put_slice(&[b'P', VERSION]);
        out.put_u16(self.status.as_u16());
        out.put_u64(unix_ms::of(self.stored_at));
        out.put_u64(millis(self.fresh_for));
        out.put_u64(millis(self.initial_age));
        out.put_u16(self.vary.len() as u16);
        for (name, value) in &self.vary {
            names::put(&mut out, name);
            match value {
                None => out.put_u8(0),
                Some(v) => {
                    out.put_u8(1);
                    out.put_u32(v.len() as u32);
                    out.put_slice(v);
                }
            }
        }
        // The body's length is stored with the headers when they do not state it, so that a
        // hit answers `Content-Length` from the stored bytes rather than formatting it anew.
        let length =
            (!self.headers.contains_key(CONTENT_LENGTH)).then(|| self.body.len().to_string());
        out.put_u16((self.headers.len() + usize::from(length.is_some())) as u16);
        for (name, value) in &self.headers {
            names::put(&mut out, name);
            out.put_u32(value.len() as u32);
            out.put_slice(value.as_bytes());
        }
        if let Some(length) = length {
            names::put(&mut out, &CONTENT_LENGTH);
            out.put_u32(length.len() as u32);
            out.put_slice(length.as_bytes());
        }
        out.put_slice(&self.body);
        out.freeze()
    }
}

pub(crate) fn encode_vary(list: &VaryList) -> Bytes {
    let names_len: usize = list.names.iter().map(|n| 3 + n.as_str().len()).sum();
    let variants_len: usize = list.variants.iter().map(|v| 2 + v.len()).sum();
    let mut out = BytesMut::with_capacity(6 + names_len + variants_len);
    out.put_slice(&[b'V', VERSION]);
    out.put_u16(list.names.len() as u16);
    for name in &list.names {
        names::put(&mut out, name);
    }
    out.put_u16(list.variants.len() as u16);
    for id in &list.variants {
        out.put_u16(id.len() as u16);
        out.put_slice(id.as_bytes());
    }
    out.freeze()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why stored bytes are not a page entry.
#[derive(Debug, thiserror::Error)]
#[error("corrupt page-cache entry: {0}")]
pub(crate) struct Corrupt(&'static str);

struct Reader {
    raw: Bytes,
    pos: usize,
    /// The entry's format version: how its names are written.
    version: u8,
}

impl Reader {
    /// The next `n` bytes, borrowed: fixed-size fields and names are read without touching
    /// the buffer's reference count.
    fn bytes(&mut self, n: usize) -> Result<&[u8], Corrupt> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.raw.len())
            .ok_or(Corrupt("truncated"))?;
        let out = &self.raw[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    /// The next `n` bytes as a slice of the stored buffer (shared, not copied): for what
    /// outlives the decoding (header and varied values).
    fn take(&mut self, n: usize) -> Result<Bytes, Corrupt> {
        let start = self.pos;
        self.bytes(n)?;
        Ok(self.raw.slice(start..self.pos))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Corrupt> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, Corrupt> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, Corrupt> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, Corrupt> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn name(&mut self) -> Result<HeaderName, Corrupt> {
        if self.version >= 2 {
            match self.u8()? {
                0 => {}
                number => return names::known(number).ok_or(Corrupt("unknown header number")),
            }
        }
        let n = self.u16()? as usize;
        HeaderName::from_bytes(self.bytes(n)?).map_err(|_| Corrupt("bad header name"))
    }
}

/// Decodes an entry written by [`StoredResponse::encode`] or [`encode_vary`].
pub(crate) fn decode(raw: Bytes) -> Result<Entry, Corrupt> {
    let mut r = Reader {
        raw,
        pos: 0,
        version: 0,
    };
    let kind = r.u8()?;
    r.version = r.u8()?;
    if !(1..=VERSION).contains(&r.version) {
        return Err(Corrupt("unknown version"));
    }
    match kind {
        b'V' => {
            let n = r.u16()?;
            let names = (0..n).map(|_| r.name()).collect::<Result<Vec<_>, _>>()?;
            let mut variants = Vec::new();
            if r.pos < r.raw.len() {
                for _ in 0..r.u16()? {
                    let len = r.u16()? as usize;
                    let id = std::str::from_utf8(r.bytes(len)?)
                        .map_err(|_| Corrupt("bad variant id"))?
                        .to_owned();
                    variants.push(id);
                }
            }
            if r.pos != r.raw.len() {
                return Err(Corrupt("trailing bytes"));
            }
            Ok(Entry::Vary(VaryList { names, variants }))
        }
        b'P' => {
            let status = StatusCode::from_u16(r.u16()?).map_err(|_| Corrupt("bad status"))?;
            let stored_at = unix_ms::time(r.u64()?);
            let fresh_for = Duration::from_millis(r.u64()?);
            let initial_age = Duration::from_millis(r.u64()?);
            let nvary = r.u16()?;
            let mut vary = Vec::with_capacity(nvary as usize);
            for _ in 0..nvary {
                let name = r.name()?;
                let value = match r.u8()? {
                    0 => None,
                    _ => {
                        let n = r.u32()? as usize;
                        Some(r.take(n)?)
                    }
                };
                vary.push((name, value));
            }
            let nheaders = r.u16()?;
            // Room for what a hit adds (`Age`, the diagnostic header), so that no answer
            // grows the map.
            // A count past what a header map holds is corrupt, not a panic (the map's
            // `with_capacity` and `append` panic there).
            let mut headers = HeaderMap::try_with_capacity(usize::from(nheaders) + 2)
                .map_err(|_| Corrupt("too many headers"))?;
            for _ in 0..nheaders {
                let name = r.name()?;
                let n = r.u32()? as usize;
                let value = HeaderValue::from_maybe_shared(r.take(n)?)
                    .map_err(|_| Corrupt("bad header value"))?;
                headers
                    .try_append(name, value)
                    .map_err(|_| Corrupt("too many headers"))?;
            }
            let body = r.raw.slice(r.pos..);
            Ok(Entry::Page(StoredResponse {
                status,
                headers,
                body,
                stored_at,
                fresh_for,
                initial_age,
                vary,
            }))
        }
        _ => Err(Corrupt("unknown kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/html"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let page = StoredResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"hello"),
            stored_at: unix_ms::time(1_700_000_000_123),
            fresh_for: Duration::from_secs(60),
            initial_age: Duration::from_secs(2),
            vary: vec![
                (HeaderName::from_static("cookie"), None),
                (
                    HeaderName::from_static("accept"),
                    Some(Bytes::from_static(b"")),
                ),
            ],
        };
        let raw = page.encode();
        let Entry::Page(back) = decode(raw.clone()).unwrap() else {
            panic!("not a page")
        };
        assert_eq!(back.status, page.status);
        // The body's length is stored with the headers.
        let mut expected = page.headers.clone();
        expected.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(back.headers, expected);
        assert_eq!(back.body, page.body);
        assert_eq!(back.stored_at, page.stored_at);
        assert_eq!(back.fresh_for, page.fresh_for);
        assert_eq!(back.initial_age, page.initial_age);
        assert_eq!(back.vary, page.vary);
        // Every truncation short of the body is an error, never a panic.
        let body_start = raw.len() - page.body.len();
        for cut in 0..body_start {
            assert!(decode(raw.slice(..cut)).is_err(), "cut at {cut}");
        }
        let list = VaryList {
            names: vec![HeaderName::from_static("cookie")],
            variants: vec!["0123abcd".into()],
        };
        let Entry::Vary(back) = decode(encode_vary(&list)).unwrap() else {
            panic!("not vary")
        };
        assert_eq!(back, list);
        // A vary entry written before variants were listed.
        let old = Bytes::from_static(b"V\x01\x00\x01\x00\x06cookie");
        let Entry::Vary(back) = decode(old).unwrap() else {
            panic!("not vary")
        };
        assert_eq!((back.names.len(), back.variants.len()), (1, 0));
        assert!(decode(Bytes::from_static(b"Xgarbage")).is_err());
    }

    /// Pages stored by version 1, every name spelled out, still decode (a cache server keeps
    /// them across an upgrade); a number no name has is corrupt.
    #[test]
    fn version_1_pages_decode_and_unknown_numbers_are_corrupt() {
        let mut raw = b"P\x01\x00\xc8".to_vec();
        raw.extend_from_slice(&1_700_000_000_000u64.to_be_bytes());
        raw.extend_from_slice(&60_000u64.to_be_bytes());
        raw.extend_from_slice(&0u64.to_be_bytes());
        raw.extend_from_slice(b"\x00\x01\x00\x06cookie\x01\x00\x00\x00\x01a");
        raw.extend_from_slice(b"\x00\x02");
        raw.extend_from_slice(b"\x00\x0ccontent-type\x00\x00\x00\x09text/html");
        raw.extend_from_slice(b"\x00\x08x-custom\x00\x00\x00\x01v");
        raw.extend_from_slice(b"body");
        let Entry::Page(page) = decode(Bytes::from(raw)).unwrap() else {
            panic!("not a page")
        };
        assert_eq!(page.headers["content-type"], "text/html");
        assert_eq!(page.headers["x-custom"], "v");
        assert_eq!(page.vary[0].0, "cookie");
        assert_eq!(page.vary[0].1.as_deref(), Some(&b"a"[..]));
        assert_eq!(&page.body[..], b"body");
        assert!(decode(Bytes::from_static(b"V\x02\x00\x01\xff")).is_err());
        assert!(decode(Bytes::from_static(b"V\x03\x00\x00")).is_err());
    }

    /// A header count past what a header map can hold (32,768) is a corrupt entry. It made
    /// the decoder panic (`HeaderMap::with_capacity`), and the page cache answer 500 for a
    /// page a hostile or broken cache server had written.
    #[test]
    fn a_header_count_no_map_holds_is_corrupt() {
        for count in [32_767u16, 40_000, u16::MAX] {
            let mut raw = b"P\x01\x00\xc8".to_vec();
            raw.extend_from_slice(&[0; 24]); // stored_at, fresh_for, initial_age
            raw.extend_from_slice(&0u16.to_be_bytes()); // no vary
            raw.extend_from_slice(&count.to_be_bytes());
            // Every header there, so that only the count is wrong.
            for _ in 0..count {
                raw.extend_from_slice(b"\x00\x01a\x00\x00\x00\x00");
            }
            assert!(decode(Bytes::from(raw)).is_err(), "{count} headers");
        }
    }
}

/// A stored page-cache entry, described for inspection tools (`webcache get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredSummary {
    /// A stored page.
    Page {
        /// The response status.
        status: u16,
        /// The stored response headers, as text (non-UTF-8 values lossily).
        headers: Vec<(String, String)>,
        /// The body's size in bytes.
        body_bytes: usize,
        /// How old the page is now.
        age: Duration,
        /// How long it is fresh in total.
        fresh_for: Duration,
        /// The request headers it varies on, with the values it was stored for.
        vary: Vec<(String, Option<String>)>,
    },
    /// The list of request headers a URL's pages vary on.
    VaryList(Vec<String>),
}

/// Describes the payload of a page-cache entry (what `Cache::get_bytes` returns for a
/// `views.cache_page.*` key), or `None` if it is not one.
pub fn inspect(payload: Bytes) -> Option<StoredSummary> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Some(match decode(payload).ok()? {
        Entry::Vary(list) => {
            StoredSummary::VaryList(list.names.iter().map(|n| n.to_string()).collect())
        }
        Entry::Page(page) => StoredSummary::Page {
            status: page.status.as_u16(),
            headers: page
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), text(v.as_bytes())))
                .collect(),
            body_bytes: page.body.len(),
            age: page.age(SystemTime::now()),
            fresh_for: page.fresh_for,
            vary: page
                .vary
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_deref().map(text)))
                .collect(),
        },
    })
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Stored bytes come from a backend another process (or user) may write: any bytes
        /// decode to an entry or an error, never a panic; a page's body is what follows its
        /// headers, and it keeps every header it was stored with.
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(Bytes::from(raw));
        }

        #[test]
        fn arbitrary_entries_after_a_valid_prefix_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            for head in [&b"P\x01"[..], b"V\x01", b"P\x02", b"V\x02"] {
                let mut raw = head.to_vec();
                raw.extend_from_slice(&tail);
                let _ = decode(Bytes::from(raw));
            }
        }

        #[test]
        fn pages_round_trip_with_their_length(
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            values in proptest::collection::vec("[a-zA-Z0-9 ;=,./-]{0,40}", 0..6),
            stated in proptest::option::of(0usize..5000),
        ) {
            let mut headers = HeaderMap::new();
            // Known names (stored as numbers, some twice) and others (spelled out).
            for (i, v) in values.iter().enumerate() {
                let name = match i % 3 {
                    0 => http::header::ETAG,
                    1 => HeaderName::from_static("permissions-policy"),
                    _ => HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
                };
                headers.append(name, HeaderValue::from_str(v).unwrap());
            }
            if let Some(stated) = stated {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(stated));
            }
            let page = StoredResponse {
                status: StatusCode::OK,
                headers: headers.clone(),
                body: Bytes::from(body.clone()),
                stored_at: unix_ms::time(1_700_000_000_000),
                fresh_for: Duration::from_secs(1),
                initial_age: Duration::ZERO,
                vary: Vec::new(),
            };
            let Ok(Entry::Page(back)) = decode(page.encode()) else {
                panic!("a page did not decode");
            };
            prop_assert_eq!(&back.body[..], &body[..]);
            // A stated length is kept as stated (the answer checks it against the body); an
            // absent one is stored as the body's.
            if stated.is_none() {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
            }
            prop_assert_eq!(back.headers, headers);
        }
    }
}
