//! The gateway's TOML configuration: listeners and SockJS services, with the defaults of the
//! spec (sockjs.md §11) and validation errors that name the offending key.
//!
//! A config file looks like:
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"
//!
//! [[service]]
//! prefix = "/echo"
//! app = "echo"
//! response_limit = 4096
//! ```
//!
//! Durations are given in seconds (integer or fractional).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The default `sockjs_url`: the sockjs-client 1.x bundle on the jsDelivr CDN, as in
/// sockjs-node and Spring. Pages must load the same build for iframe transports to work.
pub const DEFAULT_SOCKJS_URL: &str =
    "https://cdn.jsdelivr.net/npm/sockjs-client@1/dist/sockjs.min.js";

/// Where the gateway listens when neither the file nor `--listen` says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema; the message names the key.
    #[error("invalid config: {0}")]
    Parse(String),
    /// A value parsed but is not acceptable.
    #[error("invalid config: `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// The SockJS services, each at its own prefix.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
    /// Authentication: token verification and anonymous access.
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
    /// The STOMP core, served by services with `app = "stomp"` and on `tcp_listen`.
    #[serde(default)]
    pub stomp: crate::stomp::StompConfig,
    /// Several nodes on Redis, and the durable per-user inbox.
    #[serde(default)]
    pub cluster: crate::cluster::ClusterConfig,
    /// The directory relative file names (key files) are resolved against: the config
    /// file's directory, or the working directory.
    #[serde(skip)]
    pub base_dir: std::path::PathBuf,
}

/// Listener-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The HTTP listen address.
    pub listen: SocketAddr,
    /// How long a client may take to send request headers (slowloris guard).
    #[serde(deserialize_with = "seconds")]
    pub header_read_timeout: Duration,
    /// The largest request head (request line plus headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// The most open connections over every listener (HTTP and STOMP TCP); None: unlimited.
    pub max_connections: Option<usize>,
    /// The most open connections from one client address; None: unlimited.
    pub max_connections_per_ip: Option<usize>,
    /// Reverse proxies (addresses or CIDR ranges) whose `Forwarded`/`X-Forwarded-For`
    /// headers, and PROXY protocol headers on the STOMP TCP listener, name the client.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080))),
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_connections: None,
            max_connections_per_ip: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// What a service does when its outbound queue overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowStrategy {
    /// Close the session with 4500 "Send limit exceeded".
    Terminate,
    /// Discard the oldest queued messages the application marked droppable (STOMP MESSAGE
    /// frames), or refuse the new one when that cannot make room.
    Drop,
}

/// A SockJS transport that can be switched off per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
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
}

