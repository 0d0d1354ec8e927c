//! The adapter between the broker and the cluster engine: the one place that knows both
//! [`stomp::Broker`](crate::stomp::Broker) and [`cluster`](crate::cluster), as `server.rs`
//! is the one place that knows carriers and apps.
//!
//! It implements the broker's [`BrokerEngine`] seam: local interest becomes Redis interest,
//! local publishes are bridged, and a task feeds what other nodes publish back into the
//! broker's own delivery calls (`deliver_remote`, `deliver_remote_user`). What crosses nodes:
//!
//! * literal destinations starting with `/`, except a session's own user destinations
//!   (`/queue/x-user<S>`: a session lives on one node; users are reached through their user
//!   channel) and, with `queue_semantics = "competing"`, `/queue` destinations, which are
//!   one logical queue across nodes instead ([`queue_link`], over
//!   [`cluster::queues`](crate::cluster::queues)): a SEND appends to it, and each message
//!   goes to one subscriber on one node;
//! * pattern subscriptions, through [`cluster::glob`](crate::cluster::glob);
//! * `/user/{name}/...` messages, on the user's channel, to every node where the user has a
//!   session.
//!
//! It also owns the durable inbox's delivery (`[cluster.inbox]`): a message to an inbox
//! destination is stored first, then delivered with its stored id as `message-id`; a
//! subscription to an inbox destination first gets the user's unsettled messages, then the
//! live ones, in order (live messages arriving meanwhile wait, and duplicates by id are
//! dropped). In cluster mode the replay reads the store only once Redis has confirmed this
//! node's subscription to the user's channel: a message stored after that read is sure to
//! arrive live, one stored before it is in the read, so none falls between the two. An
//! `ack:auto` delivery or a client ACK settles a message. Deliveries to inbox
//! subscriptions go through one lock, taken before the broker's, so they stay in order; the
//! broker's callbacks never take it (they hold the broker's lock).

mod queue_link;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::cluster::inbox::{InboxStore, MemoryInbox, RedisInbox, stream_id};
use crate::cluster::presence::Presence;
use crate::cluster::stats::summary;
use crate::cluster::{
    ClusterConfig, ClusterEngine, ClusterError, ClusterHandle, Inbound, InboxConfig, Message, Route,
};
use crate::stomp::broker::{AckMode, Broker, Published, SubscribeRequest};
use crate::stomp::destination::{is_pattern, user_suffix};
use crate::stomp::engine::{BrokerEngine, Refusal, UserDelivery};
use crate::stomp::{QueueSemantics, StompConfig};
use queue_link::QueueLink;

/// The broker's engine: the cluster bridge, presence and the inbox, as configured.
pub struct ClusterLink {
    /// The broker fed by this link (weak: the broker owns the link).
    broker: Weak<Broker>,
    /// The Redis engine, in cluster mode.
    cluster: Option<ClusterHandle>,
    /// Cluster-wide presence, in cluster mode.
    presence: Option<Presence>,
    /// The durable inbox, when configured.
    inbox: Option<Arc<InboxLink>>,
    /// The pattern separator.
    separator: char,
    /// Whether `/queue` destinations are competing queues.
    competing: bool,
    /// The competing queues shared by the cluster, in cluster mode with competing queues.
    queues: Option<Arc<QueueLink>>,
}

impl std::fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLink")
            .field("node", &self.cluster.as_ref().map(ClusterHandle::node_id))
            .field("inbox", &self.inbox.is_some())
            .field("shared_queues", &self.queues.is_some())
            .finish_non_exhaustive()
    }
}

/// Counters of the inbox.
#[derive(Debug, Default)]
pub struct InboxStats {
    /// Messages stored.
    pub stored: AtomicU64,
    /// Messages delivered without being stored (the store failed or its queue was full).
    pub unstored: AtomicU64,
    /// Stored messages delivered from a replay on subscribe.
    pub replayed: AtomicU64,
}

