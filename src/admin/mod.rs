//! The admin listener: a second HTTP listener for backends and operators, with the publish
//! API, presence, stats, Prometheus metrics, health, and a live dashboard page.
//!
//! It is a client of the broker and of the counters, never of sessions: publishes go through
//! the broker's public calls, presence questions through the
//! [`PresenceDirectory`](crate::stomp::presence::PresenceDirectory) seam, and every number is
//! read from atomics the hot path already keeps. Requests are small JSON documents read whole
//! with a bounded body (`max_body_bytes`); connections are bounded in number
//! ([`MAX_CONNECTIONS`]) and in header time and size like the main listener's.
//!
//! Endpoints (see `openapi.json`, served at `/api/openapi.json`):
//! `GET /healthz`, `GET /readyz` (never need the key), `GET /metrics`, `GET /dashboard`,
//! `GET /api/dashboard`, `GET /api/stats`, `GET /api/openapi.json`, `POST /api/publish`,
//! `POST /api/batch`, `POST /api/disconnect`, `GET /api/presence/users/{user}`,
//! `GET /api/presence/destinations/{destination}`.

pub mod config;
pub mod request;

mod api;
mod auth;
mod dashboard;
mod idempotency;
mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use config::AdminConfig;

use crate::config::types::ConfigError;
use crate::limits::ConnectionLimiter;
use crate::sockjs::stats::ServiceStats;
use crate::stomp::StompApp;
use crate::stomp::destination::{Pattern, Router};
use crate::stomp::presence::PresenceDirectory;
use idempotency::IdempotencyWindow;
use request::ApiError;

/// The most admin connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head accepted, in bytes.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How long a request body may take to arrive.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The dashboard page: one static file, no external resources.
const DASHBOARD_PAGE: &str = include_str!("dashboard.html");

/// One SockJS service as the admin listener reports it.
#[derive(Debug, Clone)]
pub struct ServiceView {
    /// The service's prefix.
    pub prefix: String,
    /// The app it serves.
    pub app: String,
    /// Its counters.
    pub stats: Arc<ServiceStats>,
}

/// What the admin listener reads and publishes to.
pub struct Sources {
    /// The STOMP core: broker, stats, presence, traffic.
    pub stomp: StompApp,
    /// Presence for the whole deployment (this node's registry until a cluster engine
    /// answers instead).
    pub presence: Arc<dyn PresenceDirectory>,
    /// The SockJS services.
    pub services: Vec<ServiceView>,
    /// Connections of the main listeners.
    pub connections: Arc<ConnectionLimiter>,
    /// TLS handshakes that failed or timed out on the main listeners.
    pub tls_failures: Arc<std::sync::atomic::AtomicU64>,
    /// The STOMP relay, when `[stomp.relay]` configures one.
    pub relay: Option<Arc<crate::relay::Relay>>,
    /// The cluster link (Redis bridge, presence, shared queues, inbox), when `[cluster]`
    /// asks for one: its counters, and a user's sessions on every node.
    pub cluster: Option<Arc<crate::cluster_link::ClusterLink>>,
    /// True while the gateway drains (what `Gateway::serve` watches).
    pub shutdown: watch::Receiver<bool>,
}

/// The admin listener's state.
pub struct Admin {
    /// Its settings.
    config: AdminConfig,
    /// Checks `Authorization`.
    auth: auth::ApiKey,
    /// The STOMP core.
    stomp: StompApp,
    /// Presence answers.
    presence: Arc<dyn PresenceDirectory>,
    /// Cluster-wide presence, in cluster mode.
    cluster_presence: Option<crate::cluster::presence::Presence>,
    /// Routes destinations as client SENDs are routed.
    router: Router,
    /// `[admin] allow_destinations`, compiled; empty allows all.
    allow: Vec<Pattern>,
    /// Remembered idempotency keys (the lock is held across a publish, which never waits).
    idempotency: Mutex<IdempotencyWindow>,
    /// Counters and samples for `/metrics`, `/api/stats` and the dashboard.
    metrics: metrics::Metrics,
    /// The dashboard's per-second samples.
    dashboard: Arc<dashboard::Dashboard>,
    /// True while draining: `/readyz` answers 503.
    shutdown: watch::Receiver<bool>,
}

