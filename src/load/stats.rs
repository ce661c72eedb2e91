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

    /// Whether any transaction got an answer (so its latency means something).
    pub fn answered(&self) -> bool {
        !self.latency.is_empty()
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
    /// `rate` (open loop), `concurrency` (closed loop) or `concurrency-capped` (both).
    pub mode: String,
    /// Offered transactions per second (open loop), the cap of a capped closed loop, else 0.
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
    /// Latency of the answered transactions; `None` (JSON null) when none was answered.
    pub latency_ms: Option<Latency>,
    pub per_second: Vec<Second>,
}

impl Summary {
    /// One `key=value` line, like the harness's RESULT lines.
    pub fn line(&self) -> String {
        // Nothing answered has no latency: "n/a", not a 0 that reads as instant.
        let ms = |f: fn(&Latency) -> f64| match &self.latency_ms {
            Some(l) => format!("{:.3}", f(l)),
            None => "n/a".to_string(),
        };
        format!(
            "RESULT transport={} scenario={} rate_target={} sent={} ok={} failed={} timeouts={} retrans={} achieved_mps={:.0} p50_ms={} p90_ms={} p99_ms={} p999_ms={} max_ms={} errors={}",
            self.transport,
            self.scenario,
            self.rate,
            self.sent,
            self.ok,
            self.failed,
            self.timeouts,
            self.retransmissions,
            self.achieved_rate,
            ms(|l| l.p50),
            ms(|l| l.p90),
            ms(|l| l.p99),
            ms(|l| l.p99_9),
            ms(|l| l.max),
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

    #[test]
    fn a_run_with_no_answer_prints_no_latency() {
        let summary = Summary {
            target: "127.0.0.1:5060".into(),
            transport: "udp".into(),
            scenario: "message".into(),
            mode: "rate".into(),
            rate: 10.0,
            concurrency: 0,
            connections: 1,
            duration_s: 1.0,
            sent: 10,
            ok: 0,
            failed: 10,
            timeouts: 10,
            errors: BTreeMap::new(),
            retransmissions: 0,
            achieved_rate: 0.0,
            latency_ms: None,
            per_second: Vec::new(),
        };
        let line = summary.line();
        assert!(
            line.contains(" p50_ms=n/a p90_ms=n/a p99_ms=n/a p999_ms=n/a max_ms=n/a "),
            "{line}"
        );
    }
}