/// One SockJS service (sockjs.md §11).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The mount path, absolute and without a trailing slash.
    pub prefix: String,
    /// The application behind the service: stomp, echo, close, amplify, broadcast, ticker.
    pub app: String,
    /// Enables both websocket routes; reported in `/info`.
    #[serde(default = "yes")]
    pub websocket: bool,
    /// The enabled transports.
    #[serde(default = "all_transports")]
    pub transports: Vec<Transport>,
    /// Bytes a streaming response may carry before it is ended.
    #[serde(default = "default_response_limit")]
    pub response_limit: usize,
    /// Idle time after which a receiver gets an `h` frame.
    #[serde(default = "default_heartbeat", deserialize_with = "seconds")]
    pub heartbeat_delay: Duration,
    /// How long a session without a receiver lives.
    #[serde(default = "default_disconnect", deserialize_with = "seconds")]
    pub disconnect_delay: Duration,
    /// Sets the JSESSIONID cookie for sticky load balancers.
    #[serde(default)]
    pub cookie_needed: bool,
    /// The sockjs-client URL the iframe page loads.
    #[serde(default = "default_sockjs_url")]
    pub sockjs_url: String,
    /// Allowed `Origin` values (exact, or `*` / `*.example.com` / `http://*:8080` patterns);
    /// empty means any origin.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Added to `/info` when set.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Outbound bytes a session may queue before the overflow strategy applies.
    #[serde(default = "default_max_queued")]
    pub max_queued_bytes: usize,
    /// What to do when the outbound queue overflows.
    #[serde(default = "default_overflow")]
    pub overflow_strategy: OverflowStrategy,
    /// The largest xhr_send / jsonp_send body and WebSocket message, in bytes.
    #[serde(default = "default_max_inbound")]
    pub max_inbound_bytes: usize,
    /// How long a WebSocket ping may go unanswered.
    #[serde(default = "default_ping_timeout", deserialize_with = "seconds")]
    pub ws_ping_timeout: Duration,
    /// The most live sessions this service holds; new ones get 503 beyond it.
    #[serde(default)]
    pub max_sessions: Option<usize>,
    /// The most live sessions from one client address.
    #[serde(default = "default_per_ip")]
    pub max_sessions_per_ip: Option<usize>,
    /// The most live sessions of one authenticated principal.
    #[serde(default = "default_per_principal")]
    pub max_sessions_per_principal: Option<usize>,
    /// Inbound messages a session may send per second (token bucket refill rate).
    #[serde(default = "default_rate")]
    pub max_messages_per_second: Option<u32>,
    /// How long one write to a client may stay blocked before the session is terminated.
    #[serde(default = "default_send_time_limit", deserialize_with = "seconds")]
    pub send_time_limit: Duration,
    /// How long a session may go without a message from its client before it is closed
    /// (4408); None (the default) never closes a quiet session.
    #[serde(default, deserialize_with = "optional_seconds")]
    pub idle_timeout: Option<Duration>,
    /// Later requests for a session must come from the address that created it.
    #[serde(default = "yes")]
    pub session_affinity_check: bool,
}

fn yes() -> bool {
    true
}
fn all_transports() -> Vec<Transport> {
    Transport::ALL.to_vec()
}
fn default_response_limit() -> usize {
    128 * 1024
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(25)
}
fn default_disconnect() -> Duration {
    Duration::from_secs(5)
}
fn default_sockjs_url() -> String {
    DEFAULT_SOCKJS_URL.to_string()
}
fn default_max_queued() -> usize {
    512 * 1024
}
fn default_overflow() -> OverflowStrategy {
    OverflowStrategy::Terminate
}
fn default_max_inbound() -> usize {
    1024 * 1024
}
fn default_per_ip() -> Option<usize> {
    Some(10_000)
}
fn default_per_principal() -> Option<usize> {
    Some(100)
}
fn default_rate() -> Option<u32> {
    Some(5_000)
}
fn default_send_time_limit() -> Duration {
    Duration::from_secs(10)
}
fn default_ping_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Accepts a number of seconds, integer or fractional.
fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(u64),
        Float(f64),
    }
    // Ten years: far beyond any sensible timeout, and far from overflowing a deadline.
    const MAX: f64 = 315_360_000.0;
    let secs = match Num::deserialize(d)? {
        Num::Int(s) => s as f64,
        Num::Float(s) => s,
    };
    if secs.is_finite() && (0.0..=MAX).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(serde::de::Error::custom(
            "expected a number of seconds from 0 to 315360000 (ten years)",
        ))
    }
}

/// [`seconds`] for an optional key.
fn optional_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    seconds(d).map(Some)
}

impl ServiceConfig {
    /// A service with every default, for the embedded configuration and tests.
    pub fn new(prefix: &str, app: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            app: app.to_string(),
            websocket: true,
            transports: all_transports(),
            response_limit: default_response_limit(),
            heartbeat_delay: default_heartbeat(),
            disconnect_delay: default_disconnect(),
            cookie_needed: false,
            sockjs_url: default_sockjs_url(),
            allowed_origins: Vec::new(),
            base_url: None,
            max_queued_bytes: default_max_queued(),
            overflow_strategy: default_overflow(),
            max_inbound_bytes: default_max_inbound(),
            ws_ping_timeout: default_ping_timeout(),
            max_sessions: None,
            max_sessions_per_ip: default_per_ip(),
            max_sessions_per_principal: default_per_principal(),
            max_messages_per_second: default_rate(),
            send_time_limit: default_send_time_limit(),
            idle_timeout: None,
            session_affinity_check: true,
        }
    }

    /// Whether a transport is enabled (websocket transports also need `websocket = true`).
    pub fn enabled(&self, transport: Transport) -> bool {
        let ws = matches!(transport, Transport::Websocket | Transport::WebsocketRaw);
        (!ws || self.websocket) && self.transports.contains(&transport)
    }
}

