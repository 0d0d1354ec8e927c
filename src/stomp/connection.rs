//! One STOMP connection: the protocol state machine and the task that drives it.
//!
//! [`Connection`] is synchronous and free of I/O: it is fed inbound bytes and clock ticks, and
//! it writes through its [`Outbound`] and the broker. That keeps every protocol rule testable
//! with an in-memory carrier. [`run`] is the per-session task: it owns the connection, feeds it
//! the session's messages in order, and wakes it for the connect timeout, heart-beats and the
//! idle timeout.
//!
//! Every protocol error is fatal (spec §9, "one rule"): the connection sends ERROR (with the
//! offending frame's `receipt-id`), asks the carrier to close (carriers flush before closing),
//! and ignores everything after.
//!
//! Nothing here waits. A frame for an `/app` destination is handed to the application handler
//! and answered later (`pending.rs` keeps the receipts in frame order meanwhile); a CONNECT
//! whose authentication or connect hook takes time parks the connection in
//! `Phase::Authenticating` and [`run`] awaits the decision, reading nothing else until then.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Core;
use super::acl::{AclAction, Caller, Policy};
use super::application::{
    AppFrame, AppRequest, Completed, ConnectCheck, ConnectGrant, ConnectRefusal, SessionEnded,
};
use super::auth::{AuthError, ConnectRequest, Verdict, is_credential_header};
use super::broker::{
    AckKind, AckMode, AckOutcome, AckTarget, BrokerError, Published, SubscribeRequest,
};
use super::config::{HeartBeat, MAX_HEARTBEAT_MS, Unroutable};
use super::destination::{
    Pattern, PatternError, Route, is_pattern, split_user_destination, user_subscription_target,
    user_suffix,
};
use super::engine::Refusal;
use super::frame::{Command, Frame, FrameError, FrameParser, Version};
use super::outbound::{Carriage, Outbound, now_ms};
use super::pending::{Pending, Settled, Target};
use super::presence::{Kick, SessionControl, SessionRecord};
use super::selector::Selector;
use super::stats::{DisconnectCause, StompEvent, bump};
use crate::limits::TokenBucket;
use crate::session::{
    CloseCause, CloseInfo, Inbound, SessionEvent, SessionHandle, SessionInfo, SessionSender,
};

/// How many frames one turn of [`Connection::receive`] processes before the session task
/// yields: one WebSocket message or TCP read may carry thousands, each SEND a fan-out, and
/// other sessions on the same worker must not wait for all of them.
pub const FRAMES_PER_TURN: usize = 64;

/// Whether the connection still accepts input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep feeding it.
    Open,
    /// It closed (DISCONNECT, ERROR or a timeout); further input is ignored.
    Closed,
}

/// A protocol error: the ERROR frame's `message` and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StompError {
    /// The `message` header (spec §8.3).
    message: Cow<'static, str>,
    /// The text/plain body.
    detail: String,
    /// Whether to add `version:1.0,1.1,1.2` (failed negotiation).
    with_versions: bool,
    /// What the ERROR closes the session for, which decides the close code.
    kind: ErrorKind,
}

/// What an ERROR closes the session for: the cause reported and the close code (spec §10.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    /// A protocol or policy error: close 1002.
    Protocol,
    /// The client sent frames faster than `max_frames_per_second`: close 4429, the code the
    /// SockJS carriers use for their message rate.
    RateLimited,
    /// Nothing arrived for `idle_timeout_ms`: close 4408.
    IdleTimeout,
}

impl ErrorKind {
    /// The cause reported in `session_disconnect` and the close code.
    fn close(self) -> (DisconnectCause, u16) {
        match self {
            ErrorKind::Protocol => (DisconnectCause::ProtocolError, 1002),
            ErrorKind::RateLimited => (DisconnectCause::RateLimited, 4429),
            ErrorKind::IdleTimeout => (DisconnectCause::IdleTimeout, 4408),
        }
    }
}

impl StompError {
    fn new(message: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> StompError {
        StompError {
            message: message.into(),
            detail: detail.into(),
            with_versions: false,
            kind: ErrorKind::Protocol,
        }
    }

    fn rate_limited(rate: u32) -> StompError {
        StompError {
            kind: ErrorKind::RateLimited,
            ..StompError::new(
                "Rate limit exceeded",
                format!(
                    "more than {rate} frames per second (burst {}); the limit is [stomp] \
                     max_frames_per_second",
                    u64::from(rate) * 2
                ),
            )
        }
    }

    fn idle_timeout(timeout_ms: u64) -> StompError {
        StompError {
            kind: ErrorKind::IdleTimeout,
            ..StompError::new(
                "Idle timeout",
                format!(
                    "nothing received for {timeout_ms} ms; the limit is [stomp] idle_timeout_ms"
                ),
            )
        }
    }

    fn missing_header(name: &str) -> StompError {
        StompError::new(
            format!("Missing header: {name}"),
            format!("the frame requires a {name} header"),
        )
    }

    fn invalid_header(name: &str, value: &str) -> StompError {
        StompError::new(
            format!("Invalid header: {name}"),
            format!("{value:?} is not a valid {name}"),
        )
    }

    fn access_denied(destination: &str) -> StompError {
        StompError::new(
            "Access denied",
            format!("access to {destination} is denied"),
        )
    }
}

/// ERROR `Invalid header: destination` for a pattern beyond the limits, naming the problem
/// and the setting that bounds it.
fn invalid_pattern(destination: &str, err: &PatternError) -> StompError {
    let key = match err {
        PatternError::TooManySegments { .. } => "max_pattern_segments",
        PatternError::TooManyAnySegments { .. } => "max_pattern_any_segments",
        PatternError::TooManyStars { .. } => "max_pattern_stars",
    };
    let shown: String = destination.chars().take(200).collect();
    StompError::new(
        "Invalid header: destination",
        format!("{err} (the limit is [stomp] {key}): {shown}"),
    )
}

impl From<FrameError> for StompError {
    fn from(err: FrameError) -> StompError {
        StompError::new(err.message(), err.to_string())
    }
}

/// Negotiated heart-beat intervals in milliseconds (0: off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeats {
    /// C: how often the client must show signs of life.
    pub client_ms: u64,
    /// S: how often we write when otherwise idle.
    pub server_ms: u64,
}

impl Heartbeats {
    /// Spec §4.1: `C = max(cx, sy)` unless either is 0; `S = max(sx, cy)` likewise. Either
    /// is clamped to [`MAX_HEARTBEAT_MS`] (one hour): a client may offer any `u64`, and an
    /// interval past that is no heart-beat a peer could rely on anyway.
    pub fn negotiate(client: HeartBeat, server: HeartBeat) -> Heartbeats {
        let pair = |a: u64, b: u64| {
            if a == 0 || b == 0 {
                0
            } else {
                a.max(b).min(MAX_HEARTBEAT_MS)
            }
        };
        Heartbeats {
            client_ms: pair(client.send_ms, server.receive_ms),
            server_ms: pair(server.send_ms, client.receive_ms),
        }
    }
}

/// Where a subscription id was routed, so UNSUBSCRIBE knows whom to tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubRoute {
    /// A broker subscription.
    Broker,
    /// An `/app` subscribe-reply; nothing registered.
    Application,
    /// An unroutable destination that was dropped.
    Dropped,
}

/// An open transaction's buffered frames.
#[derive(Debug, Default)]
struct Transaction {
    /// SEND, ACK and NACK frames in arrival order.
    frames: Vec<Frame>,
}

/// State after CONNECTED.
#[derive(Debug)]
struct Established {
    /// The outbound side, which knows the version.
    out: Arc<Outbound>,
    /// The principal.
    user: Option<String>,
    /// The negotiated heart-beats.
    heartbeats: Heartbeats,
    /// When the principal's credential expires ([`now_ms`]); the session ends then.
    expires_ms: Option<u64>,
    /// The principal's roles, for authorization rules.
    roles: Vec<String>,
}

/// What a CONNECT negotiated, kept while its authentication or connect hook is awaited.
#[derive(Debug, Clone, Copy)]
struct Negotiated {
    /// The protocol version.
    version: Version,
    /// The heart-beat intervals.
    heartbeats: Heartbeats,
}

/// SUBSCRIBEs of one session that may wait at once for a relayed destination to go live
/// (without a backend, whose own bound applies otherwise).
const RELAY_WAITS: usize = 64;

/// A CONNECT's pending decision: its authentication, then the connect hook.
type ConnectCheckFuture = Pin<Box<dyn Future<Output = Result<ConnectGrant, StompError>> + Send>>;

/// A DISCONNECT that waits for frames a backend has not answered yet (spec §5.7: every frame
/// received before it is processed first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Draining {
    /// It asked for a receipt; the receipt is held behind the waiting frames.
    WithReceipt,
    /// It did not.
    WithoutReceipt,
}

/// Where the connection is in its life.
#[derive(Debug)]
enum Phase {
    /// Only CONNECT, STOMP and heart-beat EOLs are allowed.
    AwaitingConnect,
    /// CONNECT arrived and is being decided; later input waits unread.
    Authenticating(Box<Negotiated>),
    /// CONNECTED was sent.
    Connected(Established),
    /// DISCONNECT, ERROR or a timeout ended it; input is ignored.
    Closed,
}

/// One STOMP connection.
pub struct Connection {
    /// Shared configuration, broker, events and stats.
    core: Arc<Core>,
    /// What the carrier knew.
    info: Arc<SessionInfo>,
    /// The carrier's sender.
    sender: SessionSender,
    /// Our STOMP session id (`[a-z0-9]`).
    id: String,
    /// Life-cycle phase.
    phase: Phase,
    /// The frame decoder.
    parser: FrameParser,
    /// The inbound frame budget (`max_frames_per_second`); None when unlimited.
    frame_rate: Option<TokenBucket>,
    /// Active subscription ids and where each went.
    subscriptions: HashMap<String, SubRoute>,
    /// Open transactions.
    transactions: HashMap<String, Transaction>,
    /// Bytes buffered over all open transactions.
    transaction_bytes: usize,
    /// When the session opened ([`now_ms`]).
    opened_ms: u64,
    /// When a byte last arrived ([`now_ms`]).
    last_received_ms: u64,
    /// When the bytes being processed arrived, for the frame-rate budget.
    arrived: Instant,
    /// Whether a turn ended with frames still buffered in the parser.
    buffered: bool,
    /// Why we closed, when we did: cause, code, reason.
    closed_by_us: Option<(DisconnectCause, u16, String)>,
    /// How presence asks this session to close, once it is connected.
    control: Option<Arc<SessionControl>>,
    /// Frames waiting for a backend and the receipts held behind them; made on first use.
    pending: Option<Box<Pending>>,
    /// The decision a CONNECT waits for.
    connect_check: Option<ConnectCheckFuture>,
    /// A DISCONNECT waiting for backend answers; input after it is ignored.
    draining: Option<Draining>,
    /// The principal of a session that reached CONNECTED (`Some(None)`: anonymous), for the
    /// end-of-session hook.
    connected_as: Option<Option<String>>,
}

