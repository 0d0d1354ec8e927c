//! Authentication: who a client is.
//!
//! Bearer tokens are JWTs (HS256/384/512, RS256, ES256) checked for signature, `exp`, `nbf`,
//! `iss` and `aud` with a configurable leeway. A token may arrive in the SockJS/WebSocket
//! handshake (`?access_token=`, an `Authorization: Bearer` header, or a named cookie) for
//! clients that cannot set headers, or later in-band (the STOMP CONNECT frame), so this
//! module only verifies; carriers and apps decide where to look.
//!
//! Passwords (STOMP `login`/`passcode`) are checked against a users file (`users.rs`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::types::ConfigError;
use crate::session::Principal;

pub mod users;

/// The `[auth]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether clients without a token (or a password login) are served. Defaults to true
    /// without `[auth.jwt]` and `users_file`, and to false with either.
    pub anonymous: Option<bool>,
    /// JWT verification; absent means tokens are not accepted.
    pub jwt: Option<JwtConfig>,
    /// The claim that names the principal.
    pub principal_claim: String,
    /// The claim holding role names (a string or a list of strings).
    pub roles_claim: String,
    /// The query parameter a handshake may carry a token in; empty disables it.
    pub query_param: String,
    /// The cookie a handshake may carry a token in; empty disables it.
    pub cookie: String,
    /// A STOMP CONNECT header that may carry the token, besides `Authorization: Bearer` and
    /// `passcode`; empty disables it.
    pub connect_header: String,
    /// A users file for STOMP `login`/`passcode` logins (`users.rs` describes the format),
    /// relative to the config file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_file: Option<String>,
    /// How many password checks may run at once (each takes tens of milliseconds of CPU);
    /// unset: one per CPU core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_workers: Option<usize>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            anonymous: None,
            jwt: None,
            principal_claim: "sub".into(),
            roles_claim: "roles".into(),
            query_param: "access_token".into(),
            cookie: String::new(),
            connect_header: "token".into(),
            users_file: None,
            password_workers: None,
        }
    }
}

/// The `[auth.jwt]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// HS256, HS384, HS512, RS256 or ES256.
    pub algorithm: String,
    /// The shared secret for HS* (printed redacted by `print-config`).
    #[serde(
        default,
        serialize_with = "crate::config::types::write_redacted",
        skip_serializing_if = "Option::is_none"
    )]
    pub secret: Option<String>,
    /// A file holding the shared secret for HS* (trailing newline ignored).
    #[serde(default)]
    pub secret_file: Option<String>,
    /// A PEM public key for RS256/ES256.
    #[serde(default)]
    pub public_key: Option<String>,
    /// A file holding the PEM public key for RS256/ES256.
    #[serde(default)]
    pub public_key_file: Option<String>,
    /// Accepted issuers (`iss`); empty accepts any.
    #[serde(default)]
    pub issuer: Vec<String>,
    /// Accepted audiences (`aud`); empty accepts any.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway: u64,
}

fn default_leeway() -> u64 {
    30
}

/// The largest `leeway` accepted, in seconds (one hour).
const MAX_LEEWAY: u64 = 3600;

/// Why a token was refused; the texts go into ERROR frames and 401 bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: present a bearer token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid (nbf)")]
    NotYetValid,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token has no {0:?} claim naming the principal")]
    NoPrincipal(String),
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("tokens are not accepted: no [auth.jwt] is configured")]
    NotConfigured,
}

/// Verifies tokens per the `[auth]` config.
pub struct Authenticator {
    /// Whether clients without a token are served.
    anonymous: bool,
    /// The key and rules; None when no JWT is configured.
    jwt: Option<(DecodingKey, Validation)>,
    /// The claim naming the principal.
    principal_claim: String,
    /// The claim holding roles.
    roles_claim: String,
    /// Handshake query parameter, if enabled.
    query_param: Option<String>,
    /// Handshake cookie, if enabled.
    cookie: Option<String>,
    /// The users file for password logins, if configured.
    users: Option<Arc<users::UserStore>>,
}

impl Authenticator {
    /// Build from config; key files are read relative to `base_dir`.
    pub fn from_config(config: &AuthConfig, base_dir: &Path) -> Result<Arc<Self>, ConfigError> {
        let jwt = match &config.jwt {
            Some(j) => Some(build_jwt(j, base_dir)?),
            None => None,
        };
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let users = match &config.users_file {
            Some(file) => Some(Arc::new(load_users(config, base_dir, file)?)),
            None => None,
        };
        Ok(Arc::new(Authenticator {
            anonymous: config.anonymous.unwrap_or(jwt.is_none() && users.is_none()),
            jwt,
            principal_claim: config.principal_claim.clone(),
            roles_claim: config.roles_claim.clone(),
            query_param: non_empty(&config.query_param),
            cookie: non_empty(&config.cookie),
            users,
        }))
    }

