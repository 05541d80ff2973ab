//! `meds-pktsink`: the receiving end and the bookkeeper of `tests/bench.sh`.
//!
//! * `meds-pktsink run`: binds a UDP socket (and with `--tcp` a TCP listener on the same
//!   address), drains it, discards `--warmup` seconds, counts what is delivered in a fixed
//!   `--window`, keeps receiving for `--tail` seconds, and prints one JSON line:
//!   - over exactly the window: the packets that arrived at the namespace's interfaces
//!     (`/proc/net/dev`, all but `lo`: the offered load as the firewall saw it); delivered
//!     packets and pps (UDP datagrams, plus with `--tcp` the TCP segments the namespace's TCP
//!     stack took in, `Tcp InSegs`); CPU seconds (user +
//!     system, all threads, from `/proc/PID/stat`) of every `--pid NAME=PID` and of itself; the
//!     per-queue deltas of `/proc/net/netfilter/nfnetlink_queue` (packets queued, queue and
//!     netlink drops); UDP receive errors from `/proc/net/snmp`; the busy share of each CPU
//!     from `/proc/stat`, and the **background** share: machine busy time minus the CPU time
//!     of the bench's own processes (the `--pid`s, the sink, every `ksoftirqd/N`), in % of all
//!     CPUs (the kernel charges softirq work to the task it interrupts, so the packet path's
//!     softirq time is the bench's);
//!   - over the whole run (`run`, from bind to exit, so it includes the packets of a flow that
//!     were queued before the window and everything the tail catches): datagrams and TCP bytes
//!     received, queue counters, UDP receive errors and conntrack counters
//!     (`/proc/net/stat/nf_conntrack`: table-full drops, early drops, failed inserts).
//!
//!   `--ready-file` is created once the sockets are bound and the run's first sample is taken,
//!   so the runner starts the generator only after that. The `/proc/net` files are those of
//!   the network namespace the sink runs in (the firewall's).
//! * `meds-pktsink gate`: the quiet gate. Samples the machine-wide busy share of all CPUs every
//!   `--interval-ms` until it is at most `--max-busy` % or `--max-wait` seconds have passed;
//!   prints `{"busy_pct":…,"waited_s":…,"quiet":…}`.
//! * `meds-pktsink report RAW.jsonl`: reads the runner's raw lines and prints the markdown
//!   report (see [`report`]).
//!
//! Bounded: a run lasts warmup + window + tail (≤ 60 + 60 + 30 s), a gate at most its
//! `--max-wait` (≤ 600 s) plus one interval. Exit codes: 0 done, 2 usage error, 1 runtime error.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read};
use std::mem;
use std::net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

const MAX_SECONDS: u64 = 60;
const MAX_TAIL_SECONDS: u64 = 30;
const MAX_GATE_WAIT_SECONDS: u64 = 600;
const BATCH: usize = 64;
const SLOT: usize = 2048;
const RECV_TIMEOUT: Duration = Duration::from_millis(50);
/// Most TCP connections served at once; later ones are accepted and closed at once.
const MAX_TCP_CONNS: usize = 4096;
const TCP_BUF: usize = 256 * 1024;
/// Reads per connection per turn, so one busy connection cannot starve the others.
const TCP_READS_PER_TURN: usize = 8;

#[derive(Debug, Parser)]
#[command(about = "Receiver, quiet gate and report of the Meds packet-rate bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Count delivered packets in a fixed window; print one JSON line.
    Run(RunArgs),
    /// Wait (bounded) for the machine to be quiet; print one JSON line.
    Gate(GateArgs),
    /// Print the markdown report from the runner's raw JSON lines.
    Report {
        /// The runner's raw.jsonl.
        raw: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// UDP (and with --tcp, TCP) address to receive on.
    #[arg(long)]
    bind: SocketAddrV4,
    /// Seconds received but not counted before the window (0..=60).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Seconds counted (1..=60).
    #[arg(long, default_value_t = 5)]
    window: u64,
    /// Seconds received after the window, counted only in the run totals (0..=30).
    #[arg(long, default_value_t = 0)]
    tail: u64,
    /// Also accept TCP connections on --bind and count their segments as delivered packets.
    #[arg(long)]
    tcp: bool,
    /// Create this file once the sockets are bound (the generator may start).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// A process whose CPU time to measure, as NAME=PID (repeat). Counted as the bench's own
    /// load, not background.
    #[arg(long = "pid", value_parser = parse_named_pid)]
    pids: Vec<(String, u32)>,
    /// Socket receive buffer to request (SO_RCVBUFFORCE, else SO_RCVBUF).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    rcvbuf_bytes: usize,
}

#[derive(Debug, clap::Args)]
struct GateArgs {
    /// Quiet means at most this busy share of all CPUs, in % (0..=100).
    #[arg(long, default_value_t = 25.0)]
    max_busy: f64,
    /// Give up waiting after this many seconds (0..=600): the run then is not quiet.
    #[arg(long, default_value_t = 30)]
    max_wait: u64,
    /// Length of one sample, in milliseconds (100..=5000).
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

fn parse_named_pid(text: &str) -> Result<(String, u32), String> {
    let (name, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=PID"))?;
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_name {
        return Err(format!("{name:?}: NAME must be [A-Za-z0-9_-]+"));
    }
    let pid: u32 = pid.parse().map_err(|_| format!("{pid:?} is not a pid"))?;
    if pid == 0 {
        return Err("pid 0".into());
    }
    Ok((name.to_owned(), pid))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let usage = match &cli.command {
        Command::Run(a) => check_run_args(a),
        Command::Gate(a) => check_gate_args(a),
        Command::Report { .. } => Ok(()),
    };
    if let Err(e) = usage {
        eprintln!("meds-pktsink: {e:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Run(args) => run(&args).map(|v| v.to_string()),
        Command::Gate(args) => Ok(gate(&args).to_string()),
        Command::Report { raw } => std::fs::read_to_string(&raw)
            .with_context(|| format!("read {}", raw.display()))
            .and_then(|text| report(&text)),
    };
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meds-pktsink: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn check_run_args(a: &RunArgs) -> Result<()> {
    if a.warmup > MAX_SECONDS {
        bail!("--warmup must be 0..={MAX_SECONDS}");
    }
    if !(1..=MAX_SECONDS).contains(&a.window) {
        bail!("--window must be 1..={MAX_SECONDS}");
    }
    if a.tail > MAX_TAIL_SECONDS {
        bail!("--tail must be 0..={MAX_TAIL_SECONDS}");
    }
    Ok(())
}

fn check_gate_args(a: &GateArgs) -> Result<()> {
    if !(0.0..=100.0).contains(&a.max_busy) {
        bail!("--max-busy must be 0..=100");
    }
    if a.max_wait > MAX_GATE_WAIT_SECONDS {
        bail!("--max-wait must be 0..={MAX_GATE_WAIT_SECONDS}");
    }
    if !(100..=5000).contains(&a.interval_ms) {
        bail!("--interval-ms must be 100..=5000");
    }
    Ok(())
}

// ---- sampling -----------------------------------------------------------------------------------

/// Everything sampled at the edges of the window and of the run.
#[derive(Debug)]
struct Sample {
    at: Instant,
    /// CPU ticks of the named processes (and `sink`); None when unreadable.
    named_ticks: BTreeMap<String, Option<u64>>,
    /// CPU ticks of every process of the bench (named, sink, ksoftirqd), by pid.
    bench_ticks: BTreeMap<u32, Option<u64>>,
    queues: BTreeMap<u32, QueueStats>,
    udp: BTreeMap<String, u64>,
    tcp: BTreeMap<String, u64>,
    cpus: BTreeMap<String, (u64, u64)>,
    conntrack: Conntrack,
    /// Packets received by the namespace's interfaces other than `lo` (`/proc/net/dev`).
    arrived: u64,
}

/// The processes whose CPU time a run measures.
#[derive(Debug)]
struct Tracked {
    named: Vec<(String, u32)>,
    /// Every bench pid: the named ones, the sink itself and the softirq threads.
    bench: Vec<u32>,
}

impl Tracked {
    fn new(named: &[(String, u32)]) -> Tracked {
        let mut bench: Vec<u32> = named.iter().map(|(_, pid)| *pid).collect();
        bench.push(std::process::id());
        bench.extend(softirq_threads());
        bench.sort_unstable();
        bench.dedup();
        Tracked {
            named: named.to_vec(),
            bench,
        }
    }
}

/// The pids of the `ksoftirqd/N` kernel threads (they run the packet path when softirq work
/// is deferred, so their time is the bench's).
fn softirq_threads() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("ksoftirqd/"))
        })
        .collect()
}

