//! One configured backend: the destinations it owns, its HTTP client, the bound on requests in
//! flight, and the per-session lanes frames wait in.
//!
//! A lane is the ordered queue of one session's frames for this backend: at most one of them
//! is in flight, so they reach the backend in the order the client sent them, while other
//! sessions' lanes run side by side. A lane exists only while it has work: the first frame
//! starts a task that drains it and ends when it is empty. A lane holds at most
//! `max_queued_per_session` frames, and a frame waits at most `queue_timeout_ms` for one of the
//! backend's `max_in_flight` slots; past either bound it fails as "busy", so a slow or dead
//! backend costs its own sessions a bounded wait and never touches the broker or another
//! backend (each has its own client, pool and slots).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use tokio::sync::Semaphore;

use super::client::HttpClient;
use super::config::{BackendConfig, OnError};
use super::hooks::{self, Disconnects};
use super::wire::{self, Delivery, FrameInfo, Planned, Routing};
use crate::stomp::destination::{Pattern, Router};
use crate::stomp::{
    AppFrame, AppRequest, BackendError, Broker, ConnectCheck, ConnectDecision, ConnectRefusal,
    SessionEnded, StompConfig,
};

/// The user destination a failed frame's error message goes to with `on_error = "user-queue"`
/// (the client subscribes to `/user/queue/errors`).
pub const ERRORS_QUEUE: &str = "/queue/errors";

/// Counters of one backend.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Frames the backend took (2xx).
    pub accepted: AtomicU64,
    /// Frames that failed: unreachable, timed out, refused, garbage, or busy.
    pub failed: AtomicU64,
    /// Of the failed, those that found the backend busy (`max_in_flight` slots all taken for
    /// `queue_timeout_ms`, or `max_queued_per_session` frames waiting).
    pub busy: AtomicU64,
    /// Messages the backend answered with, delivered through the broker.
    pub replies: AtomicU64,
}

/// What waits in a lane.
#[derive(Debug)]
enum Job {
    /// A frame to POST.
    Frame(AppRequest),
    /// The session ended; told to the disconnect hook after its last frame.
    Ended(SessionEnded),
}

/// One `[[backend]]`.
#[derive(Debug)]
pub(crate) struct Backend {
    /// `backend[i]`, for logs and error texts.
    pub(crate) name: String,
    /// The destinations it owns.
    patterns: Vec<Pattern>,
    /// Where frames are POSTed.
    url: Option<Uri>,
    /// The pooled client (shared by the hooks).
    client: HttpClient,
    /// Slots for requests in flight.
    in_flight: Arc<Semaphore>,
    /// The number of slots.
    max_in_flight: usize,
    /// How long a frame waits for a slot.
    queue_timeout: Duration,
    /// The most frames one session's lane holds.
    pub(crate) max_queued_per_session: usize,
    /// What a failed frame gives the client.
    on_error: OnError,
    /// Where answered messages go.
    routing: Routing,
    /// The CONNECT hook, if any.
    connect_url: Option<Uri>,
    /// The disconnect notices, if any.
    pub(crate) disconnects: Option<Arc<Disconnects>>,
    /// The lanes of sessions with work, by session id.
    lanes: Mutex<HashMap<String, VecDeque<Job>>>,
    /// Counters.
    pub(crate) stats: BackendStats,
}

impl Backend {
    /// Build `config` (validated already), the `index`-th table.
    pub(crate) fn new(index: usize, config: &BackendConfig, stomp: &StompConfig) -> Backend {
        let name = format!("backend[{index}]");
        let parse = |url: &Option<String>| url.as_deref().and_then(|u| u.parse::<Uri>().ok());
        let url = parse(&config.url);
        let logged_url = [&config.url, &config.connect_url, &config.disconnect_url]
            .into_iter()
            .flatten()
            .next()
            .cloned()
            .unwrap_or_default();
        let client = HttpClient::new(
            name.clone(),
            logged_url,
            Duration::from_millis(config.timeout_ms),
            config.max_response_bytes,
            config.max_in_flight,
            &config.headers,
        );
        let disconnects = parse(&config.disconnect_url).map(|url| {
            Arc::new(Disconnects::new(
                url,
                client.clone(),
                config.disconnect_batch_size,
                config.disconnect_queue_size,
            ))
        });
        Backend {
            patterns: config
                .destinations
                .iter()
                .map(|p| Pattern::compile_admitted(p, '/'))
                .collect(),
            url,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            max_in_flight: config.max_in_flight,
            queue_timeout: Duration::from_millis(config.queue_timeout_ms),
            max_queued_per_session: config.max_queued_per_session,
            on_error: config.on_error,
            routing: Routing {
                router: Router::new(stomp),
                default_destination_prefix: config.default_destination_prefix.clone(),
                default_user_destination_prefix: config.default_user_destination_prefix.clone(),
            },
            connect_url: parse(&config.connect_url),
            disconnects,
            lanes: Mutex::new(HashMap::new()),
            stats: BackendStats::default(),
            client,
            name,
        }
    }

