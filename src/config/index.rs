//! Hash indexes over the federation lists the decision reads per request: the allowed and
//! blocked domains and the user grants. With 10 000 domains and 100 000 users a linear
//! scan cost tens of microseconds per request; a lookup here costs one hash.
//!
//! The index is a cache beside the plain lists, not a second source of truth: it is
//! built on first use, rebuilt when a list's length changed, and every hit is checked
//! against the list (a miss by hash collision falls back to a scan). A clone starts
//! without one, because a clone is what the admin layer changes.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::federation::{AllowedDomain, BlockedDomain, UserGrant};

/// The cached index of one `Federation`; leave it at its default.
#[derive(Default)]
pub struct LookupIndex(ArcSwapOption<Index>);

impl Clone for LookupIndex {
    fn clone(&self) -> Self {
        // A clone is about to be changed (admin cmdlets); it builds its own on first use.
        LookupIndex::default()
    }
}

impl PartialEq for LookupIndex {
    fn eq(&self, _: &Self) -> bool {
        // A cache: two federations are equal when their lists are.
        true
    }
}

impl fmt::Debug for LookupIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LookupIndex")
    }
}

/// The lists an index is built over, borrowed from `Federation`.
pub(super) struct Lists<'a> {
    pub allowed: &'a [AllowedDomain],
    pub blocked: &'a [BlockedDomain],
    pub users: &'a [UserGrant],
}

impl Lists<'_> {
    fn lens(&self) -> [usize; 3] {
        [self.allowed.len(), self.blocked.len(), self.users.len()]
    }
}

/// Keys are already hashed (case-folded SipHash), so the maps hash them no further.
type Positions = HashMap<u64, usize, BuildHasherDefault<Prehashed>>;

struct Index {
    keys: RandomState,
    /// The list lengths the index was built from; a change means rebuild.
    lens: [usize; 3],
    allowed: Positions,
    blocked: Positions,
    /// Grants for `user@host`.
    users_qualified: Positions,
    /// Grants for a bare user name (any host).
    users_bare: Positions,
}

impl Index {
    fn build(lists: &Lists<'_>) -> Index {
        let keys = RandomState::new();
        let mut ix = Index {
            lens: lists.lens(),
            allowed: Positions::default(),
            blocked: Positions::default(),
            users_qualified: Positions::default(),
            users_bare: Positions::default(),
            keys,
        };
        for (i, a) in lists.allowed.iter().enumerate() {
            // The first entry wins, as with a scan.
            ix.allowed.entry(ix.key(&[&a.domain])).or_insert(i);
        }
        for (i, b) in lists.blocked.iter().enumerate() {
            ix.blocked.entry(ix.key(&[&b.domain])).or_insert(i);
        }
        for (i, g) in lists.users.iter().enumerate() {
            let key = ix.key(&[&g.user]);
            let map = if g.user.contains('@') {
                &mut ix.users_qualified
            } else {
                &mut ix.users_bare
            };
            map.entry(key).or_insert(i);
        }
        ix
    }

    /// The case-folded hash of the concatenated parts, without allocating.
    fn key(&self, parts: &[&str]) -> u64 {
        let mut h = self.keys.build_hasher();
        let mut buf = [0u8; 64];
        for part in parts {
            for chunk in part.as_bytes().chunks(buf.len()) {
                let folded = &mut buf[..chunk.len()];
                folded.copy_from_slice(chunk);
                folded.make_ascii_lowercase();
                h.write(folded);
            }
        }
        h.finish()
    }
}

/// What a probe of one map found.
enum Probe {
    /// No entry has this key.
    Absent,
    /// The entry at this position matches.
    At(usize),
    /// A hash collision: the caller scans.
    Unsure,
}

fn probe(map: &Positions, key: u64, matches: impl Fn(usize) -> bool) -> Probe {
    match map.get(&key) {
        None => Probe::Absent,
        Some(&i) if matches(i) => Probe::At(i),
        Some(_) => Probe::Unsure,
    }
}

impl LookupIndex {
    /// Runs `f` with an index that matches `lists`, building one if needed.
    fn with<R>(&self, lists: &Lists<'_>, f: impl FnOnce(&Index) -> R) -> R {
        let cached = self.0.load();
        if let Some(ix) = cached.as_deref() {
            if ix.lens == lists.lens() {
                return f(ix);
            }
        }
        let fresh = Arc::new(Index::build(lists));
        self.0.store(Some(Arc::clone(&fresh)));
        f(&fresh)
    }

    /// Position of the first allowed-list entry for `domain` (case-insensitive).
    pub(super) fn allowed(&self, lists: &Lists<'_>, domain: &str) -> Option<usize> {
        let same = |i: usize| lists.allowed[i].domain.eq_ignore_ascii_case(domain);
        let found = self.with(lists, |ix| probe(&ix.allowed, ix.key(&[domain]), same));
        match found {
            Probe::Absent => None,
            Probe::At(i) => Some(i),
            Probe::Unsure => (0..lists.allowed.len()).find(|&i| same(i)),
        }
    }

