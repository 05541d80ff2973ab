//! The dataplane's master copy of the policy, the live rule set built from it, and the state
//! file that lets a restarted dataplane enforce its last policy while the controller is away.
//!
//! * [`PolicyState`]: the lists as sets of typed entries ([`Entry`]) plus the generation they
//!   belong to. Updates from the sync stream are applied here and report which lists changed;
//!   [`PolicyState::build`] turns the state into an immutable [`RuleSet`].
//! * [`PolicyStore`]: owns the master copy (behind a mutex only the control plane touches) and
//!   the rule set last published. An update rebuilds only the components of the lists it
//!   changed (a one-address blocklist change never touches the IP-to-ASN table) and publishes
//!   the result to the packet path through an `ArcSwap`. Packet threads only ever `load()` the
//!   `ArcSwap`; they never see the mutex and never wait for a rebuild.
//! * The state file: the policy encoded exactly like the wire (full-update chunks, each prost
//!   length-delimited), written atomically and read back through a [`Stager`], so it is
//!   validated like any other input. A bad file is an error for the caller to log, never a
//!   panic.
//!
//! Nothing here runs on the packet path.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use meds_proto::sync::{
    CHUNK_ENTRIES, MAX_MESSAGE_BYTES, Stager, SyncError, Update, full_update_chunks,
};
use meds_proto::{Entry, ListKind, pb};
use prost::Message as _;
use tokio::sync::watch;

use crate::chain::RuleSet;

/// The lists the dataplane enforces, and the generation they belong to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// Generation of the last applied update (0: nothing applied yet).
    generation: u64,
    /// Only non-empty lists are present. Every entry is of its list's `entry_kind`.
    lists: BTreeMap<ListKind, BTreeSet<Entry>>,
}

impl PolicyState {
    /// An empty policy at generation 0.
    pub fn new() -> PolicyState {
        PolicyState::default()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The entries of one list, in order (empty when the list has none).
    pub fn entries(&self, kind: ListKind) -> impl Iterator<Item = &Entry> + '_ {
        self.lists.get(&kind).into_iter().flatten()
    }

    /// Number of entries of one list.
    pub fn list_len(&self, kind: ListKind) -> usize {
        self.lists.get(&kind).map_or(0, BTreeSet::len)
    }

