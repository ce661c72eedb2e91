use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use super::*;

const EXT: &str = "<sip:accessedge.contoso.test:5061;transport=tls;lr>";
const INT: &str = "<sip:edge-int.contoso.test:5061;transport=tls;lr>";
const POOL: &str = "<sip:pool.contoso.test:5070;transport=tcp;lr;ms-role-rs-to>";
const PARTNER: &str = "<sip:sip.fabrikam.test:5061;transport=tls;lr>";

fn msg(s: &str) -> Message {
    Message::parse(Bytes::copy_from_slice(s.as_bytes()), false).expect("parses")
}

fn is_ext(na: &NameAddr<'_>) -> bool {
    na.uri.host.eq_ignore_ascii_case("accessedge.contoso.test")
}

fn values(m: &Message, name: HeaderName) -> Vec<String> {
    m.values(name)
        .into_iter()
        .map(|(_, r)| m.text(r).to_string())
        .collect()
}

fn hider() -> Hider {
    Hider::random().unwrap()
}

fn binding() -> Binding {
    Binding {
        call_id: "a84b4c76e66710@pool.contoso.test".into(),
        tag: "1928301774".into(),
        partner: "fabrikam.test".into(),
        peer: "sip.fabrikam.test".into(),
    }
}

/// The bytes a sealed entry carries in its parameter.
fn sealed_bytes(sealed: &str) -> Vec<u8> {
    let na = NameAddr::parse(sealed).unwrap();
    B64.decode(na.uri.param(LIST_PARAM).unwrap()).unwrap()
}

/// A sealed entry carrying `bytes` in its parameter instead.
fn with_bytes(bytes: &[u8]) -> String {
    format!(
        "<sip:accessedge.contoso.test:5061;transport=tls;lr;{LIST_PARAM}={}>",
        B64.encode(bytes)
    )
}

#[test]
fn seal_then_open_gives_back_the_exact_entries_in_order_and_the_binding() {
    let h = hider();
    let sealed = h.seal(EXT, Side::Below, &[INT, POOL], &binding());
    assert!(sealed.starts_with("<sip:accessedge.contoso.test:5061;transport=tls;lr;ms-int-rs="));
    assert!(!sealed.contains("ms-rs-sig"), "one parameter: {sealed}");
    let o = h.open(&sealed, is_ext).unwrap().unwrap();
    assert_eq!(o.plain, EXT);
    assert_eq!(o.side, Side::Below);
    assert_eq!(o.hidden, vec![INT.to_string(), POOL.to_string()]);
    assert_eq!(o.binding, binding());
    // Every seal draws its own nonce; each one opens to the same.
    let again = h.seal(EXT, Side::Below, &[INT, POOL], &binding());
    assert_ne!(again, sealed);
    assert_eq!(h.open(&again, is_ext).unwrap().unwrap(), o);
}

#[test]
fn the_sealed_value_does_not_carry_the_hidden_names_or_the_binding_in_clear() {
    let h = hider();
    let sealed = h.seal(EXT, Side::Below, &[INT, POOL], &binding());
    let bytes = sealed_bytes(&sealed);
    let text = String::from_utf8_lossy(&bytes);
    for name in [
        "edge-int.contoso.test",
        "pool.contoso.test",
        "ms-role",
        "a84b4c76e66710",
        "fabrikam.test",
    ] {
        assert!(!sealed.contains(name), "{name} in {sealed}");
        assert!(!text.contains(name), "{name} in the decoded value {text:?}");
    }
    assert_eq!(bytes[0], VERSION);
}

#[test]
fn a_value_sealed_under_the_previous_key_opens_after_a_rotation_and_not_after_two() {
    let (a, b) = ([0xa1; 32], [0xb2; 32]);
    let sealed = Hider::new(&a, &[]).unwrap().seal(EXT, Side::Below, &[INT], &binding());
    let rotated = Hider::new(&b, &[a]).unwrap();
    let o = rotated.open(&sealed, is_ext).unwrap().unwrap();
    assert_eq!(o.hidden, vec![INT.to_string()]);
    assert_eq!(o.binding, binding());
    assert_eq!(
        Hider::new(&b, &[]).unwrap().open(&sealed, is_ext),
        Err(RouteSetError::UnknownKey)
    );
    // What the rotated hider seals, it seals under the new key.
    let fresh = rotated.seal(EXT, Side::Below, &[INT], &binding());
    assert!(Hider::new(&b, &[]).unwrap().open(&fresh, is_ext).is_ok());
    assert_eq!(
        Hider::new(&a, &[]).unwrap().open(&fresh, is_ext),
        Err(RouteSetError::UnknownKey)
    );
}

