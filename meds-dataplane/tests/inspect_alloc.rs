//! The packet path does not allocate in steady state: a counting global allocator around
//! [`Inspector::inspect`] (DNS queries, single-segment and split ClientHellos with domain,
//! JA3 and JA4 lists loaded, blocked-flow hits, a SYN-anchored hello sent last segment first,
//! the rate limiter on)
//! after one warm-up round.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use meds_dataplane::chain::{RuleSet, UnparsableVerdict, Verdict};
use meds_dataplane::counters::Counters;
use meds_dataplane::events::{self, DropEvent, Sampler};
use meds_dataplane::inspect::{InspectConfig, Inspector};
use meds_dataplane::packet::transport_checksum;
use meds_dataplane::ratelimit::{RateLimitConfig, RateLimitSettings, RateLimiter};
use meds_proto::{DomainName, Entry, ListKind};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CLIENT: [u8; 4] = [203, 0, 113, 7];
const SERVER: [u8; 4] = [203, 0, 113, 200];

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    p.extend_from_slice(&CLIENT);
    p.extend_from_slice(&SERVER);
    p.extend_from_slice(l4);
    p
}

fn tcp(sport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    tcp_flags(sport, seq, 0x18, payload)
}

fn tcp_flags(sport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&443u16.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&1u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let sum = transport_checksum(CLIENT.into(), SERVER.into(), 6, &t);
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    ipv4(6, &t)
}

fn udp53(payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&40000u16.to_be_bytes());
    u.extend_from_slice(&53u16.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    ipv4(17, &u)
}

