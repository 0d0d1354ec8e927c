//! Fuzz what HTTP backends answer (network bytes the gateway parses): a frame's answer and a
//! connect hook's answer never panic, and a frame's answer is either planned or refused with a
//! text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockjs_gateway::backend::{check_answer, check_connect_answer};
use sockjs_gateway::stomp::AppFrame;

fuzz_target!(|data: &[u8]| {
    let subscribe = AppFrame::Subscribe {
        subscription: "sub-0".into(),
    };
    for frame in [AppFrame::Send, subscribe] {
        if let Err(text) = check_answer(data, &frame) {
            assert!(!text.is_empty());
        }
    }
    let _ = check_connect_answer(data);
});
