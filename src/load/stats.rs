//! Counting what happened: an HDR latency histogram and counters per connection, merged
//! once a second into the progress line and the per-second series, and at the end into
//! the summary.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, up to a minute (beyond the transaction timeout).
const MAX_LATENCY_US: u64 = 60_000_000;

/// Counters and latencies of one interval (or of the whole run once merged).
#[derive(Debug, Clone)]
pub struct Recorder {
    pub sent: u64,
    pub ok: u64,
    pub timeouts: u64,
    pub retransmissions: u64,
    /// Final non-2xx answers by status code.
    pub errors: BTreeMap<u16, u64>,
    pub latency: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            sent: 0,
            ok: 0,
            timeouts: 0,
            retransmissions: 0,
            errors: BTreeMap::new(),
            // 3 significant digits is HdrHistogram's usual precision: 0.1 % error.
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
        }
    }
}

impl Recorder {
    pub fn record_latency(&mut self, d: std::time::Duration) {
        let us = (d.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        // The value is clamped into the histogram's range, so this cannot fail.
        let _ = self.latency.record(us);
    }

    pub fn error(&mut self, status: u16) {
        *self.errors.entry(status).or_default() += 1;
    }

    pub fn failed(&self) -> u64 {
        self.timeouts + self.errors.values().sum::<u64>()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Recorder) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.timeouts += other.timeouts;
        self.retransmissions += other.retransmissions;
        for (k, v) in &other.errors {
            *self.errors.entry(*k).or_default() += v;
        }
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
    }

    pub fn latency_ms(&self) -> Latency {
        let h = &self.latency;
        let q = |p: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(p) as f64 / 1000.0
            }
        };
        Latency {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p99_9: q(0.999),
            max: if h.is_empty() {
                0.0
            } else {
                h.max() as f64 / 1000.0
            },
            mean: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

/// One second of the run, for the chart.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Second {
    /// Seconds since the start.
    pub t: f64,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub p99_ms: f64,
}

/// The machine-readable result of one run (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub target: String,
    pub transport: String,
    pub scenario: String,
    /// `rate` (open loop) or `concurrency` (closed loop).
    pub mode: String,
    /// Offered transactions per second (open loop), 0 in closed loop.
    pub rate: f64,
    pub concurrency: usize,
    pub connections: usize,
    pub duration_s: f64,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub timeouts: u64,
    /// Final non-2xx answers by status code.
    pub errors: BTreeMap<String, u64>,
    pub retransmissions: u64,
    /// Transactions answered OK per second of sending time.
    pub achieved_rate: f64,
    pub latency_ms: Latency,
    pub per_second: Vec<Second>,
}

impl Summary {
    /// One `key=value` line, like the harness's RESULT lines.
    pub fn line(&self) -> String {
        let l = &self.latency_ms;
        format!(
            "RESULT transport={} scenario={} rate_target={} sent={} ok={} failed={} timeouts={} retrans={} achieved_mps={:.0} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3} errors={}",
            self.transport,
            self.scenario,
            self.rate,
            self.sent,
            self.ok,
            self.failed,
            self.timeouts,
            self.retransmissions,
            self.achieved_rate,
            l.p50,
            l.p90,
            l.p99,
            l.p99_9,
            l.max,
            self.errors
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn merge_adds_counts_and_latencies() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for ms in 1..=100 {
            a.record_latency(Duration::from_millis(ms));
        }
        b.record_latency(Duration::from_secs(2));
        b.error(486);
        b.error(486);
        b.timeouts = 1;
        a.merge(&b);
        let l = a.latency_ms();
        assert!((l.p50 - 51.0).abs() < 0.1, "{l:?}");
        assert!((l.max - 2000.0).abs() < 2.0, "{l:?}");
        assert_eq!(a.failed(), 3);
        assert_eq!(a.errors[&486], 2);
    }
}
