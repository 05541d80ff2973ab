//! ctnetlink against the real kernel, inside throwaway network namespaces (root only).
//!
//! Each test creates a client and a server namespace joined by a veth pair (203.0.113.0/24 and
//! 2001:db8::/64; RAII guards always delete both, and with them the veth pair and every
//! iptables rule). In the server namespace a mangle INPUT rule gives every UDP connection the
//! trusted bit (0x100000) and one bit that belongs to "other software" (0x1). Sockets are made
//! on threads that `setns`-ed into a namespace; the [`Conntrack`] handle is opened on such a
//! thread in the server namespace and then used from the test thread (its sockets stay in the
//! namespace they were made in). Every wait is bounded. Without root the tests print a skip
//! message and pass.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use meds_dataplane::conntrack::{Conntrack, ConntrackError, Entry, L4, Tuple};

mod common;
use common::*;

const TRUSTED: u32 = 0x0010_0000;
const BLOCKED: u32 = 0x0020_0000;
const OURS: u32 = TRUSTED | BLOCKED;
/// Set by the same CONNMARK rule: a bit of other software that no update may change.
const OTHER: u32 = 0x1;

const CLIENT4: &str = "203.0.113.1";
const SERVER4: &str = "203.0.113.2";
const CLIENT6: &str = "2001:db8::1";
const SERVER6: &str = "2001:db8::2";
const UDP_PORT: u16 = 5300;
const TCP_PORT: u16 = 5301;
const CLIENT_PORT4: u16 = 41001;
const CLIENT_PORT6: u16 = 41002;
const WAIT: Duration = Duration::from_secs(5);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

impl Netns {
    /// Give `dev` an IPv4 and an IPv6 address (no duplicate detection: usable at once).
    fn address(&self, dev: &str, v4: &str, v6: &str) {
        self.exec(&["ip", "addr", "add", &format!("{v4}/24"), "dev", dev]);
        self.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            dev,
            "nodad",
        ]);
        self.exec(&["ip", "link", "set", dev, "up"]);
    }
}

struct Pair {
    client: Netns,
    server: Netns,
}

impl Pair {
    fn create(tag: &str) -> Pair {
        let client = Netns::create(&format!("{tag}c"));
        let server = Netns::create(&format!("{tag}s"));
        run(
            "ip",
            &[
                "link",
                "add",
                "mc0",
                "netns",
                &client.name,
                "type",
                "veth",
                "peer",
                "name",
                "ms0",
                "netns",
                &server.name,
            ],
        );
        client.address("mc0", CLIENT4, CLIENT6);
        server.address("ms0", SERVER4, SERVER6);
        for iptables in ["iptables", "ip6tables"] {
            server.exec(&[
                iptables,
                "-t",
                "mangle",
                "-A",
                "INPUT",
                "-p",
                "udp",
                "-j",
                "CONNMARK",
                "--set-xmark",
                "0x100001/0x100001",
            ]);
        }
        Pair { client, server }
    }

    /// A UDP socket of the server namespace, bound to `addr`:`UDP_PORT`.
    fn server_udp(&self, addr: &str) -> UdpSocket {
        let addr = ip(addr);
        self.server.run_inside(move || {
            let s = UdpSocket::bind((addr, UDP_PORT)).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            s
        })
    }

    /// Send `count` datagrams from `from`:`port` (client namespace) to `to`:`UDP_PORT`.
    fn send_udp(&self, from: &str, port: u16, to: &str, count: usize) {
        let (from, to) = (ip(from), ip(to));
        self.client.run_inside(move || {
            let s = UdpSocket::bind((from, port)).unwrap();
            for _ in 0..count {
                s.send_to(b"meds", (to, UDP_PORT)).unwrap();
            }
        });
    }

    fn conntrack(&self) -> Conntrack {
        self.server
            .run_inside(|| Conntrack::open().expect("open ctnetlink in the server namespace"))
    }
}

fn dump(ct: &mut Conntrack, value: u32, mask: u32) -> Vec<Entry> {
    let mut entries = Vec::new();
    let summary = ct
        .dump_marked(value, mask, |e, _| {
            entries.push(e.clone());
            ControlFlow::Continue(())
        })
        .expect("dump");
    assert_eq!(summary.malformed, 0, "{summary:?}");
    assert!(!summary.stopped);
    entries
}

fn udp_tuple(src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
    Tuple {
        src: ip(src),
        dst: ip(dst),
        protocol: 17,
        l4: L4::Ports {
            src: sport,
            dst: dport,
        },
        zone: None,
    }
}

