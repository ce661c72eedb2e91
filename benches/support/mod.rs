//! An in-process edge on loopback for the relay benches: the real server (`Edge::start`,
//! the full federation pipeline like `config/bench-*.toml`), a minimal pool that
//! answers every request 200, and a client that keeps a window of MESSAGEs in flight.
//!
//! The edge runs on a runtime of its own so a bench can tell its threads from the
//! client's and the pool's (the allocation count attributes allocations by thread).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sipedge::config::{Live, Snapshot};
use sipedge::edge::{Edge, Sockets};
use sipedge::sip::framing::{scan, FrameLimits, Scan};
use sipedge::transport::{Interface, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::Runtime;

/// How many requests the client keeps in flight.
pub const WINDOW: usize = 16;
/// How long one batch may take before the bench gives up (a stalled edge, not a slow one).
const BATCH_DEADLINE: Duration = Duration::from_secs(60);
/// How long to wait for one answer before counting the request as lost.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// A running edge, its pool and a connected client.
pub struct Relay {
    /// Kept alive: the edge's tasks run on its worker threads.
    _edge_rt: Runtime,
    _edge: Edge,
    client_rt: Runtime,
    client: Client,
    /// Requests that got no answer within `ANSWER_WAIT` (should stay 0).
    pub lost: u64,
}

impl Relay {
    /// Starts the pool and the edge for `transport` (UDP or TCP on both sides) and
    /// connects a client. `on_edge_thread` runs on every thread of the edge's runtime.
    pub fn start(transport: Transport, on_edge_thread: fn()) -> io::Result<Relay> {
        Relay::start_traced(transport, on_edge_thread, None)
    }

    /// `start`, with `[trace]` replaced by `trace` when given.
    pub fn start_traced(
        transport: Transport,
        on_edge_thread: fn(),
        trace: Option<sipedge::config::TraceSettings>,
    ) -> io::Result<Relay> {
        let client_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let pool = client_rt.block_on(Pool::start(transport))?;
        let edge_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(on_edge_thread)
            .build()?;
        let mut snap = Snapshot::from_toml(&config(pool, transport), Path::new("."))
            .map_err(|e| io::Error::other(e.to_string()))?;
        if let Some(t) = trace {
            snap.trace = t;
        }
        let edge = edge_rt.block_on(async {
            let sockets = Sockets::bind(&snap)
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            Edge::start(Arc::new(Live::new(snap)), sockets, None)
                .map_err(|e| io::Error::other(e.to_string()))
        })?;
        let target = edge
            .local_addr(Interface::External, transport)
            .ok_or_else(|| io::Error::other("no external listener"))?;
        let client = client_rt.block_on(Client::connect(transport, target))?;
        Ok(Relay {
            _edge_rt: edge_rt,
            _edge: edge,
            client_rt,
            client,
            lost: 0,
        })
    }

    /// Relays `n` MESSAGEs (client → edge → pool → edge → client) with `WINDOW` in
    /// flight and returns the time it took.
    pub fn round_trips(&mut self, n: u64) -> Duration {
        let Relay {
            client_rt,
            client,
            lost,
            ..
        } = self;
        let started = Instant::now();
        let result =
            client_rt.block_on(async { tokio::time::timeout(BATCH_DEADLINE, client.run(n)).await });
        match result {
            Ok(Ok(missing)) => *lost += missing,
            Ok(Err(e)) => panic!("relay bench client: {e}"),
            Err(_) => panic!("relay bench: {n} round trips took over {BATCH_DEADLINE:?}"),
        }
        started.elapsed()
    }
}

/// The edge config: fabrikam.test federated through the lab identity mapping, the pool at `pool` over `transport`.
fn config(pool: SocketAddr, transport: Transport) -> String {
    format!(
        r#"
[edge]
local_domains = ["contoso.test"]

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
transport = "{}"

# Completed UDP server transactions stay Timer J = 32 s; criterion relays far more than
# the default 100 000 within that.
[limits]
max_transactions = 2000000
max_pending_per_source = 100000

# The full Access Edge pipeline, as in config/bench-*.toml: the client at 127.0.0.9 speaks
# for fabrikam.test's edge, so each MESSAGE is classified, its From domain verified, the
# recipient's policy checked and the trust header added.
[lab]
source_identities = {{ "127.0.0.9" = "sip.fabrikam.test" }}

[access_edge]
allow_federated_users = true

[[allowed_domain]]
domain = "fabrikam.test"
proxy_fqdn = "sip.fabrikam.test"
verification_level = "AlwaysVerifiable"

[[external_access_policy]]
identity = "global"
enable_federation_access = true
"#,
        transport.as_str()
    )
}

// === the pool ===

/// Answers every request with 200 OK (the Via, From, To, Call-ID and CSeq lines copied).
struct Pool;

impl Pool {
    async fn start(transport: Transport) -> io::Result<SocketAddr> {
        match transport {
            Transport::Udp => {
                let sock = UdpSocket::bind("127.0.0.1:0").await?;
                let addr = sock.local_addr()?;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    let mut out = Vec::with_capacity(2048);
                    while let Ok((len, from)) = sock.recv_from(&mut buf).await {
                        if answer(&buf[..len], &mut out) && sock.send_to(&out, from).await.is_err()
                        {
                            break;
                        }
                    }
                });
                Ok(addr)
            }
            _ => {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                tokio::spawn(async move {
                    while let Ok((conn, _)) = listener.accept().await {
                        tokio::spawn(serve_stream(conn));
                    }
                });
                Ok(addr)
            }
        }
    }
}

