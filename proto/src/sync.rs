//! The sync stream's rules, shared by both ends.
//!
//! * The controller turns a policy generation into bounded [`pb::UpdateChunk`]s with
//!   [`full_update_chunks`] and [`delta_chunks`].
//! * The dataplane feeds every received chunk to a [`Stager`], which validates it (list kinds,
//!   prefixes, sizes, generation order) and yields a complete [`Update`] once the last chunk of a
//!   generation arrived. A [`SyncError`] means the stream is no longer trustworthy: the receiver
//!   keeps its last applied state and reconnects for a fresh snapshot.

use std::collections::BTreeMap;

use crate::{Entry, EntryError, ListKind, pb};

/// Entries (adds + removes over all lists) the controller puts in one chunk.
pub const CHUNK_ENTRIES: usize = 4096;
/// Entries the dataplane accepts in one chunk (leaves room for a future controller).
pub const MAX_CHUNK_ENTRIES: usize = 16384;
/// Entries the dataplane stages for one generation before refusing it (bounds memory).
pub const MAX_UPDATE_ENTRIES: usize = 16_000_000;
/// Largest gRPC message either end decodes on the sync stream.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Why a chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("chunk has generation 0")]
    ZeroGeneration,
    #[error("chunk names an unknown list kind {0}")]
    UnknownList(i32),
    #[error("chunk carries {0} entries, more than the limit of {MAX_CHUNK_ENTRIES}")]
    ChunkTooLarge(usize),
    #[error("update {generation} would stage more than {MAX_UPDATE_ENTRIES} entries")]
    UpdateTooLarge { generation: u64 },
    #[error("bad {list} entry in update {generation}: {source}")]
    BadEntry {
        generation: u64,
        list: ListKind,
        #[source]
        source: EntryError,
    },
    #[error("full update {0} carries removals")]
    RemovalInFullUpdate(u64),
    #[error("delta {got} arrived before any full update on this stream")]
    DeltaBeforeSnapshot { got: u64 },
    #[error("delta {got} does not follow generation {applied}")]
    OutOfOrder { applied: u64, got: u64 },
    #[error("chunk of generation {got} interleaved with pending update {pending}")]
    Interleaved { pending: u64, got: u64 },
}

/// Additions and removals for one list. Every entry is of the list's [`ListKind::entry_kind`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListDelta {
    pub add: Vec<Entry>,
    pub remove: Vec<Entry>,
}

/// A complete, validated update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub generation: u64,
    /// A full update replaces every list (lists it does not name become empty).
    pub full: bool,
    pub lists: BTreeMap<ListKind, ListDelta>,
}

impl Update {
    /// Number of entries (adds and removes) the update carries.
    pub fn entries(&self) -> usize {
        self.lists
            .values()
            .map(|d| d.add.len() + d.remove.len())
            .sum()
    }
}

/// Dataplane-side accumulator for one stream. Create a new one per stream.
#[derive(Debug, Default)]
pub struct Stager {
    /// Generation of the last update yielded on this stream (0: none yet).
    applied: u64,
    pending: Option<(Update, usize)>,
}

impl Stager {
    pub fn new() -> Stager {
        Stager::default()
    }

    /// Validate one chunk; returns the whole update when `chunk.last` completes it.
    pub fn push(&mut self, chunk: &pb::UpdateChunk) -> Result<Option<Update>, SyncError> {
        let generation = chunk.generation;
        if generation == 0 {
            return Err(SyncError::ZeroGeneration);
        }
        let count: usize = chunk
            .changes
            .iter()
            .map(|c| c.add.len() + c.remove.len())
            .sum();
        if count > MAX_CHUNK_ENTRIES {
            return Err(SyncError::ChunkTooLarge(count));
        }
        match &self.pending {
            Some((p, _)) if p.generation != generation || p.full != chunk.full => {
                return Err(SyncError::Interleaved {
                    pending: p.generation,
                    got: generation,
                });
            }
            Some(_) => {}
            None if !chunk.full && self.applied == 0 => {
                return Err(SyncError::DeltaBeforeSnapshot { got: generation });
            }
            None if !chunk.full && generation != self.applied + 1 => {
                return Err(SyncError::OutOfOrder {
                    applied: self.applied,
                    got: generation,
                });
            }
            None => {}
        }
        let (update, staged) = self.pending.get_or_insert_with(|| {
            (
                Update {
                    generation,
                    full: chunk.full,
                    lists: BTreeMap::new(),
                },
                0,
            )
        });
        *staged += count;
        if *staged > MAX_UPDATE_ENTRIES {
            self.pending = None;
            return Err(SyncError::UpdateTooLarge { generation });
        }
        for change in &chunk.changes {
            let Some(kind) = ListKind::from_wire(change.list) else {
                self.pending = None;
                return Err(SyncError::UnknownList(change.list));
            };
            let decode = |w: &pb::Entry| {
                Entry::from_wire(w, kind.entry_kind()).map_err(|source| SyncError::BadEntry {
                    generation,
                    list: kind,
                    source,
                })
            };
            if chunk.full && !change.remove.is_empty() {
                self.pending = None;
                return Err(SyncError::RemovalInFullUpdate(generation));
            }
            let delta = update.lists.entry(kind).or_default();
            for w in &change.add {
                match decode(w) {
                    Ok(c) => delta.add.push(c),
                    Err(e) => {
                        self.pending = None;
                        return Err(e);
                    }
                }
            }
            for w in &change.remove {
                match decode(w) {
                    Ok(c) => delta.remove.push(c),
                    Err(e) => {
                        self.pending = None;
                        return Err(e);
                    }
                }
            }
        }
        if !chunk.last {
            return Ok(None);
        }
        let complete = self.pending.take().map(|(u, _)| u);
        if let Some(u) = &complete {
            self.applied = u.generation;
        }
        Ok(complete)
    }
}

