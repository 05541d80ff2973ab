//! `meds-pktgen`: the packet generator of `tests/bench.sh`. Sends small packets as fast as it can
//! (or at `--rate` packets per second), for at most `--seconds` (≤ 60) and at most `--count`
//! packets, then prints one JSON line (`sent`, `send_errors`, `elapsed_s`, …) and exits.
//!
//! Three workloads:
//! * default, "established flows": `--src` addresses × `--flows-per-src` connected UDP sockets,
//!   each one flow (a fixed 5-tuple), served round-robin, `--batch` datagrams per `sendmmsg`;
//! * `--tcp`: `--src` addresses × `--flows-per-src` TCP connections (`TCP_NODELAY`, so every
//!   write leaves as its own segment while the window allows), served round-robin with one
//!   `--payload`-byte write each; `sent` counts writes. A connection the peer closes ends
//!   without failing the run (the receiver stops first by design);
//! * `--new-flows`: one raw IPv4 socket (`IPPROTO_RAW`, so the IP header is ours) and a new
//!   source address on every packet, cycling over the hosts of `--src-net` (never its network,
//!   broadcast or the destination address) from a random start; the source port advances after
//!   each full cycle of addresses. A 5-tuple repeats only after addresses × ports packets.
//!
//! `--wait-for FILE` holds the start (at most 30 s) until FILE exists: the bench's receiver
//! creates it once bound, so nothing is sent into a closed port and the receiver can be given
//! the generator's pid. `--seconds` counts from the start.
//!
//! `--rate PPS` paces any workload: packet n leaves no earlier than n / PPS seconds after the
//! start, in bursts of at most `--batch` (the bench's below-saturation runs). Without it the
//! generator sends flat out.
//!
//! Safety: this tool only ever sends into the bench's own namespaces. The destination and every
//! source (also `--src-net`) must lie inside 198.18.0.0/15 (RFC 2544 benchmark range), else it
//! refuses to start. Exit codes: 0 done, 2 usage error, 1 runtime error.

use std::io::{self, Read, Write};
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The only network this tool sends to or from: 198.18.0.0/15 (RFC 2544).
const BENCH_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
const BENCH_PREFIX: u8 = 15;
const MAX_SECONDS: u64 = 60;
const MAX_COUNT: u64 = 1_000_000_000;
const MAX_BATCH: usize = 1024;
const MAX_PAYLOAD: usize = 1400;
const MAX_FLOWS: usize = 4096;
const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const MAX_RATE: u64 = 10_000_000;
/// Longest wait for the `--wait-for` file.
const MAX_START_WAIT: Duration = Duration::from_secs(30);
/// How long one TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest single sleep of the pacer or of a wait for a writable TCP socket: short enough
/// that the deadline is looked at often.
const MAX_WAIT: Duration = Duration::from_millis(10);

