//! Counters of one SockJS service: sessions by transport, closes by cause, messages and bytes
//! each way, slow-consumer terminations and drops, and refused sessions by limit.
//!
//! Plain relaxed atomics, read only when someone asks (the admin listener's `/metrics` and
//! `/api/stats`): the hot path pays one uncontended-in-practice atomic add per event and never
//! formats, allocates or locks for statistics. Outbound traffic is counted when a receiver
//! takes queued messages (one add per batch), not per queued message, so a fan-out to many
//! sessions costs nothing extra here.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::limits::LimitReached;
use crate::session::{CloseCause, TransportKind};

/// Every transport kind a SockJS service carries, in the order of the counters' slots.
pub const TRANSPORTS: [TransportKind; 8] = [
    TransportKind::Websocket,
    TransportKind::WebsocketHixie76,
    TransportKind::RawWebsocket,
    TransportKind::XhrPolling,
    TransportKind::XhrStreaming,
    TransportKind::EventSource,
    TransportKind::HtmlFile,
    TransportKind::JsonpPolling,
];

/// Every close cause, in the order of the counters' slots.
pub const CLOSE_CAUSES: [CloseCause; 7] = [
    CloseCause::Client,
    CloseCause::Timeout,
    CloseCause::Interrupted,
    CloseCause::Protocol,
    CloseCause::Application,
    CloseCause::SendLimit,
    CloseCause::Shutdown,
];

/// Every session limit, in the order of the counters' slots.
pub const LIMITS: [LimitReached; 3] = [
    LimitReached::Total,
    LimitReached::PerIp,
    LimitReached::PerPrincipal,
];

/// The counter slot of a transport kind (STOMP over TCP never reaches a SockJS service; it
/// would share the last slot rather than panic).
fn transport_slot(kind: TransportKind) -> usize {
    TRANSPORTS.iter().position(|t| *t == kind).unwrap_or(7)
}

/// The name a close cause is reported under.
pub fn cause_name(cause: CloseCause) -> &'static str {
    match cause {
        CloseCause::Client => "client",
        CloseCause::Timeout => "timeout",
        CloseCause::Interrupted => "interrupted",
        CloseCause::Protocol => "protocol",
        CloseCause::Application => "application",
        CloseCause::SendLimit => "send_limit",
        CloseCause::Shutdown => "shutdown",
    }
}

/// The configuration key a session limit comes from, the name it is reported under.
pub fn limit_name(limit: LimitReached) -> &'static str {
    match limit {
        LimitReached::Total => "max_sessions",
        LimitReached::PerIp => "max_sessions_per_ip",
        LimitReached::PerPrincipal => "max_sessions_per_principal",
    }
}

/// The counters of one service.
#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Live sessions per transport ([`TRANSPORTS`] order).
    open: [AtomicI64; 8],
    /// Sessions ever opened per transport.
    opened: [AtomicU64; 8],
    /// Sessions ended per cause ([`CLOSE_CAUSES`] order).
    closed: [AtomicU64; 7],
    /// Messages the clients sent that reached the application.
    messages_in: AtomicU64,
    /// Their payload bytes.
    bytes_in: AtomicU64,
    /// Messages taken from outbound queues by receivers, to be written to clients.
    messages_out: AtomicU64,
    /// Their payload bytes.
    bytes_out: AtomicU64,
    /// Sessions ended because their client did not keep up (queue overflow under
    /// `terminate`, or a write blocked past `send_time_limit`).
    slow_consumer_terminations: AtomicU64,
    /// Queued messages discarded for a slow client under `overflow_strategy = "drop"`, or
    /// refused because discarding could not make room.
    slow_consumer_drops: AtomicU64,
    /// New sessions refused per limit ([`LIMITS`] order).
    refused: [AtomicU64; 3],
}

/// Keeps a session counted as open until it is dropped (when the session ends, or is dropped
/// unfinished): the open gauge cannot drift whatever path ends a session.
#[derive(Debug)]
pub struct OpenSession {
    /// The counters to give the open count back to.
    stats: Arc<ServiceStats>,
    /// The slot counted.
    slot: usize,
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.stats.open[self.slot].fetch_sub(1, Ordering::Relaxed);
    }
}

