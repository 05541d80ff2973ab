//! Lock-free packet counters shared by the packet threads and the sync client.
//!
//! Every (verdict, filter, reason) combination has its own `AtomicU64`, indexed by a fixed
//! dense index, so [`Counters::record`] is two relaxed atomic adds: no lock, no map, no
//! allocation. Only [`Counters::snapshot`] (called by the sync client, off the hot path)
//! allocates. Counters are monotonic for the life of the process.
//!
//! Payload inspection events ([`InspectEvent`]: DNS messages and errors by kind, ClientHellos,
//! reassembly by outcome, bad checksums, blocked flows) have one `AtomicU64` each too; each
//! [`crate::inspect::Inspector`] counts locally and adds its deltas here
//! ([`crate::inspect::Inspector::flush`]) once per received datagram.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::chain::{Decision, Filter, Reason, Verdict};
use crate::inspect::InspectEvent;

const SLOTS: usize = Verdict::ALL.len() * Filter::ALL.len() * Reason::ALL.len();

fn slot(verdict: Verdict, filter: Filter, reason: Reason) -> usize {
    (verdict.index() * Filter::ALL.len() + filter.index()) * Reason::ALL.len() + reason.index()
}

/// Process-wide dataplane counters. `Send + Sync`; share behind an `Arc`.
#[derive(Debug)]
pub struct Counters {
    packets_processed: AtomicU64,
    verdict_errors: AtomicU64,
    recv_errors: AtomicU64,
    events_sampled: AtomicU64,
    events_suppressed: AtomicU64,
    decisions: [AtomicU64; SLOTS],
    inspect: [AtomicU64; InspectEvent::COUNT],
    /// Answers that set the trusted mark, by [`Reason::index`] of the accepting decision.
    trusted: [AtomicU64; Reason::ALL.len()],
    /// Answers that set the blocked mark.
    flows_blocked: AtomicU64,
}

/// Offload marks set by one worker since its last flush (see [`Counters::record_offload`]):
/// plain arrays on the worker's stack, no allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffloadCounts {
    /// Answers that set the trusted mark, by [`Reason::index`] of the accepting decision.
    pub trusted: [u64; Reason::ALL.len()],
    /// Answers that set the blocked mark.
    pub blocked: u64,
}

impl OffloadCounts {
    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.blocked == 0 && self.trusted.iter().all(|&n| n == 0)
    }
}

/// A point-in-time copy of [`Counters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Packets that were decided and whose verdict reached the kernel.
    pub packets_processed: u64,
    /// Verdicts that could not be sent, or that the kernel rejected.
    pub verdict_errors: u64,
    /// Receive errors (e.g. ENOBUFS) and queue messages that could not be decoded at all.
    pub recv_errors: u64,
    /// Drop decisions sampled into events, and drop decisions not sampled (see
    /// [`Counters::record_events`]).
    pub events_sampled: u64,
    pub events_suppressed: u64,
    /// Non-zero decision counts, in (verdict, filter, reason) index order.
    pub decisions: Vec<DecisionCount>,
    /// Non-zero payload inspection counts (DNS, TLS, reassembly, checksums, blocked flows),
    /// in [`InspectEvent::index`] order.
    pub inspect: Vec<(InspectEvent, u64)>,
    /// Non-zero counts of answers that set the trusted mark, by the accepting decision's
    /// reason, in [`Reason::index`] order.
    pub trusted: Vec<(Reason, u64)>,
    /// Answers that set the blocked mark.
    pub flows_blocked: u64,
}

/// Packets that got one particular decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionCount {
    pub verdict: Verdict,
    pub filter: Filter,
    pub reason: Reason,
    pub packets: u64,
}

impl Counters {
    pub fn new() -> Counters {
        Counters {
            packets_processed: AtomicU64::new(0),
            verdict_errors: AtomicU64::new(0),
            recv_errors: AtomicU64::new(0),
            events_sampled: AtomicU64::new(0),
            events_suppressed: AtomicU64::new(0),
            decisions: std::array::from_fn(|_| AtomicU64::new(0)),
            inspect: std::array::from_fn(|_| AtomicU64::new(0)),
            trusted: std::array::from_fn(|_| AtomicU64::new(0)),
            flows_blocked: AtomicU64::new(0),
        }
    }

