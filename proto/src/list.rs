//! The policy lists, as a closed domain enum with the names users and the REST API see.

use crate::entry::EntryKind;
use crate::pb;

/// A policy list owned by the controller and enforced by the dataplane. The declaration order
/// is the chain order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListKind {
    /// Global IP allowlist ("whitelist"): a match accepts and ends the chain.
    IpAllow,
    /// Global IP blocklist ("blacklist"): a match drops.
    IpBlock,
    /// FireHOL level1 feed.
    FeedFireHol,
    /// Spamhaus DROP feed (IPv4 and IPv6).
    FeedSpamhaus,
    /// abuse.ch Feodo Tracker feed.
    FeedFeodo,
    /// Country blocklist (matched through the IP-to-ASN table).
    CountryBlock,
    /// User ASN blocklist.
    AsnBlock,
    /// Spamhaus ASN-DROP feed.
    FeedAsnDrop,
    /// IP-to-ASN-and-country table.
    IpAsn,
    /// Global domain allowlist: a listed name (or subdomain) is never blocked by the domain,
    /// hosts-feed or fingerprint filters for that name.
    DomainAllow,
    /// Global domain blocklist.
    DomainBlock,
    /// StevenBlack hosts feed.
    FeedStevenBlack,
    /// someonewhocares.org hosts feed.
    FeedSomeoneWhoCares,
    /// abuse.ch SSLBL JA3 fingerprint feed.
    FeedSslblJa3,
    /// User JA3 blocklist.
    Ja3Block,
    /// User JA4 blocklist.
    Ja4Block,
}

impl ListKind {
    /// Every list, in chain order.
    pub const ALL: [ListKind; 16] = [
        ListKind::IpAllow,
        ListKind::IpBlock,
        ListKind::FeedFireHol,
        ListKind::FeedSpamhaus,
        ListKind::FeedFeodo,
        ListKind::CountryBlock,
        ListKind::AsnBlock,
        ListKind::FeedAsnDrop,
        ListKind::IpAsn,
        ListKind::DomainAllow,
        ListKind::DomainBlock,
        ListKind::FeedStevenBlack,
        ListKind::FeedSomeoneWhoCares,
        ListKind::FeedSslblJa3,
        ListKind::Ja3Block,
        ListKind::Ja4Block,
    ];

