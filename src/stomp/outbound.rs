//! One STOMP connection's outbound side, shared by the connection task and the broker.
//!
//! Both write to the same carrier sink: the connection its CONNECTED, RECEIPT, ERROR frames
//! and heart-beats, the broker its MESSAGE fan-out. This wrapper knows the session's
//! negotiated version (so frames are encoded for it), whether the carrier can carry binary
//! frames, and when anything was last written, which is what decides whether a heart-beat is
//! due (spec §4.2: "nothing has been written for S ms"). It also marks which frames the
//! carrier may discard when the client's queue overflows under `overflow_strategy = "drop"`,
//! because the carrier cannot tell a MESSAGE from a RECEIPT.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;

use super::frame::{Frame, Version};
use super::stats::{StompStats, bump};
use crate::session::{
    DropObserver, OutMessage, SendError, SessionSender, SharedTail, TransportKind,
};
use std::sync::Arc;

/// Whether a carrier can deliver frames that are not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carriage {
    /// SockJS sessions: every message is a string.
    TextOnly,
    /// TCP and raw WebSocket: text and binary.
    TextAndBinary,
}

impl Carriage {
    /// The carriage of a transport kind.
    pub fn of(kind: TransportKind) -> Carriage {
        match kind {
            TransportKind::Tcp | TransportKind::RawWebsocket => Carriage::TextAndBinary,
            _ => Carriage::TextOnly,
        }
    }
}

/// How an encoded frame may be carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Deliverable as a text message.
    Text,
    /// Declared `application/octet-stream` but valid UTF-8: a binary message where the
    /// carrier has them, a text message on text-only carriers (SockJS).
    OctetText,
    /// Not UTF-8: must go as a binary message.
    Binary,
}

impl Payload {
    /// Classify a frame body by its content type and bytes.
    pub fn of(content_type: Option<&str>, body: &[u8]) -> Payload {
        if std::str::from_utf8(body).is_err() {
            Payload::Binary
        } else if content_type == Some("application/octet-stream") {
            Payload::OctetText
        } else {
            Payload::Text
        }
    }
}

/// Whether the carrier may discard a queued frame to make room when the client's queue
/// overflows under `overflow_strategy = "drop"` (spec §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// A MESSAGE the client can afford to miss.
    Allowed,
    /// CONNECTED, RECEIPT, ERROR, heart-beats, and MESSAGEs that await an ACK.
    Never,
}

/// Counts the frames a carrier discarded from one connection's queue as overflow drops. One
/// per connection, so the reference every queued MESSAGE holds is not one shared by all.
#[derive(Debug)]
struct DropCounter {
    /// Where the drops are counted.
    stats: Arc<StompStats>,
}

impl DropObserver for DropCounter {
    fn message_dropped(&self) {
        bump(&self.stats.dropped_overflow);
    }
}

/// A monotonic millisecond clock shared by every connection.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A connection's outbound side.
#[derive(Debug)]
pub struct Outbound {
    /// The carrier's sink.
    sender: SessionSender,
    /// The negotiated version (frames are encoded for it).
    version: Version,
    /// Whether binary frames can be carried.
    carriage: Carriage,
    /// [`now_ms`] of the last write.
    last_write_ms: AtomicU64,
    /// Where dropped headers and unencodable messages are counted.
    stats: Arc<StompStats>,
    /// Told when the carrier discards one of this connection's MESSAGEs on overflow.
    drops: Arc<DropCounter>,
    /// Whether an unencodable frame was logged on this connection (later ones are only
    /// counted, so one bad publish to many subscribers is not a log line each).
    unencodable_logged: AtomicBool,
}

impl Outbound {
    /// The outbound side of a connection of `version`.
    pub fn new(
        sender: SessionSender,
        version: Version,
        carriage: Carriage,
        stats: Arc<StompStats>,
    ) -> Outbound {
        Outbound {
            sender,
            version,
            carriage,
            last_write_ms: AtomicU64::new(now_ms()),
            drops: Arc::new(DropCounter {
                stats: stats.clone(),
            }),
            stats,
            unencodable_logged: AtomicBool::new(false),
        }
    }

