//! The transports: thin adapters between HTTP and the session.
//!
//! Every HTTP receiving transport (xhr, xhr_streaming, eventsource, htmlfile, jsonp) differs
//! only in its response headers, its prelude and how it wraps a frame, captured by
//! [`Framing`]. [`serve_receiver`] is the one receiver loop they share: attach to the
//! session, write `o` or queued frames, heartbeats and the close frame, count towards the
//! response limit, and detect client aborts. Each frame is its own HTTP chunk.

pub mod eventsource;
pub mod hixie76;
pub mod htmlfile;
pub mod jsonp;
pub mod websocket;
pub mod xhr;

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::frame;
use super::http::{Body, HttpResponse, response, set_no_cache};
use super::session::{Attach, Session};
use super::{Client, Service};
use crate::session::{CloseCause, CloseInfo, TransportKind};

/// How long a new receiver waits for an attached one to turn out aborted (§6.6).
const ABORT_GRACE: Duration = Duration::from_millis(100);
/// Frames a streaming response may hold in flight before the receiver waits for the client.
const CHUNKS_IN_FLIGHT: usize = 4;

/// How a receiving transport wraps frames.
pub enum Framing {
    XhrPolling,
    XhrStreaming,
    EventSource,
    /// htmlfile with its (validated) callback.
    HtmlFile(String),
    /// JSONP polling with its (validated) callback.
    Jsonp(String),
}

impl Framing {
    /// The transport kind, for the session's info.
    pub fn kind(&self) -> TransportKind {
        match self {
            Framing::XhrPolling => TransportKind::XhrPolling,
            Framing::XhrStreaming => TransportKind::XhrStreaming,
            Framing::EventSource => TransportKind::EventSource,
            Framing::HtmlFile(_) => TransportKind::HtmlFile,
            Framing::Jsonp(_) => TransportKind::JsonpPolling,
        }
    }

    /// Polling transports end after one frame.
    fn is_polling(&self) -> bool {
        matches!(self, Framing::XhrPolling | Framing::Jsonp(_))
    }

    /// The first chunk of a streaming response, not counted towards the response limit.
    fn prelude(&self) -> Option<Bytes> {
        match self {
            Framing::XhrStreaming => {
                let mut p = BytesMut::with_capacity(2049);
                p.put_bytes(b'h', 2048);
                p.put_u8(b'\n');
                Some(p.freeze())
            }
            Framing::EventSource => Some(Bytes::from_static(b"\r\n")),
            Framing::HtmlFile(callback) => Some(htmlfile::prelude(callback)),
            Framing::XhrPolling | Framing::Jsonp(_) => None,
        }
    }

    /// One frame as the bytes of one chunk.
    fn wrap(&self, f: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(f.len() + 32);
        match self {
            Framing::XhrPolling | Framing::XhrStreaming => {
                out.extend_from_slice(f);
                out.push(b'\n');
            }
            Framing::EventSource => {
                out.extend_from_slice(b"data: ");
                eventsource::escape_into(&mut out, f);
                out.extend_from_slice(b"\r\n\r\n");
            }
            Framing::HtmlFile(_) => {
                out.extend_from_slice(b"<script>\np(");
                frame::quote_into(&mut out, &String::from_utf8_lossy(f), true);
                out.extend_from_slice(b");\n</script>\r\n");
            }
            Framing::Jsonp(callback) => {
                out.extend_from_slice(b"/**/");
                out.extend_from_slice(callback.as_bytes());
                out.push(b'(');
                frame::quote_into(&mut out, &String::from_utf8_lossy(f), false);
                out.extend_from_slice(b");\r\n");
            }
        }
        Bytes::from(out)
    }
}

