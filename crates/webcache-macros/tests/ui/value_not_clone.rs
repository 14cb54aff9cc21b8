use webcache::{cached, Cache};

#[derive(serde::Serialize, serde::Deserialize)]
struct Page {
    html: String,
}

#[cached(ttl = 60, key = "page:{id}")]
async fn page(#[cache] cache: &Cache, id: u64) -> Page {
    Page { html: id.to_string() }
}

fn main() {}
