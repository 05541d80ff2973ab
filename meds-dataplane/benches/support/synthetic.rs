//! A synthetic policy of real size, shared by `benches/chain.rs` and `examples/scale.rs`
//! (included with `#[path]`; not part of the library).
//!
//! Deterministic (SplitMix64 from a fixed seed). Sizes follow the "Scale" section:
//!
//! | list | entries |
//! |---|---|
//! | allowlist | 100 IPv4 hosts |
//! | user blocklist | 1,000,000 distinct random IPv4 prefixes, /16–/32 (80% /32, 10% /24, 5% /25–/31, 5% /16–/23) |
//! | FireHOL level1 | ~4,500: the bogon blocks plus random /12–/32 |
//! | Spamhaus DROP | 1,500: 1,300 IPv4 /11–/24, 200 IPv6 /29–/48 |
//! | Feodo | 500 IPv4 hosts |
//! | country blocklist | 50 of 240 country codes in use |
//! | user ASN blocklist | 100 ASNs |
//! | Spamhaus ASN-DROP | 1,000 ASNs |
//! | IP → ASN table | 500,000 IPv4 + 100,000 IPv6 non-overlapping rows |

#![allow(dead_code)] // each includer uses a part
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use meds_proto::{Asn, Cidr, CountryCode, Entry, IpAsn, ListKind};

pub const BLOCKLIST: usize = 1_000_000;
pub const TABLE_V4: usize = 500_000;
pub const TABLE_V6: usize = 100_000;

/// SplitMix64.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn percent(&mut self) -> u64 {
        self.below(100)
    }
}

fn v4(addr: u32, len: u8) -> Cidr {
    Cidr::new(IpAddr::V4(Ipv4Addr::from(addr)), len).expect("length <= 32")
}

fn v6(addr: u128, len: u8) -> Cidr {
    Cidr::new(IpAddr::V6(Ipv6Addr::from(addr)), len).expect("length <= 128")
}

/// A random address inside `cidr`.
pub fn inside(cidr: &Cidr, rng: &mut Rng) -> IpAddr {
    let host = u32::from(match cidr.addr() {
        IpAddr::V4(_) => 32 - cidr.len(),
        IpAddr::V6(_) => 128 - cidr.len(),
    });
    match cidr.addr() {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shr(32 - host).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) | (rng.next() as u32 & mask)))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shr(128 - host).unwrap_or(0);
            let r = (u128::from(rng.next()) << 64) | u128::from(rng.next());
            IpAddr::V6(Ipv6Addr::from(u128::from(a) | (r & mask)))
        }
    }
}

/// A random global-unicast-looking IPv6 address (2000::/3), as an integer.
fn random_v6_bits(rng: &mut Rng) -> u128 {
    let r = (u128::from(rng.next()) << 64) | u128::from(rng.next());
    (r >> 3) | (1u128 << 125)
}

/// A random global-unicast-looking IPv6 address (2000::/3).
pub fn random_v6(rng: &mut Rng) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(random_v6_bits(rng)))
}

fn random_asn(rng: &mut Rng) -> Asn {
    loop {
        if let Ok(a) = Asn::new(1 + rng.below(400_000) as u32) {
            return a;
        }
    }
}

fn distinct_asns(rng: &mut Rng, n: usize) -> Vec<Entry> {
    let mut set = BTreeSet::new();
    while set.len() < n {
        set.insert(Entry::Asn(random_asn(rng)));
    }
    set.into_iter().collect()
}

/// The whole policy, list by list, in chain order; plus the country codes in use.
pub struct Policy {
    pub lists: Vec<(ListKind, Vec<Entry>)>,
}

