//! meds-dataplane: the privileged half of Meds. It binds an NFQUEUE, installs the iptables and
//! ip6tables rules that feed it, and gives every queued packet an ACCEPT/DROP verdict from an
//! immutable rule set that the controller streams to it over a Unix socket.
//!
//! * The engine, pure and free of tokio/tonic/netlink: [`packet`] (parse hostile bytes),
//!   [`lists`] (prefix sets, the IP-to-ASN table, ASN and country sets, label-aware domain
//!   suffix sets, fingerprint sets), [`chain`] (the rule set of per-list components and its
//!   decisions), [`counters`], and the payload side: [`dns`] (question names and CNAME
//!   targets), [`tls`] (ClientHello, SNI, JA3, JA4), [`flow`] (bounded reassembly of
//!   ClientHellos split over TCP segments) and [`inspect`], the one engine that runs all of
//!   them for a packet, shared by the worker and `replay`; [`explain`] walks the chain step by
//!   step for a hypothetical packet (`medsctl explain`).
//! * The runtime around it: [`nfqueue`] + [`worker`] (one blocking OS thread per queue, no
//!   locks, no logging per packet; verdicts batched and carrying the [`offload`] marks),
//!   [`ratelimit`] (per-source token buckets shared by the workers), [`firewall`] (iptables
//!   rules), [`conntrack`] + [`revoke`] (offloaded flows re-marked when their source is
//!   blocked later), [`policy`] (master copy, live rule set, state file), [`sync`] (the gRPC
//!   client), [`config`] (flags).
//! * [`replay`]: `meds-dataplane replay FILE`, the engine run offline over a pcap/pcapng capture
//!   (unprivileged; one JSON line per packet).
//!
//! [`run`] is the whole daemon; `main.rs` only parses flags, sets up logging and signals.
//! The dataplane never touches SQLite, HTTP or the internet, and keeps enforcing its last
//! policy while the controller is away (also across restarts, through the state file).

pub mod chain;
pub mod config;
pub mod conntrack;
pub mod counters;
pub mod dns;
pub mod events;
pub mod explain;
pub mod firewall;
pub mod flow;
pub mod inspect;
pub mod lists;
mod netlink;
pub mod nfqueue;
pub mod offload;
pub mod packet;
pub mod policy;
pub mod procfs;
pub mod ratelimit;
pub mod replay;
pub mod revoke;
pub mod sync;
pub mod tls;
pub mod worker;

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use arc_swap::ArcSwap;
use meds_proto::pb;
use tokio::sync::{mpsc, watch};

use crate::chain::RuleSet;
use crate::config::Config;
use crate::counters::Counters;
use crate::firewall::{Firewall, FirewallError};
use crate::inspect::Inspector;
use crate::nfqueue::{NfQueue, NfQueueError, QueueConfig};
use crate::policy::PolicyStore;
use crate::ratelimit::RateLimiter;
use crate::revoke::Revoker;
use crate::sync::{QueueRuleCounts, StatsSources, SyncClient, SyncConfig};

