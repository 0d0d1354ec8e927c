//! STOMP over plain TCP: a carrier that turns a `TcpStream` into a [`SessionHandle`].
//!
//! Each connection gets a reader loop (socket → the application's inbound queue, which applies
//! backpressure by waiting) and a writer loop draining a bounded outbound queue (spec §10: one
//! writer per connection; producers never wait on the socket). The queue is bounded in bytes
//! (`send_buffer_size_limit`); overflowing it terminates the connection, or under
//! `overflow_strategy = "drop"` discards the oldest queued MESSAGE frames to make room (never
//! CONNECTED, RECEIPT or ERROR: the STOMP core marks which frames may go). A single write
//! blocked longer than `send_time_limit_ms` terminates it either way. `close` means "flush
//! what is queued, then FIN": that is how an ERROR or a DISCONNECT RECEIPT always reaches the
//! client before the connection ends. After the FIN the reader keeps draining briefly, so
//! unread client bytes do not turn our close into a reset that could destroy the ERROR in
//! flight.
//!
//! The same carrier serves STOMP over TLS (`[stomp] tls_listen`): the handshake runs in the
//! connection's task (after the PROXY header, if any), and the writer flushes after every
//! batch so nothing waits in the TLS layer.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::config::StompConfig;
use crate::config::types::OverflowStrategy;
use crate::limits::ConnectionLimiter;
use crate::proxy::{TrustedProxies, read_proxy_header};
use crate::session::{
    App, CloseCause, CloseInfo, Discardable, Inbound, InboundSide, OutMessage, SendError,
    SessionInfo, SessionSink, TransportKind, discard_oldest, new_session, next_log_id,
};
use crate::tls::Tls;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;

/// How long to keep draining client bytes after our FIN.
const LINGER: Duration = Duration::from_secs(2);

/// Settings of the TCP carrier.
#[derive(Debug, Clone, Copy)]
pub struct TcpSettings {
    /// Bytes queued for one client before the overflow strategy applies.
    pub send_buffer_limit: usize,
    /// What happens when a frame would pass `send_buffer_limit`.
    pub overflow: OverflowStrategy,
    /// The longest one write may block.
    pub send_time_limit: Duration,
}

impl TcpSettings {
    /// The carrier settings in a STOMP configuration.
    pub fn from_config(config: &StompConfig) -> TcpSettings {
        TcpSettings {
            send_buffer_limit: config.send_buffer_size_limit,
            overflow: config.overflow_strategy,
            send_time_limit: Duration::from_millis(config.send_time_limit_ms),
        }
    }
}

impl Default for TcpSettings {
    fn default() -> Self {
        TcpSettings::from_config(&StompConfig::default())
    }
}

/// How the writer should end.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// Still running.
    Open,
    /// Write what is queued, then FIN (the application closed, or the server shuts down).
    Flush {
        /// The close code the application gave.
        code: u16,
        /// The reason it gave.
        reason: String,
        /// Who closed: the application, or the server's shutdown.
        cause: CloseCause,
    },
    /// Stop at once, dropping what is queued (overflow, or the peer is gone).
    Abort(CloseCause),
}

/// The queue between producers and the writer loop.
#[derive(Debug)]
struct Queue {
    /// Messages not yet written, oldest first.
    messages: VecDeque<OutMessage>,
    /// How the writer should end.
    ending: Ending,
}

/// The TCP carrier's [`SessionSink`].
#[derive(Debug)]
pub struct TcpSink {
    /// The outbound queue.
    queue: Mutex<Queue>,
    /// Bytes in the queue or being written.
    queued: AtomicUsize,
    /// Set once the session began closing.
    closed: AtomicBool,
    /// Wakes the writer.
    wake: Notify,
    /// The byte bound of the queue.
    limit: usize,
    /// What happens when a frame would pass the bound.
    overflow: OverflowStrategy,
    /// The session's id in logs.
    log_id: u64,
}

