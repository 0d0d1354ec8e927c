//! The scenarios: `idle`, `echo`, `fanout` (plain or STOMP). Every loop is bounded in count
//! and time; results are one JSON line on stdout, progress goes to stderr.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

use super::client::{Client, Recv, Transport};
use super::stats::{Hist, Proc, now_ns};
use super::stomp;
use super::wire::{self, Endpoint};

/// How many sessions may be opening at once.
const OPEN_CONCURRENCY: usize = 128;

/// Options every scenario shares.
#[derive(Clone, Debug)]
pub struct Common {
    /// The servers; session i uses `eps[i % len]`, a publisher (i >= clients) the first.
    pub eps: Vec<Arc<Endpoint>>,
    pub transport: Transport,
    pub clients: usize,
    pub proc: Proc,
    /// Source addresses to spread over (0: automatic).
    pub sources: usize,
    pub label: String,
    pub size: usize,
    pub stomp: Option<Arc<StompOpts>>,
}

/// STOMP connection settings.
#[derive(Clone, Debug)]
pub struct StompOpts {
    pub host: String,
    pub login: Option<String>,
    pub passcode: Option<String>,
    pub destination: String,
    pub subprotocol: Option<String>,
}

impl Common {
    /// The server session `i` talks to.
    fn endpoint(&self, i: usize) -> Arc<Endpoint> {
        match i {
            i if i >= self.clients => self.eps[0].clone(),
            i => self.eps[i % self.eps.len()].clone(),
        }
    }

    /// Source addresses to use: one per ~8000 connections, at least 1.
    pub(super) fn sources(&self, conns_per_client: usize) -> usize {
        if self.sources > 0 {
            return self.sources;
        }
        let conns = self.clients * conns_per_client;
        if conns < 4000 {
            1
        } else {
            conns.div_ceil(8000) + 1
        }
    }

    pub(super) fn base(&self, scenario: &str) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("scenario".into(), json!(scenario));
        m.insert("label".into(), json!(self.label));
        m.insert("transport".into(), json!(self.transport.name()));
        m.insert("clients".into(), json!(self.clients));
        m.insert("size".into(), json!(self.size));
        m.insert("stomp".into(), json!(self.stomp.is_some()));
        m
    }
}

/// A per-run nonce so session ids and source addresses differ between runs.
pub(super) fn nonce() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    t ^ (std::process::id() as u64) << 32
}

/// Maps client index to a source address; the first address rotates per run so TIME_WAIT
/// sockets of the previous run do not exhaust its ports.
#[derive(Clone, Copy)]
pub(super) struct Sources {
    n: usize,
    base: u8,
}

impl Sources {
    pub(super) fn new(n: usize, nonce: u64) -> Self {
        let n = n.clamp(1, 200);
        let base = if n <= 1 {
            1
        } else {
            2 + (nonce % (250 - n as u64)) as u8
        };
        Sources { n, base }
    }
    pub(super) fn get(&self, i: usize) -> Option<std::net::IpAddr> {
        if self.n <= 1 {
            return None;
        }
        let last = self.base as usize + i % self.n;
        Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
            127, 0, 0, last as u8,
        )))
    }
}

pub(super) fn session_id(nonce: u64, i: usize) -> String {
    format!("{:03}{:x}n{i}", i % 1000, nonce & 0xffff_ffff)
}

/// Open a session, and for STOMP connect (and subscribe when asked).
pub(super) async fn open_session(
    c: &Common,
    transport: Transport,
    i: usize,
    nonce: u64,
    src: Option<std::net::IpAddr>,
    subscribe: bool,
    small: Option<wire::SmallRecv>,
) -> io::Result<(Client, stomp::Reader)> {
    let sub = c.stomp.as_ref().and_then(|s| s.subprotocol.as_deref());
    let mut client = Client::open(
        c.endpoint(i),
        transport,
        src,
        &session_id(nonce, i),
        sub,
        small,
    )
    .await?;
    let mut reader = stomp::Reader::default();
    if let Some(s) = &c.stomp {
        let frame = stomp::connect(&s.host, s.login.as_deref(), s.passcode.as_deref());
        client.send(&[&frame]).await?;
        wait_frame(&mut client, &mut reader, b"CONNECTED").await?;
        if subscribe {
            client.send(&[&stomp::subscribe(0, &s.destination)]).await?;
            wait_frame(&mut client, &mut reader, b"RECEIPT").await?;
        }
    }
    Ok((client, reader))
}

pub(super) async fn wait_frame(
    client: &mut Client,
    reader: &mut stomp::Reader,
    want: &[u8],
) -> io::Result<()> {
    let fut = async {
        loop {
            let mut found = false;
            let mut error = None;
            let r = client
                .recv(&mut |m: &[u8]| {
                    reader.feed(m, |f| {
                        if f.command == want {
                            found = true;
                        } else if f.command == b"ERROR" {
                            error = Some(format!(
                                "STOMP ERROR: {} {}",
                                f.header("message").unwrap_or(""),
                                String::from_utf8_lossy(f.body)
                            ));
                        }
                    })
                })
                .await?;
            if let Some(e) = error {
                return Err(io::Error::other(e));
            }
            if found {
                return Ok(());
            }
            if let Recv::Closed(code) = r {
                return Err(io::Error::other(format!(
                    "closed ({code}) during STOMP setup"
                )));
            }
        }
    };
    tokio::time::timeout(wire::CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "STOMP setup timed out"))?
}