impl Sample {
    fn take(tracked: &Tracked) -> Sample {
        let mut named_ticks = BTreeMap::new();
        for (name, pid) in &tracked.named {
            named_ticks.insert(name.clone(), proc_cpu_ticks(&format!("/proc/{pid}/stat")));
        }
        named_ticks.insert("sink".into(), proc_cpu_ticks("/proc/self/stat"));
        let bench_ticks = tracked
            .bench
            .iter()
            .map(|pid| (*pid, proc_cpu_ticks(&format!("/proc/{pid}/stat"))))
            .collect();
        let snmp = read_to_string("/proc/net/snmp").unwrap_or_default();
        Sample {
            at: Instant::now(),
            named_ticks,
            bench_ticks,
            queues: read_to_string("/proc/net/netfilter/nfnetlink_queue")
                .map(|t| parse_nfqueue(&t))
                .unwrap_or_default(),
            udp: parse_snmp(&snmp, "Udp:"),
            tcp: parse_snmp(&snmp, "Tcp:"),
            cpus: read_to_string("/proc/stat")
                .map(|t| parse_proc_stat(&t))
                .unwrap_or_default(),
            conntrack: Conntrack::read(),
            arrived: read_to_string("/proc/net/dev")
                .map(|t| parse_net_dev_rx(&t))
                .unwrap_or(0),
        }
    }
}

fn read_to_string(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Received packets summed over the interfaces of `/proc/net/dev` other than `lo`. Lines:
/// `name: rx_bytes rx_packets rx_errs rx_drop … tx…`; the two header lines have no counters.
fn parse_net_dev_rx(text: &str) -> u64 {
    text.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            if name.trim() == "lo" {
                return None;
            }
            counters.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// Conntrack state of the namespace: entries now, cumulative per-CPU counters summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Conntrack {
    count: Option<u64>,
    drop: u64,
    early_drop: u64,
    insert_failed: u64,
}

impl Conntrack {
    fn read() -> Conntrack {
        let mut c = read_to_string("/proc/net/stat/nf_conntrack")
            .map(|t| parse_conntrack_stat(&t))
            .unwrap_or_default();
        c.count = read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
            .and_then(|t| t.trim().parse().ok());
        c
    }
}

/// `/proc/net/stat/nf_conntrack`: a header of names, then one line of hex numbers per CPU.
/// Columns are found by name (their set differs between kernels); unknown lines are skipped.
fn parse_conntrack_stat(text: &str) -> Conntrack {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Conntrack::default();
    };
    let names: Vec<&str> = header.split_whitespace().collect();
    let col = |name: &str| names.iter().position(|n| *n == name);
    let (drop, early, failed) = (col("drop"), col("early_drop"), col("insert_failed"));
    let mut c = Conntrack::default();
    for line in lines {
        let v: Vec<u64> = line
            .split_whitespace()
            .map_while(|x| u64::from_str_radix(x, 16).ok())
            .collect();
        if v.len() != names.len() {
            continue;
        }
        let at = |i: Option<usize>| i.and_then(|i| v.get(i)).copied().unwrap_or(0);
        c.drop += at(drop);
        c.early_drop += at(early);
        c.insert_failed += at(failed);
    }
    c
}

// ---- run ----------------------------------------------------------------------------------------

fn run(a: &RunArgs) -> Result<Value> {
    check_run_args(a)?;
    let mut intake = Intake::bind(a)?;
    let tracked = Tracked::new(&a.pids);
    let first = Sample::take(&tracked);
    if let Some(path) = &a.ready_file {
        std::fs::write(path, b"ready\n")
            .with_context(|| format!("write the ready file {}", path.display()))?;
    }
    let mut total = 0u64;
    let warm_end = first.at + Duration::from_secs(a.warmup);
    while Instant::now() < warm_end {
        total += intake.pump()?;
    }
    let before = Sample::take(&tracked);
    let bytes_before = intake.tcp_bytes();
    let window_end = before.at + Duration::from_secs(a.window);
    let mut delivered = 0u64;
    while Instant::now() < window_end {
        delivered += intake.pump()?;
    }
    let after = Sample::take(&tracked);
    let window_bytes = intake.tcp_bytes() - bytes_before;
    let tail_end = after.at + Duration::from_secs(a.tail);
    while Instant::now() < tail_end {
        total += intake.pump()?;
    }
    let last = Sample::take(&tracked);
    total += delivered;
    let mut out = window_report(&before, &after, delivered, a.tcp);
    out["tcp"]["bytes"] = window_bytes.into();
    out["run"] = run_report(&first, &last, total, &intake);
    Ok(out)
}

/// The sockets a run receives on.
struct Intake {
    udp: UdpSocket,
    rx: Receiver,
    tcp: Option<TcpIntake>,
}

struct TcpIntake {
    listener: TcpListener,
    conns: Vec<TcpStream>,
    buf: Vec<u8>,
    bytes: u64,
    accepted: u64,
    turned_away: u64,
}

impl Intake {
    fn bind(a: &RunArgs) -> Result<Intake> {
        let udp = UdpSocket::bind(a.bind).with_context(|| format!("bind UDP {}", a.bind))?;
        set_rcvbuf(&udp, a.rcvbuf_bytes).context("set the receive buffer")?;
        let tcp = if a.tcp {
            // The UDP socket's address: the same port also when --bind asked for any (0).
            let at = udp.local_addr().context("UDP socket address")?;
            let listener = TcpListener::bind(at).with_context(|| format!("bind TCP {at}"))?;
            listener
                .set_nonblocking(true)
                .context("non-blocking listener")?;
            udp.set_nonblocking(true).context("non-blocking UDP")?;
            Some(TcpIntake {
                listener,
                conns: Vec::new(),
                buf: vec![0u8; TCP_BUF],
                bytes: 0,
                accepted: 0,
                turned_away: 0,
            })
        } else {
            udp.set_read_timeout(Some(RECV_TIMEOUT))
                .context("set the receive timeout")?;
            None
        };
        Ok(Intake {
            udp,
            rx: Receiver::new(),
            tcp,
        })
    }

