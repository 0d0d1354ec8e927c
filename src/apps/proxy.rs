//! `app = "proxy"`: every session is relayed to its own connection to an upstream WebSocket
//! server, so any WebSocket backend (RabbitMQ Web-STOMP, a chat server, ...) is reachable
//! over every SockJS transport and raw WebSocket.
//!
//! One task per session: it opens the upstream connection when the session opens (bounded by
//! `connect_timeout_ms`), then relays messages both ways in order until either side closes,
//! and maps the close across (see [`client_close`] and [`upstream_close`]). Neither direction
//! buffers without bound:
//!
//! * upstream → client: an upstream message is read only when the previous one found room in
//!   the session's outbound queue (`max_queued_bytes`); while the client is slow the upstream
//!   is simply not read, and TCP pushes back on it. The proxy never discards a message.
//! * client → upstream: one client message at a time is handed to the upstream socket; while
//!   the socket does not take it, the session's bounded inbound queue fills and the carriers
//!   stop reading their clients. A write that makes no progress for `send_time_limit` ends the
//!   session with 1011 "Upstream stopped reading", as a client that stops reading is ended.
//!
//! Reads from the upstream go on while a write to it is blocked, so an upstream that only
//! reads once its own writes drain (an echo server) cannot deadlock with the proxy.

use std::future::poll_fn;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{HeaderName, HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::session::{
    App, CloseCause, CloseInfo, Inbound, OutMessage, SessionEvent, SessionHandle, SessionInfo,
    SessionSender, TransportKind,
};

/// The close a client gets when the upstream cannot be reached (refused, timed out, TLS or
/// handshake failure); the log line says which.
pub const UNAVAILABLE: (u16, &str) = (1011, "Upstream unavailable");
/// The close a client gets when the upstream connection ends without a close frame.
pub const CONNECTION_LOST: (u16, &str) = (1011, "Upstream connection lost");
/// The close a client gets when the upstream stops reading for `send_time_limit`.
pub const STALLED: (u16, &str) = (1011, "Upstream stopped reading");
/// The close a client gets when an upstream message exceeds `max_queued_bytes`.
pub const TOO_BIG: (u16, &str) = (1009, "Upstream message too big");
/// The close a text-only transport's client gets for a binary upstream message that is not
/// UTF-8 (binary messages that are UTF-8 are delivered as text).
pub const BINARY: (u16, &str) = (1003, "Binary message from upstream");

/// The default `connect_timeout_ms`.
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// The longest `connect_timeout_ms` accepted (ten minutes).
const MAX_CONNECT_TIMEOUT_MS: u64 = 600_000;
/// The upstream socket's read buffer: small, since most proxied sessions are idle (it grows
/// for a larger frame while that frame is read).
const READ_BUFFER: usize = 512;
/// Client messages queued together are coalesced into one write up to this many bytes.
const WRITE_COALESCE: usize = 16 * 1024;
/// How long the upstream closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// A WebSocket close reason carries at most 123 bytes (RFC 6455 §5.5).
const MAX_CLOSE_REASON: usize = 123;

/// Headers the proxy owns in the upstream handshake, so `forward_headers` may not name them.
const NOT_FORWARDABLE: &[&str] = &[
    "host",
    "connection",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-accept",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "x-forwarded-for",
    "x-forwarded-proto",
    "forwarded",
];

/// The proxy's keys of a `[[service]]`. The service section (`sockjs::config`) reads them
/// next to `prefix`; the composer hands them here, where they are checked and used. Every key
/// is optional in the file; `upstream` is required when `app = "proxy"`, and none may be set
/// for another app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The upstream WebSocket URL, `ws://` or `wss://`.
    pub upstream: Option<String>,
    /// Subprotocols offered upstream (a raw WebSocket client picks among them in its own
    /// handshake); unset: the one a raw WebSocket client asked for is passed through.
    pub upstream_subprotocols: Option<Vec<String>>,
    /// Request headers of the opening request copied into the upstream handshake.
    pub forward_headers: Option<Vec<String>>,
    /// How long opening the upstream connection may take (TCP, TLS and handshake), in ms.
    pub connect_timeout_ms: Option<u64>,
    /// A PEM file of the CA certificates a `wss://` upstream is verified against, instead of
    /// the built-in public roots (relative to the config file's directory).
    pub upstream_ca_file: Option<PathBuf>,
}

