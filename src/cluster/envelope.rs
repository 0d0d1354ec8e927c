//! The envelope: how one message travels between nodes (a Redis PUBLISH payload, and the
//! value stored in an inbox stream entry).
//!
//! Binary, versioned and bounded, because it is parsed from the network: every length is
//! checked against what is left and against `max_envelope_bytes`, and an envelope of a
//! version this node does not know is refused (counted), never guessed at. It is encoded
//! once per message on the publishing node; Redis copies the bytes to every subscribed node,
//! and each node decodes it once into one message shared by its local subscribers. The body
//! is sliced out of the received buffer without a copy.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! u8  version (1)
//! u8  kind: 1 destination, 2 user
//! u8  len, node id          the publishing node: a node skips its own envelopes
//! u16 len, target           the destination, or for kind 2 the user name
//! u16 len, destination      kind 2 only: the user's destination (`/queue/x`)
//! u8  len, message id
//! u16 header count, then per header: u16 len, name; u16 len, value
//! u32 len, body
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The one envelope version this node writes and reads.
pub const VERSION: u8 = 1;

/// A message as the cluster carries it: what a local broker needs to deliver it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message id every copy carries (the inbox stream id for inbox messages).
    pub id: String,
    /// User headers (control headers already removed by the publishing broker).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

/// Where an envelope goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A broker destination (`/topic/a`): every node with a matching subscriber.
    Destination(String),
    /// Every session of one user, at the user's `destination` (`/queue/x` of
    /// `/user/{user}/queue/x`).
    User {
        /// The user name.
        user: String,
        /// The destination below the user prefix.
        destination: String,
    },
}

/// A decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The node that published it.
    pub node: String,
    /// Where it goes.
    pub route: Route,
    /// The message.
    pub message: Message,
}

/// Why bytes are not an envelope; each is counted and the bytes dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Longer than `max_envelope_bytes`.
    #[error("envelope of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Written by a node with another envelope version (a mixed-version cluster).
    #[error("envelope version {0} is not supported (this node reads version 1)")]
    Version(u8),
    /// Cut short or with a length pointing past the end.
    #[error("envelope is truncated")]
    Truncated,
    /// A kind byte this version does not define.
    #[error("envelope kind {0} is unknown")]
    Kind(u8),
    /// A text field is not UTF-8.
    #[error("envelope field is not UTF-8")]
    Utf8,
    /// Bytes left over after the body.
    #[error("envelope has trailing bytes")]
    Trailing,
    /// A field is longer than its length prefix can say (encoding only).
    #[error("envelope field {0} is too long")]
    FieldTooLong(&'static str),
}

const KIND_DESTINATION: u8 = 1;
const KIND_USER: u8 = 2;

impl Envelope {
    /// Encode for the wire; `max` bounds the result.
    pub fn encode(&self, max: usize) -> Result<Bytes, EnvelopeError> {
        let m = &self.message;
        let headers: usize = m.headers.iter().map(|(n, v)| 4 + n.len() + v.len()).sum();
        let size = 16 + self.node.len() + route_len(&self.route) + m.id.len() + headers;
        let size = size + m.body.len();
        if size > max {
            return Err(EnvelopeError::TooLarge(size));
        }
        let mut buf = BytesMut::with_capacity(size);
        buf.put_u8(VERSION);
        match &self.route {
            Route::Destination(d) => {
                buf.put_u8(KIND_DESTINATION);
                put_u8_str(&mut buf, &self.node, "node")?;
                put_u16_str(&mut buf, d, "destination")?;
            }
            Route::User { user, destination } => {
                buf.put_u8(KIND_USER);
                put_u8_str(&mut buf, &self.node, "node")?;
                put_u16_str(&mut buf, user, "user")?;
                put_u16_str(&mut buf, destination, "destination")?;
            }
        }
        put_u8_str(&mut buf, &m.id, "message id")?;
        let count =
            u16::try_from(m.headers.len()).map_err(|_| EnvelopeError::FieldTooLong("headers"))?;
        buf.put_u16(count);
        for (name, value) in &m.headers {
            put_u16_str(&mut buf, name, "header name")?;
            put_u16_str(&mut buf, value, "header value")?;
        }
        let body = u32::try_from(m.body.len()).map_err(|_| EnvelopeError::FieldTooLong("body"))?;
        buf.put_u32(body);
        buf.put_slice(&m.body);
        Ok(buf.freeze())
    }

