use webcache::{cached, Cache};

#[cached(ttl = 60, key = "user:{idd}")]
async fn profile(#[cache] cache: &Cache, id: u64) -> u64 {
    id
}

fn main() {}
