//! The front of every HTTP connection: a small HTTP/1.1 reader and writer that serves the
//! plain requests itself and hands the connection to hyper at the first request it does not
//! serve.
//!
//! Why it exists: a streaming receiver (xhr-streaming, eventsource, htmlfile) or a long poll
//! holds its connection open for minutes, and a hyper connection keeps an 8 KiB read buffer
//! and an 8 KiB write buffer for its whole life. Served here, an open stream costs what the
//! session needs and little more: the request head is read into a buffer that is freed once
//! parsed, the response head is written once, and each frame goes out as one chunk with one
//! vectored write.
//!
//! What it serves: HTTP/1.1 requests without a body or with a `Content-Length` body of at
//! most [`MAX_BODY`] (no `Transfer-Encoding`), without `Expect` or `Upgrade`, with an
//! origin-form target, and not `HEAD` or `CONNECT`: everything sockjs-client sends to open,
//! poll and feed a session, so a browser connection that carried an `xhr_send` can still
//! carry the next stream cheaply. Anything else (large or chunked bodies, WebSocket upgrades,
//! HTTP/1.0, malformed heads) goes to hyper together with the bytes already read, and hyper
//! keeps the connection from then on, so every unusual case keeps hyper's behaviour.
//!
//! The limits are the listener's: the head must arrive within `header_read_timeout` (the
//! connection is closed otherwise, as hyper does) and fit in `max_header_bytes` (431); a body
//! within the handlers' 30 s body timeout (408). A write that stays blocked past the
//! connection's [`WriteWatch`] limit drops the connection ([`GuardedIo`], which hyper's
//! writes go through too). While a response streams, the connection is watched for EOF,
//! which is how a client abort reaches the session (the body is dropped); bytes a client
//! pipelines meanwhile are kept for the next request, and a client that pipelines more than
//! `max_header_bytes` is dropped.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::sockjs::http::{Body, HttpResponse, RequestBody, WriteWatch};
use crate::sockjs::transport::BODY_READ_TIMEOUT;

/// First allocation for a request head; it doubles up to `max_header_bytes`.
const HEAD_BUFFER: usize = 1024;
/// The most headers a request served here may carry. A head with more goes to hyper, whose
/// own limit and 431 answer then apply.
const MAX_HEADERS: usize = 64;
/// The write time limit of a connection until a service sets its own `send_time_limit`.
pub const DEFAULT_WRITE_LIMIT: Duration = Duration::from_secs(10);
/// Bytes read at a time while a response streams (EOF detection, pipelined requests).
const WATCH_READ: usize = 64;
/// The largest request body the front reads itself; a larger declared body goes to hyper,
/// where the handler answers 413 beyond the service's `max_inbound_bytes` before reading.
pub const MAX_BODY: usize = 64 * 1024;
/// Room added at a time while a body arrives.
const BODY_READ_STEP: usize = 8 * 1024;

/// The listener limits the front enforces on request heads.
#[derive(Debug, Clone, Copy)]
pub struct FrontLimits {
    /// How long a client may take to send a request head, counted from when the front
    /// starts waiting for it (so an idle keep-alive connection is closed after it, too).
    pub header_read_timeout: Duration,
    /// The largest request head accepted, in bytes.
    pub max_header_bytes: usize,
}

/// How the front finished with a connection.
pub enum Ended<S> {
    /// The connection is done: closed by either side, timed out, or answered with an error.
    Closed,
    /// hyper takes over: `buffered` holds the bytes already read (a request head at least),
    /// to be read again before `io`.
    Handoff {
        /// The connection.
        io: S,
        /// Bytes read but not consumed.
        buffered: Bytes,
    },
}

/// A connection as the gateway serves it, front and hyper alike: bytes the front read ahead
/// are replayed before anything else is read, and a write that stays blocked past the
/// [`WriteWatch`]'s limit fails with `TimedOut` (and marks the watch stalled), so a client
/// that stops reading cannot hold a connection, or the session streaming on it, forever.
pub struct GuardedIo<S> {
    /// The connection.
    inner: S,
    /// Bytes read ahead and not yet consumed.
    pre: Bytes,
    /// The write time limit, shared with the requests served on this connection.
    watch: Arc<WriteWatch>,
    /// The timer of the write that is blocked right now, if one is.
    blocked: Option<Pin<Box<Sleep>>>,
}

impl<S> GuardedIo<S> {
    /// `inner`, watched by `watch`.
    pub fn new(inner: S, watch: Arc<WriteWatch>) -> Self {
        GuardedIo {
            inner,
            pre: Bytes::new(),
            watch,
            blocked: None,
        }
    }

