//! Implicit pipelining: the single commands callers send on one node's connection at about
//! the same moment go to Redis together, as one pipeline.
//!
//! Why: a page-cache hit over Redis is one `GET`, and on a busy server what that round trip
//! costs is mostly system calls and wake-ups on both sides: a write and a read here; a read,
//! a write and an `epoll_wait` in redis-server; each once per command when each command is
//! sent alone. The `redis` crate's multiplexed connection sends a command as soon as its
//! task runs, and under tokio that is right after the caller's task (a task woken by the
//! running one runs next), so sixteen concurrent hits make sixteen writes and sixteen
//! replies. Here a caller hands its command to the node's batching task, which first lets
//! every other task that is ready run (one [`yield_now`](tokio::task::yield_now): their
//! commands join), then sends everything handed to it as one pipeline. Redis reads the
//! batch at once and answers it with one write; each caller gets its own reply (a server
//! error stays that command's own, as a lone command's would).
//!
//! A command sent while no other is waiting for Redis goes out at once, as before, without
//! the batching task or the yield (so does a command carrying more than 16 KB, a large
//! value's `SET`, which batching would copy): a lone request (one connection, a quiet site) pays
//! nothing for batching (measured: 10 % of its rate when every command took the hop). Only
//! while commands are waiting do new ones join a batch. Nothing else a caller sees changes:
//! the same reply, error or deadline. Pipelines (`MULTI`/`EXEC`, a caller's own batch) are
//! sent as they are, and a command whose caller gave up before its batch left is not sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};

/// Commands in one pipeline at most: a bound on one reply's size and on how long the first
/// of them waits for the last. Under heavier load the rest go in the next batch, sent
/// without waiting for this one's reply.
const MAX_BATCH: usize = 128;

/// Commands whose arguments are larger than this go straight out even while others wait:
/// batching copies a command (its caller keeps the original), and for a large value that
/// copy costs more than the write it would share.
const MAX_BATCHED_BYTES: usize = 16 * 1024;

/// The bytes of `cmd`'s arguments (its name included).
fn argument_bytes(cmd: &Cmd) -> usize {
    cmd.args_iter()
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => bytes.len(),
            // A cursor's number, or a kind of argument added later: small either way.
            _ => 0,
        })
        .sum()
}

/// A command handed to the batching task, and where its reply goes.
type Queued = (Cmd, oneshot::Sender<RedisResult<Value>>);

/// The connection to one node (a primary, a replica or a shard): a [`ConnectionManager`]
/// (reconnecting, multiplexed) whose single commands are sent in batches.
#[derive(Clone)]
pub(crate) struct Node {
    conn: ConnectionManager,
    queue: Arc<Mutex<Option<mpsc::UnboundedSender<Queued>>>>,
    /// Single commands sent on this node and not answered yet (their callers still wait).
    waiting: Arc<AtomicUsize>,
}

/// One command counted in [`Node::waiting`] until its caller has the reply or gives up.
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    /// Counts a command in; and whether others were waiting already.
    fn enter(count: &Arc<AtomicUsize>) -> (Self, bool) {
        let others = count.fetch_add(1, Ordering::AcqRel);
        (Waiting(Arc::clone(count)), others > 0)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Node {
    /// Batches the single commands sent on `conn`. The batching task starts with the first
    /// command, on that caller's runtime.
    pub(crate) fn new(conn: ConnectionManager) -> Self {
        Node {
            conn,
            queue: Arc::new(Mutex::new(None)),
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Hands `cmd` to the batching task (starting one when there is none, or when the one
    /// there was stopped with its runtime); `None` when there is no tokio runtime to start
    /// one on.
    fn enqueue(&self, cmd: Cmd) -> Option<oneshot::Receiver<RedisResult<Value>>> {
        let (reply, replied) = oneshot::channel();
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let mut queued = (cmd, reply);
        if let Some(sender) = queue.as_ref() {
            match sender.send(queued) {
                Ok(()) => return Some(replied),
                // The task is gone: its runtime shut down (a test's, say) while this
                // connection lived on.
                Err(mpsc::error::SendError(back)) => queued = back,
            }
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (sender, receiver) = mpsc::unbounded_channel();
        runtime.spawn(drive(self.conn.clone(), receiver));
        // The receiver lives in the task just spawned, so this cannot fail.
        let _ = sender.send(queued);
        *queue = Some(sender);
        Some(replied)
    }
}

/// The batching task of one node: takes the commands queued, lets the other ready tasks
/// add theirs, sends them as one pipeline, and starts on the next batch while that one is
/// in flight. Ends when every [`Node`] handle is gone and the last reply is delivered.
async fn drive(conn: ConnectionManager, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            first = queue.recv() => {
                let Some(first) = first else { break };
                // The tasks ready now run before this one resumes: a hit's task that is
                // about to send its `GET` sends it into this batch.
                tokio::task::yield_now().await;
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(queued) => batch.push(queued),
                        Err(_) => break,
                    }
                }
                in_flight.push(send(conn.clone(), batch));
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Sends one batch and hands each caller its reply. The connection's response timeout
/// bounds the wait; a failure of the whole batch (the connection broke, the reply was
/// late) is every caller's failure.
async fn send(mut conn: ConnectionManager, batch: Vec<Queued>) {
    let (cmds, replies): (Vec<Cmd>, Vec<_>) = batch
        .into_iter()
        .filter(|(_, reply)| !reply.is_closed())
        .unzip();
    match cmds.len() {
        0 => {}
        1 => {
            let result = conn.req_packed_command(&cmds[0]).await;
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(result);
            }
        }
        count => {
            let mut pipeline = Pipeline::with_capacity(count);
            for cmd in cmds {
                pipeline.add_command(cmd);
            }
            match conn.req_packed_commands(&pipeline, 0, count).await {
                Ok(values) if values.len() == count => {
                    for (reply, value) in replies.into_iter().zip(values) {
                        let _ = reply.send(Ok(value));
                    }
                }
                Ok(values) => {
                    let e = RedisError::from((
                        redis::ErrorKind::Client,
                        "a pipeline's reply does not have one value per command",
                        format!("{} values for {count} commands", values.len()),
                    ));
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

impl ConnectionLike for Node {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let (waiting, others) = Waiting::enter(&self.waiting);
        let batched = others && argument_bytes(cmd) <= MAX_BATCHED_BYTES;
        match batched.then(|| self.enqueue(cmd.clone())).flatten() {
            Some(replied) => async move {
                let _waiting = waiting;
                replied.await.unwrap_or_else(|_| {
                    // The batching task was dropped with the command (its runtime shut down).
                    Err(RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::BrokenPipe,
                        "the connection's batching task stopped before the reply came",
                    )))
                })
            }
            .boxed(),
            // Alone (nothing to batch with), large, or no runtime to batch on: straight out.
            None => {
                let conn = &mut self.conn;
                async move {
                    let _waiting = waiting;
                    conn.req_packed_command(cmd).await
                }
                .boxed()
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.conn.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_value_is_not_batched() {
        let small = redis::cmd("GET").arg("page:1").clone();
        assert_eq!(argument_bytes(&small), "GET".len() + "page:1".len());
        assert!(argument_bytes(&small) <= MAX_BATCHED_BYTES);
        let large = redis::cmd("SET").arg("k").arg(vec![0u8; 20_000]).clone();
        assert_eq!(argument_bytes(&large), 3 + 1 + 20_000);
        assert!(argument_bytes(&large) > MAX_BATCHED_BYTES);
    }
}
