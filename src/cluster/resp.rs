//! The RESP2 replies a Redis pub/sub connection receives, parsed from a bounded buffer.
//!
//! The subscriber connection is ours rather than the client library's because its reader
//! must apply backpressure: the library's pub/sub stream queues pushes in an unbounded
//! channel, while here a message is parsed only when the previous one has been handed on,
//! so a slow node leaves the bytes in the socket and Redis (whose pub/sub output-buffer limit
//! then applies) rather than in our memory. Only what a subscribed connection can receive is
//! accepted: simple strings, errors, integers, bulk strings and small arrays of them; bulk
//! strings are bounded and sliced out of the read buffer without a copy.

use bytes::{Bytes, BytesMut};

/// The most elements a pub/sub reply has (`pmessage`: 4).
const MAX_ARRAY: usize = 8;

/// One RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(Bytes),
    /// `-ERR ...`.
    Error(String),
    /// `:3`.
    Int(i64),
    /// `$5 hello`, or `$-1` (None).
    Bulk(Option<Bytes>),
    /// `*3 ...` (None for `*-1`).
    Array(Option<Vec<Reply>>),
}

/// A reply that is not valid RESP or breaks our bounds: the connection is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// A type byte or a line that RESP does not allow.
    #[error("malformed reply from Redis: {0}")]
    Malformed(&'static str),
    /// A bulk string or array larger than the configured bound.
    #[error("reply from Redis of {0} bytes is over the limit")]
    TooLarge(usize),
}

/// Parse one complete reply from the front of `buf`, removing it; `Ok(None)` when more
/// bytes are needed. `max_bulk` bounds every bulk string.
pub fn parse(buf: &mut BytesMut, max_bulk: usize) -> Result<Option<Reply>, RespError> {
    let mut scan = Scan { buf, pos: 0 };
    let Some(shape) = scan.value(max_bulk, 0)? else {
        return Ok(None);
    };
    let frame = buf.split_to(scan.pos).freeze();
    Ok(Some(shape.build(&frame)))
}

/// A parsed value whose bulk strings are still offsets into the buffer.
enum Shape {
    Simple(usize, usize),
    Error(usize, usize),
    Int(i64),
    Bulk(Option<(usize, usize)>),
    Array(Option<Vec<Shape>>),
}

impl Shape {
    fn build(self, frame: &Bytes) -> Reply {
        match self {
            Shape::Simple(a, b) => Reply::Simple(frame.slice(a..b)),
            Shape::Error(a, b) => Reply::Error(String::from_utf8_lossy(&frame[a..b]).into_owned()),
            Shape::Int(n) => Reply::Int(n),
            Shape::Bulk(range) => Reply::Bulk(range.map(|(a, b)| frame.slice(a..b))),
            Shape::Array(items) => {
                Reply::Array(items.map(|v| v.into_iter().map(|s| s.build(frame)).collect()))
            }
        }
    }
}

struct Scan<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Scan<'_> {
    /// The line at `pos` (without CRLF) as a range, advancing past it.
    fn line(&mut self) -> Result<Option<(usize, usize)>, RespError> {
        let rest = &self.buf[self.pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() > 1024 {
                return Err(RespError::Malformed("line too long"));
            }
            return Ok(None);
        };
        if nl > 1024 {
            return Err(RespError::Malformed("line too long"));
        }
        if nl == 0 || rest[nl - 1] != b'\r' {
            return Err(RespError::Malformed("line not ended by CRLF"));
        }
        let range = (self.pos, self.pos + nl - 1);
        self.pos += nl + 1;
        Ok(Some(range))
    }

    fn number(&self, (a, b): (usize, usize)) -> Result<i64, RespError> {
        std::str::from_utf8(&self.buf[a..b])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(RespError::Malformed("bad integer"))
    }

    fn value(&mut self, max_bulk: usize, depth: usize) -> Result<Option<Shape>, RespError> {
        let Some(&kind) = self.buf.get(self.pos) else {
            return Ok(None);
        };
        self.pos += 1;
        let Some((a, b)) = self.line()? else {
            return Ok(None);
        };
        match kind {
            b'+' => Ok(Some(Shape::Simple(a, b))),
            b'-' => Ok(Some(Shape::Error(a, b))),
            b':' => Ok(Some(Shape::Int(self.number((a, b))?))),
            b'$' => {
                let len = self.number((a, b))?;
                if len == -1 {
                    return Ok(Some(Shape::Bulk(None)));
                }
                let len = usize::try_from(len).map_err(|_| RespError::Malformed("bad length"))?;
                if len > max_bulk {
                    return Err(RespError::TooLarge(len));
                }
                if self.buf.len() < self.pos + len + 2 {
                    return Ok(None);
                }
                let start = self.pos;
                if &self.buf[start + len..start + len + 2] != b"\r\n" {
                    return Err(RespError::Malformed("bulk string not ended by CRLF"));
                }
                self.pos += len + 2;
                Ok(Some(Shape::Bulk(Some((start, start + len)))))
            }
            b'*' => {
                let len = self.number((a, b))?;
                if len == -1 {
                    return Ok(Some(Shape::Array(None)));
                }
                let len = usize::try_from(len).map_err(|_| RespError::Malformed("bad length"))?;
                if len > MAX_ARRAY || depth > 1 {
                    return Err(RespError::Malformed("array too large or too deep"));
                }
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    match self.value(max_bulk, depth + 1)? {
                        Some(item) => items.push(item),
                        None => return Ok(None),
                    }
                }
                Ok(Some(Shape::Array(Some(items))))
            }
            _ => Err(RespError::Malformed("unknown type byte")),
        }
    }
}

