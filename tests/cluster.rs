//! Several gateway nodes on a real Redis: topic fan-out across nodes, user destinations,
//! interest-based routing (checked with `PUBSUB NUMSUB` and `CLIENT LIST`), patterns, Redis
//! restarts, the durable inbox, cluster-wide presence and competing queues shared by the
//! nodes (Redis Streams).
//!
//! Nodes run in this process, each a full gateway with its own broker, engine and STOMP-over-
//! TCP listener on a free loopback port, driven by raw STOMP clients. Tests share the
//! machine's Redis on 127.0.0.1:6379 under a channel/key prefix of their own, removed at the
//! end; the restart test starts a private `redis-server` on a free port and stops it by PID.

use std::net::SocketAddr;
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sockjs_gateway::Gateway;
use sockjs_gateway::cluster_link::ClusterLink;
use sockjs_gateway::config::Config;
use sockjs_gateway::stomp::frame::{Command, Frame};
use tokio::net::TcpListener;

mod common;

use common::stomp::Client;

/// The machine's Redis.
const SHARED_REDIS: &str = "redis://127.0.0.1:6379/0";
/// How long a condition may take to become true on a loaded machine.
const SETTLE: Duration = Duration::from_secs(15);

/// One gateway node.
struct Node {
    /// Its STOMP-over-TCP address.
    stomp: SocketAddr,
    /// Its cluster link.
    link: Arc<ClusterLink>,
    /// Stops it when dropped.
    _stop: tokio::sync::watch::Sender<bool>,
}

fn prefix() -> String {
    format!("sgtest-{:08x}:", rand::random::<u32>())
}

async fn node(redis: &str, prefix: &str, name: &str, extra: &str) -> Node {
    node_with(redis, prefix, name, "", extra).await
}

/// A node with `stomp_extra` in its `[stomp]` section and `extra` after its `[cluster]` one.
async fn node_with(redis: &str, prefix: &str, name: &str, stomp_extra: &str, extra: &str) -> Node {
    launch(&node_toml(redis, prefix, name, stomp_extra, extra), false)
        .await
        .0
}

fn node_toml(redis: &str, prefix: &str, name: &str, stomp_extra: &str, extra: &str) -> String {
    format!(
        r#"
[[service]]
prefix = "/stomp"
app = "stomp"

[stomp]
allow_client_send_to_user = true
principal_header = "login"
{stomp_extra}

[cluster]
redis = "{redis}"
node_id = "{name}"
channel_prefix = "{prefix}"
presence_ttl_s = 3
presence_heartbeat_s = 1
{extra}
"#
    )
}

/// Start a node from `toml`, with its admin listener too when `admin` (its address is
/// returned then).
async fn launch(toml: &str, admin: bool) -> (Node, Option<SocketAddr>) {
    let config = Config::from_toml(toml).expect("config");
    let gateway = Gateway::from_config(&config).expect("gateway");
    let link = gateway.cluster().expect("cluster link").clone();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stomp = tcp.local_addr().unwrap();
    gateway.spawn_stomp_tcp(tcp);
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let mut admin_addr = None;
    if admin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        admin_addr = Some(listener.local_addr().unwrap());
        gateway.spawn_admin(listener, rx.clone()).expect("admin");
    }
    tokio::spawn(async move {
        let _ = gateway.serve(http, rx).await;
    });
    let node = Node {
        stomp,
        link,
        _stop: stop,
    };
    (node, admin_addr)
}

async fn client(node: &Node, user: &str) -> Client {
    Client::stomp(node.stomp, "1.2", &format!("login:{user}\n")).await
}

fn redis_conn(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// Subscribers of `channel` in Redis (`PUBSUB NUMSUB`).
fn numsub(url: &str, channel: &str) -> i64 {
    let mut conn = redis_conn(url);
    let reply: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query(&mut conn)
        .unwrap();
    reply.1
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Remove every key under `prefix`.
fn clean(url: &str, prefix: &str) {
    let mut conn = redis_conn(url);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut conn)
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query(&mut conn).unwrap();
    }
}

async fn send(c: &mut Client, destination: &str, body: &str) {
    c.send(&format!("SEND\ndestination:{destination}\n\n{body}\0"))
        .await;
}

async fn message(c: &mut Client) -> Frame {
    let frame = c.frame().await;
    assert_eq!(frame.command, Command::Message, "{frame:?}");
    frame
}

