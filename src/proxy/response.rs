//! The path of a response: match its client transaction, restore the Via and route set
//! hidden outside, mark trust (a response from outside loses any marking and gets the
//! edge's own), answer 503 failover, and relay it over the server transaction.

use super::*;

impl Core {
    pub(super) fn on_response(&self, m: Message, peer: &Peer) {
        if let Err(e) = m.validate_response() {
            if crate::lograte::LOGS.admit(crate::lograte::Noisy::ResponseDropped, peer.addr.ip()) {
                tracing::info!(peer = %peer.addr, reason = %e, "response dropped: malformed");
            }
            return;
        }
        // === topology hiding: a Record-Route of ours from outside gets its hidden entries back ===
        // (Only a response with a Record-Route pays for this: not the hot MESSAGE path.)
        let m = match peer.interface {
            Interface::External if m.header(HeaderName::RecordRoute).is_some() => {
                let snap = self.live.load();
                let m = self
                    .topology
                    .expand_record_route(&m, peer.transport == Transport::Udp, |na| {
                        self.names_external(&snap, na)
                    })
                    .unwrap_or(m);
                self.mark_flow(m, &self.identify(peer, &snap), &snap)
            }
            _ => m,
        };
        let Some(via) = m.top_via() else { return };
        let Some(branch) = via.branch().filter(|b| b.starts_with(BRANCH_PREFIX)) else {
            if crate::lograte::LOGS.admit(crate::lograte::Noisy::ResponseDropped, peer.addr.ip()) {
                tracing::info!(peer = %peer.addr, "response dropped: top Via is not ours");
            }
            return;
        };
        let status = m.status().unwrap_or(0);
        let key = TxnKey::new(Side::Client, branch, method_key(m.method()));
        let now = Instant::now();
        let outcome = self.txns.with(&key, |e| match e {
            Entry::Client(c) => {
                let action = c.fsm.on_response(status, now);
                let retry = (status == 503
                    && matches!(
                        action,
                        ResponseAction::Forward | ResponseAction::AckAndForward
                    ))
                .then(|| c.retry.take())
                .flatten();
                let ack = matches!(
                    action,
                    ResponseAction::AckAndForward | ResponseAction::AckOnly
                )
                .then(|| c.forwarded.as_ref().and_then(|f| build::ack_for(f, &m)))
                .flatten()
                .map(|b| (b.freeze(), c.dest.clone()));
                let cancel =
                    (status < 200 && status > 100 && c.cancel_pending && c.fsm.is_proceeding())
                        .then(|| {
                            c.cancel_pending = false;
                            c.fsm.mark_cancelled();
                            c.forwarded
                                .as_ref()
                                .and_then(build::cancel_for)
                                .map(|b| (b.freeze(), c.dest.clone()))
                        })
                        .flatten();
                // A non-INVITE's final answer ends what the entry is kept for but absorbing
                // retransmitted answers (Timer K): its parts move out rather than being
                // copied, and its request bytes go (what the byte budget counts).
                let done = status >= 200 && !c.fsm.is_invite();
                if done {
                    c.bytes = Bytes::new();
                }
                (
                    (
                        action,
                        ack,
                        cancel,
                        c.server.clone(),
                        (
                            c.arrival,
                            c.exit,
                            take_if(done, &mut c.domain),
                            take_if(done, &mut c.target),
                            take_if(done, &mut c.hidden_via),
                            take_if(done, &mut c.response_trust),
                            take_if(done, &mut c.requester),
                            take_if(done, &mut c.partner),
                        ),
                        c.span.clone(),
                        retry,
                    ),
                    c.fsm.deadline(),
                )
            }
            Entry::Server(_) => (
                (
                    ResponseAction::Absorb,
                    None,
                    None,
                    key.clone(),
                    (
                        Interface::Internal,
                        Interface::Internal,
                        String::new(),
                        String::new(),
                        None,
                        None,
                        None,
                        None,
                    ),
                    tracing::Span::none(),
                    None,
                ),
                None,
            ),
        });
        let Some((
            action,
            ack,
            cancel,
            server_key,
            (arrival, exit, domain, target, hidden_via, response_trust, requester, partner),
            span,
            retry,
        )) = outcome
        else {
            // §16.7: no transaction: relay statelessly by the next Via.
            return self.relay_stateless(&m, branch, peer.interface);
        };
        let _entered = span.enter();
        tracing::debug!(status, "response");
        for (bytes, dest) in [ack, cancel].into_iter().flatten() {
            if let Some(d) = dest {
                let _ = d.send(bytes);
            }
        }
        if !matches!(
            action,
            ResponseAction::Forward | ResponseAction::AckAndForward
        ) || status == 100
        {
            return;
        }
        if let Some(r) = retry {
            // RFC 3263 §4.3: a 503 moves on to the next target, as a new client transaction.
            tracing::info!(target = %target, "503 from the target; trying the next one");
            self.txns.remove(&key);
            return self.forward(
                server_key,
                &r.request,
                &r.peer,
                &r.forward,
                r.remaining,
                &r.plan,
                &r.snap,
                None,
            );
        }
        if let Some(p) = partner.as_deref().filter(|_| status >= 200) {
            self.partner_answered(p, status);
        }
        let mut edits = self.response_edits(
            &m,
            arrival,
            peer.interface,
            Some((exit, &domain, &target)),
            response_trust.as_deref(),
            requester
                .as_ref()
                .and_then(|id| id.names().first())
                .map(String::as_str),
        );
        edits.restore_via = hidden_via;
        let out = rewrite::rewrite_response(&m, &edits).freeze();
        self.send_on_server(&server_key, status, out);
    }

