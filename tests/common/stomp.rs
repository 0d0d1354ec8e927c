//! STOMP helpers shared by the carrier tests (TCP, WebSocket, SockJS): frame codecs, plus an
//! in-process STOMP-over-TCP server on a free loopback port and a raw-socket client for it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sockjs_gateway::stomp::frame::{Command, Frame, FrameLimits, FrameParser, Version};
use sockjs_gateway::stomp::tcp::{TcpSettings, serve_tcp_with};
use sockjs_gateway::stomp::{QueueSemantics, StompApp, StompConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Every wait of the TCP client gives up after this long.
pub const WAIT: Duration = Duration::from_secs(5);

/// Start STOMP over TCP with `config` on 127.0.0.1:0; returns its address and STOMP core.
pub async fn start(config: StompConfig) -> (SocketAddr, StompApp) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = TcpSettings::from_config(&config);
    let app = StompApp::new(config);
    tokio::spawn(serve_tcp_with(listener, Arc::new(app.clone()), settings));
    (addr, app)
}

/// The default configuration with `/queue` in competing mode (spec §7.3).
pub fn competing() -> StompConfig {
    StompConfig {
        queue_semantics: QueueSemantics::Competing,
        ..StompConfig::default()
    }
}

/// A raw STOMP-over-TCP client: writes wire text, decodes server frames.
pub struct Client {
    /// The socket.
    pub stream: TcpStream,
    /// Decodes what the server sent.
    pub parser: FrameParser,
    /// Every byte received, for assertions on the exact wire form.
    pub raw: Vec<u8>,
    /// Frames read ahead (e.g. deliveries that arrived before a SUBSCRIBE's RECEIPT).
    pub pending: VecDeque<Frame>,
}

impl Client {
    /// Connect the socket without sending anything.
    pub async fn open(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        Client {
            stream,
            parser: client_parser(),
            raw: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    /// Open and CONNECT with `accept-version` and heart-beats off.
    pub async fn stomp(addr: SocketAddr, version: &str, extra: &str) -> Client {
        let mut client = Client::open(addr).await;
        client
            .send(&format!(
                "CONNECT\naccept-version:{version}\nheart-beat:0,0\n{extra}\n\0"
            ))
            .await;
        let connected = client.frame().await;
        assert_eq!(connected.command, Command::Connected, "{connected:?}");
        if let Some(v) = Version::parse(connected.get("version").unwrap_or("")) {
            client.parser.set_version(v);
        }
        client
    }

    /// Write `wire` as is.
    pub async fn send(&mut self, wire: &str) {
        self.stream.write_all(wire.as_bytes()).await.unwrap();
    }

    /// The next frame, or None at EOF.
    pub async fn next(&mut self) -> Option<Frame> {
        if let Some(frame) = self.pending.pop_front() {
            return Some(frame);
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(frame) = self.parser.next_frame().unwrap() {
                return Some(frame);
            }
            let n = timeout(WAIT, self.stream.read(&mut buf))
                .await
                .expect("timed out waiting for a frame")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.raw.extend_from_slice(&buf[..n]);
            self.parser.push(&buf[..n]);
        }
    }

    /// The next frame; panics at EOF.
    pub async fn frame(&mut self) -> Frame {
        self.next().await.expect("connection closed")
    }

    /// Assert ERROR with `message`, then EOF.
    pub async fn expect_error_then_close(&mut self, message: &str) -> Frame {
        let frame = self.frame().await;
        assert_eq!(frame.command, Command::Error, "{frame:?}");
        assert_eq!(frame.get("message"), Some(message), "{frame:?}");
        assert!(self.next().await.is_none(), "expected EOF after ERROR");
        frame
    }

    /// Assert that no frame arrives within `ms`.
    pub async fn expect_silence(&mut self, ms: u64) {
        if let Ok(frame) = timeout(Duration::from_millis(ms), self.next()).await {
            panic!("unexpected {frame:?}");
        }
    }

    /// SUBSCRIBE with a receipt and wait for it; deliveries that arrive first are kept.
    pub async fn subscribe(&mut self, id: &str, destination: &str, extra: &str) {
        self.send(&format!(
            "SUBSCRIBE\nid:{id}\ndestination:{destination}\nreceipt:sub-{id}\n{extra}\n\0"
        ))
        .await;
        // Stored competing-queue messages may be delivered before the RECEIPT.
        self.receipt(&format!("sub-{id}")).await;
    }

    /// Wait for the RECEIPT `id`; deliveries that arrive first are kept, in order.
    pub async fn receipt(&mut self, id: &str) {
        let mut early = Vec::new();
        loop {
            let frame = self.frame().await;
            if frame.command == Command::Receipt {
                assert_eq!(frame.get("receipt-id"), Some(id));
                break;
            }
            early.push(frame);
        }
        self.pending.extend(early);
    }
}

/// A client-side decoder for server frames: 1.2 escapes, limits far above the server's.
pub fn client_parser() -> FrameParser {
    let mut parser = FrameParser::new(FrameLimits {
        max_frame_bytes: 16 * 1024 * 1024,
        ..FrameLimits::default()
    });
    parser.set_version(Version::V1_2);
    parser
}

/// A CONNECT frame for `accept-version` (omitted when empty), with heart-beats off unless
/// `extra` names them. `extra` is more header lines, each ending in `\n`.
pub fn connect_frame(accept_version: &str, extra: &str) -> String {
    let mut wire = String::from("CONNECT\n");
    if !accept_version.is_empty() {
        wire.push_str(&format!("accept-version:{accept_version}\n"));
    }
    if !extra.contains("heart-beat:") {
        wire.push_str("heart-beat:0,0\n");
    }
    wire.push_str(extra);
    wire.push_str("\n\0");
    wire
}

/// Decode one server message that must hold exactly one frame (spec §1: one frame per
/// WebSocket or SockJS message), with the escape rules of `version`.
pub fn decode_single_frame(payload: &[u8], version: Version) -> Frame {
    let mut parser = client_parser();
    parser.set_version(version);
    parser.push(payload);
    let frame = parser
        .next_frame()
        .unwrap_or_else(|e| {
            panic!(
                "undecodable frame {e:?}: {:?}",
                String::from_utf8_lossy(payload)
            )
        })
        .unwrap_or_else(|| panic!("incomplete frame: {:?}", String::from_utf8_lossy(payload)));
    assert!(
        matches!(parser.next_frame(), Ok(None)) && !parser.is_mid_frame(),
        "more than one frame in one message: {:?}",
        String::from_utf8_lossy(payload)
    );
    frame
}
