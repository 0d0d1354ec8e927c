//! The node's one pub/sub connection to Redis: it converges on the interest table with
//! batched SUBSCRIBE/PSUBSCRIBE commands, reads what Redis pushes, and hands each message
//! from another node to the inbound queue.
//!
//! It reconnects by itself. A lost connection (Redis restarted, network cut, no answer to
//! PING for a while) is noticed, logged once, and retried with a capped backoff; on the new
//! connection "what was sent" is empty, so the first convergence resubscribes everything in
//! a few large commands, and the reconnect is counted (`resubscribes`) and logged with the
//! numbers. Messages published while the connection was down are not replayed: Redis pub/sub
//! has no memory (durable delivery is the inbox's job).
//!
//! One publish can reach the connection more than once: as a `message` on a subscribed
//! channel and as a `pmessage` per subscribed glob that also matches it. Redis writes all
//! copies of one PUBLISH together and confirmations in command order, so the set of
//! confirmed subscriptions read from the same stream tells exactly which copy to keep: the
//! channel's, or else the first matching glob's.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::envelope::Envelope;
use super::glob::{Interest, glob_matches};
use super::interest::{Command, InterestTable, diff};
use super::resp::{Confirm, Push, parse};
use super::stats::{ClusterStats, bump};
use super::{Inbound, LiveChannels, Naming};

/// How long connecting, authenticating or one write may take.
const IO_LIMIT: Duration = Duration::from_secs(3);
/// How often an idle connection sends PING.
const PING_EVERY: Duration = Duration::from_secs(5);
/// Silence after which the connection is taken for dead.
const DEAD_AFTER: Duration = Duration::from_secs(15);
/// The longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`.
    pub addr: String,
    /// ACL user, if the URL names one.
    pub username: Option<String>,
    /// Password, if the URL names one.
    pub password: Option<String>,
}

/// Everything the subscriber task owns.
pub struct Subscriber {
    /// Where Redis is.
    pub endpoint: Endpoint,
    /// Channel names and this node's id.
    pub naming: Arc<Naming>,
    /// The desired subscriptions.
    pub interests: Arc<InterestTable>,
    /// Where confirmed channels are published for those who wait on one.
    pub live: Arc<LiveChannels>,
    /// Where decoded messages go.
    pub inbound: mpsc::Sender<Inbound>,
    /// Counters.
    pub stats: Arc<ClusterStats>,
    /// Bound on envelopes (and so on bulk strings read).
    pub max_envelope: usize,
    /// Names per subscription command.
    pub batch: usize,
}

/// Why one connection ended.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Protocol(String),
    #[error("the gateway stopped")]
    Stopped,
}

