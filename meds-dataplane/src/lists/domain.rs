//! [`DomainSet`]: a set of domain names with label-aware suffix matching.
//!
//! An entry matches itself and every subdomain: `bad.com` matches `bad.com` and `x.bad.com`,
//! never `badge.com`, `notbad.com` or `bad.community` (the original matched byte prefixes of
//! reversed names, upstream W7). A query is the raw name bytes a DNS or TLS parser found,
//! matched case-insensitively (ASCII), with one trailing dot ignored.
//!
//! Structure: an open-addressing hash table of the entries, keyed by a hash computed from the
//! *right* end of the name. A lookup walks the query once from its last byte to its first; at
//! every label boundary the hash of the suffix seen so far is complete and is probed. So a
//! lookup costs O(length of the query, bounded by the longest entry) bytes of hashing plus one
//! probe per label, never allocates and never locks. Suffixes are probed shortest first; the
//! answer is the longest (most specific) matching entry.
//!
//! Hash flooding: the table is built from feed and user entries, which an attacker may
//! influence; the hash is keyed with a random seed per set, so colliding entries cannot be
//! precomputed. Queries only read the table.
//!
//! Removal: a set is immutable; the builder rebuilds it from the exact entries of the list, so
//! removing `a.com` from a list removes exactly `a.com` (the original's `DeletePrefix` also
//! removed `amazon.com` and `x.a.com`, upstream W7).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use meds_proto::DomainName;

/// A match: which entry, and how many trailing bytes of the query it covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainMatch {
    /// Index of the entry in [`DomainSet::entries`] (sorted order).
    pub index: usize,
    /// Length of the matched suffix of the query, in bytes (the entry's length; a trailing dot
    /// of the query is not counted).
    pub len: usize,
}

/// An immutable set of domain names matched by label-aware suffix.
#[derive(Debug, Clone)]
pub struct DomainSet {
    /// The entries, sorted and unique.
    entries: Vec<DomainName>,
    /// The hash of each entry, in the same order.
    hashes: Vec<u64>,
    /// Open-addressing table: `0` is empty, otherwise an index into `entries` plus one. Its
    /// length is a power of two at least twice the number of entries (load ≤ 0.5).
    slots: Box<[u32]>,
    /// Longest entry, in bytes: longer suffixes are not probed.
    max_len: usize,
    seed: u64,
}

impl Default for DomainSet {
    fn default() -> DomainSet {
        DomainSet::new(Vec::new())
    }
}

impl FromIterator<DomainName> for DomainSet {
    fn from_iter<I: IntoIterator<Item = DomainName>>(iter: I) -> DomainSet {
        DomainSet::new(iter.into_iter().collect())
    }
}

