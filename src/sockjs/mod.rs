//! A SockJS *service*: a prefix, its options and its application, and the routing table of
//! sockjs.md §1 that maps a request under the prefix to a handler.
//!
//! Routing works on the raw path (no percent-decoding), and every route accepts one
//! optional trailing `/`.

pub mod config;
pub mod frame;
pub mod http;
pub mod limits;
pub mod registry;
pub mod session;
pub mod stats;
pub mod transport;

mod iframe;
mod info;
mod welcome;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::http::{HeaderMap, Method, Request, StatusCode, header};

use self::config::{ServiceConfig, Transport};
use self::http::{HttpRequest, HttpResponse, method_not_allowed, not_found};
use self::limits::{Admission, Maxima, SessionLimiter};
use self::registry::Registry;
use self::session::{Session, SessionLimits};
use crate::auth::{AuthError, Authenticator};
use crate::session::{App, CAPTURED_HEADERS, Principal, SessionInfo, TransportKind, next_log_id};

/// The longest server or session id accepted (a defensive limit, §1.2).
const MAX_ID_LEN: usize = 256;

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
}

/// Who sent a session request: its connection and the principal its token names.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client's address.
    pub addr: SocketAddr,
    /// The principal of a verified handshake token, if one was presented.
    pub principal: Option<Arc<Principal>>,
    /// The request's JSESSIONID cookie, when the service uses one.
    pub jsessionid: Option<String>,
}

/// One SockJS service.
pub struct Service {
    /// The service's options.
    config: ServiceConfig,
    /// The application every session of this service is handed to.
    app: Arc<dyn App>,
    /// HTTP-transport sessions by id.
    registry: Arc<Registry>,
    /// The iframe page, rendered once.
    iframe: iframe::IframePage,
    /// What each session is limited to.
    limits: SessionLimits,
    /// Verifies handshake tokens.
    auth: Arc<Authenticator>,
    /// Counts live sessions against the configured maxima.
    limiter: Arc<SessionLimiter>,
    /// The service's counters, read by the admin listener.
    stats: Arc<stats::ServiceStats>,
    /// Cleared when the server starts draining: new sessions are refused from then on.
    accepting: std::sync::atomic::AtomicBool,
}

/// A route under the prefix.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Greeting,
    Info,
    Iframe,
    RawWebsocket,
    Session {
        /// The session id (`I`); the server id is ignored.
        session_id: &'a str,
        /// The transport segment.
        transport: &'a str,
    },
}

impl Service {
    /// A service serving `app` with `config`.
    pub fn new(config: ServiceConfig, app: Arc<dyn App>, auth: Arc<Authenticator>) -> Arc<Self> {
        let tick =
            (config.disconnect_delay / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        Arc::new(Service {
            iframe: iframe::IframePage::new(&config.sockjs_url),
            limits: SessionLimits {
                disconnect_delay: config.disconnect_delay,
                max_queued_bytes: config.max_queued_bytes,
                overflow: config.overflow_strategy,
                max_messages_per_second: config.max_messages_per_second,
                idle_timeout: config.idle_timeout,
            },
            limiter: SessionLimiter::new(Maxima {
                total: config.max_sessions,
                per_ip: config.max_sessions_per_ip,
                per_principal: config.max_sessions_per_principal,
            }),
            registry: Registry::new(tick),
            stats: Arc::default(),
            accepting: std::sync::atomic::AtomicBool::new(true),
            config,
            app,
            auth,
        })
    }

    /// The mount path.
    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }

    /// The service's options.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The subprotocol a WebSocket handshake agrees to, from those the client offers.
    pub fn select_subprotocol(&self, offered: &[String]) -> Option<String> {
        self.app.select_subprotocol(offered)
    }

    /// The registry of HTTP-transport sessions.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The service's counters.
    pub fn stats(&self) -> &Arc<stats::ServiceStats> {
        &self.stats
    }

