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
