//! The embedded broker: subscriptions, fan-out, competing queues, acks and the user registry.
//!
//! The broker's state (sessions, subscriptions, queues, acks) sits behind one
//! `std::sync::Mutex`, but a publish holds it only to look its receivers up: the auto-ack
//! subscribers of a literal destination are kept as a copy-on-write snapshot
//! (`Arc<[Arc<Receiver>]>`, rebuilt on the first publish after a subscription change), and
//! the fan-out to them (encoding each MESSAGE head, queueing it on each carrier) runs after
//! the lock is released. Deliveries that change broker state (client acks, prefetch windows,
//! competing queues) and pattern subscriptions are still made under the lock. So a publish
//! to 10,000 subscribers of `/topic/a` does not make a SUBSCRIBE, ACK or SEND on `/topic/b`
//! wait for it.
//!
//! Order per destination is kept: each literal destination has its own order lock, taken
//! by a fan-out outside the broker lock (never while holding it), so every subscriber sees
//! concurrent publishes to one destination in one order. An UNSUBSCRIBE marks its receiver
//! dead and then waits for the destination's order lock, so once it returns no MESSAGE is
//! sent for that subscription (it waits at most for one fan-out already under way). Every
//! operation is synchronous (it appends to bounded carrier queues and never waits for a
//! client), so no lock is held across an `.await`, and a slow client cannot stall a
//! publisher: its carrier either buffers within its limit or closes it.
//!
//! # Encode once per destination
//!
//! A published message becomes a [`Published`]: its user headers and body never change between
//! subscribers, so their encoded form (the *tail*: escaped user headers, `content-length`,
//! blank line, body, NUL) is built once per negotiated version and cached in the message. Only
//! the *head* differs per delivery: `MESSAGE`, `destination` (rewritten for user
//! destinations), `message-id`, `subscription`, `ack` and `redelivered`. A delivery is one
//! allocation of `head.len() + tail.len()` and a `memcpy` of the shared tail: no header is
//! escaped and no body is re-encoded per subscriber, and nothing in the tail has to be patched
//! (no placeholders), because every per-delivery header precedes every shared one.
//!
//! # Client acks
//!
//! A delivery in a client ack mode is remembered until it is ACKed or NACKed, under its
//! `ack` number, in its subscription's ordered map and in the session's index (number →
//! subscription, and message-id → numbers for 1.0/1.1 sessions), so an ACK, a bogus one
//! included, costs a lookup and never a scan. Every client-ack subscription honours its
//! `prefetch-count` window (spec §5.3): a competing queue keeps its messages until some
//! subscriber has room; a broadcast message for a subscription whose window is full waits in
//! that subscription, in order, and is sent as ACKs open the window. What a connection holds
//! this way (awaiting ACK or waiting) is bounded by `max_pending_acks` deliveries and
//! `max_pending_ack_bytes`, and by `max_total_pending_ack_bytes` over all connections; past a
//! bound a broadcast message is dropped and counted (`dropped_overflow`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;

use super::config::{QueueSemantics, StompConfig};
use super::destination::{
    Pattern, PatternError, PatternLimits, is_pattern, session_target, user_suffix,
};
use super::engine::{BrokerEngine, Refusal, UserDelivery};
use super::frame::Version;
pub use super::message::{AckMode, Published, SubscribeRequest};
use super::message::{DeliveryHead, Redelivered};
use super::outbound::{Discard, Outbound};
use super::pattern_index::PatternIndex;
use super::selector::Selector;
use super::stats::{StompStats, bump};

/// ACK or NACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// The client consumed the message(s).
    Ack,
    /// The client rejected the message(s).
    Nack,
}

/// How an ACK or NACK names its delivery (spec §5.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckTarget {
    /// 1.2: the MESSAGE's `ack` header.
    Token(String),
    /// 1.0 and 1.1: `message-id`, with `subscription` (required in 1.1, optional in 1.0).
    MessageId {
        /// The MESSAGE's `message-id`.
        message_id: String,
        /// The subscription, when named.
        subscription: Option<String>,
    },
}

/// Whether an ACK or NACK found what it named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// Applied.
    Applied,
    /// Nothing outstanding matched; ignored and counted.
    Unknown,
}

/// One delivery awaiting ACK or NACK.
#[derive(Debug)]
struct Delivery {
    /// Its number, sent as the `ack` header.
    token: u64,
    /// The message.
    message: Arc<Published>,
    /// The competing queue it came from, if any (NACK and release requeue it there).
    queue: Option<String>,
}

/// A subscription as the broker keeps it.
#[derive(Debug)]
struct Subscription {
    /// What the connection asked for.
    request: SubscribeRequest,
    /// The compiled pattern, for pattern subscriptions.
    pattern: Option<Pattern>,
    /// Its place in its destination's (or the patterns') subscription order.
    position: u64,
    /// Whether the destination's (or the patterns') index holds it: not when an engine
    /// serves it alone ([`BrokerEngine::serves_alone`]).
    indexed: bool,
    /// How a fan-out outside the lock reaches it: auto-ack literal subscriptions only.
    receiver: Option<Arc<Receiver>>,
    /// Deliveries awaiting ACK/NACK by number, oldest first (cumulative ACKs drain a prefix).
    unacked: BTreeMap<u64, Delivery>,
    /// Broadcast messages waiting for its prefetch window (or the connection's budget) to
    /// open, oldest first.
    waiting: VecDeque<Arc<Published>>,
}

/// A connected session as the broker keeps it.
#[derive(Debug)]
struct SessionEntry {
    /// Its outbound side.
    out: Arc<Outbound>,
    /// Its principal.
    user: Option<String>,
    /// Its subscriptions by id.
    subs: HashMap<String, Subscription>,
    /// The next `ack` token number.
    next_ack: u64,
    /// Deliveries awaiting ACK over all subscriptions.
    pending_acks: usize,
    /// Messages waiting for a prefetch window over all subscriptions.
    waiting: usize,
    /// Bytes of those deliveries and waiting messages.
    pending_bytes: usize,
    /// Delivery number → the subscription it was sent for.
    ack_index: HashMap<u64, Arc<str>>,
    /// Message-id → delivery numbers, for sessions that ACK by message-id (1.0 and 1.1).
    message_index: Option<HashMap<String, Vec<u64>>>,
}

/// An auto-ack subscription to a literal destination, as a fan-out outside the broker's
/// lock sees it.
#[derive(Debug)]
struct Receiver {
    /// The session's outbound side.
    out: Arc<Outbound>,
    /// The subscription id.
    id: Arc<str>,
    /// The destination its MESSAGEs show, when not the published one.
    shown: Option<Arc<str>>,
    /// Only messages whose headers it selects are delivered.
    selector: Option<Arc<Selector>>,
    /// False once unsubscribed (or the session is gone): a fan-out that took its snapshot
    /// before then skips it.
    live: AtomicBool,
}

/// One subscription in a destination's order.
#[derive(Debug)]
struct Member {
    /// The subscription.
    key: SubKey,
    /// Its receiver, when it is delivered outside the lock.
    receiver: Option<Arc<Receiver>>,
}

/// The subscriptions of one literal destination.
#[derive(Debug, Default)]
struct Topic {
    /// Every subscription by position, in subscription order (removal is a lookup, so a mass
    /// disconnect of one hot destination is not quadratic).
    members: BTreeMap<u64, Member>,
    /// How many of them are delivered under the lock (client-ack subscriptions).
    tracked: usize,
    /// The receivers, built on the first publish after a change; None: stale.
    snapshot: Option<Arc<[Arc<Receiver>]>>,
    /// Taken by every fan-out to this destination, so subscribers see one order.
    order: Arc<Mutex<()>>,
}

impl Topic {
    /// The receivers of a fan-out outside the lock.
    fn receivers(&mut self) -> Arc<[Arc<Receiver>]> {
        let members = &self.members;
        self.snapshot
            .get_or_insert_with(|| {
                members
                    .values()
                    .filter_map(|m| m.receiver.clone())
                    .collect()
            })
            .clone()
    }
}

/// What a publish still has to deliver once the broker's lock is released.
#[must_use]
struct Fanout {
    /// Deliveries already made under the lock.
    delivered: usize,
    /// The auto-ack subscribers to deliver to outside the lock.
    batch: Option<Batch>,
}

impl Fanout {
    fn done(delivered: usize) -> Fanout {
        Fanout {
            delivered,
            batch: None,
        }
    }
}

/// A fan-out to a destination's receivers.
struct Batch {
    /// The published destination.
    destination: Box<str>,
    /// The message.
    message: Arc<Published>,
    /// Who gets it.
    receivers: Arc<[Arc<Receiver>]>,
    /// The destination's order lock.
    order: Arc<Mutex<()>>,
}

/// Identifies one subscription in the broker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SubKey {
    /// The session id.
    session: Arc<str>,
    /// The subscription id.
    id: Arc<str>,
}

/// A stored message of a competing queue.
#[derive(Debug)]
struct Stored {
    /// The message.
    message: Arc<Published>,
    /// Whether it was delivered before.
    redelivered: Redelivered,
}

/// A competing queue's store and round-robin position.
#[derive(Debug, Default)]
struct CompetingQueue {
    /// Messages waiting for a subscriber with room, oldest first.
    stored: VecDeque<Stored>,
    /// Their summed size.
    bytes: usize,
    /// The subscription position where the next round-robin search starts.
    cursor: u64,
}

/// Everything behind the broker's lock.
#[derive(Debug)]
struct BrokerState {
    /// Connected sessions by id.
    sessions: HashMap<Arc<str>, SessionEntry>,
    /// User name → session ids.
    users: HashMap<String, HashSet<Arc<str>>>,
    /// Literal destination → its subscriptions.
    literal: HashMap<String, Topic>,
    /// Pattern subscriptions by literal prefix and position.
    patterns: PatternIndex<SubKey>,
    /// The next subscription position.
    next_position: u64,
    /// Competing queues by destination.
    queues: HashMap<String, CompetingQueue>,
    /// Bytes awaiting ACK or waiting for a window, over every session.
    pending_bytes: usize,
}

