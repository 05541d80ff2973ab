// The rule set `explain_request` runs against: every kind of list. Included (`include!`) by
// `fuzz_targets/explain_request.rs` and by `meds-dataplane/tests/fuzz_corpus.rs`, which replays
// the target's corpus, so both use the same lists. Expects `RuleSet`, `Entry`, `Cidr`,
// `DomainName`, `IpAsn`, `Asn`, `CountryCode` and `ListKind` in scope.

fn explain_rules() -> RuleSet {
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
