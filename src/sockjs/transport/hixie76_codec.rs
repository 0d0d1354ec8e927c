//! The hixie-76 framing (sockjs.md §10.3) over an upgraded connection: `0x00 text 0xFF`
//! frames and the `0xFF 0x00` close. The handshake is in `hixie76.rs`; this codec is what
//! the socket loop (`websocket.rs`) drives, as it drives tungstenite for RFC 6455.

use bytes::{Buf, BytesMut};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::socket::WsIn;

/// A hixie-76 connection after the handshake.
pub struct Hixie76 {
    /// The upgraded socket.
    io: TokioIo<hyper::upgrade::Upgraded>,
    /// Bytes read but not yet framed.
    frames: FrameDecoder,
}

impl Hixie76 {
    /// The connection over `io` after the handshake, for messages of at most `max` bytes.
    pub fn new(io: TokioIo<hyper::upgrade::Upgraded>, max: usize) -> Hixie76 {
        Hixie76 {
            io,
            frames: FrameDecoder::new(max),
        }
    }

    /// The next frame: `0x00 text 0xFF`, or the `0xFF 0x00` close. Cancel-safe: partial
    /// frames stay in the decoder.
    pub async fn recv(&mut self) -> WsIn {
        loop {
            if let Some(event) = self.frames.next_event() {
                return event;
            }
            let buf = self.frames.buffer();
            buf.reserve(1024);
            // hixie-76 has a closing handshake (0xFF 0x00): an end without it is a drop.
            match self.io.read_buf(buf).await {
                Ok(0) | Err(_) => return WsIn::Dropped,
                Ok(_) => {}
            }
        }
    }

    /// Send one text frame.
    pub async fn send_text(&mut self, text: &[u8]) -> bool {
        let mut out = Vec::with_capacity(text.len() + 2);
        out.push(0x00);
        out.extend_from_slice(text);
        out.push(0xFF);
        // The flush is a no-op on plain TCP and sends what TLS holds.
        self.io.write_all(&out).await.is_ok() && self.io.flush().await.is_ok()
    }

    /// Send the closing handshake and shut the socket.
    pub async fn close(&mut self) {
        let _ = self.io.write_all(&[0xFF, 0x00]).await;
        let _ = self.io.shutdown().await;
    }
}

/// The incremental decoder of inbound hixie-76 frames, apart from the socket so it can be
/// tested and fuzzed on bytes alone. A frame is `0x00 text 0xFF`; the search for its `0xFF`
/// resumes where the previous read left it, so a frame trickled in small reads costs time
/// linear in its size, not quadratic.
pub struct FrameDecoder {
    /// Bytes read but not yet framed, bounded by `max` (plus the two framing bytes).
    buf: BytesMut,
    /// How many bytes at the start of `buf` are known to hold no frame end.
    scanned: usize,
    /// The largest inbound message.
    max: usize,
    /// Bytes searched for a frame end over the decoder's life (for the linearity test).
    #[cfg(test)]
    examined: usize,
}

impl FrameDecoder {
    /// An empty decoder for messages of at most `max` bytes.
    pub fn new(max: usize) -> FrameDecoder {
        FrameDecoder {
            buf: BytesMut::new(),
            scanned: 0,
            max,
            #[cfg(test)]
            examined: 0,
        }
    }

    /// Where the next read goes.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next complete event, or None until more bytes arrive. A frame that grows past
    /// `max` without ending fails with 1009.
    pub fn next_event(&mut self) -> Option<WsIn> {
        let event = self.parse();
        if event.is_none() && self.buf.len() > self.max + 2 {
            return Some(WsIn::Failed(1009, "Message too big"));
        }
        event
    }

