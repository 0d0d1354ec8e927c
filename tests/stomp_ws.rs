//! STOMP over WebSocket and SockJS through real loopback sockets: the rows of the probe
//! checklist (spec §15) that matter on those carriers (spec §1, §4, §5.7, §10.2).
//!
//! Carriers: the raw WebSocket `/stomp/websocket` (text and binary messages, `vNN.stomp`
//! subprotocols), the SockJS WebSocket `/stomp/000/<id>/websocket` (JSON arrays of STOMP text)
//! and SockJS xhr-polling (`/stomp/000/<id>/xhr` + `xhr_send`). Each test starts its own
//! in-process gateway on 127.0.0.1:0; every wait is bounded so a regression fails instead of
//! hanging.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sockjs_gateway::stomp::frame::{Command, Frame, Version};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::{WebSocketStream, client_async};

use common::stomp::{connect_frame, decode_single_frame};
use common::{IO_TIMEOUT as WAIT, post, request, start_gateway, start_gateway_with_stomp};

/// A gateway config with a `/stomp` service; `service` adds keys to the service, `stomp` to the
/// `[stomp]` table.
fn config(service: &str, stomp: &str) -> String {
    format!("[[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\n{service}\n[stomp]\n{stomp}\n")
}

fn defaults() -> String {
    config("", "")
}

/// One thing a carrier delivered, in order.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    /// A raw WebSocket text message, or one SockJS message.
    Text(String),
    /// A raw WebSocket binary message.
    Binary(Vec<u8>),
    /// SockJS `o`.
    Open,
    /// SockJS `h`.
    SockJsHeartbeat,
    /// A WebSocket close frame, or SockJS `c[code,"reason"]`.
    Close(u16, String),
    /// The connection ended without a close frame.
    Eof,
}

impl Item {
    /// A STOMP heart-beat: a message of EOLs only.
    fn is_stomp_heartbeat(&self) -> bool {
        matches!(self, Item::Text(t) if !t.is_empty() && t.bytes().all(|b| b == b'\n' || b == b'\r'))
    }
}

/// The items of one SockJS frame (`o`, `h`, `a[...]`, `c[...]`, with or without a newline).
fn sockjs_items(frame: &str) -> Vec<Item> {
    let frame = frame.strip_suffix('\n').unwrap_or(frame);
    match frame.as_bytes().first() {
        Some(b'o') if frame == "o" => vec![Item::Open],
        Some(b'h') if frame == "h" => vec![Item::SockJsHeartbeat],
        Some(b'a') => {
            let messages: Vec<String> =
                serde_json::from_str(&frame[1..]).unwrap_or_else(|e| panic!("{e}: {frame:?}"));
            messages.into_iter().map(Item::Text).collect()
        }
        Some(b'c') => {
            let (code, reason): (u16, String) =
                serde_json::from_str(&frame[1..]).unwrap_or_else(|e| panic!("{e}: {frame:?}"));
            vec![Item::Close(code, reason)]
        }
        _ => panic!("not a SockJS frame: {frame:?}"),
    }
}

enum Link {
    /// `/stomp/websocket`: one STOMP frame per message.
    Raw(Box<WebSocketStream<TcpStream>>),
    /// `/stomp/000/<id>/websocket`: SockJS frames.
    SockJsWs(Box<WebSocketStream<TcpStream>>),
    /// `/stomp/000/<id>/xhr` and `xhr_send`.
    Xhr { addr: SocketAddr, base: String },
}

/// A STOMP client on one of the WebSocket or SockJS carriers.
struct Client {
    link: Link,
    items: VecDeque<Item>,
    /// Frames read ahead by `subscribe` (stored competing-queue messages may precede a RECEIPT).
    pending: VecDeque<(Frame, bool)>,
    /// The escape rules for decoding (the negotiated version).
    version: Version,
    /// Every SockJS frame as received, for assertions on the exact wire text.
    raw_sockjs: Vec<String>,
}

/// Open an RFC 6455 WebSocket, offering `protocols` (a `Sec-WebSocket-Protocol` value).
async fn websocket(
    addr: SocketAddr,
    path: &str,
    protocols: Option<&str>,
) -> (WebSocketStream<TcpStream>, Option<String>) {
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    if let Some(p) = protocols {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().expect("header"));
    }
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (ws, resp) = timeout(WAIT, client_async(req, stream))
        .await
        .expect("handshake timed out")
        .expect("handshake");
    let protocol = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (ws, protocol)
}

impl Client {
    fn new(link: Link) -> Client {
        Client {
            link,
            items: VecDeque::new(),
            pending: VecDeque::new(),
            version: Version::V1_2,
            raw_sockjs: Vec::new(),
        }
    }

    /// A raw WebSocket at `/stomp/websocket` (no STOMP yet) and the negotiated subprotocol.
    async fn raw(addr: SocketAddr, protocols: Option<&str>) -> (Client, Option<String>) {
        let (ws, protocol) = websocket(addr, "/stomp/websocket", protocols).await;
        (Client::new(Link::Raw(Box::new(ws))), protocol)
    }

    /// A SockJS WebSocket session `id`, past its `o` frame.
    async fn sockjs_ws(addr: SocketAddr, id: &str) -> Client {
        let (ws, _) = websocket(addr, &format!("/stomp/000/{id}/websocket"), None).await;
        let mut c = Client::new(Link::SockJsWs(Box::new(ws)));
        assert_eq!(c.item().await, Item::Open);
        c
    }

    /// A SockJS xhr-polling session `id`, past its `o` frame.
    async fn xhr(addr: SocketAddr, id: &str) -> Client {
        let mut c = Client::new(Link::Xhr {
            addr,
            base: format!("/stomp/000/{id}"),
        });
        assert_eq!(c.item().await, Item::Open);
        c
    }

    /// CONNECT (heart-beats off unless `extra` names them) and return CONNECTED.
    async fn handshake(&mut self, accept_version: &str, extra: &str) -> Frame {
        self.send(&connect_frame(accept_version, extra)).await;
        let connected = self.frame().await;
        assert_eq!(connected.command, Command::Connected, "{connected:?}");
        if let Some(v) = connected.get("version").and_then(Version::parse) {
            self.version = v;
        }
        connected
    }

    /// A raw WebSocket client after CONNECT.
    async fn raw_stomp(addr: SocketAddr, accept_version: &str, extra: &str) -> Client {
        let (mut c, _) = Client::raw(addr, Some("v12.stomp")).await;
        c.handshake(accept_version, extra).await;
        c
    }

