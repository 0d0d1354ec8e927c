//! The seam between the broker and an engine attached to it (the Redis cluster bridge, or
//! the relay to an external STOMP broker): what
//! the broker reports outward, and the calls through which the engine's messages come back
//! in (`Broker::deliver_remote`, `Broker::deliver_remote_user`,
//! `Broker::deliver_to_subscription`).
//!
//! The broker calls these while it holds its lock, so an engine must return at once (queue
//! the work, never wait) and must never call back into the broker from inside them; it
//! answers later, from its own tasks. Messages from the engine enter through calls that do
//! not report back to it, so nothing is echoed.

use std::sync::Arc;

use super::completion::Completion;
use super::message::{Published, SubscribeRequest};

/// What the broker does with a message to every session of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserDelivery {
    /// Deliver to the local sessions now (the engine may also have sent it to other nodes).
    Local,
    /// The engine took the message (to store it first) and delivers it itself.
    Taken,
}

/// Why a relayed publish was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The external broker cannot take it now (not connected, queue full).
    Unavailable(String),
    /// The external broker would refuse the destination.
    InvalidDestination(String),
}

/// An engine attached to the broker.
pub trait BrokerEngine: Send + Sync + 'static {
    /// A session registered; `user` is its principal.
    fn session_opened(&self, session: &str, user: Option<&str>);

    /// A session ended (after `unsubscribed` for each of its subscriptions).
    fn session_closed(&self, session: &str, user: Option<&str>);

    /// A subscription became active (literal or pattern target).
    fn subscribed(&self, session: &str, user: Option<&str>, request: &SubscribeRequest);

    /// A subscription ended.
    fn unsubscribed(&self, session: &str, user: Option<&str>, request: &SubscribeRequest);

    /// A client or backend published to `destination` (delivered locally already).
    fn published(&self, destination: &str, message: &Arc<Published>);

    /// A message to every session of `user` at `destination` (`/queue/x`), before local
    /// delivery. Not called when spec §7.5 narrows a send to the sending session.
    fn sent_to_user(&self, user: &str, destination: &str, message: &Arc<Published>)
    -> UserDelivery;

    /// The client ACKed these messages of a subscription (client modes).
    fn acked(
        &self,
        session: &str,
        user: Option<&str>,
        request: &SubscribeRequest,
        message_ids: &[&str],
    );

    /// The client NACKed these messages of a subscription (client modes).
    fn nacked(
        &self,
        _session: &str,
        _user: Option<&str>,
        _request: &SubscribeRequest,
        _message_ids: &[&str],
    ) {
    }

    /// Whether the engine serves this subscription over a connection of the session's own
    /// (the relay's per-session connections): the broker keeps its ack state and delivers
    /// what the engine hands to [`Broker::deliver_to_subscription`], but no publish or
    /// fan-out to its destination reaches it.
    ///
    /// [`Broker::deliver_to_subscription`]: super::broker::Broker::deliver_to_subscription
    fn serves_alone(&self, _request: &SubscribeRequest) -> bool {
        false
    }

    /// Whether an external broker serves `destination` (the relay): publishes there go to
    /// [`BrokerEngine::relay`] instead of local delivery, and what the external broker sends
    /// back enters through `Broker::deliver_remote` like any message from outside.
    fn relays(&self, _destination: &str) -> bool {
        false
    }

    /// A publish to a relayed destination, from `origin` (a client session's SEND) or from
    /// a backend or the admin API (None); `Err` says why it cannot be taken (the external
    /// broker is unreachable or its queue full, or it would refuse the destination), and a
    /// client SEND gets an ERROR.
    fn relay(
        &self,
        _origin: Option<&str>,
        _destination: &str,
        _message: &Arc<Published>,
    ) -> Result<(), Refusal> {
        Ok(())
    }

    /// Whether a subscription can be served; `Err` says why not, and the client gets an
    /// ERROR for its SUBSCRIBE.
    fn check_subscription(&self, _request: &SubscribeRequest) -> Result<(), String> {
        Ok(())
    }

    /// Whether everything published to its destination from now on reaches this new
    /// subscription of `session` (false while a relay's broker subscription is not yet
    /// confirmed).
    fn is_live(&self, _session: &str, _request: &SubscribeRequest) -> bool {
        true
    }

    /// Answer `completion` once the subscription is live (at once when it is, or after a
    /// bounded wait); the connection holds the SUBSCRIBE's RECEIPT, and every later one,
    /// until then.
    fn when_live(&self, _session: &str, _request: &SubscribeRequest, completion: Completion) {
        completion.accept();
    }
}

