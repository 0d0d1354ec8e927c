//! `/app` destinations forwarded to a real HTTP backend (`fixtures/test_backend.py`, started
//! per test on a free loopback port), driven by raw STOMP-over-TCP clients: the contract,
//! Spring's reply defaults, receipt order, every kind of bad answer, bounded waiting, a hung
//! backend that must not slow anyone else, the connect and disconnect hooks, and password
//! logins from a users file.

use std::time::{Duration, Instant};

use serde_json::Value;
use sockjs_gateway::stomp::frame::Command;

mod common;

use common::backend::{TestBackend, closed_port, start_tcp_gateway};
use common::stomp::Client;

/// A gateway whose `/app/**` goes to `backend` (extra keys appended to its table); clients
/// name their user in `login` (header-asserted identity, opted in for tests).
async fn gateway(backend: &TestBackend, extra: &str) -> std::net::SocketAddr {
    let toml = format!(
        "[stomp]\nprincipal_header = \"login\"\n\n[[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\n\n[[backend]]\n\
         destinations = [\"/app/**\"]\nurl = \"{}\"\nheaders = {{ x-gateway-secret = \"s3\" }}\n{extra}\n",
        backend.url("/stomp")
    );
    start_tcp_gateway(&toml, std::path::Path::new(".")).await
}