/// Broker settings taken from [`StompConfig`].
#[derive(Debug, Clone)]
struct BrokerSettings {
    /// Semantics of `/queue` destinations.
    queue_semantics: QueueSemantics,
    /// Competing-queue message bound.
    max_queue_messages: usize,
    /// Competing-queue byte bound.
    max_queue_bytes: usize,
    /// Per-connection bound on deliveries awaiting ACK (and on waiting ones).
    max_pending_acks: usize,
    /// Per-connection bound on their bytes.
    max_pending_ack_bytes: usize,
    /// The same over every connection.
    max_total_pending_ack_bytes: usize,
    /// Bound on competing queues.
    max_queues: usize,
    /// Pattern separator.
    separator: char,
    /// Bounds on pattern subscriptions.
    pattern_limits: PatternLimits,
}

/// Why a broker operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The session is not registered (it already disconnected).
    #[error("session {0} is not connected")]
    UnknownSession(String),
    /// Subscribing to another session's user destination.
    #[error("destination {0} belongs to another session")]
    AccessDenied(String),
    /// The pattern exceeds the configured limits.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// The engine cannot serve this subscription (it says why).
    #[error("{0}")]
    Refused(String),
}

/// How many sessions a publish reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    /// Deliveries made now (a competing queue may store the message instead; a relayed
    /// destination delivers later, through the external broker).
    pub delivered: usize,
    /// Why a relayed destination could not take the message (None: taken).
    pub refused: Option<Refusal>,
}

impl PublishOutcome {
    fn delivered(delivered: usize) -> PublishOutcome {
        PublishOutcome {
            delivered,
            refused: None,
        }
    }
}

/// The embedded broker.
#[derive(Debug)]
pub struct Broker {
    /// All mutable state.
    state: Mutex<BrokerState>,
    /// Settings.
    settings: BrokerSettings,
    /// Counters.
    stats: Arc<StompStats>,
    /// This process's message-id prefix.
    node: String,
    /// The next message-id number.
    next_message_id: AtomicU64,
    /// The engine attached to this broker (the cluster bridge), if any.
    engine: OnceLock<Arc<dyn BrokerEngine>>,
    /// Whether reaching `max_queues` was logged (cleared when a queue is forgotten).
    queues_full_logged: AtomicBool,
}

impl std::fmt::Debug for dyn BrokerEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerEngine")
    }
}

impl Broker {
    /// A broker configured by `config`, counting into `stats`.
    pub fn new(config: &StompConfig, stats: Arc<StompStats>) -> Broker {
        Broker {
            state: Mutex::new(BrokerState {
                sessions: HashMap::new(),
                users: HashMap::new(),
                literal: HashMap::new(),
                patterns: PatternIndex::new(config.path_separator),
                next_position: 0,
                queues: HashMap::new(),
                pending_bytes: 0,
            }),
            settings: BrokerSettings {
                queue_semantics: config.queue_semantics,
                max_queue_messages: config.max_queue_messages,
                max_queue_bytes: config.max_queue_bytes,
                max_pending_acks: config.max_pending_acks,
                max_pending_ack_bytes: config.max_pending_ack_bytes,
                max_total_pending_ack_bytes: config.max_total_pending_ack_bytes,
                max_queues: config.max_queues,
                separator: config.path_separator,
                pattern_limits: config.pattern_limits(),
            },
            stats,
            node: format!("n{}", random_id(6)),
            next_message_id: AtomicU64::new(1),
            engine: OnceLock::new(),
            queues_full_logged: AtomicBool::new(false),
        }
    }

    /// Attach an engine (once; a second one is refused and returned).
    pub fn attach_engine(
        &self,
        engine: Arc<dyn BrokerEngine>,
    ) -> Result<(), Arc<dyn BrokerEngine>> {
        self.engine.set(engine)
    }

    fn engine(&self) -> Option<&Arc<dyn BrokerEngine>> {
        self.engine.get()
    }

