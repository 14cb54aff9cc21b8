use webcache::{cached, Cache};

#[cached(ttl = 60, skip(db))]
async fn profile(#[cache] cache: &Cache, id: u64, pool: u8) -> u64 {
    id + u64::from(pool)
}

fn main() {}