    /// Decode bytes received from Redis; the body shares `bytes`.
    pub fn decode(mut bytes: Bytes, max: usize) -> Result<Envelope, EnvelopeError> {
        if bytes.len() > max {
            return Err(EnvelopeError::TooLarge(bytes.len()));
        }
        let version = take_u8(&mut bytes)?;
        if version != VERSION {
            return Err(EnvelopeError::Version(version));
        }
        let kind = take_u8(&mut bytes)?;
        let node_len = take_u8(&mut bytes)? as usize;
        let node = take_str(&mut bytes, node_len)?;
        let route = match kind {
            KIND_DESTINATION => {
                let len = take_u16(&mut bytes)? as usize;
                Route::Destination(take_str(&mut bytes, len)?)
            }
            KIND_USER => {
                let len = take_u16(&mut bytes)? as usize;
                let user = take_str(&mut bytes, len)?;
                let len = take_u16(&mut bytes)? as usize;
                let destination = take_str(&mut bytes, len)?;
                Route::User { user, destination }
            }
            other => return Err(EnvelopeError::Kind(other)),
        };
        let id_len = take_u8(&mut bytes)? as usize;
        let id = take_str(&mut bytes, id_len)?;
        let count = take_u16(&mut bytes)? as usize;
        let mut headers = Vec::with_capacity(count.min(bytes.len() / 4));
        for _ in 0..count {
            let len = take_u16(&mut bytes)? as usize;
            let name = take_str(&mut bytes, len)?;
            let len = take_u16(&mut bytes)? as usize;
            let value = take_str(&mut bytes, len)?;
            headers.push((name, value));
        }
        let body_len = take_u32(&mut bytes)? as usize;
        if bytes.len() < body_len {
            return Err(EnvelopeError::Truncated);
        }
        let body = bytes.split_to(body_len);
        if !bytes.is_empty() {
            return Err(EnvelopeError::Trailing);
        }
        Ok(Envelope {
            node,
            route,
            message: Message { id, headers, body },
        })
    }
}

fn route_len(route: &Route) -> usize {
    match route {
        Route::Destination(d) => d.len(),
        Route::User { user, destination } => user.len() + destination.len() + 2,
    }
}

fn put_u8_str(buf: &mut BytesMut, s: &str, field: &'static str) -> Result<(), EnvelopeError> {
    let len = u8::try_from(s.len()).map_err(|_| EnvelopeError::FieldTooLong(field))?;
    buf.put_u8(len);
    buf.put_slice(s.as_bytes());
    Ok(())
}

fn put_u16_str(buf: &mut BytesMut, s: &str, field: &'static str) -> Result<(), EnvelopeError> {
    let len = u16::try_from(s.len()).map_err(|_| EnvelopeError::FieldTooLong(field))?;
    buf.put_u16(len);
    buf.put_slice(s.as_bytes());
    Ok(())
}

fn take_u8(bytes: &mut Bytes) -> Result<u8, EnvelopeError> {
    if bytes.is_empty() {
        return Err(EnvelopeError::Truncated);
    }
    Ok(bytes.get_u8())
}

fn take_u16(bytes: &mut Bytes) -> Result<u16, EnvelopeError> {
    if bytes.len() < 2 {
        return Err(EnvelopeError::Truncated);
    }
    Ok(bytes.get_u16())
}

fn take_u32(bytes: &mut Bytes) -> Result<u32, EnvelopeError> {
    if bytes.len() < 4 {
        return Err(EnvelopeError::Truncated);
    }
    Ok(bytes.get_u32())
}

fn take_str(bytes: &mut Bytes, len: usize) -> Result<String, EnvelopeError> {
    if bytes.len() < len {
        return Err(EnvelopeError::Truncated);
    }
    let raw = bytes.split_to(len);
    String::from_utf8(raw.to_vec()).map_err(|_| EnvelopeError::Utf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Envelope {
        Envelope {
            node: "gw-1".into(),
            route: Route::User {
                user: "alice".into(),
                destination: "/queue/x".into(),
            },
            message: Message {
                id: "n1-0001".into(),
                headers: vec![("content-type".into(), "text/plain".into())],
                body: Bytes::from_static(b"hi\0there"),
            },
        }
    }

    #[test]
    fn round_trips_and_is_compact() {
        let e = sample();
        let bytes = e.encode(1 << 20).unwrap();
        // node, user, destination, id, one header and the body are 54 bytes: 18 of framing.
        assert_eq!(bytes.len(), 54 + 18);
        assert_eq!(Envelope::decode(bytes, 1 << 20).unwrap(), e);
    }

    #[test]
    fn refuses_other_versions_oversize_and_trailing_bytes() {
        let bytes = sample().encode(1 << 20).unwrap();
        let mut other = bytes.to_vec();
        other[0] = 2;
        assert_eq!(
            Envelope::decode(other.into(), 1 << 20),
            Err(EnvelopeError::Version(2))
        );
        assert!(matches!(
            Envelope::decode(bytes.clone(), 10),
            Err(EnvelopeError::TooLarge(_))
        ));
        assert!(matches!(
            sample().encode(10),
            Err(EnvelopeError::TooLarge(_))
        ));
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(
            Envelope::decode(longer.into(), 1 << 20),
            Err(EnvelopeError::Trailing)
        );
        for cut in 0..bytes.len() {
            assert!(Envelope::decode(bytes.slice(..cut), 1 << 20).is_err());
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Envelope::decode(Bytes::from(data), 1 << 20);
        }

        #[test]
        fn every_envelope_round_trips(
            node in "[a-z0-9-]{1,20}",
            dest in "/[ -~]{0,40}",
            user in proptest::option::of("[^\u{0}]{1,10}"),
            id in "[A-Za-z0-9-]{0,30}",
            headers in proptest::collection::vec(("[a-z-]{1,10}", ".{0,20}"), 0..5),
            body in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let route = match user {
                Some(user) => Route::User { user, destination: dest },
                None => Route::Destination(dest),
            };
            let e = Envelope { node, route, message: Message { id, headers, body: body.into() } };
            let bytes = e.encode(1 << 20).unwrap();
            prop_assert_eq!(Envelope::decode(bytes, 1 << 20).unwrap(), e);
        }
    }
}