/// A proxy key that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct ProxyConfigError {
    /// The offending key, as written in the file.
    pub key: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

fn config_error(key: &'static str, message: impl Into<String>) -> ProxyConfigError {
    ProxyConfigError {
        key,
        message: message.into(),
    }
}

/// Where and how to connect: what a valid [`ProxyConfig`] resolves to.
#[derive(Clone)]
struct Target {
    /// The upstream URL.
    uri: http::Uri,
    /// The host to connect to (an IPv6 address without its brackets).
    host: String,
    /// The port (the URL's, else 80 or 443).
    port: u16,
    /// rustls with the configured roots for `wss://`; None for `ws://`.
    tls: Option<TlsConnector>,
    /// The subprotocols to offer; None: pass the client's through.
    subprotocols: Option<Vec<String>>,
    /// Lower-case names of the headers to forward.
    forward: Vec<HeaderName>,
    /// How long a connection attempt may take.
    connect_timeout: Duration,
}

impl ProxyConfig {
    /// Whether any proxy key is set.
    fn is_set(&self) -> bool {
        self != &ProxyConfig::default()
    }

    /// Check the keys for a service whose app is `app`; relative file names resolve against
    /// `base_dir`. Reads the CA file, so a bad one is reported by `check-config`.
    pub fn validate(&self, app: &str, base_dir: &Path) -> Result<(), ProxyConfigError> {
        match app {
            "proxy" => self.target(base_dir).map(drop),
            _ if self.is_set() => Err(config_error(
                "upstream",
                format!(
                    "proxy keys (upstream, upstream_subprotocols, forward_headers, \
                     connect_timeout_ms, upstream_ca_file) need app = \"proxy\", not {app:?}"
                ),
            )),
            _ => Ok(()),
        }
    }

    fn target(&self, base_dir: &Path) -> Result<Target, ProxyConfigError> {
        let Some(url) = &self.upstream else {
            return Err(config_error(
                "upstream",
                "required for app = \"proxy\": the WebSocket URL to relay to, e.g. \
                 \"ws://127.0.0.1:15674/ws\"",
            ));
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e| config_error("upstream", format!("{url:?} is not a URL: {e}")))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => {
                return Err(config_error(
                    "upstream",
                    format!("{url:?} must start with ws:// or wss://"),
                ));
            }
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(config_error("upstream", format!("{url:?} has no host")));
        }
        // The same check the connection will make, so a URL it would refuse fails here.
        uri.clone()
            .into_client_request()
            .map_err(|e| config_error("upstream", format!("{url:?}: {e}")))?;
        let host = uri.host().unwrap_or_default();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let connector = match (tls, &self.upstream_ca_file) {
            (true, ca) => Some(TlsConnector::from(tls_config(ca.as_deref(), base_dir)?)),
            (false, None) => None,
            (false, Some(_)) => {
                return Err(config_error(
                    "upstream_ca_file",
                    "only applies to a wss:// upstream",
                ));
            }
        };
        if let Some(protocols) = &self.upstream_subprotocols {
            for p in protocols {
                if p.is_empty() || !p.bytes().all(is_token_byte) {
                    return Err(config_error(
                        "upstream_subprotocols",
                        format!("{p:?} is not a subprotocol name (letters, digits, . _ - etc.)"),
                    ));
                }
            }
        }
        let mut forward = Vec::new();
        for name in self.forward_headers.iter().flatten() {
            let lower = name.to_ascii_lowercase();
            let header = HeaderName::from_bytes(lower.as_bytes()).map_err(|_| {
                config_error("forward_headers", format!("{name:?} is not a header name"))
            })?;
            if NOT_FORWARDABLE.contains(&lower.as_str()) {
                return Err(config_error(
                    "forward_headers",
                    format!(
                        "{name:?} is set by the proxy itself for the upstream handshake \
                         (X-Forwarded-For, X-Forwarded-Proto and Forwarded are always added; \
                         use upstream_subprotocols for Sec-WebSocket-Protocol)"
                    ),
                ));
            }
            if !forward.contains(&header) {
                forward.push(header);
            }
        }
        let ms = self
            .connect_timeout_ms
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS);
        if !(1..=MAX_CONNECT_TIMEOUT_MS).contains(&ms) {
            return Err(config_error(
                "connect_timeout_ms",
                format!("must be from 1 to {MAX_CONNECT_TIMEOUT_MS} (milliseconds)"),
            ));
        }
        Ok(Target {
            uri,
            host,
            port,
            tls: connector,
            subprotocols: self.upstream_subprotocols.clone(),
            forward,
            connect_timeout: Duration::from_millis(ms),
        })
    }
}

