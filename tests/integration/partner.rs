//! `Test-CsFederatedPartner -Domain D` typed verbatim into the real `sipedge admin`
//! against the lab (config/lab.toml on ephemeral ports), `check_with_config` (what
//! `sipedge check-partner` runs, with its own resolver and TLS material) against the same
//! lab, and the `sipedge check-partner` binary without any edge: every lab peer passes and
//! is seen receiving the OPTIONS; each broken route fails with the code the edge sends.

use std::process::Command;

use sipedge::check_partner::{self, Outcome, PartnerReport};
use sipedge::lab::run::Lab;
use sipedge::lab::topology::Role;

use crate::faults::{admin, fault};
use crate::lab::{alice_sends, arrived_marked, im_to, repo, start_with};
use crate::support::*;

async fn lab() -> Lab {
    start_with("config/lab.toml", |_| {}).await
}

/// `sipedge admin Test-CsFederatedPartner -Domain <domain>`: (exit 0?, stdout + stderr).
async fn test_partner(lab: &Lab, domain: &str) -> (bool, String) {
    let (ok, out, err) = admin(lab, &["Test-CsFederatedPartner", "-Domain", domain]).await;
    (ok, format!("{out}{err}"))
}

/// The report of `check_with_config` on the running lab's snapshot (its zone, its
/// certificates), as `sipedge check-partner` would build it.
async fn check_alone(lab: &Lab, domain: &str) -> PartnerReport {
    let snap = lab.edge().live().load();
    check_partner::check_with_config(domain, &snap)
        .await
        .expect("the check runs")
}

fn step<'a>(report: &'a PartnerReport, name: &str) -> &'a check_partner::Step {
    report
        .steps
        .iter()
        .rev()
        .find(|s| s.step == name)
        .unwrap_or_else(|| panic!("no step {name}: {}", report.render()))
}

#[tokio::test]
async fn fabrikam_skype_and_northwind_pass_and_each_peer_receives_the_options() {
    let lab = lab().await;
    for (domain, role, route, srv) in [
        (
            "fabrikam.test",
            Role::Partner,
            "allowed domain fabrikam.test with ProxyFqdn sip.fabrikam.test",
            Outcome::Skip,
        ),
        (
            "live.com",
            Role::Skype,
            "public provider Skype",
            Outcome::Pass,
        ),
        (
            "northwind.test",
            Role::Discovered,
            "discovered partner northwind.test",
            Outcome::Pass,
        ),
    ] {
        let peer = lab.peer(role);
        let before = peer.received().len();
        let (ok, out) = test_partner(&lab, domain).await;
        assert!(ok, "{domain}: {out}");
        eprintln!("{out}");
        assert!(out.contains("Result: PASS"), "{out}");
        assert!(out.contains(route), "{domain}: {out}");
        for s in [
            "policy",
            "address",
            "tcp",
            "tls",
            "cert-chain",
            "cert-expiry",
            "cert-names",
            "options",
        ] {
            assert!(out.contains(&format!("  pass  {s:<11}")), "{s}: {out}");
        }
        let got = arrived_marked(peer, |m| {
            m.method == "OPTIONS" && m.from.contains("check-partner@contoso.test")
        })
        .await;
        assert_eq!(got.uri, format!("sip:{domain}"));

        // The same walk without the edge's resolver and TLS (check-partner's own).
        let report = check_alone(&lab, domain).await;
        assert!(report.passed, "{}", report.render());
        assert_eq!(step(&report, "srv").result, srv, "{}", report.render());
        assert_eq!(peer.received().len(), before + 2, "one OPTIONS per walk");
    }
    for (domain, same_domain) in [
        ("northwind.test", "in northwind.test: sip.northwind.test"),
        (
            "live.com",
            "federation.messenger.msn.com is the ProxyFqdn of the provider Skype",
        ),
    ] {
        let report = check_alone(&lab, domain).await;
        let detail = &step(&report, "same-domain").detail;
        assert!(detail.contains(same_domain), "{}", report.render());
    }
    lab.shutdown(std::time::Duration::from_millis(200)).await;
}

