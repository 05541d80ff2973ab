//! Sequences of packets through the payload inspector with every payload list loaded, once as
//! the worker runs it and once as replay does: never a panic, and both give the same decision
//! for every packet (replay mode only extracts more). Small limits so that reassembly gives
//! up, evicts and expires, and the blocked-flow table evicts and expires.
//!
//! Input: records of `[len_hi, len_lo, clock_step, packet...]`; the clock advances by
//! `clock_step × 8` ms before the packet.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meds_dataplane::chain::{Reason, RuleSet, UnparsableVerdict};
use meds_dataplane::flow::Limits;
use meds_dataplane::inspect::{Extract, InspectConfig, Inspector};
use meds_proto::{DomainName, Entry, ListKind};

fn rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| {
        let d = |s: &str| Entry::Domain(DomainName::parse_user(s).expect("domain"));
        RuleSet::empty()
            .with_list(ListKind::DomainAllow, &[d("ok.example.com")])
            .with_list(ListKind::DomainBlock, &[d("example.com"), d("google.com")])
            .with_list(ListKind::FeedStevenBlack, &[d("ads.test")])
            .with_list(
                ListKind::Ja3Block,
                &[Entry::Ja3("9d33d8206d4fec4c8b1423c728f4cd3c".parse().expect("ja3"))],
            )
            .with_list(
                ListKind::Ja4Block,
                &[Entry::Ja4("t13d1516h2_8daaf6152771_02713d6af862".parse().expect("ja4"))],
            )
    })
}

fn config(extract: Extract) -> InspectConfig {
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

fuzz_target!(|data: &[u8]| {
    let mut live = Inspector::new(config(Extract::Needed)).expect("config");
    let mut replay = Inspector::new(config(Extract::All)).expect("config");
    let mut rest = data;
    let mut now = 0u64;
    while let [hi, lo, step, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (packet, next) = tail.split_at(len);
        rest = next;
        now += u64::from(*step) * 8;
        let a = live.inspect(rules(), packet, now);
        let b = replay.inspect(rules(), packet, now);
        assert_eq!(a.decision, b.decision);
        if meds_dataplane::packet::parse_header(packet).is_ok() {
            assert_ne!(a.decision.reason, Reason::Unparsable);
        }
        live.expire(now);
        replay.expire(now);
    }
});
