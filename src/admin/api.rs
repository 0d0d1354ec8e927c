//! The admin API's operations: publish (one or a batch), disconnect, presence and stats.
//!
//! Publishes enter the broker through the same calls a client SEND uses (`Broker::message`,
//! `publish`, `send_to_user`, `send_to_session`), so fan-out, user destinations, encoding
//! once and the bounded outbound queues are exactly those of client traffic. What the API may
//! publish to is decided here, separately from client ACLs: the destination must route to the
//! broker (not `/app`, not unroutable), pass `[admin] allow_destinations`, and its body must
//! fit `[stomp] message_size_limit` like a client frame. A batch is checked whole before its
//! first message is published, so a bad item publishes nothing.

use std::time::Instant;

use serde_json::{Value, json};

use super::Admin;
use super::idempotency::PublishAnswer;
use super::request::{
    ApiError, Disconnect, DisconnectWho, Publish, Recipient, decode_batch, decode_disconnect,
    decode_publish,
};
use crate::stomp::destination::{Route, split_user_destination};
use crate::stomp::presence::{DisconnectTarget, Kick, SessionPresence};

/// How a checked publish enters the broker.
#[derive(Debug)]
enum Delivery {
    /// `Broker::publish` to this broker destination.
    Broadcast(String),
    /// `Broker::send_to_user(user, actual)`.
    User {
        /// The user.
        user: String,
        /// The destination under the user prefix, e.g. `/queue/notify`.
        actual: String,
    },
    /// `Broker::send_to_session(session, actual)`.
    Session {
        /// The STOMP session id.
        session: String,
        /// The destination under the user prefix.
        actual: String,
    },
}

/// A publish checked against the gateway's configuration, ready to go.
#[derive(Debug)]
struct Planned {
    /// How it enters the broker.
    delivery: Delivery,
    /// The request.
    publish: Publish,
}

impl Admin {
    /// Check a decoded publish against routing, the API allow-list and the size limit.
    fn plan(&self, publish: Publish) -> Result<Planned, ApiError> {
        let destination = &publish.destination;
        if !self.allowed(destination) {
            return Err(ApiError {
                status: 403,
                code: "forbidden",
                message: format!(
                    "the admin API may not publish to {destination} ([admin] allow_destinations)"
                ),
                field: Some("destination".into()),
            });
        }
        let limit = self.stomp.config().message_size_limit;
        if publish.body.len() > limit {
            return Err(ApiError {
                status: 413,
                code: "body_too_large",
                message: format!(
                    "the body has {} bytes; the limit is {limit} ([stomp] message_size_limit)",
                    publish.body.len()
                ),
                field: Some("body".into()),
            });
        }
        let route = self.router.route(destination);
        let delivery = match (&publish.recipient, route) {
            (Recipient::Destination, Route::Broker) => Delivery::Broadcast(destination.clone()),
            (Recipient::Destination, Route::User { rest }) => {
                let (user, actual) = split_user_destination(&rest)
                    .map_err(|e| ApiError::field("invalid_value", "destination", e.to_string()))?;
                Delivery::User { user, actual }
            }
            (Recipient::User(user), Route::Broker) => Delivery::User {
                user: user.clone(),
                actual: destination.clone(),
            },
            (Recipient::Session(session), Route::Broker) => Delivery::Session {
                session: session.clone(),
                actual: destination.clone(),
            },
            (_, Route::User { .. }) => {
                return Err(ApiError::field(
                    "invalid_value",
                    "destination",
                    format!(
                        "with user or session, give the destination without the user prefix \
                         ({} is added by the gateway), e.g. /queue/notify",
                        self.router.user_prefix()
                    ),
                ));
            }
            (_, Route::Application { .. }) => {
                return Err(ApiError::field(
                    "invalid_value",
                    "destination",
                    format!(
                        "{destination} is an application destination ([stomp] \
                         application_prefixes); the API publishes to broker destinations"
                    ),
                ));
            }
            (_, Route::Unroutable) => {
                return Err(ApiError::field(
                    "invalid_value",
                    "destination",
                    format!("no [stomp] broker_prefixes entry routes {destination}"),
                ));
            }
        };
        Ok(Planned { delivery, publish })
    }