impl DomainSet {
    /// Build a set (off the hot path). Duplicates are dropped. Sets larger than `u32::MAX - 1`
    /// entries cannot be built: everything past that is dropped (no list comes near it; the
    /// controller's limits are far lower).
    pub fn new(mut entries: Vec<DomainName>) -> DomainSet {
        entries.sort_unstable();
        entries.dedup();
        entries.truncate(u32::MAX as usize - 1);
        let seed = RandomState::new().build_hasher().finish();
        let hashes: Vec<u64> = entries
            .iter()
            .map(|e| {
                let mut h = Suffix::new(seed);
                for &b in e.as_bytes().iter().rev() {
                    h.push(b);
                }
                h.finish()
            })
            .collect();
        let capacity = (entries.len() * 2).max(2).next_power_of_two();
        let mut slots = vec![0u32; capacity].into_boxed_slice();
        let mask = capacity - 1;
        for (i, &h) in hashes.iter().enumerate() {
            let mut at = (h as usize) & mask;
            while slots[at] != 0 {
                at = (at + 1) & mask;
            }
            // INVARIANT: i < u32::MAX - 1 (truncated above), so i + 1 fits.
            slots[at] = (i + 1) as u32;
        }
        let max_len = entries.iter().map(DomainName::len).max().unwrap_or(0);
        DomainSet {
            entries,
            hashes,
            slots,
            max_len,
            seed,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, sorted.
    pub fn entries(&self) -> &[DomainName] {
        &self.entries
    }

    /// The entry a [`DomainMatch`] refers to.
    pub fn entry(&self, m: DomainMatch) -> Option<&DomainName> {
        self.entries.get(m.index)
    }

    /// The most specific entry that `name` equals or is a subdomain of, if any.
    ///
    /// `name` is raw bytes (ASCII compared case-insensitively; other bytes never match an entry);
    /// one trailing dot is ignored. Never allocates; cost O(min(len, longest entry)).
    pub fn matches(&self, name: &[u8]) -> Option<DomainMatch> {
        if self.entries.is_empty() {
            return None;
        }
        let name = name.strip_suffix(b".").unwrap_or(name);
        let mut h = Suffix::new(self.seed);
        let mut best = None;
        for start in (0..name.len()).rev() {
            let suffix_len = name.len() - start;
            if suffix_len > self.max_len {
                break;
            }
            h.push(name[start]);
            let at_boundary = start == 0 || name[start - 1] == b'.';
            if at_boundary && let Some(index) = self.probe(h.finish(), &name[start..]) {
                // Suffixes come shortest first: a later hit is more specific.
                best = Some(DomainMatch {
                    index,
                    len: suffix_len,
                });
            }
        }
        best
    }

    /// True when `name` equals an entry or is a subdomain of one.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.matches(name).is_some()
    }

    fn probe(&self, hash: u64, suffix: &[u8]) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let mut at = (hash as usize) & mask;
        loop {
            let slot = *self.slots.get(at)?;
            if slot == 0 {
                return None;
            }
            let index = slot as usize - 1;
            if self.hashes.get(index) == Some(&hash)
                && self
                    .entries
                    .get(index)
                    .is_some_and(|e| e.as_bytes().eq_ignore_ascii_case(suffix))
            {
                return Some(index);
            }
            at = (at + 1) & mask;
        }
    }
}

/// A seeded hash of a byte string fed from its last byte to its first, ASCII case folded, so
/// that the hash of every suffix is available on the way.
#[derive(Clone, Copy)]
struct Suffix(u64);

impl Suffix {
    const MUL: u64 = 0x9E37_79B9_7F4A_7C15;

    fn new(seed: u64) -> Suffix {
        Suffix(seed)
    }

