//! The WebSocket transports: SockJS-framed (`P/S/I/websocket`, RFC 6455 or hixie-76) and raw
//! (`P/websocket`) (sockjs.md §5.8, §5.9, §10).
//!
//! A WebSocket session is never registered: it lives exactly as long as its socket. One task
//! per connection runs [`run_socket`], which reads client messages, flushes the session's
//! queue, and sends heartbeats; no task exists per message.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::hixie76_codec::Hixie76;
pub use super::socket::WsIn;
use crate::limits::ConnectionPermit;
use crate::session::{CloseCause, CloseInfo, Inbound, OutMessage, TransportKind};
use crate::sockjs::frame;
use crate::sockjs::http::{
    Body, HttpRequest, HttpResponse, TEXT_PLAIN, WriteWatch, method_not_allowed, response,
};
use crate::sockjs::session::{Attach, Session};
use crate::sockjs::{Client, Service};

/// The read buffer of each WebSocket, sized for idle connections (tungstenite's default
/// 128 KiB would cost that much per socket).
const READ_BUFFER: usize = 1024;
/// Frames queued together are coalesced into one write up to this many bytes (the buffer
/// grows only while a batch is being written).
const WRITE_COALESCE: usize = 64 * 1024;
/// How long the closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether messages are SockJS-framed or raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    SockJs,
    Raw,
}

/// `GET P/S/I/websocket` with the RFC 6455 handshake (the service sends the old one to
/// `hixie76::handshake`).
pub fn sockjs(svc: &Arc<Service>, req: HttpRequest, client: &Client) -> HttpResponse {
    if let Err(resp) = check_upgrade(req.headers()) {
        return resp;
    }
    upgrade(svc, req, client, Framing::SockJs)
}

/// `GET P/websocket`: unframed messages, RFC 6455 only.
pub fn raw(svc: &Arc<Service>, req: HttpRequest, client: &Client) -> HttpResponse {
    if req.method() != http::Method::GET {
        return method_not_allowed("GET");
    }
    if let Err(resp) = check_upgrade(req.headers()) {
        return resp;
    }
    upgrade(svc, req, client, Framing::Raw)
}

/// The validity check of §10.1: `Upgrade: websocket` and a `Connection` holding `upgrade`.
pub(super) fn check_upgrade(headers: &HeaderMap) -> Result<(), HttpResponse> {
    let upgrade_ok = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let connection_ok = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if upgrade_ok && connection_ok {
        Ok(())
    } else {
        Err(response(
            StatusCode::BAD_REQUEST,
            TEXT_PLAIN,
            "Not a valid websocket request",
        ))
    }
}

/// `Sec-WebSocket-Accept` for a key.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Answer an RFC 6455 handshake with 101 and run the socket once hyper hands it over.
fn upgrade(
    svc: &Arc<Service>,
    req: HttpRequest,
    client: &Client,
    framing: Framing,
) -> HttpResponse {
    let version = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if !matches!(version, Some("13") | Some("8")) {
        let mut resp = response(
            StatusCode::BAD_REQUEST,
            TEXT_PLAIN,
            "Only supported WebSocket protocol is RFC 6455.",
        );
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return resp;
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return response(
            StatusCode::BAD_REQUEST,
            TEXT_PLAIN,
            "Missing Sec-WebSocket-Key",
        );
    };
    let accept = accept_key(key.as_bytes());
    let kind = match framing {
        Framing::SockJs => TransportKind::Websocket,
        Framing::Raw => TransportKind::RawWebsocket,
    };
    let subprotocol = svc.select_subprotocol(&offered_subprotocols(req.headers()));
    let mut info = svc.session_info(kind, req.headers(), req.uri().to_string(), client);
    info.subprotocol = subprotocol.clone();
    let session = match svc.new_session(info, client) {
        Ok(session) => session,
        Err(refused) => return refused,
    };
    let config = ws_config(svc.config().max_inbound_bytes);
    let svc = svc.clone();
    let watch = req.extensions().get::<Arc<WriteWatch>>().cloned();
    let permit = req.extensions().get::<Arc<ConnectionPermit>>().cloned();
    tokio::spawn(async move {
        // The socket outlives the HTTP connection's task: it keeps the connection counted
        // against the connection limits (and the drain waiting) until it closes.
        let _permit = permit;
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                let conn = Conn::Rfc6455(Box::new(ws));
                run_socket(&svc, session, conn, framing, watch).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                session.finish(client_gone());
            }
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(protocol) = subprotocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    resp
}

/// The subprotocols a handshake offers, as sent and in the client's order; the application
/// picks one (or none, which leaves the header out and lets the handshake go on, §5.9).
fn offered_subprotocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// WebSocket limits: small read buffer, inbound messages bounded by `max_inbound_bytes`.
fn ws_config(max_inbound: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_COALESCE)
        .max_message_size(Some(max_inbound))
        .max_frame_size(Some(max_inbound))
}