impl Connection {
    /// A connection in its pre-CONNECT state (which starts the connect timeout).
    pub fn new(core: Arc<Core>, info: Arc<SessionInfo>, sender: SessionSender) -> Connection {
        core.stats.session_opened(info.transport);
        let parser = FrameParser::new(core.config.frame_limits());
        let frame_rate = core.config.frame_rate_bucket();
        let now = now_ms();
        Connection {
            core,
            info,
            sender,
            id: super::broker::random_id(16),
            phase: Phase::AwaitingConnect,
            parser,
            frame_rate,
            subscriptions: HashMap::new(),
            transactions: HashMap::new(),
            transaction_bytes: 0,
            opened_ms: now,
            last_received_ms: now,
            arrived: Instant::now(),
            buffered: false,
            closed_by_us: None,
            control: None,
            pending: None,
            connect_check: None,
            draining: None,
            connected_as: None,
        }
    }

    /// Our STOMP session id.
    pub fn session_id(&self) -> &str {
        &self.id
    }

    /// Feed received bytes; frames are processed strictly in order, at most
    /// [`FRAMES_PER_TURN`] of them: when [`Connection::has_buffered_frames`] says more are
    /// waiting, the caller lets other tasks run and then calls
    /// [`Connection::process_buffered`]. Every frame spends one token of the frame-rate
    /// budget; heart-beat EOLs are skipped by the parser and spend none.
    pub fn receive(&mut self, data: &[u8]) -> Flow {
        self.last_received_ms = now_ms();
        self.core
            .stats
            .bytes_in
            .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if matches!(self.phase, Phase::Closed) || self.draining.is_some() {
            return Flow::Closed;
        }
        self.parser.push(data);
        self.arrived = Instant::now();
        self.process_buffered()
    }

    /// Process up to [`FRAMES_PER_TURN`] frames already received, in order, applying backend
    /// answers as they arrive; stops early while a CONNECT is being decided.
    pub fn process_buffered(&mut self) -> Flow {
        self.buffered = false;
        if matches!(self.phase, Phase::Closed) {
            return Flow::Closed;
        }
        for _ in 0..FRAMES_PER_TURN {
            if matches!(self.phase, Phase::Authenticating(_)) {
                return Flow::Open;
            }
            if self.settle_answers() == Flow::Closed {
                return Flow::Closed;
            }
            match self.parser.next_frame() {
                Ok(None) => return Flow::Open,
                Ok(Some(frame)) => {
                    if !self.within_frame_rate(self.arrived) {
                        self.reject_for_rate(&frame);
                        return Flow::Closed;
                    }
                    if self.process(frame) == Flow::Closed || self.draining.is_some() {
                        return Flow::Closed;
                    }
                }
                Err(err) => {
                    let receipt = self.parser.failed_receipt().map(str::to_owned);
                    self.fail(StompError::from(err), receipt.as_deref());
                    return Flow::Closed;
                }
            }
        }
        self.buffered = true;
        Flow::Open
    }

    /// Whether received frames wait for [`Connection::process_buffered`].
    pub fn has_buffered_frames(&self) -> bool {
        self.buffered
    }

    /// Take one token for a frame that arrived at `arrived`; false once the budget is spent.
    fn within_frame_rate(&mut self, arrived: Instant) -> bool {
        self.frame_rate
            .as_mut()
            .is_none_or(|bucket| bucket.take(arrived))
    }

    /// ERROR `Rate limit exceeded` for the frame that crossed the limit, then close 4429.
    fn reject_for_rate(&mut self, frame: &Frame) {
        let rate = self.core.config.max_frames_per_second;
        bump(&self.core.stats.rate_limited);
        tracing::warn!(
            session = self.info.log_id,
            stomp_session = %self.id,
            transport = %self.info.transport,
            remote = %self.info.remote_addr,
            max_frames_per_second = rate,
            "inbound STOMP frame rate limit exceeded; closing"
        );
        self.fail(StompError::rate_limited(rate), frame.get("receipt"));
    }

    /// Process one frame; on error send ERROR and close.
    fn process(&mut self, frame: Frame) -> Flow {
        self.core.stats.frame_received(frame.command);
        let receipt = frame.get("receipt").map(str::to_owned);
        let command = frame.command;
        match self.handle_frame(frame) {
            Ok(Flow::Open) => {
                if let Some(receipt) = receipt
                    && !matches!(command, Command::Connect | Command::Stomp)
                {
                    self.send_receipt(&receipt);
                }
                Flow::Open
            }
            Ok(Flow::Closed) => Flow::Closed,
            Err(err) => {
                self.fail(err, receipt.as_deref());
                Flow::Closed
            }
        }
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<Flow, StompError> {
        let version = match &self.phase {
            Phase::Closed => return Ok(Flow::Closed),
            Phase::Authenticating(_) => {
                return Err(StompError::new(
                    "Not connected",
                    format!("{} while CONNECT is being decided", frame.command),
                ));
            }
            Phase::AwaitingConnect => {
                return match frame.command {
                    Command::Connect | Command::Stomp => self.connect(frame),
                    _ => Err(StompError::new(
                        "Not connected",
                        format!("{} before CONNECT", frame.command),
                    )),
                };
            }
            Phase::Connected(established) => established.out.version(),
        };
        match frame.command {
            Command::Connect | Command::Stomp => Err(StompError::new(
                "Already connected",
                "a second CONNECT on a connected session",
            )),
            Command::Send => self.send(frame).map(|()| Flow::Open),
            Command::Subscribe => self.subscribe(&frame, version).map(|()| Flow::Open),
            Command::Unsubscribe => self.unsubscribe(&frame, version).map(|()| Flow::Open),
            Command::Ack => self.acknowledge(frame, version, AckKind::Ack),
            Command::Nack if version == Version::V1_0 => Err(StompError::new(
                "Unknown command",
                "NACK does not exist in STOMP 1.0",
            )),
            Command::Nack => self.acknowledge(frame, version, AckKind::Nack),
            Command::Begin => self.begin(&frame).map(|()| Flow::Open),
            Command::Commit => self.commit(&frame).map(|()| Flow::Open),
            Command::Abort => self.abort(&frame).map(|()| Flow::Open),
            Command::Disconnect => Ok(self.disconnect(&frame)),
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                Err(StompError::new(
                    "Unknown command",
                    format!("{} is a server command", frame.command),
                ))
            }
        }
    }

    fn connect(&mut self, frame: Frame) -> Result<Flow, StompError> {
        let credential = self.core.authenticator.credential_header();
        self.core.events.emit(StompEvent::Connect {
            session: self.id.clone(),
            transport: self.info.transport,
            remote_addr: self.info.remote_addr,
            headers: frame
                .headers
                .iter()
                .filter(|(n, _)| !is_credential_header(n, credential))
                .cloned()
                .collect(),
        });
        let version = negotiate_version(frame.get("accept-version"))?;
        self.check_virtual_host(frame.get("host"))?;
        let heartbeats = self.negotiate_heartbeats(&frame, version)?;
        let negotiated = Negotiated {
            version,
            heartbeats,
        };
        let request = ConnectRequest {
            headers: &frame.headers,
            info: &self.info,
        };
        let check: ConnectCheckFuture = match self.core.authenticator.authenticate(&request) {
            Verdict::Now(result) => {
                let principal = checked_principal(result)?;
                let hook = self.core.app_handler.as_ref().and_then(|handler| {
                    handler.check_connect(&ConnectCheck {
                        session: &self.id,
                        info: &self.info,
                        headers: &frame.headers,
                        principal: principal.as_ref(),
                    })
                });
                let Some(decision) = hook else {
                    let grant = ConnectGrant {
                        principal,
                        headers: Vec::new(),
                    };
                    self.establish(negotiated, grant);
                    return Ok(Flow::Open);
                };
                Box::pin(async move { decision.await.map_err(refused) })
            }
            Verdict::Later(authentication) => {
                let handler = self.core.app_handler.clone();
                let (session, info, headers) = (self.id.clone(), self.info.clone(), frame.headers);
                Box::pin(async move {
                    let principal = checked_principal(authentication.await)?;
                    let hook = handler.as_ref().and_then(|handler| {
                        handler.check_connect(&ConnectCheck {
                            session: &session,
                            info: &info,
                            headers: &headers,
                            principal: principal.as_ref(),
                        })
                    });
                    match hook {
                        Some(decision) => decision.await.map_err(refused),
                        None => Ok(ConnectGrant {
                            principal,
                            headers: Vec::new(),
                        }),
                    }
                })
            }
        };
        self.phase = Phase::Authenticating(Box::new(negotiated));
        self.connect_check = Some(check);
        Ok(Flow::Open)
    }

    /// The decision a CONNECT waited for arrived: send CONNECTED (then process the frames
    /// that arrived behind the CONNECT) or ERROR.
    pub fn connect_decided(&mut self, decision: Result<ConnectGrant, StompError>) -> Flow {
        let Phase::Authenticating(negotiated) = &self.phase else {
            return Flow::Closed;
        };
        let negotiated = **negotiated;
        self.connect_check = None;
        let grant = decision.and_then(|grant| match &grant.principal {
            Some(principal) => check_principal_name(&principal.name).map(|()| grant),
            None => Ok(grant),
        });
        match grant {
            Ok(grant) => {
                self.establish(negotiated, grant);
                self.process_buffered()
            }
            Err(err) => {
                self.fail(err, None);
                Flow::Closed
            }
        }
    }

    /// Send CONNECTED and become connected.
    fn establish(&mut self, negotiated: Negotiated, grant: ConnectGrant) {
        let Negotiated {
            version,
            heartbeats,
        } = negotiated;
        let principal = grant.principal;
        let expires_ms = principal.as_ref().and_then(|p| p.expires_at).map(|exp| {
            let left = exp
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            now_ms().saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
        });
        let roles = principal
            .as_ref()
            .map(|p| p.roles.clone())
            .unwrap_or_default();
        let user = principal.map(|p| p.name);
        self.parser.set_version(version);
        let out = Arc::new(Outbound::new(
            self.sender.clone(),
            version,
            Carriage::of(self.info.transport),
            self.core.stats.clone(),
        ));
        self.core
            .broker
            .register_session(&self.id, out.clone(), user.clone());
        let record = SessionRecord {
            user: user.clone(),
            transport: self.info.transport,
            remote_addr: self.info.remote_addr,
            since: std::time::SystemTime::now(),
            sender: self.sender.clone(),
        };
        self.control = Some(self.core.presence.register(&self.id, record));
        let mut connected = self.connected_frame(version, user.as_deref());
        for (name, value) in grant.headers {
            connected.add_header(name, value);
        }
        let _ = out.send_frame(&connected);
        bump(&self.core.stats.connected_sent);
        if heartbeats.server_ms > 0 {
            self.sender.suppress_heartbeats(true);
        }
        tracing::debug!(session = self.info.log_id, stomp_session = %self.id, transport = %self.info.transport, remote = %self.info.remote_addr, %version, user = ?user, "STOMP session connected");
        self.core.events.emit(StompEvent::Connected {
            session: self.id.clone(),
            user: user.clone(),
            version,
            client_heartbeat_ms: heartbeats.client_ms,
            server_heartbeat_ms: heartbeats.server_ms,
        });
        self.connected_as = Some(user.clone());
        self.phase = Phase::Connected(Established {
            out,
            user,
            heartbeats,
            expires_ms,
            roles,
        });
    }

    fn check_virtual_host(&self, host: Option<&str>) -> Result<(), StompError> {
        let Some(hosts) = &self.core.config.virtual_hosts else {
            return Ok(());
        };
        match host {
            Some(host) if !hosts.iter().any(|h| h == host) => Err(StompError::new(
                "Unknown virtual host",
                format!("virtual host {host:?} is not configured"),
            )),
            _ => Ok(()),
        }
    }