    /// Position of the first blocked-list entry for `domain` (case-insensitive).
    pub(super) fn blocked(&self, lists: &Lists<'_>, domain: &str) -> Option<usize> {
        let same = |i: usize| lists.blocked[i].domain.eq_ignore_ascii_case(domain);
        let found = self.with(lists, |ix| probe(&ix.blocked, ix.key(&[domain]), same));
        match found {
            Probe::Absent => None,
            Probe::At(i) => Some(i),
            Probe::Unsure => (0..lists.blocked.len()).find(|&i| same(i)),
        }
    }

    /// Position of the first grant for `user@host`: a qualified grant for exactly that
    /// user or a bare grant for the user name, whichever comes first in the list.
    pub(super) fn grant(&self, lists: &Lists<'_>, user: &str, host: &str) -> Option<usize> {
        let is_for = |i: usize| lists.users[i].is_for(user, host);
        let (qualified, bare) = self.with(lists, |ix| {
            (
                probe(&ix.users_qualified, ix.key(&[user, "@", host]), is_for),
                probe(&ix.users_bare, ix.key(&[user]), is_for),
            )
        });
        let pos = |p: Probe| match p {
            Probe::Absent => Ok(None),
            Probe::At(i) => Ok(Some(i)),
            Probe::Unsure => Err(()),
        };
        match (pos(qualified), pos(bare)) {
            (Ok(a), Ok(b)) => a.into_iter().chain(b).min(),
            _ => (0..lists.users.len()).find(|&i| is_for(i)),
        }
    }
}

/// A `Hasher` for keys that are already hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else rather than panic.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VerificationLevel;

    fn allowed(d: &str) -> AllowedDomain {
        AllowedDomain {
            domain: d.into(),
            proxy_fqdn: None,
            proxy_port: crate::config::FEDERATION_PORT,
            verification_level: VerificationLevel::UseSourceVerification,
            mark_for_monitoring: false,
            comment: None,
        }
    }

    fn grant(u: &str) -> UserGrant {
        UserGrant {
            user: u.into(),
            policy: None,
            site: None,
            contacts: Vec::new(),
            hosting_provider: None,
        }
    }

    #[test]
    fn lookups_agree_with_a_scan_case_insensitively_and_first_entry_wins() {
        let long = format!("{}.example.test", "a".repeat(100));
        let allowed = [
            allowed("fabrikam.test"),
            allowed(&long),
            allowed("FABRIKAM.test"),
        ];
        let blocked = [BlockedDomain {
            domain: "adatum.test".into(),
            comment: None,
        }];
        let users = [
            grant("alice@contoso.test"),
            grant("bob"),
            grant("bob@contoso.test"),
        ];
        let lists = Lists {
            allowed: &allowed,
            blocked: &blocked,
            users: &users,
        };
        let ix = LookupIndex::default();
        assert_eq!(ix.allowed(&lists, "Fabrikam.TEST"), Some(0));
        assert_eq!(ix.allowed(&lists, &long.to_uppercase()), Some(1));
        assert_eq!(ix.allowed(&lists, "northwind.test"), None);
        assert_eq!(ix.blocked(&lists, "ADATUM.test"), Some(0));
        assert_eq!(ix.blocked(&lists, "fabrikam.test"), None);
        assert_eq!(ix.grant(&lists, "Alice", "contoso.TEST"), Some(0));
        assert_eq!(ix.grant(&lists, "alice", "fabrikam.test"), None);
        // The bare grant comes before the qualified one, so it wins, on any host.
        assert_eq!(ix.grant(&lists, "bob", "contoso.test"), Some(1));
        assert_eq!(ix.grant(&lists, "BOB", "fabrikam.test"), Some(1));
    }

    #[test]
    fn a_changed_list_is_reindexed_and_a_clone_starts_empty() {
        let mut allowed_list = vec![allowed("fabrikam.test")];
        let ix = LookupIndex::default();
        let lists = Lists {
            allowed: &allowed_list,
            blocked: &[],
            users: &[],
        };
        assert_eq!(ix.allowed(&lists, "northwind.test"), None);
        allowed_list.push(allowed("northwind.test"));
        let lists = Lists {
            allowed: &allowed_list,
            blocked: &[],
            users: &[],
        };
        assert_eq!(ix.allowed(&lists, "northwind.test"), Some(1));
        assert!(ix.clone().0.load().is_none());
    }

    #[test]
    fn a_colliding_hit_falls_back_to_a_scan() {
        let allowed_list = [allowed("fabrikam.test"), allowed("northwind.test")];
        let lists = Lists {
            allowed: &allowed_list,
            blocked: &[],
            users: &[],
        };
        let ix = LookupIndex::default();
        // Point northwind's key at fabrikam's position, as a hash collision would.
        let mut built = Index::build(&lists);
        let key = built.key(&["northwind.test"]);
        built.allowed.insert(key, 0);
        ix.0.store(Some(Arc::new(built)));
        assert_eq!(ix.allowed(&lists, "northwind.test"), Some(1));
    }
}
