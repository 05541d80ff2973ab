//! [`RangeMap`]: disjoint, sorted, inclusive address ranges with a value each, and a direct
//! index on the top address bits. The building block of [`IpSet`](super::IpSet) and
//! [`AsnTable`](super::AsnTable).
//!
//! Prefixes are flattened into disjoint ranges when the map is built (a set merges overlapping
//! and adjacent ranges; a longest-prefix-match table lets the most specific prefix win), so a
//! lookup is one load from the index plus a binary search over the few ranges of that bucket:
//! two or three cache lines whatever the size, no pointer chasing. Each range is stored as one
//! `(start, end, value)` record (IPv4 set: 8 bytes), so the last probe of the search also
//! reads the end and the value. That is about a seventh of what a tree bitmap takes for the
//! same million random prefixes, and building is a sort plus one linear pass.
//!
//! The index has about one bucket per range (a power of two, at most 2^16 buckets = 256 KiB),
//! so small lists keep a small, cache-resident index; maps of fewer than 64 ranges have none.
//! Lookups never allocate, never panic and never fail.

use std::fmt;

/// Maps below this many ranges are searched without an index.
const INDEX_MIN_RANGES: usize = 64;
/// Most index bits: 2^16 buckets.
const INDEX_MAX_BITS: u32 = 16;

/// An address as an unsigned integer (IPv4: `u32`, IPv6: `u128`).
pub(crate) trait Key: Copy + Ord + Default + fmt::Debug {
    /// `self - base` (`None` below `base`) shifted right by `shift`, as a bucket number
    /// (saturating at `usize::MAX`).
    fn bucket(self, base: Self, shift: u32) -> Option<usize>;
    /// The first address of `bucket`: `base + (bucket << shift)` (saturating).
    fn bucket_start(bucket: usize, base: Self, shift: u32) -> Self;
    /// Bits needed to write `self - base` (0 when equal).
    fn span_bits(self, base: Self) -> u32;
    /// `self + 1`, `None` past the last address.
    fn succ(self) -> Option<Self>;
    /// `self - 1`, `None` before the first address.
    fn pred(self) -> Option<Self>;
}

macro_rules! key_impl {
    ($t:ty) => {
        impl Key for $t {
            #[inline]
            fn bucket(self, base: $t, shift: u32) -> Option<usize> {
                let offset = self.checked_sub(base)?;
                let bucket = offset.checked_shr(shift).unwrap_or(0);
                Some(usize::try_from(bucket).unwrap_or(usize::MAX))
            }
            fn bucket_start(bucket: usize, base: $t, shift: u32) -> $t {
                let offset = <$t>::try_from(bucket)
                    .ok()
                    .filter(|b| *b == 0 || b.leading_zeros() >= shift)
                    .and_then(|b| b.checked_shl(shift))
                    .unwrap_or(<$t>::MAX);
                base.saturating_add(offset)
            }
            fn span_bits(self, base: $t) -> u32 {
                <$t>::BITS - self.saturating_sub(base).leading_zeros()
            }
            fn succ(self) -> Option<$t> {
                self.checked_add(1)
            }
            fn pred(self) -> Option<$t> {
                self.checked_sub(1)
            }
        }
    };
}

key_impl!(u32);
key_impl!(u128);

/// One range of a [`RangeMap`]: `start..=end` has `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range<K, V> {
    start: K,
    end: K,
    value: V,
}

/// Disjoint inclusive ranges sorted by start, with a value each.
pub(crate) struct RangeMap<K, V> {
    ranges: Box<[Range<K, V>]>,
    /// Empty, or one entry per bucket plus one: `index[b]` is the first range whose end is at
    /// or after the start of bucket `b`; the last entry is the number of ranges.
    index: Box<[u32]>,
    /// A key's bucket is `(key - base) >> shift`: the buckets split the span of the ranges,
    /// not the whole address space (IPv6 addresses in use share their top bits).
    base: K,
    shift: u32,
}

