//! STOMP frames: the wire type, an incremental parser and an encoder.
//!
//! The parser is separate from I/O (mini-redis style): carriers push whatever bytes they
//! received with [`FrameParser::push`], and the connection pulls complete frames with
//! [`FrameParser::next_frame`], one at a time. Pulling one frame at a time matters: the
//! negotiated version (which decides how header escapes are decoded) is only known after the
//! CONNECT frame has been *processed*, and the frames behind it in the same read must be decoded
//! with that version. The caller sets it with [`FrameParser::set_version`] between pulls.
//!
//! The parser keeps its progress inside a frame (the command and headers already decoded, how
//! far the buffer was searched), so a frame delivered in 7-byte pieces costs linear time, and
//! it enforces [`FrameLimits`] while the frame is still incomplete, so a frame that never ends
//! cannot grow memory past the limit.

use std::borrow::Cow;
use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A STOMP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0: no header escapes, no NACK, no heart-beats.
    V1_0,
    /// STOMP 1.1: `\n`, `\c` and `\\` escapes; heart-beats; NACK.
    V1_1,
    /// STOMP 1.2: adds the `\r` escape and the `id`-based ACK.
    V1_2,
}

impl Version {
    /// Every version we speak, lowest first.
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// The version as written in `accept-version` and `version` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parse one `accept-version` item.
    pub fn parse(s: &str) -> Option<Version> {
        match s {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }

    /// A dense index, for per-version caches.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A STOMP command, client or server. Commands are case-sensitive on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Connect,
    Stomp,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    Connected,
    Message,
    Receipt,
    Error,
}

impl Command {
    /// Every command, in a fixed order (used to index per-command counters).
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Connected,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    /// The command as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Connected => "CONNECTED",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Recognise a command line exactly (case-sensitive).
    pub fn from_bytes(line: &[u8]) -> Option<Command> {
        Command::ALL
            .into_iter()
            .find(|c| c.as_str().as_bytes() == line)
    }

    /// A dense index, for per-command counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Only SEND, MESSAGE and ERROR may carry a body (spec §2.5).
    pub fn may_have_body(self) -> bool {
        matches!(self, Command::Send | Command::Message | Command::Error)
    }

    /// CONNECT, STOMP and CONNECTED are never escaped, in any version (spec §2.4).
    pub fn uses_escapes(self) -> bool {
        !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One STOMP frame. Header names and values are decoded (unescaped); repeated headers were
/// reduced to their first occurrence by the parser, and the builder keeps that rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command.
    pub command: Command,
    /// Headers in wire order, each name at most once.
    pub headers: Vec<(String, String)>,
    /// The body octets.
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and no body.
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Add a header unless one of that name is present (first occurrence wins).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Frame {
        self.add_header(name, value);
        self
    }

    /// Add a header unless one of that name is present (first occurrence wins).
    pub fn add_header(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        if self.get(&name).is_none() {
            self.headers.push((name, value.into()));
        }
    }

    /// Set the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Frame {
        self.body = body.into();
        self
    }

    /// The value of a header, by exact name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Encode for a session of `version`. See [`Frame::encode_into`].
    pub fn encode(&self, version: Version) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len_hint());
        self.encode_into(version, &mut buf);
        buf.freeze()
    }

    /// Encode for a session of `version`, appending to `buf`; returns how many headers had
    /// to be dropped because `version` cannot represent them (spec §2.4).
    ///
    /// Layout (spec §2.6): command, escaped headers, a recomputed `content-length` on MESSAGE
    /// and on any body-carrying frame with a non-empty body, a blank line, the body, NUL. Any
    /// `content-length` among `headers` is ignored in favour of the recomputed one.
    pub fn encode_into(&self, version: Version, buf: &mut BytesMut) -> usize {
        buf.put_slice(self.command.as_str().as_bytes());
        buf.put_u8(b'\n');
        let dropped = self.encode_headers_into(version, buf);
        if self.needs_content_length() {
            put_content_length(buf, self.body.len());
        }
        buf.put_u8(b'\n');
        buf.put_slice(&self.body);
        buf.put_u8(0);
        dropped
    }

    /// Encode only the header lines (no command, no content-length, no blank line).
    pub(crate) fn encode_headers_into(&self, version: Version, buf: &mut BytesMut) -> usize {
        let escaping = Escaping::for_frame(self.command, version);
        self.headers
            .iter()
            .filter(|(name, _)| name != "content-length")
            .filter(|(name, value)| !write_header(buf, name, value, escaping))
            .count()
    }

    fn needs_content_length(&self) -> bool {
        self.command == Command::Message || (self.command.may_have_body() && !self.body.is_empty())
    }

    fn encoded_len_hint(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 2)
            .sum();
        self.command.as_str().len() + headers + self.body.len() + 32
    }
}

