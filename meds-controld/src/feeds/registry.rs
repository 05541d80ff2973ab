//! `feeds::registry`: the feeds Meds knows, by name: the list each one fills, where it is
//! published, and which parser reads it.
//!
//! Several feeds may fill one list (Spamhaus DROP is published as an IPv4 and an IPv6 file);
//! the list then holds the union of its enabled feeds' last good copies.
//!
//! Must not: do I/O. This is a table and the glue from a parser's typed output to [`Entry`].

use std::collections::BTreeSet;

use meds_proto::{Entry, ListKind};

use super::parse::{self, Limits, ParseError, Report};

/// How a feed's body is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// FireHOL `*.netset`: one IP or CIDR per line.
    FireHol,
    /// Spamhaus DROP, text or NDJSON, IPv4 or IPv6.
    SpamhausDrop,
    /// abuse.ch Feodo Tracker IP blocklist.
    Feodo,
    /// Spamhaus ASN-DROP (NDJSON).
    AsnDrop,
    /// IPLocate ip-to-asn, zipped CSV.
    IpLocateZip,
    /// A hosts-file blocklist (`0.0.0.0 name …`): StevenBlack, someonewhocares.org.
    Hosts,
    /// abuse.ch SSLBL `ja3_fingerprints.csv`.
    SslblJa3,
}

/// A parsed feed body, as list entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedFeed {
    pub entries: BTreeSet<Entry>,
    pub report: Report,
}

impl Format {
    /// Parse `body`. Total: any input gives entries or a [`ParseError`], never a panic.
    pub fn parse(self, body: &[u8], limits: &Limits) -> Result<ParsedFeed, ParseError> {
        fn into_feed<T>(parsed: parse::Parsed<T>, entry: impl Fn(T) -> Entry) -> ParsedFeed {
            ParsedFeed {
                entries: parsed.entries.into_iter().map(entry).collect(),
                report: parsed.report,
            }
        }
        Ok(match self {
            Format::FireHol => into_feed(parse::firehol(body, limits)?, Entry::Prefix),
            Format::SpamhausDrop => into_feed(parse::spamhaus_drop(body, limits)?, Entry::Prefix),
            Format::Feodo => into_feed(parse::feodo(body, limits)?, Entry::Prefix),
            Format::AsnDrop => into_feed(parse::asn_drop(body, limits)?, Entry::Asn),
            // The published file is a ZIP; a mirror may serve the CSV inside it as is.
            Format::IpLocateZip if body.starts_with(b"PK\x03\x04") => {
                into_feed(parse::iplocate_zip(body, limits)?, Entry::IpAsn)
            }
            Format::IpLocateZip => into_feed(parse::iplocate_csv(body, limits)?, Entry::IpAsn),
            Format::Hosts => into_feed(parse::hosts(body, limits)?, Entry::Domain),
            Format::SslblJa3 => into_feed(parse::ja3_sslbl(body, limits)?, Entry::Ja3),
        })
    }
}

/// One feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedSpec {
    /// Stable name, used in flags, the API, the store and logs.
    pub name: &'static str,
    /// The list it fills.
    pub list: ListKind,
    /// Where the original Meds (and we, by default) download it.
    pub default_url: &'static str,
    pub format: Format,
    /// Fetched unless disabled by flag or at run time.
    pub enabled_by_default: bool,
}

/// Every feed, in chain order of their lists.
pub const FEEDS: &[FeedSpec] = &[
    FeedSpec {
        name: "firehol_level1",
        list: ListKind::FeedFireHol,
        default_url: "https://raw.githubusercontent.com/firehol/blocklist-ipsets/master/firehol_level1.netset",
        format: Format::FireHol,
        enabled_by_default: true,
    },
    FeedSpec {
        name: "spamhaus_drop",
        list: ListKind::FeedSpamhaus,
        default_url: "https://www.spamhaus.org/drop/drop.txt",
        format: Format::SpamhausDrop,
        enabled_by_default: true,
    },
    FeedSpec {
        name: "spamhaus_drop_v6",
        list: ListKind::FeedSpamhaus,
        default_url: "https://www.spamhaus.org/drop/dropv6.txt",
        format: Format::SpamhausDrop,
        enabled_by_default: true,
    },
    FeedSpec {
        name: "feodo",
        list: ListKind::FeedFeodo,
        default_url: "https://feodotracker.abuse.ch/downloads/ipblocklist.txt",
        format: Format::Feodo,
        enabled_by_default: true,
    },
    FeedSpec {
        name: "spamhaus_asndrop",
        list: ListKind::FeedAsnDrop,
        default_url: "https://www.spamhaus.org/drop/asndrop.json",
        format: Format::AsnDrop,
        enabled_by_default: true,
    },
    FeedSpec {
        name: "iplocate",
        list: ListKind::IpAsn,
        default_url: "https://github.com/iplocate/ip-address-databases/raw/refs/heads/main/ip-to-asn/ip-to-asn.csv.zip",
        format: Format::IpLocateZip,
        enabled_by_default: true,
    },
    FeedSpec {
        name: "stevenblack",
        list: ListKind::FeedStevenBlack,
        default_url: "https://raw.githubusercontent.com/StevenBlack/hosts/master/hosts",
        format: Format::Hosts,
        enabled_by_default: true,
    },
    // The original fetched `https://someonewhocares.org/hosts/hosts` (the 127.0.0.1 edition).
    // The 0.0.0.0 edition below lists the same names (the parser ignores the address), is the
    // one the maintainer recommends for speed, and is the edition our test fixture was taken
    // from, so what we fetch is exactly the format we test.
    FeedSpec {
        name: "someonewhocares",
        list: ListKind::FeedSomeoneWhoCares,
        default_url: "https://someonewhocares.org/hosts/zero/hosts",
        format: Format::Hosts,
        enabled_by_default: true,
    },
    FeedSpec {
        name: "sslbl_ja3",
        list: ListKind::FeedSslblJa3,
        default_url: "https://sslbl.abuse.ch/blacklist/ja3_fingerprints.csv",
        format: Format::SslblJa3,
        enabled_by_default: true,
    },
];

