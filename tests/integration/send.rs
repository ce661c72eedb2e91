//! The real `sipedge send` binary against a lab running in-process on ephemeral ports:
//! the config it reads is config/lab.toml with the ports the lab actually bound (and
//! absolute certificate paths), so it takes the same path as against `sipedge lab`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sipedge::lab::peer::Received;
use sipedge::lab::run::Lab;
use sipedge::lab::topology::Role;
use sipedge::transport::{Interface, Transport};

use crate::lab::{repo, start_with};
use crate::support::*;

async fn start() -> Lab {
    start_with("config/lab.toml", |_| {}).await
}

/// Runs `send` with `args`, which must exit 0, and returns its output and the request
/// `role`'s peer received (matched by the Call-ID `send` printed).
async fn deliver(lab: &Lab, config: &Path, args: &[&str], role: Role) -> (String, Received) {
    let (ok, out, err) = send(config, args).await;
    assert!(ok, "exit 0 on 2xx: {out}{err}");
    let call_id = out
        .lines()
        .find_map(|l| l.strip_prefix("call-id: "))
        .unwrap_or_else(|| panic!("no call-id line: {out}"))
        .to_string();
    let got = lab
        .peer(role)
        .wait_for(WAIT, |m| m.call_id == call_id)
        .await
        .unwrap_or_else(|| panic!("{call_id} did not reach the {role} peer"));
    (out, got)
}

/// `send`'s report names the trust value the far side received.
fn assert_reports_trust(out: &str, trust: &str) {
    assert!(
        out.contains(&format!(
            "ms-edge-proxy-message-trust at the far side: {trust}\n"
        )),
        "{out}"
    );
}

/// config/lab.toml with the lab's bound ports (`port_of` gives each; `None` keeps it),
/// absolute paths, and `certs/` beside it, written into `dir`.
fn write_config(dir: &Path, port_of: impl Fn(Interface, Transport) -> Option<u16>) -> PathBuf {
    let text = std::fs::read_to_string(repo("config/lab.toml")).expect("lab.toml");
    let mut doc: toml_edit::DocumentMut = text.parse().expect("lab.toml is TOML");
    let certs = repo("certs");
    for (iface, name) in [
        (Interface::External, "external"),
        (Interface::Internal, "internal"),
    ] {
        let side = &mut doc["interfaces"][name];
        for (t, key) in [
            (Transport::Udp, "udp_port"),
            (Transport::Tcp, "tcp_port"),
            (Transport::Tls, "tls_port"),
        ] {
            if let Some(p) = port_of(iface, t) {
                side[key] = toml_edit::value(i64::from(p));
            }
        }
        let tls = &mut side["tls"];
        for key in ["cert", "key"] {
            let file = Path::new(tls[key].as_str().expect("path"))
                .file_name()
                .unwrap();
            tls[key] = toml_edit::value(certs.join(file).display().to_string());
        }
        let mut anchors = toml_edit::Array::new();
        anchors.push(certs.join("ca.crt").display().to_string());
        tls["trust_anchors"] = toml_edit::value(anchors);
    }
    doc["dns"]["zone_file"] = toml_edit::value(repo("config/lab.zone").display().to_string());
    doc["admin"]["listen"] = toml_edit::value("127.0.0.1:0");
    let path = dir.join("lab.toml");
    std::fs::write(&path, doc.to_string()).expect("write config");
    std::os::unix::fs::symlink(&certs, dir.join("certs")).expect("link certs");
    path
}

fn config_for(lab: &Lab, dir: &Path) -> PathBuf {
    write_config(dir, |i, t| lab.edge().local_addr(i, t).map(|a| a.port()))
}

