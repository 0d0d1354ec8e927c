//! Value types every configuration section shares: the error type, the overflow strategy,
//! durations in seconds and listen addresses. A leaf: it imports no section, so each module
//! can own its section (`sockjs::config`, `stomp::config`, `auth`) and `config.rs` can
//! compose them without a circle.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema; the message names the key.
    #[error("invalid config: {0}")]
    Parse(String),
    /// A value parsed but is not acceptable.
    #[error("invalid config: `{key}`: {message}")]
    Invalid { key: String, message: String },
    /// Every problem found in one file, in file order where it is known.
    #[error("{}", problems_text(.0))]
    Problems(Vec<Problem>),
}

/// One problem of a config file: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The 1-based line of the file, when the problem has a place in it.
    pub line: Option<usize>,
    /// The key, as `section.key` or `service[0].key`; None for a TOML syntax error.
    pub key: Option<String>,
    /// What is wrong and, where it helps, what to write instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

fn problems_text(problems: &[Problem]) -> String {
    match problems {
        [one] => format!("invalid config: {one}"),
        many => {
            let mut text = format!("invalid config: {} problems", many.len());
            for p in many {
                text.push_str("\n  ");
                text.push_str(&p.to_string());
            }
            text
        }
    }
}

impl ConfigError {
    /// The problems this error stands for, each on its own.
    pub fn into_problems(self) -> Vec<Problem> {
        match self {
            ConfigError::Problems(problems) => problems,
            ConfigError::Invalid { key, message } => vec![Problem {
                line: None,
                key: Some(key),
                message,
            }],
            other => vec![Problem {
                line: None,
                key: None,
                message: other.to_string(),
            }],
        }
    }
}

/// Problems gathered while checking a configuration, so that a file's every problem is
/// reported at once rather than one per run.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Record that `key` holds an unacceptable value.
    pub fn invalid(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(Problem {
            line: None,
            key: Some(key.to_string()),
            message: message.into(),
        });
    }

    /// Record every problem of `error`.
    pub fn add(&mut self, error: ConfigError) {
        self.0.extend(error.into_problems());
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The recorded problems.
    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }

    /// Ok when nothing was recorded; otherwise every problem.
    pub fn into_result(self) -> Result<(), ConfigError> {
        match self.0.is_empty() {
            true => Ok(()),
            false => Err(ConfigError::Problems(self.0)),
        }
    }
}

/// What a session does when its outbound queue overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowStrategy {
    /// Close the session with 4500 "Send limit exceeded".
    Terminate,
    /// Discard the oldest queued messages the application marked droppable (STOMP MESSAGE
    /// frames), or refuse the new one when that cannot make room.
    Drop,
}

/// The longest duration accepted: ten years, far beyond any sensible timeout and far from
/// overflowing a deadline.
const MAX_SECONDS: f64 = 315_360_000.0;

/// Reads a number of seconds, integer or fractional, from 0 to ten years.
struct SecondsVisitor;

impl Visitor<'_> for SecondsVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number of seconds, such as 10 or 2.5")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        self.visit_f64(v as f64)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        self.visit_f64(v as f64)
    }

    fn visit_f64<E: de::Error>(self, secs: f64) -> Result<Duration, E> {
        if secs.is_finite() && (0.0..=MAX_SECONDS).contains(&secs) {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(E::custom(format!(
                "{secs} is not a number of seconds from 0 to 315360000 (ten years)"
            )))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        Err(E::custom(format!(
            "expected a number of seconds such as 10 or 2.5, found the string {v:?} \
             (write the number without quotes)"
        )))
    }
}

/// Accepts a number of seconds, integer or fractional (`deserialize_with`).
pub fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(SecondsVisitor)
}

/// [`seconds`] for an optional key.
pub fn optional_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    seconds(d).map(Some)
}

/// Writes a duration the way [`seconds`] reads it: whole seconds as an integer.
pub fn write_seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    if d.subsec_nanos() == 0 {
        s.serialize_u64(d.as_secs())
    } else {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// [`write_seconds`] for an optional key (only called when it is set).
pub fn write_optional_seconds<S: Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => write_seconds(d, s),
        None => s.serialize_none(),
    }
}

/// Writes a secret that always has a value as `"<redacted>"`.
pub fn write_redacted_str<S: Serializer>(_secret: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<redacted>")
}