impl TcpSink {
    fn new(settings: &TcpSettings, log_id: u64) -> TcpSink {
        TcpSink {
            queue: Mutex::new(Queue {
                messages: VecDeque::new(),
                ending: Ending::Open,
            }),
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            limit: settings.send_buffer_limit,
            overflow: settings.overflow,
            log_id,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        match self.queue.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Queue `last` (past the bound: it is the final frame), then have the writer flush and
    /// FIN; under the queue's lock, so nothing sent meanwhile can come after `last`.
    fn flush_then_close(
        &self,
        last: Option<OutMessage>,
        code: u16,
        reason: &str,
        cause: CloseCause,
    ) {
        if self.closed.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut queue = self.lock();
        if queue.ending == Ending::Open {
            if let Some(last) = last {
                self.queued.fetch_add(last.len(), Ordering::Relaxed);
                queue.messages.push_back(last);
            }
            queue.ending = Ending::Flush {
                code,
                reason: reason.to_owned(),
                cause,
            };
        }
        drop(queue);
        self.wake.notify_one();
    }

    /// Stop the writer without flushing.
    fn abort(&self, cause: CloseCause) {
        self.closed.store(true, Ordering::Relaxed);
        let mut queue = self.lock();
        if queue.ending == Ending::Open || matches!(queue.ending, Ending::Flush { .. }) {
            queue.ending = Ending::Abort(cause);
        }
        // Never written now: freed at once rather than when the last sender is dropped
        // (the drain's session list holds senders until it prunes closed ones).
        let dropped: usize = queue.messages.drain(..).map(|m| m.len()).sum();
        self.queued.fetch_sub(dropped, Ordering::Relaxed);
        drop(queue);
        self.wake.notify_one();
    }

    /// The next batch to write, or how to end when there is none.
    fn next_batch(&self) -> Result<Vec<OutMessage>, Ending> {
        let mut queue = self.lock();
        if let Ending::Abort(_) = queue.ending {
            return Err(queue.ending.clone());
        }
        if queue.messages.is_empty() {
            return Err(queue.ending.clone());
        }
        Ok(match self.overflow {
            // What the writer holds can no longer be discarded, so under `drop` it takes one
            // frame at a time and everything behind it stays droppable.
            OverflowStrategy::Drop => queue.messages.pop_front().into_iter().collect(),
            OverflowStrategy::Terminate => queue.messages.drain(..).collect(),
        })
    }
}

impl SessionSink for TcpSink {
    fn send(&self, msg: OutMessage) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        let len = msg.len();
        let mut queue = self.lock();
        let queued = self.queued.load(Ordering::Relaxed);
        if queued + len > self.limit {
            match self.overflow {
                OverflowStrategy::Terminate => {
                    drop(queue);
                    tracing::debug!(
                        session = self.log_id,
                        limit = self.limit,
                        "TCP send buffer limit exceeded; closing"
                    );
                    self.abort(CloseCause::SendLimit);
                    return Err(SendError::LimitExceeded);
                }
                OverflowStrategy::Drop => {
                    let needed = queued + len - self.limit;
                    let Some(freed) =
                        discard_oldest(&mut queue.messages, needed, Discardable::Marked)
                    else {
                        tracing::debug!(
                            session = self.log_id,
                            limit = self.limit,
                            "TCP send buffer full of frames that may not be dropped; frame refused"
                        );
                        return Err(SendError::LimitExceeded);
                    };
                    // Only frames still in the queue are discarded and the writer subtracts
                    // only what it took, so these bytes are given back exactly once.
                    self.queued.fetch_sub(freed, Ordering::Relaxed);
                    tracing::debug!(
                        session = self.log_id,
                        freed,
                        "TCP send buffer full; oldest MESSAGE frames discarded"
                    );
                }
            }
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        queue.messages.push_back(msg);
        drop(queue);
        self.wake.notify_one();
        Ok(())
    }

    fn close(&self, code: u16, reason: &str) {
        self.flush_then_close(None, code, reason, CloseCause::Application);
    }

    fn shut_down(&self, farewell: Option<OutMessage>) {
        let going_away = CloseInfo::going_away();
        self.flush_then_close(
            farewell,
            going_away.code,
            &going_away.reason,
            CloseCause::Shutdown,
        );
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// Accept STOMP connections on `listener` forever, handing each to `app` as a session.
pub async fn serve_tcp(listener: TcpListener, app: Arc<dyn App>) {
    serve_tcp_with(listener, app, TcpSettings::default()).await
}

/// [`serve_tcp`] with explicit carrier settings.
pub async fn serve_tcp_with(listener: TcpListener, app: Arc<dyn App>, settings: TcpSettings) {
    let trust_nobody = Arc::new(TrustedProxies::default());
    serve_tcp_limited(
        listener,
        app,
        settings,
        ConnectionLimiter::unlimited(),
        trust_nobody,
        None,
    )
    .await
}

/// [`serve_tcp_with`], counting connections against `limiter` (shared with the HTTP
/// listener): a connection over a limit gets an ERROR frame naming it and is closed. A
/// connection from one of the `trusted` proxies may start with a PROXY protocol header,
/// whose client address the session then carries. With `tls`, every connection is STOMP
/// over TLS.
pub async fn serve_tcp_limited(
    listener: TcpListener,
    app: Arc<dyn App>,
    settings: TcpSettings,
    limiter: Arc<ConnectionLimiter>,
    trusted: Arc<TrustedProxies>,
    tls: Option<Tls>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let answer = |refused| {
                    format!(
                        "ERROR\nmessage:Too many connections\ncontent-type:text/plain\n\n{refused}\0"
                    )
                    .into_bytes()
                };
                if let Some((permit, mut stream)) = limiter.admit_or_answer(stream, peer, answer) {
                    let app = app.clone();
                    let behind_proxy = trusted.trusts(peer.ip());
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let client = match behind_proxy {
                            true => match read_proxy_header(&mut stream, peer).await {
                                Ok(client) => client,
                                Err(err) => {
                                    tracing::info!(%peer, %err, "connection from a trusted proxy refused");
                                    return;
                                }
                            },
                            false => peer,
                        };
                        prepare(&stream);
                        match tls {
                            None => {
                                let (reader, writer) = stream.into_split();
                                serve_halves(reader, writer, client, app, settings).await;
                            }
                            Some(tls) => {
                                if let Some(stream) = tls.accept(stream).await {
                                    let (reader, writer) = tokio::io::split(stream);
                                    serve_halves(reader, writer, client, app, settings).await;
                                }
                            }
                        }
                    });
                }
            }
            Err(err) => {
                tracing::warn!(%err, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Carry one TCP connection until it ends.
pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<dyn App>,
    settings: TcpSettings,
) {
    prepare(&stream);
    let (reader, writer) = stream.into_split();
    serve_halves(reader, writer, peer, app, settings).await
}

/// Keepalive and no Nagle delay on an accepted socket.
fn prepare(stream: &TcpStream) {
    enable_keepalive(stream);
    let _ = stream.set_nodelay(true);
}

/// Carry one connection, plain or TLS, given as its two halves.
async fn serve_halves<R, W>(
    mut reader: R,
    writer: W,
    peer: SocketAddr,
    app: Arc<dyn App>,
    settings: TcpSettings,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let info = SessionInfo {
        log_id: next_log_id(),
        transport: TransportKind::Tcp,
        remote_addr: peer,
        headers: Vec::new(),
        url: String::new(),
        principal: None,
        subprotocol: None,
    };
    let log_id = info.log_id;
    let sink = Arc::new(TcpSink::new(&settings, log_id));
    let (side, handle) = new_session(info, sink.clone());
    tracing::debug!(session = log_id, transport = "tcp", remote = %peer, "session opened");
    app.on_session(handle);
    let close = {
        let read = read_loop(&mut reader, &side, &sink);
        let write = write_loop(writer, &sink, settings.send_time_limit);
        tokio::pin!(read, write);
        tokio::select! {
            cause = &mut read => {
                sink.abort(cause);
                write.await;
                CloseInfo { code: 1000, reason: "Connection closed".into(), cause }
            }
            ending = &mut write => closing_info(ending),
        }
    };
    tracing::debug!(session = log_id, transport = "tcp", remote = %peer, code = close.code, reason = %close.reason, cause = ?close.cause, "session closed");
    side.finish(close);
    drain_until_eof(&mut reader).await;
}

/// Read until EOF or error, delivering every chunk in order; returns why it stopped.
async fn read_loop<R: AsyncRead + Unpin>(
    reader: &mut R,
    side: &InboundSide,
    sink: &TcpSink,
) -> CloseCause {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => return CloseCause::Client,
            Ok(n) => {
                if sink.is_closed() {
                    continue;
                }
                let chunk = Bytes::copy_from_slice(&buf[..n]);
                if !side.deliver(Inbound::Binary(chunk)).await {
                    return CloseCause::Application;
                }
            }
            Err(err) => {
                tracing::debug!(%err, "TCP read failed");
                return CloseCause::Interrupted;
            }
        }
    }
}

/// Write queued messages until the session closes; returns how it ended.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    sink: &TcpSink,
    time_limit: Duration,
) -> Ending {
    loop {
        let batch = match sink.next_batch() {
            Ok(batch) => batch,
            Err(Ending::Open) => {
                sink.wake.notified().await;
                continue;
            }
            Err(ending) => {
                if matches!(ending, Ending::Flush { .. }) {
                    let _ = writer.shutdown().await;
                }
                return ending;
            }
        };
        // The whole burst goes out in as few (vectored) writes as the socket takes, not one
        // write per frame; each write is bounded by the send time limit.
        // A broker MESSAGE is its own head and a tail shared with every other delivery of it:
        // both are written from where they are, not joined.
        let mut slices: Vec<IoSlice<'_>> = batch
            .iter()
            .flat_map(OutMessage::parts)
            .map(IoSlice::new)
            .collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let write = async {
                match writer.write_vectored(rest).await {
                    Ok(0) => Err(std::io::Error::from(std::io::ErrorKind::WriteZero)),
                    other => other,
                }
            };
            match within(time_limit, write, sink).await {
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(ending) => return ending,
            }
        }
        let written: usize = batch.iter().map(OutMessage::len).sum();
        sink.queued.fetch_sub(written, Ordering::Relaxed);
        // A no-op on plain TCP; over TLS it sends what the TLS layer still holds.
        if let Err(ending) = within(time_limit, writer.flush(), sink).await {
            return ending;
        }
    }
}