    fn lock(&self) -> MutexGuard<'_, BrokerState> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A fresh message id, `[A-Za-z0-9_-]` only.
    pub fn next_message_id(&self) -> String {
        let n = self.next_message_id.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:016x}", self.node)
    }

    /// Build a message from headers and body with a fresh id.
    pub fn message(&self, headers: &[(String, String)], body: Bytes) -> Arc<Published> {
        Arc::new(Published::new(self.next_message_id(), headers, body))
    }

    /// Register a connected session (fed by CONNECTED).
    pub fn register_session(&self, session: &str, out: Arc<Outbound>, user: Option<String>) {
        let session: Arc<str> = session.into();
        let mut state = self.lock();
        if let Some(user) = &user {
            state
                .users
                .entry(user.clone())
                .or_default()
                .insert(session.clone());
        }
        if let Some(engine) = self.engine() {
            engine.session_opened(&session, user.as_deref());
        }
        let by_message_id = out.version() < Version::V1_2;
        state.sessions.insert(
            session,
            SessionEntry {
                out,
                user,
                subs: HashMap::new(),
                next_ack: 0,
                pending_acks: 0,
                waiting: 0,
                pending_bytes: 0,
                ack_index: HashMap::new(),
                message_index: by_message_id.then(HashMap::new),
            },
        );
    }

    /// Remove a session: its subscriptions end and its unacked competing-queue messages are
    /// requeued for other subscribers (spec §5.5).
    pub fn unregister_session(&self, session: &str) {
        let mut state = self.lock();
        let Some(entry) = state.sessions.remove(session) else {
            return;
        };
        state.pending_bytes -= entry.pending_bytes;
        if let Some(user) = &entry.user
            && let Some(set) = state.users.get_mut(user)
        {
            set.remove(session);
            if set.is_empty() {
                state.users.remove(user);
            }
        }
        let mut touched = Vec::new();
        for sub in entry.subs.into_values() {
            // The session is gone: nothing waits for a fan-out under way to it.
            let _ = forget_subscription_index(&mut state, &sub);
            self.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
            if let Some(engine) = self.engine() {
                engine.unsubscribed(session, entry.user.as_deref(), &sub.request);
            }
            touched.extend(self.release(&mut state, sub.unacked.into_values()));
        }
        if let Some(engine) = self.engine() {
            engine.session_closed(session, entry.user.as_deref());
        }
        self.dispatch_all(&mut state, touched);
    }

    /// Activate a subscription. Once this returns, every later publish reaches it.
    pub fn subscribe(&self, session: &str, request: SubscribeRequest) -> Result<(), BrokerError> {
        if let Some(engine) = self.engine() {
            engine
                .check_subscription(&request)
                .map_err(BrokerError::Refused)?;
        }
        let pattern = if is_pattern(&request.target) {
            let limits = &self.settings.pattern_limits;
            Some(Pattern::compile(
                &request.target,
                self.settings.separator,
                limits,
            )?)
        } else {
            None
        };
        let mut state = self.lock();
        if let Some(owner) = user_suffix(&request.target)
            && owner != session
            && state.sessions.contains_key(owner)
        {
            return Err(BrokerError::AccessDenied(request.target));
        }
        let Some(session_key) = state
            .sessions
            .get_key_value(session)
            .map(|(k, _)| k.clone())
        else {
            return Err(BrokerError::UnknownSession(session.into()));
        };
        let key = SubKey {
            session: session_key,
            id: request.id.as_str().into(),
        };
        let target = request.target.clone();
        state.next_position += 1;
        let position = state.next_position;
        let mut receiver = None;
        let alone = self.engine().is_some_and(|e| e.serves_alone(&request));
        if alone {
            // The engine delivers it through `deliver_to_subscription`; no index holds it.
        } else if let Some(pattern) = &pattern {
            state
                .patterns
                .insert(pattern.literal_prefix(), position, key);
        } else {
            if request.ack == AckMode::Auto
                && let Some(entry) = state.sessions.get(session)
            {
                receiver = Some(Arc::new(Receiver {
                    out: entry.out.clone(),
                    id: key.id.clone(),
                    shown: request.shown.as_deref().map(Arc::from),
                    selector: request.selector.clone(),
                    live: AtomicBool::new(true),
                }));
            }
            let topic = state.literal.entry(target.clone()).or_default();
            match &receiver {
                Some(_) => topic.snapshot = None,
                None => topic.tracked += 1,
            }
            topic.members.insert(
                position,
                Member {
                    key,
                    receiver: receiver.clone(),
                },
            );
        }
        if let Some(entry) = state.sessions.get_mut(session) {
            if let Some(engine) = self.engine() {
                engine.subscribed(session, entry.user.as_deref(), &request);
            }
            entry.subs.insert(
                request.id.clone(),
                Subscription {
                    request,
                    pattern,
                    position,
                    indexed: !alone,
                    receiver,
                    unacked: BTreeMap::new(),
                    waiting: VecDeque::new(),
                },
            );
        }
        self.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
        if self.is_competing(&target) {
            self.dispatch(&mut state, &target);
        }
        Ok(())
    }

    /// End a subscription; returns whether it existed. Unacked competing-queue messages are
    /// requeued; once this returns no further MESSAGE is sent for it.
    pub fn unsubscribe(&self, session: &str, id: &str) -> bool {
        let mut state = self.lock();
        let Some(sub) = state
            .sessions
            .get_mut(session)
            .and_then(|e| e.subs.remove(id))
        else {
            return false;
        };
        let BrokerState {
            sessions,
            pending_bytes,
            ..
        } = &mut *state;
        if let Some(entry) = sessions.get_mut(session) {
            for delivery in sub.unacked.values() {
                entry.forget_delivery(pending_bytes, delivery);
            }
            for message in &sub.waiting {
                entry.waiting -= 1;
                entry.pending_bytes -= message.size();
                *pending_bytes -= message.size();
            }
            if let Some(engine) = self.engine() {
                engine.unsubscribed(session, entry.user.as_deref(), &sub.request);
            }
        }
        let order = forget_subscription_index(&mut state, &sub);
        self.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
        let touched = self.release(&mut state, sub.unacked.into_values());
        self.send_waiting(&mut state, session);
        self.dispatch_all(&mut state, touched);
        drop(state);
        // A fan-out that took its snapshot before the receiver died may still be sending to
        // it: wait until it is done (it skips the receiver if it has not reached it yet).
        if let Some(order) = order {
            drop(lock_order(&order));
        }
        true
    }

    /// Publish to a broker destination (a literal, never a pattern).
    pub fn publish(&self, destination: &str, message: Arc<Published>) -> PublishOutcome {
        self.publish_as(None, destination, message)
    }

    /// Publish a client SEND of `session` (a relay may carry it on that session's own
    /// connection to the external broker).
    pub fn publish_from(
        &self,
        session: &str,
        destination: &str,
        message: Arc<Published>,
    ) -> PublishOutcome {
        self.publish_as(Some(session), destination, message)
    }

    fn publish_as(
        &self,
        origin: Option<&str>,
        destination: &str,
        message: Arc<Published>,
    ) -> PublishOutcome {
        bump(&self.stats.published);
        if let Some(outcome) = self.relayed(origin, destination, &message) {
            return outcome;
        }
        let fanout = {
            let mut state = self.lock();
            if let Some(engine) = self.engine() {
                engine.published(destination, &message);
            }
            self.publish_locked(&mut state, destination, message)
        };
        PublishOutcome::delivered(self.complete(fanout))
    }

    /// Publish several messages atomically, in order (a transaction's COMMIT).
    pub fn publish_all(&self, messages: Vec<(String, Arc<Published>)>) {
        let mut fanouts = Vec::with_capacity(messages.len());
        {
            let mut state = self.lock();
            for (destination, message) in messages {
                bump(&self.stats.published);
                if self.relayed(None, &destination, &message).is_some() {
                    continue;
                }
                if let Some(engine) = self.engine() {
                    engine.published(&destination, &message);
                }
                fanouts.push(self.publish_locked(&mut state, &destination, message));
            }
        }
        for fanout in fanouts {
            self.complete(fanout);
        }
    }

    /// Whether a new subscription of `session` is live: always, except for a relayed one
    /// whose external broker subscription is not confirmed yet.
    pub fn is_live(&self, session: &str, request: &SubscribeRequest) -> bool {
        self.engine().is_none_or(|e| e.is_live(session, request))
    }

    /// Answer `completion` once the subscription is live (see [`BrokerEngine::when_live`]).
    pub fn when_live(
        &self,
        session: &str,
        request: &SubscribeRequest,
        completion: super::completion::Completion,
    ) {
        match self.engine() {
            Some(engine) => engine.when_live(session, request, completion),
            None => completion.accept(),
        }
    }

    /// Hand a publish to the engine when an external broker serves `destination`; None when
    /// the embedded broker does.
    fn relayed(
        &self,
        origin: Option<&str>,
        destination: &str,
        message: &Arc<Published>,
    ) -> Option<PublishOutcome> {
        let engine = self.engine()?;
        if !engine.relays(destination) {
            return None;
        }
        let refused = engine.relay(origin, destination, message).err();
        if refused.is_some() {
            bump(&self.stats.dropped_overflow);
        }
        Some(PublishOutcome {
            delivered: 0,
            refused,
        })
    }

    /// Deliver a message the engine received from another node to local subscribers of
    /// `destination` (never reported back to the engine).
    pub fn deliver_remote(&self, destination: &str, message: Arc<Published>) -> PublishOutcome {
        let fanout = self.publish_locked(&mut self.lock(), destination, message);
        PublishOutcome::delivered(self.complete(fanout))
    }

    /// Deliver a message the engine received for every session of `user` here (never
    /// reported back to the engine). Returns how many sessions it reached.
    pub fn deliver_remote_user(&self, user: &str, actual: &str, message: Arc<Published>) -> usize {
        let (reached, fanouts) = {
            let mut state = self.lock();
            let targets = choose_user_sessions(&state, user, None);
            let fanouts: Vec<Fanout> = targets
                .iter()
                .map(|session| {
                    let target = session_target(actual, session);
                    self.publish_locked(&mut state, &target, message.clone())
                })
                .collect();
            (targets.len(), fanouts)
        };
        for fanout in fanouts {
            self.complete(fanout);
        }
        reached
    }

    /// Deliver one message to one registered subscription (the engine's stored messages),
    /// with ack tracking as for any delivery. False when the subscription is gone or its
    /// session could not take the message.
    pub fn deliver_to_subscription(
        &self,
        session: &str,
        subscription: &str,
        message: &Arc<Published>,
        redelivered: bool,
    ) -> bool {
        let mut state = self.lock();
        let Some((session_key, entry)) = state.sessions.get_key_value(session) else {
            return false;
        };
        let Some(sub) = entry.subs.get(subscription) else {
            return false;
        };
        let destination = sub.request.target.clone();
        let key = SubKey {
            session: session_key.clone(),
            id: subscription.into(),
        };
        let redelivered = if redelivered {
            Redelivered::Yes
        } else {
            Redelivered::No
        };
        self.deliver(&mut state, &key, &destination, message, redelivered, None)
    }

    /// Send to `/user/{user}{actual}` following spec §7.5: `origin` is the sending session (a
    /// client SEND) or the session a backend names. Returns how many deliveries were made (a
    /// chosen session that does not subscribe to the destination gets none).
    pub fn send_to_user(
        &self,
        user: &str,
        actual: &str,
        origin: Option<&str>,
        message: Arc<Published>,
    ) -> usize {
        bump(&self.stats.published);
        let fanouts: Vec<Fanout> = {
            let mut state = self.lock();
            if let Some(engine) = self.engine()
                && narrowed_to_origin(&state, user, origin).is_none()
                && engine.sent_to_user(user, actual, &message) == UserDelivery::Taken
            {
                return state.users.get(user).map_or(0, |s| s.len());
            }
            let targets = choose_user_sessions(&state, user, origin);
            if targets.is_empty() {
                bump(&self.stats.dropped_user_unknown);
                tracing::debug!(user, actual, "message to a user without sessions dropped");
                return 0;
            }
            targets
                .iter()
                .map(|session| {
                    let target = session_target(actual, session);
                    self.publish_locked(&mut state, &target, message.clone())
                })
                .collect()
        };
        fanouts.into_iter().map(|f| self.complete(f)).sum()
    }

    /// Send to one session's user destination (`@SendToUser(broadcast=false)`, and the only
    /// way to reach an anonymous session): `actual` is e.g. `/queue/x`.
    pub fn send_to_session(
        &self,
        session: &str,
        actual: &str,
        message: Arc<Published>,
    ) -> PublishOutcome {
        bump(&self.stats.published);
        let target = session_target(actual, session);
        let fanout = self.publish_locked(&mut self.lock(), &target, message);
        PublishOutcome::delivered(self.complete(fanout))
    }

    /// Deliver one message to one subscription of one session only (an `/app` subscribe
    /// reply); the subscription need not be registered in the broker.
    pub fn send_to_subscription(
        &self,
        out: &Outbound,
        subscription: &str,
        destination: &str,
        message: &Published,
    ) {
        let head = DeliveryHead {
            destination,
            subscription,
            ack: None,
            redelivered: Redelivered::No,
        };
        bump(match send_message(out, &head, message, Discard::Allowed) {
            true => &self.stats.delivered,
            false => &self.stats.dropped_overflow,
        });
    }

    /// Apply an ACK or NACK from `session`.
    pub fn acknowledge(&self, session: &str, target: &AckTarget, kind: AckKind) -> AckOutcome {
        let mut state = self.lock();
        let BrokerState {
            sessions,
            pending_bytes,
            ..
        } = &mut *state;
        let Some(entry) = sessions.get_mut(session) else {
            return self.unknown_ack();
        };
        let Some((sub_id, token)) = find_delivery(entry, target) else {
            return self.unknown_ack();
        };
        let Some(sub) = entry.subs.get_mut(&*sub_id) else {
            return self.unknown_ack();
        };
        let settled: Vec<Delivery> = match sub.request.ack {
            AckMode::Client => {
                let rest = sub.unacked.split_off(&(token + 1));
                std::mem::replace(&mut sub.unacked, rest)
                    .into_values()
                    .collect()
            }
            _ => sub.unacked.remove(&token).into_iter().collect(),
        };
        if let Some(engine) = self.engine() {
            let ids: Vec<&str> = settled.iter().map(|d| d.message.message_id()).collect();
            match kind {
                AckKind::Ack => engine.acked(session, entry.user.as_deref(), &sub.request, &ids),
                AckKind::Nack => engine.nacked(session, entry.user.as_deref(), &sub.request, &ids),
            }
        }
        let competing_target = self
            .is_competing(&sub.request.target)
            .then(|| sub.request.target.clone());
        for delivery in &settled {
            entry.forget_delivery(pending_bytes, delivery);
        }
        let counter = match kind {
            AckKind::Ack => &self.stats.acks,
            AckKind::Nack => &self.stats.nacks,
        };
        counter.fetch_add(settled.len() as u64, Ordering::Relaxed);
        let mut touched: Vec<String> = competing_target.into_iter().collect();
        if kind == AckKind::Nack {
            touched.extend(self.release(&mut state, settled));
        }
        self.send_waiting(&mut state, session);
        self.dispatch_all(&mut state, touched);
        AckOutcome::Applied
    }

    /// Whether a session is registered.
    pub fn is_session(&self, session: &str) -> bool {
        self.lock().sessions.contains_key(session)
    }

    /// Messages waiting in a competing queue.
    pub fn queue_depth(&self, destination: &str) -> usize {
        self.lock()
            .queues
            .get(destination)
            .map_or(0, |q| q.stored.len())
    }

    /// Sessions currently registered for a user.
    pub fn user_sessions(&self, user: &str) -> Vec<String> {
        self.lock()
            .users
            .get(user)
            .map(|set| set.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default()
    }

    fn unknown_ack(&self) -> AckOutcome {
        bump(&self.stats.ack_unknown);
        AckOutcome::Unknown
    }

    /// Whether `destination` is a competing queue (spec §7.3).
    pub(crate) fn is_competing(&self, destination: &str) -> bool {
        self.settings.queue_semantics == QueueSemantics::Competing
            && (destination.starts_with("/queue/") || destination == "/queue")
            && user_suffix(destination).is_none()
            && !is_pattern(destination)
            && self.engine().is_none_or(|e| !e.relays(destination))
    }

    /// Deliver what needs the lock (client-ack and pattern subscriptions, competing queues)
    /// and take the snapshot of the auto-ack subscribers, delivered by [`Broker::complete`]
    /// once the lock is released.
    fn publish_locked(
        &self,
        state: &mut BrokerState,
        destination: &str,
        message: Arc<Published>,
    ) -> Fanout {
        if self.is_competing(destination) {
            self.enqueue(state, destination, message);
            return Fanout::done(self.dispatch(state, destination));
        }
        let owner = user_suffix(destination)
            .filter(|s| state.sessions.contains_key(*s))
            .map(str::to_owned);
        let mut tracked: Vec<SubKey> = Vec::new();
        let mut batch = None;
        if let Some(topic) = state.literal.get_mut(destination) {
            if topic.tracked > 0 {
                tracked.extend(
                    topic
                        .members
                        .values()
                        .filter(|m| m.receiver.is_none())
                        .map(|m| m.key.clone()),
                );
            }
            let receivers = topic.receivers();
            if !receivers.is_empty() {
                batch = Some(Batch {
                    destination: destination.into(),
                    message: message.clone(),
                    receivers,
                    order: topic.order.clone(),
                });
            }
        }
        for key in state.patterns.candidates(destination) {
            let visible = owner.as_deref().is_none_or(|o| *o == *key.session);
            if visible && pattern_matches(state, key, destination) {
                tracked.push(key.clone());
            }
        }
        if tracked.is_empty() && batch.is_none() {
            bump(&self.stats.dropped_no_subscriber);
        }
        let mut delivered = 0;
        for key in tracked {
            if self.deliver(state, &key, destination, &message, Redelivered::No, None) {
                delivered += 1;
            }
        }
        Fanout { delivered, batch }
    }

    /// Finish a publish outside the broker's lock: deliver its batch under the destination's
    /// order lock. Returns the deliveries made in all.
    fn complete(&self, fanout: Fanout) -> usize {
        let Some(batch) = fanout.batch else {
            return fanout.delivered;
        };
        let _order = lock_order(&batch.order);
        let (mut delivered, mut refused) = (0u64, 0u64);
        for receiver in batch.receivers.iter() {
            if !receiver.live.load(Ordering::Acquire) {
                continue;
            }
            if let Some(selector) = &receiver.selector
                && !selector.matches(&batch.message.headers)
            {
                continue;
            }
            let head = DeliveryHead {
                destination: receiver.shown.as_deref().unwrap_or(&batch.destination),
                subscription: &receiver.id,
                ack: None,
                redelivered: Redelivered::No,
            };
            if send_message(&receiver.out, &head, &batch.message, Discard::Allowed) {
                delivered += 1;
            } else {
                refused += 1;
            }
        }
        // One addition per publish, not per delivery: these counters are shared by every core.
        self.stats.delivered.fetch_add(delivered, Ordering::Relaxed);
        if refused > 0 {
            self.stats
                .dropped_overflow
                .fetch_add(refused, Ordering::Relaxed);
        }
        fanout.delivered + delivered as usize
    }

    fn enqueue(&self, state: &mut BrokerState, destination: &str, message: Arc<Published>) {
        if !state.queues.contains_key(destination) && state.queues.len() >= self.settings.max_queues
        {
            bump(&self.stats.dropped_queue_full);
            if !self.queues_full_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    destination,
                    max_queues = self.settings.max_queues,
                    "stomp.max_queues reached: messages to new competing queues are dropped until one is forgotten"
                );
            }
            return;
        }
        if !state.queues.contains_key(destination) {
            self.queues_full_logged.store(false, Ordering::Relaxed);
        }
        let queue = state.queues.entry(destination.to_owned()).or_default();
        queue.bytes += message.size();
        queue.stored.push_back(Stored {
            message,
            redelivered: Redelivered::No,
        });
        while queue.stored.len() > self.settings.max_queue_messages
            || (queue.bytes > self.settings.max_queue_bytes && queue.stored.len() > 1)
        {
            if let Some(dropped) = queue.stored.pop_front() {
                queue.bytes -= dropped.message.size();
                bump(&self.stats.dropped_queue_full);
            }
        }
    }

    /// Requeue released deliveries that came from competing queues (at the front, in their
    /// original order, marked redelivered); broadcast ones are discarded. Returns the queues
    /// that gained messages.
    fn release(
        &self,
        state: &mut BrokerState,
        deliveries: impl IntoIterator<Item = Delivery>,
    ) -> Vec<String> {
        let mut touched = Vec::new();
        let deliveries: Vec<Delivery> = deliveries.into_iter().collect();
        for delivery in deliveries.into_iter().rev() {
            let Some(queue_name) = delivery.queue else {
                continue;
            };
            let queue = state.queues.entry(queue_name.clone()).or_default();
            queue.bytes += delivery.message.size();
            queue.stored.push_front(Stored {
                message: delivery.message,
                redelivered: Redelivered::Yes,
            });
            if !touched.contains(&queue_name) {
                touched.push(queue_name);
            }
        }
        touched
    }

    fn dispatch_all(&self, state: &mut BrokerState, queues: Vec<String>) {
        for queue in queues {
            self.dispatch(state, &queue);
        }
    }

    /// Hand stored messages of a competing queue to subscribers with room, round-robin.
    fn dispatch(&self, state: &mut BrokerState, destination: &str) -> usize {
        let mut delivered = 0;
        loop {
            let Some(queue) = state.queues.get(destination) else {
                return delivered;
            };
            let Some(head) = queue.stored.front() else {
                self.forget_queue_if_unused(state, destination);
                return delivered;
            };
            let size = head.message.size();
            let cursor = queue.cursor;
            let Some(topic) = state.literal.get(destination) else {
                return delivered;
            };
            let chosen = topic
                .members
                .range(cursor..)
                .chain(topic.members.range(..cursor))
                .find(|(_, m)| self.has_room(state, &m.key, size))
                .map(|(position, m)| (*position, m.key.clone()));
            let Some((position, key)) = chosen else {
                return delivered;
            };
            let Some(queue) = state.queues.get_mut(destination) else {
                return delivered;
            };
            queue.cursor = position + 1;
            let Some(stored) = queue.stored.pop_front() else {
                return delivered;
            };
            queue.bytes -= stored.message.size();
            if stored.redelivered == Redelivered::Yes {
                bump(&self.stats.redeliveries);
            }
            let from = Some(destination);
            if self.deliver(
                state,
                &key,
                destination,
                &stored.message,
                stored.redelivered,
                from,
            ) {
                delivered += 1;
            }
        }
    }

    /// Forget a competing queue that holds nothing and has no subscriber (bounded by
    /// `max_queues`, so SENDs to ever new names cannot grow the broker).
    fn forget_queue_if_unused(&self, state: &mut BrokerState, destination: &str) {
        let empty = state
            .queues
            .get(destination)
            .is_some_and(|q| q.stored.is_empty());
        if empty && !state.literal.contains_key(destination) {
            state.queues.remove(destination);
        }
    }

    /// Whether a budget of `held` bytes on one connection (and the broker's total) can take
    /// `size` more. A connection holding nothing always can, so one message larger than the
    /// budget still gets through.
    fn budget_fits(&self, held: usize, total: usize, size: usize) -> bool {
        (held == 0 || held + size <= self.settings.max_pending_ack_bytes)
            && total + size <= self.settings.max_total_pending_ack_bytes
    }

    /// Send what waits on `session`'s subscriptions while their windows are open.
    fn send_waiting(&self, state: &mut BrokerState, session: &str) {
        let Some((session_key, entry)) = state.sessions.get_key_value(session) else {
            return;
        };
        if entry.waiting == 0 {
            return;
        }
        let session_key = session_key.clone();
        let mut ids: Vec<Arc<str>> = entry
            .subs
            .iter()
            .filter(|(_, sub)| !sub.waiting.is_empty())
            .map(|(id, _)| id.as_str().into())
            .collect();
        ids.sort();
        for id in ids {
            let key = SubKey {
                session: session_key.clone(),
                id,
            };
            loop {
                let BrokerState {
                    sessions,
                    pending_bytes,
                    ..
                } = &mut *state;
                let Some(entry) = sessions.get_mut(&key.session) else {
                    return;
                };
                let Some(sub) = entry.subs.get_mut(&*key.id) else {
                    break;
                };
                let open = sub
                    .request
                    .prefetch
                    .is_none_or(|limit| sub.unacked.len() < limit)
                    && entry.pending_acks < self.settings.max_pending_acks;
                if !open {
                    break;
                }
                let Some(message) = sub.waiting.pop_front() else {
                    break;
                };
                entry.waiting -= 1;
                let destination = sub.request.target.clone();
                let sent =
                    self.send_tracked(entry, &key, &destination, &message, Redelivered::No, None);
                if !sent {
                    entry.pending_bytes -= message.size();
                    *pending_bytes -= message.size();
                }
            }
        }
    }

    fn has_room(&self, state: &BrokerState, key: &SubKey, size: usize) -> bool {
        let Some(entry) = state.sessions.get(&key.session) else {
            return false;
        };
        let Some(sub) = entry.subs.get(&*key.id) else {
            return false;
        };
        if entry.out.is_closed() {
            return false;
        }
        if !sub.request.ack.needs_ack() {
            return true;
        }
        let window_open = sub
            .request
            .prefetch
            .is_none_or(|limit| sub.unacked.len() < limit);
        window_open
            && entry.pending_acks < self.settings.max_pending_acks
            && self.budget_fits(entry.pending_bytes, state.pending_bytes, size)
    }

    /// Encode and queue one MESSAGE; in client modes remember it as unacked, or, when the
    /// subscription's window is full, keep a broadcast message waiting (see the module
    /// comment). Competing deliveries are only made where `has_room` said so.
    fn deliver(
        &self,
        state: &mut BrokerState,
        key: &SubKey,
        destination: &str,
        message: &Arc<Published>,
        redelivered: Redelivered,
        queue: Option<&str>,
    ) -> bool {
        let BrokerState {
            sessions,
            pending_bytes,
            ..
        } = state;
        let Some(entry) = sessions.get_mut(&key.session) else {
            return false;
        };
        let Some(sub) = entry.subs.get(&*key.id) else {
            return false;
        };
        if let Some(selector) = &sub.request.selector
            && !selector.matches(&message.headers)
        {
            return false;
        }
        if !sub.request.ack.needs_ack() {
            return self.write_delivery(&entry.out, sub, destination, message, None, redelivered);
        }
        let size = message.size();
        let fits = self.budget_fits(entry.pending_bytes, *pending_bytes, size);
        let open = sub.waiting.is_empty()
            && sub
                .request
                .prefetch
                .is_none_or(|limit| sub.unacked.len() < limit)
            && entry.pending_acks < self.settings.max_pending_acks;
        if open && fits {
            entry.pending_bytes += size;
            *pending_bytes += size;
            let sent = self.send_tracked(entry, key, destination, message, redelivered, queue);
            if !sent {
                entry.pending_bytes -= size;
                *pending_bytes -= size;
            }
            return sent;
        }
        if queue.is_none()
            && fits
            && entry.waiting < self.settings.max_pending_acks
            && let Some(sub) = entry.subs.get_mut(&*key.id)
        {
            sub.waiting.push_back(message.clone());
            entry.waiting += 1;
            entry.pending_bytes += size;
            *pending_bytes += size;
            return true;
        }
        bump(&self.stats.dropped_overflow);
        false
    }

    /// Encode one MESSAGE for `sub` and queue it on `out`; counted as delivered, or as an
    /// overflow drop when the carrier refused it.
    fn write_delivery(
        &self,
        out: &Outbound,
        sub: &Subscription,
        destination: &str,
        message: &Published,
        ack: Option<&str>,
        redelivered: Redelivered,
    ) -> bool {
        let head = DeliveryHead {
            destination: sub.request.shown.as_deref().unwrap_or(destination),
            subscription: &sub.request.id,
            ack,
            redelivered,
        };
        // A delivery awaiting ACK is never discarded: the client could not ACK what it never
        // saw, and the delivery would hold its pending-ack slot (and prefetch window) forever.
        let discard = match ack {
            Some(_) => Discard::Never,
            None => Discard::Allowed,
        };
        let sent = send_message(out, &head, message, discard);
        bump(match sent {
            true => &self.stats.delivered,
            false => &self.stats.dropped_overflow,
        });
        sent
    }

    /// Send one client-ack delivery whose bytes are already counted in the budgets, and
    /// remember it; false (nothing remembered) when the carrier refused it.
    fn send_tracked(
        &self,
        entry: &mut SessionEntry,
        key: &SubKey,
        destination: &str,
        message: &Arc<Published>,
        redelivered: Redelivered,
        queue: Option<&str>,
    ) -> bool {
        let Some(sub) = entry.subs.get_mut(&*key.id) else {
            return false;
        };
        entry.next_ack += 1;
        let token = entry.next_ack;
        let token_text = token.to_string();
        if !self.write_delivery(
            &entry.out,
            sub,
            destination,
            message,
            Some(&token_text),
            redelivered,
        ) {
            return false;
        }
        sub.unacked.insert(
            token,
            Delivery {
                token,
                message: message.clone(),
                queue: queue.map(str::to_owned),
            },
        );
        entry.pending_acks += 1;
        entry.ack_index.insert(token, key.id.clone());
        if let Some(index) = &mut entry.message_index {
            index
                .entry(message.message_id.clone())
                .or_default()
                .push(token);
        }
        true
    }
}

