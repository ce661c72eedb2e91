//! Security checks that `federation.rs`, `transports.rs` and `admin.rs` do not already make
//! (issue 7): an outsider cannot reach internal hosts or pose as an internal user through
//! the external interface, and nothing internal leaves in responses going outside.

use std::net::SocketAddr;
use std::time::Duration;

use sipedge::transport::{Interface, Transport};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::legit::Frames;
use crate::support::*;

/// The pool's own name and address, which must never show outside.
const POOL_FQDN: &str = "pool.contoso.test";
const POOL_IP: &str = "127.0.0.5";

/// Federation on, fabrikam a direct partner; the plain-TCP sender at 127.0.0.9 stands for
/// fabrikam's edge (lab source identity), so the tests need no certificates.
fn config(pool: SocketAddr) -> String {
    crate::legit::tcp_edge(&format!("{POOL_FQDN}:{}", pool.port()))
        + &format!(
            r#"
[hosts]
"{POOL_FQDN}" = ["{POOL_IP}"]

[lab]
source_identities = {{ "127.0.0.9" = "sip.fabrikam.test" }}

[access_edge]
allow_federated_users = true

[[allowed_domain]]
domain = "fabrikam.test"
proxy_fqdn = "sip.fabrikam.test"

[[external_access_policy]]
identity = "global"
enable_federation_access = true
"#
        )
}

