use webcache::{cached, Cache};

struct Users {
    cache: Cache,
}

impl Users {
    #[cached(ttl = 60, cache = self.cache)]
    async fn name(&self, id: u64) -> String {
        id.to_string()
    }
}

fn main() {}
