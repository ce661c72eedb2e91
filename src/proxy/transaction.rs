//! Step 3, match a transaction (RFC 3261 §17.2.3): ACK and CANCEL find their INVITE, a
//! retransmission gets the last response again, and a new request gets a server
//! transaction (or 503 when the edge is draining, the table is full or its source is over
//! its share).

use super::*;

impl Core {
    /// The new server transaction's key; `None` when the request ended here (ACK, CANCEL,
    /// a retransmission, or a 503).
    pub(super) fn match_transaction(
        &self,
        m: &Message,
        peer: &Peer,
        reply: &ReplyTo,
        sealed_route: bool,
        snap: &Snapshot,
    ) -> Option<TxnKey> {
        let via = m.top_via()?;
        let method = m.method();
        let to_tag = m.to().and_then(|t| t.tag());
        let server_id = server_txn_id(m, via.branch(), via.host, via.port, to_tag);
        match method {
            Method::Ack => {
                // A pre-3261 ACK carries the To tag of the final response, which an INVITE
                // outside a dialog lacked: with no INVITE under its own id, it is matched
                // without the tag.
                let invite = TxnKey::new(Side::Server, server_id.clone(), MethodKey::Invite);
                let known = via.is_rfc3261() || self.txns.with(&invite, |_| ((), None)).is_some();
                let server_id = if known {
                    server_id
                } else {
                    server_txn_id(m, via.branch(), via.host, via.port, None)
                };
                self.on_ack(m.clone(), peer, reply, server_id, sealed_route);
                return None;
            }
            Method::Cancel => {
                self.on_cancel(m.clone(), peer, reply, server_id);
                return None;
            }
            _ => {}
        }
        let key = TxnKey::new(Side::Server, server_id, method_key(method));
        let retransmitted = self.txns.with(&key, |e| match e {
            Entry::Server(s) => match s.fsm.on_retransmission() {
                server::RetransmitAction::Resend => {
                    (s.last.clone().map(|b| (b, s.reply.clone())), None)
                }
                server::RetransmitAction::Absorb => (None, None),
            },
            Entry::Client(_) => (None, None),
        });
        if let Some(resend) = retransmitted {
            if let Some((bytes, to)) = resend {
                let _ = to.send(bytes);
            }
            return None;
        }
        if self.draining.load(Ordering::Acquire) {
            let r = Rejection::plain(Rule::ShuttingDown);
            self.reject_stateless(m, peer, reply, &r, snap);
            return None;
        }
        let mut entry = self.server_entry(m, peer, reply, method == Method::Invite, snap);
        if peer.interface == Interface::External {
            // The internal side is the organisation's own pool, one address for everyone.
            // The byte budget shrinks the table's capacity when its entries are large.
            let (len, capacity) = (self.txns.len(), self.txns.effective_capacity());
            let max = quota::limit(snap.limits.max_pending_per_source, len, capacity);
            // Every transaction a source holds counts too, answered or not (Timer J).
            let held_max = quota::held_limit(len, capacity);
            match self.quota.admit(peer.addr.ip(), max, held_max) {
                Some((slot, held)) => {
                    entry.slot = Some(slot);
                    entry.held_slot = Some(held);
                }
                None => {
                    let r = Rejection::plain(Rule::SourceOverload);
                    self.reject_stateless(m, peer, reply, &r, snap);
                    return None;
                }
            }
        }
        match self.txns.insert(key.clone(), Entry::Server(entry), None) {
            Ok(()) => {}
            // The same request read by another reader at the same moment: a retransmission.
            Err(crate::txn::TableFull::Exists) => return None,
            Err(crate::txn::TableFull::Full) => {
                self.reject_stateless(m, peer, reply, &Rejection::overloaded(), snap);
                return None;
            }
        }
        if method == Method::Invite {
            // 100 Trying at once so the previous hop stops retransmitting (§16.2).
            let trying = build::response(m, 100, "Trying", Some(peer.addr), None, &[]);
            self.send_local(&key, 100, trying);
        }
        Some(key)
    }

