//! `app = "proxy"` through real sockets: an in-process gateway relays SockJS sessions to
//! WebSocket upstreams started here (tokio-tungstenite servers on free loopback ports, one
//! over TLS with a CA made for the test). Echo on every transport the Rust client speaks,
//! the close mapping both ways, an unreachable upstream, backpressure from a client that does
//! not read and from an upstream that does not read, header forwarding, subprotocols, binary
//! messages, and wss:// with a CA file.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{post, request, start_gateway};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Every wait in these tests gives up after this long (generous: the machine is shared).
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Upstreams

/// What an upstream saw on one connection.
#[derive(Debug)]
enum Seen {
    /// The handshake's request headers.
    Handshake(http::HeaderMap),
    /// A message from the gateway.
    Message(Message),
    /// The gateway closed: its close frame, or None when the TCP connection just ended.
    Closed(Option<CloseFrame>),
}

type Events = mpsc::UnboundedReceiver<Seen>;

/// An upstream WebSocket server on a free loopback port. Each connection's handshake
/// agrees to the first subprotocol offered and is reported; then `behave` runs it.
async fn upstream_on<S, F, Fut>(listener: TcpListener, wrap: S, behave: F) -> (SocketAddr, Events)
where
    S: Fn(TcpStream) -> Wrapped + Send + Sync + 'static,
    F: Fn(Conn, mpsc::UnboundedSender<Seen>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let behave = Arc::new(behave);
    let wrap = Arc::new(wrap);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tx, behave, wrap) = (tx.clone(), behave.clone(), wrap.clone());
            tokio::spawn(async move {
                let Some(stream) = wrap(stream).await else {
                    return;
                };
                let seen = tx.clone();
                #[allow(clippy::result_large_err)] // tungstenite's callback signature
                let callback = move |req: &Request, mut resp: Response| {
                    let _ = seen.send(Seen::Handshake(req.headers().clone()));
                    if let Some(first) = req
                        .headers()
                        .get("sec-websocket-protocol")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.split(',').next())
                    {
                        resp.headers_mut()
                            .insert("sec-websocket-protocol", first.trim().parse().unwrap());
                    }
                    Ok(resp)
                };
                if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await {
                    behave(ws, tx).await;
                }
            });
        }
    });
    (addr, rx)
}

/// A byte stream an upstream runs on (plain TCP or TLS).
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// An upstream's connection.
type Conn = WebSocketStream<Box<dyn Io>>;
/// A TCP connection made ready for the WebSocket handshake (TLS accepted, a delay, ...).
type Wrapped = std::pin::Pin<Box<dyn Future<Output = Option<Box<dyn Io>>> + Send>>;
/// What an upstream does with a connection.
type Behaviour = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

fn plain(stream: TcpStream) -> Wrapped {
    Box::pin(async move { Some(Box::new(stream) as Box<dyn Io>) })
}

async fn upstream<F, Fut>(behave: F) -> (SocketAddr, Events)
where
    F: Fn(Conn, mpsc::UnboundedSender<Seen>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    upstream_on(listener, plain, behave).await
}

