//! Flow reassembly: a bounded, per-flow buffer that joins a TLS ClientHello spread over several
//! TCP segments (current browsers' post-quantum hybrid hellos are often two segments; the
//! original Meds then saw no SNI and no JA3, and even trusted the flow, W6/W8).
//!
//! [`Reassembler`] is a pure, single-threaded data structure (one per queue worker): no locks,
//! no I/O, no clock of its own (the caller passes a monotonic time in milliseconds), and no
//! allocation after [`Reassembler::new`] (one slab of `max_flows × max_bytes` bytes and the
//! per-entry range lists are allocated there). Lookups scan the table linearly (it is small,
//! and skipped entirely while no hello is in progress).
//!
//! [`FlowTable`] is the inspector's other per-flow memory (blocked flows, fresh flows): a
//! fixed-capacity map keyed by a seeded hash of the 5-tuple, O(1) per lookup, with a TTL and
//! oldest-first eviction.
//!
//! ## How the inspector uses it
//! 1. A TCP segment with payload arrives. [`Reassembler::offer`] it first: `NotTracked` means
//!    no hello is in progress on this flow.
//! 2. If the TLS parser says the payload *starts* a ClientHello but is `Incomplete`, call
//!    [`Reassembler::begin`] with it. A segment of a flow whose SYN was seen that lies after
//!    the flow's first byte goes to [`Reassembler::begin_at`] with that first byte as the base
//!    (see "Segments that arrive before the first one").
//! 3. Whenever [`Offer::Assembled`] returns bytes, run the TLS parser on them. Complete (or
//!    definitely not a hello) → decide, then [`Reassembler::finish`] the flow; still
//!    incomplete → leave the entry, more segments will come.
//! 4. [`Offer::GaveUp`] (a limit, a timeout, conflicting data) → the entry is gone; the worker
//!    applies its "hello not inspectable" policy. [`Reassembler::expire`] may be called from
//!    time to time to free stale entries early (entries are also reclaimed when the table is
//!    full: expired ones first, then the oldest, counted as [`FlowEvent::Evicted`]).
//!
//! ## Segment order, retransmissions, overlaps
//! Segments are placed by sequence number relative to the entry's base — the first segment's,
//! or the one given to [`Reassembler::begin_at`] — (wrapping arithmetic), so out-of-order
//! segments are held until the gap is filled ([`Offer::Buffered`], counted
//! [`FlowEvent::OutOfOrder`]). Bytes before the base are ignored. A
//! retransmission that brings nothing new is [`FlowEvent::Duplicate`]. Overlapping bytes must
//! equal the bytes already held: different data for the same sequence numbers is never
//! legitimate and is the classic evasion (the filter and the receiver each keep a different
//! copy), so it gives up with [`GiveUp::Conflict`]. Every segment with payload counts against
//! `max_segments`, retransmissions included.
//!
//! ## What happens to the earlier segments
//! The options, for a hello that arrives as segments 1..n:
//! * **Hold** the earlier packets (no NFQUEUE verdict until the last segment): the kernel queue
//!   keeps them, verdicts must then be issued out of order and on timers, a flood of partial
//!   hellos fills the queue, and a missing last segment needs a timeout verdict anyway.
//! * **Drop** them until the hello is complete: breaks every split hello, i.e. every current
//!   browser.
//! * **Accept them without marking the flow trusted, decide on the last segment** (recommended,
//!   and the reason this module returns bytes rather than verdicts): NFQUEUE verdicts cannot be
//!   deferred cheaply, and a receiver cannot use a partial ClientHello anyway, so nothing is
//!   exposed by letting segments 1..n-1 through. Because the flow is not trusted, its later
//!   packets keep coming to the queue; the segment that completes the hello gets the verdict of
//!   the whole hello. On a DROP the inspector ([`crate::inspect`]) records the flow in its
//!   blocked-flow table so that retransmissions of the last segment, which arrive after the
//!   entry is finished and no longer start a hello, stay dropped (no conntrack needed). It
//!   offers only segments whose TCP checksum is valid, or a segment that the receiver discards
//!   could carry a different hello from the one it accepts.
//!
//! ## Segments that arrive before the first one
//! A hello is normally tracked from the segment that *starts* it. A client with its own TCP
//! stack can send the later segments *before* the first one: on their own they look like
//! ordinary mid-stream data, the receiver holds them out of order, and when the first segment
//! arrives the receiver has the whole hello while a table started from that segment waits
//! for bytes that already passed. The inspector closes this with the flow's initial sequence
//! number: it remembers the ISN of every client SYN it sees (a [`FlowTable`] of "fresh"
//! flows, until the first payload byte at ISN + 1 arrives), and a data segment of a fresh flow
//! that lies after ISN + 1 starts reassembly anchored there ([`Reassembler::begin_at`]): the
//! segment at ISN + 1 then completes the message and gets the verdict of the whole of it. The
//! usual bounds hold from ISN + 1 (`max_bytes`, `max_segments`, `timeout_ms`).
//!
//! Known limit (open): a flow whose SYN was not seen or is no longer remembered keeps the old
//! behaviour — flows open before the dataplane (re)started, a fresh-flow entry evicted (more
//! than the table's capacity of SYNs since) or expired (the client waited longer than its TTL
//! between the SYN and its first byte). An attacker can cause the last two on purpose; both
//! are counted (`fresh_flow` / `evicted`, `expired`). Such a hello ends as
//! [`GiveUp::Expired`], [`GiveUp::Segments`] or [`GiveUp::Bytes`] and the uninspectable policy
//! applies from then on (`--tls-uninspectable drop` blocks the flow's later packets), but the
//! packets accepted until then may include the client's first request. Closing it entirely
//! needs per-flow state that outlives the dataplane and that other flows' SYNs cannot push
//! out (the kernel's connection tracking). The same holds for DNS messages over TCP, which the
//! inspector reassembles the same way.

