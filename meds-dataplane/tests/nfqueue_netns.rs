//! NFQUEUE against the real kernel, inside throwaway network namespaces (root only).
//!
//! Each test creates namespaces with random names (an RAII guard always deletes them, and with
//! them every iptables rule and veth inside), queues UDP with an iptables `NFQUEUE` rule, and
//! does all socket work from threads that `setns`-ed into a namespace. The first two tests
//! keep traffic on 127.0.0.1 inside one namespace; the batch test sends from a peer namespace
//! over a veth pair (203.0.113.0/24). Every wait is bounded by a count and a deadline. Without
//! root the tests print a skip message and pass.
//!
//! `measure_cpu_per_packet` (ignored; run it with `--ignored --nocapture`) prints the queue
//! thread's CPU time per packet with one verdict per packet and with batches.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use meds_dataplane::chain::{Decision, RuleSet, UnparsableVerdict, Verdict};
use meds_dataplane::counters::{Counters, DecisionCount};
use meds_dataplane::inspect::{InspectConfig, Inspector};
use meds_dataplane::nfqueue::{
    Flushed, NfQueue, NfQueueError, QueueConfig, RecvBatch, VerdictBatcher, packets,
};
use meds_dataplane::offload::{Answer, RawVerdict};
use meds_dataplane::packet::parse;
use meds_dataplane::worker;
use meds_proto::{Entry, ListKind};

mod common;
use common::*;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PORT: u16 = 9;
const WAIT: Duration = Duration::from_secs(5);

impl Netns {
    fn queue_udp_port(&self, port: u16, queue: u16) {
        let (port, queue) = (port.to_string(), queue.to_string());
        self.exec(&[
            "iptables",
            "-I",
            "INPUT",
            "-p",
            "udp",
            "--dport",
            &port,
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
        ]);
    }
}

fn config(queue_num: u16) -> QueueConfig {
    QueueConfig {
        queue_num,
        max_len: 64,
        copy_range: 256,
        rcvbuf_bytes: 1 << 20,
        fail_open: false,
        gso: false,
    }
}

struct Received {
    packet_id: u32,
    payload: Vec<u8>,
    checksum_ready: bool,
    gso: bool,
}

/// The next item of the queue: a packet or an error from `packets`. Bounded by count and time.
fn next_item(q: &mut NfQueue, buf: &mut [u8]) -> Result<Received, NfQueueError> {
    let deadline = Instant::now() + WAIT;
    for _ in 0..100 {
        assert!(Instant::now() < deadline, "nothing queued within {WAIT:?}");
        let Some(len) = q.recv(buf).expect("recv") else {
            continue;
        };
        if let Some(item) = packets(&buf[..len]).next() {
            return item.map(|p| Received {
                packet_id: p.packet_id,
                payload: p.payload.to_vec(),
                checksum_ready: p.checksum_ready,
                gso: p.gso,
            });
        }
    }
    panic!("nothing queued after 100 receives");
}

fn next_packet(q: &mut NfQueue, buf: &mut [u8]) -> Received {
    next_item(q, buf).expect("a queued packet")
}

