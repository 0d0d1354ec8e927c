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
