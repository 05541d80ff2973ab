//! Any bytes decoded as an `ExplainRequest` (what the controller sends over the sync stream)
//! and answered by `explain::wire::respond` against a rule set with every kind of list: the
//! answer either names the refused field or explains the whole chain, and never panics.
//! The rule set is the one `meds-dataplane/tests/fuzz_corpus.rs` replays the corpus with.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meds_dataplane::chain::RuleSet;
use meds_proto::{Asn, Cidr, CountryCode, DomainName, Entry, IpAsn, ListKind, pb};
use prost::Message;

/// A rule set with every kind of list (the same in the fuzz target and its corpus replay).
fn rules() -> RuleSet {
    let p = |s: &str| Entry::Prefix(s.parse::<Cidr>().unwrap());
    let d = |s: &str| Entry::Domain(DomainName::parse_user(s).unwrap());
    let row = |net: &str, asn: u32, cc: &str| {
        Entry::IpAsn(IpAsn {
            prefix: net.parse().unwrap(),
            asn: Asn::new(asn).ok(),
            country: CountryCode::from_feed(cc).ok(),
        })
    };
    let lists: Vec<(ListKind, Vec<Entry>)> = vec![
        (
            ListKind::IpAllow,
            vec![p("10.0.0.0/8"), p("2001:db8:1::/48")],
        ),
        (
            ListKind::IpBlock,
            vec![p("203.0.113.0/24"), p("2001:db8:dead::/48")],
        ),
        (ListKind::FeedFireHol, vec![p("198.51.100.0/24")]),
        (ListKind::FeedSpamhaus, vec![p("192.0.2.0/25")]),
        (ListKind::FeedFeodo, vec![p("192.0.2.200/32")]),
        (
            ListKind::CountryBlock,
            vec![Entry::Country("ru".parse().unwrap())],
        ),
        (
            ListKind::AsnBlock,
            vec![Entry::Asn(Asn::new(64497).unwrap())],
        ),
        (
            ListKind::FeedAsnDrop,
            vec![Entry::Asn(Asn::new(64498).unwrap())],
        ),
        (
            ListKind::IpAsn,
            vec![
                row("100.64.0.0/16", 64496, "ru"),
                row("100.65.0.0/16", 64497, "fr"),
                row("100.66.0.0/16", 64498, "de"),
            ],
        ),
        (ListKind::DomainAllow, vec![d("ok.example.com")]),
        (ListKind::DomainBlock, vec![d("example.com")]),
        (ListKind::FeedStevenBlack, vec![d("ads.test")]),
        (ListKind::FeedSomeoneWhoCares, vec![d("track.test")]),
        (
            ListKind::FeedSslblJa3,
            vec![Entry::Ja3(
                "e7d705a3286e19ea42f587b344ee6865".parse().unwrap(),
            )],
        ),
        (
            ListKind::Ja3Block,
            vec![Entry::Ja3(
                "6734f37431670b3ab4292b8f60f29984".parse().unwrap(),
            )],
        ),
        (
            ListKind::Ja4Block,
            vec![Entry::Ja4(
                "t13d1516h2_8daaf6152771_02713d6af862".parse().unwrap(),
            )],
        ),
    ];
    lists
        .iter()
        .fold(RuleSet::empty().with_generation(7), |r, (k, e)| {
            r.with_list(*k, e)
        })
}

fuzz_target!(|data: &[u8]| {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    let rules = RULES.get_or_init(rules);
    if let Ok(request) = pb::ExplainRequest::decode(data) {
        for offload in [false, true] {
            let answer = meds_dataplane::explain::wire::respond(rules, None, offload, &request);
            assert_eq!(answer.id, request.id);
            // Refused with a reason, or explained step by step; never both, never neither.
            assert!(answer.error.is_empty() != answer.steps.is_empty());
        }
    }
});
