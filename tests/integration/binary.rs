//! The real `sipedge` binary: `run` logs one line per listener, SIGHUP reloads the
//! configuration, SIGTERM drains and exits 0; `rotate-key` rotates a topology key file.

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::*;

pub(crate) struct Running {
    pub(crate) child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, so lines can be looked for in any order.
    seen: std::cell::RefCell<Vec<String>>,
    /// Its own XDG_RUNTIME_DIR, so its state file is found by this test's commands only.
    _runtime: tempfile::TempDir,
}

impl Running {
    pub(crate) fn start(config: &std::path::Path) -> Running {
        Running::spawn(Command::new(env!("CARGO_BIN_EXE_sipedge")), config)
    }

    /// `sipedge run` on `config` through `command` (the binary itself, or a wrapper such
    /// as `ip netns exec NS <binary>` that execs it, so the child's PID is the edge's).
    pub(crate) fn spawn(mut command: Command, config: &std::path::Path) -> Running {
        let runtime = tempfile::tempdir().expect("runtime dir");
        let mut child = command
            .env("XDG_RUNTIME_DIR", runtime.path())
            .args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sipedge");
        let lines = read_lines(child.stderr.take().expect("stderr"));
        Running {
            child,
            lines,
            seen: Default::default(),
            _runtime: runtime,
        }
    }

    /// Waits for a log line containing every needle.
    pub(crate) fn wait_for(&self, needles: &[&str]) -> String {
        let matches = |line: &str| needles.iter().all(|n| line.contains(n));
        if let Some(line) = self.seen.borrow().iter().find(|l| matches(l)) {
            return line.clone();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.borrow_mut().push(line.clone());
                if matches(&line) {
                    return line;
                }
            }
        }
        panic!("no log line with {needles:?}");
    }

    /// Every line written so far, waiting up to `quiet` for each further one.
    pub(crate) fn lines_until_quiet(&self, quiet: Duration) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(quiet) {
            self.seen.borrow_mut().push(line);
        }
        self.seen.borrow().clone()
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn addr_in(line: &str) -> std::net::SocketAddr {
    let start = line.find("\"addr\":\"").expect("addr field") + 8;
    let end = line[start..].find('"').expect("end quote") + start;
    line[start..end].parse().expect("socket address")
}

/// An edge on UDP (ephemeral ports) with the pool at `pool`, and `extra` sections.
pub(crate) fn config(pool: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"[edge]
local_domains = ["contoso.test"]
drain_timeout_ms = 3000

[interfaces.external]
fqdn = "accessedge.contoso.test"
address = "127.0.0.1"
udp_port = 0

[interfaces.internal]
fqdn = "edge-int.contoso.test"
address = "127.0.0.2"
udp_port = 0

[pool]
target = "{pool}"
transport = "udp"
{extra}"#
    )
}