use std::net::IpAddr;

/// The 5-tuple of a flow, as seen in the packet (direction matters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
}

/// Hard bounds of a [`Reassembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Hellos in progress at once.
    pub max_flows: usize,
    /// Bytes buffered per hello (from its first byte to the end of the furthest segment).
    pub max_bytes: usize,
    /// Segments with payload per hello, the first and retransmissions included.
    pub max_segments: usize,
    /// How long a hello may take from its first segment, in milliseconds.
    pub timeout_ms: u64,
}

impl Limits {
    /// 256 flows × 16 KiB (4 MiB per worker), 8 segments, 2 s.
    pub const DEFAULT: Limits = Limits {
        max_flows: 256,
        max_bytes: 16 * 1024,
        max_segments: 8,
        timeout_ms: 2_000,
    };
    /// Upper bound of `max_flows`.
    pub const MAX_FLOWS: usize = 65_536;
    /// Upper bound of `max_bytes` (a TLS handshake message is at most 2^24 bytes, but no
    /// ClientHello needs more than this).
    pub const MAX_BYTES: usize = 1024 * 1024;
    /// Upper bound of `max_segments`.
    pub const MAX_SEGMENTS: usize = 1024;
    /// Upper bound of the slab (`max_flows × max_bytes`).
    pub const MAX_TOTAL_BYTES: usize = 256 * 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

/// A [`Limits`] value out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("max_flows must be 1..={max}, got {got}", max = Limits::MAX_FLOWS)]
    Flows { got: usize },
    #[error("max_bytes must be 1..={max}, got {got}", max = Limits::MAX_BYTES)]
    Bytes { got: usize },
    #[error("max_segments must be 1..={max}, got {got}", max = Limits::MAX_SEGMENTS)]
    Segments { got: usize },
    #[error("timeout_ms must be at least 1")]
    Timeout,
    #[error("max_flows × max_bytes must be at most {max} bytes", max = Limits::MAX_TOTAL_BYTES)]
    Total,
}

/// Why a hello in progress was abandoned (returned in [`Offer::GaveUp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The hello would extend past `max_bytes`.
    Bytes,
    /// More than `max_segments` segments.
    Segments,
    /// A segment carries different bytes for sequence numbers already held.
    Conflict,
    /// More than `timeout_ms` since the first segment.
    Expired,
}

impl GiveUp {
    /// The counter this reason is counted under.
    pub fn event(self) -> FlowEvent {
        match self {
            GiveUp::Bytes => FlowEvent::Bytes,
            GiveUp::Segments => FlowEvent::Segments,
            GiveUp::Conflict => FlowEvent::Conflict,
            GiveUp::Expired => FlowEvent::Expired,
        }
    }
}

/// Everything a [`Reassembler`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEvent {
    /// A hello started ([`Reassembler::begin`]).
    Started,
    /// The caller finished a hello ([`Reassembler::finish`]).
    Finished,
    /// A segment was held beyond a gap.
    OutOfOrder,
    /// A segment brought no new bytes (retransmission, or data before the hello).
    Duplicate,
    /// Gave up: `max_bytes`.
    Bytes,
    /// Gave up: `max_segments`.
    Segments,
    /// Gave up: overlapping data differs.
    Conflict,
    /// Gave up: `timeout_ms` (on an offer, a sweep, or when its slot was needed).
    Expired,
    /// The oldest hello was dropped to make room for a new one.
    Evicted,
}

impl FlowEvent {
    /// Every event, in index order.
    pub const ALL: [FlowEvent; 9] = [
        FlowEvent::Started,
        FlowEvent::Finished,
        FlowEvent::OutOfOrder,
        FlowEvent::Duplicate,
        FlowEvent::Bytes,
        FlowEvent::Segments,
        FlowEvent::Conflict,
        FlowEvent::Expired,
        FlowEvent::Evicted,
    ];

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            FlowEvent::Started => "started",
            FlowEvent::Finished => "finished",
            FlowEvent::OutOfOrder => "out_of_order",
            FlowEvent::Duplicate => "duplicate",
            FlowEvent::Bytes => "max_bytes",
            FlowEvent::Segments => "max_segments",
            FlowEvent::Conflict => "conflict",
            FlowEvent::Expired => "expired",
            FlowEvent::Evicted => "evicted",
        }
    }

    /// Dense index (position in [`FlowEvent::ALL`]).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What became of an offered segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer<'a> {
    /// No hello is in progress on this flow.
    NotTracked,
    /// Held, but the contiguous bytes did not grow (out of order, duplicate, empty payload).
    Buffered,
    /// The contiguous bytes from the hello's first byte grew; here they all are. Run the TLS
    /// parser on them.
    Assembled(&'a [u8]),
    /// The hello was abandoned and its entry freed.
    GaveUp(GiveUp),
}

#[derive(Debug)]
struct Entry {
    key: Option<FlowKey>,
    base_seq: u32,
    started_ms: u64,
    order: u64,
    segments: usize,
    /// Sorted, disjoint, non-adjacent byte ranges held, relative to `base_seq`.
    /// Capacity `max_segments`, never exceeded (at most one range per accepted segment).
    ranges: Vec<(usize, usize)>,
}

/// Bounded reassembly of ClientHellos, keyed by [`FlowKey`]. See the module docs.
pub struct Reassembler {
    limits: Limits,
    entries: Vec<Entry>,
    slab: Box<[u8]>,
    active: usize,
    next_order: u64,
    counts: [u64; FlowEvent::ALL.len()],
}

