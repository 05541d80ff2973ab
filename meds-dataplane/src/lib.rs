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
//!   them for a packet, shared by the worker and `replay`.
//! * The runtime around it: [`nfqueue`] + [`worker`] (one blocking OS thread per queue, no
//!   locks, no logging per packet), [`firewall`] (iptables rules), [`policy`] (master copy,
//!   live rule set, state file), [`sync`] (the gRPC client), [`config`] (flags).
//! * [`replay`]: `meds-dataplane replay FILE`, the engine run offline over a pcap/pcapng capture
//!   (unprivileged; one JSON line per packet).
//!
//! [`run`] is the whole daemon; `main.rs` only parses flags, sets up logging and signals.
//! The dataplane never touches SQLite, HTTP or the internet, and keeps enforcing its last
//! policy while the controller is away (also across restarts, through the state file).

pub mod chain;
pub mod config;
pub mod counters;
pub mod dns;
pub mod firewall;
pub mod flow;
pub mod inspect;
pub mod lists;
pub mod nfqueue;
pub mod packet;
pub mod policy;
pub mod replay;
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
use tokio::sync::{oneshot, watch};

use crate::chain::RuleSet;
use crate::config::Config;
use crate::counters::Counters;
use crate::firewall::{Firewall, FirewallError};
use crate::inspect::Inspector;
use crate::nfqueue::{NfQueue, NfQueueError};
use crate::policy::PolicyStore;
use crate::sync::{SyncClient, SyncConfig};

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
    #[error("cannot start the control runtime")]
    Runtime(#[source] std::io::Error),
    #[error("the worker for queue {0} stopped unexpectedly")]
    WorkerExited(u16),
    #[error("the worker for queue {0} panicked")]
    WorkerPanicked(u16),
}

/// Run the dataplane until `shutdown` resolves (or the queue worker dies).
///
/// Start-up, in order: load the state file (a bad one is logged and ignored) and enforce it;
/// bind the NFQUEUE (fatal on failure); install the firewall rules; start the worker thread
/// `meds-queue-N`; run the sync client and the state-file writer on a small tokio runtime.
/// Shutdown: remove the firewall rules first, then stop and join the worker, then stop the
/// control tasks (the last state is written). The rules are also removed when a later start
/// step fails, and on unwinding.
pub fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let queue_num = config.queue.queue_num;
    let live = Arc::new(ArcSwap::from_pointee(RuleSet::empty()));
    let store = Arc::new(PolicyStore::new(Arc::clone(&live)));
    restore_state(&store, &config.state_file);

    let queue =
        NfQueue::open(&config.queue).map_err(|source| RunError::Queue { queue_num, source })?;
    tracing::info!(
        queue = queue.queue_num(),
        rcvbuf_bytes = queue.effective_rcvbuf(),
        max_len = config.queue.max_len,
        copy_range = config.queue.copy_range,
        fail_open = config.queue.fail_open,
        "NFQUEUE bound"
    );

    let firewall = Firewall::new(config.rules.clone());
    // `install` cleans up after itself when it fails.
    firewall.install().map_err(RunError::FirewallInstall)?;
    let mut running = Running {
        firewall: &firewall,
        rules_installed: true,
        stop: Arc::new(AtomicBool::new(false)),
        worker: None,
        queue_num,
    };

    let counters = Arc::new(Counters::new());
    let inspector = Inspector::new(config.inspect).map_err(RunError::Inspect)?;
    let (worker_done_tx, worker_done_rx) = oneshot::channel::<()>();
    let worker = {
        let live = Arc::clone(&live);
        let counters = Arc::clone(&counters);
        let stop = Arc::clone(&running.stop);
        thread::Builder::new()
            .name(format!("meds-queue-{queue_num}"))
            .spawn(move || {
                // Dropped when the worker returns or unwinds: tells the runtime it ended.
                let _done = worker_done_tx;
                worker::run(queue, live, counters, inspector, stop);
            })
            .map_err(|source| RunError::WorkerSpawn { queue_num, source })?
    };
    running.worker = Some(worker);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("meds-control")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;

    let (stop_control, control_stopped) = watch::channel(false);
    let mut sync_cfg = SyncConfig::new(&config.sync_socket, vec![u32::from(queue_num)]);
    sync_cfg.started_at_unix = unix_now();
    let client = SyncClient::new(sync_cfg, Arc::clone(&store), Arc::clone(&counters));
    let sync_task = runtime.spawn(client.run(control_stopped.clone()));
    let persist_task = runtime.spawn(policy::persist(
        Arc::clone(&store),
        config.state_file.clone(),
        STATE_WRITE_INTERVAL,
        control_stopped,
    ));
    tracing::info!(
        socket = %config.sync_socket.display(),
        generation = store.generation(),
        "dataplane running"
    );

    let outcome = runtime.block_on(async {
        tokio::select! {
            _ = shutdown => {
                tracing::info!("shutdown requested");
                Ok(())
            }
            _ = worker_done_rx => {
                tracing::error!(queue = queue_num, "the queue worker stopped unexpectedly");
                Err(RunError::WorkerExited(queue_num))
            }
        }
    });

    // Rules first: from here on the kernel stops queueing packets for us.
    let stopped = running.finish();

    stop_control.send_replace(true);
    runtime.block_on(async {
        let both = async {
            let _ = sync_task.await;
            let _ = persist_task.await;
        };
        if tokio::time::timeout(CONTROL_STOP_TIMEOUT, both)
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

/// What has to be undone: the firewall rules, then the worker. Undone on drop too, so an early
/// return or a panic never leaves rules behind.
struct Running<'a> {
    firewall: &'a Firewall,
    rules_installed: bool,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
    queue_num: u16,
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
        if let Some(worker) = self.worker.take()
            && worker.join().is_err()
        {
            tracing::error!(queue = self.queue_num, "the queue worker panicked");
            result = Err(RunError::WorkerPanicked(self.queue_num));
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
