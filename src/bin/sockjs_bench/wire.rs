//! Minimal client-side wire code: loopback endpoints, TCP connects bound to a chosen source
//! address, an HTTP/1.1 response reader (Content-Length, chunked, until-EOF) and RFC 6455
//! framing. Hand-written so the load generator spends as little CPU per message as it can
//! and never allocates per frame on the hot path.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long one TCP connect plus handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A loopback server address and the path below it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
    /// The service prefix (`http://`), or the whole WebSocket path (`ws://`).
    pub path: String,
    /// Whether the URL was `ws://...`: the path is used as-is for raw WebSocket.
    pub ws_verbatim: bool,
}

impl Endpoint {
    /// Parse `http://127.0.0.1:PORT/prefix` or `ws://127.0.0.1:PORT/path`. Only loopback
    /// addresses are accepted: this tool never sends traffic anywhere else.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (rest, ws) = if let Some(r) = url.strip_prefix("http://") {
            (r, false)
        } else if let Some(r) = url.strip_prefix("ws://") {
            (r, true)
        } else {
            return Err(format!("{url}: only http:// and ws:// URLs are supported"));
        };
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let resolved = hostport.replacen("localhost", "127.0.0.1", 1);
        let addr: SocketAddr = resolved
            .parse()
            .map_err(|e| format!("{url}: host must be IP:PORT ({e})"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("{url}: only loopback targets are allowed"));
        }
        let path = if ws {
            if path.is_empty() { "/" } else { path }.to_string()
        } else {
            path.trim_end_matches('/').to_string()
        };
        Ok(Endpoint {
            addr,
            host: hostport.to_string(),
            path,
            ws_verbatim: ws,
        })
    }
}

/// Receive-side socket settings of a client that is meant to stall (slow-consumer runs).
#[derive(Clone, Copy, Debug)]
pub struct SmallRecv {
    /// `SO_RCVBUF` (the kernel doubles it and applies its minimum).
    pub rcvbuf: u32,
    /// `TCP_MAXSEG`, announced to the server in the SYN.
    pub mss: u32,
}

/// A TCP connection with its read buffer.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

impl Conn {
    /// Connect to `ep` from `src` (if given), with `TCP_NODELAY`.
    pub async fn open(ep: &Endpoint, src: Option<IpAddr>) -> io::Result<Self> {
        Self::open_with(ep, src, None).await
    }

    /// [`Conn::open`], with a small receive side when `small` is given (set before the
    /// connect), so a client that stops reading blocks the server's writes quickly.
    pub async fn open_with(
        ep: &Endpoint,
        src: Option<IpAddr>,
        small: Option<SmallRecv>,
    ) -> io::Result<Self> {
        let sock = TcpSocket::new_v4()?;
        if let Some(small) = small {
            sock.set_recv_buffer_size(small.rcvbuf)?;
            // The MSS announced in the SYN. On loopback (MSS ~64 KiB) the server's send
            // buffer autotunes to tcp_wmem's maximum (4 MiB) from the first segments, which
            // would hold minutes of a subscriber's traffic before a write blocks; with a
            // small MSS it stays at tens of KiB, as on a slow real link.
            socket2::SockRef::from(&sock).set_tcp_mss(small.mss)?;
        }
        if let Some(ip) = src {
            // Ports in TIME_WAIT from an earlier run may be reused.
            sock.set_reuseaddr(true)?;
            sock.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(ep.addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(4096),
        })
    }

    /// Read more bytes into the buffer (cancel-safe); 0 means EOF.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(8192);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data).await
    }

    /// Read a response head.
    pub async fn read_head(&mut self) -> io::Result<Head> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                let head = parse_head(&self.buf[..pos])?;
                self.buf.advance(pos + 4);
                return Ok(head);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("response head too large"));
            }
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the response head",
                ));
            }
        }
    }

    /// Append decoded body bytes to `out`, waiting for at least one byte or the end.
    /// Returns whether the body is complete.
    pub async fn read_body_some(&mut self, body: &mut Body, out: &mut Vec<u8>) -> io::Result<bool> {
        let start = out.len();
        loop {
            let done = body.decode(&mut self.buf, out)?;
            if done || out.len() > start {
                return Ok(done);
            }
            if self.fill().await? == 0 {
                if matches!(body.kind, BodyKind::Eof) {
                    body.done = true;
                    return Ok(true);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a response body",
                ));
            }
        }
    }

    /// Read a whole body (small responses only).
    pub async fn read_body_all(&mut self, head: &Head, limit: usize) -> io::Result<Vec<u8>> {
        let mut body = Body::new(head.body);
        let mut out = Vec::new();
        while !self.read_body_some(&mut body, &mut out).await? {
            if out.len() > limit {
                return Err(invalid("response body too large"));
            }
        }
        Ok(out)
    }
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(usize),
    Chunked,
    Eof,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub body: BodyKind,
    /// The server will close the connection after this response.
    pub close: bool,
}

