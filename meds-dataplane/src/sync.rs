//! The sync client: the dataplane's side of the `meds.v1.Sync` stream.
//!
//! The dataplane connects out to the controller's Unix socket, sends a `Hello`, and then:
//! * feeds every `UpdateChunk` to a fresh [`Stager`] (one per stream), which validates it;
//! * on a complete update, applies it to the [`PolicyStore`] on a blocking thread (only the
//!   components of the lists it changed are rebuilt, there, off the packet path), publishes
//!   it, and only then sends the `Ack`;
//! * every second sends `DataplaneStats` from the packet counters;
//! * forwards the sampled drop events' `EventBatch`es ([`crate::events`]) when a stream is
//!   open, with `try_send`: a batch that does not fit is dropped and its events are added to
//!   the next batch's `suppressed` (events never delay an `Ack`);
//! * answers each `ExplainRequest` from the live rule set (evaluated on this task: one chain
//!   walk, no packet-path state touched).
//!
//! Any stream error or refused chunk ends the stream: the last applied rule set stays in force,
//! the error is logged and counted, and the client reconnects with jittered exponential backoff
//! (reset after a stream that applied an update). Input from the controller never panics this
//! task. Nothing here runs on the packet path.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper_util::rt::TokioIo;
use meds_proto::pb::{self, controller_message, dataplane_message};
use meds_proto::sync::{MAX_MESSAGE_BYTES, Stager, SyncError};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::counters::Counters;
use crate::firewall::QueueRuleCount;
use crate::policy::PolicyStore;
use crate::procfs::{self, Unwrap};
use crate::ratelimit::RateLimiter;
use crate::revoke::RevocationCounters;

/// Messages the dataplane may have queued for the controller before sending blocks.
const OUTBOUND_CAPACITY: usize = 32;

/// Reconnect delays: exponential from `initial` to `max`, each jittered down to half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The delay before reconnect attempt `attempt` (0-based): `min(max, initial * 2^attempt)`,
    /// scaled into `[d/2, d]` by `random`.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let full = self.initial.saturating_mul(factor).min(self.max);
        let half = full / 2;
        let spread = u64::try_from((full - half).as_nanos()).unwrap_or(u64::MAX);
        let extra = if spread == 0 {
            0
        } else {
            random % (spread + 1)
        };
        half + Duration::from_nanos(extra)
    }
}

/// How the client connects and reports.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// The controller's sync socket.
    pub socket: PathBuf,
    /// The NFQUEUE numbers this dataplane is bound to (sent in the Hello).
    pub queues: Vec<u32>,
    /// Process start, seconds since the Unix epoch (sent with the stats).
    pub started_at_unix: u64,
    /// Random, non-zero, chosen once per process (sent with the stats): the controller folds
    /// the counters of each instance into its totals once.
    pub instance_id: u64,
    /// How often stats are sent.
    pub stats_interval: Duration,
    pub backoff: Backoff,
    /// Upper bound on establishing the connection.
    pub connect_timeout: Duration,
    /// The packet-path settings reported in the Hello (shown by `medsctl status`); `None`
    /// reports none, and the controller then shows them as unknown.
    pub settings: Option<pb::DataplaneSettings>,
}

impl SyncConfig {
    /// Defaults: stats every second, backoff 100 ms to 5 s, 5 s connect timeout, started now,
    /// no settings reported.
    pub fn new(socket: impl Into<PathBuf>, queues: Vec<u32>) -> SyncConfig {
        SyncConfig {
            socket: socket.into(),
            queues,
            started_at_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            instance_id: random_instance_id(),
            stats_interval: Duration::from_secs(1),
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(5),
            settings: None,
        }
    }
}