impl Policy {
    pub fn generate(seed: u64) -> Policy {
        let mut rng = Rng::new(seed);

        // Country codes in use by the table: 240 distinct letter pairs; the first 50 blocked.
        let mut codes: Vec<CountryCode> = Vec::new();
        while codes.len() < 240 {
            let pair = [b'a' + rng.below(26) as u8, b'a' + rng.below(26) as u8];
            let code = CountryCode::from_feed(std::str::from_utf8(&pair).expect("ascii"))
                .expect("two letters");
            if !codes.contains(&code) {
                codes.push(code);
            }
        }

        let allow: Vec<Entry> = (0..100)
            .map(|_| Entry::Prefix(v4(rng.next() as u32, 32)))
            .collect();

        let mut block = BTreeSet::new();
        while block.len() < BLOCKLIST {
            let p = rng.percent();
            let len = match p {
                0..80 => 32,
                80..90 => 24,
                90..95 => 25 + rng.below(7) as u8,
                _ => 16 + rng.below(8) as u8,
            };
            block.insert(Entry::Prefix(v4(rng.next() as u32, len)));
        }

        let mut firehol: BTreeSet<Entry> = [
            "0.0.0.0/8",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.0.0.0/24",
            "192.0.2.0/24",
            "192.168.0.0/16",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "224.0.0.0/3",
        ]
        .iter()
        .map(|s| Entry::Prefix(s.parse().expect("valid")))
        .collect();
        while firehol.len() < 4_500 {
            let len = match rng.percent() {
                0..60 => 32,
                60..90 => 24,
                _ => 12 + rng.below(12) as u8,
            };
            firehol.insert(Entry::Prefix(v4(rng.next() as u32, len)));
        }

        let mut spamhaus = BTreeSet::new();
        while spamhaus.len() < 1_300 {
            let len = match rng.percent() {
                0..70 => 22 + rng.below(3) as u8,
                _ => 11 + rng.below(11) as u8,
            };
            spamhaus.insert(Entry::Prefix(v4(rng.next() as u32, len)));
        }
        while spamhaus.len() < 1_500 {
            let bits = random_v6_bits(&mut rng);
            spamhaus.insert(Entry::Prefix(v6(bits, 29 + rng.below(20) as u8)));
        }

        let mut feodo = BTreeSet::new();
        while feodo.len() < 500 {
            feodo.insert(Entry::Prefix(v4(rng.next() as u32, 32)));
        }

        let countries: Vec<Entry> = codes.iter().take(50).map(|c| Entry::Country(*c)).collect();
        let asn_block = distinct_asns(&mut rng, 100);
        let asn_drop = distinct_asns(&mut rng, 1_000);

        let mut table = Vec::with_capacity(TABLE_V4 + TABLE_V6);
        let row = |rng: &mut Rng, prefix: Cidr| {
            let asn = (rng.percent() != 0).then(|| random_asn(rng));
            let country = (rng.percent() != 0 || asn.is_none())
                .then(|| codes[rng.below(codes.len() as u64) as usize]);
            Entry::IpAsn(IpAsn {
                prefix,
                asn,
                country,
            })
        };
        // IPv4: walk 1.0.0.0 .. 224.0.0.0 with aligned blocks and small gaps.
        let mut cursor: u64 = 1 << 24;
        while table.len() < TABLE_V4 {
            let len: u32 = match rng.percent() {
                0..55 => 24,
                55..75 => 23,
                75..85 => 22,
                85..92 => 21,
                92..97 => 20,
                _ => 16 + rng.below(4) as u32,
            };
            let size = 1u64 << (32 - len);
            cursor = cursor.div_ceil(size) * size;
            assert!(cursor + size <= 224 << 24, "IPv4 table does not fit");
            table.push(row(&mut rng, v4(cursor as u32, len as u8)));
            cursor += size + rng.below(4) * 256;
        }
        // IPv6: walk 2001:: upward with /32../48 blocks.
        let mut cursor: u128 = 0x2001u128 << 112;
        while table.len() < TABLE_V4 + TABLE_V6 {
            let len: u32 = match rng.percent() {
                0..10 => 32,
                p => 36 + 4 * (p % 4) as u32,
            };
            let size = 1u128 << (128 - len);
            cursor = cursor.div_ceil(size) * size;
            table.push(row(&mut rng, v6(cursor, len as u8)));
            cursor += size + u128::from(rng.below(4)) * (1u128 << 80);
        }

        Policy {
            lists: vec![
                (ListKind::IpAllow, allow),
                (ListKind::IpBlock, block.into_iter().collect()),
                (ListKind::FeedFireHol, firehol.into_iter().collect()),
                (ListKind::FeedSpamhaus, spamhaus.into_iter().collect()),
                (ListKind::FeedFeodo, feodo.into_iter().collect()),
                (ListKind::CountryBlock, countries),
                (ListKind::AsnBlock, asn_block),
                (ListKind::FeedAsnDrop, asn_drop),
                (ListKind::IpAsn, table),
            ],
        }
    }

    pub fn list(&self, kind: ListKind) -> &[Entry] {
        self.lists
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(&[], |(_, v)| v.as_slice())
    }

    pub fn entries(&self) -> usize {
        self.lists.iter().map(|(_, v)| v.len()).sum()
    }

    /// The prefixes of a prefix list or the row prefixes of the table.
    pub fn prefixes(&self, kind: ListKind) -> Vec<Cidr> {
        self.list(kind)
            .iter()
            .filter_map(|e| match e {
                Entry::Prefix(c) => Some(*c),
                Entry::IpAsn(r) => Some(r.prefix),
                _ => None,
            })
            .collect()
    }
}
