//! SUBSCRIBE selectors (spec §7.3) through real loopback sockets, over STOMP/TCP and the raw
//! WebSocket carrier: with `[stomp] selectors = true` a subscription receives only messages
//! whose headers its selector selects, a selector that does not parse gets ERROR
//! `Invalid header: selector` naming the problem, and with selectors off (the default) the
//! header is ignored.

use futures_util::{SinkExt, StreamExt};
use sockjs_gateway::stomp::frame::{Command, Frame, Version};
use sockjs_gateway::stomp::{QueueSemantics, StompConfig};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

mod common;

use common::stomp::{Client, connect_frame, decode_single_frame, start};
use common::{IO_TIMEOUT, start_gateway};

fn with_selectors() -> StompConfig {
    StompConfig {
        selectors: true,
        ..StompConfig::default()
    }
}

const ALERTS: &str = "headers.type == 'alert' && headers.priority > 3";

/// SEND three messages to `destination`: an urgent alert, a minor alert and an info.
fn three_messages(destination: &str) -> String {
    [
        ("alert", "5", "urgent"),
        ("alert", "1", "minor"),
        ("info", "9", "info"),
    ]
    .iter()
    .map(|(kind, priority, body)| {
        format!("SEND\ndestination:{destination}\ntype:{kind}\npriority:{priority}\n\n{body}\0")
    })
    .collect()
}

#[tokio::test]
async fn over_tcp_a_selector_picks_the_messages_its_subscription_receives() {
    let (addr, _app) = start(with_selectors()).await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.subscribe("alerts", "/topic/events", &format!("selector:{ALERTS}\n"))
        .await;
    c.subscribe("all", "/topic/events", "").await;
    c.subscribe(
        "pattern",
        "/topic/*",
        "selector:headers.type in ('info') || headers.nothing != null\n",
    )
    .await;
    c.send(&three_messages("/topic/events")).await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let m = c.frame().await;
        assert_eq!(m.command, Command::Message, "{m:?}");
        seen.push((
            m.get("subscription").unwrap_or_default().to_owned(),
            String::from_utf8_lossy(&m.body).into_owned(),
        ));
    }
    seen.sort();
    let expected: Vec<(String, String)> = [
        ("alerts", "urgent"),
        ("all", "info"),
        ("all", "minor"),
        ("all", "urgent"),
        ("pattern", "info"),
    ]
    .iter()
    .map(|(s, b)| (s.to_string(), b.to_string()))
    .collect();
    assert_eq!(seen, expected);
    c.expect_silence(300).await;
}

#[tokio::test]
async fn a_selector_that_does_not_parse_is_refused_with_the_reason() {
    let (addr, _app) = start(with_selectors()).await;
    for (selector, detail) in [
        (
            "headers.type = 'alert'",
            "unexpected character '=' at offset 13; compare with ==: headers.type = 'alert'",
        ),
        (
            "type == 'alert'",
            "unexpected `type` at offset 0; expected `headers.<name>` or `headers['<name>']`",
        ),
        ("", "the selector is empty"),
    ] {
        let mut c = Client::stomp(addr, "1.2", "").await;
        c.send(&format!(
            "SUBSCRIBE\nid:0\ndestination:/topic/t\nselector:{selector}\nreceipt:r\n\n\0"
        ))
        .await;
        let error = c.expect_error_then_close("Invalid header: selector").await;
        assert_eq!(error.get("receipt-id"), Some("r"));
        let body = String::from_utf8_lossy(&error.body).into_owned();
        assert!(body.starts_with(detail), "{selector:?}: {body}");
    }
}

#[tokio::test]
async fn with_selectors_off_the_header_is_ignored() {
    let (addr, _app) = start(StompConfig::default()).await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.subscribe("0", "/topic/events", &format!("selector:{ALERTS}\n"))
        .await;
    c.subscribe("1", "/topic/other", "selector:this is not a selector\n")
        .await;
    c.send(&three_messages("/topic/events")).await;
    for body in ["urgent", "minor", "info"] {
        assert_eq!(&c.frame().await.body[..], body.as_bytes());
    }
}

#[tokio::test]
async fn selectors_are_refused_on_competing_queues() {
    let (addr, _app) = start(StompConfig {
        queue_semantics: QueueSemantics::Competing,
        ..with_selectors()
    })
    .await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send(&format!(
        "SUBSCRIBE\nid:0\ndestination:/queue/work\nselector:{ALERTS}\n\n\0"
    ))
    .await;
    let error = c.expect_error_then_close("Invalid header: selector").await;
    let body = String::from_utf8_lossy(&error.body).into_owned();
    assert!(
        body.contains("selectors are not supported on competing queues"),
        "{body}"
    );
    // Topics still take them on the same server.
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.subscribe("0", "/topic/t", &format!("selector:{ALERTS}\n"))
        .await;
}

/// The next STOMP frame on a raw WebSocket (one frame per message; heart-beats skipped).
async fn ws_frame<S>(ws: &mut S) -> Frame
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = timeout(IO_TIMEOUT, ws.next())
            .await
            .expect("a WebSocket message in time")
            .expect("the WebSocket is open")
            .expect("a WebSocket message");
        let payload = match message {
            Message::Text(text) => text.as_bytes().to_vec(),
            Message::Binary(data) => data.to_vec(),
            _ => continue,
        };
        if payload.iter().all(|b| *b == b'\n' || *b == b'\r') {
            continue;
        }
        return decode_single_frame(&payload, Version::V1_2);
    }
}

#[tokio::test]
async fn over_websocket_a_selector_picks_the_messages_too() {
    let addr = start_gateway(
        "[[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\n[stomp]\nselectors = true\n",
    )
    .await;
    let mut request = format!("ws://{addr}/stomp/websocket")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "v12.stomp".parse().expect("header"),
    );
    let (mut ws, _) = timeout(IO_TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let send = |text: String| Message::Text(text.into());
    ws.send(send(connect_frame("1.2", ""))).await.unwrap();
    assert_eq!(ws_frame(&mut ws).await.command, Command::Connected);
    ws.send(send(format!(
        "SUBSCRIBE\nid:alerts\ndestination:/topic/events\nselector:{ALERTS}\nreceipt:r\n\n\0"
    )))
    .await
    .unwrap();
    assert_eq!(ws_frame(&mut ws).await.command, Command::Receipt);
    ws.send(send(three_messages("/topic/events")))
        .await
        .unwrap();
    let m = ws_frame(&mut ws).await;
    assert_eq!(m.get("subscription"), Some("alerts"));
    assert_eq!(&m.body[..], b"urgent");
    // Nothing else was selected: the next frame is the receipt of a later frame.
    ws.send(send(
        "SEND\ndestination:/topic/none\nreceipt:end\n\n\0".into(),
    ))
    .await
    .unwrap();
    let next = ws_frame(&mut ws).await;
    assert_eq!(next.command, Command::Receipt, "{next:?}");
    assert_eq!(next.get("receipt-id"), Some("end"));
    ws.send(send(
        "SUBSCRIBE\nid:bad\ndestination:/topic/x\nselector:headers.a >\n\n\0".into(),
    ))
    .await
    .unwrap();
    let error = ws_frame(&mut ws).await;
    assert_eq!(error.command, Command::Error);
    assert_eq!(error.get("message"), Some("Invalid header: selector"));
}
