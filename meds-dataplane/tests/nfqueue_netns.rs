//! NFQUEUE against the real kernel, inside throwaway network namespaces (root only).
//!
//! Each test creates a namespace with a random name (an RAII guard always deletes it, and with
//! it every iptables rule inside), brings `lo` up, queues UDP to port 9 with an iptables
//! `NFQUEUE` rule, and does all socket work from a thread that `setns`-ed into the namespace.
//! Traffic only ever goes to 127.0.0.1 inside the namespace. Every wait is bounded by a count
//! and a deadline. Without root the tests print a skip message and pass.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use meds_dataplane::chain::{Decision, RuleSet, UnparsableVerdict, Verdict};
use meds_dataplane::counters::{Counters, DecisionCount};
use meds_dataplane::inspect::{InspectConfig, Inspector};
use meds_dataplane::nfqueue::{NfQueue, NfQueueError, QueueConfig, packets};
use meds_dataplane::packet::parse;
use meds_dataplane::worker;
use meds_proto::{Entry, ListKind};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PORT: u16 = 9;
const WAIT: Duration = Duration::from_secs(5);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace that is deleted (with its rules) when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn create(tag: &str) -> Netns {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("meds-{tag}-{}-{nanos:x}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

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

    /// Run `body` on a thread that has joined this namespace; panics propagate.
    fn run_inside<T: Send + 'static>(&self, body: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        let handle = std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: `ns` is an open namespace file; setns only affects this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            body()
        });
        match handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn config(queue_num: u16) -> QueueConfig {
    QueueConfig {
        queue_num,
        max_len: 64,
        copy_range: 256,
        rcvbuf_bytes: 1 << 20,
        fail_open: false,
    }
}

struct Received {
    packet_id: u32,
    payload: Vec<u8>,
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
                worker::run(queue, policy, counters, inspector, stop);
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
