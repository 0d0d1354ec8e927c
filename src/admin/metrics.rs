//! `/metrics` (Prometheus text format 0.0.4, through `prometheus-client`) and `/api/stats`
//! (the same numbers as JSON).
//!
//! Nothing here sits on the message path: a [`Collector`] reads the atomics the STOMP core,
//! the SockJS services and the connection limiter already keep, at scrape time. The one
//! histogram, the outbound queue depth, is sampled by the dashboard's once-a-second ticker
//! (each live STOMP session's queued bytes is one observation per second), so it is a
//! cumulative histogram whose rate and quantiles behave as Prometheus expects.
//!
//! Every metric is prefixed `sockjs_gateway_`; the README lists them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};

use super::{ServiceView, Sources};
use crate::cluster_link::ClusterLink;
use crate::limits::{ConnectionLimiter, ConnectionRefused};
use crate::relay::Relay;
use crate::sockjs::stats::{CLOSE_CAUSES, LIMITS, TRANSPORTS, cause_name, limit_name};
use crate::stomp::frame::Command;
use crate::stomp::presence::LocalPresence;
use crate::stomp::stats::KindGroup;
use crate::stomp::{DisconnectCause, StompStats};

/// Upper bounds of the queue-depth histogram's buckets, in bytes.
pub const QUEUE_BUCKETS: [f64; 8] = [
    0.0,
    1024.0,
    4096.0,
    16_384.0,
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
];

/// The sampled outbound queue depths.
#[derive(Debug, Default)]
pub struct QueueDepths {
    /// Observations per bucket (the last one is `+Inf`), their sum and count.
    state: Mutex<([u64; 9], f64, u64)>,
}

impl QueueDepths {
    /// Record one observation per value.
    pub fn observe_all(&self, values: &[usize]) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for &value in values {
            let value = value as f64;
            let slot = QUEUE_BUCKETS
                .iter()
                .position(|bound| value <= *bound)
                .unwrap_or(QUEUE_BUCKETS.len());
            state.0[slot] += 1;
            state.1 += value;
            state.2 += 1;
        }
    }

    /// (per-bucket counts with their upper bounds, sum, count).
    fn read(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let bounds = QUEUE_BUCKETS.iter().copied().chain([f64::INFINITY]);
        (bounds.zip(state.0).collect(), state.1, state.2)
    }
}

/// What the collector reads.
#[derive(Debug)]
struct Readings {
    /// STOMP counters.
    stomp: Arc<StompStats>,
    /// This node's presence.
    presence: Arc<LocalPresence>,
    /// The SockJS services.
    services: Vec<ServiceView>,
    /// The main listeners' connections.
    connections: Arc<ConnectionLimiter>,
    /// Failed TLS handshakes on them.
    tls_failures: Arc<AtomicU64>,
    /// The STOMP relay, when configured.
    relay: Option<Arc<Relay>>,
    /// The cluster link, when configured.
    cluster: Option<Arc<ClusterLink>>,
    /// Queue depth samples.
    queues: Arc<QueueDepths>,
    /// Scrapes served (one self-describing counter, handy to check a scraper is there).
    scrapes: AtomicU64,
}

/// The admin listener's metrics.
pub struct Metrics {
    /// The registry `/metrics` encodes (one collector over [`Readings`]).
    registry: Registry,
    /// The same readings, for `/api/stats`.
    readings: Arc<Readings>,
}

/// The collector registered with the registry.
#[derive(Debug)]
struct GatewayCollector(Arc<Readings>);

/// Labels of one sample.
type Labels = Vec<(&'static str, String)>;

/// A metric family being written: its samples.
struct Family<'e> {
    /// The encoder of the family.
    encoder: prometheus_client::encoding::MetricEncoder<'e>,
}

impl Family<'_> {
    fn counter(&mut self, labels: Labels, value: u64) -> Result<(), std::fmt::Error> {
        ConstCounter::new(value).encode(self.encoder.encode_family(&labels)?)
    }

    fn gauge(&mut self, labels: Labels, value: i64) -> Result<(), std::fmt::Error> {
        ConstGauge::new(value).encode(self.encoder.encode_family(&labels)?)
    }
}

fn family<'e>(
    encoder: &'e mut DescriptorEncoder,
    name: &'e str,
    help: &str,
    kind: MetricType,
) -> Result<Family<'e>, std::fmt::Error> {
    Ok(Family {
        encoder: encoder.encode_descriptor(name, help, None, kind)?,
    })
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The STOMP kind groups, in `current_sessions` order, by name.
const KIND_GROUPS: [(&str, KindGroup); 4] = [
    ("ws", KindGroup::Ws),
    ("http_stream", KindGroup::HttpStream),
    ("http_poll", KindGroup::HttpPoll),
    ("tcp", KindGroup::Tcp),
];