/// A pool that answers every request with an error full of internal detail (its name and
/// address in ms-diagnostics, Warning and a Via of its own), and records what arrived.
async fn leaky_pool() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let l = TcpListener::bind(format!("{POOL_IP}:0"))
        .await
        .expect("pool");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut rd, mut wr) = conn.into_split();
                let mut frames = Frames::default();
                while let Some(req) = frames.next(&mut rd).await {
                    let _ = tx.send(req.clone());
                    let diag = format!("ms-diagnostics: 1003;reason=\"User does not exist\";source=\"{POOL_FQDN}\";server=\"{POOL_IP}\"");
                    let warn = format!("Warning: 399 {POOL_FQDN} \"lookup on {POOL_IP} failed\"");
                    let answer = response(&req, 404, "Not Found", &[&diag, &warn]);
                    if wr.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// The verification marking fabrikam's edge puts on its requests (UseSourceVerification).
const MARK: &str = "ms-edge-proxy-message-trust: ms-source-type=DirectPartner;ms-ep-fqdn=sip.fabrikam.test;ms-source-verified-user=verified;ms-source-network=federation";

/// A request from fabrikam's edge, marked verified.
fn msg(method: &str, uri: &str, from: &str, id: &str, extra: &[&str]) -> String {
    let mut lines = vec![MARK];
    lines.extend_from_slice(extra);
    request(
        method,
        uri,
        from,
        uri,
        &format!("SIP/2.0/TCP 127.0.0.9;branch=z9hG4bK{id}"),
        id,
        &lines,
        "",
    )
}

#[tokio::test]
async fn outsiders_cannot_pose_as_internal_users_or_reach_internal_hosts() {
    let (pool_addr, mut pool) = leaky_pool().await;
    let edge = TestEdge::start(&config(pool_addr)).await;
    let mut fabrikam = StreamConn::new(
        crate::legit::connect_from("127.0.0.9", edge.addr(Interface::External, Transport::Tcp))
            .await
            .expect("connect"),
    );
    // The partner's own user reaches the pool: the setup works.
    fabrikam
        .send(&msg(
            "MESSAGE",
            "sip:bob@contoso.test",
            "sip:dan@fabrikam.test",
            "ok1",
            &[],
        ))
        .await;
    let got = tokio::time::timeout(WAIT, pool.recv())
        .await
        .expect("pool")
        .expect("request");
    assert_eq!(header(&got, "call-id"), Some("ok1"));
    assert_eq!(status_of(&fabrikam.recv_skip_100().await), 404);

    let pool_uri = format!("sip:bob@{pool_addr}");
    let in_dialog_route = format!("Route: <sip:{pool_addr};lr>");
    let cases: Vec<(&str, String)> = vec![
        // Internal → internal through the external interface: an outsider claiming alice.
        (
            "internal-to-internal",
            msg(
                "MESSAGE",
                "sip:bob@contoso.test",
                "sip:alice@contoso.test",
                "ii1",
                &[],
            ),
        ),
        // The pool addressed by its IP from outside.
        (
            "pool-by-address",
            msg("MESSAGE", &pool_uri, "sip:dan@fabrikam.test", "ip1", &[]),
        ),
        // The internal interface's name as a domain.
        (
            "internal-fqdn",
            msg(
                "MESSAGE",
                "sip:bob@edge-int.contoso.test",
                "sip:dan@fabrikam.test",
                "if1",
                &[],
            ),
        ),
        // A preloaded Route to the pool on a request for a foreign domain.
        (
            "preloaded-route",
            msg(
                "MESSAGE",
                "sip:x@northwind.test",
                "sip:dan@fabrikam.test",
                "rt1",
                &[&in_dialog_route],
            ),
        ),
    ];
    for (what, m) in &cases {
        fabrikam.send(m).await;
        let r = fabrikam.recv_skip_100().await;
        assert_eq!(status_of(&r), 403, "{what}: {r}");
    }
    // A request that looks in-dialog (To tag) with a Route to the pool: still no relay.
    let mid = msg(
        "MESSAGE",
        "sip:x@northwind.test",
        "sip:dan@fabrikam.test",
        "dl1",
        &[&in_dialog_route],
    )
    .replace(
        "To: <sip:x@northwind.test>",
        "To: <sip:x@northwind.test>;tag=remote",
    );
    fabrikam.send(&mid).await;
    let r = fabrikam.recv_skip_100().await;
    assert!(status_of(&r) >= 400, "in-dialog lookalike: {r}");
    let leaked = tokio::time::timeout(Duration::from_millis(300), pool.recv()).await;
    assert!(
        leaked.is_err(),
        "nothing but the partner's own request reached the pool: {leaked:?}"
    );
}

#[tokio::test]
async fn no_internal_name_or_address_leaves_through_the_external_interface() {
    let (pool_addr, _pool) = leaky_pool().await;
    let edge = TestEdge::start(&config(pool_addr)).await;
    let mut fabrikam = StreamConn::new(
        crate::legit::connect_from("127.0.0.9", edge.addr(Interface::External, Transport::Tcp))
            .await
            .expect("connect"),
    );
    let requests = [
        // Relayed from the pool: its 404 carries its name and address.
        msg(
            "MESSAGE",
            "sip:bob@contoso.test",
            "sip:dan@fabrikam.test",
            "lk1",
            &[],
        ),
        msg(
            "INFO",
            "sip:bob@contoso.test",
            "sip:dan@fabrikam.test",
            "lk2",
            &[],
        ),
        // Refused by the edge itself, for several reasons.
        msg(
            "MESSAGE",
            "sip:x@northwind.test",
            "sip:dan@fabrikam.test",
            "lk3",
            &[],
        ),
        msg(
            "MESSAGE",
            "sip:bob@contoso.test",
            "sip:alice@contoso.test",
            "lk4",
            &[],
        ),
        msg(
            "REGISTER",
            "sip:contoso.test",
            "sip:dan@fabrikam.test",
            "lk5",
            &[],
        ),
        msg(
            "MESSAGE",
            "sip:bob@contoso.test",
            "sip:dan@fabrikam.test",
            "lk6",
            &[],
        )
        .replace("Max-Forwards: 70", "Max-Forwards: 0"),
        msg(
            "MESSAGE",
            "sip:bob@contoso.test",
            "sip:dan@fabrikam.test",
            "lk7",
            &[],
        )
        .replace("CSeq: 1 MESSAGE", "CSeq: one"),
    ];
    let mut answers = Vec::new();
    for m in &requests {
        fabrikam.send(m).await;
        answers.push(fabrikam.recv_skip_100().await);
    }
    let forbidden = [POOL_FQDN, POOL_IP, "127.0.0.2", "edge-int.contoso.test"];
    for a in &answers {
        assert!(
            header(a, "ms-diagnostics").is_none(),
            "internal diagnostics left: {a}"
        );
        for word in forbidden {
            for name in ["via", "record-route", "ms-diagnostics-public", "warning"] {
                for v in headers(a, name) {
                    assert!(!v.contains(word), "`{word}` leaked in {name}: {a}");
                }
            }
        }
    }
    assert_eq!(status_of(&answers[0]), 404, "{}", answers[0]);
    assert!(
        header(&answers[0], "ms-diagnostics-public").is_some_and(|d| d.starts_with("1003;")),
        "the public form of the pool's diagnostics goes out: {}",
        answers[0]
    );
}
