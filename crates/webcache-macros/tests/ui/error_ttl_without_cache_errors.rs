use webcache::{cached, Cache};

#[cached(ttl = 60, key = "lookup:{id}", error_ttl = 5)]
async fn lookup(#[cache] cache: &Cache, id: u64) -> Result<u64, webcache::Error> {
    Ok(id)
}

fn main() {}
