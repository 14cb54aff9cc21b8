//! Listing keys with `lru_crawler metadump all` (for `keys`/`scan` and `clear` of a prefix).

use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use webcache_core::{Error, Result};

use crate::backend::Shared;
use crate::conn::{Answer, Expect};
use crate::server::{Retry, Server};
use crate::{MemcachedBackend, BACKEND};

/// How long to wait for another client's metadump to finish (the crawler runs one at a time).
const DUMP_BUSY_WAIT: Duration = Duration::from_secs(10);

impl MemcachedBackend {
    /// Every key of every server with its absolute expiry (`None`: never), via metadump.
    pub(crate) async fn dump(server: &Server) -> Result<Vec<(String, Option<i64>)>> {
        let command = [Bytes::from_static(b"lru_crawler metadump all\r\n")];
        let started = tokio::time::Instant::now();
        loop {
            let answer = server
                .request_streaming(&command, Expect::LinesUntilEnd, Retry::Idempotent)
                .await?;
            let Answer::Lines(lines) = answer else {
                return Err(Error::backend_msg(BACKEND, "metadump gave meta replies"));
            };
            if let Some(last) = lines.last() {
                if last.starts_with(b"BUSY") && started.elapsed() < DUMP_BUSY_WAIT {
                    // Another client's dump is running; the crawler does one at a time.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                if last.starts_with(b"BUSY") {
                    return Err(Error::backend_msg(
                        BACKEND,
                        format!(
                            "{}: the LRU crawler stayed busy for {DUMP_BUSY_WAIT:?}",
                            server.addr
                        ),
                    ));
                }
                if last.starts_with(b"ERROR")
                    || last.starts_with(b"CLIENT_ERROR")
                    || last.starts_with(b"SERVER_ERROR")
                {
                    tracing::warn!(server = %server.addr, "metadump refused: {}", String::from_utf8_lossy(last));
                    return Err(Error::Unsupported {
                        backend: BACKEND,
                        operation: "listing keys",
                        why: "the server refuses `lru_crawler metadump` (started with -X, or too old); run memcached 1.6+ without -X",
                    });
                }
            }
            return Ok(lines.iter().filter_map(|l| parse_dump_line(l)).collect());
        }
    }

    /// The live keys of every server in the ring, from metadump (a server out of the ring
    /// serves none of its keys, and is emptied before it does again).
    pub(crate) async fn live_keys(shared: &Shared) -> Result<Vec<String>> {
        let in_ring = shared.servers.iter().filter(|s| s.in_ring());
        let dumps = join_all(in_ring.map(|s| async move {
            let now = s.server_now();
            Self::dump(s).await.map(|entries| {
                entries
                    .into_iter()
                    .filter(|(_, exp)| exp.is_none_or(|t| t > now))
                    .map(|(k, _)| k)
                    .collect::<Vec<_>>()
            })
        }))
        .await;
        let mut keys = Vec::new();
        for dump in dumps {
            keys.extend(dump?);
        }
        Ok(keys)
    }
}

/// `key=<url-encoded> exp=<unix time or -1> ...` → `(key, expiry)`.
fn parse_dump_line(line: &[u8]) -> Option<(String, Option<i64>)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut key = None;
    let mut exp = None;
    for field in text.split(' ') {
        if let Some(k) = field.strip_prefix("key=") {
            key = percent_encoding::percent_decode_str(k)
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned());
        } else if let Some(e) = field.strip_prefix("exp=") {
            exp = e.parse::<i64>().ok();
        }
    }
    Some((key?, exp.filter(|e| *e > 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadump_lines() {
        assert_eq!(
            parse_dump_line(b"key=a%3Ab%C4%8D exp=-1 la=1 cas=2 fetch=no cls=1 size=64"),
            Some(("a:bč".to_owned(), None))
        );
        assert_eq!(
            parse_dump_line(b"key=k exp=1795652759 la=1"),
            Some(("k".to_owned(), Some(1795652759)))
        );
        assert_eq!(parse_dump_line(b"garbage"), None);
    }
}
