//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same code the fuzz
//! targets run, so that every input a fuzzer once found interesting stays harmless in CI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use meds_dataplane::chain::{Reason, RuleSet, UnparsableVerdict, decide};
use meds_dataplane::flow::Limits;
use meds_dataplane::inspect::{Extract, InspectConfig, Inspector};
use meds_proto::{Asn, CountryCode, IpAsn};
use meds_proto::{Cidr, pb, sync::Stager};
use meds_proto::{DomainName, Entry, ListKind};
use prost::Message;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            (path, data)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
}

#[test]
fn packet_corpus() {
    let rules = RuleSet::empty();
    for (path, data) in corpus("packet") {
        let parsed = meds_dataplane::packet::parse(&data);
        let d = decide(&rules, &data, UnparsableVerdict::Drop);
        // Whatever the bytes, a packet with a source address is never "unparsable".
        if parsed.is_ok() {
            assert_ne!(d.reason.label(), "unparsable", "{}", path.display());
        }
    }
}

/// The same rules, limits and framing as `fuzz/fuzz_targets/inspect.rs`.
fn inspect_config(extract: Extract) -> InspectConfig {
    InspectConfig {
        limits: Limits {
            max_flows: 4,
            max_bytes: 4096,
            max_segments: 4,
            timeout_ms: 100,
        },
        verify_checksums: false,
        extract,
        blocked_flows: 8,
        blocked_flow_ttl_ms: 500,
        ..InspectConfig::new(UnparsableVerdict::Drop)
    }
}

#[test]
fn inspect_corpus() {
    let d = |s: &str| Entry::Domain(DomainName::parse_user(s).unwrap());
    let rules = RuleSet::empty()
        .with_list(ListKind::DomainAllow, &[d("ok.example.com")])
        .with_list(ListKind::DomainBlock, &[d("example.com"), d("google.com")])
        .with_list(ListKind::FeedStevenBlack, &[d("ads.test")])
        .with_list(
            ListKind::Ja3Block,
            &[Entry::Ja3(
                "9d33d8206d4fec4c8b1423c728f4cd3c".parse().unwrap(),
            )],
        )
        .with_list(
            ListKind::Ja4Block,
            &[Entry::Ja4(
                "t13d1516h2_8daaf6152771_02713d6af862".parse().unwrap(),
            )],
        );
    let mut drops = 0;
    for (path, data) in corpus("inspect") {
        let mut live = Inspector::new(inspect_config(Extract::Needed)).unwrap();
        let mut replay = Inspector::new(inspect_config(Extract::All)).unwrap();
        let mut rest = &data[..];
        let mut now = 0u64;
        while let [hi, lo, step, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
            let (packet, next) = tail.split_at(len);
            rest = next;
            now += u64::from(*step) * 8;
            let a = live.inspect(&rules, packet, now);
            let b = replay.inspect(&rules, packet, now);
            assert_eq!(a.decision, b.decision, "{}", path.display());
            if meds_dataplane::packet::parse_header(packet).is_ok() {
                assert_ne!(a.decision.reason, Reason::Unparsable, "{}", path.display());
            }
            drops += usize::from(a.decision.verdict == meds_dataplane::chain::Verdict::Drop);
            live.expire(now);
            replay.expire(now);
        }
    }
    // The seeds include blocked SNIs and fingerprints: the corpus exercises the drop paths.
    assert!(drops > 0);
}

#[test]
fn nfqueue_messages_corpus() {
    for (_, data) in corpus("nfqueue_messages") {
        for packet in meds_dataplane::nfqueue::packets(&data).take(1024) {
            let _ = packet;
        }
    }
}

#[test]
fn sync_chunk_corpus() {
    for (_, data) in corpus("sync_chunk") {
        let mut stager = Stager::new();
        for part in data.split(|b| *b == 0xff).take(8) {
            if let Ok(chunk) = pb::UpdateChunk::decode(part) {
                let _ = stager.push(&chunk);
            }
        }
    }
}

#[test]
fn cidr_corpus() {
    for (path, data) in corpus("cidr") {
        if let Ok(text) = std::str::from_utf8(&data)
            && let Ok(cidr) = text.parse::<Cidr>()
        {
            assert_eq!(
                cidr.to_string().parse::<Cidr>().ok(),
                Some(cidr),
                "{}",
                path.display()
            );
        }
    }
}

// The rule set of `fuzz/fuzz_targets/explain_request.rs`: every kind of list.
include!("../../fuzz/shared/explain_rules.rs");

#[test]
fn explain_request_corpus() {
    let rules = explain_rules();
    let mut explained = 0;
    for (path, data) in corpus("explain_request") {
        let Ok(request) = pb::ExplainRequest::decode(data.as_slice()) else {
            continue;
        };
        for offload in [false, true] {
            let answer = meds_dataplane::explain::wire::respond(&rules, None, offload, &request);
            assert_eq!(answer.id, request.id, "{}", path.display());
            assert!(
                answer.error.is_empty() != answer.steps.is_empty(),
                "{}: {answer:?}",
                path.display()
            );
            explained += usize::from(answer.error.is_empty());
        }
    }
    // The seeds include valid requests: the corpus reaches past validation.
    assert!(explained > 0);
}

#[test]
fn procfs_corpus() {
    let mut lines = 0;
    for (_, data) in corpus("procfs") {
        let text = String::from_utf8_lossy(&data);
        for line in meds_dataplane::procfs::parse_queues(&text, &[0, 1, 7, 65535]) {
            assert!([0, 1, 7, 65535].contains(&line.queue));
            lines += 1;
        }
        let _ = meds_dataplane::procfs::parse_statm(&text, 4096);
    }
    assert!(lines >= 2, "the seeds hold real queue lines");
}
