//! Decoding the admin API's JSON requests: bytes in, a checked request or an [`ApiError`]
//! naming the field that was wrong.
//!
//! Pure functions over bytes, with no I/O and no gateway state, so the fuzz target and the
//! property tests drive exactly what the listener runs. Decoding is strict: unknown fields are
//! refused, wrong types are named with their path (`messages[2].destination`), and every
//! value is checked for what the STOMP side could not carry (NUL bytes, control headers the
//! gateway sets itself, malformed base64). Checks that need the gateway's configuration
//! (routing, the API allow-list, the message size limit) happen in `api.rs`.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// An error answer: an HTTP status, a stable code, a message, and the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// A stable machine-readable code (`invalid_json`, `unknown_field`, …).
    pub code: &'static str,
    /// What was wrong and what to do, for people.
    pub message: String,
    /// The field's path in the request (`messages[0].destination`), when one is to blame.
    pub field: Option<String>,
}

impl ApiError {
    /// A 400 about `field`.
    pub fn field(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// An error with no field to blame.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// The same error about a field nested under `prefix` (a batch item).
    pub fn under(mut self, prefix: &str) -> Self {
        self.field = Some(match self.field {
            Some(field) => format!("{prefix}.{field}"),
            None => prefix.to_owned(),
        });
        self
    }

    /// The JSON body: `{"error": {"code", "message", "field"?}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(field) = &self.field {
            error["field"] = serde_json::Value::String(field.clone());
        }
        serde_json::json!({ "error": error })
    }
}

/// Headers a publish may not set: the gateway sets them (STOMP control headers, spec §8.1).
pub const RESERVED_HEADERS: &[&str] = &[
    "destination",
    "message-id",
    "subscription",
    "ack",
    "redelivered",
    "content-length",
    "receipt",
    "transaction",
];

/// The longest destination, user name, session id or idempotency key accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;

/// The longest close reason: what fits a WebSocket close frame (125 bytes minus the code).
pub const MAX_REASON_BYTES: usize = 123;

/// `POST /api/publish` as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishWire {
    destination: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// `POST /api/batch` as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchWire {
    messages: Vec<serde_json::Value>,
}

/// `POST /api/disconnect` as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectWire {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
}

/// Whom a publish is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// Every subscriber of the destination (a client SEND).
    Destination,
    /// Every session of this user subscribed to `/user/<destination>`.
    User(String),
    /// One session (by STOMP session id) subscribed to `/user/<destination>`.
    Session(String),
}

/// A checked publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Whom it is for.
    pub recipient: Recipient,
    /// The destination as sent.
    pub destination: String,
    /// MESSAGE headers (user headers, `content-type`), in name order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// The retry key, if any.
    pub idempotency_key: Option<String>,
}

/// Which sessions a disconnect names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectWho {
    /// Every session of a user.
    User(String),
    /// One STOMP session.
    Session(String),
}

/// A checked disconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Whom to close.
    pub who: DisconnectWho,
    /// The close code (1000, or 3000–4999).
    pub code: u16,
    /// The reason, in the STOMP ERROR and the close.
    pub reason: String,
}

/// The close code when a disconnect names none.
pub const DEFAULT_CLOSE_CODE: u16 = 1000;

/// The reason when a disconnect names none.
pub const DEFAULT_CLOSE_REASON: &str = "Disconnected by the server";

/// The error for a request (or batch item) that is JSON but not an object: serde would
/// otherwise read an array as a struct's fields in order.
fn not_an_object(field: Option<&str>) -> ApiError {
    let what = field.unwrap_or("the request body");
    ApiError {
        status: 400,
        code: "invalid_type",
        message: format!("{what} must be a JSON object"),
        field: field.map(str::to_owned),
    }
}

/// Parse a JSON object into `T`, naming the failing field's path.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok();
        if is_json {
            return Err(not_an_object(None));
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(&e))?;
    de.end().map_err(|e| {
        ApiError::new(
            400,
            "invalid_json",
            format!("the request body is not one JSON value: {e}"),
        )
    })?;
    Ok(value)
}

/// Translate a decoding error into an answer that names the field.
fn json_error(err: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = err.inner();
    let path = err.path().to_string();
    let path = (path != ".").then_some(path);
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return ApiError::new(
            400,
            "invalid_json",
            format!("the request body is not valid JSON: {inner}"),
        );
    }
    let text = inner.to_string();
    // The path of an unknown field already ends with it; a missing field's is its parent's.
    let join = |name: &str| match &path {
        Some(p) if p == name || p.ends_with(&format!(".{name}")) => p.clone(),
        Some(p) => format!("{p}.{name}"),
        None => name.to_owned(),
    };
    let quoted = text.split('`').nth(1).unwrap_or_default().to_owned();
    let (code, field) = if text.starts_with("unknown field") {
        ("unknown_field", Some(join(&quoted)))
    } else if text.starts_with("missing field") {
        ("missing_field", Some(join(&quoted)))
    } else if text.starts_with("invalid type") {
        ("invalid_type", path.clone())
    } else {
        ("invalid_value", path.clone())
    };
    let message = match &field {
        Some(field) => format!("{field}: {text}"),
        None => text,
    };
    ApiError {
        status: 400,
        code,
        message,
        field,
    }
}

