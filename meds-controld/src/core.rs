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
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use meds_proto::{Cidr, ListKind};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::store::{Store, StoreError};

/// Most entries one request may add or remove.
pub const MAX_ENTRIES_PER_REQUEST: usize = 1_000_000;
/// Deltas buffered per subscriber before it must resync from a snapshot.
const DELTA_BUFFER: usize = 1024;
/// Longest wait for the dataplane to acknowledge a change.
pub const APPLY_WAIT: Duration = Duration::from_secs(2);

/// Why a policy change failed. Nothing was changed when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{given} entries in one request: the limit is {max}")]
    TooManyEntries { given: usize, max: usize },
    #[error("store task failed: {0}")]
    Task(String),
}

/// The outcome of a committed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Entries actually added or removed.
    pub changed: Vec<Cidr>,
    /// Policy generation after the change.
    pub generation: u64,
    /// True when a connected dataplane acknowledged `generation` before we answered.
    pub applied: bool,
}

/// The answer to "is this address or prefix in the list?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// An address: some stored prefix contains it. A prefix: some stored prefix covers it.
    pub found: bool,
    /// Stored prefixes that contain (cover) the query, most specific first.
    pub matches: Vec<Cidr>,
}

/// One committed change, as streamed to the dataplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub generation: u64,
    pub list: ListKind,
    pub add: Vec<Cidr>,
    pub remove: Vec<Cidr>,
}

/// The whole policy at one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub generation: u64,
    pub lists: BTreeMap<ListKind, Vec<Cidr>>,
}

/// Counters last reported by the dataplane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DataplaneStats {
    pub packets_processed: u64,
    pub updates_rejected: u64,
    pub verdict_errors: u64,
    pub started_at_unix: u64,
    pub decisions: Vec<DecisionStat>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionStat {
    pub verdict: String,
    pub filter: String,
    pub reason: String,
    pub packets: u64,
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
}

/// The REST/CLI name of a list.
pub fn public_name(list: ListKind) -> &'static str {
    match list {
        ListKind::IpAllow => "whitelist",
        ListKind::IpBlock => "blacklist",
    }
}

struct View {
    generation: u64,
    lists: BTreeMap<ListKind, BTreeSet<Cidr>>,
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
}

impl Controller {
    /// Load the policy from `store` and build the controller around it.
    pub fn new(store: Store) -> Result<Arc<Controller>, CoreError> {
        let loaded = store.load()?;
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
        }))
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

    /// Every entry of `list`, sorted.
    pub fn list(&self, list: ListKind) -> Vec<Cidr> {
        self.read_view()
            .lists
            .get(&list)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Number of entries in `list`.
    pub fn list_len(&self, list: ListKind) -> usize {
        self.read_view().lists.get(&list).map_or(0, BTreeSet::len)
    }

    /// Which stored prefixes contain `query`.
    pub fn check(&self, list: ListKind, query: &Cidr) -> CheckResult {
        let view = self.read_view();
        let mut matches: Vec<Cidr> = view
            .lists
            .get(&list)
            .map(|s| {
                // A prefix covering `query` has a length <= query's; walk every shorter mask.
                (0..=query.len())
                    .rev()
                    .filter_map(|len| Cidr::new(query.addr(), len).ok())
                    .filter(|c| s.contains(c))
                    .collect()
            })
            .unwrap_or_default();
        matches.dedup();
        CheckResult {
            found: !matches.is_empty(),
            matches,
        }
    }

    /// Add entries to `list` (idempotent). With `wait_applied`, waits up to [`APPLY_WAIT`] for
    /// the dataplane to acknowledge the change.
    pub async fn add(
        self: &Arc<Self>,
        list: ListKind,
        entries: Vec<Cidr>,
        wait_applied: bool,
    ) -> Result<Change, CoreError> {
        self.modify(list, entries, true, wait_applied).await
    }

    /// Remove exactly the given entries from `list`.
    pub async fn remove(
        self: &Arc<Self>,
        list: ListKind,
        entries: Vec<Cidr>,
        wait_applied: bool,
    ) -> Result<Change, CoreError> {
        self.modify(list, entries, false, wait_applied).await
    }

    async fn modify(
        self: &Arc<Self>,
        list: ListKind,
        entries: Vec<Cidr>,
        add: bool,
        wait_applied: bool,
    ) -> Result<Change, CoreError> {
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
        entries: Vec<Cidr>,
        add: bool,
    ) -> Result<Option<(Vec<Cidr>, u64)>, CoreError> {
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
                set.insert(*c);
            } else {
                set.remove(c);
            }
        }
        view.generation = applied.generation;
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
                        .map(|s| s.iter().copied().collect())
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

    /// Record a new dataplane stream; returns its connection id.
    pub fn dataplane_connected(&self, version: String, queues: Vec<u32>) -> u64 {
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
                stats: d.stats.take(),
            };
        });
        id
    }

    /// The dataplane on `connection` has made `generation` live.
    pub fn dataplane_acked(&self, connection: u64, generation: u64) {
        self.dataplane.send_if_modified(|d| {
            if d.connection == connection && generation > d.applied_generation {
                d.applied_generation = generation;
                true
            } else {
                false
            }
        });
    }

    /// Latest counters from the dataplane on `connection`.
    pub fn dataplane_stats(&self, connection: u64, stats: DataplaneStats) {
        self.dataplane.send_if_modified(|d| {
            if d.connection == connection {
                d.stats = Some(stats);
            }
            false
        });
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
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

    #[tokio::test]
    async fn too_many_entries_is_refused_before_touching_the_store() {
        let ctl = Controller::new_for_tests();
        let many = vec![c("203.0.113.1"); MAX_ENTRIES_PER_REQUEST + 1];
        let err = ctl.add(ListKind::IpBlock, many, false).await.unwrap_err();
        assert!(matches!(err, CoreError::TooManyEntries { .. }));
        assert!(ctl.list(ListKind::IpBlock).is_empty());
    }
}
