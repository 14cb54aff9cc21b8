//! The proxy against hostile origins (raw TCP servers in the test that never answer, stall
//! mid-body, or break off a body): timeouts answered with 504, truncated bodies with 502 or an
//! aborted connection, and nothing of it stored. The timeouts are short because the timeout is
//! the subject.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webcache_core::Cache;
use webcache_http::{proxy_router, proxy_router_with_origin, CachePageLayer, Origin, Policy};

/// What the hostile origin does once it has read a request head.
#[derive(Clone, Copy)]
enum Act {
    /// Sends nothing and keeps the connection open.
    Silent,
    /// Sends these bytes and closes the connection.
    SendAndClose(&'static [u8]),
    /// Sends these bytes and keeps the connection open without another byte.
    SendAndStall(&'static [u8]),
}

struct RawOrigin {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl RawOrigin {
    async fn start(act: Act) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    match act {
                        Act::Silent => tokio::time::sleep(Duration::from_secs(120)).await,
                        Act::SendAndClose(bytes) => {
                            let _ = socket.write_all(bytes).await;
                            let _ = socket.shutdown().await;
                        }
                        Act::SendAndStall(bytes) => {
                            let _ = socket.write_all(bytes).await;
                            tokio::time::sleep(Duration::from_secs(120)).await;
                        }
                    }
                });
            }
        });
        RawOrigin { addr, requests }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// What a client got: the status, and the body or the error that ended it.
#[derive(Debug)]
struct Got {
    status: StatusCode,
    x_cache: Option<String>,
    body: Result<Bytes, String>,
}

impl Got {
    fn text(&self) -> String {
        String::from_utf8_lossy(self.body.as_ref().unwrap()).into_owned()
    }
}

/// One GET through a fresh connection, bounded generously so that a hang fails the test.
async fn get(proxy: SocketAddr, path: &str) -> Got {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::get(format!("http://{proxy}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let exchange = async {
        let response = client
            .request(req)
            .await
            .map_err(|e| format!("no response: {e:?}"))?;
        let status = response.status();
        let x_cache = response
            .headers()
            .get("x-cache")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("{e:?}"));
        Ok::<_, String>(Got {
            status,
            x_cache,
            body,
        })
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the proxy must answer (or abort) long before 30 s")
        .unwrap()
}

fn rfc_layer() -> CachePageLayer {
    CachePageLayer::new(Cache::locmem()).policy(Policy::shared_cache())
}

#[tokio::test]
async fn an_origin_that_never_answers_is_a_504_after_the_first_byte_timeout() {
    let origin = RawOrigin::start(Act::Silent).await;
    let timeout = Duration::from_millis(300);
    let configured = Origin::new(&origin.url())
        .unwrap()
        .first_byte_timeout(timeout);
    let proxy = common::serve_with_peer(proxy_router_with_origin(configured, &rfc_layer())).await;
    let started = std::time::Instant::now();
    let got = get(proxy, "/slow").await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT, "{got:?}");
    assert!(got.text().contains("first-byte timeout"), "{}", got.text());
    assert!(started.elapsed() >= timeout);
    // Nothing was stored: the next request asks the origin again.
    assert_eq!(
        get(proxy, "/slow").await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(origin.requests(), 2);
}

/// A listener whose accept queue is full: the kernel drops further SYNs, so a connect hangs.
async fn unaccepting_listener() -> (tokio::net::TcpListener, Vec<std::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let fill = tokio::task::spawn_blocking(move || {
        let mut held = Vec::new();
        for _ in 0..16 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(stream) => held.push(stream),
                Err(_) => return held,
            }
        }
        panic!("the kernel kept accepting connections on a listener that never accepts");
    });
    (listener, fill.await.unwrap())
}

#[tokio::test]
async fn a_connection_that_is_never_accepted_is_a_504_after_the_connect_timeout() {
    let (listener, _held) = unaccepting_listener().await;
    let timeout = Duration::from_millis(300);
    let configured = Origin::new(&format!("http://{}", listener.local_addr().unwrap()))
        .unwrap()
        .connect_timeout(timeout);
    let proxy = common::serve_with_peer(proxy_router_with_origin(configured, &rfc_layer())).await;
    let started = std::time::Instant::now();
    let got = get(proxy, "/").await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT, "{got:?}");
    assert!(got.text().contains("could not connect"), "{}", got.text());
    assert!(started.elapsed() >= timeout);
}

