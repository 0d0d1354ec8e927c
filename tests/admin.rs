//! The admin listener through real sockets: the publish API reaching real STOMP clients (over
//! TCP and over the SockJS WebSocket), user and session publishes, idempotency, batches,
//! disconnects, presence, auth, health and readiness, metrics that move with traffic, and
//! the errors bad input gets. Each test starts its own gateway with the main, STOMP TCP and
//! admin listeners on 127.0.0.1:0, through the library API the binary uses.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sockjs_gateway::Gateway;
use sockjs_gateway::config::Config;
use sockjs_gateway::stomp::frame::{Command, Frame, Version};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use common::stomp::{Client, decode_single_frame};
use common::{IO_TIMEOUT as WAIT, request};

/// A running gateway with its three listeners.
struct Harness {
    /// The HTTP (SockJS) listener.
    http: SocketAddr,
    /// STOMP over TCP.
    tcp: SocketAddr,
    /// The admin listener.
    admin: SocketAddr,
    /// The shutdown sender `serve` and the admin listener watch; true means draining.
    shutdown: watch::Sender<bool>,
}

const STOMP_SERVICE: &str = "[[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\n";

/// Start a gateway: `/stomp` plus `extra` TOML (an `[admin]` table, `[stomp]` keys…).
async fn start(extra: &str) -> Harness {
    let mut config = Config::from_toml(&format!("{STOMP_SERVICE}{extra}")).expect("test config");
    // The clients name their user in `login` (header-asserted identity, opted in for tests).
    config.stomp.principal_header = Some("login".into());
    let gateway = Gateway::from_config(&config).expect("gateway");
    let bind = || TcpListener::bind("127.0.0.1:0");
    let (http, tcp, admin) = (
        bind().await.unwrap(),
        bind().await.unwrap(),
        bind().await.unwrap(),
    );
    let addrs = (
        http.local_addr().unwrap(),
        tcp.local_addr().unwrap(),
        admin.local_addr().unwrap(),
    );
    let (shutdown, rx) = watch::channel(false);
    gateway.spawn_stomp_tcp(tcp);
    gateway.spawn_admin(admin, rx.clone()).expect("admin");
    tokio::spawn(gateway.serve(http, rx));
    Harness {
        http: addrs.0,
        tcp: addrs.1,
        admin: addrs.2,
        shutdown,
    }
}

/// An HTTP answer: status, headers, JSON body (Null when not JSON).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    text: String,
    json: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn error_code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or_default()
    }

    fn error_field(&self) -> &str {
        self.json["error"]["field"].as_str().unwrap_or_default()
    }
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let response = request(addr, method, path, headers, body).await;
    let status = response.status;
    let headers = response.headers.clone();
    let text = String::from_utf8(response.body().await).expect("utf-8 answer");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        text,
        json,
    }
}

async fn get(h: &Harness, path: &str) -> Answer {
    call(h.admin, "GET", path, &[], b"").await
}

async fn post(h: &Harness, path: &str, body: &Value) -> Answer {
    let json_header = [("Content-Type", "application/json")];
    call(
        h.admin,
        "POST",
        path,
        &json_header,
        body.to_string().as_bytes(),
    )
    .await
}

/// A STOMP client over TCP, connected with `login` as its user.
async fn tcp_client(h: &Harness, login: &str) -> (Client, String) {
    let mut client = Client::open(h.tcp).await;
    client
        .send(&format!(
            "CONNECT\naccept-version:1.2\nheart-beat:0,0\nlogin:{login}\n\n\0"
        ))
        .await;
    let connected = client.frame().await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    client.parser.set_version(Version::V1_2);
    let session = connected.get("session").unwrap().to_owned();
    (client, session)
}

/// What a SockJS WebSocket receives, one item at a time.
#[derive(Debug)]
enum SockJsItem {
    /// A STOMP frame from an `a[...]` frame.
    Frame(Frame),
    /// The `c[code,"reason"]` frame.
    Close(u16, String),
}

/// STOMP over the SockJS WebSocket transport (`/stomp/000/<id>/websocket`).
struct SockJsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<SockJsItem>,
}

