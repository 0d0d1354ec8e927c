//! The JSON contract between the gateway and an HTTP backend: what a SEND or SUBSCRIBE becomes,
//! what the backend may answer, and where each answered message goes.
//!
//! Request (POST, `content-type: application/json`):
//!
//! ```json
//! {"type": "send", "session": "k3j2...", "user": "alice", "destination": "/app/chat",
//!  "path": "/chat", "headers": {"content-type": "text/plain"}, "body": "hello"}
//! ```
//!
//! A body that is not UTF-8 is sent as base64 with `"base64": true`. A SUBSCRIBE has
//! `"type": "subscribe"`, `"subscription": "<id>"` and no body. Headers are the frame's, first
//! occurrence only, without `destination`, `receipt`, `content-length` and `transaction`.
//!
//! Answer: `204` (or a 2xx with an empty body) means "taken, nothing to send"; `200` carries
//! `{"messages": [...]}`, each message `{"destination"?, "user"?, "reply"?, "body",
//! "base64"?, "headers"?}`. Unknown fields are errors, so a typo is caught at once.
//! Where a message goes (Spring's defaults, spec §7.2), for a frame to `/app/x`:
//!
//! | message | SEND | SUBSCRIBE |
//! |---|---|---|
//! | no `destination`, `user` or `reply` | `/topic/x` (`@SendTo`) | that subscription, once (`@SubscribeMapping`) |
//! | `"destination": "/topic/y"` | published there | published there |
//! | `"destination": "/user/bob/queue/y"` | bob's sessions | bob's sessions |
//! | `"user": true` | the sender's sessions, `/user/queue/x` (`@SendToUser`) | same |
//! | `"user": "bob"` | bob's sessions, `/user/queue/x` (`convertAndSendToUser`) | same |
//! | `"reply": true` | the sending session only, `/user/queue/x` (`@SendToUser(broadcast=false)`) | that subscription |
//!
//! With `user` or `reply`, a `destination` replaces `/queue/x` (e.g. `"/queue/errors"`). A
//! body that is a JSON value other than a string is sent as its JSON text, with
//! `content-type: application/json` unless the message sets one. An anonymous sender has no
//! user sessions, so `"user": true` reaches its own session (as Spring does with the session id).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

use crate::stomp::AppFrame;
use crate::stomp::destination::{Route, Router, split_user_destination};

/// Frame headers a backend request leaves out: they are fields of their own, or the
/// gateway's business.
const OMITTED_HEADERS: &[&str] = &["destination", "receipt", "content-length", "transaction"];

/// A frame's headers as a JSON object: first occurrence of each name, in frame order.
pub(crate) struct Headers<'a> {
    /// The frame's headers.
    pub(crate) headers: &'a [(String, String)],
    /// Names left out.
    pub(crate) omit: &'a [&'a str],
}

impl serde::Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (i, (name, value)) in self.headers.iter().enumerate() {
            let first = !self.headers[..i].iter().any(|(n, _)| n == name);
            if first && !self.omit.contains(&name.as_str()) {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}

/// The JSON body of a SEND or SUBSCRIBE request.
#[derive(serde::Serialize)]
struct FrameRequest<'a> {
    /// `send` or `subscribe`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The STOMP session id.
    session: &'a str,
    /// The principal, or null.
    user: Option<&'a str>,
    /// The full destination (`/app/x`).
    destination: &'a str,
    /// The destination without its application prefix (`/x`): what Spring maps on.
    path: &'a str,
    /// The subscription id (SUBSCRIBE only).
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription: Option<&'a str>,
    /// The frame's headers.
    headers: Headers<'a>,
    /// The body (SEND only): text, or base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<std::borrow::Cow<'a, str>>,
    /// Whether `body` is base64.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    base64: bool,
}

/// What a forwarded frame looks like to the wire format.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameInfo<'a> {
    /// SEND or SUBSCRIBE.
    pub(crate) frame: &'a AppFrame,
    /// The STOMP session id.
    pub(crate) session: &'a str,
    /// The principal.
    pub(crate) user: Option<&'a str>,
    /// The full destination.
    pub(crate) destination: &'a str,
    /// The destination without its application prefix.
    pub(crate) stripped: &'a str,
}