fn body(frame: &Frame) -> String {
    String::from_utf8_lossy(&frame.body).into_owned()
}

#[tokio::test]
async fn topic_message_from_node_1_reaches_subscribers_on_nodes_2_and_3_once_each() {
    let p = prefix();
    let (n1, n2, n3) = (
        node(SHARED_REDIS, &p, "n1", "").await,
        node(SHARED_REDIS, &p, "n2", "").await,
        node(SHARED_REDIS, &p, "n3", "").await,
    );
    let mut local = client(&n1, "a").await;
    let mut b = client(&n2, "b").await;
    let mut c = client(&n3, "c").await;
    let mut c2 = client(&n3, "c2").await;
    local.subscribe("1", "/topic/news", "").await;
    b.subscribe("1", "/topic/news", "").await;
    c.subscribe("1", "/topic/news", "").await;
    c2.subscribe("1", "/topic/news", "").await;
    let channel = format!("{p}/topic/news");
    // One Redis subscription per node, however many local subscribers it has.
    wait_for("three nodes on the channel", || {
        numsub(SHARED_REDIS, &channel) == 3
    })
    .await;
    let mut publisher = client(&n1, "pub").await;
    for i in 0..20 {
        send(&mut publisher, "/topic/news", &format!("m{i}")).await;
    }
    for receiver in [&mut local, &mut b, &mut c, &mut c2] {
        for i in 0..20 {
            let frame = message(receiver).await;
            assert_eq!(
                body(&frame),
                format!("m{i}"),
                "order from one publisher is kept"
            );
            assert_eq!(frame.get("destination"), Some("/topic/news"));
        }
        receiver.expect_silence(300).await;
    }
    // n1 skipped its own 20 envelopes; n3 decoded each envelope once for two subscribers.
    let s1 = n1.link.cluster().unwrap().stats();
    let s3 = n3.link.cluster().unwrap().stats();
    assert_eq!(s1.own_skipped.load(Ordering::Relaxed), 20);
    assert_eq!(s3.received.load(Ordering::Relaxed), 20);
    clean(SHARED_REDIS, &p);
}

#[tokio::test]
async fn alice_on_two_nodes_gets_one_copy_each_of_a_message_sent_from_the_third() {
    let p = prefix();
    let (n1, n2, n3) = (
        node(SHARED_REDIS, &p, "n1", "").await,
        node(SHARED_REDIS, &p, "n2", "").await,
        node(SHARED_REDIS, &p, "n3", "").await,
    );
    let mut alice1 = client(&n1, "alice").await;
    let mut alice2 = client(&n2, "alice").await;
    let mut carol = client(&n2, "carol").await;
    for c in [&mut alice1, &mut alice2, &mut carol] {
        c.subscribe("n", "/user/queue/notify", "").await;
    }
    let channel = format!("{p}user:alice");
    wait_for("alice's two nodes", || numsub(SHARED_REDIS, &channel) == 2).await;
    let mut bob = client(&n3, "bob").await;
    send(&mut bob, "/user/alice/queue/notify", "hello alice").await;
    let one = message(&mut alice1).await;
    let two = message(&mut alice2).await;
    assert_eq!(body(&one), "hello alice");
    assert_eq!(one.get("destination"), Some("/user/queue/notify"));
    assert_eq!(one.get("message-id"), two.get("message-id"));
    alice1.expect_silence(300).await;
    alice2.expect_silence(100).await;
    carol.expect_silence(100).await;
    bob.expect_silence(100).await;
    // n3 has no session of alice's: it never subscribed to her channel.
    assert_eq!(
        n3.link
            .cluster()
            .unwrap()
            .stats()
            .received
            .load(Ordering::Relaxed),
        0
    );
    clean(SHARED_REDIS, &p);
}

/// The `sub=` and `psub=` counts of a node's pub/sub connection in `CLIENT LIST`.
fn client_list_counts(url: &str, node: &str) -> (i64, i64) {
    let mut conn = redis_conn(url);
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
    let name = format!("name=sockjs-gateway-sub-{node} ");
    let line = list
        .lines()
        .find(|l| l.contains(&name))
        .unwrap_or_else(|| panic!("no connection named for {node}"));
    let field = |key: &str| -> i64 {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("sub="), field("psub="))
}

