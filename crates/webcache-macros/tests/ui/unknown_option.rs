use webcache::{cached, Cache};

#[cached(timeout = 60)]
async fn profile(#[cache] cache: &Cache, id: u64) -> u64 {
    id
}

fn main() {}