    /// No tokens, everyone anonymous: the embedded default.
    pub fn anonymous_only() -> Arc<Self> {
        Arc::new(Authenticator {
            anonymous: true,
            jwt: None,
            principal_claim: "sub".into(),
            roles_claim: "roles".into(),
            query_param: None,
            cookie: None,
            users: None,
        })
    }

    /// The users file for password logins, if configured.
    pub fn users(&self) -> Option<&Arc<users::UserStore>> {
        self.users.as_ref()
    }

    /// Whether a JWT verifier is configured.
    pub fn verifies_tokens(&self) -> bool {
        self.jwt.is_some()
    }

    /// Whether a handshake token may come from a cookie (`[auth] cookie`), which every page a
    /// browser loads sends along: origin checks must then hold on every transport.
    pub fn reads_cookie(&self) -> bool {
        self.cookie.is_some()
    }

    /// Whether clients without a token are served.
    pub fn anonymous_allowed(&self) -> bool {
        self.anonymous
    }

    /// Verify a token and return its principal.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let Some((key, validation)) = &self.jwt else {
            return Err(AuthError::NotConfigured);
        };
        let data =
            jsonwebtoken::decode::<Value>(token.trim(), key, validation).map_err(map_jwt_error)?;
        let claims = data.claims;
        let name = match claims.get(&self.principal_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(AuthError::NoPrincipal(self.principal_claim.clone())),
        };
        let roles = match claims.get(&self.roles_claim) {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let expires_at = credential_end(claims.get("exp"), validation.leeway);
        Ok(Principal {
            name,
            roles,
            expires_at,
        })
    }

    /// The token a handshake carries, if any: `Authorization: Bearer`, the query parameter,
    /// or the cookie, in that order.
    pub fn handshake_token<'a>(
        &self,
        headers: &'a HeaderMap,
        query: Option<&'a str>,
    ) -> Option<String> {
        if let Some(token) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
        {
            return Some(token.to_string());
        }
        if let (Some(param), Some(query)) = (&self.query_param, query) {
            for pair in query.split('&') {
                if let Some((k, v)) = pair.split_once('=')
                    && k == param
                {
                    return percent_encoding::percent_decode_str(v)
                        .decode_utf8()
                        .ok()
                        .map(|v| v.into_owned());
                }
            }
        }
        let name = self.cookie.as_ref()?;
        cookie(headers, name).map(str::to_string)
    }

    /// `url` (a path and query) with the value of the token query parameter replaced by
    /// `redacted`, so the URL applications and logs see carries no credential.
    pub fn redacted_url(&self, url: &str) -> String {
        let (Some(param), Some((path, query))) = (&self.query_param, url.split_once('?')) else {
            return url.to_owned();
        };
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k == param => format!("{k}=redacted"),
                _ => pair.to_owned(),
            })
            .collect();
        format!("{path}?{}", query.join("&"))
    }

    /// The principal a handshake establishes: `Ok(None)` when it carries no token.
    pub fn authenticate_handshake(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<Principal>, AuthError> {
        match self.handshake_token(headers, query) {
            Some(token) => self.verify(&token).map(Some),
            None => Ok(None),
        }
    }
}

/// When a verified token's credential ends: its `exp` read the way jsonwebtoken reads it
/// (an integer, or a fractional number rounded to the second), plus the `leeway` the
/// verification granted, so a token accepted within the leeway is not closed at once. None
/// when that lies beyond any time the clock can represent: such a token never expires.
fn credential_end(exp: Option<&Value>, leeway: u64) -> Option<SystemTime> {
    let Some(Value::Number(exp)) = exp else {
        return None;
    };
    let seconds = exp.as_u64().or_else(|| {
        exp.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f.round() as u64)
    })?;
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds.saturating_add(leeway)))
}

/// The value of a cookie in the request, if present.
pub fn cookie<'a>(req: &'a HeaderMap, name: &str) -> Option<&'a str> {
    req.get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The token of an `Authorization: Bearer <token>` value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether a principal's credential has expired at `now`.
pub fn is_expired(principal: &Principal, now: SystemTime) -> bool {
    principal.expires_at.is_some_and(|exp| exp <= now)
}

