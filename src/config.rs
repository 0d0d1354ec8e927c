//! The gateway's TOML configuration, composed of each module's own section: `[server]`
//! (here: the listener), `[[service]]` ([`crate::sockjs::config`]), `[auth]`
//! ([`crate::auth`]), `[stomp]` ([`crate::stomp::config`]), `[admin]`
//! ([`crate::admin::config`]) and `[demo]` ([`crate::demo::config`]). Shared value types live in
//! the leaf [`types`], so no section imports back up.
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
//! Durations are given in seconds (integer or fractional). Loading a file reports every
//! problem it has at once, each with its key and line ([`locate`]).

mod locate;
pub mod types;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::sockjs::config::{DEFAULT_SOCKJS_URL, ServiceConfig, Transport};
pub use types::{ConfigError, OverflowStrategy, Problem, Problems};
use types::{listen_addr, seconds, write_seconds};

/// Where the gateway listens when neither the file nor `--listen` says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// The admin listener (publish API, presence, metrics, health, dashboard).
    #[serde(default)]
    pub admin: crate::admin::AdminConfig,
    /// HTTP application backends: `/app` destinations and lifecycle hooks (`[[backend]]`).
    #[serde(default, rename = "backend")]
    pub backends: Vec<crate::backend::BackendConfig>,
    /// Several nodes on Redis, and the durable per-user inbox.
    #[serde(default)]
    pub cluster: crate::cluster::ClusterConfig,
    /// The demo chat page on the main listener.
    #[serde(default)]
    pub demo: crate::demo::DemoConfig,
    /// The directory relative file names (key files) are resolved against: the config
    /// file's directory, or the working directory.
    #[serde(skip)]
    pub base_dir: std::path::PathBuf,
}

/// Listener-wide settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The HTTP listen address.
    #[serde(deserialize_with = "listen_addr")]
    pub listen: SocketAddr,
    /// How long a client may take to send request headers (slowloris guard).
    #[serde(deserialize_with = "seconds", serialize_with = "write_seconds")]
    pub header_read_timeout: Duration,
    /// The largest request head (request line plus headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// The most open connections over every listener (HTTP and STOMP TCP); None: unlimited.
    pub max_connections: Option<usize>,
    /// The most open connections from one client address; None: unlimited.
    pub max_connections_per_ip: Option<usize>,
    /// On SIGTERM or SIGINT, the window over which open sessions are told goodbye, spread
    /// evenly so clients do not all reconnect at once; the process exits when the last one
    /// is gone, or at the end of the window.
    #[serde(deserialize_with = "seconds", serialize_with = "write_seconds")]
    pub drain_timeout: Duration,
    /// Reverse proxies (addresses or CIDR ranges) whose `Forwarded`/`X-Forwarded-For`
    /// headers, and PROXY protocol headers on the STOMP TCP listener, name the client.
    pub trusted_proxies: Vec<String>,
    /// PEM certificate chain (leaf first): with `tls_key`, the HTTP listener speaks TLS only
    /// (`https://`, `wss://`), and `[stomp] tls_listen` uses the same pair. Relative to the
    /// config file.
    pub tls_cert: Option<String>,
    /// PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<String>,
    /// How long a client may take to complete the TLS handshake.
    #[serde(deserialize_with = "seconds", serialize_with = "write_seconds")]
    pub tls_handshake_timeout: Duration,
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
            drain_timeout: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// The names of the applications `app` may name.
pub const APP_NAMES: &[&str] = &[
    "stomp",
    "proxy",
    "echo",
    "close",
    "amplify",
    "broadcast",
    "ticker",
];

