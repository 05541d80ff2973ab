//! gRPC services on Unix sockets.
//!
//! * [`SyncService`]: the dataplane's stream. On connect (after the dataplane's `Hello`) we send a
//!   full snapshot in bounded chunks, then every committed delta in generation order. A
//!   subscriber that falls behind gets a fresh snapshot instead of the missed deltas.
//!   Acknowledgements and counters from the dataplane are validated before use.
//!   Drop-event batches go to the [`crate::events::EventHub`], explain answers to the
//!   [`crate::explain::Explainer`]; explain requests go out on the stream between updates.
//! * [`AdminService`]: medsctl. Decode, call [`Controller`], encode; errors are mapped to
//!   `tonic::Status` in [`status_from_core`], [`status_from_feeds`] and
//!   [`status_from_explain`] and nowhere else. `Events` streams until the client goes away
//!   or the controller shuts down (the hub is closed then).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use meds_proto::pb::{self, admin_server::Admin, sync_server::Sync};
use meds_proto::sync::{delta_chunks, full_update_chunks};
use meds_proto::{Cidr, Entry, ListKind};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::core::{
    Controller, CoreError, DataplaneSettings, DataplaneStats, DecisionStat, NamedStat, QueueStat,
    RateLimiterStat, RevocationStat,
};
use crate::explain::{ExplainError, Query};
use crate::feeds::{FeedStatus, Feeds, FeedsError};

/// How long a new stream may take to send its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Outbound chunks buffered per stream.
const OUTBOUND_BUFFER: usize = 8;
/// Most decision rows a stats message may carry.
const MAX_DECISIONS: usize = 256;
/// Longest label a stats message may carry.
const MAX_LABEL: usize = 64;
/// Most rows of each name/count list (trusted reasons, inspection events) a stats message may
/// carry.
const MAX_NAMED: usize = 128;
/// Most queues a stats message may carry.
const MAX_QUEUES: usize = 64;

type ControllerStream = Pin<Box<dyn Stream<Item = Result<pb::ControllerMessage, Status>> + Send>>;

/// The dataplane-facing sync service.
pub struct SyncService {
    controller: Arc<Controller>,
    /// Becomes true at shutdown: every stream then ends, so the server can stop.
    stop: Option<watch::Receiver<bool>>,
}

impl SyncService {
    pub fn new(controller: Arc<Controller>) -> SyncService {
        SyncService {
            controller,
            stop: None,
        }
    }

    /// End every stream when `stop` becomes true (the controller's shutdown).
    pub fn with_shutdown(mut self, stop: watch::Receiver<bool>) -> SyncService {
        self.stop = Some(stop);
        self
    }
}

#[tonic::async_trait]
impl Sync for SyncService {
    type StreamStream = ControllerStream;

