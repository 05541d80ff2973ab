//! `replay`: captures built in the test (pcap and pcapng, several link types) run through the
//! library and the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

use meds_dataplane::chain::{RuleSet, UnparsableVerdict};
use meds_dataplane::policy::{self, PolicyState};
use meds_dataplane::replay::{self, CaptureError, Format, ReplayError};
use meds_proto::sync::{ListDelta, Update};
use meds_proto::{Cidr, Entry, ListKind};
use serde_json::Value;

const CLIENT: [u8; 4] = [203, 0, 113, 7];
const SERVER: [u8; 4] = [203, 0, 113, 200];

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn fixture(path: &str) -> Value {
    let text = std::fs::read_to_string(format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ipv4(proto: u8, transport: &[u8]) -> Vec<u8> {
    let total = 20 + transport.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        proto,
        0,
        0,
    ];
    p.extend_from_slice(&CLIENT);
    p.extend_from_slice(&SERVER);
    p.extend_from_slice(transport);
    p
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    ipv4(17, &u)
}

fn tcp(sport: u16, dport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&1u32.to_be_bytes());
    t.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    ipv4(6, &t)
}

fn ethernet(ip: &[u8], vlans: &[u16]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    for (i, vid) in vlans.iter().enumerate() {
        let tpid: u16 = if i == 0 && vlans.len() > 1 {
            0x88a8
        } else {
            0x8100
        };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

fn sll(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

fn sll2(ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
    f.extend_from_slice(ip);
    f
}

fn pcap(link: u32, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&link.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
        out.extend_from_slice(&250_000u32.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn block(out: &mut Vec<u8>, ty: u32, body: &[u8], big: bool) {
    let padded = body.len().div_ceil(4) * 4;
    let total = (12 + padded) as u32;
    let w = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    out.extend_from_slice(&w(ty));
    out.extend_from_slice(&w(total));
    out.extend_from_slice(body);
    out.resize(out.len() + padded - body.len(), 0);
    out.extend_from_slice(&w(total));
}

/// pcapng: SHB, one IDB with nanosecond timestamps, a name-resolution block to skip, EPBs.
fn pcapng(link: u16, frames: &[Vec<u8>], big: bool) -> Vec<u8> {
    let w32 = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let w16 = |v: u16| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut out = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&w32(0x1a2b_3c4d));
    shb.extend_from_slice(&w16(1));
    shb.extend_from_slice(&w16(0));
    shb.extend_from_slice(&[0xff; 8]);
    block(&mut out, 0x0a0d_0d0a, &shb, big);
    let mut idb = Vec::new();
    idb.extend_from_slice(&w16(link));
    idb.extend_from_slice(&w16(0));
    idb.extend_from_slice(&w32(0));
    idb.extend_from_slice(&w16(9)); // if_tsresol
    idb.extend_from_slice(&w16(1));
    idb.extend_from_slice(&[9, 0, 0, 0]);
    idb.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
    block(&mut out, 1, &idb, big);
    block(&mut out, 4, &[0u8; 8], big);
    for (i, f) in frames.iter().enumerate() {
        let ts: u64 = (1_700_000_000 + i as u64) * 1_000_000_000 + 500_000_000;
        let mut epb = Vec::new();
        epb.extend_from_slice(&w32(0));
        epb.extend_from_slice(&w32((ts >> 32) as u32));
        epb.extend_from_slice(&w32(ts as u32));
        epb.extend_from_slice(&w32(f.len() as u32));
        epb.extend_from_slice(&w32(f.len() as u32));
        epb.extend_from_slice(f);
        block(&mut out, 6, &epb, big);
    }
    out
}

fn run(bytes: &[u8], rules: &RuleSet) -> (Vec<Value>, replay::Report) {
    let mut out = Vec::new();
    let report = replay::replay(
        bytes,
        &mut out,
        rules,
        replay::ReplayOptions::new(UnparsableVerdict::Accept),
    );
    let lines = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, report)
}

fn run_ok(bytes: &[u8], rules: &RuleSet) -> Vec<Value> {
    let (lines, report) = run(bytes, rules);
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.summary.frames as usize, lines.len());
    lines
}

fn tls_vector() -> (Vec<u8>, Value) {
    let fx = fixture("tls/clienthellos.json");
    let v = fx["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["transport"] == "tcp" && v["sni"].is_string())
        .unwrap()
        .clone();
    (hex(v["tcp_payload_hex"].as_str().unwrap()), v)
}

fn blocking_client() -> PolicyState {
    let mut lists = BTreeMap::new();
    lists.insert(
        ListKind::IpBlock,
        ListDelta {
            add: vec![Entry::Prefix("203.0.113.7/32".parse::<Cidr>().unwrap())],
            remove: Vec::new(),
        },
    );
    let mut state = PolicyState::new();
    state.apply(Update {
        generation: 7,
        full: true,
        lists,
    });
    state
}

#[test]
fn dns_query_gives_its_names_in_pcap_and_pcapng() {
    let fx = fixture("dns/queries.json");
    let v = fx["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["ip_version"] == 4)
        .unwrap();
    let frame = ethernet(
        &udp(40000, 53, &hex(v["udp_payload_hex"].as_str().unwrap())),
        &[],
    );
    for (format, bytes) in [
        (Format::Pcap, pcap(1, std::slice::from_ref(&frame))),
        (
            Format::PcapNg,
            pcapng(1, std::slice::from_ref(&frame), false),
        ),
        (
            Format::PcapNg,
            pcapng(1, std::slice::from_ref(&frame), true),
        ),
    ] {
        let (lines, report) = run(&bytes, &RuleSet::empty());
        assert_eq!(report.format, Some(format));
        assert!(report.error.is_none());
        let l = &lines[0];
        assert_eq!(l["index"], 1);
        assert_eq!(l["dns_names"], serde_json::json!([v["qname"]]));
        assert_eq!(l["src"], "203.0.113.7");
        assert_eq!(l["dst"], "203.0.113.200");
        assert_eq!(l["src_port"], 40000);
        assert_eq!(l["dst_port"], 53);
        assert_eq!(
            l["protocol"],
            serde_json::json!({"number": 17, "name": "udp"})
        );
        assert_eq!(
            (&l["verdict"], &l["filter"], &l["reason"]),
            (&"accept".into(), &"empty".into(), &"default".into())
        );
        assert_eq!(l["sni"], Value::Null);
        let ts = l["ts"].as_f64().unwrap();
        let expected = if format == Format::Pcap {
            1_700_000_000.25
        } else {
            1_700_000_000.5
        };
        assert!((ts - expected).abs() < 1e-3, "{ts}");
        assert_eq!(report.summary.dns_packets, 1);
    }
}

#[test]
fn client_hello_in_one_segment_and_split_over_two() {
    let (hello, v) = tls_vector();
    let whole = tcp(51000, 443, 1000, &hello);
    let cut = hello.len() / 2;
    let first = tcp(51000, 443, 1000, &hello[..cut]);
    let second = tcp(51000, 443, 1000 + cut as u32, &hello[cut..]);
    let frames = vec![
        ethernet(&whole, &[]),
        ethernet(&first, &[10]),
        ethernet(&second, &[10, 20]),
    ];
    for bytes in [pcap(1, &frames), pcapng(1, &frames, false)] {
        let lines = run_ok(&bytes, &RuleSet::empty());
        assert_eq!(lines.len(), 3);
        for l in [&lines[0], &lines[2]] {
            assert_eq!(l["sni"], v["sni"]);
            assert_eq!(l["ja3"], v["ja3_string"]);
            assert_eq!(l["ja3_hash"], v["ja3_md5"]);
            assert_eq!(l["ja4"], v["ja4"]);
            assert_eq!(l["ja4_r"], v["ja4_r"]);
            assert_eq!(l["protocol"]["name"], "tcp");
            assert_eq!(l["dst_port"], 443);
        }
        for field in ["sni", "ja3", "ja3_hash", "ja4", "ja4_r"] {
            assert_eq!(lines[1][field], Value::Null, "{field} on the first segment");
        }
        assert_eq!(lines[1]["verdict"], "accept");
    }
    let (_, report) = run(&pcap(1, &frames), &RuleSet::empty());
    assert_eq!((report.summary.hellos, report.summary.split_hellos), (2, 1));
}

#[test]
fn blocked_source_is_dropped_on_every_link_type() {
    let rules = blocking_client().build();
    let ip = udp(40000, 9999, b"x");
    let cases: Vec<(u32, Vec<u8>)> = vec![
        (1, ethernet(&ip, &[])),
        (1, ethernet(&ip, &[100, 200])),
        (101, ip.clone()),
        (12, ip.clone()),
        (14, ip.clone()),
        (113, sll(&ip)),
        (276, sll2(&ip)),
        (0, [&2u32.to_le_bytes()[..], &ip].concat()),
        (108, [&2u32.to_be_bytes()[..], &ip].concat()),
    ];
    for (link, frame) in cases {
        let lines = run_ok(&pcap(link, &[frame]), &rules);
        let l = &lines[0];
        assert_eq!(
            (&l["verdict"], &l["filter"], &l["reason"]),
            (&"drop".into(), &"ip".into(), &"BlackList".into()),
            "link type {link}: {l}"
        );
        assert_eq!(l["src"], "203.0.113.7", "link type {link}");
    }
}

#[test]
fn non_ip_frames_are_reported_as_skipped() {
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let cases: Vec<(u32, Vec<u8>, &str)> = vec![
        (1, arp, "ethertype 0x0806"),
        (1, vec![1, 2, 3], "shorter"),
        (147, udp(1, 2, b""), "link type 147"),
        (
            0,
            [&7u32.to_le_bytes()[..], &udp(1, 2, b"")].concat(),
            "family",
        ),
    ];
    for (link, frame, why) in cases {
        // On Ethernet, an IP frame after the skipped one is still evaluated.
        let (lines, report) = run(
            &pcap(link, &[frame, ethernet(&udp(1, 2, b""), &[])]),
            &RuleSet::empty(),
        );
        assert!(report.error.is_none());
        assert_eq!(lines.len(), 2);
        let l = &lines[0];
        assert_eq!(l["verdict"], Value::Null);
        assert_eq!(l["index"], 1);
        assert!(l["skipped"].as_str().unwrap().contains(why), "{l}");
        if link == 1 {
            assert_eq!(report.summary.skipped, 1);
            assert_eq!(lines[1]["verdict"], "accept");
            assert_eq!(lines[1]["index"], 2);
        }
    }
}

#[test]
fn unparsable_ip_gets_the_unparsable_policy() {
    let mut out = Vec::new();
    let bytes = pcap(101, &[vec![0x45, 0, 0]]);
    let report = replay::replay(
        &bytes[..],
        &mut out,
        &RuleSet::empty(),
        replay::ReplayOptions::new(UnparsableVerdict::Drop),
    );
    assert!(report.error.is_none());
    let l: Value = serde_json::from_slice(out.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(
        (&l["verdict"], &l["filter"], &l["reason"]),
        (&"drop".into(), &"empty".into(), &"unparsable".into())
    );
    assert_eq!(l["src"], Value::Null);
    assert_eq!(report.summary.unparsable, 1);
}

#[test]
fn every_prefix_of_a_capture_is_an_error_or_a_clean_end() {
    let (hello, _) = tls_vector();
    let frames = vec![
        ethernet(&tcp(51000, 443, 1, &hello[..100]), &[]),
        ethernet(&tcp(51000, 443, 101, &hello[100..]), &[]),
    ];
    for bytes in [
        pcap(1, &frames),
        pcapng(1, &frames, false),
        pcapng(1, &frames, true),
    ] {
        let mut clean_ends = 0;
        for len in 0..bytes.len() {
            let (lines, report) = run(&bytes[..len], &RuleSet::empty());
            match report.error {
                None => clean_ends += 1,
                Some(ReplayError::Capture(CaptureError::Truncated(_))) => {}
                Some(other) => panic!("prefix {len}: {other:?}"),
            }
            assert_eq!(lines.len() as u64, report.summary.frames);
        }
        // Only at block/record boundaries (after the header).
        assert!((1..=4).contains(&clean_ends), "{clean_ends}");
    }
}

#[test]
fn garbage_and_corrupt_captures_are_errors() {
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (_, report) = run(&garbage, &RuleSet::empty());
    assert!(matches!(
        report.error,
        Some(ReplayError::Capture(CaptureError::UnknownFormat(_)))
    ));
    // A record that claims 1 GiB.
    let mut huge = pcap(1, &[]);
    huge.extend_from_slice(&[0; 8]);
    huge.extend_from_slice(&(1u32 << 30).to_le_bytes());
    huge.extend_from_slice(&(1u32 << 30).to_le_bytes());
    let (_, report) = run(&huge, &RuleSet::empty());
    assert!(matches!(
        report.error,
        Some(ReplayError::Capture(CaptureError::Corrupt { .. }))
    ));
    // pcapng: trailing length differs, bad block length, packet on an undeclared interface.
    let frame = ethernet(&udp(1, 2, b"abc"), &[]);
    let good = pcapng(1, std::slice::from_ref(&frame), false);
    let epb_len = 12 + 20 + frame.len().div_ceil(4) * 4;
    let epb_at = good.len() - epb_len;
    for (at, value) in [(good.len() - 4, 99u32), (epb_at + 4, 13), (epb_at + 8, 1)] {
        let mut bad = good.clone();
        bad[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let (_, report) = run(&bad, &RuleSet::empty());
        assert!(report.error.is_some(), "corrupted at {at}");
    }
    // Random corruption of a valid file never panics.
    let mut seed = 0x1234_5678u32;
    for _ in 0..2000 {
        let mut bad = good.clone();
        for _ in 0..3 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let at = (seed >> 8) as usize % bad.len();
            bad[at] = (seed >> 24) as u8;
        }
        let _ = run(&bad, &RuleSet::empty());
    }
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meds-dataplane"))
}

#[test]
fn binary_replays_with_a_snapshot_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("policy.pb");
    policy::write_state_file(&snapshot, &policy::encode_state_file(&blocking_client())).unwrap();
    let capture = dir.path().join("c.pcapng");
    let (hello, v) = tls_vector();
    std::fs::write(
        &capture,
        pcapng(113, &[sll(&tcp(51000, 443, 9, &hello))], false),
    )
    .unwrap();

    let out = binary()
        .args([
            "replay",
            capture.to_str().unwrap(),
            "--snapshot",
            snapshot.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let l: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(
        (&l["verdict"], &l["filter"], &l["reason"]),
        (&"drop".into(), &"ip".into(), &"BlackList".into())
    );
    assert_eq!(l["sni"], v["sni"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("1 frames: 0 accept, 1 drop"), "{stderr}");

    // No policy source: empty lists, said on stderr.
    let out = binary()
        .args(["replay", capture.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty lists"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"verdict\":\"accept\""));

    // Garbage, truncated, missing: exit 2 with a message and a summary.
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, b"this is not a capture at all").unwrap();
    let truncated = dir.path().join("t.pcap");
    let full = pcap(
        1,
        &[
            ethernet(&udp(1, 53, b"abc"), &[]),
            ethernet(&udp(1, 53, b"abc"), &[]),
        ],
    );
    std::fs::write(&truncated, &full[..full.len() - 5]).unwrap();
    for (path, message) in [
        (&garbage, "not a pcap or pcapng file"),
        (&truncated, "ends in the middle of a record"),
        (&dir.path().join("missing"), "cannot open"),
    ] {
        let out = binary()
            .args(["replay", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{path:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{path:?}: {stderr}");
    }
    let out = binary()
        .args(["replay", truncated.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 frames"));

    // Usage errors: both sources; a daemon flag with the subcommand.
    for args in [
        &["replay", "x", "--snapshot", "a", "--sync-socket", "b"][..],
        &["--queue-num", "1", "replay", "x"],
    ] {
        let out = binary().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    // A policy source that fails: exit 1.
    let out = binary()
        .args(["replay", capture.to_str().unwrap(), "--sync-socket"])
        .arg(dir.path().join("no.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot get the policy"));
}

fn domain_block(names: &[&str]) -> RuleSet {
    let entries: Vec<Entry> = names
        .iter()
        .map(|n| Entry::Domain(meds_proto::DomainName::parse_user(n).unwrap()))
        .collect();
    RuleSet::empty().with_list(ListKind::DomainBlock, &entries)
}

#[test]
fn a_blocklisted_sni_is_dropped_on_the_completing_segment_and_stays_dropped() {
    let (hello, v) = tls_vector();
    let sni = v["sni"].as_str().unwrap();
    let parent = sni.split_once('.').unwrap().1;
    let rules = domain_block(&[parent]);
    let cut = hello.len() / 2;
    let first = tcp(51000, 443, 1000, &hello[..cut]);
    let second = tcp(51000, 443, 1000 + cut as u32, &hello[cut..]);
    let query = {
        let fx = fixture("dns/queries.json");
        let q = fx["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["ip_version"] == 4)
            .unwrap()
            .clone();
        (
            hex(q["udp_payload_hex"].as_str().unwrap()),
            q["qname"].as_str().unwrap().to_owned(),
        )
    };
    let frames = vec![
        ethernet(&first, &[]),
        ethernet(&second, &[]),
        ethernet(&second, &[]),
        ethernet(&tcp(51001, 443, 5, &hello), &[]),
        ethernet(&udp(40000, 53, &query.0), &[]),
    ];
    let lines = run_ok(&pcap(1, &frames), &rules);
    let labels = |l: &Value| {
        (
            l["verdict"].as_str().unwrap().to_owned(),
            l["filter"].as_str().unwrap().to_owned(),
            l["reason"].as_str().unwrap().to_owned(),
        )
    };
    let drop = (
        "drop".to_owned(),
        "domain".to_owned(),
        "BlackList".to_owned(),
    );
    let accept = (
        "accept".to_owned(),
        "empty".to_owned(),
        "default".to_owned(),
    );
    assert_eq!(labels(&lines[0]), accept, "first segment");
    assert_eq!(lines[0]["sni"], Value::Null);
    assert_eq!(labels(&lines[1]), drop, "completing segment");
    assert_eq!(lines[1]["sni"], sni);
    assert_eq!(lines[1]["ja4"], v["ja4"]);
    // The retransmission is not a hello on its own; the blocked flow keeps it dropped.
    assert_eq!(labels(&lines[2]), drop, "retransmission");
    assert_eq!(lines[2]["sni"], Value::Null);
    assert_eq!(lines[2]["errors"], serde_json::json!([]));
    // A whole hello on another flow.
    assert_eq!(labels(&lines[3]), drop, "single segment");
    // The query's name is not blocked.
    assert_eq!(labels(&lines[4]), accept, "dns");
    assert_eq!(lines[4]["dns_names"], serde_json::json!([query.1]));

    // The same capture with the query's name blocked too.
    let rules = domain_block(&[parent, &query.1]);
    let lines = run_ok(&pcap(1, &frames), &rules);
    assert_eq!(labels(&lines[4]), drop, "blocked dns name");

    // --verify-checksums: these hand-built segments carry no checksum, so the segments that
    // start a hello are not inspected and say why (and no reassembly starts).
    let mut out = Vec::new();
    let options = replay::ReplayOptions {
        verify_checksums: true,
        ..replay::ReplayOptions::new(UnparsableVerdict::Accept)
    };
    let report = replay::replay(&pcap(1, &frames)[..], &mut out, &rules, options);
    assert!(report.error.is_none());
    let lines: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, l) in lines[..4].iter().enumerate() {
        assert_eq!(labels(l), accept, "frame {i}");
        let errors = if i == 0 || i == 3 {
            serde_json::json!(["tcp: bad checksum; segment not inspected"])
        } else {
            serde_json::json!([])
        };
        assert_eq!(l["errors"], errors, "frame {i}");
    }
    assert_eq!(report.summary.hellos, 0);
}