/// Check a name-like string: non-empty, bounded, no NUL or line breaks.
fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(ApiError::field(
            "invalid_value",
            field,
            format!("{field} must not be empty"),
        ));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(ApiError::field(
            "invalid_value",
            field,
            format!("{field} is longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    if value.contains(['\0', '\r', '\n']) {
        return Err(ApiError::field(
            "invalid_value",
            field,
            format!("{field} must not contain NUL or line breaks"),
        ));
    }
    Ok(())
}

/// Check a destination: a name that starts with `/` and is not a pattern.
fn check_destination(field: &str, destination: &str) -> Result<(), ApiError> {
    check_name(field, destination)?;
    if !destination.starts_with('/') {
        return Err(ApiError::field(
            "invalid_value",
            field,
            format!("{destination:?} must start with '/'"),
        ));
    }
    if destination.contains(['*', '{']) {
        return Err(ApiError::field(
            "invalid_value",
            field,
            format!("{destination:?} is a pattern; publish to a literal destination"),
        ));
    }
    Ok(())
}

/// Check a STOMP session id: `[a-z0-9]`, as CONNECTED's `session` header has it.
fn check_session(field: &str, session: &str) -> Result<(), ApiError> {
    check_name(field, session)?;
    if !session
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(ApiError::field(
            "invalid_value",
            field,
            format!("{session:?} is not a STOMP session id (CONNECTED's session header)"),
        ));
    }
    Ok(())
}

/// Decode `POST /api/publish`.
pub fn decode_publish(bytes: &[u8]) -> Result<Publish, ApiError> {
    check_publish(parse(bytes)?)
}

/// Decode `POST /api/batch`: every message is checked before any is published; at most
/// `max_batch` of them.
pub fn decode_batch(bytes: &[u8], max_batch: usize) -> Result<Vec<Publish>, ApiError> {
    let wire: BatchWire = parse(bytes)?;
    if wire.messages.is_empty() {
        return Err(ApiError::field(
            "invalid_value",
            "messages",
            "messages must hold at least one message",
        ));
    }
    if wire.messages.len() > max_batch {
        return Err(ApiError {
            status: 413,
            code: "too_many_messages",
            message: format!(
                "{} messages in one batch; the limit is {max_batch} ([admin] max_batch)",
                wire.messages.len()
            ),
            field: Some("messages".into()),
        });
    }
    wire.messages
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let prefix = format!("messages[{i}]");
            if !value.is_object() {
                return Err(not_an_object(Some(&prefix)));
            }
            let item: PublishWire = serde_path_to_error::deserialize(value)
                .map_err(|e| json_error(&e).under(&prefix))?;
            check_publish(item).map_err(|e| e.under(&prefix))
        })
        .collect()
}

fn check_publish(wire: PublishWire) -> Result<Publish, ApiError> {
    check_destination("destination", &wire.destination)?;
    let recipient = match (wire.user, wire.session) {
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                "invalid_value",
                "session",
                "give user or session, not both",
            ));
        }
        (Some(user), None) => {
            check_name("user", &user)?;
            Recipient::User(user)
        }
        (None, Some(session)) => {
            check_session("session", &session)?;
            Recipient::Session(session)
        }
        (None, None) => Recipient::Destination,
    };
    let body = match (wire.body, wire.body_base64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                "invalid_value",
                "body_base64",
                "give body or body_base64, not both",
            ));
        }
        (Some(body), None) => Bytes::from(body),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map(Bytes::from)
            .map_err(|e| {
                ApiError::field(
                    "invalid_value",
                    "body_base64",
                    format!("body_base64 is not standard base64: {e}"),
                )
            })?,
        (None, None) => Bytes::new(),
    };
    let mut headers = Vec::new();
    for (name, value) in wire.headers.unwrap_or_default() {
        let field = format!("headers.{name}");
        if name.is_empty() || name.contains(['\0', ':', '\r', '\n']) {
            return Err(ApiError::field(
                "invalid_value",
                field,
                "a header name must be non-empty, without ':', NUL or line breaks",
            ));
        }
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(ApiError::field(
                "invalid_value",
                field,
                format!("the gateway sets the {name} header itself"),
            ));
        }
        if value.contains('\0') {
            return Err(ApiError::field(
                "invalid_value",
                field,
                "a header value must not contain NUL",
            ));
        }
        if name == "content-type" && wire.content_type.is_some() {
            return Err(ApiError::field(
                "invalid_value",
                field,
                "give content_type or headers.content-type, not both",
            ));
        }
        headers.push((name, value));
    }
    if let Some(content_type) = wire.content_type {
        check_name("content_type", &content_type)?;
        headers.push(("content-type".into(), content_type));
    }
    if let Some(key) = &wire.idempotency_key {
        check_name("idempotency_key", key)?;
    }
    Ok(Publish {
        recipient,
        destination: wire.destination,
        headers,
        body,
        idempotency_key: wire.idempotency_key,
    })
}

