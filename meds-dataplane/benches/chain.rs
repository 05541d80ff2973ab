//! Criterion benchmarks of the filter chain at real scale (see `support/synthetic.rs` for the
//! data: a 1,000,000-prefix user blocklist, the feeds, 50 blocked countries, 1,000 ASN-DROP
//! ASNs and a 600,000-row IP-to-ASN table).
//!
//! Groups:
//! * `evaluate`: the whole chain for a source address (parse excluded), per outcome and family.
//!   Each iteration takes the next of 4,096 probes of that outcome; `*_cold` variants cycle
//!   through 1,048,576 probes so that most lookups miss the CPU caches.
//! * `decide`: the same with the packet parsed from raw bytes (IPv4/UDP, IPv6/TCP).
//! * `inspect`: the whole engine ([`Inspector::inspect`]) with 100,000 blocked domains, a
//!   domain allowlist, 100 JA3 hashes (SSLBL's size) and 1,000 JA4 values loaded (no IP lists): a DNS query, a
//!   captured single-segment ClientHello (SNI, JA3 and JA4 computed and matched, no hit), a TCP
//!   data segment that is no hello, and a UDP packet with no payload lists loaded.
//! * `ip_set`, `asn_table`, `asn_set`, `build`: the list structures against the alternatives
//!   they were chosen over (`ip_network_table`'s tree bitmap, `std::collections::HashSet`).
//!
//! Run: `cargo bench -p meds-dataplane --bench chain` (add a filter such as `evaluate`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/synthetic.rs"]
mod synthetic;

use std::collections::{BTreeMap, HashSet};
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ip_network::IpNetwork;
use ip_network_table::IpNetworkTable;
use meds_dataplane::chain::{Decision, RuleSet, UnparsableVerdict, decide};
use meds_dataplane::inspect::{InspectConfig, Inspector};
use meds_dataplane::lists::{AsnSet, AsnTable, IpSet};
use meds_dataplane::packet::transport_checksum;
use meds_proto::{Asn, Cidr, DomainName, Entry, IpAsn, Ja3Hash, Ja4, ListKind};

use synthetic::{Policy, Rng, inside, random_v6};

const WARM_PROBES: usize = 4096;
const COLD_PROBES: usize = 1 << 20;

struct Fixture {
    policy: Policy,
    rules: RuleSet,
    /// Probes per outcome class, e.g. "v4/block_hit".
    probes: BTreeMap<&'static str, Vec<IpAddr>>,
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let t = Instant::now();
        let policy = Policy::generate(7);
        eprintln!(
            "synthetic policy: {} entries in {:?}",
            policy.entries(),
            t.elapsed()
        );
        let t = Instant::now();
        let rules = policy
            .lists
            .iter()
            .fold(RuleSet::empty().with_generation(1), |r, (k, e)| {
                r.with_list(*k, e)
            });
        eprintln!("rule set built in {:?}", t.elapsed());
        let probes = classify(&policy, &rules);
        for (class, p) in &probes {
            eprintln!("probes {class}: {}", p.len());
        }
        Fixture {
            policy,
            rules,
            probes,
        }
    })
}

/// The outcome class of a source address, or `None` for outcomes not benchmarked.
fn class_of(rules: &RuleSet, src: IpAddr) -> Option<&'static str> {
    let known = rules.asn_table().lookup(src).is_some();
    let d = rules.evaluate_source(src);
    Some(match (src.is_ipv4(), d) {
        (true, Decision::WHITELISTED) => "v4/allow_hit",
        (true, Decision::BLACKLISTED) => "v4/block_hit",
        (true, Decision::FIREHOL) => "v4/firehol_hit",
        (true, Decision::FEODO) => "v4/feodo_hit",
        (true, Decision::COUNTRY) => "v4/country_hit",
        (true, Decision::ASN_DROP) => "v4/asn_drop_hit",
        (true, Decision::ASN_BLACKLISTED) => "v4/asn_block_hit",
        (true, Decision::DEFAULT) if known => "v4/miss_known_origin",
        (true, Decision::DEFAULT) => "v4/miss_unknown_origin",
        (false, Decision::SPAMHAUS) => "v6/spamhaus_hit",
        (false, Decision::COUNTRY) => "v6/country_hit",
        (false, Decision::ASN_DROP) => "v6/asn_drop_hit",
        (false, Decision::DEFAULT) if known => "v6/miss_known_origin",
        (false, Decision::DEFAULT) => "v6/miss_unknown_origin",
        _ => return None,
    })
}

