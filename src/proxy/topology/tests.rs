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

/// Rebuilds a sealed entry with one parameter's value changed.
fn with_param(sealed: &str, name: &str, value: Option<&str>) -> String {
    let plain = strip_ours(sealed);
    let na = NameAddr::parse(sealed).unwrap();
    let mut extra = String::new();
    for p in [LIST_PARAM, SIG_PARAM] {
        let v = if p == name {
            value
        } else {
            na.uri.param(p)
        };
        if let Some(v) = v {
            extra.push_str(&format!(";{p}={v}"));
        }
    }
    let gt = plain.rfind('>').unwrap();
    format!("{}{extra}{}", &plain[..gt], &plain[gt..])
}

#[test]
fn seal_then_open_gives_back_the_exact_entries_in_order() {
    let h = Hider::random();
    let sealed = h.seal(EXT, Side::Below, &[INT, POOL]);
    assert!(sealed.starts_with("<sip:accessedge.contoso.test:5061;transport=tls;lr;ms-int-rs="));
    assert!(sealed.contains(";ms-rs-sig="), "{sealed}");
    for name in ["edge-int", "pool.contoso", "ms-role"] {
        assert!(!sealed.contains(name), "{name} in {sealed}");
    }
    let o = h.open(&sealed, is_ext).unwrap().unwrap();
    assert_eq!(o.plain, EXT);
    assert_eq!(o.side, Side::Below);
    assert_eq!(o.hidden, vec![INT.to_string(), POOL.to_string()]);
    // The same list seals the same way: retransmissions carry identical bytes.
    assert_eq!(h.seal(EXT, Side::Below, &[INT, POOL]), sealed);
}

#[test]
fn entries_without_our_parameters_or_not_naming_us_are_left_alone() {
    let h = Hider::random();
    assert_eq!(h.open(EXT, is_ext), Ok(None));
    assert_eq!(h.open(PARTNER, is_ext), Ok(None));
    assert_eq!(h.open("garbage <<", is_ext), Ok(None));
    let foreign = h
        .seal(PARTNER, Side::Below, &[INT])
        .replace("sip.fabrikam.test", "sip.other.test");
    assert_eq!(h.open(&foreign, is_ext), Ok(None));
}

#[test]
fn tampered_missing_or_foreign_signatures_are_refused() {
    let h = Hider::random();
    let sealed = h.seal(EXT, Side::Below, &[INT, POOL]);
    let na = NameAddr::parse(&sealed).unwrap();
    let list = na.uri.param(LIST_PARAM).unwrap();
    let sig = na.uri.param(SIG_PARAM).unwrap();

    // One character of the list changed.
    let mut bad = list.as_bytes().to_vec();
    bad[5] = if bad[5] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).unwrap();
    let tampered = with_param(&sealed, LIST_PARAM, Some(&bad));
    assert_eq!(h.open(&tampered, is_ext), Err(RouteSetError::BadSignature));

    // A list of the forger's choosing under the old signature.
    let forged = Hider::random().seal(EXT, Side::Below, &["<sip:evil.test;lr>"]);
    let forged_list = NameAddr::parse(&forged).unwrap().uri.param(LIST_PARAM).unwrap();
    let swapped = with_param(&sealed, LIST_PARAM, Some(forged_list));
    assert_eq!(h.open(&swapped, is_ext), Err(RouteSetError::BadSignature));

    // Signed by another process (another key).
    assert_eq!(h.open(&forged, is_ext), Err(RouteSetError::BadSignature));

    let truncated = with_param(&sealed, SIG_PARAM, Some(&sig[..sig.len() - 2]));
    assert_eq!(h.open(&truncated, is_ext), Err(RouteSetError::BadSignature));
    let not_base64 = with_param(&sealed, SIG_PARAM, Some("!!!!"));
    assert_eq!(h.open(&not_base64, is_ext), Err(RouteSetError::BadSignature));
    let unsigned = with_param(&sealed, SIG_PARAM, None);
    assert_eq!(h.open(&unsigned, is_ext), Err(RouteSetError::MissingSignature));
    let empty_sig = with_param(&sealed, SIG_PARAM, Some(""));
    assert_eq!(h.open(&empty_sig, is_ext), Err(RouteSetError::MissingSignature));
    let sig_only = with_param(&sealed, LIST_PARAM, None);
    assert_eq!(h.open(&sig_only, is_ext), Err(RouteSetError::Malformed));

    let r = RouteSetError::BadSignature.rejection();
    assert_eq!(r.status, 403);
    assert_eq!(r.diagnostics.unwrap().code, DIAGNOSTICS_CODE);
}

