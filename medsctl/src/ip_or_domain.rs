//! [`IpOrDomain`]: an argument of `whitelist`/`blacklist`, which hold both IP prefixes and
//! domain names, told apart by its form alone.
//!
//! An argument that parses as an IP address or CIDR prefix ([`Cidr`]) is one; otherwise it must
//! parse as a domain name ([`DomainName::parse_user`]). The two forms are disjoint, so the order
//! of the attempts never changes the answer: a domain name never contains `:` or `/`, and its
//! last label is never all digits, whereas every IPv4 address ends with digits and every IPv6
//! address contains `:`. An argument that is neither is refused with both reasons
//! ([`NotIpNorDomain`]), since the operator may have meant either.
//!
//! Pure: no I/O. The controller parses the same text again with the same functions.

use meds_proto::{Cidr, CidrError, DomainError, DomainName};

/// Longest part of an offending argument quoted in a message, in characters.
const MAX_QUOTED_CHARS: usize = 80;

/// A `whitelist`/`blacklist` argument, classified and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpOrDomain {
    /// An IP address (as a host prefix) or a CIDR prefix: the IP lists.
    Prefix(Cidr),
    /// A domain name (lower case, punycode, no trailing dot): the domain lists.
    Domain(DomainName),
}

/// Why an argument is neither an IP address or prefix nor a domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotIpNorDomain {
    /// Nothing but whitespace.
    #[error("empty value: expected an IP address, a CIDR prefix or a domain name")]
    Empty,
    /// Both parsers refused the value; each reason names it.
    #[error("{value:?}: not an IP address or prefix ({prefix}), not a domain name ({domain})")]
    Neither {
        /// The argument, clipped.
        value: String,
        prefix: CidrError,
        domain: DomainError,
    },
}

impl IpOrDomain {
    /// Classify `arg` (surrounding whitespace ignored, as both parsers do).
    pub fn parse(arg: &str) -> Result<IpOrDomain, NotIpNorDomain> {
        if arg.trim().is_empty() {
            return Err(NotIpNorDomain::Empty);
        }
        let prefix = match arg.parse::<Cidr>() {
            Ok(cidr) => return Ok(IpOrDomain::Prefix(cidr)),
            Err(e) => e,
        };
        match DomainName::parse_user(arg) {
            Ok(name) => Ok(IpOrDomain::Domain(name)),
            Err(domain) => Err(NotIpNorDomain::Neither {
                value: clip(arg.trim()),
                prefix,
                domain,
            }),
        }
    }

    /// True for a domain name.
    pub fn is_domain(&self) -> bool {
        matches!(self, IpOrDomain::Domain(_))
    }
}

