//! [`Entry`]: one element of a policy list, of the kind its [`ListKind`](crate::ListKind)
//! holds ([`EntryKind`]), with a canonical text form and a strict wire form.

use std::fmt;

use crate::{Asn, AsnError, Cidr, CidrError, CountryCode, CountryError, pb};

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
}

/// A row of the IP-to-ASN table: who announces `prefix`, and the registration country.
/// At least one of `asn` and `country` is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpAsn {
    pub prefix: Cidr,
    pub asn: Option<Asn>,
    pub country: Option<CountryCode>,
}

/// One list element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entry {
    Prefix(Cidr),
    Asn(Asn),
    Country(CountryCode),
    IpAsn(IpAsn),
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
        })
    }

    pub fn kind(&self) -> EntryKind {
        match self {
            Entry::Prefix(_) => EntryKind::Prefix,
            Entry::Asn(_) => EntryKind::Asn,
            Entry::Country(_) => EntryKind::Country,
            Entry::IpAsn(_) => EntryKind::IpAsn,
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
    /// ASN or country).
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
        ];
        let texts = [
            "10.0.0.0/8",
            "64496",
            "fr",
            "1.0.0.0/24 13335 us",
            "2001:db8::/32 - eu",
            "203.0.113.0/24 64496 -",
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
    }
}
