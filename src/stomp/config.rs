//! STOMP core settings, with the defaults of spec §9 and §10.
//!
//! The struct deserializes with `#[serde(default, deny_unknown_fields)]`, so it can be embedded
//! in the gateway's TOML file as a `[stomp]` table where every key is optional and a misspelt
//! key is an error that names it. Durations are plain integers with their unit in the key name
//! (`connect_timeout_ms`), so a TOML reader never has to guess. The authorization rules
//! (`[[stomp.acl]]`) are part of the section too; `acl.rs` enforces them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::frame::FrameLimits;
use super::pattern::PatternLimits;
use crate::config::types::{ConfigError, OverflowStrategy, optional_listen_addr};
use crate::limits::TokenBucket;

/// The longest heart-beat interval that is honoured, in milliseconds (one hour): longer
/// negotiated intervals are clamped to it, and a longer configured `heart_beat` is refused.
pub const MAX_HEARTBEAT_MS: u64 = 60 * 60 * 1000;

/// Everything the STOMP core can be configured with.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StompConfig {
    /// The most bytes one inbound frame may have (command, headers, body).
    pub message_size_limit: usize,
    /// The most headers one inbound frame may have.
    pub max_headers: usize,
    /// The longest inbound command or header line, in bytes.
    pub max_header_line: usize,
    /// How long a session may stay without CONNECT before it is closed.
    pub connect_timeout_ms: u64,
    /// The server's heart-beat offer `sx,sy` in milliseconds, sent in every 1.1+ CONNECTED.
    pub heart_beat: HeartBeat,
    /// Client silence is tolerated for the negotiated interval times this factor (min 1.5).
    pub heartbeat_read_margin: f64,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Deliveries awaiting ACK/NACK on one connection, over all its subscriptions; also the
    /// most broadcast messages that may wait for a full prefetch window to open.
    pub max_pending_acks: usize,
    /// Bytes (headers and bodies) one connection may hold in deliveries awaiting ACK and in
    /// messages waiting for its prefetch window; past it, competing queues keep their
    /// messages and broadcast ones are dropped and counted.
    pub max_pending_ack_bytes: usize,
    /// The same budget over every connection of the broker.
    pub max_total_pending_ack_bytes: usize,
    /// Transactions one connection may have open.
    pub max_transactions: usize,
    /// Bytes (headers and bodies) buffered over all open transactions of one connection.
    pub max_transaction_bytes: usize,
    /// Messages stored per competing queue; the oldest is dropped on overflow.
    pub max_queue_messages: usize,
    /// Bytes stored per competing queue; the oldest messages are dropped on overflow.
    pub max_queue_bytes: usize,
    /// Competing queues the broker keeps at once; a SEND that would create one more is
    /// dropped and counted. An empty queue nobody subscribes to is forgotten.
    pub max_queues: usize,
    /// Bytes queued for one client and not yet written (carriers that read this config).
    pub send_buffer_size_limit: usize,
    /// The longest a single write may stay blocked on a client that does not read.
    pub send_time_limit_ms: u64,
    /// What the TCP carrier does when a client's queue would pass `send_buffer_size_limit`:
    /// close it, or discard its oldest queued MESSAGE frames.
    pub overflow_strategy: OverflowStrategy,
    /// Inbound frames one connection may send per second, on every carrier (token bucket
    /// refill rate; the burst is twice that); 0 disables the limit.
    pub max_frames_per_second: u32,
    /// How long a connected session may go without sending a byte (frame or heart-beat EOL)
    /// before ERROR `Idle timeout` closes it; 0 (the default) disables it, because spec H01
    /// has a `heart-beat:0,0` session idle for 40 s stay open.
    pub idle_timeout_ms: u64,
    /// Destination prefixes forwarded to the application handler.
    pub application_prefixes: Vec<String>,
    /// Destination prefixes served by the embedded broker; empty means "everything else".
    pub broker_prefixes: Vec<String>,
    /// The user-destination prefix; a trailing `/` is added when missing.
    pub user_prefix: String,
    /// Semantics of the `/queue` broker prefix.
    pub queue_semantics: QueueSemantics,
    /// What happens to a destination no prefix matches.
    pub unroutable: Unroutable,
    /// The segment separator of pattern subscriptions (`/` or `.`).
    pub path_separator: char,
    /// The most segments a SUBSCRIBE pattern may have (the empty one before a leading `/`
    /// counts); a longer pattern gets ERROR `Invalid header: destination`.
    pub max_pattern_segments: usize,
    /// The most `**` segments a SUBSCRIBE pattern may have.
    pub max_pattern_any_segments: usize,
    /// The most `*` one segment of a SUBSCRIBE pattern may hold.
    pub max_pattern_stars: usize,
    /// Whether the SUBSCRIBE `selector` header is honoured (spec §7.3); when false it is
    /// ignored, as the spec asks of a server without selectors.
    pub selectors: bool,
    /// Whether clients may SEND to `/user/{name}/...` (Spring allows it; we deny by default).
    pub allow_client_send_to_user: bool,
    /// CONNECT header whose value becomes the principal when the carrier supplied none. Off
    /// by default: the client asserts the name and nothing checks it, so it is an explicit
    /// opt-in for trusted networks and demos (warned about at startup).
    pub principal_header: Option<String>,
    /// Whether sessions without a principal may connect (without `[auth.jwt]`).
    pub allow_anonymous: bool,
    /// Accepted `host` values; when set, any other `host` is refused.
    pub virtual_hosts: Option<Vec<String>>,
    /// Reproduce Spring's `ERROR message:Session closed.` on DISCONNECT without a receipt.
    pub spring_disconnect_error: bool,
    /// Events buffered per event subscriber before the slowest one starts losing events.
    pub event_capacity: usize,
    /// How often the stats summary is logged at INFO; 0 disables it.
    pub stats_log_period_s: u64,
    /// Where STOMP over plain TCP listens, if anywhere (`--stomp-listen` overrides it).
    #[serde(deserialize_with = "optional_listen_addr")]
    pub tcp_listen: Option<std::net::SocketAddr>,
    /// Where STOMP over TLS listens, if anywhere, with `[server] tls_cert` and `tls_key`.
    #[serde(deserialize_with = "optional_listen_addr")]
    pub tls_listen: Option<std::net::SocketAddr>,
    /// Ordered authorization rules for SUBSCRIBE and SEND (`[[stomp.acl]]`).
    pub acl: Vec<AclRule>,
    /// What applies when no ACL rule does.
    pub acl_default: Policy,
    /// Broker destinations served by an external STOMP broker (`[stomp.relay]`).
    pub relay: Option<RelayConfig>,
}