    /// Add a worker's offload counts (once per receive batch, never per packet).
    pub fn record_offload(&self, counts: &OffloadCounts) {
        for (counter, &n) in self.trusted.iter().zip(counts.trusted.iter()) {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        if counts.blocked > 0 {
            self.flows_blocked
                .fetch_add(counts.blocked, Ordering::Relaxed);
        }
    }

    /// Count one decided packet.
    pub fn record(&self, d: Decision) {
        self.packets_processed.fetch_add(1, Ordering::Relaxed);
        // INVARIANT (no panic): `slot` of valid enum values is always < SLOTS; `get` keeps the
        // hot path free of a panicking index anyway.
        if let Some(counter) = self.decisions.get(slot(d.verdict, d.filter, d.reason)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Add `n` to an inspection event (the inspectors flush their local counts here).
    pub fn record_inspect(&self, event: InspectEvent, n: u64) {
        if let Some(counter) = self.inspect.get(event.index()) {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn record_verdict_error(&self) {
        self.verdict_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_recv_error(&self) {
        self.recv_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Drop decisions not sampled so far (one load; no snapshot, no allocation).
    pub fn events_suppressed(&self) -> u64 {
        self.events_suppressed.load(Ordering::Relaxed)
    }

    /// Add drop decisions sampled into events and drop decisions not sampled (over the
    /// sampling rate or the event channel full); called off the per-packet path.
    pub fn record_events(&self, sampled: u64, suppressed: u64) {
        self.events_sampled.fetch_add(sampled, Ordering::Relaxed);
        self.events_suppressed
            .fetch_add(suppressed, Ordering::Relaxed);
    }

    /// Read every counter. Counts are read one by one, so a snapshot taken while packets flow
    /// may be off by the packets counted during the read; each value is still exact.
    pub fn snapshot(&self) -> CountersSnapshot {
        let mut decisions = Vec::new();
        for verdict in Verdict::ALL {
            for filter in Filter::ALL {
                for reason in Reason::ALL {
                    let packets = self
                        .decisions
                        .get(slot(verdict, filter, reason))
                        .map_or(0, |c| c.load(Ordering::Relaxed));
                    if packets > 0 {
                        decisions.push(DecisionCount {
                            verdict,
                            filter,
                            reason,
                            packets,
                        });
                    }
                }
            }
        }
        let inspect = InspectEvent::all()
            .filter_map(|e| {
                let n = self.inspect.get(e.index())?.load(Ordering::Relaxed);
                (n > 0).then_some((e, n))
            })
            .collect();
        let trusted = Reason::ALL
            .into_iter()
            .filter_map(|r| {
                let n = self.trusted.get(r.index())?.load(Ordering::Relaxed);
                (n > 0).then_some((r, n))
            })
            .collect();
        CountersSnapshot {
            inspect,
            trusted,
            flows_blocked: self.flows_blocked.load(Ordering::Relaxed),
            packets_processed: self.packets_processed.load(Ordering::Relaxed),
            verdict_errors: self.verdict_errors.load(Ordering::Relaxed),
            recv_errors: self.recv_errors.load(Ordering::Relaxed),
            events_sampled: self.events_sampled.load(Ordering::Relaxed),
            events_suppressed: self.events_suppressed.load(Ordering::Relaxed),
            decisions,
        }
    }
}

impl Default for Counters {
    fn default() -> Counters {
        Counters::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn slots_are_dense_and_distinct() {
        let mut seen = HashSet::new();
        for v in Verdict::ALL {
            for f in Filter::ALL {
                for r in Reason::ALL {
                    let s = slot(v, f, r);
                    assert!(s < SLOTS);
                    assert!(seen.insert(s), "{v:?} {f:?} {r:?}");
                }
            }
        }
        assert_eq!(seen.len(), SLOTS);
    }

    #[test]
    fn new_counters_are_zero() {
        assert_eq!(Counters::new().snapshot(), CountersSnapshot::default());
    }

    #[test]
    fn records_each_kind() {
        let c = Counters::default();
        c.record(Decision::BLACKLISTED);
        c.record(Decision::BLACKLISTED);
        c.record(Decision::DEFAULT);
        c.record(Decision::unparsable(crate::chain::UnparsableVerdict::Drop));
        c.record_verdict_error();
        c.record_recv_error();
        c.record_recv_error();
        let s = c.snapshot();
        assert_eq!(s.packets_processed, 4);
        assert_eq!(s.verdict_errors, 1);
        assert_eq!(s.recv_errors, 2);
        assert_eq!(
            s.decisions,
            [
                DecisionCount {
                    verdict: Verdict::Accept,
                    filter: Filter::Empty,
                    reason: Reason::Default,
                    packets: 1,
                },
                DecisionCount {
                    verdict: Verdict::Drop,
                    filter: Filter::Empty,
                    reason: Reason::Unparsable,
                    packets: 1,
                },
                DecisionCount {
                    verdict: Verdict::Drop,
                    filter: Filter::Ip,
                    reason: Reason::BlackList,
                    packets: 2,
                },
            ]
        );
    }

    #[test]
    fn offload_counts_add_up() {
        let c = Counters::new();
        let mut counts = OffloadCounts::default();
        assert!(counts.is_empty());
        counts.trusted[Reason::Default.index()] = 3;
        counts.trusted[Reason::WhiteList.index()] = 1;
        counts.blocked = 2;
        assert!(!counts.is_empty());
        c.record_offload(&counts);
        c.record_offload(&counts);
        let s = c.snapshot();
        assert_eq!(s.trusted, [(Reason::Default, 6), (Reason::WhiteList, 2)]);
        assert_eq!(s.flows_blocked, 4);
    }

    #[test]
    fn concurrent_records_all_count() {
        let c = Arc::new(Counters::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        c.record(Decision::WHITELISTED);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = c.snapshot();
        assert_eq!(s.packets_processed, 40_000);
        assert_eq!(s.decisions.len(), 1);
        assert_eq!(s.decisions[0].packets, 40_000);
    }
}
