use super::*;
use crate::ratelimit::RateLimitSettings;
use meds_proto::{Asn, Cidr, CountryCode, Entry, IpAsn};
use proptest::prelude::*;

fn prefixes(list: &[&str]) -> Vec<Entry> {
    list.iter()
        .map(|s| Entry::Prefix(s.parse::<Cidr>().unwrap()))
        .collect()
}

fn domains(list: &[&str]) -> Vec<Entry> {
    list.iter()
        .map(|s| Entry::Domain(DomainName::from_feed(s).unwrap()))
        .collect()
}

fn row(net: &str, asn: u32, cc: &str) -> Entry {
    Entry::IpAsn(IpAsn {
        prefix: net.parse().unwrap(),
        asn: Asn::new(asn).ok(),
        country: CountryCode::from_feed(cc).ok(),
    })
}

const JA3_SSLBL: &str = "e7d705a3286e19ea42f587b344ee6865";
const JA3_USER: &str = "6734f37431670b3ab4292b8f60f29984";
const JA3_BOTH: &str = "51c64c77e60f3980eea90869b68c58a8";
const JA3_CLEAN: &str = "00000000000000000000000000000001";
const JA4_BAD: &str = "t13d1516h2_8daaf6152771_02713d6af862";
const JA4_CLEAN: &str = "t13d1516h2_8daaf6152771_000000000000";

fn rules_from(lists: &[(ListKind, Vec<Entry>)]) -> RuleSet {
    lists
        .iter()
        .fold(RuleSet::empty().with_generation(9), |r, (k, e)| {
            r.with_list(*k, e)
        })
}

/// Every list filled (shared with the wire tests).
pub(super) fn full_rules() -> RuleSet {
    let ja3 = |list: &[&str]| -> Vec<Entry> {
        list.iter()
            .map(|s| Entry::Ja3(s.parse::<Ja3Hash>().unwrap()))
            .collect()
    };
    rules_from(&[
        (
            ListKind::IpAllow,
            prefixes(&["203.0.113.7", "2001:db8::7", "100.64.0.1"]),
        ),
        (
            ListKind::IpBlock,
            prefixes(&["203.0.113.0/24", "2001:db8::/48"]),
        ),
        (ListKind::FeedFireHol, prefixes(&["198.51.100.0/24"])),
        (
            ListKind::FeedSpamhaus,
            prefixes(&["192.0.2.0/25", "198.51.100.0/23"]),
        ),
        (ListKind::FeedFeodo, prefixes(&["192.0.2.128/25"])),
        (
            ListKind::CountryBlock,
            vec![Entry::Country("ru".parse().unwrap())],
        ),
        (
            ListKind::FeedAsnDrop,
            vec![Entry::Asn(Asn::new(64497).unwrap())],
        ),
        (
            ListKind::AsnBlock,
            vec![Entry::Asn(Asn::new(64498).unwrap())],
        ),
        (
            ListKind::IpAsn,
            vec![
                row("100.64.0.0/16", 64496, "ru"),
                row("100.65.0.0/16", 64497, "de"),
                row("100.66.0.0/16", 64498, "de"),
                row("100.67.0.0/16", 64499, "de"),
                row("2001:db8:100::/48", 64496, "ru"),
            ],
        ),
        (
            ListKind::DomainAllow,
            domains(&["good.example", "ads.partner.test"]),
        ),
        (
            ListKind::DomainBlock,
            domains(&["bad.example", "partner.test"]),
        ),
        (
            ListKind::FeedStevenBlack,
            domains(&["tracker.test", "good.example"]),
        ),
        (ListKind::FeedSomeoneWhoCares, domains(&["spam.test"])),
        (ListKind::FeedSslblJa3, ja3(&[JA3_SSLBL, JA3_BOTH])),
        (ListKind::Ja3Block, ja3(&[JA3_USER, JA3_BOTH])),
        (
            ListKind::Ja4Block,
            vec![Entry::Ja4(JA4_BAD.parse().unwrap())],
        ),
    ])
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn name(s: &str) -> DomainName {
    DomainName::from_feed(s).unwrap()
}

fn q(src: &str) -> Query {
    Query::source(ip(src))
}

fn run(rules: &RuleSet, query: &Query) -> Explanation {
    let e = explain(rules, None, true, query);
    check_shape(&e);
    check_equals_chain(rules, query, &e);
    e
}

/// 17 steps in chain order; no match before the decision, nothing reached after it.
fn check_shape(e: &Explanation) {
    let lists: Vec<&str> = e.steps.iter().map(|s| s.list).collect();
    assert_eq!(
        lists,
        [
            "whitelist",
            "rate_limiter",
            "blacklist",
            "firehol",
            "spamhaus",
            "feodo",
            "countries",
            "spamhaus_asndrop",
            "asns",
            "domain_whitelist",
            "domain_blacklist",
            "stevenblack",
            "someonewhocares",
            "sslbl_ja3",
            "ja3",
            "ja4",
            "default",
        ]
    );
    let first = e
        .steps
        .iter()
        .position(|s| s.outcome == Outcome::Match)
        .expect("a step decides");
    assert_eq!(e.steps[first].decision, Some(e.decision));
    assert!(
        e.steps[first + 1..]
            .iter()
            .all(|s| s.outcome == Outcome::NotReached
                && s.decision.is_none()
                && s.detail.is_empty())
    );
    assert!(
        e.steps[..first]
            .iter()
            .all(|s| s.outcome != Outcome::NotReached && s.decision.is_none())
    );
    for s in &e.steps {
        if let Some(d) = s.decision {
            assert_eq!(s.filter, d.filter);
        }
    }
}

fn check_equals_chain(rules: &RuleSet, query: &Query, e: &Explanation) {
    let dns: Vec<&str> = query.dns_seen().iter().map(DomainName::as_str).collect();
    let view = app_view(query, &dns);
    assert_eq!(
        e.decision,
        rules.evaluate_with(query.source, &view),
        "{query:?}"
    );
}

fn step<'a>(e: &'a Explanation, list: &str) -> &'a Step {
    e.steps.iter().find(|s| s.list == list).unwrap()
}