/// Run one write within the send time limit; a failure or a timeout aborts the session.
async fn within<T>(
    time_limit: Duration,
    write: impl std::future::Future<Output = std::io::Result<T>>,
    sink: &TcpSink,
) -> Result<T, Ending> {
    match tokio::time::timeout(time_limit, write).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(err)) => {
            tracing::debug!(%err, "TCP write failed");
            sink.abort(CloseCause::Interrupted);
            Err(Ending::Abort(CloseCause::Interrupted))
        }
        Err(_) => {
            tracing::debug!("TCP write blocked past the send time limit; closing");
            sink.abort(CloseCause::SendLimit);
            Err(Ending::Abort(CloseCause::SendLimit))
        }
    }
}

fn closing_info(ending: Ending) -> CloseInfo {
    match ending {
        Ending::Flush {
            code,
            reason,
            cause,
        } => CloseInfo {
            code,
            reason,
            cause,
        },
        Ending::Abort(CloseCause::SendLimit) => CloseInfo {
            code: 4500,
            reason: "Send limit exceeded".into(),
            cause: CloseCause::SendLimit,
        },
        Ending::Abort(cause) => CloseInfo {
            code: 1006,
            reason: "Connection lost".into(),
            cause,
        },
        Ending::Open => CloseInfo {
            code: 1000,
            reason: "Normal closure".into(),
            cause: CloseCause::Client,
        },
    }
}

