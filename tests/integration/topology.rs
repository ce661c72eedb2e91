//! Topology hiding (`src/proxy/topology.rs`): INVITE dialogs in both directions between a
//! fake pool and a fake partner through the real edge, over UDP on loopback. The partner
//! never sees the internal interface or the pool in any header; the pool sees the whole
//! route set; the partner's in-dialog requests reach the pool on the right Route, also
//! after a restart of the edge or through another edge holding the same key file; a
//! forged route set is refused.

use std::net::SocketAddr;
use std::time::Duration;

use sipedge::transport::{Interface, Transport};

use crate::support::*;

const POOL_FQDN: &str = "pool.contoso.test";
const POOL_IP: &str = "127.0.0.4";
/// What must never reach the partner: the internal interface's name and address, the
/// pool's name and address.
const FORBIDDEN: [&str; 4] = ["edge-int", POOL_FQDN, POOL_IP, "127.0.0.2"];

struct Lab {
    edge: TestEdge,
    pool: UdpPeer,
    partner: UdpPeer,
    /// Every message the partner received, for the leak check at the end.
    seen: Vec<String>,
    /// The edge's config, for another edge beside it or after it.
    config: String,
}

impl Lab {
    async fn start() -> Lab {
        Lab::start_with("").await
    }

    /// The lab with `extra` sections appended to the edge's config.
    async fn start_with(extra: &str) -> Lab {
        let pool = UdpPeer::bind(POOL_IP).await;
        let partner = UdpPeer::bind("127.0.0.3").await;
        let config = base_config(pool.addr(), "udp", partner.addr(), "udp").replace(
            "[hosts]\n",
            &format!("[hosts]\n\"{POOL_FQDN}\" = [\"{POOL_IP}\"]\n"),
        ) + extra;
        let edge = TestEdge::start(&config).await;
        Lab {
            edge,
            pool,
            partner,
            seen: Vec::new(),
            config,
        }
    }

    /// The same lab after the edge stopped and a new one started on the same UDP ports
    /// with the same config.
    async fn restart(self) -> Lab {
        let (ext, int) = (self.ext().port(), self.int().port());
        let drained = self.edge.edge.shutdown(Duration::from_secs(1)).await;
        assert_eq!(drained.abandoned, 0);
        let same_ports = self
            .config
            .replacen("udp_port = 0", &format!("udp_port = {ext}"), 1)
            .replacen("udp_port = 0", &format!("udp_port = {int}"), 1);
        Lab {
            edge: TestEdge::start(&same_ports).await,
            ..self
        }
    }

    fn int(&self) -> SocketAddr {
        self.edge.addr(Interface::Internal, Transport::Udp)
    }

    fn ext(&self) -> SocketAddr {
        self.edge.addr(Interface::External, Transport::Udp)
    }

    /// The edge's two entries as they are without hiding.
    fn ext_rr(&self) -> String {
        format!(
            "<sip:accessedge.contoso.test:{};transport=udp;lr>",
            self.ext().port()
        )
    }

    fn int_rr(&self) -> String {
        format!(
            "<sip:edge-int.contoso.test:{};transport=udp;lr>",
            self.int().port()
        )
    }

    fn pool_rr(&self) -> String {
        format!(
            "<sip:{POOL_FQDN}:{};transport=udp;lr>",
            self.pool.addr().port()
        )
    }

    fn partner_rr(&self) -> String {
        format!(
            "<sip:sip.fabrikam.test:{};transport=udp;lr>",
            self.partner.addr().port()
        )
    }

    /// The next message the partner receives, 100 Trying skipped (and checked too).
    async fn partner_recv(&mut self) -> (String, SocketAddr) {
        for _ in 0..4 {
            let (m, from) = self.partner.recv().await;
            self.seen.push(m.clone());
            if status_of(&m) != 100 {
                return (m, from);
            }
        }
        panic!("only 100 Trying reached the partner");
    }

