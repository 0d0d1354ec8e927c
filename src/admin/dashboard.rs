//! The dashboard's data: a once-a-second sampler that turns counters into rates, and the
//! JSON snapshot `GET /api/dashboard` serves to the page (`dashboard.html`).
//!
//! The sampler is the admin listener's only timer. Each second it reads the broker's and the
//! SockJS services' counters (rates are differences over the measured interval), takes the
//! per-destination send counts, samples every live STOMP session's queued bytes into the
//! `/metrics` histogram, and drains the STOMP event bus for slow-consumer terminations. The
//! page polls the snapshot; a slow or absent page costs nothing.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::metrics::QueueDepths;
use super::{ServiceView, Sources};
use crate::sockjs::stats::TRANSPORTS;
use crate::stomp::presence::LocalPresence;
use crate::stomp::stats::KindGroup;
use crate::stomp::traffic::DestinationTraffic;
use crate::stomp::{DisconnectCause, StompEvent, StompStats};

/// How often the sampler runs.
const TICK: Duration = Duration::from_secs(1);

/// Rate points kept for the page's chart (one a second).
const HISTORY: usize = 120;

/// Recent slow-consumer terminations kept.
const RECENT_EVENTS: usize = 20;

/// Destinations listed per top list.
const TOP: usize = 10;

/// One second's rates.
#[derive(Debug, Clone, Copy, Default)]
struct Rates {
    /// When it was measured (ms since the epoch).
    at_ms: u64,
    /// Messages published into the broker per second.
    published: f64,
    /// MESSAGE frames delivered per second.
    delivered: f64,
    /// SockJS messages received from clients per second.
    sockjs_in: f64,
    /// SockJS messages written to clients per second.
    sockjs_out: f64,
}

/// Counter values at one sample.
#[derive(Debug, Clone, Copy)]
struct Totals {
    /// When they were read.
    at: Instant,
    /// Broker publishes.
    published: u64,
    /// Broker deliveries.
    delivered: u64,
    /// SockJS messages in.
    sockjs_in: u64,
    /// SockJS messages out.
    sockjs_out: u64,
}

/// What the sampler keeps between ticks.
#[derive(Debug, Default)]
struct State {
    /// The latest rates, oldest first.
    history: VecDeque<Rates>,
    /// The busiest destinations of the last interval: (destination, messages per second).
    top_by_rate: Vec<(String, f64)>,
    /// Messages per second to destinations past the traffic bound.
    other_rate: f64,
    /// Recent slow-consumer terminations, newest last.
    recent: VecDeque<Value>,
    /// The last counter readings.
    last: Option<Totals>,
}

/// The dashboard's sampler and snapshot.
pub struct Dashboard {
    /// STOMP counters.
    stomp: Arc<StompStats>,
    /// This node's presence.
    presence: Arc<LocalPresence>,
    /// Per-destination send counts.
    traffic: Arc<DestinationTraffic>,
    /// The SockJS services.
    services: Vec<ServiceView>,
    /// Where queue depth samples go.
    queues: Arc<QueueDepths>,
    /// STOMP lifecycle events, for slow-consumer terminations.
    events: Mutex<Option<broadcast::Receiver<StompEvent>>>,
    /// This node's name.
    node: String,
    /// When the admin listener was built (the node's start, for uptime).
    started: SystemTime,
    /// Samples.
    state: Mutex<State>,
}

