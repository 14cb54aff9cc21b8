//! What the session tests share: the tutorial's cart handler.

use axum::extract::Query;
use axum::Json;
use serde_json::{json, Value};
use tower_sessions::Session;

#[derive(serde::Deserialize)]
pub(crate) struct Add {
    add: Option<String>,
}

/// `GET /cart?add=ITEM`: the items in the session, after adding one if asked.
pub(crate) async fn cart(session: Session, Query(q): Query<Add>) -> Json<Value> {
    let mut items: Vec<String> = session.get("items").await.unwrap().unwrap_or_default();
    if let Some(item) = q.add {
        items.push(item);
        session.insert("items", &items).await.unwrap();
    }
    Json(json!({ "items": items }))
}
