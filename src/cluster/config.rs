//! The `[cluster]` section: which Redis joins the nodes, how this node is named, and the
//! bounds of every queue between the gateway and Redis; `[cluster.inbox]` names the user
//! destinations whose messages are kept until their user reads them.
//!
//! ```toml
//! [cluster]
//! redis = "redis://127.0.0.1:6379/0"
//! node_id = "gw-1"                   # default: hostname + random suffix
//! channel_prefix = "sockjs-gateway:"
//!
//! [cluster.inbox]
//! destinations = ["/user/queue/notify"]
//! max_messages = 1000
//! ttl_s = 86400
//! ```
//!
//! Without `redis` the node runs alone: `[cluster.inbox]` then keeps the inbox in memory
//! (lost on restart), so the embedded default needs no external service.

use serde::{Deserialize, Serialize, Serializer};

/// Why a `[cluster]` section cannot be used; names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`cluster.{key}`: {message}")]
pub struct ClusterConfigError {
    /// The offending key below `cluster.`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// The `[cluster]` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The Redis that joins the nodes (`redis://[user:password@]host:port/db`); None: this
    /// node runs alone (and an inbox, if configured, lives in memory).
    #[serde(
        serialize_with = "write_redis_url",
        skip_serializing_if = "Option::is_none"
    )]
    pub redis: Option<String>,
    /// This node's name in envelopes, presence and logs; None: hostname + random suffix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Prepended to every Redis channel and key, so several deployments share one Redis.
    pub channel_prefix: String,
    /// Messages waiting to be published to Redis; beyond it new ones are not bridged
    /// (counted as `outbound_dropped`), so a slow Redis never blocks a session.
    pub outbound_queue: usize,
    /// Messages received from Redis waiting to be delivered locally; when full the reader
    /// stops reading and Redis buffers (up to its pub/sub output-buffer limit).
    pub inbound_queue: usize,
    /// The largest envelope (headers + body + routing) sent to or accepted from Redis;
    /// larger messages stay local (counted as `oversized`).
    pub max_envelope_bytes: usize,
    /// Channels or patterns per SUBSCRIBE/UNSUBSCRIBE command (resubscribing after a
    /// reconnect sends a few large commands, not thousands of small ones).
    pub subscribe_batch: usize,
    /// How long a presence entry lives without a heartbeat, in seconds (a dead node's
    /// entries are gone after this).
    pub presence_ttl_s: u64,
    /// How often a node refreshes its presence entries, in seconds (less than the TTL).
    pub presence_heartbeat_s: u64,
    /// With `queue_semantics = "competing"`, how long a message of a shared `/queue` may
    /// stay unsettled at one node before another node takes it over (a dead node's
    /// unacknowledged messages are redelivered after this), in milliseconds.
    pub queue_reclaim_ms: u64,
    /// The durable per-user inbox; None: no inbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbox: Option<InboxConfig>,
}

/// Writes a Redis URL with its credentials (`redis://user:password@host`) redacted, so that
/// printing a configuration never discloses them.
fn write_redis_url<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    let Some(url) = url else {
        return s.serialize_none();
    };
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => {
            s.serialize_str(&format!("{scheme}://<redacted>@{host}"))
        }
        _ => s.serialize_str(url),
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: None,
            node_id: None,
            channel_prefix: "sockjs-gateway:".into(),
            outbound_queue: 10_000,
            inbound_queue: 10_000,
            max_envelope_bytes: 1024 * 1024,
            subscribe_batch: 512,
            presence_ttl_s: 30,
            presence_heartbeat_s: 10,
            queue_reclaim_ms: 30_000,
            inbox: None,
        }
    }
}

/// The `[cluster.inbox]` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct InboxConfig {
    /// User destinations whose messages are stored, as a client subscribes them
    /// (`/user/queue/notify`); matched exactly.
    pub destinations: Vec<String>,
    /// Messages kept per user and destination; the oldest go first.
    pub max_messages: usize,
    /// How long a message is kept, in seconds; an inbox nobody writes to for this long is
    /// removed.
    pub ttl_s: u64,
    /// Messages waiting to be stored; beyond it a message to an inbox destination is
    /// delivered to the sessions online now without being stored (counted as `unstored`
    /// and logged).
    pub queue: usize,
}

impl Default for InboxConfig {
    fn default() -> Self {
        InboxConfig {
            destinations: Vec::new(),
            max_messages: 1000,
            ttl_s: 86_400,
            queue: 10_000,
        }
    }
}

