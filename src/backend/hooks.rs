//! Lifecycle hooks: the CONNECT decision (`connect_url`) and the end-of-session notice
//! (`disconnect_url`).
//!
//! Connect hook request (POST):
//!
//! ```json
//! {"type": "connect", "session": "k3j2...", "user": null,
//!  "headers": {"accept-version": "1.2", "token": "..."},
//!  "transport": "websocket", "remote_addr": "127.0.0.1:53412",
//!  "handshake": {"url": "/stomp/123/abcd/websocket", "headers": {"origin": "..."}}}
//! ```
//!
//! `headers` are the CONNECT headers, credentials included (the hook is trusted with them);
//! `user` is the principal the gateway's own authentication found (null when anonymous).
//! The answer: `200 {"allow": true, "user"?: "alice", "roles"?: [...], "headers"?: {...}}`
//! (`user` replaces the principal, `null` makes the session anonymous, absent keeps it;
//! `headers` are added to CONNECTED), or `200 {"allow": false, "reason": "..."}`, or a 4xx,
//! whose body is the reason; either denial is ERROR `Authentication failed`. `204` allows as
//! is. A hook that times out, cannot be reached, answers 5xx or garbage fails the CONNECT
//! with ERROR `Backend error` (it fails closed).
//!
//! Disconnect notices are fire-and-forget and batched: ended sessions queue (bounded by
//! `disconnect_queue_size`; beyond it they are dropped and counted) and one request at a time
//! carries up to `disconnect_batch_size` of them, so a burst of closes becomes a few requests
//! and a slow hook never holds a close:
//!
//! ```json
//! {"type": "disconnect", "sessions": [{"session": "k3j2...", "user": "alice",
//!   "code": 1000, "reason": "Normal closure", "cause": "disconnect"}]}
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Uri;
use serde::Deserialize;
use serde_json::Value;

use super::client::HttpClient;
use super::wire::Headers;
use crate::session::Principal;
use crate::stomp::{
    BackendError, ConnectCheck, ConnectGrant, ConnectRefusal, DisconnectCause, SessionEnded,
};

/// CONNECTED headers the gateway sets itself.
const CONNECTED_HEADERS: &[&str] = &["version", "heart-beat", "session", "server", "user-name"];

/// The JSON body of a connect hook request.
#[derive(serde::Serialize)]
struct ConnectRequest<'a> {
    /// Always `connect`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The STOMP session id the session will have.
    session: &'a str,
    /// The principal found so far, or null.
    user: Option<&'a str>,
    /// The CONNECT headers.
    headers: Headers<'a>,
    /// The carrier.
    transport: &'static str,
    /// The peer address.
    remote_addr: String,
    /// The opening HTTP request.
    handshake: Handshake<'a>,
}

/// The request that opened the session.
#[derive(serde::Serialize)]
struct Handshake<'a> {
    /// Path and query.
    url: &'a str,
    /// The captured request headers.
    headers: Headers<'a>,
}

/// The JSON body of a connect hook answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectAnswer {
    /// Whether the CONNECT may go on.
    allow: bool,
    /// The principal: a name, null (anonymous), or absent (unchanged).
    #[serde(default, deserialize_with = "present")]
    user: Option<Value>,
    /// Roles for authorization rules (replacing the ones found so far).
    #[serde(default)]
    roles: Option<Vec<String>>,
    /// Extra CONNECTED headers.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Why not (with `allow: false`).
    #[serde(default)]
    reason: Option<String>,
}

/// A field that is present, even as `null` (absent stays None through `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The JSON body of a connect hook request for `check`.
pub(crate) fn connect_request(check: &ConnectCheck<'_>) -> Bytes {
    let request = ConnectRequest {
        kind: "connect",
        session: check.session,
        user: check.principal.map(|p| p.name.as_str()),
        headers: Headers {
            headers: check.headers,
            omit: &[],
        },
        transport: check.info.transport.name(),
        remote_addr: check.info.remote_addr.to_string(),
        handshake: Handshake {
            url: &check.info.url,
            headers: Headers {
                headers: &check.info.headers,
                omit: &[],
            },
        },
    };
    Bytes::from(serde_json::to_vec(&request).unwrap_or_default())
}

