//! Fuzz what a trusted proxy's connection says about the client: PROXY protocol v1 lines and
//! v2 address blocks, and `X-Forwarded-For` / `Forwarded` chains. Nothing may panic, and an
//! untrusted peer's headers never change its address.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sockjs_gateway::proxy::{TrustedProxies, parse_v1, parse_v2};

fuzz_target!(|data: &[u8]| {
    let peer = "127.0.0.1:9".parse().unwrap();
    let _ = parse_v1(data, peer);
    if let [cmd, family, rest @ ..] = data {
        let _ = parse_v2(*cmd, *family, rest, peer);
    }
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", value.clone());
    headers.insert("forwarded", value);
    let trusted = TrustedProxies::parse(&["127.0.0.0/8".into(), "::1".into()]).unwrap();
    let _ = trusted.client_addr(peer, &headers);
    let stranger = "192.0.2.1:9".parse().unwrap();
    assert_eq!(trusted.client_addr(stranger, &headers), stranger);
});
