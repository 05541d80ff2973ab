//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same code the fuzz
//! targets run, so that every input a fuzzer once found interesting stays harmless in CI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use meds_dataplane::chain::{RuleSet, UnparsableVerdict, decide};
use meds_proto::{Cidr, pb, sync::Stager};
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
