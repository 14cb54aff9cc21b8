//! Shared helpers of the integration tests: a real listener on a free loopback port and a
//! real HTTP/1.1 client.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use webcache_core::backend::BackendFactory as _;

use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Serves `app` on 127.0.0.1 on a free port until the test process ends.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// A counter shared between a handler and the test.
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicUsize>);

impl Counter {
    pub fn bump(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Whether a page stored by a request sent at `sent`, fresh for `fresh_for`, is certainly still
/// fresh now. A test of a short freshness (one second, so that it can also wait past it) checks
/// "still a hit" only then: on a busy machine, a stall can outlast the second, and the page is
/// then rightly stale. Call it after the answer to check has arrived.
pub fn still_fresh(sent: std::time::Instant, fresh_for: std::time::Duration) -> bool {
    sent.elapsed() < fresh_for
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
    pub fn x_cache(&self) -> &str {
        self.header("x-cache").unwrap_or("")
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }
}

#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl HttpClient {
    pub fn new(addr: SocketAddr) -> Self {
        HttpClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
        }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let response = self.client.request(req).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[], "").await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", path, headers, "").await
    }
}

/// Where the pages of a test are stored.
#[derive(Debug, Clone, Copy)]
pub enum Store {
    Locmem,
    Redis,
}

impl Store {
    /// A new, empty cache on this store: a private locmem, or the test process's Redis server
    /// (started on a free port on first use) under a key prefix of its own.
    pub fn cache(self) -> webcache_core::Cache {
        use std::sync::atomic::AtomicUsize;
        match self {
            Store::Locmem => webcache_core::Cache::locmem(),
            Store::Redis => {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                let server = webcache_testkit::servers::redis::RedisServer::shared();
                let backend = webcache_redis::RedisBackend::from_url(&server.url(0)).unwrap();
                let prefix = format!(
                    "http-tests-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                webcache_core::Cache::new(
                    Arc::new(backend),
                    webcache_core::CacheOptions::builder()
                        .key_prefix(prefix)
                        .build(),
                )
            }
        }
    }
}

/// Runs each listed `async fn name(store: Store)` once per store, as `locmem::name` and
/// `redis::name`.
#[allow(unused_macros)]
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod locmem {
            $( #[tokio::test] async fn $name() { super::$name(super::Store::Locmem).await } )*
        }
        mod redis {
            $( #[tokio::test] async fn $name() { super::$name(super::Store::Redis).await } )*
        }
    };
}

/// The keys of `cache` matching `pattern`.
#[allow(dead_code)]
pub async fn keys(cache: &webcache_core::Cache, pattern: &str) -> Vec<String> {
    use futures::TryStreamExt;
    cache.keys(pattern).try_collect().await.unwrap()
}

/// Sends `request` (raw bytes, as written on the wire; it should say `Connection: close`) to
/// `addr` over a new TCP connection and reads the answer until the server closes: for requests
/// a well-behaved client cannot send (absolute-form targets, two `Host` lines, no `Host`).
pub async fn raw_http(addr: SocketAddr, request: &str) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("the server should answer and close the connection")
    .unwrap();
    parse_http_response(&raw)
}

/// Parses one HTTP/1.1 response (a `Content-Length` or chunked body, or one read to the end).
pub fn parse_http_response(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no complete response head in {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            http::HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_str().unwrap().contains("chunked"));
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size_text = std::str::from_utf8(&rest[..end]).unwrap();
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
            rest = &rest[end + 2..];
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        Bytes::from(body)
    } else if let Some(len) = headers.get("content-length") {
        let len: usize = len.to_str().unwrap().parse().unwrap();
        Bytes::copy_from_slice(&rest[..len])
    } else {
        Bytes::copy_from_slice(rest)
    };
    Reply {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
        body,
    }
}

impl HttpClient {
    /// [`send`](HttpClient::send) that returns the client's error (an empty reply, a reset)
    /// instead of panicking, for tests about what the server answers at all.
    pub async fn try_get(&self, path: &str) -> Result<Reply, String> {
        let req = Request::builder()
            .uri(format!("{}{}", self.base, path))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("{e:?}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// The `tracing` output of a test: installed as the default subscriber of the current thread
/// (so use the current-thread runtime, where the server's tasks run on the test's thread too),
/// every event at `level` and above, one line each, without colours.
#[derive(Clone, Default)]
pub struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    /// Starts capturing; the capture ends when the returned guard is dropped.
    pub fn capture(level: tracing::Level) -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(level)
            .with_ansi(false)
            .finish();
        let guard = webcache_testkit::logs::capture_on_this_thread(subscriber);
        (logs, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The lines of level `level` (`"WARN"`, `"DEBUG"`, ...) that contain `needle`.
    pub fn lines(&self, level: &str, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(level) && l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// `INFO commandstats` of a real redis-server: calls per command (`get`, `scan`, ...), counted
/// since its start or its last `CONFIG RESETSTAT`.
pub fn redis_command_calls(
    server: &webcache_testkit::servers::redis::RedisServer,
) -> std::collections::HashMap<String, u64> {
    server
        .cli(&["info", "commandstats"])
        .lines()
        .filter_map(|line| {
            let (name, stats) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_ascii_lowercase(), calls))
        })
        .collect()
}

/// A cache over its own database of `server` (a key prefix of its own, plain URL settings).
pub fn redis_cache(server: &webcache_testkit::servers::redis::RedisServer) -> webcache_core::Cache {
    let backend = webcache_redis::RedisBackend::from_url(&server.url(0)).unwrap();
    webcache_core::Cache::new(Arc::new(backend), webcache_core::CacheOptions::default())
}

/// A cache over `server` whose connect and response timeouts are `seconds` (tests of a backend
/// that is down or frozen), built through the URL as a user would.
#[allow(dead_code)]
pub async fn redis_cache_with_timeouts(
    server: &webcache_testkit::servers::redis::RedisServer,
    seconds: &str,
) -> webcache_core::Cache {
    let url = format!(
        "{}?connect_timeout={seconds}&response_timeout={seconds}",
        server.url(0)
    );
    let mut config = webcache_core::config::CacheConfig::from_url("default", &url).unwrap();
    let backend = webcache_redis::RedisFactory
        .build(&mut config.backend)
        .await
        .unwrap();
    webcache_core::Cache::new(backend, config.options)
}

/// Serves `app` as `webcache proxy` does: with the peer's address (`ConnectInfo`), which the
/// proxy's forwarding fields need.
#[allow(dead_code)]
pub async fn serve_with_peer(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}