/// Attach a receiving request to session `sid` and stream its frames into `resp`'s body.
/// `resp` carries the transport's headers; its body is replaced.
pub async fn serve_receiver(
    svc: &Arc<Service>,
    req: &Request<Incoming>,
    sid: &str,
    client: &Client,
    framing: Framing,
    mut resp: HttpResponse,
) -> HttpResponse {
    let url = req.uri().to_string();
    let (session, outcome) =
        match attach(svc, sid, req.headers(), &url, client, framing.kind()).await {
            Ok(attached) => attached,
            Err(early) => return early,
        };
    let (tx, mut rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let http10 = req.version() == http::Version::HTTP_10;
    let polling = framing.is_polling();
    let receiver = Receiver {
        svc: svc.clone(),
        sid: sid.to_string(),
        session,
        framing,
        tx,
        written: 0,
        last_write: Instant::now(),
    };
    tokio::spawn(receiver.run(outcome));
    match (http10, polling) {
        // HTTP/1.0 has no chunking: a poll's single frame goes out with a Content-Length,
        // so the connection can be kept alive (§9).
        (true, true) => {
            let frame = rx.recv().await.unwrap_or_default();
            *resp.body_mut() = Body::full(frame);
        }
        // A streaming HTTP/1.0 response is delimited by closing the connection.
        (true, false) => {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            *resp.body_mut() = Body::Stream(rx);
        }
        (false, _) => *resp.body_mut() = Body::Stream(rx),
    }
    resp
}

/// Find or create the session and attach, resolving the abort race of §6.6.
async fn attach(
    svc: &Arc<Service>,
    sid: &str,
    headers: &HeaderMap,
    url: &str,
    client: &Client,
    kind: TransportKind,
) -> Result<(Option<Arc<Session>>, Option<Attach>), HttpResponse> {
    let deadline = Instant::now() + ABORT_GRACE;
    for _ in 0..64 {
        let session = svc.receiver_session(sid, kind, headers, url.to_string(), client)?;
        match session.attach_receiver() {
            Attach::Busy if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Attach::Busy => return Ok((None, None)),
            Attach::Gone => continue,
            outcome => return Ok((Some(session), Some(outcome))),
        }
    }
    Ok((None, None))
}

/// One receiving request's writer.
struct Receiver {
    /// The owning service (for the registry and options).
    svc: Arc<Service>,
    /// The session id, to remove the session on abort.
    sid: String,
    /// The session; None when this request only answers 2010.
    session: Option<Arc<Session>>,
    /// How frames are wrapped.
    framing: Framing,
    /// The response body; closed by hyper when the client goes away.
    tx: mpsc::Sender<Bytes>,
    /// Bytes of wrapped frames written, for the response limit.
    written: usize,
    /// When the last frame was written, for heartbeats.
    last_write: Instant,
}

/// Why a receiver stopped before its response ended normally.
enum Failure {
    /// The client went away.
    Aborted,
    /// A write stayed blocked past `send_time_limit`: the client is not reading.
    Stalled,
}

/// How a receiver's response ended: `Ok` when it ended normally (poll answered, limit
/// reached, close frame sent).
type Outcome = Result<(), Failure>;

impl Receiver {
    async fn run(mut self, outcome: Option<Attach>) {
        let result = match self.framing.prelude() {
            Some(prelude) => self.send_chunk(prelude).await,
            None => Ok(()),
        };
        let result = match (result, &self.session.clone(), &outcome) {
            (Err(e), _, _) => Err(e),
            (Ok(()), Some(session), Some(outcome)) => self.serve(session, outcome).await,
            (Ok(()), _, _) => {
                let busy = frame::close_frame(2010, "Another connection still open");
                self.write(&busy).await
            }
        };
        self.stop(result, &outcome);
    }

    async fn serve(&mut self, session: &Arc<Session>, outcome: &Attach) -> Outcome {
        match outcome {
            Attach::Opened(_) => {
                self.write(frame::OPEN).await?;
                session.start_app();
                if self.framing.is_polling() {
                    return Ok(());
                }
            }
            Attach::Closing(_) => {
                if let Some(batch) = session.take_batch() {
                    self.write(&batch).await?;
                    if self.framing.is_polling() {
                        return Ok(());
                    }
                }
                return self.write_close(session).await;
            }
            _ => {}
        }
        self.stream(session).await
    }

    /// Write queued batches, heartbeats and finally the close frame until the response ends.
    async fn stream(&mut self, session: &Arc<Session>) -> Outcome {
        let heartbeat = self.svc.config().heartbeat_delay;
        let limit = self.svc.config().response_limit;
        // One timer for the whole response, re-armed only when it fires.
        let timer = sleep_until(self.last_write + heartbeat);
        tokio::pin!(timer);
        loop {
            if let Some(batch) = session.take_batch() {
                self.write(&batch).await?;
                if self.framing.is_polling() || self.written >= limit {
                    return Ok(());
                }
                continue;
            }
            if session.closing().is_some() {
                return self.write_close(session).await;
            }
            let beat = !session.heartbeats_suppressed();
            tokio::select! {
                _ = session.wait_for_output() => {}
                _ = &mut timer, if beat => {
                    let due = self.last_write + heartbeat;
                    if Instant::now() < due {
                        timer.as_mut().reset(due);
                        continue;
                    }
                    self.write(frame::HEARTBEAT).await?;
                    timer.as_mut().reset(self.last_write + heartbeat);
                    if self.framing.is_polling() {
                        return Ok(());
                    }
                }
                _ = self.tx.closed() => return Err(Failure::Aborted),
            }
        }
    }

    async fn write_close(&mut self, session: &Arc<Session>) -> Outcome {
        let info = session.closing().unwrap_or(CloseInfo {
            code: 1000,
            reason: "Normal closure".into(),
            cause: CloseCause::Application,
        });
        self.write(&frame::close_frame(info.code, &info.reason))
            .await
    }

    /// Write one frame as one chunk and count it.
    async fn write(&mut self, f: &[u8]) -> Outcome {
        let chunk = self.framing.wrap(f);
        self.written += chunk.len();
        self.last_write = Instant::now();
        self.send_chunk(chunk).await
    }

    /// Hand one chunk to hyper, waiting at most `send_time_limit` for room.
    async fn send_chunk(&mut self, chunk: Bytes) -> Outcome {
        let limit = self.svc.config().send_time_limit;
        match websocket::within(limit, self.tx.send(chunk)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Failure::Aborted),
            Err(_) => Err(Failure::Stalled),
        }
    }

    fn stop(&self, result: Outcome, outcome: &Option<Attach>) {
        let (Some(session), Some(outcome)) = (&self.session, outcome) else {
            return;
        };
        let id = match outcome {
            Attach::Opened(id) | Attach::Attached(id) | Attach::Closing(id) => *id,
            Attach::Busy | Attach::Gone => return,
        };
        let ended = match result {
            Ok(()) => return session.detach_receiver(id),
            Err(Failure::Aborted) => {
                tracing::debug!(
                    session = session.info().log_id,
                    "receiver aborted by client"
                );
                CloseInfo {
                    code: 1002,
                    reason: "Connection interrupted".into(),
                    cause: CloseCause::Interrupted,
                }
            }
            Err(Failure::Stalled) => {
                tracing::warn!(
                    session = session.info().log_id,
                    "client stopped reading; send time limit exceeded"
                );
                CloseInfo {
                    code: 4500,
                    reason: "Send limit exceeded".into(),
                    cause: CloseCause::SendLimit,
                }
            }
        };
        self.svc.registry().remove(&self.sid, session);
        session.finish(ended);
    }
}