    async fn stream(
        &self,
        request: Request<Streaming<pb::DataplaneMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10 s")),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(None)) => return Err(Status::cancelled("stream closed before Hello")),
            Ok(Ok(Some(pb::DataplaneMessage {
                msg: Some(pb::dataplane_message::Msg::Hello(h)),
            }))) => h,
            Ok(Ok(Some(_))) => return Err(Status::invalid_argument("first message must be Hello")),
        };
        let version = clip(&hello.version);
        let queues: Vec<u32> = hello.queues.iter().take(64).copied().collect();
        let controller = Arc::clone(&self.controller);
        if hello.observer {
            // A read-only client: policy only; it never becomes "the dataplane".
            tracing::info!(version = %version, pid = hello.pid, "observer connected");
            let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
            let (sent_tx, _sent_rx) = watch::channel(0u64);
            let (close_tx, close_rx) = watch::channel(false);
            tokio::spawn(send_updates(
                controller,
                tx,
                sent_tx,
                self.stop.clone(),
                close_rx,
                None,
            ));
            tokio::spawn(async move {
                // Drain (and ignore) whatever the observer sends until it goes away; then
                // `close_tx` drops and its updates stop.
                while let Some(Ok(_)) = inbound.next().await {}
                drop(close_tx);
            });
            return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
        }
        let settings = hello.settings.as_ref().map(settings_from_wire);
        let connection =
            controller.dataplane_connected_with(version.clone(), queues.clone(), settings);
        tracing::info!(
            connection,
            version = %version,
            ?queues,
            ?settings,
            pid = hello.pid,
            previous_generation = hello.applied_generation,
            "dataplane connected"
        );

        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let (sent_tx, sent_rx) = watch::channel(0u64);
        // Dropped by `receive_acks` when the inbound side ends or breaks the protocol: the
        // outbound side then ends too, so the whole stream closes.
        let (close_tx, close_rx) = watch::channel(false);
        // Explain requests for this dataplane go out on this stream, between whole updates.
        let (explain_tx, explain_rx) = mpsc::channel(crate::explain::STREAM_QUEUE);
        controller.explainer().attach(connection, explain_tx);
        tokio::spawn(send_updates(
            Arc::clone(&controller),
            tx,
            sent_tx,
            self.stop.clone(),
            close_rx,
            Some(explain_rx),
        ));
        tokio::spawn(receive_acks(
            controller, connection, inbound, sent_rx, close_tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Stream updates until the client goes away, the inbound side closes the stream (`close`
/// sender dropped), or the controller shuts down (`stop`).
async fn send_updates(
    controller: Arc<Controller>,
    tx: mpsc::Sender<Result<pb::ControllerMessage, Status>>,
    sent: watch::Sender<u64>,
    stop: Option<watch::Receiver<bool>>,
    mut close: watch::Receiver<bool>,
    mut explain: Option<mpsc::Receiver<pb::ExplainRequest>>,
) {
    let shutdown = async move {
        match stop {
            Some(mut stop) => {
                let _ = stop.wait_for(|s| *s).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = stream_updates(controller, &tx, sent, &mut explain) => {}
        () = shutdown => {}
        // Resolves with an error once the sender is dropped.
        _ = close.changed() => {}
    }
}

/// Send a snapshot, then deltas; resnapshot after lagging. Ends when the stream is gone.
/// Explain requests go out between whole updates (never inside one's chunks).
async fn stream_updates(
    controller: Arc<Controller>,
    tx: &mpsc::Sender<Result<pb::ControllerMessage, Status>>,
    sent: watch::Sender<u64>,
    explain: &mut Option<mpsc::Receiver<pb::ExplainRequest>>,
) {
    'resync: loop {
        let (snapshot, mut deltas) = controller.subscribe();
        let lists: Vec<(ListKind, &[Entry])> = snapshot
            .lists
            .iter()
            .map(|(k, v)| (*k, v.as_slice()))
            .collect();
        // Recorded before sending, so an ack can never outrun it.
        sent.send_replace(snapshot.generation);
        for chunk in full_update_chunks(snapshot.generation, &lists) {
            if !send(tx, chunk).await {
                return;
            }
        }
        let mut last = snapshot.generation;
        loop {
            let delta = tokio::select! {
                d = deltas.recv() => d,
                Some(request) = next_explain(explain) => {
                    let msg = pb::ControllerMessage {
                        msg: Some(pb::controller_message::Msg::Explain(request)),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                    continue;
                }
                () = tx.closed() => return,
            };
            match delta {
                // Already part of the snapshot.
                Ok(d) if d.generation <= last => continue,
                Ok(d) => {
                    sent.send_replace(d.generation);
                    for chunk in delta_chunks(d.generation, d.list, &d.add, &d.remove) {
                        if !send(tx, chunk).await {
                            return;
                        }
                    }
                    last = d.generation;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "dataplane stream fell behind; resending snapshot"
                    );
                    continue 'resync;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// The next explain request; pending forever without a receiver or once it is closed.
async fn next_explain(
    explain: &mut Option<mpsc::Receiver<pb::ExplainRequest>>,
) -> Option<pb::ExplainRequest> {
    match explain {
        Some(rx) => match rx.recv().await {
            Some(request) => Some(request),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

async fn send(
    tx: &mpsc::Sender<Result<pb::ControllerMessage, Status>>,
    chunk: pb::UpdateChunk,
) -> bool {
    let msg = pb::ControllerMessage {
        msg: Some(pb::controller_message::Msg::Update(chunk)),
    };
    tx.send(Ok(msg)).await.is_ok()
}

/// Read acks and stats until the stream ends; then mark the dataplane disconnected.
async fn receive_acks(
    controller: Arc<Controller>,
    connection: u64,
    mut inbound: Streaming<pb::DataplaneMessage>,
    sent: watch::Receiver<u64>,
    close: watch::Sender<bool>,
) {
    loop {
        let msg = match inbound.next().await {
            None => break,
            Some(Err(e)) => {
                tracing::info!(connection, error = %e, "dataplane stream ended");
                break;
            }
            Some(Ok(m)) => m,
        };
        match msg.msg {
            Some(pb::dataplane_message::Msg::Ack(ack)) => {
                let highest_sent = *sent.borrow();
                if ack.generation == 0 || ack.generation > highest_sent {
                    tracing::warn!(
                        connection,
                        acked = ack.generation,
                        highest_sent,
                        "dataplane acknowledged a generation it was never sent; closing stream"
                    );
                    break;
                }
                controller.dataplane_acked(connection, ack.generation);
            }
            Some(pb::dataplane_message::Msg::Stats(stats)) => {
                controller.dataplane_stats(connection, stats_from_wire(&stats));
            }
            // A message kind this controller does not know (a newer dataplane): ignore it.
            None => continue,
            Some(pb::dataplane_message::Msg::Events(batch)) => {
                let accepted = controller.events().publish(batch);
                if accepted.invalid > 0 || accepted.over_limit > 0 {
                    tracing::debug!(
                        connection,
                        invalid = accepted.invalid,
                        over_limit = accepted.over_limit,
                        "drop events refused"
                    );
                }
            }
            Some(pb::dataplane_message::Msg::Explain(response)) => {
                if !controller.explainer().resolve(response) {
                    tracing::debug!(connection, "explain answer nobody waits for (late?)");
                }
            }
            Some(pb::dataplane_message::Msg::Hello(_)) => {
                tracing::warn!(
                    connection,
                    "unexpected message on the sync stream; closing it"
                );
                break;
            }
        }
    }
    drop(close);
    controller.explainer().detach(connection);
    controller.dataplane_disconnected(connection);
    tracing::info!(connection, "dataplane disconnected");
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_LABEL).collect()
}

fn stats_from_wire(s: &pb::DataplaneStats) -> DataplaneStats {
    let named = |rows: &[pb::NamedCount]| {
        rows.iter()
            .take(MAX_NAMED)
            .map(|n| NamedStat {
                name: clip(&n.name),
                count: n.count,
            })
            .collect()
    };
    DataplaneStats {
        packets_processed: s.packets_processed,
        updates_rejected: s.updates_rejected,
        verdict_errors: s.verdict_errors,
        started_at_unix: s.started_at_unix,
        decisions: s
            .decisions
            .iter()
            .take(MAX_DECISIONS)
            .map(|d| DecisionStat {
                verdict: clip(&d.verdict),
                filter: clip(&d.filter),
                reason: clip(&d.reason),
                packets: d.packets,
            })
            .collect(),
        instance_id: s.instance_id,
        recv_errors: s.recv_errors,
        trusted: named(&s.trusted),
        flows_blocked: s.flows_blocked,
        inspect: named(&s.inspect),
        revocation: s.revocation.as_ref().map(|r| RevocationStat {
            passes: r.passes,
            flows_revoked: r.flows_revoked,
            flows_released: r.flows_released,
            errors: r.errors,
        }),
        rate_limiter: s.rate_limiter.as_ref().map(|l| RateLimiterStat {
            keys: l.keys,
            capacity: l.capacity,
            untracked: l.untracked,
        }),
        queues: s
            .queues
            .iter()
            .take(MAX_QUEUES)
            .map(|q| QueueStat {
                queue: q.queue,
                waiting: q.waiting,
                queue_dropped: q.queue_dropped,
                user_dropped: q.user_dropped,
                enqueued: q.enqueued,
                not_queued: q.not_queued,
            })
            .collect(),
        resident_memory_bytes: s.resident_memory_bytes,
        events_sampled: s.events_sampled,
        events_suppressed: s.events_suppressed,
    }
}

/// The settings as reported: plain numbers and flags, shown as they are (nothing to clip).
fn settings_from_wire(s: &pb::DataplaneSettings) -> DataplaneSettings {
    DataplaneSettings {
        fail_open: s.fail_open,
        queue_bypass: s.queue_bypass,
        offload: s.offload,
        mark_trusted: s.mark_trusted,
        mark_blocked: s.mark_blocked,
        gso: s.gso,
        recv_batch: s.recv_batch,
        rate_limiter: s.rate_limiter,
        rate_limiter_rate: s.rate_limiter_rate,
        rate_limiter_burst: s.rate_limiter_burst,
        rate_limiter_ipv6_prefix: s.rate_limiter_ipv6_prefix,
        rate_limiter_cache_size: s.rate_limiter_cache_size,
        readers: s.readers,
        queue_max_len: s.queue_max_len,
        copy_range: s.copy_range,
    }
}

fn settings_to_wire(s: &DataplaneSettings) -> pb::DataplaneSettings {
    pb::DataplaneSettings {
        fail_open: s.fail_open,
        queue_bypass: s.queue_bypass,
        offload: s.offload,
        mark_trusted: s.mark_trusted,
        mark_blocked: s.mark_blocked,
        gso: s.gso,
        recv_batch: s.recv_batch,
        rate_limiter: s.rate_limiter,
        rate_limiter_rate: s.rate_limiter_rate,
        rate_limiter_burst: s.rate_limiter_burst,
        rate_limiter_ipv6_prefix: s.rate_limiter_ipv6_prefix,
        rate_limiter_cache_size: s.rate_limiter_cache_size,
        readers: s.readers,
        queue_max_len: s.queue_max_len,
        copy_range: s.copy_range,
    }
}

/// The medsctl-facing admin service.
pub struct AdminService {
    controller: Arc<Controller>,
    feeds: Option<Arc<Feeds>>,
}

#[derive(Clone, Copy)]
enum Modify {
    Add,
    Remove,
}

impl AdminService {
    /// Decode, apply and encode one add or remove request.
    async fn modify(
        &self,
        req: pb::ModifyEntriesRequest,
        op: Modify,
    ) -> Result<Response<pb::ModifyEntriesResponse>, Status> {
        let list = list_kind(req.list)?;
        let entries = parse_entries(list, &req.entries)?;
        let change = match op {
            Modify::Add => self.controller.add(list, entries, req.wait_applied).await,
            Modify::Remove => {
                self.controller
                    .remove(list, entries, req.wait_applied)
                    .await
            }
        }
        .map_err(status_from_core)?;
        Ok(Response::new(modify_response(&change)))
    }

    /// Without feeds: the feed RPCs answer FAILED_PRECONDITION.
    pub fn new(controller: Arc<Controller>) -> AdminService {
        AdminService {
            controller,
            feeds: None,
        }
    }

    /// Serve the feed RPCs from `feeds`.
    pub fn with_feeds(mut self, feeds: Arc<Feeds>) -> AdminService {
        self.feeds = Some(feeds);
        self
    }

    fn feeds(&self) -> Result<&Arc<Feeds>, Status> {
        self.feeds
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("this controller runs without feeds"))
    }
}

/// The one mapping from feed errors to gRPC statuses.
pub fn status_from_feeds(e: FeedsError) -> Status {
    match e {
        FeedsError::UnknownFeed { .. } => Status::not_found(e.to_string()),
        FeedsError::Url(_) => Status::invalid_argument(e.to_string()),
        FeedsError::Disabled(_) => Status::failed_precondition(e.to_string()),
        FeedsError::Core(core) => status_from_core(core),
        FeedsError::Fetch(_) => {
            tracing::error!(error = %e, "feed request failed");
            Status::internal(e.to_string())
        }
    }
}

fn feed_status_to_wire(s: FeedStatus) -> pb::FeedStatus {
    pb::FeedStatus {
        name: s.name,
        list: s.list,
        enabled: s.enabled,
        url: s.url,
        entries: s.entries,
        last_success_unix: s.last_success_unix,
        last_attempt_unix: s.last_attempt_unix,
        next_update_unix: s.next_update_unix,
        last_error: s.last_error,
        failures: s.failures,
        rejected_lines: s.rejected_lines,
    }
}

fn list_kind(raw: i32) -> Result<ListKind, Status> {
    ListKind::from_wire(raw)
        .ok_or_else(|| Status::invalid_argument(format!("unknown list kind {raw}")))
}

/// Parse every entry for `list`; the first bad one fails the whole request, naming it.
fn parse_entries(list: ListKind, entries: &[String]) -> Result<Vec<Entry>, Status> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            Entry::parse_user(list.entry_kind(), e)
                .map_err(|err| Status::invalid_argument(format!("entries[{i}]: {err}")))
        })
        .collect()
}

/// The one mapping from explain errors to gRPC statuses.
pub fn status_from_explain(e: ExplainError) -> Status {
    match e {
        ExplainError::Invalid { .. } => Status::invalid_argument(e.to_string()),
        ExplainError::NoDataplane => Status::failed_precondition(e.to_string()),
        ExplainError::Busy => Status::resource_exhausted(e.to_string()),
        ExplainError::Timeout(_) => Status::deadline_exceeded(e.to_string()),
        ExplainError::Refused(_) => {
            tracing::error!(error = %e, "the dataplane refused an explain request");
            Status::internal(e.to_string())
        }
    }
}

/// The one mapping from core errors to gRPC statuses.
pub fn status_from_core(e: CoreError) -> Status {
    match e {
        CoreError::TooManyEntries { .. } | CoreError::FeedList(_) => {
            Status::invalid_argument(e.to_string())
        }
        CoreError::Store(_) | CoreError::Task(_) => {
            tracing::error!(error = %e, "policy change failed");
            Status::internal(
                "the policy store failed; nothing was changed (see the controller log)",
            )
        }
    }
}

fn stats_to_wire(s: &DataplaneStats) -> pb::DataplaneStats {
    let named = |rows: &[NamedStat]| {
        rows.iter()
            .map(|n| pb::NamedCount {
                name: n.name.clone(),
                count: n.count,
            })
            .collect()
    };
    pb::DataplaneStats {
        packets_processed: s.packets_processed,
        updates_rejected: s.updates_rejected,
        verdict_errors: s.verdict_errors,
        started_at_unix: s.started_at_unix,
        decisions: s
            .decisions
            .iter()
            .map(|d| pb::DecisionCount {
                verdict: d.verdict.clone(),
                filter: d.filter.clone(),
                reason: d.reason.clone(),
                packets: d.packets,
            })
            .collect(),
        instance_id: s.instance_id,
        recv_errors: s.recv_errors,
        trusted: named(&s.trusted),
        flows_blocked: s.flows_blocked,
        inspect: named(&s.inspect),
        revocation: s.revocation.map(|r| pb::RevocationStats {
            passes: r.passes,
            flows_revoked: r.flows_revoked,
            flows_released: r.flows_released,
            errors: r.errors,
        }),
        rate_limiter: s.rate_limiter.map(|l| pb::RateLimiterStats {
            keys: l.keys,
            capacity: l.capacity,
            untracked: l.untracked,
        }),
        queues: s
            .queues
            .iter()
            .map(|q| pb::QueueStats {
                queue: q.queue,
                waiting: q.waiting,
                queue_dropped: q.queue_dropped,
                user_dropped: q.user_dropped,
                enqueued: q.enqueued,
                not_queued: q.not_queued,
            })
            .collect(),
        resident_memory_bytes: s.resident_memory_bytes,
        events_sampled: s.events_sampled,
        events_suppressed: s.events_suppressed,
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let dp = self.controller.dataplane();
        let status = self.controller.status();
        let feeds = self
            .feeds
            .as_ref()
            .map(|f| f.statuses())
            .unwrap_or_default();
        let problems = crate::health::problems(&status, &feeds);
        Ok(Response::new(pb::StatusResponse {
            controller_version: status.controller_version,
            generation: status.generation,
            dataplane_connected: dp.connected,
            applied_generation: dp.applied_generation,
            dataplane_version: dp.version,
            dataplane_queues: dp.queues,
            lists: ListKind::ALL
                .iter()
                .map(|k| pb::ListSize {
                    list: k.to_wire() as i32,
                    entries: self.controller.list_len(*k) as u64,
                })
                .collect(),
            dataplane_stats: dp.stats.as_ref().map(stats_to_wire),
            controller_uptime_seconds: status.controller_uptime_seconds,
            dataplane_settings: dp.settings.as_ref().map(settings_to_wire),
            feeds: feeds.into_iter().map(feed_status_to_wire).collect(),
            problems,
        }))
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let list = list_kind(request.get_ref().list)?;
        let entries = self
            .controller
            .list(list)
            .iter()
            .map(Entry::to_string)
            .collect();
        Ok(Response::new(pb::ListEntriesResponse { entries }))
    }

    async fn add_entries(
        &self,
        request: Request<pb::ModifyEntriesRequest>,
    ) -> Result<Response<pb::ModifyEntriesResponse>, Status> {
        self.modify(request.into_inner(), Modify::Add).await
    }

    async fn remove_entries(
        &self,
        request: Request<pb::ModifyEntriesRequest>,
    ) -> Result<Response<pb::ModifyEntriesResponse>, Status> {
        self.modify(request.into_inner(), Modify::Remove).await
    }

    async fn check_ip(
        &self,
        request: Request<pb::CheckIpRequest>,
    ) -> Result<Response<pb::CheckIpResponse>, Status> {
        let text = request.into_inner().ip;
        // Same rules as everywhere else: a /32 or /128 `Cidr` (refuses IPv4-mapped IPv6).
        let ip = match text.parse::<Cidr>() {
            Ok(c) if c == Cidr::host(c.addr()) => c.addr(),
            Ok(_) => {
                return Err(Status::invalid_argument(format!(
                    "{text:?} is a prefix: give one IPv4 or IPv6 address"
                )));
            }
            Err(e) => return Err(Status::invalid_argument(e.to_string())),
        };
        let report = self.controller.ip_report(ip);
        Ok(Response::new(pb::CheckIpResponse {
            ip: report.ip.to_string(),
            lists: report
                .lists
                .into_iter()
                .map(|(list, entry)| pb::ListMatch { list, entry })
                .collect(),
            asn: report.asn.unwrap_or(0),
            country: report.country.unwrap_or_default(),
            network: report.network.unwrap_or_default(),
            country_blocked: report.country_blocked,
            asn_lists: report.asn_lists,
        }))
    }

    async fn list_feeds(
        &self,
        _request: Request<pb::ListFeedsRequest>,
    ) -> Result<Response<pb::ListFeedsResponse>, Status> {
        let feeds = self.feeds()?.statuses();
        Ok(Response::new(pb::ListFeedsResponse {
            feeds: feeds.into_iter().map(feed_status_to_wire).collect(),
        }))
    }

    async fn update_feeds(
        &self,
        request: Request<pb::UpdateFeedsRequest>,
    ) -> Result<Response<pb::UpdateFeedsResponse>, Status> {
        let names = request.into_inner().names;
        let feeds = self
            .feeds()?
            .update(&names)
            .await
            .map_err(status_from_feeds)?;
        Ok(Response::new(pb::UpdateFeedsResponse {
            feeds: feeds.into_iter().map(feed_status_to_wire).collect(),
        }))
    }

    async fn configure_feed(
        &self,
        request: Request<pb::ConfigureFeedRequest>,
    ) -> Result<Response<pb::FeedStatus>, Status> {
        let req = request.into_inner();
        let status = self
            .feeds()?
            .configure(&req.name, req.enabled, req.url.as_deref())
            .await
            .map_err(status_from_feeds)?;
        Ok(Response::new(feed_status_to_wire(status)))
    }

    async fn check_entry(
        &self,
        request: Request<pb::CheckEntryRequest>,
    ) -> Result<Response<pb::CheckEntryResponse>, Status> {
        let req = request.into_inner();
        let list = list_kind(req.list)?;
        let query = Entry::parse_user(list.entry_kind(), &req.query)
            .map_err(|e| Status::invalid_argument(format!("query: {e}")))?;
        let result = self.controller.check(list, &query);
        let (found, matches) = (
            result.found,
            result.matches.iter().map(Entry::to_string).collect(),
        );
        Ok(Response::new(pb::CheckEntryResponse { found, matches }))
    }

    async fn explain(
        &self,
        request: Request<pb::ExplainQuery>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let query = Query::parse(request.get_ref()).map_err(status_from_explain)?;
        let response = self
            .controller
            .explain(&query)
            .await
            .map_err(status_from_explain)?;
        Ok(Response::new(response))
    }

    type EventsStream = Pin<Box<dyn Stream<Item = Result<pb::EventBatch, Status>> + Send>>;

    async fn events(
        &self,
        request: Request<pb::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let req = request.into_inner();
        let recent = usize::try_from(req.recent).unwrap_or(usize::MAX);
        let stream = self.controller.events().stream(recent, req.follow).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }
}

fn modify_response(change: &crate::core::Change) -> pb::ModifyEntriesResponse {
    pb::ModifyEntriesResponse {
        changed: u32::try_from(change.changed.len()).unwrap_or(u32::MAX),
        generation: change.generation,
        applied: change.applied,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod stats_tests {
    use super::*;

    #[test]
    fn stats_from_the_dataplane_are_clipped() {
        let long = "x".repeat(1000);
        let named = |n: usize| {
            (0..n)
                .map(|i| pb::NamedCount {
                    name: format!("{long}{i}"),
                    count: 1,
                })
                .collect::<Vec<_>>()
        };
        let wire = pb::DataplaneStats {
            instance_id: 9,
            trusted: named(MAX_NAMED + 50),
            inspect: named(3),
            queues: (0..200)
                .map(|q| pb::QueueStats {
                    queue: q,
                    ..pb::QueueStats::default()
                })
                .collect(),
            decisions: (0..MAX_DECISIONS + 1)
                .map(|_| pb::DecisionCount {
                    verdict: long.clone(),
                    ..pb::DecisionCount::default()
                })
                .collect(),
            rate_limiter: Some(pb::RateLimiterStats {
                keys: 1,
                capacity: 2,
                untracked: 3,
            }),
            ..pb::DataplaneStats::default()
        };
        let s = stats_from_wire(&wire);
        assert_eq!(s.instance_id, 9);
        assert_eq!(s.trusted.len(), MAX_NAMED);
        assert!(
            s.trusted
                .iter()
                .all(|n| n.name.chars().count() == MAX_LABEL)
        );
        assert_eq!(s.inspect.len(), 3);
        assert_eq!(s.queues.len(), MAX_QUEUES);
        assert_eq!(s.decisions.len(), MAX_DECISIONS);
        assert!(s.decisions.iter().all(|d| d.verdict.len() == MAX_LABEL));
        assert_eq!(s.rate_limiter.map(|l| l.untracked), Some(3));
        assert_eq!(s.revocation, None);
        // and back to the wire for the status, unchanged
        assert_eq!(stats_from_wire(&stats_to_wire(&s)), s);
    }
}
