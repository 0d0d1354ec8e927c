//! A session's own connection to the external broker (`mode = "per-session"`, and in
//! `shared` mode the subscriptions the broker must see for itself: client acks, durable
//! subscriptions, `x-*` queue arguments). It CONNECTs with the client login (`login`,
//! `passcode`), relays the session's SUBSCRIBE, UNSUBSCRIBE, ACK, NACK (and, per-session,
//! SEND) frames in the order the session made them, and hands each MESSAGE to the one
//! subscription it is for through `Broker::deliver_to_subscription`, with the broker's
//! ack id as its `message-id`, so the ACK the client sends later names it.
//!
//! When the connection cannot be made or is lost, the session is closed with ERROR `Broker
//! unavailable` (or the broker's own ERROR), as Spring's relay does: the broker's ack
//! state, prefetch window and transactions lived on that connection, so carrying on over a
//! new one would not be what the broker defines. The client reconnects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use super::connection::{
    Ended, LIVE_WAIT, Pulse, TICK, describe, open, per_subscription_queue, put_send, write,
};
use super::{Readiness, RelayStats};
use crate::stomp::broker::{Broker, Published};
use crate::stomp::config::RelayConfig;
use crate::stomp::frame::{Command, Frame, FrameParser, Version};
use crate::stomp::message::AckMode;
use crate::stomp::presence::{DisconnectTarget, Kick, PresenceDirectory};

/// Orders written together at most.
const BATCH: usize = 64;

/// The close code of a session whose broker connection failed.
const BROKER_FAILED: u16 = 1011;

/// A frame the session's connection is to write.
#[derive(Debug)]
pub(super) enum Order {
    Subscribe {
        id: String,
        destination: String,
        ack: AckMode,
        headers: Vec<(String, String)>,
    },
    Unsubscribe {
        id: String,
    },
    Send {
        destination: String,
        message: Arc<Published>,
    },
    Ack {
        id: String,
    },
    Nack {
        id: String,
    },
}

/// The relay's handle on one session's connection.
#[derive(Debug)]
pub(super) struct Link {
    /// Frames for it, in the session's order.
    pub(super) orders: mpsc::Sender<Order>,
    /// Whether the connection is up (CONNECTED received).
    pub(super) up: AtomicBool,
    /// Subscriptions (by id) the broker confirmed.
    pub(super) ready: Readiness,
}

/// Start the connection of `session`; the returned link lives as long as the session uses
/// it (dropping it ends the connection with a DISCONNECT).
pub(super) fn start(
    session: &str,
    config: &RelayConfig,
    broker: Weak<Broker>,
    presence: Arc<dyn PresenceDirectory>,
    stats: Arc<RelayStats>,
    max_frame: usize,
    runtime: &tokio::runtime::Handle,
) -> Arc<Link> {
    let (orders, queue) = mpsc::channel(config.queue);
    let link = Arc::new(Link {
        orders,
        up: AtomicBool::new(false),
        ready: Readiness::default(),
    });
    let task = LinkTask {
        session: session.to_owned(),
        config: config.clone(),
        link: Arc::downgrade(&link),
        queue,
        broker,
        presence,
        stats,
        max_frame,
    };
    runtime.spawn(task.run());
    link
}

/// Close `session` because its broker connection failed.
pub(super) fn close_session(presence: &dyn PresenceDirectory, session: &str, reason: String) {
    let kick = Kick {
        code: BROKER_FAILED,
        reason,
    };
    presence.disconnect(&DisconnectTarget::Session(session.to_owned()), &kick);
}

struct LinkTask {
    session: String,
    config: RelayConfig,
    link: Weak<Link>,
    queue: mpsc::Receiver<Order>,
    broker: Weak<Broker>,
    presence: Arc<dyn PresenceDirectory>,
    stats: Arc<RelayStats>,
    max_frame: usize,
}

/// What the connection keeps about its subscriptions.
#[derive(Default)]
struct Pending {
    /// RECEIPT id of a SUBSCRIBE → the subscription id.
    receipts: HashMap<String, String>,
    /// The last receipt number used.
    next: u64,
}

