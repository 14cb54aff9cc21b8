//! `incr`: a compare-and-swap loop that reads the value, checks it is one of our integers and
//! computes the sum itself, then writes it only if nobody wrote in between.
//!
//! Memcached's own arithmetic (`ma` alone) cannot be trusted with the value it finds: it reads
//! `042`, `+1`, ` 1`, `1 ` and `-0` as numbers (where webcache's integers are canonical
//! decimals only, [`parse_integer`]), counts modulo 2^64 (`u64::MAX` + 1 is 0), and rewrites a
//! value that got shorter in place, padded with spaces (`042` + 1 leaves `43 `, which is not an
//! integer of ours). So every `incr` reads first (`mg … v c t`), and nothing is written when
//! the value is not an integer or the sum leaves the `i64` range: there is never anything to
//! undo. The write is then:
//! * `ma … C<cas> D<delta>` when the value and the delta are both non-negative: memcached's
//!   addition is then exact (the sum is at most `i64::MAX`) and never pads (a canonical number
//!   that grows does not get shorter), and it keeps the expiry exactly;
//! * `ms … C<cas> T<remaining>` otherwise (negative values and decrements, which memcached
//!   floors at zero and pads), keeping the remaining TTL.
//!
//! Either write fails with `EX` when another writer changed the value since the read; the loop
//! then reads again. That costs a second round trip over a bare `ma`, the price of never
//! rewriting a value we did not check.

use bytes::Bytes;
use webcache_core::entry::parse_integer;
use webcache_core::{Error, Result};

use crate::backend::{check_key, unexpected};
use crate::conn::Code;
use crate::expiry::exptime_token;
use crate::server::Retry;
use crate::{Memcached, BACKEND};

/// Compare-and-swap attempts before `incr` gives up under contention.
const CAS_ATTEMPTS: usize = 1000;

impl Memcached {
    /// Adds `delta` to the integer under `key` (the body of [`Backend::incr`](webcache_core::Backend::incr)).
    pub(crate) async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        check_key(key)?;
        let server = self.server(key);
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
            let current = parse_integer(&reply.data).ok_or_else(|| Error::NotAnInteger {
                key: key.to_owned(),
            })?;
            let next = current.checked_add(delta).ok_or_else(|| Error::Overflow {
                key: key.to_owned(),
            })?;
            let cas = reply
                .flag(b'c')
                .ok_or_else(|| unexpected(server, "mg (no cas token)", &reply))?;
            let (command, write) = if current >= 0 && delta >= 0 {
                ("ma", format!("ma {key} C{cas} D{delta}\r\n"))
            } else {
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
                (
                    "ms",
                    format!("ms {key} {} C{cas} T{token}\r\n{digits}\r\n", digits.len()),
                )
            };
            let reply = self.one(server, &[Bytes::from(write)], Retry::Once).await?;
            match reply.code {
                Code::Stored => return Ok(next),
                // Another writer changed the value in between: read it again.
                Code::Exists => continue,
                Code::NotFound => {
                    return Err(Error::KeyNotFound {
                        key: key.to_owned(),
                    })
                }
                _ => return Err(unexpected(server, command, &reply)),
            }
        }
        Err(Error::backend_msg(
            BACKEND,
            format!("incr of `{key}` lost {CAS_ATTEMPTS} compare-and-swap races in a row; too much contention on one key"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;
    use webcache_core::{Backend, Expiry};
    use webcache_testkit::servers::memcached::MemcachedServer;

    use super::*;
    use crate::MemcachedConfig;

    const MINUTE: Expiry = Expiry::After(Duration::from_secs(60));

    /// The bytes memcached holds under `key`, read on a socket of its own (past any trimming
    /// a client might do).
    async fn stored(server: &MemcachedServer, key: &str) -> Vec<u8> {
        let mut stream = BufReader::new(TcpStream::connect(server.address()).await.unwrap());
        stream
            .get_mut()
            .write_all(format!("mg {key} v\r\n").as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        let len: usize = line
            .trim_end()
            .strip_prefix("VA ")
            .unwrap_or_else(|| panic!("{key}: {line:?}"))
            .parse()
            .unwrap();
        let mut data = vec![0; len + 2];
        stream.read_exact(&mut data).await.unwrap();
        data.truncate(len);
        data
    }

    /// Memcached's arithmetic would wrap or pad these; an `incr` that fails leaves the very
    /// bytes that were there, and one that succeeds leaves plain digits.
    #[tokio::test]
    async fn incr_leaves_canonical_digits_or_the_bytes_it_found() {
        let server = MemcachedServer::start();
        let mc = Memcached::new(&MemcachedConfig::new([server.address()]));
        let max = i64::MAX.to_string();
        let near = "9000000000000000000";
        for (value, delta, overflow) in [
            (max.as_str(), 1, true),
            // The sum has 20 digits; taking it back to 19 padded the value in place.
            (max.as_str(), i64::MAX, true),
            (near, 9_000_000_000_000_000_000, true),
            ("-9223372036854775808", -1, true),
            // Not integers of ours: memcached would read them, add, wrap or pad.
            ("18446744073709551615", 1, false),
            ("042", 1, false),
            ("1 ", 1, false),
            ("-0", 1, false),
        ] {
            mc.set("n", Bytes::from(value.to_owned()), MINUTE)
                .await
                .unwrap();
            let got = mc.incr("n", delta).await;
            match got {
                Err(Error::Overflow { .. }) if overflow => {}
                Err(Error::NotAnInteger { .. }) if !overflow => {}
                other => panic!("{value:?} + {delta}: {other:?}"),
            }
            assert_eq!(stored(&server, "n").await, value.as_bytes(), "{value:?}");
        }
        // Shrinking results (memcached pads those it computes) are written whole.
        for (value, delta, expected) in [("10", -1, "9"), ("-10", 1, "-9"), ("100", -91, "9")] {
            mc.set("n", Bytes::from(value), MINUTE).await.unwrap();
            mc.incr("n", delta).await.unwrap();
            assert_eq!(stored(&server, "n").await, expected.as_bytes(), "{value}");
        }
    }
}
