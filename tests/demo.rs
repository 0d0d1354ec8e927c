//! The demo page's serving side (`src/demo/`) through real sockets: the page and exactly its two
//! library files, with their content types; nothing else under the page's path, however the
//! request names it (no file is ever opened from a request path); `/` redirects to the page;
//! without `[demo]` none of it exists; missing libraries are a clear 404 and a flag the page
//! reads; and the section's mistakes are config errors naming the key.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{request, start_gateway};
use sockjs_gateway::config::Config;

const SOCKJS_JS: &str = "/* sockjs-client stand-in */ window.SockJS = function () {};";
const STOMP_JS: &str = "/* stompjs stand-in */ window.StompJs = {};";
const SECRET: &str = "not-for-the-web-3f9c";

/// A fresh directory laid out as `demo/node_modules`, with a file beside and above it that
/// must never be served.
fn assets_dir(with_libraries: bool) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let root = std::env::temp_dir().join(format!(
        "sockjs-gw-demo-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let dir = root.join("node_modules");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(root.join("secret.txt"), SECRET).unwrap();
    std::fs::write(dir.join("package.json"), SECRET).unwrap();
    if with_libraries {
        for (rel, body) in [
            ("sockjs-client/dist/sockjs.min.js", SOCKJS_JS),
            ("@stomp/stompjs/bundles/stomp.umd.min.js", STOMP_JS),
        ] {
            let file = dir.join(rel);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, body).unwrap();
        }
        std::fs::write(dir.join("sockjs-client/dist/secret.txt"), SECRET).unwrap();
    }
    dir
}

