//! The decision matrix over the DESIGN lab, plus one test per step. Pure: no sockets.

use std::path::Path;

use super::fixtures::{lab, lab_dns, lab_with, peer, pool};
use super::*;
use crate::config::Snapshot;

const BASE: &str = crate::config::TCP_EDGE;



/// A `[[user]]` giving alice a simulated contact list holding `sender` (unverified
/// messages reach her only from her contacts).
fn alice_lists(sender: &str) -> String {
    format!("[[user]]\nuser = \"sip:alice@contoso.test\"\ncontacts = [\"sip:{sender}\"]\n")
}


/// The certificate name each lab domain's edge presents.
fn edge_of(domain: &str) -> &'static str {
    match domain {
        "fabrikam.test" => "sip.fabrikam.test",
        "northwind.test" => "sip.northwind.test",
        "adatum.test" => "sip.adatum.test",
        "tailspin.test" => "sipfed.online.lync.com",
        "live.com" | "msn.com" => "federation.messenger.msn.com",
        "nowhere.test" => "sip.nowhere.test",
        "badsrv.test" => "sip.elsewhere.test",
        other => panic!("no edge for {other}"),
    }
}



const MARKED: &str = "ms-source-type=AutoFederation;ms-ep-fqdn=remote.test;ms-source-verified-user=verified;ms-source-network=federation";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Dir {
    Out,
    In,
}
use Dir::{In, Out};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Forwarded by this rule.
    Fwd(&'static str),
    /// Refused with this status and ms-diagnostics code.
    Rej(u16, u32),
}
use Expect::{Fwd, Rej};

/// One row: a local user, a remote domain, a direction, a method (`INVITE+A` = INVITE
/// whose SDP offers audio), whether the peer marked its message, and the peer's
/// certificate name when it is not the domain's own edge (spoofing rows).
struct Row {
    dir: Dir,
    user: &'static str,
    domain: &'static str,
    method: &'static str,
    marked: bool,
    peer: Option<&'static str>,
    expect: Expect,
}

const fn r(
    dir: Dir,
    user: &'static str,
    domain: &'static str,
    method: &'static str,
    expect: Expect,
) -> Row {
    Row {
        dir,
        user,
        domain,
        method,
        marked: true,
        peer: None,
        expect,
    }
}

const fn unmarked(row: Row) -> Row {
    Row {
        marked: false,
        ..row
    }
}

const fn via(peer: &'static str, row: Row) -> Row {
    Row {
        peer: Some(peer),
        ..row
    }
}

const FB: &str = "fabrikam.test";
const NW: &str = "northwind.test";
const AD: &str = "adatum.test";
const TS: &str = "tailspin.test";
const LIVE: &str = "live.com";
const NO: &str = "nowhere.test";
const BAD: &str = "badsrv.test";

#[rustfmt::skip]
const MATRIX: &[Row] = &[
    // ---- internal → external (From user@contoso.test, Request-URI someone@domain) ----
    r(Out, "alice", FB,   "MESSAGE",  Fwd("allowed-proxy-fqdn")),
    r(Out, "alice", FB,   "INVITE+A", Fwd("allowed-proxy-fqdn")),
    r(Out, "alice", FB,   "SUBSCRIBE",Fwd("allowed-proxy-fqdn")),
    r(Out, "alice", FB,   "REGISTER", Rej(403, 1027)),
    r(Out, "alice", NW,   "MESSAGE",  Fwd("discovered-partner")),
    r(Out, "alice", NW,   "INVITE+A", Fwd("discovered-partner")),
    r(Out, "alice", NW,   "PUBLISH",  Rej(403, 1027)),
    r(Out, "alice", AD,   "MESSAGE",  Rej(403, 1903)),
    r(Out, "alice", AD,   "INVITE+A", Rej(403, 1903)),
    r(Out, "alice", TS,   "MESSAGE",  Fwd("hosting-provider")),
    r(Out, "alice", TS,   "SUBSCRIBE",Fwd("hosting-provider")),
    r(Out, "alice", LIVE, "MESSAGE",  Fwd("public-provider")),
    r(Out, "alice", LIVE, "SUBSCRIBE",Fwd("public-provider")),
    r(Out, "alice", LIVE, "INVITE",   Fwd("public-provider")),
    r(Out, "alice", LIVE, "INVITE+A", Rej(403, 1908)),
    r(Out, "alice", "msn.com", "MESSAGE", Fwd("public-provider")),
    r(Out, "alice", NO,   "MESSAGE",  Rej(504, 1008)),
    r(Out, "alice", NO,   "INVITE+A", Rej(504, 1008)),
    r(Out, "alice", BAD,  "MESSAGE",  Rej(504, 1009)),
    r(Out, "alice", BAD,  "SUBSCRIBE",Rej(504, 1009)),
    r(Out, "bob",   FB,   "MESSAGE",  Fwd("allowed-proxy-fqdn")),
    r(Out, "bob",   FB,   "INVITE+A", Fwd("allowed-proxy-fqdn")),
    r(Out, "bob",   NW,   "SUBSCRIBE",Fwd("discovered-partner")),
    r(Out, "bob",   TS,   "MESSAGE",  Fwd("hosting-provider")),
    r(Out, "bob",   LIVE, "MESSAGE",  Rej(403, 1907)),
    r(Out, "bob",   LIVE, "INVITE+A", Rej(403, 1907)),
    r(Out, "bob",   AD,   "MESSAGE",  Rej(403, 1903)),
    r(Out, "bob",   NO,   "MESSAGE",  Rej(504, 1008)),
    r(Out, "bob",   BAD,  "MESSAGE",  Rej(504, 1009)),
    r(Out, "bob",   FB,   "REGISTER", Rej(403, 1027)),
    r(Out, "carol", FB,   "MESSAGE",  Rej(403, 1906)),
    r(Out, "carol", FB,   "INVITE+A", Rej(403, 1906)),
    r(Out, "carol", NW,   "MESSAGE",  Rej(403, 1906)),
    r(Out, "carol", TS,   "MESSAGE",  Rej(403, 1906)),
    r(Out, "carol", LIVE, "MESSAGE",  Rej(403, 1906)),
    r(Out, "carol", AD,   "MESSAGE",  Rej(403, 1903)),
    r(Out, "carol", NO,   "MESSAGE",  Rej(403, 1906)),
    r(Out, "carol", BAD,  "MESSAGE",  Rej(403, 1906)),
    r(Out, "carol", FB,   "REGISTER", Rej(403, 1027)),
    // ---- external → internal (From someone@domain via its edge, Request-URI user@contoso.test) ----
    r(In,  "alice", FB,   "MESSAGE",  Fwd("federation-inbound")),
    r(In,  "alice", FB,   "INVITE+A", Fwd("federation-inbound")),
    r(In,  "alice", FB,   "SUBSCRIBE",Fwd("federation-inbound")),
    r(In,  "alice", FB,   "REGISTER", Rej(403, 1027)),
    unmarked(r(In, "alice", FB, "MESSAGE", Rej(403, 1905))),
    r(In,  "alice", NW,   "MESSAGE",  Fwd("federation-inbound")),
    r(In,  "alice", NW,   "INVITE+A", Fwd("federation-inbound")),
    unmarked(r(In, "alice", NW, "MESSAGE", Rej(403, 1905))),
    r(In,  "alice", AD,   "MESSAGE",  Rej(403, 1903)),
    r(In,  "alice", AD,   "INVITE+A", Rej(403, 1903)),
    r(In,  "alice", TS,   "MESSAGE",  Fwd("federation-inbound")),
    r(In,  "alice", LIVE, "MESSAGE",  Fwd("federation-inbound")),
    r(In,  "alice", LIVE, "SUBSCRIBE",Fwd("federation-inbound")),
    r(In,  "alice", LIVE, "INVITE",   Fwd("federation-inbound")),
    r(In,  "alice", LIVE, "INVITE+A", Rej(403, 1908)),
    unmarked(r(In, "alice", LIVE, "MESSAGE", Rej(403, 1905))),
    r(In,  "alice", NO,   "MESSAGE",  Rej(504, 1008)),
    r(In,  "alice", BAD,  "MESSAGE",  Rej(504, 1009)),
    r(In,  "bob",   FB,   "MESSAGE",  Fwd("federation-inbound")),
    r(In,  "bob",   NW,   "INVITE+A", Fwd("federation-inbound")),
    r(In,  "bob",   TS,   "MESSAGE",  Fwd("federation-inbound")),
    r(In,  "bob",   LIVE, "MESSAGE",  Rej(403, 1907)),
    r(In,  "bob",   AD,   "MESSAGE",  Rej(403, 1903)),
    r(In,  "carol", FB,   "MESSAGE",  Rej(403, 1906)),
    r(In,  "carol", NW,   "MESSAGE",  Rej(403, 1906)),
    r(In,  "carol", TS,   "MESSAGE",  Rej(403, 1906)),
    r(In,  "carol", LIVE, "MESSAGE",  Rej(403, 1907)),
    r(In,  "carol", AD,   "SUBSCRIBE",Rej(403, 1903)),
    // ---- spoofing: the peer does not speak for the From domain ----
    via("sip.northwind.test", r(In, "alice", FB, "MESSAGE", Rej(403, 1010))),
    via("sip.northwind.test", r(In, "alice", TS, "MESSAGE", Rej(403, 1010))),
    via("sip.fabrikam.test", r(In, "alice", NW, "MESSAGE", Rej(403, 1010))),
    via("sipfed.online.lync.com", r(In, "alice", LIVE, "MESSAGE", Rej(403, 1010))),
    via("federation.messenger.msn.com", r(In, "alice", TS, "MESSAGE", Rej(403, 1010))),
    via("sip.fabrikam.test", r(In, "alice", "contoso.test", "MESSAGE", Rej(403, 1010))),
];

