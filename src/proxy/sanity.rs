//! Step 1, sanity: a request is well formed enough to act on before any policy looks at it
//! (400, 416, 420, 505; 513 for a datagram over the size limit), as Kamailio's and repro's
//! first steps are. What fails here is answered statelessly, once, with one log line.

use super::*;

impl Core {
    /// Whether the request may go on; otherwise it has been answered (400/416/505 for a
    /// malformed request, 420 for a Proxy-Require the edge does not implement).
    pub(super) fn is_sane(&self, m: &Message, peer: &Peer, reply: &ReplyTo) -> bool {
        if let Err(e) = m.validate_request() {
            let status = e.status();
            if crate::lograte::LOGS.admit(crate::lograte::Noisy::RequestRefused, peer.addr.ip()) {
                tracing::info!(peer = %peer.addr, interface = %peer.interface, reason = %e, status, "request refused");
            }
            self.respond_stateless(m, peer, reply, status, |tag| {
                respond::bad_request(m, &e, Some(peer.addr), tag)
            });
            return false;
        }
        if let Some(tags) = unsupported_proxy_require(m) {
            if crate::lograte::LOGS.admit(crate::lograte::Noisy::RequestRefused, peer.addr.ip()) {
                tracing::info!(peer = %peer.addr, interface = %peer.interface, %tags, "request refused: 420");
            }
            self.respond_stateless(m, peer, reply, 420, |tag| {
                respond::bad_extension(m, &tags, Some(peer.addr), tag)
            });
            return false;
        }
        true
    }

    /// A datagram over `max_message_size` (streams enforce it while framing): 513 when it
    /// is a request that can be answered.
    pub(super) fn refuse_oversize(&self, m: &Message, peer: &Peer, reply: &ReplyTo) {
        if crate::lograte::LOGS.admit(crate::lograte::Noisy::RequestRefused, peer.addr.ip()) {
            tracing::info!(peer = %peer.addr, interface = %peer.interface, size = m.bytes().len(), "datagram over max_message_size: 513");
        }
        if m.is_request() && m.top_via().is_some() {
            self.respond_stateless(m, peer, reply, 513, |tag| {
                build::response(m, 513, "Message Too Large", Some(peer.addr), Some(tag), &[])
            });
        }
    }

    /// A message that does not parse: a request whose header block still names a Via is
    /// answered (400, or 505 for another SIP version); anything else has nowhere to go.
    pub(super) fn refuse_unparseable(
        &self,
        raw: &Bytes,
        e: &crate::sip::ParseError,
        peer: &Peer,
        reply: &ReplyTo,
    ) {
        match Message::reply_head(raw) {
            Some(head) => {
                let status = e.status();
                if crate::lograte::LOGS.admit(crate::lograte::Noisy::Unparseable, peer.addr.ip()) {
                    tracing::info!(peer = %peer.addr, interface = %peer.interface, transport = %peer.transport, reason = %e, status, "request refused: unparseable");
                }
                // The head is shorter than what arrived; the budget is what arrived.
                let budget = datagram_budget(reply, &head, peer.interface).map(|_| raw.len());
                self.send_local_response(&head, budget, peer, reply, status, |tag| {
                    respond::bad_request(&head, e, Some(peer.addr), tag)
                });
            }
            None => {
                if crate::lograte::LOGS.admit(crate::lograte::Noisy::Unparseable, peer.addr.ip()) {
                    tracing::info!(peer = %peer.addr, interface = %peer.interface, transport = %peer.transport, reason = %e, "message dropped: unparseable");
                }
            }
        }
    }

    /// A stream whose framing failed (it closes after this): 400 or 513 when the header
    /// block is readable, parsed as if it had no body.
    pub(super) fn refuse_unframed(&self, head: &Bytes, err: FrameError, peer: &Peer, reply: &ReplyTo) {
        let (status, reason) = match err {
            FrameError::TooLarge { .. } => (513, "Message Too Large"),
            _ => (400, "Bad Request"),
        };
        if crate::lograte::LOGS.admit(crate::lograte::Noisy::FramingFailed, peer.addr.ip()) {
            tracing::info!(peer = %peer.addr, interface = %peer.interface, reason = %err, status, "stream framing failed; closing");
        }
        if let Some(m) = Message::reply_head(head) {
            let tag = self.next_tag();
            let phrase = if status == 513 {
                reason.to_string()
            } else {
                format!("{reason} - {err}")
            };
            let bytes = build::response(&m, status, &phrase, Some(peer.addr), Some(&tag), &[]);
            self.metrics
                .message(peer.interface, Direction::Out, m.method());
            self.metrics.response(status);
            let _ = reply.send(bytes.freeze());
        }
    }
}

/// The Proxy-Require option tags of a request, when it has any: the edge implements no
/// proxy extension, so any tag is refused with 420 (RFC 3261 §16.3 step 5). ACK and CANCEL
/// are exempt, since they cannot be answered on their own.
pub(super) fn unsupported_proxy_require(m: &Message) -> Option<String> {
    if matches!(m.method(), Method::Ack | Method::Cancel) {
        return None;
    }
    let tags: Vec<&str> = m
        .values(HeaderName::ProxyRequire)
        .into_iter()
        .map(|(_, r)| m.text(r))
        .filter(|t| !t.is_empty())
        .collect();
    (!tags.is_empty()).then(|| tags.join(", "))
}