fn config(assets: &Path) -> String {
    format!(
        "[[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\n\n\
         [[service]]\nprefix = \"/echo\"\napp = \"echo\"\n\n\
         [demo]\nenabled = true\nassets_dir = {:?}\n",
        assets.display().to_string()
    )
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    let resp = request(addr, "GET", path, &[], b"").await;
    let (status, headers) = (resp.status, resp.headers.clone());
    let body = String::from_utf8_lossy(&resp.body().await).into_owned();
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn the_page_and_its_two_libraries_are_served_with_their_types() {
    let addr = start_gateway(&config(&assets_dir(true))).await;
    for path in ["/demo", "/demo/"] {
        let (status, headers, body) = get(addr, path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            header(&headers, "content-type"),
            Some("text/html; charset=UTF-8")
        );
        let csp = header(&headers, "content-security-policy").expect("a CSP");
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
        assert!(body.contains(r#"<script src="/demo/sockjs.min.js"></script>"#));
        assert!(body.contains(r#"<script src="/demo/stomp.umd.min.js"></script>"#));
        assert!(body.contains(r#""service":"/stomp""#), "{body}");
        assert!(body.contains(r#""libraries":true"#));
        assert!(!body.contains("{{"), "every placeholder is filled");
    }
    for (path, expected) in [
        ("/demo/sockjs.min.js", SOCKJS_JS),
        ("/demo/stomp.umd.min.js", STOMP_JS),
    ] {
        let (status, headers, body) = get(addr, path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            header(&headers, "content-type"),
            Some("application/javascript; charset=UTF-8")
        );
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
        assert_eq!(body, expected);
    }
    let head = request(addr, "HEAD", "/demo/sockjs.min.js", &[], b"").await;
    assert_eq!(head.status, 200);
    let post = request(addr, "POST", "/demo", &[], b"x").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn nothing_outside_the_allowlist_is_served() {
    let addr = start_gateway(&config(&assets_dir(true))).await;
    for path in [
        "/demo/package.json",
        "/demo/secret.txt",
        "/demo/../secret.txt",
        "/demo/%2e%2e/secret.txt",
        "/demo/..%2fsecret.txt",
        "/demo/sockjs-client/dist/sockjs.min.js",
        "/demo/sockjs-client/dist/secret.txt",
        "/demo/x/../sockjs.min.js",
        "/demo//sockjs.min.js",
        "/demo/sockjs.min.js/",
        "/demo/sockjs.min.js%00",
        "/demo/SOCKJS.MIN.JS",
        "/demo/index.html",
    ] {
        let (status, _, body) = get(addr, path).await;
        assert!(status == 404 || status == 400, "{path}: {status}");
        assert!(!body.contains(SECRET), "{path} served a file: {body}");
    }
    // A path that merely starts with the page's is not the page's.
    let (status, _, _) = get(addr, "/demonstration").await;
    assert_eq!(status, 404);
    // The services are still there.
    let (status, _, body) = get(addr, "/echo/info").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"websocket\""));
}

#[tokio::test]
async fn the_root_redirects_to_the_page() {
    let addr = start_gateway(&config(&assets_dir(true))).await;
    let (status, headers, body) = get(addr, "/").await;
    assert_eq!(status, 302);
    assert_eq!(header(&headers, "location"), Some("/demo"));
    assert!(body.contains("/demo"));

    let moved = format!(
        "{}\npath = \"/chat/room\"\n",
        config(&assets_dir(true)).trim_end()
    );
    let addr = start_gateway(&moved).await;
    let (status, headers, _) = get(addr, "/").await;
    assert_eq!(status, 302);
    assert_eq!(header(&headers, "location"), Some("/chat/room"));
    let (status, _, body) = get(addr, "/chat/room").await;
    assert_eq!(status, 200);
    assert!(body.contains(r#"<script src="/chat/room/sockjs.min.js">"#));
    assert_eq!(get(addr, "/chat/room/sockjs.min.js").await.0, 200);
    assert_eq!(get(addr, "/demo").await.0, 404);
}

#[tokio::test]
async fn without_the_section_there_is_no_demo() {
    let assets = assets_dir(true);
    let disabled = config(&assets).replace("enabled = true", "enabled = false");
    let absent = "[[service]]\nprefix = \"/stomp\"\napp = \"stomp\"\n".to_string();
    for toml in [disabled, absent] {
        let addr = start_gateway(&toml).await;
        for path in ["/", "/demo", "/demo/", "/demo/sockjs.min.js"] {
            let (status, _, body) = get(addr, path).await;
            assert_eq!(status, 404, "{path}");
            assert!(!body.contains("SockJS"), "{path}");
        }
    }
}

#[tokio::test]
async fn missing_libraries_say_what_to_run() {
    let addr = start_gateway(&config(&assets_dir(false))).await;
    let (status, _, body) = get(addr, "/demo").await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""libraries":false"#));
    assert!(body.contains(r#""install":"npm ci --prefix demo""#));
    for path in ["/demo/sockjs.min.js", "/demo/stomp.umd.min.js"] {
        let (status, headers, body) = get(addr, path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(
            header(&headers, "content-type"),
            Some("text/plain; charset=UTF-8")
        );
        assert!(body.contains("npm ci --prefix demo"), "{body}");
    }
}

#[test]
fn mistakes_in_the_section_are_config_errors_naming_the_key() {
    let assets = assets_dir(true);
    for (extra, key) in [
        ("path = \"demo\"\n", "demo.path"),
        ("path = \"/stomp\"\n", "demo.path"),
        ("path = \"/../x\"\n", "demo.path"),
        ("service = \"/echo\"\n", "demo.service"),
        ("service = \"/nowhere\"\n", "demo.service"),
    ] {
        let toml = format!("{}{extra}", config(&assets));
        let err = Config::from_toml(&toml).expect_err(extra).to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
    assert!(Config::from_toml(&config(&assets)).is_ok());
}

#[test]
fn the_embedded_default_serves_the_demo_over_its_own_sockjs_copy() {
    let config = Config::embedded();
    assert!(config.demo.enabled);
    assert_eq!(config.demo.path, "/demo");
    assert_eq!(config.demo.service, "/stomp");
    let stomp = config
        .services
        .iter()
        .find(|s| s.prefix == "/stomp")
        .expect("/stomp");
    assert_eq!(stomp.sockjs_url, "/demo/sockjs.min.js");
    assert!(config.validate().is_ok());
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}