/// Why a request body could not be read.
pub enum BodyError {
    /// Larger than `max_inbound_bytes`.
    TooLarge,
    /// The connection failed while reading.
    Io,
    /// The body did not arrive within [`BODY_READ_TIMEOUT`] (a slow-body attack).
    TimedOut,
}

/// How long a request body may take to arrive; the head has its own timeout in hyper.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Read a request body of at most `max` bytes; a declared length over `max` is refused
/// before anything is read.
pub async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, BodyError> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let reading = Limited::new(req.into_body(), max).collect();
    let Ok(read) = tokio::time::timeout(BODY_READ_TIMEOUT, reading).await else {
        return Err(BodyError::TimedOut);
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(BodyError::TooLarge)
        }
        Err(_) => Err(BodyError::Io),
    }
}

/// The answer to a body that could not be read.
pub fn body_error_response(e: BodyError) -> HttpResponse {
    let (status, text) = match e {
        BodyError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "Payload too large.\n"),
        BodyError::Io => (StatusCode::BAD_REQUEST, "Broken request body.\n"),
        BodyError::TimedOut => (StatusCode::REQUEST_TIMEOUT, "Request body too slow.\n"),
    };
    let mut resp = response(status, super::http::TEXT_PLAIN, text);
    set_no_cache(resp.headers_mut());
    resp
}

/// A 200 response with the given content type and an empty (to be replaced) body.
pub fn stream_response(content_type: &'static str) -> HttpResponse {
    let mut resp = Response::new(Body::empty());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    set_no_cache(resp.headers_mut());
    resp
}

/// Decode a send body and hand its messages to session `sid` (xhr_send, jsonp_send).
/// `Err` is the 500 or 404 answer (§5.2); headers such as CORS are added by the caller.
pub async fn deliver_send_body(
    svc: &Service,
    sid: &str,
    client: &Client,
    body: &[u8],
) -> Result<(), HttpResponse> {
    let messages = frame::decode_send_body(body).map_err(|e| match e {
        frame::DecodeError::TooMany => {
            let mut resp = response(
                StatusCode::PAYLOAD_TOO_LARGE,
                super::http::TEXT_PLAIN,
                e.to_string(),
            );
            set_no_cache(resp.headers_mut());
            resp
        }
        _ => super::http::server_error(&e.to_string()),
    })?;
    let Some(session) = svc.existing_session(sid, client) else {
        let mut resp = super::http::not_found();
        set_no_cache(resp.headers_mut());
        return Err(resp);
    };
    for text in messages {
        session.deliver(crate::session::Inbound::Text(text)).await;
    }
    session.let_application_catch_up().await;
    Ok(())
}