/// Echo every message back, reporting each and the close.
async fn echo(mut ws: Conn, tx: mpsc::UnboundedSender<Seen>) {
    while let Some(next) = ws.next().await {
        match next {
            Ok(Message::Close(frame)) => {
                let _ = tx.send(Seen::Closed(frame));
                while ws.next().await.is_some() {}
                return;
            }
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                let _ = tx.send(Seen::Message(m.clone()));
                if ws.send(m).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = tx.send(Seen::Closed(None));
}

/// Wait for the first message, then close with `frame` (None: a close frame with no code).
fn close_after_first(
    frame: Option<(u16, &'static str)>,
) -> impl Fn(Conn, mpsc::UnboundedSender<Seen>) -> Behaviour + Send + Sync + 'static {
    move |mut ws, _tx| {
        Box::pin(async move {
            let _ = ws.next().await;
            let frame = frame.map(|(code, reason)| CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            });
            let _ = ws.close(frame).await;
            while ws.next().await.is_some() {}
        })
    }
}

/// The next event of an upstream (skipping handshakes unless asked for).
async fn next_seen(events: &mut Events) -> Seen {
    timeout(WAIT, events.recv())
        .await
        .expect("upstream event in time")
        .expect("upstream running")
}

async fn handshake(events: &mut Events) -> http::HeaderMap {
    loop {
        if let Seen::Handshake(h) = next_seen(events).await {
            return h;
        }
    }
}

async fn upstream_close(events: &mut Events) -> Option<CloseFrame> {
    loop {
        if let Seen::Closed(frame) = next_seen(events).await {
            return frame;
        }
    }
}

fn gateway_config(upstream: &str, extra: &str) -> String {
    let delay = match extra.contains("disconnect_delay") {
        true => "",
        false => "disconnect_delay = 0.5\n",
    };
    format!(
        "[[service]]\nprefix = \"/ws\"\napp = \"proxy\"\nupstream = \"{upstream}\"\n{delay}{extra}\n"
    )
}

// ---------------------------------------------------------------------------------------
// SockJS clients

/// One SockJS frame as a client sees it.
#[derive(Debug, PartialEq)]
enum Frame {
    Open,
    Heartbeat,
    Messages(Vec<String>),
    Close(u16, String),
}

fn parse_frame(text: &str) -> Frame {
    let text = text.trim_end_matches('\n');
    match text.as_bytes().first() {
        Some(b'o') => Frame::Open,
        Some(b'h') => Frame::Heartbeat,
        Some(b'a') => Frame::Messages(serde_json::from_str(&text[1..]).expect("a frame")),
        Some(b'c') => {
            let (code, reason): (u16, String) = serde_json::from_str(&text[1..]).expect("c frame");
            Frame::Close(code, reason)
        }
        _ => panic!("not a SockJS frame: {text:?}"),
    }
}

/// The transports the Rust client speaks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Websocket,
    Raw,
    XhrStreaming,
    XhrPolling,
    EventSource,
}

/// A client session over one transport.
struct Client {
    kind: Kind,
    addr: SocketAddr,
    sid: String,
    ws: Option<WebSocketStream<MaybeTlsStream<TcpStream>>>,
    stream: Option<common::Response>,
    /// Frames read but not yet returned.
    pending: std::collections::VecDeque<Frame>,
}

static NEXT_SID: AtomicU64 = AtomicU64::new(1);

impl Client {
    async fn open(addr: SocketAddr, kind: Kind) -> Client {
        Self::open_with(addr, kind, &[]).await
    }

