//! `policy::decide` on a large snapshot: 10 000 allowed and 10 000 blocked domains and
//! 100 000 users with per-user policies, for the four shapes of request an Access Edge
//! decides most. Each scenario's decision is checked once before it is measured, so the
//! bench cannot time a refusal it did not mean to.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use sipedge::config::{AllowedDomain, BlockedDomain, Snapshot, UserGrant, VerificationLevel};
use sipedge::policy::{decide, Decision, DnsFacts, RequestFacts, SrvAnswer, SrvTarget};
use sipedge::transport::{Interface, Peer, PeerIdentity, Transport};

const DOMAINS: usize = 10_000;
const USERS: usize = 100_000;
/// Per-user tags, assigned round-robin; user `u{n}` with `n % 3 == 0` may reach everything.
const TAGS: [&str; 3] = ["Everything", "NoPublicCloud", "NoFederation"];

/// Added to `config::TCP_EDGE`: the policy tagged users get.
const POLICY: &str = r#"
[[external_access_policy]]
identity = "Everything"
enable_federation_access = true
enable_public_cloud_access = true
enable_public_cloud_audio_video_access = true
enable_outside_access = true
"#;

/// The lab's federation sections (providers, fabrikam, adatum, the tags) plus the bulk
/// lists; the lists are appended to the typed snapshot rather than parsed from TOML so
/// the bench measures the decision, not the config parser.
fn big_snapshot() -> Snapshot {
    let text = format!(
        "{}\n{POLICY}\n{}",
        sipedge::config::TCP_EDGE,
        sipedge::config::lab_federation_sections()
    );
    let mut snap =
        Snapshot::from_toml(&text, Path::new(".")).unwrap_or_else(|e| panic!("bench config: {e}"));
    let fed = &mut snap.federation;
    for i in 0..DOMAINS {
        fed.allowed_domains.push(AllowedDomain {
            domain: format!("partner{i:05}.test"),
            proxy_fqdn: Some(format!("sip.partner{i:05}.test")),
            proxy_port: sipedge::config::FEDERATION_PORT,
            verification_level: VerificationLevel::AlwaysVerifiable,
            mark_for_monitoring: false,
            comment: None,
        });
        fed.blocked_domains.push(BlockedDomain {
            domain: format!("blocked{i:05}.test"),
            comment: None,
        });
    }
    for i in 0..USERS {
        fed.users.push(UserGrant {
            user: format!("u{i:06}@contoso.test"),
            policy: Some(TAGS[i % TAGS.len()].to_string()),
            site: None,
            contacts: Vec::new(),
            hosting_provider: None,
        });
    }
    assert!(fed.conflicts().is_empty(), "{:?}", fed.conflicts().first());
    snap
}

fn peer(interface: Interface, name: &str) -> Peer {
    Peer {
        interface,
        transport: Transport::Tls,
        addr: "127.0.0.9:40000".parse::<SocketAddr>().expect("literal"),
        identity: PeerIdentity::new([name]),
    }
}

fn request<'a>(from: (&'a str, &'a str), to: (&'a str, &'a str)) -> RequestFacts<'a> {
    RequestFacts {
        method: "MESSAGE",
        uri_user: Some(to.0),
        uri_host: to.1,
        from_user: Some(from.0),
        from_host: from.1,
        to_user: Some(to.0),
        to_host: to.1,
        max_forwards: Some(70),
        ..RequestFacts::default()
    }
}

/// The last entries of each list: the worst case for a scan, an ordinary one for a hash.
const PARTNER: &str = "partner09999.test";
const BLOCKED: &str = "blocked09999.test";
const USER: &str = "u099999";

fn decision(c: &mut Criterion) {
    let snap = big_snapshot();
    let dns = DnsFacts::none().with_srv(
        "live.com",
        SrvAnswer::Records(vec![SrvTarget::new(
            0,
            0,
            5061,
            "federation.messenger.msn.com",
        )]),
    );
    let pool = peer(Interface::Internal, "pool.contoso.test");
    let partner = peer(Interface::External, "sip.partner09999.test");
    let cases: [(&str, RequestFacts<'_>, &Peer, &str); 4] = [
        (
            "inbound partner MESSAGE",
            request(("fay", PARTNER), (USER, "contoso.test")),
            &partner,
            "pool",
        ),
        (
            "outbound to an allowed domain",
            request((USER, "contoso.test"), ("fay", PARTNER)),
            &pool,
            "forward",
        ),
        (
            "outbound to a public provider",
            request((USER, "contoso.test"), ("x", "live.com")),
            &pool,
            "forward",
        ),
        (
            "outbound to a blocked domain",
            request((USER, "contoso.test"), ("x", BLOCKED)),
            &pool,
            "1903",
        ),
    ];
    let mut group = c.benchmark_group("decide (10k allowed, 10k blocked, 100k users)");
    for (name, req, peer, expect) in &cases {
        let d = decide(req, peer, &snap, &dns);
        let got = match &d {
            Decision::Forward(f) if f.exit == Interface::Internal => "pool".to_string(),
            Decision::Forward(_) => "forward".to_string(),
            Decision::Reject(r) => r.code().map_or(r.status.to_string(), |c| c.to_string()),
            Decision::AnswerOptions => "options".to_string(),
        };
        assert_eq!(got, *expect, "{name}: {d:?}");
        group.bench_function(*name, |b| {
            b.iter(|| decide(black_box(req), peer, &snap, &dns))
        });
    }
    group.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
