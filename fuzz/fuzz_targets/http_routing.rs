//! Fuzz the HTTP layer end to end: arbitrary request bytes (paths, methods, headers, bodies)
//! go through the gateway's HTTP front, hyper's parser, the service router and every SockJS
//! handler of the conformance configuration. Nothing may panic, and every connection must end
//! once its input is exhausted.
//!
//! The connection is an in-memory stream that reads the input and then EOF, and accepts (and
//! discards) every write: a pipe such as `tokio::io::duplex` keeps its fully read buffer with
//! only a one-past-the-end pointer to it, which libFuzzer's per-input leak check would report
//! as lost while the connection is still being served.
#![no_main]

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sockjs_gateway::Gateway;
use sockjs_gateway::config::Config;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

/// A client that sends `data`, then closes its side, and reads whatever comes back.
struct Client {
    /// The request bytes.
    data: Vec<u8>,
    /// How many of them were read.
    pos: usize,
}

impl AsyncRead for Client {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = (this.data.len() - this.pos).min(buf.remaining());
        buf.put_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Client {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    let (rt, gateway) = runtime();
    rt.block_on(async {
        let client = Client {
            data: data.to_vec(),
            pos: 0,
        };
        let serving = gateway
            .clone()
            .serve_io(client, "127.0.0.1:9".parse().unwrap());
        let _ = tokio::time::timeout(Duration::from_millis(200), serving).await;
    });
});
