//! Races between two independent clients of one store: "two processes", as far as the store can
//! tell.
//!
//! Each function takes two [`Backend`]s that share storage but nothing else: two connections,
//! two pools, two instances over one directory. A lock or a queue inside one client cannot make
//! these races pass; only atomic operations of the store itself can. Half of the racing tasks
//! use each client, and the tasks start together behind a barrier, so that they overlap as much
//! as the runtime allows.
//!
//! Run them on a multi-threaded runtime (`#[tokio::test(flavor = "multi_thread")]`), or the
//! tasks take turns instead of racing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use webcache_core::backend::Backend;
use webcache_core::bytes::Bytes;
use webcache_core::Expiry;

/// How long the raced entries live: longer than any race takes.
const MINUTE: Expiry = Expiry::After(Duration::from_secs(60));

/// How many writers race in each round of [`add_race`], half on each client.
pub const ADD_WRITERS: usize = 32;

/// `rounds` rounds of [`ADD_WRITERS`] concurrent `add`s of one key, half through `a` and half
/// through `b`, each writer with a value of its own: in every round exactly one `add` returns
/// `true`, and both clients then read the winner's value.
///
/// Round `n` uses the key `{key_prefix}{n}`, which must not exist beforehand.
///
/// # Panics
///
/// On a lost race (no winner, several winners, or another writer's value stored) and on any
/// backend error.
pub async fn add_race(a: Arc<dyn Backend>, b: Arc<dyn Backend>, key_prefix: &str, rounds: usize) {
    let clients = [a, b];
    for round in 0..rounds {
        let key = format!("{key_prefix}{round}");
        let start = Arc::new(Barrier::new(ADD_WRITERS));
        let tasks: Vec<_> = (0..ADD_WRITERS)
            .map(|writer| {
                let client = clients[writer % 2].clone();
                let (key, start) = (key.clone(), start.clone());
                tokio::spawn(async move {
                    let value = Bytes::from(format!("writer-{writer}"));
                    start.wait().await;
                    (writer, client.add(&key, value, MINUTE).await.unwrap())
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (writer, won) = task.await.unwrap();
            if won {
                winners.push(writer);
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round} (`{key}`): exactly one add wins, got {winners:?}"
        );
        let expected = Bytes::from(format!("writer-{}", winners[0]));
        for (name, client) in ["a", "b"].iter().zip(&clients) {
            assert_eq!(
                client.get(&key).await.unwrap(),
                Some(expected.clone()),
                "round {round} (`{key}`): client {name} reads the winner's value"
            );
        }
    }
}

/// Concurrent `incr`s of one counter from both clients lose no update, across zero both ways.
///
/// Sets `key` to `-per_client`, then runs `2 * per_client` concurrent increments by 1, half
/// through `a` and half through `b`, then as many concurrent decrements by 1: in each phase the
/// values returned are all distinct and are exactly the steps from the old value to the new one
/// (`-per_client + 1 ..= per_client`, then `-per_client ..= per_client - 1`), and both clients
/// read the final value. Negative and positive counters often take different paths in a backend
/// (memcached's native arithmetic is unsigned, for one), so both are raced.
///
/// # Panics
///
/// On a lost or duplicated update and on any backend error.
pub async fn incr_race(a: Arc<dyn Backend>, b: Arc<dyn Backend>, key: &str, per_client: usize) {
    let clients = [a, b];
    let n = i64::try_from(per_client).unwrap();
    clients[0]
        .set(key, Bytes::from((-n).to_string()), MINUTE)
        .await
        .unwrap();
    for (delta, expected) in [(1, -n + 1..=n), (-1, -n..=n - 1)] {
        let total = 2 * per_client;
        let start = Arc::new(Barrier::new(total));
        let tasks: Vec<_> = (0..total)
            .map(|i| {
                let client = clients[i % 2].clone();
                let (key, start) = (key.to_owned(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    client.incr(&key, delta).await.unwrap()
                })
            })
            .collect();
        let mut seen = Vec::with_capacity(total);
        for task in tasks {
            seen.push(task.await.unwrap());
        }
        seen.sort_unstable();
        let last = if delta > 0 { n } else { -n };
        assert_eq!(
            seen,
            expected.collect::<Vec<i64>>(),
            "`{key}` by {delta}: every incr saw a distinct value, none was lost"
        );
        for (name, client) in ["a", "b"].iter().zip(&clients) {
            assert_eq!(
                client.get(key).await.unwrap(),
                Some(Bytes::from(last.to_string())),
                "`{key}` by {delta}: client {name} reads the final count"
            );
        }
    }
}