/// The state file is written at most this often (always the latest policy).
pub const STATE_WRITE_INTERVAL: Duration = Duration::from_secs(1);
/// How long shutdown waits for the control tasks (final state-file write included).
const CONTROL_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the dataplane could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot bind NFQUEUE {queue_num}")]
    Queue {
        queue_num: u16,
        #[source]
        source: NfQueueError,
    },
    #[error("cannot install the firewall rules")]
    FirewallInstall(#[source] FirewallError),
    #[error("cannot remove the firewall rules")]
    FirewallRemove(#[source] FirewallError),
    #[error("cannot start the worker thread for queue {queue_num}")]
    WorkerSpawn {
        queue_num: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up payload inspection")]
    Inspect(#[source] crate::inspect::InspectConfigError),
    #[error("cannot start the revocation thread")]
    RevokeSpawn(#[source] std::io::Error),
    #[error("cannot start the control runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot start the drop-event thread")]
    EventsSpawn(#[source] std::io::Error),
    #[error("the worker for queue {0} stopped unexpectedly")]
    WorkerExited(u16),
    #[error("the worker for queue {0} panicked")]
    WorkerPanicked(u16),
}

/// Run the dataplane until `shutdown` resolves (or a queue worker dies).
///
/// Start-up, in order: load the state file (a bad one is logged and ignored) and enforce it;
/// bind the NFQUEUEs `queue_num..queue_num + readers` (fatal on failure); install the firewall
/// rules; start one worker thread `meds-queue-N` per queue (pinned to a CPU unless
/// `--no-pin-readers`); start the revocation thread `meds-revoke` (with offload); run the sync
/// client, the state-file writer and the rate limiter's sweep on a small tokio runtime.
/// Shutdown: remove the firewall rules first, then stop and join the threads, then stop the
/// control tasks (the last state is written). The rules are also removed when a later start
/// step fails, and on unwinding.
pub fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let live = Arc::new(ArcSwap::from_pointee(RuleSet::empty()));
    let store = Arc::new(PolicyStore::new(Arc::clone(&live)));
    restore_state(&store, &config.state_file);

    let first = config.queue.queue_num;
    let mut queues = Vec::with_capacity(usize::from(config.readers));
    for i in 0..config.readers {
        // Config validated that the range fits in u16.
        let queue_num = first.saturating_add(i);
        let queue_config = QueueConfig {
            queue_num,
            ..config.queue
        };
        let queue =
            NfQueue::open(&queue_config).map_err(|source| RunError::Queue { queue_num, source })?;
        tracing::info!(
            queue = queue.queue_num(),
            rcvbuf_bytes = queue.effective_rcvbuf(),
            max_len = config.queue.max_len,
            copy_range = config.queue.copy_range,
            fail_open = config.queue.fail_open,
            gso = config.queue.gso,
            "NFQUEUE bound"
        );
        queues.push(queue);
    }
    let limiter = config.rate_limit.map(|c| Arc::new(RateLimiter::new(c)));
    let mut inspectors = Vec::with_capacity(queues.len());
    for _ in &queues {
        let inspector = Inspector::new(config.inspect).map_err(RunError::Inspect)?;
        inspectors.push(match &limiter {
            Some(limiter) => inspector.with_limiter(Arc::clone(limiter)),
            None => inspector,
        });
    }
    // Opened before the rules exist: a missing ctnetlink shows at start, not at the first
    // policy change. Without it offloaded flows are still correct, only not revoked.
    let revoker = match config.offload {
        Some(marks) => match Revoker::open(marks) {
            Ok(revoker) => Some(revoker),
            Err(e) => {
                tracing::error!(
                    error = %ErrorChain(&e),
                    "cannot open ctnetlink: offloaded flows will not be revoked when their \
                     source is blocked later"
                );
                None
            }
        },
        None => None,
    };

    let firewall = Firewall::new(config.rules.clone());
    // `install` cleans up after itself when it fails.
    firewall.install().map_err(RunError::FirewallInstall)?;
    let mut running = Running {
        firewall: &firewall,
        rules_installed: true,
        stop: Arc::new(AtomicBool::new(false)),
        threads: Vec::new(),
    };

    let counters = Arc::new(Counters::new());
    let cpus = if config.pin_readers {
        allowed_cpus()
    } else {
        Vec::new()
    };
    let (worker_done_tx, mut worker_done_rx) = mpsc::unbounded_channel::<u16>();
    // Sampled drop events: workers -> `meds-events` (log, rate-limited) -> sync client.
    let (event_tx, event_rx) = events::channel();
    let (batch_tx, batch_rx) = mpsc::channel(events::FORWARD_CAPACITY);
    for (i, (queue, inspector)) in queues.into_iter().zip(inspectors).enumerate() {
        let queue_num = queue.queue_num();
        let live = Arc::clone(&live);
        let counters = Arc::clone(&counters);
        let stop = Arc::clone(&running.stop);
        let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
        let done = WorkerDone {
            queue_num,
            tx: worker_done_tx.clone(),
        };
        let worker_config = worker::WorkerConfig {
            marks: config.offload,
            recv_batch: config.recv_batch,
        };
        let sampler = events::Sampler::new(event_tx.clone(), config.event_rate, queue_num);
        let handle = thread::Builder::new()
            .name(format!("meds-queue-{queue_num}"))
            .spawn(move || {
                // Dropped when the worker returns or unwinds: tells the runtime it ended.
                let _done = done;
                if let Some(cpu) = cpu {
                    pin_to_cpu(queue_num, cpu);
                }
                worker::run(
                    queue,
                    live,
                    counters,
                    inspector,
                    stop,
                    worker_config,
                    sampler,
                );
            })
            .map_err(|source| RunError::WorkerSpawn { queue_num, source })?;
        running.threads.push((Some(queue_num), handle));
    }
    drop(worker_done_tx);
    // The consumer ends when the last worker's sender is gone.
    drop(event_tx);
    {
        let counters = Arc::clone(&counters);
        let forward = (config.event_rate > 0).then_some(batch_tx);
        let handle = thread::Builder::new()
            .name("meds-events".to_owned())
            .spawn(move || events::consume(event_rx, forward, &counters))
            .map_err(RunError::EventsSpawn)?;
        running.threads.push((None, handle));
    }
    let revocation = revoker
        .as_ref()
        .map(|_| Arc::new(revoke::RevocationCounters::default()));
    if let (Some(revoker), Some(revocation)) = (revoker, revocation.clone()) {
        let live = Arc::clone(&live);
        let stop = Arc::clone(&running.stop);
        let handle = thread::Builder::new()
            .name("meds-revoke".to_owned())
            .spawn(move || revoke::watch(revoker, live, stop, revocation))
            .map_err(RunError::RevokeSpawn)?;
        running.threads.push((None, handle));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("meds-control")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;

    let (stop_control, control_stopped) = watch::channel(false);
    let queue_nums = (0..config.readers)
        .map(|i| u32::from(first) + u32::from(i))
        .collect();
    let mut sync_cfg = SyncConfig::new(&config.sync_socket, queue_nums);
    sync_cfg.started_at_unix = unix_now();
    sync_cfg.settings = Some(settings(&config));
    let queue_rules = Arc::new(QueueRuleCounts::default());
    let rules_task = runtime.spawn(read_queue_rules(
        Firewall::new(config.rules.clone()),
        Arc::clone(&queue_rules),
        control_stopped.clone(),
    ));
    let client = SyncClient::new(sync_cfg, Arc::clone(&store), Arc::clone(&counters))
        .with_sources(StatsSources {
            limiter: limiter.clone(),
            revocation,
            nfqueue_proc: Some(procfs::NFQUEUE_PROC.into()),
            queue_rules: Some(queue_rules),
        })
        .with_events(batch_rx)
        .with_explain(limiter.clone(), config.offload.is_some());
    let sync_task = runtime.spawn(client.run(control_stopped.clone()));
    let persist_task = runtime.spawn(policy::persist(
        Arc::clone(&store),
        config.state_file.clone(),
        STATE_WRITE_INTERVAL,
        control_stopped.clone(),
    ));
    let sweep_task = limiter.map(|limiter| runtime.spawn(sweep(limiter, control_stopped)));
    tracing::info!(
        socket = %config.sync_socket.display(),
        generation = store.generation(),
        queues = config.readers,
        offload = config.offload.is_some(),
        rate_limiter = config.rate_limit.is_some(),
        "dataplane running"
    );

    let outcome = runtime.block_on(async {
        tokio::select! {
            _ = shutdown => {
                tracing::info!("shutdown requested");
                Ok(())
            }
            Some(queue_num) = worker_done_rx.recv() => {
                tracing::error!(queue = queue_num, "a queue worker stopped unexpectedly");
                Err(RunError::WorkerExited(queue_num))
            }
        }
    });

    // Rules first: from here on the kernel stops queueing packets for us.
    let stopped = running.finish();

    stop_control.send_replace(true);
    runtime.block_on(async {
        let all = async {
            let _ = sync_task.await;
            let _ = persist_task.await;
            let _ = rules_task.await;
            if let Some(task) = sweep_task {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(CONTROL_STOP_TIMEOUT, all)
            .await
            .is_err()
        {
            tracing::warn!("control tasks did not stop in time");
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));

    match (outcome, stopped) {
        (_, Err(e @ RunError::WorkerPanicked(_))) => Err(e),
        (Err(e), _) => Err(e),
        (Ok(()), result) => {
            if result.is_ok() {
                tracing::info!("dataplane stopped; firewall rules removed");
            }
            result
        }
    }
}

/// How often the NFQUEUE rules' packet counters are read (for the not-queued estimate).
const QUEUE_RULES_INTERVAL: Duration = Duration::from_secs(10);

/// Read the packet counters of our NFQUEUE rules every [`QUEUE_RULES_INTERVAL`] (two
/// `iptables -S -v` runs on a blocking thread, off the packet path) until `stop` turns true.
/// A failed read keeps the last counters (the estimate then only lags).
async fn read_queue_rules(
    firewall: Firewall,
    counts: Arc<QueueRuleCounts>,
    mut stop: watch::Receiver<bool>,
) {
    let firewall = Arc::new(firewall);
    let mut tick = tokio::time::interval(QUEUE_RULES_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let fw = Arc::clone(&firewall);
        match tokio::task::spawn_blocking(move || fw.queue_rule_counts()).await {
            Ok(Ok(read)) => counts.set(read),
            Ok(Err(error)) => {
                tracing::debug!(error = %ErrorChain(&error), "cannot read the queue rule counters");
            }
            Err(_) => {}
        }
    }
}

/// How often idle rate-limiter keys are swept out.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Free the rate limiter's idle keys every [`SWEEP_INTERVAL`] until `stop` turns true.
async fn sweep(limiter: Arc<RateLimiter>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let limiter = Arc::clone(&limiter);
        if let Ok(removed) = tokio::task::spawn_blocking(move || limiter.sweep()).await
            && removed > 0
        {
            tracing::debug!(removed, "idle rate-limiter keys swept");
        }
    }
}

/// The packet-path settings reported to the controller (`medsctl status`).
fn settings(config: &Config) -> pb::DataplaneSettings {
    let limit = config.rate_limit.as_ref();
    pb::DataplaneSettings {
        fail_open: config.queue.fail_open,
        queue_bypass: config.rules.queue_bypass,
        offload: config.offload.is_some(),
        mark_trusted: config.offload.map_or(0, |m| m.trusted()),
        mark_blocked: config.offload.map_or(0, |m| m.blocked()),
        gso: config.queue.gso,
        recv_batch: u32::try_from(config.recv_batch).unwrap_or(u32::MAX),
        rate_limiter: limit.is_some(),
        rate_limiter_rate: limit.map_or(0, |l| u64::from(l.rate())),
        rate_limiter_burst: limit.map_or(0, |l| u64::from(l.burst())),
        rate_limiter_ipv6_prefix: limit.map_or(0, |l| u32::from(l.ipv6_prefix())),
        rate_limiter_cache_size: limit.map_or(0, |l| l.cache_size() as u64),
        readers: u32::from(config.readers),
        queue_max_len: config.queue.max_len,
        copy_range: config.queue.copy_range,
    }
}

/// Sends the queue number of a worker thread that ended (returned or unwound).
struct WorkerDone {
    queue_num: u16,
    tx: mpsc::UnboundedSender<u16>,
}

impl Drop for WorkerDone {
    fn drop(&mut self) {
        let _ = self.tx.send(self.queue_num);
    }
}

/// The CPUs this process may run on, in order (empty if they cannot be read).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the size passed is the size of `set`, which the kernel fills.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: cpu is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pin the calling thread to `cpu`; a failure is logged and the thread runs unpinned.
fn pin_to_cpu(queue_num: u16, cpu: usize) {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: callers pass a CPU from `allowed_cpus`, below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the size is that of `set`.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        tracing::debug!(queue = queue_num, cpu, "packet thread pinned");
    } else {
        tracing::warn!(
            queue = queue_num,
            cpu,
            error = %std::io::Error::last_os_error(),
            "cannot pin the packet thread; it runs unpinned"
        );
    }
}

/// Load the state file into the store; every failure is logged and start-up continues with an
/// empty policy until the controller sends one.
fn restore_state(store: &PolicyStore, path: &Path) {
    match policy::read_state_file(path) {
        Ok(Some(state)) => {
            let entries = state.len();
            let generation = store.restore(state);
            tracing::info!(
                path = %path.display(),
                generation,
                entries,
                "enforcing the saved policy"
            );
        }
        Ok(None) => {
            tracing::info!(path = %path.display(), "no saved policy; waiting for the controller");
        }
        Err(e) => tracing::warn!(
            path = %path.display(),
            error = %ErrorChain(&e),
            "ignoring the saved policy; waiting for the controller"
        ),
    }
}

/// What has to be undone: the firewall rules, then the threads. Undone on drop too, so an
/// early return or a panic never leaves rules behind.
struct Running<'a> {
    firewall: &'a Firewall,
    rules_installed: bool,
    stop: Arc<AtomicBool>,
    /// Queue workers (with their queue number) and the revocation thread (`None`).
    threads: Vec<(Option<u16>, JoinHandle<()>)>,
}

impl Running<'_> {
    fn finish(&mut self) -> Result<(), RunError> {
        let mut result = Ok(());
        if self.rules_installed {
            self.rules_installed = false;
            if let Err(e) = self.firewall.remove() {
                tracing::error!(error = %ErrorChain(&e), "could not remove the firewall rules");
                result = Err(RunError::FirewallRemove(e));
            }
        }
        self.stop.store(true, Ordering::SeqCst);
        for (queue_num, thread) in self.threads.drain(..) {
            if thread.join().is_err() {
                match queue_num {
                    Some(queue_num) => {
                        tracing::error!(queue = queue_num, "a queue worker panicked");
                        result = Err(RunError::WorkerPanicked(queue_num));
                    }
                    None => tracing::error!("the revocation or drop-event thread panicked"),
                }
            }
        }
        result
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        // Errors were logged by `finish`.
        let _ = self.finish();
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Displays an error with its sources, `outer: inner: innermost`, skipping a source whose text
/// the previous message already ends with.
pub struct ErrorChain<'a>(pub &'a dyn StdError);

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut previous = self.0.to_string();
        f.write_str(&previous)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            let text = e.to_string();
            if !previous.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            previous = text;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Inner {
        #[error("disk on fire")]
        Fire,
    }

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot save")]
        Save(#[source] Inner),
        #[error("cannot save: {0}")]
        SaveRepeated(#[source] Inner),
    }

    #[test]
    fn error_chain_joins_sources_once() {
        assert_eq!(ErrorChain(&Inner::Fire).to_string(), "disk on fire");
        assert_eq!(
            ErrorChain(&Outer::Save(Inner::Fire)).to_string(),
            "cannot save: disk on fire"
        );
        assert_eq!(
            ErrorChain(&Outer::SaveRepeated(Inner::Fire)).to_string(),
            "cannot save: disk on fire"
        );
    }
}
