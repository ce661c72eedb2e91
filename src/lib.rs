//! sipedge: a SIP/TLS proxy that plays the Access Edge of a Lync Server 2013 /
//! Skype for Business deployment in a lab.
//!
//! # Layout
//! - `config`: TOML → typed, validated `Snapshot`; `Live` swaps snapshots atomically.
//! - `sip`: zero-copy framing and typed views of the headers a proxy touches.
//! - `peer`: interfaces, transports, peers and their proven names: data below the I/O.
//! - `transport`: listeners, stream and datagram tasks, the outbound connection pool.
//! - `txn`: sans-I/O client and server transaction state machines (RFC 3261 §17).
//! - `policy`: `decide(request, peer, snapshot)`, the pure routing and policy decision.
//! - `proxy`: the pipeline that ties them together; `respond` is the only place a
//!   failure becomes a SIP response.
//! - `dns`: the `Resolve` trait over hickory, SRV ordering, a TTL cache, the lab zone server.
//! - `tls`: rustls configurations and peer identity.
//! - `lab`: lab certificates, the embedded lab config, the topology table, simulated peers,
//!   PIC provisioning, run-time faults.
//! - `lograte`: log lines a peer can cause, bounded per reason and source, the rest counted.
//! - `preflight`: what `run` would refuse at start (files, shared ports), for `check-config`.
//! - `send`: `sipedge send`, one request into a running edge and what came back.
//! - `check_partner`: `sipedge check-partner` / `Test-CsFederatedPartner`, the chain to a
//!   federated domain step by step (SRV, same-domain rule, address, TCP, TLS, OPTIONS).
//! - `trace`: what is recorded of every message: pcap, HEPv3, the TLS key log, and the
//!   per-call ring drawn as a ladder by `sipedge admin trace`.
//! - `fuzzing`: the entry points of the cargo-fuzz targets in `fuzz/`, replayed by `cargo test`.
//!
//! # The path of a request
//! Transports deliver every message to `proxy::Core` (`transport::Handler`); the proxy
//! reads like the policy, one file and one function per step (`src/proxy/mod.rs`,
//! `Core::on_request`):
//!
//! | step | file | function |
//! |---|---|---|
//! | accept, frame | `transport/listen.rs`, `sip/framing.rs` | `listen::serve`, `framing::scan` |
//! | 1. sanity | `proxy/sanity.rs` | `Core::is_sane` (and `refuse_unparseable`, `refuse_unframed`) |
//! | 2. restore the hidden route | `proxy/hidden.rs` | `Core::restore_hidden_route` |
//! | 3. match a transaction | `proxy/transaction.rs` | `Core::match_transaction` |
//! | 4. in a dialog or not | `proxy/dialog.rs` | `Core::route_plan` |
//! | 5. decide | `proxy/decide.rs`, `policy/mod.rs` | `Core::decide`, `policy::decide` |
//! | 6. limits | `proxy/limits.rs` | `Core::admit_limits` |
//! | 7. rewrite | `proxy/rewrite.rs` | `Core::rewrite_for` |
//! | 8. forward | `proxy/forward.rs` | `Core::forward` |
//! | refusals | `proxy/respond.rs` | `Core::reject`, `respond::rejection` |
//!
//! Responses: `proxy/response.rs` (`Core::on_response`: match the client transaction,
//! restore what topology hiding kept, mark trust, relay); timers: `proxy/timers.rs`.

/// Declares the modules that read data from the network, each with `unwrap`/`expect`
/// denied: bad input must become a typed error or a SIP response, never a panic.
macro_rules! network_facing {
    ($($name:ident),* $(,)?) => {
        $(
            #[deny(
                clippy::unwrap_used,
                clippy::expect_used,
                reason = "this module reads data from the network: bad input must become a typed error or a SIP response, never a panic"
            )]
            pub mod $name;
        )*
    };
}

network_facing!(
    check_partner,
    dns,
    fuzzing,
    policy,
    proxy,
    sip,
    transport,
    txn
);

pub mod admin;
pub mod config;
pub mod edge;
pub mod explain;
pub mod lab;
pub mod load;
pub mod logfmt;
pub mod lograte;
pub mod metrics;
pub mod peer;
pub mod preflight;
pub mod send;
pub mod tls;
pub mod tls_store;
pub mod trace;
