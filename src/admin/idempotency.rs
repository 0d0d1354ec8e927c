//! The idempotency window: a publish retried with the same `idempotency_key` within
//! `idempotency_window_s` is not published again; it gets the first publish's answer.
//!
//! Bounded in time and count: every key lives for the same window, so insertion order is
//! expiry order and one queue serves both bounds (expired keys leave from the front, and past
//! `idempotency_max_keys` the oldest key leaves early). Keys are checked and recorded under
//! the same lock as the publish itself, so two concurrent retries cannot both publish.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What a publish answered: the message id and how many deliveries it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAnswer {
    /// The message id every copy carries.
    pub id: String,
    /// Deliveries made.
    pub delivered: usize,
}

/// Remembered keys and their answers.
#[derive(Debug)]
pub struct IdempotencyWindow {
    /// How long a key is remembered.
    window: Duration,
    /// The most keys remembered.
    max_keys: usize,
    /// Key → (when it was recorded, the answer).
    answers: HashMap<String, (Instant, PublishAnswer)>,
    /// Keys in recording order, with the time they were recorded.
    order: VecDeque<(String, Instant)>,
}

impl IdempotencyWindow {
    /// An empty window.
    pub fn new(window: Duration, max_keys: usize) -> IdempotencyWindow {
        IdempotencyWindow {
            window,
            max_keys: max_keys.max(1),
            answers: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The answer recorded for `key` within the window, if any.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<PublishAnswer> {
        self.expire(now);
        self.answers.get(key).map(|(_, answer)| answer.clone())
    }

    /// Record the answer to a publish with `key`.
    pub fn insert(&mut self, key: String, answer: PublishAnswer, now: Instant) {
        self.expire(now);
        while self.answers.len() >= self.max_keys {
            if !self.pop_oldest() {
                break;
            }
        }
        self.order.push_back((key.clone(), now));
        self.answers.insert(key, (now, answer));
    }

    /// Keys remembered now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// Whether no key is remembered.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((_, at)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            self.pop_oldest();
        }
    }

    /// Forget the oldest key; false when there is none.
    fn pop_oldest(&mut self) -> bool {
        let Some((key, at)) = self.order.pop_front() else {
            return false;
        };
        // A key recorded again later has a newer entry; only its own record removes it.
        if self.answers.get(&key).is_some_and(|(t, _)| *t == at) {
            self.answers.remove(&key);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: &str) -> PublishAnswer {
        PublishAnswer {
            id: id.into(),
            delivered: 1,
        }
    }

    #[test]
    fn keys_are_remembered_for_the_window_only() {
        let start = Instant::now();
        let mut w = IdempotencyWindow::new(Duration::from_secs(10), 100);
        w.insert("k".into(), answer("m1"), start);
        assert_eq!(
            w.get("k", start + Duration::from_secs(9)),
            Some(answer("m1"))
        );
        assert_eq!(w.get("k", start + Duration::from_secs(10)), None);
        assert!(w.is_empty());
    }

    #[test]
    fn the_oldest_key_leaves_first_past_the_bound() {
        let now = Instant::now();
        let mut w = IdempotencyWindow::new(Duration::from_secs(10), 2);
        w.insert("a".into(), answer("1"), now);
        w.insert("b".into(), answer("2"), now);
        w.insert("c".into(), answer("3"), now);
        assert_eq!(w.len(), 2);
        assert_eq!(w.get("a", now), None);
        assert_eq!(w.get("c", now), Some(answer("3")));
    }
}
