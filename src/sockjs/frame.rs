//! SockJS frames (`o`, `h`, `a[...]`, `c[code,"reason"]`) and the JSON rules both ways.
//!
//! Outbound strings are quoted by our own encoder, not serde_json: the protocol requires the
//! extra `\uXXXX` escapes of sockjs.md §4.1 (U+200C–U+200F, U+2028–U+202F, U+2060–U+206F,
//! U+FFF0–U+FFFF), which serde writes raw. Inbound payloads are parsed with serde_json, after
//! lone surrogate escapes (valid from JavaScript, rejected by serde) become U+FFFD.

use std::borrow::Cow;

use bytes::Bytes;
use serde::de;

use crate::session::OutMessage;

/// The open frame.
pub const OPEN: &[u8] = b"o";
/// The heartbeat frame.
pub const HEARTBEAT: &[u8] = b"h";

/// Whether a character must be `\u`-escaped beyond what JSON itself requires.
fn needs_extra_escape(c: char) -> bool {
    matches!(c as u32,
        0x200C..=0x200F | 0x2028..=0x202F | 0x2060..=0x206F | 0xFFF0..=0xFFFF)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_unicode_escape(out: &mut Vec<u8>, unit: u32) {
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((unit >> shift) & 0xF) as usize]);
    }
}

/// Append `s` as a JSON string literal (quotes included) with the SockJS escapes; when
/// `escape_lt` is set, `<` becomes `\u003c` too (htmlfile, so `</script>` cannot end the
/// script element).
pub fn quote_into(out: &mut Vec<u8>, s: &str, escape_lt: bool) {
    out.push(b'"');
    escape_into(out, s, escape_lt);
    out.push(b'"');
}

/// Append the escaped characters of `s` as in [`quote_into`], without the quotes. Escaping
/// is per character, so the escaping of a string is the escapings of its parts joined.
fn escape_into(out: &mut Vec<u8>, s: &str, escape_lt: bool) {
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let simple: Option<&[u8]> = match c {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            '\u{8}' => Some(b"\\b"),
            '\u{c}' => Some(b"\\f"),
            _ => None,
        };
        let escape = simple.is_some()
            || (c as u32) < 0x20
            || needs_extra_escape(c)
            || (escape_lt && c == '<');
        if !escape {
            continue;
        }
        out.extend_from_slice(&s.as_bytes()[start..i]);
        match simple {
            Some(seq) => out.extend_from_slice(seq),
            None => push_unicode_escape(out, c as u32),
        }
        start = i + c.len_utf8();
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
}

/// [`escape_into`] for every transport but htmlfile, as [`OutMessage::put_quoted`] takes it.
fn escape(s: &str, out: &mut Vec<u8>) {
    escape_into(out, s, false);
}

/// `s` as a SockJS JSON string literal.
pub fn quote(s: &str) -> Bytes {
    let mut out = Vec::with_capacity(s.len() + 2);
    quote_into(&mut out, s, false);
    Bytes::from(out)
}

/// The `a[...]` frame for a batch of messages, each quoted once (see
/// [`OutMessage::put_quoted`]).
pub fn array_frame<'a>(messages: impl IntoIterator<Item = &'a OutMessage>) -> Bytes {
    let messages: Vec<&OutMessage> = messages.into_iter().collect();
    // Escaping rarely grows a message much: reserve for the unescaped lengths.
    let mut out = Vec::with_capacity(3 + messages.iter().map(|m| m.len() + 3).sum::<usize>());
    out.extend_from_slice(b"a[");
    for (i, message) in messages.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        message.put_quoted(&mut out, escape);
    }
    out.push(b']');
    Bytes::from(out)
}

/// The `c[code,"reason"]` frame.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut out = Vec::with_capacity(reason.len() + 12);
    out.extend_from_slice(format!("c[{code},").as_bytes());
    quote_into(&mut out, reason, false);
    out.push(b']');
    Bytes::from(out)
}