/// An upgraded connection: RFC 6455 via tungstenite, or our hixie-76 codec.
pub enum Conn {
    Rfc6455(Box<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>>),
    Hixie76(Hixie76),
}

impl Conn {
    /// The next inbound event; cancel-safe.
    async fn recv(&mut self) -> WsIn {
        match self {
            Conn::Rfc6455(ws) => loop {
                return match ws.next().await {
                    Some(Ok(Message::Text(t))) => WsIn::Text(t.as_str().to_owned()),
                    Some(Ok(Message::Binary(b))) => WsIn::Binary(b),
                    Some(Ok(Message::Pong(_))) => WsIn::Pong,
                    Some(Ok(Message::Ping(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) => {
                        // tungstenite queued the answering close (echoing the client's code);
                        // flushing sends it.
                        let _ = ws.flush().await;
                        WsIn::Closed
                    }
                    None => WsIn::Closed,
                    Some(Err(WsError::Capacity(_))) => WsIn::Failed(1009, "Message too big"),
                    Some(Err(WsError::Utf8(_))) => WsIn::Failed(1007, "Invalid UTF-8"),
                    Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                        WsIn::Dropped
                    }
                    Some(Err(WsError::Protocol(_))) => WsIn::Failed(1002, "Protocol error"),
                    Some(Err(_)) => WsIn::Dropped,
                };
            },
            Conn::Hixie76(h) => h.recv().await,
        }
    }

    /// Send one SockJS frame (our own encoding: UTF-8 by construction).
    async fn send_text(&mut self, text: Bytes) -> bool {
        match self {
            Conn::Rfc6455(ws) => write_data_frames(ws, &[(OPCODE_TEXT, vec![&text[..]])]).await,
            Conn::Hixie76(h) => h.send_text(&text).await,
        }
    }

    /// Write a batch of unframed messages, one WebSocket message each (raw WebSocket).
    async fn send_batch(&mut self, messages: Vec<OutMessage>) -> bool {
        match self {
            Conn::Rfc6455(ws) => {
                let frames: Vec<(u8, Vec<&[u8]>)> = messages
                    .iter()
                    .map(|m| {
                        let opcode = if m.is_text() {
                            OPCODE_TEXT
                        } else {
                            OPCODE_BINARY
                        };
                        (opcode, m.parts().collect())
                    })
                    .collect();
                write_data_frames(ws, &frames).await
            }
            Conn::Hixie76(h) => {
                for msg in messages {
                    // hixie-76 frames carry text only; a 0xFF byte would end the frame.
                    if !h.send_text(msg.as_text().as_bytes()).await {
                        return false;
                    }
                }
                true
            }
        }
    }

    /// Send a ping (RFC 6455 only); returns whether a pong is now awaited.
    async fn ping(&mut self) -> bool {
        match self {
            Conn::Rfc6455(ws) => ws.send(Message::Ping(Bytes::new())).await.is_ok(),
            Conn::Hixie76(_) => false,
        }
    }

    /// Send a close and wait briefly for the client's answer, then drop the socket.
    async fn close(&mut self, code: u16, reason: &str) {
        match self {
            Conn::Rfc6455(ws) => {
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.to_owned().into(),
                };
                // Named explicitly: with futures' `Sink for Box<S>` in the build, `ws.close`
                // would resolve to `SinkExt::close` on the box instead.
                if WebSocketStream::close(&mut **ws, Some(frame)).await.is_ok() {
                    let _ =
                        timeout(CLOSE_GRACE, async { while ws.next().await.is_some() {} }).await;
                }
            }
            Conn::Hixie76(h) => h.close().await,
        }
    }
}