#[tokio::test]
async fn a_node_without_a_subscriber_receives_none_of_the_traffic() {
    let p = prefix();
    let node_a = format!("a{}", &p[7..15]);
    let node_c = format!("c{}", &p[7..15]);
    let (n1, n2, n3) = (
        node(SHARED_REDIS, &p, &node_a, "").await,
        node(SHARED_REDIS, &p, "b", "").await,
        node(SHARED_REDIS, &p, &node_c, "").await,
    );
    let mut b = client(&n2, "b").await;
    b.subscribe("1", "/topic/busy", "").await;
    b.subscribe("2", "/topic/quiet/**", "").await;
    // n3's only subscriber wants another topic.
    let mut c = client(&n3, "c").await;
    c.subscribe("1", "/topic/other", "").await;
    wait_for("b on the busy channel", || {
        numsub(SHARED_REDIS, &format!("{p}/topic/busy")) == 1
    })
    .await;
    wait_for("c on its channel", || {
        numsub(SHARED_REDIS, &format!("{p}/topic/other")) == 1
    })
    .await;
    // CLIENT LIST: n3's pub/sub connection has its one channel (and its user channel) and no
    // pattern; n1, with no subscriber at all, has only the publisher's user channel.
    assert_eq!(client_list_counts(SHARED_REDIS, &node_c), (2, 0));
    let mut publisher = client(&n1, "pub").await;
    wait_for("n1 on its user channel only", || {
        client_list_counts(SHARED_REDIS, &node_a) == (1, 0)
    })
    .await;
    for i in 0..100 {
        send(&mut publisher, "/topic/busy", &format!("m{i}")).await;
        send(&mut publisher, "/topic/quiet/x/y", &format!("q{i}")).await;
    }
    let mut seen = (0, 0);
    while seen != (100, 100) {
        let frame = message(&mut b).await;
        match frame.get("subscription") {
            Some("1") => seen.0 += 1,
            _ => seen.1 += 1,
        }
    }
    c.expect_silence(300).await;
    for n in [&n1, &n3] {
        let stats = n.link.cluster().unwrap().stats();
        assert_eq!(stats.received.load(Ordering::Relaxed), 0);
        assert_eq!(stats.duplicate_skipped.load(Ordering::Relaxed), 0);
        assert_eq!(stats.bad_envelopes.load(Ordering::Relaxed), 0);
    }
    // n1 itself is subscribed to none of it, so none of its 200 came back to it.
    assert_eq!(
        n1.link
            .cluster()
            .unwrap()
            .stats()
            .own_skipped
            .load(Ordering::Relaxed),
        0
    );
    clean(SHARED_REDIS, &p);
}

#[tokio::test]
async fn overlapping_channel_and_pattern_interest_delivers_one_copy_per_subscription() {
    let p = prefix();
    let (n1, n2) = (
        node(SHARED_REDIS, &p, "n1", "").await,
        node(SHARED_REDIS, &p, "n2", "").await,
    );
    let mut b = client(&n2, "b").await;
    b.subscribe("lit", "/topic/x/y", "").await;
    b.subscribe("all", "/topic/**", "").await;
    b.subscribe("one", "/topic/x/*", "").await;
    wait_for("n2's channel and globs", || {
        numsub(SHARED_REDIS, &format!("{p}/topic/x/y")) == 1
    })
    .await;
    let mut conn = redis_conn(SHARED_REDIS);
    wait_for("n2's globs", || {
        let n: i64 = redis::cmd("PUBSUB").arg("NUMPAT").query(&mut conn).unwrap();
        n >= 2
    })
    .await;
    // Let the glob confirmations land before publishing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut publisher = client(&n1, "pub").await;
    send(&mut publisher, "/topic/x/y", "one").await;
    send(&mut publisher, "/topic/x/y/z", "two").await;
    let mut got: Vec<(String, String)> = Vec::new();
    for _ in 0..4 {
        let frame = message(&mut b).await;
        got.push((frame.get("subscription").unwrap().to_owned(), body(&frame)));
    }
    b.expect_silence(300).await;
    got.sort();
    assert_eq!(
        got,
        [
            ("all".to_string(), "one".to_string()),
            ("all".to_string(), "two".to_string()),
            ("lit".to_string(), "one".to_string()),
            ("one".to_string(), "one".to_string()),
        ]
    );
    let stats = n2.link.cluster().unwrap().stats();
    assert_eq!(stats.received.load(Ordering::Relaxed), 2);
    assert!(stats.duplicate_skipped.load(Ordering::Relaxed) >= 2);
    clean(SHARED_REDIS, &p);
}

