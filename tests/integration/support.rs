//! A small SIP toolkit for the tests: an in-process edge on ephemeral ports, fake peers
//! that record exactly what arrived, and clients that send raw bytes.
//!
//! Messages are built and inspected as text here, independently of the crate's parser,
//! so a bug in the edge's parser cannot hide itself in the test.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sipedge::config::{Live, Snapshot};
use sipedge::edge::{Edge, Sockets};
use sipedge::proxy::record::DecisionRecord;
use sipedge::proxy::Core;
use sipedge::transport::{Interface, TlsSource, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

pub const WAIT: Duration = Duration::from_secs(5);

/// Logs to the test output when RUST_LOG is set.
pub fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}

/// A running edge and the addresses it listens on.
pub struct TestEdge {
    pub edge: Edge,
}

impl TestEdge {
    /// Starts an edge from TOML text (ports should be 0).
    pub async fn start(toml: &str) -> TestEdge {
        Self::start_with_tls(toml, None).await
    }

    pub async fn start_with_tls(toml: &str, tls: Option<Arc<dyn TlsSource>>) -> TestEdge {
        let snap = Snapshot::from_toml(toml, std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("test config: {e}"));
        Self::start_snapshot_with_tls(snap, tls).await
    }

    /// Starts an edge from a snapshot (e.g. one loaded from a file, which `--persist` needs).
    pub async fn start_snapshot(snap: Snapshot) -> TestEdge {
        Self::start_snapshot_with_tls(snap, None).await
    }

    async fn start_snapshot_with_tls(snap: Snapshot, tls: Option<Arc<dyn TlsSource>>) -> TestEdge {
        init_logs();
        let sockets = Sockets::bind(&snap).await.expect("bind");
        let live = Arc::new(Live::new(snap));
        let edge = Edge::start(live, sockets, tls).expect("start");
        TestEdge { edge }
    }

    pub fn addr(&self, i: Interface, t: Transport) -> SocketAddr {
        self.edge.local_addr(i, t).expect("listener")
    }

    /// The counters as `/metrics` renders them (the gauges left at zero).
    pub fn metrics_text(&self) -> String {
        self.edge
            .core()
            .metrics()
            .render(&sipedge::metrics::Gauges {
                open_connections: 0,
                dns: None,
                flagged_partners: self.edge.core().flagged_partners(),
                transactions: 0,
                transaction_bytes: 0,
            })
    }
}

/// The decision the edge recorded for the request with `call_id` and `method`. It is
/// recorded just after its final response leaves, so this polls the log (every 20 ms, for
/// at most [`WAIT`]) instead of reading it once.
pub async fn recorded_decision(core: &Core, call_id: &str, method: &str) -> DecisionRecord {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = core
            .recent_decisions()
            .into_iter()
            .find(|d| d.call_id == call_id && d.method == method);
        match found {
            Some(d) => return d,
            None if tokio::time::Instant::now() > deadline => {
                panic!("no {method} decision recorded for {call_id}")
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The base lab-like config used by most tests: UDP+TCP on both interfaces, the pool at
/// `pool`, fabrikam.test routed to `partner`.
pub fn base_config(
    pool: SocketAddr,
    pool_transport: &str,
    partner: SocketAddr,
    partner_transport: &str,
) -> String {
    format!(
        r#"
[edge]
local_domains = ["contoso.test"]
drain_timeout_ms = 2000

[interfaces.external]
fqdn = "accessedge.contoso.test"
address = "127.0.0.1"
udp_port = 0
tcp_port = 0

[interfaces.internal]
fqdn = "edge-int.contoso.test"
address = "127.0.0.2"
udp_port = 0
tcp_port = 0

[pool]
target = "{pool}"
transport = "{pool_transport}"

[[routes]]
domain = "fabrikam.test"
target = "sip.fabrikam.test:{partner_port}"
transport = "{partner_transport}"

[hosts]
"sip.fabrikam.test" = ["{partner_ip}"]

[limits]
max_message_size = 4096
idle_timeout_s = 30
"#,
        partner_port = partner.port(),
        partner_ip = partner.ip(),
    )
}

// === text helpers (independent of the crate's parser) ===

/// The value of the first header named `name` (or its compact form), case-insensitive.
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    headers(msg, name).into_iter().next()
}

/// All values of header lines named `name`.
pub fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    let head = msg.split("\r\n\r\n").next().unwrap_or("");
    let compact = compact_of(name);
    head.lines()
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim();
            (n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c)))
                .then(|| v.trim())
        })
        .collect()
}

