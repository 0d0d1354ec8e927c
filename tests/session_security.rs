//! A SockJS session id is chosen by the client, so a session is bound to the address that
//! created it: another client that learns the id can neither read from nor inject into it
//! (sockjs.md §6.9). Also: request bodies over `max_inbound_bytes` get 413, and the session
//! limit answers 503.

mod common;

use common::{array_messages, post, request_from, start_gateway};

const CONFIG: &str = r#"
[[service]]
prefix = "/echo"
app = "echo"
max_inbound_bytes = 1024
max_sessions = 2
"#;

#[tokio::test]
async fn another_address_cannot_read_or_inject_into_a_session() {
    let addr = start_gateway(CONFIG).await;
    assert_eq!(post(addr, "/echo/000/own/xhr", b"").await.1, b"o\n");

    let inject = request_from(
        "127.0.0.2",
        addr,
        "POST",
        "/echo/000/own/xhr_send",
        &[],
        b"[\"evil\"]",
    )
    .await;
    assert_eq!(inject.status, 404, "injection refused");
    let read = request_from("127.0.0.2", addr, "POST", "/echo/000/own/xhr", &[], b"").await;
    assert_eq!(read.status, 404, "reading refused");
    let jsonp = request_from(
        "127.0.0.2",
        addr,
        "POST",
        "/echo/000/own/jsonp_send",
        &[("Content-Type", "text/plain")],
        b"[\"evil\"]",
    )
    .await;
    assert_eq!(jsonp.status, 404, "jsonp injection refused");

    assert_eq!(
        post(addr, "/echo/000/own/xhr_send", b"[\"mine\"]").await.0,
        204
    );
    let (_, body) = post(addr, "/echo/000/own/xhr", b"").await;
    assert_eq!(
        array_messages(&body),
        ["mine"],
        "the owner sees only its own message"
    );
}

#[tokio::test]
async fn oversized_send_bodies_get_413() {
    let addr = start_gateway(CONFIG).await;
    assert_eq!(post(addr, "/echo/000/big/xhr", b"").await.1, b"o\n");
    let body = serde_json::to_vec(&["x".repeat(2000)]).unwrap();
    assert_eq!(post(addr, "/echo/000/big/xhr_send", &body).await.0, 413);
    // A declared 1 GiB body is refused from its header alone, before anything is read.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head =
        "POST /echo/000/big/xhr_send HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut raw, head.as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    let read = tokio::time::timeout(
        common::IO_TIMEOUT,
        tokio::io::AsyncReadExt::read_exact(&mut raw, &mut buf),
    );
    read.await.unwrap().unwrap();
    assert_eq!(&buf, b"HTTP/1.1 413");
}

#[tokio::test]
async fn sessions_beyond_max_sessions_get_503() {
    let addr = start_gateway(CONFIG).await;
    assert_eq!(post(addr, "/echo/000/s1/xhr", b"").await.0, 200);
    assert_eq!(post(addr, "/echo/000/s2/xhr", b"").await.0, 200);
    assert_eq!(post(addr, "/echo/000/s3/xhr", b"").await.0, 503);
}

const ORIGINS: &str = r#"
[[service]]
prefix = "/echo"
app = "echo"
allowed_origins = ["https://app.example.com", "https://*.example.org"]
"#;

#[tokio::test]
async fn a_foreign_origin_is_refused_on_info_transports_and_websocket() {
    let addr = start_gateway(ORIGINS).await;
    let get = |path: &'static str, origin: &'static str| async move {
        request_from("127.0.0.1", addr, "GET", path, &[("Origin", origin)], b"")
            .await
            .status
    };
    assert_eq!(get("/echo/info", "https://app.example.com").await, 200);
    assert_eq!(get("/echo/info", "https://a.b.example.org").await, 200);
    assert_eq!(get("/echo/info", "https://evil.example.net").await, 403);
    let post_from = |path: &'static str, origin: &'static str| async move {
        request_from("127.0.0.1", addr, "POST", path, &[("Origin", origin)], b"")
            .await
            .status
    };
    assert_eq!(
        post_from("/echo/000/o1/xhr", "https://evil.example.net").await,
        403
    );
    assert_eq!(
        post_from("/echo/000/o1/xhr", "https://app.example.com").await,
        200
    );
    let upgrade = [
        ("Origin", "https://evil.example.net"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "x3JJHMbDL1EzLkh9GBhXDw=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    let ws = request_from(
        "127.0.0.1",
        addr,
        "GET",
        "/echo/000/o2/websocket",
        &upgrade,
        b"",
    )
    .await;
    assert_eq!(ws.status, 403, "WebSocket upgrades are checked too");
    assert_eq!(
        get("/echo/iframe.html", "https://app.example.com").await,
        404,
        "no iframe without '*'"
    );
    let no_origin = request_from("127.0.0.1", addr, "GET", "/echo/info", &[], b"").await;
    assert_eq!(no_origin.status, 200, "non-browser clients send no Origin");
}