impl std::fmt::Debug for Reassembler {
    // Not derived: the slab is megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler")
            .field("limits", &self.limits)
            .field("active", &self.active)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl Reassembler {
    /// Check `limits` without allocating anything (what [`Reassembler::new`] refuses).
    pub fn validate(limits: Limits) -> Result<(), LimitsError> {
        if limits.max_flows == 0 || limits.max_flows > Limits::MAX_FLOWS {
            return Err(LimitsError::Flows {
                got: limits.max_flows,
            });
        }
        if limits.max_bytes == 0 || limits.max_bytes > Limits::MAX_BYTES {
            return Err(LimitsError::Bytes {
                got: limits.max_bytes,
            });
        }
        if limits.max_segments == 0 || limits.max_segments > Limits::MAX_SEGMENTS {
            return Err(LimitsError::Segments {
                got: limits.max_segments,
            });
        }
        if limits.timeout_ms == 0 {
            return Err(LimitsError::Timeout);
        }
        limits
            .max_flows
            .checked_mul(limits.max_bytes)
            .filter(|t| *t <= Limits::MAX_TOTAL_BYTES)
            .ok_or(LimitsError::Total)?;
        Ok(())
    }

    /// Allocate the table; nothing is allocated after this.
    pub fn new(limits: Limits) -> Result<Reassembler, LimitsError> {
        Reassembler::validate(limits)?;
        let total = limits.max_flows * limits.max_bytes;
        let entries = (0..limits.max_flows)
            .map(|_| Entry {
                key: None,
                base_seq: 0,
                started_ms: 0,
                order: 0,
                segments: 0,
                ranges: Vec::with_capacity(limits.max_segments),
            })
            .collect();
        Ok(Reassembler {
            limits,
            entries,
            slab: vec![0; total].into_boxed_slice(),
            active: 0,
            next_order: 0,
            counts: [0; FlowEvent::ALL.len()],
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Hellos in progress.
    pub fn len(&self) -> usize {
        self.active
    }

    pub fn is_empty(&self) -> bool {
        self.active == 0
    }

    /// Whether a hello is in progress on this flow.
    pub fn contains(&self, key: &FlowKey) -> bool {
        self.find(key).is_some()
    }

    /// How often `event` happened.
    pub fn count(&self, event: FlowEvent) -> u64 {
        self.counts[event.index()]
    }

    /// All counts, indexed by [`FlowEvent::index`].
    pub fn counts(&self) -> &[u64; FlowEvent::ALL.len()] {
        &self.counts
    }

    /// Start a hello on `key` with its first segment (`seq` is that segment's sequence number).
    /// A hello already in progress on `key` is restarted. Makes room when the table is full
    /// (an expired entry, else the oldest). An empty payload starts nothing (`NotTracked`).
    pub fn begin(&mut self, key: FlowKey, seq: u32, payload: &[u8], now_ms: u64) -> Offer<'_> {
        self.begin_at(key, seq, seq, payload, now_ms)
    }

    /// Start a message on `key` whose first byte has sequence number `base_seq`, with a segment
    /// at `seq` that may lie anywhere from there (early, out-of-order data: the flow's first
    /// byte is known from its SYN but has not arrived yet). The segment is placed at its
    /// offset; the bounds are those of [`Reassembler::begin`], counted from `base_seq` (a
    /// segment ending beyond `max_bytes` gives up with [`GiveUp::Bytes`]). Bytes before
    /// `base_seq` are ignored. An empty payload starts nothing (`NotTracked`).
    pub fn begin_at(
        &mut self,
        key: FlowKey,
        base_seq: u32,
        seq: u32,
        payload: &[u8],
        now_ms: u64,
    ) -> Offer<'_> {
        if payload.is_empty() {
            return Offer::NotTracked;
        }
        let idx = match self.find(&key) {
            Some(idx) => idx,
            None => {
                let idx = self.free_slot(now_ms);
                self.active += 1;
                idx
            }
        };
        let order = self.next_order;
        self.next_order += 1;
        let entry = &mut self.entries[idx];
        entry.key = Some(key);
        entry.base_seq = base_seq;
        entry.started_ms = now_ms;
        entry.order = order;
        entry.segments = 0;
        entry.ranges.clear();
        self.bump(FlowEvent::Started);
        self.add(idx, seq, payload, now_ms)
    }

    /// Add a later segment of the hello in progress on `key`, if any.
    pub fn offer(&mut self, key: &FlowKey, seq: u32, payload: &[u8], now_ms: u64) -> Offer<'_> {
        match self.find(key) {
            Some(idx) => self.add(idx, seq, payload, now_ms),
            None => Offer::NotTracked,
        }
    }

    /// The caller is done with the hello on `key` (decided, or found it is no hello).
    /// Returns whether one was in progress.
    pub fn finish(&mut self, key: &FlowKey) -> bool {
        match self.find(key) {
            Some(idx) => {
                self.release(idx);
                self.bump(FlowEvent::Finished);
                true
            }
            None => false,
        }
    }

    /// Free every entry older than the timeout (counted as [`FlowEvent::Expired`]); returns
    /// how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        if self.active == 0 {
            return 0;
        }
        let mut freed = 0;
        for idx in 0..self.entries.len() {
            if self.entries[idx].key.is_some() && self.expired(idx, now_ms) {
                self.release(idx);
                self.bump(FlowEvent::Expired);
                freed += 1;
            }
        }
        freed
    }

    fn find(&self, key: &FlowKey) -> Option<usize> {
        if self.active == 0 {
            return None;
        }
        self.entries
            .iter()
            .position(|e| e.key.as_ref() == Some(key))
    }

    fn expired(&self, idx: usize, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.entries[idx].started_ms) > self.limits.timeout_ms
    }

    /// A free entry, freeing an expired or else the oldest one if needed.
    fn free_slot(&mut self, now_ms: u64) -> usize {
        if let Some(idx) = self.entries.iter().position(|e| e.key.is_none()) {
            return idx;
        }
        if let Some(idx) = (0..self.entries.len()).find(|&i| self.expired(i, now_ms)) {
            self.release(idx);
            self.bump(FlowEvent::Expired);
            return idx;
        }
        // The table is full (max_flows >= 1), so there is an oldest entry.
        let idx = self
            .entries
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.order)
            .map_or(0, |(i, _)| i);
        self.release(idx);
        self.bump(FlowEvent::Evicted);
        idx
    }

    fn release(&mut self, idx: usize) {
        let entry = &mut self.entries[idx];
        if entry.key.take().is_some() {
            entry.ranges.clear();
            self.active -= 1;
        }
    }

    fn give_up(&mut self, idx: usize, why: GiveUp) -> Offer<'_> {
        self.release(idx);
        self.bump(why.event());
        Offer::GaveUp(why)
    }

    fn bump(&mut self, event: FlowEvent) {
        let c = &mut self.counts[event.index()];
        *c = c.saturating_add(1);
    }

    fn add(&mut self, idx: usize, seq: u32, payload: &[u8], now_ms: u64) -> Offer<'_> {
        if self.expired(idx, now_ms) {
            return self.give_up(idx, GiveUp::Expired);
        }
        if payload.is_empty() {
            return Offer::Buffered;
        }
        let max_bytes = self.limits.max_bytes;
        let entry = &mut self.entries[idx];
        entry.segments += 1;
        if entry.segments > self.limits.max_segments {
            return self.give_up(idx, GiveUp::Segments);
        }
        // Position relative to the first byte; a seq up to 2^31 behind counts as "before".
        let rel_start = i64::from(seq.wrapping_sub(entry.base_seq) as i32);
        let rel_end = rel_start + payload.len() as i64;
        if rel_end > max_bytes as i64 {
            return self.give_up(idx, GiveUp::Bytes);
        }
        if rel_end <= 0 {
            self.bump(FlowEvent::Duplicate);
            return Offer::Buffered;
        }
        // 0 <= start < end <= max_bytes; `skip` bytes of the payload lie before the hello.
        let (start, end) = (rel_start.max(0) as usize, rel_end as usize);
        let skip = (start as i64 - rel_start) as usize;
        let payload = &payload[skip..];
        let data = &mut self.slab[idx * max_bytes..(idx + 1) * max_bytes];

        // Overlaps must agree with what is held; the gaps are new bytes.
        let mut cursor = start;
        let mut conflict = false;
        let mut new_bytes = false;
        for &(s, e) in &entry.ranges {
            if e <= cursor {
                continue;
            }
            if s >= end {
                break;
            }
            if s > cursor {
                data[cursor..s].copy_from_slice(&payload[cursor - start..s - start]);
                new_bytes = true;
            }
            let (os, oe) = (s.max(cursor), e.min(end));
            if data[os..oe] != payload[os - start..oe - start] {
                conflict = true;
                break;
            }
            cursor = oe;
        }
        if conflict {
            return self.give_up(idx, GiveUp::Conflict);
        }
        if cursor < end {
            data[cursor..end].copy_from_slice(&payload[cursor - start..]);
            new_bytes = true;
        }
        if !new_bytes {
            self.bump(FlowEvent::Duplicate);
            return Offer::Buffered;
        }

        let before = contiguous(&entry.ranges);
        // At most one range per accepted segment, and segments <= max_segments = capacity,
        // so this push never reallocates.
        entry.ranges.push((start, end));
        merge(&mut entry.ranges);
        let after = contiguous(&entry.ranges);
        if after > before {
            Offer::Assembled(&self.slab[idx * max_bytes..idx * max_bytes + after])
        } else {
            self.bump(FlowEvent::OutOfOrder);
            Offer::Buffered
        }
    }
}