fn recv_datagram(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let (n, _) = socket.recv_from(&mut buf).expect("datagram delivered");
    buf[..n].to_vec()
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    for _ in 0..500 {
        if check() {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("gave up waiting for {what}");
}

/// Packets counted by the security-table rule that matches mark `mark` on port 9.
fn marked_packets(ns: &Netns, mark: &str) -> u64 {
    let rules = ns.exec(&["iptables", "-t", "security", "-S", "INPUT", "-v"]);
    let line = rules
        .lines()
        .find(|l| l.contains(&format!("--mark {mark}")))
        .unwrap_or_else(|| panic!("no mark rule in {rules}"));
    let mut words = line.split_whitespace().skip_while(|w| *w != "-c");
    words.next();
    words
        .next()
        .and_then(|n| n.parse().ok())
        .expect("packet counter")
}

#[test]
fn queue_receives_parses_and_answers() {
    if !is_root() {
        eprintln!("skipping queue_receives_parses_and_answers: needs root (netns, iptables)");
        return;
    }
    let ns = Netns::create("nfq");
    ns.queue_udp_port(PORT, 7);
    // Counts packets that come out of the queue with mark 0x2a (security runs after filter).
    ns.exec(&[
        "iptables", "-t", "security", "-A", "INPUT", "-p", "udp", "--dport", "9", "-m", "mark",
        "--mark", "0x2a",
    ]);

    ns.run_inside(|| {
        let receiver = UdpSocket::bind((LOCALHOST, PORT)).unwrap();
        receiver.set_read_timeout(Some(WAIT)).unwrap();
        let sender = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        let sender_port = sender.local_addr().unwrap().port();

        let mut q = NfQueue::open(&config(7)).expect("open queue 7");
        assert_eq!(q.queue_num(), 7);
        assert_eq!(q.copy_range(), 256);
        assert!(q.rcvbuf_forced());
        assert!(q.effective_rcvbuf() >= 1 << 20, "{}", q.effective_rcvbuf());
        let mut buf = vec![0u8; q.recv_buffer_len()];
        assert_eq!(buf.len(), 64 * 1024);

        // A second socket cannot take the same queue: the bind must fail, not be ignored.
        match NfQueue::open(&config(7)) {
            Err(e @ NfQueueError::BindQueue { queue: 7, .. }) => {
                assert!(e.to_string().starts_with("bind queue 7: "), "{e}");
                eprintln!("second open refused as expected: {e}");
                assert!(
                    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EBUSY)),
                    "{e}"
                );
            }
            other => panic!("second open of queue 7: {other:?}"),
        }

        sender.send_to(b"one", (LOCALHOST, PORT)).unwrap();
        let first = next_packet(&mut q, &mut buf);
        let meta = parse(&first.payload).expect("queued payload parses");
        assert_eq!(meta.src, LOCALHOST);
        assert_eq!(meta.dst, LOCALHOST);
        assert_eq!(meta.protocol, 17);
        assert_eq!(meta.src_port, Some(sender_port));
        assert_eq!(meta.dst_port, Some(PORT));
        assert!(first.payload.ends_with(b"one"));
        // GSO off: the kernel completed the checksum of this locally sent datagram.
        assert!(first.checksum_ready && !first.gso);

        // NF_REPEAT runs the hook again: the same datagram comes back under a new id.
        q.repeat(first.packet_id).unwrap();
        let again = next_packet(&mut q, &mut buf);
        assert_ne!(again.packet_id, first.packet_id);
        assert_eq!(again.payload, first.payload);

        q.verdict(again.packet_id, Verdict::Accept, Some(0x2a))
            .unwrap();
        assert_eq!(recv_datagram(&receiver), b"one");

        sender.send_to(b"two", (LOCALHOST, PORT)).unwrap();
        let two = next_packet(&mut q, &mut buf);
        assert!(two.payload.ends_with(b"two"));
        q.verdict(two.packet_id, Verdict::Drop, None).unwrap();

        sender.send_to(b"three", (LOCALHOST, PORT)).unwrap();
        let three = next_packet(&mut q, &mut buf);
        assert!(three.payload.ends_with(b"three"));
        q.verdict(three.packet_id, Verdict::Accept, None).unwrap();
        // "two" was dropped: the next datagram delivered is "three".
        assert_eq!(recv_datagram(&receiver), b"three");

        // A verdict for an id the kernel does not hold comes back as a kernel error.
        q.verdict(three.packet_id.wrapping_add(1000), Verdict::Accept, None)
            .unwrap();
        match next_item(&mut q, &mut buf) {
            Err(NfQueueError::Kernel { error, .. }) => {
                assert_eq!(error.raw_os_error(), Some(libc::ENOENT), "{error}");
            }
            Err(other) => panic!("expected a kernel error, got {other}"),
            Ok(p) => panic!("expected a kernel error, got packet {}", p.packet_id),
        }
    });

    // Exactly the first datagram carried the mark set in its verdict.
    assert_eq!(marked_packets(&ns, "0x2a"), 1);
}

