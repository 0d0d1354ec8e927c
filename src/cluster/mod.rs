//! Several gateway nodes on one Redis: the engine that carries broker traffic between them.
//!
//! The engine knows destinations, users and messages, never sessions or STOMP: the broker
//! tells it what local subscribers want ([`ClusterHandle::interest_added`],
//! [`ClusterHandle::pattern_interest_added`], [`ClusterHandle::user_interest_added`]) and what
//! was published ([`ClusterHandle::publish`], [`ClusterHandle::publish_to_user`]), and it
//! hands back what other nodes published as a stream of [`Inbound`] messages, which enter the
//! local broker through its ordinary delivery calls. Data flows one way on each side:
//!
//! ```text
//!  broker ── interest ──▶ InterestTable ──▶ subscriber task ── SUBSCRIBE/PSUBSCRIBE ──▶ Redis
//!  broker ── publish ───▶ bounded queue ──▶ publisher task ─── pipelined PUBLISH ─────▶ Redis
//!  broker ◀── Inbound ─── bounded queue ◀── subscriber task ◀── message/pmessage ─────── Redis
//! ```
//!
//! Cross-node traffic follows interest: a node SUBSCRIBEs to `channel_prefix + destination`
//! only while a local subscriber wants it (patterns through [`glob`]), and to
//! `channel_prefix + "user:" + name` while the user has a session on it. A message is encoded
//! once on the publishing node ([`envelope`]), decoded once per receiving node, and skipped
//! by the node that published it (its own local subscribers were served by its broker).
//!
//! Presence ([`presence`]) and the durable inbox ([`inbox`]) use the same Redis through the
//! command connection.

pub mod config;
pub mod envelope;
pub mod glob;
pub mod inbox;
pub mod interest;
pub mod presence;
pub mod publisher;
pub mod queues;
pub mod resp;
pub mod stats;
pub mod subscriber;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use tokio::sync::{mpsc, watch};

pub use config::{ClusterConfig, ClusterConfigError, InboxConfig};
pub use envelope::{Message, Route};
pub use stats::ClusterStats;

use envelope::Envelope;
use glob::Interest;
use interest::InterestTable;
use publisher::{Outgoing, Publisher};
use stats::bump;
use subscriber::{Endpoint, Subscriber};

/// A message from another node, for the local broker to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Where it goes.
    pub route: Route,
    /// The message.
    pub message: Message,
}

/// Why the engine cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `[cluster] redis` is not set: there is nothing to join.
    #[error("`cluster.redis` is not set")]
    NoRedis,
    /// The Redis URL is unusable.
    #[error("`cluster.redis`: {0}")]
    Url(String),
}

/// Why a message was not handed to Redis; it was still delivered locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The outbound queue is full (Redis slow or down); counted as `outbound_dropped`.
    #[error("the queue to Redis is full")]
    Full,
    /// Larger than `max_envelope_bytes`; counted as `oversized`.
    #[error("the message is larger than max_envelope_bytes")]
    TooLarge,
}

/// Redis names of this deployment and this node.
#[derive(Debug)]
pub struct Naming {
    /// This node's id, carried in every envelope.
    pub node: String,
    /// `channel_prefix`.
    pub prefix: String,
}

impl Naming {
    /// The full name of a channel (or glob) given without the prefix.
    pub fn channel(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A user's channel, without the prefix.
    fn user_interest(user: &str) -> Interest {
        Interest::Channel(format!("user:{user}"))
    }

    /// A Redis key of this deployment.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Whether an envelope arrived on the channel its route names: destinations on their own
    /// channel or through a glob, users only on their user channel.
    fn routes_match(&self, channel: &[u8], route: &Route, via_glob: bool) -> bool {
        let Some(name) = channel.strip_prefix(self.prefix.as_bytes()) else {
            return false;
        };
        match route {
            Route::Destination(d) => via_glob || name == d.as_bytes(),
            Route::User { user, .. } => {
                !via_glob && name.strip_prefix(b"user:") == Some(user.as_bytes())
            }
        }
    }
}

/// The running engine, shared by the broker adapter, presence and the inbox.
#[derive(Clone)]
pub struct ClusterHandle {
    /// State shared by every clone.
    shared: Arc<Shared>,
}

struct Shared {
    /// Channel names and node id.
    naming: Arc<Naming>,
    /// Desired subscriptions.
    interests: Arc<InterestTable>,
    /// The bounded queue to the publisher task.
    outbound: mpsc::Sender<Outgoing>,
    /// Counters.
    stats: Arc<ClusterStats>,
    /// Bound on envelopes.
    max_envelope: usize,
    /// The multiplexed command connection (presence and inbox use it too).
    redis: ConnectionManager,
    /// The channels Redis has confirmed on the live pub/sub connection (full names).
    live: Arc<LiveChannels>,
    /// For connections of their own (blocking reads of shared queues).
    client: redis::Client,
}

/// The channels Redis confirmed on the current pub/sub connection: what this node is sure
/// to receive from now on. Emptied when the connection is lost.
pub type LiveChannels = watch::Sender<HashSet<Bytes>>;

/// Starts the engine.
pub struct ClusterEngine;

impl ClusterEngine {
    /// Start the subscriber and publisher tasks for `config` (must run inside a tokio
    /// runtime). Returns at once, also while Redis is down: both connections keep trying
    /// by themselves. The receiver yields what other nodes publish; dropping it stops the
    /// engine's tasks.
    pub fn start(
        config: &ClusterConfig,
    ) -> Result<(ClusterHandle, mpsc::Receiver<Inbound>), ClusterError> {
        let url = config.redis.as_deref().ok_or(ClusterError::NoRedis)?;
        let client = redis::Client::open(url).map_err(|e| ClusterError::Url(e.to_string()))?;
        let info = client.get_connection_info();
        let addr = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
            other => {
                return Err(ClusterError::Url(format!(
                    "{other} is not a plain TCP address"
                )));
            }
        };
        let endpoint = Endpoint {
            addr,
            username: info.redis_settings().username().map(str::to_owned),
            password: info.redis_settings().password().map(str::to_owned),
        };
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(3)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let redis = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .map_err(|e| ClusterError::Url(e.to_string()))?;
        let naming = Arc::new(Naming {
            node: config.resolved_node_id(),
            prefix: config.channel_prefix.clone(),
        });
        let stats = Arc::new(ClusterStats::default());
        let interests = Arc::new(InterestTable::default());
        let live = Arc::new(watch::Sender::new(HashSet::new()));
        let (outbound, queue) = mpsc::channel(config.outbound_queue);
        let (inbound, received) = mpsc::channel(config.inbound_queue);
        tokio::spawn(
            Subscriber {
                endpoint,
                naming: naming.clone(),
                interests: interests.clone(),
                live: live.clone(),
                inbound,
                stats: stats.clone(),
                max_envelope: config.max_envelope_bytes,
                batch: config.subscribe_batch,
            }
            .run(),
        );
        tokio::spawn(
            Publisher {
                queue,
                redis: redis.clone(),
                stats: stats.clone(),
                node: naming.node.clone(),
            }
            .run(),
        );
        tracing::info!(node = %naming.node, prefix = %naming.prefix, "cluster engine started");
        let shared = Shared {
            naming,
            interests,
            outbound,
            stats,
            max_envelope: config.max_envelope_bytes,
            redis,
            live,
            client,
        };
        Ok((
            ClusterHandle {
                shared: Arc::new(shared),
            },
            received,
        ))
    }
}