/// Load `[auth] users_file`, sizing the password workers.
fn load_users(
    config: &AuthConfig,
    base_dir: &Path,
    file: &str,
) -> Result<users::UserStore, ConfigError> {
    let workers = match config.password_workers {
        Some(0) => {
            return Err(ConfigError::Invalid {
                key: "auth.password_workers".into(),
                message: "must be greater than 0 (omit it for one per CPU core)".into(),
            });
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    users::UserStore::load(&base_dir.join(file), workers).map_err(|message| ConfigError::Invalid {
        key: "auth.users_file".into(),
        message,
    })
}

fn build_jwt(j: &JwtConfig, base_dir: &Path) -> Result<(DecodingKey, Validation), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        key: format!("auth.jwt.{key}"),
        message,
    };
    let read = |key: &str, file: &str| {
        std::fs::read(base_dir.join(file))
            .map_err(|e| invalid(key, format!("cannot read {file}: {e}")))
    };
    let algorithm = match j.algorithm.as_str() {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        other => {
            return Err(invalid(
                "algorithm",
                format!("unsupported {other:?}; expected HS256, HS384, HS512, RS256 or ES256"),
            ));
        }
    };
    let key = match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let secret = match (&j.secret, &j.secret_file) {
                (Some(s), None) => s.as_bytes().to_vec(),
                (None, Some(f)) => {
                    let mut bytes = read("secret_file", f)?;
                    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        bytes.pop();
                    }
                    bytes
                }
                _ => {
                    return Err(invalid(
                        "secret",
                        format!("{} needs exactly one of secret or secret_file", j.algorithm),
                    ));
                }
            };
            if secret.len() < 32 {
                return Err(invalid("secret", "must be at least 32 bytes".into()));
            }
            DecodingKey::from_secret(&secret)
        }
        _ => {
            let pem = match (&j.public_key, &j.public_key_file) {
                (Some(k), None) => k.as_bytes().to_vec(),
                (None, Some(f)) => read("public_key_file", f)?,
                _ => {
                    return Err(invalid(
                        "public_key",
                        format!(
                            "{} needs exactly one of public_key or public_key_file",
                            j.algorithm
                        ),
                    ));
                }
            };
            let parsed = if algorithm == Algorithm::RS256 {
                DecodingKey::from_rsa_pem(&pem)
            } else {
                DecodingKey::from_ec_pem(&pem)
            };
            parsed.map_err(|e| invalid("public_key", format!("not a valid PEM public key: {e}")))?
        }
    };
    if j.leeway > MAX_LEEWAY {
        return Err(invalid(
            "leeway",
            format!(
                "{} seconds of clock skew is more than the {MAX_LEEWAY} allowed; fix the clocks",
                j.leeway
            ),
        ));
    }
    let mut validation = Validation::new(algorithm);
    validation.leeway = j.leeway;
    validation.validate_nbf = true;
    // jsonwebtoken checks `iss` and `aud` only when the token has them: a configured list
    // must also make the claim required, or a token without it would pass.
    let mut required = vec!["exp"];
    if !j.issuer.is_empty() {
        validation.set_issuer(&j.issuer);
        required.push("iss");
    }
    if j.audience.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&j.audience);
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    Ok((key, validation))
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAlgorithm => AuthError::Malformed("algorithm not accepted".into()),
        ErrorKind::MissingRequiredClaim(c) => AuthError::Malformed(format!("missing claim {c:?}")),
        other => AuthError::Malformed(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_credential_ends_at_exp_plus_the_leeway_however_exp_is_written() {
        let at = |secs: u64| Some(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(credential_end(Some(&json!(1000)), 30), at(1030));
        assert_eq!(credential_end(Some(&json!(1000.4)), 0), at(1000));
        assert_eq!(credential_end(Some(&json!(1000.6)), 0), at(1001));
        assert_eq!(credential_end(Some(&json!(u64::MAX)), 30), None);
        assert_eq!(credential_end(Some(&json!(1.0e19)), 0), None);
        for unusable in [json!(-1), json!("1000"), json!(null), json!(f64::MAX)] {
            assert_eq!(credential_end(Some(&unusable), 0), None, "{unusable}");
        }
        assert_eq!(credential_end(None, 0), None);
    }

    #[test]
    fn the_token_query_parameter_is_redacted_from_urls() {
        let auth = Authenticator::from_config(&AuthConfig::default(), Path::new(".")).unwrap();
        assert_eq!(
            auth.redacted_url("/s/000/a/websocket?x=1&access_token=ey.J.w&c=cb"),
            "/s/000/a/websocket?x=1&access_token=redacted&c=cb"
        );
        assert_eq!(auth.redacted_url("/s/info"), "/s/info");
        assert_eq!(
            auth.redacted_url("/s?access_tokens=1"),
            "/s?access_tokens=1"
        );
        let off = AuthConfig {
            query_param: String::new(),
            ..AuthConfig::default()
        };
        let off = Authenticator::from_config(&off, Path::new(".")).unwrap();
        assert_eq!(off.redacted_url("/s?access_token=1"), "/s?access_token=1");
    }

    #[test]
    fn a_leeway_past_an_hour_is_refused_naming_the_key() {
        let config = JwtConfig {
            algorithm: "HS256".into(),
            secret: Some("x".repeat(32)),
            secret_file: None,
            public_key: None,
            public_key_file: None,
            issuer: Vec::new(),
            audience: Vec::new(),
            leeway: 3601,
        };
        let err = build_jwt(&config, Path::new("."))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("auth.jwt.leeway"), "{err}");
    }
}
