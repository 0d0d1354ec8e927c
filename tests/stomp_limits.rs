//! Every per-connection and broker limit of the STOMP core (spec §6, §7.3, §10), proved
//! through real loopback TCP sockets with small limits: each one is either enforced silently
//! in the documented way (pending acks hold deliveries back, a full competing queue drops its
//! oldest message, `overflow_strategy = "drop"` discards the oldest queued MESSAGEs) or
//! answered with an ERROR whose `message` says which limit, then a close (the frame rate and
//! the idle timeout close with their own codes, seen in the `Disconnect` event).
//!
//! Not repeated here: `max_subscriptions` (`s12` in `stomp_tcp.rs`) and `message_size_limit`
//! (`f14_f15` there). Every wait is bounded (`common::stomp::WAIT`, or an explicit timeout).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sockjs_gateway::config::OverflowStrategy;
use sockjs_gateway::stomp::frame::{Command, Frame};
use sockjs_gateway::stomp::{DisconnectCause, StompConfig, StompEvent};
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;
use tokio::time::timeout;

mod common;

use common::stomp::{Client, WAIT, client_parser, competing, connect_frame, start};

/// How long "nothing more arrives" is watched for.
const QUIET_MS: u64 = 300;

/// SEND `bodies` to `destination`, the last with a receipt, and wait for that RECEIPT: once it
/// arrives every message has been routed (spec §10.1), so later assertions do not race.
async fn publish(client: &mut Client, destination: &str, bodies: &[String]) {
    let mut wire = String::new();
    for (i, body) in bodies.iter().enumerate() {
        let receipt = if i + 1 == bodies.len() {
            "receipt:published\n"
        } else {
            ""
        };
        wire.push_str(&format!(
            "SEND\ndestination:{destination}\n{receipt}\n{body}\0"
        ));
    }
    client.send(&wire).await;
    let receipt = client.frame().await;
    assert_eq!(receipt.command, Command::Receipt, "{receipt:?}");
    assert_eq!(receipt.get("receipt-id"), Some("published"));
}

fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

fn body(frame: &Frame) -> String {
    assert_eq!(frame.command, Command::Message, "{frame:?}");
    String::from_utf8(frame.body.to_vec()).unwrap()
}

/// Receive `n` MESSAGE frames and return their bodies.
async fn bodies(client: &mut Client, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(body(&client.frame().await));
    }
    out
}

#[tokio::test]
async fn max_pending_acks_holds_competing_deliveries_until_acked() {
    let (addr, app) = start(StompConfig {
        max_pending_acks: 3,
        ..competing()
    })
    .await;
    let mut sub = Client::stomp(addr, "1.2", "").await;
    sub.subscribe("0", "/queue/pa", "ack:client-individual\n")
        .await;
    let mut publisher = Client::stomp(addr, "1.2", "").await;
    publish(&mut publisher, "/queue/pa", &numbered(0..10)).await;

    let first = [sub.frame().await, sub.frame().await, sub.frame().await];
    let got: Vec<String> = first.iter().map(body).collect();
    assert_eq!(got, numbered(0..3));
    sub.expect_silence(QUIET_MS).await;
    // The other 7 wait in the queue: they are held back, not lost.
    assert_eq!(app.broker().queue_depth("/queue/pa"), 7);

    // ACK (individually) the second delivery: exactly one more arrives, the next in order.
    sub.send(&format!(
        "ACK\nid:{}\nreceipt:ack1\n\n\0",
        first[1].get("ack").unwrap()
    ))
    .await;
    let mut after = [sub.frame().await, sub.frame().await];
    after.sort_by_key(|f| f.command == Command::Message);
    assert_eq!(after[0].get("receipt-id"), Some("ack1"), "{after:?}");
    assert_eq!(body(&after[1]), "m3");
    assert_eq!(after[1].get("redelivered"), Some("false"));
    sub.expect_silence(QUIET_MS).await;
    assert_eq!(app.broker().queue_depth("/queue/pa"), 6);

    // A NACK frees a slot too; the NACKed message is requeued at the front and comes back.
    sub.send(&format!("NACK\nid:{}\n\n\0", first[0].get("ack").unwrap()))
        .await;
    let again = sub.frame().await;
    assert_eq!(body(&again), "m0");
    assert_eq!(again.get("redelivered"), Some("true"));
    sub.expect_silence(QUIET_MS).await;
    assert_eq!(app.broker().queue_depth("/queue/pa"), 6);
}