/// A byte of an HTTP token (RFC 9110 §5.6.2), which a subprotocol name is.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The rustls client configuration for a `wss://` upstream: the CA file's certificates, or
/// the public web PKI roots.
fn tls_config(
    ca_file: Option<&Path>,
    base_dir: &Path,
) -> Result<Arc<rustls::ClientConfig>, ProxyConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(file) => {
            let path = base_dir.join(file);
            let bad = |e: &dyn std::fmt::Display| {
                config_error(
                    "upstream_ca_file",
                    format!("cannot read CA certificates from {}: {e}", path.display()),
                )
            };
            for cert in CertificateDer::pem_file_iter(&path).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            if roots.is_empty() {
                return Err(bad(&"the file holds no PEM CERTIFICATE"));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error("upstream", format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The per-service limits the proxy applies to the upstream side, the same a client gets.
#[derive(Debug, Clone, Copy)]
pub struct ProxyLimits {
    /// The service's `max_queued_bytes`: also the largest upstream message accepted.
    pub max_queued_bytes: usize,
    /// The service's `max_inbound_bytes`: the largest client message, which bounds what one
    /// write to the upstream holds.
    pub max_inbound_bytes: usize,
    /// The service's `send_time_limit`: how long a write to the upstream may make no
    /// progress.
    pub send_time_limit: Duration,
    /// The scheme clients reach the gateway with (`https` when its listener has TLS), for
    /// X-Forwarded-Proto and Forwarded when no proxy in front said otherwise.
    pub scheme: &'static str,
}

/// The proxy application of one service.
pub struct Proxy {
    /// Shared by every session's task.
    shared: Arc<Shared>,
    /// Headers the sessions must capture: the forwarded ones and `forwarded` (to extend it).
    captured: Vec<String>,
}

/// What every session's task reads.
struct Shared {
    /// Where to connect.
    target: Target,
    /// The upstream socket's limits.
    ws_config: WebSocketConfig,
    /// The service limits.
    limits: ProxyLimits,
}

impl Proxy {
    /// The proxy a service's keys describe.
    pub fn new(
        config: &ProxyConfig,
        limits: ProxyLimits,
        base_dir: &Path,
    ) -> Result<Self, ProxyConfigError> {
        let target = config.target(base_dir)?;
        let mut captured: Vec<String> = target.forward.iter().map(|h| h.to_string()).collect();
        captured.push("forwarded".into());
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_COALESCE)
            // One client message at a time is written, on top of what is being coalesced
            // (and a control frame or two).
            .max_write_buffer_size(WRITE_COALESCE + limits.max_inbound_bytes + 4096)
            .max_message_size(Some(limits.max_queued_bytes))
            .max_frame_size(Some(limits.max_queued_bytes));
        Ok(Proxy {
            shared: Arc::new(Shared {
                target,
                ws_config,
                limits,
            }),
            captured,
        })
    }
}

impl App for Proxy {
    fn on_session(&self, session: SessionHandle) {
        tokio::spawn(relay(session, self.shared.clone()));
    }

    /// With `upstream_subprotocols`, the first listed one the client offers (exactly as
    /// offered); without, the client's first choice, which is then offered upstream.
    fn select_subprotocol(&self, offered: &[String]) -> Option<String> {
        match &self.shared.target.subprotocols {
            Some(listed) => listed.iter().find(|p| offered.contains(p)).cloned(),
            None => offered.first().cloned(),
        }
    }

    fn captured_headers(&self) -> &[String] {
        &self.captured
    }
}

impl Shared {
    /// The upstream handshake request for a session: the subprotocol offer, the forwarded
    /// headers, and X-Forwarded-For, X-Forwarded-Proto and Forwarded for the client.
    fn request(&self, info: &SessionInfo) -> Result<http::Request<()>, WsError> {
        let mut req = self.target.uri.clone().into_client_request()?;
        let h = req.headers_mut();
        let offer = match (&info.subprotocol, &self.target.subprotocols) {
            (Some(agreed), _) => Some(agreed.clone()),
            (None, Some(listed)) if !listed.is_empty() => Some(listed.join(", ")),
            (None, _) => None,
        };
        if let Some(offer) = offer.and_then(|o| HeaderValue::from_str(&o).ok()) {
            h.insert(SEC_WEBSOCKET_PROTOCOL, offer);
        }
        for name in &self.target.forward {
            for value in values(info, name.as_str()) {
                if let Ok(value) = HeaderValue::from_str(value) {
                    h.append(name.clone(), value);
                }
            }
        }
        for (name, value) in forwarding_headers(info, self.limits.scheme) {
            if let Ok(value) = HeaderValue::from_str(&value) {
                h.insert(name, value);
            }
        }
        Ok(req)
    }

    /// Open the upstream connection for a session: TCP (with TLS for `wss://`), then the
    /// WebSocket handshake. The stream is boxed behind one pointer, so an idle session does
    /// not carry a TLS connection's state inline when its upstream is plain `ws://`.
    async fn connect(&self, info: &SessionInfo) -> Result<Upstream, WsError> {
        let request = self.request(info)?;
        let tcp = TcpStream::connect((self.target.host.as_str(), self.target.port)).await?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn UpstreamIo> = match &self.target.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(self.target.host.clone())
                    .map_err(|e| WsError::Io(std::io::Error::other(e)))?;
                Box::new(tls.connect(name, tcp).await?)
            }
        };
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(request, io, Some(self.ws_config)).await?;
        Ok(ws)
    }
}