/// The word that stands for every feed in `--disable-feed`.
pub const ALL: &str = "all";

/// The feed called `name`.
pub fn find(name: &str) -> Option<&'static FeedSpec> {
    FEEDS.iter().find(|f| f.name == name)
}

/// Every feed name, comma-separated (for error messages).
pub fn names() -> String {
    FEEDS.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
}

/// The feeds that fill `list`.
pub fn sources(list: ListKind) -> impl Iterator<Item = &'static FeedSpec> {
    FEEDS.iter().filter(move |f| f.list == list)
}

/// True when `list` is filled by more than one feed (its feeds' entries must then be kept
/// apart to form the union).
pub fn is_shared(list: ListKind) -> bool {
    sources(list).nth(1).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_lists_are_feeds_and_urls_are_https() {
        let mut names = BTreeSet::new();
        for feed in FEEDS {
            assert!(names.insert(feed.name), "duplicate {}", feed.name);
            assert!(feed.list.is_feed(), "{}", feed.name);
            assert!(feed.default_url.starts_with("https://"), "{}", feed.name);
            assert_eq!(find(feed.name), Some(feed));
        }
        assert!(find(ALL).is_none());
        assert!(find("nope").is_none());
        // Every feed list has a source.
        for list in meds_proto::ListKind::ALL
            .into_iter()
            .filter(|l| l.is_feed())
        {
            assert!(sources(list).next().is_some(), "{list}");
        }
        assert!(is_shared(ListKind::FeedSpamhaus));
        for list in [
            ListKind::FeedFireHol,
            ListKind::FeedStevenBlack,
            ListKind::FeedSomeoneWhoCares,
            ListKind::FeedSslblJa3,
        ] {
            assert!(!is_shared(list), "{list}");
        }
    }

    #[test]
    fn formats_give_entries_of_their_lists_kind() {
        let cases: [(Format, &[u8], ListKind); 7] = [
            (Format::FireHol, b"203.0.113.0/24\n", ListKind::FeedFireHol),
            (
                Format::SpamhausDrop,
                b"2001:db8::/32 ; SBL1\n",
                ListKind::FeedSpamhaus,
            ),
            (Format::Feodo, b"203.0.113.7\r\n", ListKind::FeedFeodo),
            (Format::AsnDrop, b"{\"asn\":64496}\n", ListKind::FeedAsnDrop),
            (
                Format::Hosts,
                b"127.0.0.1 localhost\n0.0.0.0 ads.example # x\n",
                ListKind::FeedStevenBlack,
            ),
            (
                Format::Hosts,
                b"0.0.0.0\tads.example\n",
                ListKind::FeedSomeoneWhoCares,
            ),
            (
                Format::SslblJa3,
                b"# ja3_md5,Firstseen,Lastseen,Listingreason\nb386946a5a44d1ddcc843bc75336dfce,2017-07-14 18:08:15,2019-07-27 20:42:54,Dridex\n",
                ListKind::FeedSslblJa3,
            ),
        ];
        for (format, body, list) in cases {
            let parsed = format.parse(body, &Limits::default()).unwrap();
            assert_eq!(parsed.entries.len(), 1, "{format:?}");
            assert!(
                parsed.entries.iter().all(|e| e.kind() == list.entry_kind()),
                "{format:?}"
            );
        }
        assert!(Format::FireHol.parse(b"", &Limits::default()).is_err());
        assert!(
            Format::IpLocateZip
                .parse(b"not a zip", &Limits::default())
                .is_err()
        );
    }
}