impl InboxStats {
    /// Every counter by name, for the log, `/api/stats` and `/metrics`.
    pub fn counters(&self) -> [(&'static str, &AtomicU64); 3] {
        [
            ("stored", &self.stored),
            ("unstored", &self.unstored),
            ("replayed", &self.replayed),
        ]
    }
}

impl ClusterLink {
    /// Start what `config` asks for, fed into `broker`; None when it asks for nothing (no
    /// Redis, no inbox). The caller attaches it to the broker (alone, or under the relay:
    /// [`Layered`](crate::stomp::engine::Layered)). Must run inside a tokio runtime.
    pub fn start(
        config: &ClusterConfig,
        stomp: &StompConfig,
        broker: &Arc<Broker>,
    ) -> Result<Option<Arc<ClusterLink>>, ClusterError> {
        if config.redis.is_none() && config.inbox.is_none() {
            return Ok(None);
        }
        let (cluster, inbound) = match config.redis {
            Some(_) => {
                let (handle, inbound) = ClusterEngine::start(config)?;
                (Some(handle), Some(inbound))
            }
            None => (None, None),
        };
        let presence = cluster.as_ref().map(|c| {
            Presence::start(
                c,
                Duration::from_secs(config.presence_ttl_s),
                Duration::from_secs(config.presence_heartbeat_s),
            )
        });
        let inbox = config.inbox.as_ref().map(|inbox| {
            InboxLink::start(
                inbox,
                stomp,
                cluster.as_ref(),
                config.max_envelope_bytes,
                Arc::downgrade(broker),
            )
        });
        let competing = stomp.queue_semantics == QueueSemantics::Competing;
        let queues = cluster.as_ref().filter(|_| competing).map(|c| {
            QueueLink::start(
                c,
                Arc::downgrade(broker),
                config.outbound_queue,
                stomp.max_queue_messages,
                Duration::from_millis(config.queue_reclaim_ms),
            )
        });
        let link = Arc::new(ClusterLink {
            broker: Arc::downgrade(broker),
            cluster,
            presence,
            inbox,
            separator: stomp.path_separator,
            competing,
            queues,
        });
        if let Some(inbound) = inbound {
            tokio::spawn(feed_inbound(Arc::downgrade(&link), inbound));
        }
        if stomp.stats_log_period_s > 0 {
            let period = Duration::from_secs(stomp.stats_log_period_s);
            tokio::spawn(log_stats(Arc::downgrade(&link), period));
        }
        Ok(Some(link))
    }

    /// The Redis engine, in cluster mode.
    pub fn cluster(&self) -> Option<&ClusterHandle> {
        self.cluster.as_ref()
    }

    /// Cluster-wide presence, in cluster mode.
    pub fn presence(&self) -> Option<&Presence> {
        self.presence.as_ref()
    }

    /// Inbox counters, when an inbox is configured.
    pub fn inbox_stats(&self) -> Option<&InboxStats> {
        self.inbox.as_ref().map(|i| &i.stats)
    }

    /// The shared queues' counters, in cluster mode with competing queues.
    pub fn queue_stats(&self) -> Option<&crate::cluster::queues::QueueStats> {
        self.queues.as_ref().and_then(|q| q.stats())
    }

    /// Whether a literal destination crosses nodes as pub/sub.
    fn bridged(&self, destination: &str) -> bool {
        destination.starts_with('/')
            && user_suffix(destination).is_none()
            && !(self.competing && is_queue(destination))
    }

    /// The shared queue `target` is, if it is one (a literal `/queue` destination with
    /// competing queues in cluster mode).
    fn shared_queue(&self, target: &str) -> Option<&Arc<QueueLink>> {
        let queues = self.queues.as_ref()?;
        (is_queue(target) && user_suffix(target).is_none() && !is_pattern(target)).then_some(queues)
    }

    fn interest(&self, request: &SubscribeRequest, added: bool) {
        let Some(cluster) = &self.cluster else { return };
        let target = &request.target;
        if is_pattern(target) {
            match added {
                true => cluster.pattern_interest_added(target, self.separator),
                false => cluster.pattern_interest_removed(target, self.separator),
            }
        } else if self.bridged(target) {
            match added {
                true => cluster.interest_added(target),
                false => cluster.interest_removed(target),
            }
        }
    }
}

impl BrokerEngine for ClusterLink {
    fn session_opened(&self, session: &str, user: Option<&str>) {
        let Some(user) = user else { return };
        if let Some(cluster) = &self.cluster {
            cluster.user_interest_added(user);
        }
        if let Some(presence) = &self.presence {
            presence.join(user, session);
        }
    }

