//! Autonomous systems: [`AsnTable`] (the IP-to-ASN-and-country table, longest-prefix match)
//! and [`AsnSet`] (a set of AS numbers, e.g. Spamhaus ASN-DROP).
//!
//! The table is flattened into disjoint address ranges when it is built (see the `range`
//! module): each range carries the [`Origin`] of the most specific row covering it, packed in
//! 8 bytes. A lookup is one index load plus a short binary search; it never allocates.
//!
//! [`AsnSet`] is a sorted, deduplicated `Box<[u32]>` searched by bisection: ~1,000 ASNs are 4 KB,
//! ten comparisons in L1, faster than hashing a key (`benches/chain.rs`, group `asn_set`).

use std::fmt;
use std::net::IpAddr;

use meds_proto::{Asn, CountryCode, IpAsn};

use super::ip::Span;
use super::range::RangeMap;

/// Who announces an address, and where it is registered (either may be unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    pub asn: Option<Asn>,
    pub country: Option<CountryCode>,
}

/// [`Origin`] in 8 bytes: the raw ASN (0: unknown) and the country.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    asn: u32,
    country: Option<CountryCode>,
}

impl Packed {
    fn of(row: &IpAsn) -> Packed {
        Packed {
            asn: row.asn.map_or(0, Asn::get),
            country: row.country,
        }
    }

    fn origin(self) -> Origin {
        Origin {
            // 0 stands for "unknown"; every other stored value came from a valid `Asn`.
            asn: Asn::new(self.asn).ok(),
            country: self.country,
        }
    }
}

/// The IP-to-ASN table: address → [`Origin`] of the most specific row containing it.
/// Immutable, `Send + Sync`; share it behind an `Arc`.
pub struct AsnTable {
    v4: RangeMap<u32, Packed>,
    v6: RangeMap<u128, Packed>,
    /// Rows given, per family.
    rows: (usize, usize),
}

impl AsnTable {
    pub fn empty() -> AsnTable {
        AsnTable {
            v4: RangeMap::empty(),
            v6: RangeMap::empty(),
            rows: (0, 0),
        }
    }

    /// Build from rows. Rows may nest (the most specific wins) but need not; when two rows
    /// have the same prefix, the one given last wins.
    pub fn from_rows<'a, I: IntoIterator<Item = &'a IpAsn>>(rows: I) -> AsnTable {
        let mut v4: Vec<(u32, u32, Packed)> = Vec::new();
        let mut v6: Vec<(u128, u128, Packed)> = Vec::new();
        for row in rows {
            let packed = Packed::of(row);
            match Span::of(&row.prefix) {
                Span::V4(first, last) => v4.push((first, last, packed)),
                Span::V6(first, last) => v6.push((first, last, packed)),
            }
        }
        let rows = (v4.len(), v6.len());
        AsnTable {
            v4: RangeMap::longest_prefix(v4),
            v6: RangeMap::longest_prefix(v6),
            rows,
        }
    }

    /// The origin of `ip`, from the most specific row containing it.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<Origin> {
        let packed = match ip {
            IpAddr::V4(v4) => self.v4.get(u32::from(v4)),
            IpAddr::V6(v6) => self.v6.get(u128::from(v6)),
        };
        packed.map(Packed::origin)
    }

    /// Like [`AsnTable::lookup`], with the first and last address of the stored range that
    /// gave the answer (read-only, for explanations): the part of the most specific row around
    /// `ip` that no more specific row covers, merged with adjacent parts of the same origin.
    pub fn lookup_range(&self, ip: IpAddr) -> Option<(IpAddr, IpAddr, Origin)> {
        match ip {
            IpAddr::V4(v4) => self.v4.get_range(u32::from(v4)).map(|(first, last, p)| {
                (
                    IpAddr::from(first.to_be_bytes()),
                    IpAddr::from(last.to_be_bytes()),
                    p.origin(),
                )
            }),
            IpAddr::V6(v6) => self.v6.get_range(u128::from(v6)).map(|(first, last, p)| {
                (
                    IpAddr::from(first.to_be_bytes()),
                    IpAddr::from(last.to_be_bytes()),
                    p.origin(),
                )
            }),
        }
    }

    /// Rows given (IPv4 and IPv6 together).
    pub fn len(&self) -> usize {
        self.rows.0 + self.rows.1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Disjoint address ranges the rows flattened into (IPv4, IPv6).
    pub fn ranges(&self) -> (usize, usize) {
        (self.v4.ranges(), self.v6.ranges())
    }

    /// Heap bytes held by the lookup structure.
    pub fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes() + self.v6.heap_bytes()
    }
}

