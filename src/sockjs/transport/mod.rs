//! The transports: thin adapters between HTTP and the session.
//!
//! Every HTTP receiving transport (xhr, xhr_streaming, eventsource, htmlfile, jsonp) differs
//! only in its response headers, its prelude and how it wraps a frame, captured by
//! [`Framing`]. [`serve_receiver`] is the one receiver loop they share: attach to the
//! session, write `o` or queued frames, heartbeats and the close frame, count towards the
//! response limit, and detect client aborts. Each frame is its own HTTP chunk.

pub mod eventsource;
mod framing;
pub mod hixie76;
mod hixie76_codec;
pub mod htmlfile;
pub mod jsonp;
mod socket;
pub mod websocket;
pub mod xhr;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tokio::time::{Instant, Sleep};

use super::frame;
use super::http::{Body, HttpRequest, HttpResponse, WriteWatch, response, set_no_cache};
use super::session::{Attach, Session};
use super::{Client, Service};
use crate::session::{CloseCause, CloseInfo, TransportKind};

pub use framing::Framing;

/// How long a new receiver waits for an attached one to turn out aborted (§6.6).
const ABORT_GRACE: Duration = Duration::from_millis(100);

/// Attach a receiving request to session `sid` and stream its frames into `resp`'s body.
/// `resp` carries the transport's headers; its body is replaced by a [`ReceiverBody`].
pub async fn serve_receiver(
    svc: &Arc<Service>,
    req: &HttpRequest,
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
    let body = ReceiverBody {
        svc: svc.clone(),
        sid: sid.into(),
        attached: session.zip(outcome),
        step: Step::Prelude,
        framing,
        written: 0,
        last_write: Instant::now(),
        heartbeat: None,
        watch: req.extensions().get::<Arc<WriteWatch>>().cloned(),
    };
    match (
        req.version() == http::Version::HTTP_10,
        body.framing.is_polling(),
    ) {
        // HTTP/1.0 has no chunking: a poll's single frame goes out with a Content-Length,
        // so the connection can be kept alive (§9).
        (true, true) => {
            let frame = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            *resp.body_mut() = Body::full(frame);
        }
        // A streaming HTTP/1.0 response is delimited by closing the connection.
        (true, false) => {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            *resp.body_mut() = Body::Receiver(Box::new(body));
        }
        (false, _) => *resp.body_mut() = Body::Receiver(Box::new(body)),
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

/// A receiving request's response body: it *is* the receiver. Whoever writes the response
/// (the gateway's HTTP front, or hyper) polls it for the next chunk, and it takes that chunk
/// straight from the session: no task and no channel per receiver, which is most of what an
/// open stream would otherwise cost. Dropped before its end (the client went away, or the
/// writer gave up on a client that stopped reading), it ends the session.
pub struct ReceiverBody {
    /// The owning service (for the registry and options).
    svc: Arc<Service>,
    /// The session id, to remove the session on abort.
    sid: Box<str>,
    /// The session and how this receiver attached; None when it only answers 2010.
    attached: Option<(Arc<Session>, Attach)>,
    /// Where the response is.
    step: Step,
    /// How frames are wrapped.
    framing: Framing,
    /// Bytes of wrapped frames written, for the response limit.
    written: usize,
    /// When the last frame was written, for heartbeats.
    last_write: Instant,
    /// The heartbeat timer, created when the stream first goes idle.
    heartbeat: Option<Pin<Box<Sleep>>>,
    /// The connection's writer, which says whether it gave up on a stalled client.
    watch: Option<Arc<WriteWatch>>,
}

/// The steps of a receiving response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The transport's prelude (if any) is next.
    Prelude,
    /// The first frame is next: `o`, a closing session's backlog, or 2010.
    Start,
    /// Queued batches and heartbeats, until the limit or the close.
    Stream,
    /// The close frame is next.
    CloseFrame,
    /// The response ends at the next poll.
    Finish,
    /// The response ended and the receiver detached.
    Done,
}

impl ReceiverBody {
    /// The next chunk, or None when the response ends.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            match self.step {
                Step::Prelude => {
                    self.step = Step::Start;
                    if let Some(prelude) = self.framing.prelude() {
                        return Poll::Ready(Some(prelude));
                    }
                }
                Step::Start => {
                    if let Some(chunk) = self.start() {
                        return Poll::Ready(Some(chunk));
                    }
                }
                Step::Stream => match self.poll_stream(cx) {
                    Poll::Ready(Some(chunk)) => return Poll::Ready(Some(chunk)),
                    Poll::Ready(None) => continue,
                    Poll::Pending => return Poll::Pending,
                },
                Step::CloseFrame => {
                    self.step = Step::Finish;
                    if let Some((session, _)) = &self.attached {
                        session.mark_close_delivered();
                    }
                    let info = self.attached.as_ref().and_then(|(s, _)| s.closing());
                    let info = info.unwrap_or(CloseInfo {
                        code: 1000,
                        reason: "Normal closure".into(),
                        cause: CloseCause::Application,
                    });
                    return Poll::Ready(Some(
                        self.frame(&frame::close_frame(info.code, &info.reason)),
                    ));
                }
                Step::Finish => {
                    self.step = Step::Done;
                    self.stop(Ok(()));
                    return Poll::Ready(None);
                }
                Step::Done => return Poll::Ready(None),
            }
        }
    }

    /// The first frame, by how the receiver attached; None when the next step writes it.
    fn start(&mut self) -> Option<Bytes> {
        let polling = self.framing.is_polling();
        let Some((session, outcome)) = &self.attached else {
            self.step = Step::Finish;
            let busy = frame::close_frame(2010, "Another connection still open");
            return Some(self.frame(&busy));
        };
        let session = session.clone();
        match outcome {
            Attach::Opened(_) => {
                self.step = if polling { Step::Finish } else { Step::Stream };
                let open = self.frame(frame::OPEN);
                session.start_app();
                Some(open)
            }
            Attach::Closing(_) => match session.take_batch() {
                Some(batch) => {
                    self.step = if polling {
                        Step::Finish
                    } else {
                        Step::CloseFrame
                    };
                    Some(self.frame(&batch))
                }
                None => {
                    self.step = Step::CloseFrame;
                    None
                }
            },
            Attach::Attached(_) | Attach::Busy | Attach::Gone => {
                self.step = Step::Stream;
                None
            }
        }
    }

    /// A queued batch, if any, counted towards the response limit.
    fn poll_stream_now(&mut self, session: &Session) -> Option<Bytes> {
        let batch = session.take_batch()?;
        let chunk = self.frame(&batch);
        let limit = self.svc.config().response_limit;
        if self.framing.is_polling() || self.written >= limit {
            self.step = Step::Finish;
        }
        Some(chunk)
    }

    /// Queued batches and heartbeats; `Ready(None)` when the step changed.
    fn poll_stream(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let Some((session, _)) = &self.attached else {
            self.step = Step::Finish;
            return Poll::Ready(None);
        };
        let session = session.clone();
        loop {
            if let Some(chunk) = self.poll_stream_now(&session) {
                return Poll::Ready(Some(chunk));
            }
            if session.closing().is_some() {
                self.step = Step::CloseFrame;
                return Poll::Ready(None);
            }
            if session.poll_output(cx).is_ready() {
                continue;
            }
            if session.heartbeats_suppressed() {
                return Poll::Pending;
            }
            let due = self.last_write + self.svc.config().heartbeat_delay;
            if Instant::now() >= due {
                if self.framing.is_polling() {
                    self.step = Step::Finish;
                }
                return Poll::Ready(Some(self.frame(frame::HEARTBEAT)));
            }
            // One timer for the whole response, re-armed only when the heartbeat moves.
            let timer = self
                .heartbeat
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// Wrap one frame as one chunk and count it.
    fn frame(&mut self, f: &[u8]) -> Bytes {
        let chunk = self.framing.wrap(f);
        self.written += chunk.len();
        self.last_write = Instant::now();
        chunk
    }

    /// Detach after a normal end, or end the session after a failure.
    fn stop(&mut self, result: Result<(), Failure>) {
        let Some((session, outcome)) = self.attached.take() else {
            return;
        };
        let id = match outcome {
            Attach::Opened(id) | Attach::Attached(id) | Attach::Closing(id) => id,
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
            Err(Failure::Stalled) => session.stalled_close(),
        };
        self.svc.registry().remove(&self.sid, &session);
        session.finish(ended);
    }
}

impl Drop for ReceiverBody {
    fn drop(&mut self) {
        if self.step != Step::Done {
            let stalled = self.watch.as_ref().is_some_and(|w| w.stalled());
            self.stop(Err(if stalled {
                Failure::Stalled
            } else {
                Failure::Aborted
            }));
        }
    }
}

impl http_body::Body for ReceiverBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .poll_chunk(cx)
            .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.step == Step::Done
    }
}

/// Why a receiver stopped before its response ended normally.
enum Failure {
    /// The client went away.
    Aborted,
    /// A write stayed blocked past `send_time_limit`: the client is not reading.
    Stalled,
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
pub async fn read_body(req: HttpRequest, max: usize) -> Result<Bytes, BodyError> {
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
