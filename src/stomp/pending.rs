//! The frames of one connection that wait for a backend, and the receipts queued behind them.
//!
//! Receipts go out in frame order, so a RECEIPT also confirms every earlier frame (spec §5.1).
//! A frame forwarded to a backend is answered later; every receipt of a later frame waits
//! behind it, even one the broker could answer at once. The frames themselves do not wait:
//! a SEND to `/topic` after a SEND to `/app` is published at once (as in Spring, where the
//! broker and the controllers run side by side), only its RECEIPT is held until every earlier
//! frame has been confirmed. A failed frame ends the session with ERROR carrying its
//! `receipt-id`, and the receipts behind it are never sent: none of them could confirm it.
//!
//! The answer channel is bounded by the most frames that may wait at once, which the
//! connection enforces before it forwards one more.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::application::{BackendError, Completed, Completion, Outcome};
use super::broker::Published;

/// What a forwarded frame's answer is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A SEND: its answer only confirms it.
    Send,
    /// A SUBSCRIBE: its answer may carry the one MESSAGE for that subscription.
    Subscription {
        /// The subscription id.
        id: String,
        /// The subscribed `/app` destination, the MESSAGE's `destination`.
        destination: String,
    },
}

/// One entry of the receipt order.
#[derive(Debug)]
enum Slot {
    /// A frame a backend has not answered yet.
    Waiting {
        /// The slot number its [`Completion`] answers with.
        id: u64,
        /// The `receipt-id` of the ERROR if it fails.
        blame: Option<String>,
        /// What the answer is for.
        target: Target,
    },
    /// A frame that is done; its receipt (if it asked for one) goes out once every earlier
    /// slot is done.
    Done(Option<String>),
}

/// What the connection must do with one answer.
#[derive(Debug)]
pub(crate) enum Settled {
    /// Confirmed; nothing else to do.
    Accepted,
    /// Confirmed with the MESSAGE for a subscription.
    Reply {
        /// The subscription id.
        subscription: String,
        /// The `/app` destination it subscribed to.
        destination: String,
        /// The message.
        message: Arc<Published>,
    },
    /// Failed: ERROR with this `receipt-id`, then close.
    Failed {
        /// The receipt of the failed frame (or of its COMMIT).
        blame: Option<String>,
        /// Why.
        error: BackendError,
    },
    /// An answer for no waiting slot (cannot happen; ignored).
    Unknown,
}

/// One connection's waiting frames and held-back receipts.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Slots in frame order.
    slots: VecDeque<Slot>,
    /// The next slot number.
    next_id: u64,
    /// How many slots are [`Slot::Waiting`].
    waiting: usize,
    /// The most waiting slots allowed.
    capacity: usize,
    /// Handed to every [`Completion`].
    tx: mpsc::Sender<Completed>,
    /// Where answers arrive.
    rx: mpsc::Receiver<Completed>,
}

impl Pending {
    /// Room for `capacity` frames waiting at once (at least one).
    pub(crate) fn new(capacity: usize) -> Pending {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        Pending {
            slots: VecDeque::new(),
            next_id: 0,
            waiting: 0,
            capacity,
            tx,
            rx,
        }
    }

    /// The most frames that may wait at once.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// A slot for a frame about to be forwarded, or None when `capacity` frames wait already.
    pub(crate) fn begin(&mut self, blame: Option<String>, target: Target) -> Option<Completion> {
        if self.waiting >= self.capacity {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.waiting += 1;
        self.slots.push_back(Slot::Waiting { id, blame, target });
        Some(Completion::new(id, self.tx.clone()))
    }

    /// Queue `receipt` behind the waiting frames; false when none waits (send it now).
    pub(crate) fn hold_receipt(&mut self, receipt: &str) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        self.slots.push_back(Slot::Done(Some(receipt.to_owned())));
        true
    }

    /// Whether nothing waits and nothing is held.
    pub(crate) fn is_idle(&self) -> bool {
        self.slots.is_empty()
    }

    /// An answer that has already arrived, if any.
    pub(crate) fn try_next(&mut self) -> Option<Completed> {
        self.rx.try_recv().ok()
    }

    /// The next answer. Never ends: this side holds a sender too.
    pub(crate) async fn next(&mut self) -> Completed {
        match self.rx.recv().await {
            Some(completed) => completed,
            None => std::future::pending().await,
        }
    }

    /// Mark the answered slot done and say what the answer means.
    pub(crate) fn settle(&mut self, completed: Completed) -> Settled {
        let Some(position) = self
            .slots
            .iter()
            .position(|slot| matches!(slot, Slot::Waiting { id, .. } if *id == completed.slot))
        else {
            return Settled::Unknown;
        };
        let Slot::Waiting { blame, target, .. } =
            std::mem::replace(&mut self.slots[position], Slot::Done(None))
        else {
            return Settled::Unknown;
        };
        self.waiting -= 1;
        match (completed.outcome, target) {
            (Outcome::Failed(error), _) => Settled::Failed { blame, error },
            (Outcome::Reply(message), Target::Subscription { id, destination }) => Settled::Reply {
                subscription: id,
                destination,
                message,
            },
            (Outcome::Reply(_) | Outcome::Accepted, _) => Settled::Accepted,
        }
    }

    /// The receipts now due, in frame order: those of the done slots at the front.
    pub(crate) fn due_receipts(&mut self) -> Vec<String> {
        let mut due = Vec::new();
        while let Some(Slot::Done(_)) = self.slots.front() {
            if let Some(Slot::Done(Some(receipt))) = self.slots.pop_front() {
                due.push(receipt);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published() -> Arc<Published> {
        Arc::new(Published::new(
            "m1".into(),
            &[],
            bytes::Bytes::from_static(b"x"),
        ))
    }

    #[test]
    fn receipts_wait_behind_earlier_frames_and_leave_in_order() {
        let mut pending = Pending::new(4);
        assert!(
            !pending.hold_receipt("before"),
            "nothing waits: send it now"
        );
        let first = pending.begin(Some("r1".into()), Target::Send).unwrap();
        assert!(pending.hold_receipt("r1"));
        let second = pending
            .begin(
                None,
                Target::Subscription {
                    id: "s".into(),
                    destination: "/app/init".into(),
                },
            )
            .unwrap();
        assert!(pending.hold_receipt("r2"));
        second.reply(published());
        let answer = pending.try_next().unwrap();
        assert!(
            matches!(pending.settle(answer), Settled::Reply { subscription, .. } if subscription == "s")
        );
        assert!(
            pending.due_receipts().is_empty(),
            "the first frame still waits"
        );
        first.accept();
        let answer = pending.try_next().unwrap();
        assert!(matches!(pending.settle(answer), Settled::Accepted));
        assert_eq!(pending.due_receipts(), ["r1", "r2"]);
        assert!(pending.is_idle());
    }

    #[test]
    fn capacity_bounds_waiting_frames_and_a_dropped_completion_fails() {
        let mut pending = Pending::new(1);
        let completion = pending.begin(Some("r".into()), Target::Send).unwrap();
        assert!(pending.begin(None, Target::Send).is_none());
        drop(completion);
        let answer = pending.try_next().unwrap();
        match pending.settle(answer) {
            Settled::Failed { blame, error } => {
                assert_eq!(blame.as_deref(), Some("r"));
                assert!(matches!(error, BackendError::Unavailable(_)));
            }
            other => panic!("{other:?}"),
        }
        assert!(pending.begin(None, Target::Send).is_some(), "room again");
    }
}