/// (list, outcome, a part of the detail)
type Want = (&'static str, Outcome, &'static str);

#[test]
fn table() {
    use Outcome::{Match, NoMatch, NotReached, Skipped};
    let rules = full_rules();
    let with = |src: &str, f: &dyn Fn(&mut Query)| {
        let mut query = q(src);
        f(&mut query);
        query
    };
    let cases: Vec<(&str, Query, Decision, Vec<Want>)> = vec![
        (
            "allowlist ends the chain",
            q("203.0.113.7"),
            Decision::WHITELISTED,
            vec![
                ("whitelist", Match, "203.0.113.7 is in 203.0.113.7/32"),
                ("rate_limiter", NotReached, ""),
                ("blacklist", NotReached, ""),
                ("default", NotReached, ""),
            ],
        ),
        (
            "blocklist v4 with the prefix",
            q("203.0.113.9"),
            Decision::BLACKLISTED,
            vec![
                ("whitelist", NoMatch, "203.0.113.9 is not listed"),
                ("rate_limiter", Skipped, "off"),
                ("blacklist", Match, "203.0.113.9 is in 203.0.113.0/24"),
                ("firehol", NotReached, ""),
            ],
        ),
        (
            "blocklist v6 with the prefix",
            q("2001:db8::8"),
            Decision::BLACKLISTED,
            vec![("blacklist", Match, "2001:db8::8 is in 2001:db8::/48")],
        ),
        (
            "FireHOL before Spamhaus",
            q("198.51.100.1"),
            Decision::FIREHOL,
            vec![
                ("blacklist", NoMatch, "not listed"),
                ("firehol", Match, "198.51.100.0/24"),
                ("spamhaus", NotReached, ""),
            ],
        ),
        (
            "Spamhaus",
            q("198.51.101.1"),
            Decision::SPAMHAUS,
            vec![("spamhaus", Match, "198.51.100.0/23")],
        ),
        (
            "Feodo",
            q("192.0.2.200"),
            Decision::FEODO,
            vec![
                ("spamhaus", NoMatch, ""),
                ("feodo", Match, "192.0.2.128/25"),
            ],
        ),
        (
            "country with the IP-to-ASN row",
            q("100.64.9.9"),
            Decision::COUNTRY,
            vec![
                (
                    "countries",
                    Match,
                    "country ru is listed (iplocate row 100.64.0.0/16: AS64496, ru)",
                ),
                ("spamhaus_asndrop", NotReached, ""),
            ],
        ),
        (
            "country v6",
            q("2001:db8:100::1"),
            Decision::COUNTRY,
            vec![("countries", Match, "2001:db8:100::/48: AS64496, ru")],
        ),
        (
            "ASN-DROP",
            q("100.65.0.1"),
            Decision::ASN_DROP,
            vec![
                (
                    "countries",
                    NoMatch,
                    "country de not listed (iplocate row 100.65.0.0/16: AS64497, de)",
                ),
                (
                    "spamhaus_asndrop",
                    Match,
                    "AS64497 is listed (iplocate row 100.65.0.0/16",
                ),
                ("asns", NotReached, ""),
            ],
        ),
        (
            "user ASN",
            q("100.66.255.255"),
            Decision::ASN_BLACKLISTED,
            vec![
                ("spamhaus_asndrop", NoMatch, "AS64498 not listed"),
                (
                    "asns",
                    Match,
                    "AS64498 is listed (iplocate row 100.66.0.0/16: AS64498, de)",
                ),
            ],
        ),
        (
            "unknown origin",
            q("100.72.0.1"),
            Decision::DEFAULT,
            vec![
                (
                    "countries",
                    NoMatch,
                    "country unknown (100.72.0.1 not in the iplocate table)",
                ),
                ("asns", NoMatch, "ASN unknown"),
                ("domain_whitelist", Skipped, "no SNI or DNS name given"),
                ("domain_blacklist", Skipped, "no SNI or DNS name given"),
                ("sslbl_ja3", Skipped, "no JA3 given"),
                ("ja4", Skipped, "no JA4 given"),
                ("default", Match, "no filter matched"),
            ],
        ),
        (
            "an allowlisted SNI accepts, also when a hosts feed lists it",
            with("10.0.0.1", &|q| {
                q.port = Some(443);
                q.sni = Some(name("www.good.example"));
                q.ja3 = Some(JA3_SSLBL.parse().unwrap());
            }),
            Decision::DOMAIN_WHITELISTED,
            vec![
                (
                    "domain_whitelist",
                    Match,
                    "every name is allowlisted: www.good.example (entry good.example)",
                ),
                ("stevenblack", NotReached, ""),
                ("sslbl_ja3", NotReached, ""),
            ],
        ),
        (
            "the source decides before the names",
            with("192.0.2.250", &|q| {
                q.dns = vec![name("good.example"), name("x.ads.partner.test")];
                q.ja3 = Some(JA3_SSLBL.parse().unwrap());
            }),
            Decision::FEODO,
            vec![],
        ),
        (
            "all names allowlisted: accept, fingerprints not reached",
            with("10.0.0.1", &|q| {
                q.dns = vec![name("good.example"), name("x.ads.partner.test")];
            }),
            Decision::DOMAIN_WHITELISTED,
            vec![
                (
                    "domain_whitelist",
                    Match,
                    "every name is allowlisted: good.example, x.ads.partner.test (entry ads.partner.test)",
                ),
                ("domain_blacklist", NotReached, ""),
                ("ja4", NotReached, ""),
            ],
        ),
        (
            "one name not allowlisted: the blocklist decides per name",
            with("10.0.0.1", &|q| {
                q.dns = vec![name("ads.partner.test"), name("www.bad.example")];
            }),
            Decision::DOMAIN_BLACKLISTED,
            vec![
                (
                    "domain_whitelist",
                    NoMatch,
                    "not allowlisted: www.bad.example; allowlisted (exempt from the domain blocklists): ads.partner.test",
                ),
                (
                    "domain_blacklist",
                    Match,
                    "listed: www.bad.example (entry bad.example); listed but allowlisted, so exempt: ads.partner.test (entry partner.test)",
                ),
            ],
        ),
        (
            "an allowlisted name in a blocklist is exempt",
            with("10.0.0.1", &|q| {
                q.dns = vec![name("ads.partner.test"), name("clean.test")];
            }),
            Decision::DEFAULT,
            vec![
                ("domain_whitelist", NoMatch, "not allowlisted: clean.test"),
                (
                    "domain_blacklist",
                    NoMatch,
                    "listed but allowlisted, so exempt: ads.partner.test (entry partner.test)",
                ),
                ("stevenblack", NoMatch, "no name is listed"),
                ("default", Match, ""),
            ],
        ),
        (
            "StevenBlack",
            with("10.0.0.1", &|q| q.sni = Some(name("a.tracker.test"))),
            Decision::STEVENBLACK,
            vec![(
                "stevenblack",
                Match,
                "listed: a.tracker.test (entry tracker.test)",
            )],
        ),
        (
            "someonewhocares",
            with("10.0.0.1", &|q| q.dns = vec![name("spam.test")]),
            Decision::SOMEONEWHOCARES,
            vec![("someonewhocares", Match, "listed: spam.test")],
        ),
        (
            "SSLBL before the user JA3 list",
            with("10.0.0.1", &|q| q.ja3 = Some(JA3_BOTH.parse().unwrap())),
            Decision::SSLBL,
            vec![
                ("domain_whitelist", Skipped, "no SNI or DNS name given"),
                (
                    "sslbl_ja3",
                    Match,
                    "JA3 51c64c77e60f3980eea90869b68c58a8 is listed",
                ),
                ("ja3", NotReached, ""),
            ],
        ),
        (
            "user JA3 list",
            with("10.0.0.1", &|q| q.ja3 = Some(JA3_USER.parse().unwrap())),
            Decision::JA3_BLACKLISTED,
            vec![
                ("sslbl_ja3", NoMatch, "not listed"),
                ("ja3", Match, JA3_USER),
            ],
        ),
        (
            "JA4",
            with("10.0.0.1", &|q| {
                q.ja3 = Some(JA3_CLEAN.parse().unwrap());
                q.ja4 = Some(JA4_BAD.parse().unwrap());
            }),
            Decision::JA4_BLACKLISTED,
            vec![
                ("ja3", NoMatch, ""),
                (
                    "ja4",
                    Match,
                    "JA4 t13d1516h2_8daaf6152771_02713d6af862 is listed",
                ),
                ("default", NotReached, ""),
            ],
        ),
        (
            "clean JA4",
            with("10.0.0.1", &|q| q.ja4 = Some(JA4_CLEAN.parse().unwrap())),
            Decision::DEFAULT,
            vec![("ja4", NoMatch, "not listed"), ("default", Match, "")],
        ),
        (
            "DNS names on another port are not seen",
            with("10.0.0.1", &|q| {
                q.port = Some(443);
                q.dns = vec![name("bad.example")];
            }),
            Decision::DEFAULT,
            vec![(
                "domain_blacklist",
                Skipped,
                "DNS names are read only from port-53 traffic (port 443)",
            )],
        ),
        (
            "DNS names on another port, the SNI still seen",
            with("10.0.0.1", &|q| {
                q.port = Some(443);
                q.dns = vec![name("bad.example")];
                q.sni = Some(name("clean.test"));
            }),
            Decision::DEFAULT,
            vec![(
                "domain_blacklist",
                NoMatch,
                "no name is listed; the DNS names are ignored: they are read only from port-53 traffic (port 443)",
            )],
        ),
        (
            "DNS names on port 53",
            with("10.0.0.1", &|q| {
                q.port = Some(53);
                q.dns = vec![name("bad.example")];
            }),
            Decision::DOMAIN_BLACKLISTED,
            vec![("domain_blacklist", Match, "listed: bad.example")],
        ),
        (
            "a ClientHello is not read on port 53",
            with("10.0.0.1", &|q| {
                q.port = Some(53);
                q.ja4 = Some(JA4_BAD.parse().unwrap());
            }),
            Decision::DEFAULT,
            vec![(
                "ja4",
                Skipped,
                "no JA4 seen; the SNI, JA3 and JA4 are ignored",
            )],
        ),
    ];
    for (label, query, decision, wants) in cases {
        let e = run(&rules, &query);
        assert_eq!(e.decision, decision, "{label}");
        assert_eq!(e.generation, 9);
        for (list, outcome, detail) in wants {
            let s = step(&e, list);
            assert_eq!(s.outcome, outcome, "{label}: {list}: {s:?}");
            assert!(s.detail.contains(detail), "{label}: {list}: {:?}", s.detail);
            if outcome == Outcome::Match {
                assert_eq!(s.decision, Some(decision), "{label}: {list}");
            }
        }
    }
}