#[test]
fn worker_enforces_the_current_rule_set() {
    if !is_root() {
        eprintln!("skipping worker_enforces_the_current_rule_set: needs root (netns, iptables)");
        return;
    }
    let ns = Netns::create("wrk");
    ns.queue_udp_port(PORT, 8);

    let counters = ns.run_inside(|| {
        let receiver = UdpSocket::bind((LOCALHOST, PORT)).unwrap();
        receiver.set_read_timeout(Some(WAIT)).unwrap();
        let sender = UdpSocket::bind((LOCALHOST, 0)).unwrap();

        let queue = NfQueue::open(&config(8)).expect("open queue 8");
        let policy = Arc::new(ArcSwap::from_pointee(RuleSet::empty()));
        let counters = Arc::new(Counters::new());
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (policy, counters, stop) = (
                Arc::clone(&policy),
                Arc::clone(&counters),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let inspector =
                    Inspector::new(InspectConfig::new(UnparsableVerdict::Accept)).unwrap();
                let config = worker::WorkerConfig::default();
                worker::run(
                    queue,
                    policy,
                    counters,
                    inspector,
                    stop,
                    config,
                    meds_dataplane::events::Sampler::off(),
                );
            })
        };

        sender.send_to(b"a", (LOCALHOST, PORT)).unwrap();
        assert_eq!(recv_datagram(&receiver), b"a");

        let loopback = [Entry::Prefix("127.0.0.0/8".parse().unwrap())];
        policy.store(Arc::new(
            RuleSet::empty()
                .with_generation(2)
                .with_list(ListKind::IpBlock, &loopback),
        ));
        sender.send_to(b"b", (LOCALHOST, PORT)).unwrap();
        eventually("the drop to be counted", || {
            counters
                .snapshot()
                .decisions
                .iter()
                .any(|d| d.verdict == Verdict::Drop)
        });

        policy.store(Arc::new(
            RuleSet::empty()
                .with_generation(3)
                .with_list(ListKind::IpAllow, &loopback)
                .with_list(ListKind::IpBlock, &loopback),
        ));
        sender.send_to(b"c", (LOCALHOST, PORT)).unwrap();
        assert_eq!(recv_datagram(&receiver), b"c");

        let stopping = Instant::now();
        stop.store(true, Ordering::SeqCst);
        worker.join().expect("worker thread");
        assert!(
            stopping.elapsed() < Duration::from_secs(2),
            "{:?}",
            stopping.elapsed()
        );
        counters.snapshot()
    });

    assert_eq!(counters.packets_processed, 3);
    assert_eq!(counters.verdict_errors, 0);
    assert_eq!(counters.recv_errors, 0);
    let count = |d: Decision| DecisionCount {
        verdict: d.verdict,
        filter: d.filter,
        reason: d.reason,
        packets: 1,
    };
    assert_eq!(
        counters.decisions,
        [
            count(Decision::DEFAULT),
            count(Decision::WHITELISTED),
            count(Decision::BLACKLISTED),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Batched receive and verdicts over a veth pair.

const FW_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const FW_MAC: &str = "02:00:cb:00:71:01";
const PEER_MAC: &str = "02:00:cb:00:71:02";
const BATCH_PORT: u16 = 5000;
const BATCH_QUEUE: u16 = 21;
/// The mark a "mark" datagram is repeated with; a rule before the queue accepts it.
const MARK: u32 = 0x0010_0000;
const SCENARIO_LIMIT: Duration = Duration::from_secs(30);

fn netns_path(ns: &Netns) -> String {
    format!("/run/netns/{}", ns.name)
}

/// A firewall namespace and a peer namespace joined by a veth pair with fixed addresses and
/// permanent neighbour entries (no ARP round trip delays or drops the first burst).
struct Pair {
    fw: Netns,
    peer: Netns,
}

impl Pair {
    fn create() -> Pair {
        let fw = Netns::create("bfw");
        let peer = Netns::create("bpe");
        let tag = std::process::id() % 100_000;
        let (vf, vp) = (format!("mbf{tag}"), format!("mbp{tag}"));
        run(
            "ip",
            &[
                "link", "add", &vf, "address", FW_MAC, "netns", &fw.name, "type", "veth", "peer",
                "name", &vp, "address", PEER_MAC, "netns", &peer.name,
            ],
        );
        fw.exec(&["ip", "addr", "add", &format!("{FW_IP}/24"), "dev", &vf]);
        peer.exec(&["ip", "addr", "add", &format!("{PEER_IP}/24"), "dev", &vp]);
        fw.exec(&["ip", "link", "set", &vf, "up"]);
        peer.exec(&["ip", "link", "set", &vp, "up"]);
        let (fw_ip, peer_ip) = (FW_IP.to_string(), PEER_IP.to_string());
        fw.exec(&[
            "ip",
            "neigh",
            "replace",
            &peer_ip,
            "lladdr",
            PEER_MAC,
            "dev",
            &vf,
            "nud",
            "permanent",
        ]);
        peer.exec(&[
            "ip",
            "neigh",
            "replace",
            &fw_ip,
            "lladdr",
            FW_MAC,
            "dev",
            &vp,
            "nud",
            "permanent",
        ]);
        let port = BATCH_PORT.to_string();
        let queue = BATCH_QUEUE.to_string();
        // 1: a datagram repeated with MARK is accepted (and counted) before the queue rule,
        // 2: everything else to the port is queued.
        let mark = format!("{MARK:#x}/{MARK:#x}");
        fw.exec(&[
            "iptables", "-A", "INPUT", "-p", "udp", "--dport", &port, "-m", "mark", "--mark",
            &mark, "-j", "ACCEPT",
        ]);
        fw.exec(&[
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "udp",
            "--dport",
            &port,
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
        ]);
        Pair { fw, peer }
    }

    /// Packets counted by the mark-accept rule.
    fn marked_packets(&self) -> u64 {
        let rules = self.fw.exec(&["iptables", "-S", "INPUT", "-v"]);
        let line = rules
            .lines()
            .find(|l| l.contains("--mark") && l.contains("-j ACCEPT"))
            .unwrap_or_else(|| panic!("no mark rule in {rules}"));
        let mut words = line.split_whitespace().skip_while(|w| *w != "-c");
        words.next();
        words
            .next()
            .and_then(|n| n.parse().ok())
            .expect("packet counter")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pass,
    Drop,
    Mark,
}

impl Kind {
    /// Datagram `seq` of the mixed workload: every tenth dropped, every tenth repeated with a
    /// mark, the rest accepted.
    fn mixed(seq: u32) -> Kind {
        match seq % 10 {
            3 => Kind::Drop,
            7 => Kind::Mark,
            _ => Kind::Pass,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Kind::Pass => "pass",
            Kind::Drop => "drop",
            Kind::Mark => "mark",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    packets: u32,
    /// Datagrams sent before the queue loop starts receiving (they wait in the queue, so the
    /// first receives are full batches).
    prefill: u32,
    /// Datagrams per `recvmmsg` and per flush; 1 = one receive and one `sendto` per packet.
    batch: usize,
    mixed: bool,
    gso: bool,
}

impl Scenario {
    fn kind(&self, seq: u32) -> Kind {
        if self.mixed {
            Kind::mixed(seq)
        } else {
            Kind::Pass
        }
    }
}

#[derive(Debug, Default)]
struct LoopStats {
    answered: usize,
    recv_calls: usize,
    max_recv: usize,
    multi_recv: usize,
    sends_messages: usize,
    sent: usize,
    failed: usize,
    checksum_not_ready: usize,
    gso: usize,
    /// CPU time (user + system) of the queue thread while it answered.
    cpu: Duration,
}

impl LoopStats {
    fn account(&mut self, flushed: Flushed) {
        assert!(flushed.error.is_none(), "{:?}", flushed.error);
        self.sent += flushed.sent;
        self.failed += flushed.failed;
        self.sends_messages += flushed.messages;
    }
}

fn thread_cpu() -> Duration {
    // SAFETY: all-zero bytes are a valid rusage; getrusage writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn set_rcvbuf_force(socket: &UdpSocket, bytes: libc::c_int) {
    // SAFETY: `bytes` is a valid c_int and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// The queue loop under test: batched receive, one answer per packet by its payload, one flush
/// per receive batch. Stops after `expected` packets or at the deadline.
fn queue_loop(mut q: NfQueue, scenario: Scenario, go: std::sync::mpsc::Receiver<()>) -> LoopStats {
    let mut batch = RecvBatch::for_queue(&q, scenario.batch);
    let mut batcher = VerdictBatcher::new(q.queue_num(), scenario.batch);
    let mut stats = LoopStats::default();
    go.recv_timeout(WAIT).expect("the prefill was sent");
    let deadline = Instant::now() + SCENARIO_LIMIT;
    let expected = scenario.packets as usize;
    let cpu_before = thread_cpu();
    while stats.answered < expected {
        assert!(
            Instant::now() < deadline,
            "answered {} of {expected} packets",
            stats.answered
        );
        let n = q.recv_batch(&mut batch).expect("recv_batch");
        stats.recv_calls += 1;
        stats.max_recv = stats.max_recv.max(n);
        if n > 1 {
            stats.multi_recv += 1;
        }
        for datagram in batch.datagrams() {
            for item in packets(datagram.expect("a datagram from the kernel")) {
                let p = item.expect("a queued packet (and no rejected verdict)");
                if !p.checksum_ready {
                    stats.checksum_not_ready += 1;
                }
                if p.gso {
                    stats.gso += 1;
                }
                let answer = if p.payload.ends_with(b"drop") {
                    Answer {
                        verdict: RawVerdict::Drop,
                        mark: None,
                    }
                } else if p.payload.ends_with(b"mark") {
                    Answer {
                        verdict: RawVerdict::Repeat,
                        mark: Some(p.mark.unwrap_or(0) | MARK),
                    }
                } else {
                    Answer {
                        verdict: RawVerdict::Accept,
                        mark: None,
                    }
                };
                if let Some(flushed) = batcher.push(&mut q, p.packet_id, answer) {
                    stats.account(flushed);
                }
                stats.answered += 1;
            }
        }
        let flushed = batcher.flush(&mut q);
        stats.account(flushed);
    }
    stats.cpu = thread_cpu().saturating_sub(cpu_before);
    // Nothing more may come: no packet queued twice, no verdict rejected (NLMSG_ERROR).
    let n = q.recv_batch(&mut batch).expect("final recv_batch");
    let late: Vec<_> = batch
        .datagrams()
        .flat_map(|d| {
            packets(d.unwrap())
                .map(|item| item.map(|p| p.packet_id))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(n, 0, "after the last packet: {late:?}");
    stats
}

struct Outcome {
    stats: LoopStats,
    delivered: std::collections::BTreeSet<u32>,
    duplicates: usize,
    marked: u64,
}

fn run_scenario(scenario: Scenario) -> Outcome {
    let pair = Pair::create();
    let expected_delivered = (0..scenario.packets)
        .filter(|&seq| scenario.kind(seq) != Kind::Drop)
        .count();

    // The receiver: collects the sequence numbers that reach the socket.
    let done = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = {
        let done = Arc::clone(&done);
        let ready_tx = ready_tx.clone();
        spawn_in(netns_path(&pair.fw), move || {
            let socket = UdpSocket::bind((FW_IP, BATCH_PORT)).unwrap();
            set_rcvbuf_force(&socket, 32 << 20);
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut delivered = std::collections::BTreeSet::new();
            let mut duplicates = 0;
            let mut buf = [0u8; 64];
            let deadline = Instant::now() + SCENARIO_LIMIT;
            while Instant::now() < deadline {
                match socket.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        let seq: u32 = std::str::from_utf8(&buf[..n.min(6)])
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .expect("a sequence number");
                        if !delivered.insert(seq) {
                            duplicates += 1;
                        }
                    }
                    Err(_) if done.load(Ordering::SeqCst) => break,
                    Err(_) => {}
                }
            }
            (delivered, duplicates)
        })
    };

    // The queue loop, bound before anything is sent.
    let (go_tx, go_rx) = std::sync::mpsc::channel();
    let queue = spawn_in(netns_path(&pair.fw), move || {
        let q = NfQueue::open(&QueueConfig {
            queue_num: BATCH_QUEUE,
            max_len: scenario.packets.max(64),
            copy_range: 128,
            rcvbuf_bytes: 64 << 20,
            fail_open: false,
            gso: scenario.gso,
        })
        .expect("open the queue");
        ready_tx.send(()).unwrap();
        queue_loop(q, scenario, go_rx)
    });
    for _ in 0..2 {
        ready_rx
            .recv_timeout(WAIT)
            .expect("receiver and queue ready");
    }

    // The sender: the prefill, then the rest in bursts of 100 back-to-back datagrams.
    let sender = spawn_in(netns_path(&pair.peer), move || {
        let socket = UdpSocket::bind((PEER_IP, 0)).unwrap();
        let send = |seq: u32| {
            let payload = format!("{seq:06}:{}", scenario.kind(seq).word());
            socket
                .send_to(payload.as_bytes(), (FW_IP, BATCH_PORT))
                .unwrap();
        };
        for seq in 0..scenario.prefill {
            send(seq);
        }
        go_tx.send(()).unwrap();
        for seq in scenario.prefill..scenario.packets {
            send(seq);
        }
    });
    join(sender);
    let stats = join(queue);
    // Verdicts are carried out inside the `sendto` that sends them, so every accepted datagram
    // is in the receiver's socket by now: it reads them all, then ends at its next timeout.
    done.store(true, Ordering::SeqCst);
    let (delivered, duplicates) = join(receiver);
    assert!(
        delivered.len() <= expected_delivered,
        "{} delivered",
        delivered.len()
    );
    let marked = pair.marked_packets();
    Outcome {
        stats,
        delivered,
        duplicates,
        marked,
    }
}

#[test]
fn batched_receive_and_verdicts_over_veth() {
    if !is_root() {
        eprintln!("skipping batched_receive_and_verdicts_over_veth: needs root (netns, iptables)");
        return;
    }
    let scenario = Scenario {
        packets: 2000,
        prefill: 300,
        batch: 64,
        mixed: true,
        gso: true,
    };
    let outcome = run_scenario(scenario);
    let stats = &outcome.stats;
    eprintln!(
        "answered {} packets in {} receives (max {} datagrams, {} with more than one), {} \
         verdict messages; {} with checksum not ready",
        stats.answered,
        stats.recv_calls,
        stats.max_recv,
        stats.multi_recv,
        stats.sends_messages,
        stats.checksum_not_ready,
    );

    // Every queued datagram was answered exactly once, in batches.
    assert_eq!(stats.answered, 2000);
    assert_eq!((stats.sent, stats.failed), (2000, 0));
    assert!(
        stats.max_recv > 1,
        "no receive returned more than one datagram"
    );
    assert!(
        stats.sends_messages < stats.answered,
        "no verdicts were merged: {} messages for {} packets",
        stats.sends_messages,
        stats.answered
    );
    // GSO on: the peer's UDP datagrams cross the veth with their checksum left to offload,
    // and the kernel says so instead of completing it. None of them is a GSO packet.
    assert!(stats.checksum_not_ready > 0);
    assert_eq!(stats.gso, 0);

    // Exactly the datagrams not answered with a drop arrived, each once.
    let want: std::collections::BTreeSet<u32> = (0..2000)
        .filter(|&seq| Kind::mixed(seq) != Kind::Drop)
        .collect();
    let missing: Vec<_> = want.difference(&outcome.delivered).take(10).collect();
    let extra: Vec<_> = outcome.delivered.difference(&want).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    assert_eq!(outcome.delivered.len(), 1800);
    assert_eq!(outcome.duplicates, 0);
    // The repeated datagrams came back with the mark (the rule before the queue counted them
    // and accepted them, so none was queued twice).
    assert_eq!(outcome.marked, 200);
}

/// CPU time of the queue thread per packet, one verdict per packet vs. batches of 64, on the
/// same workload (a queue pre-filled with 20 000 datagrams, the mixed answers). Prints the
/// numbers; asserts only that every packet was answered.
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn measure_cpu_per_packet() {
    if !is_root() {
        eprintln!("skipping measure_cpu_per_packet: needs root (netns, iptables)");
        return;
    }
    const PACKETS: u32 = 20_000;
    for round in 0..3 {
        for (batch, mixed) in [(1, true), (64, true), (1, false), (64, false)] {
            let outcome = run_scenario(Scenario {
                packets: PACKETS,
                prefill: PACKETS,
                batch,
                mixed,
                gso: false,
            });
            let stats = &outcome.stats;
            assert_eq!(stats.answered, PACKETS as usize);
            let per_packet = stats.cpu.as_secs_f64() * 1e6 / f64::from(PACKETS);
            println!(
                "round {round} batch {batch:>2} {:<10} {per_packet:.2} us CPU per packet \
                 ({} receives, {} verdict messages, {} delivered)",
                if mixed { "mixed" } else { "accept-all" },
                stats.recv_calls,
                stats.sends_messages,
                outcome.delivered.len(),
            );
        }
    }
}