/// The names of the applications `app` may name.
pub const APP_NAMES: &[&str] = &["stomp", "echo", "close", "amplify", "broadcast", "ticker"];

impl Config {
    /// Parse and validate a config from TOML text; relative file names resolve against the
    /// working directory.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_in(text, Path::new("."))
    }

    /// Parse and validate a config from TOML text; relative file names resolve against
    /// `base_dir`.
    pub fn from_toml_in(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string().trim().into()))?;
        config.base_dir = base_dir.to_path_buf();
        config.validate()?;
        crate::auth::Authenticator::from_config(&config.auth, &config.base_dir)?;
        Ok(config)
    }

    /// Read, parse and validate a config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base_dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        Self::from_toml_in(&text, base_dir)
    }

    /// The embedded default: STOMP at `/stomp` (in-memory broker) and `/echo`, on
    /// 127.0.0.1:8080, with no external service.
    pub fn embedded() -> Self {
        Config {
            server: ServerConfig::default(),
            services: vec![
                ServiceConfig::new("/stomp", "stomp"),
                ServiceConfig::new("/echo", "echo"),
            ],
            auth: crate::auth::AuthConfig::default(),
            stomp: crate::stomp::StompConfig::default(),
            cluster: crate::cluster::ClusterConfig::default(),
            base_dir: std::path::PathBuf::from("."),
        }
    }

    /// Check what serde cannot: prefixes, app names, sizes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, v) in [
            ("server.max_connections", self.server.max_connections),
            (
                "server.max_connections_per_ip",
                self.server.max_connections_per_ip,
            ),
        ] {
            if v == Some(0) {
                return Err(invalid(
                    field,
                    "must be greater than 0 (omit it for no limit)",
                ));
            }
        }
        self.cluster
            .validate(&self.stomp.user_prefix())
            .map_err(|e| invalid(&format!("cluster.{}", e.key), &e.message))?;
        if self.cluster.redis.is_some()
            && (self.stomp.broker_prefixes.is_empty()
                || self
                    .stomp
                    .broker_prefixes
                    .iter()
                    .any(|p| !p.starts_with('/')))
        {
            return Err(invalid(
                "stomp.broker_prefixes",
                "with [cluster] redis set, name the broker prefixes and start each with '/' \
                 (only such destinations cross nodes)",
            ));
        }
        crate::proxy::TrustedProxies::parse(&self.server.trusted_proxies)
            .map_err(|message| invalid("server.trusted_proxies", &message))?;
        if self.services.is_empty() {
            return Err(invalid("service", "at least one [[service]] is required"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let key = |field: &str| format!("service[{i}].{field}");
            let p = &s.prefix;
            if !p.starts_with('/') || (p.len() > 1 && p.ends_with('/')) || p.contains("//") {
                return Err(invalid(
                    &key("prefix"),
                    &format!("{p:?} must start with '/' and not end with '/'"),
                ));
            }
            if p.contains(['?', '#', ' ']) {
                return Err(invalid(
                    &key("prefix"),
                    &format!("{p:?} contains '?', '#' or a space"),
                ));
            }
            if !seen.insert(p.clone()) {
                return Err(invalid(
                    &key("prefix"),
                    &format!("{p:?} is used by two services"),
                ));
            }
            if !APP_NAMES.contains(&s.app.as_str()) {
                return Err(invalid(
                    &key("app"),
                    &format!(
                        "unknown app {:?}; expected one of {}",
                        s.app,
                        APP_NAMES.join(", ")
                    ),
                ));
            }
            if !(s.sockjs_url.starts_with('/') || s.sockjs_url.starts_with("http")) {
                return Err(invalid(&key("sockjs_url"), "must start with '/' or 'http'"));
            }
            if s.sockjs_url.contains(['"', '<', '>']) {
                return Err(invalid(
                    &key("sockjs_url"),
                    "must not contain '\"', '<' or '>'",
                ));
            }
            for (field, v) in [
                ("response_limit", s.response_limit),
                ("max_queued_bytes", s.max_queued_bytes),
                ("max_inbound_bytes", s.max_inbound_bytes),
            ] {
                if v == 0 {
                    return Err(invalid(&key(field), "must be greater than 0"));
                }
            }
            for (field, v) in [
                ("heartbeat_delay", s.heartbeat_delay),
                ("disconnect_delay", s.disconnect_delay),
                ("ws_ping_timeout", s.ws_ping_timeout),
            ] {
                if v.is_zero() {
                    return Err(invalid(&key(field), "must be greater than 0 seconds"));
                }
            }
            for (field, v) in [
                ("max_sessions", s.max_sessions),
                ("max_sessions_per_ip", s.max_sessions_per_ip),
                ("max_sessions_per_principal", s.max_sessions_per_principal),
                (
                    "max_messages_per_second",
                    s.max_messages_per_second.map(|r| r as usize),
                ),
            ] {
                if v == Some(0) {
                    return Err(invalid(
                        &key(field),
                        "must be greater than 0 (omit it for no limit)",
                    ));
                }
            }
            if s.idle_timeout.is_some_and(|t| t.is_zero()) {
                return Err(invalid(
                    &key("idle_timeout"),
                    "must be greater than 0 seconds (omit it for none)",
                ));
            }
            if s.send_time_limit.is_zero() {
                return Err(invalid(
                    &key("send_time_limit"),
                    "must be greater than 0 seconds",
                ));
            }
        }
        Ok(())
    }
}

