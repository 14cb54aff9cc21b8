//! The query cache against real databases (a SQLite file, a PostgreSQL server) over real
//! caches (locmem; Redis with two clients, standing for two processes).

use serde::{Deserialize, Serialize};
use sqlx::{Database, Executor, IntoArguments, Pool};
use webcache_core::{Cache, CacheOptions};
use webcache_redis::RedisBackend;
use webcache_sqlx::{Error, QueryCache};
use webcache_testkit::servers::postgres::Postgres;
use webcache_testkit::servers::redis::RedisServer;
use webcache_testkit::servers::temp_dir;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize, Deserialize)]
struct Product {
    id: i64,
    name: String,
    price: i64,
}

const SELECT_ALL: &str = "SELECT id, name, price FROM products ORDER BY id";

/// Two caches that share their data, as two processes would: the same locmem cache twice, or
/// two Redis clients on one server under one fresh prefix.
async fn caches(redis: bool) -> (Cache, Cache) {
    if !redis {
        let cache = Cache::locmem();
        return (cache.clone(), cache);
    }
    let server = RedisServer::shared();
    let prefix = format!("sqlx{:08x}", rand::random::<u32>());
    let client = || {
        Cache::new(
            std::sync::Arc::new(RedisBackend::from_url(&server.url(0)).expect("redis url")),
            CacheOptions::builder().key_prefix(prefix.clone()).build(),
        )
    };
    (client(), client())
}

async fn sqlite_pool() -> sqlx::SqlitePool {
    let dir = temp_dir("webcache-sqlx");
    let path = dir.join(format!("catalogue{:08x}.db", rand::random::<u32>()));
    sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("open the SQLite file")
}

async fn postgres_pool() -> sqlx::PgPool {
    let server = Postgres::shared();
    let admin = sqlx::PgPool::connect(&server.url())
        .await
        .expect("connect to PostgreSQL");
    let db = format!("sqlx{:08x}", rand::random::<u32>());
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .await
        .expect("create a database");
    admin.close().await;
    let url = format!("postgres://postgres@127.0.0.1:{}/{db}", server.port());
    sqlx::PgPool::connect(&url)
        .await
        .expect("connect to the new database")
}

/// SQL for both databases: SQLite takes `$1` too.
async fn seed<DB: Database>(pool: &Pool<DB>)
where
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
{
    pool.execute(
        "CREATE TABLE products (id BIGINT PRIMARY KEY, name TEXT NOT NULL, price BIGINT NOT NULL)",
    )
    .await
    .expect("create table");
    pool.execute("INSERT INTO products VALUES (1, 'teapot', 12), (2, 'kettle', 30), (3, 'cup', 4)")
        .await
        .expect("insert rows");
}

/// Changes a price behind the query cache's back.
async fn set_price_outside<DB: Database>(pool: &Pool<DB>, id: i64, price: i64)
where
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'a> <DB as Database>::Arguments: IntoArguments<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query("UPDATE products SET price = $1 WHERE id = $2")
        .bind(price)
        .bind(id)
        .execute(pool)
        .await
        .expect("update outside");
}

fn prices(rows: &[Product]) -> Vec<i64> {
    rows.iter().map(|p| p.price).collect()
}