/// Ask the hook at `url` about a CONNECT whose principal so far is `principal`.
pub(crate) async fn decide_connect(
    client: HttpClient,
    url: Uri,
    body: Bytes,
    principal: Option<Principal>,
) -> Result<ConnectGrant, ConnectRefusal> {
    let answer = client
        .post(&url, body)
        .await
        .map_err(ConnectRefusal::Failed)?;
    if answer.status.is_client_error() {
        let reason = answer.reason();
        return Err(ConnectRefusal::Denied(if reason.is_empty() {
            format!("refused by the connect hook ({})", answer.status)
        } else {
            reason
        }));
    }
    let body = answer.accepted(&client).map_err(ConnectRefusal::Failed)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ConnectGrant {
            principal,
            headers: Vec::new(),
        });
    }
    grant_from(&body, principal).map_err(|refusal| match refusal {
        ConnectRefusal::Failed(BackendError::Invalid(text)) => ConnectRefusal::Failed(
            BackendError::Invalid(format!("connect hook of {}: {text}", client.name())),
        ),
        other => other,
    })
}

/// Whether a 200 answer allows (`Ok(true)`), denies (`Ok(false)`) or breaks the contract.
pub(crate) fn check_answer(body: &[u8]) -> Result<bool, String> {
    match grant_from(body, None) {
        Ok(_) => Ok(true),
        Err(ConnectRefusal::Denied(_)) => Ok(false),
        Err(ConnectRefusal::Failed(e)) => Err(e.to_string()),
    }
}

/// Apply a 200 answer to the principal found so far.
fn grant_from(body: &[u8], principal: Option<Principal>) -> Result<ConnectGrant, ConnectRefusal> {
    let invalid = |text: String| ConnectRefusal::Failed(BackendError::Invalid(text));
    let answer: ConnectAnswer = serde_json::from_slice(body).map_err(|e| {
        invalid(format!(
            "the answer is not {{\"allow\": true|false, ...}}: {e}"
        ))
    })?;
    if !answer.allow {
        let reason = answer
            .reason
            .unwrap_or_else(|| "refused by the connect hook".into());
        return Err(ConnectRefusal::Denied(reason));
    }
    let mut principal = match answer.user {
        None => principal,
        Some(Value::Null) => None,
        Some(Value::String(name)) if !name.is_empty() => Some(Principal {
            name,
            roles: principal
                .as_ref()
                .map(|p| p.roles.clone())
                .unwrap_or_default(),
            expires_at: principal.as_ref().and_then(|p| p.expires_at),
        }),
        Some(other) => {
            return Err(invalid(format!(
                "user must be a non-empty user name or null, not {other}"
            )));
        }
    };
    if let (Some(roles), Some(principal)) = (answer.roles, principal.as_mut()) {
        principal.roles = roles;
    }
    let mut headers = Vec::with_capacity(answer.headers.len());
    for (name, value) in answer.headers {
        if CONNECTED_HEADERS.contains(&name.as_str()) {
            return Err(invalid(format!("headers.{name} is set by the gateway")));
        }
        if name.is_empty() || name.contains([':', '\n', '\r', '\0']) || value.contains('\0') {
            return Err(invalid(format!("header {name:?} is not a STOMP header")));
        }
        headers.push((name, value));
    }
    Ok(ConnectGrant { principal, headers })
}

/// The name a disconnect notice gives a cause.
fn cause_name(cause: DisconnectCause) -> &'static str {
    match cause {
        DisconnectCause::Client => "client",
        DisconnectCause::Disconnect => "disconnect",
        DisconnectCause::HeartBeatTimeout => "heart-beat-timeout",
        DisconnectCause::SendLimit => "send-limit",
        DisconnectCause::ConnectTimeout => "connect-timeout",
        DisconnectCause::ProtocolError => "protocol-error",
        DisconnectCause::RateLimited => "rate-limited",
        DisconnectCause::IdleTimeout => "idle-timeout",
        DisconnectCause::TransportError => "transport-error",
        DisconnectCause::Shutdown => "shutdown",
        DisconnectCause::Kicked => "kicked",
    }
}

/// One ended session in a disconnect notice.
#[derive(serde::Serialize)]
struct Ended<'a> {
    /// The STOMP session id.
    session: &'a str,
    /// The principal, or null.
    user: Option<&'a str>,
    /// The close code.
    code: u16,
    /// The close reason.
    reason: &'a str,
    /// Why it ended.
    cause: &'static str,
}

/// The JSON body of a disconnect notice.
fn disconnect_request(batch: &[SessionEnded]) -> Bytes {
    #[derive(serde::Serialize)]
    struct Notice<'a> {
        /// Always `disconnect`.
        #[serde(rename = "type")]
        kind: &'static str,
        /// The ended sessions.
        sessions: Vec<Ended<'a>>,
    }
    let notice = Notice {
        kind: "disconnect",
        sessions: batch
            .iter()
            .map(|e| Ended {
                session: &e.session,
                user: e.user.as_deref(),
                code: e.code,
                reason: &e.reason,
                cause: cause_name(e.cause),
            })
            .collect(),
    };
    Bytes::from(serde_json::to_vec(&notice).unwrap_or_default())
}

