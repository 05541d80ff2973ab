//! [`Cidr`]: a masked IPv4 or IPv6 prefix, parsed from user text or decoded from the wire.
//!
//! Text forms accepted by [`Cidr::from_str`]: `203.0.113.7` (a /32), `2001:db8::1` (a /128),
//! `203.0.113.0/24`, `2001:db8::/32`. Host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
//! IPv4-mapped IPv6 (`::ffff:192.0.2.1`) is refused: write the IPv4 form. Zone ids, leading
//! zeros, signs and spaces inside the value are refused.

use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::pb;

/// Longest text form we read at all; anything longer is refused before parsing.
const MAX_TEXT_LEN: usize = 64;

/// A masked IP prefix: every bit of `addr` past `len` is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

/// Why a text or wire value is not a valid prefix. Messages name the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("empty value: expected an IP address or CIDR prefix")]
    Empty,
    #[error("{0:?} is too long to be an IP address or CIDR prefix")]
    TooLong(String),
    #[error("{0:?} is not a valid IPv4 or IPv6 address")]
    InvalidAddress(String),
    #[error("{value:?}: prefix length must be a number from 0 to {max}")]
    InvalidPrefixLength { value: String, max: u8 },
    #[error("{0:?} is an IPv4-mapped IPv6 address: use the IPv4 form instead")]
    Ipv4Mapped(String),
    #[error("wire prefix has a {0}-byte address: expected 4 or 16")]
    WireAddressLength(usize),
    #[error("wire prefix {addr}/{len} is out of range or has host bits set")]
    WireNotCanonical { addr: String, len: u32 },
}

impl Cidr {
    /// Build a prefix from an address and a length, clearing host bits.
    pub fn new(addr: IpAddr, len: u8) -> Result<Cidr, CidrError> {
        let max = max_len(addr);
        if len > max {
            return Err(CidrError::InvalidPrefixLength {
                value: format!("{addr}/{len}"),
                max,
            });
        }
        Ok(Cidr {
            addr: mask(addr, len),
            len,
        })
    }

    /// The single-address prefix (/32 or /128).
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr {
            addr,
            len: max_len(addr),
        }
    }

    /// The (masked) network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for 0.0.0.0/0 and ::/0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// True when `ip` is inside this prefix (an IPv4 address is never inside an IPv6 prefix).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.len) == self.addr
            }
            _ => false,
        }
    }

    /// True when every address of `other` is inside this prefix.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.len <= other.len && self.contains(other.addr)
    }

    /// Encode for the wire.
    pub fn to_wire(&self) -> pb::Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        pb::Cidr {
            addr,
            prefix_len: u32::from(self.len),
        }
    }

    /// Decode from the wire. Strict: the address must be 4 or 16 bytes and already masked.
    pub fn from_wire(wire: &pb::Cidr) -> Result<Cidr, CidrError> {
        let addr = match wire.addr.len() {
            4 => {
                let mut o = [0u8; 4];
                o.copy_from_slice(&wire.addr);
                IpAddr::V4(Ipv4Addr::from(o))
            }
            16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&wire.addr);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            n => return Err(CidrError::WireAddressLength(n)),
        };
        let not_canonical = || CidrError::WireNotCanonical {
            addr: addr.to_string(),
            len: wire.prefix_len,
        };
        let len = u8::try_from(wire.prefix_len).map_err(|_| not_canonical())?;
        if len > max_len(addr) || mask(addr, len) != addr {
            return Err(not_canonical());
        }
        Ok(Cidr { addr, len })
    }
}

fn max_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

