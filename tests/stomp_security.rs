//! STOMP authentication and authorization through real sockets: JWTs on CONNECT (via
//! `Authorization`, the configured `token` header and `passcode`), no identity from a CONNECT
//! header unless `principal_header` opts in, ACL rules per role and
//! per user, denied frames answered with an ERROR naming the destination, and a session
//! ended with ERROR when its token expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use sockjs_gateway::Gateway;
use sockjs_gateway::config::Config;
use sockjs_gateway::stomp::{StompApp, StompEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "an-hs256-test-secret-of-at-least-32-bytes";

const CONFIG: &str = r#"
[auth.jwt]
algorithm = "HS256"
secret = "an-hs256-test-secret-of-at-least-32-bytes"
leeway = 0

[[stomp.acl]]
action = "send"
destination = "/topic/orders/*"
policy = "allow"
roles = ["trader"]

[[stomp.acl]]
action = "send"
destination = "/topic/orders/**"
policy = "deny"

[[stomp.acl]]
action = "subscribe"
destination = "/topic/admin/**"
policy = "deny"

[[service]]
prefix = "/stomp"
app = "stomp"
"#;

async fn start() -> std::net::SocketAddr {
    start_with(CONFIG).await.0
}

/// STOMP over TCP for the gateway `toml` describes; its address and STOMP core.
async fn start_with(toml: &str) -> (std::net::SocketAddr, StompApp) {
    let config = Config::from_toml(toml).unwrap();
    let gateway = Gateway::from_config(&config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    gateway.spawn_stomp_tcp(listener);
    (addr, gateway.stomp().clone())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(sub: &str, roles: &[&str], ttl: u64) -> String {
    signed(json!({"sub": sub, "exp": now() + ttl, "roles": roles}))
}

/// An HS256 token with exactly `claims`.
fn signed(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr, auth_header: &str) -> (Client, String) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut c = Client {
            stream,
            buf: Vec::new(),
        };
        c.send(&format!(
            "CONNECT\naccept-version:1.2\nhost:x\n{auth_header}\n\n"
        ))
        .await;
        let reply = c.frame().await;
        (c, reply)
    }

    async fn send(&mut self, frame: &str) {
        self.stream.write_all(frame.as_bytes()).await.unwrap();
        self.stream.write_all(b"\0").await.unwrap();
    }

    /// The next frame (heart-beat EOLs skipped), or "" when the socket closes.
    async fn frame(&mut self) -> String {
        loop {
            while self.buf.first().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                self.buf.remove(0);
            }
            if let Some(end) = self.buf.iter().position(|b| *b == 0) {
                let frame: Vec<u8> = self.buf.drain(..=end).collect();
                return String::from_utf8_lossy(&frame[..end]).into_owned();
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
                .await
                .expect("frame in time")
                .unwrap_or(0);
            if n == 0 {
                return String::new();
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[tokio::test]
async fn tokens_are_accepted_from_authorization_token_header_and_passcode() {
    let addr = start().await;
    let t = token("alice", &[], 600);
    for header in [
        format!("Authorization:Bearer {t}"),
        format!("token:{t}"),
        format!("passcode:{t}"),
    ] {
        let (_c, reply) = Client::connect(addr, &header).await;
        assert!(reply.starts_with("CONNECTED\n"), "{header}: {reply}");
        assert!(reply.contains("\nuser-name:alice"), "{reply}");
    }
}

#[tokio::test]
async fn bad_or_missing_tokens_get_an_error() {
    let addr = start().await;
    let (_c, reply) = Client::connect(addr, "login:alice").await;
    assert!(
        reply.starts_with("ERROR\n") && reply.contains("message:Authentication failed"),
        "{reply}"
    );
    let expired = signed(json!({"sub": "alice", "exp": now() - 5}));
    let (_c, reply) = Client::connect(addr, &format!("passcode:{expired}")).await;
    assert!(reply.contains("token expired"), "{reply}");
    let (_c, reply) = Client::connect(addr, "passcode:not.a.token").await;
    assert!(reply.starts_with("ERROR\n"), "{reply}");
    use base64::Engine;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"sub": "alice", "exp": now() + 600}))
    );
    let (_c, reply) = Client::connect(addr, &format!("passcode:{unsigned}")).await;
    assert!(
        reply.starts_with("ERROR\n") && reply.contains("message:Authentication failed"),
        "alg none: {reply}"
    );
}

#[tokio::test]
async fn a_float_exp_ends_the_stomp_session_when_it_passes() {
    let addr = start().await;
    let exp = now() as f64 + 1.6;
    let (mut c, reply) = Client::connect(
        addr,
        &format!("passcode:{}", signed(json!({"sub": "eve", "exp": exp}))),
    )
    .await;
    assert!(reply.starts_with("CONNECTED"), "{reply}");
    let started = std::time::Instant::now();
    let error = c.frame().await;
    assert!(error.contains("message:Token expired"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_token_with_a_huge_exp_connects_and_stays() {
    let addr = start().await;
    for exp in [
        json!(10_000_000_000_000_000_000u64),
        json!(u64::MAX),
        json!(1.0e19),
    ] {
        let token = signed(json!({"sub": "eve", "exp": exp}));
        let (mut c, reply) = Client::connect(addr, &format!("passcode:{token}")).await;
        assert!(reply.starts_with("CONNECTED"), "exp {exp}: {reply}");
        c.send("SEND\ndestination:/topic/x\nreceipt:r\n\n").await;
        assert!(c.frame().await.starts_with("RECEIPT"), "exp {exp}");
    }
}

#[tokio::test]
async fn a_token_accepted_within_the_leeway_is_not_closed_at_once() {
    let (addr, _) = start_with(&CONFIG.replace("leeway = 0", "leeway = 2")).await;
    // Expired a second ago: verification grants two more, and so must expiry.
    let token = signed(json!({"sub": "eve", "exp": now() - 1}));
    let (mut c, reply) = Client::connect(addr, &format!("passcode:{token}")).await;
    assert!(reply.starts_with("CONNECTED"), "{reply}");
    let started = std::time::Instant::now();
    c.send("SEND\ndestination:/topic/x\nreceipt:r\n\n").await;
    let receipt = c.frame().await;
    assert!(receipt.starts_with("RECEIPT"), "closed at once: {receipt}");
    let error = c.frame().await;
    assert!(error.contains("message:Token expired"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn acl_rules_allow_and_deny_by_role_and_destination() {
    let addr = start().await;
    let (mut trader, _) = Client::connect(
        addr,
        &format!("passcode:{}", token("tina", &["trader"], 600)),
    )
    .await;
    trader
        .send("SEND\ndestination:/topic/orders/new\nreceipt:r1\n\nbuy")
        .await;
    assert!(trader.frame().await.starts_with("RECEIPT\nreceipt-id:r1"));

    let (mut viewer, _) = Client::connect(
        addr,
        &format!("passcode:{}", token("vic", &["viewer"], 600)),
    )
    .await;
    viewer
        .send("SEND\ndestination:/topic/orders/new\nreceipt:r2\n\nbuy")
        .await;
    let error = viewer.frame().await;
    assert!(
        error.starts_with("ERROR\n") && error.contains("message:Access denied"),
        "{error}"
    );
    assert!(
        error.contains("/topic/orders/new"),
        "the ERROR names the destination: {error}"
    );
    assert_eq!(
        viewer.frame().await,
        "",
        "the connection is closed after the ERROR"
    );

    let (mut anyone, _) =
        Client::connect(addr, &format!("passcode:{}", token("ann", &[], 600))).await;
    anyone
        .send("SUBSCRIBE\nid:1\ndestination:/topic/admin/log\n\n")
        .await;
    assert!(anyone.frame().await.contains("message:Access denied"));
    let (mut other, _) =
        Client::connect(addr, &format!("passcode:{}", token("ann", &[], 600))).await;
    other
        .send("SUBSCRIBE\nid:1\ndestination:/topic/news\nreceipt:s\n\n")
        .await;
    assert!(
        other.frame().await.starts_with("RECEIPT"),
        "other destinations stay open"
    );
}

#[tokio::test]
async fn a_stomp_session_ends_with_an_error_when_its_token_expires() {
    let addr = start().await;
    let (mut c, reply) = Client::connect(addr, &format!("passcode:{}", token("eve", &[], 2))).await;
    assert!(reply.starts_with("CONNECTED"), "{reply}");
    let started = std::time::Instant::now();
    let error = c.frame().await;
    assert!(
        error.starts_with("ERROR\n") && error.contains("message:Token expired"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// A backend sends one message to `user`'s `/queue/private`.
fn send_to(app: &StompApp, user: &str, body: &str) {
    let broker = app.broker();
    let message = broker.message(&[], bytes::Bytes::from(body.to_owned()));
    broker.send_to_user(user, "/queue/private", None, message);
}

#[tokio::test]
async fn by_default_a_connect_header_names_nobody() {
    let (addr, app) = start_with("[[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\n").await;
    let (mut alice, reply) = Client::connect(addr, "login:alice").await;
    assert!(reply.starts_with("CONNECTED\n"), "{reply}");
    assert!(
        !reply.contains("user-name:"),
        "login is no identity by default: {reply}"
    );
    alice
        .send("SUBSCRIBE\nid:1\ndestination:/user/queue/private\nreceipt:s\n\n")
        .await;
    assert!(alice.frame().await.starts_with("RECEIPT"));
    send_to(&app, "alice", "for alice");
    alice
        .send("SEND\ndestination:/topic/none\nreceipt:after\n\n")
        .await;
    let next = alice.frame().await;
    assert!(
        next.starts_with("RECEIPT\nreceipt-id:after"),
        "a client claiming to be alice got alice's message: {next}"
    );
}

#[tokio::test]
async fn a_connect_header_names_the_user_when_principal_header_opts_in() {
    let (addr, app) = start_with(
        "[stomp]\nprincipal_header = \"login\"\n[[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\n",
    )
    .await;
    let (mut alice, reply) = Client::connect(addr, "login:alice").await;
    assert!(reply.contains("\nuser-name:alice"), "{reply}");
    alice
        .send("SUBSCRIBE\nid:1\ndestination:/user/queue/private\nreceipt:s\n\n")
        .await;
    assert!(alice.frame().await.starts_with("RECEIPT"));
    send_to(&app, "alice", "for alice");
    let message = alice.frame().await;
    assert!(
        message.starts_with("MESSAGE\n") && message.ends_with("\n\nfor alice"),
        "{message}"
    );
}

#[tokio::test]
async fn connect_events_carry_no_credentials() {
    let (addr, app) = start_with(CONFIG).await;
    let mut events = app.subscribe_events();
    let t = token("alice", &[], 600);
    let (_c, reply) = Client::connect(
        addr,
        &format!("Authorization:Bearer {t}\nauthorization:Bearer {t}\ntoken:{t}\npasscode:{t}\nx-client:app"),
    )
    .await;
    assert!(reply.starts_with("CONNECTED"), "{reply}");
    let headers = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let StompEvent::Connect { headers, .. } = events.recv().await.unwrap() {
                return headers;
            }
        }
    })
    .await
    .unwrap();
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["accept-version", "host", "x-client"], "{headers:?}");
    assert!(headers.iter().all(|(_, v)| !v.contains(&t)));
}
