//! The real `sipedge lab` process on ephemeral ports, driven with the real binary the way
//! the README walks through it: the embedded lab from a directory outside the repository,
//! and the lab before the seed procedure with `--config`. Each lab is stopped with SIGTERM
//! and must exit 0.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::admin::{SEED_NEW, SEED_REMOVE};
use crate::support::{header, message_over_tcp, read_lines, status_of};

const BIN: &str = env!("CARGO_BIN_EXE_sipedge");

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A `sipedge lab` child with its own XDG directories, so its lab directory and admin
/// state file are this test's alone.
struct LabProcess {
    child: Child,
    /// What it printed before "Ctrl-C stops the lab."
    banner: String,
    data: tempfile::TempDir,
    /// Its XDG_RUNTIME_DIR (where the state files go), its own unless shared.
    runtime: PathBuf,
    _own_runtime: Option<tempfile::TempDir>,
    cwd: tempfile::TempDir,
    /// Its standard error, a line at a time (a pipe, as under a service manager).
    log: mpsc::Receiver<String>,
}

impl LabProcess {
    fn start(extra: &[&str]) -> LabProcess {
        let own = temp();
        let mut lab = LabProcess::start_sharing(extra, own.path());
        lab._own_runtime = Some(own);
        lab
    }

    /// A lab whose XDG_RUNTIME_DIR is `runtime`, shared with other labs of the test.
    fn start_sharing(extra: &[&str], runtime: &std::path::Path) -> LabProcess {
        let (data, cwd) = (temp(), temp());
        let mut child = Command::new(BIN)
            .args(["lab", "--ephemeral"])
            .args(extra)
            .env("XDG_DATA_HOME", data.path())
            .env("XDG_RUNTIME_DIR", runtime)
            .current_dir(cwd.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sipedge lab");
        let lines = read_lines(child.stdout.take().expect("stdout"));
        let log = read_lines(child.stderr.take().expect("stderr"));
        let mut banner = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if line == "Ctrl-C stops the lab." => break,
                Ok(line) => banner.push_str(&format!("{line}\n")),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(e) => {
                    let _ = child.kill();
                    panic!("sipedge lab did not start ({e}); printed:\n{banner}");
                }
            }
        }
        LabProcess {
            child,
            banner,
            data,
            runtime: runtime.to_path_buf(),
            _own_runtime: None,
            cwd,
            log,
        }
    }

    /// The lines it logged until one holds `want` (at most ten seconds); panics without it.
    fn logged_until(&self, want: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(line) = self.log.recv_timeout(Duration::from_millis(200)) {
                let done = line.contains(want);
                seen.push(line);
                if done {
                    return seen;
                }
            }
        }
        panic!("no log line with `{want}`; logged:\n{}", seen.join("\n"));
    }

    /// Runs `sipedge <args>` as the lab's user would, beside it.
    fn sipedge(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("XDG_DATA_HOME", self.data.path())
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .current_dir(self.cwd.path())
            .stdin(Stdio::null())
            .output()
            .expect("run sipedge")
    }

    /// `sipedge <args>` must exit 0; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.sipedge(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The commands printed under "Try next:".
    fn try_next(&self) -> Vec<String> {
        self.banner
            .lines()
            .skip_while(|l| *l != "Try next:")
            .skip(1)
            .map_while(|l| l.strip_prefix("  "))
            .map(str::to_string)
            .collect()
    }

    /// SIGTERM, then the exit status within ten seconds.
    fn stop(self) {
        self.stop_with("TERM");
    }

    /// The signal `sig`, then exit status 0 within ten seconds.
    fn stop_with(mut self, sig: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "sipedge lab exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "sipedge lab still running");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The words of a printed command after `sipedge` (the printed lines carry no quotes).
fn words(line: &str) -> Vec<&str> {
    let mut w: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(w.remove(0), "sipedge", "{line}");
    w
}

/// The edge's internal TCP address, from the table the lab printed.
fn internal_tcp(banner: &str) -> std::net::SocketAddr {
    let row = banner.lines().find(|l| l.starts_with("edge internal"));
    let row = row.unwrap_or_else(|| panic!("no internal row in\n{banner}"));
    let at = row.find("tcp ").expect("a tcp address") + 4;
    let addr = row[at..].split(',').next().unwrap();
    addr.trim().parse().expect("an address")
}

#[tokio::test]
async fn the_embedded_lab_runs_from_any_directory_and_the_walk_through_works_against_it() {
    let lab = LabProcess::start(&[]);
    let dir = lab.data.path().join("sipedge/lab");
    let config = dir.join("config/lab.toml");
    let banner = &lab.banner;
    assert!(
        banner.starts_with(&format!(
            "sipedge lab (the embedded config/lab.toml, written to {})\ncertificates: {} (generated now",
            config.display(),
            dir.join("certs").display()
        )),
        "{banner}"
    );
    for row in [
        "edge external  accessedge.contoso.test",
        "skype          federation.messenger.msn.com  tls 127.0.0.4:",
        "PIC: contoso.test provisioned",
        "admin          -                             http://127.0.0.1:",
    ] {
        assert!(banner.contains(row), "{row}\n{banner}");
    }
    // The embedded files are the repository's, in a private directory.
    let repo_toml = std::fs::read_to_string(repo("config/lab.toml")).unwrap();
    assert_eq!(std::fs::read_to_string(&config).unwrap(), repo_toml);
    assert_eq!(
        std::fs::read_to_string(dir.join("config/lab.zone")).unwrap(),
        std::fs::read_to_string(repo("config/lab.zone")).unwrap()
    );
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(lab.ok(&["lab", "--print-config"]), repo_toml);

    // The three commands to try next, as printed.
    let next = lab.try_next();
    assert_eq!(next.len(), 3, "{banner}");
    assert!(next[0].starts_with("sipedge send "), "{next:?}");
    for line in &next {
        let args = words(line);
        let out = lab.ok(&args);
        let expect = match args[0] {
            "send" => "200",
            "explain" => "ms-diagnostics: 1907",
            _ => "Identity                         : Skype\n",
        };
        assert!(out.contains(expect), "{line}: {out}");
    }

    // The tour's "break a peer": the Skype gateway refuses TLS, `send` shows 504 + 1047 and
    // exits 1; clearing the fault brings delivery back.
    let send = words(&next[0]);
    lab.ok(&["admin", "fault", "skype", "refuse-tls"]);
    let out = lab.sipedge(&send);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains("504") && printed.contains("1047"),
        "{printed}"
    );
    lab.ok(&["admin", "fault", "skype", "clear"]);
    assert!(lab.ok(&send).contains("200"));

    // The README walk-through.
    let out = lab.ok(&["check-config", config.to_str().unwrap()]);
    assert!(out.contains(": OK (local domains: contoso.test;"), "{out}");
    let out = lab.ok(&words(
        "sipedge explain --from sip:alice@contoso.test --to sip:x@live.com --method INVITE --sdp audio",
    ));
    assert!(out.contains("Decision: REJECT 403"), "{out}");
    assert!(out.contains("ms-diagnostics: 1908"), "{out}");
    let out = lab.ok(&words(
        "sipedge explain --from sip:alice@contoso.test --to sip:x@live.com",
    ));
    assert!(
        out.contains("Route:    federation.messenger.msn.com:5061 over tls"),
        "{out}"
    );
    let out = lab.ok(&["admin", "provisioning-status"]);
    assert!(
        out.starts_with("PIC-0001 Provisioned domains=contoso.test"),
        "{out}"
    );
    lab.ok(&["admin", "New-CsBlockedDomain", "-Identity", "tailspin.test"]);
    let out = lab.ok(&["admin", "Get-CsBlockedDomain"]);
    assert!(out.contains("tailspin.test"), "{out}");
    lab.ok(&[
        "admin",
        "Remove-CsBlockedDomain",
        "-Identity",
        "tailspin.test",
    ]);

    // Real traffic, its diagnostics, and a cmdlet that fixes the refusal.
    let internal = internal_tcp(banner);
    let bob =
        |id: &'static str| message_over_tcp(internal, "sip:bob@contoso.test", "sip:x@live.com", id);
    let r = bob("tour1").await;
    assert_eq!(status_of(&r), 403, "{r}");
    assert!(
        header(&r, "ms-diagnostics")
            .unwrap_or("")
            .starts_with("1907;"),
        "{r}"
    );
    let out = lab.ok(&["admin", "decisions", "1"]);
    assert!(
        out.contains(" reject 403 user-public-cloud-denied MESSAGE sip:x@live.com internal/tcp"),
        "{out}"
    );
    assert!(out.contains("call-id=tour1\n"), "{out}");
    assert!(out.contains("\n  DECIDED  access-policy "), "{out}");
    let out = lab.ok(&words(
        "sipedge admin Get-CsExternalAccessPolicy -Identity NoPublicCloud",
    ));
    assert!(
        out.contains("EnablePublicCloudAccess           : False"),
        "{out}"
    );
    lab.ok(&words(
        "sipedge admin Set-CsExternalAccessPolicy -Identity NoPublicCloud -EnablePublicCloudAccess 1",
    ));
    let r = bob("tour2").await;
    assert_eq!(status_of(&r), 200, "{r}");
    let out = lab.ok(&["admin", "decisions", "1"]);
    assert!(
        out.contains(" forward 200 ") && out.contains("call-id=tour2\n"),
        "{out}"
    );
    let out = lab.ok(&["admin", "metrics"]);
    // The printed `send` three times (delivered, refused by the broken peer, delivered),
    // then bob's refused and accepted MESSAGEs.
    let series =
        "sipedge_messages_total{interface=\"internal\",direction=\"in\",method=\"MESSAGE\"} 5\n";
    assert!(out.contains(series), "{out}");

    // Errors name the valid choices and exit 1.
    let out = lab.sipedge(&["admin", "Get-CsPublicProviders"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Get-CsPublicProvider"),
        "{}",
        text(&out)
    );
    let out = lab.sipedge(&["admin", "Remove-CsPublicProvider", "-Identity", "Nobody"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    lab.stop();
}

#[test]
fn the_pre_pic_lab_takes_the_seed_procedure_through_the_binary() {
    let pre_pic = repo("config/lab-pre-pic.toml");
    let lab = LabProcess::start(&["--config", pre_pic.to_str().unwrap()]);
    assert!(
        lab.banner
            .starts_with(&format!("sipedge lab ({})\n", pre_pic.display())),
        "{}",
        lab.banner
    );
    assert!(
        lab.banner.contains("PIC: contoso.test not provisioned"),
        "{}",
        lab.banner
    );
    // The explain it suggests reads the same config.
    let explain = lab.try_next().into_iter().find(|l| l.contains(" explain "));
    let explain = explain.expect("an explain command");
    assert!(
        explain.contains(&format!("--config {}", pre_pic.display())),
        "{explain}"
    );
    let out = lab.ok(&words(&explain));
    assert!(out.contains("Decision: "), "{out}");

    // The README's seed procedure, in its order.
    let out = lab.ok(&words(
        "sipedge admin provision --agreement AG-0001 --edge-fqdn accessedge.contoso.test --domain contoso.test --contact admin@contoso.test",
    ));
    assert!(out.starts_with("PIC-0001 Submitted"), "{out}");
    lab.ok(&[&["admin"], SEED_REMOVE].concat());
    lab.ok(&[&["admin"], SEED_NEW].concat());
    // The lab clock runs at wall speed: the request is Submitted, then Pending.
    let out = lab.ok(&["admin", "provisioning-status"]);
    assert!(
        out.starts_with("PIC-0001 Submitted") || out.starts_with("PIC-0001 Pending"),
        "{out}"
    );
    let out = lab.ok(&["admin", "advance-clock", "30d"]);
    assert!(out.starts_with("lab clock advanced by 2592000s"), "{out}");
    let out = lab.ok(&["admin", "provisioning-status"]);
    assert!(out.starts_with("PIC-0001 Provisioned"), "{out}");
    let out = lab.ok(&["admin", "Get-CsPublicProvider", "-Identity", "Skype"]);
    assert!(
        out.contains("ProxyFqdn                        : federation.messenger.msn.com"),
        "{out}"
    );
    lab.stop();
}

/// The state files in a runtime directory: one per running lab.
fn state_files(runtime: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(runtime.join("sipedge/edges"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn two_labs_keep_their_own_state_and_each_tool_finds_the_one_its_config_names() {
    let shared = temp();
    let a = LabProcess::start_sharing(&[], shared.path());
    let own = temp();
    let dir = own.path().join("mylab");
    let made = a.ok(&["lab", "--init", dir.to_str().unwrap()]);
    let config = dir.join("lab.toml");
    assert!(
        made.contains(&format!("sipedge lab --config {}", config.display())),
        "{made}"
    );
    let b_config = config.to_str().unwrap();
    let b = LabProcess::start_sharing(&["--config", b_config], shared.path());
    assert_eq!(
        state_files(shared.path()).len(),
        2,
        "one state file per lab"
    );

    // Without a choice, a tool names both labs rather than pick one.
    let out = a.sipedge(&["admin", "Get-CsAllowedDomain"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("2 edges are running") && err.contains(b_config),
        "{err}"
    );
    assert!(err.contains("--config"), "{err}");

    // With --config each finds its own lab: its admin endpoint, its ephemeral ports.
    let got = b.ok(&["admin", "--config", b_config, "Get-CsAllowedDomain"]);
    assert!(got.contains("fabrikam.test"), "{got}");
    let sent = b.ok(&[
        "send",
        "--config",
        b_config,
        "--from",
        "sip:alice@contoso.test",
        "--to",
        "sip:x@live.com",
    ]);
    assert!(sent.contains("200"), "{sent}");

    // A closed terminal (SIGHUP) drains lab A like SIGTERM; its state file goes with it,
    // and then the one lab left is found without flags.
    a.stop_with("HUP");
    assert_eq!(state_files(shared.path()).len(), 1);
    let got = b.ok(&["admin", "Get-CsAllowedDomain"]);
    assert!(got.contains("fabrikam.test"), "{got}");
    let sent = b.ok(&[
        "send",
        "--from",
        "sip:alice@contoso.test",
        "--to",
        "sip:x@live.com",
    ]);
    assert!(sent.contains("200"), "{sent}");
    b.stop();
}

#[test]
fn load_and_sink_find_the_running_lab_without_addresses_or_certificate_folders() {
    let lab = LabProcess::start(&[]);
    // No --target, no --certs: the lab's external TLS port (ephemeral here) and its
    // certificates, from its state file.
    let out = lab.sipedge(&[
        "load",
        "--transport",
        "tls",
        "--rate",
        "20",
        "--duration",
        "1",
        "--quiet",
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", self::text(&out));
    assert!(text.contains("\"failed\": 0"), "{text}");
    assert!(!text.contains("\"ok\": 0,"), "{text}");

    // The sink (a pool stand-in) presents the lab's pool certificate without --certs.
    let mut sink = Command::new(BIN)
        .args(["sink", "--transport", "tls", "--listen", "127.0.0.1:0"])
        .env("XDG_DATA_HOME", lab.data.path())
        .env("XDG_RUNTIME_DIR", &lab.runtime)
        .current_dir(lab.cwd.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sink");
    let lines = read_lines(sink.stdout.take().expect("stdout"));
    let first = lines.recv_timeout(Duration::from_secs(20));
    let _ = sink.kill();
    let _ = sink.wait();
    let first = first.expect("the sink prints where it listens");
    assert!(
        first.starts_with("sink listening tls 127.0.0.1:"),
        "{first}"
    );
    lab.stop();
}

/// The JSON field `key` of `d` as text (`null` for a missing one).
fn field(d: &serde_json::Value, key: &str) -> String {
    match &d[key] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn decisions_as_json_and_the_access_log_of_a_lab_logging_into_a_pipe() {
    let started = sipedge::logfmt::rfc3339(std::time::SystemTime::now());
    let lab = LabProcess::start(&["--access-log"]);
    let internal = internal_tcp(&lab.banner);
    let say = |from: &'static str, id: &'static str| {
        message_over_tcp(internal, from, "sip:sam@live.com", id)
    };
    let r = say("sip:alice@contoso.test", "acc1").await;
    assert_eq!(status_of(&r), 200, "{r}");
    let r = say("sip:bob@contoso.test", "acc2").await;
    assert_eq!(status_of(&r), 403, "{r}");
    lab.ok(&["admin", "fault", "skype", "refuse-tls"]);
    let r = say("sip:alice@contoso.test", "acc3").await;
    assert_eq!(status_of(&r), 504, "{r}");
    let diagnostics = |r: &str| header(r, "ms-diagnostics").unwrap_or("").to_string();
    let refused_why = diagnostics(&r);
    assert!(refused_why.starts_with("1047;"), "{r}");

    // `decisions --json`: each decision with its final status, rule, diagnostics and time.
    let out = lab.ok(&["admin", "decisions", "3", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).expect(&out);
    let now = sipedge::logfmt::rfc3339(std::time::SystemTime::now());
    let got: Vec<[String; 5]> = all
        .iter()
        .map(|d| ["call_id", "outcome", "status", "rule", "interface"].map(|k| field(d, k)))
        .collect();
    assert_eq!(
        got,
        [
            ["acc1", "forward", "200", "public-provider", "internal"],
            [
                "acc2",
                "reject",
                "403",
                "user-public-cloud-denied",
                "internal"
            ],
            ["acc3", "reject", "504", "tls-negotiation", "internal"],
        ]
        .map(|row| row.map(String::from)),
        "{out}"
    );
    for d in &all {
        assert_eq!(field(d, "method"), "MESSAGE", "{d}");
        assert!(field(d, "from").contains("@contoso.test>"), "{d}");
        assert!(field(d, "to").contains("sip:sam@live.com"), "{d}");
        assert!(d["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{d}");
        // RFC 3339 in UTC, between the lab's start and now (the format sorts as text).
        let time = field(d, "time");
        assert!(time.len() == 24 && time.ends_with('Z'), "{d}");
        assert!(started <= time && time <= now, "{started} {time} {now}");
    }
    assert_eq!(all[0]["ms_diagnostics"], serde_json::Value::Null, "{out}");
    assert!(
        field(&all[1], "ms_diagnostics").starts_with("1907;"),
        "{out}"
    );
    assert_eq!(field(&all[2], "ms_diagnostics"), refused_why, "{out}");

    // The text says the same, with the time first and the diagnostics quoted.
    let line = lab.ok(&["admin", "decisions", "1"]);
    let first = line.lines().next().unwrap();
    assert!(first.starts_with(&time_prefix(&all[2])), "{line}");
    assert!(
        first.contains(" reject 504 tls-negotiation MESSAGE sip:sam@live.com internal/tcp "),
        "{line}"
    );
    assert!(
        first.contains(&format!(
            " ms-diagnostics={} call-id=acc3",
            sipedge::logfmt::value(&refused_why)
        )),
        "{line}"
    );

    // One access line per transaction, on a pipe: no colour codes anywhere.
    let logged = lab.logged_until("transaction done method=MESSAGE call_id=acc3");
    let access: Vec<&String> = logged
        .iter()
        .filter(|l| l.contains("sipedge::access"))
        .collect();
    assert_eq!(access.len(), 3, "{logged:#?}");
    for (line, want) in access.iter().zip([
        "status=200 rule=public-provider outcome=forward",
        "status=403 rule=user-public-cloud-denied outcome=reject",
        "status=504 rule=tls-negotiation outcome=reject",
    ]) {
        assert!(line.contains(" INFO "), "{line}");
        assert!(
            line.contains("transaction done method=MESSAGE call_id=acc"),
            "{line}"
        );
        assert!(line.contains(" from=contoso.test to=live.com "), "{line}");
        assert!(line.contains(want), "{want}: {line}");
        assert!(line.contains(" arrival=internal "), "{line}");
    }
    assert!(access[1].contains(" exit=- "), "{}", access[1]);
    assert!(access[2].contains(" exit=external "), "{}", access[2]);
    for line in &logged {
        assert!(!line.contains('\x1b'), "colour on a pipe: {line:?}");
    }
    lab.stop();
}

/// `2026-12-03T12:17:23` of a decision's RFC 3339 time (the text shows milliseconds too).
fn time_prefix(d: &serde_json::Value) -> String {
    field(d, "time")[..19].to_string()
}

#[tokio::test]
async fn a_lab_logging_logfmt_writes_key_value_lines_and_no_access_line_unless_asked() {
    let lab = LabProcess::start(&["--log-format", "logfmt"]);
    let internal = internal_tcp(&lab.banner);
    for id in ["fmt1", "fmt2"] {
        let r = message_over_tcp(internal, "sip:bob@contoso.test", "sip:sam@live.com", id).await;
        assert_eq!(status_of(&r), 403, "{r}");
    }
    // Refusals are logged (INFO) without --access-log; access lines are not: fmt1's would
    // come before the line that sums up fmt2's refusal (one line per source and second is
    // written; the rest are counted, src/lograte.rs).
    let logged = lab.logged_until("reason=request-refused");
    assert!(
        logged.iter().any(|l| l.contains("call_id=fmt1")),
        "{logged:#?}"
    );
    for line in &logged {
        assert!(line.starts_with("time=20"), "{line}");
        assert!(line.contains(" level="), "{line}");
        assert!(line.contains(" msg="), "{line}");
        assert!(!line.contains('\x1b'), "{line:?}");
        assert!(!line.contains("target=sipedge::access"), "{line}");
    }
    lab.stop();
}