impl Admin {
    /// The admin listener for `config` (key file relative to `base_dir`) over `sources`.
    pub fn new(
        config: &AdminConfig,
        base_dir: &std::path::Path,
        sources: Sources,
    ) -> Result<Arc<Admin>, ConfigError> {
        config.validate(base_dir)?;
        let key = config.api_key(base_dir)?;
        let stomp_config = sources.stomp.config();
        let separator = stomp_config.path_separator;
        let router = Router::new(stomp_config);
        let allow = config
            .allow_destinations
            .iter()
            .map(|p| Pattern::compile_admitted(p, separator))
            .collect();
        let metrics = metrics::Metrics::new(&sources);
        let dashboard = Arc::new(dashboard::Dashboard::new(&sources, metrics.queue_depths()));
        sources.stomp.traffic().enable();
        Ok(Arc::new(Admin {
            auth: auth::ApiKey::new(key.as_deref()),
            idempotency: Mutex::new(IdempotencyWindow::new(
                config.idempotency_window(),
                config.idempotency_max_keys,
            )),
            config: config.clone(),
            stomp: sources.stomp,
            presence: sources.presence,
            cluster_presence: sources.cluster.as_ref().and_then(|c| c.presence().cloned()),
            router,
            allow,
            metrics,
            dashboard,
            shutdown: sources.shutdown,
        }))
    }