/// Every captured value of a header, in request order.
fn values<'a>(info: &'a SessionInfo, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    info.headers
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// X-Forwarded-For (the client's chain plus its address), X-Forwarded-Proto (as a proxy in
/// front of the gateway said, else the gateway's own `scheme`) and Forwarded (RFC 7239: the
/// client's chain plus this hop, with the scheme the client used to reach the gateway).
fn forwarding_headers(info: &SessionInfo, scheme: &str) -> [(HeaderName, String); 3] {
    let ip = info.remote_addr.ip();
    let join = |name: &str, last: String| {
        let mut chain: Vec<&str> = values(info, name).collect();
        chain.push(&last);
        chain.join(", ")
    };
    let xff = join("x-forwarded-for", ip.to_string());
    let proto = values(info, "x-forwarded-proto")
        .next()
        .map(|p| p.split(',').next().unwrap_or(p).trim().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| scheme.into());
    let node = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let mut element = format!("for={node}");
    if let Some(host) = values(info, "host").next() {
        element.push_str(";host=");
        element.push_str(&quoted(host));
    }
    element.push_str(";proto=");
    element.push_str(scheme);
    let forwarded = join("forwarded", element);
    [
        (HeaderName::from_static("x-forwarded-for"), xff),
        (HeaderName::from_static("x-forwarded-proto"), proto),
        (HeaderName::from_static("forwarded"), forwarded),
    ]
}

/// An RFC 7230 quoted-string.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The SockJS close (code, reason) for the way the upstream closed: its close frame passed
/// through; no code (1005 on the wire) becomes 1000, as it is a normal closure; a code that
/// may not appear in a close frame (1004-1006, 1015, 1016-2999, 5000+) becomes 1011 naming
/// it. Every transport, raw WebSocket included, gets the same.
pub fn client_close(frame: Option<&CloseFrame>) -> (u16, String) {
    let Some(frame) = frame else {
        return (1000, "Normal closure".into());
    };
    let code = u16::from(frame.code);
    match code {
        1000..=1003 | 1007..=1014 | 3000..=4999 => (code, frame.reason.to_string()),
        1005 => (1000, "Normal closure".into()),
        1006 => (CONNECTION_LOST.0, CONNECTION_LOST.1.into()),
        _ => (1011, format!("Upstream closed with code {code}")),
    }
}

/// The upstream close frame for the way the session ended: 1000 when the client closed (or
/// the proxy itself did), 1001 "going away" for everything else (disconnect delay, limits,
/// shutdown), with the session's reason, cut to what a close frame carries.
pub fn upstream_close(info: &CloseInfo) -> CloseFrame {
    let code = match info.cause {
        CloseCause::Client | CloseCause::Application => CloseCode::Normal,
        _ => CloseCode::Away,
    };
    let mut end = info.reason.len().min(MAX_CLOSE_REASON);
    while !info.reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: info.reason[..end].to_owned().into(),
    }
}

