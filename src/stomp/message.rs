//! What the broker delivers: a published message ([`Published`]) and what a subscription
//! asks for ([`SubscribeRequest`], [`AckMode`]), shared by the broker and the engines
//! attached to it (so neither imports the other for them).
//!
//! A [`Published`] is encoded once per negotiated version into its *tail* (escaped user
//! headers, `content-length`, blank line, body, NUL), a [`SharedTail`] every delivery of it
//! shares; a delivery adds only its own *head* (`MESSAGE`, `destination`, `message-id`,
//! `subscription`, `ack`, `redelivered`), which precedes every shared header, so nothing in
//! the tail is patched or copied per subscriber.

use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{Escaping, Version, put_content_length, write_header};
use super::outbound::Payload;
use super::selector::Selector;
use crate::session::SharedTail;

/// How a subscription acknowledges messages (spec §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Consumed once written; no `ack` header.
    Auto,
    /// Cumulative ACK/NACK.
    Client,
    /// ACK/NACK of one message only.
    ClientIndividual,
}

impl AckMode {
    /// Parse the SUBSCRIBE `ack` header for `version` (`client-individual` is 1.1+).
    pub fn parse(value: &str, version: Version) -> Option<AckMode> {
        match value {
            "auto" => Some(AckMode::Auto),
            "client" => Some(AckMode::Client),
            "client-individual" if version >= Version::V1_1 => Some(AckMode::ClientIndividual),
            _ => None,
        }
    }

    /// Whether deliveries wait for the client's ACK or NACK.
    pub(super) fn needs_ack(self) -> bool {
        self != AckMode::Auto
    }
}

/// A message as published, shared by every delivery of it.
#[derive(Debug)]
pub struct Published {
    /// The opaque id every copy carries.
    pub(super) message_id: String,
    /// User headers to copy into MESSAGE (first occurrence only, control headers removed).
    pub(super) headers: Vec<(String, String)>,
    /// The body.
    body: Bytes,
    /// Whether the frame can travel as text.
    pub(super) payload: Payload,
    /// The encoded tail, per version, built on first use (see the module comment).
    tails: [OnceLock<(Arc<SharedTail>, usize)>; 3],
}

/// SEND headers never copied into MESSAGE (spec §8.1): ours replace them.
const CONTROL_HEADERS: &[&str] = &[
    "receipt",
    "transaction",
    "content-length",
    "destination",
    "message-id",
    "subscription",
    "ack",
    "redelivered",
];

impl Published {
    /// A message with `headers` (control headers are filtered out) and `body`.
    pub fn new(message_id: String, headers: &[(String, String)], body: Bytes) -> Published {
        let headers: Vec<(String, String)> = headers
            .iter()
            .filter(|(name, _)| !CONTROL_HEADERS.contains(&name.as_str()))
            .cloned()
            .collect();
        let content_type = headers
            .iter()
            .find(|(n, _)| n == "content-type")
            .map(|(_, v)| v.as_str());
        let payload = Payload::of(content_type, &body);
        Published {
            message_id,
            headers,
            body,
            payload,
            tails: Default::default(),
        }
    }

    /// The message id.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// The user headers MESSAGE frames carry.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Approximate stored size, for queue byte limits.
    pub(super) fn size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        headers + self.body.len() + self.message_id.len()
    }

    /// The shared tail for `version`, and how many headers it had to drop.
    fn tail(&self, version: Version) -> &(Arc<SharedTail>, usize) {
        self.tails[version.index()].get_or_init(|| {
            let escaping = Escaping::for_frame(super::frame::Command::Message, version);
            let mut buf = BytesMut::with_capacity(self.size() + 32);
            let dropped = self
                .headers
                .iter()
                .filter(|(n, v)| !write_header(&mut buf, n, v, escaping))
                .count();
            put_content_length(&mut buf, self.body.len());
            buf.put_u8(b'\n');
            buf.put_slice(&self.body);
            buf.put_u8(0);
            (SharedTail::new(buf.freeze()), dropped)
        })
    }

    /// The MESSAGE frame for one delivery: its own head, the shared tail, and how many
    /// headers could not be written.
    pub(super) fn encode_for(
        &self,
        head: &DeliveryHead<'_>,
        version: Version,
    ) -> (Bytes, &Arc<SharedTail>, usize) {
        let escaping = Escaping::for_frame(super::frame::Command::Message, version);
        let (tail, tail_dropped) = self.tail(version);
        let mut buf = BytesMut::with_capacity(128);
        buf.put_slice(b"MESSAGE\n");
        let mut dropped = *tail_dropped;
        let mut put = |name: &str, value: &str| {
            if !write_header(&mut buf, name, value, escaping) {
                dropped += 1;
            }
        };
        put("destination", head.destination);
        put("message-id", &self.message_id);
        put("subscription", head.subscription);
        if let Some(token) = head.ack {
            put("ack", token);
        }
        // In client modes `redelivered` is always there (RabbitMQ clients read it); auto-ack
        // fan-out frames carry it only when it is true, so they do not grow.
        match (head.redelivered, head.ack.is_some()) {
            (Redelivered::Yes, _) => put("redelivered", "true"),
            (Redelivered::No, true) => put("redelivered", "false"),
            (Redelivered::No, false) => {}
        }
        (buf.freeze(), tail, dropped)
    }
}

/// Whether a delivery is a redelivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Redelivered {
    /// The first delivery.
    No,
    /// Requeued after a NACK or a release.
    Yes,
}

/// The per-delivery headers.
pub(super) struct DeliveryHead<'a> {
    /// The destination the client sees.
    pub(super) destination: &'a str,
    /// The receiving subscription's id.
    pub(super) subscription: &'a str,
    /// The `ack` token in client modes.
    pub(super) ack: Option<&'a str>,
    /// Whether it is a redelivery.
    pub(super) redelivered: Redelivered,
}

/// What a connection asks for when it subscribes.
#[derive(Debug, Clone)]
pub struct SubscribeRequest {
    /// The subscription id (unique per connection; the connection checks that).
    pub id: String,
    /// The broker destination or pattern to subscribe to.
    pub target: String,
    /// The destination to show in MESSAGE, when it differs from the published one (user
    /// destinations are shown as the client subscribed them).
    pub shown: Option<String>,
    /// The ack mode.
    pub ack: AckMode,
    /// At most this many unacked deliveries in client modes.
    pub prefetch: Option<usize>,
    /// Only messages whose headers it selects are delivered (spec §7.3).
    pub selector: Option<Arc<Selector>>,
    /// The SUBSCRIBE's other headers (`durable`, `auto-delete`, `x-*`, ...), which an
    /// external broker may define; the embedded broker ignores them.
    pub headers: Vec<(String, String)>,
}
