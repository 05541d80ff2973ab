//! `meds-pktsink`: the receiving end and the bookkeeper of `tests/bench.sh`.
//!
//! * `meds-pktsink run`: binds a UDP socket, drains it with `recvmmsg`, discards `--warmup`
//!   seconds, then counts the datagrams delivered in a fixed `--window` and prints one JSON line
//!   with, over exactly that window: delivered packets and pps; CPU seconds (user + system, all
//!   threads, from `/proc/PID/stat`) of every `--pid NAME=PID` and of itself; the per-queue
//!   deltas of `/proc/net/netfilter/nfnetlink_queue` (packets queued, queue and netlink drops);
//!   UDP receive errors from `/proc/net/snmp`; and the busy share of each CPU from `/proc/stat`
//!   (machine-wide: it shows background load from outside the bench). The `/proc/net` files are
//!   those of the network namespace the sink runs in (the firewall's).
//! * `meds-pktsink report RAW.jsonl`: reads the runner's raw lines and prints the markdown table
//!   of medians (see [`report`]).
//!
//! Bounded: the run lasts warmup + window (each ≤ 60 s) and never waits longer than that.
//! Exit codes: 0 done, 2 usage error, 1 runtime error.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::mem;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

const MAX_SECONDS: u64 = 60;
const BATCH: usize = 64;
const SLOT: usize = 2048;
const RECV_TIMEOUT: Duration = Duration::from_millis(50);