/// `[stomp.relay]`: the broker prefixes an external STOMP broker (RabbitMQ) serves. In
/// `shared` mode every auto-ack subscription of this node to one destination is one broker
/// subscription over a small pool of broker connections, and what the broker sends is
/// fanned out locally; a subscription the broker must see for itself (client acks, durable,
/// `x-*` headers) gets a connection of its session's own. In `per-session` mode every
/// session that uses a relayed destination has its own broker connection.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// The broker's STOMP address (`host:port`, an IP address).
    #[serde(deserialize_with = "crate::config::types::listen_addr")]
    pub address: std::net::SocketAddr,
    /// CONNECT `login` of a session's own broker connection (Spring's `clientLogin`).
    pub login: String,
    /// CONNECT `passcode` of a session's own broker connection (printed redacted).
    #[serde(serialize_with = "crate::config::types::write_redacted_str")]
    pub passcode: String,
    /// CONNECT `login` of the pool's connections.
    pub system_login: String,
    /// CONNECT `passcode` of the pool's connections (printed redacted by `print-config`).
    #[serde(serialize_with = "crate::config::types::write_redacted_str")]
    pub system_passcode: String,
    /// CONNECT `host` (the virtual host).
    pub virtual_host: String,
    /// Destination prefixes the broker serves instead of the embedded one.
    pub prefixes: Vec<String>,
    /// `shared`: pooled broker connections, one subscription per destination per node;
    /// `per-session`: one broker connection per session, every frame relayed.
    pub mode: RelayMode,
    /// Broker connections in the pool; a destination always uses the same one, so its
    /// messages keep their order.
    pub pool_size: usize,
    /// Heart-beat interval both ways with the broker, in milliseconds (0: none).
    pub heartbeat_ms: u64,
    /// Frames waiting for one broker connection (a pool connection's SENDs, or a session's
    /// own connection's frames); beyond it a SEND is refused with `Broker unavailable`, and
    /// a session whose own connection is that far behind is closed.
    pub queue: usize,
}

