//! Session id → session, for the HTTP transports of one service.
//!
//! WebSocket sessions are never registered (sockjs.md §13.7). One sweeper task per service
//! expires sessions whose disconnect deadline passed, and closes those idle past
//! `idle_timeout` or whose credential expired, so no timer task exists per session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::session::Session;
use crate::session::{CloseCause, CloseInfo};

/// The sessions of one service.
#[derive(Default)]
pub struct Registry {
    /// Live sessions by SockJS session id (shared strings, so a sweep's snapshot copies no
    /// id).
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
}

impl Registry {
    /// An empty registry whose sweeper checks deadlines every `tick`.
    pub fn new(tick: Duration) -> Arc<Self> {
        let registry = Arc::new(Registry::default());
        tokio::spawn(sweep(Arc::downgrade(&registry), tick));
        registry
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live session with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.lock().get(id).filter(|s| !s.is_closed()).cloned()
    }

    /// The live session with this id, or a new one made by `create` (which may refuse).
    pub fn get_or_create<E>(
        &self,
        id: &str,
        create: impl FnOnce() -> Result<Arc<Session>, E>,
    ) -> Result<Arc<Session>, E> {
        let mut map = self.lock();
        if let Some(s) = map.get(id).filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let session = create()?;
        map.insert(Arc::from(id), session.clone());
        Ok(session)
    }

    /// Remove a session if it is still the one registered under `id`.
    pub fn remove(&self, id: &str, session: &Arc<Session>) {
        let mut map = self.lock();
        if map.get(id).is_some_and(|s| Arc::ptr_eq(s, session)) {
            map.remove(id);
        }
    }

    /// How many sessions are registered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Start closing with 1001 "Going away" every session that is not closing yet (server
    /// shutdown: the sessions its drain has not told, such as ones that never opened).
    pub fn shut_down_all(&self) {
        let all: Vec<Arc<Session>> = self.lock().values().cloned().collect();
        for s in all {
            s.shut_down(None);
        }
    }

    /// How many sessions have not had their close delivered to their client yet.
    pub fn undelivered(&self) -> usize {
        self.lock()
            .values()
            .filter(|s| !s.close_delivered())
            .count()
    }

    /// Close every session (server shutdown).
    pub fn close_all(&self, info: CloseInfo) {
        let all: Vec<Arc<Session>> = self.lock().drain().map(|(_, s)| s).collect();
        for s in all {
            s.finish(info.clone());
        }
    }

    /// One sweep. The registry's lock is held only to take a snapshot (one reference count
    /// per session); each session is then checked under its own lock alone, so a session
    /// that is busy (a receiver quoting a large batch) or many sessions never hold up the
    /// requests that look sessions up meanwhile.
    fn expire(&self, now: Instant) {
        let wall = std::time::SystemTime::now();
        let sessions: Vec<(Arc<str>, Arc<Session>)> = self
            .lock()
            .iter()
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect();
        for (id, s) in sessions {
            if s.credential_expired(wall) && s.closing().is_none() {
                s.close_for_expired_credential();
            }
            if s.idle_deadline().is_some_and(|at| at <= now) {
                s.close_if_idle(now);
            }
            if s.is_expired(now) {
                self.remove(&id, &s);
                s.finish(CloseInfo {
                    code: 1000,
                    reason: "Session timed out".into(),
                    cause: CloseCause::Timeout,
                });
            }
        }
    }
}

async fn sweep(registry: Weak<Registry>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        registry.expire(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OverflowStrategy;
    use crate::session::{App, SessionHandle, SessionInfo, TransportKind};
    use crate::sockjs::session::SessionLimits;
    use std::sync::mpsc;

    struct Idle;
    impl App for Idle {
        fn on_session(&self, _session: SessionHandle) {}
    }

    fn session() -> Arc<Session> {
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
            disconnect_delay: Duration::from_secs(60),
            max_queued_bytes: 1024,
            overflow: OverflowStrategy::Terminate,
            max_messages_per_second: None,
            idle_timeout: None,
        };
        Session::new(info, limits, Arc::new(Idle), None, None, Arc::default())
    }

    /// Poll `done` every millisecond for up to five seconds.
    fn within_deadline(mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn the_sweeper_checks_each_session_outside_the_registry_lock() {
        let registry = Arc::new(Registry::default());
        let (busy, other) = (session(), session());
        for (id, s) in [("busy", &busy), ("other", &other)] {
            registry
                .get_or_create(id, || Ok::<_, ()>(s.clone()))
                .unwrap();
        }
        // One session's lock is held (a receiver quoting a large batch holds it so).
        let (locked_tx, locked_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let holder = std::thread::spawn({
            let busy = busy.clone();
            move || {
                busy.while_locked(|| {
                    locked_tx.send(()).unwrap();
                    let _ = release_rx.recv();
                })
            }
        });
        locked_rx.recv().unwrap();
        let before = Arc::strong_count(&busy);
        let sweeper = std::thread::spawn({
            let registry = registry.clone();
            move || registry.expire(Instant::now())
        });
        // The sweep has taken its snapshot and waits for the busy session...
        let snapshot = within_deadline(|| Arc::strong_count(&busy) > before);
        // ...while the registry keeps answering every other request.
        let answers = snapshot && within_deadline(|| registry.sessions.try_lock().is_ok());
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        sweeper.join().unwrap();
        assert!(snapshot, "the sweep never worked from a snapshot");
        assert!(
            answers,
            "the registry was locked while one session was busy"
        );
        assert_eq!(registry.len(), 2, "nothing had expired");
    }

    #[test]
    fn the_sweeper_removes_sessions_past_their_deadline() {
        let registry = Registry::default();
        let s = session();
        registry
            .get_or_create("s", || Ok::<_, ()>(s.clone()))
            .unwrap();
        registry.expire(Instant::now());
        assert_eq!(registry.len(), 1);
        registry.expire(Instant::now() + Duration::from_secs(61));
        assert_eq!(registry.len(), 0);
        assert!(s.is_closed());
    }
}