/// How a [`FlowTable`] entry's time to live runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// From the last insert or lookup (every hit refreshes it).
    Sliding,
    /// From the last insert only.
    Fixed,
}

/// A small per-worker map from [`FlowKey`] to a `Copy` value with a fixed capacity and a time
/// to live: a FIFO ring in insertion order with an open-addressing index. The ring is a window
/// of the last `capacity` insertions: a removed entry's position is reused once it reaches the
/// head, and an entry still live when `capacity` newer ones have been inserted after it is
/// evicted (the oldest first, counted; expired ones are counted as expired). The index is
/// keyed keyed by a seeded hash of the 5-tuple
/// (attacker-chosen keys cannot be made to collide without the seed). Lookups are O(1) and
/// free when the table is empty; nothing is allocated after [`FlowTable::new`]. The
/// inspector keeps its blocked flows and its fresh flows (SYN seen, first byte not yet) in it.
pub struct FlowTable<V> {
    ring: Box<[Slot<V>]>,
    head: usize,
    /// Ring positions in use from `head` (freed ones included until they reach the head).
    occupied: usize,
    /// `0` empty, otherwise ring position + 1. A power of two, at least twice the capacity.
    index: Box<[u32]>,
    live: usize,
    ttl_ms: u64,
    ttl: Ttl,
    hasher: std::collections::hash_map::RandomState,
    evicted: u64,
    expired: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot<V> {
    entry: Option<(FlowKey, V)>,
    last_ms: u64,
}

impl<V> std::fmt::Debug for FlowTable<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("capacity", &self.ring.len())
            .field("live", &self.live)
            .field("ttl_ms", &self.ttl_ms)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<V: Copy> FlowTable<V> {
    /// Largest accepted capacity (ring positions must fit the `u32` index).
    pub const MAX_CAPACITY: usize = 1 << 24;

    /// A table of `capacity` entries (clamped to `1..=MAX_CAPACITY`; callers validate).
    pub fn new(capacity: usize, ttl_ms: u64, ttl: Ttl) -> FlowTable<V> {
        let capacity = capacity.clamp(1, Self::MAX_CAPACITY);
        let slots = (capacity * 2).next_power_of_two();
        FlowTable {
            ring: (0..capacity)
                .map(|_| Slot {
                    entry: None,
                    last_ms: 0,
                })
                .collect(),
            head: 0,
            occupied: 0,
            index: vec![0; slots].into_boxed_slice(),
            live: 0,
            ttl_ms,
            ttl,
            hasher: std::collections::hash_map::RandomState::new(),
            evicted: 0,
            expired: 0,
        }
    }

    /// Live entries (expired ones included until they are reclaimed).
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Evictions and expiries since the last call: `(evicted, expired)`.
    pub fn take_events(&mut self) -> (u64, u64) {
        let out = (self.evicted, self.expired);
        self.evicted = 0;
        self.expired = 0;
        out
    }

    fn mask(&self) -> usize {
        self.index.len() - 1
    }

    fn home(&self, key: &FlowKey) -> usize {
        use std::hash::BuildHasher;
        // Truncation is the point: the low bits pick the slot.
        (self.hasher.hash_one(key) as usize) & self.mask()
    }

    fn key_at(&self, pos: usize) -> Option<&FlowKey> {
        self.ring[pos].entry.as_ref().map(|(k, _)| k)
    }

    /// Index slot holding `key`, if present.
    fn find(&self, key: &FlowKey) -> Option<usize> {
        if self.live == 0 {
            return None;
        }
        let mut slot = self.home(key);
        loop {
            let v = self.index[slot];
            if v == 0 {
                return None;
            }
            if self.key_at((v - 1) as usize) == Some(key) {
                return Some(slot);
            }
            slot = (slot + 1) & self.mask();
        }
    }

    fn expired_at(&self, pos: usize, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.ring[pos].last_ms) > self.ttl_ms
    }

