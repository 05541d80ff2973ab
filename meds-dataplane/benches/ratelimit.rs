//! Criterion benchmarks of the per-source rate limiter ([`RateLimiter::check`]), one thread.
//!
//! * `baseline/empty`: the loop around a check (the next source address), nothing else;
//!   `baseline/clock`: one `Instant::now()`, which every check pays (`governor` reads the clock).
//! * `hit_allowed/v4`, `hit_allowed/v6`: a source already in the table, within its rate
//!   (10^7/s, a burst that never runs out), cycling through 4,096 sources.
//! * `hit_denied`: a source already in the table whose bucket is empty (GCRA says no: no CAS).
//! * `flood`: a new source every packet (spoofed-source flood) with the defaults (100,000 keys
//!   per family): once the table is full every packet evicts a full-again entry and inserts
//!   itself.
//!
//! After the criterion groups, a plain timed loop of each case prints nanoseconds per check and
//! the ratio to `baseline/empty` and `baseline/clock` measured in the same run.
//!
//! Run: `cargo bench -p meds-dataplane --bench ratelimit`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use criterion::Criterion;
use meds_dataplane::ratelimit::{RateLimitConfig, RateLimitSettings, RateLimiter};

const SOURCES: u32 = 4096;

fn limiter(rate: u64, burst: u64) -> RateLimiter {
    RateLimiter::new(
        RateLimitConfig::new(RateLimitSettings {
            rate,
            burst,
            ..RateLimitSettings::default()
        })
        .unwrap(),
    )
}

fn v4(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xc633_6400u32.wrapping_add(i)))
}

fn v6(i: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(
        (0x2001_0db8u128 << 96) | (u128::from(i) << 64) | 1,
    ))
}

/// A named case: one call does one check (or the baseline's work).
type Case = (&'static str, Box<dyn FnMut() -> bool>);

/// The cases, each a closure doing one check on its own limiter (set up here).
fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();

    let mut i = 0u32;
    cases.push((
        "baseline/empty",
        Box::new(move || {
            i = (i + 1) % SOURCES;
            black_box(v4(i)).is_ipv4()
        }),
    ));
    cases.push((
        "baseline/clock",
        Box::new(|| {
            black_box(Instant::now());
            true
        }),
    ));

    // Within the rate forever: 10^7/s, burst 4,294,967,295.
    for (name, source) in [
        ("hit_allowed/v4", v4 as fn(u32) -> IpAddr),
        ("hit_allowed/v6", v6),
    ] {
        let lim = limiter(10_000_000, u64::from(u32::MAX));
        for s in 0..SOURCES {
            assert!(lim.check(source(s)));
        }
        let mut i = 0u32;
        cases.push((
            name,
            Box::new(move || {
                i = (i + 1) % SOURCES;
                lim.check(source(i))
            }),
        ));
    }

    // Drained: 1/s, burst 1, one packet already used.
    let lim = limiter(1, 1);
    for s in 0..SOURCES {
        assert!(lim.check(v4(s)));
    }
    let mut i = 0u32;
    cases.push((
        "hit_denied",
        Box::new(move || {
            i = (i + 1) % SOURCES;
            !lim.check(v4(i))
        }),
    ));

    // A new source every packet, the defaults. Fill the table first.
    let lim = limiter(3000, 1500);
    let mut next = 0u32;
    for _ in 0..200_000 {
        next = next.wrapping_add(1);
        lim.check(IpAddr::V4(Ipv4Addr::from(next.wrapping_mul(0x9E37_79B1))));
    }
    cases.push((
        "flood",
        Box::new(move || {
            next = next.wrapping_add(1);
            lim.check(IpAddr::V4(Ipv4Addr::from(next.wrapping_mul(0x9E37_79B1))))
        }),
    ));
    cases
}

fn criterion_groups(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, mut case) in cases() {
        group.bench_function(name, |b| b.iter(&mut case));
    }
    group.finish();
}

/// Nanoseconds per call of `case`, best of 5 runs of 2,000,000 calls.
fn time(case: &mut dyn FnMut() -> bool) -> f64 {
    const CALLS: u32 = 2_000_000;
    (0..5)
        .map(|_| {
            let start = Instant::now();
            let mut yes = 0u32;
            for _ in 0..CALLS {
                yes += u32::from(case());
            }
            black_box(yes);
            start.elapsed().as_nanos() as f64 / f64::from(CALLS)
        })
        .fold(f64::INFINITY, f64::min)
}

fn summary() {
    let mut results = Vec::new();
    for (name, mut case) in cases() {
        results.push((name, time(&mut case)));
    }
    let empty = results[0].1;
    let clock = results[1].1;
    println!("\nratelimit summary (ns per check; ratio to baseline/empty, to baseline/clock):");
    for (name, ns) in &results {
        println!(
            "  {name:<16} {ns:>7.1} ns   x{:>6.1}   x{:>5.2}",
            ns / empty,
            ns / clock
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    criterion_groups(&mut c);
    c.final_summary();
    summary();
}
