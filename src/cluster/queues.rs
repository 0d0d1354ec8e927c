//! Competing queues across nodes: one logical queue per destination, a Redis Stream
//! (`channel_prefix + "queue:" + destination`) read by one consumer group, in which every
//! node with a local subscriber is a consumer (named by its node id). A message is read by
//! one node only and given to one local subscriber there.
//!
//! The engine knows destinations and messages, not sessions: the side that owns local
//! subscribers ([`QueueConsumer`]) says how many more messages each destination can take
//! here now (so a node never reads more than its subscribers' windows) and takes each one.
//!
//! * A message taken by an auto-ack subscriber, or ACKed later, is removed (`XACK` and
//!   `XDEL`); one NACKed, or held by a subscriber that leaves, goes back: it is appended
//!   again, marked redelivered, and the original removed, in one transaction, so any node
//!   may take it.
//! * A node that dies holds its unacknowledged messages in the group's pending list. Every
//!   node reading a queue claims (`XAUTOCLAIM`) messages idle for longer than
//!   `queue_reclaim_ms` and delivers them again, marked redelivered; a live node keeps its
//!   own in-flight messages from going idle by touching them (`XCLAIM ... JUSTID`) well
//!   within that time.
//! * Reads block (`XREADGROUP ... BLOCK`) on a connection of their own, so nothing waits on
//!   the shared command connection; appends and settlements go through one bounded queue
//!   to one task, pipelined. Redis down: appends wait in that queue (beyond it they are
//!   refused and counted), reads retry with a capped backoff.
//!
//! ```text
//!  broker ── SEND ──────▶ bounded queue ──▶ writer task ── XADD / XACK+XDEL ──────▶ Redis
//!  broker ◀── deliver ◀── reader task (room per destination) ◀── XREADGROUP, XAUTOCLAIM
//! ```

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use redis::Value;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::envelope::{Envelope, Message, Route};
use super::{ClusterHandle, PublishError};

/// The consumer group every node reads a queue with.
const GROUP: &str = "consumers";
/// How long one read blocks at most (a new destination waits for at most this long).
const BLOCK: Duration = Duration::from_millis(250);
/// Messages read for one destination at once at most.
const READ_BATCH: usize = 64;
/// Operations written together at most.
const WRITE_BATCH: usize = 256;
/// The longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The side that owns local subscribers of shared queues (the broker adapter).
pub trait QueueConsumer: Send + Sync + 'static {
    /// How many more messages of `destination` local subscribers can take now.
    fn room(&self, destination: &str) -> usize;
    /// Give one message (its id is the stream id) to a local subscriber.
    fn take(&self, destination: &str, message: Message, redelivered: bool) -> Taken;
    /// The ids of messages of `destination` delivered here and not yet settled.
    fn in_flight(&self, destination: &str) -> Vec<String>;
}

/// What became of a message given to [`QueueConsumer::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Delivered to an auto-ack subscriber: settled.
    Settled,
    /// Delivered to a client-ack subscriber: settled by its ACK (or back by its NACK).
    Held,
    /// Nobody here can take it now: it goes back to the queue.
    Refused,
}

/// Counters of the shared queues.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Messages appended.
    pub appended: AtomicU64,
    /// Messages read and delivered here.
    pub delivered: AtomicU64,
    /// Messages settled (auto-ack delivery or ACK).
    pub settled: AtomicU64,
    /// Messages put back (NACK, a subscriber that left, nobody with room).
    pub requeued: AtomicU64,
    /// Messages claimed from a consumer that stopped (a dead node).
    pub reclaimed: AtomicU64,
    /// Appends refused (queue to Redis full, or too large).
    pub refused: AtomicU64,
    /// Redis commands that failed.
    pub errors: AtomicU64,
}

