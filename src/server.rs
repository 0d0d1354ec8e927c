//! The composition root: wires configured app names to applications, mounts SockJS services
//! by prefix, and runs the accept loop: each connection starts on the gateway's own HTTP front
//! (`front.rs`), which hands it to hyper (HTTP/1 with upgrades) when a request needs it.
//!
//! Every connection gets `TCP_NODELAY` (frames must leave at once), a bounded request head
//! and a header read timeout. Shutdown is the watch channel [`Gateway::serve`] receives: when
//! it turns true the listeners close and the drain (`drain.rs`) tells every session goodbye;
//! connections close when their sessions are done (a second, internal watch).

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::apps;
use crate::auth::Authenticator;
use crate::backend::Backends;
use crate::cluster_link::ClusterLink;
use crate::config::{Config, ConfigError, ServerConfig, ServiceConfig};
use crate::demo::Demo;
use crate::drain::{Drain, Sessions, Tracking};
use crate::front::{self, Ended, FrontLimits, GuardedIo};
use crate::limits::{ConnectionLimiter, ConnectionPermit, ConnectionRefused};
use crate::proxy::TrustedProxies;
use crate::session::App;
use crate::sockjs::http::{
    HttpRequest, HttpResponse, RequestBody, TEXT_PLAIN, WriteWatch, not_found, response,
};
use crate::sockjs::{Peer, Service};
use crate::stomp::engine::{BrokerEngine, Layered};
use crate::stomp::tcp::{TcpSettings, serve_tcp_limited};
use crate::stomp::{
    AppHandler, Authenticator as StompAuthenticator, PasswordAuthenticator, StompApp,
    TokenAuthenticator,
};
use crate::tls::{Listener, Tls};

/// A configured gateway, ready to serve.
pub struct Gateway {
    /// Listener-wide settings.
    server: ServerConfig,
    /// The services, longest prefix first so the longest match wins.
    services: Vec<Arc<Service>>,
    /// The STOMP core shared by every STOMP endpoint (one broker per gateway).
    stomp: StompApp,
    /// Open connections of every listener, against `max_connections(_per_ip)`.
    connections: Arc<ConnectionLimiter>,
    /// The `[admin]` section and the directory its key file is relative to.
    admin: (crate::admin::AdminConfig, std::path::PathBuf),
    /// Every live session of every carrier, for the drain.
    sessions: Arc<Sessions>,
    /// The STOMP TCP accept loops, stopped when the drain starts.
    tcp_accepts: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
    /// The broker's cluster link (Redis bridge, presence, inbox), when configured.
    cluster: Option<Arc<ClusterLink>>,
    /// Proxies whose word on the client address is taken (`[server] trusted_proxies`).
    trusted: Arc<TrustedProxies>,
    /// The demo page (`[demo]`), when enabled.
    demo: Option<Demo>,
    /// TLS of the HTTP listener (`[server] tls_cert`), when configured.
    tls: Option<Tls>,
    /// TLS of STOMP over TLS (`[stomp] tls_listen`), with the same certificate.
    stomp_tls: Option<Tls>,
    /// TLS handshakes that failed or timed out, on every listener.
    tls_failures: Arc<std::sync::atomic::AtomicU64>,
    /// The relay to an external STOMP broker (`[stomp.relay]`), when configured.
    relay: Option<Arc<crate::relay::Relay>>,
}

