//! Presence: which STOMP sessions are connected, whose they are, what they subscribe to, and a
//! handle to close each one.
//!
//! The broker routes messages and keeps only what routing needs; operators and backends ask
//! other questions ("which sessions has alice, from where, since when?", "how many subscribe to
//! /topic/news?", "close bob's sessions"). [`LocalPresence`] answers them for this process. It
//! is fed by each connection at four points (CONNECTED, SUBSCRIBE, UNSUBSCRIBE, session end)
//! and never touched on the message path.
//!
//! The questions themselves are the [`PresenceDirectory`] trait, the seam a cluster engine
//! implements later: it answers for every node by merging this node's [`LocalPresence`] with
//! what other nodes announced, and forwards disconnects to the node holding the session.
//! Callers (the admin API) hold an `Arc<dyn PresenceDirectory>` and do not change.
//!
//! Disconnecting is asynchronous by design: [`SessionControl`] wakes the session's own task,
//! which sends ERROR and closes through the same path as every other STOMP close (so the
//! cause is reported once, subscriptions end, unacked messages are released).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::Notify;

use super::destination::{Pattern, is_pattern};
use crate::session::{SessionSender, TransportKind};

/// What a connection registers when it sends CONNECTED.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// The principal, if any.
    pub user: Option<String>,
    /// The carrier.
    pub transport: TransportKind,
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// When CONNECTED was sent.
    pub since: SystemTime,
    /// The carrier's sender, to read how much is queued for the client.
    pub sender: SessionSender,
}

/// One subscription as presence reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionPresence {
    /// The subscription id the client chose.
    pub id: String,
    /// The destination as the client named it (`/user/queue/x`, `/topic/**`).
    pub destination: String,
}

/// One live session as presence reports it.
#[derive(Debug, Clone)]
pub struct SessionPresence {
    /// The STOMP session id (CONNECTED's `session` header).
    pub id: String,
    /// The principal, if any.
    pub user: Option<String>,
    /// The carrier.
    pub transport: TransportKind,
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// When the session connected.
    pub since: SystemTime,
    /// Its subscriptions, in subscription order.
    pub subscriptions: Vec<SubscriptionPresence>,
}

/// Which sessions a disconnect names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectTarget {
    /// Every session of a user.
    User(String),
    /// One session, by STOMP session id.
    Session(String),
}

/// How a session is to be closed: STOMP ERROR with `reason` as its message, then the carrier
/// closes with `code` (SockJS `c[code,"reason"]`, a WebSocket close frame, a TCP FIN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    /// The close code.
    pub code: u16,
    /// The reason, in the ERROR and the close.
    pub reason: String,
}

/// The questions presence answers, for this node now and for a cluster later.
pub trait PresenceDirectory: Send + Sync + 'static {
    /// The live sessions of `user`, oldest first.
    fn user_sessions(&self, user: &str) -> Vec<SessionPresence>;
    /// Subscriptions that receive what is published to `destination`: literal subscriptions
    /// to it plus pattern subscriptions that match it.
    fn subscriber_count(&self, destination: &str) -> usize;
    /// Ask the sessions `target` names to close as `kick` says; returns how many were asked.
    fn disconnect(&self, target: &DisconnectTarget, kick: &Kick) -> usize;
}

/// A session's control handle: how something outside the session's task asks it to close.
#[derive(Debug, Default)]
pub struct SessionControl {
    /// The pending request, first one wins.
    kick: Mutex<Option<Kick>>,
    /// Wakes the session's task.
    notify: Notify,
}

impl SessionControl {
    /// Ask the session to close; a second request while one is pending is ignored.
    pub fn request(&self, kick: Kick) {
        let mut pending = self.kick.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_none() {
            *pending = Some(kick);
            drop(pending);
            self.notify.notify_one();
        }
    }

    /// Wait for a close request (the session's task selects on this).
    pub async fn requested(&self) -> Kick {
        loop {
            if let Some(kick) = self.kick.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return kick;
            }
            self.notify.notified().await;
        }
    }
}

/// A registered session.
#[derive(Debug)]
struct Entry {
    /// What it registered.
    record: SessionRecord,
    /// Its control handle.
    control: Arc<SessionControl>,
    /// Its subscriptions: (id, destination as named), in order.
    subscriptions: Vec<(String, String)>,
}

/// Everything behind the lock.
#[derive(Debug, Default)]
struct State {
    /// Sessions by STOMP session id.
    sessions: HashMap<String, Entry>,
    /// User → session ids.
    users: HashMap<String, HashSet<String>>,
    /// Literal destination → subscriptions to it.
    literal: HashMap<String, usize>,
    /// Pattern → (compiled, subscriptions to it).
    patterns: HashMap<String, (Pattern, usize)>,
}