    fn parse(&mut self) -> Option<WsIn> {
        let first = *self.buf.first()?;
        match first {
            0x00 => {
                let from = self.scanned.max(1);
                let found = memchr::memchr(0xFF, &self.buf[from..]);
                #[cfg(test)]
                {
                    self.examined += found.map_or(self.buf.len() - from, |at| at + 1);
                }
                let Some(at) = found else {
                    self.scanned = self.buf.len();
                    return None;
                };
                let end = from + at;
                if end - 1 > self.max {
                    // Whether it came in one read or many, a message over the limit fails.
                    return Some(WsIn::Failed(1009, "Message too big"));
                }
                let frame = self.buf.split_to(end + 1);
                self.scanned = 0;
                Some(match std::str::from_utf8(&frame[1..end]) {
                    Ok(text) => WsIn::Text(text.to_owned()),
                    Err(_) => WsIn::Failed(1007, "Invalid UTF-8"),
                })
            }
            0xFF => {
                if self.buf.len() < 2 {
                    return None;
                }
                self.buf.advance(2);
                Some(WsIn::Closed)
            }
            _ => Some(WsIn::Failed(1002, "Unsupported hixie-76 frame")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feed `wire` in pieces of `piece` bytes; every event, in order.
    fn decode(wire: &[u8], piece: usize, max: usize) -> (Vec<String>, FrameDecoder) {
        let mut decoder = FrameDecoder::new(max);
        let mut events = Vec::new();
        for chunk in wire.chunks(piece.max(1)) {
            decoder.buffer().extend_from_slice(chunk);
            while let Some(event) = decoder.next_event() {
                let done = !matches!(event, WsIn::Text(_));
                events.push(describe(event));
                if done {
                    return (events, decoder);
                }
            }
        }
        (events, decoder)
    }

    fn describe(event: WsIn) -> String {
        match event {
            WsIn::Text(t) => format!("text:{t}"),
            WsIn::Closed => "closed".into(),
            WsIn::Dropped => "dropped".into(),
            WsIn::Failed(code, _) => format!("failed:{code}"),
            WsIn::Binary(_) | WsIn::Pong => "other".into(),
        }
    }

    fn framed(text: &str) -> Vec<u8> {
        let mut wire = vec![0x00];
        wire.extend_from_slice(text.as_bytes());
        wire.push(0xFF);
        wire
    }

    #[test]
    fn a_trickled_frame_is_scanned_once() {
        let text = "x".repeat(256 * 1024);
        let mut wire = framed(&text);
        wire.extend(framed("next"));
        let (events, decoder) = decode(&wire, 7, 1024 * 1024);
        assert_eq!(events, [format!("text:{text}"), "text:next".to_owned()]);
        // Every byte is searched once (the start byte never), however small the reads.
        assert_eq!(decoder.examined, wire.len() - 2);
    }

    #[test]
    fn frames_close_and_errors_decode() {
        let mut wire = framed("a");
        wire.extend(framed("\u{e9}t\u{e9}"));
        wire.extend([0xFF, 0x00]);
        let (events, _) = decode(&wire, 1, 100);
        assert_eq!(events, ["text:a", "text:\u{e9}t\u{e9}", "closed"]);
        assert_eq!(decode(&[0x00, 0xC3, 0xFF], 3, 100).0, ["failed:1007"]);
        assert_eq!(decode(&[0x80, 0x01], 2, 100).0, ["failed:1002"]);
        let long = [vec![0x00], vec![b'y'; 200]].concat();
        assert_eq!(decode(&long, 10, 100).0, ["failed:1009"]);
        let complete = framed(&"z".repeat(101));
        assert_eq!(decode(&complete, complete.len(), 100).0, ["failed:1009"]);
        assert_eq!(decode(&framed(&"z".repeat(100)), 1, 100).0.len(), 1);
    }

    proptest! {
        #[test]
        fn how_the_bytes_are_split_never_changes_the_events(
            texts in proptest::collection::vec("[a-z\u{e9}]{0,40}", 0..8),
            piece in 1usize..64,
        ) {
            let wire: Vec<u8> = texts.iter().flat_map(|t| framed(t)).collect();
            let (whole, _) = decode(&wire, wire.len().max(1), 1024);
            let (split, _) = decode(&wire, piece, 1024);
            let expected: Vec<String> = texts.iter().map(|t| format!("text:{t}")).collect();
            prop_assert_eq!(&whole, &expected);
            prop_assert_eq!(split, expected);
        }
    }
}
