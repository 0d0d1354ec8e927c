//! Events and counters of the STOMP core (spec §11).
//!
//! Events go out on a bounded `tokio::sync::broadcast` channel: publishing never waits, and a
//! subscriber that falls behind loses the oldest events (and learns how many) instead of
//! slowing sessions down. Counters are plain atomics, updated with relaxed ordering: they are
//! statistics, not synchronisation.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::broadcast;

use super::frame::{Command, Version};
use crate::session::TransportKind;

/// Why a STOMP session ended, as reported in [`StompEvent::Disconnect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectCause {
    /// The client closed the transport without DISCONNECT.
    Client,
    /// The client sent DISCONNECT.
    Disconnect,
    /// The client went silent past the heart-beat window.
    HeartBeatTimeout,
    /// The outbound queue overflowed.
    SendLimit,
    /// No CONNECT arrived in time.
    ConnectTimeout,
    /// We sent ERROR and closed.
    ProtocolError,
    /// The client sent frames faster than `max_frames_per_second`; ERROR, then close 4429.
    RateLimited,
    /// Nothing arrived for `idle_timeout_ms`; ERROR, then close 4408.
    IdleTimeout,
    /// The transport failed or timed out.
    TransportError,
    /// The server is shutting down.
    Shutdown,
    /// An operator or backend closed it (the admin API's disconnect): ERROR, then close.
    Kicked,
}

impl DisconnectCause {
    /// Every cause, in the order of [`StompStats::closed`].
    pub const ALL: [DisconnectCause; 11] = [
        DisconnectCause::Client,
        DisconnectCause::Disconnect,
        DisconnectCause::HeartBeatTimeout,
        DisconnectCause::SendLimit,
        DisconnectCause::ConnectTimeout,
        DisconnectCause::ProtocolError,
        DisconnectCause::RateLimited,
        DisconnectCause::IdleTimeout,
        DisconnectCause::TransportError,
        DisconnectCause::Shutdown,
        DisconnectCause::Kicked,
    ];

    /// The name the cause is reported under (metrics, JSON stats).
    pub fn name(self) -> &'static str {
        match self {
            DisconnectCause::Client => "client",
            DisconnectCause::Disconnect => "disconnect",
            DisconnectCause::HeartBeatTimeout => "heartbeat_timeout",
            DisconnectCause::SendLimit => "send_limit",
            DisconnectCause::ConnectTimeout => "connect_timeout",
            DisconnectCause::ProtocolError => "protocol_error",
            DisconnectCause::RateLimited => "rate_limited",
            DisconnectCause::IdleTimeout => "idle_timeout",
            DisconnectCause::TransportError => "transport_error",
            DisconnectCause::Shutdown => "shutdown",
            DisconnectCause::Kicked => "kicked",
        }
    }
}

/// A lifecycle event of one STOMP session.
#[derive(Debug, Clone)]
pub enum StompEvent {
    /// CONNECT received, before authentication.
    Connect {
        /// The STOMP session id.
        session: String,
        /// The carrier.
        transport: TransportKind,
        /// The peer address.
        remote_addr: SocketAddr,
        /// The CONNECT headers, credentials removed (`passcode`, `Authorization` and the
        /// authenticator's token header, `[auth] connect_header`).
        headers: Vec<(String, String)>,
    },
    /// CONNECTED sent.
    Connected {
        /// The STOMP session id.
        session: String,
        /// The principal, if any.
        user: Option<String>,
        /// The negotiated version.
        version: Version,
        /// Negotiated client→server interval in ms (0: off).
        client_heartbeat_ms: u64,
        /// Negotiated server→client interval in ms (0: off).
        server_heartbeat_ms: u64,
    },
    /// A subscription became active.
    Subscribe {
        /// The STOMP session id.
        session: String,
        /// The subscription id.
        subscription: String,
        /// The destination the client named.
        destination: String,
        /// The destination actually subscribed (differs for user destinations).
        target: String,
    },
    /// A subscription was removed by UNSUBSCRIBE.
    Unsubscribe {
        /// The STOMP session id.
        session: String,
        /// The subscription id.
        subscription: String,
    },
    /// The session ended; exactly once per session that was opened.
    Disconnect {
        /// The STOMP session id.
        session: String,
        /// The principal, if any.
        user: Option<String>,
        /// The close code used or received.
        code: u16,
        /// The close reason.
        reason: String,
        /// What ended it.
        cause: DisconnectCause,
    },
}

/// Where events are published.
#[derive(Debug, Clone)]
pub struct EventBus {
    /// The bounded channel.
    tx: broadcast::Sender<StompEvent>,
}

