//! `[trace]`: a lab run captured to pcap (read back by tshark), to HEPv3 (read back by a
//! decoder written here from the HEPv3 field layout), to the TLS key log, and drawn as
//! ladders by the admin endpoint.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use sipedge::lab::run::Lab;
use sipedge::send::{SendMethod, SendRequest};
use sipedge::transport::{Interface, Transport};

use crate::lab::{repo, start_with};

/// One request through the lab's internal TLS listener, as `sipedge send` makes it.
pub(crate) async fn send(
    lab: &Lab,
    method: SendMethod,
    transport: Transport,
    to: &str,
) -> sipedge::send::Outcome {
    let snap = sipedge::config::Snapshot::load(&repo("config/lab.toml")).unwrap();
    let req = SendRequest {
        from: "sip:alice@contoso.test".into(),
        to: to.into(),
        method,
        via: Some(Interface::Internal),
        transport: Some(transport),
        cert: None,
        body: None,
        timeout: Duration::from_secs(10),
        edge: lab.edge().local_addr(Interface::Internal, transport),
        bound: Vec::new(),
        source: None,
    };
    sipedge::send::send(&snap, &repo("certs"), &req)
        .await
        .unwrap_or_else(|e| panic!("{method} {to}: {e}"))
}

/// GET `path` on the lab's admin endpoint with its token.
async fn admin_get(lab: &Lab, path: String) -> (u16, String) {
    let endpoint = format!("http://{}", lab.admin_addr().expect("admin"));
    let token = lab.admin_token().unwrap().to_string();
    tokio::task::spawn_blocking(move || {
        sipedge::admin::http::send(&endpoint, "GET", &path, Some(&token), "").unwrap()
    })
    .await
    .unwrap()
}

/// Every packet of the pcap as tshark dissects it: (Call-ID, first line), and how many
/// were malformed. The edge's ports are decoded as SIP whatever they are.
fn tshark(pcap: &Path, ports: &[u16]) -> (Vec<(String, String)>, usize) {
    let mut args: Vec<String> = vec!["-r".into(), pcap.display().to_string()];
    for p in ports {
        args.extend(["-d".into(), format!("udp.port=={p},sip")]);
        args.extend(["-d".into(), format!("tcp.port=={p},sip")]);
    }
    let run = |extra: &[&str]| {
        let out = std::process::Command::new("tshark")
            .args(&args)
            .args(extra)
            .output()
            .expect("tshark runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = run(&[
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "sip.Call-ID",
        "-e",
        "sip.Request-Line",
        "-e",
        "sip.Status-Line",
    ]);
    let rows = listed
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            let first = if f[1].is_empty() { f[2] } else { f[1] };
            (f[0].to_string(), first.to_string())
        })
        .collect();
    let malformed = run(&["-Y", "_ws.malformed || _ws.expert.severity == error"]);
    (rows, malformed.lines().count())
}

/// One HEPv3 datagram decoded from the specification's layout: `HEP3`, a u16 total
/// length, then chunks of (vendor u16, type u16, length u16 including these 6 bytes,
/// value), big-endian.
fn hep_chunks(d: &[u8]) -> BTreeMap<u16, Vec<u8>> {
    assert_eq!(&d[..4], b"HEP3", "the HEPv3 magic");
    assert_eq!(
        u16::from_be_bytes([d[4], d[5]]) as usize,
        d.len(),
        "total length"
    );
    let mut chunks = BTreeMap::new();
    let mut at = 6;
    while at < d.len() {
        let vendor = u16::from_be_bytes([d[at], d[at + 1]]);
        let kind = u16::from_be_bytes([d[at + 2], d[at + 3]]);
        let len = u16::from_be_bytes([d[at + 4], d[at + 5]]) as usize;
        assert_eq!(vendor, 0, "generic chunks only");
        assert!(len >= 6 && at + len <= d.len(), "chunk {kind:#06x} fits");
        chunks.insert(kind, d[at + 6..at + len].to_vec());
        at += len;
    }
    chunks
}

fn be32(v: &[u8]) -> u32 {
    u32::from_be_bytes(v.try_into().expect("4 bytes"))
}

fn call_id_of(msg: &str) -> &str {
    msg.lines()
        .find_map(|l| l.strip_prefix("Call-ID:").or_else(|| l.strip_prefix("i:")))
        .map(str::trim)
        .unwrap_or("")
}

