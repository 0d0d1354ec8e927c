//! `contention`: while one publisher fans out to C subscribers of `--destination`, a probe
//! client works on a destination of its own (SUBSCRIBE, SEND and wait for its MESSAGE, ACK,
//! UNSUBSCRIBE, each with a receipt); its round trips show how long broker operations that
//! have nothing to do with the fan-out wait behind it. Every loop is bounded by the run's
//! duration, and every wait by 10 s.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::client::{Client, Recv};
use super::scenarios::{
    Common, Sources, abort_all, client_cpu, cpu_fields, lock, nonce, open_session, own_cpu,
    payload, progress, sample,
};
use super::stats::{Hist, now_ns};
use super::stomp;

/// How many sessions may be opening at once.
const OPEN_CONCURRENCY: usize = 128;

/// The longest any one answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the probe measures, in the order of one round.
const OPS: [&str; 4] = ["subscribe", "send", "ack", "unsubscribe"];

/// Options of the scenario.
pub struct ContentionOpts {
    pub warmup: Duration,
    pub duration: Duration,
    /// Publishes per second to the crowded destination (each waits for its receipt).
    pub rate: f64,
}

#[derive(Default)]
struct Counters {
    ready: AtomicUsize,
    failed: AtomicUsize,
    delivered: AtomicU64,
    published: AtomicU64,
    stop: AtomicBool,
    /// Set while the probe's samples count (after the warm-up).
    measuring: AtomicBool,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Counters {
    fn fail(&self, e: &io::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        lock(&self.first_error).get_or_insert_with(|| e.to_string());
    }
}

/// Read frames until `done` says so; a STOMP ERROR, a close or 10 s of silence is an error.
async fn until(
    client: &mut Client,
    reader: &mut stomp::Reader,
    mut done: impl FnMut(&stomp::Frame<'_>) -> bool,
) -> io::Result<()> {
    let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
    loop {
        let mut finished = false;
        let mut error = None;
        let r = tokio::time::timeout_at(
            deadline,
            client.recv(&mut |m: &[u8]| {
                reader.feed(m, |f| {
                    if f.command == b"ERROR" {
                        error = Some(format!(
                            "STOMP ERROR: {}",
                            f.header("message").unwrap_or("")
                        ));
                    } else if done(f) {
                        finished = true;
                    }
                })
            }),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer within 10 s"))??;
        if let Some(e) = error {
            return Err(io::Error::other(e));
        }
        if finished {
            return Ok(());
        }
        if let Recv::Closed(code) = r {
            return Err(io::Error::other(format!("closed ({code})")));
        }
    }
}

/// A subscriber: reads and counts MESSAGE frames until the run stops.
async fn subscriber(
    c: Common,
    i: usize,
    nonce: u64,
    sources: Sources,
    k: Arc<Counters>,
    sem: Arc<Semaphore>,
) {
    let permit = sem.acquire_owned().await;
    let opened = open_session(&c, c.transport, i, nonce, sources.get(i), true, None).await;
    drop(permit);
    let (mut client, mut reader) = match opened {
        Ok(x) => x,
        Err(e) => return k.fail(&e),
    };
    k.ready.fetch_add(1, Ordering::Relaxed);
    while !k.stop.load(Ordering::Relaxed) {
        let mut got = 0;
        let r = tokio::time::timeout(
            Duration::from_millis(500),
            client.recv(&mut |m: &[u8]| {
                reader.feed(m, |f| {
                    if f.command == b"MESSAGE" {
                        got += 1;
                    }
                })
            }),
        )
        .await;
        k.delivered.fetch_add(got, Ordering::Relaxed);
        match r {
            Err(_) | Ok(Ok(Recv::Alive)) => {}
            Ok(Ok(Recv::Closed(_))) | Ok(Err(_)) => break,
        }
    }
}

/// The publisher: SEND with a receipt to the crowded destination, `rate` times a second.
async fn publisher(c: Common, nonce: u64, rate: f64, k: Arc<Counters>) -> io::Result<()> {
    let i = c.clients;
    let (mut client, mut reader) =
        open_session(&c, c.transport, i, nonce, None, false, None).await?;
    let destination = c
        .stomp
        .as_ref()
        .map_or("/topic/a", |s| s.destination.as_str())
        .to_owned();
    let period = Duration::from_secs_f64(1.0 / rate.clamp(0.1, 10_000.0));
    let mut next = tokio::time::Instant::now();
    let (mut body, mut frame) = (Vec::new(), Vec::new());
    let mut seq = 0u64;
    while !k.stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next).await;
        next += period;
        seq += 1;
        payload(b'P', seq, c.size, &mut body);
        frame.clear();
        stomp::send_with_receipt(&destination, &body, &format!("p{seq}"), &mut frame);
        client.send(&[&frame]).await?;
        until(&mut client, &mut reader, |f| f.command == b"RECEIPT").await?;
        k.published.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// The probe: one round of SUBSCRIBE, SEND (until its MESSAGE), ACK and UNSUBSCRIBE on its
/// own destination after another, each timed.
async fn probe(c: Common, nonce: u64, k: Arc<Counters>) -> io::Result<Vec<Hist>> {
    let i = c.clients + 1;
    let (mut client, mut reader) =
        open_session(&c, c.transport, i, nonce, None, false, None).await?;
    let destination = "/topic/contention-probe";
    let mut hists = vec![Hist::default(); OPS.len()];
    let mut round = 0u64;
    while !k.stop.load(Ordering::Relaxed) {
        round += 1;
        let mut took = [0u64; 4];
        let t = now_ns();
        let subscribe = format!(
            "SUBSCRIBE\nid:{round}\ndestination:{destination}\nack:client-individual\nreceipt:s{round}\n\n\0"
        );
        client.send(&[subscribe.as_bytes()]).await?;
        until(&mut client, &mut reader, |f| f.command == b"RECEIPT").await?;
        took[0] = now_ns() - t;

        let t = now_ns();
        let mut frame = Vec::new();
        stomp::send(destination, b"probe", &mut frame);
        client.send(&[&frame]).await?;
        let mut ack = String::new();
        until(&mut client, &mut reader, |f| {
            if f.command == b"MESSAGE" {
                ack = f.header("ack").unwrap_or("").to_owned();
                return true;
            }
            false
        })
        .await?;
        took[1] = now_ns() - t;

        let t = now_ns();
        let ack_frame = format!("ACK\nid:{ack}\nreceipt:a{round}\n\n\0");
        client.send(&[ack_frame.as_bytes()]).await?;
        until(&mut client, &mut reader, |f| f.command == b"RECEIPT").await?;
        took[2] = now_ns() - t;

        let t = now_ns();
        let unsubscribe = format!("UNSUBSCRIBE\nid:{round}\nreceipt:u{round}\n\n\0");
        client.send(&[unsubscribe.as_bytes()]).await?;
        until(&mut client, &mut reader, |f| f.command == b"RECEIPT").await?;
        took[3] = now_ns() - t;

        if k.measuring.load(Ordering::Relaxed) {
            for (hist, ns) in hists.iter_mut().zip(took) {
                hist.record(ns);
            }
        }
    }
    Ok(hists)
}

pub async fn contention(c: Common, o: ContentionOpts) -> Value {
    let nonce = nonce();
    let sources = Sources::new(c.sources(1), nonce);
    let k = Arc::new(Counters::default());
    let sem = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut handles = Vec::with_capacity(c.clients + 1);
    for i in 0..c.clients {
        handles.push(tokio::spawn(subscriber(
            c.clone(),
            i,
            nonce,
            sources,
            k.clone(),
            sem.clone(),
        )));
    }
    let kp = k.clone();
    let total = c.clients;
    let prog = progress(format!("contention {}", c.label), move || {
        format!(
            "subscribers {}/{} failed {} published {} delivered {}",
            kp.ready.load(Ordering::Relaxed),
            total,
            kp.failed.load(Ordering::Relaxed),
            kp.published.load(Ordering::Relaxed),
            kp.delivered.load(Ordering::Relaxed)
        )
    });
    let open_start = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while k.ready.load(Ordering::Relaxed) + k.failed.load(Ordering::Relaxed) < c.clients
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let establish = open_start.elapsed().as_secs_f64();
    let publishing = tokio::spawn(publisher(c.clone(), nonce, o.rate, k.clone()));
    let probing = tokio::spawn(probe(c.clone(), nonce, k.clone()));
    tokio::time::sleep(o.warmup).await;
    let (cpu0, _) = sample(&c.proc);
    let me0 = own_cpu();
    let (published0, delivered0) = (
        k.published.load(Ordering::Relaxed),
        k.delivered.load(Ordering::Relaxed),
    );
    let w0 = Instant::now();
    k.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(o.duration).await;
    k.measuring.store(false, Ordering::Relaxed);
    let wall = w0.elapsed().as_secs_f64();
    let (cpu1, rss) = sample(&c.proc);
    let me1 = own_cpu();
    let published = k.published.load(Ordering::Relaxed) - published0;
    let delivered = k.delivered.load(Ordering::Relaxed) - delivered0;
    k.stop.store(true, Ordering::Relaxed);
    let probe_result = tokio::time::timeout(ANSWER_TIMEOUT * 5, probing).await;
    let publish_result = tokio::time::timeout(ANSWER_TIMEOUT * 2, publishing).await;
    prog.abort();
    abort_all(handles).await;

    let mut m = c.base("contention");
    m.insert("ok".into(), json!(k.ready.load(Ordering::Relaxed)));
    m.insert("failed".into(), json!(k.failed.load(Ordering::Relaxed)));
    m.insert("establish_s".into(), json!(establish));
    m.insert("duration_s".into(), json!(wall));
    m.insert("publish_rate".into(), json!(o.rate));
    m.insert("published".into(), json!(published));
    m.insert("msgs".into(), json!(delivered));
    m.insert("msgs_per_s".into(), json!(delivered as f64 / wall));
    match probe_result {
        Ok(Ok(Ok(hists))) => {
            let mut all = Hist::default();
            for (op, hist) in OPS.iter().zip(&hists) {
                all.merge(hist);
                m.insert(
                    format!("{op}_p50_us"),
                    json!(hist.quantile(0.5) as f64 / 1e3),
                );
                m.insert(
                    format!("{op}_p99_us"),
                    json!(hist.quantile(0.99) as f64 / 1e3),
                );
            }
            m.insert("latency_samples".into(), json!(all.count()));
            m.insert("p50_us".into(), json!(all.quantile(0.5) as f64 / 1e3));
            m.insert("p99_us".into(), json!(all.quantile(0.99) as f64 / 1e3));
            m.insert("p999_us".into(), json!(all.quantile(0.999) as f64 / 1e3));
            m.insert("max_us".into(), json!(all.quantile(1.0) as f64 / 1e3));
        }
        Ok(Ok(Err(e))) => {
            m.insert("error".into(), json!(format!("probe: {e}")));
        }
        _ => {
            m.insert("error".into(), json!("probe did not finish"));
        }
    }
    if let Ok(Ok(Err(e))) = publish_result {
        m.entry("error").or_insert(json!(format!("publisher: {e}")));
    }
    if let Some(e) = lock(&k.first_error).clone() {
        m.entry("error").or_insert(json!(e));
    }
    cpu_fields(&mut m, cpu0, cpu1, wall, delivered);
    client_cpu(&mut m, me0, me1, wall);
    if let Some(r) = rss {
        m.insert("server_rss_after".into(), json!(r));
    }
    Value::Object(m)
}
