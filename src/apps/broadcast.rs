//! `/broadcast`: every message goes to every open session of the service. The message is
//! built once and shared by all recipients. Senders read a shared snapshot of the member
//! list, rebuilt only after membership changed, so a message costs one `Arc` clone of the
//! list rather than a copy of it, and a join or leave costs O(1).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::session::{App, Inbound, OutMessage, SessionEvent, SessionHandle, SessionSender};

/// Relays every message to all sessions.
#[derive(Default)]
pub struct Broadcast {
    /// Membership and its cached snapshot.
    members: Arc<Mutex<Members>>,
}

#[derive(Default)]
struct Members {
    /// The open sessions, by log id.
    by_id: HashMap<u64, SessionSender>,
    /// The senders as of the last change; None after a join or leave.
    snapshot: Option<Arc<Vec<SessionSender>>>,
}

impl Members {
    fn snapshot(&mut self) -> Arc<Vec<SessionSender>> {
        let by_id = &self.by_id;
        self.snapshot
            .get_or_insert_with(|| Arc::new(by_id.values().cloned().collect()))
            .clone()
    }
}

impl App for Broadcast {
    fn on_session(&self, mut session: SessionHandle) {
        let members = self.members.clone();
        let id = session.info().log_id;
        {
            let mut m = lock(&members);
            m.by_id.insert(id, session.sender().clone());
            m.snapshot = None;
        }
        tokio::spawn(async move {
            while let Some(SessionEvent::Message(msg)) = session.recv().await {
                let out = match msg {
                    Inbound::Text(text) => OutMessage::text(text),
                    Inbound::Binary(bytes) => OutMessage::binary(bytes),
                };
                let snapshot = lock(&members).snapshot();
                for member in snapshot.iter() {
                    let _ = member.send(out.clone());
                }
            }
            let mut m = lock(&members);
            m.by_id.remove(&id);
            m.snapshot = None;
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
