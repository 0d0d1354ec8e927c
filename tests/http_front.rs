//! The HTTP front (`src/front.rs`) through real sockets: keep-alive and pipelined requests,
//! small bodies read by the front, the hand-over to hyper at the first request it leaves to
//! hyper (a chunked body), heads that are too large, client aborts, and a streaming client
//! that stops reading, on both sides of the hand-over.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{IO_TIMEOUT, post, start_gateway};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::timeout;

const ECHO: &str = "[[service]]\nprefix = \"/echo\"\napp = \"echo\"\n";

/// One connection, for several requests.
struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// A response read off a kept-alive connection.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let (read, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        Conn {
            reader: BufReader::new(read),
            writer,
        }
    }

    async fn send(&mut self, wire: &str) {
        self.writer.write_all(wire.as_bytes()).await.unwrap();
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let n = timeout(IO_TIMEOUT, self.reader.read_line(&mut line))
            .await
            .expect("line in time")
            .unwrap();
        assert!(n > 0, "connection closed");
        line
    }

    /// The next response head and its whole body (Content-Length or chunked).
    async fn response(&mut self) -> Resp {
        let status_line = self.line().await;
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':').unwrap();
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if resp.header("transfer-encoding") == Some("chunked") {
            while let Some(chunk) = self.chunk().await {
                resp.body.extend(chunk);
            }
        } else {
            let len: usize = resp
                .header("content-length")
                .unwrap_or("0")
                .parse()
                .unwrap();
            let mut body = vec![0; len];
            timeout(IO_TIMEOUT, self.reader.read_exact(&mut body))
                .await
                .expect("body in time")
                .unwrap();
            resp.body = body;
        }
        resp
    }

    async fn chunk(&mut self) -> Option<Vec<u8>> {
        let size = usize::from_str_radix(self.line().await.trim(), 16).unwrap();
        let mut data = vec![0; size + 2];
        timeout(IO_TIMEOUT, self.reader.read_exact(&mut data))
            .await
            .expect("chunk in time")
            .unwrap();
        data.truncate(size);
        (size > 0).then_some(data)
    }

    /// Start an xhr-streaming receiver for `path` on this connection and read its head and
    /// prelude.
    async fn start_stream(&mut self, path: &str) {
        self.send(&post_wire(path, "")).await;
        let status = self.line().await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        while !self.line().await.trim_end().is_empty() {}
        assert_eq!(self.chunk().await.unwrap().len(), 2049, "the prelude");
    }

    /// Whether the server closes the connection within `within`.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let mut sink = Vec::new();
        timeout(within, self.reader.read_to_end(&mut sink))
            .await
            .is_ok()
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
}

fn post_wire(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn one_connection_carries_info_a_stream_and_polls_in_order() {
    let addr = start_gateway(ECHO).await;
    let mut conn = Conn::open(addr).await;
    // Pipelined: both requests in one write, answered in order.
    conn.send(&format!(
        "{}{}",
        get("/echo/info"),
        post_wire("/echo/000/ka/xhr", "")
    ))
    .await;
    let info = conn.response().await;
    assert_eq!(info.status, 200);
    assert!(info.header("date").is_some());
    assert!(String::from_utf8_lossy(&info.body).contains("\"websocket\":true"));
    let open = conn.response().await;
    assert_eq!(open.body, b"o\n");
    assert_eq!(open.header("transfer-encoding"), Some("chunked"));
    // A stream on the same connection, ended by the response limit... or here by a close.
    conn.start_stream("/echo/000/ka/xhr_streaming").await;
    assert_eq!(
        post(addr, "/echo/000/ka/xhr_send", b"[\"hi\"]").await.0,
        204
    );
    assert_eq!(conn.chunk().await.unwrap(), b"a[\"hi\"]\n");
}

/// A chunked `xhr_send`: a body the front leaves to hyper.
fn chunked_send(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    )
}

#[tokio::test]
async fn small_bodies_are_read_by_the_front_and_keep_the_connection_there() {
    let addr = start_gateway(ECHO).await;
    let mut conn = Conn::open(addr).await;
    conn.send(&post_wire("/echo/000/sb/xhr", "")).await;
    assert_eq!(conn.response().await.body, b"o\n");
    // Pipelined: a send with a body, then a poll, in one write.
    conn.send(&format!(
        "{}{}",
        post_wire("/echo/000/sb/xhr_send", "[\"a\",\"b\"]"),
        post_wire("/echo/000/sb/xhr", "")
    ))
    .await;
    assert_eq!(conn.response().await.status, 204);
    assert_eq!(conn.response().await.body, b"a[\"a\",\"b\"]\n");
    // Broken JSON gets the protocol's 500 here too, and the connection goes on.
    conn.send(&post_wire("/echo/000/sb/xhr_send", "[\"a\""))
        .await;
    let broken = conn.response().await;
    assert_eq!(broken.status, 500);
    assert_eq!(broken.body, b"Broken JSON encoding.");
    conn.send(&get("/echo/info")).await;
    assert_eq!(conn.response().await.status, 200);
}

