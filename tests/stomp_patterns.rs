//! Pattern subscriptions through real loopback sockets: hostile patterns are refused at
//! SUBSCRIBE or matched in linear time (a new client is still answered at once), and the ACL
//! judges a pattern SUBSCRIBE by every destination it can receive.
//!
//! Each test starts its own STOMP-over-TCP server on 127.0.0.1:0; every wait is bounded.

use std::time::Instant;

use sockjs_gateway::stomp::StompConfig;
use sockjs_gateway::stomp::frame::Command;

mod common;

use common::stomp::{Client, WAIT, start};

/// A `[stomp]` table as TOML.
fn config(toml_text: &str) -> StompConfig {
    toml::from_str(toml_text).expect("test config")
}

/// The two frames that used to freeze the broker: ten `**` then `z`, and a 30-segment SEND.
const FREEZE_PATTERN: &str = "/topic/**/**/**/**/**/**/**/**/**/**/z";

fn thirty_segments() -> String {
    format!("/topic/{}b", "a/".repeat(29))
}

#[tokio::test]
async fn a_pattern_beyond_the_limits_is_refused_at_subscribe_naming_the_problem() {
    let (addr, _app) = start(StompConfig::default()).await;
    let cases = [
        (
            FREEZE_PATTERN.to_string(),
            "pattern has 10 `**` segments; at most 4 are allowed (the limit is [stomp] \
             max_pattern_any_segments)",
        ),
        (
            "/topic/*a*a*a*a*a*a*a*a*c".to_string(),
            "pattern segment 3 (\"*a*a*a*a*a*a*a*a*c\") has 9 `*`; at most 4 are allowed \
             (the limit is [stomp] max_pattern_stars)",
        ),
        (
            format!("/topic/*{}", "/x".repeat(40)),
            "pattern has 43 segments; at most 32 are allowed (the limit is [stomp] \
             max_pattern_segments)",
        ),
    ];
    for (pattern, detail) in cases {
        let mut c = Client::stomp(addr, "1.2", "").await;
        c.send(&format!(
            "SUBSCRIBE\nid:0\ndestination:{pattern}\nreceipt:r\n\n\0"
        ))
        .await;
        let error = c
            .expect_error_then_close("Invalid header: destination")
            .await;
        assert_eq!(error.get("receipt-id"), Some("r"));
        let body = String::from_utf8_lossy(&error.body).into_owned();
        assert!(body.starts_with(detail), "{body}");
    }
    // The limits are configurable, and patterns within them still work.
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.subscribe("0", "/topic/**/**/**/**/z", "").await;
    c.send("SEND\ndestination:/topic/a/b/z\n\nok\0").await;
    let message = c.frame().await;
    assert_eq!(message.command, Command::Message);
    assert_eq!(message.get("subscription"), Some("0"));
}

#[tokio::test]
async fn the_freeze_patterns_within_raised_limits_match_fast_and_never_block_others() {
    let (addr, _app) = start(config(
        "max_pattern_any_segments = 16\nmax_pattern_stars = 16\n",
    ))
    .await;
    let mut attacker = Client::stomp(addr, "1.2", "").await;
    attacker.subscribe("deep", FREEZE_PATTERN, "").await;
    attacker
        .subscribe("glob", "/topic/*a*a*a*a*a*a*a*a*c", "")
        .await;
    let started = Instant::now();
    attacker
        .send(&format!(
            "SEND\ndestination:{}\nreceipt:s1\n\nx\0",
            thirty_segments()
        ))
        .await;
    attacker
        .send(&format!(
            "SEND\ndestination:/topic/{}\nreceipt:s2\n\nx\0",
            "a".repeat(40)
        ))
        .await;
    for receipt in ["s1", "s2"] {
        let frame = attacker.frame().await;
        assert_eq!(frame.command, Command::Receipt, "{frame:?}");
        assert_eq!(frame.get("receipt-id"), Some(receipt));
    }
    // A new client is answered at once (Client::stomp waits at most WAIT for CONNECTED).
    let mut other = Client::stomp(addr, "1.2", "").await;
    other.subscribe("0", "/topic/news", "").await;
    assert!(started.elapsed() < WAIT, "{:?}", started.elapsed());
    // The patterns still match what they should.
    attacker
        .send(&format!(
            "SEND\ndestination:/topic/{}z\n\ndeep\0",
            "a/".repeat(29)
        ))
        .await;
    let message = attacker.frame().await;
    assert_eq!(message.get("subscription"), Some("deep"));
    attacker
        .send(&format!(
            "SEND\ndestination:/topic/{}c\n\nglob\0",
            "a".repeat(40)
        ))
        .await;
    let message = attacker.frame().await;
    assert_eq!(message.get("subscription"), Some("glob"));
}

const ADMIN_DENIED: &str = r#"
[[acl]]
action = "subscribe"
destination = "/topic/admin/**"
policy = "deny"
"#;

#[tokio::test]
async fn pattern_subscriptions_that_could_receive_a_denied_destination_are_denied() {
    let (addr, _app) = start(config(ADMIN_DENIED)).await;
    for pattern in [
        "/topic/**",
        "/topic/*/log",
        "/topic/{x}/log",
        "/topic/adm*/log",
        "/topic/admin/log",
    ] {
        let mut c = Client::stomp(addr, "1.2", "").await;
        c.send(&format!("SUBSCRIBE\nid:0\ndestination:{pattern}\n\n\0"))
            .await;
        let error = c.expect_error_then_close("Access denied").await;
        let body = String::from_utf8_lossy(&error.body).into_owned();
        assert!(body.contains(pattern), "the ERROR names {pattern}: {body}");
    }
    // What cannot receive an admin destination is still allowed, and never sees one.
    let mut reader = Client::stomp(addr, "1.2", "").await;
    reader.subscribe("news", "/topic/news/*", "").await;
    reader.subscribe("other", "/topic/b*/**", "").await;
    let mut publisher = Client::stomp(addr, "1.2", "").await;
    publisher
        .send("SEND\ndestination:/topic/admin/log\n\nsecret\0")
        .await;
    publisher
        .send("SEND\ndestination:/topic/news/today\n\npublic\0")
        .await;
    let message = reader.frame().await;
    assert_eq!(message.get("destination"), Some("/topic/news/today"));
    assert_eq!(&message.body[..], b"public");
    reader.expect_silence(300).await;
}

#[tokio::test]
async fn with_a_deny_default_a_pattern_must_be_covered_by_one_allow_rule() {
    let (addr, _app) = start(config(
        r#"
acl_default = "deny"

[[acl]]
action = "subscribe"
destination = "/topic/public/**"
policy = "allow"

[[acl]]
action = "subscribe"
destination = "/topic/*/summary"
policy = "allow"
"#,
    ))
    .await;
    let mut c = Client::stomp(addr, "1.2", "").await;
    c.subscribe("0", "/topic/public/*/x", "").await;
    c.subscribe("1", "/topic/{area}/summary", "").await;
    for pattern in ["/topic/**", "/topic/*/*"] {
        let mut c = Client::stomp(addr, "1.2", "").await;
        c.send(&format!("SUBSCRIBE\nid:0\ndestination:{pattern}\n\n\0"))
            .await;
        c.expect_error_then_close("Access denied").await;
    }
}