impl<K: Key, V: Copy + PartialEq> RangeMap<K, V> {
    pub(crate) fn empty() -> RangeMap<K, V> {
        RangeMap {
            ranges: Box::new([]),
            index: Box::new([]),
            base: K::default(),
            shift: 0,
        }
    }

    /// Number of disjoint ranges stored.
    pub(crate) fn ranges(&self) -> usize {
        self.ranges.len()
    }

    /// Bytes of heap the map holds.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.ranges) + std::mem::size_of_val(&*self.index)
    }

    /// The value of the range containing `key`.
    #[inline]
    pub(crate) fn get(&self, key: K) -> Option<V> {
        self.find(key).map(|r| r.value)
    }

    /// The range containing `key`: its first and last key and its value (for explanations;
    /// after flattening, a range may be the union of several adjacent inputs).
    pub(crate) fn get_range(&self, key: K) -> Option<(K, K, V)> {
        self.find(key).map(|r| (r.start, r.end, r.value))
    }

    #[inline]
    fn find(&self, key: K) -> Option<&Range<K, V>> {
        let n = self.ranges.len();
        let (lo, hi) = if self.index.is_empty() {
            (0, n)
        } else {
            // The range containing `key`, if any, ends at or after the bucket start (so it is
            // at or after index[b]) and starts at or before the bucket end (so it is at most
            // index[b + 1], the first range ending in a later bucket).
            // Below the first range: nothing contains `key`.
            let b = key.bucket(self.base, self.shift)?;
            let lo = self.index.get(b).map_or(n, |&i| i as usize);
            // `b` saturates for a key far above the indexed span: no `b + 1` bucket then.
            let hi = b
                .checked_add(1)
                .and_then(|next| self.index.get(next))
                .map_or(n, |&i| (i as usize).saturating_add(1).min(n));
            (lo, hi)
        };
        let candidates = self.ranges.get(lo..hi)?;
        let after = candidates.partition_point(|r| r.start <= key);
        let range = candidates.get(after.checked_sub(1)?)?;
        (range.end >= key).then_some(range)
    }

    /// Build from disjoint ranges sorted by start (`start <= end`), merging adjacent ranges
    /// with equal values.
    fn from_disjoint(sorted: impl IntoIterator<Item = (K, K, V)>) -> RangeMap<K, V> {
        let mut ranges: Vec<Range<K, V>> = Vec::new();
        for (start, end, value) in sorted {
            if let Some(last) = ranges.last_mut()
                && last.value == value
                && last.end.succ() == Some(start)
            {
                last.end = end;
                continue;
            }
            ranges.push(Range { start, end, value });
        }
        let (index, base, shift) = build_index(&ranges);
        RangeMap {
            ranges: ranges.into_boxed_slice(),
            index,
            base,
            shift,
        }
    }

    /// Longest-prefix-match table from prefixes given as ranges `(first, last, value)`.
    ///
    /// The ranges must be prefixes of one family: any two are nested or disjoint. Inside a
    /// range the value of the narrowest covering prefix applies; for two rows of the same
    /// prefix, the one given last wins.
    pub(crate) fn longest_prefix(mut rows: Vec<(K, K, V)>) -> RangeMap<K, V> {
        // Wider first for equal starts; the stable sort keeps input order for equal prefixes,
        // so the later row is pushed later and wins.
        rows.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut out: Vec<(K, K, V)> = Vec::with_capacity(rows.len());
        // Open prefixes containing the sweep position: (last address, value), narrowest on top.
        let mut open: Vec<(K, V)> = Vec::new();
        // First address not yet emitted for the top of `open` (`None`: past the end).
        let mut cursor: Option<K> = None;
        for (start, end, value) in rows {
            while let Some(&(top_end, top_value)) = open.last() {
                if top_end >= start {
                    break;
                }
                emit(&mut out, cursor, top_end, top_value);
                cursor = top_end.succ();
                open.pop();
            }
            if let Some(&(_, top_value)) = open.last()
                && let Some(before) = start.pred()
            {
                emit(&mut out, cursor, before, top_value);
            }
            cursor = Some(start);
            open.push((end, value));
        }
        while let Some((top_end, top_value)) = open.pop() {
            emit(&mut out, cursor, top_end, top_value);
            cursor = top_end.succ();
        }
        RangeMap::from_disjoint(out)
    }
}