/// Split a full policy into chunks of at most [`CHUNK_ENTRIES`] entries. Always yields at least
/// one chunk (an empty policy is still a snapshot), the final one with `last` set.
pub fn full_update_chunks(generation: u64, lists: &[(ListKind, &[Entry])]) -> Vec<pb::UpdateChunk> {
    let items = lists
        .iter()
        .flat_map(|(kind, entries)| entries.iter().map(move |c| (*kind, c, true)));
    chunk_items(generation, true, items)
}

/// Split one list's change into chunks of at most [`CHUNK_ENTRIES`] entries.
pub fn delta_chunks(
    generation: u64,
    list: ListKind,
    add: &[Entry],
    remove: &[Entry],
) -> Vec<pb::UpdateChunk> {
    let items = add
        .iter()
        .map(|c| (list, c, true))
        .chain(remove.iter().map(|c| (list, c, false)));
    chunk_items(generation, false, items)
}

fn chunk_items<'a>(
    generation: u64,
    full: bool,
    items: impl Iterator<Item = (ListKind, &'a Entry, bool)>,
) -> Vec<pb::UpdateChunk> {
    let mut chunks = Vec::new();
    let mut current = pb::UpdateChunk {
        generation,
        full,
        last: false,
        changes: Vec::new(),
    };
    let mut in_current = 0usize;
    for (kind, entry, is_add) in items {
        if in_current == CHUNK_ENTRIES {
            let next = pb::UpdateChunk {
                generation,
                full,
                last: false,
                changes: Vec::new(),
            };
            chunks.push(std::mem::replace(&mut current, next));
            in_current = 0;
        }
        let wire_kind = kind.to_wire() as i32;
        let needs_new = current.changes.last().is_none_or(|c| c.list != wire_kind);
        if needs_new {
            current.changes.push(pb::ListChange {
                list: wire_kind,
                add: Vec::new(),
                remove: Vec::new(),
            });
        }
        if let Some(change) = current.changes.last_mut() {
            if is_add {
                change.add.push(entry.to_wire());
            } else {
                change.remove.push(entry.to_wire());
            }
        }
        in_current += 1;
    }
    current.last = true;
    chunks.push(current);
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::Cidr;

    fn cidrs(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| {
                Entry::Prefix(Cidr::host(std::net::IpAddr::V4(
                    (0xCB00_0000u32 + i as u32).into(),
                )))
            })
            .collect()
    }

    #[test]
    fn full_update_round_trips_through_bounded_chunks() {
        let allow = cidrs(5000);
        let block = cidrs(4000);
        let chunks = full_update_chunks(
            7,
            &[(ListKind::IpAllow, &allow), (ListKind::IpBlock, &block)],
        );
        assert_eq!(chunks.len(), 3);
        assert!(
            chunks
                .iter()
                .all(|c| c.changes.iter().map(|l| l.add.len()).sum::<usize>() <= CHUNK_ENTRIES)
        );
        let mut stager = Stager::new();
        let mut done = None;
        for (i, c) in chunks.iter().enumerate() {
            let r = stager.push(c).unwrap();
            assert_eq!(r.is_some(), i == chunks.len() - 1);
            done = r.or(done);
        }
        let u = done.unwrap();
        assert!(u.full);
        assert_eq!(u.generation, 7);
        assert_eq!(u.lists[&ListKind::IpAllow].add, allow);
        assert_eq!(u.lists[&ListKind::IpBlock].add, block);
    }

    #[test]
    fn empty_snapshot_is_one_last_chunk() {
        let chunks = full_update_chunks(1, &[]);
        assert_eq!(chunks.len(), 1);
        let u = Stager::new().push(&chunks[0]).unwrap().unwrap();
        assert!(u.full && u.lists.is_empty());
    }

    #[test]
    fn deltas_must_follow_a_snapshot_in_order() {
        let mut s = Stager::new();
        let d = delta_chunks(5, ListKind::IpBlock, &cidrs(1), &[]);
        assert_eq!(
            s.push(&d[0]),
            Err(SyncError::DeltaBeforeSnapshot { got: 5 })
        );
        s.push(&full_update_chunks(4, &[])[0]).unwrap().unwrap();
        let skip = delta_chunks(6, ListKind::IpBlock, &cidrs(1), &[]);
        assert_eq!(
            s.push(&skip[0]),
            Err(SyncError::OutOfOrder { applied: 4, got: 6 })
        );
        let u = s.push(&d[0]).unwrap().unwrap();
        assert_eq!(u.generation, 5);
        assert!(!u.full);
        // A new snapshot may carry any generation (the controller's store may have been reset).
        assert!(s.push(&full_update_chunks(2, &[])[0]).unwrap().is_some());
    }

    #[test]
    fn rejects_malformed_chunks() {
        let mut s = Stager::new();
        let mut zero = full_update_chunks(1, &[])[0].clone();
        zero.generation = 0;
        assert_eq!(s.push(&zero), Err(SyncError::ZeroGeneration));

        let mut unknown = full_update_chunks(1, &[(ListKind::IpBlock, &cidrs(1))])[0].clone();
        unknown.changes[0].list = 42;
        assert_eq!(s.push(&unknown), Err(SyncError::UnknownList(42)));

        let mut bad = full_update_chunks(1, &[(ListKind::IpBlock, &cidrs(1))])[0].clone();
        if let Some(pb::entry::Value::Prefix(p)) = bad.changes[0].add[0].value.as_mut() {
            p.prefix_len = 7;
        }
        assert!(matches!(s.push(&bad), Err(SyncError::BadEntry { .. })));

        let mut wrong_kind = full_update_chunks(1, &[(ListKind::IpBlock, &cidrs(1))])[0].clone();
        wrong_kind.changes[0].add[0] = pb::Entry {
            value: Some(pb::entry::Value::Asn(64496)),
        };
        assert!(matches!(
            s.push(&wrong_kind),
            Err(SyncError::BadEntry { .. })
        ));

        let mut removal = full_update_chunks(1, &[(ListKind::IpBlock, &cidrs(1))])[0].clone();
        removal.changes[0].remove = removal.changes[0].add.clone();
        assert_eq!(s.push(&removal), Err(SyncError::RemovalInFullUpdate(1)));

        let mut huge = full_update_chunks(1, &[])[0].clone();
        huge.changes.push(pb::ListChange {
            list: ListKind::IpBlock.to_wire() as i32,
            add: vec![
                Entry::Prefix(Cidr::host("203.0.113.1".parse().unwrap())).to_wire();
                MAX_CHUNK_ENTRIES + 1
            ],
            remove: vec![],
        });
        assert_eq!(
            s.push(&huge),
            Err(SyncError::ChunkTooLarge(MAX_CHUNK_ENTRIES + 1))
        );
    }

    #[test]
    fn interleaved_generations_are_refused() {
        let mut s = Stager::new();
        let first = full_update_chunks(3, &[(ListKind::IpBlock, &cidrs(CHUNK_ENTRIES + 1))]);
        assert!(s.push(&first[0]).unwrap().is_none());
        let other = full_update_chunks(4, &[])[0].clone();
        assert_eq!(
            s.push(&other),
            Err(SyncError::Interleaved { pending: 3, got: 4 })
        );
    }

    #[test]
    fn delta_carries_adds_and_removes() {
        let add = cidrs(3);
        let remove = cidrs(2);
        let chunks = delta_chunks(2, ListKind::IpAllow, &add, &remove);
        let mut s = Stager::new();
        s.push(&full_update_chunks(1, &[])[0]).unwrap();
        let u = s.push(&chunks[0]).unwrap().unwrap();
        assert_eq!(u.lists[&ListKind::IpAllow], ListDelta { add, remove });
        assert_eq!(u.entries(), 5);
    }
}