impl SessionEntry {
    /// Take a settled or released delivery out of the indexes and the budgets (`total` is
    /// the broker's).
    fn forget_delivery(&mut self, total: &mut usize, delivery: &Delivery) {
        self.pending_acks -= 1;
        self.pending_bytes -= delivery.message.size();
        *total -= delivery.message.size();
        self.ack_index.remove(&delivery.token);
        if let Some(index) = &mut self.message_index
            && let Some(tokens) = index.get_mut(delivery.message.message_id())
        {
            tokens.retain(|t| *t != delivery.token);
            if tokens.is_empty() {
                index.remove(delivery.message.message_id());
            }
        }
    }
}

/// Encode one MESSAGE for `head` and queue it on `out`; false when the carrier refused it.
fn send_message(
    out: &Outbound,
    head: &DeliveryHead<'_>,
    message: &Published,
    discard: Discard,
) -> bool {
    let (head, tail, dropped) = message.encode_for(head, out.version());
    out.count_dropped_headers(dropped);
    out.send_with_tail(head, tail, message.payload, discard)
        .is_ok()
}

fn pattern_matches(state: &BrokerState, key: &SubKey, destination: &str) -> bool {
    state
        .sessions
        .get(&key.session)
        .and_then(|e| e.subs.get(&*key.id))
        .and_then(|s| s.pattern.as_ref())
        .is_some_and(|p| p.matches(destination))
}

