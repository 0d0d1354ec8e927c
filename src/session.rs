//! The seam between carriers and applications.
//!
//! Every carrier (the SockJS transports, raw WebSocket, STOMP over TCP) produces a
//! [`SessionHandle`]; every application (echo, close, the STOMP core, ...) consumes one. An
//! application never learns which transport carries it: it sees a stream of inbound messages,
//! a bounded sink for outbound ones, and a single close event.
//!
//! Outbound messages are [`OutMessage`]s: cheap to clone, so a fan-out builds one and hands
//! the same bytes to every subscriber. A carrier that must re-encode a message (SockJS quotes
//! it as a JSON string) caches that encoding inside the message, so it is computed once per
//! message, not once per receiving session. A message may also be marked droppable: carriers
//! cannot parse what they carry, so the application says which messages its client can afford
//! to miss when a full queue must make room (`overflow_strategy = "drop"`).

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;

/// How many inbound messages may wait for the application before carriers are paused.
pub const INBOUND_CAPACITY: usize = 256;

/// Which carrier a session arrived on; reported in events and stats, never used for logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// SockJS-framed RFC 6455 WebSocket (`/S/I/websocket`).
    Websocket,
    /// SockJS-framed hixie-76 WebSocket (`/S/I/websocket` with the old handshake).
    WebsocketHixie76,
    /// Unframed WebSocket (`/websocket`).
    RawWebsocket,
    XhrPolling,
    XhrStreaming,
    EventSource,
    HtmlFile,
    JsonpPolling,
    /// STOMP over a plain TCP socket.
    Tcp,
}

impl TransportKind {
    /// The name used in logs, events and stats.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Websocket => "websocket",
            TransportKind::WebsocketHixie76 => "websocket-hixie76",
            TransportKind::RawWebsocket => "websocket-raw",
            TransportKind::XhrPolling => "xhr-polling",
            TransportKind::XhrStreaming => "xhr-streaming",
            TransportKind::EventSource => "eventsource",
            TransportKind::HtmlFile => "htmlfile",
            TransportKind::JsonpPolling => "jsonp-polling",
            TransportKind::Tcp => "tcp",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the carrier knew about the client when the session opened.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// A process-unique id for logs; not the SockJS session id, which is a bearer secret.
    pub log_id: u64,
    /// The carrier that opened the session.
    pub transport: TransportKind,
    /// The peer address of the connection that opened the session.
    pub remote_addr: SocketAddr,
    /// Selected request headers of the opening request (lower-case names), cookies included.
    pub headers: Vec<(String, String)>,
    /// Path and query of the opening request, the `[auth] query_param` token redacted.
    pub url: String,
    /// The principal an HTTP-level authenticator established, if any.
    pub principal: Option<Arc<Principal>>,
    /// The WebSocket subprotocol agreed in the handshake, if any.
    pub subprotocol: Option<String>,
}

impl SessionInfo {
    /// The first value of a captured request header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An authenticated user, as a token verifier established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user name (the configured claim, `sub` by default); user destinations key on it.
    pub name: String,
    /// Role names, for authorization rules.
    pub roles: Vec<String>,
    /// When the credential expires; sessions must end then.
    pub expires_at: Option<std::time::SystemTime>,
}

/// Request headers worth handing to applications (spec sockjs §6.9).
pub const CAPTURED_HEADERS: &[&str] = &[
    "host",
    "user-agent",
    "referer",
    "accept-language",
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
    "via",
    "cookie",
    "origin",
    "authorization",
];

/// One inbound application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A text message (every SockJS transport, WebSocket text frames).
    Text(String),
    /// A binary message (raw WebSocket binary frames, TCP reads).
    Binary(Bytes),
}

/// Why a session ended; every session reports exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// The client closed the connection or sent a close.
    Client,
    /// No receiver came back within the disconnect delay, or a ping went unanswered.
    Timeout,
    /// A receiving request was aborted by the client.
    Interrupted,
    /// The client broke the framing protocol.
    Protocol,
    /// The application called close.
    Application,
    /// The outbound queue overflowed.
    SendLimit,
    /// The server is shutting down.
    Shutdown,
}