    /// Whether `[admin] allow_destinations` lets the API publish to `destination`.
    fn allowed(&self, destination: &str) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|p| p.matches(destination))
    }

    /// Publish a planned message: the answer, and whether it is a replayed earlier answer.
    /// With an `idempotency_key`, the check, the publish and the record happen under the
    /// window's lock, so concurrent retries publish once; without one, no lock is taken.
    fn execute(&self, planned: Planned, now: Instant) -> (PublishAnswer, bool) {
        let Some(key) = planned.publish.idempotency_key.clone() else {
            return (self.deliver(planned), false);
        };
        let mut window = self.idempotency.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(answer) = window.get(&key, now) {
            return (answer, true);
        }
        let answer = self.deliver(planned);
        window.insert(key, answer.clone(), now);
        (answer, false)
    }

    /// Hand a planned message to the broker.
    fn deliver(&self, planned: Planned) -> PublishAnswer {
        let Planned { delivery, publish } = planned;
        let broker = self.stomp.broker();
        let message = broker.message(&publish.headers, publish.body);
        let id = message.message_id().to_owned();
        self.stomp.traffic().record(&publish.destination);
        let delivered = match delivery {
            Delivery::Broadcast(destination) => broker.publish(&destination, message).delivered,
            Delivery::User { user, actual } => broker.send_to_user(&user, &actual, None, message),
            Delivery::Session { session, actual } => {
                broker.send_to_session(&session, &actual, message).delivered
            }
        };
        PublishAnswer { id, delivered }
    }

    /// `POST /api/publish`.
    pub(super) fn publish(&self, body: &[u8]) -> Result<(Value, bool), ApiError> {
        let planned = self.plan(decode_publish(body)?)?;
        let (answer, replayed) = self.execute(planned, Instant::now());
        Ok((answer_json(&answer), replayed))
    }

    /// `POST /api/batch`: every message is checked first, then all are published in order.
    pub(super) fn batch(&self, body: &[u8]) -> Result<Value, ApiError> {
        let messages = decode_batch(body, self.config.max_batch)?;
        let planned = messages
            .into_iter()
            .enumerate()
            .map(|(i, publish)| {
                self.plan(publish)
                    .map_err(|e| e.under(&format!("messages[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let now = Instant::now();
        let results: Vec<Value> = planned
            .into_iter()
            .map(|p| answer_json(&self.execute(p, now).0))
            .collect();
        Ok(json!({ "results": results }))
    }

    /// `POST /api/disconnect`.
    pub(super) fn disconnect(&self, body: &[u8]) -> Result<Value, ApiError> {
        let Disconnect { who, code, reason } = decode_disconnect(body)?;
        let target = match who {
            DisconnectWho::User(user) => DisconnectTarget::User(user),
            DisconnectWho::Session(session) => DisconnectTarget::Session(session),
        };
        let kick = Kick { code, reason };
        let disconnected = self.presence.disconnect(&target, &kick);
        tracing::info!(?target, code = kick.code, reason = %kick.reason, disconnected, "admin API disconnect");
        Ok(json!({ "disconnected": disconnected }))
    }

    /// `GET /api/presence/users/{user}`: this node's sessions in full and, in cluster mode,
    /// every node's (node and session id, from Redis).
    pub(super) async fn presence_user(&self, user: &str) -> Result<Value, ApiError> {
        let sessions: Vec<Value> = self
            .presence
            .user_sessions(user)
            .iter()
            .map(session_json)
            .collect();
        let Some(cluster) = &self.cluster_presence else {
            return Ok(json!({ "user": user, "sessions": sessions }));
        };
        let everywhere = cluster.sessions(user).await.map_err(|e| {
            ApiError::new(
                503,
                "cluster_unavailable",
                format!("{e}: presence across nodes needs Redis; retry once it answers"),
            )
        })?;
        let entries: Vec<Value> = everywhere
            .iter()
            .map(|e| json!({ "node": e.node, "session": e.session }))
            .collect();
        Ok(json!({
            "user": user,
            "sessions": sessions,
            "cluster": { "node": cluster.node(), "sessions": entries },
        }))
    }

    /// `GET /api/presence/destinations/{destination}`.
    pub(super) fn presence_destination(&self, destination: &str) -> Value {
        json!({
            "destination": destination,
            "subscribers": self.presence.subscriber_count(destination),
        })
    }
}

fn answer_json(answer: &PublishAnswer) -> Value {
    json!({ "id": answer.id, "delivered": answer.delivered })
}

fn session_json(session: &SessionPresence) -> Value {
    let subscriptions: Vec<Value> = session
        .subscriptions
        .iter()
        .map(|s| json!({ "id": s.id, "destination": s.destination }))
        .collect();
    json!({
        "id": session.id,
        "user": session.user,
        "transport": session.transport.name(),
        "remote_address": session.remote_addr.to_string(),
        "since": rfc3339(session.since),
        "subscriptions": subscriptions,
    })
}

/// An RFC 3339 UTC timestamp with milliseconds (`2026-12-02T13:55:01.123Z`).
pub(super) fn rfc3339(at: std::time::SystemTime) -> String {
    let since_epoch = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since_epoch.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_796_213_701_123);
        assert_eq!(rfc3339(at), "2026-12-02T12:15:01.123Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
