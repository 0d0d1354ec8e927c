//! TLS on the HTTP listener (`[server] tls_cert`/`tls_key`) and STOMP over TLS (`[stomp]
//! tls_listen`), through real loopback sockets and a rustls client that trusts only a
//! self-signed certificate made for the test (rcgen): the front's own answers and streams,
//! hyper's bodies and upgrades (SockJS WebSocket, raw STOMP WebSocket), STOMP over TLS, a
//! plain-text client and a silent one (refused, counted), and config errors that name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use sockjs_gateway::Gateway;
use sockjs_gateway::config::Config;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::Message;

/// Every wait gives up after this long.
const WAIT: Duration = Duration::from_secs(5);

/// A certificate for `localhost` and 127.0.0.1 in a directory of its own, removed on drop.
struct Cert {
    dir: PathBuf,
    der: CertificateDer<'static>,
}

impl Cert {
    fn new() -> Cert {
        let made = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "sg-tls-test-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
        Cert {
            dir,
            der: made.cert.der().clone(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A client that trusts this certificate only.
    fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running gateway: HTTPS and STOMP-over-TLS addresses.
struct Running {
    https: SocketAddr,
    stomp: SocketAddr,
    failures: Arc<AtomicU64>,
    admin: SocketAddr,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn start(cert: &Cert, extra: &str) -> Running {
    let toml = format!(
        r#"
[server]
tls_cert = "{}"
tls_key = "{}"
tls_handshake_timeout = 0.5
{extra}

[[service]]
prefix = "/echo"
app = "echo"

[[service]]
prefix = "/stomp"
app = "stomp"
"#,
        cert.path("cert.pem"),
        cert.path("key.pem"),
    );
    let config = Config::from_toml(&toml).expect("config");
    let gateway = Gateway::from_config(&config).expect("gateway");
    let stomp_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stomp = stomp_listener.local_addr().unwrap();
    assert!(gateway.spawn_stomp_tls(stomp_listener).is_some());
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https = http.local_addr().unwrap();
    let failures = gateway.tls_handshake_failures();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = admin_listener.local_addr().unwrap();
    gateway.spawn_admin(admin_listener, rx.clone()).unwrap();
    tokio::spawn(async move {
        let _ = gateway.serve(http, rx).await;
    });
    Running {
        https,
        stomp,
        failures,
        admin,
        _stop: stop,
    }
}

impl Running {
    fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

async fn tls(cert: &Cert, addr: SocketAddr, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    timeout(WAIT, cert.connector(alpn).connect(name, tcp))
        .await
        .expect("handshake timed out")
        .expect("handshake")
}

/// Read until `needle` has arrived (or EOF); returns everything read.
async fn read_until<S: AsyncRead + Unpin>(io: &mut S, needle: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(needle.len()).any(|w| w == needle) {
        let n = timeout(WAIT, io.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {needle:?}; got {got:?}"))
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got
}

async fn write<S: AsyncWrite + Unpin>(io: &mut S, text: &str) {
    io.write_all(text.as_bytes()).await.unwrap();
    io.flush().await.unwrap();
}

#[tokio::test]
async fn the_front_answers_and_streams_over_https() {
    let cert = Cert::new();
    let gw = start(&cert, "").await;
    let mut io = tls(&cert, gw.https, &[b"http/1.1"]).await;
    assert_eq!(io.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    write(
        &mut io,
        "GET /echo/info HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    let info = String::from_utf8(read_until(&mut io, b"}").await).unwrap();
    assert!(info.starts_with("HTTP/1.1 200"), "{info}");
    assert!(info.contains("\"websocket\":true"), "{info}");
    // An xhr-streaming receiver on the same connection: the prelude and the open frame
    // arrive at once (each write is flushed through TLS), then a message sent meanwhile.
    write(
        &mut io,
        "POST /echo/000/tls1/xhr_streaming HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let opened = read_until(&mut io, b"o\n").await;
    assert!(opened.starts_with(b"HTTP/1.1 200"), "{opened:?}");
    let mut sender = tls(&cert, gw.https, &[]).await;
    let body = "[\"over tls\"]";
    write(
        &mut sender,
        &format!(
            "POST /echo/000/tls1/xhr_send HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    let sent = String::from_utf8(read_until(&mut sender, b"\r\n\r\n").await).unwrap();
    assert!(sent.starts_with("HTTP/1.1 204"), "{sent}");
    let echoed = read_until(&mut io, b"a[\"over tls\"]\n").await;
    assert!(!echoed.is_empty());
}

#[tokio::test]
async fn websockets_upgrade_over_tls() {
    let cert = Cert::new();
    let gw = start(&cert, "").await;
    // SockJS WebSocket on the echo service.
    let io = tls(&cert, gw.https, &[b"http/1.1"]).await;
    let (mut ws, _) = client_async("wss://localhost/echo/000/tls2/websocket", io)
        .await
        .expect("upgrade");
    let first = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first, Message::Text("o".into()));
    ws.send(Message::Text("[\"secure\"]".into())).await.unwrap();
    let echoed = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed, Message::Text("a[\"secure\"]".into()));
    // Raw STOMP over WebSocket.
    let io = tls(&cert, gw.https, &[b"http/1.1"]).await;
    let (mut ws, _) = client_async("wss://localhost/stomp/websocket", io)
        .await
        .expect("upgrade");
    ws.send(Message::Text(
        "CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0".into(),
    ))
    .await
    .unwrap();
    let connected = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert!(
        connected.to_text().unwrap().starts_with("CONNECTED\n"),
        "{connected:?}"
    );
}

#[tokio::test]
async fn stomp_over_tls_connects_subscribes_and_delivers() {
    let cert = Cert::new();
    let gw = start(&cert, "").await;
    let mut io = tls(&cert, gw.stomp, &[]).await;
    assert_eq!(io.get_ref().1.alpn_protocol(), None);
    write(
        &mut io,
        "CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0",
    )
    .await;
    let connected = read_until(&mut io, b"\0").await;
    assert!(connected.starts_with(b"CONNECTED\n"), "{connected:?}");
    write(
        &mut io,
        "SUBSCRIBE\nid:0\ndestination:/topic/tls\nreceipt:r\n\n\0SEND\ndestination:/topic/tls\n\nciphered\0",
    )
    .await;
    let got = String::from_utf8(read_until(&mut io, b"ciphered\0").await).unwrap();
    assert!(got.contains("RECEIPT\nreceipt-id:r"), "{got}");
    assert!(got.contains("MESSAGE\n"), "{got}");
    // DISCONNECT with a receipt: the RECEIPT is flushed through TLS before the close.
    write(&mut io, "DISCONNECT\nreceipt:bye\n\n\0").await;
    let bye = String::from_utf8(read_until(&mut io, b"receipt-id:bye").await).unwrap();
    assert!(bye.contains("RECEIPT"), "{bye}");
}

#[tokio::test]
async fn plain_text_and_silent_clients_are_refused_and_counted() {
    let cert = Cert::new();
    let gw = start(&cert, "").await;
    assert_eq!(gw.failures(), 0);
    // Plain HTTP to the TLS port: not a ClientHello, so no answer, just a close.
    let mut plain = TcpStream::connect(gw.https).await.unwrap();
    write(
        &mut plain,
        "GET /echo/info HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    let mut buf = Vec::new();
    let _ = timeout(WAIT, plain.read_to_end(&mut buf)).await.unwrap();
    assert!(!buf.starts_with(b"HTTP/1.1 200"), "{buf:?}");
    // A client that connects and says nothing is closed after tls_handshake_timeout.
    let mut silent = TcpStream::connect(gw.https).await.unwrap();
    let started = std::time::Instant::now();
    let n = timeout(WAIT, silent.read(&mut [0u8; 16])).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let deadline = tokio::time::Instant::now() + WAIT;
    while gw.failures() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "failures not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The admin listener's metrics say the same.
    let mut admin = TcpStream::connect(gw.admin).await.unwrap();
    write(
        &mut admin,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    let mut scraped = Vec::new();
    timeout(WAIT, admin.read_to_end(&mut scraped))
        .await
        .unwrap()
        .unwrap();
    let scraped = String::from_utf8_lossy(&scraped);
    assert!(
        scraped.contains("sockjs_gateway_tls_handshake_failures_total 2"),
        "{scraped}"
    );
    // A client that does not trust the certificate fails its own handshake.
    let untrusted = Cert::new();
    let tcp = TcpStream::connect(gw.https).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let refused = untrusted.connector(&[]).connect(name, tcp).await;
    assert!(refused.is_err());
    // The listener still serves a good client afterwards.
    let mut io = tls(&cert, gw.https, &[]).await;
    write(
        &mut io,
        "GET /echo/info HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    let info = read_until(&mut io, b"}").await;
    assert!(info.starts_with(b"HTTP/1.1 200"));
}

fn config_error(toml: &str) -> String {
    match Config::from_toml(toml) {
        Ok(_) => panic!("accepted: {toml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn tls_config_errors_name_the_key_and_the_file() {
    let cert = Cert::new();
    let service = "[[service]]\nprefix = \"/echo\"\napp = \"echo\"\n";
    let cert_only = format!(
        "[server]\ntls_cert = \"{}\"\n{service}",
        cert.path("cert.pem")
    );
    assert!(config_error(&cert_only).contains("server.tls_cert"));
    let key_only = format!(
        "[server]\ntls_key = \"{}\"\n{service}",
        cert.path("key.pem")
    );
    assert!(config_error(&key_only).contains("server.tls_key"));
    let stomp_only = format!("[stomp]\ntls_listen = \"127.0.0.1:0\"\n{service}");
    assert!(config_error(&stomp_only).contains("stomp.tls_listen"));
    let missing = format!(
        "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{service}",
        cert.path("absent.pem"),
        cert.path("key.pem")
    );
    let err = config_error(&missing);
    assert!(
        err.contains("server.tls_cert") && err.contains("absent.pem"),
        "{err}"
    );
    let swapped = format!(
        "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{service}",
        cert.path("key.pem"),
        cert.path("cert.pem")
    );
    let err = config_error(&swapped);
    assert!(err.contains("server.tls_"), "{err}");
    // Relative names resolve against the config file's directory.
    let relative = format!("[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n{service}");
    let dir: &Path = &cert.dir;
    assert!(Config::from_toml_in(&relative, dir).is_ok());
}