/// The close code every session gets when the server shuts down (RFC 6455 "going away").
pub const GOING_AWAY_CODE: u16 = 1001;
/// The close reason that goes with [`GOING_AWAY_CODE`].
pub const GOING_AWAY: &str = "Going away";

impl CloseInfo {
    /// The close of a session the server is shutting down: 1001 "Going away".
    pub fn going_away() -> CloseInfo {
        CloseInfo {
            code: GOING_AWAY_CODE,
            reason: GOING_AWAY.into(),
            cause: CloseCause::Shutdown,
        }
    }
}

/// The close event an application receives once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The close code (SockJS `c` frame or WebSocket close code).
    pub code: u16,
    /// The human-readable reason.
    pub reason: String,
    /// What ended the session.
    pub cause: CloseCause,
}

/// What [`SessionHandle::recv`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    Message(Inbound),
    Closed(CloseInfo),
}

/// An outbound message, shared by every session it is sent to.
#[derive(Clone)]
pub struct OutMessage {
    inner: Arc<OutInner>,
}

#[derive(Clone)]
struct OutInner {
    /// The payload bytes (UTF-8 for text messages); with a shared tail, the part before it.
    payload: Bytes,
    /// The rest of the payload, shared with other messages (a broker's encoded MESSAGE tail).
    tail: Option<Arc<SharedTail>>,
    /// The whole payload, joined on first use by a carrier that needs one buffer.
    joined: OnceLock<Bytes>,
    /// Whether the payload is text; raw WebSocket sends binary payloads as binary frames.
    is_text: bool,
    /// A carrier's re-encoding of the payload, computed once on first use.
    encoded: OnceLock<Bytes>,
    /// Who is told when a carrier discards this message on overflow; None: never discarded.
    on_drop: Option<Arc<dyn DropObserver>>,
}

/// The end of a payload that many messages share: a broker's MESSAGE tail (user headers and
/// body), which follows a per-delivery head. Carriers write it without copying it per message
/// where they can (vectored writes), and SockJS escapes it once for every message carrying it.
pub struct SharedTail {
    /// The bytes.
    bytes: Bytes,
    /// Whether they are UTF-8 (checked once).
    is_text: bool,
    /// The SockJS JSON escaping of the bytes (no quotes), computed on first use.
    escaped: OnceLock<Bytes>,
}

impl SharedTail {
    /// A shared tail of `bytes`.
    pub fn new(bytes: Bytes) -> Arc<SharedTail> {
        Arc::new(SharedTail {
            is_text: std::str::from_utf8(&bytes).is_ok(),
            bytes,
            escaped: OnceLock::new(),
        })
    }

    /// The bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Whether the bytes are UTF-8.
    pub fn is_text(&self) -> bool {
        self.is_text
    }
}

impl fmt::Debug for SharedTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTail")
            .field("len", &self.bytes.len())
            .field("is_text", &self.is_text)
            .finish()
    }
}

/// Writes the JSON escaping of a string (without quotes) to a buffer.
pub type Escape = fn(&str, &mut Vec<u8>);

/// Told when a carrier discards a droppable message unsent to make room for a newer one, so
/// the application can count what its client missed.
pub trait DropObserver: Send + Sync + 'static {
    /// One message was discarded.
    fn message_dropped(&self);
}