impl EventBus {
    /// A bus keeping at most `capacity` events per subscriber.
    pub fn new(capacity: usize) -> EventBus {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventBus { tx }
    }

    /// Publish without waiting; without subscribers the event is simply dropped.
    pub fn emit(&self, event: StompEvent) {
        let _ = self.tx.send(event);
    }

    /// A new subscriber, seeing events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StompEvent> {
        self.tx.subscribe()
    }
}

/// Session kinds as Spring's stats group them (spec §12.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindGroup {
    /// Every WebSocket flavour.
    Ws,
    /// Streaming HTTP transports.
    HttpStream,
    /// Polling HTTP transports.
    HttpPoll,
    /// Plain TCP.
    Tcp,
}

impl KindGroup {
    /// The group of a transport kind.
    pub fn of(kind: TransportKind) -> KindGroup {
        match kind {
            TransportKind::Websocket
            | TransportKind::WebsocketHixie76
            | TransportKind::RawWebsocket => KindGroup::Ws,
            TransportKind::XhrStreaming | TransportKind::EventSource | TransportKind::HtmlFile => {
                KindGroup::HttpStream
            }
            TransportKind::XhrPolling | TransportKind::JsonpPolling => KindGroup::HttpPoll,
            TransportKind::Tcp => KindGroup::Tcp,
        }
    }
}

/// Every counter of the STOMP core.
#[derive(Debug, Default)]
pub struct StompStats {
    /// Current sessions per [`KindGroup`] (ws, http_stream, http_poll, tcp).
    pub current_sessions: [AtomicI64; 4],
    /// Sessions ever opened.
    pub total_sessions: AtomicU64,
    /// Sessions that never completed CONNECT in time.
    pub connect_failures: AtomicU64,
    /// Sessions closed because their send buffer overflowed.
    pub send_limit_closes: AtomicU64,
    /// Sessions lost to transport errors or heart-beat timeouts.
    pub transport_errors: AtomicU64,
    /// Frames processed per command (inbound), indexed by [`Command::index`].
    pub frames_in: [AtomicU64; 15],
    /// CONNECTED frames sent.
    pub connected_sent: AtomicU64,
    /// ERROR frames sent.
    pub errors_sent: AtomicU64,
    /// SUBSCRIBE and SEND frames refused by the ACL.
    pub access_denied: AtomicU64,
    /// Headers dropped because the session's version cannot represent them.
    pub headers_dropped: AtomicU64,
    /// Messages published into the broker.
    pub published: AtomicU64,
    /// MESSAGE frames handed to carriers.
    pub delivered: AtomicU64,
    /// Published on a destination nobody subscribed to (broadcast).
    pub dropped_no_subscriber: AtomicU64,
    /// SENDs to destinations no prefix matches.
    pub dropped_unroutable: AtomicU64,
    /// Deliveries refused because a session's buffers were full, or discarded from its full
    /// queue under `overflow_strategy = "drop"`.
    pub dropped_overflow: AtomicU64,
    /// Binary MESSAGEs not deliverable over a text-only carrier.
    pub dropped_unencodable: AtomicU64,
    /// Messages to users with no session.
    pub dropped_user_unknown: AtomicU64,
    /// Oldest messages dropped from full competing queues.
    pub dropped_queue_full: AtomicU64,
    /// ACKs applied.
    pub acks: AtomicU64,
    /// NACKs applied.
    pub nacks: AtomicU64,
    /// Messages redelivered (competing queues).
    pub redeliveries: AtomicU64,
    /// ACK/NACK naming nothing outstanding.
    pub ack_unknown: AtomicU64,
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Transactions aborted, explicitly or by disconnect.
    pub aborts: AtomicU64,
    /// Sessions closed for client heart-beat silence.
    pub heartbeat_timeouts: AtomicU64,
    /// Sessions closed for sending frames faster than `max_frames_per_second`.
    pub rate_limited: AtomicU64,
    /// Sessions closed because nothing arrived for `idle_timeout_ms`.
    pub idle_timeouts: AtomicU64,
    /// Active subscriptions.
    pub subscriptions: AtomicI64,
    /// Bytes received from clients on every STOMP carrier (frames and heart-beat EOLs).
    pub bytes_in: AtomicU64,
    /// Bytes queued for clients on every STOMP carrier (frames and heart-beat EOLs). Added
    /// to once per delivery, from every core: sharded.
    pub bytes_out: ShardedCounter,
    /// Sessions ended per [`KindGroup`] and cause, in [`DisconnectCause::ALL`] order.
    pub closed: [[AtomicU64; 11]; 4],
}

