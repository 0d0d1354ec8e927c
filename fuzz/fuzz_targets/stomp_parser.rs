//! Fuzz the STOMP frame parser: arbitrary bytes, split at an arbitrary point, in every
//! version. The parser must never panic, and splitting must not change the outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockjs_gateway::stomp::frame::{Frame, FrameLimits, FrameParser, Version};

fn parse(version: Version, pieces: &[&[u8]]) -> (Vec<Frame>, bool) {
    let mut parser = FrameParser::new(FrameLimits::default());
    parser.set_version(version);
    let mut frames = Vec::new();
    for piece in pieces {
        parser.push(piece);
        loop {
            match parser.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let version = Version::ALL[usize::from(selector) % 3];
    let cut = usize::from(selector).min(input.len());
    let whole = parse(version, &[input]);
    let split = parse(version, &[&input[..cut], &input[cut..]]);
    assert_eq!(whole, split);
});
