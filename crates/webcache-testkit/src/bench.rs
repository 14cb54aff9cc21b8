//! The round driver of the backends' throughput benchmarks: run an operation from many tasks for
//! a fixed time, count operations per second, alternate the contenders round by round, and
//! report medians against the plain baseline.
//!
//! ```ignore
//! use webcache_testkit::bench::{alternating_rounds, print_comparison, throughput};
//!
//! let names = ["plain client", "backend"];
//! let results = alternating_rounds(5, names.len(), |contender| async move {
//!     match contender {
//!         0 => throughput(16, ROUND, |i| plain_get(i)).await,
//!         _ => throughput(16, ROUND, |i| backend_get(i)).await,
//!     }
//! })
//! .await;
//! print_comparison("get (16 tasks, median of 5 rounds)", &names, &results);
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `tasks` concurrent loops of `op` for `duration`; returns operations per second.
///
/// Each task calls `op(i)` with its own sequence of indexes (task `t` counts up from
/// `t * 7919`, so that the tasks start on different keys), one call after the other; map `i`
/// onto the key space with `i % KEYS`. The count covers the calls finished when the time is up,
/// over the time until every task has stopped.
pub async fn throughput<F, Fut>(tasks: usize, duration: Duration, op: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send,
{
    throughput_with(tasks, duration, |_| (), move |(), i| op(i)).await
}

/// [`throughput`] for operations that need a state of their own in each task, such as one
/// connection per task: task `t` starts with `state(t)`, and each call of `op` takes the state
/// and gives it back.
pub async fn throughput_with<S, F, Fut>(
    tasks: usize,
    duration: Duration,
    mut state: impl FnMut(usize) -> S,
    op: F,
) -> f64
where
    S: Send + 'static,
    F: Fn(S, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = S> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (stop, done, op) = (stop.clone(), done.clone(), op.clone());
            let mut s = state(t);
            tokio::spawn(async move {
                let mut i = t as u64 * 7919;
                while !stop.load(Ordering::Relaxed) {
                    s = op(s, i).await;
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// The median of `samples` (of an even number, the upper of the two middle ones).
///
/// # Panics
///
/// If `samples` is empty.
pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Runs `rounds` rounds of each of `contenders` contenders, alternating (A B C A B C ...) so
/// that drift on the machine hits them alike; `round(c)` runs one round of contender `c` and
/// returns its operations per second. Returns the results of each contender, in round order.
pub async fn alternating_rounds<Fut>(
    rounds: usize,
    contenders: usize,
    mut round: impl FnMut(usize) -> Fut,
) -> Vec<Vec<f64>>
where
    Fut: Future<Output = f64>,
{
    let mut results = vec![Vec::with_capacity(rounds); contenders];
    for _ in 0..rounds {
        for (c, slot) in results.iter_mut().enumerate() {
            slot.push(round(c).await);
        }
    }
    results
}

/// Prints `heading`, then for each contender its median operations per second, the ratio of
/// that median to the median of the first contender (the plain baseline) and every round:
///
/// ```text
///
/// get (5 KB values, 16 tasks, median of 5 rounds of 2s)
///   plain client             41234 ops/s   1.00x plain   rounds: [41000, 41234, ...]
///   Memcached backend        39876 ops/s   0.97x plain   rounds: [...]
/// ```
#[allow(clippy::print_stdout)] // Printing the results is the point.
pub fn print_comparison(heading: &str, names: &[&str], results: &[Vec<f64>]) {
    let baseline = median(&results[0]);
    println!("\n{heading}");
    for (name, rounds) in names.iter().zip(results) {
        let m = median(rounds);
        println!(
            "  {name:<20} {m:>9.0} ops/s   {:.2}x plain   rounds: {:?}",
            m / baseline,
            rounds.iter().map(|r| r.round() as u64).collect::<Vec<_>>()
        );
    }
}
