//! `/amplify`: a message `n` is answered with 2^n `x` characters (n in 1..=18, else 1).

use crate::session::{App, SessionEvent, SessionHandle};

/// Answers `n` with a string of 2^n `x`.
pub struct Amplify;

/// The reply length for a message: n = floor(message as a number), 1 unless 0 < n < 19.
fn amplified_len(msg: &str) -> usize {
    let n = msg.trim().parse::<f64>().map(f64::floor).unwrap_or(0.0);
    let n = if n > 0.0 && n < 19.0 { n as u32 } else { 1 };
    1usize << n
}

impl App for Amplify {
    fn on_session(&self, mut session: SessionHandle) {
        tokio::spawn(async move {
            while let Some(SessionEvent::Message(msg)) = session.recv().await {
                let text = match &msg {
                    crate::session::Inbound::Text(t) => t.clone(),
                    crate::session::Inbound::Binary(b) => String::from_utf8_lossy(b).into_owned(),
                };
                if session.send_text("x".repeat(amplified_len(&text))).is_err() {
                    break;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn amplify_follows_the_spec() {
        assert_eq!(super::amplified_len("4"), 16);
        assert_eq!(super::amplified_len("18"), 1 << 18);
        assert_eq!(super::amplified_len("19"), 2);
        assert_eq!(super::amplified_len("-3"), 2);
        assert_eq!(super::amplified_len("x"), 2);
        assert_eq!(super::amplified_len("2.7"), 4);
    }
}