impl Dashboard {
    /// A dashboard over `sources`, sampling queue depths into `queues`.
    pub fn new(sources: &Sources, queues: Arc<QueueDepths>) -> Dashboard {
        Dashboard {
            stomp: sources.stomp.stats(),
            presence: sources.stomp.presence(),
            traffic: sources.stomp.traffic(),
            services: sources.services.clone(),
            queues,
            events: Mutex::new(Some(sources.stomp.subscribe_events())),
            node: super::node_name(),
            started: SystemTime::now(),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sample once a second until aborted.
    pub async fn run(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.sample();
        }
    }

    fn totals(&self) -> Totals {
        let (mut sockjs_in, mut sockjs_out) = (0, 0);
        for service in &self.services {
            let snap = service.stats.snapshot();
            sockjs_in += snap.messages_in;
            sockjs_out += snap.messages_out;
        }
        Totals {
            at: Instant::now(),
            published: self.stomp.published.load(Ordering::Relaxed),
            delivered: self.stomp.delivered.load(Ordering::Relaxed),
            sockjs_in,
            sockjs_out,
        }
    }

    /// One tick: rates, top destinations by rate, queue depths, slow-consumer events.
    fn sample(&self) {
        let now = self.totals();
        let traffic = self.traffic.take();
        self.queues.observe_all(&self.presence.queued_bytes());
        let events = self.drain_slow_consumer_events();
        let mut state = self.lock();
        let Some(last) = state.last.replace(now) else {
            return;
        };
        let seconds = now.at.duration_since(last.at).as_secs_f64().max(0.001);
        let per_second = |a: u64, b: u64| a.saturating_sub(b) as f64 / seconds;
        let rates = Rates {
            at_ms: unix_ms(SystemTime::now()),
            published: per_second(now.published, last.published),
            delivered: per_second(now.delivered, last.delivered),
            sockjs_in: per_second(now.sockjs_in, last.sockjs_in),
            sockjs_out: per_second(now.sockjs_out, last.sockjs_out),
        };
        if state.history.len() == HISTORY {
            state.history.pop_front();
        }
        state.history.push_back(rates);
        let mut top: Vec<(String, f64)> = traffic
            .by_destination
            .into_iter()
            .map(|(d, n)| (d, n as f64 / seconds))
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(TOP);
        state.top_by_rate = top;
        state.other_rate = traffic.other as f64 / seconds;
        for event in events {
            if state.recent.len() == RECENT_EVENTS {
                state.recent.pop_front();
            }
            state.recent.push_back(event);
        }
    }

    /// Slow-consumer terminations reported since the last tick (a lagging receiver skips
    /// what it lost; the counters in the snapshot stay exact).
    fn drain_slow_consumer_events(&self) -> Vec<Value> {
        let mut guard = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let Some(events) = guard.as_mut() else {
            return Vec::new();
        };
        let mut found = Vec::new();
        loop {
            match events.try_recv() {
                Ok(StompEvent::Disconnect {
                    session,
                    user,
                    code,
                    reason,
                    cause: DisconnectCause::SendLimit,
                }) => found.push(json!({
                    "at": super::api::rfc3339(SystemTime::now()),
                    "session": session,
                    "user": user,
                    "code": code,
                    "reason": reason,
                })),
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(broadcast::error::TryRecvError::Closed) => {
                    *guard = None;
                    break;
                }
            }
        }
        found
    }

    /// `GET /api/dashboard`.
    pub fn snapshot(&self) -> Value {
        let mut by_transport: Vec<(String, i64)> = TRANSPORTS
            .iter()
            .map(|t| (t.name().to_owned(), 0))
            .collect();
        let (mut terminations, mut drops) = (0u64, 0u64);
        for service in &self.services {
            let snap = service.stats.snapshot();
            for (slot, open) in by_transport.iter_mut().zip(snap.open) {
                slot.1 += open;
            }
            terminations += snap.slow_consumer_terminations;
            drops += snap.slow_consumer_drops;
        }
        let tcp = self.stomp.current_sessions[KindGroup::Tcp as usize].load(Ordering::Relaxed);
        by_transport.push(("tcp".into(), tcp));
        let total: i64 = by_transport.iter().map(|(_, n)| n).sum();
        let state = self.lock();
        let latest = state.history.back().copied().unwrap_or_default();
        let history: Vec<Value> = state
            .history
            .iter()
            .map(|r| json!({ "at_ms": r.at_ms, "in": r.published, "out": r.delivered }))
            .collect();
        let by_subscribers: Vec<Value> = self
            .presence
            .top_destinations(TOP)
            .into_iter()
            .map(|(d, n)| json!({ "destination": d, "subscribers": n }))
            .collect();
        let by_rate: Vec<Value> = state
            .top_by_rate
            .iter()
            .map(|(d, r)| json!({ "destination": d, "per_second": round(*r) }))
            .collect();
        let started = self.started;
        let node = json!({
            "name": self.node,
            "self": true,
            "version": env!("CARGO_PKG_VERSION"),
            "started": super::api::rfc3339(started),
            "uptime_s": SystemTime::now().duration_since(started).unwrap_or_default().as_secs(),
            "sessions": total,
        });
        json!({
            "nodes": [node],
            "sessions": {
                "total": total,
                "by_transport": serde_json::Map::from_iter(by_transport.into_iter().map(|(t, n)| (t, json!(n)))),
                "stomp": self.presence.session_count(),
            },
            "rates": {
                "messages_in_per_second": round(latest.published),
                "messages_out_per_second": round(latest.delivered),
                "sockjs_in_per_second": round(latest.sockjs_in),
                "sockjs_out_per_second": round(latest.sockjs_out),
            },
            "history": history,
            "top_destinations": {
                "by_subscribers": by_subscribers,
                "by_rate": by_rate,
                "other_per_second": round(state.other_rate),
            },
            "slow_consumers": {
                "terminations": terminations + self.stomp.closed(KindGroup::Tcp, DisconnectCause::SendLimit),
                "drops": drops,
                "recent": state.recent.iter().cloned().collect::<Vec<_>>(),
            },
        })
    }
}

/// Two decimals are plenty for a rate on a page.
fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn unix_ms(at: SystemTime) -> u64 {
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}
