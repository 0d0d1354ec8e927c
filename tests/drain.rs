//! The graceful drain, as systemd, Docker and Kubernetes trigger it: a real gateway process
//! (the built binary) holds sessions on every SockJS transport (websocket, raw websocket,
//! xhr-streaming, xhr-polling, eventsource, htmlfile, jsonp-polling), STOMP over TCP, over
//! the SockJS websocket and over the raw websocket; the test sends it SIGTERM and checks
//! that every client saw its goodbye (`c[1001,"Going away"]`, a 1001 close, STOMP ERROR
//! `Server shutting down` then the close or a FIN), that no stream ended abruptly (no close
//! without a frame, no chunked body cut short), that the goodbyes were spread over the drain
//! window rather than sent at once, and that the process exited 0.

use std::io::{BufRead, BufReader as StdBufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The drain window the gateway gets.
const DRAIN_TIMEOUT_S: u64 = 4;
/// Every wait of a client: generous, for a loaded machine, yet bounded.
const WAIT: Duration = Duration::from_secs(30);
/// The SockJS goodbye, as a JSON frame.
const GOODBYE: &str = "c[1001,\"Going away\"]";

/// A gateway process and the lines it logs.
struct Gateway {
    child: Child,
    http: SocketAddr,
    tcp: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Only if a check failed before the process exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the built gateway with a config of its own on free loopback ports.
fn start_gateway(dir: &std::path::Path) -> Gateway {
    let config = dir.join("drain.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = {DRAIN_TIMEOUT_S}\n\n\
             [[service]]\nprefix = \"/echo\"\napp = \"echo\"\n\n\
             [[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\n\n\
             [stomp]\ntcp_listen = \"127.0.0.1:0\"\nheart_beat = \"0,0\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockjs-gateway"))
        .arg("--config")
        .arg(&config)
        .env("SOCKJS_GATEWAY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the gateway binary");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (addrs_tx, addrs_rx) = std::sync::mpsc::channel();
    let lines = log.clone();
    std::thread::spawn(move || {
        let mut tcp = None;
        for line in StdBufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("STOMP over TCP listening on ").nth(1) {
                tcp = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            }
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let http: Option<SocketAddr> =
                    rest.split_whitespace().next().and_then(|a| a.parse().ok());
                let _ = addrs_tx.send((http, tcp));
            }
            lines.lock().unwrap().push(line);
        }
    });
    let (http, tcp) = addrs_rx
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("no 'listening on' line; log: {:?}", log.lock().unwrap()));
    Gateway {
        child,
        http: http.expect("the HTTP address"),
        tcp: tcp.expect("the STOMP TCP address"),
        log,
    }
}

/// What one client saw: when its goodbye arrived.
type Seen = Result<Instant, String>;

/// A bounded wait, failing with what was awaited.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> Result<T, String> {
    timeout(WAIT, future)
        .await
        .map_err(|_| format!("timed out waiting for {what}"))
}

/// One keep-alive HTTP/1.1 connection, read one response (and one chunk) at a time.
struct Http {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Http {
    async fn open(addr: SocketAddr) -> Http {
        let (read, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        Http {
            reader: BufReader::new(read),
            writer,
        }
    }

    async fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        let n = within("a line", self.reader.read_line(&mut line))
            .await?
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err("the connection ended mid-response".into());
        }
        Ok(line)
    }

    /// Send a bodiless request and read the response head; true if the body is chunked.
    async fn start(&mut self, method: &str, path: &str) -> Result<bool, String> {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        self.writer
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        let status = self.line().await?;
        if !status.starts_with("HTTP/1.1 200") {
            return Err(format!("{method} {path}: {status}"));
        }
        let mut chunked = false;
        loop {
            let line = self.line().await?;
            if line.trim_end().is_empty() {
                return Ok(chunked);
            }
            chunked |= line
                .to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked");
        }
    }

    /// The next chunk; None at the terminating chunk (the body ended cleanly).
    async fn chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        let size = self.line().await?;
        let size = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| format!("bad chunk size {size:?}"))?;
        let mut data = vec![0; size + 2];
        within("a chunk", self.reader.read_exact(&mut data))
            .await?
            .map_err(|e| format!("chunk cut short: {e}"))?;
        data.truncate(size);
        Ok((size > 0).then_some(data))
    }

    /// A whole chunked body.
    async fn body(&mut self) -> Result<String, String> {
        let mut all = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            all.extend(chunk);
        }
        Ok(String::from_utf8_lossy(&all).into_owned())
    }
}

