//! The packet loop: one OS thread per queue, blocking receive, no lock, no allocation and no
//! logging per packet.
//!
//! [`run`] allocates once, before its loop: a [`RecvBatch`] of [`WorkerConfig::recv_batch`]
//! datagram buffers (each the queue's copy range plus 4 KiB of headroom, at least 64 KiB), a
//! [`VerdictBatcher`] and the record of the decisions awaiting their flush; the [`Inspector`]
//! was built before the thread started (its reassembly slab and tables are allocated there).
//! Then until `stop` is set: receive a batch of datagrams with one `recvmmsg` (it times out
//! about every 200 ms so `stop` is noticed), and for each queued packet load the current rule
//! set (an `arc-swap` guard: no lock), run the whole chain on it with the inspector (source,
//! then DNS names, SNI, JA3, JA4 as the loaded lists need; see [`crate::inspect`]), turn the
//! decision into a verdict and mark ([`offload::answer`]: with [`WorkerConfig::marks`], a
//! packet of a decided flow is repeated with a mark the offload rules act on) and hand it to
//! the batcher. All answers of a receive batch go out in one `sendto` (equal answers of
//! consecutive packets merged into one `NFQNL_MSG_VERDICT_BATCH`; see [`crate::nfqueue`]).
//! Decisions are counted once their verdicts were sent. After each receive batch the
//! inspector's counts are added to the shared counters; a drop decision may be sampled into a
//! [`crate::events::DropEvent`] (the worker's [`Sampler`]: token bucket, `try_send` on a
//! bounded channel, no allocation; its counts are flushed once per batch too); about once a
//! second stale reassembly
//! entries are freed. The clock of the inspector is a monotonic [`Instant`] read once per
//! receive batch.
//!
//! A per-packet error never ends the loop. What each one becomes:
//!
//! | event | verdict | counted as |
//! |---|---|---|
//! | packet decided | the decision's (with offload: `NF_REPEAT` and a mark for a decided flow) | its decision (+ `packets_processed`), once the verdict was sent |
//! | DNS payload malformed | the chain's, on the names read before the error | its decision + inspection `dns_error/<kind>` |
//! | ClientHello malformed, or its reassembly gave up | `--tls-uninspectable` (default accept), `empty`/`uninspectable` | that decision + inspection `tls/uninspectable` |
//! | ClientHello segment with a bad TCP checksum or cut off by `--copy-range` | the source decision (not inspected) | inspection `tcp/bad_checksum`, `tcp/truncated` |
//! | later packet of a flow whose hello was dropped | the same drop | that decision + inspection `blocked_flow/hit` |
//! | verdicts of a receive batch could not be sent (one `sendto`, retried once on ENOBUFS/ENOMEM/EINTR/EAGAIN) | none yet: the messages are kept and sent first with the next batch; if that send fails too they are given up, the kernel keeps those packets until the queue closes, and the queue gets single verdicts only from then on (so no batch verdict can cover them) | `verdict_errors`, one per packet (not its decision) |
//! | queue message not decodable, packet id readable | the unparsable policy (default accept), as for a packet without a source address | decision `empty`/`unparsable` |
//! | queue message not decodable, no packet id | none of its own: the next batch verdict with a higher id covers it, with that verdict and mark (see [`crate::nfqueue`]) | `recv_errors` |
//! | kernel rejected an earlier verdict (NLMSG_ERROR) | — | `verdict_errors` |
//! | receive error (e.g. ENOBUFS), datagram from a non-kernel port | — | `recv_errors` |
//!
//! After a receive error other than a transient one (ENOBUFS, ENOMEM, EINTR, EAGAIN) the loop
//! pauses 10 ms so that a persistent error cannot spin a core; that pause is the only blocking
//! outside the receive itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::chain::{Decision, RuleSet, Verdict};
use crate::counters::{Counters, OffloadCounts};
use crate::events::{DropEvent, Sampler, unix_ms};
use crate::inspect::Inspector;
use crate::nfqueue::{
    Flushed, NfQueue, NfQueueError, QueuedPacket, RecvBatch, VerdictBatcher, packets,
};
use crate::offload::{self, Answer, Marks, RawVerdict};