/// The entry of the connection whose original tuple is `original`, if listed.
fn find<'a>(entries: &'a [Entry], original: &Tuple) -> Option<&'a Entry> {
    entries.iter().find(|e| e.original() == original)
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[test]
fn dump_remark_and_delete_marked_flows() {
    if !is_root() {
        eprintln!("skipping dump_remark_and_delete_marked_flows: needs root (netns, iptables)");
        return;
    }
    let pair = Pair::create("ct");
    let rx4 = pair.server_udp(SERVER4);
    let rx6 = pair.server_udp(SERVER6);
    pair.send_udp(CLIENT4, CLIENT_PORT4, SERVER4, 3);
    pair.send_udp(CLIENT6, CLIENT_PORT6, SERVER6, 3);
    for rx in [&rx4, &rx6] {
        for _ in 0..3 {
            let mut buf = [0u8; 16];
            let (n, _) = rx.recv_from(&mut buf).expect("datagram delivered");
            assert_eq!(&buf[..n], b"meds");
        }
    }
    // An unmarked connection (the rule marks UDP only): TCP, kept open during the test.
    let server4 = ip(SERVER4);
    let listener = pair
        .server
        .run_inside(move || TcpListener::bind((server4, TCP_PORT)).unwrap());
    let _tcp_client = pair
        .client
        .run_inside(move || TcpStream::connect_timeout(&(server4, TCP_PORT).into(), WAIT).unwrap());
    let _tcp_server = listener.accept().unwrap();

    let mut ct = pair.conntrack();
    let udp4 = udp_tuple(CLIENT4, CLIENT_PORT4, SERVER4, UDP_PORT);
    let udp6 = udp_tuple(CLIENT6, CLIENT_PORT6, SERVER6, UDP_PORT);

    // The whole table (mask 0): the two UDP connections and the TCP one.
    let all = dump(&mut ct, 0, 0);
    let tcp = all
        .iter()
        .find(|e| e.original().protocol == 6)
        .unwrap_or_else(|| panic!("no TCP entry in {all:#?}"));
    assert_eq!(tcp.mark(), 0);
    assert!(
        find(&all, &udp4).is_some() && find(&all, &udp6).is_some(),
        "{all:#?}"
    );

    // Trusted and not blocked: exactly the two UDP connections, with the right tuples.
    let trusted = dump(&mut ct, TRUSTED, OURS);
    assert_eq!(trusted.len(), 2, "{trusted:#?}");
    assert!(
        trusted.iter().all(|e| e.original().protocol == 17),
        "kernel {} returned unmarked entries despite the mark filter: {trusted:#?}",
        kernel_release()
    );
    eprintln!(
        "kernel {}: the dump's mark filter is applied in the kernel (unmarked TCP entry not returned)",
        kernel_release()
    );
    for (original, client, server, cport) in [
        (&udp4, CLIENT4, SERVER4, CLIENT_PORT4),
        (&udp6, CLIENT6, SERVER6, CLIENT_PORT6),
    ] {
        let e = find(&trusted, original).unwrap_or_else(|| panic!("{original:?}: {trusted:#?}"));
        assert_eq!(*e.reply(), udp_tuple(server, UDP_PORT, client, cport));
        assert_eq!(e.mark(), TRUSTED | OTHER);
        assert_eq!(e.zone(), None);
        assert!(e.id().is_some());
        assert_eq!(e.peers(), [ip(client), ip(server)]);
    }

    // Switch trusted -> blocked while the dump runs, through the updater it hands out.
    let mut results = Vec::new();
    let summary = ct
        .dump_marked(TRUSTED, OURS, |e, updater| {
            results.push(
                updater
                    .set_mark(e, BLOCKED, OURS)
                    .map_err(|e| e.to_string()),
            );
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(summary.entries, 2);
    assert_eq!(results, [Ok(true), Ok(true)]);

    let all = dump(&mut ct, 0, 0);
    for original in [&udp4, &udp6] {
        let e = find(&all, original).unwrap();
        assert_eq!(e.mark(), BLOCKED | OTHER, "the other bit is kept: {e:?}");
    }
    assert_eq!(
        find(&all, tcp.original()).unwrap().mark(),
        0,
        "TCP untouched"
    );
    assert!(dump(&mut ct, TRUSTED, OURS).is_empty());
    let blocked = dump(&mut ct, BLOCKED, OURS);
    assert_eq!(blocked.len(), 2, "{blocked:#?}");

    // A value outside the mask is refused before anything is sent.
    let e4 = find(&blocked, &udp4).unwrap().clone();
    let e6 = find(&blocked, &udp6).unwrap().clone();
    assert!(matches!(
        ct.set_mark(&e4, 0x0040_0000, OURS),
        Err(ConntrackError::MarkOutsideMask { .. })
    ));

    // Clearing the blocked bit (the peer is no longer blocked) leaves only the other bit.
    assert!(ct.set_mark(&e4, 0, BLOCKED).unwrap());
    let all = dump(&mut ct, 0, 0);
    assert_eq!(find(&all, &udp4).unwrap().mark(), OTHER);
    assert_eq!(find(&all, &udp6).unwrap().mark(), BLOCKED | OTHER);

    // Delete: gone from the table; a second delete or an update finds nothing.
    assert!(ct.delete(&e4).unwrap());
    assert!(ct.delete(&e6).unwrap());
    let all = dump(&mut ct, 0, 0);
    assert!(
        find(&all, &udp4).is_none() && find(&all, &udp6).is_none(),
        "{all:#?}"
    );
    assert!(
        find(&all, tcp.original()).is_some(),
        "only the two were deleted"
    );
    assert!(!ct.delete(&e4).unwrap());
    assert!(!ct.set_mark(&e6, BLOCKED, OURS).unwrap());
}

/// The cost of revocation on `MEDS_CT_BENCH_ENTRIES` (default 2000) marked connections, each
/// from a different source port: a filtered dump alone, then a dump that re-marks every entry
/// as it goes. Prints the timings (run with `--nocapture`); asserts only the outcome.
#[test]
fn remark_many_entries() {
    if !is_root() {
        eprintln!("skipping remark_many_entries: needs root (netns, iptables)");
        return;
    }
    let n: u16 = std::env::var("MEDS_CT_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
        .clamp(2, 40_000);
    let pair = Pair::create("ctb");
    let _rx = pair.server_udp(SERVER4);
    let to = ip(SERVER4);
    let from = ip(CLIENT4);
    pair.client.run_inside(move || {
        for port in 20_000..20_000 + n {
            let s = UdpSocket::bind((from, port)).unwrap();
            s.send_to(b"meds", (to, UDP_PORT)).unwrap();
        }
    });
    let mut ct = pair.conntrack();
    let count = |ct: &mut Conntrack, value, mask| {
        let mut n = 0u64;
        ct.dump_marked(value, mask, |_, _| {
            n += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        n
    };
    let want = u64::from(n);
    let deadline = Instant::now() + WAIT;
    while count(&mut ct, TRUSTED, OURS) < want {
        assert!(
            Instant::now() < deadline,
            "the {n} connections did not all appear"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let started = Instant::now();
    assert_eq!(count(&mut ct, TRUSTED, OURS), want);
    let dump_time = started.elapsed();

    let started = Instant::now();
    let mut updated = 0u64;
    let summary = ct
        .dump_marked(TRUSTED, OURS, |e, updater| {
            if updater.set_mark(e, BLOCKED, OURS).unwrap() {
                updated += 1;
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    let remark_time = started.elapsed();
    assert_eq!(updated, want, "{summary:?}");

    // Nothing matches any more: what is left is the fixed cost, the kernel's walk of its whole
    // hash table (shared by all namespaces).
    let started = Instant::now();
    assert_eq!(count(&mut ct, TRUSTED, OURS), 0);
    let empty_time = started.elapsed();

    // Stopping early leaves the rest of the dump unread; the next dump still works.
    let summary = ct.dump_marked(0, 0, |_, _| ControlFlow::Break(())).unwrap();
    assert!(summary.stopped && summary.entries == 1, "{summary:?}");
    assert_eq!(count(&mut ct, BLOCKED | OTHER, OURS | OTHER), want);

    let buckets = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_buckets")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let per = |d: Duration| d.saturating_sub(empty_time).as_secs_f64() * 1e6 / want as f64;
    eprintln!(
        "conntrack on kernel {}, {buckets} hash buckets, {n} marked entries: \
         dump matching nothing {empty_time:?}; filtered dump {dump_time:?} \
         (+{:.2} µs/entry); dump + set_mark of each {remark_time:?} (+{:.2} µs/entry)",
        kernel_release(),
        per(dump_time),
        per(remark_time),
    );
}