/// Why a write to the socket failed: the client stopped reading (the write stayed blocked
/// past `send_time_limit`: 4500), or it went away.
fn write_failed(session: &Session, watch: Option<&WriteWatch>) -> CloseInfo {
    match watch.is_some_and(WriteWatch::stalled) {
        true => session.stalled_close(),
        false => client_gone(),
    }
}

fn client_gone() -> CloseInfo {
    CloseInfo {
        code: 1000,
        reason: "Normal closure".into(),
        cause: CloseCause::Client,
    }
}

/// The close of a socket the client dropped without a closing handshake: not a protocol
/// error, the connection is simply gone (1006 is the code for "no close frame").
pub fn connection_lost() -> CloseInfo {
    CloseInfo {
        code: 1006,
        reason: "Connection lost".into(),
        cause: CloseCause::Interrupted,
    }
}

/// Drive one WebSocket session until either side closes. Writes are bounded by the
/// connection's write time limit (`send_time_limit`, enforced under the socket by
/// `GuardedIo`); `watch` tells a write that failed for it from a client that went away.
pub async fn run_socket(
    svc: &Service,
    session: Arc<Session>,
    mut conn: Conn,
    framing: Framing,
    watch: Option<Arc<WriteWatch>>,
) {
    if !matches!(session.attach_receiver(), Attach::Opened(_)) {
        return;
    }
    let sockjs = framing == Framing::SockJs;
    if sockjs && !conn.send_text(Bytes::from_static(frame::OPEN)).await {
        session.finish(client_gone());
        return;
    }
    session.start_app();
    let heartbeat = svc.config().heartbeat_delay;
    let ping_timeout = svc.config().ws_ping_timeout;
    // One timer lives across iterations, re-armed only when it fires, so a busy socket does
    // not register a timer per message and an idle one holds a single timer entry.
    let mut deadlines = Deadlines {
        beat: Instant::now() + heartbeat,
        pong: None,
        credential: session.credential_expires().and_then(|exp| {
            // Beyond what the monotonic clock can represent means never.
            Instant::now().checked_add(exp.duration_since(SystemTime::now()).unwrap_or_default())
        }),
        idle: session.idle_deadline().map(Instant::from_std),
    };
    let timer = sleep_until(deadlines.next());
    tokio::pin!(timer);
    loop {
        if !flush(&session, &mut conn, framing).await {
            session.finish(write_failed(&session, watch.as_deref()));
            return;
        }
        if let Some(info) = session.closing() {
            if sockjs {
                conn.send_text(frame::close_frame(info.code, &info.reason))
                    .await;
                // The SockJS close frame says why; the WebSocket close says whether the
                // server is going away.
                match info.cause {
                    CloseCause::Shutdown => conn.close(info.code, &info.reason).await,
                    _ => conn.close(1000, "Normal closure").await,
                }
            } else {
                conn.close(info.code, &info.reason).await;
            }
            session.finish(info);
            return;
        }
        tokio::select! {
            inbound = conn.recv() => {
                if let Some(info) = handle_inbound(&session, &mut conn, framing, inbound, &mut deadlines.pong).await {
                    session.finish(info);
                    return;
                }
            }
            _ = session.wait_for_output() => {}
            _ = &mut timer => {
                let now = Instant::now();
                if deadlines.pong.is_some_and(|t| t <= now) {
                    conn.close(3000, "No response from heartbeat").await;
                    session.finish(CloseInfo {
                        code: 3000,
                        reason: "No response from heartbeat".into(),
                        cause: CloseCause::Timeout,
                    });
                    return;
                }
                if deadlines.credential.is_some_and(|t| t <= now) {
                    deadlines.credential = None;
                    session.close_for_expired_credential();
                }
                if deadlines.idle.is_some_and(|t| t <= now) {
                    session.close_if_idle(now.into_std());
                    deadlines.idle = session.idle_deadline().map(Instant::from_std).filter(|t| *t > now);
                }
                if deadlines.beat <= now {
                    deadlines.beat = now + heartbeat;
                    if sockjs
                        && !session.heartbeats_suppressed()
                        && !conn.send_text(Bytes::from_static(frame::HEARTBEAT)).await
                    {
                        session.finish(write_failed(&session, watch.as_deref()));
                        return;
                    }
                    if deadlines.pong.is_none() && conn.ping().await {
                        deadlines.pong = Some(Instant::now() + ping_timeout);
                    }
                }
                timer.as_mut().reset(deadlines.next());
            }
        }
    }
}

