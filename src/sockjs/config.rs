//! The `[[service]]` section: one SockJS service's options, with the defaults of the spec
//! (sockjs.md §11), and the checks serde cannot make. Durations are seconds, integer or
//! fractional.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::types::{
    OverflowStrategy, Problems, optional_seconds, seconds, write_optional_seconds, write_seconds,
};

/// The default `sockjs_url`: the sockjs-client 1.x bundle on the jsDelivr CDN, as in
/// sockjs-node and Spring. Pages must load the same build for iframe transports to work.
pub const DEFAULT_SOCKJS_URL: &str =
    "https://cdn.jsdelivr.net/npm/sockjs-client@1/dist/sockjs.min.js";

/// A SockJS transport that can be switched off per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    Websocket,
    WebsocketRaw,
    XhrPolling,
    XhrStreaming,
    Eventsource,
    Htmlfile,
    JsonpPolling,
}

impl Transport {
    /// Every transport, the default enable list.
    pub const ALL: [Transport; 7] = [
        Transport::Websocket,
        Transport::WebsocketRaw,
        Transport::XhrPolling,
        Transport::XhrStreaming,
        Transport::Eventsource,
        Transport::Htmlfile,
        Transport::JsonpPolling,
    ];

    /// The name used in the config file and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::WebsocketRaw => "websocket-raw",
            Transport::XhrPolling => "xhr-polling",
            Transport::XhrStreaming => "xhr-streaming",
            Transport::Eventsource => "eventsource",
            Transport::Htmlfile => "htmlfile",
            Transport::JsonpPolling => "jsonp-polling",
        }
    }
}

/// One SockJS service (sockjs.md §11). Every key but `prefix` and `app` is optional; those
/// two are checked by [`ServiceConfig::check`], so a missing one is reported together with
/// every other problem of the file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// The mount path, absolute and without a trailing slash.
    pub prefix: String,
    /// The application behind the service: stomp, echo, close, amplify, broadcast, ticker.
    pub app: String,
    /// Enables both websocket routes; reported in `/info`.
    pub websocket: bool,
    /// The enabled transports.
    pub transports: Vec<Transport>,
    /// Bytes a streaming response may carry before it is ended.
    pub response_limit: usize,
    /// Idle time after which a receiver gets an `h` frame.
    #[serde(deserialize_with = "seconds", serialize_with = "write_seconds")]
    pub heartbeat_delay: Duration,
    /// How long a session without a receiver lives.
    #[serde(deserialize_with = "seconds", serialize_with = "write_seconds")]
    pub disconnect_delay: Duration,
    /// Sets the JSESSIONID cookie for sticky load balancers.
    pub cookie_needed: bool,
    /// The sockjs-client URL the iframe page loads.
    pub sockjs_url: String,
    /// Allowed `Origin` values (exact, or `*` / `https://*.example.com` / `http://*:8080`
    /// patterns); empty means any origin.
    pub allowed_origins: Vec<String>,
    /// Added to `/info` when set.
    pub base_url: Option<String>,
    /// Outbound bytes a session may queue before the overflow strategy applies.
    pub max_queued_bytes: usize,
    /// What to do when the outbound queue overflows.
    pub overflow_strategy: OverflowStrategy,
    /// The largest xhr_send / jsonp_send body and WebSocket message, in bytes.
    pub max_inbound_bytes: usize,
    /// How long a WebSocket ping may go unanswered.
    #[serde(deserialize_with = "seconds", serialize_with = "write_seconds")]
    pub ws_ping_timeout: Duration,
    /// The most live sessions this service holds; new ones get 503 beyond it.
    pub max_sessions: Option<usize>,
    /// The most live sessions from one client address.
    pub max_sessions_per_ip: Option<usize>,
    /// The most live sessions of one authenticated principal.
    pub max_sessions_per_principal: Option<usize>,
    /// Inbound messages a session may send per second (token bucket refill rate).
    pub max_messages_per_second: Option<u32>,
    /// How long one write to a client may stay blocked before the session is terminated.
    #[serde(deserialize_with = "seconds", serialize_with = "write_seconds")]
    pub send_time_limit: Duration,
    /// How long a session may go without a message from its client before it is closed
    /// (4408); None (the default) never closes a quiet session.
    #[serde(
        deserialize_with = "optional_seconds",
        serialize_with = "write_optional_seconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_timeout: Option<Duration>,
    /// Later requests for a session must come from the address that created it.
    pub session_affinity_check: bool,
    /// `app = "proxy"`: the upstream WebSocket URL, `ws://` or `wss://`. The proxy keys are
    /// read here, next to the others, and checked and used by the proxy application.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// `app = "proxy"`: subprotocols offered upstream; unset passes the client's through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_subprotocols: Option<Vec<String>>,
    /// `app = "proxy"`: request headers of the opening request copied upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_headers: Option<Vec<String>>,
    /// `app = "proxy"`: how long opening the upstream connection may take, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// `app = "proxy"`: a PEM file of CA certificates for a `wss://` upstream (relative to
    /// the config file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ca_file: Option<std::path::PathBuf>,
}