#[tokio::test]
async fn a_lab_run_is_read_back_from_pcap_hep_the_key_log_and_the_ladders() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("run.pcap");
    let keylog = dir.path().join("keys.log");
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let hep: SocketAddr = collector.local_addr().unwrap();
    let lab = start_with("config/lab.toml", |s| {
        s.trace.pcap = Some(pcap.clone());
        s.trace.hep = Some(hep);
        s.trace.hep_node_id = 7;
        s.trace.keylog = Some(keylog.clone());
    })
    .await;

    let im = send(
        &lab,
        SendMethod::Message,
        Transport::Tls,
        "sip:dan@tailspin.test",
    )
    .await;
    // Over UDP too: datagrams in and out are recorded like stream messages.
    let udp = send(
        &lab,
        SendMethod::Message,
        Transport::Udp,
        "sip:fay@tailspin.test",
    )
    .await;
    assert_eq!(udp.status, 200, "{}", udp.render());
    assert_eq!(im.status, 200, "{}", im.render());
    let call = send(
        &lab,
        SendMethod::Invite,
        Transport::Tls,
        "sip:erin@tailspin.test",
    )
    .await;
    assert_eq!(call.status, 200, "{}", call.render());
    assert!(
        call.dialog
            .as_deref()
            .unwrap_or("")
            .contains("BYE: SIP/2.0 200 OK"),
        "{call:?}"
    );
    // `send -v` shows what went each way: the INVITE first, its 200 among what came back.
    assert!(
        call.transcript[0].0
            && call.transcript[0]
                .1
                .starts_with("INVITE sip:erin@tailspin.test")
    );
    assert!(call
        .transcript
        .iter()
        .any(|(sent, m)| !sent && m.starts_with("SIP/2.0 200 OK")));
    assert!(call
        .transcript
        .iter()
        .any(|(sent, m)| *sent && m.starts_with("BYE ")));

    let tap = lab.edge().core().trace().expect("the lab records").clone();
    tap.flush();
    let kept = |id: &str| tap.call(id);
    let (im_kept, call_kept) = (kept(&im.call_id), kept(&call.call_id));
    let udp_kept = kept(&udp.call_id);
    assert_eq!(udp_kept.len(), 4, "{udp_kept:?}");
    assert_eq!(udp_kept[0].transport, Transport::Udp);
    assert_eq!(
        udp_kept[3].transport,
        Transport::Udp,
        "the 200 sent back as a datagram"
    );
    // In and out at the edge: MESSAGE and its 200 twice each; the INVITE dialog more.
    assert_eq!(im_kept.len(), 4, "{im_kept:?}");
    assert!(call_kept.len() >= 10, "{call_kept:?}");

    // pcap: tshark lists every message with its Call-ID, as the ring kept them; none malformed.
    let mut ports = Vec::new();
    for i in [Interface::External, Interface::Internal] {
        for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            ports.extend(lab.edge().local_addr(i, t).map(|a| a.port()));
        }
    }
    let (rows, malformed) = tshark(&pcap, &ports);
    assert_eq!(malformed, 0, "malformed packets in {rows:?}");
    assert!(
        rows.iter().all(|(id, _)| !id.is_empty()),
        "a packet without a Call-ID: {rows:?}"
    );
    for (id, kept) in [
        (&im.call_id, &im_kept),
        (&udp.call_id, &udp_kept),
        (&call.call_id, &call_kept),
    ] {
        let listed: Vec<&str> = rows
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, l)| l.as_str())
            .collect();
        let expected: Vec<String> = kept
            .iter()
            .map(|m| sipedge::trace::first_line(&m.bytes))
            .collect();
        assert_eq!(listed, expected, "tshark's messages of {id}");
    }

    // HEP: one datagram per message, with the chunks a collector expects.
    let mut hep_seen: Vec<(String, String)> = Vec::new();
    let mut buf = vec![0u8; 65_536];
    for _ in 0..rows.len() {
        let (n, _) = collector
            .recv_from(&mut buf)
            .expect("a HEP datagram per message");
        let c = hep_chunks(&buf[..n]);
        assert_eq!(c[&0x0001], [2], "IPv4");
        assert!(c[&0x0002] == [6] || c[&0x0002] == [17], "TCP or UDP");
        assert_eq!(c[&0x0003].len(), 4);
        assert_eq!(c[&0x0004].len(), 4);
        assert_eq!(c[&0x0007].len(), 2);
        assert_eq!(c[&0x0008].len(), 2);
        let sec = be32(&c[&0x0009]) as u64;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now - sec < 120, "timestamp seconds");
        assert!(be32(&c[&0x000a]) < 1_000_000, "timestamp microseconds");
        assert_eq!(c[&0x000b], [1], "protocol type SIP");
        assert_eq!(be32(&c[&0x000c]), 7, "capture agent id");
        assert_eq!(c[&0x0013], b"accessedge.contoso.test", "node name");
        let payload = String::from_utf8(c[&0x000f].clone()).unwrap();
        let correlation = String::from_utf8(c[&0x0011].clone()).unwrap();
        assert_eq!(
            correlation,
            call_id_of(&payload),
            "correlation id = Call-ID"
        );
        let ports = (
            u16::from_be_bytes([c[&0x0007][0], c[&0x0007][1]]),
            u16::from_be_bytes([c[&0x0008][0], c[&0x0008][1]]),
        );
        assert!(ports.0 != 0 && ports.1 != 0);
        hep_seen.push((correlation, sipedge::trace::first_line(payload.as_bytes())));
    }
    assert_eq!(
        hep_seen, rows,
        "HEP carries the same messages as the pcap, in order"
    );

    // The key log: the TLS secrets of the connections, for Wireshark.
    let keys = std::fs::read_to_string(&keylog).unwrap();
    assert!(
        keys.lines()
            .any(|l| l.starts_with("CLIENT_HANDSHAKE_TRAFFIC_SECRET ")
                || l.starts_with("CLIENT_RANDOM ")),
        "{keys}"
    );
    assert!(keys.lines().all(|l| l.split(' ').count() == 3), "{keys}");

    // The ladders.
    let enc = sipedge::admin::http::percent_encode;
    let (status, ladder) = admin_get(&lab, format!("/trace?call-id={}", enc(&im.call_id))).await;
    assert_eq!(status, 200, "{ladder}");
    let lines: Vec<&str> = ladder.lines().collect();
    assert!(
        lines[1].contains("sender (internal)")
            && lines[1].contains("edge internal")
            && lines[1].contains("edge external")
            && lines[1].contains("far side"),
        "{ladder}"
    );
    let rows_of = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with('+'))
            .map(|l| l.rsplit("|  ").next().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        rows_of(&ladder),
        [
            "MESSAGE sip:dan@tailspin.test SIP/2.0",
            "MESSAGE sip:dan@tailspin.test SIP/2.0",
            "SIP/2.0 200 OK",
            "SIP/2.0 200 OK"
        ],
        "{ladder}"
    );
    // The arrows: in from the sender, out on the external side, back, and back to the sender.
    let arrows: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with('+'))
        .copied()
        .collect();
    assert!(
        arrows[0].contains("tls") && arrows[0].contains("->|"),
        "{ladder}"
    );
    assert!(arrows[2].contains("|<-"), "{ladder}");
    let decision = lines
        .iter()
        .find(|l| l.trim_start().starts_with("* forward "))
        .unwrap_or_else(|| panic!("no decision row: {ladder}"));
    assert!(decision.ends_with("→ 200"), "{ladder}");

    let (_, dialog) = admin_get(&lab, format!("/trace?call-id={}&raw=1", enc(&call.call_id))).await;
    let methods: Vec<String> = rows_of(&dialog)
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    for m in ["INVITE", "ACK", "BYE"] {
        assert_eq!(
            methods.iter().filter(|x| *x == m).count(),
            2,
            "{m} in and out: {dialog}"
        );
    }
    assert_eq!(methods[0], "INVITE", "{dialog}");
    assert!(
        dialog.contains(&format!("Call-ID: {}", call.call_id)),
        "--raw prints the messages: {dialog}"
    );
    assert_eq!(
        dialog.matches("* forward ").count(),
        2,
        "the INVITE and the BYE were decided (an ACK gets no final response to record): {dialog}"
    );

    let (status, html) = admin_get(&lab, format!("/ladder?call-id={}", enc(&call.call_id))).await;
    assert_eq!(status, 200);
    assert!(
        html.starts_with("<!DOCTYPE html>") && html.contains("<table class=\"ladder\">"),
        "{html}"
    );
    assert_eq!(
        html.matches("INVITE sip:erin@tailspin.test SIP/2.0 (")
            .count(),
        2,
        "{html}"
    );
    lab.shutdown(Duration::from_millis(200)).await;
}
