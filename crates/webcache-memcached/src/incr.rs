//! `incr`: read the value and check it is one of our integers before memcached's arithmetic
//! touches it.
//!
//! Memcached's own arithmetic (`ma`) cannot be trusted with just any value: it reads `042`,
//! `+1`, ` 1`, `1 ` and `-0` as numbers (webcache's integers are canonical decimals only,
//! [`parse_integer`]), counts modulo 2^64 (`u64::MAX` + 1 is 0), floors decrements at zero, and
//! rewrites a value that got shorter in place, padded with spaces (`042` + 1 leaves `43 `, which
//! is not an integer of ours). So every `incr` first reads the value (`mg … v c t`) and
//! refuses, without writing anything, a value that is not an integer or a sum past the `i64`
//! range: there is never anything to undo. Then:
//! * **Native** `ma … D<delta>` (no compare-and-swap) when the value is at least 0, the delta
//!   between 0 and [`NATIVE_DELTA_MAX`] and the sum at most [`NATIVE_SUM_MAX`]. Memcached's
//!   addition is exact there, never pads (a canonical number that grows does not get shorter)
//!   and keeps the expiry; concurrent increments all land without retries (with a
//!   compare-and-swap, 16 tasks incrementing one key managed a sixth as many increments a
//!   second, losing most races). Concurrent native increments cannot carry a value from at
//!   most 2^62 past `i64::MAX` in steps of at most 2^32 unless 2^30 of them are in flight.
//! * **Compare-and-swap** `ms … C<cas> T<remaining>` otherwise (negative values, decrements,
//!   big deltas, sums near the limits): the sum computed here, written only if nobody wrote
//!   since the read (else read again), keeping the remaining TTL.
//!
//! What remains: if another program replaces the value with a number memcached reads
//! differently (`042`) in the instant between the read and a native `ma`, memcached adds to it.

use bytes::Bytes;
use webcache_core::backend::entry::parse_integer;
use webcache_core::{Error, Result};

use crate::backend::{check_key, unexpected};
use crate::conn::{Code, Reply};
use crate::expiry::exptime_token;
use crate::server::{Retry, Server};
use crate::{MemcachedBackend, BACKEND};

/// Compare-and-swap attempts before `incr` gives up under contention.
const CAS_ATTEMPTS: usize = 1000;

/// The largest sum left to memcached's native `ma` (2^62): far enough below `i64::MAX` that
/// concurrent native increments cannot carry the value past it.
const NATIVE_SUM_MAX: i64 = 1 << 62;

/// The largest delta left to memcached's native `ma` (2^32).
const NATIVE_DELTA_MAX: i64 = 1 << 32;

