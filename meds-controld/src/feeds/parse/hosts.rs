//! `hosts`: hosts-file blocklists (StevenBlack/hosts, someonewhocares.org).
//!
//! A line is `ADDRESS NAME [NAME …] [# comment]`, fields separated by spaces or tabs; `#`
//! starts a comment anywhere. The address is any IPv4 or IPv6 address (an IPv6 zone such as
//! `fe80::1%lo0` is accepted); the names are blocked whatever the address is (`0.0.0.0`,
//! `127.0.0.1`, `::` …), as every blocklist in this format means it.
//!
//! The fixed header every hosts file starts with is not a list of blocked names (the original
//! ingested it, so its `local` entry blocked every `*.local` name, upstream W7). These names
//! are ignored: `localhost`, `localhost.localdomain`, `localhost6`, `localhost6.localdomain6`,
//! `local`, `broadcasthost`, every `ip6-*` name, and every name that is an IP address (the
//! `0.0.0.0 0.0.0.0` line). A line whose names are all ignored counts as skipped.
//!
//! Names are read with [`DomainName::from_feed`] (lower-cased, IDNA, the lenient rules). A
//! single-label name (`com`, `lan`) would block a whole top-level domain: a feed is not trusted
//! with that, so such a name is rejected (a user can still block one through the API). A line
//! with any invalid name is rejected as a whole, naming that name: its other names are not
//! used, so that nothing on a rejected line is taken silently. A line with an address and no
//! name, or whose first field is not an address, is rejected.
//!
//! Entries are deduplicated by name across the body (first line wins, [`Report::duplicates`]
//! counts the rest).
//!
//! [`Report::duplicates`]: super::Report::duplicates

use std::net::IpAddr;

use meds_proto::DomainName;

use super::{FeedEntry, Limits, Line, ParseError, Parsed, parse_text, sample, strip_comment};

/// Names in the header of hosts files, ignored (compared case-insensitively).
const PREAMBLE: [&str; 6] = [
    "localhost",
    "localhost.localdomain",
    "localhost6",
    "localhost6.localdomain6",
    "local",
    "broadcasthost",
];

impl FeedEntry for DomainName {
    type Key = DomainName;
    fn key(&self) -> &DomainName {
        self
    }
}

/// Parse a hosts-file blocklist into domain names.
pub fn hosts(body: &[u8], limits: &Limits) -> Result<Parsed<DomainName>, ParseError> {
    parse_text(body, limits, classify)
}

fn classify(line: &str) -> Line<DomainName> {
    let mut fields = strip_comment(line, &['#']).split_ascii_whitespace();
    let Some(address) = fields.next() else {
        return Line::Comment;
    };
    if !is_address(address) {
        return Line::Rejected(format!(
            "expected \"ADDRESS NAME…\", but {} is not an IP address",
            sample(address)
        ));
    }
    let mut names = Vec::new();
    let mut any = false;
    for field in fields {
        any = true;
        if is_preamble(field) || is_address(field) {
            continue;
        }
        match DomainName::from_feed(field) {
            Ok(name) if name.label_count() == 1 => {
                return Line::Rejected(format!(
                    "{}: a single-label name would block a whole top-level domain",
                    sample(field)
                ));
            }
            Ok(name) => names.push(name),
            Err(err) => return Line::Rejected(err.to_string()),
        }
    }
    if !any {
        return Line::Rejected(format!(
            "no host name after the address {}",
            sample(address)
        ));
    }
    if names.is_empty() {
        return Line::Skipped;
    }
    Line::Entries(names)
}

/// An IPv4 or IPv6 address, an IPv6 one possibly with a zone (`fe80::1%lo0`).
fn is_address(field: &str) -> bool {
    let bare = match field.split_once('%') {
        Some((addr, zone)) if !zone.is_empty() && addr.contains(':') => addr,
        _ => field,
    };
    bare.parse::<IpAddr>().is_ok()
}

