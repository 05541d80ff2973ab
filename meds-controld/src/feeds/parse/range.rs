//! `range`: an inclusive address range (`start..=end`) as the fewest prefixes that cover exactly
//! that range, in address order. At most 62 prefixes for IPv4 and 254 for IPv6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use meds_proto::Cidr;

/// Why a range cannot be expressed as prefixes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("range {start} - {end} mixes IPv4 and IPv6")]
    MixedFamilies { start: IpAddr, end: IpAddr },
    #[error("range {start} - {end} ends before it starts")]
    Reversed { start: IpAddr, end: IpAddr },
    #[error("range {start} - {end} gives IPv4-mapped IPv6 prefixes: use the IPv4 form")]
    Ipv4Mapped { start: IpAddr, end: IpAddr },
}

/// ::ffff:0:0/96, the IPv4-mapped IPv6 addresses.
const MAPPED_LOW: u128 = 0xffff_0000_0000;
const MAPPED_HIGH: u128 = 0xffff_ffff_ffff;

/// The prefixes covering exactly `start..=end`. A prefix whose address would be IPv4-mapped
/// IPv6 is refused, as [`Cidr`]'s text parser does (`::/0` covers that block and is fine).
pub fn range_to_cidrs(start: IpAddr, end: IpAddr) -> Result<Vec<Cidr>, RangeError> {
    let (low, high, width) = match (start, end) {
        (IpAddr::V4(s), IpAddr::V4(e)) => (u128::from(u32::from(s)), u128::from(u32::from(e)), 32),
        (IpAddr::V6(s), IpAddr::V6(e)) => (u128::from(s), u128::from(e), 128),
        _ => return Err(RangeError::MixedFamilies { start, end }),
    };
    if low > high {
        return Err(RangeError::Reversed { start, end });
    }
    let mut out = Vec::new();
    let mut at = low;
    loop {
        let span = high - at; // addresses after `at` still to cover
        // Largest k with at + 2^k - 1 <= high ...
        let fits = if span == u128::MAX {
            128
        } else {
            127 - (span + 1).leading_zeros()
        };
        // ... and `at` aligned on 2^k.
        let k = fits.min(at.trailing_zeros()).min(width);
        // The text parser refuses IPv4-mapped addresses (`::ffff:a.b.c.d`); so does this.
        if width == 128 && (MAPPED_LOW..=MAPPED_HIGH).contains(&at) {
            return Err(RangeError::Ipv4Mapped { start, end });
        }
        let addr = if width == 32 {
            // INVARIANT: `at` <= `high` < 2^32 for IPv4.
            IpAddr::V4(Ipv4Addr::from(u32::try_from(at).unwrap_or(u32::MAX)))
        } else {
            IpAddr::V6(Ipv6Addr::from(at))
        };
        // `k <= width`, so the length is in range and `addr` is aligned: `new` cannot fail.
        let len = u8::try_from(width - k).unwrap_or(0);
        if let Ok(cidr) = Cidr::new(addr, len) {
            out.push(cidr);
        }
        let size_minus_one = 1u128.checked_shl(k).map_or(u128::MAX, |s| s - 1);
        if high - at == size_minus_one {
            return Ok(out);
        }
        at += size_minus_one + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidrs(start: &str, end: &str) -> Vec<String> {
        range_to_cidrs(start.parse().unwrap(), end.parse().unwrap())
            .unwrap()
            .iter()
            .map(Cidr::to_string)
            .collect()
    }

    #[test]
    fn table() {
        let cases: [(&str, &str, &[&str]); 9] = [
            ("203.0.113.7", "203.0.113.7", &["203.0.113.7/32"]),
            ("203.0.113.0", "203.0.113.255", &["203.0.113.0/24"]),
            (
                "203.0.113.1",
                "203.0.113.2",
                &["203.0.113.1/32", "203.0.113.2/32"],
            ),
            (
                "1.1.1.2",
                "1.1.1.255",
                &[
                    "1.1.1.2/31",
                    "1.1.1.4/30",
                    "1.1.1.8/29",
                    "1.1.1.16/28",
                    "1.1.1.32/27",
                    "1.1.1.64/26",
                    "1.1.1.128/25",
                ],
            ),
            ("0.0.0.0", "255.255.255.255", &["0.0.0.0/0"]),
            (
                "255.255.255.255",
                "255.255.255.255",
                &["255.255.255.255/32"],
            ),
            ("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", &["::/0"]),
            (
                "2001:db8::",
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                &["2001:db8::/32"],
            ),
            (
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                &["ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127"],
            ),
        ];
        for (start, end, want) in cases {
            assert_eq!(cidrs(start, end), want, "{start} - {end}");
        }
        // The worst cases.
        assert_eq!(cidrs("0.0.0.1", "255.255.255.254").len(), 62);
        assert_eq!(
            cidrs("8000::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe").len(),
            252
        );
    }

    #[test]
    fn refusals() {
        let r = |a: &str, b: &str| range_to_cidrs(a.parse().unwrap(), b.parse().unwrap());
        assert!(matches!(
            r("1.0.0.0", "2001:db8::"),
            Err(RangeError::MixedFamilies { .. })
        ));
        assert!(matches!(
            r("1.0.0.1", "1.0.0.0"),
            Err(RangeError::Reversed { .. })
        ));
        assert!(matches!(
            r("::ffff:1.2.3.4", "::ffff:1.2.3.5"),
            Err(RangeError::Ipv4Mapped { .. })
        ));
        assert!(matches!(
            r("::fffe:ffff:ffff", "::1:0:0:0"),
            Err(RangeError::Ipv4Mapped { .. })
        ));
        assert!(r("::", "::1:0:0:0").is_ok());
        assert!(r("::", "::fffe:ffff:ffff").is_ok());
        assert!(r("::1:0:0:0", "::2:0:0:0").is_ok());
    }

    proptest! {
        /// Against a reference: the prefixes are aligned, contiguous, in order, and cover exactly
        /// the range; and none of two neighbours could merge into one aligned prefix (fewest).
        #[test]
        fn covers_exactly(a in any::<u32>(), b in any::<u32>()) {
            let (lo, hi) = (a.min(b), a.max(b));
            let got = range_to_cidrs(IpAddr::V4(lo.into()), IpAddr::V4(hi.into())).unwrap();
            let mut next = u64::from(lo);
            for c in &got {
                let IpAddr::V4(addr) = c.addr() else { panic!("family") };
                prop_assert_eq!(u64::from(u32::from(addr)), next);
                next += 1u64 << (32 - c.len());
            }
            prop_assert_eq!(next, u64::from(hi) + 1);
            prop_assert!(got.len() <= 62);
            for pair in got.windows(2) {
                let merged = Cidr::new(pair[0].addr(), pair[0].len().saturating_sub(1)).unwrap();
                let mergeable = pair[0].len() == pair[1].len() && merged.addr() == pair[0].addr();
                prop_assert!(!mergeable, "{} and {} could be one prefix", pair[0], pair[1]);
            }
        }

        #[test]
        fn v6_covers_exactly(a in any::<u128>(), b in any::<u128>()) {
            let (lo, hi) = (a.min(b) | (1 << 100), a.max(b) | (1 << 100));
            let (lo, hi) = (lo.min(hi), lo.max(hi));
            let got = range_to_cidrs(IpAddr::V6(lo.into()), IpAddr::V6(hi.into())).unwrap();
            let mut next = Some(lo);
            for c in &got {
                let IpAddr::V6(addr) = c.addr() else { panic!("family") };
                prop_assert_eq!(Some(u128::from(addr)), next);
                next = u128::from(addr).checked_add(1u128.checked_shl(u32::from(128 - c.len())).unwrap_or(0));
            }
            prop_assert_eq!(next, hi.checked_add(1));
            prop_assert!(got.len() <= 254);
        }
    }
}
