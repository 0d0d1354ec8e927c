//! The STOMP relay (`[stomp.relay]`): broker destinations served by an external STOMP broker
//! (RabbitMQ), attached to the embedded broker through its engine seam
//! ([`BrokerEngine`]), so the broker stays the one router.
//!
//! Shared mode: the node keeps `pool_size` connections to the external broker. Every
//! destination maps to one of them (by hash, so its messages keep their order) and is
//! subscribed there once, with `ack:auto`, while at least one local subscription wants it,
//! however many sessions subscribe. What the external broker sends comes back through
//! `Broker::deliver_remote` and is fanned out locally, encoded once, with the local
//! subscription's own ack mode and prefetch window. A client SEND (or an admin or backend
//! publish) to a relayed destination goes to the external broker only; it reaches local
//! subscribers when the broker delivers it.
//!
//! A subscription whose meaning lives at the external broker (client acks, durable, `x-*`
//! queue arguments), and in `per-session` mode everything a session does with relayed
//! destinations, goes over a connection of that session's own instead (`session.rs`):
//! the broker keeps such a subscription out of its fan-out ([`BrokerEngine::serves_alone`])
//! and delivers only what that connection receives for it.
//!
//! Not relayed: a session's own user destinations (`/queue/x-user<S>`, which live on their
//! node), and pattern subscriptions under a relayed prefix, which are refused (the external
//! broker has its own wildcard syntax).
//!
//! ```text
//!  broker ── interest ──▶ desired set per connection ──▶ connection task ── SUBSCRIBE ──▶ broker
//!  broker ── relay ─────▶ bounded queue per connection ──▶ connection task ── SEND ──────▶ broker
//!  broker ◀── deliver_remote ◀──────────────────────────── connection task ◀── MESSAGE ── broker
//! ```

mod connection;
mod session;

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use crate::stomp::StompConfig;
use crate::stomp::application::Completion;
use crate::stomp::broker::{Broker, Published, SubscribeRequest};
use crate::stomp::config::{RelayConfig, RelayMode};
use crate::stomp::destination::{is_pattern, user_suffix};
use crate::stomp::engine::{BrokerEngine, Refusal, UserDelivery};
use crate::stomp::message::AckMode;
use crate::stomp::presence::PresenceDirectory;
use session::{Link, Order};

pub use connection::Outgoing;

/// Counters of the relay, over its connections.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Connections to the external broker that are up.
    pub connected: AtomicU64,
    /// Times a connection was (re)established.
    pub connects: AtomicU64,
    /// Broker subscriptions made (one per destination per connection).
    pub subscribes: AtomicU64,
    /// Messages sent to the external broker.
    pub sent: AtomicU64,
    /// Messages received from it and handed to the local broker.
    pub received: AtomicU64,
    /// Publishes refused because a connection was down or its queue full.
    pub refused: AtomicU64,
    /// Sessions' own broker connections that are up.
    pub session_connected: AtomicU64,
    /// Sessions' own broker connections established.
    pub session_connects: AtomicU64,
    /// Sessions closed because their own broker connection failed or could not be made.
    pub session_failures: AtomicU64,
}

/// One pool connection as `/api/stats` and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionStatus {
    /// Whether it is up (the broker answered CONNECTED and it has not failed since).
    pub up: bool,
    /// Destinations local subscriptions want from it.
    pub destinations: usize,
    /// Of those, the ones the broker confirmed on the current connection.
    pub confirmed: usize,
    /// SENDs waiting for it.
    pub queued: usize,
}

/// The relay's state: where it relays to and each connection of its pool.
#[derive(Debug, Clone)]
pub struct RelayStatus {
    /// The external broker's address.
    pub broker: String,
    /// `shared` or `per-session`.
    pub mode: &'static str,
    /// Per pool connection, in pool order.
    pub connections: Vec<ConnectionStatus>,
    /// Sessions with a broker connection of their own.
    pub session_connections: usize,
}

/// What one broker connection should be subscribed to, and what it must send.
#[derive(Debug)]
struct Lane {
    /// Destination → local subscriptions wanting it.
    desired: Mutex<HashMap<String, usize>>,
    /// Wakes the connection task after the desired set changed.
    changed: Notify,
    /// SENDs waiting for the connection.
    outgoing: mpsc::Sender<Outgoing>,
    /// Whether the connection is up (CONNECTED received).
    up: AtomicBool,
    /// Set with every change of `desired`, so a SEND is never written before a SUBSCRIBE
    /// that preceded it.
    dirty: AtomicBool,
    /// Broker subscriptions (by destination) confirmed on the live connection.
    ready: Readiness,
}

