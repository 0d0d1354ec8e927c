//! The broker's side of the shared queues ([`crate::cluster::queues`]): which local
//! subscriptions consume each shared `/queue` here, how much each can take, and what each
//! holds unacknowledged. A message read from Redis goes to one of them, round-robin among
//! those with room; the broker delivers it (`deliver_to_subscription`) with the stream id
//! as `message-id`, and keeps its ack state as for any subscription.
//!
//! Lock order: the broker calls in with its lock held (subscribe, unsubscribe, ACK), so
//! this side never calls the broker while it holds its own lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::cluster::queues::{QueueConsumer, SharedQueues, Taken};
use crate::cluster::{ClusterHandle, Message, PublishError};
use crate::stomp::broker::{AckMode, Broker, Published, SubscribeRequest};

/// What an auto-ack subscription is given at once at most.
const AUTO_WINDOW: usize = 64;
/// What a client-ack subscription without `prefetch-count` holds unacknowledged at most,
/// so that one node does not take a whole queue other nodes could serve.
const CLIENT_WINDOW: usize = 100;
/// How long a subscription that could not take a message (its connection's queue is full)
/// is offered none, so a slow consumer does not make its messages go round through Redis.
const STALL: Duration = Duration::from_millis(100);

/// One local subscription consuming a shared queue.
#[derive(Debug)]
struct Consumer {
    session: String,
    id: String,
    ack: AckMode,
    window: usize,
    /// Delivered and not settled, by stream id (kept to put back).
    held: HashMap<String, Message>,
    /// Offered nothing until then: it could not take the last message.
    stalled_until: Option<Instant>,
}

impl Consumer {
    fn room(&self) -> usize {
        if self
            .stalled_until
            .is_some_and(|until| Instant::now() < until)
        {
            return 0;
        }
        match self.ack {
            AckMode::Auto => self.window,
            _ => self.window.saturating_sub(self.held.len()),
        }
    }
}

#[derive(Debug, Default)]
struct Local {
    consumers: Vec<Consumer>,
    /// Where the round-robin goes next.
    next: usize,
}

/// The local consumers of every shared queue of this node.
pub(super) struct QueueLink {
    broker: Weak<Broker>,
    queues: OnceLock<Arc<SharedQueues>>,
    state: Mutex<HashMap<String, Local>>,
}

