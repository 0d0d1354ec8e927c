//! Fuzz the admin API's JSON request decoding: arbitrary bytes as a publish, a batch and a
//! disconnect body. Decoding must never panic, every refusal must be a 4xx that names a code,
//! and whatever it accepts must satisfy the checks it promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockjs_gateway::admin::request::{
    ApiError, RESERVED_HEADERS, decode_batch, decode_disconnect, decode_publish,
};

fn refusal_is_sane(error: &ApiError) {
    assert!((400..500).contains(&error.status), "{error:?}");
    assert!(
        !error.code.is_empty() && !error.message.is_empty(),
        "{error:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    match decode_publish(data) {
        Ok(publish) => {
            assert!(publish.destination.starts_with('/'));
            assert!(!publish.destination.contains(['*', '{', '\0']));
            for (name, value) in &publish.headers {
                assert!(!name.is_empty() && !RESERVED_HEADERS.contains(&name.as_str()));
                assert!(!value.contains('\0'));
            }
        }
        Err(e) => refusal_is_sane(&e),
    }
    match decode_batch(data, 16) {
        Ok(messages) => assert!((1..=16).contains(&messages.len())),
        Err(e) => refusal_is_sane(&e),
    }
    match decode_disconnect(data) {
        Ok(d) => assert!(d.code == 1000 || (3000..=4999).contains(&d.code)),
        Err(e) => refusal_is_sane(&e),
    }
});
