use webcache::{cached, Cache};

#[cached(ttl = 60, tags = ["user:{user_id}"])]
async fn orders(#[cache] cache: &Cache, user: u64) -> u64 {
    user
}

fn main() {}
