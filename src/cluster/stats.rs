//! Counters of the Redis bridge: what crossed, what was skipped and why, and how often the
//! connections to Redis were re-established. Relaxed atomics: statistics, not
//! synchronisation.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The bridge's counters.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Envelopes published to Redis.
    pub published: AtomicU64,
    /// Messages not bridged because the outbound queue to Redis was full.
    pub outbound_dropped: AtomicU64,
    /// Messages lost because a PUBLISH pipeline failed (Redis down or too slow).
    pub publish_failed: AtomicU64,
    /// Envelopes received from other nodes and handed to the local broker.
    pub received: AtomicU64,
    /// Our own envelopes coming back from Redis, skipped.
    pub own_skipped: AtomicU64,
    /// Copies of one publish that arrived twice (a channel and a pattern, or two patterns),
    /// skipped.
    pub duplicate_skipped: AtomicU64,
    /// Envelopes that did not decode (other version, truncated, too large).
    pub bad_envelopes: AtomicU64,
    /// Messages too large to bridge, kept local.
    pub oversized: AtomicU64,
    /// Times the subscriber connection was re-established and every interest resubscribed.
    pub resubscribes: AtomicU64,
    /// SUBSCRIBE/PSUBSCRIBE/UNSUBSCRIBE/PUNSUBSCRIBE commands sent.
    pub subscribe_commands: AtomicU64,
    /// Whether the subscriber connection is up now.
    pub connected: AtomicBool,
}

/// Add one.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl ClusterStats {
    /// Every counter by name, for the log, `/api/stats` and `/metrics`.
    pub fn counters(&self) -> [(&'static str, &AtomicU64); 10] {
        [
            ("published", &self.published),
            ("outbound_dropped", &self.outbound_dropped),
            ("publish_failed", &self.publish_failed),
            ("received", &self.received),
            ("own_skipped", &self.own_skipped),
            ("duplicate_skipped", &self.duplicate_skipped),
            ("bad_envelopes", &self.bad_envelopes),
            ("oversized", &self.oversized),
            ("resubscribes", &self.resubscribes),
            ("subscribe_commands", &self.subscribe_commands),
        ]
    }

    /// One log line with every counter.
    pub fn summary(&self) -> String {
        let mut out = summary("cluster:", &self.counters());
        let _ = write!(out, " connected={}", self.connected.load(Ordering::Relaxed));
        out
    }
}

/// `title` and ` name=value` for each counter: one log line.
pub fn summary(title: &str, counters: &[(&str, &AtomicU64)]) -> String {
    let mut out = String::from(title);
    for (name, counter) in counters {
        let _ = write!(out, " {name}={}", counter.load(Ordering::Relaxed));
    }
    out
}