/// The JSON request for a frame.
pub(crate) fn frame_request(
    info: FrameInfo<'_>,
    headers: &[(String, String)],
    body: &[u8],
) -> Bytes {
    let (kind, subscription) = match info.frame {
        AppFrame::Send => ("send", None),
        AppFrame::Subscribe { subscription } => ("subscribe", Some(subscription.as_str())),
    };
    let (body, base64) = match (info.frame, std::str::from_utf8(body)) {
        (AppFrame::Subscribe { .. }, _) => (None, false),
        (AppFrame::Send, Ok(text)) => (Some(text.into()), false),
        (AppFrame::Send, Err(_)) => (
            Some(
                base64::engine::general_purpose::STANDARD
                    .encode(body)
                    .into(),
            ),
            true,
        ),
    };
    let request = FrameRequest {
        kind,
        session: info.session,
        user: info.user,
        destination: info.destination,
        path: info.stripped,
        subscription,
        headers: Headers {
            headers,
            omit: OMITTED_HEADERS,
        },
        body,
        base64,
    };
    Bytes::from(serde_json::to_vec(&request).unwrap_or_default())
}

/// A 200 answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    /// The messages to send, in order.
    #[serde(default)]
    messages: Vec<AnswerMessage>,
}

/// One answered message, before it is checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerMessage {
    /// An explicit destination.
    #[serde(default)]
    destination: Option<String>,
    /// `true`, `false` or a user name.
    #[serde(default)]
    user: Option<Value>,
    /// To the requesting session (or subscription) only.
    #[serde(default)]
    reply: bool,
    /// The body: a string, or any JSON value (sent as its JSON text, exactly as written).
    body: Box<serde_json::value::RawValue>,
    /// Whether `body` is base64.
    #[serde(default)]
    base64: bool,
    /// MESSAGE headers.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// Where one answered message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// A broker destination.
    Publish(String),
    /// Every session of a user: `/user/{user}{destination}` (spec §7.5).
    User {
        /// The user name.
        user: String,
        /// The user-relative destination, e.g. `/queue/x`.
        destination: String,
    },
    /// The requesting session's user destination, e.g. `/queue/x`.
    Session(String),
    /// The SUBSCRIBE's subscription, once.
    Subscription,
}

/// One answered message, checked, with where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    /// Where.
    pub(crate) delivery: Delivery,
    /// MESSAGE headers.
    pub(crate) headers: Vec<(String, String)>,
    /// The body.
    pub(crate) body: Bytes,
}

/// The rules the planning follows, from the backend's configuration.
#[derive(Debug)]
pub(crate) struct Routing {
    /// The STOMP prefix table.
    pub(crate) router: Router,
    /// `@SendTo`'s default prefix (`/topic`).
    pub(crate) default_destination_prefix: String,
    /// `@SendToUser`'s default prefix (`/queue`).
    pub(crate) default_user_destination_prefix: String,
}

/// Why an answer is not the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadAnswer(pub(crate) String);

impl fmt::Display for BadAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parse a 2xx answer and plan every message; nothing is sent unless all are valid.
pub(crate) fn plan(
    body: &[u8],
    info: FrameInfo<'_>,
    routing: &Routing,
) -> Result<Vec<Planned>, BadAnswer> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let answer: AnswerBody = serde_json::from_slice(body)
        .map_err(|e| BadAnswer(format!("the answer is not {{\"messages\": [...]}}: {e}")))?;
    let mut planned = Vec::with_capacity(answer.messages.len());
    for (i, message) in answer.messages.into_iter().enumerate() {
        let at = |text: String| BadAnswer(format!("messages[{i}]: {text}"));
        let delivery = deliver_to(&message, info, routing).map_err(at)?;
        if delivery == Delivery::Subscription
            && planned
                .iter()
                .any(|p: &Planned| p.delivery == Delivery::Subscription)
        {
            return Err(at(
                "a SUBSCRIBE is answered with at most one message for its subscription".into(),
            ));
        }
        let (headers, body) = content(message).map_err(at)?;
        planned.push(Planned {
            delivery,
            headers,
            body,
        });
    }
    Ok(planned)
}

