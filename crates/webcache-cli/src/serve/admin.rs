//! The admin endpoint: runs inspection commands inside the app, for
//! `webcache keys --app http://127.0.0.1:8000` (the only way to see a locmem cache from outside).
//!
//! Requests from loopback are accepted; others need the token `serve` printed at start
//! (`Authorization: Bearer TOKEN`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use webcache::Caches;

use crate::cli::Op;
use crate::ops::{self, OpError};

/// Where the endpoint is mounted.
pub(crate) const PATH: &str = "/_webcache/command";

/// A random token for non-loopback clients.
pub(crate) fn new_token() -> String {
    (0..16)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

#[derive(Clone)]
pub(crate) struct Admin {
    pub(crate) caches: Caches,
    pub(crate) token: String,
}

#[derive(Deserialize)]
pub(crate) struct Request {
    alias: String,
    op: Op,
}

pub(crate) async fn handle(
    State(admin): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(request): Json<Request>,
) -> (StatusCode, Json<Value>) {
    let authorised = peer.ip().is_loopback()
        || headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t == admin.token);
    if !authorised {
        return (
            StatusCode::FORBIDDEN,
            Json(
                json!({"ok": false, "usage": true, "error": "the admin endpoint needs the token `webcache serve` printed (--token)"}),
            ),
        );
    }
    let outcome = match admin.caches.get(&request.alias) {
        Err(e) => Err(OpError::Usage(e.to_string())),
        Ok(cache) => ops::run(cache, &request.op, &|_| {}).await,
    };
    let body = match outcome {
        Ok(result) => json!({"ok": true, "result": result}),
        Err(e) => json!({"ok": false, "usage": e.exit_code() == 2, "error": e.message()}),
    };
    (StatusCode::OK, Json(body))
}

/// Turns the endpoint's answer back into an outcome.
pub(crate) fn outcome_from_json(body: &Value) -> Result<Value, OpError> {
    if body["ok"].as_bool() == Some(true) {
        return Ok(body["result"].clone());
    }
    let message = body["error"]
        .as_str()
        .unwrap_or("the app answered without an error message")
        .to_owned();
    if body["usage"].as_bool() == Some(true) {
        Err(OpError::Usage(message))
    } else {
        Err(OpError::Failed(message))
    }
}
