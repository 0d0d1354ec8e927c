//! `/broadcast`: every message goes to every open session of the service. The message is
//! built once and shared by all recipients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::session::{App, Inbound, OutMessage, SessionEvent, SessionHandle, SessionSender};

/// Relays every message to all sessions.
#[derive(Default)]
pub struct Broadcast {
    /// The open sessions, by log id.
    members: Arc<Mutex<HashMap<u64, SessionSender>>>,
}

impl App for Broadcast {
    fn on_session(&self, mut session: SessionHandle) {
        let members = self.members.clone();
        let id = session.info().log_id;
        lock(&members).insert(id, session.sender().clone());
        tokio::spawn(async move {
            while let Some(SessionEvent::Message(msg)) = session.recv().await {
                let out = match msg {
                    Inbound::Text(text) => OutMessage::text(text),
                    Inbound::Binary(bytes) => OutMessage::binary(bytes),
                };
                let recipients: Vec<SessionSender> = lock(&members).values().cloned().collect();
                for r in recipients {
                    let _ = r.send(out.clone());
                }
            }
            lock(&members).remove(&id);
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
