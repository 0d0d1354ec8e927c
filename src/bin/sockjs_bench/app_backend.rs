//! A fast HTTP application backend for the `/app` round-trip benchmark: hyper, HTTP/1.1
//! keep-alive, every POST answered with the same small contract answer (one message with no
//! destination, which the gateway sends to `/topic` + the SEND's path). `wrk` then hits this
//! same server directly with the body the gateway sent, recorded in `--sample`, so the ratio
//! of the two runs is the gateway's overhead, not the backend's. Loopback only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Response, header};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The answer to every request.
const ANSWER: &[u8] = br#"{"messages":[{"body":"pong"}]}"#;

/// Serve until killed; the first request body is written to `sample` when given.
pub async fn run(listen: SocketAddr, sample: Option<PathBuf>) -> std::io::Result<()> {
    if !listen.ip().is_loopback() {
        return Err(std::io::Error::other(
            "app-backend listens on loopback only",
        ));
    }
    let listener = TcpListener::bind(listen).await?;
    eprintln!("app backend listening on http://{}", listener.local_addr()?);
    let sampled = Arc::new(AtomicBool::new(sample.is_none()));
    let sample = Arc::new(sample);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (sampled, sample) = (sampled.clone(), sample.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (sampled, sample) = (sampled.clone(), sample.clone());
                async move {
                    let body = req.into_body().collect().await?.to_bytes();
                    if !sampled.swap(true, Ordering::Relaxed)
                        && let Some(path) = sample.as_ref()
                        && let Err(e) = tokio::fs::write(path, &body).await
                    {
                        eprintln!("app backend: cannot write the sample: {e}");
                    }
                    let mut response = Response::new(Full::new(Bytes::from_static(ANSWER)));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, hyper::Error>(response)
                }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