    /// Read more from the carrier into `items` (at least one item, or a bounded failure).
    async fn fill(&mut self) {
        let sockjs = matches!(self.link, Link::SockJsWs(_));
        match &mut self.link {
            Link::Raw(ws) | Link::SockJsWs(ws) => loop {
                let next = timeout(WAIT, ws.next())
                    .await
                    .expect("timed out waiting for a WebSocket message");
                let item = match next {
                    None | Some(Err(_)) => Item::Eof,
                    Some(Ok(Message::Text(t))) if sockjs => {
                        self.raw_sockjs.push(t.to_string());
                        self.items.extend(sockjs_items(&t));
                        return;
                    }
                    Some(Ok(Message::Text(t))) => Item::Text(t.to_string()),
                    Some(Ok(Message::Binary(b))) => {
                        assert!(!sockjs, "binary message on a SockJS WebSocket");
                        Item::Binary(b.to_vec())
                    }
                    Some(Ok(Message::Close(frame))) => match frame {
                        Some(f) => Item::Close(u16::from(f.code), f.reason.to_string()),
                        None => Item::Close(1005, String::new()),
                    },
                    Some(Ok(_)) => continue,
                };
                self.items.push_back(item);
                return;
            },
            Link::Xhr { addr, base } => {
                let (status, body) = post(*addr, &format!("{base}/xhr"), b"").await;
                assert_eq!(status, 200, "xhr poll: {}", String::from_utf8_lossy(&body));
                let text = String::from_utf8(body).expect("utf8");
                self.raw_sockjs.push(text.clone());
                self.items.extend(sockjs_items(&text));
            }
        }
    }

    /// The next item.
    async fn item(&mut self) -> Item {
        loop {
            if let Some(item) = self.items.pop_front() {
                return item;
            }
            self.fill().await;
        }
    }

    /// The next STOMP frame (skipping heart-beats) and whether it came as a binary message.
    async fn frame_and_kind(&mut self) -> (Frame, bool) {
        if let Some(pending) = self.pending.pop_front() {
            return pending;
        }
        loop {
            match self.item().await {
                item if item.is_stomp_heartbeat() => {}
                Item::SockJsHeartbeat => {}
                Item::Text(t) => return (decode_single_frame(t.as_bytes(), self.version), false),
                Item::Binary(b) => return (decode_single_frame(&b, self.version), true),
                other => panic!("expected a STOMP frame, got {other:?}"),
            }
        }
    }

    async fn frame(&mut self) -> Frame {
        self.frame_and_kind().await.0
    }

    /// The next item that is not a heart-beat of either layer.
    async fn next_non_heartbeat(&mut self) -> Item {
        loop {
            match self.item().await {
                item if item.is_stomp_heartbeat() => {}
                Item::SockJsHeartbeat => {}
                item => return item,
            }
        }
    }

    /// Expect the connection to close with `code` (raw WebSocket close or SockJS `c`), with no
    /// frame before it; returns the reason.
    async fn expect_close(&mut self, code: u16) -> String {
        match self.next_non_heartbeat().await {
            Item::Close(c, reason) => {
                assert_eq!(c, code, "close reason {reason:?}");
                reason
            }
            other => panic!("expected close {code}, got {other:?}"),
        }
    }

    /// ERROR with `message`, in full, then close 1002 (spec §10.2, D06).
    async fn expect_error_then_close(&mut self, message: &str) -> Frame {
        let frame = self.frame().await;
        assert_eq!(frame.command, Command::Error, "{frame:?}");
        assert_eq!(frame.get("message"), Some(message), "{frame:?}");
        if let Some(len) = frame.get("content-length") {
            assert_eq!(len.parse::<usize>().ok(), Some(frame.body.len()));
        }
        self.expect_close(1002).await;
        frame
    }

    /// Assert that nothing but heart-beats arrives within `ms` (WebSocket carriers only).
    async fn expect_silence(&mut self, ms: u64) {
        assert!(!matches!(self.link, Link::Xhr { .. }), "cannot wait on xhr");
        assert!(self.pending.is_empty(), "{:?}", self.pending);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(deadline, self.item()).await {
                Err(_) => return,
                Ok(item) if item.is_stomp_heartbeat() || item == Item::SockJsHeartbeat => {}
                Ok(item) => panic!("unexpected {item:?}"),
            }
        }
    }

    /// Send one STOMP text: one WebSocket text message, one SockJS message.
    async fn send(&mut self, wire: &str) {
        self.send_all(&[wire]).await;
    }

    /// Send several pieces: separate WebSocket messages on the raw WebSocket; several SockJS
    /// messages in one SockJS frame (one `xhr_send` body) on SockJS.
    async fn send_all(&mut self, pieces: &[&str]) {
        match &mut self.link {
            Link::Raw(ws) => {
                for piece in pieces {
                    ws.send(Message::text(*piece)).await.expect("send");
                }
            }
            Link::SockJsWs(ws) => {
                let json = serde_json::to_string(pieces).expect("json");
                ws.send(Message::text(json)).await.expect("send");
            }
            Link::Xhr { addr, base } => {
                let json = serde_json::to_string(pieces).expect("json");
                let (status, body) =
                    post(*addr, &format!("{base}/xhr_send"), json.as_bytes()).await;
                assert_eq!(status, 204, "xhr_send: {}", String::from_utf8_lossy(&body));
            }
        }
    }

    /// Send one binary WebSocket message (raw WebSocket only).
    async fn send_binary(&mut self, payload: &[u8]) {
        let Link::Raw(ws) = &mut self.link else {
            panic!("binary messages need the raw WebSocket")
        };
        ws.send(Message::binary(payload.to_vec()))
            .await
            .expect("send");
    }

    /// Send a raw WebSocket frame as is (for invalid UTF-8 text).
    async fn send_ws_frame(&mut self, frame: WsFrame) {
        let Link::Raw(ws) = &mut self.link else {
            panic!("raw frames need the raw WebSocket")
        };
        ws.send(Message::Frame(frame)).await.expect("send");
    }

    /// SUBSCRIBE with a receipt and wait for it.
    async fn subscribe(&mut self, id: &str, destination: &str, extra: &str) {
        self.send(&format!(
            "SUBSCRIBE\nid:{id}\ndestination:{destination}\nreceipt:sub-{id}\n{extra}\n\0"
        ))
        .await;
        let mut early = Vec::new();
        loop {
            let (frame, binary) = self.frame_and_kind().await;
            if frame.command == Command::Receipt {
                assert_eq!(frame.get("receipt-id"), Some(format!("sub-{id}").as_str()));
                break;
            }
            early.push((frame, binary));
        }
        self.pending.extend(early);
    }

    /// The `session` header of CONNECTED.
    async fn session_of(connected: &Frame) -> String {
        connected.get("session").expect("session").to_owned()
    }
}

