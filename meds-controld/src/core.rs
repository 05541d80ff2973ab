//! The controller's core: the one place policy changes happen.
//!
//! REST handlers, the admin gRPC service and (later) the feed updater all call [`Controller`].
//! A change is committed to SQLite first; only after the commit are the in-memory view and the
//! dataplane updated, in generation order. The sync service subscribes with
//! [`Controller::subscribe`], which hands out a consistent snapshot and a receiver for every
//! later delta, with nothing lost or duplicated between the two.
//!
//! Must not: do I/O other than through [`Store`], or hold a lock across an `.await`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use meds_proto::{Cidr, DomainName, Entry, EntryKind, IpAsn, ListKind, pb};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::store::{MetricRow, Store, StoreError};
use crate::totals::{self, SeriesKey, Totals};

/// Most entries one request may add or remove.
pub const MAX_ENTRIES_PER_REQUEST: usize = 1_000_000;
/// Deltas buffered per subscriber before it must resync from a snapshot.
const DELTA_BUFFER: usize = 1024;
/// Longest wait for the dataplane to acknowledge a change.
pub const APPLY_WAIT: Duration = Duration::from_secs(2);
/// Commit instants kept for generations not yet acknowledged (the oldest go first).
const MAX_PENDING_COMMITS: usize = 1024;
/// Shortest interval between two writes of the counter totals.
pub const TOTALS_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// Told how long each acknowledged generation took from its commit to the dataplane's ack.
pub type ApplyObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// Why a policy change failed. Nothing was changed when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{given} entries in one request: the limit is {max}")]
    TooManyEntries { given: usize, max: usize },
    #[error("store task failed: {0}")]
    Task(String),
    #[error("the {0} list is filled by its feed and cannot be edited")]
    FeedList(&'static str),
}

/// The outcome of a committed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Entries actually added or removed.
    pub changed: Vec<Entry>,
    /// Policy generation after the change.
    pub generation: u64,
    /// True when a connected dataplane acknowledged `generation` before we answered.
    pub applied: bool,
}

/// The answer to "does this list match the query?" ([`Controller::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Some stored entry matches the query (see [`Controller::check`] for what matches).
    pub found: bool,
    /// The stored entries that match, most specific first.
    pub matches: Vec<Entry>,
}

/// One committed change, as streamed to the dataplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub generation: u64,
    pub list: ListKind,
    pub add: Vec<Entry>,
    pub remove: Vec<Entry>,
}

/// The whole policy at one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub generation: u64,
    pub lists: BTreeMap<ListKind, Vec<Entry>>,
}

/// Counters last reported by the dataplane (cumulative for its instance; see
/// [`crate::totals`] for the totals that survive restarts). Field meanings are those of
/// `meds.v1.DataplaneStats`; label values are clipped (`grpc::stats_from_wire`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DataplaneStats {
    pub packets_processed: u64,
    pub updates_rejected: u64,
    pub verdict_errors: u64,
    pub started_at_unix: u64,
    pub decisions: Vec<DecisionStat>,
    /// 0: a dataplane older than the field.
    pub instance_id: u64,
    pub recv_errors: u64,
    /// Flows offloaded as trusted, by the accepting decision's reason.
    pub trusted: Vec<NamedStat>,
    pub flows_blocked: u64,
    /// Payload inspection events by name.
    pub inspect: Vec<NamedStat>,
    /// `None`: no revocation thread.
    pub revocation: Option<RevocationStat>,
    /// `None`: the rate limiter is off.
    pub rate_limiter: Option<RateLimiterStat>,
    pub queues: Vec<QueueStat>,
    /// Gauge (0: unknown).
    pub resident_memory_bytes: u64,
    pub events_sampled: u64,
    pub events_suppressed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamedStat {
    pub name: String,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RevocationStat {
    pub passes: u64,
    pub flows_revoked: u64,
    pub flows_released: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RateLimiterStat {
    /// Gauge: sources tracked now.
    pub keys: u64,
    /// Gauge: most sources it can track.
    pub capacity: u64,
    pub untracked: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStat {
    pub queue: u32,
    /// Gauge: packets waiting for a verdict.
    pub waiting: u64,
    pub queue_dropped: u64,
    pub user_dropped: u64,
    pub enqueued: u64,
    pub not_queued: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionStat {
    pub verdict: String,
    pub filter: String,
    pub reason: String,
    pub packets: u64,
}

/// The dataplane's packet-path settings, as it reported them in its Hello. Shown, never acted
/// on: the field meanings are those of `meds.v1.DataplaneSettings`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DataplaneSettings {
    /// A full queue accepts packets (NFQA_CFG_F_FAIL_OPEN); false: it drops them.
    pub fail_open: bool,
    /// Packets pass while no dataplane is bound (`--queue-bypass`); false: they are dropped.
    pub queue_bypass: bool,
    /// Decided flows are marked in conntrack and skip the queue.
    pub offload: bool,
    pub mark_trusted: u32,
    pub mark_blocked: u32,
    /// The queue hands over GSO/GRO super-packets unsegmented.
    pub gso: bool,
    /// Queue messages per receive call.
    pub recv_batch: u32,
    pub rate_limiter: bool,
    /// Packets per second per source.
    pub rate_limiter_rate: u64,
    pub rate_limiter_burst: u64,
    /// Prefix length IPv6 sources are grouped by.
    pub rate_limiter_ipv6_prefix: u32,
    /// Most sources tracked at once.
    pub rate_limiter_cache_size: u64,
    /// Packet threads (one queue each).
    pub readers: u32,
    pub queue_max_len: u32,
    pub copy_range: u32,
}

/// What the controller knows about the dataplane connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataplaneView {
    /// Identifies the current stream; 0 when none is connected.
    pub connection: u64,
    pub connected: bool,
    pub applied_generation: u64,
    pub version: String,
    pub queues: Vec<u32>,
    /// `None`: the dataplane did not report them (one older than the field), or none seen yet.
    pub settings: Option<DataplaneSettings>,
    pub stats: Option<DataplaneStats>,
}

/// Controller and dataplane health, JSON-ready (REST `/v1/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub controller_version: String,
    pub controller_uptime_seconds: u64,
    pub generation: u64,
    pub dataplane_connected: bool,
    pub applied_generation: u64,
    pub dataplane_version: String,
    pub dataplane_queues: Vec<u32>,
    /// Entries per list, keyed by the REST name (`whitelist`, `blacklist`).
    pub lists: BTreeMap<String, u64>,
    pub dataplane_stats: Option<DataplaneStats>,
    /// The settings the dataplane reported (kept after it disconnects, like its version);
    /// `null` when none was seen or it did not report them.
    pub dataplane_settings: Option<DataplaneSettings>,
}

/// The REST/CLI name of a list ([`ListKind::public_name`]).
pub fn public_name(list: ListKind) -> &'static str {
    list.public_name()
}