impl Default for AsnTable {
    fn default() -> AsnTable {
        AsnTable::empty()
    }
}

impl fmt::Debug for AsnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsnTable")
            .field("ipv4_rows", &self.rows.0)
            .field("ipv6_rows", &self.rows.1)
            .finish()
    }
}

/// An immutable set of AS numbers.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AsnSet {
    sorted: Box<[u32]>,
}

impl AsnSet {
    pub fn empty() -> AsnSet {
        AsnSet::default()
    }

    /// Build from ASNs; duplicates collapse.
    pub fn from_asns<I: IntoIterator<Item = Asn>>(asns: I) -> AsnSet {
        let mut v: Vec<u32> = asns.into_iter().map(Asn::get).collect();
        v.sort_unstable();
        v.dedup();
        AsnSet {
            sorted: v.into_boxed_slice(),
        }
    }

    #[inline]
    pub fn contains(&self, asn: Asn) -> bool {
        self.sorted.binary_search(&asn.get()).is_ok()
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

impl fmt::Debug for AsnSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsnSet")
            .field("asns", &self.sorted.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meds_proto::Cidr;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn asn(n: u32) -> Asn {
        Asn::new(n).unwrap()
    }

    fn cc(s: &str) -> CountryCode {
        CountryCode::from_feed(s).unwrap()
    }

    fn row(prefix: &str, asn_n: u32, country: &str) -> IpAsn {
        IpAsn {
            prefix: prefix.parse().unwrap(),
            asn: (asn_n != 0).then(|| asn(asn_n)),
            country: (!country.is_empty()).then(|| cc(country)),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn is_send_and_sync_and_compact() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<AsnTable>();
        assert_send_sync::<AsnSet>();
        assert_eq!(std::mem::size_of::<Packed>(), 8);
    }

    #[test]
    fn lookup_range_gives_the_part_of_the_row() {
        let table = AsnTable::from_rows(&[
            row("203.0.0.0/8", 64500, "fr"),
            row("203.0.113.0/24", 64496, "de"),
            row("2001:db8::/32", 64510, "se"),
        ]);
        let origin = |n: u32, c: &str| Origin {
            asn: Some(asn(n)),
            country: Some(cc(c)),
        };
        let cases = [
            (
                "203.0.113.9",
                Some(("203.0.113.0", "203.0.113.255", origin(64496, "de"))),
            ),
            (
                "203.0.114.0",
                Some(("203.0.114.0", "203.255.255.255", origin(64500, "fr"))),
            ),
            (
                "203.0.0.1",
                Some(("203.0.0.0", "203.0.112.255", origin(64500, "fr"))),
            ),
            (
                "2001:db8::1",
                Some((
                    "2001:db8::",
                    "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                    origin(64510, "se"),
                )),
            ),
            ("204.0.0.0", None),
        ];
        for (probe, want) in cases {
            let got = table.lookup_range(ip(probe));
            assert_eq!(got, want.map(|(a, b, o)| (ip(a), ip(b), o)), "{probe}");
            assert_eq!(got.map(|g| g.2), table.lookup(ip(probe)), "{probe}");
        }
    }

    #[test]
    fn longest_prefix_edges_both_families() {
        let rows = [
            row("203.0.0.0/8", 64500, "fr"),
            row("203.0.113.0/24", 64496, "de"),
            row("203.0.113.128/25", 64497, ""),
            row("198.51.100.0/24", 0, "nl"),
            row("2001:db8::/32", 64510, "se"),
            row("2001:db8:1::/48", 64511, "no"),
            row("255.255.255.255/32", 64499, "us"),
            row("::/0", 64512, ""),
        ];
        let table = AsnTable::from_rows(&rows);
        assert_eq!(table.len(), 8);
        let origin = |asn_n: u32, country: &str| {
            Some(Origin {
                asn: (asn_n != 0).then(|| asn(asn_n)),
                country: (!country.is_empty()).then(|| cc(country)),
            })
        };
        let cases = [
            ("202.255.255.255", None),
            ("203.0.0.0", origin(64500, "fr")),
            ("203.0.112.255", origin(64500, "fr")),
            ("203.0.113.0", origin(64496, "de")),
            ("203.0.113.127", origin(64496, "de")),
            ("203.0.113.128", origin(64497, "")),
            ("203.0.113.255", origin(64497, "")),
            ("203.0.114.0", origin(64500, "fr")),
            ("203.255.255.255", origin(64500, "fr")),
            ("204.0.0.0", None),
            ("198.51.100.0", origin(0, "nl")),
            ("198.51.100.255", origin(0, "nl")),
            ("198.51.101.0", None),
            ("255.255.255.254", None),
            ("255.255.255.255", origin(64499, "us")),
            ("2001:db8::", origin(64510, "se")),
            ("2001:db8:0:ffff:ffff:ffff:ffff:ffff", origin(64510, "se")),
            ("2001:db8:1::", origin(64511, "no")),
            ("2001:db8:1:ffff:ffff:ffff:ffff:ffff", origin(64511, "no")),
            ("2001:db8:2::", origin(64510, "se")),
            (
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                origin(64510, "se"),
            ),
            ("2001:db9::", origin(64512, "")),
            ("::", origin(64512, "")),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", origin(64512, "")),
            // the families never mix
            ("::ffff:203.0.113.7", origin(64512, "")),
        ];
        for (addr, want) in cases {
            assert_eq!(table.lookup(ip(addr)), want, "{addr}");
        }
        let empty = AsnTable::empty();
        assert!(empty.is_empty());
        assert_eq!(empty.lookup(ip("203.0.113.1")), None);
        assert_eq!(empty.lookup(ip("2001:db8::1")), None);
    }

    #[test]
    fn same_prefix_twice_the_last_row_wins() {
        let rows = [
            row("203.0.113.0/24", 64496, "de"),
            row("203.0.113.0/24", 64497, "fr"),
        ];
        let table = AsnTable::from_rows(&rows);
        assert_eq!(
            table.lookup(ip("203.0.113.9")).and_then(|o| o.asn),
            Some(asn(64497))
        );
    }

    #[test]
    fn asn_set_edges() {
        let set = AsnSet::from_asns([asn(64496), asn(1), asn(4_294_967_294), asn(64496)]);
        assert_eq!(set.len(), 3);
        for (n, want) in [
            (1, true),
            (2, false),
            (64495, false),
            (64496, true),
            (64497, false),
            (4_294_967_293, false),
            (4_294_967_294, true),
        ] {
            assert_eq!(set.contains(asn(n)), want, "AS{n}");
        }
        assert!(AsnSet::empty().is_empty());
        assert!(!AsnSet::empty().contains(asn(1)));
        assert_eq!(format!("{set:?}"), "AsnSet { asns: 3 }");
    }

    fn naive(rows: &[IpAsn], ip: IpAddr) -> Option<Origin> {
        // Most specific row; among equal prefixes the last one.
        let mut best: Option<&IpAsn> = None;
        for r in rows {
            if r.prefix.contains(ip) && best.is_none_or(|b| r.prefix.len() >= b.prefix.len()) {
                best = Some(r);
            }
        }
        best.map(|r| Origin {
            asn: r.asn,
            country: r.country,
        })
    }

    /// Prefixes clustered so that they nest and probes hit them.
    fn clustered_row() -> impl Strategy<Value = IpAsn> {
        let prefix = prop_oneof![
            (any::<u16>(), 8u8..=32).prop_map(|(low, len)| {
                let [a, b] = low.to_be_bytes();
                Cidr::new(IpAddr::V4(Ipv4Addr::new(203, a & 0x3, b, 0)), len).unwrap()
            }),
            (any::<u32>(), 0u8..=32)
                .prop_map(|(a, len)| { Cidr::new(IpAddr::V4(a.into()), len).unwrap() }),
            (any::<u16>(), any::<u16>(), 16u8..=128).prop_map(|(a, b, len)| {
                let addr = Ipv6Addr::new(0x2001, 0xdb8, a & 0x3, 0, 0, 0, 0, b);
                Cidr::new(IpAddr::V6(addr), len).unwrap()
            }),
        ];
        let country = prop_oneof![
            Just(None),
            proptest::sample::select(vec!["de", "fr", "us", "zz"]).prop_map(|c| Some(cc(c))),
        ];
        (prefix, prop_oneof![Just(0u32), 1u32..70000], country).prop_map(|(prefix, n, country)| {
            IpAsn {
                prefix,
                asn: Asn::new(n).ok(),
                country,
            }
        })
    }

    fn clustered_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (any::<u8>(), any::<u8>(), any::<u8>())
                .prop_map(|(a, b, c)| IpAddr::V4(Ipv4Addr::new(203, a & 0x3, b, c))),
            any::<u32>().prop_map(|a| IpAddr::V4(a.into())),
            (any::<u16>(), any::<u16>()).prop_map(|(a, b)| {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, a & 0x3, 0, 0, 0, 0, b))
            }),
            any::<u128>().prop_map(|a| IpAddr::V6(a.into())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn lookup_agrees_with_a_naive_scan(
            rows in proptest::collection::vec(clustered_row(), 0..60),
            probes in proptest::collection::vec(clustered_ip(), 1..60),
        ) {
            let table = AsnTable::from_rows(&rows);
            prop_assert_eq!(table.len(), rows.len());
            for probe in probes {
                prop_assert_eq!(table.lookup(probe), naive(&rows, probe), "probe {}", probe);
            }
            // every row's first and last address
            for r in &rows {
                let (first, last) = match Span::of(&r.prefix) {
                    Span::V4(f, l) => (IpAddr::V4(f.into()), IpAddr::V4(l.into())),
                    Span::V6(f, l) => (IpAddr::V6(f.into()), IpAddr::V6(l.into())),
                };
                prop_assert_eq!(table.lookup(first), naive(&rows, first), "first of {}", r.prefix);
                prop_assert_eq!(table.lookup(last), naive(&rows, last), "last of {}", r.prefix);
            }
        }

        #[test]
        fn asn_set_agrees_with_a_linear_scan(
            members in proptest::collection::vec(1u32..5000, 0..300),
            probes in proptest::collection::vec(1u32..5000, 1..100),
        ) {
            let set = AsnSet::from_asns(members.iter().filter_map(|n| Asn::new(*n).ok()));
            for n in probes {
                if let Ok(a) = Asn::new(n) {
                    prop_assert_eq!(set.contains(a), members.contains(&n), "AS{}", n);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Tables large enough for the bucket index.
        #[test]
        fn large_tables_agree_with_a_naive_scan(
            rows in proptest::collection::vec(clustered_row(), 300..1500),
            probes in proptest::collection::vec(clustered_ip(), 100..300),
        ) {
            let table = AsnTable::from_rows(&rows);
            for probe in probes {
                prop_assert_eq!(table.lookup(probe), naive(&rows, probe), "probe {}", probe);
            }
        }
    }
}
