//! The hixie-76 WebSocket transport through a real socket: the handshake's challenge answer,
//! and a large message trickled in small writes arriving whole and in order.

mod common;

use std::time::Duration;

use common::{IO_TIMEOUT, array_messages, start_gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Read until `wanted` bytes arrived.
async fn read_exact(stream: &mut TcpStream, wanted: usize) -> Vec<u8> {
    let mut data = vec![0; wanted];
    timeout(IO_TIMEOUT, stream.read_exact(&mut data))
        .await
        .expect("read in time")
        .expect("read");
    data
}

/// Read one `0x00 text 0xFF` frame.
async fn read_frame(stream: &mut TcpStream) -> String {
    let mut frame = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        timeout(IO_TIMEOUT, stream.read_exact(&mut byte))
            .await
            .expect("frame in time")
            .expect("read");
        if byte[0] == 0xFF {
            break;
        }
        frame.push(byte[0]);
    }
    assert_eq!(frame.first(), Some(&0x00), "a text frame starts with 0x00");
    String::from_utf8(frame[1..].to_vec()).expect("utf8")
}

#[tokio::test]
async fn a_large_message_trickled_in_small_writes_arrives_whole() {
    let addr = start_gateway("[[service]]\nprefix = \"/echo\"\napp = \"echo\"\n").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let head = format!(
        "GET /echo/000/h76/websocket HTTP/1.1\r\nHost: {addr}\r\nUpgrade: WebSocket\r\n\
         Connection: Upgrade\r\nOrigin: http://example.com\r\n\
         Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\nSec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        response.extend(read_exact(&mut stream, 1).await);
    }
    let response = String::from_utf8(response).unwrap();
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    stream.write_all(b"aaaaaaaa").await.unwrap();
    let expected = [
        0xca, 0x34, 0x00, 0xd8, 0xa5, 0x08, 0x47, 0x97, 0x2c, 0xd5, 0x71, 0x5a, 0xba, 0xbf, 0x43,
        0x7b,
    ];
    assert_eq!(read_exact(&mut stream, 16).await, expected);
    assert_eq!(read_frame(&mut stream).await, "o");

    let text = "x".repeat(256 * 1024);
    let mut wire = vec![0x00];
    wire.extend_from_slice(format!("[\"{text}\"]").as_bytes());
    wire.push(0xFF);
    wire.extend_from_slice(b"\x00[\"after\"]\xFF");
    for piece in wire.chunks(512) {
        stream.write_all(piece).await.unwrap();
    }
    // The echoes may come in one `a` frame or two.
    let mut echoed = Vec::new();
    while echoed.len() < 2 {
        let frame = timeout(Duration::from_secs(30), read_frame(&mut stream))
            .await
            .expect("the echo in time");
        echoed.extend(array_messages(frame.as_bytes()));
    }
    assert_eq!(echoed.len(), 2);
    assert!(echoed[0] == text, "the large message came back whole");
    assert_eq!(echoed[1], "after");
}