/// Take an ended subscription out of its destination's order (marking its receiver dead);
/// returns the destination's order lock when a fan-out outside the lock may be sending to it.
fn forget_subscription_index(
    state: &mut BrokerState,
    sub: &Subscription,
) -> Option<Arc<Mutex<()>>> {
    if !sub.indexed {
        return None;
    }
    if let Some(pattern) = &sub.pattern {
        state
            .patterns
            .remove(pattern.literal_prefix(), sub.position);
        return None;
    }
    let mut order = None;
    if let Some(topic) = state.literal.get_mut(&sub.request.target) {
        topic.members.remove(&sub.position);
        match &sub.receiver {
            Some(receiver) => {
                receiver.live.store(false, Ordering::Release);
                topic.snapshot = None;
                order = Some(topic.order.clone());
            }
            None => topic.tracked -= 1,
        }
        if topic.members.is_empty() {
            state.literal.remove(&sub.request.target);
            // An empty competing queue nobody subscribes to any more is forgotten.
            if state
                .queues
                .get(&sub.request.target)
                .is_some_and(|q| q.stored.is_empty())
            {
                state.queues.remove(&sub.request.target);
            }
        }
    }
    order
}

/// Take a destination's order lock (a fan-out that panicked leaves nothing half-done that
/// matters to the next one).
fn lock_order(order: &Mutex<()>) -> MutexGuard<'_, ()> {
    order
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Find the outstanding delivery an ACK/NACK names: (subscription id, delivery number), by
/// index lookups only.
fn find_delivery(entry: &SessionEntry, target: &AckTarget) -> Option<(Arc<str>, u64)> {
    match target {
        AckTarget::Token(token) => {
            let token: u64 = token.parse().ok()?;
            let sub = entry.ack_index.get(&token)?;
            Some((sub.clone(), token))
        }
        AckTarget::MessageId {
            message_id,
            subscription,
        } => {
            let tokens = entry.message_index.as_ref()?.get(message_id)?;
            tokens.iter().find_map(|token| {
                let sub = entry.ack_index.get(token)?;
                subscription
                    .as_deref()
                    .is_none_or(|wanted| wanted == &**sub)
                    .then(|| (sub.clone(), *token))
            })
        }
    }
}

/// Spec §7.5 step 2: the sending session alone, when a `/user/{user}/...` message is
/// narrowed to it (it is the user's own session, or the user name is its id).
fn narrowed_to_origin(state: &BrokerState, user: &str, origin: Option<&str>) -> Option<Arc<str>> {
    let origin = origin?;
    if origin == user
        && let Some((key, _)) = state.sessions.get_key_value(origin)
    {
        return Some(key.clone());
    }
    state.users.get(user)?.get(origin).cloned()
}

/// Spec §7.5 step 2: which sessions a `/user/{user}/...` message goes to.
fn choose_user_sessions(state: &BrokerState, user: &str, origin: Option<&str>) -> Vec<Arc<str>> {
    if let Some(key) = narrowed_to_origin(state, user, origin) {
        return vec![key];
    }
    let Some(sessions) = state.users.get(user) else {
        return Vec::new();
    };
    let mut all: Vec<Arc<str>> = sessions.iter().cloned().collect();
    all.sort();
    all
}

