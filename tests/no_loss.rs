//! No message is lost or duplicated while no receiver is attached, when a receiver ends at
//! its response limit and the client switches transport, or when a second receiver is
//! refused (sockjs.md §6.3–§6.6). Real sockets against an in-process gateway.

mod common;

use common::{array_messages, post, request, start_gateway};

const CONFIG: &str = r#"
[[service]]
prefix = "/echo"
app = "echo"
response_limit = 4096
disconnect_delay = 2
"#;

fn send_body(range: std::ops::Range<usize>) -> Vec<u8> {
    let msgs: Vec<String> = range.map(|i| format!("m{i}")).collect();
    serde_json::to_vec(&msgs).unwrap()
}

#[tokio::test]
async fn messages_queued_while_detached_arrive_once_in_order() {
    let addr = start_gateway(CONFIG).await;
    let (status, body) = post(addr, "/echo/000/q1/xhr", b"").await;
    assert_eq!((status, body.as_slice()), (200, &b"o\n"[..]));
    for batch in 0..5 {
        let (status, _) = post(
            addr,
            "/echo/000/q1/xhr_send",
            &send_body(batch * 20..batch * 20 + 20),
        )
        .await;
        assert_eq!(status, 204);
    }
    let (_, body) = post(addr, "/echo/000/q1/xhr", b"").await;
    let expected: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    assert_eq!(
        array_messages(&body),
        expected,
        "one frame, all messages, in order"
    );
}

#[tokio::test]
async fn switching_from_streaming_to_polling_loses_nothing() {
    let addr = start_gateway(CONFIG).await;
    let mut stream = request(addr, "POST", "/echo/000/sw/xhr_streaming", &[], b"").await;
    assert_eq!(stream.chunk().await.unwrap().len(), 2049);
    assert_eq!(stream.chunk().await.unwrap(), b"o\n");
    // 400 messages of ~100 bytes overflow the 4096-byte response limit many times over.
    let pad = "x".repeat(100);
    let total = 400;
    for start in (0..total).step_by(50) {
        let msgs: Vec<String> = (start..start + 50).map(|i| format!("{i}:{pad}")).collect();
        let (status, _) = post(
            addr,
            "/echo/000/sw/xhr_send",
            &serde_json::to_vec(&msgs).unwrap(),
        )
        .await;
        assert_eq!(status, 204);
    }
    let mut received = Vec::new();
    while let Some(chunk) = stream.chunk().await {
        received.extend(array_messages(&chunk));
    }
    assert!(
        received.len() < total,
        "the stream ended at its response limit"
    );
    for _ in 0..total {
        if received.len() >= total {
            break;
        }
        let (_, body) = post(addr, "/echo/000/sw/xhr", b"").await;
        received.extend(array_messages(&body));
    }
    let expected: Vec<String> = (0..total).map(|i| format!("{i}:{pad}")).collect();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn a_refused_second_receiver_takes_no_messages() {
    let addr = start_gateway(CONFIG).await;
    let (_, body) = post(addr, "/echo/000/busy/xhr", b"").await;
    assert_eq!(body, b"o\n");
    let mut first = request(addr, "POST", "/echo/000/busy/xhr_streaming", &[], b"").await;
    assert_eq!(first.chunk().await.unwrap().len(), 2049);
    let (_, refused) = post(addr, "/echo/000/busy/xhr", b"").await;
    assert_eq!(refused, b"c[2010,\"Another connection still open\"]\n");
    post(addr, "/echo/000/busy/xhr_send", b"[\"a\",\"b\"]").await;
    assert_eq!(array_messages(&first.chunk().await.unwrap()), ["a", "b"]);
}

#[tokio::test]
async fn an_aborted_receiver_ends_the_session_and_the_id_starts_afresh() {
    let addr = start_gateway(CONFIG).await;
    let mut stream = request(addr, "POST", "/echo/000/ab/xhr_streaming", &[], b"").await;
    stream.chunk().await.unwrap();
    assert_eq!(stream.chunk().await.unwrap(), b"o\n");
    drop(stream);
    let (_, body) = post(addr, "/echo/000/ab/xhr", b"").await;
    assert_eq!(body, b"o\n", "a new session after the abort");
}

#[tokio::test]
async fn a_session_expires_after_the_disconnect_delay() {
    let addr =
        start_gateway(&CONFIG.replace("disconnect_delay = 2", "disconnect_delay = 0.3")).await;
    assert_eq!(post(addr, "/echo/000/exp/xhr", b"").await.1, b"o\n");
    let detached = std::time::Instant::now();
    assert_eq!(
        post(addr, "/echo/000/exp/xhr_send", b"[\"x\"]").await.0,
        204
    );
    // Sends do not keep a session without a receiver alive: it expires on time.
    let deadline = detached + std::time::Duration::from_secs(10);
    while post(addr, "/echo/000/exp/xhr_send", b"[\"x\"]").await.0 != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "the session never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let lived = detached.elapsed();
    assert!(
        lived >= std::time::Duration::from_millis(250),
        "expired after {lived:?}"
    );
    assert_eq!(post(addr, "/echo/000/exp/xhr", b"").await.1, b"o\n");
}