    /// A new server transaction for a request just received.
    pub(super) fn server_entry(
        &self,
        m: &Message,
        peer: &Peer,
        reply: &ReplyTo,
        invite: bool,
        snap: &Snapshot,
    ) -> ServerEntry {
        ServerEntry {
            fsm: ServerTxn::new(invite, reply.is_reliable(), TimerValues::from(&snap.timers)),
            request: m.clone(),
            reply: reply.clone(),
            source: peer.addr,
            arrival: peer.interface,
            received: Some(Instant::now()),
            last: None,
            client: None,
            to_tag: self.next_tag(),
            slot: None,
            held_slot: None,
            decision: None,
        }
    }

    pub(super) fn on_ack(
        &self,
        m: Message,
        peer: &Peer,
        reply: &ReplyTo,
        server_id: String,
        sealed_route: bool,
    ) {
        let key = TxnKey::new(Side::Server, server_id, MethodKey::Invite);
        let now = Instant::now();
        let absorbed = self.txns.with(&key, |e| match e {
            Entry::Server(s) => {
                let matched = s.fsm.on_ack(now);
                (matched, s.fsm.deadline())
            }
            Entry::Client(_) => (false, None),
        });
        if absorbed == Some(true) {
            return;
        }
        // An ACK for a 2xx is end to end: relay it statelessly along the route set, after
        // the same decision as any request in the dialog (which may need the partner's SRV).
        let snap = self.live.load();
        let peer = self.identify(peer, &snap);
        let plan = self.route_plan(&m, &snap, peer.interface, sealed_route);
        let facts = self.facts(&m, &plan, &snap);
        let question = match policy::decide_or_ask(&facts, &peer, &snap) {
            Ok(decision) => return self.relay_ack(&m, &peer, &plan, &snap, decision),
            Err(q) => q,
        };
        let (Some(resolver), Some(me)) = (
            self.resolver.clone(),
            self.me.get().and_then(Weak::upgrade),
        ) else {
            if crate::lograte::LOGS.admit(crate::lograte::Noisy::AckDropped, peer.addr.ip()) {
                tracing::info!(peer = %peer.addr, "ACK dropped: its decision needs DNS and no resolver is configured");
            }
            return;
        };
        let _ = reply;
        tokio::spawn(async move {
            let dns = srv_answer(resolver.as_ref(), &question).await;
            let facts = me.facts(&m, &plan, &snap);
            let decision = policy::decide(&facts, &peer, &snap, &dns);
            me.relay_ack(&m, &peer, &plan, &snap, decision);
        });
    }

    /// Relays an end-to-end ACK as decided, or drops it with one log line.
    pub(super) fn relay_ack(
        &self,
        m: &Message,
        peer: &Peer,
        plan: &RoutePlan,
        snap: &Snapshot,
        decision: Decision,
    ) {
        match decision {
            Decision::Forward(f) => {
                if let Ok(targets) = self.targets_for(m, &f.route, plan) {
                    let branch = stateless_branch(m);
                    let bytes = self.rewrite_for(m, peer, &f, &targets[0], &branch, plan, snap);
                    self.metrics.message(f.exit, Direction::Out, Method::Ack);
                    self.send_stateless(f.exit, &targets[0], bytes);
                }
            }
            Decision::Reject(r) => {
                if crate::lograte::LOGS.admit(crate::lograte::Noisy::AckDropped, peer.addr.ip()) {
                    tracing::info!(peer = %peer.addr, rule = r.rule.name(), "ACK dropped");
                }
            }
            Decision::AnswerOptions => {}
        }
    }

