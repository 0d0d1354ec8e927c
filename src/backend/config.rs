//! `[[backend]]`: one HTTP application backend per table, validated at load with errors that
//! name the key (`backend[0].url`).
//!
//! ```toml
//! [[backend]]
//! destinations = ["/app/**"]           # application destinations it owns (Ant patterns)
//! url = "http://127.0.0.1:9000/stomp"  # SEND and SUBSCRIBE are POSTed here
//! timeout_ms = 5000
//! max_in_flight = 256
//! connect_url = "http://127.0.0.1:9000/connect"        # optional CONNECT hook
//! disconnect_url = "http://127.0.0.1:9000/disconnect"  # optional, batched
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};

use crate::config::types::ConfigError;
use crate::stomp::StompConfig;
use crate::stomp::destination::{Route, Router};

/// What a client gets when its frame fails at the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// ERROR `Backend error` (with `receipt-id`), then close: the spec's rule.
    Close,
    /// A MESSAGE on the session's `/user/queue/errors` instead, and the session stays open
    /// (Spring's `@MessageExceptionHandler` with `@SendToUser("/queue/errors")`).
    UserQueue,
}

/// One `[[backend]]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// Application destinations this backend owns, as Ant patterns over `/` (`*` matches
    /// within a segment, `**` any number of segments, `{name}` one segment). The first
    /// backend whose pattern matches takes the frame.
    pub destinations: Vec<String>,
    /// Where SEND and SUBSCRIBE frames are POSTed (plain `http://`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How long one request may take, connect to last byte of the answer.
    pub timeout_ms: u64,
    /// Requests in flight to this backend at once, over all sessions.
    pub max_in_flight: usize,
    /// How long a frame may wait for one of the `max_in_flight` slots before it fails.
    pub queue_timeout_ms: u64,
    /// Frames of one session that may wait for this backend (the one in flight included).
    pub max_queued_per_session: usize,
    /// What a failed frame gives the client.
    pub on_error: OnError,
    /// The CONNECT hook: decides who may connect, and as whom.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_url: Option<String>,
    /// Told about ended sessions, in batches, fire-and-forget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnect_url: Option<String>,
    /// Extra request headers sent with every request (e.g. a shared secret); their values
    /// are printed redacted.
    #[serde(serialize_with = "write_redacted_values")]
    pub headers: BTreeMap<String, String>,
    /// The largest answer accepted, in bytes.
    pub max_response_bytes: usize,
    /// Where a message answering a SEND to `/app/x` goes without a destination: this + `/x`
    /// (Spring's `@SendTo` default).
    pub default_destination_prefix: String,
    /// The user destination a message sent "to the user" goes to: `/user/{name}` + this +
    /// `/x` (Spring's `@SendToUser` default).
    pub default_user_destination_prefix: String,
    /// The most ended sessions one disconnect request carries.
    pub disconnect_batch_size: usize,
    /// Ended sessions waiting to be told; beyond it new ones are dropped and counted.
    pub disconnect_queue_size: usize,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            destinations: Vec::new(),
            url: None,
            timeout_ms: 5_000,
            max_in_flight: 256,
            queue_timeout_ms: 1_000,
            max_queued_per_session: 64,
            on_error: OnError::Close,
            connect_url: None,
            disconnect_url: None,
            headers: BTreeMap::new(),
            max_response_bytes: 1024 * 1024,
            default_destination_prefix: "/topic".into(),
            default_user_destination_prefix: "/queue".into(),
            disconnect_batch_size: 100,
            disconnect_queue_size: 10_000,
        }
    }
}

/// Writes a header map with every value as `"<redacted>"`: they may hold shared secrets.
fn write_redacted_values<S: Serializer>(
    headers: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(headers.keys().map(|name| (name, "<redacted>")))
}

/// Request headers the gateway sets itself.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
];

