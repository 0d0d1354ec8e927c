//! The graceful drain: what the gateway does between SIGTERM (or SIGINT) and its exit.
//!
//! Every session of every carrier is known here: the gateway hands each application a
//! [`Tracking`] wrapper, which records the session's sender as the application receives it.
//! When the drain starts, the listeners are closed and the services refuse new sessions;
//! then the sessions are told goodbye one by one, in random order, at even intervals over
//! the first part of `[server] drain_timeout` (Mercure spreads its closes the same way, so
//! clients do not reconnect to the next node in one storm). A goodbye is the application's
//! farewell (STOMP: ERROR `Server shutting down`) followed by the carrier's 1001 "Going
//! away" close: `c[1001,"Going away"]` on SockJS, a 1001 close on WebSocket, a FIN after the
//! ERROR on TCP, every carrier flushing what it queued first.
//!
//! Connections that carried HTTP sessions stay open (they accept no new session) until each
//! session's close has reached a receiver, so a polling client can still fetch its goodbye;
//! then every connection is asked to close, and the drain ends when the connection count of
//! the [`ConnectionLimiter`] (WebSockets included, which hold their connection's permit
//! until they close) reaches zero, or at the deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::limits::ConnectionLimiter;
use crate::session::{App, CloseInfo, Discardable, SessionHandle, SessionInfo, SessionSender};
use crate::sockjs::registry::Registry;

/// The most of the drain window the goodbyes are spread over is the window less this, so
/// the last ones still have time to be delivered (a poll to come back, a close handshake).
const DELIVERY_RESERVE: Duration = Duration::from_secs(2);
/// How often the drain looks whether every HTTP session's close has been delivered.
const DELIVERY_CHECK: Duration = Duration::from_millis(50);
/// Time granted past the deadline for the last writes to go out once connections are
/// asked to close.
const FLUSH_GRACE: Duration = Duration::from_millis(500);

/// One live session, as the drain needs it.
struct Entry {
    /// Its carrier's sender.
    sender: SessionSender,
    /// What the carrier knew about the client, for the application's farewell and logs.
    info: Arc<SessionInfo>,
    /// The application serving it, which words the farewell.
    app: Arc<dyn App>,
}

impl Entry {
    /// Tell the session goodbye: the application's farewell, then the 1001 close.
    fn goodbye(&self) {
        if self.sender.is_closed() {
            return;
        }
        tracing::debug!(
            session = self.info.log_id,
            transport = %self.info.transport,
            remote = %self.info.remote_addr,
            "telling the session goodbye"
        );
        self.sender.shut_down(self.app.farewell(&self.info));
    }
}

/// The live sessions of every carrier and application of one gateway.
#[derive(Default)]
pub struct Sessions {
    /// Tracked sessions; closed ones are pruned as the list grows.
    live: Mutex<Live>,
    /// Set when the drain starts: a session that opens afterwards is told goodbye at once.
    draining: AtomicBool,
}

#[derive(Default)]
struct Live {
    /// The sessions, closed ones among them until the next prune.
    entries: Vec<Entry>,
    /// The length at which closed entries are pruned next; doubling keeps pruning O(1)
    /// per session over time.
    prune_at: usize,
}

impl Sessions {
    /// An empty set.
    pub fn new() -> Arc<Sessions> {
        Arc::new(Sessions::default())
    }

    fn lock(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Track a session as its application receives it.
    fn track(&self, entry: Entry) {
        let mut live = self.lock();
        if live.entries.len() >= live.prune_at {
            live.entries.retain(|e| !e.sender.is_closed());
            live.prune_at = (live.entries.len() * 2).max(64);
        }
        live.entries.push(entry);
    }

    /// Start draining: every open session, taken out of the set.
    fn start_draining(&self) -> Vec<Entry> {
        self.draining.store(true, Ordering::SeqCst);
        let mut entries = std::mem::take(&mut self.lock().entries);
        entries.retain(|e| !e.sender.is_closed());
        entries
    }
}

/// An application as the gateway mounts it: the same application, with each session it
/// receives recorded in [`Sessions`] for the drain.
pub struct Tracking {
    /// The application.
    app: Arc<dyn App>,
    /// Where its sessions are recorded.
    sessions: Arc<Sessions>,
}

impl Tracking {
    /// `app`, with its sessions recorded in `sessions`.
    pub fn new(app: Arc<dyn App>, sessions: Arc<Sessions>) -> Arc<Tracking> {
        Arc::new(Tracking { app, sessions })
    }
}

impl App for Tracking {
    fn on_session(&self, session: SessionHandle) {
        let entry = Entry {
            sender: session.sender().clone(),
            info: session.info().clone(),
            app: self.app.clone(),
        };
        self.app.on_session(session);
        if self.sessions.draining.load(Ordering::SeqCst) {
            // Opened while the drain runs (its handshake began before): goodbye at once.
            entry.goodbye();
        } else {
            self.sessions.track(entry);
        }
    }

