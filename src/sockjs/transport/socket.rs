//! What one read of an upgraded socket produced, whatever its wire protocol (RFC 6455
//! through tungstenite, or the hixie-76 codec).

use bytes::Bytes;

/// What a socket read produced, whatever the wire protocol.
pub enum WsIn {
    Text(String),
    Binary(Bytes),
    Pong,
    /// The client closed: a close frame, or the end of the stream after one.
    Closed,
    /// The connection ended without a closing handshake (the client dropped its socket).
    Dropped,
    /// The client broke the protocol; close with this code and reason.
    Failed(u16, &'static str),
}