    /// Number of entries over all lists.
    pub fn len(&self) -> usize {
        self.lists.values().map(BTreeSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// Apply a validated update and return the lists whose contents changed.
    ///
    /// A full update replaces every list (lists it does not name become empty); a delta
    /// changes only the lists it names, removals before additions, so a changed IP-to-ASN row
    /// (same prefix, new ASN) is the old row removed and the new one added. Removing an absent
    /// entry and adding a present one are no-ops; entries of a kind the list does not hold are
    /// ignored (the stager already refuses them).
    pub fn apply(&mut self, update: Update) -> BTreeSet<ListKind> {
        let mut changed = BTreeSet::new();
        if update.full {
            let mut incoming = update.lists;
            for kind in ListKind::ALL {
                let mut add = incoming.remove(&kind).map(|d| d.add).unwrap_or_default();
                let wanted = kind.entry_kind();
                add.retain(|e| e.kind() == wanted);
                // Sorting the snapshot (it arrives sorted) is linear; comparing it with the
                // list in force avoids building a second copy of an unchanged list, which is
                // what a reconnect's snapshot mostly is.
                add.sort_unstable();
                add.dedup();
                let unchanged = match self.lists.get(&kind) {
                    Some(current) => current.iter().eq(add.iter()),
                    None => add.is_empty(),
                };
                if unchanged {
                    continue;
                }
                changed.insert(kind);
                if add.is_empty() {
                    self.lists.remove(&kind);
                } else {
                    // Drop the old copy first; collecting a sorted Vec bulk-builds the tree.
                    self.lists.remove(&kind);
                    self.lists.insert(kind, add.into_iter().collect());
                }
            }
        } else {
            for (kind, delta) in update.lists {
                let wanted = kind.entry_kind();
                let set = self.lists.entry(kind).or_default();
                let mut removed: Vec<Entry> =
                    delta.remove.into_iter().filter(|e| set.remove(e)).collect();
                let mut added: Vec<Entry> = delta
                    .add
                    .into_iter()
                    .filter(|e| e.kind() == wanted && set.insert(e.clone()))
                    .collect();
                // Removed and added back in the same delta: the list is as it was.
                removed.sort_unstable();
                added.sort_unstable();
                if removed != added {
                    changed.insert(kind);
                }
            }
            self.lists.retain(|_, set| !set.is_empty());
        }
        self.generation = update.generation;
        changed
    }

    /// Build the immutable rule set the packet path evaluates, every list from scratch.
    pub fn build(&self) -> RuleSet {
        self.rebuild(&RuleSet::empty(), ListKind::ALL)
    }

    /// A rule set at this state's generation that shares every component of `base` except
    /// those of `changed`, which are rebuilt from this state.
    pub fn rebuild(&self, base: &RuleSet, changed: impl IntoIterator<Item = ListKind>) -> RuleSet {
        changed.into_iter().fold(
            base.clone().with_generation(self.generation),
            |rules, kind| rules.with_list(kind, self.entries(kind)),
        )
    }

    /// The policy as the chunks of one full update (what the controller would send).
    pub fn to_chunks(&self) -> Vec<pb::UpdateChunk> {
        let mut chunks = Vec::new();
        self.for_each_chunk(|c| chunks.push(c));
        chunks
    }

    /// The chunks of [`PolicyState::to_chunks`], one at a time (bounded memory for any size).
    pub fn for_each_chunk(&self, mut emit: impl FnMut(pb::UpdateChunk)) {
        let total = self.len();
        let mut done = 0usize;
        // The current chunk's entries, grouped by list; at most CHUNK_ENTRIES in all.
        let mut groups: Vec<(ListKind, Vec<Entry>)> = Vec::new();
        let mut in_chunk = 0usize;
        let mut flush = |groups: &mut Vec<(ListKind, Vec<Entry>)>, last: bool| {
            let borrowed: Vec<(ListKind, &[Entry])> =
                groups.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            // At most CHUNK_ENTRIES entries: full_update_chunks yields exactly one chunk.
            let mut chunks = full_update_chunks(self.generation, &borrowed);
            let count = chunks.len();
            for (i, chunk) in chunks.iter_mut().enumerate() {
                chunk.last = last && i + 1 == count;
            }
            chunks.into_iter().for_each(&mut emit);
            groups.clear();
        };
        for (kind, set) in &self.lists {
            for entry in set {
                match groups.last_mut() {
                    Some((k, v)) if k == kind => v.push(entry.clone()),
                    _ => groups.push((*kind, vec![entry.clone()])),
                }
                in_chunk += 1;
                done += 1;
                if in_chunk == CHUNK_ENTRIES {
                    flush(&mut groups, done == total);
                    in_chunk = 0;
                }
            }
        }
        if in_chunk > 0 || total == 0 {
            flush(&mut groups, true);
        }
    }
}

/// What [`PolicyStore::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Generation now in force.
    pub generation: u64,
    /// Lists whose component was rebuilt, with the time each took; every other component is
    /// shared with the previous rule set.
    pub rebuilt: Vec<(ListKind, Duration)>,
    /// Time from receiving the update to the new rule set being live (state update, rebuild,
    /// swap).
    pub elapsed: Duration,
}

/// The master copy plus the live rule set published to the packet path.
///
/// Every change bumps a revision, observable through [`PolicyStore::subscribe`]; the state-file
/// writer uses it to know when to write.
#[derive(Debug)]
pub struct PolicyStore {
    master: Mutex<Master>,
    live: Arc<ArcSwap<RuleSet>>,
    revision: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Master {
    state: PolicyState,
    /// The rule set last published (the base of the next incremental rebuild).
    rules: Arc<RuleSet>,
    /// The one published before it, kept until the next publish so that its memory is freed
    /// here, on the control thread, and never by a packet thread dropping the last reference.
    previous: Option<Arc<RuleSet>>,
    revision: u64,
}

impl PolicyStore {
    /// A store with an empty master copy that publishes into `live`.
    pub fn new(live: Arc<ArcSwap<RuleSet>>) -> PolicyStore {
        PolicyStore {
            master: Mutex::new(Master::default()),
            live,
            revision: watch::channel(0).0,
        }
    }

    /// The `ArcSwap` the packet path loads rule sets from.
    pub fn live(&self) -> &Arc<ArcSwap<RuleSet>> {
        &self.live
    }

    /// Generation of the policy in force.
    pub fn generation(&self) -> u64 {
        self.lock().state.generation
    }

    /// A copy of the master state (for tests and diagnostics; it may be large).
    pub fn snapshot(&self) -> PolicyState {
        self.lock().state.clone()
    }

    /// Number of entries of every non-empty list, in chain order.
    pub fn list_sizes(&self) -> Vec<(ListKind, usize)> {
        let master = self.lock();
        master
            .state
            .lists
            .iter()
            .map(|(kind, set)| (*kind, set.len()))
            .collect()
    }

    /// Bumped after every change; the value is the revision, not the generation.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// Apply an update, rebuild the components of the lists it changed and publish the new
    /// rule set. Blocking and CPU-bound when a large list changed: call it from a blocking
    /// thread, never from the packet path.
    pub fn apply(&self, update: Update) -> Applied {
        let started = Instant::now();
        let mut master = self.lock();
        let changed = master.state.apply(update);
        let mut rules = (*master.rules)
            .clone()
            .with_generation(master.state.generation);
        let mut rebuilt = Vec::with_capacity(changed.len());
        for kind in changed {
            let t = Instant::now();
            rules = rules.with_list(kind, master.state.entries(kind));
            rebuilt.push((kind, t.elapsed()));
        }
        let generation = self.publish(&mut master, rules);
        Applied {
            generation,
            rebuilt,
            elapsed: started.elapsed(),
        }
    }

