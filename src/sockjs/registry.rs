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
    /// Live sessions by SockJS session id.
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

impl Registry {
    /// An empty registry whose sweeper checks deadlines every `tick`.
    pub fn new(tick: Duration) -> Arc<Self> {
        let registry = Arc::new(Registry::default());
        tokio::spawn(sweep(Arc::downgrade(&registry), tick));
        registry
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
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
        map.insert(id.to_string(), session.clone());
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

    fn expire(&self, now: Instant) {
        let wall = std::time::SystemTime::now();
        let expired_credentials: Vec<Arc<Session>> = self
            .lock()
            .values()
            .filter(|s| s.credential_expired(wall) && s.closing().is_none())
            .cloned()
            .collect();
        for s in expired_credentials {
            s.close_for_expired_credential();
        }
        let idle: Vec<Arc<Session>> = self
            .lock()
            .values()
            .filter(|s| s.idle_deadline().is_some_and(|at| at <= now))
            .cloned()
            .collect();
        for s in idle {
            s.close_if_idle(now);
        }
        let expired: Vec<Arc<Session>> = {
            let mut map = self.lock();
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, s)| s.is_expired(now))
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        for s in expired {
            s.finish(CloseInfo {
                code: 1000,
                reason: "Session timed out".into(),
                cause: CloseCause::Timeout,
            });
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