/// A point-in-time copy of a service's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSnapshot {
    /// Live sessions per transport ([`TRANSPORTS`] order).
    pub open: [i64; 8],
    /// Sessions ever opened per transport.
    pub opened: [u64; 8],
    /// Sessions ended per cause ([`CLOSE_CAUSES`] order).
    pub closed: [u64; 7],
    /// Messages in from clients.
    pub messages_in: u64,
    /// Bytes in from clients.
    pub bytes_in: u64,
    /// Messages out to clients.
    pub messages_out: u64,
    /// Bytes out to clients.
    pub bytes_out: u64,
    /// Slow-consumer terminations.
    pub slow_consumer_terminations: u64,
    /// Slow-consumer drops.
    pub slow_consumer_drops: u64,
    /// Refused sessions per limit ([`LIMITS`] order).
    pub refused: [u64; 3],
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl ServiceStats {
    /// Count a session opened on `kind`; it counts as open until the guard is dropped.
    pub fn session_opened(self: &Arc<Self>, kind: TransportKind) -> OpenSession {
        let slot = transport_slot(kind);
        self.open[slot].fetch_add(1, Ordering::Relaxed);
        add(&self.opened[slot], 1);
        OpenSession {
            stats: self.clone(),
            slot,
        }
    }

    /// Count a session that ended for `cause`.
    pub fn session_closed(&self, cause: CloseCause) {
        let slot = CLOSE_CAUSES.iter().position(|c| *c == cause).unwrap_or(0);
        add(&self.closed[slot], 1);
    }

    /// Count one inbound message of `bytes`.
    pub fn message_in(&self, bytes: usize) {
        add(&self.messages_in, 1);
        add(&self.bytes_in, bytes as u64);
    }

    /// Count `messages` outbound messages of `bytes` in all, taken by a receiver.
    pub fn messages_out(&self, messages: usize, bytes: usize) {
        add(&self.messages_out, messages as u64);
        add(&self.bytes_out, bytes as u64);
    }

    /// Count a session ended because its client did not keep up.
    pub fn slow_consumer_terminated(&self) {
        add(&self.slow_consumer_terminations, 1);
    }

    /// Count `messages` discarded or refused for a slow client.
    pub fn slow_consumer_dropped(&self, messages: usize) {
        add(&self.slow_consumer_drops, messages as u64);
    }

    /// Count a session refused by `limit`.
    pub fn refused(&self, limit: LimitReached) {
        let slot = LIMITS.iter().position(|l| *l == limit).unwrap_or(0);
        add(&self.refused[slot], 1);
    }

    /// Copy every counter.
    pub fn snapshot(&self) -> ServiceSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServiceSnapshot {
            open: std::array::from_fn(|i| self.open[i].load(Ordering::Relaxed)),
            opened: std::array::from_fn(|i| load(&self.opened[i])),
            closed: std::array::from_fn(|i| load(&self.closed[i])),
            messages_in: load(&self.messages_in),
            bytes_in: load(&self.bytes_in),
            messages_out: load(&self.messages_out),
            bytes_out: load(&self.bytes_out),
            slow_consumer_terminations: load(&self.slow_consumer_terminations),
            slow_consumer_drops: load(&self.slow_consumer_drops),
            refused: std::array::from_fn(|i| load(&self.refused[i])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_sessions_are_counted_until_their_guard_drops() {
        let stats = Arc::new(ServiceStats::default());
        let a = stats.session_opened(TransportKind::XhrStreaming);
        let _b = stats.session_opened(TransportKind::Websocket);
        assert_eq!(stats.snapshot().open[4], 1);
        drop(a);
        stats.session_closed(CloseCause::SendLimit);
        let snap = stats.snapshot();
        assert_eq!(snap.open[4], 0);
        assert_eq!(snap.open[0], 1);
        assert_eq!(snap.opened[4], 1);
        assert_eq!(snap.closed[5], 1);
    }
}
