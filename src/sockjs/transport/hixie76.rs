//! The hixie-76 WebSocket handshake and framing (sockjs.md §10.3), for legacy browsers and
//! proxies. tungstenite cannot speak it, so it is written here over the upgraded connection.
//!
//! The 101 headers go out before key3 is read: HAProxy forwards key3 only after it has seen
//! the response.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::websocket::{Conn, Framing, WsIn, run_socket};
use crate::limits::ConnectionPermit;
use crate::session::{CloseCause, CloseInfo, TransportKind};
use crate::sockjs::http::{Body, HttpRequest, HttpResponse, TEXT_PLAIN, WriteWatch, response};
use crate::sockjs::{Client, Service};

/// How long the client may take to send key3.
const KEY3_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a request offers the hixie-76 handshake: both keys and no version header.
pub fn is_hixie76(headers: &HeaderMap) -> bool {
    headers.contains_key("sec-websocket-key1")
        && headers.contains_key("sec-websocket-key2")
        && !headers.contains_key(header::SEC_WEBSOCKET_VERSION)
}

/// The 4-byte value of a key: its digits as a number divided by its count of spaces.
pub fn key_value(key: &str) -> Option<[u8; 4]> {
    let digits: String = key.chars().filter(char::is_ascii_digit).collect();
    let spaces = key.chars().filter(|c| *c == ' ').count() as u64;
    let n: u64 = digits.parse().ok()?;
    if spaces == 0 || !n.is_multiple_of(spaces) {
        return None;
    }
    u32::try_from(n / spaces).ok().map(u32::to_be_bytes)
}

/// The 16-byte challenge answer: MD5(value1 ‖ value2 ‖ key3).
pub fn challenge(v1: [u8; 4], v2: [u8; 4], key3: &[u8; 8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(v1);
    md5.update(v2);
    md5.update(key3);
    md5.finalize().into()
}

/// Answer the hixie-76 handshake and run the socket once hyper hands it over.
pub fn handshake(svc: &Arc<Service>, req: HttpRequest, client: &Client) -> HttpResponse {
    let key = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(key_value)
    };
    let (Some(v1), Some(v2)) = (key("sec-websocket-key1"), key("sec-websocket-key2")) else {
        // §10.3: an invalid key closes the connection.
        let mut resp = response(StatusCode::BAD_REQUEST, TEXT_PLAIN, "Invalid hixie-76 key");
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("ws://{host}{path}");
    let origin = req.headers().get(header::ORIGIN).cloned();
    let info = svc.session_info(
        TransportKind::WebsocketHixie76,
        req.headers(),
        req.uri().to_string(),
        client,
    );
    let session = match svc.new_session(info, client) {
        Ok(session) => session,
        Err(refused) => return refused,
    };
    let max = svc.config().max_inbound_bytes;
    let svc = svc.clone();
    let watch = req.extensions().get::<Arc<WriteWatch>>().cloned();
    let permit = req.extensions().get::<Arc<ConnectionPermit>>().cloned();
    tokio::spawn(async move {
        // Counted against the connection limits until the socket closes (see websocket.rs).
        let _permit = permit;
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            session.finish(gone());
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let mut key3 = [0u8; 8];
        let read = tokio::time::timeout(KEY3_TIMEOUT, io.read_exact(&mut key3)).await;
        let answered = async {
            io.write_all(&challenge(v1, v2, &key3)).await?;
            io.flush().await
        };
        if !matches!(read, Ok(Ok(_))) || answered.await.is_err() {
            session.finish(gone());
            return;
        }
        let conn = Conn::Hixie76(Hixie76 {
            io,
            frames: FrameDecoder::new(max),
        });
        run_socket(&svc, session, conn, Framing::SockJs, watch).await;
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(
            b"WebSocket Protocol Handshake",
        ));
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Some(origin) = origin {
        h.insert("sec-websocket-origin", origin);
    }
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert("sec-websocket-location", v);
    }
    resp
}

fn gone() -> CloseInfo {
    CloseInfo {
        code: 1000,
        reason: "Normal closure".into(),
        cause: CloseCause::Client,
    }
}

/// A hixie-76 connection after the handshake.
pub struct Hixie76 {
    /// The upgraded socket.
    io: TokioIo<hyper::upgrade::Upgraded>,
    /// Bytes read but not yet framed.
    frames: FrameDecoder,
}

impl Hixie76 {
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

    #[test]
    fn challenge_matches_the_spec_vector() {
        let v1 = key_value("4 @1  46546xW%0l 1 5").unwrap();
        let v2 = key_value("12998 5 Y3 1  .P00").unwrap();
        assert_eq!(u32::from_be_bytes(v1), 829309203);
        assert_eq!(u32::from_be_bytes(v2), 259970620);
        let expected = [
            0xca, 0x34, 0x00, 0xd8, 0xa5, 0x08, 0x47, 0x97, 0x2c, 0xd5, 0x71, 0x5a, 0xba, 0xbf,
            0x43, 0x7b,
        ];
        assert_eq!(challenge(v1, v2, b"aaaaaaaa"), expected);
    }

    #[test]
    fn keys_without_spaces_or_not_divisible_are_invalid() {
        assert_eq!(key_value("123"), None);
        assert_eq!(key_value("1 2 3 "), Some(41u32.to_be_bytes()));
        assert_eq!(key_value("7 "), Some(7u32.to_be_bytes()));
        assert_eq!(key_value("7  "), None);
    }
}