impl SockJsClient {
    async fn connect(h: &Harness, login: &str) -> (SockJsClient, String) {
        let id: u32 = rand_id();
        let url = format!("ws://{}/stomp/000/{id}/websocket", h.http);
        let (ws, _) = timeout(WAIT, connect_async(url)).await.unwrap().unwrap();
        let mut client = SockJsClient {
            ws,
            pending: VecDeque::new(),
        };
        assert_eq!(client.raw().await, "o");
        client
            .send(&format!(
                "CONNECT\naccept-version:1.2\nheart-beat:0,0\nlogin:{login}\n\n\0"
            ))
            .await;
        let SockJsItem::Frame(connected) = client.next().await else {
            panic!("no CONNECTED");
        };
        assert_eq!(connected.command, Command::Connected);
        let session = connected.get("session").unwrap().to_owned();
        (client, session)
    }

    async fn raw(&mut self) -> String {
        loop {
            let message = timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a SockJS frame")
                .expect("socket ended")
                .expect("websocket error");
            match message {
                Message::Text(text) if text.as_str() == "h" => continue,
                Message::Text(text) => return text.to_string(),
                Message::Close(_) => return String::new(),
                _ => continue,
            }
        }
    }

    async fn send(&mut self, wire: &str) {
        let frame = serde_json::to_string(&vec![wire]).unwrap();
        self.ws.send(Message::text(frame)).await.unwrap();
    }