#[test]
fn entries_without_our_parameter_or_not_naming_us_are_left_alone() {
    let h = hider();
    assert_eq!(h.open(EXT, is_ext), Ok(None));
    assert_eq!(h.open(PARTNER, is_ext), Ok(None));
    assert_eq!(h.open("garbage <<", is_ext), Ok(None));
    let foreign = h
        .seal(PARTNER, Side::Below, &[INT], &binding())
        .replace("sip.fabrikam.test", "sip.other.test");
    assert_eq!(h.open(&foreign, is_ext), Ok(None));
}

#[test]
fn a_tampered_byte_or_another_edges_key_is_refused() {
    let h = hider();
    let sealed = h.seal(EXT, Side::Below, &[INT, POOL], &binding());
    let bytes = sealed_bytes(&sealed);
    // Every byte after the version and key id: nonce, ciphertext and tag.
    for at in 1 + KEY_ID_LEN..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        assert_eq!(
            h.open(&with_bytes(&bad), is_ext),
            Err(RouteSetError::BadSeal),
            "byte {at}"
        );
    }
    let mut other_id = bytes.clone();
    other_id[1] ^= 0x01;
    assert_eq!(
        h.open(&with_bytes(&other_id), is_ext),
        Err(RouteSetError::UnknownKey)
    );

    // Sealed by another process (another key).
    let forged = hider().seal(EXT, Side::Below, &["<sip:evil.test;lr>"], &binding());
    assert_eq!(h.open(&forged, is_ext), Err(RouteSetError::UnknownKey));

    let truncated = with_bytes(&bytes[..bytes.len() - 1]);
    assert_eq!(h.open(&truncated, is_ext), Err(RouteSetError::BadSeal));
    for (name, value) in [
        ("empty", String::new()),
        ("not base64", "!!!!".to_string()),
        ("header only", B64.encode(&bytes[..HEADER_LEN + 4])),
        ("version 1, signed not sealed", B64.encode(b"\x01b\x00\x07<sip:a>")),
    ] {
        let entry = format!("<sip:accessedge.contoso.test;lr;{LIST_PARAM}={value}>");
        assert_eq!(h.open(&entry, is_ext), Err(RouteSetError::Malformed), "{name}");
    }

    let r = RouteSetError::BadSeal.rejection();
    assert_eq!(r.status, 403);
    assert_eq!(r.diagnostics.unwrap().code, DIAGNOSTICS_CODE);
}

#[test]
fn a_sealed_payload_that_is_not_ours_in_shape_is_malformed_not_a_panic() {
    let h = hider();
    let sealed = |payload: &[u8]| {
        format!(
            "<sip:accessedge.contoso.test;lr;{LIST_PARAM}={}>",
            h.encrypt(payload.to_vec())
        )
    };
    const EMPTY_BINDING: &[u8] = b"\x00\x00\x00\x00\x00\x00\x00\x00";
    let with_binding = |side: &[u8], rest: &[u8]| [side, EMPTY_BINDING, rest].concat();
    for payload in [
        b"".to_vec(),
        b"x".to_vec(),                                // unknown side
        b"b\x00\x00".to_vec(),                        // binding cut short
        with_binding(b"x", b""),                      // unknown side, whole binding
        with_binding(b"b", b"\x00"),                  // length cut short
        with_binding(b"b", b"\x00\x09<sip:a>"),        // entry shorter than its length
        with_binding(b"b", b"\x00\x00"),              // empty entry
        with_binding(b"b", b"\x00\x0c<sip:a>\r\nX: y"), // a header smuggled in
        with_binding(b"b", b"\x00\x02\xff\xfe"),       // not UTF-8
        [&b"b\x00\x04a\r\nb"[..], &EMPTY_BINDING[2..]].concat(), // a line break in the binding
    ] {
        assert_eq!(
            h.open(&sealed(&payload), is_ext),
            Err(RouteSetError::Malformed),
            "{payload:?}"
        );
    }
    let mut many = with_binding(b"b", b"");
    for _ in 0..=MAX_ENTRIES {
        many.extend_from_slice(b"\x00\x07<sip:a>");
    }
    assert_eq!(h.open(&sealed(&many), is_ext), Err(RouteSetError::Malformed));
    let o = h.open(&sealed(&with_binding(b"b", b"")), is_ext).unwrap().unwrap();
    assert_eq!((o.hidden, o.binding), (Vec::new(), Binding::default()));
}