/// Shards of a [`ShardedCounter`]: enough that the threads of a large machine rarely share one.
const SHARDS: usize = 16;

/// One shard, alone on its cache line (and the adjacent one, which CPUs prefetch together).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(AtomicU64);

/// A counter that threads add to without sharing a cache line: each thread adds to its own
/// shard, and a read sums them. For the counters the fan-out touches once per delivery.
#[derive(Debug, Default)]
pub struct ShardedCounter {
    shards: [Shard; SHARDS],
}

impl ShardedCounter {
    /// Add `value`.
    pub fn fetch_add(&self, value: u64, order: Ordering) {
        self.shards[shard_index()].0.fetch_add(value, order);
    }

    /// The sum of every shard.
    pub fn load(&self, order: Ordering) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |sum, shard| sum.wrapping_add(shard.0.load(order)))
    }
}

/// This thread's shard, assigned round-robin on first use.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|index| *index)
}

/// Add one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl StompStats {
    /// Sessions on carriers of `group` that ended for `cause`.
    pub fn closed(&self, group: KindGroup, cause: DisconnectCause) -> u64 {
        let slot = DisconnectCause::ALL.iter().position(|c| *c == cause);
        self.closed[group as usize][slot.unwrap_or(0)].load(Ordering::Relaxed)
    }

    /// Count a session opened on `kind`.
    pub fn session_opened(&self, kind: TransportKind) {
        self.current_sessions[KindGroup::of(kind) as usize].fetch_add(1, Ordering::Relaxed);
        bump(&self.total_sessions);
    }

    /// Count a session on `kind` that ended for `cause`.
    pub fn session_closed(&self, kind: TransportKind, cause: DisconnectCause) {
        let group = KindGroup::of(kind) as usize;
        self.current_sessions[group].fetch_sub(1, Ordering::Relaxed);
        let slot = DisconnectCause::ALL.iter().position(|c| *c == cause);
        bump(&self.closed[group][slot.unwrap_or(0)]);
    }

    /// Count an inbound frame.
    pub fn frame_received(&self, command: Command) {
        bump(&self.frames_in[command.index()]);
    }

    /// A frame counter's value.
    pub fn frames_received(&self, command: Command) -> u64 {
        self.frames_in[command.index()].load(Ordering::Relaxed)
    }

    /// The Spring-style summary line (spec §11.2).
    pub fn summary(&self) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let current: Vec<i64> = self
            .current_sessions
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let mut line = String::new();
        let _ = write!(
            line,
            "WebSocketSession[{} current WS({})-HttpStream({})-HttpPoll({})-Tcp({}), {} total, \
             {} closed abnormally ({} connect failure, {} send limit, {} transport error)], ",
            current.iter().sum::<i64>(),
            current[0],
            current[1],
            current[2],
            current[3],
            load(&self.total_sessions),
            load(&self.connect_failures)
                + load(&self.send_limit_closes)
                + load(&self.transport_errors),
            load(&self.connect_failures),
            load(&self.send_limit_closes),
            load(&self.transport_errors),
        );
        let _ = write!(
            line,
            "stompSubProtocol[processed CONNECT({})-CONNECTED({})-DISCONNECT({})], ",
            self.frames_received(Command::Connect) + self.frames_received(Command::Stomp),
            load(&self.connected_sent),
            self.frames_received(Command::Disconnect),
        );
        let _ = write!(
            line,
            "broker[{} subscriptions, {} published, {} delivered, dropped: {} no_subscriber, \
             {} unroutable, {} overflow, {} unencodable, {} user_unknown, {} queue_full; \
             {} acks, {} nacks, {} redeliveries, {} ack_unknown; {} commits, {} aborts]",
            self.subscriptions.load(Ordering::Relaxed),
            load(&self.published),
            load(&self.delivered),
            load(&self.dropped_no_subscriber),
            load(&self.dropped_unroutable),
            load(&self.dropped_overflow),
            load(&self.dropped_unencodable),
            load(&self.dropped_user_unknown),
            load(&self.dropped_queue_full),
            load(&self.acks),
            load(&self.nacks),
            load(&self.redeliveries),
            load(&self.ack_unknown),
            load(&self.commits),
            load(&self.aborts),
        );
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sharded_counter_sums_what_every_thread_added() {
        let counter = ShardedCounter::default();
        std::thread::scope(|scope| {
            for t in 0..8u64 {
                let counter = &counter;
                scope.spawn(move || {
                    for _ in 0..1000 {
                        counter.fetch_add(t + 1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(counter.load(Ordering::Relaxed), 1000 * (1..=8).sum::<u64>());
    }
}
