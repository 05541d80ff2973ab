//! Real DNS queries (tests/data/dns/queries.json, captured by OISF/suricata-verify, MIT) through
//! `meds_dataplane::dns`: every vector gives exactly its expected question name, over UDP and
//! over TCP framing; every prefix and every TCP split is handled without a panic. Also replays
//! the committed fuzz corpus (fuzz/corpus/dns/).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use meds_dataplane::dns::{DnsError, DnsNames, DnsOutcome, NameSource, parse, parse_tcp};

struct Vector {
    id: String,
    qname: String,
    payload: Vec<u8>,
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn vectors() -> Vec<Vector> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dns/queries.json");
    let text = std::fs::read_to_string(&path).expect("fixture file");
    let json: serde_json::Value = serde_json::from_str(&text).expect("fixture json");
    let vectors: Vec<Vector> = json["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .map(|v| {
            assert!(v["source"]["license"].is_string(), "licence recorded");
            Vector {
                id: v["id"].as_str().expect("id").to_string(),
                qname: v["qname"].as_str().expect("qname").to_string(),
                payload: hex(v["udp_payload_hex"].as_str().expect("hex")),
            }
        })
        .collect();
    assert!(vectors.len() >= 12, "fixture vectors missing");
    vectors
}

fn names(out: &DnsNames) -> Vec<String> {
    out.iter().map(|n| n.text.to_string()).collect()
}

fn framed(msg: &[u8]) -> Vec<u8> {
    let mut seg = (msg.len() as u16).to_be_bytes().to_vec();
    seg.extend_from_slice(msg);
    seg
}

#[test]
fn every_fixture_gives_exactly_its_qname() {
    let mut out = DnsNames::new();
    for v in vectors() {
        out.clear();
        assert_eq!(
            parse(&v.payload, &mut out),
            Ok(DnsOutcome::Names),
            "{}",
            v.id
        );
        assert_eq!(names(&out), std::slice::from_ref(&v.qname), "{}", v.id);
        let name = out.get(0).unwrap();
        assert_eq!(name.source, NameSource::Question, "{}", v.id);
        assert!(!name.escaped, "{}", v.id);
        assert!(!out.truncated(), "{}", v.id);
    }
}

#[test]
fn every_fixture_over_tcp_framing() {
    let mut out = DnsNames::new();
    for v in vectors() {
        let seg = framed(&v.payload);
        out.clear();
        assert_eq!(parse_tcp(&seg, &mut out), Ok(DnsOutcome::Names), "{}", v.id);
        assert_eq!(names(&out), std::slice::from_ref(&v.qname), "{}", v.id);
        // Two messages in one segment: the same name, kept once.
        let mut two = seg.clone();
        two.extend_from_slice(&seg);
        out.clear();
        assert_eq!(parse_tcp(&two, &mut out), Ok(DnsOutcome::Names), "{}", v.id);
        assert_eq!(names(&out), std::slice::from_ref(&v.qname), "{}", v.id);
        // Every split of the segment is incomplete with the exact number of missing bytes.
        for cut in 1..seg.len() {
            out.clear();
            let needed = if cut < 2 { 2 - cut } else { seg.len() - cut };
            assert_eq!(
                parse_tcp(&seg[..cut], &mut out),
                Ok(DnsOutcome::Incomplete { needed }),
                "{} cut {cut}",
                v.id
            );
            assert!(out.is_empty());
        }
    }
}

#[test]
fn every_prefix_of_every_fixture_is_total() {
    let mut out = DnsNames::new();
    for v in vectors() {
        for cut in 0..=v.payload.len() {
            out.clear();
            match parse(&v.payload[..cut], &mut out) {
                // Cut inside the additional section (EDNS OPT), which is not read.
                Ok(DnsOutcome::Names) => {
                    assert_eq!(
                        names(&out),
                        std::slice::from_ref(&v.qname),
                        "{} cut {cut}",
                        v.id
                    )
                }
                Ok(other) => panic!("{} cut {cut}: {other:?}", v.id),
                Err(e) => {
                    let want = if cut < 12 {
                        DnsError::ShortHeader
                    } else {
                        DnsError::Truncated
                    };
                    assert_eq!(e, want, "{} cut {cut}", v.id);
                    // A name read before the cut is kept (its question's type/class was cut).
                    let got = names(&out);
                    assert!(
                        got.is_empty() || got == std::slice::from_ref(&v.qname),
                        "{} cut {cut}: {got:?}",
                        v.id
                    );
                }
            }
        }
    }
}

#[test]
fn fuzz_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/dns");
    let mut files = 0;
    let mut out = DnsNames::new();
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let data = std::fs::read(entry.expect("entry").path()).expect("corpus file");
        out.clear();
        let _ = parse(&data, &mut out);
        for name in out.iter() {
            assert!(!name.text.is_empty() && name.text.is_ascii());
            assert_eq!(name.escaped, name.text.contains('\\'));
        }
        out.clear();
        let _ = parse_tcp(&data, &mut out);
        files += 1;
    }
    assert!(files >= 12, "corpus too small: {files}");
}