/// Append `content-length:N\n`.
pub(crate) fn put_content_length(buf: &mut BytesMut, len: usize) {
    buf.put_slice(b"content-length:");
    buf.put_slice(len.to_string().as_bytes());
    buf.put_u8(b'\n');
}

/// How header names and values are written for one frame on one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escaping {
    /// Written raw; a name or value that cannot be written raw is dropped (1.0, CONNECTED).
    Raw,
    /// `\n`, `\c`, `\\` (1.1; CR is written raw).
    V1_1,
    /// `\r`, `\n`, `\c`, `\\` (1.2).
    V1_2,
}

impl Escaping {
    /// The escaping rule for `command` on a session of `version`.
    pub fn for_frame(command: Command, version: Version) -> Escaping {
        if !command.uses_escapes() {
            return Escaping::Raw;
        }
        match version {
            Version::V1_0 => Escaping::Raw,
            Version::V1_1 => Escaping::V1_1,
            Version::V1_2 => Escaping::V1_2,
        }
    }
}

/// Write `name:value\n` with `escaping`; returns false (writing nothing) when the header cannot
/// be represented: an empty name, or raw output containing CR, LF, or a `:` in the name.
pub fn write_header(buf: &mut BytesMut, name: &str, value: &str, escaping: Escaping) -> bool {
    if name.is_empty() {
        return false;
    }
    if escaping == Escaping::Raw {
        let bad_name = name.contains([':', '\r', '\n']);
        if bad_name || value.contains(['\r', '\n']) {
            return false;
        }
        buf.put_slice(name.as_bytes());
        buf.put_u8(b':');
        buf.put_slice(value.as_bytes());
    } else {
        escape_into(buf, name, escaping);
        buf.put_u8(b':');
        escape_into(buf, value, escaping);
    }
    buf.put_u8(b'\n');
    true
}

fn escape_into(buf: &mut BytesMut, text: &str, escaping: Escaping) {
    for &byte in text.as_bytes() {
        match byte {
            b'\n' => buf.put_slice(b"\\n"),
            b':' => buf.put_slice(b"\\c"),
            b'\\' => buf.put_slice(b"\\\\"),
            b'\r' if escaping == Escaping::V1_2 => buf.put_slice(b"\\r"),
            other => buf.put_u8(other),
        }
    }
}

/// Decode the escapes of one header name or value (1.1 and 1.2 only).
fn unescape(text: &str, version: Version) -> Result<Cow<'_, str>, FrameError> {
    if !text.contains('\\') {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            Some('r') if version == Version::V1_2 => out.push('\r'),
            Some(other) => return Err(FrameError::InvalidEscape(format!("\\{other}"))),
            None => return Err(FrameError::InvalidEscape("trailing \\".into())),
        }
    }
    Ok(Cow::Owned(out))
}

/// Why the byte stream could not be decoded. Every variant is fatal for the connection:
/// the connection answers ERROR with [`FrameError::message`] and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Bad EOL, a header without a colon, invalid UTF-8, a bad `content-length`, no NUL.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// An escape sequence the negotiated version does not define.
    #[error("undefined escape sequence {0} in a header")]
    InvalidEscape(String),
    /// A command we do not know (commands are case-sensitive).
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// A body on a frame other than SEND, MESSAGE or ERROR.
    #[error("{0} frames must not have a body")]
    BodyNotAllowed(Command),
    /// A limit of [`FrameLimits`] was crossed.
    #[error("frame too large: {what} exceeds the limit of {limit}")]
    TooLarge {
        /// Which limit: "frame size", "header count", "header line", "content-length".
        what: &'static str,
        /// The configured limit.
        limit: usize,
    },
    /// A declared `content-length` above the frame size limit.
    #[error("frame too large: content-length {declared} exceeds the limit of {limit}")]
    DeclaredTooLarge {
        /// The declared body size.
        declared: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl FrameError {
    /// The ERROR frame's `message` header for this error (spec §8.3).
    pub fn message(&self) -> &'static str {
        match self {
            FrameError::Malformed(_) => "Malformed frame",
            FrameError::InvalidEscape(_) => "Invalid header escape",
            FrameError::UnknownCommand(_) => "Unknown command",
            FrameError::BodyNotAllowed(_) => "Body not allowed",
            FrameError::TooLarge { .. } | FrameError::DeclaredTooLarge { .. } => "Frame too large",
        }
    }
}

