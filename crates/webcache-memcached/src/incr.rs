//! `incr`: memcached's native `ma` where its unsigned arithmetic agrees with ours, a
//! compare-and-swap loop where it does not (negative values, decrements).
//!
//! Memcached's arithmetic has two habits that this module absorbs:
//! * It counts modulo 2^64 and has no overflow check: past `i64::MAX` (not an integer of ours)
//!   or past `u64::MAX` (it wraps to a small number) the delta is taken back, by adding
//!   `2^64 - delta` (which commutes with concurrent increments, where a decrement would floor at
//!   zero), and [`Error::Overflow`] is returned. A wrap shows as a result smaller than the delta.
//! * When the result is not longer than the stored value it rewrites the value in place, padded
//!   with spaces (`042` + 1 is `43 `). Every read trims such padding ([`unpad`]); values of
//!   this crate are never digits followed by spaces otherwise (other entries start with a
//!   non-digit header byte).

use bytes::Bytes;
use webcache_core::entry::parse_integer;
use webcache_core::{Error, Result};

use crate::backend::{check_key, unexpected};
use crate::conn::Code;
use crate::expiry::exptime_token;
use crate::server::{Retry, Server};
use crate::{Memcached, BACKEND};

/// Compare-and-swap attempts before `incr` gives up under contention.
const CAS_ATTEMPTS: usize = 1000;

impl Memcached {
    /// Adds `delta` to the integer under `key` (the body of [`Backend::incr`](webcache_core::Backend::incr)).
    pub(crate) async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        check_key(key)?;
        let server = self.server(key);
        if delta < 0 {
            // Memcached's decr floors at zero and cannot go negative.
            return self.incr_cas(server, key, delta).await;
        }
        let reply = self
            .one(
                server,
                &[Bytes::from(format!("ma {key} v D{delta}\r\n"))],
                Retry::Once,
            )
            .await?;
        match reply.code {
            Code::Value => {
                let text = std::str::from_utf8(&reply.data).unwrap_or("");
                let value: u64 = text.parse().map_err(|_| unexpected(server, "ma", &reply))?;
                let delta = delta.unsigned_abs();
                // Modulo 2^64, a result below the delta is a wrap past u64::MAX.
                match i64::try_from(value) {
                    Ok(v) if value >= delta => Ok(v),
                    _ => {
                        // Take the delta back: adding 2^64 - delta wraps to the old value.
                        let back = 0u64.wrapping_sub(delta);
                        let undo = Bytes::from(format!("ma {key} D{back}\r\n"));
                        let reply = self.one(server, &[undo], Retry::Once).await?;
                        if reply.code != Code::Stored {
                            tracing::warn!(
                                key,
                                "cannot undo an overflowing incr: {:?}",
                                reply.code
                            );
                        }
                        Err(Error::Overflow {
                            key: key.to_owned(),
                        })
                    }
                }
            }
            Code::NotFound => Err(Error::KeyNotFound {
                key: key.to_owned(),
            }),
            // A negative number (or no number): the CAS loop tells which.
            Code::ClientError => self.incr_cas(server, key, delta).await,
            _ => Err(unexpected(server, "ma", &reply)),
        }
    }

    /// `incr` by a compare-and-swap loop: correct for negative values and results.
    async fn incr_cas(&self, server: &Server, key: &str, delta: i64) -> Result<i64> {
        let read = Bytes::from(format!("mg {key} v c t\r\n"));
        for _ in 0..CAS_ATTEMPTS {
            let reply = self
                .one(server, std::slice::from_ref(&read), Retry::Idempotent)
                .await?;
            match reply.code {
                Code::Value => {}
                Code::Miss => {
                    return Err(Error::KeyNotFound {
                        key: key.to_owned(),
                    })
                }
                _ => return Err(unexpected(server, "mg", &reply)),
            }
            let current =
                parse_integer(&unpad(reply.data.clone())).ok_or_else(|| Error::NotAnInteger {
                    key: key.to_owned(),
                })?;
            let next = current.checked_add(delta).ok_or_else(|| Error::Overflow {
                key: key.to_owned(),
            })?;
            let cas = reply
                .flag(b'c')
                .ok_or_else(|| unexpected(server, "mg (no cas token)", &reply))?;
            let remaining: i64 = reply
                .flag(b't')
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| unexpected(server, "mg (no ttl)", &reply))?;
            let token = match remaining {
                // -1: no expiry; keep none.
                r if r < 0 => 0,
                // 0 would mean "never" to memcached; the item expires within this second.
                r => exptime_token(server, r.max(1).unsigned_abs()),
            };
            let digits = next.to_string();
            let head = format!("ms {key} {} C{cas} T{token}\r\n{digits}\r\n", digits.len());
            let reply = self.one(server, &[Bytes::from(head)], Retry::Once).await?;
            match reply.code {
                Code::Stored => return Ok(next),
                // Another writer changed the value in between: read it again.
                Code::Exists => continue,
                Code::NotFound => {
                    return Err(Error::KeyNotFound {
                        key: key.to_owned(),
                    })
                }
                _ => return Err(unexpected(server, "ms", &reply)),
            }
        }
        Err(Error::backend_msg(
            BACKEND,
            format!("incr of `{key}` lost {CAS_ATTEMPTS} compare-and-swap races in a row; too much contention on one key"),
        ))
    }
}

/// A value as memcached's in-place `incr` may leave it (ASCII digits padded with spaces, such as
/// `43 `) without the padding; any other value unchanged.
pub(crate) fn unpad(value: Bytes) -> Bytes {
    let digits = value.len() - value.iter().rev().take_while(|b| **b == b' ').count();
    if digits == value.len() || digits == 0 || !value[..digits].iter().all(u8::is_ascii_digit) {
        return value;
    }
    value.slice(..digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn padding_is_trimmed_from_digits_only() {
        for (stored, read) in [
            (&b"43 "[..], &b"43"[..]),
            (b"0     ", b"0"),
            (b"43", b"43"),
            (b"   ", b"   "),
            (b"", b""),
            (b"-4 ", b"-4 "),
            (b"4 3 ", b"4 3 "),
            (b"a ", b"a "),
            (b"\xf5\x01\x00\x0012 ", b"\xf5\x01\x00\x0012 "),
        ] {
            assert_eq!(&unpad(Bytes::from_static(stored))[..], read, "{stored:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Unpadding changes only digits-then-spaces, and only by dropping the spaces.
        #[test]
        fn unpad_drops_only_trailing_spaces_after_digits(value in proptest::collection::vec(any::<u8>(), 0..24)) {
            let out = unpad(Bytes::from(value.clone()));
            prop_assert!(value.starts_with(&out));
            if out.len() != value.len() {
                prop_assert!(!out.is_empty() && out.iter().all(u8::is_ascii_digit));
                prop_assert!(value[out.len()..].iter().all(|b| *b == b' '));
            }
        }
    }
}