impl ClusterConfig {
    /// Check what serde cannot. `user_prefix` is the STOMP user prefix (`/user/`), which
    /// inbox destinations must start with.
    pub fn validate(&self, user_prefix: &str) -> Result<(), ClusterConfigError> {
        let invalid = |key: &str, message: String| ClusterConfigError {
            key: key.into(),
            message,
        };
        if let Some(url) = &self.redis {
            if !(url.starts_with("redis://") || url.starts_with("redis+unix://")) {
                return Err(invalid(
                    "redis",
                    format!(
                        "{url:?} must be a redis:// URL (rediss:// is not supported: put a TLS \
                         tunnel on loopback in front of Redis)"
                    ),
                ));
            }
            if url.starts_with("redis+unix://") {
                return Err(invalid(
                    "redis",
                    "unix sockets are not supported; use redis://host:port/db".into(),
                ));
            }
            redis::Client::open(url.as_str())
                .map_err(|e| invalid("redis", format!("{url:?} is not a usable URL: {e}")))?;
        }
        if let Some(node) = &self.node_id
            && (node.is_empty()
                || node.len() > 64
                || !node
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
        {
            return Err(invalid(
                "node_id",
                format!("{node:?} must be 1 to 64 characters of [A-Za-z0-9._-]"),
            ));
        }
        if self.channel_prefix.contains(['*', '?', '[', ']', '\\']) {
            return Err(invalid(
                "channel_prefix",
                "must not contain Redis glob characters (* ? [ ] \\)".into(),
            ));
        }
        for (key, value) in [
            ("outbound_queue", self.outbound_queue),
            ("inbound_queue", self.inbound_queue),
            ("subscribe_batch", self.subscribe_batch),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0".into()));
            }
        }
        if self.max_envelope_bytes < 1024 {
            return Err(invalid(
                "max_envelope_bytes",
                "must be at least 1024".into(),
            ));
        }
        if self.presence_ttl_s == 0 || self.presence_heartbeat_s == 0 {
            return Err(invalid(
                "presence_ttl_s",
                "presence_ttl_s and presence_heartbeat_s must be greater than 0".into(),
            ));
        }
        if self.presence_heartbeat_s >= self.presence_ttl_s {
            return Err(invalid(
                "presence_heartbeat_s",
                format!(
                    "must be less than presence_ttl_s ({}), or live entries would expire",
                    self.presence_ttl_s
                ),
            ));
        }
        if !(100..=86_400_000).contains(&self.queue_reclaim_ms) {
            return Err(invalid(
                "queue_reclaim_ms",
                format!(
                    "{} is not in 100..=86400000 (a tenth of a second to a day)",
                    self.queue_reclaim_ms
                ),
            ));
        }
        if let Some(inbox) = &self.inbox {
            inbox.validate(user_prefix)?;
        }
        Ok(())
    }

    /// This node's id: the configured one, or hostname + a random suffix.
    pub fn resolved_node_id(&self) -> String {
        match &self.node_id {
            Some(id) => id.clone(),
            None => {
                let host = hostname().unwrap_or_else(|| "gw".into());
                format!("{host}-{:08x}", rand::random::<u32>())
            }
        }
    }
}

impl InboxConfig {
    fn validate(&self, user_prefix: &str) -> Result<(), ClusterConfigError> {
        let invalid = |key: &str, message: String| ClusterConfigError {
            key: format!("inbox.{key}"),
            message,
        };
        if self.destinations.is_empty() {
            return Err(invalid(
                "destinations",
                "name at least one user destination, e.g. [\"/user/queue/notify\"]".into(),
            ));
        }
        for d in &self.destinations {
            let Some(rest) = d.strip_prefix(user_prefix) else {
                return Err(invalid(
                    "destinations",
                    format!("{d:?} must start with the user prefix {user_prefix:?}"),
                ));
            };
            if rest.is_empty() || rest.contains(['*', '{']) {
                return Err(invalid(
                    "destinations",
                    format!("{d:?} must name one destination (no patterns)"),
                ));
            }
        }
        for (key, value) in [
            ("max_messages", self.max_messages),
            ("queue", self.queue),
            ("ttl_s", self.ttl_s as usize),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0".into()));
            }
        }
        Ok(())
    }
}

/// The machine's host name, from the kernel (Linux) or the environment.
fn hostname() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(48)
        .collect();
    (!clean.is_empty()).then_some(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ClusterConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_run_alone() {
        let c = ClusterConfig::default();
        assert!(c.redis.is_none());
        assert_eq!(c.channel_prefix, "sockjs-gateway:");
        assert!(c.validate("/user/").is_ok());
    }

    #[test]
    fn node_id_defaults_to_host_and_suffix() {
        let a = ClusterConfig::default().resolved_node_id();
        let b = ClusterConfig::default().resolved_node_id();
        assert_ne!(a, b);
        assert!(a.len() > 7);
    }

    #[test]
    fn bad_values_name_their_key() {
        let c = parse("redis = \"http://x\"");
        assert_eq!(c.validate("/user/").unwrap_err().key, "redis");
        let c = parse("node_id = \"a b\"");
        assert_eq!(c.validate("/user/").unwrap_err().key, "node_id");
        for bad in ["queue_reclaim_ms = 99", "queue_reclaim_ms = 86400001"] {
            let err = parse(bad).validate("/user/").unwrap_err();
            assert_eq!(err.key, "queue_reclaim_ms", "{bad}");
            assert!(err.message.contains("100..=86400000"), "{}", err.message);
        }
        let c = parse("presence_ttl_s = 5\npresence_heartbeat_s = 5");
        assert_eq!(
            c.validate("/user/").unwrap_err().key,
            "presence_heartbeat_s"
        );
        let c = parse("[inbox]\ndestinations = [\"/queue/x\"]");
        assert_eq!(c.validate("/user/").unwrap_err().key, "inbox.destinations");
        let c = parse("[inbox]\ndestinations = [\"/user/queue/x\"]\nmax_messages = 0");
        assert_eq!(c.validate("/user/").unwrap_err().key, "inbox.max_messages");
        assert!(toml::from_str::<ClusterConfig>("redis_url = \"x\"").is_err());
    }

    #[test]
    fn inbox_alone_is_valid_without_redis() {
        let c = parse("[inbox]\ndestinations = [\"/user/queue/notify\"]\nttl_s = 60");
        assert!(c.validate("/user/").is_ok());
        assert_eq!(c.inbox.unwrap().max_messages, 1000);
    }
}