/// Longest time spent answering already-queued packets after `stop`.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// Pause after a receive error that is not a transient buffer shortage.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// How often stale reassembly entries are freed.
const EXPIRE_INTERVAL_MS: u64 = 1_000;

/// Datagrams per receive (and verdicts per flush) by default: the batch size measured in
/// `nfqueue-limits.md` (about half the CPU per packet of one receive and verdict per packet).
pub const DEFAULT_RECV_BATCH: usize = 64;

/// How the packet loop answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Conntrack offload marks; `None` answers every packet with a plain accept or drop.
    pub marks: Option<Marks>,
    /// Datagrams read per `recvmmsg` and most packets answered per `sendto`
    /// (clamped to 1..=[`MAX_BATCH`](crate::nfqueue::MAX_BATCH)).
    pub recv_batch: usize,
}

impl Default for WorkerConfig {
    /// No offload, [`DEFAULT_RECV_BATCH`].
    fn default() -> WorkerConfig {
        WorkerConfig {
            marks: None,
            recv_batch: DEFAULT_RECV_BATCH,
        }
    }
}

/// Run the packet loop for `queue` until `stop` is set. Then answers the packets still queued
/// (plain verdicts, no offload marks: the rules that act on them are already gone) and returns
/// once a receive times out (about 200 ms of silence), at most [`DRAIN_LIMIT`] after `stop`
/// was set.
pub fn run(
    mut queue: NfQueue,
    policy: Arc<ArcSwap<RuleSet>>,
    counters: Arc<Counters>,
    mut inspector: Inspector,
    stop: Arc<AtomicBool>,
    config: WorkerConfig,
    mut sampler: Sampler,
) {
    let queue_num = queue.queue_num();
    let epoch = Instant::now();
    let mut last_expire_ms = 0u64;
    let mut batch = RecvBatch::for_queue(&queue, config.recv_batch);
    let mut batcher = VerdictBatcher::new(queue_num, batch.capacity());
    let mut awaiting = Awaiting::new(batcher.capacity());
    tracing::info!(
        queue = queue_num,
        recv_batch = batch.capacity(),
        buffer_bytes = batch.buffer_len(),
        offload = config.marks.is_some(),
        "packet worker started"
    );
    // Once `stop` is set (the rules are already gone, so nothing new is queued), packets still
    // in the queue get their verdicts instead of being dropped when the socket closes: drain
    // until a receive times out, for at most DRAIN_LIMIT.
    let mut drain_until: Option<Instant> = None;
    loop {
        match drain_until {
            None if stop.load(Ordering::Relaxed) => {
                drain_until = Some(Instant::now() + DRAIN_LIMIT);
            }
            Some(deadline) if Instant::now() >= deadline => break,
            _ => {}
        }
        match queue.recv_batch(&mut batch) {
            Ok(0) if drain_until.is_some() => break,
            Ok(0) => continue,
            Ok(_) => {}
            Err(error) => {
                counters.record_recv_error();
                if !is_transient(&error) {
                    std::thread::sleep(ERROR_BACKOFF);
                }
                continue;
            }
        }
        let now_ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let marks = if drain_until.is_some() {
            None
        } else {
            config.marks
        };
        let batching = batcher.batching();
        for datagram in batch.datagrams() {
            let Ok(datagram) = datagram else {
                counters.record_recv_error();
                continue;
            };
            for item in packets(datagram) {
                match step(item, &policy, &mut inspector, now_ms, marks, &mut sampler) {
                    Step::Answer {
                        packet_id,
                        decision,
                        answer,
                    } => {
                        if let Some(flushed) = batcher.push(&mut queue, packet_id, answer) {
                            awaiting.settle(&flushed, &counters);
                        }
                        awaiting.push(decision, answer);
                    }
                    Step::RecvError => counters.record_recv_error(),
                    Step::VerdictError => counters.record_verdict_error(),
                }
            }
        }
        let flushed = batcher.flush(&mut queue);
        awaiting.settle(&flushed, &counters);
        if batching && !batcher.batching() {
            tracing::warn!(
                queue = queue_num,
                "verdicts could not be sent twice in a row and were given up; the kernel keeps \
                 those packets until the queue closes, and this queue gets single verdicts only \
                 from now on"
            );
        }
        if now_ms.saturating_sub(last_expire_ms) >= EXPIRE_INTERVAL_MS {
            inspector.expire(now_ms);
            last_expire_ms = now_ms;
        }
        inspector.flush(&counters);
        sampler.flush(&counters);
    }
    inspector.flush(&counters);
    sampler.flush(&counters);
    tracing::info!(queue = queue_num, "packet worker stopped");
}