fn body(frame: &Frame) -> String {
    String::from_utf8_lossy(&frame.body).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Connecting (C02, C05, C08, C13, C14, C15)
// ---------------------------------------------------------------------------------------------

/// The 101 response to a raw handshake offering `protocols` (None: no header).
async fn handshake_response(addr: SocketAddr, protocols: Option<&str>) -> common::Response {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    if let Some(p) = protocols {
        headers.push(("Sec-WebSocket-Protocol", p));
    }
    request(addr, "GET", "/stomp/websocket", &headers, b"").await
}

#[tokio::test]
async fn c13_c14_the_highest_offered_subprotocol_is_selected() {
    let addr = start_gateway(&defaults()).await;
    let cases = [
        (Some("v10.stomp, v11.stomp, v12.stomp"), Some("v12.stomp")),
        (Some("v12.stomp,v10.stomp"), Some("v12.stomp")),
        (Some("v11.stomp, v10.stomp"), Some("v11.stomp")),
        (Some("v10.stomp"), Some("v10.stomp")),
        (Some("mqtt, v11.stomp"), Some("v11.stomp")),
        (Some("mqtt"), None),
        (None, None),
    ];
    for (offer, expected) in cases {
        let resp = handshake_response(addr, offer).await;
        assert_eq!(resp.status, 101, "offer {offer:?}");
        assert_eq!(
            resp.header("sec-websocket-accept"),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "offer {offer:?}"
        );
        assert_eq!(
            resp.header("sec-websocket-protocol"),
            expected,
            "offer {offer:?}"
        );
    }
}

#[tokio::test]
async fn c14_c15_the_subprotocol_never_decides_the_stomp_version() {
    let addr = start_gateway(&defaults()).await;
    // C14: no subprotocol; STOMP works.
    let (mut c, protocol) = Client::raw(addr, None).await;
    assert_eq!(protocol, None);
    assert_eq!(c.handshake("1.2", "").await.get("version"), Some("1.2"));
    c.subscribe("0", "/topic/c14", "").await;
    c.send("SEND\ndestination:/topic/c14\n\nhi\0").await;
    assert_eq!(body(&c.frame().await), "hi");

    // C15: only v10.stomp offered, accept-version:1.2 → 1.2.
    let (mut c, protocol) = Client::raw(addr, Some("v10.stomp")).await;
    assert_eq!(protocol.as_deref(), Some("v10.stomp"));
    assert_eq!(c.handshake("1.2", "").await.get("version"), Some("1.2"));

    // And the reverse: v12.stomp negotiated, accept-version decides.
    for (accept, version, heart_beat) in [
        ("1.0", "1.0", "0,0"),
        ("1.1,1.0", "1.1", "10000,10000"),
        ("", "1.0", "0,0"),
        ("1.2,2.0", "1.2", "10000,10000"),
    ] {
        let (mut c, protocol) = Client::raw(addr, Some("v12.stomp")).await;
        assert_eq!(protocol.as_deref(), Some("v12.stomp"));
        let connected = c.handshake(accept, "").await;
        assert_eq!(connected.get("version"), Some(version), "{accept}");
        assert_eq!(connected.get("heart-beat"), Some(heart_beat), "{accept}");
    }
}

#[tokio::test]
async fn c05_c08_connected_headers_and_version_mismatch_over_websocket() {
    let addr = start_gateway(&config("", "principal_header = \"login\"")).await;
    let (mut c, _) = Client::raw(addr, Some("v12.stomp")).await;
    let connected = c.handshake("1.2", "login:alice\nhost:127.0.0.1\n").await;
    let session = Client::session_of(&connected).await;
    assert!(session.len() >= 11, "{session}");
    assert!(
        session
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{session}"
    );
    assert!(
        connected
            .get("server")
            .is_some_and(|s| s.starts_with("sockjs-gateway/"))
    );
    assert_eq!(connected.get("user-name"), Some("alice"));
    assert_eq!(connected.get("heart-beat"), Some("10000,10000"));

    let (mut anon, _) = Client::raw(addr, None).await;
    assert_eq!(anon.handshake("1.2", "").await.get("user-name"), None);

    let (mut c, _) = Client::raw(addr, Some("v12.stomp")).await;
    c.send("CONNECT\naccept-version:2.0\n\n\0").await;
    let error = c.frame().await;
    assert_eq!(error.command, Command::Error);
    assert_eq!(error.get("version"), Some("1.0,1.1,1.2"));
    c.expect_close(1002).await;
}

// ---------------------------------------------------------------------------------------------
// Framing over WebSocket (F02, F03, F04, F05, F17, L04) and binary messages
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn f17_frames_split_across_messages_and_several_frames_in_one_message() {
    let addr = start_gateway(&defaults()).await;
    let (mut c, _) = Client::raw(addr, Some("v12.stomp")).await;
    // F02 over WebSocket: EOLs first, then CONNECT in 7-byte messages, text and binary mixed.
    c.send("\n\r\n").await;
    let connect = "CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0";
    for (i, piece) in connect.as_bytes().chunks(7).enumerate() {
        if i % 2 == 0 {
            c.send(std::str::from_utf8(piece).unwrap()).await;
        } else {
            c.send_binary(piece).await;
        }
    }
    assert_eq!(c.frame().await.command, Command::Connected);

    // F03 + F04: SUBSCRIBE and SEND in one message, EOLs between and after.
    c.send("SUBSCRIBE\nid:0\ndestination:/topic/f\nreceipt:r0\n\n\0\n\r\n\nSEND\ndestination:/topic/f\n\nfirst\0\n\n")
        .await;
    assert_eq!(c.frame().await.get("receipt-id"), Some("r0"));
    assert_eq!(body(&c.frame().await), "first");

    // A message of heart-beat EOLs only.
    c.send("\n\n\r\n").await;

    // One frame split across 5 messages.
    let split = "SEND\ndestination:/topic/f\nx-split:yes\n\nsplit across five messages\0";
    let bytes = split.as_bytes();
    let step = bytes.len().div_ceil(5);
    let pieces: Vec<&str> = bytes
        .chunks(step)
        .map(|p| std::str::from_utf8(p).unwrap())
        .collect();
    assert_eq!(pieces.len(), 5);
    c.send_all(&pieces).await;
    let message = c.frame().await;
    assert_eq!(body(&message), "split across five messages");
    assert_eq!(message.get("x-split"), Some("yes"));

    // Three frames in one message: three MESSAGEs, one per WebSocket message, in order.
    c.send("SEND\ndestination:/topic/f\n\none\0SEND\ndestination:/topic/f\n\ntwo\0\nSEND\ndestination:/topic/f\n\nthree\0")
        .await;
    for expected in ["one", "two", "three"] {
        assert_eq!(body(&c.frame().await), expected);
    }

    // F05: content-length body with a NUL inside, as one binary message.
    c.send_binary(b"SEND\ndestination:/topic/f\ncontent-length:3\n\na\0b\0")
        .await;
    let (message, binary) = c.frame_and_kind().await;
    assert_eq!(&message.body[..], b"a\0b");
    assert_eq!(message.get("content-length"), Some("3"));
    assert!(!binary, "a\\0b is valid UTF-8 and goes out as text");
    c.expect_silence(100).await;
}

#[tokio::test]
async fn l04_a_60_kib_send_in_16_kib_messages_is_delivered() {
    let addr = start_gateway(&defaults()).await;
    let mut sub = Client::raw_stomp(addr, "1.2", "").await;
    sub.subscribe("0", "/topic/big", "").await;
    let mut publisher = Client::raw_stomp(addr, "1.2", "").await;
    let payload: String = (0..60 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let frame = format!("SEND\ndestination:/topic/big\nreceipt:big\n\n{payload}\0");
    let pieces: Vec<&str> = frame
        .as_bytes()
        .chunks(16 * 1024)
        .map(|p| std::str::from_utf8(p).unwrap())
        .collect();
    assert_eq!(pieces.len(), 4);
    publisher.send_all(&pieces).await;
    assert_eq!(publisher.frame().await.get("receipt-id"), Some("big"));
    let message = sub.frame().await;
    assert_eq!(message.body.len(), 60 * 1024);
    assert_eq!(body(&message), payload);
    assert_eq!(message.get("content-length"), Some("61440"));
}

#[tokio::test]
async fn binary_messages_are_accepted_and_binary_bodies_go_out_as_binary() {
    let (addr, app) = start_gateway_with_stomp(&defaults()).await;
    // CONNECT itself as a binary message.
    let (mut raw, _) = Client::raw(addr, Some("v12.stomp")).await;
    raw.send_binary(connect_frame("1.2", "").as_bytes()).await;
    assert_eq!(raw.frame().await.command, Command::Connected);
    raw.subscribe("0", "/topic/bin", "").await;
    let mut sockjs = Client::sockjs_ws(addr, "binsub").await;
    sockjs.handshake("1.2", "").await;
    sockjs.subscribe("0", "/topic/bin", "").await;

    let mut publisher = Client::raw_stomp(addr, "1.2", "").await;
    let mut not_utf8 = b"SEND\ndestination:/topic/bin\ncontent-length:4\n\n".to_vec();
    not_utf8.extend_from_slice(&[0xff, 0x00, 0xfe, b'a']);
    not_utf8.push(0);
    publisher.send_binary(&not_utf8).await;
    publisher
        .send_binary(b"SEND\ndestination:/topic/bin\ncontent-type:text/plain\n\ntext body\0")
        .await;

    // Raw WebSocket: the non-UTF-8 MESSAGE is a binary message, the text one a text message.
    let (first, binary) = raw.frame_and_kind().await;
    assert!(binary, "a non-UTF-8 body must go out as a binary message");
    assert_eq!(&first.body[..], &[0xff, 0x00, 0xfe, b'a']);
    assert_eq!(first.get("content-length"), Some("4"));
    let (second, binary) = raw.frame_and_kind().await;
    assert!(!binary);
    assert_eq!(body(&second), "text body");

    // SockJS: the non-UTF-8 MESSAGE is not delivered, and counted; the text one is.
    let next = sockjs.frame().await;
    assert_eq!(body(&next), "text body");
    assert_eq!(app.stats().dropped_unencodable.load(Ordering::Relaxed), 1);
    sockjs.expect_silence(100).await;
}

#[tokio::test]
async fn octet_stream_content_type_goes_out_as_binary_on_the_raw_websocket() {
    let addr = start_gateway(&defaults()).await;
    let mut raw = Client::raw_stomp(addr, "1.2", "").await;
    raw.subscribe("0", "/topic/oct", "").await;
    raw.send("SEND\ndestination:/topic/oct\ncontent-type:application/octet-stream\n\nabc\0")
        .await;
    let (message, binary) = raw.frame_and_kind().await;
    assert!(
        binary,
        "application/octet-stream must go out as a binary message"
    );
    assert_eq!(body(&message), "abc");
}

/// Spec §1: over SockJS only a MESSAGE whose body is not valid UTF-8 is undeliverable. A
/// valid-UTF-8 body is representable as a SockJS string whatever its content-type.
#[tokio::test]
async fn octet_stream_with_a_utf8_body_is_still_delivered_over_sockjs() {
    let (addr, app) = start_gateway_with_stomp(&defaults()).await;
    let mut sockjs = Client::sockjs_ws(addr, "octsub").await;
    sockjs.handshake("1.2", "").await;
    sockjs.subscribe("0", "/topic/oct", "").await;
    sockjs
        .send("SEND\ndestination:/topic/oct\ncontent-type:application/octet-stream\n\nabc\0SEND\ndestination:/topic/oct\n\nafter\0")
        .await;
    let first = sockjs.frame().await;
    assert_eq!(
        body(&first),
        "abc",
        "the octet-stream MESSAGE was dropped (dropped_unencodable = {})",
        app.stats().dropped_unencodable.load(Ordering::Relaxed)
    );
    assert_eq!(first.get("content-type"), Some("application/octet-stream"));
}

#[tokio::test]
async fn e01_e05_escaping_follows_each_sessions_version_over_websocket() {
    let addr = start_gateway(&defaults()).await;
    let mut new = Client::raw_stomp(addr, "1.2", "").await;
    let mut old = Client::raw_stomp(addr, "1.0", "").await;
    new.subscribe("0", "/topic/e", "").await;
    old.subscribe("0", "/topic/e", "").await;
    new.send("SEND\ndestination:/topic/e\nesc:a\\cb\\nc\\\\d\n\n\0")
        .await;
    assert_eq!(new.frame().await.get("esc"), Some("a:b\nc\\d"));
    // E06: the LF cannot be written to a 1.0 session; the header is dropped.
    assert_eq!(old.frame().await.get("esc"), None);
    old.send("SEND\ndestination:/topic/e\nfoo:a\\b:c\n\n\0")
        .await;
    assert_eq!(old.frame().await.get("foo"), Some("a\\b:c"));
    let Item::Text(raw) = new.item().await else {
        panic!("expected a text message")
    };
    assert!(raw.contains("\nfoo:a\\\\b\\cc\n"), "{raw:?}");
}

#[tokio::test]
async fn one_message_of_many_frames_lets_other_sessions_in_meanwhile() {
    // The test's runtime has one thread, shared with the gateway: a session that ran all the
    // frames of one message without yielding would keep every other session waiting.
    let (addr, app) = start_gateway_with_stomp(&config("", "max_frames_per_second = 0")).await;
    let stats = app.stats();
    let mut heavy = Client::raw_stomp(addr, "1.2", "").await;
    let mut other = Client::raw_stomp(addr, "1.2", "").await;
    const FRAMES: u64 = 20_000;
    let mut wire = "SEND\ndestination:/topic/none\n\nx\0".repeat(FRAMES as usize - 1);
    wire.push_str("SEND\ndestination:/topic/none\nreceipt:heavy\n\nx\0");
    heavy.send(&wire).await;
    timeout(WAIT, async {
        while stats.frames_received(Command::Send) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the heavy message is being processed");
    other
        .send("SEND\ndestination:/topic/none\nreceipt:light\n\nx\0")
        .await;
    assert_eq!(other.frame().await.get("receipt-id"), Some("light"));
    let done = stats.frames_received(Command::Send);
    assert!(
        done < FRAMES,
        "the other session waited until all {done} frames of the heavy message ran"
    );
    // Nothing of the heavy message is lost or reordered.
    assert_eq!(heavy.frame().await.get("receipt-id"), Some("heavy"));
    assert_eq!(stats.frames_received(Command::Send), FRAMES + 1);
}

// ---------------------------------------------------------------------------------------------
// ERROR then close (C09, C10, F06, F09-F15, E02, S01, D06) and close codes (§10.2)
// ---------------------------------------------------------------------------------------------

/// Whether to CONNECT first, the messages to send, the ERROR `message`, its `receipt-id`.
type ErrorCase = (bool, Vec<Vec<u8>>, &'static str, Option<&'static str>);

#[tokio::test]
async fn protocol_errors_send_error_then_close_1002_on_the_raw_websocket() {
    let addr = start_gateway(&defaults()).await;
    let oversize = format!(
        "SEND\ndestination:/topic/t\n\n{}\0",
        "x".repeat(64 * 1024 + 1)
    );
    let cases: Vec<ErrorCase> = vec![
        (
            false,
            vec![b"SEND\ndestination:/topic/a\nreceipt:early\n\nx\0".to_vec()],
            "Not connected",
            Some("early"),
        ),
        (
            true,
            vec![b"SEND\nnocolon\n\n\0".to_vec()],
            "Malformed frame",
            None,
        ),
        (
            true,
            vec![b"SEND\ndestination:/q\rx\n\n\0".to_vec()],
            "Malformed frame",
            None,
        ),
        (
            true,
            vec![b"SEND\ndestination:/q\ncontent-length:3\n\nabcd\0".to_vec()],
            "Malformed frame",
            None,
        ),
        (
            true,
            vec![b"BEGIN\ntransaction:t\n\nbody\0".to_vec()],
            "Body not allowed",
            None,
        ),
        (true, vec![b"FOO\n\n\0".to_vec()], "Unknown command", None),
        (true, vec![b"send\n\n\0".to_vec()], "Unknown command", None),
        (
            true,
            vec![b"SEND\nreceipt:x\n\n\0".to_vec()],
            "Missing header: destination",
            Some("x"),
        ),
        (
            true,
            vec![b"SEND\ndestination:/topic/e\nx:a\\tb\n\n\0".to_vec()],
            "Invalid header escape",
            None,
        ),
        (
            true,
            vec![b"SEND\ndestination:/topic/e\nx:\xff\n\n\0".to_vec()],
            "Malformed frame",
            None,
        ),
        (
            true,
            vec![b"CONNECT\naccept-version:1.2\n\n\0".to_vec()],
            "Already connected",
            None,
        ),
        (
            true,
            oversize
                .as_bytes()
                .chunks(16 * 1024)
                .map(<[u8]>::to_vec)
                .collect(),
            "Frame too large",
            None,
        ),
        (
            true,
            vec![b"SEND\ndestination:/topic/t\ncontent-length:100000\n\n".to_vec()],
            "Frame too large",
            None,
        ),
        (
            true,
            vec![b"SUBSCRIBE\ndestination:/topic/a\n\n\0".to_vec()],
            "Missing header: id",
            None,
        ),
        (
            true,
            vec![b"SUBSCRIBE\nid:0\ndestination:/topic/a\nack:bogus\n\n\0".to_vec()],
            "Invalid header: ack",
            None,
        ),
    ];
    for (connect, pieces, message, receipt) in cases {
        let (mut c, _) = Client::raw(addr, Some("v12.stomp")).await;
        if connect {
            c.handshake("1.2", "").await;
        }
        for piece in &pieces {
            match std::str::from_utf8(piece) {
                Ok(text) => c.send(text).await,
                Err(_) => c.send_binary(piece).await,
            }
        }
        let frame = c.frame().await;
        assert_eq!(frame.command, Command::Error, "{message}: {frame:?}");
        assert_eq!(frame.get("message"), Some(message), "{frame:?}");
        assert_eq!(frame.get("receipt-id"), receipt, "{frame:?}");
        c.expect_close(1002).await;
    }
}

/// D06: "Any ERROR case, with `receipt:x` on the bad frame → ERROR carries `receipt-id:x`".
/// Every case here has fully parsed headers, so the receipt is known.
#[tokio::test]
async fn d06_every_error_carries_the_receipt_id_of_the_bad_frame() {
    let addr = start_gateway(&defaults()).await;
    let cases: [(bool, &str, &str); 6] = [
        (
            false,
            "SEND\ndestination:/topic/a\nreceipt:r\n\nx\0",
            "Not connected",
        ),
        (true, "SEND\nreceipt:r\n\n\0", "Missing header: destination"),
        (
            true,
            "SUBSCRIBE\ndestination:/topic/a\nreceipt:r\n\n\0",
            "Missing header: id",
        ),
        (
            true,
            "BEGIN\ntransaction:t\nreceipt:r\n\nbody\0",
            "Body not allowed",
        ),
        (
            true,
            "SEND\ndestination:/topic/t\nreceipt:r\ncontent-length:100000\n\n",
            "Frame too large",
        ),
        (
            true,
            "SEND\ndestination:/q\nreceipt:r\ncontent-length:3\n\nabcd\0",
            "Malformed frame",
        ),
    ];
    let mut missing = Vec::new();
    for (connect, wire, message) in cases {
        let (mut c, _) = Client::raw(addr, Some("v12.stomp")).await;
        if connect {
            c.handshake("1.2", "").await;
        }
        c.send(wire).await;
        let frame = c.expect_error_then_close(message).await;
        if frame.get("receipt-id") != Some("r") {
            missing.push(format!("{message}: {:?}", frame.headers));
        }
    }
    assert!(
        missing.is_empty(),
        "ERROR without receipt-id:r for {missing:#?}"
    );
}

#[tokio::test]
async fn protocol_errors_over_sockjs_websocket_end_with_c1002() {
    let addr = start_gateway(&defaults()).await;
    let mut c = Client::sockjs_ws(addr, "early").await;
    c.send("SEND\ndestination:/topic/a\n\nx\0").await;
    c.expect_error_then_close("Not connected").await;
    assert_eq!(c.item().await, Item::Close(1000, "Normal closure".into()));

    let mut c = Client::sockjs_ws(addr, "nocolon").await;
    c.handshake("1.2", "").await;
    c.send("SEND\nnocolon\n\n\0").await;
    c.expect_error_then_close("Malformed frame").await;

    let mut c = Client::sockjs_ws(addr, "toolarge").await;
    c.handshake("1.2", "").await;
    c.send("SEND\ndestination:/topic/t\ncontent-length:100000\n\n")
        .await;
    c.expect_error_then_close("Frame too large").await;
    let sent: Vec<&String> = c.raw_sockjs.iter().filter(|f| f.starts_with('c')).collect();
    assert_eq!(sent.len(), 1, "{:?}", c.raw_sockjs);
}

#[tokio::test]
async fn close_codes_1007_1009_and_4500() {
    let (addr, app) = start_gateway_with_stomp(&config(
        "max_inbound_bytes = 1024",
        "connect_timeout_ms = 300",
    ))
    .await;
    // 1007: a text message that is not UTF-8.
    let mut c = Client::raw_stomp(addr, "1.2", "").await;
    c.send_ws_frame(WsFrame::message(
        Bytes::from_static(b"SEND\ndestination:/t\n\n\xff\0"),
        OpCode::Data(Data::Text),
        true,
    ))
    .await;
    c.expect_close(1007).await;

    // 1009: a message above max_inbound_bytes.
    let mut c = Client::raw_stomp(addr, "1.2", "").await;
    c.send(&format!(
        "SEND\ndestination:/topic/t\n\n{}\0",
        "x".repeat(2000)
    ))
    .await;
    c.expect_close(1009).await;

    // C11: no CONNECT within connect_timeout: 4500 on WebSocket, c[4500,...] on SockJS.
    let before = app.stats().connect_failures.load(Ordering::Relaxed);
    let started = Instant::now();
    let (mut c, _) = Client::raw(addr, Some("v12.stomp")).await;
    c.expect_close(4500).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    let mut s = Client::sockjs_ws(addr, "silent").await;
    s.expect_close(4500).await;
    assert_eq!(
        app.stats().connect_failures.load(Ordering::Relaxed),
        before + 2
    );
}

#[tokio::test]
async fn the_stomp_frame_rate_closes_the_raw_websocket_with_4429() {
    let addr = start_gateway(&config("", "max_frames_per_second = 50")).await;
    // One WebSocket message holding 200 frames: the carrier's message rate never notices, the
    // STOMP core counts every frame.
    let mut c = Client::raw_stomp(addr, "1.2", "").await;
    c.send(&"SEND\ndestination:/topic/rate\n\nx\0".repeat(200))
        .await;
    let error = c.frame().await;
    assert_eq!(
        error.get("message"),
        Some("Rate limit exceeded"),
        "{error:?}"
    );
    assert_eq!(c.expect_close(4429).await, "Rate limit exceeded");
}

#[tokio::test]
async fn the_stomp_idle_timeout_closes_the_raw_websocket_with_4408() {
    let addr = start_gateway(&config("", "idle_timeout_ms = 300")).await;
    let mut c = Client::raw_stomp(addr, "1.2", "").await;
    let error = c.frame().await;
    assert_eq!(error.get("message"), Some("Idle timeout"), "{error:?}");
    assert_eq!(c.expect_close(4408).await, "Idle timeout");
}

#[tokio::test]
async fn l02_sockjs_overflow_drop_discards_the_oldest_messages_and_never_a_receipt() {
    let (addr, app) = start_gateway_with_stomp(&config(
        "max_queued_bytes = 4096\noverflow_strategy = \"drop\"",
        "",
    ))
    .await;
    let stats = app.stats();
    let mut c = Client::xhr(addr, "l02").await;
    c.handshake("1.2", "").await;
    c.subscribe("0", "/topic/l02", "").await;
    // From here on `c` does not poll: everything waits in its session queue.
    let mut publisher = Client::raw_stomp(addr, "1.2", "").await;
    let pad = "p".repeat(500);
    let mut publish = async |range: std::ops::Range<usize>, receipt: &str| {
        for i in range {
            publisher
                .send(&format!("SEND\ndestination:/topic/l02\n\nm{i}-{pad}\0"))
                .await;
        }
        publisher
            .send(&format!(
                "SEND\ndestination:/topic/none\nreceipt:{receipt}\n\n\0"
            ))
            .await;
        assert_eq!(publisher.frame().await.get("receipt-id"), Some(receipt));
    };
    publish(0..20, "p1").await;
    assert!(stats.dropped_overflow.load(Ordering::Relaxed) > 0);
    // Frames run in order: once the second BEGIN (no receipt) is counted, the first one's
    // RECEIPT has been queued.
    c.send("BEGIN\ntransaction:t\nreceipt:mid\n\n\0BEGIN\ntransaction:u\n\n\0")
        .await;
    timeout(WAIT, async {
        while stats.frames_received(Command::Begin) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("both BEGINs processed");
    publish(20..40, "p2").await;

    let mut numbers = Vec::new();
    let mut receipt_after = None;
    while numbers.last() != Some(&39) {
        let frame = c.frame().await;
        match frame.command {
            Command::Message => {
                let text = body(&frame);
                numbers.push(text[1..text.find('-').unwrap()].parse::<usize>().unwrap());
            }
            Command::Receipt => {
                assert_eq!(frame.get("receipt-id"), Some("mid"));
                receipt_after = Some(numbers.len());
            }
            _ => panic!("unexpected {frame:?}"),
        }
    }
    let receipt_after = receipt_after.expect("the RECEIPT survived");
    assert!(
        numbers[..receipt_after].iter().all(|&n| n < 20),
        "{numbers:?}"
    );
    assert!(
        numbers[receipt_after..].iter().all(|&n| n >= 20),
        "{numbers:?}"
    );
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    assert_eq!(
        numbers.len() as u64 + stats.dropped_overflow.load(Ordering::Relaxed),
        40,
        "every message was delivered or counted as dropped"
    );
    c.send("ABORT\ntransaction:t\nreceipt:open\n\n\0").await;
    assert_eq!(c.frame().await.get("receipt-id"), Some("open"));
}

// ---------------------------------------------------------------------------------------------
// Heart-beats (H02-H07)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn h02_h03_h04_h05_heart_beats_over_the_raw_websocket() {
    let (addr, app) = start_gateway_with_stomp(&config("", "heart_beat = \"100,100\"")).await;

    // H02: both ways on; the server sends "\n" text messages, then closes a silent client
    // with 1002 after about C x 3 = 300 ms.
    let (mut c, _) = Client::raw(addr, Some("v12.stomp")).await;
    let connected = c.handshake("1.2", "heart-beat:100,100\n").await;
    assert_eq!(connected.get("heart-beat"), Some("100,100"));
    let started = Instant::now();
    let mut beats = 0;
    let reason = loop {
        match c.item().await {
            Item::Text(t) if t == "\n" => beats += 1,
            Item::Close(code, reason) => {
                assert_eq!(code, 1002, "{reason}");
                break reason;
            }
            other => panic!("expected heart-beats then close, got {other:?}"),
        }
    };
    let elapsed = started.elapsed();
    assert!(beats >= 2, "only {beats} heart-beats in {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(reason, "Heart-beat timeout");
    assert_eq!(app.stats().heartbeat_timeouts.load(Ordering::Relaxed), 1);

    // H04: a client that sends "\n" every 100 ms stays open.
    let mut c = Client::raw_stomp(addr, "1.2", "heart-beat:100,100\n").await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.send("\n").await;
    }
    c.send("DISCONNECT\nreceipt:alive\n\n\0").await;
    assert_eq!(c.frame().await.get("receipt-id"), Some("alive"));
    c.expect_close(1000).await;

    // H03: the client sends nothing and wants heart-beats: never closed for silence.
    let mut c = Client::raw_stomp(addr, "1.2", "heart-beat:0,100\n").await;
    let mut beats = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
    while let Ok(item) = tokio::time::timeout_at(deadline, c.item()).await {
        assert_eq!(item, Item::Text("\n".into()));
        beats += 1;
    }
    assert!(beats >= 3, "{beats}");

    // H05: 1.0 has no heart-beats.
    let mut c = Client::raw_stomp(addr, "1.0", "heart-beat:100,100\n").await;
    c.expect_silence(400).await;
    let (mut c, _) = Client::raw(addr, None).await;
    assert_eq!(
        c.handshake("1.0", "heart-beat:100,100\n")
            .await
            .get("heart-beat"),
        Some("0,0")
    );
}

#[tokio::test]
async fn h06_h07_stomp_heart_beats_replace_sockjs_h_frames() {
    let addr = start_gateway(&config("heartbeat_delay = 0.2", "heart_beat = \"100,100\"")).await;

    // H06: S > 0: STOMP "\n" messages, no SockJS `h`.
    let mut c = Client::sockjs_ws(addr, "h06").await;
    c.handshake("1.2", "heart-beat:0,100\n").await;
    let mut stomp_beats = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(900);
    while let Ok(item) = tokio::time::timeout_at(deadline, c.item()).await {
        match item {
            Item::Text(t) if t == "\n" => stomp_beats += 1,
            other => panic!("expected only STOMP heart-beats, got {other:?}"),
        }
    }
    assert!(stomp_beats >= 3, "{stomp_beats}");
    assert!(!c.raw_sockjs.iter().any(|f| f == "h"), "{:?}", c.raw_sockjs);

    // H07: heart-beats off: SockJS `h` every heartbeat_delay.
    let mut c = Client::sockjs_ws(addr, "h07").await;
    c.handshake("1.2", "").await;
    let started = Instant::now();
    assert_eq!(c.item().await, Item::SockJsHeartbeat);
    assert!(started.elapsed() < Duration::from_secs(2));

    // Heart-beat timeout over SockJS: c[1002,"Heart-beat timeout"].
    let mut c = Client::sockjs_ws(addr, "h02").await;
    c.handshake("1.2", "heart-beat:100,0\n").await;
    assert_eq!(c.expect_close(1002).await, "Heart-beat timeout");
}

// ---------------------------------------------------------------------------------------------
// DISCONNECT (D02-D05)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn d02_d04_d05_disconnect_over_the_raw_websocket() {
    let addr = start_gateway(&defaults()).await;
    let mut sub = Client::raw_stomp(addr, "1.2", "").await;
    sub.subscribe("0", "/topic/d", "").await;

    // D02 + D05: the RECEIPT message, then close 1000; the SEND after DISCONNECT is ignored.
    let mut c = Client::raw_stomp(addr, "1.2", "").await;
    c.send("DISCONNECT\nreceipt:77\n\n\0SEND\ndestination:/topic/d\n\nlate\0")
        .await;
    let Item::Text(receipt) = c.item().await else {
        panic!("expected the RECEIPT as a text message")
    };
    assert_eq!(receipt, "RECEIPT\nreceipt-id:77\n\n\0");
    assert_eq!(c.item().await, Item::Close(1000, "Normal closure".into()));
    sub.expect_silence(150).await;

    // D04: no receipt: close 1000, no ERROR.
    let mut c = Client::raw_stomp(addr, "1.2", "").await;
    c.send("DISCONNECT\n\n\0").await;
    assert_eq!(
        c.next_non_heartbeat().await,
        Item::Close(1000, "Normal closure".into())
    );
}

#[tokio::test]
async fn d03_disconnect_over_sockjs_websocket_has_the_exact_wire_form() {
    let addr = start_gateway(&defaults()).await;
    let mut c = Client::sockjs_ws(addr, "d03").await;
    c.handshake("1.2", "").await;
    c.send("DISCONNECT\nreceipt:77\n\n\0").await;
    assert_eq!(c.frame().await.get("receipt-id"), Some("77"));
    assert_eq!(c.item().await, Item::Close(1000, "Normal closure".into()));
    let n = c.raw_sockjs.len();
    assert_eq!(
        c.raw_sockjs[n - 2..],
        [
            "a[\"RECEIPT\\nreceipt-id:77\\n\\n\\u0000\"]".to_string(),
            "c[1000,\"Normal closure\"]".to_string()
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// SockJS framing: WebSocket and xhr-polling (F18)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sockjs_websocket_carries_connect_subscribe_send_and_message() {
    let addr = start_gateway(&defaults()).await;
    let mut c = Client::sockjs_ws(addr, "sjs").await;
    let connected = c.handshake("1.2", "").await;
    assert_eq!(connected.get("version"), Some("1.2"));
    assert_eq!(c.raw_sockjs[0], "o");
    assert!(
        c.raw_sockjs[1].starts_with("a[\"CONNECTED\\nversion:1.2\\n"),
        "{:?}",
        c.raw_sockjs
    );
    c.subscribe("0", "/topic/sjs", "").await;

    // One SEND split across two SockJS messages of one SockJS frame (F18 over WebSocket).
    c.send_all(&[
        "SEND\ndestination:/topic/sjs\nx-h",
        "dr:v\n\n100% %41 </script> \u{e9}\u{2713}\0",
    ])
    .await;
    let message = c.frame().await;
    assert_eq!(body(&message), "100% %41 </script> \u{e9}\u{2713}");
    assert_eq!(message.get("x-hdr"), Some("v"));
    assert_eq!(message.get("subscription"), Some("0"));
    assert_eq!(message.get("destination"), Some("/topic/sjs"));
    assert_eq!(
        message.get("content-length"),
        Some(
            "100% %41 </script> \u{e9}\u{2713}"
                .len()
                .to_string()
                .as_str()
        )
    );
    // Several STOMP frames in one SockJS message: one STOMP frame per SockJS message back.
    c.send("SEND\ndestination:/topic/sjs\n\n1\0SEND\ndestination:/topic/sjs\n\n2\0SEND\ndestination:/topic/sjs\n\n3\0")
        .await;
    for expected in ["1", "2", "3"] {
        assert_eq!(body(&c.frame().await), expected);
    }
    c.send("DISCONNECT\nreceipt:bye\n\n\0").await;
    assert_eq!(c.frame().await.get("receipt-id"), Some("bye"));
    assert_eq!(c.item().await, Item::Close(1000, "Normal closure".into()));
}

#[tokio::test]
async fn f18_xhr_polling_stomp_session() {
    let addr = start_gateway(&defaults()).await;
    let mut ws = Client::raw_stomp(addr, "1.2", "").await;
    ws.subscribe("0", "/topic/xhr", "").await;

    let mut c = Client::xhr(addr, "xhr1").await;
    let connected = c.handshake("1.2", "").await;
    assert_eq!(connected.get("version"), Some("1.2"));
    assert_eq!(connected.get("heart-beat"), Some("10000,10000"));
    c.subscribe("0", "/topic/xhr", "").await;

    // F18: a frame split across two SockJS messages of one xhr_send.
    c.send_all(&["SEND\ndestination:/topic/xhr\n", "\nsplit in one post\0"])
        .await;
    assert_eq!(body(&c.frame().await), "split in one post");
    // ... and across two xhr_send requests.
    c.send("SEND\ndestination:/topic/xhr\nreceipt:r2\n\nsplit across")
        .await;
    c.send(" two posts\0").await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let frame = c.frame().await;
        got.push((frame.command, body(&frame)));
    }
    got.sort_by_key(|(cmd, _)| *cmd == Command::Receipt);
    assert_eq!(
        got,
        [
            (Command::Message, "split across two posts".to_string()),
            (Command::Receipt, String::new())
        ]
    );
    // The raw WebSocket subscriber saw the same messages.
    assert_eq!(body(&ws.frame().await), "split in one post");
    assert_eq!(body(&ws.frame().await), "split across two posts");
    // A WebSocket publisher reaches the xhr session.
    ws.send("SEND\ndestination:/topic/xhr\n\nfrom ws\0").await;
    assert_eq!(body(&ws.frame().await), "from ws");
    assert_eq!(body(&c.frame().await), "from ws");

    c.send("DISCONNECT\nreceipt:77\n\n\0").await;
    assert_eq!(c.frame().await.get("receipt-id"), Some("77"));
    assert_eq!(c.item().await, Item::Close(1000, "Normal closure".into()));
    assert!(
        c.raw_sockjs
            .iter()
            .any(|f| f == "a[\"RECEIPT\\nreceipt-id:77\\n\\n\\u0000\"]\n"),
        "{:?}",
        c.raw_sockjs
    );
}

// ---------------------------------------------------------------------------------------------
// Destinations over WebSocket (R08, R10, R14)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn r08_r10_user_destinations_between_two_sessions_of_one_user() {
    let (addr, app) = start_gateway_with_stomp(&config(
        "",
        "allow_client_send_to_user = true\nprincipal_header = \"login\"",
    ))
    .await;
    let (mut alice1, _) = Client::raw(addr, Some("v12.stomp")).await;
    let alice1_session = Client::session_of(&alice1.handshake("1.2", "login:alice\n").await).await;
    let mut alice2 = Client::sockjs_ws(addr, "alice2").await;
    alice2.handshake("1.2", "login:alice\n").await;
    let mut bob = Client::raw_stomp(addr, "1.2", "login:bob\n").await;
    alice1.subscribe("a", "/user/queue/x", "").await;
    alice2.subscribe("b", "/user/queue/x", "").await;
    bob.subscribe("c", "/user/queue/x", "").await;

    // A backend sends to the user: both of alice's sessions, whatever their carrier.
    let broker = app.broker();
    let message = broker.message(&[], Bytes::from_static(b"hi alice"));
    assert_eq!(broker.send_to_user("alice", "/queue/x", None, message), 2);
    for (alice, sub) in [(&mut alice1, "a"), (&mut alice2, "b")] {
        let m = alice.frame().await;
        assert_eq!(m.get("destination"), Some("/user/queue/x"));
        assert_eq!(m.get("subscription"), Some(sub));
        assert_eq!(body(&m), "hi alice");
    }
    bob.expect_silence(100).await;

    // Bob sends to alice: both of her sessions get it.
    bob.send("SEND\ndestination:/user/alice/queue/x\nreceipt:sent\n\nfrom bob\0")
        .await;
    assert_eq!(bob.frame().await.get("receipt-id"), Some("sent"));
    assert_eq!(body(&alice1.frame().await), "from bob");
    assert_eq!(body(&alice2.frame().await), "from bob");

    // Alice sends to herself: only the originating session.
    alice2
        .send("SEND\ndestination:/user/alice/queue/x\n\nnote to self\0")
        .await;
    let m = alice2.frame().await;
    assert_eq!(body(&m), "note to self");
    assert_eq!(m.get("destination"), Some("/user/queue/x"));
    alice1.expect_silence(150).await;
    bob.expect_silence(10).await;

    // R10: another session may not subscribe to alice1's translated destination.
    bob.send(&format!(
        "SUBSCRIBE\nid:steal\ndestination:/queue/x-user{alice1_session}\n\n\0"
    ))
    .await;
    bob.expect_error_then_close("Access denied").await;
}

#[tokio::test]
async fn r14_a_thousand_messages_arrive_in_order_on_every_carrier() {
    let addr = start_gateway(&defaults()).await;
    let mut raw = Client::raw_stomp(addr, "1.2", "").await;
    raw.subscribe("0", "/topic/many", "").await;
    let mut sockjs = Client::sockjs_ws(addr, "many").await;
    sockjs.handshake("1.2", "").await;
    sockjs.subscribe("0", "/topic/many", "").await;
    let mut publisher = Client::raw_stomp(addr, "1.2", "").await;
    let mut wire = String::new();
    for i in 0..1000 {
        wire.push_str(&format!("SEND\ndestination:/topic/many\n\n{i}\0"));
        if i % 100 == 99 {
            publisher.send(&wire).await;
            wire.clear();
        }
    }
    for c in [&mut raw, &mut sockjs] {
        for i in 0..1000 {
            assert_eq!(body(&c.frame().await), i.to_string());
        }
    }
}

#[tokio::test]
async fn a_client_that_drops_its_websocket_is_not_a_protocol_error() {
    let (addr, stomp) = start_gateway_with_stomp(&defaults()).await;
    let mut events = stomp.subscribe_events();
    for path in ["/stomp/websocket", "/stomp/000/drop/websocket"] {
        let (mut ws, _) = websocket(addr, path, Some("v12.stomp")).await;
        let connect = connect_frame("1.2", "");
        let message = match path.contains("/000/") {
            true => {
                // The SockJS websocket opens with `o` and carries JSON arrays.
                timeout(WAIT, ws.next())
                    .await
                    .expect("o")
                    .expect("o")
                    .expect("o");
                serde_json::to_string(&[connect]).unwrap()
            }
            false => connect,
        };
        ws.send(Message::text(message)).await.unwrap();
        let connected = timeout(WAIT, ws.next()).await.expect("CONNECTED");
        assert!(
            connected
                .unwrap()
                .unwrap()
                .to_text()
                .unwrap()
                .contains("CONNECTED")
        );
        // Dropped without a close frame: the TCP connection just ends.
        drop(ws);
        let disconnect = timeout(WAIT, async {
            loop {
                if let sockjs_gateway::stomp::StompEvent::Disconnect { code, cause, .. } =
                    events.recv().await.unwrap()
                {
                    return (code, cause);
                }
            }
        })
        .await
        .expect("a disconnect event");
        assert_eq!(
            disconnect,
            (1006, sockjs_gateway::stomp::DisconnectCause::TransportError),
            "{path}"
        );
    }
}

/// Spec §5.3 over the WebSocket carriers: a topic subscription's `prefetch-count` window
/// holds messages back until ACKs open it, with `redelivered:false` on client-ack deliveries.
#[tokio::test]
async fn topic_prefetch_window_over_raw_and_sockjs_websocket() {
    let addr = start_gateway(&defaults()).await;
    let raw = Client::raw_stomp(addr, "1.2", "").await;
    let mut sockjs = Client::sockjs_ws(addr, "prefetch").await;
    sockjs.handshake("1.2", "").await;
    for mut c in [raw, sockjs] {
        c.send("SUBSCRIBE\nid:0\ndestination:/topic/pf\nack:client-individual\nprefetch-count:1\nreceipt:r\n\n\0")
            .await;
        assert_eq!(c.frame().await.get("receipt-id"), Some("r"));
        c.send("SEND\ndestination:/topic/pf\n\none\0SEND\ndestination:/topic/pf\n\ntwo\0SEND\ndestination:/topic/pf\n\nthree\0")
            .await;
        let mut seen = Vec::new();
        for expected in ["one", "two", "three"] {
            let message = c.frame().await;
            assert_eq!(body(&message), expected);
            assert_eq!(message.get("redelivered"), Some("false"));
            // Only one is outstanding at a time: nothing more until this one is ACKed.
            c.expect_silence(200).await;
            c.send(&format!("ACK\nid:{}\n\n\0", message.get("ack").unwrap()))
                .await;
            seen.push(body(&message));
        }
        assert_eq!(seen, ["one", "two", "three"]);
        c.expect_silence(100).await;
    }
}