/// Decode `POST /api/disconnect`.
pub fn decode_disconnect(bytes: &[u8]) -> Result<Disconnect, ApiError> {
    let wire: DisconnectWire = parse(bytes)?;
    let who = match (wire.user, wire.session) {
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                "invalid_value",
                "session",
                "give user or session, not both",
            ));
        }
        (Some(user), None) => {
            check_name("user", &user)?;
            DisconnectWho::User(user)
        }
        (None, Some(session)) => {
            check_session("session", &session)?;
            DisconnectWho::Session(session)
        }
        (None, None) => {
            return Err(ApiError::field(
                "missing_field",
                "user",
                "name the sessions to close: user or session",
            ));
        }
    };
    let code = wire.code.unwrap_or(DEFAULT_CLOSE_CODE);
    if code != 1000 && !(3000..=4999).contains(&code) {
        return Err(ApiError::field(
            "invalid_value",
            "code",
            format!("close code {code} is not 1000 or within 3000-4999"),
        ));
    }
    let reason = wire.reason.unwrap_or_else(|| DEFAULT_CLOSE_REASON.into());
    if reason.len() > MAX_REASON_BYTES || reason.contains(['\0', '\r', '\n']) {
        return Err(ApiError::field(
            "invalid_value",
            "reason",
            format!("reason must be at most {MAX_REASON_BYTES} bytes, without NUL or line breaks"),
        ));
    }
    Ok(Disconnect { who, code, reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field_of(result: Result<impl std::fmt::Debug, ApiError>) -> (u16, &'static str, String) {
        let err = result.unwrap_err();
        (err.status, err.code, err.field.unwrap_or_default())
    }

    #[test]
    fn a_plain_publish_decodes() {
        let p = decode_publish(
            br#"{"destination": "/topic/news", "body": "hi", "headers": {"x-a": "1"},
                 "content_type": "text/plain", "idempotency_key": "k1"}"#,
        )
        .unwrap();
        assert_eq!(p.recipient, Recipient::Destination);
        assert_eq!(&p.body[..], b"hi");
        assert_eq!(
            p.headers,
            [
                ("x-a".to_string(), "1".to_string()),
                ("content-type".to_string(), "text/plain".to_string())
            ]
        );
        assert_eq!(p.idempotency_key.as_deref(), Some("k1"));
        let p = decode_publish(br#"{"user": "alice", "destination": "/queue/n"}"#).unwrap();
        assert_eq!(p.recipient, Recipient::User("alice".into()));
        assert!(p.body.is_empty());
        let p = decode_publish(
            br#"{"session": "abc1", "destination": "/queue/n", "body_base64": "AP8="}"#,
        )
        .unwrap();
        assert_eq!(p.recipient, Recipient::Session("abc1".into()));
        assert_eq!(&p.body[..], &[0, 255]);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field_of(decode_publish(br#"{"destination": "/t", "bdy": "x"}"#)),
            (400, "unknown_field", "bdy".into())
        );
        assert_eq!(
            field_of(decode_publish(br#"{"destination": 3}"#)),
            (400, "invalid_type", "destination".into())
        );
        assert_eq!(
            field_of(decode_publish(br#"{"body": "x"}"#)),
            (400, "missing_field", "destination".into())
        );
        assert_eq!(
            field_of(decode_publish(
                br#"{"destination": "/t", "headers": {"a": 1}}"#
            )),
            (400, "invalid_type", "headers.a".into())
        );
        assert_eq!(
            field_of(decode_publish(
                br#"{"destination": "/t", "headers": {"message-id": "x"}}"#
            )),
            (400, "invalid_value", "headers.message-id".into())
        );
        assert_eq!(
            field_of(decode_publish(br#"{"destination": "/topic/*"}"#)),
            (400, "invalid_value", "destination".into())
        );
        assert_eq!(
            field_of(decode_publish(
                br#"{"destination": "/t", "body_base64": "@@"}"#
            )),
            (400, "invalid_value", "body_base64".into())
        );
        assert_eq!(
            field_of(decode_publish(
                br#"{"destination": "/t", "session": "A B"}"#
            )),
            (400, "invalid_value", "session".into())
        );
        assert_eq!(decode_publish(b"{").unwrap_err().code, "invalid_json");
        assert_eq!(
            decode_publish(br#"{"destination": "/t"} {}"#)
                .unwrap_err()
                .code,
            "invalid_json"
        );
        assert_eq!(decode_publish(b"[]").unwrap_err().code, "invalid_type");
    }

    #[test]
    fn batches_are_checked_whole_and_bounded() {
        let ok = decode_batch(
            br#"{"messages": [{"destination": "/a"}, {"destination": "/b", "user": "u"}]}"#,
            10,
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(
            field_of(decode_batch(
                br#"{"messages": [{"destination": "/a"}, {"destination": "/b", "x": 1}]}"#,
                10
            )),
            (400, "unknown_field", "messages[1].x".into())
        );
        assert_eq!(
            field_of(decode_batch(
                br#"{"messages": [{"destination": "/a"}, {"destination": 5}]}"#,
                10
            )),
            (400, "invalid_type", "messages[1].destination".into())
        );
        assert_eq!(
            field_of(decode_batch(
                br#"{"messages": [{"destination": "/a"}, {"destination": "/b"}]}"#,
                1
            )),
            (413, "too_many_messages", "messages".into())
        );
        assert_eq!(
            field_of(decode_batch(br#"{"messages": []}"#, 1)),
            (400, "invalid_value", "messages".into())
        );
    }

    #[test]
    fn disconnects_decode_with_defaults_and_checked_codes() {
        let d = decode_disconnect(br#"{"user": "bob"}"#).unwrap();
        assert_eq!(d.who, DisconnectWho::User("bob".into()));
        assert_eq!((d.code, d.reason.as_str()), (1000, DEFAULT_CLOSE_REASON));
        let d = decode_disconnect(br#"{"session": "s1", "code": 4001, "reason": "kick"}"#).unwrap();
        assert_eq!((d.code, d.reason.as_str()), (4001, "kick"));
        assert_eq!(
            field_of(decode_disconnect(br#"{"user": "bob", "code": 1006}"#)),
            (400, "invalid_value", "code".into())
        );
        assert_eq!(
            field_of(decode_disconnect(br#"{"user": "bob", "code": 70000}"#)),
            (400, "invalid_value", "code".into())
        );
        assert_eq!(
            field_of(decode_disconnect(br#"{}"#)),
            (400, "missing_field", "user".into())
        );
    }

    proptest! {
        // Whatever the bytes, decoding answers (never panics) and every error is a 4xx.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for result in [
                decode_publish(&bytes).map(|_| ()),
                decode_batch(&bytes, 4).map(|_| ()),
                decode_disconnect(&bytes).map(|_| ()),
            ] {
                if let Err(e) = result {
                    prop_assert!((400..500).contains(&e.status));
                }
            }
        }

        // A well-formed publish survives the round trip through JSON unchanged.
        #[test]
        fn well_formed_publishes_round_trip(
            destination in "/[a-z0-9/._-]{0,40}",
            body in ".{0,64}",
            headers in proptest::collection::btree_map("x-[a-z]{1,8}", "[^\u{0}]{0,16}", 0..4),
            user in proptest::option::of("[a-zA-Z0-9@._-]{1,16}"),
        ) {
            let mut json = serde_json::json!({
                "destination": destination, "body": body, "headers": headers,
            });
            if let Some(user) = &user {
                json["user"] = serde_json::Value::String(user.clone());
            }
            let decoded = decode_publish(json.to_string().as_bytes()).unwrap();
            prop_assert_eq!(&decoded.destination, &destination);
            prop_assert_eq!(&decoded.body[..], body.as_bytes());
            let expected: Vec<(String, String)> = headers.into_iter().collect();
            prop_assert_eq!(decoded.headers, expected);
            let recipient = match user {
                Some(user) => Recipient::User(user),
                None => Recipient::Destination,
            };
            prop_assert_eq!(decoded.recipient, recipient);
        }

        // Any wrongly typed field is named in the error.
        #[test]
        fn wrong_types_are_named(field in prop::sample::select(vec![
            "destination", "user", "session", "body", "body_base64", "content_type",
            "idempotency_key", "headers",
        ]), number in any::<i64>()) {
            let mut json = serde_json::json!({"destination": "/t"});
            json[field] = serde_json::json!(number);
            let err = decode_publish(json.to_string().as_bytes()).unwrap_err();
            prop_assert_eq!(err.code, "invalid_type");
            prop_assert_eq!(err.field.as_deref(), Some(field));
        }
    }
}