#[tokio::test]
async fn run_reloads_on_sighup_and_exits_0_on_sigterm() {
    let pool = UdpPeer::bind("127.0.0.1").await;
    let partner = UdpPeer::bind("127.0.0.3").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, config(pool.addr(), "")).expect("write");
    let edge = Running::start(&path);
    let line = edge.wait_for(&[
        "listening",
        "\"interface\":\"internal\"",
        "\"transport\":\"udp\"",
    ]);
    let internal = addr_in(&line);
    edge.wait_for(&["listening", "\"interface\":\"external\""]);

    let alice = UdpPeer::bind("127.0.0.2").await;
    let via = |b: &str| {
        format!(
            "SIP/2.0/UDP 127.0.0.2:{};branch=z9hG4bK{b}",
            alice.addr().port()
        )
    };
    alice
        .send(
            internal,
            &request(
                "MESSAGE",
                "sip:x@later.test",
                "sip:alice@contoso.test",
                "sip:x@later.test",
                &via("r1"),
                "reload-1",
                &[],
                "",
            ),
        )
        .await;
    let (answer, _) = alice.recv().await;
    assert_eq!(
        status_of(&answer),
        404,
        "no route before the reload: {answer}"
    );

    let route = format!(
        "\n[[routes]]\ndomain = \"later.test\"\ntarget = \"{}\"\ntransport = \"udp\"\n",
        partner.addr()
    );
    std::fs::write(&path, config(pool.addr(), &route)).expect("rewrite");
    edge.signal("HUP");
    edge.wait_for(&["configuration reloaded"]);
    alice
        .send(
            internal,
            &request(
                "MESSAGE",
                "sip:x@later.test",
                "sip:alice@contoso.test",
                "sip:x@later.test",
                &via("r2"),
                "reload-2",
                &[],
                "",
            ),
        )
        .await;
    let (got, from) = partner.recv().await;
    assert_eq!(header(&got, "call-id"), Some("reload-2"));
    partner.send(from, &response(&got, 200, "OK", &[])).await;
    assert_eq!(status_of(&alice.recv().await.0), 200);

    // A broken file on SIGHUP keeps the running configuration.
    std::fs::write(&path, "this is = not [valid").expect("break");
    edge.signal("HUP");
    edge.wait_for(&["reload failed"]);

    let mut edge = edge;
    edge.signal("TERM");
    edge.wait_for(&["stopped"]);
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = edge.child.try_wait().expect("wait") {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "sipedge did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .expect("join");
    assert!(status.success(), "exit status {status}");
}

/// `sipedge explain --config config/lab.toml ARGS`, which must exit 0: what it printed.
fn explain_on_the_lab(args: &[&str]) -> String {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lab.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("explain")
        .arg("--config")
        .arg(&config)
        .args(args)
        .output()
        .expect("run explain");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn explain_prints_the_decision_and_the_check_that_made_it() {
    let run = explain_on_the_lab;
    let bob = run(&["--from", "sip:bob@contoso.test", "--to", "sip:x@live.com"]);
    assert!(
        bob.contains(
            "DNS:      _sipfederationtls._tcp.live.com -> federation.messenger.msn.com:5061"
        ),
        "{bob}"
    );
    assert!(bob.contains("DECIDED  access-policy"), "{bob}");
    assert!(bob.contains("Decision: REJECT 403 Forbidden"), "{bob}");
    assert!(bob.contains("ms-diagnostics: 1907;"), "{bob}");
    let alice = run(&["--from", "sip:alice@contoso.test", "--to", "sip:x@live.com"]);
    assert!(
        alice.contains("Decision: FORWARD through the external interface"),
        "{alice}"
    );
    assert!(
        alice.contains("Route:    federation.messenger.msn.com:5061 over tls"),
        "{alice}"
    );
    let av = run(&[
        "--from",
        "sip:alice@contoso.test",
        "--to",
        "sip:x@live.com",
        "--method",
        "INVITE",
        "--sdp",
        "audio",
    ]);
    assert!(av.contains("ms-diagnostics: 1908;"), "{av}");
    let nowhere = run(&[
        "--from",
        "sip:alice@contoso.test",
        "--to",
        "sip:x@nowhere.test",
    ]);
    assert!(
        nowhere.contains("-> no records") && nowhere.contains("1008;"),
        "{nowhere}"
    );
}

#[test]
fn rotate_key_puts_a_fresh_key_first_and_keeps_only_the_previous_sealing_key() {
    use sipedge::proxy::topology::key_file;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("topology.key");
    let (a, b) = ([0xaa; 32], [0xbb; 32]);
    std::fs::write(&path, key_file::render(&[a, b])).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("rotate-key")
        .arg(&path)
        .output()
        .expect("run rotate-key");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = key_file::read(&path).expect("the rotated file reads");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1], a, "the previous sealing key is kept for opening");
    assert!(!keys.contains(&b), "the key before it is dropped");
    let id = |k: &key_file::Key| -> String {
        key_file::key_id(k)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert!(
        stdout.contains(&format!("key {} (seals)", id(&keys[0])))
            && stdout.contains(&format!("key {} (opens only)", id(&a))),
        "{stdout}"
    );
    let missing = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("rotate-key")
        .arg(dir.path().join("nope.key"))
        .output()
        .expect("run rotate-key");
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read the topology key file"),
        "a missing file is an error, not a new key"
    );
}