    /// No header of any message the partner received names anything internal.
    fn assert_nothing_leaked(&self) {
        assert!(!self.seen.is_empty());
        for m in &self.seen {
            let head = m.split("\r\n\r\n").next().unwrap_or("");
            for line in head.lines().skip(1) {
                for word in FORBIDDEN {
                    assert!(
                        !line.contains(word),
                        "`{word}` reached the partner in `{line}`:\n{m}"
                    );
                }
            }
        }
    }
}

/// Route entries without the `ms-flow` parameter the edge adds to its internal entry.
pub(crate) fn without_flows(values: Vec<&str>) -> Vec<String> {
    values
        .into_iter()
        .map(|v| {
            let Some(at) = v.find(";ms-flow=") else {
                return v.to_string();
            };
            let end = v[at + 1..].find([';', '>']).map_or(v.len(), |e| at + 1 + e);
            format!("{}{}", &v[..at], &v[end..])
        })
        .collect()
}

/// A response with `rr` put above the Record-Route it copies (a proxy on the answering side).
fn answer_with_rr(req: &str, status: u16, reason: &str, rr: &str, contact: &str) -> String {
    response(req, status, reason, &[contact]).replacen(
        "Record-Route:",
        &format!("Record-Route: {rr}\r\nRecord-Route:"),
        1,
    )
}

/// An in-dialog request with its Route lines.
fn in_dialog(
    method: &str,
    uri: &str,
    via: &str,
    routes: &[&str],
    ids: (&str, &str, &str),
) -> String {
    let (from, to, call_id) = ids;
    let mut s = format!("{method} {uri} SIP/2.0\r\nVia: {via}\r\n");
    for r in routes {
        s.push_str(&format!("Route: {r}\r\n"));
    }
    let seq = if method == "ACK" { 1 } else { 2 };
    s.push_str(&format!(
        "Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
    ));
    s
}

fn sealed_entry(rr: &[&str], lab: &Lab) -> String {
    let ours = rr
        .iter()
        .find(|v| v.contains("ms-int-rs="))
        .unwrap_or_else(|| panic!("no sealed entry in {rr:?}"));
    let plain = lab.ext_rr();
    assert!(
        ours.starts_with(&plain[..plain.len() - 1]) && !ours.contains("ms-rs-sig"),
        "our external entry carries the sealed list: {ours}"
    );
    ours.to_string()
}