/// Two engines on one broker: `front` (the relay to an external STOMP broker) serves the
/// destinations it relays and the subscriptions it serves alone; `back` (the cluster link)
/// everything else: user destinations, presence, the inbox and whatever crosses nodes
/// through Redis. A relayed destination never reaches `back`, so nothing arrives twice
/// (once from the external broker, once from another node).
pub struct Layered {
    front: Arc<dyn BrokerEngine>,
    back: Arc<dyn BrokerEngine>,
}

impl Layered {
    /// `front` over `back`.
    pub fn new(front: Arc<dyn BrokerEngine>, back: Arc<dyn BrokerEngine>) -> Layered {
        Layered { front, back }
    }

    /// The engine a destination belongs to.
    fn of(&self, destination: &str) -> &dyn BrokerEngine {
        match self.front.relays(destination) {
            true => &*self.front,
            false => &*self.back,
        }
    }

    /// The engine a subscription belongs to.
    fn of_request(&self, request: &SubscribeRequest) -> &dyn BrokerEngine {
        match self.front.serves_alone(request) {
            true => &*self.front,
            false => self.of(&request.target),
        }
    }
}

impl BrokerEngine for Layered {
    fn session_opened(&self, session: &str, user: Option<&str>) {
        self.front.session_opened(session, user);
        self.back.session_opened(session, user);
    }

    fn session_closed(&self, session: &str, user: Option<&str>) {
        self.front.session_closed(session, user);
        self.back.session_closed(session, user);
    }

    fn subscribed(&self, session: &str, user: Option<&str>, request: &SubscribeRequest) {
        self.of_request(request).subscribed(session, user, request);
    }

    fn unsubscribed(&self, session: &str, user: Option<&str>, request: &SubscribeRequest) {
        self.of_request(request)
            .unsubscribed(session, user, request);
    }

    fn published(&self, destination: &str, message: &Arc<Published>) {
        self.of(destination).published(destination, message);
    }

    fn sent_to_user(
        &self,
        user: &str,
        destination: &str,
        message: &Arc<Published>,
    ) -> UserDelivery {
        self.back.sent_to_user(user, destination, message)
    }

    fn acked(&self, session: &str, user: Option<&str>, request: &SubscribeRequest, ids: &[&str]) {
        self.of_request(request).acked(session, user, request, ids);
    }

    fn nacked(&self, session: &str, user: Option<&str>, request: &SubscribeRequest, ids: &[&str]) {
        self.of_request(request).nacked(session, user, request, ids);
    }

    fn serves_alone(&self, request: &SubscribeRequest) -> bool {
        self.of_request(request).serves_alone(request)
    }

    fn relays(&self, destination: &str) -> bool {
        self.of(destination).relays(destination)
    }

    fn relay(
        &self,
        origin: Option<&str>,
        destination: &str,
        message: &Arc<Published>,
    ) -> Result<(), Refusal> {
        self.of(destination).relay(origin, destination, message)
    }

    fn check_subscription(&self, request: &SubscribeRequest) -> Result<(), String> {
        // The relay also refuses patterns that reach into its prefixes.
        self.front.check_subscription(request)?;
        match self.front.relays(&request.target) {
            true => Ok(()),
            false => self.back.check_subscription(request),
        }
    }

    fn is_live(&self, session: &str, request: &SubscribeRequest) -> bool {
        self.of_request(request).is_live(session, request)
    }

    fn when_live(&self, session: &str, request: &SubscribeRequest, completion: Completion) {
        self.of_request(request)
            .when_live(session, request, completion);
    }
}