impl QueueStats {
    /// Every counter by name, for the log, `/api/stats` and `/metrics`.
    pub fn counters(&self) -> [(&'static str, &AtomicU64); 7] {
        [
            ("appended", &self.appended),
            ("delivered", &self.delivered),
            ("settled", &self.settled),
            ("requeued", &self.requeued),
            ("reclaimed", &self.reclaimed),
            ("refused", &self.refused),
            ("errors", &self.errors),
        ]
    }
}

enum Op {
    Append {
        destination: String,
        message: Message,
        redelivered: bool,
    },
    Settle {
        destination: String,
        ids: Vec<String>,
    },
    Requeue {
        destination: String,
        message: Message,
    },
}

/// The shared queues of this node.
pub struct SharedQueues {
    cluster: ClusterHandle,
    ops: mpsc::Sender<Op>,
    /// Destinations with local subscribers.
    watched: Mutex<HashSet<String>>,
    /// Wakes the reader: interest or room changed.
    changed: Notify,
    max_len: usize,
    reclaim: Duration,
    stats: QueueStats,
}

impl SharedQueues {
    /// Start the writer and reader tasks (inside a tokio runtime); `max_len` bounds each
    /// stream (oldest trimmed first), `reclaim` is how long a message may stay unsettled at
    /// a consumer before another takes it.
    pub fn start(
        cluster: &ClusterHandle,
        consumer: Weak<dyn QueueConsumer>,
        queue: usize,
        max_len: usize,
        reclaim: Duration,
    ) -> Arc<SharedQueues> {
        let (ops, rx) = mpsc::channel(queue);
        let queues = Arc::new(SharedQueues {
            cluster: cluster.clone(),
            ops,
            watched: Mutex::new(HashSet::new()),
            changed: Notify::new(),
            max_len,
            reclaim,
            stats: QueueStats::default(),
        });
        tokio::spawn(write_ops(Arc::downgrade(&queues), rx));
        tokio::spawn(read_queues(Arc::downgrade(&queues), consumer));
        queues
    }

    /// The counters.
    pub fn stats(&self) -> &QueueStats {
        &self.stats
    }

    fn key(&self, destination: &str) -> String {
        self.cluster.naming().key(&format!("queue:{destination}"))
    }

    /// Append a message to `destination`'s queue. Never waits.
    pub fn append(&self, destination: &str, message: Message) -> Result<(), PublishError> {
        self.queue(Op::Append {
            destination: destination.to_owned(),
            message,
            redelivered: false,
        })
    }

    /// These messages were settled here (ACKed, or taken by an auto-ack subscriber).
    pub fn settle(&self, destination: &str, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let _ = self.queue(Op::Settle {
            destination: destination.to_owned(),
            ids,
        });
        self.changed.notify_one();
    }

    /// Put a message taken here back, for any node (NACK, or its subscriber left).
    pub fn requeue(&self, destination: &str, message: Message) {
        let _ = self.queue(Op::Requeue {
            destination: destination.to_owned(),
            message,
        });
        self.changed.notify_one();
    }

    /// Local subscribers want `destination` (first one) or no longer do (last one left).
    pub fn watch(&self, destination: &str, wanted: bool) {
        let mut watched = lock(&self.watched);
        match wanted {
            true => watched.insert(destination.to_owned()),
            false => watched.remove(destination),
        };
        drop(watched);
        self.changed.notify_one();
    }

    /// Room for more opened here (an ACK, a new subscriber).
    pub fn room_opened(&self) {
        self.changed.notify_one();
    }

    fn queue(&self, op: Op) -> Result<(), PublishError> {
        self.ops.try_send(op).map_err(|_| {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            PublishError::Full
        })
    }