/// Wait (bounded) until `check` holds for the backend's log.
async fn eventually<F: Fn(&[Value]) -> bool>(
    backend: &TestBackend,
    what: &str,
    check: F,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = backend.log().await;
        if check(&log) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {log:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn body(frame: &sockjs_gateway::stomp::frame::Frame) -> String {
    String::from_utf8_lossy(&frame.body).into_owned()
}

#[tokio::test]
async fn a_send_reaches_the_backend_and_its_answer_reaches_topic_subscribers() {
    let backend = TestBackend::start(&[]).await;
    let addr = gateway(&backend, "").await;
    let mut reader = Client::stomp(addr, "1.2", "login:reader\n").await;
    reader.subscribe("0", "/topic/echo", "").await;
    let mut alice = Client::stomp(addr, "1.2", "login:alice\n").await;
    alice
        .send("SEND\ndestination:/app/echo\ncontent-type:text/plain\nx-trace:7\nreceipt:r1\n\nhello\0")
        .await;
    let receipt = alice.frame().await;
    assert_eq!(receipt.command, Command::Receipt);
    assert_eq!(receipt.get("receipt-id"), Some("r1"));
    let message = reader.frame().await;
    assert_eq!(message.command, Command::Message);
    assert_eq!(message.get("destination"), Some("/topic/echo"));
    assert_eq!(message.get("x-seen-by"), Some("test-backend"));
    assert_eq!(body(&message), "hello");

    let frames = backend.requests("frame").await;
    let request = &frames[0];
    assert_eq!(request["type"], "send");
    assert_eq!(request["user"], "alice");
    assert_eq!(request["destination"], "/app/echo");
    assert_eq!(request["path"], "/echo");
    assert_eq!(request["body"], "hello");
    assert_eq!(request["headers"]["content-type"], "text/plain");
    assert_eq!(request["headers"]["x-trace"], "7");
    assert!(request["headers"].get("receipt").is_none());
    assert!(request["session"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(request["_http"]["x-gateway-secret"], "s3");
    assert!(
        request["_http"]["user-agent"]
            .as_str()
            .is_some_and(|ua| ua.starts_with("sockjs-gateway/"))
    );
}

#[tokio::test]
async fn user_replies_session_replies_and_subscribe_replies_follow_spring() {
    let backend = TestBackend::start(&[]).await;
    let addr = gateway(&backend, "").await;
    let mut alice1 = Client::stomp(addr, "1.2", "login:alice\n").await;
    let mut alice2 = Client::stomp(addr, "1.2", "login:alice\n").await;
    for (c, id) in [(&mut alice1, "p"), (&mut alice2, "p")] {
        c.subscribe(id, "/user/queue/private", "").await;
        c.subscribe("r", "/user/queue/reply", "").await;
    }
    // "user": true reaches every session of the sender (@SendToUser).
    alice1
        .send("SEND\ndestination:/app/private\nreceipt:1\n\nhi\0")
        .await;
    for c in [&mut alice1, &mut alice2] {
        let m = c.frame().await;
        assert_eq!(m.get("destination"), Some("/user/queue/private"), "{m:?}");
        assert_eq!(body(&m), "private: hi");
    }
    assert_eq!(alice1.frame().await.get("receipt-id"), Some("1"));
    // "reply": true reaches the sending session only (@SendToUser(broadcast = false)).
    alice2
        .send("SEND\ndestination:/app/reply\nreceipt:2\n\nyo\0")
        .await;
    let m = alice2.frame().await;
    assert_eq!(m.get("destination"), Some("/user/queue/reply"));
    assert_eq!(body(&m), "reply: yo");
    assert_eq!(alice2.frame().await.get("receipt-id"), Some("2"));
    alice1.expect_silence(200).await;
    // A SUBSCRIBE to /app/init gets one MESSAGE on that subscription (@SubscribeMapping).
    alice1
        .send("SUBSCRIBE\nid:init\ndestination:/app/init\nreceipt:3\n\n\0")
        .await;
    let m = alice1.frame().await;
    assert_eq!(m.get("subscription"), Some("init"));
    assert_eq!(m.get("destination"), Some("/app/init"));
    assert_eq!(body(&m), "snapshot for alice");
    assert_eq!(alice1.frame().await.get("receipt-id"), Some("3"));
    let subscribe = backend
        .requests("frame")
        .await
        .into_iter()
        .find(|r| r["type"] == "subscribe")
        .unwrap();
    assert_eq!(subscribe["subscription"], "init");
    assert!(subscribe.get("body").is_none());
}

#[tokio::test]
async fn binary_bodies_travel_as_base64_both_ways() {
    let backend = TestBackend::start(&[]).await;
    let addr = gateway(&backend, "").await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.subscribe("b", "/topic/binary", "").await;
    let mut wire = b"SEND\ndestination:/app/binary\ncontent-type:application/octet-stream\ncontent-length:4\n\n".to_vec();
    wire.extend_from_slice(&[0xff, 0x00, 0xfe, 0x01]);
    wire.push(0);
    use tokio::io::AsyncWriteExt;
    c.stream.write_all(&wire).await.unwrap();
    let m = c.frame().await;
    assert_eq!(&m.body[..], &[0xff, 0x00, 0xfe, 0x01]);
    let request = &backend.requests("frame").await[0];
    assert_eq!(request["base64"], true);
    assert_eq!(request["body"], "/wD+AQ==");
}

#[tokio::test]
async fn frames_reach_the_backend_in_order_and_receipts_leave_in_frame_order() {
    let backend = TestBackend::start(&[]).await;
    let addr = gateway(&backend, "").await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.subscribe("t", "/topic/t", "").await;
    c.send(concat!(
        "SEND\ndestination:/app/slow\nx-delay-ms:1500\nreceipt:a\n\n1\0",
        "SEND\ndestination:/topic/t\nreceipt:b\n\nbroker\0",
        "SEND\ndestination:/app/nothing\nreceipt:c\n\n2\0",
    ))
    .await;
    // The broker SEND is published at once; its receipt waits behind the slow frame.
    let started = Instant::now();
    let message = c.frame().await;
    assert_eq!(body(&message), "broker");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    let receipts: Vec<String> = [c.frame().await, c.frame().await, c.frame().await]
        .iter()
        .map(|f| f.get("receipt-id").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(receipts, ["a", "b", "c"]);
    assert!(started.elapsed() >= Duration::from_millis(1400));
    let paths: Vec<Value> = backend
        .requests("frame")
        .await
        .iter()
        .map(|r| r["path"].clone())
        .collect();
    assert_eq!(paths, ["/slow", "/nothing"]);
}

#[tokio::test]
async fn disconnect_waits_for_the_backend_then_receipts_and_closes() {
    let backend = TestBackend::start(&[]).await;
    let addr = gateway(&backend, "").await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    let started = Instant::now();
    c.send("SEND\ndestination:/app/slow\nx-delay-ms:300\n\n\0DISCONNECT\nreceipt:bye\n\n\0")
        .await;
    let receipt = c.frame().await;
    assert_eq!(receipt.get("receipt-id"), Some("bye"));
    assert!(started.elapsed() >= Duration::from_millis(280));
    assert!(c.next().await.is_none(), "closed after the receipt");
}

#[tokio::test]
async fn every_bad_answer_is_a_clear_backend_error_with_the_receipt_id() {
    let backend = TestBackend::start(&[]).await;
    let addr = gateway(&backend, "").await;
    let cases = [
        ("/app/garbage", "is not {\"messages\""),
        ("/app/unknown", "unknown field `destnation`"),
        ("/app/fail", "backend[0] answered 500 Internal Server Error"),
        ("/app/reject", "answered 403 Forbidden: not allowed for you"),
        ("/app/big", "more than 1048576 bytes (max_response_bytes)"),
        ("/app/loop", "is an application destination"),
        ("/app/missing", "answered 404 Not Found"),
    ];
    for (destination, needle) in cases {
        let mut c = Client::stomp(addr, "1.2", "").await;
        c.send(&format!(
            "SEND\ndestination:{destination}\nreceipt:r\n\nx\0"
        ))
        .await;
        let error = c.expect_error_then_close("Backend error").await;
        assert_eq!(error.get("receipt-id"), Some("r"), "{destination}");
        let detail = body(&error);
        assert!(detail.contains(needle), "{destination}: {detail}");
        assert!(
            !detail.contains("secret internals"),
            "5xx bodies stay private"
        );
        assert!(
            !detail.contains("127.0.0.1"),
            "backend URLs stay private: {detail}"
        );
    }
}

#[tokio::test]
async fn a_timeout_and_a_refused_connection_are_backend_errors() {
    let backend = TestBackend::start(&[]).await;
    let port = closed_port().await;
    let toml = format!(
        "[[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\n\n\
         [[backend]]\ndestinations = [\"/app/hang\"]\nurl = \"{}\"\ntimeout_ms = 400\n\n\
         [[backend]]\ndestinations = [\"/app/**\"]\nurl = \"http://127.0.0.1:{port}/stomp\"\n",
        backend.url("/stomp")
    );
    let addr = start_tcp_gateway(&toml, std::path::Path::new(".")).await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("SEND\ndestination:/app/hang\nreceipt:h\n\n\0").await;
    let error = c.expect_error_then_close("Backend error").await;
    assert!(
        body(&error).contains("did not answer within 400 ms (timeout_ms)"),
        "{error:?}"
    );
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("SEND\ndestination:/app/other\nreceipt:x\n\n\0")
        .await;
    let error = c.expect_error_then_close("Backend error").await;
    let detail = body(&error);
    assert!(
        detail.contains("cannot reach backend[1]") && detail.contains("refused"),
        "{detail}"
    );
}

#[tokio::test]
async fn on_error_user_queue_sends_the_error_to_the_session_and_keeps_it_open() {
    let backend = TestBackend::start(&[]).await;
    let addr = gateway(&backend, "on_error = \"user-queue\"").await;
    let mut c = Client::stomp(addr, "1.2", "login:alice\n").await;
    c.subscribe("e", "/user/queue/errors", "").await;
    c.subscribe("t", "/topic/echo", "").await;
    c.send("SEND\ndestination:/app/fail\nreceipt:f\n\nx\0")
        .await;
    let error = c.frame().await;
    assert_eq!(error.command, Command::Message);
    assert_eq!(error.get("destination"), Some("/user/queue/errors"));
    assert_eq!(error.get("message"), Some("Backend error"));
    assert_eq!(error.get("failed-destination"), Some("/app/fail"));
    assert_eq!(error.get("receipt-id"), Some("f"));
    assert!(body(&error).contains("answered 500"));
    assert_eq!(c.frame().await.get("receipt-id"), Some("f"));
    c.send("SEND\ndestination:/app/echo\n\nstill here\0").await;
    assert_eq!(body(&c.frame().await), "still here");
}

#[tokio::test]
async fn a_hung_backend_delays_neither_another_backend_nor_the_broker() {
    let healthy = TestBackend::start(&[]).await;
    let hung = TestBackend::start(&["--hang-all"]).await;
    let toml = format!(
        "[[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\n\n\
         [[backend]]\ndestinations = [\"/app/slow/**\"]\nurl = \"{}\"\ntimeout_ms = 4000\n\
         max_in_flight = 2\nqueue_timeout_ms = 300\n\n\
         [[backend]]\ndestinations = [\"/app/**\"]\nurl = \"{}\"\n",
        hung.url("/stomp"),
        healthy.url("/stomp")
    );
    let addr = start_tcp_gateway(&toml, std::path::Path::new(".")).await;
    // Two sessions take both of the hung backend's slots.
    let mut stuck = Vec::new();
    for _ in 0..2 {
        let mut c = Client::stomp(addr, "1.2", "").await;
        c.send("SEND\ndestination:/app/slow/x\nreceipt:s\n\n\0")
            .await;
        stuck.push(c);
    }
    eventually(&hung, "both slots taken", |log| log.len() == 2).await;
    // A third waits queue_timeout_ms for a slot, then fails as busy.
    let mut third = Client::stomp(addr, "1.2", "").await;
    let started = Instant::now();
    third
        .send("SEND\ndestination:/app/slow/y\nreceipt:t\n\n\0")
        .await;
    let error = third.expect_error_then_close("Backend error").await;
    assert!(body(&error).contains("max_in_flight"), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Meanwhile the other backend and the broker answer at once, many times over.
    let mut other = Client::stomp(addr, "1.2", "").await;
    other.subscribe("e", "/topic/echo", "").await;
    other.subscribe("b", "/topic/plain", "").await;
    let started = Instant::now();
    for i in 0..20 {
        other
            .send(&format!("SEND\ndestination:/app/echo\n\nvia backend {i}\0"))
            .await;
        assert_eq!(body(&other.frame().await), format!("via backend {i}"));
        other
            .send(&format!(
                "SEND\ndestination:/topic/plain\n\nvia broker {i}\0"
            ))
            .await;
        assert_eq!(body(&other.frame().await), format!("via broker {i}"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The stuck sessions get their timeout in the end.
    for mut c in stuck {
        let error = c.expect_error_then_close("Backend error").await;
        assert!(
            body(&error).contains("did not answer within 4000 ms"),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn a_session_flooding_one_backend_is_bounded_per_session() {
    let backend = TestBackend::start(&[]).await;
    let addr = gateway(&backend, "max_queued_per_session = 2").await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send(concat!(
        "SEND\ndestination:/app/slow\nx-delay-ms:500\n\n\0",
        "SEND\ndestination:/app/slow\nx-delay-ms:500\n\n\0",
        "SEND\ndestination:/app/slow\nx-delay-ms:500\nreceipt:third\n\n\0"
    ))
    .await;
    let error = c.expect_error_then_close("Backend error").await;
    assert_eq!(error.get("receipt-id"), Some("third"));
    assert!(body(&error).contains("max_queued_per_session"), "{error:?}");
}

/// A gateway whose connect hook is the test backend's, with `timeout_ms`.
async fn hooked_gateway(backend: &TestBackend, timeout_ms: u64) -> std::net::SocketAddr {
    let toml = format!(
        "[stomp]\nprincipal_header = \"login\"\n\n[[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\n\n[[backend]]\n\
         destinations = [\"/app/**\"]\nurl = \"{}\"\nconnect_url = \"{}\"\n\
         disconnect_url = \"{}\"\ntimeout_ms = {timeout_ms}\n",
        backend.url("/stomp"),
        backend.url("/connect"),
        backend.url("/disconnect"),
    );
    start_tcp_gateway(&toml, std::path::Path::new(".")).await
}

#[tokio::test]
async fn the_connect_hook_allows_with_a_principal_or_denies_with_a_reason() {
    let backend = TestBackend::start(&[]).await;
    let addr = hooked_gateway(&backend, 600).await;
    let mut c = Client::open(addr).await;
    // Frames sent right behind CONNECT wait, unread, until the hook has decided.
    c.send("CONNECT\naccept-version:1.2\nheart-beat:0,0\nlogin:mallory\ntoken:good-alice\n\n\0SUBSCRIBE\nid:p\ndestination:/user/queue/private\n\n\0SEND\ndestination:/app/private\nreceipt:1\n\nafter connect\0")
        .await;
    let connected = c.frame().await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    assert_eq!(connected.get("user-name"), Some("alice"));
    assert_eq!(connected.get("x-tenant"), Some("t1"));
    assert_eq!(body(&c.frame().await), "private: after connect");
    assert_eq!(c.frame().await.get("receipt-id"), Some("1"));
    let hook = &backend.requests("connect").await[0];
    assert_eq!(hook["type"], "connect");
    assert_eq!(hook["headers"]["token"], "good-alice");
    assert_eq!(
        hook["user"], "mallory",
        "the header authenticator's principal so far"
    );
    assert_eq!(hook["transport"], "tcp");
    let frames = backend.requests("frame").await;
    assert_eq!(frames[0]["user"], "alice");

    for (token, message, detail) in [
        ("deny", "Authentication failed", "bad token"),
        ("expired", "Authentication failed", "expired token"),
        ("hang", "Backend error", "did not answer within 600 ms"),
    ] {
        let mut c = Client::open(addr).await;
        c.send(&format!("CONNECT\naccept-version:1.2\ntoken:{token}\n\n\0"))
            .await;
        let error = c.expect_error_then_close(message).await;
        assert!(body(&error).contains(detail), "{token}: {error:?}");
    }
}

#[tokio::test]
async fn ended_sessions_are_told_to_the_disconnect_hook_in_batches() {
    let backend = TestBackend::start(&[]).await;
    let addr = hooked_gateway(&backend, 2000).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut c = Client::open(addr).await;
        c.send(&format!(
            "CONNECT\naccept-version:1.2\ntoken:good-u{i}\n\n\0"
        ))
        .await;
        let connected = c.frame().await;
        ids.push(connected.get("session").unwrap().to_owned());
        c.send("DISCONNECT\n\n\0").await;
        assert!(c.next().await.is_none());
    }
    let log = eventually(&backend, "five disconnect notices", |log| {
        log.iter()
            .filter(|e| e["kind"] == "disconnect")
            .map(|e| e["request"]["sessions"].as_array().map_or(0, Vec::len))
            .sum::<usize>()
            == 5
    })
    .await;
    let told: Vec<Value> = log
        .iter()
        .filter(|e| e["kind"] == "disconnect")
        .flat_map(|e| {
            e["request"]["sessions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let notice = told.iter().find(|s| s["session"] == id.as_str()).unwrap();
        assert_eq!(notice["user"], format!("u{i}"));
        assert_eq!(notice["cause"], "disconnect");
        assert_eq!(notice["code"], 1000);
    }
}

#[tokio::test]
async fn password_logins_from_a_users_file() {
    let dir = std::env::temp_dir().join(format!("backend-users-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hash = sockjs_gateway::auth::users::hash_password(
        "s3cret",
        sockjs_gateway::auth::users::HashScheme::Bcrypt,
    )
    .unwrap();
    std::fs::write(
        dir.join("users"),
        format!("# test users\nalice:{hash}:trader\n"),
    )
    .unwrap();
    let toml = "[[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\n\n[auth]\nusers_file = \"users\"\n\n\
                [[stomp.acl]]\naction = \"send\"\ndestination = \"/topic/trades\"\npolicy = \"allow\"\nroles = [\"trader\"]\n\n\
                [[stomp.acl]]\naction = \"send\"\ndestination = \"/topic/trades\"\npolicy = \"deny\"\n";
    let addr = start_tcp_gateway(toml, &dir).await;
    let mut alice = Client::stomp(addr, "1.2", "login:alice\npasscode:s3cret\n").await;
    alice
        .send("SEND\ndestination:/topic/trades\nreceipt:t\n\n\0")
        .await;
    assert_eq!(
        alice.frame().await.get("receipt-id"),
        Some("t"),
        "the file's role applies"
    );
    for extra in [
        "login:alice\npasscode:wrong\n",
        "login:bob\npasscode:s3cret\n",
        "",
    ] {
        let mut c = Client::open(addr).await;
        c.send(&format!("CONNECT\naccept-version:1.2\n{extra}\n\0"))
            .await;
        let error = c.expect_error_then_close("Authentication failed").await;
        let expected = if extra.is_empty() {
            "log in with login and passcode"
        } else {
            "unknown user or wrong password"
        };
        assert!(body(&error).contains(expected), "{extra:?}: {error:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