/// STOMP drop counters, by reason.
fn drops(s: &StompStats) -> [(&'static str, u64); 6] {
    [
        ("no_subscriber", load(&s.dropped_no_subscriber)),
        ("unroutable", load(&s.dropped_unroutable)),
        ("overflow", load(&s.dropped_overflow)),
        ("unencodable", load(&s.dropped_unencodable)),
        ("user_unknown", load(&s.dropped_user_unknown)),
        ("queue_full", load(&s.dropped_queue_full)),
    ]
}

/// Errors, by kind.
fn errors(s: &StompStats) -> [(&'static str, u64); 9] {
    [
        ("stomp_error_frame", load(&s.errors_sent)),
        ("access_denied", load(&s.access_denied)),
        ("connect_timeout", load(&s.connect_failures)),
        ("heartbeat_timeout", load(&s.heartbeat_timeouts)),
        ("rate_limited", load(&s.rate_limited)),
        ("idle_timeout", load(&s.idle_timeouts)),
        ("transport_error", load(&s.transport_errors)),
        ("header_dropped", load(&s.headers_dropped)),
        ("ack_unknown", load(&s.ack_unknown)),
    ]
}

const REFUSALS: [(&str, ConnectionRefused); 2] = [
    ("max_connections", ConnectionRefused::Total),
    ("max_connections_per_ip", ConnectionRefused::PerIp),
];

impl Collector for GatewayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = &self.0;
        let s = &r.stomp;
        let snaps: Vec<_> = r.services.iter().map(|v| (v, v.stats.snapshot())).collect();
        let svc = |v: &ServiceView| -> Labels {
            vec![("service", v.prefix.clone()), ("app", v.app.clone())]
        };
        let tcp_open = s.current_sessions[KindGroup::Tcp as usize].load(Ordering::Relaxed);

        let mut f = family(
            &mut encoder,
            "sockjs_gateway_sessions_open",
            "Live sessions by service, app and transport (STOMP over TCP as service \"\", app \"stomp\", transport \"tcp\").",
            MetricType::Gauge,
        )?;
        for (v, snap) in &snaps {
            for (i, t) in TRANSPORTS.iter().enumerate() {
                let mut l = svc(v);
                l.push(("transport", t.name().into()));
                f.gauge(l, snap.open[i])?;
            }
        }
        f.gauge(
            vec![
                ("service", String::new()),
                ("app", "stomp".into()),
                ("transport", "tcp".into()),
            ],
            tcp_open,
        )?;

        let mut f = family(
            &mut encoder,
            "sockjs_gateway_sessions_opened",
            "Sessions opened by service, app and transport.",
            MetricType::Counter,
        )?;
        for (v, snap) in &snaps {
            for (i, t) in TRANSPORTS.iter().enumerate() {
                let mut l = svc(v);
                l.push(("transport", t.name().into()));
                f.counter(l, snap.opened[i])?;
            }
        }

        let mut f = family(
            &mut encoder,
            "sockjs_gateway_sessions_closed",
            "SockJS sessions ended, by service, app and cause.",
            MetricType::Counter,
        )?;
        for (v, snap) in &snaps {
            for (i, c) in CLOSE_CAUSES.iter().enumerate() {
                let mut l = svc(v);
                l.push(("cause", cause_name(*c).into()));
                f.counter(l, snap.closed[i])?;
            }
        }

        let mut f = family(
            &mut encoder,
            "sockjs_gateway_stomp_sessions_open",
            "Live STOMP sessions by carrier group.",
            MetricType::Gauge,
        )?;
        for (name, group) in KIND_GROUPS {
            f.gauge(
                vec![("group", name.into())],
                s.current_sessions[group as usize].load(Ordering::Relaxed),
            )?;
        }
        let mut f = family(
            &mut encoder,
            "sockjs_gateway_stomp_sessions_opened",
            "STOMP sessions opened on every carrier.",
            MetricType::Counter,
        )?;
        f.counter(vec![], load(&s.total_sessions))?;
        let mut f = family(
            &mut encoder,
            "sockjs_gateway_stomp_sessions_closed",
            "STOMP sessions ended, by carrier group and cause.",
            MetricType::Counter,
        )?;
        for (name, group) in KIND_GROUPS {
            for cause in DisconnectCause::ALL {
                f.counter(
                    vec![("group", name.into()), ("cause", cause.name().into())],
                    s.closed(group, cause),
                )?;
            }
        }

        for (name, help, pick) in [
            (
                "sockjs_gateway_messages_in",
                "Messages received from clients by SockJS services.",
                0usize,
            ),
            (
                "sockjs_gateway_bytes_in",
                "Payload bytes received from clients by SockJS services.",
                1,
            ),
            (
                "sockjs_gateway_messages_out",
                "Messages written to clients by SockJS services.",
                2,
            ),
            (
                "sockjs_gateway_bytes_out",
                "Payload bytes written to clients by SockJS services.",
                3,
            ),
        ] {
            let mut f = family(&mut encoder, name, help, MetricType::Counter)?;
            for (v, snap) in &snaps {
                let value = [
                    snap.messages_in,
                    snap.bytes_in,
                    snap.messages_out,
                    snap.bytes_out,
                ][pick];
                f.counter(svc(v), value)?;
            }
        }

        for (name, help, value) in [
            (
                "sockjs_gateway_stomp_bytes_in",
                "Bytes received from STOMP clients on every carrier (TCP included).",
                load(&s.bytes_in),
            ),
            (
                "sockjs_gateway_stomp_bytes_out",
                "Bytes queued for STOMP clients on every carrier (TCP included).",
                s.bytes_out.load(Ordering::Relaxed),
            ),
        ] {
            let mut f = family(&mut encoder, name, help, MetricType::Counter)?;
            f.counter(vec![], value)?;
        }
        let mut f = family(
            &mut encoder,
            "sockjs_gateway_stomp_messages_published",
            "Messages published into the broker (client SENDs and the admin API).",
            MetricType::Counter,
        )?;
        f.counter(vec![], load(&s.published))?;
        let mut f = family(
            &mut encoder,
            "sockjs_gateway_stomp_messages_delivered",
            "MESSAGE frames handed to sessions.",
            MetricType::Counter,
        )?;
        f.counter(vec![], load(&s.delivered))?;
        let mut f = family(
            &mut encoder,
            "sockjs_gateway_stomp_messages_dropped",
            "Messages the broker did not deliver, by reason.",
            MetricType::Counter,
        )?;
        for (reason, value) in drops(s) {
            f.counter(vec![("reason", reason.into())], value)?;
        }

        let mut f = family(
            &mut encoder,
            "sockjs_gateway_slow_consumer_terminations",
            "Sessions ended because the client did not keep up (queue overflow or a stalled write), by service and app.",
            MetricType::Counter,
        )?;
        for (v, snap) in &snaps {
            f.counter(svc(v), snap.slow_consumer_terminations)?;
        }
        f.counter(
            vec![("service", String::new()), ("app", "stomp".into())],
            s.closed(KindGroup::Tcp, DisconnectCause::SendLimit),
        )?;
        let mut f = family(
            &mut encoder,
            "sockjs_gateway_slow_consumer_drops",
            "Messages discarded or refused for a slow client (overflow_strategy = \"drop\"), by service and app.",
            MetricType::Counter,
        )?;
        for (v, snap) in &snaps {
            f.counter(svc(v), snap.slow_consumer_drops)?;
        }

        let (buckets, sum, count) = r.queues.read();
        let mut m = encoder.encode_descriptor(
            "sockjs_gateway_outbound_queue_bytes",
            "Bytes queued for each live STOMP session's client, sampled once a second.",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)?;

        let mut f = family(
            &mut encoder,
            "sockjs_gateway_stomp_frames_received",
            "Inbound STOMP frames by command.",
            MetricType::Counter,
        )?;
        for command in Command::ALL.iter().take(11) {
            f.counter(
                vec![("command", command.as_str().into())],
                s.frames_received(*command),
            )?;
        }
        let mut f = family(
            &mut encoder,
            "sockjs_gateway_stomp_subscriptions",
            "Active broker subscriptions.",
            MetricType::Gauge,
        )?;
        f.gauge(vec![], s.subscriptions.load(Ordering::Relaxed))?;
        let mut f = family(
            &mut encoder,
            "sockjs_gateway_stomp_destinations",
            "Distinct destinations and patterns with at least one subscription.",
            MetricType::Gauge,
        )?;
        f.gauge(vec![], r.presence.destination_count() as i64)?;

        let mut f = family(
            &mut encoder,
            "sockjs_gateway_errors",
            "Errors by kind.",
            MetricType::Counter,
        )?;
        for (kind, value) in errors(s) {
            f.counter(vec![("kind", kind.into())], value)?;
        }

        let mut f = family(
            &mut encoder,
            "sockjs_gateway_connections_open",
            "Open connections of the HTTP and STOMP TCP listeners.",
            MetricType::Gauge,
        )?;
        f.gauge(vec![], r.connections.open() as i64)?;
        let mut f = family(
            &mut encoder,
            "sockjs_gateway_connections_refused",
            "Connections refused, by the limit that refused them.",
            MetricType::Counter,
        )?;
        for (name, limit) in REFUSALS {
            f.counter(
                vec![("limit", name.into())],
                r.connections.refused_by(limit),
            )?;
        }
        let mut f = family(
            &mut encoder,
            "sockjs_gateway_tls_handshake_failures",
            "TLS handshakes that failed or timed out (plain-text clients, untrusted certificates, silent connections).",
            MetricType::Counter,
        )?;
        f.counter(vec![], load(&r.tls_failures))?;
        if let Some(cluster) = &r.cluster {
            cluster_metrics(&mut encoder, cluster)?;
        }
        if let Some(relay) = &r.relay {
            relay_metrics(&mut encoder, relay)?;
        }
        let mut f = family(
            &mut encoder,
            "sockjs_gateway_sessions_refused",
            "New sessions refused, by service, app and limit.",
            MetricType::Counter,
        )?;
        for (v, snap) in &snaps {
            for (i, limit) in LIMITS.iter().enumerate() {
                let mut l = svc(v);
                l.push(("limit", limit_name(*limit).into()));
                f.counter(l, snap.refused[i])?;
            }
        }
        let mut f = family(
            &mut encoder,
            "sockjs_gateway_metrics_scrapes",
            "Scrapes of this endpoint.",
            MetricType::Counter,
        )?;
        f.counter(vec![], load(&r.scrapes))?;
        Ok(())
    }
}

