//! Flow handling with the real binaries, NFQUEUE and conntrack in the test namespaces:
//! offload (a decided flow stops reaching the dataplane), revocation (an offloaded TCP stream
//! is cut when its peer is blacklisted, and flows again once it is removed) and the per-source
//! rate limiter (IPv4 per address, IPv6 per /64).
//!
//! Needs root, `ip`, `iptables`/`ip6tables`; skips otherwise (fails instead with
//! MEDS_E2E_REQUIRE=1).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use meds_e2e::bed::{Options, POLICY_TIMEOUT};
use meds_e2e::medsctl::List;
use meds_e2e::netns::Netns;
use meds_e2e::topology::{PEER4, PEER4_ALT, PEER6, PEER6_ALT, fw_addr_for};
use meds_e2e::traffic::UDP_PORT;
use meds_e2e::{Bed, eventually};

/// Port of the long-lived echo server of these tests.
const STREAM_PORT: u16 = 7200;
/// How long one echo may take before the stream counts as cut.
const ECHO_WAIT: Duration = Duration::from_millis(400);

/// A TCP echo server in `fw` that keeps every connection open and echoes each read.
struct StreamServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StreamServer {
    fn start(fw: &Netns, addr: IpAddr) -> Result<StreamServer> {
        let listener = fw.enter(move || TcpListener::bind((addr, STREAM_PORT)))??;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let s = Arc::clone(&s);
                        conns.push(std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
                            let mut buf = [0u8; 512];
                            while !s.load(Ordering::Relaxed) {
                                match conn.read(&mut buf) {
                                    Ok(0) => break,
                                    Ok(n) => {
                                        if conn.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            ErrorKind::WouldBlock | ErrorKind::TimedOut
                                        ) => {}
                                    Err(_) => break,
                                }
                            }
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Ok(StreamServer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for StreamServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection from `src` in `peer` to the stream server.
fn connect(peer: &Netns, src: IpAddr) -> Result<TcpStream> {
    let dst = SocketAddr::new(fw_addr_for(src), STREAM_PORT);
    let stream = peer.enter(move || -> Result<TcpStream> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(dst),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.bind(&SocketAddr::new(src, 0).into())?;
        socket.connect_timeout(&dst.into(), Duration::from_secs(2))?;
        Ok(socket.into())
    })??;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(ECHO_WAIT))?;
    Ok(stream)
}

/// Send one message and wait up to [`ECHO_WAIT`] for its echo. Bytes of earlier messages
/// that arrive late are skipped (every message is distinct).
fn echoed(stream: &mut TcpStream, n: u32) -> Result<bool> {
    let msg = format!("<{n:08}>");
    stream.write_all(msg.as_bytes()).context("write")?;
    let deadline = Instant::now() + ECHO_WAIT;
    let mut got = String::new();
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => bail!("the server closed the stream"),
            Ok(k) => {
                got.push_str(&String::from_utf8_lossy(&buf[..k]));
                if got.contains(&msg) {
                    return Ok(true);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(false);
            }
            Err(e) => return Err(e).context("read"),
        }
    }
    Ok(false)
}

/// Packets the dataplane has decided so far (its last report, about once a second).
fn processed(bed: &Bed) -> Result<u64> {
    let status = bed.ctl.status()?;
    status.raw["dataplane_stats"]["packets_processed"]
        .as_u64()
        .context("no packets_processed in status")
}

/// Wait until the dataplane's reported count stops moving, and return it.
fn settled_processed(bed: &Bed) -> Result<u64> {
    let mut last = processed(bed)?;
    eventually(POLICY_TIMEOUT, "the packet count settles", || {
        std::thread::sleep(Duration::from_millis(1200));
        let now = processed(bed)?;
        if now != last {
            last = now;
            bail!("still moving: {now}");
        }
        Ok(now)
    })
}

fn stream_is_offloaded_then_revoked(bed: &mut Bed, src: IpAddr, entry: &str) -> Result<()> {
    let server = StreamServer::start(&bed.topo.fw, fw_addr_for(src))?;
    let mut stream = connect(&bed.topo.peer, src)?;
    ensure!(echoed(&mut stream, 0)?, "the first echo must come back");

    // Offload: 40 more round trips (80+ packets in: data and ACKs) cost the dataplane
    // (almost) nothing — only packets in flight before the connection mark was set.
    let before = settled_processed(bed)?;
    for n in 1..=40 {
        ensure!(echoed(&mut stream, n)?, "echo {n} on an accepted stream");
    }
    let after = settled_processed(bed)?;
    ensure!(
        after - before <= 4,
        "an offloaded stream still reached the dataplane: {before} -> {after} packets"
    );

    // Revocation: blacklisting the peer cuts the established stream within a bounded time.
    let added = Instant::now();
    let change = bed.ctl.add(List::Blacklist, &[entry])?;
    ensure!(change.applied, "{change:?}");
    let mut n = 100;
    eventually(POLICY_TIMEOUT, "the offloaded stream is cut", || {
        n += 1;
        if echoed(&mut stream, n)? {
            bail!("echo {n} still came back");
        }
        Ok(())
    })?;
    let cut_after = added.elapsed();
    // ... and stays cut (the connection's later packets are dropped in the kernel).
    for _ in 0..3 {
        n += 1;
        ensure!(!echoed(&mut stream, n)?, "echo {n} came back after the cut");
    }
    // Those drops happen in the kernel (the blocked connection mark); a new connection from
    // the peer reaches the dataplane and is dropped and counted there.
    ensure!(
        connect(&bed.topo.peer, src).is_err(),
        "a new connection from a blacklisted peer was accepted"
    );
    bed.expect_drops_counted("ip", "BlackList")?;
    eprintln!("{src}: stream cut {cut_after:?} after `medsctl blacklist add` started");

    // Removing the entry lets the same connection flow again (its blocked mark is cleared;
    // TCP retransmits what was dropped).
    let change = bed.ctl.remove(List::Blacklist, &[entry])?;
    ensure!(change.applied, "{change:?}");
    eventually(Duration::from_secs(15), "the stream flows again", || {
        n += 1;
        if !echoed(&mut stream, n)? {
            bail!("echo {n} did not come back yet");
        }
        Ok(())
    })?;
    drop(stream);
    drop(server);
    Ok(())
}

#[test]
fn an_offloaded_tcp_stream_is_cut_when_its_peer_is_blacklisted_v4() -> Result<()> {
    Bed::run("revoke_v4", |bed| {
        stream_is_offloaded_then_revoked(bed, PEER4.into(), "203.0.113.2/32")
    })
}

#[test]
fn an_offloaded_tcp_stream_is_cut_when_its_peer_is_blacklisted_v6() -> Result<()> {
    Bed::run("revoke_v6", |bed| {
        stream_is_offloaded_then_revoked(bed, PEER6.into(), "2001:db8:1::2/128")
    })
}

/// Rate-limiter settings of the bed below: small enough to exceed with a short burst.
const RATE: u64 = 20;
const BURST: u64 = 40;
const LIMITED: Options = Options {
    confined_dataplane: false,
    dataplane_args: &["--rate-limiter-rate", "20", "--rate-limiter-burst", "40"],
    dataplane_log_filter: None,
};

/// Send `count` UDP datagrams to the echo server, each from a new socket (a new flow, so
/// every one is queued), alternating over `sources`; return how many echoes came back and how
/// long the sending took.
fn udp_flood(peer: &Netns, sources: &[IpAddr], count: usize) -> Result<(usize, Duration)> {
    let sources = sources.to_vec();
    peer.enter(move || -> Result<(usize, Duration)> {
        let start = Instant::now();
        let mut sockets = Vec::with_capacity(count);
        for i in 0..count {
            let src = sources[i % sources.len()];
            let socket = UdpSocket::bind((src, 0))?;
            socket.connect((fw_addr_for(src), UDP_PORT))?;
            socket.send(format!("flood {i}").as_bytes())?;
            sockets.push(socket);
        }
        let sent_in = start.elapsed();
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut echoes = 0;
        let mut buf = [0u8; 64];
        for s in &sockets {
            s.set_nonblocking(true)?;
        }
        let mut pending: Vec<&UdpSocket> = sockets.iter().collect();
        while !pending.is_empty() && Instant::now() < deadline {
            pending.retain(|s| match s.recv(&mut buf) {
                Ok(_) => {
                    echoes += 1;
                    false
                }
                Err(_) => true,
            });
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok((echoes, sent_in))
    })?
}

/// The most a token bucket lets through in `elapsed` (plus one token of rounding).
fn allowance(elapsed: Duration) -> usize {
    (BURST as f64 + RATE as f64 * elapsed.as_secs_f64()).ceil() as usize + 1
}

#[test]
fn the_rate_limiter_bounds_new_flows_per_source() -> Result<()> {
    Bed::run_with("ratelimit", LIMITED, |bed| {
        const FLOOD: usize = 300;
        let peer = &bed.topo.peer;
        // IPv4: one address's flood is cut to its bucket ...
        let (got, took) = udp_flood(peer, &[PEER4.into()], FLOOD)?;
        ensure!(
            got >= (BURST as usize) * 3 / 4 && got <= allowance(took),
            "{PEER4}: {got} of {FLOOD} echoes in {took:?} (burst {BURST}, rate {RATE}/s)"
        );
        // ... and another address of the same /24 has its own.
        let (got_alt, took_alt) = udp_flood(peer, &[PEER4_ALT.into()], 10)?;
        ensure!(
            got_alt == 10,
            "{PEER4_ALT}: {got_alt} of 10 echoes in {took_alt:?}"
        );

        // IPv6: two addresses of one /64 share one bucket: rotating addresses inside the /64
        // gains nothing.
        let (got6, took6) = udp_flood(peer, &[PEER6.into(), PEER6_ALT.into()], FLOOD)?;
        ensure!(
            got6 >= (BURST as usize) * 3 / 4 && got6 <= allowance(took6),
            "{PEER6} + {PEER6_ALT}: {got6} of {FLOOD} echoes in {took6:?}"
        );
        let dropped = bed.expect_drops_counted("rate", "Limiter")?;
        ensure!(
            dropped >= (2 * FLOOD - allowance(took) - allowance(took6)) as u64,
            "only {dropped} rate drops counted"
        );
        Ok(())
    })
}

/// Two queues, `--queue-balance`, one pinned packet thread each.
const TWO_READERS: Options = Options {
    confined_dataplane: false,
    dataplane_args: &["--readers-count", "2"],
    dataplane_log_filter: None,
};

#[test]
fn two_readers_bind_two_balanced_queues_and_enforce_one_policy() -> Result<()> {
    Bed::run_with("readers2", TWO_READERS, |bed| {
        let status = bed.ctl.status()?;
        ensure!(
            status.raw["dataplane_queues"] == serde_json::json!([0, 1]),
            "queues reported: {}",
            status.raw["dataplane_queues"]
        );
        ensure!(
            status.raw["dataplane_settings"]["readers"] == 2,
            "settings reported: {}",
            status.raw["dataplane_settings"]
        );
        // Both queues are bound by the dataplane (one line per bound queue in the kernel's
        // table: queue number first).
        let out = bed
            .topo
            .fw
            .command("cat")
            .arg("/proc/net/netfilter/nfnetlink_queue")
            .output()?;
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut bound: Vec<u64> = table
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        bound.sort_unstable();
        ensure!(bound == [0, 1], "bound queues: {table}");
        for family in meds_e2e::bed::Family::ALL {
            let rules = bed.rules(family, meds_e2e::bed::HOOK_TABLE)?;
            ensure!(
                rules.contains("--queue-balance 0:1"),
                "{}: no --queue-balance 0:1 in\n{rules}",
                family.iptables()
            );
        }

        // Whichever queue a source hashes to, the same policy applies.
        let sources: [IpAddr; 4] = [
            PEER4.into(),
            PEER4_ALT.into(),
            PEER6.into(),
            PEER6_ALT.into(),
        ];
        for src in sources {
            bed.expect_open(src)?;
        }
        let change = bed
            .ctl
            .add(List::Blacklist, &["203.0.113.2/32", "2001:db8:1::2/128"])?;
        ensure!(change.applied, "{change:?}");
        bed.expect_blocked(PEER4.into())?;
        bed.expect_blocked(PEER6.into())?;
        bed.expect_open(PEER4_ALT.into())?;
        bed.expect_open(PEER6_ALT.into())?;
        bed.expect_drops_counted("ip", "BlackList")?;
        Ok(())
    })
}