#[tokio::test]
async fn pool_to_partner_dialog_shows_only_the_external_entry_outside() {
    let mut lab = Lab::start().await;
    let pool_port = lab.pool.addr().port();
    let alice = "<sip:alice@contoso.test;opaque=user:epid:a1;gruu>";
    let invite = request(
        "INVITE",
        "sip:carol@fabrikam.test",
        "sip:alice@contoso.test",
        "sip:carol@fabrikam.test",
        &format!("SIP/2.0/UDP {POOL_FQDN}:{pool_port};branch=z9hG4bKout1;rport"),
        "topo-out",
        &[
            // The client's own Via under the pool's, in compact form.
            "v: SIP/2.0/TLS 10.1.2.3:50123;branch=z9hG4bKclient1",
            &format!("Record-Route: {}", lab.pool_rr()),
            &format!("Contact: {alice}"),
        ],
        "",
    );
    lab.pool.send(lab.int(), &invite).await;

    let (got, edge_src) = lab.partner_recv().await;
    assert!(got.starts_with("INVITE "), "{got}");
    let vias = headers(&got, "via");
    assert_eq!(vias.len(), 1, "only the edge's Via leaves: {got}");
    assert!(
        vias[0].starts_with("SIP/2.0/UDP accessedge.contoso.test:"),
        "{got}"
    );
    let rr = header_values(&got, "record-route");
    assert_eq!(rr.len(), 1, "one entry outside: {got}");
    let sealed = sealed_entry(&rr, &lab);

    let carol = format!("<sip:carol@127.0.0.3:{}>", lab.partner.addr().port());
    let partner_rr = lab.partner_rr();
    for (status, reason) in [(180, "Ringing"), (200, "OK")] {
        let a = answer_with_rr(
            &got,
            status,
            reason,
            &partner_rr,
            &format!("Contact: {carol}"),
        );
        lab.partner.send(edge_src, &a).await;
    }
    let (ringing, _) = lab.pool.recv_final_or_request().await;
    assert_eq!(status_of(&ringing), 180);
    let (ok, _) = lab.pool.recv_final_or_request().await;
    assert_eq!(status_of(&ok), 200);
    let (ext_rr, int_rr, pool_rr) = (lab.ext_rr(), lab.int_rr(), lab.pool_rr());
    assert_eq!(
        without_flows(header_values(&ok, "record-route")),
        vec![
            partner_rr.as_str(),
            ext_rr.as_str(),
            int_rr.as_str(),
            pool_rr.as_str()
        ],
        "the pool sees the whole route set, in order: {ok}"
    );
    assert!(
        header_values(&ok, "record-route")[2].contains(";ms-flow="),
        "our internal entry remembers the partner's flow: {ok}"
    );
    for answer in [&ringing, &ok] {
        assert_eq!(
            headers(answer, "via"),
            vec![
                format!("SIP/2.0/UDP {POOL_FQDN}:{pool_port};branch=z9hG4bKout1;rport={pool_port};received={POOL_IP}"),
                "SIP/2.0/TLS 10.1.2.3:50123;branch=z9hG4bKclient1".to_string(),
            ],
            "the hidden Via lines come back on every response: {answer}"
        );
    }
    // The partner retransmits its 200 (no ACK yet): the transactions stay Accepted (RFC
    // 6026), so it still reaches the pool, with the hidden Via lines put back.
    let again = answer_with_rr(&got, 200, "OK", &partner_rr, &format!("Contact: {carol}"));
    lab.partner.send(edge_src, &again).await;
    let (ok_again, _) = lab.pool.recv_final_or_request().await;
    assert_eq!(status_of(&ok_again), 200, "{ok_again}");
    assert_eq!(headers(&ok_again, "via"), headers(&ok, "via"), "{ok_again}");

    // The pool's ACK follows the route set reversed (its own entry popped).
    let ids = (
        "<sip:alice@contoso.test>;tag=ttopo-out",
        "<sip:carol@fabrikam.test>;tag=uas1",
        "topo-out",
    );
    let carol_uri = &carol[1..carol.len() - 1];
    let ack = in_dialog(
        "ACK",
        carol_uri,
        &format!("SIP/2.0/UDP {POOL_FQDN}:{pool_port};branch=z9hG4bKack1;rport"),
        &[&int_rr, &ext_rr, &partner_rr],
        ids,
    );
    lab.pool.send(lab.int(), &ack).await;
    let (got_ack, _) = lab.partner_recv().await;
    assert_eq!(first_line(&got_ack), format!("ACK {carol_uri} SIP/2.0"));
    assert_eq!(headers(&got_ack, "via").len(), 1, "{got_ack}");
    assert_eq!(header_values(&got_ack, "route"), vec![partner_rr.as_str()]);

    // The partner's BYE carries only the sealed entry; the pool gets its own entry back.
    let ext = lab.ext();
    bye_reaches_the_pool(&mut lab, ext, &sealed, (ids.1, ids.0, ids.2)).await;

    lab.assert_nothing_leaked();
}