/// Where a message goes, per the table in the module comment.
fn deliver_to(
    message: &AnswerMessage,
    info: FrameInfo<'_>,
    routing: &Routing,
) -> Result<Delivery, String> {
    let user = match &message.user {
        None | Some(Value::Bool(false)) | Some(Value::Null) => None,
        Some(Value::Bool(true)) => Some(info.user),
        Some(Value::String(name)) if !name.is_empty() && !name.contains("%2F") => {
            Some(Some(name.as_str()))
        }
        Some(other) => {
            return Err(format!(
                "user must be true, false or a user name (without %2F), not {other}"
            ));
        }
    };
    if message.reply && user.is_some() {
        return Err(
            "reply (this session only) and user (all of a user's sessions) exclude each other"
                .into(),
        );
    }
    let subscribe = matches!(info.frame, AppFrame::Subscribe { .. });
    let Some(destination) = &message.destination else {
        let user_destination = || {
            format!(
                "{}{}",
                routing
                    .default_user_destination_prefix
                    .trim_end_matches('/'),
                info.stripped
            )
        };
        return Ok(match user {
            Some(Some(name)) => Delivery::User {
                user: name.to_owned(),
                destination: user_destination(),
            },
            Some(None) => Delivery::Session(user_destination()),
            None if subscribe => Delivery::Subscription,
            None if message.reply => Delivery::Session(user_destination()),
            None => Delivery::Publish(format!(
                "{}{}",
                routing.default_destination_prefix.trim_end_matches('/'),
                info.stripped
            )),
        });
    };
    let route = routing.router.route(destination);
    if user.is_some() || message.reply {
        if route != Route::Broker {
            return Err(format!(
                "with user or reply, destination is the user-relative part of a broker \
                 destination (e.g. \"/queue/x\"), not {destination:?}"
            ));
        }
        return Ok(match user {
            Some(Some(name)) => Delivery::User {
                user: name.to_owned(),
                destination: destination.clone(),
            },
            _ => Delivery::Session(destination.clone()),
        });
    }
    match route {
        Route::Broker => Ok(Delivery::Publish(destination.clone())),
        Route::User { rest } => {
            let (user, actual) = split_user_destination(&rest).map_err(|e| e.to_string())?;
            Ok(Delivery::User {
                user,
                destination: actual,
            })
        }
        Route::Application { .. } => Err(format!(
            "{destination:?} is an application destination; answers go to broker or user \
             destinations"
        )),
        Route::Unroutable => Err(format!(
            "{destination:?} is not served: it is under no [stomp] broker_prefixes or user_prefix"
        )),
    }
}

