//! Memcached specifics against real servers: expiry over 30 days and past memcached's clock, the
//! item size limit, a dead, hung or hostile server, two clients racing, signed arithmetic and
//! memcached's padding and wrapping, key checks, hashing over two servers.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use webcache_core::backend::BackendFactory as _;

use webcache_core::backend::Backend;
use webcache_core::bytes::Bytes;
use webcache_core::config::CacheConfig;
use webcache_core::{Cache, CacheOptions, Error, Expiry, OnError, Ttl};
use webcache_memcached::{MemcachedBackend, MemcachedConfig};
use webcache_testkit::servers::memcached::MemcachedServer;
use webcache_testkit::servers::Frozen;

const MINUTE: Expiry = Expiry::After(Duration::from_secs(60));
const DAY: u64 = 24 * 3600;

fn client(servers: &[&MemcachedServer]) -> MemcachedBackend {
    let mut config = MemcachedConfig::new(servers.iter().map(|s| s.address()));
    config.retry_after = Duration::from_millis(200);
    MemcachedBackend::new(&config)
}

/// One raw command on a fresh socket; returns the first reply line.
fn raw(server: &MemcachedServer, command: &str) -> String {
    let mut stream = TcpStream::connect(server.address()).unwrap();
    stream.write_all(command.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

#[tokio::test]
async fn timeouts_over_thirty_days_stay_relative() {
    let server = MemcachedServer::start();
    let mc = client(&[&server]);
    for days in [31, 40, 365] {
        let key = format!("long{days}");
        let timeout = Duration::from_secs(days * DAY);
        mc.set(&key, Bytes::from_static(b"v"), Expiry::After(timeout))
            .await
            .unwrap();
        assert_eq!(
            mc.get(&key).await.unwrap(),
            Some(Bytes::from_static(b"v")),
            "{days} days"
        );
        // What the server itself says is left.
        let reply = raw(&server, &format!("mg {key} t\r\n"));
        let left: u64 = reply.strip_prefix("HD t").unwrap().parse().unwrap();
        assert!(
            left <= days * DAY && left > days * DAY - 10,
            "{days} days: server says {left} s"
        );
        match mc.ttl(&key).await.unwrap() {
            Ttl::Remaining(d) => assert!(
                d <= timeout && d > timeout - Duration::from_secs(10),
                "{d:?}"
            ),
            other => panic!("{other:?}"),
        }
    }
    // Compare-and-swap increments keep a long expiry exactly (no drift per increment).
    let forty_days = Expiry::After(Duration::from_secs(40 * DAY));
    mc.set("n", Bytes::from_static(b"-1"), forty_days)
        .await
        .unwrap();
    let left = |reply: String| -> u64 { reply.strip_prefix("HD t").unwrap().parse().unwrap() };
    let before = left(raw(&server, "mg n t\r\n"));
    for _ in 0..5 {
        mc.incr("n", -1).await.unwrap();
    }
    let after = left(raw(&server, "mg n t\r\n"));
    assert!(
        before - after <= 2,
        "the expiry drifted from {before} to {after}"
    );
    // Exactly 30 days is still relative, and touch converts too.
    mc.set(
        "thirty",
        Bytes::from_static(b"v"),
        Expiry::After(Duration::from_secs(30 * DAY)),
    )
    .await
    .unwrap();
    assert!(mc
        .touch("thirty", Expiry::After(Duration::from_secs(60 * DAY)))
        .await
        .unwrap());
    match mc.ttl("thirty").await.unwrap() {
        Ttl::Remaining(d) => assert!(d > Duration::from_secs(60 * DAY - 10), "{d:?}"),
        other => panic!("{other:?}"),
    }
}

/// Memcached reads an absolute expiry into a signed 32-bit number: past 2^31 - 1 (January 2038)
/// it answers `HD` and stores nothing (the older value is gone too), and a token past 64 bits is
/// `CLIENT_ERROR bad token`. A huge timeout means "as long as memcached can keep".
#[tokio::test]
async fn timeouts_past_memcacheds_clock_keep_the_value_as_long_as_it_can() {
    let server = MemcachedServer::start();
    let mc = client(&[&server]);
    let kept_long =
        |ttl: Ttl| matches!(ttl, Ttl::Remaining(d) if d > Duration::from_secs(31 * DAY));
    let huge = [
        // Just past what fits before 2038 today.
        Duration::from_secs(400_000_000),
        Duration::from_secs(1 << 40),
        // `--ttl 1.8e19`.
        Duration::from_secs_f64(1.8e19),
        Duration::MAX,
    ];
    for timeout in huge {
        let expiry = Expiry::After(timeout);
        mc.set("k", Bytes::from_static(b"old"), MINUTE)
            .await
            .unwrap();
        mc.set("k", Bytes::from_static(b"new"), expiry)
            .await
            .unwrap_or_else(|e| panic!("{timeout:?}: {e}"));
        assert_eq!(
            mc.get("k").await.unwrap(),
            Some(Bytes::from_static(b"new")),
            "{timeout:?}"
        );
        assert!(kept_long(mc.ttl("k").await.unwrap()), "{timeout:?}");
        // add and set_many send the same expiry.
        mc.delete("a").await.unwrap();
        assert!(mc.add("a", Bytes::from_static(b"v"), expiry).await.unwrap());
        mc.set_many(vec![("m".to_owned(), Bytes::from_static(b"v"))], expiry)
            .await
            .unwrap();
        for key in ["a", "m"] {
            assert_eq!(
                mc.get(key).await.unwrap(),
                Some(Bytes::from_static(b"v")),
                "{key}, {timeout:?}"
            );
        }
        // touch: the value stays, for as long as memcached can keep it.
        mc.set("t", Bytes::from_static(b"v"), MINUTE).await.unwrap();
        assert!(mc.touch("t", expiry).await.unwrap(), "{timeout:?}");
        assert_eq!(
            mc.get("t").await.unwrap(),
            Some(Bytes::from_static(b"v")),
            "touch {timeout:?}"
        );
        assert!(kept_long(mc.ttl("t").await.unwrap()), "touch {timeout:?}");
    }
    // Through the cache, as `webcache set k v --ttl 1.8e19` does.
    let cache = Cache::new(Arc::new(mc), CacheOptions::default());
    cache.set_bytes("page", b"v", 1.8e19).await.unwrap();
    assert_eq!(
        cache.get_bytes("page").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert!(cache.touch("page", 1.8e19).await.unwrap());
    assert!(kept_long(cache.ttl("page").await.unwrap()));
}

#[tokio::test]
async fn values_over_the_item_size_limit_fail_and_remove_the_old_value() {
    let server = MemcachedServer::start_with(&["-I", "1m"]);
    let mc = client(&[&server]);
    let limit = 1024 * 1024;
    // Larger than the limit (refused before sending) and just under it (refused by the
    // server, because the item also holds the key and a header).
    for size in [limit + 1, limit - 10] {
        mc.set("k", Bytes::from_static(b"old"), MINUTE)
            .await
            .unwrap();
        let err = mc
            .set("k", Bytes::from(vec![7u8; size]), MINUTE)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::ValueTooLarge { size: s, limit: l, .. } if s == size && l == limit),
            "{size}: {err:?}"
        );
        assert_eq!(
            mc.get("k").await.unwrap(),
            None,
            "{size}: the older value is left behind"
        );
    }
    // The connection stays usable, and a value within the limit is stored.
    mc.set("k", Bytes::from(vec![1u8; limit / 2]), MINUTE)
        .await
        .unwrap();
    assert_eq!(mc.get("k").await.unwrap().map(|v| v.len()), Some(limit / 2));
    // set_many reports the one too large and stores the others.
    mc.set("big", Bytes::from_static(b"old"), MINUTE)
        .await
        .unwrap();
    let entries = vec![
        ("small".to_owned(), Bytes::from_static(b"s")),
        ("big".to_owned(), Bytes::from(vec![0u8; limit + 5])),
    ];
    assert!(matches!(
        mc.set_many(entries, MINUTE).await,
        Err(Error::ValueTooLarge { .. })
    ));
    assert_eq!(
        mc.get("small").await.unwrap(),
        Some(Bytes::from_static(b"s"))
    );
    assert_eq!(mc.get("big").await.unwrap(), None);
    // Through the cache the message names the user's key and says the old value is gone.
    let cache = Cache::new(Arc::new(mc.clone()), CacheOptions::default());
    // Incompressible, so that compression does not bring it under the limit.
    let noise: Vec<u8> = (0..limit * 2).map(|_| rand::random::<u8>()).collect();
    let err = cache.set_bytes("page", &noise, 60).await.unwrap_err();
    assert!(
        err.to_string().contains("`page`") && err.to_string().contains("older value was removed"),
        "{err}"
    );
}

#[tokio::test]
async fn the_item_size_limit_is_read_from_the_server() {
    let server = MemcachedServer::start_with(&["-I", "2m"]);
    let mc = client(&[&server]);
    let value = Bytes::from(vec![9u8; 1_500_000]);
    mc.set("k", value.clone(), MINUTE).await.unwrap();
    assert_eq!(mc.get("k").await.unwrap(), Some(value));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_is_skipped_and_retried() {
    let a = MemcachedServer::start();
    let mut b = MemcachedServer::start();
    let b_port = b.port();
    // Without failover the dead server's keys fail until it is back (tests/failover.rs has
    // the failover).
    let mut config = MemcachedConfig::new([a.address(), b.address()]);
    config.retry_after = Duration::from_millis(200);
    config.remove_failed_servers = false;
    let mc = MemcachedBackend::new(&config);
    let only_a = client(&[&a]);
    let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    for key in &keys {
        mc.set(key, Bytes::from(key.clone()), MINUTE).await.unwrap();
    }
    let on_a: Vec<&String> = {
        let mut on_a = Vec::new();
        for key in &keys {
            if only_a.get(key).await.unwrap().is_some() {
                on_a.push(key);
            }
        }
        on_a
    };
    assert!(
        !on_a.is_empty() && on_a.len() < keys.len(),
        "keys are not spread: {}",
        on_a.len()
    );

    b.stop();
    let (mut failures, mut skipped) = (0, 0);
    for key in &keys {
        match mc.get(key).await {
            Ok(Some(v)) => {
                assert!(on_a.contains(&key), "{key} answered by the dead server");
                assert_eq!(v, Bytes::from(key.clone()));
            }
            Err(e @ Error::Backend { .. }) => {
                assert!(!on_a.contains(&key), "{key} on the live server failed");
                failures += 1;
                // Failed fast, without trying the dead server again.
                skipped += usize::from(e.to_string().contains("marked down"));
            }
            other => panic!("{key}: {other:?}"),
        }
    }
    assert_eq!(failures, keys.len() - on_a.len());
    assert!(skipped > 0, "the dead server was never skipped");
    assert_eq!(mc.down_servers(), [format!("127.0.0.1:{b_port}")]);

    // Degrade mode turns the dead server's keys into misses; get_many keeps the live hits.
    let cache = Cache::new(
        Arc::new(mc.clone()),
        CacheOptions::builder().on_error(OnError::Degrade).build(),
    );
    let got = mc.get_many(&keys).await.unwrap();
    assert_eq!(got.iter().filter(|v| v.is_some()).count(), on_a.len());
    let dead_key = keys.iter().find(|k| !on_a.contains(k)).unwrap();
    assert_eq!(cache.get_raw(dead_key).await.unwrap(), None);

    // The server comes back (empty, as a restarted memcached is) and is used again.
    let _b = MemcachedServer::start_on(b_port, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match mc.set(dead_key, Bytes::from_static(b"back"), MINUTE).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_backend_failure(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the server was not retried: {e}"),
        }
    }
    assert_eq!(
        mc.get(dead_key).await.unwrap(),
        Some(Bytes::from_static(b"back"))
    );
    assert!(mc.down_servers().is_empty());
}

/// Two clients of one server, each with a pool of its own.
fn two_clients(server: &MemcachedServer) -> (Arc<dyn Backend>, Arc<dyn Backend>) {
    (Arc::new(client(&[server])), Arc::new(client(&[server])))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_race_on_add_and_exactly_one_wins() {
    let server = MemcachedServer::start();
    let (a, b) = two_clients(&server);
    webcache_testkit::races::add_race(a, b, "race", 20).await;
}

/// Two clients increment across zero (negative values go through compare-and-swap, positive
/// ones through memcached's native `ma`) and decrement below it: no update is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_race_on_incr_and_decr_across_zero() {
    let server = MemcachedServer::start();
    let (a, b) = two_clients(&server);
    webcache_testkit::races::incr_race(a, b, "n", 100).await;
}

#[tokio::test]
async fn signed_arithmetic_and_its_limits() {
    let server = MemcachedServer::start();
    let mc = client(&[&server]);
    // Memcached's own decr would stop at zero.
    mc.set("n", Bytes::from_static(b"3"), MINUTE).await.unwrap();
    assert_eq!(mc.incr("n", -5).await.unwrap(), -2);
    assert_eq!(mc.incr("n", 7).await.unwrap(), 5);
    // Past i64::MAX memcached (unsigned) would carry on; the increment is refused unwritten.
    let near = (i64::MAX - 1).to_string();
    mc.set("max", Bytes::from(near.clone()), MINUTE)
        .await
        .unwrap();
    assert!(matches!(
        mc.incr("max", 5).await,
        Err(Error::Overflow { .. })
    ));
    assert_eq!(mc.get("max").await.unwrap(), Some(Bytes::from(near)));
    mc.set("min", Bytes::from(i64::MIN.to_string()), MINUTE)
        .await
        .unwrap();
    assert!(matches!(
        mc.incr("min", -1).await,
        Err(Error::Overflow { .. })
    ));
    // Not numbers.
    for text in ["text", "1.5", "", "99999999999999999999"] {
        mc.set("s", Bytes::from(text), MINUTE).await.unwrap();
        assert!(
            matches!(mc.incr("s", 1).await, Err(Error::NotAnInteger { .. })),
            "{text:?}"
        );
        assert!(
            matches!(mc.incr("s", -1).await, Err(Error::NotAnInteger { .. })),
            "{text:?}"
        );
    }
    assert!(matches!(
        mc.incr("missing", 1).await,
        Err(Error::KeyNotFound { .. })
    ));
    assert!(matches!(
        mc.incr("missing", -1).await,
        Err(Error::KeyNotFound { .. })
    ));
    // Both paths keep the expiry (forever stays forever).
    mc.set("f", Bytes::from_static(b"-1"), Expiry::Never)
        .await
        .unwrap();
    mc.incr("f", 1).await.unwrap();
    mc.incr("f", -3).await.unwrap();
    assert_eq!(mc.ttl("f").await.unwrap(), Ttl::Forever);
    mc.set(
        "t",
        Bytes::from_static(b"-1"),
        Expiry::After(Duration::from_secs(100)),
    )
    .await
    .unwrap();
    mc.incr("t", -3).await.unwrap();
    mc.incr("t", 10).await.unwrap();
    assert!(
        matches!(mc.ttl("t").await.unwrap(), Ttl::Remaining(d) if d > Duration::from_secs(95) && d <= Duration::from_secs(100))
    );
}

#[tokio::test]
async fn keys_that_could_inject_commands_never_reach_the_server() {
    let server = MemcachedServer::start();
    let mc = client(&[&server]);
    mc.set("victim", Bytes::from_static(b"v"), MINUTE)
        .await
        .unwrap();
    for key in ["a b", "x\r\nflush_all", "tab\there", &"k".repeat(251), ""] {
        assert!(
            matches!(
                mc.set(key, Bytes::from_static(b"v"), MINUTE).await,
                Err(Error::InvalidKey { .. })
            ),
            "{key:?}"
        );
        assert!(
            matches!(mc.get(key).await, Err(Error::InvalidKey { .. })),
            "{key:?}"
        );
        assert!(
            matches!(
                mc.get_many(&[key.to_owned()]).await,
                Err(Error::InvalidKey { .. })
            ),
            "{key:?}"
        );
    }
    assert_eq!(
        mc.get("victim").await.unwrap(),
        Some(Bytes::from_static(b"v"))
    );
}

#[tokio::test]
async fn two_servers_share_the_keys_without_overlap() {
    let (a, b) = (MemcachedServer::start(), MemcachedServer::start());
    let both = client(&[&a, &b]);
    let keys: Vec<String> = (0..300).map(|i| format!("prefix:1:key{i}")).collect();
    let entries = keys
        .iter()
        .map(|k| (k.clone(), Bytes::from(k.clone())))
        .collect();
    both.set_many(entries, MINUTE).await.unwrap();
    let on_a = client(&[&a]).get_many(&keys).await.unwrap();
    let on_b = client(&[&b]).get_many(&keys).await.unwrap();
    let (mut count_a, mut count_b) = (0, 0);
    for (i, key) in keys.iter().enumerate() {
        match (&on_a[i], &on_b[i]) {
            (Some(_), None) => count_a += 1,
            (None, Some(_)) => count_b += 1,
            other => panic!("{key} is on {other:?}"),
        }
    }
    assert!(
        count_a > 90 && count_b > 90,
        "uneven: {count_a} / {count_b}"
    );
    assert_eq!(
        both.get_many(&keys).await.unwrap().iter().flatten().count(),
        300
    );
    assert_eq!(both.delete_many(&keys).await.unwrap(), 300);
    // The same list in the other order maps keys to the same servers.
    let reversed = client(&[&b, &a]);
    reversed
        .set("prefix:1:key7", Bytes::from_static(b"x"), MINUTE)
        .await
        .unwrap();
    assert_eq!(
        both.get("prefix:1:key7").await.unwrap(),
        Some(Bytes::from_static(b"x"))
    );
}

#[tokio::test]
async fn stats_and_full_clear() {
    let server = MemcachedServer::start();
    let mc = client(&[&server]);
    for i in 0..5 {
        mc.set(&format!("k{i}"), Bytes::from_static(b"value"), MINUTE)
            .await
            .unwrap();
    }
    let stats = mc.stats().await.unwrap();
    assert_eq!(stats.entries, Some(5));
    assert!(stats.bytes.unwrap() > 0);
    let extra: HashMap<_, _> = stats.extra.into_iter().collect();
    assert_eq!(extra[&format!("{} curr_items", server.address())], "5");
    mc.clear(None).await.unwrap();
    assert_eq!(mc.get("k0").await.unwrap(), None);
}

#[tokio::test]
async fn urls_with_several_servers_and_options() {
    let (a, b) = (MemcachedServer::start(), MemcachedServer::start());
    let url = format!(
        "memcached://{};{}?pool_size=2&io_timeout=0.5&connect_timeout=0.5&retry_after=0.1",
        a.address(),
        b.address()
    );
    let mut spec = CacheConfig::from_url("default", &url).unwrap().backend;
    let backend = webcache_memcached::MemcachedFactory
        .build(&mut spec)
        .await
        .unwrap();
    // More concurrent requests than connections: they queue for the two slots.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let backend = backend.clone();
            tokio::spawn(async move {
                let key = format!("k{i}");
                backend
                    .set(&key, Bytes::from(key.clone()), MINUTE)
                    .await
                    .unwrap();
                backend.get(&key).await.unwrap()
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), Some(Bytes::from(format!("k{i}"))));
    }
    let mut spec = CacheConfig::from_url("default", "memcached://h:11211?io_timeout=0")
        .unwrap()
        .backend;
    let err = webcache_memcached::MemcachedFactory
        .build(&mut spec)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("io_timeout") && err.contains("more than 0"),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_that_was_never_up_fails_fast_with_a_typed_error() {
    let refused = webcache_testkit::servers::RefusedPort::new();
    let port = refused.port();
    let mut config = MemcachedConfig::new([format!("127.0.0.1:{port}")]);
    config.retry_after = Duration::from_secs(5);
    let mc = MemcachedBackend::new(&config);
    let err = mc.get("k").await.unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    // Marked down: the next call does not even try to connect.
    let err = mc
        .set("k", Bytes::from_static(b"v"), MINUTE)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("marked down"), "{err}");
    assert!(mc.stats().await.is_err());
}

/// A peer that accepts connections and never answers (a hung server, a black-holed host):
/// requests time out with a typed error and the server is skipped afterwards.
#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held = std::thread::spawn(move || {
        // Keep the accepted sockets open without reading or writing.
        listener.incoming().take(4).collect::<Vec<_>>()
    });
    let mut config = MemcachedConfig::new([addr]);
    config.io_timeout = Duration::from_millis(300);
    config.retry_after = Duration::from_secs(5);
    let mc = MemcachedBackend::new(&config);
    // The timeout is the subject here; the bound is generous for a busy machine.
    let err = tokio::time::timeout(Duration::from_secs(10), mc.get("k"))
        .await
        .expect("io_timeout was not applied")
        .unwrap_err();
    assert!(err.is_backend_failure(), "{err:?}");
    assert!(err.to_string().contains("no answer"), "{err}");
    let err = mc.get("k").await.unwrap_err();
    assert!(err.to_string().contains("marked down"), "{err}");
    // Degrade mode serves a miss.
    let cache = Cache::new(
        Arc::new(mc),
        CacheOptions::builder().on_error(OnError::Degrade).build(),
    );
    assert_eq!(cache.get_raw("k").await.unwrap(), None);
    drop(held);
}

