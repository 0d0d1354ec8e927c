//! Every limit answered clearly, through real sockets: per-address session limits (503),
//! the inbound message rate (4429), the outbound queue (4500 or drop-oldest), a client that
//! stops reading (4500 after `send_time_limit`), a request head that never ends, open
//! connections in total and per address over the HTTP and STOMP TCP listeners (503 / ERROR),
//! WebSockets counted as connections until they close, and a session quiet past
//! `idle_timeout` (4408).

mod common;

use std::time::Duration;

use common::{array_messages, post, request_from, start_gateway, start_gateway_with_stomp};
use futures_util::{SinkExt, StreamExt};
use sockjs_gateway::stomp::{DisconnectCause, StompEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

async fn websocket(
    addr: std::net::SocketAddr,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), stream)
        .await
        .unwrap();
    ws
}

/// Read text frames until the socket closes; returns the texts and the close code.
async fn read_until_close(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
) -> (Vec<String>, Option<u16>) {
    let mut texts = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("socket closes in time");
        match next {
            Some(Ok(Message::Text(t))) => texts.push(t.to_string()),
            Some(Ok(Message::Close(frame))) => return (texts, frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (texts, None),
        }
    }
}

#[tokio::test]
async fn sessions_per_address_are_limited() {
    let addr =
        start_gateway("[[service]]\nprefix = \"/echo\"\napp = \"echo\"\nmax_sessions_per_ip = 2\n")
            .await;
    for id in ["a", "b"] {
        assert_eq!(post(addr, &format!("/echo/000/{id}/xhr"), b"").await.0, 200);
    }
    let refused = request_from("127.0.0.1", addr, "POST", "/echo/000/c/xhr", &[], b"").await;
    assert_eq!(refused.status, 503);
    assert!(
        String::from_utf8(refused.body().await)
            .unwrap()
            .contains("too many sessions from this address")
    );
    let other = request_from("127.0.0.3", addr, "POST", "/echo/000/d/xhr", &[], b"").await;
    assert_eq!(other.status, 200, "other addresses are unaffected");
}

#[tokio::test]
async fn a_client_sending_too_fast_is_closed_with_4429() {
    let addr = start_gateway(
        "[[service]]\nprefix = \"/echo\"\napp = \"echo\"\nmax_messages_per_second = 10\n",
    )
    .await;
    let mut ws = websocket(addr, "/echo/000/rate/websocket").await;
    for i in 0..60 {
        if ws.send(Message::text(format!("[\"{i}\"]"))).await.is_err() {
            break;
        }
    }
    let (texts, _) = read_until_close(&mut ws).await;
    assert_eq!(texts.first().map(String::as_str), Some("o"));
    assert_eq!(
        texts.last().map(String::as_str),
        Some("c[4429,\"Message rate limit exceeded\"]")
    );
    let echoed: usize = texts
        .iter()
        .filter(|t| t.starts_with('a'))
        .map(|t| array_messages(t.as_bytes()).len())
        .sum();
    assert!(echoed <= 20, "at most the burst got through, got {echoed}");
}

/// Poll `session` (bounded) until its close frame; the messages delivered before it, and it.
async fn poll_until_close(addr: std::net::SocketAddr, session: &str) -> (Vec<String>, String) {
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no close frame");
        let (_, body) = post(addr, &format!("{session}/xhr"), b"").await;
        if body.starts_with(b"c") {
            return (messages, String::from_utf8(body).unwrap());
        }
        if body.starts_with(b"a") {
            messages.extend(array_messages(&body));
        }
    }
}

#[tokio::test]
async fn queue_overflow_terminates_with_4500() {
    let addr = start_gateway(
        "[[service]]\nprefix = \"/amplify\"\napp = \"amplify\"\nmax_queued_bytes = 100\n",
    )
    .await;
    assert_eq!(post(addr, "/amplify/000/of/xhr", b"").await.1, b"o\n");
    // Two 32-byte answers fit in 100 bytes however they are polled; the 128-byte one never
    // does, so the outcome does not depend on when the polls come.
    let (status, _) = post(addr, "/amplify/000/of/xhr_send", b"[\"5\",\"5\",\"7\"]").await;
    assert_eq!(status, 204);
    let (messages, close) = poll_until_close(addr, "/amplify/000/of").await;
    assert_eq!(
        messages,
        ["x".repeat(32), "x".repeat(32)],
        "what fit is still delivered"
    );
    assert_eq!(close, "c[4500,\"Send limit exceeded\"]\n");
}

