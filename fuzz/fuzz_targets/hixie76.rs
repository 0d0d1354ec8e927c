//! Fuzz hixie-76: the handshake arithmetic (arbitrary key headers and key3 bytes never panic,
//! and a key's value, when it has one, is its digits divided by its spaces), and the inbound
//! frame decoder (arbitrary bytes, split at an arbitrary point, never panic and decode the
//! same as when they arrive at once).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockjs_gateway::sockjs::transport::hixie76::{FrameDecoder, challenge, key_value};
use sockjs_gateway::sockjs::transport::websocket::WsIn;

/// Every event `pieces` decode to, as comparable text, up to the first non-text event.
fn events(pieces: &[&[u8]]) -> Vec<String> {
    let mut decoder = FrameDecoder::new(4096);
    let mut out = Vec::new();
    for piece in pieces {
        decoder.buffer().extend_from_slice(piece);
        while let Some(event) = decoder.next_event() {
            let (text, done) = match event {
                WsIn::Text(t) => (format!("t{t}"), false),
                WsIn::Closed => ("closed".to_string(), true),
                WsIn::Dropped => ("dropped".to_string(), true),
                WsIn::Failed(code, _) => (format!("f{code}"), true),
                WsIn::Binary(_) | WsIn::Pong => ("other".to_string(), true),
            };
            out.push(text);
            if done {
                return out;
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (k1, k2, rest) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut key3 = [0u8; 8];
    for (slot, b) in key3.iter_mut().zip(rest.bytes()) {
        *slot = b;
    }
    if let (Some(v1), Some(v2)) = (key_value(k1), key_value(k2)) {
        let spaces = k1.chars().filter(|c| *c == ' ').count() as u64;
        assert!(spaces > 0);
        let _ = challenge(v1, v2, &key3);
    }
    if let Some((&split, frames)) = data.split_first() {
        let at = usize::from(split).min(frames.len());
        let (a, b) = frames.split_at(at);
        assert_eq!(events(&[frames]), events(&[a, b]));
    }
});
