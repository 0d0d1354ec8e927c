//! `echo-server`: the most trivial Rust WebSocket echo server (tokio-tungstenite): every
//! text or binary message goes back to its sender. It is the upstream of the proxy
//! scenarios, and the peer they compare against: clients talking to it directly.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub async fn run(listen: SocketAddr) -> std::io::Result<()> {
    if !listen.ip().is_loopback() {
        return Err(std::io::Error::other(
            "echo-server listens on loopback only",
        ));
    }
    let listener = TcpListener::bind(listen).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // Small buffers: the idle scenarios hold thousands of these connections.
            let config = WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0);
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            else {
                return;
            };
            while let Some(Ok(m)) = ws.next().await {
                let echoed = match m {
                    Message::Text(_) | Message::Binary(_) => ws.send(m).await.is_ok(),
                    Message::Close(_) => false,
                    _ => true,
                };
                if !echoed {
                    break;
                }
            }
        });
    }
}