    pub(super) fn on_cancel(&self, m: Message, peer: &Peer, reply: &ReplyTo, server_id: String) {
        let invite_key = TxnKey::new(Side::Server, server_id.clone(), MethodKey::Invite);
        let cancel_key = TxnKey::new(Side::Server, server_id, MethodKey::Cancel);
        // A retransmitted CANCEL gets the same 200 again.
        let resend = self.txns.with(&cancel_key, |e| match e {
            Entry::Server(s) => (s.last.clone(), None),
            Entry::Client(_) => (None, None),
        });
        if let Some(last) = resend {
            if let Some(b) = last {
                let _ = reply.send(b);
            }
            return;
        }
        let client = self.txns.with(&invite_key, |e| match e {
            Entry::Server(s) if !s.fsm.is_final() => (Some(s.client.clone()), None),
            _ => (None, None),
        });
        let snap = self.live.load();
        let Some(Some(client)) = client else {
            let r = Rejection::plain(Rule::CancelNoMatch);
            self.reject_stateless(&m, peer, reply, &r, &snap);
            return;
        };
        if client.is_none() {
            // Nothing forwarded yet: the INVITE ends here with 487 (§16.10).
            self.reject(
                &invite_key,
                &Rejection::plain(Rule::Cancelled),
                &snap,
            );
        }
        let entry = self.server_entry(&m, peer, reply, false, &snap);
        match self
            .txns
            .insert(cancel_key.clone(), Entry::Server(entry), None)
        {
            Ok(()) => {}
            // The same request read by another reader at the same moment: a retransmission.
            Err(crate::txn::TableFull::Exists) => return,
            Err(crate::txn::TableFull::Full) => {
                self.reject_stateless(&m, peer, reply, &Rejection::overloaded(), &snap);
                return;
            }
        }
        let tag = self.server_tag(&cancel_key);
        let ok = build::response(&m, 200, "OK", Some(peer.addr), Some(&tag), &[]);
        self.send_local(&cancel_key, 200, ok);
        // Hop by hop: cancel our branch once it is proceeding, or as soon as it is.
        let Some(client) = client else { return };
        let send = self.txns.with(&client, |e| match e {
            Entry::Client(c) => {
                if c.fsm.is_proceeding() {
                    c.fsm.mark_cancelled();
                    (
                        c.forwarded
                            .as_ref()
                            .and_then(build::cancel_for)
                            .map(|b| (b.freeze(), c.dest.clone())),
                        c.fsm.deadline(),
                    )
                } else {
                    c.cancel_pending = true;
                    (None, None)
                }
            }
            Entry::Server(_) => (None, None),
        });
        if let Some(Some((bytes, Some(dest)))) = send {
            let _ = dest.send(bytes);
        }
    }
}

pub(super) fn method_key(m: Method) -> MethodKey {
    match m {
        Method::Invite | Method::Ack => MethodKey::Invite,
        Method::Cancel => MethodKey::Cancel,
        _ => MethodKey::Other,
    }
}

/// Server transaction id: branch + sent-by (§17.2.3); for pre-3261 senders a hash of what
/// §17.2.3 matches them by instead (Request-URI, To tag, From tag, Call-ID, CSeq number,
/// top Via sent-by), without the method so that a CANCEL or ACK finds its INVITE's id.
pub(super) fn server_txn_id(
    m: &Message,
    branch: Option<&str>,
    host: &str,
    port: Option<u16>,
    to_tag: Option<&str>,
) -> String {
    match branch {
        Some(b) if b.starts_with(crate::sip::via::MAGIC_COOKIE) => {
            let mut id = String::with_capacity(b.len() + host.len() + 8);
            let _ = write!(id, "{b}|{host}:{}", port.unwrap_or(0));
            id
        }
        _ => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            m.uri_range().map(|r| m.text(r)).hash(&mut h);
            m.call_id().hash(&mut h);
            m.from().and_then(|f| f.tag()).hash(&mut h);
            to_tag.hash(&mut h);
            m.cseq().map(|c| c.seq).hash(&mut h);
            format!("rfc2543-{:x}|{host}:{}", h.finish(), port.unwrap_or(0))
        }
    }
}
