//! What the edge records of the messages it handles: a pcap file, a HEPv3 stream, the TLS
//! key log, and a ring of recent messages per Call-ID that `sipedge admin trace` draws as a
//! ladder.
//!
//! Transports hand each message to a [`Tap`] (one branch on an `Option` when there is
//! none); the tap only clones the bytes' handle into a bounded channel. One writer thread
//! parses the Call-ID, writes pcap, sends HEP and fills the ring, so no file or socket write
//! ever waits on the per-message path. When the channel is full the message is counted as
//! dropped (`sipedge_trace_dropped_total`) rather than waited for.

pub mod hep;
pub mod keylog;
pub mod ladder;
pub mod pcap;
pub mod ring;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use crate::config::TraceSettings;
use crate::peer::{Interface, Transport};

pub use ring::Ring;

/// Messages waiting for the writer thread before new ones are dropped: a slow disk costs
/// captured messages, never latency.
pub const QUEUE: usize = 8192;

/// Bytes of messages waiting for the writer before new ones are dropped: what the queue
/// holds alive, whatever arrives (60 kB datagrams of garbage too).
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// How long the writer sleeps when the queue is empty: how late a message may reach the
/// file, the collector or the ring.
const IDLE_NAP: std::time::Duration = std::time::Duration::from_millis(10);

/// Whether the edge received or sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Received,
    Sent,
}

/// One message as it crossed one of the edge's interfaces.
#[derive(Debug, Clone)]
pub struct Captured {
    pub at: SystemTime,
    pub direction: Direction,
    pub interface: Interface,
    pub transport: Transport,
    /// The edge's own address of the socket or connection.
    pub local: SocketAddr,
    /// The other end.
    pub remote: SocketAddr,
    pub bytes: Bytes,
}

impl Captured {
    /// Source and destination as they were on the wire.
    pub fn ends(&self) -> (SocketAddr, SocketAddr) {
        match self.direction {
            Direction::Received => (self.remote, self.local),
            Direction::Sent => (self.local, self.remote),
        }
    }
}

enum Op {
    Message(Captured),
    /// Answered once everything queued before it is written.
    Flush(SyncSender<()>),
}

/// The per-edge recorder the transports write to.
pub struct Tap {
    tx: SyncSender<Op>,
    dropped: AtomicU64,
    /// Bytes queued for the writer (`QUEUE_BYTES`).
    queued: Arc<AtomicUsize>,
    ring: Arc<Mutex<Ring>>,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl Tap {
    /// The tap `settings` ask for, its writer thread started; `None` when nothing is
    /// recorded (the transports then pay one branch per message).
    pub fn start(settings: &TraceSettings, node_name: &str) -> std::io::Result<Option<Arc<Tap>>> {
        if !settings.records() {
            return Ok(None);
        }
        let pcap = match &settings.pcap {
            Some(path) => Some(pcap::PcapFile::create(path, settings.pcap_max_bytes)?),
            None => None,
        };
        let hep = match settings.hep {
            Some(to) => Some(hep::HepSender::new(
                to,
                settings.hep_node_id,
                settings.hep_node_name.as_deref().unwrap_or(node_name),
                settings.hep_password.as_deref(),
            )?),
            None => None,
        };
        let ring = Arc::new(Mutex::new(Ring::new(settings.ring_bytes)));
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            pcap,
            hep,
            ring: ring.clone(),
            queued: queued.clone(),
        };
        std::thread::Builder::new()
            .name("sipedge-trace".into())
            .spawn(move || writer.run(rx))?;
        Ok(Some(Arc::new(Tap {
            tx,
            dropped: AtomicU64::new(0),
            queued,
            ring,
        })))
    }