/// Where the stats beyond the packet counters come from ([`SyncClient::with_sources`]).
/// Everything here is read by the sync task once per stats message, off the packet path.
#[derive(Default)]
pub struct StatsSources {
    /// The shared rate limiter; `None`: it is off (no rate-limiter stats are sent).
    pub limiter: Option<Arc<RateLimiter>>,
    /// The revocation thread's counters; `None`: no revocation thread (offload off, or no
    /// ctnetlink).
    pub revocation: Option<Arc<RevocationCounters>>,
    /// The kernel's NFQUEUE file ([`procfs::NFQUEUE_PROC`]); `None`: queues not reported.
    pub nfqueue_proc: Option<PathBuf>,
    /// The packet counters of our NFQUEUE rules, refreshed by another task (at most every
    /// few seconds); `None`: `not_queued` is reported as 0.
    pub queue_rules: Option<Arc<QueueRuleCounts>>,
}

/// The latest packet counters of the dataplane's NFQUEUE rules (see
/// [`crate::firewall::Firewall::queue_rule_counts`]).
#[derive(Debug, Default)]
pub struct QueueRuleCounts(Mutex<Vec<QueueRuleCount>>);

impl QueueRuleCounts {
    pub fn set(&self, counts: Vec<QueueRuleCount>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = counts;
    }

    pub fn get(&self) -> Vec<QueueRuleCount> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Packets a queue rule passed without queueing them: the rule's packet counter minus what
/// the kernel enqueued (`id_sequence`, which also counts the packets it then failed to deliver,
/// `queue_user_dropped`) and dropped as full (`queue_dropped`) on the rule's queues; clamped
/// at 0. The rule counters must be read *before* the queue counters, so that packets arriving
/// in between can only lower the estimate.
pub fn not_queued_estimate(rule: &QueueRuleCount, queues: &[pb::QueueStats]) -> u64 {
    let handled = queues
        .iter()
        .filter(|q| (rule.first..=rule.last).contains(&q.queue))
        .fold(0u64, |sum, q| {
            sum.saturating_add(q.enqueued)
                .saturating_add(q.queue_dropped)
        });
    rule.packets.saturating_sub(handled)
}

impl std::fmt::Debug for StatsSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsSources")
            .field("limiter", &self.limiter.is_some())
            .field("revocation", &self.revocation)
            .field("nfqueue_proc", &self.nfqueue_proc)
            .finish()
    }
}

/// 64-bit totals of one queue's 32-bit kernel counters.
#[derive(Debug, Default)]
struct QueueTotals {
    queue_dropped: Unwrap,
    user_dropped: Unwrap,
    enqueued: Unwrap,
    /// Highest not-queued estimate so far (reported on the first queue of its rule).
    not_queued: u64,
}

/// Counters of the sync client, readable from any thread.
#[derive(Debug, Default)]
pub struct SyncStats {
    connected: AtomicBool,
    streams_opened: AtomicU64,
    stream_failures: AtomicU64,
    updates_applied: AtomicU64,
    updates_rejected: AtomicU64,
}