#[test]
fn empty_lists_are_skipped_and_default_accepts() {
    let mut query = q("203.0.113.7");
    query.sni = Some(name("bad.example"));
    query.ja3 = Some(JA3_SSLBL.parse().unwrap());
    query.ja4 = Some(JA4_BAD.parse().unwrap());
    let e = run(&RuleSet::empty(), &query);
    assert_eq!(e.decision, Decision::DEFAULT);
    assert_eq!(e.generation, 0);
    let (last, rest) = e.steps.split_last().unwrap();
    assert_eq!(
        (last.outcome, last.decision),
        (Outcome::Match, Some(Decision::DEFAULT))
    );
    for s in rest {
        assert_eq!(s.outcome, Outcome::Skipped, "{s:?}");
        let want = if s.list == RATE_LIMITER {
            "off"
        } else {
            "list empty"
        };
        assert_eq!(s.detail, want, "{s:?}");
    }
}

#[test]
fn origin_needs_the_table() {
    let rules = rules_from(&[(
        ListKind::CountryBlock,
        vec![Entry::Country("ru".parse().unwrap())],
    )]);
    let e = run(&rules, &q("100.64.0.1"));
    let s = step(&e, "countries");
    assert_eq!(s.outcome, Outcome::Skipped);
    assert_eq!(s.detail, "country unknown (iplocate table empty)");
}