/// Which offload mark an answer sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marked {
    None,
    Trusted,
    Blocked,
}

impl Marked {
    /// An answer repeats the packet with a mark only to set one of our two bits
    /// ([`offload::answer`]): the trusted one for an accept, the blocked one for a drop.
    fn of(decision: Decision, answer: Answer) -> Marked {
        match (answer.verdict, decision.verdict) {
            (RawVerdict::Repeat, Verdict::Accept) => Marked::Trusted,
            (RawVerdict::Repeat, Verdict::Drop) => Marked::Blocked,
            _ => Marked::None,
        }
    }
}

/// The decisions of the packets pushed to the batcher since its last flush, in push order,
/// with the offload mark each answer sets (allocated once; the batcher never holds more than
/// its capacity).
#[derive(Debug)]
struct Awaiting {
    decisions: Box<[(Decision, Marked)]>,
    len: usize,
}

impl Awaiting {
    fn new(capacity: usize) -> Awaiting {
        Awaiting {
            decisions: vec![(Decision::DEFAULT, Marked::None); capacity].into_boxed_slice(),
            len: 0,
        }
    }

    fn push(&mut self, decision: Decision, answer: Answer) {
        if let Some(slot) = self.decisions.get_mut(self.len) {
            *slot = (decision, Marked::of(decision, answer));
            self.len += 1;
        }
    }

    /// Count the outcome of a flush of the awaiting packets: the decisions of those whose
    /// verdicts were sent (and the offload marks those answers set: counted locally, added to
    /// the shared counters once per flush), a verdict error for each of the others.
    fn settle(&mut self, flushed: &Flushed, counters: &Counters) {
        let awaiting = self.decisions.get(..self.len).unwrap_or_default();
        let sent = flushed.sent.min(awaiting.len());
        let mut offload = OffloadCounts::default();
        for &(decision, marked) in awaiting.iter().take(sent) {
            counters.record(decision);
            match marked {
                Marked::None => {}
                Marked::Trusted => {
                    if let Some(n) = offload.trusted.get_mut(decision.reason.index()) {
                        *n += 1;
                    }
                }
                Marked::Blocked => offload.blocked += 1,
            }
        }
        if !offload.is_empty() {
            counters.record_offload(&offload);
        }
        for _ in 0..flushed.failed {
            counters.record_verdict_error();
        }
        self.len = 0;
    }
}

/// What to do about one item of a received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Send this answer, then count the decision.
    Answer {
        packet_id: u32,
        decision: Decision,
        answer: Answer,
    },
    /// Nothing can be answered; count a receive error.
    RecvError,
    /// The kernel rejected an earlier verdict; count a verdict error.
    VerdictError,
}

