//! `--persist`: write an admin change back to the config file, keeping its comments.
//!
//! The change is found by comparing the federation objects before and after, family by
//! family, matched by Identity: an object that disappeared loses its `[[table]]` (with the
//! comment above it), a new one gets a `[[table]]` appended to its family, and a changed
//! one has only the keys whose value changed rewritten (keeping each value's trailing
//! comment). Objects that did not change are not touched, so their formatting
//! (`verification_level = 2`) stays as typed. Covered: `[access_edge]`,
//! `[[public_provider]]`, `[[hosting_provider]]`, `[[allowed_domain]]`,
//! `[[blocked_domain]]`, `[[external_access_policy]]` and `[[user]]`.
//!
//! The new text is parsed again and must give exactly the new federation objects before
//! it replaces the file (written beside it, then renamed), so a persist never leaves a
//! file the edge would refuse at its next start.

use std::path::Path;

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, Value};

use crate::config::{
    AccessEdge, Federation, FederationRouting, PolicyScope, Snapshot, UnmarkedSource,
};

/// Why a change could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(
        "the running configuration was not read from a file, so there is nothing to write back"
    )]
    NoSource,
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML any more: {message}")]
    Parse { path: String, message: String },
    #[error(
        "the rewritten {path} would not hold the same objects ({detail}); nothing was written"
    )]
    RoundTrip { path: String, detail: String },
    #[error(
        "{path} does not hold the running objects: changes made without --persist differ ({}); nothing was applied. Repeat those changes with --persist, or give this one with --persist-all to write the whole running federation configuration with it",
        differences.join("; ")
    )]
    Unpersisted {
        path: String,
        differences: Vec<String>,
    },
}

/// What a persisted change writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This change alone; the file must hold the running objects (nothing made without
    /// --persist may be written behind the admin's back).
    Change,
    /// The running objects with this change, whatever the file held.
    All,
}

