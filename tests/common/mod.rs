//! Test support: an in-process gateway on a free loopback port and a small HTTP/1.1 client
//! over a real socket that can read a chunked response one chunk at a time.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use sockjs_gateway::Gateway;
use sockjs_gateway::config::Config;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::timeout;

/// Every read in tests gives up after this long.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub mod backend;
pub mod stomp;

/// Start a gateway with `toml` on 127.0.0.1:0 and return its address.
pub async fn start_gateway(toml: &str) -> SocketAddr {
    start_gateway_with_stomp(toml).await.0
}

/// Like [`start_gateway`], also returning the gateway's STOMP core (broker, stats, events).
pub async fn start_gateway_with_stomp(toml: &str) -> (SocketAddr, sockjs_gateway::stomp::StompApp) {
    let config = Config::from_toml(toml).expect("test config");
    let gateway = Gateway::from_config(&config).expect("gateway");
    let stomp = gateway.stomp().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _keep = tx;
        let _ = gateway.serve(listener, rx).await;
    });
    (addr, stomp)
}

/// A response head plus a reader positioned at the start of the body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
    chunked: bool,
    content_length: Option<usize>,
}

impl Response {
    /// The first value of a header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next chunk of a chunked body, or None at the terminating chunk.
    pub async fn chunk(&mut self) -> Option<Vec<u8>> {
        assert!(self.chunked, "not a chunked response");
        let mut line = String::new();
        timeout(IO_TIMEOUT, self.reader.read_line(&mut line))
            .await
            .expect("chunk size timeout")
            .expect("read");
        let size = usize::from_str_radix(line.trim(), 16).expect("chunk size");
        let mut data = vec![0; size + 2];
        timeout(IO_TIMEOUT, self.reader.read_exact(&mut data))
            .await
            .expect("chunk timeout")
            .expect("read");
        data.truncate(size);
        (size > 0).then_some(data)
    }

    /// The whole body.
    pub async fn body(mut self) -> Vec<u8> {
        if self.chunked {
            let mut all = Vec::new();
            while let Some(c) = self.chunk().await {
                all.extend(c);
            }
            return all;
        }
        let mut data = vec![0; self.content_length.unwrap_or(0)];
        timeout(IO_TIMEOUT, self.reader.read_exact(&mut data))
            .await
            .expect("body timeout")
            .expect("read");
        data
    }
}

/// Send one HTTP/1.1 request on a new connection and read the response head.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    request_from("127.0.0.1", addr, method, path, headers, body).await
}

/// Like [`request`], from a chosen loopback source address.
pub async fn request_from(
    source: &str,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("source"))
        .expect("bind source");
    let stream = socket.connect(addr).await.expect("connect");
    let (read, mut writer) = stream.into_split();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes()).await.expect("write");
    writer.write_all(body).await.expect("write body");
    let mut reader = BufReader::new(read);
    let mut status_line = String::new();
    timeout(IO_TIMEOUT, reader.read_line(&mut status_line))
        .await
        .expect("status timeout")
        .expect("read");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        timeout(IO_TIMEOUT, reader.read_line(&mut line))
            .await
            .expect("header timeout")
            .expect("read");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let content_length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok());
    Response {
        status,
        headers,
        reader,
        writer,
        chunked,
        content_length,
    }
}

/// POST and return status and body.
pub async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let resp = request(addr, "POST", path, &[], body).await;
    let status = resp.status;
    (status, resp.body().await)
}

/// The messages of an `a[...]` frame (with or without a trailing newline).
pub fn array_messages(frame: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(frame).expect("utf8").trim_end();
    let json = text
        .strip_prefix('a')
        .unwrap_or_else(|| panic!("not an array frame: {text}"));
    serde_json::from_str(json).expect("array json")
}