/// A private `redis-server` on a free loopback port, stopped by PID.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = PrivateRedis { port, child: None };
        redis.spawn();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) {
        let child = Process::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir", "/tmp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + SETTLE;
        while redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .is_err()
        {
            assert!(Instant::now() < deadline, "private redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn a_redis_restart_mid_test_recovers_by_itself_and_local_delivery_never_stops() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let p = prefix();
    let (n1, n2) = (
        node(&url, &p, "n1", "").await,
        node(&url, &p, "n2", "").await,
    );
    let mut local = client(&n1, "a").await;
    let mut remote = client(&n2, "b").await;
    local.subscribe("1", "/topic/t", "").await;
    remote.subscribe("1", "/topic/t", "").await;
    let channel = format!("{p}/topic/t");
    wait_for("both nodes subscribed", || numsub(&url, &channel) == 2).await;
    let mut publisher = client(&n1, "pub").await;
    send(&mut publisher, "/topic/t", "before").await;
    assert_eq!(body(&message(&mut local).await), "before");
    assert_eq!(body(&message(&mut remote).await), "before");

    redis.stop();
    let s1 = n1.link.cluster().unwrap().stats().clone();
    let s2 = n2.link.cluster().unwrap().stats().clone();
    wait_for("n2 to notice", || !s2.connected.load(Ordering::Relaxed)).await;
    // Redis is gone: the local subscriber still gets every message, at once.
    for i in 0..5 {
        send(&mut publisher, "/topic/t", &format!("down{i}")).await;
        assert_eq!(body(&message(&mut local).await), format!("down{i}"));
    }

    redis.spawn();
    wait_for("n2 to resubscribe", || {
        s2.resubscribes.load(Ordering::Relaxed) >= 1 && numsub(&url, &channel) == 2
    })
    .await;
    assert!(s1.resubscribes.load(Ordering::Relaxed) >= 1 || s1.connected.load(Ordering::Relaxed));
    // The command connection reconnects on its own too: keep publishing until one crosses.
    // Messages queued while Redis was unreachable may cross late (they waited in the bounded
    // queue) or not at all (dropped, counted); what crosses keeps its order, once each.
    let mut sent = (0..5).map(|i| format!("down{i}")).collect::<Vec<_>>();
    let mut crossed: Vec<String> = Vec::new();
    let deadline = Instant::now() + SETTLE;
    let mut i = 0;
    while !crossed.iter().any(|b| b.starts_with("after")) {
        let text = format!("after{i}");
        send(&mut publisher, "/topic/t", &text).await;
        assert_eq!(body(&message(&mut local).await), text);
        sent.push(text);
        while let Ok(Some(frame)) =
            tokio::time::timeout(Duration::from_millis(200), remote.next()).await
        {
            crossed.push(body(&frame));
        }
        assert!(
            Instant::now() < deadline,
            "cross-node delivery did not resume"
        );
        i += 1;
    }
    let positions: Vec<usize> = crossed
        .iter()
        .map(|b| {
            sent.iter()
                .position(|s| s == b)
                .expect("only sent messages cross")
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "order kept, no duplicate: {crossed:?}"
    );
}

const INBOX: &str = r#"
[cluster.inbox]
destinations = ["/user/queue/notify"]
max_messages = 100
ttl_s = 600
"#;

async fn inbox_round_trip(n_send: &Node, n_first: &Node, n_second: &Node) {
    let mut bob = client(n_send, "bob").await;
    for i in 0..3 {
        send(&mut bob, "/user/dora/queue/notify", &format!("missed{i}")).await;
    }
    // Nobody is online as dora: the messages wait in the inbox. She connects to one node with
    // client-individual acks and gets all three, in order, with stream ids as message-ids.
    let mut dora = client(n_first, "dora").await;
    dora.subscribe("n", "/user/queue/notify", "ack:client-individual\n")
        .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let frame = message(&mut dora).await;
        assert_eq!(body(&frame), format!("missed{i}"));
        assert_eq!(frame.get("destination"), Some("/user/queue/notify"));
        ids.push(frame.get("message-id").unwrap().to_owned());
        if i == 0 {
            let ack = frame.get("ack").unwrap().to_owned();
            dora.send(&format!("ACK\nid:{ack}\nreceipt:r\n\n\0")).await;
            // The next deliveries may already be on the wire ahead of the RECEIPT.
            dora.receipt("r").await;
        }
    }
    // A live message while she is subscribed.
    send(&mut bob, "/user/dora/queue/notify", "live").await;
    let live = message(&mut dora).await;
    assert_eq!(body(&live), "live");
    drop(dora);
    // She reconnects elsewhere: the two unACKed ones and the unACKed live one come again, with
    // the same ids; this time ack:auto settles them on delivery.
    let mut again = {
        let deadline = Instant::now() + SETTLE;
        loop {
            let mut c = client(n_second, "dora").await;
            c.subscribe("n", "/user/queue/notify", "").await;
            let first = message(&mut c).await;
            if first.get("message-id") == Some(ids[1].as_str()) {
                c.pending.push_front(first);
                break c;
            }
            // The settle of the first ACK may still be on its way; try again.
            assert!(Instant::now() < deadline, "inbox replay never settled");
        }
    };
    for (want, id) in [("missed1", &ids[1]), ("missed2", &ids[2])] {
        let frame = message(&mut again).await;
        assert_eq!(body(&frame), want);
        assert_eq!(frame.get("message-id"), Some(id.as_str()));
    }
    let frame = message(&mut again).await;
    assert_eq!(body(&frame), "live");
    assert_eq!(frame.get("message-id"), live.get("message-id"));
    again.expect_silence(300).await;
    drop(again);
    // Everything was delivered to an auto-ack subscription: nothing is replayed now.
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut last = client(n_first, "dora").await;
        last.subscribe("n", "/user/queue/notify", "").await;
        match tokio::time::timeout(Duration::from_millis(300), last.next()).await {
            Err(_) => break,
            Ok(_) => assert!(
                Instant::now() < deadline,
                "settled messages kept coming back"
            ),
        }
    }
}

#[tokio::test]
async fn inbox_in_redis_replays_what_a_user_missed_on_any_node_until_acked() {
    let p = prefix();
    let (n1, n2, n3) = (
        node(SHARED_REDIS, &p, "n1", INBOX).await,
        node(SHARED_REDIS, &p, "n2", INBOX).await,
        node(SHARED_REDIS, &p, "n3", INBOX).await,
    );
    inbox_round_trip(&n1, &n2, &n3).await;
    let stored = n1
        .link
        .inbox_stats()
        .unwrap()
        .stored
        .load(Ordering::Relaxed);
    assert_eq!(stored, 4);
    clean(SHARED_REDIS, &p);
}

#[tokio::test]
async fn inbox_without_redis_works_in_memory_on_one_node() {
    let toml = format!(
        "[[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\n[stomp]\nallow_client_send_to_user = true\nprincipal_header = \"login\"\n{INBOX}"
    );
    let config = Config::from_toml(&toml).expect("config");
    let gateway = Gateway::from_config(&config).expect("gateway");
    let link = gateway.cluster().expect("inbox link").clone();
    assert!(link.cluster().is_none());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stomp = tcp.local_addr().unwrap();
    gateway.spawn_stomp_tcp(tcp);
    let (stop, _rx) = tokio::sync::watch::channel(false);
    let n = Node {
        stomp,
        link,
        _stop: stop,
    };
    inbox_round_trip(&n, &n, &n).await;
}

#[tokio::test]
async fn presence_answers_for_the_whole_cluster_and_a_dead_nodes_entries_expire() {
    let p = prefix();
    let n1 = node(SHARED_REDIS, &p, "n1", "").await;
    let _alice1 = client(&n1, "alice").await;
    // A second node in a runtime of its own, so that it can die without a goodbye.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (die_tx, die_rx) = std::sync::mpsc::channel::<()>();
    let prefix2 = p.clone();
    let thread = std::thread::spawn(move || {
        // A current-thread runtime runs its tasks only inside `block_on`.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let n2 = node(SHARED_REDIS, &prefix2, "n2", "").await;
            let c = client(&n2, "alice").await;
            addr_tx.send(()).unwrap();
            let _keep = (n2, c);
            tokio::task::spawn_blocking(move || die_rx.recv())
                .await
                .ok();
        });
        // Never driven again, nor dropped (which would close its sockets): n2 hangs like a
        // dead process, and writes no leave.
        std::mem::forget(runtime);
    });
    addr_rx.recv().unwrap();
    let presence = n1.link.presence().unwrap().clone();
    let deadline = Instant::now() + SETTLE;
    loop {
        let nodes: Vec<String> = presence
            .sessions("alice")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.node)
            .collect();
        if nodes == ["n1", "n2"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "presence never showed both nodes: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    die_tx.send(()).unwrap();
    thread.join().unwrap();
    // n2's tasks are frozen: its entry expires within the TTL
    // (3 s), while n1's heartbeat keeps its own.
    let deadline = Instant::now() + SETTLE;
    loop {
        let nodes: Vec<String> = presence
            .sessions("alice")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.node)
            .collect();
        if nodes == ["n1"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dead node's entry lingered: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(presence.sessions("nobody").await.unwrap().is_empty());
    clean(SHARED_REDIS, &p);
}

/// A node whose `/queue` destinations are competing queues shared by the cluster; a message
/// another consumer leaves unsettled for a second is taken over.
async fn queue_node(prefix: &str, name: &str) -> Node {
    node_with(
        SHARED_REDIS,
        prefix,
        name,
        "queue_semantics = \"competing\"",
        "queue_reclaim_ms = 1000",
    )
    .await
}

fn stream_len(url: &str, key: &str) -> i64 {
    redis::cmd("XLEN")
        .arg(key)
        .query(&mut redis_conn(url))
        .unwrap()
}

#[tokio::test]
async fn a_competing_queue_is_one_queue_across_nodes_each_message_to_one_subscriber() {
    let p = prefix();
    let (n1, n2, n3) = (
        queue_node(&p, "q1").await,
        queue_node(&p, "q2").await,
        queue_node(&p, "q3").await,
    );
    let mut publisher = client(&n3, "pub").await;
    // Sent before anyone subscribes anywhere: kept in the stream for the first consumer.
    for i in 0..5 {
        send(&mut publisher, "/queue/jobs", &format!("j{i}")).await;
    }
    let key = format!("{p}queue:/queue/jobs");
    wait_for("the early messages in the stream", || {
        stream_len(SHARED_REDIS, &key) == 5
    })
    .await;
    let mut a = client(&n1, "a").await;
    let mut b = client(&n2, "b").await;
    a.subscribe("1", "/queue/jobs", "").await;
    b.subscribe("1", "/queue/jobs", "").await;
    for i in 5..60 {
        send(&mut publisher, "/queue/jobs", &format!("j{i}")).await;
    }
    let mut seen = std::collections::BTreeMap::new();
    let deadline = Instant::now() + SETTLE;
    while seen.len() < 60 {
        assert!(
            Instant::now() < deadline,
            "only {} of 60 arrived",
            seen.len()
        );
        for (who, c) in [("a", &mut a), ("b", &mut b)] {
            if let Ok(Some(frame)) = tokio::time::timeout(Duration::from_millis(50), c.next()).await
            {
                assert_eq!(frame.command, Command::Message, "{frame:?}");
                let id = frame.get("message-id").unwrap_or_default().to_owned();
                assert!(id.contains('-'), "the stream id is the message id: {id}");
                let previous = seen.insert(body(&frame), who);
                assert!(previous.is_none(), "{} delivered twice", body(&frame));
            }
        }
    }
    a.expect_silence(300).await;
    b.expect_silence(0).await;
    let expected: std::collections::BTreeSet<String> = (0..60).map(|i| format!("j{i}")).collect();
    assert_eq!(
        seen.keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        expected
    );
    // Settled messages leave the stream; nothing stays pending.
    wait_for("an empty stream", || stream_len(SHARED_REDIS, &key) == 0).await;
    assert_eq!(
        n3.link
            .queue_stats()
            .unwrap()
            .appended
            .load(Ordering::Relaxed),
        60
    );
    let delivered: u64 = [&n1, &n2]
        .iter()
        .map(|n| {
            n.link
                .queue_stats()
                .unwrap()
                .delivered
                .load(Ordering::Relaxed)
        })
        .sum();
    assert_eq!(delivered, 60);
    clean(SHARED_REDIS, &p);
}

async fn ack(c: &mut Client, frame: &Frame, command: &str) {
    let token = frame.get("ack").expect("an ack header").to_owned();
    c.send(&format!("{command}\nid:{token}\nreceipt:r-{token}\n\n\0"))
        .await;
    c.receipt(&format!("r-{token}")).await;
}

#[tokio::test]
async fn what_is_nacked_left_or_held_by_a_dead_consumer_is_redelivered_across_nodes() {
    let p = prefix();
    let (n1, n2) = (queue_node(&p, "r1").await, queue_node(&p, "r2").await);
    let key = format!("{p}queue:/queue/work");
    let client_ack = "ack:client-individual\nprefetch-count:1\n";
    let mut a = client(&n1, "a").await;
    a.subscribe("1", "/queue/work", client_ack).await;
    let mut publisher = client(&n2, "pub").await;
    send(&mut publisher, "/queue/work", "job").await;
    let first = message(&mut a).await;
    assert_eq!(
        (body(&first).as_str(), first.get("redelivered")),
        ("job", Some("false"))
    );
    // NACK: back in the queue, and here again, marked redelivered.
    ack(&mut a, &first, "NACK").await;
    let again = message(&mut a).await;
    assert_eq!(
        (body(&again).as_str(), again.get("redelivered")),
        ("job", Some("true"))
    );
    // Its subscriber leaves without an ACK: a subscriber on the other node gets it.
    let mut b = client(&n2, "b").await;
    b.subscribe("1", "/queue/work", client_ack).await;
    drop(a);
    let moved = message(&mut b).await;
    assert_eq!(
        (body(&moved).as_str(), moved.get("redelivered")),
        ("job", Some("true"))
    );
    ack(&mut b, &moved, "ACK").await;
    wait_for("the ACKed message out of the stream", || {
        stream_len(SHARED_REDIS, &key) == 0
    })
    .await;
    b.send("UNSUBSCRIBE\nid:1\nreceipt:u\n\n\0").await;
    b.receipt("u").await;

    // A consumer that read a message and died (its node was killed): here a consumer made
    // with XREADGROUP by the test, which never acknowledges. A live node takes it over once
    // it has been idle longer than queue_reclaim_ms.
    send(&mut publisher, "/queue/work", "orphan").await;
    wait_for("the orphan in the stream", || {
        stream_len(SHARED_REDIS, &key) == 1
    })
    .await;
    let mut conn = redis_conn(SHARED_REDIS);
    let read: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("consumers")
        .arg("dead-node")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .query(&mut conn)
        .unwrap();
    assert!(
        matches!(read, redis::Value::Array(ref a) if !a.is_empty()),
        "{read:?}"
    );
    let started = Instant::now();
    let mut c = client(&n1, "c").await;
    c.subscribe("1", "/queue/work", client_ack).await;
    let taken = message(&mut c).await;
    assert_eq!(
        (body(&taken).as_str(), taken.get("redelivered")),
        ("orphan", Some("true"))
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "taken over before it was idle"
    );
    ack(&mut c, &taken, "ACK").await;
    wait_for("nothing pending", || stream_len(SHARED_REDIS, &key) == 0).await;
    assert!(
        n1.link
            .queue_stats()
            .unwrap()
            .reclaimed
            .load(Ordering::Relaxed)
            >= 1
    );
    clean(SHARED_REDIS, &p);
}

/// A gateway node in a process of its own, to be killed with SIGKILL.
struct ProcessNode {
    child: Child,
    stomp: SocketAddr,
    _dir: Scratch,
}

/// A scratch directory, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn process_queue_node(prefix: &str, name: &str) -> ProcessNode {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("sgtest-{name}-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\n\n\
             [stomp]\ntcp_listen = \"127.0.0.1:0\"\nprincipal_header = \"login\"\n\
             queue_semantics = \"competing\"\n\n\
             [cluster]\nredis = \"{SHARED_REDIS}\"\nnode_id = \"{name}\"\nchannel_prefix = \"{prefix}\"\n\
             queue_reclaim_ms = 1000\n"
        ),
    )
    .unwrap();
    let mut child = Process::new(env!("CARGO_BIN_EXE_sockjs-gateway"))
        .arg("--config")
        .arg(&config)
        .env("SOCKJS_GATEWAY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the gateway binary");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("STOMP over TCP listening on ").nth(1)
                && let Some(addr) = rest.split_whitespace().next().and_then(|a| a.parse().ok())
            {
                let _ = tx.send(addr);
            }
        }
    });
    let stomp = rx.recv_timeout(SETTLE).expect("the node's STOMP address");
    ProcessNode {
        child,
        stomp,
        _dir: Scratch(dir),
    }
}

