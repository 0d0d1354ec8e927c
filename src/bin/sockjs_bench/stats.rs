//! Measurement helpers: a process clock, a log-linear latency histogram, and server CPU and
//! RSS read from `/proc/PID`.

use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds since this process first asked; the timestamp carried in payloads.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Sub-buckets per power of two (1.6 % precision).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (SUB as usize) * 60;

/// Latencies in nanoseconds.
#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let shift = e - SUB_BITS;
    let mant = v >> shift;
    ((shift as u64) * SUB + mant).min(BUCKETS as u64 - 1) as usize
}

fn lower(idx: usize) -> u64 {
    let idx = idx as u64;
    if idx < 2 * SUB {
        return idx;
    }
    let shift = idx / SUB - 1;
    let mant = idx % SUB + SUB;
    mant << shift
}

impl Hist {
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), as the middle of its bucket.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let target = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                let lo = lower(i);
                let hi = lower(i + 1);
                return ((lo + hi) / 2).min(self.max);
            }
        }
        self.max
    }
}

/// A server process to observe.
#[derive(Clone, Debug)]
pub struct Proc {
    pids: Vec<u32>,
}

impl Proc {
    pub fn new(pids: Vec<u32>) -> Self {
        Proc { pids }
    }

    /// User + system CPU seconds of every thread of the processes.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let mut ticks = 0u64;
        for pid in &self.pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = after.split_whitespace().collect();
            // Fields 14 and 15 of stat(5); `after` starts at field 3.
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            ticks += utime + stime;
        }
        // USER_HZ is 100 on Linux for every architecture's /proc ABI.
        Some(ticks as f64 / 100.0)
    }

    /// Resident set size in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let mut total = 0;
        for pid in &self.pids {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            total += kb * 1024;
        }
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            100,
            127,
            128,
            129,
            1000,
            65_000,
            1_000_000,
            123_456_789,
        ] {
            let i = index(v);
            assert!(i >= last);
            last = i;
            let lo = lower(i);
            assert!(lo <= v && v < lower(i + 1), "{v}: {lo}..{}", lower(i + 1));
        }
        let mut h = Hist::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.02, "{p50}");
    }
}
