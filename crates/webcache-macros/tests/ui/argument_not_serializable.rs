use webcache::{cached, Cache};

struct Db;

#[cached(ttl = 60)]
async fn profile(#[cache] cache: &Cache, id: u64, db: &Db) -> u64 {
    let _ = db;
    id
}

fn main() {}