/// Everything the controller knows about one address (`medsctl check IP`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpReport {
    pub ip: std::net::IpAddr,
    /// Prefix lists (user lists and IP feeds) containing the address, with the most specific
    /// matching entry of each, keyed by [`public_name`].
    pub lists: BTreeMap<String, String>,
    /// ASN and country from the IP-to-ASN table (most specific row), if any.
    pub asn: Option<u32>,
    pub country: Option<String>,
    /// The covering IP-to-ASN row.
    pub network: Option<String>,
    /// True when the country is on the country blocklist.
    pub country_blocked: bool,
    /// The ASN lists (`asns`, `spamhaus_asndrop`) containing the ASN.
    pub asn_lists: Vec<String>,
}

struct View {
    generation: u64,
    lists: BTreeMap<ListKind, BTreeSet<Entry>>,
}

/// The controller's shared state. Cheap to share as `Arc<Controller>`.
pub struct Controller {
    store: Arc<Mutex<Store>>,
    /// Serialises writers so that commits, view updates and deltas keep generation order.
    writer: tokio::sync::Mutex<()>,
    view: RwLock<View>,
    deltas: broadcast::Sender<Arc<Delta>>,
    dataplane: watch::Sender<DataplaneView>,
    next_connection: std::sync::atomic::AtomicU64,
    started: Instant,
    /// Sampled drop events from the dataplane (observation only, never policy).
    events: Arc<crate::events::EventHub>,
    /// Explain requests to the connected dataplane.
    explainer: Arc<crate::explain::Explainer>,
    /// The dataplane's counter totals as last committed to the store (never ahead of it).
    totals: RwLock<Arc<Totals>>,
    /// Serialises the writers of `totals`.
    totals_writer: tokio::sync::Mutex<()>,
    /// The latest stats of the enforcing dataplane, for [`Controller::run_totals`].
    reported: watch::Sender<Option<DataplaneStats>>,
    /// When each generation not yet acknowledged was committed.
    commits: Mutex<BTreeMap<u64, Instant>>,
    apply_observer: OnceLock<ApplyObserver>,
}

/// Stored prefixes of `set` that cover `query`, most specific first.
fn covering(set: &BTreeSet<Entry>, query: &Cidr) -> Vec<Cidr> {
    // A prefix covering `query` has a length <= query's; walk every shorter mask.
    (0..=query.len())
        .rev()
        .filter_map(|len| Cidr::new(query.addr(), len).ok())
        .filter(|c| set.contains(&Entry::Prefix(*c)))
        .collect()
}

/// Stored names of `set` that are `query` or one of its parent domains, most specific first.
/// Label-aware: `bad.com` covers `www.bad.com`, never `badge.com`.
fn covering_names(set: &BTreeSet<Entry>, query: &DomainName) -> Vec<Entry> {
    let text = query.as_str();
    std::iter::once(0)
        .chain(text.match_indices('.').map(|(dot, _)| dot + 1))
        // Every label suffix of a valid name is a valid name under the lenient rules.
        .filter_map(|start| DomainName::from_feed(&text[start..]).ok())
        .map(Entry::Domain)
        .filter(|entry| set.contains(entry))
        .collect()
}

/// The most specific IP-to-ASN row covering `ip`.
fn ip_asn_row(set: &BTreeSet<Entry>, ip: std::net::IpAddr) -> Option<IpAsn> {
    let host = Cidr::host(ip);
    (0..=host.len()).rev().find_map(|len| {
        let prefix = Cidr::new(ip, len).ok()?;
        let start = Entry::IpAsn(IpAsn {
            prefix,
            asn: None,
            country: None,
        });
        match set.range(start..).next() {
            Some(Entry::IpAsn(row)) if row.prefix == prefix => Some(*row),
            _ => None,
        }
    })
}

impl Controller {
    /// Load the policy from `store` and build the controller around it.
    pub fn new(store: Store) -> Result<Arc<Controller>, CoreError> {
        let loaded = store.load()?;
        let (instance, rows) = store.load_metric_totals()?;
        let totals = Totals {
            instance,
            series: rows
                .into_iter()
                .map(|r| {
                    let key = SeriesKey {
                        metric: r.metric,
                        labels: r.labels,
                    };
                    (
                        key,
                        totals::Series {
                            base: r.base,
                            last: r.last,
                        },
                    )
                })
                .collect(),
        };
        let (deltas, _) = broadcast::channel(DELTA_BUFFER);
        let (dataplane, _) = watch::channel(DataplaneView::default());
        Ok(Arc::new(Controller {
            store: Arc::new(Mutex::new(store)),
            writer: tokio::sync::Mutex::new(()),
            view: RwLock::new(View {
                generation: loaded.generation,
                lists: loaded.lists,
            }),
            deltas,
            dataplane,
            next_connection: std::sync::atomic::AtomicU64::new(1),
            started: Instant::now(),
            events: Arc::new(crate::events::EventHub::default()),
            explainer: Arc::new(crate::explain::Explainer::default()),
            totals: RwLock::new(Arc::new(totals)),
            totals_writer: tokio::sync::Mutex::new(()),
            reported: watch::channel(None).0,
            commits: Mutex::new(BTreeMap::new()),
            apply_observer: OnceLock::new(),
        }))
    }

    /// The drop-event hub (fed by the sync stream, read by Admin `Events` and REST).
    pub fn events(&self) -> &Arc<crate::events::EventHub> {
        &self.events
    }

    /// The explain broker (fed by the sync stream, asked by Admin `Explain` and REST).
    pub fn explainer(&self) -> &Arc<crate::explain::Explainer> {
        &self.explainer
    }

    /// Ask the dataplane to explain `query` (see [`crate::explain`]), then name the exact
    /// stored entries behind its address matches: the dataplane's prefix sets merge
    /// overlapping and adjacent entries, so it can only show the merged block; the controller
    /// still has the entries. Only done when the dataplane evaluated the generation this
    /// controller holds, so the entries shown are the ones it matched.
    pub async fn explain(
        &self,
        query: &crate::explain::Query,
    ) -> Result<pb::ExplainResponse, crate::explain::ExplainError> {
        let mut response = self.explainer.explain(query).await?;
        if response.generation == self.generation() {
            let host = Entry::Prefix(Cidr::host(query.ip));
            for step in response
                .steps
                .iter_mut()
                .filter(|s| s.outcome == pb::ExplainOutcome::Match as i32)
            {
                let Some(list) = ListKind::from_public_name(&step.list) else {
                    continue;
                };
                if list.entry_kind() != EntryKind::Prefix {
                    continue;
                }
                if let Some(entry) = self.check(list, &host).matches.first() {
                    step.detail = format!("{} is in {entry} (stored entry)", query.ip);
                }
            }
        }
        Ok(response)
    }

    /// A controller on a fresh in-memory store (seeded like a new database), no dataplane.
    pub fn new_for_tests() -> Arc<Controller> {
        #[allow(clippy::expect_used)]
        // INVARIANT: an in-memory SQLite database with our migrations always opens.
        let store = Store::open_in_memory().expect("in-memory store opens");
        #[allow(clippy::expect_used)]
        // INVARIANT: a freshly migrated store loads.
        Controller::new(store).expect("fresh store loads")
    }

