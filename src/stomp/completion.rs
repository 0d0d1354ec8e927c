//! How a backend answers one `/app` frame ([`Completion`]): accepted, answered with a
//! subscription reply, or failed, exactly once; the connection that owns the frame reads the
//! answer. Also what the relay answers a SUBSCRIBE's RECEIPT with once its external broker
//! confirmed the subscription. Kept apart from the backend seam ([`super::application`]) so
//! the broker and its engines can hold a completion without importing that seam.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::message::Published;

/// Why a backend did not take a frame; the client gets ERROR `Backend error` with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached, did not answer in time, or answered 5xx.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the frame (4xx).
    #[error("backend rejected the frame: {0}")]
    Rejected(String),
    /// The backend answered something that is not the contract.
    #[error("backend answered garbage: {0}")]
    Invalid(String),
    /// Too many frames are waiting for the backend already.
    #[error("backend busy: {0}")]
    Busy(String),
    /// No backend owns the destination.
    #[error("no backend: {0}")]
    NoBackend(String),
}

/// How a backend answered one [`AppRequest`].
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Taken (2xx); its replies, if any, were published already.
    Accepted,
    /// Taken, with the one MESSAGE for the SUBSCRIBE's subscription.
    Reply(Arc<Published>),
    /// Not taken.
    Failed(BackendError),
}

/// One answer, as the connection receives it.
#[derive(Debug)]
pub(crate) struct Completed {
    /// The connection's slot for the request.
    pub(crate) slot: u64,
    /// The answer.
    pub(crate) outcome: Outcome,
}

/// The answer channel of one [`AppRequest`]. Dropping it unanswered fails the frame, so a
/// request can never be lost silently.
#[derive(Debug)]
pub struct Completion {
    /// The connection's slot for the request.
    slot: u64,
    /// The connection's answer queue; None once answered.
    tx: Option<mpsc::Sender<Completed>>,
}

impl Completion {
    /// A completion for `slot` answering into `tx`. The connection sizes `tx` to its limit of
    /// waiting frames, so an answer always fits.
    pub(crate) fn new(slot: u64, tx: mpsc::Sender<Completed>) -> Completion {
        Completion { slot, tx: Some(tx) }
    }

    /// The backend took the frame; its replies were published.
    pub fn accept(mut self) {
        self.answer(Outcome::Accepted);
    }

    /// The backend took a SUBSCRIBE and answered with one MESSAGE for that subscription
    /// only. For a SEND this is the same as [`Completion::accept`].
    pub fn reply(mut self, message: Arc<Published>) {
        self.answer(Outcome::Reply(message));
    }

    /// The backend did not take the frame.
    pub fn fail(mut self, error: BackendError) {
        self.answer(Outcome::Failed(error));
    }

    /// Whether the session is gone, so nobody will read the answer.
    pub fn is_abandoned(&self) -> bool {
        self.tx.as_ref().is_none_or(mpsc::Sender::is_closed)
    }

    fn answer(&mut self, outcome: Outcome) {
        let Some(tx) = self.tx.take() else {
            return;
        };
        let completed = Completed {
            slot: self.slot,
            outcome,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(completed) {
            tracing::error!(
                slot = self.slot,
                "backend answer does not fit the session's answer queue; dropped"
            );
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.answer(Outcome::Failed(BackendError::Unavailable(
            "the request was dropped before the backend answered".into(),
        )));
    }
}
