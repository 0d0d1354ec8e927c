//! Outbound HTTP to application backends (`[[backend]]`): `/app` frames forwarded as JSON
//! POSTs, the answers routed back through the broker, and the CONNECT / disconnect hooks.
//! This is what a Spring application does in process with `@MessageMapping`,
//! `@SubscribeMapping`, `@SendTo`, `@SendToUser` and a `ChannelInterceptor`, offered to a
//! backend in any language. The wire format is in `wire.rs` (frames) and `hooks.rs` (hooks).
//!
//! [`Backends`] is the STOMP core's [`AppHandler`]: a frame to an application destination goes
//! to the first backend whose `destinations` match, into that session's lane (`forward.rs`),
//! and the connection carries on at once. Semantics, with Spring as the yardstick:
//!
//! * **Order.** Frames of one session reach a backend one at a time, in the order the client
//!   sent them (Spring needs `setPreserveReceiveOrder` for that); sessions never wait for each
//!   other, nor backends for each other. Frames to the broker are not held back by frames
//!   waiting for a backend (Spring's broker and controllers also run side by side).
//! * **Receipts.** The RECEIPT of a forwarded frame is sent after the backend's 2xx, and after
//!   the messages it answered with were handed to the broker. Receipts stay in frame order
//!   (spec §5.1): a later frame's RECEIPT, even a broker SUBSCRIBE's, waits until every
//!   earlier forwarded frame was answered, so a RECEIPT still confirms everything before it.
//!   Spring's simple broker sends no receipts at all; ours never reorder.
//! * **Failure.** A backend that times out, refuses the connection, answers 5xx, 4xx or
//!   garbage, or is busy past its bounds, fails the frame: ERROR `Backend error` with the
//!   frame's `receipt-id`, then close (spec §5.2); with `on_error = "user-queue"` a MESSAGE on
//!   the session's `/user/queue/errors` instead (headers `message`, `failed-destination`,
//!   `receipt-id`), the session stays open and the RECEIPT follows the error message.
//! * **DISCONNECT** waits for the frames before it to be answered, then sends its RECEIPT.
//! * **Nothing is lost silently.** A frame already received is POSTed even if its session
//!   closes meanwhile (a SUBSCRIBE is not: nobody could receive its reply); the disconnect
//!   notice of a session follows its last frame.

pub mod config;

mod client;
mod forward;
mod hooks;
mod wire;

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

pub use config::{BackendConfig, OnError};
pub use forward::{BackendStats, ERRORS_QUEUE};

use crate::config::types::ConfigError;
use crate::stomp::{
    AppHandler, AppRequest, BackendError, Broker, ConnectCheck, ConnectDecision, SessionEnded,
    StompConfig,
};
use forward::Backend;

/// A snapshot of one backend's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatsSnapshot {
    /// `backend[i]`.
    pub name: String,
    /// Frames the backend took.
    pub accepted: u64,
    /// Frames that failed.
    pub failed: u64,
    /// Of those, the ones that found it busy.
    pub busy: u64,
    /// Messages it answered with.
    pub replies: u64,
    /// Ended sessions told to its `disconnect_url`.
    pub disconnects_sent: u64,
    /// Ended sessions dropped because the notice queue was full.
    pub disconnects_dropped: u64,
}

/// Check an answer to a frame for `/app/x` from session `s1` of user `alice`, under the default
/// `[stomp]` prefixes, exactly as the gateway does before it delivers anything: how many
/// messages it would deliver, or the error text the client would get. For fuzzing and tests
/// of the wire format.
pub fn check_answer(body: &[u8], frame: &crate::stomp::AppFrame) -> Result<usize, String> {
    let routing = wire::Routing {
        router: crate::stomp::destination::Router::new(&StompConfig::default()),
        default_destination_prefix: "/topic".into(),
        default_user_destination_prefix: "/queue".into(),
    };
    let info = wire::FrameInfo {
        frame,
        session: "s1",
        user: Some("alice"),
        destination: "/app/x",
        stripped: "/x",
    };
    wire::plan(body, info, &routing)
        .map(|planned| planned.len())
        .map_err(|e| e.to_string())
}

/// Check a connect hook's 200 answer as the gateway does: whether it allows, or the error.
pub fn check_connect_answer(body: &[u8]) -> Result<bool, String> {
    hooks::check_answer(body)
}

/// Every configured backend, as the STOMP core's application handler.
#[derive(Debug)]
pub struct Backends {
    /// In configuration order; the first whose destinations match takes a frame.
    backends: Vec<Arc<Backend>>,
    /// The broker replies are published through, once attached.
    broker: OnceLock<Arc<Broker>>,
    /// The backend with the connect hook, if any.
    connect_hook: Option<usize>,
}

impl Backends {
    /// The backends `configs` describe, or None when there are none. Validates first.
    pub fn from_config(
        configs: &[BackendConfig],
        stomp: &StompConfig,
    ) -> Result<Option<Arc<Backends>>, ConfigError> {
        config::validate(configs, stomp)?;
        if configs.is_empty() {
            return Ok(None);
        }
        let backends: Vec<Arc<Backend>> = configs
            .iter()
            .enumerate()
            .map(|(i, c)| Arc::new(Backend::new(i, c, stomp)))
            .collect();
        Ok(Some(Arc::new(Backends {
            connect_hook: configs.iter().position(|c| c.connect_url.is_some()),
            backends,
            broker: OnceLock::new(),
        })))
    }

    /// The counters of every backend, in configuration order.
    pub fn stats(&self) -> Vec<BackendStatsSnapshot> {
        self.backends
            .iter()
            .map(|b| {
                let (sent, dropped) = b.disconnects.as_ref().map_or((0, 0), |d| {
                    (
                        d.sent.load(Ordering::Relaxed),
                        d.dropped.load(Ordering::Relaxed),
                    )
                });
                BackendStatsSnapshot {
                    name: b.name.clone(),
                    accepted: b.stats.accepted.load(Ordering::Relaxed),
                    failed: b.stats.failed.load(Ordering::Relaxed),
                    busy: b.stats.busy.load(Ordering::Relaxed),
                    replies: b.stats.replies.load(Ordering::Relaxed),
                    disconnects_sent: sent,
                    disconnects_dropped: dropped,
                }
            })
            .collect()
    }
}

impl AppHandler for Backends {
    fn attach(&self, broker: Arc<Broker>) {
        let _ = self.broker.set(broker);
    }

    fn forward(&self, request: AppRequest) {
        let Some(broker) = self.broker.get() else {
            request.completion.fail(BackendError::Unavailable(
                "the backends are not attached to a broker".into(),
            ));
            return;
        };
        match self.backends.iter().find(|b| b.owns(&request.destination)) {
            Some(backend) => backend.forward(broker, request),
            None => {
                let destination = request.destination.clone();
                request.completion.fail(BackendError::NoBackend(format!(
                    "no [[backend]] owns {destination}"
                )));
            }
        }
    }

    fn max_pending_per_session(&self) -> usize {
        self.backends
            .iter()
            .map(|b| b.max_queued_per_session)
            .sum::<usize>()
            + 1
    }

    fn check_connect(&self, request: &ConnectCheck<'_>) -> Option<ConnectDecision> {
        self.backends
            .get(self.connect_hook?)?
            .check_connect(request)
    }

    fn session_ended(&self, ended: SessionEnded) {
        for backend in self.backends.iter().filter(|b| b.disconnects.is_some()) {
            backend.session_ended(ended.clone());
        }
    }
}