    async fn next(&mut self) -> SockJsItem {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return item;
            }
            let raw = self.raw().await;
            if let Some(array) = raw.strip_prefix('a') {
                let messages: Vec<String> = serde_json::from_str(array).unwrap();
                for m in messages {
                    self.pending
                        .push_back(SockJsItem::Frame(decode_single_frame(
                            m.as_bytes(),
                            Version::V1_2,
                        )));
                }
            } else if let Some(close) = raw.strip_prefix('c') {
                let (code, reason): (u16, String) = serde_json::from_str(close).unwrap();
                return SockJsItem::Close(code, reason);
            } else {
                panic!("unexpected SockJS frame {raw:?}");
            }
        }
    }

    async fn frame(&mut self) -> Frame {
        match self.next().await {
            SockJsItem::Frame(frame) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    async fn subscribe(&mut self, id: &str, destination: &str) {
        self.send(&format!(
            "SUBSCRIBE\nid:{id}\ndestination:{destination}\nreceipt:r-{id}\n\n\0"
        ))
        .await;
        let receipt = self.frame().await;
        assert_eq!(receipt.command, Command::Receipt, "{receipt:?}");
    }
}

fn rand_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(100);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Poll `check` until it holds or the deadline passes (the machine may be loaded).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn publish_reaches_tcp_and_sockjs_subscribers_and_counts_deliveries() {
    let h = start("").await;
    let (mut tcp, _) = tcp_client(&h, "a").await;
    tcp.subscribe("t1", "/topic/news", "").await;
    let (mut sockjs, _) = SockJsClient::connect(&h, "b").await;
    sockjs.subscribe("s1", "/topic/news").await;
    let answer = post(
        &h,
        "/api/publish",
        &json!({"destination": "/topic/news", "body": "extra! extra!",
                "headers": {"x-edition": "morning"}, "content_type": "text/plain"}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json["delivered"], 2);
    let id = answer.json["id"].as_str().unwrap().to_owned();
    for frame in [tcp.frame().await, sockjs.frame().await] {
        assert_eq!(frame.command, Command::Message);
        assert_eq!(frame.get("destination"), Some("/topic/news"));
        assert_eq!(frame.get("message-id"), Some(id.as_str()));
        assert_eq!(frame.get("x-edition"), Some("morning"));
        assert_eq!(frame.get("content-type"), Some("text/plain"));
        assert_eq!(&frame.body[..], b"extra! extra!");
    }
    let nobody = post(&h, "/api/publish", &json!({"destination": "/topic/empty"})).await;
    assert_eq!(
        (nobody.status, nobody.json["delivered"].clone()),
        (200, json!(0))
    );
}

#[tokio::test]
async fn user_and_session_publishes_reach_only_their_sessions() {
    let h = start("").await;
    let (mut a1, s1) = tcp_client(&h, "alice").await;
    let (mut a2, _s2) = SockJsClient::connect(&h, "alice").await;
    let (mut bob, _) = tcp_client(&h, "bob").await;
    a1.subscribe("n", "/user/queue/notify", "").await;
    a2.subscribe("n", "/user/queue/notify").await;
    bob.subscribe("n", "/user/queue/notify", "").await;

    let to_alice = post(
        &h,
        "/api/publish",
        &json!({"user": "alice", "destination": "/queue/notify", "body": "hi alice"}),
    )
    .await;
    assert_eq!(to_alice.json["delivered"], 2, "{}", to_alice.text);
    for frame in [a1.frame().await, a2.frame().await] {
        assert_eq!(frame.get("destination"), Some("/user/queue/notify"));
        assert_eq!(&frame.body[..], b"hi alice");
    }

    let spelled = post(
        &h,
        "/api/publish",
        &json!({"destination": "/user/alice/queue/notify", "body": "again"}),
    )
    .await;
    assert_eq!(spelled.json["delivered"], 2, "{}", spelled.text);
    a1.frame().await;
    a2.frame().await;

    let one = post(
        &h,
        "/api/publish",
        &json!({"session": s1, "destination": "/queue/notify", "body": "only you"}),
    )
    .await;
    assert_eq!(one.json["delivered"], 1, "{}", one.text);
    assert_eq!(&a1.frame().await.body[..], b"only you");
    bob.expect_silence(200).await;
    let gone = post(
        &h,
        "/api/publish",
        &json!({"user": "carol", "destination": "/queue/notify"}),
    )
    .await;
    assert_eq!(gone.json["delivered"], 0);
}

#[tokio::test]
async fn a_retried_publish_with_the_same_key_is_published_once() {
    let h = start("").await;
    let (mut sub, _) = tcp_client(&h, "a").await;
    sub.subscribe("1", "/topic/orders", "").await;
    let body =
        json!({"destination": "/topic/orders", "body": "order 7", "idempotency_key": "order-7"});
    let first = post(&h, "/api/publish", &body).await;
    let retry = post(&h, "/api/publish", &body).await;
    assert_eq!(first.json, retry.json);
    assert_eq!(first.json["delivered"], 1);
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(&sub.frame().await.body[..], b"order 7");
    sub.expect_silence(200).await;
    let other = post(
        &h,
        "/api/publish",
        &json!({"destination": "/topic/orders", "body": "order 8", "idempotency_key": "order-8"}),
    )
    .await;
    assert_ne!(other.json["id"], first.json["id"]);
}

#[tokio::test]
async fn a_batch_publishes_in_order_and_a_bad_item_publishes_nothing() {
    let h = start("[admin]\nmax_batch = 3\n").await;
    let (mut sub, _) = tcp_client(&h, "a").await;
    sub.subscribe("1", "/topic/b", "").await;
    let batch = json!({"messages": [
        {"destination": "/topic/b", "body": "1"},
        {"destination": "/topic/b", "body": "2"},
        {"destination": "/topic/none", "body": "3"},
    ]});
    let answer = post(&h, "/api/batch", &batch).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let delivered: Vec<&Value> = answer.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["delivered"])
        .collect();
    assert_eq!(delivered, [&json!(1), &json!(1), &json!(0)]);
    assert_eq!(&sub.frame().await.body[..], b"1");
    assert_eq!(&sub.frame().await.body[..], b"2");

    let bad = json!({"messages": [
        {"destination": "/topic/b", "body": "x"},
        {"destination": "/app/nope", "body": "y"},
    ]});
    let answer = post(&h, "/api/batch", &bad).await;
    assert_eq!(
        (answer.status, answer.error_field()),
        (400, "messages[1].destination")
    );
    let too_many = json!({"messages": [{"destination": "/topic/b"}, {"destination": "/topic/b"},
                                       {"destination": "/topic/b"}, {"destination": "/topic/b"}]});
    let answer = post(&h, "/api/batch", &too_many).await;
    assert_eq!(
        (answer.status, answer.error_code()),
        (413, "too_many_messages")
    );
    sub.expect_silence(200).await;
}

#[tokio::test]
async fn bad_requests_get_errors_that_name_the_field() {
    let h = start("[admin]\nmax_body_bytes = 2048\n[stomp]\nmessage_size_limit = 1024\n").await;
    let json_header = [("Content-Type", "application/json")];
    let raw = |body: &'static [u8]| call(h.admin, "POST", "/api/publish", &json_header, body);
    let answer = raw(b"{\"destination\": ").await;
    assert_eq!((answer.status, answer.error_code()), (400, "invalid_json"));
    let cases = [
        (
            json!({"destination": "/topic/a", "bodyy": "x"}),
            400,
            "unknown_field",
            "bodyy",
        ),
        (
            json!({"destination": 7}),
            400,
            "invalid_type",
            "destination",
        ),
        (json!({"body": "x"}), 400, "missing_field", "destination"),
        (
            json!({"destination": "/topic/a", "headers": {"x": true}}),
            400,
            "invalid_type",
            "headers.x",
        ),
        (
            json!({"destination": "/topic/a", "headers": {"destination": "/x"}}),
            400,
            "invalid_value",
            "headers.destination",
        ),
        (
            json!({"destination": "/topic/**"}),
            400,
            "invalid_value",
            "destination",
        ),
        (
            json!({"destination": "/app/chat"}),
            400,
            "invalid_value",
            "destination",
        ),
        (
            json!({"destination": "/elsewhere"}),
            400,
            "invalid_value",
            "destination",
        ),
        (
            json!({"destination": "/topic/a", "user": "u", "session": "s"}),
            400,
            "invalid_value",
            "session",
        ),
        (
            json!({"destination": "/topic/a", "body": "x".repeat(1500)}),
            413,
            "body_too_large",
            "body",
        ),
    ];
    for (body, status, code, field) in cases {
        let answer = post(&h, "/api/publish", &body).await;
        assert_eq!(
            (answer.status, answer.error_code(), answer.error_field()),
            (status, code, field),
            "{body}: {}",
            answer.text
        );
        assert!(!answer.json["error"]["message"].as_str().unwrap().is_empty());
    }
    let big = vec![b' '; 4096];
    let answer = call(h.admin, "POST", "/api/publish", &json_header, &big).await;
    assert_eq!(
        (answer.status, answer.error_code()),
        (413, "body_too_large")
    );
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let answer = call(h.admin, "POST", "/api/publish", &form, b"{}").await;
    assert_eq!(
        (answer.status, answer.error_code()),
        (415, "unsupported_media_type")
    );
    let answer = get(&h, "/api/publish").await;
    assert_eq!((answer.status, answer.header("allow")), (405, Some("POST")));
    let answer = get(&h, "/api/nothing").await;
    assert_eq!((answer.status, answer.error_code()), (404, "not_found"));
    let answer = post(&h, "/api/disconnect", &json!({"user": "x", "code": 1006})).await;
    assert_eq!((answer.status, answer.error_field()), (400, "code"));
}

#[tokio::test]
async fn the_api_key_guards_everything_but_health() {
    let h = start("[admin]\napi_key = \"k3y\"\n").await;
    assert_eq!(get(&h, "/healthz").await.status, 200);
    assert_eq!(get(&h, "/readyz").await.status, 200);
    for path in [
        "/api/stats",
        "/metrics",
        "/api/presence/users/x",
        "/api/openapi.json",
    ] {
        let answer = get(&h, path).await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (401, "unauthorized"),
            "{path}"
        );
        assert!(
            answer
                .header("www-authenticate")
                .unwrap()
                .starts_with("Bearer")
        );
    }
    let dashboard = get(&h, "/dashboard").await;
    assert_eq!(dashboard.status, 401);
    assert!(
        dashboard
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    let wrong = call(
        h.admin,
        "GET",
        "/api/stats",
        &[("Authorization", "Bearer k3")],
        b"",
    )
    .await;
    assert_eq!(wrong.status, 401);
    let right = call(
        h.admin,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer k3y")],
        b"",
    )
    .await;
    assert_eq!(right.status, 200);
    // "admin:k3y", as a browser sends it after asking.
    let basic = [("Authorization", "Basic YWRtaW46azN5")];
    assert_eq!(
        call(h.admin, "GET", "/dashboard", &basic, b"").await.status,
        200
    );
    let publish = call(
        h.admin,
        "POST",
        "/api/publish",
        &[
            ("Authorization", "Bearer k3y"),
            ("Content-Type", "application/json"),
        ],
        br#"{"destination": "/topic/x"}"#,
    )
    .await;
    assert_eq!(publish.status, 200, "{}", publish.text);
}

#[test]
fn a_public_admin_address_needs_a_key() {
    let err = Config::from_toml(&format!(
        "{STOMP_SERVICE}[admin]\nlisten = \"0.0.0.0:9090\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("admin.listen") && err.contains("api_key"),
        "{err}"
    );
    assert!(
        Config::from_toml(STOMP_SERVICE)
            .unwrap()
            .admin
            .listen
            .is_none()
    );
    assert!(Config::embedded().admin.listen.is_some());
}

#[tokio::test]
async fn presence_reports_sessions_and_subscriber_counts() {
    let h = start("").await;
    let (mut a1, s1) = tcp_client(&h, "alice").await;
    let (mut a2, s2) = SockJsClient::connect(&h, "alice").await;
    let (mut other, _) = tcp_client(&h, "bob").await;
    a1.subscribe("news", "/topic/news", "").await;
    a2.subscribe("all", "/topic/**").await;
    other.subscribe("news", "/topic/news", "").await;

    let answer = get(&h, "/api/presence/users/alice").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json["user"], "alice");
    let sessions = answer.json["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let by_id = |id: &str| sessions.iter().find(|s| s["id"] == id).unwrap().clone();
    let tcp = by_id(&s1);
    assert_eq!(tcp["transport"], "tcp");
    assert!(
        tcp["remote_address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(tcp["since"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        tcp["subscriptions"],
        json!([{"id": "news", "destination": "/topic/news"}])
    );
    assert_eq!(by_id(&s2)["transport"], "websocket");

    let count = |d: &'static str| get(&h, d);
    assert_eq!(
        count("/api/presence/destinations/%2Ftopic%2Fnews")
            .await
            .json["subscribers"],
        3
    );
    assert_eq!(
        count("/api/presence/destinations/%2Ftopic%2Fother")
            .await
            .json["subscribers"],
        1
    );
    let plain = count("/api/presence/destinations//topic/news").await;
    assert_eq!(
        plain.json,
        json!({"destination": "/topic/news", "subscribers": 3})
    );
    assert_eq!(
        get(&h, "/api/presence/users/nobody").await.json["sessions"],
        json!([])
    );

    drop(a1);
    eventually("alice's TCP session to leave presence", || async {
        get(&h, "/api/presence/users/alice").await.json["sessions"]
            .as_array()
            .unwrap()
            .len()
            == 1
    })
    .await;
    assert_eq!(
        count("/api/presence/destinations/%2Ftopic%2Fnews")
            .await
            .json["subscribers"],
        2
    );
}

#[tokio::test]
async fn disconnect_sends_error_then_closes_each_carrier() {
    let h = start("").await;
    let (mut tcp, _) = tcp_client(&h, "mallory").await;
    let (mut sockjs, _) = SockJsClient::connect(&h, "mallory").await;
    let (mut bystander, s3) = tcp_client(&h, "trent").await;
    let answer = post(
        &h,
        "/api/disconnect",
        &json!({"user": "mallory", "code": 4001, "reason": "account suspended"}),
    )
    .await;
    assert_eq!(answer.json, json!({"disconnected": 2}), "{}", answer.text);
    let error = tcp.expect_error_then_close("account suspended").await;
    assert!(String::from_utf8_lossy(&error.body).contains("account suspended"));
    let error = sockjs.frame().await;
    assert_eq!(
        (error.command, error.get("message")),
        (Command::Error, Some("account suspended"))
    );
    match sockjs.next().await {
        SockJsItem::Close(code, reason) => {
            assert_eq!((code, reason.as_str()), (4001, "account suspended"))
        }
        other => panic!("expected c[...], got {other:?}"),
    }
    eventually("mallory to leave presence", || async {
        get(&h, "/api/presence/users/mallory").await.json["sessions"] == json!([])
    })
    .await;
    eventually("both closes to be counted as kicked", || async {
        get(&h, "/api/stats").await.json["stomp"]["sessions"]["closed"]["kicked"] == 2
    })
    .await;
    let one = post(&h, "/api/disconnect", &json!({"session": s3})).await;
    assert_eq!(one.json["disconnected"], 1);
    let error = bystander
        .expect_error_then_close("Disconnected by the server")
        .await;
    assert_eq!(error.command, Command::Error);
    let none = post(&h, "/api/disconnect", &json!({"session": "gone0"})).await;
    assert_eq!(none.json["disconnected"], 0);
}

#[tokio::test]
async fn readiness_turns_503_while_draining_and_liveness_stays() {
    let h = start("").await;
    assert_eq!(get(&h, "/readyz").await.json["status"], "ready");
    h.shutdown.send(true).unwrap();
    let answer = get(&h, "/readyz").await;
    assert_eq!(
        (answer.status, answer.json["status"].clone()),
        (503, json!("draining"))
    );
    assert_eq!(get(&h, "/healthz").await.status, 200);
}

/// One sample's value from Prometheus text: `name{labels}` exactly as written.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_move_with_real_traffic() {
    let h = start("[server]\nmax_connections_per_ip = 40\n").await;
    let before = get(&h, "/metrics").await;
    assert_eq!(before.status, 200);
    assert!(
        before
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let m0 = before.text;
    let ws_opened = "sockjs_gateway_sessions_opened_total{service=\"/stomp\",app=\"stomp\",transport=\"websocket\"}";
    let ws_open =
        "sockjs_gateway_sessions_open{service=\"/stomp\",app=\"stomp\",transport=\"websocket\"}";
    let sends = "sockjs_gateway_stomp_frames_received_total{command=\"SEND\"}";
    let msgs_in = "sockjs_gateway_messages_in_total{service=\"/stomp\",app=\"stomp\"}";
    let bytes_out = "sockjs_gateway_bytes_out_total{service=\"/stomp\",app=\"stomp\"}";
    let delivered = "sockjs_gateway_stomp_messages_delivered_total";
    let tcp_open = "sockjs_gateway_stomp_sessions_open{group=\"tcp\"}";
    let subs = "sockjs_gateway_stomp_subscriptions";

    let (mut sockjs, _) = SockJsClient::connect(&h, "m").await;
    sockjs.subscribe("1", "/topic/m").await;
    let (mut tcp, _) = tcp_client(&h, "n").await;
    tcp.subscribe("1", "/topic/m", "").await;
    for i in 0..5 {
        sockjs
            .send(&format!("SEND\ndestination:/topic/m\n\nmessage {i}\0"))
            .await;
    }
    for _ in 0..5 {
        sockjs.frame().await;
        tcp.frame().await;
    }
    let m1 = get(&h, "/metrics").await.text;
    assert_eq!(sample(&m1, ws_opened) - sample(&m0, ws_opened), 1.0);
    assert_eq!(sample(&m1, ws_open), 1.0);
    assert_eq!(sample(&m1, sends) - sample(&m0, sends), 5.0);
    assert!(
        sample(&m1, msgs_in) - sample(&m0, msgs_in) >= 7.0,
        "CONNECT, SUBSCRIBE, 5 SENDs"
    );
    assert!(sample(&m1, bytes_out) > sample(&m0, bytes_out));
    assert_eq!(sample(&m1, delivered) - sample(&m0, delivered), 10.0);
    assert_eq!(sample(&m1, tcp_open), 1.0);
    let stomp_out = "sockjs_gateway_stomp_bytes_out_total";
    let stomp_in = "sockjs_gateway_stomp_bytes_in_total";
    assert!(
        sample(&m1, stomp_out) - sample(&m0, stomp_out) >= 10.0 * 40.0,
        "ten MESSAGEs"
    );
    assert!(
        sample(&m1, stomp_in) - sample(&m0, stomp_in) >= 5.0 * 30.0,
        "five SENDs"
    );
    assert_eq!(sample(&m1, subs), 2.0);
    assert_eq!(sample(&m1, "sockjs_gateway_stomp_destinations"), 1.0);
    // The sampler observes each live STOMP session's queue once a second.
    eventually("queue depth samples", || async {
        let m = get(&h, "/metrics").await.text;
        sample(&m, "sockjs_gateway_outbound_queue_bytes_count") >= 2.0
    })
    .await;

    drop(sockjs);
    drop(tcp);
    eventually("the sessions to close", || async {
        let m = get(&h, "/metrics").await.text;
        sample(&m, ws_open) == 0.0 && sample(&m, tcp_open) == 0.0
    })
    .await;
    let m2 = get(&h, "/metrics").await.text;
    let closed_client =
        "sockjs_gateway_stomp_sessions_closed_total{group=\"tcp\",cause=\"client\"}";
    assert!(sample(&m2, closed_client) >= 1.0);

    // Connection refusals by limit.
    let refused = "sockjs_gateway_connections_refused_total{limit=\"max_connections_per_ip\"}";
    let mut held = Vec::new();
    for _ in 0..45 {
        held.push(TcpStream::connect(h.http).await.unwrap());
    }
    eventually("refusals to be counted", || async {
        sample(&get(&h, "/metrics").await.text, refused) >= 5.0
    })
    .await;
}

#[tokio::test]
async fn stats_dashboard_and_openapi_answer_json() {
    let h = start("").await;
    let (mut sub, _) = tcp_client(&h, "d").await;
    sub.subscribe("1", "/topic/dash", "").await;
    let stats = get(&h, "/api/stats").await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json["stomp"]["sessions"]["current"]["tcp"], 1);
    assert_eq!(stats.json["sockjs"][0]["prefix"], "/stomp");
    for _ in 0..3 {
        post(
            &h,
            "/api/publish",
            &json!({"destination": "/topic/dash", "body": "x"}),
        )
        .await;
    }
    eventually("the dashboard to show the rate", || async {
        let d = get(&h, "/api/dashboard").await.json;
        d["top_destinations"]["by_rate"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["destination"] == "/topic/dash"))
    })
    .await;
    let d = get(&h, "/api/dashboard").await.json;
    assert_eq!(d["sessions"]["by_transport"]["tcp"], 1);
    assert_eq!(
        d["top_destinations"]["by_subscribers"][0]["destination"],
        "/topic/dash"
    );
    assert_eq!(d["nodes"][0]["self"], true);
    let page = get(&h, "/dashboard").await;
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        !page.text.contains("http://") && !page.text.contains("https://"),
        "no external resources"
    );
    let openapi = get(&h, "/api/openapi.json").await;
    assert_eq!(
        openapi.json["openapi"].as_str().map(|v| &v[..2]),
        Some("3.")
    );
}

