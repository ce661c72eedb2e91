//! Legitimate traffic for the robustness tests: a fake Front End pool that answers 200,
//! and a driver that sends MESSAGE transactions through the edge at a fixed rate and
//! counts what came back (the `sipedge load` generator is not available to tests yet).
//!
//! Everything is counted from the wire: a transaction succeeds when its 200 arrives.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::support::{header, response, status_of};

/// Requests whose Call-ID starts with this are answered by the fake pool; others are
/// held unanswered (transactions that stay in flight).
pub const ANSWERED: &str = "legit-";

/// A fake Front End pool on TCP and UDP (same port): answers 200 to every request whose
/// Call-ID starts with `ANSWERED`, after `delay`, and records every Call-ID it saw.
pub struct FakePool {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    answered: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FakePool {
    pub async fn start(ip: &str, delay: Duration) -> FakePool {
        let tcp = TcpListener::bind(format!("{ip}:0"))
            .await
            .expect("pool tcp");
        let addr = tcp.local_addr().expect("addr");
        let udp = Arc::new(
            UdpSocket::bind(addr)
                .await
                .expect("pool udp on the same port"),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        let (s, a) = (seen.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            while let Ok((conn, _)) = tcp.accept().await {
                tokio::spawn(serve_pool_conn(conn, delay, s.clone(), a.clone()));
            }
        }));
        let (s, a) = (seen.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if let Some(answer) = pool_answer(&msg, &s) {
                    a.fetch_add(1, Ordering::Relaxed);
                    let udp = udp.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = udp.send_to(answer.as_bytes(), from).await;
                    });
                }
            }
        }));
        FakePool {
            addr,
            seen,
            answered,
            tasks,
        }
    }

    /// Every Call-ID that reached the pool, in arrival order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Whether a request with this Call-ID reached the pool.
    pub fn saw(&self, call_id: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|c| c == call_id)
    }
}

impl Drop for FakePool {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Records the request and builds the 200 when it is to be answered.
fn pool_answer(msg: &str, seen: &Mutex<Vec<String>>) -> Option<String> {
    if msg.starts_with("SIP/2.0") {
        return None;
    }
    let call_id = header(msg, "call-id")?.to_string();
    seen.lock().unwrap().push(call_id.clone());
    call_id
        .starts_with(ANSWERED)
        .then(|| response(msg, 200, "OK", &[]))
}

async fn serve_pool_conn(
    conn: TcpStream,
    delay: Duration,
    seen: Arc<Mutex<Vec<String>>>,
    answered: Arc<AtomicU64>,
) {
    let (mut rd, mut wr) = conn.into_split();
    let (tx, mut rx) = mpsc::channel::<String>(4096);
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if wr.write_all(m.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let mut frames = Frames::default();
    while let Some(msg) = frames.next(&mut rd).await {
        if let Some(answer) = pool_answer(&msg, &seen) {
            answered.fetch_add(1, Ordering::Relaxed);
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tx.send(answer).await;
            });
        }
    }
}

/// Splits a byte stream into SIP messages by Content-Length (skipping CRLF keep-alives).
#[derive(Default)]
pub struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    /// The next message, or `None` when the stream closed or failed.
    pub async fn next<R: tokio::io::AsyncRead + Unpin>(&mut self, rd: &mut R) -> Option<String> {
        loop {
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end + 4]).into_owned();
                let cl: usize = header(&head, "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + cl {
                    let msg: Vec<u8> = self.buf.drain(..end + 4 + cl).collect();
                    return Some(String::from_utf8_lossy(&msg).into_owned());
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// An edge config with TCP listeners on both interfaces (external 127.0.0.1, internal
/// 127.0.0.2, ephemeral ports) and the pool at `pool_target` over TCP; sections follow.
pub fn tcp_edge(pool_target: &str) -> String {
    format!(
        r#"[edge]
local_domains = ["contoso.test"]
drain_timeout_ms = 3000

[interfaces.external]
fqdn = "accessedge.contoso.test"
address = "127.0.0.1"
tcp_port = 0

[interfaces.internal]
fqdn = "edge-int.contoso.test"
address = "127.0.0.2"
tcp_port = 0

[pool]
target = "{pool_target}"
transport = "tcp"
"#
    )
}

/// How the driver reaches the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Tcp,
    Udp,
}

