//! Fuzz the HTTP layer end to end: arbitrary request bytes (paths, methods, headers, bodies)
//! go through hyper's parser, the service router and every SockJS handler of the
//! conformance configuration, over an in-memory pipe. Nothing may panic; every connection
//! must end or be dropped after a short read.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sockjs_gateway::Gateway;
use sockjs_gateway::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = include_str!("../../fixtures/conformance.toml");

fn runtime() -> &'static (tokio::runtime::Runtime, Arc<Gateway>) {
    static RT: OnceLock<(tokio::runtime::Runtime, Arc<Gateway>)> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let gateway = rt.block_on(async {
            let config = Config::from_toml(CONFIG).expect("conformance config");
            Arc::new(Gateway::from_config(&config).expect("gateway"))
        });
        (rt, gateway)
    })
}

fuzz_target!(|data: &[u8]| {
    let (rt, gateway) = runtime();
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(gateway.clone().serve_io(server, "127.0.0.1:9".parse().unwrap()));
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut response = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(20), client.read_to_end(&mut response)).await;
        drop(client);
        // Let the connection end (it has seen EOF) before the input is over: libFuzzer's
        // per-input leak check would otherwise catch the duplex pipe's fully read buffer,
        // whose only pointer is then one past its end, and report it as lost.
        let _ = tokio::time::timeout(Duration::from_millis(1000), serving).await;
    });
});