impl OutMessage {
    /// A text message.
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(Bytes::from(text.into()), true)
    }

    /// A text message from bytes the caller guarantees to be UTF-8.
    pub fn text_bytes(text: Bytes) -> Option<Self> {
        std::str::from_utf8(&text).ok()?;
        Some(Self::new(text, true))
    }

    /// A binary message; carriers that only speak text send it as lossy UTF-8.
    pub fn binary(payload: Bytes) -> Self {
        Self::new(payload, false)
    }

    /// A text message of `head` followed by a shared `tail`; None unless both are UTF-8. Only
    /// the head is checked here: the tail was checked once when it was made.
    pub fn text_with_tail(head: Bytes, tail: &Arc<SharedTail>) -> Option<Self> {
        if !tail.is_text || std::str::from_utf8(&head).is_err() {
            return None;
        }
        Some(Self::new_with_tail(head, Some(tail.clone()), true))
    }

    /// A binary message of `head` followed by a shared `tail`.
    pub fn binary_with_tail(head: Bytes, tail: &Arc<SharedTail>) -> Self {
        Self::new_with_tail(head, Some(tail.clone()), false)
    }

    fn new(payload: Bytes, is_text: bool) -> Self {
        Self::new_with_tail(payload, None, is_text)
    }

    fn new_with_tail(payload: Bytes, tail: Option<Arc<SharedTail>>, is_text: bool) -> Self {
        Self {
            inner: Arc::new(OutInner {
                payload,
                tail,
                joined: OnceLock::new(),
                is_text,
                encoded: OnceLock::new(),
                on_drop: None,
            }),
        }
    }

    /// The payload as the slices it is made of, in order (one, or a head and a shared tail),
    /// for vectored writes.
    pub fn parts(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(&self.inner.payload[..])
            .chain(self.inner.tail.as_ref().map(|t| &t.bytes[..]))
    }

    /// Append the SockJS JSON string literal of this message (quotes included) to `out`.
    /// `escape` runs over a whole message once, cached in it (a broadcast message goes to many
    /// sessions); a message with a shared tail escapes only its head, and the tail's escaping
    /// is computed once for every message that carries it.
    pub fn put_quoted(&self, out: &mut Vec<u8>, escape: Escape) {
        let Some(tail) = &self.inner.tail else {
            let quoted = self.inner.encoded.get_or_init(|| {
                let mut quoted = Vec::with_capacity(self.len() + 2);
                quoted.push(b'"');
                escape(&self.as_text(), &mut quoted);
                quoted.push(b'"');
                Bytes::from(quoted)
            });
            out.extend_from_slice(quoted);
            return;
        };
        let escaped = tail.escaped.get_or_init(|| {
            let mut escaped = Vec::with_capacity(tail.bytes.len());
            escape(&String::from_utf8_lossy(&tail.bytes), &mut escaped);
            Bytes::from(escaped)
        });
        out.reserve(self.inner.payload.len() + escaped.len() + 2);
        out.push(b'"');
        escape(&String::from_utf8_lossy(&self.inner.payload), out);
        out.extend_from_slice(escaped);
        out.push(b'"');
    }

    /// This message, marked as one a carrier may discard unsent, oldest first, when the
    /// session's queue overflows under `overflow_strategy = "drop"`; `observer` is told of each
    /// discard. Unmarked messages (replies, errors, heart-beats) are never discarded.
    pub fn droppable(mut self, observer: Arc<dyn DropObserver>) -> Self {
        Arc::make_mut(&mut self.inner).on_drop = Some(observer);
        self
    }

    /// Whether a carrier may discard this message on overflow.
    pub fn is_droppable(&self) -> bool {
        self.inner.on_drop.is_some()
    }

    /// The payload bytes, in one buffer (a message with a shared tail joins its parts on
    /// first use; carriers that can write slices use [`OutMessage::parts`]).
    pub fn payload(&self) -> &Bytes {
        match &self.inner.tail {
            None => &self.inner.payload,
            Some(tail) => self.inner.joined.get_or_init(|| {
                let mut joined = Vec::with_capacity(self.len());
                joined.extend_from_slice(&self.inner.payload);
                joined.extend_from_slice(&tail.bytes);
                Bytes::from(joined)
            }),
        }
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        self.inner.is_text
    }

    /// The payload as text (lossy for binary payloads).
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.payload())
    }

    /// Payload length in bytes, the unit of every queue limit.
    pub fn len(&self) -> usize {
        self.inner.payload.len() + self.inner.tail.as_ref().map_or(0, |t| t.bytes.len())
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for OutMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutMessage")
            .field("len", &self.len())
            .field("is_text", &self.is_text())
            .field("droppable", &self.is_droppable())
            .finish()
    }
}

/// Which queued messages overflow under `overflow_strategy = "drop"` may discard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discardable {
    /// Any message (sockjs.md §6.4): applications that mark nothing.
    Any,
    /// Only messages marked [`OutMessage::droppable`] (stomp.md §10: MESSAGE frames, never
    /// CONNECTED, RECEIPT or ERROR): applications that mark them.
    Marked,
}

