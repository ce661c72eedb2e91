//! The production DNS path end to end: hickory-resolver against the lab zone served by
//! hickory-server on an ephemeral loopback port.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UdpSocket};

use super::*;

const LAB_ZONE: &str = include_str!("../../config/lab.zone");

/// Generous for loopback, short enough that a broken test fails fast.
const TIMEOUT: Duration = Duration::from_millis(500);

/// Serves `zone` on 127.0.0.1, UDP and (when the same port is free) TCP, since the
/// resolver expects both on one port.
async fn serve(zone: &str) -> LabDnsServer {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind(udp.local_addr().unwrap()).await.ok();
    LabDnsServer::start(zone, None, udp, tcp).unwrap()
}

fn resolver(server: &LabDnsServer) -> HickoryResolver {
    HickoryResolver::with_name_servers(&[server.udp_addr()], TIMEOUT).unwrap()
}

fn srv_name(domain: &str) -> String {
    format!("_sipfederationtls._tcp.{domain}")
}

#[tokio::test]
async fn lab_zone_answers_design_srv_records() {
    let server = serve(LAB_ZONE).await;
    assert_eq!(server.zones(), ["."]);
    let dns = resolver(&server);

    let fabrikam = dns.srv(&srv_name("fabrikam.test")).await.unwrap();
    assert_eq!(
        fabrikam,
        vec![SrvTarget::new(10, 100, 5061, "sip.fabrikam.test")]
    );
    assert!(same_domain(&fabrikam[0].target, "fabrikam.test"));

    for provider_domain in ["msn.com", "live.com", "hotmail.com", "outlook.com"] {
        let targets = dns.srv(&srv_name(provider_domain)).await.unwrap();
        assert_eq!(targets.len(), 1, "{provider_domain}");
        assert_eq!(targets[0].target, "federation.messenger.msn.com");
        assert_eq!(targets[0].port, 5061);
    }

    let tailspin = dns.srv(&srv_name("tailspin.test")).await.unwrap();
    assert_eq!(tailspin[0].target, "sipfed.online.lync.com");

    let badsrv = dns.srv(&srv_name("badsrv.test")).await.unwrap();
    assert_eq!(badsrv[0].target, "sip.elsewhere.test");
    assert!(!same_domain(&badsrv[0].target, "badsrv.test"));

    server.shutdown().await;
}