/// Which broker subscriptions of one connection the broker confirmed (its RECEIPT for our
/// SUBSCRIBE), and the local SUBSCRIBEs whose RECEIPT waits for that. Keyed by destination
/// on a pool connection, by subscription id on a session's own.
#[derive(Debug, Default)]
struct Readiness {
    inner: Mutex<Confirm>,
}

#[derive(Debug, Default)]
struct Confirm {
    /// Confirmed on the current connection.
    live: HashSet<String>,
    /// Waiting SUBSCRIBEs by key, with when they started.
    waiters: HashMap<String, Vec<(Instant, Completion)>>,
}

impl Readiness {
    /// Whether `key` is confirmed.
    fn is_live(&self, key: &str) -> bool {
        lock(&self.inner).live.contains(key)
    }

    /// Answer `completion` once `key` is confirmed (now, when it is).
    fn when_live(&self, key: &str, completion: Completion) {
        let mut confirm = lock(&self.inner);
        if confirm.live.contains(key) {
            drop(confirm);
            return completion.accept();
        }
        confirm
            .waiters
            .entry(key.to_owned())
            .or_default()
            .push((Instant::now(), completion));
    }

    /// The broker confirmed `key`: it is live, and its waiters are answered.
    fn confirmed(&self, key: &str) {
        let waiters = {
            let mut confirm = lock(&self.inner);
            confirm.live.insert(key.to_owned());
            confirm.waiters.remove(key)
        };
        for (_, completion) in waiters.into_iter().flatten() {
            completion.accept();
        }
    }

    /// `key` is no longer subscribed (or the connection is gone: `None`, all).
    fn not_live(&self, key: Option<&str>) {
        let waiters = {
            let mut confirm = lock(&self.inner);
            match key {
                Some(k) => {
                    confirm.live.remove(k);
                    // Nobody here subscribes any more: nothing to wait for.
                    confirm.waiters.remove(k)
                }
                None => {
                    confirm.live.clear();
                    None
                }
            }
        };
        for (_, completion) in waiters.into_iter().flatten() {
            completion.accept();
        }
    }

    /// How many keys are confirmed.
    fn live_count(&self) -> usize {
        lock(&self.inner).live.len()
    }

    /// Answer waiters that waited `limit` or longer (the broker is slow or down: their
    /// RECEIPT goes out rather than hang) and forget abandoned ones; returns how many were
    /// answered early.
    fn expire_waiters(&self, limit: Duration) -> usize {
        let mut due = Vec::new();
        {
            let mut confirm = lock(&self.inner);
            confirm.waiters.retain(|_, list| {
                list.retain(|(_, c)| !c.is_abandoned());
                let mut i = 0;
                while i < list.len() {
                    if list[i].0.elapsed() >= limit {
                        due.push(list.remove(i).1);
                    } else {
                        i += 1;
                    }
                }
                !list.is_empty()
            });
        }
        let count = due.len();
        for completion in due {
            completion.accept();
        }
        count
    }
}