impl Discardable {
    /// Whether `message` may be discarded.
    fn allows(self, message: &OutMessage) -> bool {
        self == Discardable::Any || message.is_droppable()
    }
}

/// Make room in a carrier's outbound queue under `overflow_strategy = "drop"`: discard the
/// oldest discardable messages until at least `needed` bytes are freed, keep every other
/// message in order, and tell each discarded message's observer. Returns the bytes freed, or
/// None without discarding anything when all discardable messages together hold fewer than
/// `needed` bytes: losing them would not make room.
pub fn discard_oldest(
    queue: &mut VecDeque<OutMessage>,
    needed: usize,
    discardable: Discardable,
) -> Option<usize> {
    let mut droppable = 0;
    for message in queue.iter().filter(|m| discardable.allows(m)) {
        if droppable >= needed {
            break;
        }
        droppable += message.len();
    }
    if droppable < needed {
        return None;
    }
    let mut freed = 0;
    // Kept messages gather at the front, so each discard sits next to them and removing it
    // moves only those few.
    let mut kept = 0;
    while freed < needed {
        let Some(message) = queue.get(kept) else {
            break;
        };
        if !discardable.allows(message) {
            kept += 1;
            continue;
        }
        if let Some(message) = queue.remove(kept) {
            freed += message.len();
            if let Some(observer) = &message.inner.on_drop {
                observer.message_dropped();
            }
        }
    }
    Some(freed)
}

/// Why a send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The session is closing or closed; the message was discarded.
    #[error("session is closed")]
    Closed,
    /// The outbound queue is full and the message was refused; under `terminate` the session
    /// was also closed with 4500 "Send limit exceeded".
    #[error("outbound queue limit exceeded")]
    LimitExceeded,
}

/// The outbound side a carrier provides to its application.
pub trait SessionSink: Send + Sync + 'static {
    /// Queue a message for the client without waiting. Bounded: overflow applies the
    /// carrier's overflow strategy.
    fn send(&self, msg: OutMessage) -> Result<(), SendError>;
    /// Close the session with a code and reason (SockJS `c` frame, WebSocket close frame).
    fn close(&self, code: u16, reason: &str);
    /// Whether the session has begun closing; sends are discarded from then on.
    fn is_closed(&self) -> bool;
    /// Bytes queued for the client but not yet written; for flow control and stats.
    fn queued_bytes(&self) -> usize;
    /// Ask the carrier to stop its own idle heartbeats because the application sends its own
    /// (STOMP heart-beats). Carriers without heartbeats ignore it.
    fn suppress_heartbeats(&self, _suppress: bool) {}
    /// Flow control for an application that relays from a source it can pause (the proxy
    /// stops reading its upstream): `Ready(Ok)` once a message of `len` bytes fits in the
    /// outbound queue (`None`: never; wait only for closing), `Ready(Err)` with the close event
    /// once the session has begun closing. Otherwise the task is woken when a receiver drains
    /// the queue or closing begins. A carrier that cannot tell answers `Ready(Ok)` for a
    /// length (sends then meet its overflow strategy) and stays pending for `None` (the
    /// application learns of the close from its close event).
    fn poll_room(&self, _cx: &mut Context<'_>, len: Option<usize>) -> Poll<Result<(), CloseInfo>> {
        match len {
            Some(_) => Poll::Ready(Ok(())),
            None => Poll::Pending,
        }
    }

    /// The server is shutting down: queue `farewell` (the application's last word, such as
    /// a STOMP ERROR) and close with 1001 "Going away" (cause `Shutdown`), flushing what is
    /// queued first. Carriers do both under one lock, so nothing the application sends
    /// meanwhile can come after the farewell; the farewell is not refused by a full queue.
    /// No effect on a session that is already closing.
    fn shut_down(&self, farewell: Option<OutMessage>) {
        if let Some(farewell) = farewell {
            let _ = self.send(farewell);
        }
        self.close(GOING_AWAY_CODE, GOING_AWAY);
    }
}

/// A cloneable handle to send to, or close, a session from anywhere (a broker's fan-out).
#[derive(Clone)]
pub struct SessionSender {
    sink: Arc<dyn SessionSink>,
}