/// The byte stream under an upstream connection: TCP, or TLS over TCP.
trait UpstreamIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> UpstreamIo for T {}

/// The upstream connection.
type Upstream = WebSocketStream<Box<dyn UpstreamIo>>;

/// How a relay ended.
enum End {
    /// The session ended (or began closing): close the upstream with this.
    Session(CloseInfo),
    /// The upstream closed: close the session with (code, reason); the upstream's close
    /// handshake is completed.
    Upstream(u16, String),
    /// The proxy ends both: the session with `client`, the upstream with `upstream` (None:
    /// the connection is just dropped, it can take nothing more).
    Both {
        client: (u16, &'static str),
        upstream: Option<CloseFrame>,
    },
}

/// One step of the upstream socket.
enum Step {
    /// A write was handed over or flushed; nothing to act on.
    Progress,
    /// A message from the upstream.
    Message(Message),
    /// The upstream connection failed or ended.
    Failed(Option<WsError>),
}

/// The upstream side of a relay.
struct Relay {
    /// The upstream socket.
    ws: Upstream,
    /// A client message waiting for the upstream socket to take it.
    to_upstream: Option<Message>,
    /// Messages taken by the socket but not yet flushed.
    unflushed: bool,
    /// An upstream message waiting for room in the session's queue.
    to_client: Option<OutMessage>,
    /// When the upstream last made write progress while a write was pending, for
    /// `send_time_limit`; None when nothing is pending.
    write_since: Option<Instant>,
}

impl Relay {
    /// Queue a client message for the upstream.
    fn push(&mut self, msg: Inbound) {
        self.to_upstream = Some(match msg {
            Inbound::Text(text) => Message::Text(Utf8Bytes::from(text)),
            Inbound::Binary(bytes) => Message::Binary(bytes),
        });
        self.write_since.get_or_insert_with(Instant::now);
    }

    /// Drive the socket: hand over the pending client message (or flush what was handed
    /// over), then read the next upstream message if there is room for one.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        let mut progressed = false;
        if self.to_upstream.is_some() {
            match self.ws.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {
                    if let Some(msg) = self.to_upstream.take()
                        && let Err(e) = self.ws.start_send_unpin(msg)
                    {
                        return Poll::Ready(Step::Failed(Some(e)));
                    }
                    self.unflushed = true;
                    self.write_since = Some(Instant::now());
                    progressed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Step::Failed(Some(e))),
                Poll::Pending => {}
            }
        } else if self.unflushed {
            match self.ws.poll_flush_unpin(cx) {
                Poll::Ready(Ok(())) => {
                    self.unflushed = false;
                    self.write_since = None;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Step::Failed(Some(e))),
                Poll::Pending => {}
            }
        }
        if self.to_client.is_none() {
            match self.ws.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(msg))) => return Poll::Ready(Step::Message(msg)),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Step::Failed(Some(e))),
                Poll::Ready(None) => return Poll::Ready(Step::Failed(None)),
                Poll::Pending => {}
            }
        }
        match progressed {
            true => Poll::Ready(Step::Progress),
            false => Poll::Pending,
        }
    }

    /// Act on an upstream message: queue it for the client, or end the relay.
    fn take(&mut self, msg: Message, binary_ok: bool) -> Option<End> {
        let out = match msg {
            Message::Text(text) => OutMessage::text_bytes(Bytes::from(text)),
            Message::Binary(bytes) if binary_ok => Some(OutMessage::binary(bytes)),
            Message::Binary(bytes) => match OutMessage::text_bytes(bytes) {
                Some(text) => Some(text),
                None => {
                    return Some(End::Both {
                        client: BINARY,
                        upstream: Some(CloseFrame {
                            code: CloseCode::Unsupported,
                            reason: "Binary message not supported by the client's transport".into(),
                        }),
                    });
                }
            },
            Message::Close(frame) => {
                let (code, reason) = client_close(frame.as_ref());
                return Some(End::Upstream(code, reason));
            }
            // tungstenite answers pings itself.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
        };
        self.to_client = out;
        None
    }
}