impl Gateway {
    /// Build the services a configuration describes.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        config.validate()?;
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let auth = Authenticator::from_config(&config.auth, &config.base_dir)?;
        let stomp = stomp_app(config, &auth)?;
        let broker = stomp.broker();
        let cluster = ClusterLink::start(&config.cluster, &config.stomp, &broker).map_err(|e| {
            ConfigError::Invalid {
                key: "cluster.redis".into(),
                message: e.to_string(),
            }
        })?;
        let relay = crate::relay::Relay::start(&config.stomp, &broker, stomp.presence());
        // One engine on the broker: the relay over the cluster link when both are there
        // (the relay serves its destinations, the cluster link the rest).
        let engine: Option<Arc<dyn BrokerEngine>> = match (&relay, &cluster) {
            (Some(r), Some(c)) => Some(Arc::new(Layered::new(r.clone(), c.clone()))),
            (Some(r), None) => Some(r.clone()),
            (None, Some(c)) => Some(c.clone()),
            (None, None) => None,
        };
        if let Some(engine) = engine
            && broker.attach_engine(engine).is_err()
        {
            tracing::warn!(
                "the broker already has an engine; the relay and cluster link are not attached"
            );
        }
        let tls_failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let tls_error = |e: crate::tls::TlsError| ConfigError::Invalid {
            key: "server.tls_cert".into(),
            message: e.to_string(),
        };
        let tls = config
            .tls(Listener::Http, tls_failures.clone())
            .map_err(tls_error)?;
        let stomp_tls = config
            .tls(Listener::Stomp, tls_failures.clone())
            .map_err(tls_error)?;
        let sessions = Sessions::new();
        let mut services = Vec::with_capacity(config.services.len());
        for (i, s) in config.services.iter().enumerate() {
            let app: Arc<dyn App> = match s.app.as_str() {
                "stomp" => Arc::new(stomp.clone()),
                "proxy" => Arc::new(proxy(s, &config.base_dir, tls.is_some()).map_err(|e| {
                    ConfigError::Invalid {
                        key: format!("service[{i}].{}", e.key),
                        message: e.message,
                    }
                })?),
                name => apps::by_name(name).ok_or_else(|| ConfigError::Invalid {
                    key: format!("service[{i}].app"),
                    message: format!("unknown app {name:?}"),
                })?,
            };
            let app = Tracking::new(app, sessions.clone());
            services.push(Service::new(s.clone(), app, auth.clone()));
        }
        services.sort_by_key(|s| std::cmp::Reverse(s.prefix().len()));
        Ok(Gateway {
            connections: ConnectionLimiter::new(
                config.server.max_connections,
                config.server.max_connections_per_ip,
            ),
            server: config.server.clone(),
            services,
            stomp,
            admin: (config.admin.clone(), config.base_dir.clone()),
            sessions,
            tcp_accepts: std::sync::Mutex::new(Vec::new()),
            cluster,
            trusted: Arc::new(trusted_proxies(&config.server)?),
            demo: Demo::from_config(&config.demo, &config.base_dir),
            tls,
            stomp_tls,
            tls_failures,
            relay,
        })
    }

    /// The relay to an external STOMP broker, when `[stomp.relay]` configures one.
    pub fn relay(&self) -> Option<&Arc<crate::relay::Relay>> {
        self.relay.as_ref()
    }

    /// Whether the HTTP listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The count of TLS handshakes that failed or timed out, on every listener.
    pub fn tls_handshake_failures(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.tls_failures.clone()
    }

    /// Serve one already-accepted HTTP connection from `addr` over any byte stream (used by
    /// the HTTP fuzz target, which feeds raw request bytes through an in-memory pipe).
    pub async fn serve_io<S>(self: Arc<Self>, io: S, addr: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (_keep_open, shutdown) = watch::channel(false);
        serve_connection(self, io, addr, shutdown, None).await
    }

    /// The STOMP core, for carriers outside HTTP (TCP) and for backends.
    pub fn stomp(&self) -> &StompApp {
        &self.stomp
    }

    /// Serve STOMP over plain TCP on `listener`, sharing this gateway's broker and its
    /// connection limits; it stops accepting when [`Gateway::serve`] starts draining.
    pub fn spawn_stomp_tcp(&self, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        self.spawn_stomp_listener(listener, None)
    }

    /// Serve STOMP over TLS on `listener` (`[stomp] tls_listen`), as [`Gateway::spawn_stomp_tcp`]
    /// does over plain TCP. None when `[server] tls_cert` is not configured.
    pub fn spawn_stomp_tls(&self, listener: TcpListener) -> Option<tokio::task::JoinHandle<()>> {
        let tls = self.stomp_tls.clone()?;
        Some(self.spawn_stomp_listener(listener, Some(tls)))
    }

    fn spawn_stomp_listener(
        &self,
        listener: TcpListener,
        tls: Option<Tls>,
    ) -> tokio::task::JoinHandle<()> {
        let settings = TcpSettings::from_config(self.stomp.config());
        let app = Tracking::new(Arc::new(self.stomp.clone()), self.sessions.clone());
        let accepting = tokio::spawn(serve_tcp_limited(
            listener,
            app,
            settings,
            self.connections.clone(),
            self.trusted.clone(),
            tls,
        ));
        self.tcp_accepts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(accepting.abort_handle());
        accepting
    }

    /// Serve the admin listener (`src/admin/`) on `listener`, over this gateway's broker,
    /// presence and counters. `shutdown` is the receiver [`Gateway::serve`] gets: while it
    /// is true `/readyz` answers 503; the listener itself runs until its sender is dropped.
    pub fn spawn_admin(
        &self,
        listener: TcpListener,
        shutdown: watch::Receiver<bool>,
    ) -> Result<tokio::task::JoinHandle<()>, ConfigError> {
        let services = self
            .services
            .iter()
            .map(|s| crate::admin::ServiceView {
                prefix: s.prefix().to_owned(),
                app: s.config().app.clone(),
                stats: s.stats().clone(),
            })
            .collect();
        let sources = crate::admin::Sources {
            presence: self.stomp.presence(),
            stomp: self.stomp.clone(),
            services,
            connections: self.connections.clone(),
            tls_failures: self.tls_failures.clone(),
            relay: self.relay.clone(),
            cluster: self.cluster.clone(),
            shutdown,
        };
        let admin = crate::admin::Admin::new(&self.admin.0, &self.admin.1, sources)?;
        Ok(tokio::spawn(admin.serve(listener)))
    }

    /// The cluster link (Redis bridge, presence, inbox), when `[cluster]` asks for one.
    pub fn cluster(&self) -> Option<&Arc<ClusterLink>> {
        self.cluster.as_ref()
    }

    /// The demo page, when `[demo]` enables it.
    pub fn demo(&self) -> Option<&Demo> {
        self.demo.as_ref()
    }

    /// Open connections of every listener, and how many were refused.
    pub fn connections(&self) -> &Arc<ConnectionLimiter> {
        &self.connections
    }

    /// The service a raw path belongs to, with the rest of the path after its prefix.
    fn route<'p>(&self, path: &'p str) -> Option<(&Arc<Service>, &'p str)> {
        self.services.iter().find_map(|s| {
            let rest = path.strip_prefix(s.prefix())?;
            (rest.is_empty() || rest.starts_with('/') || s.prefix() == "/").then_some((s, rest))
        })
    }

    async fn handle(self: Arc<Self>, req: HttpRequest, peer: Peer) -> HttpResponse {
        if let Some(problem) = front::host_problem(&req) {
            return bad_host(problem);
        }
        let peer = Peer {
            addr: self.trusted.client_addr(peer.addr, req.headers()),
        };
        let path = req.uri().path().to_owned();
        if let Some(resp) = self
            .demo
            .as_ref()
            .and_then(|d| d.handle(req.method(), &path))
        {
            return resp;
        }
        match (self.route(&path), &self.demo) {
            (Some((service, rest)), _) => service.handle(req, rest, peer).await,
            (None, Some(demo)) if path == "/" => demo.root_redirect(),
            (None, _) => not_found(),
        }
    }

    /// Serve connections from `listener` until `shutdown` turns true (it is the signal a
    /// readiness check reads: true means draining), then drain: stop accepting on every
    /// listener, tell every session goodbye over `[server] drain_timeout`, and return when
    /// the last connection has closed or the window is over.
    pub async fn serve(
        self,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let gateway = Arc::new(self);
        // Connections close once their sessions are done, not when the drain begins: a
        // keep-alive connection still carries the polls that fetch their goodbyes.
        let (close_connections, connections_closing) = watch::channel(false);
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            let (stream, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => continue,
            };
            let Some((permit, stream)) =
                gateway
                    .connections
                    .admit_or_answer(stream, addr, refusal_response)
            else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (gateway, closing) = (gateway.clone(), connections_closing.clone());
            // The connection future is built inside the task: awaiting one captured from
            // outside would store it twice in the task (once captured, once awaited).
            match gateway.tls.clone() {
                None => tokio::spawn(async move {
                    serve_connection(gateway, stream, addr, closing, Some(permit)).await;
                }),
                Some(tls) => tokio::spawn(async move {
                    if let Some(stream) = tls.accept(stream).await {
                        Box::pin(serve_connection(
                            gateway,
                            stream,
                            addr,
                            closing,
                            Some(permit),
                        ))
                        .await;
                    }
                }),
            };
        }
        drop(listener);
        for accepting in gateway
            .tcp_accepts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            accepting.abort();
        }
        for service in &gateway.services {
            service.stop_new_sessions();
        }
        Drain {
            sessions: &gateway.sessions,
            registries: gateway
                .services
                .iter()
                .map(|s| s.registry().clone())
                .collect(),
            connections: &gateway.connections,
            close_connections: &close_connections,
            window: gateway.server.drain_timeout,
        }
        .run()
        .await;
        Ok(())
    }
}