/// Size limits the parser enforces on every inbound frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// The most bytes one frame may have: command, headers, body and NUL.
    pub max_frame_bytes: usize,
    /// The most headers one frame may have (duplicates included).
    pub max_headers: usize,
    /// The longest command or header line, in bytes.
    pub max_header_line: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_frame_bytes: 64 * 1024,
            max_headers: 256,
            max_header_line: 16 * 1024,
        }
    }
}

/// Where the parser is inside the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Skipping heart-beat EOLs before the next command.
    BetweenFrames,
    /// Reading the command line, then header lines, up to the blank line.
    Head,
    /// Reading the body, which ends as described.
    Body(BodyEnd),
}

/// How the body of the current frame ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    /// `content-length` octets, then a mandatory NUL.
    Length(usize),
    /// The first NUL.
    Nul,
}

/// The decoded head of the frame being read.
#[derive(Debug)]
struct PartialFrame {
    /// The command, once the command line was read.
    command: Command,
    /// Headers decoded so far, first occurrence only.
    headers: Vec<(String, String)>,
    /// Header lines seen, duplicates included (for the header-count limit).
    header_lines: usize,
    /// The first `content-length`, parsed.
    content_length: Option<usize>,
}

/// An incremental STOMP frame decoder.
#[derive(Debug)]
pub struct FrameParser {
    /// Bytes received and not yet consumed.
    buf: BytesMut,
    /// The enforced limits.
    limits: FrameLimits,
    /// The version whose escape rules apply to the next frames.
    version: Version,
    /// Where we are.
    phase: Phase,
    /// The current frame's command and headers, once its command line was read.
    partial: Option<PartialFrame>,
    /// How many leading bytes of `buf` were already searched for the current terminator.
    scanned: usize,
    /// Bytes of the current frame already consumed from `buf`.
    frame_bytes: usize,
    /// The first error; the stream is unusable after it.
    failed: Option<FrameError>,
    /// The `receipt` header of the frame that failed, if it was read before the error.
    failed_receipt: Option<String>,
}

impl FrameParser {
    /// A parser for a fresh connection: version 1.0 rules until told otherwise.
    pub fn new(limits: FrameLimits) -> FrameParser {
        FrameParser {
            buf: BytesMut::new(),
            limits,
            version: Version::V1_0,
            phase: Phase::BetweenFrames,
            partial: None,
            scanned: 0,
            frame_bytes: 0,
            failed: None,
            failed_receipt: None,
        }
    }

    /// Use the escape rules of `version` for the frames not yet returned.
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// Append received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether the parser is inside a frame (as opposed to between frames).
    pub fn is_mid_frame(&self) -> bool {
        self.phase != Phase::BetweenFrames
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed. After an error every
    /// later call returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.advance();
        if let Err(err) = &result {
            self.failed = Some(err.clone());
            self.failed_receipt = self.partial.as_ref().and_then(|p| {
                p.headers
                    .iter()
                    .find(|(n, _)| n == "receipt")
                    .map(|(_, v)| v.clone())
            });
            self.buf = BytesMut::new();
        }
        result
    }

    /// The `receipt` header of the frame that failed to parse, when its headers were read
    /// (spec D06: the ERROR for it carries `receipt-id`).
    pub fn failed_receipt(&self) -> Option<&str> {
        self.failed_receipt.as_deref()
    }

