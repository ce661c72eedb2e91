//! RFC 4475 and RFC 5118 (IPv6) torture messages against the real edge over UDP and TCP:
//! the outcome each message must have is in `tests/fixtures/<rfc>/expected.toml`, and what
//! went over the wire is checked against it (status, or the relayed bytes at the pool).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sipedge::transport::{Interface, Transport};

use crate::support::*;

/// How long "nothing happens" is watched for: long enough for the edge to have answered a
/// loopback datagram many times over, short enough to keep the suite fast.
const QUIET: Duration = Duration::from_millis(300);

/// Each message gets its own edge, stopped after it with this drain deadline.
const DRAIN: Duration = Duration::from_millis(50);

#[derive(Debug, Deserialize)]
struct Manifest {
    message: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    section: String,
    udp: String,
    tcp: String,
    /// The reason phrase a refusal must carry, when the manifest names one.
    phrase: Option<String>,
}

pub fn fixtures(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
}

fn manifest(dir: &str) -> Vec<(Case, Vec<u8>)> {
    let base = fixtures(dir);
    let text = std::fs::read_to_string(base.join("expected.toml")).expect("manifest");
    let m: Manifest = toml::from_str(&text).expect("manifest parses");
    // TORTURE_ONLY=name runs one message (for debugging a failure).
    let only = std::env::var("TORTURE_ONLY").ok();
    m.message
        .into_iter()
        .filter(|c| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|n| n == c.name))
        })
        .map(|c| {
            let bytes = std::fs::read(base.join(format!("{}.dat", c.name))).expect("fixture");
            (c, bytes)
        })
        .collect()
}

/// Static routing: contoso.test goes to the pool; messages up to 64 KiB.
fn config(pool: SocketAddr) -> String {
    base_config(pool, "udp", "127.0.0.3:5999".parse().expect("addr"), "udp")
        .replace("max_message_size = 4096", "max_message_size = 65536")
}

/// The fixture with the host of a `sip:` Request-URI replaced by `domain` (the only change
/// the test makes, so that the edge's policy has somewhere to send it).
pub fn route_to(msg: &[u8], domain: &str) -> Vec<u8> {
    let nl = msg.iter().position(|b| *b == b'\n').unwrap_or(msg.len());
    let line = String::from_utf8_lossy(&msg[..nl]).into_owned();
    let Some(start) = line.find(" sip:").map(|i| i + 5) else {
        return msg.to_vec();
    };
    let rest = &line[start..];
    let host_start = rest.find('@').map_or(0, |a| a + 1);
    let host = &rest[host_start..];
    let host_len = match host.strip_prefix('[') {
        Some(v6) => v6.find(']').map_or(host.len(), |e| e + 2),
        None => host.find([';', '?', ':', '>', ' ']).unwrap_or(host.len()),
    };
    let at = start + host_start;
    let mut out = Vec::with_capacity(msg.len() + domain.len());
    out.extend_from_slice(&line.as_bytes()[..at]);
    out.extend_from_slice(domain.as_bytes());
    out.extend_from_slice(&line.as_bytes()[at + host_len..]);
    out.extend_from_slice(&msg[nl..]);
    out
}

/// The Call-ID of a message, found as text (independent of the crate's parser).
fn call_id(msg: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(msg);
    header(&text, "call-id").map(str::to_string)
}

/// Header lines (with their continuation lines) that the edge must relay untouched: all but
/// the start line, Via and Max-Forwards.
fn untouched_lines(msg: &[u8]) -> Vec<Vec<u8>> {
    let head_end = find(msg, b"\r\n\r\n").map_or(msg.len(), |e| e + 2);
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut keep = false;
    for line in msg[..head_end].split_inclusive(|b| *b == b'\n').skip(1) {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            if keep {
                if let Some(last) = out.last_mut() {
                    last.extend_from_slice(line);
                }
            }
            continue;
        }
        let name = String::from_utf8_lossy(line.split(|b| *b == b':').next().unwrap_or(&[]))
            .trim()
            .to_ascii_lowercase();
        keep = !matches!(name.as_str(), "via" | "v" | "max-forwards");
        if keep {
            out.push(line.to_vec());
        }
    }
    out
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn body(msg: &[u8]) -> &[u8] {
    find(msg, b"\r\n\r\n").map_or(&[][..], |e| &msg[e + 4..])
}