/// `len` random characters of `[a-z0-9]`.
pub fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[(rand::random::<u32>() as usize) % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stomp::outbound::Carriage;
    use crate::stomp::testing::{RecordingSink, recording_sender};

    struct Fixture {
        broker: Broker,
        stats: Arc<StompStats>,
    }

    fn fixture(semantics: QueueSemantics) -> Fixture {
        fixture_with(StompConfig {
            queue_semantics: semantics,
            ..StompConfig::default()
        })
    }

    impl Fixture {
        fn session(&self, id: &str, user: Option<&str>) -> Arc<RecordingSink> {
            let (sink, sender) = recording_sender();
            let out = Arc::new(Outbound::new(
                sender,
                Version::V1_2,
                Carriage::TextAndBinary,
                self.stats.clone(),
            ));
            self.broker
                .register_session(id, out, user.map(str::to_owned));
            sink
        }

        fn subscribe(&self, session: &str, id: &str, target: &str, ack: AckMode) {
            let request = SubscribeRequest {
                id: id.into(),
                target: target.into(),
                shown: None,
                ack,
                prefetch: None,
                selector: None,
                headers: Vec::new(),
            };
            self.broker.subscribe(session, request).unwrap();
        }

        fn publish(&self, destination: &str, body: &str) {
            let message = self.broker.message(&[], Bytes::from(body.to_owned()));
            self.broker.publish(destination, message);
        }
    }

    #[test]
    fn only_deliveries_that_await_no_ack_are_droppable() {
        let f = fixture(QueueSemantics::Broadcast);
        let auto = f.session("a", None);
        let acked = f.session("b", None);
        let cumulative = f.session("c", None);
        f.subscribe("a", "1", "/topic/t", AckMode::Auto);
        f.subscribe("b", "2", "/topic/t", AckMode::ClientIndividual);
        f.subscribe("c", "3", "/topic/t", AckMode::Client);
        f.publish("/topic/t", "hi");
        assert_eq!(auto.droppable(), [true]);
        assert_eq!(acked.droppable(), [false]);
        assert_eq!(cumulative.droppable(), [false]);
    }

    #[test]
    fn topic_fans_out_to_every_subscriber() {
        let f = fixture(QueueSemantics::Broadcast);
        let a = f.session("a", None);
        let b = f.session("b", None);
        f.subscribe("a", "1", "/topic/t", AckMode::Auto);
        f.subscribe("b", "2", "/topic/t", AckMode::Auto);
        f.publish("/topic/t", "hi");
        assert_eq!(a.frames().len(), 1);
        assert_eq!(b.frames().len(), 1);
        assert_eq!(a.frames()[0].get("subscription"), Some("1"));
        assert_eq!(b.frames()[0].get("subscription"), Some("2"));
        assert_eq!(
            a.frames()[0].get("message-id"),
            b.frames()[0].get("message-id")
        );
        assert_eq!(a.frames()[0].get("ack"), None);
    }

    #[test]
    fn competing_queue_round_robins_and_stores() {
        let f = fixture(QueueSemantics::Competing);
        let a = f.session("a", None);
        let b = f.session("b", None);
        f.publish("/queue/q", "early");
        f.subscribe("a", "1", "/queue/q", AckMode::Auto);
        assert_eq!(a.frames().len(), 1);
        f.subscribe("b", "1", "/queue/q", AckMode::Auto);
        for i in 0..10 {
            f.publish("/queue/q", &format!("m{i}"));
        }
        assert_eq!(a.frames().len(), 6);
        assert_eq!(b.frames().len(), 5);
    }

    #[test]
    fn client_ack_is_cumulative_and_release_redelivers_the_rest() {
        let f = fixture(QueueSemantics::Competing);
        let a = f.session("a", None);
        f.subscribe("a", "1", "/queue/q", AckMode::Client);
        for body in ["1", "2", "3"] {
            f.publish("/queue/q", body);
        }
        let token = a.frames()[1].get("ack").unwrap().to_owned();
        let outcome = f
            .broker
            .acknowledge("a", &AckTarget::Token(token), AckKind::Ack);
        assert_eq!(outcome, AckOutcome::Applied);
        f.broker.unregister_session("a");
        assert_eq!(f.broker.queue_depth("/queue/q"), 1);
        let b = f.session("b", None);
        f.subscribe("b", "1", "/queue/q", AckMode::Auto);
        let frames = b.frames();
        assert_eq!(frames.len(), 1);
        assert_eq!(&frames[0].body[..], b"3");
        assert_eq!(frames[0].get("redelivered"), Some("true"));
    }

    #[test]
    fn individual_nack_redelivers_in_competing_mode() {
        let f = fixture(QueueSemantics::Competing);
        let a = f.session("a", None);
        f.subscribe("a", "1", "/queue/q", AckMode::ClientIndividual);
        f.publish("/queue/q", "x");
        let token = a.frames()[0].get("ack").unwrap().to_owned();
        f.broker
            .acknowledge("a", &AckTarget::Token(token), AckKind::Nack);
        let frames = a.frames();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].get("redelivered"), Some("true"));
    }

    #[test]
    fn prefetch_limits_outstanding_deliveries() {
        let f = fixture(QueueSemantics::Competing);
        let a = f.session("a", None);
        let request = SubscribeRequest {
            id: "1".into(),
            target: "/queue/q".into(),
            shown: None,
            ack: AckMode::Client,
            prefetch: Some(1),
            selector: None,
            headers: Vec::new(),
        };
        for body in ["1", "2", "3"] {
            f.publish("/queue/q", body);
        }
        f.broker.subscribe("a", request).unwrap();
        assert_eq!(a.frames().len(), 1);
        let token = a.frames()[0].get("ack").unwrap().to_owned();
        f.broker
            .acknowledge("a", &AckTarget::Token(token), AckKind::Ack);
        assert_eq!(a.frames().len(), 2);
    }

    fn fixture_with(config: StompConfig) -> Fixture {
        let stats = Arc::new(StompStats::default());
        Fixture {
            broker: Broker::new(&config, stats.clone()),
            stats,
        }
    }

    fn bodies(sink: &RecordingSink) -> Vec<String> {
        sink.frames()
            .iter()
            .map(|f| String::from_utf8_lossy(&f.body).into_owned())
            .collect()
    }

    fn subscribe_window(f: &Fixture, session: &str, target: &str, ack: AckMode, window: usize) {
        let request = SubscribeRequest {
            id: "1".into(),
            target: target.into(),
            shown: None,
            ack,
            prefetch: Some(window),
            selector: None,
            headers: Vec::new(),
        };
        f.broker.subscribe(session, request).unwrap();
    }

    fn ack(f: &Fixture, session: &str, frame: &crate::stomp::frame::Frame) -> AckOutcome {
        let token = frame.get("ack").unwrap().to_owned();
        f.broker
            .acknowledge(session, &AckTarget::Token(token), AckKind::Ack)
    }

    #[test]
    fn a_full_topic_window_holds_messages_back_in_order_until_acks_open_it() {
        let f = fixture(QueueSemantics::Broadcast);
        let a = f.session("a", None);
        subscribe_window(&f, "a", "/topic/t", AckMode::ClientIndividual, 2);
        for body in ["1", "2", "3", "4", "5"] {
            f.publish("/topic/t", body);
        }
        assert_eq!(bodies(&a), ["1", "2"]);
        assert_eq!(a.frames()[0].get("redelivered"), Some("false"));
        assert_eq!(ack(&f, "a", &a.frames()[0]), AckOutcome::Applied);
        assert_eq!(bodies(&a), ["1", "2", "3"]);
        // A newer publish queues behind the waiting ones.
        f.publish("/topic/t", "6");
        assert_eq!(ack(&f, "a", &a.frames()[1]), AckOutcome::Applied);
        assert_eq!(ack(&f, "a", &a.frames()[2]), AckOutcome::Applied);
        assert_eq!(bodies(&a), ["1", "2", "3", "4", "5"]);
        // ACKing the same delivery twice is unknown the second time.
        assert_eq!(ack(&f, "a", &a.frames()[2]), AckOutcome::Unknown);
        assert_eq!(ack(&f, "a", &a.frames()[3]), AckOutcome::Applied);
        assert_eq!(bodies(&a), ["1", "2", "3", "4", "5", "6"]);
    }

    #[test]
    fn a_cumulative_ack_settles_a_prefix_and_opens_the_window_for_as_many() {
        let f = fixture(QueueSemantics::Broadcast);
        let a = f.session("a", None);
        subscribe_window(&f, "a", "/topic/t", AckMode::Client, 3);
        for body in ["1", "2", "3", "4", "5", "6", "7"] {
            f.publish("/topic/t", body);
        }
        assert_eq!(bodies(&a).len(), 3);
        ack(&f, "a", &a.frames()[1]);
        assert_eq!(bodies(&a), ["1", "2", "3", "4", "5"]);
        ack(&f, "a", &a.frames()[4]);
        assert_eq!(bodies(&a), ["1", "2", "3", "4", "5", "6", "7"]);
        assert_eq!(ack(&f, "a", &a.frames()[0]), AckOutcome::Unknown);
    }

    #[test]
    fn the_byte_budget_keeps_queue_messages_stored_and_drops_broadcast_ones() {
        let f = fixture_with(StompConfig {
            queue_semantics: QueueSemantics::Competing,
            max_pending_ack_bytes: 250,
            ..StompConfig::default()
        });
        let a = f.session("a", None);
        subscribe_window(&f, "a", "/queue/q", AckMode::ClientIndividual, 100);
        let body = "x".repeat(100);
        for _ in 0..4 {
            f.publish("/queue/q", &body);
        }
        // Two fit (a message is its body plus its id); the rest stay in the queue.
        assert_eq!(a.frames().len(), 2);
        assert_eq!(f.broker.queue_depth("/queue/q"), 2);
        ack(&f, "a", &a.frames()[0]);
        assert_eq!(a.frames().len(), 3);
        assert_eq!(f.broker.queue_depth("/queue/q"), 1);
        let b = f.session("b", None);
        subscribe_window(&f, "b", "/topic/t", AckMode::ClientIndividual, 1);
        for _ in 0..4 {
            f.publish("/topic/t", &body);
        }
        // One is sent, one waits for the window, the budget refuses the other two.
        assert_eq!(b.frames().len(), 1);
        assert_eq!(f.stats.dropped_overflow.load(Ordering::Relaxed), 2);
        ack(&f, "b", &b.frames()[0]);
        assert_eq!(b.frames().len(), 2);
    }

    #[test]
    fn the_total_budget_is_shared_by_every_connection() {
        let f = fixture_with(StompConfig {
            max_total_pending_ack_bytes: 300,
            ..StompConfig::default()
        });
        let a = f.session("a", None);
        let b = f.session("b", None);
        subscribe_window(&f, "a", "/topic/t", AckMode::ClientIndividual, 100);
        subscribe_window(&f, "b", "/topic/t", AckMode::ClientIndividual, 100);
        let body = "x".repeat(100);
        for _ in 0..2 {
            f.publish("/topic/t", &body);
        }
        // Three deliveries of ~110 bytes exceed 300: a gets both, b only the first.
        assert_eq!(a.frames().len() + b.frames().len(), 2);
        ack(&f, "a", &a.frames()[0]);
        f.publish("/topic/t", &body);
        assert_eq!(a.frames().len() + b.frames().len(), 3);
    }

    #[test]
    fn message_id_acks_of_older_versions_find_their_delivery_by_index() {
        let f = fixture(QueueSemantics::Broadcast);
        let (sink, sender) = recording_sender();
        let out = Arc::new(Outbound::new(
            sender,
            Version::V1_1,
            Carriage::TextAndBinary,
            f.stats.clone(),
        ));
        f.broker.register_session("old", out, None);
        for id in ["1", "2"] {
            let request = SubscribeRequest {
                id: id.into(),
                target: "/topic/t".into(),
                shown: None,
                ack: AckMode::ClientIndividual,
                prefetch: Some(1),
                selector: None,
                headers: Vec::new(),
            };
            f.broker.subscribe("old", request).unwrap();
        }
        f.publish("/topic/t", "a");
        f.publish("/topic/t", "b");
        let frames = sink.frames_as(Version::V1_1);
        assert_eq!(frames.len(), 2);
        let message_id = frames[0].get("message-id").unwrap().to_owned();
        let by_id = |sub: Option<&str>| AckTarget::MessageId {
            message_id: message_id.clone(),
            subscription: sub.map(str::to_owned),
        };
        let outcome = f.broker.acknowledge("old", &by_id(Some("2")), AckKind::Ack);
        assert_eq!(outcome, AckOutcome::Applied);
        assert_eq!(sink.frames_as(Version::V1_1).len(), 3);
        let last = &sink.frames_as(Version::V1_1)[2];
        assert_eq!(last.get("subscription"), Some("2"));
        assert_eq!(
            f.broker.acknowledge("old", &by_id(Some("2")), AckKind::Ack),
            AckOutcome::Unknown
        );
        assert_eq!(
            f.broker.acknowledge("old", &by_id(None), AckKind::Ack),
            AckOutcome::Applied
        );
    }

    #[test]
    fn empty_unsubscribed_queues_are_forgotten_and_their_number_is_capped() {
        let f = fixture_with(StompConfig {
            queue_semantics: QueueSemantics::Competing,
            max_queues: 2,
            ..StompConfig::default()
        });
        let a = f.session("a", None);
        f.subscribe("a", "1", "/queue/kept", AckMode::Auto);
        // The subscribed queue delivers and stays (empty) while subscribed.
        f.publish("/queue/kept", "k");
        assert_eq!(bodies(&a), ["k"]);
        f.publish("/queue/stored", "s");
        f.publish("/queue/refused", "r");
        assert_eq!(f.broker.queue_depth("/queue/refused"), 0);
        assert_eq!(f.stats.dropped_queue_full.load(Ordering::Relaxed), 1);
        // Unsubscribing forgets the empty one, so a new one fits.
        assert!(f.broker.unsubscribe("a", "1"));
        f.publish("/queue/fresh", "f");
        assert_eq!(f.broker.queue_depth("/queue/fresh"), 1);
        // A stored queue is kept until drained by a subscriber, then forgotten.
        f.subscribe("a", "2", "/queue/stored", AckMode::Auto);
        assert!(f.broker.unsubscribe("a", "2"));
        f.publish("/queue/another", "x");
        assert_eq!(f.broker.queue_depth("/queue/another"), 1);
    }

    #[test]
    fn unknown_acks_are_counted() {
        let f = fixture(QueueSemantics::Broadcast);
        f.session("a", None);
        let outcome = f
            .broker
            .acknowledge("a", &AckTarget::Token("nope".into()), AckKind::Ack);
        assert_eq!(outcome, AckOutcome::Unknown);
        assert_eq!(f.stats.ack_unknown.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn patterns_never_see_other_sessions_user_destinations() {
        let f = fixture(QueueSemantics::Broadcast);
        let a = f.session("aaa", Some("alice"));
        let b = f.session("bbb", None);
        let request = SubscribeRequest {
            id: "u".into(),
            target: "/queue/x-useraaa".into(),
            shown: Some("/user/queue/x".into()),
            ack: AckMode::Auto,
            prefetch: None,
            selector: None,
            headers: Vec::new(),
        };
        f.broker.subscribe("aaa", request).unwrap();
        f.subscribe("bbb", "p", "/queue/**", AckMode::Auto);
        let message = f.broker.message(&[], Bytes::from_static(b"secret"));
        assert_eq!(f.broker.send_to_user("alice", "/queue/x", None, message), 1);
        assert_eq!(a.frames().len(), 1);
        assert_eq!(a.frames()[0].get("destination"), Some("/user/queue/x"));
        assert!(b.frames().is_empty());
    }

    #[test]
    fn subscribing_to_another_sessions_user_destination_is_denied() {
        let f = fixture(QueueSemantics::Broadcast);
        f.session("aaa", None);
        f.session("bbb", None);
        let request = SubscribeRequest {
            id: "1".into(),
            target: "/queue/x-useraaa".into(),
            shown: None,
            ack: AckMode::Auto,
            prefetch: None,
            selector: None,
            headers: Vec::new(),
        };
        let err = f.broker.subscribe("bbb", request).unwrap_err();
        assert!(matches!(err, BrokerError::AccessDenied(_)));
    }

    #[test]
    fn message_headers_are_filtered_and_escaped_once_per_version() {
        let headers = vec![
            ("receipt".to_string(), "r1".to_string()),
            ("x-foo".to_string(), "a:b".to_string()),
            ("message-id".to_string(), "fake".to_string()),
        ];
        let message = Published::new("m-1".into(), &headers, Bytes::from_static(b"hi"));
        let head = DeliveryHead {
            destination: "/topic/a",
            subscription: "s",
            ack: Some("7"),
            redelivered: Redelivered::No,
        };
        let (head_bytes, tail, _) = message.encode_for(&head, Version::V1_2);
        let bytes = [&head_bytes[..], &tail.bytes()[..]].concat();
        assert_eq!(
            &bytes[..],
            b"MESSAGE\ndestination:/topic/a\nmessage-id:m-1\nsubscription:s\nack:7\nredelivered:false\nx-foo:a\\cb\ncontent-length:2\n\nhi\0"
        );
        // Auto-ack fan-out frames do not carry `redelivered:false`.
        let auto = DeliveryHead { ack: None, ..head };
        let (head_bytes, again, _) = message.encode_for(&auto, Version::V1_2);
        assert!(Arc::ptr_eq(tail, again), "one tail for every delivery");
        let bytes = [&head_bytes[..], &again.bytes()[..]].concat();
        assert!(
            bytes.starts_with(
                b"MESSAGE\ndestination:/topic/a\nmessage-id:m-1\nsubscription:s\nx-foo"
            )
        );
    }

    /// Records what the broker reports to its engine.
    #[derive(Default)]
    struct RecordingEngine {
        calls: Mutex<Vec<String>>,
    }

    impl BrokerEngine for RecordingEngine {
        fn session_opened(&self, session: &str, user: Option<&str>) {
            self.note(format!("open {session} {user:?}"));
        }
        fn session_closed(&self, session: &str, user: Option<&str>) {
            self.note(format!("close {session} {user:?}"));
        }
        fn subscribed(&self, session: &str, _: Option<&str>, request: &SubscribeRequest) {
            self.note(format!("sub {session} {}", request.target));
        }
        fn unsubscribed(&self, session: &str, _: Option<&str>, request: &SubscribeRequest) {
            self.note(format!("unsub {session} {}", request.target));
        }
        fn published(&self, destination: &str, _: &Arc<Published>) {
            self.note(format!("pub {destination}"));
        }
        fn sent_to_user(&self, user: &str, destination: &str, _: &Arc<Published>) -> UserDelivery {
            self.note(format!("user {user} {destination}"));
            UserDelivery::Local
        }
        fn acked(&self, session: &str, _: Option<&str>, _: &SubscribeRequest, ids: &[&str]) {
            self.note(format!("ack {session} {}", ids.len()));
        }
        fn nacked(&self, session: &str, _: Option<&str>, _: &SubscribeRequest, ids: &[&str]) {
            self.note(format!("nack {session} {}", ids.join(",")));
        }
        fn serves_alone(&self, request: &SubscribeRequest) -> bool {
            request.target.starts_with("/queue/alone")
        }
    }

    #[test]
    fn a_subscription_the_engine_serves_alone_gets_only_what_the_engine_hands_it() {
        let f = fixture(QueueSemantics::Competing);
        let engine = Arc::new(RecordingEngine::default());
        f.broker.attach_engine(engine.clone()).unwrap();
        let a = f.session("aaa", None);
        let b = f.session("bbb", None);
        f.subscribe("aaa", "1", "/queue/alone", AckMode::Client);
        f.subscribe("bbb", "1", "/queue/alone", AckMode::Auto);
        // No local publish or fan-out reaches them (the engine's connection does).
        f.publish("/queue/alone", "local");
        f.broker.deliver_remote(
            "/queue/alone",
            f.broker.message(&[], Bytes::from_static(b"x")),
        );
        assert!(a.frames().is_empty() && b.frames().is_empty());
        for id in ["T_1", "T_2"] {
            let m = Arc::new(Published::new(id.into(), &[], Bytes::from_static(b"m")));
            assert!(f.broker.deliver_to_subscription("aaa", "1", &m, false));
        }
        let frames = a.frames();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].get("message-id"), Some("T_2"));
        // A cumulative NACK names both broker ids, oldest first.
        let token = frames[1].get("ack").unwrap().to_owned();
        engine.take();
        f.broker
            .acknowledge("aaa", &AckTarget::Token(token), AckKind::Nack);
        assert_eq!(engine.take(), ["nack aaa T_1,T_2"]);
        assert!(f.broker.unsubscribe("aaa", "1"));
        assert!(f.broker.unsubscribe("bbb", "1"));
    }

    impl RecordingEngine {
        fn note(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
    }

    #[test]
    fn the_engine_hears_local_traffic_but_never_what_it_delivered() {
        let f = fixture(QueueSemantics::Broadcast);
        let engine = Arc::new(RecordingEngine::default());
        f.broker.attach_engine(engine.clone()).unwrap();
        let a = f.session("aaa", Some("alice"));
        f.subscribe("aaa", "1", "/topic/t", AckMode::ClientIndividual);
        f.publish("/topic/t", "local");
        let remote = Arc::new(Published::new(
            "x-1".into(),
            &[],
            Bytes::from_static(b"remote"),
        ));
        f.broker.deliver_remote("/topic/t", remote.clone());
        f.broker.deliver_remote_user("alice", "/queue/n", remote);
        let token = a.frames()[0].get("ack").unwrap().to_owned();
        f.broker
            .acknowledge("aaa", &AckTarget::Token(token), AckKind::Ack);
        // Narrowed to the sending session (spec 7.5): not reported; to all her sessions: reported.
        let own = f.broker.message(&[], Bytes::from_static(b"self"));
        f.broker.send_to_user("alice", "/queue/n", Some("aaa"), own);
        let all = f.broker.message(&[], Bytes::from_static(b"all"));
        f.broker.send_to_user("alice", "/queue/n", None, all);
        f.broker.unregister_session("aaa");
        assert_eq!(
            engine.take(),
            [
                "open aaa Some(\"alice\")",
                "sub aaa /topic/t",
                "pub /topic/t",
                "ack aaa 1",
                "user alice /queue/n",
                "unsub aaa /topic/t",
                "close aaa Some(\"alice\")",
            ]
        );
        assert_eq!(a.frames().len(), 2, "the local and the remote message");
        assert!(
            f.broker.attach_engine(engine).is_err(),
            "one engine per broker"
        );
    }

    /// A sink whose first send blocks until the test releases it: a fan-out under way.
    struct GatedSink {
        inner: RecordingSink,
        entered: Mutex<Option<std::sync::mpsc::Sender<()>>>,
        release: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    }

    impl crate::session::SessionSink for GatedSink {
        fn send(&self, msg: crate::session::OutMessage) -> Result<(), crate::session::SendError> {
            if let Some(entered) = self.entered.lock().unwrap().take() {
                let _ = entered.send(());
                if let Some(release) = self.release.lock().unwrap().take() {
                    let _ = release.recv_timeout(std::time::Duration::from_secs(10));
                }
            }
            self.inner.send(msg)
        }
        fn close(&self, code: u16, reason: &str) {
            self.inner.close(code, reason)
        }
        fn is_closed(&self) -> bool {
            self.inner.is_closed()
        }
        fn queued_bytes(&self) -> usize {
            0
        }
    }

    type Gate = (
        Arc<GatedSink>,
        std::sync::mpsc::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    );

    impl Fixture {
        /// A session whose first delivery blocks: (sink, "entered" signal, release).
        fn gated_session(&self, id: &str) -> Gate {
            let (entered_tx, entered_rx) = std::sync::mpsc::channel();
            let (release_tx, release_rx) = std::sync::mpsc::channel();
            let sink = Arc::new(GatedSink {
                inner: RecordingSink::default(),
                entered: Mutex::new(Some(entered_tx)),
                release: Mutex::new(Some(release_rx)),
            });
            let out = Arc::new(Outbound::new(
                crate::stomp::testing::sender_for(sink.clone()),
                Version::V1_2,
                Carriage::TextAndBinary,
                self.stats.clone(),
            ));
            self.broker.register_session(id, out, None);
            (sink, entered_rx, release_tx)
        }
    }

    const WAIT: std::time::Duration = std::time::Duration::from_secs(5);

    #[test]
    fn a_fan_out_under_way_blocks_no_other_destination() {
        let f = Arc::new(fixture(QueueSemantics::Competing));
        let (_slow, entered, release) = f.gated_session("slow");
        f.subscribe("slow", "1", "/topic/a", AckMode::Auto);
        let b = f.session("b", None);
        let publisher = {
            let f = f.clone();
            std::thread::spawn(move || f.publish("/topic/a", "big"))
        };
        entered
            .recv_timeout(WAIT)
            .expect("the fan-out reached the slow session");
        // While that fan-out is stuck in a carrier, the rest of the broker answers.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let other = {
            let f = f.clone();
            std::thread::spawn(move || {
                f.subscribe("b", "1", "/topic/b", AckMode::Auto);
                f.subscribe("b", "2", "/queue/q", AckMode::ClientIndividual);
                f.publish("/topic/b", "hello");
                f.publish("/queue/q", "job");
                let _ = done_tx.send(());
            })
        };
        let answered = done_rx.recv_timeout(WAIT);
        release.send(()).unwrap();
        publisher.join().unwrap();
        other.join().unwrap();
        answered.expect("SUBSCRIBE and SEND elsewhere did not wait for the fan-out");
        assert_eq!(bodies(&b), ["hello", "job"]);
    }

    #[test]
    fn unsubscribe_waits_for_a_fan_out_under_way_which_then_skips_it() {
        let f = Arc::new(fixture(QueueSemantics::Broadcast));
        let (slow, entered, release) = f.gated_session("slow");
        f.subscribe("slow", "1", "/topic/a", AckMode::Auto);
        let late = f.session("late", None);
        f.subscribe("late", "1", "/topic/a", AckMode::Auto);
        let publisher = {
            let f = f.clone();
            std::thread::spawn(move || f.publish("/topic/a", "m1"))
        };
        entered.recv_timeout(WAIT).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let unsubscriber = {
            let f = f.clone();
            std::thread::spawn(move || {
                let existed = f.broker.unsubscribe("late", "1");
                let _ = done_tx.send(existed);
            })
        };
        // It cannot return while the fan-out that still lists it is under way.
        assert!(
            done_rx
                .recv_timeout(std::time::Duration::from_millis(300))
                .is_err()
        );
        release.send(()).unwrap();
        assert_eq!(done_rx.recv_timeout(WAIT), Ok(true));
        publisher.join().unwrap();
        unsubscriber.join().unwrap();
        f.publish("/topic/a", "m2");
        assert_eq!(bodies(&slow.inner), ["m1", "m2"]);
        assert!(
            late.frames().is_empty(),
            "the fan-out skipped the dead receiver"
        );
    }

    #[test]
    fn concurrent_publishers_to_one_destination_are_seen_in_one_order() {
        let f = Arc::new(fixture(QueueSemantics::Broadcast));
        let sinks: Vec<_> = (0..3)
            .map(|i| {
                let id = format!("s{i}");
                let sink = f.session(&id, None);
                f.subscribe(&id, "1", "/topic/o", AckMode::Auto);
                sink
            })
            .collect();
        let publishers: Vec<_> = (0..2)
            .map(|p| {
                let f = f.clone();
                std::thread::spawn(move || {
                    for i in 0..300 {
                        f.publish("/topic/o", &format!("{p}-{i}"));
                    }
                })
            })
            .collect();
        for publisher in publishers {
            publisher.join().unwrap();
        }
        let first = bodies(&sinks[0]);
        assert_eq!(first.len(), 600);
        for sink in &sinks[1..] {
            assert_eq!(bodies(sink), first);
        }
        for p in 0..2 {
            let own: Vec<_> = first
                .iter()
                .filter(|b| b.starts_with(&format!("{p}-")))
                .collect();
            let expected: Vec<String> = (0..300).map(|i| format!("{p}-{i}")).collect();
            assert_eq!(own, expected.iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn subscription_order_survives_removals_for_round_robin() {
        let f = fixture(QueueSemantics::Competing);
        let sinks: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|id| {
                let sink = f.session(id, None);
                f.subscribe(id, "1", "/queue/r", AckMode::Auto);
                sink
            })
            .collect();
        assert!(f.broker.unsubscribe("b", "1"));
        for i in 0..4 {
            f.publish("/queue/r", &format!("m{i}"));
        }
        assert_eq!(bodies(&sinks[0]), ["m0", "m2"]);
        assert!(sinks[1].frames().is_empty());
        assert_eq!(bodies(&sinks[2]), ["m1", "m3"]);
        f.subscribe("b", "1", "/queue/r", AckMode::Auto);
        for i in 4..7 {
            f.publish("/queue/r", &format!("m{i}"));
        }
        // The newcomer is last in the order, right after where the round stopped.
        assert_eq!(bodies(&sinks[1]), ["m4"]);
        assert_eq!(bodies(&sinks[0]), ["m0", "m2", "m5"]);
        assert_eq!(bodies(&sinks[2]), ["m1", "m3", "m6"]);
    }
}