#[test]
fn merged_ranges_are_shown_as_ranges() {
    let rules = rules_from(&[(ListKind::IpBlock, prefixes(&["10.0.0.0/24", "10.0.1.0/25"]))]);
    let e = run(&rules, &q("10.0.1.1"));
    assert_eq!(
        step(&e, "blacklist").detail,
        "10.0.1.1 is in 10.0.0.0-10.0.1.127"
    );
}

#[test]
fn range_text_cases() {
    for (a, b, want) in [
        ("0.0.0.0", "255.255.255.255", "0.0.0.0/0"),
        ("10.0.0.0", "10.0.0.0", "10.0.0.0/32"),
        ("10.0.0.0", "10.0.1.255", "10.0.0.0/23"),
        ("10.0.1.0", "10.0.2.255", "10.0.1.0-10.0.2.255"),
        ("10.0.0.0", "10.0.0.2", "10.0.0.0-10.0.0.2"),
        ("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::/0"),
        ("2001:db8::", "2001:db8::ff", "2001:db8::/120"),
    ] {
        assert_eq!(range_text(ip(a), ip(b)), want);
    }
}

#[test]
fn rate_limiter_is_shown_not_asked() {
    let config = RateLimitConfig::new(RateLimitSettings {
        rate: 100,
        burst: 200,
        ..RateLimitSettings::default()
    })
    .unwrap();
    let e = explain(&full_rules(), Some(&config), true, &q("10.0.0.1"));
    let s = step(&e, RATE_LIMITER);
    assert_eq!(s.filter, Filter::Rate);
    assert_eq!(s.outcome, Outcome::Skipped);
    assert!(
        s.detail
            .starts_with("not evaluated (depends on traffic): 100 packets/s per source, burst 200"),
        "{}",
        s.detail
    );
    let e = explain(&full_rules(), Some(&config), true, &q("203.0.113.7"));
    assert_eq!(step(&e, RATE_LIMITER).outcome, Outcome::NotReached);
}