    fn advance(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            match self.phase {
                Phase::BetweenFrames => {
                    if !self.skip_heartbeat_eols()? {
                        return Ok(None);
                    }
                    self.phase = Phase::Head;
                    self.scanned = 0;
                    self.frame_bytes = 0;
                    self.partial = None;
                }
                Phase::Head => {
                    let Some(line) = self.take_line()? else {
                        return Ok(None);
                    };
                    self.handle_head_line(&line)?;
                }
                Phase::Body(end) => return self.take_body(end),
            }
        }
    }

    /// Skip heart-beat EOLs, and stray NULs (some clients end a frame with two); true when a
    /// command byte is next, false when more bytes are needed.
    fn skip_heartbeat_eols(&mut self) -> Result<bool, FrameError> {
        loop {
            match self.buf.first() {
                None => return Ok(false),
                Some(b'\n' | 0) => self.buf.advance(1),
                Some(b'\r') => match self.buf.get(1) {
                    None => return Ok(false),
                    Some(b'\n') => self.buf.advance(2),
                    Some(_) => return Err(FrameError::Malformed("CR not followed by LF")),
                },
                Some(_) => return Ok(true),
            }
        }
    }

    /// Take one complete line (without its EOL), enforcing the line and frame limits.
    fn take_line(&mut self) -> Result<Option<BytesMut>, FrameError> {
        let found = self.buf[self.scanned..].iter().position(|&b| b == b'\n');
        let Some(offset) = found else {
            self.scanned = self.buf.len();
            self.check_line_limit(self.buf.len())?;
            self.check_frame_limit(self.buf.len())?;
            return Ok(None);
        };
        let end = self.scanned + offset;
        self.scanned = 0;
        self.check_line_limit(end)?;
        let mut line = self.buf.split_to(end + 1);
        self.frame_bytes += line.len();
        self.check_frame_limit(0)?;
        line.truncate(end);
        if line.last() == Some(&b'\r') {
            line.truncate(end - 1);
        }
        if line.contains(&b'\r') {
            return Err(FrameError::Malformed("CR not followed by LF"));
        }
        Ok(Some(line))
    }

    fn check_line_limit(&self, len: usize) -> Result<(), FrameError> {
        if len > self.limits.max_header_line {
            return Err(FrameError::TooLarge {
                what: "header line",
                limit: self.limits.max_header_line,
            });
        }
        Ok(())
    }

    fn check_frame_limit(&self, pending: usize) -> Result<(), FrameError> {
        if self.frame_bytes + pending > self.limits.max_frame_bytes {
            return Err(FrameError::TooLarge {
                what: "frame size",
                limit: self.limits.max_frame_bytes,
            });
        }
        Ok(())
    }

    fn handle_head_line(&mut self, line: &[u8]) -> Result<(), FrameError> {
        let Some(partial) = self.partial.as_mut() else {
            let command = Command::from_bytes(line).ok_or_else(|| {
                FrameError::UnknownCommand(String::from_utf8_lossy(line).into_owned())
            })?;
            self.partial = Some(PartialFrame {
                command,
                headers: Vec::new(),
                header_lines: 0,
                content_length: None,
            });
            return Ok(());
        };
        if line.is_empty() {
            self.phase = Phase::Body(match partial.content_length {
                Some(len) => BodyEnd::Length(len),
                None => BodyEnd::Nul,
            });
            self.scanned = 0;
            return Ok(());
        }
        partial.header_lines += 1;
        if partial.header_lines > self.limits.max_headers {
            return Err(FrameError::TooLarge {
                what: "header count",
                limit: self.limits.max_headers,
            });
        }
        let (name, value) = decode_header_line(line, partial.command, self.version)?;
        if partial.headers.iter().any(|(n, _)| *n == name) {
            return Ok(());
        }
        if name == "content-length" {
            let len = parse_content_length(&value)?;
            if self.frame_bytes.saturating_add(len) >= self.limits.max_frame_bytes {
                return Err(FrameError::DeclaredTooLarge {
                    declared: len,
                    limit: self.limits.max_frame_bytes,
                });
            }
            partial.content_length = Some(len);
        }
        partial.headers.push((name, value));
        Ok(())
    }

    fn take_body(&mut self, end: BodyEnd) -> Result<Option<Frame>, FrameError> {
        let body = match end {
            BodyEnd::Length(len) => {
                if self.buf.len() <= len {
                    return Ok(None);
                }
                if self.buf[len] != 0 {
                    return Err(FrameError::Malformed(
                        "the body is not followed by NUL at content-length",
                    ));
                }
                self.buf.split_to(len)
            }
            BodyEnd::Nul => {
                let found = self.buf[self.scanned..].iter().position(|&b| b == 0);
                let Some(offset) = found else {
                    self.scanned = self.buf.len();
                    self.check_frame_limit(self.buf.len())?;
                    return Ok(None);
                };
                self.buf.split_to(self.scanned + offset)
            }
        };
        self.buf.advance(1);
        self.frame_bytes += body.len() + 1;
        self.check_frame_limit(0)?;
        self.phase = Phase::BetweenFrames;
        self.scanned = 0;
        let Some(command) = self.partial.as_ref().map(|p| p.command) else {
            return Err(FrameError::Malformed("body without a command"));
        };
        let body = if body.is_empty() || command.may_have_body() {
            body.freeze()
        } else if matches!(command, Command::Connect | Command::Stomp) && only_eols(&body) {
            // RabbitMQ's test suite and some old clients end CONNECT with an extra EOL before
            // the NUL; it carries nothing, so it is dropped rather than refused.
            Bytes::new()
        } else {
            return Err(FrameError::BodyNotAllowed(command));
        };
        let Some(partial) = self.partial.take() else {
            return Err(FrameError::Malformed("body without a command"));
        };
        Ok(Some(Frame {
            command: partial.command,
            headers: partial.headers,
            body,
        }))
    }
}

