//! The SockJS session state machine (sockjs.md §6): NEW → OPEN → CLOSING → CLOSED.
//!
//! A session owns one outbound queue, drained by whichever receiver is attached, so a poll
//! that ends or a switch of transport loses nothing that was not yet written. It owns its
//! timers as plain deadlines: the disconnect deadline is checked by the registry's sweeper,
//! the heartbeat by the attached receiver. Nothing here knows HTTP.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::frame;
use super::limits::Admission;
use super::stats::{OpenSession, ServiceStats};
use crate::config::types::OverflowStrategy;
use crate::limits::TokenBucket;
use crate::session::{
    App, CloseCause, CloseInfo, Inbound, InboundSide, OutMessage, SendError, SessionHandle,
    SessionInfo, SessionSink, discard_oldest, new_session,
};

/// The per-service limits a session needs.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// How long the session lives without a receiver.
    pub disconnect_delay: Duration,
    /// Outbound bytes that may be queued.
    pub max_queued_bytes: usize,
    /// What happens when they overflow.
    pub overflow: OverflowStrategy,
    /// Inbound messages per second (burst: twice as many); None is unlimited.
    pub max_messages_per_second: Option<u32>,
    /// How long the session may go without a message from its client; None is forever.
    pub idle_timeout: Option<Duration>,
}

/// Where the session is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Created; `o` not yet written.
    New,
    /// `o` written; messages flow.
    Open,
    /// A close frame is set; receivers get it until the session expires.
    Closing,
    /// Ended; the application has been told.
    Closed,
}

/// The receiver currently attached.
struct ReceiverSlot {
    /// Which receiver it is, so a stale detach cannot clear a newer one.
    id: u64,
}

/// State guarded by the session's lock.
struct State {
    /// Where the session is in its life.
    phase: Phase,
    /// Messages waiting for a receiver, in send order.
    queue: VecDeque<OutMessage>,
    /// Sum of queued payload bytes, bounded by `max_queued_bytes`.
    queued_bytes: usize,
    /// The attached receiver, if any.
    receiver: Option<ReceiverSlot>,
    /// When the session expires if no receiver attaches (None while one is attached).
    expires_at: Option<Instant>,
    /// The close event, fixed when closing starts.
    close: Option<CloseInfo>,
    /// The application's handle, held until the session opens.
    pending_handle: Option<SessionHandle>,
    /// Set when the application runs its own heart-beats (STOMP) and `h` frames are redundant.
    heartbeats_suppressed: bool,
    /// The inbound message-rate limit.
    rate: Option<TokenBucket>,
    /// This session's place in the service's session counts, released when it ends.
    admission: Option<Admission>,
    /// This session's place in the service's open-session gauge, released when it ends.
    open: Option<OpenSession>,
    /// Wakes the attached receiver when messages are queued or closing starts. A slot rather
    /// than a `Notify`, so a receiver can be a plain polled body with no task of its own.
    receiver_waker: Option<Waker>,
    /// When the client last sent a message (or the session was created), for `idle_timeout`.
    last_inbound: Instant,
    /// An application waiting for room in the queue (with the length it needs; None: only
    /// for closing), woken when a receiver drains the queue or closing begins.
    room_waiter: Option<(Waker, Option<usize>)>,
    /// A receiver has written the close frame, so the client has its close (what a
    /// shutdown waits for before it closes connections).
    close_delivered: bool,
}

/// What a receiver found when it tried to attach.
pub enum Attach {
    /// A brand-new session: write `o`, then call [`Session::start_app`].
    Opened(u64),
    /// An open session: drain the queue as usual.
    Attached(u64),
    /// Another receiver is attached.
    Busy,
    /// The session is closing: write the queued messages or the close frame, then end.
    Closing(u64),
    /// The session ended a moment ago; look it up again.
    Gone,
}

/// One SockJS session, shared by its receivers, its sender and the registry.
pub struct Session {
    /// The application's view of the client.
    info: Arc<SessionInfo>,
    /// The per-service limits.
    limits: SessionLimits,
    /// Everything that changes.
    state: Mutex<State>,
    /// The inbound stream to the application.
    inbound: InboundSide,
    /// The application, started when the session opens.
    app: Arc<dyn App>,
    /// Receiver ids.
    next_receiver: AtomicU64,
    /// The creator's JSESSIONID, which later requests must repeat (when the service uses it).
    jsessionid: Option<String>,
    /// When the creator's credential expires, if the carrier enforces it.
    credential_expires: Option<SystemTime>,
    /// The service's counters.
    stats: Arc<ServiceStats>,
}

