//! The packet loop: one OS thread per queue, blocking receive, no lock, no allocation and no
//! logging per packet.
//!
//! [`run`] allocates its receive buffer once (the queue's copy range plus 4 KiB of headroom,
//! at least 64 KiB) and gets an [`Inspector`] built before the thread started (its reassembly
//! slab and tables are allocated there), then until `stop` is set: receive a datagram (the
//! receive times out about every 200 ms so `stop` is noticed), and for each queued packet load
//! the current rule set (an `arc-swap` guard: no lock), run the whole chain on it with the
//! inspector (source, then DNS names, SNI, JA3, JA4 as the loaded lists need; see
//! [`crate::inspect`]), send the verdict and count. After each datagram the inspector's counts
//! are added to the shared counters; about once a second stale reassembly entries are freed.
//! The clock of the inspector is a monotonic [`Instant`] read once per datagram.
//!
//! A per-packet error never ends the loop. What each one becomes:
//!
//! | event | verdict | counted as |
//! |---|---|---|
//! | packet decided | the decision's | its decision (+ `packets_processed`) |
//! | DNS payload malformed | the chain's, on the names read before the error | its decision + inspection `dns_error/<kind>` |
//! | ClientHello malformed, or its reassembly gave up | `--tls-uninspectable` (default accept), `empty`/`uninspectable` | that decision + inspection `tls/uninspectable` |
//! | ClientHello segment with a bad TCP checksum or cut off by `--copy-range` | the source decision (not inspected) | inspection `tcp/bad_checksum`, `tcp/truncated` |
//! | later packet of a flow whose hello was dropped | the same drop | that decision + inspection `blocked_flow/hit` |
//! | verdict could not be sent (retried once on ENOBUFS/ENOMEM/EINTR/EAGAIN) | none: the kernel keeps the packet until the queue closes | `verdict_errors` |
//! | queue message not decodable, packet id readable | the unparsable policy (default accept), as for a packet without a source address | decision `empty`/`unparsable` |
//! | queue message not decodable, no packet id | none possible | `recv_errors` |
//! | kernel rejected an earlier verdict (NLMSG_ERROR) | — | `verdict_errors` |
//! | receive error (e.g. ENOBUFS), message from a non-kernel port | — | `recv_errors` |
//!
//! After a receive error other than a transient one (ENOBUFS, ENOMEM, EINTR, EAGAIN) the loop
//! pauses 10 ms so that a persistent error cannot spin a core; that pause is the only blocking
//! outside the receive itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::chain::{Decision, RuleSet};
use crate::counters::Counters;
use crate::inspect::Inspector;
use crate::nfqueue::{NfQueue, NfQueueError, QueuedPacket, packets};

/// Longest time spent answering already-queued packets after `stop`.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// Pause after a receive error that is not a transient buffer shortage.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// How often stale reassembly entries are freed.
const EXPIRE_INTERVAL_MS: u64 = 1_000;

/// Run the packet loop for `queue` until `stop` is set. Then answers the packets still queued
/// and returns once a receive times out (about 200 ms of silence), at most [`DRAIN_LIMIT`]
/// after `stop` was set.
pub fn run(
    mut queue: NfQueue,
    policy: Arc<ArcSwap<RuleSet>>,
    counters: Arc<Counters>,
    mut inspector: Inspector,
    stop: Arc<AtomicBool>,
) {
    let queue_num = queue.queue_num();
    let epoch = Instant::now();
    let mut last_expire_ms = 0u64;
    let mut buf = vec![0u8; queue.recv_buffer_len()];
    tracing::info!(
        queue = queue_num,
        buffer_bytes = buf.len(),
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
        let len = match queue.recv(&mut buf) {
            Ok(Some(len)) => len,
            Ok(None) if drain_until.is_some() => break,
            Ok(None) => continue,
            Err(error) => {
                counters.record_recv_error();
                if !is_transient(&error) {
                    std::thread::sleep(ERROR_BACKOFF);
                }
                continue;
            }
        };
        let datagram = buf.get(..len).unwrap_or_default();
        let now_ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        for item in packets(datagram) {
            match step(item, &policy, &mut inspector, now_ms) {
                Step::Answer {
                    packet_id,
                    decision,
                } => {
                    // One retry when the kernel is short of memory for the message.
                    let sent = queue
                        .verdict(packet_id, decision.verdict, None)
                        .or_else(|error| {
                            if is_transient(&error) {
                                queue.verdict(packet_id, decision.verdict, None)
                            } else {
                                Err(error)
                            }
                        });
                    match sent {
                        Ok(()) => counters.record(decision),
                        Err(_) => counters.record_verdict_error(),
                    }
                }
                Step::RecvError => counters.record_recv_error(),
                Step::VerdictError => counters.record_verdict_error(),
            }
        }
        if now_ms.saturating_sub(last_expire_ms) >= EXPIRE_INTERVAL_MS {
            inspector.expire(now_ms);
            last_expire_ms = now_ms;
        }
        inspector.flush(&counters);
    }
    inspector.flush(&counters);
    tracing::info!(queue = queue_num, "packet worker stopped");
}

/// What to do about one item of a received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Send this verdict, then count the decision.
    Answer { packet_id: u32, decision: Decision },
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
) -> Step {
    match item {
        Ok(packet) => {
            let rules = policy.load();
            Step::Answer {
                packet_id: packet.packet_id,
                decision: inspector.inspect(&rules, packet.payload, now_ms).decision,
            }
        }
        Err(NfQueueError::Malformed {
            packet_id: Some(packet_id),
            ..
        }) => Step::Answer {
            packet_id,
            decision: Decision::unparsable(inspector.config().unparsable),
        },
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
    use crate::chain::{Filter, Reason, UnparsableVerdict, Verdict};
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

    fn queued(packet_id: u32, payload: &[u8]) -> Result<QueuedPacket<'_>, NfQueueError> {
        Ok(QueuedPacket {
            packet_id,
            hw_protocol: 0x0800,
            mark: None,
            payload,
        })
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
                Step::Answer {
                    packet_id: 1,
                    decision: Decision::BLACKLISTED,
                },
            ),
            (
                "other source",
                queued(2, &other),
                Step::Answer {
                    packet_id: 2,
                    decision: Decision::DEFAULT,
                },
            ),
            (
                "empty payload",
                queued(3, &[]),
                Step::Answer {
                    packet_id: 3,
                    decision: unparsable,
                },
            ),
            (
                "malformed with id",
                Err(NfQueueError::Malformed {
                    packet_id: Some(4),
                    what: "x",
                }),
                Step::Answer {
                    packet_id: 4,
                    decision: unparsable,
                },
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
            assert_eq!(
                step(item, &policy, &mut inspector(UnparsableVerdict::Accept), 0),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn a_swapped_rule_set_applies_to_the_next_packet() {
        let policy = blocking("198.51.100.0/24");
        let packet = v4(UDP, A4, B4, &udp(1, 2, b""));
        let mut inspector = inspector(UnparsableVerdict::Drop);
        let before = step(queued(1, &packet), &policy, &mut inspector, 0);
        assert_eq!(
            before,
            Step::Answer {
                packet_id: 1,
                decision: Decision::DEFAULT
            }
        );
        policy.store(blocking("203.0.113.0/24").load_full());
        let after = step(queued(2, &packet), &policy, &mut inspector, 1);
        assert_eq!(
            after,
            Step::Answer {
                packet_id: 2,
                decision: Decision::BLACKLISTED
            }
        );
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
