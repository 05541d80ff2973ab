//! The filter chain: an immutable [`RuleSet`] and the [`Decision`] it takes for one packet.
//!
//! Order (compatible with the original Meds), every list matching the packet's **source**:
//!
//! | # | list ([`ListKind`]) | on a match | filter / reason |
//! |---|---|---|---|
//! | 1 | allowlist (`IpAllow`) | accept, ends the chain | `ip` / `WhiteList` |
//! | 1a | the source's token bucket is empty ([`crate::ratelimit`], not a list) | drop | `rate` / `Limiter` |
//! | 2 | user blocklist (`IpBlock`) | drop | `ip` / `BlackList` |
//! | 3 | FireHOL level1 (`FeedFireHol`) | drop | `ip` / `FireHOL` |
//! | 4 | Spamhaus DROP (`FeedSpamhaus`) | drop | `ip` / `Spamhaus` |
//! | 5 | abuse.ch Feodo (`FeedFeodo`) | drop | `ip` / `Abuse` |
//! | 6 | country of the source in the country blocklist (`CountryBlock`) | drop | `geo` / `IPLocate` |
//! | 7 | ASN of the source in Spamhaus ASN-DROP (`FeedAsnDrop`) | drop | `asn` / `Spamhaus` |
//! | 8 | ASN of the source in the user ASN blocklist (`AsnBlock`) | drop | `asn` / `BlackList` |
//! | 9 | every name of the packet in the domain allowlist (`DomainAllow`) | accept, ends the chain | `domain` / `WhiteList` |
//! | 10 | a name not allowlisted, in the domain blocklist (`DomainBlock`) | drop | `domain` / `BlackList` |
//! | 11 | a name not allowlisted, in StevenBlack (`FeedStevenBlack`) | drop | `domain` / `StevenBlack` |
//! | 12 | a name not allowlisted, in someonewhocares (`FeedSomeoneWhoCares`) | drop | `domain` / `SomeoneWhoCares` |
//! | 13 | the ClientHello's JA3 in abuse.ch SSLBL (`FeedSslblJa3`) | drop | `ja3` / `Abuse` |
//! | 14 | the JA3 in the user JA3 blocklist (`Ja3Block`) | drop | `ja3` / `BlackList` |
//! | 15 | the JA4 in the user JA4 blocklist (`Ja4Block`) | drop | `ja4` / `BlackList` |
//! | – | nothing matched | accept | `empty` / `default` |
//!
//! Steps 9–15 look at what the payload carried ([`AppView`]): the DNS question names and CNAME
//! targets, the TLS SNI, the JA3 and JA4 of a ClientHello. "Names" are the DNS names and the SNI.
//! Precedence between the domain lists is **per name** (the original let one allowlisted name
//! in a DNS packet accept the whole packet, upstream W19): a packet is dropped when any of its
//! names is on a domain blocklist or hosts feed *and that name is not allowlisted*. Only when
//! every name is allowlisted does the allowlist accept the packet outright (skipping the
//! fingerprint lists, as the original's domain whitelist did). A packet without names or
//! fingerprints passes steps 9–15.
//!
//! The payload is read by [`crate::inspect::Inspector`] (the worker and `replay` share it): it
//! runs steps 1–8 first and looks at the payload only when they did not decide and a list of
//! steps 9–15 is loaded. A ClientHello it cannot inspect (malformed, or its reassembly gave up)
//! gets the `--tls-uninspectable` verdict with `empty` / `uninspectable`; later packets of a
//! TCP flow whose payload was dropped get the same decision (its blocked-flow table).
//!
//! The source's country and ASN come from the IP-to-ASN table (`IpAsn`, longest-prefix match),
//! looked up at most once per packet and only when a country or ASN list is non-empty. An
//! address the table does not know passes steps 6–8. A packet without a readable source
//! address never reaches the lists: it gets the configured [`UnparsableVerdict`] with `empty` /
//! `unparsable`.
//!
//! A `RuleSet` is a bundle of `Arc`ed per-list components: [`RuleSet::with_list`] rebuilds one
//! component and shares the others, so a one-address blocklist change leaves the 600k-row
//! IP-to-ASN table untouched. Rule sets are built off the hot path (by the sync client) and
//! swapped in atomically; the packet threads only read them. Nothing on the evaluation path
//! allocates, locks, logs or does I/O.

use std::net::IpAddr;
use std::sync::Arc;

use meds_proto::{Entry, Ja3Hash, Ja4, ListKind};

use crate::lists::{AsnSet, AsnTable, CountrySet, DomainSet, FingerprintSet, IpSet};
use crate::packet::{self, PacketMeta};

/// What the kernel is told to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
}

impl Verdict {
    /// Every verdict, in index order.
    pub const ALL: [Verdict; 2] = [Verdict::Accept, Verdict::Drop];

    /// Metric / status label.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
        }
    }

    /// Dense index (position in [`Verdict::ALL`]).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which filter took the decision. Labels keep the original's spelling (`ja4` is new). New
/// filters are added as variants here and in [`Filter::ALL`]; the counters size themselves
/// from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter {
    /// No filter matched (or the packet could not be read).
    Empty,
    /// The IP lists: allowlist, user blocklist, FireHOL, Spamhaus DROP, Feodo.
    Ip,
    /// The country blocklist.
    Geo,
    /// The ASN lists: Spamhaus ASN-DROP, user ASN blocklist.
    Asn,
    /// The domain lists: allowlist, blocklist, hosts feeds.
    Domain,
    /// The JA3 lists: abuse.ch SSLBL, user JA3 blocklist.
    Ja3,
    /// The user JA4 blocklist.
    Ja4,
    /// The per-source rate limiter (after the allowlist, before the blocklists).
    Rate,
}

impl Filter {
    /// Every filter, in index order.
    pub const ALL: [Filter; 8] = [
        Filter::Empty,
        Filter::Ip,
        Filter::Geo,
        Filter::Asn,
        Filter::Domain,
        Filter::Ja3,
        Filter::Ja4,
        Filter::Rate,
    ];

    /// Metric / status label.
    pub fn label(self) -> &'static str {
        match self {
            Filter::Empty => "empty",
            Filter::Ip => "ip",
            Filter::Geo => "geo",
            Filter::Asn => "asn",
            Filter::Domain => "domain",
            Filter::Ja3 => "ja3",
            Filter::Ja4 => "ja4",
            Filter::Rate => "rate",
        }
    }

    /// Dense index (position in [`Filter::ALL`]).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why the filter decided as it did. Labels keep the original's spelling (`reason` is the