/// Counters shared by the sessions of a run.
#[derive(Default)]
pub(super) struct Shared {
    ready: AtomicUsize,
    failed: AtomicUsize,
    closed: AtomicUsize,
    synced: AtomicUsize,
    finished: AtomicUsize,
    delivered: AtomicU64,
    hist: Mutex<Hist>,
    first_error: Mutex<Option<String>>,
    stop: AtomicBool,
    /// Stalled subscribers (fanout `--stalled`) that subscribed, and that saw the sync message.
    stalled_ready: AtomicUsize,
    stalled_synced: AtomicUsize,
}

impl Shared {
    pub(super) fn fail(&self, e: &io::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = lock(&self.first_error);
        if first.is_none() {
            *first = Some(e.to_string());
        }
    }
    pub(super) fn error(&self) -> Option<String> {
        lock(&self.first_error).clone()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Print a progress line every two seconds until the handle is dropped.
pub(super) fn progress(label: String, f: impl Fn() -> String + Send + 'static) -> JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            eprintln!(
                "  [{label} {:>4.0}s] {}",
                start.elapsed().as_secs_f64(),
                f()
            );
        }
    })
}

/// A payload: kind byte, sequence, send timestamp, padded with `x` to `size` bytes.
pub(super) fn payload(kind: u8, seq: u64, size: usize, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    out.push(kind);
    let _ = write!(out, "{seq} {} ", now_ns());
    while out.len() < size {
        out.push(b'x');
    }
}

/// Parse kind, sequence and timestamp back.
fn parse_payload(p: &[u8]) -> Option<(u8, u64, u64)> {
    let kind = *p.first()?;
    let mut it = p[1..].split(|&b| b == b' ');
    let num = |s: &[u8]| -> Option<u64> {
        if s.is_empty() {
            return None;
        }
        s.iter().try_fold(0u64, |a, &d| {
            d.is_ascii_digit().then(|| a * 10 + (d - b'0') as u64)
        })
    };
    let seq = num(it.next()?)?;
    let t = num(it.next()?)?;
    Some((kind, seq, t))
}

pub(super) fn sample(proc: &Proc) -> (Option<f64>, Option<u64>) {
    (proc.cpu_seconds(), proc.rss_bytes())
}

pub(super) async fn abort_all(handles: Vec<JoinHandle<()>>) {
    for h in &handles {
        h.abort();
    }
    for h in handles {
        let _ = h.await;
    }
}

// ---------------------------------------------------------------------------------------
// idle