    /// Serve `listener` until the gateway's shutdown sender is dropped (the process ends).
    /// Draining does not stop it: `/readyz` must answer 503 for as long as the drain lasts.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let sampler = tokio::spawn(self.dashboard.clone().run());
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut ended = self.shutdown.clone();
        loop {
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = wait_for_sender_gone(&mut ended) => break,
            };
            let (stream, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = wait_for_sender_gone(&mut ended) => break,
            };
            let _ = stream.set_nodelay(true);
            let admin = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                admin.serve_connection(stream, addr).await;
            });
        }
        sampler.abort();
    }

    async fn serve_connection(self: Arc<Self>, stream: tokio::net::TcpStream, addr: SocketAddr) {
        let admin = self.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let admin = admin.clone();
            async move { Ok::<_, Infallible>(admin.handle(req).await) }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES);
        if let Err(e) = builder
            .serve_connection(TokioIo::new(stream), service)
            .await
        {
            tracing::debug!(%addr, error = %e, "admin connection ended with an error");
        }
    }

    /// Answer one request.
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (method.clone(), path.as_str()) {
            (Method::GET | Method::HEAD, "/healthz") => {
                return json_response(StatusCode::OK, &json!({ "status": "live" }));
            }
            (Method::GET | Method::HEAD, "/readyz") => {
                return match *self.shutdown.borrow() {
                    true => json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({ "status": "draining" }),
                    ),
                    false => json_response(StatusCode::OK, &json!({ "status": "ready" })),
                };
            }
            _ => {}
        }
        if !self.auth.allows(req.headers()) {
            return unauthorized(&path);
        }
        let result = match (method, path.as_str()) {
            (Method::GET, "/metrics") => return self.metrics.response(),
            (Method::GET, "/dashboard") => return html_response(DASHBOARD_PAGE),
            (Method::GET, "/api/dashboard") => Ok(self.dashboard.snapshot()),
            (Method::GET, "/api/stats") => Ok(self.metrics.stats_json()),
            (Method::GET, "/api/openapi.json") => {
                return raw_json_response(StatusCode::OK, OPENAPI);
            }
            (Method::POST, "/api/publish") => match self.read_json(req).await {
                Ok(body) => match self.publish(&body) {
                    Ok((answer, replayed)) => {
                        let mut response = json_response(StatusCode::OK, &answer);
                        if replayed {
                            response.headers_mut().insert(
                                "idempotent-replayed",
                                header::HeaderValue::from_static("true"),
                            );
                        }
                        return response;
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            (Method::POST, "/api/batch") => match self.read_json(req).await {
                Ok(body) => self.batch(&body),
                Err(e) => Err(e),
            },
            (Method::POST, "/api/disconnect") => match self.read_json(req).await {
                Ok(body) => self.disconnect(&body),
                Err(e) => Err(e),
            },
            (Method::GET, p) if p.starts_with("/api/presence/users/") => {
                match path_parameter(p, "/api/presence/users/", "user") {
                    Ok(user) => self.presence_user(&user).await,
                    Err(e) => Err(e),
                }
            }
            (Method::GET, p) if p.starts_with("/api/presence/destinations/") => {
                path_parameter(p, "/api/presence/destinations/", "destination")
                    .map(|d| self.presence_destination(&d))
            }
            (method, p) => Err(no_route(&method, p)),
        };
        match result {
            Ok(value) => json_response(StatusCode::OK, &value),
            Err(e) => error_response(&e),
        }
    }

    /// Read a JSON request body within `max_body_bytes` and the body timeout.
    async fn read_json(&self, req: Request<Incoming>) -> Result<Bytes, ApiError> {
        if let Some(content_type) = req.headers().get(header::CONTENT_TYPE) {
            let essence = content_type
                .to_str()
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if essence != "application/json" {
                return Err(ApiError::new(
                    415,
                    "unsupported_media_type",
                    "send the request as Content-Type: application/json",
                ));
            }
        }
        let limit = self.config.max_body_bytes;
        let too_large = || {
            ApiError::new(
                413,
                "body_too_large",
                format!("the request body is larger than {limit} bytes ([admin] max_body_bytes)"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let body = Limited::new(req.into_body(), limit);
        match tokio::time::timeout(BODY_READ_TIMEOUT, body.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Ok(Err(e)) => Err(ApiError::new(
                400,
                "invalid_body",
                format!("the request body could not be read: {e}"),
            )),
            Err(_) => Err(ApiError::new(
                408,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            )),
        }
    }
}

/// Resolves once the watch's sender is gone; changes of its value are ignored.
async fn wait_for_sender_gone(rx: &mut watch::Receiver<bool>) {
    while rx.changed().await.is_ok() {}
}

/// The percent-decoded path parameter after `prefix`.
fn path_parameter(path: &str, prefix: &str, name: &str) -> Result<String, ApiError> {
    let raw = path.strip_prefix(prefix).unwrap_or_default();
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| {
            ApiError::field(
                "invalid_value",
                name,
                format!("the {name} in the path is not UTF-8 once percent-decoded"),
            )
        })?;
    if decoded.is_empty() {
        return Err(ApiError::field(
            "invalid_value",
            name,
            format!("the path names no {name}"),
        ));
    }
    Ok(decoded.into_owned())
}

/// 404 or 405 for a request no endpoint serves.
fn no_route(method: &Method, path: &str) -> ApiError {
    let allow = match path {
        "/metrics" | "/dashboard" | "/api/dashboard" | "/api/stats" | "/api/openapi.json" => {
            Some("GET")
        }
        "/api/publish" | "/api/batch" | "/api/disconnect" => Some("POST"),
        p if p.starts_with("/api/presence/users/")
            || p.starts_with("/api/presence/destinations/") =>
        {
            Some("GET")
        }
        _ => None,
    };
    match allow {
        Some(allow) => ApiError::new(
            405,
            "method_not_allowed",
            format!("{method} is not allowed on {path}; use {allow}"),
        ),
        None => ApiError::new(404, "not_found", format!("no endpoint at {path}")),
    }
}

/// A JSON answer.
fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    raw_json_response(status, &value.to_string())
}

/// A JSON answer from already encoded text.
fn raw_json_response(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(text.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// The dashboard page.
fn html_response(page: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(page.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    // The page needs nothing from elsewhere; say so, so nothing injected can load either.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:",
        ),
    );
    response
}

/// An error answer: `{"error": {"code", "message", "field"?}}`.
fn error_response(error: &ApiError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = json_response(status, &error.to_json());
    if status == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = error.message.rsplit("use ").next()
        && let Ok(value) = header::HeaderValue::from_str(allow)
    {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// 401: the dashboard page asks the browser for Basic credentials (any user name, the API key
/// as the password); API clients are told to send a Bearer token.
fn unauthorized(path: &str) -> Response<Full<Bytes>> {
    let error = ApiError::new(
        401,
        "unauthorized",
        "send the admin API key as Authorization: Bearer <key>",
    );
    let mut response = error_response(&error);
    let challenge = match path {
        "/dashboard" => "Basic realm=\"sockjs-gateway admin\", charset=\"UTF-8\"",
        _ => "Bearer realm=\"sockjs-gateway admin\"",
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static(challenge),
    );
    response
}

/// This node's name: the host name, or `local` when it cannot be read.
pub(crate) fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".into())
}