fn facts_for<'a>(row: &'a Row, uri_user: &'a str) -> RequestFacts<'a> {
    let (method, audio) = match row.method.strip_suffix("+A") {
        Some(m) => (m, true),
        None => (row.method, false),
    };
    let (from_user, from_host, uri_host) = match row.dir {
        Out => (row.user, "contoso.test", row.domain),
        In => ("remote", row.domain, "contoso.test"),
    };
    let user = match row.dir {
        Out => uri_user,
        In => row.user,
    };
    RequestFacts {
        method,
        uri_user: Some(user),
        uri_host,
        from_user: Some(from_user),
        from_host,
        to_user: Some(user),
        to_host: uri_host,
        max_forwards: Some(70),
        trust_header: (row.dir == In && row.marked).then_some(MARKED),
        media: Media {
            audio,
            video: false,
        },
        ..RequestFacts::default()
    }
}

/// Who sends the row's request: the pool outbound, the domain's edge (or the row's
/// spoofing peer) inbound.
fn row_peer(row: &Row) -> Peer {
    match row.dir {
        Out => pool(),
        In => peer(
            Interface::External,
            &[row.peer.unwrap_or_else(|| edge_of(row.domain))],
        ),
    }
}

/// The row's request inside a dialog: the Request-URI is the remote party's Contact (an
/// address), To names the user, and the route set is one the edge recognised.
fn in_dialog<'a>(row: &'a Row, facts: RequestFacts<'a>) -> RequestFacts<'a> {
    RequestFacts {
        uri_user: Some("contact"),
        uri_host: "192.0.2.7",
        in_dialog: true,
        routed_exit: Some(match row.dir {
            Out => Interface::External,
            In => Interface::Internal,
        }),
        ..facts
    }
}

