use webcache::{cached, Cache};

#[derive(Debug)]
struct LookupError;

impl From<webcache::Error> for LookupError {
    fn from(_: webcache::Error) -> Self {
        LookupError
    }
}

#[cached(ttl = 60, key = "lookup:{id}", cache_errors)]
async fn lookup(#[cache] cache: &Cache, id: u64) -> Result<u64, LookupError> {
    Ok(id)
}

fn main() {}
