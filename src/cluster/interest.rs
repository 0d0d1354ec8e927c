//! What this node wants from Redis: a reference count per channel and per glob.
//!
//! The broker reports every local subscription (and every session of a user); many of them
//! share one Redis channel, so the channel is subscribed while its count is above zero. The
//! table is the *desired* state, and the subscriber connection converges on it: after any
//! change it compares the table with what it has sent and issues the difference as a few
//! batched commands. A subscribe followed by an unsubscribe before the connection looks costs
//! Redis nothing, and after a reconnect "the difference" is simply everything.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use tokio::sync::Notify;

use super::glob::Interest;

/// The desired subscriptions, shared by the handle (writers) and the subscriber task.
#[derive(Debug, Default)]
pub struct InterestTable {
    /// Interest → how many local subscriptions want it.
    counts: Mutex<HashMap<Interest, usize>>,
    /// Wakes the subscriber task after a change of the set (not of a count).
    changed: Notify,
}

impl InterestTable {
    /// Count one more local subscription for `interest`.
    pub fn add(&self, interest: Interest) {
        let mut counts = self.lock();
        let count = counts.entry(interest).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.changed.notify_one();
        }
    }

    /// Count one fewer; unknown interests are ignored.
    pub fn remove(&self, interest: &Interest) {
        let mut counts = self.lock();
        let Some(count) = counts.get_mut(interest) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            counts.remove(interest);
            self.changed.notify_one();
        }
    }

    /// The interests wanted now.
    pub fn snapshot(&self) -> BTreeSet<Interest> {
        self.lock().keys().cloned().collect()
    }

    /// How many local subscriptions want `interest`.
    pub fn count(&self, interest: &Interest) -> usize {
        self.lock().get(interest).copied().unwrap_or(0)
    }

    /// Resolves after the next change of the set.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Interest, usize>> {
        match self.counts.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// The commands that take a connection from `sent` to `wanted`, at most `batch` names each.
pub fn diff(sent: &BTreeSet<Interest>, wanted: &BTreeSet<Interest>, batch: usize) -> Vec<Command> {
    let mut commands = Vec::new();
    let mut group = |verb: Verb, names: Vec<&String>| {
        for chunk in names.chunks(batch.max(1)) {
            commands.push(Command {
                verb,
                names: chunk.iter().map(|s| s.to_string()).collect(),
            });
        }
    };
    let pick = |set: &BTreeSet<Interest>, other: &BTreeSet<Interest>, glob: bool| -> Vec<String> {
        set.difference(other)
            .filter_map(|i| match (i, glob) {
                (Interest::Channel(c), false) | (Interest::Glob(c), true) => Some(c.clone()),
                _ => None,
            })
            .collect()
    };
    let subscribe = pick(wanted, sent, false);
    let psubscribe = pick(wanted, sent, true);
    let unsubscribe = pick(sent, wanted, false);
    let punsubscribe = pick(sent, wanted, true);
    group(Verb::Subscribe, subscribe.iter().collect());
    group(Verb::PSubscribe, psubscribe.iter().collect());
    group(Verb::Unsubscribe, unsubscribe.iter().collect());
    group(Verb::PUnsubscribe, punsubscribe.iter().collect());
    commands
}

/// A subscription command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// SUBSCRIBE.
    Subscribe,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// PSUBSCRIBE.
    PSubscribe,
    /// PUNSUBSCRIBE.
    PUnsubscribe,
}

impl Verb {
    /// The Redis command name.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Subscribe => "SUBSCRIBE",
            Verb::Unsubscribe => "UNSUBSCRIBE",
            Verb::PSubscribe => "PSUBSCRIBE",
            Verb::PUnsubscribe => "PUNSUBSCRIBE",
        }
    }
}

/// One batched subscription command (names without the channel prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Which command.
    pub verb: Verb,
    /// Its channels or globs.
    pub names: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> Interest {
        Interest::Channel(s.into())
    }

    #[test]
    fn counts_and_converges() {
        let table = InterestTable::default();
        table.add(ch("/a"));
        table.add(ch("/a"));
        table.add(Interest::Glob("/t/*".into()));
        table.remove(&ch("/a"));
        assert_eq!(table.count(&ch("/a")), 1);
        let wanted = table.snapshot();
        let commands = diff(&BTreeSet::new(), &wanted, 512);
        assert_eq!(commands.len(), 2);
        assert_eq!(commands[0].verb, Verb::Subscribe);
        assert_eq!(commands[1].verb, Verb::PSubscribe);
        table.remove(&ch("/a"));
        table.remove(&ch("/never"));
        let commands = diff(&wanted, &table.snapshot(), 512);
        assert_eq!(
            commands,
            vec![Command {
                verb: Verb::Unsubscribe,
                names: vec!["/a".into()]
            }]
        );
    }

    #[test]
    fn batches_large_changes() {
        let wanted: BTreeSet<Interest> = (0..1200).map(|i| ch(&format!("/c{i}"))).collect();
        let commands = diff(&BTreeSet::new(), &wanted, 512);
        let sizes: Vec<usize> = commands.iter().map(|c| c.names.len()).collect();
        assert_eq!(sizes, [512, 512, 176]);
    }
}