impl<K: Key> RangeMap<K, ()> {
    /// A set: the union of `ranges` (any ranges, overlapping or not, `start <= end`).
    pub(crate) fn union(mut ranges: Vec<(K, K)>) -> RangeMap<K, ()> {
        ranges.sort_unstable();
        let mut merged: Vec<(K, K, ())> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            if let Some(last) = merged.last_mut() {
                // Overlapping or adjacent: extend.
                if last.1.succ().is_none_or(|next| start <= next) {
                    last.1 = last.1.max(end);
                    continue;
                }
            }
            merged.push((start, end, ()));
        }
        RangeMap::from_disjoint(merged)
    }

    pub(crate) fn contains(&self, key: K) -> bool {
        self.get(key).is_some()
    }
}

/// Append `from..=to` (when not empty) with `value`, merging with an adjacent equal range.
fn emit<K: Key, V: PartialEq>(out: &mut Vec<(K, K, V)>, from: Option<K>, to: K, value: V) {
    let Some(from) = from else { return };
    if from > to {
        return;
    }
    if let Some(last) = out.last_mut()
        && last.2 == value
        && last.1.succ() == Some(from)
    {
        last.1 = to;
        return;
    }
    out.push((from, to, value));
}

/// The bucket index over sorted disjoint ranges (about one bucket per range), or nothing for
/// a small map. Returns the index, the base and the shift that map a key to its bucket.
fn build_index<K: Key, V>(ranges: &[Range<K, V>]) -> (Box<[u32]>, K, u32) {
    let n = ranges.len();
    let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
        return (Box::new([]), K::default(), 0);
    };
    if n < INDEX_MIN_RANGES || u32::try_from(n).is_err() {
        return (Box::new([]), K::default(), 0);
    }
    let base = first.start;
    let bits = n.ilog2().min(INDEX_MAX_BITS);
    let shift = last.end.span_bits(base).saturating_sub(bits);
    // Every key from base to last.end falls in one of these buckets.
    let buckets = last
        .end
        .bucket(base, shift)
        .map_or(1, |b| b.saturating_add(1))
        .min(1 << INDEX_MAX_BITS);
    let mut index = Vec::with_capacity(buckets + 1);
    let mut i = 0usize;
    for bucket in 0..buckets {
        let start = K::bucket_start(bucket, base, shift);
        while ranges.get(i).is_some_and(|r| r.end < start) {
            i += 1;
        }
        // Fits: checked against u32 above.
        index.push(i as u32);
    }
    index.push(n as u32);
    (index.into_boxed_slice(), base, shift)
}