/// The ended sessions waiting to be told, and whether a sender task is running.
#[derive(Debug, Default)]
struct Queue {
    /// Oldest first.
    waiting: VecDeque<SessionEnded>,
    /// Whether a task is sending (it exits once the queue is empty).
    sending: bool,
}

/// Batches ended sessions to one backend's `disconnect_url`.
#[derive(Debug)]
pub(crate) struct Disconnects {
    /// Where notices go.
    url: Uri,
    /// The backend's client.
    client: HttpClient,
    /// The most sessions per request.
    batch_size: usize,
    /// The most sessions waiting.
    capacity: usize,
    /// The waiting sessions.
    queue: Mutex<Queue>,
    /// Sessions dropped because the queue was full.
    pub(crate) dropped: AtomicU64,
    /// Sessions told (the backend answered 2xx).
    pub(crate) sent: AtomicU64,
}

impl Disconnects {
    /// A batcher for `url`.
    pub(crate) fn new(
        url: Uri,
        client: HttpClient,
        batch_size: usize,
        capacity: usize,
    ) -> Disconnects {
        Disconnects {
            url,
            client,
            batch_size,
            capacity,
            queue: Mutex::new(Queue::default()),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        match self.queue.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Queue a notice; returns at once. A sender task starts when none runs.
    pub(crate) fn push(self: &Arc<Self>, ended: SessionEnded) {
        let start = {
            let mut queue = self.lock();
            if queue.waiting.len() >= self.capacity {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(url = %self.url, dropped, capacity = self.capacity, "disconnect notices dropped: the queue is full (disconnect_queue_size)");
                }
                return;
            }
            queue.waiting.push_back(ended);
            !std::mem::replace(&mut queue.sending, true)
        };
        if start {
            tokio::spawn(self.clone().send_all());
        }
    }

    /// Send batches until the queue is empty.
    async fn send_all(self: Arc<Self>) {
        loop {
            let batch: Vec<SessionEnded> = {
                let mut queue = self.lock();
                if queue.waiting.is_empty() {
                    queue.sending = false;
                    return;
                }
                let n = queue.waiting.len().min(self.batch_size);
                queue.waiting.drain(..n).collect()
            };
            let answer = self
                .client
                .post(&self.url, disconnect_request(&batch))
                .await;
            match answer.and_then(|answer| answer.accepted(&self.client)) {
                Ok(_) => {
                    self.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                Err(err) => {
                    tracing::warn!(url = %self.url, sessions = batch.len(), %err, "disconnect notice not delivered");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Option<Principal> {
        Some(Principal {
            name: "alice".into(),
            roles: vec!["user".into()],
            expires_at: None,
        })
    }

    #[test]
    fn connect_answers_decide_the_principal() {
        let grant = grant_from(br#"{"allow": true}"#, alice()).unwrap();
        assert_eq!(grant.principal.unwrap().name, "alice");
        let grant = grant_from(
            br#"{"allow": true, "user": "bob", "roles": ["admin"], "headers": {"x-tenant": "t"}}"#,
            alice(),
        )
        .unwrap();
        let bob = grant.principal.unwrap();
        assert_eq!(
            (bob.name.as_str(), bob.roles),
            ("bob", vec!["admin".to_string()])
        );
        assert_eq!(grant.headers, [("x-tenant".to_string(), "t".to_string())]);
        assert_eq!(
            grant_from(br#"{"allow": true, "user": null}"#, alice())
                .unwrap()
                .principal,
            None
        );
        assert_eq!(
            grant_from(br#"{"allow": false, "reason": "bad token"}"#, alice()).unwrap_err(),
            ConnectRefusal::Denied("bad token".into())
        );
    }

    #[test]
    fn garbage_connect_answers_fail_closed() {
        for (body, needle) in [
            (&b"yes"[..], "is not {\"allow\""),
            (br#"{"allow": true, "usr": "x"}"#, "unknown field `usr`"),
            (br#"{"user": "x"}"#, "missing field `allow`"),
            (br#"{"allow": true, "user": 5}"#, "user must be"),
            (
                br#"{"allow": true, "headers": {"session": "x"}}"#,
                "set by the gateway",
            ),
        ] {
            match grant_from(body, None) {
                Err(ConnectRefusal::Failed(BackendError::Invalid(text))) => {
                    assert!(text.contains(needle), "{text}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn disconnect_notices_name_causes() {
        let body = disconnect_request(&[SessionEnded {
            session: "s1".into(),
            user: None,
            code: 1000,
            reason: "Normal closure".into(),
            cause: DisconnectCause::Disconnect,
        }]);
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "disconnect", "sessions": [{"session": "s1", "user": null,
                "code": 1000, "reason": "Normal closure", "cause": "disconnect"}]})
        );
    }
}