    /// One turn: the datagrams received (0 after a timeout of at most [`RECV_TIMEOUT`]). TCP
    /// bytes are added to [`Intake::tcp_bytes`].
    fn pump(&mut self) -> Result<u64> {
        let Some(tcp) = &mut self.tcp else {
            // UDP only: one blocking recvmmsg (the socket's timeout bounds it).
            return self.rx.recv(&self.udp, libc::MSG_WAITFORONE);
        };
        tcp.wait_readable(self.udp.as_raw_fd());
        let n = self.rx.recv(&self.udp, libc::MSG_DONTWAIT)?;
        tcp.accept_all();
        tcp.read_all();
        Ok(n)
    }

    fn tcp_bytes(&self) -> u64 {
        self.tcp.as_ref().map_or(0, |t| t.bytes)
    }
}

impl TcpIntake {
    /// Wait (at most [`RECV_TIMEOUT`]) until the UDP socket, the listener or a connection
    /// has something to read.
    fn wait_readable(&self, udp: RawFd) {
        let mut fds: Vec<libc::pollfd> = [udp, self.listener.as_raw_fd()]
            .into_iter()
            .chain(self.conns.iter().map(AsRawFd::as_raw_fd))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let n = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
        let timeout = libc::c_int::try_from(RECV_TIMEOUT.as_millis()).unwrap_or(50);
        // SAFETY: `fds` holds `n` initialised pollfd structs and outlives the call. The result
        // needs no handling: every socket is non-blocking and read until it would block.
        unsafe { libc::poll(fds.as_mut_ptr(), n, timeout) };
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.conns.len() < MAX_TCP_CONNS && stream.set_nonblocking(true).is_ok() {
                        self.accepted += 1;
                        self.conns.push(stream);
                    } else {
                        self.turned_away += 1; // dropped: closed at once
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock (none pending) or a connection that died in the backlog.
                Err(_) => return,
            }
        }
    }

    fn read_all(&mut self) {
        let (buf, bytes) = (&mut self.buf, &mut self.bytes);
        self.conns.retain_mut(|conn| {
            for _ in 0..TCP_READS_PER_TURN {
                match conn.read(buf) {
                    Ok(0) => return false, // closed by the peer
                    Ok(n) => *bytes += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false, // reset
                }
            }
            true
        });
    }
}

/// Per-queue deltas of `/proc/net/netfilter/nfnetlink_queue` between two samples.
fn queue_deltas(before: &Sample, after: &Sample) -> Vec<Value> {
    after
        .queues
        .iter()
        .map(|(num, a)| {
            let b = before.queues.get(num).copied().unwrap_or_default();
            json!({
                "queue": num,
                "queued": a.id_sequence.wrapping_sub(b.id_sequence),
                "queue_dropped": a.queue_dropped.saturating_sub(b.queue_dropped),
                "user_dropped": a.user_dropped.saturating_sub(b.user_dropped),
                "queue_total_end": a.queue_total,
            })
        })
        .collect()
}

fn counter_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    key: &str,
) -> Value {
    let b = before.get(key).copied().unwrap_or(0);
    json!(after.get(key).map(|a| a.saturating_sub(b)))
}

fn udp_deltas(before: &Sample, after: &Sample) -> Value {
    let d = |key: &str| counter_delta(&before.udp, &after.udp, key);
    json!({
        "in_datagrams": d("InDatagrams"),
        "rcvbuf_errors": d("RcvbufErrors"),
        "in_errors": d("InErrors"),
        "no_ports": d("NoPorts"),
    })
}

fn ticks_delta(b: Option<u64>, a: Option<u64>) -> Option<u64> {
    match (b, a) {
        (Some(b), Some(a)) if a >= b => Some(a - b),
        _ => None, // the process was gone (or unreadable) at one end
    }
}

/// Round to one decimal.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The JSON line of one window.
fn window_report(before: &Sample, after: &Sample, delivered_udp: u64, tcp: bool) -> Value {
    let secs = after.at.duration_since(before.at).as_secs_f64();
    let tck = clock_ticks_per_second();
    let mut cpu = serde_json::Map::new();
    for (name, b) in &before.named_ticks {
        let delta = ticks_delta(*b, after.named_ticks.get(name).copied().flatten());
        cpu.insert(name.clone(), json!(delta.map(|t| t as f64 / tck)));
    }
    let mut cpus = serde_json::Map::new();
    for (name, (busy_a, total_a)) in &after.cpus {
        if let Some((busy_b, total_b)) = before.cpus.get(name) {
            let total = total_a.saturating_sub(*total_b);
            let busy = busy_a.saturating_sub(*busy_b);
            let pct = if total > 0 {
                100.0 * busy as f64 / total as f64
            } else {
                0.0
            };
            cpus.insert(name.clone(), json!(round1(pct)));
        }
    }
    let bench: u64 = before
        .bench_ticks
        .iter()
        .filter_map(|(pid, b)| ticks_delta(*b, after.bench_ticks.get(pid).copied().flatten()))
        .sum();
    let background = match (before.cpus.get("cpu"), after.cpus.get("cpu")) {
        (Some((busy_b, total_b)), Some((busy_a, total_a))) if total_a > total_b => {
            let busy = busy_a.saturating_sub(*busy_b);
            let other = busy.saturating_sub(bench);
            Some(round1(100.0 * other as f64 / (total_a - total_b) as f64))
        }
        _ => None,
    };
    let in_segs = counter_delta(&before.tcp, &after.tcp, "InSegs")
        .as_u64()
        .unwrap_or(0);
    let delivered = delivered_udp + if tcp { in_segs } else { 0 };
    let arrived = after.arrived.saturating_sub(before.arrived);
    json!({
        "window_s": secs,
        "arrived": arrived,
        "arrived_pps": if secs > 0.0 { arrived as f64 / secs } else { 0.0 },
        "delivered": delivered,
        "delivered_udp": delivered_udp,
        "pps": if secs > 0.0 { delivered as f64 / secs } else { 0.0 },
        "cpu_s": cpu,
        "nfqueue": queue_deltas(before, after),
        "udp": udp_deltas(before, after),
        "tcp": { "in_segs": in_segs, "counted": tcp },
        "cpu_busy_pct": cpus,
        "background_pct": background,
    })
}