    /// The value of `key`; an expired entry is removed (counted) instead. With
    /// [`Ttl::Sliding`] a hit refreshes the entry.
    pub fn get(&mut self, key: &FlowKey, now_ms: u64) -> Option<V> {
        let slot = self.find(key)?;
        let pos = (self.index[slot] - 1) as usize;
        if self.expired_at(pos, now_ms) {
            self.remove_slot(slot);
            self.expired += 1;
            return None;
        }
        let entry = &mut self.ring[pos];
        if self.ttl == Ttl::Sliding {
            entry.last_ms = entry.last_ms.max(now_ms);
        }
        entry.entry.map(|(_, v)| v)
    }

    /// Set `key` to `value` with a fresh TTL. A new key takes the next ring position; when
    /// the ring is full its oldest position is freed first (evicted, or expired if its TTL
    /// ran out).
    pub fn insert(&mut self, key: FlowKey, value: V, now_ms: u64) {
        if let Some(slot) = self.find(&key) {
            let pos = (self.index[slot] - 1) as usize;
            self.ring[pos] = Slot {
                entry: Some((key, value)),
                last_ms: now_ms,
            };
            return;
        }
        self.trim_head();
        if self.occupied == self.ring.len() {
            self.pop_head(now_ms);
        }
        let pos = (self.head + self.occupied) % self.ring.len();
        self.occupied += 1;
        self.ring[pos] = Slot {
            entry: Some((key, value)),
            last_ms: now_ms,
        };
        let mut slot = self.home(&key);
        while self.index[slot] != 0 {
            slot = (slot + 1) & self.mask();
        }
        // INVARIANT: pos < capacity <= MAX_CAPACITY < u32::MAX.
        self.index[slot] = pos as u32 + 1;
        self.live += 1;
    }

    /// Remove `key`; returns its value if it was present (expired or not).
    pub fn remove(&mut self, key: &FlowKey) -> Option<V> {
        let slot = self.find(key)?;
        let pos = (self.index[slot] - 1) as usize;
        let value = self.ring[pos].entry.map(|(_, v)| v);
        self.remove_slot(slot);
        value
    }

    /// Release the free ring positions at the head (amortised O(1): each position is released
    /// once per insert).
    fn trim_head(&mut self) {
        while self.occupied > 0 && self.ring[self.head].entry.is_none() {
            self.head = (self.head + 1) % self.ring.len();
            self.occupied -= 1;
        }
    }

    /// Free the oldest ring position (counted as evicted, or expired when its TTL ran out).
    fn pop_head(&mut self, now_ms: u64) {
        let pos = self.head;
        if let Some(key) = self.key_at(pos).copied() {
            if self.expired_at(pos, now_ms) {
                self.expired += 1;
            } else {
                self.evicted += 1;
            }
            match self.find(&key) {
                Some(slot) => self.remove_slot(slot),
                // Unreachable (every live position is indexed); keep the counts right anyway.
                None => {
                    self.ring[pos].entry = None;
                    self.live -= 1;
                }
            }
        }
        self.trim_head();
    }

    /// Remove an index slot with backward-shift deletion (linear probing stays correct); the
    /// ring position it pointed to is marked free and reclaimed when it reaches the head.
    fn remove_slot(&mut self, mut slot: usize) {
        let pos = (self.index[slot] - 1) as usize;
        self.ring[pos].entry = None;
        self.live -= 1;
        self.index[slot] = 0;
        self.trim_head();
        let mask = self.mask();
        let mut next = (slot + 1) & mask;
        while self.index[next] != 0 {
            let npos = (self.index[next] - 1) as usize;
            let home = self.key_at(npos).map_or(next, |k| self.home(k));
            // Move `next` back into the hole unless its home lies cyclically in (slot, next].
            let in_range = if slot <= next {
                slot < home && home <= next
            } else {
                slot < home || home <= next
            };
            if !in_range {
                self.index[slot] = self.index[next];
                self.index[next] = 0;
                slot = next;
            }
            next = (next + 1) & mask;
        }
    }
}

/// Bytes held from offset 0 without a gap.
fn contiguous(ranges: &[(usize, usize)]) -> usize {
    match ranges.first() {
        Some(&(0, end)) => end,
        _ => 0,
    }
}