/// One run of legitimate traffic.
#[derive(Debug, Clone)]
pub struct Legit {
    /// Where the requests go (an edge listener).
    pub to: SocketAddr,
    pub transport: Via,
    /// The driver's source address (127.0.0.x; distinct from the attackers').
    pub from_ip: &'static str,
    /// Requests per second.
    pub rate: u32,
    /// How long requests are sent.
    pub duration: Duration,
    /// How long a transaction may take before it counts as failed.
    pub patience: Duration,
    /// Request-URI and From (From decides the direction through the edge).
    pub uri: &'static str,
    pub from: &'static str,
    /// Distinguishes the Call-IDs of concurrent runs.
    pub tag: &'static str,
}

impl Legit {
    /// 200 MESSAGE/s for 2.5 s from an external sender at `from_ip` to a pool user.
    pub fn external(
        to: SocketAddr,
        transport: Via,
        from_ip: &'static str,
        tag: &'static str,
    ) -> Legit {
        Legit {
            to,
            transport,
            from_ip,
            rate: 200,
            duration: Duration::from_millis(2500),
            patience: Duration::from_secs(5),
            uri: "sip:bob@contoso.test",
            from: "sip:legit@fabrikam.test",
            tag,
        }
    }
}

/// What one run of legitimate traffic got.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub sent: u64,
    pub ok: u64,
    /// Final responses other than 200, by status.
    pub refused: HashMap<u16, u64>,
    /// Refusals that carried Retry-After.
    pub refused_with_retry_after: u64,
    /// Sent but never answered within the patience.
    pub unanswered: u64,
    /// Times the edge closed the driver's connection (TCP).
    pub closes: u64,
    /// Slowest 200, send to answer.
    pub slowest: Duration,
    /// Each request's send time and final status (0 = none), in sending order.
    pub outcomes: Vec<(Instant, u16)>,
}

impl Report {
    /// Successful transactions over sent ones, in percent.
    pub fn success_rate(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.ok as f64 * 100.0 / self.sent as f64
    }

    /// Prints the measured rate for the README's Robustness table, and asserts the
    /// ≥ 99.9 % bar and that the traffic really flowed (at least 90 % of the planned sends).
    pub fn assert_served(&self, test: &str, planned: &Legit) {
        println!(
            "ROBUSTNESS test={test} sent={} ok={} refused={:?} unanswered={} closes={} success={:.2}% slowest_ms={}",
            self.sent,
            self.ok,
            self.refused,
            self.unanswered,
            self.closes,
            self.success_rate(),
            self.slowest.as_millis()
        );
        let expected = planned.rate as f64 * planned.duration.as_secs_f64();
        assert!(
            self.sent as f64 >= expected * 0.9,
            "{test}: only {} of ~{expected} legitimate requests were sent",
            self.sent
        );
        assert!(
            self.success_rate() >= 99.9,
            "{test}: legitimate success {:.2}% < 99.9%: {self:?}",
            self.success_rate()
        );
    }
}

/// Pending transactions by Call-ID: send time and index into the outcomes.
type Pending = Arc<Mutex<HashMap<String, (Instant, usize)>>>;