impl Default for ServiceConfig {
    /// Every default, with neither `prefix` nor `app` set.
    fn default() -> Self {
        ServiceConfig::new("", "")
    }
}

impl ServiceConfig {
    /// A service with every default, for the embedded configuration and tests.
    pub fn new(prefix: &str, app: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            app: app.to_string(),
            websocket: true,
            transports: Transport::ALL.to_vec(),
            response_limit: 128 * 1024,
            heartbeat_delay: Duration::from_secs(25),
            disconnect_delay: Duration::from_secs(5),
            cookie_needed: false,
            sockjs_url: DEFAULT_SOCKJS_URL.to_string(),
            allowed_origins: Vec::new(),
            base_url: None,
            max_queued_bytes: 512 * 1024,
            overflow_strategy: OverflowStrategy::Terminate,
            max_inbound_bytes: 1024 * 1024,
            ws_ping_timeout: Duration::from_secs(10),
            max_sessions: None,
            max_sessions_per_ip: Some(10_000),
            max_sessions_per_principal: Some(100),
            max_messages_per_second: Some(5_000),
            send_time_limit: Duration::from_secs(10),
            idle_timeout: None,
            session_affinity_check: true,
            upstream: None,
            upstream_subprotocols: None,
            forward_headers: None,
            connect_timeout_ms: None,
            upstream_ca_file: None,
        }
    }

    /// Whether a transport is enabled (websocket transports also need `websocket = true`).
    pub fn enabled(&self, transport: Transport) -> bool {
        let ws = matches!(transport, Transport::Websocket | Transport::WebsocketRaw);
        (!ws || self.websocket) && self.transports.contains(&transport)
    }

    /// The enabled transports, in the order of [`Transport::ALL`].
    pub fn enabled_transports(&self) -> Vec<Transport> {
        Transport::ALL
            .into_iter()
            .filter(|t| self.enabled(*t))
            .collect()
    }

    /// Record what serde cannot check: the prefix, the sizes, the durations, the origins.
    /// `at` names the service in messages (`service[0]`). The app name is the composer's to
    /// check, since it alone knows the applications.
    pub fn check(&self, at: &str, problems: &mut Problems) {
        let key = |field: &str| format!("{at}.{field}");
        let p = &self.prefix;
        if p.is_empty() {
            problems.invalid(
                &key("prefix"),
                "missing: every [[service]] needs a mount path, such as prefix = \"/echo\"",
            );
        } else if !p.starts_with('/') || (p.len() > 1 && p.ends_with('/')) || p.contains("//") {
            problems.invalid(
                &key("prefix"),
                format!("{p:?} must start with '/' and not end with '/'"),
            );
        } else if p.contains(['?', '#', ' ']) {
            problems.invalid(
                &key("prefix"),
                format!("{p:?} contains '?', '#' or a space"),
            );
        }
        if !(self.sockjs_url.starts_with('/') || self.sockjs_url.starts_with("http")) {
            problems.invalid(&key("sockjs_url"), "must start with '/' or 'http'");
        }
        if self.sockjs_url.contains(['"', '<', '>']) {
            problems.invalid(&key("sockjs_url"), "must not contain '\"', '<' or '>'");
        }
        for origin in &self.allowed_origins {
            if let Err(message) = check_origin(origin) {
                problems.invalid(&key("allowed_origins"), message);
            }
        }
        for (field, v) in [
            ("response_limit", self.response_limit),
            ("max_queued_bytes", self.max_queued_bytes),
            ("max_inbound_bytes", self.max_inbound_bytes),
        ] {
            if v == 0 {
                problems.invalid(&key(field), "must be greater than 0");
            }
        }
        for (field, v) in [
            ("heartbeat_delay", self.heartbeat_delay),
            ("disconnect_delay", self.disconnect_delay),
            ("ws_ping_timeout", self.ws_ping_timeout),
            ("send_time_limit", self.send_time_limit),
        ] {
            if v.is_zero() {
                problems.invalid(&key(field), "must be greater than 0 seconds");
            }
        }
        for (field, v) in [
            ("max_sessions", self.max_sessions),
            ("max_sessions_per_ip", self.max_sessions_per_ip),
            (
                "max_sessions_per_principal",
                self.max_sessions_per_principal,
            ),
            (
                "max_messages_per_second",
                self.max_messages_per_second.map(|r| r as usize),
            ),
        ] {
            if v == Some(0) {
                problems.invalid(&key(field), "must be greater than 0 (omit it for no limit)");
            }
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            problems.invalid(
                &key("idle_timeout"),
                "must be greater than 0 seconds (omit it for none)",
            );
        }
    }
}