/// At most [`MAX_QUOTED_CHARS`] characters, `…` marking a cut.
fn clip(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // Tests panic on purpose.
mod tests {
    use super::*;

    /// What an argument became: `ip:CANONICAL`, `domain:CANONICAL`, or the error message.
    fn classify(arg: &str) -> String {
        match IpOrDomain::parse(arg) {
            Ok(IpOrDomain::Prefix(c)) => format!("ip:{c}"),
            Ok(IpOrDomain::Domain(d)) => format!("domain:{d}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn arguments_are_told_apart_by_their_form() {
        let cases = [
            ("203.0.113.7", "ip:203.0.113.7/32"),
            (" 203.0.113.7 ", "ip:203.0.113.7/32"),
            ("203.0.113.7/24", "ip:203.0.113.0/24"),
            ("0.0.0.0/0", "ip:0.0.0.0/0"),
            ("2001:db8::/32", "ip:2001:db8::/32"),
            ("2001:DB8::1", "ip:2001:db8::1/128"),
            ("::", "ip:::/128"),
            ("bad.com", "domain:bad.com"),
            ("Bad.COM.", "domain:bad.com"),
            ("bücher.example", "domain:xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "domain:xn--bcher-kva.example"),
            ("zip", "domain:zip"),
            ("_dmarc.example.com", "domain:_dmarc.example.com"),
            // Digits everywhere but in the last label: a name, not an address.
            ("1.2.3.4a", "domain:1.2.3.4a"),
            ("123.example", "domain:123.example"),
        ];
        for (arg, want) in cases {
            assert_eq!(classify(arg), want, "{arg:?}");
        }
    }

    #[test]
    fn neither_names_both_reasons() {
        let cases: [(&str, &[&str]); 9] = [
            (
                "*.x.com",
                &[
                    "\"*.x.com\": not an IP address or prefix (\"*.x.com\" is not a valid IPv4 or IPv6 address)",
                    "not a domain name (\"*.x.com\": wildcards are not supported",
                ],
            ),
            (
                "bad .com",
                &[
                    "not an IP address or prefix (\"bad .com\" is not a valid",
                    "not a domain name (\"bad .com\": character ' ' is not allowed",
                ],
            ),
            // An IPv4 typo: a domain with an all-digit top-level label is refused as such.
            (
                "300.1.1.1",
                &[
                    "\"300.1.1.1\": not an IP address or prefix (\"300.1.1.1\" is not a valid IPv4 or IPv6 address)",
                    "not a domain name (\"300.1.1.1\": top-level label \"1\" is all digits (an IP address is not a domain))",
                ],
            ),
            (
                "1.2.3",
                &[
                    "not an IP address or prefix (\"1.2.3\" is not a valid IPv4 or IPv6 address)",
                    "top-level label \"3\" is all digits",
                ],
            ),
            (
                "203.0.113.0/33",
                &[
                    "prefix length must be a number from 0 to 32",
                    "character '/' is not allowed",
                ],
            ),
            (
                "2001:db8::/129",
                &[
                    "prefix length must be a number from 0 to 128",
                    "character ':' is not allowed",
                ],
            ),
            (
                "::ffff:192.0.2.1",
                &["IPv4-mapped IPv6 address", "character ':' is not allowed"],
            ),
            ("-bad.com", &["starts or ends with '-'"]),
            ("a..b", &["has an empty label"]),
        ];
        for (arg, needles) in cases {
            let err = IpOrDomain::parse(arg).expect_err(arg);
            assert!(matches!(err, NotIpNorDomain::Neither { .. }), "{arg:?}");
            let msg = err.to_string();
            assert!(msg.contains("not an IP address or prefix ("), "{msg}");
            assert!(msg.contains("not a domain name ("), "{msg}");
            for needle in needles {
                assert!(msg.contains(needle), "{arg:?}: {needle:?} not in {msg}");
            }
        }
    }

    #[test]
    fn empty_and_hostile_values() {
        for arg in ["", "   ", "\t"] {
            assert_eq!(
                IpOrDomain::parse(arg),
                Err(NotIpNorDomain::Empty),
                "{arg:?}"
            );
        }
        // A huge value is refused cheaply and quoted clipped, never whole.
        let huge = "a.".repeat(10_000) + "*";
        let msg = IpOrDomain::parse(&huge).expect_err("refused").to_string();
        assert!(msg.len() < 600, "{} bytes: {msg}", msg.len());
        assert!(msg.contains('…'), "{msg}");
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(
            classify(&long_label).contains("over the limit of 63"),
            "{}",
            classify(&long_label)
        );
    }

    #[test]
    fn clipping_keeps_whole_characters() {
        assert_eq!(clip("abc"), "abc");
        let long = "é".repeat(MAX_QUOTED_CHARS + 1);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), MAX_QUOTED_CHARS + 1);
        assert!(clipped.ends_with('…'));
        assert_eq!(
            clip(&"é".repeat(MAX_QUOTED_CHARS)).chars().count(),
            MAX_QUOTED_CHARS
        );
    }

    #[test]
    fn is_domain() {
        assert!(IpOrDomain::parse("bad.com").unwrap().is_domain());
        assert!(!IpOrDomain::parse("203.0.113.7").unwrap().is_domain());
    }
}