    /// The negotiated version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Encode `frame` for this session and queue it.
    pub fn send_frame(&self, frame: &Frame) -> Result<(), SendError> {
        let mut buf = bytes::BytesMut::new();
        let dropped = frame.encode_into(self.version, &mut buf);
        self.count_dropped_headers(dropped);
        let payload = Payload::of(frame.get("content-type"), &frame.body);
        self.send_encoded(buf.freeze(), payload, Discard::Never)
    }

    /// Queue an already encoded frame. A binary frame on a text-only carrier is dropped and
    /// counted (spec §1: never corrupt it with a lossy conversion).
    pub fn send_encoded(
        &self,
        bytes: Bytes,
        payload: Payload,
        discard: Discard,
    ) -> Result<(), SendError> {
        let message = match (payload, self.carriage) {
            (Payload::Text, _) | (Payload::OctetText, Carriage::TextOnly) => {
                match OutMessage::text_bytes(bytes.clone()) {
                    Some(message) => message,
                    None => OutMessage::binary(bytes),
                }
            }
            (Payload::Binary | Payload::OctetText, Carriage::TextAndBinary) => {
                OutMessage::binary(bytes)
            }
            (Payload::Binary, Carriage::TextOnly) => {
                self.unencodable("a binary");
                return Ok(());
            }
        };
        self.queue(message, discard)
    }

    /// Queue a frame made of a per-delivery `head` and a `tail` shared by every delivery of
    /// one message (a broker MESSAGE): nothing of the tail is copied or checked again here.
    pub fn send_with_tail(
        &self,
        head: Bytes,
        tail: &Arc<SharedTail>,
        payload: Payload,
        discard: Discard,
    ) -> Result<(), SendError> {
        let message = match (payload, self.carriage) {
            (Payload::Text, _) | (Payload::OctetText, Carriage::TextOnly) => {
                match OutMessage::text_with_tail(head.clone(), tail) {
                    Some(message) => message,
                    None => OutMessage::binary_with_tail(head, tail),
                }
            }
            (Payload::Binary | Payload::OctetText, Carriage::TextAndBinary) => {
                OutMessage::binary_with_tail(head, tail)
            }
            (Payload::Binary, Carriage::TextOnly) => {
                self.unencodable("a binary");
                return Ok(());
            }
        };
        self.queue(message, discard)
    }

    /// Mark `message` per `discard` and queue it (a non-text message on a text-only carrier is
    /// dropped and counted instead).
    fn queue(&self, message: OutMessage, discard: Discard) -> Result<(), SendError> {
        let message = match discard {
            Discard::Allowed => message.droppable(self.drops.clone()),
            Discard::Never => message,
        };
        let len = message.len() as u64;
        if message.is_text() || self.carriage == Carriage::TextAndBinary {
            self.sender.send(message)?;
        } else {
            self.unencodable("a non-UTF-8");
            return Ok(());
        }
        self.stats.bytes_out.fetch_add(len, Ordering::Relaxed);
        self.last_write_ms.store(now_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// Count a frame this carrier cannot take; log the first one of the connection.
    fn unencodable(&self, what: &str) {
        super::stats::bump(&self.stats.dropped_unencodable);
        if !self.unencodable_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "dropping {what} STOMP frame on a text-only SockJS session (further ones on this session are only counted in dropped_unencodable)"
            );
        }
    }

    /// Queue one heart-beat EOL.
    pub fn send_heartbeat(&self) -> Result<(), SendError> {
        self.sender.send(OutMessage::text("\n"))?;
        self.stats.bytes_out.fetch_add(1, Ordering::Relaxed);
        self.last_write_ms.store(now_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// [`now_ms`] of the last write.
    pub fn last_write_ms(&self) -> u64 {
        self.last_write_ms.load(Ordering::Relaxed)
    }

    /// Whether the carrier has begun closing.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Close the carrier (after what was queued is flushed, as carriers guarantee).
    pub fn close(&self, code: u16, reason: &str) {
        self.sender.close(code, reason);
    }

    /// The carrier's sender.
    pub fn sender(&self) -> &SessionSender {
        &self.sender
    }

    /// Count headers this version could not represent.
    pub fn count_dropped_headers(&self, dropped: usize) {
        if dropped > 0 {
            self.stats
                .headers_dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }
}