/// The whole run's totals (first sample to last).
fn run_report(first: &Sample, last: &Sample, received_udp: u64, intake: &Intake) -> Value {
    let ct = |f: fn(&Conntrack) -> u64| f(&last.conntrack).saturating_sub(f(&first.conntrack));
    json!({
        "seconds": last.at.duration_since(first.at).as_secs_f64(),
        "received_udp": received_udp,
        "arrived": last.arrived.saturating_sub(first.arrived),
        "tcp_bytes": intake.tcp_bytes(),
        "tcp_accepted": intake.tcp.as_ref().map(|t| t.accepted),
        "tcp_turned_away": intake.tcp.as_ref().map(|t| t.turned_away),
        "tcp_in_segs": counter_delta(&first.tcp, &last.tcp, "InSegs"),
        "nfqueue": queue_deltas(first, last),
        "udp": udp_deltas(first, last),
        "conntrack": {
            "count_start": first.conntrack.count,
            "count_end": last.conntrack.count,
            "drop": ct(|c| c.drop),
            "early_drop": ct(|c| c.early_drop),
            "insert_failed": ct(|c| c.insert_failed),
        },
    })
}

/// recvmmsg state: `BATCH` slots of `SLOT` bytes, reused for every call.
struct Receiver {
    bufs: Vec<u8>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl Receiver {
    fn new() -> Receiver {
        let mut bufs = vec![0u8; BATCH * SLOT];
        let mut iov: Vec<libc::iovec> = bufs
            .chunks_exact_mut(SLOT)
            .map(|c| libc::iovec {
                iov_base: c.as_mut_ptr().cast(),
                iov_len: SLOT,
            })
            .collect();
        let msgs = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
                let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // The iovecs point into `bufs`' heap allocation, which moving the Vec does not move.
        Receiver { bufs, iov, msgs }
    }

    /// One `recvmmsg` with `flags`: how many datagrams arrived (0 on timeout or when none
    /// was waiting).
    fn recv(&mut self, sock: &UdpSocket, flags: libc::c_int) -> Result<u64> {
        debug_assert_eq!(self.iov.len(), self.msgs.len());
        debug_assert_eq!(self.bufs.len(), BATCH * SLOT);
        let n = libc::c_uint::try_from(self.msgs.len()).unwrap_or(0);
        // SAFETY: `msgs` holds `n` headers whose iovecs point at `bufs`, alive and unaliased
        // for the duration of the call; a null timeout means the socket's SO_RCVTIMEO applies.
        let rc = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                n,
                flags,
                std::ptr::null_mut(),
            )
        };
        if rc >= 0 {
            return Ok(u64::try_from(rc).unwrap_or(0));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
            _ => Err(e).context("recvmmsg"),
        }
    }
}

fn set_rcvbuf(sock: &UdpSocket, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&raw const v).cast(),
                libc::socklen_t::try_from(mem::size_of::<libc::c_int>()).unwrap_or(4),
            )
        };
        if rc == 0 {
            return Ok(());
        }
    }
    Err(io::Error::last_os_error())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime (clock ticks, all threads) from a `/proc/PID/stat` file; None if unreadable.
fn proc_cpu_ticks(path: &str) -> Option<u64> {
    parse_stat_cpu(&std::fs::read_to_string(path).ok()?)
}

/// utime + stime from the text of `/proc/PID/stat`. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat_cpu(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: field 3 (state) is index 0, so utime (14) is index 11, stime (15) 12.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// One line of `/proc/net/netfilter/nfnetlink_queue`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct QueueStats {
    queue_total: u64,
    queue_dropped: u64,
    user_dropped: u64,
    id_sequence: u32,
}

/// Lines: `queue_number peer_portid queue_total copy_mode copy_range queue_dropped
/// user_dropped id_sequence 1`. Lines that do not have this shape are skipped.
fn parse_nfqueue(text: &str) -> BTreeMap<u32, QueueStats> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let parsed = (|| {
            Some((
                f[0].parse::<u32>().ok()?,
                QueueStats {
                    queue_total: f[2].parse().ok()?,
                    queue_dropped: f[5].parse().ok()?,
                    user_dropped: f[6].parse().ok()?,
                    id_sequence: f[7].parse().ok()?,
                },
            ))
        })();
        if let Some((num, stats)) = parsed {
            out.insert(num, stats);
        }
    }
    out
}

/// The counters of one protocol in `/proc/net/snmp` (a header line and a value line, both
/// starting with `prefix`).
fn parse_snmp(text: &str, prefix: &str) -> BTreeMap<String, u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return BTreeMap::new();
    };
    names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
        .collect()
}

/// Per CPU (`cpu` = all): (busy, total) ticks; busy excludes idle and iowait.
fn parse_proc_stat(text: &str) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("cpu")) {
        let mut f = line.split_whitespace();
        let Some(name) = f.next() else { continue };
        let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).take(8).collect();
        if v.len() < 5 {
            continue;
        }
        let total: u64 = v.iter().sum();
        let idle = v[3] + v[4];
        out.insert(name.to_owned(), (total.saturating_sub(idle), total));
    }
    out
}

// ---- quiet gate ---------------------------------------------------------------------------------

/// Machine-wide (busy, total) ticks now.
fn machine_ticks() -> Option<(u64, u64)> {
    read_to_string("/proc/stat").and_then(|t| parse_proc_stat(&t).get("cpu").copied())
}

/// Busy share (%) between two (busy, total) samples.
fn busy_pct(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let total = after.1.checked_sub(before.1).filter(|t| *t > 0)?;
    let busy = after.0.saturating_sub(before.0);
    Some(100.0 * busy as f64 / total as f64)
}

fn gate(a: &GateArgs) -> Value {
    let start = Instant::now();
    let interval = Duration::from_millis(a.interval_ms);
    let max_wait = Duration::from_secs(a.max_wait);
    let mut samples = 0u32;
    let busy = loop {
        let before = machine_ticks();
        std::thread::sleep(interval);
        let after = machine_ticks();
        samples += 1;
        let busy = match (before, after) {
            (Some(b), Some(a)) => busy_pct(b, a),
            _ => None,
        };
        let quiet = busy.is_some_and(|b| b <= a.max_busy);
        if quiet || busy.is_none() || start.elapsed() >= max_wait {
            break busy;
        }
    };
    json!({
        "busy_pct": busy.map(round1),
        "waited_s": round1(start.elapsed().as_secs_f64()),
        "samples": samples,
        "max_busy_pct": a.max_busy,
        "quiet": busy.is_some_and(|b| b <= a.max_busy),
    })
}

// ---- report -------------------------------------------------------------------------------------

/// The median, ignoring non-finite values; None when nothing is left.
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// How a run was driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Flat out: the throughput runs.
    Saturating,
    /// At a fixed rate below saturation, nothing else happening.
    Steady,
    /// At a fixed rate below saturation, with a full list swap in the window.
    Swap,
}

impl Mode {
    fn parse(text: Option<&str>) -> Option<Mode> {
        match text {
            None | Some("sat") => Some(Mode::Saturating),
            Some("steady") => Some(Mode::Steady),
            Some("swap") => Some(Mode::Swap),
            Some(_) => None,
        }
    }
}

