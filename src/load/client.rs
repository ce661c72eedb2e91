//! The connection tasks: a writer that sends on schedule (open loop) or as answers free a
//! slot (closed loop), and a reader that matches answers to transactions, drives the
//! scenario's next step, retransmits over UDP and times transactions out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use super::stats::Recorder;
use super::template::{self, DialogInfo, Party, Scenario, Templates};
use crate::sip::framing::{self, FrameLimits, Scan};
use crate::sip::{HeaderName, Message, Method};

/// RFC 3261 T1: the first UDP retransmission interval.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2: the cap on non-INVITE retransmission intervals.
pub const T2: Duration = Duration::from_secs(4);
/// How often pending transactions are checked for retransmission and timeout.
const TICK: Duration = Duration::from_millis(20);

/// Connection index in the top 16 bits of a transaction id, the sequence below.
const CONN_SHIFT: u32 = 48;

pub fn make_id(conn: usize, seq: u64) -> u64 {
    ((conn as u64) << CONN_SHIFT) | (seq & ((1 << CONN_SHIFT) - 1))
}

fn conn_of(id: u64) -> usize {
    (id >> CONN_SHIFT) as usize
}

/// Open loop (rate per connection) or closed loop (outstanding per connection).
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Transactions `first`, `first + stride`, … below `total` of a run at `rate` per
    /// second, transaction g due at g / rate after the start.
    Every {
        rate: f64,
        first: u64,
        stride: u64,
        total: u64,
    },
    /// Keep this many transactions outstanding.
    Outstanding(usize),
}

/// The `--rate` cap of a closed loop: a token bucket shared by every connection's writer,
/// so the run as a whole starts at most `rate` transactions per second. It is pure (the
/// time is passed in, as the time since the run started), so its pacing is tested with a
/// made-up clock.
#[derive(Debug)]
pub struct RateCap {
    rate: f64,
    /// The most tokens kept: 10 ms of the rate (at least one) and one more, so a writer
    /// woken late by the timer keeps the fraction of a token it overslept, and no larger
    /// burst.
    burst: f64,
    tokens: f64,
    last: Duration,
}

impl RateCap {
    /// An empty bucket at the start of the run: the first transaction waits 1/rate.
    pub fn new(rate: f64) -> RateCap {
        RateCap {
            rate,
            burst: (rate * 0.01).max(1.0) + 1.0,
            tokens: 0.0,
            last: Duration::ZERO,
        }
    }

    /// Takes up to `want` tokens at `now` (time since the start): how many it got, or,
    /// when none is there, how long until the next one.
    pub fn take(&mut self, now: Duration, want: usize) -> Result<usize, Duration> {
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens < 1.0 {
            return Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate));
        }
        let got = (self.tokens.floor() as usize).min(want);
        self.tokens -= got as f64;
        Ok(got)
    }
}

/// Where a connection's bytes go.
#[derive(Clone)]
pub enum Out {
    Udp(Arc<UdpSocket>, SocketAddr),
    Stream(mpsc::UnboundedSender<Vec<u8>>),
}

