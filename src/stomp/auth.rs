//! Who is connecting: the authentication seam run on CONNECT (spec §3.4).
//!
//! The carrier may already know a principal (an HTTP-level authenticator on the SockJS or
//! WebSocket handshake). The [`Authenticator`] sees that, plus every CONNECT header, and
//! decides the session's principal or rejects it. The default reads one configured header
//! (`login`, or e.g. `uid`); a JWT authenticator can later replace it without touching the
//! connection state machine. Implementations must never log the `passcode`.

use crate::session::SessionInfo;

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
    /// `Ok(Some(name))` for an authenticated session, `Ok(None)` for an anonymous one.
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Result<Option<String>, AuthError>;
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
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Result<Option<String>, AuthError> {
        let from_header = self
            .header
            .as_deref()
            .and_then(|name| request.header(name))
            .filter(|value| !value.is_empty());
        let principal = request
            .info
            .principal
            .clone()
            .or_else(|| from_header.map(str::to_owned));
        match principal {
            Some(name) => Ok(Some(name)),
            None if self.allow_anonymous => Ok(None),
            None => Err(AuthError::Rejected(
                "anonymous sessions are not allowed".into(),
            )),
        }
    }
}
