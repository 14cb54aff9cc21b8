use webcache::{cached, Cache};

#[derive(serde::Serialize)]
struct Filter {
    tag: String,
}

#[cached(ttl = 60, key = "search:{id}:{filter}")]
async fn search(#[cache] cache: &Cache, id: u64, filter: Filter) -> u64 {
    let _ = filter;
    id
}

fn main() {}