    fn session_closed(&self, session: &str, user: Option<&str>) {
        let Some(user) = user else { return };
        if let Some(cluster) = &self.cluster {
            cluster.user_interest_removed(user);
        }
        if let Some(presence) = &self.presence {
            presence.leave(user, session);
        }
    }

    fn subscribed(&self, session: &str, user: Option<&str>, request: &SubscribeRequest) {
        if let Some(queues) = self.shared_queue(&request.target) {
            return queues.subscribed(session, request);
        }
        if let (Some(inbox), Some(user)) = (&self.inbox, user)
            && let Some(actual) = inbox.actual_of(request)
        {
            inbox.subscribed(session, user, actual, request);
            return;
        }
        self.interest(request, true);
    }

    fn unsubscribed(&self, session: &str, user: Option<&str>, request: &SubscribeRequest) {
        if let Some(queues) = self.shared_queue(&request.target) {
            return queues.unsubscribed(session, request);
        }
        if let (Some(inbox), Some(user)) = (&self.inbox, user)
            && let Some(actual) = inbox.actual_of(request)
        {
            inbox.unsubscribed(session, user, actual, &request.id);
            return;
        }
        self.interest(request, false);
    }

    fn published(&self, destination: &str, message: &Arc<Published>) {
        if let Some(cluster) = &self.cluster
            && self.bridged(destination)
        {
            // Counted by the engine when refused; local delivery goes on regardless.
            let _ = cluster.publish(destination, to_message(message));
        }
    }

    fn sent_to_user(
        &self,
        user: &str,
        destination: &str,
        message: &Arc<Published>,
    ) -> UserDelivery {
        if let Some(inbox) = &self.inbox
            && inbox.destinations.contains(destination)
        {
            return inbox.accept(user, destination, message);
        }
        if let Some(cluster) = &self.cluster {
            let _ = cluster.publish_to_user(user, destination, to_message(message));
        }
        UserDelivery::Local
    }

    fn acked(
        &self,
        session: &str,
        user: Option<&str>,
        request: &SubscribeRequest,
        message_ids: &[&str],
    ) {
        if let Some(queues) = self.shared_queue(&request.target) {
            return queues.settled(session, request, message_ids, true);
        }
        if let (Some(inbox), Some(user)) = (&self.inbox, user)
            && let Some(actual) = inbox.actual_of(request)
        {
            for id in message_ids {
                inbox.queue(Op::Settle {
                    user: user.to_owned(),
                    destination: actual.to_owned(),
                    id: (*id).to_owned(),
                });
            }
        }
    }

    fn nacked(&self, session: &str, _: Option<&str>, request: &SubscribeRequest, ids: &[&str]) {
        if let Some(queues) = self.shared_queue(&request.target) {
            queues.settled(session, request, ids, false);
        }
    }

    fn serves_alone(&self, request: &SubscribeRequest) -> bool {
        self.shared_queue(&request.target).is_some()
    }

    fn check_subscription(&self, request: &SubscribeRequest) -> Result<(), String> {
        match self.shared_queue(&request.target).is_some() && request.selector.is_some() {
            true => Err(format!(
                "selectors are not supported on competing queues ({} is shared by the \
                 cluster's nodes)",
                request.target
            )),
            false => Ok(()),
        }
    }

    fn relays(&self, destination: &str) -> bool {
        self.shared_queue(destination).is_some()
    }

