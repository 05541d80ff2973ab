//! [`Entry`]: one element of a policy list, of the kind its [`ListKind`](crate::ListKind)
//! holds ([`EntryKind`]), with a canonical text form and a strict wire form.

use std::fmt;

use crate::{
    Asn, AsnError, Cidr, CidrError, CountryCode, CountryError, DomainError, DomainName,
    FingerprintError, Ja3Hash, Ja4, pb,
};

/// What a list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// IP prefixes (allowlist, blocklist, IP feeds).
    Prefix,
    /// Autonomous system numbers.
    Asn,
    /// Country codes.
    Country,
    /// IP prefix → ASN and country (the IP-to-ASN table).
    IpAsn,
    /// Domain names (matched with their subdomains).
    Domain,
    /// JA3 hashes.
    Ja3,
    /// JA4 fingerprints.
    Ja4,
}

/// A row of the IP-to-ASN table: who announces `prefix`, and the registration country.
/// At least one of `asn` and `country` is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpAsn {
    pub prefix: Cidr,
    pub asn: Option<Asn>,
    pub country: Option<CountryCode>,
}

/// One list element. Not `Copy`: a domain name owns its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entry {
    Prefix(Cidr),
    Asn(Asn),
    Country(CountryCode),
    IpAsn(IpAsn),
    Domain(DomainName),
    Ja3(Ja3Hash),
    Ja4(Ja4),
}

/// Why a wire entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("entry has no value")]
    Empty,
    #[error("{found:?} entry in a list of {expected:?} entries")]
    WrongKind {
        expected: EntryKind,
        found: EntryKind,
    },
    #[error(transparent)]
    Prefix(#[from] CidrError),
    #[error("invalid AS number {0}")]
    Asn(u32),
    #[error("invalid country code {0:?}")]
    Country(String),
    #[error("IP-to-ASN row for {0} has neither an ASN nor a country")]
    IpAsnEmpty(Cidr),
    #[error("domain {0:?} is not in canonical form")]
    Domain(String),
    #[error("JA3 hash is {0} bytes long, not 16")]
    Ja3(usize),
    #[error("JA4 fingerprint {0:?} is not in canonical form")]
    Ja4(String),
}

