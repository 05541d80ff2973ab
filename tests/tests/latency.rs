//! Policy latency: how soon after `medsctl blacklist add` a blocked peer's packets stop being
//! answered. Reported, not asserted (only correctness is: every trial drops within 5 s).
//!
//! Each trial: the peer sends a UDP probe every ~1 ms (a fresh socket, hence a fresh source
//! port and conntrack entry, per probe; 20 ms reply timeout) → `medsctl blacklist add` (T0 when
//! it returns) → the first of 3 consecutive unanswered probes marks T_drop → remove, wait until
//! answered again. Figures go to stdout, stderr and `target/e2e-figures.txt`.
//!
//! Needs root, `ip`, `iptables`/`ip6tables` and `ping`; skips otherwise (fails instead with
//! MEDS_E2E_REQUIRE=1). `MEDS_E2E_LATENCY_TRIALS` overrides the number of trials (>= 50).

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use meds_e2e::medsctl::List;
use meds_e2e::stats::{Summary, summarize};
use meds_e2e::topology::{FW4, PEER4};
use meds_e2e::traffic::{PROBE_TIMEOUT, udp_echo};
use meds_e2e::{Bed, eventually};

const DEFAULT_TRIALS: usize = 50;
const ENTRY: &str = "203.0.113.2/32";
const PROBE_PERIOD: Duration = Duration::from_millis(1);
const REPLY_TIMEOUT: Duration = Duration::from_millis(20);
/// Unanswered probes in a row that count as "dropped" (blocking is monotonic within a trial).
const CONFIRM_MISSES: u32 = 3;
/// Answered probes before the trial's `add` is issued.
const WARM_ANSWERS: u32 = 5;
/// The correctness bound: every trial must drop this soon after `add` returned.
const DROP_DEADLINE: Duration = Duration::from_secs(5);
/// A prober gives up after this long.
const PROBER_LIMIT: Duration = Duration::from_secs(15);
/// Trials discarded because answers went missing before the `add` (a loaded machine), at most.
const MAX_DISCARDED: usize = 10;

/// Sets the flag when dropped, so a prober never outlives a failed trial by long.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs inside the peer namespace. Returns the send time of the first probe of the final run of
/// [`CONFIRM_MISSES`] unanswered probes, or None if answers never stopped.
fn prober(ready: mpsc::Sender<()>, stop: Arc<AtomicBool>) -> Result<Option<Instant>> {
    let (src, dst): (IpAddr, IpAddr) = (PEER4.into(), FW4.into());
    let start = Instant::now();
    let (mut answered, mut misses, mut first_miss) = (0u32, 0u32, None);
    while start.elapsed() < PROBER_LIMIT && !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        if udp_echo(src, dst, REPLY_TIMEOUT)? {
            answered += 1;
            misses = 0;
            first_miss = None;
            if answered == WARM_ANSWERS {
                let _ = ready.send(());
            }
            // Pace to one probe per period (this is the probe rate, not a wait for a result).
            std::thread::sleep((sent + PROBE_PERIOD).saturating_duration_since(Instant::now()));
        } else {
            first_miss.get_or_insert(sent);
            misses += 1;
            if misses >= CONFIRM_MISSES && answered >= WARM_ANSWERS {
                return Ok(first_miss);
            }
        }
    }
    Ok(None)
}

/// `a - b` in milliseconds, negative when `a` is earlier.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    if a >= b {
        (a - b).as_secs_f64() * 1e3
    } else {
        -((b - a).as_secs_f64() * 1e3)
    }
}

#[derive(Default)]
struct Samples {
    add_wall: Vec<f64>,
    start_to_drop: Vec<f64>,
    return_to_drop: Vec<f64>,
    discarded: usize,
}

