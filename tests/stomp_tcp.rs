//! STOMP over TCP through real loopback sockets: the probe checklist of spec §15.
//!
//! Each test starts its own server on 127.0.0.1:0 and drives it with raw bytes; every wait is
//! bounded by a timeout so a regression fails instead of hanging.

use std::time::Duration;

use bytes::Bytes;
use sockjs_gateway::stomp::frame::Command;
use sockjs_gateway::stomp::{DisconnectCause, HeartBeat, StompConfig, StompEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

mod common;

use common::stomp::{Client, WAIT, competing, start};

#[tokio::test]
async fn f01_crlf_connect_and_f02_connect_in_pieces() {
    let (addr, _app) = start(StompConfig::default()).await;
    let mut c = Client::open(addr).await;
    c.send("CONNECT\r\naccept-version:1.2\r\nhost:x\r\n\r\n\0")
        .await;
    assert_eq!(c.frame().await.command, Command::Connected);

    let mut c = Client::open(addr).await;
    let wire = b"\n\r\nCONNECT\naccept-version:1.2\nhost:localhost\n\n\0";
    for piece in wire.chunks(7) {
        c.stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(c.frame().await.command, Command::Connected);
}

#[tokio::test]
async fn f03_f04_subscribe_and_send_in_one_write_with_extra_eols() {
    let (addr, _app) = start(StompConfig::default()).await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("SUBSCRIBE\nid:0\ndestination:/topic/t\n\n\0\n\n\r\nSEND\ndestination:/topic/t\n\nhello\0\n\n")
        .await;
    let message = c.frame().await;
    assert_eq!(message.command, Command::Message);
    assert_eq!(&message.body[..], b"hello");
}

#[tokio::test]
async fn f05_content_length_body_with_nul_and_f07_f08_headers() {
    let (addr, _app) = start(StompConfig::default()).await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.subscribe("0", "/topic/t", "").await;
    c.stream
        .write_all(b"SEND\ndestination:/topic/t\ncontent-length:3\nsp: x \nfoo:first\nfoo:second\n\na\0b\0")
        .await
        .unwrap();
    let message = c.frame().await;
    assert_eq!(&message.body[..], b"a\0b");
    assert_eq!(message.get("content-length"), Some("3"));
    assert_eq!(message.get("sp"), Some(" x "));
    assert_eq!(message.get("foo"), Some("first"));
    let raw = String::from_utf8_lossy(&c.raw).into_owned();
    assert!(!raw.contains("foo:second"));
}

#[tokio::test]
async fn framing_errors_send_error_then_close() {
    let (addr, _app) = start(StompConfig::default()).await;
    let cases: [(&[u8], &str); 7] = [
        (
            b"SEND\ndestination:/q\ncontent-length:3\n\nabcd\0",
            "Malformed frame",
        ),
        (b"SEND\nnocolon\n\n\0", "Malformed frame"),
        (b"SEND\ndestination:/q\rx\n\n\0", "Malformed frame"),
        (b"BEGIN\ntransaction:t\n\nbody\0", "Body not allowed"),
        (b"FOO\n\n\0", "Unknown command"),
        (b"send\n\n\0", "Unknown command"),
        (b"SEND\nx:\xff\n\n\0", "Malformed frame"),
    ];
    for (wire, message) in cases {
        let mut c = Client::stomp(addr, "1.2", "").await;
        c.stream.write_all(wire).await.unwrap();
        c.expect_error_then_close(message).await;
    }
}

#[tokio::test]
async fn f14_f15_frame_size_limits() {
    let (addr, _app) = start(StompConfig::default()).await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    let big = format!(
        "SEND\ndestination:/topic/t\n\n{}\0",
        "x".repeat(64 * 1024 + 1)
    );
    c.send(&big).await;
    c.expect_error_then_close("Frame too large").await;

    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("SEND\ndestination:/topic/t\ncontent-length:100000\n\n")
        .await;
    c.expect_error_then_close("Frame too large").await;
}

#[tokio::test]
async fn e01_e02_e05_escaping_per_version() {
    let (addr, _app) = start(StompConfig::default()).await;
    let mut new = Client::stomp(addr, "1.2", "").await;
    let mut old = Client::stomp(addr, "1.0", "").await;
    new.subscribe("0", "/topic/e", "").await;
    old.send("SUBSCRIBE\ndestination:/topic/e\nreceipt:r\n\n\0")
        .await;
    old.frame().await;
    new.send("SEND\ndestination:/topic/e\nesc:a\\cb\\nc\\\\d\n\n\0")
        .await;
    assert_eq!(new.frame().await.get("esc"), Some("a:b\nc\\d"));
    let _dropped = old.frame().await;
    old.send("SEND\ndestination:/topic/e\nfoo:a\\b:c\n\n\0")
        .await;
    assert_eq!(old.frame().await.get("foo"), Some("a\\b:c"));
    assert_eq!(new.frame().await.get("foo"), Some("a\\b:c"));
    let raw = String::from_utf8_lossy(&new.raw).into_owned();
    assert!(raw.contains("foo:a\\\\b\\cc\n"), "{raw}");

    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("SEND\ndestination:/topic/e\nx:a\\tb\n\n\0").await;
    c.expect_error_then_close("Invalid header escape").await;
}

#[tokio::test]
async fn connecting_probes() {
    let (addr, _app) = start(StompConfig::default()).await;
    let mut c = Client::open(addr).await;
    c.send("STOMP\naccept-version:1.2\nhost:127.0.0.1\n\n\0")
        .await;
    let connected = c.frame().await;
    assert_eq!(connected.get("version"), Some("1.2"));
    assert_eq!(connected.get("user-name"), None);

    let mut c = Client::open(addr).await;
    c.send("CONNECT\nheart-beat:1000,1000\n\n\0").await;
    let connected = c.frame().await;
    assert_eq!(connected.get("version"), Some("1.0"));
    assert_eq!(connected.get("heart-beat"), Some("0,0"));

    for (offer, expected) in [
        ("1.1,1.0", "1.1"),
        ("1.0,1.1,1.2", "1.2"),
        ("1.2,2.0", "1.2"),
    ] {
        let mut c = Client::open(addr).await;
        c.send(&format!("CONNECT\naccept-version:{offer}\n\n\0"))
            .await;
        assert_eq!(c.frame().await.get("version"), Some(expected));
    }

    let mut c = Client::open(addr).await;
    c.send("CONNECT\naccept-version:2.0\n\n\0").await;
    let error = c
        .expect_error_then_close("Unsupported protocol version")
        .await;
    assert_eq!(error.get("version"), Some("1.0,1.1,1.2"));

    let mut c = Client::open(addr).await;
    c.send("SEND\ndestination:/topic/a\n\n\0").await;
    c.expect_error_then_close("Not connected").await;

    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("CONNECT\naccept-version:1.2\n\n\0").await;
    c.expect_error_then_close("Already connected").await;
}

#[tokio::test]
async fn c11_connect_timeout_closes_silent_connections() {
    let (addr, app) = start(StompConfig {
        connect_timeout_ms: 200,
        ..StompConfig::default()
    })
    .await;
    let mut c = Client::open(addr).await;
    assert!(c.next().await.is_none());
    let failures = app
        .stats()
        .connect_failures
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(failures, 1);
}

#[tokio::test]
async fn h02_heart_beats_both_ways_with_short_intervals() {
    let (addr, app) = start(StompConfig {
        heart_beat: HeartBeat {
            send_ms: 100,
            receive_ms: 100,
        },
        ..StompConfig::default()
    })
    .await;
    let mut c = Client::open(addr).await;
    c.send("CONNECT\naccept-version:1.2\nheart-beat:50,50\n\n\0")
        .await;
    assert_eq!(c.frame().await.get("heart-beat"), Some("100,100"));
    let started = tokio::time::Instant::now();
    assert!(c.next().await.is_none(), "closed for silence");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let eols = c.raw.iter().rev().take_while(|&&b| b == b'\n').count();
    assert!(eols >= 1, "server heart-beats seen: {eols}");
    assert_eq!(
        app.stats()
            .heartbeat_timeouts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn h04_client_heart_beats_keep_the_connection_open() {
    let (addr, _app) = start(StompConfig {
        heart_beat: HeartBeat {
            send_ms: 100,
            receive_ms: 100,
        },
        ..StompConfig::default()
    })
    .await;
    let mut c = Client::open(addr).await;
    c.send("CONNECT\naccept-version:1.2\nheart-beat:100,100\n\n\0")
        .await;
    c.frame().await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.send("\n").await;
    }
    c.send("DISCONNECT\nreceipt:bye\n\n\0").await;
    assert_eq!(c.frame().await.get("receipt-id"), Some("bye"));
}

/// Read raw bytes for `ms`: what arrived, and whether the connection ended meanwhile.
async fn raw_for(c: &mut Client, ms: u64) -> (Vec<u8>, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        match tokio::time::timeout_at(deadline, c.stream.read(&mut buf)).await {
            Err(_) => return (seen, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (seen, true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn h05_extreme_heart_beat_values_are_clamped_to_an_hour() {
    let (addr, app) = start(StompConfig::default()).await;
    let mut events = app.subscribe_events();
    // cy = u64::MAX asks the server to beat at that interval; cx = u64::MAX promises the
    // client beats at it. Either must neither wrap a deadline nor end the session.
    let mut wants = Client::open(addr).await;
    wants
        .send("CONNECT\naccept-version:1.2\nheart-beat:0,18446744073709551615\n\n\0")
        .await;
    let connected = wants.frame().await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    let session = connected.get("session").unwrap().to_owned();
    let mut promises = Client::open(addr).await;
    promises
        .send("CONNECT\naccept-version:1.2\nheart-beat:18446744073709551615,0\n\n\0")
        .await;
    assert_eq!(promises.frame().await.command, Command::Connected);
    let negotiated = timeout(WAIT, async {
        let mut all = Vec::new();
        while all.len() < 2 {
            if let StompEvent::Connected {
                client_heartbeat_ms,
                server_heartbeat_ms,
                ..
            } = events.recv().await.unwrap()
            {
                all.push((client_heartbeat_ms, server_heartbeat_ms));
            }
        }
        all
    })
    .await
    .unwrap();
    assert_eq!(negotiated, [(0, 3_600_000), (3_600_000, 0)]);

    // No heart-beat is due for an hour: the server stays silent and keeps the connection.
    let (seen, ended) = raw_for(&mut wants, 500).await;
    assert!(!ended, "the connection ended");
    assert!(seen.is_empty(), "{} bytes of heart-beats", seen.len());
    for c in [&mut wants, &mut promises] {
        c.send("SEND\ndestination:/topic/hb\nreceipt:alive\n\n\0")
            .await;
        assert_eq!(c.frame().await.get("receipt-id"), Some("alive"));
    }

    // Closing the socket ends the session in the broker as usual.
    assert!(app.broker().is_session(&session));
    drop(wants);
    let broker = app.broker();
    timeout(WAIT, async {
        while broker.is_session(&session) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the session was unregistered after its socket closed");
}

#[tokio::test]
async fn send_subscribe_unsubscribe_probes() {
    let (addr, _app) = start(StompConfig::default()).await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("SEND\nreceipt:x\n\n\0").await;
    let error = c
        .expect_error_then_close("Missing header: destination")
        .await;
    assert_eq!(error.get("receipt-id"), Some("x"));

    let mut sub = Client::stomp(addr, "1.2", "").await;
    sub.subscribe("s", "/topic/s", "").await;
    let mut publisher = Client::stomp(addr, "1.2", "").await;
    publisher
        .send("SEND\ndestination:/topic/s\nreceipt:r1\ncontent-type:text/plain\nx-foo:bar\nmessage-id:fake\n\nhi\0")
        .await;
    assert_eq!(publisher.frame().await.get("receipt-id"), Some("r1"));
    let message = sub.frame().await;
    assert_eq!(message.get("destination"), Some("/topic/s"));
    assert_eq!(message.get("subscription"), Some("s"));
    assert_eq!(message.get("content-type"), Some("text/plain"));
    assert_eq!(message.get("content-length"), Some("2"));
    assert_eq!(message.get("x-foo"), Some("bar"));
    assert_ne!(message.get("message-id"), Some("fake"));
    assert_eq!(message.get("receipt"), None);
    assert_eq!(message.get("ack"), None);

    sub.send("UNSUBSCRIBE\nid:nope\nreceipt:u0\n\n\0").await;
    assert_eq!(sub.frame().await.get("receipt-id"), Some("u0"));
    sub.send("UNSUBSCRIBE\nid:s\n\n\0SUBSCRIBE\nid:s\ndestination:/topic/s\nreceipt:again\n\n\0")
        .await;
    assert_eq!(sub.frame().await.get("receipt-id"), Some("again"));
    for i in 0..100 {
        publisher
            .send(&format!("SEND\ndestination:/topic/s\n\n{i}\0"))
            .await;
    }
    for i in 0..100 {
        let message = sub.frame().await;
        assert_eq!(message.body, Bytes::from(i.to_string()));
    }
    sub.expect_silence(100).await;

    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("SUBSCRIBE\ndestination:/topic/a\n\n\0").await;
    c.expect_error_then_close("Missing header: id").await;
}

#[tokio::test]
async fn s12_subscription_limit() {
    let (addr, _app) = start(StompConfig::default()).await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    let mut wire = String::new();
    for i in 0..1025 {
        wire.push_str(&format!("SUBSCRIBE\nid:{i}\ndestination:/topic/{i}\n\n\0"));
    }
    c.send(&wire).await;
    c.expect_error_then_close("Subscription limit exceeded")
        .await;
}

#[tokio::test]
async fn a02_client_ack_is_cumulative_and_unacked_are_redelivered() {
    let (addr, _app) = start(competing()).await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.subscribe("0", "/queue/a", "ack:client\n").await;
    for body in ["1", "2", "3"] {
        c.send(&format!("SEND\ndestination:/queue/a\n\n{body}\0"))
            .await;
    }
    let mut acks = Vec::new();
    for _ in 0..3 {
        acks.push(c.frame().await.get("ack").unwrap().to_owned());
    }
    c.send(&format!(
        "ACK\nid:{}\nreceipt:a\n\n\0DISCONNECT\nreceipt:d\n\n\0",
        acks[1]
    ))
    .await;
    assert_eq!(c.frame().await.get("receipt-id"), Some("a"));
    assert_eq!(c.frame().await.get("receipt-id"), Some("d"));
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.subscribe("0", "/queue/a", "").await;
    let message = c.frame().await;
    assert_eq!(&message.body[..], b"3");
    assert_eq!(message.get("redelivered"), Some("true"));
    c.expect_silence(100).await;
}

#[tokio::test]
async fn a04_a07_nack_redelivers_and_unknown_ack_is_ignored() {
    let (addr, app) = start(competing()).await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.subscribe("0", "/queue/n", "ack:client-individual\n")
        .await;
    c.send("SEND\ndestination:/queue/n\n\nx\0").await;
    let ack = c.frame().await.get("ack").unwrap().to_owned();
    c.send(&format!("NACK\nid:{ack}\n\n\0")).await;
    let again = c.frame().await;
    assert_eq!(again.get("redelivered"), Some("true"));
    c.send("ACK\nid:unknown\nreceipt:a\n\n\0").await;
    assert_eq!(c.frame().await.get("receipt-id"), Some("a"));
    assert_eq!(
        app.stats()
            .ack_unknown
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a08_prefetch_count_limits_outstanding_messages() {
    let (addr, _app) = start(competing()).await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    for body in ["1", "2", "3"] {
        c.send(&format!("SEND\ndestination:/queue/p\n\n{body}\0"))
            .await;
    }
    c.subscribe("0", "/queue/p", "ack:client\nprefetch-count:1\n")
        .await;
    let first = c.frame().await;
    c.expect_silence(150).await;
    c.send(&format!("ACK\nid:{}\n\n\0", first.get("ack").unwrap()))
        .await;
    assert_eq!(&c.frame().await.body[..], b"2");
}

#[tokio::test]
async fn t01_t02_transactions() {
    let (addr, _app) = start(StompConfig::default()).await;
    let mut sub = Client::stomp(addr, "1.2", "").await;
    sub.subscribe("0", "/topic/tx", "").await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("BEGIN\ntransaction:t1\n\n\0SEND\ndestination:/topic/tx\ntransaction:t1\n\nA\0ABORT\ntransaction:t1\n\n\0")
        .await;
    c.send("BEGIN\ntransaction:t2\n\n\0SEND\ndestination:/topic/tx\ntransaction:t2\n\nB\0SEND\ndestination:/topic/tx\ntransaction:t2\n\nC\0COMMIT\ntransaction:t2\n\n\0")
        .await;
    c.send("BEGIN\ntransaction:t3\n\n\0SEND\ndestination:/topic/tx\ntransaction:t3\n\nD\0DISCONNECT\n\n\0")
        .await;
    assert!(c.next().await.is_none());
    let b = sub.frame().await;
    assert_eq!(&b.body[..], b"B");
    assert_eq!(b.get("transaction"), None);
    assert_eq!(&sub.frame().await.body[..], b"C");
    sub.expect_silence(150).await;

    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("COMMIT\ntransaction:nope\n\n\0").await;
    c.expect_error_then_close("Unknown transaction").await;
}

#[tokio::test]
async fn d01_d05_disconnect_receipt_then_fin_and_later_frames_ignored() {
    let (addr, _app) = start(StompConfig::default()).await;
    let mut sub = Client::stomp(addr, "1.2", "").await;
    sub.subscribe("0", "/topic/d", "").await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("DISCONNECT\nreceipt:77\n\n\0SEND\ndestination:/topic/d\n\nlate\0")
        .await;
    assert_eq!(c.frame().await.get("receipt-id"), Some("77"));
    assert!(c.next().await.is_none());
    sub.expect_silence(150).await;

    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("DISCONNECT\n\n\0").await;
    assert!(c.next().await.is_none(), "plain close, no ERROR");
}

#[tokio::test]
async fn r01_r02_r03_topics_broadcast_and_competing_queues() {
    let (addr, _app) = start(StompConfig::default()).await;
    let mut a = Client::stomp(addr, "1.2", "").await;
    let mut b = Client::stomp(addr, "1.2", "").await;
    a.subscribe("0", "/queue/q", "").await;
    b.subscribe("0", "/queue/q", "").await;
    let mut p = Client::stomp(addr, "1.2", "").await;
    p.send("SEND\ndestination:/queue/q\n\nx\0").await;
    assert_eq!(&a.frame().await.body[..], b"x");
    assert_eq!(&b.frame().await.body[..], b"x");

    let (addr, _app) = start(competing()).await;
    let mut p = Client::stomp(addr, "1.2", "").await;
    p.send("SEND\ndestination:/queue/w\n\nearly\0").await;
    let mut a = Client::stomp(addr, "1.2", "").await;
    a.subscribe("0", "/queue/w", "").await;
    assert_eq!(&a.frame().await.body[..], b"early");
    let mut b = Client::stomp(addr, "1.2", "").await;
    b.subscribe("0", "/queue/w", "").await;
    for i in 0..10 {
        p.send(&format!("SEND\ndestination:/queue/w\n\n{i}\0"))
            .await;
    }
    for _ in 0..5 {
        a.frame().await;
        b.frame().await;
    }
    a.expect_silence(100).await;
    b.expect_silence(10).await;
}

#[tokio::test]
async fn r07_r12_r13_routing_rules() {
    let (addr, app) = start(StompConfig::default()).await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("SEND\ndestination:/nowhere\nreceipt:r\n\n\0").await;
    assert_eq!(c.frame().await.get("receipt-id"), Some("r"));
    assert_eq!(
        app.stats()
            .dropped_unroutable
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    c.subscribe("one", "/topic/*", "").await;
    c.subscribe("any", "/topic/**", "").await;
    c.send("SEND\ndestination:/topic/a\n\n1\0SEND\ndestination:/topic/a/b\n\n2\0")
        .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = c.frame().await;
        got.push((
            m.get("subscription").unwrap().to_owned(),
            String::from_utf8_lossy(&m.body).into_owned(),
        ));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("any".into(), "1".into()),
            ("any".into(), "2".into()),
            ("one".into(), "1".into())
        ]
    );
    c.send("SEND\ndestination:/user/bob/queue/x\n\n\0").await;
    c.expect_error_then_close("Access denied").await;

    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("SEND\ndestination:/app/echo\n\n\0").await;
    c.expect_error_then_close("Backend error").await;
}

#[tokio::test]
async fn r08_r09_r10_r11_user_destinations() {
    let (addr, app) = start(StompConfig {
        principal_header: Some("login".into()),
        ..StompConfig::default()
    })
    .await;
    let mut alice1 = Client::stomp(addr, "1.2", "login:alice\n").await;
    let mut alice2 = Client::stomp(addr, "1.2", "login:alice\n").await;
    let mut bob = Client::stomp(addr, "1.2", "login:bob\n").await;
    let mut spy = Client::stomp(addr, "1.2", "").await;
    alice1.subscribe("0", "/user/queue/x", "").await;
    alice2.subscribe("0", "/user/queue/x", "").await;
    bob.subscribe("0", "/user/queue/x", "").await;
    spy.subscribe("all", "/queue/**", "").await;
    let broker = app.broker();
    let message = broker.message(&[], Bytes::from_static(b"hi alice"));
    assert_eq!(broker.send_to_user("alice", "/queue/x", None, message), 2);
    for alice in [&mut alice1, &mut alice2] {
        let m = alice.frame().await;
        assert_eq!(m.get("destination"), Some("/user/queue/x"));
        assert_eq!(&m.body[..], b"hi alice");
    }
    bob.expect_silence(100).await;
    spy.expect_silence(10).await;

    let mut anon = Client::open(addr).await;
    anon.send("CONNECT\naccept-version:1.2\n\n\0").await;
    let session = anon.frame().await.get("session").unwrap().to_owned();
    anon.subscribe("u", "/user/queue/x", "").await;
    broker.send_to_session(
        &session,
        "/queue/x",
        broker.message(&[], Bytes::from_static(b"anon")),
    );
    assert_eq!(anon.frame().await.get("destination"), Some("/user/queue/x"));

    spy.send(&format!(
        "SUBSCRIBE\nid:steal\ndestination:/queue/x-user{session}\n\n\0"
    ))
    .await;
    spy.expect_error_then_close("Access denied").await;
}

#[tokio::test]
async fn r14_ten_thousand_messages_arrive_in_order() {
    let (addr, _app) = start(StompConfig {
        send_buffer_size_limit: 8 * 1024 * 1024,
        ..StompConfig::default()
    })
    .await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut s = Client::stomp(addr, "1.2", "").await;
        s.subscribe("0", "/topic/many", "").await;
        subs.push(s);
    }
    let mut p = Client::stomp(addr, "1.2", "").await;
    let mut wire = String::new();
    for i in 0..10_000 {
        wire.push_str(&format!("SEND\ndestination:/topic/many\n\n{i}\0"));
    }
    p.send(&wire).await;
    for s in &mut subs {
        for i in 0..10_000 {
            assert_eq!(s.frame().await.body, Bytes::from(i.to_string()));
        }
    }
}

#[tokio::test]
async fn l01_a_subscriber_that_never_reads_is_terminated() {
    let (addr, app) = start(StompConfig {
        // Larger than everything published, so only the time limit can cut a client off;
        // generous enough that the reading subscriber never is, even on a loaded machine.
        send_buffer_size_limit: 16 * 1024 * 1024,
        send_time_limit_ms: 2000,
        ..StompConfig::default()
    })
    .await;
    let mut slow = Client::stomp(addr, "1.2", "").await;
    slow.subscribe("0", "/topic/flood", "").await;
    let mut fast = Client::stomp(addr, "1.2", "").await;
    fast.subscribe("0", "/topic/flood", "").await;
    let mut p = Client::stomp(addr, "1.2", "").await;
    let body = "y".repeat(32 * 1024);
    let reader = tokio::spawn(async move {
        let mut count = 0;
        while count < 400 {
            fast.frame().await;
            count += 1;
        }
        count
    });
    for _ in 0..400 {
        p.send(&format!("SEND\ndestination:/topic/flood\n\n{body}\0"))
            .await;
    }
    let received = timeout(Duration::from_secs(30), reader).await.unwrap();
    assert_eq!(received.unwrap(), 400);
    let closes = || {
        app.stats()
            .send_limit_closes
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    for _ in 0..100 {
        if closes() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(closes(), 1);
    drop(slow);
}

#[tokio::test]
async fn v01_events_fire_once_each() {
    let (addr, app) = start(StompConfig::default()).await;
    let mut events = app.subscribe_events();
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.subscribe("0", "/topic/v", "").await;
    c.send("UNSUBSCRIBE\nid:0\n\n\0DISCONNECT\nreceipt:bye\n\n\0")
        .await;
    c.frame().await;
    assert!(c.next().await.is_none());
    let mut kinds = Vec::new();
    while kinds.len() < 5 {
        let event = timeout(WAIT, events.recv()).await.unwrap().unwrap();
        kinds.push(match event {
            StompEvent::Connect { .. } => "connect",
            StompEvent::Connected { .. } => "connected",
            StompEvent::Subscribe { .. } => "subscribe",
            StompEvent::Unsubscribe { .. } => "unsubscribe",
            StompEvent::Disconnect { cause, .. } => {
                assert_eq!(cause, DisconnectCause::Disconnect);
                "disconnect"
            }
        });
    }
    assert_eq!(
        kinds,
        [
            "connect",
            "connected",
            "subscribe",
            "unsubscribe",
            "disconnect"
        ]
    );
}
