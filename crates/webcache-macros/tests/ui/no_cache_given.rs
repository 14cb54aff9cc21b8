use webcache::cached;

#[cached(ttl = 60)]
async fn profile(id: u64) -> u64 {
    id
}

fn main() {}