/// Every comma-separated value of the header lines named `name`, in order (commas inside
/// `<…>` or quotes do not split).
pub fn header_values<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    for v in headers(msg, name) {
        let (mut depth, mut quoted, mut start) = (0i32, false, 0);
        for (i, c) in v.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '<' if !quoted => depth += 1,
                '>' if !quoted => depth -= 1,
                ',' if !quoted && depth == 0 => {
                    out.push(v[start..i].trim());
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push(v[start..].trim());
    }
    out
}

fn compact_of(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "via" => "v",
        "from" => "f",
        "to" => "t",
        "call-id" => "i",
        "content-length" => "l",
        "contact" => "m",
        _ => return None,
    })
}

pub fn status_of(msg: &str) -> u16 {
    msg.strip_prefix("SIP/2.0 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The code of a diagnostics header (`ms-diagnostics` or `ms-diagnostics-public`): what
/// precedes its first `;`, or "" when the message has none.
pub fn diagnostics_code<'a>(msg: &'a str, name: &str) -> &'a str {
    header(msg, name)
        .and_then(|d| d.split(';').next())
        .unwrap_or("")
}

pub fn first_line(msg: &str) -> &str {
    msg.lines().next().unwrap_or("")
}

/// A User-Agent line as Lync 2013 sends it: makes a test request client-sized, so that the
/// edge's optional answer lines fit within it over UDP (no amplification).
pub const LYNC_UA: &str = "User-Agent: UCCAPI/15.0.4481.1000 OC/15.0.4481.1000 (Microsoft Lync)";

/// A request with the usual headers; `extra` lines are added verbatim.
#[allow(clippy::too_many_arguments)]
pub fn request(
    method: &str,
    uri: &str,
    from: &str,
    to: &str,
    via: &str,
    call_id: &str,
    extra: &[&str],
    body: &str,
) -> String {
    let mut s = format!(
        "{method} {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <{from}>;tag=t{call_id}\r\nTo: <{to}>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
    );
    for e in extra {
        s.push_str(e);
        s.push_str("\r\n");
    }
    s.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s
}