impl QueueLink {
    pub(super) fn start(
        cluster: &ClusterHandle,
        broker: Weak<Broker>,
        queue: usize,
        max_len: usize,
        reclaim: Duration,
    ) -> Arc<QueueLink> {
        let link = Arc::new(QueueLink {
            broker,
            queues: OnceLock::new(),
            state: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&link);
        let consumer: Weak<dyn QueueConsumer> = weak;
        let queues = SharedQueues::start(cluster, consumer, queue, max_len, reclaim);
        let _ = link.queues.set(queues);
        link
    }

    fn queues(&self) -> Option<&Arc<SharedQueues>> {
        self.queues.get()
    }

    /// The shared queues' counters.
    pub(super) fn stats(&self) -> Option<&crate::cluster::queues::QueueStats> {
        self.queues().map(|q| q.stats())
    }

    /// A SEND (or backend/admin publish) to a shared queue.
    pub(super) fn append(&self, destination: &str, message: Message) -> Result<(), PublishError> {
        match self.queues() {
            Some(q) => q.append(destination, message),
            None => Err(PublishError::Full),
        }
    }

    pub(super) fn subscribed(&self, session: &str, request: &SubscribeRequest) {
        let window = match request.ack {
            AckMode::Auto => AUTO_WINDOW,
            _ => request.prefetch.unwrap_or(CLIENT_WINDOW).min(CLIENT_WINDOW),
        };
        let first = {
            let mut state = lock(&self.state);
            let local = state.entry(request.target.clone()).or_default();
            local.consumers.push(Consumer {
                session: session.to_owned(),
                id: request.id.clone(),
                ack: request.ack,
                window,
                held: HashMap::new(),
                stalled_until: None,
            });
            local.consumers.len() == 1
        };
        if let Some(q) = self.queues() {
            match first {
                true => q.watch(&request.target, true),
                false => q.room_opened(),
            }
        }
    }

    /// The subscription ended: what it held goes back to the queue.
    pub(super) fn unsubscribed(&self, session: &str, request: &SubscribeRequest) {
        let (held, last) = {
            let mut state = lock(&self.state);
            let Some(local) = state.get_mut(&request.target) else {
                return;
            };
            let Some(at) = local
                .consumers
                .iter()
                .position(|c| c.session == session && c.id == request.id)
            else {
                return;
            };
            let consumer = local.consumers.remove(at);
            let last = local.consumers.is_empty();
            if last {
                state.remove(&request.target);
            }
            (consumer.held, last)
        };
        let Some(q) = self.queues() else { return };
        let mut held: Vec<Message> = held.into_values().collect();
        held.sort_by_key(|m| stream_order(&m.id));
        for message in held {
            q.requeue(&request.target, message);
        }
        if last {
            q.watch(&request.target, false);
        }
    }

    /// The client ACKed (or NACKed) these messages of a subscription.
    pub(super) fn settled(
        &self,
        session: &str,
        request: &SubscribeRequest,
        ids: &[&str],
        ack: bool,
    ) {
        let taken: Vec<Message> = {
            let mut state = lock(&self.state);
            let Some(consumer) = state.get_mut(&request.target).and_then(|local| {
                local
                    .consumers
                    .iter_mut()
                    .find(|c| c.session == session && c.id == request.id)
            }) else {
                return;
            };
            ids.iter()
                .filter_map(|id| consumer.held.remove(*id))
                .collect()
        };
        let Some(q) = self.queues() else { return };
        if ack {
            q.settle(&request.target, taken.into_iter().map(|m| m.id).collect());
        } else {
            for message in taken {
                q.requeue(&request.target, message);
            }
        }
    }

    /// Choose the next consumer of `destination` with room (round-robin), and hold the
    /// message for it when it acknowledges; None when nobody has room.
    fn choose(
        &self,
        destination: &str,
        message: &Message,
        skip: usize,
    ) -> Option<(String, String, AckMode)> {
        let mut state = lock(&self.state);
        let local = state.get_mut(destination)?;
        let n = local.consumers.len();
        for step in 0..n {
            let at = (local.next + step + skip) % n;
            let consumer = &mut local.consumers[at];
            if consumer.room() == 0 {
                continue;
            }
            local.next = (at + 1) % n;
            let consumer = &mut local.consumers[at];
            if consumer.ack != AckMode::Auto {
                consumer.held.insert(message.id.clone(), message.clone());
            }
            return Some((consumer.session.clone(), consumer.id.clone(), consumer.ack));
        }
        None
    }

    /// The consumer could not take `message_id` (its connection's queue is full, or it is
    /// leaving): forget it there, and offer it nothing for a moment.
    fn refused_by(&self, destination: &str, session: &str, id: &str, message_id: &str) {
        let mut state = lock(&self.state);
        if let Some(consumer) = state.get_mut(destination).and_then(|local| {
            local
                .consumers
                .iter_mut()
                .find(|c| c.session == session && c.id == id)
        }) {
            consumer.held.remove(message_id);
            consumer.stalled_until = Some(Instant::now() + STALL);
        }
    }
}

impl QueueConsumer for QueueLink {
    fn room(&self, destination: &str) -> usize {
        lock(&self.state)
            .get(destination)
            .map_or(0, |local| local.consumers.iter().map(Consumer::room).sum())
    }

    fn take(&self, destination: &str, message: Message, redelivered: bool) -> Taken {
        let Some(broker) = self.broker.upgrade() else {
            return Taken::Refused;
        };
        let published = Arc::new(Published::new(
            message.id.clone(),
            &message.headers,
            message.body.clone(),
        ));
        // A consumer that left meanwhile does not take it: try the others.
        for skip in 0..4 {
            let Some((session, id, ack)) = self.choose(destination, &message, skip) else {
                return Taken::Refused;
            };
            if broker.deliver_to_subscription(&session, &id, &published, redelivered) {
                return match ack {
                    AckMode::Auto => Taken::Settled,
                    _ => Taken::Held,
                };
            }
            self.refused_by(destination, &session, &id, &message.id);
        }
        Taken::Refused
    }

    fn in_flight(&self, destination: &str) -> Vec<String> {
        lock(&self.state)
            .get(destination)
            .map_or_else(Vec::new, |local| {
                local
                    .consumers
                    .iter()
                    .flat_map(|c| c.held.keys().cloned())
                    .collect()
            })
    }
}

/// A stream id's place in its stream (`<ms>-<seq>`), for putting messages back in order.
fn stream_order(id: &str) -> (u64, u64) {
    crate::cluster::inbox::stream_id(id).unwrap_or((u64::MAX, u64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