impl<K: Key, V> fmt::Debug for RangeMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeMap")
            .field("ranges", &self.ranges.len())
            .field("index_buckets", &self.index.len().saturating_sub(1))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(ranges: &[(u32, u32)]) -> RangeMap<u32, ()> {
        RangeMap::union(ranges.to_vec())
    }

    #[test]
    fn union_merges_overlapping_and_adjacent() {
        let s = set(&[(10, 20), (21, 30), (25, 26), (40, 50), (0, 0)]);
        assert_eq!(s.ranges(), 3);
        for (key, want) in [
            (0, true),
            (1, false),
            (9, false),
            (10, true),
            (30, true),
            (31, false),
            (39, false),
            (40, true),
            (50, true),
            (51, false),
            (u32::MAX, false),
        ] {
            assert_eq!(s.contains(key), want, "{key}");
        }
    }

    #[test]
    fn get_range_returns_the_merged_range() {
        let s = set(&[(10, 20), (21, 30), (40, 50)]);
        for (key, want) in [
            (9, None),
            (10, Some((10, 30, ()))),
            (25, Some((10, 30, ()))),
            (30, Some((10, 30, ()))),
            (31, None),
            (40, Some((40, 50, ()))),
            (50, Some((40, 50, ()))),
            (51, None),
        ] {
            assert_eq!(s.get_range(key), want, "{key}");
        }
    }

    #[test]
    fn extremes_of_the_address_space() {
        let all = set(&[(0, u32::MAX)]);
        assert!(all.contains(0) && all.contains(u32::MAX));
        let top = set(&[(u32::MAX - 1, u32::MAX), (u32::MAX, u32::MAX)]);
        assert_eq!(top.ranges(), 1);
        assert!(top.contains(u32::MAX) && !top.contains(u32::MAX - 2));
        let v6: RangeMap<u128, ()> = RangeMap::union(vec![(u128::MAX, u128::MAX), (0, 0)]);
        assert!(v6.contains(0) && v6.contains(u128::MAX) && !v6.contains(1));
        let empty: RangeMap<u32, ()> = RangeMap::empty();
        assert!(empty.ranges() == 0 && !empty.contains(0) && !empty.contains(u32::MAX));
    }

    #[test]
    fn longest_prefix_lets_the_narrowest_win() {
        // 10.0.0.0/8 = a, 10.1.0.0/16 = b, 10.1.2.0/24 = c, and 10.1.2.0/24 again = d (wins).
        let row = |first: u32, len: u32, value: char| (first, first | (u32::MAX >> len), value);
        let rows = vec![
            row(0x0a01_0200, 24, 'c'),
            row(0x0a00_0000, 8, 'a'),
            row(0x0a01_0000, 16, 'b'),
            row(0x0a01_0200, 24, 'd'),
        ];
        let m = RangeMap::longest_prefix(rows);
        for (key, want) in [
            (0x09ff_ffff, None),
            (0x0a00_0000, Some('a')),
            (0x0a00_ffff, Some('a')),
            (0x0a01_0000, Some('b')),
            (0x0a01_01ff, Some('b')),
            (0x0a01_0200, Some('d')),
            (0x0a01_02ff, Some('d')),
            (0x0a01_0300, Some('b')),
            (0x0a01_ffff, Some('b')),
            (0x0a02_0000, Some('a')),
            (0x0aff_ffff, Some('a')),
            (0x0b00_0000, None),
        ] {
            assert_eq!(m.get(key), want, "{key:#x}");
        }
        // a, b, d, b, a
        assert_eq!(m.ranges(), 5);
    }

    #[test]
    fn longest_prefix_at_the_top_of_the_space() {
        let rows = vec![(0u32, u32::MAX, 1u8), (u32::MAX, u32::MAX, 2u8)];
        let m = RangeMap::longest_prefix(rows);
        assert_eq!(m.get(0), Some(1));
        assert_eq!(m.get(u32::MAX - 1), Some(1));
        assert_eq!(m.get(u32::MAX), Some(2));
        let rows = vec![(0u128, u128::MAX, 1u8), (0, 0, 2u8)];
        let m = RangeMap::longest_prefix(rows);
        assert_eq!(m.get(0), Some(2));
        assert_eq!(m.get(1), Some(1));
        assert_eq!(m.get(u128::MAX), Some(1));
    }

    #[test]
    fn the_index_covers_ranges_that_span_buckets() {
        // 104 ranges -> 64 buckets of 2^26 addresses. One range spans several buckets, one
        // fills a bucket exactly, one starts exactly at a bucket start, one ends the space.
        let mut ranges: Vec<(u32, u32)> = (0..100u32)
            .map(|i| (i * 0x0100_0000, i * 0x0100_0000 + 1))
            .collect();
        ranges.push((0x7000_0000, 0x9000_0000));
        ranges.push((0xa400_0000, 0xa7ff_ffff));
        ranges.push((0xb000_0000, 0xb000_0000));
        ranges.push((0xffff_fff0, 0xffff_ffff));
        let s = set(&ranges);
        assert_eq!(s.index.len(), 65);
        assert_eq!(s.shift, 26);
        for (key, want) in [
            (0, true),
            (2, false),
            (0x0100_0001, true),
            (0x0100_0002, false),
            (0x63ff_ffff, false),
            (0x6fff_ffff, false),
            (0x7000_0000, true),
            (0x7bff_ffff, true),
            (0x7c00_0000, true),
            (0x9000_0000, true),
            (0x9000_0001, false),
            (0xa3ff_ffff, false),
            (0xa400_0000, true),
            (0xa7ff_ffff, true),
            (0xa800_0000, false),
            (0xafff_ffff, false),
            (0xb000_0000, true),
            (0xb000_0001, false),
            (0xffff_ffef, false),
            (0xffff_fff0, true),
            (u32::MAX, true),
        ] {
            assert_eq!(s.contains(key), want, "{key:#x}");
        }
    }

    #[test]
    fn the_largest_index_at_both_edges_of_every_range() {
        // 65,536+ ranges -> 2^16 buckets; one /24-sized range per /16 at a varying offset,
        // plus IPv6 ranges spanning buckets.
        let ranges: Vec<(u32, u32)> = (0..0x1_0000u32)
            .map(|i| {
                let start = (i << 16) | ((i % 7) << 8);
                (start, start + 0xff)
            })
            .collect();
        let s = set(&ranges);
        assert_eq!(s.index.len(), (1 << 16) + 1);
        assert_eq!(s.shift, 16);
        for (start, end) in &ranges {
            assert!(s.contains(*start) && s.contains(*end), "{start:#x}");
            assert!(!s.contains(*end + 1), "{end:#x} + 1");
            if let Some(before) = start.checked_sub(1) {
                assert!(!s.contains(before), "{start:#x} - 1");
            }
        }
        let wide: Vec<(u128, u128)> = (0..100u128)
            .map(|i| (i << 120, (i << 120) + (1 << 118)))
            .collect();
        let v6: RangeMap<u128, ()> = RangeMap::union(wide.clone());
        // base 0, span up to 99 * 2^120 + 2^118: 127 bits, 64 buckets
        assert_eq!(v6.shift, 121);
        // A cluster far from zero: the buckets split the cluster, not the address space.
        let base = 0x2001_0db8u128 << 96;
        let cluster: Vec<(u128, u128)> = (0..1000u128)
            .map(|i| (base + (i << 64), base + (i << 64) + 0xffff))
            .collect();
        let c: RangeMap<u128, ()> = RangeMap::union(cluster.clone());
        // 1000 ranges: 9 bits over a 74-bit span, 500 buckets of 2^65 addresses in use.
        assert_eq!((c.base, c.shift, c.index.len()), (base, 65, 501));
        for (start, end) in &cluster {
            assert!(c.contains(*start) && c.contains(*end));
            assert!(!c.contains(end + 1) && !c.contains(start - 1));
        }
        assert!(!c.contains(0) && !c.contains(u128::MAX) && !c.contains(base - 1));
        for (start, end) in &wide {
            assert!(v6.contains(*start) && v6.contains(*end) && v6.contains(start + 12345));
            assert!(!v6.contains(end + 1));
        }
    }

    fn naive_union(ranges: &[(u32, u32)], key: u32) -> bool {
        ranges.iter().any(|(s, e)| *s <= key && key <= *e)
    }

    /// Ranges clustered in a few buckets so that probes hit them and the index is used.
    fn clustered_range() -> impl Strategy<Value = (u32, u32)> {
        (0u32..4, any::<u16>(), 0u32..3000).prop_map(|(bucket, low, len)| {
            let start = (bucket << 16) | u32::from(low);
            (start, start.saturating_add(len))
        })
    }

    fn probe() -> impl Strategy<Value = u32> {
        prop_oneof![0u32..0x0005_0000, any::<u32>()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn union_agrees_with_a_linear_scan(
            ranges in proptest::collection::vec(clustered_range(), 0..200),
            probes in proptest::collection::vec(probe(), 1..100),
        ) {
            let s = set(&ranges);
            for key in probes {
                prop_assert_eq!(s.contains(key), naive_union(&ranges, key), "{:#x}", key);
            }
            for (start, end) in &ranges {
                prop_assert!(s.contains(*start) && s.contains(*end));
            }
        }
    }
}