    /// Queues one message for the writer; keep-alives (CRLF) are not messages.
    pub fn capture(
        &self,
        direction: Direction,
        interface: Interface,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &Bytes,
    ) {
        if bytes.first().is_none_or(|b| *b == b'\r' || *b == b'\n') {
            return;
        }
        let len = bytes.len();
        if self.queued.fetch_add(len, Ordering::AcqRel) + len > QUEUE_BYTES {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let c = Captured {
            at: SystemTime::now(),
            direction,
            interface,
            transport,
            local,
            remote,
            bytes: bytes.clone(),
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Op::Message(c))
        {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Messages not recorded because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until everything captured so far is written and in the ring (tests, and
    /// `/trace` so that a ladder shows the messages of a moment ago).
    pub fn flush(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        if self.tx.send(Op::Flush(ack)).is_ok() {
            let _ = done.recv();
        }
    }

    /// The kept messages of one call, oldest first.
    pub fn call(&self, call_id: &str) -> Vec<Captured> {
        self.flush();
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.call(call_id)
    }
}

struct Writer {
    pcap: Option<pcap::PcapFile>,
    hep: Option<hep::HepSender>,
    ring: Arc<Mutex<Ring>>,
    queued: Arc<AtomicUsize>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Op>) {
        loop {
            match rx.try_recv() {
                Ok(Op::Message(c)) => {
                    let len = c.bytes.len();
                    self.write(c);
                    self.queued.fetch_sub(len, Ordering::AcqRel);
                }
                Ok(Op::Flush(ack)) => {
                    self.flush();
                    let _ = ack.send(());
                }
                Err(TryRecvError::Empty) => {
                    // Idle: what was written reaches the file, then the thread naps rather
                    // than blocking on the channel, so that a transport's send never has
                    // to wake it (a futex call per message, measured at several µs).
                    self.flush();
                    std::thread::sleep(IDLE_NAP);
                }
                Err(TryRecvError::Disconnected) => break,
            }
        }
        self.flush();
    }

    fn write(&mut self, c: Captured) {
        let call_id = call_id(&c.bytes);
        if let Some(p) = &mut self.pcap {
            if let Err(e) = p.write(&c) {
                tracing::warn!(error = %e, "pcap write failed; no more packets are written");
                self.pcap = None;
            }
        }
        if let Some(h) = &self.hep {
            h.send(&c, call_id);
        }
        if let Some(id) = call_id {
            let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            ring.push(id, &c);
        }
    }

    fn flush(&mut self) {
        if let Some(p) = &mut self.pcap {
            if let Err(e) = p.flush() {
                tracing::warn!(error = %e, "pcap flush failed; no more packets are written");
                self.pcap = None;
            }
        }
    }
}

/// The Call-ID of a message (`Call-ID:` or the compact `i:`), read from its header lines.
pub fn call_id(msg: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(msg.get(..header_end(msg))?).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.trim_end();
        (name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i"))
            .then(|| value.trim())
            .filter(|v| !v.is_empty())
    })
}

/// Where the header ends (the blank line), or the whole message.
fn header_end(msg: &[u8]) -> usize {
    memchr::memmem::find(msg, b"\r\n\r\n").unwrap_or(msg.len())
}

/// The first line of a message (request line or status line).
pub fn first_line(msg: &[u8]) -> String {
    let end = memchr::memchr(b'\n', msg).unwrap_or(msg.len());
    String::from_utf8_lossy(&msg[..end]).trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_id_is_read_from_the_long_or_the_compact_header() {
        let long = b"MESSAGE sip:a@b SIP/2.0\r\nVia: x\r\nCall-ID:  abc@h \r\n\r\nbody Call-ID: no";
        assert_eq!(call_id(long), Some("abc@h"));
        let compact = b"SIP/2.0 200 OK\r\ni: c1\r\n\r\n";
        assert_eq!(call_id(compact), Some("c1"));
        assert_eq!(call_id(b"SIP/2.0 200 OK\r\nTo: x\r\n\r\n"), None);
        assert_eq!(first_line(long), "MESSAGE sip:a@b SIP/2.0");
    }
}
