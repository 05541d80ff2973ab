//! meds-proto: the contract between the Meds processes.
//!
//! * [`pb`]: the generated `meds.v1` protobuf messages and gRPC stubs (wire types).
//! * [`Cidr`], [`ListKind`]: validated domain types both sides share, with conversions to and
//!   from the wire types. Every conversion from the wire validates; nothing here trusts input.
//! * [`DomainName`], [`Ja3Hash`], [`Ja4`]: validated domain names (lower-case, punycode) and TLS
//!   client fingerprints for the domain and fingerprint lists.
//! * [`sync`]: the limits of the sync stream and the validation of its update chunks.
//! * [`view`]: the JSON of drop events and explanations that REST and `medsctl --json` share.
//!
//! This crate does no I/O.

pub mod asn;
pub mod cidr;
pub mod country;
pub mod domain;
pub mod entry;
pub mod fingerprint;
pub mod list;
pub mod sync;
pub mod view;

pub use asn::{Asn, AsnError};
pub use cidr::{Cidr, CidrError};
pub use country::{CountryCode, CountryError};
pub use domain::{DomainError, DomainName};
pub use entry::{Entry, EntryError, EntryKind, EntryParseError, IpAsn};
pub use fingerprint::{FingerprintError, Ja3Hash, Ja4};
pub use list::ListKind;

/// Generated `meds.v1` wire types and gRPC client/server stubs.
#[allow(clippy::all, clippy::unwrap_used, clippy::expect_used, missing_docs)]
pub mod pb {
    tonic::include_proto!("meds.v1");
}

/// Default path of the controller's sync socket (the dataplane connects here).
pub const DEFAULT_SYNC_SOCKET: &str = "/run/meds/sync.sock";
/// Default path of the controller's admin socket (medsctl connects here).
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/meds/admin.sock";
/// Default SQLite database path.
pub const DEFAULT_DB_PATH: &str = "/var/lib/meds/meds.db";