fn classify(policy: &Policy, rules: &RuleSet) -> BTreeMap<&'static str, Vec<IpAddr>> {
    let mut rng = Rng::new(99);
    let rows: Vec<&IpAsn> = policy
        .list(ListKind::IpAsn)
        .iter()
        .filter_map(|e| match e {
            Entry::IpAsn(r) => Some(r),
            _ => None,
        })
        .collect();
    let with_asn_in = |list: &AsnSet| -> Vec<Cidr> {
        rows.iter()
            .filter(|r| r.asn.is_some_and(|a| list.contains(a)))
            .map(|r| r.prefix)
            .collect()
    };
    let sources: Vec<Vec<Cidr>> = vec![
        policy.prefixes(ListKind::IpAllow),
        policy.prefixes(ListKind::IpBlock),
        policy.prefixes(ListKind::FeedFireHol),
        policy.prefixes(ListKind::FeedSpamhaus),
        policy.prefixes(ListKind::FeedFeodo),
        policy.prefixes(ListKind::IpAsn),
        with_asn_in(rules.asn_drop()),
        with_asn_in(rules.asn_block()),
    ];
    let mut probes: BTreeMap<&'static str, Vec<IpAddr>> = BTreeMap::new();
    let full = |p: &BTreeMap<&'static str, Vec<IpAddr>>| {
        p.len() == 14 && p.values().all(|v| v.len() >= WARM_PROBES)
    };
    let mut tries = 0u64;
    while !full(&probes) && tries < 40_000_000 {
        tries += 1;
        let pick = rng.below(sources.len() as u64 + 2) as usize;
        let src = match sources.get(pick) {
            Some(list) if !list.is_empty() => {
                inside(&list[rng.below(list.len() as u64) as usize], &mut rng)
            }
            Some(_) => continue,
            None if pick == sources.len() => IpAddr::V4((rng.next() as u32).into()),
            None => random_v6(&mut rng),
        };
        if let Some(class) = class_of(rules, src) {
            let v = probes.entry(class).or_default();
            if v.len() < WARM_PROBES {
                v.push(src);
            }
        }
    }
    // Mixed traffic: uniform over the IPv4 rows of the table (all outcomes), warm and cold.
    let v4_rows: Vec<Cidr> = rows
        .iter()
        .map(|r| r.prefix)
        .filter(Cidr::is_ipv4)
        .collect();
    let mixed: Vec<IpAddr> = (0..COLD_PROBES)
        .map(|_| inside(&v4_rows[rng.below(v4_rows.len() as u64) as usize], &mut rng))
        .collect();
    probes.insert("v4/mixed", mixed[..WARM_PROBES].to_vec());
    probes.insert("v4/mixed_cold", mixed);
    let cold_miss: Vec<IpAddr> = std::iter::repeat_with(|| {
        inside(&v4_rows[rng.below(v4_rows.len() as u64) as usize], &mut rng)
    })
    .filter(|ip| class_of(rules, *ip) == Some("v4/miss_known_origin"))
    .take(COLD_PROBES)
    .collect();
    probes.insert("v4/miss_known_origin_cold", cold_miss);
    probes
}