impl Metrics {
    /// Metrics over `sources`.
    pub fn new(sources: &Sources) -> Metrics {
        let readings = Arc::new(Readings {
            stomp: sources.stomp.stats(),
            presence: sources.stomp.presence(),
            services: sources.services.clone(),
            connections: sources.connections.clone(),
            tls_failures: sources.tls_failures.clone(),
            relay: sources.relay.clone(),
            cluster: sources.cluster.clone(),
            queues: Arc::default(),
            scrapes: AtomicU64::new(0),
        });
        let mut registry = Registry::default();
        registry.register_collector(Box::new(GatewayCollector(readings.clone())));
        Metrics { registry, readings }
    }

    /// Where the dashboard's ticker records queue depth samples.
    pub fn queue_depths(&self) -> Arc<QueueDepths> {
        self.readings.queues.clone()
    }

    /// The `/metrics` answer.
    pub fn response(&self) -> Response<Full<Bytes>> {
        self.readings.scrapes.fetch_add(1, Ordering::Relaxed);
        let mut text = String::with_capacity(16 * 1024);
        let status =
            match prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry) {
                Ok(()) => http::StatusCode::OK,
                Err(_) => {
                    text.clear();
                    let _ = writeln!(text, "# metrics could not be encoded");
                    http::StatusCode::INTERNAL_SERVER_ERROR
                }
            };
        let mut response = Response::new(Full::new(Bytes::from(text)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            ),
        );
        response
    }

    /// `GET /api/stats`: the STOMP and SockJS counters as JSON.
    pub fn stats_json(&self) -> Value {
        let r = &self.readings;
        let s = &r.stomp;
        let named = |pairs: &[(&str, u64)]| -> Value {
            Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), json!(v)))
                    .collect(),
            )
        };
        let current: Map<String, Value> = KIND_GROUPS
            .iter()
            .map(|(name, g)| {
                (
                    (*name).to_owned(),
                    json!(s.current_sessions[*g as usize].load(Ordering::Relaxed)),
                )
            })
            .collect();
        let closed: Map<String, Value> = DisconnectCause::ALL
            .iter()
            .map(|c| {
                let n: u64 = KIND_GROUPS.iter().map(|(_, g)| s.closed(*g, *c)).sum();
                (c.name().to_owned(), json!(n))
            })
            .collect();
        let frames: Map<String, Value> = Command::ALL
            .iter()
            .take(11)
            .map(|c| (c.as_str().to_owned(), json!(s.frames_received(*c))))
            .collect();
        let services: Vec<Value> = r
            .services
            .iter()
            .map(|v| {
                let snap = v.stats.snapshot();
                let per_transport = |values: &[i64]| -> Value {
                    Value::Object(TRANSPORTS.iter().zip(values).map(|(t, n)| (t.name().to_owned(), json!(n))).collect())
                };
                let opened: Vec<i64> = snap.opened.iter().map(|n| *n as i64).collect();
                json!({
                    "prefix": v.prefix,
                    "app": v.app,
                    "sessions": {
                        "open": per_transport(&snap.open),
                        "opened": per_transport(&opened),
                        "closed": Value::Object(CLOSE_CAUSES.iter().zip(snap.closed).map(|(c, n)| (cause_name(*c).to_owned(), json!(n))).collect()),
                        "refused": Value::Object(LIMITS.iter().zip(snap.refused).map(|(l, n)| (limit_name(*l).to_owned(), json!(n))).collect()),
                    },
                    "messages_in": snap.messages_in,
                    "bytes_in": snap.bytes_in,
                    "messages_out": snap.messages_out,
                    "bytes_out": snap.bytes_out,
                    "slow_consumer": {
                        "terminations": snap.slow_consumer_terminations,
                        "drops": snap.slow_consumer_drops,
                    },
                })
            })
            .collect();
        json!({
            "node": super::node_name(),
            "connections": {
                "open": r.connections.open(),
                "refused": named(&REFUSALS.map(|(n, l)| (n, r.connections.refused_by(l)))),
            },
            "stomp": {
                "sessions": {
                    "current": current,
                    "total": load(&s.total_sessions),
                    "closed": closed,
                },
                "frames_in": frames,
                "connected_sent": load(&s.connected_sent),
                "bytes_in": load(&s.bytes_in),
                "bytes_out": s.bytes_out.load(Ordering::Relaxed),
                "subscriptions": s.subscriptions.load(Ordering::Relaxed),
                "destinations": r.presence.destination_count(),
                "broker": {
                    "published": load(&s.published),
                    "delivered": load(&s.delivered),
                    "dropped": named(&drops(s)),
                    "acks": load(&s.acks),
                    "nacks": load(&s.nacks),
                    "redeliveries": load(&s.redeliveries),
                    "commits": load(&s.commits),
                    "aborts": load(&s.aborts),
                },
                "errors": named(&errors(s)),
                "summary": s.summary(),
            },
            "sockjs": services,
            "relay": r.relay.as_deref().map(relay_json),
            "cluster": r.cluster.as_deref().map(cluster_json),
        })
    }
}