/// How the relay uses broker connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelayMode {
    /// Pooled connections shared by every session (a session gets its own only for the
    /// subscriptions that need one).
    Shared,
    /// One broker connection per session, as Spring's broker relay does.
    PerSession,
}

impl RelayMode {
    /// The name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayMode::Shared => "shared",
            RelayMode::PerSession => "per-session",
        }
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            address: std::net::SocketAddr::from(([127, 0, 0, 1], 61613)),
            login: "guest".into(),
            passcode: "guest".into(),
            system_login: "guest".into(),
            system_passcode: "guest".into(),
            virtual_host: "/".into(),
            prefixes: vec![
                "/topic".into(),
                "/queue".into(),
                "/exchange".into(),
                "/amq/queue".into(),
            ],
            mode: RelayMode::Shared,
            pool_size: 4,
            heartbeat_ms: 10_000,
            queue: 4096,
        }
    }
}

impl RelayConfig {
    /// Whether the broker serves `destination`.
    pub fn relays(&self, destination: &str) -> bool {
        self.prefixes.iter().any(|p| {
            destination
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: format!("stomp.relay.{key}"),
            message,
        };
        if !(1..=64).contains(&self.pool_size) {
            return Err(invalid(
                "pool_size",
                format!("{} is not in 1..=64", self.pool_size),
            ));
        }
        if !(1..=1_000_000).contains(&self.queue) {
            return Err(invalid(
                "queue",
                format!("{} is not in 1..=1000000", self.queue),
            ));
        }
        if self.heartbeat_ms > MAX_HEARTBEAT_MS {
            return Err(invalid(
                "heartbeat_ms",
                format!(
                    "{} is more than {MAX_HEARTBEAT_MS} (one hour)",
                    self.heartbeat_ms
                ),
            ));
        }
        if self.prefixes.is_empty() {
            return Err(invalid(
                "prefixes",
                "is empty: name the destination prefixes the broker serves".into(),
            ));
        }
        if let Some(bad) = self
            .prefixes
            .iter()
            .find(|p| !p.starts_with('/') || p.ends_with('/'))
        {
            return Err(invalid(
                "prefixes",
                format!("{bad:?} must start with '/' and not end with one (\"/topic\")"),
            ));
        }
        Ok(())
    }
}

impl Default for StompConfig {
    fn default() -> Self {
        StompConfig {
            message_size_limit: 64 * 1024,
            max_headers: 256,
            max_header_line: 16 * 1024,
            connect_timeout_ms: 60_000,
            heart_beat: HeartBeat {
                send_ms: 10_000,
                receive_ms: 10_000,
            },
            heartbeat_read_margin: 3.0,
            max_subscriptions: 1024,
            max_pending_acks: 10_000,
            max_pending_ack_bytes: 16 * 1024 * 1024,
            max_total_pending_ack_bytes: 1024 * 1024 * 1024,
            max_transactions: 16,
            max_transaction_bytes: 1024 * 1024,
            max_queue_messages: 10_000,
            max_queue_bytes: 64 * 1024 * 1024,
            max_queues: 10_000,
            send_buffer_size_limit: 512 * 1024,
            send_time_limit_ms: 10_000,
            overflow_strategy: OverflowStrategy::Terminate,
            max_frames_per_second: 5_000,
            idle_timeout_ms: 0,
            application_prefixes: vec!["/app".into()],
            broker_prefixes: vec!["/topic".into(), "/queue".into()],
            user_prefix: "/user/".into(),
            queue_semantics: QueueSemantics::Broadcast,
            unroutable: Unroutable::Drop,
            path_separator: '/',
            max_pattern_segments: 32,
            max_pattern_any_segments: 4,
            max_pattern_stars: 4,
            selectors: false,
            allow_client_send_to_user: false,
            principal_header: None,
            allow_anonymous: true,
            virtual_hosts: None,
            spring_disconnect_error: false,
            event_capacity: 1024,
            stats_log_period_s: 30 * 60,
            tcp_listen: None,
            tls_listen: None,
            acl: Vec::new(),
            acl_default: Policy::Allow,
            relay: None,
        }
    }
}

/// Ten years in milliseconds: the most any `_ms` duration may be (as `[server]` and
/// `[[service]]` durations), far beyond a sensible timeout.
const TEN_YEARS_MS: u64 = 315_360_000_000;

impl StompConfig {
    /// Check every value against its sane range; the error names the key (`stomp.<key>`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: format!("stomp.{key}"),
            message,
        };
        let sizes: [(&str, usize, usize, usize); 14] = [
            ("message_size_limit", self.message_size_limit, 1, 64 << 20),
            ("max_headers", self.max_headers, 1, 65_536),
            ("max_header_line", self.max_header_line, 64, 1 << 20),
            ("max_subscriptions", self.max_subscriptions, 1, 1_000_000),
            ("max_pending_acks", self.max_pending_acks, 1, 1_000_000),
            (
                "max_pending_ack_bytes",
                self.max_pending_ack_bytes,
                1,
                1 << 40,
            ),
            (
                "max_total_pending_ack_bytes",
                self.max_total_pending_ack_bytes,
                1,
                1 << 44,
            ),
            ("max_queues", self.max_queues, 1, 100_000_000),
            ("max_transactions", self.max_transactions, 1, 65_536),
            (
                "max_transaction_bytes",
                self.max_transaction_bytes,
                1,
                1 << 30,
            ),
            (
                "max_queue_messages",
                self.max_queue_messages,
                1,
                100_000_000,
            ),
            ("max_queue_bytes", self.max_queue_bytes, 1, 1 << 40),
            (
                "send_buffer_size_limit",
                self.send_buffer_size_limit,
                1,
                1 << 30,
            ),
            ("event_capacity", self.event_capacity, 1, 1_000_000),
        ];
        for (key, value, min, max) in sizes {
            if !(min..=max).contains(&value) {
                return Err(invalid(key, format!("{value} is not in {min}..={max}")));
            }
        }
        let durations = [
            ("connect_timeout_ms", self.connect_timeout_ms, 1),
            ("send_time_limit_ms", self.send_time_limit_ms, 1),
            ("idle_timeout_ms", self.idle_timeout_ms, 0),
        ];
        for (key, value, min) in durations {
            if !(min..=TEN_YEARS_MS).contains(&value) {
                let zero = if min == 0 { " (0 turns it off)" } else { "" };
                return Err(invalid(
                    key,
                    format!("{value} ms is not in {min}..={TEN_YEARS_MS} (ten years){zero}"),
                ));
            }
        }
        if self.stats_log_period_s > TEN_YEARS_MS / 1000 {
            return Err(invalid(
                "stats_log_period_s",
                format!(
                    "{} s is more than ten years (0 turns it off)",
                    self.stats_log_period_s
                ),
            ));
        }
        let beat = self.heart_beat;
        if beat.send_ms > MAX_HEARTBEAT_MS || beat.receive_ms > MAX_HEARTBEAT_MS {
            return Err(invalid(
                "heart_beat",
                format!(
                    "\"{beat}\": each interval must be at most {MAX_HEARTBEAT_MS} ms (one hour)"
                ),
            ));
        }
        let margin = self.heartbeat_read_margin;
        if !(margin.is_finite() && (1.5..=100.0).contains(&margin)) {
            return Err(invalid(
                "heartbeat_read_margin",
                format!("{margin} is not in 1.5..=100 (the spec needs at least 1.5)"),
            ));
        }
        if !matches!(self.path_separator, '/' | '.') {
            return Err(invalid(
                "path_separator",
                format!("{:?} must be '/' or '.'", self.path_separator),
            ));
        }
        if self.user_prefix.is_empty() {
            return Err(invalid("user_prefix", "must not be empty".into()));
        }
        for (key, prefixes) in [
            ("application_prefixes", &self.application_prefixes),
            ("broker_prefixes", &self.broker_prefixes),
        ] {
            if prefixes.iter().any(String::is_empty) {
                return Err(invalid(
                    key,
                    "an empty prefix would match everything".into(),
                ));
            }
        }
        if let Some(header) = &self.principal_header
            && (header.is_empty() || header.contains([':', '\r', '\n']))
        {
            return Err(invalid(
                "principal_header",
                format!("{header:?} is not a header name (omit the key for none)"),
            ));
        }
        if let Some(relay) = &self.relay {
            relay.validate()?;
        }
        Ok(())
    }

    /// The prefixes SENDs and SUBSCRIBEs reach the broker under: `broker_prefixes` plus the
    /// relay's (empty: everything not otherwise routed).
    pub fn served_prefixes(&self) -> Vec<String> {
        let mut prefixes = self.broker_prefixes.clone();
        if let Some(relay) = &self.relay
            && !prefixes.is_empty()
        {
            for p in &relay.prefixes {
                if !prefixes.contains(p) {
                    prefixes.push(p.clone());
                }
            }
        }
        prefixes
    }

    /// The parser limits these settings imply.
    pub fn frame_limits(&self) -> FrameLimits {
        FrameLimits {
            max_frame_bytes: self.message_size_limit,
            max_headers: self.max_headers,
            max_header_line: self.max_header_line,
        }
    }

    /// The bounds on SUBSCRIBE patterns these settings imply.
    pub fn pattern_limits(&self) -> PatternLimits {
        PatternLimits {
            max_segments: self.max_pattern_segments,
            max_any_segments: self.max_pattern_any_segments,
            max_stars_per_segment: self.max_pattern_stars,
        }
    }

    /// A full bucket for one connection's inbound frames, or None when the rate is unlimited
    /// (`max_frames_per_second = 0`).
    pub fn frame_rate_bucket(&self) -> Option<TokenBucket> {
        (self.max_frames_per_second > 0).then(|| {
            let rate = f64::from(self.max_frames_per_second);
            TokenBucket::new(rate, 2.0 * rate)
        })
    }

    /// The read margin, never below the 1.5 the spec demands.
    pub fn read_margin(&self) -> f64 {
        if self.heartbeat_read_margin.is_finite() {
            self.heartbeat_read_margin.max(1.5)
        } else {
            3.0
        }
    }

    /// The time a session may take to send CONNECT.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The user prefix with its trailing `/`.
    pub fn user_prefix(&self) -> String {
        if self.user_prefix.ends_with('/') {
            self.user_prefix.clone()
        } else {
            format!("{}/", self.user_prefix)
        }
    }
}