#[test]
fn a_signed_list_that_is_not_ours_in_shape_is_malformed_not_a_panic() {
    let h = Hider::random();
    let signed = |payload: &[u8]| {
        let list = B64.encode(payload);
        let sig = B64.encode(h.tag(list.as_bytes()));
        format!("<sip:accessedge.contoso.test;lr;{LIST_PARAM}={list};{SIG_PARAM}={sig}>")
    };
    for payload in [
        &b""[..],
        b"\x01",
        b"\x02b",                            // unknown version
        b"\x01x",                            // unknown side
        b"\x01b\x00",                        // length cut short
        b"\x01b\x00\x09<sip:a>",             // entry shorter than its length
        b"\x01b\x00\x00",                    // empty entry
        b"\x01b\x00\x0c<sip:a>\r\nX: y", // a header smuggled in
        b"\x01b\x00\x02\xff\xfe",            // not UTF-8
    ] {
        assert_eq!(
            h.open(&signed(payload), is_ext),
            Err(RouteSetError::Malformed),
            "{payload:?}"
        );
    }
    let mut many = vec![VERSION, b'b'];
    for _ in 0..=MAX_ENTRIES {
        many.extend_from_slice(b"\x00\x07<sip:a>");
    }
    assert_eq!(h.open(&signed(&many), is_ext), Err(RouteSetError::Malformed));
    assert_eq!(
        h.open(&signed(b"\x01b"), is_ext).unwrap().unwrap().hidden,
        Vec::<String>::new()
    );
}

#[test]
fn parameter_names_are_matched_case_insensitively() {
    let h = Hider::random();
    let sealed = h
        .seal(EXT, Side::Below, &[INT])
        .replace(LIST_PARAM, "MS-Int-RS")
        .replace(SIG_PARAM, "Ms-Rs-Sig");
    let o = h.open(&sealed, is_ext).unwrap().unwrap();
    assert_eq!(o.plain, EXT);
    assert_eq!(o.hidden, vec![INT.to_string()]);
}

#[test]
fn ipv6_entries_keep_their_brackets() {
    let h = Hider::random();
    let ext = "<sip:[2001:db8::1]:5061;transport=tls;lr>";
    let int = "<sip:[2001:db8::2]:5061;transport=tls;lr>";
    let pool = "<sip:[::1]:5070;lr>";
    let sealed = h.seal(ext, Side::Below, &[int, pool]);
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
    let h = Hider::random();
    let invite = msg(&format!(
        "INVITE sip:carol@fabrikam.test SIP/2.0\r\n\
Via: SIP/2.0/TCP 10.0.0.9:5070;branch=z9hG4bKa\r\n\
Record-Route: {POOL}, <sip:fe2.contoso.test;lr>\r\n\
Content-Length: 0\r\n\r\n"
    ));
    let rr = h.hide_request(&invite, EXT, INT);
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
    let inward = h.expand_route(&bye, false, is_ext).unwrap().unwrap();
    assert_eq!(
        values(&inward, HeaderName::Route),
        vec![EXT, INT, POOL, "<sip:fe2.contoso.test;lr>"]
    );
    assert_eq!(inward.body(), b"body");
    assert_eq!(
        inward.text(inward.headers()[0].line.clone()),
        "Via: SIP/2.0/TLS p;branch=z9hG4bKy\r\n",
        "untouched lines stay as they were"
    );
}

#[test]
fn a_response_going_out_hides_everything_above_our_entry() {
    let h = Hider::random();
    let ok = msg(&format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS e;branch=z9hG4bKx\r\n\
Record-Route: {POOL}\r\nRecord-Route: {INT}, {EXT}\r\nRecord-Route: {PARTNER}\r\n\
Content-Length: 0\r\n\r\n"
    ));
    let line = h.hide_response(&ok, is_ext).unwrap();
    let value = line.strip_prefix("Record-Route: ").unwrap();
    assert!(!value.contains("edge-int") && !value.contains("pool."), "{line}");
    assert!(value.ends_with(&format!(", {PARTNER}")), "{line}");

    // What the partner's in-dialog request carries: the route set reversed.
    let sealed = value.split(", ").next().unwrap();
    let bye = msg(&format!(
        "BYE sip:alice@contoso.test SIP/2.0\r\nVia: SIP/2.0/TLS p;branch=z9hG4bKy\r\n\
Route: {sealed}\r\nContent-Length: 0\r\n\r\n"
    ));
    let inward = h.expand_route(&bye, false, is_ext).unwrap().unwrap();
    assert_eq!(values(&inward, HeaderName::Route), vec![EXT, INT, POOL]);

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
    assert_eq!(h.hide_response(&plain, is_ext), None);
}

#[test]
fn a_bad_route_is_refused_and_a_bad_record_route_loses_its_claim() {
    let h = Hider::random();
    let forged = Hider::random().seal(EXT, Side::Below, &["<sip:evil.test;lr>"]);
    let bye = msg(&format!(
        "BYE sip:alice@contoso.test SIP/2.0\r\nVia: SIP/2.0/TLS p;branch=z9hG4bKy\r\n\
Route: {forged}\r\nContent-Length: 0\r\n\r\n"
    ));
    assert_eq!(
        h.expand_route(&bye, false, is_ext).unwrap_err(),
        RouteSetError::BadSignature
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
