//! [`CountrySet`]: a set of country codes as a 676-bit bitmap (one bit per pair of letters,
//! [`CountryCode::index`]). Membership is one shift and one mask, no hashing, 88 bytes.

use std::fmt;

use meds_proto::CountryCode;

/// Words of the bitmap: 26 * 26 = 676 bits.
const WORDS: usize = (26 * 26usize).div_ceil(64);

/// An immutable set of country codes. `Copy`-cheap to clone, `Send + Sync`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CountrySet {
    bits: [u64; WORDS],
}

impl CountrySet {
    pub fn empty() -> CountrySet {
        CountrySet::default()
    }

    /// Build from codes; duplicates collapse.
    pub fn from_codes<I: IntoIterator<Item = CountryCode>>(codes: I) -> CountrySet {
        let mut set = CountrySet::empty();
        for code in codes {
            let i = code.index();
            if let Some(word) = set.bits.get_mut(i / 64) {
                *word |= 1 << (i % 64);
            }
        }
        set
    }

    #[inline]
    pub fn contains(&self, code: CountryCode) -> bool {
        let i = code.index();
        self.bits
            .get(i / 64)
            .is_some_and(|word| word & (1 << (i % 64)) != 0)
    }

    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }
}

impl fmt::Debug for CountrySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountrySet")
            .field("countries", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(s: &str) -> CountryCode {
        CountryCode::from_feed(s).unwrap()
    }

    #[test]
    fn membership_edges_of_the_bitmap() {
        // aa = bit 0, cl = bit 63 (end of word 0), cm = bit 64 (start of word 1), zz = bit 675.
        let set = CountrySet::from_codes([cc("aa"), cc("cl"), cc("cm"), cc("zz"), cc("ZZ")]);
        assert_eq!(set.len(), 4);
        assert_eq!((cc("cl").index(), cc("cm").index()), (63, 64));
        for (code, want) in [
            ("aa", true),
            ("ab", false),
            ("ck", false),
            ("cl", true),
            ("cm", true),
            ("cn", false),
            ("zy", false),
            ("zz", true),
        ] {
            assert_eq!(set.contains(cc(code)), want, "{code}");
        }
        assert!(CountrySet::empty().is_empty());
        assert!(!set.is_empty());
        assert!(!CountrySet::empty().contains(cc("aa")));
        assert_eq!(format!("{set:?}"), "CountrySet { countries: 4 }");
    }

    #[test]
    fn every_code_is_distinct() {
        let letters = b'a'..=b'z';
        let mut all = Vec::new();
        for a in letters.clone() {
            for b in letters.clone() {
                let text = [a, b];
                all.push(cc(std::str::from_utf8(&text).unwrap()));
            }
        }
        for (i, code) in all.iter().enumerate() {
            let single = CountrySet::from_codes([*code]);
            assert_eq!(single.len(), 1);
            assert!(single.contains(*code));
            // its neighbours are not in it
            for other in [i.checked_sub(1), Some(i + 1)].into_iter().flatten() {
                if let Some(o) = all.get(other) {
                    assert!(!single.contains(*o), "{code} vs {o}");
                }
            }
        }
        assert_eq!(CountrySet::from_codes(all).len(), 676);
    }
}