/// Writes the federation change `before` → `after` into `after.source`.
pub fn persist(before: &Snapshot, after: &Snapshot, scope: Scope) -> Result<(), PersistError> {
    let path = after.source.as_deref().ok_or(PersistError::NoSource)?;
    let shown = path.display().to_string();
    let io = |source| PersistError::Io {
        path: shown.clone(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let on_file = Snapshot::from_toml(&text, path.parent().unwrap_or(Path::new(".")))
        .map_err(|e| PersistError::Parse {
            path: shown.clone(),
            message: e.to_string(),
        })?
        .federation;
    let differences = differences(&on_file, &before.federation);
    if scope == Scope::Change && !differences.is_empty() {
        return Err(PersistError::Unpersisted {
            path: shown,
            differences,
        });
    }
    let new_text =
        rewrite(&text, &on_file, &after.federation).map_err(|message| PersistError::Parse {
            path: shown.clone(),
            message,
        })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let check = Snapshot::from_toml(&new_text, base).map_err(|e| PersistError::RoundTrip {
        path: shown.clone(),
        detail: e.to_string(),
    })?;
    let mut want = after.federation.clone();
    want.configured = check.federation.configured;
    if check.federation != want {
        return Err(PersistError::RoundTrip {
            path: shown,
            detail: "the objects read back differ".into(),
        });
    }
    let tmp = path.with_extension("toml.sipedge-tmp");
    std::fs::write(&tmp, new_text).map_err(io)?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// How the objects in the file differ from the running ones, one line per object:
/// `[[allowed_domain]] northwind.test: running only`, `[access_edge] allow_federated_users:
/// file true, running false`.
pub fn differences(on_file: &Federation, running: &Federation) -> Vec<String> {
    let text = |v: &Option<Value>| {
        v.as_ref().map_or_else(
            || "absent".to_string(),
            |v| v.to_string().trim().to_string(),
        )
    };
    let keys_differ = |what: &str, old: &Keys, new: &Keys, out: &mut Vec<String>| {
        for ((k, a), (_, b)) in old.iter().zip(new) {
            if text(a) != text(b) {
                out.push(format!("{what} {k}: file {}, running {}", text(a), text(b)));
            }
        }
    };
    let mut out = Vec::new();
    keys_differ(
        "[access_edge]",
        &access_edge_keys(&on_file.access_edge),
        &access_edge_keys(&running.access_edge),
        &mut out,
    );
    for (old, new) in families(on_file).into_iter().zip(families(running)) {
        for (id, keys) in &old.objects {
            match new.objects.iter().find(|(n, _)| n == id) {
                None => out.push(format!("[[{}]] {id}: file only", old.table)),
                Some((_, now)) => {
                    keys_differ(&format!("[[{}]] {id}", old.table), keys, now, &mut out)
                }
            }
        }
        for (id, _) in new
            .objects
            .iter()
            .filter(|(n, _)| !old.objects.iter().any(|(o, _)| o == n))
        {
            out.push(format!("[[{}]] {id}: running only", new.table));
        }
    }
    out
}

/// One object as TOML keys; `None` means the key is absent.
type Keys = Vec<(&'static str, Option<Value>)>;

/// A family of `[[table]]`s: its name, and each object's match key and keys.
struct Family {
    table: &'static str,
    objects: Vec<(String, Keys)>,
}

/// Rewrites `text` so its federation sections describe `after` instead of `before`.
pub fn rewrite(text: &str, before: &Federation, after: &Federation) -> Result<String, String> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| e.to_string())?;
    if before.access_edge != after.access_edge {
        let old = access_edge_keys(&before.access_edge);
        let new = access_edge_keys(&after.access_edge);
        let root = doc.as_table_mut();
        if !root.contains_key("access_edge") {
            root.insert("access_edge", Item::Table(Table::new()));
        }
        let table = root["access_edge"]
            .as_table_mut()
            .ok_or("`access_edge` is not a table")?;
        update(table, &old, &new);
    }
    for (old, new) in families(before).into_iter().zip(families(after)) {
        apply_family(&mut doc, &old, &new)?;
    }
    Ok(doc.to_string())
}

fn apply_family(doc: &mut DocumentMut, old: &Family, new: &Family) -> Result<(), String> {
    let root = doc.as_table_mut();
    if !root.contains_key(old.table) {
        if new.objects.is_empty() {
            return Ok(());
        }
        root.insert(old.table, Item::ArrayOfTables(ArrayOfTables::new()));
    }
    let array = root[old.table]
        .as_array_of_tables_mut()
        .ok_or_else(|| format!("`{}` is not an array of tables", old.table))?;
    let match_key = old_match_key(old.table);
    // Removed objects: drop their tables (from the end, so indexes stay valid).
    let gone: Vec<usize> = array
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            let id = table_id(old.table, t, match_key);
            !new.objects.iter().any(|(n, _)| *n == id)
        })
        .map(|(i, _)| i)
        .collect();
    for i in gone.into_iter().rev() {
        array.remove(i);
    }
    for (id, keys) in &new.objects {
        let existing = array
            .iter_mut()
            .find(|t| table_id(old.table, t, match_key) == *id);
        match existing {
            Some(t) => {
                let before = old
                    .objects
                    .iter()
                    .find(|(o, _)| o == id)
                    .map(|(_, k)| k.clone())
                    .unwrap_or_default();
                if !keys_eq(&before, keys) {
                    update(t, &before, keys);
                }
            }
            None => {
                // Unchanged and not in the file: an implicit default (the global policy).
                let unchanged = old.objects.iter().any(|(o, k)| o == id && keys_eq(k, keys));
                if unchanged {
                    continue;
                }
                let mut t = Table::new();
                for (k, v) in keys {
                    if let Some(v) = v {
                        t.insert(k, Item::Value(v.clone()));
                    }
                }
                array.push(t);
            }
        }
    }
    if array.is_empty() {
        root.remove(old.table);
    }
    Ok(())
}

/// Whether two renderings hold the same values (toml_edit values compare by their text).
fn keys_eq(a: &Keys, b: &Keys) -> bool {
    let text = |k: &Keys| {
        k.iter()
            .map(|(n, v)| (*n, v.as_ref().map(|v| v.to_string().trim().to_string())))
            .collect::<Vec<_>>()
    };
    text(a) == text(b)
}

/// Sets or removes the keys whose value differs between `old` and `new`.
fn update(t: &mut Table, old: &Keys, new: &Keys) {
    for (k, v) in new {
        let was = old
            .iter()
            .find(|(o, _)| o == k)
            .and_then(|(_, v)| v.clone());
        let same = match (&was, v) {
            (Some(a), Some(b)) => a.to_string().trim() == b.to_string().trim(),
            (None, None) => true,
            _ => false,
        };
        if same {
            continue;
        }
        match v {
            None => {
                t.remove(k);
            }
            Some(v) => {
                let mut v = v.clone();
                if let Some(old) = t.get(k).and_then(Item::as_value) {
                    *v.decor_mut() = old.decor().clone();
                }
                t.insert(k, Item::Value(v));
            }
        }
    }
}

