//! Who is connecting: the authentication seam run on CONNECT (spec §3.4).
//!
//! The carrier may already know a principal (an HTTP-level authenticator on the SockJS or
//! WebSocket handshake). The [`Authenticator`] sees that, plus every CONNECT header, and
//! decides the session's principal or rejects it. The default takes the carrier's principal
//! and, only when `principal_header` opts in, the value of one CONNECT header (`uid`,
//! `login`) as the client asserts it; the JWT authenticator replaces it without touching the
//! connection state machine. Implementations must never log the `passcode`.
//!
//! A decision may take time: a password hash costs tens of milliseconds of CPU, so the
//! [`PasswordAuthenticator`] answers [`Verdict::Later`] with a check that runs on the blocking
//! pool, and the connection awaits it (nothing else is processed before CONNECTED).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::auth::users::UserStore;
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

/// A decision that is still being made.
pub type PendingAuth =
    Pin<Box<dyn Future<Output = Result<Option<Principal>, AuthError>> + Send + 'static>>;

/// An authenticator's answer: `Ok(Some(principal))` for an authenticated session, `Ok(None)`
/// for an anonymous one, at once or later.
pub enum Verdict {
    /// Decided at once.
    Now(Result<Option<Principal>, AuthError>),
    /// Decided when this completes; it must not block the async worker.
    Later(PendingAuth),
}

impl From<Result<Option<Principal>, AuthError>> for Verdict {
    fn from(result: Result<Option<Principal>, AuthError>) -> Verdict {
        Verdict::Now(result)
    }
}

/// Decides the principal of a connecting session.
pub trait Authenticator: Send + Sync + 'static {
    /// Decide a CONNECT; a slow check answers [`Verdict::Later`].
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Verdict;

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
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Verdict {
        self.decide(request).into()
    }
}

impl HeaderAuthenticator {
    fn decide(&self, request: &ConnectRequest<'_>) -> Result<Option<Principal>, AuthError> {
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
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Verdict {
        self.decide(request).into()
    }

    fn credential_header(&self) -> Option<&str> {
        self.header.as_deref()
    }
}

impl TokenAuthenticator {
    fn decide(&self, request: &ConnectRequest<'_>) -> Result<Option<Principal>, AuthError> {
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
}

/// Password logins (`login` + `passcode`) against the users file, for clients such as
/// stomp.py that cannot present a token. A principal the handshake established is taken as
/// is. A CONNECT whose `login` is not a user of the file goes to the token authenticator when
/// JWTs are configured (stomp.py-style clients send a token as `passcode`); without one it is
/// checked anyway, against a dummy hash, so unknown users and wrong passwords look alike. A
/// CONNECT without `login` is a token login, or anonymous when allowed.
pub struct PasswordAuthenticator {
    /// The users file.
    pub users: Arc<UserStore>,
    /// Token logins, when `[auth.jwt]` is configured.
    pub tokens: Option<TokenAuthenticator>,
    /// Whether a CONNECT with neither a login nor a token is served anonymously.
    pub allow_anonymous: bool,
}

impl Authenticator for PasswordAuthenticator {
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Verdict {
        if let Some(principal) = &request.info.principal {
            return Verdict::Now(Ok(Some(Principal::clone(principal))));
        }
        let login = request.header("login").filter(|l| !l.is_empty());
        match (login, &self.tokens) {
            (Some(login), tokens) if tokens.is_none() || self.users.contains(login) => {
                let users = self.users.clone();
                let name = login.to_owned();
                let password = request.header("passcode").unwrap_or_default().to_owned();
                Verdict::Later(Box::pin(async move {
                    users
                        .check(name, password)
                        .await
                        .map(Some)
                        .map_err(|e| AuthError::Rejected(e.to_string()))
                }))
            }
            (_, Some(tokens)) => tokens.authenticate(request),
            (_, None) if self.allow_anonymous => Verdict::Now(Ok(None)),
            (_, None) => Verdict::Now(Err(AuthError::Rejected(
                "authentication required: log in with login and passcode".into(),
            ))),
        }
    }

    fn credential_header(&self) -> Option<&str> {
        self.tokens.as_ref().and_then(|t| t.header.as_deref())
    }
}