impl Config {
    /// Parse and validate a config from TOML text; relative file names resolve against the
    /// working directory.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_in(text, Path::new("."))
    }

    /// Parse and validate a config from TOML text; relative file names resolve against
    /// `base_dir`. Every problem of the text is reported, each with its key and line.
    pub fn from_toml_in(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let parsed = locate::parse::<Config>(text);
        let mut problems = parsed.problems.clone();
        if let Some(mut config) = parsed.value.as_ref().cloned() {
            config.base_dir = base_dir.to_path_buf();
            let mut checks = config.problems();
            if let Err(e) = crate::auth::Authenticator::from_config(&config.auth, &config.base_dir)
            {
                checks.add(e);
            }
            for mut problem in checks.into_vec() {
                if let Some(key) = &problem.key {
                    if parsed.reported(key) {
                        continue;
                    }
                    problem.line = parsed.line_of(key);
                }
                problems.push(problem);
            }
            if problems.is_empty() {
                return Ok(config);
            }
        }
        // File order; problems without a place last.
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(ConfigError::Problems(problems))
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
    /// 127.0.0.1:8080, with the demo page at `/demo` and no external service. The iframe
    /// page of `/stomp` loads sockjs-client from the demo's copy, not from a CDN.
    pub fn embedded() -> Self {
        let demo = crate::demo::DemoConfig::embedded();
        let mut stomp = ServiceConfig::new("/stomp", "stomp");
        stomp.sockjs_url = format!("{}/sockjs.min.js", demo.path);
        Config {
            server: ServerConfig::default(),
            services: vec![stomp, ServiceConfig::new("/echo", "echo")],
            auth: crate::auth::AuthConfig::default(),
            stomp: crate::stomp::StompConfig::default(),
            admin: crate::admin::AdminConfig::embedded(),
            backends: Vec::new(),
            cluster: crate::cluster::ClusterConfig::default(),
            demo,
            base_dir: std::path::PathBuf::from("."),
        }
    }

    /// The configuration as TOML, every default written out (secrets redacted); keys left
    /// out are unset (no limit, no value).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Parse(format!("cannot print: {e}")))
    }

    /// Settings that are valid but weaken security, one sentence each naming the key; the
    /// gateway logs them at WARN when it starts and `check-config` prints them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let jwt = self.auth.jwt.is_some();
        if let Some(header) = &self.stomp.principal_header {
            warnings.push(if jwt {
                format!(
                    "[stomp] principal_header = {header:?} is ignored: with [auth.jwt] the \
                     principal comes from the verified token"
                )
            } else {
                format!(
                    "[stomp] principal_header = {header:?}: a STOMP client names its own user \
                     with the CONNECT header {header:?} and nothing verifies it, so any client \
                     can act as any user and read their /user/... destinations; use [auth.jwt] \
                     outside trusted networks"
                )
            });
        }
        if let Some(jwt) = &self.auth.jwt
            && jwt.audience.is_empty()
        {
            warnings.push(
                "[auth.jwt] audience is empty: a token the issuer signed for any other \
                 service is accepted too; list this gateway's audience"
                    .to_owned(),
            );
        }
        warnings
    }

    /// The certificate and key files, resolved, when TLS is configured.
    pub fn tls_files(&self) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        let (cert, key) = (
            self.server.tls_cert.as_ref()?,
            self.server.tls_key.as_ref()?,
        );
        Some((
            crate::tls::resolve(&self.base_dir, Path::new(cert)),
            crate::tls::resolve(&self.base_dir, Path::new(key)),
        ))
    }

    /// Load the TLS configuration of `listener` (None without `[server] tls_cert`);
    /// `failures` counts failed handshakes over every listener.
    pub fn tls(
        &self,
        listener: crate::tls::Listener,
        failures: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<Option<crate::tls::Tls>, crate::tls::TlsError> {
        let Some((cert, key)) = self.tls_files() else {
            return Ok(None);
        };
        let timeout = self.server.tls_handshake_timeout;
        crate::tls::Tls::load(&cert, &key, listener, timeout, failures).map(Some)
    }

    fn tls_problems(&self, problems: &mut Problems) {
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(_), None) => problems.invalid(
                "server.tls_cert",
                "is set without server.tls_key: give both (the PEM certificate chain and its private key)",
            ),
            (None, Some(_)) => problems.invalid(
                "server.tls_key",
                "is set without server.tls_cert: give both (the PEM certificate chain and its private key)",
            ),
            (Some(_), Some(_)) => {
                if let Err(e) = self.tls(crate::tls::Listener::Http, Default::default()) {
                    let key = match e {
                        crate::tls::TlsError::Key { .. } => "server.tls_key",
                        _ => "server.tls_cert",
                    };
                    problems.invalid(key, e.to_string());
                }
            }
            (None, None) => {
                if self.stomp.tls_listen.is_some() {
                    problems.invalid(
                        "stomp.tls_listen",
                        "needs server.tls_cert and server.tls_key (STOMP over TLS uses the \
                         listener's certificate)",
                    );
                }
            }
        }
        if self.server.tls_handshake_timeout.is_zero() {
            problems.invalid(
                "server.tls_handshake_timeout",
                "must be greater than 0 seconds",
            );
        }
    }

    /// Check what serde cannot: prefixes, app names, sizes; every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.problems().into_result()
    }

    /// Every problem [`Config::validate`] reports.
    fn problems(&self) -> Problems {
        let mut problems = Problems::default();
        if let Err(e) = self.admin.validate(&self.base_dir) {
            problems.add(e);
        }
        for (field, v) in [
            ("server.max_connections", self.server.max_connections),
            (
                "server.max_connections_per_ip",
                self.server.max_connections_per_ip,
            ),
        ] {
            if v == Some(0) {
                problems.invalid(field, "must be greater than 0 (omit it for no limit)");
            }
        }
        if self.server.drain_timeout.is_zero() {
            problems.invalid(
                "server.drain_timeout",
                "must be greater than 0 seconds (0.5 stops quickly)",
            );
        }
        if !(1024..=1 << 20).contains(&self.server.max_header_bytes) {
            problems.invalid(
                "server.max_header_bytes",
                format!(
                    "{} is not in 1024..=1048576 (a smaller limit refuses ordinary requests)",
                    self.server.max_header_bytes
                ),
            );
        }
        if let Err(e) = self.stomp.validate() {
            problems.add(e);
        }
        self.tls_problems(&mut problems);
        for (key, message) in self.demo.problems(&self.services) {
            problems.invalid(key, message);
        }
        if let Err(e) = self.cluster.validate(&self.stomp.user_prefix()) {
            problems.invalid(&format!("cluster.{}", e.key), e.message);
        }
        if self.cluster.redis.is_some()
            && (self.stomp.broker_prefixes.is_empty()
                || self
                    .stomp
                    .broker_prefixes
                    .iter()
                    .any(|p| !p.starts_with('/')))
        {
            problems.invalid(
                "stomp.broker_prefixes",
                "with [cluster] redis set, name the broker prefixes and start each with '/' \
                 (only such destinations cross nodes)",
            );
        }
        if let Err(message) = crate::proxy::TrustedProxies::parse(&self.server.trusted_proxies) {
            problems.invalid("server.trusted_proxies", message);
        }
        if self.services.is_empty() {
            problems.invalid("service", "at least one [[service]] is required");
        }
        if !self.stomp.allow_anonymous
            && self.stomp.principal_header.is_none()
            && self.auth.jwt.is_none()
            && self.auth.users_file.is_none()
        {
            problems.invalid(
                "stomp.allow_anonymous",
                "false refuses every STOMP client: without [auth.jwt], [auth] users_file or \
                 [stomp] principal_header no session can have a user",
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let at = format!("service[{i}]");
            s.check(&at, &mut problems);
            if !self.auth.cookie.is_empty()
                && (s.allowed_origins.is_empty()
                    || !s
                        .allowed_origins
                        .iter()
                        .all(|p| crate::sockjs::origin_pattern_is_specific(p)))
            {
                problems.invalid(
                    "auth.cookie",
                    format!(
                        "is set, so {at}.allowed_origins must list the origins of your pages \
                         (none of them `*`, `https://*` or the like): a browser sends the cookie \
                         with requests from any site, and only the origin check tells them apart"
                    ),
                );
            }
            if let Err(e) = proxy_config(s).validate(&s.app, &self.base_dir) {
                problems.invalid(&format!("{at}.{}", e.key), e.message);
            }
            if !s.prefix.is_empty() && !seen.insert(s.prefix.clone()) {
                problems.invalid(
                    &format!("{at}.prefix"),
                    format!("{:?} is used by two services", s.prefix),
                );
            }
            if s.app.is_empty() {
                problems.invalid(
                    &format!("{at}.app"),
                    format!(
                        "missing: every [[service]] names its application, one of {}",
                        APP_NAMES.join(", ")
                    ),
                );
            } else if !APP_NAMES.contains(&s.app.as_str()) {
                problems.invalid(
                    &format!("{at}.app"),
                    format!(
                        "unknown app {:?}; expected one of {}",
                        s.app,
                        APP_NAMES.join(", ")
                    ),
                );
            }
        }
        if let Err(e) = crate::backend::config::validate(&self.backends, &self.stomp) {
            problems.add(e);
        }
        problems
    }
}

