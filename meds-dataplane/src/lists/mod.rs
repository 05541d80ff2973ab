//! Lists the filters match packets against, built off the hot path and immutable afterwards.
//!
//! Each list type is built once from validated domain values (e.g. [`meds_proto::Cidr`]) when
//! a new rule set arrives, then only read: lookups never allocate, never lock and never fail.
//! Nothing here does I/O or knows about the wire format.

pub mod ip;

pub use ip::IpSet;
