//! The domain and fingerprint feed parsers (`hosts`, `ja3_sslbl`) against real feed excerpts
//! (`tests/data/feeds`: StevenBlack, someonewhocares.org zero edition, SSLBL JA3; expected values
//! counted with grep and Python, not with these parsers), a
//! hosts file written here in the someonewhocares layout, every truncation of every fixture,
//! random bytes, and the committed fuzz corpus (`fuzz/corpus/{domain,feed_hosts,feed_ja3}`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

use std::path::{Path, PathBuf};

use meds_controld::feeds::parse::{self, Limits, MAX_KEPT_REJECTS, ParseError, Parsed, Report};
use meds_proto::DomainName;
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Format {
    Hosts,
    Ja3,
}

type Outcome = Result<(Vec<String>, Report), ParseError>;

fn texts<T: ToString>(parsed: Result<Parsed<T>, ParseError>) -> Outcome {
    parsed.map(|p| {
        (
            p.entries.iter().map(ToString::to_string).collect(),
            p.report,
        )
    })
}

impl Format {
    fn run(self, body: &[u8], limits: &Limits) -> Outcome {
        match self {
            Format::Hosts => texts(parse::hosts(body, limits)),
            Format::Ja3 => texts(parse::ja3_sslbl(body, limits)),
        }
    }
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/feeds")
}

fn data(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `(lines, accepted, comments, skipped, rejected)`.
fn counts(r: &Report) -> (u64, u64, u64, u64, u64) {
    (r.lines, r.accepted, r.comments, r.skipped, r.rejected)
}

/// The invariants of any successful parse.
fn check_outcome(outcome: &Outcome, what: &str) {
    if let Ok((entries, r)) = outcome {
        assert!(!entries.is_empty(), "{what}");
        assert!(
            entries.windows(2).all(|w| w[0] < w[1]),
            "{what}: not sorted/unique"
        );
        assert_eq!(
            r.lines,
            r.accepted + r.comments + r.skipped + r.rejected,
            "{what}: {r:?}"
        );
        assert_eq!(
            r.first_rejects.len() as u64,
            r.rejected.min(MAX_KEPT_REJECTS as u64),
            "{what}"
        );
    }
}

struct Expect {
    file: &'static str,
    format: Format,
    /// `(lines, accepted, comments, skipped, rejected)`
    counts: (u64, u64, u64, u64, u64),
    entries: usize,
    duplicates: u64,
    first: &'static str,
    last: &'static str,
    contains: &'static [&'static str],
    absent: &'static [&'static str],
}

const FIXTURES: &[Expect] = &[
    Expect {
        // 151 lines: 112 start with "0.0.0.0 " (111 names + "0.0.0.0 0.0.0.0"), 20 comments,
        // 6 blank, 13 header lines (localhost, ip6-*, broadcasthost, …).
        file: "stevenblack_hosts",
        format: Format::Hosts,
        counts: (151, 111, 26, 14, 0),
        entries: 111,
        duplicates: 0,
        first: "010sec.com",
        last: "wy.adyboh.com",
        contains: &[
            "n2019cov.000webhostapp.com",
            "login.yahoo.com.0x4fc271.tk",
            "www.prebid.adnxs.com",
        ],
        absent: &[
            "localhost",
            "local",
            "broadcasthost",
            "ip6-localhost",
            "0.0.0.0",
        ],
    },
    Expect {
        // 122 lines: 66 `#` lines, 11 blank, 11 header lines (localhost, localhost.localdomain,
        // broadcasthost, ::1 localhost, local, 6 ip6-* lines), 34 `0.0.0.0 name` lines (3 with
        // an inline comment), 34 distinct names.
        file: "someonewhocares_hosts_zero",
        format: Format::Hosts,
        counts: (122, 34, 77, 11, 0),
        entries: 34,
        duplicates: 0,
        first: "1girl1pitcher.com",
        last: "www.shafou.com",
        contains: &[
            "goatse.cx",
            "www.goatse.cx",
            "oralse.cx",
            "bestshockers.com",
        ],
        absent: &[
            "localhost",
            "localhost.localdomain",
            "local",
            "broadcasthost",
            "ip6-localhost",
            "ip6-loopback",
            "ip6-allhosts",
            "more",
        ],
    },
    Expect {
        // Written for these tests (see the README); counted by hand and with Python.
        file: "someonewhocares_style_hosts",
        format: Format::Hosts,
        counts: (35, 8, 16, 8, 3),
        entries: 7,
        duplicates: 2,
        first: "a.cdn.example",
        last: "xn--bcher-kva.example",
        contains: &[
            "ads.example.com",
            "www.ads.example.com",
            "beacon.example.org",
            "pixel.example.com",
        ],
        absent: &[
            "localhost",
            "local",
            "lan",
            "commented-out.example",
            "valid.example",
        ],
    },
    Expect {
        // 109 lines (no final line end): 11 `#` lines, 98 distinct rows.
        file: "sslbl_ja3_fingerprints.csv",
        format: Format::Ja3,
        counts: (109, 98, 11, 0, 0),
        entries: 98,
        duplicates: 0,
        first: "03e186a7f83285e93341de478334006e",
        last: "ffefafdb86336d057eda5fdf02b3d5ce",
        contains: &[
            "b386946a5a44d1ddcc843bc75336dfce",
            "8991a387e4cc841740f25d6f5139f92d",
        ],
        absent: &[],
    },
];