impl Subscriber {
    /// Run until the inbound receiver is dropped (the gateway stopped).
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        let mut ever_connected = false;
        let mut outage_logged = false;
        loop {
            match self.connect().await {
                Ok(stream) => {
                    backoff = Duration::from_millis(100);
                    outage_logged = false;
                    self.stats
                        .connected
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    let wanted = self.interests.snapshot();
                    if ever_connected {
                        bump(&self.stats.resubscribes);
                        tracing::info!(
                            node = %self.naming.node,
                            interests = wanted.len(),
                            "Redis pub/sub connection back; resubscribing every interest"
                        );
                    } else {
                        tracing::info!(node = %self.naming.node, addr = %self.endpoint.addr, "Redis pub/sub connected");
                    }
                    ever_connected = true;
                    let ended = self.serve(stream).await;
                    self.live.send_modify(|set| set.clear());
                    self.stats
                        .connected
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    match ended {
                        Ended::Stopped => return,
                        other => tracing::warn!(
                            node = %self.naming.node,
                            error = %other,
                            "Redis pub/sub connection lost; cross-node delivery paused, local delivery continues"
                        ),
                    }
                }
                Err(e) => {
                    if !outage_logged {
                        tracing::warn!(
                            node = %self.naming.node,
                            addr = %self.endpoint.addr,
                            error = %e,
                            "cannot reach Redis for pub/sub; retrying"
                        );
                        outage_logged = true;
                    }
                }
            }
            if self.inbound.is_closed() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn connect(&self) -> Result<TcpStream, Ended> {
        let mut stream = timeout(IO_LIMIT, TcpStream::connect(&self.endpoint.addr))
            .await
            .map_err(|_| Ended::Timeout)??;
        stream.set_nodelay(true)?;
        let mut hello = Vec::new();
        if let Some(password) = &self.endpoint.password {
            match &self.endpoint.username {
                Some(user) => put_command(&mut hello, "AUTH", [user.as_str(), password.as_str()]),
                None => put_command(&mut hello, "AUTH", [password.as_str()]),
            }
        }
        let name = format!("sockjs-gateway-sub-{}", self.naming.node);
        put_command(&mut hello, "CLIENT", ["SETNAME", name.as_str()]);
        timeout(IO_LIMIT, stream.write_all(&hello))
            .await
            .map_err(|_| Ended::Timeout)??;
        let expected = if self.endpoint.password.is_some() {
            2
        } else {
            1
        };
        let mut buf = BytesMut::with_capacity(256);
        let mut answered = 0;
        while answered < expected {
            let n = timeout(IO_LIMIT, stream.read_buf(&mut buf))
                .await
                .map_err(|_| Ended::Timeout)??;
            if n == 0 {
                return Err(Ended::Protocol("Redis closed the connection".into()));
            }
            while let Some(reply) =
                parse(&mut buf, 1024).map_err(|e| Ended::Protocol(e.to_string()))?
            {
                match Push::from_reply(reply) {
                    Some(Push::Error(e)) => {
                        return Err(Ended::Protocol(format!(
                            "Redis refused the connection: {e}"
                        )));
                    }
                    _ => answered += 1,
                }
            }
        }
        Ok(stream)
    }

    /// Serve one connection until it fails or the gateway stops.
    async fn serve(&self, mut stream: TcpStream) -> Ended {
        let mut sent: BTreeSet<Interest> = BTreeSet::new();
        let mut confirmed = Confirmed::default();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut last_read = Instant::now();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        // Converge once at once: a fresh connection has sent nothing yet.
        if let Err(e) = self.converge(&mut stream, &mut sent).await {
            return e;
        }
        loop {
            tokio::select! {
                read = stream.read_buf(&mut buf) => {
                    match read {
                        Ok(0) => return Ended::Protocol("Redis closed the connection".into()),
                        Ok(_) => last_read = Instant::now(),
                        Err(e) => return Ended::Io(e),
                    }
                    loop {
                        let reply = match parse(&mut buf, self.max_envelope + 1024) {
                            Ok(Some(reply)) => reply,
                            Ok(None) => break,
                            Err(e) => return Ended::Protocol(e.to_string()),
                        };
                        let Some(push) = Push::from_reply(reply) else { continue };
                        if let Err(e) = self.handle(push, &mut confirmed).await {
                            return e;
                        }
                    }
                    if buf.capacity() > 4 * (self.max_envelope + 1024) && buf.is_empty() {
                        buf = BytesMut::with_capacity(64 * 1024);
                    }
                }
                _ = self.interests.changed() => {
                    if let Err(e) = self.converge(&mut stream, &mut sent).await {
                        return e;
                    }
                }
                _ = ping.tick() => {
                    if last_read.elapsed() > DEAD_AFTER {
                        return Ended::Timeout;
                    }
                    let mut wire = Vec::new();
                    put_command(&mut wire, "PING", std::iter::empty::<&str>());
                    if let Err(e) = write(&mut stream, &wire).await {
                        return e;
                    }
                }
                _ = self.inbound.closed() => return Ended::Stopped,
            }
        }
    }

    /// Send the commands that take the connection from `sent` to the table.
    async fn converge(
        &self,
        stream: &mut TcpStream,
        sent: &mut BTreeSet<Interest>,
    ) -> Result<(), Ended> {
        let wanted = self.interests.snapshot();
        let commands = diff(sent, &wanted, self.batch);
        if commands.is_empty() {
            return Ok(());
        }
        let mut wire = Vec::new();
        for Command { verb, names } in &commands {
            let full: Vec<String> = names.iter().map(|n| self.naming.channel(n)).collect();
            put_command(&mut wire, verb.name(), full.iter().map(String::as_str));
            bump(&self.stats.subscribe_commands);
        }
        write(stream, &wire).await?;
        *sent = wanted;
        Ok(())
    }

    async fn handle(&self, push: Push, confirmed: &mut Confirmed) -> Result<(), Ended> {
        let (channel, payload, via_glob) = match push {
            Push::Confirmed { kind, name } => {
                match kind {
                    Confirm::Subscribe => self.live.send_modify(|set| {
                        set.insert(name.clone());
                    }),
                    Confirm::Unsubscribe => self.live.send_modify(|set| {
                        set.remove(&name);
                    }),
                    Confirm::PSubscribe | Confirm::PUnsubscribe => {}
                }
                confirmed.apply(kind, name);
                return Ok(());
            }
            Push::Error(e) => {
                tracing::warn!(node = %self.naming.node, error = %e, "Redis pub/sub error reply");
                return Ok(());
            }
            Push::Ack => return Ok(()),
            Push::Message { channel, payload } => (channel, payload, None),
            Push::PMessage {
                pattern,
                channel,
                payload,
            } => (channel, payload, Some(pattern)),
        };
        if let Some(pattern) = &via_glob
            && !confirmed.keeps_glob_copy(pattern, &channel)
        {
            bump(&self.stats.duplicate_skipped);
            return Ok(());
        }
        let envelope = match Envelope::decode(payload, self.max_envelope) {
            Ok(envelope) => envelope,
            Err(e) => {
                bump(&self.stats.bad_envelopes);
                tracing::debug!(node = %self.naming.node, error = %e, "envelope dropped");
                return Ok(());
            }
        };
        if envelope.node == self.naming.node {
            bump(&self.stats.own_skipped);
            return Ok(());
        }
        if !self
            .naming
            .routes_match(&channel, &envelope.route, via_glob.is_some())
        {
            bump(&self.stats.bad_envelopes);
            return Ok(());
        }
        bump(&self.stats.received);
        self.inbound
            .send(Inbound {
                route: envelope.route,
                message: envelope.message,
            })
            .await
            .map_err(|_| Ended::Stopped)
    }
}

/// The subscriptions Redis has confirmed on this connection, in stream order.
#[derive(Debug, Default)]
struct Confirmed {
    /// Channels (full names).
    channels: BTreeSet<Bytes>,
    /// Globs (full patterns), in a fixed order so "the first matching" is well defined.
    globs: BTreeSet<Bytes>,
}

impl Confirmed {
    fn apply(&mut self, kind: Confirm, name: Bytes) {
        match kind {
            Confirm::Subscribe => self.channels.insert(name),
            Confirm::Unsubscribe => self.channels.remove(&name),
            Confirm::PSubscribe => self.globs.insert(name),
            Confirm::PUnsubscribe => self.globs.remove(&name),
        };
    }

