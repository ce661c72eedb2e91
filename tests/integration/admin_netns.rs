//! The admin endpoint answers loopback peers only, shown with the real binary and a real
//! non-loopback peer: the edge runs in a network namespace of the test's own, whose
//! loopback interface also carries 10.231.0.1, and a client there connects from that
//! address to the endpoint on 127.0.0.1. (Config validation refuses a non-loopback
//! `[admin] listen`, so a peer from another address can only reach a loopback listener
//! this way.) Needs root for `ip netns`, as CI runs.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::binary::{addr_in, Running};
use crate::legit;

const TOKEN: &str = "netns-admin-token-0123456789";
/// The namespace's non-loopback address, on its `lo`.
const OUTSIDE: &str = "10.231.0.1";
const REFUSED: &str = "the admin endpoint answers loopback peers only";

/// One HTTP request to 127.0.0.1:`port` from `source`, printed whole (status line, headers,
/// body). Bounded by the socket timeout; a timeout ends the read with what came.
const HTTP_CLIENT: &str = r#"
import socket, sys
source, port, path, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
auth = "Authorization: Bearer %s\r\n" % token if token else ""
s.sendall(("GET %s HTTP/1.1\r\nHost: edge\r\n%sConnection: close\r\n\r\n" % (path, auth)).encode())
data = b""
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
except socket.timeout:
    pass
sys.stdout.write(data.decode("utf-8", "replace"))
"#;

/// A network namespace of this test's own (named with the test process's PID), deleted
/// when dropped, so a failing assertion does not leave it behind.
struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace with `lo` up and [`OUTSIDE`] on it.
    fn create(tag: &str) -> Netns {
        let ns = Netns {
            name: format!("sipedge-{tag}-{}", std::process::id()),
        };
        ip(&["netns", "add", &ns.name]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{OUTSIDE}/32"),
            "dev",
            "lo",
        ]);
        ns
    }

    /// `program` run inside the namespace (`ip netns exec` execs it: same PID).
    fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// An HTTP GET of `path` to the admin endpoint's `port` from `source` (with `token`
    /// when given): the whole response text.
    fn http_get(&self, source: &str, port: u16, path: &str, token: Option<&str>) -> String {
        let mut c = self.exec("python3");
        c.args(["-c", HTTP_CLIENT, source, &port.to_string(), path])
            .arg(token.unwrap_or(""));
        let out = finish(c, "python3 http client");
        assert!(out.status.success(), "http client: {}", text(&out.stderr));
        text(&out.stdout)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    let out = finish(
        {
            let mut c = Command::new("ip");
            c.args(args);
            c
        },
        "ip",
    );
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        text(&out.stderr)
    );
}

/// Runs `command` to its end, killing it (by its PID) if it takes over 20 s.
fn finish(mut command: Command, what: &str) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what} (pid {pid}) did not finish within 20 s");
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

/// The edge config: static routing to a pool that is never asked, and `[admin]` on `listen`.
fn config(dir: &Path, listen: &str) -> std::path::PathBuf {
    let path = dir.join("edge.toml");
    let toml = legit::tcp_edge("127.0.0.1:9")
        + &format!("\n[admin]\nlisten = \"{listen}\"\ntoken = \"{TOKEN}\"\n");
    std::fs::write(&path, toml).expect("write config");
    path
}

#[test]
fn a_non_loopback_admin_listen_address_is_refused_at_start() {
    let ns = Netns::create("adminbind");
    let dir = tempfile::tempdir().expect("tempdir");
    // The namespace has 10.231.0.1, so the bind itself would work: validation refuses it.
    for listen in [format!("{OUTSIDE}:0"), "0.0.0.0:0".to_string()] {
        let path = config(dir.path(), &listen);
        let mut c = ns.exec(env!("CARGO_BIN_EXE_sipedge"));
        c.env("XDG_RUNTIME_DIR", dir.path())
            .args(["run", "--config"])
            .arg(&path);
        let started = Instant::now();
        let out = finish(c, "sipedge run");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{listen}: {err}");
        assert!(
            err.contains("admin.listen") && err.contains("is not a loopback address"),
            "{listen}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

#[test]
fn a_peer_from_a_non_loopback_address_gets_403_and_loopback_with_the_token_is_served() {
    let ns = Netns::create("admin403");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(dir.path(), "127.0.0.1:0");
    let mut command = ns.exec(env!("CARGO_BIN_EXE_sipedge"));
    command.env("XDG_RUNTIME_DIR", dir.path());
    let edge = Running::spawn(command, &path);
    let port = addr_in(&edge.wait_for(&["admin endpoint listening"])).port();

    // From 10.231.0.1: refused whatever the request, the right token and /health included.
    for (route, token) in [
        ("/metrics", Some(TOKEN)),
        ("/metrics", None),
        ("/health", None),
    ] {
        let r = ns.http_get(OUTSIDE, port, route, token);
        assert_eq!(
            status_line(&r),
            "HTTP/1.1 403 Forbidden",
            "{route} token={token:?}:\n{r}"
        );
        assert!(r.ends_with(&format!("{REFUSED}\n")), "{r}");
        assert!(!r.contains("sipedge_"), "nothing of /metrics leaks: {r}");
    }
    let logged = edge.wait_for(&["non-loopback peer refused", OUTSIDE]);
    assert!(logged.contains("WARN"), "{logged}");

    // From 127.0.0.1 in the same namespace: the token decides.
    let r = ns.http_get("127.0.0.1", port, "/metrics", None);
    assert_eq!(status_line(&r), "HTTP/1.1 401 Unauthorized", "{r}");
    let r = ns.http_get("127.0.0.1", port, "/metrics", Some(TOKEN));
    assert_eq!(status_line(&r), "HTTP/1.1 200 OK", "{r}");
    assert!(r.contains("sipedge_"), "{r}");
    // And the operator's own client, `sipedge admin`, inside the namespace.
    let mut c = ns.exec(env!("CARGO_BIN_EXE_sipedge"));
    c.env("XDG_RUNTIME_DIR", dir.path()).args([
        "admin",
        "--endpoint",
        &format!("http://127.0.0.1:{port}"),
        "--token",
        TOKEN,
        "metrics",
    ]);
    let out = finish(c, "sipedge admin");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("sipedge_"));
    drop(edge);
}
