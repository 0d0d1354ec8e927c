//! One client session over any SockJS transport (or raw WebSocket): open it, receive
//! application messages, send some.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use super::wire::{self, Body, Conn, Endpoint, WsParser};

/// The transports the load generator speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// SockJS-framed WebSocket (`P/S/I/websocket`).
    Websocket,
    /// Raw WebSocket (`P/websocket`, or the `ws://` URL as given).
    Raw,
    /// `P/S/I/xhr_streaming` + `xhr_send`.
    XhrStreaming,
    /// `P/S/I/xhr` + `xhr_send`.
    XhrPolling,
    /// `P/S/I/eventsource` + `xhr_send`.
    Eventsource,
    /// Socket.IO 4 (Engine.IO 4 over WebSocket, `/socket.io/?EIO=4&transport=websocket`):
    /// sends `publish` events, receives `m` events. For the cluster comparison with the
    /// Socket.IO Redis adapter.
    Socketio,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::Raw => "raw-websocket",
            Transport::XhrStreaming => "xhr-streaming",
            Transport::XhrPolling => "xhr-polling",
            Transport::Eventsource => "eventsource",
            Transport::Socketio => "socketio",
        }
    }
    pub fn is_ws(self) -> bool {
        matches!(
            self,
            Transport::Websocket | Transport::Raw | Transport::Socketio
        )
    }
    /// Whether the transport sends over separate HTTP requests.
    pub fn is_http(self) -> bool {
        !self.is_ws()
    }
}

/// What a receive call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recv {
    Alive,
    /// The session ended (close code, 1006 for a dropped connection).
    Closed(u16),
}

/// One client session.
pub struct Client {
    pub transport: Transport,
    ep: Arc<Endpoint>,
    src: Option<IpAddr>,
    /// The receiving connection: the WebSocket, or the streaming / polling response.
    pub conn: Conn,
    ws: WsParser,
    /// The HTTP response being read (HTTP transports).
    body: Option<Body>,
    /// Whether the server closes `conn` after the current response.
    close_after: bool,
    /// Decoded body bytes not yet split into frames.
    pending: Vec<u8>,
    /// The receiving request written but whose head is not read yet (bytes, path).
    request: Option<(Vec<u8>, String)>,
    /// The `xhr_send` connection.
    send_conn: Option<Conn>,
    /// `P/S/I`.
    session_path: String,
    /// Control replies (pongs) to write before the next send.
    out: Vec<u8>,
    /// Messages that arrived together with the open frame.
    stash: Vec<Vec<u8>>,
    closed: Option<u16>,
}

