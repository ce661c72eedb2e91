//! Step 5, decide: the policy pipeline (`policy::decide`, pure) on the facts of the request,
//! with the SRV answer it asks for, and what is done with its verdict. The decision is kept
//! with the server transaction and recorded with the final status its request got.

use super::*;

impl Core {
    /// Decides (asking DNS first when the pipeline needs an SRV answer) and acts.
    pub(super) fn decide(
        &self,
        key: TxnKey,
        m: Message,
        peer: Peer,
        plan: RoutePlan,
        snap: Arc<Snapshot>,
    ) {
        let facts = self.facts(&m, &plan, &snap);
        let question = match policy::decide_or_ask(&facts, &peer, &snap) {
            Ok(decision) => {
                return self.act(key, &m, decision, &peer, &plan, &snap, DnsFacts::none());
            }
            Err(q) => q,
        };
        let Some(resolver) = self.resolver.clone() else {
            let dns = DnsFacts::answer(
                &question,
                SrvAnswer::Failed("no DNS resolver configured".into()),
            );
            let decision = policy::decide(&facts, &peer, &snap, &dns);
            return self.act(key, &m, decision, &peer, &plan, &snap, dns);
        };
        let Some(me) = self.me.get().and_then(Weak::upgrade) else {
            return;
        };
        let span = tracing::Span::current();
        tokio::spawn(async move {
            let _entered = span.enter();
            let dns = srv_answer(resolver.as_ref(), &question).await;
            // The facts borrow the message, which moved into this task: take them again.
            let facts = me.facts(&m, &plan, &snap);
            let decision = policy::decide(&facts, &peer, &snap, &dns);
            me.act(key, &m, decision, &peer, &plan, &snap, dns);
        });
    }