#[test]
fn parameter_names_are_matched_case_insensitively() {
    let h = hider();
    let sealed = h
        .seal(EXT, Side::Below, &[INT], &binding())
        .replace(LIST_PARAM, "MS-Int-RS");
    let o = h.open(&sealed, is_ext).unwrap().unwrap();
    assert_eq!(o.plain, EXT);
    assert_eq!(o.hidden, vec![INT.to_string()]);
}

#[test]
fn ipv6_entries_keep_their_brackets() {
    let h = hider();
    let ext = "<sip:[2001:db8::1]:5061;transport=tls;lr>";
    let int = "<sip:[2001:db8::2]:5061;transport=tls;lr>";
    let pool = "<sip:[::1]:5070;lr>";
    let sealed = h.seal(ext, Side::Below, &[int, pool], &binding());
    assert!(sealed.starts_with("<sip:[2001:db8::1]:5061;"), "{sealed}");
    let o = h
        .open(&sealed, |na: &NameAddr<'_>| na.uri.host == "2001:db8::1")
        .unwrap()
        .unwrap();
    assert_eq!(o.plain, ext);
    assert_eq!(o.hidden, vec![int.to_string(), pool.to_string()]);
}

#[test]
fn a_request_going_out_hides_everything_below_our_entry_and_its_route_comes_back_whole() {
    let h = hider();
    let invite = msg(&format!(
        "INVITE sip:carol@fabrikam.test SIP/2.0\r\n\
Via: SIP/2.0/TCP 10.0.0.9:5070;branch=z9hG4bKa\r\n\
Record-Route: {POOL}, <sip:fe2.contoso.test;lr>\r\n\
Content-Length: 0\r\n\r\n"
    ));
    let rr = h.hide_request(&invite, EXT, INT, &binding());
    assert!(!rr.contains("contoso.test;lr") && !rr.contains("edge-int"), "{rr}");
    let o = h.open(&rr, is_ext).unwrap().unwrap();
    assert_eq!(
        o.hidden,
        vec![INT, POOL, "<sip:fe2.contoso.test;lr>"],
        "nearest first, as the internal side wrote them"
    );

    // The partner answers with our entry under its own, then sends BYE along it.
    let ok = msg(&format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS e;branch=z9hG4bKx\r\n\
Record-Route: {PARTNER}, {rr}\r\nContent-Length: 0\r\n\r\n"
    ));
    let inward = h.expand_record_route(&ok, false, is_ext).unwrap();
    assert_eq!(
        values(&inward, HeaderName::RecordRoute),
        vec![PARTNER, EXT, INT, POOL, "<sip:fe2.contoso.test;lr>"]
    );
    let bye = msg(&format!(
        "BYE sip:alice@contoso.test SIP/2.0\r\nVia: SIP/2.0/TLS p;branch=z9hG4bKy\r\n\
Route: {rr}\r\nContent-Length: 4\r\n\r\nbody"
    ));
    let (inward, bound) = h.expand_route(&bye, false, is_ext).unwrap().unwrap();
    assert_eq!(
        values(&inward, HeaderName::Route),
        vec![EXT, INT, POOL, "<sip:fe2.contoso.test;lr>"]
    );
    assert_eq!(bound, binding());
    assert_eq!(inward.body(), b"body");
    assert_eq!(
        inward.text(inward.headers()[0].line.clone()),
        "Via: SIP/2.0/TLS p;branch=z9hG4bKy\r\n",
        "untouched lines stay as they were"
    );
}

#[test]
fn a_response_going_out_hides_everything_above_our_entry() {
    let h = hider();
    let ok = msg(&format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS e;branch=z9hG4bKx\r\n\
Record-Route: {POOL}\r\nRecord-Route: {INT}, {EXT}\r\nRecord-Route: {PARTNER}\r\n\
Content-Length: 0\r\n\r\n"
    ));
    let line = h.hide_response(&ok, is_ext, &binding()).unwrap();
    let value = line.strip_prefix("Record-Route: ").unwrap();
    assert!(!value.contains("edge-int") && !value.contains("pool."), "{line}");
    assert!(value.ends_with(&format!(", {PARTNER}")), "{line}");

    // What the partner's in-dialog request carries: the route set reversed.
    let sealed = value.split(", ").next().unwrap();
    let bye = msg(&format!(
        "BYE sip:alice@contoso.test SIP/2.0\r\nVia: SIP/2.0/TLS p;branch=z9hG4bKy\r\n\
Route: {sealed}\r\nContent-Length: 0\r\n\r\n"
    ));
    let (inward, bound) = h.expand_route(&bye, false, is_ext).unwrap().unwrap();
    assert_eq!(values(&inward, HeaderName::Route), vec![EXT, INT, POOL]);
    assert_eq!(bound, binding());

    // A Record-Route echoed back the other way round is restored in header order.
    let echoed = msg(&format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS e;branch=z9hG4bKx\r\n{line}\r\nContent-Length: 0\r\n\r\n"
    ));
    let inward = h.expand_record_route(&echoed, false, is_ext).unwrap();
    assert_eq!(
        values(&inward, HeaderName::RecordRoute),
        vec![POOL, INT, EXT, PARTNER]
    );

    // Nothing above our entry: nothing to hide.
    let plain = msg(&format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS e;branch=z9hG4bKx\r\nRecord-Route: {EXT}, {PARTNER}\r\nContent-Length: 0\r\n\r\n"
    ));
    assert_eq!(h.hide_response(&plain, is_ext, &binding()), None);
}

