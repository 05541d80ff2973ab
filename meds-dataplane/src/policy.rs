//! The dataplane's master copy of the policy, the live rule set built from it, and the state
//! file that lets a restarted dataplane enforce its last policy while the controller is away.
//!
//! * [`PolicyState`]: the lists as sets of prefixes plus the generation they belong to. Updates
//!   from the sync stream are applied here; [`PolicyState::build`] turns it into an immutable
//!   [`RuleSet`].
//! * [`PolicyStore`]: owns the master copy (behind a mutex only the control plane touches) and
//!   publishes each newly built rule set to the packet path through an `ArcSwap`. Packet
//!   threads only ever `load()` the `ArcSwap`; they never see the mutex.
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
use std::time::Duration;

use arc_swap::ArcSwap;
use meds_proto::sync::{MAX_MESSAGE_BYTES, Stager, SyncError, Update, full_update_chunks};
use meds_proto::{Cidr, ListKind, pb};
use prost::Message as _;
use tokio::sync::watch;

use crate::chain::RuleSet;
use crate::lists::ip::IpSet;

/// The lists the dataplane enforces, and the generation they belong to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// Generation of the last applied update (0: nothing applied yet).
    generation: u64,
    /// Only non-empty lists are present.
    lists: BTreeMap<ListKind, BTreeSet<Cidr>>,
}

impl PolicyState {
    /// An empty policy at generation 0.
    pub fn new() -> PolicyState {
        PolicyState::default()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The entries of one list (empty when the list has none).
    pub fn entries(&self, kind: ListKind) -> impl Iterator<Item = &Cidr> + '_ {
        self.lists.get(&kind).into_iter().flatten()
    }

    /// Number of entries over all lists.
    pub fn len(&self) -> usize {
        self.lists.values().map(BTreeSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// Apply a validated update. A full update replaces every list (lists it does not name
    /// become empty); a delta changes only the lists it names, removals before additions.
    /// Removing an absent entry and adding a present one are no-ops.
    pub fn apply(&mut self, update: Update) {
        if update.full {
            self.lists.clear();
        }
        for (kind, delta) in update.lists {
            let set = self.lists.entry(kind).or_default();
            for cidr in &delta.remove {
                set.remove(cidr);
            }
            set.extend(delta.add);
        }
        self.lists.retain(|_, set| !set.is_empty());
        self.generation = update.generation;
    }

    /// Build the immutable rule set the packet path evaluates.
    pub fn build(&self) -> RuleSet {
        let allow = IpSet::from_prefixes(self.entries(ListKind::IpAllow).copied());
        let block = IpSet::from_prefixes(self.entries(ListKind::IpBlock).copied());
        RuleSet::new(self.generation, allow, block)
    }

    /// The policy as the chunks of one full update (what the controller would send).
    pub fn to_chunks(&self) -> Vec<pb::UpdateChunk> {
        let lists: Vec<(ListKind, Vec<Cidr>)> = self
            .lists
            .iter()
            .map(|(kind, set)| (*kind, set.iter().copied().collect()))
            .collect();
        let borrowed: Vec<(ListKind, &[Cidr])> = lists
            .iter()
            .map(|(kind, v)| (*kind, v.as_slice()))
            .collect();
        full_update_chunks(self.generation, &borrowed)
    }
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

    /// Bumped after every change; the value is the revision, not the generation.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// Apply an update, build the new rule set and publish it. Blocking and CPU-bound for large
    /// policies: call it from a blocking thread, never from the packet path. Returns the
    /// generation now in force.
    pub fn apply(&self, update: Update) -> u64 {
        let mut master = self.lock();
        master.state.apply(update);
        self.publish(&mut master)
    }

    /// Replace the master copy (start-up from the state file) and publish it.
    pub fn restore(&self, state: PolicyState) -> u64 {
        let mut master = self.lock();
        master.state = state;
        self.publish(&mut master)
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

    fn publish(&self, master: &mut Master) -> u64 {
        let ruleset = master.state.build();
        self.live.store(Arc::new(ruleset));
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
    for chunk in state.to_chunks() {
        out.extend(chunk.encode_length_delimited_to_vec());
    }
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

    use meds_proto::sync::{ListDelta, delta_chunks};

    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn full(generation: u64, lists: &[(ListKind, &[&str])]) -> Update {
        Update {
            generation,
            full: true,
            lists: lists
                .iter()
                .map(|(k, v)| {
                    (
                        *k,
                        ListDelta {
                            add: v.iter().map(|s| c(s)).collect(),
                            remove: vec![],
                        },
                    )
                })
                .collect(),
        }
    }

    fn delta(generation: u64, kind: ListKind, add: &[&str], remove: &[&str]) -> Update {
        Update {
            generation,
            full: false,
            lists: [(
                kind,
                ListDelta {
                    add: add.iter().map(|s| c(s)).collect(),
                    remove: remove.iter().map(|s| c(s)).collect(),
                },
            )]
            .into(),
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
            store.apply(full(2, &[(ListKind::IpBlock, &["203.0.113.0/24"])])),
            2
        );
        assert!(rev.has_changed().unwrap());
        assert_eq!(*rev.borrow_and_update(), 1);
        assert_eq!(live.load().generation(), 2);
        assert!(live.load().block().contains(ip("203.0.113.9")));
        assert_eq!(
            store.apply(delta(3, ListKind::IpBlock, &[], &["203.0.113.0/24"])),
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

    fn big_state() -> PolicyState {
        // More entries than one chunk holds, both families, both lists.
        let block: Vec<String> = (0..5000u32)
            .map(|i| std::net::Ipv4Addr::from(0xCB00_7100u32 + i).to_string())
            .collect();
        let block_refs: Vec<&str> = block.iter().map(String::as_str).collect();
        let mut s = PolicyState::new();
        s.apply(full(
            12,
            &[
                (ListKind::IpAllow, &["10.0.0.0/8", "2001:db8:1::/48"]),
                (ListKind::IpBlock, &block_refs),
            ],
        ));
        s
    }

    #[test]
    fn state_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/policy.pb");
        for state in [big_state(), {
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
