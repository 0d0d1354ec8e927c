//! The STOMP core: a STOMP 1.0/1.1/1.2 server with an embedded broker, served as a
//! [`session::App`](crate::session::App) on any carrier (SockJS, raw WebSocket, TCP).
//!
//! Layout: `frame` (wire format), `connection` (one client's protocol state machine and its
//! task), `broker` + `destination` (routing, fan-out, acks, user destinations), `pattern`
//! (Ant-style patterns, linear-time matching and the set relations the ACL needs), `selector`
//! (the SUBSCRIBE `selector` expressions), `outbound`
//! (one connection's writer side shared with the broker), `auth` and `application` (the seams
//! to authentication and `/app` backends), `stats` (events and counters), `tcp` (STOMP over
//! plain TCP). [`StompApp`] ties them together: one per gateway, one task per session.

pub mod acl;
pub mod application;
pub mod auth;
pub mod broker;
pub mod completion;
pub mod config;
pub mod connection;
pub mod destination;
pub mod engine;
pub mod frame;
pub mod message;
pub mod outbound;
pub mod pattern;
pub mod pattern_index;
pub(crate) mod pending;
pub mod presence;
pub mod selector;
pub mod stats;
pub mod tcp;
#[cfg(test)]
pub(crate) mod testing;
pub mod traffic;

use std::sync::Arc;
use std::time::Duration;

pub use application::{
    AppFrame, AppHandler, AppRequest, BackendError, Completion, ConnectCheck, ConnectDecision,
    ConnectGrant, ConnectRefusal, SessionEnded,
};
pub use auth::{
    AuthError, Authenticator, ConnectRequest, HeaderAuthenticator, PasswordAuthenticator,
    TokenAuthenticator, Verdict,
};
pub use broker::Broker;
pub use config::{HeartBeat, QueueSemantics, StompConfig, Unroutable};
pub use stats::{DisconnectCause, StompEvent, StompStats};
pub use tcp::serve_tcp;

use crate::session::{App, OutMessage, SessionHandle, SessionInfo};
use destination::Router;
use stats::EventBus;

/// Everything sessions share: configuration, broker, hooks, events and counters.
pub struct Core {
    /// The configuration.
    pub(crate) config: StompConfig,
    /// The embedded broker.
    pub(crate) broker: Arc<Broker>,
    /// The prefix router.
    pub(crate) router: Router,
    /// Decides principals on CONNECT.
    pub(crate) authenticator: Arc<dyn Authenticator>,
    /// Receives `/app` frames, if configured.
    pub(crate) app_handler: Option<Arc<dyn AppHandler>>,
    /// Authorization rules for SUBSCRIBE and SEND.
    pub(crate) acl: acl::Acl,
    /// Lifecycle events.
    pub(crate) events: EventBus,
    /// Counters.
    pub(crate) stats: Arc<StompStats>,
    /// Who is connected and what they subscribe to (the admin API's presence).
    pub(crate) presence: Arc<presence::LocalPresence>,
    /// Messages sent per destination (the dashboard's rates).
    pub(crate) traffic: Arc<traffic::DestinationTraffic>,
}

impl Core {
    /// Build the shared state; `None` hooks take the defaults (header authenticator, no `/app`
    /// backend).
    pub(crate) fn new(
        config: StompConfig,
        authenticator: Option<Arc<dyn Authenticator>>,
        app_handler: Option<Arc<dyn AppHandler>>,
    ) -> Core {
        let stats = Arc::new(StompStats::default());
        let authenticator = authenticator.unwrap_or_else(|| {
            Arc::new(HeaderAuthenticator {
                header: config.principal_header.clone(),
                allow_anonymous: config.allow_anonymous,
            })
        });
        let broker = Arc::new(Broker::new(&config, stats.clone()));
        if let Some(handler) = &app_handler {
            handler.attach(broker.clone());
        }
        Core {
            broker,
            router: Router::new(&config),
            acl: acl::Acl::new(&config.acl, config.acl_default, config.path_separator),
            events: EventBus::new(config.event_capacity),
            presence: Arc::new(presence::LocalPresence::new(config.path_separator)),
            traffic: Arc::default(),
            authenticator,
            app_handler,
            stats,
            config,
        }
    }
}