/// This node's presence registry.
#[derive(Debug)]
pub struct LocalPresence {
    /// All state, behind one short-held lock (never held across an `.await`).
    state: Mutex<State>,
    /// The pattern separator (`[stomp] path_separator`).
    separator: char,
}

impl LocalPresence {
    /// An empty registry whose patterns split on `separator`.
    pub fn new(separator: char) -> LocalPresence {
        LocalPresence {
            state: Mutex::new(State::default()),
            separator,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a connected session; returns its control handle.
    pub fn register(&self, session: &str, record: SessionRecord) -> Arc<SessionControl> {
        let control = Arc::new(SessionControl::default());
        let mut state = self.lock();
        if let Some(user) = &record.user {
            state
                .users
                .entry(user.clone())
                .or_default()
                .insert(session.to_owned());
        }
        state.sessions.insert(
            session.to_owned(),
            Entry {
                record,
                control: control.clone(),
                subscriptions: Vec::new(),
            },
        );
        control
    }

    /// Record an active subscription `id` of `session` to `destination` (as named).
    pub fn subscribed(&self, session: &str, id: &str, destination: &str) {
        let mut state = self.lock();
        let Some(entry) = state.sessions.get_mut(session) else {
            return;
        };
        entry
            .subscriptions
            .push((id.to_owned(), destination.to_owned()));
        if is_pattern(destination) {
            let separator = self.separator;
            state
                .patterns
                .entry(destination.to_owned())
                .or_insert_with(|| (Pattern::compile_admitted(destination, separator), 0))
                .1 += 1;
        } else {
            *state.literal.entry(destination.to_owned()).or_default() += 1;
        }
    }

    /// Forget subscription `id` of `session`.
    pub fn unsubscribed(&self, session: &str, id: &str) {
        let mut state = self.lock();
        let Some(entry) = state.sessions.get_mut(session) else {
            return;
        };
        let Some(position) = entry.subscriptions.iter().position(|(i, _)| i == id) else {
            return;
        };
        let (_, destination) = entry.subscriptions.remove(position);
        forget_destination(&mut state, &destination);
    }

    /// Forget a session and its subscriptions (the session ended).
    pub fn unregister(&self, session: &str) {
        let mut state = self.lock();
        let Some(entry) = state.sessions.remove(session) else {
            return;
        };
        if let Some(user) = &entry.record.user {
            let emptied = state.users.get_mut(user).is_some_and(|set| {
                set.remove(session);
                set.is_empty()
            });
            if emptied {
                state.users.remove(user);
            }
        }
        for (_, destination) in &entry.subscriptions {
            forget_destination(&mut state, destination);
        }
    }

    /// Live sessions.
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Distinct destinations and patterns with at least one subscription.
    pub fn destination_count(&self) -> usize {
        let state = self.lock();
        state.literal.len() + state.patterns.len()
    }

    /// The `n` destinations (literal or pattern) with the most subscriptions, most first.
    pub fn top_destinations(&self, n: usize) -> Vec<(String, usize)> {
        let mut all: Vec<(String, usize)> = {
            let state = self.lock();
            state
                .literal
                .iter()
                .map(|(d, c)| (d.clone(), *c))
                .chain(state.patterns.iter().map(|(d, (_, c))| (d.clone(), *c)))
                .collect()
        };
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// Bytes queued for each live session's client, unordered.
    pub fn queued_bytes(&self) -> Vec<usize> {
        let senders: Vec<SessionSender> = self
            .lock()
            .sessions
            .values()
            .map(|e| e.record.sender.clone())
            .collect();
        senders.iter().map(SessionSender::queued_bytes).collect()
    }

    fn snapshot(id: &str, entry: &Entry) -> SessionPresence {
        SessionPresence {
            id: id.to_owned(),
            user: entry.record.user.clone(),
            transport: entry.record.transport,
            remote_addr: entry.record.remote_addr,
            since: entry.record.since,
            subscriptions: entry
                .subscriptions
                .iter()
                .map(|(id, destination)| SubscriptionPresence {
                    id: id.clone(),
                    destination: destination.clone(),
                })
                .collect(),
        }
    }
}

/// Drop one subscription's count on `destination`.
fn forget_destination(state: &mut State, destination: &str) {
    if let Some(count) = state.literal.get_mut(destination) {
        *count -= 1;
        if *count == 0 {
            state.literal.remove(destination);
        }
    } else if let Some((_, count)) = state.patterns.get_mut(destination) {
        *count -= 1;
        if *count == 0 {
            state.patterns.remove(destination);
        }
    }
}

impl PresenceDirectory for LocalPresence {
    fn user_sessions(&self, user: &str) -> Vec<SessionPresence> {
        let state = self.lock();
        let Some(ids) = state.users.get(user) else {
            return Vec::new();
        };
        let mut sessions: Vec<SessionPresence> = ids
            .iter()
            .filter_map(|id| state.sessions.get(id).map(|e| Self::snapshot(id, e)))
            .collect();
        sessions.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.id.cmp(&b.id)));
        sessions
    }

    fn subscriber_count(&self, destination: &str) -> usize {
        let state = self.lock();
        let literal = state.literal.get(destination).copied().unwrap_or(0);
        let patterns: usize = state
            .patterns
            .values()
            .filter(|(pattern, _)| pattern.matches(destination))
            .map(|(_, count)| count)
            .sum();
        literal + patterns
    }

    fn disconnect(&self, target: &DisconnectTarget, kick: &Kick) -> usize {
        let controls: Vec<Arc<SessionControl>> = {
            let state = self.lock();
            match target {
                DisconnectTarget::Session(id) => state
                    .sessions
                    .get(id)
                    .map(|e| e.control.clone())
                    .into_iter()
                    .collect(),
                DisconnectTarget::User(user) => state
                    .users
                    .get(user)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| state.sessions.get(id).map(|e| e.control.clone()))
                    .collect(),
            }
        };
        for control in &controls {
            control.request(kick.clone());
        }
        controls.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stomp::testing::recording_sender;

    fn record(user: Option<&str>) -> SessionRecord {
        let (_sink, sender) = recording_sender();
        SessionRecord {
            user: user.map(str::to_owned),
            transport: TransportKind::Tcp,
            remote_addr: "127.0.0.1:9".parse().unwrap(),
            since: SystemTime::now(),
            sender,
        }
    }

    #[test]
    fn counts_literal_and_matching_pattern_subscriptions() {
        let p = LocalPresence::new('/');
        p.register("a", record(Some("alice")));
        p.register("b", record(None));
        p.subscribed("a", "1", "/topic/news");
        p.subscribed("b", "1", "/topic/news");
        p.subscribed("b", "2", "/topic/**");
        p.subscribed("b", "3", "/queue/*");
        assert_eq!(p.subscriber_count("/topic/news"), 3);
        assert_eq!(p.subscriber_count("/topic/other/deep"), 1);
        assert_eq!(p.subscriber_count("/queue/x"), 1);
        assert_eq!(p.subscriber_count("/nothing"), 0);
        assert_eq!(p.destination_count(), 3);
        p.unsubscribed("b", "2");
        assert_eq!(p.subscriber_count("/topic/news"), 2);
        p.unregister("a");
        assert_eq!(p.subscriber_count("/topic/news"), 1);
        p.unregister("b");
        assert_eq!(p.destination_count(), 0);
        assert_eq!(p.session_count(), 0);
    }

    #[test]
    fn reports_a_users_sessions_and_forgets_them_when_they_end() {
        let p = LocalPresence::new('/');
        p.register("s1", record(Some("alice")));
        p.register("s2", record(Some("alice")));
        p.subscribed("s2", "sub-0", "/user/queue/notify");
        let sessions = p.user_sessions("alice");
        assert_eq!(sessions.len(), 2);
        let s2 = sessions.iter().find(|s| s.id == "s2").unwrap();
        assert_eq!(
            s2.subscriptions,
            [SubscriptionPresence {
                id: "sub-0".into(),
                destination: "/user/queue/notify".into()
            }]
        );
        p.unregister("s1");
        p.unregister("s2");
        assert!(p.user_sessions("alice").is_empty());
        assert!(p.lock().users.is_empty());
    }

    #[tokio::test]
    async fn disconnect_wakes_every_named_session_once() {
        let p = LocalPresence::new('/');
        let a = p.register("a", record(Some("bob")));
        let b = p.register("b", record(Some("bob")));
        let kick = Kick {
            code: 4000,
            reason: "bye".into(),
        };
        assert_eq!(
            p.disconnect(&DisconnectTarget::User("bob".into()), &kick),
            2
        );
        assert_eq!(
            p.disconnect(&DisconnectTarget::Session("zz".into()), &kick),
            0
        );
        assert_eq!(a.requested().await, kick);
        assert_eq!(b.requested().await, kick);
    }
}