impl LinkTask {
    async fn run(mut self) {
        let config = self.config.clone();
        let ended = match open(&config, &config.login, &config.passcode, self.max_frame).await {
            Ok((stream, parser, beats)) => {
                let Some(link) = self.link.upgrade() else {
                    return;
                };
                link.up.store(true, Ordering::Relaxed);
                self.stats.session_connects.fetch_add(1, Ordering::Relaxed);
                self.stats.session_connected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(stomp_session = %self.session, broker = %config.address, "session connection to the STOMP broker is up");
                drop(link);
                let (reader, writer) = stream.into_split();
                let ended = self.serve(reader, writer, parser, Pulse::new(beats)).await;
                self.stats.session_connected.fetch_sub(1, Ordering::Relaxed);
                if let Some(link) = self.link.upgrade() {
                    link.up.store(false, Ordering::Relaxed);
                    link.ready.not_live(None);
                }
                ended
            }
            Err(e) => e,
        };
        let reason = match ended {
            Ended::Stopped => return,
            Ended::Broker(ref message) => format!("Broker error: {message}"),
            ref other => format!("Broker unavailable: {other}"),
        };
        self.stats.session_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            stomp_session = %self.session,
            broker = %config.address,
            error = %ended,
            "the session's connection to the STOMP broker failed; closing the session"
        );
        close_session(&*self.presence, &self.session, reason);
    }

    async fn serve(
        &mut self,
        mut reader: tokio::net::tcp::OwnedReadHalf,
        mut writer: OwnedWriteHalf,
        mut parser: FrameParser,
        mut pulse: Pulse,
    ) -> Ended {
        let mut pending = Pending::default();
        let mut buf = vec![0u8; 16 * 1024];
        let mut tick = tokio::time::interval(TICK);
        tick.tick().await;
        if let Err(e) = self.drain_frames(&mut parser, &mut pending) {
            return e;
        }
        loop {
            tokio::select! {
                read = reader.read(&mut buf) => {
                    let drained = pulse
                        .received(read, &buf, &mut parser)
                        .and_then(|()| self.drain_frames(&mut parser, &mut pending));
                    if let Err(e) = drained {
                        return e;
                    }
                }
                next = self.queue.recv() => {
                    let Some(first) = next else {
                        // The session ended: leave politely (the broker requeues what
                        // it did not see ACKed).
                        let bye = Frame::new(Command::Disconnect).encode(Version::V1_2);
                        let _ = write(&mut writer, &bye).await;
                        return Ended::Stopped;
                    };
                    if let Err(e) = self.write_orders(first, &mut pending, &mut writer).await {
                        return e;
                    }
                    pulse.wrote();
                }
                _ = tick.tick() => {
                    if let Some(link) = self.link.upgrade() {
                        link.ready.expire_waiters(LIVE_WAIT);
                    }
                    if let Err(e) = pulse.tick(&mut writer).await {
                        return e;
                    }
                }
            }
        }
    }

    /// Write `first` and whatever else is queued (up to a batch) in one write.
    async fn write_orders(
        &mut self,
        first: Order,
        pending: &mut Pending,
        writer: &mut OwnedWriteHalf,
    ) -> Result<(), Ended> {
        let mut wire = BytesMut::new();
        let mut count = 0;
        let mut sent = 0;
        let mut next = Some(first);
        while let Some(order) = next {
            sent += u64::from(matches!(order, Order::Send { .. }));
            self.encode(order, pending, &mut wire);
            count += 1;
            next = match count < BATCH {
                true => self.queue.try_recv().ok(),
                false => None,
            };
        }
        write(writer, &wire).await?;
        self.stats.sent.fetch_add(sent, Ordering::Relaxed);
        Ok(())
    }

    fn encode(&self, order: Order, pending: &mut Pending, wire: &mut BytesMut) {
        match order {
            Order::Subscribe {
                id,
                destination,
                ack,
                headers,
            } => {
                pending.next += 1;
                let receipt = format!("sub-{}", pending.next);
                let ack = match ack {
                    AckMode::Auto => "auto",
                    AckMode::Client => "client",
                    AckMode::ClientIndividual => "client-individual",
                };
                // A queue made for this subscription alone is exclusive to this connection,
                // unless the client asks for a queue that outlives it.
                let lasting = headers.iter().any(|(name, value)| {
                    name == "exclusive"
                        || (matches!(name.as_str(), "durable" | "persistent") && value == "true")
                        || (name == "auto-delete" && value == "false")
                });
                let exclusive = !lasting && per_subscription_queue(&destination);
                let mut frame = Frame::new(Command::Subscribe)
                    .header("id", id.clone())
                    .header("destination", destination)
                    .header("ack", ack)
                    .header("receipt", receipt.clone());
                for (name, value) in headers {
                    frame.add_header(name, value);
                }
                if exclusive {
                    frame.add_header("exclusive".to_owned(), "true".to_owned());
                }
                frame.encode_into(Version::V1_2, wire);
                pending.receipts.insert(receipt, id);
                self.stats.subscribes.fetch_add(1, Ordering::Relaxed);
            }
            Order::Unsubscribe { id } => {
                pending.receipts.retain(|_, sub| *sub != id);
                Frame::new(Command::Unsubscribe)
                    .header("id", id)
                    .encode_into(Version::V1_2, wire);
            }
            Order::Send {
                destination,
                message,
            } => put_send(&destination, &message, wire),
            Order::Ack { id } => {
                Frame::new(Command::Ack)
                    .header("id", id)
                    .encode_into(Version::V1_2, wire);
            }
            Order::Nack { id } => {
                Frame::new(Command::Nack)
                    .header("id", id)
                    .encode_into(Version::V1_2, wire);
            }
        }
    }

    /// Hand every complete frame to its subscription; a RECEIPT confirms a SUBSCRIBE.
    fn drain_frames(&self, parser: &mut FrameParser, pending: &mut Pending) -> Result<(), Ended> {
        while let Some(frame) = parser
            .next_frame()
            .map_err(|e| Ended::Protocol(e.to_string()))?
        {
            match frame.command {
                Command::Message => self.deliver(frame),
                Command::Receipt => {
                    let id = frame.get("receipt-id").unwrap_or_default();
                    if let Some(sub) = pending.receipts.remove(id)
                        && let Some(link) = self.link.upgrade()
                    {
                        link.ready.confirmed(&sub);
                    }
                }
                Command::Error => return Err(Ended::Broker(describe(&frame))),
                _ => {}
            }
        }
        Ok(())
    }

    fn deliver(&self, frame: Frame) {
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        let Some(subscription) = frame.get("subscription").map(str::to_owned) else {
            return;
        };
        // The broker's ack id is the message id the client sees and ACKs by.
        let Some(id) = frame.get("ack").or_else(|| frame.get("message-id")) else {
            return;
        };
        let id = id.to_owned();
        let redelivered = frame.get("redelivered") == Some("true");
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let message = Arc::new(Published::new(id, &frame.headers, frame.body));
        broker.deliver_to_subscription(&self.session, &subscription, &message, redelivered);
    }
}
