//! Messages sent per destination, for the dashboard's "top destinations by rate".
//!
//! Off until something reads it (the admin listener turns it on), so a gateway without one
//! pays a single relaxed load per SEND. When on, each SEND (and each admin API publish) adds
//! one to its destination's count under a short lock; the reader takes the counts every
//! second and turns them into rates. The map is bounded: past [`MAX_DESTINATIONS`] distinct
//! destinations in one interval, the rest are counted together as "other".

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The most distinct destinations counted per interval.
pub const MAX_DESTINATIONS: usize = 4096;

/// Counts since the last [`DestinationTraffic::take`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TrafficCounts {
    /// Messages per destination.
    pub by_destination: HashMap<String, u64>,
    /// Messages to destinations past the bound.
    pub other: u64,
}

/// Per-destination message counts.
#[derive(Debug, Default)]
pub struct DestinationTraffic {
    /// Whether counting is on.
    enabled: AtomicBool,
    /// The counts of the current interval.
    counts: Mutex<TrafficCounts>,
}

impl DestinationTraffic {
    fn lock(&self) -> MutexGuard<'_, TrafficCounts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start counting.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Count one message sent to `destination`.
    pub fn record(&self, destination: &str) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let mut counts = self.lock();
        if let Some(n) = counts.by_destination.get_mut(destination) {
            *n += 1;
        } else if counts.by_destination.len() < MAX_DESTINATIONS {
            counts.by_destination.insert(destination.to_owned(), 1);
        } else {
            counts.other += 1;
        }
    }

    /// The counts since the last call, and start a new interval.
    pub fn take(&self) -> TrafficCounts {
        std::mem::take(&mut *self.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_when_enabled_and_stays_bounded() {
        let t = DestinationTraffic::default();
        t.record("/topic/a");
        assert_eq!(t.take(), TrafficCounts::default());
        t.enable();
        t.record("/topic/a");
        t.record("/topic/a");
        for i in 0..MAX_DESTINATIONS + 5 {
            t.record(&format!("/topic/x{i}"));
        }
        let counts = t.take();
        assert_eq!(counts.by_destination["/topic/a"], 2);
        assert_eq!(counts.by_destination.len(), MAX_DESTINATIONS);
        assert_eq!(counts.other, 6);
        assert!(t.take().by_destination.is_empty());
    }
}
