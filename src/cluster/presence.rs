//! Who is online, for the whole cluster: a Redis sorted set per user whose members are
//! `node/session` and whose scores are expiry times.
//!
//! Each node writes only its own sessions and refreshes them every `presence_heartbeat_s`
//! (one pipeline for all of them); a member whose node stopped refreshing it (the node died,
//! or lost Redis) is past its expiry `presence_ttl_s` later and is never reported again:
//! every read first removes expired members. The key itself expires `presence_ttl_s` after
//! its last refresh, so a user nobody has been connected as for that long leaves nothing
//! behind. Expiry times come from the Redis server's clock (`TIME` inside the scripts), so
//! nodes need not agree on the time.
//!
//! Joining and leaving never wait for Redis: they update the node's own table and queue the
//! change (bounded); a change lost to a full queue or to Redis being down is repaired by the
//! next heartbeat (joins) or by expiry (leaves).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::ClusterHandle;

/// Changes waiting to be written to Redis.
const QUEUE: usize = 10_000;
/// Members refreshed per pipeline.
const CHUNK: usize = 1_000;

/// Add or refresh a member: `KEYS[1]` the user's set, `ARGV[1]` the TTL in ms, `ARGV[2]`
/// the member.
const TOUCH: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

/// Drop expired members, then list the live ones.
const READ: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// One live session of a user somewhere in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PresenceEntry {
    /// The node the session is on.
    pub node: String,
    /// The session id on that node.
    pub session: String,
}

/// Why a presence read failed.
#[derive(Debug, thiserror::Error)]
#[error("presence read from Redis failed: {0}")]
pub struct PresenceError(#[from] redis::RedisError);

/// A change for Redis.
#[derive(Debug)]
enum Change {
    /// A session joined.
    Join { user: String, session: String },
    /// A session left.
    Leave { user: String, session: String },
}

/// This node's presence writer and the cluster-wide reader.
#[derive(Clone)]
pub struct Presence {
    /// State shared by every clone.
    shared: Arc<Shared>,
}

struct Shared {
    /// The command connection.
    redis: ConnectionManager,
    /// Key prefix.
    prefix: String,
    /// This node.
    node: String,
    /// TTL in ms.
    ttl_ms: u64,
    /// This node's live sessions per user: what every heartbeat refreshes.
    local: Mutex<HashMap<String, HashSet<String>>>,
    /// Changes for the writer task.
    changes: mpsc::Sender<Change>,
    /// Changes dropped because the queue was full.
    dropped: std::sync::atomic::AtomicU64,
}

impl Presence {
    /// Start presence on the engine's Redis: `ttl` is how long an entry lives without a
    /// heartbeat, `heartbeat` how often this node refreshes its own (less than `ttl`).
    pub fn start(engine: &ClusterHandle, ttl: Duration, heartbeat: Duration) -> Presence {
        let (changes, queue) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared {
            redis: engine.redis(),
            prefix: engine.naming().key("presence:"),
            node: engine.node_id().to_owned(),
            ttl_ms: ttl.as_millis().max(1) as u64,
            local: Mutex::new(HashMap::new()),
            changes,
            dropped: Default::default(),
        });
        tokio::spawn(write_changes(Arc::downgrade(&shared), queue, heartbeat));
        Presence { shared }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// A session of `user` opened on this node.
    pub fn join(&self, user: &str, session: &str) {
        self.shared
            .lock()
            .entry(user.to_owned())
            .or_default()
            .insert(session.to_owned());
        self.queue(Change::Join {
            user: user.to_owned(),
            session: session.to_owned(),
        });
    }

    /// A session of `user` on this node ended.
    pub fn leave(&self, user: &str, session: &str) {
        {
            let mut local = self.shared.lock();
            if let Some(set) = local.get_mut(user) {
                set.remove(session);
                if set.is_empty() {
                    local.remove(user);
                }
            }
        }
        self.queue(Change::Leave {
            user: user.to_owned(),
            session: session.to_owned(),
        });
    }

    /// Every live session of `user` on every node, sorted.
    pub async fn sessions(&self, user: &str) -> Result<Vec<PresenceEntry>, PresenceError> {
        let mut redis = self.shared.redis.clone();
        let members: Vec<String> = Script::new(READ)
            .key(self.shared.key(user))
            .invoke_async(&mut redis)
            .await?;
        let mut entries: Vec<PresenceEntry> = members
            .iter()
            .filter_map(|m| {
                let (node, session) = m.split_once('/')?;
                Some(PresenceEntry {
                    node: node.to_owned(),
                    session: session.to_owned(),
                })
            })
            .collect();
        entries.sort();
        Ok(entries)
    }

    /// Changes that could not be queued (repaired by the next heartbeat or by expiry).
    pub fn dropped(&self) -> u64 {
        self.shared
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn queue(&self, change: Change) {
        if self.shared.changes.try_send(change).is_err() {
            self.shared
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Shared {
    fn key(&self, user: &str) -> String {
        format!("{}{user}", self.prefix)
    }

    fn member(&self, session: &str) -> String {
        format!("{}/{session}", self.node)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        match self.local.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// The writer: queued changes as they come, and every local entry each heartbeat. Ends when
/// every [`Presence`] is dropped.
async fn write_changes(
    shared: std::sync::Weak<Shared>,
    mut queue: mpsc::Receiver<Change>,
    heartbeat: Duration,
) {
    let touch = Script::new(TOUCH);
    let mut ticker = tokio::time::interval(heartbeat);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            n = queue.recv_many(&mut batch, CHUNK) => {
                if n == 0 {
                    return;
                }
                let Some(shared) = shared.upgrade() else { return };
                let mut pipe = redis::pipe();
                // Scripts are loaded in every pipeline: a restarted Redis has forgotten them.
                pipe.load_script(&touch);
                for change in batch.drain(..) {
                    match change {
                        Change::Join { user, session } => {
                            pipe.invoke_script(
                                touch.key(shared.key(&user)).arg(shared.ttl_ms).arg(shared.member(&session)),
                            );
                        }
                        Change::Leave { user, session } => {
                            pipe.cmd("ZREM").arg(shared.key(&user)).arg(shared.member(&session));
                        }
                    }
                }
                run(&shared, pipe).await;
            }
            _ = ticker.tick() => {
                let Some(shared) = shared.upgrade() else { return };
                let entries: Vec<(String, String)> = shared
                    .lock()
                    .iter()
                    .flat_map(|(u, set)| set.iter().map(move |s| (u.clone(), s.clone())))
                    .collect();
                for chunk in entries.chunks(CHUNK) {
                    let mut pipe = redis::pipe();
                    pipe.load_script(&touch);
                    for (user, session) in chunk {
                        pipe.invoke_script(
                            touch.key(shared.key(user)).arg(shared.ttl_ms).arg(shared.member(session)),
                        );
                    }
                    run(&shared, pipe).await;
                }
            }
        }
    }
}

async fn run(shared: &Shared, pipe: redis::Pipeline) {
    let mut redis = shared.redis.clone();
    if let Err(e) = pipe.query_async::<()>(&mut redis).await {
        tracing::debug!(node = %shared.node, error = %e, "presence write failed; the next heartbeat repairs it");
    }
}