fn old_match_key(table: &str) -> &'static str {
    match table {
        "allowed_domain" | "blocked_domain" => "domain",
        "user" => "user",
        _ => "identity",
    }
}

/// The normalized identity of a table in the file, comparable with `families`' keys.
fn table_id(table: &str, t: &Table, key: &str) -> String {
    let raw = t.get(key).and_then(Item::as_str).unwrap_or("");
    normalize(table, raw)
}

fn normalize(table: &str, raw: &str) -> String {
    match table {
        "external_access_policy" => PolicyScope::parse(raw)
            .map(|s| s.to_string().to_ascii_lowercase())
            .unwrap_or_default(),
        "user" => {
            let r = raw.trim();
            r.strip_prefix("sip:")
                .or_else(|| r.strip_prefix("SIP:"))
                .unwrap_or(r)
                .to_ascii_lowercase()
        }
        "allowed_domain" | "blocked_domain" => {
            raw.trim().trim_end_matches('.').to_ascii_lowercase()
        }
        _ => raw.trim().to_ascii_lowercase(),
    }
}

fn s(v: &str) -> Option<Value> {
    Some(Value::from(v))
}

fn b(v: bool) -> Option<Value> {
    Some(Value::from(v))
}

fn n(v: u32) -> Option<Value> {
    Some(Value::from(i64::from(v)))
}

fn os(v: &Option<String>) -> Option<Value> {
    v.as_deref().map(Value::from)
}

fn families(f: &Federation) -> Vec<Family> {
    vec![
        Family {
            table: "public_provider",
            objects: f
                .public_providers
                .iter()
                .map(|p| {
                    (
                        normalize("public_provider", &p.identity),
                        vec![
                            ("identity", s(&p.identity)),
                            ("proxy_fqdn", s(&p.proxy_fqdn)),
                            ("enabled", b(p.enabled)),
                            ("verification_level", s(p.verification_level.as_str())),
                            ("icon_url", os(&p.icon_url)),
                            ("name_decoration_domain", os(&p.name_decoration_domain)),
                            (
                                "name_decoration_routing_domain",
                                os(&p.name_decoration_routing_domain),
                            ),
                            (
                                "name_decoration_excluded_domain_list",
                                (!p.name_decoration_excluded_domain_list.is_empty()).then(|| {
                                    Value::from(p.name_decoration_excluded_domain_list.join(","))
                                }),
                            ),
                        ],
                    )
                })
                .collect(),
        },
        Family {
            table: "hosting_provider",
            objects: f
                .hosting_providers
                .iter()
                .map(|p| {
                    (
                        normalize("hosting_provider", &p.identity),
                        vec![
                            ("identity", s(&p.identity)),
                            ("proxy_fqdn", s(&p.proxy_fqdn_text())),
                            ("enabled", b(p.enabled)),
                            (
                                "enabled_shared_address_space",
                                b(p.enabled_shared_address_space),
                            ),
                            ("hosts_ocs_users", b(p.hosts_ocs_users)),
                            ("is_local", b(p.is_local)),
                            ("verification_level", s(p.verification_level.as_str())),
                            ("autodiscover_url", os(&p.autodiscover_url)),
                            ("sip_client_port", n(u32::from(p.sip_client_port))),
                        ],
                    )
                })
                .collect(),
        },
        Family {
            table: "allowed_domain",
            objects: f
                .allowed_domains
                .iter()
                .map(|d| {
                    (
                        normalize("allowed_domain", &d.domain),
                        vec![
                            ("domain", s(&d.domain)),
                            ("proxy_fqdn", os(&d.proxy_fqdn_text())),
                            ("verification_level", s(d.verification_level.as_str())),
                            ("mark_for_monitoring", b(d.mark_for_monitoring)),
                            ("comment", os(&d.comment)),
                        ],
                    )
                })
                .collect(),
        },
        Family {
            table: "blocked_domain",
            objects: f
                .blocked_domains
                .iter()
                .map(|d| {
                    (
                        normalize("blocked_domain", &d.domain),
                        vec![("domain", s(&d.domain)), ("comment", os(&d.comment))],
                    )
                })
                .collect(),
        },
        Family {
            table: "external_access_policy",
            objects: f
                .external_access_policies
                .iter()
                .map(|p| {
                    let identity = match &p.scope {
                        PolicyScope::Global => "global".to_string(),
                        PolicyScope::Site(n) => format!("site:{n}"),
                        PolicyScope::Tag(n) => n.clone(),
                    };
                    (
                        normalize("external_access_policy", &identity),
                        vec![
                            ("identity", s(&identity)),
                            ("enable_federation_access", b(p.enable_federation_access)),
                            (
                                "enable_public_cloud_access",
                                b(p.enable_public_cloud_access),
                            ),
                            (
                                "enable_public_cloud_audio_video_access",
                                b(p.enable_public_cloud_audio_video_access),
                            ),
                            ("enable_outside_access", b(p.enable_outside_access)),
                            ("enable_xmpp_access", b(p.enable_xmpp_access)),
                            ("description", os(&p.description)),
                        ],
                    )
                })
                .collect(),
        },
        Family {
            table: "user",
            objects: f
                .users
                .iter()
                .map(|g| {
                    (
                        normalize("user", &g.user),
                        vec![
                            ("user", s(&g.user)),
                            ("policy", os(&g.policy)),
                            ("site", os(&g.site)),
                            (
                                "contacts",
                                (!g.contacts.is_empty()).then(|| {
                                    Value::Array(
                                        g.contacts.iter().map(|c| format!("sip:{c}")).collect(),
                                    )
                                }),
                            ),
                            ("hosting_provider", os(&g.hosting_provider)),
                        ],
                    )
                })
                .collect(),
        },
    ]
}