/// Relay one session to its own upstream connection until either side ends.
async fn relay(mut session: SessionHandle, shared: Arc<Shared>) {
    let info = session.info().clone();
    let sender = session.sender().clone();
    let id = info.log_id;
    // Connect, while noticing a client that leaves first. One client message may arrive
    // meanwhile; it waits here, and later ones wait in the session's inbound queue. The
    // connection future is boxed: it is large and lives only until the upstream answers.
    let mut early = None;
    let connected = {
        let connect = Box::pin(tokio::time::timeout(
            shared.target.connect_timeout,
            shared.connect(&info),
        ));
        tokio::pin!(connect);
        loop {
            tokio::select! {
                result = &mut connect => break result,
                event = session.recv(), if early.is_none() => match event {
                    Some(SessionEvent::Message(msg)) => early = Some(msg),
                    _ => {
                        tracing::debug!(session = id, "session ended before the upstream answered");
                        return;
                    }
                },
            }
        }
    };
    let ws = match connected {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::warn!(session = id, upstream = %shared.target.uri, error = %e, "upstream connection failed");
            sender.close(UNAVAILABLE.0, UNAVAILABLE.1);
            return;
        }
        Err(_) => {
            tracing::warn!(session = id, upstream = %shared.target.uri, timeout_ms = shared.target.connect_timeout.as_millis() as u64, "upstream connection timed out");
            sender.close(UNAVAILABLE.0, UNAVAILABLE.1);
            return;
        }
    };
    tracing::debug!(session = id, upstream = %shared.target.uri, "upstream connected");
    let mut relay = Relay {
        ws,
        to_upstream: None,
        unflushed: false,
        to_client: None,
        write_since: None,
    };
    if let Some(msg) = early {
        relay.push(msg);
    }
    let end = pump(&mut session, &sender, &mut relay, &shared, &info).await;
    // Boxed: the closing handshake's state lives only while it runs, not in every idle task.
    Box::pin(finish(relay.ws, &sender, end, id)).await;
}

/// Relay messages until one side ends.
async fn pump(
    session: &mut SessionHandle,
    sender: &SessionSender,
    relay: &mut Relay,
    shared: &Shared,
    info: &SessionInfo,
) -> End {
    let binary_ok = info.transport == TransportKind::RawWebsocket;
    let limit = shared.limits.send_time_limit;
    // One timer, armed when a write starts to wait and re-read when it fires, so a busy
    // relay does not touch a timer per message.
    let stall = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(stall);
    let mut stall_armed = false;
    loop {
        if let (Some(since), false) = (relay.write_since, stall_armed) {
            stall.as_mut().reset(since + limit);
            stall_armed = true;
        }
        let waiting = relay.to_client.as_ref().map(OutMessage::len);
        tokio::select! {
            // Client messages first, so a batch of them goes out in one write.
            biased;
            event = session.recv(), if relay.to_upstream.is_none() => match event {
                Some(SessionEvent::Message(msg)) => relay.push(msg),
                Some(SessionEvent::Closed(info)) => return End::Session(info),
                None => return End::Session(CloseInfo {
                    code: 1000,
                    reason: "Normal closure".into(),
                    cause: CloseCause::Client,
                }),
            },
            step = poll_fn(|cx| relay.poll(cx)) => match step {
                Step::Progress => {}
                Step::Message(msg) => {
                    if let Some(end) = relay.take(msg, binary_ok) {
                        return end;
                    }
                }
                Step::Failed(Some(WsError::Capacity(_))) => return End::Both {
                    client: TOO_BIG,
                    upstream: Some(CloseFrame {
                        code: CloseCode::Size,
                        reason: "Message larger than the client's queue".into(),
                    }),
                },
                Step::Failed(e) => {
                    tracing::info!(session = info.log_id, error = ?e, "upstream connection lost");
                    return End::Both { client: CONNECTION_LOST, upstream: None };
                }
            },
            // Room for the waiting upstream message, or (when none waits) the session
            // beginning to close.
            room = sender.room(waiting) => match room {
                Ok(()) => {
                    if let Some(msg) = relay.to_client.take() {
                        // Sends fail only once the session is closing, which the next
                        // iteration learns.
                        let _ = sender.send(msg);
                    }
                }
                Err(info) => return End::Session(info),
            },
            _ = &mut stall, if stall_armed => {
                stall_armed = false;
                if relay.write_since.is_some_and(|since| since + limit <= Instant::now()) {
                    tracing::warn!(session = info.log_id, "upstream stopped reading; send time limit exceeded");
                    return End::Both { client: STALLED, upstream: None };
                }
            }
        }
    }
}