pub async fn idle(c: Common, hold: Duration) -> Value {
    let nonce = nonce();
    let sources = Sources::new(c.sources(1), nonce);
    let shared = Arc::new(Shared::default());
    // Let the server settle, then take the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu0, rss0) = sample(&c.proc);
    let sem = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let start = Instant::now();
    let sh = shared.clone();
    let total = c.clients;
    let prog = progress(format!("idle {}", c.label), move || {
        format!(
            "open {}/{} failed {}",
            sh.ready.load(Ordering::Relaxed),
            total,
            sh.failed.load(Ordering::Relaxed)
        )
    });
    let mut handles = Vec::with_capacity(c.clients);
    for i in 0..c.clients {
        let permit = match sem.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => break,
        };
        let c2 = c.clone();
        let shared = shared.clone();
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let opened =
                open_session(&c2, c2.transport, i, nonce, sources.get(i), false, None).await;
            drop(permit);
            let (mut client, _) = match opened {
                Ok(x) => x,
                Err(e) => {
                    shared.fail(&e);
                    return;
                }
            };
            lock(&shared.hist).record(t.elapsed().as_nanos() as u64);
            shared.ready.fetch_add(1, Ordering::Relaxed);
            // Hold: answer pings, ignore heartbeats, until aborted.
            loop {
                match client.recv(&mut |_m: &[u8]| {}).await {
                    Ok(Recv::Alive) => {}
                    _ => {
                        shared.closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    // Wait for every open to finish (bounded by the per-session open timeout).
    let deadline = Instant::now() + wire::CONNECT_TIMEOUT + Duration::from_secs(5);
    while shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < c.clients
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let establish = start.elapsed().as_secs_f64();
    tokio::time::sleep(hold).await;
    let (cpu1, rss1) = sample(&c.proc);
    prog.abort();
    let ready = shared.ready.load(Ordering::Relaxed);
    let closed = shared.closed.load(Ordering::Relaxed);
    let hist = lock(&shared.hist).clone();
    abort_all(handles).await;
    let mut m = c.base("idle");
    m.insert("ok".into(), json!(ready));
    m.insert(
        "failed".into(),
        json!(shared.failed.load(Ordering::Relaxed)),
    );
    m.insert("closed_during_hold".into(), json!(closed));
    m.insert("establish_s".into(), json!(establish));
    m.insert(
        "sessions_per_s".into(),
        json!(ready as f64 / establish.max(1e-9)),
    );
    m.insert("open_p50_ms".into(), json!(hist.quantile(0.5) as f64 / 1e6));
    m.insert(
        "open_p99_ms".into(),
        json!(hist.quantile(0.99) as f64 / 1e6),
    );
    if let (Some(a), Some(b)) = (rss0, rss1) {
        m.insert("server_rss_before".into(), json!(a));
        m.insert("server_rss_after".into(), json!(b));
        if ready > 0 {
            m.insert(
                "rss_per_session".into(),
                json!((b as f64 - a as f64) / ready as f64),
            );
        }
    }
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        m.insert("server_cpu_s".into(), json!(b - a));
    }
    if let Some(e) = shared.error() {
        m.insert("error".into(), json!(e));
    }
    Value::Object(m)
}

// ---------------------------------------------------------------------------------------
// echo

pub async fn echo(c: Common, warmup: Duration, duration: Duration) -> Value {
    let nonce = nonce();
    let conns_per = if c.transport.is_http() { 2 } else { 1 };
    let sources = Sources::new(c.sources(conns_per), nonce);
    let shared = Arc::new(Shared::default());
    let window = Arc::new((AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)));
    let round_trips = Arc::new(AtomicU64::new(0));
    let (start_tx, start_rx) = tokio::sync::watch::channel(false);
    let sem = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut handles = Vec::with_capacity(c.clients);
    for i in 0..c.clients {
        let c2 = c.clone();
        let shared = shared.clone();
        let window = window.clone();
        let rt = round_trips.clone();
        let sem = sem.clone();
        let mut start_rx = start_rx.clone();
        handles.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await;
            let opened =
                open_session(&c2, c2.transport, i, nonce, sources.get(i), false, None).await;
            drop(permit);
            let (mut client, _) = match opened {
                Ok(x) => x,
                Err(e) => {
                    shared.fail(&e);
                    return;
                }
            };
            shared.ready.fetch_add(1, Ordering::Relaxed);
            if start_rx.wait_for(|s| *s).await.is_err() {
                return;
            }
            let mut hist = Hist::default();
            let mut buf = Vec::with_capacity(c2.size + 32);
            let mut seq = 0u64;
            while !shared.stop.load(Ordering::Relaxed) {
                seq += 1;
                payload(b'M', seq, c2.size, &mut buf);
                let sent_at = now_ns();
                if client.send(&[&buf]).await.is_err() {
                    shared.closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                let mut got = false;
                let mut alive = true;
                while !got {
                    let r = tokio::time::timeout(
                        Duration::from_secs(10),
                        client.recv(&mut |m: &[u8]| {
                            if let Some((b'M', s, _)) = parse_payload(m) {
                                got |= s == seq;
                            }
                        }),
                    )
                    .await;
                    match r {
                        Ok(Ok(Recv::Alive)) => {}
                        _ => {
                            alive = false;
                            break;
                        }
                    }
                }
                if !alive {
                    shared.closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                let done_at = now_ns();
                let (t0, t1) = (
                    window.0.load(Ordering::Relaxed),
                    window.1.load(Ordering::Relaxed),
                );
                if sent_at >= t0 && done_at <= t1 {
                    hist.record(done_at - sent_at);
                    rt.fetch_add(1, Ordering::Relaxed);
                }
            }
            lock(&shared.hist).merge(&hist);
            shared.finished.fetch_add(1, Ordering::Relaxed);
        }));
    }
    let sh = shared.clone();
    let total = c.clients;
    let rt = round_trips.clone();
    let prog = progress(format!("echo {}", c.label), move || {
        format!(
            "open {}/{} failed {} round trips {}",
            sh.ready.load(Ordering::Relaxed),
            total,
            sh.failed.load(Ordering::Relaxed),
            rt.load(Ordering::Relaxed)
        )
    });
    let open_start = Instant::now();
    let deadline = Instant::now() + wire::CONNECT_TIMEOUT + Duration::from_secs(10);
    while shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < c.clients
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let establish = open_start.elapsed().as_secs_f64();
    let _ = start_tx.send(true);
    tokio::time::sleep(warmup).await;
    let (cpu0, _) = sample(&c.proc);
    let me0 = own_cpu();
    let w0 = Instant::now();
    window.0.store(now_ns(), Ordering::Relaxed);
    tokio::time::sleep(duration).await;
    window.1.store(now_ns(), Ordering::Relaxed);
    let wall = w0.elapsed().as_secs_f64();
    let (cpu1, rss) = sample(&c.proc);
    let me1 = own_cpu();
    shared.stop.store(true, Ordering::Relaxed);
    let ready = shared.ready.load(Ordering::Relaxed);
    let finish_deadline = Instant::now() + Duration::from_secs(12);
    while shared.finished.load(Ordering::Relaxed) + shared.closed.load(Ordering::Relaxed) < ready
        && Instant::now() < finish_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    prog.abort();
    abort_all(handles).await;
    let n = round_trips.load(Ordering::Relaxed);
    let hist = lock(&shared.hist).clone();
    let mut m = c.base("echo");
    m.insert("ok".into(), json!(ready));
    m.insert(
        "failed".into(),
        json!(shared.failed.load(Ordering::Relaxed)),
    );
    m.insert(
        "closed_early".into(),
        json!(shared.closed.load(Ordering::Relaxed)),
    );
    m.insert("establish_s".into(), json!(establish));
    m.insert("duration_s".into(), json!(wall));
    m.insert("msgs".into(), json!(n));
    m.insert("msgs_per_s".into(), json!(n as f64 / wall));
    m.insert("latency_samples".into(), json!(hist.count()));
    m.insert("p50_us".into(), json!(hist.quantile(0.5) as f64 / 1e3));
    m.insert("p99_us".into(), json!(hist.quantile(0.99) as f64 / 1e3));
    m.insert("p999_us".into(), json!(hist.quantile(0.999) as f64 / 1e3));
    cpu_fields(&mut m, cpu0, cpu1, wall, n);
    client_cpu(&mut m, me0, me1, wall);
    if let Some(r) = rss {
        m.insert("server_rss_after".into(), json!(r));
    }
    if let Some(e) = shared.error() {
        m.insert("error".into(), json!(e));
    }
    Value::Object(m)
}