/// Runs `sipedge send --config <config> <args>`: (exit 0?, stdout, stderr). Killed by
/// PID if it outlives 20 s.
async fn send(config: &Path, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sipedge"));
    cmd.args(["send", "--timeout", "10", "--config"])
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("spawn sipedge send");
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("try_wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sipedge send did not exit within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn send_delivers_and_prints_the_trust_header_the_far_side_received() {
    let lab = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&lab, dir.path());

    // alice → live.com: internal interface, TLS with the pool's certificate (defaults).
    let (out, got) = deliver(
        &lab,
        &config,
        &[
            "--from",
            "sip:alice@contoso.test",
            "--to",
            "sip:sam@live.com",
            "--body",
            "hi sam",
        ],
        Role::Skype,
    )
    .await;
    assert!(out.starts_with("SIP/2.0 200 OK\n"), "{out}");
    assert!(out.contains("ms-diagnostics: (none)"), "{out}");
    assert!(got.text.ends_with("hi sam"), "{}", got.text);
    let trust = got.trust.expect("the edge marked it");
    assert!(
        trust.contains("ms-ep-fqdn=accessedge.contoso.test"),
        "{trust}"
    );
    assert_reports_trust(&out, &trust);
    assert!(out.contains("sent to: internal tls 127.0.0.2:"), "{out}");

    // A partner user → alice: external interface with the partner's certificate; the
    // pool reports the edge's own marking.
    let (out, got) = deliver(
        &lab,
        &config,
        &[
            "--from",
            "sip:dan@fabrikam.test",
            "--to",
            "sip:alice@contoso.test",
        ],
        Role::Pool,
    )
    .await;
    assert!(out.contains("sent to: external tls 127.0.0.1:"), "{out}");
    assert!(got.from.contains("dan@fabrikam.test"), "{}", got.from);
    assert_reports_trust(&out, &got.trust.expect("the edge marked it for the pool"));
    lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn send_exits_1_with_the_diagnostics_of_a_refusal() {
    let lab = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&lab, dir.path());
    // bob's NoPublicCloud policy keeps him from live.com.
    let (ok, out, _) = send(
        &config,
        &[
            "--from",
            "sip:bob@contoso.test",
            "--to",
            "sip:x@live.com",
            "--transport",
            "tcp",
        ],
    )
    .await;
    assert!(!ok, "exit 1 on 403: {out}");
    assert!(out.starts_with("SIP/2.0 403 "), "{out}");
    assert!(out.contains("ms-diagnostics: 1907;"), "{out}");
    assert!(out.contains("far side: (unknown"), "{out}");
    assert!(lab.peer(Role::Skype).received().is_empty());
    lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn send_invite_acks_and_hangs_up_over_udp_and_tcp() {
    // tailspin.test is hosted by LyncOnline: its SRV leads to the simulated hosting provider.
    let lab = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&lab, dir.path());
    for transport in ["tcp", "udp"] {
        let to = format!("sip:dan-{transport}@tailspin.test");
        let (ok, out, err) = send(
            &config,
            &[
                "--from",
                "sip:alice@contoso.test",
                "--to",
                &to,
                "--method",
                "INVITE",
                "--transport",
                transport,
            ],
        )
        .await;
        assert!(ok, "{transport}: {out}{err}");
        assert!(out.starts_with("SIP/2.0 200 OK\n"), "{out}");
        assert!(
            out.contains("dialog: ACK sent; BYE: SIP/2.0 200 OK"),
            "{out}"
        );
        let partner = lab.peer(Role::Hosting);
        let invite = partner
            .wait_for(WAIT, |m| m.method == "INVITE" && m.uri == to)
            .await
            .expect("the INVITE reached the partner");
        for method in ["ACK", "BYE"] {
            assert!(
                partner
                    .wait_for(WAIT, |m| m.method == method && m.call_id == invite.call_id)
                    .await
                    .is_some(),
                "{transport}: the {method} reached the partner"
            );
        }
    }
    lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn send_says_when_the_edge_is_not_reachable() {
    // A port that was just free: nothing listens on it.
    let free = std::net::TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), |_, _| Some(free));
    let (ok, out, err) = send(
        &config,
        &[
            "--from",
            "sip:alice@contoso.test",
            "--to",
            "sip:sam@live.com",
        ],
    )
    .await;
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!(
            "cannot reach the edge's internal interface at 127.0.0.2:{free} (tls)"
        )),
        "{err}"
    ); // Over UDP the refusal arrives as ICMP port unreachable.
    let (ok, _, err) = send(
        &config,
        &[
            "--from",
            "sip:alice@contoso.test",
            "--to",
            "sip:sam@live.com",
            "--transport",
            "udp",
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "cannot reach the edge's internal interface at 127.0.0.2:{free} (udp)"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn send_options_over_udp_and_a_subscribe_fetch_reach_the_gateway() {
    let lab = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&lab, dir.path());
    let from_to = [
        "--from",
        "sip:alice@contoso.test",
        "--to",
        "sip:sam@live.com",
    ];

    let args = [&from_to[..], &["--method", "options", "--transport", "udp"]].concat();
    let (out, got) = deliver(&lab, &config, &args, Role::Skype).await;
    assert_eq!(got.method, "OPTIONS");
    assert!(out.contains("sent to: internal udp 127.0.0.2:"), "{out}");

    let args = [&from_to[..], &["--method", "SUBSCRIBE"]].concat();
    let (out, got) = deliver(&lab, &config, &args, Role::Skype).await;
    assert_eq!(got.method, "SUBSCRIBE");
    assert_eq!(header(&got.text, "Expires"), Some("0"), "{}", got.text);
    assert!(out.starts_with("SIP/2.0 200 OK\n"), "{out}");
    lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn send_can_choose_the_address_it_sends_from() {
    let lab = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&lab, dir.path());
    for transport in ["tcp", "udp"] {
        let (_, got) = deliver(
            &lab,
            &config,
            &[
                "--from",
                "sip:alice@contoso.test",
                "--to",
                "sip:bob@contoso.test",
                "--transport",
                transport,
                "--source",
                "127.0.0.9",
            ],
            Role::Pool,
        )
        .await;
        let vias = headers(&got.text, "via");
        assert!(
            vias.iter().any(|v| v.contains("127.0.0.9")),
            "{transport}: the sender's Via names the chosen source: {vias:?}"
        );
    }
    lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn send_to_a_user_homed_online_goes_through_the_hosting_provider() {
    // config/lab.toml homes dave@contoso.test at LyncOnline (split domain).
    let lab = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&lab, dir.path());
    let (out, got) = deliver(
        &lab,
        &config,
        &[
            "--from",
            "sip:alice@contoso.test",
            "--to",
            "sip:dave@contoso.test",
        ],
        Role::Hosting,
    )
    .await;
    assert!(out.starts_with("SIP/2.0 200 OK\n"), "{out}");
    assert!(
        got.text
            .contains("\r\nms-split-domain-info: ms-traffic-type=SplitIntra\r\n"),
        "{}",
        got.text
    );
    assert_reports_trust(&out, &got.trust.expect("the edge marked it"));
    assert!(lab.peer(Role::Pool).received().is_empty(), "not the pool");

    // A call: the ACK and the BYE follow the dialog to LyncOnline, marked the same way.
    let call = [
        "--from",
        "sip:alice@contoso.test",
        "--to",
        "sip:dave@contoso.test",
        "--method",
        "INVITE",
    ];
    let (ok, out, err) = send(&config, &call).await;
    assert!(
        ok && out.contains("dialog: ACK sent; BYE: SIP/2.0 200 OK"),
        "{out}{err}"
    );
    let online = lab.peer(Role::Hosting);
    let invite = online
        .wait_for(WAIT, |m| m.method == "INVITE")
        .await
        .expect("the INVITE reached LyncOnline");
    for method in ["ACK", "BYE"] {
        let got = online
            .wait_for(WAIT, |m| m.method == method && m.call_id == invite.call_id)
            .await
            .unwrap_or_else(|| panic!("the {method} reached LyncOnline"));
        assert!(
            got.text
                .contains("\r\nms-split-domain-info: ms-traffic-type=SplitIntra\r\n"),
            "{}",
            got.text
        );
    }

    // The simulated LyncOnline hosts dave only: erin, moved there on the edge alone, is
    // not found at the provider.
    let hosting = lab.peer(Role::Hosting).spec();
    assert_eq!(hosting.hosted_users, ["dave@contoso.test"]);
    let line = "Move-CsUser erin@contoso.test -Target sipfed.online.lync.com";
    let (status, body) = crate::lab::admin(&lab, "POST", "/cmdlet", line).await;
    assert_eq!(status, 200, "{body}");
    let to_erin = [
        "--from",
        "sip:alice@contoso.test",
        "--to",
        "sip:erin@contoso.test",
    ];
    let (ok, out, _) = send(&config, &to_erin).await;
    assert!(!ok && out.starts_with("SIP/2.0 404 "), "{out}");
    lab.shutdown(Duration::from_millis(200)).await;
}