impl SessionSender {
    /// Queue a message for the client.
    pub fn send(&self, msg: OutMessage) -> Result<(), SendError> {
        self.sink.send(msg)
    }

    /// Queue a text message for the client.
    pub fn send_text(&self, text: impl Into<String>) -> Result<(), SendError> {
        self.sink.send(OutMessage::text(text))
    }

    /// Close the session.
    pub fn close(&self, code: u16, reason: &str) {
        self.sink.close(code, reason)
    }

    /// Whether the session has begun closing.
    pub fn is_closed(&self) -> bool {
        self.sink.is_closed()
    }

    /// Bytes queued but not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.sink.queued_bytes()
    }

    /// See [`SessionSink::suppress_heartbeats`].
    pub fn suppress_heartbeats(&self, suppress: bool) {
        self.sink.suppress_heartbeats(suppress)
    }

    /// Wait until a message of `len` bytes fits in the outbound queue (`Ok`; `None`: never),
    /// or the session has begun closing (`Err` with its close event); see
    /// [`SessionSink::poll_room`].
    pub async fn room(&self, len: Option<usize>) -> Result<(), CloseInfo> {
        std::future::poll_fn(|cx| self.sink.poll_room(cx, len)).await
    }

    /// See [`SessionSink::shut_down`].
    pub fn shut_down(&self, farewell: Option<OutMessage>) {
        self.sink.shut_down(farewell)
    }
}

impl fmt::Debug for SessionSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionSender").finish_non_exhaustive()
    }
}

/// What an application holds for one session.
pub struct SessionHandle {
    /// What the carrier knew about the client.
    info: Arc<SessionInfo>,
    /// Inbound messages and the close event, shared with the carrier.
    inbound: Arc<InboundQueue>,
    /// Whether the close event was already handed out.
    close_reported: bool,
    /// The outbound side.
    sender: SessionSender,
}

/// A bounded inbound queue: the carrier waits while it is full (backpressure), the
/// application waits while it is empty. Lighter than a channel (no preallocated block), which
/// matters with tens of thousands of idle sessions.
struct InboundQueue {
    /// Messages, the end marker and the close event.
    state: std::sync::Mutex<InboundState>,
    /// Wakes the application: a message or the end arrived.
    readable: tokio::sync::Notify,
    /// Wakes carriers: room was freed, or the application went away.
    writable: tokio::sync::Notify,
}

#[derive(Default)]
struct InboundState {
    /// Messages not yet received, in arrival order.
    messages: VecDeque<Inbound>,
    /// The close event, set once when the session ends.
    close: Option<CloseInfo>,
    /// The application dropped its handle; deliveries are discarded.
    receiver_gone: bool,
}

impl InboundQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, InboundState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SessionHandle {
    /// Information about the client and carrier.
    pub fn info(&self) -> &Arc<SessionInfo> {
        &self.info
    }

    /// The next event: messages in arrival order, then exactly one `Closed`, then `None`.
    pub async fn recv(&mut self) -> Option<SessionEvent> {
        if self.close_reported {
            return None;
        }
        loop {
            {
                let mut st = self.inbound.lock();
                if let Some(msg) = st.messages.pop_front() {
                    drop(st);
                    self.inbound.writable.notify_one();
                    return Some(SessionEvent::Message(msg));
                }
                if let Some(info) = &st.close {
                    self.close_reported = true;
                    return Some(SessionEvent::Closed(info.clone()));
                }
            }
            self.inbound.readable.notified().await;
        }
    }

    /// A cloneable sender for this session.
    pub fn sender(&self) -> &SessionSender {
        &self.sender
    }

    /// Queue a message for the client.
    pub fn send(&self, msg: OutMessage) -> Result<(), SendError> {
        self.sender.send(msg)
    }

    /// Queue a text message for the client.
    pub fn send_text(&self, text: impl Into<String>) -> Result<(), SendError> {
        self.sender.send_text(text)
    }

    /// Close the session with a code and reason.
    pub fn close(&self, code: u16, reason: &str) {
        self.sender.close(code, reason)
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        let mut st = self.inbound.lock();
        st.receiver_gone = true;
        st.messages.clear();
        drop(st);
        self.inbound.writable.notify_waiters();
    }
}

