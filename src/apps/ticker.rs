//! `/ticker`: sends `tick!` every second until the session closes.

use std::time::Duration;

use crate::session::{App, SessionEvent, SessionHandle};

/// Ticks once a second.
pub struct Ticker;

impl App for Ticker {
    fn on_session(&self, mut session: SessionHandle) {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.tick().await;
            loop {
                tokio::select! {
                    event = session.recv() => match event {
                        Some(SessionEvent::Message(_)) => {}
                        _ => break,
                    },
                    _ = interval.tick() => {
                        if session.send_text("tick!").is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
}