/// Runs `plan` to the end: sends at the fixed rate, then waits up to the patience for the
/// last answers.
pub async fn run(plan: Legit) -> Report {
    let report = Arc::new(Mutex::new(Report::default()));
    let pending: Pending = Arc::default();
    let (tx, mut outbox) = mpsc::channel::<(String, String)>(1024);
    // The writer side differs by transport; the reader matches answers to Call-IDs.
    let (writer, reader) = match plan.transport {
        Via::Tcp => {
            let sock = TcpSocket::new_v4().expect("socket");
            sock.bind(format!("{}:0", plan.from_ip).parse().expect("ip"))
                .expect("bind");
            let conn = sock.connect(plan.to).await.expect("connect to the edge");
            let _ = conn.set_nodelay(true);
            let local = conn.local_addr().expect("local");
            let (mut rd, mut wr) = conn.into_split();
            let writer = tokio::spawn(async move {
                while let Some((_, msg)) = outbox.recv().await {
                    if wr.write_all(msg.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
            let (p, r) = (pending.clone(), report.clone());
            let reader = tokio::spawn(async move {
                let mut frames = Frames::default();
                while let Some(msg) = frames.next(&mut rd).await {
                    settle(&msg, &p, &r);
                }
                r.lock().unwrap().closes += 1;
            });
            (writer, (reader, local))
        }
        Via::Udp => {
            let sock = Arc::new(
                UdpSocket::bind(format!("{}:0", plan.from_ip))
                    .await
                    .expect("bind"),
            );
            let local = sock.local_addr().expect("local");
            let (ws, to) = (sock.clone(), plan.to);
            let writer = tokio::spawn(async move {
                while let Some((_, msg)) = outbox.recv().await {
                    let _ = ws.send_to(msg.as_bytes(), to).await;
                }
            });
            let (p, r) = (pending.clone(), report.clone());
            let reader = tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok((n, _)) = sock.recv_from(&mut buf).await {
                    settle(&String::from_utf8_lossy(&buf[..n]), &p, &r);
                }
            });
            (writer, (reader, local))
        }
    };
    let (reader, local) = reader;
    let transport = match plan.transport {
        Via::Tcp => "TCP",
        Via::Udp => "UDP",
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(plan.rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = (f64::from(plan.rate) * plan.duration.as_secs_f64()).round() as usize;
    for n in 0..total {
        tick.tick().await;
        let call_id = format!("{ANSWERED}{}-{n}", plan.tag);
        let body = "Hello from a legitimate sender";
        let msg = format!(
            "MESSAGE {uri} SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch=z9hG4bK{call_id};rport\r\nMax-Forwards: 70\r\nFrom: <{from}>;tag=f{n}\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len(),
            uri = plan.uri,
            from = plan.from,
        );
        {
            let mut r = report.lock().unwrap();
            let idx = r.outcomes.len();
            r.outcomes.push((Instant::now(), 0));
            r.sent += 1;
            pending
                .lock()
                .unwrap()
                .insert(call_id.clone(), (Instant::now(), idx));
        }
        if tx.send((call_id, msg)).await.is_err() {
            break;
        }
    }
    let deadline = Instant::now() + plan.patience;
    while Instant::now() < deadline && !pending.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    reader.abort();
    let mut r = report.lock().unwrap().clone();
    r.unanswered = pending.lock().unwrap().len() as u64;
    r
}

/// Counts one answer against its pending transaction.
fn settle(msg: &str, pending: &Pending, report: &Mutex<Report>) {
    let status = status_of(msg);
    if status < 200 {
        return;
    }
    let Some(call_id) = header(msg, "call-id") else {
        return;
    };
    let Some((sent, idx)) = pending.lock().unwrap().remove(call_id) else {
        return;
    };
    let mut r = report.lock().unwrap();
    r.outcomes[idx].1 = status;
    if status == 200 {
        r.ok += 1;
        r.slowest = r.slowest.max(sent.elapsed());
    } else {
        *r.refused.entry(status).or_default() += 1;
        if header(msg, "retry-after").is_some() {
            r.refused_with_retry_after += 1;
        }
    }
}

/// Samples `f` every 20 ms while the returned guard lives and keeps the maximum: for the
/// "memory stays bounded" checks on in-process edges (table and connection counts).
pub struct Peak {
    max: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Peak {
    pub fn watch(f: impl Fn() -> usize + Send + 'static) -> Peak {
        let max = Arc::new(AtomicUsize::new(0));
        let m = max.clone();
        let task = tokio::spawn(async move {
            loop {
                m.fetch_max(f(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Peak { max, task }
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }
}

impl Drop for Peak {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The resident set size of a process, in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Whether a stream was closed by the edge within `wait` (reads and discards anything sent).
pub async fn closed_within(conn: &mut TcpStream, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// A TCP connection from a chosen loopback source address.
pub async fn connect_from(ip: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(format!("{ip}:0").parse().expect("ip"))?;
    s.connect(to).await
}