impl Session {
    /// Create a session in the NEW state; the application is started on open.
    pub fn new(
        info: SessionInfo,
        limits: SessionLimits,
        app: Arc<dyn App>,
        jsessionid: Option<String>,
        admission: Option<Admission>,
        stats: Arc<ServiceStats>,
    ) -> Arc<Self> {
        let credential_expires = match app.authenticates_in_band() {
            true => None,
            false => info.principal.as_ref().and_then(|p| p.expires_at),
        };
        let open = stats.session_opened(info.transport);
        Arc::new_cyclic(|weak: &std::sync::Weak<Session>| {
            let sink: Arc<dyn SessionSink> = Arc::new(WeakSink(weak.clone()));
            let (inbound, handle) = new_session(info, sink);
            let info = handle.info().clone();
            Session {
                info,
                state: Mutex::new(State {
                    phase: Phase::New,
                    queue: VecDeque::new(),
                    queued_bytes: 0,
                    receiver: None,
                    expires_at: Some(Instant::now() + limits.disconnect_delay),
                    close: None,
                    pending_handle: Some(handle),
                    heartbeats_suppressed: false,
                    rate: limits
                        .max_messages_per_second
                        .map(|r| TokenBucket::new(f64::from(r), 2.0 * f64::from(r))),
                    admission,
                    open: Some(open),
                    receiver_waker: None,
                    last_inbound: Instant::now(),
                    room_waiter: None,
                    close_delivered: false,
                }),
                limits,
                inbound,
                app,
                next_receiver: AtomicU64::new(1),
                jsessionid,
                credential_expires,
                stats,
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` while holding the session's lock, as a busy receiver would.
    #[cfg(test)]
    pub(crate) fn while_locked<R>(&self, f: impl FnOnce() -> R) -> R {
        let _held = self.lock();
        f()
    }

    /// The application's view of the client.
    pub fn info(&self) -> &Arc<SessionInfo> {
        &self.info
    }

    /// The creator's JSESSIONID, if recorded.
    pub fn jsessionid(&self) -> Option<&str> {
        self.jsessionid.as_deref()
    }

    /// When the creator's credential expires, if the carrier must enforce it.
    pub fn credential_expires(&self) -> Option<SystemTime> {
        self.credential_expires
    }

    /// Whether the creator's credential has expired at `now`.
    pub fn credential_expired(&self, now: SystemTime) -> bool {
        self.credential_expires.is_some_and(|exp| exp <= now)
    }

    /// The close event of a session whose client stopped reading: a write stayed blocked
    /// past `send_time_limit` (4500). Logged, since it says a client misbehaves.
    pub fn stalled_close(&self) -> CloseInfo {
        self.stats.slow_consumer_terminated();
        tracing::warn!(
            session = self.info.log_id,
            "client stopped reading; send time limit exceeded"
        );
        CloseInfo {
            code: 4500,
            reason: "Send limit exceeded".into(),
            cause: CloseCause::SendLimit,
        }
    }

    /// Start closing with 4401 "Token expired": the credential's `exp` has passed.
    pub fn close_for_expired_credential(&self) {
        tracing::info!(
            session = self.info.log_id,
            "credential expired; closing session"
        );
        self.begin_close(CloseInfo {
            code: 4401,
            reason: "Token expired".into(),
            cause: CloseCause::Application,
        });
    }

    /// Try to become the session's one receiver.
    pub fn attach_receiver(&self) -> Attach {
        let mut st = self.lock();
        if st.receiver.is_some() {
            return Attach::Busy;
        }
        let id = self.next_receiver.fetch_add(1, Ordering::Relaxed);
        let outcome = match st.phase {
            Phase::New => {
                st.phase = Phase::Open;
                Attach::Opened(id)
            }
            Phase::Open => Attach::Attached(id),
            Phase::Closing => Attach::Closing(id),
            Phase::Closed => return Attach::Gone,
        };
        st.receiver = Some(ReceiverSlot { id });
        st.expires_at = None;
        outcome
    }

    /// Whether a receiver is attached right now.
    pub fn has_receiver(&self) -> bool {
        self.lock().receiver.is_some()
    }

    /// Hand the session to its application; called right after `o` is written.
    pub fn start_app(&self) {
        let handle = self.lock().pending_handle.take();
        if let Some(handle) = handle {
            tracing::debug!(session = self.info.log_id, transport = %self.info.transport, remote = %self.info.remote_addr, "session opened");
            self.app.on_session(handle);
        }
    }

    /// Detach a receiver that ended normally, arming the disconnect timer.
    pub fn detach_receiver(&self, id: u64) {
        let mut st = self.lock();
        if st.receiver.as_ref().is_some_and(|r| r.id == id) {
            st.receiver = None;
            // The waker belongs to the request that just ended; keeping it would pin its task.
            st.receiver_waker = None;
            if st.phase != Phase::Closed {
                st.expires_at = Some(Instant::now() + self.limits.disconnect_delay);
            }
        }
    }

    /// Wait until there is something for the receiver to write.
    pub async fn wait_for_output(&self) {
        std::future::poll_fn(|cx| self.poll_output(cx)).await
    }

    /// Ready when there is something for the receiver to write: queued messages, or a close
    /// under way. Otherwise the receiver's waker is kept (checked and stored under the same
    /// lock as sends, so no wake-up can be lost) and woken by the next send or close.
    pub fn poll_output(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.lock();
        if !st.queue.is_empty() || matches!(st.phase, Phase::Closing | Phase::Closed) {
            return Poll::Ready(());
        }
        match &mut st.receiver_waker {
            Some(waker) => waker.clone_from(cx.waker()),
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Take every queued message as one `a[...]` frame.
    pub fn take_batch(&self) -> Option<Bytes> {
        let mut st = self.lock();
        if st.queue.is_empty() {
            return None;
        }
        let frame = frame::array_frame(st.queue.iter());
        self.stats.messages_out(st.queue.len(), st.queued_bytes);
        st.queue.clear();
        st.queued_bytes = 0;
        let waiter = Self::drained(&mut st);
        drop(st);
        wake(waiter);
        Some(frame)
    }

    /// Take queued messages one by one (raw WebSocket, which does not batch).
    pub fn take_messages(&self) -> Vec<OutMessage> {
        let mut st = self.lock();
        self.stats.messages_out(st.queue.len(), st.queued_bytes);
        st.queued_bytes = 0;
        let messages = st.queue.drain(..).collect();
        let waiter = Self::drained(&mut st);
        drop(st);
        wake(waiter);
        messages
    }

    /// The room waiter to wake now that the queue is empty: any that waits for room (an
    /// empty queue lets every message through), none that waits only for closing.
    fn drained(st: &mut State) -> Option<Waker> {
        match &st.room_waiter {
            Some((_, Some(_))) => st.room_waiter.take().map(|(w, _)| w),
            _ => None,
        }
    }

    /// See [`SessionSink::poll_room`].
    fn poll_room(&self, cx: &mut Context<'_>, len: Option<usize>) -> Poll<Result<(), CloseInfo>> {
        let mut st = self.lock();
        if let (Phase::Closing | Phase::Closed, Some(info)) = (&st.phase, &st.close) {
            return Poll::Ready(Err(info.clone()));
        }
        // A message larger than the whole queue is let through once the queue is empty, so
        // that the overflow strategy, not a wait forever, deals with it.
        let fits = |l: usize| st.queued_bytes + l <= self.limits.max_queued_bytes;
        if len.is_some_and(|l| fits(l) || st.queued_bytes == 0) {
            return Poll::Ready(Ok(()));
        }
        st.room_waiter = Some((cx.waker().clone(), len));
        Poll::Pending
    }

    /// The close event once closing has started.
    pub fn closing(&self) -> Option<CloseInfo> {
        let st = self.lock();
        match st.phase {
            Phase::Closing | Phase::Closed => st.close.clone(),
            _ => None,
        }
    }

    /// Whether `h` frames are currently suppressed by the application.
    pub fn heartbeats_suppressed(&self) -> bool {
        self.lock().heartbeats_suppressed
    }

    /// Hand an inbound message to the application, waiting while its queue is full.
    /// Messages for a closing session are discarded.
    /// A client that sends faster than `max_messages_per_second` is closed with 4429.
    pub async fn deliver(&self, msg: Inbound) {
        {
            let mut st = self.lock();
            if matches!(st.phase, Phase::Closing | Phase::Closed) {
                return;
            }
            let now = Instant::now();
            st.last_inbound = now;
            let within_rate = st.rate.as_mut().is_none_or(|b| b.take(now));
            if !within_rate {
                drop(st);
                tracing::warn!(
                    session = self.info.log_id,
                    "inbound message rate limit exceeded; closing session"
                );
                self.begin_close(CloseInfo {
                    code: 4429,
                    reason: "Message rate limit exceeded".into(),
                    cause: CloseCause::Protocol,
                });
                return;
            }
        }
        self.stats.message_in(match &msg {
            Inbound::Text(text) => text.len(),
            Inbound::Binary(bytes) => bytes.len(),
        });
        self.inbound.deliver(msg).await;
    }

    /// See [`InboundSide::let_application_catch_up`].
    pub async fn let_application_catch_up(&self) {
        self.inbound.let_application_catch_up().await
    }

    /// When the session becomes idle (`idle_timeout` after the client's last message), if it
    /// can.
    pub fn idle_deadline(&self) -> Option<Instant> {
        let timeout = self.limits.idle_timeout?;
        self.lock().last_inbound.checked_add(timeout)
    }

    /// Start closing with 4408 "Idle timeout" if the client has sent nothing for
    /// `idle_timeout` at `now`; returns whether it did.
    pub fn close_if_idle(&self, now: Instant) -> bool {
        if self.idle_deadline().is_none_or(|at| at > now) || self.closing().is_some() {
            return false;
        }
        tracing::info!(
            session = self.info.log_id,
            "no message from the client within idle_timeout; closing session"
        );
        self.begin_close(CloseInfo {
            code: 4408,
            reason: "Idle timeout".into(),
            cause: CloseCause::Timeout,
        });
        true
    }

    /// Start closing with a close frame (no effect once closing).
    pub fn begin_close(&self, info: CloseInfo) {
        self.close_after(None, info);
    }

    /// The server is shutting down: queue `farewell` (past the queue bound: it is the last
    /// message) and start closing with 1001 "Going away", under one lock so that nothing
    /// the application sends meanwhile comes after the farewell.
    pub fn shut_down(&self, farewell: Option<OutMessage>) {
        self.close_after(farewell, CloseInfo::going_away());
    }

    /// Start closing with `info`, `last` being the final queued message.
    fn close_after(&self, last: Option<OutMessage>, info: CloseInfo) {
        let mut st = self.lock();
        if matches!(st.phase, Phase::Closing | Phase::Closed) {
            return;
        }
        tracing::debug!(session = self.info.log_id, code = info.code, reason = %info.reason, cause = ?info.cause, "session closing");
        if let Some(last) = last {
            st.queued_bytes += last.len();
            st.queue.push_back(last);
        }
        st.phase = Phase::Closing;
        st.close = Some(info);
        let waker = st.receiver_waker.take();
        let waiter = st.room_waiter.take().map(|(w, _)| w);
        drop(st);
        wake(waker);
        wake(waiter);
    }

    /// Record that a receiver wrote the close frame.
    pub fn mark_close_delivered(&self) {
        self.lock().close_delivered = true;
    }

    /// Whether the client has its close: the session ended, or a receiver wrote the close
    /// frame.
    pub fn close_delivered(&self) -> bool {
        let st = self.lock();
        st.phase == Phase::Closed || (st.phase == Phase::Closing && st.close_delivered)
    }

    /// End the session now: it is CLOSED and the application gets its close event (once).
    /// `info` is used unless a close was already under way.
    pub fn finish(&self, info: CloseInfo) {
        let mut st = self.lock();
        let info = st.close.clone().unwrap_or(info);
        st.phase = Phase::Closed;
        st.close = Some(info.clone());
        st.queue.clear();
        st.queued_bytes = 0;
        st.receiver = None;
        st.expires_at = None;
        let never_opened = st.pending_handle.take();
        let admission = st.admission.take();
        let open = st.open.take();
        let waker = st.receiver_waker.take();
        let waiter = st.room_waiter.take().map(|(w, _)| w);
        drop(st);
        wake(waiter);
        drop(never_opened);
        drop(admission);
        drop(open);
        if self.inbound.finish(info.clone()) {
            self.stats.session_closed(info.cause);
            tracing::debug!(session = self.info.log_id, transport = %self.info.transport, remote = %self.info.remote_addr, code = info.code, reason = %info.reason, cause = ?info.cause, "session closed");
        }
        wake(waker);
    }

    /// Whether the session has expired (no receiver past its disconnect deadline).
    pub fn is_expired(&self, now: Instant) -> bool {
        let st = self.lock();
        st.phase == Phase::Closed || st.expires_at.is_some_and(|t| t <= now)
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.lock().phase == Phase::Closed
    }

    fn queue_message(&self, msg: OutMessage) -> Result<(), SendError> {
        let mut st = self.lock();
        if matches!(st.phase, Phase::Closing | Phase::Closed) {
            return Err(SendError::Closed);
        }
        let len = msg.len();
        if st.queued_bytes + len > self.limits.max_queued_bytes {
            match self.limits.overflow {
                OverflowStrategy::Terminate => {
                    drop(st);
                    self.stats.slow_consumer_terminated();
                    tracing::warn!(
                        session = self.info.log_id,
                        "outbound queue limit exceeded; closing session"
                    );
                    self.begin_close(CloseInfo {
                        code: 4500,
                        reason: "Send limit exceeded".into(),
                        cause: CloseCause::SendLimit,
                    });
                    return Err(SendError::LimitExceeded);
                }
                OverflowStrategy::Drop => {
                    let needed = st.queued_bytes + len - self.limits.max_queued_bytes;
                    let before = st.queue.len();
                    match discard_oldest(&mut st.queue, needed, self.app.discardable()) {
                        Some(freed) => st.queued_bytes -= freed,
                        None => {
                            self.stats.slow_consumer_dropped(1);
                            return Err(SendError::LimitExceeded);
                        }
                    }
                    self.stats.slow_consumer_dropped(before - st.queue.len());
                }
            }
        }
        // Only a push onto an empty queue needs to wake the receiver: a non-empty queue
        // already has a wake-up pending, and the receiver drains everything at once. This
        // keeps fan-out to a busy session at one lock and no wake-up per message.
        let waker = match st.queue.is_empty() {
            true => st.receiver_waker.take(),
            false => None,
        };
        st.queued_bytes += len;
        st.queue.push_back(msg);
        drop(st);
        wake(waker);
        Ok(())
    }
}

/// Wake a receiver outside the session's lock.
fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// The application's sink: a weak reference, so an application that keeps its handle after
/// the session ended does not keep the session alive.
struct WeakSink(std::sync::Weak<Session>);

impl SessionSink for WeakSink {
    fn send(&self, msg: OutMessage) -> Result<(), SendError> {
        match self.0.upgrade() {
            Some(s) => s.queue_message(msg),
            None => Err(SendError::Closed),
        }
    }

    fn close(&self, code: u16, reason: &str) {
        if let Some(s) = self.0.upgrade() {
            s.begin_close(CloseInfo {
                code,
                reason: reason.to_string(),
                cause: CloseCause::Application,
            });
        }
    }

    fn is_closed(&self) -> bool {
        self.0.upgrade().is_none_or(|s| s.closing().is_some())
    }

    fn queued_bytes(&self) -> usize {
        self.0.upgrade().map_or(0, |s| s.lock().queued_bytes)
    }

    fn suppress_heartbeats(&self, suppress: bool) {
        if let Some(s) = self.0.upgrade() {
            s.lock().heartbeats_suppressed = suppress;
        }
    }

    fn poll_room(&self, cx: &mut Context<'_>, len: Option<usize>) -> Poll<Result<(), CloseInfo>> {
        match self.0.upgrade() {
            Some(s) => s.poll_room(cx, len),
            None => Poll::Ready(Err(CloseInfo {
                code: 1000,
                reason: "Normal closure".into(),
                cause: CloseCause::Client,
            })),
        }
    }

    fn shut_down(&self, farewell: Option<OutMessage>) {
        if let Some(s) = self.0.upgrade() {
            s.shut_down(farewell);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Discardable, SessionEvent, TransportKind};
    use std::sync::Mutex as StdMutex;

    struct Collect(StdMutex<Vec<SessionHandle>>, Discardable);
    impl App for Collect {
        fn on_session(&self, session: SessionHandle) {
            self.0.lock().unwrap().push(session);
        }

        fn discardable(&self) -> Discardable {
            self.1
        }
    }

    fn session(max_queued: usize, overflow: OverflowStrategy) -> (Arc<Session>, Arc<Collect>) {
        session_of(max_queued, overflow, Discardable::Any)
    }

    fn session_of(
        max_queued: usize,
        overflow: OverflowStrategy,
        discardable: Discardable,
    ) -> (Arc<Session>, Arc<Collect>) {
        let app = Arc::new(Collect(StdMutex::new(Vec::new()), discardable));
        let info = SessionInfo {
            log_id: 1,
            transport: TransportKind::XhrPolling,
            remote_addr: "127.0.0.1:1".parse().unwrap(),
            headers: vec![],
            url: "/".into(),
            principal: None,
            subprotocol: None,
        };
        let limits = SessionLimits {
            disconnect_delay: Duration::from_secs(5),
            max_queued_bytes: max_queued,
            overflow,
            max_messages_per_second: None,
            idle_timeout: None,
        };
        let stats = Arc::new(ServiceStats::default());
        (
            Session::new(info, limits, app.clone(), None, None, stats),
            app,
        )
    }

    #[tokio::test]
    async fn messages_queued_while_detached_arrive_in_order_in_one_frame() {
        let (s, app) = session(1024, OverflowStrategy::Terminate);
        let Attach::Opened(id) = s.attach_receiver() else {
            panic!("not opened")
        };
        s.start_app();
        s.detach_receiver(id);
        let handle = app.0.lock().unwrap().pop().unwrap();
        handle.send_text("1").unwrap();
        handle.send_text("2").unwrap();
        assert!(matches!(s.attach_receiver(), Attach::Attached(_)));
        assert_eq!(&s.take_batch().unwrap()[..], b"a[\"1\",\"2\"]");
        assert!(s.take_batch().is_none());
    }

    #[tokio::test]
    async fn a_second_receiver_is_refused_while_one_is_attached() {
        let (s, _app) = session(1024, OverflowStrategy::Terminate);
        assert!(matches!(s.attach_receiver(), Attach::Opened(_)));
        assert!(matches!(s.attach_receiver(), Attach::Busy));
    }

    #[tokio::test]
    async fn overflow_terminates_with_4500() {
        let (s, app) = session(4, OverflowStrategy::Terminate);
        let Attach::Opened(_) = s.attach_receiver() else {
            panic!()
        };
        s.start_app();
        let handle = app.0.lock().unwrap().pop().unwrap();
        handle.send_text("abc").unwrap();
        assert_eq!(handle.send_text("de"), Err(SendError::LimitExceeded));
        assert_eq!(s.closing().unwrap().code, 4500);
        assert_eq!(handle.send_text("x"), Err(SendError::Closed));
    }

    /// Counts the messages a session discarded.
    #[derive(Default)]
    struct Discards(std::sync::atomic::AtomicUsize);

    impl crate::session::DropObserver for Discards {
        fn message_dropped(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn droppable(text: &str, discards: &Arc<Discards>) -> OutMessage {
        OutMessage::text(text).droppable(discards.clone())
    }

    #[tokio::test]
    async fn overflow_drop_discards_the_oldest() {
        let (s, app) = session(4, OverflowStrategy::Drop);
        let Attach::Opened(_) = s.attach_receiver() else {
            panic!()
        };
        s.start_app();
        let handle = app.0.lock().unwrap().pop().unwrap();
        let discards = Arc::new(Discards::default());
        handle.send(droppable("ab", &discards)).unwrap();
        handle.send(droppable("cd", &discards)).unwrap();
        handle.send(droppable("ef", &discards)).unwrap();
        assert_eq!(&s.take_batch().unwrap()[..], b"a[\"cd\",\"ef\"]");
        assert_eq!(discards.0.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn overflow_drop_discards_any_oldest_message_of_an_app_that_marks_none() {
        let (s, app) = session(4, OverflowStrategy::Drop);
        let Attach::Opened(_) = s.attach_receiver() else {
            panic!()
        };
        s.start_app();
        let handle = app.0.lock().unwrap().pop().unwrap();
        handle.send_text("ab").unwrap();
        handle.send_text("cd").unwrap();
        handle.send_text("ef").unwrap();
        assert_eq!(&s.take_batch().unwrap()[..], b"a[\"cd\",\"ef\"]");
    }

    #[tokio::test]
    async fn overflow_drop_keeps_messages_that_are_not_droppable() {
        let (s, app) = session_of(4, OverflowStrategy::Drop, Discardable::Marked);
        let Attach::Opened(_) = s.attach_receiver() else {
            panic!()
        };
        s.start_app();
        let handle = app.0.lock().unwrap().pop().unwrap();
        let discards = Arc::new(Discards::default());
        handle.send_text("ab").unwrap();
        handle.send(droppable("cd", &discards)).unwrap();
        // Room is made by discarding "cd", never "ab", whatever kind the new message is.
        handle.send(droppable("ef", &discards)).unwrap();
        handle.send_text("gh").unwrap();
        // Nothing droppable is left: the new message is refused and the session stays open.
        assert_eq!(
            handle.send(droppable("ij", &discards)),
            Err(SendError::LimitExceeded)
        );
        assert!(s.closing().is_none());
        assert_eq!(&s.take_batch().unwrap()[..], b"a[\"ab\",\"gh\"]");
        assert_eq!(discards.0.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn room_waits_for_a_drain_and_ends_with_the_close() {
        use std::sync::atomic::AtomicBool;
        use std::task::Wake;
        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let (s, app) = session(8, OverflowStrategy::Terminate);
        let Attach::Opened(_) = s.attach_receiver() else {
            panic!()
        };
        s.start_app();
        let handle = app.0.lock().unwrap().pop().unwrap();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        handle.send_text("abcdef").unwrap();
        assert_eq!(s.poll_room(&mut cx, Some(2)), Poll::Ready(Ok(())));
        assert_eq!(s.poll_room(&mut cx, Some(3)), Poll::Pending);
        // Waiting only for closing is not woken by a drain.
        assert_eq!(s.poll_room(&mut cx, None), Poll::Pending);
        assert!(s.take_batch().is_some());
        assert!(!flag.0.load(Ordering::SeqCst));
        handle.send_text("abcdef").unwrap();
        assert_eq!(s.poll_room(&mut cx, Some(3)), Poll::Pending);
        assert!(s.take_batch().is_some());
        assert!(
            flag.0.swap(false, Ordering::SeqCst),
            "a drain wakes the waiter"
        );
        // A message larger than the whole queue goes through once the queue is empty.
        assert_eq!(s.poll_room(&mut cx, Some(100)), Poll::Ready(Ok(())));
        handle.send_text("abcdef").unwrap();
        assert_eq!(s.poll_room(&mut cx, None), Poll::Pending);
        handle.close(3000, "Go away!");
        assert!(flag.0.load(Ordering::SeqCst), "closing wakes the waiter");
        match s.poll_room(&mut cx, Some(1)) {
            Poll::Ready(Err(info)) => assert_eq!(info.code, 3000),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_application_sees_exactly_one_close() {
        let (s, app) = session(1024, OverflowStrategy::Terminate);
        let Attach::Opened(_) = s.attach_receiver() else {
            panic!()
        };
        s.start_app();
        let mut handle = app.0.lock().unwrap().pop().unwrap();
        handle.close(3000, "Go away!");
        s.finish(CloseInfo {
            code: 1002,
            reason: "x".into(),
            cause: CloseCause::Interrupted,
        });
        s.finish(CloseInfo {
            code: 1002,
            reason: "x".into(),
            cause: CloseCause::Interrupted,
        });
        let ev = handle.recv().await.unwrap();
        assert!(matches!(
            ev,
            SessionEvent::Closed(CloseInfo { code: 3000, .. })
        ));
        assert!(handle.recv().await.is_none());
    }
}