#[tokio::test]
async fn max_pending_acks_counts_over_all_subscriptions_of_a_connection() {
    let (addr, app) = start(StompConfig {
        max_pending_acks: 3,
        ..competing()
    })
    .await;
    let mut sub = Client::stomp(addr, "1.2", "").await;
    sub.subscribe("a", "/queue/pa-a", "ack:client\n").await;
    sub.subscribe("b", "/queue/pa-b", "ack:client-individual\n")
        .await;
    let mut publisher = Client::stomp(addr, "1.2", "").await;
    publish(&mut publisher, "/queue/pa-a", &numbered(0..2)).await;
    publish(&mut publisher, "/queue/pa-b", &numbered(0..2)).await;

    // Two from queue a, then only one from queue b: three pending in total.
    let got = bodies(&mut sub, 3).await;
    assert_eq!(got, ["m0", "m1", "m0"]);
    sub.expect_silence(QUIET_MS).await;
    assert_eq!(app.broker().queue_depth("/queue/pa-b"), 1);

    // Another connection is not affected by this one's pending acks.
    let mut other = Client::stomp(addr, "1.2", "").await;
    other
        .subscribe("0", "/queue/pa-b", "ack:client-individual\n")
        .await;
    assert_eq!(body(&other.frame().await), "m1");
}