    /// The same connection with `pre` to be read before anything else.
    pub fn replaying(mut self, pre: Bytes) -> Self {
        self.pre = pre;
        self
    }

    /// The watch shared with the requests served on this connection.
    pub fn watch(&self) -> &Arc<WriteWatch> {
        &self.watch
    }

    /// Pass a write's result on; a write still blocked past the limit becomes `TimedOut`.
    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            // Dropping the timer deregisters it: a write that got through leaves nothing
            // behind to fire later.
            self.blocked = None;
            return result;
        }
        let limit = self.watch.limit();
        let timer = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            self.blocked = None;
            self.watch.mark_stalled();
            tracing::debug!("a write stayed blocked past its time limit; dropping the connection");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            if this.pre.is_empty() {
                this.pre = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.guard(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.guard(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.guard(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Serve requests from `io` until one needs hyper, the connection ends, or `shutdown` turns
/// true while the connection waits for a request.
pub async fn serve<S, H, F>(
    mut io: GuardedIo<S>,
    limits: FrontLimits,
    mut shutdown: watch::Receiver<bool>,
    mut handle: H,
) -> Ended<GuardedIo<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: FnMut(Request<RequestBody>) -> F,
    F: Future<Output = HttpResponse>,
{
    let mut buf = BytesMut::new();
    loop {
        let head_len = match read_head(&mut io, &mut buf, limits, &mut shutdown).await {
            HeadRead::Complete(len) => len,
            HeadRead::Closed => return Ended::Closed,
            HeadRead::TooLarge => {
                let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
                Box::pin(write_error(&mut io, status, "")).await;
                return Ended::Closed;
            }
        };
        let Some(mut parsed) = parse_servable(&buf[..head_len]) else {
            return Ended::Handoff {
                io,
                buffered: buf.freeze(),
            };
        };
        buf.advance(head_len);
        if parsed.body_len > 0 {
            if !read_body(&mut io, &mut buf, parsed.body_len).await {
                return Ended::Closed;
            }
            let body = buf.split_to(parsed.body_len).freeze();
            *parsed.request.body_mut() = RequestBody::Full(Some(body));
        }
        if buf.is_empty() {
            // Release the head buffer: a streaming response may last minutes.
            buf = BytesMut::new();
        }
        parsed.request.extensions_mut().insert(io.watch().clone());
        let resp = handle(parsed.request).await;
        // Shutting down: this is the connection's last response, and the client is told so.
        let last = parsed.close || *shutdown.borrow();
        let persist = write_response(
            &mut io,
            &mut buf,
            resp,
            last,
            &shutdown,
            limits.max_header_bytes,
        )
        .await;
        if persist != Persist::KeepAlive || *shutdown.borrow() {
            let _ = io.shutdown().await;
            return Ended::Closed;
        }
    }
}

/// What waiting for a request head produced.
enum HeadRead {
    /// `buf[..len]` is a complete head.
    Complete(usize),
    /// The connection closed or timed out, or the server is shutting down.
    Closed,
    /// The head grew past `max_header_bytes`.
    TooLarge,
}

/// Read until `buf` holds a complete request head (`\r\n\r\n`, or `\n\n` as httparse
/// accepts), within the header read timeout.
async fn read_head<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    limits: FrontLimits,
    shutdown: &mut watch::Receiver<bool>,
) -> HeadRead {
    let deadline = tokio::time::Instant::now() + limits.header_read_timeout;
    let mut scanned = 0;
    loop {
        if let Some(len) = head_end(buf, scanned) {
            return HeadRead::Complete(len);
        }
        scanned = buf.len().saturating_sub(3);
        if buf.len() >= limits.max_header_bytes {
            return HeadRead::TooLarge;
        }
        if buf.capacity() == buf.len() {
            // Start small, then double: most heads fit in the first allocation.
            let room = buf.capacity().max(HEAD_BUFFER);
            buf.reserve(room.min(limits.max_header_bytes - buf.len()));
        }
        // Never more than `max_header_bytes` in all, so the limit is exact.
        let allowed = limits.max_header_bytes - buf.len();
        let mut room = (&mut *buf).limit(allowed);
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline, io.read_buf(&mut room)) => read,
            _ = shutdown.changed() => return HeadRead::Closed,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return HeadRead::Closed,
            Ok(Ok(_)) => {}
        }
    }
}

/// The length of the head at the start of `buf`, if it is complete; `from` is where the
/// terminator may begin (bytes before it were scanned already).
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1..].starts_with(b"\n") {
                return Some(i + 2);
            }
            if buf[i + 1..].starts_with(b"\r\n") {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// A request the front serves, and whether the client asked to close after it.
struct Servable {
    /// The request, with an empty body (the front reads `body_len` bytes into it).
    request: Request<RequestBody>,
    /// `Connection: close` was sent.
    close: bool,
    /// The declared `Content-Length` (at most [`MAX_BODY`]).
    body_len: usize,
}

/// Parse a complete head; None when the request is not one the front serves (hyper answers
/// it, errors included).
fn parse_servable(head: &[u8]) -> Option<Servable> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        // httparse must agree on where the head ends, or framing could drift: hyper decides.
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => return None,
    }
    if req.version != Some(1) {
        return None;
    }
    let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
    if method == Method::HEAD || method == Method::CONNECT {
        return None;
    }
    let path = req.path?;
    if !path.starts_with('/') {
        return None;
    }
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .version(Version::HTTP_11);
    let mut close = false;
    let mut body_len = None;
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        if name == header::TRANSFER_ENCODING || name == header::EXPECT || name == header::UPGRADE {
            return None;
        }
        if name == header::CONTENT_LENGTH {
            // One plain decimal length, small enough to read here; anything else is hyper's.
            let digits = value.as_bytes().trim_ascii();
            if body_len.is_some() || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
            if len > MAX_BODY {
                return None;
            }
            body_len = Some(len);
        }
        if name == header::CONNECTION {
            if has_token(&value, "upgrade") {
                return None;
            }
            close |= has_token(&value, "close");
        }
        builder = builder.header(name, value);
    }
    let request = builder.body(RequestBody::Empty).ok()?;
    Some(Servable {
        request,
        close,
        body_len: body_len.unwrap_or(0),
    })
}

