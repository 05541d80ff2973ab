//! [`FingerprintSet`]: an immutable set of TLS client fingerprints (JA3 hashes, JA4 values).
//!
//! A sorted, deduplicated array searched by bisection: no hashing of attacker-chosen keys,
//! no allocation on lookup, compact (16 bytes per JA3, 36 per JA4), and fast enough for the
//! sizes blocklists have (SSLBL publishes about a hundred JA3 hashes; a user list of 100k
//! entries costs 17 comparisons).

/// A set of fingerprints of type `T` (`Ja3Hash`, `Ja4`).
#[derive(Debug, Clone)]
pub struct FingerprintSet<T> {
    sorted: Vec<T>,
}

impl<T> Default for FingerprintSet<T> {
    fn default() -> Self {
        FingerprintSet { sorted: Vec::new() }
    }
}

impl<T: Ord + Copy> FingerprintSet<T> {
    /// Build (off the hot path); duplicates are dropped.
    pub fn new(mut values: Vec<T>) -> FingerprintSet<T> {
        values.sort_unstable();
        values.dedup();
        values.shrink_to_fit();
        FingerprintSet { sorted: values }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    #[inline]
    pub fn contains(&self, value: &T) -> bool {
        !self.sorted.is_empty() && self.sorted.binary_search(value).is_ok()
    }
}

impl<T: Ord + Copy> FromIterator<T> for FingerprintSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        FingerprintSet::new(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meds_proto::{Ja3Hash, Ja4};
    use proptest::prelude::*;

    #[test]
    fn ja3_and_ja4_membership() {
        let a: Ja3Hash = "e7d705a3286e19ea42f587b344ee6865".parse().unwrap();
        let b: Ja3Hash = "6734f37431670b3ab4292b8f60f29984".parse().unwrap();
        let set: FingerprintSet<Ja3Hash> = [a, a].into_iter().collect();
        assert_eq!(set.len(), 1);
        assert!(set.contains(&a));
        assert!(!set.contains(&b));
        let j: Ja4 = "t13d1516h2_8daaf6152771_02713d6af862".parse().unwrap();
        let k: Ja4 = "t13d1516h2_8daaf6152771_02713d6af863".parse().unwrap();
        let set = FingerprintSet::new(vec![j]);
        assert!(set.contains(&j));
        assert!(!set.contains(&k));
        assert!(!FingerprintSet::<Ja4>::default().contains(&j));
    }

    proptest! {
        #[test]
        fn agrees_with_a_linear_scan(values in proptest::collection::vec(any::<[u8; 16]>(), 0..64),
                                     probe in any::<[u8; 16]>(), pick in any::<usize>()) {
            let set = FingerprintSet::new(values.clone());
            let probe = if values.is_empty() || pick % 2 == 0 { probe } else { values[pick % values.len()] };
            prop_assert_eq!(set.contains(&probe), values.contains(&probe));
        }
    }
}