/// Run the gateway binary with `args` until it logs "listening on"; returns its log so far.
async fn run_binary(args: &[&str]) -> (tokio::process::Child, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sockjs-gateway"))
        .args(args)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("gateway binary");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.contains("listening on http://") {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                log.push_str(&line);
                log.push('\n');
            }
            _ => panic!("the gateway did not start; its log:\n{log}"),
        }
    }
    (child, log)
}

/// The `http://127.0.0.1:PORT` address after `marker` in a log.
fn logged_addr(log: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &log[log.find(marker)? + marker.len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    addr.parse().ok()
}

#[tokio::test]
async fn the_binary_serves_the_admin_listener_on_admin_listen() {
    // The embedded default's own 127.0.0.1:9090 is never used by tests (a fixed port);
    // --admin-listen replaces it with a free one.
    let (mut child, log) =
        run_binary(&["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]).await;
    let admin = logged_addr(&log, "admin listener at http://").expect("admin line");
    assert!(!log.contains("9090"), "{log}");
    let health = call(admin, "GET", "/healthz", &[], b"").await;
    assert_eq!(health.json, json!({"status": "live"}));
    let main = logged_addr(&log, "listening on http://").expect("main line");
    assert_ne!(main, admin);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn the_api_allow_list_is_separate_from_client_acls() {
    // Clients may not SEND to /topic/public/**, yet the API may publish there, and only there.
    let h = start(
        "[admin]\nallow_destinations = [\"/topic/public/**\"]\n\
         [[stomp.acl]]\naction = \"send\"\ndestination = \"/topic/public/**\"\npolicy = \"deny\"\n",
    )
    .await;
    let (mut sub, _) = tcp_client(&h, "reader").await;
    sub.subscribe("1", "/topic/public/news", "").await;
    let ok = post(
        &h,
        "/api/publish",
        &json!({"destination": "/topic/public/news", "body": "ok"}),
    )
    .await;
    assert_eq!(
        (ok.status, ok.json["delivered"].clone()),
        (200, json!(1)),
        "{}",
        ok.text
    );
    assert_eq!(&sub.frame().await.body[..], b"ok");
    let denied = post(
        &h,
        "/api/publish",
        &json!({"destination": "/topic/private"}),
    )
    .await;
    assert_eq!(
        (denied.status, denied.error_code(), denied.error_field()),
        (403, "forbidden", "destination")
    );
    let denied = post(
        &h,
        "/api/publish",
        &json!({"user": "reader", "destination": "/queue/n"}),
    )
    .await;
    assert_eq!(denied.status, 403);
    sub.send("SEND\ndestination:/topic/public/news\n\nfrom a client\0")
        .await;
    sub.expect_error_then_close("Access denied").await;
}