/// One run as the report needs it.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    workload: String,
    scenario: String,
    rep: u64,
    mode: Mode,
    /// The runner's verdict: quiet gate passed and little background load in the window.
    quiet: bool,
    background_pct: Option<f64>,
    pps: f64,
    /// Packets handed to the daemon's socket in the window (`id_sequence` advances after the
    /// queue-full check, so queue drops are not in it) minus netlink drops (`user_dropped`):
    /// what the daemon had to answer. None when no queue was bound (nothing queued by design).
    queued: Option<u64>,
    /// Packets per second arriving at the firewall's interfaces in the window (older records:
    /// what the generator sent per second over its whole run).
    offered_pps: Option<f64>,
    daemon_cpu_s: Option<f64>,
    window_s: f64,
    /// Whole-run totals (bind to exit of the sink).
    run_queued: Option<u64>,
    queue_dropped: u64,
    user_dropped: u64,
    socket_drops: u64,
    ct_drops: u64,
    /// Conntrack entries evicted to make room for new ones (`early_drop`, whole run): the table
    /// was full.
    ct_evictions: u64,
    /// Busy share (%) of the generator's CPU and of the firewall's CPU in the window (the
    /// runner records which is which); the saturated one is the bottleneck.
    gen_cpu_busy: Option<f64>,
    fw_cpu_busy: Option<f64>,
    /// Flows of an established-flow workload (None for new flows).
    flows: Option<u64>,
    /// UDP datagrams sent and received over the whole run (paced runs: the loss).
    sent: Option<u64>,
    received: Option<u64>,
    rate: Option<u64>,
    swap_s: Option<f64>,
    swap_ok: Option<bool>,
    /// The swap ended while the generator was still sending.
    swap_in_window: Option<bool>,
    /// Packets the dataplane dropped by decision (its counters as last reported to the
    /// controller; None without a dataplane).
    daemon_drops: Option<u64>,
}