/// The relay attached to a broker.
pub struct Relay {
    /// The settings.
    config: RelayConfig,
    /// One lane per pool connection.
    lanes: Vec<Arc<Lane>>,
    /// Counters.
    stats: Arc<RelayStats>,
    /// Sessions' own broker connections, by STOMP session id.
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// Where their messages go.
    broker: std::sync::Weak<Broker>,
    /// How a session whose connection failed is closed.
    presence: Arc<dyn PresenceDirectory>,
    /// Where their tasks run (hooks are called from any thread).
    runtime: tokio::runtime::Handle,
    /// The largest frame accepted from the broker.
    max_frame: usize,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .field("lanes", &self.lanes)
            .field("links", &lock(&self.links).len())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Start the pool for `config`, fed into `broker` (inside a tokio runtime); `presence`
    /// closes a session whose own broker connection fails. None without `[stomp.relay]`. The
    /// caller attaches it to the broker (alone, or over the cluster link:
    /// [`Layered`](crate::stomp::engine::Layered)).
    pub fn start(
        stomp: &StompConfig,
        broker: &Arc<Broker>,
        presence: Arc<dyn PresenceDirectory>,
    ) -> Option<Arc<Relay>> {
        let config = stomp.relay.clone()?;
        let stats = Arc::new(RelayStats::default());
        let max_frame = stomp.message_size_limit.max(64 * 1024) * 4;
        let mut lanes = Vec::with_capacity(config.pool_size);
        for index in 0..config.pool_size {
            let (outgoing, queue) = mpsc::channel(config.queue);
            let lane = Arc::new(Lane {
                desired: Mutex::new(HashMap::new()),
                changed: Notify::new(),
                outgoing,
                up: AtomicBool::new(false),
                dirty: AtomicBool::new(false),
                ready: Readiness::default(),
            });
            let task = connection::Connection {
                index,
                config: config.clone(),
                lane: Arc::downgrade(&lane),
                queue,
                broker: Arc::downgrade(broker),
                stats: stats.clone(),
                max_frame,
            };
            tokio::spawn(task.run());
            lanes.push(lane);
        }
        tracing::info!(
            broker = %config.address,
            mode = config.mode.as_str(),
            pool_size = config.pool_size,
            prefixes = ?config.prefixes,
            "STOMP relay: these broker destinations are served by the external broker"
        );
        let relay = Arc::new(Relay {
            config,
            lanes,
            stats,
            links: Mutex::new(HashMap::new()),
            broker: Arc::downgrade(broker),
            presence,
            runtime: tokio::runtime::Handle::current(),
            max_frame,
        });
        if stomp.stats_log_period_s > 0 {
            let period = Duration::from_secs(stomp.stats_log_period_s);
            tokio::spawn(log_stats(Arc::downgrade(&relay), period));
        }
        Some(relay)
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<RelayStats> {
        &self.stats
    }

    /// The state of the pool now.
    pub fn status(&self) -> RelayStatus {
        let connections = self
            .lanes
            .iter()
            .map(|lane| ConnectionStatus {
                up: lane.up.load(Ordering::Relaxed),
                destinations: lock(&lane.desired).len(),
                confirmed: lane.ready.live_count(),
                queued: self.config.queue - lane.outgoing.capacity(),
            })
            .collect();
        RelayStatus {
            broker: self.config.address.to_string(),
            mode: self.config.mode.as_str(),
            connections,
            session_connections: lock(&self.links).len(),
        }
    }

    /// Whether a subscription gets the session's own broker connection: every relayed one
    /// in `per-session` mode; in `shared` mode the ones whose semantics live at the broker
    /// (client acks, durable or persistent subscriptions, `x-*` queue arguments).
    fn needs_own_connection(&self, request: &SubscribeRequest) -> bool {
        if is_pattern(&request.target) || !self.serves(&request.target) {
            return false;
        }
        if self.config.mode == RelayMode::PerSession || request.ack != AckMode::Auto {
            return true;
        }
        request.headers.iter().any(|(name, value)| {
            let name = name.to_ascii_lowercase();
            name.starts_with("x-")
                || (matches!(name.as_str(), "durable" | "persistent") && value == "true")
                || (name == "auto-delete" && value == "false")
        })
    }

    /// The session's own broker connection, started on first use.
    fn link(&self, session: &str) -> Arc<Link> {
        let mut links = lock(&self.links);
        if let Some(link) = links.get(session) {
            return link.clone();
        }
        let link = session::start(
            session,
            &self.config,
            self.broker.clone(),
            self.presence.clone(),
            self.stats.clone(),
            self.max_frame,
            &self.runtime,
        );
        links.insert(session.to_owned(), link.clone());
        link
    }

    fn existing_link(&self, session: &str) -> Option<Arc<Link>> {
        lock(&self.links).get(session).cloned()
    }

    /// Queue `order` for the session's connection; when its queue is full the session is
    /// closed (a frame it made cannot be dropped), and false is returned.
    fn order(&self, session: &str, link: &Link, order: Order) -> bool {
        match link.orders.try_send(order) {
            Ok(()) => true,
            // Its connection failed and the session is being closed already.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                session::close_session(
                    &*self.presence,
                    session,
                    format!(
                        "Broker unavailable: more than {} frames wait for the STOMP broker at {}",
                        self.config.queue, self.config.address
                    ),
                );
                false
            }
        }
    }

    /// Forward the client's ACKs or NACKs of a subscription on its own connection: in
    /// `client` mode one frame for the newest (the broker's are cumulative too).
    fn settle(&self, session: &str, request: &SubscribeRequest, ids: &[&str], ack: bool) {
        if !self.needs_own_connection(request) {
            return;
        }
        let Some(link) = self.existing_link(session) else {
            return;
        };
        let ids = match request.ack {
            AckMode::Client => ids.last().map_or(&[][..], std::slice::from_ref),
            _ => ids,
        };
        for id in ids {
            let id = (*id).to_owned();
            let order = if ack {
                Order::Ack { id }
            } else {
                Order::Nack { id }
            };
            if !self.order(session, &link, order) {
                return;
            }
        }
    }

    /// Whether `destination` is served by the external broker.
    fn serves(&self, destination: &str) -> bool {
        self.config.relays(destination) && user_suffix(destination).is_none()
    }

    /// The lane a destination always uses.
    fn lane(&self, destination: &str) -> &Arc<Lane> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        destination.hash(&mut hasher);
        &self.lanes[(hasher.finish() % self.lanes.len() as u64) as usize]
    }

    fn interest(&self, destination: &str, added: bool) {
        let lane = self.lane(destination);
        let mut desired = lock(&lane.desired);
        let changed = if added {
            let count = desired.entry(destination.to_owned()).or_insert(0);
            *count += 1;
            *count == 1
        } else {
            match desired.get_mut(destination) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    desired.remove(destination);
                    true
                }
                None => false,
            }
        };
        drop(desired);
        if changed {
            lane.dirty.store(true, Ordering::Release);
            lane.changed.notify_one();
        }
    }
}