/// The longest `timeout_ms` / `queue_timeout_ms` accepted: one day.
const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// Check every `[[backend]]` against itself and the `[stomp]` prefixes.
pub fn validate(backends: &[BackendConfig], stomp: &StompConfig) -> Result<(), ConfigError> {
    let router = Router::new(stomp);
    let mut hook_owner: Option<usize> = None;
    for (i, backend) in backends.iter().enumerate() {
        let key = |field: &str| format!("backend[{i}].{field}");
        backend.validate(&key, &router)?;
        if backend.connect_url.is_some() {
            if let Some(first) = hook_owner {
                return Err(invalid(
                    &key("connect_url"),
                    format!(
                        "only one backend may decide CONNECT, and backend[{first}] has a connect_url"
                    ),
                ));
            }
            hook_owner = Some(i);
        }
    }
    Ok(())
}

impl BackendConfig {
    fn validate(&self, key: &dyn Fn(&str) -> String, router: &Router) -> Result<(), ConfigError> {
        match (&self.url, self.destinations.is_empty()) {
            (None, true) if self.connect_url.is_none() && self.disconnect_url.is_none() => {
                return Err(invalid(
                    &key("url"),
                    "a backend needs destinations and a url, a connect_url, or a disconnect_url"
                        .into(),
                ));
            }
            (None, false) => {
                return Err(invalid(
                    &key("url"),
                    "is required: destinations are forwarded to it".into(),
                ));
            }
            (Some(_), true) => {
                return Err(invalid(
                    &key("destinations"),
                    "is empty, so nothing would be forwarded to url; list the application \
                     destinations this backend owns, e.g. [\"/app/**\"]"
                        .into(),
                ));
            }
            _ => {}
        }
        for (j, pattern) in self.destinations.iter().enumerate() {
            let key = key(&format!("destinations[{j}]"));
            if !pattern.starts_with('/') {
                return Err(invalid(&key, format!("{pattern:?} must start with '/'")));
            }
            if !matches!(router.route(pattern), Route::Application { .. }) {
                return Err(invalid(
                    &key,
                    format!(
                        "{pattern:?} is not under an application prefix ([stomp] \
                         application_prefixes), so no frame could ever reach it"
                    ),
                ));
            }
        }
        for (field, url) in [
            ("url", &self.url),
            ("connect_url", &self.connect_url),
            ("disconnect_url", &self.disconnect_url),
        ] {
            if let Some(url) = url {
                check_url(url).map_err(|message| invalid(&key(field), message))?;
            }
        }
        for (field, value) in [
            ("timeout_ms", self.timeout_ms),
            ("queue_timeout_ms", self.queue_timeout_ms),
        ] {
            if value > MAX_TIMEOUT_MS || (field == "timeout_ms" && value == 0) {
                return Err(invalid(
                    &key(field),
                    format!(
                        "must be between {} and {MAX_TIMEOUT_MS}",
                        u64::from(field == "timeout_ms")
                    ),
                ));
            }
        }
        for (field, value) in [
            ("max_in_flight", self.max_in_flight),
            ("max_queued_per_session", self.max_queued_per_session),
            ("max_response_bytes", self.max_response_bytes),
            ("disconnect_batch_size", self.disconnect_batch_size),
            ("disconnect_queue_size", self.disconnect_queue_size),
        ] {
            if value == 0 {
                return Err(invalid(&key(field), "must be greater than 0".into()));
            }
        }
        for (field, prefix) in [
            (
                "default_destination_prefix",
                &self.default_destination_prefix,
            ),
            (
                "default_user_destination_prefix",
                &self.default_user_destination_prefix,
            ),
        ] {
            let sample = format!("{}/x", prefix.trim_end_matches('/'));
            if !prefix.starts_with('/') || router.route(&sample) != Route::Broker {
                return Err(invalid(
                    &key(field),
                    format!(
                        "{prefix:?} must be a broker prefix ([stomp] broker_prefixes), e.g. \"/topic\""
                    ),
                ));
            }
        }
        for (name, value) in &self.headers {
            let field = key(&format!("headers.{name}"));
            let parsed = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(&field, "is not a valid HTTP header name".into()))?;
            if RESERVED_HEADERS.contains(&parsed.as_str()) {
                return Err(invalid(&field, "is set by the gateway".into()));
            }
            http::HeaderValue::from_str(value)
                .map_err(|_| invalid(&field, "is not a valid HTTP header value".into()))?;
        }
        Ok(())
    }
}

