//! Limits shared by every carrier.
//!
//! The SockJS session limits its client's inbound messages and the STOMP core limits inbound
//! frames on every carrier (TCP included) with the same token bucket; the HTTP listener and
//! the STOMP TCP listener count open connections against the same [`ConnectionLimiter`]. They
//! live here, beside `session.rs` rather than inside either sibling, because `sockjs` and
//! `stomp` share nothing but that seam.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Open connections of every listener, counted against `[server] max_connections` (all of
/// them) and `max_connections_per_ip` (from one client address). A connection is counted from
/// accept until it closes, before any session exists, so idle or slow connections from one
/// address cannot take every file descriptor. A WebSocket takes its connection's permit
/// into the socket's task, so it stays counted until the socket closes. The same count is
/// what a shutdown waits on: when it reaches zero, every connection is gone.
#[derive(Debug)]
pub struct ConnectionLimiter {
    /// The most open connections; None is unlimited.
    max_total: Option<usize>,
    /// The most open connections from one address; None is unlimited.
    max_per_ip: Option<usize>,
    /// The live counts.
    counts: Mutex<ConnectionCounts>,
    /// Connections refused so far, for stats and tests.
    refused: AtomicU64,
    /// Of those, refused by `max_connections_per_ip` (the rest by `max_connections`).
    refused_per_ip: AtomicU64,
    /// Refused connections still being answered ([`refuse`] lingers on each).
    answering: AtomicUsize,
    /// Woken when the last open connection closes.
    emptied: tokio::sync::Notify,
}

/// Live connection counts.
#[derive(Debug, Default)]
struct ConnectionCounts {
    /// All open connections.
    total: usize,
    /// Open connections by client address.
    per_ip: HashMap<IpAddr, usize>,
}

/// Which connection limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefused {
    #[error("too many connections to this server")]
    Total,
    #[error("too many connections from this address")]
    PerIp,
}

/// The most refused connections answered at once; beyond it they are closed unanswered.
pub const MAX_ANSWERING: usize = 256;

/// One refused connection being answered; dropping it frees the place.
#[derive(Debug)]
pub struct AnswerSlot {
    /// The limiter whose count of answers in flight this is.
    limiter: Arc<ConnectionLimiter>,
}

impl Drop for AnswerSlot {
    fn drop(&mut self) {
        self.limiter.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A counted connection; dropping it (when the connection closes) releases the count.
#[derive(Debug)]
pub struct ConnectionPermit {
    /// The limiter to give the count back to.
    limiter: Arc<ConnectionLimiter>,
    /// The client address counted.
    ip: IpAddr,
}

impl ConnectionLimiter {
    /// A limiter with these maxima (None: unlimited).
    pub fn new(max_total: Option<usize>, max_per_ip: Option<usize>) -> Arc<Self> {
        Arc::new(ConnectionLimiter {
            max_total,
            max_per_ip,
            counts: Mutex::new(ConnectionCounts::default()),
            refused: AtomicU64::new(0),
            refused_per_ip: AtomicU64::new(0),
            answering: AtomicUsize::new(0),
            emptied: tokio::sync::Notify::new(),
        })
    }

    /// A limiter that counts but never refuses.
    pub fn unlimited() -> Arc<Self> {
        ConnectionLimiter::new(None, None)
    }

    fn lock(&self) -> MutexGuard<'_, ConnectionCounts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count a new connection from `ip`, or say which limit it would cross (and count the
    /// refusal).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, ConnectionRefused> {
        let mut c = self.lock();
        let refused = if self.max_total.is_some_and(|m| c.total >= m) {
            Some(ConnectionRefused::Total)
        } else if self
            .max_per_ip
            .is_some_and(|m| c.per_ip.get(&ip).copied().unwrap_or(0) >= m)
        {
            Some(ConnectionRefused::PerIp)
        } else {
            None
        };
        if let Some(refused) = refused {
            drop(c);
            self.refused.fetch_add(1, Ordering::Relaxed);
            if refused == ConnectionRefused::PerIp {
                self.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            }
            return Err(refused);
        }
        c.total += 1;
        *c.per_ip.entry(ip).or_default() += 1;
        Ok(ConnectionPermit {
            limiter: self.clone(),
            ip,
        })
    }

    /// Count a new connection from `peer` and hand it back with its permit; or, over a
    /// limit, answer it with `answer(limit)` (an HTTP 503, a STOMP ERROR) and close it, in a
    /// task of its own.
    pub fn admit_or_answer<S>(
        self: &Arc<Self>,
        stream: S,
        peer: SocketAddr,
        answer: impl FnOnce(ConnectionRefused) -> Vec<u8>,
    ) -> Option<(ConnectionPermit, S)>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let refused = match self.admit(peer.ip()) {
            Ok(permit) => return Some((permit, stream)),
            Err(refused) => refused,
        };
        tracing::debug!(remote = %peer, %refused, "connection refused");
        if let Some(slot) = self.answer_slot() {
            let answer = answer(refused);
            tokio::spawn(async move {
                refuse(stream, &answer).await;
                drop(slot);
            });
        }
        None
    }