/// Discard client bytes until EOF (or [`LINGER`]) so our close is a FIN, not a reset.
async fn drain_until_eof<R: AsyncRead + Unpin>(reader: &mut R) {
    let mut buf = [0u8; 1024];
    let drain = async {
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// TCP keepalive finds phantom connections when heart-beats are off (spec §4.2).
fn enable_keepalive(stream: &TcpStream) {
    if let Err(err) = socket2::SockRef::from(stream).set_keepalive(true) {
        tracing::debug!(%err, "could not enable TCP keepalive");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::Discards;

    fn sink(overflow: OverflowStrategy) -> TcpSink {
        let settings = TcpSettings {
            send_buffer_limit: 12,
            overflow,
            send_time_limit: Duration::from_secs(1),
        };
        TcpSink::new(&settings, 0)
    }

    /// What the writer does after writing a message: give its bytes back.
    fn written(sink: &TcpSink, batch: Vec<OutMessage>) -> Vec<String> {
        batch
            .iter()
            .map(|m| {
                sink.queued.fetch_sub(m.len(), Ordering::Relaxed);
                m.as_text().into_owned()
            })
            .collect()
    }

    #[test]
    fn drop_discards_queued_messages_and_keeps_the_byte_count_exact() {
        let sink = sink(OverflowStrategy::Drop);
        let discards = Arc::new(Discards::default());
        let droppable = |text: &str| OutMessage::text(text).droppable(discards.clone());
        sink.send(droppable("m001")).unwrap();
        sink.send(OutMessage::text("rcpt")).unwrap();
        // The writer holds m001 now: it is on the wire and can no longer be discarded.
        let in_flight = sink.next_batch().unwrap();
        sink.send(droppable("m002")).unwrap();
        assert_eq!(sink.queued_bytes(), 12);
        sink.send(droppable("m003")).unwrap();
        assert_eq!(discards.0.load(Ordering::Relaxed), 1);
        assert_eq!(sink.queued_bytes(), 12);
        // Only the reply and the in-flight frame would be left: a frame that cannot fit even
        // then is refused, without closing.
        assert_eq!(
            sink.send(OutMessage::text("12345678")),
            Err(SendError::LimitExceeded)
        );
        assert!(!sink.is_closed());
        assert_eq!(written(&sink, in_flight), ["m001"]);
        assert_eq!(sink.queued_bytes(), 8);
        let mut rest = Vec::new();
        while let Ok(batch) = sink.next_batch() {
            rest.extend(written(&sink, batch));
        }
        assert_eq!(rest, ["rcpt", "m003"]);
        assert_eq!(sink.queued_bytes(), 0);
    }

    #[test]
    fn terminate_closes_on_overflow() {
        let sink = sink(OverflowStrategy::Terminate);
        let discards = Arc::new(Discards::default());
        sink.send(OutMessage::text("m001").droppable(discards.clone()))
            .unwrap();
        sink.send(OutMessage::text("m002").droppable(discards.clone()))
            .unwrap();
        sink.send(OutMessage::text("m003").droppable(discards.clone()))
            .unwrap();
        assert_eq!(
            sink.send(OutMessage::text("m004").droppable(discards.clone())),
            Err(SendError::LimitExceeded)
        );
        assert!(sink.is_closed());
        assert_eq!(discards.0.load(Ordering::Relaxed), 0);
        assert_eq!(
            sink.next_batch().unwrap_err(),
            Ending::Abort(CloseCause::SendLimit)
        );
    }
}