/// Read until `buf` holds a body of `len` bytes, within the body read timeout (a slow-body
/// guard, the same as the handlers'); false when the connection ended, or was answered with
/// 408 and closed.
async fn read_body<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    len: usize,
) -> bool {
    let deadline = tokio::time::Instant::now() + BODY_READ_TIMEOUT;
    while buf.len() < len {
        // Room as the bytes come, not the whole declared length up front: a client that
        // declares 64 KiB and sends nothing holds no 64 KiB for the body timeout.
        buf.reserve((len - buf.len()).min(BODY_READ_STEP));
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return false,
            Ok(Ok(_)) => {}
            Err(_) => {
                let status = StatusCode::REQUEST_TIMEOUT;
                Box::pin(write_error(io, status, "Request body too slow.\n")).await;
                return false;
            }
        }
    }
    true
}

/// What is wrong with a request's `Host`, if anything (RFC 9112 §3.2): an HTTP/1.1 request
/// must carry exactly one, and no request may carry several, an empty one, or one that is not
/// a `host[:port]`. Checked for the front's requests and hyper's alike, which answer 400.
pub fn host_problem<B>(req: &Request<B>) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if req.version() >= Version::HTTP_11 => {
            Some("an HTTP/1.1 request needs a Host header")
        }
        (None, _) => None,
        (Some(_), Some(_)) => Some("a request must not carry more than one Host header"),
        (Some(host), None) => {
            let host = host.as_bytes();
            let valid = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(b);
            if host.is_empty() {
                Some("the Host header is empty")
            } else if !host.iter().all(valid) {
                Some("the Host header is not a host[:port]")
            } else {
                None
            }
        }
    }
}

/// Whether the connection may carry another request after a response.
#[derive(Debug, PartialEq, Eq)]
enum Persist {
    KeepAlive,
    Close,
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body at all (204, 304).
    None,
    /// `Content-Length`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Write `resp` to `io`. While a streamed body waits for its next chunk, the connection is
/// read: EOF means the client went away (the body is dropped, the receiver learns of the
/// abort), and other bytes are pipelined requests, kept in `pending`.
async fn write_response<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    pending: &mut BytesMut,
    resp: HttpResponse,
    client_close: bool,
    shutdown: &watch::Receiver<bool>,
    max_pending: usize,
) -> Persist {
    let (parts, mut body) = resp.into_parts();
    let framing = match (&body, parts.status) {
        (_, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) => Framing::None,
        (Body::Full(bytes), _) => Framing::Length(bytes.as_ref().map_or(0, Bytes::len)),
        (Body::Receiver(_), _) => Framing::Chunked,
    };
    let server_close = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v, "close"));
    let head = encode_head(&parts, framing, client_close && !server_close);
    // The headers are written: a stream may last minutes, so they are not kept meanwhile.
    drop(parts);
    let persist = if client_close || server_close {
        Persist::Close
    } else {
        Persist::KeepAlive
    };
    let written = match framing {
        Framing::None => write_all(io, &mut [IoSlice::new(&head)]).await,
        Framing::Length(_) => {
            let data = match &mut body {
                Body::Full(bytes) => bytes.take().unwrap_or_default(),
                Body::Receiver(_) => Bytes::new(),
            };
            write_all(io, &mut [IoSlice::new(&head), IoSlice::new(&data)]).await
        }
        Framing::Chunked => {
            let announced = client_close || server_close;
            let head = Head {
                bytes: head,
                announced_close: announced,
            };
            stream_chunks(io, pending, head, &mut body, shutdown, max_pending).await
        }
    };
    if written { persist } else { Persist::Close }
}