    fn read_view(&self) -> std::sync::RwLockReadGuard<'_, View> {
        // A poisoned lock only means a panic elsewhere mid-update of plain data; the view is
        // replaced wholesale per change, so reading it stays sound.
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.read_view().generation
    }

    /// Run `f` on the store, on a blocking thread, for state that is not policy (the feeds'
    /// settings and last good copies). Policy changes go through the methods below.
    pub async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, CoreError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&mut store.lock().unwrap_or_else(|e| e.into_inner())))
            .await
            .map_err(|e| CoreError::Task(e.to_string()))?
            .map_err(CoreError::from)
    }

    /// Every entry of `list`, sorted.
    pub fn list(&self, list: ListKind) -> Vec<Entry> {
        self.read_view()
            .lists
            .get(&list)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of entries in `list`.
    pub fn list_len(&self, list: ListKind) -> usize {
        self.read_view().lists.get(&list).map_or(0, BTreeSet::len)
    }

    /// Which entries of `list` match `query`:
    /// * a prefix list: the stored prefixes that contain the address (cover the prefix);
    /// * a domain list: the stored names equal to the name or a parent domain of it (what the
    ///   dataplane blocks or allows for that name), label-aware;
    /// * any other list: the entry itself, when stored (an exact match).
    ///
    /// An entry of another kind than the list holds matches nothing.
    pub fn check(&self, list: ListKind, query: &Entry) -> CheckResult {
        let view = self.read_view();
        let matches = match (view.lists.get(&list), query) {
            (None, _) => Vec::new(),
            (Some(_), q) if q.kind() != list.entry_kind() => Vec::new(),
            (Some(set), Entry::Prefix(cidr)) => {
                covering(set, cidr).into_iter().map(Entry::Prefix).collect()
            }
            (Some(set), Entry::Domain(name)) => covering_names(set, name),
            (Some(set), exact) => {
                if set.contains(exact) {
                    vec![exact.clone()]
                } else {
                    Vec::new()
                }
            }
        };
        CheckResult {
            found: !matches.is_empty(),
            matches,
        }
    }

    /// True when `entry` is in `list` (exact match).
    pub fn contains(&self, list: ListKind, entry: &Entry) -> bool {
        self.read_view()
            .lists
            .get(&list)
            .is_some_and(|s| s.contains(entry))
    }

    /// Which lists and feeds contain `ip`, and its ASN and country.
    pub fn ip_report(&self, ip: std::net::IpAddr) -> IpReport {
        let view = self.read_view();
        let host = Cidr::host(ip);
        let mut lists = BTreeMap::new();
        for kind in ListKind::ALL {
            if kind.entry_kind() != meds_proto::EntryKind::Prefix {
                continue;
            }
            if let Some(best) = view
                .lists
                .get(&kind)
                .and_then(|s| covering(s, &host).first().copied())
            {
                lists.insert(public_name(kind).to_string(), best.to_string());
            }
        }
        let row = view
            .lists
            .get(&ListKind::IpAsn)
            .and_then(|s| ip_asn_row(s, ip));
        let asn = row.and_then(|r| r.asn);
        let country = row.and_then(|r| r.country);
        let country_blocked = country.is_some_and(|c| {
            view.lists
                .get(&ListKind::CountryBlock)
                .is_some_and(|s| s.contains(&Entry::Country(c)))
        });
        let asn_lists = asn
            .map(|a| {
                [ListKind::AsnBlock, ListKind::FeedAsnDrop]
                    .into_iter()
                    .filter(|k| {
                        view.lists
                            .get(k)
                            .is_some_and(|s| s.contains(&Entry::Asn(a)))
                    })
                    .map(|k| public_name(k).to_string())
                    .collect()
            })
            .unwrap_or_default();
        IpReport {
            ip,
            lists,
            asn: asn.map(meds_proto::Asn::get),
            country: country.map(|c| c.to_string()),
            network: row.map(|r| r.prefix.to_string()),
            country_blocked,
            asn_lists,
        }
    }

    /// Replace the whole content of a feed list with `entries` (a validated, complete feed),
    /// publishing only the difference. Returns the change (empty when identical).
    pub async fn replace_feed(
        self: &Arc<Self>,
        list: ListKind,
        entries: BTreeSet<Entry>,
    ) -> Result<Change, CoreError> {
        if !list.is_feed() {
            return Err(CoreError::Task(format!("{list} is not a feed list")));
        }
        if let Some(bad) = entries.iter().find(|e| e.kind() != list.entry_kind()) {
            return Err(CoreError::Task(format!(
                "{list} holds {:?} entries, not {:?}",
                list.entry_kind(),
                bad.kind()
            )));
        }
        let this = Arc::clone(self);
        tokio::spawn(async move { this.commit_feed(list, entries).await })
            .await
            .map_err(|e| CoreError::Task(e.to_string()))?
    }

    async fn commit_feed(
        &self,
        list: ListKind,
        entries: BTreeSet<Entry>,
    ) -> Result<Change, CoreError> {
        let _writer = self.writer.lock().await;
        let (add, remove) = {
            let view = self.read_view();
            let empty = BTreeSet::new();
            let old = view.lists.get(&list).unwrap_or(&empty);
            let add: Vec<Entry> = entries.difference(old).cloned().collect();
            let remove: Vec<Entry> = old.difference(&entries).cloned().collect();
            (add, remove)
        };
        if add.is_empty() && remove.is_empty() {
            return Ok(Change {
                changed: Vec::new(),
                generation: self.generation(),
                applied: false,
            });
        }
        let store = Arc::clone(&self.store);
        let generation = tokio::task::spawn_blocking(move || {
            store
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .bump_generation()
        })
        .await
        .map_err(|e| CoreError::Task(e.to_string()))??;
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        view.lists.insert(list, entries);
        view.generation = generation;
        self.note_commit(generation);
        let changed: Vec<Entry> = add.iter().chain(remove.iter()).cloned().collect();
        let _ = self.deltas.send(Arc::new(Delta {
            generation,
            list,
            add,
            remove,
        }));
        drop(view);
        tracing::info!(list = %list, changed = changed.len(), generation, "feed list replaced");
        Ok(Change {
            changed,
            generation,
            applied: false,
        })
    }

    /// Add entries to `list` (idempotent). With `wait_applied`, waits up to [`APPLY_WAIT`] for
    /// the dataplane to acknowledge the change.
    pub async fn add(
        self: &Arc<Self>,
        list: ListKind,
        entries: Vec<Entry>,
        wait_applied: bool,
    ) -> Result<Change, CoreError> {
        self.modify(list, entries, true, wait_applied).await
    }

    /// Remove exactly the given entries from `list`.
    pub async fn remove(
        self: &Arc<Self>,
        list: ListKind,
        entries: Vec<Entry>,
        wait_applied: bool,
    ) -> Result<Change, CoreError> {
        self.modify(list, entries, false, wait_applied).await
    }

    async fn modify(
        self: &Arc<Self>,
        list: ListKind,
        entries: Vec<Entry>,
        add: bool,
        wait_applied: bool,
    ) -> Result<Change, CoreError> {
        if list.is_feed() {
            return Err(CoreError::FeedList(public_name(list)));
        }
        if entries.len() > MAX_ENTRIES_PER_REQUEST {
            return Err(CoreError::TooManyEntries {
                given: entries.len(),
                max: MAX_ENTRIES_PER_REQUEST,
            });
        }
        // Commit and publish on a task of their own: if our caller goes away (client
        // disconnect, timeout), the change still reaches the view and the dataplane, so memory
        // never lags behind SQLite.
        let this = Arc::clone(self);
        let changed =
            tokio::spawn(async move { this.commit_and_publish(list, entries, add).await })
                .await
                .map_err(|e| CoreError::Task(e.to_string()))??;
        let Some((changed, generation)) = changed else {
            let generation = self.generation();
            let dp = self.dataplane.borrow();
            let in_force = dp.connected && dp.applied_generation >= generation;
            return Ok(Change {
                changed: Vec::new(),
                generation,
                applied: in_force,
            });
        };
        let in_force = if wait_applied {
            self.wait_applied(generation, APPLY_WAIT).await
        } else {
            false
        };
        tracing::info!(
            list = %list,
            action = if add { "add" } else { "remove" },
            changed = changed.len(),
            generation,
            applied = in_force,
            "policy changed"
        );
        Ok(Change {
            changed,
            generation,
            applied: in_force,
        })
    }

    /// Commit to the store, then update the view and publish the delta, in generation order.
    /// `None` when nothing changed.
    async fn commit_and_publish(
        &self,
        list: ListKind,
        entries: Vec<Entry>,
        add: bool,
    ) -> Result<Option<(Vec<Entry>, u64)>, CoreError> {
        let _writer = self.writer.lock().await;
        let store = Arc::clone(&self.store);
        let applied = tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
            if add {
                store.add(list, &entries)
            } else {
                store.remove(list, &entries)
            }
        })
        .await
        .map_err(|e| CoreError::Task(e.to_string()))??;
        if applied.changed.is_empty() {
            return Ok(None);
        }
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        let set = view.lists.entry(list).or_default();
        for c in &applied.changed {
            if add {
                set.insert(c.clone());
            } else {
                set.remove(c);
            }
        }
        view.generation = applied.generation;
        self.note_commit(applied.generation);
        let (add_list, remove_list) = if add {
            (applied.changed.clone(), Vec::new())
        } else {
            (Vec::new(), applied.changed.clone())
        };
        // Sent under the view lock so that a concurrent `subscribe` sees either the change in
        // its snapshot or the delta on its receiver, never both or neither. An error only
        // means nobody is subscribed.
        let _ = self.deltas.send(Arc::new(Delta {
            generation: applied.generation,
            list,
            add: add_list,
            remove: remove_list,
        }));
        Ok(Some((applied.changed, applied.generation)))
    }

    /// A consistent snapshot plus a receiver for every delta committed after it.
    pub fn subscribe(&self) -> (Snapshot, broadcast::Receiver<Arc<Delta>>) {
        let view = self.read_view();
        let rx = self.deltas.subscribe();
        let snapshot = Snapshot {
            generation: view.generation,
            lists: ListKind::ALL
                .iter()
                .map(|k| {
                    let entries = view
                        .lists
                        .get(k)
                        .map(|s| s.iter().cloned().collect())
                        .unwrap_or_default();
                    (*k, entries)
                })
                .collect(),
        };
        (snapshot, rx)
    }

    /// Wait until a connected dataplane has acknowledged `generation`; false on timeout or
    /// when no dataplane is connected.
    pub async fn wait_applied(&self, generation: u64, timeout: Duration) -> bool {
        let mut rx = self.dataplane.subscribe();
        let wait = rx.wait_for(|d| !d.connected || d.applied_generation >= generation);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(d)) => d.connected && d.applied_generation >= generation,
            _ => false,
        }
    }

    /// Record a new dataplane stream of a dataplane that reported no settings; returns its
    /// connection id. See [`Controller::dataplane_connected_with`].
    pub fn dataplane_connected(&self, version: String, queues: Vec<u32>) -> u64 {
        self.dataplane_connected_with(version, queues, None)
    }

    /// Record a new dataplane stream with the settings from its Hello (`None`: it reported
    /// none, so none are shown, not those of an earlier dataplane); returns its connection id.
    pub fn dataplane_connected_with(
        &self,
        version: String,
        queues: Vec<u32>,
        settings: Option<DataplaneSettings>,
    ) -> u64 {
        let id = self
            .next_connection
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dataplane.send_modify(|d| {
            *d = DataplaneView {
                connection: id,
                connected: true,
                applied_generation: 0,
                version,
                queues,
                settings,
                stats: d.stats.take(),
            };
        });
        id
    }

    /// The dataplane on `connection` has made `generation` live.
    pub fn dataplane_acked(&self, connection: u64, generation: u64) {
        let advanced = self.dataplane.send_if_modified(|d| {
            if d.connection == connection && generation > d.applied_generation {
                d.applied_generation = generation;
                true
            } else {
                false
            }
        });
        if advanced {
            self.note_applied(generation);
        }
    }

    /// Record when `generation` was committed (for the apply-duration histogram).
    fn note_commit(&self, generation: u64) {
        let mut commits = self.commits.lock().unwrap_or_else(|e| e.into_inner());
        commits.insert(generation, Instant::now());
        while commits.len() > MAX_PENDING_COMMITS {
            commits.pop_first();
        }
    }

    /// `generation` is live: every commit up to it took until now to be applied.
    fn note_applied(&self, generation: u64) {
        let done: Vec<Instant> = {
            let mut commits = self.commits.lock().unwrap_or_else(|e| e.into_inner());
            let later = commits.split_off(&generation.saturating_add(1));
            std::mem::replace(&mut *commits, later)
                .into_values()
                .collect()
        };
        if let Some(observe) = self.apply_observer.get() {
            for committed in done {
                observe(committed.elapsed());
            }
        }
    }

    /// Be told the commit-to-ack duration of every acknowledged generation from now on (the
    /// metrics histogram). Only the first observer set is kept; false if one was already set.
    pub fn set_apply_observer(&self, observer: ApplyObserver) -> bool {
        self.apply_observer.set(observer).is_ok()
    }

    /// The dataplane's counter totals, as committed to the store.
    pub fn totals(&self) -> Arc<Totals> {
        Arc::clone(&self.totals.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Fold `stats` into the counter totals: persist what changed (one transaction), then
    /// publish it. Returns whether anything changed. On a store error nothing is published
    /// (the next call folds from the last committed state again).
    pub async fn fold_stats(&self, stats: &DataplaneStats) -> Result<bool, CoreError> {
        let _writer = self.totals_writer.lock().await;
        let mut next = Totals::clone(&self.totals());
        let instance = totals::instance_of(stats);
        let (new_instance, changed) = next.observe(instance, &totals::series_of(stats));
        if !new_instance && changed.is_empty() {
            return Ok(false);
        }
        let rows: Vec<MetricRow> = changed
            .iter()
            .filter_map(|key| {
                let s = next.series.get(key)?;
                Some(MetricRow {
                    metric: key.metric.clone(),
                    labels: key.labels.clone(),
                    base: s.base,
                    last: s.last,
                })
            })
            .collect();
        self.with_store(move |store| store.save_metric_totals(instance, &rows))
            .await?;
        *self.totals.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(true)
    }

    /// Fold the enforcing dataplane's stats into the totals as they arrive, at most once per
    /// [`TOTALS_WRITE_INTERVAL`], until `stop` turns true.
    pub async fn run_totals(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut reported = self.reported.subscribe();
        // Stats reported before the task started are folded first.
        reported.mark_changed();
        loop {
            tokio::select! {
                changed = reported.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            let stats = reported.borrow_and_update().clone();
            if let Some(stats) = stats
                && let Err(error) = self.fold_stats(&stats).await
            {
                tracing::warn!(
                    error = %error,
                    "cannot save the counter totals; metrics keep their last saved values"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(TOTALS_WRITE_INTERVAL) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Latest counters from the dataplane on `connection`.
    pub fn dataplane_stats(&self, connection: u64, stats: DataplaneStats) {
        let mut current = false;
        self.dataplane.send_if_modified(|d| {
            if d.connection == connection {
                d.stats = Some(stats.clone());
                current = true;
            }
            false
        });
        if current {
            self.reported.send_replace(Some(stats));
        }
    }

    /// The stream `connection` ended.
    pub fn dataplane_disconnected(&self, connection: u64) {
        self.dataplane.send_if_modified(|d| {
            if d.connection == connection {
                d.connected = false;
                d.connection = 0;
                d.applied_generation = 0;
                true
            } else {
                false
            }
        });
    }

    /// A copy of what we know about the dataplane.
    pub fn dataplane(&self) -> DataplaneView {
        self.dataplane.borrow().clone()
    }

    /// Controller and dataplane health.
    pub fn status(&self) -> Status {
        let (generation, lists) = {
            let view = self.read_view();
            let lists = ListKind::ALL
                .iter()
                .map(|k| {
                    let n = view.lists.get(k).map_or(0, |s| s.len() as u64);
                    (public_name(*k).to_string(), n)
                })
                .collect();
            (view.generation, lists)
        };
        let dp = self.dataplane();
        Status {
            controller_version: env!("CARGO_PKG_VERSION").to_string(),
            controller_uptime_seconds: self.started.elapsed().as_secs(),
            generation,
            dataplane_connected: dp.connected,
            applied_generation: dp.applied_generation,
            dataplane_version: dp.version,
            dataplane_queues: dp.queues,
            lists,
            dataplane_stats: dp.stats,
            dataplane_settings: dp.settings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(instance_id: u64, processed: u64) -> DataplaneStats {
        DataplaneStats {
            instance_id,
            packets_processed: processed,
            ..DataplaneStats::default()
        }
    }

    fn processed_total(ctl: &Controller) -> u64 {
        ctl.totals().value(&SeriesKey {
            metric: "meds_core_packets_processed_total".into(),
            labels: Vec::new(),
        })
    }

    #[tokio::test]
    async fn totals_survive_a_controller_restart_on_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meds.db");
        {
            let ctl = Controller::new(Store::open(&path).unwrap()).unwrap();
            assert_eq!(ctl.totals().instance, None);
            assert!(ctl.fold_stats(&stats(7, 10)).await.unwrap());
            assert!(ctl.fold_stats(&stats(8, 4)).await.unwrap());
            assert_eq!(processed_total(&ctl), 14);
        }
        let ctl = Controller::new(Store::open(&path).unwrap()).unwrap();
        assert_eq!(processed_total(&ctl), 14);
        assert_eq!(ctl.totals().instance, Some(8));
        // the same dataplane reconnects to the restarted controller: no double count, and a
        // lower value (it cannot be, but the dataplane is not trusted) is clipped
        assert!(!ctl.fold_stats(&stats(8, 4)).await.unwrap());
        assert!(!ctl.fold_stats(&stats(8, 2)).await.unwrap());
        assert_eq!(processed_total(&ctl), 14);
        assert!(ctl.fold_stats(&stats(8, 6)).await.unwrap());
        assert_eq!(processed_total(&ctl), 16);
        // a restarted dataplane starts from zero: added on top
        assert!(ctl.fold_stats(&stats(9, 1)).await.unwrap());
        assert_eq!(processed_total(&ctl), 17);
        drop(ctl);
        let ctl = Controller::new(Store::open(&path).unwrap()).unwrap();
        assert_eq!(processed_total(&ctl), 17);
    }

    #[tokio::test]
    async fn only_the_enforcing_dataplanes_stats_are_folded_by_the_task() {
        let ctl = Controller::new_for_tests();
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(Arc::clone(&ctl).run_totals(stop_rx));
        let old = ctl.dataplane_connected("v".into(), vec![0]);
        let current = ctl.dataplane_connected("v".into(), vec![0]);
        ctl.dataplane_stats(old, stats(1, 100));
        ctl.dataplane_stats(current, stats(2, 5));
        let deadline = Instant::now() + Duration::from_secs(5);
        while processed_total(&ctl) != 5 {
            assert!(Instant::now() < deadline, "totals not folded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(processed_total(&ctl), 5);
    }

    #[tokio::test]
    async fn apply_durations_are_observed_once_per_acknowledged_generation() {
        let ctl = Controller::new_for_tests();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        assert!(ctl.set_apply_observer(Box::new(move |d| sink.lock().unwrap().push(d))));
        assert!(!ctl.set_apply_observer(Box::new(|_| {})));
        let connection = ctl.dataplane_connected("v".into(), vec![0]);
        let mut generations = Vec::new();
        for ip in ["203.0.113.1", "203.0.113.2"] {
            let ch = ctl
                .add(ListKind::IpBlock, vec![c(ip)], false)
                .await
                .unwrap();
            generations.push(ch.generation);
        }
        ctl.dataplane_acked(connection, generations[1]);
        assert_eq!(seen.lock().unwrap().len(), 2);
        // acknowledging the same generation again observes nothing more
        ctl.dataplane_acked(connection, generations[1]);
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    fn c(s: &str) -> Entry {
        Entry::Prefix(s.parse().unwrap())
    }

    fn d(s: &str) -> Entry {
        Entry::parse_user(meds_proto::EntryKind::Domain, s).unwrap()
    }

    fn fp(kind: meds_proto::EntryKind, s: &str) -> Entry {
        Entry::parse_user(kind, s).unwrap()
    }

    #[tokio::test]
    async fn add_remove_and_generation_order() {
        let ctl = Controller::new_for_tests();
        let g0 = ctl.generation();
        let (snap, mut rx) = ctl.subscribe();
        assert_eq!(snap.generation, g0);
        assert!(snap.lists[&ListKind::IpAllow].contains(&c("10.0.0.0/8")));
        assert!(snap.lists[&ListKind::IpBlock].is_empty());

        let ch = ctl
            .add(
                ListKind::IpBlock,
                vec![c("203.0.113.7"), c("203.0.113.7")],
                false,
            )
            .await
            .unwrap();
        assert_eq!(ch.changed, vec![c("203.0.113.7/32")]);
        assert_eq!(ch.generation, g0 + 1);
        assert!(!ch.applied);
        let d = rx.recv().await.unwrap();
        assert_eq!(d.generation, g0 + 1);
        assert_eq!(d.add, vec![c("203.0.113.7/32")]);

        // Idempotent: nothing changes, no delta, same generation.
        let again = ctl
            .add(ListKind::IpBlock, vec![c("203.0.113.7")], false)
            .await
            .unwrap();
        assert!(again.changed.is_empty());
        assert_eq!(again.generation, g0 + 1);

        let rm = ctl
            .remove(ListKind::IpBlock, vec![c("203.0.113.7")], false)
            .await
            .unwrap();
        assert_eq!(rm.generation, g0 + 2);
        let d = rx.recv().await.unwrap();
        assert_eq!(d.remove, vec![c("203.0.113.7/32")]);
        assert!(ctl.list(ListKind::IpBlock).is_empty());
    }

    #[tokio::test]
    async fn check_finds_covering_prefixes_most_specific_first() {
        let ctl = Controller::new_for_tests();
        ctl.add(
            ListKind::IpBlock,
            vec![c("203.0.113.0/24"), c("203.0.0.0/16")],
            false,
        )
        .await
        .unwrap();
        let r = ctl.check(ListKind::IpBlock, &c("203.0.113.9"));
        assert!(r.found);
        assert_eq!(r.matches, vec![c("203.0.113.0/24"), c("203.0.0.0/16")]);
        assert!(ctl.check(ListKind::IpBlock, &c("203.0.113.0/25")).found);
        assert!(!ctl.check(ListKind::IpBlock, &c("203.0.0.0/8")).found);
        assert!(!ctl.check(ListKind::IpBlock, &c("198.51.100.1")).found);
        assert!(ctl.check(ListKind::IpAllow, &c("::1")).found);
        // Another kind of entry matches nothing.
        assert!(!ctl.check(ListKind::IpAllow, &d("example.com")).found);
    }

    #[tokio::test]
    async fn domain_check_is_label_aware_and_most_specific_first() {
        let ctl = Controller::new_for_tests();
        ctl.add(
            ListKind::DomainBlock,
            vec![
                d("bad.com"),
                d("www.bad.com"),
                d("zip"),
                d("_dmarc.example.org"),
            ],
            false,
        )
        .await
        .unwrap();
        // (query, matches, most specific first)
        let cases: [(&str, &[&str]); 11] = [
            ("bad.com", &["bad.com"]),
            ("www.bad.com", &["www.bad.com", "bad.com"]),
            ("a.www.bad.com", &["www.bad.com", "bad.com"]),
            ("x.bad.com", &["bad.com"]),
            ("badge.com", &[]),
            ("notbad.com", &[]),
            ("bad.community", &[]),
            ("com", &[]),
            ("files.zip", &["zip"]),
            ("_dmarc.example.org", &["_dmarc.example.org"]),
            ("example.org", &[]),
        ];
        for (query, want) in cases {
            let r = ctl.check(ListKind::DomainBlock, &d(query));
            let want: Vec<Entry> = want.iter().map(|w| d(w)).collect();
            assert_eq!(r.matches, want, "{query}");
            assert_eq!(r.found, !want.is_empty(), "{query}");
        }
        // Lists are separate.
        assert!(!ctl.check(ListKind::DomainAllow, &d("bad.com")).found);
        assert!(!ctl.check(ListKind::FeedStevenBlack, &d("bad.com")).found);
    }

    #[tokio::test]
    async fn domain_removal_is_exact() {
        let ctl = Controller::new_for_tests();
        let names = ["a.com", "x.a.com", "amazon.com", "apple.com"];
        ctl.add(
            ListKind::DomainBlock,
            names.iter().map(|n| d(n)).collect(),
            false,
        )
        .await
        .unwrap();
        let rm = ctl
            .remove(ListKind::DomainBlock, vec![d("A.com.")], false)
            .await
            .unwrap();
        assert_eq!(rm.changed, vec![d("a.com")]);
        assert_eq!(
            ctl.list(ListKind::DomainBlock),
            vec![d("amazon.com"), d("apple.com"), d("x.a.com")]
        );
        // Removing an absent parent removes nothing, not its subdomains.
        let none = ctl
            .remove(ListKind::DomainBlock, vec![d("a.com")], false)
            .await
            .unwrap();
        assert!(none.changed.is_empty());
        assert_eq!(ctl.list_len(ListKind::DomainBlock), 3);
    }

    #[tokio::test]
    async fn fingerprint_checks_are_exact() {
        use meds_proto::EntryKind::{Ja3, Ja4};
        let ctl = Controller::new_for_tests();
        let ja3 = fp(Ja3, "B386946A5A44D1DDCC843BC75336DFCE");
        let ja4 = fp(Ja4, "t13d1516h2_8daaf6152771_02713d6af862");
        ctl.add(ListKind::Ja3Block, vec![ja3.clone()], false)
            .await
            .unwrap();
        ctl.add(ListKind::Ja4Block, vec![ja4.clone()], false)
            .await
            .unwrap();
        let r = ctl.check(ListKind::Ja3Block, &ja3);
        assert_eq!((r.found, r.matches), (true, vec![ja3.clone()]));
        let other3 = fp(Ja3, "b386946a5a44d1ddcc843bc75336dfcf");
        assert!(!ctl.check(ListKind::Ja3Block, &other3).found);
        assert!(!ctl.check(ListKind::FeedSslblJa3, &ja3).found);
        let r = ctl.check(ListKind::Ja4Block, &ja4);
        assert_eq!((r.found, r.matches), (true, vec![ja4]));
        let other4 = fp(Ja4, "t13d1516h2_8daaf6152771_02713d6af863");
        assert!(!ctl.check(ListKind::Ja4Block, &other4).found);
        // A JA3 query on the JA4 list: another kind, no match.
        assert!(!ctl.check(ListKind::Ja4Block, &ja3).found);
    }

    #[tokio::test]
    async fn wait_applied_follows_acks_and_disconnects() {
        let ctl = Controller::new_for_tests();
        assert!(!ctl.wait_applied(1, Duration::from_millis(10)).await);
        let conn = ctl.dataplane_connected("t".into(), vec![0]);
        let g = ctl.generation() + 1;
        let waiter = {
            let ctl = Arc::clone(&ctl);
            tokio::spawn(async move {
                ctl.add(ListKind::IpBlock, vec![c("203.0.113.1")], true)
                    .await
            })
        };
        // Ack from a stale connection is ignored.
        ctl.dataplane_acked(conn + 100, g);
        tokio::time::timeout(Duration::from_secs(5), async {
            while ctl.generation() < g {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        ctl.dataplane_acked(conn, g);
        let ch = waiter.await.unwrap().unwrap();
        assert!(ch.applied);
        assert_eq!(ctl.status().applied_generation, g);
        ctl.dataplane_disconnected(conn);
        assert!(!ctl.status().dataplane_connected);
        let ch = ctl
            .add(ListKind::IpBlock, vec![c("203.0.113.2")], true)
            .await
            .unwrap();
        assert!(!ch.applied);
    }

    #[test]
    fn dataplane_settings_follow_the_latest_hello_and_outlive_a_disconnect() {
        let ctl = Controller::new_for_tests();
        assert_eq!(ctl.status().dataplane_settings, None);
        let settings = DataplaneSettings {
            queue_bypass: true,
            readers: 2,
            ..DataplaneSettings::default()
        };
        let conn = ctl.dataplane_connected_with("t".into(), vec![0], Some(settings));
        assert_eq!(ctl.status().dataplane_settings, Some(settings));
        ctl.dataplane_disconnected(conn);
        let status = ctl.status();
        assert!(!status.dataplane_connected);
        assert_eq!(
            (status.dataplane_version.as_str(), status.dataplane_settings),
            ("t", Some(settings))
        );
        // A dataplane that reports none: unknown, not the previous one's.
        ctl.dataplane_connected("old".into(), vec![0]);
        assert_eq!(ctl.status().dataplane_settings, None);
    }

    #[tokio::test]
    async fn too_many_entries_is_refused_before_touching_the_store() {
        let ctl = Controller::new_for_tests();
        let many = vec![c("203.0.113.1"); MAX_ENTRIES_PER_REQUEST + 1];
        let err = ctl.add(ListKind::IpBlock, many, false).await.unwrap_err();
        assert!(matches!(err, CoreError::TooManyEntries { .. }));
        assert!(ctl.list(ListKind::IpBlock).is_empty());
    }

    fn cc(s: &str) -> Entry {
        Entry::Country(s.parse().unwrap())
    }

    fn asn(s: &str) -> Entry {
        Entry::Asn(s.parse().unwrap())
    }

    /// An IP-to-ASN row; `0` / `""` for an unknown ASN / country.
    fn row(prefix: &str, asn: u32, country: &str) -> Entry {
        Entry::IpAsn(IpAsn {
            prefix: prefix.parse().unwrap(),
            asn: (asn != 0).then(|| meds_proto::Asn::new(asn).unwrap()),
            country: (!country.is_empty())
                .then(|| meds_proto::CountryCode::from_feed(country).unwrap()),
        })
    }

    fn ip(s: &str) -> std::net::IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn contains_is_an_exact_match_per_list() {
        let ctl = Controller::new_for_tests();
        ctl.add(ListKind::CountryBlock, vec![cc("FR"), cc("de")], false)
            .await
            .unwrap();
        ctl.add(ListKind::AsnBlock, vec![asn("AS64496")], false)
            .await
            .unwrap();
        ctl.add(ListKind::IpBlock, vec![c("203.0.113.0/24")], false)
            .await
            .unwrap();
        // (list, entry, contained)
        let cases = [
            (ListKind::CountryBlock, cc("fr"), true),
            (ListKind::CountryBlock, cc("DE"), true),
            (ListKind::CountryBlock, cc("us"), false),
            (ListKind::AsnBlock, asn("64496"), true),
            (ListKind::AsnBlock, asn("64497"), false),
            (ListKind::FeedAsnDrop, asn("64496"), false),
            // Exact: a covered prefix is not "contained" (that is what `check` answers).
            (ListKind::IpBlock, c("203.0.113.0/24"), true),
            (ListKind::IpBlock, c("203.0.113.7"), false),
            (ListKind::IpAllow, c("10.0.0.0/8"), true),
        ];
        for (list, entry, want) in cases {
            assert_eq!(ctl.contains(list, &entry), want, "{list} {entry}");
        }
        assert_eq!(ctl.list(ListKind::CountryBlock), vec![cc("de"), cc("fr")]);
        assert_eq!(ctl.list_len(ListKind::AsnBlock), 1);
    }

    #[tokio::test]
    async fn feed_lists_refuse_user_edits_and_user_lists_refuse_replacement() {
        let ctl = Controller::new_for_tests();
        let g0 = ctl.generation();
        for list in ListKind::ALL.into_iter().filter(|l| l.is_feed()) {
            let entry = match list.entry_kind() {
                meds_proto::EntryKind::Prefix => c("203.0.113.0/24"),
                meds_proto::EntryKind::Asn => asn("64496"),
                meds_proto::EntryKind::Domain => d("ads.example"),
                meds_proto::EntryKind::Ja3 => fp(
                    meds_proto::EntryKind::Ja3,
                    "b386946a5a44d1ddcc843bc75336dfce",
                ),
                _ => row("203.0.113.0/24", 64496, "fr"),
            };
            let err = ctl.add(list, vec![entry.clone()], false).await.unwrap_err();
            assert!(matches!(err, CoreError::FeedList(_)), "{list}: {err:?}");
            assert!(err.to_string().contains(public_name(list)), "{err}");
            let err = ctl.remove(list, vec![entry], false).await.unwrap_err();
            assert!(matches!(err, CoreError::FeedList(_)), "{list}: {err:?}");
        }
        for list in ListKind::ALL.into_iter().filter(|l| !l.is_feed()) {
            let err = ctl
                .replace_feed(list, BTreeSet::new())
                .await
                .expect_err("user list");
            assert!(err.to_string().contains(list.name()), "{err}");
        }
        assert_eq!(ctl.generation(), g0);
        assert!(!ctl.list(ListKind::IpAllow).is_empty(), "not replaced");
    }

    #[tokio::test]
    async fn replace_feed_publishes_only_the_difference() {
        let ctl = Controller::new_for_tests();
        let (_, mut rx) = ctl.subscribe();
        let g0 = ctl.generation();
        let base: BTreeSet<Entry> = (0..10_000u32)
            .map(|i| Entry::Prefix(Cidr::host(std::net::IpAddr::V4((0xC633_0000 + i).into()))))
            .collect();

        let first = ctl
            .replace_feed(ListKind::FeedFireHol, base.clone())
            .await
            .unwrap();
        assert_eq!(first.changed.len(), 10_000);
        assert_eq!(first.generation, g0 + 1);
        let d = rx.recv().await.unwrap();
        assert_eq!((d.generation, d.list), (g0 + 1, ListKind::FeedFireHol));
        assert_eq!((d.add.len(), d.remove.len()), (10_000, 0));

        // Identical content: no generation, no delta.
        let same = ctl
            .replace_feed(ListKind::FeedFireHol, base.clone())
            .await
            .unwrap();
        assert!(same.changed.is_empty());
        assert_eq!(same.generation, g0 + 1);
        assert_eq!(ctl.generation(), g0 + 1);
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));

        // One row more: a delta of exactly that row.
        let mut plus = base.clone();
        plus.insert(c("203.0.113.0/24"));
        let one = ctl
            .replace_feed(ListKind::FeedFireHol, plus.clone())
            .await
            .unwrap();
        assert_eq!(one.changed, vec![c("203.0.113.0/24")]);
        assert_eq!(one.generation, g0 + 2);
        let d = rx.recv().await.unwrap();
        assert_eq!(d.generation, g0 + 2);
        assert_eq!(d.add, vec![c("203.0.113.0/24")]);
        assert!(d.remove.is_empty());

        // One row swapped for another: one add and one remove in one generation.
        let mut swapped = plus.clone();
        let gone = base.iter().next().unwrap().clone();
        swapped.remove(&gone);
        swapped.insert(c("198.51.100.0/24"));
        let two = ctl
            .replace_feed(ListKind::FeedFireHol, swapped.clone())
            .await
            .unwrap();
        assert_eq!(two.changed.len(), 2);
        let d = rx.recv().await.unwrap();
        assert_eq!(d.generation, g0 + 3);
        assert_eq!(d.add, vec![c("198.51.100.0/24")]);
        assert_eq!(d.remove, vec![gone]);

        // Other lists are untouched, the snapshot agrees, and user edits continue the sequence.
        assert!(ctl.list(ListKind::FeedSpamhaus).is_empty());
        let (snap, _) = ctl.subscribe();
        assert_eq!(snap.generation, g0 + 3);
        assert_eq!(snap.lists[&ListKind::FeedFireHol].len(), 10_001);
        let user = ctl
            .add(ListKind::IpBlock, vec![c("192.0.2.1")], false)
            .await
            .unwrap();
        assert_eq!(user.generation, g0 + 4);

        // Emptying a feed removes everything it had.
        let empty = ctl
            .replace_feed(ListKind::FeedFireHol, BTreeSet::new())
            .await
            .unwrap();
        assert_eq!(empty.changed.len(), 10_001);
        assert_eq!(empty.generation, g0 + 5);
        assert_eq!(ctl.list_len(ListKind::FeedFireHol), 0);
    }

    #[tokio::test]
    async fn ip_report_combines_lists_feeds_and_the_ip_to_asn_table() {
        let ctl = Controller::new_for_tests();
        let table: BTreeSet<Entry> = [
            row("203.0.0.0/16", 64496, "fr"),
            row("203.0.113.0/24", 64497, "de"),
            row("203.0.113.128/25", 0, "nl"),
            row("198.51.100.0/24", 64511, ""),
            row("2001:db8::/32", 64500, "us"),
            row("0.0.0.0/1", 64501, "gb"),
        ]
        .into_iter()
        .collect();
        ctl.replace_feed(ListKind::IpAsn, table).await.unwrap();
        ctl.replace_feed(
            ListKind::FeedFireHol,
            [c("203.0.0.0/16"), c("203.0.113.0/24")]
                .into_iter()
                .collect(),
        )
        .await
        .unwrap();
        ctl.replace_feed(ListKind::FeedAsnDrop, [asn("64497")].into_iter().collect())
            .await
            .unwrap();
        ctl.add(ListKind::IpBlock, vec![c("203.0.113.7")], false)
            .await
            .unwrap();
        ctl.add(ListKind::CountryBlock, vec![cc("de"), cc("us")], false)
            .await
            .unwrap();
        ctl.add(ListKind::AsnBlock, vec![asn("64497"), asn("64500")], false)
            .await
            .unwrap();

        let r = ctl.ip_report(ip("203.0.113.7"));
        assert_eq!(r.ip, ip("203.0.113.7"));
        assert_eq!(
            r.lists,
            BTreeMap::from([
                ("blacklist".to_string(), "203.0.113.7/32".to_string()),
                ("firehol".to_string(), "203.0.113.0/24".to_string()),
            ])
        );
        // The /24 is more specific than the /16 and the /1.
        assert_eq!(r.asn, Some(64497));
        assert_eq!(r.country.as_deref(), Some("de"));
        assert_eq!(r.network.as_deref(), Some("203.0.113.0/24"));
        assert!(r.country_blocked);
        assert_eq!(r.asn_lists, ["asns", "spamhaus_asndrop"]);

        // Edges of the /24 and of the /25 inside it. (ip, asn, country, network, blocked)
        type Case = (
            &'static str,
            Option<u32>,
            Option<&'static str>,
            Option<&'static str>,
            bool,
        );
        let cases: [Case; 9] = [
            (
                "203.0.113.0",
                Some(64497),
                Some("de"),
                Some("203.0.113.0/24"),
                true,
            ),
            (
                "203.0.113.127",
                Some(64497),
                Some("de"),
                Some("203.0.113.0/24"),
                true,
            ),
            // The /25 row has no ASN: the most specific row wins even so.
            (
                "203.0.113.128",
                None,
                Some("nl"),
                Some("203.0.113.128/25"),
                false,
            ),
            (
                "203.0.113.255",
                None,
                Some("nl"),
                Some("203.0.113.128/25"),
                false,
            ),
            (
                "203.0.112.255",
                Some(64496),
                Some("fr"),
                Some("203.0.0.0/16"),
                false,
            ),
            (
                "203.0.114.0",
                Some(64496),
                Some("fr"),
                Some("203.0.0.0/16"),
                false,
            ),
            (
                "198.51.100.1",
                Some(64511),
                None,
                Some("198.51.100.0/24"),
                false,
            ),
            (
                "2001:db8::1",
                Some(64500),
                Some("us"),
                Some("2001:db8::/32"),
                true,
            ),
            // An IPv4 row never covers an IPv6 address.
            ("2001:db9::1", None, None, None, false),
        ];
        for (addr, want_asn, want_cc, want_net, blocked) in cases {
            let r = ctl.ip_report(ip(addr));
            assert_eq!(r.asn, want_asn, "{addr}");
            assert_eq!(r.country.as_deref(), want_cc, "{addr}");
            assert_eq!(r.network.as_deref(), want_net, "{addr}");
            assert_eq!(r.country_blocked, blocked, "{addr}");
        }
        assert_eq!(ctl.ip_report(ip("2001:db8::1")).asn_lists, ["asns"]);
        assert!(ctl.ip_report(ip("203.0.113.200")).asn_lists.is_empty());
        assert!(ctl.ip_report(ip("203.0.114.0")).asn_lists.is_empty());

        // Allowlist and feeds both reported; the most specific entry per list.
        let r = ctl.ip_report(ip("10.1.2.3"));
        assert_eq!(
            r.lists,
            BTreeMap::from([("whitelist".to_string(), "10.0.0.0/8".to_string())])
        );
        assert_eq!(r.network.as_deref(), Some("0.0.0.0/1"));
        assert_eq!(r.asn, Some(64501));
        let r = ctl.ip_report(ip("203.0.114.9"));
        assert_eq!(
            r.lists,
            BTreeMap::from([("firehol".to_string(), "203.0.0.0/16".to_string())])
        );

        // Nothing anywhere: an empty report.
        let r = ctl.ip_report(ip("192.0.2.1"));
        assert!(r.lists.is_empty());
        // 192.0.2.1 is just outside 0.0.0.0/1.
        assert_eq!((r.asn, r.network), (None, None));
        let empty = Controller::new_for_tests().ip_report(ip("192.0.2.1"));
        assert_eq!(
            (
                empty.asn,
                empty.country,
                empty.network,
                empty.country_blocked
            ),
            (None, None, None, false)
        );
        assert!(empty.lists.is_empty() && empty.asn_lists.is_empty());
    }
}
