//! Test helpers: an in-memory carrier that records what the STOMP core sends.
//!
//! `RecordingSink` implements [`SessionSink`] without any I/O, so the connection state machine
//! and the broker can be tested synchronously; its frames are parsed back with our own parser.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::frame::{Frame, FrameLimits, FrameParser, Version};
use crate::session::{
    InboundSide, OutMessage, SendError, SessionHandle, SessionInfo, SessionSender, SessionSink,
    TransportKind, new_session,
};

/// A sink that records every message and the close request.
#[derive(Debug, Default)]
pub struct RecordingSink {
    /// Everything sent, in order.
    sent: Mutex<Vec<OutMessage>>,
    /// The close code and reason, once closed.
    closed: Mutex<Option<(u16, String)>>,
    /// The last `suppress_heartbeats` request.
    suppressed: AtomicBool,
}

impl SessionSink for RecordingSink {
    fn send(&self, msg: OutMessage) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        self.sent.lock().unwrap().push(msg);
        Ok(())
    }

    fn close(&self, code: u16, reason: &str) {
        let mut closed = self.closed.lock().unwrap();
        if closed.is_none() {
            *closed = Some((code, reason.to_owned()));
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.lock().unwrap().is_some()
    }

    fn queued_bytes(&self) -> usize {
        0
    }

    fn suppress_heartbeats(&self, suppress: bool) {
        self.suppressed.store(suppress, Ordering::Relaxed);
    }
}

impl RecordingSink {
    /// Every frame sent, parsed with 1.2 rules.
    pub fn frames(&self) -> Vec<Frame> {
        self.frames_as(Version::V1_2)
    }

    /// Every frame sent, parsed with `version` rules (heart-beats skipped).
    pub fn frames_as(&self, version: Version) -> Vec<Frame> {
        let mut parser = FrameParser::new(FrameLimits {
            max_frame_bytes: usize::MAX / 2,
            ..FrameLimits::default()
        });
        parser.set_version(version);
        let mut frames = Vec::new();
        for msg in self.sent.lock().unwrap().iter() {
            parser.push(msg.payload());
            while let Some(frame) = parser.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        frames
    }

    /// The raw payloads sent.
    pub fn payloads(&self) -> Vec<bytes::Bytes> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.payload().clone())
            .collect()
    }

    /// For every message sent, whether the carrier would be allowed to discard it.
    pub fn droppable(&self) -> Vec<bool> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(OutMessage::is_droppable)
            .collect()
    }

    /// Forget what was sent so far.
    pub fn clear(&self) {
        self.sent.lock().unwrap().clear();
    }

    /// The close request, if any.
    pub fn closed_with(&self) -> Option<(u16, String)> {
        self.closed.lock().unwrap().clone()
    }

    /// Whether heart-beats were suppressed.
    pub fn heartbeats_suppressed(&self) -> bool {
        self.suppressed.load(Ordering::Relaxed)
    }
}

/// Session info for a test session on `transport`.
pub fn test_info(transport: TransportKind, principal: Option<&str>) -> SessionInfo {
    SessionInfo {
        log_id: crate::session::next_log_id(),
        transport,
        remote_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        headers: Vec::new(),
        url: "/".into(),
        principal: principal.map(|name| {
            Arc::new(crate::session::Principal {
                name: name.to_owned(),
                roles: Vec::new(),
                expires_at: None,
            })
        }),
        subprotocol: None,
    }
}

/// A recording sink and a sender for it.
pub fn recording_sender() -> (Arc<RecordingSink>, SessionSender) {
    let (sink, _side, handle) = recording_session(TransportKind::Tcp, None);
    (sink, handle.sender().clone())
}

/// A sender for any sink.
pub fn sender_for(sink: Arc<dyn SessionSink>) -> SessionSender {
    let (_side, handle) = new_session(test_info(TransportKind::Tcp, None), sink);
    handle.sender().clone()
}

/// A full test session: the sink, the carrier's inbound side and the application's handle.
pub fn recording_session(
    transport: TransportKind,
    principal: Option<&str>,
) -> (Arc<RecordingSink>, InboundSide, SessionHandle) {
    let sink = Arc::new(RecordingSink::default());
    let (side, handle) = new_session(test_info(transport, principal), sink.clone());
    (sink, side, handle)
}