/// The pool: every message it receives, over UDP or over TCP on the same port (the edge
/// moves a request over 1300 bytes to TCP, RFC 3261 §18.1.1), comes out of one channel.
struct Pool {
    addr: SocketAddr,
    rx: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pool {
    async fn start() -> Pool {
        // The ephemeral UDP port may be taken for TCP by another test: try another one
        // (a bounded number of times).
        let mut attempt = 0;
        let (udp, tcp) = loop {
            let udp = UdpPeer::bind("127.0.0.1").await;
            match tokio::net::TcpListener::bind(udp.addr()).await {
                Ok(tcp) => break (udp, tcp),
                Err(e) if attempt < 20 => {
                    attempt += 1;
                    tracing::debug!(error = %e, "the pool's UDP port is taken for TCP; another");
                }
                Err(e) => panic!("no port free for both UDP and TCP: {e}"),
            }
        };
        let addr = udp.addr();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let utx = tx.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = udp.sock.recv_from(&mut buf).await {
                let got = buf[..n].to_vec();
                // Answering ends the edge's retransmissions, so earlier cases stay quiet.
                if let Some(ok) = answer(&got) {
                    let _ = udp.sock.send_to(ok.as_bytes(), from).await;
                }
                if utx.send(got).is_err() {
                    break;
                }
            }
        });
        let tcp_task = tokio::spawn(async move {
            while let Ok((s, _)) = tcp.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut conn = StreamConn::new(s);
                    while let Some(m) = conn.try_recv(Duration::from_secs(30)).await {
                        if let Some(ok) = answer(m.as_bytes()) {
                            conn.send(&ok).await;
                        }
                        if tx.send(m.into_bytes()).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Pool {
            addr,
            rx,
            tasks: vec![udp_task, tcp_task],
        }
    }

    /// The next request with this Call-ID (retransmissions of earlier cases and other
    /// Call-IDs are skipped), within `wait`.
    async fn relayed(&mut self, cid: &str, wait: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + wait;
        for _ in 0..10_000 {
            let got = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .ok()??;
            if call_id(&got).as_deref() == Some(cid) {
                return Some(got);
            }
        }
        None
    }

    /// Nothing with this Call-ID arrives within `QUIET`.
    async fn nothing_relayed(&mut self, cid: Option<&str>) -> bool {
        match cid {
            Some(cid) => self.relayed(cid, QUIET).await.is_none(),
            None => {
                tokio::time::sleep(QUIET).await;
                true
            }
        }
    }
}

/// The pool's 200 to a request (none to an ACK or a response).
fn answer(msg: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(msg);
    (status_of(&text) == 0 && !text.starts_with("ACK ")).then(|| response(&text, 200, "OK", &[]))
}

impl Drop for Pool {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What the pool received for a case that must be relayed, checked against what was sent.
async fn expect_forwarded(pool: &mut Pool, case: &Case, sent: &[u8], cid: Option<&str>) -> Vec<u8> {
    let cid = cid.expect("a forwarded case has a Call-ID");
    let got = pool
        .relayed(cid, WAIT)
        .await
        .unwrap_or_else(|| panic!("{} ({}) was not relayed", case.name, case.section));
    check_forwarded(case, sent, &got);
    got
}

fn check_forwarded(case: &Case, sent: &[u8], got: &[u8]) {
    let text = String::from_utf8_lossy(got);
    for line in untouched_lines(sent) {
        assert!(
            find(got, &line).is_some(),
            "{} ({}): line {:?} not relayed byte for byte:\n{text}",
            case.name,
            case.section,
            String::from_utf8_lossy(&line)
        );
    }
    let sent_body = body(sent);
    let cl = header(&String::from_utf8_lossy(sent), "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(sent_body.len())
        .min(sent_body.len());
    assert_eq!(body(got), &sent_body[..cl], "{}: body", case.name);
    assert!(
        first_line(&text).starts_with(
            String::from_utf8_lossy(&sent[..sent.iter().position(|b| *b == b'\r').unwrap_or(0)])
                .as_ref()
        ),
        "{}: start line changed: {}",
        case.name,
        first_line(&text)
    );
}

#[tokio::test]
async fn rfc4475_messages_over_udp() {
    over_udp("rfc4475", 49).await;
}

#[tokio::test]
async fn rfc4475_messages_over_tcp() {
    over_tcp("rfc4475").await;
}

#[tokio::test]
async fn rfc5118_messages_over_udp() {
    over_udp("rfc5118", 12).await;
}

#[tokio::test]
async fn rfc5118_messages_over_tcp() {
    over_tcp("rfc5118").await;
}

/// Every message of `dir` over UDP, each to a fresh edge, checked against the manifest.
async fn over_udp(dir: &str, count: usize) {
    let mut pool = Pool::start().await;
    let mut seen: HashMap<String, String> = HashMap::new();
    for (case, raw) in manifest(dir) {
        // A fresh edge per message: the RFC reuses branches (z9hG4bKkdjuw), and the same
        // branch and sent-by is one transaction to a proxy that has seen the first.
        let edge = TestEdge::start(&config(pool.addr)).await;
        // Refusals go to the internal interface: on the external one the edge cuts an answer
        // to a datagram down toward the minimal response (no amplification toward a
        // spoofable source), which would drop the detail some of these checks read.
        let side = if case.udp.parse::<u16>().is_ok() {
            Interface::Internal
        } else {
            Interface::External
        };
        let to = edge.addr(side, Transport::Udp);
        // And a fresh client: RFC 5118 messages share one Call-ID.
        let client = UdpPeer::bind("127.0.0.9").await;
        let msg = route_to(&raw, "contoso.test");
        client.sock.send_to(&msg, to).await.expect("send");
        let cid = call_id(&msg);
        match case.udp.as_str() {
            "forward" => {
                let got = expect_forwarded(&mut pool, &case, &msg, cid.as_deref()).await;
                if case.name == "dblreq" {
                    assert!(
                        find(&got, b"INVITE sip:joe").is_none(),
                        "trailing octets relayed"
                    );
                }
            }
            "drop" => {
                assert!(
                    !answered(&client, cid.as_deref()).await,
                    "{}: answered",
                    case.name
                );
                assert!(
                    pool.nothing_relayed(cid.as_deref()).await,
                    "{}: relayed",
                    case.name
                );
            }
            status => {
                let want: u16 = status.parse().expect("status in manifest");
                let answer = final_answer(&client, cid.as_deref()).await;
                assert_eq!(
                    status_of(&answer),
                    want,
                    "{} ({}): {answer}",
                    case.name,
                    case.section
                );
                check_phrase(&case, &answer);
            }
        }
        seen.insert(case.name.clone(), case.udp.clone());
        edge.edge.shutdown(DRAIN).await;
    }
    if std::env::var_os("TORTURE_ONLY").is_none() {
        assert_eq!(seen.len(), count, "every fixture ran");
    }
    let client = UdpPeer::bind("127.0.0.9").await;
    let edge = TestEdge::start(&config(pool.addr)).await;
    still_serving(
        &client,
        edge.addr(Interface::External, Transport::Udp),
        &mut pool,
    )
    .await;
}

/// Every message of `dir` over TCP, one connection and one edge each.
async fn over_tcp(dir: &str) {
    let mut pool = Pool::start().await;
    for (case, raw) in manifest(dir) {
        let edge = TestEdge::start(&config(pool.addr)).await;
        let to = edge.addr(Interface::External, Transport::Tcp);
        let msg = route_to(&raw, "contoso.test");
        let mut conn = tcp_connect(to).await;
        conn.send_bytes(&msg).await;
        let cid = call_id(&msg);
        match case.tcp.as_str() {
            "forward" => {
                expect_forwarded(&mut pool, &case, &msg, cid.as_deref()).await;
            }
            "drop" | "wait" => {
                assert!(
                    conn.try_recv(QUIET).await.is_none(),
                    "{}: answered",
                    case.name
                );
                assert!(
                    pool.nothing_relayed(cid.as_deref()).await,
                    "{}: relayed",
                    case.name
                );
            }
            status => {
                let want: u16 = status.parse().expect("status in manifest");
                let answer = loop {
                    let m = conn
                        .try_recv(WAIT)
                        .await
                        .unwrap_or_else(|| panic!("{}: no answer", case.name));
                    if status_of(&m) >= 200 {
                        break m;
                    }
                };
                assert_eq!(
                    status_of(&answer),
                    want,
                    "{} ({}): {answer}",
                    case.name,
                    case.section
                );
                check_phrase(&case, &answer);
                if let Some(cid) = &cid {
                    assert_eq!(
                        header(&answer, "call-id"),
                        Some(cid.as_str()),
                        "{}",
                        case.name
                    );
                }
            }
        }
        edge.edge.shutdown(DRAIN).await;
    }
    let client = UdpPeer::bind("127.0.0.9").await;
    let edge = TestEdge::start(&config(pool.addr)).await;
    still_serving(
        &client,
        edge.addr(Interface::External, Transport::Udp),
        &mut pool,
    )
    .await;
}

/// The answer's reason phrase is the one the manifest names, if it names one.
fn check_phrase(case: &Case, answer: &str) {
    if let Some(phrase) = &case.phrase {
        assert_eq!(
            first_line(answer).get(12..),
            Some(phrase.as_str()),
            "{} ({})",
            case.name,
            case.section
        );
    }
}

/// Whether anything with this Call-ID comes back within `QUIET` (answers to earlier cases,
/// such as a 100 Trying, are skipped).
async fn answered(client: &UdpPeer, cid: Option<&str>) -> bool {
    let deadline = tokio::time::Instant::now() + QUIET;
    for _ in 0..50 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.try_recv(left).await {
            Some((m, _)) if header(&m, "call-id") == cid => return true,
            Some(_) => continue,
            None => return false,
        }
    }
    false
}

/// The first final answer with this Call-ID (when there is one), skipping 1xx.
async fn final_answer(client: &UdpPeer, cid: Option<&str>) -> String {
    for _ in 0..50 {
        let (m, _) = client.recv().await;
        if status_of(&m) >= 200 && header(&m, "call-id") == cid {
            return m;
        }
    }
    panic!("no final answer for {cid:?}");
}

/// After everything, an ordinary request still goes through.
async fn still_serving(client: &UdpPeer, to: SocketAddr, pool: &mut Pool) {
    let req = request(
        "MESSAGE",
        "sip:bob@contoso.test",
        "sip:alice@fabrikam.test",
        "sip:bob@contoso.test",
        &format!(
            "SIP/2.0/UDP 127.0.0.9:{};branch=z9hG4bKafter",
            client.addr().port()
        ),
        "after-torture",
        &[],
        "hi",
    );
    client.send(to, &req).await;
    assert!(
        pool.relayed("after-torture", WAIT).await.is_some(),
        "the edge stopped serving"
    );
}

#[test]
fn route_to_rewrites_only_the_request_uri_host() {
    let m = b"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\nTo: sip:a@example.com\r\n\r\n";
    assert_eq!(
        route_to(m, "contoso.test"),
        b"INVITE sip:vivekg@contoso.test;unknownparam SIP/2.0\r\nTo: sip:a@example.com\r\n\r\n"
    );
    let r = b"REGISTER sip:example.com SIP/2.0\r\n\r\n";
    assert_eq!(
        route_to(r, "contoso.test"),
        b"REGISTER sip:contoso.test SIP/2.0\r\n\r\n"
    );
    let v6 = b"REGISTER sip:[2001:db8::10]:5070 SIP/2.0\r\n\r\n";
    assert_eq!(
        route_to(v6, "contoso.test"),
        b"REGISTER sip:contoso.test:5070 SIP/2.0\r\n\r\n"
    );
    let odd = b"OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0\r\n\r\n";
    assert_eq!(route_to(odd, "contoso.test"), odd);
}