/// Sort and merge overlapping or adjacent ranges, in place (no allocation).
fn merge(ranges: &mut Vec<(usize, usize)>) {
    ranges.sort_unstable();
    let mut out = 0;
    for i in 0..ranges.len() {
        let (s, e) = ranges[i];
        if out > 0 && s <= ranges[out - 1].1 {
            ranges[out - 1].1 = ranges[out - 1].1.max(e);
        } else {
            ranges[out] = (s, e);
            out += 1;
        }
    }
    ranges.truncate(out);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn key(n: u16) -> FlowKey {
        FlowKey {
            src: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
            dst: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 200)),
            src_port: 40_000 + n,
            dst_port: 443,
            protocol: 6,
        }
    }

    fn limits(max_flows: usize, max_bytes: usize, max_segments: usize) -> Limits {
        Limits {
            max_flows,
            max_bytes,
            max_segments,
            timeout_ms: 2_000,
        }
    }

    fn hello(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn assembled(o: Offer<'_>) -> Vec<u8> {
        match o {
            Offer::Assembled(b) => b.to_vec(),
            other => panic!("expected Assembled, got {other:?}"),
        }
    }

    #[test]
    fn two_segment_hello() {
        let mut r = Reassembler::new(Limits::DEFAULT).unwrap();
        let h = hello(1800);
        let seq = 1_000_000;
        assert_eq!(r.offer(&key(1), seq, &h[..1448], 0), Offer::NotTracked);
        assert_eq!(assembled(r.begin(key(1), seq, &h[..1448], 0)), &h[..1448]);
        assert_eq!(r.len(), 1);
        // Another flow is untouched.
        assert_eq!(
            r.offer(&key(2), seq + 1448, &h[1448..], 5),
            Offer::NotTracked
        );
        assert_eq!(assembled(r.offer(&key(1), seq + 1448, &h[1448..], 5)), h);
        assert!(r.finish(&key(1)));
        assert!(!r.finish(&key(1)));
        assert!(r.is_empty());
        assert_eq!(r.count(FlowEvent::Started), 1);
        assert_eq!(r.count(FlowEvent::Finished), 1);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut r = Reassembler::new(Limits::DEFAULT).unwrap();
        let h = hello(3000);
        let seq = u32::MAX - 999;
        r.begin(key(1), seq, &h[..1500], 0);
        let second = seq.wrapping_add(1500);
        assert!(second < 1000);
        assert_eq!(assembled(r.offer(&key(1), second, &h[1500..], 1)), h);
    }

    #[test]
    fn out_of_order_and_overlap() {
        let mut r = Reassembler::new(Limits::DEFAULT).unwrap();
        let h = hello(3000);
        r.begin(key(1), 0, &h[..1000], 0);
        assert_eq!(r.offer(&key(1), 2000, &h[2000..], 1), Offer::Buffered);
        assert_eq!(r.count(FlowEvent::OutOfOrder), 1);
        // Fills the gap and overlaps both neighbours with identical bytes.
        assert_eq!(assembled(r.offer(&key(1), 900, &h[900..2100], 2)), h);
        // Data from before the hello's first byte is ignored.
        assert_eq!(
            r.offer(&key(1), 4_000_000_000, &[1, 2, 3], 3),
            Offer::Buffered
        );
        assert_eq!(r.count(FlowEvent::Duplicate), 1);
        // A segment straddling the first byte: its tail is checked against what is held.
        assert_eq!(
            r.offer(&key(1), u32::MAX - 1, &[9, 9, h[0], h[1]], 4),
            Offer::Buffered
        );
        assert_eq!(r.count(FlowEvent::Duplicate), 2);
    }

    #[test]
    fn retransmissions() {
        let mut r = Reassembler::new(Limits::DEFAULT).unwrap();
        let h = hello(2000);
        r.begin(key(1), 10, &h[..1000], 0);
        // Same bytes again: nothing new.
        assert_eq!(r.offer(&key(1), 10, &h[..1000], 1), Offer::Buffered);
        assert_eq!(r.offer(&key(1), 510, &h[500..1000], 1), Offer::Buffered);
        assert_eq!(r.count(FlowEvent::Duplicate), 2);
        // Different bytes for the same sequence numbers: evasion, give up.
        let mut forged = h[500..1200].to_vec();
        forged[10] ^= 0xff;
        assert_eq!(
            r.offer(&key(1), 510, &forged, 2),
            Offer::GaveUp(GiveUp::Conflict)
        );
        assert!(r.is_empty());
        assert_eq!(r.count(FlowEvent::Conflict), 1);
        assert_eq!(r.offer(&key(1), 1010, &h[1000..], 3), Offer::NotTracked);
    }

    #[test]
    fn max_bytes_edges() {
        for (max_bytes, total, ok) in [(1000, 999, true), (1000, 1000, true), (1000, 1001, false)] {
            let mut r = Reassembler::new(limits(4, max_bytes, 8)).unwrap();
            let h = hello(total);
            r.begin(key(1), 7, &h[..500], 0);
            let got = r.offer(&key(1), 507, &h[500..], 1);
            if ok {
                assert_eq!(assembled(got), h, "{total}");
            } else {
                assert_eq!(got, Offer::GaveUp(GiveUp::Bytes), "{total}");
                assert_eq!(r.count(FlowEvent::Bytes), 1);
                assert!(r.is_empty());
            }
        }
        // A first segment over the limit, and an out-of-order segment far ahead.
        let mut r = Reassembler::new(limits(4, 1000, 8)).unwrap();
        assert_eq!(
            r.begin(key(1), 0, &hello(1001), 0),
            Offer::GaveUp(GiveUp::Bytes)
        );
        r.begin(key(1), 0, &hello(10), 0);
        assert_eq!(
            r.offer(&key(1), 1_000_000, &[1], 0),
            Offer::GaveUp(GiveUp::Bytes)
        );
        assert_eq!(r.count(FlowEvent::Bytes), 2);
    }

    #[test]
    fn max_segments_edges() {
        for (segments, ok) in [(3, true), (4, false)] {
            let mut r = Reassembler::new(limits(4, 1000, 3)).unwrap();
            let h = hello(segments * 10);
            r.begin(key(1), 0, &h[..10], 0);
            let mut last = Offer::NotTracked;
            for i in 1..segments {
                last = r.offer(&key(1), (i * 10) as u32, &h[i * 10..(i + 1) * 10], 0);
            }
            if ok {
                assert_eq!(assembled(last), h);
            } else {
                assert_eq!(last, Offer::GaveUp(GiveUp::Segments));
                assert_eq!(r.count(FlowEvent::Segments), 1);
            }
        }
        // Retransmissions count too; empty payloads do not.
        let mut r = Reassembler::new(limits(4, 1000, 2)).unwrap();
        r.begin(key(1), 0, &[1, 2], 0);
        assert_eq!(r.offer(&key(1), 2, &[], 0), Offer::Buffered);
        assert_eq!(r.offer(&key(1), 0, &[1, 2], 0), Offer::Buffered);
        assert_eq!(
            r.offer(&key(1), 2, &[3], 0),
            Offer::GaveUp(GiveUp::Segments)
        );
    }

    #[test]
    fn timeout_edges_and_sweep() {
        let mut r = Reassembler::new(limits(4, 1000, 8)).unwrap();
        let h = hello(30);
        r.begin(key(1), 0, &h[..10], 1_000);
        // Exactly at the timeout: still fine.
        assert_eq!(assembled(r.offer(&key(1), 10, &h[10..20], 3_000)), &h[..20]);
        // One millisecond later: expired.
        assert_eq!(
            r.offer(&key(1), 20, &h[20..], 3_001),
            Offer::GaveUp(GiveUp::Expired)
        );
        assert_eq!(r.count(FlowEvent::Expired), 1);
        // A clock going backwards never expires anything.
        r.begin(key(2), 0, &h[..10], 5_000);
        assert!(matches!(
            r.offer(&key(2), 10, &h[10..20], 10),
            Offer::Assembled(_)
        ));
        // The sweep frees only stale entries.
        r.begin(key(3), 0, &h[..10], 6_000);
        assert_eq!(r.expire(7_000), 0);
        assert_eq!(r.expire(7_001), 1);
        assert!(r.contains(&key(3)) && !r.contains(&key(2)));
        assert_eq!(r.count(FlowEvent::Expired), 2);
    }

    #[test]
    fn full_table_reclaims_expired_then_evicts_oldest() {
        let mut r = Reassembler::new(limits(2, 1000, 8)).unwrap();
        r.begin(key(1), 0, &[1], 0);
        r.begin(key(2), 0, &[1], 100);
        // Full, nothing expired: the oldest (key 1) goes.
        r.begin(key(3), 0, &[1], 200);
        assert_eq!(r.count(FlowEvent::Evicted), 1);
        assert_eq!(r.offer(&key(1), 1, &[2], 300), Offer::NotTracked);
        assert!(r.contains(&key(2)) && r.contains(&key(3)));
        // Key 2 is expired at 2_101: reclaimed as expired, not evicted.
        r.begin(key(4), 0, &[1], 2_101);
        assert_eq!(r.count(FlowEvent::Evicted), 1);
        assert_eq!(r.count(FlowEvent::Expired), 1);
        assert!(!r.contains(&key(2)) && r.contains(&key(3)) && r.contains(&key(4)));
        assert_eq!(r.len(), 2);
        // Restarting a flow in progress reuses its entry.
        r.begin(key(3), 50, &[7, 8], 2_200);
        assert_eq!(r.len(), 2);
        assert_eq!(assembled(r.offer(&key(3), 52, &[9], 2_200)), [7, 8, 9]);
    }

    #[test]
    fn invalid_limits_are_refused() {
        let ok = Limits::DEFAULT;
        for (l, want) in [
            (Limits { max_flows: 0, ..ok }, LimitsError::Flows { got: 0 }),
            (Limits { max_bytes: 0, ..ok }, LimitsError::Bytes { got: 0 }),
            (
                Limits {
                    max_bytes: Limits::MAX_BYTES + 1,
                    ..ok
                },
                LimitsError::Bytes {
                    got: Limits::MAX_BYTES + 1,
                },
            ),
            (
                Limits {
                    max_segments: 0,
                    ..ok
                },
                LimitsError::Segments { got: 0 },
            ),
            (
                Limits {
                    timeout_ms: 0,
                    ..ok
                },
                LimitsError::Timeout,
            ),
            (
                Limits {
                    max_flows: Limits::MAX_FLOWS,
                    max_bytes: Limits::MAX_BYTES,
                    ..ok
                },
                LimitsError::Total,
            ),
        ] {
            assert_eq!(Reassembler::new(l).unwrap_err(), want);
        }
        assert!(Reassembler::new(limits(1, 1, 1)).is_ok());
    }

    #[test]
    fn event_indices_are_dense() {
        for (i, e) in FlowEvent::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
    }

    #[test]
    fn begin_at_places_early_data_from_the_base() {
        let mut r = Reassembler::new(limits(4, 1000, 8)).unwrap();
        let h = hello(30);
        let base = u32::MAX - 4; // wraps inside the message
        // The third part first, then the second, then the first byte's segment.
        assert_eq!(
            r.begin_at(key(1), base, base.wrapping_add(20), &h[20..], 0),
            Offer::Buffered
        );
        assert_eq!(
            r.offer(&key(1), base.wrapping_add(10), &h[10..20], 1),
            Offer::Buffered
        );
        assert_eq!(assembled(r.offer(&key(1), base, &h[..10], 2)), h);
        assert_eq!(r.count(FlowEvent::Started), 1);
        // A segment straddling the base: its bytes from the base on are the first ones.
        let mut r = Reassembler::new(limits(4, 1000, 8)).unwrap();
        assert_eq!(
            assembled(r.begin_at(key(1), 100, 95, &hello(10), 0)),
            &hello(10)[5..]
        );
        // Bounds from the base: ending exactly at max_bytes is held, one byte more gives up.
        let mut r = Reassembler::new(limits(4, 1000, 8)).unwrap();
        assert_eq!(r.begin_at(key(1), 0, 999, &[1], 0), Offer::Buffered);
        assert_eq!(
            r.begin_at(key(2), 0, 1000, &[1], 0),
            Offer::GaveUp(GiveUp::Bytes)
        );
        assert!(!r.contains(&key(2)));
        assert_eq!(r.begin_at(key(3), 0, 5, &[], 0), Offer::NotTracked);
        assert_eq!(r.count(FlowEvent::Bytes), 1);
    }

    #[test]
    fn flow_table_evicts_the_oldest_when_full() {
        let mut t = FlowTable::new(3, 1_000, Ttl::Sliding);
        for n in 0..3 {
            t.insert(key(n), u32::from(n), 0);
        }
        t.insert(key(3), 3, 10);
        assert_eq!(t.take_events(), (1, 0));
        assert_eq!(t.get(&key(0), 10), None);
        for n in 1..4 {
            assert_eq!(t.get(&key(n), 10), Some(u32::from(n)), "{n}");
        }
        // Re-inserting replaces instead of duplicating.
        t.insert(key(2), 20, 20);
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(&key(2), 20), Some(20));
        // An expired head is counted as expired, not evicted.
        t.insert(key(9), 9, 5_000);
        assert_eq!(t.take_events(), (0, 1));
        assert_eq!(t.remove(&key(9)), Some(9));
        assert_eq!(t.remove(&key(9)), None);
    }

    #[test]
    fn flow_table_ttl_slides_or_not() {
        for (ttl, alive_at_1500) in [(Ttl::Sliding, true), (Ttl::Fixed, false)] {
            let mut t = FlowTable::new(4, 1_000, ttl);
            t.insert(key(1), 7u32, 0);
            // Exactly at the TTL: still there (and a sliding TTL restarts).
            assert_eq!(t.get(&key(1), 1_000), Some(7), "{ttl:?}");
            assert_eq!(t.get(&key(1), 1_500).is_some(), alive_at_1500, "{ttl:?}");
            assert_eq!(t.take_events(), (0, u64::from(!alive_at_1500)));
            // A clock going backwards never expires anything.
            t.insert(key(2), 8, 5_000);
            assert_eq!(t.get(&key(2), 10), Some(8));
        }
    }

    proptest! {
        /// The table answers like a naive FIFO model of the same capacity (no TTL).
        #[test]
        fn flow_table_matches_a_model(
            ops in proptest::collection::vec((0u8..3, 0u16..40), 1..400),
            capacity in 1usize..12,
        ) {
            let mut t = FlowTable::new(capacity, u64::MAX / 2, Ttl::Sliding);
            // Ring positions, oldest first; a removed entry leaves a hole until it is the
            // oldest.
            let mut model: std::collections::VecDeque<Option<u16>> = Default::default();
            let mut evicted = 0;
            let trim = |m: &mut std::collections::VecDeque<Option<u16>>| {
                while m.front() == Some(&None) {
                    m.pop_front();
                }
            };
            for (op, n) in ops {
                match op {
                    0 => {
                        if !model.contains(&Some(n)) {
                            if model.len() == capacity
                                && let Some(Some(_)) = model.pop_front()
                            {
                                evicted += 1;
                            }
                            model.push_back(Some(n));
                            trim(&mut model);
                        }
                        t.insert(key(n), n, 1);
                    }
                    1 => {
                        let got = t.get(&key(n), 1);
                        prop_assert_eq!(got, model.contains(&Some(n)).then_some(n), "key {}", n);
                    }
                    _ => {
                        let had = model.iter().position(|m| *m == Some(n));
                        if let Some(i) = had {
                            model[i] = None;
                            trim(&mut model);
                        }
                        prop_assert_eq!(t.remove(&key(n)), had.map(|_| n));
                    }
                }
                prop_assert_eq!(t.len(), model.iter().flatten().count());
            }
            for n in 0..40 {
                prop_assert_eq!(t.get(&key(n), 1), model.contains(&Some(n)).then_some(n));
            }
            prop_assert_eq!(t.take_events(), (evicted, 0));
        }
    }

    proptest! {
        /// Any segmentation, delivered in any order with duplicates, reassembles to the
        /// original once every byte arrived, and never before.
        #[test]
        fn any_order_reassembles(
            len in 1usize..3000,
            cuts in proptest::collection::vec(1usize..3000, 0..6),
            order in proptest::collection::vec(any::<u16>(), 8),
            base in any::<u32>(),
        ) {
            let h = hello(len);
            let mut points: Vec<usize> = cuts.into_iter().filter(|c| *c < len).collect();
            points.push(0);
            points.push(len);
            points.sort_unstable();
            points.dedup();
            let mut segs: Vec<(usize, usize)> = points.windows(2).map(|w| (w[0], w[1])).collect();
            let first = segs.remove(0);
            // Shuffle the rest deterministically, then add one duplicate.
            for (i, o) in order.iter().enumerate() {
                if segs.len() > 1 {
                    let a = i % segs.len();
                    let b = usize::from(*o) % segs.len();
                    segs.swap(a, b);
                }
            }
            if let Some(&d) = segs.first() {
                segs.push(d);
            }
            let mut r = Reassembler::new(limits(2, 4096, 16)).unwrap();
            let mut got = match r.begin(key(1), base, &h[first.0..first.1], 0) {
                Offer::Assembled(b) => b.to_vec(),
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            };
            for (s, e) in segs {
                let seq = base.wrapping_add(s as u32);
                if let Offer::Assembled(b) = r.offer(&key(1), seq, &h[s..e], 0) {
                    prop_assert!(b.len() > got.len());
                    got = b.to_vec();
                }
            }
            prop_assert_eq!(got, h);
        }
    }
}