impl BrokerEngine for Relay {
    fn session_opened(&self, _session: &str, _user: Option<&str>) {}

    fn session_closed(&self, session: &str, _user: Option<&str>) {
        // Dropping the link ends its connection (a DISCONNECT; the broker requeues what
        // was not ACKed).
        lock(&self.links).remove(session);
    }

    fn subscribed(&self, session: &str, _user: Option<&str>, request: &SubscribeRequest) {
        if self.needs_own_connection(request) {
            let link = self.link(session);
            let order = Order::Subscribe {
                id: request.id.clone(),
                destination: request.target.clone(),
                ack: request.ack,
                headers: request.headers.clone(),
            };
            self.order(session, &link, order);
        } else if !is_pattern(&request.target) && self.serves(&request.target) {
            self.interest(&request.target, true);
        }
    }

    fn unsubscribed(&self, session: &str, _user: Option<&str>, request: &SubscribeRequest) {
        if self.needs_own_connection(request) {
            if let Some(link) = self.existing_link(session) {
                link.ready.not_live(Some(&request.id));
                let id = request.id.clone();
                self.order(session, &link, Order::Unsubscribe { id });
            }
        } else if !is_pattern(&request.target) && self.serves(&request.target) {
            self.interest(&request.target, false);
        }
    }

    fn published(&self, _destination: &str, _message: &Arc<Published>) {}

    fn sent_to_user(&self, _: &str, _: &str, _: &Arc<Published>) -> UserDelivery {
        UserDelivery::Local
    }

    fn acked(&self, session: &str, _: Option<&str>, request: &SubscribeRequest, ids: &[&str]) {
        self.settle(session, request, ids, true);
    }

    fn nacked(&self, session: &str, _: Option<&str>, request: &SubscribeRequest, ids: &[&str]) {
        self.settle(session, request, ids, false);
    }

    fn serves_alone(&self, request: &SubscribeRequest) -> bool {
        self.needs_own_connection(request)
    }

    fn relays(&self, destination: &str) -> bool {
        self.serves(destination)
    }

