//! Step 4, in a dialog or not: which Route entries name the edge (removed), whether the
//! request follows a route set that is ours to follow (from inside, or restored from our
//! seal; never without a To tag), and the flow the dialog's external peer used, which our
//! internal Record-Route entry remembers.

use super::*;

impl Core {
    /// Adds the lab-only identity of a plain TCP/UDP sender on the external interface.
    pub(super) fn identify(&self, peer: &Peer, snap: &Snapshot) -> Peer {
        let mut peer = peer.clone();
        if peer.identity.is_anonymous()
            && peer.transport != Transport::Tls
            && peer.interface == Interface::External
        {
            if let Some(identity) = snap.lab.source_identities.get(&peer.addr.ip()) {
                peer.identity = identity.clone();
            }
        }
        peer
    }

    /// Which Route entries name this edge (removed before relaying) and, for a request in a
    /// dialog whose route set is ours to follow, where it leaves. From outside only a route
    /// set restored from our own seal is followed (`sealed_route`); a request without a To
    /// tag is never in a dialog, whatever its Route says, and is decided from scratch.
    pub(super) fn route_plan(
        &self,
        m: &Message,
        snap: &Snapshot,
        arrival: Interface,
        sealed_route: bool,
    ) -> RoutePlan {
        let mut plan = RoutePlan {
            sealed: sealed_route,
            ..RoutePlan::default()
        };
        // Whether the route is followed; looked up only once an entry names the edge, so a
        // request without Route pays nothing here.
        let mut follow = None;
        for (line, range) in m.values(HeaderName::Route) {
            let value = m.text(range.clone());
            let Some(na) = crate::sip::NameAddr::parse(value) else {
                plan.next = Some(range);
                break;
            };
            match self.interface_named(snap, na.uri.host, na.uri.port) {
                Some(iface) => {
                    let follow = *follow.get_or_insert_with(|| {
                        (arrival == Interface::Internal || sealed_route)
                            && m.to().is_some_and(|t| t.tag().is_some())
                    });
                    if follow {
                        plan.exit = Some(iface);
                        // Only the internal side's route sets carry flows: the pool is trusted.
                        if arrival == Interface::Internal && plan.flow.is_none() {
                            plan.flow = na.uri.param(FLOW_PARAM).and_then(Flow::decode);
                        }
                    }
                    plan.pops.push((line, range));
                }
                None => {
                    plan.next = Some(range);
                    break;
                }
            }
        }
        plan
    }

    /// The interface a URI host names, if it names this edge.
    pub(super) fn interface_named(&self, snap: &Snapshot, host: &str, port: Option<u16>) -> Option<Interface> {
        for iface in [Interface::External, Interface::Internal] {
            let s = snap.interface(iface);
            if s.fqdn.eq_ignore_ascii_case(host) {
                return Some(iface);
            }
            if host.parse::<IpAddr>().ok() == Some(s.address) {
                let ports = self.ports.get(&iface).copied().unwrap_or_default();
                let p = port.unwrap_or(5060);
                if [ports.udp, ports.tcp, ports.tls].contains(&Some(p)) || port.is_none() {
                    return Some(iface);
                }
            }
        }
        None
    }

    /// A response from outside whose Record-Route holds our internal entry, with the
    /// responding peer's flow added to it: the pool's requests in the dialog then reach that
    /// peer over its connection, or by the name it proved (not by a bare address).
    pub(super) fn mark_flow(&self, m: Message, peer: &Peer, snap: &Snapshot) -> Message {
        let found = m.values(HeaderName::RecordRoute).into_iter().find(|(_, r)| {
            crate::sip::NameAddr::parse(m.text(r.clone())).is_some_and(|na| {
                na.uri.param(FLOW_PARAM).is_none()
                    && self.interface_named(snap, na.uri.host, na.uri.port)
                        == Some(Interface::Internal)
            })
        });
        let Some((_, range)) = found else { return m };
        let marked = Flow::of(peer).mark(m.text(range.clone()));
        let mut splice = crate::sip::splice::Splice::new(&m.bytes()[..m.body_range().end]);
        splice.replace(range, marked);
        let bytes = splice.finish().freeze();
        Message::parse(bytes, peer.transport == Transport::Udp).unwrap_or(m)
    }
}

/// Our Route entries to pop and the rest of the route set.
#[derive(Debug, Clone, Default)]
pub(super) struct RoutePlan {
    pub(super) pops: Vec<(usize, Range<usize>)>,
    /// Where an in-dialog request leaves; `None` when its route set is not ours to follow.
    pub(super) exit: Option<Interface>,
    pub(super) next: Option<Range<usize>>,
    /// The dialog's external peer, as our own Record-Route entry remembered it.
    pub(super) flow: Option<Flow>,
    /// The request's route set was restored from the edge's own seal.
    pub(super) sealed: bool,
}

/// The URI parameter of the edge's internal Record-Route entry that remembers how the
/// dialog's external peer was reached, as Lync's `ms-received-cid` does on its Via.
pub(super) const FLOW_PARAM: &str = "ms-flow";

/// How a dialog's external peer was reached: its transport, the remote address of its
/// connection (or its datagrams), and the name it proved, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Flow {
    pub(super) transport: Transport,
    pub(super) addr: SocketAddr,
    pub(super) name: Option<String>,
}

impl Flow {
    /// The flow a message from `peer` came over.
    pub(super) fn of(peer: &Peer) -> Flow {
        Flow {
            transport: peer.transport,
            addr: peer.addr,
            name: peer.identity.names().first().cloned(),
        }
    }

    /// The parameter value: base64url, so that addresses and names need no URI escaping.
    fn encode(&self) -> String {
        use base64::Engine as _;
        let text = format!(
            "{}|{}|{}",
            self.transport.as_str(),
            self.addr,
            self.name.as_deref().unwrap_or("")
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    pub(super) fn decode(value: &str) -> Option<Flow> {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value)
            .ok()?;
        let text = std::str::from_utf8(&raw).ok()?;
        let mut parts = text.splitn(3, '|');
        let transport = parts.next()?.parse().ok()?;
        let addr = parts.next()?.parse().ok()?;
        let name = parts.next().filter(|n| !n.is_empty()).map(str::to_string);
        Some(Flow {
            transport,
            addr,
            name,
        })
    }

    /// `entry` (a Record-Route value) with this flow added as a URI parameter.
    pub(super) fn mark(&self, entry: &str) -> String {
        let param = format!(";{FLOW_PARAM}={}", self.encode());
        match entry.rfind('>') {
            Some(gt) => format!("{}{param}{}", &entry[..gt], &entry[gt..]),
            None => format!("{entry}{param}"),
        }
    }
}