#[tokio::test]
async fn a_chunked_body_hands_the_connection_to_hyper_which_keeps_serving_it() {
    let addr = start_gateway(ECHO).await;
    let mut conn = Conn::open(addr).await;
    conn.send(&post_wire("/echo/000/h/xhr", "")).await;
    assert_eq!(conn.response().await.body, b"o\n");
    conn.send(&chunked_send("/echo/000/h/xhr_send", "[\"x\"]"))
        .await;
    assert_eq!(conn.response().await.status, 204);
    conn.send(&post_wire("/echo/000/h/xhr", "")).await;
    assert_eq!(conn.response().await.body, b"a[\"x\"]\n");
    conn.send(&get("/echo/info")).await;
    assert_eq!(conn.response().await.status, 200);
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let addr = start_gateway(ECHO).await;
    let mut conn = Conn::open(addr).await;
    conn.send("GET /echo/info HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    let resp = conn.response().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(conn.closed_within(IO_TIMEOUT).await);
}

#[tokio::test]
async fn a_head_over_max_header_bytes_gets_431() {
    let addr = start_gateway(&format!("[server]\nmax_header_bytes = 8192\n{ECHO}")).await;
    let mut conn = Conn::open(addr).await;
    conn.send(&format!(
        "GET /echo/info HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    ))
    .await;
    let status = conn.line().await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    assert!(conn.closed_within(IO_TIMEOUT).await);
    // The limit is exact: a complete head a little over it, sent in one write, is refused too.
    let addr = start_gateway(&format!("[server]\nmax_header_bytes = 10000\n{ECHO}")).await;
    let mut conn = Conn::open(addr).await;
    conn.send(&format!(
        "GET /echo/info HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_100)
    ))
    .await;
    let status = conn.line().await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
}

#[tokio::test]
async fn a_body_slower_than_the_body_timeout_gets_408() {
    let addr = start_gateway(ECHO).await;
    let mut conn = Conn::open(addr).await;
    conn.send(&post_wire("/echo/000/slow/xhr", "")).await;
    assert_eq!(conn.response().await.body, b"o\n");
    // 100 bytes declared, 10 sent, then nothing: the front waits out the 30 s body timeout.
    conn.send(
        "POST /echo/000/slow/xhr_send HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n[\"0123456",
    )
    .await;
    let mut status = String::new();
    timeout(Duration::from_secs(40), conn.reader.read_line(&mut status))
        .await
        .expect("answered within the body timeout and some slack")
        .unwrap();
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    assert!(conn.closed_within(IO_TIMEOUT).await);
}

#[tokio::test]
async fn a_poll_waiting_at_shutdown_gets_the_goodbye_then_the_connection_closes() {
    let config = sockjs_gateway::config::Config::from_toml(ECHO).unwrap();
    let gateway = sockjs_gateway::Gateway::from_config(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = gateway.serve(listener, stopped).await;
    });
    let mut conn = Conn::open(addr).await;
    conn.send(&post_wire("/echo/000/bye/xhr", "")).await;
    assert_eq!(conn.response().await.body, b"o\n");
    // A poll waits; the drain closes the session, the poll answers the goodbye, and once
    // every session has its goodbye the server closes the kept-alive connection.
    conn.send(&post_wire("/echo/000/bye/xhr", "")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(true).unwrap();
    let resp = conn.response().await;
    assert_eq!(resp.body, b"c[1001,\"Going away\"]\n");
    assert!(conn.closed_within(IO_TIMEOUT).await);
    // No new connection is accepted any more.
    let refused = tokio::time::timeout(IO_TIMEOUT, async {
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Err(_) => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert!(refused.is_ok(), "the listener was not closed");
}

#[tokio::test]
async fn a_client_that_aborts_a_stream_ends_its_session() {
    let addr = start_gateway(ECHO).await;
    let mut conn = Conn::open(addr).await;
    conn.start_stream("/echo/000/ab/xhr_streaming").await;
    assert_eq!(conn.chunk().await.unwrap(), b"o\n");
    drop(conn);
    // The abort closes the session (§6.6): it is gone, a send finds nothing.
    until_gone(addr, "/echo/000/ab/xhr_send").await;
}

/// Wait (bounded) until sends to a session get 404: the session has ended.
async fn until_gone(addr: SocketAddr, send_path: &str) {
    let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
    while post(addr, send_path, b"[\"x\"]").await.0 != 404 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session still lives"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Open an xhr-streaming receiver on a socket with a tiny receive buffer, optionally after a
/// first request with a body (which moves the connection to hyper), make the session produce
/// far more than the socket can hold, and never read. The session must end within the send
/// time limit plus slack, and the connection must be dropped.
async fn stalled_stream_is_terminated(through_hyper: bool) {
    let config = "[[service]]\nprefix = \"/amplify\"\napp = \"amplify\"\nsend_time_limit = 1\n\
                  max_queued_bytes = 67108864\nresponse_limit = 67108864\n";
    let addr = start_gateway(config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (read, writer) = stream.into_split();
    let mut conn = Conn {
        reader: BufReader::new(read),
        writer,
    };
    let sid = if through_hyper {
        "viahyper"
    } else {
        "viafront"
    };
    if through_hyper {
        conn.send(&chunked_send("/amplify/000/nosuch/xhr_send", "[\"1\"]"))
            .await;
        assert_eq!(conn.response().await.status, 404);
    }
    conn.send(&post_wire(&format!("/amplify/000/{sid}/xhr_streaming"), ""))
        .await;
    let status = conn.line().await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // 64 requests for 256 KiB each: 16 MiB the client never reads.
    let many = format!("[{}]", vec!["\"18\""; 64].join(","));
    assert_eq!(
        post(
            addr,
            &format!("/amplify/000/{sid}/xhr_send"),
            many.as_bytes()
        )
        .await
        .0,
        204
    );
    // The stalled session is terminated after the 1 s send time limit: sends then find
    // nothing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while post(addr, &format!("/amplify/000/{sid}/xhr_send"), b"[\"1\"]")
        .await
        .0
        != 404
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled session was never terminated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        conn.closed_within(Duration::from_secs(10)).await,
        "the stalled connection was dropped"
    );
}

#[tokio::test]
async fn a_stream_that_stops_being_read_is_terminated_on_the_front() {
    stalled_stream_is_terminated(false).await;
}

#[tokio::test]
async fn a_stream_that_stops_being_read_is_terminated_on_hyper() {
    stalled_stream_is_terminated(true).await;
}

#[tokio::test]
async fn a_client_that_pipelines_too_much_while_streaming_is_dropped() {
    let addr = start_gateway(&format!("[server]\nmax_header_bytes = 8192\n{ECHO}")).await;
    let mut conn = Conn::open(addr).await;
    conn.start_stream("/echo/000/pipe/xhr_streaming").await;
    assert_eq!(conn.chunk().await.unwrap(), b"o\n");
    // More than a request head may hold, sent while the response streams.
    conn.send(&"x".repeat(9000)).await;
    assert!(
        conn.closed_within(IO_TIMEOUT).await,
        "the connection was dropped"
    );
    until_gone(addr, "/echo/000/pipe/xhr_send").await;
}

/// Requests with a missing (HTTP/1.1), repeated or empty `Host` (RFC 9112 §3.2).
const BAD_HOSTS: [(&str, &str); 4] = [
    ("missing", ""),
    ("repeated", "Host: a\r\nHost: b\r\n"),
    ("repeated, one empty", "Host: a\r\nHost:\r\n"),
    ("empty", "Host: \r\n"),
];

/// Send `wire` on a new connection; the response, and whether the server then closed the
/// connection (only waited for after a 400).
async fn answer(addr: SocketAddr, wire: &str) -> (Resp, bool) {
    let mut conn = Conn::open(addr).await;
    conn.send(wire).await;
    let resp = conn.response().await;
    let closed = resp.status == 400 && conn.closed_within(IO_TIMEOUT).await;
    (resp, closed)
}

#[tokio::test]
async fn a_bad_host_gets_400_from_the_front() {
    let addr = start_gateway(ECHO).await;
    for (name, host) in BAD_HOSTS {
        for wire in [
            format!("GET /echo/info HTTP/1.1\r\n{host}\r\n"),
            format!("POST /echo/000/h/xhr HTTP/1.1\r\n{host}Content-Length: 0\r\n\r\n"),
        ] {
            let (resp, closed) = answer(addr, &wire).await;
            assert_eq!(resp.status, 400, "{name}: {wire:?}");
            assert!(
                String::from_utf8_lossy(&resp.body).contains("Host"),
                "{resp:?}"
            );
            assert!(closed, "{name}: the connection is closed after the 400");
        }
    }
    let (resp, _) = answer(addr, &get("/echo/info")).await;
    assert_eq!(resp.status, 200, "one Host is served");
}

#[tokio::test]
async fn a_bad_host_gets_400_from_hyper_too() {
    let addr = start_gateway(ECHO).await;
    // A chunked body and an HTTP/1.0 head are hyper's to serve.
    for (name, host) in BAD_HOSTS {
        let wire = format!(
            "POST /echo/000/h/xhr_send HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n\
             6\r\n[\"ab\"]\r\n0\r\n\r\n"
        );
        let (resp, closed) = answer(addr, &wire).await;
        assert_eq!(resp.status, 400, "{name}: {wire:?}");
        assert!(closed, "{name}: the connection is closed after the 400");
    }
    for (name, host) in BAD_HOSTS.iter().filter(|(name, _)| *name != "missing") {
        let wire = format!("GET /echo/info HTTP/1.0\r\n{host}\r\n");
        let (resp, _) = answer(addr, &wire).await;
        assert_eq!(resp.status, 400, "HTTP/1.0, {name}");
    }
    // HTTP/1.0 does not need a Host.
    let (resp, _) = answer(addr, "GET /echo/info HTTP/1.0\r\n\r\n").await;
    assert_eq!(resp.status, 200);
    let wire = "POST /echo/000/h1/xhr_send HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
                6\r\n[\"ab\"]\r\n0\r\n\r\n";
    let (resp, _) = answer(addr, wire).await;
    assert_eq!(resp.status, 404, "one Host is served (no such session)");
}