fn step(
    item: Result<QueuedPacket<'_>, NfQueueError>,
    policy: &ArcSwap<RuleSet>,
    inspector: &mut Inspector,
    now_ms: u64,
    marks: Option<Marks>,
    sampler: &mut Sampler,
) -> Step {
    match item {
        Ok(packet) => {
            let rules = policy.load();
            let inspection =
                inspector.inspect_queued(&rules, packet.payload, now_ms, packet.checksum_ready);
            let decision = inspection.decision;
            sampler.offer(decision, now_ms, |queue| {
                DropEvent::new(
                    unix_ms(),
                    queue,
                    decision,
                    packet.payload,
                    inspection.meta.as_ref(),
                    &inspector.app(),
                    &rules,
                )
            });
            Step::Answer {
                packet_id: packet.packet_id,
                decision,
                answer: offload::answer(decision.verdict, inspection.trust, packet.mark, marks),
            }
        }
        Err(NfQueueError::Malformed {
            packet_id: Some(packet_id),
            ..
        }) => {
            let decision = Decision::unparsable(inspector.config().unparsable);
            Step::Answer {
                packet_id,
                decision,
                answer: Answer::plain(decision.verdict),
            }
        }
        Err(NfQueueError::Kernel { .. }) => Step::VerdictError,
        Err(_) => Step::RecvError,
    }
}

