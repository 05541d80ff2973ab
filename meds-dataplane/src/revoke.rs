//! Revocation: offloaded flows follow policy changes.
//!
//! Once a flow carries the trusted bit in its connection mark ([`crate::offload`]), its packets
//! no longer reach the queue, so a newly blocked address would keep its open connections for
//! as long as they live. The [`watch`] thread closes that gap: whenever the live rule set
//! changes in a way that can change a source decision (the allowlist, blocklist, feeds,
//! country, ASN or IP-to-ASN lists; [`RuleSet::same_source_policy`] tells), it makes a
//! [`Revoker::pass`] over the conntrack table:
//!
//! * every entry with the trusted bit whose remote peer the new rule set drops
//!   ([`RuleSet::evaluate_source`]) gets the blocked bit instead: the kernel's
//!   `connmark blocked → DROP` rule drops the rest of the flow before the queue;
//! * every entry with the blocked bit whose remote peer the old rule set dropped and the new one
//!   does not loses the bit: its next packet is queued and decided afresh. Entries blocked for
//!   another reason (an SNI, a JA3 or DNS name: payload decisions that conntrack does not
//!   record) stay blocked.
//!
//! Only bits inside the Meds mask are changed ([`crate::conntrack`] sends the mask).
//!
//! **Which address is the peer.** The queue hooks `INPUT`, so every marked connection ends on
//! this host and one of its two ends ([`Entry::peers`]) is a local address: the other one is the
//! peer the packet path judged. Local addresses are read (`getifaddrs`) at every pass; if both
//! or neither end are local (loopback, an address removed meanwhile) both are judged, and one
//! dropped end is enough to revoke.
//!
//! **Bounded time.** Changes are noticed within [`POLL_INTERVAL`]; a pass walks only the
//! entries carrying a Meds bit (the kernel filters the dump by mark): about 9 µs per entry
//! examined and 15 µs per entry re-marked (`remark_many_entries` in `tests/conntrack_netns.rs`,
//! 2,000 entries, 2026-11-28). A
//! packet decided under the old rule set while the pass runs can mark its flow trusted after the
//! dump went past it, so a second pass runs [`RECHECK_DELAY`] later. Known limit: flows are not
//! revoked for payload list changes (a newly blocked domain or fingerprint): the flow's SNI or
//! fingerprint is not kept once it is offloaded.

use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::ErrorChain;
use crate::chain::{RuleSet, Verdict};
use crate::conntrack::{Conntrack, ConntrackError};
use crate::offload::Marks;

/// How often the watcher looks for a new rule set.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// A second pass after a change catches flows trusted under the old rule set during the first.
pub const RECHECK_DELAY: Duration = Duration::from_secs(2);
/// Failed updates after which a pass gives up (the kernel refuses them all, e.g. no privilege).
const MAX_FAILURES_PER_PASS: u64 = 16;

/// What one [`Revoker::pass`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassSummary {
    /// Entries with the trusted bit examined.
    pub trusted: u64,
    /// Trusted entries switched to blocked.
    pub revoked: u64,
    /// Entries with the blocked bit examined.
    pub blocked: u64,
    /// Blocked entries whose bit was cleared (their peer is no longer blocked).
    pub restored: u64,
    /// Entries that ended between the dump and their update.
    pub gone: u64,
    /// Updates the kernel refused.
    pub failed: u64,
    /// Dump messages that did not decode.
    pub malformed: u64,
}

/// Counters of the revocation thread, shared with the sync client (relaxed atomics; the
/// thread adds to them after each pass).
#[derive(Debug, Default)]
pub struct RevocationCounters {
    passes: AtomicU64,
    flows_revoked: AtomicU64,
    flows_released: AtomicU64,
    errors: AtomicU64,
}

/// A copy of [`RevocationCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RevocationSnapshot {
    /// Passes run (each one a conntrack dump), failed ones included.
    pub passes: u64,
    /// Trusted flows switched to blocked.
    pub flows_revoked: u64,
    /// Blocked flows whose bit was cleared.
    pub flows_released: u64,
    /// Passes that ended in an error.
    pub errors: u64,
}

