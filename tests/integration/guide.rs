//! README's "Federating a real SIP server with the lab edge": its Kamailio and TLS snippets
//! are the files the interoperability suite runs, its edge config loads, and
//! `sipedge certs --name` makes the partner's certificate it starts from.

use std::path::{Path, PathBuf};
use std::process::Command;

const GUIDE: &str = "## Federating a real SIP server with the lab edge";
const MARKER: &str = "<!-- interop-snippet: ";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The guide's section of README.md.
fn guide() -> String {
    let readme = read("README.md");
    let start = readme.find(GUIDE).expect("README has the guide");
    let rest = &readme[start + GUIDE.len()..];
    rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
}

/// The fenced block right after each `<!-- interop-snippet: FILE -->` line, with FILE.
fn snippets(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(file) = line
            .strip_prefix(MARKER)
            .and_then(|l| l.strip_suffix(" -->"))
        else {
            continue;
        };
        assert!(
            lines.next().is_some_and(|l| l.starts_with("```")),
            "a fenced block follows the marker for {file}"
        );
        let block = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .map(str::to_string)
            .collect();
        out.push((file.to_string(), block));
    }
    out
}

/// The first line of `snippet` (blank lines aside) that is not in `file` after the lines
/// before it, compared without surrounding blanks.
fn first_missing(snippet: &[String], file: &str) -> Option<String> {
    let mut rest = file.lines().map(str::trim);
    snippet
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .find(|want| !rest.any(|have| have == *want))
        .map(str::to_string)
}

#[test]
fn the_readme_kamailio_and_tls_snippets_are_what_the_interop_suite_runs() {
    let found = snippets(&guide());
    let files: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        files,
        ["tests/interop/kamailio.cfg", "tests/interop/tls.cfg"]
    );
    for (file, lines) in &found {
        assert!(
            lines.len() > 10,
            "{file}: the snippet is {} lines",
            lines.len()
        );
        if let Some(line) = first_missing(lines, &read(file)) {
            panic!("README's snippet line `{line}` is not in {file} (or not in this order)");
        }
    }
}

#[test]
fn a_snippet_line_the_suite_config_lacks_or_holds_out_of_order_is_reported() {
    let cfg = read("tests/interop/kamailio.cfg");
    let lines = |ls: &[&str]| ls.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    assert_eq!(
        first_missing(&lines(&["enable_tls=yes", "loadmodule \"tls.so\""]), &cfg),
        None
    );
    assert_eq!(
        first_missing(
            &lines(&["enable_tls=yes", "modparam(\"tls\", \"verify\", 0)"]),
            &cfg
        ),
        Some("modparam(\"tls\", \"verify\", 0)".to_string())
    );
    assert_eq!(
        first_missing(&lines(&["loadmodule \"tls.so\"", "enable_tls=yes"]), &cfg),
        Some("enable_tls=yes".to_string())
    );
}

#[test]
fn the_readme_edge_config_for_a_partner_loads_beside_a_minimal_edge() {
    let guide = guide();
    let start = guide.find("```toml\n").expect("the guide has a toml block") + "```toml\n".len();
    let block = &guide[start..start + guide[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, format!("{}\n{block}", sipedge::config::TCP_EDGE)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sipedge certs --name NAME --out DIR`.
fn certs_with_name(name: &str, out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .args(["certs", "--name", name, "--out"])
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn certs_name_issues_the_partners_leaf_beside_the_lab_set_and_refuses_what_is_no_dns_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = certs_with_name("sip.partner.test", dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    for file in [
        "ca.crt",
        "accessedge.contoso.test.crt",
        "sip.partner.test.crt",
        "sip.partner.test.key",
    ] {
        assert!(
            listed.contains(&*dir.path().join(file).to_string_lossy()),
            "{file} in {listed}"
        );
        assert!(dir.path().join(file).exists(), "{file}");
    }

    let empty = tempfile::tempdir().unwrap();
    let out = certs_with_name("../sip.partner.test", empty.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`../sip.partner.test` is not a DNS name"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}