/// Cycle through `probes`, one per iteration.
fn cycling<T: Copy>(probes: &[T]) -> impl FnMut() -> T + '_ {
    let mut i = 0usize;
    move || {
        i += 1;
        if i == probes.len() {
            i = 0;
        }
        probes[i]
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

fn evaluate(c: &mut Criterion) {
    let f = fixture();
    let mut group = c.benchmark_group("evaluate");
    group.throughput(Throughput::Elements(1));
    for (class, probes) in &f.probes {
        let mut next = cycling(probes);
        group.bench_function(*class, |b| {
            b.iter(|| f.rules.evaluate_source(black_box(next())))
        });
    }
    group.finish();
}

fn packet_from(src: IpAddr) -> Vec<u8> {
    match src {
        IpAddr::V4(a) => {
            // IPv4 (20 bytes) + UDP (8 bytes) + 4 bytes of payload.
            let mut p = vec![0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0];
            p.extend(a.octets());
            p.extend([192, 0, 2, 1]);
            p.extend([0x30, 0x39, 0, 53, 0, 12, 0, 0]);
            p.extend(b"ping");
            p
        }
        IpAddr::V6(a) => {
            // IPv6 (40 bytes) + TCP (20 bytes, SYN).
            let mut p = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
            p.extend(a.octets());
            p.extend(
                "2001:db8::1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            );
            p.extend([
                0x30, 0x39, 1, 187, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff,
            ]);
            p.extend([0, 0, 0, 0]);
            p
        }
    }
}

fn decide_packets(c: &mut Criterion) {
    let f = fixture();
    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(1));
    for class in [
        "v4/block_hit",
        "v4/miss_known_origin",
        "v4/mixed",
        "v6/country_hit",
        "v6/miss_known_origin",
    ] {
        let packets: Vec<Vec<u8>> = f.probes[class].iter().map(|ip| packet_from(*ip)).collect();
        for (p, ip) in packets.iter().zip(&f.probes[class]) {
            assert_eq!(
                decide(&f.rules, p, UnparsableVerdict::Accept),
                f.rules.evaluate_source(*ip)
            );
        }
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let mut next = cycling(&refs);
        group.bench_function(class, |b| {
            b.iter(|| decide(&f.rules, black_box(next()), UnparsableVerdict::Accept))
        });
    }
    group.finish();
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn ipv4_packet(proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + l4.len()).unwrap();
    let mut p = vec![0x45, 0];
    p.extend(total.to_be_bytes());
    p.extend([0, 1, 0x40, 0, 64, proto, 0, 0]);
    p.extend([198, 51, 100, 7]);
    p.extend([192, 0, 2, 1]);
    p.extend_from_slice(l4);
    p
}

fn tcp_packet(seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend(51000u16.to_be_bytes());
    t.extend(443u16.to_be_bytes());
    t.extend(seq.to_be_bytes());
    t.extend(1u32.to_be_bytes());
    t.extend([0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let sum = transport_checksum(
        IpAddr::from([198, 51, 100, 7]),
        IpAddr::from([192, 0, 2, 1]),
        6,
        &t,
    );
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    ipv4_packet(6, &t)
}

fn udp_packet(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend(40000u16.to_be_bytes());
    u.extend(dst_port.to_be_bytes());
    u.extend(u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    u.extend([0, 0]);
    u.extend_from_slice(payload);
    ipv4_packet(17, &u)
}

fn inspect_packets(c: &mut Criterion) {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let tls: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{data}/tls/clienthellos.json")).unwrap(),
    )
    .unwrap();
    let dns: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{data}/dns/queries.json")).unwrap())
            .unwrap();
    let hello = hex(tls["vectors"][2]["tcp_payload_hex"].as_str().unwrap());
    let query = hex(dns["vectors"][0]["udp_payload_hex"].as_str().unwrap());
    // About the size of abuse.ch SSLBL.
    let mut ja3: Vec<Entry> = Vec::new();
    let mut rng = Rng::new(7);
    while ja3.len() < 100 {
        let mut digest = [0u8; 16];
        for b in &mut digest {
            *b = rng.next() as u8;
        }
        ja3.push(Entry::Ja3(Ja3Hash::from_digest(digest)));
    }
    let ja4: Vec<Entry> = (0..1000)
        .map(|n| {
            Entry::Ja4(
                format!("t13d1516h2_{n:012x}_02713d6af862")
                    .parse::<Ja4>()
                    .unwrap(),
            )
        })
        .collect();
    let blocked: Vec<Entry> = (0..100_000)
        .map(|n| {
            Entry::Domain(
                DomainName::parse_user(&format!("ads{n}.tracker{}.com", n % 977)).unwrap(),
            )
        })
        .collect();
    let allowed = [Entry::Domain(
        DomainName::parse_user("example.org").unwrap(),
    )];
    let rules = RuleSet::empty()
        .with_list(ListKind::DomainBlock, &blocked)
        .with_list(ListKind::DomainAllow, &allowed)
        .with_list(ListKind::FeedSslblJa3, &ja3)
        .with_list(ListKind::Ja4Block, &ja4);
    assert!(rules.wants_names() && rules.wants_ja3() && rules.wants_ja4());

    let mut inspector = Inspector::new(InspectConfig::new(UnparsableVerdict::Accept)).unwrap();
    let cases: [(&str, &RuleSet, Vec<u8>); 4] = [
        ("dns_query", &rules, udp_packet(53, &query)),
        ("hello_single_ja3_ja4", &rules, tcp_packet(1, &hello)),
        ("tcp_data_not_hello", &rules, tcp_packet(1, &[0x17; 1200])),
        (
            "udp_no_payload_lists",
            &RuleSet::empty(),
            udp_packet(9, b"ping"),
        ),
    ];
    let mut group = c.benchmark_group("inspect");
    group.throughput(Throughput::Elements(1));
    for (name, rules, packet) in &cases {
        let out = inspector.inspect(rules, packet, 0);
        assert_eq!(out.decision, Decision::DEFAULT, "{name}");
        if *name == "hello_single_ja3_ja4" {
            assert!(out.hello.is_some() && inspector.app().ja4.is_some());
        }
        group.bench_function(*name, |b| {
            b.iter(|| inspector.inspect(rules, black_box(packet), 0).decision)
        });
    }
    group.finish();
}

fn network(c: &Cidr) -> IpNetwork {
    IpNetwork::new_truncate(c.addr(), c.len()).unwrap()
}

fn ip_set(c: &mut Criterion) {
    let f = fixture();
    let prefixes = f.policy.prefixes(ListKind::IpBlock);
    let before = rss_kib();
    let mut tree: IpNetworkTable<()> = IpNetworkTable::new();
    for p in &prefixes {
        tree.insert(network(p), ());
    }
    eprintln!(
        "memory, 1M-prefix blocklist: tree bitmap +{} KiB RSS; IpSet {} KiB heap ({:?} ranges)",
        rss_kib().saturating_sub(before),
        f.rules.block().heap_bytes() / 1024,
        f.rules.block().ranges()
    );
    let mut rng = Rng::new(5);
    let warm: Vec<IpAddr> = (0..WARM_PROBES)
        .map(|_| IpAddr::V4((rng.next() as u32).into()))
        .collect();
    let cold: Vec<IpAddr> = (0..COLD_PROBES)
        .map(|_| IpAddr::V4((rng.next() as u32).into()))
        .collect();
    for ip in warm.iter().chain(&cold).take(100_000) {
        assert_eq!(
            f.rules.block().contains(*ip),
            tree.longest_match(*ip).is_some()
        );
    }
    let mut group = c.benchmark_group("ip_set_1M");
    group.throughput(Throughput::Elements(1));
    for (name, probes) in [("warm", &warm), ("cold", &cold)] {
        let mut next = cycling(probes);
        group.bench_function(format!("range_map/{name}"), |b| {
            b.iter(|| f.rules.block().contains(black_box(next())))
        });
        let mut next = cycling(probes);
        group.bench_function(format!("tree_bitmap/{name}"), |b| {
            b.iter(|| tree.longest_match(black_box(next())).is_some())
        });
    }
    group.finish();
}

fn asn_table(c: &mut Criterion) {
    let f = fixture();
    let rows: Vec<&IpAsn> = f
        .policy
        .list(ListKind::IpAsn)
        .iter()
        .filter_map(|e| match e {
            Entry::IpAsn(r) => Some(r),
            _ => None,
        })
        .collect();
    let before = rss_kib();
    let mut tree: IpNetworkTable<(u32, [u8; 2])> = IpNetworkTable::new();
    for r in &rows {
        let cc = r.country.map_or([0, 0], |c| c.bytes());
        tree.insert(network(&r.prefix), (r.asn.map_or(0, Asn::get), cc));
    }
    eprintln!(
        "memory, 600k-row IP-to-ASN table: tree bitmap +{} KiB RSS; AsnTable {} KiB heap ({:?} ranges)",
        rss_kib().saturating_sub(before),
        f.rules.asn_table().heap_bytes() / 1024,
        f.rules.asn_table().ranges()
    );
    let mut rng = Rng::new(6);
    let mut draw = |n: usize| -> Vec<IpAddr> {
        (0..n)
            .map(|i| {
                let r = rows[rng.below(rows.len() as u64) as usize];
                // Mostly inside a row; every fourth probe anywhere.
                if i % 4 == 0 {
                    if r.prefix.is_ipv4() {
                        IpAddr::V4((rng.next() as u32).into())
                    } else {
                        random_v6(&mut rng)
                    }
                } else {
                    inside(&r.prefix, &mut rng)
                }
            })
            .collect()
    };
    let warm = draw(WARM_PROBES);
    let cold = draw(COLD_PROBES);
    for ip in warm.iter().chain(&cold).take(100_000) {
        let ours = f.rules.asn_table().lookup(*ip);
        let theirs = tree.longest_match(*ip).map(|(_, v)| *v);
        assert_eq!(ours.map(|o| o.asn.map_or(0, Asn::get)), theirs.map(|v| v.0));
    }
    let mut group = c.benchmark_group("asn_table_600k");
    group.throughput(Throughput::Elements(1));
    for (name, probes) in [("warm", &warm), ("cold", &cold)] {
        let mut next = cycling(probes);
        group.bench_function(format!("range_map/{name}"), |b| {
            b.iter(|| f.rules.asn_table().lookup(black_box(next())))
        });
        let mut next = cycling(probes);
        group.bench_function(format!("tree_bitmap/{name}"), |b| {
            b.iter(|| tree.longest_match(black_box(next())).map(|(_, v)| *v))
        });
    }
    group.finish();
}

fn asn_set(c: &mut Criterion) {
    let f = fixture();
    let drop_list: Vec<Asn> = f
        .policy
        .list(ListKind::FeedAsnDrop)
        .iter()
        .filter_map(|e| match e {
            Entry::Asn(a) => Some(*a),
            _ => None,
        })
        .collect();
    let hash: HashSet<u32> = drop_list.iter().map(|a| a.get()).collect();
    let sorted = AsnSet::from_asns(drop_list.iter().copied());
    let mut rng = Rng::new(8);
    // Half members, half random.
    let probes: Vec<Asn> = (0..WARM_PROBES)
        .map(|i| {
            if i % 2 == 0 {
                drop_list[rng.below(drop_list.len() as u64) as usize]
            } else {
                Asn::new(1 + rng.below(400_000) as u32).unwrap_or(drop_list[0])
            }
        })
        .collect();
    let mut group = c.benchmark_group("asn_set_1000");
    group.throughput(Throughput::Elements(1));
    let mut next = cycling(&probes);
    group.bench_function("sorted_vec", |b| {
        b.iter(|| sorted.contains(black_box(next())))
    });
    let mut next = cycling(&probes);
    group.bench_function("std_hash_set", |b| {
        b.iter(|| hash.contains(&black_box(next()).get()))
    });
    group.finish();
}

fn build(c: &mut Criterion) {
    let f = fixture();
    let prefixes = f.policy.prefixes(ListKind::IpBlock);
    let table = f.policy.list(ListKind::IpAsn);
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("ip_set_1M/range_map", |b| {
        b.iter_batched(
            || prefixes.clone(),
            IpSet::from_prefixes,
            BatchSize::PerIteration,
        )
    });
    group.bench_function("ip_set_1M/tree_bitmap", |b| {
        b.iter(|| {
            let mut tree: IpNetworkTable<()> = IpNetworkTable::new();
            for p in &prefixes {
                tree.insert(network(p), ());
            }
            tree
        })
    });
    group.bench_function("asn_table_600k/range_map", |b| {
        b.iter(|| {
            AsnTable::from_rows(table.iter().filter_map(|e| match e {
                Entry::IpAsn(r) => Some(r),
                _ => None,
            }))
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = evaluate, decide_packets, inspect_packets, ip_set, asn_table, asn_set, build
}
criterion_main!(benches);