    fn relay(
        &self,
        _origin: Option<&str>,
        destination: &str,
        message: &Arc<Published>,
    ) -> Result<(), Refusal> {
        let Some(queues) = self.shared_queue(destination) else {
            return Ok(());
        };
        queues
            .append(destination, to_message(message))
            .map_err(|e| match e {
                crate::cluster::PublishError::Full => Refusal::Unavailable(format!(
                    "the queue to Redis is full ([cluster] outbound_queue): {destination} \
                     cannot take the message now"
                )),
                crate::cluster::PublishError::TooLarge => Refusal::Unavailable(format!(
                    "the message is larger than [cluster] max_envelope_bytes, and {destination} \
                     is a queue shared through Redis"
                )),
            })
    }
}

/// Whether `destination` is a `/queue` destination.
fn is_queue(destination: &str) -> bool {
    destination.starts_with("/queue/") || destination == "/queue"
}

/// Deliver what other nodes publish, until the engine stops or the link is dropped.
async fn feed_inbound(link: Weak<ClusterLink>, mut inbound: mpsc::Receiver<Inbound>) {
    while let Some(Inbound { route, message }) = inbound.recv().await {
        let Some(link) = link.upgrade() else { return };
        let Some(broker) = link.broker.upgrade() else {
            return;
        };
        let published = Arc::new(Published::new(message.id, &message.headers, message.body));
        match route {
            Route::Destination(destination) => {
                broker.deliver_remote(&destination, published);
            }
            Route::User { user, destination } => match &link.inbox {
                Some(inbox) if inbox.destinations.contains(&destination) => {
                    inbox.deliver_live(&broker, &user, &destination, &published);
                }
                _ => {
                    broker.deliver_remote_user(&user, &destination, published);
                }
            },
        }
    }
}

/// Log the cluster and inbox counters every `period`, as the STOMP summary is logged.
async fn log_stats(link: Weak<ClusterLink>, period: Duration) {
    let mut ticker = tokio::time::interval(period);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(link) = link.upgrade() else { return };
        if let Some(cluster) = &link.cluster {
            tracing::info!(node = %cluster.node_id(), "{}", cluster.stats().summary());
        }
        if let Some(q) = link.queue_stats() {
            tracing::info!("{}", summary("shared queues:", &q.counters()));
        }
        if let Some(inbox) = link.inbox_stats() {
            tracing::info!("{}", summary("inbox:", &inbox.counters()));
        }
    }
}

fn to_message(message: &Published) -> Message {
    Message {
        id: message.message_id().to_owned(),
        headers: message.headers().to_vec(),
        body: message.body().clone(),
    }
}

/// Work for the inbox task, in order.
#[derive(Debug)]
enum Op {
    /// Store, then deliver.
    Append {
        user: String,
        destination: String,
        message: Arc<Published>,
    },
    /// Mark settled.
    Settle {
        user: String,
        destination: String,
        id: String,
    },
}

/// One local subscription to an inbox destination.
#[derive(Debug)]
struct InboxSub {
    /// Its session.
    session: String,
    /// Its subscription id.
    id: String,
    /// Its ack mode (auto settles on delivery).
    ack: AckMode,
    /// Live messages that arrived while its replay ran; None once live.
    waiting: Option<Vec<Arc<Published>>>,
    /// The highest stored id its replay delivered: a live copy of one at or below it (its
    /// publish crossed Redis after the replay read the store) is a duplicate.
    replayed: Option<(u64, u64)>,
}

/// The inbox's side of the link.
struct InboxLink {
    /// Inbox destinations below the user prefix (`/queue/notify`).
    destinations: HashSet<String>,
    /// The user prefix without its trailing `/` (`/user`).
    user_prefix: String,
    /// Where messages are kept.
    store: Arc<InboxStore>,
    /// The Redis engine, in cluster mode: live messages come through the user's channel.
    cluster: Option<ClusterHandle>,
    /// Work for the inbox task.
    ops: mpsc::Sender<Op>,
    /// Local inbox subscriptions by (user, destination).
    subs: Mutex<HashMap<(String, String), Vec<InboxSub>>>,
    /// Held while delivering to inbox subscriptions, so they stay in order (see the module
    /// comment for the lock order).
    delivering: Mutex<()>,
    /// The broker.
    broker: Weak<Broker>,
    /// Bound on messages waiting for a replay to finish.
    max_waiting: usize,
    /// Counters.
    stats: InboxStats,
}

