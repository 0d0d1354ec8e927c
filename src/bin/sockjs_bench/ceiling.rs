//! `ceiling-server`: the most trivial Rust WebSocket broadcaster (tokio-tungstenite and a
//! broadcast channel). Every text or binary message from any client goes to every client.
//! It bounds what a WebSocket fan-out can reach on this machine.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub async fn run(listen: SocketAddr) -> std::io::Result<()> {
    if !listen.ip().is_loopback() {
        return Err(std::io::Error::other(
            "ceiling-server listens on loopback only",
        ));
    }
    let listener = TcpListener::bind(listen).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    let (tx, _) = broadcast::channel::<Message>(4096);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        tokio::spawn(async move {
            let config = WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0);
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            else {
                return;
            };
            let mut rx = tx.subscribe();
            loop {
                tokio::select! {
                    inbound = ws.next() => match inbound {
                        Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => { let _ = tx.send(m); }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => {}
                    },
                    out = rx.recv() => {
                        let m = match out {
                            Ok(m) => m,
                            Err(broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(broadcast::error::RecvError::Closed) => break,
                        };
                        if ws.feed(m).await.is_err() { break; }
                        while let Ok(m) = rx.try_recv() {
                            if ws.feed(m).await.is_err() { return; }
                        }
                        if ws.flush().await.is_err() { break; }
                    }
                }
            }
        });
    }
}