/// The whole story on one database and one pair of caches.
async fn scenario<DB: Database>(pool: Pool<DB>, redis: bool)
where
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    for<'a> <DB as Database>::Arguments: IntoArguments<DB>,
    Product: for<'r> sqlx::FromRow<'r, DB::Row>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    seed(&pool).await;
    let (a, b) = caches(redis).await;
    let (qa, qb) = (
        QueryCache::new(a).timeout(600),
        QueryCache::new(b).timeout(600),
    );
    let all = |q: &QueryCache| q.query_as::<DB, Product>(SELECT_ALL);

    // A read is cached: a change made outside is not seen until the tables are invalidated.
    assert_eq!(
        prices(&all(&qa).fetch_all(&pool).await.unwrap()),
        [12, 30, 4]
    );
    assert_eq!(
        prices(&all(&qb).fetch_all(&pool).await.unwrap()),
        [12, 30, 4]
    );
    set_price_outside(&pool, 1, 13).await;
    assert_eq!(
        prices(&all(&qb).fetch_all(&pool).await.unwrap()),
        [12, 30, 4],
        "cached"
    );
    qa.invalidate_tables(["products"]).await.unwrap();
    assert_eq!(
        prices(&all(&qb).fetch_all(&pool).await.unwrap()),
        [13, 30, 4]
    );

    // Parameters are part of the key.
    let one = |q: &QueryCache, id: i64| {
        q.query_as::<DB, Product>("SELECT id, name, price FROM products WHERE id = $1")
            .bind(id)
    };
    assert_eq!(one(&qa, 2).fetch_one(&pool).await.unwrap().name, "kettle");
    assert_eq!(one(&qa, 3).fetch_one(&pool).await.unwrap().name, "cup");
    assert!(matches!(
        one(&qa, 9).fetch_one(&pool).await,
        Err(Error::Database(sqlx::Error::RowNotFound))
    ));
    assert_eq!(one(&qb, 9).fetch_optional(&pool).await.unwrap(), None);

    // A write through one client invalidates what the other cached, at once.
    assert_eq!(one(&qb, 2).fetch_one(&pool).await.unwrap().price, 30);
    let done = qa
        .query::<DB>("UPDATE products SET price = $1 WHERE id = $2")
        .bind(31_i64)
        .bind(2_i64)
        .execute(&pool)
        .await
        .unwrap();
    let _ = done;
    assert_eq!(one(&qb, 2).fetch_one(&pool).await.unwrap().price, 31);
    assert_eq!(
        prices(&all(&qb).fetch_all(&pool).await.unwrap()),
        [13, 31, 4]
    );

    // A write that returns rows (fetch) invalidates too, and is not cached.
    let added: Product = qb
        .query_as::<DB, Product>(
            "INSERT INTO products (id, name, price) VALUES ($1, 'jug', $2) RETURNING id, name, price",
        )
        .bind(4_i64)
        .bind(20_i64)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(added.name, "jug");
    assert_eq!(
        prices(&all(&qa).fetch_all(&pool).await.unwrap()),
        [13, 31, 4, 20]
    );

    // In a transaction, the invalidation waits for the commit.
    let mut tx = qa.transaction(pool.begin().await.unwrap());
    tx.execute(
        qa.query::<DB>("DELETE FROM products WHERE id = $1")
            .bind(4_i64),
    )
    .await
    .unwrap();
    assert_eq!(
        prices(&all(&qb).fetch_all(&pool).await.unwrap()),
        [13, 31, 4, 20],
        "not committed yet: the cached rows stay, and are still right"
    );
    tx.commit().await.unwrap();
    assert_eq!(
        prices(&all(&qb).fetch_all(&pool).await.unwrap()),
        [13, 31, 4]
    );

    // A rolled back transaction changes nothing and invalidates nothing.
    let mut tx = qb.transaction(pool.begin().await.unwrap());
    tx.execute(qb.query::<DB>("DELETE FROM products"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        prices(&all(&qa).fetch_all(&pool).await.unwrap()),
        [13, 31, 4]
    );

    // What the parse cannot vouch for is refused unless the caller names the tables.
    const JOINED: &str =
        "SELECT p.id, p.name, p.price FROM (products p JOIN products q ON p.id = q.id) ORDER BY p.id";
    let refused = qa.query_as::<DB, Product>(JOINED).fetch_all(&pool).await;
    assert!(
        matches!(refused, Err(Error::UnknownTables { .. })),
        "{refused:?}"
    );
    let named = |q: &QueryCache| q.query_as::<DB, Product>(JOINED).reads(["Products"]);
    assert_eq!(
        prices(&named(&qa).fetch_all(&pool).await.unwrap()),
        [13, 31, 4]
    );
    set_price_outside(&pool, 3, 5).await;
    assert_eq!(
        prices(&named(&qb).fetch_all(&pool).await.unwrap()),
        [13, 31, 4],
        "cached"
    );
    qb.query::<DB>("UPDATE products SET name = 'mug' WHERE id = 3")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        prices(&named(&qa).fetch_all(&pool).await.unwrap()),
        [13, 31, 5]
    );

    // A write the parse cannot see through is refused before it runs.
    let refused = qa
        .query::<DB>("DELETE FROM (products)")
        .execute(&pool)
        .await;
    assert!(
        matches!(refused, Err(Error::UnknownTables { .. })),
        "{:?}",
        refused.err()
    );

    // A declared table name with nothing left once its schema and blanks are dropped names no
    // table (its tag would match nothing): refused before anything runs, wherever it is given.
    let refused = qa
        .query_as::<DB, Product>(JOINED)
        .reads(["public."])
        .fetch_all(&pool)
        .await;
    assert!(empty_name(&refused, "public."), "{refused:?}");
    let refused = qa
        .query::<DB>("DELETE FROM products")
        .writes(["products", " "])
        .execute(&pool)
        .await
        .map(|_| ());
    assert!(empty_name(&refused, " "), "{refused:?}");
    assert_eq!(
        prices(&all(&qa).fetch_all(&pool).await.unwrap()),
        [13, 31, 5],
        "the refused DELETE did not run"
    );
    let refused = qa.invalidate_tables(["products", "\"s\"."]).await;
    assert!(empty_name(&refused, "\"s\"."), "{refused:?}");
    let mut tx = qa.transaction(pool.begin().await.unwrap());
    let refused = tx.writes([""]);
    assert!(empty_name(&refused, ""), "{refused:?}");
    tx.writes(["Products"]).unwrap();
    tx.rollback().await.unwrap();
}

