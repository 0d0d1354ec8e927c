//! The embedded broker alone, without sockets: `cargo bench --bench broker`.
//!
//! 1. Threads: 1, 2, 4 and 8 threads, each publishing 100 B messages to a destination of its
//!    own with 1,000 auto-ack subscribers; deliveries per second for each thread count. The
//!    subscribers' carriers count and drop, so what is measured is the broker: lookup,
//!    per-delivery encoding and queueing. Publishes to distinct destinations share no lock
//!    during their fan-out, so the curve rises with the cores the machine has.
//! 2. Copies: bytes allocated per delivery of one 64 KiB message to 1,000 subscribers, counted
//!    by a counting global allocator (the carrier's own framing is not included).
//!
//! 3. Patterns: publishes per second to one destination with one subscriber while 10,000
//!    pattern subscriptions under other prefixes exist (`/user.N/**`, one session each) and
//!    ten that match (`/topic/**`): what a publish pays for pattern subscriptions that
//!    cannot match it.
//!
//! Every loop is bounded in count. Output: one line per measurement and a JSON line at the
//! end (`BROKER_BENCH_QUICK=1` for a short run).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use sockjs_gateway::session::{
    OutMessage, SendError, SessionInfo, SessionSink, TransportKind, new_session, next_log_id,
};
use sockjs_gateway::stomp::broker::{AckMode, SubscribeRequest};
use sockjs_gateway::stomp::frame::Version;
use sockjs_gateway::stomp::outbound::{Carriage, Outbound};
use sockjs_gateway::stomp::{Broker, StompConfig, StompStats};

/// Counts the bytes every allocation asks for.
struct Counting;

static ALLOCATED: AtomicU64 = AtomicU64::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Counting is on only while copies are measured: shared counters would make the threads
/// curve measure the allocator's contention.
static COUNTING: AtomicBool = AtomicBool::new(false);