/// Stream `body` as chunks; false when the connection must be dropped (client gone, a write
/// failed or stalled).
async fn stream_chunks<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    pending: &mut BytesMut,
    head: Head,
    body: &mut Body,
    shutdown: &watch::Receiver<bool>,
    max_pending: usize,
) -> bool {
    let mut head = Some(head);
    // A chunk found ready while checking whether the body had ended.
    let mut ahead: Option<Bytes> = None;
    loop {
        let next = match ahead.take() {
            Some(data) => Some(data),
            None => match next_chunk(body).now_or_never() {
                Some(next) => next,
                None => {
                    // Nothing ready: wait for a chunk while watching the connection. The head
                    // waits too and goes out with the first chunk, in the same write: every
                    // streaming transport has its prelude ready at once, and a long poll's
                    // head is of no use to its client before the frame (a heartbeat comes
                    // within `heartbeat_delay`), so this saves a write per poll.
                    let mut scratch = [0u8; WATCH_READ];
                    tokio::select! {
                        next = next_chunk(body) => next,
                        read = io.read(&mut scratch) => {
                            match read {
                                Ok(0) | Err(_) => return false,
                                Ok(n) => pending.extend_from_slice(&scratch[..n]),
                            }
                            // More pipelined bytes than a request head may have, while a
                            // response streams: not a client worth watching; drop it.
                            if pending.len() > max_pending {
                                return false;
                            }
                            continue;
                        }
                    }
                }
            },
        };
        let head_bytes = head.take().map_or_else(Vec::new, |h| h.finish(shutdown));
        let Some(data) = next else {
            let mut slices = [IoSlice::new(&head_bytes), IoSlice::new(b"0\r\n\r\n")];
            return write_all(io, &mut slices).await;
        };
        // A poll's single frame and the end of its body usually come together: one write.
        let ends_now = match next_chunk(body).now_or_never() {
            Some(Some(more)) => {
                ahead = Some(more);
                false
            }
            Some(None) => true,
            None => false,
        };
        let size = format!("{:x}\r\n", data.len());
        let end: &[u8] = if ends_now { b"\r\n0\r\n\r\n" } else { b"\r\n" };
        let mut slices = [
            IoSlice::new(&head_bytes),
            IoSlice::new(size.as_bytes()),
            IoSlice::new(&data),
            IoSlice::new(end),
        ];
        if !write_all(io, &mut slices).await {
            return false;
        }
        if ends_now {
            return true;
        }
    }
}

/// A streamed response's head, held until its first chunk is ready.
struct Head {
    /// The encoded head.
    bytes: Vec<u8>,
    /// Whether it already says `connection: close`.
    announced_close: bool,
}

impl Head {
    /// The bytes to send; if the server began shutting down while the head waited, it says
    /// `connection: close`, since this is the connection's last response.
    fn finish(mut self, shutdown: &watch::Receiver<bool>) -> Vec<u8> {
        if !self.announced_close && *shutdown.borrow() {
            let at = self.bytes.len().saturating_sub(2);
            self.bytes
                .splice(at..at, b"connection: close\r\n".iter().copied());
        }
        self.bytes
    }
}

/// The next data chunk of a body; None at its end.
async fn next_chunk(body: &mut Body) -> Option<Bytes> {
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) if data.is_empty() => continue,
                Ok(data) => return Some(data),
                Err(_) => continue,
            },
            Err(never) => match never {},
        }
    }
}