/// The relay's families in `/metrics`: connection state per pool connection, and counters.
fn relay_metrics(
    encoder: &mut DescriptorEncoder<'_>,
    relay: &Relay,
) -> Result<(), std::fmt::Error> {
    let status = relay.status();
    let per_connection = |pick: fn(&crate::relay::ConnectionStatus) -> i64| {
        status
            .connections
            .iter()
            .enumerate()
            .map(move |(i, c)| (vec![("connection", i.to_string())], pick(c)))
    };
    for (name, help, pick) in [
        (
            "sockjs_gateway_relay_connection_up",
            "1 while the relay's pool connection to the external STOMP broker is up, else 0.",
            (|c| i64::from(c.up)) as fn(&crate::relay::ConnectionStatus) -> i64,
        ),
        (
            "sockjs_gateway_relay_destinations",
            "Destinations local subscriptions want from the external broker, per pool connection.",
            |c| c.destinations as i64,
        ),
        (
            "sockjs_gateway_relay_queued_sends",
            "SENDs waiting for the pool connection to the external broker.",
            |c| c.queued as i64,
        ),
    ] {
        let mut f = family(encoder, name, help, MetricType::Gauge)?;
        for (labels, value) in per_connection(pick) {
            f.gauge(labels, value)?;
        }
    }
    let s = relay.stats();
    family(
        encoder,
        "sockjs_gateway_relay_session_connections",
        "Broker connections of sessions' own that are up.",
        MetricType::Gauge,
    )?
    .gauge(vec![], load(&s.session_connected) as i64)?;
    for (name, help, counter) in [
        (
            "sockjs_gateway_relay_connects",
            "Times a pool connection to the external broker was established.",
            &s.connects,
        ),
        (
            "sockjs_gateway_relay_broker_subscriptions",
            "SUBSCRIBEs the relay made at the external broker (one per destination per connection).",
            &s.subscribes,
        ),
        (
            "sockjs_gateway_relay_sent",
            "Messages the relay sent to the external broker.",
            &s.sent,
        ),
        (
            "sockjs_gateway_relay_received",
            "Messages the relay received from the external broker and fanned out locally.",
            &s.received,
        ),
        (
            "sockjs_gateway_relay_session_connects",
            "Broker connections of sessions' own (per-session mode, or subscriptions the broker must see itself) established.",
            &s.session_connects,
        ),
        (
            "sockjs_gateway_relay_session_failures",
            "Sessions closed because their own broker connection failed or could not be made.",
            &s.session_failures,
        ),
        (
            "sockjs_gateway_relay_refused",
            "Publishes to relayed destinations refused (broker down, queue full or a destination it would refuse).",
            &s.refused,
        ),
    ] {
        let mut f = family(encoder, name, help, MetricType::Counter)?;
        f.counter(vec![], load(counter))?;
    }
    Ok(())
}