fn access_edge_keys(ae: &AccessEdge) -> Keys {
    let mut k: Keys = vec![
        ("allow_federated_users", b(ae.allow_federated_users)),
        ("allow_outside_users", b(ae.allow_outside_users)),
        ("allow_anonymous_users", b(ae.allow_anonymous_users)),
        ("enable_partner_discovery", b(ae.enable_partner_discovery)),
        (
            "discovered_partner_verification_level",
            s(ae.discovered_partner_verification_level.as_str()),
        ),
        (
            "discovered_partner_standard_rate",
            n(ae.discovered_partner_standard_rate),
        ),
        (
            "enable_discovered_partner_contacts_limit",
            b(ae.enable_discovered_partner_contacts_limit),
        ),
        (
            "max_contacts_per_discovered_partner",
            n(ae.max_contacts_per_discovered_partner),
        ),
        (
            "discovered_partner_report_period_minutes",
            n(ae.discovered_partner_report_period_minutes),
        ),
        (
            "mark_source_verifiable_on_outgoing_messages",
            b(ae.mark_source_verifiable_on_outgoing_messages),
        ),
        (
            "outgoing_tls_count_for_federated_partners",
            n(u32::from(ae.outgoing_tls_count_for_federated_partners)),
        ),
        (
            "dns_srv_cache_record_count",
            n(ae.dns_srv_cache_record_count),
        ),
        (
            "unmarked_source",
            s(match ae.unmarked_source {
                UnmarkedSource::Reject => "reject",
                UnmarkedSource::MarkUnverified => "unverified",
            }),
        ),
    ];
    match &ae.routing {
        FederationRouting::DnsSrv => k.extend([
            ("routing", s("dns_srv")),
            ("default_route_fqdn", None),
            ("verification_level", None),
            ("is_public_provider", None),
        ]),
        FederationRouting::DefaultRoute {
            fqdn,
            port,
            verification_level,
            is_public_provider,
        } => k.extend([
            ("routing", s("default_route")),
            ("default_route_fqdn", s(&format!("{fqdn}:{port}"))),
            ("verification_level", s(verification_level.as_str())),
            ("is_public_provider", b(*is_public_provider)),
        ]),
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::cmdlet::apply;

    const FILE: &str = r#"# The lab edge.
[edge]
local_domains = ["contoso.test"]

[interfaces.external]
fqdn = "accessedge.contoso.test"
address = "127.0.0.1"
tcp_port = 0

[interfaces.internal]
fqdn = "edge-int.contoso.test"
address = "127.0.0.2"
tcp_port = 0

[pool]
target = "127.0.0.1:5070"
transport = "tcp"

[access_edge]
allow_federated_users = true # master switch

# Pre-created by Lync 2013, disabled.
[[public_provider]]
identity = "Messenger"
proxy_fqdn = "federation.messenger.msn.com"
enabled = false

# The partner.
[[allowed_domain]]
domain = "fabrikam.test"
verification_level = 2 # typed as a number
"#;

    fn step(s: &Snapshot, line: &str) -> Snapshot {
        apply(s, line)
            .unwrap_or_else(|e| panic!("{e}"))
            .snapshot
            .unwrap()
    }

    #[test]
    fn seed_change_keeps_comments_and_untouched_formatting() {
        let s0 = Snapshot::from_toml(FILE, Path::new(".")).unwrap();
        let s1 = step(&s0, "Remove-CsPublicProvider -Identity Messenger");
        let s2 = step(
            &s1,
            r#"New-CsPublicProvider -Identity Skype -ProxyFqdn federation.messenger.msn.com -IconUrl "https://images.edge.messenger.live.com/Messenger_16x16.png" -VerificationLevel 2 -Enabled 1"#,
        );
        let s3 = step(&s2, "New-CsBlockedDomain adatum.test -Comment 'never'");
        let s4 = step(&s3, "Set-CsAccessEdgeConfiguration -EnablePartnerDiscovery $true -AllowFederatedUsers $true");
        let text = rewrite(FILE, &s0.federation, &s4.federation).unwrap();
        assert!(text.starts_with("# The lab edge.\n"), "{text}");
        assert!(
            text.contains("allow_federated_users = true # master switch"),
            "{text}"
        );
        assert!(text.contains("enable_partner_discovery = true"), "{text}");
        assert!(!text.contains("identity = \"Messenger\""), "{text}");
        assert!(
            !text.contains("Pre-created"),
            "the removed table's comment goes with it"
        );
        assert!(
            !text.contains("external_access_policy"),
            "implicit global policy stays implicit"
        );
        assert!(text.contains("[access_edge]\nallow_federated_users = true # master switch\nenable_partner_discovery = true\n\n"), "{text}");
        assert!(text.contains("identity = \"Skype\""), "{text}");
        assert!(text.contains("# The partner.\n[[allowed_domain]]\ndomain = \"fabrikam.test\"\nverification_level = 2 # typed as a number\n"), "{text}");
        let back = Snapshot::from_toml(&text, Path::new(".")).unwrap();
        assert_eq!(back.federation, s4.federation);
    }

    #[test]
    fn a_user_moved_online_and_a_provider_port_are_written_and_read_back() {
        let s0 = Snapshot::from_toml(FILE, Path::new(".")).unwrap();
        let s1 = step(
            &s0,
            "New-CsHostingProvider LyncOnline -ProxyFqdn sipfed.online.lync.com:5071 -Enabled $true -EnabledSharedAddressSpace $true -HostsOCSUsers $true",
        );
        let s2 = step(
            &s1,
            "Move-CsUser dave@contoso.test -Target sipfed.online.lync.com",
        );
        let text = rewrite(FILE, &s0.federation, &s2.federation).unwrap();
        assert!(
            text.contains("proxy_fqdn = \"sipfed.online.lync.com:5071\""),
            "{text}"
        );
        assert!(
            text.contains("hosting_provider = \"sipfed.online.lync.com\""),
            "{text}"
        );
        let back = Snapshot::from_toml(&text, Path::new(".")).unwrap();
        assert_eq!(back.federation, s2.federation);
    }

    #[test]
    fn changed_keys_keep_their_trailing_comment() {
        let s0 = Snapshot::from_toml(FILE, Path::new(".")).unwrap();
        let s1 = step(
            &s0,
            "Set-CsAllowedDomain fabrikam.test -VerificationLevel AlwaysVerifiable",
        );
        let text = rewrite(FILE, &s0.federation, &s1.federation).unwrap();
        assert!(
            text.contains("verification_level = \"AlwaysVerifiable\" # typed as a number"),
            "{text}"
        );
    }

    #[test]
    fn a_blocked_domains_comment_and_a_users_contact_list_are_written_back() {
        let s0 = Snapshot::from_toml(FILE, Path::new(".")).unwrap();
        let s1 = step(&s0, "New-CsBlockedDomain adatum.test");
        let s2 = step(
            &s1,
            "Set-CsBlockedDomain adatum.test -Comment 'never contact'",
        );
        let s3 = step(
            &s2,
            "Set-CsLabContactList alice@contoso.test -Contacts sip:dave@fabrikam.test",
        );
        let text = rewrite(FILE, &s0.federation, &s3.federation).unwrap();
        assert!(text.contains("comment = \"never contact\""), "{text}");
        assert!(
            text.contains("user = \"alice@contoso.test\"\ncontacts = [\"sip:dave@fabrikam.test\"]"),
            "{text}"
        );
        let back = Snapshot::from_toml(&text, Path::new(".")).unwrap();
        assert_eq!(back.federation, s3.federation);
    }
}