#[tokio::test]
async fn max_pending_acks_on_a_topic_holds_back_as_many_more_then_drops() {
    // A broadcast destination stores nothing (spec §7.3), but a connection at its pending-ack
    // limit keeps up to `max_pending_acks` more waiting, in order, sent as it ACKs; beyond
    // that, messages are dropped and counted as overflow.
    let (addr, app) = start(StompConfig {
        max_pending_acks: 3,
        ..StompConfig::default()
    })
    .await;
    let mut sub = Client::stomp(addr, "1.2", "").await;
    sub.subscribe("0", "/topic/pa", "ack:client-individual\n")
        .await;
    let mut publisher = Client::stomp(addr, "1.2", "").await;
    publish(&mut publisher, "/topic/pa", &numbered(0..8)).await;
    let first = [sub.frame().await, sub.frame().await, sub.frame().await];
    assert_eq!(first.iter().map(body).collect::<Vec<_>>(), numbered(0..3));
    sub.expect_silence(QUIET_MS).await;
    assert_eq!(app.stats().dropped_overflow.load(Ordering::Relaxed), 2);

    for (i, frame) in first.iter().enumerate() {
        sub.send(&format!(
            "ACK\nid:{}\nreceipt:ack{i}\n\n\0",
            frame.get("ack").unwrap()
        ))
        .await;
        sub.receipt(&format!("ack{i}")).await;
    }
    let next = [sub.frame().await, sub.frame().await, sub.frame().await];
    assert_eq!(next.iter().map(body).collect::<Vec<_>>(), numbered(3..6));
    sub.expect_silence(QUIET_MS).await;
    // The window is full again: a new message waits for the next ACK.
    publish(&mut publisher, "/topic/pa", &numbered(8..9)).await;
    sub.expect_silence(QUIET_MS).await;
    sub.send(&format!("ACK\nid:{}\n\n\0", next[0].get("ack").unwrap()))
        .await;
    assert_eq!(body(&sub.frame().await), "m8");
    assert_eq!(app.stats().dropped_overflow.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn prefetch_count_on_a_topic_is_a_window_that_acks_open() {
    let (addr, _app) = start(StompConfig::default()).await;
    let mut sub = Client::stomp(addr, "1.2", "").await;
    sub.subscribe("0", "/topic/pf", "ack:client\nprefetch-count:2\n")
        .await;
    let mut publisher = Client::stomp(addr, "1.2", "").await;
    publish(&mut publisher, "/topic/pf", &numbered(0..5)).await;
    let first = [sub.frame().await, sub.frame().await];
    assert_eq!(first.iter().map(body).collect::<Vec<_>>(), numbered(0..2));
    assert_eq!(first[0].get("redelivered"), Some("false"));
    sub.expect_silence(QUIET_MS).await;
    // A cumulative ACK of the second settles both: two more come.
    sub.send(&format!("ACK\nid:{}\n\n\0", first[1].get("ack").unwrap()))
        .await;
    let next = [sub.frame().await, sub.frame().await];
    assert_eq!(next.iter().map(body).collect::<Vec<_>>(), numbered(2..4));
    sub.expect_silence(QUIET_MS).await;
    sub.send(&format!("ACK\nid:{}\n\n\0", next[0].get("ack").unwrap()))
        .await;
    assert_eq!(body(&sub.frame().await), "m4");
    sub.expect_silence(QUIET_MS).await;
    // An auto-ack subscriber of the same topic got everything at once, without `redelivered`.
    let mut auto = Client::stomp(addr, "1.2", "").await;
    auto.subscribe("0", "/topic/pf", "").await;
    publish(&mut publisher, "/topic/pf", &numbered(5..6)).await;
    let frame = auto.frame().await;
    assert_eq!(body(&frame), "m5");
    assert_eq!(frame.get("redelivered"), None);
}

#[tokio::test]
async fn max_pending_ack_bytes_bounds_what_one_connection_holds() {
    // Each message is its 1000-byte body plus its id: two fit under 2500 bytes.
    let (addr, app) = start(StompConfig {
        max_pending_ack_bytes: 2500,
        ..competing()
    })
    .await;
    let mut sub = Client::stomp(addr, "1.2", "").await;
    sub.subscribe("q", "/queue/pb", "ack:client-individual\n")
        .await;
    let mut publisher = Client::stomp(addr, "1.2", "").await;
    let big: Vec<String> = (0..5).map(|i| format!("{i}{}", "x".repeat(999))).collect();
    publish(&mut publisher, "/queue/pb", &big).await;
    let first = [sub.frame().await, sub.frame().await];
    sub.expect_silence(QUIET_MS).await;
    // The queue keeps the rest: nothing is lost, it waits for room.
    assert_eq!(app.broker().queue_depth("/queue/pb"), 3);
    sub.send(&format!("ACK\nid:{}\n\n\0", first[0].get("ack").unwrap()))
        .await;
    assert_eq!(body(&sub.frame().await), big[2]);
    sub.expect_silence(QUIET_MS).await;
    assert_eq!(app.broker().queue_depth("/queue/pb"), 2);
    // A topic subscription on the same connection shares the budget: it is full, so its
    // messages are dropped and counted.
    sub.subscribe("t", "/topic/pb", "ack:client-individual\n")
        .await;
    publish(&mut publisher, "/topic/pb", &big[..1]).await;
    sub.expect_silence(QUIET_MS).await;
    assert_eq!(app.stats().dropped_overflow.load(Ordering::Relaxed), 1);
    // Another connection has its own budget.
    let mut other = Client::stomp(addr, "1.2", "").await;
    other
        .subscribe("q", "/queue/pb", "ack:client-individual\n")
        .await;
    assert_eq!(bodies(&mut other, 2).await, big[3..]);
}

#[tokio::test]
async fn max_queues_caps_competing_queues_and_forgets_unused_empty_ones() {
    let (addr, app) = start(StompConfig {
        max_queues: 2,
        ..competing()
    })
    .await;
    let mut publisher = Client::stomp(addr, "1.2", "").await;
    for name in ["a", "b", "c"] {
        publish(
            &mut publisher,
            &format!("/queue/mq-{name}"),
            &numbered(0..1),
        )
        .await;
    }
    assert_eq!(app.broker().queue_depth("/queue/mq-c"), 0);
    assert_eq!(app.stats().dropped_queue_full.load(Ordering::Relaxed), 1);
    // Draining one and leaving it forgets it: a new name fits again.
    let mut sub = Client::stomp(addr, "1.2", "").await;
    sub.subscribe("0", "/queue/mq-a", "").await;
    assert_eq!(body(&sub.frame().await), "m0");
    sub.send("UNSUBSCRIBE\nid:0\nreceipt:u\n\n\0").await;
    sub.receipt("u").await;
    publish(&mut publisher, "/queue/mq-d", &numbered(0..1)).await;
    assert_eq!(app.broker().queue_depth("/queue/mq-d"), 1);
    assert_eq!(app.stats().dropped_queue_full.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn max_queue_messages_drops_the_oldest() {
    let (addr, app) = start(StompConfig {
        max_queue_messages: 5,
        ..competing()
    })
    .await;
    let mut publisher = Client::stomp(addr, "1.2", "").await;
    publish(&mut publisher, "/queue/qm", &numbered(0..8)).await;
    assert_eq!(app.broker().queue_depth("/queue/qm"), 5);
    assert_eq!(app.stats().dropped_queue_full.load(Ordering::Relaxed), 3);

    let mut sub = Client::stomp(addr, "1.2", "").await;
    sub.subscribe("0", "/queue/qm", "").await;
    assert_eq!(bodies(&mut sub, 5).await, numbered(3..8));
    sub.expect_silence(QUIET_MS).await;
    assert_eq!(app.broker().queue_depth("/queue/qm"), 0);
}

#[tokio::test]
async fn max_queue_messages_applies_to_messages_held_back_by_pending_acks() {
    let (addr, app) = start(StompConfig {
        max_pending_acks: 3,
        max_queue_messages: 4,
        ..competing()
    })
    .await;
    let mut sub = Client::stomp(addr, "1.2", "").await;
    sub.subscribe("0", "/queue/qh", "ack:client-individual\n")
        .await;
    let mut publisher = Client::stomp(addr, "1.2", "").await;
    publish(&mut publisher, "/queue/qh", &numbered(0..10)).await;
    let first = [sub.frame().await, sub.frame().await, sub.frame().await];
    assert_eq!(first.iter().map(body).collect::<Vec<_>>(), numbered(0..3));
    sub.expect_silence(QUIET_MS).await;
    // m3..m9 were stored; only the newest 4 survive.
    assert_eq!(app.broker().queue_depth("/queue/qh"), 4);
    assert_eq!(app.stats().dropped_queue_full.load(Ordering::Relaxed), 3);
    sub.send(&format!("ACK\nid:{}\n\n\0", first[2].get("ack").unwrap()))
        .await;
    assert_eq!(body(&sub.frame().await), "m6");
    sub.expect_silence(QUIET_MS).await;
}

#[tokio::test]
async fn max_queue_bytes_drops_the_oldest() {
    // Stored size is headers + body + message-id (a few dozen bytes), so 1000-byte bodies
    // under a 3500-byte bound leave room for exactly three.
    let (addr, app) = start(StompConfig {
        max_queue_bytes: 3500,
        ..competing()
    })
    .await;
    let mut publisher = Client::stomp(addr, "1.2", "").await;
    let big: Vec<String> = (0..6).map(|i| format!("{i}{}", "x".repeat(999))).collect();
    publish(&mut publisher, "/queue/qb", &big).await;
    assert_eq!(app.broker().queue_depth("/queue/qb"), 3);
    assert_eq!(app.stats().dropped_queue_full.load(Ordering::Relaxed), 3);

    let mut sub = Client::stomp(addr, "1.2", "").await;
    sub.subscribe("0", "/queue/qb", "").await;
    assert_eq!(bodies(&mut sub, 3).await, big[3..]);
    sub.expect_silence(QUIET_MS).await;

    // One message larger than the whole bound is still kept rather than lost: only older
    // messages are ever dropped to make room.
    let huge = "h".repeat(4000);
    publish(
        &mut publisher,
        "/queue/qb-huge",
        std::slice::from_ref(&huge),
    )
    .await;
    assert_eq!(app.broker().queue_depth("/queue/qb-huge"), 1);
    sub.subscribe("1", "/queue/qb-huge", "").await;
    assert_eq!(body(&sub.frame().await), huge);
}

#[tokio::test]
async fn max_transactions_is_an_error_then_close() {
    let (addr, _app) = start(StompConfig {
        max_transactions: 2,
        ..StompConfig::default()
    })
    .await;
    let mut sub = Client::stomp(addr, "1.2", "").await;
    sub.subscribe("0", "/topic/tx", "").await;

    // The bound is on *open* transactions: finishing one frees its slot.
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("BEGIN\ntransaction:a\n\n\0BEGIN\ntransaction:b\n\n\0COMMIT\ntransaction:a\n\n\0BEGIN\ntransaction:c\nreceipt:c\n\n\0")
        .await;
    assert_eq!(c.frame().await.get("receipt-id"), Some("c"));

    // A third open transaction is refused; the buffered SEND of the others is never published.
    c.send(
        "SEND\ndestination:/topic/tx\ntransaction:b\n\nlost\0BEGIN\ntransaction:d\nreceipt:d\n\n\0",
    )
    .await;
    let error = c
        .expect_error_then_close("Transaction limit exceeded")
        .await;
    assert_eq!(error.get("receipt-id"), Some("d"));
    assert_eq!(error.get("content-type"), Some("text/plain"));
    let detail = String::from_utf8_lossy(&error.body).into_owned();
    assert!(
        detail.contains('2'),
        "the detail names the limit: {detail:?}"
    );
    sub.expect_silence(QUIET_MS).await;
}

#[tokio::test]
async fn max_transaction_bytes_is_an_error_then_close() {
    let (addr, _app) = start(StompConfig {
        max_transaction_bytes: 1000,
        ..StompConfig::default()
    })
    .await;
    let mut sub = Client::stomp(addr, "1.2", "").await;
    sub.subscribe("0", "/topic/tb", "").await;
    let body = "b".repeat(600);

    // Committed bytes stop counting: two 600-byte SENDs in turn fit a 1000-byte bound.
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send(&format!(
        "BEGIN\ntransaction:a\n\n\0SEND\ndestination:/topic/tb\ntransaction:a\n\n{body}\0COMMIT\ntransaction:a\n\n\0\
         BEGIN\ntransaction:b\n\n\0SEND\ndestination:/topic/tb\ntransaction:b\n\n{body}\0COMMIT\ntransaction:b\nreceipt:b\n\n\0"
    ))
    .await;
    assert_eq!(c.frame().await.get("receipt-id"), Some("b"));
    assert_eq!(sub.frame().await.body.len(), 600);
    assert_eq!(sub.frame().await.body.len(), 600);

    // The bound is summed over every open transaction of the connection.
    c.send(&format!(
        "BEGIN\ntransaction:c\n\n\0BEGIN\ntransaction:d\n\n\0\
         SEND\ndestination:/topic/tb\ntransaction:c\n\n{body}\0\
         SEND\ndestination:/topic/tb\ntransaction:d\nreceipt:over\n\n{body}\0"
    ))
    .await;
    let error = c
        .expect_error_then_close("Transaction limit exceeded")
        .await;
    assert_eq!(error.get("receipt-id"), Some("over"));
    let detail = String::from_utf8_lossy(&error.body).into_owned();
    assert!(
        detail.contains("1000"),
        "the detail names the limit: {detail:?}"
    );
    // Nothing of the open transactions is published.
    sub.expect_silence(QUIET_MS).await;
}

#[tokio::test]
async fn max_headers_is_frame_too_large_then_close() {
    let (addr, _app) = start(StompConfig {
        max_headers: 4,
        ..StompConfig::default()
    })
    .await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("SEND\ndestination:/topic/h\nx-1:1\nx-2:2\nreceipt:ok\n\nfour headers\0")
        .await;
    assert_eq!(c.frame().await.get("receipt-id"), Some("ok"));
    c.send("SEND\ndestination:/topic/h\nx-1:1\nx-2:2\nx-3:3\nreceipt:no\n\nfive headers\0")
        .await;
    c.expect_error_then_close("Frame too large").await;
}

#[tokio::test]
async fn send_buffer_size_limit_terminates_a_client_that_does_not_read() {
    let (addr, app) = start(StompConfig {
        send_buffer_size_limit: 64 * 1024,
        // Long enough that only the buffer bound can cut the slow client off.
        send_time_limit_ms: 60_000,
        ..StompConfig::default()
    })
    .await;
    let mut slow = Client::stomp(addr, "1.2", "").await;
    slow.subscribe("0", "/topic/flood", "").await;
    let mut publisher = Client::stomp(addr, "1.2", "").await;
    let chunk = "y".repeat(32 * 1024);
    let closes = || app.stats().send_limit_closes.load(Ordering::Relaxed);
    // Kernel buffers absorb a few MiB first; keep publishing until the queue overflows.
    let batch = vec![chunk.clone(); 16];
    let mut sent = 0;
    while closes() == 0 {
        assert!(sent < 2000, "the slow client was never cut off");
        publish(&mut publisher, "/topic/flood", &batch).await;
        sent += 16;
    }
    assert_eq!(closes(), 1);

    // The publisher is unaffected; the slow client's socket ends after what was written.
    publish(&mut publisher, "/topic/flood", std::slice::from_ref(&chunk)).await;
    let mut buf = vec![0u8; 256 * 1024];
    let drained = timeout(Duration::from_secs(30), async {
        loop {
            match slow.stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the slow client's connection never ended");
}

/// The `Disconnect` event of the next session to end.
async fn next_disconnect(
    events: &mut tokio::sync::broadcast::Receiver<StompEvent>,
) -> (u16, DisconnectCause) {
    loop {
        let event = timeout(WAIT, events.recv()).await.unwrap().unwrap();
        if let StompEvent::Disconnect { code, cause, .. } = event {
            return (code, cause);
        }
    }
}

#[tokio::test]
async fn max_frames_per_second_answers_a_tcp_flood_with_error_then_close_4429() {
    let (addr, app) = start(StompConfig {
        max_frames_per_second: 100,
        ..StompConfig::default()
    })
    .await;
    let mut events = app.subscribe_events();
    // Within the burst of 200 (CONNECT took one token), and heart-beat EOLs spend none.
    let mut polite = Client::stomp(addr, "1.2", "").await;
    let mut wire = "\n".repeat(5000);
    for _ in 0..150 {
        wire.push_str("SEND\ndestination:/topic/rate\n\nok\0");
    }
    wire.push_str("SEND\ndestination:/topic/rate\nreceipt:polite\n\nok\0");
    polite.send(&wire).await;
    assert_eq!(polite.frame().await.get("receipt-id"), Some("polite"));

    let mut flood = Client::stomp(addr, "1.2", "").await;
    let mut wire = String::new();
    for i in 0..300 {
        wire.push_str(&format!(
            "SEND\ndestination:/topic/rate\nreceipt:f{i}\n\nflood\0"
        ));
    }
    flood.send(&wire).await;
    // The 199 tokens CONNECT left (and the few refilled meanwhile) let that many frames
    // through; the next one gets the ERROR, with its receipt-id, and nothing after it runs.
    let mut answered = 0;
    let error = loop {
        let frame = flood.frame().await;
        if frame.command == Command::Error {
            break frame;
        }
        assert_eq!(
            frame.get("receipt-id"),
            Some(format!("f{answered}").as_str())
        );
        answered += 1;
    };
    assert!(
        (199..=210).contains(&answered),
        "{answered} frames got through"
    );
    assert_eq!(error.get("message"), Some("Rate limit exceeded"));
    assert_eq!(
        error.get("receipt-id"),
        Some(format!("f{answered}").as_str())
    );
    assert!(flood.next().await.is_none(), "expected EOF after ERROR");
    let detail = String::from_utf8_lossy(&error.body).into_owned();
    assert!(
        detail.contains("100") && detail.contains("max_frames_per_second"),
        "the detail names the limit and its key: {detail:?}"
    );
    assert_eq!(
        next_disconnect(&mut events).await,
        (4429, DisconnectCause::RateLimited)
    );
    assert_eq!(app.stats().rate_limited.load(Ordering::Relaxed), 1);

    // The bucket is per connection: the polite client is unaffected.
    polite
        .send("SEND\ndestination:/topic/rate\nreceipt:after\n\nok\0")
        .await;
    assert_eq!(polite.frame().await.get("receipt-id"), Some("after"));
}

#[tokio::test]
async fn max_frames_per_second_zero_disables_the_limit() {
    let (addr, app) = start(StompConfig {
        max_frames_per_second: 0,
        ..StompConfig::default()
    })
    .await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    // More than the default burst of 10 000 in one write.
    let mut wire = "SEND\ndestination:/topic/unlimited\n\nx\0".repeat(12_000);
    wire.push_str("SEND\ndestination:/topic/unlimited\nreceipt:all\n\nx\0");
    c.send(&wire).await;
    assert_eq!(c.frame().await.get("receipt-id"), Some("all"));
    assert_eq!(app.stats().rate_limited.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn idle_timeout_closes_a_silent_client_with_error_then_close_4408() {
    let (addr, app) = start(StompConfig {
        idle_timeout_ms: 300,
        ..StompConfig::default()
    })
    .await;
    let mut events = app.subscribe_events();
    let mut c = Client::stomp(addr, "1.2", "").await;
    let silent_since = Instant::now();
    let error = c.expect_error_then_close("Idle timeout").await;
    assert!(silent_since.elapsed() >= Duration::from_millis(250));
    let detail = String::from_utf8_lossy(&error.body).into_owned();
    assert!(
        detail.contains("300") && detail.contains("idle_timeout_ms"),
        "{detail:?}"
    );
    assert_eq!(
        next_disconnect(&mut events).await,
        (4408, DisconnectCause::IdleTimeout)
    );
    assert_eq!(app.stats().idle_timeouts.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn idle_timeout_spares_clients_that_send_heart_beats_or_frames() {
    let (addr, app) = start(StompConfig {
        idle_timeout_ms: 500,
        ..StompConfig::default()
    })
    .await;
    let mut beating = Client::stomp(addr, "1.2", "").await;
    let mut talking = Client::stomp(addr, "1.2", "").await;
    // Three times the timeout, each client sending something every 100 ms.
    for i in 0..15 {
        beating.send("\n").await;
        talking
            .send(&format!(
                "SEND\ndestination:/topic/idle\nreceipt:t{i}\n\nx\0"
            ))
            .await;
        assert_eq!(
            talking.frame().await.get("receipt-id"),
            Some(format!("t{i}").as_str())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in [&mut beating, &mut talking] {
        c.send("SEND\ndestination:/topic/idle\nreceipt:open\n\nx\0")
            .await;
        assert_eq!(c.frame().await.get("receipt-id"), Some("open"));
    }
    assert_eq!(app.stats().idle_timeouts.load(Ordering::Relaxed), 0);
}

/// The number in a `m{n}` MESSAGE body.
fn number(frame: &Frame) -> usize {
    let text = body(frame);
    text[1..text.find('-').unwrap()].parse().unwrap()
}

#[tokio::test]
async fn overflow_drop_keeps_a_subscriber_that_does_not_read_with_its_receipts_and_the_newest_messages()
 {
    let (addr, app) = start(StompConfig {
        send_buffer_size_limit: 64 * 1024,
        overflow_strategy: OverflowStrategy::Drop,
        // Long enough that only the buffer bound matters.
        send_time_limit_ms: 60_000,
        ..StompConfig::default()
    })
    .await;
    let dropped = || app.stats().dropped_overflow.load(Ordering::Relaxed);
    // A small receive buffer, so the kernel absorbs little before the queue fills.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = Client {
        stream: socket.connect(addr).await.unwrap(),
        parser: client_parser(),
        raw: Vec::new(),
        pending: VecDeque::new(),
    };
    slow.send(&connect_frame("1.2", "")).await;
    assert_eq!(slow.frame().await.command, Command::Connected);
    slow.subscribe("0", "/topic/drop", "").await;

    let mut publisher = Client::stomp(addr, "1.2", "").await;
    let pad = "p".repeat(8 * 1024);
    let mut published = 0;
    let mut publish_more = async |publisher: &mut Client, n: usize| {
        let batch: Vec<String> = (published..published + n)
            .map(|i| format!("m{i}-{pad}"))
            .collect();
        publish(publisher, "/topic/drop", &batch).await;
        published += n;
        published
    };
    // Until a whole batch is discarded: the writer could not take a single frame between two
    // batches, so the socket is full, the writer is blocked and the queue stays full.
    let before_mid = loop {
        let before = dropped();
        let total = publish_more(&mut publisher, 16).await;
        if dropped() - before == 16 {
            break total;
        }
        assert!(total < 4000, "the queue never stayed full");
    };
    // This RECEIPT waits in the full queue while newer MESSAGEs push older ones out. Frames
    // run in order, so once the second BEGIN (no receipt) is counted, the first one's RECEIPT
    // has been queued.
    slow.send("BEGIN\ntransaction:t\nreceipt:mid\n\n\0BEGIN\ntransaction:u\n\n\0")
        .await;
    let stats = app.stats();
    timeout(WAIT, async {
        while stats.frames_received(Command::Begin) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let total = publish_more(&mut publisher, 64).await;
    // Asked for after everything was published, so it is the last frame queued.
    slow.send("ABORT\ntransaction:t\nreceipt:late\n\n\0").await;

    let mut before = Vec::new();
    let mut after = Vec::new();
    let mut receipts = Vec::new();
    loop {
        let frame = slow.frame().await;
        match frame.command {
            Command::Message if receipts.is_empty() => before.push(number(&frame)),
            Command::Message => after.push(number(&frame)),
            Command::Receipt => {
                let id = frame.get("receipt-id").unwrap().to_owned();
                receipts.push(id.clone());
                if id == "late" {
                    break;
                }
            }
            _ => panic!("unexpected {frame:?}"),
        }
    }
    assert_eq!(receipts, ["mid", "late"]);
    assert!(before.iter().all(|&n| n < before_mid), "{before:?}");
    assert!(after.iter().all(|&n| n >= before_mid), "{after:?}");
    let numbers: Vec<usize> = before.iter().chain(&after).copied().collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "in order, with gaps: {numbers:?}"
    );
    assert_eq!(numbers.last(), Some(&(total - 1)), "the newest arrived");
    // Every message was either written or counted as dropped.
    assert_eq!(numbers.len() as u64 + dropped(), total as u64);
    assert!(numbers.len() < total);
    assert_eq!(app.stats().send_limit_closes.load(Ordering::Relaxed), 0);
    slow.send("SEND\ndestination:/topic/none\nreceipt:still-open\n\n\0")
        .await;
    assert_eq!(slow.frame().await.get("receipt-id"), Some("still-open"));
}
