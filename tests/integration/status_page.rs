//! The admin status page (`GET /`) in a real browser: headless Chromium (Debian's
//! `chromium`, installed by `.ci/run`) loads the page of a lab that relayed a federated
//! MESSAGE, follows the decision's link to its ladder, and takes a screenshot.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sipedge::lab::run::Lab;
use sipedge::send::SendMethod;
use sipedge::transport::{Interface, Transport};

use crate::lab::{admin, start_with};
use crate::support::{status_of, tcp_connect};
use crate::trace::send;

/// How long one Chromium run may take before it is killed (a cold start on a loaded
/// machine takes seconds).
const CHROMIUM_WAIT: Duration = Duration::from_secs(90);

/// The browser: `$CHROMIUM`, else `chromium` on the PATH. Missing, the test fails.
fn chromium_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chromium is not installed: this test drives the status page in headless \
                 Chromium; install it with `apt-get install -y chromium` (.ci/run does)"
            )
        })
}

/// Runs headless Chromium with `args` and a profile under `dir`; what it printed on
/// stdout. It runs in a process group of its own, which is killed (by its id) when it
/// outlives [`CHROMIUM_WAIT`] and, once it exited, to take any helper it left behind.
fn chromium(dir: &Path, args: &[String]) -> String {
    use std::os::unix::process::CommandExt as _;
    let bin = chromium_binary();
    let mut child = Command::new(&bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let group = child.id();
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = r.read_to_end(&mut out);
            let _ = tx.send(String::from_utf8_lossy(&out).into_owned());
        });
        rx
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let kill_group = || {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .stderr(Stdio::null())
            .status();
    };
    let status = match exited.recv_timeout(CHROMIUM_WAIT) {
        Ok(status) => status.expect("waiting for chromium"),
        Err(_) => {
            kill_group();
            panic!("chromium {args:?} did not finish within {CHROMIUM_WAIT:?}; killed its process group {group}");
        }
    };
    kill_group();
    let err = stderr.recv_timeout(CHROMIUM_WAIT).unwrap_or_default();
    assert!(status.success(), "chromium {args:?}: {status}\n{err}");
    stdout
        .recv_timeout(CHROMIUM_WAIT)
        .expect("chromium's output")
}

/// The DOM Chromium rendered from `url`.
async fn dom(dir: &Path, url: String) -> String {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || chromium(&dir, &["--dump-dom".into(), url]))
        .await
        .unwrap()
}

/// The `href` of the ladder link whose text is `call_id` in a rendered DOM, unescaped.
fn ladder_link(dom: &str, call_id: &str) -> Option<String> {
    let end = dom.find(&format!("\">{call_id}</a>"))?;
    let start = dom[..end].rfind("<a class=\"ladder\" href=\"")? + 24;
    Some(dom[start..end].replace("&amp;", "&"))
}

/// A MESSAGE over TCP to the lab's internal listener whose Call-ID is markup; its answer.
async fn hostile_message(lab: &Lab, call_id: &str) -> String {
    let to = lab
        .edge()
        .local_addr(Interface::Internal, Transport::Tcp)
        .expect("the lab's internal TCP listener");
    let mut conn = tcp_connect(to).await;
    let uri = "sip:dan@tailspin.test";
    conn.send(&format!(
        "MESSAGE {uri} SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.9:5060;branch=z9hG4bKhostile1\r\nMax-Forwards: 70\r\nFrom: <sip:bob@contoso.test>;tag=h1\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
    ))
    .await;
    conn.recv_skip_100().await
}