impl SyncStats {
    /// True while a stream to the controller is open.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    /// Streams opened (each one received a fresh snapshot).
    pub fn streams_opened(&self) -> u64 {
        self.streams_opened.load(Ordering::Relaxed)
    }
    /// Streams or connection attempts that ended in an error other than a refused update.
    pub fn stream_failures(&self) -> u64 {
        self.stream_failures.load(Ordering::Relaxed)
    }
    /// Complete updates applied and acknowledged.
    pub fn updates_applied(&self) -> u64 {
        self.updates_applied.load(Ordering::Relaxed)
    }
    /// Chunks refused by validation (each one ended its stream).
    pub fn updates_rejected(&self) -> u64 {
        self.updates_rejected.load(Ordering::Relaxed)
    }
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot connect to the controller at {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("controller refused the sync stream")]
    Open(#[source] tonic::Status),
    #[error("sync stream failed")]
    Stream(#[source] tonic::Status),
    #[error("controller closed the sync stream")]
    Closed,
    #[error("controller sent an update that was refused")]
    Rejected(#[source] SyncError),
    #[error("the outbound half of the sync stream closed")]
    OutboundClosed,
    #[error("applying the update failed")]
    Apply(#[source] tokio::task::JoinError),
}

/// The sync client. Build it, keep [`SyncClient::stats`] if you want to observe it, then
/// [`SyncClient::run`] it until shutdown.
#[derive(Debug)]
pub struct SyncClient {
    cfg: SyncConfig,
    store: Arc<PolicyStore>,
    counters: Arc<Counters>,
    stats: Arc<SyncStats>,
    /// Drop-event batches to forward (kept across streams).
    events: Option<tokio::sync::Mutex<mpsc::Receiver<pb::EventBatch>>>,
    /// What explain needs besides the rule set: the rate limiter and whether offload is on.
    limiter: Option<Arc<RateLimiter>>,
    offload: bool,
    sources: StatsSources,
    /// Per queue, the kernel's wrapping counters as running totals (only the sync task
    /// touches it; a mutex because the stats are built through `&self`).
    queue_totals: Mutex<BTreeMap<u32, QueueTotals>>,
}

impl SyncClient {
    pub fn new(cfg: SyncConfig, store: Arc<PolicyStore>, counters: Arc<Counters>) -> SyncClient {
        SyncClient {
            cfg,
            store,
            counters,
            stats: Arc::new(SyncStats::default()),
            events: None,
            limiter: None,
            offload: false,
            sources: StatsSources::default(),
            queue_totals: Mutex::new(BTreeMap::new()),
        }
    }

    /// Forward the drop-event batches received on `events` while a stream is open.
    pub fn with_events(mut self, events: mpsc::Receiver<pb::EventBatch>) -> SyncClient {
        self.events = Some(tokio::sync::Mutex::new(events));
        self
    }

    /// Report these sources in the stats too (rate limiter, revocation, kernel queues).
    pub fn with_sources(mut self, sources: StatsSources) -> SyncClient {
        self.sources = sources;
        self
    }

    /// Explain with this rate limiter (its current state for the source is reported, never
    /// changed) and offload setting.
    pub fn with_explain(mut self, limiter: Option<Arc<RateLimiter>>, offload: bool) -> SyncClient {
        self.limiter = limiter;
        self.offload = offload;
        self
    }

    pub fn stats(&self) -> Arc<SyncStats> {
        Arc::clone(&self.stats)
    }

    /// Connect, stream, reconnect; returns when `shutdown` becomes true (or its sender is
    /// dropped). The policy in force is never cleared here.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut attempt: u32 = 0;
        let mut last_error = String::new();
        loop {
            let mut applied_any = false;
            let ended = tokio::select! {
                ended = self.stream_once(&mut applied_any) => ended,
                _ = stopped(&mut shutdown) => break,
            };
            self.stats.connected.store(false, Ordering::Relaxed);
            let refused = matches!(ended, StreamError::Rejected(_));
            if !refused {
                self.stats.stream_failures.fetch_add(1, Ordering::Relaxed);
            }
            if applied_any && !refused {
                attempt = 0;
            }
            let delay = self.cfg.backoff.delay(attempt, random_u64());
            attempt = attempt.saturating_add(1);
            let message = crate::ErrorChain(&ended).to_string();
            // A controller that stays away must not flood the log: repeat the same failure at
            // debug level only.
            if message != last_error || refused {
                tracing::warn!(
                    error = %message,
                    retry_in_ms = delay.as_millis() as u64,
                    generation = self.store.generation(),
                    "sync stream ended; keeping the policy in force and reconnecting"
                );
            } else {
                tracing::debug!(
                    error = %message,
                    retry_in_ms = delay.as_millis() as u64,
                    "sync retry"
                );
            }
            last_error = message;
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(&mut shutdown) => break,
            }
        }
        self.stats.connected.store(false, Ordering::Relaxed);
        tracing::debug!("sync client stopped");
    }

    /// One connection and stream, until it fails. Sets `applied_any` once an update applied.
    async fn stream_once(&self, applied_any: &mut bool) -> StreamError {
        match self.try_stream(applied_any).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn try_stream(
        &self,
        applied_any: &mut bool,
    ) -> Result<std::convert::Infallible, StreamError> {
        let channel = connect(&self.cfg.socket, self.cfg.connect_timeout).await?;
        let mut client = pb::sync_client::SyncClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let hello = pb::DataplaneMessage {
            msg: Some(dataplane_message::Msg::Hello(pb::Hello {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                applied_generation: self.store.generation(),
                queues: self.cfg.queues.clone(),
                pid: std::process::id(),
                observer: false,
                settings: self.cfg.settings,
            })),
        };
        tx.try_send(hello)
            .map_err(|_| StreamError::OutboundClosed)?;
        let mut inbound = client
            .stream(ReceiverStream::new(rx))
            .await
            .map_err(StreamError::Open)?
            .into_inner();
        self.stats.connected.store(true, Ordering::Relaxed);
        self.stats.streams_opened.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            socket = %self.cfg.socket.display(),
            generation = self.store.generation(),
            "sync stream open"
        );

        let mut events = match &self.events {
            Some(events) => Some(events.lock().await),
            None => None,
        };
        // Events of batches that did not fit in the outbound channel.
        let mut unsent_events: u64 = 0;
        let mut stager = Stager::new();
        let mut stats_tick = tokio::time::interval(self.cfg.stats_interval);
        stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = stats_tick.tick() => {
                    let msg = pb::DataplaneMessage {
                        msg: Some(dataplane_message::Msg::Stats(self.stats_message())),
                    };
                    // Stats are periodic: when the controller is slow, skip one.
                    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(msg) {
                        return Err(StreamError::OutboundClosed);
                    }
                }
                Some(mut batch) = next_batch(&mut events) => {
                    let n = batch.events.len() as u64;
                    batch.suppressed = batch.suppressed.saturating_add(unsent_events);
                    let msg = pb::DataplaneMessage {
                        msg: Some(dataplane_message::Msg::Events(batch)),
                    };
                    match tx.try_send(msg) {
                        Ok(()) => unsent_events = 0,
                        Err(mpsc::error::TrySendError::Full(msg)) => {
                            if let Some(dataplane_message::Msg::Events(batch)) = msg.msg {
                                unsent_events = batch.suppressed.saturating_add(n);
                            }
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            return Err(StreamError::OutboundClosed);
                        }
                    }
                }
                received = inbound.message() => {
                    let chunk = match received {
                        Err(status) => return Err(StreamError::Stream(status)),
                        Ok(None) => return Err(StreamError::Closed),
                        Ok(Some(pb::ControllerMessage {
                            msg: Some(controller_message::Msg::Update(chunk)),
                        })) => chunk,
                        Ok(Some(pb::ControllerMessage {
                            msg: Some(controller_message::Msg::Explain(request)),
                        })) => {
                            let response = self.explain(&request);
                            let msg = pb::DataplaneMessage {
                                msg: Some(dataplane_message::Msg::Explain(response)),
                            };
                            tx.send(msg).await.map_err(|_| StreamError::OutboundClosed)?;
                            continue;
                        }
                        Ok(Some(pb::ControllerMessage { msg: None })) => {
                            tracing::debug!("ignoring an empty or unknown controller message");
                            continue;
                        }
                    };
                    let update = match stager.push(&chunk) {
                        Ok(Some(update)) => update,
                        Ok(None) => continue,
                        Err(e) => {
                            self.stats.updates_rejected.fetch_add(1, Ordering::Relaxed);
                            return Err(StreamError::Rejected(e));
                        }
                    };
                    let (full, entries) = (update.full, update.entries());
                    let store = Arc::clone(&self.store);
                    let applied = tokio::task::spawn_blocking(move || store.apply(update))
                        .await
                        .map_err(StreamError::Apply)?;
                    self.stats.updates_applied.fetch_add(1, Ordering::Relaxed);
                    *applied_any = true;
                    let generation = applied.generation;
                    let rebuilt: Vec<String> = applied
                        .rebuilt
                        .iter()
                        .map(|(kind, took)| format!("{kind}:{}ms", took.as_millis()))
                        .collect();
                    tracing::info!(
                        generation,
                        full,
                        entries,
                        rebuilt = %rebuilt.join(","),
                        live_after_ms = applied.elapsed.as_millis() as u64,
                        "policy update applied"
                    );
                    let ack = pb::DataplaneMessage {
                        msg: Some(dataplane_message::Msg::Ack(pb::Ack { generation })),
                    };
                    tx.send(ack).await.map_err(|_| StreamError::OutboundClosed)?;
                }
            }
        }
    }