#[test]
fn offload_notes() {
    let rules = full_rules();
    let ip_only = rules_from(&[(ListKind::IpBlock, prefixes(&["203.0.113.0/24"]))]);
    let with = |src: &str, port: Option<u16>, dns: &[&str], sni: Option<&str>| Query {
        port,
        dns: dns.iter().map(|n| name(n)).collect(),
        sni: sni.map(name),
        ..q(src)
    };
    let cases: Vec<(&str, &RuleSet, bool, Query, &str)> = vec![
        ("off", &rules, false, q("203.0.113.7"), "offload disabled"),
        (
            "allowlisted",
            &rules,
            true,
            q("203.0.113.7"),
            "trusted (offloaded to the kernel): the source is allowlisted",
        ),
        (
            "allowlisted, DNS",
            &rules,
            true,
            with("203.0.113.7", Some(53), &[], None),
            "trusted (offloaded to the kernel)",
        ),
        (
            "blocked source",
            &rules,
            true,
            q("203.0.113.9"),
            "blocked (offloaded to the kernel): the source is blocked",
        ),
        (
            "blocked source, DNS",
            &rules,
            true,
            with("203.0.113.9", Some(53), &[], None),
            "blocked (offloaded to the kernel)",
        ),
        (
            "DNS accepted",
            &rules,
            true,
            with("10.0.0.1", Some(53), &["clean.test"], None),
            "not offloaded: DNS (port 53)",
        ),
        (
            "DNS dropped",
            &rules,
            true,
            with("10.0.0.1", None, &["bad.example"], None),
            "not offloaded: DNS (port 53)",
        ),
        (
            "payload drop",
            &rules,
            true,
            with("10.0.0.1", Some(443), &[], Some("bad.example")),
            "blocked (offloaded to the kernel): a TCP flow",
        ),
        (
            "accept with payload lists",
            &rules,
            true,
            with("10.0.0.1", Some(443), &[], Some("clean.test")),
            "a TCP flow only after its first data was inspected",
        ),
        (
            "accept without payload lists",
            &ip_only,
            true,
            q("10.0.0.1"),
            "trusted (offloaded to the kernel) on the flow's first accepted packet",
        ),
    ];
    for (label, rules, offload, query, want) in cases {
        let e = explain(rules, None, offload, &query);
        assert!(e.offload.contains(want), "{label}: {}", e.offload);
    }
}