/// Split a header line at its first colon and decode it per version.
fn decode_header_line(
    line: &[u8],
    command: Command,
    version: Version,
) -> Result<(String, String), FrameError> {
    let text = std::str::from_utf8(line)
        .map_err(|_| FrameError::Malformed("header is not valid UTF-8"))?;
    let (name, value) = text
        .split_once(':')
        .ok_or(FrameError::Malformed("header line without a colon"))?;
    if name.is_empty() {
        return Err(FrameError::Malformed("empty header name"));
    }
    if !command.uses_escapes() || version == Version::V1_0 {
        return Ok((name.to_owned(), value.to_owned()));
    }
    let name = unescape(name, version)?.into_owned();
    let value = unescape(value, version)?.into_owned();
    Ok((name, value))
}

/// Whether `bytes` is nothing but EOLs (LF or CRLF).
fn only_eols(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    loop {
        rest = match rest {
            [] => return true,
            [b'\n', tail @ ..] | [b'\r', b'\n', tail @ ..] => tail,
            _ => return false,
        };
    }
}

/// A plain decimal number without sign or spaces, that fits in usize.
fn parse_content_length(value: &str) -> Result<usize, FrameError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FrameError::Malformed(
            "content-length is not a decimal number",
        ));
    }
    value
        .parse::<usize>()
        .map_err(|_| FrameError::Malformed("content-length overflows"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(version: Version, input: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut parser = FrameParser::new(FrameLimits::default());
        parser.set_version(version);
        parser.push(input);
        let mut frames = Vec::new();
        while let Some(frame) = parser.next_frame()? {
            frames.push(frame);
        }
        Ok(frames)
    }

    fn parse_one(version: Version, input: &[u8]) -> Result<Frame, FrameError> {
        let mut frames = parse_all(version, input)?;
        assert_eq!(frames.len(), 1, "expected one frame from {input:?}");
        Ok(frames.remove(0))
    }

    #[test]
    fn parses_crlf_connect_after_heartbeat_eols() {
        let frame = parse_one(
            Version::V1_2,
            b"\n\r\nCONNECT\r\naccept-version:1.2\r\nhost:x\r\n\r\n\0\r\n\n",
        )
        .unwrap();
        assert_eq!(frame.command, Command::Connect);
        assert_eq!(frame.get("accept-version"), Some("1.2"));
        assert_eq!(frame.get("host"), Some("x"));
    }

    #[test]
    fn parses_a_frame_fed_seven_bytes_at_a_time() {
        let input = b"\n\r\nCONNECT\naccept-version:1.2\nhost:localhost\n\n\0";
        let mut parser = FrameParser::new(FrameLimits::default());
        let mut frames = Vec::new();
        for chunk in input.chunks(7) {
            parser.push(chunk);
            while let Some(frame) = parser.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].get("host"), Some("localhost"));
    }

    #[test]
    fn reads_content_length_bodies_containing_nul() {
        let frame = parse_one(
            Version::V1_2,
            b"SEND\ndestination:/q\ncontent-length:3\n\na\0b\0",
        )
        .unwrap();
        assert_eq!(&frame.body[..], b"a\0b");
    }

    #[test]
    fn rejects_content_length_body_without_nul() {
        let err = parse_all(Version::V1_2, b"SEND\ncontent-length:3\n\nabcd\0").unwrap_err();
        assert_eq!(err.message(), "Malformed frame");
    }

    #[test]
    fn keeps_spaces_and_first_duplicate() {
        let frame = parse_one(Version::V1_2, b"SEND\nsp: x \nfoo:first\nfoo:second\n\n\0").unwrap();
        assert_eq!(frame.get("sp"), Some(" x "));
        assert_eq!(frame.get("foo"), Some("first"));
        assert_eq!(frame.headers.len(), 2);
    }

    #[test]
    fn rejects_header_without_colon() {
        let err = parse_all(Version::V1_2, b"SEND\nnocolon\n\n\0").unwrap_err();
        assert_eq!(err, FrameError::Malformed("header line without a colon"));
    }

    #[test]
    fn rejects_cr_not_followed_by_lf() {
        let err = parse_all(Version::V1_2, b"SEND\nfoo:bar\rx\n\n\0").unwrap_err();
        assert_eq!(err.message(), "Malformed frame");
        let err = parse_all(Version::V1_2, b"\rxSEND\n\n\0").unwrap_err();
        assert_eq!(err.message(), "Malformed frame");
    }

    #[test]
    fn rejects_bodies_on_frames_without_body() {
        let err = parse_all(Version::V1_2, b"BEGIN\ntransaction:t\n\nhello\0").unwrap_err();
        assert_eq!(err.message(), "Body not allowed");
    }

    #[test]
    fn a_connect_body_of_eols_is_dropped_at_every_version() {
        for version in Version::ALL {
            for input in [
                &b"CONNECT\nlogin:guest\n\n\n\0"[..],
                b"STOMP\naccept-version:1.2\n\n\r\n\n\r\n\0",
                b"CONNECT\ncontent-length:2\n\n\n\n\0",
            ] {
                let frame = parse_one(version, input).unwrap();
                assert!(frame.body.is_empty(), "{input:?}");
            }
            for (input, message) in [
                (&b"CONNECT\n\n\nx\0"[..], "Body not allowed"),
                (b"CONNECT\n\n \n\0", "Body not allowed"),
                (b"CONNECT\n\n\r\0", "Body not allowed"),
                (
                    b"SUBSCRIBE\nid:0\ndestination:/t\n\n\n\0",
                    "Body not allowed",
                ),
                (b"DISCONNECT\n\n\n\0", "Body not allowed"),
            ] {
                let err = parse_all(version, input).unwrap_err();
                assert_eq!(err.message(), message, "{input:?}");
            }
        }
    }

    #[test]
    fn stray_nuls_and_eols_between_frames_are_skipped_at_every_version() {
        for version in Version::ALL {
            let frames = parse_all(
                version,
                b"\0\0\nCONNECT\n\n\0\0\r\n\0SEND\ndestination:/t\n\nx\0\0\0\n",
            )
            .unwrap();
            let commands: Vec<Command> = frames.iter().map(|f| f.command).collect();
            assert_eq!(commands, [Command::Connect, Command::Send]);
            assert_eq!(&frames[1].body[..], b"x");
            let err = parse_all(version, b"\0\rCONNECT\n\n\0").unwrap_err();
            assert_eq!(err.message(), "Malformed frame");
            let err = parse_all(version, b"\0 CONNECT\n\n\0").unwrap_err();
            assert_eq!(err.message(), "Unknown command");
        }
    }

    #[test]
    fn rejects_unknown_and_lowercase_commands() {
        for input in [&b"FOO\n\n\0"[..], b"send\n\n\0"] {
            let err = parse_all(Version::V1_2, input).unwrap_err();
            assert_eq!(err.message(), "Unknown command");
        }
    }

    #[test]
    fn rejects_invalid_utf8_headers() {
        let err = parse_all(Version::V1_2, b"SEND\nfoo:\xff\xfe\n\n\0").unwrap_err();
        assert_eq!(err.message(), "Malformed frame");
    }

    #[test]
    fn rejects_oversized_frames_without_content_length() {
        let mut input = b"SEND\ndestination:/q\n\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 64 * 1024 + 1));
        let err = parse_all(Version::V1_2, &input).unwrap_err();
        assert_eq!(err.message(), "Frame too large");
    }

    #[test]
    fn rejects_large_content_length_before_the_body() {
        let err = parse_all(Version::V1_2, b"SEND\ncontent-length:100000\n").unwrap_err();
        assert_eq!(err.message(), "Frame too large");
    }

    #[test]
    fn rejects_bad_content_length() {
        for value in ["abc", "-1", " 3", "99999999999999999999999999"] {
            let input = format!("SEND\ncontent-length:{value}\n\n\0");
            let err = parse_all(Version::V1_2, input.as_bytes()).unwrap_err();
            assert_eq!(err.message(), "Malformed frame", "{value}");
        }
    }

    #[test]
    fn rejects_too_many_headers() {
        let mut input = b"SEND\n".to_vec();
        for i in 0..257 {
            input.extend(format!("h{i}:v\n").as_bytes());
        }
        input.extend(b"\n\0");
        let err = parse_all(Version::V1_2, &input).unwrap_err();
        assert_eq!(err.message(), "Frame too large");
    }

    #[test]
    fn unescapes_per_version() {
        let input = b"SEND\nesc:a\\cb\\nc\\\\d\n\n\0";
        let frame = parse_one(Version::V1_2, input).unwrap();
        assert_eq!(frame.get("esc"), Some("a:b\nc\\d"));
        let frame = parse_one(Version::V1_0, input).unwrap();
        assert_eq!(frame.get("esc"), Some("a\\cb\\nc\\\\d"));
        let frame = parse_one(Version::V1_0, b"SEND\nfoo:a\\b:c\n\n\0").unwrap();
        assert_eq!(frame.get("foo"), Some("a\\b:c"));
    }

    #[test]
    fn rejects_undefined_escapes() {
        let cases: [(Version, &[u8]); 4] = [
            (Version::V1_2, b"SEND\nx:a\\tb\n\n\0"),
            (Version::V1_1, b"SEND\nx:a\\rb\n\n\0"),
            (Version::V1_2, b"SEND\nx:ab\\\n\n\0"),
            (Version::V1_1, b"SEND\nx\\q:ab\n\n\0"),
        ];
        for (version, input) in cases {
            let err = parse_all(version, input).unwrap_err();
            assert_eq!(err.message(), "Invalid header escape", "{input:?}");
        }
        let frame = parse_one(Version::V1_2, b"SEND\nx:a\\rb\n\n\0").unwrap();
        assert_eq!(frame.get("x"), Some("a\rb"));
    }

    #[test]
    fn never_unescapes_connect() {
        let frame = parse_one(Version::V1_2, b"CONNECT\nlogin:a\\cb\n\n\0").unwrap();
        assert_eq!(frame.get("login"), Some("a\\cb"));
    }

    #[test]
    fn errors_are_sticky() {
        let mut parser = FrameParser::new(FrameLimits::default());
        parser.push(b"FOO\n\n\0SEND\n\n\0");
        assert!(parser.next_frame().is_err());
        parser.push(b"SEND\n\n\0");
        assert!(parser.next_frame().is_err());
    }

    #[test]
    fn encodes_message_with_content_length_and_escapes() {
        let frame = Frame::new(Command::Message)
            .header("destination", "/topic/a")
            .header("esc", "a:b\nc\\d\re")
            .header("content-length", "999")
            .body("hi");
        let bytes = frame.encode(Version::V1_2);
        assert_eq!(
            &bytes[..],
            b"MESSAGE\ndestination:/topic/a\nesc:a\\cb\\nc\\\\d\\re\ncontent-length:2\n\nhi\0"
        );
        let bytes = frame.encode(Version::V1_1);
        assert_eq!(
            &bytes[..],
            b"MESSAGE\ndestination:/topic/a\nesc:a\\cb\\nc\\\\d\re\ncontent-length:2\n\nhi\0"
        );
    }

    #[test]
    fn drops_unrepresentable_headers_for_1_0() {
        let frame = Frame::new(Command::Message)
            .header("ok", "a\\b:c")
            .header("bad", "line\nbreak");
        let mut buf = BytesMut::new();
        let dropped = frame.encode_into(Version::V1_0, &mut buf);
        assert_eq!(dropped, 1);
        assert_eq!(&buf[..], b"MESSAGE\nok:a\\b:c\ncontent-length:0\n\n\0");
    }

    #[test]
    fn never_escapes_connected() {
        let frame = Frame::new(Command::Connected).header("server", "a:b");
        assert_eq!(
            &frame.encode(Version::V1_2)[..],
            b"CONNECTED\nserver:a:b\n\n\0"
        );
    }

    fn header_text(version: Version) -> BoxedStrategy<String> {
        match version {
            Version::V1_0 => "[a-z0-9 :\\\\é-]{0,12}".boxed(),
            Version::V1_1 => "[a-z0-9 :\\\\\né-]{0,12}".boxed(),
            Version::V1_2 => "[a-z0-9 :\\\\\r\né-]{0,12}".boxed(),
        }
    }

    fn header_name(version: Version) -> BoxedStrategy<String> {
        match version {
            Version::V1_0 => "[a-z][a-z0-9-]{0,8}".boxed(),
            _ => "[a-z][a-z0-9:\\\\-]{0,8}".boxed(),
        }
    }

    fn arb_frame(version: Version) -> impl Strategy<Value = Frame> {
        let command = prop::sample::select(vec![
            Command::Send,
            Command::Subscribe,
            Command::Ack,
            Command::Message,
            Command::Error,
            Command::Receipt,
        ]);
        let headers = prop::collection::vec((header_name(version), header_text(version)), 0..6);
        let body = prop::collection::vec(any::<u8>(), 0..64);
        (command, headers, body).prop_map(|(command, headers, body)| {
            let mut frame = Frame::new(command);
            for (name, value) in headers {
                frame.add_header(name, value);
            }
            if command.may_have_body() {
                frame.body = Bytes::from(body);
            }
            frame
        })
    }

    fn without_content_length(mut frame: Frame) -> Frame {
        frame.headers.retain(|(n, _)| n != "content-length");
        frame
    }

    fn versioned_frames() -> impl Strategy<Value = (Version, Vec<Frame>)> {
        prop::sample::select(Version::ALL.to_vec())
            .prop_flat_map(|v| (Just(v), prop::collection::vec(arb_frame(v), 1..5)))
    }

    proptest! {
        #[test]
        fn encode_then_parse_round_trips((version, frames) in versioned_frames()) {
            let mut wire = BytesMut::new();
            for frame in &frames {
                prop_assert_eq!(frame.encode_into(version, &mut wire), 0);
                wire.put_slice(b"\n");
            }
            let parsed = parse_all(version, &wire).unwrap();
            let parsed: Vec<Frame> = parsed.into_iter().map(without_content_length).collect();
            prop_assert_eq!(parsed, frames);
        }

        #[test]
        fn random_splits_parse_to_the_same_frames(
            (version, frames) in versioned_frames(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut wire = BytesMut::new();
            for frame in &frames {
                frame.encode_into(version, &mut wire);
                wire.put_slice(b"\r\n");
            }
            let whole = parse_all(version, &wire).unwrap();
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            cuts.sort_unstable();
            let mut parser = FrameParser::new(FrameLimits::default());
            parser.set_version(version);
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([wire.len()]) {
                parser.push(&wire[start..cut]);
                start = cut;
                while let Some(frame) = parser.next_frame().unwrap() {
                    pieces.push(frame);
                }
            }
            prop_assert_eq!(pieces, whole);
            prop_assert!(!parser.is_mid_frame());
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_all(Version::V1_2, &input);
        }
    }
}