/// list's name; `Spamhaus` and `BlackList` occur under two filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Default,
    Unparsable,
    WhiteList,
    BlackList,
    FireHol,
    Spamhaus,
    Abuse,
    IpLocate,
    StevenBlack,
    SomeoneWhoCares,
    /// A TLS ClientHello that could not be inspected (see [`crate::inspect::Uninspectable`]).
    Uninspectable,
    /// The source exceeded its token bucket.
    Limiter,
}

impl Reason {
    /// Every reason, in index order.
    pub const ALL: [Reason; 12] = [
        Reason::Default,
        Reason::Unparsable,
        Reason::WhiteList,
        Reason::BlackList,
        Reason::FireHol,
        Reason::Spamhaus,
        Reason::Abuse,
        Reason::IpLocate,
        Reason::StevenBlack,
        Reason::SomeoneWhoCares,
        Reason::Uninspectable,
        Reason::Limiter,
    ];

    /// Metric / status label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Default => "default",
            Reason::Unparsable => "unparsable",
            Reason::WhiteList => "WhiteList",
            Reason::BlackList => "BlackList",
            Reason::FireHol => "FireHOL",
            Reason::Spamhaus => "Spamhaus",
            Reason::Abuse => "Abuse",
            Reason::IpLocate => "IPLocate",
            Reason::StevenBlack => "StevenBlack",
            Reason::SomeoneWhoCares => "SomeoneWhoCares",
            Reason::Uninspectable => "uninspectable",
            Reason::Limiter => "Limiter",
        }
    }

    /// Dense index (position in [`Reason::ALL`]).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The outcome for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub filter: Filter,
    pub reason: Reason,
}

impl Decision {
    const fn drop(filter: Filter, reason: Reason) -> Decision {
        Decision {
            verdict: Verdict::Drop,
            filter,
            reason,
        }
    }

    /// Nothing matched.
    pub const DEFAULT: Decision = Decision {
        verdict: Verdict::Accept,
        filter: Filter::Empty,
        reason: Reason::Default,
    };
    /// Source in the allowlist.
    pub const WHITELISTED: Decision = Decision {
        verdict: Verdict::Accept,
        filter: Filter::Ip,
        reason: Reason::WhiteList,
    };
    /// Source in the user blocklist.
    pub const BLACKLISTED: Decision = Decision::drop(Filter::Ip, Reason::BlackList);
    /// Source in FireHOL level1.
    pub const FIREHOL: Decision = Decision::drop(Filter::Ip, Reason::FireHol);
    /// Source in Spamhaus DROP.
    pub const SPAMHAUS: Decision = Decision::drop(Filter::Ip, Reason::Spamhaus);
    /// Source in the abuse.ch Feodo Tracker list.
    pub const FEODO: Decision = Decision::drop(Filter::Ip, Reason::Abuse);
    /// Source's country in the country blocklist.
    pub const COUNTRY: Decision = Decision::drop(Filter::Geo, Reason::IpLocate);
    /// Source's ASN in Spamhaus ASN-DROP.
    pub const ASN_DROP: Decision = Decision::drop(Filter::Asn, Reason::Spamhaus);
    /// Source's ASN in the user ASN blocklist.
    pub const ASN_BLACKLISTED: Decision = Decision::drop(Filter::Asn, Reason::BlackList);
    /// Every name of the packet in the domain allowlist.
    pub const DOMAIN_WHITELISTED: Decision = Decision {
        verdict: Verdict::Accept,
        filter: Filter::Domain,
        reason: Reason::WhiteList,
    };
    /// A name (not allowlisted) in the domain blocklist.
    pub const DOMAIN_BLACKLISTED: Decision = Decision::drop(Filter::Domain, Reason::BlackList);
    /// A name (not allowlisted) in the StevenBlack hosts feed.
    pub const STEVENBLACK: Decision = Decision::drop(Filter::Domain, Reason::StevenBlack);
    /// A name (not allowlisted) in the someonewhocares hosts feed.
    pub const SOMEONEWHOCARES: Decision = Decision::drop(Filter::Domain, Reason::SomeoneWhoCares);
    /// The JA3 in abuse.ch SSLBL.
    pub const SSLBL: Decision = Decision::drop(Filter::Ja3, Reason::Abuse);
    /// The JA3 in the user JA3 blocklist.
    pub const JA3_BLACKLISTED: Decision = Decision::drop(Filter::Ja3, Reason::BlackList);
    /// The JA4 in the user JA4 blocklist.
    pub const JA4_BLACKLISTED: Decision = Decision::drop(Filter::Ja4, Reason::BlackList);
    /// Step 2: the source exceeded its token bucket (`rate` / `Limiter`, as the original).
    pub const RATE_LIMITED: Decision = Decision::drop(Filter::Rate, Reason::Limiter);

    /// The decision for a packet without a readable source address.
    pub fn unparsable(policy: UnparsableVerdict) -> Decision {
        Decision {
            verdict: policy.verdict(),
            filter: Filter::Empty,
            reason: Reason::Unparsable,
        }
    }

    /// The decision a match in `list` gives; `None` for the IP-to-ASN table, which only
    /// informs the country and ASN lists.
    pub fn on_match(list: ListKind) -> Option<Decision> {
        Some(match list {
            ListKind::IpAllow => Decision::WHITELISTED,
            ListKind::IpBlock => Decision::BLACKLISTED,
            ListKind::FeedFireHol => Decision::FIREHOL,
            ListKind::FeedSpamhaus => Decision::SPAMHAUS,
            ListKind::FeedFeodo => Decision::FEODO,
            ListKind::CountryBlock => Decision::COUNTRY,
            ListKind::FeedAsnDrop => Decision::ASN_DROP,
            ListKind::AsnBlock => Decision::ASN_BLACKLISTED,
            ListKind::IpAsn => return None,
            ListKind::DomainAllow => Decision::DOMAIN_WHITELISTED,
            ListKind::DomainBlock => Decision::DOMAIN_BLACKLISTED,
            ListKind::FeedStevenBlack => Decision::STEVENBLACK,
            ListKind::FeedSomeoneWhoCares => Decision::SOMEONEWHOCARES,
            ListKind::FeedSslblJa3 => Decision::SSLBL,
            ListKind::Ja3Block => Decision::JA3_BLACKLISTED,
            ListKind::Ja4Block => Decision::JA4_BLACKLISTED,
        })
    }
}

