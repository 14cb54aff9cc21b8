//! One computation per missing key: concurrent callers for the same key wait for the first.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// Runs at most one computation per key at a time in this process; concurrent callers with the
/// same key wait for it and share its result.
///
/// Two ways to use it:
/// - [`run`](Self::run): a closure computes the value; the others get a clone of it. Used by
///   [`Cache::get_or_set_with`](crate::Cache::get_or_set_with).
/// - [`join`](Self::join): the caller learns its role. A [`Leader`] computes and
///   [`publish`](Leader::publish)es whenever it likes (possibly from another task, after it has
///   answered its own client); a [`Follower`] waits, bounded, and learns what happened
///   ([`Followed`]). Used by the page cache, whose leader keeps its own response.
///
/// A leader that fails, or is dropped without publishing, abandons the flight: its followers
/// are told so and compute for themselves, so a failure is never shared and nobody waits
/// forever.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use webcache::backend::SingleFlight;
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
    shared: Arc<Flights<V>>,
}

impl<V> Clone for SingleFlight<V> {
    fn clone(&self) -> Self {
        SingleFlight {
            shared: self.shared.clone(),
        }
    }
}

/// Key -> (flight id, the channel its leader publishes on).
type FlightMap<V> = HashMap<String, (u64, watch::Receiver<Option<V>>)>;

#[derive(Debug)]
struct Flights<V> {
    in_flight: Mutex<FlightMap<V>>,
    next_id: AtomicU64,
}

impl<V> Default for SingleFlight<V> {
    fn default() -> Self {
        SingleFlight {
            shared: Arc::new(Flights {
                in_flight: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
            }),
        }
    }
}

/// A caller's role in a flight, from [`SingleFlight::join`].
#[derive(Debug)]
pub enum Joined<V> {
    /// No computation was under way: this caller computes, and publishes the result.
    Leader(Leader<V>),
    /// Another caller computes: wait for it.
    Follower(Follower<V>),
}

/// The caller that computes a key's value. Publishing ends the flight; dropping it without
/// publishing abandons it (the followers are told and compute for themselves).
#[derive(Debug)]
pub struct Leader<V> {
    flights: SingleFlight<V>,
    key: String,
    id: u64,
    sender: watch::Sender<Option<V>>,
}

/// A caller waiting for a leader's value.
#[derive(Debug)]
pub struct Follower<V> {
    receiver: watch::Receiver<Option<V>>,
}

/// What a follower's wait came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed<V> {
    /// The leader published this value.
    Shared(V),
    /// The leader failed or was dropped without publishing.
    Abandoned,
    /// The leader did not publish within the wait.
    TimedOut,
}

impl<V: Clone + Send + Sync> SingleFlight<V> {
    /// An empty set of flights.
    pub fn new() -> Self {
        Self::default()
    }

    /// Joins the flight for `key`: leads it if none is under way, follows it otherwise.
    pub fn join(&self, key: &str) -> Joined<V> {
        let mut map = self.lock();
        if let Some((_, receiver)) = map.get(key) {
            return Joined::Follower(Follower {
                receiver: receiver.clone(),
            });
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = watch::channel(None);
        map.insert(key.to_owned(), (id, receiver));
        Joined::Leader(Leader {
            flights: self.clone(),
            key: key.to_owned(),
            id,
            sender,
        })
    }

    /// Runs `compute` unless a computation for `key` is already running, in which case it waits
    /// for that one. Returns the value and whether this caller computed it. If the running
    /// computation fails or its caller is cancelled, a waiter runs its own.
    pub async fn run<F, Fut, E>(&self, key: &str, compute: F) -> Result<(V, bool), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        loop {
            match self.join(key) {
                Joined::Leader(leader) => {
                    let value = compute().await?;
                    leader.publish(value.clone());
                    return Ok((value, true));
                }
                Joined::Follower(follower) => {
                    if let Followed::Shared(value) = follower.wait().await {
                        return Ok((value, false));
                    }
                }
            }
        }
    }

    /// Number of keys with a computation under way (for tests and stats).
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FlightMap<V>> {
        // A panic while holding this lock cannot leave the map inconsistent (single insert or
        // remove), so a poisoned lock is still usable.
        self.shared
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl<V> Leader<V> {
    /// Hands `value` to every follower, present and joining until now, and ends the flight.
    pub fn publish(self, value: V) {
        self.sender.send_replace(Some(value));
        // Dropping ends the flight (see `Drop`).
    }
}

impl<V> Drop for Leader<V> {
    fn drop(&mut self) {
        let mut map = self
            .flights
            .shared
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Only this flight is removed, never a newer one under the same key.
        if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            map.remove(&self.key);
        }
    }
}

impl<V: Clone> Follower<V> {
    /// Waits until the leader publishes or gives up.
    pub async fn wait(mut self) -> Followed<V> {
        match self.receiver.wait_for(Option::is_some).await {
            Ok(value) => value.clone().map_or(Followed::Abandoned, Followed::Shared),
            Err(_) => Followed::Abandoned,
        }
    }

    /// [`wait`](Self::wait), at most `limit`.
    pub async fn wait_at_most(self, limit: Duration) -> Followed<V> {
        tokio::time::timeout(limit, self.wait())
            .await
            .unwrap_or(Followed::TimedOut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_computation() {
        let flights = SingleFlight::<u64>::new();
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

    #[tokio::test]
    async fn followers_learn_what_happened() {
        let flights = SingleFlight::<u64>::new();
        let Joined::Leader(leader) = flights.join("k") else {
            panic!("the first caller leads");
        };
        let Joined::Follower(early) = flights.join("k") else {
            panic!("the second caller follows");
        };
        let Joined::Follower(patient) = flights.join("k") else {
            panic!("the third caller follows");
        };
        assert_eq!(
            early.wait_at_most(Duration::from_millis(10)).await,
            Followed::TimedOut
        );
        // The leader publishes from another task, after its own work.
        tokio::spawn(async move { leader.publish(7) });
        assert_eq!(patient.wait().await, Followed::Shared(7));
        assert_eq!(flights.in_flight(), 0);

        let Joined::Leader(leader) = flights.join("k") else {
            panic!("a new flight starts once the last one ended");
        };
        let Joined::Follower(follower) = flights.join("k") else {
            panic!("follows");
        };
        drop(leader);
        assert_eq!(follower.wait().await, Followed::Abandoned);
        assert_eq!(flights.in_flight(), 0);
    }
}