/// The 400 for a request whose `Host` is missing, repeated or malformed; the connection is
/// closed after it, as for any request that breaks the protocol.
fn bad_host(problem: &str) -> HttpResponse {
    let mut resp = response(
        StatusCode::BAD_REQUEST,
        TEXT_PLAIN,
        format!("Bad Request: {problem} (RFC 9112 §3.2)\n"),
    );
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn trusted_proxies(server: &ServerConfig) -> Result<TrustedProxies, ConfigError> {
    TrustedProxies::parse(&server.trusted_proxies).map_err(|message| ConfigError::Invalid {
        key: "server.trusted_proxies".into(),
        message,
    })
}

/// The 503 a connection over `max_connections(_per_ip)` gets before it is closed.
fn refusal_response(refused: ConnectionRefused) -> Vec<u8> {
    let text = format!("{refused}\n");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=UTF-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    )
    .into_bytes()
}

/// The STOMP core with the configured authentication (password logins when `[auth]
/// users_file` is set, JWTs when `[auth.jwt]` is, else the carrier's principal, or the CONNECT header `[stomp] principal_header`
/// names when set) and the `[[backend]]`s.
fn stomp_app(config: &Config, auth: &Arc<Authenticator>) -> Result<StompApp, ConfigError> {
    let tokens = auth.verifies_tokens().then(|| TokenAuthenticator {
        verifier: auth.clone(),
        header: Some(config.auth.connect_header.clone()).filter(|h| !h.is_empty()),
    });
    let authenticator: Option<Arc<dyn StompAuthenticator>> = match (auth.users(), tokens) {
        (Some(users), tokens) => Some(Arc::new(PasswordAuthenticator {
            users: users.clone(),
            tokens,
            allow_anonymous: auth.anonymous_allowed(),
        })),
        (None, Some(tokens)) => Some(Arc::new(tokens)),
        (None, None) => None,
    };
    let backends = Backends::from_config(&config.backends, &config.stomp)?;
    let app_handler = backends.map(|b| b as Arc<dyn AppHandler>);
    Ok(StompApp::with_hooks(
        config.stomp.clone(),
        authenticator,
        app_handler,
    ))
}