    /// The answer to an explain request, from the live rule set (validated by the engine;
    /// a bad request gets a response with `error` set, never a panic).
    fn explain(&self, request: &pb::ExplainRequest) -> pb::ExplainResponse {
        let rules = self.store.live().load();
        crate::explain::wire::respond(&rules, self.limiter.as_deref(), self.offload, request)
    }

    /// The stats message: the packet counters (cumulative for this process, tagged with its
    /// instance id) and the other sources' current values.
    pub(crate) fn stats_message(&self) -> pb::DataplaneStats {
        let snapshot = self.counters.snapshot();
        let named = |name: String, count: u64| pb::NamedCount { name, count };
        pb::DataplaneStats {
            instance_id: self.cfg.instance_id,
            recv_errors: snapshot.recv_errors,
            trusted: snapshot
                .trusted
                .iter()
                .map(|&(reason, n)| named(reason.label().to_owned(), n))
                .collect(),
            flows_blocked: snapshot.flows_blocked,
            inspect: snapshot
                .inspect
                .iter()
                .map(|&(event, n)| {
                    let (family, name) = event.label();
                    named(format!("{family}_{name}"), n)
                })
                .collect(),
            revocation: self.sources.revocation.as_ref().map(|r| {
                let s = r.snapshot();
                pb::RevocationStats {
                    passes: s.passes,
                    flows_revoked: s.flows_revoked,
                    flows_released: s.flows_released,
                    errors: s.errors,
                }
            }),
            rate_limiter: self.sources.limiter.as_ref().map(|l| pb::RateLimiterStats {
                keys: l.keys() as u64,
                // one table per address family, each of `capacity()` keys
                capacity: (l.capacity() as u64).saturating_mul(2),
                untracked: l.untracked(),
            }),
            queues: self.queue_stats(),
            resident_memory_bytes: procfs::resident_memory_bytes().unwrap_or(0),
            events_sampled: snapshot.events_sampled,
            events_suppressed: snapshot.events_suppressed,
            packets_processed: snapshot.packets_processed,
            decisions: snapshot
                .decisions
                .iter()
                .map(|d| pb::DecisionCount {
                    verdict: d.verdict.label().to_owned(),
                    filter: d.filter.label().to_owned(),
                    reason: d.reason.label().to_owned(),
                    packets: d.packets,
                })
                .collect(),
            updates_rejected: self.stats.updates_rejected(),
            verdict_errors: snapshot.verdict_errors,
            started_at_unix: self.cfg.started_at_unix,
        }
    }