#[tokio::test]
async fn a_body_still_running_at_the_total_timeout_is_never_a_complete_page() {
    // Long enough for the head to arrive first on a busy machine.
    let timeout = Duration::from_secs(1);
    // Not storable (no freshness): the head is out when the timeout hits, so the connection
    // is aborted and the client sees an incomplete body.
    for head in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"[..],
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"[..],
    ] {
        let origin = RawOrigin::start(Act::SendAndStall(head)).await;
        let configured = Origin::new(&origin.url()).unwrap().total_timeout(timeout);
        let proxy =
            common::serve_with_peer(proxy_router_with_origin(configured, &rfc_layer())).await;
        let got = get(proxy, "/stream").await;
        assert_eq!(got.status, StatusCode::OK);
        assert!(got.body.is_err(), "{got:?}");
    }
    // Storable: the page layer was buffering it, nothing is sent yet: a 504 in words, and
    // nothing stored.
    let origin = RawOrigin::start(Act::SendAndStall(
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 1000\r\n\r\n0123456789",
    ))
    .await;
    let configured = Origin::new(&origin.url()).unwrap().total_timeout(timeout);
    let proxy = common::serve_with_peer(proxy_router_with_origin(configured, &rfc_layer())).await;
    let got = get(proxy, "/page").await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT, "{got:?}");
    assert!(got.text().contains("total timeout"), "{}", got.text());
    assert_eq!(
        get(proxy, "/page").await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(origin.requests(), 2);
}

const SHORT_LENGTH: &[u8] =
    b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\nonly this";
const NO_LAST_CHUNK: &[u8] = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nonly this\r\n";

/// A storable body of known length is buffered before anything is sent: when it breaks off,
/// the client gets a 502 in words. A body of unknown length (chunked) streams to the client as
/// it comes: when it breaks off, the connection is aborted, never ended cleanly. Neither is
/// ever stored.
#[tokio::test]
async fn a_truncated_storable_body_is_a_502_or_an_abort_and_never_stored() {
    for default_ttl in [None, Some(Duration::from_secs(60))] {
        for reply in [SHORT_LENGTH, NO_LAST_CHUNK] {
            let origin = RawOrigin::start(Act::SendAndClose(reply)).await;
            let proxy = common::serve_with_peer(
                proxy_router(&origin.url(), Cache::locmem(), default_ttl).unwrap(),
            )
            .await;
            for _ in 0..2 {
                let got = get(proxy, "/page").await;
                if reply == SHORT_LENGTH {
                    assert_eq!(
                        got.status,
                        StatusCode::BAD_GATEWAY,
                        "{default_ttl:?} {got:?}"
                    );
                    assert!(got.text().contains("broke off"), "{}", got.text());
                } else {
                    assert!(got.body.is_err(), "{default_ttl:?} {got:?}");
                }
            }
            assert_eq!(origin.requests(), 2, "the truncated page was stored");
        }
    }
}

#[tokio::test]
async fn a_truncated_body_already_streaming_aborts_the_connection_and_is_never_stored() {
    // Not storable under the RFC policy (no freshness): streamed at once.
    for reply in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"[..],
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nonly this\r\n"[..],
    ] {
        let origin = RawOrigin::start(Act::SendAndClose(reply)).await;
        let proxy =
            common::serve_with_peer(proxy_router(&origin.url(), Cache::locmem(), None).unwrap())
                .await;
        let got = get(proxy, "/stream").await;
        assert_eq!(got.status, StatusCode::OK);
        assert!(
            got.body.is_err(),
            "a truncated body must not end cleanly: {got:?}"
        );
    }
    // Storable but larger than the buffer: the first bytes were sent before the break.
    for reply in [SHORT_LENGTH, NO_LAST_CHUNK] {
        let origin = RawOrigin::start(Act::SendAndClose(reply)).await;
        let layer = rfc_layer().max_body(4);
        let proxy = common::serve_with_peer(proxy_router_with_origin(
            Origin::new(&origin.url()).unwrap(),
            &layer,
        ))
        .await;
        for _ in 0..2 {
            let got = get(proxy, "/big").await;
            assert_eq!(
                (got.status, got.x_cache.as_deref()),
                (StatusCode::OK, Some("MISS"))
            );
            assert!(got.body.is_err(), "{got:?}");
        }
        assert_eq!(origin.requests(), 2);
    }
}

#[tokio::test]
async fn the_total_timeout_bounds_the_wait_for_the_head_too() {
    let origin = RawOrigin::start(Act::Silent).await;
    let configured = Origin::new(&origin.url())
        .unwrap()
        .total_timeout(Duration::from_millis(300));
    let proxy = common::serve_with_peer(proxy_router_with_origin(configured, &rfc_layer())).await;
    let got = get(proxy, "/slow").await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT, "{got:?}");
    assert!(got.text().contains("total timeout"), "{}", got.text());
}
