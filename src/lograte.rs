//! Log lines an attacker can cause, bounded: each reason gets at most `LINES_PER_INTERVAL`
//! lines of its own per interval, one per source; the rest are counted and summarised at
//! the end of the interval, one line per source that was logged (with its count) and one
//! for all other sources. A flood of failed TLS handshakes from one peer is then two
//! lines a second, not one line per handshake.
//!
//! Process-wide, as the log itself is: every edge in the process writes to the one
//! subscriber. The counts are exposed as `sipedge_suppressed_log_lines_total{reason}`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An event logged once per occurrence that a peer can repeat at will.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Noisy {
    TlsHandshake,
    ConnectionRefused,
    HeaderTimeout,
    FramingFailed,
    RequestRefused,
    Unparseable,
    ResponseDropped,
    AckDropped,
}

/// Every reason, in the order of the counters.
pub const NOISY: [Noisy; 8] = [
    Noisy::TlsHandshake,
    Noisy::ConnectionRefused,
    Noisy::HeaderTimeout,
    Noisy::FramingFailed,
    Noisy::RequestRefused,
    Noisy::Unparseable,
    Noisy::ResponseDropped,
    Noisy::AckDropped,
];

impl Noisy {
    /// The `reason` label of the metric and of the summary lines.
    pub fn name(self) -> &'static str {
        match self {
            Noisy::TlsHandshake => "tls-handshake-failed",
            Noisy::ConnectionRefused => "connection-refused",
            Noisy::HeaderTimeout => "header-timeout",
            Noisy::FramingFailed => "framing-failed",
            Noisy::RequestRefused => "request-refused",
            Noisy::Unparseable => "unparseable",
            Noisy::ResponseDropped => "response-dropped",
            Noisy::AckDropped => "ack-dropped",
        }
    }

    /// Its lines are warnings (the summary keeps their level).
    fn is_warning(self) -> bool {
        matches!(self, Noisy::TlsHandshake | Noisy::ConnectionRefused)
    }
}

/// How long one interval lasts.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Most lines of its own a reason gets in one interval (each from a different source).
pub const LINES_PER_INTERVAL: usize = 5;
/// The most lines one reason writes in an interval, summaries included: its own lines,
/// one summary per source logged, and one for the other sources.
pub const MAX_LINES_PER_INTERVAL: usize = 2 * LINES_PER_INTERVAL + 1;

#[derive(Default)]
struct Interval {
    /// Lines of its own each reason wrote.
    logged: [usize; NOISY.len()],
    /// Lines suppressed, by reason and source, for the sources that got a line.
    by_source: HashMap<(Noisy, IpAddr), u64>,
    /// Lines suppressed from the sources that got none (the reason's lines were used up).
    others: [u64; NOISY.len()],
}

/// The gate every noisy line passes.
pub struct LogGate {
    current: Mutex<Option<(Instant, Interval)>>,
    suppressed: [AtomicU64; NOISY.len()],
}

/// The process's gate.
pub static LOGS: LogGate = LogGate::new();

impl Default for LogGate {
    fn default() -> Self {
        LogGate::new()
    }
}

impl LogGate {
    pub const fn new() -> Self {
        LogGate {
            current: Mutex::new(None),
            suppressed: [const { AtomicU64::new(0) }; NOISY.len()],
        }
    }

    /// Whether this occurrence gets its own line; when not, it is counted (and summarised
    /// when the interval ends).
    pub fn admit(&self, reason: Noisy, source: IpAddr) -> bool {
        let now = Instant::now();
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current
            .as_ref()
            .is_some_and(|(began, _)| now.duration_since(*began) >= INTERVAL)
        {
            if let Some((_, ended)) = current.take() {
                summarise(ended);
            }
        }
        let (_, iv) = current.get_or_insert_with(|| (now, Interval::default()));
        let r = reason as usize;
        if let Some(n) = iv.by_source.get_mut(&(reason, source)) {
            *n += 1;
        } else if iv.logged[r] < LINES_PER_INTERVAL {
            iv.logged[r] += 1;
            iv.by_source.insert((reason, source), 0);
            return true;
        } else {
            iv.others[r] += 1;
        }
        self.suppressed[r].fetch_add(1, Relaxed);
        false
    }

    /// Writes the summaries of an interval that has ended (the edge's ticker calls this,
    /// so the last interval of a flood is summarised even when nothing follows it).
    pub fn flush(&self, now: Instant) {
        let Ok(mut current) = self.current.try_lock() else {
            return;
        };
        if current
            .as_ref()
            .is_some_and(|(began, _)| now.saturating_duration_since(*began) >= INTERVAL)
        {
            if let Some((_, ended)) = current.take() {
                summarise(ended);
            }
        }
    }

    /// Lines suppressed so far for `reason`.
    pub fn suppressed(&self, reason: Noisy) -> u64 {
        self.suppressed[reason as usize].load(Relaxed)
    }
}

fn summarise(iv: Interval) {
    let interval_ms = INTERVAL.as_millis() as u64;
    for ((reason, source), n) in iv.by_source {
        if n > 0 {
            summary(reason, Some(source), n, interval_ms);
        }
    }
    for (reason, n) in NOISY.iter().zip(iv.others) {
        if n > 0 {
            summary(*reason, None, n, interval_ms);
        }
    }
}

fn summary(reason: Noisy, source: Option<IpAddr>, suppressed: u64, interval_ms: u64) {
    let peer = source.map_or_else(|| "others".to_string(), |ip| ip.to_string());
    let warning = reason.is_warning();
    let reason = reason.name();
    if warning {
        tracing::warn!(
            reason,
            peer,
            suppressed,
            interval_ms,
            "repeated log lines suppressed"
        );
    } else {
        tracing::info!(
            reason,
            peer,
            suppressed,
            interval_ms,
            "repeated log lines suppressed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_and_a_few_sources_per_interval_the_rest_counted() {
        let gate = LogGate::new();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(gate.admit(Noisy::TlsHandshake, a));
        for _ in 0..1000 {
            assert!(!gate.admit(Noisy::TlsHandshake, a));
        }
        assert!(
            gate.admit(Noisy::RequestRefused, a),
            "another reason has its own lines"
        );
        let mut admitted = 1;
        for i in 2..=200u8 {
            let ip = IpAddr::from([192, 0, 2, i]);
            admitted += usize::from(gate.admit(Noisy::TlsHandshake, ip));
        }
        assert_eq!(admitted, LINES_PER_INTERVAL);
        assert_eq!(
            gate.suppressed(Noisy::TlsHandshake),
            1000 + 199 - (LINES_PER_INTERVAL as u64 - 1)
        );
        assert_eq!(gate.suppressed(Noisy::RequestRefused), 0);
    }

    #[test]
    fn a_new_interval_gives_each_source_a_line_again() {
        let gate = LogGate::new();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(gate.admit(Noisy::HeaderTimeout, a));
        assert!(!gate.admit(Noisy::HeaderTimeout, a));
        gate.flush(Instant::now() + INTERVAL);
        assert!(gate.admit(Noisy::HeaderTimeout, a));
    }
}
