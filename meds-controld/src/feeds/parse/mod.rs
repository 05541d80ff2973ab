//! `feeds::parse`: pure parsers for the threat-feed formats the controller downloads.
//!
//! Each parser is a total function from a feed body (bytes, as downloaded) to validated entries
//! ([`Cidr`], [`Asn`], [`IpAsn`]) plus a [`Report`] of what every line turned out to be:
//!
//! | function | format |
//! |---|---|
//! | [`firehol`] | one IP or CIDR per line, `#` comments (FireHOL `*.netset`) |
//! | [`spamhaus_drop`] | Spamhaus DROP, text (`CIDR ; SBLnnn`, `;` comments) or NDJSON (`{"cidr":…}`), v4 and v6 |
//! | [`feodo`] | abuse.ch Feodo Tracker: one IP per line, or the CSV variant (column `dst_ip`) |
//! | [`asn_drop`] | Spamhaus ASN-DROP, NDJSON (`{"asn":N,…}`) or text (`AS123 ; …`) |
//! | [`iplocate_csv`], [`iplocate_zip`] | IPLocate ip-to-asn: `network,asn,country_code,…`, bare or zipped |
//! | [`iptoasn_tsv`] | iptoasn.com `ip2asn-v4/v6.tsv`: `start\tend\tAS\tcountry\tdescription` ranges |
//! | [`ip_location_db_asn_csv`] | sapics/ip-location-db `asn-ipv4/6.csv`: `start,end,AS,name` ranges |
//! | [`hosts`] | hosts files (StevenBlack, someonewhocares): `0.0.0.0 name …` → [`DomainName`](meds_proto::DomainName) |
//! | [`ja3_sslbl`] | abuse.ch SSLBL `ja3_fingerprints.csv` → [`Ja3Hash`](meds_proto::Ja3Hash) |
//!
//! Rules shared by every format (the original, upstream W9, stored error pages and truncated
//! lists as successful updates; these rules are what makes a bad download a failed update):
//! * Every line is exactly one of: accepted (it gave entries), a comment (comment, blank line,
//!   header, metadata record), skipped (well formed but carries nothing to keep, e.g. an
//!   unrouted range), or rejected (counted; the first [`MAX_KEPT_REJECTS`] are kept with their
//!   line number and a short reason, never the whole line).
//! * A UTF-8 byte-order mark is stripped, CRLF is accepted, values are trimmed, and inline
//!   comments after a value are ignored (`1.2.3.4 # note`, `1.2.3.0/24 ; SBL123`).
//! * The whole body is refused ([`ParseError`]) when it is over [`Limits::max_body_bytes`], has
//!   a line over [`Limits::max_line_bytes`] (never truncated silently), has more than
//!   [`Limits::max_entries`] distinct entries, contains a NUL byte (binary), is an HTML or XML
//!   page (an error page served with a success status), or yields no entry at all.
//! * Entries come out deduplicated and sorted. Duplicates are detected by key (the prefix for
//!   [`IpAsn`] rows: the first line that gave a prefix wins) and counted in
//!   [`Report::duplicates`].
//!
//! Must not: do I/O, allocate without a bound, or panic on any input. Besides the body (and,
//! for a ZIP, one unpacked member at a time), memory is bounded by `max_entries`: entries are
//! compacted (sorted, deduplicated) whenever 1.5 × `max_entries` have been collected, so the
//! buffer never holds more than that (its capacity at most twice that).

mod asn_drop;
mod csv;
mod feodo;
mod firehol;
mod hosts;
mod iplocate;
mod iptoasn;
mod ja3;
mod range;
mod spamhaus;

use std::fmt;

use meds_proto::{Asn, Cidr, IpAsn};

pub use asn_drop::asn_drop;
pub use csv::{CsvError, split_csv};
pub use feodo::feodo;
pub use firehol::firehol;
pub use hosts::hosts;
pub use iplocate::{iplocate_csv, iplocate_zip};
pub use iptoasn::{ip_location_db_asn_csv, iptoasn_tsv};
pub use ja3::ja3_sslbl;
pub use range::{RangeError, range_to_cidrs};
pub use spamhaus::spamhaus_drop;

