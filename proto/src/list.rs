//! The policy lists, as a closed domain enum with the names users and the REST API see.

use crate::pb;

/// A policy list owned by the controller and enforced by the dataplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListKind {
    /// Global IP allowlist ("whitelist"): a match accepts and ends the chain.
    IpAllow,
    /// Global IP blocklist ("blacklist"): a match drops.
    IpBlock,
}

impl ListKind {
    /// Every list, in chain order.
    pub const ALL: [ListKind; 2] = [ListKind::IpAllow, ListKind::IpBlock];

    /// Stable lower-case name, used in the store, logs and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            ListKind::IpAllow => "ip_allow",
            ListKind::IpBlock => "ip_block",
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> pb::ListKind {
        match self {
            ListKind::IpAllow => pb::ListKind::IpAllow,
            ListKind::IpBlock => pb::ListKind::IpBlock,
        }
    }

    /// Decode the wire value; `None` for unspecified or unknown values.
    pub fn from_wire(raw: i32) -> Option<ListKind> {
        match pb::ListKind::try_from(raw).ok()? {
            pb::ListKind::IpAllow => Some(ListKind::IpAllow),
            pb::ListKind::IpBlock => Some(ListKind::IpBlock),
            pb::ListKind::Unspecified => None,
        }
    }
}

impl std::fmt::Display for ListKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_and_unknown_values() {
        for kind in ListKind::ALL {
            assert_eq!(ListKind::from_wire(kind.to_wire() as i32), Some(kind));
        }
        assert_eq!(ListKind::from_wire(0), None);
        assert_eq!(ListKind::from_wire(99), None);
        assert_eq!(ListKind::from_wire(-1), None);
    }
}