#[test]
fn explain_defaults_to_what_send_sends_and_takes_the_senders_marking() {
    let explain = explain_on_the_lab;
    // A partner's user enters outside, as `send` sends it: its certificate and marking.
    let out = explain(&[
        "--from",
        "sip:dan@fabrikam.test",
        "--to",
        "sip:alice@contoso.test",
    ]);
    assert!(out.contains("on the external interface"), "{out}");
    assert!(
        out.contains("peer certificate names: sip.fabrikam.test"),
        "{out}"
    );
    assert!(
        out.contains("Decision: FORWARD through the internal interface"),
        "{out}"
    );
    // A discovered partner's marking decides UseSourceVerification: with it, forwarded;
    // without it (--trust none), 1905.
    let northwind = [
        "--from",
        "sip:dan@northwind.test",
        "--to",
        "sip:alice@contoso.test",
        "--peer-cert-name",
        "sip.northwind.test",
    ];
    let marked = explain(&northwind);
    assert!(marked.contains("Decision: FORWARD"), "{marked}");
    let unmarked = explain(&[&northwind[..], &["--trust", "none"]].concat());
    assert!(unmarked.contains("ms-diagnostics: 1905"), "{unmarked}");
    let own = explain(
        &[
            &northwind[..],
            &["--trust", "ms-source-type=AutoFederation;ms-ep-fqdn=sip.northwind.test;ms-source-verified-user=unverified"],
        ]
        .concat(),
    );
    assert!(
        own.contains("1921"),
        "an unverified sender alice does not list: {own}"
    );
}

/// `sipedge <args>`: its standard output, after checking it exited 0.
fn stdout_of(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sipedge");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The subcommands a user types, as `sipedge --help` lists them.
const SUBCOMMANDS: [&str; 15] = [
    "run",
    "lab",
    "check-config",
    "check-partner",
    "explain",
    "peer",
    "admin",
    "send",
    "load",
    "sink",
    "rotate-key",
    "certs",
    "completions",
    "man",
    "help",
];

#[test]
fn bash_completions_offer_every_subcommand_and_their_flags() {
    let script = stdout_of(&["completions", "bash"]);
    assert!(script.contains("complete -F _sipedge"), "{script}");
    // The words offered after `sipedge `.
    let top = script
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("sipedge)"))
        .find_map(|l| l.trim().strip_prefix("opts=\"")?.strip_suffix('"'))
        .expect("the top-level word list");
    for sub in SUBCOMMANDS {
        assert!(top.split_whitespace().any(|w| w == sub), "{sub}: {top}");
    }
    assert!(
        script.contains("--access-log"),
        "run/lab flags are completed"
    );
    for shell in ["zsh", "fish"] {
        assert!(stdout_of(&["completions", shell]).contains("check-partner"));
    }
}

#[test]
fn the_man_page_is_roff_naming_every_command_and_dir_writes_one_page_each() {
    let page = stdout_of(&["man"]);
    let th = page.lines().find(|l| l.starts_with(".TH "));
    assert_eq!(th, Some(".TH sipedge 1  \"sipedge 0.1.0\" "), "{page}");
    // The sections a man page has.
    for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SUBCOMMANDS"] {
        assert!(page.contains(&format!("\n.SH {section}\n")), "{section}");
    }
    for sub in SUBCOMMANDS {
        // Subcommands are listed as their pages, hyphens escaped for roff.
        let name = format!("sipedge\\-{}(1)", sub.replace('-', "\\-"));
        assert!(page.contains(&name), "{name}: {page}");
    }
    let dir = tempfile::tempdir().unwrap();
    stdout_of(&["man", "--dir", dir.path().to_str().unwrap()]);
    for sub in SUBCOMMANDS.iter().filter(|s| **s != "help") {
        let file = dir.path().join(format!("sipedge-{sub}.1"));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        assert!(text.contains(&format!(".TH sipedge-{sub} 1")), "{text}");
    }
}