/// The carrier's side of a session's inbound stream.
pub struct InboundSide {
    /// The queue shared with the application's handle.
    inbound: Arc<InboundQueue>,
}

impl InboundSide {
    /// Deliver one message to the application, waiting while its inbound queue is full.
    /// Returns false when the session has already ended or the application went away.
    pub async fn deliver(&self, msg: Inbound) -> bool {
        let mut msg = Some(msg);
        loop {
            let waiting = self.inbound.writable.notified();
            {
                let mut st = self.inbound.lock();
                if st.close.is_some() || st.receiver_gone {
                    return false;
                }
                if st.messages.len() < INBOUND_CAPACITY {
                    if let Some(msg) = msg.take() {
                        st.messages.push_back(msg);
                    }
                    drop(st);
                    self.inbound.readable.notify_one();
                    return true;
                }
            }
            waiting.await;
        }
    }

    /// Give the application a brief chance to take what was delivered (a few scheduler
    /// yields, never a sleep), so a send request answered right after usually finds the
    /// application's reaction (an echo) already queued, as clients of single-threaded
    /// servers expect.
    pub async fn let_application_catch_up(&self) {
        for _ in 0..32 {
            if self.inbound.lock().messages.is_empty() {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// End the inbound stream with a close event; only the first call has an effect.
    /// Returns whether this call was the one that ended it.
    pub fn finish(&self, info: CloseInfo) -> bool {
        let mut st = self.inbound.lock();
        if st.close.is_some() {
            return false;
        }
        st.close = Some(info);
        drop(st);
        self.inbound.readable.notify_one();
        self.inbound.writable.notify_waiters();
        true
    }
}

/// Create the two ends of a session: the carrier keeps the [`InboundSide`], the application
/// gets the [`SessionHandle`].
pub fn new_session(info: SessionInfo, sink: Arc<dyn SessionSink>) -> (InboundSide, SessionHandle) {
    let inbound = Arc::new(InboundQueue {
        state: std::sync::Mutex::new(InboundState::default()),
        readable: tokio::sync::Notify::new(),
        writable: tokio::sync::Notify::new(),
    });
    let side = InboundSide {
        inbound: inbound.clone(),
    };
    let handle = SessionHandle {
        info: Arc::new(info),
        inbound,
        close_reported: false,
        sender: SessionSender { sink },
    };
    (side, handle)
}

/// An application served on a SockJS prefix, raw WebSocket or TCP.
pub trait App: Send + Sync + 'static {
    /// Take ownership of a newly opened session. Implementations spawn their own task (one
    /// per session, never one per message) and return at once.
    fn on_session(&self, session: SessionHandle);

    /// Whether the application authenticates clients itself after the handshake (STOMP's
    /// CONNECT carries credentials) and enforces credential expiry. When false, carriers
    /// refuse anonymous handshakes if anonymous access is off, and end sessions whose
    /// credential expires.
    fn authenticates_in_band(&self) -> bool {
        false
    }

    /// Which of its messages a carrier may discard under `overflow_strategy = "drop"`: any
    /// (the default), or only those the application marked droppable.
    fn discardable(&self) -> Discardable {
        Discardable::Any
    }

    /// WebSocket subprotocols the application speaks, most preferred first; a raw WebSocket
    /// handshake selects the first one the client offers.
    fn subprotocols(&self) -> &'static [&'static str] {
        &[]
    }

    /// The subprotocol a WebSocket handshake agrees to, from those the client offers (as
    /// sent, in its order); None leaves the header out. By default the first of
    /// [`App::subprotocols`] the client offers (compared without case), in the application's
    /// spelling. Applications whose list is configured (the proxy) decide here instead.
    fn select_subprotocol(&self, offered: &[String]) -> Option<String> {
        self.subprotocols()
            .iter()
            .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)))
            .map(|p| p.to_string())
    }

    /// Request headers the application reads from [`SessionInfo::headers`] beyond
    /// [`CAPTURED_HEADERS`] (lower-case names), e.g. the headers a proxy forwards.
    fn captured_headers(&self) -> &[String] {
        &[]
    }

    /// The last message a session gets when the server shuts down, before its 1001 close
    /// (STOMP: ERROR `Server shutting down`); None (the default) sends only the close.
    fn farewell(&self, _info: &SessionInfo) -> Option<OutMessage> {
        None
    }
}