/// Policy for packets without a readable source address (not IPv4/IPv6, or shorter than the
/// fixed IP header, or a queue message without a usable payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnparsableVerdict {
    Accept,
    Drop,
}

impl UnparsableVerdict {
    pub fn verdict(self) -> Verdict {
        match self {
            UnparsableVerdict::Accept => Verdict::Accept,
            UnparsableVerdict::Drop => Verdict::Drop,
        }
    }
}

/// An immutable rule set: the lists of one controller generation, each compiled into its
/// lookup structure behind an `Arc`. `Send + Sync`; cloning shares every component.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    generation: u64,
    allow: Arc<IpSet>,
    block: Arc<IpSet>,
    firehol: Arc<IpSet>,
    spamhaus: Arc<IpSet>,
    feodo: Arc<IpSet>,
    countries: Arc<CountrySet>,
    asn_block: Arc<AsnSet>,
    asn_drop: Arc<AsnSet>,
    asn_table: Arc<AsnTable>,
    domain_allow: Arc<DomainSet>,
    domain_block: Arc<DomainSet>,
    stevenblack: Arc<DomainSet>,
    someonewhocares: Arc<DomainSet>,
    sslbl: Arc<FingerprintSet<Ja3Hash>>,
    ja3_block: Arc<FingerprintSet<Ja3Hash>>,
    ja4_block: Arc<FingerprintSet<Ja4>>,
    /// Steps 6–8 can match: the table and a country or ASN list are non-empty.
    origin_stage: bool,
    /// Derived at build time, read per packet: which payload fields a list can match.
    wants_names: bool,
    wants_ja3: bool,
    wants_ja4: bool,
}

/// The names and fingerprints one packet's payload carried (steps 9–15 of the chain). Built by
/// the packet inspector from borrowed buffers; empty for a packet that carried none.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppView<'a> {
    /// DNS question names and CNAME targets (lower-case text, no trailing dot).
    pub dns: &'a [&'a str],
    /// The TLS SNI host name, as sent.
    pub sni: Option<&'a [u8]>,
    /// JA3 of the ClientHello (computed only when a JA3 list is non-empty, or for replay).
    pub ja3: Option<Ja3Hash>,
    /// JA4 of the ClientHello (computed only when the JA4 list is non-empty, or for replay).
    pub ja4: Option<Ja4>,
}

impl AppView<'_> {
    /// No names and no fingerprints.
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.sni.is_none() && self.ja3.is_none() && self.ja4.is_none()
    }

    fn names(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.dns.iter().map(|n| n.as_bytes()).chain(self.sni)
    }
}

impl RuleSet {
    /// Generation 0 with empty lists: accepts everything (`empty` / `default`).
    pub fn empty() -> RuleSet {
        RuleSet::default()
    }

    /// The same components under another generation.
    pub fn with_generation(mut self, generation: u64) -> RuleSet {
        self.generation = generation;
        self
    }

    /// Rebuild the component of `list` from `entries`; every other component is shared.
    /// Entries of a kind the list does not hold are ignored (the sync stager refuses them).
    /// CPU-bound for large lists: never call it on the packet path.
    pub fn with_list<'a, I>(mut self, list: ListKind, entries: I) -> RuleSet
    where
        I: IntoIterator<Item = &'a Entry>,
    {
        let entries = entries.into_iter();
        let prefixes = |entries: I::IntoIter| {
            Arc::new(IpSet::from_prefixes(entries.filter_map(|e| match e {
                Entry::Prefix(c) => Some(*c),
                _ => None,
            })))
        };
        let asns = |entries: I::IntoIter| {
            Arc::new(AsnSet::from_asns(entries.filter_map(|e| match e {
                Entry::Asn(a) => Some(*a),
                _ => None,
            })))
        };
        let domains = |entries: I::IntoIter| {
            Arc::new(DomainSet::new(
                entries
                    .filter_map(|e| match e {
                        Entry::Domain(d) => Some(d.clone()),
                        _ => None,
                    })
                    .collect(),
            ))
        };
        let ja3s = |entries: I::IntoIter| {
            Arc::new(FingerprintSet::new(
                entries
                    .filter_map(|e| match e {
                        Entry::Ja3(h) => Some(*h),
                        _ => None,
                    })
                    .collect(),
            ))
        };
        match list {
            ListKind::IpAllow => self.allow = prefixes(entries),
            ListKind::IpBlock => self.block = prefixes(entries),
            ListKind::FeedFireHol => self.firehol = prefixes(entries),
            ListKind::FeedSpamhaus => self.spamhaus = prefixes(entries),
            ListKind::FeedFeodo => self.feodo = prefixes(entries),
            ListKind::CountryBlock => {
                self.countries =
                    Arc::new(CountrySet::from_codes(entries.filter_map(|e| match e {
                        Entry::Country(c) => Some(*c),
                        _ => None,
                    })));
            }
            ListKind::AsnBlock => self.asn_block = asns(entries),
            ListKind::FeedAsnDrop => self.asn_drop = asns(entries),
            ListKind::IpAsn => {
                self.asn_table = Arc::new(AsnTable::from_rows(entries.filter_map(|e| match e {
                    Entry::IpAsn(row) => Some(row),
                    _ => None,
                })));
            }
            ListKind::DomainAllow => self.domain_allow = domains(entries),
            ListKind::DomainBlock => self.domain_block = domains(entries),
            ListKind::FeedStevenBlack => self.stevenblack = domains(entries),
            ListKind::FeedSomeoneWhoCares => self.someonewhocares = domains(entries),
            ListKind::FeedSslblJa3 => self.sslbl = ja3s(entries),
            ListKind::Ja3Block => self.ja3_block = ja3s(entries),
            ListKind::Ja4Block => {
                self.ja4_block = Arc::new(FingerprintSet::new(
                    entries
                        .filter_map(|e| match e {
                            Entry::Ja4(f) => Some(*f),
                            _ => None,
                        })
                        .collect(),
                ));
            }
        }
        let origin_lists =
            !(self.countries.is_empty() && self.asn_block.is_empty() && self.asn_drop.is_empty());
        self.origin_stage = origin_lists && !self.asn_table.is_empty();
        self.wants_names = !(self.domain_allow.is_empty()
            && self.domain_block.is_empty()
            && self.stevenblack.is_empty()
            && self.someonewhocares.is_empty());
        self.wants_ja3 = !(self.sslbl.is_empty() && self.ja3_block.is_empty());
        self.wants_ja4 = !self.ja4_block.is_empty();
        self
    }

