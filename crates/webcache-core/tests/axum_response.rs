//! With the `axum` feature, `webcache_core::Error` is an axum response: 503 when the backend is
//! down or slow, 500 otherwise, with a short text that never carries the key or the message.
#![cfg(feature = "axum")]

use std::time::Duration;

use axum_core::response::IntoResponse;
use http_body_util::BodyExt;
use webcache_core::Error;

async fn answer(error: Error) -> (u16, String) {
    let response = error.into_response();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn a_backend_failure_is_503_and_a_mistake_is_500_without_the_key() {
    let down = Error::backend_msg("redis", "connection refused to secret-host:6379");
    assert_eq!(answer(down).await, (503, "cache unavailable\n".into()));
    let slow = Error::Timeout {
        backend: "memcached",
        after: Duration::from_millis(50),
    };
    assert_eq!(answer(slow).await.0, 503);
    for error in [
        Error::KeyNotFound {
            key: "user:42:secret-token".into(),
        },
        Error::ValueTooLarge {
            key: "user:42:secret-token".into(),
            size: 10,
            limit: 1,
        },
    ] {
        let (status, text) = answer(error).await;
        assert_eq!(status, 500);
        assert_eq!(text, "cache error\n");
        assert!(!text.contains("secret"));
    }
}

#[tokio::test]
async fn a_handler_uses_question_mark_on_cache_calls() {
    async fn handler(cache: webcache_core::Cache) -> Result<String, Error> {
        cache.incr("missing", 1).await?;
        Ok("unreachable".into())
    }
    let response = handler(webcache_core::Cache::locmem())
        .await
        .into_response();
    assert_eq!(response.status().as_u16(), 500);
}