fn count(bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATED.fetch_add(bytes as u64, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's layout is passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: as for `alloc`; `ptr` and `layout` are the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A carrier that counts what it is given and drops it.
#[derive(Default)]
struct CountingSink {
    messages: AtomicU64,
}

impl SessionSink for CountingSink {
    fn send(&self, _message: OutMessage) -> Result<(), SendError> {
        self.messages.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn close(&self, _code: u16, _reason: &str) {}
    fn is_closed(&self) -> bool {
        false
    }
    fn queued_bytes(&self) -> usize {
        0
    }
}

fn info() -> SessionInfo {
    SessionInfo {
        log_id: next_log_id(),
        transport: TransportKind::Websocket,
        remote_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        headers: Vec::new(),
        url: "/".into(),
        principal: None,
        subprotocol: None,
    }
}

/// A broker with `destinations` destinations of `subscribers` auto-ack subscribers each, on a
/// carriage of `carriage`. Returns the broker and every sink.
fn broker(
    destinations: usize,
    subscribers: usize,
    carriage: Carriage,
) -> (Arc<Broker>, Vec<Arc<CountingSink>>) {
    let stats = Arc::new(StompStats::default());
    let broker = Arc::new(Broker::new(&StompConfig::default(), stats.clone()));
    let mut sinks = Vec::new();
    for d in 0..destinations {
        for s in 0..subscribers {
            let session = format!("s{d}-{s}");
            sinks.push(subscriber(
                &broker,
                &stats,
                carriage,
                &session,
                format!("/topic/t{d}"),
            ));
        }
    }
    (broker, sinks)
}

/// A session `session` with one auto-ack subscription to `target` (a destination or a
/// pattern); returns its sink.
fn subscriber(
    broker: &Broker,
    stats: &Arc<StompStats>,
    carriage: Carriage,
    session: &str,
    target: String,
) -> Arc<CountingSink> {
    let sink = Arc::new(CountingSink::default());
    let (_inbound, handle) = new_session(info(), sink.clone());
    let out = Arc::new(Outbound::new(
        handle.sender().clone(),
        Version::V1_2,
        carriage,
        stats.clone(),
    ));
    broker.register_session(session, out, None);
    let request = SubscribeRequest {
        id: "0".into(),
        target,
        shown: None,
        ack: AckMode::Auto,
        prefetch: None,
        selector: None,
        headers: Vec::new(),
    };
    if let Err(e) = broker.subscribe(session, request) {
        eprintln!("subscribe failed: {e}");
        std::process::exit(1);
    }
    sink
}

fn delivered(sinks: &[Arc<CountingSink>]) -> u64 {
    sinks
        .iter()
        .map(|s| s.messages.load(Ordering::Relaxed))
        .sum()
}

/// Deliveries per second with `threads` publishers on destinations of their own.
fn threads_run(threads: usize, subscribers: usize, publishes: usize) -> f64 {
    let (broker, sinks) = broker(threads, subscribers, Carriage::TextAndBinary);
    let body = Bytes::from(vec![b'x'; 100]);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let broker = &broker;
            let body = body.clone();
            scope.spawn(move || {
                let destination = format!("/topic/t{t}");
                for _ in 0..publishes {
                    let message = broker.message(&[], body.clone());
                    broker.publish(&destination, message);
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let n = delivered(&sinks);
    let expected = (threads * subscribers * publishes) as u64;
    if n != expected {
        eprintln!("delivered {n}, expected {expected}");
        std::process::exit(1);
    }
    n as f64 / secs
}

/// Bytes and allocations per delivery of one `size`-byte message to `subscribers` sessions.
fn copies_run(subscribers: usize, size: usize, carriage: Carriage) -> (f64, f64) {
    let (broker, sinks) = broker(1, subscribers, carriage);
    let body = Bytes::from(vec![b'x'; size]);
    let message = broker.message(&[], body);
    COUNTING.store(true, Ordering::Relaxed);
    let (bytes0, count0) = (
        ALLOCATED.load(Ordering::Relaxed),
        ALLOCATIONS.load(Ordering::Relaxed),
    );
    broker.publish("/topic/t0", message);
    let (bytes1, count1) = (
        ALLOCATED.load(Ordering::Relaxed),
        ALLOCATIONS.load(Ordering::Relaxed),
    );
    COUNTING.store(false, Ordering::Relaxed);
    let n = delivered(&sinks) as f64;
    ((bytes1 - bytes0) as f64 / n, (count1 - count0) as f64 / n)
}

/// Publishes per second to `/topic/t0` with `unrelated` pattern subscriptions elsewhere and
/// ten matching ones.
fn patterns_run(unrelated: usize, publishes: usize) -> f64 {
    let (broker, sinks) = broker(1, 1, Carriage::TextAndBinary);
    let stats = Arc::new(StompStats::default());
    let mut matching = Vec::new();
    for i in 0..unrelated + 10 {
        let target = match i < unrelated {
            true => format!("/user.{i}/**"),
            false => "/topic/**".to_owned(),
        };
        let sink = subscriber(
            &broker,
            &stats,
            Carriage::TextAndBinary,
            &format!("p{i}"),
            target,
        );
        if i >= unrelated {
            matching.push(sink);
        }
    }
    let body = Bytes::from(vec![b'x'; 100]);
    let start = Instant::now();
    for _ in 0..publishes {
        broker.publish("/topic/t0", broker.message(&[], body.clone()));
    }
    let secs = start.elapsed().as_secs_f64();
    let expected = publishes as u64;
    if delivered(&sinks) != expected || delivered(&matching) != expected * 10 {
        eprintln!("pattern deliveries are missing");
        std::process::exit(1);
    }
    publishes as f64 / secs
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: keep that quick.
    let quick = std::env::var_os("BROKER_BENCH_QUICK").is_some()
        || !std::env::args().any(|a| a == "--bench");
    let (subscribers, publishes, repeats) = if quick { (200, 50, 1) } else { (1000, 400, 3) };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "broker bench: {cores} cores, {subscribers} subscribers per destination, {publishes} publishes per thread"
    );
    let mut curve = Vec::new();
    for threads in [1, 2, 4, 8] {
        let mut runs: Vec<f64> = (0..repeats)
            .map(|_| threads_run(threads, subscribers, publishes))
            .collect();
        runs.sort_by(f64::total_cmp);
        let median = runs[runs.len() / 2];
        let base = curve.first().map_or(median, |(_, v)| *v);
        println!(
            "threads {threads}: {:>12.0} deliveries/s ({:.2}x one thread)",
            median,
            median / base
        );
        curve.push((threads, median));
    }
    let (text_bytes, text_allocs) = copies_run(subscribers, 64 * 1024, Carriage::TextOnly);
    let (raw_bytes, raw_allocs) = copies_run(subscribers, 64 * 1024, Carriage::TextAndBinary);
    println!(
        "64 KiB MESSAGE: {text_bytes:.0} B in {text_allocs:.1} allocations per delivery to SockJS (text-only) sessions, {raw_bytes:.0} B in {raw_allocs:.1} to raw WebSocket/TCP ones"
    );
    let pattern_publishes = if quick { 200 } else { 5_000 };
    let mut runs: Vec<f64> = (0..repeats)
        .map(|_| patterns_run(10_000, pattern_publishes))
        .collect();
    runs.sort_by(f64::total_cmp);
    let patterns = runs[runs.len() / 2];
    println!(
        "patterns: {patterns:.0} publishes/s to one destination beside 10,000 pattern subscriptions that cannot match it (and 10 that do)"
    );
    let curve: Vec<String> = curve
        .iter()
        .map(|(t, v)| format!("\"{t}\":{v:.0}"))
        .collect();
    println!(
        "{{\"cores\":{cores},\"deliveries_per_s\":{{{}}},\"alloc_bytes_per_delivery_64k_sockjs\":{text_bytes:.0},\"alloc_bytes_per_delivery_64k_raw\":{raw_bytes:.0},\"publishes_per_s_beside_10k_patterns\":{patterns:.0}}}",
        curve.join(",")
    );
}