/// Why an inbound payload was refused; the texts are the protocol's exact 500 bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Empty payload, or valid JSON of the wrong shape.
    #[error("Payload expected.")]
    PayloadExpected,
    /// Not JSON, or not UTF-8.
    #[error("Broken JSON encoding.")]
    BrokenJson,
    /// More than [`MAX_MESSAGES_PER_PAYLOAD`] elements.
    #[error("Too many messages in one payload.")]
    TooMany,
}

/// The most messages one payload (a send body or a WebSocket message) may carry. Decoding
/// stops there, so a 1 MiB body of tiny elements cannot turn into hundreds of thousands of
/// allocations.
pub const MAX_MESSAGES_PER_PAYLOAD: usize = 10_000;

/// Decode an xhr_send / jsonp_send body: a JSON array of messages.
pub fn decode_send_body(body: &[u8]) -> Result<Vec<String>, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::PayloadExpected);
    }
    match parse_payload(body)? {
        Payload::Messages(messages) => Ok(messages),
        Payload::Single(_) | Payload::Other => Err(DecodeError::PayloadExpected),
    }
}

/// Decode one SockJS WebSocket text message: an array of messages or a single string.
/// The empty message decodes to no messages.
pub fn decode_ws_message(text: &str) -> Result<Vec<String>, DecodeError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    match parse_payload(text.as_bytes())? {
        Payload::Messages(messages) => Ok(messages),
        Payload::Single(message) => Ok(vec![message]),
        Payload::Other => Err(DecodeError::BrokenJson),
    }
}

/// A decoded payload, before the transport decides what shapes it accepts.
enum Payload {
    /// A JSON array: its elements as message texts.
    Messages(Vec<String>),
    /// A JSON string.
    Single(String),
    /// Any other JSON value.
    Other,
}

const TOO_MANY: &str = "too many messages in one payload";

fn parse_payload(body: &[u8]) -> Result<Payload, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::BrokenJson)?;
    let text = replace_lone_surrogates(text);
    let mut de = serde_json::Deserializer::from_str(&text);
    let payload = de::Deserializer::deserialize_any(&mut de, PayloadVisitor).map_err(|e| {
        if e.to_string().starts_with(TOO_MANY) {
            DecodeError::TooMany
        } else {
            DecodeError::BrokenJson
        }
    })?;
    de.end().map_err(|_| DecodeError::BrokenJson)?;
    Ok(payload)
}

/// Builds a [`Payload`] element by element, stopping at [`MAX_MESSAGES_PER_PAYLOAD`].
struct PayloadVisitor;