// ----- the key property: the explanation's decision is the chain's -----

fn v4_pool() -> impl Strategy<Value = Cidr> {
    (0u32..1024, 22u8..=32).prop_map(|(host, len)| {
        let addr = std::net::Ipv4Addr::from(0x0a00_0000 | host);
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        Cidr::new(IpAddr::V4((u32::from(addr) & mask).into()), len).unwrap()
    })
}

fn v6_pool() -> impl Strategy<Value = Cidr> {
    (0u128..256, 120u8..=128).prop_map(|(host, len)| {
        let addr = 0x2001_0db8_u128 << 96 | host;
        let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        Cidr::new(IpAddr::V6((addr & mask).into()), len).unwrap()
    })
}

fn any_cidr() -> impl Strategy<Value = Cidr> {
    prop_oneof![3 => v4_pool(), 1 => v6_pool()]
}

fn any_source() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        3 => (0u32..1024).prop_map(|h| IpAddr::V4((0x0a00_0000 | h).into())),
        1 => (0u128..256).prop_map(|h| IpAddr::V6(((0x2001_0db8_u128 << 96) | h).into())),
    ]
}

fn prefix_list() -> impl Strategy<Value = Vec<Entry>> {
    proptest::collection::vec(any_cidr().prop_map(Entry::Prefix), 0..4)
}

const NAMES: [&str; 8] = [
    "example",
    "a.example",
    "x.a.example",
    "b.example",
    "test",
    "c.test",
    "d.c.test",
    "other",
];

fn any_name() -> impl Strategy<Value = DomainName> {
    proptest::sample::select(&NAMES[..]).prop_map(name)
}

fn domain_list() -> impl Strategy<Value = Vec<Entry>> {
    proptest::collection::vec(any_name().prop_map(Entry::Domain), 0..3)
}

const JA3S: [&str; 3] = [JA3_SSLBL, JA3_USER, JA3_BOTH];
const JA4S: [&str; 2] = [JA4_BAD, JA4_CLEAN];

fn any_ja3() -> impl Strategy<Value = Ja3Hash> {
    proptest::sample::select(&JA3S[..]).prop_map(|s| s.parse().unwrap())
}

fn any_ja4() -> impl Strategy<Value = Ja4> {
    proptest::sample::select(&JA4S[..]).prop_map(|s| s.parse().unwrap())
}

fn any_asn() -> impl Strategy<Value = Asn> {
    (64496u32..64500).prop_map(|n| Asn::new(n).unwrap())
}

fn any_country() -> impl Strategy<Value = CountryCode> {
    proptest::sample::select(&["ru", "de", "kp"][..]).prop_map(|c| c.parse().unwrap())
}