/// The WebSocket session's timed events, served by one timer.
struct Deadlines {
    /// The next heartbeat (`h` frame and ping).
    beat: Instant,
    /// When an unanswered ping times out, if one is outstanding.
    pong: Option<Instant>,
    /// When the client's credential expires, if the carrier enforces it.
    credential: Option<Instant>,
    /// When the session may be idle, as of the last check (messages since move it later; it
    /// is re-read when it comes, so no timer is touched per message).
    idle: Option<Instant>,
}

impl Deadlines {
    /// The earliest pending deadline.
    fn next(&self) -> Instant {
        [Some(self.beat), self.pong, self.credential, self.idle]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.beat)
    }
}

/// The opcode of a text data frame (RFC 6455 §5.2).
const OPCODE_TEXT: u8 = 0x1;
/// The opcode of a binary data frame.
const OPCODE_BINARY: u8 = 0x2;

/// The header of an unmasked, final server data frame of `len` payload bytes: the bytes and
/// how many of them are used (RFC 6455 §5.2).
fn frame_header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut header = [0u8; 10];
    header[0] = 0x80 | opcode;
    if len < 126 {
        header[1] = len as u8;
        (header, 2)
    } else if let Ok(short) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&short.to_be_bytes());
        (header, 4)
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (header, 10)
    }
}

/// Write data frames (opcode, payload slices) to the socket ourselves, after what tungstenite
/// still holds (a pong, say) is flushed: each payload is written from where it lies (a broker
/// MESSAGE's shared tail is not copied per subscriber), in vectored writes, and a text
/// payload is not checked for UTF-8 again (what the session queues as text is UTF-8 by
/// construction, see [`OutMessage`]). Server frames are unmasked and never fragmented here,
/// so tungstenite's own state is not affected. False when the socket failed.
async fn write_data_frames<S>(ws: &mut WebSocketStream<S>, frames: &[(u8, Vec<&[u8]>)]) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    if ws.flush().await.is_err() {
        return false;
    }
    let headers: Vec<([u8; 10], usize)> = frames
        .iter()
        .map(|(opcode, parts)| frame_header(*opcode, parts.iter().map(|p| p.len()).sum()))
        .collect();
    let mut slices = Vec::with_capacity(frames.len() * 3);
    for ((header, used), (_, parts)) in headers.iter().zip(frames) {
        slices.push(std::io::IoSlice::new(&header[..*used]));
        slices.extend(
            parts
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| std::io::IoSlice::new(p)),
        );
    }
    let io = ws.get_mut();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match io.write_vectored(rest).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => std::io::IoSlice::advance_slices(&mut rest, n),
        }
    }
    io.flush().await.is_ok()
}

/// Write everything queued: one `a[...]` frame (SockJS) or one message each (raw).
async fn flush(session: &Session, conn: &mut Conn, framing: Framing) -> bool {
    match framing {
        Framing::SockJs => match session.take_batch() {
            Some(batch) => conn.send_text(batch).await,
            None => true,
        },
        Framing::Raw => {
            let messages = session.take_messages();
            messages.is_empty() || conn.send_batch(messages).await
        }
    }
}