impl Client {
    /// Open a session: connect, handshake and wait for the SockJS `o` frame. `small` applies
    /// to the first (receiving) connection only.
    pub async fn open(
        ep: Arc<Endpoint>,
        transport: Transport,
        src: Option<IpAddr>,
        session_id: &str,
        subprotocol: Option<&str>,
        small: Option<wire::SmallRecv>,
    ) -> io::Result<Client> {
        let conn = Conn::open_with(&ep, src, small).await?;
        let session_path = format!("{}/{}/{}", ep.path, &session_id[..3], session_id);
        let mut c = Client {
            transport,
            ep,
            src,
            conn,
            ws: WsParser::default(),
            body: None,
            close_after: false,
            pending: Vec::new(),
            send_conn: None,
            request: None,
            session_path,
            out: Vec::new(),
            stash: Vec::new(),
            closed: None,
        };
        tokio::time::timeout(wire::CONNECT_TIMEOUT, c.handshake(subprotocol))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "session open timed out"))??;
        Ok(c)
    }

    async fn handshake(&mut self, subprotocol: Option<&str>) -> io::Result<()> {
        match self.transport {
            Transport::Websocket | Transport::Raw | Transport::Socketio => {
                let path = if self.transport == Transport::Socketio {
                    "/socket.io/?EIO=4&transport=websocket".to_string()
                } else if self.transport == Transport::Raw {
                    if self.ep.ws_verbatim {
                        self.ep.path.clone()
                    } else {
                        format!("{}/websocket", self.ep.path)
                    }
                } else {
                    format!("{}/websocket", self.session_path)
                };
                let req = wire::ws_handshake(&self.ep.host, &path, subprotocol);
                self.conn.write(&req).await?;
                let head = self.conn.read_head().await?;
                if head.status != 101 {
                    return Err(status_error(head.status, &path));
                }
                if self.transport == Transport::Raw {
                    return Ok(());
                }
            }
            _ => self.start_receive().await?,
        }
        // Wait for `o` (Socket.IO: the namespace's `40`); keep anything that follows it. It
        // may have come with the 101.
        let mut opened = false;
        if matches!(self.transport, Transport::Websocket | Transport::Socketio)
            && !self.conn.buf.is_empty()
        {
            let mut stash = Vec::new();
            let r = self.drain_ws(&mut |m: &[u8]| stash.push(m.to_vec()), &mut opened)?;
            self.stash.extend(stash);
            self.flush_control().await?;
            if let Recv::Closed(code) = r {
                return Err(io::Error::other(format!("closed ({code}) before open")));
            }
        }
        while !opened {
            let mut stash = Vec::new();
            let r = self
                .recv_inner(&mut |m: &[u8]| stash.push(m.to_vec()), &mut opened)
                .await?;
            self.stash.extend(stash);
            if let Recv::Closed(code) = r {
                return Err(io::Error::other(format!("closed ({code}) before open")));
            }
        }
        Ok(())
    }

    /// Write the receiving request (HTTP transports); its head is read by the next receive,
    /// because a poll answers only when there is something to say.
    async fn start_receive(&mut self) -> io::Result<()> {
        let (method, suffix) = match self.transport {
            Transport::XhrStreaming => ("POST", "xhr_streaming"),
            Transport::XhrPolling => ("POST", "xhr"),
            Transport::Eventsource => ("GET", "eventsource"),
            _ => return Ok(()),
        };
        let path = format!("{}/{}", self.session_path, suffix);
        let req = wire::request(method, &self.ep.host, &path, &[], b"");
        if self.close_after {
            self.conn = Conn::open(&self.ep, self.src).await?;
            self.close_after = false;
        }
        if self.conn.write(&req).await.is_err() {
            self.conn = Conn::open(&self.ep, self.src).await?;
            self.conn.write(&req).await?;
        }
        self.request = Some((req, path));
        Ok(())
    }

    /// Read the head of the outstanding receiving request.
    async fn await_head(&mut self) -> io::Result<()> {
        let Some((req, path)) = self.request.take() else {
            return Ok(());
        };
        let head = match self.conn.read_head().await {
            Ok(h) => h,
            // A keep-alive connection the server closed meanwhile: reconnect once.
            Err(_) => {
                self.conn = Conn::open(&self.ep, self.src).await?;
                self.conn.write(&req).await?;
                self.conn.read_head().await?
            }
        };
        if head.status != 200 {
            return Err(status_error(head.status, &path));
        }
        self.close_after = head.close;
        self.body = Some(Body::new(head.body));
        Ok(())
    }

    /// Wait for data and hand every complete application message to `f`.
    pub async fn recv(&mut self, f: &mut impl FnMut(&[u8])) -> io::Result<Recv> {
        let mut opened = true;
        self.recv_inner(f, &mut opened).await
    }

    async fn recv_inner(
        &mut self,
        f: &mut impl FnMut(&[u8]),
        opened: &mut bool,
    ) -> io::Result<Recv> {
        if !self.stash.is_empty() {
            for m in std::mem::take(&mut self.stash) {
                f(&m);
            }
            return Ok(Recv::Alive);
        }
        if let Some(code) = self.closed {
            return Ok(Recv::Closed(code));
        }
        if self.transport.is_ws() {
            let n = self.conn.fill().await?;
            if n == 0 {
                self.closed = Some(1006);
                return Ok(Recv::Closed(1006));
            }
            let r = self.drain_ws(f, opened)?;
            self.flush_control().await?;
            return Ok(r);
        }
        if self.body.is_none() {
            if self.request.is_none() {
                self.start_receive().await?;
            }
            self.await_head().await?;
        }
        let Some(mut body) = self.body.take() else {
            return Ok(Recv::Alive);
        };
        let done = self
            .conn
            .read_body_some(&mut body, &mut self.pending)
            .await?;
        self.split_frames(f, opened);
        if done {
            self.pending.clear();
            if self.closed.is_none() && self.transport == Transport::XhrPolling {
                // Re-poll at once so the session always has a receiver.
                self.start_receive().await?;
            }
        } else {
            self.body = Some(body);
        }
        Ok(match self.closed {
            Some(code) => Recv::Closed(code),
            None => Recv::Alive,
        })
    }

    /// Read more WebSocket bytes (cancel-safe); 0 means EOF.
    pub async fn fill_ws(&mut self) -> io::Result<usize> {
        self.conn.fill().await
    }

    /// Process the WebSocket frames buffered so far.
    pub fn drain_ws(&mut self, f: &mut impl FnMut(&[u8]), opened: &mut bool) -> io::Result<Recv> {
        let sockjs = self.transport == Transport::Websocket;
        let socketio = self.transport == Transport::Socketio;
        let mut closed = None;
        let out = &mut self.out;
        self.ws.parse(&mut self.conn.buf, |op, payload| match op {
            wire::OP_TEXT | wire::OP_BINARY => {
                if socketio {
                    socketio_packet(payload, f, out, opened);
                } else if sockjs {
                    sockjs_frame(payload, f, &mut closed, opened);
                } else {
                    f(payload);
                }
            }
            wire::OP_PING => wire::ws_encode(wire::OP_PONG, payload, out),
            wire::OP_CLOSE => {
                let code = if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    1005
                };
                closed.get_or_insert(code);
            }
            _ => {}
        })?;
        if let Some(code) = closed {
            self.closed = Some(code);
            return Ok(Recv::Closed(code));
        }
        Ok(Recv::Alive)
    }

    async fn flush_control(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            self.conn.write(&out).await?;
        }
        Ok(())
    }

    /// Split decoded HTTP body bytes into SockJS frames.
    fn split_frames(&mut self, f: &mut impl FnMut(&[u8]), opened: &mut bool) {
        let mut closed = self.closed;
        let mut start = 0;
        let data = &self.pending;
        let es = self.transport == Transport::Eventsource;
        while let Some(off) = data[start..].iter().position(|&b| b == b'\n') {
            let line = &data[start..start + off];
            start += off + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if es {
                if let Some(frame) = line.strip_prefix(b"data: ") {
                    if frame.contains(&b'%') {
                        let un = unescape_es(frame);
                        sockjs_frame(&un, f, &mut closed, opened);
                    } else {
                        sockjs_frame(frame, f, &mut closed, opened);
                    }
                }
            } else if !line.is_empty() {
                sockjs_frame(line, f, &mut closed, opened);
            }
        }
        self.pending.drain(..start);
        self.closed = closed;
    }

    /// Encode messages as this transport sends them over a WebSocket (appends to `out`).
    pub fn encode_ws(&self, msgs: &[&[u8]], out: &mut Vec<u8>) {
        if self.transport == Transport::Websocket {
            let json = json_array(msgs);
            wire::ws_encode(wire::OP_TEXT, &json, out);
        } else if self.transport == Transport::Socketio {
            // Bench payloads are ASCII without quotes or backslashes: no escaping needed.
            for m in msgs {
                let mut event = b"42[\"publish\",\"".to_vec();
                event.extend_from_slice(m);
                event.extend_from_slice(b"\"]");
                wire::ws_encode(wire::OP_TEXT, &event, out);
            }
        } else {
            for m in msgs {
                wire::ws_encode(wire::OP_TEXT, m, out);
            }
        }
    }

    /// Write pre-encoded WebSocket bytes (with any pending control replies).
    pub async fn write_ws(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.flush_control().await?;
        self.conn.write(bytes).await
    }

    /// Send application messages.
    pub async fn send(&mut self, msgs: &[&[u8]]) -> io::Result<()> {
        if self.transport.is_ws() {
            let mut out = std::mem::take(&mut self.out);
            self.encode_ws(msgs, &mut out);
            let r = self.conn.write(&out).await;
            out.clear();
            self.out = out;
            return r;
        }
        let body = json_array(msgs);
        let path = format!("{}/xhr_send", self.session_path);
        let req = wire::request(
            "POST",
            &self.ep.host,
            &path,
            &[("Content-Type", "text/plain")],
            &body,
        );
        for attempt in 0..2 {
            if self.send_conn.is_none() {
                self.send_conn = Some(Conn::open(&self.ep, self.src).await?);
            }
            let Some(conn) = self.send_conn.as_mut() else {
                continue;
            };
            let result = async {
                conn.write(&req).await?;
                let head = conn.read_head().await?;
                let _ = conn.read_body_all(&head, 1 << 16).await?;
                Ok::<_, io::Error>(head)
            }
            .await;
            match result {
                Ok(head) => {
                    if head.close {
                        self.send_conn = None;
                    }
                    if head.status != 204 && head.status != 200 {
                        return Err(status_error(head.status, &path));
                    }
                    return Ok(());
                }
                Err(e) if attempt == 1 => return Err(e),
                Err(_) => self.send_conn = None,
            }
        }
        Ok(())
    }
}

