//! The seam to application backends: what `/app` destinations are handed to (spec §7.2), and
//! the lifecycle hooks a backend may take part in (CONNECT, end of session).
//!
//! The STOMP core never waits for a backend. A frame for an application destination becomes
//! an [`AppRequest`] that the [`AppHandler`] takes by value and returns from at once; the
//! handler answers later through the request's [`Completion`], exactly once: accepted,
//! answered with a subscription reply, or failed. What an answer means for the client (the
//! RECEIPT, in frame order; ERROR with `receipt-id`, then close) is decided by the connection,
//! which owns the session's protocol state, so a backend never writes protocol frames itself.
//! Messages a backend sends back go through the [`Broker`] it is attached to (`publish`,
//! `send_to_user`, `send_to_session`), like every other publish: the broker is the one router.
//!
//! A CONNECT may also be decided asynchronously by a connect hook ([`AppHandler::check_connect`]):
//! the connection task awaits it, since nothing else is processed before CONNECTED.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use super::broker::Broker;
pub use super::completion::{BackendError, Completion};
pub(crate) use super::completion::{Completed, Outcome};
use super::stats::DisconnectCause;
use crate::session::{Principal, SessionInfo};

/// Which client frame an [`AppRequest`] carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppFrame {
    /// A SEND (Spring's `@MessageMapping`).
    Send,
    /// A SUBSCRIBE (Spring's `@SubscribeMapping`): request and reply on subscribe.
    Subscribe {
        /// The subscription id the reply goes to.
        subscription: String,
    },
}

/// A frame to an application destination, handed to the backend by value.
#[derive(Debug)]
pub struct AppRequest {
    /// SEND or SUBSCRIBE.
    pub frame: AppFrame,
    /// The client's STOMP session id.
    pub session: String,
    /// The client's principal, if any.
    pub user: Option<String>,
    /// The full destination, e.g. `/app/x`.
    pub destination: String,
    /// The destination without its application prefix, e.g. `/x`.
    pub stripped: String,
    /// Every header of the frame, in order (duplicates kept).
    pub headers: Vec<(String, String)>,
    /// The body (empty for SUBSCRIBE).
    pub body: Bytes,
    /// The `receipt` the client will see on an ERROR for this frame: the frame's own, or the
    /// COMMIT's for a SEND buffered in a transaction.
    pub receipt: Option<String>,
    /// Where the answer goes; complete it exactly once.
    pub completion: Completion,
}

/// What a connect hook looks at.
#[derive(Debug)]
pub struct ConnectCheck<'a> {
    /// The STOMP session id the session will have.
    pub session: &'a str,
    /// What the carrier knew: transport, remote address, handshake headers and URL.
    pub info: &'a SessionInfo,
    /// The CONNECT headers, raw (credentials included: the hook is trusted).
    pub headers: &'a [(String, String)],
    /// The principal the gateway's authenticator established, if any.
    pub principal: Option<&'a Principal>,
}

/// A connect hook's "allow".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectGrant {
    /// The session's principal from now on (None: anonymous).
    pub principal: Option<Principal>,
    /// Extra CONNECTED headers.
    pub headers: Vec<(String, String)>,
}

/// Why a connect hook did not allow a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectRefusal {
    /// The hook said no; the reason goes into ERROR `Authentication failed`.
    #[error("{0}")]
    Denied(String),
    /// The hook could not decide; ERROR `Backend error`.
    #[error("connect hook failed: {0}")]
    Failed(BackendError),
}

/// A connect hook's pending decision.
pub type ConnectDecision =
    Pin<Box<dyn Future<Output = Result<ConnectGrant, ConnectRefusal>> + Send>>;

/// A connected session ended (after its last frame was handed over).
#[derive(Debug, Clone)]
pub struct SessionEnded {
    /// The STOMP session id.
    pub session: String,
    /// The principal, if any.
    pub user: Option<String>,
    /// The close code.
    pub code: u16,
    /// The close reason.
    pub reason: String,
    /// Why it ended.
    pub cause: DisconnectCause,
}

/// Handles frames addressed to application prefixes, and the lifecycle hooks.
pub trait AppHandler: Send + Sync + 'static {
    /// Called once when the STOMP core is built: the broker replies are published through.
    fn attach(&self, broker: Arc<Broker>);

    /// Take a frame and return at once; answer `request.completion` exactly once, later.
    fn forward(&self, request: AppRequest);

    /// How many frames of one session may wait for answers at once; the connection refuses
    /// more with ERROR `Backend error`.
    fn max_pending_per_session(&self) -> usize;

    /// Decide a CONNECT that the authenticator let through, if a connect hook is configured;
    /// None lets it through as the authenticator decided.
    fn check_connect(&self, request: &ConnectCheck<'_>) -> Option<ConnectDecision> {
        let _ = request;
        None
    }

    /// A session that had been CONNECTED ended. Must return at once.
    fn session_ended(&self, ended: SessionEnded) {
        let _ = ended;
    }
}