/// Whether `r` refused the table name `given` as naming no table.
fn empty_name<T>(r: &Result<T, Error>, given: &str) -> bool {
    matches!(r, Err(Error::EmptyTableName { name }) if name == given)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_over_locmem() {
    scenario(sqlite_pool().await, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_over_redis_two_clients() {
    scenario(sqlite_pool().await, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_locmem() {
    scenario(postgres_pool().await, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_redis_two_clients() {
    scenario(postgres_pool().await, true).await;
}

/// A read that started before a write and finished after its invalidation does not leave
/// its old rows in the cache: the tag versions were pinned before the query ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_read_before_a_write_do_not_survive_its_invalidation() {
    let pool = sqlite_pool().await;
    seed(&pool).await;
    let (a, _) = caches(false).await;
    let q = QueryCache::new(a).timeout(600);
    let writer = q.clone();
    let pool2 = pool.clone();
    // The read's "database" runs the write (and its invalidation) between the pin and the
    // store, as a concurrent request would.
    let tagged = q.cache().tagged([webcache_sqlx::table_tag("products")]);
    let stale: Vec<i64> = tagged
        .get_or_set_with("demo", 600, || async move {
            let old = sqlx::query_scalar::<_, i64>("SELECT price FROM products WHERE id = 1")
                .fetch_one(&pool2)
                .await
                .unwrap();
            writer
                .query::<sqlx::Sqlite>("UPDATE products SET price = 99 WHERE id = 1")
                .execute(&pool2)
                .await
                .unwrap();
            vec![old]
        })
        .await
        .unwrap();
    assert_eq!(stale, [12]);
    assert_eq!(q.cache().get::<Vec<i64>>("demo").await.unwrap(), None);
    let now: Vec<Product> = q.query_as(SELECT_ALL).fetch_all(&pool).await.unwrap();
    assert_eq!(now[0].price, 99);
}