#[test]
fn inspect_does_not_allocate_in_steady_state() {
    // The harness itself sees allocations.
    COUNTING.store(true, Ordering::SeqCst);
    let probe = std::hint::black_box(vec![1u8; 3]);
    COUNTING.store(false, Ordering::SeqCst);
    drop(probe);
    assert!(ALLOCATIONS.load(Ordering::SeqCst) > 0);

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/tls/clienthellos.json"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vectors = json["vectors"].as_array().unwrap();
    let hello = hex(vectors[0]["tcp_payload_hex"].as_str().unwrap());
    let other = hex(vectors[1]["tcp_payload_hex"].as_str().unwrap());
    let ja3 = vectors[2]["ja3_md5"].as_str().unwrap().parse().unwrap();
    let ja4 = vectors[3]["ja4"].as_str().unwrap().parse().unwrap();
    let dns_json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/dns/queries.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let query = hex(dns_json["vectors"][0]["udp_payload_hex"].as_str().unwrap());

    let domain = |d: &str| Entry::Domain(DomainName::parse_user(d).unwrap());
    let rules = RuleSet::empty()
        .with_list(ListKind::DomainAllow, &[domain("example.org")])
        .with_list(ListKind::DomainBlock, &[domain("google.com")])
        .with_list(ListKind::FeedSslblJa3, &[Entry::Ja3(ja3)])
        .with_list(ListKind::Ja4Block, &[Entry::Ja4(ja4)]);
    // With the rate limiter on (never limiting here): its buckets live in tables allocated
    // when it is created.
    let limiter = RateLimiter::new(
        RateLimitConfig::new(RateLimitSettings {
            rate: 1_000_000,
            burst: 1_000_000,
            ..RateLimitSettings::default()
        })
        .unwrap(),
    );
    let mut inspector = Inspector::new(InspectConfig::new(UnparsableVerdict::Accept))
        .unwrap()
        .with_limiter(std::sync::Arc::new(limiter));

    // Per round: a DNS query, a whole allowed hello, a split blocked hello on a new flow, a
    // retransmission of its last segment (a blocked-flow hit), and on a third flow a SYN
    // followed by a split blocked hello sent last segment first (fresh-flow anchoring).
    let mut round = |port: u16, now: u64| -> Vec<Verdict> {
        let packets = [
            udp53(&query),
            tcp(port, 1, &other),
            tcp(port + 1, 1, &hello[..1000]),
            tcp(port + 1, 1001, &hello[1000..]),
            tcp(port + 1, 1001, &hello[1000..]),
            tcp_flags(port + 2, 0, 0x02, &[]),
            tcp(port + 2, 1001, &hello[1000..]),
            tcp(port + 2, 1, &hello[..1000]),
        ];
        COUNTING.store(true, Ordering::SeqCst);
        let verdicts = packets
            .iter()
            .map(|p| inspector.inspect(&rules, p, now).decision.verdict)
            .collect::<arrayvec_free::Eight>();
        COUNTING.store(false, Ordering::SeqCst);
        verdicts.0.to_vec()
    };
    let want = vec![
        Verdict::Accept,
        Verdict::Accept,
        Verdict::Accept,
        Verdict::Drop,
        Verdict::Drop,
        Verdict::Accept,
        Verdict::Accept,
        Verdict::Drop,
    ];
    assert_eq!(round(10_000, 0), want);
    ALLOCATIONS.store(0, Ordering::SeqCst);
    for n in 1..50u16 {
        assert_eq!(round(10_000 + 3 * n, u64::from(n)), want);
    }
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "allocations on the packet path"
    );

    // Sampling the drop decisions into events (token bucket, inline copy of the names and
    // fingerprints, `try_send` on the channel allocated at start, also into a full channel,
    // and the per-batch flush) does not allocate either.
    let (tx, rx) = events::channel();
    let mut sampler = Sampler::new(tx, events::MAX_EVENT_RATE, 3);
    let counters = Counters::new();
    // With a source blocklist too: a drop decided by the address alone (the inspector did
    // not parse the transport header, the event does).
    let ip_rules = RuleSet::empty().with_list(
        ListKind::IpBlock,
        &[Entry::Prefix("203.0.113.0/24".parse().unwrap())],
    );
    let packets = [
        (&rules, tcp(20_000, 1, &hello[..1000])),
        (&rules, tcp(20_000, 1001, &hello[1000..])),
        (&rules, udp53(&query)),
        (&ip_rules, udp53(&query)),
    ];
    let mut drops = 0u64;
    let mut sampled_round = |now: u64| {
        COUNTING.store(true, Ordering::SeqCst);
        for (rules, p) in &packets {
            let inspection = inspector.inspect(rules, p, now);
            let decision = inspection.decision;
            drops += u64::from(decision.verdict == Verdict::Drop);
            let app = inspector.app();
            sampler.offer(decision, now, |queue| {
                DropEvent::new(
                    events::unix_ms(),
                    queue,
                    decision,
                    p,
                    inspection.meta.as_ref(),
                    &app,
                    rules,
                )
            });
        }
        sampler.flush(&counters);
        COUNTING.store(false, Ordering::SeqCst);
    };
    sampled_round(1_000);
    let first: Vec<DropEvent> = rx.try_iter().collect();
    assert_eq!(first.len(), 2, "the completed hello and the blocked source");
    assert_eq!(first[0].sni.as_str(), "lh3.google.com");
    assert_eq!(first[0].queue, 3);
    assert_eq!(
        (
            first[1].source_port,
            first[1].destination_port,
            first[1].protocol
        ),
        (40_000, 53, 17),
        "ports read for the event"
    );
    ALLOCATIONS.store(0, Ordering::SeqCst);
    // 2 000 rounds: the channel (1 024 events) fills up, later drops are suppressed.
    for n in 1..2_000u64 {
        sampled_round(1_000 + n * 1_000);
    }
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "allocations while sampling drop events"
    );
    let snapshot = counters.snapshot();
    assert_eq!(snapshot.events_sampled, events::CHANNEL_CAPACITY as u64 + 2);
    assert_eq!(
        snapshot.events_sampled + snapshot.events_suppressed,
        drops,
        "every drop is either sampled or suppressed"
    );
}

/// Collecting eight verdicts without a heap allocation.
mod arrayvec_free {
    use meds_dataplane::chain::Verdict;

    pub struct Eight(pub [Verdict; 8]);

    impl FromIterator<Verdict> for Eight {
        fn from_iter<I: IntoIterator<Item = Verdict>>(iter: I) -> Eight {
            let mut out = [Verdict::Accept; 8];
            for (slot, v) in out.iter_mut().zip(iter) {
                *slot = v;
            }
            Eight(out)
        }
    }
}
