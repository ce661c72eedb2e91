//! Every shipped config parses; `check-config` reports bad keys and values with lines.

use std::process::Command;

#[test]
fn every_file_in_config_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("config dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("toml") {
            if let Err(e) = sipedge::config::Snapshot::load(&path) {
                panic!("{} does not parse:\n{e}", path.display());
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "expected lab, example and the two bench configs, found {checked}"
    );
}

fn check_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run sipedge");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

const GOOD: &str = r#"[edge]
local_domains = ["contoso.test"]

[interfaces.external]
fqdn = "accessedge.contoso.test"
address = "127.0.0.1"
udp_port = 5060

[interfaces.internal]
fqdn = "edge-int.contoso.test"
address = "127.0.0.2"
udp_port = 5060

[pool]
target = "127.0.0.1:5070"
transport = "udp"
"#;

#[test]
fn check_config_accepts_a_good_file() {
    let (ok, out) = check_config(GOOD);
    assert!(ok, "{out}");
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn check_config_names_an_unknown_key_and_its_line() {
    let (ok, out) = check_config(&GOOD.replace(
        "udp_port = 5060\n\n[interfaces.internal]",
        "udp_port = 5060\nudp_prot = 1\n\n[interfaces.internal]",
    ));
    assert!(!ok);
    assert!(out.contains("line 8"), "{out}");
    assert!(out.contains("udp_prot"), "{out}");
}

#[test]
fn check_config_names_a_bad_value_and_what_would_be_valid() {
    let (ok, out) = check_config(&GOOD.replace("transport = \"udp\"", "transport = \"sctp\""));
    assert!(!ok);
    assert!(out.contains("line 16"), "{out}");
    assert!(out.contains("`pool.transport`"), "{out}");
    assert!(out.contains("expected udp, tcp or tls"), "{out}");
}

#[test]
fn check_config_reports_what_run_would_refuse_at_start_each_with_its_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.toml");
    std::fs::write(dir.path().join("bad.zone"), "this is not a zone\n").expect("zone");
    std::fs::write(
        &path,
        r#"[edge]
local_domains = ["contoso.test"]

[interfaces.external]
fqdn = "accessedge.contoso.test"
address = "127.0.0.1"
tcp_port = 5999
tls_port = 5998

[interfaces.external.tls]
cert = "missing.crt"
key = "missing.key"
trust_anchors = ["missing-ca.crt"]

[interfaces.internal]
fqdn = "edge-int.contoso.test"
address = "127.0.0.2"
tcp_port = 5060

[pool]
target = "127.0.0.1:5070"
transport = "tcp"

[dns]
zone_file = "bad.zone"
zone_listen = "127.0.0.2:5060"

[admin]
listen = "127.0.0.1:5998"
"#,
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for (line, key, says) in [
        (10, "interfaces.external.tls", "missing.crt"),
        (25, "dns.zone_file", "bad.zone"),
        (26, "dns.zone_listen", "interfaces.internal.tcp_port"),
        (29, "admin.listen", "interfaces.external.tls_port"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("line {line}: `{key}`")) && l.contains(says)),
            "line {line} `{key}` saying {says} in:\n{err}"
        );
    }
    assert!(err.contains("4 problem(s)"), "{err}");
}
