//! STOMP helpers shared by the carrier tests (TCP, WebSocket, SockJS).

use sockjs_gateway::stomp::frame::{Frame, FrameLimits, FrameParser, Version};

/// A client-side decoder for server frames: 1.2 escapes, limits far above the server's.
pub fn client_parser() -> FrameParser {
    let mut parser = FrameParser::new(FrameLimits {
        max_frame_bytes: 16 * 1024 * 1024,
        ..FrameLimits::default()
    });
    parser.set_version(Version::V1_2);
    parser
}

/// A CONNECT frame for `accept-version` (omitted when empty), with heart-beats off unless
/// `extra` names them. `extra` is more header lines, each ending in `\n`.
pub fn connect_frame(accept_version: &str, extra: &str) -> String {
    let mut wire = String::from("CONNECT\n");
    if !accept_version.is_empty() {
        wire.push_str(&format!("accept-version:{accept_version}\n"));
    }
    if !extra.contains("heart-beat:") {
        wire.push_str("heart-beat:0,0\n");
    }
    wire.push_str(extra);
    wire.push_str("\n\0");
    wire
}

/// Decode one server message that must hold exactly one frame (spec §1: one frame per
/// WebSocket or SockJS message), with the escape rules of `version`.
pub fn decode_single_frame(payload: &[u8], version: Version) -> Frame {
    let mut parser = client_parser();
    parser.set_version(version);
    parser.push(payload);
    let frame = parser
        .next_frame()
        .unwrap_or_else(|e| {
            panic!(
                "undecodable frame {e:?}: {:?}",
                String::from_utf8_lossy(payload)
            )
        })
        .unwrap_or_else(|| panic!("incomplete frame: {:?}", String::from_utf8_lossy(payload)));
    assert!(
        matches!(parser.next_frame(), Ok(None)) && !parser.is_mid_frame(),
        "more than one frame in one message: {:?}",
        String::from_utf8_lossy(payload)
    );
    frame
}
