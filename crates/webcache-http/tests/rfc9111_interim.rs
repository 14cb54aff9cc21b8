//! Interim (1xx) responses through the real caching proxy in RFC 9111 mode (RFC 9110 §15.2;
//! RFC 9111 §3: a cache stores final responses only): what an origin sends before its final
//! answer (100, 102, 103) is never stored, and `Expect: 100-continue` works end to end. hyper's
//! server cannot send a 102 or 103 of its own (only the automatic 100 Continue), so interim
//! responses other than 100 are not forwarded to the client; see the crate README.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use common::{serve, serve_with_peer, HttpClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use webcache_http::proxy_router;

/// Generous: the machine is shared by many builds.
const PATIENCE: Duration = Duration::from_secs(30);

/// An origin on a raw socket that answers every request with `interim`, then a cacheable 200
/// (with a `Link` of its own in the interim answers only); counts the requests.
async fn raw_origin(interim: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let answer = format!(
                    "{interim}HTTP/1.1 200 OK\r\ncache-control: max-age=600\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, requests)
}

#[tokio::test]
async fn rfc9111_3_interim_responses_from_the_origin_are_never_stored() {
    for interim in [
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.1 102 Processing\r\n\r\n",
        "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n",
        "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n",
    ] {
        let (origin, requests) = raw_origin(interim).await;
        let proxy =
            proxy_router(&format!("http://{origin}"), webcache_core::Cache::locmem(), None).unwrap();
        let client = HttpClient::new(serve_with_peer(proxy).await);
        let first = client.get("/page").await;
        let second = client.get("/page").await;
        for reply in [&first, &second] {
            assert_eq!(reply.status.as_u16(), 200, "{interim:?}");
            assert_eq!(reply.text(), "hello", "{interim:?}");
            // The interim answers' fields are not the page's.
            assert_eq!(reply.header("link"), None, "{interim:?}");
        }
        assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"), "{interim:?}");
        assert_eq!(requests.load(Ordering::SeqCst), 1, "{interim:?}");
    }
}

/// Reads from `stream` until `needle` has arrived; returns all that was read.
async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(PATIENCE, async {
        while !got.windows(needle.len()).any(|w| w == needle) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(&got)));
    got
}

#[tokio::test]
async fn rfc9110_15_2_1_expect_100_continue_works_through_the_proxy() {
    let origin = serve(Router::new().route("/echo", post(|body: Bytes| async move { body }))).await;
    let proxy = proxy_router(
        &format!("http://{origin}"),
        webcache_core::Cache::locmem(),
        None,
    )
    .unwrap();
    let addr = serve_with_peer(proxy).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /echo HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 5\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // The body is sent only once the proxy said to go on.
    let interim = read_until(&mut stream, b"\r\n\r\n").await;
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{:?}",
        String::from_utf8_lossy(&interim)
    );
    stream.write_all(b"hello").await.unwrap();
    let mut rest =
        interim[interim.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..].to_vec();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let reply = common::parse_http_response(&rest);
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(reply.text(), "hello");
}