fn parse_addr(text: &str, whole: &str) -> Result<IpAddr, CidrError> {
    let addr: IpAddr = text
        .parse()
        .map_err(|_| CidrError::InvalidAddress(whole.to_string()))?;
    if let IpAddr::V6(v6) = addr
        && v6.to_ipv4_mapped().is_some()
    {
        return Err(CidrError::Ipv4Mapped(whole.to_string()));
    }
    Ok(addr)
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(raw: &str) -> Result<Cidr, CidrError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(CidrError::Empty);
        }
        if text.len() > MAX_TEXT_LEN {
            let shown: String = text.chars().take(MAX_TEXT_LEN).collect();
            return Err(CidrError::TooLong(format!("{shown}…")));
        }
        match text.split_once('/') {
            None => Ok(Cidr::host(parse_addr(text, text)?)),
            Some((addr_text, len_text)) => {
                let addr = parse_addr(addr_text, text)?;
                let max = max_len(addr);
                let bad_len = || CidrError::InvalidPrefixLength {
                    value: text.to_string(),
                    max,
                };
                if len_text.is_empty()
                    || len_text.len() > 3
                    || !len_text.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(bad_len());
                }
                let len: u8 = len_text.parse().map_err(|_| bad_len())?;
                if len > max {
                    return Err(bad_len());
                }
                Cidr::new(addr, len)
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Ord for Cidr {
    /// IPv4 before IPv6, then by address, then shorter prefixes first.
    fn cmp(&self, other: &Cidr) -> Ordering {
        fn key(c: &Cidr) -> (u8, u128, u8) {
            match c.addr {
                IpAddr::V4(a) => (4, u128::from(u32::from(a)), c.len),
                IpAddr::V6(a) => (6, u128::from(a), c.len),
            }
        }
        key(self).cmp(&key(other))
    }
}

impl PartialOrd for Cidr {
    fn partial_cmp(&self, other: &Cidr) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_and_masks() {
        let cases = [
            ("203.0.113.7", "203.0.113.7/32"),
            (" 203.0.113.7 ", "203.0.113.7/32"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("255.255.255.255/32", "255.255.255.255/32"),
            ("2001:db8::1", "2001:db8::1/128"),
            ("2001:DB8::1/64", "2001:db8::/64"),
            (
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128",
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128",
            ),
            ("::/0", "::/0"),
            ("::1", "::1/128"),
        ];
        for (input, want) in cases {
            assert_eq!(c(input).to_string(), want, "{input}");
        }
    }

    #[test]
    fn refuses_bad_input_with_precise_errors() {
        type Check = fn(&CidrError) -> bool;
        let cases: [(&str, Check); 14] = [
            ("", |e| matches!(e, CidrError::Empty)),
            ("   ", |e| matches!(e, CidrError::Empty)),
            ("300.1.1.1", |e| matches!(e, CidrError::InvalidAddress(_))),
            ("010.1.1.1", |e| matches!(e, CidrError::InvalidAddress(_))),
            ("1.2.3", |e| matches!(e, CidrError::InvalidAddress(_))),
            ("not-an-ip", |e| matches!(e, CidrError::InvalidAddress(_))),
            ("fe80::1%eth0", |e| {
                matches!(e, CidrError::InvalidAddress(_))
            }),
            ("10.0.0.0/33", |e| {
                matches!(e, CidrError::InvalidPrefixLength { max: 32, .. })
            }),
            ("10.0.0.0/", |e| {
                matches!(e, CidrError::InvalidPrefixLength { .. })
            }),
            ("10.0.0.0/+8", |e| {
                matches!(e, CidrError::InvalidPrefixLength { .. })
            }),
            ("10.0.0.0/8/8", |e| {
                matches!(e, CidrError::InvalidPrefixLength { .. })
            }),
            ("2001:db8::/129", |e| {
                matches!(e, CidrError::InvalidPrefixLength { max: 128, .. })
            }),
            ("::ffff:192.0.2.1", |e| {
                matches!(e, CidrError::Ipv4Mapped(_))
            }),
            (&"1".repeat(100), |e| matches!(e, CidrError::TooLong(_))),
        ];
        for (input, check) in cases {
            let err = input.parse::<Cidr>().expect_err(input);
            assert!(check(&err), "{input:?} gave {err:?}");
        }
        assert!(
            "300.1.1.1"
                .parse::<Cidr>()
                .expect_err("bad")
                .to_string()
                .contains("300.1.1.1")
        );
    }

    #[test]
    fn contains_edges_of_a_slash_24() {
        let net = c("203.0.113.0/24");
        assert!(net.contains("203.0.113.0".parse().unwrap()));
        assert!(net.contains("203.0.113.255".parse().unwrap()));
        assert!(!net.contains("203.0.112.255".parse().unwrap()));
        assert!(!net.contains("203.0.114.0".parse().unwrap()));
        assert!(!net.contains("2001:db8::1".parse().unwrap()));
        assert!(c("0.0.0.0/0").contains("255.255.255.255".parse().unwrap()));
        assert!(!c("::/0").contains("1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn covers() {
        assert!(c("10.0.0.0/8").covers(&c("10.1.0.0/16")));
        assert!(c("10.0.0.0/8").covers(&c("10.0.0.0/8")));
        assert!(!c("10.1.0.0/16").covers(&c("10.0.0.0/8")));
        assert!(!c("10.0.0.0/8").covers(&c("11.0.0.0/16")));
    }

    #[test]
    fn order_is_v4_first_then_address_then_length() {
        let mut v = [
            c("2001:db8::/32"),
            c("10.0.0.0/16"),
            c("10.0.0.0/8"),
            c("9.0.0.0/8"),
        ];
        v.sort();
        let s: Vec<String> = v.iter().map(Cidr::to_string).collect();
        assert_eq!(
            s,
            ["9.0.0.0/8", "10.0.0.0/8", "10.0.0.0/16", "2001:db8::/32"]
        );
    }

    #[test]
    fn wire_is_strict() {
        let ok = pb::Cidr {
            addr: vec![10, 0, 0, 0],
            prefix_len: 8,
        };
        assert_eq!(Cidr::from_wire(&ok).unwrap(), c("10.0.0.0/8"));
        let host_bits = pb::Cidr {
            addr: vec![10, 0, 0, 1],
            prefix_len: 8,
        };
        assert!(matches!(
            Cidr::from_wire(&host_bits),
            Err(CidrError::WireNotCanonical { .. })
        ));
        let too_long = pb::Cidr {
            addr: vec![10, 0, 0, 0],
            prefix_len: 33,
        };
        assert!(Cidr::from_wire(&too_long).is_err());
        let huge = pb::Cidr {
            addr: vec![10, 0, 0, 0],
            prefix_len: u32::MAX,
        };
        assert!(Cidr::from_wire(&huge).is_err());
        let bad_len = pb::Cidr {
            addr: vec![1, 2, 3],
            prefix_len: 8,
        };
        assert!(matches!(
            Cidr::from_wire(&bad_len),
            Err(CidrError::WireAddressLength(3))
        ));
    }

    fn any_cidr() -> impl Strategy<Value = Cidr> {
        prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(a, l)| Cidr::new(IpAddr::V4(a.into()), l).unwrap()),
            (any::<u128>(), 0u8..=128)
                .prop_map(|(a, l)| Cidr::new(IpAddr::V6(a.into()), l).unwrap()),
        ]
    }

    proptest! {
        #[test]
        fn text_and_wire_round_trip(cidr in any_cidr()) {
            prop_assert_eq!(cidr.to_string().parse::<Cidr>().unwrap(), cidr);
            prop_assert_eq!(Cidr::from_wire(&cidr.to_wire()).unwrap(), cidr);
        }

        #[test]
        fn contains_matches_a_bitwise_reference(a in any::<u32>(), b in any::<u32>(), l in 0u8..=32) {
            let net = Cidr::new(IpAddr::V4(a.into()), l).unwrap();
            let shift = 32 - u32::from(l);
            let expected = l == 0 || (a >> shift) == (b >> shift);
            prop_assert_eq!(net.contains(IpAddr::V4(b.into())), expected);
        }

        #[test]
        fn parser_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<Cidr>();
        }
    }
}
