//! Who is connecting: the authentication seam run on CONNECT (spec §3.4).
//!
//! The carrier may already know a principal (an HTTP-level authenticator on the SockJS or
//! WebSocket handshake). The [`Authenticator`] sees that, plus every CONNECT header, and
//! decides the session's principal or rejects it. The default takes the carrier's principal
//! and, only when `principal_header` opts in, the value of one CONNECT header (`uid`,
//! `login`) as the client asserts it; the JWT authenticator replaces it without touching the
//! connection state machine. Implementations must never log the `passcode`.

use std::sync::Arc;

use crate::session::{Principal, SessionInfo};

/// What an authenticator gets to look at.
#[derive(Debug)]
pub struct ConnectRequest<'a> {
    /// The CONNECT headers, raw (CONNECT is never unescaped).
    pub headers: &'a [(String, String)],
    /// What the carrier knew, including any principal it established.
    pub info: &'a SessionInfo,
}

impl ConnectRequest<'_> {
    /// The value of a CONNECT header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a CONNECT was refused; answered with ERROR `Authentication failed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The credentials were rejected; the text goes into the ERROR body.
    #[error("{0}")]
    Rejected(String),
}

/// Decides the principal of a connecting session.
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok(Some(principal))` for an authenticated session, `Ok(None)` for an anonymous one.
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Result<Option<Principal>, AuthError>;

    /// A CONNECT header this authenticator reads a credential from, besides `passcode` and
    /// `Authorization` (which are always treated as secret); it is left out of events.
    fn credential_header(&self) -> Option<&str> {
        None
    }
}

/// Whether a CONNECT header carries a credential that must never be reported or logged:
/// `passcode`, `Authorization` (any case), or the authenticator's own `credential`.
pub fn is_credential_header(name: &str, credential: Option<&str>) -> bool {
    name == "passcode" || name.eq_ignore_ascii_case("authorization") || Some(name) == credential
}

/// A principal known only by name (no roles, no expiry).
fn named(name: &str) -> Principal {
    Principal {
        name: name.to_owned(),
        roles: Vec::new(),
        expires_at: None,
    }
}

/// The default: the carrier's principal, else the value of one CONNECT header.
#[derive(Debug, Clone)]
pub struct HeaderAuthenticator {
    /// The CONNECT header naming the principal (`login`, `uid`, ...), if any.
    pub header: Option<String>,
    /// Whether sessions without a principal are accepted.
    pub allow_anonymous: bool,
}

impl Authenticator for HeaderAuthenticator {
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Result<Option<Principal>, AuthError> {
        if let Some(principal) = &request.info.principal {
            return Ok(Some(Principal::clone(principal)));
        }
        let from_header = self
            .header
            .as_deref()
            .and_then(|name| request.header(name))
            .filter(|value| !value.is_empty());
        match from_header {
            Some(name) => Ok(Some(named(name))),
            None if self.allow_anonymous => Ok(None),
            None => Err(AuthError::Rejected(
                "anonymous sessions are not allowed".into(),
            )),
        }
    }
}

/// Verifies a bearer token (JWT) carried by CONNECT: the `Authorization: Bearer` header, a
/// configured header (`token`), or `passcode`, in that order. A principal the handshake
/// already established is taken as is.
pub struct TokenAuthenticator {
    /// The verifier.
    pub verifier: Arc<crate::auth::Authenticator>,
    /// An extra CONNECT header that may carry the token.
    pub header: Option<String>,
}

impl Authenticator for TokenAuthenticator {
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Result<Option<Principal>, AuthError> {
        if let Some(principal) = &request.info.principal {
            return Ok(Some(Principal::clone(principal)));
        }
        let token = request
            .header("Authorization")
            .or_else(|| request.header("authorization"))
            .and_then(crate::auth::bearer)
            .or_else(|| self.header.as_deref().and_then(|h| request.header(h)))
            .or_else(|| request.header("passcode"))
            .filter(|t| !t.is_empty());
        match token {
            Some(token) => self
                .verifier
                .verify(token)
                .map(Some)
                .map_err(|e| AuthError::Rejected(e.to_string())),
            None if self.verifier.anonymous_allowed() => Ok(None),
            None => Err(AuthError::Rejected(
                crate::auth::AuthError::Missing.to_string(),
            )),
        }
    }

    fn credential_header(&self) -> Option<&str> {
        self.header.as_deref()
    }
}
