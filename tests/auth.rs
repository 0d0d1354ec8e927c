//! Handshake authentication through real sockets: JWTs (HS256, RS256, ES256) from the
//! `access_token` query, the `Authorization` header and a cookie; expired, wrong-signature,
//! wrong-audience and missing tokens refused with 401; a session closed with 4401 when its
//! token's `exp` passes; another principal on the same address cannot reach a session.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{post, request, start_gateway};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

const SECRET: &str = "an-hs256-test-secret-of-at-least-32-bytes";

fn config(extra_service: &str) -> String {
    format!(
        r#"
[auth]
cookie = "access_token"

[auth.jwt]
algorithm = "HS256"
secret = "{SECRET}"
audience = ["gateway"]
issuer = ["tests"]
leeway = 0

[[service]]
prefix = "/echo"
app = "echo"
allowed_origins = ["{APP_ORIGIN}"]
{extra_service}
"#
    )
}

/// The one page origin the cookie-authenticated test service allows.
const APP_ORIGIN: &str = "http://app.example";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(sub: &str, exp: u64, aud: &str, secret: &str) -> String {
    let claims = json!({"sub": sub, "exp": exp, "aud": aud, "iss": "tests", "roles": ["user"]});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// An HS256 token with exactly `claims`, signed with the test secret.
fn signed(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// An unsigned token (`alg: none`) with `claims`.
fn unsigned(claims: serde_json::Value) -> String {
    use base64::Engine;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
    };
    format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

fn valid(sub: &str) -> String {
    hs256(sub, now() + 600, "gateway", SECRET)
}

#[tokio::test]
async fn a_valid_token_is_accepted_from_query_header_and_cookie() {
    let addr = start_gateway(&config("")).await;
    let token = valid("alice");
    let (status, body) = post(addr, &format!("/echo/000/q/xhr?access_token={token}"), b"").await;
    assert_eq!((status, body.as_slice()), (200, &b"o\n"[..]));
    let auth = format!("Bearer {token}");
    let resp = request(
        addr,
        "POST",
        "/echo/000/h/xhr",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(resp.status, 200);
    let cookie = format!("access_token={token}");
    let resp = request(addr, "POST", "/echo/000/c/xhr", &[("Cookie", &cookie)], b"").await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn bad_tokens_and_missing_tokens_get_401() {
    let addr = start_gateway(&config("")).await;
    let cases = [
        (
            "expired",
            hs256("alice", now() - 10, "gateway", SECRET),
            "token expired",
        ),
        (
            "wrong signature",
            hs256(
                "alice",
                now() + 600,
                "gateway",
                "another-secret-that-is-also-32-bytes-long",
            ),
            "signature",
        ),
        (
            "wrong audience",
            hs256("alice", now() + 600, "elsewhere", SECRET),
            "audience",
        ),
        ("garbage", "not.a.jwt".to_string(), "malformed"),
        (
            "alg none",
            unsigned(json!({"sub": "alice", "exp": now() + 600, "aud": "gateway", "iss": "tests"})),
            "malformed",
        ),
        (
            "missing aud",
            signed(json!({"sub": "alice", "exp": now() + 600, "iss": "tests"})),
            "aud",
        ),
        (
            "missing iss",
            signed(json!({"sub": "alice", "exp": now() + 600, "aud": "gateway"})),
            "iss",
        ),
        (
            "float exp in the past",
            signed(
                json!({"sub": "alice", "exp": now() as f64 - 10.5, "aud": "gateway", "iss": "tests"}),
            ),
            "token expired",
        ),
    ];
    for (name, token, expected) in cases {
        let resp = request(
            addr,
            "POST",
            &format!(
                "/echo/000/{}/xhr?access_token={token}",
                name.replace(' ', "_")
            ),
            &[],
            b"",
        )
        .await;
        assert_eq!(resp.status, 401, "{name}");
        let body = String::from_utf8(resp.body().await).unwrap();
        assert!(body.contains(expected), "{name}: {body}");
    }
    let resp = request(addr, "POST", "/echo/000/none/xhr", &[], b"").await;
    assert_eq!(
        resp.status, 401,
        "anonymous access is off when a JWT is configured"
    );
    assert_eq!(
        request(addr, "GET", "/echo/info", &[], b"").await.status,
        200,
        "/info stays public"
    );
}

#[tokio::test]
async fn a_session_closes_when_its_token_expires() {
    let addr = start_gateway(&config("")).await;
    let token = hs256("alice", now() + 2, "gateway", SECRET);
    let path = format!("/echo/000/exp/xhr?access_token={token}");
    assert_eq!(post(addr, &path, b"").await.1, b"o\n");
    // This poll is made while the token is still valid; it waits, and is answered with the
    // close frame once `exp` passes.
    let started = std::time::Instant::now();
    let (status, body) = post(addr, &path, b"").await;
    assert_eq!(status, 200);
    assert_eq!(body, b"c[4401,\"Token expired\"]\n");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    // JWT `exp` has one-second resolution: the verifier refuses it once that second is over.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _) = post(addr, &path, b"").await;
    assert_eq!(status, 401, "the expired token is now refused at the door");
}

#[tokio::test]
async fn a_session_closes_when_its_float_exp_passes() {
    let addr = start_gateway(&config("")).await;
    // jsonwebtoken accepts a fractional `exp` (rounded to the second); so must expiry.
    let exp = now() as f64 + 1.6;
    let token = signed(json!({"sub": "alice", "exp": exp, "aud": "gateway", "iss": "tests"}));
    let path = format!("/echo/000/fexp/xhr?access_token={token}");
    assert_eq!(post(addr, &path, b"").await.1, b"o\n");
    let started = std::time::Instant::now();
    let (status, body) = post(addr, &path, b"").await;
    assert_eq!(status, 200);
    assert_eq!(body, b"c[4401,\"Token expired\"]\n");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

#[tokio::test]
async fn a_token_with_a_huge_exp_is_served() {
    let addr = start_gateway(&config("")).await;
    // Far past what a system clock can represent: such a token never expires.
    for (i, exp) in [
        json!(10_000_000_000_000_000_000u64),
        json!(1.0e19),
        json!(u64::MAX),
    ]
    .into_iter()
    .enumerate()
    {
        let token = signed(json!({"sub": "alice", "exp": exp, "aud": "gateway", "iss": "tests"}));
        let session = format!("/echo/000/huge{i}");
        let (status, body) = post(addr, &format!("{session}/xhr?access_token={token}"), b"").await;
        assert_eq!((status, body.as_slice()), (200, &b"o\n"[..]), "exp {exp}");
        let send = format!("{session}/xhr_send?access_token={token}");
        assert_eq!(post(addr, &send, b"[\"x\"]").await.0, 204, "exp {exp}");
        let (_, body) = post(addr, &format!("{session}/xhr?access_token={token}"), b"").await;
        assert_eq!(body, b"a[\"x\"]\n", "exp {exp}");
    }
}

#[tokio::test]
async fn another_principal_cannot_reach_a_session() {
    let addr = start_gateway(&config("")).await;
    let alice = valid("alice");
    let mallory = valid("mallory");
    assert_eq!(
        post(
            addr,
            &format!("/echo/000/own/xhr?access_token={alice}"),
            b""
        )
        .await
        .1,
        b"o\n"
    );
    let (status, _) = post(
        addr,
        &format!("/echo/000/own/xhr_send?access_token={mallory}"),
        b"[\"x\"]",
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(
        addr,
        &format!("/echo/000/own/xhr?access_token={mallory}"),
        b"",
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(
        addr,
        &format!("/echo/000/own/xhr_send?access_token={alice}"),
        b"[\"x\"]",
    )
    .await;
    assert_eq!(status, 204);
}

fn asymmetric_config(alg: &str, public_key_file: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/keys");
    format!(
        r#"
[auth.jwt]
algorithm = "{alg}"
public_key_file = "{dir}/{public_key_file}"

[[service]]
prefix = "/echo"
app = "echo"
"#
    )
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_against_public_keys() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/keys");
    let claims = json!({"sub": "bob", "exp": now() + 600});
    let rsa = std::fs::read(format!("{keys}/rs256.key")).unwrap();
    let rs_token = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&rsa).unwrap(),
    )
    .unwrap();
    let ec = std::fs::read(format!("{keys}/es256.pk8.pem")).unwrap();
    let es_token = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(&ec).unwrap(),
    )
    .unwrap();

    let rs = start_gateway(&asymmetric_config("RS256", "rs256.pub.pem")).await;
    assert_eq!(
        post(rs, &format!("/echo/000/r/xhr?access_token={rs_token}"), b"")
            .await
            .0,
        200
    );
    assert_eq!(
        post(
            rs,
            &format!("/echo/000/r2/xhr?access_token={es_token}"),
            b""
        )
        .await
        .0,
        401
    );

    let es = start_gateway(&asymmetric_config("ES256", "es256.pub.pem")).await;
    assert_eq!(
        post(es, &format!("/echo/000/e/xhr?access_token={es_token}"), b"")
            .await
            .0,
        200
    );
    assert_eq!(
        post(
            es,
            &format!("/echo/000/e2/xhr?access_token={rs_token}"),
            b""
        )
        .await
        .0,
        401
    );
}

#[test]
fn a_short_hs256_secret_is_refused_naming_the_key() {
    let err = sockjs_gateway::config::Config::from_toml(
        "[auth.jwt]\nalgorithm = \"HS256\"\nsecret = \"short\"\n[[service]]\nprefix = \"/e\"\napp = \"echo\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("auth.jwt.secret"), "{err}");
}

#[test]
fn a_cookie_token_needs_a_specific_origin_list_on_every_service() {
    let base = format!(
        "[auth]\ncookie = \"access_token\"\n[auth.jwt]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n\
         audience = [\"gateway\"]\n[[service]]\nprefix = \"/echo\"\napp = \"echo\"\n"
    );
    for origins in [
        "",
        "allowed_origins = []",
        "allowed_origins = [\"*\"]",
        "allowed_origins = [\"http://app.example\", \"*\"]",
        "allowed_origins = [\"https://*\"]",
        "allowed_origins = [\"http://*:8080\"]",
        "allowed_origins = [\"https://*.com\"]",
        "allowed_origins = [\"https://app.example*\"]",
    ] {
        let err = sockjs_gateway::config::Config::from_toml(&format!("{base}{origins}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.cookie") && err.contains("service[0].allowed_origins"),
            "{origins}: {err}"
        );
    }
    for origins in [
        "allowed_origins = [\"https://app.example.com\"]",
        "allowed_origins = [\"https://*.example.com\", \"http://localhost:*\"]",
    ] {
        sockjs_gateway::config::Config::from_toml(&format!("{base}{origins}\n"))
            .unwrap_or_else(|e| panic!("{origins}: {e}"));
    }
}

#[tokio::test]
async fn with_cookie_tokens_jsonp_and_htmlfile_need_an_allowed_origin_or_referer() {
    let addr = start_gateway(&config("")).await;
    let cookie = format!("access_token={}", valid("alice"));
    let cookie = ("Cookie", cookie.as_str());
    let from_app = ("Referer", "http://app.example/chat.html");
    let from_elsewhere = ("Referer", "http://evil.example/app.example/");
    // A script or iframe load carries the victim's cookie but no Origin: without a Referer
    // from an allowed page it is refused, whatever the transport.
    for (n, path) in ["jsonp?c=cb", "htmlfile?c=cb"].iter().enumerate() {
        for (m, headers) in [vec![cookie], vec![cookie, from_elsewhere]]
            .iter()
            .enumerate()
        {
            let resp = request(
                addr,
                "GET",
                &format!("/echo/000/x{n}{m}/{path}"),
                headers,
                b"",
            )
            .await;
            assert_eq!(resp.status, 403, "{path} {headers:?}");
            let body = String::from_utf8(resp.body().await).unwrap();
            assert!(body.contains("Origin or Referer"), "{body}");
        }
    }
    let resp = request(
        addr,
        "POST",
        "/echo/000/x00/jsonp_send",
        &[
            cookie,
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"d=%5B%22x%22%5D",
    )
    .await;
    assert_eq!(resp.status, 403, "jsonp_send without Origin or Referer");

    // From the allowed page they work, by Referer or by Origin.
    let resp = request(
        addr,
        "GET",
        "/echo/000/ok1/jsonp?c=cb",
        &[cookie, from_app],
        b"",
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body().await, b"/**/cb(\"o\");\r\n");
    let resp = request(
        addr,
        "POST",
        "/echo/000/ok1/jsonp_send",
        &[
            cookie,
            ("Origin", APP_ORIGIN),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"d=%5B%22x%22%5D",
    )
    .await;
    assert_eq!(resp.status, 200);
    let resp = request(
        addr,
        "GET",
        "/echo/000/ok2/htmlfile?c=cb",
        &[cookie, from_app],
        b"",
    )
    .await;
    assert_eq!(resp.status, 200);
    drop(resp);
    // A foreign Origin is refused as before; transports with CORS keep their rules.
    let resp = request(
        addr,
        "GET",
        "/echo/000/bad/jsonp?c=cb",
        &[cookie, ("Origin", "http://evil.example")],
        b"",
    )
    .await;
    assert_eq!(resp.status, 403);
    let resp = request(addr, "POST", "/echo/000/plain/xhr", &[cookie], b"").await;
    assert_eq!(
        resp.status, 200,
        "xhr without Origin (no browser page) is unaffected"
    );
}

#[tokio::test]
async fn with_cookie_tokens_a_websocket_from_a_foreign_page_is_refused() {
    let addr = start_gateway(&config("")).await;
    let cookie = format!("access_token={}", valid("alice"));
    let upgrade = |origin: &'static str| {
        let cookie = cookie.clone();
        async move {
            request(
                addr,
                "GET",
                "/echo/000/ws/websocket",
                &[
                    ("Cookie", &cookie),
                    ("Origin", origin),
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Version", "13"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ],
                b"",
            )
            .await
            .status
        }
    };
    assert_eq!(upgrade("http://evil.example").await, 403);
    assert_eq!(upgrade(APP_ORIGIN).await, 101);
}
