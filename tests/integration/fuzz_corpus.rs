//! The fuzz corpus and every crash input, replayed through the same entry points the
//! cargo-fuzz targets call (`sipedge::fuzzing`), plus a proptest smoke of framing and the
//! parse → rewrite → parse round trip on generated messages.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;
use sipedge::sip::framing::{scan, FrameLimits, Scan};
use sipedge::sip::Message;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 3] = [
    ("framing", sipedge::fuzzing::framing),
    ("roundtrip", sipedge::fuzzing::roundtrip),
    ("decide", sipedge::fuzzing::decide),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files directly inside `dir` (none when it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn the_committed_corpus_and_crash_inputs_replay_cleanly() {
    for (name, run) in TARGETS {
        let corpus = files(&root().join("fuzz/corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{name} is committed with the minimized corpus"
        );
        let crashes = files(&root().join("fuzz/artifacts").join(name))
            .into_iter()
            .chain(files(
                &root().join("tests/fixtures/fuzz-regressions").join(name),
            ));
        for path in corpus.into_iter().chain(crashes) {
            let data = std::fs::read(&path).expect("read corpus file");
            run(&data);
        }
    }
}

#[test]
fn the_torture_messages_feed_every_target() {
    for dir in ["rfc4475", "rfc5118"] {
        for path in files(&root().join("tests/fixtures").join(dir)) {
            if path.extension().is_some_and(|e| e == "dat") {
                let msg = std::fs::read(&path).expect("fixture");
                for (_, run) in TARGETS {
                    // Both framings and both peers: the first byte picks them.
                    for first in [0u8, 1, 2, 7] {
                        let mut data = vec![first];
                        data.extend_from_slice(&msg);
                        run(&data);
                    }
                }
            }
        }
    }
}

/// Header lines as clients write them: long and compact names in any case, folded values,
/// unknown headers, several values on one line.
fn header_line() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("Subject".to_string()),
        Just("s".to_string()),
        Just("X-Unknown".to_string()),
        Just("Supported".to_string()),
        Just("k".to_string()),
        Just("ms-client-diagnostics".to_string()),
        "[A-Za-z][A-Za-z0-9-]{0,12}".prop_filter("not a header the test sets", |n| {
            !matches!(
                n.to_ascii_lowercase().as_str(),
                "via"
                    | "v"
                    | "from"
                    | "f"
                    | "to"
                    | "t"
                    | "call-id"
                    | "i"
                    | "cseq"
                    | "content-length"
                    | "l"
                    | "max-forwards"
                    | "route"
                    | "record-route"
                    | "ms-edge-proxy-message-trust"
            )
        }),
    ];
    let value = "[a-zA-Z0-9 ;=,<>:@.\"-]{0,30}";
    (name, value, any::<bool>()).prop_map(|(n, v, fold)| {
        let v = v.trim().to_string();
        if fold && !v.is_empty() {
            format!("{n}: {v}\r\n continued {v}")
        } else {
            format!("{n}: {v}")
        }
    })
}

fn sip_message() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(header_line(), 0..8),
        "[a-z0-9]{1,12}",
        "[ -~]{0,64}",
        any::<bool>(),
    )
        .prop_map(|(extra, id, body, compact)| {
            let (via, from, to, cid, cl) = if compact {
                ("v", "f", "t", "i", "l")
            } else {
                ("Via", "From", "To", "Call-ID", "Content-Length")
            };
            let mut m = format!(
                "MESSAGE sip:bob@contoso.test SIP/2.0\r\n{via}: SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bK{id}, SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK2\r\nMax-Forwards: 70\r\n{from}: \"A, B\" <sip:a@fabrikam.test>;tag={id}\r\n{to}: <sip:bob@contoso.test>\r\n{cid}: {id}\r\nCSeq: 1 MESSAGE\r\n"
            );
            for line in extra {
                m.push_str(&line);
                m.push_str("\r\n");
            }
            m.push_str(&format!("{cl}: {}\r\n\r\n{body}", body.len()));
            m.into_bytes()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// However a stream cuts a message, framing finds exactly it, and it parses.
    #[test]
    fn framing_finds_the_message_in_any_chunking(msg in sip_message(), cuts in prop::collection::vec(1usize..64, 1..16)) {
        let limits = FrameLimits::default();
        let mut buf = Vec::new();
        let mut rest = &msg[..];
        let mut found = None;
        for cut in cuts.iter().cycle().take(msg.len() + 1) {
            let n = (*cut).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            match scan(&buf, &limits) {
                Ok(Scan::Incomplete) => prop_assert!(!rest.is_empty() || buf.len() < msg.len()),
                Ok(Scan::Message { len }) => { found = Some(len); break; }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
            if rest.is_empty() { break; }
        }
        prop_assert_eq!(found, Some(msg.len()));
        let m = Message::parse(Bytes::from(msg.clone()), false);
        prop_assert!(m.as_ref().is_ok_and(|m| m.validate_request().is_ok()), "{:?}", m.err());
    }

    /// Generated messages survive the edge's rewrite with their headers and body intact.
    #[test]
    fn parse_rewrite_parse_round_trip(msg in sip_message()) {
        for first in [0u8, 1] {
            let mut data = vec![first];
            data.extend_from_slice(&msg);
            sipedge::fuzzing::roundtrip(&data);
        }
    }
}
