//! Step 2, restore the hidden route: a Route entry of ours that comes back from outside
//! carries the internal route set sealed inside it (`topology`); it is opened, checked
//! against the dialog and peer it was sealed for, and put back. Nothing else naming the edge
//! is followed (`dialog::route_plan`).

use super::*;

impl Core {
    /// A request from outside with the sealed Route entry of ours expanded (`topology`), and
    /// whether one was (only then may its Route lead through the edge). The seal must be
    /// bound to this request's dialog; `None` when it was refused (403 + 1912, or an ACK
    /// dropped).
    pub(super) fn restore_hidden_route(
        &self,
        m: Message,
        peer: &Peer,
        reply: &ReplyTo,
    ) -> Option<(Message, bool)> {
        if peer.interface != Interface::External || m.header(HeaderName::Route).is_none() {
            return Some((m, false));
        }
        let snap = self.live.load();
        let datagram = peer.transport == Transport::Udp;
        match self
            .topology
            .expand_route(&m, datagram, |na| self.names_external(&snap, na))
        {
            Ok(Some((expanded, binding))) => match binding.admits(&expanded, &self.identify(peer, &snap).identity) {
                Ok(()) => Some((expanded, true)),
                Err(e) => {
                    if m.method() == Method::Ack {
                        if crate::lograte::LOGS.admit(crate::lograte::Noisy::AckDropped, peer.addr.ip()) {
                            tracing::info!(peer = %peer.addr, reason = %e, "ACK dropped: its Route belongs to another dialog");
                        }
                    } else {
                        self.reject_stateless(&m, peer, reply, &e.rejection(), &snap);
                    }
                    None
                }
            },
            Ok(None) => Some((m, false)),
            Err(e) if m.method() == Method::Ack => {
                if crate::lograte::LOGS.admit(crate::lograte::Noisy::AckDropped, peer.addr.ip()) {
                    tracing::info!(peer = %peer.addr, reason = %e, "ACK dropped: its Route does not verify");
                }
                None
            }
            Err(e) => {
                self.reject_stateless(&m, peer, reply, &e.rejection(), &snap);
                None
            }
        }
    }

    /// Whether a route entry names this edge's external interface.
    pub(super) fn names_external(&self, snap: &Snapshot, na: &crate::sip::NameAddr<'_>) -> bool {
        self.interface_named(snap, na.uri.host, na.uri.port) == Some(Interface::External)
    }
}