/// This load generator's own CPU seconds: when it nears the machine's cores, it is the
/// bottleneck and the server's CPU per message is the figure to compare.
fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    let busy: u64 = cpu.iter().take(8).sum::<u64>() - cpu.get(3)? - cpu.get(4)?;
    Some(busy as f64 / 100.0)
}

pub(super) fn own_cpu() -> Option<(f64, f64)> {
    Some((
        Proc::new(vec![std::process::id()]).cpu_seconds()?,
        machine_busy()?,
    ))
}

pub(super) fn client_cpu(
    m: &mut serde_json::Map<String, Value>,
    a: Option<(f64, f64)>,
    b: Option<(f64, f64)>,
    wall: f64,
) {
    if let (Some(a), Some(b)) = (a, b) {
        m.insert("client_cpu_cores".into(), json!((b.0 - a.0) / wall));
        // The whole machine, so a run disturbed by other processes can be spotted.
        m.insert("machine_busy_cores".into(), json!((b.1 - a.1) / wall));
    }
}

pub(super) fn cpu_fields(
    m: &mut serde_json::Map<String, Value>,
    cpu0: Option<f64>,
    cpu1: Option<f64>,
    wall: f64,
    msgs: u64,
) {
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        let cpu = b - a;
        m.insert("server_cpu_s".into(), json!(cpu));
        m.insert("server_cpu_cores".into(), json!(cpu / wall));
        if msgs > 0 {
            m.insert(
                "server_cpu_us_per_msg".into(),
                json!(cpu * 1e6 / msgs as f64),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// fanout

pub struct FanoutOpts {
    pub warmup: Duration,
    pub duration: Duration,
    /// Messages per subscriber the publisher may have in flight (0: automatic).
    pub window: u64,
    pub publisher: Transport,
    /// Subscribers that stop reading once subscribed and synced (slow-consumer runs).
    pub stalled: usize,
}

/// The receive side of a stalled subscriber: 4 KiB `SO_RCVBUF` (the kernel doubles it) and
/// the smallest MSS Linux accepts (88), so the server's send buffer, which autotunes with the
/// MSS and the congestion window, stays at ~100-250 KiB instead of the 4 MiB a loopback
/// connection (MSS 65483) reaches: the server's writes to it block after a few seconds of a
/// 1000-subscriber fan-out rather than after minutes.
const STALL_RECV: wire::SmallRecv = wire::SmallRecv {
    rcvbuf: 4096,
    mss: 88,
};
/// How long a stalled subscriber drains its socket after the run, waiting for the close.
const STALL_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn fanout(c: Common, o: FanoutOpts) -> Value {
    let nonce = nonce();
    let sources = Sources::new(c.sources(1), nonce);
    let shared = Arc::new(Shared::default());
    let sem = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let is_stomp = c.stomp.is_some();
    let scenario = if is_stomp { "stomp-fanout" } else { "fanout" };
    let sh = shared.clone();
    let total = c.clients;
    let prog = progress(format!("{scenario} {}", c.label), move || {
        format!(
            "subscribed {}/{} failed {} synced {} delivered {}",
            sh.ready.load(Ordering::Relaxed),
            total,
            sh.failed.load(Ordering::Relaxed),
            sh.synced.load(Ordering::Relaxed),
            sh.delivered.load(Ordering::Relaxed)
        )
    });
    let open_start = Instant::now();
    let mut handles = Vec::with_capacity(c.clients);
    let stalled = o.stalled.min(c.clients);
    let mut stalled_handles = Vec::with_capacity(stalled);
    let mut releases = Vec::with_capacity(stalled);
    for i in 0..c.clients {
        let permit = match sem.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => break,
        };
        let c2 = c.clone();
        let shared = shared.clone();
        // The stalled subscribers are spread evenly over the others.
        if stalled > 0 && i % c.clients.div_ceil(stalled) == 0 && stalled_handles.len() < stalled {
            let (tx, rx) = oneshot::channel::<()>();
            releases.push(tx);
            stalled_handles.push(tokio::spawn(async move {
                let opened = open_session(
                    &c2,
                    c2.transport,
                    i,
                    nonce,
                    sources.get(i),
                    true,
                    Some(STALL_RECV),
                )
                .await;
                drop(permit);
                match opened {
                    Ok((mut client, mut reader)) => {
                        shared.ready.fetch_add(1, Ordering::Relaxed);
                        shared.stalled_ready.fetch_add(1, Ordering::Relaxed);
                        stalled_subscriber(&mut client, &mut reader, is_stomp, &shared, rx).await
                    }
                    Err(e) => {
                        shared.fail(&e);
                        json!({"error": e.to_string()})
                    }
                }
            }));
            continue;
        }
        handles.push(tokio::spawn(async move {
            let opened =
                open_session(&c2, c2.transport, i, nonce, sources.get(i), true, None).await;
            drop(permit);
            let (mut client, mut reader) = match opened {
                Ok(x) => x,
                Err(e) => {
                    shared.fail(&e);
                    return;
                }
            };
            shared.ready.fetch_add(1, Ordering::Relaxed);
            subscriber_loop(&mut client, &mut reader, is_stomp, &shared).await;
        }));
    }
    let deadline = Instant::now() + wire::CONNECT_TIMEOUT + Duration::from_secs(10);
    while shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < c.clients
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let establish = open_start.elapsed().as_secs_f64();
    let ready = shared.ready.load(Ordering::Relaxed);
    let mut m = c.base(scenario);
    m.insert("ok".into(), json!(ready));
    m.insert(
        "failed".into(),
        json!(shared.failed.load(Ordering::Relaxed)),
    );
    m.insert("establish_s".into(), json!(establish));
    if ready == 0 {
        prog.abort();
        abort_all(handles).await;
        for h in &stalled_handles {
            h.abort();
        }
        m.insert(
            "error".into(),
            json!(shared.error().unwrap_or_else(|| "no subscriber".into())),
        );
        return Value::Object(m);
    }
    let r = publish(&c, &o, nonce, &shared, ready, &mut m).await;
    prog.abort();
    if let Err(e) = r {
        m.insert("error".into(), json!(format!("publisher: {e}")));
    }
    abort_all(handles).await;
    if stalled > 0 {
        // Let the stalled subscribers read again, until the server's close (each is bounded
        // by its own timeouts; the whole run by --max-seconds).
        drop(releases);
        let mut reports = Vec::with_capacity(stalled_handles.len());
        for h in stalled_handles {
            reports.push(
                h.await
                    .unwrap_or_else(|e| json!({"error": format!("task: {e}")})),
            );
        }
        let closed = reports
            .iter()
            .filter(|r| r.get("closed") == Some(&json!(true)))
            .count();
        m.insert("stalled".into(), json!(stalled));
        m.insert(
            "stalled_ready".into(),
            json!(shared.stalled_ready.load(Ordering::Relaxed)),
        );
        m.insert("stalled_closed".into(), json!(closed));
        m.insert("stalled_sessions".into(), json!(reports));
    }
    if let Some(e) = shared.error() {
        m.entry("error").or_insert(json!(e));
    }
    Value::Object(m)
}

async fn subscriber_loop(
    client: &mut Client,
    reader: &mut stomp::Reader,
    is_stomp: bool,
    shared: &Shared,
) {
    let mut count = 0u64;
    let mut lat: Vec<u64> = Vec::with_capacity(64);
    let mut synced = false;
    let mut end = false;
    loop {
        let mut handle = |body: &[u8]| match parse_payload(body) {
            Some((b'M', _, t)) => {
                count += 1;
                lat.push(now_ns().saturating_sub(t));
            }
            Some((b'W', _, _)) => count += 1,
            Some((b'S', _, _)) if !synced => {
                synced = true;
                shared.synced.fetch_add(1, Ordering::Relaxed);
            }
            Some((b'E', _, _)) => end = true,
            _ => {}
        };
        let r = if is_stomp {
            client
                .recv(&mut |m: &[u8]| {
                    reader.feed(m, |f| {
                        if f.command == b"MESSAGE" {
                            handle(f.body)
                        }
                    })
                })
                .await
        } else {
            client.recv(&mut handle).await
        };
        if count > 0 {
            shared.delivered.fetch_add(count, Ordering::Relaxed);
            count = 0;
        }
        let gone = !matches!(r, Ok(Recv::Alive));
        if lat.len() >= 64 || end || gone {
            let mut h = lock(&shared.hist);
            for &v in &lat {
                h.record(v);
            }
            lat.clear();
        }
        if end {
            shared.finished.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if gone {
            shared.closed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}

/// Receive once, handing message bodies to `f` (STOMP MESSAGE bodies when `is_stomp`) and the
/// first STOMP ERROR's `message` header to `error`.
async fn recv_bodies(
    client: &mut Client,
    reader: &mut stomp::Reader,
    is_stomp: bool,
    f: &mut impl FnMut(&[u8]),
    error: &mut Option<String>,
) -> io::Result<Recv> {
    if is_stomp {
        client
            .recv(&mut |m: &[u8]| {
                reader.feed(m, |fr| {
                    if fr.command == b"MESSAGE" {
                        f(fr.body)
                    } else if fr.command == b"ERROR" && error.is_none() {
                        *error = Some(fr.header("message").unwrap_or("").to_string());
                    }
                })
            })
            .await
    } else {
        client.recv(f).await
    }
}

/// A slow consumer: reads until the sync message (so the server registered it like every
/// other subscriber), then reads nothing until `release` (the end of the run, or the run being
/// abandoned), keeping the socket open. Then it reads until the server closes, for
/// `STALL_DRAIN_TIMEOUT` at most, and reports how the connection ended.
///
/// The close is seen only after the backlog the socket buffers hold is read (a FIN or close
/// frame queues behind it), so `closed_after_s` is an upper bound on when the server closed;
/// a connection still open once the backlog is read was not closed by the server.
async fn stalled_subscriber(
    client: &mut Client,
    reader: &mut stomp::Reader,
    is_stomp: bool,
    shared: &Shared,
    release: oneshot::Receiver<()>,
) -> Value {
    let mut error = None;
    let sync = async {
        loop {
            let mut seen = false;
            let r = recv_bodies(
                client,
                reader,
                is_stomp,
                &mut |b: &[u8]| {
                    if matches!(parse_payload(b), Some((b'S', _, _))) {
                        seen = true;
                    }
                },
                &mut error,
            )
            .await;
            if seen {
                return Ok(());
            }
            match r {
                Ok(Recv::Alive) => {}
                Ok(Recv::Closed(code)) => return Err(format!("closed ({code}) before sync")),
                Err(e) => return Err(format!("before sync: {e}")),
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(30), sync).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return json!({"error": e}),
        Err(_) => return json!({"error": "no sync message within 30 s"}),
    }
    shared.stalled_synced.fetch_add(1, Ordering::Relaxed);
    shared.synced.fetch_add(1, Ordering::Relaxed);
    let stall_start = Instant::now();
    // Not a byte read from here on, until the run is over.
    let _ = release.await;
    let drain_started = stall_start.elapsed().as_secs_f64();
    let mut backlog = 0u64;
    let drain = async {
        loop {
            let r = recv_bodies(
                client,
                reader,
                is_stomp,
                &mut |_b: &[u8]| backlog += 1,
                &mut error,
            )
            .await;
            match r {
                Ok(Recv::Alive) => {}
                Ok(Recv::Closed(code)) => return Ok(code),
                Err(e) => return Err(e),
            }
        }
    };
    let ended = tokio::time::timeout(STALL_DRAIN_TIMEOUT, drain).await;
    let after = stall_start.elapsed().as_secs_f64();
    let mut r = serde_json::Map::new();
    match ended {
        // 1006: EOF without a close frame.
        Ok(Ok(code)) => {
            r.insert("closed".into(), json!(true));
            r.insert(
                "how".into(),
                json!(if code == 1006 { "eof" } else { "close-frame" }),
            );
            r.insert("code".into(), json!(code));
        }
        Ok(Err(e)) => {
            let reset = e.kind() == io::ErrorKind::ConnectionReset;
            r.insert("closed".into(), json!(true));
            r.insert("how".into(), json!(if reset { "reset" } else { "error" }));
            r.insert("io_error".into(), json!(e.to_string()));
        }
        Err(_) => {
            r.insert("closed".into(), json!(false));
            r.insert("how".into(), json!("still open"));
        }
    }
    r.insert("stall_s".into(), json!(drain_started));
    r.insert("closed_after_s".into(), json!(after));
    r.insert("backlog_msgs".into(), json!(backlog));
    if let Some(e) = error {
        r.insert("stomp_error".into(), json!(e));
    }
    Value::Object(r)
}

/// Drain the publisher's inbound side for up to `dur`; Err when it closed.
async fn pump(p: &mut Client, dur: Duration) -> io::Result<()> {
    let until = tokio::time::Instant::now() + dur;
    loop {
        tokio::select! {
            n = p.fill_ws() => {
                if n? == 0 {
                    return Err(io::Error::other("publisher connection closed"));
                }
                let mut opened = true;
                if let Recv::Closed(code) = p.drain_ws(&mut |_m: &[u8]| {}, &mut opened)? {
                    return Err(io::Error::other(format!("publisher closed ({code})")));
                }
            }
            _ = tokio::time::sleep_until(until) => return Ok(()),
        }
    }
}

async fn publish(
    c: &Common,
    o: &FanoutOpts,
    nonce: u64,
    shared: &Shared,
    active_subs: usize,
    m: &mut serde_json::Map<String, Value>,
) -> io::Result<()> {
    let (mut p, _) = open_session(c, o.publisher, c.clients + 1, nonce, None, false, None).await?;
    let dest = c.stomp.as_ref().map(|s| s.destination.clone());
    let mut msg = Vec::with_capacity(c.size + 64);
    let mut out = Vec::with_capacity(64 * 1024);
    let encode = |p: &Client, kind: u8, seq: u64, msg: &mut Vec<u8>, out: &mut Vec<u8>| {
        payload(kind, seq, c.size, msg);
        match &dest {
            Some(d) => {
                let mut frame = Vec::with_capacity(msg.len() + 64);
                stomp::send(d, msg, &mut frame);
                p.encode_ws(&[&frame], out);
            }
            None => p.encode_ws(&[msg], out),
        }
    };
    // Sync: until every subscriber has seen a message (the broadcast app registered it).
    let sync_deadline = Instant::now() + Duration::from_secs(30);
    let mut seq = 0u64;
    while shared.synced.load(Ordering::Relaxed) < active_subs && Instant::now() < sync_deadline {
        seq += 1;
        out.clear();
        encode(&p, b'S', seq, &mut msg, &mut out);
        p.write_ws(&out).await?;
        pump(&mut p, Duration::from_millis(200)).await?;
    }
    let synced = shared.synced.load(Ordering::Relaxed);
    m.insert("synced".into(), json!(synced));
    // Stalled subscribers read nothing after the sync: the window, the expected deliveries
    // and msgs/s count the others only.
    let stalled_synced = shared.stalled_synced.load(Ordering::Relaxed);
    let stalled_ready = shared.stalled_ready.load(Ordering::Relaxed);
    let active_subs = active_subs.saturating_sub(stalled_ready);
    let active = synced.saturating_sub(stalled_synced).max(1) as u64;
    m.insert("delivering_subscribers".into(), json!(active));
    let window = if o.window > 0 {
        o.window
    } else {
        (100_000 / active).clamp(16, 2000)
    };
    m.insert("window".into(), json!(window));
    let allowed_total = window * active;
    let base = shared.delivered.load(Ordering::Relaxed);
    let start = Instant::now();
    let measure_at = start + o.warmup;
    let end_at = measure_at + o.duration;
    let mut sent = 0u64;
    let mut measuring = false;
    let (mut cpu0, mut me0, mut d0, mut w0) = (None, None, 0u64, start);
    let mut kind = b'W';
    loop {
        let now = Instant::now();
        if !measuring && now >= measure_at {
            measuring = true;
            kind = b'M';
            cpu0 = c.proc.cpu_seconds();
            me0 = own_cpu();
            d0 = shared.delivered.load(Ordering::Relaxed);
            w0 = now;
            lock(&shared.hist).clone_from(&Hist::default());
        }
        if now >= end_at {
            break;
        }
        let delivered = shared.delivered.load(Ordering::Relaxed) - base;
        let outstanding = (sent * active).saturating_sub(delivered);
        let room = allowed_total.saturating_sub(outstanding) / active;
        let burst = room.min(64);
        if burst > 0 {
            out.clear();
            for _ in 0..burst {
                seq += 1;
                encode(&p, kind, seq, &mut msg, &mut out);
            }
            p.write_ws(&out).await?;
            sent += burst;
        }
        tokio::select! {
            biased;
            n = p.fill_ws() => {
                if n? == 0 {
                    return Err(io::Error::other("publisher connection closed"));
                }
                let mut opened = true;
                if let Recv::Closed(code) = p.drain_ws(&mut |_m: &[u8]| {}, &mut opened)? {
                    return Err(io::Error::other(format!("publisher closed ({code})")));
                }
            }
            _ = std::future::ready(()), if burst > 0 => {}
            _ = tokio::time::sleep(Duration::from_millis(1)), if burst == 0 => {}
        }
    }
    let cpu1 = c.proc.cpu_seconds();
    let me1 = own_cpu();
    let d1 = shared.delivered.load(Ordering::Relaxed);
    let wall = w0.elapsed().as_secs_f64();
    let rss = c.proc.rss_bytes();
    // Drain: wait until everything sent has arrived, while it still progresses (30 s at most).
    let expected = sent * active;
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut last_progress) = (0u64, Instant::now());
    loop {
        let got = shared.delivered.load(Ordering::Relaxed) - base;
        if got >= expected
            || Instant::now() >= drain_deadline
            || last_progress.elapsed() > Duration::from_secs(3)
            || shared.closed.load(Ordering::Relaxed) >= active as usize
        {
            break;
        }
        if got != last {
            (last, last_progress) = (got, Instant::now());
        }
        pump(&mut p, Duration::from_millis(5)).await?;
    }
    let got = shared.delivered.load(Ordering::Relaxed) - base;
    // Tell subscribers to finish, so their last latencies are recorded.
    for _ in 0..3 {
        seq += 1;
        out.clear();
        encode(&p, b'E', seq, &mut msg, &mut out);
        p.write_ws(&out).await?;
        pump(&mut p, Duration::from_millis(100)).await?;
        if shared.finished.load(Ordering::Relaxed) + shared.closed.load(Ordering::Relaxed)
            >= active_subs
        {
            break;
        }
    }
    let hist = lock(&shared.hist).clone();
    let n = d1 - d0;
    m.insert("duration_s".into(), json!(wall));
    m.insert("published".into(), json!(sent));
    m.insert("msgs".into(), json!(n));
    m.insert("msgs_per_s".into(), json!(n as f64 / wall));
    m.insert("expected".into(), json!(expected));
    m.insert("lost".into(), json!(expected.saturating_sub(got)));
    m.insert(
        "closed_early".into(),
        json!(shared.closed.load(Ordering::Relaxed)),
    );
    m.insert("latency_samples".into(), json!(hist.count()));
    m.insert("p50_us".into(), json!(hist.quantile(0.5) as f64 / 1e3));
    m.insert("p99_us".into(), json!(hist.quantile(0.99) as f64 / 1e3));
    m.insert("p999_us".into(), json!(hist.quantile(0.999) as f64 / 1e3));
    cpu_fields(m, cpu0, cpu1, wall, n);
    client_cpu(m, me0, me1, wall);
    if let Some(r) = rss {
        m.insert("server_rss_after".into(), json!(r));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// app round trips

/// C STOMP clients in a closed loop through an `/app` backend: client `i` subscribes to
/// `/topic/bench-i`, SENDs to `{destination}-i` (`/app/bench-i`), and waits for the backend's
/// answer, which the gateway publishes to `/topic/bench-i` (Spring's `@SendTo` default),
/// before the next SEND. With `--destination /topic/bench` the same loop runs through the
/// broker alone, which shows what the backend hop adds.
pub async fn app_roundtrip(c: Common, warmup: Duration, duration: Duration) -> Value {
    let nonce = nonce();
    let sources = Sources::new(c.sources(1), nonce);
    let shared = Arc::new(Shared::default());
    let window = Arc::new((AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)));
    let round_trips = Arc::new(AtomicU64::new(0));
    let (start_tx, start_rx) = tokio::sync::watch::channel(false);
    let sem = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut handles = Vec::with_capacity(c.clients);
    for i in 0..c.clients {
        let c2 = c.clone();
        let shared = shared.clone();
        let window = window.clone();
        let rt = round_trips.clone();
        let sem = sem.clone();
        let mut start_rx = start_rx.clone();
        handles.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await;
            let opened = async {
                let (mut client, mut reader) =
                    open_session(&c2, c2.transport, i, nonce, sources.get(i), false, None).await?;
                client
                    .send(&[&stomp::subscribe(0, &format!("/topic/bench-{i}"))])
                    .await?;
                wait_frame(&mut client, &mut reader, b"RECEIPT").await?;
                Ok::<_, io::Error>((client, reader))
            }
            .await;
            drop(permit);
            let (mut client, mut reader) = match opened {
                Ok(x) => x,
                Err(e) => {
                    shared.fail(&e);
                    return;
                }
            };
            shared.ready.fetch_add(1, Ordering::Relaxed);
            if start_rx.wait_for(|s| *s).await.is_err() {
                return;
            }
            let prefix = c2
                .stomp
                .as_ref()
                .map_or("/app/bench", |s| s.destination.as_str());
            let destination = format!("{prefix}-{i}");
            let mut hist = Hist::default();
            let mut body = Vec::with_capacity(c2.size + 32);
            let mut frame = Vec::with_capacity(c2.size + 96);
            let mut seq = 0u64;
            while !shared.stop.load(Ordering::Relaxed) {
                seq += 1;
                payload(b'A', seq, c2.size, &mut body);
                frame.clear();
                stomp::send(&destination, &body, &mut frame);
                let sent_at = now_ns();
                if client.send(&[&frame]).await.is_err() {
                    shared.closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                let mut got = false;
                let mut error = None;
                while !got && error.is_none() {
                    let r = tokio::time::timeout(
                        Duration::from_secs(10),
                        client.recv(&mut |m: &[u8]| {
                            reader.feed(m, |f| match f.command {
                                b"MESSAGE" => got = true,
                                b"ERROR" => {
                                    error = Some(io::Error::other(format!(
                                        "STOMP ERROR: {} {}",
                                        f.header("message").unwrap_or(""),
                                        String::from_utf8_lossy(f.body)
                                    )))
                                }
                                _ => {}
                            })
                        }),
                    )
                    .await;
                    match r {
                        Ok(Ok(Recv::Alive)) => {}
                        Ok(Ok(Recv::Closed(code))) => {
                            error = Some(io::Error::other(format!("closed ({code})")))
                        }
                        Ok(Err(e)) => error = Some(e),
                        Err(_) => error = Some(io::Error::other("no answer within 10 s")),
                    }
                }
                if let Some(e) = error {
                    shared.fail(&e);
                    shared.closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                let done_at = now_ns();
                let (t0, t1) = (
                    window.0.load(Ordering::Relaxed),
                    window.1.load(Ordering::Relaxed),
                );
                if sent_at >= t0 && done_at <= t1 {
                    hist.record(done_at - sent_at);
                    rt.fetch_add(1, Ordering::Relaxed);
                }
            }
            lock(&shared.hist).merge(&hist);
            shared.finished.fetch_add(1, Ordering::Relaxed);
        }));
    }
    let sh = shared.clone();
    let total = c.clients;
    let rt = round_trips.clone();
    let prog = progress(format!("app {}", c.label), move || {
        format!(
            "open {}/{} failed {} round trips {}",
            sh.ready.load(Ordering::Relaxed),
            total,
            sh.failed.load(Ordering::Relaxed),
            rt.load(Ordering::Relaxed)
        )
    });
    let open_start = Instant::now();
    let deadline = Instant::now() + wire::CONNECT_TIMEOUT + Duration::from_secs(10);
    while shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < c.clients
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let establish = open_start.elapsed().as_secs_f64();
    let _ = start_tx.send(true);
    tokio::time::sleep(warmup).await;
    let (cpu0, _) = sample(&c.proc);
    let me0 = own_cpu();
    let w0 = Instant::now();
    window.0.store(now_ns(), Ordering::Relaxed);
    tokio::time::sleep(duration).await;
    window.1.store(now_ns(), Ordering::Relaxed);
    let wall = w0.elapsed().as_secs_f64();
    let (cpu1, rss) = sample(&c.proc);
    let me1 = own_cpu();
    shared.stop.store(true, Ordering::Relaxed);
    let ready = shared.ready.load(Ordering::Relaxed);
    let finish_deadline = Instant::now() + Duration::from_secs(12);
    while shared.finished.load(Ordering::Relaxed) + shared.closed.load(Ordering::Relaxed) < ready
        && Instant::now() < finish_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    prog.abort();
    abort_all(handles).await;
    let n = round_trips.load(Ordering::Relaxed);
    let hist = lock(&shared.hist).clone();
    let mut m = c.base("app-roundtrip");
    m.insert("ok".into(), json!(ready));
    m.insert(
        "failed".into(),
        json!(shared.failed.load(Ordering::Relaxed)),
    );
    m.insert(
        "closed_early".into(),
        json!(shared.closed.load(Ordering::Relaxed)),
    );
    m.insert("establish_s".into(), json!(establish));
    m.insert("duration_s".into(), json!(wall));
    m.insert("msgs".into(), json!(n));
    m.insert("msgs_per_s".into(), json!(n as f64 / wall));
    m.insert("latency_samples".into(), json!(hist.count()));
    m.insert("p50_us".into(), json!(hist.quantile(0.5) as f64 / 1e3));
    m.insert("p99_us".into(), json!(hist.quantile(0.99) as f64 / 1e3));
    m.insert("p999_us".into(), json!(hist.quantile(0.999) as f64 / 1e3));
    cpu_fields(&mut m, cpu0, cpu1, wall, n);
    client_cpu(&mut m, me0, me1, wall);
    if let Some(r) = rss {
        m.insert("server_rss_after".into(), json!(r));
    }
    if let Some(e) = shared.error() {
        m.insert("error".into(), json!(e));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_roundtrip() {
        let mut b = Vec::new();
        payload(b'M', 42, 100, &mut b);
        assert_eq!(b.len(), 100);
        let (k, s, _) = parse_payload(&b).unwrap();
        assert_eq!((k, s), (b'M', 42));
    }
}
