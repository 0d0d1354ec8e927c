//! One connection of the relay's pool to the external STOMP broker: it CONNECTs with the
//! system login, converges its broker subscriptions on its lane's desired set (SUBSCRIBE
//! and UNSUBSCRIBE, `ack:auto`), writes the SENDs queued for it, and hands every MESSAGE to
//! the local broker. It reconnects by itself with a capped backoff and then subscribes
//! everything again; while it is down its lane refuses new SENDs, so clients get ERROR
//! `Broker unavailable` rather than silence. One task per connection, none per message.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use super::{Lane, RelayStats, lock};
use crate::stomp::broker::{Broker, Published};
use crate::stomp::config::RelayConfig;
use crate::stomp::frame::{Command, Frame, FrameLimits, FrameParser, Version};

/// How long connecting, the CONNECT exchange or one write may take.
pub(super) const IO_LIMIT: Duration = Duration::from_secs(5);
/// The longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a local SUBSCRIBE's RECEIPT waits for the broker to confirm its destination
/// before it goes out anyway.
pub(super) const LIVE_WAIT: Duration = Duration::from_secs(5);
/// How often waiters are checked against [`LIVE_WAIT`] (and the heart-beat considered).
pub(super) const TICK: Duration = Duration::from_millis(500);
/// A connection that lived this long resets the reconnect backoff.
const STABLE: Duration = Duration::from_secs(5);
/// SENDs written together at most.
const SEND_BATCH: usize = 64;

/// A publish for the external broker.
#[derive(Debug)]
pub struct Outgoing {
    /// Where to.
    pub destination: String,
    /// The message (user headers and body).
    pub message: Arc<Published>,
}

/// Why one connection ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum Ended {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("the broker sent ERROR: {0}")]
    Broker(String),
    #[error("{0}")]
    Protocol(String),
    #[error("the gateway stopped")]
    Stopped,
}

/// The task of one pool connection.
pub(super) struct Connection {
    /// Its place in the pool (for logs).
    pub index: usize,
    /// The relay's settings.
    pub config: RelayConfig,
    /// Its lane (weak: the relay owns it; gone means the gateway stopped).
    pub lane: Weak<Lane>,
    /// SENDs for it.
    pub queue: mpsc::Receiver<Outgoing>,
    /// Where messages from the broker go.
    pub broker: Weak<Broker>,
    /// Counters.
    pub stats: Arc<RelayStats>,
    /// The largest frame accepted from the broker.
    pub max_frame: usize,
}

/// The heart-beat intervals agreed in CONNECTED.
pub(super) struct Beats {
    /// How often to send an EOL (None: never).
    pub(super) send: Option<Duration>,
    /// Silence after which the broker is taken for dead (None: never).
    pub(super) dead_after: Option<Duration>,
}

/// The heart-beat bookkeeping of one live broker connection: when it last read and wrote,
/// and what was agreed.
pub(super) struct Pulse {
    beats: Beats,
    last_read: Instant,
    last_write: Instant,
}

impl Pulse {
    pub(super) fn new(beats: Beats) -> Pulse {
        let now = Instant::now();
        Pulse {
            beats,
            last_read: now,
            last_write: now,
        }
    }

    /// What a read into `buf` returned: the bytes go to `parser`, or the connection is over.
    pub(super) fn received(
        &mut self,
        read: std::io::Result<usize>,
        buf: &[u8],
        parser: &mut FrameParser,
    ) -> Result<(), Ended> {
        match read {
            Ok(0) => Err(Ended::Protocol("the broker closed the connection".into())),
            Ok(n) => {
                self.last_read = Instant::now();
                parser.push(&buf[..n]);
                Ok(())
            }
            Err(e) => Err(Ended::Io(e)),
        }
    }

    /// Something was written.
    pub(super) fn wrote(&mut self) {
        self.last_write = Instant::now();
    }

    /// On each tick: the broker silent for too long is dead; an EOL goes out when due.
    pub(super) async fn tick(&mut self, writer: &mut OwnedWriteHalf) -> Result<(), Ended> {
        if let Some(limit) = self.beats.dead_after
            && self.last_read.elapsed() > limit
        {
            return Err(Ended::Timeout);
        }
        if let Some(every) = self.beats.send
            && self.last_write.elapsed() >= every
        {
            write(writer, b"\n").await?;
            self.wrote();
        }
        Ok(())
    }
}

