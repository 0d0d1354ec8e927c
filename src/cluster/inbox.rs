//! Where the durable per-user inbox keeps messages: a Redis Stream per user and destination
//! in cluster mode, or the same structure in memory on a node that runs alone.
//!
//! Every message gets an id when it is stored (the stream id, `<ms>-<seq>`, increasing), and
//! that id is the `message-id` every delivery of it carries, on every node and on every
//! redelivery, so a client can drop duplicates. A stored message is *unsettled* until it was
//! delivered to an `ack:auto` subscription or ACKed by a client-mode one; a user who
//! subscribes gets every unsettled message first, in id order. Bounds: `max_messages` per
//! user and destination (the oldest go first) and `ttl_s` (older messages are trimmed; an
//! inbox nobody wrote to for that long expires as a whole).
//!
//! In Redis an inbox is two keys: the stream `{prefix}inbox:{user}:{destination}` (field `m`
//! holds the [envelope](super::envelope) bytes) and the sorted set `...:unsettled` of the ids
//! not yet settled, scored by their millisecond part so trimming can drop them by age. Storing
//! is one Lua script (append, trim by count and age, index, expire), so the two keys never
//! disagree about a message.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::Script;
use redis::aio::ConnectionManager;

use super::envelope::{Envelope, Message, Route};

/// Append, trim and index: `KEYS` stream, unsettled set; `ARGV` max messages, ttl ms, the
/// envelope. Returns the new id.
const APPEND: &str = r"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'm', ARGV[3])
local ms = tonumber(string.match(id, '^(%d+)'))
redis.call('ZADD', KEYS[2], ms, id)
redis.call('XTRIM', KEYS[1], 'MINID', tostring(ms - tonumber(ARGV[2])))
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
if first then
  local first_ms = tonumber(string.match(first[1], '^(%d+)'))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. first_ms)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return id
";

/// One `XRANGE` entry: its id and fields.
type StreamEntry = (String, HashMap<String, Vec<u8>>);

/// Why the inbox store failed.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// Redis did not answer or refused.
    #[error("inbox store in Redis failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stored entry is not an envelope this node reads.
    #[error("inbox entry is unreadable: {0}")]
    Entry(String),
}

/// The inbox store.
pub enum InboxStore {
    /// In memory, for a node that runs alone.
    Memory(MemoryInbox),
    /// In Redis, shared by the cluster.
    Redis(RedisInbox),
}

impl InboxStore {
    /// Store messages for `(user, destination)`, in order; returns their ids, in order.
    pub async fn append(
        &self,
        items: &[(String, String, Message)],
    ) -> Result<Vec<String>, InboxError> {
        match self {
            InboxStore::Memory(m) => Ok(items
                .iter()
                .map(|(u, d, msg)| m.append(u, d, msg))
                .collect()),
            InboxStore::Redis(r) => r.append(items).await,
        }
    }

    /// The unsettled messages of `(user, destination)`, oldest first (ids as message ids).
    pub async fn unsettled(
        &self,
        user: &str,
        destination: &str,
    ) -> Result<Vec<Message>, InboxError> {
        match self {
            InboxStore::Memory(m) => Ok(m.unsettled(user, destination)),
            InboxStore::Redis(r) => r.unsettled(user, destination).await,
        }
    }

    /// Mark messages settled (delivered to an auto-ack subscription, or ACKed).
    pub async fn settle(&self, items: &[(String, String, String)]) -> Result<(), InboxError> {
        match self {
            InboxStore::Memory(m) => {
                for (user, destination, id) in items {
                    m.settle(user, destination, id);
                }
                Ok(())
            }
            InboxStore::Redis(r) => r.settle(items).await,
        }
    }
}

/// A stream id (`<ms>-<seq>`) as numbers, to compare; None for any other message id (a
/// message the store could not keep carries the broker's id, which is not one).
pub fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// One stored message in memory.
#[derive(Debug)]
struct Entry {
    /// Its id.
    id: String,
    /// The message (id included).
    message: Message,
    /// When it was stored, in ms since the epoch.
    at_ms: u64,
    /// Whether it was settled.
    settled: bool,
}