/// Whether an `allowed_origins` entry can ever match what a browser sends: `*`, `null`, or
/// `scheme://host[:port]` (with `*` wildcards), never a bare host or a path, because the
/// `Origin` header always carries the scheme and never a path.
fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" || origin == "null" {
        return Ok(());
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err(format!(
            "{origin:?} has no scheme; browsers send the scheme in Origin, so it would never \
             match and every request would get 403: write \"https://{origin}\" (or http://)"
        ));
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return Err(format!(
            "{origin:?} does not start with a scheme such as https://"
        ));
    }
    if rest.is_empty() {
        return Err(format!("{origin:?} has no host"));
    }
    if let Some(at) = rest.find(['/', '?', '#']) {
        let trimmed = format!("{scheme}://{}", &rest[..at]);
        return Err(format!(
            "{origin:?} has a path; an Origin is only scheme://host[:port], write {trimmed:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_able_to_match() {
        for ok in [
            "*",
            "null",
            "https://app.example.com",
            "https://*.example.com",
            "http://localhost:*",
            "http://*:8080",
        ] {
            assert_eq!(check_origin(ok), Ok(()), "{ok}");
        }
        let no_scheme = check_origin("app.example.com").unwrap_err();
        assert!(no_scheme.contains("https://app.example.com"), "{no_scheme}");
        let path = check_origin("https://app.example.com/").unwrap_err();
        assert!(path.contains("\"https://app.example.com\""), "{path}");
        assert!(check_origin("https://").is_err());
        assert!(check_origin("1http://x").is_err());
    }

    #[test]
    fn every_problem_of_a_service_is_recorded() {
        let mut bad = ServiceConfig::new("echo/", "echo");
        bad.response_limit = 0;
        bad.allowed_origins = vec!["app.example.com".into()];
        let mut problems = Problems::default();
        bad.check("service[0]", &mut problems);
        let keys: Vec<String> = problems
            .into_vec()
            .into_iter()
            .filter_map(|p| p.key)
            .collect();
        assert_eq!(
            keys,
            [
                "service[0].prefix",
                "service[0].allowed_origins",
                "service[0].response_limit"
            ]
        );
    }
}