#[tokio::test]
async fn queue_overflow_can_drop_the_oldest_instead() {
    let config = "[[service]]\nprefix = \"/echo\"\napp = \"echo\"\nmax_queued_bytes = 100\noverflow_strategy = \"drop\"\n";
    let addr = start_gateway(config).await;
    assert_eq!(post(addr, "/echo/000/dr/xhr", b"").await.1, b"o\n");
    // One send request carries all five: it is answered once the echo application has taken
    // them, and the echo of each is queued as it is taken, so all five are queued (and the
    // oldest dropped) before the poll below.
    let five: Vec<String> = (0..5).map(|i| format!("{i}{}", "x".repeat(39))).collect();
    let (status, _) = post(
        addr,
        "/echo/000/dr/xhr_send",
        &serde_json::to_vec(&five).unwrap(),
    )
    .await;
    assert_eq!(status, 204);
    let (_, body) = post(addr, "/echo/000/dr/xhr", b"").await;
    let got: Vec<char> = array_messages(&body)
        .iter()
        .map(|m| m.chars().next().unwrap())
        .collect();
    assert_eq!(got, ['3', '4'], "the newest messages that fit");
}

/// A raw STOMP-over-WebSocket client on a socket whose receive buffer is `recv_buffer`
/// bytes (when given): connected, subscribed to `destination` unless it is empty; returns the
/// socket and the STOMP session id.
async fn stomp_websocket(
    addr: std::net::SocketAddr,
    recv_buffer: Option<u32>,
    destination: &str,
) -> (tokio_tungstenite::WebSocketStream<TcpStream>, String) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let stream = socket.connect(addr).await.unwrap();
    let mut request = format!("ws://{addr}/stomp/websocket")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "v12.stomp".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    let next_text = async |ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>| loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            return text.to_string();
        }
    };
    ws.send(Message::text(
        "CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0",
    ))
    .await
    .unwrap();
    let connected = next_text(&mut ws).await;
    let session = connected
        .lines()
        .find_map(|l| l.strip_prefix("session:"))
        .expect("a session header")
        .to_owned();
    if !destination.is_empty() {
        ws.send(Message::text(format!(
            "SUBSCRIBE\nid:0\ndestination:{destination}\nreceipt:s\n\n\0"
        )))
        .await
        .unwrap();
        assert!(next_text(&mut ws).await.starts_with("RECEIPT"));
    }
    (ws, session)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_terminated_with_4500_after_the_send_time_limit() {
    let config = "[[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\nsend_time_limit = 1\n\
                  max_queued_bytes = 67108864\n";
    let (addr, app) = start_gateway_with_stomp(config).await;
    let mut events = app.subscribe_events();
    let (mut slow, session) = stomp_websocket(addr, Some(4096), "/topic/big").await;
    let (mut publisher, _) = stomp_websocket(addr, None, "").await;
    // 4 MiB for a subscriber that never reads.
    let body = "b".repeat(60 * 1024);
    for _ in 0..64 {
        publisher
            .send(Message::text(format!(
                "SEND\ndestination:/topic/big\n\n{body}\0"
            )))
            .await
            .unwrap();
    }
    // The session ends with the close this limit names, reported to the application.
    let (code, cause) = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let StompEvent::Disconnect {
                session: ended,
                code,
                cause,
                ..
            } = events.recv().await.unwrap()
                && ended == session
            {
                return (code, cause);
            }
        }
    })
    .await
    .expect("the stalled session ended");
    assert_eq!((code, cause), (4500, DisconnectCause::SendLimit));
    // Now read: after what was buffered, the socket ends (the server gave up on it).
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, slow.next())
            .await
            .expect("the stalled socket ends")
        {
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => received += 1,
        }
    }
    assert!(received < 64, "not every message was written: {received}");
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off() {
    let addr = start_gateway(
        "[server]\nheader_read_timeout = 1\n[[service]]\nprefix = \"/echo\"\napp = \"echo\"\n",
    )
    .await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /echo/info HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server closed the connection within the timeout"
    );
    assert_eq!(
        post(addr, "/echo/000/ok/xhr", b"").await.0,
        200,
        "others are served meanwhile"
    );
}

/// A gateway serving HTTP and STOMP over TCP with one set of connection limits; returns both
/// addresses.
async fn gateway_with_tcp(toml: &str) -> (std::net::SocketAddr, std::net::SocketAddr) {
    let config = sockjs_gateway::config::Config::from_toml(toml).unwrap();
    let gateway = sockjs_gateway::Gateway::from_config(&config).unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = (http.local_addr().unwrap(), tcp.local_addr().unwrap());
    gateway.spawn_stomp_tcp(tcp);
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _keep = tx;
        let _ = gateway.serve(http, rx).await;
    });
    addrs
}