    fn relay(
        &self,
        origin: Option<&str>,
        destination: &str,
        message: &Arc<Published>,
    ) -> Result<(), Refusal> {
        if let Some(problem) = destination_problem(destination) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::InvalidDestination(problem));
        }
        if self.config.mode == RelayMode::PerSession
            && let Some(session) = origin
        {
            let link = self.link(session);
            let order = Order::Send {
                destination: destination.to_owned(),
                message: message.clone(),
            };
            return match self.order(session, &link, order) {
                true => Ok(()),
                false => Err(Refusal::Unavailable(format!(
                    "this session's connection to the STOMP broker at {} failed or has more \
                     than {} frames waiting ([stomp.relay] queue)",
                    self.config.address, self.config.queue
                ))),
            };
        }
        let lane = self.lane(destination);
        let refused = |why: String| {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            Err(Refusal::Unavailable(why))
        };
        if !lane.up.load(Ordering::Relaxed) {
            return refused(format!(
                "the STOMP broker at {} is not connected (the relay keeps retrying)",
                self.config.address
            ));
        }
        let outgoing = Outgoing {
            destination: destination.to_owned(),
            message: message.clone(),
        };
        match lane.outgoing.try_send(outgoing) {
            Ok(()) => Ok(()),
            Err(_) => refused(format!(
                "the queue to the STOMP broker at {} is full ([stomp.relay] queue = {})",
                self.config.address, self.config.queue
            )),
        }
    }

    fn is_live(&self, session: &str, request: &SubscribeRequest) -> bool {
        if self.needs_own_connection(request) {
            return self
                .existing_link(session)
                .is_none_or(|link| link.ready.is_live(&request.id));
        }
        !self.serves(&request.target) || self.lane(&request.target).ready.is_live(&request.target)
    }

    fn when_live(&self, session: &str, request: &SubscribeRequest, completion: Completion) {
        if self.needs_own_connection(request) {
            return match self.existing_link(session) {
                Some(link) => link.ready.when_live(&request.id, completion),
                None => completion.accept(),
            };
        }
        if !self.serves(&request.target) {
            return completion.accept();
        }
        self.lane(&request.target)
            .ready
            .when_live(&request.target, completion);
    }

    fn check_subscription(&self, request: &SubscribeRequest) -> Result<(), String> {
        let target = &request.target;
        if !is_pattern(target)
            && self.serves(target)
            && let Some(problem) = destination_problem(target)
        {
            return Err(problem);
        }
        if is_pattern(target) {
            let literal = target
                .split(['*', '{'])
                .next()
                .unwrap_or_default()
                .trim_end_matches('/');
            if self.config.prefixes.iter().any(|p| {
                literal == p || literal.starts_with(&format!("{p}/")) || p.starts_with(literal)
            }) {
                return Err(format!(
                    "{target} is a pattern under a relayed prefix: the external broker \
                     serves those destinations and has its own wildcards (subscribe to a \
                     destination it understands, such as /exchange/amq.topic/a.*)"
                ));
            }
        }
        Ok(())
    }
}

/// Why RabbitMQ would refuse `destination` (it answers such a frame with ERROR and closes
/// the whole connection, which would cut every destination sharing it): `/topic/<key>`,
/// `/queue/<name>`, `/amq/queue/<name>` and `/exchange/<name>[/<key>]`, none of the parts
/// empty or holding another `/` (RabbitMQ's routing keys use `.`). Other prefixes pass.
fn destination_problem(destination: &str) -> Option<String> {
    let single = |kind: &str, rest: &str| {
        (rest.is_empty() || rest.contains('/')).then(|| {
            format!(
                "{destination} is not a destination the STOMP broker accepts: {kind} takes one \
                 non-empty name without '/' (RabbitMQ routing keys use '.', as in /topic/a.b)"
            )
        })
    };
    for kind in ["/topic", "/queue", "/amq/queue"] {
        if destination == kind {
            return single(kind, "");
        }
        if let Some(rest) = destination
            .strip_prefix(kind)
            .and_then(|r| r.strip_prefix('/'))
        {
            return single(kind, rest);
        }
    }
    if destination == "/exchange" {
        return single("/exchange", "");
    }
    let rest = destination.strip_prefix("/exchange/")?;
    let (exchange, key) = rest.split_once('/').unwrap_or((rest, ""));
    if exchange.is_empty() || key.contains('/') {
        return single("/exchange/<name>/<key>", "/");
    }
    None
}

/// Log the relay's counters every `period`, as the STOMP summary is logged.
async fn log_stats(relay: std::sync::Weak<Relay>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(relay) = relay.upgrade() else { return };
        let s = &relay.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        tracing::info!(
            "relay: connected={}/{} connects={} subscribes={} sent={} received={} refused={}",
            load(&s.connected),
            relay.lanes.len(),
            load(&s.connects),
            load(&s.subscribes),
            load(&s.sent),
            load(&s.received),
            load(&s.refused)
        );
    }
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

    #[test]
    fn destinations_rabbitmq_would_refuse_are_caught_first() {
        for ok in [
            "/topic/a.b.c",
            "/queue/jobs",
            "/amq/queue/q1",
            "/exchange/amq.direct",
            "/exchange/amq.topic/a.*",
            "/other/x/y",
        ] {
            assert_eq!(destination_problem(ok), None, "{ok}");
        }
        for bad in [
            "/topic",
            "/topic/",
            "/topic/a/b",
            "/queue/a/b",
            "/amq/queue/",
            "/exchange",
            "/exchange//k",
            "/exchange/x/a/b",
        ] {
            let problem = destination_problem(bad).unwrap_or_else(|| panic!("{bad} passed"));
            assert!(problem.starts_with(bad), "{problem}");
        }
    }
}