#[tokio::test]
async fn nowhere_reports_1008_and_badsrv_1009_with_what_to_fix() {
    let lab = lab().await;
    for (domain, code, lines) in [
        (
            "nowhere.test",
            1008,
            [
                "  FAIL  srv",
                "edge answers: 504 Server Time-out, ms-diagnostics: 1008;",
                "fix: publish _sipfederationtls._tcp.nowhere.test",
            ],
        ),
        (
            "badsrv.test",
            1009,
            [
                "  pass  srv",
                "  FAIL  same-domain",
                "fqdn1=\"sip.elsewhere.test",
            ],
        ),
    ] {
        let (ok, out) = test_partner(&lab, domain).await;
        assert!(!ok, "{out}");
        for line in lines {
            assert!(out.contains(line), "{line}: {out}");
        }
        let last = format!("Result: FAIL (ms-diagnostics {code})\n");
        assert!(out.ends_with(&last), "{out}");
        let report = check_alone(&lab, domain).await;
        assert!(!report.passed);
        assert_eq!(report.code(), Some(code), "{}", report.render());
    }
    lab.shutdown(std::time::Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_partner_under_wrong_cert_fails_the_name_check_with_the_1010_the_edge_sends() {
    let lab = lab().await;
    fault(&lab, &["partner", "wrong-cert"]).await;
    let (ok, out) = test_partner(&lab, "fabrikam.test").await;
    assert!(!ok, "{out}");
    assert!(out.contains("  pass  cert-chain"), "{out}");
    assert!(out.contains("  FAIL  cert-names"), "{out}");
    assert!(
        out.contains("the certificate names sip.elsewhere.test, not sip.fabrikam.test"),
        "{out}"
    );
    assert!(
        out.ends_with("Result: FAIL (ms-diagnostics 1010)\n"),
        "{out}"
    );
    eprintln!("{out}");
    let report = check_alone(&lab, "fabrikam.test").await;
    assert_eq!(report.code(), Some(1010), "{}", report.render());

    // What the edge itself answers alice for that partner: the code the check named.
    let r = alice_sends(
        &lab,
        &im_to("sip:fred@fabrikam.test", "wrongcert", "hello fred"),
    )
    .await;
    assert_eq!(status_of(&r), 504, "{r}");
    assert_eq!(diagnostics_code(&r, "ms-diagnostics"), "1010", "{r}");

    fault(&lab, &["partner", "clear"]).await;
    let (ok, out) = test_partner(&lab, "fabrikam.test").await;
    assert!(ok, "{out}");
    lab.shutdown(std::time::Duration::from_millis(200)).await;
}

/// `sipedge check-partner --config <config> --json D`: (exit code, the JSON).
fn check_partner_binary(config: &str, domain: &str) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .args(["check-partner", "--json", "--config"])
        .arg(repo(config))
        .arg(domain)
        .output()
        .expect("run sipedge check-partner");
    let text = String::from_utf8_lossy(&out.stdout);
    let json =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{domain}: not JSON ({e}): {text}"));
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn check_partner_without_an_edge_reports_each_refusal_as_json_and_exits_1() {
    for (config, domain, step, code) in [
        ("config/lab.toml", "nowhere.test", "srv", 1008),
        ("config/lab.toml", "badsrv.test", "same-domain", 1009),
        ("config/lab.toml", "adatum.test", "policy", 1903),
        // Before the seed procedure the Messenger provider is disabled.
        ("config/lab-pre-pic.toml", "live.com", "policy", 1909),
    ] {
        let (status, json) = check_partner_binary(config, domain);
        assert_eq!(status, 1, "{domain}: {json}");
        assert_eq!(json["passed"], false, "{json}");
        assert_eq!(json["code"], code, "{json}");
        let failed: Vec<&serde_json::Value> = json["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .filter(|s| s["result"] == "fail")
            .collect();
        assert_eq!(failed.len(), 1, "{json}");
        assert_eq!(failed[0]["step"], step, "{json}");
        assert_eq!(failed[0]["code"], code, "{json}");
        assert!(
            failed[0]["fix"].as_str().is_some_and(|f| !f.is_empty()),
            "{json}"
        );
    }
}

#[tokio::test]
async fn a_partner_refusing_the_options_fails_the_last_step_with_what_alice_would_get() {
    let lab = lab().await;
    for (words, code) in [
        (&["partner", "status", "486"][..], "1034"),
        (
            &[
                "partner",
                "status",
                "403",
                "--diagnostics",
                "2000;reason=\"Not now\"",
            ],
            "2000",
        ),
    ] {
        fault(&lab, words).await;
        let (ok, out) = test_partner(&lab, "fabrikam.test").await;
        assert!(!ok, "{out}");
        assert!(out.contains("  pass  cert-names"), "{out}");
        assert!(out.contains("  FAIL  options"), "{out}");
        let last = format!("Result: FAIL (ms-diagnostics {code})\n");
        assert!(out.ends_with(&last), "{out}");

        let id = format!("refuse{code}");
        let r = alice_sends(&lab, &im_to("sip:fred@fabrikam.test", &id, "hello fred")).await;
        assert_eq!(status_of(&r), words[2].parse::<u16>().unwrap(), "{r}");
        assert_eq!(diagnostics_code(&r, "ms-diagnostics"), code, "{r}");
    }
    lab.shutdown(std::time::Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_partner_refusing_tls_fails_the_tls_step_and_one_without_an_address_the_address_step() {
    let lab = lab().await;
    for (fault_name, failed, code) in [
        ("refuse-tls", "tls", "1047"),
        ("dns-missing", "address", "1008"),
    ] {
        fault(&lab, &["partner", fault_name]).await;
        let (ok, out) = test_partner(&lab, "fabrikam.test").await;
        assert!(!ok, "{out}");
        assert!(
            out.contains(&format!("  FAIL  {failed:<11}")),
            "{fault_name}: {out}"
        );
        let last = format!("Result: FAIL (ms-diagnostics {code})\n");
        assert!(out.ends_with(&last), "{fault_name}: {out}");

        let id = format!("fault{code}");
        let r = alice_sends(&lab, &im_to("sip:fred@fabrikam.test", &id, "hello fred")).await;
        assert_eq!(status_of(&r), 504, "{r}");
        assert_eq!(
            diagnostics_code(&r, "ms-diagnostics"),
            code,
            "{fault_name}: {r}"
        );
        fault(&lab, &["partner", "clear"]).await;
    }
    lab.shutdown(std::time::Duration::from_millis(200)).await;
}
