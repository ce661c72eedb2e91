//! Traffic toward and from federated partners as a whole: how many TLS connections the
//! edge opens per partner (OutgoingTlsCountForFederatedPartners), and the discovered
//! partners it throttles as suspicious, reports and puts on its watch list.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use crate::federation::{msg, northwind_connected_with, FedLab, BASE_RECORDS, NORTHWIND_MARK};
use crate::support::*;
use crate::tls::{tls_server, Pki};
use sipedge::transport::Interface;

type PeerStream = StreamConn<tokio_rustls::server::TlsStream<TcpStream>>;

/// A partner edge on 127.0.0.6 that completes each TLS handshake and then reads nothing
/// (a small receive buffer, so the edge's writes back up quickly): the edge can only
/// relieve the load by opening more connections. Each accepted connection is counted and
/// handed to the test, which may start reading it later.
async fn stalled_partner(
    pki: &Pki,
) -> (u16, Arc<AtomicUsize>, mpsc::UnboundedReceiver<PeerStream>) {
    let (unused, acceptor) = tls_server(pki, "127.0.0.6", "sip.northwind.test").await;
    drop(unused);
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.6:0".parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(s) = acceptor.accept(tcp).await else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            if tx.send(StreamConn::new(s)).is_err() {
                return;
            }
        }
    });
    (port, accepted, rx)
}

/// Answers 200 to every request on `conn`, until it closes.
fn answer_all(mut conn: PeerStream) {
    tokio::spawn(async move {
        while let Some(m) = conn.try_recv(std::time::Duration::from_secs(30)).await {
            if !m.starts_with("SIP/2.0") {
                conn.send(&response(&m, 200, "OK", &[])).await;
            }
        }
    });
}

#[tokio::test]
async fn outgoing_tls_count_for_federated_partners_is_how_many_connections_a_partner_gets_under_load(
) {
    const COUNT: usize = 2;
    let pki = Pki::new();
    let (port, accepted, mut streams) = stalled_partner(&pki).await;
    let records = format!(
        "{BASE_RECORDS}
_sipfederationtls._tcp.northwind.test. IN SRV 10 100 {port} sip.northwind.test.
sip.northwind.test. IN A 127.0.0.6
"
    );
    let lab = FedLab::start(pki, &records, |f| {
        f.replace(
            "outgoing_tls_count_for_federated_partners = 4",
            &format!("outgoing_tls_count_for_federated_partners = {COUNT}"),
        )
    })
    .await;
    let mut alice = lab
        .connect(Interface::Internal, &["pool.contoso.test"])
        .await;
    let (from, to) = ("sip:alice@contoso.test", "sip:dan@northwind.test");

    // Load until COUNT connections are open, then a thousand requests more, all decided
    // while the partner still reads nothing: every connection is backed up by then, so
    // one more would be opened if the count allowed it.
    let mut sent = 0;
    let mut extra = None;
    while extra.is_none_or(|e| sent < e) {
        assert!(
            sent < 20_000,
            "{} connection(s) after {sent} requests",
            accepted.load(Ordering::SeqCst)
        );
        alice
            .send(&msg("MESSAGE", from, to, &format!("load{sent}"), &[]))
            .await;
        sent += 1;
        if extra.is_none() && accepted.load(Ordering::SeqCst) >= COUNT {
            extra = Some(sent + 1000);
        }
    }
    let relayed = || {
        let text = lab.edge.metrics_text();
        let label = "interface=\"external\",direction=\"out\",method=\"MESSAGE\"";
        crate::metrics::sum(&text, "sipedge_messages_total", label)
    };
    let deadline = tokio::time::Instant::now() + WAIT * 4;
    while relayed() < sent as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {sent} relayed",
            relayed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The partner catches up: every request is answered, so every one of them has gone
    // out over a connection the partner accepted.
    let mut open = Vec::new();
    while let Ok(s) = streams.try_recv() {
        open.push(s);
    }
    for s in open {
        answer_all(s);
    }
    let mut answered = 0;
    while answered < sent {
        let r = alice.recv().await;
        assert_eq!(status_of(&r), 200, "{r}");
        answered += 1;
        while let Ok(s) = streams.try_recv() {
            answer_all(s);
        }
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        COUNT,
        "connections the partner accepted for {sent} requests"
    );
}

