//! `sipedge load` and `sipedge sink` as real processes: against each other, through the
//! edge with every scenario and transport, error counting, the chart, and the open-loop
//! schedule. Each run is 1–2 s at a low rate; every process is stopped by its PID.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use sipedge::lab::certs::{LabCa, LeafSpec};
use sipedge::transport::{Interface, Transport};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_sipedge");

/// Lab certificates in a temp dir, named the way `--cert NAME` finds them.
fn lab_certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = LabCa::generate("load test CA").expect("ca");
    std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).expect("ca");
    for names in [
        &["pool.contoso.test", "127.0.0.1"][..],
        // The client's certificate names no address: a request toward it inside a dialog
        // must use its connection, not dial its Contact (it is no server).
        &["sip.fabrikam.test"][..],
        &["accessedge.contoso.test"][..],
        &["edge-int.contoso.test"][..],
    ] {
        let leaf = ca
            .issue(&LeafSpec::new(names.iter().copied()))
            .expect("leaf");
        std::fs::write(dir.path().join(format!("{}.crt", names[0])), &leaf.cert_pem).expect("crt");
        std::fs::write(dir.path().join(format!("{}.key", names[0])), &leaf.key_pem).expect("key");
    }
    dir
}

/// A running `sipedge sink`, killed by PID when dropped.
struct Sink {
    child: Child,
    addr: SocketAddr,
}