/// A broken or hostile server: a TCP listener that answers the connection handshake like
/// memcached (1 MiB item size limit) and every `mg` with `reply`. Counts the connections.
struct HostileServer {
    addr: String,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl HostileServer {
    fn start(reply: String) -> HostileServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let reply = reply.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 {
                        let answer = match line.trim_end() {
                            "stats settings" => "STAT item_size_max 1048576\r\nEND\r\n".to_owned(),
                            "stats" => "STAT time 1800000000\r\nEND\r\n".to_owned(),
                            l if l.starts_with("mg ") => reply.clone(),
                            _ => "ERROR\r\n".to_owned(),
                        };
                        if stream.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                        line.clear();
                    }
                });
            }
        });
        HostileServer { addr, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A reply that announces a value longer than the server's item size limit (or longer than
/// memory) is a protocol error, not an allocation or a panic, and its connection is dropped.
#[tokio::test]
async fn a_reply_announcing_an_impossible_value_is_a_protocol_error() {
    for head in [
        "VA 100000000000 v",
        "VA 18446744073709551615",
        "VA 18446744073709551614",
        "VA 1048577",
    ] {
        let hostile = HostileServer::start(format!("{head}\r\n"));
        let mc = MemcachedBackend::new(&MemcachedConfig::new([hostile.addr.clone()]));
        let err = mc.get("k").await.unwrap_err();
        assert!(matches!(err, Error::Backend { .. }), "{head}: {err:?}");
        let text = err.to_string();
        assert!(
            text.contains("out of protocol")
                && text.contains("over the item size limit of 1048576 bytes"),
            "{head}: {text}"
        );
        // The stream is out of step: the next request opens a new connection.
        assert!(mc.get("k").await.is_err());
        assert_eq!(hostile.connections(), 2, "{head}");
    }
}

/// Listing keys (`keys`/`scan`, `clear` of a prefix) walks the server with a metadump; a hung
/// server fails it within `io_timeout`, not after a fixed minute.
#[tokio::test]
async fn listing_keys_on_a_hung_server_honours_the_io_timeout() {
    use futures::TryStreamExt;
    let server = MemcachedServer::start();
    let io_timeout = Duration::from_millis(500);
    let client = || {
        let mut config = MemcachedConfig::new([server.address()]);
        config.io_timeout = io_timeout;
        MemcachedBackend::new(&config)
    };
    // Two clients, each with a connection open before the server hangs.
    let (lister, clearer) = (client(), client());
    lister
        .set("p:1", Bytes::from_static(b"v"), MINUTE)
        .await
        .unwrap();
    assert_eq!(
        clearer.get("p:1").await.unwrap(),
        Some(Bytes::from_static(b"v"))
    );
    assert_eq!(
        lister.scan("p:*").try_collect::<Vec<_>>().await.unwrap(),
        ["p:1"]
    );

    let frozen = Frozen::stop(server.pid());
    // A generous outer bound: without the fix each call waits a whole minute.
    let within = Duration::from_secs(20);
    let err = tokio::time::timeout(within, lister.scan("p:*").try_collect::<Vec<_>>())
        .await
        .expect("listing keys ignored io_timeout")
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { after, .. } if after == io_timeout),
        "{err:?}"
    );
    assert!(err.to_string().contains("within 500ms"), "{err}");
    let err = tokio::time::timeout(within, clearer.clear(Some("p:")))
        .await
        .expect("clearing a prefix ignored io_timeout")
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { after, .. } if after == io_timeout),
        "{err:?}"
    );
    drop(frozen);
    drop(server);
}
