//! Fuzz the SockJS inbound decoders (xhr_send / jsonp_send bodies and WebSocket messages):
//! arbitrary bytes never panic, and whatever decodes re-encodes and decodes to the same
//! messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockjs_gateway::sockjs::frame::{decode_send_body, decode_ws_message, quote};

fuzz_target!(|data: &[u8]| {
    if let Ok(messages) = decode_send_body(data) {
        let mut body = b"[".to_vec();
        for (i, m) in messages.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&quote(m));
        }
        body.push(b']');
        assert_eq!(decode_send_body(&body).as_ref(), Ok(&messages));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = decode_ws_message(text);
    }
});