/// A heart-beat pair, written `"x,y"` in config and on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct HeartBeat {
    /// `x`: the smallest interval at which the sender can send (0: cannot).
    pub send_ms: u64,
    /// `y`: the interval at which the sender wants to receive (0: does not want to).
    pub receive_ms: u64,
}

impl HeartBeat {
    /// Parse `x,y` (two non-negative decimal integers).
    pub fn parse(value: &str) -> Option<HeartBeat> {
        let (x, y) = value.split_once(',')?;
        let number = |s: &str| {
            let s = s.trim_matches(' ');
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse::<u64>().ok()
        };
        Some(HeartBeat {
            send_ms: number(x)?,
            receive_ms: number(y)?,
        })
    }
}

impl TryFrom<String> for HeartBeat {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        HeartBeat::parse(&value)
            .ok_or_else(|| format!("heart_beat must be \"x,y\" in milliseconds, got {value:?}"))
    }
}

impl From<HeartBeat> for String {
    fn from(beat: HeartBeat) -> String {
        beat.to_string()
    }
}

impl fmt::Display for HeartBeat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.send_ms, self.receive_ms)
    }
}

/// How a `/queue` destination distributes messages (spec §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueSemantics {
    /// Every subscriber gets every message (Spring's simple broker).
    Broadcast,
    /// Each message goes to exactly one subscriber; stored while nobody listens (RabbitMQ).
    Competing,
}