impl ClusterHandle {
    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared.naming.node
    }

    /// Channel names and keys of this deployment.
    pub fn naming(&self) -> &Naming {
        &self.shared.naming
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<ClusterStats> {
        &self.shared.stats
    }

    /// The multiplexed command connection, for presence and the inbox.
    pub fn redis(&self) -> ConnectionManager {
        self.shared.redis.clone()
    }

    /// A connection of its own, for commands that block (`XREADGROUP ... BLOCK`), which
    /// would hold up everything else on the multiplexed one; `block` is the longest they
    /// block.
    pub async fn dedicated(&self, block: Duration) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(block + Duration::from_secs(3)));
        self.shared
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// A local subscriber wants the literal `destination`.
    pub fn interest_added(&self, destination: &str) {
        self.shared
            .interests
            .add(Interest::Channel(destination.to_owned()));
    }

    /// A local subscriber of the literal `destination` left.
    pub fn interest_removed(&self, destination: &str) {
        self.shared
            .interests
            .remove(&Interest::Channel(destination.to_owned()));
    }

    /// A local subscriber wants the Ant `pattern` (see [`glob`] for what Redis is asked).
    pub fn pattern_interest_added(&self, pattern: &str, separator: char) {
        for interest in glob::interests(pattern, separator).0 {
            self.shared.interests.add(interest);
        }
    }

    /// A local subscriber of the Ant `pattern` left.
    pub fn pattern_interest_removed(&self, pattern: &str, separator: char) {
        for interest in glob::interests(pattern, separator).0 {
            self.shared.interests.remove(&interest);
        }
    }

    /// A session of `user` opened on this node.
    pub fn user_interest_added(&self, user: &str) {
        self.shared.interests.add(Naming::user_interest(user));
    }

    /// Wait until Redis has confirmed this node's subscription to `user`'s channel, so that
    /// everything published to the user from then on reaches this node; at most `limit`
    /// (Redis may be down). Returns whether it was confirmed.
    pub async fn user_channel_live(&self, user: &str, limit: Duration) -> bool {
        let name = Bytes::from(self.shared.naming.channel(&format!("user:{user}")));
        let mut live = self.shared.live.subscribe();
        matches!(
            tokio::time::timeout(limit, live.wait_for(|set| set.contains(&name))).await,
            Ok(Ok(_))
        )
    }

    /// A session of `user` on this node ended.
    pub fn user_interest_removed(&self, user: &str) {
        self.shared.interests.remove(&Naming::user_interest(user));
    }

    /// Bridge a message published locally to `destination` (a literal starting with `/`).
    /// Never waits.
    pub fn publish(&self, destination: &str, message: Message) -> Result<(), PublishError> {
        let channel = self.shared.naming.channel(destination);
        self.send(channel, Route::Destination(destination.to_owned()), message)
    }

    /// Bridge a message for every session of `user` at `destination` (`/queue/x`). Never
    /// waits.
    pub fn publish_to_user(
        &self,
        user: &str,
        destination: &str,
        message: Message,
    ) -> Result<(), PublishError> {
        let channel = self.shared.naming.channel(&format!("user:{user}"));
        let route = Route::User {
            user: user.to_owned(),
            destination: destination.to_owned(),
        };
        self.send(channel, route, message)
    }

    fn send(&self, channel: String, route: Route, message: Message) -> Result<(), PublishError> {
        let envelope = Envelope {
            node: self.shared.naming.node.clone(),
            route,
            message,
        };
        let payload = match envelope.encode(self.shared.max_envelope) {
            Ok(payload) => payload,
            Err(e) => {
                bump(&self.shared.stats.oversized);
                tracing::debug!(node = %self.shared.naming.node, error = %e, "message kept local");
                return Err(PublishError::TooLarge);
            }
        };
        self.shared
            .outbound
            .try_send(Outgoing { channel, payload })
            .map_err(|_| {
                bump(&self.shared.stats.outbound_dropped);
                PublishError::Full
            })
    }
}
