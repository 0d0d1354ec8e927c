//! Fuzz what a node parses from Redis: the pub/sub reply parser (fed in two pieces, which
//! must not change the outcome) and the cross-node envelope decoder. Neither may panic, and
//! every envelope that decodes must encode back to the same bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sockjs_gateway::cluster::envelope::Envelope;
use sockjs_gateway::cluster::resp::{Push, Reply, parse};

fn replies(pieces: &[&[u8]]) -> (Vec<Reply>, bool) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match parse(&mut buf, 4096) {
                Ok(Some(reply)) => out.push(reply),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        let cut = usize::from(selector).min(input.len());
        let whole = replies(&[input]);
        let split = replies(&[&input[..cut], &input[cut..]]);
        assert_eq!(whole, split, "splitting the input changed the outcome");
        for reply in whole.0 {
            let _ = Push::from_reply(reply);
        }
    } else if let Ok(envelope) = Envelope::decode(Bytes::copy_from_slice(input), 1 << 20) {
        let again = envelope.encode(1 << 20).expect("a decoded envelope encodes");
        assert_eq!(&again[..], input, "decode then encode changed the bytes");
    }
});
