//! Faults set while the lab runs, through the real admin endpoint and the real
//! `sipedge admin fault` command, and what alice (the sender on the internal side) then
//! gets on the wire; `clear` and the same request succeeds again.
//!
//! The lab is `config/lab.toml` on ephemeral ports with short timers (T1 = 20 ms, so
//! Timer F = 1.28 s) and a 1 s DNS timeout, so every fault shows in a second or two.

use std::process::Command;
use std::time::{Duration, Instant};

use sipedge::lab::peer::{Fault, NO_TRUST, RECEIVED_TRUST_HEADER};
use sipedge::lab::run::Lab;
use sipedge::lab::topology::Role;
use sipedge::transport::{Interface, Transport};
use tokio::net::TcpStream;

use crate::lab::{im, start_with};
use crate::support::*;

/// The DNS timeout the lab's edge uses here.
const DNS_TIMEOUT: Duration = Duration::from_secs(1);

async fn start() -> Lab {
    start_with("config/lab.toml", |snap| {
        snap.timers.t1 = Duration::from_millis(20);
        snap.dns.timeout = DNS_TIMEOUT;
    })
    .await
}

/// Runs `sipedge admin <words>` against the lab: (exit 0?, stdout, stderr).
pub(crate) async fn admin(lab: &Lab, words: &[&str]) -> (bool, String, String) {
    let endpoint = format!("http://{}", lab.admin_addr().expect("admin"));
    let token = lab.admin_token().expect("token").to_string();
    let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_sipedge"))
            .args(["admin", "--endpoint", &endpoint, "--token", &token])
            .args(&words)
            .output()
            .expect("run sipedge admin");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// Sets a fault and insists it was accepted.
pub(crate) async fn fault(lab: &Lab, words: &[&str]) -> String {
    let mut all = vec!["fault"];
    all.extend_from_slice(words);
    let (ok, out, err) = admin(lab, &all).await;
    assert!(ok, "fault {words:?}: {err}");
    out
}

async fn alice(lab: &Lab) -> StreamConn<TcpStream> {
    tcp_connect(
        lab.edge()
            .local_addr(Interface::Internal, Transport::Tcp)
            .expect("internal tcp"),
    )
    .await
}

/// alice's MESSAGE to sam@live.com; the final response and how long it took.
async fn alice_says(conn: &mut StreamConn<TcpStream>, id: &str) -> (String, Duration) {
    let t0 = Instant::now();
    conn.send(&im(id)).await;
    loop {
        let r = conn
            .try_recv(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{id}: no final response within 10 s"));
        if status_of(&r) >= 200 {
            return (r, t0.elapsed());
        }
    }
}

fn diagnostics_code(r: &str) -> &str {
    header(r, "ms-diagnostics")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
}

async fn assert_delivered(lab: &Lab, conn: &mut StreamConn<TcpStream>, id: &str) {
    let (r, _) = alice_says(conn, id).await;
    assert_eq!(status_of(&r), 200, "{id}: {r}");
    assert!(
        lab.peer(Role::Skype)
            .wait_for(WAIT, |m| m.call_id == id)
            .await
            .is_some(),
        "{id} reached the Skype gateway"
    );
}

#[tokio::test]
async fn tls_faults_set_at_run_time_are_504_and_clear_restores_delivery() {
    let lab = start().await;
    let mut conn = alice(&lab).await;
    // First a delivery, so the edge holds a connection to the gateway: the fault must
    // still show on the next request.
    assert_delivered(&lab, &mut conn, "tls0").await;

    let out = fault(&lab, &["skype", "refuse-tls"]).await;
    assert!(
        out.contains("skype (federation.messenger.msn.com): refuse-tls"),
        "{out}"
    );
    assert_eq!(lab.peer(Role::Skype).fault(), Fault::RefuseHandshake);
    let (r, _) = alice_says(&mut conn, "tls1").await;
    assert_eq!((status_of(&r), diagnostics_code(&r)), (504, "1047"), "{r}");

    fault(&lab, &["skype", "clear"]).await;
    assert_delivered(&lab, &mut conn, "tls2").await;

    fault(&lab, &["skype", "wrong-cert"]).await;
    let (r, _) = alice_says(&mut conn, "tls3").await;
    assert_eq!((status_of(&r), diagnostics_code(&r)), (504, "1010"), "{r}");
    assert!(lab
        .peer(Role::Skype)
        .received()
        .iter()
        .all(|m| m.call_id != "tls1" && m.call_id != "tls3"));

    fault(&lab, &["skype", "clear"]).await;
    assert_delivered(&lab, &mut conn, "tls4").await;
    lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn dns_faults_make_the_peer_unresolvable_until_cleared() {
    let lab = start().await;
    let mut conn = alice(&lab).await;
    // The SRV answer for live.com is now in the edge's cache (TTL 300 s): the fault
    // must flush it to show at once.
    assert_delivered(&lab, &mut conn, "dns0").await;

    let out = fault(&lab, &["skype", "dns-missing"]).await;
    assert!(out.contains("_sipfederationtls._tcp.live.com"), "{out}");
    let (r, took) = alice_says(&mut conn, "dns1").await;
    assert_eq!((status_of(&r), diagnostics_code(&r)), (504, "1008"), "{r}");
    assert!(took < DNS_TIMEOUT, "NXDOMAIN is immediate, took {took:?}");

    fault(&lab, &["skype", "clear"]).await;
    // The NXDOMAIN was cached too (negative TTL 60 s): clear flushes it.
    assert_delivered(&lab, &mut conn, "dns2").await;

    fault(&lab, &["skype", "dns-timeout"]).await;
    let (r, took) = alice_says(&mut conn, "dns3").await;
    assert_eq!((status_of(&r), diagnostics_code(&r)), (504, "1008"), "{r}");
    assert!(
        took >= DNS_TIMEOUT && took < DNS_TIMEOUT * 4,
        "the lookup waits out the 1 s resolver timeout, took {took:?}"
    );

    fault(&lab, &["skype", "clear"]).await;
    assert_delivered(&lab, &mut conn, "dns4").await;
    lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn answer_faults_status_delay_and_drop_then_clear() {
    let lab = start().await;
    let mut conn = alice(&lab).await;

    fault(&lab, &["skype", "status", "486"]).await;
    let (r, _) = alice_says(&mut conn, "ans1").await;
    assert_eq!((status_of(&r), diagnostics_code(&r)), (486, "1034"), "{r}");

    // A text with spaces and quotes passes as typed.
    fault(
        &lab,
        &[
            "skype",
            "status",
            "480",
            "--diagnostics",
            "2000;reason=\"Temporarily unavailable\"",
        ],
    )
    .await;
    let (r, _) = alice_says(&mut conn, "ans2").await;
    assert_eq!(status_of(&r), 480, "{r}");
    assert_eq!(
        header(&r, "ms-diagnostics"),
        Some("2000;reason=\"Temporarily unavailable\""),
        "{r}"
    );

    fault(&lab, &["skype", "delay", "700"]).await;
    let (r, took) = alice_says(&mut conn, "ans3").await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(took >= Duration::from_millis(700), "took {took:?}");

    fault(&lab, &["skype", "drop"]).await;
    let (r, took) = alice_says(&mut conn, "ans4").await;
    assert_eq!(status_of(&r), 408, "{r}");
    assert!(
        took < Duration::from_secs(5),
        "Timer F is 64 × 20 ms, took {took:?}"
    );
    assert!(lab
        .peer(Role::Skype)
        .wait_for(WAIT, |m| m.call_id == "ans4")
        .await
        .is_some());

    let (ok, list, _) = admin(&lab, &["fault"]).await;
    assert!(
        ok && list.contains("skype (federation.messenger.msn.com): drop"),
        "{list}"
    );
    assert!(list.contains("partner (sip.fabrikam.test): none"), "{list}");

    fault(&lab, &["skype", "clear"]).await;
    let (r, took) = alice_says(&mut conn, "ans5").await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(took < Duration::from_millis(700), "took {took:?}");
    // The gateway reports the trust marking it received.
    let trust = header(&r, RECEIVED_TRUST_HEADER).unwrap_or(NO_TRUST);
    assert!(trust.contains("ms-ep-fqdn=accessedge.contoso.test"), "{r}");
    lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn bad_fault_requests_name_the_valid_choices_and_exit_1() {
    let lab = start().await;
    for (words, needles) in [
        (
            &["fault", "gateway", "drop"][..],
            &[
                "unknown role `gateway`",
                "skype, partner, discovered, pool, hosting, blocked",
            ][..],
        ),
        (
            &["fault", "skype", "explode"],
            &["unknown fault `explode`", "refuse-tls", "dns-timeout"],
        ),
        (&["fault", "skype", "delay", "soon"], &["milliseconds"]),
        (&["fault", "pool", "wrong-cert"], &["plain TCP"]),
        (&["fault", "pool", "dns-missing"], &["not by DNS"]),
    ] {
        let (ok, _, err) = admin(&lab, words).await;
        assert!(!ok, "{words:?} must fail");
        for n in needles {
            assert!(err.contains(n), "{words:?}: `{n}` not in {err}");
        }
    }
    // Nothing changed.
    assert_eq!(lab.peer(Role::Skype).fault(), Fault::None);
    assert_eq!(lab.peer(Role::Pool).fault(), Fault::None);
    lab.shutdown(Duration::from_millis(200)).await;
}