/// The response head as hyper would write it: status line, the handler's headers, the
/// length header, `connection: close` when the client asked for it, `date`.
fn encode_head(parts: &http::response::Parts, framing: Framing, add_close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + parts.headers.len() * 48);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or_default()
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        has_date |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::None => {}
        Framing::Length(len) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(len.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if add_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(http_date().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The current `Date` value, formatted once per second per thread.
fn http_date() -> String {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            *cache = (secs, httpdate::fmt_http_date(now));
        }
        cache.1.clone()
    })
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// A bodiless error answer that ends the connection. Callers box it: its drain buffer would
/// otherwise be part of every connection task, for an answer few connections ever need.
async fn write_error<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    status: StatusCode,
    text: &str,
) {
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    if !text.is_empty() {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=UTF-8"),
        );
    }
    let mut answer = encode_head(&parts, Framing::Length(text.len()), true);
    answer.extend_from_slice(text.as_bytes());
    // Written, shut down and drained briefly, so a request still arriving does not turn the
    // close into a reset that destroys the answer.
    crate::limits::refuse(io, &answer).await;
}

/// Write every slice with vectored writes, then flush (a no-op on plain TCP; over TLS it
/// sends what the TLS layer holds). The connection's [`GuardedIo`] bounds how long each may
/// block; false when the connection failed.
async fn write_all<S: AsyncWrite + Unpin>(io: &mut S, mut slices: &mut [IoSlice<'_>]) -> bool {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match io.write_vectored(slices).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
        }
    }
    io.flush().await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_accepts_crlf_and_bare_lf() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest", 0), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
    }

    #[test]
    fn only_plain_bodiless_requests_are_served() {
        let served = |head: &str| parse_servable(head.as_bytes()).is_some();
        assert!(served(
            "POST /echo/a/b/xhr_streaming HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
        assert!(served(
            "GET /echo/info HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(served("OPTIONS /echo/info HTTP/1.1\r\n\r\n"));
        assert!(served(
            "POST /echo/a/b/xhr_send HTTP/1.1\r\nContent-Length: 2\r\n\r\n"
        ));
        assert!(!served(&format!(
            "POST /echo/a/b/xhr_send HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        )));
        assert!(!served(
            "POST /x HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n"
        ));
        assert!(!served("POST /x HTTP/1.1\r\nContent-Length: +2\r\n\r\n"));
        assert!(!served("POST /x HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n"));
        assert!(!served(
            "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!served("GET /x HTTP/1.0\r\n\r\n"));
        assert!(!served("HEAD /x HTTP/1.1\r\n\r\n"));
        assert!(!served("GET http://a/x HTTP/1.1\r\n\r\n"));
        assert!(!served("GET /x HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"));
        assert!(!served(
            "GET /w HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(!served("GET /x HTTP/1.1\r\nBad Header: y\r\n\r\n"));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        assert!(!served(&format!("GET /x HTTP/1.1\r\n{many}\r\n")));
        let close = parse_servable(b"GET /x HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap();
        assert!(close.close);
    }

    #[test]
    fn one_valid_host_is_required() {
        let req = |version: Version, hosts: &[&str]| {
            let mut builder = Request::builder().uri("/x").version(version);
            for host in hosts {
                builder = builder.header(header::HOST, *host);
            }
            builder.body(()).unwrap()
        };
        for ok in [
            &["a"][..],
            &["127.0.0.1:8080"],
            &["[::1]:80"],
            &["a.example"],
        ] {
            assert_eq!(host_problem(&req(Version::HTTP_11, ok)), None, "{ok:?}");
        }
        assert_eq!(host_problem(&req(Version::HTTP_10, &[])), None);
        for bad in [
            &[][..],
            &["a", "b"],
            &["a", ""],
            &[""],
            &["a b"],
            &["a/b"],
            &["u@a"],
        ] {
            assert!(
                host_problem(&req(Version::HTTP_11, bad)).is_some(),
                "{bad:?}"
            );
        }
        assert!(host_problem(&req(Version::HTTP_10, &["a", "a"])).is_some());
    }

    #[test]
    fn heads_carry_length_date_and_close() {
        let mut parts = http::Response::new(()).into_parts().0;
        parts
            .headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let head = String::from_utf8(encode_head(&parts, Framing::Length(5), false)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"));
        assert!(head.contains("content-length: 5\r\n"));
        assert!(head.contains("\r\ndate: "));
        assert!(head.ends_with("\r\n\r\n"));
        parts.status = StatusCode::NO_CONTENT;
        let head = String::from_utf8(encode_head(&parts, Framing::None, true)).unwrap();
        assert!(head.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(!head.contains("content-length"));
        assert!(head.contains("connection: close\r\n"));
        let head = String::from_utf8(encode_head(&parts, Framing::Chunked, false)).unwrap();
        assert!(head.contains("transfer-encoding: chunked\r\n"));
    }
}
