//! Log lines an attacker causes are bounded (issue 16, item 3): repeated events are
//! summarised per source and reason, one line per interval with a count, and counted in
//! `sipedge_suppressed_log_lines_total`. The real binary, so its stderr is what is counted.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::binary::{addr_in, Running};
use crate::legit::{connect_from, FakePool};
use crate::metrics::{sum, value};
use crate::support::*;
use crate::tls::Pki;
use sipedge::lab::certs::LeafSpec;

const TOKEN: &str = "bounded-logs-token-0123456";

/// The `suppressed` count of a summary line (0 for any other line).
fn suppressed_in(line: &str) -> u64 {
    line.split("\"suppressed\":")
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_flood_of_failed_tls_handshakes_writes_a_bounded_number_of_lines_and_counts_them_all() {
    const HANDSHAKES: usize = 1500;
    let pki = Pki::new();
    let pool = FakePool::start("127.0.0.1", Duration::ZERO).await;
    let (cert, key) = pki.leaf("accessedge", LeafSpec::new(["accessedge.contoso.test"]));
    let partner: std::net::SocketAddr = "127.0.0.3:5060".parse().expect("addr");
    let toml = base_config(pool.addr, "tcp", partner, "udp").replace(
        "tcp_port = 0\n\n[interfaces.internal]",
        "tcp_port = 0\ntls_port = 0\n\n[interfaces.internal]",
    ) + &format!(
        "\n[interfaces.external.tls]\ncert = \"{}\"\nkey = \"{}\"\ntrust_anchors = [\"{}\"]\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
        cert.display(),
        key.display(),
        pki.ca_path().display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, toml).expect("write");
    let edge = Running::start(&path);
    let tls = addr_in(&edge.wait_for(&["listening", "\"transport\":\"tls\""]));
    let admin = addr_in(&edge.wait_for(&["admin endpoint listening"]));
    let before = edge.lines_until_quiet(Duration::from_millis(10)).len();

    // Each connection sends bytes that are no TLS record and waits for the edge to close.
    let started = Instant::now();
    for _ in 0..HANDSHAKES {
        let mut c = connect_from("127.0.0.9", tls).await.expect("connect");
        c.write_all(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
            .await
            .expect("write");
        let mut sink = [0u8; 256];
        while matches!(
            tokio::time::timeout(WAIT, c.read(&mut sink)).await,
            Ok(Ok(n)) if n > 0
        ) {}
    }
    let flood = started.elapsed();

    let metrics = || {
        let endpoint = format!("http://{admin}");
        tokio::task::spawn_blocking(move || {
            sipedge::admin::http::send(&endpoint, "GET", "/metrics", Some(TOKEN), "")
                .expect("admin endpoint")
                .1
        })
    };
    let text = metrics().await.expect("join");
    let failed = sum(&text, "sipedge_tls_handshake_failures_total", "inbound");
    assert_eq!(failed, HANDSHAKES as u64, "every handshake failed: {text}");
    let suppressed = value(
        &text,
        "sipedge_suppressed_log_lines_total{reason=\"tls-handshake-failed\"}",
    );
    // The last interval is summarised by the ticker once it ends: wait for the summaries
    // to account for every suppressed line (bounded: each wait ends after 1.5 s of quiet).
    let mut lines = Vec::new();
    for _ in 0..10 {
        lines = edge.lines_until_quiet(Duration::from_millis(1500))[before..].to_vec();
        let summarised: u64 = lines
            .iter()
            .filter(|l| l.contains("tls-handshake-failed"))
            .map(|l| suppressed_in(l))
            .sum();
        if summarised == suppressed {
            break;
        }
    }
    let own = lines
        .iter()
        .filter(|l| l.contains("TLS handshake failed"))
        .count();
    let summaries: Vec<&String> = lines
        .iter()
        .filter(|l| {
            l.contains("repeated log lines suppressed") && l.contains("tls-handshake-failed")
        })
        .collect();
    let summarised: u64 = summaries.iter().map(|l| suppressed_in(l)).sum();
    assert_eq!(
        own as u64 + suppressed,
        HANDSHAKES as u64,
        "each failure is written or counted ({own} written, {suppressed} counted)"
    );
    assert_eq!(
        summarised, suppressed,
        "the summaries carry every count: {summaries:?}"
    );
    // One source: one line of its own and one summary per interval.
    let intervals = flood.as_secs() as usize + 2;
    assert!(
        lines.len() <= 2 * intervals,
        "{} lines for {HANDSHAKES} failed handshakes in {flood:?}: {lines:#?}",
        lines.len()
    );
}