    /// Header hygiene on a relayed response. Toward the external interface `ms-diagnostics`
    /// and `Warning` are dropped, as both name internal servers; the diagnostics' code and
    /// reason may go as `ms-diagnostics-public`, without the parameters an internal server
    /// wrote. Toward the internal one, a federated peer's error without diagnostics gets
    /// the Access Edge's 1034 line.
    pub(super) fn response_edits(
        &self,
        m: &Message,
        to: Interface,
        arrived_on: Interface,
        from: Option<(Interface, &str, &str)>,
        trust: Option<&policy::ResponseTrust>,
        requester: Option<&str>,
    ) -> rewrite::ResponseEdits<'static> {
        let mut edits = rewrite::ResponseEdits::default();
        let diagnostics = m.header_value(HeaderName::MsDiagnostics);
        match to {
            Interface::External => {
                edits.remove = &[HeaderName::MsDiagnostics, HeaderName::Warning];
                // === topology hiding: entries above our external one leave only sealed ===
                let hidden = m.header(HeaderName::RecordRoute).and_then(|_| {
                    let snap = self.live.load();
                    let binding = topology::Binding {
                        peer: requester.unwrap_or("").to_string(),
                        ..topology::Binding::of_response_out(m)
                    };
                    self.topology
                        .hide_response(m, |na| self.names_external(&snap, na), &binding)
                });
                if let Some(line) = hidden {
                    edits.remove = &[
                        HeaderName::MsDiagnostics,
                        HeaderName::Warning,
                        HeaderName::RecordRoute,
                    ];
                    edits.add.push(line);
                }
                if let Some(d) = diagnostics {
                    if m.header(HeaderName::MsDiagnosticsPublic).is_none() {
                        if let Ok(mut v) = crate::sip::ms_headers::DiagnosticsValue::parse(&d) {
                            v.params.clear();
                            edits.add.push(format!("ms-diagnostics-public: {v}"));
                        }
                    }
                }
            }
            Interface::Internal => {
                // The trust marking is the edge's alone, on responses as on requests: what a
                // peer wrote is dropped, and the edge's own goes on (access-edge.md).
                if arrived_on == Interface::External {
                    edits.remove = &[HeaderName::MsTrust];
                    if let Some(t) = trust {
                        let arrived = m.header_value(HeaderName::MsTrust);
                        let line = rewrite::TrustLine(&t.for_response(arrived.as_deref()));
                        edits.add.push(line.to_string());
                    }
                }
                let status = m.status().unwrap_or(0);
                if let Some((Interface::External, domain, peer_server)) = from {
                    if status >= 300 && diagnostics.is_none() {
                        let snap = self.live.load();
                        let v = crate::sip::ms_headers::DiagnosticsValue::previous_hop_silent(
                            domain,
                            peer_server,
                            &snap.external.fqdn,
                        );
                        edits.add.push(format!("ms-diagnostics: {v}"));
                    }
                }
            }
        }
        edits
    }

    /// Relays a response that matches no transaction by its next Via (RFC 3261 §16.11).
    pub(super) fn relay_stateless(&self, m: &Message, branch: &str, arrived_on: Interface) {
        let vias = m.values(HeaderName::Via);
        let Some((_, next)) = vias.get(1) else { return };
        let Some(via) = crate::sip::Via::parse(m.text(next.clone())) else {
            return;
        };
        let iface = if branch[BRANCH_PREFIX.len()..].chars().nth(8) == Some('e') {
            Interface::External
        } else {
            Interface::Internal
        };
        let host = via.param("received").unwrap_or(via.host);
        let port = via
            .param("rport")
            .and_then(|p| p.parse().ok())
            .or(via.port)
            .unwrap_or(5060);
        let Ok(ip) = host.parse::<IpAddr>() else {
            return;
        };
        let addr = SocketAddr::new(ip, port);
        let edits = self.response_edits(m, iface, arrived_on, None, None, None);
        let out = rewrite::rewrite_response(m, &edits).freeze();
        self.metrics.message(iface, Direction::Out, m.method());
        self.metrics.response(m.status().unwrap_or(0));
        match via.transport.parse::<Transport>() {
            Ok(Transport::Udp) => {
                if let Some(s) = self.udp.get(&iface) {
                    let _ = conn::send_datagram(s, addr, out);
                }
            }
            Ok(t) => {
                if let Some(c) = self.registry.find(t, addr) {
                    let _ = c.send_reply(out);
                }
            }
            Err(_) => {}
        }
    }
}

/// The value moved out when the entry no longer needs it, else a copy.
fn take_if<T: Clone + Default>(done: bool, v: &mut T) -> T {
    if done {
        std::mem::take(v)
    } else {
        v.clone()
    }
}