#[test]
fn requests_inside_a_dialog_get_the_same_verdict_as_outside_one() {
    let snap = lab();
    let dns = lab_dns();
    let mut failures = Vec::new();
    for (i, row) in MATRIX.iter().enumerate() {
        let req = in_dialog(row, facts_for(row, "someone"));
        let p = row_peer(row);
        let decision = decide(&req, &p, &snap, &dns);
        let got = match &decision {
            Decision::Forward(f) if f.route == Route::RequestTarget => Fwd(f.rule),
            Decision::Forward(f) => Fwd(if f.exit == Interface::Internal {
                "to the pool, not the route set"
            } else {
                "to the domain's servers, not the route set"
            }),
            Decision::Reject(r) => Rej(r.status, r.code().unwrap_or(0)),
            Decision::AnswerOptions => Fwd("answer-options"),
        };
        let expect = match (row.expect, row.dir) {
            (Fwd(_), Out) => Fwd("dialog-route"),
            // An unmarked request inside a dialog is marked unverified, not refused.
            (Rej(403, 1905), In) if !row.marked => Fwd("federation-inbound"),
            (e, _) => e,
        };
        if got != expect {
            failures.push(format!(
                "row {i}: {:?} {} {} {}: expected {expect:?}, got {decision:?}",
                row.dir, row.user, row.domain, row.method
            ));
        }
        if let Decision::Forward(f) = &decision {
            // Marked like any request from outside; responses from outside marked too.
            assert!(f.insert_trust.is_some(), "row {i}");
            if row.dir == Out {
                assert!(f.response_trust.is_some(), "row {i}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_bye_ends_a_dialog_whatever_the_lists_and_policies_now_say() {
    // carol may not federate and adatum is blocked: a MESSAGE in the dialog is refused,
    // its BYE is not.
    for (dir, user, domain) in [(Out, "carol", FB), (Out, "alice", AD), (In, "carol", FB), (In, "alice", AD)] {
        let message = r(dir, user, domain, "MESSAGE", Fwd(""));
        let bye = r(dir, user, domain, "BYE", Fwd(""));
        let p = match dir {
            Out => pool(),
            In => peer(Interface::External, &[edge_of(domain)]),
        };
        let refused = decide(&in_dialog(&message, facts_for(&message, "someone")), &p, &lab(), &lab_dns());
        assert!(refused.rejection().is_some(), "{dir:?} {user} {domain}: {refused:?}");
        let ended = decide(&in_dialog(&bye, facts_for(&bye, "someone")), &p, &lab(), &lab_dns());
        let f = forward(ended);
        assert_eq!(f.route, Route::RequestTarget, "{dir:?} {user} {domain}");
        assert_eq!(f.limit, None);
    }
}

#[test]
fn a_sealed_route_set_from_outside_never_leads_back_outside() {
    let row = r(In, "alice", FB, "BYE", Fwd("federation-inbound"));
    let mut req = in_dialog(&row, facts_for(&row, "someone"));
    req.routed_exit = Some(Interface::External);
    let r = rejection(decide(
        &req,
        &peer(Interface::External, &["sip.fabrikam.test"]),
        &lab(),
        &lab_dns(),
    ));
    assert_eq!((r.status, r.rule.name()), (403, "no-external-relay"));
}

#[test]
fn responses_from_a_partner_are_marked_with_its_class() {
    let f = forward(decide(
        &out_req("alice", "fabrikam.test", "INVITE"),
        &pool(),
        &lab(),
        &lab_dns(),
    ));
    let t = f.response_trust.expect("marked");
    assert_eq!(
        t.for_response(Some("ms-source-type=AuthorizedServer;ms-ep-fqdn=evil.test;ms-source-verified-user=verified")).to_string(),
        "ms-source-type=DirectPartner;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified;ms-source-network=federation"
    );
    assert_eq!(
        t.for_response(None).to_string(),
        "ms-source-type=DirectPartner;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=unverified;ms-source-network=federation"
    );
}

#[test]
fn lab_matrix() {
    assert!(MATRIX.len() >= 60, "{} rows", MATRIX.len());
    let snap = lab();
    let dns = lab_dns();
    let mut failures = Vec::new();
    for (i, row) in MATRIX.iter().enumerate() {
        let req = facts_for(row, "someone");
        let p = row_peer(row);
        let decision = decide(&req, &p, &snap, &dns);
        let got = match &decision {
            Decision::Forward(f) => Fwd(f.rule),
            Decision::Reject(r) => Rej(r.status, r.code().unwrap_or(0)),
            Decision::AnswerOptions => Fwd("answer-options"),
        };
        if got != row.expect {
            failures.push(format!(
                "row {i}: {:?} {} {} {}: expected {:?}, got {decision:?}",
                row.dir, row.user, row.domain, row.method, row.expect
            ));
        }
        // dns_needed names exactly the answer the decision used.
        let q = dns_needed(&req, &p, &snap);
        let only = match &q {
            Some(q) => DnsFacts::answer(q, dns.srv(q.domain()).cloned().expect("lab has it")),
            None => DnsFacts::none(),
        };
        assert_eq!(
            decide(&req, &p, &snap, &only),
            decision,
            "row {i}: dns_needed {q:?}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// === one test per step ===

fn out_req<'a>(from_user: &'a str, uri_host: &'a str, method: &'a str) -> RequestFacts<'a> {
    RequestFacts {
        method,
        uri_user: Some("someone"),
        uri_host,
        from_user: Some(from_user),
        from_host: "contoso.test",
        to_host: uri_host,
        max_forwards: Some(70),
        ..RequestFacts::default()
    }
}

fn in_req<'a>(from_host: &'a str, trust: Option<&'a str>) -> RequestFacts<'a> {
    RequestFacts {
        method: "MESSAGE",
        uri_user: Some("alice"),
        uri_host: "contoso.test",
        from_user: Some("remote"),
        from_host,
        to_host: "contoso.test",
        max_forwards: Some(70),
        trust_header: trust,
        ..RequestFacts::default()
    }
}

fn forward(d: Decision) -> Forward {
    match d {
        Decision::Forward(f) => f,
        other => panic!("expected a forward, got {other:?}"),
    }
}

fn rejection(d: Decision) -> Rejection {
    match d {
        Decision::Reject(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn inbound_trust_headers_are_byte_exact() {
    let snap = lab();
    let dns = lab_dns();
    let cases = [
        ("fabrikam.test", "sip.fabrikam.test",
         "ms-source-type=DirectPartner;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified;ms-source-network=federation;ms-remote-fqdn=sip.fabrikam.test"),
        ("northwind.test", "sip.northwind.test",
         "ms-source-type=AutoFederation;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified;ms-source-network=federation;ms-remote-fqdn=sip.northwind.test"),
        ("live.com", "federation.messenger.msn.com",
         "ms-source-type=AuthorizedServer;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified;ms-source-network=publiccloud;ms-remote-fqdn=federation.messenger.msn.com"),
        ("tailspin.test", "sipfed.online.lync.com",
         "ms-source-type=AuthorizedServer;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified;ms-source-network=federation;ms-remote-fqdn=sipfed.online.lync.com"),
    ];
    for (domain, cert, expected) in cases {
        let f = forward(decide(
            &in_req(domain, Some(MARKED)),
            &peer(Interface::External, &[cert]),
            &snap,
            &dns,
        ));
        assert_eq!(
            f.insert_trust.expect("trust header").header_value(),
            expected,
            "{domain}"
        );
        assert_eq!(
            f.strip,
            Strip {
                trust_header: true,
                diagnostics: false
            }
        );
        assert_eq!(f.route, Route::NextHop(snap.pool.clone()));
    }
}

#[test]
fn forged_trust_header_is_replaced_by_ours() {
    // Unverified from northwind reaches alice only because she lists the sender.
    let mut snap = lab_with(&alice_lists("remote@northwind.test"));
    snap.federation
        .access_edge
        .discovered_partner_verification_level =
        crate::config::VerificationLevel::AlwaysUnverifiable;
    let forged = "ms-source-type=AuthorizedServer;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified;ms-source-network=publiccloud";
    let f = forward(decide(
        &in_req("northwind.test", Some(forged)),
        &peer(Interface::External, &["sip.northwind.test"]),
        &snap,
        &lab_dns(),
    ));
    assert!(f.strip.trust_header);
    let t = f.insert_trust.unwrap();
    assert_eq!(
        t.source_type,
        crate::sip::ms_headers::SourceType::AutoFederation
    );
    assert_eq!(
        t.verified,
        Some(crate::sip::ms_headers::Verified::Unverified)
    );
    assert_eq!(
        f.limit,
        Some(LimitKey {
            partner: "northwind.test".into(),
            local_uri: "alice@contoso.test".into(),
            new_request: true
        })
    );
}

#[test]
fn outbound_routes_targets_and_marking() {
    let snap = lab();
    let dns = lab_dns();
    let f = forward(decide(
        &out_req("alice", "fabrikam.test", "MESSAGE"),
        &pool(),
        &snap,
        &dns,
    ));
    assert_eq!(f.exit, Interface::External);
    assert_eq!(
        f.route,
        Route::Targets(vec![Target::tls("sip.fabrikam.test", 5061)])
    );
    assert_eq!(
        f.strip,
        Strip {
            trust_header: true,
            diagnostics: true
        }
    );
    assert_eq!(
        f.insert_trust.unwrap().header_value(),
        "ms-source-type=EdgeProxyGenerated;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified"
    );
    let f = forward(decide(
        &out_req("alice", "live.com", "MESSAGE"),
        &pool(),
        &snap,
        &dns,
    ));
    assert_eq!(
        f.route,
        Route::Targets(vec![Target::tls("federation.messenger.msn.com", 5061)])
    );
    assert!(
        matches!(f.target, Some(TargetClass::Provider { public: true, ref identity, .. }) if identity == "Skype")
    );

    let mut snap = lab();
    snap.federation
        .access_edge
        .mark_source_verifiable_on_outgoing_messages = false;
    let f = forward(decide(
        &out_req("alice", "northwind.test", "MESSAGE"),
        &pool(),
        &snap,
        &dns,
    ));
    assert_eq!(
        f.insert_trust.unwrap().verified,
        Some(crate::sip::ms_headers::Verified::Unverified)
    );
}

#[test]
fn srv_order_is_kept_and_foreign_targets_dropped() {
    let snap = lab();
    let dns = DnsFacts::none().with_srv(
        "northwind.test",
        SrvAnswer::Records(vec![
            SrvTarget::new(5, 0, 5061, "sip.northwind-edge.test"),
            SrvTarget::new(10, 0, 5061, "sip.northwind.test"),
            SrvTarget::new(20, 0, 5062, "sip2.northwind.test"),
            SrvTarget::new(30, 0, 5061, "sip.eu.northwind.test"),
        ]),
    );
    let f = forward(decide(
        &out_req("alice", "northwind.test", "MESSAGE"),
        &pool(),
        &snap,
        &dns,
    ));
    assert_eq!(
        f.route,
        Route::Targets(vec![
            Target::tls("sip.northwind.test", 5061),
            Target::tls("sip2.northwind.test", 5062)
        ])
    );
}

#[test]
fn srv_failures() {
    let snap = lab();
    let dns = DnsFacts::none()
        .with_srv("nowhere.test", SrvAnswer::Failed("timeout".into()))
        .with_srv(
            "badsrv.test",
            SrvAnswer::Records(vec![
                SrvTarget::new(0, 0, 5061, "sip.elsewhere.test"),
                SrvTarget::new(1, 0, 5061, "sip.it.badsrv.test"),
            ]),
        );
    let r = rejection(decide(
        &out_req("alice", "nowhere.test", "MESSAGE"),
        &pool(),
        &snap,
        &dns,
    ));
    assert_eq!((r.status, r.code()), (504, Some(1008)));
    assert_eq!(
        r.diagnostics.as_ref().unwrap().get("error"),
        Some("timeout")
    );
    let r = rejection(decide(
        &out_req("alice", "badsrv.test", "MESSAGE"),
        &pool(),
        &snap,
        &dns,
    ));
    assert_eq!(
        r.diagnostics.unwrap().header_value(),
        "1009;reason=\"No match for domain in DNS SRV results\";domain=\"badsrv.test\";fqdn1=\"sip.elsewhere.test:5061\";fqdn2=\"sip.it.badsrv.test:5061\";source=\"accessedge.contoso.test\""
    );
    // A needed answer that is missing is a failed lookup, never a guess.
    let r = rejection(decide(
        &out_req("alice", "northwind.test", "MESSAGE"),
        &pool(),
        &snap,
        &DnsFacts::none(),
    ));
    assert_eq!((r.status, r.code()), (504, Some(1008)));
}

#[test]
fn dns_needed_asks_only_what_the_decision_uses() {
    let snap = lab();
    let srv = |d: &str| Some(DnsQuestion::FederationSrv { domain: d.into() });
    assert_eq!(
        dns_needed(
            &out_req("alice", "northwind.test", "MESSAGE"),
            &pool(),
            &snap
        ),
        srv("northwind.test")
    );
    assert_eq!(
        dns_needed(&out_req("alice", "live.com", "MESSAGE"), &pool(), &snap),
        srv("live.com")
    );
    assert_eq!(
        dns_needed(
            &out_req("alice", "fabrikam.test", "MESSAGE"),
            &pool(),
            &snap
        ),
        None
    );
    assert_eq!(
        dns_needed(&out_req("alice", "adatum.test", "MESSAGE"), &pool(), &snap),
        None
    );
    assert_eq!(
        dns_needed(
            &out_req("carol", "northwind.test", "MESSAGE"),
            &pool(),
            &snap
        ),
        None
    );
    let ext = |c: &str| peer(Interface::External, &[c]);
    assert_eq!(
        dns_needed(
            &in_req("northwind.test", None),
            &ext("sip.northwind.test"),
            &snap
        ),
        srv("northwind.test")
    );
    assert_eq!(
        dns_needed(
            &in_req("tailspin.test", None),
            &ext("sipfed.online.lync.com"),
            &snap
        ),
        srv("tailspin.test")
    );
    assert_eq!(
        dns_needed(
            &in_req("live.com", None),
            &ext("federation.messenger.msn.com"),
            &snap
        ),
        None
    );
    assert_eq!(
        dns_needed(
            &in_req("fabrikam.test", None),
            &ext("sip.fabrikam.test"),
            &snap
        ),
        None
    );
    assert_eq!(
        srv("x.test").unwrap().name(),
        "_sipfederationtls._tcp.x.test"
    );
}

#[test]
fn no_relay_between_outsiders() {
    let snap = lab();
    let mut req = in_req("fabrikam.test", Some(MARKED));
    req.uri_host = "northwind.test";
    let r = rejection(decide(
        &req,
        &peer(Interface::External, &["sip.fabrikam.test"]),
        &snap,
        &lab_dns(),
    ));
    assert_eq!(
        (r.status, r.code(), r.rule.name()),
        (403, Some(1000), "no-external-relay")
    );
    let mut req = out_req("alice", "northwind.test", "MESSAGE");
    req.from_host = "fabrikam.test";
    let r = rejection(decide(&req, &pool(), &snap, &lab_dns()));
    assert_eq!((r.status, r.rule.name()), (403, "foreign-from-outbound"));
}

#[test]
fn internal_to_local_goes_to_the_pool() {
    let snap = lab();
    let f = forward(decide(
        &out_req("alice", "contoso.test", "MESSAGE"),
        &pool(),
        &snap,
        &DnsFacts::none(),
    ));
    assert_eq!((f.exit, f.rule), (Interface::Internal, "local-domain"));
}

#[test]
fn discovery_off_refuses_unknown_partners_both_ways() {
    let mut snap = lab();
    snap.federation.access_edge.enable_partner_discovery = false;
    let dns = lab_dns();
    let r = rejection(decide(
        &out_req("alice", "northwind.test", "MESSAGE"),
        &pool(),
        &snap,
        &dns,
    ));
    assert_eq!((r.status, r.code()), (403, Some(1904)));
    let r = rejection(decide(
        &in_req("northwind.test", Some(MARKED)),
        &peer(Interface::External, &["sip.northwind.test"]),
        &snap,
        &dns,
    ));
    assert_eq!((r.status, r.code()), (403, Some(1904)));
    // Providers and allowed partners still work.
    assert!(matches!(
        decide(
            &out_req("alice", "live.com", "MESSAGE"),
            &pool(),
            &snap,
            &dns
        ),
        Decision::Forward(_)
    ));
    assert!(matches!(
        decide(
            &out_req("alice", "fabrikam.test", "MESSAGE"),
            &pool(),
            &snap,
            &dns
        ),
        Decision::Forward(_)
    ));
}

#[test]
fn federation_off_by_default_once_sections_exist() {
    let text = format!("{BASE}\n[[blocked_domain]]\ndomain = \"adatum.test\"\n");
    let snap = Snapshot::from_toml(&text, Path::new(".")).unwrap();
    assert!(snap.federation.enabled());
    assert!(!snap.federation.access_edge.allow_federated_users);
    let r = rejection(decide(
        &out_req("alice", "fabrikam.test", "MESSAGE"),
        &pool(),
        &snap,
        &lab_dns(),
    ));
    assert_eq!((r.status, r.code()), (403, Some(1901)));
    let r = rejection(decide(
        &in_req("fabrikam.test", Some(MARKED)),
        &peer(Interface::External, &["sip.fabrikam.test"]),
        &snap,
        &lab_dns(),
    ));
    assert_eq!((r.status, r.code()), (403, Some(1901)));
}

#[test]
fn static_routing_when_no_federation_sections() {
    let text = format!(
        "{BASE}\n[[routes]]\ndomain = \"fabrikam.test\"\ntarget = \"127.0.0.3:5060\"\ntransport = \"tcp\"\n"
    );
    let snap = Snapshot::from_toml(&text, Path::new(".")).unwrap();
    assert!(!snap.federation.enabled());
    let f = forward(decide(
        &out_req("carol", "fabrikam.test", "MESSAGE"),
        &pool(),
        &snap,
        &DnsFacts::none(),
    ));
    assert_eq!(f.rule, "static-route");
    assert_eq!(f.insert_trust, None);
    let r = rejection(decide(
        &out_req("alice", "northwind.test", "MESSAGE"),
        &pool(),
        &snap,
        &DnsFacts::none(),
    ));
    assert_eq!((r.status, r.rule.name()), (404, "no-route"));
    assert_eq!(
        dns_needed(
            &out_req("alice", "northwind.test", "MESSAGE"),
            &pool(),
            &snap
        ),
        None
    );
    let f = forward(decide(
        &in_req("fabrikam.test", None),
        &peer(Interface::External, &[]),
        &snap,
        &DnsFacts::none(),
    ));
    assert_eq!(f.rule, "local-domain");
}

#[test]
fn hops_options_and_record_route_come_first() {
    let snap = lab();
    let mut req = out_req("carol", "adatum.test", "MESSAGE");
    req.max_forwards = Some(0);
    assert_eq!(
        rejection(decide(&req, &pool(), &snap, &DnsFacts::none())).status,
        483
    );
    // Back inside, the route set is the whole decision.
    let mut req = out_req("carol", "contoso.test", "BYE");
    req.routed_exit = Some(Interface::Internal);
    let f = forward(decide(&req, &pool(), &snap, &DnsFacts::none()));
    assert_eq!((f.route, f.rule), (Route::RequestTarget, "dialog-route"));
    let mut req = in_req("adatum.test", None);
    req.method = "OPTIONS";
    req.addressed_to_edge = true;
    assert_eq!(
        decide(
            &req,
            &peer(Interface::External, &[]),
            &snap,
            &DnsFacts::none()
        ),
        Decision::AnswerOptions
    );
}

#[test]
fn remote_users_need_allow_outside_users() {
    let mut snap = lab();
    let mut req = in_req("contoso.test", None);
    req.method = "REGISTER";
    let anon = peer(Interface::External, &[]);
    let f = forward(decide(&req, &anon, &snap, &DnsFacts::none()));
    assert_eq!(f.rule, "remote-user");
    assert_eq!(
        f.insert_trust.unwrap().header_value(),
        "ms-source-type=InternetUser;ms-ep-fqdn=accessedge.contoso.test"
    );
    snap.federation.access_edge.allow_outside_users = false;
    let r = rejection(decide(&req, &anon, &snap, &DnsFacts::none()));
    assert_eq!((r.status, r.code()), (403, Some(1902)));
    // An anonymous peer claiming a foreign domain proves nothing.
    let r = rejection(decide(
        &in_req("fabrikam.test", Some(MARKED)),
        &anon,
        &lab(),
        &lab_dns(),
    ));
    assert_eq!((r.status, r.rule.name()), (403, "anonymous-peer"));
}

#[test]
fn disabled_provider_is_refused_as_a_route() {
    let mut snap = lab();
    snap.federation.public_providers[0].enabled = false;
    let r = rejection(decide(
        &out_req("alice", "live.com", "MESSAGE"),
        &pool(),
        &snap,
        &lab_dns(),
    ));
    assert_eq!((r.status, r.code()), (403, Some(1909)));
    // Inbound, a disabled provider is not configured: live.com is then a discovered
    // domain whose SRV target is not in it.
    let r = rejection(decide(
        &in_req("live.com", Some(MARKED)),
        &peer(Interface::External, &["federation.messenger.msn.com"]),
        &snap,
        &lab_dns(),
    ));
    assert_eq!(r.status, 403);
}

#[test]
fn default_route_sends_everything_to_one_hop() {
    let text = format!(
        "{BASE}\n[access_edge]\nallow_federated_users = true\nrouting = \"default_route\"\ndefault_route_fqdn = \"ch.clearing.test\"\nverification_level = \"UseSourceVerification\"\n[[blocked_domain]]\ndomain = \"adatum.test\"\n{}",
        alice_lists("remote@anything.test")
    );
    let mut snap = Snapshot::from_toml(&text, Path::new(".")).unwrap();
    snap.federation.external_access_policies[0].enable_federation_access = true;
    let f = forward(decide(
        &out_req("alice", "northwind.test", "MESSAGE"),
        &pool(),
        &snap,
        &DnsFacts::none(),
    ));
    assert_eq!(
        (f.rule, f.route),
        (
            "default-route",
            Route::Targets(vec![Target::tls("ch.clearing.test", 5061)])
        )
    );
    assert_eq!(
        dns_needed(
            &out_req("alice", "northwind.test", "MESSAGE"),
            &pool(),
            &snap
        ),
        None
    );
    let r = rejection(decide(
        &out_req("alice", "adatum.test", "MESSAGE"),
        &pool(),
        &snap,
        &DnsFacts::none(),
    ));
    assert_eq!(r.code(), Some(1903));
    // Unmarked traffic from the default route is marked unverified, not refused.
    let f = forward(decide(
        &in_req("anything.test", None),
        &peer(Interface::External, &["ch.clearing.test"]),
        &snap,
        &DnsFacts::none(),
    ));
    assert_eq!(
        f.insert_trust.unwrap().header_value(),
        "ms-source-type=AuthorizedServer;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=unverified;ms-source-network=federation;ms-remote-fqdn=ch.clearing.test"
    );
}

#[test]
fn an_incomplete_marking_is_refused_with_a_reason_naming_what_it_lacks() {
    let snap = lab();
    let marks: &[(Option<&str>, &str)] = &[
        (None, "did not mark the message"),
        (Some("ms-source-type=AutoFederation;ms-source-verified-user=verified"), "marking lacks ms-ep-fqdn"),
        (Some("ms-ep-fqdn=remote.test;ms-source-verified-user=verified"), "marking lacks ms-source-type"),
        (Some("ms-source-type=AutoFederation;ms-ep-fqdn=remote.test"), "marking lacks ms-source-verified-user"),
        (Some("ms-source-type=Friend;ms-ep-fqdn=remote.test;ms-source-verified-user=verified"), "`Friend` is not a valid value for `ms-source-type`"),
    ];
    for domain in [FB, NW, LIVE] {
        for (mark, reason) in marks {
            let r = rejection(decide(
                &in_req(domain, *mark),
                &peer(Interface::External, &[edge_of(domain)]),
                &snap,
                &lab_dns(),
            ));
            let text = r.diagnostics.as_ref().map_or("", |d| d.reason.as_str());
            assert_eq!((r.status, r.code(), r.rule.name()), (403, Some(1905), "unmarked-source"), "{domain} {mark:?}");
            assert!(text.contains(reason), "{domain} {mark:?}: {text}");
        }
    }
}

#[test]
fn a_complete_marking_from_a_clearing_house_or_forwarding_proxy_is_accepted() {
    let snap = lab();
    for source_type in ["ClearingHouse", "ForwardingProxy"] {
        let mark = format!("ms-source-type={source_type};ms-ep-fqdn=remote.test;ms-source-verified-user=verified");
        let f = forward(decide(
            &in_req(NW, Some(&mark)),
            &peer(Interface::External, &[edge_of(NW)]),
            &snap,
            &lab_dns(),
        ));
        assert_eq!(
            f.insert_trust.and_then(|t| t.verified),
            Some(crate::sip::ms_headers::Verified::Verified),
            "{source_type}"
        );
    }
}

#[test]
fn unmarked_source_may_be_marked_unverified_instead() {
    let mut snap = lab_with(&alice_lists("remote@fabrikam.test"));
    snap.federation.access_edge.unmarked_source = crate::config::UnmarkedSource::MarkUnverified;
    let f = forward(decide(
        &in_req("fabrikam.test", None),
        &peer(Interface::External, &["sip.fabrikam.test"]),
        &snap,
        &lab_dns(),
    ));
    assert_eq!(
        f.insert_trust.unwrap().verified,
        Some(crate::sip::ms_headers::Verified::Unverified)
    );
}

#[test]
fn diagnostics_codes_are_configurable() {
    let snap = lab_with("[diagnostics]\nblocked_domain = { status = 404, code = 1999 }\nmethod_not_allowed = { status = 405 }\n");
    let r = rejection(decide(
        &out_req("alice", "adatum.test", "MESSAGE"),
        &pool(),
        &snap,
        &lab_dns(),
    ));
    assert_eq!(
        (r.status, r.reason, r.code()),
        (404, "Not Found", Some(1999))
    );
    let r = rejection(decide(
        &out_req("alice", "fabrikam.test", "REGISTER"),
        &pool(),
        &snap,
        &lab_dns(),
    ));
    assert_eq!((r.status, r.code()), (405, Some(1027)));
}

#[test]
fn policy_precedence_user_over_site_over_global() {
    let snap = lab_with(
        "[[external_access_policy]]\nidentity = \"site:Paris\"\nenable_federation_access = true\n\
         [[user]]\nuser = \"frank\"\nsite = \"Paris\"\n\
         [[user]]\nuser = \"erin@contoso.test\"\nsite = \"Paris\"\npolicy = \"NoFederation\"\n",
    );
    let fed = &snap.federation;
    let scope = |u: &str| {
        let (p, from) = effective_policy(fed, u, "contoso.test");
        (p.scope.to_string(), from)
    };
    assert_eq!(scope("alice"), ("global".to_string(), PolicySource::Global));
    assert_eq!(
        scope("bob"),
        ("tag:NoPublicCloud".to_string(), PolicySource::User)
    );
    assert_eq!(
        scope("frank"),
        ("site:Paris".to_string(), PolicySource::Site)
    );
    assert_eq!(
        scope("erin"),
        ("tag:NoFederation".to_string(), PolicySource::User)
    );
    // frank (site: federation only) may federate but not reach Skype.
    let dns = lab_dns();
    assert!(matches!(
        decide(
            &out_req("frank", "fabrikam.test", "MESSAGE"),
            &pool(),
            &snap,
            &dns
        ),
        Decision::Forward(_)
    ));
    assert_eq!(
        rejection(decide(
            &out_req("frank", "live.com", "MESSAGE"),
            &pool(),
            &snap,
            &dns
        ))
        .code(),
        Some(1907)
    );
}

#[test]
fn public_cloud_av_allowed_when_the_policy_says_so() {
    let mut snap = lab();
    snap.federation.external_access_policies[0].enable_public_cloud_audio_video_access = true;
    let mut req = out_req("alice", "live.com", "INVITE");
    req.media = Media {
        audio: false,
        video: true,
    };
    assert!(matches!(
        decide(&req, &pool(), &snap, &lab_dns()),
        Decision::Forward(_)
    ));
}

#[test]
fn trail_explains_which_check_decided() {
    let snap = lab();
    let e = explain(
        &out_req("bob", "live.com", "MESSAGE"),
        &pool(),
        &snap,
        &lab_dns(),
    );
    let names: Vec<_> = e.trail.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "no-relay",
            "edge-switches",
            "blocked-list",
            "classify-source",
            "method-filter",
            "user-may-leave",
            "classify-target",
            "access-policy"
        ]
    );
    assert!(
        matches!(e.trail.last().unwrap().outcome, Outcome::Decided(ref s) if s.contains("user-public-cloud-denied"))
    );
    let e = explain(
        &out_req("alice", "fabrikam.test", "MESSAGE"),
        &pool(),
        &snap,
        &lab_dns(),
    );
    assert_eq!(e.trail.last().unwrap().name, "route");
    assert_eq!(
        e.trail
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Decided(_)))
            .count(),
        1
    );
}

#[test]
fn rejections_carry_the_edge_as_source() {
    let r = rejection(decide(
        &out_req("alice", "adatum.test", "MESSAGE"),
        &pool(),
        &lab(),
        &lab_dns(),
    ));
    let d = r.diagnostics.unwrap();
    assert_eq!(d.get("source"), Some("accessedge.contoso.test"));
    assert_eq!(
        d.public_value(),
        "1903;reason=\"The domain is on the blocked list\";domain=\"adatum.test\""
    );
}

#[test]
fn an_always_unverifiable_partner_reaches_only_users_who_list_it() {
    let unverifiable = "[[allowed_domain]]\ndomain = \"northwind.test\"\nverification_level = \"AlwaysUnverifiable\"\n";
    let from_northwind = in_req(NW, Some(MARKED));
    let northwind = peer(Interface::External, &[edge_of(NW)]);
    let r = rejection(decide(&from_northwind, &northwind, &lab_with(unverifiable), &lab_dns()));
    assert_eq!(
        (r.status, r.code(), r.rule.name()),
        (403, Some(1921), "unverified-not-contact")
    );
    let d = r.diagnostics.unwrap();
    assert_eq!(
        (d.get("sender"), d.get("user")),
        (Some("remote@northwind.test"), Some("alice@contoso.test"))
    );
    // Listed by alice: delivered, marked unverified.
    let listed = format!("{unverifiable}{}", alice_lists("remote@northwind.test"));
    let f = forward(decide(&from_northwind, &northwind, &lab_with(&listed), &lab_dns()));
    assert_eq!(
        f.insert_trust.unwrap().verified,
        Some(crate::sip::ms_headers::Verified::Unverified)
    );
    // Another sender of the same domain is not alice's contact.
    let mut other = in_req(NW, Some(MARKED));
    other.from_user = Some("mallory");
    let r = rejection(decide(&other, &northwind, &lab_with(&listed), &lab_dns()));
    assert_eq!(r.rule.name(), "unverified-not-contact");
    // Inside a dialog the request belongs to one already let in.
    let mut in_dialog = in_req(NW, Some(MARKED));
    in_dialog.in_dialog = true;
    forward(decide(&in_dialog, &northwind, &lab_with(unverifiable), &lab_dns()));
}

#[test]
fn a_peers_own_unverified_marking_reaches_only_users_who_list_the_sender() {
    let unverified = "ms-source-type=AutoFederation;ms-ep-fqdn=sip.northwind.test;ms-source-verified-user=unverified";
    let northwind = peer(Interface::External, &[edge_of(NW)]);
    let r = rejection(decide(&in_req(NW, Some(unverified)), &northwind, &lab(), &lab_dns()));
    assert_eq!(r.code(), Some(1921));
    let listed = lab_with(&alice_lists("remote@northwind.test"));
    forward(decide(&in_req(NW, Some(unverified)), &northwind, &listed, &lab_dns()));
}

#[test]
fn traffic_with_a_domain_marked_for_monitoring_is_marked_in_the_trail() {
    let monitored = lab_with("[[allowed_domain]]\ndomain = \"northwind.test\"\nmark_for_monitoring = true\n");
    let northwind = peer(Interface::External, &[edge_of(NW)]);
    let marked = |snap: &Snapshot, req: &RequestFacts<'_>, p: &Peer| {
        explain(req, p, snap, &lab_dns())
            .trail
            .iter()
            .any(|c| c.name == "monitoring")
    };
    let inbound = in_req(NW, Some(MARKED));
    let outbound = out_req("alice", NW, "MESSAGE");
    assert!(marked(&monitored, &inbound, &northwind));
    assert!(marked(&monitored, &outbound, &pool()));
    assert_eq!(
        monitored_domain(&outbound, &pool(), &monitored).as_deref(),
        Some("northwind.test")
    );
    // Refused traffic is marked too: the monitoring step runs before the refusal.
    let refused = out_req("carol", NW, "MESSAGE");
    let e = explain(&refused, &pool(), &monitored, &lab_dns());
    assert!(e.decision.rejection().is_some());
    assert!(e.trail.iter().any(|c| c.name == "monitoring"));
    // Unmarked: no mark, nothing to count.
    let unmarked = lab_with("[[allowed_domain]]\ndomain = \"northwind.test\"\n");
    assert!(!marked(&unmarked, &inbound, &northwind));
    assert_eq!(monitored_domain(&outbound, &pool(), &unmarked), None);
    assert!(!marked(&monitored, &in_req(FB, Some(MARKED)), &peer(Interface::External, &[edge_of(FB)])));
}

#[test]
fn a_remote_user_needs_enable_outside_access_in_their_policy() {
    let mut snap = lab();
    let mut req = in_req("contoso.test", None);
    req.method = "REGISTER";
    req.from_user = Some("bob");
    let anon = peer(Interface::External, &[]);
    forward(decide(&req, &anon, &snap, &DnsFacts::none()));
    // bob's tag (NoPublicCloud) loses EnableOutsideAccess; alice (global) keeps it.
    snap.federation
        .external_access_policies
        .iter_mut()
        .find(|p| p.scope == crate::config::PolicyScope::Tag("NoPublicCloud".into()))
        .unwrap()
        .enable_outside_access = false;
    let r = rejection(decide(&req, &anon, &snap, &DnsFacts::none()));
    assert_eq!(
        (r.status, r.code(), r.rule.name()),
        (403, Some(1920), "user-outside-access-denied")
    );
    assert_eq!(r.diagnostics.unwrap().get("policy"), Some("tag:NoPublicCloud"));
    req.from_user = Some("alice");
    forward(decide(&req, &anon, &snap, &DnsFacts::none()));
}

#[test]
fn an_anonymous_user_joins_a_meeting_only_with_allow_anonymous_users() {
    let mut snap = lab();
    let mut join = in_req("anonymous.invalid", None);
    join.method = "INVITE";
    join.from_user = Some("guest");
    join.meeting = true;
    let anon = peer(Interface::External, &[]);
    let r = rejection(decide(&join, &anon, &snap, &DnsFacts::none()));
    assert_eq!(
        (r.status, r.code(), r.rule.name()),
        (403, Some(1922), "anonymous-users-disabled")
    );
    snap.federation.access_edge.allow_anonymous_users = true;
    let f = forward(decide(&join, &anon, &snap, &DnsFacts::none()));
    assert_eq!(f.rule, "remote-user");
    assert_eq!(
        f.insert_trust.unwrap().header_value(),
        "ms-source-type=InternetUser;ms-ep-fqdn=accessedge.contoso.test"
    );
    // Anonymous users may join meetings, nothing else.
    join.meeting = false;
    let r = rejection(decide(&join, &anon, &snap, &DnsFacts::none()));
    assert_eq!(r.rule.name(), "anonymous-peer");
    // AllowOutsideUsers covers anonymous users too.
    join.meeting = true;
    snap.federation.access_edge.allow_outside_users = false;
    let r = rejection(decide(&join, &anon, &snap, &DnsFacts::none()));
    assert_eq!(r.rule.name(), "outside-users-disabled");
}

// === split domain (hybrid): dave@contoso.test is homed at LyncOnline ===

/// The LyncOnline edge, the hosting provider that shares contoso.test.
fn lync_online() -> Peer {
    peer(Interface::External, &["sipfed.online.lync.com"])
}

/// A request between two users of our domain: `from` → `to` (user names).
fn intra<'a>(from: &'a str, to: &'a str, trust: Option<&'a str>) -> RequestFacts<'a> {
    RequestFacts {
        method: "MESSAGE",
        uri_user: Some(to),
        uri_host: "contoso.test",
        from_user: Some(from),
        from_host: "contoso.test",
        to_user: Some(to),
        to_host: "contoso.test",
        max_forwards: Some(70),
        trust_header: trust,
        ..RequestFacts::default()
    }
}

#[test]
fn a_user_homed_at_the_hosting_provider_is_reached_through_it_and_others_through_the_pool() {
    let snap = lab();
    let f = forward(decide(&intra("carol", "dave", None), &pool(), &snap, &DnsFacts::none()));
    assert_eq!((f.exit, f.rule), (Interface::External, "split-domain"));
    assert_eq!(
        f.route,
        Route::Targets(vec![Target::tls("sipfed.online.lync.com", 5061)])
    );
    assert!(f.split_domain, "SplitIntra between two contoso.test users");
    assert_eq!(
        f.insert_trust.as_ref().map(|t| t.to_string()).as_deref(),
        Some("ms-source-type=EdgeProxyGenerated;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified"),
        "carol's NoFederation policy does not apply inside the organisation"
    );
    let back = f.response_trust.expect("responses are marked");
    assert_eq!(back.trust.source_type, crate::sip::ms_headers::SourceType::AuthorizedServer);

    // alice is on-premises: the pool.
    let f = forward(decide(&intra("dave", "alice", None), &pool(), &snap, &DnsFacts::none()));
    assert_eq!((f.exit, f.rule), (Interface::Internal, "local-domain"));

    // A partner's request the pool relays to dave is federation traffic, not SplitIntra.
    let mut req = intra("fay", "dave", None);
    req.from_host = "fabrikam.test";
    let f = forward(decide(&req, &pool(), &snap, &DnsFacts::none()));
    assert_eq!(f.rule, "split-domain");
    assert!(!f.split_domain);
}

#[test]
fn hybrid_traffic_needs_allow_federated_users_an_enabled_provider_and_an_internal_route_when_local() {
    let mut snap = lab();
    snap.federation.access_edge.allow_federated_users = false;
    let r = rejection(decide(&intra("alice", "dave", None), &pool(), &snap, &DnsFacts::none()));
    assert_eq!(r.rule, Rule::FederationDisabled);

    let mut snap = lab();
    snap.federation.hosting_providers[0].enabled = false;
    let r = rejection(decide(&intra("alice", "dave", None), &pool(), &snap, &DnsFacts::none()));
    assert_eq!((r.rule, r.code()), (Rule::ProviderDisabled, Some(1909)));

    // IsLocal: the provider's proxy is inside; no federation marking on the way.
    let mut snap = lab();
    snap.federation.hosting_providers[0].is_local = true;
    let f = forward(decide(&intra("alice", "dave", None), &pool(), &snap, &DnsFacts::none()));
    assert_eq!((f.exit, f.insert_trust, f.response_trust), (Interface::Internal, None, None));
    // ... and a peer outside claiming to be it is not it.
    let mark = Some(MARKED);
    let r = rejection(decide(&intra("dave", "alice", mark), &lync_online(), &snap, &lab_dns()));
    assert_eq!(r.rule, Rule::LocalDomainFromOutside);
}

#[test]
fn the_hosting_provider_speaks_for_the_users_it_hosts_and_no_others() {
    let snap = lab();
    let mark = Some(MARKED);
    let f = forward(decide(&intra("dave", "carol", mark), &lync_online(), &snap, &lab_dns()));
    assert_eq!((f.exit, f.rule), (Interface::Internal, "split-domain"));
    assert!(f.split_domain);
    assert_eq!(
        f.insert_trust.map(|t| t.to_string()).as_deref(),
        Some("ms-source-type=AuthorizedServer;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified;ms-source-network=federation;ms-remote-fqdn=sipfed.online.lync.com"),
        "carol's NoFederation policy does not apply inside the organisation"
    );
    // alice is homed on-premises: LyncOnline cannot speak for her.
    let r = rejection(decide(&intra("alice", "bob", mark), &lync_online(), &snap, &lab_dns()));
    assert_eq!((r.status, r.rule, r.code()), (403, Rule::LocalDomainFromOutside, Some(1010)));
    // Nor does another partner speak for dave.
    let fab = peer(Interface::External, &["sip.fabrikam.test"]);
    let r = rejection(decide(&intra("dave", "alice", mark), &fab, &snap, &lab_dns()));
    assert_eq!(r.rule, Rule::LocalDomainFromOutside);
    // Without a shared address space LyncOnline hosts nobody of ours.
    let mut snap = lab();
    snap.federation.hosting_providers[0].enabled_shared_address_space = false;
    assert!(snap.federation.conflicts().iter().any(|c| c.key == "user[2].hosting_provider"));
}

#[test]
fn a_split_intra_marking_between_domains_that_are_not_both_ours_is_refused_with_1017() {
    let snap = lab();
    let mark = Some(MARKED);
    let split = Some(SPLIT_INTRA);
    // Between dave and carol it is right.
    let mut req = intra("dave", "carol", mark);
    req.split_domain_info = split;
    assert_eq!(forward(decide(&req, &lync_online(), &snap, &lab_dns())).rule, "split-domain");
    // A tenant domain of the provider that is not ours, marked SplitIntra (the support
    // article's my.contoso.com): 403 + 1017, whatever the DNS says.
    let mut req = intra("tia", "alice", mark);
    req.from_host = "tailspin.test";
    req.split_domain_info = split;
    let r = rejection(decide(&req, &lync_online(), &snap, &lab_dns()));
    assert_eq!((r.status, r.rule, r.code()), (403, Rule::SplitDomainMismatch, Some(1017)));
    let d = r.diagnostics.expect("diagnostics");
    assert_eq!(d.reason, "Cannot route From and To domains in this combination");
    assert_eq!(
        d.get("summary"),
        Some("Domain type analysis indicates that the ms-split-domain-info header in the message is the wrong type")
    );
    // The same message unmarked is plain hosted federation.
    req.split_domain_info = None;
    assert_eq!(forward(decide(&req, &lync_online(), &snap, &lab_dns())).rule, "federation-inbound");
    // Outbound: the pool marking a partner's request SplitIntra, or an unknown type.
    let mut req = out_req("alice", "fabrikam.test", "MESSAGE");
    req.split_domain_info = split;
    assert_eq!(rejection(decide(&req, &pool(), &snap, &lab_dns())).rule, Rule::SplitDomainMismatch);
    let mut req = intra("alice", "dave", None);
    req.split_domain_info = Some("ms-traffic-type=SplitSomething");
    assert_eq!(rejection(decide(&req, &pool(), &snap, &lab_dns())).rule, Rule::SplitDomainMismatch);
    // Without a provider sharing our domains there is no split domain to be inside.
    let mut snap = lab();
    snap.federation.users.retain(|g| g.hosting_provider.is_none());
    snap.federation.hosting_providers[0].enabled_shared_address_space = false;
    let mut req = intra("alice", "bob", None);
    req.split_domain_info = split;
    assert_eq!(rejection(decide(&req, &pool(), &snap, &lab_dns())).rule, Rule::SplitDomainMismatch);
}