#[test]
fn a_bad_route_is_refused_and_a_bad_record_route_loses_its_claim() {
    let h = hider();
    let forged = hider().seal(EXT, Side::Below, &["<sip:evil.test;lr>"], &binding());
    let bye = msg(&format!(
        "BYE sip:alice@contoso.test SIP/2.0\r\nVia: SIP/2.0/TLS p;branch=z9hG4bKy\r\n\
Route: {forged}\r\nContent-Length: 0\r\n\r\n"
    ));
    assert_eq!(
        h.expand_route(&bye, false, is_ext).unwrap_err(),
        RouteSetError::UnknownKey
    );
    let ok = msg(&format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS e;branch=z9hG4bKx\r\nRecord-Route: {forged}\r\nContent-Length: 0\r\n\r\n"
    ));
    let inward = h.expand_record_route(&ok, false, is_ext).unwrap();
    assert_eq!(values(&inward, HeaderName::RecordRoute), vec![EXT]);
    // Messages without our parameters are not re-parsed at all.
    let plain = msg(&format!(
        "BYE sip:alice@contoso.test SIP/2.0\r\nVia: SIP/2.0/TLS p;branch=z9hG4bKy\r\nRoute: {EXT}\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(h.expand_route(&plain, false, is_ext).unwrap().is_none());
}

#[test]
fn via_lines_are_kept_as_written_with_the_received_edit_on_the_top_one() {
    let m = msg("INVITE sip:carol@fabrikam.test SIP/2.0\r\n\
Via: SIP/2.0/UDP pool.contoso.test:5070;branch=z9hG4bKp;rport\r\n\
Max-Forwards: 70\r\n\
v: SIP/2.0/TLS 10.1.2.3:50123;branch=z9hG4bKc, SIP/2.0/TLS [2001:db8::5]:5061;branch=z9hG4bKd\r\n\
Content-Length: 0\r\n\r\n");
    let (_, top) = m.first_value(HeaderName::Via).unwrap();
    let received = (
        top.end,
        crate::sip::build::ViaReceived {
            rport: None,
            received: Some("127.0.0.4".parse().unwrap()),
        },
    );
    assert_eq!(
        &via_lines(&m, Some(&received))[..],
        &b"Via: SIP/2.0/UDP pool.contoso.test:5070;branch=z9hG4bKp;rport;received=127.0.0.4\r\n\
v: SIP/2.0/TLS 10.1.2.3:50123;branch=z9hG4bKc, SIP/2.0/TLS [2001:db8::5]:5061;branch=z9hG4bKd\r\n"[..]
    );
    assert!(hides(Interface::Internal, Interface::External));
    for (a, e) in [
        (Interface::External, Interface::Internal),
        (Interface::Internal, Interface::Internal),
        (Interface::External, Interface::External),
    ] {
        assert!(!hides(a, e));
    }
}

#[test]
fn the_binding_of_what_goes_out_names_the_internal_tag_and_the_external_domain() {
    let invite = msg("INVITE sip:carol@fabrikam.test SIP/2.0\r\n\
Via: SIP/2.0/TCP 10.0.0.9:5070;branch=z9hG4bKa\r\n\
From: <sip:alice@contoso.test>;tag=alice1\r\nTo: <sip:carol@Fabrikam.TEST>\r\n\
Call-ID: c1@pool\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
    let out = Binding::of_request_out(&invite);
    assert_eq!(
        (out.call_id.as_str(), out.tag.as_str(), out.partner.as_str()),
        ("c1@pool", "alice1", "fabrikam.test")
    );
    let ok = msg("SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS e;branch=z9hG4bKx\r\n\
From: <sip:dan@fabrikam.test>;tag=dan1\r\nTo: <sip:bob@contoso.test>;tag=bob1\r\n\
Call-ID: c2@partner\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
    let back = Binding::of_response_out(&ok);
    assert_eq!(
        (back.call_id.as_str(), back.tag.as_str(), back.partner.as_str()),
        ("c2@partner", "bob1", "fabrikam.test")
    );
    assert_eq!((out.peer.as_str(), back.peer.as_str()), ("", ""));
}

#[test]
fn a_missing_key_file_is_created_0600_and_read_back_the_same() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topology.key");
    let created = key_file::load_or_create(&path).unwrap();
    assert_eq!(created.len(), 1);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(key_file::load_or_create(&path).unwrap(), created);
    let sealed = Hider::from_key_file(&path)
        .unwrap()
        .seal(EXT, Side::Below, &[INT], &binding());
    let o = Hider::from_key_file(&path)
        .unwrap()
        .open(&sealed, is_ext)
        .unwrap()
        .unwrap();
    assert_eq!(o.hidden, vec![INT.to_string()], "another hider of the file opens it");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left");
}

#[test]
fn key_lines_may_be_hex_or_base64_and_a_rotation_keeps_one_previous_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topology.key");
    let (a, b) = ([0x11u8; 32], [0x22u8; 32]);
    let text = format!("{}\n\n{}\n", key_file::render(&[a]).trim(), STANDARD.encode(b));
    std::fs::write(&path, text).unwrap();
    assert_eq!(key_file::read(&path).unwrap(), vec![a, b]);
    let rotated = key_file::rotate(&path).unwrap();
    assert_eq!(rotated.len(), 1 + key_file::KEPT_PREVIOUS);
    assert_eq!(rotated[1], a, "the sealing key is kept, for opening");
    assert!(!rotated.contains(&b), "the older key is dropped");
    assert_eq!(key_file::read(&path).unwrap(), rotated);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_malformed_key_file_is_refused_naming_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topology.key");
    let good = key_file::render(&[[7u8; 32]]);
    for (text, line, says) in [
        (format!("{good}0011\n"), 2, "not 32 bytes long"),
        ("zz-not-a-key\n".to_string(), 1, "neither 64 hex digits nor base64"),
        (format!("{}\n", "g".repeat(64)), 1, "not 32 bytes long"),
    ] {
        std::fs::write(&path, text).unwrap();
        let e = Hider::from_key_file(&path).unwrap_err();
        assert!(
            matches!(e, KeyFileError::Malformed { line: l, .. } if l == line),
            "{e:?}"
        );
        let message = e.to_string();
        assert!(
            message.contains(&path.display().to_string())
                && message.contains(&format!("line {line}"))
                && message.contains(says),
            "{message}"
        );
    }
    std::fs::write(&path, "\n\n").unwrap();
    let e = Hider::from_key_file(&path).unwrap_err();
    assert!(e.to_string().contains("holds no key"), "{e}");
}

#[test]
fn a_binding_admits_only_its_own_dialog_partner_and_peer() {
    // The partner's BYE in the dialog: its own tag in From, ours (the bound one) in To.
    let bye = |call_id: &str, from_host: &str, to_tag: &str| {
        msg(&format!(
            "BYE sip:bob@10.0.0.5 SIP/2.0\r\nVia: SIP/2.0/TLS 10.0.0.9;branch=z9hG4bKb1\r\nMax-Forwards: 70\r\nFrom: <sip:dan@{from_host}>;tag=remote\r\nTo: <sip:bob@contoso.test>;tag={to_tag}\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        ))
    };
    let b = Binding {
        call_id: "dlg".into(),
        tag: "ours".into(),
        partner: "fabrikam.test".into(),
        peer: "sip.fabrikam.test".into(),
    };
    let fabrikam = PeerIdentity::new(["sip.fabrikam.test"]);
    assert_eq!(b.admits(&bye("dlg", "Fabrikam.test", "ours"), &fabrikam), Ok(()));
    let refused = Err(RouteSetError::OtherDialog);
    assert_eq!(b.admits(&bye("other", "fabrikam.test", "ours"), &fabrikam), refused);
    assert_eq!(b.admits(&bye("dlg", "fabrikam.test", "theirs"), &fabrikam), refused);
    assert_eq!(b.admits(&bye("dlg", "northwind.test", "ours"), &fabrikam), refused);
    let northwind = PeerIdentity::new(["sip.northwind.test"]);
    assert_eq!(b.admits(&bye("dlg", "fabrikam.test", "ours"), &northwind), refused);
    // Sealed before the peer was known: any peer the policy then verifies.
    let unknown_peer = Binding { peer: String::new(), ..b };
    assert_eq!(unknown_peer.admits(&bye("dlg", "fabrikam.test", "ours"), &northwind), Ok(()));
}