#[test]
fn fixtures_give_the_expected_entries() {
    for e in FIXTURES {
        let outcome = e.format.run(&data(e.file), &Limits::default());
        check_outcome(&outcome, e.file);
        let (entries, report) = outcome.unwrap_or_else(|err| panic!("{}: {err}", e.file));
        assert_eq!(counts(&report), e.counts, "{}: {report}", e.file);
        assert_eq!(report.duplicates, e.duplicates, "{}", e.file);
        assert_eq!(entries.len(), e.entries, "{}", e.file);
        assert_eq!(
            entries.first().map(String::as_str),
            Some(e.first),
            "{}",
            e.file
        );
        assert_eq!(
            entries.last().map(String::as_str),
            Some(e.last),
            "{}",
            e.file
        );
        for want in e.contains {
            assert!(
                entries.iter().any(|x| x == want),
                "{}: missing {want}",
                e.file
            );
        }
        for unwanted in e.absent {
            assert!(
                !entries.iter().any(|x| x == unwanted),
                "{}: has {unwanted}",
                e.file
            );
        }
    }
}

#[test]
fn someonewhocares_style_rejects_name_the_line() {
    let (_, report) = Format::Hosts
        .run(&data("someonewhocares_style_hosts"), &Limits::default())
        .unwrap();
    let lines: Vec<u64> = report.first_rejects.iter().map(|r| r.line).collect();
    assert_eq!(lines, [30, 31, 32]);
    assert!(
        report.first_rejects[0].reason.contains("\"not\""),
        "{report}"
    );
    assert!(
        report.first_rejects[1].reason.contains("\"lan\""),
        "{report}"
    );
    assert!(
        report.first_rejects[2].reason.contains("no host name"),
        "{report}"
    );
}

/// Every hosts entry is a valid feed name and already in canonical form.
#[test]
fn hosts_entries_are_canonical_domain_names() {
    for file in ["stevenblack_hosts", "someonewhocares_hosts_zero"] {
        let parsed = parse::hosts(&data(file), &Limits::default()).unwrap();
        for name in &parsed.entries {
            assert_eq!(&DomainName::from_feed(name.as_str()).unwrap(), name);
            assert!(name.label_count() >= 2, "{file}: {name}");
        }
    }
}

/// Every prefix of every fixture (a body cut off mid-download) parses or is refused; never a
/// panic, and a successful result keeps the invariants.
#[test]
fn every_truncation_is_total() {
    for e in FIXTURES {
        let body = data(e.file);
        for end in 0..=body.len() {
            let outcome = e.format.run(&body[..end], &Limits::default());
            check_outcome(&outcome, &format!("{}[..{end}]", e.file));
        }
    }
}

/// A CRLF copy of each fixture gives the same entries and counts.
#[test]
fn crlf_gives_the_same_result() {
    for e in FIXTURES {
        let body = data(e.file);
        let mut crlf = Vec::with_capacity(body.len() * 2);
        for &b in &body {
            if b == b'\n' {
                crlf.push(b'\r');
            }
            crlf.push(b);
        }
        let lf = e.format.run(&body, &Limits::default()).unwrap();
        let cr = e.format.run(&crlf, &Limits::default()).unwrap();
        assert_eq!(lf.0, cr.0, "{}", e.file);
        assert_eq!(counts(&lf.1), counts(&cr.1), "{}", e.file);
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        for format in [Format::Hosts, Format::Ja3] {
            let outcome = format.run(&body, &Limits::default());
            check_outcome(&outcome, "random");
        }
    }

    #[test]
    fn random_hosts_lines_never_panic(lines in prop::collection::vec("(0\\.0\\.0\\.0|127\\.0\\.0\\.1|::1|#)?[ \\t]*[a-zA-Z0-9._*ü#-]{0,20}( [a-z.]{0,10})?", 0..20)) {
        let body = lines.join("\n");
        check_outcome(&Format::Hosts.run(body.as_bytes(), &Limits::default()), &body);
    }
}

/// Replays `fuzz/corpus/{domain,feed_hosts,feed_ja3}` so that a crash found by fuzzing stays
/// fixed.
#[test]
fn fuzz_corpus_replays() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for target in ["domain", "feed_hosts", "feed_ja3"] {
        let dir = root.join(target);
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|f| f.unwrap().path())
            .collect();
        assert!(!files.is_empty(), "{target}: empty corpus");
        for file in files {
            let body = std::fs::read(&file).unwrap();
            match target {
                "domain" => {
                    let text = String::from_utf8_lossy(&body);
                    for parse in [DomainName::parse_user, DomainName::from_feed] {
                        if let Ok(name) = parse(&text) {
                            assert_eq!(DomainName::from_feed(name.as_str()).as_ref(), Ok(&name));
                        }
                    }
                }
                "feed_hosts" => {
                    check_outcome(&Format::Hosts.run(&body, &Limits::default()), target)
                }
                _ => check_outcome(&Format::Ja3.run(&body, &Limits::default()), target),
            }
        }
    }
}