    /// Refuse new sessions from now on (503, `connection: close`): the server is draining.
    /// Requests for existing sessions are still served, so each can fetch its goodbye.
    pub fn stop_new_sessions(&self) {
        self.accepting
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Answer a request whose path starts with this service's prefix; `rest` is the path
    /// after the prefix (empty or starting with `/`).
    pub async fn handle(
        self: &Arc<Self>,
        req: HttpRequest,
        rest: &str,
        peer: Peer,
    ) -> HttpResponse {
        if let Some(watch) = req.extensions().get::<Arc<self::http::WriteWatch>>() {
            watch.set_limit(self.config.send_time_limit);
        }
        let Some(route) = parse_route(rest) else {
            return not_found();
        };
        if !self.origin_allowed(req.headers()) && route != Route::Greeting {
            return http::response(
                StatusCode::FORBIDDEN,
                http::TEXT_PLAIN,
                "Origin not allowed\n",
            );
        }
        let method = req.method().clone();
        match route {
            Route::Greeting => match method {
                Method::GET => welcome::greeting(),
                _ => method_not_allowed("GET"),
            },
            Route::Info => match method {
                Method::GET => info::info(&self.config, req.headers()),
                Method::OPTIONS => self::http::preflight(req.headers(), "OPTIONS, GET"),
                _ => method_not_allowed("GET, OPTIONS"),
            },
            Route::Iframe if self.iframe_enabled() => match method {
                Method::GET => self.iframe.respond(req.headers()),
                _ => method_not_allowed("GET"),
            },
            Route::Iframe => not_found(),
            Route::RawWebsocket if self.config.enabled(Transport::WebsocketRaw) => {
                match self.identify(&req, peer) {
                    Ok(client) => transport::websocket::raw(self, req, &client),
                    Err(refused) => refused,
                }
            }
            Route::RawWebsocket => not_found(),
            Route::Session {
                session_id,
                transport,
            } => {
                self.handle_session_route(req, session_id, transport, peer)
                    .await
            }
        }
    }

    async fn handle_session_route(
        self: &Arc<Self>,
        req: HttpRequest,
        sid: &str,
        transport_name: &str,
        peer: Peer,
    ) -> HttpResponse {
        use transport::{eventsource, hixie76, htmlfile, jsonp, websocket, xhr};
        let (needs, allow): (&[Transport], &'static str) = match transport_name {
            "websocket" => (&[Transport::Websocket], "GET"),
            "xhr" => (&[Transport::XhrPolling], "POST, OPTIONS"),
            "xhr_send" => (
                &[Transport::XhrPolling, Transport::XhrStreaming],
                "POST, OPTIONS",
            ),
            "xhr_streaming" => (&[Transport::XhrStreaming], "POST, OPTIONS"),
            "eventsource" => (&[Transport::Eventsource], "GET"),
            "htmlfile" => (&[Transport::Htmlfile], "GET"),
            "jsonp" => (&[Transport::JsonpPolling], "GET"),
            "jsonp_send" => (&[Transport::JsonpPolling], "POST"),
            _ => return not_found(),
        };
        if !needs.iter().any(|t| self.config.enabled(*t)) {
            return not_found();
        }
        let method = req.method();
        let allowed = allow.split(", ").any(|m| m == method.as_str());
        if !allowed {
            return method_not_allowed(allow);
        }
        if method == Method::OPTIONS {
            return self::http::preflight(req.headers(), "OPTIONS, POST");
        }
        if matches!(transport_name, "jsonp" | "jsonp_send" | "htmlfile")
            && self.auth.reads_cookie()
            && !self.page_origin_allowed(req.headers())
        {
            return http::response(
                StatusCode::FORBIDDEN,
                http::TEXT_PLAIN,
                "Origin or Referer required: with cookie authentication, jsonp and htmlfile \
                 requests must come from a page in allowed_origins\n",
            );
        }
        let client = match self.identify(&req, peer) {
            Ok(client) => client,
            Err(mut refused) => {
                if transport_name.starts_with("xhr") || transport_name == "eventsource" {
                    self::http::set_cors(req.headers(), refused.headers_mut());
                }
                return refused;
            }
        };
        let client = &client;
        match transport_name {
            "websocket" if hixie76::is_hixie76(req.headers()) => {
                hixie76::handshake(self, req, client)
            }
            "websocket" => websocket::sockjs(self, req, client),
            "xhr" => xhr::poll(self, req, sid, client).await,
            "xhr_send" => xhr::send(self, req, sid, client).await,
            "xhr_streaming" => xhr::streaming(self, req, sid, client).await,
            "eventsource" => eventsource::eventsource(self, req, sid, client).await,
            "htmlfile" => htmlfile::htmlfile(self, req, sid, client).await,
            "jsonp" => jsonp::poll(self, req, sid, client).await,
            _ => jsonp::send(self, req, sid, client).await,
        }
    }

    /// Verify the handshake token, if any. A bad token is refused with 401, and so is a
    /// missing one when anonymous access is off and the application does not authenticate
    /// in-band.
    fn identify<B>(&self, req: &Request<B>, peer: Peer) -> Result<Client, HttpResponse> {
        let unauthorized = |message: String| {
            tracing::info!(remote = %peer.addr, reason = %message, "handshake refused");
            let mut resp = http::response(
                StatusCode::UNAUTHORIZED,
                http::TEXT_PLAIN,
                format!("{message}\n"),
            );
            http::set_no_cache(resp.headers_mut());
            resp
        };
        let principal = self
            .auth
            .authenticate_handshake(req.headers(), req.uri().query())
            .map_err(|e| unauthorized(e.to_string()))?;
        if principal.is_none()
            && !self.auth.anonymous_allowed()
            && !self.app.authenticates_in_band()
        {
            return Err(unauthorized(AuthError::Missing.to_string()));
        }
        let jsessionid = self
            .config
            .cookie_needed
            .then(|| http::cookie(req.headers(), "JSESSIONID").map(str::to_string))
            .flatten();
        Ok(Client {
            addr: peer.addr,
            principal: principal.map(Arc::new),
            jsessionid,
        })
    }

    fn iframe_enabled(&self) -> bool {
        self.config.allowed_origins.is_empty()
            || self.config.allowed_origins.iter().any(|o| o == "*")
    }

    /// Whether the request's `Origin` (if any) is allowed by `allowed_origins` (§8.5).
    pub fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let patterns = &self.config.allowed_origins;
        if patterns.is_empty() {
            return true;
        }
        match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            None => true,
            Some(origin) => patterns.iter().any(|p| origin_matches(p, origin)),
        }
    }

    /// Whether a request comes from a page in `allowed_origins`, by its `Origin` or else the
    /// origin of its `Referer`. Script and iframe loads (jsonp, htmlfile) carry the page's
    /// cookies but no `Origin`, so with cookie authentication this is what stops a foreign
    /// page from opening a session as its visitor; a request with neither is refused.
    fn page_origin_allowed(&self, headers: &HeaderMap) -> bool {
        let patterns = &self.config.allowed_origins;
        let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let origin = match text(header::ORIGIN) {
            Some(origin) => origin,
            None => match text(header::REFERER).and_then(referer_origin) {
                Some(origin) => origin,
                None => return false,
            },
        };
        patterns.iter().any(|p| origin_matches(p, origin))
    }

    /// What the application learns about a client opening a session; the token query
    /// parameter's value is redacted from `url`.
    pub fn session_info(
        &self,
        transport: TransportKind,
        req_headers: &HeaderMap,
        url: String,
        client: &Client,
    ) -> SessionInfo {
        let extra = self.app.captured_headers().iter().map(String::as_str);
        let extra = extra.filter(|name| !CAPTURED_HEADERS.contains(name));
        let headers = CAPTURED_HEADERS
            .iter()
            .copied()
            .chain(extra)
            .flat_map(|name| {
                req_headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(|v| (name.to_string(), v.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        SessionInfo {
            log_id: next_log_id(),
            transport,
            remote_addr: client.addr,
            headers,
            url: self.auth.redacted_url(&url),
            principal: client.principal.clone(),
            subprotocol: None,
        }
    }

    /// A new, unregistered session (WebSocket carriers own theirs), counted against the
    /// session limits; `Err` is the 503 to answer instead.
    pub fn new_session(
        &self,
        info: SessionInfo,
        client: &Client,
    ) -> Result<Arc<Session>, HttpResponse> {
        let admission = self.admit(client)?;
        Ok(Session::new(
            info,
            self.limits.clone(),
            self.app.clone(),
            client.jsessionid.clone(),
            Some(admission),
            self.stats.clone(),
        ))
    }

    fn admit(&self, client: &Client) -> Result<Admission, HttpResponse> {
        if !self.accepting.load(std::sync::atomic::Ordering::Relaxed) {
            let mut resp = http::response(
                StatusCode::SERVICE_UNAVAILABLE,
                http::TEXT_PLAIN,
                "Server shutting down\n",
            );
            http::set_no_cache(resp.headers_mut());
            resp.headers_mut().insert(
                header::CONNECTION,
                ::http::HeaderValue::from_static("close"),
            );
            return Err(resp);
        }
        let principal = client.principal.as_ref().map(|p| p.name.as_str());
        self.limiter
            .admit(client.addr.ip(), principal)
            .map_err(|limit| {
                self.stats.refused(limit);
                tracing::debug!(remote = %client.addr, %limit, "session refused");
                let mut resp = http::response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    http::TEXT_PLAIN,
                    format!("{limit}\n"),
                );
                http::set_no_cache(resp.headers_mut());
                resp
            })
    }

    /// The live session `sid` for a receiving request, created if unknown.
    /// `Err` carries the answer to send instead (404 for a hijack attempt, 503 over a limit).
    pub fn receiver_session(
        &self,
        sid: &str,
        transport: TransportKind,
        req_headers: &HeaderMap,
        url: String,
        client: &Client,
    ) -> Result<Arc<Session>, HttpResponse> {
        let session = self.registry.get_or_create(sid, || {
            self.new_session(
                self.session_info(transport, req_headers, url, client),
                client,
            )
        })?;
        if self.owned_by(&session, client) {
            Ok(session)
        } else {
            Err(not_found())
        }
    }

    /// The live session `sid` for a send request; never creates one.
    pub fn existing_session(&self, sid: &str, client: &Client) -> Option<Arc<Session>> {
        self.registry.get(sid).filter(|s| self.owned_by(s, client))
    }

    /// The hijack check (§6.9): later requests must come from the creator's address, with
    /// the creator's principal, and (when the service uses it) the creator's JSESSIONID.
    fn owned_by(&self, session: &Session, client: &Client) -> bool {
        if !self.config.session_affinity_check {
            return true;
        }
        let info = session.info();
        let same_principal = match (&info.principal, &client.principal) {
            (Some(owner), Some(requester)) => owner.name == requester.name,
            (Some(_), None) => false,
            (None, _) => true,
        };
        let creator_cookie = session.jsessionid();
        let same_cookie =
            creator_cookie.is_none() || creator_cookie == client.jsessionid.as_deref();
        info.remote_addr.ip() == client.addr.ip() && same_principal && same_cookie
    }
}

/// Whether an `Origin` value matches an allowed-origins pattern: `*` matches anything, and a
/// `*` inside a pattern matches any run of characters (`https://*.example.com`).
fn origin_matches(pattern: &str, origin: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern.eq_ignore_ascii_case(origin);
    }
    let origin = origin.to_ascii_lowercase();
    let mut rest = origin.as_str();
    for (i, part) in parts.iter().enumerate() {
        let part = part.to_ascii_lowercase();
        if i == 0 {
            let Some(r) = rest.strip_prefix(part.as_str()) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part.as_str());
        } else {
            match rest.find(part.as_str()) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// The origin (`scheme://host[:port]`) of a `Referer` URL, if it has one.
fn referer_origin(referer: &str) -> Option<&str> {
    let (scheme, rest) = referer.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if authority_len == 0 || rest[..authority_len].contains('@') {
        return None;
    }
    Some(&referer[..scheme.len() + 3 + authority_len])
}

/// Whether an allowed-origins pattern names particular sites, as cookie authentication
/// needs: not `*`, and a host that is either literal or `*.` before a name with a dot in it
/// (`https://*.example.com`); the port may be `*`. `https://*`, `http://*:8080` or
/// `https://*.com` would let any site's pages in.
pub fn origin_pattern_is_specific(pattern: &str) -> bool {
    let rest = pattern.split_once("://").map_or(pattern, |(_, rest)| rest);
    let host = rest.split([':', '/']).next().unwrap_or("");
    match host.strip_prefix("*.") {
        Some(domain) => !domain.contains('*') && domain.contains('.') && !domain.starts_with('.'),
        None => !host.is_empty() && !host.contains('*'),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && !id.contains('.')
}

/// Map the path after the prefix to a route (§1.2).
fn parse_route(rest: &str) -> Option<Route<'_>> {
    if rest.is_empty() || rest == "/" {
        return Some(Route::Greeting);
    }
    let path = rest.strip_prefix('/')?;
    let path = path.strip_suffix('/').unwrap_or(path);
    match path {
        "info" => return Some(Route::Info),
        "websocket" => return Some(Route::RawWebsocket),
        _ => {}
    }
    if let Some(middle) = path
        .strip_prefix("iframe")
        .and_then(|p| p.strip_suffix(".html"))
    {
        let ok = middle
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b"._-".contains(&b));
        return ok.then_some(Route::Iframe);
    }
    let mut parts = path.split('/');
    let (server_id, session_id, transport) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !valid_id(server_id) || !valid_id(session_id) {
        return None;
    }
    Some(Route::Session {
        session_id,
        transport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_spec_table() {
        assert_eq!(parse_route(""), Some(Route::Greeting));
        assert_eq!(parse_route("/"), Some(Route::Greeting));
        assert_eq!(parse_route("/info/"), Some(Route::Info));
        assert_eq!(
            parse_route("/iframe-0.1.2abc-dirty.2144.html"),
            Some(Route::Iframe)
        );
        assert_eq!(parse_route("/iframe.html/"), Some(Route::Iframe));
        for bad in [
            "/a",
            "/a.html",
            "//",
            "///",
            "/a/a",
            "/a/a/",
            "/a/",
            "/iframe.htm",
            "/IFRAME.HTML",
            "/iframe-/.html",
            "//xhr",
            "///xhr",
            "/a./a/xhr",
            "/a/a./xhr",
            "/././xhr",
        ] {
            assert_eq!(parse_route(bad), None, "{bad}");
        }
        assert_eq!(
            parse_route("/abcdefgh_i-j%20/abcdefg_i-j%20/xhr/"),
            Some(Route::Session {
                session_id: "abcdefg_i-j%20",
                transport: "xhr"
            })
        );
    }

    #[test]
    fn referers_give_their_origin() {
        assert_eq!(
            referer_origin("https://app.example.com:8443/a/b?c#d"),
            Some("https://app.example.com:8443")
        );
        assert_eq!(
            referer_origin("http://app.example"),
            Some("http://app.example")
        );
        assert_eq!(
            referer_origin("http://a.example?x"),
            Some("http://a.example")
        );
        for bad in [
            "",
            "app.example/x",
            "://x",
            "http:///x",
            "http://u@evil.example/",
        ] {
            assert_eq!(referer_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn specific_origin_patterns_name_sites() {
        for ok in [
            "https://app.example.com",
            "https://*.example.com",
            "http://localhost:*",
            "app.example.com",
        ] {
            assert!(origin_pattern_is_specific(ok), "{ok}");
        }
        for loose in [
            "*",
            "https://*",
            "http://*:8080",
            "https://*.com",
            "https://app.example*",
            "https://*.*.example.com",
            "https://",
        ] {
            assert!(!origin_pattern_is_specific(loose), "{loose}");
        }
    }

    #[test]
    fn origin_patterns_match_hosts_and_wildcards() {
        assert!(origin_matches("https://example.com", "https://EXAMPLE.com"));
        assert!(origin_matches(
            "https://*.example.com",
            "https://a.b.example.com"
        ));
        assert!(!origin_matches(
            "https://*.example.com",
            "https://example.org"
        ));
        assert!(origin_matches(
            "http://localhost:*",
            "http://localhost:3000"
        ));
        assert!(!origin_matches(
            "https://example.com",
            "https://example.com.evil"
        ));
    }
}
