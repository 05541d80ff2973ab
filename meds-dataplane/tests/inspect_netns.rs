//! Payload inspection against the real kernel (root only): two network namespaces joined by a
//! veth pair, a TCP server in one, an NFQUEUE rule on its INPUT for the server port, and the
//! real worker with an [`Inspector`]. A client in the other namespace sends captured
//! ClientHellos over real TCP connections, whole and split over two segments.
//!
//! What it shows: the kernel hands the queue TCP segments whose checksums verify (on veth,
//! locally generated segments are CHECKSUM_PARTIAL and NFQUEUE completes them because the
//! queue does not negotiate GSO), so the inspector's checksum check never rejects real
//! traffic; a blocklisted SNI split over two segments is dropped on the second and its
//! retransmissions stay dropped; an allowed hello is delivered. Without root the test prints
//! a skip message and passes. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use meds_dataplane::chain::{Decision, RuleSet, UnparsableVerdict};
use meds_dataplane::counters::{Counters, CountersSnapshot};
use meds_dataplane::flow::FlowEvent;
use meds_dataplane::inspect::{InspectConfig, InspectEvent, Inspector};
use meds_dataplane::nfqueue::{NfQueue, QueueConfig};
use meds_dataplane::worker;
use meds_proto::{DomainName, Entry, ListKind};

mod common;
use common::*;

const QUEUE: u16 = 12;
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const WAIT: Duration = Duration::from_secs(10);

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// (payload, sni) of the captured hellos.
fn hellos() -> Vec<(Vec<u8>, Option<String>)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/tls/clienthellos.json"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                hex(v["tcp_payload_hex"].as_str().unwrap()),
                v["sni"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn event(s: &CountersSnapshot, e: InspectEvent) -> u64 {
    s.inspect
        .iter()
        .find(|(k, _)| *k == e)
        .map_or(0, |(_, n)| *n)
}

fn decided(s: &CountersSnapshot, d: Decision) -> u64 {
    s.decisions
        .iter()
        .find(|c| c.verdict == d.verdict && c.filter == d.filter && c.reason == d.reason)
        .map_or(0, |c| c.packets)
}

/// Connect, send `parts` as separate segments (Nagle off, a pause between writes), and keep
/// the connection open while the server reads and the kernel retransmits.
fn send_parts(port: u16, parts: Vec<Vec<u8>>) {
    let stream = TcpStream::connect_timeout(&SocketAddr::from((SERVER_IP, port)), WAIT).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut stream = stream;
    for part in parts {
        stream.write_all(&part).unwrap();
        stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    // Keep the connection open while the server reads (and the kernel retransmits).
    std::thread::sleep(Duration::from_millis(1500));
}

#[test]
fn real_tcp_hellos_through_the_worker_on_veth() {
    if !is_root() {
        eprintln!("skipping real_tcp_hellos_through_the_worker_on_veth: needs root (netns)");
        return;
    }
    let client = Netns::create("inc");
    let server = Netns::create("ins");
    let (va, vb) = (
        format!("mc{}", std::process::id() % 100_000),
        format!("ms{}", std::process::id() % 100_000),
    );
    run(
        "ip",
        &[
            "link",
            "add",
            &va,
            "netns",
            &client.name,
            "type",
            "veth",
            "peer",
            "name",
            &vb,
            "netns",
            &server.name,
        ],
    );
    client.exec(&["ip", "addr", "add", &format!("{CLIENT_IP}/24"), "dev", &va]);
    server.exec(&["ip", "addr", "add", &format!("{SERVER_IP}/24"), "dev", &vb]);
    client.exec(&["ip", "link", "set", &va, "up"]);
    server.exec(&["ip", "link", "set", &vb, "up"]);
    server.exec(&[
        "iptables",
        "-I",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "443",
        "-j",
        "NFQUEUE",
        "--queue-num",
        "12",
    ]);

    let hellos = hellos();
    let (blocked_hello, blocked_sni) = hellos[0].clone();
    let blocked_sni = blocked_sni.unwrap();
    let (allowed_hello, allowed_sni) = hellos
        .iter()
        .find(|(_, sni)| sni.as_deref().is_some_and(|s| !s.ends_with("google.com")))
        .cloned()
        .unwrap();
    assert!(blocked_sni.ends_with(".google.com"), "{blocked_sni}");
    assert!(blocked_hello.len() > 1200);

    let block = [Entry::Domain(DomainName::parse_user("google.com").unwrap())];
    let policy = Arc::new(ArcSwap::from_pointee(
        RuleSet::empty()
            .with_generation(1)
            .with_list(ListKind::DomainBlock, &block),
    ));
    let counters = Arc::new(Counters::new());
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (policy, counters, stop) = (
            Arc::clone(&policy),
            Arc::clone(&counters),
            Arc::clone(&stop),
        );
        server.spawn(move || {
            let queue = NfQueue::open(&QueueConfig {
                queue_num: QUEUE,
                max_len: 256,
                copy_range: 65535,
                rcvbuf_bytes: 1 << 20,
                fail_open: false,
                gso: false,
            })
            .expect("open queue");
            let inspector = Inspector::new(InspectConfig::new(UnparsableVerdict::Accept)).unwrap();
            worker::run(
                queue,
                policy,
                counters,
                inspector,
                stop,
                Default::default(),
                meds_dataplane::events::Sampler::off(),
            );
        })
    };
    // The server: accept two connections, return what each delivered (bounded reads).
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server_thread = server.spawn(move || {
        let listener = TcpListener::bind((SERVER_IP, 443)).unwrap();
        ready_tx.send(()).unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_millis(1200)))
                .unwrap();
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                }
            }
            got.push(data);
        }
        got
    });
    ready_rx.recv_timeout(WAIT).unwrap();

    let cut = 1000;
    let parts = vec![blocked_hello[..cut].to_vec(), blocked_hello[cut..].to_vec()];
    let allowed = allowed_hello.clone();
    join(client.spawn(move || {
        send_parts(443, vec![allowed]);
        send_parts(443, parts);
    }));
    let received = join(server_thread);

    eventually("the retransmission to hit the blocked flow", || {
        event(&counters.snapshot(), InspectEvent::BlockedFlowHit) > 0
    });
    stop.store(true, Ordering::SeqCst);
    join(worker);
    let snap = counters.snapshot();
    eprintln!("inspection counts: {:?}", snap.inspect);

    assert_eq!(
        received[0], allowed_hello,
        "allowed hello ({allowed_sni:?}) delivered"
    );
    assert_eq!(
        received[1],
        blocked_hello[..cut],
        "only the first segment of the blocked hello arrives"
    );
    // The completing segment and at least one retransmission.
    assert!(
        decided(&snap, Decision::DOMAIN_BLACKLISTED) >= 2,
        "{snap:?}"
    );
    assert_eq!(event(&snap, InspectEvent::TcpBadChecksum), 0, "{snap:?}");
    assert_eq!(event(&snap, InspectEvent::TcpTruncated), 0, "{snap:?}");
    assert_eq!(event(&snap, InspectEvent::HelloSingle), 1, "{snap:?}");
    assert_eq!(event(&snap, InspectEvent::HelloReassembled), 1, "{snap:?}");
    assert_eq!(
        event(&snap, InspectEvent::Reassembly(FlowEvent::Started)),
        1,
        "{snap:?}"
    );
    assert_eq!(event(&snap, InspectEvent::BlockedFlowAdded), 1, "{snap:?}");
}