    /// Records the decision and carries it out.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn act(
        &self,
        key: TxnKey,
        m: &Message,
        decision: Decision,
        peer: &Peer,
        plan: &RoutePlan,
        snap: &Arc<Snapshot>,
        dns: DnsFacts,
    ) {
        let mut pending = pending_decision(peer, snap, dns, &decision, plan.sealed);
        // The facts are read again only when some allowed domain is monitored.
        pending.monitored = snap
            .federation
            .allowed_domains
            .iter()
            .any(|a| a.mark_for_monitoring)
            && policy::monitored_domain(&self.facts(m, plan, snap), peer, snap).is_some();
        match decision {
            Decision::Reject(r) => {
                self.keep_decision(&key, pending);
                self.reject(&key, &r, snap)
            }
            Decision::AnswerOptions => {
                self.keep_decision(&key, pending);
                let tag = self.server_tag(&key);
                let ok = respond::options_ok(m, Some(peer.addr), &tag);
                self.send_local(&key, 200, ok);
            }
            Decision::Forward(f) => {
                let targets = self
                    .admit_limits(&f, snap)
                    .and_then(|()| self.targets_for(m, &f.route, plan));
                let targets = match targets {
                    Ok(t) => t,
                    Err(r) => {
                        self.keep_decision(&key, pending);
                        return self.reject(&key, &r, snap);
                    }
                };
                tracing::debug!(rule = f.rule, exit = %f.exit, target = %targets[0].host, "forwarding");
                // The forward keeps the decision in the same table visit that links the
                // client transaction: no extra lock on the hot path.
                self.forward(key, m, peer, &f, targets, plan, snap, Some(pending));
            }
        }
    }

    pub(super) fn facts<'m>(&self, m: &'m Message, plan: &RoutePlan, snap: &Snapshot) -> RequestFacts<'m> {
        let mut facts = request_facts(m);
        facts.addressed_to_edge = m.uri().is_some_and(|u| {
            u.user.is_none() && self.interface_named(snap, u.host, u.port).is_some()
        });
        facts.looped = self.is_loop(m);
        facts.routed_exit = plan.exit;
        facts.has_remaining_route = plan.next.is_some();
        facts
    }

    /// RFC 3261 §16.3 step 4: a Via of ours carrying the same loop hash means the request
    /// came back unchanged (a spiral would change the hash). The hash is computed only when
    /// a Via of ours is there: it parses From and To, 5 % of a relayed MESSAGE's
    /// instructions (`benches/ab-instr.sh`), and most requests carry no Via of ours.
    pub(super) fn is_loop(&self, m: &Message) -> bool {
        let mut ours = m
            .values(HeaderName::Via)
            .into_iter()
            .filter_map(|(_, r)| {
                crate::sip::Via::parse(m.text(r))
                    .and_then(|v| v.branch())
                    .and_then(|b| b.strip_prefix(BRANCH_PREFIX))
                    .and_then(|rest| rest.get(..8))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
            })
            .peekable();
        if ours.peek().is_none() {
            return false;
        }
        let hash = loop_hash(m);
        ours.any(|h| h == hash)
    }

    /// Keeps the decision with its server transaction until the final response leaves.
    pub(super) fn keep_decision(&self, key: &TxnKey, pending: PendingDecision) {
        self.txns.with(key, |e| {
            if let Entry::Server(s) = e {
                s.decision = Some(pending);
            }
            ((), None)
        });
    }

    /// Records a decision with the final status its request got.
    pub(super) fn record(
        &self,
        request: &Message,
        p: PendingDecision,
        status: u16,
        took: Option<std::time::Duration>,
        failure: Option<Bytes>,
    ) {
        self.metrics.decision(p.outcome, p.rule);
        if p.monitored {
            self.metrics.monitored_decision(p.outcome);
        }
        // `--access-log`: the fields are computed only when the target is enabled, so with
        // the flag off this costs one read of the callsite's cached interest.
        tracing::info!(
            target: ACCESS_TARGET,
            method = request.method_str(),
            call_id = request.call_id().unwrap_or(""),
            from = request.from().map_or("", |f| f.uri.host),
            to = request.to().map_or("", |t| t.uri.host),
            status,
            rule = p.rule,
            outcome = p.outcome,
            duration_ms = %format_args!("{:.3}", took.map_or(0.0, |t| t.as_secs_f64() * 1000.0)),
            arrival = %p.peer.interface,
            exit = p.exit.map_or("-", |i| i.as_str()),
            peer = %p.peer.addr,
            "transaction done"
        );
        self.decisions.record(record::Recorded {
            at: std::time::SystemTime::now(),
            request: Bytes::copy_from_slice(request.bytes()),
            datagram: p.peer.transport == Transport::Udp,
            peer: p.peer,
            snap: p.snap,
            dns: p.dns,
            outcome: p.outcome,
            rule: p.rule,
            status,
            took,
            failure,
            sealed_route: p.sealed_route,
        });
    }

    /// A kept decision as people read it, with its trail rebuilt from the recorded inputs.
    pub(super) fn describe(&self, r: record::Recorded) -> record::DecisionRecord {
        let m = Message::parse(r.request, r.datagram);
        let text = |f: fn(&Message) -> Option<&str>| {
            m.as_ref().ok().and_then(f).unwrap_or("").to_string()
        };
        let trail = match &m {
            Ok(m) => {
                let plan = self.route_plan(m, &r.snap, r.peer.interface, r.sealed_route);
                let facts = self.facts(m, &plan, &r.snap);
                policy::explain(&facts, &r.peer, &r.snap, &r.dns).trail
            }
            // It parsed when it was decided; the same bytes cannot fail now.
            Err(_) => Vec::new(),
        };
        let header = |name| {
            m.as_ref()
                .ok()
                .and_then(|m| m.header_value(name))
                .unwrap_or_default()
                .into_owned()
        };
        // The response went back the way the request came, so it parses by the same rules.
        let ms_diagnostics = r
            .failure
            .and_then(|b| Message::parse(b, r.datagram).ok())
            .and_then(|resp| {
                resp.header_value(HeaderName::MsDiagnostics)
                    .map(|v| v.into_owned())
            });
        record::DecisionRecord {
            at: r.at,
            call_id: text(Message::call_id),
            method: text(|m| Some(m.method_str())),
            request_uri: text(|m| m.uri_range().map(|range| m.text(range))),
            from: header(HeaderName::From),
            to: header(HeaderName::To),
            interface: r.peer.interface,
            transport: r.peer.transport,
            peer: r.peer.addr,
            identity: r.peer.identity.names().to_vec(),
            outcome: r.outcome,
            rule: r.rule,
            status: r.status,
            took: r.took,
            ms_diagnostics,
            trail,
        }
    }

    /// Every decision kept, oldest first.
    pub fn recent_decisions(&self) -> Vec<record::DecisionRecord> {
        self.last_decisions(record::KEEP)
    }

    /// The last `n` decisions, oldest first (the admin endpoint's `/decisions`).
    pub fn last_decisions(&self, n: usize) -> Vec<record::DecisionRecord> {
        let kept = self.decisions.recent(n);
        kept.into_iter().map(|r| self.describe(r)).collect()
    }
}