#[tokio::test]
async fn partner_to_pool_dialog_hides_the_pool_entries_of_the_answer() {
    let mut lab = Lab::start().await;
    let partner_port = lab.partner.addr().port();
    let partner_rr = lab.partner_rr();
    let invite = request(
        "INVITE",
        "sip:bob@contoso.test",
        "sip:dan@fabrikam.test",
        "sip:bob@contoso.test",
        &format!("SIP/2.0/UDP 127.0.0.3:{partner_port};branch=z9hG4bKin1"),
        "topo-in",
        &[
            &format!("Record-Route: {partner_rr}"),
            &format!("Contact: <sip:dan@127.0.0.3:{partner_port}>"),
        ],
        "",
    );
    lab.partner.send(lab.ext(), &invite).await;

    let (got, edge_src) = lab.pool.recv().await;
    let (ext_rr, int_rr, pool_rr) = (lab.ext_rr(), lab.int_rr(), lab.pool_rr());
    assert_eq!(
        without_flows(header_values(&got, "record-route")),
        vec![int_rr.as_str(), ext_rr.as_str(), partner_rr.as_str()],
        "inside, nothing changes but the flow our internal entry remembers: {got}"
    );
    assert!(header_values(&got, "record-route")[0].contains(";ms-flow="));
    let bob = "<sip:bob@contoso.test;opaque=user:epid:b1;gruu>";
    let ok = answer_with_rr(&got, 200, "OK", &pool_rr, &format!("Contact: {bob}"));
    lab.pool.send(edge_src, &ok).await;

    let (ok_out, _) = lab.partner_recv().await;
    assert_eq!(status_of(&ok_out), 200);
    let rr = header_values(&ok_out, "record-route");
    let sealed = sealed_entry(&rr, &lab);
    assert_eq!(
        rr,
        vec![sealed.as_str(), partner_rr.as_str()],
        "the pool's and the internal entries are sealed into ours: {ok_out}"
    );

    // The partner's route set is the Record-Route reversed, its own entry popped.
    let ids = (
        "<sip:dan@fabrikam.test>;tag=ttopo-in",
        "<sip:bob@contoso.test>;tag=uas1",
        "topo-in",
    );
    let bob_uri = &bob[1..bob.len() - 1];
    let via = |b: &str| format!("SIP/2.0/UDP 127.0.0.3:{partner_port};branch={b}");
    for (method, branch) in [("ACK", "z9hG4bKack2"), ("BYE", "z9hG4bKbye2")] {
        let req = in_dialog(method, bob_uri, &via(branch), &[&sealed], ids);
        lab.partner.send(lab.ext(), &req).await;
        let (arrived, from) = lab.pool.recv().await;
        assert_eq!(first_line(&arrived), format!("{method} {bob_uri} SIP/2.0"));
        assert_eq!(
            header_values(&arrived, "route"),
            vec![pool_rr.as_str()],
            "{method} reaches the pool on its own entry: {arrived}"
        );
        if method == "BYE" {
            lab.pool
                .send(from, &response(&arrived, 200, "OK", &[]))
                .await;
            let (bye_ok, _) = lab.partner_recv().await;
            assert_eq!(status_of(&bye_ok), 200);
        }
    }
    lab.assert_nothing_leaked();
}