/// The `app = "proxy"` keys of a service, for the proxy application that owns their meaning.
pub fn proxy_config(service: &ServiceConfig) -> crate::apps::proxy::ProxyConfig {
    crate::apps::proxy::ProxyConfig {
        upstream: service.upstream.clone(),
        upstream_subprotocols: service.upstream_subprotocols.clone(),
        forward_headers: service.forward_headers.clone(),
        connect_timeout_ms: service.connect_timeout_ms,
        upstream_ca_file: service.upstream_ca_file.clone(),
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
    fn the_relay_combines_with_the_cluster_and_its_passcodes_are_not_printed() {
        let relay = "[[service]]\nprefix = \"/s\"\napp = \"stomp\"\n[stomp.relay]\nsystem_passcode = \"hunter2\"\npasscode = \"hunter3\"\nmode = \"per-session\"\n";
        let c = Config::from_toml(relay).unwrap();
        let printed = c.to_toml().unwrap();
        assert!(
            !printed.contains("hunter2")
                && !printed.contains("hunter3")
                && printed.contains("<redacted>")
                && printed.contains("mode = \"per-session\""),
            "{printed}"
        );
        // With the cluster: the relay serves its prefixes, the cluster link the rest.
        for cluster in [
            "[cluster]\nredis = \"redis://127.0.0.1:6379\"\n",
            "[cluster.inbox]\ndestinations = [\"/user/queue/n\"]\n",
        ] {
            let both = Config::from_toml(&format!("{relay}{cluster}"));
            assert!(both.is_ok(), "{both:?}");
        }
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
    fn every_problem_of_a_file_is_reported_with_its_line() {
        let text = "[server]\nlisten = \"localhost:8080\"\n\n[[service]]\nprefix = \"/e\"\n\
                    app = \"echo\"\nheartbeat_delay = \"ten\"\n\
                    allowed_origins = [\"app.example.com\"]\n";
        let problems = match Config::from_toml(text) {
            Err(ConfigError::Problems(problems)) => problems,
            other => panic!("expected problems, got {other:?}"),
        };
        let found: Vec<(Option<usize>, Option<&str>)> = problems
            .iter()
            .map(|p| (p.line, p.key.as_deref()))
            .collect();
        assert_eq!(
            found,
            [
                (Some(2), Some("server.listen")),
                (Some(7), Some("service[0].heartbeat_delay")),
                (Some(8), Some("service[0].allowed_origins")),
            ]
        );
        assert!(
            problems[0].message.contains("127.0.0.1:8080"),
            "{problems:?}"
        );
        assert!(
            problems[1].message.contains("number of seconds"),
            "{problems:?}"
        );
        assert!(
            problems[2].message.contains("https://app.example.com"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_missing_prefix_or_app_is_named() {
        let err = Config::from_toml("[[service]]\nresponse_limit = 10\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("service[0].prefix") && err.contains("service[0].app"),
            "{err}"
        );
    }

    #[test]
    fn drain_timeout_defaults_to_ten_seconds_and_zero_is_refused() {
        let c = Config::from_toml("[[service]]\nprefix = \"/e\"\napp = \"echo\"\n").unwrap();
        assert_eq!(c.server.drain_timeout, Duration::from_secs(10));
        let err = Config::from_toml(
            "[server]\ndrain_timeout = 0\n[[service]]\nprefix = \"/e\"\napp = \"echo\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.drain_timeout"), "{err}");
    }

    #[test]
    fn the_printed_configuration_reads_back_the_same() {
        let mut config = Config::embedded();
        config.services[0].idle_timeout = Some(Duration::from_millis(1500));
        config.server.max_connections = Some(10);
        config.stomp.tcp_listen = Some("127.0.0.1:61613".parse().unwrap());
        let printed = config.to_toml().unwrap();
        let again = Config::from_toml(&printed).unwrap();
        assert_eq!(again.to_toml().unwrap(), printed);
        assert_eq!(
            again.services[0].idle_timeout,
            Some(Duration::from_millis(1500))
        );
        assert_eq!(again.server.max_connections, Some(10));
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err =
            Config::from_toml("[[service]]\nprefix = \"/e\"\napp = \"echo\"\nwebsocket = 3\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("websocket"), "{err}");
    }

    #[test]
    fn proxy_keys_are_checked_with_the_service() {
        let c = Config::from_toml(
            "[[service]]\nprefix = \"/ws\"\napp = \"proxy\"\nupstream = \"ws://127.0.0.1:15674/ws\"\n\
             upstream_subprotocols = [\"v12.stomp\"]\nforward_headers = [\"cookie\"]\nconnect_timeout_ms = 250\n",
        )
        .unwrap();
        assert_eq!(c.services[0].connect_timeout_ms, Some(250));
        for (text, key) in [
            ("app = \"proxy\"\n", "service[0].upstream"),
            (
                "app = \"echo\"\nupstream = \"ws://a/\"\n",
                "service[0].upstream",
            ),
            (
                "app = \"proxy\"\nupstream = \"ws://a/\"\nconnect_timeout_ms = \"x\"\n",
                "connect_timeout_ms",
            ),
            (
                "app = \"proxy\"\nupstream = \"ws://a/\"\nforward_header = []\n",
                "forward_header",
            ),
        ] {
            let err = Config::from_toml(&format!("[[service]]\nprefix = \"/ws\"\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn header_asserted_identity_is_opt_in_and_warned_about() {
        let service = "[[service]]\nprefix = \"/s\"\napp = \"stomp\"\n";
        let c = Config::from_toml(service).unwrap();
        assert_eq!(c.stomp.principal_header, None);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        let c =
            Config::from_toml(&format!("[stomp]\nprincipal_header = \"uid\"\n{service}")).unwrap();
        let warnings = c.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("principal_header") && warnings[0].contains("\"uid\""),
            "{warnings:?}"
        );
        let err = Config::from_toml(&format!("[stomp]\nallow_anonymous = false\n{service}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("stomp.allow_anonymous"), "{err}");
        let c = Config::from_toml(&format!(
            "[stomp]\nallow_anonymous = false\nprincipal_header = \"uid\"\n{service}"
        ))
        .unwrap();
        assert!(!c.stomp.allow_anonymous);
    }

    #[test]
    fn a_jwt_without_an_audience_is_warned_about() {
        let jwt = format!(
            "[auth.jwt]\nalgorithm = \"HS256\"\nsecret = \"{}\"\n",
            "s".repeat(32)
        );
        let service = "[[service]]\nprefix = \"/s\"\napp = \"stomp\"\n";
        let c = Config::from_toml(&format!("{jwt}{service}")).unwrap();
        let warnings = c.warnings();
        assert!(
            warnings.len() == 1 && warnings[0].contains("audience"),
            "{warnings:?}"
        );
        let c = Config::from_toml(&format!("{jwt}audience = [\"gw\"]\n{service}")).unwrap();
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn a_tiny_max_header_bytes_and_bad_stomp_values_are_refused() {
        let service = "[[service]]\nprefix = \"/e\"\napp = \"echo\"\n";
        for (toml, key) in [
            (
                "[server]\nmax_header_bytes = 0\n",
                "server.max_header_bytes",
            ),
            (
                "[stomp]\nsend_time_limit_ms = 0\n",
                "stomp.send_time_limit_ms",
            ),
        ] {
            let err = Config::from_toml(&format!("{toml}{service}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }
}