#[derive(Debug, Parser)]
#[command(
    about = "Bounded sendmmsg UDP generator for the Meds packet-rate bench (198.18.0.0/15 only)"
)]
struct Args {
    /// Destination address and UDP port (inside 198.18.0.0/15).
    #[arg(long)]
    dst: SocketAddrV4,
    /// Stop after this many seconds (1..=60).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Stop after this many packets (1..=1e9).
    #[arg(long, default_value_t = MAX_COUNT)]
    count: u64,
    /// UDP payload bytes (0..=1400; 18 gives 60-byte Ethernet frames).
    #[arg(long, default_value_t = 18)]
    payload: usize,
    /// Datagrams per sendmmsg call (1..=1024); with --rate also the largest burst.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Send at this many packets (TCP: writes) per second (1..=10000000); default: flat out.
    #[arg(long)]
    rate: Option<u64>,
    /// Established flows: a source address (repeat; inside 198.18.0.0/15, assigned locally).
    #[arg(long = "src", conflicts_with = "new_flows")]
    srcs: Vec<Ipv4Addr>,
    /// Established flows: connected sockets (flows) per source address.
    #[arg(long, default_value_t = 4)]
    flows_per_src: usize,
    /// Established flows over TCP (TCP_NODELAY, one --payload write per turn) instead of UDP.
    #[arg(long, conflicts_with = "new_flows")]
    tcp: bool,
    /// New-flow workload: a new source address/port on every packet (raw socket, needs
    /// CAP_NET_RAW).
    #[arg(long)]
    new_flows: bool,
    /// New-flow workload: the network the sources cycle over (inside 198.18.0.0/15, /8../30).
    #[arg(long, default_value = "198.18.0.0/15")]
    src_net: String,
    /// New-flow workload: source port range LO:HI.
    #[arg(long, default_value = "1024:61023")]
    src_ports: String,
    /// Start only once this file exists (waits at most 30 s, then fails).
    #[arg(long)]
    wait_for: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let plan = match Plan::from_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("meds-pktgen: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &args.wait_for
        && let Err(e) = wait_for_file(path, MAX_START_WAIT)
    {
        eprintln!("meds-pktgen: {e:#}");
        return ExitCode::from(1);
    }
    match plan.run() {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meds-pktgen: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Poll for `path` every 10 ms, for at most `limit`.
fn wait_for_file(path: &std::path::Path, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() >= limit {
            bail!("{} did not appear within {limit:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// A validated run.
#[derive(Debug)]
struct Plan {
    dst: SocketAddrV4,
    duration: Duration,
    count: u64,
    payload: usize,
    batch: usize,
    rate: Option<u64>,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Established {
        srcs: Vec<Ipv4Addr>,
        flows_per_src: usize,
    },
    Tcp {
        srcs: Vec<Ipv4Addr>,
        flows_per_src: usize,
    },
    NewFlows {
        sources: SourceCycle,
    },
}

/// Whether `addr` lies in 198.18.0.0/15.
fn in_bench_net(addr: Ipv4Addr) -> bool {
    contains(BENCH_NET, BENCH_PREFIX, addr)
}

fn contains(net: Ipv4Addr, len: u8, addr: Ipv4Addr) -> bool {
    let mask = prefix_mask(len);
    u32::from(addr) & mask == u32::from(net) & mask
}

fn prefix_mask(len: u8) -> u32 {
    match len {
        0 => 0,
        l => u32::MAX << (32 - u32::from(l.min(32))),
    }
}

/// Parse `a.b.c.d/len` (the address must be the network address).
fn parse_net(text: &str) -> Result<(Ipv4Addr, u8)> {
    let (addr, len) = text
        .split_once('/')
        .with_context(|| format!("{text:?} is not a.b.c.d/len"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .with_context(|| format!("{text:?}: bad address"))?;
    let len: u8 = len
        .parse()
        .with_context(|| format!("{text:?}: bad prefix length"))?;
    if len > 32 {
        bail!("{text:?}: prefix length above 32");
    }
    if u32::from(addr) & !prefix_mask(len) != 0 {
        bail!("{text:?}: host bits set");
    }
    Ok((addr, len))
}

/// Parse `LO:HI` (1 ≤ LO ≤ HI).
fn parse_ports(text: &str) -> Result<(u16, u16)> {
    let (lo, hi) = text
        .split_once(':')
        .with_context(|| format!("{text:?} is not LO:HI"))?;
    let lo: u16 = lo.parse().with_context(|| format!("{text:?}: bad LO"))?;
    let hi: u16 = hi.parse().with_context(|| format!("{text:?}: bad HI"))?;
    if lo == 0 || lo > hi {
        bail!("{text:?}: need 1 <= LO <= HI");
    }
    Ok((lo, hi))
}

impl Plan {
    fn from_args(a: &Args) -> Result<Plan> {
        if !in_bench_net(*a.dst.ip()) {
            bail!("--dst {} is outside 198.18.0.0/15", a.dst);
        }
        if a.dst.port() == 0 {
            bail!("--dst needs a port");
        }
        if !(1..=MAX_SECONDS).contains(&a.seconds) {
            bail!("--seconds must be 1..={MAX_SECONDS}");
        }
        if !(1..=MAX_COUNT).contains(&a.count) {
            bail!("--count must be 1..={MAX_COUNT}");
        }
        if a.payload > MAX_PAYLOAD {
            bail!("--payload must be 0..={MAX_PAYLOAD}");
        }
        if !(1..=MAX_BATCH).contains(&a.batch) {
            bail!("--batch must be 1..={MAX_BATCH}");
        }
        if let Some(rate) = a.rate
            && !(1..=MAX_RATE).contains(&rate)
        {
            bail!("--rate must be 1..={MAX_RATE}");
        }
        if a.tcp && a.payload == 0 {
            bail!("--tcp needs --payload of at least 1 byte");
        }
        let mode = if a.new_flows {
            let (net, len) = parse_net(&a.src_net).context("--src-net")?;
            if !(8..=30).contains(&len) {
                bail!("--src-net: prefix length must be 8..=30");
            }
            if len < BENCH_PREFIX || !in_bench_net(net) {
                bail!("--src-net {} is not inside 198.18.0.0/15", a.src_net);
            }
            let ports = parse_ports(&a.src_ports).context("--src-ports")?;
            let seed = random_u64().context("read /dev/urandom")?;
            Mode::NewFlows {
                sources: SourceCycle::new(net, len, *a.dst.ip(), ports, seed)?,
            }
        } else {
            if a.srcs.is_empty() {
                bail!("give --src (one or more) or --new-flows");
            }
            if let Some(bad) = a.srcs.iter().find(|s| !in_bench_net(**s)) {
                bail!("--src {bad} is outside 198.18.0.0/15");
            }
            if a.flows_per_src == 0 || a.srcs.len().saturating_mul(a.flows_per_src) > MAX_FLOWS {
                bail!("--flows-per-src must be >= 1 and give at most {MAX_FLOWS} flows");
            }
            let (srcs, flows_per_src) = (a.srcs.clone(), a.flows_per_src);
            if a.tcp {
                Mode::Tcp {
                    srcs,
                    flows_per_src,
                }
            } else {
                Mode::Established {
                    srcs,
                    flows_per_src,
                }
            }
        };
        Ok(Plan {
            dst: a.dst,
            duration: Duration::from_secs(a.seconds),
            count: a.count,
            payload: a.payload,
            batch: a.batch,
            rate: a.rate,
            mode,
        })
    }

    fn run(self) -> Result<serde_json::Value> {
        match &self.mode {
            Mode::Established {
                srcs,
                flows_per_src,
            } => self.run_established(srcs, *flows_per_src),
            Mode::Tcp {
                srcs,
                flows_per_src,
            } => self.run_tcp(srcs, *flows_per_src),
            Mode::NewFlows { sources } => self.run_new_flows(sources.clone()),
        }
    }

    fn run_established(
        &self,
        srcs: &[Ipv4Addr],
        flows_per_src: usize,
    ) -> Result<serde_json::Value> {
        let mut sockets = Vec::with_capacity(srcs.len() * flows_per_src);
        for src in srcs {
            for _ in 0..flows_per_src {
                let s = UdpSocket::bind(SocketAddrV4::new(*src, 0))
                    .with_context(|| format!("bind {src} (is it assigned here?)"))?;
                s.connect(self.dst)
                    .with_context(|| format!("connect to {}", self.dst))?;
                sockets.push(s);
            }
        }
        let payload = vec![0x5au8; self.payload];
        let mut iov: Vec<libc::iovec> = (0..self.batch)
            .map(|_| libc::iovec {
                iov_base: payload.as_ptr().cast_mut().cast(),
                iov_len: payload.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
                let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut counters = Counters::default();
        let start = Instant::now();
        let pacer = Pacer::new(self.rate, start);
        let mut next = 0usize;
        while counters.sent < self.count && start.elapsed() < self.duration {
            let want = batch_len(self.batch, self.count - counters.sent)
                .min(pacer.allowance(counters.sent));
            if want == 0 {
                pacer.wait(counters.sent);
                continue;
            }
            // INVARIANT: `sockets` is not empty (validated: at least one source and one flow).
            let fd = sockets[next % sockets.len()].as_raw_fd();
            next = next.wrapping_add(1);
            counters.record(send_batch(fd, &mut msgs[..want]));
        }
        Ok(counters.report(
            "established",
            start.elapsed(),
            sockets.len() as u64,
            self.payload,
            self.rate,
        ))
    }

    fn run_tcp(&self, srcs: &[Ipv4Addr], flows_per_src: usize) -> Result<serde_json::Value> {
        let mut streams = Vec::with_capacity(srcs.len() * flows_per_src);
        for src in srcs {
            for _ in 0..flows_per_src {
                streams.push(Some(self.tcp_connect(*src)?));
            }
        }
        let payload = vec![0x5au8; self.payload];
        let mut counters = Counters::default();
        let mut bytes = 0u64;
        let mut closed = 0u64;
        let start = Instant::now();
        let pacer = Pacer::new(self.rate, start);
        while counters.sent < self.count
            && start.elapsed() < self.duration
            && streams.iter().any(Option::is_some)
        {
            let mut wrote = false;
            for slot in &mut streams {
                if counters.sent >= self.count {
                    break;
                }
                if pacer.allowance(counters.sent) == 0 {
                    // Not a stall of the sockets: the pacer's turn to wait.
                    wrote = true;
                    break;
                }
                let Some(stream) = slot else { continue };
                counters.calls += 1;
                match stream.write(&payload) {
                    Ok(n) => {
                        counters.sent += 1;
                        bytes += n as u64;
                        wrote = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // The receiver went away (reset, broken pipe): this flow is over.
                        counters.note_error(&e);
                        closed += 1;
                        *slot = None;
                    }
                }
            }
            if pacer.allowance(counters.sent) == 0 {
                pacer.wait(counters.sent);
            } else if !wrote {
                wait_writable(&streams);
            }
        }
        let mut report = counters.report(
            "tcp",
            start.elapsed(),
            streams.len() as u64,
            self.payload,
            self.rate,
        );
        report["bytes"] = bytes.into();
        report["closed_by_peer"] = closed.into();
        Ok(report)
    }

    /// One TCP connection from `src` to the destination: bound, connected (bounded in time),
    /// `TCP_NODELAY`, non-blocking.
    fn tcp_connect(&self, src: Ipv4Addr) -> Result<TcpStream> {
        let sock =
            Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).context("TCP socket")?;
        sock.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))
            .with_context(|| format!("bind {src} (is it assigned here?)"))?;
        sock.connect_timeout(&SockAddr::from(self.dst), CONNECT_TIMEOUT)
            .with_context(|| format!("TCP connect {src} -> {}", self.dst))?;
        sock.set_tcp_nodelay(true).context("TCP_NODELAY")?;
        sock.set_nonblocking(true).context("O_NONBLOCK")?;
        Ok(TcpStream::from(sock))
    }

    fn run_new_flows(&self, mut sources: SourceCycle) -> Result<serde_json::Value> {
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("raw socket (needs CAP_NET_RAW)");
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        let pkt_len = IPV4_HEADER + UDP_HEADER + self.payload;
        let template = udp_packet(*self.dst.ip(), self.dst.port(), self.payload);
        let mut bufs = vec![0u8; pkt_len * self.batch];
        for chunk in bufs.chunks_exact_mut(pkt_len) {
            chunk.copy_from_slice(&template);
        }
        let dst = sockaddr_in(self.dst);
        let mut iov: Vec<libc::iovec> = bufs
            .chunks_exact_mut(pkt_len)
            .map(|c| libc::iovec {
                iov_base: c.as_mut_ptr().cast(),
                iov_len: pkt_len,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
                let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m.msg_hdr.msg_name = (&raw const dst).cast_mut().cast();
                m.msg_hdr.msg_namelen = socklen::<libc::sockaddr_in>();
                m
            })
            .collect();
        let mut counters = Counters::default();
        let start = Instant::now();
        let pacer = Pacer::new(self.rate, start);
        while counters.sent < self.count && start.elapsed() < self.duration {
            let want = batch_len(self.batch, self.count - counters.sent)
                .min(pacer.allowance(counters.sent));
            if want == 0 {
                pacer.wait(counters.sent);
                continue;
            }
            for chunk in bufs.chunks_exact_mut(pkt_len).take(want) {
                let (addr, port) = sources.next_source();
                chunk[12..16].copy_from_slice(&addr.octets());
                chunk[IPV4_HEADER..IPV4_HEADER + 2].copy_from_slice(&port.to_be_bytes());
            }
            counters.record(send_batch(sock.as_raw_fd(), &mut msgs[..want]));
        }
        Ok(counters.report(
            "new_flows",
            start.elapsed(),
            sources.distinct_tuples(),
            self.payload,
            self.rate,
        ))
    }
}

/// Packets to put in the next call.
fn batch_len(batch: usize, remaining: u64) -> usize {
    usize::try_from(remaining).map_or(batch, |r| r.min(batch))
}

/// Paces a run at a fixed rate: packet n (0-based) is due n / rate seconds after the start.
#[derive(Debug)]
struct Pacer {
    rate: Option<u64>,
    start: Instant,
}

impl Pacer {
    fn new(rate: Option<u64>, start: Instant) -> Pacer {
        Pacer { rate, start }
    }

    /// How many packets may leave now, `sent` having left already (`usize::MAX` unpaced).
    fn allowance(&self, sent: u64) -> usize {
        match self.rate {
            None => usize::MAX,
            Some(rate) => {
                let due = due_packets(self.start.elapsed(), rate);
                usize::try_from(due.saturating_sub(sent)).unwrap_or(usize::MAX)
            }
        }
    }

    /// Sleep until packet `sent` is due (at most [`MAX_WAIT`], so deadlines stay in view).
    fn wait(&self, sent: u64) {
        let Some(rate) = self.rate else { return };
        let due_at = Duration::from_secs_f64(sent as f64 / rate as f64);
        let wait = due_at.saturating_sub(self.start.elapsed()).min(MAX_WAIT);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// Packets due `elapsed` after the start at `rate` per second (the first one at once).
fn due_packets(elapsed: Duration, rate: u64) -> u64 {
    // Whole microseconds keep this exact in integers (u128: no overflow for a 60 s run).
    let due = elapsed.as_micros() * u128::from(rate) / 1_000_000 + 1;
    u64::try_from(due).unwrap_or(u64::MAX)
}

/// Wait (at most [`MAX_WAIT`]) until one of the open TCP streams can take a write.
fn wait_writable(streams: &[Option<TcpStream>]) {
    let mut fds: Vec<libc::pollfd> = streams
        .iter()
        .flatten()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        })
        .collect();
    if fds.is_empty() {
        return;
    }
    let n = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
    let timeout = libc::c_int::try_from(MAX_WAIT.as_millis()).unwrap_or(10);
    // SAFETY: `fds` holds `n` initialised pollfd structs and outlives the call. The result
    // (ready count, 0 on timeout, -1 on EINTR) needs no handling: the caller simply retries.
    unsafe { libc::poll(fds.as_mut_ptr(), n, timeout) };
}

/// One `sendmmsg`: how many datagrams the kernel took, or the error.
fn send_batch(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    let n = libc::c_uint::try_from(msgs.len()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: `msgs` holds `n` initialised headers whose iovecs and names point at buffers that
    // outlive this call.
    let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(usize::try_from(rc).unwrap_or(0))
    }
}

#[derive(Debug, Default)]
struct Counters {
    sent: u64,
    calls: u64,
    send_errors: u64,
    last_error: Option<String>,
}

impl Counters {
    fn record(&mut self, result: io::Result<usize>) {
        self.calls += 1;
        match result {
            Ok(n) => self.sent += n as u64,
            // ENOBUFS/EAGAIN/ECONNREFUSED (an ICMP error from an earlier datagram): the
            // datagrams of this call were not sent; keep going.
            Err(e) => self.note_error(&e),
        }
    }

    fn note_error(&mut self, e: &io::Error) {
        self.send_errors += 1;
        if self.last_error.is_none() {
            self.last_error = Some(e.to_string());
        }
    }

    fn report(
        &self,
        mode: &str,
        elapsed: Duration,
        flows: u64,
        payload: usize,
        rate: Option<u64>,
    ) -> serde_json::Value {
        let secs = elapsed.as_secs_f64();
        serde_json::json!({
            "mode": mode,
            "flows": flows,
            "payload": payload,
            "rate": rate,
            "sent": self.sent,
            "calls": self.calls,
            "send_errors": self.send_errors,
            "first_error": self.last_error,
            "elapsed_s": secs,
            "sent_pps": if secs > 0.0 { self.sent as f64 / secs } else { 0.0 },
        })
    }
}

/// The hosts of a network (minus the destination) × a port range, from a random start.
#[derive(Debug, Clone)]
struct SourceCycle {
    first: u32,
    hosts: u32,
    skip: u32,
    port_lo: u16,
    ports: u32,
    host_idx: u32,
    port_idx: u32,
}

impl SourceCycle {
    fn new(
        net: Ipv4Addr,
        len: u8,
        dst: Ipv4Addr,
        (lo, hi): (u16, u16),
        seed: u64,
    ) -> Result<SourceCycle> {
        let size = 1u64 << (32 - u32::from(len));
        // Hosts: every address but the network and the broadcast address.
        let hosts = u32::try_from(size - 2).context("source network too large")?;
        let first = u32::from(net) + 1;
        let ports = u32::from(hi - lo) + 1;
        let in_net = contains(net, len, dst);
        if in_net && hosts < 2 {
            bail!("--src-net has no host besides the destination");
        }
        let host_idx = (seed % u64::from(hosts)) as u32;
        let port_idx = ((seed >> 32) % u64::from(ports)) as u32;
        Ok(SourceCycle {
            first,
            hosts,
            // The destination is skipped when it lies inside the network (u32::MAX never matches).
            skip: if in_net { u32::from(dst) } else { u32::MAX },
            port_lo: lo,
            ports,
            host_idx,
            port_idx,
        })
    }

    fn next_source(&mut self) -> (Ipv4Addr, u16) {
        loop {
            let addr = self.first + self.host_idx;
            let port = self.port_lo + self.port_idx as u16;
            self.host_idx += 1;
            if self.host_idx == self.hosts {
                self.host_idx = 0;
                self.port_idx = (self.port_idx + 1) % self.ports;
            }
            if addr != self.skip {
                return (Ipv4Addr::from(addr), port);
            }
        }
    }

    /// How many packets before a 5-tuple repeats.
    fn distinct_tuples(&self) -> u64 {
        let hosts = u64::from(self.hosts) - u64::from(self.skip != u32::MAX);
        hosts * u64::from(self.ports)
    }
}

/// An IPv4/UDP packet to `dst` (source address and port filled in per packet). The kernel fills
/// in the IP checksum and id on a raw socket; the UDP checksum is 0 (none, legal over IPv4).
fn udp_packet(dst: Ipv4Addr, dport: u16, payload: usize) -> Vec<u8> {
    let total = IPV4_HEADER + UDP_HEADER + payload;
    let mut p = vec![0u8; total];
    p[0] = 0x45; // version 4, 5 words
    // INVARIANT: total ≤ 20 + 8 + MAX_PAYLOAD, far below u16::MAX.
    let total16 = u16::try_from(total).unwrap_or(u16::MAX);
    p[2..4].copy_from_slice(&total16.to_be_bytes());
    p[6] = 0x40; // don't fragment
    p[8] = 64; // TTL
    p[9] = libc::IPPROTO_UDP as u8;
    p[16..20].copy_from_slice(&dst.octets());
    p[IPV4_HEADER + 2..IPV4_HEADER + 4].copy_from_slice(&dport.to_be_bytes());
    let udp_len = u16::try_from(UDP_HEADER + payload).unwrap_or(u16::MAX);
    p[IPV4_HEADER + 4..IPV4_HEADER + 6].copy_from_slice(&udp_len.to_be_bytes());
    for b in &mut p[IPV4_HEADER + UDP_HEADER..] {
        *b = 0x5a;
    }
    p
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut s: libc::sockaddr_in = unsafe { mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr = libc::in_addr {
        s_addr: u32::from(*a.ip()).to_be(),
    };
    s
}

fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(mem::size_of::<T>()).unwrap_or(0)
}

fn random_u64() -> io::Result<u64> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u64::from_ne_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_net_boundaries() {
        for (addr, inside) in [
            ("198.17.255.255", false),
            ("198.18.0.0", true),
            ("198.19.255.255", true),
            ("198.20.0.0", false),
            ("10.0.0.1", false),
        ] {
            assert_eq!(in_bench_net(addr.parse().unwrap()), inside, "{addr}");
        }
    }

    #[test]
    fn refuses_outside_destinations_and_sources() {
        let parse = |argv: &[&str]| {
            let mut full = vec!["meds-pktgen"];
            full.extend_from_slice(argv);
            Plan::from_args(&Args::try_parse_from(full).unwrap())
        };
        assert!(parse(&["--dst", "198.18.0.1:9000", "--src", "198.18.0.2"]).is_ok());
        assert!(parse(&["--dst", "198.18.0.1:9000", "--new-flows"]).is_ok());
        for bad in [
            &["--dst", "8.8.8.8:53", "--src", "198.18.0.2"][..],
            &["--dst", "198.18.0.1:9000", "--src", "10.0.0.2"],
            &[
                "--dst",
                "198.18.0.1:9000",
                "--new-flows",
                "--src-net",
                "10.0.0.0/8",
            ],
            &[
                "--dst",
                "198.18.0.1:9000",
                "--new-flows",
                "--src-net",
                "198.16.0.0/14",
            ],
            &[
                "--dst",
                "198.18.0.1:9000",
                "--new-flows",
                "--src-net",
                "198.18.0.1/24",
            ],
            &[
                "--dst",
                "198.18.0.1:9000",
                "--src",
                "198.18.0.2",
                "--seconds",
                "61",
            ],
            &[
                "--dst",
                "198.18.0.1:9000",
                "--src",
                "198.18.0.2",
                "--seconds",
                "0",
            ],
            &[
                "--dst",
                "198.18.0.1:9000",
                "--src",
                "198.18.0.2",
                "--count",
                "0",
            ],
            &["--dst", "198.18.0.1:9000"],
            &["--dst", "198.18.0.1:0", "--src", "198.18.0.2"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rate_and_tcp_flags() {
        let parse = |argv: &[&str]| {
            let mut full = vec!["meds-pktgen", "--dst", "198.18.0.1:9000"];
            full.extend_from_slice(argv);
            Args::try_parse_from(full)
                .map_err(|e| e.to_string())
                .and_then(|a| Plan::from_args(&a).map_err(|e| e.to_string()))
        };
        let tcp = parse(&["--src", "198.18.0.2", "--tcp", "--rate", "1000"]).unwrap();
        assert!(matches!(tcp.mode, Mode::Tcp { .. }));
        assert_eq!(tcp.rate, Some(1000));
        assert!(parse(&["--new-flows", "--rate", "10000000"]).is_ok());
        for bad in [
            &["--src", "198.18.0.2", "--rate", "0"][..],
            &["--src", "198.18.0.2", "--rate", "10000001"],
            &["--src", "198.18.0.2", "--tcp", "--payload", "0"],
            &["--new-flows", "--tcp"],
            &["--tcp"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wait_for_file_is_bounded() {
        let dir = std::env::temp_dir().join(format!("meds-pktgen-test-{}", std::process::id()));
        assert!(wait_for_file(&dir, Duration::from_millis(30)).is_err());
        std::fs::write(&dir, b"").unwrap();
        assert!(wait_for_file(&dir, Duration::ZERO).is_ok());
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn pacer_due_counts() {
        // The first packet is due at once; then one every 1/rate seconds.
        assert_eq!(due_packets(Duration::ZERO, 1000), 1);
        assert_eq!(due_packets(Duration::from_micros(999), 1000), 1);
        assert_eq!(due_packets(Duration::from_millis(1), 1000), 2);
        assert_eq!(due_packets(Duration::from_secs(1), 1000), 1001);
        assert_eq!(due_packets(Duration::from_secs(60), MAX_RATE), 600_000_001);
        let unpaced = Pacer::new(None, Instant::now());
        assert_eq!(unpaced.allowance(u64::MAX), usize::MAX);
        let paced = Pacer::new(Some(1), Instant::now());
        assert_eq!(paced.allowance(0), 1);
        assert_eq!(paced.allowance(1), 0);
    }

    #[test]
    fn source_cycle_skips_destination_network_and_broadcast() {
        let dst: Ipv4Addr = "198.18.0.1".parse().unwrap();
        let mut c =
            SourceCycle::new("198.18.0.0".parse().unwrap(), 30, dst, (1000, 1001), 0).unwrap();
        // /30: hosts .1 and .2; .1 is the destination, so only .2, with both ports.
        let seen: Vec<_> = (0..4).map(|_| c.next_source()).collect();
        assert_eq!(
            seen,
            [
                ("198.18.0.2".parse().unwrap(), 1000),
                ("198.18.0.2".parse().unwrap(), 1001),
                ("198.18.0.2".parse().unwrap(), 1000),
                ("198.18.0.2".parse().unwrap(), 1001),
            ]
        );
        assert_eq!(c.distinct_tuples(), 2);
    }

    #[test]
    fn source_cycle_visits_every_tuple_once_per_period() {
        let dst: Ipv4Addr = "198.18.0.1".parse().unwrap();
        let mut c =
            SourceCycle::new("198.18.1.0".parse().unwrap(), 28, dst, (5, 7), 12345).unwrap();
        let period = c.distinct_tuples();
        assert_eq!(period, 14 * 3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..period {
            let (a, p) = c.next_source();
            assert!(in_bench_net(a) && a != dst && (5..=7).contains(&p));
            assert!(seen.insert((a, p)), "repeated {a}:{p}");
        }
    }

    #[test]
    fn packet_template_is_well_formed() {
        let p = udp_packet("198.18.0.1".parse().unwrap(), 9000, 18);
        assert_eq!(p.len(), 46);
        assert_eq!(p[0], 0x45);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 46);
        assert_eq!(p[9], 17);
        assert_eq!(&p[16..20], &[198, 18, 0, 1]);
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 9000);
        assert_eq!(u16::from_be_bytes([p[24], p[25]]), 26);
    }
}