/// Writes a secret as `"<redacted>"`, so printing a configuration never discloses it.
pub fn write_redacted<S: Serializer>(secret: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

/// Parse a listen address, explaining what is expected when `text` is not one: an IP
/// address and a port. Host names are refused rather than resolved: `localhost` may mean
/// 127.0.0.1 or ::1, and which one a listener binds should not depend on a resolver.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let hint = "write an IP address and a port, such as 127.0.0.1:8080 (this machine only), \
                0.0.0.0:8080 (every IPv4 interface) or [::1]:8080";
    let reason = match text.rsplit_once(':') {
        None => "has no port".to_string(),
        Some((_, port)) if port.parse::<u16>().is_err() => {
            format!("has no valid port ({port:?} is not 0 to 65535)")
        }
        Some((host, _)) if host.parse::<std::net::Ipv6Addr>().is_ok() => {
            "puts an IPv6 address without brackets".to_string()
        }
        Some((host, _)) => {
            format!("names the host {host:?}, not an IP address (host names are not resolved)")
        }
    };
    Err(format!("{text:?} {reason}; {hint}"))
}

/// Reads a listen address with [`parse_listen_addr`]'s explanations (`deserialize_with`).
pub fn listen_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    parse_listen_addr(&text).map_err(de::Error::custom)
}

/// [`listen_addr`] for an optional key.
pub fn optional_listen_addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    listen_addr(d).map(Some)
}

/// The keys a configuration struct accepts, as its `Deserialize` derive declares them: the
/// same list serde checks `deny_unknown_fields` against, so it cannot drift from the code.
/// Empty for a type that does not deserialize from a table.
pub fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    /// A deserializer that only records the field list a derived struct asks for.
    struct Fields<'a>(&'a mut &'static [&'static str]);

    #[derive(Debug)]
    struct Recorded;

    impl fmt::Display for Recorded {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("field names recorded")
        }
    }

    impl std::error::Error for Recorded {}

    impl de::Error for Recorded {
        fn custom<T: fmt::Display>(_: T) -> Self {
            Recorded
        }
    }

    impl<'de> Deserializer<'de> for Fields<'_> {
        type Error = Recorded;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Recorded> {
            Err(Recorded)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Recorded> {
            *self.0 = fields;
            Err(Recorded)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

/// The accepted name closest to a misspelt one, when it is close enough to be a likely
/// typo (at most a third of its letters differ).
pub fn closest<'a>(wrong: &str, accepted: &[&'a str]) -> Option<&'a str> {
    let within = (wrong.chars().count() / 3).max(1);
    accepted
        .iter()
        .map(|name| (edit_distance(wrong, name), *name))
        .filter(|(d, _)| *d <= within)
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

/// Levenshtein distance between two short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Timed {
        #[serde(deserialize_with = "seconds")]
        delay: Duration,
    }

    #[test]
    fn seconds_explain_a_string() {
        let err = toml::from_str::<Timed>("delay = \"ten\"").unwrap_err();
        assert!(
            err.message().contains("number of seconds") && err.message().contains("\"ten\""),
            "{err}"
        );
        let ok: Timed = toml::from_str("delay = 2.5").unwrap();
        assert_eq!(ok.delay, Duration::from_millis(2500));
        assert!(toml::from_str::<Timed>("delay = -1").is_err());
    }

    #[test]
    fn listen_addresses_say_what_is_expected() {
        assert!(parse_listen_addr("127.0.0.1:8080").is_ok());
        assert!(parse_listen_addr("[::1]:0").is_ok());
        let err = parse_listen_addr("localhost:8080").unwrap_err();
        assert!(
            err.contains("\"localhost\"") && err.contains("127.0.0.1:8080"),
            "{err}"
        );
        assert!(parse_listen_addr("8080").unwrap_err().contains("no port"));
        assert!(
            parse_listen_addr("1.2.3.4:99999")
                .unwrap_err()
                .contains("port")
        );
    }

    #[test]
    fn field_names_come_from_the_derive() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Two {
            first: u8,
            #[serde(rename = "second_key")]
            second: u8,
        }
        assert_eq!(field_names::<Two>(), ["first", "second_key"]);
        assert!(field_names::<u8>().is_empty());
    }

    #[test]
    fn close_names_are_suggested() {
        let accepted = ["response_limit", "heartbeat_delay", "prefix"];
        assert_eq!(closest("respons_limit", &accepted), Some("response_limit"));
        assert_eq!(closest("heartbeat", &accepted), None);
        assert_eq!(closest("prefx", &accepted), Some("prefix"));
    }
}
