//! `feeds`: the threat and IP-intelligence feeds the controller downloads, validates and keeps
//! in force (FireHOL level1, Spamhaus DROP v4 + v6, abuse.ch Feodo, Spamhaus ASN-DROP,
//! IPLocate IP-to-ASN, the StevenBlack and someonewhocares.org hosts lists, abuse.ch SSLBL
//! JA3 fingerprints).
//!
//! * [`registry`]: which feeds exist, the list each fills, default URL and format.
//! * [`fetch`]: HTTP(S)/file download with limits, conditional requests and retries.
//! * [`parse`]: pure, total parsers of every format.
//! * [`Feeds`] (`updater`): the update loop, validation (a bad download never weakens
//!   protection), persistence of the last good copy, and run-time settings.
//!
//! Must not: touch the dataplane or SQLite other than through
//! [`Controller`](crate::core::Controller), or let anything but a validated, complete feed
//! reach a list.

pub mod fetch;
pub mod parse;
pub mod registry;
mod updater;

pub use fetch::{FeedUrl, FeedUrlError, FetchError, FetchOptions};
pub use registry::{FEEDS, FeedSpec, Format};
pub use updater::{FeedFlagError, FeedStatus, Feeds, FeedsConfig, FeedsError, shrinks_too_much};