#[tokio::test]
async fn lab_zone_answers_design_addresses() {
    let server = serve(LAB_ZONE).await;
    let dns = resolver(&server);
    let expected = [
        ("accessedge.contoso.test", "127.0.0.1"),
        ("edge-int.contoso.test", "127.0.0.2"),
        ("pool.contoso.test", "127.0.0.1"),
        ("sip.fabrikam.test", "127.0.0.3"),
        ("federation.messenger.msn.com", "127.0.0.4"),
        ("sipfed.online.lync.com", "127.0.0.5"),
        ("sip.northwind.test", "127.0.0.6"),
        ("sip.adatum.test", "127.0.0.7"),
        ("sip.elsewhere.test", "127.0.0.8"),
    ];
    for (host, addr) in expected {
        let addrs = dns.ip(host).await.unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(addrs, vec![addr.parse::<IpAddr>().unwrap()], "{host}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn missing_names_are_no_records_with_the_soa_negative_ttl() {
    let server = serve(LAB_ZONE).await;
    let dns = resolver(&server);

    let err = dns.srv(&srv_name("nowhere.test")).await.unwrap_err();
    assert!(err.is_no_records(), "{err}");
    assert_eq!(err.name(), "_sipfederationtls._tcp.nowhere.test");

    // NXDOMAIN carries the zone's SOA, whose minimum (60 s) is the negative TTL.
    let answer = dns.srv_records(&srv_name("nowhere.test")).await.unwrap();
    assert_eq!(
        answer,
        Answer::NoRecords {
            negative_ttl: Some(Duration::from_secs(60))
        }
    );

    // NODATA: the name exists, but not with this type.
    assert!(dns
        .srv("sip.fabrikam.test")
        .await
        .unwrap_err()
        .is_no_records());
    assert!(dns.ip("nowhere.test").await.unwrap_err().is_no_records());
    // Names outside the lab are NXDOMAIN too: the lab is authoritative for ".".
    assert!(dns.ip("example.com").await.unwrap_err().is_no_records());
    server.shutdown().await;
}

#[tokio::test]
async fn answers_carry_the_record_ttl() {
    let server = serve(LAB_ZONE).await;
    let dns = resolver(&server);
    match dns.srv_records(&srv_name("fabrikam.test")).await.unwrap() {
        Answer::Records { ttl, .. } => assert_eq!(ttl, Duration::from_secs(300)),
        other => panic!("unexpected {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn silent_server_times_out_within_the_configured_timeout() {
    // Bound but never read: queries vanish, as with a dead or filtered server.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let timeout = Duration::from_millis(300);
    let dns = HickoryResolver::with_name_servers(&[silent.local_addr().unwrap()], timeout).unwrap();

    let started = Instant::now();
    let err = dns.srv(&srv_name("fabrikam.test")).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, ResolveError::Timeout { .. }), "{err:?}");
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
}

#[tokio::test]
async fn caching_resolver_over_hickory_asks_once() {
    let server = serve(LAB_ZONE).await;
    let dns = CachingResolver::new(resolver(&server), 16);
    for _ in 0..3 {
        dns.srv(&srv_name("northwind.test")).await.unwrap();
        assert!(dns
            .srv(&srv_name("nowhere.test"))
            .await
            .unwrap_err()
            .is_no_records());
    }
    assert_eq!(
        dns.stats(),
        DnsStats {
            lookups: 6,
            hits: 4,
            misses: 2
        }
    );
    server.shutdown().await;
}

#[tokio::test]
async fn ordered_lab_srv_with_failover_targets() {
    // Tests bring their own zones; here two targets of different priority.
    let zone = "\
$ORIGIN fabrikam.test.
$TTL 60
@ IN SOA ns hostmaster 1 3600 600 86400 30
@ IN NS ns
ns IN A 127.0.0.1
_sipfederationtls._tcp IN SRV 20 0 5061 sip2
_sipfederationtls._tcp IN SRV 10 0 5061 sip1
sip1 IN A 127.0.0.3
sip2 IN A 127.0.0.9
";
    let server = serve(zone).await;
    let dns = resolver(&server);
    let records = dns.srv(&srv_name("fabrikam.test")).await.unwrap();
    let ordered = order_srv(records, &mut rand::rng());
    let targets: Vec<&str> = ordered.iter().map(|t| t.target.as_str()).collect();
    assert_eq!(targets, ["sip1.fabrikam.test", "sip2.fabrikam.test"]);
    server.shutdown().await;
}

#[tokio::test]
async fn one_file_may_hold_several_zones() {
    let zone = "\
$TTL 60
fabrikam.test. IN SOA ns.fabrikam.test. hostmaster.fabrikam.test. 1 3600 600 86400 30
fabrikam.test. IN NS ns.fabrikam.test.
sip.fabrikam.test. IN A 127.0.0.3
msn.com. IN SOA ns.msn.com. hostmaster.msn.com. 1 3600 600 86400 30
msn.com. IN NS ns.msn.com.
_sipfederationtls._tcp.msn.com. IN SRV 10 100 5061 federation.messenger.msn.com.
federation.messenger.msn.com. IN A 127.0.0.4
";
    let server = serve(zone).await;
    let mut zones = server.zones().to_vec();
    zones.sort();
    assert_eq!(zones, ["fabrikam.test.", "msn.com."]);
    let dns = resolver(&server);
    assert_eq!(
        dns.ip("sip.fabrikam.test").await.unwrap(),
        vec![IpAddr::from([127, 0, 0, 3])]
    );
    assert_eq!(
        dns.srv(&srv_name("msn.com")).await.unwrap()[0].target,
        "federation.messenger.msn.com"
    );
    assert!(dns.ip("nothing.msn.com").await.unwrap_err().is_no_records());
    server.shutdown().await;
}

#[tokio::test]
async fn origin_hint_resolves_relative_names() {
    let zone = "\
@ 60 IN SOA ns hostmaster 1 3600 600 86400 30
sip 60 IN A 127.0.0.6
";
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = LabDnsServer::start(zone, Some("northwind.test."), udp, None).unwrap();
    assert_eq!(server.tcp_addr(), None);
    let dns = resolver(&server);
    assert_eq!(
        dns.ip("sip.northwind.test").await.unwrap(),
        vec![IpAddr::from([127, 0, 0, 6])]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bad_zone_files_are_refused() {
    let start = |zone: &'static str| async move {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        LabDnsServer::start(zone, None, udp, None)
            .map(|_| ())
            .unwrap_err()
    };
    let no_soa = start("sip.fabrikam.test. 60 IN A 127.0.0.3\n").await;
    assert!(matches!(no_soa, ZoneError::NoSoa), "{no_soa}");

    let outside = start(
        "fabrikam.test. 60 IN SOA ns.fabrikam.test. h.fabrikam.test. 1 1 1 1 1\n\
         sip.northwind.test. 60 IN A 127.0.0.6\n",
    )
    .await;
    assert!(
        matches!(outside, ZoneError::OutsideZones { .. }),
        "{outside}"
    );

    let garbage = start("this is not a zone file\n").await;
    assert!(matches!(garbage, ZoneError::Parse { .. }), "{garbage}");
}

#[tokio::test]
async fn resolvers_are_usable_as_trait_objects() {
    let server = serve(LAB_ZONE).await;
    let dns: std::sync::Arc<dyn Resolve> =
        std::sync::Arc::new(CachingResolver::new(resolver(&server), 4));
    assert_eq!(
        dns.ip("sip.northwind.test").await.unwrap(),
        vec![IpAddr::from([127, 0, 0, 6])]
    );
    server.shutdown().await;
}

#[test]
fn with_name_servers_needs_a_server() {
    let none: [SocketAddr; 0] = [];
    assert!(matches!(
        HickoryResolver::with_name_servers(&none, TIMEOUT),
        Err(BuildError::NoNameServers)
    ));
}

#[test]
fn srv_target_is_normalized() {
    let t = SrvTarget::new(1, 2, 5061, "SIP.Fabrikam.TEST.");
    assert_eq!(t.target, "sip.fabrikam.test");
}

#[test]
fn resolve_error_messages_are_lowercase() {
    let e = ResolveError::Other {
        name: "x.test".into(),
        detail: "refused".into(),
    };
    assert_eq!(e.to_string(), "dns lookup for x.test failed: refused");
    assert!(!e.is_no_records());
}