    /// The controller generation these lists come from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The allowlist ("whitelist").
    pub fn allow(&self) -> &Arc<IpSet> {
        &self.allow
    }

    /// The user blocklist ("blacklist").
    pub fn block(&self) -> &Arc<IpSet> {
        &self.block
    }

    pub fn firehol(&self) -> &Arc<IpSet> {
        &self.firehol
    }

    pub fn spamhaus(&self) -> &Arc<IpSet> {
        &self.spamhaus
    }

    pub fn feodo(&self) -> &Arc<IpSet> {
        &self.feodo
    }

    /// The country blocklist.
    pub fn countries(&self) -> &Arc<CountrySet> {
        &self.countries
    }

    /// The user ASN blocklist.
    pub fn asn_block(&self) -> &Arc<AsnSet> {
        &self.asn_block
    }

    /// Spamhaus ASN-DROP.
    pub fn asn_drop(&self) -> &Arc<AsnSet> {
        &self.asn_drop
    }

    /// The IP-to-ASN-and-country table.
    pub fn asn_table(&self) -> &Arc<AsnTable> {
        &self.asn_table
    }

    /// Entries in the component of `list` (rows for the IP-to-ASN table).
    pub fn list_len(&self, list: ListKind) -> usize {
        match list {
            ListKind::IpAllow => self.allow.len(),
            ListKind::IpBlock => self.block.len(),
            ListKind::FeedFireHol => self.firehol.len(),
            ListKind::FeedSpamhaus => self.spamhaus.len(),
            ListKind::FeedFeodo => self.feodo.len(),
            ListKind::CountryBlock => self.countries.len(),
            ListKind::AsnBlock => self.asn_block.len(),
            ListKind::FeedAsnDrop => self.asn_drop.len(),
            ListKind::IpAsn => self.asn_table.len(),
            ListKind::DomainAllow => self.domain_allow.len(),
            ListKind::DomainBlock => self.domain_block.len(),
            ListKind::FeedStevenBlack => self.stevenblack.len(),
            ListKind::FeedSomeoneWhoCares => self.someonewhocares.len(),
            ListKind::FeedSslblJa3 => self.sslbl.len(),
            ListKind::Ja3Block => self.ja3_block.len(),
            ListKind::Ja4Block => self.ja4_block.len(),
        }
    }

    /// True when both rule sets use the very same component for `list` (not merely equal
    /// contents): what an incremental rebuild leaves alone.
    pub fn shares_list(&self, other: &RuleSet, list: ListKind) -> bool {
        match list {
            ListKind::IpAllow => Arc::ptr_eq(&self.allow, &other.allow),
            ListKind::IpBlock => Arc::ptr_eq(&self.block, &other.block),
            ListKind::FeedFireHol => Arc::ptr_eq(&self.firehol, &other.firehol),
            ListKind::FeedSpamhaus => Arc::ptr_eq(&self.spamhaus, &other.spamhaus),
            ListKind::FeedFeodo => Arc::ptr_eq(&self.feodo, &other.feodo),
            ListKind::CountryBlock => Arc::ptr_eq(&self.countries, &other.countries),
            ListKind::AsnBlock => Arc::ptr_eq(&self.asn_block, &other.asn_block),
            ListKind::FeedAsnDrop => Arc::ptr_eq(&self.asn_drop, &other.asn_drop),
            ListKind::IpAsn => Arc::ptr_eq(&self.asn_table, &other.asn_table),
            ListKind::DomainAllow => Arc::ptr_eq(&self.domain_allow, &other.domain_allow),
            ListKind::DomainBlock => Arc::ptr_eq(&self.domain_block, &other.domain_block),
            ListKind::FeedStevenBlack => Arc::ptr_eq(&self.stevenblack, &other.stevenblack),
            ListKind::FeedSomeoneWhoCares => {
                Arc::ptr_eq(&self.someonewhocares, &other.someonewhocares)
            }
            ListKind::FeedSslblJa3 => Arc::ptr_eq(&self.sslbl, &other.sslbl),
            ListKind::Ja3Block => Arc::ptr_eq(&self.ja3_block, &other.ja3_block),
            ListKind::Ja4Block => Arc::ptr_eq(&self.ja4_block, &other.ja4_block),
        }
    }

    /// Any domain list (allowlist included) is non-empty: names are worth extracting.
    #[inline]
    pub fn wants_names(&self) -> bool {
        self.wants_names
    }

    /// A JA3 list is non-empty: the JA3 of a ClientHello is worth computing.
    #[inline]
    pub fn wants_ja3(&self) -> bool {
        self.wants_ja3
    }

    /// The JA4 list is non-empty: the JA4 of a ClientHello is worth computing.
    #[inline]
    pub fn wants_ja4(&self) -> bool {
        self.wants_ja4
    }

    /// The domain allowlist.
    pub fn domain_allow(&self) -> &Arc<DomainSet> {
        &self.domain_allow
    }

    /// The domain blocklist.
    pub fn domain_block(&self) -> &Arc<DomainSet> {
        &self.domain_block
    }

    /// The StevenBlack hosts feed.
    pub fn stevenblack(&self) -> &Arc<DomainSet> {
        &self.stevenblack
    }

    /// The someonewhocares hosts feed.
    pub fn someonewhocares(&self) -> &Arc<DomainSet> {
        &self.someonewhocares
    }

    /// abuse.ch SSLBL (JA3).
    pub fn sslbl(&self) -> &Arc<FingerprintSet<Ja3Hash>> {
        &self.sslbl
    }

    /// The user JA3 blocklist.
    pub fn ja3_block(&self) -> &Arc<FingerprintSet<Ja3Hash>> {
        &self.ja3_block
    }

    /// The user JA4 blocklist.
    pub fn ja4_block(&self) -> &Arc<FingerprintSet<Ja4>> {
        &self.ja4_block
    }

    /// Run the whole chain: the source address (steps 1–8), then what the payload carried
    /// (steps 9–15).
    #[inline]
    pub fn evaluate_with(&self, src: IpAddr, app: &AppView<'_>) -> Decision {
        let by_source = self.evaluate_source(src);
        if by_source != Decision::DEFAULT || app.is_empty() {
            return by_source;
        }
        self.evaluate_app(app)
    }

