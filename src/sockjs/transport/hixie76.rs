//! The hixie-76 WebSocket handshake and framing (sockjs.md §10.3), for legacy browsers and
//! proxies. tungstenite cannot speak it, so it is written here over the upgraded connection.
//!
//! The 101 headers go out before key3 is read: HAProxy forwards key3 only after it has seen
//! the response.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use super::hixie76_codec::FrameDecoder;
use super::hixie76_codec::Hixie76;
use super::websocket::{Conn, Framing, check_upgrade, run_socket};
use crate::limits::ConnectionPermit;
use crate::session::{CloseCause, CloseInfo, TransportKind};
use crate::sockjs::http::{Body, HttpRequest, HttpResponse, TEXT_PLAIN, WriteWatch, response};
use crate::sockjs::{Client, Service};

/// How long the client may take to send key3.
const KEY3_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a request offers the hixie-76 handshake: both keys and no version header.
pub fn is_hixie76(headers: &HeaderMap) -> bool {
    headers.contains_key("sec-websocket-key1")
        && headers.contains_key("sec-websocket-key2")
        && !headers.contains_key(header::SEC_WEBSOCKET_VERSION)
}

/// The 4-byte value of a key: its digits as a number divided by its count of spaces.
pub fn key_value(key: &str) -> Option<[u8; 4]> {
    let digits: String = key.chars().filter(char::is_ascii_digit).collect();
    let spaces = key.chars().filter(|c| *c == ' ').count() as u64;
    let n: u64 = digits.parse().ok()?;
    if spaces == 0 || !n.is_multiple_of(spaces) {
        return None;
    }
    u32::try_from(n / spaces).ok().map(u32::to_be_bytes)
}

/// The 16-byte challenge answer: MD5(value1 ‖ value2 ‖ key3).
pub fn challenge(v1: [u8; 4], v2: [u8; 4], key3: &[u8; 8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(v1);
    md5.update(v2);
    md5.update(key3);
    md5.finalize().into()
}

/// `GET P/S/I/websocket` with the hixie-76 handshake ([`is_hixie76`]): answer it and run the
/// socket once hyper hands it over.
pub fn handshake(svc: &Arc<Service>, req: HttpRequest, client: &Client) -> HttpResponse {
    if let Err(resp) = check_upgrade(req.headers()) {
        return resp;
    }
    let key = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(key_value)
    };
    let (Some(v1), Some(v2)) = (key("sec-websocket-key1"), key("sec-websocket-key2")) else {
        // §10.3: an invalid key closes the connection.
        let mut resp = response(StatusCode::BAD_REQUEST, TEXT_PLAIN, "Invalid hixie-76 key");
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("ws://{host}{path}");
    let origin = req.headers().get(header::ORIGIN).cloned();
    let info = svc.session_info(
        TransportKind::WebsocketHixie76,
        req.headers(),
        req.uri().to_string(),
        client,
    );
    let session = match svc.new_session(info, client) {
        Ok(session) => session,
        Err(refused) => return refused,
    };
    let max = svc.config().max_inbound_bytes;
    let svc = svc.clone();
    let watch = req.extensions().get::<Arc<WriteWatch>>().cloned();
    let permit = req.extensions().get::<Arc<ConnectionPermit>>().cloned();
    tokio::spawn(async move {
        // Counted against the connection limits until the socket closes (see websocket.rs).
        let _permit = permit;
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            session.finish(gone());
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let mut key3 = [0u8; 8];
        let read = tokio::time::timeout(KEY3_TIMEOUT, io.read_exact(&mut key3)).await;
        let answered = async {
            io.write_all(&challenge(v1, v2, &key3)).await?;
            io.flush().await
        };
        if !matches!(read, Ok(Ok(_))) || answered.await.is_err() {
            session.finish(gone());
            return;
        }
        let conn = Conn::Hixie76(Hixie76::new(io, max));
        run_socket(&svc, session, conn, Framing::SockJs, watch).await;
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(
            b"WebSocket Protocol Handshake",
        ));
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Some(origin) = origin {
        h.insert("sec-websocket-origin", origin);
    }
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert("sec-websocket-location", v);
    }
    resp
}

fn gone() -> CloseInfo {
    CloseInfo {
        code: 1000,
        reason: "Normal closure".into(),
        cause: CloseCause::Client,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_matches_the_spec_vector() {
        let v1 = key_value("4 @1  46546xW%0l 1 5").unwrap();
        let v2 = key_value("12998 5 Y3 1  .P00").unwrap();
        assert_eq!(u32::from_be_bytes(v1), 829309203);
        assert_eq!(u32::from_be_bytes(v2), 259970620);
        let expected = [
            0xca, 0x34, 0x00, 0xd8, 0xa5, 0x08, 0x47, 0x97, 0x2c, 0xd5, 0x71, 0x5a, 0xba, 0xbf,
            0x43, 0x7b,
        ];
        assert_eq!(challenge(v1, v2, b"aaaaaaaa"), expected);
    }

    #[test]
    fn keys_without_spaces_or_not_divisible_are_invalid() {
        assert_eq!(key_value("123"), None);
        assert_eq!(key_value("1 2 3 "), Some(41u32.to_be_bytes()));
        assert_eq!(key_value("7 "), Some(7u32.to_be_bytes()));
        assert_eq!(key_value("7  "), None);
    }
}