    fn push(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b.to_ascii_lowercase()))
            .wrapping_mul(Self::MUL)
            .rotate_left(23);
    }

    /// A finalised (well mixed) hash of the bytes pushed so far.
    fn finish(self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        x ^= x >> 33;
        x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        x ^ (x >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(names: &[&str]) -> DomainSet {
        names
            .iter()
            .map(|n| DomainName::parse_user(n).unwrap())
            .collect()
    }

    fn hit(set: &DomainSet, query: &str) -> Option<String> {
        set.matches(query.as_bytes())
            .map(|m| set.entry(m).unwrap().to_string())
    }

    #[test]
    fn label_boundaries() {
        let s = set(&["bad.com", "x.bad.com", "zip", "Local.Example"]);
        let cases: [(&str, Option<&str>); 22] = [
            ("bad.com", Some("bad.com")),
            ("bad.com.", Some("bad.com")),
            ("BAD.Com", Some("bad.com")),
            ("www.bad.com", Some("bad.com")),
            ("a.b.c.bad.com", Some("bad.com")),
            ("x.bad.com", Some("x.bad.com")),
            ("y.x.bad.com.", Some("x.bad.com")),
            ("xx.bad.com", Some("bad.com")),
            ("badge.com", None),
            ("notbad.com", None),
            ("bad.community", None),
            ("bad.co", None),
            ("ad.com", None),
            ("com", None),
            ("", None),
            (".", None),
            ("files.zip", Some("zip")),
            ("zip", Some("zip")),
            ("zip.", Some("zip")),
            ("zipper", None),
            ("printer.local.example", Some("local.example")),
            ("local.example.org", None),
        ];
        for (query, want) in cases {
            assert_eq!(hit(&s, query).as_deref(), want, "{query:?}");
        }
        let m = s.matches(b"www.bad.com.").unwrap();
        assert_eq!(m.len, 7);
        assert_eq!(s.entries()[m.index].as_str(), "bad.com");
    }

    #[test]
    fn hostile_queries() {
        let s = set(&["bad.com"]);
        let long = format!("{}.bad.com", "a".repeat(100_000));
        assert_eq!(hit(&s, &long).as_deref(), Some("bad.com"));
        for q in [
            &b"\xff\xfe.bad.com"[..],
            b"..bad.com",
            b"bad.com..",
            b"\0bad.com",
            b"bad\0com",
        ] {
            let _ = s.matches(q);
        }
        assert!(s.matches(b"\xff.bad.com").is_some());
        assert!(s.matches(b"bad.com..").is_none());
        assert!(s.matches(b"\xffbad.com").is_none());
        assert!(DomainSet::default().matches(b"bad.com").is_none());
        assert!(DomainSet::default().is_empty());
    }

    #[test]
    fn duplicates_and_exact_entries() {
        let s = set(&["b.com", "B.com.", "a.com", "amazon.com", "x.a.com"]);
        assert_eq!(s.len(), 4);
        let names: Vec<_> = s.entries().iter().map(|e| e.as_str()).collect();
        assert_eq!(names, ["a.com", "amazon.com", "b.com", "x.a.com"]);
        // Rebuilding without `a.com` removes exactly `a.com`.
        let rest: DomainSet = s
            .entries()
            .iter()
            .filter(|e| e.as_str() != "a.com")
            .cloned()
            .collect();
        assert_eq!(rest.len(), 3);
        assert_eq!(hit(&rest, "y.a.com"), None);
        assert_eq!(hit(&rest, "y.x.a.com").as_deref(), Some("x.a.com"));
        assert_eq!(hit(&rest, "amazon.com").as_deref(), Some("amazon.com"));
    }

    /// The reference: the longest entry that the lower-cased query (trailing dot dropped) equals
    /// or ends with on a label boundary.
    fn naive(entries: &[String], query: &str) -> Option<String> {
        let q = query.to_ascii_lowercase();
        let q = q.strip_suffix('.').unwrap_or(&q);
        entries
            .iter()
            .filter(|e| q == e.as_str() || q.ends_with(&format!(".{e}")))
            .max_by_key(|e| e.len())
            .cloned()
    }

    fn name() -> impl Strategy<Value = String> {
        let label =
            prop::sample::select(vec!["a", "b", "ad", "bad", "badge", "notbad", "com", "x"]);
        prop::collection::vec(label, 1..5).prop_map(|labels| labels.join("."))
    }

    fn query() -> impl Strategy<Value = String> {
        (name(), any::<bool>(), any::<bool>()).prop_map(|(n, upper, dot)| {
            let n = if upper { n.to_ascii_uppercase() } else { n };
            if dot { format!("{n}.") } else { n }
        })
    }

    proptest! {
        #[test]
        fn matches_naive_reference(
            entries in prop::collection::vec(name(), 0..20),
            queries in prop::collection::vec(query(), 1..20),
        ) {
            let s: DomainSet = entries.iter().map(|e| DomainName::parse_user(e).unwrap()).collect();
            for q in &queries {
                prop_assert_eq!(hit(&s, q), naive(&entries, q), "query {:?}", q);
            }
        }

        #[test]
        fn any_bytes_never_panic(entries in prop::collection::vec(name(), 0..8), q in prop::collection::vec(any::<u8>(), 0..64)) {
            let s: DomainSet = entries.iter().map(|e| DomainName::parse_user(e).unwrap()).collect();
            if let Some(m) = s.matches(&q) {
                prop_assert!(s.entry(m).is_some());
                prop_assert!(m.len <= q.len());
            }
        }
    }
}
