//! The shared conformance suite, unchanged, against an SQLite file, an in-memory SQLite
//! database and a real PostgreSQL cluster started for this test binary.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use tokio::sync::OnceCell;
use webcache_core::backend::Backend;
use webcache_testkit::Harness;

use common::{backend, postgres_url, sqlite_url, unique_table, with_query};

/// A bounded backend on a table of its own, so that other cases' rows do not count.
async fn bounded(base: &str, max_entries: u64) -> Arc<dyn Backend> {
    let table = unique_table("bounded");
    backend(&with_query(
        base,
        &format!("table={table}&create_table=true&max_entries={max_entries}"),
    ))
    .await
}

/// A database server shared by every case of this binary (cases keep apart by key prefix).
#[derive(Clone, Copy)]
enum Shared {
    SqliteFile,
    Postgres,
}

impl Shared {
    async fn url(self) -> String {
        match self {
            Shared::SqliteFile => sqlite_url().await,
            Shared::Postgres => postgres_url().await,
        }
    }
}

#[async_trait::async_trait]
impl Harness for Shared {
    async fn backend(&self) -> Arc<dyn Backend> {
        backend(&self.url().await).await
    }

    async fn bounded_backend(&self, max_entries: u64) -> Option<Arc<dyn Backend>> {
        Some(bounded(&self.url().await, max_entries).await)
    }
}

mod sqlite_file {
    webcache_testkit::conformance_suite!(super::Shared::SqliteFile);
}

mod sqlite_memory {
    use super::*;

    /// One in-memory database per case, shared by every cache the case builds (as an
    /// application's one `sqlite::memory:` cache would be), so prefix isolation is tested too.
    #[derive(Default)]
    struct SqliteMemory {
        shared: OnceCell<Arc<dyn Backend>>,
    }

    #[async_trait::async_trait]
    impl Harness for SqliteMemory {
        async fn backend(&self) -> Arc<dyn Backend> {
            self.shared
                .get_or_init(|| backend("sqlite::memory:"))
                .await
                .clone()
        }

        async fn bounded_backend(&self, max_entries: u64) -> Option<Arc<dyn Backend>> {
            Some(backend(&format!("sqlite::memory:?max_entries={max_entries}")).await)
        }
    }

    webcache_testkit::conformance_suite!(SqliteMemory::default());
}

mod postgres {
    webcache_testkit::conformance_suite!(super::Shared::Postgres);
}
