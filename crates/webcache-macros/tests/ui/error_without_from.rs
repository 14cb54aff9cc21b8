use webcache::{cached, Cache};

#[derive(Debug)]
struct MyError;

#[cached(ttl = 60, key = "p:{id}")]
async fn profile(#[cache] cache: &Cache, id: u64) -> Result<u64, MyError> {
    Ok(id)
}

fn main() {}