async fn serve_stream(mut conn: TcpStream) {
    let mut buf = Vec::with_capacity(65_536);
    let mut out = Vec::with_capacity(2048);
    let limits = FrameLimits::default();
    loop {
        while let Ok(Scan::Message { len } | Scan::KeepAlive { len, .. }) = scan(&buf, &limits) {
            if answer(&buf[..len], &mut out) && conn.write_all(&out).await.is_err() {
                return;
            }
            buf.drain(..len);
        }
        match conn.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Writes into `out` the 200 OK for the request in `msg`; false for anything else.
fn answer(msg: &[u8], out: &mut Vec<u8>) -> bool {
    if msg.starts_with(b"SIP/2.0") || !msg.contains(&b' ') {
        return false;
    }
    out.clear();
    out.extend_from_slice(b"SIP/2.0 200 OK\r\n");
    let head_end = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(msg.len());
    for line in msg[..head_end].split(|&b| b == b'\n').skip(1) {
        let name = line.split(|&b| b == b':').next().unwrap_or(b"");
        let name = name.trim_ascii();
        let keep = [
            &b"via"[..],
            b"v",
            b"from",
            b"f",
            b"to",
            b"t",
            b"call-id",
            b"i",
            b"cseq",
        ]
        .iter()
        .any(|k| name.eq_ignore_ascii_case(k));
        if keep {
            out.extend_from_slice(line.trim_ascii_end());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    true
}

// === the client ===

/// A MESSAGE shaped like a Lync IM, small enough to stay on UDP (< 1300 bytes after the
/// edge's edits). `BRANCH` and `CALLID` are overwritten per request.
const TEMPLATE: &str = "MESSAGE sip:bob@contoso.test SIP/2.0\r\n\
Via: SIP/2.0/TRANSPORT 127.0.0.9:PORT;branch=z9hG4bKBRANCH0000000000;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Fay Fabrikam\" <sip:fay@fabrikam.test>;tag=5f8c1e2a9b;epid=8e3c6d1f20\r\n\
To: <sip:bob@contoso.test>\r\n\
Call-ID: CALLID0000000000\r\n\
CSeq: 1 MESSAGE\r\n\
Contact: <sip:fay@fabrikam.test;opaque=user:epid:Vq3nY2xUJ1WgX0b9K7s5FQAA;gruu>\r\n\
User-Agent: UCCAPI/15.0.4569.1503 OC/15.0.4569.1503 (Microsoft Lync)\r\n\
Supported: ms-dialog-route-set-update\r\n\
Content-Type: text/plain; charset=UTF-8\r\n\
Content-Length: 43\r\n\
\r\n\
Hello Bob, are you free for the 3pm review?";

/// One request buffer, rewritten in place per request (the client allocates nothing per
/// message).
struct Request {
    bytes: Vec<u8>,
    branch: usize,
    call_id: usize,
    next: u64,
}

impl Request {
    fn new(transport: Transport, local: SocketAddr) -> Request {
        let text = TEMPLATE
            .replace("TRANSPORT", transport.via_token())
            .replace("PORT", &local.port().to_string());
        let branch = text.find("BRANCH").unwrap_or(0);
        let call_id = text.find("CALLID").unwrap_or(0);
        Request {
            bytes: text.into_bytes(),
            branch,
            call_id,
            next: 0,
        }
    }

    /// The next request: a fresh branch and Call-ID (16 hex digits each).
    fn advance(&mut self) -> &[u8] {
        self.next += 1;
        for at in [self.branch, self.call_id] {
            for (i, b) in self.bytes[at..at + 16].iter_mut().enumerate() {
                let nibble = (self.next >> (60 - 4 * i)) & 0xf;
                *b = b"0123456789abcdef"[nibble as usize];
            }
        }
        &self.bytes
    }
}

enum Client {
    Udp {
        sock: UdpSocket,
        to: SocketAddr,
        req: Request,
        buf: Vec<u8>,
    },
    Tcp {
        conn: TcpStream,
        req: Request,
        buf: Vec<u8>,
    },
}

/// Where the client sends from: the lab identity mapping in `config` names it.
const CLIENT_ADDR: &str = "127.0.0.9:0";

impl Client {
    async fn connect(transport: Transport, to: SocketAddr) -> io::Result<Client> {
        if transport == Transport::Udp {
            let sock = UdpSocket::bind(CLIENT_ADDR).await?;
            let req = Request::new(transport, sock.local_addr()?);
            Ok(Client::Udp {
                sock,
                to,
                req,
                buf: vec![0u8; 65_536],
            })
        } else {
            // From the same address as over UDP: the one the config maps to the partner.
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(CLIENT_ADDR.parse().map_err(io::Error::other)?)?;
            let conn = sock.connect(to).await?;
            conn.set_nodelay(true)?;
            let req = Request::new(transport, conn.local_addr()?);
            Ok(Client::Tcp {
                conn,
                req,
                buf: Vec::with_capacity(65_536),
            })
        }
    }

    /// Sends `n` requests keeping `WINDOW` in flight; returns how many got no final answer.
    async fn run(&mut self, n: u64) -> io::Result<u64> {
        let mut sent = 0u64;
        let mut done = 0u64;
        let mut lost = 0u64;
        while done + lost < n {
            while sent < n && sent - done - lost < WINDOW as u64 {
                self.send().await?;
                sent += 1;
            }
            match tokio::time::timeout(ANSWER_WAIT, self.final_answer()).await {
                Ok(answer) => {
                    answer?;
                    done += 1;
                }
                // Nothing came back: everything in flight is counted lost and the batch moves on.
                Err(_) => lost += sent - done - lost,
            }
        }
        Ok(lost)
    }

    async fn send(&mut self) -> io::Result<()> {
        match self {
            Client::Udp { sock, to, req, .. } => sock.send_to(req.advance(), *to).await.map(drop),
            Client::Tcp { conn, req, .. } => conn.write_all(req.advance()).await,
        }
    }

    /// Waits for the next final response, which must be 200 (1xx are skipped).
    async fn final_answer(&mut self) -> io::Result<()> {
        loop {
            let status = match self {
                Client::Udp { sock, buf, .. } => {
                    let len = sock.recv(buf).await?;
                    status(&buf[..len])
                }
                Client::Tcp { conn, buf, .. } => loop {
                    if let Ok(Scan::Message { len }) = scan(buf, &FrameLimits::default()) {
                        let s = status(&buf[..len]);
                        buf.drain(..len);
                        break s;
                    }
                    if conn.read_buf(buf).await? == 0 {
                        return Err(io::Error::other("the edge closed the connection"));
                    }
                },
            };
            match status {
                Some(200) => return Ok(()),
                Some(100..=199) => continue,
                // A refusal would be timed as if it were a relay: stop the bench instead.
                other => return Err(io::Error::other(format!("expected 200, got {other:?}"))),
            }
        }
    }
}

/// The status code of a response.
fn status(msg: &[u8]) -> Option<u16> {
    let rest = msg.strip_prefix(b"SIP/2.0 ")?;
    std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
}