fn trial(bed: &Bed, n: usize, samples: &mut Samples) -> Result<()> {
    let (src, dst): (IpAddr, IpAddr) = (PEER4.into(), FW4.into());
    eventually(Duration::from_secs(5), "the peer is answered again", || {
        if bed
            .topo
            .peer
            .enter(|| udp_echo(src, dst, PROBE_TIMEOUT))??
        {
            Ok(())
        } else {
            bail!("UDP probe unanswered")
        }
    })?;
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let guard = StopOnDrop(Arc::clone(&stop));
    let handle = bed.topo.peer.spawn(move || prober(tx, stop))?;
    rx.recv_timeout(Duration::from_secs(5))
        .map_err(|_| anyhow!("trial {n}: the peer's probes were not answered before the add"))?;
    let t_start = Instant::now();
    let change = bed.ctl.add(List::Blacklist, &[ENTRY])?;
    let t0 = Instant::now();
    ensure!(
        change.changed == 1 && change.applied,
        "trial {n}: add {ENTRY}: {change:?}"
    );
    let drop_at = handle
        .join()
        .map_err(|_| anyhow!("trial {n}: prober panicked"))???;
    drop(guard);
    let c = bed.ctl.remove(List::Blacklist, &[ENTRY])?;
    ensure!(
        c.changed == 1 && c.applied,
        "trial {n}: remove {ENTRY}: {c:?}"
    );
    let Some(drop_at) = drop_at else {
        bail!("trial {n}: probes were still answered {PROBER_LIMIT:?} after the add");
    };
    if drop_at < t_start {
        samples.discarded += 1;
        ensure!(
            samples.discarded <= MAX_DISCARDED,
            "{} trials lost answers before any add: the machine is too loaded to measure",
            samples.discarded
        );
        return Ok(());
    }
    ensure!(
        drop_at <= t0 + DROP_DEADLINE,
        "trial {n}: first dropped probe {:.1} ms after add returned",
        signed_ms(drop_at, t0)
    );
    samples.add_wall.push(signed_ms(t0, t_start));
    samples.start_to_drop.push(signed_ms(drop_at, t_start));
    samples.return_to_drop.push(signed_ms(drop_at, t0));
    Ok(())
}

fn line(label: &str, s: Option<Summary>) -> String {
    match s {
        Some(s) => format!("  {label:<48} {s}"),
        None => format!("  {label:<48} no samples"),
    }
}

#[test]
fn policy_latency_from_medsctl_to_dropped_packets() -> Result<()> {
    Bed::run("latency", |bed| {
        let trials = std::env::var("MEDS_E2E_LATENCY_TRIALS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_TRIALS)
            .max(DEFAULT_TRIALS);
        let mut samples = Samples::default();
        while samples.add_wall.len() < trials {
            trial(
                bed,
                samples.add_wall.len() + samples.discarded,
                &mut samples,
            )?;
        }
        let live_before_return = samples.return_to_drop.iter().filter(|d| **d <= 0.0).count();
        let report = [
            format!(
                "Meds e2e policy latency: {trials} trials; UDP probe every {PROBE_PERIOD:?} from the \
                 peer (fresh source port each), reply timeout {REPLY_TIMEOUT:?}, drop = first of \
                 {CONFIRM_MISSES} consecutive unanswered probes"
            ),
            line("medsctl blacklist add, wall time:", summarize(&samples.add_wall)),
            line("add started -> first dropped probe:", summarize(&samples.start_to_drop)),
            line("add returned (T0) -> first dropped probe:", summarize(&samples.return_to_drop)),
            format!(
                "  rule live before medsctl returned: {live_before_return}/{} trials (<= 0 ms above)",
                samples.return_to_drop.len()
            ),
            format!("  discarded trials (answers lost before the add): {}", samples.discarded),
        ]
        .join("\n");
        println!("{report}");
        eprintln!("{report}");
        let path = bed.bins.figures_path("e2e-figures.txt");
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
        writeln!(f, "{report}")?;
        eprintln!("figures written to {}", path.display());
        Ok(())
    })
}