/// What a pub/sub connection receives, interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// A message on a subscribed channel.
    Message {
        /// The channel.
        channel: Bytes,
        /// The payload.
        payload: Bytes,
    },
    /// A message on a channel matching a subscribed pattern.
    PMessage {
        /// The pattern.
        pattern: Bytes,
        /// The channel.
        channel: Bytes,
        /// The payload.
        payload: Bytes,
    },
    /// A subscription change confirmed.
    Confirmed {
        /// Which command.
        kind: Confirm,
        /// The channel or pattern.
        name: Bytes,
    },
    /// The answer to PING (`pong`), or `+OK` to AUTH.
    Ack,
    /// An error reply (e.g. to AUTH).
    Error(String),
}

/// Which subscription command a confirmation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// SUBSCRIBE.
    Subscribe,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// PSUBSCRIBE.
    PSubscribe,
    /// PUNSUBSCRIBE.
    PUnsubscribe,
}

impl Push {
    /// Interpret a reply; None for one a subscribed connection never gets.
    pub fn from_reply(reply: Reply) -> Option<Push> {
        let items = match reply {
            Reply::Simple(_) => return Some(Push::Ack),
            Reply::Error(e) => return Some(Push::Error(e)),
            Reply::Array(Some(items)) => items,
            _ => return None,
        };
        let mut it = items.into_iter().map(|r| match r {
            Reply::Bulk(Some(b)) => Some(b),
            _ => None,
        });
        let kind = it.next()??;
        let mut next = || it.next().flatten();
        let confirm = match &kind[..] {
            b"message" => {
                return Some(Push::Message {
                    channel: next()?,
                    payload: next()?,
                });
            }
            b"pmessage" => {
                return Some(Push::PMessage {
                    pattern: next()?,
                    channel: next()?,
                    payload: next()?,
                });
            }
            b"pong" => return Some(Push::Ack),
            b"subscribe" => Confirm::Subscribe,
            b"unsubscribe" => Confirm::Unsubscribe,
            b"psubscribe" => Confirm::PSubscribe,
            b"punsubscribe" => Confirm::PUnsubscribe,
            _ => return None,
        };
        Some(Push::Confirmed {
            kind: confirm,
            name: next()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(wire: &[u8]) -> Option<Push> {
        let mut buf = BytesMut::from(wire);
        let reply = parse(&mut buf, 1 << 20).unwrap().unwrap();
        assert!(buf.is_empty());
        Push::from_reply(reply)
    }

    #[test]
    fn parses_pubsub_pushes() {
        assert_eq!(
            one(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\na\r\n\r\n"),
            Some(Push::Message {
                channel: Bytes::from_static(b"ch"),
                payload: Bytes::from_static(b"a\r\n"),
            })
        );
        assert_eq!(
            one(b"*4\r\n$8\r\npmessage\r\n$3\r\np:*\r\n$3\r\np:a\r\n$0\r\n\r\n"),
            Some(Push::PMessage {
                pattern: Bytes::from_static(b"p:*"),
                channel: Bytes::from_static(b"p:a"),
                payload: Bytes::new(),
            })
        );
        assert_eq!(
            one(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"),
            Some(Push::Confirmed {
                kind: Confirm::Subscribe,
                name: Bytes::from_static(b"ch")
            })
        );
        assert_eq!(one(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"), Some(Push::Ack));
        assert_eq!(one(b"+OK\r\n"), Some(Push::Ack));
        assert_eq!(
            one(b"-WRONGPASS invalid\r\n"),
            Some(Push::Error("WRONGPASS invalid".into()))
        );
    }

    #[test]
    fn waits_for_complete_replies_and_keeps_the_rest() {
        let wire = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n+OK\r\n";
        for cut in 0..wire.len() - 5 {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(parse(&mut buf, 100).unwrap(), None, "cut at {cut}");
            assert_eq!(buf.len(), cut);
        }
        let mut buf = BytesMut::from(&wire[..]);
        assert!(parse(&mut buf, 100).unwrap().is_some());
        assert_eq!(&buf[..], b"+OK\r\n");
    }

    #[test]
    fn refuses_what_breaks_the_bounds() {
        let mut buf = BytesMut::from(&b"$100\r\n"[..]);
        assert_eq!(parse(&mut buf, 10), Err(RespError::TooLarge(100)));
        let mut buf = BytesMut::from(&b"*100\r\n"[..]);
        assert!(parse(&mut buf, 10).is_err());
        let mut buf = BytesMut::from(&b"?x\r\n"[..]);
        assert!(parse(&mut buf, 10).is_err());
        let mut buf = BytesMut::from(&b"$1\r\nab\r\n"[..]);
        assert!(parse(&mut buf, 10).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(reply)) = parse(&mut buf, 64) {
                let _ = Push::from_reply(reply);
            }
        }

        #[test]
        fn messages_round_trip(channel in proptest::collection::vec(any::<u8>(), 0..50),
                               payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut wire = format!("*3\r\n$7\r\nmessage\r\n${}\r\n", channel.len()).into_bytes();
            wire.extend(&channel);
            wire.extend(format!("\r\n${}\r\n", payload.len()).as_bytes());
            wire.extend(&payload);
            wire.extend(b"\r\n");
            let mut buf = BytesMut::from(&wire[..]);
            let push = Push::from_reply(parse(&mut buf, 1000).unwrap().unwrap());
            prop_assert_eq!(push, Some(Push::Message { channel: channel.into(), payload: payload.into() }));
        }
    }
}