/// A message's headers and body bytes.
fn content(message: AnswerMessage) -> Result<(Vec<(String, String)>, Bytes), String> {
    for (name, value) in &message.headers {
        if name.is_empty() || name.contains([':', '\n', '\r', '\0']) {
            return Err(format!("header name {name:?} is not a STOMP header name"));
        }
        if value.contains('\0') {
            return Err(format!("header {name:?} contains NUL"));
        }
    }
    let mut headers: Vec<(String, String)> = message.headers.into_iter().collect();
    let raw = message.body.get();
    let text = raw
        .starts_with('"')
        .then(|| serde_json::from_str::<String>(raw))
        .transpose()
        .map_err(|e| e.to_string())?;
    let body = match (text, message.base64) {
        (Some(text), false) => Bytes::from(text),
        (Some(encoded), true) => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| format!("body is not valid base64: {e}"))?,
        ),
        (None, true) => return Err("with base64, body must be a string".into()),
        (None, false) => {
            if !headers.iter().any(|(n, _)| n == "content-type") {
                headers.push(("content-type".into(), "application/json".into()));
            }
            Bytes::copy_from_slice(raw.as_bytes())
        }
    };
    Ok((headers, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stomp::StompConfig;

    fn routing() -> Routing {
        Routing {
            router: Router::new(&StompConfig::default()),
            default_destination_prefix: "/topic".into(),
            default_user_destination_prefix: "/queue".into(),
        }
    }

    const SEND: AppFrame = AppFrame::Send;

    fn info<'a>(frame: &'a AppFrame, user: Option<&'a str>) -> FrameInfo<'a> {
        FrameInfo {
            frame,
            session: "s1",
            user,
            destination: "/app/chat",
            stripped: "/chat",
        }
    }

    fn deliveries(answer: &str, frame: &AppFrame, user: Option<&str>) -> Vec<Delivery> {
        plan(answer.as_bytes(), info(frame, user), &routing())
            .unwrap()
            .into_iter()
            .map(|p| p.delivery)
            .collect()
    }

    #[test]
    fn requests_carry_the_contract_fields() {
        let headers = vec![
            ("destination".to_string(), "/app/chat".to_string()),
            ("receipt".into(), "r1".into()),
            ("content-type".into(), "text/plain".into()),
            ("x".into(), "1".into()),
            ("x".into(), "2".into()),
        ];
        let json: Value =
            serde_json::from_slice(&frame_request(info(&SEND, Some("alice")), &headers, b"hi"))
                .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "send", "session": "s1", "user": "alice",
                "destination": "/app/chat", "path": "/chat",
                "headers": {"content-type": "text/plain", "x": "1"}, "body": "hi"})
        );
        let json: Value =
            serde_json::from_slice(&frame_request(info(&SEND, None), &[], &[0xff, 0])).unwrap();
        assert_eq!(json["body"], "/wA=");
        assert_eq!(json["base64"], true);
        assert_eq!(json["user"], Value::Null);
        let subscribe = AppFrame::Subscribe {
            subscription: "sub-0".into(),
        };
        let json: Value =
            serde_json::from_slice(&frame_request(info(&subscribe, None), &[], b"")).unwrap();
        assert_eq!(json["type"], "subscribe");
        assert_eq!(json["subscription"], "sub-0");
        assert!(json.get("body").is_none());
    }

    #[test]
    fn spring_defaults_decide_where_answers_go() {
        let user = |u: &str, d: &str| Delivery::User {
            user: u.into(),
            destination: d.into(),
        };
        let subscribe = AppFrame::Subscribe {
            subscription: "s".into(),
        };
        let cases: Vec<(&str, &AppFrame, Option<&str>, Delivery)> = vec![
            (
                r#"{"body": "x"}"#,
                &SEND,
                Some("alice"),
                Delivery::Publish("/topic/chat".into()),
            ),
            (
                r#"{"body": "x", "destination": "/queue/q"}"#,
                &SEND,
                None,
                Delivery::Publish("/queue/q".into()),
            ),
            (
                r#"{"body": "x", "destination": "/user/bob/queue/q"}"#,
                &SEND,
                None,
                user("bob", "/queue/q"),
            ),
            (
                r#"{"body": "x", "user": true}"#,
                &SEND,
                Some("alice"),
                user("alice", "/queue/chat"),
            ),
            (
                r#"{"body": "x", "user": "alice"}"#,
                &SEND,
                Some("alice"),
                user("alice", "/queue/chat"),
            ),
            (
                r#"{"body": "x", "user": "bob", "destination": "/queue/q"}"#,
                &SEND,
                None,
                user("bob", "/queue/q"),
            ),
            (
                r#"{"body": "x", "user": true}"#,
                &SEND,
                None,
                Delivery::Session("/queue/chat".into()),
            ),
            (
                r#"{"body": "x", "reply": true}"#,
                &SEND,
                Some("alice"),
                Delivery::Session("/queue/chat".into()),
            ),
            (
                r#"{"body": "x", "reply": true, "destination": "/queue/errors"}"#,
                &SEND,
                Some("a"),
                Delivery::Session("/queue/errors".into()),
            ),
            (r#"{"body": "x"}"#, &subscribe, None, Delivery::Subscription),
            (
                r#"{"body": "x", "reply": true}"#,
                &subscribe,
                None,
                Delivery::Subscription,
            ),
            (
                r#"{"body": "x", "destination": "/topic/t"}"#,
                &subscribe,
                None,
                Delivery::Publish("/topic/t".into()),
            ),
            (
                r#"{"body": "x", "user": true}"#,
                &subscribe,
                Some("alice"),
                user("alice", "/queue/chat"),
            ),
        ];
        for (message, frame, sender, expected) in cases {
            let answer = format!(r#"{{"messages": [{message}]}}"#);
            assert_eq!(deliveries(&answer, frame, sender), [expected], "{message}");
        }
        assert!(
            deliveries("", &SEND, None).is_empty(),
            "an empty 200 is a 204"
        );
        assert!(deliveries(r#"{"messages": []}"#, &SEND, None).is_empty());
    }

    #[test]
    fn bodies_are_text_base64_or_json() {
        let planned = plan(
            br#"{"messages": [{"body": "t"}, {"body": "AAE=", "base64": true},
                {"body": {"z": 1, "a": 2}}, {"body": [1], "headers": {"content-type": "x/y", "k": "v"}}]}"#,
            info(&SEND, None),
            &routing(),
        )
        .unwrap();
        assert_eq!(&planned[0].body[..], b"t");
        assert!(planned[0].headers.is_empty());
        assert_eq!(&planned[1].body[..], &[0, 1]);
        assert_eq!(
            &planned[2].body[..],
            br#"{"z": 1, "a": 2}"#,
            "as the backend wrote it"
        );
        assert_eq!(
            planned[2].headers,
            [("content-type".into(), "application/json".into())]
        );
        assert_eq!(
            planned[3].headers,
            [
                ("content-type".to_string(), "x/y".to_string()),
                ("k".into(), "v".into())
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_answers_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = plan(&body, info(&SEND, Some("a")), &routing());
        }

        #[test]
        fn answers_built_from_contract_fields_plan_or_say_why(
            destination in proptest::option::of("(/topic|/queue|/user/bob/queue|/app|/x)/[a-z]{0,3}"),
            user in proptest::option::of(proptest::prop_oneof![
                proptest::strategy::Just("true".to_string()),
                proptest::strategy::Just("false".to_string()),
                "\"[a-z%2F]{0,4}\"",
            ]),
            reply in proptest::prelude::any::<bool>(),
            base64 in proptest::prelude::any::<bool>(),
            body in proptest::prop_oneof!["\"[A-Za-z0-9+/=%]{0,8}\"", "\\{\"k\": [1-9][0-9]{0,2}\\}"],
        ) {
            let mut fields = vec![format!("\"body\": {body}")];
            if let Some(d) = destination { fields.push(format!("\"destination\": \"{d}\"")); }
            if let Some(u) = user { fields.push(format!("\"user\": {u}")); }
            if reply { fields.push("\"reply\": true".into()); }
            if base64 { fields.push("\"base64\": true".into()); }
            let answer = format!("{{\"messages\": [{{{}}}]}}", fields.join(", "));
            match plan(answer.as_bytes(), info(&SEND, Some("alice")), &routing()) {
                Ok(planned) => proptest::prop_assert_eq!(planned.len(), 1),
                Err(e) => proptest::prop_assert!(e.0.starts_with("messages[0]: "), "{}", e),
            }
        }
    }

    #[test]
    fn answers_that_break_the_contract_say_where() {
        let subscribe = AppFrame::Subscribe {
            subscription: "s".into(),
        };
        let cases: Vec<(&str, &AppFrame, &str)> = vec![
            ("not json", &SEND, "is not {\"messages\""),
            (r#"{"mesages": []}"#, &SEND, "unknown field `mesages`"),
            (
                r#"{"messages": [{"body": "x", "destnation": "/topic/a"}]}"#,
                &SEND,
                "unknown field `destnation`",
            ),
            (
                r#"{"messages": [{"destination": "/topic/a"}]}"#,
                &SEND,
                "missing field `body`",
            ),
            (
                r#"{"messages": [{"body": "x"}, {"body": "x", "destination": "/app/loop"}]}"#,
                &SEND,
                "messages[1]: \"/app/loop\" is an application destination",
            ),
            (
                r#"{"messages": [{"body": "x", "destination": "/nowhere"}]}"#,
                &SEND,
                "is not served",
            ),
            (
                r#"{"messages": [{"body": "x", "user": 7}]}"#,
                &SEND,
                "user must be",
            ),
            (
                r#"{"messages": [{"body": "x", "user": true, "reply": true}]}"#,
                &SEND,
                "exclude each other",
            ),
            (
                r#"{"messages": [{"body": "x", "user": true, "destination": "/user/b/queue/x"}]}"#,
                &SEND,
                "user-relative",
            ),
            (
                r#"{"messages": [{"body": "%%", "base64": true}]}"#,
                &SEND,
                "not valid base64",
            ),
            (
                r#"{"messages": [{"body": 1, "base64": true}]}"#,
                &SEND,
                "must be a string",
            ),
            (
                r#"{"messages": [{"body": "x", "headers": {"a:b": "v"}}]}"#,
                &SEND,
                "not a STOMP header name",
            ),
            (
                r#"{"messages": [{"body": "x", "headers": {"a": 1}}]}"#,
                &SEND,
                "invalid type",
            ),
            (
                r#"{"messages": [{"body": "a"}, {"body": "b"}]}"#,
                &subscribe,
                "messages[1]: a SUBSCRIBE is answered with at most one",
            ),
        ];
        for (answer, frame, needle) in cases {
            let err = plan(answer.as_bytes(), info(frame, Some("alice")), &routing()).unwrap_err();
            assert!(err.0.contains(needle), "{answer}: {err}");
        }
    }
}
