//! The proxy's steps driven without sockets: a `Core` with no listeners, messages from
//! text, and what each step decides.

use super::*;
use crate::peer::PeerIdentity;

/// A core over the minimal TCP edge: no sockets, no TLS, no resolver.
fn core() -> Arc<Core> {
    let snap = Snapshot::from_toml(crate::config::TCP_EDGE, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    Core::new(CoreParts {
        live: Arc::new(Live::new(snap)),
        udp: HashMap::new(),
        ports: HashMap::new(),
        tls: None,
        resolver: None,
        conn_shutdown: CancellationToken::new(),
        topology: topology::Hider::random().unwrap_or_else(|e| panic!("{e}")),
        tap: None,
    })
}

fn msg(text: &str) -> Message {
    Message::parse(Bytes::copy_from_slice(text.as_bytes()), false)
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A BYE (with a To tag) or a MESSAGE (without), routed through `routes`.
fn routed(method: &str, to_tag: bool, routes: &str) -> Message {
    let tag = if to_tag { ";tag=b1" } else { "" };
    msg(&format!(
        "{method} sip:bob@10.0.0.5 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.9;branch=z9hG4bKp1\r\nRoute: {routes}\r\nMax-Forwards: 70\r\nFrom: <sip:dan@fabrikam.test>;tag=a1\r\nTo: <sip:bob@contoso.test>{tag}\r\nCall-ID: c1\r\nCSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n"
    ))
}

const OURS: &str = "<sip:accessedge.contoso.test;lr>, <sip:edge-int.contoso.test;lr>";

fn peer(interface: Interface) -> Peer {
    Peer {
        interface,
        transport: Transport::Tls,
        addr: "127.0.0.3:40000".parse().unwrap_or_else(|e| panic!("{e}")),
        identity: PeerIdentity::new(["sip.fabrikam.test"]),
    }
}

#[test]
fn from_outside_an_unsealed_route_naming_the_edge_is_removed_and_not_followed() {
    let c = core();
    let snap = c.live.load();
    let m = routed("BYE", true, &format!("{OURS}, <sip:10.0.0.5;lr>"));
    let plan = c.route_plan(&m, &snap, Interface::External, false);
    assert_eq!(plan.pops.len(), 2, "both entries naming the edge are removed");
    assert_eq!(plan.exit, None, "and not followed: the request is decided afresh");
    assert!(plan.next.is_some());
}

#[test]
fn a_sealed_route_from_outside_is_followed_only_inside_a_dialog() {
    let c = core();
    let snap = c.live.load();
    let bye = routed("BYE", true, OURS);
    let plan = c.route_plan(&bye, &snap, Interface::External, true);
    assert_eq!(plan.exit, Some(Interface::Internal));
    let message = routed("MESSAGE", false, OURS);
    let plan = c.route_plan(&message, &snap, Interface::External, true);
    assert_eq!((plan.pops.len(), plan.exit), (2, None), "no To tag: never in a dialog");
}

#[test]
fn a_preloaded_route_from_inside_is_removed_and_the_request_decided_afresh() {
    let c = core();
    let snap = c.live.load();
    let m = routed("MESSAGE", false, "<sip:edge-int.contoso.test;lr>");
    let plan = c.route_plan(&m, &snap, Interface::Internal, false);
    assert_eq!((plan.pops.len(), plan.exit), (1, None));
    let m = routed("BYE", true, "<sip:edge-int.contoso.test;lr>");
    let plan = c.route_plan(&m, &snap, Interface::Internal, false);
    assert_eq!(plan.exit, Some(Interface::Internal), "in a dialog the pool's route is followed");
}

#[test]
fn the_flow_our_internal_entry_remembers_is_taken_only_from_inside() {
    let c = core();
    let snap = c.live.load();
    let flow = Flow::of(&peer(Interface::External));
    let int = flow.mark("<sip:edge-int.contoso.test;lr>");
    assert!(int.starts_with("<sip:edge-int.contoso.test;lr;ms-flow="), "{int}");
    let routes = format!("{int}, <sip:accessedge.contoso.test;lr>");
    let m = routed("BYE", true, &routes);
    let plan = c.route_plan(&m, &snap, Interface::Internal, false);
    assert_eq!(plan.flow.as_ref(), Some(&flow));
    assert_eq!(plan.exit, Some(Interface::External));
    let plan = c.route_plan(&m, &snap, Interface::External, true);
    assert_eq!(plan.flow, None, "an outsider cannot choose our connection");
}

#[test]
fn a_flow_survives_its_encoding_and_garbage_is_no_flow() {
    for p in [peer(Interface::External), Peer { transport: Transport::Udp, addr: "[::1]:5060".parse().unwrap_or_else(|e| panic!("{e}")), identity: PeerIdentity::anonymous(), ..peer(Interface::External) }] {
        let flow = Flow::of(&p);
        let marked = flow.mark("<sip:edge-int.contoso.test;lr>");
        let value = marked
            .split("ms-flow=")
            .nth(1)
            .and_then(|v| v.strip_suffix('>'))
            .unwrap_or_else(|| panic!("{marked}"));
        assert_eq!(Flow::decode(value), Some(flow));
    }
    for garbage in ["", "!!", "dGNwfG5vdC1hbi1hZGRyZXNzfA", "eHl6fDEyNy4wLjAuMTo1MDYwfA"] {
        assert_eq!(Flow::decode(garbage), None, "{garbage}");
    }
}

#[test]
fn an_in_dialog_target_with_a_flow_uses_it_and_the_peers_proven_name() {
    let c = core();
    let snap = c.live.load();
    let flow = Flow::of(&peer(Interface::External));
    let routes = format!(
        "{}, <sip:accessedge.contoso.test;lr>, <sip:127.0.0.3:5061;transport=tls;lr>",
        flow.mark("<sip:edge-int.contoso.test;lr>")
    );
    let m = routed("BYE", true, &routes);
    let plan = c.route_plan(&m, &snap, Interface::Internal, false);
    let targets = c
        .targets_for(&m, &policy::Route::RequestTarget, &plan)
        .unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(targets.len(), 1);
    let t = &targets[0];
    assert_eq!((t.host.as_str(), t.port), ("127.0.0.3", 5061));
    assert_eq!(t.flow, Some(flow.addr));
    assert_eq!(t.tls_name.as_deref(), Some("sip.fabrikam.test"), "not the address in the URI");
}

#[test]
fn a_proxy_require_the_edge_does_not_implement_is_named_but_ack_and_cancel_are_exempt() {
    let with = |method: &str| {
        msg(&format!(
            "{method} sip:bob@contoso.test SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.9;branch=z9hG4bKp2\r\nProxy-Require: foo, bar\r\nMax-Forwards: 70\r\nFrom: <sip:a@fabrikam.test>;tag=1\r\nTo: <sip:bob@contoso.test>\r\nCall-ID: c2\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        ))
    };
    assert_eq!(unsupported_proxy_require_of(&with("MESSAGE")).as_deref(), Some("foo, bar"));
    assert_eq!(unsupported_proxy_require_of(&with("ACK")), None);
    assert_eq!(unsupported_proxy_require_of(&with("CANCEL")), None);
}

fn unsupported_proxy_require_of(m: &Message) -> Option<String> {
    sanity::unsupported_proxy_require(m)
}
