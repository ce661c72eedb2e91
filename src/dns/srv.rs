//! RFC 2782 target ordering and the Access Edge's same-domain rule for SRV targets.
//!
//! Both are pure functions so the policy and failover code can be tested with literals;
//! randomness comes in as an argument.

use rand::Rng;

use super::{normalize_name, SrvTarget};

/// Orders SRV records the way RFC 2782 says a client tries them.
///
/// Ascending priority; within one priority, a weighted random order: the remaining
/// records form a pool with the weight-0 ones first, a number is drawn uniformly from
/// `0..=sum of weights`, and the first record whose running sum reaches it goes next.
/// Weight-0 records therefore still appear, almost always after the weighted ones.
/// Deterministic for a given RNG, so tests pass a seeded one.
pub fn order_srv<R: Rng + ?Sized>(mut records: Vec<SrvTarget>, rng: &mut R) -> Vec<SrvTarget> {
    // Stable sort: equal weights keep the server's order, as the RFC leaves it free.
    records.sort_by_key(|r| r.priority);
    let mut ordered = Vec::with_capacity(records.len());
    let mut rest = records.into_iter().peekable();
    while let Some(first) = rest.next() {
        let mut group = vec![first];
        while let Some(next) = rest.next_if(|r| r.priority == group[0].priority) {
            group.push(next);
        }
        order_group(group, rng, &mut ordered);
    }
    ordered
}

/// True when `target` is exactly one label under `domain`: the Access Edge's
/// "top-level suffix match" for SRV targets.
///
/// For `contoso.com`, `sip.contoso.com` and `sipfed.contoso.com` match, while
/// `sip.contoso-edge.com` (another domain) and `sip.it.contoso.com` (a sub-domain) do
/// not. Case and a trailing dot are ignored. Public providers are exempt by policy
/// (`msn.com` → `federation.messenger.msn.com`), which is checked before this rule.
pub fn same_domain(target: &str, domain: &str) -> bool {
    let target = normalize_name(target);
    let domain = normalize_name(domain);
    if domain.is_empty() {
        return false;
    }
    match target.strip_suffix(domain.as_str()) {
        Some(head) => head
            .strip_suffix('.')
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => false,
    }
}

/// Appends one priority group to `out` in RFC 2782 weighted order.
fn order_group<R: Rng + ?Sized>(group: Vec<SrvTarget>, rng: &mut R, out: &mut Vec<SrvTarget>) {
    let (mut pool, weighted): (Vec<_>, Vec<_>) = group.into_iter().partition(|r| r.weight == 0);
    pool.extend(weighted);
    while !pool.is_empty() {
        let total: u32 = pool.iter().map(|r| u32::from(r.weight)).sum();
        let draw = rng.random_range(0..=total);
        let mut running = 0u32;
        // With all weights zero the draw is 0 and the first record is taken.
        let pick = pool
            .iter()
            .position(|r| {
                running += u32::from(r.weight);
                running >= draw
            })
            .unwrap_or(pool.len() - 1);
        out.push(pool.remove(pick));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn t(priority: u16, weight: u16, target: &str) -> SrvTarget {
        SrvTarget::new(priority, weight, 5061, target)
    }

    #[test]
    fn lower_priority_always_comes_first() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..100 {
            let ordered = order_srv(
                vec![
                    t(20, 100, "c.test"),
                    t(10, 1, "a.test"),
                    t(30, 0, "d.test"),
                    t(10, 50, "b.test"),
                ],
                &mut rng,
            );
            let priorities: Vec<u16> = ordered.iter().map(|r| r.priority).collect();
            assert_eq!(priorities, vec![10, 10, 20, 30]);
        }
    }

    #[test]
    fn weights_90_10_put_the_heavy_target_first_about_90_percent() {
        let mut rng = StdRng::seed_from_u64(2782);
        let records = vec![t(10, 10, "light.test"), t(10, 90, "heavy.test")];
        let draws = 10_000;
        let heavy_first = (0..draws)
            .filter(|_| order_srv(records.clone(), &mut rng)[0].target == "heavy.test")
            .count();
        let share = heavy_first as f64 / draws as f64;
        assert!((0.85..=0.95).contains(&share), "heavy first in {share}");
    }

    #[test]
    fn weight_zero_targets_are_kept() {
        let mut rng = StdRng::seed_from_u64(1);
        let ordered = order_srv(vec![t(10, 0, "zero.test"), t(10, 100, "w.test")], &mut rng);
        assert_eq!(ordered.len(), 2);
        assert!(ordered.iter().any(|r| r.target == "zero.test"));

        let all_zero = order_srv(vec![t(10, 0, "a.test"), t(10, 0, "b.test")], &mut rng);
        assert_eq!(all_zero.len(), 2);
    }

    #[test]
    fn weight_zero_can_still_come_first() {
        // The RFC draws from 0..=sum, so a weight-0 record at the head of the pool wins
        // when the draw is 0: rare, but not never.
        let mut rng = StdRng::seed_from_u64(3);
        let records = vec![t(10, 0, "zero.test"), t(10, 1, "one.test")];
        let zero_first = (0..1000)
            .filter(|_| order_srv(records.clone(), &mut rng)[0].target == "zero.test")
            .count();
        assert!(
            (300..=700).contains(&zero_first),
            "zero first {zero_first} times"
        );
    }

    #[test]
    fn same_seed_same_order() {
        let records: Vec<_> = (0..8)
            .map(|i| t(10, 10 + i, &format!("h{i}.test")))
            .collect();
        let a = order_srv(records.clone(), &mut StdRng::seed_from_u64(42));
        let b = order_srv(records, &mut StdRng::seed_from_u64(42));
        assert_eq!(a, b);
    }

    #[test]
    fn empty_input_gives_empty_order() {
        assert!(order_srv(Vec::new(), &mut StdRng::seed_from_u64(0)).is_empty());
    }

    #[test]
    fn same_domain_accepts_one_label_under_the_domain() {
        assert!(same_domain("sip.contoso.com", "contoso.com"));
        assert!(same_domain("sipfed.contoso.com", "contoso.com"));
        assert!(same_domain("SIP.Contoso.COM.", "contoso.com"));
        assert!(same_domain("sip.fabrikam.test", "fabrikam.test."));
    }

    #[test]
    fn same_domain_rejects_other_domains_and_sub_domains() {
        assert!(!same_domain("sip.contoso-edge.com", "contoso.com"));
        assert!(!same_domain("sip.it.contoso.com", "contoso.com"));
        assert!(!same_domain("sipcontoso.com", "contoso.com"));
        assert!(!same_domain("contoso.com", "contoso.com"));
        assert!(!same_domain(".contoso.com", "contoso.com"));
        assert!(!same_domain("sip.contoso.com", ""));
    }

    #[test]
    fn lab_srv_targets_follow_design() {
        assert!(same_domain("sip.fabrikam.test", "fabrikam.test"));
        assert!(!same_domain("sip.elsewhere.test", "badsrv.test"));
        // Providers are matched by policy before this rule, never by it.
        assert!(!same_domain("federation.messenger.msn.com", "msn.com"));
    }
}
