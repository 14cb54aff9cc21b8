//! `incr`: memcached's native `ma` where its unsigned arithmetic agrees with ours, a
//! compare-and-swap loop where it does not (negative values, decrements).

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
                match i64::try_from(value) {
                    Ok(v) => Ok(v),
                    Err(_) => {
                        // Unsigned memcached went past i64::MAX: take the delta back.
                        let undo = Bytes::from(format!("ma {key} MD D{delta}\r\n"));
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
            let current = parse_integer(&reply.data).ok_or_else(|| Error::NotAnInteger {
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