/// The relay's part of `/api/stats`.
fn relay_json(relay: &Relay) -> Value {
    let status = relay.status();
    let s = relay.stats();
    let connections: Vec<Value> = status
        .connections
        .iter()
        .map(|c| {
            json!({
                "state": if c.up { "connected" } else { "down" },
                "destinations": c.destinations,
                "confirmed": c.confirmed,
                "queued_sends": c.queued,
            })
        })
        .collect();
    json!({
        "broker": status.broker,
        "mode": status.mode,
        "connected": status.connections.iter().filter(|c| c.up).count(),
        "pool_size": status.connections.len(),
        "connections": connections,
        "sessions_with_own_connection": status.session_connections,
        "session_connections_up": load(&s.session_connected),
        "session_connects": load(&s.session_connects),
        "session_failures": load(&s.session_failures),
        "connects": load(&s.connects),
        "broker_subscriptions": load(&s.subscribes),
        "sent": load(&s.sent),
        "received": load(&s.received),
        "refused": load(&s.refused),
    })
}

/// The cluster's counters by part and name: the Redis bridge, the shared queues and the
/// inbox (each when configured), for `/api/stats` and `/metrics` alike.
fn cluster_counters(link: &ClusterLink) -> Vec<(&'static str, &'static str, u64)> {
    let mut out = Vec::new();
    let mut add = |part: &'static str, counters: &[(&'static str, &AtomicU64)]| {
        out.extend(counters.iter().map(|(name, c)| (part, *name, load(c))));
    };
    if let Some(c) = link.cluster() {
        add("redis", &c.stats().counters());
    }
    if let Some(q) = link.queue_stats() {
        add("shared_queues", &q.counters());
    }
    if let Some(i) = link.inbox_stats() {
        add("inbox", &i.counters());
    }
    out
}