impl MemcachedBackend {
    /// Adds `delta` to the integer under `key` (the body of [`Backend::incr`](webcache_core::backend::Backend::incr)).
    pub(crate) async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        check_key(key)?;
        let server = self.server(key);
        let read = Bytes::from(format!("mg {key} v c t\r\n"));
        for _ in 0..CAS_ATTEMPTS {
            let found = self
                .one(server, std::slice::from_ref(&read), Retry::Idempotent)
                .await?;
            match found.code {
                Code::Value => {}
                Code::Miss => return Err(not_found(key)),
                _ => return Err(unexpected(server, "mg", &found)),
            }
            let current = parse_integer(&found.data).ok_or_else(|| Error::NotAnInteger {
                key: key.to_owned(),
            })?;
            let next = current.checked_add(delta).ok_or_else(|| Error::Overflow {
                key: key.to_owned(),
            })?;
            let native = current >= 0 && (0..=NATIVE_DELTA_MAX).contains(&delta);
            let done = if native && next <= NATIVE_SUM_MAX {
                self.add_native(server, key, delta).await?
            } else {
                self.swap(server, key, &found, next).await?
            };
            match done {
                Some(value) => return Ok(value),
                // The value changed since the read: read it again.
                None => continue,
            }
        }
        Err(Error::backend_msg(
            BACKEND,
            format!("incr of `{key}` lost {CAS_ATTEMPTS} compare-and-swap races in a row; too much contention on one key"),
        ))
    }

    /// Memcached's own `ma` on a value just read as an integer in `0..=NATIVE_SUM_MAX - delta`.
    /// `None` when the value has been replaced by a non-number since.
    async fn add_native(&self, server: &Server, key: &str, delta: i64) -> Result<Option<i64>> {
        let add = Bytes::from(format!("ma {key} v D{delta}\r\n"));
        let reply = self.one(server, &[add], Retry::Once).await?;
        match reply.code {
            Code::Value => {}
            Code::NotFound => return Err(not_found(key)),
            // Not a number (or a negative one) any more: the read decides what it is.
            Code::ClientError => return Ok(None),
            _ => return Err(unexpected(server, "ma", &reply)),
        }
        let sum = std::str::from_utf8(&reply.data)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| unexpected(server, "ma", &reply))?;
        match i64::try_from(sum) {
            // A sum below the delta wrapped past u64::MAX.
            Ok(value) if value >= delta => Ok(Some(value)),
            _ => {
                // Only a value replaced by another program between the read and `ma` gets here.
                tracing::warn!(key, sum, "memcached's incr left a value past i64::MAX");
                Err(Error::backend_msg(
                    BACKEND,
                    format!("incr of `{key}` raced with a write of a number out of range: memcached's arithmetic left {sum}; set the key again"),
                ))
            }
        }
    }

    /// Writes `next` in place of the value `found` read, only if nobody wrote since, keeping the
    /// remaining TTL. `None` when somebody did.
    async fn swap(
        &self,
        server: &Server,
        key: &str,
        found: &Reply,
        next: i64,
    ) -> Result<Option<i64>> {
        let cas = found
            .flag(b'c')
            .ok_or_else(|| unexpected(server, "mg (no cas token)", found))?;
        let remaining: i64 = found
            .flag(b't')
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| unexpected(server, "mg (no ttl)", found))?;
        let token = match remaining {
            // -1: no expiry; keep none.
            r if r < 0 => 0,
            // 0 would mean "never" to memcached; the item expires within this second.
            r => exptime_token(server, r.max(1).unsigned_abs()),
        };
        let digits = next.to_string();
        let write = format!("ms {key} {} C{cas} T{token}\r\n{digits}\r\n", digits.len());
        let reply = self.one(server, &[Bytes::from(write)], Retry::Once).await?;
        match reply.code {
            Code::Stored => Ok(Some(next)),
            Code::Exists => Ok(None),
            Code::NotFound => Err(not_found(key)),
            _ => Err(unexpected(server, "ms", &reply)),
        }
    }
}

/// `incr` of a key that does not exist.
fn not_found(key: &str) -> Error {
    Error::KeyNotFound {
        key: key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;
    use webcache_core::backend::Backend;
    use webcache_core::Expiry;
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
        let mc = MemcachedBackend::new(&MemcachedConfig::new([server.address()]));
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

    /// Many concurrent increments near `i64::MAX` (the compare-and-swap path) and across the
    /// native path's limit: exactly those that fit succeed, the others are overflows, and what
    /// is left is the exact sum in plain digits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_increments_up_to_the_limits_are_exact() {
        let server = MemcachedServer::start();
        let clients = [
            MemcachedBackend::new(&MemcachedConfig::new([server.address()])),
            MemcachedBackend::new(&MemcachedConfig::new([server.address()])),
        ];
        for (start, delta) in [
            (i64::MAX - 1000, 30),
            (NATIVE_SUM_MAX - 500, 7),
            (i64::MAX - 40 * NATIVE_DELTA_MAX, NATIVE_DELTA_MAX - 1),
        ] {
            clients[0]
                .set("n", Bytes::from(start.to_string()), MINUTE)
                .await
                .unwrap();
            let mut tasks = Vec::new();
            for t in 0..40 {
                let mc = clients[t % 2].clone();
                tasks.push(tokio::spawn(async move {
                    let mut fitted = 0i64;
                    for _ in 0..5 {
                        match mc.incr("n", delta).await {
                            Ok(_) => fitted += 1,
                            Err(Error::Overflow { .. }) => {}
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                    fitted
                }));
            }
            let mut fitted = 0;
            for task in tasks {
                fitted += task.await.unwrap();
            }
            let expected = start + fitted * delta;
            assert_eq!(
                fitted,
                ((i64::MAX - start) / delta).min(200),
                "{start} + {delta}"
            );
            assert_eq!(
                stored(&server, "n").await,
                expected.to_string().as_bytes(),
                "{start} + {delta}"
            );
        }
    }
}
