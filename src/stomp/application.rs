//! The seam to application backends: what `/app` destinations are handed to (spec §7.2).
//!
//! The STOMP core calls an [`AppHandler`] synchronously while processing the frame, so the
//! RECEIPT that follows means "the backend accepted it". A handler that talks to a remote
//! service queues the request itself and returns at once; it must never block. Backends answer
//! at any time through the [`Broker`](super::broker::Broker) (`publish`, `send_to_user`,
//! `send_to_session`), which they get from `StompApp::broker`.

use bytes::Bytes;

/// A SEND to an application destination.
#[derive(Debug)]
pub struct AppSend<'a> {
    /// The sending session's STOMP session id.
    pub session: &'a str,
    /// The sending session's principal.
    pub user: Option<&'a str>,
    /// The full destination, e.g. `/app/x`.
    pub destination: &'a str,
    /// The destination without its application prefix, e.g. `/x`.
    pub stripped: &'a str,
    /// Every SEND header (content-type and user headers included).
    pub headers: &'a [(String, String)],
    /// The body.
    pub body: &'a Bytes,
}

/// A SUBSCRIBE to an application destination (Spring's `@SubscribeMapping`).
#[derive(Debug)]
pub struct AppSubscribe<'a> {
    /// The subscribing session's STOMP session id.
    pub session: &'a str,
    /// The subscribing session's principal.
    pub user: Option<&'a str>,
    /// The full destination, e.g. `/app/init`.
    pub destination: &'a str,
    /// The destination without its application prefix.
    pub stripped: &'a str,
    /// The subscription id.
    pub subscription: &'a str,
    /// Every SUBSCRIBE header.
    pub headers: &'a [(String, String)],
}

/// The single MESSAGE a subscribe-reply backend answers with.
#[derive(Debug, Clone)]
pub struct AppReply {
    /// Headers for the MESSAGE (control headers are replaced by ours).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

/// Why a backend did not take a frame; answered with ERROR `Backend error` and close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot be reached.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the frame.
    #[error("backend rejected the frame: {0}")]
    Rejected(String),
}

/// Handles frames addressed to application prefixes.
pub trait AppHandler: Send + Sync + 'static {
    /// A SEND; `Ok` means accepted.
    fn on_send(&self, send: &AppSend<'_>) -> Result<(), BackendError>;

    /// A SUBSCRIBE; `Ok(Some(reply))` delivers one MESSAGE to that subscription only.
    fn on_subscribe(&self, subscribe: &AppSubscribe<'_>) -> Result<Option<AppReply>, BackendError>;
}