    /// Steps 9–15 only.
    pub fn evaluate_app(&self, app: &AppView<'_>) -> Decision {
        let mut any_name = false;
        let mut all_allowed = true;
        for name in app.names() {
            any_name = true;
            if !self.domain_allow.contains(name) {
                all_allowed = false;
                break;
            }
        }
        if any_name && all_allowed {
            return Decision::DOMAIN_WHITELISTED;
        }
        // Per name: an allowlisted name is exempt, every other one is checked. List order
        // decides the label when names hit different lists.
        let lists: [(&DomainSet, Decision); 3] = [
            (&self.domain_block, Decision::DOMAIN_BLACKLISTED),
            (&self.stevenblack, Decision::STEVENBLACK),
            (&self.someonewhocares, Decision::SOMEONEWHOCARES),
        ];
        if any_name {
            for (set, decision) in lists {
                if set.is_empty() {
                    continue;
                }
                if app
                    .names()
                    .any(|n| set.contains(n) && !self.domain_allow.contains(n))
                {
                    return decision;
                }
            }
        }
        if let Some(ja3) = app.ja3 {
            if self.sslbl.contains(&ja3) {
                return Decision::SSLBL;
            }
            if self.ja3_block.contains(&ja3) {
                return Decision::JA3_BLACKLISTED;
            }
        }
        if let Some(ja4) = app.ja4
            && self.ja4_block.contains(&ja4)
        {
            return Decision::JA4_BLACKLISTED;
        }
        Decision::DEFAULT
    }

    /// True when steps 1–8 decide every address the same under `self` and `other` because
    /// they share every list those steps read (the same `Arc`s: only payload lists changed).
    /// Cheap; false does not mean a decision changed, only that it may have.
    pub fn same_source_policy(&self, other: &RuleSet) -> bool {
        Arc::ptr_eq(&self.allow, &other.allow)
            && Arc::ptr_eq(&self.block, &other.block)
            && Arc::ptr_eq(&self.firehol, &other.firehol)
            && Arc::ptr_eq(&self.spamhaus, &other.spamhaus)
            && Arc::ptr_eq(&self.feodo, &other.feodo)
            && Arc::ptr_eq(&self.countries, &other.countries)
            && Arc::ptr_eq(&self.asn_block, &other.asn_block)
            && Arc::ptr_eq(&self.asn_drop, &other.asn_drop)
            && Arc::ptr_eq(&self.asn_table, &other.asn_table)
    }

    /// Run the chain for a parsed packet.
    #[inline]
    pub fn evaluate(&self, packet: &PacketMeta) -> Decision {
        self.evaluate_source(packet.src)
    }

    /// Run the chain for a source address (steps 1–8, without the rate limiter: what the
    /// policy says about an address, as `check`, explain and revocation need it).
    #[inline]
    pub fn evaluate_source(&self, src: IpAddr) -> Decision {
        self.evaluate_source_limited(src, |_| true)
    }

    /// Steps 1–8 with the rate limiter between the allowlist and the blocklists: `within_rate`
    /// is asked only for a source that is not allowlisted, and a `false` drops the packet
    /// (`rate` / `Limiter`). Every packet that reaches the queue and is not allowlisted costs
    /// a token, also one a blocklist would drop (as the original: the limiter comes first).
    #[inline]
    pub fn evaluate_source_limited(
        &self,
        src: IpAddr,
        within_rate: impl FnOnce(IpAddr) -> bool,
    ) -> Decision {
        if self.allow.contains(src) {
            return Decision::WHITELISTED;
        }
        if !within_rate(src) {
            return Decision::RATE_LIMITED;
        }
        if self.block.contains(src) {
            return Decision::BLACKLISTED;
        }
        if self.firehol.contains(src) {
            return Decision::FIREHOL;
        }
        if self.spamhaus.contains(src) {
            return Decision::SPAMHAUS;
        }
        if self.feodo.contains(src) {
            return Decision::FEODO;
        }
        if self.origin_stage
            && let Some(origin) = self.asn_table.lookup(src)
        {
            if let Some(country) = origin.country
                && self.countries.contains(country)
            {
                return Decision::COUNTRY;
            }
            if let Some(asn) = origin.asn {
                if self.asn_drop.contains(asn) {
                    return Decision::ASN_DROP;
                }
                if self.asn_block.contains(asn) {
                    return Decision::ASN_BLACKLISTED;
                }
            }
        }
        Decision::DEFAULT
    }
}

