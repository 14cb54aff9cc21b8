//! The memcached backend of webcache: `memcached://host:11211[,host2:11211...]`.
//!
//! # Client
//!
//! A small async client of memcached's **meta protocol** (`mg`, `ms`, `md`, `ma`, memcached
//! 1.6+) over tokio TCP, written for this crate rather than borrowed: the meta commands give
//! in one round trip what the classic commands cannot (a value with its remaining TTL,
//! compare-and-swap tokens, touch-on-read, add as a mode of set), and a client that only speaks
//! what webcache needs stays small enough to test against a real server in full.
//!
//! * **Servers**: `memcached://` alone means `127.0.0.1:11211`; a port left out is 11211. TCP
//!   only (no unix sockets, TLS or SASL).
//! * **Several servers** (`h1:11211,h2:11211` or `h1:11211;h2:11211`) are combined by a
//!   ketama-style consistent-hash ring (160 points per server from MD5 digests of
//!   `host:port-N`), so adding a server moves only about `1/n` of the keys.
//! * **Pools and timeouts**: each server has a pool of at most `pool_size` connections
//!   (default 16); connecting is bounded by `connect_timeout` (default 1 s) and each request by
//!   `io_timeout` (default 2 s). A key listing (a metadump of the whole server, see below) may
//!   take longer while the server keeps sending; each wait for more of it is bounded by
//!   `io_timeout`, so a hung server fails it within that time.
//! * **Dead servers and failover**: after a failure a server is marked down and its keys fail
//!   fast with [`Error::Backend`] (which `on_error=degrade` turns into misses) while the other
//!   servers keep working (in a pool, its connection failures come marked as that server's,
//!   [`node_failure`](webcache_core::backend::node_failure), so the cache's own circuit breaker
//!   leaves them alone); it is retried after `retry_after` (default 1 s), doubling up to
//!   30 s. Requests that were under way when it failed count as one failure with the first.
//!   After `server_failure_limit` consecutive failures (default 2: the first and the retry
//!   `retry_after` later) the server leaves the ring (`remove_failed_servers`, default true,
//!   as libmemcached's option of that name and pymemcache's `HashClient` that Django uses): its
//!   keys go to the next server of the ring (misses at first, hits once set again there) and
//!   no other key moves. A key routed past it starts a background probe once its backoff has
//!   passed; when the server answers it is emptied (`flush_all`) and put back, and its keys go
//!   back to it. The emptying matters for a server that was unreachable rather than
//!   restarted: it still holds values that were replaced or deleted on another server
//!   meanwhile. The last server in the ring never leaves it. What failover cannot prevent:
//!   a value written to the stand-in server stays there (unreachable) until it expires, and
//!   reads as current again if its server fails again before then; and several processes
//!   detect an outage each on its own, so for the few seconds they disagree one may read a
//!   value that another has replaced. Set `remove_failed_servers=false` where a stale value
//!   is worse than a miss: keys then never move, and a server that comes back never disagrees
//!   with another about a key. `get_many` returns what the live servers hold and treats the
//!   dead server's keys as misses; it fails only when no server answered.
//! * **Replies are not trusted**: a reply that announces a value longer than the server's item
//!   size limit (or any reply this client does not understand) is a protocol error
//!   ([`Error::Backend`]) and its connection is dropped, never an allocation of what the server
//!   claimed; memory for a value grows with the bytes that actually arrive.
//!
//! # Values, integers and expiry
//!
//! * Integers are stored as canonical ASCII digits (`-42`, never `042`, `+1` or ` 1`:
//!   [`parse_integer`](webcache_core::backend::entry::parse_integer)), and only those are integers.
//!   Memcached's own arithmetic reads `042`, `+1` and ` 1` as numbers, wraps past `u64::MAX`,
//!   floors at zero and pads a result that got shorter with spaces, so `incr` first reads the
//!   value (`mg … v c t`) and refuses one that is not an integer ([`Error::NotAnInteger`]) or
//!   a sum past the `i64` range ([`Error::Overflow`]) without writing anything. It then adds
//!   with memcached's native `ma` when the value is at least 0, the delta between 0 and 2^32 and
//!   the sum at most 2^62 (exact there, never padded, and concurrent increments of a hot key
//!   need no retries), and otherwise (negative values, decrements, near the limits) writes the
//!   sum with a compare-and-swap (`ms … C<cas>`, read again on a conflict, keeping the
//!   remaining TTL). That makes `incr` two round trips instead of one. If another program
//!   replaces the value with a number such as `042` in the instant between the read and a
//!   native `ma`, memcached still adds to it.
//! * Values are returned as stored. Earlier builds of this crate let memcached pad a counter in
//!   place (`042` + 1 left `43 `) and trimmed the padding on reads; such a value is not an
//!   integer any more (it reads as a corrupt entry, a miss), so a counter they left padded must
//!   be set again.
//! * Memcached keeps whole seconds: a timeout is rounded up and one second is added, because
//!   the server's clock ticks once a second and an item stored with `T1` may otherwise live only
//!   a few milliseconds. `ttl` therefore reports the server's remaining seconds minus that
//!   second (±1 s).
//! * Timeouts over 30 days are sent as absolute unix times, as memcached requires, computed from
//!   the server's clock (read with `stats` on every new connection, so a skewed client clock does
//!   not matter) and rounded two seconds short so that an entry never outlives its timeout.
//!   Memcached holds absolute times as signed 32-bit numbers: a later time (a timeout past
//!   January 2038, `--ttl 1e19`) is sent as 2^31 - 1, so a huge timeout keeps the value as long as
//!   memcached can (rather than storing nothing, which memcached does past that second).
//! * A value over the server's item size limit (`-I`, read from `stats settings`) fails with
//!   [`Error::ValueTooLarge`] and deletes the older value under the key, so no stale data stays.
//!
//! # Keys
//!
//! [`key_rules`](webcache_core::backend::Backend::key_rules) is [`KeyRules::MEMCACHED`] (at most 250 bytes, no spaces
//! or control characters): the [`Cache`](webcache_core::Cache) above rejects such keys with an
//! error that says how to fix them, or hashes them with `invalid_keys=hash`. The backend checks
//! again so that no key can ever inject a command.
//!
//! # What the protocol limits
//!
//! * `scan`/`keys` and `clear` of one prefix list keys with `lru_crawler metadump all` on every
//!   server. That walks the whole server (slow on very large caches), sees a snapshot (keys
//!   written during the walk may be missed, and so may keys that memcached's LRU maintainer
//!   is moving between its segments at that moment: 20 of 1,000 keys just read three times
//!   in a row, in a test on memcached 1.6), and fails with [`Error::Unsupported`] if the
//!   server runs with `-X` (dumping disabled).
//! * `clear` without a prefix is `flush_all` on every server: it empties them entirely.
//!   `clear`, `scan` and `keys` leave out a server that is out of the ring (it serves none of
//!   its keys, and is emptied before it does again); a server marked down but still in the
//!   ring makes `clear` fail, since it keeps its keys.
//! * `stats` sums `curr_items` and `bytes` of the live servers.
//!
//! [`Error::Backend`]: webcache_core::Error::Backend
//! [`Error::Overflow`]: webcache_core::Error::Overflow
//! [`Error::NotAnInteger`]: webcache_core::Error::NotAnInteger
//! [`Error::ValueTooLarge`]: webcache_core::Error::ValueTooLarge
//! [`Error::Unsupported`]: webcache_core::Error::Unsupported
//! [`KeyRules::MEMCACHED`]: webcache_core::backend::KeyRules::MEMCACHED
#![forbid(unsafe_code)]
// Library code answers every failure with an error, never a panic; tests may unwrap.
#![warn(clippy::unwrap_used)]

mod backend;
mod config;
mod conn;
mod dump;
mod expiry;
mod incr;
mod server;

pub use backend::MemcachedBackend;
pub use config::{MemcachedConfig, MemcachedFactory};

/// The backend's name in logs and errors.
pub(crate) const BACKEND: &str = "memcached";