fn invalid(key: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let c = Config::from_toml("[[service]]\nprefix = \"/echo\"\napp = \"echo\"\n").unwrap();
        let s = &c.services[0];
        assert_eq!(s.response_limit, 131072);
        assert_eq!(s.heartbeat_delay, Duration::from_secs(25));
        assert_eq!(s.disconnect_delay, Duration::from_secs(5));
        assert!(!s.cookie_needed);
        assert!(s.websocket);
        assert_eq!(s.max_queued_bytes, 512 * 1024);
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn fractional_seconds_are_accepted() {
        let c = Config::from_toml(
            "[[service]]\nprefix = \"/e\"\napp = \"echo\"\ndisconnect_delay = 0.5\n",
        )
        .unwrap();
        assert_eq!(c.services[0].disconnect_delay, Duration::from_millis(500));
    }

    #[test]
    fn durations_past_ten_years_are_refused() {
        let err = Config::from_toml(
            "[[service]]\nprefix = \"/e\"\napp = \"echo\"\nidle_timeout = 1e19\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("idle_timeout") && err.contains("ten years"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err =
            Config::from_toml("[[service]]\nprefix = \"/e\"\napp = \"echo\"\nrespons_limit = 1\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("respons_limit"), "{err}");
    }

    #[test]
    fn bad_prefix_is_named() {
        let err = Config::from_toml("[[service]]\nprefix = \"echo/\"\napp = \"echo\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("service[0].prefix"), "{err}");
    }

    #[test]
    fn unknown_app_is_named() {
        let err = Config::from_toml("[[service]]\nprefix = \"/e\"\napp = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("service[0].app"), "{err}");
    }

    #[test]
    fn idle_timeout_is_off_by_default_and_zero_is_refused() {
        let c = Config::from_toml("[[service]]\nprefix = \"/e\"\napp = \"echo\"\n").unwrap();
        assert_eq!(c.services[0].idle_timeout, None);
        let c =
            Config::from_toml("[[service]]\nprefix = \"/e\"\napp = \"echo\"\nidle_timeout = 2.5\n")
                .unwrap();
        assert_eq!(
            c.services[0].idle_timeout,
            Some(Duration::from_millis(2500))
        );
        let err =
            Config::from_toml("[[service]]\nprefix = \"/e\"\napp = \"echo\"\nidle_timeout = 0\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("service[0].idle_timeout"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err =
            Config::from_toml("[[service]]\nprefix = \"/e\"\napp = \"echo\"\nwebsocket = 3\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("websocket"), "{err}");
    }
}