/// The in-memory store: the same semantics as the Redis one, lost on restart.
#[derive(Debug)]
pub struct MemoryInbox {
    /// Inboxes by (user, destination), oldest entry first.
    inboxes: Mutex<HashMap<(String, String), VecDeque<Entry>>>,
    /// The last id given: (ms, seq).
    last: Mutex<(u64, u64)>,
    /// `max_messages`.
    max_messages: usize,
    /// `ttl_s` in ms.
    ttl_ms: u64,
}

impl MemoryInbox {
    /// An empty store with these bounds.
    pub fn new(max_messages: usize, ttl: Duration) -> MemoryInbox {
        MemoryInbox {
            inboxes: Mutex::new(HashMap::new()),
            last: Mutex::new((0, 0)),
            max_messages,
            ttl_ms: ttl.as_millis() as u64,
        }
    }

    fn next_id(&self) -> (String, u64) {
        let now = now_ms();
        let mut last = lock(&self.last);
        *last = if now > last.0 {
            (now, 0)
        } else {
            (last.0, last.1 + 1)
        };
        (format!("{}-{}", last.0, last.1), last.0)
    }

    fn append(&self, user: &str, destination: &str, message: &Message) -> String {
        let (id, at_ms) = self.next_id();
        let mut inboxes = lock(&self.inboxes);
        self.expire(&mut inboxes, at_ms);
        let inbox = inboxes
            .entry((user.to_owned(), destination.to_owned()))
            .or_default();
        inbox.push_back(Entry {
            id: id.clone(),
            message: Message {
                id: id.clone(),
                ..message.clone()
            },
            at_ms,
            settled: false,
        });
        while inbox.len() > self.max_messages {
            inbox.pop_front();
        }
        id
    }

    /// Drop messages past their TTL, and inboxes left empty.
    fn expire(&self, inboxes: &mut HashMap<(String, String), VecDeque<Entry>>, now: u64) {
        let oldest = now.saturating_sub(self.ttl_ms);
        inboxes.retain(|_, inbox| {
            while inbox.front().is_some_and(|e| e.at_ms < oldest) {
                inbox.pop_front();
            }
            !inbox.is_empty()
        });
    }