/// Close both sides as the relay's end says.
async fn finish(mut ws: Upstream, sender: &SessionSender, end: End, id: u64) {
    let upstream = match end {
        End::Session(info) => {
            tracing::debug!(session = id, code = info.code, cause = ?info.cause, "session ended; closing upstream");
            Some(upstream_close(&info))
        }
        End::Upstream(code, reason) => {
            tracing::debug!(session = id, code, reason = %reason, "upstream closed");
            sender.close(code, &reason);
            // Answers the upstream's close frame (tungstenite queued the reply).
            None
        }
        End::Both { client, upstream } => {
            sender.close(client.0, client.1);
            match upstream {
                Some(frame) => Some(frame),
                None => return,
            }
        }
    };
    // Send the close (after whatever was still buffered) and wait briefly for the answer.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.close(upstream).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(headers: &[(&str, &str)], addr: &str) -> SessionInfo {
        SessionInfo {
            log_id: 1,
            transport: TransportKind::XhrStreaming,
            remote_addr: addr.parse().unwrap(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            url: "/ws/1/2/xhr_streaming".into(),
            principal: None,
            subprotocol: None,
        }
    }

    fn frame(code: u16, reason: &str) -> CloseFrame {
        CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_owned().into(),
        }
    }

    #[test]
    fn upstream_close_codes_map_to_sendable_ones() {
        assert_eq!(client_close(None), (1000, "Normal closure".into()));
        assert_eq!(client_close(Some(&frame(1000, ""))), (1000, "".into()));
        assert_eq!(
            client_close(Some(&frame(4001, "bye now"))),
            (4001, "bye now".into())
        );
        assert_eq!(
            client_close(Some(&frame(1008, "policy"))),
            (1008, "policy".into())
        );
        assert_eq!(client_close(Some(&frame(1005, ""))).0, 1000);
        assert_eq!(
            client_close(Some(&frame(1006, ""))),
            (1011, "Upstream connection lost".into())
        );
        assert_eq!(
            client_close(Some(&frame(1015, ""))),
            (1011, "Upstream closed with code 1015".into())
        );
        assert_eq!(client_close(Some(&frame(2500, "x"))).0, 1011);
    }

    #[test]
    fn session_ends_map_to_1000_or_1001() {
        let close = |cause, reason: &str| {
            upstream_close(&CloseInfo {
                code: 4500,
                reason: reason.into(),
                cause,
            })
        };
        assert_eq!(
            close(CloseCause::Client, "Normal closure").code,
            CloseCode::Normal
        );
        for cause in [
            CloseCause::Timeout,
            CloseCause::Interrupted,
            CloseCause::Protocol,
            CloseCause::SendLimit,
            CloseCause::Shutdown,
        ] {
            assert_eq!(close(cause, "x").code, CloseCode::Away, "{cause:?}");
        }
        let long = "é".repeat(100);
        let cut = close(CloseCause::Timeout, &long);
        assert!(cut.reason.len() <= 123 && long.starts_with(cut.reason.as_str()));
    }

    #[test]
    fn forwarding_headers_extend_the_client_chain() {
        let i = info(
            &[
                ("host", "gw.example:8080"),
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("forwarded", "for=203.0.113.7;proto=https"),
            ],
            "10.1.2.3:5555",
        );
        let [xff, proto, fwd] = forwarding_headers(&i, "http");
        assert_eq!(xff.1, "203.0.113.7, 10.1.2.3");
        assert_eq!(proto.1, "https");
        assert_eq!(
            fwd.1,
            "for=203.0.113.7;proto=https, for=10.1.2.3;host=\"gw.example:8080\";proto=http"
        );
        let i = info(&[], "[::1]:5555");
        let [xff, proto, fwd] = forwarding_headers(&i, "http");
        assert_eq!(xff.1, "::1");
        assert_eq!(proto.1, "http");
        assert_eq!(fwd.1, "for=\"[::1]\";proto=http");
        // Behind the gateway's own TLS, with no proxy in front, both say https.
        let [_, proto, fwd] = forwarding_headers(&i, "https");
        assert_eq!(proto.1, "https");
        assert_eq!(fwd.1, "for=\"[::1]\";proto=https");
    }

    /// The proxy keys of a `[[service]]` written as `toml_text`.
    fn config(toml_text: &str) -> ProxyConfig {
        let service: crate::config::ServiceConfig = toml::from_str(toml_text).unwrap();
        crate::config::proxy_config(&service)
    }

    #[test]
    fn keys_are_checked_and_named() {
        let dir = Path::new(".");
        let err = |c: &str, app: &str| config(c).validate(app, dir).unwrap_err();
        assert_eq!(err("", "proxy").key, "upstream");
        assert_eq!(err("upstream = \"http://x/\"", "proxy").key, "upstream");
        assert_eq!(err("upstream = \"ws://x/\"", "echo").key, "upstream");
        assert_eq!(
            err(
                "upstream = \"ws://x/\"\nforward_headers = [\"Host\"]",
                "proxy"
            )
            .key,
            "forward_headers"
        );
        assert_eq!(
            err(
                "upstream = \"ws://x/\"\nforward_headers = [\"a b\"]",
                "proxy"
            )
            .key,
            "forward_headers"
        );
        assert_eq!(
            err(
                "upstream = \"ws://x/\"\nupstream_subprotocols = [\"a,b\"]",
                "proxy"
            )
            .key,
            "upstream_subprotocols"
        );
        assert_eq!(
            err("upstream = \"ws://x/\"\nconnect_timeout_ms = 0", "proxy").key,
            "connect_timeout_ms"
        );
        assert_eq!(
            err(
                "upstream = \"ws://x/\"\nupstream_ca_file = \"ca.pem\"",
                "proxy"
            )
            .key,
            "upstream_ca_file"
        );
        let e = err(
            "upstream = \"wss://x/\"\nupstream_ca_file = \"/nonexistent.pem\"",
            "proxy",
        );
        assert!(e.message.contains("/nonexistent.pem"), "{e}");
        config("upstream = \"wss://x:8443/ws\"")
            .validate("proxy", dir)
            .unwrap();
        config("").validate("echo", dir).unwrap();
        let type_error =
            toml::from_str::<crate::config::ServiceConfig>("connect_timeout_ms = \"5\"")
                .unwrap_err()
                .to_string();
        assert!(type_error.contains("connect_timeout_ms"), "{type_error}");
    }

    #[test]
    fn the_handshake_offers_what_was_agreed_or_configured() {
        let proxy = |c: &str| {
            let limits = ProxyLimits {
                max_queued_bytes: 1024,
                max_inbound_bytes: 1024,
                send_time_limit: Duration::from_secs(1),
                scheme: "http",
            };
            Proxy::new(&config(c), limits, Path::new(".")).unwrap()
        };
        let offered = vec!["v10.stomp".to_string(), "v12.stomp".to_string()];
        let listed = proxy(
            "upstream = \"ws://x/\"\nupstream_subprotocols = [\"v12.stomp\", \"v11.stomp\"]\nforward_headers = [\"Cookie\", \"X-Request-Id\"]",
        );
        assert_eq!(
            listed.select_subprotocol(&offered).as_deref(),
            Some("v12.stomp")
        );
        assert_eq!(listed.select_subprotocol(&["mqtt".into()]), None);
        assert_eq!(
            listed.captured_headers(),
            ["cookie", "x-request-id", "forwarded"]
        );
        let passthrough = proxy("upstream = \"ws://x/\"");
        assert_eq!(
            passthrough.select_subprotocol(&offered).as_deref(),
            Some("v10.stomp")
        );

        let mut i = info(
            &[
                ("cookie", "a=1"),
                ("x-request-id", "r1"),
                ("authorization", "Bearer t"),
            ],
            "127.0.0.1:9",
        );
        let req = listed.shared.request(&i).unwrap();
        let h = req.headers();
        assert_eq!(h["sec-websocket-protocol"], "v12.stomp, v11.stomp");
        assert_eq!(h["cookie"], "a=1");
        assert_eq!(h["x-request-id"], "r1");
        assert!(
            h.get("authorization").is_none(),
            "only listed headers are forwarded"
        );
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        i.subprotocol = Some("v11.stomp".into());
        let req = listed.shared.request(&i).unwrap();
        assert_eq!(req.headers()["sec-websocket-protocol"], "v11.stomp");
        let req = passthrough
            .shared
            .request(&info(&[], "127.0.0.1:9"))
            .unwrap();
        assert!(req.headers().get("sec-websocket-protocol").is_none());
    }
}