/// A backend URL must be plain `http://host[:port]/path`.
fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{url:?}: https is not supported; reach the backend over http (on loopback or \
                 a private network), or through a local TLS proxy"
            ));
        }
        _ => return Err(format!("{url:?} must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml: &str) -> Result<(), String> {
        #[derive(Deserialize)]
        struct File {
            backend: Vec<BackendConfig>,
        }
        let file: File = toml::from_str(toml).map_err(|e| e.to_string())?;
        validate(&file.backend, &StompConfig::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_plain_backend_is_valid_with_the_documented_defaults() {
        check("[[backend]]\ndestinations = [\"/app/**\"]\nurl = \"http://127.0.0.1:9000/stomp\"\n")
            .unwrap();
        let d = BackendConfig::default();
        assert_eq!(
            (d.timeout_ms, d.max_in_flight, d.on_error),
            (5000, 256, OnError::Close)
        );
    }

    #[test]
    fn mistakes_name_their_key() {
        let cases = [
            (
                "destinations = [\"/app/**\"]\n",
                "backend[0].url",
                "required",
            ),
            ("url = \"http://h/x\"\n", "backend[0].destinations", "empty"),
            (
                "destinations = [\"/topic/**\"]\nurl = \"http://h/x\"\n",
                "backend[0].destinations[0]",
                "application prefix",
            ),
            (
                "destinations = [\"app/**\"]\nurl = \"http://h/x\"\n",
                "backend[0].destinations[0]",
                "start with",
            ),
            (
                "destinations = [\"/app/**\"]\nurl = \"https://h/x\"\n",
                "backend[0].url",
                "https",
            ),
            (
                "destinations = [\"/app/**\"]\nurl = \"ftp://h/x\"\n",
                "backend[0].url",
                "http://",
            ),
            (
                "destinations = [\"/app/**\"]\nurl = \"http://h/x\"\ntimeout_ms = 0\n",
                "backend[0].timeout_ms",
                "between",
            ),
            (
                "destinations = [\"/app/**\"]\nurl = \"http://h/x\"\nmax_in_flight = 0\n",
                "backend[0].max_in_flight",
                "greater",
            ),
            (
                "destinations = [\"/app/**\"]\nurl = \"http://h/x\"\ndefault_destination_prefix = \"/app\"\n",
                "backend[0].default_destination_prefix",
                "broker prefix",
            ),
            (
                "destinations = [\"/app/**\"]\nurl = \"http://h/x\"\nheaders = { host = \"x\" }\n",
                "backend[0].headers.host",
                "set by the gateway",
            ),
            (
                "destinations = [\"/app/**\"]\nurl = \"http://h/x\"\nheaders = { \"a b\" = \"x\" }\n",
                "backend[0].headers.a b",
                "header name",
            ),
            ("timeout_ms = 5\n", "backend[0].url", "needs destinations"),
        ];
        for (body, key, needle) in cases {
            let err = check(&format!("[[backend]]\n{body}")).unwrap_err();
            assert!(
                err.contains(&format!("`{key}`")) && err.contains(needle),
                "{body}: {err}"
            );
        }
        let err = check("[[backend]]\nurl = \"http://h/x\"\ndestinations = [\"/app/**\"]\non_error = \"retry\"\n").unwrap_err();
        assert!(
            err.contains("on_error") && err.contains("user-queue"),
            "{err}"
        );
        let err =
            check("[[backend]]\nurl = \"http://h/x\"\ndestinations = [\"/app/**\"]\ntimeout = 5\n")
                .unwrap_err();
        assert!(err.contains("unknown field `timeout`"), "{err}");
    }

    #[test]
    fn only_one_backend_decides_connect() {
        let err = check(
            "[[backend]]\nconnect_url = \"http://h/c\"\n[[backend]]\nconnect_url = \"http://h/d\"\n",
        )
        .unwrap_err();
        assert!(
            err.contains("`backend[1].connect_url`") && err.contains("backend[0]"),
            "{err}"
        );
    }
}
