//! A real HTTP application backend for the tests: `fixtures/test_backend.py` (Python standard
//! library only), started on a free loopback port and killed when dropped, plus a gateway
//! serving STOMP over TCP with a given config.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use sockjs_gateway::Gateway;
use sockjs_gateway::config::Config;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::time::timeout;

/// A running test backend.
pub struct TestBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The process; killed on drop.
    _child: Child,
}

impl TestBackend {
    /// Start `fixtures/test_backend.py` with `args` and wait for its listening line.
    pub async fn start(args: &[&str]) -> TestBackend {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/test_backend.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs fixtures/test_backend.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        timeout(
            Duration::from_secs(20),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("the test backend starts within 20 s")
        .expect("read its first line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        TestBackend {
            addr,
            _child: child,
        }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request it recorded so far, oldest first.
    pub async fn log(&self) -> Vec<Value> {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        stream
            .write_all(b"GET /log HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut raw = Vec::new();
        timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
            .await
            .expect("log within 5 s")
            .expect("read");
        let text = String::from_utf8(raw).expect("utf-8");
        let (_, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        let json: Value = serde_json::from_str(body).expect("JSON log");
        json["log"].as_array().cloned().unwrap_or_default()
    }

    /// The recorded requests of one kind (`frame`, `connect`, `disconnect`).
    pub async fn requests(&self, kind: &str) -> Vec<Value> {
        self.log()
            .await
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| e["request"].clone())
            .collect()
    }
}

/// A loopback port nothing listens on (bound, then released).
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Start a gateway from `toml` (relative files resolve against `base_dir`) and serve STOMP
/// over TCP on a free loopback port; returns that address.
pub async fn start_tcp_gateway(toml: &str, base_dir: &std::path::Path) -> SocketAddr {
    let config = Config::from_toml_in(toml, base_dir).expect("test config");
    let gateway = Gateway::from_config(&config).expect("gateway");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    gateway.spawn_stomp_tcp(listener);
    addr
}