    /// A place to answer one refused connection, or None when [`MAX_ANSWERING`] are being
    /// answered already: a flood of refused connections then gets closed at once, so the
    /// answers cannot take the file descriptors the limits protect.
    pub fn answer_slot(self: &Arc<Self>) -> Option<AnswerSlot> {
        let taken = self.answering.fetch_add(1, Ordering::Relaxed);
        if taken >= MAX_ANSWERING {
            self.answering.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(AnswerSlot {
            limiter: self.clone(),
        })
    }

    /// Open connections counted now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Wait until no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            // Registered before the check, so a close in between cannot be missed.
            emptied.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            emptied.await;
        }
    }

    /// Connections refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections refused since start by `limit`.
    pub fn refused_by(&self, limit: ConnectionRefused) -> u64 {
        let per_ip = self.refused_per_ip.load(Ordering::Relaxed);
        match limit {
            ConnectionRefused::PerIp => per_ip,
            ConnectionRefused::Total => self.refused().saturating_sub(per_ip),
        }
    }
}

/// How long a refused connection is drained after its answer, so that a request the client
/// already sent does not turn our close into a reset that destroys the answer.
const REFUSAL_LINGER: std::time::Duration = std::time::Duration::from_millis(500);

/// Answer a refused connection with `answer` (an HTTP 503, a STOMP ERROR), then close it.
/// Bounded in time and memory: at most [`REFUSAL_LINGER`] and a 1 KiB read buffer.
pub async fn refuse<S>(mut stream: S, answer: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let answered = async {
        stream.write_all(answer).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, answered).await;
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut c = self.limiter.lock();
        c.total = c.total.saturating_sub(1);
        count_down(&mut c.per_ip, &self.ip);
        let emptied = c.total == 0;
        drop(c);
        if emptied {
            self.limiter.emptied.notify_waiters();
        }
    }
}

/// Give back one count of `key`, forgetting keys that reach zero, so a map of live counts
/// per address or user holds only the ones that have something live.
pub fn count_down<K, Q>(counts: &mut HashMap<K, usize>, key: &Q)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens added per second.
    rate: f64,
    /// The most tokens held.
    burst: f64,
    /// Tokens now.
    tokens: f64,
    /// When tokens were last added.
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            refilled: Instant::now(),
        }
    }

    /// Take one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn connections_are_counted_per_address_and_released() {
        let limiter = ConnectionLimiter::new(Some(3), Some(2));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = limiter.admit(a).unwrap();
        let _second = limiter.admit(a).unwrap();
        assert_eq!(limiter.admit(a).err(), Some(ConnectionRefused::PerIp));
        let _third = limiter.admit(b).unwrap();
        assert_eq!(limiter.admit(b).err(), Some(ConnectionRefused::Total));
        assert_eq!(limiter.refused(), 2);
        assert_eq!(limiter.refused_by(ConnectionRefused::PerIp), 1);
        assert_eq!(limiter.refused_by(ConnectionRefused::Total), 1);
        drop(first);
        assert_eq!(limiter.open(), 2);
        assert!(limiter.admit(a).is_ok());
    }

    #[tokio::test]
    async fn all_closed_waits_for_the_last_connection() {
        let limiter = ConnectionLimiter::unlimited();
        limiter.all_closed().await;
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (first, second) = (limiter.admit(ip).unwrap(), limiter.admit(ip).unwrap());
        let waiting = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.all_closed().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the last close")
            .unwrap();
    }

    #[test]
    fn refused_connections_are_answered_a_bounded_number_at_a_time() {
        let limiter = ConnectionLimiter::unlimited();
        let slots: Vec<AnswerSlot> = (0..MAX_ANSWERING)
            .map(|_| limiter.answer_slot().unwrap())
            .collect();
        assert!(limiter.answer_slot().is_none());
        drop(slots);
        assert!(limiter.answer_slot().is_some());
    }

    #[test]
    fn the_bucket_refills_at_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 2.0);
        assert!(bucket.take(start));
        assert!(bucket.take(start));
        assert!(!bucket.take(start));
        assert!(bucket.take(start + Duration::from_millis(100)));
        assert!(!bucket.take(start + Duration::from_millis(100)));
    }
}