/// The STOMP core as a session application.
#[derive(Clone)]
pub struct StompApp {
    /// State shared by every session.
    core: Arc<Core>,
}

impl StompApp {
    /// A STOMP app with the default hooks: principals from the carrier or the configured
    /// CONNECT header, and no `/app` backend (SEND there gets ERROR `Backend error`).
    pub fn new(config: StompConfig) -> StompApp {
        StompApp::with_hooks(config, None, None)
    }

    /// A STOMP app with a custom authenticator and/or application handler.
    pub fn with_hooks(
        config: StompConfig,
        authenticator: Option<Arc<dyn Authenticator>>,
        app_handler: Option<Arc<dyn AppHandler>>,
    ) -> StompApp {
        StompApp {
            core: Arc::new(Core::new(config, authenticator, app_handler)),
        }
    }

    /// The broker, for backends that publish or send to users.
    pub fn broker(&self) -> Arc<Broker> {
        self.core.broker.clone()
    }

    /// This node's presence registry: live sessions, their subscriptions, disconnects.
    pub fn presence(&self) -> Arc<presence::LocalPresence> {
        self.core.presence.clone()
    }

    /// Messages sent per destination (counted once enabled).
    pub fn traffic(&self) -> Arc<traffic::DestinationTraffic> {
        self.core.traffic.clone()
    }

    /// The configuration in use.
    pub fn config(&self) -> &StompConfig {
        &self.core.config
    }

    /// The counters.
    pub fn stats(&self) -> Arc<StompStats> {
        self.core.stats.clone()
    }

    /// A receiver of lifecycle events from now on (bounded; a lagging receiver loses the
    /// oldest events).
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<StompEvent> {
        self.core.events.subscribe()
    }

    /// Log the stats summary at INFO every `stats_log_period_s` until the returned handle is
    /// aborted; `None` when the period is 0. Must be called inside a tokio runtime.
    pub fn spawn_stats_logger(&self) -> Option<tokio::task::JoinHandle<()>> {
        let period = self.core.config.stats_log_period_s;
        if period == 0 {
            return None;
        }
        let stats = self.core.stats.clone();
        Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(period));
            ticker.tick().await;
            loop {
                ticker.tick().await;
                tracing::info!("{}", stats.summary());
            }
        }))
    }
}

/// The WebSocket subprotocols STOMP answers to, highest version first.
pub const SUBPROTOCOLS: &[&str] = &["v12.stomp", "v11.stomp", "v10.stomp"];

impl App for StompApp {
    fn on_session(&self, session: SessionHandle) {
        tokio::spawn(connection::run(self.core.clone(), session));
    }

    fn discardable(&self) -> crate::session::Discardable {
        // Only MESSAGE frames may be dropped on overflow, never CONNECTED, RECEIPT or ERROR.
        crate::session::Discardable::Marked
    }

    fn authenticates_in_band(&self) -> bool {
        true
    }

    fn subprotocols(&self) -> &'static [&'static str] {
        SUBPROTOCOLS
    }

    fn farewell(&self, _info: &SessionInfo) -> Option<OutMessage> {
        // Its headers need no escaping, so these bytes are the same frame in 1.0, 1.1 and
        // 1.2, whichever the session negotiated (or before CONNECT).
        let error = frame::Frame::new(frame::Command::Error)
            .header("message", "Server shutting down")
            .header("content-type", "text/plain")
            .body("the server is shutting down; reconnect to continue");
        stats::bump(&self.core.stats.errors_sent);
        OutMessage::text_bytes(error.encode(frame::Version::V1_2))
    }
}