impl InboxLink {
    fn start(
        config: &InboxConfig,
        stomp: &StompConfig,
        cluster: Option<&ClusterHandle>,
        max_envelope: usize,
        broker: Weak<Broker>,
    ) -> Arc<InboxLink> {
        let user_prefix = stomp.user_prefix();
        let trimmed = user_prefix.trim_end_matches('/').to_owned();
        let ttl = Duration::from_secs(config.ttl_s);
        let store = match cluster {
            Some(c) => InboxStore::Redis(RedisInbox::new(
                c.redis(),
                c.naming().key("inbox:"),
                config.max_messages,
                ttl,
                max_envelope,
            )),
            None => InboxStore::Memory(MemoryInbox::new(config.max_messages, ttl)),
        };
        let (ops, queue) = mpsc::channel(config.queue);
        let link = Arc::new(InboxLink {
            destinations: config
                .destinations
                .iter()
                .filter_map(|d| d.strip_prefix(&trimmed).map(str::to_owned))
                .collect(),
            user_prefix: trimmed,
            store: Arc::new(store),
            cluster: cluster.cloned(),
            ops,
            subs: Mutex::new(HashMap::new()),
            delivering: Mutex::new(()),
            broker,
            max_waiting: config.max_messages,
            stats: InboxStats::default(),
        });
        tokio::spawn(run_ops(Arc::downgrade(&link), queue, cluster.cloned()));
        link
    }