/// How many rejected lines a [`Report`] keeps (the rest are only counted).
pub const MAX_KEPT_REJECTS: usize = 5;
/// Longest [`Reject::reason`], in characters; longer reasons are clipped and end with `…`.
pub const MAX_REASON_CHARS: usize = 120;

/// Bounds on what a parser accepts. Going over any of them refuses the whole body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body, in bytes. For a ZIP this bounds the packed body and, separately, the sum of
    /// the unpacked members.
    pub max_body_bytes: usize,
    /// Longest line, in bytes, not counting the line end.
    pub max_line_bytes: usize,
    /// Most distinct entries.
    pub max_entries: usize,
    /// Most members in a ZIP archive (directories included).
    pub max_zip_members: usize,
}

impl Default for Limits {
    /// 64 MiB body (and unpacked ZIP), 4096-byte lines, 5 000 000 entries, 16 ZIP members.
    fn default() -> Limits {
        Limits {
            max_body_bytes: 64 * 1024 * 1024,
            max_line_bytes: 4096,
            max_entries: 5_000_000,
            max_zip_members: 16,
        }
    }
}

/// A parsed feed: its entries (deduplicated, sorted) and what each line was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<T> {
    pub entries: Vec<T>,
    pub report: Report,
}

/// What the lines of a body turned out to be.
/// `lines == accepted + comments + skipped + rejected` always holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Lines seen (a final line without a line end counts; a final line end does not start one).
    pub lines: u64,
    /// Lines that gave one or more entries (a range line may give several).
    pub accepted: u64,
    /// Lines that could not be used.
    pub rejected: u64,
    /// Comments, blank lines, headers and metadata records.
    pub comments: u64,
    /// Well-formed lines that carry nothing to keep (an unrouted iptoasn range, AS 0).
    pub skipped: u64,
    /// Entries dropped because an earlier line already gave the same key.
    pub duplicates: u64,
    /// The first [`MAX_KEPT_REJECTS`] rejected lines.
    pub first_rejects: Vec<Reject>,
}

/// One rejected line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// 1-based line number (within the ZIP member for [`iplocate_zip`]).
    pub line: u64,
    /// Why, at most [`MAX_REASON_CHARS`] characters; quotes at most a clipped part of the line.
    pub reason: String,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lines: {} accepted, {} rejected, {} comments, {} skipped, {} duplicates",
            self.lines, self.accepted, self.rejected, self.comments, self.skipped, self.duplicates
        )?;
        if let Some(first) = self.first_rejects.first() {
            write!(f, "; first rejected line {}: {}", first.line, first.reason)?;
        }
        Ok(())
    }
}

/// Why a whole body was refused. The updater treats every one of these as a failed update and
/// keeps the previous list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("feed body is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("line {line} is longer than the limit of {limit} bytes")]
    LineTooLong { line: u64, limit: usize },
    #[error("feed has more than {limit} distinct entries")]
    TooManyEntries { limit: usize },
    #[error("feed body is binary, not text (NUL byte on line {line})")]
    Binary { line: u64 },
    #[error("feed body is an HTML or XML page (line {line}), probably an error page, not a feed")]
    Html { line: u64 },
    #[error("not a readable ZIP archive: {0}")]
    Zip(String),
    #[error("ZIP archive has {count} members, over the limit of {limit}")]
    TooManyMembers { count: usize, limit: usize },
    #[error(
        "ZIP member {member:?} unpacks to more than the limit of {limit} bytes (all members together)"
    )]
    UnpackedTooLarge { member: String, limit: usize },
    #[error("feed has no entries ({report})")]
    NoData { report: Report },
}

/// An entry type a feed yields, with the key that duplicates are detected by. The key is
/// borrowed, so an entry that owns its text (a [`DomainName`](meds_proto::DomainName)) is
/// never copied to be sorted or compared.
pub trait FeedEntry: Ord {
    type Key: Ord;
    fn key(&self) -> &Self::Key;
}

impl FeedEntry for Cidr {
    type Key = Cidr;
    fn key(&self) -> &Cidr {
        self
    }
}

impl FeedEntry for Asn {
    type Key = Asn;
    fn key(&self) -> &Asn {
        self
    }
}

impl FeedEntry for IpAsn {
    /// One row per prefix: a lookup table cannot hold two answers for the same prefix.
    type Key = Cidr;
    fn key(&self) -> &Cidr {
        &self.prefix
    }
}