/// What to do with a destination no prefix matches (spec §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unroutable {
    /// Discard and count it; RECEIPT as usual.
    Drop,
    /// ERROR `No route for destination` and close.
    Error,
}

/// What an authorization rule (`[[stomp.acl]]`, enforced by `acl.rs`) governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAction {
    Subscribe,
    Send,
    /// Both SUBSCRIBE and SEND.
    Any,
}

/// Whether a rule grants or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Allow,
    Deny,
}

/// One rule as configured.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// SUBSCRIBE, SEND or both.
    pub action: AclAction,
    /// The destination pattern.
    pub destination: String,
    /// Allow or deny.
    pub policy: Policy,
    /// The rule applies only to principals holding one of these roles (empty: everyone).
    #[serde(default)]
    pub roles: Vec<String>,
    /// The rule applies only to these user names (empty: everyone); `anonymous` names
    /// sessions without a principal.
    #[serde(default)]
    pub users: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heart_beat_pairs() {
        assert_eq!(
            HeartBeat::parse("2000,5000"),
            Some(HeartBeat {
                send_ms: 2000,
                receive_ms: 5000
            })
        );
        for bad in ["abc", "1", "1,", ",1", "-1,0", "1,2,3"] {
            assert_eq!(HeartBeat::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn deserializes_a_partial_toml_table_and_rejects_unknown_keys() {
        let config: StompConfig = toml::from_str(
            "heart_beat = \"2000,0\"\nqueue_semantics = \"competing\"\nunroutable = \"error\"\n",
        )
        .unwrap();
        assert_eq!(config.heart_beat.send_ms, 2000);
        assert_eq!(config.queue_semantics, QueueSemantics::Competing);
        assert_eq!(config.unroutable, Unroutable::Error);
        assert_eq!(config.max_subscriptions, 1024);
        let err = toml::from_str::<StompConfig>("max_subscriptons = 3").unwrap_err();
        assert!(err.to_string().contains("max_subscriptons"), "{err}");
        assert!(toml::from_str::<StompConfig>("heart_beat = \"x\"").is_err());
    }

    #[test]
    fn max_frames_per_second_defaults_to_5000_and_zero_disables_it() {
        let config = StompConfig::default();
        assert_eq!(config.max_frames_per_second, 5000);
        assert!(config.frame_rate_bucket().is_some());
        let config: StompConfig = toml::from_str("max_frames_per_second = 0").unwrap();
        assert!(config.frame_rate_bucket().is_none());
        for bad in ["max_frames_per_second = -1", "max_frames_per_second = 1.5"] {
            let err = toml::from_str::<StompConfig>(bad).unwrap_err().to_string();
            assert!(err.contains("max_frames_per_second"), "{bad}: {err}");
        }
    }

    #[test]
    fn idle_timeout_is_off_by_default() {
        assert_eq!(StompConfig::default().idle_timeout_ms, 0);
        let config: StompConfig = toml::from_str("idle_timeout_ms = 500").unwrap();
        assert_eq!(config.idle_timeout_ms, 500);
        let err = toml::from_str::<StompConfig>("idle_timeout_ms = -5").unwrap_err();
        assert!(err.to_string().contains("idle_timeout_ms"), "{err}");
    }

    #[test]
    fn overflow_strategy_defaults_to_terminate() {
        let default = StompConfig::default();
        assert_eq!(default.overflow_strategy, OverflowStrategy::Terminate);
        let config: StompConfig = toml::from_str("overflow_strategy = \"drop\"").unwrap();
        assert_eq!(config.overflow_strategy, OverflowStrategy::Drop);
        let err = toml::from_str::<StompConfig>("overflow_strategy = \"discard\"").unwrap_err();
        assert!(err.to_string().contains("overflow_strategy"), "{err}");
    }

    #[test]
    fn the_defaults_validate() {
        StompConfig::default().validate().unwrap();
    }

    #[test]
    fn out_of_range_values_are_refused_naming_the_key() {
        for (toml, key) in [
            ("send_time_limit_ms = 0", "stomp.send_time_limit_ms"),
            ("connect_timeout_ms = 0", "stomp.connect_timeout_ms"),
            (
                "connect_timeout_ms = 18446744073709551615",
                "stomp.connect_timeout_ms",
            ),
            (
                "idle_timeout_ms = 18446744073709551615",
                "stomp.idle_timeout_ms",
            ),
            (
                "stats_log_period_s = 18446744073709551615",
                "stomp.stats_log_period_s",
            ),
            ("message_size_limit = 0", "stomp.message_size_limit"),
            ("max_headers = 0", "stomp.max_headers"),
            ("max_header_line = 10", "stomp.max_header_line"),
            ("max_subscriptions = 0", "stomp.max_subscriptions"),
            ("max_pending_acks = 0", "stomp.max_pending_acks"),
            ("max_pending_ack_bytes = 0", "stomp.max_pending_ack_bytes"),
            (
                "max_total_pending_ack_bytes = 0",
                "stomp.max_total_pending_ack_bytes",
            ),
            ("max_queues = 0", "stomp.max_queues"),
            ("relay = { pool_size = 0 }", "stomp.relay.pool_size"),
            ("relay = { prefixes = [] }", "stomp.relay.prefixes"),
            ("relay = { prefixes = [\"topic\"] }", "stomp.relay.prefixes"),
            (
                "relay = { heartbeat_ms = 3600001 }",
                "stomp.relay.heartbeat_ms",
            ),
            ("max_transactions = 0", "stomp.max_transactions"),
            ("max_transaction_bytes = 0", "stomp.max_transaction_bytes"),
            ("max_queue_messages = 0", "stomp.max_queue_messages"),
            ("max_queue_bytes = 0", "stomp.max_queue_bytes"),
            ("send_buffer_size_limit = 0", "stomp.send_buffer_size_limit"),
            ("event_capacity = 0", "stomp.event_capacity"),
            ("heart_beat = \"0,3600001\"", "stomp.heart_beat"),
            ("heartbeat_read_margin = 1.0", "stomp.heartbeat_read_margin"),
            ("heartbeat_read_margin = nan", "stomp.heartbeat_read_margin"),
            ("path_separator = \":\"", "stomp.path_separator"),
            ("user_prefix = \"\"", "stomp.user_prefix"),
            ("broker_prefixes = [\"\"]", "stomp.broker_prefixes"),
            ("principal_header = \"\"", "stomp.principal_header"),
            ("principal_header = \"a:b\"", "stomp.principal_header"),
        ] {
            let config: StompConfig = toml::from_str(toml).unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{toml}: {err}");
        }
        for ok in [
            "idle_timeout_ms = 0",
            "max_frames_per_second = 0",
            "stats_log_period_s = 0",
            "heart_beat = \"3600000,0\"",
            "connect_timeout_ms = 1",
        ] {
            let config: StompConfig = toml::from_str(ok).unwrap();
            config.validate().unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn relay_prefixes_reach_the_broker_and_user_destinations_are_not_among_them() {
        let config: StompConfig =
            toml::from_str("relay = { address = \"127.0.0.1:61613\" }").unwrap();
        config.validate().unwrap();
        let served = config.served_prefixes();
        assert!(served.contains(&"/exchange".to_string()));
        assert!(served.contains(&"/amq/queue".to_string()));
        let relay = config.relay.as_ref().unwrap();
        assert!(relay.relays("/exchange/amq.direct/k"));
        assert!(relay.relays("/topic"));
        assert!(!relay.relays("/topicx/a"));
        assert!(!relay.relays("/app/x"));
    }

    #[test]
    fn read_margin_never_goes_below_one_and_a_half() {
        let config = StompConfig {
            heartbeat_read_margin: 1.0,
            ..StompConfig::default()
        };
        assert_eq!(config.read_margin(), 1.5);
    }
}
