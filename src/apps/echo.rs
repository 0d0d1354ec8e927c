//! `/echo`: every message goes back unchanged.

use crate::session::{App, Inbound, OutMessage, SessionEvent, SessionHandle};

/// Sends every message back to its sender.
pub struct Echo;

impl App for Echo {
    fn on_session(&self, mut session: SessionHandle) {
        tokio::spawn(async move {
            while let Some(SessionEvent::Message(msg)) = session.recv().await {
                let out = match msg {
                    Inbound::Text(text) => OutMessage::text(text),
                    Inbound::Binary(bytes) => OutMessage::binary(bytes),
                };
                if session.send(out).is_err() {
                    break;
                }
            }
        });
    }
}