/// What a format's line classifier made of one (trimmed, non-empty) line.
pub(crate) enum Line<T> {
    Comment,
    Skipped,
    Entry(T),
    Entries(Vec<T>),
    Rejected(String),
}

/// Accumulates entries and the report across one body (or several ZIP members).
pub(crate) struct Collector<T> {
    entries: Vec<T>,
    report: Report,
    max_entries: usize,
    compact_at: usize,
}

impl<T: FeedEntry> Collector<T> {
    pub(crate) fn new(limits: &Limits) -> Collector<T> {
        let max_entries = limits.max_entries;
        Collector {
            entries: Vec::new(),
            report: Report::default(),
            max_entries,
            compact_at: max_entries.saturating_add(max_entries / 2).max(1),
        }
    }

    fn push(&mut self, entry: T) -> Result<(), ParseError> {
        self.entries.push(entry);
        if self.entries.len() >= self.compact_at {
            self.compact()?;
        }
        Ok(())
    }

    /// Sort (stable, so the first line with a key wins), drop duplicate keys, check the limit.
    fn compact(&mut self) -> Result<(), ParseError> {
        let before = self.entries.len();
        self.entries.sort_by(|a, b| a.key().cmp(b.key()));
        self.entries
            .dedup_by(|later, earlier| later.key() == earlier.key());
        self.report.duplicates += (before - self.entries.len()) as u64;
        if self.entries.len() > self.max_entries {
            return Err(ParseError::TooManyEntries {
                limit: self.max_entries,
            });
        }
        Ok(())
    }

    fn reject(&mut self, line: u64, context: Option<&str>, reason: &str) {
        self.report.rejected += 1;
        if self.report.first_rejects.len() < MAX_KEPT_REJECTS {
            let reason = match context {
                Some(ctx) => clip(&format!("{ctx}: {reason}"), MAX_REASON_CHARS),
                None => clip(reason, MAX_REASON_CHARS),
            };
            self.report.first_rejects.push(Reject { line, reason });
        }
    }