    /// Whether the copy of a publish to `channel` that came through `glob` is the one to
    /// keep: not when the channel itself is subscribed, nor when an earlier glob matches.
    fn keeps_glob_copy(&self, glob: &Bytes, channel: &Bytes) -> bool {
        if self.channels.contains(channel) {
            return false;
        }
        let first = self.globs.iter().find(|g| glob_matches(g, channel));
        first.is_none_or(|g| g == glob)
    }
}

/// Append one RESP command to `wire`.
pub fn put_command<'a>(wire: &mut Vec<u8>, name: &str, args: impl IntoIterator<Item = &'a str>) {
    let args: Vec<&str> = args.into_iter().collect();
    let mut out = BytesMut::new();
    out.put_slice(format!("*{}\r\n", args.len() + 1).as_bytes());
    for part in std::iter::once(name).chain(args) {
        out.put_slice(format!("${}\r\n", part.len()).as_bytes());
        out.put_slice(part.as_bytes());
        out.put_slice(b"\r\n");
    }
    wire.extend_from_slice(&out);
}

async fn write(stream: &mut TcpStream, wire: &[u8]) -> Result<(), Ended> {
    timeout(IO_LIMIT, stream.write_all(wire))
        .await
        .map_err(|_| Ended::Timeout)?
        .map_err(Ended::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_one_copy_per_publish() {
        let mut c = Confirmed::default();
        let ch = Bytes::from_static(b"p:/t/a");
        c.apply(Confirm::PSubscribe, Bytes::from_static(b"p:/t/*"));
        c.apply(Confirm::PSubscribe, Bytes::from_static(b"p:/*"));
        // Two globs match: only the first (in order) keeps its copy.
        let first = Bytes::from_static(b"p:/*");
        let second = Bytes::from_static(b"p:/t/*");
        assert!(c.keeps_glob_copy(&first, &ch));
        assert!(!c.keeps_glob_copy(&second, &ch));
        // Subscribed as a channel too: the channel's copy wins.
        c.apply(Confirm::Subscribe, ch.clone());
        assert!(!c.keeps_glob_copy(&first, &ch));
        c.apply(Confirm::Unsubscribe, ch.clone());
        assert!(c.keeps_glob_copy(&first, &ch));
    }

    #[test]
    fn commands_are_resp_arrays() {
        let mut wire = Vec::new();
        put_command(&mut wire, "SUBSCRIBE", ["a", "bc"]);
        assert_eq!(
            &wire[..],
            b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$2\r\nbc\r\n"
        );
    }
}