#[tokio::test]
async fn a_tampered_foreign_or_truncated_route_set_is_refused_with_diagnostics() {
    let mut lab = Lab::start().await;
    let partner_port = lab.partner.addr().port();
    let invite = request(
        "INVITE",
        "sip:bob@contoso.test",
        "sip:dan@fabrikam.test",
        "sip:bob@contoso.test",
        &format!("SIP/2.0/UDP 127.0.0.3:{partner_port};branch=z9hG4bKin3"),
        "topo-forged",
        &[&format!("Contact: <sip:dan@127.0.0.3:{partner_port}>")],
        "",
    );
    lab.partner.send(lab.ext(), &invite).await;
    let (got, edge_src) = lab.pool.recv().await;
    let ok = answer_with_rr(
        &got,
        200,
        "OK",
        &lab.pool_rr(),
        "Contact: <sip:bob@contoso.test>",
    );
    lab.pool.send(edge_src, &ok).await;
    let (ok_out, _) = lab.partner_recv().await;
    let sealed = sealed_entry(&header_values(&ok_out, "record-route"), &lab);

    // One base64 character changed at `at` of the sealed value (the key id starts at 1).
    let value_at = sealed.find(";ms-int-rs=").expect("sealed value") + ";ms-int-rs=".len();
    let changed = |at: usize| {
        let at = value_at + at;
        let flipped = if &sealed[at..at + 1] == "A" { "B" } else { "A" };
        format!("{}{flipped}{}", &sealed[..at], &sealed[at + 1..])
    };
    let value_end = sealed.rfind('>').expect("closing bracket");
    // The list of another dialog would route elsewhere: a changed byte does not decrypt.
    let tampered = changed(value_end - value_at - 10);
    let other_key = changed(3);
    let truncated = format!("{}>", &sealed[..value_at + 8]);
    let ids = (
        "<sip:dan@fabrikam.test>;tag=ttopo-forged",
        "<sip:bob@contoso.test>;tag=uas1",
        "topo-forged",
    );
    for (n, (route, reason)) in [
        (&tampered, "does not verify"),
        (&other_key, "a key this edge does not hold"),
        (&truncated, "malformed"),
    ]
    .into_iter()
    .enumerate()
    {
        let via = format!("SIP/2.0/UDP 127.0.0.3:{partner_port};branch=z9hG4bKbad{n}");
        let bye = in_dialog("BYE", "sip:bob@contoso.test", &via, &[route], ids);
        lab.partner.send(lab.ext(), &bye).await;
        let (answer, _) = lab.partner_recv().await;
        assert_eq!(status_of(&answer), 403, "{answer}");
        let diag = header(&answer, "ms-diagnostics-public").unwrap_or("");
        assert!(
            diag.starts_with("1912;") && diag.contains(reason),
            "a clear reason: {answer}"
        );
        // An ACK cannot be answered: it is dropped.
        let via = format!("SIP/2.0/UDP 127.0.0.3:{partner_port};branch=z9hG4bKbadack{n}");
        let ack = in_dialog("ACK", "sip:bob@contoso.test", &via, &[route], ids);
        lab.partner.send(lab.ext(), &ack).await;
    }
    assert!(
        lab.pool
            .try_recv(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing forged reached the pool"
    );
    lab.assert_nothing_leaked();
}

/// A `[topology]` section naming `key_file`.
fn topology_key(key_file: &std::path::Path) -> String {
    format!("\n[topology]\nkey_file = \"{}\"\n", key_file.display())
}

/// An INVITE dialog from the pool to the partner through the lab's edge, answered 200:
/// the sealed entry the partner got and the dialog's (From, To, Call-ID) as the partner
/// sees them.
async fn dial_out(lab: &mut Lab, call_id: &str) -> (String, [String; 3]) {
    let pool_port = lab.pool.addr().port();
    let invite = request(
        "INVITE",
        "sip:carol@fabrikam.test",
        "sip:alice@contoso.test",
        "sip:carol@fabrikam.test",
        &format!("SIP/2.0/UDP {POOL_FQDN}:{pool_port};branch=z9hG4bK{call_id};rport"),
        call_id,
        &[
            &format!("Record-Route: {}", lab.pool_rr()),
            "Contact: <sip:alice@contoso.test;opaque=user:epid:a1;gruu>",
        ],
        "",
    );
    lab.pool.send(lab.int(), &invite).await;
    let (got, edge_src) = lab.partner_recv().await;
    let sealed = sealed_entry(&header_values(&got, "record-route"), lab);
    let carol = format!(
        "Contact: <sip:carol@127.0.0.3:{}>",
        lab.partner.addr().port()
    );
    let ok = answer_with_rr(&got, 200, "OK", &lab.partner_rr(), &carol);
    lab.partner.send(edge_src, &ok).await;
    let (ok_in, _) = lab.pool.recv_final_or_request().await;
    assert_eq!(status_of(&ok_in), 200, "{ok_in}");
    let ids = [
        "<sip:carol@fabrikam.test>;tag=uas1".to_string(),
        format!("<sip:alice@contoso.test>;tag=t{call_id}"),
        call_id.to_string(),
    ];
    (sealed, ids)
}

/// The partner's BYE along `sealed` to the edge at `edge`: it reaches the pool on the
/// pool's own entry, and the pool's 200 reaches the partner.
async fn bye_reaches_the_pool(
    lab: &mut Lab,
    edge: SocketAddr,
    sealed: &str,
    ids: (&str, &str, &str),
) {
    let alice = "sip:alice@contoso.test;opaque=user:epid:a1;gruu";
    let via = format!(
        "SIP/2.0/UDP 127.0.0.3:{};branch=z9hG4bKbye{}",
        lab.partner.addr().port(),
        ids.2
    );
    let bye = in_dialog("BYE", alice, &via, &[sealed], ids);
    lab.partner.send(edge, &bye).await;
    let Some((got_bye, from)) = lab.pool.try_recv(WAIT).await else {
        let answer = lab.partner.try_recv(Duration::from_millis(100)).await;
        panic!("the BYE did not reach the pool; the partner got {answer:?}");
    };
    assert_eq!(first_line(&got_bye), format!("BYE {alice} SIP/2.0"));
    assert_eq!(
        header_values(&got_bye, "route"),
        vec![lab.pool_rr()],
        "{got_bye}"
    );
    lab.pool
        .send(from, &response(&got_bye, 200, "OK", &[]))
        .await;
    let (bye_ok, _) = lab.partner_recv().await;
    assert_eq!(status_of(&bye_ok), 200, "{bye_ok}");
    assert_eq!(header(&bye_ok, "cseq"), Some("2 BYE"));
}

/// A lab whose edge takes its keys from `topology.key` in a fresh directory (created by
/// the edge), with a dialog set up through it as [`dial_out`] does.
async fn dialog_under_a_key_file(call_id: &str) -> (Lab, tempfile::TempDir, String, [String; 3]) {
    let keys = tempfile::tempdir().expect("tempdir");
    let mut lab = Lab::start_with(&topology_key(&keys.path().join("topology.key"))).await;
    let (sealed, ids) = dial_out(&mut lab, call_id).await;
    (lab, keys, sealed, ids)
}

#[tokio::test]
async fn a_dialog_set_up_before_a_restart_ends_with_a_bye_after_it_when_the_key_file_is_kept() {
    let (lab, keys, sealed, ids) = dialog_under_a_key_file("topo-restart").await;
    assert!(
        keys.path().join("topology.key").exists(),
        "the edge created its key file"
    );

    let mut lab = lab.restart().await;
    let ext = lab.ext();
    bye_reaches_the_pool(&mut lab, ext, &sealed, (&ids[0], &ids[1], &ids[2])).await;
    lab.assert_nothing_leaked();
}

#[tokio::test]
async fn a_dialog_set_up_through_one_edge_ends_through_another_holding_the_same_key_file() {
    let (mut lab, _keys, sealed, ids) = dialog_under_a_key_file("topo-twin").await;

    let twin = TestEdge::start(&lab.config).await;
    let twin_ext = twin.addr(Interface::External, Transport::Udp);
    assert_ne!(twin_ext, lab.ext());
    bye_reaches_the_pool(&mut lab, twin_ext, &sealed, (&ids[0], &ids[1], &ids[2])).await;
    lab.assert_nothing_leaked();
}

#[tokio::test]
async fn an_edge_whose_key_file_is_malformed_does_not_start_and_names_the_file_and_line() {
    let keys = tempfile::tempdir().expect("tempdir");
    let key_file = keys.path().join("topology.key");
    std::fs::write(&key_file, "not a key\n").expect("write");
    let config = sipedge::config::TCP_EDGE.to_string() + &topology_key(&key_file);
    let snap = sipedge::config::Snapshot::from_toml(&config, std::path::Path::new("."))
        .expect("the config itself is valid");
    let sockets = sipedge::edge::Sockets::bind(&snap).await.expect("bind");
    let live = std::sync::Arc::new(sipedge::config::Live::new(snap));
    let Err(e) = sipedge::edge::Edge::start(live, sockets, None) else {
        panic!("the edge started with a malformed key file");
    };
    let message = e.to_string();
    assert!(
        message.contains(&format!("{}, line 1", key_file.display())),
        "{message}"
    );
}