    /// The inbox destination (`/queue/notify`) a subscription is to, if it is one.
    fn actual_of<'a>(&self, request: &'a SubscribeRequest) -> Option<&'a str> {
        let shown = request.shown.as_deref()?;
        let actual = shown.strip_prefix(&self.user_prefix)?;
        self.destinations.contains(actual).then_some(actual)
    }

    fn queue(&self, op: Op) -> bool {
        self.ops.try_send(op).is_ok()
    }

    fn accept(&self, user: &str, destination: &str, message: &Arc<Published>) -> UserDelivery {
        let op = Op::Append {
            user: user.to_owned(),
            destination: destination.to_owned(),
            message: message.clone(),
        };
        if self.queue(op) {
            return UserDelivery::Taken;
        }
        self.stats.unstored.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            user,
            destination,
            "inbox queue full: message delivered without being stored"
        );
        UserDelivery::Local
    }

    fn subscribed(
        self: &Arc<Self>,
        session: &str,
        user: &str,
        actual: &str,
        request: &SubscribeRequest,
    ) {
        lock(&self.subs)
            .entry((user.to_owned(), actual.to_owned()))
            .or_default()
            .push(InboxSub {
                session: session.to_owned(),
                id: request.id.clone(),
                ack: request.ack,
                waiting: Some(Vec::new()),
                replayed: None,
            });
        let link = self.clone();
        let (session, user, actual, id) = (
            session.to_owned(),
            user.to_owned(),
            actual.to_owned(),
            request.id.clone(),
        );
        tokio::spawn(async move { link.replay(&session, &user, &actual, &id).await });
    }

    fn unsubscribed(&self, session: &str, user: &str, actual: &str, id: &str) {
        let mut subs = lock(&self.subs);
        let key = (user.to_owned(), actual.to_owned());
        if let Some(list) = subs.get_mut(&key) {
            list.retain(|s| !(s.session == session && s.id == id));
            if list.is_empty() {
                subs.remove(&key);
            }
        }
    }

    /// Deliver the unsettled messages to a new subscription, then what arrived meanwhile.
    async fn replay(&self, session: &str, user: &str, actual: &str, id: &str) {
        if let Some(cluster) = &self.cluster
            && !cluster.user_channel_live(user, LIVE_WAIT).await
        {
            tracing::warn!(
                session,
                user,
                "Redis has not confirmed the user's channel; replaying anyway (a message stored meanwhile comes with the next subscription)"
            );
        }
        let stored = match self.store.unsettled(user, actual).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(session, user, error = %e, "inbox replay failed; live messages still arrive");
                Vec::new()
            }
        };
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        let last = stored.iter().filter_map(|m| stream_id(&m.id)).max();
        let _order = lock(&self.delivering);
        let (waiting, ack) = {
            let mut subs = lock(&self.subs);
            let Some(sub) = subs
                .get_mut(&(user.to_owned(), actual.to_owned()))
                .and_then(|list| list.iter_mut().find(|s| s.session == session && s.id == id))
            else {
                return;
            };
            sub.replayed = last;
            (sub.waiting.take().unwrap_or_default(), sub.ack)
        };
        for message in stored {
            let published = Arc::new(Published::new(message.id, &message.headers, message.body));
            if self.deliver_one(&broker, session, id, ack, user, actual, &published) {
                self.stats.replayed.fetch_add(1, Ordering::Relaxed);
            }
        }
        for message in waiting {
            if !replayed_already(last, &message) {
                self.deliver_one(&broker, session, id, ack, user, actual, &message);
            }
        }
    }

    /// Deliver a live inbox message to every local subscription of the user there.
    fn deliver_live(&self, broker: &Broker, user: &str, actual: &str, message: &Arc<Published>) {
        let _order = lock(&self.delivering);
        let targets: Vec<(String, String, AckMode)> = {
            let mut subs = lock(&self.subs);
            let Some(list) = subs.get_mut(&(user.to_owned(), actual.to_owned())) else {
                return;
            };
            let mut targets = Vec::new();
            for sub in list.iter_mut() {
                match &mut sub.waiting {
                    Some(waiting) if waiting.len() < self.max_waiting => {
                        waiting.push(message.clone())
                    }
                    // Beyond the bound the message stays unsettled in the store: the next
                    // subscription replays it.
                    Some(_) => {}
                    None if replayed_already(sub.replayed, message) => {}
                    None => targets.push((sub.session.clone(), sub.id.clone(), sub.ack)),
                }
            }
            targets
        };
        for (session, id, ack) in targets {
            self.deliver_one(broker, &session, &id, ack, user, actual, message);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn deliver_one(
        &self,
        broker: &Broker,
        session: &str,
        id: &str,
        ack: AckMode,
        user: &str,
        actual: &str,
        message: &Arc<Published>,
    ) -> bool {
        let delivered = broker.deliver_to_subscription(session, id, message, false);
        if delivered && ack == AckMode::Auto {
            self.queue(Op::Settle {
                user: user.to_owned(),
                destination: actual.to_owned(),
                id: message.message_id().to_owned(),
            });
        }
        delivered
    }
}

/// How long a replay waits for Redis to confirm the user's channel.
const LIVE_WAIT: Duration = Duration::from_secs(3);

/// Whether `message` is a stored one at or below the highest id a replay delivered.
fn replayed_already(last: Option<(u64, u64)>, message: &Published) -> bool {
    match (last, stream_id(message.message_id())) {
        (Some(last), Some(id)) => id <= last,
        _ => false,
    }
}

/// The inbox task: stores, settles and delivers stored messages in order.
async fn run_ops(
    link: Weak<InboxLink>,
    mut queue: mpsc::Receiver<Op>,
    cluster: Option<ClusterHandle>,
) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, 256).await > 0 {
        let Some(link) = link.upgrade() else { return };
        let mut appends = Vec::new();
        let mut settles = Vec::new();
        for op in batch.drain(..) {
            match op {
                Op::Append {
                    user,
                    destination,
                    message,
                } => appends.push((user, destination, message)),
                Op::Settle {
                    user,
                    destination,
                    id,
                } => settles.push((user, destination, id)),
            }
        }
        if !appends.is_empty() {
            let items: Vec<(String, String, Message)> = appends
                .iter()
                .map(|(u, d, m)| (u.clone(), d.clone(), to_message(m)))
                .collect();
            let stored = link.store.append(&items).await;
            let Some(broker) = link.broker.upgrade() else {
                return;
            };
            let ids = match stored {
                Ok(ids) => {
                    link.stats
                        .stored
                        .fetch_add(ids.len() as u64, Ordering::Relaxed);
                    ids.into_iter().map(Some).collect()
                }
                Err(e) => {
                    link.stats
                        .unstored
                        .fetch_add(items.len() as u64, Ordering::Relaxed);
                    tracing::warn!(error = %e, count = items.len(), "inbox store failed: messages delivered to online sessions only");
                    vec![None; items.len()]
                }
            };
            for ((user, destination, original), id) in appends.into_iter().zip(ids) {
                let message = match id {
                    Some(id) => Arc::new(Published::new(
                        id,
                        original.headers(),
                        original.body().clone(),
                    )),
                    None => original,
                };
                link.deliver_live(&broker, &user, &destination, &message);
                if let Some(cluster) = &cluster {
                    let _ = cluster.publish_to_user(&user, &destination, to_message(&message));
                }
            }
        }
        if !settles.is_empty()
            && let Err(e) = link.store.settle(&settles).await
        {
            tracing::warn!(error = %e, "inbox settle failed: those messages will be delivered again");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