    /// Replace the master copy (start-up from the state file), build it and publish it.
    pub fn restore(&self, state: PolicyState) -> u64 {
        let rules = state.build();
        let mut master = self.lock();
        master.state = state;
        self.publish(&mut master, rules)
    }

    /// Encode the master copy as a state file. `None` while nothing was ever applied
    /// (generation 0 cannot be written: the stager refuses it). Returns the revision encoded.
    pub fn encode_state_file(&self) -> Option<(u64, Vec<u8>)> {
        let master = self.lock();
        if master.state.generation == 0 {
            return None;
        }
        Some((master.revision, encode_state_file(&master.state)))
    }

    fn publish(&self, master: &mut Master, rules: RuleSet) -> u64 {
        let rules = Arc::new(rules);
        let replaced = std::mem::replace(&mut master.rules, Arc::clone(&rules));
        self.live.store(rules);
        // Frees the rule set before `replaced` (if nothing else holds it) on this thread.
        master.previous = Some(replaced);
        master.revision += 1;
        self.revision.send_replace(master.revision);
        master.state.generation
    }

    fn lock(&self) -> MutexGuard<'_, Master> {
        // A panic while holding the lock cannot leave a half-applied update visible to the
        // packet path (it only sees published rule sets), so keep going with the data.
        self.master.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Largest state file read at all (a policy at the stager's entry limit fits well below it).
pub const MAX_STATE_FILE_BYTES: u64 = 1 << 30;

/// Why a state file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {path} is {len} bytes, more than the limit of {MAX_STATE_FILE_BYTES}")]
    TooLarge { path: PathBuf, len: u64 },
    #[error("state file is corrupt at byte {offset}: {reason}")]
    Corrupt { offset: usize, reason: String },
    #[error("state file chunk at byte {offset} was refused: {source}")]
    Refused {
        offset: usize,
        #[source]
        source: SyncError,
    },
    #[error("state file ends before its update is complete")]
    Incomplete,
}

/// Encode a policy: its full-update chunks, each prost length-delimited, back to back.
pub fn encode_state_file(state: &PolicyState) -> Vec<u8> {
    let mut out = Vec::new();
    state.for_each_chunk(|chunk| {
        // Writing into a Vec cannot run out of room.
        let _ = chunk.encode_length_delimited(&mut out);
    });
    out
}

/// Decode and validate a state file: exactly one complete full update and nothing after it.
pub fn decode_state_file(bytes: &[u8]) -> Result<PolicyState, StateFileError> {
    let mut stager = Stager::new();
    let mut rest = bytes;
    let mut complete: Option<Update> = None;
    while !rest.is_empty() {
        let offset = bytes.len() - rest.len();
        if complete.is_some() {
            return Err(StateFileError::Corrupt {
                offset,
                reason: "data after the complete update".into(),
            });
        }
        let len =
            prost::decode_length_delimiter(&mut rest).map_err(|e| StateFileError::Corrupt {
                offset,
                reason: format!("bad length prefix: {e}"),
            })?;
        if len > MAX_MESSAGE_BYTES {
            return Err(StateFileError::Corrupt {
                offset,
                reason: format!("chunk of {len} bytes exceeds the limit of {MAX_MESSAGE_BYTES}"),
            });
        }
        let Some((body, after)) = rest.split_at_checked(len) else {
            return Err(StateFileError::Corrupt {
                offset,
                reason: format!("chunk of {len} bytes is truncated to {}", rest.len()),
            });
        };
        rest = after;
        let chunk = pb::UpdateChunk::decode(body).map_err(|e| StateFileError::Corrupt {
            offset,
            reason: e.to_string(),
        })?;
        complete = stager
            .push(&chunk)
            .map_err(|source| StateFileError::Refused { offset, source })?;
    }
    match complete {
        // The stager refuses a delta before a snapshot, so the only complete update that can
        // come first is a full one; check anyway rather than rely on it.
        Some(update) if update.full => {
            let mut state = PolicyState::new();
            state.apply(update);
            Ok(state)
        }
        Some(_) | None => Err(StateFileError::Incomplete),
    }
}

/// Write `bytes` to `path` atomically: `PATH.tmp` (mode 0600), fsync, rename, fsync the
/// directory. Creates the parent directory (mode 0700) if missing.
pub fn write_state_file(path: &Path, bytes: &[u8]) -> Result<(), StateFileError> {
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| StateFileError::Io { path: p, source }
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(io_err(parent))?;
    let tmp = tmp_path(path);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(StateFileError::Io { path: tmp, source });
    }
    if let Err(source) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(StateFileError::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_err(parent))
}

/// Read and validate the state file. `Ok(None)` when it does not exist.
pub fn read_state_file(path: &Path) -> Result<Option<PolicyState>, StateFileError> {
    let io_err = |source| StateFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let len = file.metadata().map_err(io_err)?.len();
    if len > MAX_STATE_FILE_BYTES {
        return Err(StateFileError::TooLarge {
            path: path.to_path_buf(),
            len,
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_STATE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_STATE_FILE_BYTES {
        return Err(StateFileError::TooLarge {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
        });
    }
    decode_state_file(&bytes).map(Some)
}

/// `PATH.tmp`, next to `PATH`.
fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Keep the state file in step with the store: write after every change, at most once per
/// `min_interval`, always the latest revision; on shutdown write whatever is still unwritten.
/// Encoding and I/O run on blocking threads. Write errors are logged and retried.
///
/// What is in force when this is called (not when the future is first polled) counts as
/// already written: it came from the state file, or is the empty start-up policy.
pub fn persist(
    store: Arc<PolicyStore>,
    path: PathBuf,
    min_interval: Duration,
    shutdown: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut changes = store.subscribe();
    let written = *changes.borrow_and_update();
    persist_from(store, path, min_interval, shutdown, changes, written)
}

async fn persist_from(
    store: Arc<PolicyStore>,
    path: PathBuf,
    min_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut changes: watch::Receiver<u64>,
    mut written: u64,
) {
    let mut failing = false;
    loop {
        if *changes.borrow_and_update() == written {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        match write_latest(&store, &path).await {
            Ok(Some((revision, generation))) => {
                written = revision;
                if failing {
                    tracing::info!(path = %path.display(), generation, "state file written again");
                }
                failing = false;
                tracing::debug!(path = %path.display(), generation, "state file written");
            }
            Ok(None) => written = *changes.borrow(),
            Err(e) => {
                if failing {
                    tracing::debug!(error = %e, "state file write failed again");
                } else {
                    tracing::warn!(error = %e, "could not write the state file; will retry");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(min_interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    if *changes.borrow() != written {
        match write_latest(&store, &path).await {
            Ok(_) => tracing::debug!(path = %path.display(), "state file written at shutdown"),
            Err(e) => tracing::warn!(error = %e, "could not write the state file at shutdown"),
        }
    }
}

/// Encode and write the current policy; returns (revision, generation) written.
async fn write_latest(
    store: &Arc<PolicyStore>,
    path: &Path,
) -> Result<Option<(u64, u64)>, StateFileError> {
    let store = Arc::clone(store);
    let path = path.to_path_buf();
    let joined = tokio::task::spawn_blocking(move || {
        let Some((revision, bytes)) = store.encode_state_file() else {
            return Ok(None);
        };
        write_state_file(&path, &bytes)?;
        Ok(Some((revision, store.generation())))
    })
    .await;
    match joined {
        Ok(result) => result,
        Err(e) => Err(StateFileError::Io {
            path: PathBuf::new(),
            source: io::Error::other(format!("state file writer task failed: {e}")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use meds_proto::Cidr;
    use meds_proto::sync::{ListDelta, delta_chunks};
    use meds_proto::{Asn, CountryCode, IpAsn};

    use super::*;

    fn c(s: &str) -> Entry {
        Entry::Prefix(s.parse().unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn asn(n: u32) -> Entry {
        Entry::Asn(Asn::new(n).unwrap())
    }

    fn country(code: &str) -> Entry {
        Entry::Country(code.parse::<CountryCode>().unwrap())
    }

    fn row(net: &str, asn_n: u32, cc: &str) -> Entry {
        Entry::IpAsn(IpAsn {
            prefix: net.parse().unwrap(),
            asn: Asn::new(asn_n).ok(),
            country: CountryCode::from_feed(cc).ok(),
        })
    }

    fn full_of(generation: u64, lists: Vec<(ListKind, Vec<Entry>)>) -> Update {
        Update {
            generation,
            full: true,
            lists: lists
                .into_iter()
                .map(|(k, add)| {
                    (
                        k,
                        ListDelta {
                            add,
                            remove: vec![],
                        },
                    )
                })
                .collect(),
        }
    }

    fn delta_of(generation: u64, kind: ListKind, add: Vec<Entry>, remove: Vec<Entry>) -> Update {
        Update {
            generation,
            full: false,
            lists: [(kind, ListDelta { add, remove })].into(),
        }
    }

    fn full(generation: u64, lists: &[(ListKind, &[&str])]) -> Update {
        full_of(
            generation,
            lists
                .iter()
                .map(|(k, v)| (*k, v.iter().map(|s| c(s)).collect()))
                .collect(),
        )
    }

    fn delta(generation: u64, kind: ListKind, add: &[&str], remove: &[&str]) -> Update {
        delta_of(
            generation,
            kind,
            add.iter().map(|s| c(s)).collect(),
            remove.iter().map(|s| c(s)).collect(),
        )
    }

    impl PolicyState {
        /// The lists as the contents of a full update.
        fn lists_as_updates(&self) -> Vec<(ListKind, Vec<Entry>)> {
            self.lists
                .iter()
                .map(|(k, set)| (*k, set.iter().cloned().collect()))
                .collect()
        }
    }

    fn entries(state: &PolicyState, kind: ListKind) -> Vec<String> {
        state.entries(kind).map(ToString::to_string).collect()
    }

    #[test]
    fn snapshot_then_deltas() {
        let mut s = PolicyState::new();
        assert_eq!((s.generation(), s.len(), s.is_empty()), (0, 0, true));

        s.apply(full(
            3,
            &[
                (ListKind::IpAllow, &["10.0.0.0/8"]),
                (ListKind::IpBlock, &["203.0.113.0/24", "2001:db8::/32"]),
            ],
        ));
        assert_eq!(s.generation(), 3);
        assert_eq!(entries(&s, ListKind::IpAllow), ["10.0.0.0/8"]);
        assert_eq!(
            entries(&s, ListKind::IpBlock),
            ["203.0.113.0/24", "2001:db8::/32"]
        );

        s.apply(delta(
            4,
            ListKind::IpBlock,
            &["198.51.100.7"],
            &["203.0.113.0/24"],
        ));
        assert_eq!(s.generation(), 4);
        assert_eq!(
            entries(&s, ListKind::IpBlock),
            ["198.51.100.7/32", "2001:db8::/32"]
        );
        assert_eq!(
            entries(&s, ListKind::IpAllow),
            ["10.0.0.0/8"],
            "untouched list kept"
        );

        // Removing an absent entry and re-adding a present one change nothing but the generation.
        let before = s.clone();
        s.apply(delta(
            5,
            ListKind::IpAllow,
            &["10.0.0.0/8"],
            &["192.0.2.0/24"],
        ));
        assert_eq!(s.generation(), 5);
        assert_eq!(s.lists, before.lists);

        // Removing the last entry of a list empties it.
        s.apply(delta(6, ListKind::IpAllow, &[], &["10.0.0.0/8"]));
        assert_eq!(entries(&s, ListKind::IpAllow), Vec::<String>::new());
        assert_eq!(s.len(), 2);

        // Remove and add of the same entry in one delta: removals first, so it stays.
        s.apply(delta(
            7,
            ListKind::IpBlock,
            &["198.51.100.7"],
            &["198.51.100.7"],
        ));
        assert_eq!(
            entries(&s, ListKind::IpBlock),
            ["198.51.100.7/32", "2001:db8::/32"]
        );
    }

    #[test]
    fn full_update_clears_lists_it_does_not_name() {
        let mut s = PolicyState::new();
        s.apply(full(
            1,
            &[
                (ListKind::IpAllow, &["10.0.0.0/8"]),
                (ListKind::IpBlock, &["203.0.113.0/24"]),
            ],
        ));
        s.apply(full(9, &[(ListKind::IpBlock, &["198.51.100.0/24"])]));
        assert_eq!(s.generation(), 9);
        assert!(entries(&s, ListKind::IpAllow).is_empty());
        assert_eq!(entries(&s, ListKind::IpBlock), ["198.51.100.0/24"]);
        // A full update may go back in generation (controller store reset) and may be empty.
        s.apply(full(2, &[]));
        assert_eq!((s.generation(), s.is_empty()), (2, true));
    }

    #[test]
    fn build_reflects_the_lists() {
        let mut s = PolicyState::new();
        s.apply(full(
            7,
            &[
                (ListKind::IpAllow, &["203.0.113.7"]),
                (ListKind::IpBlock, &["203.0.113.0/24", "2001:db8::/32"]),
            ],
        ));
        let rules = s.build();
        assert_eq!(rules.generation(), 7);
        assert_eq!(rules.allow().len(), 1);
        assert_eq!(rules.block().len(), 2);
        let cases = [
            ("203.0.113.7", true, true),
            ("203.0.113.0", false, true),
            ("203.0.113.255", false, true),
            ("203.0.114.0", false, false),
            ("2001:db8::1", false, true),
            ("2001:db9::", false, false),
        ];
        for (addr, allowed, blocked) in cases {
            assert_eq!(rules.allow().contains(ip(addr)), allowed, "allow {addr}");
            assert_eq!(rules.block().contains(ip(addr)), blocked, "block {addr}");
        }
        let empty = PolicyState::new().build();
        assert_eq!(empty.generation(), 0);
        assert!(empty.allow().is_empty() && empty.block().is_empty());
    }

    #[test]
    fn store_publishes_each_change() {
        let live = Arc::new(ArcSwap::from_pointee(RuleSet::empty()));
        let store = PolicyStore::new(Arc::clone(&live));
        let mut rev = store.subscribe();
        assert_eq!(
            store.encode_state_file(),
            None,
            "generation 0 is never written"
        );
        assert_eq!(
            store
                .apply(full(2, &[(ListKind::IpBlock, &["203.0.113.0/24"])]))
                .generation,
            2
        );
        assert!(rev.has_changed().unwrap());
        assert_eq!(*rev.borrow_and_update(), 1);
        assert_eq!(live.load().generation(), 2);
        assert!(live.load().block().contains(ip("203.0.113.9")));
        assert_eq!(
            store
                .apply(delta(3, ListKind::IpBlock, &[], &["203.0.113.0/24"]))
                .generation,
            3
        );
        assert!(!live.load().block().contains(ip("203.0.113.9")));
        assert_eq!(*rev.borrow_and_update(), 2);
        let mut restored = PolicyState::new();
        restored.apply(full(40, &[(ListKind::IpAllow, &["192.0.2.1"])]));
        assert_eq!(store.restore(restored.clone()), 40);
        assert_eq!(store.snapshot(), restored);
        assert_eq!(live.load().generation(), 40);
        let (revision, bytes) = store.encode_state_file().unwrap();
        assert_eq!(revision, 3);
        assert_eq!(decode_state_file(&bytes).unwrap(), restored);
    }

    #[test]
    fn apply_reports_exactly_the_changed_lists() {
        let mut s = PolicyState::new();
        let changed = s.apply(full_of(
            1,
            vec![
                (ListKind::IpBlock, vec![c("203.0.113.0/24")]),
                (ListKind::CountryBlock, vec![country("ru")]),
                (ListKind::IpAsn, vec![row("100.64.0.0/16", 64496, "ru")]),
            ],
        ));
        assert_eq!(
            changed.into_iter().collect::<Vec<_>>(),
            [ListKind::IpBlock, ListKind::CountryBlock, ListKind::IpAsn]
        );
        let cases: Vec<(&str, Update, Vec<ListKind>)> = vec![
            (
                "one blocklist address",
                delta(2, ListKind::IpBlock, &["192.0.2.1"], &[]),
                vec![ListKind::IpBlock],
            ),
            (
                "add present, remove absent",
                delta(3, ListKind::IpBlock, &["192.0.2.1"], &["198.51.100.1"]),
                vec![],
            ),
            (
                "remove and re-add in one delta",
                delta(4, ListKind::IpBlock, &["192.0.2.1"], &["192.0.2.1"]),
                vec![],
            ),
            (
                "changed IP-to-ASN row: same prefix, new ASN",
                delta_of(
                    5,
                    ListKind::IpAsn,
                    vec![row("100.64.0.0/16", 64497, "ru")],
                    vec![row("100.64.0.0/16", 64496, "ru")],
                ),
                vec![ListKind::IpAsn],
            ),
            (
                "removing a row that is not there exactly",
                delta_of(
                    6,
                    ListKind::IpAsn,
                    vec![],
                    vec![row("100.64.0.0/16", 64496, "ru")],
                ),
                vec![],
            ),
            (
                "wrong-kind entry ignored",
                delta_of(7, ListKind::CountryBlock, vec![asn(64496)], vec![]),
                vec![],
            ),
            (
                "same full snapshot again",
                full_of(
                    8,
                    vec![
                        (ListKind::IpBlock, vec![c("203.0.113.0/24"), c("192.0.2.1")]),
                        (ListKind::CountryBlock, vec![country("ru")]),
                        (ListKind::IpAsn, vec![row("100.64.0.0/16", 64497, "ru")]),
                    ],
                ),
                vec![],
            ),
            (
                "full snapshot that drops a list and adds one",
                full_of(
                    9,
                    vec![
                        (ListKind::IpBlock, vec![c("203.0.113.0/24"), c("192.0.2.1")]),
                        (ListKind::FeedAsnDrop, vec![asn(64497)]),
                        (ListKind::IpAsn, vec![row("100.64.0.0/16", 64497, "ru")]),
                    ],
                ),
                vec![ListKind::CountryBlock, ListKind::FeedAsnDrop],
            ),
        ];
        for (name, update, want) in cases {
            let generation = update.generation;
            let changed: Vec<ListKind> = s.apply(update).into_iter().collect();
            assert_eq!(changed, want, "{name}");
            assert_eq!(s.generation(), generation, "{name}");
        }
        let rows: Vec<String> = s.entries(ListKind::IpAsn).map(|e| e.to_string()).collect();
        assert_eq!(rows, ["100.64.0.0/16 64497 ru"]);
        assert_eq!(s.list_len(ListKind::CountryBlock), 0);
    }

    #[test]
    fn store_rebuilds_only_the_changed_components() {
        let live = Arc::new(ArcSwap::from_pointee(RuleSet::empty()));
        let store = PolicyStore::new(Arc::clone(&live));
        let applied = store.apply(full_of(1, big_state().lists_as_updates()));
        assert_eq!(applied.generation, 1);
        assert_eq!(applied.rebuilt.len(), ListKind::ALL.len());
        let first = live.load_full();
        assert_eq!(
            first.evaluate_source(ip("100.64.1.1")),
            crate::chain::Decision::COUNTRY
        );

        // One blocklist address: only the blocklist component is new.
        let applied = store.apply(delta(2, ListKind::IpBlock, &["198.51.100.7"], &[]));
        let names: Vec<ListKind> = applied.rebuilt.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, [ListKind::IpBlock]);
        let second = live.load_full();
        assert_eq!(second.generation(), 2);
        for kind in ListKind::ALL {
            assert_eq!(
                second.shares_list(&first, kind),
                kind != ListKind::IpBlock,
                "{kind}"
            );
        }
        assert!(Arc::ptr_eq(second.asn_table(), first.asn_table()));
        assert!(!Arc::ptr_eq(second.block(), first.block()));
        assert_eq!(
            second.evaluate_source(ip("198.51.100.7")),
            crate::chain::Decision::BLACKLISTED
        );

        // A changed IP-to-ASN row: only the table is rebuilt, and the new row is in force.
        let applied = store.apply(delta_of(
            3,
            ListKind::IpAsn,
            vec![row("100.64.0.0/16", 64496, "de")],
            vec![row("100.64.0.0/16", 64496, "ru")],
        ));
        let names: Vec<ListKind> = applied.rebuilt.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, [ListKind::IpAsn]);
        let third = live.load_full();
        for kind in ListKind::ALL {
            assert_eq!(
                third.shares_list(&second, kind),
                kind != ListKind::IpAsn,
                "{kind}"
            );
        }
        assert_eq!(
            third.evaluate_source(ip("100.64.1.1")),
            crate::chain::Decision::ASN_BLACKLISTED
        );

        // A no-op delta and a resent identical snapshot rebuild nothing.
        let applied = store.apply(delta(4, ListKind::IpBlock, &["198.51.100.7"], &[]));
        assert!(applied.rebuilt.is_empty());
        let again = store.snapshot();
        let applied = store.apply(full_of(5, again.lists_as_updates()));
        assert!(applied.rebuilt.is_empty());
        let fifth = live.load_full();
        assert_eq!(fifth.generation(), 5);
        assert!(ListKind::ALL.iter().all(|k| fifth.shares_list(&third, *k)));
        // The incrementally built rule set answers like one built from scratch.
        let scratch = store.snapshot().build();
        for addr in [
            "10.1.2.3",
            "203.0.113.9",
            "198.51.100.7",
            "198.51.100.8",
            "2001:db8:5::1",
            "192.0.2.1",
            "100.64.1.1",
            "100.65.1.1",
            "2001:db8:100::1",
            "8.8.4.4",
        ] {
            assert_eq!(
                fifth.evaluate_source(ip(addr)),
                scratch.evaluate_source(ip(addr)),
                "{addr}"
            );
        }
        let sizes = store.list_sizes();
        assert_eq!(sizes.len(), ListKind::ALL.len());
        assert_eq!(sizes[1], (ListKind::IpBlock, 5001));
    }

    fn big_state() -> PolicyState {
        // More entries than one chunk holds, both families, every list and entry kind.
        let block: Vec<Entry> = (0..5000u32)
            .map(|i| Entry::Prefix(Cidr::host(IpAddr::V4((0xCB00_7100u32 + i).into()))))
            .collect();
        let mut s = PolicyState::new();
        s.apply(full_of(
            12,
            vec![
                (
                    ListKind::IpAllow,
                    vec![c("10.0.0.0/8"), c("2001:db8:1::/48")],
                ),
                (ListKind::IpBlock, block),
                (ListKind::FeedFireHol, vec![c("198.51.100.0/24")]),
                (ListKind::FeedSpamhaus, vec![c("2001:db8:5::/48")]),
                (ListKind::FeedFeodo, vec![c("192.0.2.1")]),
                (ListKind::CountryBlock, vec![country("ru"), country("kp")]),
                (ListKind::AsnBlock, vec![asn(64496)]),
                (ListKind::FeedAsnDrop, vec![asn(64497), asn(4_200_000_000)]),
                (
                    ListKind::IpAsn,
                    vec![
                        row("100.64.0.0/16", 64496, "ru"),
                        row("100.65.0.0/16", 0, "de"),
                        row("2001:db8:100::/48", 64497, ""),
                    ],
                ),
                (ListKind::DomainAllow, vec![domain("good.example")]),
                (
                    ListKind::DomainBlock,
                    vec![domain("bad.example"), domain("xn--bcher-kva.example")],
                ),
                (ListKind::FeedStevenBlack, vec![domain("ads.example")]),
                (
                    ListKind::FeedSomeoneWhoCares,
                    vec![domain("-track.example")],
                ),
                (
                    ListKind::FeedSslblJa3,
                    vec![Entry::Ja3(
                        "e7d705a3286e19ea42f587b344ee6865".parse().unwrap(),
                    )],
                ),
                (
                    ListKind::Ja3Block,
                    vec![Entry::Ja3(
                        "6734f37431670b3ab4292b8f60f29984".parse().unwrap(),
                    )],
                ),
                (
                    ListKind::Ja4Block,
                    vec![Entry::Ja4(
                        "t13d1516h2_8daaf6152771_02713d6af862".parse().unwrap(),
                    )],
                ),
            ],
        ));
        s
    }

    fn domain(name: &str) -> Entry {
        Entry::Domain(meds_proto::DomainName::from_feed(name).unwrap())
    }

    #[test]
    fn state_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/policy.pb");
        // Exactly one chunk's worth: the last full chunk must carry `last`.
        let exact: Vec<Entry> = (0..CHUNK_ENTRIES as u32)
            .map(|i| Entry::Asn(Asn::new(i + 1).unwrap()))
            .collect();
        let mut exact_state = PolicyState::new();
        exact_state.apply(full_of(3, vec![(ListKind::FeedAsnDrop, exact)]));
        assert_eq!(exact_state.to_chunks().len(), 1);
        assert_eq!(big_state().to_chunks().len(), 2);
        for state in [big_state(), exact_state, {
            let mut s = PolicyState::new();
            s.apply(full(1, &[]));
            s
        }] {
            let bytes = encode_state_file(&state);
            write_state_file(&path, &bytes).unwrap();
            assert_eq!(read_state_file(&path).unwrap(), Some(state));
            assert!(!tmp_path(&path).exists());
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(
            read_state_file(&dir.path().join("absent.pb")).unwrap(),
            None
        );
    }

    #[test]
    fn corrupt_state_files_are_errors_not_panics() {
        // An empty file holds no update.
        assert!(matches!(
            decode_state_file(&[]),
            Err(StateFileError::Incomplete)
        ));
        // Every strict prefix of a small file is refused (truncation anywhere).
        let mut small = PolicyState::new();
        small.apply(full(
            4,
            &[
                (ListKind::IpAllow, &["10.0.0.0/8", "2001:db8:1::/48"]),
                (ListKind::IpBlock, &["203.0.113.0/24", "2001:db8::1"]),
            ],
        ));
        let small = encode_state_file(&small);
        for cut in 1..small.len() {
            assert!(
                decode_state_file(&small[..cut]).is_err(),
                "prefix {cut} accepted"
            );
        }
        // A multi-chunk file: cuts around the chunk boundary (where the first chunk is complete
        // but the update is not) and spread over the rest.
        let bytes = encode_state_file(&big_state());
        let first_len = big_state().to_chunks()[0]
            .encode_length_delimited_to_vec()
            .len();
        let cuts = (first_len - 3..first_len + 4).chain((1..bytes.len()).step_by(251));
        for cut in cuts {
            assert!(
                decode_state_file(&bytes[..cut]).is_err(),
                "prefix {cut} accepted"
            );
        }
        assert!(matches!(
            decode_state_file(&bytes[..first_len]),
            Err(StateFileError::Incomplete)
        ));
        // Trailing garbage after a complete update.
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode_state_file(&trailing),
            Err(StateFileError::Corrupt { .. })
        ));
        // A length prefix beyond the message limit.
        let mut huge = Vec::new();
        prost::encode_length_delimiter(MAX_MESSAGE_BYTES + 1, &mut huge).unwrap();
        huge.extend([0u8; 8]);
        assert!(matches!(
            decode_state_file(&huge),
            Err(StateFileError::Corrupt { .. })
        ));
        // Random bytes.
        assert!(decode_state_file(&[0xff; 64]).is_err());
        // Valid framing but a delta first (not a snapshot).
        let d = delta_chunks(1, ListKind::IpBlock, &[c("203.0.113.1")], &[]);
        let framed = d[0].encode_length_delimited_to_vec();
        assert!(matches!(
            decode_state_file(&framed),
            Err(StateFileError::Refused {
                source: SyncError::DeltaBeforeSnapshot { .. },
                ..
            })
        ));
        // Flipped bytes never panic.
        for i in (0..bytes.len()).step_by(397) {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0xa5;
            let _ = decode_state_file(&flipped);
        }
        // A corrupt file on disk is an error from read_state_file, never fatal.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.pb");
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(read_state_file(&path).is_err());
    }

    #[tokio::test]
    async fn persist_writes_latest_and_flushes_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/policy.pb");
        let store = Arc::new(PolicyStore::new(Arc::new(ArcSwap::from_pointee(
            RuleSet::empty(),
        ))));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(persist(
            Arc::clone(&store),
            path.clone(),
            Duration::from_secs(3600),
            stop_rx,
        ));
        store.apply(full(1, &[(ListKind::IpBlock, &["203.0.113.0/24"])]));
        // The first change is written right away.
        let mut waited = 0;
        while read_state_file(&path)
            .ok()
            .flatten()
            .map(|s| s.generation())
            != Some(1)
        {
            assert!(waited < 500, "state file not written");
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        // Later changes inside the debounce interval are written at shutdown.
        store.apply(delta(2, ListKind::IpBlock, &["198.51.100.1"], &[]));
        store.apply(delta(3, ListKind::IpBlock, &["198.51.100.2"], &[]));
        stop_tx.send_replace(true);
        task.await.unwrap();
        let on_disk = read_state_file(&path).unwrap().unwrap();
        assert_eq!(on_disk, store.snapshot());
        assert_eq!(on_disk.generation(), 3);
    }
}