/// A response to `req`: Via lines, From, To (+tag), Call-ID and CSeq copied.
pub fn response(req: &str, status: u16, reason: &str, extra: &[&str]) -> String {
    let head = req.split("\r\n\r\n").next().unwrap_or("");
    let mut s = format!("SIP/2.0 {status} {reason}\r\n");
    for line in head.lines().skip(1) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" | "record-route" => {
                s.push_str(line);
                s.push_str("\r\n");
            }
            "to" | "t" => {
                s.push_str(line);
                if !line.contains("tag=") && status > 100 {
                    s.push_str(";tag=uas1");
                }
                s.push_str("\r\n");
            }
            _ => {}
        }
    }
    for e in extra {
        s.push_str(e);
        s.push_str("\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s
}

// === UDP ===

pub struct UdpPeer {
    pub sock: UdpSocket,
}

impl UdpPeer {
    pub async fn bind(ip: &str) -> UdpPeer {
        UdpPeer {
            sock: UdpSocket::bind(format!("{ip}:0")).await.expect("bind udp"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("addr")
    }

    pub async fn send(&self, to: SocketAddr, msg: &str) {
        self.sock.send_to(msg.as_bytes(), to).await.expect("send");
    }

    pub async fn recv(&self) -> (String, SocketAddr) {
        self.try_recv(WAIT)
            .await
            .expect("a datagram within the wait")
    }

    pub async fn try_recv(&self, wait: Duration) -> Option<(String, SocketAddr)> {
        let mut buf = vec![0u8; 65536];
        let (n, from) = tokio::time::timeout(wait, self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
    }

    /// Receives, skipping provisional 100 Trying.
    pub async fn recv_final_or_request(&self) -> (String, SocketAddr) {
        loop {
            let (m, a) = self.recv().await;
            if status_of(&m) != 100 {
                return (m, a);
            }
        }
    }
}

// === streams ===

/// A stream connection that reads whole messages by Content-Length.
pub struct StreamConn<S> {
    pub io: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> StreamConn<S> {
    pub fn new(io: S) -> Self {
        StreamConn {
            io,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, msg: &str) {
        self.io.write_all(msg.as_bytes()).await.expect("write");
        self.io.flush().await.expect("flush");
    }

    pub async fn send_bytes(&mut self, b: &[u8]) {
        self.io.write_all(b).await.expect("write");
        self.io.flush().await.expect("flush");
    }

    /// The next message, or None on close/timeout.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let cl: usize = header(&(head.clone() + "\r\n\r\n"), "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let total = end + 4 + cl;
                if self.buf.len() >= total {
                    let msg: Vec<u8> = self.buf.drain(..total).collect();
                    return Some(String::from_utf8_lossy(&msg).into_owned());
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn recv(&mut self) -> String {
        self.try_recv(WAIT)
            .await
            .expect("a message within the wait")
    }

    pub async fn recv_skip_100(&mut self) -> String {
        loop {
            let m = self.recv().await;
            if status_of(&m) != 100 {
                return m;
            }
        }
    }

    /// Raw bytes available within `wait` (for keep-alive pongs).
    pub async fn read_raw(&mut self, wait: Duration) -> Vec<u8> {
        if !self.buf.is_empty() {
            return std::mem::take(&mut self.buf);
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(wait, self.io.read(&mut chunk)).await {
            Ok(Ok(n)) => chunk[..n].to_vec(),
            _ => Vec::new(),
        }
    }

    /// Whether the peer closed the connection within `wait`.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        let mut chunk = [0u8; 8192];
        loop {
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return false,
            }
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

pub async fn tcp_connect(to: SocketAddr) -> StreamConn<TcpStream> {
    StreamConn::new(TcpStream::connect(to).await.expect("connect"))
}

/// A TCP server that accepts one connection at a time on demand.
pub struct TcpPeer {
    pub listener: TcpListener,
}

impl TcpPeer {
    pub async fn bind(ip: &str) -> TcpPeer {
        TcpPeer {
            listener: TcpListener::bind(format!("{ip}:0"))
                .await
                .expect("bind tcp"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("addr")
    }

    pub async fn accept(&self) -> StreamConn<TcpStream> {
        let (s, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("accept in time")
            .expect("accept");
        StreamConn::new(s)
    }
}

/// Reads `from` line by line on a thread of its own (a child's stdout or stderr), so a
/// test can wait for a line with a deadline.
pub fn read_lines(from: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// A MESSAGE from `from` to `uri` over a new TCP connection to `to`; the final answer.
pub async fn message_over_tcp(to: SocketAddr, from: &str, uri: &str, id: &str) -> String {
    let mut conn = tcp_connect(to).await;
    let via = format!("SIP/2.0/TCP 10.0.0.9:5060;branch=z9hG4bK{id}");
    let ctype = ["Content-Type: text/plain"];
    conn.send(&request("MESSAGE", uri, from, uri, &via, id, &ctype, "hi"))
        .await;
    conn.recv_skip_100().await
}