    fn negotiate_heartbeats(
        &self,
        frame: &Frame,
        version: Version,
    ) -> Result<Heartbeats, StompError> {
        if version == Version::V1_0 {
            return Ok(Heartbeats {
                client_ms: 0,
                server_ms: 0,
            });
        }
        let client = match frame.get("heart-beat") {
            None => HeartBeat {
                send_ms: 0,
                receive_ms: 0,
            },
            Some(value) => HeartBeat::parse(value).ok_or_else(|| {
                StompError::new("Malformed frame", format!("bad heart-beat value {value:?}"))
            })?,
        };
        Ok(Heartbeats::negotiate(client, self.core.config.heart_beat))
    }

    fn connected_frame(&self, version: Version, user: Option<&str>) -> Frame {
        let heart_beat = if version == Version::V1_0 {
            "0,0".to_owned()
        } else {
            self.core.config.heart_beat.to_string()
        };
        let mut frame = Frame::new(Command::Connected)
            .header("version", version.as_str())
            .header("heart-beat", heart_beat)
            .header("session", self.id.as_str())
            .header(
                "server",
                concat!("sockjs-gateway/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(user) = user {
            frame.add_header("user-name", user);
        }
        frame
    }

    fn established(&self) -> Result<&Established, StompError> {
        match &self.phase {
            Phase::Connected(established) => Ok(established),
            _ => Err(StompError::new(
                "Not connected",
                "the session is not connected",
            )),
        }
    }

    /// Apply the ACL (to a SUBSCRIBE `pattern`, by what it can receive); a denied frame is
    /// answered with ERROR naming the destination.
    fn authorize(
        &self,
        action: AclAction,
        destination: &str,
        pattern: Option<&Pattern>,
    ) -> Result<(), StompError> {
        let established = self.established()?;
        let caller = Caller {
            user: established.user.as_deref(),
            roles: &established.roles,
        };
        let policy = match pattern {
            Some(pattern) => self.core.acl.check_pattern(pattern, caller),
            None => self.core.acl.check(action, destination, caller),
        };
        match policy {
            Policy::Allow => Ok(()),
            Policy::Deny => {
                tracing::warn!(session = self.info.log_id, stomp_session = %self.id, user = ?caller.user, ?action, %destination, "access denied by ACL");
                bump(&self.core.stats.access_denied);
                Err(StompError::access_denied(destination))
            }
        }
    }

    fn send(&mut self, frame: Frame) -> Result<(), StompError> {
        let Some(destination) = frame.get("destination") else {
            return Err(StompError::missing_header("destination"));
        };
        self.authorize(AclAction::Send, destination, None)?;
        if let Some(tx) = frame.get("transaction") {
            let tx = tx.to_owned();
            return self.buffer_in_transaction(&tx, frame);
        }
        let receipt = frame.get("receipt").map(str::to_owned);
        self.route_send(frame, receipt)
    }

    /// Route a SEND (spec §7.1): user prefix, application prefix, broker, or unroutable.
    /// `blame` is the receipt an ERROR for it carries (the SEND's, or its COMMIT's).
    fn route_send(&mut self, frame: Frame, blame: Option<String>) -> Result<(), StompError> {
        let destination = frame.get("destination").unwrap_or_default();
        let core = &self.core;
        core.traffic.record(destination);
        match core.router.route(destination) {
            Route::User { rest } => {
                if !core.config.allow_client_send_to_user {
                    return Err(StompError::access_denied(destination));
                }
                let (user, actual) = split_user_destination(&rest)
                    .map_err(|err| StompError::new("Access denied", err.to_string()))?;
                let message = core.broker.message(&frame.headers, frame.body.clone());
                core.broker
                    .send_to_user(&user, &actual, Some(&self.id), message);
                Ok(())
            }
            Route::Application { stripped } => {
                let destination = destination.to_owned();
                let Frame { headers, body, .. } = frame;
                self.forward(AppFrame::Send, headers, body, destination, stripped, blame)
            }
            Route::Broker => {
                if let Some(owner) = user_suffix(destination)
                    && owner != self.id
                    && !core.config.allow_client_send_to_user
                    && core.broker.is_session(owner)
                {
                    return Err(StompError::access_denied(destination));
                }
                let message = core.broker.message(&frame.headers, frame.body.clone());
                match core
                    .broker
                    .publish_from(&self.id, destination, message)
                    .refused
                {
                    None => Ok(()),
                    Some(Refusal::Unavailable(why)) => {
                        Err(StompError::new("Broker unavailable", why))
                    }
                    Some(Refusal::InvalidDestination(why)) => {
                        Err(StompError::new("Invalid header: destination", why))
                    }
                }
            }
            Route::Unroutable => self.unroutable(destination),
        }
    }

    /// Hand a frame to the application handler; its answer comes back through `pending`.
    fn forward(
        &mut self,
        kind: AppFrame,
        headers: Vec<(String, String)>,
        body: Bytes,
        destination: String,
        stripped: String,
        blame: Option<String>,
    ) -> Result<(), StompError> {
        let Some(handler) = self.core.app_handler.clone() else {
            return Err(no_backend(&destination));
        };
        let user = self.established()?.user.clone();
        let target = match &kind {
            AppFrame::Send => Target::Send,
            AppFrame::Subscribe { subscription } => Target::Subscription {
                id: subscription.clone(),
                destination: destination.clone(),
            },
        };
        let pending = self
            .pending
            .get_or_insert_with(|| Box::new(Pending::new(handler.max_pending_per_session())));
        let Some(completion) = pending.begin(blame.clone(), target) else {
            return Err(backend_error(format!(
                "more than {} frames of this session wait for backends",
                pending.capacity()
            )));
        };
        handler.forward(AppRequest {
            frame: kind,
            session: self.id.clone(),
            user,
            destination,
            stripped,
            headers,
            body,
            receipt: blame,
            completion,
        });
        Ok(())
    }

    /// Hold this SUBSCRIBE's RECEIPT (and every later one) until the broker says `target`
    /// is live, so a RECEIPT still means "later publishes reach this subscription" when an
    /// external broker serves the destination. Beyond the waiting bound it is not held.
    fn hold_until_live(&mut self, request: &SubscribeRequest, receipt: Option<&str>) {
        let capacity = self
            .core
            .app_handler
            .as_ref()
            .map_or(RELAY_WAITS, |h| h.max_pending_per_session());
        let pending = self
            .pending
            .get_or_insert_with(|| Box::new(Pending::new(capacity)));
        if let Some(completion) = pending.begin(receipt.map(str::to_owned), Target::Send) {
            self.core.broker.when_live(&self.id, request, completion);
        }
    }

    fn unroutable(&self, destination: &str) -> Result<(), StompError> {
        match self.core.config.unroutable {
            Unroutable::Drop => {
                bump(&self.core.stats.dropped_unroutable);
                tracing::debug!(session = self.info.log_id, stomp_session = %self.id, destination, "unroutable destination dropped");
                Ok(())
            }
            Unroutable::Error => Err(StompError::new(
                "No route for destination",
                format!("no prefix routes {destination}"),
            )),
        }
    }

    fn subscribe(&mut self, frame: &Frame, version: Version) -> Result<(), StompError> {
        let destination = frame
            .get("destination")
            .ok_or_else(|| StompError::missing_header("destination"))?;
        let pattern = self.compile_pattern(destination)?;
        self.authorize(AclAction::Subscribe, destination, pattern.as_ref())?;
        let id = match (frame.get("id"), version) {
            (Some(id), _) => id,
            (None, Version::V1_0) => destination,
            (None, _) => return Err(StompError::missing_header("id")),
        };
        if self.subscriptions.contains_key(id) {
            return Err(StompError::new(
                "Duplicate subscription id",
                format!("subscription id {id:?} is already in use"),
            ));
        }
        if self.subscriptions.len() >= self.core.config.max_subscriptions {
            return Err(StompError::new(
                "Subscription limit exceeded",
                format!(
                    "at most {} subscriptions per connection",
                    self.core.config.max_subscriptions
                ),
            ));
        }
        let ack = match frame.get("ack") {
            None => AckMode::Auto,
            Some(value) => AckMode::parse(value, version)
                .ok_or_else(|| StompError::invalid_header("ack", value))?,
        };
        let prefetch = match frame.get("prefetch-count") {
            None => None,
            Some(value) => Some(
                value
                    .parse::<usize>()
                    .map_err(|_| StompError::invalid_header("prefetch-count", value))?,
            )
            .filter(|&n| n > 0),
        };
        let selector = self.parse_selector(frame)?;
        let (target, shown, route) = match self.core.router.route(destination) {
            Route::User { rest } => (
                user_subscription_target(&rest, &self.id),
                Some(destination.to_owned()),
                SubRoute::Broker,
            ),
            Route::Application { stripped } => {
                self.subscribe_application(frame, destination, stripped, id)?;
                (destination.to_owned(), None, SubRoute::Application)
            }
            Route::Broker => (destination.to_owned(), None, SubRoute::Broker),
            Route::Unroutable => {
                self.unroutable(destination)?;
                (destination.to_owned(), None, SubRoute::Dropped)
            }
        };
        if route == SubRoute::Broker {
            if target != destination {
                self.compile_pattern(&target)?;
            }
            if selector.is_some() && self.core.broker.is_competing(&target) {
                return Err(StompError::new(
                    "Invalid header: selector",
                    format!(
                        "selectors are not supported on competing queues ({target} with \
                         queue_semantics = \"competing\")"
                    ),
                ));
            }
            let request = SubscribeRequest {
                id: id.to_owned(),
                target: target.clone(),
                shown,
                ack,
                prefetch,
                selector,
                headers: passed_through(frame),
            };
            self.core
                .broker
                .subscribe(&self.id, request.clone())
                .map_err(|err| match err {
                    BrokerError::AccessDenied(_) => StompError::access_denied(destination),
                    BrokerError::Pattern(err) => invalid_pattern(destination, &err),
                    BrokerError::Refused(why) => {
                        StompError::new("Invalid header: destination", why)
                    }
                    other => StompError::new("Not connected", other.to_string()),
                })?;
            self.core.presence.subscribed(&self.id, id, destination);
            if !self.core.broker.is_live(&self.id, &request) {
                self.hold_until_live(&request, frame.get("receipt"));
            }
        }
        self.subscriptions.insert(id.to_owned(), route);
        self.core.events.emit(StompEvent::Subscribe {
            session: self.id.clone(),
            subscription: id.to_owned(),
            destination: destination.to_owned(),
            target,
        });
        Ok(())
    }

    /// The SUBSCRIBE `selector`, parsed, when selectors are enabled (otherwise the header is
    /// ignored, spec §5.3).
    fn parse_selector(&self, frame: &Frame) -> Result<Option<Arc<Selector>>, StompError> {
        if !self.core.config.selectors {
            return Ok(None);
        }
        let Some(text) = frame.get("selector") else {
            return Ok(None);
        };
        let selector = Selector::parse(text).map_err(|err| {
            let shown: String = text.chars().take(200).collect();
            StompError::new("Invalid header: selector", format!("{err}: {shown}"))
        })?;
        Ok(Some(Arc::new(selector)))
    }

    /// A SUBSCRIBE destination with wildcards, compiled within the configured limits (None
    /// for a literal one).
    fn compile_pattern(&self, destination: &str) -> Result<Option<Pattern>, StompError> {
        if !is_pattern(destination) {
            return Ok(None);
        }
        let config = &self.core.config;
        Pattern::compile(destination, config.path_separator, &config.pattern_limits())
            .map(Some)
            .map_err(|err| invalid_pattern(destination, &err))
    }

    /// Forward a SUBSCRIBE to an `/app` destination (`@SubscribeMapping`); no broker
    /// subscription is registered, and the backend's one reply goes to this subscription.
    fn subscribe_application(
        &mut self,
        frame: &Frame,
        destination: &str,
        stripped: String,
        id: &str,
    ) -> Result<(), StompError> {
        let kind = AppFrame::Subscribe {
            subscription: id.to_owned(),
        };
        let blame = frame.get("receipt").map(str::to_owned);
        let headers = frame.headers.clone();
        self.forward(
            kind,
            headers,
            Bytes::new(),
            destination.to_owned(),
            stripped,
            blame,
        )
    }

    fn unsubscribe(&mut self, frame: &Frame, version: Version) -> Result<(), StompError> {
        let id = match (frame.get("id"), frame.get("destination"), version) {
            (Some(id), _, _) => id,
            (None, Some(destination), Version::V1_0) => destination,
            _ => return Err(StompError::missing_header("id")),
        };
        let Some(route) = self.subscriptions.remove(id) else {
            tracing::debug!(session = self.info.log_id, stomp_session = %self.id, id, "UNSUBSCRIBE of an unknown id ignored");
            return Ok(());
        };
        if route == SubRoute::Broker {
            self.core.broker.unsubscribe(&self.id, id);
            self.core.presence.unsubscribed(&self.id, id);
        }
        self.core.events.emit(StompEvent::Unsubscribe {
            session: self.id.clone(),
            subscription: id.to_owned(),
        });
        Ok(())
    }

    fn acknowledge(
        &mut self,
        frame: Frame,
        version: Version,
        kind: AckKind,
    ) -> Result<Flow, StompError> {
        let target = ack_target(&frame, version)?;
        if let Some(tx) = frame.get("transaction") {
            let tx = tx.to_owned();
            self.buffer_in_transaction(&tx, frame)?;
            return Ok(Flow::Open);
        }
        self.apply_ack(&target, kind);
        Ok(Flow::Open)
    }

    fn apply_ack(&self, target: &AckTarget, kind: AckKind) {
        if self.core.broker.acknowledge(&self.id, target, kind) == AckOutcome::Unknown {
            tracing::debug!(session = self.info.log_id, stomp_session = %self.id, ?target, "ACK/NACK for nothing outstanding");
        }
    }

    fn buffer_in_transaction(&mut self, tx: &str, frame: Frame) -> Result<(), StompError> {
        let size = frame_size(&frame);
        let limit = self.core.config.max_transaction_bytes;
        let Some(transaction) = self.transactions.get_mut(tx) else {
            return Err(unknown_transaction(tx));
        };
        if self.transaction_bytes + size > limit {
            return Err(StompError::new(
                "Transaction limit exceeded",
                format!("more than {limit} bytes buffered in transactions"),
            ));
        }
        self.transaction_bytes += size;
        transaction.frames.push(frame);
        Ok(())
    }

    fn begin(&mut self, frame: &Frame) -> Result<(), StompError> {
        let tx = frame
            .get("transaction")
            .ok_or_else(|| StompError::missing_header("transaction"))?;
        if self.transactions.contains_key(tx) {
            return Err(StompError::new(
                "Duplicate transaction",
                format!("transaction {tx:?} is already open"),
            ));
        }
        let limit = self.core.config.max_transactions;
        if self.transactions.len() >= limit {
            return Err(StompError::new(
                "Transaction limit exceeded",
                format!("at most {limit} open transactions per connection"),
            ));
        }
        self.transactions
            .insert(tx.to_owned(), Transaction::default());
        Ok(())
    }

    /// Apply the buffered SENDs, ACKs and NACKs in order.
    fn commit(&mut self, frame: &Frame) -> Result<(), StompError> {
        let transaction = self.take_transaction(frame)?;
        bump(&self.core.stats.commits);
        let version = self.established()?.out.version();
        let blame = frame.get("receipt").map(str::to_owned);
        for buffered in transaction.frames {
            match buffered.command {
                Command::Send => self.route_send(buffered, blame.clone())?,
                Command::Ack => self.apply_ack(&ack_target(&buffered, version)?, AckKind::Ack),
                Command::Nack => self.apply_ack(&ack_target(&buffered, version)?, AckKind::Nack),
                _ => {}
            }
        }
        Ok(())
    }

    fn abort(&mut self, frame: &Frame) -> Result<(), StompError> {
        self.take_transaction(frame)?;
        bump(&self.core.stats.aborts);
        Ok(())
    }

    fn take_transaction(&mut self, frame: &Frame) -> Result<Transaction, StompError> {
        let tx = frame
            .get("transaction")
            .ok_or_else(|| StompError::missing_header("transaction"))?;
        let transaction = self
            .transactions
            .remove(tx)
            .ok_or_else(|| unknown_transaction(tx))?;
        let size: usize = transaction.frames.iter().map(frame_size).sum();
        self.transaction_bytes = self.transaction_bytes.saturating_sub(size);
        Ok(transaction)
    }

    fn disconnect(&mut self, frame: &Frame) -> Flow {
        if self.pending.as_ref().is_some_and(|p| !p.is_idle()) {
            // Spec §5.7: every earlier frame is processed first. `process` holds the receipt
            // behind the frames still waiting for a backend; the close follows it.
            self.draining = Some(match frame.get("receipt") {
                Some(_) => Draining::WithReceipt,
                None => Draining::WithoutReceipt,
            });
            return Flow::Open;
        }
        self.finish_disconnect(frame.get("receipt"));
        Flow::Closed
    }

    /// DISCONNECT's end: the receipt (or Spring's ERROR), then the close.
    fn finish_disconnect(&mut self, receipt: Option<&str>) {
        match receipt {
            Some(receipt) => self.send_receipt(receipt),
            None if self.core.config.spring_disconnect_error => {
                let error = Frame::new(Command::Error).header("message", "Session closed.");
                self.send_frame(&error);
            }
            None => {}
        }
        self.close_with(DisconnectCause::Disconnect, 1000, "Normal closure");
    }

    /// Send RECEIPT now, or hold it behind frames that wait for a backend (spec §5.1:
    /// receipts go out in frame order).
    fn send_receipt(&mut self, receipt: &str) {
        if let Some(pending) = self.pending.as_mut()
            && pending.hold_receipt(receipt)
        {
            return;
        }
        self.send_frame(&Frame::new(Command::Receipt).header("receipt-id", receipt));
    }

    /// Apply the backend answers that have already arrived.
    fn settle_answers(&mut self) -> Flow {
        while let Some(answer) = self.pending.as_mut().and_then(|p| p.try_next()) {
            if self.answered(answer) == Flow::Closed {
                return Flow::Closed;
            }
        }
        Flow::Open
    }

    /// A backend answered a forwarded frame: deliver a subscription reply, fail the session,
    /// and send the receipts that were waiting for it.
    pub(crate) fn answered(&mut self, answer: Completed) -> Flow {
        if matches!(self.phase, Phase::Closed) {
            return Flow::Closed;
        }
        let Some(pending) = self.pending.as_mut() else {
            return Flow::Open;
        };
        match pending.settle(answer) {
            Settled::Accepted | Settled::Unknown => {}
            Settled::Reply {
                subscription,
                destination,
                message,
            } => self.deliver_reply(&subscription, &destination, &message),
            Settled::Failed { blame, error } => {
                tracing::debug!(session = %self.id, %error, "backend did not take a frame");
                self.fail(backend_error(error.to_string()), blame.as_deref());
                return Flow::Closed;
            }
        }
        self.send_due_receipts()
    }

    /// Send the receipts no waiting frame holds back any more; end a DISCONNECT that waited.
    fn send_due_receipts(&mut self) -> Flow {
        let Some(pending) = self.pending.as_mut() else {
            return Flow::Open;
        };
        let due = pending.due_receipts();
        let idle = pending.is_idle();
        for receipt in due {
            self.send_frame(&Frame::new(Command::Receipt).header("receipt-id", receipt));
        }
        if idle && let Some(draining) = self.draining.take() {
            match draining {
                // Its receipt has just been sent, in order.
                Draining::WithReceipt => {
                    self.close_with(DisconnectCause::Disconnect, 1000, "Normal closure")
                }
                Draining::WithoutReceipt => self.finish_disconnect(None),
            }
            return Flow::Closed;
        }
        Flow::Open
    }

    /// The one MESSAGE a backend answered a SUBSCRIBE with, to that subscription only, unless
    /// the client has unsubscribed since.
    fn deliver_reply(&self, subscription: &str, destination: &str, message: &Published) {
        if self.subscriptions.get(subscription) != Some(&SubRoute::Application) {
            tracing::debug!(session = %self.id, subscription, "subscribe reply for a subscription that ended; dropped");
            return;
        }
        if let Phase::Connected(established) = &self.phase {
            self.core.broker.send_to_subscription(
                &established.out,
                subscription,
                destination,
                message,
            );
        }
    }

    /// Send through the established outbound side, or a 1.2 one before CONNECTED.
    fn send_frame(&self, frame: &Frame) {
        let result = match &self.phase {
            Phase::Connected(established) => established.out.send_frame(frame),
            _ => Outbound::new(
                self.sender.clone(),
                Version::V1_2,
                Carriage::of(self.info.transport),
                self.core.stats.clone(),
            )
            .send_frame(frame),
        };
        if let Err(err) = result {
            tracing::debug!(session = self.info.log_id, stomp_session = %self.id, command = %frame.command, %err, "frame not queued");
        }
    }

    /// Send ERROR for `err` and close (the carrier flushes the ERROR first).
    fn fail(&mut self, err: StompError, receipt: Option<&str>) {
        tracing::debug!(session = self.info.log_id, stomp_session = %self.id, message = %err.message, detail = %err.detail, "STOMP protocol error");
        let mut frame = Frame::new(Command::Error).header("message", err.message.clone());
        if let Some(receipt) = receipt {
            frame.add_header("receipt-id", receipt);
        }
        if err.with_versions {
            frame.add_header("version", "1.0,1.1,1.2");
        }
        frame.add_header("content-type", "text/plain");
        frame.body = Bytes::from(err.detail);
        self.send_frame(&frame);
        bump(&self.core.stats.errors_sent);
        let (cause, code) = err.kind.close();
        self.close_with(cause, code, &err.message);
    }

    fn close_with(&mut self, cause: DisconnectCause, code: u16, reason: &str) {
        self.sender.close(code, reason);
        self.connect_check = None;
        self.end_session_state();
        self.phase = Phase::Closed;
        if self.closed_by_us.is_none() {
            self.closed_by_us = Some((cause, code, reason.to_owned()));
        }
        // The STOMP session is over now, even if the carrier lingers (an HTTP transport's
        // session waits out its disconnect delay): tell the backends at once.
        self.tell_backends_ended(cause, code, reason);
    }

    /// Tell the application handler that a session which reached CONNECTED ended; once.
    fn tell_backends_ended(&mut self, cause: DisconnectCause, code: u16, reason: &str) {
        if let (Some(handler), Some(user)) = (&self.core.app_handler, self.connected_as.take()) {
            handler.session_ended(SessionEnded {
                session: self.id.clone(),
                user,
                code,
                reason: reason.to_owned(),
                cause,
            });
        }
    }

    /// The handle presence uses to ask this session to close, once it is connected.
    pub fn control(&self) -> Option<Arc<SessionControl>> {
        self.control.clone()
    }

    /// Close on request (the admin API's disconnect): ERROR with the reason, then close with
    /// the requested code. A session not connected (or already closed) is left alone.
    pub fn kick(&mut self, kick: Kick) -> Flow {
        if !matches!(self.phase, Phase::Connected(_)) {
            return Flow::Closed;
        }
        tracing::info!(session = %self.id, code = kick.code, reason = %kick.reason, "closing the STOMP session on request");
        let mut frame = Frame::new(Command::Error).header("message", kick.reason.as_str());
        frame.add_header("content-type", "text/plain");
        frame.body = Bytes::from(format!("the server closed this session: {}", kick.reason));
        self.send_frame(&frame);
        bump(&self.core.stats.errors_sent);
        self.close_with(DisconnectCause::Kicked, kick.code, &kick.reason);
        Flow::Closed
    }

    /// When the next timer is due ([`now_ms`]), if any.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        match &self.phase {
            Phase::Closed => None,
            Phase::AwaitingConnect | Phase::Authenticating(_) => Some(self.connect_deadline_ms()),
            Phase::Connected(established) => {
                let hb = established.heartbeats;
                let write = Self::write_deadline_ms(established);
                let read = self.read_deadline_ms(hb);
                write
                    .into_iter()
                    .chain(read)
                    .chain(self.idle_deadline_ms())
                    .chain(established.expires_ms)
                    .min()
            }
        }
    }

    /// When a connected session that keeps silent is cut off (`idle_timeout_ms`), if ever.
    /// Before CONNECT the connect timeout bounds silence instead.
    fn idle_deadline_ms(&self) -> Option<u64> {
        let timeout = self.core.config.idle_timeout_ms;
        (timeout > 0).then(|| self.last_received_ms.saturating_add(timeout))
    }

    /// When a session that has not sent CONNECT is closed. Every deadline saturates: the
    /// intervals come from clients and config and must never wrap into the past.
    fn connect_deadline_ms(&self) -> u64 {
        self.opened_ms
            .saturating_add(self.core.config.connect_timeout_ms)
    }

    /// When the next server heart-beat is due, if the server sends any.
    fn write_deadline_ms(established: &Established) -> Option<u64> {
        let interval = established.heartbeats.server_ms;
        (interval > 0).then(|| established.out.last_write_ms().saturating_add(interval))
    }

    /// When a silent client is cut off, if it promised heart-beats.
    fn read_deadline_ms(&self, hb: Heartbeats) -> Option<u64> {
        (hb.client_ms > 0).then(|| {
            // A float-to-int cast saturates, so a huge product cannot wrap either.
            let window = (hb.client_ms as f64 * self.core.config.read_margin()) as u64;
            self.last_received_ms.saturating_add(window)
        })
    }

    /// Run whatever timer is due at `now` ([`now_ms`]).
    pub fn on_tick(&mut self, now: u64) -> Flow {
        match &self.phase {
            Phase::Closed => Flow::Closed,
            Phase::AwaitingConnect | Phase::Authenticating(_) => {
                if now >= self.connect_deadline_ms() {
                    bump(&self.core.stats.connect_failures);
                    tracing::debug!(session = self.info.log_id, stomp_session = %self.id, "no CONNECT within the connect timeout");
                    self.close_with(DisconnectCause::ConnectTimeout, 4500, "Connect timeout");
                    return Flow::Closed;
                }
                Flow::Open
            }
            Phase::Connected(established) => {
                let hb = established.heartbeats;
                if established.expires_ms.is_some_and(|exp| now >= exp) {
                    tracing::info!(session = self.info.log_id, stomp_session = %self.id, "credential expired; ending the STOMP session");
                    self.fail(
                        StompError::new(
                            "Token expired",
                            "the session's token expired; reconnect with a fresh token",
                        ),
                        None,
                    );
                    return Flow::Closed;
                }
                if self.read_deadline_ms(hb).is_some_and(|at| now >= at) {
                    bump(&self.core.stats.heartbeat_timeouts);
                    tracing::debug!(session = self.info.log_id, stomp_session = %self.id, "client heart-beat timeout");
                    self.close_with(
                        DisconnectCause::HeartBeatTimeout,
                        1002,
                        "Heart-beat timeout",
                    );
                    return Flow::Closed;
                }
                if self
                    .idle_deadline_ms()
                    .is_some_and(|deadline| now >= deadline)
                {
                    let timeout = self.core.config.idle_timeout_ms;
                    bump(&self.core.stats.idle_timeouts);
                    tracing::debug!(session = self.info.log_id, stomp_session = %self.id, idle_timeout_ms = timeout, "nothing received within the idle timeout; closing");
                    self.fail(StompError::idle_timeout(timeout), None);
                    return Flow::Closed;
                }
                if Self::write_deadline_ms(established).is_some_and(|at| now >= at) {
                    let _ = established.out.send_heartbeat();
                }
                Flow::Open
            }
        }
    }

    /// Abort transactions and leave the broker; idempotent.
    fn end_session_state(&mut self) {
        let open = self.transactions.len() as u64;
        if open > 0 {
            self.core
                .stats
                .aborts
                .fetch_add(open, std::sync::atomic::Ordering::Relaxed);
        }
        self.transactions.clear();
        self.transaction_bytes = 0;
        if matches!(self.phase, Phase::Connected(_)) {
            self.core.broker.unregister_session(&self.id);
            self.core.presence.unregister(&self.id);
        }
    }

    /// The session ended: release everything and report `session_disconnect` exactly once.
    pub fn finish(mut self, transport: Option<CloseInfo>) {
        let user = match &self.phase {
            Phase::Connected(established) => established.user.clone(),
            _ => None,
        };
        self.end_session_state();
        self.phase = Phase::Closed;
        let (cause, code, reason) = match (self.closed_by_us.take(), transport) {
            (Some(ours), _) => ours,
            (None, Some(info)) => (cause_of(info.cause), info.code, info.reason),
            (None, None) => (DisconnectCause::Client, 1000, "Normal closure".into()),
        };
        let stats = &self.core.stats;
        match cause {
            DisconnectCause::SendLimit => bump(&stats.send_limit_closes),
            DisconnectCause::TransportError | DisconnectCause::HeartBeatTimeout => {
                bump(&stats.transport_errors)
            }
            _ => {}
        }
        stats.session_closed(self.info.transport, cause);
        tracing::debug!(session = self.info.log_id, stomp_session = %self.id, transport = %self.info.transport, remote = %self.info.remote_addr, ?cause, code, %reason, "STOMP session ended");
        self.tell_backends_ended(cause, code, &reason);
        self.core.events.emit(StompEvent::Disconnect {
            session: self.id.clone(),
            user,
            code,
            reason,
            cause,
        });
    }
}