    fn unsettled(&self, user: &str, destination: &str) -> Vec<Message> {
        let mut inboxes = lock(&self.inboxes);
        self.expire(&mut inboxes, now_ms());
        inboxes
            .get(&(user.to_owned(), destination.to_owned()))
            .map(|inbox| {
                inbox
                    .iter()
                    .filter(|e| !e.settled)
                    .map(|e| e.message.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn settle(&self, user: &str, destination: &str, id: &str) {
        let mut inboxes = lock(&self.inboxes);
        if let Some(inbox) = inboxes.get_mut(&(user.to_owned(), destination.to_owned()))
            && let Some(entry) = inbox.iter_mut().find(|e| e.id == id)
        {
            entry.settled = true;
        }
    }
}

/// The Redis store.
pub struct RedisInbox {
    /// The command connection.
    redis: ConnectionManager,
    /// Key prefix (`{channel_prefix}inbox:`).
    prefix: String,
    /// `max_messages`.
    max_messages: usize,
    /// `ttl_s` in ms.
    ttl_ms: u64,
    /// Bound on stored envelopes.
    max_envelope: usize,
    /// The append script.
    script: Script,
}

impl RedisInbox {
    /// A store on `redis` under `prefix`.
    pub fn new(
        redis: ConnectionManager,
        prefix: String,
        max_messages: usize,
        ttl: Duration,
        max_envelope: usize,
    ) -> RedisInbox {
        RedisInbox {
            redis,
            prefix,
            max_messages,
            ttl_ms: ttl.as_millis().max(1) as u64,
            max_envelope,
            script: Script::new(APPEND),
        }
    }

    fn stream_key(&self, user: &str, destination: &str) -> String {
        format!("{}{user}:{destination}", self.prefix)
    }

    async fn append(&self, items: &[(String, String, Message)]) -> Result<Vec<String>, InboxError> {
        let mut pipe = redis::pipe();
        pipe.load_script(&self.script).ignore();
        for (user, destination, message) in items {
            let envelope = Envelope {
                node: String::new(),
                route: Route::User {
                    user: user.clone(),
                    destination: destination.clone(),
                },
                message: message.clone(),
            };
            let bytes = envelope
                .encode(self.max_envelope)
                .map_err(|e| InboxError::Entry(e.to_string()))?;
            let stream = self.stream_key(user, destination);
            pipe.invoke_script(
                self.script
                    .key(&stream)
                    .key(format!("{stream}:unsettled"))
                    .arg(self.max_messages)
                    .arg(self.ttl_ms)
                    .arg(&bytes[..]),
            );
        }
        let mut redis = self.redis.clone();
        Ok(pipe.query_async(&mut redis).await?)
    }

    async fn unsettled(&self, user: &str, destination: &str) -> Result<Vec<Message>, InboxError> {
        let stream = self.stream_key(user, destination);
        let mut redis = self.redis.clone();
        let (entries, open): (Vec<StreamEntry>, Vec<String>) = redis::pipe()
            .cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .cmd("ZRANGE")
            .arg(format!("{stream}:unsettled"))
            .arg(0)
            .arg(-1)
            .query_async(&mut redis)
            .await?;
        let open: std::collections::HashSet<String> = open.into_iter().collect();
        let mut out = Vec::new();
        for (id, fields) in entries {
            if !open.contains(&id) {
                continue;
            }
            let Some(raw) = fields.get("m") else { continue };
            let envelope = Envelope::decode(Bytes::copy_from_slice(raw), self.max_envelope)
                .map_err(|e| InboxError::Entry(e.to_string()))?;
            out.push(Message {
                id,
                ..envelope.message
            });
        }
        Ok(out)
    }

    async fn settle(&self, items: &[(String, String, String)]) -> Result<(), InboxError> {
        let mut pipe = redis::pipe();
        for (user, destination, id) in items {
            pipe.cmd("ZREM")
                .arg(format!("{}:unsettled", self.stream_key(user, destination)))
                .arg(id)
                .ignore();
        }
        let mut redis = self.redis.clone();
        Ok(pipe.query_async(&mut redis).await?)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &'static str) -> Message {
        Message {
            id: String::new(),
            headers: vec![],
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[tokio::test]
    async fn memory_inbox_keeps_unsettled_messages_in_order_within_bounds() {
        let store = InboxStore::Memory(MemoryInbox::new(3, Duration::from_secs(60)));
        let items: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|b| ("alice".to_string(), "/queue/n".to_string(), msg(b)))
            .collect();
        let ids = store.append(&items).await.unwrap();
        assert!(ids.windows(2).all(|w| stream_id(&w[0]) < stream_id(&w[1])));
        let open = store.unsettled("alice", "/queue/n").await.unwrap();
        let bodies: Vec<&[u8]> = open.iter().map(|m| &m.body[..]).collect();
        assert_eq!(bodies, [b"b", b"c", b"d"]);
        assert_eq!(open[0].id, ids[1]);
        store
            .settle(&[("alice".into(), "/queue/n".into(), ids[2].clone())])
            .await
            .unwrap();
        let open = store.unsettled("alice", "/queue/n").await.unwrap();
        assert_eq!(open.len(), 2);
        assert!(store.unsettled("bob", "/queue/n").await.unwrap().is_empty());
    }

    #[test]
    fn ids_compare_numerically() {
        assert!(stream_id("9-0") < stream_id("10-0"));
        assert!(stream_id("10-9") < stream_id("10-10"));
        assert_eq!(stream_id("nab12cd-000000000000002a"), None);
        assert_eq!(stream_id("17"), None);
    }
}