/// Errors worth an immediate retry: the kernel was briefly short of buffers, or a signal.
fn is_transient(error: &NfQueueError) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOBUFS | libc::ENOMEM | libc::EINTR | libc::EAGAIN)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{Filter, Reason, UnparsableVerdict};
    use crate::inspect::InspectConfig;
    use crate::packet::tests::{A4, B4, UDP, udp, v4};
    use meds_proto::{Entry, ListKind};

    fn blocking(prefix: &str) -> ArcSwap<RuleSet> {
        let block = [Entry::Prefix(prefix.parse().unwrap())];
        ArcSwap::from_pointee(
            RuleSet::empty()
                .with_generation(3)
                .with_list(ListKind::IpBlock, &block),
        )
    }

    fn inspector(unparsable: UnparsableVerdict) -> Inspector {
        Inspector::new(InspectConfig::new(unparsable)).unwrap()
    }

    fn queued_with_mark(
        packet_id: u32,
        payload: &[u8],
        mark: Option<u32>,
    ) -> Result<QueuedPacket<'_>, NfQueueError> {
        Ok(QueuedPacket {
            packet_id,
            hw_protocol: 0x0800,
            mark,
            payload,
            checksum_ready: true,
            gso: false,
        })
    }

    fn queued(packet_id: u32, payload: &[u8]) -> Result<QueuedPacket<'_>, NfQueueError> {
        queued_with_mark(packet_id, payload, None)
    }

    fn answer(packet_id: u32, decision: Decision) -> Step {
        Step::Answer {
            packet_id,
            decision,
            answer: Answer::plain(decision.verdict),
        }
    }

    #[test]
    fn steps() {
        let policy = blocking("203.0.113.0/24");
        let blocked = v4(UDP, A4, B4, &udp(1, 2, b""));
        let other = v4(UDP, [198, 51, 100, 1], B4, &udp(1, 2, b""));
        let unparsable = Decision {
            verdict: Verdict::Accept,
            filter: Filter::Empty,
            reason: Reason::Unparsable,
        };
        let cases: Vec<(&str, Result<QueuedPacket<'_>, NfQueueError>, Step)> = vec![
            (
                "blocked source",
                queued(1, &blocked),
                answer(1, Decision::BLACKLISTED),
            ),
            (
                "other source",
                queued(2, &other),
                answer(2, Decision::DEFAULT),
            ),
            ("empty payload", queued(3, &[]), answer(3, unparsable)),
            (
                "malformed with id",
                Err(NfQueueError::Malformed {
                    packet_id: Some(4),
                    what: "x",
                }),
                answer(4, unparsable),
            ),
            (
                "malformed without id",
                Err(NfQueueError::Malformed {
                    packet_id: None,
                    what: "x",
                }),
                Step::RecvError,
            ),
            (
                "kernel rejected a verdict",
                Err(NfQueueError::Kernel {
                    seq: 0,
                    error: std::io::Error::from_raw_os_error(libc::ENOENT),
                }),
                Step::VerdictError,
            ),
            (
                "foreign sender",
                Err(NfQueueError::ForeignSender { portid: 9 }),
                Step::RecvError,
            ),
        ];
        for (name, item, want) in cases {
            let mut inspector = inspector(UnparsableVerdict::Accept);
            assert_eq!(
                step(item, &policy, &mut inspector, 0, None, &mut Sampler::off()),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn offload_marks_decided_flows() {
        let policy = blocking("203.0.113.0/24");
        let marks = Some(Marks::DEFAULT);
        let blocked = v4(UDP, A4, B4, &udp(1, 2, b""));
        let other = v4(UDP, [198, 51, 100, 1], B4, &udp(1, 2, b""));
        let dns = v4(UDP, [198, 51, 100, 1], B4, &udp(5353, 53, b""));
        let repeat = |mark| Answer {
            verdict: RawVerdict::Repeat,
            mark: Some(mark),
        };
        let cases = [
            ("blocked source", queued(1, &blocked), repeat(0x0020_0000)),
            ("trusted flow", queued(2, &other), repeat(0x0010_0000)),
            (
                "own mark kept",
                queued_with_mark(3, &other, Some(0x7)),
                repeat(0x0010_0007),
            ),
            (
                "our bit already set: plain",
                queued_with_mark(4, &other, Some(0x0010_0000)),
                Answer::plain(Verdict::Accept),
            ),
            (
                "DNS stays queued",
                queued(5, &dns),
                Answer::plain(Verdict::Accept),
            ),
            (
                "malformed: plain",
                Err(NfQueueError::Malformed {
                    packet_id: Some(6),
                    what: "x",
                }),
                Answer::plain(Verdict::Accept),
            ),
        ];
        for (name, item, want) in cases {
            let mut inspector = inspector(UnparsableVerdict::Accept);
            match step(item, &policy, &mut inspector, 0, marks, &mut Sampler::off()) {
                Step::Answer { answer, .. } => assert_eq!(answer, want, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        // Without marks (offload off, or draining after stop) the same packets are plain.
        let mut inspector = inspector(UnparsableVerdict::Accept);
        assert_eq!(
            step(
                queued(7, &blocked),
                &policy,
                &mut inspector,
                0,
                None,
                &mut Sampler::off()
            ),
            answer(7, Decision::BLACKLISTED)
        );
    }

    #[test]
    fn a_swapped_rule_set_applies_to_the_next_packet() {
        let policy = blocking("198.51.100.0/24");
        let packet = v4(UDP, A4, B4, &udp(1, 2, b""));
        let mut inspector = inspector(UnparsableVerdict::Drop);
        let before = step(
            queued(1, &packet),
            &policy,
            &mut inspector,
            0,
            None,
            &mut Sampler::off(),
        );
        assert_eq!(before, answer(1, Decision::DEFAULT));
        policy.store(blocking("203.0.113.0/24").load_full());
        let after = step(
            queued(2, &packet),
            &policy,
            &mut inspector,
            1,
            None,
            &mut Sampler::off(),
        );
        assert_eq!(after, answer(2, Decision::BLACKLISTED));
    }

    #[test]
    fn drops_are_sampled_into_events() {
        let policy = blocking("203.0.113.0/24");
        let blocked = v4(UDP, A4, B4, &udp(1234, 53, b""));
        let other = v4(UDP, [198, 51, 100, 1], B4, &udp(1, 2, b""));
        let (tx, rx) = crate::events::channel();
        let mut sampler = Sampler::new(tx, 2, 9);
        let mut inspector = inspector(UnparsableVerdict::Accept);
        for id in 0..5 {
            step(
                queued(id, &other),
                &policy,
                &mut inspector,
                0,
                None,
                &mut sampler,
            );
            step(
                queued(id, &blocked),
                &policy,
                &mut inspector,
                0,
                None,
                &mut sampler,
            );
        }
        // burst 2: two of the five drops sampled, three suppressed, accepts not offered
        assert_eq!(sampler.pending(), (2, 3));
        let events: Vec<DropEvent> = rx.try_iter().collect();
        assert_eq!(events.len(), 2);
        let e = events[0];
        assert_eq!(e.source, std::net::IpAddr::from(A4));
        assert_eq!((e.source_port, e.destination_port, e.queue), (1234, 53, 9));
        assert_eq!(e.decision, Decision::BLACKLISTED);
        assert!(e.time_unix_ms > 0);
    }

    #[test]
    fn decisions_are_counted_only_when_sent() {
        let counters = Counters::new();
        let mut awaiting = Awaiting::new(4);
        let plain = |d: Decision| Answer::plain(d.verdict);
        awaiting.push(Decision::DEFAULT, plain(Decision::DEFAULT));
        awaiting.push(Decision::BLACKLISTED, plain(Decision::BLACKLISTED));
        let sent = Flushed {
            sent: 2,
            messages: 2,
            ..Flushed::default()
        };
        awaiting.settle(&sent, &counters);
        awaiting.push(Decision::BLACKLISTED, plain(Decision::BLACKLISTED));
        awaiting.push(Decision::BLACKLISTED, plain(Decision::BLACKLISTED));
        awaiting.push(Decision::BLACKLISTED, plain(Decision::BLACKLISTED));
        let failed = Flushed {
            failed: 3,
            ..Flushed::default()
        };
        awaiting.settle(&failed, &counters);
        // the kept messages going out later count nothing more
        let late = Flushed {
            late: 3,
            messages: 1,
            ..Flushed::default()
        };
        awaiting.settle(&late, &counters);
        // more pushes than the capacity are ignored, never an allocation or a panic
        for _ in 0..10 {
            awaiting.push(Decision::DEFAULT, plain(Decision::DEFAULT));
        }
        assert_eq!(awaiting.len, 4);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.packets_processed, 2);
        assert_eq!(snapshot.verdict_errors, 3);
        let counted: Vec<_> = snapshot
            .decisions
            .iter()
            .map(|d| (d.verdict, d.packets))
            .collect();
        assert_eq!(counted, [(Verdict::Accept, 1), (Verdict::Drop, 1)]);
    }

    #[test]
    fn offload_marks_are_counted_by_reason_only_when_sent() {
        let counters = Counters::new();
        let mut awaiting = Awaiting::new(8);
        let repeat = Answer {
            verdict: RawVerdict::Repeat,
            mark: Some(0x0010_0000),
        };
        awaiting.push(Decision::DEFAULT, repeat);
        awaiting.push(Decision::WHITELISTED, repeat);
        awaiting.push(Decision::DEFAULT, Answer::plain(Verdict::Accept));
        awaiting.push(Decision::BLACKLISTED, repeat);
        awaiting.push(Decision::BLACKLISTED, Answer::plain(Verdict::Drop));
        // the last one's verdict was not sent: its mark was never set
        awaiting.push(Decision::DEFAULT, repeat);
        let flushed = Flushed {
            sent: 5,
            failed: 1,
            messages: 3,
            ..Flushed::default()
        };
        awaiting.settle(&flushed, &counters);
        let s = counters.snapshot();
        assert_eq!(s.trusted, [(Reason::Default, 1), (Reason::WhiteList, 1)]);
        assert_eq!(s.flows_blocked, 1);
    }

    #[test]
    fn worker_config_default() {
        let c = WorkerConfig::default();
        assert_eq!((c.marks, c.recv_batch), (None, 64));
    }

    #[test]
    fn transient_errors() {
        let recv = |errno| NfQueueError::Recv {
            queue: 0,
            error: std::io::Error::from_raw_os_error(errno),
        };
        assert!(is_transient(&recv(libc::ENOBUFS)));
        assert!(is_transient(&recv(libc::ENOMEM)));
        assert!(!is_transient(&recv(libc::EBADF)));
        assert!(!is_transient(&NfQueueError::ForeignSender { portid: 1 }));
    }
}