    /// This dataplane's queues as the kernel sees them, counters unwrapped to 64 bits.
    fn queue_stats(&self) -> Vec<pb::QueueStats> {
        let Some(path) = &self.sources.nfqueue_proc else {
            return Vec::new();
        };
        // Rule counters first (they were read before this call), then the queues.
        let rules = self
            .sources
            .queue_rules
            .as_ref()
            .map(|r| r.get())
            .unwrap_or_default();
        let lines = procfs::read_queues(path, &self.cfg.queues);
        let mut totals = self.queue_totals.lock().unwrap_or_else(|e| e.into_inner());
        let mut queues: Vec<pb::QueueStats> = lines
            .iter()
            .map(|line| {
                let t = totals.entry(line.queue).or_default();
                pb::QueueStats {
                    queue: line.queue,
                    waiting: u64::from(line.waiting),
                    queue_dropped: t.queue_dropped.update(line.queue_dropped),
                    user_dropped: t.user_dropped.update(line.user_dropped),
                    enqueued: t.enqueued.update(line.id_sequence),
                    not_queued: 0,
                }
            })
            .collect();
        for rule in &rules {
            let estimate = not_queued_estimate(rule, &queues);
            if let Some(t) = totals.get_mut(&rule.first) {
                t.not_queued = t.not_queued.max(estimate);
            }
        }
        for q in &mut queues {
            q.not_queued = totals.get(&q.queue).map_or(0, |t| t.not_queued);
        }
        queues
    }
}

