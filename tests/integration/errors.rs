//! Errors that tell the truth (issue 14 item 6): each message names what failed, where,
//! and nothing it did not come from.

use std::process::Command;

use sipedge::transport::{Interface, Transport};

use crate::support::*;

/// `sipedge run` on `config` (beside `files`, in a temporary folder), which must fail to
/// start: its stderr.
fn run_fails(config: &str, files: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, config).expect("write");
    let runtime = tempfile::tempdir().expect("runtime dir");
    let out = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .env("XDG_RUNTIME_DIR", runtime.path())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run sipedge");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    stderr
}

/// A TCP port on 127.0.0.1 nothing listens on: bound, then closed, so a connect is refused.
fn closed_tcp_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test]
async fn a_pool_refusing_its_connection_is_answered_as_the_internal_next_hop_not_a_federated_peer()
{
    let pool = closed_tcp_port();
    let partner = UdpPeer::bind("127.0.0.3").await;
    let edge = TestEdge::start(&base_config(pool, "tcp", partner.addr(), "udp")).await;
    let client = UdpPeer::bind("127.0.0.9").await;
    let via = format!(
        "SIP/2.0/UDP 127.0.0.9:{};branch=z9hG4bKpoolgone",
        client.addr().port()
    );
    // A body, so the edge's answer to an external datagram may be as large as it needs
    // (it never answers one larger than the request: amplification).
    let body = "x".repeat(600);
    let req = request(
        "MESSAGE",
        "sip:bob@contoso.test",
        "sip:dan@fabrikam.test",
        "sip:bob@contoso.test",
        &via,
        "pool-refused-1",
        &["Content-Type: text/plain"],
        &body,
    );
    client
        .send(edge.addr(Interface::External, Transport::Udp), &req)
        .await;
    let (answer, _) = client.recv_final_or_request().await;
    assert_eq!(status_of(&answer), 504, "{answer}");
    // Toward the outside only the public form goes; it must not borrow the federation
    // TLS code (1047) for a plain TCP connection to our own pool.
    let public = header(&answer, "ms-diagnostics-public").unwrap_or_default();
    assert!(public.starts_with("1046;"), "{answer}");
    assert!(!answer.contains("TLS negotiation"), "{answer}");
    assert!(!answer.contains("federated"), "{answer}");
    assert!(public.contains("internal next hop"), "{answer}");
}

#[test]
fn a_port_in_use_is_reported_with_its_os_error_once() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let pool = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let config =
        crate::binary::config(pool, "").replacen("udp_port = 0", &format!("udp_port = {port}"), 1);
    let stderr = run_fails(&config, &[]);
    let line = stderr
        .lines()
        .find(|l| l.contains("cannot bind"))
        .unwrap_or_else(|| panic!("no bind error in {stderr}"));
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert_eq!(line.matches("os error").count(), 1, "{line}");
    drop(taken);
}

#[test]
fn a_zone_port_in_use_is_named_as_the_dns_zone_not_an_interface() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let zone_listen = taken.local_addr().expect("addr");
    let zone = "$ORIGIN test.\n$TTL 60\n@ IN SOA ns.test. admin.test. 1 60 60 60 60\n";
    let pool = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let extra = format!("\n[dns]\nzone_file = \"lab.zone\"\nzone_listen = \"{zone_listen}\"\n");
    let stderr = run_fails(&crate::binary::config(pool, &extra), &[("lab.zone", zone)]);
    let line = stderr
        .lines()
        .find(|l| l.contains(&zone_listen.to_string()))
        .unwrap_or_else(|| panic!("no error naming {zone_listen} in {stderr}"));
    assert!(line.contains("DNS zone"), "{line}");
    assert!(!line.contains("interface"), "{line}");
    drop(taken);
}

/// `sipedge send --from sip:alice@contoso.test --to TO` with `args`: exit code and stderr.
fn send_as_alice(to: &str, args: &[&str]) -> (Option<i32>, String) {
    // No running edge of another test may be found through the state files.
    let runtime = tempfile::tempdir().expect("runtime dir");
    let out = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .env("XDG_RUNTIME_DIR", runtime.path())
        .args(["send", "--from", "sip:alice@contoso.test", "--to", to])
        .args(args)
        .output()
        .expect("run sipedge send");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn send_refuses_a_malformed_request_uri_before_anything_goes_out() {
    let (code, stderr) = send_as_alice("sip:x@@live.com", &["--edge", "127.0.0.1:9"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("sip:x@@live.com"), "{stderr}");
    assert!(stderr.contains("--to"), "{stderr}");
    assert!(
        !stderr.contains("cannot reach"),
        "nothing was sent: {stderr}"
    );
}

#[test]
fn send_takes_a_host_name_for_the_edge_as_its_help_says() {
    // Port 9 on loopback is closed: the point is that `localhost:9` is accepted and
    // resolved, and the failure is the connection, not the argument.
    let args = ["--transport", "tcp", "--edge", "localhost:9"];
    let (_, stderr) = send_as_alice("sip:bob@fabrikam.test", &args);
    assert!(!stderr.contains("invalid value"), "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    assert!(stderr.contains(":9"), "{stderr}");
}
