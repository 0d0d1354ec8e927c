//! Fuzz the hixie-76 handshake arithmetic: arbitrary key headers and key3 bytes never panic,
//! and a key's value, when it has one, is its digits divided by its spaces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockjs_gateway::sockjs::transport::hixie76::{challenge, key_value};

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
});
