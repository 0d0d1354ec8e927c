//! The `[admin]` section: where the admin listener listens, its API key, and its limits.
//!
//! ```toml
//! [admin]
//! listen = "127.0.0.1:9090"          # omit for no admin listener
//! api_key_file = "admin.key"         # or api_key = "…"; required off loopback
//! max_body_bytes = 1048576
//! max_batch = 1000
//! idempotency_window_s = 300
//! idempotency_max_keys = 100000
//! allow_destinations = ["/topic/**", "/queue/**"]   # empty: every destination
//! ```
//!
//! A config file without `[admin]` (or without `listen`) has no admin listener; the embedded
//! default serves one on 127.0.0.1:9090. Keys follow `[stomp]`'s convention: integers with
//! their unit in the name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::types::{optional_listen_addr, write_redacted};

use crate::config::types::ConfigError;

/// Where the embedded default serves the admin listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

/// The admin listener's settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The admin listener's address; None: no admin listener (`--admin-listen` overrides).
    #[serde(
        deserialize_with = "optional_listen_addr",
        skip_serializing_if = "Option::is_none"
    )]
    pub listen: Option<SocketAddr>,
    /// The API key clients send as `Authorization: Bearer <key>`.
    #[serde(
        serialize_with = "write_redacted",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_key: Option<String>,
    /// A file holding the API key (surrounding whitespace ignored); relative to the config
    /// file's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The most messages one `POST /api/batch` may carry.
    pub max_batch: usize,
    /// How long an `idempotency_key` is remembered, in seconds.
    pub idempotency_window_s: u64,
    /// The most `idempotency_key`s remembered at once; the oldest is forgotten first.
    pub idempotency_max_keys: usize,
    /// Destination patterns (Ant style, like `[[stomp.acl]]`) the API may publish to; empty
    /// allows every destination. Separate from the client ACLs.
    pub allow_destinations: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            api_key: None,
            api_key_file: None,
            max_body_bytes: 1024 * 1024,
            max_batch: 1000,
            idempotency_window_s: 300,
            idempotency_max_keys: 100_000,
            allow_destinations: Vec::new(),
        }
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: format!("admin.{key}"),
        message: message.into(),
    }
}

impl AdminConfig {
    /// The embedded default's admin section: a listener on [`DEFAULT_ADMIN_LISTEN`].
    pub fn embedded() -> AdminConfig {
        AdminConfig {
            listen: DEFAULT_ADMIN_LISTEN.parse().ok(),
            ..AdminConfig::default()
        }
    }

    /// How long idempotency keys are remembered.
    pub fn idempotency_window(&self) -> Duration {
        Duration::from_secs(self.idempotency_window_s)
    }

    /// Check the section, reading the key file (relative to `base_dir`) if one is named.
    pub fn validate(&self, base_dir: &Path) -> Result<(), ConfigError> {
        let key = self.api_key(base_dir)?;
        if let Some(addr) = self.listen
            && !addr.ip().is_loopback()
            && key.is_none()
        {
            return Err(invalid(
                "listen",
                format!(
                    "{addr} is not a loopback address, so the admin API needs a key: set \
                     admin.api_key or admin.api_key_file"
                ),
            ));
        }
        for (field, value) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_batch", self.max_batch),
            ("idempotency_max_keys", self.idempotency_max_keys),
            ("idempotency_window_s", self.idempotency_window_s as usize),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        // Ten years, like every other duration: far from overflowing an Instant.
        if self.idempotency_window_s > 315_360_000 {
            return Err(invalid(
                "idempotency_window_s",
                "must be at most 315360000 (ten years)",
            ));
        }
        for (i, pattern) in self.allow_destinations.iter().enumerate() {
            if !pattern.starts_with('/') {
                return Err(invalid(
                    &format!("allow_destinations[{i}]"),
                    format!("{pattern:?} must start with '/'"),
                ));
            }
        }
        Ok(())
    }

    /// The API key, from `api_key` or `api_key_file`; None when neither is set.
    pub fn api_key(&self, base_dir: &Path) -> Result<Option<String>, ConfigError> {
        let key = match (&self.api_key, &self.api_key_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "api_key_file",
                    "set admin.api_key or admin.api_key_file, not both",
                ));
            }
            (Some(key), None) => key.clone(),
            (None, Some(file)) => {
                let path = base_dir.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    invalid(
                        "api_key_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                text.trim().to_owned()
            }
            (None, None) => return Ok(None),
        };
        if key.is_empty() {
            let field = match self.api_key {
                Some(_) => "api_key",
                None => "api_key_file",
            };
            return Err(invalid(field, "the API key is empty"));
        }
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> AdminConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn defaults_and_no_listener_without_listen() {
        let c = parse("");
        assert_eq!(c.listen, None);
        assert_eq!(c.max_body_bytes, 1024 * 1024);
        assert_eq!(c.max_batch, 1000);
        assert_eq!(c.idempotency_window(), Duration::from_secs(300));
        assert_eq!(c.idempotency_max_keys, 100_000);
        c.validate(Path::new(".")).unwrap();
        assert_eq!(
            AdminConfig::embedded().listen.unwrap().to_string(),
            "127.0.0.1:9090"
        );
    }

    #[test]
    fn a_non_loopback_listener_needs_a_key() {
        let err = parse("listen = \"0.0.0.0:9090\"")
            .validate(Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("admin.listen") && err.contains("api_key"),
            "{err}"
        );
        parse("listen = \"0.0.0.0:9090\"\napi_key = \"k\"")
            .validate(Path::new("."))
            .unwrap();
    }

    #[test]
    fn the_key_file_is_read_relative_to_the_config() {
        let dir = std::env::temp_dir().join(format!("admin-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("k"), "  secret\n").unwrap();
        let c = parse("api_key_file = \"k\"");
        assert_eq!(c.api_key(&dir).unwrap().as_deref(), Some("secret"));
        let err = parse("api_key_file = \"missing\"")
            .api_key(&dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("admin.api_key_file"), "{err}");
        let err = parse("api_key = \"a\"\napi_key_file = \"k\"")
            .api_key(&dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn zero_limits_and_relative_patterns_are_refused() {
        for text in [
            "max_batch = 0",
            "max_body_bytes = 0",
            "idempotency_max_keys = 0",
            "idempotency_window_s = 0",
            "allow_destinations = [\"topic/x\"]",
        ] {
            assert!(parse(text).validate(Path::new(".")).is_err(), "{text}");
        }
    }
}