/// Why user text is not an entry of the wanted kind. Messages name the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryParseError {
    #[error(transparent)]
    Prefix(#[from] CidrError),
    #[error(transparent)]
    Asn(#[from] AsnError),
    #[error(transparent)]
    Country(#[from] CountryError),
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Fingerprint(#[from] FingerprintError),
    #[error("IP-to-ASN rows come from the feed and cannot be typed in")]
    NotUserEditable,
}

impl Entry {
    /// Parse user text (REST body, CLI argument) as an entry of `kind`.
    pub fn parse_user(kind: EntryKind, text: &str) -> Result<Entry, EntryParseError> {
        Ok(match kind {
            EntryKind::Prefix => Entry::Prefix(text.parse()?),
            EntryKind::Asn => Entry::Asn(text.parse()?),
            EntryKind::Country => Entry::Country(text.parse()?),
            EntryKind::IpAsn => return Err(EntryParseError::NotUserEditable),
            EntryKind::Domain => Entry::Domain(DomainName::parse_user(text)?),
            EntryKind::Ja3 => Entry::Ja3(text.parse()?),
            EntryKind::Ja4 => Entry::Ja4(text.parse()?),
        })
    }

    pub fn kind(&self) -> EntryKind {
        match self {
            Entry::Prefix(_) => EntryKind::Prefix,
            Entry::Asn(_) => EntryKind::Asn,
            Entry::Country(_) => EntryKind::Country,
            Entry::IpAsn(_) => EntryKind::IpAsn,
            Entry::Domain(_) => EntryKind::Domain,
            Entry::Ja3(_) => EntryKind::Ja3,
            Entry::Ja4(_) => EntryKind::Ja4,
        }
    }

    pub fn to_wire(&self) -> pb::Entry {
        use pb::entry::Value;
        let value = match self {
            Entry::Prefix(c) => Value::Prefix(c.to_wire()),
            Entry::Asn(a) => Value::Asn(a.get()),
            Entry::Country(c) => Value::Country(c.to_string()),
            Entry::IpAsn(r) => Value::IpAsn(pb::IpAsn {
                prefix: Some(r.prefix.to_wire()),
                asn: r.asn.map_or(0, Asn::get),
                country: r.country.map(|c| c.to_string()).unwrap_or_default(),
            }),
            Entry::Domain(d) => Value::Domain(d.as_str().to_owned()),
            Entry::Ja3(h) => Value::Ja3(h.digest().to_vec()),
            Entry::Ja4(f) => Value::Ja4(f.as_str().to_owned()),
        };
        pb::Entry { value: Some(value) }
    }

    /// Decode and validate; the entry must be of `expected` kind.
    pub fn from_wire(wire: &pb::Entry, expected: EntryKind) -> Result<Entry, EntryError> {
        use pb::entry::Value;
        let entry = match wire.value.as_ref().ok_or(EntryError::Empty)? {
            Value::Prefix(c) => Entry::Prefix(Cidr::from_wire(c)?),
            Value::Asn(n) => Entry::Asn(Asn::new(*n).map_err(|_| EntryError::Asn(*n))?),
            Value::Country(s) => {
                Entry::Country(CountryCode::from_feed(s).map_err(|_| EntryError::Country(clip(s)))?)
            }
            Value::IpAsn(r) => {
                let prefix = Cidr::from_wire(r.prefix.as_ref().ok_or(EntryError::Empty)?)?;
                let asn = match r.asn {
                    0 => None,
                    n => Some(Asn::new(n).map_err(|_| EntryError::Asn(n))?),
                };
                let country = match r.country.as_str() {
                    "" => None,
                    s => Some(CountryCode::from_feed(s).map_err(|_| EntryError::Country(clip(s)))?),
                };
                if asn.is_none() && country.is_none() {
                    return Err(EntryError::IpAsnEmpty(prefix));
                }
                Entry::IpAsn(IpAsn {
                    prefix,
                    asn,
                    country,
                })
            }
            // Feed lists carry names only the lenient rules accept, so the wire uses them too;
            // anything but the canonical form is refused (a sender that normalises differently
            // would otherwise store one name twice).
            Value::Domain(s) => match DomainName::from_feed(s) {
                Ok(d) if d.as_str() == s => Entry::Domain(d),
                _ => return Err(EntryError::Domain(clip(s))),
            },
            Value::Ja3(bytes) => {
                let digest: [u8; 16] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| EntryError::Ja3(bytes.len()))?;
                Entry::Ja3(Ja3Hash::from_digest(digest))
            }
            Value::Ja4(s) => match s.parse::<Ja4>() {
                Ok(f) if f.as_str() == s => Entry::Ja4(f),
                _ => return Err(EntryError::Ja4(clip(s))),
            },
        };
        if entry.kind() != expected {
            return Err(EntryError::WrongKind {
                expected,
                found: entry.kind(),
            });
        }
        Ok(entry)
    }
}

fn clip(s: &str) -> String {
    s.chars().take(16).collect()
}

impl fmt::Display for Entry {
    /// Canonical text: `10.0.0.0/8`, `64496`, `fr`, `1.0.0.0/24 13335 us` (`-` for a missing
    /// ASN or country), `example.com`, a JA3 hash in lower-case hex, a JA4 in lower case.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Prefix(c) => write!(f, "{c}"),
            Entry::Asn(a) => write!(f, "{a}"),
            Entry::Country(c) => write!(f, "{c}"),
            Entry::IpAsn(r) => {
                write!(f, "{}", r.prefix)?;
                match r.asn {
                    Some(a) => write!(f, " {a}")?,
                    None => f.write_str(" -")?,
                }
                match r.country {
                    Some(c) => write!(f, " {c}"),
                    None => f.write_str(" -"),
                }
            }
            Entry::Domain(d) => write!(f, "{d}"),
            Entry::Ja3(h) => write!(f, "{h}"),
            Entry::Ja4(j) => write!(f, "{j}"),
        }
    }
}