fn is_preamble(field: &str) -> bool {
    let field = field.strip_suffix('.').unwrap_or(field);
    PREAMBLE.iter().any(|p| p.eq_ignore_ascii_case(field))
        || field
            .get(..4)
            .is_some_and(|head| head.eq_ignore_ascii_case("ip6-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &str) -> Result<(Vec<String>, super::super::Report), ParseError> {
        hosts(body.as_bytes(), &Limits::default())
            .map(|p| (p.entries.iter().map(|d| d.to_string()).collect(), p.report))
    }

    #[test]
    fn lines() {
        // (line, entries, what): what is a/c/s/r for accepted, comment, skipped, rejected.
        let cases: [(&str, &[&str], char); 26] = [
            ("0.0.0.0 ads.example", &["ads.example"], 'a'),
            ("127.0.0.1\tAds.Example.", &["ads.example"], 'a'),
            (
                "0.0.0.0 a.example b.example\tc.example # three",
                &["a.example", "b.example", "c.example"],
                'a',
            ),
            (":: ads.example", &["ads.example"], 'a'),
            ("0.0.0.0 bücher.example", &["xn--bcher-kva.example"], 'a'),
            ("0.0.0.0 -weird-.example", &["-weird-.example"], 'a'),
            ("0.0.0.0 _tracker.example", &["_tracker.example"], 'a'),
            ("127.0.0.1 localhost ads.example", &["ads.example"], 'a'),
            ("# 0.0.0.0 commented.example", &[], 'c'),
            ("#<localhost>", &[], 'c'),
            ("   # indented", &[], 'c'),
            ("127.0.0.1 localhost", &[], 's'),
            ("127.0.0.1 LOCALHOST.localdomain", &[], 's'),
            ("127.0.0.1 local", &[], 's'),
            ("255.255.255.255 broadcasthost", &[], 's'),
            ("::1 ip6-localhost ip6-loopback", &[], 's'),
            ("fe80::1%lo0 localhost", &[], 's'),
            ("ff02::3\t\tip6-allhosts", &[], 's'),
            ("0.0.0.0 0.0.0.0", &[], 's'),
            ("0.0.0.0 203.0.113.7 2001:db8::1", &[], 's'),
            ("0.0.0.0", &[], 'r'),
            ("0.0.0.0 # nothing", &[], 'r'),
            ("ads.example", &[], 'r'),
            ("0.0.0.0 com", &[], 'r'),
            ("0.0.0.0 good.example bad*.example", &[], 'r'),
            ("0.0.0.0 a..example", &[], 'r'),
        ];
        for (line, want, what) in cases {
            let body = format!("0.0.0.0 anchor.example\n{line}\n");
            let (entries, r) = run(&body).unwrap();
            let mut expected: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            expected.push("anchor.example".into());
            expected.sort();
            assert_eq!(entries, expected, "{line:?}");
            let got = (r.accepted - 1, r.comments, r.skipped, r.rejected);
            let want_counts = match what {
                'a' => (1, 0, 0, 0),
                'c' => (0, 1, 0, 0),
                's' => (0, 0, 1, 0),
                _ => (0, 0, 0, 1),
            };
            assert_eq!(got, want_counts, "{line:?}: {r}");
            assert_eq!(r.lines, 2);
        }
    }

    #[test]
    fn reject_reasons_name_the_value() {
        let body = "0.0.0.0 ok.example\nnot-an-ip ads.example\n0.0.0.0\n0.0.0.0 com\n0.0.0.0 x.example *.bad.example\n";
        let parsed = hosts(body.as_bytes(), &Limits::default()).unwrap();
        let reasons: Vec<(u64, &str)> = parsed
            .report
            .first_rejects
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 4);
        assert_eq!(reasons[0].0, 2);
        assert!(
            reasons[0].1.contains("\"not-an-ip\" is not an IP address"),
            "{reasons:?}"
        );
        assert!(reasons[1].1.contains("no host name"), "{reasons:?}");
        assert!(reasons[2].1.contains("\"com\"") && reasons[2].1.contains("single-label"));
        assert!(reasons[3].1.contains("*.bad.example") && reasons[3].1.contains("wildcard"));
    }

    #[test]
    fn duplicates_and_limits() {
        let body = "0.0.0.0 a.example\n0.0.0.0 A.example b.example\n127.0.0.1 b.example.\n";
        let parsed = hosts(body.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(parsed.entries.len(), 2);
        assert_eq!(parsed.report.duplicates, 2);
        assert_eq!(parsed.report.accepted, 3);

        let two = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        assert!(hosts(body.as_bytes(), &two).is_ok());
        let three = "0.0.0.0 a.example b.example c.example d.example\n0.0.0.0 e.example\n";
        assert_eq!(
            hosts(three.as_bytes(), &two),
            Err(ParseError::TooManyEntries { limit: 2 })
        );
        let zero = Limits {
            max_entries: 0,
            ..Limits::default()
        };
        assert_eq!(
            hosts(b"0.0.0.0 a.example", &zero),
            Err(ParseError::TooManyEntries { limit: 0 })
        );
    }

    #[test]
    fn whole_body_refusals() {
        assert!(matches!(run(""), Err(ParseError::NoData { .. })));
        // Only the header: nothing to block.
        assert!(matches!(
            run("127.0.0.1 localhost\n::1 ip6-localhost\n# x\n"),
            Err(ParseError::NoData { report }) if report.skipped == 2 && report.comments == 1
        ));
        assert_eq!(run("<!DOCTYPE html>\n"), Err(ParseError::Html { line: 1 }));
        assert_eq!(
            hosts(b"0.0.0.0 a.example\n\0", &Limits::default()),
            Err(ParseError::Binary { line: 2 })
        );
    }
}