    /// Stable lower-case name, used in the store, logs and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            ListKind::IpAllow => "ip_allow",
            ListKind::IpBlock => "ip_block",
            ListKind::FeedFireHol => "feed_firehol",
            ListKind::FeedSpamhaus => "feed_spamhaus",
            ListKind::FeedFeodo => "feed_feodo",
            ListKind::CountryBlock => "country_block",
            ListKind::AsnBlock => "asn_block",
            ListKind::FeedAsnDrop => "feed_asn_drop",
            ListKind::IpAsn => "ip_asn",
            ListKind::DomainAllow => "domain_allow",
            ListKind::DomainBlock => "domain_block",
            ListKind::FeedStevenBlack => "feed_stevenblack",
            ListKind::FeedSomeoneWhoCares => "feed_someonewhocares",
            ListKind::FeedSslblJa3 => "feed_sslbl_ja3",
            ListKind::Ja3Block => "ja3_block",
            ListKind::Ja4Block => "ja4_block",
        }
    }

    /// The name operators see in the REST API, `medsctl` and status output (`whitelist`,
    /// `domain_blacklist`, `firehol`, …).
    pub fn public_name(self) -> &'static str {
        match self {
            ListKind::IpAllow => "whitelist",
            ListKind::IpBlock => "blacklist",
            ListKind::FeedFireHol => "firehol",
            ListKind::FeedSpamhaus => "spamhaus",
            ListKind::FeedFeodo => "feodo",
            ListKind::CountryBlock => "countries",
            ListKind::AsnBlock => "asns",
            ListKind::FeedAsnDrop => "spamhaus_asndrop",
            ListKind::IpAsn => "iplocate",
            ListKind::DomainAllow => "domain_whitelist",
            ListKind::DomainBlock => "domain_blacklist",
            ListKind::FeedStevenBlack => "stevenblack",
            ListKind::FeedSomeoneWhoCares => "someonewhocares",
            ListKind::FeedSslblJa3 => "sslbl_ja3",
            ListKind::Ja3Block => "ja3",
            ListKind::Ja4Block => "ja4",
        }
    }

    /// Parse [`ListKind::public_name`].
    pub fn from_public_name(name: &str) -> Option<ListKind> {
        ListKind::ALL.into_iter().find(|k| k.public_name() == name)
    }

    /// Parse [`ListKind::name`].
    pub fn from_name(name: &str) -> Option<ListKind> {
        ListKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// What the list holds.
    pub fn entry_kind(self) -> EntryKind {
        match self {
            ListKind::IpAllow
            | ListKind::IpBlock
            | ListKind::FeedFireHol
            | ListKind::FeedSpamhaus
            | ListKind::FeedFeodo => EntryKind::Prefix,
            ListKind::CountryBlock => EntryKind::Country,
            ListKind::AsnBlock | ListKind::FeedAsnDrop => EntryKind::Asn,
            ListKind::IpAsn => EntryKind::IpAsn,
            ListKind::DomainAllow
            | ListKind::DomainBlock
            | ListKind::FeedStevenBlack
            | ListKind::FeedSomeoneWhoCares => EntryKind::Domain,
            ListKind::FeedSslblJa3 | ListKind::Ja3Block => EntryKind::Ja3,
            ListKind::Ja4Block => EntryKind::Ja4,
        }
    }

    /// True for lists filled by a feed rather than by users.
    pub fn is_feed(self) -> bool {
        matches!(
            self,
            ListKind::FeedFireHol
                | ListKind::FeedSpamhaus
                | ListKind::FeedFeodo
                | ListKind::FeedAsnDrop
                | ListKind::IpAsn
                | ListKind::FeedStevenBlack
                | ListKind::FeedSomeoneWhoCares
                | ListKind::FeedSslblJa3
        )
    }

    /// The wire value.
    pub fn to_wire(self) -> pb::ListKind {
        match self {
            ListKind::IpAllow => pb::ListKind::IpAllow,
            ListKind::IpBlock => pb::ListKind::IpBlock,
            ListKind::FeedFireHol => pb::ListKind::FeedFirehol,
            ListKind::FeedSpamhaus => pb::ListKind::FeedSpamhaus,
            ListKind::FeedFeodo => pb::ListKind::FeedFeodo,
            ListKind::CountryBlock => pb::ListKind::CountryBlock,
            ListKind::AsnBlock => pb::ListKind::AsnBlock,
            ListKind::FeedAsnDrop => pb::ListKind::FeedAsnDrop,
            ListKind::IpAsn => pb::ListKind::IpAsn,
            ListKind::DomainAllow => pb::ListKind::DomainAllow,
            ListKind::DomainBlock => pb::ListKind::DomainBlock,
            ListKind::FeedStevenBlack => pb::ListKind::FeedStevenblack,
            ListKind::FeedSomeoneWhoCares => pb::ListKind::FeedSomeonewhocares,
            ListKind::FeedSslblJa3 => pb::ListKind::FeedSslblJa3,
            ListKind::Ja3Block => pb::ListKind::Ja3Block,
            ListKind::Ja4Block => pb::ListKind::Ja4Block,
        }
    }

    /// Decode the wire value; `None` for unspecified or unknown values.
    pub fn from_wire(raw: i32) -> Option<ListKind> {
        match pb::ListKind::try_from(raw).ok()? {
            pb::ListKind::IpAllow => Some(ListKind::IpAllow),
            pb::ListKind::IpBlock => Some(ListKind::IpBlock),
            pb::ListKind::FeedFirehol => Some(ListKind::FeedFireHol),
            pb::ListKind::FeedSpamhaus => Some(ListKind::FeedSpamhaus),
            pb::ListKind::FeedFeodo => Some(ListKind::FeedFeodo),
            pb::ListKind::CountryBlock => Some(ListKind::CountryBlock),
            pb::ListKind::AsnBlock => Some(ListKind::AsnBlock),
            pb::ListKind::FeedAsnDrop => Some(ListKind::FeedAsnDrop),
            pb::ListKind::IpAsn => Some(ListKind::IpAsn),
            pb::ListKind::DomainAllow => Some(ListKind::DomainAllow),
            pb::ListKind::DomainBlock => Some(ListKind::DomainBlock),
            pb::ListKind::FeedStevenblack => Some(ListKind::FeedStevenBlack),
            pb::ListKind::FeedSomeonewhocares => Some(ListKind::FeedSomeoneWhoCares),
            pb::ListKind::FeedSslblJa3 => Some(ListKind::FeedSslblJa3),
            pb::ListKind::Ja3Block => Some(ListKind::Ja3Block),
            pb::ListKind::Ja4Block => Some(ListKind::Ja4Block),
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
    fn wire_and_name_round_trip_and_unknown_values() {
        for kind in ListKind::ALL {
            assert_eq!(ListKind::from_wire(kind.to_wire() as i32), Some(kind));
            assert_eq!(ListKind::from_name(kind.name()), Some(kind));
            assert_eq!(ListKind::from_public_name(kind.public_name()), Some(kind));
        }
        assert_eq!(ListKind::from_wire(0), None);
        assert_eq!(ListKind::from_wire(99), None);
        assert_eq!(ListKind::from_wire(-1), None);
        assert_eq!(ListKind::from_name("nope"), None);
    }

    #[test]
    fn all_is_in_chain_order() {
        let mut sorted = ListKind::ALL;
        sorted.sort();
        assert_eq!(sorted, ListKind::ALL);
    }
}