/// The log target of the access lines (`sipedge run --access-log`).
pub const ACCESS_TARGET: &str = "sipedge::access";

/// A decision waiting for its request's final response to be recorded.
/// What is kept of a decision until its request's final response: its inputs (the trail is
/// rebuilt from them when `/decisions` is read) and its verdict.
pub(super) fn pending_decision(
    peer: &Peer,
    snap: &Arc<Snapshot>,
    dns: DnsFacts,
    d: &Decision,
    sealed_route: bool,
) -> PendingDecision {
    let (outcome, rule, exit) = match d {
        Decision::Forward(f) => ("forward", f.rule, Some(f.exit)),
        Decision::Reject(r) => ("reject", r.rule.name(), None),
        Decision::AnswerOptions => ("answer", "options-to-edge", None),
    };
    PendingDecision {
        peer: peer.clone(),
        exit,
        snap: Arc::clone(snap),
        dns,
        outcome,
        rule,
        sealed_route,
        monitored: false,
    }
}

pub(super) struct PendingDecision {
    pub(super) peer: Peer,
    /// The interface a forwarded request left by (for the access log).
    pub(super) exit: Option<Interface>,
    pub(super) snap: Arc<Snapshot>,
    pub(super) dns: DnsFacts,
    pub(super) outcome: &'static str,
    pub(super) rule: &'static str,
    pub(super) sealed_route: bool,
    /// Its partner domain is an allowed domain with MarkForMonitoring.
    pub(super) monitored: bool,
}

/// The facts the decision needs that come from the message alone (no route set, no loop
/// check): what `sipedge explain` and the proxy share.
pub fn request_facts(m: &Message) -> RequestFacts<'_> {
    let uri = m.uri();
    let from = m.from();
    let to = m.to();
    RequestFacts {
        method: m.method_str(),
        uri_user: uri.and_then(|u| u.user),
        uri_host: uri.map_or("", |u| u.host),
        from_user: from.and_then(|f| f.uri.user),
        from_host: from.map_or("", |f| f.uri.host),
        to_user: to.and_then(|t| t.uri.user),
        to_host: to.map_or("", |t| t.uri.host),
        max_forwards: m.max_forwards().ok().flatten(),
        looped: false,
        routed_exit: None,
        has_remaining_route: false,
        addressed_to_edge: false,
        trust_header: m
            .header(HeaderName::MsTrust)
            .map(|h| m.text(h.value.clone())),
        media: sdp_media(m),
        in_dialog: to.is_some_and(|t| t.tag().is_some()),
        meeting: uri.and_then(|u| u.param("opaque")).is_some_and(is_conference)
            || to
                .and_then(|t| t.uri.param("opaque"))
                .is_some_and(is_conference),
        split_domain_info: m
            .header(HeaderName::MsSplitDomainInfo)
            .map(|h| m.text(h.value.clone())),
    }
}

/// `opaque=app:conf:…`: a conference focus or MCU (Lync's meeting URIs).
fn is_conference(opaque: &str) -> bool {
    opaque
        .get(..9)
        .is_some_and(|p| p.eq_ignore_ascii_case("app:conf:"))
}

/// Which media an SDP offer in the body proposes (for the public-cloud A/V policy).
pub(super) fn sdp_media(m: &Message) -> policy::Media {
    let is_sdp = m
        .header_value(HeaderName::ContentType)
        .is_some_and(|c| c.trim().to_ascii_lowercase().starts_with("application/sdp"));
    let mut media = policy::Media::default();
    if is_sdp {
        for line in m.body().split(|b| *b == b'\n') {
            if line.starts_with(b"m=audio") {
                media.audio = true;
            } else if line.starts_with(b"m=video") {
                media.video = true;
            }
        }
    }
    media
}

/// The answer to the SRV question a decision asked, as the decision reads it
/// (`check-partner` asks the same way).
pub async fn srv_answer(resolver: &dyn crate::dns::Resolve, question: &policy::DnsQuestion) -> DnsFacts {
    let answer = match resolver.srv(&question.name()).await {
        Ok(records) => SrvAnswer::Records(crate::dns::order_srv(records, &mut rand::rng())),
        Err(e) if e.is_no_records() => SrvAnswer::NoRecords,
        Err(e) => SrvAnswer::Failed(e.to_string()),
    };
    DnsFacts::answer(question, answer)
}