    fn envelope(&self, destination: &str, message: Message) -> Result<Bytes, PublishError> {
        let envelope = Envelope {
            node: self.cluster.node_id().to_owned(),
            route: Route::Destination(destination.to_owned()),
            message,
        };
        envelope
            .encode(self.cluster.shared.max_envelope)
            .map_err(|_| PublishError::TooLarge)
    }
}

/// Write queued operations in pipelines, until the queues are dropped.
async fn write_ops(queues: Weak<SharedQueues>, mut rx: mpsc::Receiver<Op>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let Some(queues) = queues.upgrade() else {
            return;
        };
        let mut pipe = redis::pipe();
        let mut appended = 0;
        for op in batch.drain(..) {
            match op {
                Op::Append {
                    destination,
                    message,
                    redelivered,
                } => {
                    let Ok(bytes) = queues.envelope(&destination, message) else {
                        queues.stats.refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    add(
                        &mut pipe,
                        &queues.key(&destination),
                        queues.max_len,
                        &bytes,
                        redelivered,
                    );
                    appended += 1;
                }
                Op::Settle { destination, ids } => {
                    let key = queues.key(&destination);
                    pipe.cmd("XACK").arg(&key).arg(GROUP).arg(&ids).ignore();
                    pipe.cmd("XDEL").arg(&key).arg(&ids).ignore();
                    queues
                        .stats
                        .settled
                        .fetch_add(ids.len() as u64, Ordering::Relaxed);
                }
                Op::Requeue {
                    destination,
                    message,
                } => {
                    let key = queues.key(&destination);
                    let id = message.id.clone();
                    let Ok(bytes) = queues.envelope(&destination, message) else {
                        continue;
                    };
                    // Put back and remove the original at once: never both, never neither.
                    pipe.cmd("MULTI").ignore();
                    add(&mut pipe, &key, queues.max_len, &bytes, true);
                    pipe.cmd("XACK").arg(&key).arg(GROUP).arg(&id).ignore();
                    pipe.cmd("XDEL").arg(&key).arg(&id).ignore();
                    pipe.cmd("EXEC").ignore();
                    queues.stats.requeued.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let mut redis = queues.cluster.redis();
        // Redis down: the batch is written again until it goes through (at least once);
        // meanwhile the bounded queue fills and new SENDs are refused.
        let mut backoff = Duration::from_millis(100);
        let mut logged = false;
        loop {
            let Err(e) = pipe.query_async::<()>(&mut redis).await else {
                queues.stats.appended.fetch_add(appended, Ordering::Relaxed);
                break;
            };
            queues.stats.errors.fetch_add(1, Ordering::Relaxed);
            let node = queues.cluster.node_id();
            let transient = e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal();
            if !transient {
                tracing::warn!(node, error = %e, "Redis refused a write to the shared queues; it is dropped");
                break;
            }
            if Arc::strong_count(&queues) == 1 {
                // The gateway stopped.
                return;
            }
            if !logged {
                tracing::warn!(node, error = %e, "writing to the shared queues in Redis failed; retrying");
                logged = true;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        // A new message may be for a destination read here.
        queues.changed.notify_one();
    }
}

fn add(pipe: &mut redis::Pipeline, key: &str, max_len: usize, bytes: &[u8], redelivered: bool) {
    let cmd = pipe
        .cmd("XADD")
        .arg(key)
        .arg("MAXLEN")
        .arg("~")
        .arg(max_len)
        .arg("*")
        .arg("m")
        .arg(bytes);
    if redelivered {
        cmd.arg("r").arg(1);
    }
    cmd.ignore();
}

/// Read the watched queues for the local subscribers, until the queues are dropped.
async fn read_queues(queues: Weak<SharedQueues>, consumer: Weak<dyn QueueConsumer>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(q) = queues.upgrade() else { return };
        let cluster = q.cluster.clone();
        drop(q);
        match cluster.dedicated(BLOCK).await {
            Ok(conn) => {
                let mut reader = Reader {
                    conn,
                    grouped: HashSet::new(),
                    last_claim: Instant::now(),
                };
                match reader.run(&queues, &consumer).await {
                    Ok(()) => return,
                    Err(e) => {
                        if let Some(q) = queues.upgrade() {
                            q.stats.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::warn!(node = %cluster.node_id(), error = %e, "reading the shared queues from Redis failed; retrying");
                        backoff = Duration::from_millis(100);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(node = %cluster.node_id(), error = %e, "cannot reach Redis for the shared queues");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

struct Reader {
    conn: MultiplexedConnection,
    /// Streams whose group exists (as far as this connection knows).
    grouped: HashSet<String>,
    /// When the last claim round ran.
    last_claim: Instant,
}

impl Reader {
    /// Ok when the queues are gone (the gateway stopped); Err on a Redis failure.
    async fn run(
        &mut self,
        queues: &Weak<SharedQueues>,
        consumer: &Weak<dyn QueueConsumer>,
    ) -> redis::RedisResult<()> {
        loop {
            let (Some(q), Some(c)) = (queues.upgrade(), consumer.upgrade()) else {
                return Ok(());
            };
            let watched: Vec<String> = lock(&q.watched).iter().cloned().collect();
            for destination in &watched {
                let key = q.key(destination);
                if !self.grouped.contains(&key) {
                    self.create_group(&key).await?;
                    self.grouped.insert(key);
                }
            }
            if self.last_claim.elapsed() >= q.reclaim / 3 {
                self.last_claim = Instant::now();
                for destination in &watched {
                    self.claim(&q, &*c, destination).await?;
                }
            }
            let ready: Vec<(String, usize)> = watched
                .iter()
                .map(|d| (d.clone(), c.room(d).min(READ_BATCH)))
                .filter(|(_, room)| *room > 0)
                .collect();
            if ready.is_empty() {
                drop(c);
                // Holds the queues for at most BLOCK, so a stopping gateway waits no longer.
                let _ = tokio::time::timeout(BLOCK, q.changed.notified()).await;
                continue;
            }
            // One read for all of them; COUNT applies per stream, so the smallest room
            // bounds it (the others are read again at once).
            let count = ready.iter().map(|(_, room)| *room).min().unwrap_or(1);
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(GROUP)
                .arg(q.cluster.node_id())
                .arg("COUNT")
                .arg(count)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS");
            for (destination, _) in &ready {
                cmd.arg(q.key(destination));
            }
            for _ in &ready {
                cmd.arg(">");
            }
            let node = q.cluster.node_id().to_owned();
            drop(c);
            drop(q);
            let reply: Option<StreamReadReply> = match cmd.query_async(&mut self.conn).await {
                Ok(reply) => reply,
                Err(e) if e.code() == Some("NOGROUP") => {
                    // A stream was removed (or Redis restarted empty): make the groups again.
                    self.grouped.clear();
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (Some(q), Some(c)) = (queues.upgrade(), consumer.upgrade()) else {
                return Ok(());
            };
            let Some(reply) = reply else { continue };
            for stream in reply.keys {
                let Some(destination) = ready
                    .iter()
                    .map(|(d, _)| d)
                    .find(|d| q.key(d) == stream.key)
                else {
                    continue;
                };
                deliver(&q, &*c, destination, stream.ids, false, &node);
            }
        }
    }

    async fn create_group(&mut self, key: &str) -> redis::RedisResult<()> {
        // From the start of the stream: what was sent before any node read it is kept.
        let made: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn)
            .await;
        match made {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Keep this node's in-flight messages of `destination` from going idle, and take the
    /// ones another consumer left idle for longer than the reclaim time.
    async fn claim(
        &mut self,
        q: &SharedQueues,
        c: &dyn QueueConsumer,
        destination: &str,
    ) -> redis::RedisResult<()> {
        let key = q.key(destination);
        let node = q.cluster.node_id().to_owned();
        let mine = c.in_flight(destination);
        if !mine.is_empty() {
            let _: Value = redis::cmd("XCLAIM")
                .arg(&key)
                .arg(GROUP)
                .arg(&node)
                .arg(0)
                .arg(&mine)
                .arg("JUSTID")
                .query_async(&mut self.conn)
                .await?;
        }
        let room = c.room(destination).min(READ_BATCH);
        if room == 0 {
            return Ok(());
        }
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&key)
            .arg(GROUP)
            .arg(&node)
            .arg(q.reclaim.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(room)
            .query_async(&mut self.conn)
            .await?;
        // Our own messages were touched just now, so whatever is claimed was another's.
        let mine: HashSet<String> = mine.into_iter().collect();
        let claimed: Vec<StreamId> = reply
            .claimed
            .into_iter()
            .filter(|e| !mine.contains(&e.id))
            .collect();
        if !claimed.is_empty() {
            q.stats
                .reclaimed
                .fetch_add(claimed.len() as u64, Ordering::Relaxed);
            tracing::info!(node = %node, destination, count = claimed.len(), "took over messages another consumer left unsettled");
            deliver(q, c, destination, claimed, true, &node);
        }
        Ok(())
    }
}

/// Hand read entries to the local subscribers; settle what auto-ack took, put back what
/// nobody could take.
fn deliver(
    q: &SharedQueues,
    c: &dyn QueueConsumer,
    destination: &str,
    entries: Vec<StreamId>,
    claimed: bool,
    node: &str,
) {
    let mut settled = Vec::new();
    for entry in entries {
        let Some(message) = decode(q, &entry) else {
            tracing::warn!(node, destination, id = %entry.id, "an unreadable shared-queue entry was dropped");
            settled.push(entry.id);
            continue;
        };
        let redelivered = claimed || entry.map.contains_key("r");
        q.stats.delivered.fetch_add(1, Ordering::Relaxed);
        match c.take(destination, message.clone(), redelivered) {
            Taken::Settled => settled.push(entry.id),
            Taken::Held => {}
            Taken::Refused => q.requeue(destination, message),
        }
    }
    if !settled.is_empty() {
        q.settle(destination, settled);
    }
}

fn decode(q: &SharedQueues, entry: &StreamId) -> Option<Message> {
    let Some(Value::BulkString(raw)) = entry.map.get("m") else {
        return None;
    };
    let envelope =
        Envelope::decode(Bytes::copy_from_slice(raw), q.cluster.shared.max_envelope).ok()?;
    Some(Message {
        id: entry.id.clone(),
        ..envelope.message
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
