//! Reload and restart under load (issue 7), through the real binary: SIGHUP reloads and
//! admin cmdlets while legitimate traffic flows fail nothing and close no connection;
//! SIGTERM lets the transactions in flight finish, refuses new ones with 503 +
//! Retry-After, and exits 0 within the drain deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::binary::{addr_in, Running};
use crate::legit::{self, rss_kib, FakePool, Legit, Via};

const TOKEN: &str = "hostile-reload-token-0123";

/// Static routing to the pool over TCP, TCP listeners on both sides, the admin endpoint;
/// `extra` (federation sections) is appended.
fn config(pool: SocketAddr, extra: &str) -> String {
    legit::tcp_edge(&pool.to_string())
        + &format!("\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n{extra}")
}

/// An admin request from a blocking thread (the endpoint's client is synchronous).
async fn admin(
    endpoint: String,
    method: &'static str,
    path: &'static str,
    body: String,
) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        sipedge::admin::http::send(&endpoint, method, path, Some(TOKEN), &body)
            .expect("admin endpoint")
    })
    .await
    .expect("join")
}

/// Waits until `GET /config` mentions `needle` (a reload or a cmdlet took effect).
async fn config_shows(endpoint: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = admin(endpoint.to_string(), "GET", "/config", String::new()).await;
        if status == 200 && body.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/config never showed {needle}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a signal did: the exit status, when the signal was being sent and when it had
/// been delivered, and how long the process took to exit.
struct Stopped {
    status: std::process::ExitStatus,
    sending: Instant,
    delivered: Instant,
    took: Duration,
}

/// Sends a signal and waits for the process to exit.
async fn stop(edge: Running, sig: &'static str) -> Stopped {
    tokio::task::spawn_blocking(move || {
        let mut edge = edge;
        let sending = Instant::now();
        edge.signal(sig);
        let delivered = Instant::now();
        loop {
            if let Some(status) = edge.child.try_wait().expect("wait") {
                return Stopped {
                    status,
                    sending,
                    delivered,
                    took: sending.elapsed(),
                };
            }
            assert!(
                sending.elapsed() < Duration::from_secs(15),
                "sipedge did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_and_admin_changes_under_load_fail_nothing_and_drop_no_connection() {
    let pool = FakePool::start("127.0.0.1", Duration::ZERO).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, config(pool.addr, "")).expect("write");
    let (edge, internal, endpoint) = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            let edge = Running::start(&path);
            let internal = addr_in(&edge.wait_for(&[
                "listening",
                "\"interface\":\"internal\"",
                "\"transport\":\"tcp\"",
            ]));
            let admin = addr_in(&edge.wait_for(&["admin endpoint listening"]));
            (edge, internal, format!("http://{admin}"))
        }
    })
    .await
    .expect("start");
    let pid = edge.child.id();
    // Internal → a pool user: the request is for a local domain, so the federation objects
    // the reloads and cmdlets change do not decide it.
    let plan = Legit {
        duration: Duration::from_secs(3),
        uri: "sip:bob@contoso.test",
        from: "sip:alice@contoso.test",
        ..Legit::external(internal, Via::Tcp, "127.0.0.2", "reload")
    };
    let traffic = tokio::spawn(legit::run(plan.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib(pid);
    let mut blocked = String::new();
    for i in 1..=3 {
        blocked.push_str(&format!(
            "\n[[blocked_domain]]\ndomain = \"reload{i}.test\"\n"
        ));
        std::fs::write(&path, config(pool.addr, &blocked)).expect("rewrite");
        let (kill, pid_s) = ("HUP", pid.to_string());
        let ok = tokio::task::spawn_blocking(move || {
            std::process::Command::new("kill")
                .arg(format!("-{kill}"))
                .arg(pid_s)
                .status()
                .expect("kill")
                .success()
        })
        .await
        .expect("join");
        assert!(ok, "SIGHUP sent");
        config_shows(&endpoint, &format!("reload{i}.test")).await;
        let (status, body) = admin(
            endpoint.clone(),
            "POST",
            "/cmdlet",
            format!("New-CsAllowedDomain -Identity admin{i}.test"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        config_shows(&endpoint, &format!("admin{i}.test")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let report = traffic.await.expect("traffic");
    let rss_after = rss_kib(pid);
    println!("ROBUSTNESS reload rss_kib before={rss_before} after={rss_after}");
    report.assert_served(
        "restart::reloads_and_admin_changes_under_load_fail_nothing_and_drop_no_connection",
        &plan,
    );
    assert_eq!(
        report.ok, report.sent,
        "zero failed transactions: {report:?}"
    );
    assert_eq!(report.closes, 0, "zero dropped connections");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    let stopped = stop(edge, "TERM").await;
    assert!(stopped.status.success(), "exit status {}", stopped.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_in_flight_refuses_new_and_exits_0() {
    // The pool answers after 1 s, so a second's worth of transactions is in flight at SIGTERM.
    let pool = FakePool::start("127.0.0.1", Duration::from_secs(1)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, config(pool.addr, "")).expect("write");
    let (edge, external) = tokio::task::spawn_blocking(move || {
        let edge = Running::start(&path);
        let external = addr_in(&edge.wait_for(&[
            "listening",
            "\"interface\":\"external\"",
            "\"transport\":\"tcp\"",
        ]));
        (edge, external)
    })
    .await
    .expect("start");
    let pid = edge.child.id();
    // Sending goes on 0.5 s past SIGTERM, inside the drain.
    let plan = Legit {
        duration: Duration::from_secs(2),
        ..Legit::external(external, Via::Tcp, "127.0.0.10", "term")
    };
    let traffic = tokio::spawn(legit::run(plan.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss = rss_kib(pid);
    let stopping = tokio::spawn(stop(edge, "TERM"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = tokio::net::TcpStream::connect(external).await;
    assert!(late.is_err(), "a new connection is refused while draining");
    let report = traffic.await.expect("traffic");
    let Stopped {
        status,
        sending,
        delivered,
        took,
    } = stopping.await.expect("stop");
    assert!(status.success(), "exit status {status}");
    assert!(
        took < Duration::from_secs(3) + Duration::from_millis(1500),
        "exited {took:?} after SIGTERM (drain deadline 3 s)"
    );
    let before: Vec<u16> = report
        .outcomes
        .iter()
        .filter(|(t, _)| *t < sending)
        .map(|(_, s)| *s)
        .collect();
    let after: Vec<u16> = report
        .outcomes
        .iter()
        .filter(|(t, _)| *t >= delivered + Duration::from_millis(50))
        .map(|(_, s)| *s)
        .collect();
    let finished = before.iter().filter(|s| **s == 200).count();
    println!(
        "ROBUSTNESS test=restart::sigterm_under_load_finishes_in_flight_refuses_new_and_exits_0 before_term={} finished={} after_term={} refused_503={} rss_kib={rss} exit_after_ms={}",
        before.len(),
        finished,
        after.len(),
        after.iter().filter(|s| **s == 503).count(),
        took.as_millis()
    );
    assert_eq!(
        finished,
        before.len(),
        "every transaction begun before SIGTERM finishes: {report:?}"
    );
    assert!(
        !after.is_empty() && after.iter().all(|s| *s == 503),
        "new ones are refused with 503: {after:?}"
    );
    assert_eq!(
        report.refused_with_retry_after,
        report.refused.values().sum::<u64>(),
        "every refusal carries Retry-After"
    );
    assert_eq!(report.unanswered, 0, "nothing is left unanswered");
}