fn status_error(status: u16, path: &str) -> io::Error {
    if status == 404 {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{path}: 404 (not available)"),
        )
    } else {
        io::Error::other(format!("{path}: unexpected status {status}"))
    }
}

/// Handle one SockJS frame: `o`, `h`, `a[...]`, `c[code,"reason"]`.
/// One Engine.IO/Socket.IO packet: `0{..}` open (answer with a namespace connect `40`),
/// `40{..}` connected, `2` ping (answer `3`), `42["m","<payload>"]` an event.
fn socketio_packet(packet: &[u8], f: &mut impl FnMut(&[u8]), out: &mut Vec<u8>, opened: &mut bool) {
    match packet {
        [b'2', ..] => wire::ws_encode(wire::OP_TEXT, b"3", out),
        [b'4', b'0', ..] => *opened = true,
        [b'4', b'2', rest @ ..] => {
            // `["m","...payload..."]`: the payload is what follows the first `","`.
            if let Some(at) = rest.windows(3).position(|w| w == b"\",\"")
                && let Some(body) = rest[at + 3..].strip_suffix(b"\"]")
            {
                f(body);
            }
        }
        [b'0', ..] => wire::ws_encode(wire::OP_TEXT, b"40", out),
        _ => {}
    }
}

fn sockjs_frame(
    frame: &[u8],
    f: &mut impl FnMut(&[u8]),
    closed: &mut Option<u16>,
    opened: &mut bool,
) {
    match frame.first() {
        Some(b'o') => *opened = true,
        Some(b'a') => decode_array(&frame[1..], f),
        Some(b'c') => {
            let code = frame
                .get(2..)
                .map(|r| {
                    r.iter()
                        .take_while(|b| b.is_ascii_digit())
                        .fold(0u16, |a, &d| {
                            a.wrapping_mul(10).wrapping_add((d - b'0') as u16)
                        })
                })
                .unwrap_or(1006);
            closed.get_or_insert(code);
        }
        _ => {}
    }
}