/// A random non-zero instance id.
fn random_instance_id() -> u64 {
    loop {
        let id = random_u64();
        if id != 0 {
            return id;
        }
    }
}

/// Open an HTTP/2 channel over the Unix socket at `path`.
async fn connect(path: &Path, timeout: Duration) -> Result<Channel, StreamError> {
    unix_channel(path, timeout)
        .await
        .map_err(|source| StreamError::Connect {
            path: path.to_path_buf(),
            source,
        })
}

/// An HTTP/2 channel to the controller's Unix socket at `path` (also used by `replay`).
pub(crate) async fn unix_channel(
    path: &Path,
    timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    // The authority is never resolved: every connection goes to the Unix socket.
    let endpoint = Endpoint::try_from("http://meds.invalid")?.connect_timeout(timeout);
    let socket = path.to_path_buf();
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
}

/// The next batch of `events`; pending forever without a receiver or once it is closed.
async fn next_batch(
    events: &mut Option<tokio::sync::MutexGuard<'_, mpsc::Receiver<pb::EventBatch>>>,
) -> Option<pb::EventBatch> {
    match events {
        Some(rx) => match rx.recv().await {
            Some(batch) => Some(batch),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Resolves once `shutdown` is true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// A random number for jitter (std's per-instance random hasher keys; no extra dependency).
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos().into()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_within_half() {
        let b = Backoff::default();
        let cases = [
            (0, Duration::from_millis(100)),
            (1, Duration::from_millis(200)),
            (2, Duration::from_millis(400)),
            (5, Duration::from_millis(3200)),
            (6, Duration::from_secs(5)),
            (31, Duration::from_secs(5)),
            (32, Duration::from_secs(5)),
            (u32::MAX, Duration::from_secs(5)),
        ];
        for (attempt, full) in cases {
            let lo = b.delay(attempt, 0);
            let hi = b.delay(attempt, u64::MAX);
            assert_eq!(lo, full / 2, "attempt {attempt} low end");
            assert!(hi <= full && hi >= lo, "attempt {attempt}: {hi:?}");
            for r in [1, 12345, u64::MAX / 3] {
                let d = b.delay(attempt, r);
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}, random {r}: {d:?}"
                );
            }
        }
        let zero = Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(zero.delay(3, 99), Duration::ZERO);
    }

    #[test]
    fn not_queued_is_what_the_rule_passed_beyond_the_queues() {
        let q = |queue, enqueued, queue_dropped, user_dropped| pb::QueueStats {
            queue,
            enqueued,
            queue_dropped,
            user_dropped,
            ..pb::QueueStats::default()
        };
        let rule = |first, last, packets| QueueRuleCount {
            first,
            last,
            packets,
        };
        // user_dropped is part of enqueued (the kernel numbers the packet before sending it)
        let queues = [q(0, 100, 5, 3), q(1, 50, 0, 0), q(9, 1000, 0, 0)];
        assert_eq!(not_queued_estimate(&rule(0, 0, 120), &queues), 15);
        assert_eq!(not_queued_estimate(&rule(0, 1, 160), &queues), 5);
        // more handled than the rule counted (counters read in between, GSO segments): 0
        assert_eq!(not_queued_estimate(&rule(0, 1, 10), &queues), 0);
        assert_eq!(not_queued_estimate(&rule(4, 5, 10), &queues), 10);
        assert_eq!(
            not_queued_estimate(&rule(0, 0, u64::MAX), &[q(0, u64::MAX, 1, 0)]),
            0
        );
    }

    #[test]
    fn random_values_differ() {
        let values: std::collections::HashSet<u64> = (0..16).map(|_| random_u64()).collect();
        assert!(values.len() > 1);
    }
}