impl RevocationCounters {
    /// Count one pass and its outcome.
    pub fn record(&self, outcome: Result<&PassSummary, ()>) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(s) => {
                self.flows_revoked.fetch_add(s.revoked, Ordering::Relaxed);
                self.flows_released.fetch_add(s.restored, Ordering::Relaxed);
            }
            Err(()) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn snapshot(&self) -> RevocationSnapshot {
        RevocationSnapshot {
            passes: self.passes.load(Ordering::Relaxed),
            flows_revoked: self.flows_revoked.load(Ordering::Relaxed),
            flows_released: self.flows_released.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// What a pass does with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Keep,
    /// Trusted → blocked.
    Revoke,
    /// Blocked → unmarked.
    Restore,
}

/// A trusted entry is revoked when the new rule set drops its peer.
pub fn trusted_action(new: &RuleSet, peers: [IpAddr; 2], local: &[IpAddr]) -> Action {
    if remote_dropped(new, peers, local) {
        Action::Revoke
    } else {
        Action::Keep
    }
}

/// A blocked entry is restored when the old rule set dropped its peer by address and the new
/// one does not (a flow blocked by its payload stays blocked).
pub fn blocked_action(
    old: &RuleSet,
    new: &RuleSet,
    peers: [IpAddr; 2],
    local: &[IpAddr],
) -> Action {
    if remote_dropped(old, peers, local) && !remote_dropped(new, peers, local) {
        Action::Restore
    } else {
        Action::Keep
    }
}

/// Whether `rules` drops the remote end (both ends when it cannot tell which one is remote).
fn remote_dropped(rules: &RuleSet, peers: [IpAddr; 2], local: &[IpAddr]) -> bool {
    let drops = |ip: IpAddr| rules.evaluate_source(ip).verdict == Verdict::Drop;
    let is_remote = |ip: &IpAddr| !local.contains(ip);
    if peers.iter().any(is_remote) {
        peers.into_iter().filter(is_remote).any(drops)
    } else {
        peers.into_iter().any(drops)
    }
}

/// The conntrack handle of the revocation thread.
#[derive(Debug)]
pub struct Revoker {
    conntrack: Conntrack,
    marks: Marks,
}

impl Revoker {
    /// Open ctnetlink in the calling thread's network namespace (fails without CAP_NET_ADMIN
    /// or ctnetlink).
    pub fn open(marks: Marks) -> Result<Revoker, ConntrackError> {
        Ok(Revoker {
            conntrack: Conntrack::open()?,
            marks,
        })
    }

    /// Bring the marked entries in line with a change from `old` to `new` (see the module
    /// docs). Entries visited before an error stay updated. The pass ends early (with what it
    /// did so far) once `stop` is set.
    pub fn pass(
        &mut self,
        old: &RuleSet,
        new: &RuleSet,
        stop: &AtomicBool,
    ) -> Result<PassSummary, ConntrackError> {
        let local = local_addresses();
        let marks = self.marks;
        let mut summary = PassSummary::default();
        let mut last_error: Option<ConntrackError> = None;
        let dump =
            self.conntrack
                .dump_marked(marks.trusted(), marks.mask(), |entry, updater| {
                    if stop.load(Ordering::Relaxed) {
                        return ControlFlow::Break(());
                    }
                    summary.trusted += 1;
                    if trusted_action(new, entry.peers(), &local) == Action::Revoke {
                        let result = updater.set_mark(entry, marks.blocked(), marks.mask());
                        record(result, &mut summary, |s| &mut s.revoked, &mut last_error)
                    } else {
                        ControlFlow::Continue(())
                    }
                })?;
        summary.malformed += dump.malformed;
        if !std::ptr::eq(old, new) {
            let dump =
                self.conntrack
                    .dump_marked(marks.blocked(), marks.mask(), |entry, updater| {
                        if stop.load(Ordering::Relaxed) {
                            return ControlFlow::Break(());
                        }
                        summary.blocked += 1;
                        if blocked_action(old, new, entry.peers(), &local) == Action::Restore {
                            let result = updater.set_mark(entry, 0, marks.mask());
                            record(result, &mut summary, |s| &mut s.restored, &mut last_error)
                        } else {
                            ControlFlow::Continue(())
                        }
                    })?;
            summary.malformed += dump.malformed;
        }
        match last_error {
            Some(error) if summary.failed >= MAX_FAILURES_PER_PASS => Err(error),
            Some(error) => {
                tracing::warn!(
                    failed = summary.failed,
                    error = %ErrorChain(&error),
                    "some conntrack entries could not be re-marked"
                );
                Ok(summary)
            }
            None => Ok(summary),
        }
    }
}

/// Count the outcome of one update; stop the dump after too many failures.
fn record(
    result: Result<bool, ConntrackError>,
    summary: &mut PassSummary,
    done: fn(&mut PassSummary) -> &mut u64,
    last_error: &mut Option<ConntrackError>,
) -> ControlFlow<()> {
    match result {
        Ok(true) => *done(summary) += 1,
        Ok(false) => summary.gone += 1,
        Err(error) => {
            summary.failed += 1;
            *last_error = Some(error);
            if summary.failed >= MAX_FAILURES_PER_PASS {
                return ControlFlow::Break(());
            }
        }
    }
    ControlFlow::Continue(())
}

/// Watch `live` until `stop` is set, making a pass after every rule-set change that touches
/// the source lists, and a recheck pass [`RECHECK_DELAY`] later. Runs on its own thread
/// (`meds-revoke`); every ctnetlink call blocks. The first pass runs at start-up against an
/// empty rule set, so flows left trusted by an earlier run and now blocked are revoked. Every
/// pass is counted in `counters`.
pub fn watch(
    mut revoker: Revoker,
    live: Arc<ArcSwap<RuleSet>>,
    stop: Arc<AtomicBool>,
    counters: Arc<RevocationCounters>,
) {
    yield_to_packet_threads();
    let mut seen = Arc::new(RuleSet::empty());
    let mut recheck: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let current = live.load_full();
        if !Arc::ptr_eq(&seen, &current) {
            if !seen.same_source_policy(&current) {
                run_pass(
                    &mut revoker,
                    &seen,
                    &current,
                    &stop,
                    &counters,
                    "policy change",
                );
                recheck = Some(Instant::now() + RECHECK_DELAY);
            }
            seen = current;
        } else if recheck.is_some_and(|at| Instant::now() >= at) {
            recheck = None;
            run_pass(&mut revoker, &seen, &seen, &stop, &counters, "recheck");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Run the calling thread under `SCHED_IDLE`: a pass over hundreds of thousands of entries
/// takes seconds of CPU (mostly the kernel's dump), and must never delay the packet threads,
/// also when it shares a CPU with one. Measured with `tests/bench.sh -S new` (50k new flows/s,
/// the whole dataplane on one CPU, a full list swap in each of 3 runs): 434 queue drops at
/// normal priority, 0 under `SCHED_IDLE`.
fn yield_to_packet_threads() {
    // SAFETY: sched_param is plain data; pid 0 is the calling thread.
    let param = libc::sched_param { sched_priority: 0 };
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot lower the revocation thread's priority; it runs at normal priority"
        );
    }
}

fn run_pass(
    revoker: &mut Revoker,
    old: &RuleSet,
    new: &RuleSet,
    stop: &AtomicBool,
    counters: &RevocationCounters,
    why: &'static str,
) {
    let started = Instant::now();
    let outcome = revoker.pass(old, new, stop);
    counters.record(outcome.as_ref().map_err(|_| ()));
    match outcome {
        Ok(s) if s.revoked > 0 || s.restored > 0 || s.failed > 0 || s.malformed > 0 => {
            tracing::info!(
                why,
                trusted = s.trusted,
                revoked = s.revoked,
                blocked = s.blocked,
                restored = s.restored,
                gone = s.gone,
                failed = s.failed,
                malformed = s.malformed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "offloaded flows re-marked"
            );
        }
        Ok(s) => tracing::debug!(
            why,
            trusted = s.trusted,
            blocked = s.blocked,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "offloaded flows checked"
        ),
        Err(error) => tracing::error!(
            why,
            error = %ErrorChain(&error),
            "could not revoke offloaded flows; the next policy change tries again"
        ),
    }
}

/// The addresses of this network namespace's interfaces (empty when `getifaddrs` fails: both
/// ends of each connection are then judged).
pub fn local_addresses() -> Vec<IpAddr> {
    let mut addresses = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we own and free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return addresses;
    }
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: cursor is a node of the list getifaddrs returned, not yet freed.
        let node = unsafe { &*cursor };
        if !node.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family field tells its real type.
            let family = i32::from(unsafe { (*node.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*node.ifa_addr.cast::<libc::sockaddr_in>() };
                addresses.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*node.ifa_addr.cast::<libc::sockaddr_in6>() };
                addresses.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cursor = node.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_counters_count_passes_flows_and_errors() {
        let c = RevocationCounters::default();
        let summary = PassSummary {
            revoked: 3,
            restored: 2,
            ..PassSummary::default()
        };
        c.record(Ok(&summary));
        c.record(Ok(&PassSummary::default()));
        c.record(Err(()));
        assert_eq!(
            c.snapshot(),
            RevocationSnapshot {
                passes: 3,
                flows_revoked: 3,
                flows_released: 2,
                errors: 1,
            }
        );
    }
    use meds_proto::{Cidr, Entry as ListEntry, ListKind};

    fn rules(allow: &[&str], block: &[&str]) -> RuleSet {
        let list = |v: &[&str]| -> Vec<ListEntry> {
            v.iter()
                .map(|c| ListEntry::Prefix(c.parse::<Cidr>().unwrap()))
                .collect()
        };
        RuleSet::empty()
            .with_list(ListKind::IpAllow, &list(allow))
            .with_list(ListKind::IpBlock, &list(block))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const LOCAL: &str = "192.0.2.1";
    const PEER: &str = "203.0.113.7";

    #[test]
    fn trusted_entries_are_revoked_when_the_remote_end_is_newly_dropped() {
        let local = [ip(LOCAL)];
        let open = rules(&[], &[]);
        let blocked = rules(&[], &["203.0.113.0/24"]);
        let allowed_too = rules(&["203.0.113.7/32"], &["203.0.113.0/24"]);
        // Inbound ([remote, local]) and outbound ([local, remote]) connections alike.
        for peers in [[ip(PEER), ip(LOCAL)], [ip(LOCAL), ip(PEER)]] {
            assert_eq!(trusted_action(&open, peers, &local), Action::Keep);
            assert_eq!(trusted_action(&blocked, peers, &local), Action::Revoke);
            assert_eq!(trusted_action(&allowed_too, peers, &local), Action::Keep);
        }
        // The prefix's edges.
        let edge = [ip("203.0.113.255"), ip(LOCAL)];
        assert_eq!(trusted_action(&blocked, edge, &local), Action::Revoke);
        let outside = [ip("203.0.114.0"), ip(LOCAL)];
        assert_eq!(trusted_action(&blocked, outside, &local), Action::Keep);
    }

    #[test]
    fn the_local_end_is_not_judged_unless_no_end_is_known_local() {
        // Blocking the host's own range must not revoke its connections to others.
        let own = rules(&[], &["192.0.2.0/24"]);
        let local = [ip(LOCAL)];
        let peers = [ip(PEER), ip(LOCAL)];
        assert_eq!(trusted_action(&own, peers, &local), Action::Keep);
        // Without local addresses both ends are judged.
        assert_eq!(trusted_action(&own, peers, &[]), Action::Revoke);
        // Both ends local: both judged.
        let both = [ip(LOCAL), ip(LOCAL)];
        assert_eq!(trusted_action(&own, both, &local), Action::Revoke);
    }

    #[test]
    fn only_entries_blocked_by_address_are_restored() {
        let local = [ip(LOCAL)];
        let peers = [ip(PEER), ip(LOCAL)];
        let open = rules(&[], &[]);
        let blocked = rules(&[], &["203.0.113.0/24"]);
        // Unblocked: restored.
        assert_eq!(
            blocked_action(&blocked, &open, peers, &local),
            Action::Restore
        );
        // Still blocked: kept.
        assert_eq!(
            blocked_action(&blocked, &blocked, peers, &local),
            Action::Keep
        );
        // Not blocked by address before (a payload block): kept.
        assert_eq!(blocked_action(&open, &open, peers, &local), Action::Keep);
        // Newly allowlisted: restored.
        let allowed = rules(&["203.0.113.7/32"], &["203.0.113.0/24"]);
        assert_eq!(
            blocked_action(&blocked, &allowed, peers, &local),
            Action::Restore
        );
    }

    #[test]
    fn local_addresses_include_loopback() {
        let local = local_addresses();
        assert!(local.contains(&ip("127.0.0.1")), "{local:?}");
    }
}