/// A streaming receiver (xhr-streaming, eventsource, htmlfile): `o` first, then the goodbye,
/// then the end of the body.
async fn streaming(
    addr: SocketAddr,
    method: &str,
    path: String,
    ready: oneshot::Sender<()>,
) -> Seen {
    let mut http = Http::open(addr).await;
    if !http.start(method, &path).await? {
        return Err(format!("{path}: not chunked"));
    }
    let mut ready = Some(ready);
    loop {
        let Some(chunk) = http.chunk().await? else {
            return Err(format!("{path}: the body ended before the goodbye"));
        };
        let text = String::from_utf8_lossy(&chunk).into_owned();
        let opened = text.contains("\"o\"") || text.contains("data: o\r") || text == "o\n";
        if opened && let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        let unescaped = text.replace("\\\"", "\"");
        if unescaped.contains(GOODBYE) {
            let at = Instant::now();
            return match http.chunk().await? {
                None => Ok(at),
                Some(more) => Err(format!(
                    "{path}: more after the goodbye: {:?}",
                    String::from_utf8_lossy(&more)
                )),
            };
        }
    }
}

/// A polling receiver (xhr-polling, jsonp-polling) on one keep-alive connection: polls
/// until a poll answers the goodbye.
async fn polling(addr: SocketAddr, method: &str, path: String, ready: oneshot::Sender<()>) -> Seen {
    let mut http = Http::open(addr).await;
    http.start(method, &path).await?;
    let first = http.body().await?;
    if !first.contains('o') {
        return Err(format!("{path}: first poll answered {first:?}"));
    }
    let _ = ready.send(());
    loop {
        http.start(method, &path).await?;
        let body = http.body().await?.replace("\\\"", "\"");
        if body.contains(GOODBYE) {
            return Ok(Instant::now());
        }
        if body.contains("c[") {
            return Err(format!("{path}: closed with {body:?}"));
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn websocket(addr: SocketAddr, path: &str, protocol: Option<&str>) -> Ws {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(protocol) = protocol {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().unwrap());
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap()
        .0
}

/// Read a WebSocket until its close frame; the texts before it, the close code, and when
/// the first text matching `goodbye` (or the close, when None) arrived. A socket that ends
/// without a close frame (what a browser reports as 1006) is an error.
async fn until_close(
    ws: &mut Ws,
    goodbye: Option<&str>,
) -> Result<(Vec<String>, u16, Instant), String> {
    let mut texts = Vec::new();
    let mut seen = None;
    loop {
        match within("a WebSocket message", ws.next()).await? {
            Some(Ok(Message::Text(t))) => {
                let t = t.to_string();
                if seen.is_none() && goodbye.is_some_and(|g| t.contains(g)) {
                    seen = Some(Instant::now());
                }
                texts.push(t);
            }
            Some(Ok(Message::Close(frame))) => {
                let at = seen.unwrap_or_else(Instant::now);
                let code = frame.map_or(1005, |f| u16::from(f.code));
                return Ok((texts, code, at));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                return Err(format!(
                    "the socket ended without a close frame (1006): {e}"
                ));
            }
            None => return Err("the socket ended without a close frame (1006)".into()),
        }
    }
}

/// The SockJS websocket: `o`, then `c[1001,"Going away"]` and a 1001 close.
async fn sockjs_websocket(addr: SocketAddr, ready: oneshot::Sender<()>) -> Seen {
    let mut ws = websocket(addr, "/echo/000/ws/websocket", None).await;
    match within("o", ws.next()).await? {
        Some(Ok(Message::Text(t))) if t.as_str() == "o" => {}
        other => return Err(format!("expected o, got {other:?}")),
    }
    let _ = ready.send(());
    let (texts, code, at) = until_close(&mut ws, Some(GOODBYE)).await?;
    match (texts.last().map(String::as_str), code) {
        (Some(GOODBYE), 1001) => Ok(at),
        _ => Err(format!("websocket ended with {texts:?}, close {code}")),
    }
}

/// The raw websocket: an echo round trip, then a 1001 close.
async fn raw_websocket(addr: SocketAddr, ready: oneshot::Sender<()>) -> Seen {
    let mut ws = websocket(addr, "/echo/websocket", None).await;
    ws.send(Message::text("ping"))
        .await
        .map_err(|e| e.to_string())?;
    match within("the echo", ws.next()).await? {
        Some(Ok(Message::Text(t))) if t.as_str() == "ping" => {}
        other => return Err(format!("expected the echo, got {other:?}")),
    }
    let _ = ready.send(());
    let (texts, code, at) = until_close(&mut ws, None).await?;
    match code {
        1001 => Ok(at),
        _ => Err(format!("raw websocket ended with {texts:?}, close {code}")),
    }
}

const CONNECT: &str = "CONNECT\naccept-version:1.2\nhost:t\n\n\0";
const SHUTTING_DOWN: &str = "message:Server shutting down";

/// STOMP over the SockJS websocket: CONNECTED, then ERROR `Server shutting down`, then the
/// SockJS goodbye and a 1001 close.
async fn stomp_sockjs(addr: SocketAddr, ready: oneshot::Sender<()>) -> Seen {
    let mut ws = websocket(addr, "/stomp/000/st/websocket", None).await;
    let connect = serde_json::to_string(&[CONNECT]).unwrap();
    within("o", ws.next()).await?;
    ws.send(Message::text(connect))
        .await
        .map_err(|e| e.to_string())?;
    match within("CONNECTED", ws.next()).await? {
        Some(Ok(Message::Text(t))) if t.contains("CONNECTED") => {}
        other => return Err(format!("expected CONNECTED, got {other:?}")),
    }
    let _ = ready.send(());
    let (texts, code, at) = until_close(&mut ws, Some(SHUTTING_DOWN)).await?;
    let error_then_goodbye = texts.len() >= 2
        && texts[texts.len() - 2].contains("ERROR")
        && texts[texts.len() - 2].contains(SHUTTING_DOWN)
        && texts[texts.len() - 1] == GOODBYE;
    match (error_then_goodbye, code) {
        (true, 1001) => Ok(at),
        _ => Err(format!(
            "STOMP over SockJS ended with {texts:?}, close {code}"
        )),
    }
}

/// STOMP over the raw websocket (`v12.stomp`): ERROR `Server shutting down`, then 1001.
async fn stomp_raw(addr: SocketAddr, ready: oneshot::Sender<()>) -> Seen {
    let mut ws = websocket(addr, "/stomp/websocket", Some("v12.stomp")).await;
    ws.send(Message::text(CONNECT))
        .await
        .map_err(|e| e.to_string())?;
    match within("CONNECTED", ws.next()).await? {
        Some(Ok(Message::Text(t))) if t.starts_with("CONNECTED") => {}
        other => return Err(format!("expected CONNECTED, got {other:?}")),
    }
    let _ = ready.send(());
    let (texts, code, at) = until_close(&mut ws, Some(SHUTTING_DOWN)).await?;
    let error_last = texts
        .last()
        .is_some_and(|t| t.starts_with("ERROR\n") && t.contains(SHUTTING_DOWN));
    match (error_last, code) {
        (true, 1001) => Ok(at),
        _ => Err(format!(
            "raw STOMP websocket ended with {texts:?}, close {code}"
        )),
    }
}

/// STOMP over TCP: CONNECTED, then ERROR `Server shutting down`, then a FIN (not a reset).
async fn stomp_tcp(addr: SocketAddr, ready: oneshot::Sender<()>) -> Seen {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(CONNECT.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !received.contains(&0) {
        let n = within("CONNECTED", stream.read(&mut buf))
            .await?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before CONNECTED".into());
        }
        received.extend_from_slice(&buf[..n]);
    }
    if !received.starts_with(b"CONNECTED") {
        return Err(format!(
            "expected CONNECTED: {:?}",
            String::from_utf8_lossy(&received)
        ));
    }
    let _ = ready.send(());
    let mut rest = Vec::new();
    let mut seen = None;
    loop {
        let n = within("ERROR and FIN", stream.read(&mut buf))
            .await?
            .map_err(|e| format!("the connection was reset instead of closed: {e}"))?;
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&buf[..n]);
        if seen.is_none() && String::from_utf8_lossy(&rest).contains(SHUTTING_DOWN) {
            seen = Some(Instant::now());
        }
    }
    let text = String::from_utf8_lossy(&rest).into_owned();
    match seen {
        Some(at) if text.starts_with("ERROR\n") && text.ends_with('\0') => Ok(at),
        _ => Err(format!("STOMP over TCP ended with {text:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_every_session_goodbye_over_the_window_and_exits_0() {
    let dir = std::env::temp_dir().join(format!("sockjs-gateway-drain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut gateway = start_gateway(&dir);
    let (http, tcp) = (gateway.http, gateway.tcp);

    type Client = std::pin::Pin<Box<dyn std::future::Future<Output = Seen> + Send>>;
    let mut clients: Vec<(&str, Client, oneshot::Receiver<()>)> = Vec::new();
    let mut add = |name: &'static str, make: Box<dyn FnOnce(oneshot::Sender<()>) -> Client>| {
        let (tx, rx) = oneshot::channel();
        clients.push((name, make(tx), rx));
    };
    add(
        "websocket",
        Box::new(move |r| Box::pin(sockjs_websocket(http, r))),
    );
    add(
        "websocket-raw",
        Box::new(move |r| Box::pin(raw_websocket(http, r))),
    );
    add(
        "xhr-streaming",
        Box::new(move |r| {
            Box::pin(streaming(
                http,
                "POST",
                "/echo/000/xs/xhr_streaming".into(),
                r,
            ))
        }),
    );
    add(
        "eventsource",
        Box::new(move |r| Box::pin(streaming(http, "GET", "/echo/000/es/eventsource".into(), r))),
    );
    add(
        "htmlfile",
        Box::new(move |r| {
            Box::pin(streaming(
                http,
                "GET",
                "/echo/000/hf/htmlfile?c=cb".into(),
                r,
            ))
        }),
    );
    add(
        "xhr-polling",
        Box::new(move |r| Box::pin(polling(http, "POST", "/echo/000/xp/xhr".into(), r))),
    );
    add(
        "jsonp-polling",
        Box::new(move |r| Box::pin(polling(http, "GET", "/echo/000/jp/jsonp?c=cb".into(), r))),
    );
    add("stomp-tcp", Box::new(move |r| Box::pin(stomp_tcp(tcp, r))));
    add(
        "stomp-sockjs-websocket",
        Box::new(move |r| Box::pin(stomp_sockjs(http, r))),
    );
    add(
        "stomp-raw-websocket",
        Box::new(move |r| Box::pin(stomp_raw(http, r))),
    );

    let mut running = Vec::new();
    for (name, client, ready) in clients {
        let task = tokio::spawn(client);
        timeout(WAIT, ready)
            .await
            .unwrap_or_else(|_| panic!("{name} did not open"))
            .unwrap_or_else(|_| {
                panic!(
                    "{name} failed before it opened: {:?}",
                    gateway.log.lock().unwrap()
                )
            });
        running.push((name, task));
    }

    let sent = Instant::now();
    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(gateway.child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());

    let mut seen = Vec::new();
    for (name, task) in running {
        match task.await.unwrap() {
            Ok(at) => seen.push((name, at.duration_since(sent))),
            Err(e) => panic!(
                "{name}: {e}\ngateway log: {:#?}",
                gateway.log.lock().unwrap()
            ),
        }
    }
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = gateway.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let exited = sent.elapsed();
    let log = gateway.log.lock().unwrap().clone();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; log: {log:#?}"
    );
    assert!(
        log.iter().any(|l| l.contains("every session said goodbye")),
        "the drain did not finish cleanly: {log:#?}"
    );

    seen.sort_by_key(|(_, at)| *at);
    eprintln!("goodbyes after SIGTERM: {seen:?}; exit after {exited:?}");
    let first = seen.first().unwrap().1;
    let last = seen.last().unwrap().1;
    let window = Duration::from_secs(DRAIN_TIMEOUT_S);
    // Ten goodbyes evenly over 80% of 4 s are 0.32 s apart: the first and last are about
    // 2.9 s apart. Half of that proves they were spread, with room for a loaded machine.
    assert!(
        last - first >= Duration::from_millis(1400),
        "goodbyes were not spread over the window: {seen:?}"
    );
    assert!(
        last <= window + Duration::from_secs(2),
        "a goodbye came after the window: {seen:?}"
    );
    assert!(
        exited <= window + Duration::from_secs(5),
        "the gateway took {exited:?} to exit"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