fn cause_of(cause: CloseCause) -> DisconnectCause {
    match cause {
        CloseCause::Client | CloseCause::Application => DisconnectCause::Client,
        CloseCause::Timeout | CloseCause::Interrupted => DisconnectCause::TransportError,
        CloseCause::Protocol => DisconnectCause::ProtocolError,
        CloseCause::SendLimit => DisconnectCause::SendLimit,
        CloseCause::Shutdown => DisconnectCause::Shutdown,
    }
}

/// ERROR `Authentication failed` with `detail`.
fn authentication_failed(detail: String) -> StompError {
    StompError::new("Authentication failed", detail)
}

/// An authenticator's answer as the connection uses it.
fn checked_principal(
    result: Result<Option<crate::session::Principal>, AuthError>,
) -> Result<Option<crate::session::Principal>, StompError> {
    let principal = result.map_err(|err| authentication_failed(err.to_string()))?;
    if let Some(principal) = &principal {
        check_principal_name(&principal.name)?;
    }
    Ok(principal)
}

/// User names are written into user destinations, where `%2F` stands for `/` (spec §7.5).
fn check_principal_name(name: &str) -> Result<(), StompError> {
    if name.contains("%2F") {
        return Err(authentication_failed(
            "user names must not contain %2F".into(),
        ));
    }
    Ok(())
}