impl Out {
    fn send(&self, bytes: &[u8]) {
        match self {
            // A full socket buffer drops the datagram: the retransmission timer covers it.
            Out::Udp(s, to) => {
                let _ = s.try_send_to(bytes, *to);
            }
            Out::Stream(tx) => {
                let _ = tx.send(bytes.to_vec());
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the final answer to the first request.
    Initial,
    /// INVITE answered 2xx, ACK sent, waiting for the BYE's answer.
    Bye,
}

struct Pending {
    /// When the transaction was due (open loop) or sent (closed loop).
    start: Instant,
    phase: Phase,
    /// SUBSCRIBE: the 200 arrived / the NOTIFY arrived.
    sub_ok: bool,
    sub_notified: bool,
    /// UDP only: the request to retransmit, when, and the current interval.
    retx: Option<(Bytes, Instant, Duration)>,
    /// The ACK for a 2xx, re-sent if the 2xx is retransmitted.
    ack: Option<Bytes>,
    invite: bool,
}

/// One connection's state, shared by its writer and reader (and by the NOTIFY listener).
pub struct ConnState {
    pending: HashMap<u64, Pending>,
    pub rec: Recorder,
}

/// One connection (or UDP socket) of the run.
pub struct Conn {
    pub index: usize,
    state: Mutex<ConnState>,
    slots: Semaphore,
    pub party: Party,
    out: Out,
}

/// Settings shared by every connection of a run.
pub struct RunShared {
    pub scenario: Scenario,
    pub reliable: bool,
    pub timeout: Duration,
    pub start: Instant,
    pub end: Instant,
    /// Writers still sending; at 0 the timer tasks end once nothing is pending.
    pub writers_left: AtomicUsize,
    pub run_token: String,
    /// A closed loop's `--rate` cap, shared by every connection.
    pub cap: Option<Mutex<RateCap>>,
}

impl Conn {
    pub fn new(index: usize, party: Party, out: Out, pace: Pace) -> Conn {
        let slots = match pace {
            Pace::Outstanding(n) => n,
            Pace::Every { .. } => 0,
        };
        Conn {
            index,
            state: Mutex::new(ConnState {
                pending: HashMap::new(),
                rec: Recorder::default(),
            }),
            slots: Semaphore::new(slots),
            party,
            out,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn outstanding(&self) -> usize {
        self.lock().pending.len()
    }

    /// Ends a transaction: counts it and frees its slot (closed loop).
    fn finish(&self, st: &mut ConnState, id: u64, status: Option<u16>) {
        if st.pending.remove(&id).is_none() {
            return;
        }
        match status {
            Some(s) if (200..300).contains(&s) => st.rec.ok += 1,
            Some(s) => st.rec.error(s),
            None => st.rec.timeouts += 1,
        }
        self.slots.add_permits(1);
    }
}

/// Waits for tokens of the `--rate` cap for up to `want` transactions: how many may go,
/// 0 when the run ends first.
async fn capped(cap: &Mutex<RateCap>, run: &RunShared, want: usize) -> usize {
    loop {
        let now = Instant::now();
        if now >= run.end {
            return 0;
        }
        let taken = cap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(now.saturating_duration_since(run.start), want);
        match taken {
            Ok(n) => return n,
            Err(wait) => tokio::time::sleep_until((now + wait).min(run.end)).await,
        }
    }
}

/// Sends the scenario's first request on schedule until the end of the run.
pub async fn writer(conn: Arc<Conn>, run: Arc<RunShared>, pace: Pace) {
    let templates = Templates::new(run.scenario, &conn.party);
    let mut seq: u64 = 0;
    let mut batch: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut due: Vec<Instant> = Vec::new();
    // The global index of the next scheduled transaction (open loop).
    let mut g = match pace {
        Pace::Every { first, .. } => first,
        Pace::Outstanding(_) => 0,
    };
    loop {
        due.clear();
        match pace {
            Pace::Every {
                rate,
                stride,
                total,
                ..
            } => {
                let at = |g: u64| run.start + Duration::from_secs_f64(g as f64 / rate);
                if g >= total {
                    break;
                }
                tokio::time::sleep_until(at(g)).await;
                let now = Instant::now();
                // Everything due by now goes out, late ones with their scheduled time, so
                // the wait counts in their latency (no coordinated omission).
                while g < total && at(g) <= now && due.len() < 4096 {
                    due.push(at(g));
                    g += stride;
                }
            }
            Pace::Outstanding(_) => {
                let permit = tokio::select! {
                    p = conn.slots.acquire() => p,
                    _ = tokio::time::sleep_until(run.end) => break,
                };
                let Ok(permit) = permit else { break };
                permit.forget();
                let now = Instant::now();
                if now >= run.end {
                    break;
                }
                due.push(now);
                while due.len() < 256 {
                    match conn.slots.try_acquire() {
                        Ok(p) => {
                            p.forget();
                            due.push(now);
                        }
                        Err(_) => break,
                    }
                }
                if let Some(cap) = &run.cap {
                    let granted = capped(cap, &run, due.len()).await;
                    // The slots the cap held back go back for the next turn.
                    conn.slots.add_permits(due.len() - granted);
                    due.truncate(granted);
                    if granted == 0 {
                        break;
                    }
                    // Latency counts from the send: the wait for a token is the cap's own.
                    let now = Instant::now();
                    due.iter_mut().for_each(|d| *d = now);
                }
            }
        }
        batch.clear();
        {
            let mut st = conn.lock();
            for &start in &due {
                let id = make_id(conn.index, seq);
                seq += 1;
                let from = batch.len();
                templates.initial.render(id, &mut batch);
                let retx = (!run.reliable).then(|| {
                    (
                        Bytes::copy_from_slice(&batch[from..]),
                        Instant::now() + T1,
                        T1,
                    )
                });
                st.pending.insert(
                    id,
                    Pending {
                        start,
                        phase: Phase::Initial,
                        sub_ok: false,
                        sub_notified: false,
                        retx,
                        ack: None,
                        invite: run.scenario == Scenario::InviteDialog,
                    },
                );
                st.rec.sent += 1;
                if !run.reliable {
                    conn.out.send(&batch[from..]);
                }
            }
        }
        if run.reliable {
            conn.out.send(&batch);
        }
    }
    run.writers_left.fetch_sub(1, Ordering::AcqRel);
}

/// Handles one message that arrived for this run (on any of its connections).
pub fn on_message(conns: &[Arc<Conn>], run: &RunShared, msg: &Message, reply: &Out) {
    if msg.is_request() {
        on_request(conns, run, msg, reply);
        return;
    }
    let Some(id) = msg
        .call_id()
        .and_then(|c| template::id_from_call_id(c, &run.run_token))
    else {
        return;
    };
    let Some(conn) = conns.get(conn_of(id)) else {
        return;
    };
    let (Some(status), Some(cseq)) = (msg.status(), msg.cseq()) else {
        return;
    };
    let method = cseq.method;
    let now = Instant::now();
    let mut st = conn.lock();
    let Some(p) = st.pending.get_mut(&id) else {
        return;
    };
    match (p.phase, method) {
        (
            Phase::Initial,
            Method::Invite | Method::Message | Method::Options | Method::Subscribe,
        ) => {
            if status < 200 {
                // A provisional answer stops INVITE retransmissions (RFC 3261 17.1.1.2).
                if p.invite {
                    p.retx = None;
                }
                return;
            }
            let latency = now - p.start;
            if !(200..300).contains(&status) {
                if p.invite {
                    conn.out
                        .send(&template::in_dialog(&conn.party, "ACK", id, None));
                }
                conn.finish(&mut st, id, Some(status));
                return;
            }
            match run.scenario {
                Scenario::InviteDialog => {
                    let Some(dialog) = dialog_info(msg) else {
                        conn.finish(&mut st, id, Some(0));
                        return;
                    };
                    let ack =
                        Bytes::from(template::in_dialog(&conn.party, "ACK", id, Some(&dialog)));
                    let bye =
                        Bytes::from(template::in_dialog(&conn.party, "BYE", id, Some(&dialog)));
                    conn.out.send(&ack);
                    conn.out.send(&bye);
                    p.phase = Phase::Bye;
                    p.ack = Some(ack);
                    p.invite = false;
                    p.retx = (!run.reliable).then(|| (bye, now + T1, T1));
                    st.rec.record_latency(latency);
                }
                Scenario::Subscribe => {
                    p.sub_ok = true;
                    p.retx = None;
                    let done = p.sub_notified;
                    st.rec.record_latency(latency);
                    if done {
                        conn.finish(&mut st, id, Some(status));
                    }
                }
                Scenario::Message | Scenario::Options => {
                    st.rec.record_latency(latency);
                    conn.finish(&mut st, id, Some(status));
                }
            }
        }
        (Phase::Bye, Method::Invite) if status >= 200 => {
            // The 2xx was retransmitted: our ACK was lost.
            if let Some(ack) = &p.ack {
                conn.out.send(ack);
            }
        }
        (Phase::Bye, Method::Bye) if status >= 200 => conn.finish(&mut st, id, Some(status)),
        _ => {}
    }
}

fn on_request(conns: &[Arc<Conn>], run: &RunShared, msg: &Message, reply: &Out) {
    if msg.method() == Method::Ack {
        return;
    }
    reply.send(&template::ok_for(msg));
    if msg.method() != Method::Notify {
        return;
    }
    let Some(id) = msg
        .call_id()
        .and_then(|c| template::id_from_call_id(c, &run.run_token))
    else {
        return;
    };
    let Some(conn) = conns.get(conn_of(id)) else {
        return;
    };
    let mut st = conn.lock();
    if let Some(p) = st.pending.get_mut(&id) {
        p.sub_notified = true;
        if p.sub_ok {
            conn.finish(&mut st, id, Some(200));
        }
    }
}

/// Remote target, To tag and route set from a 2xx to the INVITE.
fn dialog_info(msg: &Message) -> Option<DialogInfo> {
    let to_tag = msg.to()?.tag()?.to_string();
    let contact = msg.header_value(HeaderName::Contact)?;
    let remote_target = angle_uri(&contact)?.to_string();
    let mut routes: Vec<String> = msg
        .values(HeaderName::RecordRoute)
        .into_iter()
        .map(|(_, r)| msg.text(r).trim().to_string())
        .collect();
    routes.reverse();
    Some(DialogInfo {
        remote_target,
        to_tag,
        routes,
    })
}

/// The URI inside `<…>`, or the whole value up to its parameters.
fn angle_uri(v: &str) -> Option<&str> {
    let v = v.trim();
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => Some(&v[a + 1..b]),
        _ => v.split(';').next().filter(|s| !s.is_empty()),
    }
}

/// Retransmits over UDP and times out transactions; returns when the run is over and
/// nothing is pending.
pub async fn timers(conn: Arc<Conn>, run: Arc<RunShared>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut st = conn.lock();
        let mut expired = Vec::new();
        let mut retransmitted = 0;
        for (id, p) in st.pending.iter_mut() {
            if now.duration_since(p.start) >= run.timeout {
                expired.push(*id);
                continue;
            }
            if let Some((bytes, at, interval)) = &mut p.retx {
                if *at <= now {
                    conn.out.send(bytes);
                    retransmitted += 1;
                    // Timer A doubles without a cap, Timer E up to T2.
                    *interval = if p.invite {
                        *interval * 2
                    } else {
                        (*interval * 2).min(T2)
                    };
                    *at = now + *interval;
                }
            }
        }
        st.rec.retransmissions += retransmitted;
        for id in expired {
            conn.finish(&mut st, id, None);
        }
        let idle = st.pending.is_empty();
        drop(st);
        if run.writers_left.load(Ordering::Acquire) == 0 && idle {
            return;
        }
        if now >= run.end + run.timeout + Duration::from_secs(1) {
            return;
        }
    }
}

/// Reads datagrams for the run's UDP sockets.
pub async fn udp_reader(
    socket: Arc<UdpSocket>,
    conns: Arc<Vec<Arc<Conn>>>,
    run: Arc<RunShared>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors surface as recv errors on Linux; the timers count the loss.
                Err(_) => continue,
            },
            _ = stop.cancelled() => return,
        };
        let Ok(msg) = Message::parse(Bytes::copy_from_slice(&buf[..n]), true) else {
            continue;
        };
        on_message(&conns, &run, &msg, &Out::Udp(socket.clone(), from));
    }
}