    fn record(
        &mut self,
        line: u64,
        context: Option<&str>,
        what: Line<T>,
    ) -> Result<(), ParseError> {
        match what {
            Line::Comment => self.report.comments += 1,
            Line::Skipped => self.report.skipped += 1,
            Line::Entry(entry) => {
                self.report.accepted += 1;
                self.push(entry)?;
            }
            Line::Entries(entries) => {
                if entries.is_empty() {
                    self.report.skipped += 1;
                } else {
                    self.report.accepted += 1;
                    for entry in entries {
                        self.push(entry)?;
                    }
                }
            }
            Line::Rejected(reason) => self.reject(line, context, &reason),
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<Parsed<T>, ParseError> {
        self.compact()?;
        if self.entries.is_empty() {
            return Err(ParseError::NoData {
                report: self.report,
            });
        }
        self.entries.shrink_to_fit();
        Ok(Parsed {
            entries: self.entries,
            report: self.report,
        })
    }
}

/// Refuse a body over the size limit.
pub(crate) fn check_size(body: &[u8], limits: &Limits) -> Result<(), ParseError> {
    if body.len() > limits.max_body_bytes {
        return Err(ParseError::TooLarge {
            size: body.len(),
            limit: limits.max_body_bytes,
        });
    }
    Ok(())
}

/// Parse a whole text body with a line classifier.
pub(crate) fn parse_text<T: FeedEntry>(
    body: &[u8],
    limits: &Limits,
    classify: impl FnMut(&str) -> Line<T>,
) -> Result<Parsed<T>, ParseError> {
    check_size(body, limits)?;
    let mut collector = Collector::new(limits);
    scan_text(body, limits, &mut collector, None, classify)?;
    collector.finish()
}

pub(crate) const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Walk the lines of `body` (size already checked), enforcing the per-line rules, and hand each
/// trimmed, non-blank, valid UTF-8 line to `classify`. `context` prefixes reject reasons.
pub(crate) fn scan_text<T: FeedEntry>(
    body: &[u8],
    limits: &Limits,
    collector: &mut Collector<T>,
    context: Option<&str>,
    mut classify: impl FnMut(&str) -> Line<T>,
) -> Result<(), ParseError> {
    let mut rest = body.strip_prefix(BOM).unwrap_or(body);
    let mut number: u64 = 0;
    while !rest.is_empty() {
        number += 1;
        let (raw, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.len() > limits.max_line_bytes {
            return Err(ParseError::LineTooLong {
                line: number,
                limit: limits.max_line_bytes,
            });
        }
        if raw.contains(&0) {
            return Err(ParseError::Binary { line: number });
        }
        collector.report.lines += 1;
        let Ok(text) = std::str::from_utf8(raw) else {
            collector.reject(number, context, "line is not valid UTF-8");
            continue;
        };
        let text = text.trim();
        if text.is_empty() {
            collector.report.comments += 1;
            continue;
        }
        if is_markup(text) {
            return Err(ParseError::Html { line: number });
        }
        collector.record(number, context, classify(text))?;
    }
    Ok(())
}

/// True for the first line of an HTML or XML document (no feed line starts with `<`).
pub(crate) fn is_markup(line: &str) -> bool {
    const STARTS: [&str; 6] = ["<!doctype", "<html", "<head", "<body", "<?xml", "<title"];
    line.starts_with('<')
        && STARTS.iter().any(|start| {
            line.get(..start.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(start))
        })
}

/// `line` up to the first of `markers`, trimmed (`"1.2.3.4 # x"` → `"1.2.3.4"`).
pub(crate) fn strip_comment<'a>(line: &'a str, markers: &[char]) -> &'a str {
    match line.find(markers) {
        Some(at) => line[..at].trim(),
        None => line.trim(),
    }
}

/// At most `max` characters of `text`, with `…` when clipped.
pub(crate) fn clip(text: &str, max: usize) -> String {
    let mut chars = text.char_indices();
    match chars.nth(max.saturating_sub(1)) {
        Some((at, _)) if chars.next().is_some() => {
            let mut out = text[..at].to_string();
            out.push('…');
            out
        }
        _ => text.to_string(),
    }
}

/// A quoted, clipped sample of a value for a reject reason.
pub(crate) fn sample(value: &str) -> String {
    format!("{:?}", clip(value, 40))
}

/// Parse one IP or CIDR value into a prefix, or a reject reason.
pub(crate) fn prefix(value: &str) -> Line<Cidr> {
    match value.parse::<Cidr>() {
        Ok(cidr) => Line::Entry(cidr),
        Err(err) => Line::Rejected(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn classify(line: &str) -> Line<Cidr> {
        match strip_comment(line, &['#']) {
            "" => Line::Comment,
            value => prefix(value),
        }
    }

    fn cidrs(body: &[u8]) -> Result<Parsed<Cidr>, ParseError> {
        parse_text(body, &limits(), classify)
    }

    #[test]
    fn line_rules() {
        // (body, lines, accepted, comments, rejected)
        let cases: [(&[u8], u64, u64, u64, u64); 7] = [
            (b"1.2.3.4", 1, 1, 0, 0),
            (b"1.2.3.4\n", 1, 1, 0, 0),
            (b"\xEF\xBB\xBF1.2.3.4\r\n\r\n", 2, 1, 1, 0),
            (b"# c\n\n  1.2.3.4  # inline\n", 3, 1, 2, 0),
            (b"1.2.3.4\nnope\n", 2, 1, 0, 1),
            (b"1.2.3.4\n\xFF\xFE\n", 2, 1, 0, 1),
            (b"1.2.3.4\n\n\n", 3, 1, 2, 0),
        ];
        for (body, lines, accepted, comments, rejected) in cases {
            let parsed = cidrs(body).unwrap();
            let r = &parsed.report;
            assert_eq!(
                (r.lines, r.accepted, r.comments, r.rejected),
                (lines, accepted, comments, rejected),
                "{body:?}"
            );
            assert_eq!(parsed.entries, ["1.2.3.4/32".parse::<Cidr>().unwrap()]);
        }
    }

    #[test]
    fn whole_body_refusals() {
        assert!(matches!(cidrs(b""), Err(ParseError::NoData { .. })));
        assert!(matches!(
            cidrs(b"\xEF\xBB\xBF"),
            Err(ParseError::NoData { .. })
        ));
        assert!(matches!(
            cidrs(b"# only\n\n"),
            Err(ParseError::NoData { .. })
        ));
        assert!(
            matches!(cidrs(b"x\ny\n"), Err(ParseError::NoData { report }) if report.rejected == 2)
        );
        assert_eq!(cidrs(b"1.2.3.4\n\0\n"), Err(ParseError::Binary { line: 2 }));
        assert_eq!(
            cidrs(b"\n <!DOCTYPE html>\n"),
            Err(ParseError::Html { line: 2 })
        );
        assert_eq!(cidrs(b"<HTML><body>"), Err(ParseError::Html { line: 1 }));
        assert_eq!(
            cidrs(b"<?xml version=\"1.0\"?>"),
            Err(ParseError::Html { line: 1 })
        );
        // A lone `<` is just a bad line.
        assert!(matches!(cidrs(b"<x"), Err(ParseError::NoData { .. })));
    }

    #[test]
    fn size_and_line_limits_at_both_edges() {
        let small = Limits {
            max_body_bytes: 16,
            max_line_bytes: 7,
            ..Limits::default()
        };
        let run = |body: &[u8]| parse_text(body, &small, classify);
        // 16 bytes is fine, 17 is not.
        assert!(run(b"1.2.3.4\r\n5.6.7.8").is_ok());
        assert_eq!(
            run(b"1.2.3.4\r\n5.6.7.8\n"),
            Err(ParseError::TooLarge {
                size: 17,
                limit: 16
            })
        );
        // 7 bytes per line (CR not counted) is fine, 8 is not.
        assert!(run(b"1.2.3.4\r\n").is_ok());
        assert_eq!(
            run(b"1.2.3.4\n10.2.3.4"),
            Err(ParseError::LineTooLong { line: 2, limit: 7 })
        );
        // Two distinct entries are fine (duplicates do not count), three are not.
        let two = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        let run = |body: &[u8]| parse_text(body, &two, classify);
        let ok = run(b"1.1.1.1\n2.2.2.2\n1.1.1.1").unwrap();
        assert_eq!(ok.entries.len(), 2);
        assert_eq!(ok.report.duplicates, 1);
        assert_eq!(
            run(b"1.1.1.1\n2.2.2.2\n3.3.3.3"),
            Err(ParseError::TooManyEntries { limit: 2 })
        );
        let zero = Limits {
            max_entries: 0,
            ..Limits::default()
        };
        assert_eq!(
            parse_text(b"1.1.1.1", &zero, prefix),
            Err(ParseError::TooManyEntries { limit: 0 })
        );
    }

    #[test]
    fn first_rejects_are_bounded_and_clipped() {
        let mut body = String::from("1.2.3.4\n");
        for i in 0..10 {
            body.push_str(&format!("bad{i}{}\n", "x".repeat(50)));
        }
        let parsed = cidrs(body.as_bytes()).unwrap();
        assert_eq!(parsed.report.rejected, 10);
        assert_eq!(parsed.report.first_rejects.len(), MAX_KEPT_REJECTS);
        assert_eq!(parsed.report.first_rejects[0].line, 2);
        assert_eq!(parsed.report.first_rejects[4].line, 6);
        for reject in &parsed.report.first_rejects {
            assert!(
                reject.reason.chars().count() <= MAX_REASON_CHARS,
                "{reject:?}"
            );
        }
    }

    #[test]
    fn dedup_keeps_the_first_line_per_key() {
        use meds_proto::CountryCode;
        let row = |asn: u32, cc: &str| IpAsn {
            prefix: "203.0.113.0/24".parse().unwrap(),
            asn: Some(Asn::new(asn).unwrap()),
            country: Some(CountryCode::from_feed(cc).unwrap()),
        };
        let mut collector = Collector::new(&limits());
        for (i, r) in [row(64497, "fr"), row(64496, "de"), row(64497, "fr")]
            .into_iter()
            .enumerate()
        {
            collector
                .record(i as u64 + 1, None, Line::Entry(r))
                .unwrap();
        }
        let parsed = collector.finish().unwrap();
        assert_eq!(parsed.entries, [row(64497, "fr")]);
        assert_eq!(parsed.report.duplicates, 2);
    }

    #[test]
    fn clip_edges() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "ab…");
        assert_eq!(clip("", 3), "");
        assert_eq!(clip("ééé", 3), "ééé");
        assert_eq!(clip("éééé", 3), "éé…");
    }
}