/// What a connect hook's refusal is answered with.
fn refused(refusal: ConnectRefusal) -> StompError {
    match refusal {
        ConnectRefusal::Denied(reason) => authentication_failed(reason),
        ConnectRefusal::Failed(err) => backend_error(err.to_string()),
    }
}

/// ERROR `Backend error` with `detail`.
fn backend_error(detail: String) -> StompError {
    StompError::new("Backend error", detail)
}

fn no_backend(destination: &str) -> StompError {
    StompError::new(
        "Backend error",
        format!("no application handler is configured for {destination}"),
    )
}

fn unknown_transaction(tx: &str) -> StompError {
    StompError::new(
        "Unknown transaction",
        format!("transaction {tx:?} is not open"),
    )
}

/// Bytes a buffered frame holds: headers and body.
/// The SUBSCRIBE headers an external broker may define (`durable`, `auto-delete`,
/// `prefetch-count`, `x-*`, ...): all but the ones this gateway interprets.
fn passed_through(frame: &Frame) -> Vec<(String, String)> {
    const OURS: &[&str] = &[
        "destination",
        "id",
        "ack",
        "receipt",
        "selector",
        "content-length",
    ];
    frame
        .headers
        .iter()
        .filter(|(name, _)| !OURS.contains(&name.as_str()))
        .cloned()
        .collect()
}

fn frame_size(frame: &Frame) -> usize {
    let headers: usize = frame
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 2)
        .sum();
    headers + frame.body.len()
}

/// Spec §3.2: the highest of 1.2, 1.1, 1.0 offered; absent means 1.0.
fn negotiate_version(accept: Option<&str>) -> Result<Version, StompError> {
    let Some(accept) = accept else {
        return Ok(Version::V1_0);
    };
    accept
        .split(',')
        .filter_map(|item| Version::parse(item.trim_matches(' ')))
        .max()
        .ok_or_else(|| StompError {
            with_versions: true,
            ..StompError::new(
                "Unsupported protocol version",
                "Supported protocol versions are 1.0 1.1 1.2",
            )
        })
}

/// Spec §5.5: how an ACK or NACK names its delivery in each version.
fn ack_target(frame: &Frame, version: Version) -> Result<AckTarget, StompError> {
    match version {
        Version::V1_2 => frame
            .get("id")
            .map(|id| AckTarget::Token(id.to_owned()))
            .ok_or_else(|| StompError::missing_header("id")),
        Version::V1_1 | Version::V1_0 => {
            let message_id = frame
                .get("message-id")
                .ok_or_else(|| StompError::missing_header("message-id"))?;
            let subscription = frame.get("subscription");
            if version == Version::V1_1 && subscription.is_none() {
                return Err(StompError::missing_header("subscription"));
            }
            Ok(AckTarget::MessageId {
                message_id: message_id.to_owned(),
                subscription: subscription.map(str::to_owned),
            })
        }
    }
}