fn any_row() -> impl Strategy<Value = Entry> {
    (
        any_cidr(),
        proptest::option::of(any_asn()),
        proptest::option::of(any_country()),
    )
        .prop_filter("a row has an ASN or a country", |(_, a, c)| {
            a.is_some() || c.is_some()
        })
        .prop_map(|(prefix, asn, country)| {
            Entry::IpAsn(IpAsn {
                prefix,
                asn,
                country,
            })
        })
}

fn any_rules() -> impl Strategy<Value = RuleSet> {
    let ip = (
        prefix_list(),
        prefix_list(),
        prefix_list(),
        prefix_list(),
        prefix_list(),
    );
    let origin = (
        proptest::collection::vec(any_country().prop_map(Entry::Country), 0..2),
        proptest::collection::vec(any_asn().prop_map(Entry::Asn), 0..2),
        proptest::collection::vec(any_asn().prop_map(Entry::Asn), 0..2),
        proptest::collection::vec(any_row(), 0..5),
    );
    let app = (
        domain_list(),
        domain_list(),
        domain_list(),
        domain_list(),
        proptest::collection::vec(any_ja3().prop_map(Entry::Ja3), 0..2),
        proptest::collection::vec(any_ja3().prop_map(Entry::Ja3), 0..2),
        proptest::collection::vec(any_ja4().prop_map(Entry::Ja4), 0..2),
    );
    (ip, origin, app, any::<u64>()).prop_map(|(ip, origin, app, generation)| {
        let lists = [
            (ListKind::IpAllow, ip.0),
            (ListKind::IpBlock, ip.1),
            (ListKind::FeedFireHol, ip.2),
            (ListKind::FeedSpamhaus, ip.3),
            (ListKind::FeedFeodo, ip.4),
            (ListKind::CountryBlock, origin.0),
            (ListKind::AsnBlock, origin.1),
            (ListKind::FeedAsnDrop, origin.2),
            (ListKind::IpAsn, origin.3),
            (ListKind::DomainAllow, app.0),
            (ListKind::DomainBlock, app.1),
            (ListKind::FeedStevenBlack, app.2),
            (ListKind::FeedSomeoneWhoCares, app.3),
            (ListKind::FeedSslblJa3, app.4),
            (ListKind::Ja3Block, app.5),
            (ListKind::Ja4Block, app.6),
        ];
        lists
            .iter()
            .fold(RuleSet::empty().with_generation(generation), |r, (k, e)| {
                r.with_list(*k, e)
            })
    })
}

fn any_query() -> impl Strategy<Value = Query> {
    (
        any_source(),
        proptest::option::of(proptest::sample::select(&[53u16, 443, 80][..])),
        proptest::option::of(any_name()),
        proptest::collection::vec(any_name(), 0..3),
        proptest::option::of(any_ja3()),
        proptest::option::of(any_ja4()),
    )
        .prop_map(|(source, port, sni, dns, ja3, ja4)| Query {
            source,
            port,
            sni,
            dns,
            ja3,
            ja4,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decision_equals_the_chain(rules in any_rules(), query in any_query(), offload in any::<bool>()) {
        let e = explain(&rules, None, offload, &query);
        let dns: Vec<&str> = query.dns_seen().iter().map(DomainName::as_str).collect();
        let view = app_view(&query, &dns);
        prop_assert_eq!(e.decision, rules.evaluate_with(query.source, &view));
        prop_assert_eq!(e.generation, rules.generation());
        check_shape(&e);
    }
}

/// The generators above make every decision happen, so the equality property is not checked
/// only on default accepts.
#[test]
fn the_generators_reach_every_decision() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(Config::default().rng_algorithm),
    );
    let strategy = (any_rules(), any_query());
    let mut seen = Vec::new();
    for _ in 0..3000 {
        let (rules, query) = strategy.new_tree(&mut runner).unwrap().current();
        seen.push(explain(&rules, None, true, &query).decision);
    }
    let all = ListKind::ALL
        .iter()
        .filter_map(|k| Decision::on_match(*k))
        .chain([Decision::DEFAULT]);
    for d in all {
        assert!(seen.contains(&d), "{d:?} never happened");
    }
}
