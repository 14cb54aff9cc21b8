//! Shared helpers of the integration tests: a real listener on a free loopback port and a
//! real HTTP/1.1 client.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
                    webcache_core::CacheOptions {
                        key_prefix: prefix,
                        ..Default::default()
                    },
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
