//! `decide(request, peer, snapshot)`: what the edge does with one request.
//!
//! Pure (no I/O, no clock), so tests drive it with literals. The proxy extracts the few
//! facts the decision needs (`RequestFacts`) from the message and acts on the `Decision`.

mod reject;

pub use reject::{Diagnostics, Rejection};

use crate::config::{NextHop, Snapshot};
use crate::transport::{Interface, Peer};

/// The facts about a request that routing and policy look at, borrowed from the message.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts<'a> {
    /// Method token as sent (`MESSAGE`, `INVITE`…).
    pub method: &'a str,
    /// Request-URI user part, if any.
    pub uri_user: Option<&'a str>,
    /// Request-URI host (lowercase; IPv6 without brackets).
    pub uri_host: &'a str,
    /// From URI user part, if any.
    pub from_user: Option<&'a str>,
    /// From URI host (lowercase).
    pub from_host: &'a str,
    /// To URI host (lowercase).
    pub to_host: &'a str,
    /// Max-Forwards as received; `None` when absent.
    pub max_forwards: Option<u32>,
    /// A Via of ours with this request's loop key was found (RFC 3261 §16.3 step 4).
    pub looped: bool,
    /// When Route entries naming this edge were popped: the interface the last of them
    /// names, which is where the in-dialog request leaves.
    pub routed_exit: Option<Interface>,
    /// Whether a Route header is left after popping ours (the next hop is its first entry).
    pub has_remaining_route: bool,
    /// The Request-URI names the edge itself (no user part, host = one of our FQDNs or addresses).
    pub addressed_to_edge: bool,
}

/// What the edge does with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Relay it.
    Forward(Forward),
    /// Refuse it with this status and diagnostics.
    Reject(Rejection),
    /// Answer it ourselves (OPTIONS to the edge): 200 with Allow and Supported.
    AnswerOptions,
}

/// Where and how a request is relayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    /// The interface the request leaves through.
    pub exit: Interface,
    /// How the next hop is found.
    pub route: Route,
    /// Which rule chose the route, for logs and metrics.
    pub rule: &'static str,
}

/// How the next hop of a forwarded request is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A configured next hop: the pool, a static route, the default route.
    NextHop(NextHop),
    /// The first remaining Route entry, or else the Request-URI (loose routing, in-dialog).
    RequestTarget,
}

/// Decides what the edge does with one request from `peer`.
pub fn decide(req: &RequestFacts<'_>, peer: &Peer, snap: &Snapshot) -> Decision {
    if let Err(r) = check_hops(req) {
        return Decision::Reject(r);
    }
    if req.addressed_to_edge
        && req.method.eq_ignore_ascii_case("OPTIONS")
        && !req.has_remaining_route
    {
        return Decision::AnswerOptions;
    }
    if let Some(exit) = req.routed_exit {
        return Decision::Forward(Forward {
            exit,
            route: Route::RequestTarget,
            rule: "record-route",
        });
    }
    choose_route(req, peer, snap)
}

/// Max-Forwards and loop checks (RFC 3261 §16.3 steps 3 and 4).
fn check_hops(req: &RequestFacts<'_>) -> Result<(), Rejection> {
    if req.max_forwards == Some(0)
        && !(req.addressed_to_edge && req.method.eq_ignore_ascii_case("OPTIONS"))
    {
        return Err(Rejection::too_many_hops());
    }
    if req.looped {
        return Err(Rejection::loop_detected());
    }
    Ok(())
}

/// Static routing: local domains go to the pool, others to their route or the default.
fn choose_route(req: &RequestFacts<'_>, peer: &Peer, snap: &Snapshot) -> Decision {
    if snap.is_local_domain(req.uri_host) {
        return Decision::Forward(Forward {
            exit: Interface::Internal,
            route: Route::NextHop(snap.pool.clone()),
            rule: "local-domain",
        });
    }
    if peer.interface == Interface::External {
        return Decision::Reject(Rejection::relay_denied(req.uri_host));
    }
    if let Some(r) = snap
        .routes
        .iter()
        .find(|r| r.domain.eq_ignore_ascii_case(req.uri_host))
    {
        return Decision::Forward(Forward {
            exit: Interface::External,
            route: Route::NextHop(r.next_hop.clone()),
            rule: "static-route",
        });
    }
    match &snap.default_route {
        Some(hop) => Decision::Forward(Forward {
            exit: Interface::External,
            route: Route::NextHop(hop.clone()),
            rule: "default-route",
        }),
        None => Decision::Reject(Rejection::no_route(req.uri_host)),
    }
}