impl From<Cidr> for Entry {
    fn from(c: Cidr) -> Entry {
        Entry::Prefix(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip_asn(p: &str, asn: Option<u32>, cc: Option<&str>) -> Entry {
        Entry::IpAsn(IpAsn {
            prefix: p.parse().unwrap(),
            asn: asn.map(|n| Asn::new(n).unwrap()),
            country: cc.map(|c| CountryCode::from_feed(c).unwrap()),
        })
    }

    #[test]
    fn wire_round_trip_and_text() {
        let entries = [
            Entry::Prefix("10.0.0.0/8".parse().unwrap()),
            Entry::Asn(Asn::new(64496).unwrap()),
            Entry::Country("FR".parse().unwrap()),
            ip_asn("1.0.0.0/24", Some(13335), Some("us")),
            ip_asn("2001:db8::/32", None, Some("eu")),
            ip_asn("203.0.113.0/24", Some(64496), None),
            Entry::Domain(DomainName::parse_user("Bücher.Example.").unwrap()),
            Entry::Ja3("E7D705A3286E19EA42F587B344EE6865".parse().unwrap()),
            Entry::Ja4("T13D1516H2_8DAAF6152771_02713D6AF862".parse().unwrap()),
        ];
        let texts = [
            "10.0.0.0/8",
            "64496",
            "fr",
            "1.0.0.0/24 13335 us",
            "2001:db8::/32 - eu",
            "203.0.113.0/24 64496 -",
            "xn--bcher-kva.example",
            "e7d705a3286e19ea42f587b344ee6865",
            "t13d1516h2_8daaf6152771_02713d6af862",
        ];
        for (e, t) in entries.iter().zip(texts) {
            assert_eq!(Entry::from_wire(&e.to_wire(), e.kind()).unwrap(), *e);
            assert_eq!(e.to_string(), t);
        }
    }

    #[test]
    fn wire_refuses_wrong_kind_and_bad_values() {
        let prefix = Entry::Prefix("10.0.0.0/8".parse().unwrap()).to_wire();
        assert!(matches!(
            Entry::from_wire(&prefix, EntryKind::Asn),
            Err(EntryError::WrongKind { .. })
        ));
        let bad_asn = pb::Entry {
            value: Some(pb::entry::Value::Asn(0)),
        };
        assert_eq!(
            Entry::from_wire(&bad_asn, EntryKind::Asn),
            Err(EntryError::Asn(0))
        );
        let bad_cc = pb::Entry {
            value: Some(pb::entry::Value::Country("f1".into())),
        };
        assert!(Entry::from_wire(&bad_cc, EntryKind::Country).is_err());
        let empty = pb::Entry { value: None };
        assert_eq!(
            Entry::from_wire(&empty, EntryKind::Prefix),
            Err(EntryError::Empty)
        );
        let hollow = pb::Entry {
            value: Some(pb::entry::Value::IpAsn(pb::IpAsn {
                prefix: Some(Cidr::host("1.2.3.4".parse().unwrap()).to_wire()),
                asn: 0,
                country: String::new(),
            })),
        };
        assert!(matches!(
            Entry::from_wire(&hollow, EntryKind::IpAsn),
            Err(EntryError::IpAsnEmpty(_))
        ));
        for bad in ["Example.com", "example.com.", "", "a..b", "*.x.com"] {
            let wire = pb::Entry {
                value: Some(pb::entry::Value::Domain(bad.into())),
            };
            assert!(
                matches!(
                    Entry::from_wire(&wire, EntryKind::Domain),
                    Err(EntryError::Domain(_))
                ),
                "{bad:?}"
            );
        }
        // Feed-only names (leading hyphen) travel: the feed lists hold them.
        let feed_name = pb::Entry {
            value: Some(pb::entry::Value::Domain("-ads.example".into())),
        };
        assert!(Entry::from_wire(&feed_name, EntryKind::Domain).is_ok());
        let short_ja3 = pb::Entry {
            value: Some(pb::entry::Value::Ja3(vec![0; 15])),
        };
        assert_eq!(
            Entry::from_wire(&short_ja3, EntryKind::Ja3),
            Err(EntryError::Ja3(15))
        );
        let upper_ja4 = pb::Entry {
            value: Some(pb::entry::Value::Ja4(
                "T13D1516H2_8DAAF6152771_02713D6AF862".into(),
            )),
        };
        assert!(Entry::from_wire(&upper_ja4, EntryKind::Ja4).is_err());
    }

    #[test]
    fn user_text_of_new_kinds() {
        assert!(matches!(
            Entry::parse_user(EntryKind::Domain, "bad .com"),
            Err(EntryParseError::Domain(_))
        ));
        assert!(matches!(
            Entry::parse_user(EntryKind::Ja3, "xyz"),
            Err(EntryParseError::Fingerprint(_))
        ));
        assert_eq!(
            Entry::parse_user(EntryKind::Domain, "WWW.Bad.COM.")
                .unwrap()
                .to_string(),
            "www.bad.com"
        );
    }
}