    /// Open a session, sending `headers` with the opening request.
    async fn open_with(addr: SocketAddr, kind: Kind, headers: &[(&str, &str)]) -> Client {
        let sid = format!("s{}", NEXT_SID.fetch_add(1, Ordering::Relaxed));
        let mut c = Client {
            kind,
            addr,
            sid,
            ws: None,
            stream: None,
            pending: Default::default(),
        };
        match kind {
            Kind::Websocket | Kind::Raw => {
                let path = match kind {
                    Kind::Raw => "/ws/websocket".to_string(),
                    _ => format!("/ws/000/{}/websocket", c.sid),
                };
                let mut req =
                    tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                        format!("ws://{addr}{path}"),
                    )
                    .unwrap();
                for (n, v) in headers {
                    req.headers_mut().append(
                        http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                        v.parse().unwrap(),
                    );
                }
                let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
                c.ws = Some(ws);
            }
            Kind::XhrStreaming | Kind::EventSource => {
                let (method, route) = match kind {
                    Kind::XhrStreaming => ("POST", "xhr_streaming"),
                    _ => ("GET", "eventsource"),
                };
                let path = format!("/ws/000/{}/{route}", c.sid);
                let mut resp = request(addr, method, &path, headers, b"").await;
                assert_eq!(resp.status, 200);
                resp.chunk().await.expect("prelude");
                c.stream = Some(resp);
            }
            Kind::XhrPolling => {
                let path = format!("/ws/000/{}/xhr", c.sid);
                let resp = request(addr, "POST", &path, headers, b"").await;
                let body = resp.body().await;
                c.pending
                    .push_back(parse_frame(std::str::from_utf8(&body).unwrap()));
            }
        }
        if kind != Kind::Raw {
            assert_eq!(c.frame().await, Frame::Open);
        }
        c
    }

    async fn send(&mut self, messages: &[&str]) {
        match self.kind {
            Kind::Raw => {
                for m in messages {
                    self.ws
                        .as_mut()
                        .unwrap()
                        .send(Message::text(*m))
                        .await
                        .unwrap();
                }
            }
            Kind::Websocket => {
                let body = serde_json::to_string(messages).unwrap();
                self.ws
                    .as_mut()
                    .unwrap()
                    .send(Message::text(body))
                    .await
                    .unwrap();
            }
            _ => {
                let body = serde_json::to_vec(messages).unwrap();
                let (status, _) =
                    post(self.addr, &format!("/ws/000/{}/xhr_send", self.sid), &body).await;
                assert_eq!(status, 204);
            }
        }
    }

    /// The next frame (raw WebSocket messages and closes are reported as frames too).
    async fn frame(&mut self) -> Frame {
        if let Some(f) = self.pending.pop_front() {
            return f;
        }
        let deadline = Instant::now() + WAIT;
        match self.kind {
            Kind::Raw => loop {
                let next = timeout_at(deadline, self.ws.as_mut().unwrap().next())
                    .await
                    .expect("message in time");
                return match next {
                    Some(Ok(Message::Text(t))) => Frame::Messages(vec![t.to_string()]),
                    Some(Ok(Message::Binary(b))) => {
                        Frame::Messages(vec![format!("binary:{}", hex(&b))])
                    }
                    Some(Ok(Message::Close(f))) => match f {
                        Some(f) => Frame::Close(f.code.into(), f.reason.to_string()),
                        None => Frame::Close(1005, String::new()),
                    },
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => Frame::Close(1006, String::new()),
                };
            },
            Kind::Websocket => loop {
                let next = timeout_at(deadline, self.ws.as_mut().unwrap().next())
                    .await
                    .expect("frame in time");
                match next {
                    Some(Ok(Message::Text(t))) => return parse_frame(&t),
                    Some(Ok(_)) => continue,
                    other => panic!("socket ended without a close frame: {other:?}"),
                }
            },
            Kind::XhrStreaming | Kind::EventSource => loop {
                let stream = self.stream.as_mut().expect("stream open");
                let chunk = timeout_at(deadline, stream.chunk())
                    .await
                    .expect("chunk in time");
                let Some(chunk) = chunk else {
                    // The response ended (response limit); reopen it.
                    let route = if self.kind == Kind::EventSource {
                        "eventsource"
                    } else {
                        "xhr_streaming"
                    };
                    let method = if self.kind == Kind::EventSource {
                        "GET"
                    } else {
                        "POST"
                    };
                    let path = format!("/ws/000/{}/{route}", self.sid);
                    let mut resp = request(self.addr, method, &path, &[], b"").await;
                    resp.chunk().await.expect("prelude");
                    self.stream = Some(resp);
                    continue;
                };
                let text = String::from_utf8(chunk).unwrap();
                let text = match self.kind {
                    Kind::EventSource => text
                        .strip_prefix("data: ")
                        .and_then(|t| t.strip_suffix("\r\n\r\n"))
                        .expect("event")
                        .to_string(),
                    _ => text,
                };
                return parse_frame(&text);
            },
            Kind::XhrPolling => {
                let path = format!("/ws/000/{}/xhr", self.sid);
                let body = timeout_at(deadline, async {
                    request(self.addr, "POST", &path, &[], b"")
                        .await
                        .body()
                        .await
                })
                .await
                .expect("poll in time");
                parse_frame(std::str::from_utf8(&body).unwrap())
            }
        }
    }

    /// Messages until `n` have arrived (heartbeats skipped); panics on a close.
    async fn messages(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.frame().await {
                Frame::Messages(m) => out.extend(m),
                Frame::Heartbeat => {}
                other => panic!("expected messages, got {other:?} after {out:?}"),
            }
        }
        out
    }

    /// The close frame, skipping messages and heartbeats.
    async fn close_frame(&mut self) -> (u16, String) {
        loop {
            match self.frame().await {
                Frame::Close(code, reason) => return (code, reason),
                Frame::Open => panic!("a second open frame"),
                _ => {}
            }
        }
    }

    /// Close as a client does: a close frame on WebSocket, dropping the stream otherwise.
    async fn close(mut self) {
        if let Some(ws) = self.ws.as_mut() {
            let _ = ws.close(None).await;
            let _ = timeout(WAIT, async { while ws.next().await.is_some() {} }).await;
        }
        drop(self.stream.take());
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const ALL_KINDS: [Kind; 5] = [
    Kind::Websocket,
    Kind::Raw,
    Kind::XhrStreaming,
    Kind::XhrPolling,
    Kind::EventSource,
];

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn every_transport_echoes_through_its_own_upstream_connection_in_order() {
    let (up, mut events) = upstream(echo).await;
    let addr = start_gateway(&gateway_config(&format!("ws://{up}/echo"), "")).await;
    let big = "é".repeat(40_000);
    for kind in ALL_KINDS {
        let mut c = Client::open(addr, kind).await;
        let headers = handshake(&mut events).await;
        assert!(headers.get("sec-websocket-protocol").is_none(), "{kind:?}");
        let sent = [
            "one",
            "two \"quoted\" \\ </script>",
            "\u{2028} 😀",
            &big,
            "last",
        ];
        c.send(&sent).await;
        assert_eq!(c.messages(sent.len()).await, sent, "{kind:?}");
        for expected in sent {
            match next_seen(&mut events).await {
                Seen::Message(Message::Text(t)) => assert_eq!(t.as_str(), expected, "{kind:?}"),
                other => panic!("{kind:?}: {other:?}"),
            }
        }
        c.close().await;
        // A client's close reaches the upstream as 1000; a session that times out (the
        // HTTP transports have no close of their own) as 1001.
        let frame = upstream_close(&mut events).await.expect("a close frame");
        let expected = match kind {
            Kind::Websocket | Kind::Raw => CloseCode::Normal,
            _ => CloseCode::Away,
        };
        assert_eq!(frame.code, expected, "{kind:?}: {frame:?}");
    }
}

#[tokio::test]
async fn upstream_close_codes_reach_the_client() {
    for (frame, expected) in [
        (Some((4001, "custom goodbye")), (4001, "custom goodbye")),
        (Some((1008, "policy")), (1008, "policy")),
        (Some((1000, "done")), (1000, "done")),
        (None, (1000, "Normal closure")),
    ] {
        let (up, _events) = upstream(close_after_first(frame)).await;
        let addr = start_gateway(&gateway_config(&format!("ws://{up}/"), "")).await;
        for kind in [Kind::Websocket, Kind::XhrStreaming, Kind::Raw] {
            let mut c = Client::open(addr, kind).await;
            c.send(&["hello"]).await;
            let (code, reason) = c.close_frame().await;
            assert_eq!((code, reason.as_str()), expected, "{kind:?} {frame:?}");
        }
    }
}

#[tokio::test]
async fn an_upstream_that_drops_the_connection_gives_1011() {
    let (up, _events) = upstream(|mut ws: Conn, _tx| async move {
        let _ = ws.next().await;
        drop(ws);
    })
    .await;
    let addr = start_gateway(&gateway_config(&format!("ws://{up}/"), "")).await;
    let mut c = Client::open(addr, Kind::Websocket).await;
    c.send(&["hello"]).await;
    assert_eq!(
        c.close_frame().await,
        (1011, "Upstream connection lost".to_string())
    );
}

#[tokio::test]
async fn an_unreachable_upstream_gives_1011_quickly() {
    // A port with nothing listening: refused at once.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    // A listener that accepts and never answers the handshake: the connect timeout applies.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    for upstream in [closed_addr, silent_addr] {
        let addr = start_gateway(&gateway_config(
            &format!("ws://{upstream}/"),
            "connect_timeout_ms = 300",
        ))
        .await;
        for kind in [Kind::Websocket, Kind::XhrPolling] {
            let start = Instant::now();
            let mut c = Client::open(addr, kind).await;
            // A message sent meanwhile is not an error; it has nowhere to go.
            c.send(&["lost"]).await;
            assert_eq!(
                c.close_frame().await,
                (1011, "Upstream unavailable".to_string()),
                "{upstream} {kind:?}"
            );
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "closed in {:?}",
                start.elapsed()
            );
        }
    }
}