#[tokio::test]
async fn a_killed_nodes_unacknowledged_queue_messages_are_redelivered_by_another_node() {
    let p = prefix();
    let mut doomed = process_queue_node(&p, "k1");
    let survivor = queue_node(&p, "k2").await;
    let key = format!("{p}queue:/queue/crash");
    let client_ack = "ack:client-individual\nprefetch-count:5\n";
    let mut a = Client::stomp(doomed.stomp, "1.2", "login:a\n").await;
    a.subscribe("1", "/queue/crash", client_ack).await;
    let mut publisher = client(&survivor, "pub").await;
    for i in 0..3 {
        send(&mut publisher, "/queue/crash", &format!("c{i}")).await;
    }
    for i in 0..3 {
        let frame = message(&mut a).await;
        assert_eq!(body(&frame), format!("c{i}"));
    }
    // SIGKILL: no goodbye, no requeue; the three stay pending at its consumer.
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    let mut b = client(&survivor, "b").await;
    b.subscribe("1", "/queue/crash", client_ack).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let frame = message(&mut b).await;
        assert_eq!(frame.get("redelivered"), Some("true"), "{frame:?}");
        got.push(body(&frame));
        ack(&mut b, &frame, "ACK").await;
    }
    got.sort();
    assert_eq!(got, ["c0", "c1", "c2"]);
    b.expect_silence(300).await;
    wait_for("an empty stream", || stream_len(SHARED_REDIS, &key) == 0).await;
    clean(SHARED_REDIS, &p);
}