#[derive(Debug, Parser)]
#[command(about = "Receiver and report of the Meds packet-rate bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Count delivered datagrams in a fixed window; print one JSON line.
    Run(RunArgs),
    /// Print the markdown table of medians from the runner's raw JSON lines.
    Report {
        /// The runner's raw.jsonl.
        raw: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// UDP address to receive on.
    #[arg(long)]
    bind: SocketAddrV4,
    /// Seconds received but not counted before the window (0..=60).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Seconds counted (1..=60).
    #[arg(long, default_value_t = 5)]
    window: u64,
    /// A process whose CPU time to measure, as NAME=PID (repeat).
    #[arg(long = "pid", value_parser = parse_named_pid)]
    pids: Vec<(String, u32)>,
    /// Socket receive buffer to request (SO_RCVBUFFORCE, else SO_RCVBUF).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    rcvbuf_bytes: usize,
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
    let result = match cli.command {
        Command::Run(args) => run(&args).map(|v| v.to_string()),
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

/// Everything sampled at the start and at the end of the window.
#[derive(Debug)]
struct Sample {
    at: Instant,
    cpu_ticks: BTreeMap<String, Option<u64>>,
    queues: BTreeMap<u32, QueueStats>,
    udp: BTreeMap<String, u64>,
    cpus: BTreeMap<String, (u64, u64)>,
}

impl Sample {
    fn take(pids: &[(String, u32)]) -> Sample {
        let mut cpu_ticks = BTreeMap::new();
        for (name, pid) in pids {
            cpu_ticks.insert(name.clone(), proc_cpu_ticks(&format!("/proc/{pid}/stat")));
        }
        cpu_ticks.insert("sink".into(), proc_cpu_ticks("/proc/self/stat"));
        Sample {
            at: Instant::now(),
            cpu_ticks,
            queues: read_to_string("/proc/net/netfilter/nfnetlink_queue")
                .map(|t| parse_nfqueue(&t))
                .unwrap_or_default(),
            udp: read_to_string("/proc/net/snmp")
                .map(|t| parse_snmp(&t, "Udp:"))
                .unwrap_or_default(),
            cpus: read_to_string("/proc/stat")
                .map(|t| parse_proc_stat(&t))
                .unwrap_or_default(),
        }
    }
}

fn read_to_string(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn run(a: &RunArgs) -> Result<Value> {
    if a.warmup > MAX_SECONDS {
        bail!("--warmup must be 0..={MAX_SECONDS}");
    }
    if !(1..=MAX_SECONDS).contains(&a.window) {
        bail!("--window must be 1..={MAX_SECONDS}");
    }
    let sock = UdpSocket::bind(a.bind).with_context(|| format!("bind {}", a.bind))?;
    set_rcvbuf(&sock, a.rcvbuf_bytes).context("set the receive buffer")?;
    sock.set_read_timeout(Some(RECV_TIMEOUT))
        .context("set the receive timeout")?;
    let mut rx = Receiver::new();
    let start = Instant::now();
    let warm_end = start + Duration::from_secs(a.warmup);
    while Instant::now() < warm_end {
        rx.recv(&sock)?;
    }
    let before = Sample::take(&a.pids);
    let window_end = before.at + Duration::from_secs(a.window);
    let mut delivered = 0u64;
    while Instant::now() < window_end {
        delivered += rx.recv(&sock)?;
    }
    let after = Sample::take(&a.pids);
    Ok(window_report(&before, &after, delivered))
}

/// The JSON line of one window.
fn window_report(before: &Sample, after: &Sample, delivered: u64) -> Value {
    let secs = after.at.duration_since(before.at).as_secs_f64();
    let tck = clock_ticks_per_second();
    let mut cpu = serde_json::Map::new();
    for (name, b) in &before.cpu_ticks {
        let delta = match (b, after.cpu_ticks.get(name).copied().flatten()) {
            (Some(b), Some(a)) if a >= *b => Some((a - b) as f64 / tck),
            _ => None, // the process was gone (or unreadable) at one end
        };
        cpu.insert(name.clone(), json!(delta));
    }
    let mut queues = Vec::new();
    for (num, a) in &after.queues {
        let b = before.queues.get(num).copied().unwrap_or_default();
        queues.push(json!({
            "queue": num,
            "queued": a.id_sequence.wrapping_sub(b.id_sequence),
            "queue_dropped": a.queue_dropped.saturating_sub(b.queue_dropped),
            "user_dropped": a.user_dropped.saturating_sub(b.user_dropped),
            "queue_total_end": a.queue_total,
        }));
    }
    let udp_delta = |key: &str| {
        let b = before.udp.get(key).copied().unwrap_or(0);
        after.udp.get(key).map(|a| a.saturating_sub(b))
    };
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
            cpus.insert(name.clone(), json!((pct * 10.0).round() / 10.0));
        }
    }
    json!({
        "window_s": secs,
        "delivered": delivered,
        "pps": if secs > 0.0 { delivered as f64 / secs } else { 0.0 },
        "cpu_s": cpu,
        "nfqueue": queues,
        "udp": {
            "in_datagrams": udp_delta("InDatagrams"),
            "rcvbuf_errors": udp_delta("RcvbufErrors"),
            "in_errors": udp_delta("InErrors"),
            "no_ports": udp_delta("NoPorts"),
        },
        "cpu_busy_pct": cpus,
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

    /// One `recvmmsg`: how many datagrams arrived (0 on timeout).
    fn recv(&mut self, sock: &UdpSocket) -> Result<u64> {
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
                libc::MSG_WAITFORONE,
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
        out.insert(name.to_owned(), (total - idle, total));
    }
    out
}

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

/// One run as the report needs it.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    workload: String,
    scenario: String,
    pps: f64,
    /// Packets handed to the daemon's socket (`id_sequence` advances after the queue-full
    /// check, so queue drops are not in it) minus netlink drops (`user_dropped`): what the
    /// daemon had to answer. None when no queue was bound (nothing queued by design).
    queued: Option<u64>,
    /// What the generator sent per second over its whole run.
    offered_pps: Option<f64>,
    nfq_drops: u64,
    daemon_cpu_s: Option<f64>,
    window_s: f64,
    host_busy_pct: Option<f64>,
}

impl Run {
    fn from_line(v: &Value) -> Option<Run> {
        let sink = &v["sink"];
        let queues = sink["nfqueue"].as_array()?;
        let sum = |key: &str| queues.iter().filter_map(|q| q[key].as_u64()).sum::<u64>();
        Some(Run {
            workload: v["workload"].as_str()?.to_owned(),
            scenario: v["scenario"].as_str()?.to_owned(),
            pps: sink["pps"].as_f64()?,
            queued: (!queues.is_empty()).then(|| sum("queued").saturating_sub(sum("user_dropped"))),
            offered_pps: v["gen"]["sent_pps"].as_f64(),
            nfq_drops: sum("queue_dropped") + sum("user_dropped"),
            daemon_cpu_s: sink["cpu_s"]["daemon"].as_f64(),
            window_s: sink["window_s"].as_f64()?,
            host_busy_pct: sink["cpu_busy_pct"]["cpu"].as_f64(),
        })
    }

    /// Daemon CPU microseconds per queued packet.
    fn us_per_queued(&self) -> Option<f64> {
        let cpu = self.daemon_cpu_s?;
        let queued = self.queued?;
        (queued > 0).then(|| cpu * 1e6 / queued as f64)
    }
}

/// The markdown report: one table per workload, one row per scenario (in first-seen order),
/// with medians over the runs. Ratios divide medians by the median of scenario `kernel` of the
/// same workload.
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
    let mut workloads: Vec<&str> = Vec::new();
    let mut scenarios: Vec<&str> = Vec::new();
    for r in &runs {
        if !workloads.contains(&r.workload.as_str()) {
            workloads.push(&r.workload);
        }
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    let fmt =
        |x: Option<f64>, digits: usize| x.map_or("–".to_owned(), |x| format!("{x:.digits$}"));
    let kpps = |x: f64| format!("{:.0}k", x / 1000.0);
    let mut out = String::new();
    for wl in workloads {
        let of = |sc: &str| -> Vec<&Run> {
            runs.iter()
                .filter(|r| r.workload == wl && r.scenario == sc)
                .collect()
        };
        let kernel = median(of("kernel").iter().map(|r| r.pps).collect());
        let _ = writeln!(out, "\n### workload `{wl}`\n");
        let _ = writeln!(
            out,
            "| scenario | runs | offered pps | delivered pps, median (min–max) | vs kernel | queued pps | daemon CPU % of a core | daemon µs per queued packet, median (min–max) | NFQUEUE drops (all runs) | host CPU busy, % of all CPUs |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
        for sc in &scenarios {
            let rs = of(sc);
            if rs.is_empty() {
                continue;
            }
            let pps: Vec<f64> = rs.iter().map(|r| r.pps).collect();
            let (lo, hi) = min_max(&pps);
            let med = median(pps.clone());
            let us: Vec<f64> = rs.iter().filter_map(|r| r.us_per_queued()).collect();
            let (us_lo, us_hi) = min_max(&us);
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
            let drops: u64 = rs.iter().map(|r| r.nfq_drops).sum();
            let offered = median(rs.iter().filter_map(|r| r.offered_pps).collect());
            let busy = median(rs.iter().filter_map(|r| r.host_busy_pct).collect());
            let ratio = match (med, kernel) {
                (Some(m), Some(k)) if k > 0.0 => format!("{:.2}", m / k),
                _ => "–".into(),
            };
            let us_cell = match median(us.clone()) {
                Some(m) => format!("{m:.2} ({us_lo:.2}–{us_hi:.2})"),
                None => "–".into(),
            };
            let _ = writeln!(
                out,
                "| {sc} | {} | {} | {} ({}–{}) | {ratio} | {} | {} | {us_cell} | {drops} | {} |",
                rs.len(),
                offered.map_or("–".into(), kpps),
                med.map_or("–".into(), kpps),
                kpps(lo),
                kpps(hi),
                queued.map_or("–".into(), kpps),
                fmt(cpu_pct, 0),
                fmt(busy, 0),
            );
        }
    }
    Ok(out)
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let snmp = "Ip: Forwarding\nIp: 1\nUdp: InDatagrams NoPorts InErrors RcvbufErrors\nUdp: 10 2 3 4\n";
        let u = parse_snmp(snmp, "Udp:");
        assert_eq!(u.get("InDatagrams"), Some(&10));
        assert_eq!(u.get("RcvbufErrors"), Some(&4));
        let stat = "cpu  10 0 10 70 10 0 0 0 0 0\ncpu0 5 0 5 35 5 0 0 0 0 0\nintr 1\n";
        let s = parse_proc_stat(stat);
        assert_eq!(s.get("cpu"), Some(&(20, 100)));
        assert_eq!(s.get("cpu0"), Some(&(10, 50)));
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn named_pids() {
        assert_eq!(parse_named_pid("daemon=42"), Ok(("daemon".into(), 42)));
        for bad in ["42", "=42", "a b=1", "daemon=0", "daemon=x"] {
            assert!(parse_named_pid(bad).is_err(), "{bad}");
        }
    }

    fn line(wl: &str, sc: &str, pps: f64, queued: Option<u64>, cpu: Option<f64>) -> String {
        let queues = match queued {
            Some(q) => json!([{"queue": 0, "queued": q, "queue_dropped": 1, "user_dropped": 0}]),
            None => json!([]),
        };
        json!({
            "workload": wl, "scenario": sc, "rep": 1,
            "gen": { "sent_pps": 700_000.0 },
            "sink": {
                "pps": pps, "window_s": 2.0, "delivered": 0,
                "cpu_s": { "daemon": cpu },
                "nfqueue": queues,
                "cpu_busy_pct": { "cpu": 50.0 }
            }
        })
        .to_string()
    }

    #[test]
    fn report_medians_ratios_and_cost() {
        let raw = [
            line("est", "kernel", 400_000.0, None, None),
            line("est", "kernel", 500_000.0, None, None),
            line("est", "kernel", 600_000.0, None, None),
            line("est", "floor", 200_000.0, Some(400_000), Some(1.2)),
            line("est", "floor", 250_000.0, Some(500_000), Some(1.5)),
        ]
        .join("\n");
        let table = report(&raw).unwrap();
        assert!(
            table.contains("| kernel | 3 | 700k | 500k (400k–600k) | 1.00 | – | – | – | 0 | 50 |"),
            "{table}"
        );
        // floor: median pps 225k / 500k = 0.45; 3.0 µs per queued packet in both runs.
        assert!(
            table.contains(
                "| floor | 2 | 700k | 225k (200k–250k) | 0.45 | 225k | 68 | 3.00 (3.00–3.00) | 2 | 50 |"
            ),
            "{table}"
        );
        assert!(report("").is_err());
        assert!(report("{}").is_err());
    }
}