#[tokio::test]
async fn messages_sent_before_the_upstream_answers_wait_and_arrive_in_order() {
    // The upstream answers the handshake only after a delay.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = |stream: TcpStream| -> Wrapped {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Some(Box::new(stream) as Box<dyn Io>)
        })
    };
    let (up, _events) = upstream_on(listener, slow, echo).await;
    let addr = start_gateway(&gateway_config(&format!("ws://{up}/"), "")).await;
    let mut c = Client::open(addr, Kind::Websocket).await;
    let sent: Vec<String> = (0..300).map(|i| format!("early {i}")).collect();
    for chunk in sent.chunks(30) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        c.send(&chunk).await;
    }
    assert_eq!(c.messages(sent.len()).await, sent);
}

#[tokio::test]
async fn forwarded_headers_and_the_client_address_reach_the_upstream() {
    let (up, mut events) = upstream(echo).await;
    let addr = start_gateway(&gateway_config(
        &format!("ws://{up}/"),
        "forward_headers = [\"cookie\", \"Authorization\", \"x-request-id\"]",
    ))
    .await;
    let sent = [
        ("cookie", "session=abc"),
        // (A Bearer token would be verified by the gateway's own [auth]; Basic is not.)
        ("authorization", "Basic dXNlcjpwYXNz"),
        ("x-request-id", "req-42"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
        ("user-agent", "not-forwarded/1.0"),
    ];
    for kind in [Kind::XhrStreaming, Kind::Websocket, Kind::Raw] {
        let c = Client::open_with(addr, kind, &sent).await;
        let h = handshake(&mut events).await;
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
        assert_eq!(get("cookie"), "session=abc", "{kind:?}");
        assert_eq!(get("authorization"), "Basic dXNlcjpwYXNz", "{kind:?}");
        assert_eq!(get("x-request-id"), "req-42", "{kind:?}");
        assert_eq!(get("x-forwarded-for"), "203.0.113.9, 127.0.0.1", "{kind:?}");
        assert_eq!(get("x-forwarded-proto"), "https", "{kind:?}");
        assert_eq!(
            get("forwarded"),
            format!("for=127.0.0.1;host=\"{addr}\";proto=http"),
            "{kind:?}"
        );
        assert_ne!(get("user-agent"), "not-forwarded/1.0", "{kind:?}");
        assert_eq!(get("host"), up.to_string(), "{kind:?}");
        c.close().await;
    }
}

#[tokio::test]
async fn subprotocols_are_offered_upstream_or_passed_through() {
    let (up, mut events) = upstream(echo).await;
    let configured = start_gateway(&gateway_config(
        &format!("ws://{up}/"),
        "upstream_subprotocols = [\"v12.stomp\", \"v11.stomp\"]",
    ))
    .await;
    let passthrough = start_gateway(&gateway_config(&format!("ws://{up}/"), "")).await;
    // SockJS sessions carry no subprotocol: the configured list is offered.
    let c = Client::open(configured, Kind::XhrStreaming).await;
    let h = handshake(&mut events).await;
    assert_eq!(h["sec-websocket-protocol"], "v12.stomp, v11.stomp");
    c.close().await;
    for (gateway, offer, agreed) in [
        // The client's handshake picks among the configured ones; that one goes upstream.
        (configured, "v10.stomp, v11.stomp", Some("v11.stomp")),
        (configured, "mqtt", None),
        // Without a configured list the client's first choice is passed through.
        (passthrough, "mqtt, v12.stomp", Some("mqtt")),
    ] {
        // A plain handshake: tungstenite's client refuses an answer without a subprotocol.
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let resp = request(
            gateway,
            "GET",
            "/ws/websocket",
            &[
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", key),
                ("sec-websocket-protocol", offer),
            ],
            b"",
        )
        .await;
        assert_eq!(resp.status, 101);
        assert_eq!(resp.header("sec-websocket-protocol"), agreed, "{offer}");
        let h = handshake(&mut events).await;
        let upstream_offer = h.get("sec-websocket-protocol").map(|v| v.to_str().unwrap());
        match agreed {
            Some(p) => assert_eq!(upstream_offer, Some(p), "{offer}"),
            None => assert_eq!(upstream_offer, Some("v12.stomp, v11.stomp"), "{offer}"),
        }
        drop(resp);
    }
}

#[tokio::test]
async fn binary_upstream_messages_are_kept_binary_or_refused_never_corrupted() {
    let (up, _events) = upstream(|mut ws: Conn, _tx| async move {
        let _ = ws.next().await;
        let _ = ws
            .send(Message::binary(Bytes::from_static(b"utf-8 text")))
            .await;
        let _ = ws
            .send(Message::binary(Bytes::from_static(&[0xff, 0x00, 0xc3])))
            .await;
        while ws.next().await.is_some() {}
    })
    .await;
    let addr = start_gateway(&gateway_config(&format!("ws://{up}/"), "")).await;
    // Raw WebSocket carries binary as binary.
    let mut raw = Client::open(addr, Kind::Raw).await;
    raw.send(&["go"]).await;
    assert_eq!(
        raw.messages(2).await,
        [
            format!("binary:{}", hex(b"utf-8 text")),
            "binary:ff00c3".to_string()
        ]
    );
    // A text-only transport gets UTF-8 binary as text, and is closed on the rest.
    for kind in [Kind::Websocket, Kind::XhrStreaming] {
        let mut c = Client::open(addr, kind).await;
        c.send(&["go"]).await;
        assert_eq!(c.messages(1).await, ["utf-8 text"], "{kind:?}");
        assert_eq!(
            c.close_frame().await,
            (1003, "Binary message from upstream".to_string()),
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn an_upstream_message_larger_than_the_queue_is_refused_with_1009() {
    let (up, _events) = upstream(|mut ws: Conn, _tx| async move {
        let _ = ws.next().await;
        let _ = ws.send(Message::text("x".repeat(10_000))).await;
        while ws.next().await.is_some() {}
    })
    .await;
    let addr = start_gateway(&gateway_config(
        &format!("ws://{up}/"),
        "max_queued_bytes = 4096",
    ))
    .await;
    let mut c = Client::open(addr, Kind::Websocket).await;
    c.send(&["go"]).await;
    assert_eq!(
        c.close_frame().await,
        (1009, "Upstream message too big".to_string())
    );
}

/// An upstream that sends numbered 1 KiB messages as fast as it can, counting them.
fn flood(
    sent: Arc<AtomicU64>,
) -> impl Fn(Conn, mpsc::UnboundedSender<Seen>) -> Behaviour + Send + Sync + 'static {
    move |mut ws, _tx| {
        let sent = sent.clone();
        Box::pin(async move {
            let pad = "x".repeat(1000);
            // Bounded: at most 200 MiB, which an unbounded relay would swallow in seconds.
            for i in 0..200_000u64 {
                if ws
                    .send(Message::text(format!("{i:08}{pad}")))
                    .await
                    .is_err()
                {
                    return;
                }
                sent.store(i + 1, Ordering::SeqCst);
            }
        })
    }
}

/// Wait until `counter` stops moving for `quiet`, within `WAIT`; returns its value.
async fn plateau(counter: &AtomicU64, quiet: Duration) -> u64 {
    let deadline = Instant::now() + WAIT * 2;
    let mut last = counter.load(Ordering::SeqCst);
    let mut since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = counter.load(Ordering::SeqCst);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet && now > 0 {
            return now;
        }
    }
    panic!("the upstream never stopped sending: {last} messages");
}

#[tokio::test]
async fn a_client_that_does_not_read_pauses_the_upstream_and_loses_nothing() {
    let sent = Arc::new(AtomicU64::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let small_send = |stream: TcpStream| -> Wrapped {
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(16 * 1024);
        Box::pin(async move { Some(Box::new(stream) as Box<dyn Io>) })
    };
    let (up, _events) = upstream_on(listener, small_send, flood(sent.clone())).await;
    let addr = start_gateway(&gateway_config(
        &format!("ws://{up}/"),
        "max_queued_bytes = 65536\nsend_time_limit = 30\ndisconnect_delay = 30",
    ))
    .await;
    // xhr-polling: between polls nothing drains the session's queue at all.
    let mut c = Client::open(addr, Kind::XhrPolling).await;
    c.send(&["start"]).await;
    let paused_at = plateau(&sent, Duration::from_millis(1500)).await;
    // What the upstream could push is the queue (64 KiB) plus socket buffers: far from
    // the 200 MiB it would push into an unbounded relay.
    assert!(
        paused_at < 16_000,
        "the upstream pushed {paused_at} KiB while the client read nothing"
    );
    // Now read everything: all of it, in order, and the upstream resumes.
    let mut next = 0u64;
    while next < paused_at + 1000 {
        for m in c.messages(1).await {
            let seq: u64 = m[..8].parse().unwrap();
            assert_eq!(seq, next, "messages in order, none lost");
            next += 1;
        }
    }
    assert!(
        sent.load(Ordering::SeqCst) > paused_at,
        "the upstream resumed"
    );
}

#[tokio::test]
async fn a_websocket_client_that_stops_reading_pauses_the_upstream_not_the_gateway() {
    let sent = Arc::new(AtomicU64::new(0));
    let (up, _events) = upstream(flood(sent.clone())).await;
    let addr = start_gateway(&gateway_config(
        &format!("ws://{up}/"),
        "max_queued_bytes = 65536\nsend_time_limit = 30",
    ))
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws/websocket"), stream)
        .await
        .unwrap();
    ws.send(Message::text("start")).await.unwrap();
    let paused_at = plateau(&sent, Duration::from_millis(1500)).await;
    assert!(
        paused_at < 64_000,
        "the upstream pushed {paused_at} KiB while the client read nothing"
    );
    // The session is still open and delivers in order once read.
    for expected in 0..paused_at + 100 {
        let m = loop {
            match timeout(WAIT, ws.next())
                .await
                .expect("message")
                .unwrap()
                .unwrap()
            {
                Message::Text(t) => break t,
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => {}
            }
        };
        assert_eq!(m[..8].parse::<u64>().unwrap(), expected);
    }
}

#[tokio::test]
async fn an_upstream_that_stops_reading_is_cut_off_after_the_send_time_limit() {
    // The upstream accepts and never reads; its receive buffer is small.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _ = socket2::SockRef::from(&listener).set_recv_buffer_size(4096);
    let (up, _events) = upstream_on(listener, plain, |ws: Conn, _tx| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(ws);
    })
    .await;
    let addr = start_gateway(&gateway_config(
        &format!("ws://{up}/"),
        "send_time_limit = 1\nmax_inbound_bytes = 1048576",
    ))
    .await;
    let mut c = Client::open(addr, Kind::Websocket).await;
    let chunk = "y".repeat(256 * 1024);
    // At most 64 MiB: far past every socket buffer between the gateway and the upstream.
    let writer = async {
        for _ in 0..256 {
            let body = serde_json::to_string(&[&chunk]).unwrap();
            if c.ws
                .as_mut()
                .unwrap()
                .send(Message::text(body))
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let _ = timeout(Duration::from_secs(20), writer).await;
    assert_eq!(
        c.close_frame().await,
        (1011, "Upstream stopped reading".to_string())
    );
}

#[tokio::test]
async fn the_gateway_shutting_down_closes_upstreams_with_1001() {
    let (up, mut events) = upstream(echo).await;
    let config =
        sockjs_gateway::config::Config::from_toml(&gateway_config(&format!("ws://{up}/"), ""))
            .unwrap();
    let gateway = sockjs_gateway::Gateway::from_config(&config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(gateway.serve(listener, stopped));
    let mut c = Client::open(addr, Kind::XhrStreaming).await;
    handshake(&mut events).await;
    c.send(&["hi"]).await;
    assert_eq!(c.messages(1).await, ["hi"]);
    stop.send(true).unwrap();
    let frame = upstream_close(&mut events).await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Away);
}

// ---------------------------------------------------------------------------------------
// wss://

/// A CA, and a server certificate for 127.0.0.1 it signed: (CA PEM, server chain, key).
fn test_pki() -> (
    String,
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sockjs-gateway test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (
        ca_cert.pem(),
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
}

#[tokio::test]
async fn a_wss_upstream_is_verified_against_the_configured_ca() {
    let (ca_pem, chain, key) = test_pki();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = move |stream: TcpStream| -> Wrapped {
        let acceptor = acceptor.clone();
        Box::pin(async move {
            let tls = acceptor.accept(stream).await.ok()?;
            Some(Box::new(tls) as Box<dyn Io>)
        })
    };
    let (up, _events) = upstream_on(listener, tls, echo).await;
    let dir = std::env::temp_dir().join(format!("proxy-test-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
    let (other_ca, _, _) = test_pki();
    std::fs::write(dir.join("other-ca.pem"), &other_ca).unwrap();
    let url = format!("wss://127.0.0.1:{}/", up.port());
    let trusted = start_gateway(&gateway_config(
        &url,
        &format!("upstream_ca_file = \"{}\"", dir.join("ca.pem").display()),
    ))
    .await;
    let mut c = Client::open(trusted, Kind::Websocket).await;
    c.send(&["over tls"]).await;
    assert_eq!(c.messages(1).await, ["over tls"]);
    // Another CA, or the public roots, do not vouch for this server.
    for extra in [
        format!(
            "upstream_ca_file = \"{}\"",
            dir.join("other-ca.pem").display()
        ),
        String::new(),
    ] {
        let untrusted = start_gateway(&gateway_config(&url, &extra)).await;
        let mut c = Client::open(untrusted, Kind::Websocket).await;
        assert_eq!(
            c.close_frame().await,
            (1011, "Upstream unavailable".to_string()),
            "{extra}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