/// A node with its admin listener too; returns the node and the admin address.
async fn admin_node(prefix: &str, name: &str) -> (Node, SocketAddr) {
    let admin = "[admin]\nlisten = \"127.0.0.1:0\"\n";
    let toml = node_toml(SHARED_REDIS, prefix, name, "", admin);
    let (node, addr) = launch(&toml, true).await;
    (node, addr.expect("the admin address"))
}

#[tokio::test]
async fn the_admin_api_answers_presence_for_the_whole_cluster_and_shows_the_cluster_state() {
    let p = prefix();
    let (n1, admin) = admin_node(&p, "a1").await;
    let n2 = node(SHARED_REDIS, &p, "a2", "").await;
    let _here = client(&n1, "alice").await;
    let _there = client(&n2, "alice").await;
    let deadline = Instant::now() + SETTLE;
    let answer = loop {
        let response = common::request(admin, "GET", "/api/presence/users/alice", &[], b"").await;
        assert_eq!(response.status, 200);
        let answer: serde_json::Value =
            serde_json::from_slice(&response.body().await).expect("JSON");
        let nodes: Vec<&str> = answer["cluster"]["sessions"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["node"].as_str()).collect())
            .unwrap_or_default();
        if nodes == ["a1", "a2"] {
            break answer;
        }
        assert!(Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // This node's own session in full; every node's by node and session id.
    assert_eq!(answer["cluster"]["node"], "a1");
    assert_eq!(
        answer["sessions"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    let own = answer["sessions"][0]["id"].as_str().unwrap_or_default();
    assert!(
        answer["cluster"]["sessions"]
            .as_array()
            .is_some_and(|all| all.iter().any(|s| s["session"] == own)),
        "{answer}"
    );
    // The cluster's state is in /api/stats and /metrics too.
    let response = common::request(admin, "GET", "/api/stats", &[], b"").await;
    let stats: serde_json::Value = serde_json::from_slice(&response.body().await).expect("JSON");
    let redis = &stats["cluster"]["redis"];
    assert_eq!(
        (&redis["node"], &redis["connected"]),
        (&json_str("a1"), &serde_json::Value::Bool(true)),
        "{stats}"
    );
    assert!(redis["subscribe_commands"].as_u64() >= Some(1), "{stats}");
    assert!(stats["cluster"]["shared_queues"].is_null() && stats["cluster"]["inbox"].is_null());
    let response = common::request(admin, "GET", "/metrics", &[], b"").await;
    let metrics = String::from_utf8(response.body().await).expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l == "sockjs_gateway_cluster_redis_connected 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sockjs_gateway_cluster_redis_subscribe_commands_total "),
        "{metrics}"
    );
    clean(SHARED_REDIS, &p);
}

fn json_str(s: &str) -> serde_json::Value {
    serde_json::Value::String(s.to_owned())
}
