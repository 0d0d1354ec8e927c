//! `[server] trusted_proxies`: the client address comes from `X-Forwarded-For`/`Forwarded`
//! (HTTP) and from a PROXY protocol header (STOMP over TCP) only when the connection's peer
//! is a trusted proxy, so per-address limits and session affinity work behind nginx.

use sockjs_gateway::Gateway;
use sockjs_gateway::config::Config;
use sockjs_gateway::stomp::StompEvent;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

mod common;

use common::{request_from, start_gateway};

const ECHO: &str = "[[service]]\nprefix = \"/echo\"\napp = \"echo\"\nmax_sessions_per_ip = 1\n";

#[tokio::test]
async fn per_address_limits_count_forwarded_clients_behind_a_trusted_proxy() {
    let addr = start_gateway(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n{ECHO}"
    ))
    .await;
    for (id, client) in [("a", "192.0.2.1"), ("b", "192.0.2.2")] {
        let r = request_from(
            "127.0.0.1",
            addr,
            "POST",
            &format!("/echo/000/{id}/xhr"),
            &[("X-Forwarded-For", client)],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "client {client}");
    }
    let again = request_from(
        "127.0.0.1",
        addr,
        "POST",
        "/echo/000/c/xhr",
        &[("Forwarded", "for=192.0.2.1")],
        b"",
    )
    .await;
    assert_eq!(again.status, 503, "192.0.2.1 already has its one session");
    // Session affinity follows the forwarded client: another client's request for
    // session a is refused, the owner's is served.
    let owner = request_from(
        "127.0.0.1",
        addr,
        "POST",
        "/echo/000/a/xhr_send",
        &[("X-Forwarded-For", "192.0.2.1")],
        b"[\"x\"]",
    )
    .await;
    assert_eq!(owner.status, 204);
    let thief = request_from(
        "127.0.0.1",
        addr,
        "POST",
        "/echo/000/a/xhr_send",
        &[("X-Forwarded-For", "192.0.2.9")],
        b"[\"x\"]",
    )
    .await;
    assert_ne!(thief.status, 204);
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let addr = start_gateway(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n{ECHO}"
    ))
    .await;
    let first = request_from(
        "127.0.0.2",
        addr,
        "POST",
        "/echo/000/a/xhr",
        &[("X-Forwarded-For", "192.0.2.1")],
        b"",
    )
    .await;
    assert_eq!(first.status, 200);
    let second = request_from(
        "127.0.0.2",
        addr,
        "POST",
        "/echo/000/b/xhr",
        &[("X-Forwarded-For", "192.0.2.2")],
        b"",
    )
    .await;
    assert_eq!(
        second.status, 503,
        "127.0.0.2 is not trusted: both are its sessions"
    );
}

async fn stomp_node(
    trusted: &str,
) -> (
    std::net::SocketAddr,
    tokio::sync::broadcast::Receiver<StompEvent>,
) {
    let toml = format!(
        "[server]\ntrusted_proxies = [{trusted}]\n[[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\n"
    );
    let gateway = Gateway::from_config(&Config::from_toml(&toml).unwrap()).unwrap();
    let events = gateway.stomp().subscribe_events();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    gateway.spawn_stomp_tcp(tcp);
    (addr, events)
}

async fn connect_addr(
    events: &mut tokio::sync::broadcast::Receiver<StompEvent>,
) -> std::net::SocketAddr {
    loop {
        let event = tokio::time::timeout(common::IO_TIMEOUT, events.recv())
            .await
            .unwrap()
            .unwrap();
        if let StompEvent::Connect { remote_addr, .. } = event {
            return remote_addr;
        }
    }
}

#[tokio::test]
async fn stomp_tcp_takes_the_client_from_proxy_protocol_v1_and_v2() {
    let (addr, mut events) = stomp_node("\"127.0.0.1\"").await;
    let connect = b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0";
    let mut v1 = TcpStream::connect(addr).await.unwrap();
    v1.write_all(b"PROXY TCP4 192.0.2.5 127.0.0.1 5555 61613\r\n")
        .await
        .unwrap();
    v1.write_all(connect).await.unwrap();
    assert_eq!(
        connect_addr(&mut events).await.to_string(),
        "192.0.2.5:5555"
    );

    let mut v2 = TcpStream::connect(addr).await.unwrap();
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    header.extend([198, 51, 100, 7, 127, 0, 0, 1, 0x04, 0xd2, 0xf0, 0x0d]);
    v2.write_all(&header).await.unwrap();
    v2.write_all(connect).await.unwrap();
    assert_eq!(
        connect_addr(&mut events).await.to_string(),
        "198.51.100.7:1234"
    );

    // A trusted peer may also connect without a header.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(connect).await.unwrap();
    assert_eq!(
        connect_addr(&mut events).await.ip().to_string(),
        "127.0.0.1"
    );
}

#[tokio::test]
async fn stomp_tcp_ignores_proxy_protocol_from_an_untrusted_peer() {
    let (addr, mut events) = stomp_node("").await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"PROXY TCP4 192.0.2.5 127.0.0.1 5555 61613\r\nCONNECT\naccept-version:1.2\n\n\0")
        .await
        .unwrap();
    // The PROXY line is not STOMP: the session sees it as a bad frame, from its real peer.
    assert_eq!(
        connect_addr_or_none(&mut events)
            .await
            .map(|a| a.ip().to_string()),
        None
    );
}

async fn connect_addr_or_none(
    events: &mut tokio::sync::broadcast::Receiver<StompEvent>,
) -> Option<std::net::SocketAddr> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
    while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if let StompEvent::Connect { remote_addr, .. } = event {
            return Some(remote_addr);
        }
    }
    None
}