fn parse_head(raw: &[u8]) -> io::Result<Head> {
    let text = std::str::from_utf8(raw).map_err(|_| invalid("non-UTF-8 response head"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
    }
    let body = if status == 101 || status == 204 || status == 304 || (100..200).contains(&status) {
        BodyKind::None
    } else if chunked {
        BodyKind::Chunked
    } else if let Some(n) = length {
        BodyKind::Length(n)
    } else {
        close = true;
        BodyKind::Eof
    };
    Ok(Head {
        status,
        body,
        close,
    })
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    Size,
    Data,
    DataEnd,
    Trailer,
}

/// An incremental response body decoder.
#[derive(Debug)]
pub struct Body {
    kind: BodyKind,
    remaining: usize,
    state: Chunk,
    done: bool,
}

impl Body {
    pub fn new(kind: BodyKind) -> Self {
        let (remaining, done) = match kind {
            BodyKind::None => (0, true),
            BodyKind::Length(n) => (n, n == 0),
            _ => (0, false),
        };
        Body {
            kind,
            remaining,
            state: Chunk::Size,
            done,
        }
    }

    /// Move decoded bytes from `buf` to `out`; returns whether the body is complete.
    pub fn decode(&mut self, buf: &mut BytesMut, out: &mut Vec<u8>) -> io::Result<bool> {
        loop {
            if self.done {
                return Ok(true);
            }
            match self.kind {
                BodyKind::None => self.done = true,
                BodyKind::Eof => {
                    out.extend_from_slice(buf);
                    buf.clear();
                    return Ok(false);
                }
                BodyKind::Length(_) => {
                    let n = self.remaining.min(buf.len());
                    out.extend_from_slice(&buf[..n]);
                    buf.advance(n);
                    self.remaining -= n;
                    if self.remaining == 0 {
                        self.done = true;
                    } else {
                        return Ok(false);
                    }
                }
                BodyKind::Chunked => match self.state {
                    Chunk::Size => {
                        let Some(pos) = find(buf, b"\r\n") else {
                            return Ok(false);
                        };
                        let line = &buf[..pos];
                        let hex = line.split(|&b| b == b';').next().unwrap_or_default();
                        let hex = std::str::from_utf8(hex).map_err(|_| invalid("chunk size"))?;
                        let size = usize::from_str_radix(hex.trim(), 16)
                            .map_err(|_| invalid("bad chunk size"))?;
                        buf.advance(pos + 2);
                        if size == 0 {
                            self.state = Chunk::Trailer;
                        } else {
                            self.remaining = size;
                            self.state = Chunk::Data;
                        }
                    }
                    Chunk::Data => {
                        let n = self.remaining.min(buf.len());
                        out.extend_from_slice(&buf[..n]);
                        buf.advance(n);
                        self.remaining -= n;
                        if self.remaining == 0 {
                            self.state = Chunk::DataEnd;
                        } else {
                            return Ok(false);
                        }
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return Ok(false);
                        }
                        buf.advance(2);
                        self.state = Chunk::Size;
                    }
                    Chunk::Trailer => {
                        let Some(pos) = find(buf, b"\r\n") else {
                            return Ok(false);
                        };
                        buf.advance(pos + 2);
                        if pos == 0 {
                            self.done = true;
                        }
                    }
                },
            }
        }
    }
}

/// An HTTP/1.1 request.
pub fn request(
    method: &str,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (k, v) in extra {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if method == "POST" || !body.is_empty() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The RFC 6455 upgrade request.
pub fn ws_handshake(host: &str, path: &str, subprotocol: Option<&str>) -> Vec<u8> {
    let mut extra = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    if let Some(p) = subprotocol {
        extra.push(("Sec-WebSocket-Protocol", p));
    }
    request("GET", host, path, &extra, b"")
}

pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

/// Append one masked client frame. The masking key is all zeros, which is valid RFC 6455
/// (the mask bit is set, the XOR is the identity) and costs nothing per byte.
pub fn ws_encode(op: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | op);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

/// Reassembles server frames into messages.
#[derive(Default)]
pub struct WsParser {
    frag: Vec<u8>,
    frag_op: u8,
}

impl WsParser {
    /// Consume every complete frame in `buf`, calling `f(opcode, payload)` for each complete
    /// data message and each control frame.
    pub fn parse(&mut self, buf: &mut BytesMut, mut f: impl FnMut(u8, &[u8])) -> io::Result<()> {
        loop {
            if buf.len() < 2 {
                return Ok(());
            }
            let b0 = buf[0];
            let b1 = buf[1];
            let fin = b0 & 0x80 != 0;
            let op = b0 & 0x0f;
            let masked = b1 & 0x80 != 0;
            let mut len = (b1 & 0x7f) as usize;
            let mut hl = 2;
            if len == 126 {
                if buf.len() < 4 {
                    return Ok(());
                }
                len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
                hl = 4;
            } else if len == 127 {
                if buf.len() < 10 {
                    return Ok(());
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                len = u64::from_be_bytes(b) as usize;
                if len > 64 << 20 {
                    return Err(invalid("websocket frame too large"));
                }
                hl = 10;
            }
            let key_at = hl;
            if masked {
                hl += 4;
            }
            let total = hl + len;
            if buf.len() < total {
                buf.reserve(total - buf.len());
                return Ok(());
            }
            if masked {
                let key = [
                    buf[key_at],
                    buf[key_at + 1],
                    buf[key_at + 2],
                    buf[key_at + 3],
                ];
                for (i, b) in buf[hl..total].iter_mut().enumerate() {
                    *b ^= key[i % 4];
                }
            }
            let payload = &buf[hl..total];
            if op >= 8 {
                f(op, payload);
            } else if op == 0 {
                self.frag.extend_from_slice(payload);
                if fin {
                    f(self.frag_op, &self.frag);
                    self.frag.clear();
                }
            } else if !fin {
                self.frag_op = op;
                self.frag.clear();
                self.frag.extend_from_slice(payload);
            } else {
                f(op, payload);
            }
            buf.advance(total);
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}