/// The federation sections with suspicion after `failures` failed answers making 80 % of
/// the partner's answered requests, and the admin endpoint on.
fn suspicious_after(failures: u32) -> impl Fn(String) -> String {
    move |f| {
        f.replace(
            "[access_edge]\n",
            &format!("[access_edge]\nsuspicious_min_failures = {failures}\nsuspicious_failure_percent = 80\n"),
        ) + "\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    }
}

/// Runs `sipedge admin <args>` against the edge's admin endpoint: (success, stdout + stderr).
async fn admin(edge: &TestEdge, args: &[&str]) -> (bool, String) {
    let endpoint = format!("http://{}", edge.edge.admin_addr().expect("admin endpoint"));
    let token = edge.edge.admin_token().expect("token").to_string();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("admin")
        .args(args)
        .args(["--endpoint", &endpoint, "--token", &token])
        .output()
        .await
        .expect("run sipedge admin");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The value of one unlabelled or labelled sample in the exposition text.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// `sipedge_discovered_partner_events_total{event="<event>"}`.
fn partner_events(text: &str, event: &str) -> u64 {
    let series = format!("sipedge_discovered_partner_events_total{{event=\"{event}\"}}");
    metric(text, &series)
}

#[tokio::test]
async fn a_discovered_partner_whose_requests_mostly_fail_is_throttled_watched_and_released() {
    let (lab, mut northwind) = northwind_connected_with(suspicious_after(3)).await;
    let (dan, mark) = (
        "sip:dan@northwind.test",
        [NORTHWIND_MARK, "X-Test-Answer: 404"],
    );
    // Three lookups of users the pool does not know: three 404s, all failures.
    for i in 0..3 {
        let to = format!("sip:nobody{i}@contoso.test");
        northwind
            .send(&msg("MESSAGE", dan, &to, &format!("enum{i}"), &mark))
            .await;
        let r = northwind.recv().await;
        assert_eq!(status_of(&r), 404, "{r}");
    }

    // Now one message a second: the next goes through, the one right after it does not.
    let alice = "sip:alice@contoso.test";
    northwind
        .send(&msg("MESSAGE", dan, alice, "slow1", &[NORTHWIND_MARK]))
        .await;
    assert_eq!(status_of(&northwind.recv().await), 200);
    northwind
        .send(&msg("MESSAGE", dan, alice, "slow2", &[NORTHWIND_MARK]))
        .await;
    let r = northwind.recv().await;
    assert_eq!(status_of(&r), 503, "{r}");
    assert_eq!(diagnostics_code(&r, "ms-diagnostics-public"), "1913", "{r}");
    assert_eq!(header(&r, "retry-after"), Some("1"), "{r}");

    // The admin view names it and why; the counters and the gauge agree.
    let (ok, view) = admin(&lab.edge, &["watch-list"]).await;
    assert!(ok, "{view}");
    let line = view.lines().next().unwrap_or("");
    assert!(line.starts_with("northwind.test suspicious:"), "{view}");
    assert!(line.contains("1 answered ok, 3 failed"), "{view}");
    let text = lab.edge.metrics_text();
    assert_eq!(partner_events(&text, "suspicious"), 1, "{text}");
    assert_eq!(metric(&text, "sipedge_flagged_partners"), 1, "{text}");
    let refused = "sipedge_decisions_total{outcome=\"reject\",rule=\"suspicious-partner\"}";
    assert_eq!(metric(&text, refused), 1, "{text}");

    // Released: two messages at once pass again (DiscoveredPartnerStandardRate is 20).
    let (ok, out) = admin(&lab.edge, &["release", "northwind.test"]).await;
    assert!(ok && out.contains("northwind.test released"), "{out}");
    for id in ["fast1", "fast2"] {
        northwind
            .send(&msg("MESSAGE", dan, alice, id, &[NORTHWIND_MARK]))
            .await;
        let r = northwind.recv().await;
        assert_eq!(status_of(&r), 200, "{id}: {r}");
    }
    let (ok, out) = admin(&lab.edge, &["release", "northwind.test"]).await;
    assert!(
        !ok && out.contains("neither on the watch list nor suspicious"),
        "{out}"
    );
    let text = lab.edge.metrics_text();
    assert_eq!(partner_events(&text, "released"), 1, "{text}");
    assert_eq!(metric(&text, "sipedge_flagged_partners"), 0, "{text}");

    // A DiscoveredPartnerReportPeriodMinutes later the period is reported and shown.
    let later = std::time::Instant::now() + std::time::Duration::from_secs(61 * 60);
    lab.edge.edge.core().tick(later);
    let (ok, view) = admin(&lab.edge, &["watch-list"]).await;
    assert!(ok, "{view}");
    assert!(view.contains("last report at"), "{view}");
    assert!(
        view.lines()
            .any(|l| l.starts_with("northwind.test: 6 admitted, 1 over the rate, 0 refused by the contacts limit, 2 answered ok, 0 failed, 1 distinct contacts")),
        "{view}"
    );
    let text = lab.edge.metrics_text();
    assert_eq!(partner_events(&text, "report"), 1, "{text}");
}
