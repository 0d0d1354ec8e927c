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

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use crate::stomp::StompConfig;
use crate::stomp::application::Completion;
use crate::stomp::broker::{Broker, Published, SubscribeRequest};
use crate::stomp::config::RelayConfig;
use crate::stomp::destination::{is_pattern, user_suffix};
use crate::stomp::engine::{BrokerEngine, Refusal, UserDelivery};

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
    /// `shared`.
    pub mode: &'static str,
    /// Per pool connection, in pool order.
    pub connections: Vec<ConnectionStatus>,
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
    /// Broker subscriptions confirmed on the live connection, and SUBSCRIBEs waiting.
    confirm: Mutex<Confirm>,
}

/// Which destinations the broker confirmed (its RECEIPT for our SUBSCRIBE), and the local
/// SUBSCRIBEs whose RECEIPT waits for that.
#[derive(Debug, Default)]
struct Confirm {
    /// Confirmed on the current connection.
    live: HashSet<String>,
    /// Waiting SUBSCRIBEs by destination, with when they started.
    waiters: HashMap<String, Vec<(Instant, Completion)>>,
}

impl Lane {
    /// The broker confirmed `destination`: it is live, and its waiters are answered.
    fn confirmed(&self, destination: &str) {
        let waiters = {
            let mut confirm = lock(&self.confirm);
            confirm.live.insert(destination.to_owned());
            confirm.waiters.remove(destination)
        };
        for (_, completion) in waiters.into_iter().flatten() {
            completion.accept();
        }
    }

    /// `destination` is no longer subscribed (or the connection is gone: `None`, all).
    fn not_live(&self, destination: Option<&str>) {
        let waiters = {
            let mut confirm = lock(&self.confirm);
            match destination {
                Some(d) => {
                    confirm.live.remove(d);
                    // Nobody here subscribes any more: nothing to wait for.
                    confirm.waiters.remove(d)
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

    /// Answer waiters that waited `limit` or longer (the broker is slow or down: their
    /// RECEIPT goes out rather than hang) and forget abandoned ones; returns how many were
    /// answered early.
    fn expire_waiters(&self, limit: Duration) -> usize {
        let mut due = Vec::new();
        {
            let mut confirm = lock(&self.confirm);
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
#[derive(Debug)]
pub struct Relay {
    /// The settings.
    config: RelayConfig,
    /// One lane per pool connection.
    lanes: Vec<Arc<Lane>>,
    /// Counters.
    stats: Arc<RelayStats>,
}

impl Relay {
    /// Start the pool for `config` and attach it to `broker` (inside a tokio runtime).
    /// Returns None when the broker already has an engine.
    pub fn attach(stomp: &StompConfig, broker: &Arc<Broker>) -> Option<Arc<Relay>> {
        let config = stomp.relay.clone()?;
        let stats = Arc::new(RelayStats::default());
        let mut lanes = Vec::with_capacity(config.pool_size);
        for index in 0..config.pool_size {
            let (outgoing, queue) = mpsc::channel(config.queue);
            let lane = Arc::new(Lane {
                desired: Mutex::new(HashMap::new()),
                changed: Notify::new(),
                outgoing,
                up: AtomicBool::new(false),
                dirty: AtomicBool::new(false),
                confirm: Mutex::new(Confirm::default()),
            });
            let task = connection::Connection {
                index,
                config: config.clone(),
                lane: Arc::downgrade(&lane),
                queue,
                broker: Arc::downgrade(broker),
                stats: stats.clone(),
                max_frame: stomp.message_size_limit.max(64 * 1024) * 4,
            };
            tokio::spawn(task.run());
            lanes.push(lane);
        }
        tracing::info!(
            broker = %config.address,
            pool_size = config.pool_size,
            prefixes = ?config.prefixes,
            "STOMP relay: these broker destinations are served by the external broker"
        );
        let relay = Arc::new(Relay {
            config,
            lanes,
            stats,
        });
        if broker.attach_engine(relay.clone()).is_err() {
            tracing::warn!("the broker already has an engine; the STOMP relay is not attached");
            return None;
        }
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
                confirmed: lock(&lane.confirm).live.len(),
                queued: self.config.queue - lane.outgoing.capacity(),
            })
            .collect();
        RelayStatus {
            broker: self.config.address.to_string(),
            mode: "shared",
            connections,
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

    fn session_closed(&self, _session: &str, _user: Option<&str>) {}

    fn subscribed(&self, _session: &str, _user: Option<&str>, request: &SubscribeRequest) {
        if !is_pattern(&request.target) && self.serves(&request.target) {
            self.interest(&request.target, true);
        }
    }

    fn unsubscribed(&self, _session: &str, _user: Option<&str>, request: &SubscribeRequest) {
        if !is_pattern(&request.target) && self.serves(&request.target) {
            self.interest(&request.target, false);
        }
    }

    fn published(&self, _destination: &str, _message: &Arc<Published>) {}

    fn sent_to_user(&self, _: &str, _: &str, _: &Arc<Published>) -> UserDelivery {
        UserDelivery::Local
    }

    fn acked(&self, _: &str, _: Option<&str>, _: &SubscribeRequest, _: &[&str]) {}

    fn relays(&self, destination: &str) -> bool {
        self.serves(destination)
    }

    fn relay(&self, destination: &str, message: &Arc<Published>) -> Result<(), Refusal> {
        if let Some(problem) = destination_problem(destination) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::InvalidDestination(problem));
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

    fn is_live(&self, destination: &str) -> bool {
        !self.serves(destination)
            || lock(&self.lane(destination).confirm)
                .live
                .contains(destination)
    }

    fn when_live(&self, destination: &str, completion: Completion) {
        if !self.serves(destination) {
            return completion.accept();
        }
        let mut confirm = lock(&self.lane(destination).confirm);
        if confirm.live.contains(destination) {
            drop(confirm);
            return completion.accept();
        }
        confirm
            .waiters
            .entry(destination.to_owned())
            .or_default()
            .push((Instant::now(), completion));
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