/// The proxy of a service, with the service's own send limits applied to its upstream.
fn proxy(
    service: &ServiceConfig,
    base_dir: &std::path::Path,
    tls: bool,
) -> Result<apps::Proxy, apps::proxy::ProxyConfigError> {
    let limits = apps::proxy::ProxyLimits {
        max_queued_bytes: service.max_queued_bytes,
        max_inbound_bytes: service.max_inbound_bytes,
        send_time_limit: service.send_time_limit,
        scheme: if tls { "https" } else { "http" },
    };
    apps::Proxy::new(&crate::config::proxy_config(service), limits, base_dir)
}

/// Serve one connection: the front answers the plain bodiless requests (and every streaming
/// receiver among them) itself; at the first request it does not serve, hyper takes over.
/// `permit` counts the connection against the connection limits until it closes; a
/// WebSocket upgrade takes a share of it into the socket's task.
async fn serve_connection<S>(
    gateway: Arc<Gateway>,
    stream: S,
    addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
    permit: Option<ConnectionPermit>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = Peer { addr };
    let limits = FrontLimits {
        header_read_timeout: gateway.server.header_read_timeout,
        max_header_bytes: gateway.server.max_header_bytes,
    };
    let handler = gateway.clone();
    let io = GuardedIo::new(stream, WriteWatch::new(front::DEFAULT_WRITE_LIMIT));
    // The handler and hyper futures are boxed: held inline they would make every connection
    // task as large as the largest handler for as long as it lives (a stream lasts minutes).
    let ended = front::serve(io, limits, shutdown.clone(), move |req| {
        Box::pin(handler.clone().handle(req, peer))
    })
    .await;
    if let Ended::Handoff { io, buffered } = ended {
        Box::pin(serve_with_hyper(
            gateway,
            io.replaying(buffered),
            addr,
            shutdown,
            permit.map(Arc::new),
        ))
        .await;
    }
}

/// The rest of a connection, served by hyper (bodies, upgrades, HTTP/1.0, odd requests).
/// Each request carries the connection's permit, for an upgrade to keep.
async fn serve_with_hyper<S>(
    gateway: Arc<Gateway>,
    stream: GuardedIo<S>,
    addr: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
    permit: Option<Arc<ConnectionPermit>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = Peer { addr };
    let limits = gateway.server.clone();
    let watch = stream.watch().clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let gateway = gateway.clone();
        let watch = watch.clone();
        let permit = permit.clone();
        async move {
            let mut req = req.map(RequestBody::Hyper);
            req.extensions_mut().insert(watch);
            if let Some(permit) = permit {
                req.extensions_mut().insert(permit);
            }
            Ok::<_, std::convert::Infallible>(gateway.handle(req, peer).await)
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .writev(true)
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
