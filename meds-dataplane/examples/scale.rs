//! The dataplane's policy at real scale: build time, swap time, memory.
//!
//! Generates the synthetic policy of `benches/support/synthetic.rs` (1M-prefix user blocklist,
//! every feed, a 600k-row IP-to-ASN table), sends it through the same path as the controller's
//! snapshot (wire chunks → encode → decode → `Stager` → `PolicyStore::apply`), then measures
//! one-entry deltas, a resent snapshot, the state file, and a packet thread evaluating
//! continuously while the rule set is swapped under it.
//!
//! Run: `cargo run --release -p meds-dataplane --example scale`

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/support/synthetic.rs"]
mod synthetic;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use meds_dataplane::chain::RuleSet;
use meds_dataplane::policy::{self, Applied, PolicyStore};
use meds_proto::sync::{CHUNK_ENTRIES, Stager, Update, full_update_chunks};
use meds_proto::{Asn, Entry, IpAsn, ListKind, pb};
use prost::Message;

use synthetic::{Policy, Rng, inside};

/// A field of /proc/self/status in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn rss_mib() -> f64 {
    status_kib("VmRSS:") as f64 / 1024.0
}

fn hwm_mib() -> f64 {
    status_kib("VmHWM:") as f64 / 1024.0
}

/// Reset the peak-RSS counter (VmHWM) to the current RSS.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Give freed heap back to the kernel, as a long-running process eventually does.
fn trim() {
    // SAFETY: malloc_trim has no preconditions; it only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn rebuilt(a: &Applied) -> String {
    if a.rebuilt.is_empty() {
        return "nothing".into();
    }
    a.rebuilt
        .iter()
        .map(|(k, d)| format!("{k} {}", ms(*d)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The full policy as the controller streams it: chunk by chunk, each encoded and decoded
/// again, fed to a stager. Only one chunk exists at a time.
fn stage_full(policy: &Policy, generation: u64) -> (Update, Duration, usize, usize) {
    let started = Instant::now();
    let mut stager = Stager::new();
    let total = policy.entries();
    let (mut done, mut chunks, mut bytes) = (0usize, 0usize, 0usize);
    let mut complete = None;
    for (kind, entries) in &policy.lists {
        for slice in entries.chunks(CHUNK_ENTRIES) {
            done += slice.len();
            for mut chunk in full_update_chunks(generation, &[(*kind, slice)]) {
                chunk.last = done == total;
                let wire = chunk.encode_to_vec();
                bytes += wire.len();
                chunks += 1;
                let decoded = pb::UpdateChunk::decode(wire.as_slice()).unwrap();
                if let Some(update) = stager.push(&decoded).unwrap() {
                    complete = Some(update);
                }
            }
        }
    }
    (
        complete.expect("the last chunk completes the update"),
        started.elapsed(),
        chunks,
        bytes,
    )
}

fn delta(generation: u64, kind: ListKind, add: Vec<Entry>, remove: Vec<Entry>) -> Update {
    Update {
        generation,
        full: false,
        lists: [(kind, meds_proto::sync::ListDelta { add, remove })].into(),
    }
}

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("== meds-dataplane policy at scale ==");
    println!(
        "machine: {cpus} CPUs, load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let baseline = rss_mib();
    println!("RSS at start: {baseline:.1} MiB");

    let t = Instant::now();
    let synthetic = Policy::generate(7);
    println!(
        "synthetic policy: {} entries generated in {} (controller side, not measured below)",
        synthetic.entries(),
        ms(t.elapsed())
    );
    for (kind, entries) in &synthetic.lists {
        println!("  {kind:<14} {:>9}", entries.len());
    }

    // 1. Full snapshot over the wire path.
    let (update, staging, chunks, wire_bytes) = stage_full(&synthetic, 1);
    println!(
        "stage full snapshot: {chunks} chunks, {:.1} MiB on the wire, decoded and validated in {}",
        wire_bytes as f64 / (1024.0 * 1024.0),
        ms(staging)
    );
    // Keep a few things for the deltas and the packet thread, then drop the generator's data:
    // from here on the process holds what a dataplane holds.
    let mut rng = Rng::new(3);
    let table_rows: Vec<IpAsn> = synthetic
        .list(ListKind::IpAsn)
        .iter()
        .filter_map(|e| match e {
            Entry::IpAsn(r) => Some(*r),
            _ => None,
        })
        .take(16)
        .collect();
    let v4_rows: Vec<_> = synthetic
        .prefixes(ListKind::IpAsn)
        .into_iter()
        .filter(|c| c.is_ipv4())
        .collect();
    let probes: Vec<IpAddr> = (0..65_536)
        .map(|_| inside(&v4_rows[rng.below(v4_rows.len() as u64) as usize], &mut rng))
        .collect();
    drop(v4_rows);
    drop(synthetic);
    trim();
    reset_peak();
    let staged_rss = rss_mib();
    println!("RSS with the staged update (generator data freed): {staged_rss:.1} MiB");

    let live = Arc::new(ArcSwap::from_pointee(RuleSet::empty()));
    let store = Arc::new(PolicyStore::new(Arc::clone(&live)));
    let applied = store.apply(update);
    println!(
        "apply full snapshot (state + build every component + swap): {}",
        ms(applied.elapsed)
    );
    println!("  components: {}", rebuilt(&applied));
    println!(
        "RSS after apply: {:.1} MiB (peak during apply {:.1} MiB)",
        rss_mib(),
        hwm_mib()
    );
    trim();
    let steady = rss_mib();
    println!(
        "RSS steady (freed heap returned): {steady:.1} MiB = {:.1} MiB above the empty process",
        steady - baseline
    );
    let rules = live.load_full();
    println!(
        "  lookup structures: blocklist {:.1} MiB ({:?} ranges), IP-to-ASN table {:.1} MiB ({:?} ranges); the rest is the master copy (BTreeSet<Entry>, {} bytes per entry + tree nodes)",
        rules.block().heap_bytes() as f64 / (1024.0 * 1024.0),
        rules.block().ranges(),
        rules.asn_table().heap_bytes() as f64 / (1024.0 * 1024.0),
        rules.asn_table().ranges(),
        std::mem::size_of::<Entry>()
    );
    drop(rules);

    // 2. A packet thread evaluating continuously while updates are swapped in. It loads the
    // rule set per packet, like the queue worker; it never takes a lock.
    let stop = Arc::new(AtomicBool::new(false));
    let swapping = Arc::new(AtomicBool::new(false));
    let packet_thread = {
        let (live, stop, swapping) = (Arc::clone(&live), Arc::clone(&stop), Arc::clone(&swapping));
        std::thread::spawn(move || {
            // Batch durations (ns) per phase: before, during the swaps. Preallocated.
            let mut phases = [Vec::with_capacity(1 << 20), Vec::with_capacity(1 << 20)];
            let mut i = 0usize;
            let mut drops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let phase = usize::from(swapping.load(Ordering::Relaxed));
                let t = Instant::now();
                for _ in 0..1000 {
                    let rules = live.load();
                    i = (i + 1) % probes.len();
                    if rules.evaluate_source(probes[i]).verdict
                        == meds_dataplane::chain::Verdict::Drop
                    {
                        drops += 1;
                    }
                }
                let took = t.elapsed().as_nanos() as u64;
                if phases[phase].len() < phases[phase].capacity() {
                    phases[phase].push(took);
                }
            }
            (phases, drops)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    swapping.store(true, Ordering::Relaxed);

    let host = |s: &str| Entry::Prefix(s.parse().unwrap());
    let mut generation = 1;
    let mut next = || {
        generation += 1;
        generation
    };
    let cases: Vec<(&str, Update)> = vec![
        (
            "one IP added to the 1M-prefix blocklist",
            delta(next(), ListKind::IpBlock, vec![host("192.0.2.77")], vec![]),
        ),
        (
            "one IP removed from the 1M-prefix blocklist",
            delta(next(), ListKind::IpBlock, vec![], vec![host("192.0.2.77")]),
        ),
        (
            "one IP added to Feodo (500 entries)",
            delta(
                next(),
                ListKind::FeedFeodo,
                vec![host("192.0.2.78")],
                vec![],
            ),
        ),
        (
            "one ASN added to the user ASN blocklist",
            delta(
                next(),
                ListKind::AsnBlock,
                vec![Entry::Asn(Asn::new(64496).unwrap())],
                vec![],
            ),
        ),
        (
            "one IP-to-ASN row changed (600k-row table)",
            delta(
                next(),
                ListKind::IpAsn,
                vec![Entry::IpAsn(IpAsn {
                    asn: Some(Asn::new(64511).unwrap()),
                    ..table_rows[3]
                })],
                vec![Entry::IpAsn(table_rows[3])],
            ),
        ),
    ];
    println!(
        "one-entry deltas (time until the new rule set is live; the packet thread keeps running):"
    );
    for (name, update) in cases {
        let applied = store.apply(update);
        println!(
            "  {name}: {} (rebuilt: {})",
            ms(applied.elapsed),
            rebuilt(&applied)
        );
    }
    trim();
    reset_peak();
    let before = rss_mib();
    let t = Instant::now();
    let (_, bytes) = store.encode_state_file().unwrap();
    let encode = t.elapsed();
    println!(
        "state file encoded by the store: RSS {before:.1} MiB before, peak {:.1} MiB (the file's bytes are held in memory until written)",
        hwm_mib()
    );
    let resend = store.snapshot();
    let generation = next();
    let t = Instant::now();
    let decoded = policy::decode_state_file(&bytes).unwrap();
    let decode = t.elapsed();
    drop(decoded);
    let full_again = Update {
        generation,
        full: true,
        lists: ListKind::ALL
            .iter()
            .map(|k| {
                (
                    *k,
                    meds_proto::sync::ListDelta {
                        add: resend.entries(*k).cloned().collect(),
                        remove: vec![],
                    },
                )
            })
            .collect(),
    };
    drop(resend);
    trim();
    reset_peak();
    let before = rss_mib();
    let applied = store.apply(full_again);
    println!(
        "identical full snapshot resent (reconnect): {} (rebuilt: {}); RSS {before:.1} MiB with the staged snapshot, peak {:.1} MiB",
        ms(applied.elapsed),
        rebuilt(&applied),
        hwm_mib()
    );
    let t = Instant::now();
    let restored = policy::decode_state_file(&bytes).unwrap();
    let rules = restored.build();
    let restart = t.elapsed();
    drop((rules, restored));
    println!(
        "state file: {:.1} MiB, encoded in {}, decoded in {}; restart (decode + build all) {}",
        bytes.len() as f64 / (1024.0 * 1024.0),
        ms(encode),
        ms(decode),
        ms(restart)
    );
    drop(bytes);

    swapping.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let (phases, drops) = packet_thread.join().unwrap();
    println!(
        "packet thread ({} sources spread over the IPv4 table, so mostly cache misses; the updates run on another CPU; {drops} drops):",
        65_536
    );
    for (name, mut batches) in ["before the swaps", "during the swaps"].iter().zip(phases) {
        batches.sort_unstable();
        let at = |q: f64| {
            let i = ((batches.len() as f64 - 1.0) * q).round() as usize;
            batches.get(i).copied().unwrap_or(0) as f64 / 1000.0
        };
        println!(
            "  {name}: {} evaluations; per evaluation (batches of 1000): median {:.0} ns, p99 {:.0} ns, worst {:.0} ns (the worst batches are preemptions on the loaded host)",
            batches.len() * 1000,
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
    trim();
    println!("RSS at the end: {:.1} MiB", rss_mib());
}