impl Connection {
    /// Run until the gateway stops.
    pub async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut outage_logged = false;
        loop {
            let Some(lane) = self.lane.upgrade() else {
                return;
            };
            match self.connect().await {
                Ok((stream, parser, beats)) => {
                    outage_logged = false;
                    self.stats.connects.fetch_add(1, Ordering::Relaxed);
                    self.stats.connected.fetch_add(1, Ordering::Relaxed);
                    lane.up.store(true, Ordering::Relaxed);
                    tracing::info!(
                        connection = self.index,
                        broker = %self.config.address,
                        "STOMP relay connected"
                    );
                    let since = Instant::now();
                    let ended = self.serve(&lane, stream, parser, beats).await;
                    lane.up.store(false, Ordering::Relaxed);
                    lane.ready.not_live(None);
                    // A connection the broker ends at once (it refuses something we send
                    // on every connect) must not be retried at full speed.
                    if since.elapsed() < STABLE {
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    } else {
                        backoff = Duration::from_millis(100);
                    }
                    self.stats.connected.fetch_sub(1, Ordering::Relaxed);
                    match ended {
                        Ended::Stopped => return,
                        other => tracing::warn!(
                            connection = self.index,
                            broker = %self.config.address,
                            error = %other,
                            "STOMP relay connection lost; SENDs to relayed destinations get ERROR Broker unavailable until it is back"
                        ),
                    }
                }
                Err(Ended::Stopped) => return,
                Err(e) => {
                    if !outage_logged {
                        tracing::warn!(
                            connection = self.index,
                            broker = %self.config.address,
                            error = %e,
                            "cannot reach the STOMP broker; retrying"
                        );
                        outage_logged = true;
                    }
                }
            }
            drop(lane);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn connect(&self) -> Result<(TcpStream, FrameParser, Beats), Ended> {
        open(
            &self.config,
            &self.config.system_login,
            &self.config.system_passcode,
            self.max_frame,
        )
        .await
    }

    async fn serve(
        &mut self,
        lane: &Arc<Lane>,
        stream: TcpStream,
        mut parser: FrameParser,
        beats: Beats,
    ) -> Ended {
        let (mut reader, mut writer) = stream.into_split();
        let mut subs = Subscriptions::default();
        let mut buf = vec![0u8; 16 * 1024];
        let mut pulse = Pulse::new(beats);
        let mut tick = tokio::time::interval(TICK);
        tick.tick().await;
        lane.dirty.store(false, Ordering::Release);
        if let Err(e) = self.converge(lane, &mut subs, &mut writer).await {
            return e;
        }
        // Frames already read with CONNECTED (a broker may send at once).
        if let Err(e) = self.drain_frames(lane, &mut parser, &mut subs) {
            return e;
        }
        loop {
            tokio::select! {
                read = reader.read(&mut buf) => {
                    let drained = pulse
                        .received(read, &buf, &mut parser)
                        .and_then(|()| self.drain_frames(lane, &mut parser, &mut subs));
                    if let Err(e) = drained {
                        return e;
                    }
                }
                _ = lane.changed.notified() => {
                    lane.dirty.store(false, Ordering::Release);
                    if let Err(e) = self.converge(lane, &mut subs, &mut writer).await {
                        return e;
                    }
                    pulse.wrote();
                }
                next = self.queue.recv() => {
                    let Some(first) = next else { return Ended::Stopped };
                    // A SUBSCRIBE that came before this SEND is written before it.
                    if lane.dirty.swap(false, Ordering::AcqRel)
                        && let Err(e) = self.converge(lane, &mut subs, &mut writer).await
                    {
                        return e;
                    }
                    if let Err(e) = self.send(first, &mut writer).await {
                        return e;
                    }
                    pulse.wrote();
                }
                _ = tick.tick() => {
                    if Arc::strong_count(lane) == 1 {
                        return Ended::Stopped;
                    }
                    let early = lane.ready.expire_waiters(LIVE_WAIT);
                    if early > 0 {
                        tracing::warn!(
                            connection = self.index,
                            count = early,
                            "the STOMP broker did not confirm subscriptions within 5 s; their RECEIPTs were sent anyway"
                        );
                    }
                    if let Err(e) = pulse.tick(&mut writer).await {
                        return e;
                    }
                }
            }
        }
    }

    /// Hand every complete frame to the local broker; a RECEIPT confirms a SUBSCRIBE.
    fn drain_frames(
        &self,
        lane: &Lane,
        parser: &mut FrameParser,
        subs: &mut Subscriptions,
    ) -> Result<(), Ended> {
        while let Some(frame) = parser
            .next_frame()
            .map_err(|e| Ended::Protocol(e.to_string()))?
        {
            match frame.command {
                Command::Message => self.deliver(frame, subs),
                Command::Receipt => {
                    let id = frame.get("receipt-id").unwrap_or_default();
                    if let Some(destination) = subs.unconfirmed.remove(id)
                        && subs.by_destination.contains_key(&destination)
                    {
                        lane.ready.confirmed(&destination);
                    }
                }
                Command::Error => return Err(Ended::Broker(describe(&frame))),
                _ => {}
            }
        }
        Ok(())
    }

    fn deliver(&self, frame: Frame, subs: &Subscriptions) {
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        // Only subscriptions still wanted: a MESSAGE in flight past our UNSUBSCRIBE is dropped.
        let Some(destination) = frame
            .get("subscription")
            .and_then(|id| subs.by_id.get(id))
            .cloned()
        else {
            return;
        };
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let message = Published::new(broker.next_message_id(), &frame.headers, frame.body);
        broker.deliver_remote(&destination, Arc::new(message));
    }

    /// Bring the broker subscriptions to the lane's desired set.
    async fn converge(
        &self,
        lane: &Lane,
        subs: &mut Subscriptions,
        writer: &mut OwnedWriteHalf,
    ) -> Result<(), Ended> {
        let desired: Vec<String> = lock(&lane.desired).keys().cloned().collect();
        let mut wire = BytesMut::new();
        for destination in &desired {
            if subs.by_destination.contains_key(destination) {
                continue;
            }
            subs.next += 1;
            let id = format!("relay-{}", subs.next);
            // Its RECEIPT says the broker subscription exists; local SUBSCRIBEs wait for it.
            let receipt = format!("{id}-ready");
            let mut frame = Frame::new(Command::Subscribe)
                .header("id", id.clone())
                .header("destination", destination.clone())
                .header("ack", "auto")
                .header("receipt", receipt.clone());
            if per_subscription_queue(destination) {
                // The node's own queue for it: exclusive, so RabbitMQ 4 does not see a
                // transient non-exclusive queue (a deprecated feature) and drops it with
                // the connection.
                frame.add_header("exclusive".to_owned(), "true".to_owned());
            }
            frame.encode_into(Version::V1_2, &mut wire);
            subs.unconfirmed.insert(receipt, destination.clone());
            subs.by_destination.insert(destination.clone(), id.clone());
            subs.by_id.insert(id, destination.clone());
            self.stats.subscribes.fetch_add(1, Ordering::Relaxed);
        }
        let gone: Vec<String> = subs
            .by_destination
            .keys()
            .filter(|d| !desired.contains(d))
            .cloned()
            .collect();
        for destination in gone {
            if let Some(id) = subs.by_destination.remove(&destination) {
                Frame::new(Command::Unsubscribe)
                    .header("id", id.clone())
                    .encode_into(Version::V1_2, &mut wire);
                subs.by_id.remove(&id);
                subs.unconfirmed.remove(&format!("{id}-ready"));
                lane.ready.not_live(Some(&destination));
            }
        }
        if wire.is_empty() {
            return Ok(());
        }
        write(writer, &wire).await
    }

    /// Write `first` and whatever else is queued (up to a batch) in one write.
    async fn send(&mut self, first: Outgoing, writer: &mut OwnedWriteHalf) -> Result<(), Ended> {
        let mut wire = BytesMut::new();
        let mut count = 0;
        let mut next = Some(first);
        while let Some(out) = next {
            put_send(&out.destination, &out.message, &mut wire);
            count += 1;
            next = match count < SEND_BATCH {
                true => self.queue.try_recv().ok(),
                false => None,
            };
        }
        write(writer, &wire).await?;
        self.stats.sent.fetch_add(count as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Whether RabbitMQ makes a queue for each subscription to `destination` (`/topic/...`,
/// `/exchange/...`), rather than consuming a named queue others share (`/queue/...`,
/// `/amq/queue/...`, which must never be made exclusive).
pub(super) fn per_subscription_queue(destination: &str) -> bool {
    destination.starts_with("/topic/") || destination.starts_with("/exchange/")
}

/// Append a SEND of `message` to `destination`, with its user headers.
pub(super) fn put_send(destination: &str, message: &Published, wire: &mut BytesMut) {
    let mut frame = Frame::new(Command::Send).header("destination", destination.to_owned());
    for (name, value) in message.headers() {
        frame.add_header(name.clone(), value.clone());
    }
    frame
        .body(Bytes::clone(message.body()))
        .encode_into(Version::V1_2, wire);
}

/// The broker subscriptions of one connection.
#[derive(Default)]
struct Subscriptions {
    /// Destination → subscription id.
    by_destination: HashMap<String, String>,
    /// Subscription id → destination.
    by_id: HashMap<String, String>,
    /// SUBSCRIBE receipt ids not answered yet → destination.
    unconfirmed: HashMap<String, String>,
    /// The last id number used.
    next: u64,
}

/// Connect to the broker and CONNECT as `login`; returns the stream, the parser (which
/// may already hold frames the broker sent right after CONNECTED) and the agreed beats.
pub(super) async fn open(
    config: &RelayConfig,
    login: &str,
    passcode: &str,
    max_frame: usize,
) -> Result<(TcpStream, FrameParser, Beats), Ended> {
    let mut stream = timeout(IO_LIMIT, TcpStream::connect(config.address))
        .await
        .map_err(|_| Ended::Timeout)??;
    stream.set_nodelay(true)?;
    let beat = config.heartbeat_ms;
    let connect = Frame::new(Command::Connect)
        .header("accept-version", "1.2")
        .header("host", config.virtual_host.clone())
        .header("login", login.to_owned())
        .header("passcode", passcode.to_owned())
        .header("heart-beat", format!("{beat},{beat}"));
    timeout(IO_LIMIT, stream.write_all(&connect.encode(Version::V1_2)))
        .await
        .map_err(|_| Ended::Timeout)??;
    let mut parser = FrameParser::new(FrameLimits {
        max_frame_bytes: max_frame,
        max_headers: 1024,
        max_header_line: 64 * 1024,
    });
    parser.set_version(Version::V1_2);
    let mut buf = vec![0u8; 4096];
    let answered = async {
        loop {
            if let Some(frame) = parser
                .next_frame()
                .map_err(|e| Ended::Protocol(e.to_string()))?
            {
                return Ok::<Frame, Ended>(frame);
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(Ended::Protocol(
                    "the broker closed the connection before CONNECTED".into(),
                ));
            }
            parser.push(&buf[..n]);
        }
    };
    let frame = timeout(IO_LIMIT, answered)
        .await
        .map_err(|_| Ended::Timeout)??;
    match frame.command {
        Command::Connected => {
            let beats = agree(beat, frame.get("heart-beat"));
            Ok((stream, parser, beats))
        }
        Command::Error => Err(Ended::Broker(describe(&frame))),
        other => Err(Ended::Protocol(format!(
            "the broker answered CONNECT with {}",
            other.as_str()
        ))),
    }
}

pub(super) async fn write(writer: &mut OwnedWriteHalf, bytes: &[u8]) -> Result<(), Ended> {
    timeout(IO_LIMIT, writer.write_all(bytes))
        .await
        .map_err(|_| Ended::Timeout)?
        .map_err(Ended::Io)
}

/// The heart-beats of spec §4.2 for our offer `ours` (both ways) and the broker's answer.
fn agree(ours: u64, theirs: Option<&str>) -> Beats {
    let (sx, sy) = theirs
        .and_then(|v| v.split_once(','))
        .map(|(x, y)| {
            (
                x.trim().parse::<u64>().unwrap_or(0),
                y.trim().parse::<u64>().unwrap_or(0),
            )
        })
        .unwrap_or((0, 0));
    let every = |a: u64, b: u64| (a > 0 && b > 0).then(|| Duration::from_millis(a.max(b)));
    Beats {
        send: every(ours, sy),
        dead_after: every(ours, sx).map(|d| d * 3),
    }
}

/// An ERROR frame's message and body, for the log.
pub(super) fn describe(frame: &Frame) -> String {
    let message = frame.get("message").unwrap_or("(no message)");
    let body = String::from_utf8_lossy(&frame.body);
    match body.trim() {
        "" => message.to_owned(),
        body => format!("{message}: {body}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heart_beats_follow_the_spec() {
        let b = agree(10_000, Some("4000,20000"));
        assert_eq!(b.send, Some(Duration::from_secs(20)));
        assert_eq!(b.dead_after, Some(Duration::from_secs(30)));
        let off = agree(0, Some("4000,4000"));
        assert!(off.send.is_none() && off.dead_after.is_none());
        let none = agree(10_000, None);
        assert!(none.send.is_none() && none.dead_after.is_none());
        let bad = agree(10_000, Some("x,y"));
        assert!(bad.send.is_none());
    }
}
