//! The on-disk format of one entry: `WCF\x01`, expiry, key length, value length, key, value.

use bytes::Bytes;
use webcache_core::backend::unix_ms;
use webcache_core::Expiry;

pub(crate) const MAGIC: [u8; 4] = *b"WCF\x01";
/// Magic, expiry (u64), key length (u32), value length (u64).
pub(crate) const HEADER_LEN: usize = 4 + 8 + 4 + 8;
/// A key length above this in a header means the file is garbage.
pub(crate) const MAX_KEY_LEN: usize = 1 << 20;

/// A decoded entry file.
pub(crate) struct Entry {
    pub(crate) expires_ms: u64,
    /// The whole file; the value is its tail.
    pub(crate) raw: Bytes,
    pub(crate) value_at: usize,
}

impl Entry {
    pub(crate) fn live(&self, now: u64) -> bool {
        live_at(self.expires_ms, now)
    }

    /// The expiry deadline in Unix milliseconds (`None`: never).
    pub(crate) fn deadline(&self) -> Option<u64> {
        deadline_of(self.expires_ms)
    }

    pub(crate) fn value(&self) -> Bytes {
        self.raw.slice(self.value_at..)
    }
}

/// The deadline a header's expiry stands for: 0 is "never".
fn deadline_of(expires_ms: u64) -> Option<u64> {
    (expires_ms != 0).then_some(expires_ms)
}

/// Whether an entry whose header holds `expires_ms` is live at `now`.
pub(crate) fn live_at(expires_ms: u64, now: u64) -> bool {
    unix_ms::is_live(deadline_of(expires_ms), now)
}

pub(crate) fn now_ms() -> u64 {
    unix_ms::now()
}

/// The header's expiry for an entry written now: core's deadline, with 0 for "never" (so a
/// real deadline is at least 1).
pub(crate) fn deadline_ms(expiry: Expiry) -> u64 {
    unix_ms::deadline(expiry, unix_ms::now()).map_or(0, |at| at.max(1))
}

/// Parses the fixed header: `(expiry, key length, value length)`.
pub(crate) fn parse_header(head: &[u8]) -> std::result::Result<(u64, usize, u64), String> {
    if head.len() < HEADER_LEN {
        return Err(format!("{} bytes, shorter than the header", head.len()));
    }
    if head[..4] != MAGIC {
        return Err("it does not start with the webcache file magic".into());
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let expires = u64_at(4);
    let key_len = u32::from_le_bytes([head[12], head[13], head[14], head[15]]) as usize;
    let value_len = u64_at(16);
    if key_len > MAX_KEY_LEN {
        return Err(format!("it claims a key of {key_len} bytes"));
    }
    Ok((expires, key_len, value_len))
}

pub(crate) fn encode(key: &str, value: &[u8], expires_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + key.len() + value.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&expires_ms.to_le_bytes());
    out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn headers_round_trip_and_reject_garbage() {
        let raw = encode("k", b"value", 42);
        let (expires, key_len, value_len) = parse_header(&raw).unwrap();
        assert_eq!((expires, key_len, value_len), (42, 1, 5));
        assert!(parse_header(&raw[..10]).is_err());
        assert!(parse_header(b"not a cache file at all, certainly").is_err());
        let mut huge_key = raw.clone();
        huge_key[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_header(&huge_key).is_err());
    }

    #[test]
    fn deadlines_round_up_to_the_millisecond() {
        assert_eq!(deadline_ms(Expiry::Never), 0);
        let before = now_ms();
        let d = deadline_ms(Expiry::After(Duration::from_micros(1500)));
        assert!(d >= before + 2 && d <= now_ms() + 2, "{d} vs {before}");
    }
}