/// Read a raw IP packet's source and run steps 1–8; a packet without a source address gets
/// the `unparsable` policy. Only the fixed IP header is read ([`packet::parse_header`]). The
/// payload steps need [`crate::inspect::Inspector::inspect`], which the worker and replay use.
#[inline]
pub fn decide(rules: &RuleSet, packet: &[u8], unparsable: UnparsableVerdict) -> Decision {
    match packet::parse_header(packet) {
        Ok(meta) => rules.evaluate(&meta),
        Err(_) => Decision::unparsable(unparsable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tests::{A4, A6, B4, B6, TCP, UDP, tcp, udp, v4, v6};
    use meds_proto::{Asn, Cidr, CountryCode, IpAsn};
    use proptest::prelude::*;

    fn prefix(s: &str) -> Entry {
        Entry::Prefix(s.parse::<Cidr>().unwrap())
    }

    fn prefixes(list: &[&str]) -> Vec<Entry> {
        list.iter().map(|s| prefix(s)).collect()
    }

    fn asn(n: u32) -> Entry {
        Entry::Asn(Asn::new(n).unwrap())
    }

    fn country(code: &str) -> Entry {
        Entry::Country(code.parse::<CountryCode>().unwrap())
    }

    fn row(net: &str, asn_n: u32, cc: &str) -> Entry {
        Entry::IpAsn(IpAsn {
            prefix: net.parse().unwrap(),
            asn: Asn::new(asn_n).ok(),
            country: CountryCode::from_feed(cc).ok(),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn rules_from(generation: u64, lists: &[(ListKind, Vec<Entry>)]) -> RuleSet {
        lists
            .iter()
            .fold(RuleSet::empty().with_generation(generation), |r, (k, e)| {
                r.with_list(*k, e)
            })
    }

    fn ip_lists(allow: &[&str], block: &[&str]) -> RuleSet {
        rules_from(
            1,
            &[
                (ListKind::IpAllow, prefixes(allow)),
                (ListKind::IpBlock, prefixes(block)),
            ],
        )
    }

    #[test]
    fn the_rate_limiter_sits_between_allowlist_and_blocklists() {
        let rules = ip_lists(&["198.51.100.0/24"], &["203.0.113.0/24"]);
        let allowed: IpAddr = "198.51.100.1".parse().unwrap();
        let blocked: IpAddr = "203.0.113.1".parse().unwrap();
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        let asked = std::cell::RefCell::new(Vec::new());
        let ask = |within: bool| {
            let asked = &asked;
            move |ip: IpAddr| {
                asked.borrow_mut().push(ip);
                within
            }
        };
        // The allowlist wins without costing a token.
        assert_eq!(
            rules.evaluate_source_limited(allowed, ask(false)),
            Decision::WHITELISTED
        );
        // Over the rate: dropped by the limiter, before the blocklist is consulted.
        assert_eq!(
            rules.evaluate_source_limited(blocked, ask(false)),
            Decision::RATE_LIMITED
        );
        assert_eq!(
            rules.evaluate_source_limited(other, ask(false)),
            Decision::RATE_LIMITED
        );
        // Within the rate: the chain goes on as without a limiter.
        assert_eq!(
            rules.evaluate_source_limited(blocked, ask(true)),
            Decision::BLACKLISTED
        );
        assert_eq!(
            rules.evaluate_source_limited(other, ask(true)),
            Decision::DEFAULT
        );
        assert_eq!(*asked.borrow(), [blocked, other, blocked, other]);
        assert_eq!(
            (
                Decision::RATE_LIMITED.filter.label(),
                Decision::RATE_LIMITED.reason.label()
            ),
            ("rate", "Limiter")
        );
    }

    #[test]
    fn same_source_policy_compares_the_source_lists_only() {
        let base = ip_lists(&[], &["203.0.113.0/24"]);
        let names = base.clone().with_list(
            ListKind::DomainBlock,
            &[Entry::Domain(
                meds_proto::DomainName::parse_user("a.example").unwrap(),
            )],
        );
        assert!(base.same_source_policy(&names));
        let more = base
            .clone()
            .with_list(ListKind::IpBlock, &[prefix("192.0.2.0/24")]);
        assert!(!base.same_source_policy(&more));
    }

    #[test]
    fn labels() {
        let verdicts: Vec<_> = Verdict::ALL.iter().map(|v| v.label()).collect();
        assert_eq!(verdicts, ["accept", "drop"]);
        let filters: Vec<_> = Filter::ALL.iter().map(|f| f.label()).collect();
        assert_eq!(
            filters,
            ["empty", "ip", "geo", "asn", "domain", "ja3", "ja4", "rate"]
        );
        let reasons: Vec<_> = Reason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            reasons,
            [
                "default",
                "unparsable",
                "WhiteList",
                "BlackList",
                "FireHOL",
                "Spamhaus",
                "Abuse",
                "IPLocate",
                "StevenBlack",
                "SomeoneWhoCares",
                "uninspectable",
                "Limiter",
            ]
        );
        for (i, v) in Verdict::ALL.iter().enumerate() {
            assert_eq!(v.index(), i);
        }
        for (i, f) in Filter::ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
        }
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn decision_of_each_list() {
        let label = |d: Decision| {
            format!(
                "{}/{}/{}",
                d.verdict.label(),
                d.filter.label(),
                d.reason.label()
            )
        };
        let want = [
            (ListKind::IpAllow, Some("accept/ip/WhiteList")),
            (ListKind::IpBlock, Some("drop/ip/BlackList")),
            (ListKind::FeedFireHol, Some("drop/ip/FireHOL")),
            (ListKind::FeedSpamhaus, Some("drop/ip/Spamhaus")),
            (ListKind::FeedFeodo, Some("drop/ip/Abuse")),
            (ListKind::CountryBlock, Some("drop/geo/IPLocate")),
            (ListKind::AsnBlock, Some("drop/asn/BlackList")),
            (ListKind::FeedAsnDrop, Some("drop/asn/Spamhaus")),
            (ListKind::IpAsn, None),
        ];
        for (kind, label_want) in want {
            assert_eq!(
                Decision::on_match(kind).map(label).as_deref(),
                label_want,
                "{kind}"
            );
        }
        assert_eq!(label(Decision::DEFAULT), "accept/empty/default");
        assert_eq!(
            label(Decision::unparsable(UnparsableVerdict::Drop)),
            "drop/empty/unparsable"
        );
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RuleSet>();
    }

    /// Every list filled, IPv4 and IPv6, with overlaps that exercise the order.
    fn full_rules() -> RuleSet {
        rules_from(
            9,
            &[
                (
                    ListKind::IpAllow,
                    prefixes(&[
                        "203.0.113.7",
                        "8.8.8.8",
                        "100.64.0.1",
                        "2001:db8::7",
                        "2001:db8:100::1",
                    ]),
                ),
                (
                    ListKind::IpBlock,
                    prefixes(&[
                        "203.0.113.0/24",
                        "198.51.100.128/25",
                        "100.65.1.0/24",
                        "2001:db8::/48",
                    ]),
                ),
                (
                    ListKind::FeedFireHol,
                    prefixes(&["198.51.100.0/24", "100.64.2.0/24", "2001:db8:f::/48"]),
                ),
                (
                    ListKind::FeedSpamhaus,
                    prefixes(&["192.0.2.0/25", "198.51.100.0/23", "2001:db8:5::/48"]),
                ),
                (
                    ListKind::FeedFeodo,
                    prefixes(&["8.8.8.8", "192.0.2.0/24", "2001:db8:fe::1"]),
                ),
                (ListKind::CountryBlock, vec![country("ru"), country("kp")]),
                (ListKind::FeedAsnDrop, vec![asn(64497)]),
                (ListKind::AsnBlock, vec![asn(64497), asn(64498)]),
                (
                    ListKind::IpAsn,
                    vec![
                        row("100.64.0.0/16", 64496, "ru"),
                        row("100.65.0.0/16", 64497, "de"),
                        row("100.66.0.0/16", 64498, "de"),
                        row("100.67.0.0/16", 64499, "de"),
                        row("100.68.0.0/16", 0, "kp"),
                        row("100.69.0.0/16", 64497, ""),
                        row("100.70.0.0/16", 64497, "ru"),
                        row("100.71.0.0/16", 0, "de"),
                        row("100.67.128.0/17", 64498, "ru"),
                        row("2001:db8:100::/48", 64496, "ru"),
                        row("2001:db8:101::/48", 64497, "de"),
                        row("2001:db8:102::/48", 64498, "de"),
                        row("2001:db8:103::/48", 64499, "de"),
                    ],
                ),
            ],
        )
    }

    #[test]
    fn chain_order_and_labels() {
        use Decision as D;
        let rules = full_rules();
        assert_eq!(rules.generation(), 9);
        let cases: &[(&str, &str, Decision)] = &[
            // allowlist beats every list, feeds included (a Feodo list once held 8.8.8.8)
            ("allow beats Feodo", "8.8.8.8", D::WHITELISTED),
            ("allow beats blocklist", "203.0.113.7", D::WHITELISTED),
            ("allow beats country", "100.64.0.1", D::WHITELISTED),
            ("allow v6", "2001:db8::7", D::WHITELISTED),
            ("allow v6 beats country", "2001:db8:100::1", D::WHITELISTED),
            ("Feodo neighbour of 8.8.8.8", "8.8.8.9", D::DEFAULT),
            // user blocklist, both edges
            ("block first", "203.0.113.0", D::BLACKLISTED),
            ("block last", "203.0.113.255", D::BLACKLISTED),
            ("block v6 first", "2001:db8::", D::BLACKLISTED),
            (
                "block v6 last",
                "2001:db8:0:ffff:ffff:ffff:ffff:ffff",
                D::BLACKLISTED,
            ),
            ("below block", "203.0.112.255", D::DEFAULT),
            ("above block", "203.0.114.0", D::DEFAULT),
            // user blocklist before the feeds (also in FireHOL and Spamhaus)
            ("block before FireHOL", "198.51.100.128", D::BLACKLISTED),
            (
                "block before FireHOL, last",
                "198.51.100.255",
                D::BLACKLISTED,
            ),
            // user blocklist before ASN-DROP
            ("block before ASN-DROP", "100.65.1.1", D::BLACKLISTED),
            // FireHOL, before Spamhaus
            ("FireHOL first", "198.51.100.0", D::FIREHOL),
            ("FireHOL last before block", "198.51.100.127", D::FIREHOL),
            ("FireHOL v6 first", "2001:db8:f::", D::FIREHOL),
            (
                "FireHOL v6 last",
                "2001:db8:f:ffff:ffff:ffff:ffff:ffff",
                D::FIREHOL,
            ),
            // FireHOL before country
            ("FireHOL before country", "100.64.2.9", D::FIREHOL),
            // Spamhaus, before Feodo
            ("Spamhaus after FireHOL", "198.51.101.0", D::SPAMHAUS),
            ("Spamhaus last", "198.51.101.255", D::SPAMHAUS),
            ("Spamhaus before Feodo", "192.0.2.0", D::SPAMHAUS),
            ("Spamhaus before Feodo, last", "192.0.2.127", D::SPAMHAUS),
            ("Spamhaus v6", "2001:db8:5::1", D::SPAMHAUS),
            ("after Spamhaus", "198.51.102.0", D::DEFAULT),
            // Feodo
            ("Feodo first", "192.0.2.128", D::FEODO),
            ("Feodo last", "192.0.2.255", D::FEODO),
            ("Feodo v6", "2001:db8:fe::1", D::FEODO),
            ("Feodo v6 neighbour", "2001:db8:fe::2", D::DEFAULT),
            // country of the source
            ("country first", "100.64.0.0", D::COUNTRY),
            ("country last", "100.64.255.255", D::COUNTRY),
            ("country without ASN", "100.68.0.0", D::COUNTRY),
            ("country before ASN-DROP", "100.70.3.4", D::COUNTRY),
            ("country v6 first", "2001:db8:100::", D::COUNTRY),
            (
                "country v6 last",
                "2001:db8:100:ffff:ffff:ffff:ffff:ffff",
                D::COUNTRY,
            ),
            // a more specific row changes the country (longest prefix match)
            ("specific row: ru", "100.67.128.0", D::COUNTRY),
            ("specific row: ru, last", "100.67.255.255", D::COUNTRY),
            ("wider row: de", "100.67.127.255", D::DEFAULT),
            // ASN-DROP before the user ASN blocklist (64497 is in both)
            ("ASN-DROP first", "100.65.0.0", D::ASN_DROP),
            ("ASN-DROP last", "100.65.255.255", D::ASN_DROP),
            ("ASN-DROP without country", "100.69.0.1", D::ASN_DROP),
            ("ASN-DROP v6", "2001:db8:101::1", D::ASN_DROP),
            // user ASN blocklist
            ("ASN block first", "100.66.0.0", D::ASN_BLACKLISTED),
            ("ASN block last", "100.66.255.255", D::ASN_BLACKLISTED),
            ("ASN block v6", "2001:db8:102::ffff", D::ASN_BLACKLISTED),
            // known origin, nothing blocked
            ("clean ASN", "100.67.0.0", D::DEFAULT),
            ("clean ASN v6", "2001:db8:103::1", D::DEFAULT),
            ("no ASN, clean country", "100.71.0.1", D::DEFAULT),
            // not in the table: steps 6-8 pass
            ("unknown origin below", "100.63.255.255", D::DEFAULT),
            ("unknown origin above", "100.72.0.0", D::DEFAULT),
            ("unknown origin v6", "2001:db8:104::", D::DEFAULT),
        ];
        for (name, addr, want) in cases {
            assert_eq!(rules.evaluate_source(ip(addr)), *want, "{name}: {addr}");
        }
    }

    #[test]
    fn origin_stage_needs_the_table_and_a_list() {
        let table = vec![row("100.64.0.0/16", 64496, "ru")];
        let probe = ip("100.64.1.1");
        type Lists = Vec<(ListKind, Vec<Entry>)>;
        let cases: [(&str, Lists, Decision); 5] = [
            ("nothing", vec![], Decision::DEFAULT),
            (
                "table only",
                vec![(ListKind::IpAsn, table.clone())],
                Decision::DEFAULT,
            ),
            (
                "lists without table",
                vec![
                    (ListKind::CountryBlock, vec![country("ru")]),
                    (ListKind::AsnBlock, vec![asn(64496)]),
                    (ListKind::FeedAsnDrop, vec![asn(64496)]),
                ],
                Decision::DEFAULT,
            ),
            (
                "table and user ASN list",
                vec![
                    (ListKind::IpAsn, table.clone()),
                    (ListKind::AsnBlock, vec![asn(64496)]),
                ],
                Decision::ASN_BLACKLISTED,
            ),
            (
                "table and country",
                vec![
                    (ListKind::CountryBlock, vec![country("ru")]),
                    (ListKind::IpAsn, table.clone()),
                ],
                Decision::COUNTRY,
            ),
        ];
        for (name, lists, want) in cases {
            assert_eq!(rules_from(1, &lists).evaluate_source(probe), want, "{name}");
        }
        // Emptying the last list turns the stage off again.
        let off = rules_from(
            1,
            &[
                (ListKind::IpAsn, table.clone()),
                (ListKind::CountryBlock, vec![country("ru")]),
                (ListKind::CountryBlock, vec![]),
            ],
        );
        assert!(!off.origin_stage);
        assert_eq!(off.evaluate_source(probe), Decision::DEFAULT);
    }

    #[test]
    fn with_list_shares_the_other_components_and_ignores_wrong_kinds() {
        let before = full_rules();
        let after = before
            .clone()
            .with_list(ListKind::IpBlock, &prefixes(&["192.0.2.1"]))
            .with_generation(10);
        assert_eq!(after.generation(), 10);
        for kind in ListKind::ALL {
            assert_eq!(
                after.shares_list(&before, kind),
                kind != ListKind::IpBlock,
                "{kind}"
            );
        }
        assert_eq!(after.list_len(ListKind::IpBlock), 1);
        // an entry of the wrong kind is dropped, not misread
        let mixed = RuleSet::empty().with_list(
            ListKind::IpBlock,
            &[prefix("192.0.2.0/24"), asn(64496), country("fr")],
        );
        assert_eq!(mixed.list_len(ListKind::IpBlock), 1);
        let lens: Vec<usize> = ListKind::ALL.iter().map(|k| before.list_len(*k)).collect();
        assert_eq!(lens, [5, 4, 3, 3, 3, 2, 2, 1, 13, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(before.allow().len(), 5);
        assert_eq!(before.block().len(), 4);
        assert_eq!(before.firehol().len(), 3);
        assert_eq!(before.spamhaus().len(), 3);
        assert_eq!(before.feodo().len(), 3);
        assert_eq!(before.countries().len(), 2);
        assert_eq!(before.asn_block().len(), 2);
        assert_eq!(before.asn_drop().len(), 1);
        assert_eq!(before.asn_table().len(), 13);
    }

    #[test]
    fn packets_meet_the_chain_by_source() {
        let rules = ip_lists(
            &["203.0.113.7/32", "2001:db8::7/128"],
            &["203.0.113.0/24", "2001:db8::/32"],
        );
        let v4_from = |src: [u8; 4]| v4(UDP, src, B4, &udp(1, 53, b""));
        let v6_from = |src: [u8; 16]| v6(TCP, src, B6, &tcp(1, 443));
        let mut other6 = A6;
        other6[1] = 0x02; // 2002:db8::7, outside 2001:db8::/32
        let cases: [(&str, Vec<u8>, Decision); 8] = [
            (
                "allowed v4 also in blocklist",
                v4_from(A4),
                Decision::WHITELISTED,
            ),
            (
                "blocked v4 first address",
                v4_from([203, 0, 113, 0]),
                Decision::BLACKLISTED,
            ),
            (
                "blocked v4 last address",
                v4_from([203, 0, 113, 255]),
                Decision::BLACKLISTED,
            ),
            (
                "v4 just outside",
                v4_from([203, 0, 114, 0]),
                Decision::DEFAULT,
            ),
            ("allowed v6", v6_from(A6), Decision::WHITELISTED),
            ("blocked v6", v6_from(B6), Decision::BLACKLISTED),
            ("v6 outside", v6_from(other6), Decision::DEFAULT),
            // the destination never matters
            (
                "dst in blocklist",
                v4(UDP, [198, 51, 100, 1], A4, &[]),
                Decision::DEFAULT,
            ),
        ];
        for (name, packet, want) in cases {
            assert_eq!(
                decide(&rules, &packet, UnparsableVerdict::Drop),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn garbage_transport_still_meets_the_blocklist() {
        let rules = ip_lists(&[], &["203.0.113.0/24"]);
        let mut packet = v4(TCP, A4, B4, &[0xff; 3]);
        packet[0] = 0x4f; // options claimed past the end
        assert_eq!(
            decide(&rules, &packet, UnparsableVerdict::Accept),
            Decision::BLACKLISTED
        );
    }

    #[test]
    fn unparsable_follows_policy() {
        let rules = ip_lists(&[], &["0.0.0.0/0", "::/0"]);
        for input in [&[][..], &[0x45; 19], &[0x70; 60], &[0x60; 39]] {
            for policy in [UnparsableVerdict::Accept, UnparsableVerdict::Drop] {
                let d = decide(&rules, input, policy);
                assert_eq!(d.verdict, policy.verdict(), "{input:?}");
                assert_eq!(d.filter, Filter::Empty);
                assert_eq!(d.reason, Reason::Unparsable);
            }
        }
    }

    #[test]
    fn empty_rules_accept_by_default() {
        let rules = RuleSet::empty();
        assert_eq!(rules.generation(), 0);
        assert!(ListKind::ALL.iter().all(|k| rules.list_len(*k) == 0));
        let packet = v4(UDP, A4, B4, &udp(1, 2, b""));
        assert_eq!(
            decide(&rules, &packet, UnparsableVerdict::Drop),
            Decision::DEFAULT
        );
    }

    proptest! {
        #[test]
        fn decide_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let rules = full_rules();
            let d = decide(&rules, &bytes, UnparsableVerdict::Accept);
            let parsed = packet::parse(&bytes);
            prop_assert_eq!(d.reason == Reason::Unparsable, parsed.is_err());
            // Reading the fixed header only decides exactly like the full parse.
            if let Ok(meta) = parsed {
                prop_assert_eq!(d, rules.evaluate(&meta));
                prop_assert_eq!(packet::parse_header(&bytes).map(|m| m.src), Ok(meta.src));
            }
        }
    }
}