impl Run {
    fn from_line(v: &Value) -> Option<Run> {
        let sink = &v["sink"];
        let gen_ = &v["gen"];
        let run = &sink["run"];
        let queues = sink["nfqueue"].as_array()?;
        let sum = |qs: &[Value], key: &str| qs.iter().filter_map(|q| q[key].as_u64()).sum::<u64>();
        let run_queues = run["nfqueue"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let new_flows = gen_["mode"].as_str() == Some("new_flows");
        Some(Run {
            workload: v["workload"].as_str()?.to_owned(),
            scenario: v["scenario"].as_str()?.to_owned(),
            rep: v["rep"].as_u64().unwrap_or(0),
            mode: Mode::parse(v["mode"].as_str())?,
            quiet: v["quiet"].as_bool().unwrap_or(false),
            background_pct: sink["background_pct"].as_f64(),
            pps: sink["pps"].as_f64()?,
            queued: (!queues.is_empty())
                .then(|| sum(queues, "queued").saturating_sub(sum(queues, "user_dropped"))),
            offered_pps: sink["arrived_pps"]
                .as_f64()
                .or_else(|| gen_["sent_pps"].as_f64()),
            daemon_cpu_s: sink["cpu_s"]["daemon"].as_f64(),
            window_s: sink["window_s"].as_f64()?,
            run_queued: (!run_queues.is_empty())
                .then(|| sum(run_queues, "queued").saturating_sub(sum(run_queues, "user_dropped"))),
            queue_dropped: sum(run_queues, "queue_dropped"),
            user_dropped: sum(run_queues, "user_dropped"),
            socket_drops: run["udp"]["rcvbuf_errors"].as_u64().unwrap_or(0),
            ct_drops: run["conntrack"]["drop"].as_u64().unwrap_or(0),
            ct_evictions: run["conntrack"]["early_drop"].as_u64().unwrap_or(0),
            gen_cpu_busy: v["gen_cpu"]
                .as_u64()
                .and_then(|c| sink["cpu_busy_pct"][format!("cpu{c}")].as_f64()),
            fw_cpu_busy: v["fw_cpu"]
                .as_u64()
                .and_then(|c| sink["cpu_busy_pct"][format!("cpu{c}")].as_f64()),
            flows: (!new_flows).then(|| gen_["flows"].as_u64()).flatten(),
            sent: gen_["sent"].as_u64(),
            received: run["received_udp"].as_u64(),
            rate: gen_["rate"].as_u64(),
            swap_s: v["swap"]["seconds"].as_f64(),
            swap_ok: v["swap"]["ok"].as_bool(),
            swap_in_window: v["swap"]["in_window"].as_bool(),
            daemon_drops: v["dataplane"]["decisions"].as_array().map(|ds| {
                ds.iter()
                    .filter(|d| d["verdict"].as_str() == Some("drop"))
                    .filter_map(|d| d["packets"].as_u64())
                    .sum()
            }),
        })
    }

    /// Daemon CPU microseconds per queued packet.
    fn us_per_queued(&self) -> Option<f64> {
        let cpu = self.daemon_cpu_s?;
        let queued = self.queued?;
        (queued > 0).then(|| cpu * 1e6 / queued as f64)
    }

    /// Packets queued per flow over the whole run (established-flow workloads).
    fn queued_per_flow(&self) -> Option<f64> {
        let flows = self.flows.filter(|f| *f > 0)?;
        Some(self.run_queued? as f64 / flows as f64)
    }

    /// Datagrams sent but never received (UDP, whole run).
    fn lost(&self) -> Option<u64> {
        Some(self.sent?.saturating_sub(self.received?))
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

fn kpps(x: f64) -> String {
    format!("{:.0}k", x / 1000.0)
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("–".to_owned(), |x| format!("{x:.digits$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// "median (min–max)" of `v` with `digits`, or "–".
fn spread(v: &[f64], digits: usize) -> String {
    match median(v.to_vec()) {
        Some(m) => {
            let (lo, hi) = min_max(v);
            format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
        }
        None => "–".into(),
    }
}

/// First-seen order of a key over the runs.
fn first_seen<'a>(runs: &'a [Run], key: impl Fn(&'a Run) -> &'a str) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for r in runs {
        let k = key(r);
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// The markdown report: for the saturating runs one table per workload, one row per scenario
/// (first-seen order) with medians over all runs and over the quiet runs; the offload ratio
/// (`meds` / `ctmark`) of the established-flow workloads; a table of the below-saturation runs
/// (steady and with a list swap) with every drop counter; and one line per run.
fn report(raw: &str) -> Result<String> {
    let mut runs = Vec::new();
    for (i, line) in raw
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value =
            serde_json::from_str(line).with_context(|| format!("line {}: not JSON", i + 1))?;
        runs.push(Run::from_line(&v).with_context(|| format!("line {}: not a run record", i + 1))?);
    }
    if runs.is_empty() {
        bail!("no runs");
    }
    let mut out = String::new();
    let sat: Vec<Run> = runs
        .iter()
        .filter(|r| r.mode == Mode::Saturating)
        .cloned()
        .collect();
    saturating_tables(&mut out, &sat);
    let paced: Vec<Run> = runs
        .iter()
        .filter(|r| r.mode != Mode::Saturating)
        .cloned()
        .collect();
    if !paced.is_empty() {
        paced_table(&mut out, &paced);
    }
    per_run_table(&mut out, &runs);
    Ok(out)
}

fn saturating_tables(out: &mut String, runs: &[Run]) {
    let scenarios = first_seen(runs, |r| r.scenario.as_str());
    for wl in first_seen(runs, |r| r.workload.as_str()) {
        let of = |sc: &str, quiet_only: bool| -> Vec<&Run> {
            runs.iter()
                .filter(|r| r.workload == wl && r.scenario == sc && (r.quiet || !quiet_only))
                .collect()
        };
        let med_pps =
            |sc: &str, quiet_only: bool| median(of(sc, quiet_only).iter().map(|r| r.pps).collect());
        let (kernel_all, kernel_quiet) = (med_pps("kernel", false), med_pps("kernel", true));
        let _ = writeln!(out, "\n### workload `{wl}`\n");
        let _ = writeln!(
            out,
            "| scenario | runs (quiet) | arriving pps | delivered pps, all runs: median (min–max) | quiet runs: median | vs kernel: all (quiet) | queued pps | daemon CPU % of a core | daemon µs per queued packet: median (min–max) | queued per flow, whole run | queue_dropped | user_dropped | socket drops | conntrack drops (evictions) | busy %: generator CPU / firewall CPU | background % of all CPUs |"
        );
        let _ = writeln!(
            out,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for sc in &scenarios {
            let rs = of(sc, false);
            if rs.is_empty() {
                continue;
            }
            let pps: Vec<f64> = rs.iter().map(|r| r.pps).collect();
            let (lo, hi) = min_max(&pps);
            let (all, quiet) = (median(pps.clone()), med_pps(sc, true));
            let n_quiet = rs.iter().filter(|r| r.quiet).count();
            let us: Vec<f64> = rs.iter().filter_map(|r| r.us_per_queued()).collect();
            let per_flow: Vec<f64> = rs.iter().filter_map(|r| r.queued_per_flow()).collect();
            let queued = median(
                rs.iter()
                    .filter_map(|r| Some(r.queued? as f64 / r.window_s))
                    .collect(),
            );
            let cpu_pct = median(
                rs.iter()
                    .filter_map(|r| Some(100.0 * r.daemon_cpu_s? / r.window_s))
                    .collect(),
            );
            let offered = median(rs.iter().filter_map(|r| r.offered_pps).collect());
            let background = median(rs.iter().filter_map(|r| r.background_pct).collect());
            let gen_busy = median(rs.iter().filter_map(|r| r.gen_cpu_busy).collect());
            let fw_busy = median(rs.iter().filter_map(|r| r.fw_cpu_busy).collect());
            let has_queue = rs.iter().any(|r| r.run_queued.is_some());
            let total = |f: fn(&Run) -> u64| -> String {
                if has_queue {
                    rs.iter().map(|r| f(r)).sum::<u64>().to_string()
                } else {
                    "–".into()
                }
            };
            let _ = writeln!(
                out,
                "| {sc} | {} ({n_quiet}) | {} | {} ({}–{}) | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} / {} | {} |",
                rs.len(),
                offered.map_or("–".into(), kpps),
                all.map_or("–".into(), kpps),
                kpps(lo),
                kpps(hi),
                quiet.map_or("–".into(), kpps),
                opt(ratio(all, kernel_all), 2),
                opt(ratio(quiet, kernel_quiet), 2),
                queued.map_or("–".into(), kpps),
                opt(cpu_pct, 0),
                spread(&us, 2),
                spread(&per_flow, 1),
                total(|r| r.queue_dropped),
                total(|r| r.user_dropped),
                rs.iter().map(|r| r.socket_drops).sum::<u64>(),
                rs.iter().map(|r| r.ct_drops).sum::<u64>(),
                rs.iter().map(|r| r.ct_evictions).sum::<u64>(),
                opt(gen_busy, 0),
                opt(fw_busy, 0),
                opt(background, 0),
            );
        }
        let (meds, ctmark) = (med_pps("meds", false), med_pps("ctmark", false));
        let established = runs.iter().any(|r| r.workload == wl && r.flows.is_some());
        if let Some(r) = ratio(meds, ctmark).filter(|_| established) {
            let quiet = ratio(med_pps("meds", true), med_pps("ctmark", true));
            // The ratio alone proves nothing about offload (when the generator's CPU is the
            // bottleneck, queueing everything can be as fast): show what reached the daemon.
            let per_flow = median(
                of("meds", false)
                    .iter()
                    .filter_map(|r| r.queued_per_flow())
                    .collect(),
            );
            let _ = writeln!(
                out,
                "\nOffload ratio `{wl}`: meds / ctmark = **{r:.2}** (all runs), {} (quiet runs); goal ≥ 0.90. meds queued {} packets per flow (median; offload at work: a handful).",
                opt(quiet, 2),
                opt(per_flow, 1)
            );
        }
        let meds_us: Vec<f64> = of("meds", false)
            .iter()
            .filter_map(|r| r.us_per_queued())
            .collect();
        if wl == "new"
            && let Some(m) = median(meds_us)
        {
            let _ = writeln!(
                out,
                "\nmeds daemon CPU per queued packet (`new`): **{m:.2} µs** (median); goal ≤ 2.0 µs."
            );
        }
    }
}

fn paced_table(out: &mut String, runs: &[Run]) {
    let _ = writeln!(
        out,
        "\n### Below saturation: drops without and during a full list swap\n"
    );
    let _ = writeln!(
        out,
        "| workload | scenario | run | runs (quiet) | target pps | delivered pps: median | sent (all runs) | lost = sent − received (all runs) | queue_dropped | user_dropped | socket drops | conntrack drops | daemon drops | swap seconds: median (min–max) | swaps applied (ended inside the window) |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for wl in first_seen(runs, |r| r.workload.as_str()) {
        for sc in first_seen(runs, |r| r.scenario.as_str()) {
            for mode in [Mode::Steady, Mode::Swap] {
                let rs: Vec<&Run> = runs
                    .iter()
                    .filter(|r| r.workload == wl && r.scenario == sc && r.mode == mode)
                    .collect();
                if rs.is_empty() {
                    continue;
                }
                let sum = |f: &dyn Fn(&Run) -> Option<u64>| -> String {
                    let v: Vec<u64> = rs.iter().filter_map(|r| f(r)).collect();
                    if v.is_empty() {
                        "–".into()
                    } else {
                        v.iter().sum::<u64>().to_string()
                    }
                };
                let swaps: Vec<f64> = rs.iter().filter_map(|r| r.swap_s).collect();
                let applied = rs.iter().filter(|r| r.swap_ok == Some(true)).count();
                let inside = rs
                    .iter()
                    .filter(|r| r.swap_ok == Some(true) && r.swap_in_window == Some(true))
                    .count();
                let _ = writeln!(
                    out,
                    "| {wl} | {sc} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    if mode == Mode::Swap { "swap" } else { "steady" },
                    rs.len(),
                    rs.iter().filter(|r| r.quiet).count(),
                    rs.iter()
                        .find_map(|r| r.rate)
                        .map_or("–".into(), |r| kpps(r as f64)),
                    median(rs.iter().map(|r| r.pps).collect()).map_or("–".into(), kpps),
                    sum(&|r| r.sent),
                    sum(&|r| r.lost()),
                    sum(&|r| r.run_queued.map(|_| r.queue_dropped)),
                    sum(&|r| r.run_queued.map(|_| r.user_dropped)),
                    sum(&|r| Some(r.socket_drops)),
                    sum(&|r| Some(r.ct_drops)),
                    sum(&|r| r.daemon_drops),
                    spread(&swaps, 1),
                    if mode == Mode::Swap {
                        format!("{applied}/{} ({inside})", rs.len())
                    } else {
                        "–".into()
                    },
                );
            }
        }
    }
}

fn per_run_table(out: &mut String, runs: &[Run]) {
    let _ = writeln!(out, "\n### Every run\n");
    let _ = writeln!(
        out,
        "| workload | scenario | mode | rep | quiet | background % | delivered pps | vs kernel (same rep) | daemon µs per queued packet | queued (window) | queued per flow (run) | queue_dropped (run) | user_dropped (run) | socket drops (run) | conntrack drops (run) | daemon drops |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in runs {
        let kernel = runs
            .iter()
            .find(|k| {
                k.scenario == "kernel"
                    && k.mode == Mode::Saturating
                    && k.workload == r.workload
                    && k.rep == r.rep
            })
            .map(|k| k.pps);
        let vs_kernel = if r.mode == Mode::Saturating {
            opt(ratio(Some(r.pps), kernel), 2)
        } else {
            "–".into()
        };
        let mode = match r.mode {
            Mode::Saturating => "sat",
            Mode::Steady => "steady",
            Mode::Swap => "swap",
        };
        let queue = |x: u64| r.run_queued.map_or("–".into(), |_| x.to_string());
        let _ = writeln!(
            out,
            "| {} | {} | {mode} | {} | {} | {} | {} | {vs_kernel} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.workload,
            r.scenario,
            r.rep,
            if r.quiet { "yes" } else { "no" },
            opt(r.background_pct, 0),
            kpps(r.pps),
            opt(r.us_per_queued(), 2),
            r.queued.map_or("–".into(), |q| q.to_string()),
            opt(r.queued_per_flow(), 1),
            queue(r.queue_dropped),
            queue(r.user_dropped),
            r.socket_drops,
            r.ct_drops,
            r.daemon_drops.map_or("–".into(), |d| d.to_string()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn stat_cpu_counts_fields_after_the_last_paren() {
        let line = "1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0";
        assert_eq!(parse_stat_cpu(line), Some(300));
        assert_eq!(parse_stat_cpu("1 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu(""), None);
    }

    #[test]
    fn nfqueue_lines() {
        let text =
            "    0  12345     3 2 65531     7     9   1000 1\n  1 0 0 2 65531 0 0 5 1\nbad line\n";
        let q = parse_nfqueue(text);
        assert_eq!(
            q.get(&0),
            Some(&QueueStats {
                queue_total: 3,
                queue_dropped: 7,
                user_dropped: 9,
                id_sequence: 1000
            })
        );
        assert_eq!(q.get(&1).map(|s| s.id_sequence), Some(5));
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn snmp_and_proc_stat() {
        let snmp = "Ip: Forwarding\nIp: 1\nUdp: InDatagrams NoPorts InErrors RcvbufErrors\nUdp: 10 2 3 4\nTcp: RtoMin InSegs\nTcp: 200 77\n";
        let u = parse_snmp(snmp, "Udp:");
        assert_eq!(u.get("InDatagrams"), Some(&10));
        assert_eq!(u.get("RcvbufErrors"), Some(&4));
        assert_eq!(parse_snmp(snmp, "Tcp:").get("InSegs"), Some(&77));
        assert!(parse_snmp("Tcp: InSegs\n", "Tcp:").is_empty());
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs|bytes\n    lo: 100 7 0 0 0 0 0 0 100 7 0 0 0 0 0 0\nmbf1: 6000 100 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n  eth0:60 5 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev_rx(dev), 105);
        assert_eq!(parse_net_dev_rx(""), 0);
        let stat = "cpu  10 0 10 70 10 0 0 0 0 0\ncpu0 5 0 5 35 5 0 0 0 0 0\nintr 1\n";
        let s = parse_proc_stat(stat);
        assert_eq!(s.get("cpu"), Some(&(20, 100)));
        assert_eq!(s.get("cpu0"), Some(&(10, 50)));
    }

    #[test]
    fn conntrack_stat_sums_cpus_by_column_name() {
        let text = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
            00000000  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000002 0000000a 00000010 00000000  00000000 00000000 00000000 00000000\n\
            00000000  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000001 00000001 00000000  00000000 00000000 00000000 00000000\n\
            garbage line\n";
        let c = parse_conntrack_stat(text);
        assert_eq!((c.insert_failed, c.drop, c.early_drop), (3, 11, 17));
        assert_eq!(parse_conntrack_stat(""), Conntrack::default());
        // Another column order (an older kernel) is read by name.
        let c = parse_conntrack_stat("drop entries early_drop\n5 0 6\n");
        assert_eq!((c.drop, c.early_drop, c.insert_failed), (5, 6, 0));
    }

    #[test]
    fn busy_share_between_samples() {
        assert_eq!(busy_pct((10, 100), (60, 200)), Some(50.0));
        assert_eq!(busy_pct((10, 100), (10, 100)), None);
        assert_eq!(busy_pct((10, 100), (5, 50)), None);
        assert_eq!(busy_pct((90, 100), (80, 200)), Some(0.0));
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN, 1.0]), Some(1.0));
    }

    #[test]
    fn named_pids() {
        assert_eq!(parse_named_pid("daemon=42"), Ok(("daemon".into(), 42)));
        for bad in ["42", "=42", "a b=1", "daemon=0", "daemon=x"] {
            assert!(parse_named_pid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usage_limits() {
        let run = |argv: &[&str]| {
            let mut full = vec!["meds-pktsink", "run", "--bind", "198.18.0.1:9000"];
            full.extend_from_slice(argv);
            match Cli::try_parse_from(full).unwrap().command {
                Command::Run(a) => check_run_args(&a).is_ok(),
                _ => unreachable!(),
            }
        };
        assert!(run(&["--warmup", "60", "--window", "60", "--tail", "30"]));
        assert!(!run(&["--warmup", "61"]));
        assert!(!run(&["--window", "0"]));
        assert!(!run(&["--tail", "31"]));
        let gate = |argv: &[&str]| {
            let mut full = vec!["meds-pktsink", "gate"];
            full.extend_from_slice(argv);
            match Cli::try_parse_from(full).unwrap().command {
                Command::Gate(a) => check_gate_args(&a).is_ok(),
                _ => unreachable!(),
            }
        };
        assert!(gate(&[]));
        assert!(gate(&[
            "--max-busy",
            "0",
            "--max-wait",
            "600",
            "--interval-ms",
            "100"
        ]));
        assert!(!gate(&["--max-busy", "101"]));
        assert!(!gate(&["--max-wait", "601"]));
        assert!(!gate(&["--interval-ms", "99"]));
    }

    #[test]
    fn gate_without_waiting_reports_one_sample() {
        let v = gate(&GateArgs {
            max_busy: 100.0,
            max_wait: 0,
            interval_ms: 100,
        });
        assert_eq!(v["samples"], 1);
        assert_eq!(v["quiet"], true, "{v}");
        let v = gate(&GateArgs {
            max_busy: 0.0,
            max_wait: 0,
            interval_ms: 100,
        });
        assert_eq!(v["samples"], 1, "{v}");
    }

    /// The intake counts UDP datagrams and TCP bytes on one port (loopback, no root needed).
    #[test]
    fn intake_counts_udp_and_tcp_on_one_port() {
        let args = RunArgs {
            bind: "127.0.0.1:0".parse().unwrap(),
            warmup: 0,
            window: 1,
            tail: 0,
            tcp: true,
            ready_file: None,
            pids: Vec::new(),
            rcvbuf_bytes: 1 << 20,
        };
        let mut intake = Intake::bind(&args).unwrap();
        let at = intake.udp.local_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..10 {
            client.send_to(b"0123456789", at).unwrap();
        }
        let mut tcp = TcpStream::connect(at).unwrap();
        tcp.write_all(&[7u8; 1000]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut datagrams = 0;
        while (datagrams < 10 || intake.tcp_bytes() < 1000) && Instant::now() < deadline {
            datagrams += intake.pump().unwrap();
        }
        assert_eq!((datagrams, intake.tcp_bytes()), (10, 1000));
        drop(tcp);
        let deadline = Instant::now() + Duration::from_secs(10);
        while intake.tcp.as_ref().is_some_and(|t| !t.conns.is_empty()) && Instant::now() < deadline
        {
            intake.pump().unwrap();
        }
        let t = intake.tcp.as_ref().unwrap();
        assert_eq!(
            (t.accepted, t.conns.len()),
            (1, 0),
            "closed connection kept"
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn line(
        wl: &str,
        sc: &str,
        rep: u64,
        mode: &str,
        pps: f64,
        queued: Option<u64>,
        cpu: Option<f64>,
        quiet: bool,
    ) -> String {
        let (queues, run_queues) = match queued {
            Some(q) => (
                json!([{"queue": 0, "queued": q, "queue_dropped": 1, "user_dropped": 0}]),
                json!([{"queue": 0, "queued": 64, "queue_dropped": 1, "user_dropped": 2}]),
            ),
            None => (json!([]), json!([])),
        };
        let mut v = json!({
            "workload": wl, "scenario": sc, "rep": rep, "mode": mode, "quiet": quiet,
            "gen_cpu": 0, "fw_cpu": 1,
            "gen": { "sent_pps": 700_000.0, "mode": "established", "flows": 32, "sent": 1000,
                     "rate": if mode == "sat" { Value::Null } else { json!(50_000) } },
            "sink": {
                "pps": pps, "window_s": 2.0, "delivered": 0,
                "cpu_s": { "daemon": cpu },
                "nfqueue": queues,
                "background_pct": 5.0,
                "cpu_busy_pct": { "cpu": 80.0, "cpu0": 100.0, "cpu1": 60.0 },
                "run": {
                    "nfqueue": run_queues,
                    "received_udp": 990,
                    "udp": { "rcvbuf_errors": 3 },
                    "conntrack": { "drop": 4, "early_drop": 7 }
                }
            }
        });
        if mode == "swap" {
            v["swap"] = json!({"ok": true, "seconds": 2.5, "in_window": true});
        }
        if sc == "meds" {
            v["dataplane"] = json!({"decisions": [
                {"verdict": "accept", "filter": "empty", "reason": "default", "packets": 900},
                {"verdict": "drop", "filter": "rate", "reason": "Limiter", "packets": 5},
            ]});
        }
        v.to_string()
    }

    #[test]
    fn report_medians_ratios_cost_and_drops() {
        let raw = [
            line("est", "kernel", 1, "sat", 400_000.0, None, None, true),
            line("est", "kernel", 2, "sat", 500_000.0, None, None, true),
            line("est", "kernel", 3, "sat", 600_000.0, None, None, false),
            line(
                "est",
                "floor",
                1,
                "sat",
                200_000.0,
                Some(400_000),
                Some(1.2),
                true,
            ),
            line(
                "est",
                "floor",
                2,
                "sat",
                250_000.0,
                Some(500_000),
                Some(1.5),
                false,
            ),
            line("est", "ctmark", 1, "sat", 400_000.0, None, None, true),
            line("est", "meds", 1, "sat", 380_000.0, Some(0), Some(0.0), true),
            line(
                "est",
                "meds",
                1,
                "steady",
                50_000.0,
                Some(100_000),
                Some(0.1),
                true,
            ),
            line(
                "est",
                "meds",
                1,
                "swap",
                50_000.0,
                Some(100_000),
                Some(0.2),
                false,
            ),
        ]
        .join("\n");
        let table = report(&raw).unwrap();
        assert!(
            table.contains("| kernel | 3 (2) | 700k | 500k (400k–600k) | 450k | 1.00 (1.00) | – | – | – | – | – | – | 9 | 12 (21) | 100 / 60 | 5 |"),
            "{table}"
        );
        // floor: median pps 225k / 500k = 0.45 (quiet: 200k / 450k = 0.44); 3.0 µs per queued
        // packet in both runs; 62 queued (64 − 2 netlink drops) / 32 flows per run.
        assert!(
            table.contains(
                "| floor | 2 (1) | 700k | 225k (200k–250k) | 200k | 0.45 (0.44) | 225k | 68 | 3.00 (3.00–3.00) | 1.9 (1.9–1.9) | 2 | 4 | 6 | 8 (14) | 100 / 60 | 5 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("meds / ctmark = **0.95** (all runs), 0.95 (quiet runs); goal ≥ 0.90. meds queued 1.9 packets per flow"),
            "{table}"
        );
        // Paced runs: their own table, sums of every drop counter, the swap time.
        assert!(
            table.contains(
                "| est | meds | steady | 1 (1) | 50k | 50k | 1000 | 10 | 1 | 2 | 3 | 4 | 5 | – | – |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| est | meds | swap | 1 (0) | 50k | 50k | 1000 | 10 | 1 | 2 | 3 | 4 | 5 | 2.5 (2.5–2.5) | 1/1 (1) |"),
            "{table}"
        );
        // Per run: the ratio to the kernel run of the same repetition.
        assert!(
            table.contains("| est | floor | sat | 2 | no | 5 | 250k | 0.50 | 3.00 | 500000 | 1.9 | 1 | 2 | 3 | 4 | – |"),
            "{table}"
        );
        assert!(report("").is_err());
        assert!(report("{}").is_err());
        assert!(report(r#"{"workload":"est","scenario":"x","mode":"odd","sink":{"pps":1,"window_s":1,"nfqueue":[]}}"#).is_err());
    }

    #[test]
    fn new_flow_cost_line() {
        let mut l = [
            line(
                "new",
                "meds",
                1,
                "sat",
                100_000.0,
                Some(200_000),
                Some(0.3),
                true,
            ),
            line("new", "ctmark", 1, "sat", 100_000.0, None, None, true),
        ]
        .join("\n");
        l = l.replace("\"established\"", "\"new_flows\"");
        let table = report(&l).unwrap();
        // Offload means nothing when every packet is a new flow.
        assert!(!table.contains("Offload ratio"), "{table}");
        assert!(table.contains("(`new`): **1.50 µs**"), "{table}");
        // No per-flow count for new flows.
        assert!(table.contains("| 1.50 (1.50–1.50) | – |"), "{table}");
    }
}