    fn authenticates_in_band(&self) -> bool {
        self.app.authenticates_in_band()
    }

    fn discardable(&self) -> Discardable {
        self.app.discardable()
    }

    fn subprotocols(&self) -> &'static [&'static str] {
        self.app.subprotocols()
    }

    fn select_subprotocol(&self, offered: &[String]) -> Option<String> {
        self.app.select_subprotocol(offered)
    }

    fn captured_headers(&self) -> &[String] {
        self.app.captured_headers()
    }

    fn farewell(&self, info: &SessionInfo) -> Option<crate::session::OutMessage> {
        self.app.farewell(info)
    }
}

/// The part of a drain window the goodbyes are spread over: all but the last fifth, and
/// at most [`DELIVERY_RESERVE`] is held back.
fn spread_of(window: Duration) -> Duration {
    window
        .saturating_sub(DELIVERY_RESERVE)
        .max(window.mul_f64(0.8))
}

/// What a drain has to work on.
pub struct Drain<'a> {
    /// Every tracked session.
    pub sessions: &'a Sessions,
    /// The HTTP-session registries of the services.
    pub registries: Vec<Arc<Registry>>,
    /// Open connections of every listener.
    pub connections: &'a ConnectionLimiter,
    /// Turned true to ask every connection to close once its sessions are done.
    pub close_connections: &'a watch::Sender<bool>,
    /// `[server] drain_timeout`.
    pub window: Duration,
}

impl Drain<'_> {
    /// Tell every session goodbye over the window and wait until every connection has
    /// closed, or the window (plus [`FLUSH_GRACE`]) is over. The listeners must be closed
    /// and the services refusing new sessions already.
    pub async fn run(self) {
        let start = Instant::now();
        let deadline = start + self.window;
        let mut entries = self.sessions.start_draining();
        {
            use rand::seq::SliceRandom;
            entries.shuffle(&mut rand::rng());
        }
        let spread = spread_of(self.window);
        tracing::info!(
            sessions = entries.len(),
            connections = self.connections.open(),
            "draining: telling every session goodbye over {:.1} s (drain_timeout {:.1} s)",
            spread.as_secs_f64(),
            self.window.as_secs_f64()
        );
        let count = entries.len();
        for (i, entry) in entries.iter().enumerate() {
            let at = start + spread.mul_f64(i as f64 / count as f64);
            tokio::time::sleep_until(at).await;
            entry.goodbye();
        }
        // Sessions that never reached their application (a receiver still writing `o`) are
        // not tracked; they close too.
        for registry in &self.registries {
            registry.shut_down_all();
        }
        let undelivered = || {
            self.registries
                .iter()
                .map(|r| r.undelivered())
                .sum::<usize>()
        };
        while undelivered() > 0 && Instant::now() < deadline {
            tokio::time::sleep(DELIVERY_CHECK.min(deadline - Instant::now())).await;
        }
        let missed = undelivered();
        for registry in &self.registries {
            registry.close_all(CloseInfo::going_away());
        }
        let _ = self.close_connections.send(true);
        let flush_until = deadline.max(Instant::now() + FLUSH_GRACE);
        let closed = tokio::time::timeout_at(flush_until, self.connections.all_closed())
            .await
            .is_ok();
        let took = start.elapsed().as_secs_f64();
        if closed && missed == 0 {
            tracing::info!(
                sessions = count,
                "drained in {took:.1} s: every session said goodbye"
            );
        } else {
            tracing::warn!(
                sessions = count,
                polls_not_back = missed,
                connections_open = self.connections.open(),
                "drain deadline reached after {took:.1} s; the rest are cut off"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goodbyes_leave_room_for_delivery() {
        assert_eq!(spread_of(Duration::from_secs(10)), Duration::from_secs(8));
        assert_eq!(spread_of(Duration::from_secs(30)), Duration::from_secs(28));
        assert_eq!(
            spread_of(Duration::from_secs(1)),
            Duration::from_millis(800)
        );
    }
}