/// A fresh id for log lines.
pub fn next_log_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts discards (shared with the carriers' tests).
    #[derive(Default)]
    pub(crate) struct Discards(pub(crate) AtomicUsize);

    impl DropObserver for Discards {
        fn message_dropped(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn texts(queue: &VecDeque<OutMessage>) -> Vec<String> {
        queue.iter().map(|m| m.as_text().into_owned()).collect()
    }

    #[test]
    fn discards_only_droppable_messages_oldest_first() {
        let discards = Arc::new(Discards::default());
        let droppable = |text: &str| OutMessage::text(text).droppable(discards.clone());
        let mut queue: VecDeque<OutMessage> = [
            OutMessage::text("receipt"),
            droppable("m1"),
            droppable("m2"),
            OutMessage::text("error"),
            droppable("m3"),
        ]
        .into();
        assert_eq!(discard_oldest(&mut queue, 3, Discardable::Marked), Some(4));
        assert_eq!(texts(&queue), ["receipt", "error", "m3"]);
        assert_eq!(discards.0.load(Ordering::Relaxed), 2);
        assert_eq!(discard_oldest(&mut queue, 0, Discardable::Marked), Some(0));
    }

    #[test]
    fn discards_nothing_when_the_droppable_messages_cannot_make_room() {
        let discards = Arc::new(Discards::default());
        let mut queue: VecDeque<OutMessage> = [
            OutMessage::text("receipt"),
            OutMessage::text("m1").droppable(discards.clone()),
        ]
        .into();
        assert_eq!(discard_oldest(&mut queue, 3, Discardable::Marked), None);
        assert_eq!(texts(&queue), ["receipt", "m1"]);
        assert_eq!(discards.0.load(Ordering::Relaxed), 0);
    }

    fn brackets(s: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("[{s}]").as_bytes());
    }

    fn nothing(_: &str, _: &mut Vec<u8>) {}

    #[test]
    fn marking_keeps_the_payload_and_the_encoding_cache() {
        let message = OutMessage::text("hi");
        let mut encoded = Vec::new();
        message.put_quoted(&mut encoded, brackets);
        let marked = message.droppable(Arc::new(Discards::default()));
        assert!(marked.is_droppable());
        assert_eq!(marked.payload(), &Bytes::from_static(b"hi"));
        let mut again = Vec::new();
        marked.put_quoted(&mut again, nothing);
        assert_eq!(again, encoded);
        assert_eq!(encoded, b"\"[hi]\"");
        assert!(!OutMessage::text("hi").is_droppable());
    }

    #[test]
    fn a_shared_tail_is_one_payload_and_is_escaped_once_for_all_its_messages() {
        let tail = SharedTail::new(Bytes::from_static(b"body"));
        let a = OutMessage::text_with_tail(Bytes::from_static(b"head-a "), &tail).unwrap();
        let b = OutMessage::text_with_tail(Bytes::from_static(b"head-b "), &tail).unwrap();
        assert_eq!(a.len(), 11);
        assert_eq!(a.payload(), &Bytes::from_static(b"head-a body"));
        assert_eq!(a.parts().collect::<Vec<_>>(), [&b"head-a "[..], b"body"]);
        let mut out = Vec::new();
        a.put_quoted(&mut out, brackets);
        assert_eq!(out, b"\"[head-a ][body]\"");
        // The tail's escaping is cached: a second message only escapes its head.
        out.clear();
        b.put_quoted(&mut out, |s, out| {
            assert!(s.starts_with("head"), "only the head is escaped again");
            brackets(s, out)
        });
        assert_eq!(out, b"\"[head-b ][body]\"");
        let binary = SharedTail::new(Bytes::from_static(b"\xff"));
        assert!(OutMessage::text_with_tail(Bytes::from_static(b"h"), &binary).is_none());
        let message = OutMessage::binary_with_tail(Bytes::from_static(b"h"), &binary);
        assert!(!message.is_text());
        assert_eq!(message.len(), 2);
    }
}