    /// Whether this backend owns `destination`.
    pub(crate) fn owns(&self, destination: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(destination))
    }

    fn lanes(&self) -> MutexGuard<'_, HashMap<String, VecDeque<Job>>> {
        match self.lanes.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Queue a frame in its session's lane (starting the lane's task when it was idle), or
    /// fail it at once when the lane is full. Returns at once.
    pub(crate) fn forward(self: &Arc<Self>, broker: &Arc<Broker>, request: AppRequest) {
        let first = {
            let mut lanes = self.lanes();
            match lanes.get_mut(&request.session) {
                Some(lane) if lane.len() + 1 >= self.max_queued_per_session => {
                    drop(lanes);
                    self.stats.busy.fetch_add(1, Ordering::Relaxed);
                    let error = BackendError::Busy(format!(
                        "{} frames of this session already wait for {} (max_queued_per_session)",
                        self.max_queued_per_session, self.name
                    ));
                    self.failed(broker, request, error);
                    return;
                }
                Some(lane) => {
                    lane.push_back(Job::Frame(request));
                    return;
                }
                None => {
                    lanes.insert(request.session.clone(), VecDeque::new());
                    request
                }
            }
        };
        tokio::spawn(self.clone().run_lane(broker.clone(), first));
    }

    /// Drain one session's lane in order, then retire it.
    async fn run_lane(self: Arc<Self>, broker: Arc<Broker>, first: AppRequest) {
        let guard = LaneGuard {
            backend: &self,
            session: first.session.clone(),
            retired: false,
        };
        let mut job = Job::Frame(first);
        loop {
            match job {
                Job::Frame(request) => self.handle(&broker, request).await,
                Job::Ended(ended) => {
                    if let Some(disconnects) = &self.disconnects {
                        disconnects.push(ended);
                    }
                }
            }
            job = match self.next_job(&guard.session) {
                Some(next) => next,
                None => break,
            };
        }
        guard.retire();
    }

    /// The lane's next job, or None after removing the empty lane (in one critical section,
    /// so a frame queued meanwhile starts a new lane instead of being stranded).
    fn next_job(&self, session: &str) -> Option<Job> {
        let mut lanes = self.lanes();
        let lane = lanes.get_mut(session)?;
        match lane.pop_front() {
            Some(job) => Some(job),
            None => {
                lanes.remove(session);
                None
            }
        }
    }

    /// POST one frame and act on the answer.
    async fn handle(&self, broker: &Broker, request: AppRequest) {
        if matches!(request.frame, AppFrame::Subscribe { .. }) && request.completion.is_abandoned()
        {
            // Nobody is left to receive a subscribe reply; a SEND is still delivered.
            return;
        }
        let info = FrameInfo {
            frame: &request.frame,
            session: &request.session,
            user: request.user.as_deref(),
            destination: &request.destination,
            stripped: &request.stripped,
        };
        let body = wire::frame_request(info, &request.headers, &request.body);
        let planned = match self.exchange(body).await {
            Ok(answer) => wire::plan(&answer, info, &self.routing)
                .map_err(|e| BackendError::Invalid(format!("{}: {e}", self.name))),
            Err(err) => Err(err),
        };
        match planned {
            Ok(planned) => self.deliver(broker, request, planned),
            Err(err) => self.failed(broker, request, err),
        }
    }

    /// Take an in-flight slot (waiting at most `queue_timeout_ms`) and POST.
    async fn exchange(&self, body: Bytes) -> Result<Bytes, BackendError> {
        let Some(url) = &self.url else {
            return Err(BackendError::NoBackend(format!("{} has no url", self.name)));
        };
        let _slot = self.slot().await?;
        self.client.post(url, body).await?.accepted(&self.client)
    }

    /// One of the `max_in_flight` slots, waiting at most `queue_timeout_ms`.
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, BackendError> {
        // Most of the time a slot is free: take it without arming a timer.
        if let Ok(permit) = self.in_flight.clone().try_acquire_owned() {
            return Ok(permit);
        }
        match tokio::time::timeout(self.queue_timeout, self.in_flight.clone().acquire_owned()).await
        {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(closed)) => Err(BackendError::Unavailable(closed.to_string())),
            Err(_) => {
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                Err(BackendError::Busy(format!(
                    "{} has {} requests in flight (max_in_flight) and none finished within {} ms \
                     (queue_timeout_ms)",
                    self.name,
                    self.max_in_flight,
                    self.queue_timeout.as_millis()
                )))
            }
        }
    }

    /// Publish the answered messages through the broker, then complete the frame.
    fn deliver(&self, broker: &Broker, request: AppRequest, planned: Vec<Planned>) {
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats
            .replies
            .fetch_add(planned.len() as u64, Ordering::Relaxed);
        let mut reply = None;
        for Planned {
            delivery,
            headers,
            body,
        } in planned
        {
            let message = broker.message(&headers, body);
            match delivery {
                Delivery::Publish(destination) => {
                    broker.publish(&destination, message);
                }
                Delivery::User { user, destination } => {
                    broker.send_to_user(&user, &destination, None, message);
                }
                Delivery::Session(destination) => {
                    broker.send_to_session(&request.session, &destination, message);
                }
                Delivery::Subscription => reply = Some(message),
            }
        }
        match reply {
            Some(message) => request.completion.reply(message),
            None => request.completion.accept(),
        }
    }

    /// A frame failed: ERROR and close, or (`on_error = "user-queue"`) a message on the
    /// session's `/user/queue/errors`, and the frame counts as handled.
    fn failed(&self, broker: &Broker, request: AppRequest, error: BackendError) {
        let failed = self.stats.failed.fetch_add(1, Ordering::Relaxed) + 1;
        // A dead backend fails every frame: warn at the 1st, 2nd, 4th, 8th... failure.
        if failed.is_power_of_two() {
            tracing::warn!(backend = %self.name, session = %request.session, destination = %request.destination, %error, failed, "frame not taken by the backend");
        } else {
            tracing::debug!(backend = %self.name, session = %request.session, destination = %request.destination, %error, "frame not taken by the backend");
        }
        match self.on_error {
            OnError::Close => request.completion.fail(error),
            OnError::UserQueue => {
                let mut headers = vec![
                    ("message".to_string(), "Backend error".to_string()),
                    ("failed-destination".into(), request.destination.clone()),
                    ("content-type".into(), "text/plain".into()),
                ];
                if let Some(receipt) = &request.receipt {
                    headers.push(("receipt-id".into(), receipt.clone()));
                }
                let message = broker.message(&headers, Bytes::from(error.to_string()));
                broker.send_to_session(&request.session, ERRORS_QUEUE, message);
                request.completion.accept();
            }
        }
    }

    /// A session ended: tell the disconnect hook, after the session's queued frames.
    pub(crate) fn session_ended(&self, ended: SessionEnded) {
        let Some(disconnects) = &self.disconnects else {
            return;
        };
        {
            let mut lanes = self.lanes();
            if let Some(lane) = lanes.get_mut(&ended.session) {
                lane.push_back(Job::Ended(ended));
                return;
            }
        }
        disconnects.push(ended);
    }

    /// Ask the connect hook, if this backend has one (it takes an in-flight slot too).
    pub(crate) fn check_connect(
        self: &Arc<Self>,
        check: &ConnectCheck<'_>,
    ) -> Option<ConnectDecision> {
        let url = self.connect_url.clone()?;
        let body = hooks::connect_request(check);
        let principal = check.principal.cloned();
        let backend = self.clone();
        Some(Box::pin(async move {
            let _slot = backend.slot().await.map_err(ConnectRefusal::Failed)?;
            hooks::decide_connect(backend.client.clone(), url, body, principal).await
        }))
    }
}

/// Retires a lane whose task ended without draining it (a panic while handling a frame), so
/// the session's later frames start a fresh lane; the dropped jobs fail their frames.
struct LaneGuard<'a> {
    /// The backend.
    backend: &'a Backend,
    /// The lane's session.
    session: String,
    /// Set when the lane was drained and removed normally.
    retired: bool,
}

impl LaneGuard<'_> {
    fn retire(mut self) {
        self.retired = true;
    }
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        if !self.retired {
            self.backend.lanes().remove(&self.session);
        }
    }
}
