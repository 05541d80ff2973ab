//! Lists the filters match packets against, built off the hot path and immutable afterwards.
//!
//! * [`IpSet`]: IPv4/IPv6 prefix sets (allowlist, blocklist, IP feeds).
//! * [`AsnTable`]: the IP-to-ASN-and-country table (longest-prefix match → [`Origin`]).
//! * [`AsnSet`]: sets of AS numbers (user ASN blocklist, Spamhaus ASN-DROP).
//! * [`CountrySet`]: the country blocklist, a bitmap.
//! * [`DomainSet`]: domain names, label-aware suffix match (allowlist, blocklist, hosts feeds).
//! * [`FingerprintSet`]: JA3 hashes and JA4 fingerprints (SSLBL, user blocklists).
//!
//! Each list type is built once from validated domain values (meds-proto's `Cidr`, `Asn`,
//! `CountryCode`, `IpAsn`, `DomainName`, `Ja3Hash`, `Ja4`) when a list changes, then only read: lookups never allocate, never
//! lock and never fail. Nothing here does I/O or knows about the wire format.

pub mod asn;
pub mod country;
pub mod domain;
pub mod fingerprint;
pub mod ip;
mod range;

pub use asn::{AsnSet, AsnTable, Origin};
pub use country::CountrySet;
pub use domain::{DomainMatch, DomainSet};
pub use fingerprint::FingerprintSet;
pub use ip::IpSet;
