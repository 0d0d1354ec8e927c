//! Destination routing: prefixes, user destinations and pattern subscriptions (spec §7).
//! Patterns themselves are compiled and matched by `pattern.rs`, re-exported here.
//!
//! Routing is a pure function of the configuration and the destination string, so it lives
//! apart from the broker's state. The user-destination translation reproduces Spring's
//! `DefaultUserDestinationResolver` exactly (`/user/queue/x` from session `S` subscribes to
//! `/queue/x-userS`), because Spring clients depend on it.

use super::config::StompConfig;
pub use super::pattern::{Pattern, PatternError, PatternLimits};

/// Where a destination goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Under the user prefix; `rest` is what follows it (no leading `/`).
    User {
        /// The part after the user prefix, e.g. `queue/x` or `alice/queue/x`.
        rest: String,
    },
    /// Under an application prefix, forwarded to the application handler.
    Application {
        /// The destination without its prefix, e.g. `/x` for `/app/x`.
        stripped: String,
    },
    /// Served by the embedded broker.
    Broker,
    /// Nothing matches.
    Unroutable,
}

/// The prefix table of spec §7.1.
#[derive(Debug, Clone)]
pub struct Router {
    /// The user prefix, with its trailing `/`.
    user_prefix: String,
    /// Application prefixes, in configured order.
    application_prefixes: Vec<String>,
    /// Broker prefixes; empty means "everything else".
    broker_prefixes: Vec<String>,
}

impl Router {
    /// The router the configuration describes.
    pub fn new(config: &StompConfig) -> Router {
        Router {
            user_prefix: config.user_prefix(),
            application_prefixes: config.application_prefixes.clone(),
            broker_prefixes: config.served_prefixes(),
        }
    }

    /// The user prefix, with its trailing `/`.
    pub fn user_prefix(&self) -> &str {
        &self.user_prefix
    }

    /// Route a destination: user prefix first, then application, then broker prefixes.
    pub fn route(&self, destination: &str) -> Route {
        if let Some(rest) = destination.strip_prefix(self.user_prefix.as_str()) {
            return Route::User { rest: rest.into() };
        }
        for prefix in &self.application_prefixes {
            if let Some(stripped) = strip_path_prefix(destination, prefix) {
                return Route::Application {
                    stripped: stripped.into(),
                };
            }
        }
        let is_broker = self.broker_prefixes.is_empty()
            || self
                .broker_prefixes
                .iter()
                .any(|p| strip_path_prefix(destination, p).is_some());
        if is_broker {
            Route::Broker
        } else {
            Route::Unroutable
        }
    }
}

/// `destination` without `prefix`, when the prefix ends at a path boundary.
fn strip_path_prefix<'a>(destination: &'a str, prefix: &str) -> Option<&'a str> {
    let prefix = prefix.trim_end_matches('/');
    let rest = destination.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// The broker destination a session-scoped user subscription maps to: `"/" + rest + "-user" +
/// session` (`/user/queue/x` → `/queue/x-user<S>`).
pub fn user_subscription_target(rest: &str, session: &str) -> String {
    format!("/{rest}-user{session}")
}

/// The per-session broker destination for a message to `actual` (`/queue/x`).
pub fn session_target(actual: &str, session: &str) -> String {
    format!("{actual}-user{session}")
}

/// Why a `/user/{name}/...` destination is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserDestinationError {
    /// There is no `/` after the user name.
    #[error("user destination {0:?} has no destination after the user name")]
    MissingDestination(String),
    /// The user name segment is empty.
    #[error("user destination has an empty user name")]
    EmptyUser,
}

/// Split `rest` of `/user/{name}/queue/x` into the user name (with `%2F` decoded to `/`) and
/// the actual destination `/queue/x`.
pub fn split_user_destination(rest: &str) -> Result<(String, String), UserDestinationError> {
    let (user, actual) = rest
        .split_once('/')
        .ok_or_else(|| UserDestinationError::MissingDestination(rest.into()))?;
    if user.is_empty() {
        return Err(UserDestinationError::EmptyUser);
    }
    Ok((user.replace("%2F", "/"), format!("/{actual}")))
}

/// The session id a `-user<S>` destination belongs to, if its suffix has that shape. Session
/// ids are `[a-z0-9]`, so a suffix with other characters is not one.
pub fn user_suffix(destination: &str) -> Option<&str> {
    let (_, session) = destination.rsplit_once("-user")?;
    let plausible = !session.is_empty()
        && session
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    plausible.then_some(session)
}

/// Whether a SUBSCRIBE destination is an Ant-style pattern rather than a literal.
pub fn is_pattern(destination: &str) -> bool {
    destination.contains(['*', '{'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_user_application_broker_and_unroutable() {
        let router = Router::new(&StompConfig::default());
        assert_eq!(
            router.route("/user/queue/x"),
            Route::User {
                rest: "queue/x".into()
            }
        );
        assert_eq!(
            router.route("/app/echo"),
            Route::Application {
                stripped: "/echo".into()
            }
        );
        assert_eq!(router.route("/topic/a"), Route::Broker);
        assert_eq!(router.route("/queue/a"), Route::Broker);
        assert_eq!(router.route("/topicx"), Route::Unroutable);
        assert_eq!(router.route("/nowhere"), Route::Unroutable);
    }

    #[test]
    fn empty_broker_prefixes_take_everything_else() {
        let config = StompConfig {
            broker_prefixes: vec![],
            ..StompConfig::default()
        };
        assert_eq!(Router::new(&config).route("/nowhere"), Route::Broker);
    }

    #[test]
    fn translates_user_destinations_like_spring() {
        assert_eq!(
            user_subscription_target("queue/position-updates", "abc123"),
            "/queue/position-updates-userabc123"
        );
        assert_eq!(
            split_user_destination("alice/queue/x").unwrap(),
            ("alice".into(), "/queue/x".into())
        );
        assert_eq!(
            split_user_destination("a%2Fb/queue/x").unwrap().0,
            "a/b".to_string()
        );
        assert!(split_user_destination("alice").is_err());
        assert_eq!(user_suffix("/queue/x-userabc123"), Some("abc123"));
        assert_eq!(user_suffix("/queue/x-users/y"), None);
    }
}