/// Act on one inbound event; `Some` means the session ends with that close event.
async fn handle_inbound(
    session: &Session,
    conn: &mut Conn,
    framing: Framing,
    inbound: WsIn,
    pong_deadline: &mut Option<Instant>,
) -> Option<CloseInfo> {
    let broken = || CloseInfo {
        code: 3000,
        reason: "Broken framing.".into(),
        cause: CloseCause::Protocol,
    };
    match (inbound, framing) {
        (WsIn::Text(text), Framing::Raw) => session.deliver(Inbound::Text(text)).await,
        (WsIn::Binary(bytes), Framing::Raw) => session.deliver(Inbound::Binary(bytes)).await,
        (WsIn::Text(text), Framing::SockJs) => match frame::decode_ws_message(&text) {
            Ok(messages) => {
                for m in messages {
                    session.deliver(Inbound::Text(m)).await;
                }
            }
            Err(frame::DecodeError::TooMany) => {
                conn.close(1009, "Too many messages in one payload").await;
                return Some(CloseInfo {
                    code: 1009,
                    reason: "Too many messages in one payload".into(),
                    cause: CloseCause::Protocol,
                });
            }
            Err(_) => {
                conn.close(3000, "Broken framing.").await;
                return Some(broken());
            }
        },
        (WsIn::Binary(_), Framing::SockJs) => {
            conn.close(3000, "Broken framing.").await;
            return Some(broken());
        }
        (WsIn::Pong, _) => *pong_deadline = None,
        (WsIn::Closed, _) => {
            conn.close(1000, "Normal closure").await;
            return Some(client_gone());
        }
        (WsIn::Dropped, _) => return Some(connection_lost()),
        (WsIn::Failed(code, reason), _) => {
            conn.close(code, reason).await;
            return Some(CloseInfo {
                code,
                reason: reason.into(),
                cause: CloseCause::Protocol,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_written_directly_read_back_as_the_messages_after_what_tungstenite_held() {
        let (server_io, client_io) = tokio::io::duplex(1 << 20);
        let mut server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        // Something tungstenite queued but did not flush yet goes out first.
        server
            .feed(Message::Ping(Bytes::from_static(b"p")))
            .await
            .unwrap();
        let long = "é".repeat(40_000);
        let bytes = [0u8, 0xff, 0x80];
        let frames: Vec<(u8, Vec<&[u8]>)> = vec![
            (OPCODE_TEXT, vec![b"head ", b"tail"]),
            (OPCODE_TEXT, vec![]),
            (OPCODE_TEXT, vec![&[b'x'; 125]]),
            (OPCODE_TEXT, vec![&[b'y'; 126]]),
            (OPCODE_TEXT, vec![&[b'z'; 65_535]]),
            (OPCODE_TEXT, vec![long.as_bytes(), b"!"]),
            (OPCODE_BINARY, vec![&bytes]),
        ];
        assert!(write_data_frames(&mut server, &frames).await);
        let mut got = Vec::new();
        while got.len() < frames.len() + 1 {
            got.push(client.next().await.unwrap().unwrap());
        }
        assert_eq!(got[0], Message::Ping(Bytes::from_static(b"p")));
        let text = |t: String| Message::Text(t.into());
        assert_eq!(got[1], text("head tail".into()));
        assert_eq!(got[2], text(String::new()));
        assert_eq!(got[3], text("x".repeat(125)));
        assert_eq!(got[4], text("y".repeat(126)));
        assert_eq!(got[5], text("z".repeat(65_535)));
        assert_eq!(got[6], text(format!("{long}!")));
        assert_eq!(got[7], Message::Binary(Bytes::copy_from_slice(&bytes)));
        // tungstenite still works on the same connection afterwards.
        server.send(Message::Text("after".into())).await.unwrap();
        assert_eq!(client.next().await.unwrap().unwrap(), text("after".into()));
    }

    #[test]
    fn the_highest_offered_stomp_version_is_selected() {
        struct Stomp;
        impl crate::session::App for Stomp {
            fn on_session(&self, _session: crate::session::SessionHandle) {}
            fn subprotocols(&self) -> &'static [&'static str] {
                &["v12.stomp", "v11.stomp", "v10.stomp"]
            }
        }
        use crate::session::App;
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "v10.stomp, V12.stomp".parse().unwrap(),
        );
        let offered = super::offered_subprotocols(&h);
        assert_eq!(offered, ["v10.stomp", "V12.stomp"]);
        assert_eq!(
            Stomp.select_subprotocol(&offered).as_deref(),
            Some("v12.stomp")
        );
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "mqtt".parse().unwrap(),
        );
        assert_eq!(
            Stomp.select_subprotocol(&super::offered_subprotocols(&h)),
            None
        );
    }

    #[test]
    fn accept_key_matches_the_rfc_vector() {
        assert_eq!(
            super::accept_key(b"x3JJHMbDL1EzLkh9GBhXDw=="),
            "HSmrc0sMlYUkAGmm5OPpG2HaGWk="
        );
    }
}