/// Reads a stream, frames it and hands each message to [`on_message`].
pub async fn stream_reader<R: AsyncRead + Unpin>(
    mut rd: R,
    reply: Out,
    conns: Arc<Vec<Arc<Conn>>>,
    run: Arc<RunShared>,
    stop: tokio_util::sync::CancellationToken,
) {
    let limits = FrameLimits::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            match framing::scan(&buf, &limits) {
                Ok(Scan::Message { len }) => {
                    let bytes = buf.split_to(len).freeze();
                    if let Ok(msg) = Message::parse(bytes, false) {
                        on_message(&conns, &run, &msg, &reply);
                    }
                }
                Ok(Scan::KeepAlive { len, .. }) => {
                    let _ = buf.split_to(len);
                }
                Ok(Scan::Incomplete) => break,
                // A stream that cannot be framed cannot be resynchronised.
                Err(_) => return,
            }
        }
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(64 * 1024);
        }
        let n = tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = stop.cancelled() => return,
        };
        let _ = n;
    }
}

/// Writes what the writer and reader queue, coalescing what is queued into one write.
pub async fn stream_writer<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&first);
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if wr.write_all(&buf).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_connection() {
        let id = make_id(7, 12345);
        assert_eq!(conn_of(id), 7);
        assert_eq!(id & 0xffff_ffff, 12345);
    }

    #[test]
    fn contact_uri_is_taken_from_angle_brackets() {
        assert_eq!(
            angle_uri("<sip:b@127.0.0.1:5070;transport=tcp>;expires=3"),
            Some("sip:b@127.0.0.1:5070;transport=tcp")
        );
        assert_eq!(angle_uri("sip:b@h;x=1"), Some("sip:b@h"));
        assert_eq!(angle_uri(""), None);
    }
}