/// Decode a JSON array of strings; plain ASCII strings without escapes take a fast path.
fn decode_array(json: &[u8], f: &mut impl FnMut(&[u8])) {
    if !json.contains(&b'\\') && json.starts_with(b"[\"") && json.ends_with(b"\"]") {
        let inner = &json[2..json.len() - 2];
        let mut rest = inner;
        loop {
            match wire::find(rest, b"\",\"") {
                Some(i) => {
                    f(&rest[..i]);
                    rest = &rest[i + 3..];
                }
                None => {
                    f(rest);
                    return;
                }
            }
        }
    }
    if let Ok(list) = serde_json::from_slice::<Vec<String>>(json) {
        for m in list {
            f(m.as_bytes());
        }
    }
}

/// A JSON array of the messages as strings.
pub fn json_array(msgs: &[&[u8]]) -> Vec<u8> {
    let plain = msgs.iter().all(|m| {
        m.iter()
            .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    });
    if plain {
        let mut out = Vec::with_capacity(msgs.iter().map(|m| m.len() + 3).sum::<usize>() + 2);
        out.push(b'[');
        for (i, m) in msgs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(m);
            out.push(b'"');
        }
        out.push(b']');
        return out;
    }
    let strs: Vec<String> = msgs
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    serde_json::to_vec(&strs).unwrap_or_default()
}

/// Undo the EventSource escaping (%25, %0D, %0A, %00).
fn unescape_es(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len());
    let mut i = 0;
    while i < frame.len() {
        if frame[i] == b'%' {
            let hex = frame
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(frame[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_decode() {
        let mut got = Vec::new();
        decode_array(br#"["a","bc"]"#, &mut |m| got.push(m.to_vec()));
        decode_array(br#"["x\"y"]"#, &mut |m| got.push(m.to_vec()));
        assert_eq!(got, vec![b"a".to_vec(), b"bc".to_vec(), b"x\"y".to_vec()]);
        assert_eq!(json_array(&[b"a", b"b"]), br#"["a","b"]"#.to_vec());
        assert_eq!(unescape_es(b"a[\"100%25\"]"), b"a[\"100%\"]".to_vec());
    }
}
