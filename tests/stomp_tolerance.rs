//! Tolerance that costs nothing, through real loopback sockets: a CONNECT whose body is only
//! EOLs (RabbitMQ's own test suite sends one) and stray NUL/EOL bytes between frames are
//! accepted and ignored at every version; anything else keeps its error.

use sockjs_gateway::stomp::StompConfig;
use sockjs_gateway::stomp::frame::Command;

mod common;

use common::stomp::{Client, start};

#[tokio::test]
async fn eol_connect_bodies_and_stray_nuls_are_ignored_at_every_version() {
    let (addr, _app) = start(StompConfig::default()).await;
    for version in ["1.0", "1.1", "1.2"] {
        let mut c = Client::open(addr).await;
        c.send(&format!(
            "\0\nCONNECT\naccept-version:{version}\nlogin:guest\npasscode:guest\n\n\n\0\0\r\n"
        ))
        .await;
        let connected = c.frame().await;
        assert_eq!(
            connected.command,
            Command::Connected,
            "{version}: {connected:?}"
        );
        c.send(
            "SUBSCRIBE\nid:0\ndestination:/topic/t\n\n\0\0\0\nSEND\ndestination:/topic/t\n\nhi\0\0",
        )
        .await;
        let message = c.frame().await;
        assert_eq!(message.command, Command::Message, "{version}: {message:?}");
        assert_eq!(&message.body[..], b"hi");
        c.send("DISCONNECT\nreceipt:bye\n\n\0\0").await;
        let receipt = c.frame().await;
        assert_eq!(receipt.get("receipt-id"), Some("bye"), "{version}");
    }
    // Anything else keeps its error.
    for (wire, message) in [
        ("CONNECT\naccept-version:1.2\n\nhello\0", "Body not allowed"),
        ("CONNECT\naccept-version:1.2\n\n\r\0", "Body not allowed"),
    ] {
        let mut c = Client::open(addr).await;
        c.send(wire).await;
        c.expect_error_then_close(message).await;
    }
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.send("SUBSCRIBE\nid:0\ndestination:/topic/t\n\n\n\0")
        .await;
    c.expect_error_then_close("Body not allowed").await;
}