#[tokio::test]
async fn the_status_page_shows_a_relayed_message_and_links_to_its_ladder_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start_with("config/lab.toml", |_| {}).await;
    let im = send(
        &lab,
        SendMethod::Message,
        Transport::Tls,
        "sip:dan@tailspin.test",
    )
    .await;
    assert_eq!(im.status, 200, "{}", im.render());
    let hostile = "<script>document.title='pwned'</script>";
    let answer = hostile_message(&lab, hostile).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let (status, out) = admin(&lab, "POST", "/lab/fault", "discovered\nstatus\n503").await;
    assert_eq!(status, 200, "{out}");
    let rule = lab
        .edge()
        .core()
        .recent_decisions()
        .into_iter()
        .find(|d| d.call_id == im.call_id)
        .expect("the MESSAGE's decision")
        .rule;

    let base = format!("http://{}", lab.admin_addr().expect("admin"));
    let token = sipedge::admin::http::percent_encode(lab.admin_token().unwrap());

    // The page, as the browser rendered it.
    let page = dom(dir.path(), format!("{base}/?token={token}")).await;
    assert!(page.contains("<title>sipedge status "), "{page}");
    assert!(page.contains("<tr class=\"decision\">"), "{page}");
    let row = page
        .split("<tr class=\"decision\">")
        .find(|r| r.contains(&format!(">{}</a>", im.call_id)))
        .unwrap_or_else(|| panic!("no decision row for {}: {page}", im.call_id));
    assert!(
        row.contains("MESSAGE sip:dan@tailspin.test")
            && row.contains(&format!("<td>{rule}</td>"))
            && row.contains("<td class=\"s2\">200</td>"),
        "{row}"
    );
    // The lab's roles, the tripwire and the fault just set.
    assert!(
        page.contains("tripwire: not contacted (0 contacts)"),
        "{page}"
    );
    assert!(
        page.contains("<li class=\"fault\">discovered (sip.northwind.test): status 503</li>"),
        "{page}"
    );
    assert!(page.contains("SIP messages"), "{page}");
    // Markup from the network is text: no script element, the Call-ID shown as written.
    assert_eq!(page.matches("<script").count(), 0, "{page}");
    assert!(
        page.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;</a>"),
        "{page}"
    );

    // Following the MESSAGE's link: the ladder, with the token the page carried.
    let href = ladder_link(&page, &im.call_id)
        .unwrap_or_else(|| panic!("no ladder link for {}: {page}", im.call_id));
    assert!(href.ends_with(&format!("&token={token}")), "{href}");
    let ladder = dom(dir.path(), format!("{base}{href}")).await;
    let message = "MESSAGE sip:dan@tailspin.test SIP/2.0 (tls)";
    assert_eq!(ladder.matches(message).count(), 2, "in and out: {ladder}");
    assert_eq!(ladder.matches(">SIP/2.0 200 OK (").count(), 2, "{ladder}");
    assert!(
        ladder.contains(&format!("<td>forward {rule} → 200</td>")),
        "{ladder}"
    );
    // The hostile call's ladder escapes its Call-ID too.
    let href = ladder_link(&page, "&lt;script&gt;document.title='pwned'&lt;/script&gt;")
        .expect("a link for the hostile Call-ID");
    let hostile_ladder = dom(dir.path(), format!("{base}{href}")).await;
    assert_eq!(
        hostile_ladder.matches("<script").count(),
        0,
        "{hostile_ladder}"
    );
    assert!(
        hostile_ladder.contains("<h1>Call-ID &lt;script&gt;"),
        "{hostile_ladder}"
    );

    // A screenshot under the test's folder.
    let png = dir.path().join("status.png");
    let shot = dir.path().to_path_buf();
    let args = vec![
        format!("--screenshot={}", png.display()),
        "--window-size=1280,900".into(),
        format!("{base}/?token={token}"),
    ];
    tokio::task::spawn_blocking(move || chromium(&shot, &args))
        .await
        .unwrap();
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
    lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_token_in_the_query_opens_the_pages_only() {
    let lab = start_with("config/lab.toml", |_| {}).await;
    let endpoint = format!("http://{}", lab.admin_addr().expect("admin"));
    let token = lab.admin_token().unwrap().to_string();
    let get = |path: String, bearer: Option<String>| {
        let endpoint = endpoint.clone();
        tokio::task::spawn_blocking(move || {
            sipedge::admin::http::send(&endpoint, "GET", &path, bearer.as_deref(), "").unwrap()
        })
    };
    let (status, body) = get(format!("/?token={token}"), None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    let (status, body) = get("/".into(), Some(token.clone())).await.unwrap();
    assert_eq!(status, 200, "a bearer header works too: {body}");
    for path in [
        "/".to_string(),
        "/?token=0000".to_string(),
        format!("/?token={token}0"),
        format!("/decisions?token={token}"),
        format!("/metrics?token={token}"),
        format!("/config?token={token}"),
    ] {
        let (status, body) = get(path.clone(), None).await.unwrap();
        assert_eq!(status, 401, "{path}: {body}");
    }
    let (status, body) = get(format!("/ladder?call-id=nothing&token={token}"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    lab.shutdown(Duration::from_millis(200)).await;
}