impl<'de> de::Visitor<'de> for PayloadVisitor {
    type Value = Payload;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of messages or a string")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Payload, A::Error> {
        let mut messages = Vec::new();
        while let Some(raw) = seq.next_element::<&'de serde_json::value::RawValue>()? {
            if messages.len() == MAX_MESSAGES_PER_PAYLOAD {
                return Err(de::Error::custom(TOO_MANY));
            }
            messages.push(message_text(raw).map_err(de::Error::custom)?);
        }
        Ok(Payload::Messages(messages))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Payload, E> {
        Ok(Payload::Single(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Payload, E> {
        Ok(Payload::Single(v))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Payload, A::Error> {
        while map
            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Payload::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Payload, E> {
        Ok(Payload::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Payload, E> {
        Ok(Payload::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Payload, E> {
        Ok(Payload::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Payload, E> {
        Ok(Payload::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Payload, E> {
        Ok(Payload::Other)
    }
}

/// A message element as text: strings decoded, anything else as its compact JSON text
/// (whitespace outside strings removed; no tree is built, so nesting cannot amplify memory).
fn message_text(raw: &serde_json::value::RawValue) -> Result<String, serde_json::Error> {
    let json = raw.get();
    if json.starts_with('"') {
        return serde_json::from_str(json);
    }
    let mut compact = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            compact.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            compact.push(c);
        }
    }
    Ok(compact)
}

fn is_hex4(b: &[u8]) -> Option<u16> {
    if b.len() < 4 {
        return None;
    }
    let s = std::str::from_utf8(&b[..4]).ok()?;
    u16::from_str_radix(s, 16).ok()
}

/// Rewrite `\uD800`–`\uDFFF` escapes that are not part of a valid pair as `\ufffd`, so that
/// JavaScript-produced JSON with lone surrogates decodes (sockjs.md §4.2).
pub fn replace_lone_surrogates(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    if !b
        .windows(3)
        .any(|w| w[0] == b'\\' && w[1] == b'u' && (w[2] | 0x20) == b'd')
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 >= b.len() {
            i += 1;
            continue;
        }
        if b[i + 1] != b'u' {
            i += 2; // any other escape, including `\\`
            continue;
        }
        let Some(unit) = is_hex4(&b[i + 2..]) else {
            i += 2;
            continue;
        };
        let is_high = (0xD800..0xDC00).contains(&unit);
        let is_low = (0xDC00..0xE000).contains(&unit);
        if is_high {
            let next = &b[i + 6..];
            let paired = next.len() >= 6
                && next[0] == b'\\'
                && next[1] == b'u'
                && is_hex4(&next[2..]).is_some_and(|u| (0xDC00..0xE000).contains(&u));
            if paired {
                i += 12;
                continue;
            }
        }
        if is_high || is_low {
            out.push_str(&text[copied..i]);
            out.push_str("\\ufffd");
            i += 6;
            copied = i;
            continue;
        }
        i += 6;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> String {
        String::from_utf8(quote(s).to_vec()).unwrap()
    }

    #[test]
    fn escapes_the_44_extra_characters_in_lowercase() {
        let chars: String = (0x200C..=0x200F)
            .chain(0x2028..=0x202F)
            .chain(0x2060..=0x206F)
            .chain(0xFFF0..=0xFFFF)
            .filter_map(char::from_u32)
            .collect();
        assert_eq!(chars.chars().count(), 44);
        let expected = "\"\\u200c\\u200d\\u200e\\u200f\\u2028\\u2029\\u202a\\u202b\\u202c\\u202d\\u202e\\u202f\\u2060\\u2061\\u2062\\u2063\\u2064\\u2065\\u2066\\u2067\\u2068\\u2069\\u206a\\u206b\\u206c\\u206d\\u206e\\u206f\\ufff0\\ufff1\\ufff2\\ufff3\\ufff4\\ufff5\\ufff6\\ufff7\\ufff8\\ufff9\\ufffa\\ufffb\\ufffc\\ufffd\\ufffe\\uffff\"";
        assert_eq!(q(&chars), expected);
    }

    #[test]
    fn quotes_controls_and_leaves_slash_and_unicode_raw() {
        assert_eq!(
            q("a\"b\\c\n\u{1}/é\u{7f}"),
            "\"a\\\"b\\\\c\\n\\u0001/é\u{7f}\""
        );
    }

    #[test]
    fn htmlfile_quoting_escapes_less_than() {
        let mut out = Vec::new();
        quote_into(&mut out, "</script>", true);
        assert_eq!(out, b"\"\\u003c/script>\"");
    }

    #[test]
    fn frames_have_the_exact_wire_form() {
        let msgs = [OutMessage::text("a"), OutMessage::text("b\"")];
        assert_eq!(&array_frame(&msgs)[..], b"a[\"a\",\"b\\\"\"]");
        assert_eq!(&close_frame(3000, "Go away!")[..], b"c[3000,\"Go away!\"]");
    }

    #[test]
    fn send_body_errors_match_the_protocol() {
        assert_eq!(decode_send_body(b""), Err(DecodeError::PayloadExpected));
        assert_eq!(decode_send_body(b"[\"x"), Err(DecodeError::BrokenJson));
        assert_eq!(decode_send_body(b"null"), Err(DecodeError::PayloadExpected));
        assert_eq!(decode_send_body(b"\xff"), Err(DecodeError::BrokenJson));
        assert_eq!(decode_send_body(b"[]"), Ok(vec![]));
        assert_eq!(
            decode_send_body(b"[\"a\",1,{\"b\":null}]"),
            Ok(vec!["a".into(), "1".into(), "{\"b\":null}".into()])
        );
    }

    #[test]
    fn payloads_stop_decoding_at_the_message_limit() {
        let at_limit = format!("[{}0]", "0,".repeat(MAX_MESSAGES_PER_PAYLOAD - 1));
        assert_eq!(
            decode_send_body(at_limit.as_bytes()).map(|m| m.len()),
            Ok(MAX_MESSAGES_PER_PAYLOAD)
        );
        let over = format!("[{}0]", "0,".repeat(MAX_MESSAGES_PER_PAYLOAD));
        assert_eq!(decode_send_body(over.as_bytes()), Err(DecodeError::TooMany));
        assert_eq!(decode_ws_message(&over), Err(DecodeError::TooMany));
        assert_eq!(
            decode_send_body(b"[1] x"),
            Err(DecodeError::BrokenJson),
            "trailing bytes"
        );
    }

    #[test]
    fn non_string_elements_become_compact_json() {
        let body = br#"[ { "a b" : [ 1 , "\" x" ] } , null ]"#;
        assert_eq!(
            decode_send_body(body),
            Ok(vec![
                r#"{"a b":[1,"\" x"]}"#.to_string(),
                "null".to_string()
            ])
        );
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        assert_eq!(
            decode_send_body(br#"["\ud800"]"#),
            Ok(vec!["\u{fffd}".into()])
        );
        assert_eq!(
            decode_send_body(br#"["\udc00x"]"#),
            Ok(vec!["\u{fffd}x".into()])
        );
        assert_eq!(
            decode_send_body(br#"["\ud83d\ude00"]"#),
            Ok(vec!["😀".into()])
        );
        assert_eq!(
            decode_send_body(br#"["\\ud800"]"#),
            Ok(vec!["\\ud800".into()])
        );
        assert_eq!(
            decode_send_body(br#"["\uD800\uD800"]"#),
            Ok(vec!["\u{fffd}\u{fffd}".into()])
        );
    }

    #[test]
    fn websocket_messages_accept_arrays_and_strings() {
        assert_eq!(decode_ws_message(""), Ok(vec![]));
        assert_eq!(decode_ws_message("[]"), Ok(vec![]));
        assert_eq!(decode_ws_message("\"x\""), Ok(vec!["x".into()]));
        assert_eq!(decode_ws_message("[\"a"), Err(DecodeError::BrokenJson));
    }

    proptest! {
        #[test]
        fn quoting_round_trips_and_hides_the_extra_set(s in any::<String>()) {
            let quoted = q(&s);
            prop_assert!(!quoted.chars().any(needs_extra_escape));
            prop_assert!(!quoted.chars().any(|c| (c as u32) < 0x20));
            let back: String = serde_json::from_str(&quoted).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn a_head_and_shared_tail_frame_like_the_whole_text(
            head in any::<String>(),
            tail in any::<String>(),
            plain in any::<String>(),
        ) {
            let shared = crate::session::SharedTail::new(Bytes::from(tail.clone()));
            let parts = OutMessage::text_with_tail(Bytes::from(head.clone()), &shared).unwrap();
            let whole = OutMessage::text(format!("{head}{tail}"));
            let other = OutMessage::text(plain);
            prop_assert_eq!(array_frame([&parts, &other]), array_frame([&whole, &other]));
            // The second message with the same tail uses the cached escaping.
            let again = OutMessage::text_with_tail(Bytes::from(head), &shared).unwrap();
            prop_assert_eq!(array_frame([&again]), array_frame([&whole]));
        }

        #[test]
        fn decoding_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_send_body(&body);
        }

        #[test]
        fn escaped_utf16_input_decodes_back(s in any::<String>()) {
            let mut json = String::from("[\"");
            for unit in s.encode_utf16() {
                json.push_str(&format!("\\u{unit:04x}"));
            }
            json.push_str("\"]");
            prop_assert_eq!(decode_send_body(json.as_bytes()), Ok(vec![s]));
        }
    }
}