/// Read what the server sends until it closes the connection (bounded).
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut all))
        .await
        .expect("the server closes the refused connection")
        .unwrap();
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test]
async fn connections_per_address_are_limited_across_http_and_stomp_tcp() {
    let (http, tcp) = gateway_with_tcp(
        "[server]\nmax_connections_per_ip = 2\n\
         [[service]]\nprefix = \"/echo\"\napp = \"echo\"\n",
    )
    .await;
    // Two idle connections, one per listener: both count, before any request or session.
    let held_http = TcpStream::connect(http).await.unwrap();
    let mut held_tcp = TcpStream::connect(tcp).await.unwrap();
    held_tcp
        .write_all(b"CONNECT\naccept-version:1.2\nhost:t\n\n\0")
        .await
        .unwrap();
    let mut connected = [0u8; 9];
    held_tcp.read_exact(&mut connected).await.unwrap();
    assert_eq!(&connected, b"CONNECTED");
    // A third from the same address is refused on either listener, with the limit named.
    let mut refused = TcpStream::connect(http).await.unwrap();
    refused
        .write_all(b"GET /echo/info HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut refused).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        answer.ends_with("too many connections from this address\n"),
        "{answer}"
    );
    let mut refused = TcpStream::connect(tcp).await.unwrap();
    let answer = read_to_close(&mut refused).await;
    assert!(
        answer.starts_with("ERROR\nmessage:Too many connections\n"),
        "{answer}"
    );
    assert!(
        answer.contains("too many connections from this address"),
        "{answer}"
    );
    // Another address is not affected.
    let other = request_from("127.0.0.2", http, "GET", "/echo/info", &[], b"").await;
    assert_eq!(other.status, 200);
    // Closing a held connection frees its place.
    drop(held_http);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = post(http, "/echo/000/freed/xhr", b"").await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the count was never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_total_connection_limit_refuses_with_503() {
    let (http, _) = gateway_with_tcp(
        "[server]\nmax_connections = 1\n[[service]]\nprefix = \"/echo\"\napp = \"echo\"\n",
    )
    .await;
    let _held = TcpStream::connect(http).await.unwrap();
    let mut refused = TcpStream::connect(http).await.unwrap();
    let answer = read_to_close(&mut refused).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        answer.ends_with("too many connections to this server\n"),
        "{answer}"
    );
}

#[tokio::test]
async fn open_websockets_count_against_the_connection_limit_until_they_close() {
    let (http, _) = gateway_with_tcp(
        "[server]\nmax_connections = 3\n[[service]]\nprefix = \"/echo\"\napp = \"echo\"\n",
    )
    .await;
    // Three WebSockets (SockJS and raw), each past its handshake and echoing.
    let mut held = Vec::new();
    for path in [
        "/echo/000/a/websocket",
        "/echo/000/b/websocket",
        "/echo/websocket",
    ] {
        let mut ws = websocket(http, path).await;
        ws.send(Message::text(if path.contains("/000/") {
            "[\"x\"]"
        } else {
            "x"
        }))
        .await
        .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(Ok(Message::Text(t))) = ws.next().await
                    && t.contains('x')
                {
                    return;
                }
            }
        })
        .await;
        assert!(reply.is_ok(), "{path} did not echo");
        held.push(ws);
    }
    // The upgraded sockets still hold their connections: the next one is refused.
    let mut refused = TcpStream::connect(http).await.unwrap();
    refused
        .write_all(b"GET /echo/info HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut refused).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        answer.ends_with("too many connections to this server\n"),
        "{answer}"
    );
    // Closing one WebSocket gives its place back.
    let mut closing = held.pop().unwrap();
    closing.close(None).await.unwrap();
    while closing.next().await.is_some() {}
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut conn = TcpStream::connect(http).await.unwrap();
        conn.write_all(b"GET /echo/info HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        if read_to_close(&mut conn).await.starts_with("HTTP/1.1 200 ") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed WebSocket's connection was never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_session_quiet_past_idle_timeout_is_closed_with_4408() {
    let addr = start_gateway(
        "[[service]]\nprefix = \"/echo\"\napp = \"echo\"\nidle_timeout = 1\nheartbeat_delay = 60\n",
    )
    .await;
    // xhr-polling: the poll that waits is answered with the close frame, not a heartbeat.
    assert_eq!(post(addr, "/echo/000/quiet/xhr", b"").await.1, b"o\n");
    let started = std::time::Instant::now();
    let (_, body) = post(addr, "/echo/000/quiet/xhr", b"").await;
    assert_eq!(body, b"c[4408,\"Idle timeout\"]\n");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // SockJS WebSocket: the close frame, then the socket closes.
    let mut ws = websocket(addr, "/echo/000/quietws/websocket").await;
    let (texts, _) = read_until_close(&mut ws).await;
    assert_eq!(texts, ["o", "c[4408,\"Idle timeout\"]"]);
}

#[tokio::test]
async fn a_session_that_keeps_sending_is_not_idle() {
    let addr = start_gateway(
        "[[service]]\nprefix = \"/echo\"\napp = \"echo\"\nidle_timeout = 1\nheartbeat_delay = 60\n",
    )
    .await;
    let mut ws = websocket(addr, "/echo/000/busy/websocket").await;
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("o"));
    for i in 0..8 {
        ws.send(Message::text(format!("[\"{i}\"]"))).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .expect("echo in time")
            .unwrap()
            .unwrap();
        assert_eq!(
            echo,
            Message::text(format!("a[\"{i}\"]")),
            "still open after {i} x 300 ms"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