/// The cluster's part of `/api/stats`: `redis` (this node's id, whether its pub/sub
/// connection is up, the bridge's counters), `shared_queues` and `inbox`, each null when
/// not configured.
fn cluster_json(link: &ClusterLink) -> Value {
    let mut parts = json!({ "redis": null, "shared_queues": null, "inbox": null });
    for (part, name, value) in cluster_counters(link) {
        if parts[part].is_null() {
            parts[part] = json!({});
        }
        parts[part][name] = json!(value);
    }
    if let Some(c) = link.cluster() {
        parts["redis"]["node"] = json!(c.node_id());
        parts["redis"]["connected"] = json!(c.stats().connected.load(Ordering::Relaxed));
    }
    parts
}

/// The cluster's families in `/metrics`: whether this node's Redis pub/sub connection is
/// up, and every counter as `sockjs_gateway_cluster_<part>_<name>`.
fn cluster_metrics(
    encoder: &mut DescriptorEncoder<'_>,
    link: &ClusterLink,
) -> Result<(), std::fmt::Error> {
    if let Some(c) = link.cluster() {
        family(
            encoder,
            "sockjs_gateway_cluster_redis_connected",
            "1 while this node's Redis pub/sub connection is up, else 0.",
            MetricType::Gauge,
        )?
        .gauge(
            vec![],
            i64::from(c.stats().connected.load(Ordering::Relaxed)),
        )?;
    }
    for (part, name, value) in cluster_counters(link) {
        let metric = format!("sockjs_gateway_cluster_{part}_{name}");
        let help = format!("The cluster's {part} counter {name} (see /api/stats).");
        family(encoder, &metric, &help, MetricType::Counter)?.counter(vec![], value)?;
    }
    Ok(())
}