/// The per-session task: feed messages in order, apply backend answers, run timers, and clean
/// up exactly once. While a CONNECT is being decided nothing else is read, so what the client
/// sent behind it waits in the carrier's bounded inbound queue.
pub async fn run(core: Arc<Core>, mut handle: SessionHandle) {
    let mut connection = Connection::new(core, handle.info().clone(), handle.sender().clone());
    let transport_close = loop {
        // One inbound message may carry thousands of frames: they are run
        // [`FRAMES_PER_TURN`] at a time, letting other sessions run in between.
        if connection.has_buffered_frames() {
            tokio::task::yield_now().await;
            connection.process_buffered();
            continue;
        }
        let deadline = connection.next_deadline_ms();
        let timer = async {
            match deadline {
                Some(at) => {
                    let wait = at.saturating_sub(now_ms());
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                None => std::future::pending().await,
            }
        };
        let control = connection.control();
        let kicked = async move {
            match control {
                Some(control) => control.requested().await,
                None => std::future::pending().await,
            }
        };
        if connection.connect_check.is_some() {
            tokio::select! {
                decision = decided(&mut connection.connect_check) => {
                    connection.connect_decided(decision);
                }
                () = timer => {
                    connection.on_tick(now_ms());
                }
            }
            continue;
        }
        tokio::select! {
            event = handle.recv() => match event {
                Some(SessionEvent::Message(message)) => {
                    let data = match &message {
                        Inbound::Text(text) => text.as_bytes(),
                        Inbound::Binary(bytes) => bytes,
                    };
                    connection.receive(data);
                }
                Some(SessionEvent::Closed(info)) => break Some(info),
                None => break None,
            },
            answer = next_answer(&mut connection.pending) => {
                connection.answered(answer);
            }
            () = timer => {
                connection.on_tick(now_ms());
            }
            kick = kicked => {
                connection.kick(kick);
            }
        }
    };
    connection.finish(transport_close);
}

/// The decision a CONNECT waits for; never completes when there is none.
async fn decided(check: &mut Option<ConnectCheckFuture>) -> Result<ConnectGrant, StompError> {
    match check {
        Some(future) => future.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The next backend answer; never completes when nothing was forwarded.
async fn next_answer(pending: &mut Option<Box<Pending>>) -> Completed {
    match pending {
        Some(pending) => pending.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::TransportKind;
    use crate::stomp::StompConfig;
    use crate::stomp::testing::{RecordingSink, recording_session};

    struct Client {
        connection: Connection,
        sink: Arc<RecordingSink>,
    }

    fn core(config: StompConfig) -> Arc<Core> {
        Arc::new(Core::new(config, None, None))
    }

    fn client(core: &Arc<Core>) -> Client {
        let (sink, _side, handle) = recording_session(TransportKind::Tcp, None);
        let connection =
            Connection::new(core.clone(), handle.info().clone(), handle.sender().clone());
        Client { connection, sink }
    }

    impl Client {
        /// Receive `wire` and run every frame in it, turn after turn, as [`run`] does.
        fn feed(&mut self, wire: &str) -> Flow {
            let mut flow = self.connection.receive(wire.as_bytes());
            while flow == Flow::Open && self.connection.has_buffered_frames() {
                flow = self.connection.process_buffered();
            }
            flow
        }

        fn connect(core: &Arc<Core>, version: &str) -> Client {
            let mut client = client(core);
            client.feed(&format!(
                "CONNECT\naccept-version:{version}\nheart-beat:0,0\n\n\0"
            ));
            assert_eq!(client.frames()[0].command, Command::Connected);
            client.sink.clear();
            client
        }

        fn frames(&self) -> Vec<Frame> {
            self.sink.frames()
        }

        fn last(&self) -> Frame {
            self.frames().pop().expect("a frame")
        }
    }

    fn assert_error(client: &Client, message: &str) {
        let last = client.last();
        assert_eq!(last.command, Command::Error);
        assert_eq!(last.get("message"), Some(message));
        assert_eq!(client.sink.closed_with().map(|c| c.0), Some(1002));
    }

    #[test]
    fn negotiates_versions() {
        assert_eq!(negotiate_version(None).unwrap(), Version::V1_0);
        assert_eq!(negotiate_version(Some("1.1,1.0")).unwrap(), Version::V1_1);
        assert_eq!(
            negotiate_version(Some("1.0, 1.1 ,1.2")).unwrap(),
            Version::V1_2
        );
        assert_eq!(negotiate_version(Some("1.2,2.0")).unwrap(), Version::V1_2);
        assert!(negotiate_version(Some("2.0")).is_err());
    }

    #[test]
    fn negotiates_heartbeats_per_spec_table() {
        let server = HeartBeat {
            send_ms: 10_000,
            receive_ms: 10_000,
        };
        let cases = [
            ((0, 0), (0, 0)),
            ((10_000, 10_000), (10_000, 10_000)),
            ((2000, 5000), (10_000, 10_000)),
            ((0, 5000), (0, 10_000)),
            ((30_000, 30_000), (30_000, 30_000)),
            ((u64::MAX, u64::MAX), (3_600_000, 3_600_000)),
            ((0, u64::MAX), (0, 3_600_000)),
            ((7_200_000, 0), (3_600_000, 0)),
        ];
        for ((cx, cy), (c, s)) in cases {
            let hb = Heartbeats::negotiate(
                HeartBeat {
                    send_ms: cx,
                    receive_ms: cy,
                },
                server,
            );
            assert_eq!((hb.client_ms, hb.server_ms), (c, s), "{cx},{cy}");
        }
    }

    #[test]
    fn connected_carries_the_required_headers() {
        let core = core(StompConfig {
            principal_header: Some("login".into()),
            ..StompConfig::default()
        });
        let mut c = client(&core);
        c.feed("STOMP\naccept-version:1.2\nhost:127.0.0.1\nheart-beat:2000,5000\nlogin:alice\npasscode:secret\n\n\0");
        let frame = c.last();
        assert_eq!(frame.command, Command::Connected);
        assert_eq!(frame.get("version"), Some("1.2"));
        assert_eq!(frame.get("heart-beat"), Some("10000,10000"));
        assert_eq!(frame.get("user-name"), Some("alice"));
        let session = frame.get("session").unwrap();
        assert!(
            session.len() >= 13
                && session
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert!(frame.get("server").unwrap().starts_with("sockjs-gateway/"));
        assert!(c.sink.heartbeats_suppressed());
    }

    #[test]
    fn version_1_0_gets_no_heartbeats() {
        let core = core(StompConfig::default());
        let mut c = client(&core);
        c.feed("CONNECT\nheart-beat:1000,1000\n\n\0");
        let frame = c.last();
        assert_eq!(frame.get("version"), Some("1.0"));
        assert_eq!(frame.get("heart-beat"), Some("0,0"));
        assert_eq!(c.connection.next_deadline_ms(), None);
    }

    #[test]
    fn rejects_unsupported_versions_with_a_version_header() {
        let core = core(StompConfig::default());
        let mut c = client(&core);
        assert_eq!(c.feed("CONNECT\naccept-version:2.0\n\n\0"), Flow::Closed);
        assert_error(&c, "Unsupported protocol version");
        assert_eq!(c.last().get("version"), Some("1.0,1.1,1.2"));
    }

    #[test]
    fn frames_before_connect_and_second_connect_are_errors() {
        let core = core(StompConfig::default());
        let mut c = client(&core);
        c.feed("SEND\ndestination:/topic/a\n\n\0");
        assert_error(&c, "Not connected");
        let mut c = Client::connect(&core, "1.2");
        c.feed("CONNECT\naccept-version:1.2\n\n\0");
        assert_error(&c, "Already connected");
    }

    #[test]
    fn malformed_heartbeat_is_an_error() {
        let core = core(StompConfig::default());
        let mut c = client(&core);
        c.feed("CONNECT\naccept-version:1.2\nheart-beat:abc\n\n\0");
        assert_error(&c, "Malformed frame");
    }

    #[test]
    fn receipts_follow_every_frame_and_errors_carry_receipt_id() {
        let core = core(StompConfig::default());
        let mut c = Client::connect(&core, "1.2");
        c.feed("SUBSCRIBE\nid:0\ndestination:/topic/a\nreceipt:s1\n\n\0SEND\ndestination:/topic/a\nreceipt:r1\n\nhi\0");
        let frames = c.frames();
        assert_eq!(frames[0].get("receipt-id"), Some("s1"));
        assert_eq!(frames[1].command, Command::Message);
        assert_eq!(frames[1].get("receipt"), None);
        assert_eq!(frames[2].get("receipt-id"), Some("r1"));
        c.feed("SEND\nreceipt:x\n\n\0");
        assert_error(&c, "Missing header: destination");
        assert_eq!(c.last().get("receipt-id"), Some("x"));
    }

    #[test]
    fn subscription_rules() {
        let core = core(StompConfig {
            max_subscriptions: 2,
            ..StompConfig::default()
        });
        let mut c = Client::connect(&core, "1.2");
        c.feed("SUBSCRIBE\ndestination:/topic/a\n\n\0");
        assert_error(&c, "Missing header: id");
        let mut c = Client::connect(&core, "1.2");
        c.feed("SUBSCRIBE\nid:0\ndestination:/topic/a\n\n\0SUBSCRIBE\nid:0\ndestination:/topic/b\n\n\0");
        assert_error(&c, "Duplicate subscription id");
        let mut c = Client::connect(&core, "1.2");
        c.feed("SUBSCRIBE\nid:0\ndestination:/topic/a\nack:bogus\n\n\0");
        assert_error(&c, "Invalid header: ack");
        let mut c = Client::connect(&core, "1.2");
        c.feed("SUBSCRIBE\nid:0\ndestination:/topic/a\n\n\0SUBSCRIBE\nid:1\ndestination:/topic/a\n\n\0SUBSCRIBE\nid:2\ndestination:/topic/a\n\n\0");
        assert_error(&c, "Subscription limit exceeded");
    }

    #[test]
    fn version_1_0_subscribes_and_unsubscribes_by_destination() {
        let core = core(StompConfig::default());
        let mut c = Client::connect(&core, "1.0");
        c.feed("SUBSCRIBE\ndestination:/topic/a\n\n\0SEND\ndestination:/topic/a\n\nx\0");
        assert_eq!(c.frames().len(), 1);
        c.feed("UNSUBSCRIBE\ndestination:/topic/a\n\n\0SEND\ndestination:/topic/a\n\nx\0");
        assert_eq!(c.frames().len(), 1);
        c.feed("NACK\nmessage-id:1\n\n\0");
        assert_error(&c, "Unknown command");
    }

    #[test]
    fn transactions_buffer_until_commit() {
        let core = core(StompConfig::default());
        let mut c = Client::connect(&core, "1.2");
        c.feed("SUBSCRIBE\nid:0\ndestination:/topic/a\n\n\0");
        c.feed("BEGIN\ntransaction:t1\n\n\0SEND\ndestination:/topic/a\ntransaction:t1\n\nA\0ABORT\ntransaction:t1\n\n\0");
        c.feed("BEGIN\ntransaction:t2\n\n\0SEND\ndestination:/topic/a\ntransaction:t2\n\nB\0");
        assert!(c.frames().is_empty());
        c.feed("COMMIT\ntransaction:t2\n\n\0");
        let frames = c.frames();
        assert_eq!(frames.len(), 1);
        assert_eq!(&frames[0].body[..], b"B");
        assert_eq!(frames[0].get("transaction"), None);
        c.feed("COMMIT\ntransaction:nope\n\n\0");
        assert_error(&c, "Unknown transaction");
    }

    #[test]
    fn transaction_limits() {
        let core = core(StompConfig {
            max_transactions: 1,
            max_transaction_bytes: 64,
            ..StompConfig::default()
        });
        let mut c = Client::connect(&core, "1.2");
        c.feed("BEGIN\ntransaction:a\n\n\0BEGIN\ntransaction:a\n\n\0");
        assert_error(&c, "Duplicate transaction");
        let mut c = Client::connect(&core, "1.2");
        c.feed("BEGIN\ntransaction:a\n\n\0BEGIN\ntransaction:b\n\n\0");
        assert_error(&c, "Transaction limit exceeded");
        let mut c = Client::connect(&core, "1.2");
        let body = "x".repeat(100);
        c.feed(&format!(
            "BEGIN\ntransaction:a\n\n\0SEND\ndestination:/topic/a\ntransaction:a\n\n{body}\0"
        ));
        assert_error(&c, "Transaction limit exceeded");
    }

    #[test]
    fn disconnect_sends_receipt_then_closes_and_ignores_the_rest() {
        let core = core(StompConfig::default());
        let mut c = Client::connect(&core, "1.2");
        c.feed("SUBSCRIBE\nid:0\ndestination:/topic/a\n\n\0DISCONNECT\nreceipt:77\n\n\0SEND\ndestination:/topic/a\n\nx\0");
        let frames = c.frames();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].get("receipt-id"), Some("77"));
        assert_eq!(c.sink.closed_with(), Some((1000, "Normal closure".into())));
    }

    #[test]
    fn client_send_to_user_is_denied_by_default() {
        let core = core(StompConfig::default());
        let mut c = Client::connect(&core, "1.2");
        c.feed("SEND\ndestination:/user/bob/queue/x\n\n\0");
        assert_error(&c, "Access denied");
    }

    #[test]
    fn user_destinations_are_rewritten() {
        let core = core(StompConfig {
            allow_client_send_to_user: true,
            principal_header: Some("login".into()),
            ..StompConfig::default()
        });
        let mut a = client(&core);
        a.feed("CONNECT\naccept-version:1.2\nlogin:alice\n\n\0SUBSCRIBE\nid:0\ndestination:/user/queue/x\n\n\0");
        let mut b = Client::connect(&core, "1.2");
        b.feed("SEND\ndestination:/user/alice/queue/x\n\nhello\0");
        let message = a.last();
        assert_eq!(message.command, Command::Message);
        assert_eq!(message.get("destination"), Some("/user/queue/x"));
        assert_eq!(message.get("subscription"), Some("0"));
    }

    /// An application handler answering in process: `/fail` fails, `/hold` waits until the
    /// test releases it, SUBSCRIBE gets a snapshot, SEND is published to `/topic` + the rest.
    #[derive(Default)]
    struct EchoBackend {
        broker: std::sync::OnceLock<Arc<crate::stomp::Broker>>,
        held: std::sync::Mutex<Vec<AppRequest>>,
        hook: Option<Result<ConnectGrant, ConnectRefusal>>,
    }

    impl crate::stomp::AppHandler for EchoBackend {
        fn attach(&self, broker: Arc<crate::stomp::Broker>) {
            let _ = self.broker.set(broker);
        }

        fn forward(&self, request: AppRequest) {
            let broker = self.broker.get().unwrap();
            match (&request.frame, request.stripped.as_str()) {
                (_, "/fail") => request
                    .completion
                    .fail(crate::stomp::BackendError::Rejected("no".into())),
                (_, "/hold") => self.held.lock().unwrap().push(request),
                (AppFrame::Subscribe { .. }, stripped) => {
                    let headers = [("x-init".to_string(), stripped.to_string())];
                    let message = broker.message(&headers, Bytes::from_static(b"snapshot"));
                    request.completion.reply(message);
                }
                (AppFrame::Send, stripped) => {
                    let message = broker.message(&request.headers, request.body.clone());
                    broker.publish(&format!("/topic{stripped}"), message);
                    request.completion.accept();
                }
            }
        }

        fn max_pending_per_session(&self) -> usize {
            2
        }

        fn check_connect(
            &self,
            _request: &ConnectCheck<'_>,
        ) -> Option<crate::stomp::ConnectDecision> {
            let answer = self.hook.clone()?;
            Some(Box::pin(std::future::ready(answer)))
        }
    }

    impl EchoBackend {
        fn release(&self, fail: bool) {
            for request in self.held.lock().unwrap().drain(..) {
                match fail {
                    false => request.completion.accept(),
                    true => request
                        .completion
                        .fail(crate::stomp::BackendError::Unavailable("down".into())),
                }
            }
        }
    }

    fn with_backend(backend: EchoBackend) -> (Arc<Core>, Arc<EchoBackend>) {
        let backend = Arc::new(backend);
        let core = Arc::new(Core::new(
            StompConfig::default(),
            None,
            Some(backend.clone()),
        ));
        (core, backend)
    }

    impl Client {
        /// Apply the answers the backend gave since the last input.
        fn settle(&mut self) {
            self.connection.settle_answers();
        }

        fn receipts(&self) -> Vec<String> {
            self.frames()
                .iter()
                .filter(|f| f.command == Command::Receipt)
                .filter_map(|f| f.get("receipt-id").map(str::to_owned))
                .collect()
        }
    }

    #[test]
    fn app_destinations_reach_the_backend() {
        let (core, _backend) = with_backend(EchoBackend::default());
        let mut c = Client::connect(&core, "1.2");
        c.feed("SUBSCRIBE\nid:0\ndestination:/topic/echo\n\n\0SUBSCRIBE\nid:init\ndestination:/app/init\n\n\0");
        let reply = c.last();
        assert_eq!(reply.get("destination"), Some("/app/init"));
        assert_eq!(reply.get("subscription"), Some("init"));
        assert_eq!(reply.get("x-init"), Some("/init"));
        c.feed("SEND\ndestination:/app/echo\nreceipt:r\n\nping\0");
        let frames = c.frames();
        assert_eq!(
            frames[frames.len() - 2].get("destination"),
            Some("/topic/echo")
        );
        assert_eq!(frames[frames.len() - 1].get("receipt-id"), Some("r"));
        c.feed("UNSUBSCRIBE\nid:init\n\n\0SEND\ndestination:/app/fail\nreceipt:f\n\n\0");
        assert_error(&c, "Backend error");
        assert_eq!(c.last().get("receipt-id"), Some("f"));
    }

    #[test]
    fn receipts_behind_a_waiting_backend_frame_leave_in_frame_order() {
        let (core, backend) = with_backend(EchoBackend::default());
        let mut c = Client::connect(&core, "1.2");
        c.feed("SUBSCRIBE\nid:0\ndestination:/topic/x\nreceipt:s\n\n\0");
        assert_eq!(c.receipts(), ["s"]);
        c.sink.clear();
        c.feed("SEND\ndestination:/app/hold\nreceipt:a\n\n1\0SEND\ndestination:/topic/x\nreceipt:b\n\n2\0");
        let frames = c.frames();
        assert_eq!(
            frames.len(),
            1,
            "the broker SEND is published at once: {frames:?}"
        );
        assert_eq!(frames[0].command, Command::Message);
        assert!(c.receipts().is_empty(), "b waits behind a");
        backend.release(false);
        c.settle();
        assert_eq!(c.receipts(), ["a", "b"]);
    }

    #[test]
    fn a_failed_backend_frame_errors_with_its_receipt_and_later_receipts_never_come() {
        let (core, backend) = with_backend(EchoBackend::default());
        let mut c = Client::connect(&core, "1.2");
        c.feed("SEND\ndestination:/app/hold\nreceipt:a\n\n\0SEND\ndestination:/topic/x\nreceipt:b\n\n\0");
        backend.release(true);
        c.settle();
        assert_error(&c, "Backend error");
        assert_eq!(c.last().get("receipt-id"), Some("a"));
        assert!(c.receipts().is_empty());
    }

    #[test]
    fn frames_waiting_for_backends_are_bounded() {
        let (core, _backend) = with_backend(EchoBackend::default());
        let mut c = Client::connect(&core, "1.2");
        c.feed("SEND\ndestination:/app/hold\n\n\0SEND\ndestination:/app/hold\n\n\0");
        assert_eq!(c.sink.closed_with(), None);
        c.feed("SEND\ndestination:/app/hold\nreceipt:third\n\n\0");
        assert_error(&c, "Backend error");
        let detail = String::from_utf8_lossy(&c.last().body).into_owned();
        assert!(detail.contains("more than 2 frames"), "{detail}");
    }

    #[test]
    fn disconnect_waits_for_backend_answers_then_receipts_and_closes() {
        let (core, backend) = with_backend(EchoBackend::default());
        let mut c = Client::connect(&core, "1.2");
        c.feed("SUBSCRIBE\nid:0\ndestination:/topic/x\n\n\0");
        c.feed("SEND\ndestination:/app/hold\nreceipt:a\n\n\0DISCONNECT\nreceipt:d\n\n\0SEND\ndestination:/topic/x\n\nlate\0");
        assert!(c.frames().is_empty(), "{:?}", c.frames());
        assert_eq!(c.sink.closed_with(), None);
        assert_eq!(
            c.feed("SEND\ndestination:/topic/x\n\nlater\0"),
            Flow::Closed
        );
        backend.release(false);
        c.settle();
        assert_eq!(c.receipts(), ["a", "d"]);
        assert_eq!(c.frames().len(), 2, "frames after DISCONNECT are ignored");
        assert_eq!(c.sink.closed_with(), Some((1000, "Normal closure".into())));
    }

    #[test]
    fn a_commit_forwards_its_app_sends_and_errors_carry_the_commit_receipt() {
        let (core, backend) = with_backend(EchoBackend::default());
        let mut c = Client::connect(&core, "1.2");
        c.feed("BEGIN\ntransaction:t\n\n\0SEND\ndestination:/app/hold\ntransaction:t\n\n\0COMMIT\ntransaction:t\nreceipt:c\n\n\0");
        assert!(c.receipts().is_empty());
        backend.release(true);
        c.settle();
        assert_error(&c, "Backend error");
        assert_eq!(c.last().get("receipt-id"), Some("c"));
    }

    #[test]
    fn a_subscribe_reply_after_unsubscribe_is_dropped() {
        let (core, backend) = with_backend(EchoBackend::default());
        let mut c = Client::connect(&core, "1.2");
        c.feed("SUBSCRIBE\nid:s\ndestination:/app/hold\n\n\0UNSUBSCRIBE\nid:s\nreceipt:u\n\n\0");
        for request in backend.held.lock().unwrap().drain(..) {
            let message = core.broker.message(&[], Bytes::from_static(b"late"));
            request.completion.reply(message);
        }
        c.settle();
        let frames = c.frames();
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].get("receipt-id"), Some("u"));
    }

    #[test]
    fn the_connect_hook_decides_the_principal_and_adds_connected_headers() {
        let grant = ConnectGrant {
            principal: Some(crate::session::Principal {
                name: "bob".into(),
                roles: vec![],
                expires_at: None,
            }),
            headers: vec![("x-tenant".into(), "t1".into())],
        };
        let (core, _backend) = with_backend(EchoBackend {
            hook: Some(Ok(grant)),
            ..EchoBackend::default()
        });
        let mut c = client(&core);
        c.feed("CONNECT\naccept-version:1.2\nlogin:mallory\n\n\0SUBSCRIBE\nid:0\ndestination:/topic/x\nreceipt:r\n\n\0");
        assert!(c.frames().is_empty(), "nothing before the decision");
        let decision = c
            .connection
            .connect_check
            .as_mut()
            .and_then(|check| futures_util::FutureExt::now_or_never(check.as_mut()))
            .unwrap();
        c.connection.connect_decided(decision);
        let frames = c.frames();
        assert_eq!(frames[0].command, Command::Connected);
        assert_eq!(frames[0].get("user-name"), Some("bob"));
        assert_eq!(frames[0].get("x-tenant"), Some("t1"));
        assert_eq!(
            frames[1].get("receipt-id"),
            Some("r"),
            "the frame behind CONNECT ran"
        );

        let (core, _backend) = with_backend(EchoBackend {
            hook: Some(Err(ConnectRefusal::Denied("bad token".into()))),
            ..EchoBackend::default()
        });
        let mut c = client(&core);
        c.feed("CONNECT\naccept-version:1.2\n\n\0");
        let decision = c
            .connection
            .connect_check
            .as_mut()
            .and_then(|check| futures_util::FutureExt::now_or_never(check.as_mut()))
            .unwrap();
        c.connection.connect_decided(decision);
        assert_error(&c, "Authentication failed");
        assert_eq!(&c.last().body[..], b"bad token");
    }

    #[test]
    fn app_destinations_without_handler_are_errors() {
        let core = core(StompConfig::default());
        let mut c = Client::connect(&core, "1.2");
        c.feed("SEND\ndestination:/app/echo\n\nx\0");
        assert_error(&c, "Backend error");
    }

    #[test]
    fn escapes_follow_each_sessions_version() {
        let core = core(StompConfig::default());
        let mut old = Client::connect(&core, "1.0");
        let mut new = Client::connect(&core, "1.2");
        old.feed("SUBSCRIBE\ndestination:/topic/e\n\n\0");
        new.feed("SUBSCRIBE\nid:1\ndestination:/topic/e\n\n\0");
        old.feed("SEND\ndestination:/topic/e\nfoo:a\\b:c\n\n\0");
        let raw_old = old.sink.payloads().concat();
        let raw_new = new.sink.payloads().concat();
        let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        assert!(contains(&raw_old, b"foo:a\\b:c\n"));
        assert!(contains(&raw_new, b"foo:a\\\\b\\cc\n"));
        new.feed("SEND\ndestination:/topic/e\nlf:a\\nb\n\n\0");
        let last = old.sink.frames_as(Version::V1_0).pop().unwrap();
        assert_eq!(last.get("lf"), None);
        assert!(
            core.stats
                .headers_dropped
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
    }

    #[test]
    fn connect_timeout_and_heartbeat_timers() {
        let quick = core(StompConfig {
            connect_timeout_ms: 50,
            ..StompConfig::default()
        });
        let mut c = client(&quick);
        let deadline = c.connection.next_deadline_ms().unwrap();
        assert_eq!(c.connection.on_tick(deadline), Flow::Closed);
        assert_eq!(c.sink.closed_with().map(|c| c.0), Some(4500));

        let core = core(StompConfig::default());
        let mut c = client(&core);
        c.feed("CONNECT\naccept-version:1.2\nheart-beat:10000,10000\n\n\0");
        c.sink.clear();
        let now = now_ms();
        assert_eq!(c.connection.on_tick(now + 10_000), Flow::Open);
        assert_eq!(c.sink.payloads().last().map(|b| &b[..]), Some(&b"\n"[..]));
        assert_eq!(c.connection.on_tick(now + 30_000), Flow::Closed);
        assert_eq!(
            c.sink.closed_with(),
            Some((1002, "Heart-beat timeout".into()))
        );
    }

    #[test]
    fn deadlines_saturate_instead_of_wrapping() {
        let forever = core(StompConfig {
            connect_timeout_ms: u64::MAX,
            heartbeat_read_margin: f64::MAX,
            ..StompConfig::default()
        });
        let mut c = client(&forever);
        assert_eq!(c.connection.next_deadline_ms(), Some(u64::MAX));
        assert_eq!(c.connection.on_tick(now_ms()), Flow::Open);
        c.feed("CONNECT\naccept-version:1.2\nheart-beat:18446744073709551615,18446744073709551615\n\n\0");
        c.sink.clear();
        let now = now_ms();
        // The server beats hourly at most, and the read window saturates at the end of time.
        let next = c.connection.next_deadline_ms().unwrap();
        assert!(
            (now + 3_599_000..=now + 3_600_000).contains(&next),
            "{next}"
        );
        assert_eq!(c.connection.on_tick(now + 1000), Flow::Open);
        assert!(
            c.sink.payloads().is_empty(),
            "no heart-beat before it is due"
        );
        assert_eq!(c.connection.on_tick(now + 3_600_000), Flow::Open);
        assert_eq!(c.sink.payloads().last().map(|b| &b[..]), Some(&b"\n"[..]));
    }

    #[test]
    fn frames_past_the_rate_get_error_then_close_4429_and_eols_are_free() {
        // Rate 2 a second: a burst of 4 frames, of which CONNECT took one.
        let core = core(StompConfig {
            max_frames_per_second: 2,
            ..StompConfig::default()
        });
        let mut c = Client::connect(&core, "1.2");
        assert_eq!(c.feed(&"\n".repeat(1000)), Flow::Open);
        let send = |receipt: &str| format!("SEND\ndestination:/topic/a\nreceipt:{receipt}\n\n\0");
        assert_eq!(c.feed(&(send("1") + &send("2") + &send("3"))), Flow::Open);
        assert_eq!(c.frames().len(), 3);
        assert_eq!(c.feed(&(send("4") + &send("5"))), Flow::Closed);
        let error = c.last();
        assert_eq!(error.command, Command::Error);
        assert_eq!(error.get("message"), Some("Rate limit exceeded"));
        assert_eq!(error.get("receipt-id"), Some("4"));
        let detail = String::from_utf8_lossy(&error.body).into_owned();
        assert!(
            detail.contains("2 frames per second") && detail.contains("max_frames_per_second"),
            "{detail}"
        );
        assert_eq!(
            c.sink.closed_with(),
            Some((4429, "Rate limit exceeded".into()))
        );
        assert_eq!(c.frames().len(), 4, "nothing is processed after the ERROR");
        assert_eq!(
            core.stats
                .rate_limited
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn one_turn_processes_a_bounded_number_of_frames() {
        let core = core(StompConfig::default());
        let mut c = Client::connect(&core, "1.2");
        let wire = "SEND\ndestination:/topic/a\nreceipt:r\n\n\0".repeat(FRAMES_PER_TURN * 2 + 1);
        assert_eq!(c.connection.receive(wire.as_bytes()), Flow::Open);
        assert_eq!(c.frames().len(), FRAMES_PER_TURN);
        assert!(c.connection.has_buffered_frames());
        assert_eq!(c.connection.process_buffered(), Flow::Open);
        assert_eq!(c.frames().len(), FRAMES_PER_TURN * 2);
        assert_eq!(c.connection.process_buffered(), Flow::Open);
        assert_eq!(c.frames().len(), FRAMES_PER_TURN * 2 + 1);
        assert!(!c.connection.has_buffered_frames());
    }

    #[test]
    fn a_zero_frame_rate_is_unlimited() {
        let core = core(StompConfig {
            max_frames_per_second: 0,
            ..StompConfig::default()
        });
        let mut c = Client::connect(&core, "1.2");
        let wire = "SEND\ndestination:/topic/a\n\n\0".repeat(50_000);
        assert_eq!(c.feed(&wire), Flow::Open);
        assert_eq!(c.sink.closed_with(), None);
    }

    #[test]
    fn idle_timeout_is_off_by_default_and_closes_4408_when_set() {
        // Spec H01: a heart-beat:0,0 session has no timer at all by default.
        let core_default = core(StompConfig::default());
        let c = Client::connect(&core_default, "1.2");
        assert_eq!(c.connection.next_deadline_ms(), None);

        let idle = core(StompConfig {
            idle_timeout_ms: 1000,
            ..StompConfig::default()
        });
        // Before CONNECT the connect timeout alone bounds silence.
        let waiting = client(&idle);
        let opened = waiting.connection.next_deadline_ms().unwrap();
        assert!(opened >= now_ms() + 59_000, "{opened}");

        let mut c = Client::connect(&idle, "1.2");
        let deadline = c.connection.next_deadline_ms().unwrap();
        assert!(deadline <= now_ms() + 1000);
        assert_eq!(c.connection.on_tick(deadline - 1), Flow::Open);
        assert!(c.frames().is_empty());
        assert_eq!(c.connection.on_tick(deadline), Flow::Closed);
        let error = c.last();
        assert_eq!(error.get("message"), Some("Idle timeout"));
        assert!(String::from_utf8_lossy(&error.body).contains("idle_timeout_ms"));
        assert_eq!(c.sink.closed_with(), Some((4408, "Idle timeout".into())));
        assert_eq!(
            idle.stats
                .idle_timeouts
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn a_kick_sends_error_then_closes_with_its_code_and_leaves_presence() {
        let core = core(StompConfig::default());
        let mut c = client(&core);
        let kick = Kick {
            code: 4001,
            reason: "account suspended".into(),
        };
        assert_eq!(c.connection.kick(kick.clone()), Flow::Closed);
        assert!(c.frames().is_empty(), "nothing to kick before CONNECTED");
        c.feed("CONNECT\naccept-version:1.2\nlogin:mallory\n\n\0SUBSCRIBE\nid:0\ndestination:/topic/a\n\n\0");
        assert!(c.connection.control().is_some());
        assert_eq!(core.presence.session_count(), 1);
        c.sink.clear();
        let mut events = core.events.subscribe();
        assert_eq!(c.connection.kick(kick), Flow::Closed);
        let error = c.last();
        assert_eq!(error.command, Command::Error);
        assert_eq!(error.get("message"), Some("account suspended"));
        assert_eq!(
            c.sink.closed_with(),
            Some((4001, "account suspended".into()))
        );
        assert_eq!(core.presence.session_count(), 0);
        assert_eq!(core.presence.destination_count(), 0);
        c.connection.finish(None);
        match events.try_recv().unwrap() {
            StompEvent::Disconnect { cause, code, .. } => {
                assert_eq!((cause, code), (DisconnectCause::Kicked, 4001))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn events_fire_once_each() {
        let core = core(StompConfig::default());
        let mut events = core.events.subscribe();
        let mut c = client(&core);
        c.feed("CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:0\ndestination:/topic/a\n\n\0UNSUBSCRIBE\nid:0\n\n\0DISCONNECT\n\n\0");
        c.connection.finish(None);
        let mut kinds = Vec::new();
        while let Ok(event) = events.try_recv() {
            kinds.push(match event {
                StompEvent::Connect { .. } => "connect",
                StompEvent::Connected { .. } => "connected",
                StompEvent::Subscribe { .. } => "subscribe",
                StompEvent::Unsubscribe { .. } => "unsubscribe",
                StompEvent::Disconnect { cause, .. } => {
                    assert_eq!(cause, DisconnectCause::Disconnect);
                    "disconnect"
                }
            });
        }
        assert_eq!(
            kinds,
            [
                "connect",
                "connected",
                "subscribe",
                "unsubscribe",
                "disconnect"
            ]
        );
    }
}