impl Sink {
    fn start(transport: &str, certs: &Path, extra: &[&str]) -> Sink {
        let mut child = Command::new(BIN)
            .args([
                "sink",
                "--listen",
                "127.0.0.1:0",
                "--transport",
                transport,
                "--certs",
            ])
            .arg(certs)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sink");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("sink line");
        let addr = line
            .split_whitespace()
            .last()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Sink { child, addr }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sipedge load --json` to completion and returns its summary.
async fn load(
    target: SocketAddr,
    transport: &str,
    certs: &Path,
    args: &[&str],
) -> serde_json::Value {
    let mut cmd = Command::new(BIN);
    cmd.args(["load", "--quiet", "--json", "--transport", transport])
        .arg("--target")
        .arg(target.to_string())
        .arg("--certs")
        .arg(certs)
        .args(args);
    if !args.contains(&"--timeout") {
        cmd.args(["--timeout", "3"]);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run load");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    // Exit 0 exactly when no more transactions failed than --max-failures allows.
    let allowed: u64 = args
        .iter()
        .position(|a| *a == "--max-failures")
        .and_then(|i| args.get(i + 1))
        .map_or(0, |n| n.parse().expect("a number"));
    assert_eq!(
        out.status.success(),
        v["failed"].as_u64().unwrap_or(0) <= allowed,
        "exit status {:?} for {v}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    v
}

fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

fn assert_all_ok(v: &serde_json::Value, expected: u64) {
    assert_eq!(n(v, "sent"), expected, "{v}");
    assert_eq!(n(v, "ok"), expected, "{v}");
    assert_eq!(n(v, "failed"), 0, "{v}");
    assert_eq!(n(v, "timeouts"), 0, "{v}");
    assert!(v["errors"].as_object().is_some_and(|e| e.is_empty()), "{v}");
    assert!(v["latency_ms"]["p99"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
}

#[tokio::test]
async fn load_against_the_sink_over_udp_tcp_and_tls_is_all_answered() {
    let certs = lab_certs();
    let mut runs = Vec::new();
    for t in ["udp", "tcp", "tls"] {
        let sink = Sink::start(t, certs.path(), &["--mtls"]);
        let certs = certs.path().to_path_buf();
        runs.push(tokio::spawn(async move {
            let v = load(
                sink.addr,
                t,
                &certs,
                &["--rate", "150", "--duration", "1", "--connections", "2"],
            )
            .await;
            drop(sink);
            (t, v)
        }));
    }
    for r in runs {
        let (t, v) = r.await.expect("join");
        assert_eq!(v["transport"], t);
        assert_all_ok(&v, 150);
    }
}

/// `load` over two TCP connections to a sink of its own.
async fn against_a_tcp_sink(args: &[&str]) -> serde_json::Value {
    let certs = lab_certs();
    let sink = Sink::start("tcp", certs.path(), &[]);
    let mut all = vec!["--connections", "2"];
    all.extend_from_slice(args);
    load(sink.addr, "tcp", certs.path(), &all).await
}

#[tokio::test]
async fn closed_loop_keeps_its_concurrency_and_counts_every_answer() {
    let v = against_a_tcp_sink(&["--concurrency", "4", "--duration", "1"]).await;
    assert_eq!(v["mode"], "concurrency");
    assert!(n(&v, "sent") > 10, "{v}");
    assert_eq!(n(&v, "sent"), n(&v, "ok"), "{v}");
    assert_eq!(n(&v, "failed"), 0, "{v}");
}

#[tokio::test]
async fn a_closed_loop_capped_by_rate_sends_about_rate_times_duration() {
    // Uncapped, eight outstanding against the sink would be thousands a second.
    let v = against_a_tcp_sink(&["--concurrency", "8", "--rate", "100", "--duration", "2"]).await;
    assert_eq!(v["mode"], "concurrency-capped");
    let sent = n(&v, "sent");
    assert!(
        (180..=202).contains(&sent),
        "100/s for 2 s sent {sent}: {v}"
    );
    assert_eq!(sent, n(&v, "ok"), "{v}");
}

/// The federation sections of the bench config for `transport`: the full Access Edge
/// pipeline the benchmarks measure.
fn bench_federation(transport: &str) -> &'static str {
    let file = match transport {
        "udp" => include_str!("../../config/bench-udp.toml"),
        "tcp" => include_str!("../../config/bench-tcp.toml"),
        _ => include_str!("../../config/bench-tls.toml"),
    };
    file.split_once("# ---- Federation")
        .map(|(_, rest)| rest)
        .expect("the bench config has federation sections")
}

/// The edge config of the bench files with ephemeral ports and the sink as the pool: the
/// same federation sections, so every scenario takes the full pipeline (in-dialog requests
/// toward the client included).
fn edge_config(transport: &str, pool: SocketAddr, certs: &Path) -> String {
    let d = certs.display();
    let tls = |iface: &str, name: &str| {
        format!(
            "tls_port = 0\n[interfaces.{iface}.tls]\ncert = \"{d}/{name}.crt\"\nkey = \"{d}/{name}.key\"\ntrust_anchors = [\"{d}/ca.crt\"]\n"
        )
    };
    let (ext, int) = if transport == "tls" {
        (
            tls("external", "accessedge.contoso.test"),
            tls("internal", "edge-int.contoso.test"),
        )
    } else {
        (
            "udp_port = 0\ntcp_port = 0\n".into(),
            "udp_port = 0\ntcp_port = 0\n".into(),
        )
    };
    format!(
        r#"
[edge]
local_domains = ["contoso.test"]
drain_timeout_ms = 1000

[interfaces.external]
fqdn = "accessedge.contoso.test"
address = "127.0.0.1"
{ext}
[interfaces.internal]
fqdn = "edge-int.contoso.test"
address = "127.0.0.2"
{int}
[pool]
target = "{pool}"
transport = "{transport}"

[lab]
source_identities = {{ "127.0.0.1" = "sip.fabrikam.test" }}

# ---- Federation{federation}
"#,
        federation = bench_federation(transport),
    )
}

async fn every_scenario_through_the_edge(transport: Transport) {
    let t = transport.as_str();
    let certs = lab_certs();
    let sink = Sink::start(t, certs.path(), &["--mtls"]);
    let toml = edge_config(t, sink.addr, certs.path());
    let snap = sipedge::config::Snapshot::from_toml(&toml, Path::new(".")).expect("config");
    let tls = sipedge::tls_store::TlsStore::from_snapshot(&snap)
        .expect("tls")
        .map(|s| s as std::sync::Arc<dyn sipedge::transport::TlsSource>);
    let edge = TestEdge::start_with_tls(&toml, tls).await;
    let target = edge.addr(Interface::External, transport);
    let mut runs = Vec::new();
    for scenario in ["message", "options", "invite-dialog", "subscribe"] {
        let certs = certs.path().to_path_buf();
        runs.push(tokio::spawn(async move {
            let v = load(
                target,
                t,
                &certs,
                &[
                    "--rate",
                    "60",
                    "--duration",
                    "1",
                    "--connections",
                    "2",
                    "--scenario",
                    scenario,
                    "--server-name",
                    "accessedge.contoso.test",
                ],
            )
            .await;
            (scenario, v)
        }));
    }
    for r in runs {
        let (scenario, v) = r.await.expect("join");
        assert_eq!(v["scenario"], scenario);
        assert_all_ok(&v, 60);
    }
    drop(sink);
}

#[tokio::test]
async fn every_scenario_through_the_edge_over_udp() {
    every_scenario_through_the_edge(Transport::Udp).await;
}

#[tokio::test]
async fn every_scenario_through_the_edge_over_tcp() {
    every_scenario_through_the_edge(Transport::Tcp).await;
}

#[tokio::test]
async fn every_scenario_through_the_edge_over_mutual_tls() {
    every_scenario_through_the_edge(Transport::Tls).await;
}

#[tokio::test]
async fn error_answers_are_counted_by_status() {
    let certs = lab_certs();
    let sink = Sink::start("udp", certs.path(), &["--status", "486"]);
    let v = load(
        sink.addr,
        "udp",
        certs.path(),
        &[
            "--rate",
            "100",
            "--duration",
            "1",
            "--scenario",
            "invite-dialog",
        ],
    )
    .await;
    assert_eq!(n(&v, "sent"), 100, "{v}");
    assert_eq!(n(&v, "ok"), 0, "{v}");
    assert_eq!(n(&v, "failed"), 100, "{v}");
    assert_eq!(v["errors"]["486"].as_u64(), Some(100), "{v}");
    assert_eq!(n(&v, "timeouts"), 0, "{v}");
    // Each INVITE was answered the first time, so none was retransmitted.
    assert_eq!(n(&v, "retransmissions"), 0, "{v}");
}

#[tokio::test]
async fn a_silent_target_gives_timeouts_and_udp_retransmissions() {
    // A bound socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let certs = lab_certs();
    let v = load(
        silent.local_addr().expect("addr"),
        "udp",
        certs.path(),
        &["--rate", "20", "--duration", "0.5", "--timeout", "1.2"],
    )
    .await;
    assert_eq!(n(&v, "sent"), 10, "{v}");
    assert_eq!(n(&v, "timeouts"), 10, "{v}");
    // T1 = 500 ms: retransmissions at 0.5 s and 1.5 s would follow; 1.2 s allows one each.
    assert_eq!(n(&v, "retransmissions"), 10, "{v}");
    // Nothing answered: no latency at all (JSON null, "n/a" in the RESULT line), and the
    // run failed (exit 1, checked by `load`) unless that many failures were allowed.
    assert!(v["latency_ms"].is_null(), "{v}");
    let v = load(
        silent.local_addr().expect("addr"),
        "udp",
        certs.path(),
        &[
            "--rate",
            "20",
            "--duration",
            "0.5",
            "--timeout",
            "1.2",
            "--max-failures",
            "10",
        ],
    )
    .await;
    assert_eq!(n(&v, "timeouts"), 10, "{v}");
}

#[tokio::test]
async fn open_loop_keeps_its_schedule_and_the_chart_is_an_svg() {
    let certs = lab_certs();
    let sink = Sink::start("udp", certs.path(), &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let chart = dir.path().join("run.svg");
    let chart_arg = chart.to_string_lossy().to_string();
    let v = load(
        sink.addr,
        "udp",
        certs.path(),
        &[
            "--rate",
            "400",
            "--duration",
            "2",
            "--connections",
            "3",
            "--chart",
            &chart_arg,
        ],
    )
    .await;
    let sent = n(&v, "sent") as f64;
    assert!(
        (sent - 800.0).abs() <= 80.0,
        "sent {sent} for 400/s × 2 s: {v}"
    );
    assert!(
        v["per_second"].as_array().is_some_and(|s| s.len() >= 2),
        "{v}"
    );
    let svg = std::fs::read_to_string(&chart).expect("chart written");
    assert!(svg.contains("<svg"), "{svg}");
    assert!(
        svg.contains("<polyline") || svg.contains("<path"),
        "no line drawn: {svg}"
    );

    let sweep_chart = dir.path().join("sweep.svg");
    let sweep_arg = sweep_chart.to_string_lossy().to_string();
    let steps = load(
        sink.addr,
        "udp",
        certs.path(),
        &[
            "--sweep",
            "100:200:100",
            "--duration",
            "0.5",
            "--chart",
            &sweep_arg,
        ],
    )
    .await;
    let steps = steps.as_array().expect("one summary per step");
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["rate"].as_f64(), Some(100.0));
    assert_eq!(n(&steps[1], "ok"), 100);
    let svg = std::fs::read_to_string(&sweep_chart).expect("sweep chart written");
    assert!(svg.contains("<svg") && svg.contains("<polyline"), "{svg}");
}
