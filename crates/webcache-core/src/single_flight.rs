//! One computation per missing key: concurrent callers for the same key wait for the first.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

/// Runs at most one computation per key at a time in this process; concurrent callers with the
/// same key wait for it and share its result.
///
/// Used by [`Cache::get_or_set_with`](crate::Cache::get_or_set_with) and by the page-cache
/// layer. If the running computation fails or its caller is cancelled, the next waiter runs its
/// own computation, so a failure is never shared and nobody waits forever.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use webcache_core::SingleFlight;
/// let flights = SingleFlight::<u32>::new();
/// let (value, ran_here) = flights
///     .run("key", || async { Ok::<_, std::convert::Infallible>(7) })
///     .await
///     .unwrap();
/// assert_eq!((value, ran_here), (7, true));
/// # }
/// ```
#[derive(Debug)]
pub struct SingleFlight<V> {
    in_flight: Mutex<HashMap<String, Arc<OnceCell<V>>>>,
}

impl<V> Default for SingleFlight<V> {
    fn default() -> Self {
        SingleFlight {
            in_flight: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone + Send + Sync> SingleFlight<V> {
    /// An empty set of flights.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `compute` unless a computation for `key` is already running, in which case it waits
    /// for that one. Returns the value and whether this caller computed it.
    pub async fn run<F, Fut, E>(&self, key: &str, compute: F) -> Result<(V, bool), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let cell = {
            let mut map = self.lock();
            map.entry(key.to_owned()).or_default().clone()
        };
        let _cleanup = Cleanup {
            flights: self,
            key,
            cell: &cell,
        };
        let mut ran_here = false;
        let value = cell
            .get_or_try_init(|| {
                ran_here = true;
                compute()
            })
            .await?
            .clone();
        Ok((value, ran_here))
    }

    /// Number of keys with a computation under way (for tests and stats).
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OnceCell<V>>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single insert or
        // remove), so a poisoned lock is still usable.
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes the flight from the map when its last caller is done, so the next miss starts anew.
struct Cleanup<'a, V> {
    flights: &'a SingleFlight<V>,
    key: &'a str,
    cell: &'a Arc<OnceCell<V>>,
}

impl<V> Drop for Cleanup<'_, V> {
    fn drop(&mut self) {
        let mut map = self
            .flights
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(current) = map.get(self.key) {
            // Only the finished (or abandoned) flight is removed, never a newer one, and only
            // when no other caller still holds it: 2 = the map's reference + ours.
            if Arc::ptr_eq(current, self.cell)
                && (self.cell.initialized() || Arc::strong_count(self.cell) <= 2)
            {
                map.remove(self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_computation() {
        let flights = Arc::new(SingleFlight::<u64>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let flights = flights.clone();
                let calls = calls.clone();
                tokio::spawn(async move {
                    flights
                        .run("k", || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Ok::<_, ()>(42)
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut leaders = 0;
        for t in tasks {
            let (v, ran) = t.await.unwrap();
            assert_eq!(v, 42);
            leaders += usize::from(ran);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_failure_is_not_shared() {
        let flights = SingleFlight::<u64>::new();
        let r: Result<_, &str> = flights.run("k", || async { Err("boom") }).await;
        assert_eq!(r, Err("boom"));
        let r: Result<_, &str> = flights.run("k", || async { Ok(1) }).await;
        assert_eq!(r, Ok((1, true)));
        assert_eq!(flights.in_flight(), 0);
    }
}