#[cfg(test)]
mod rate_cap_tests {
    use super::*;

    #[test]
    fn a_greedy_closed_loop_capped_at_200_per_second_starts_200_a_second_on_a_made_up_clock() {
        let mut cap = RateCap::new(200.0);
        let (mut t, mut sent) = (Duration::ZERO, 0usize);
        let tick = Duration::from_micros(1_700);
        while t < Duration::from_secs(5) {
            // Every writer wants far more than the rate: only the cap holds them back.
            if let Ok(n) = cap.take(t, 1_000) {
                sent += n;
            }
            // Never ahead of the rate by more than the burst (10 ms of it and one, here 3).
            assert!(
                sent as f64 <= t.as_secs_f64() * 200.0 + 3.0,
                "{sent} at {t:?}"
            );
            t += tick;
        }
        assert!((995..=1_000).contains(&sent), "{sent}");
    }

    #[test]
    fn a_writer_always_woken_late_still_reaches_the_rate() {
        let mut cap = RateCap::new(100.0);
        let (mut t, mut sent) = (Duration::ZERO, 0usize);
        // It asks for the next token after the 10 ms it was told, and 0.9 ms more.
        while t < Duration::from_secs(5) {
            match cap.take(t, 1) {
                Ok(n) => sent += n,
                Err(wait) => t += wait + Duration::from_micros(900),
            }
        }
        assert!((495..=501).contains(&sent), "{sent}");
    }

    #[test]
    fn an_empty_bucket_says_how_long_until_the_next_token() {
        let mut cap = RateCap::new(4.0);
        let waits = |r: Result<usize, Duration>| r.unwrap_err().as_secs_f64();
        assert!((waits(cap.take(Duration::ZERO, 1)) - 0.25).abs() < 1e-9);
        assert!((waits(cap.take(Duration::from_millis(100), 1)) - 0.15).abs() < 1e-9);
        assert_eq!(cap.take(Duration::from_millis(250), 5), Ok(1));
        // A long idle time fills the bucket only up to its burst (two tokens at 4/s).
        assert_eq!(cap.take(Duration::from_secs(60), 5), Ok(2));
        // A clock read out of order (two writers) takes nothing back.
        assert!(cap.take(Duration::from_secs(59), 1).is_err());
    }
}
