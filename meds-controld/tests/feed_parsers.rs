//! The feed parsers against real feed excerpts (`tests/data/feeds`, expected values counted
//! with grep and Python, not with these parsers), hand-written edge cases, ZIP archives built
//! here, every truncation of every fixture, random bytes, and the committed fuzz corpus.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

use std::collections::BTreeSet;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use meds_controld::feeds::parse::{self, Limits, MAX_KEPT_REJECTS, ParseError, Parsed, Report};
use meds_proto::{Entry, IpAsn};
use proptest::prelude::*;
use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

/// The parsers, so that one table can drive them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Firehol,
    SpamhausDrop,
    Feodo,
    AsnDrop,
    IplocateCsv,
    IplocateZip,
    Iptoasn,
    IpLocationDb,
}

const ALL: [Format; 8] = [
    Format::Firehol,
    Format::SpamhausDrop,
    Format::Feodo,
    Format::AsnDrop,
    Format::IplocateCsv,
    Format::IplocateZip,
    Format::Iptoasn,
    Format::IpLocationDb,
];

/// Entries as canonical text, plus the report.
type Outcome = Result<(Vec<String>, Report), ParseError>;

fn texts<T>(parsed: Result<Parsed<T>, ParseError>, show: impl Fn(&T) -> String) -> Outcome {
    parsed.map(|p| (p.entries.iter().map(show).collect(), p.report))
}

/// Canonical text of an IP-to-ASN row: `1.0.0.0/24 13335 us`.
fn row(r: &IpAsn) -> String {
    Entry::IpAsn(*r).to_string()
}

impl Format {
    fn run(self, body: &[u8], limits: &Limits) -> Outcome {
        match self {
            Format::Firehol => texts(parse::firehol(body, limits), ToString::to_string),
            Format::SpamhausDrop => texts(parse::spamhaus_drop(body, limits), ToString::to_string),
            Format::Feodo => texts(parse::feodo(body, limits), ToString::to_string),
            Format::AsnDrop => texts(parse::asn_drop(body, limits), ToString::to_string),
            Format::IplocateCsv => texts(parse::iplocate_csv(body, limits), row),
            Format::IplocateZip => texts(parse::iplocate_zip(body, limits), row),
            Format::Iptoasn => texts(parse::iptoasn_tsv(body, limits), row),
            Format::IpLocationDb => texts(parse::ip_location_db_asn_csv(body, limits), row),
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

fn assert_sorted_unique(entries: &[String], what: &str) {
    let set: BTreeSet<&String> = entries.iter().collect();
    assert_eq!(set.len(), entries.len(), "{what}: duplicates");
}

fn assert_report_adds_up(r: &Report, what: &str) {
    assert_eq!(
        r.lines,
        r.accepted + r.comments + r.skipped + r.rejected,
        "{what}: {r:?}"
    );
    assert!(r.first_rejects.len() <= MAX_KEPT_REJECTS);
    assert_eq!(
        r.first_rejects.len() as u64,
        r.rejected.min(MAX_KEPT_REJECTS as u64)
    );
}

struct Expect {
    file: &'static str,
    format: Format,
    /// `(lines, accepted, comments, skipped, rejected)`
    counts: (u64, u64, u64, u64, u64),
    entries: usize,
    first: &'static str,
    last: &'static str,
    contains: &'static [&'static str],
}

const FIXTURES: &[Expect] = &[
    Expect {
        file: "firehol_level1.netset",
        format: Format::Firehol,
        counts: (152, 119, 33, 0, 0),
        entries: 119,
        first: "0.0.0.0/8",
        last: "224.0.0.0/3",
        contains: &["10.0.0.0/8", "45.33.2.79/32", "1.10.16.0/20"],
    },
    Expect {
        file: "firehol_level1_2017.netset",
        format: Format::Firehol,
        counts: (152, 118, 34, 0, 0),
        entries: 118,
        first: "0.0.0.0/8",
        last: "224.0.0.0/3",
        contains: &["1.93.0.224/32", "27.131.149.102/32"],
    },
    Expect {
        file: "spamhaus_drop.txt",
        format: Format::SpamhausDrop,
        counts: (152, 147, 5, 0, 0),
        entries: 147,
        first: "1.10.16.0/20",
        last: "223.254.0.0/16",
        contains: &["2.56.192.0/22", "45.83.28.0/24"],
    },
    Expect {
        file: "spamhaus_dropv6.txt",
        format: Format::SpamhausDrop,
        counts: (96, 91, 5, 0, 0),
        entries: 91,
        first: "2001:678:254::/48",
        last: "2a14:c380:12::/48",
        contains: &["2401:c580::/32", "2a00:4c80::/29", "2a05:b0c6:a000::/39"],
    },
    Expect {
        file: "spamhaus_drop_v4.json",
        format: Format::SpamhausDrop,
        counts: (152, 151, 1, 0, 0),
        entries: 151,
        first: "1.10.16.0/20",
        last: "223.254.0.0/16",
        contains: &["45.121.204.0/22", "2.57.234.0/23"],
    },
    Expect {
        file: "spamhaus_asndrop.json",
        format: Format::AsnDrop,
        counts: (152, 151, 1, 0, 0),
        entries: 151,
        first: "932",
        last: "400506",
        contains: &["6060", "207566"],
    },
    Expect {
        file: "feodo_ipblocklist.txt",
        format: Format::Feodo,
        counts: (152, 142, 10, 0, 0),
        entries: 142,
        first: "1.234.20.244/32",
        last: "200.142.124.146/32",
        contains: &["97.83.40.67/32", "103.101.104.229/32"],
    },
    Expect {
        file: "feodo_ipblocklist_recommended.txt",
        format: Format::Feodo,
        counts: (153, 143, 10, 0, 0),
        entries: 143,
        first: "8.8.8.8/32",
        last: "209.141.51.187/32",
        contains: &["8.8.8.8/32", "97.107.134.115/32"],
    },
    Expect {
        file: "feodo_ipblocklist.csv",
        format: Format::Feodo,
        // 8 banner lines + "# END" are comments, and so is the CSV header.
        counts: (38, 28, 10, 0, 0),
        entries: 28,
        first: "23.226.138.143/32",
        last: "213.199.41.33/32",
        contains: &["192.9.135.73/32", "172.233.221.61/32"],
    },
    Expect {
        file: "iptoasn_ip2asn-v4.tsv",
        format: Format::Iptoasn,
        counts: (1427, 1427, 0, 0, 0),
        entries: 1587,
        first: "1.1.1.0/32 13335 us",
        last: "216.252.222.0/23 15169 us",
        contains: &[
            "8.8.8.0/24 15169 us",
            "1.1.1.1/32 7497 cn",
            "1.1.1.2/31 13335 us",
        ],
    },
    Expect {
        file: "ip_location_db_asn-ipv4.csv",
        format: Format::IpLocationDb,
        counts: (1000, 1000, 0, 0, 0),
        entries: 1886,
        first: "1.0.0.0/24 13335 -",
        last: "2.26.184.0/24 2914 -",
        contains: &["1.0.4.0/22 38803 -"],
    },
    Expect {
        file: "ip_location_db_asn-ipv6.csv",
        format: Format::IpLocationDb,
        counts: (600, 600, 0, 0, 0),
        entries: 1396,
        first: "2001::/32 6939 -",
        last: "2001:470:1d0::/48 41529 -",
        contains: &["2001:200:1ba::/48 24047 -"],
    },
    Expect {
        file: "iplocate_ip-to-asn.sample.csv",
        format: Format::IplocateCsv,
        counts: (9, 7, 1, 0, 1),
        entries: 7,
        first: "1.0.0.0/24 13335 us",
        last: "2606:4700::/32 13335 us",
        contains: IPLOCATE_SAMPLE,
    },
    Expect {
        file: "iplocate_ip-to-asn.reordered.csv",
        format: Format::IplocateCsv,
        counts: (9, 7, 1, 0, 1),
        entries: 7,
        first: "1.0.0.0/24 13335 us",
        last: "2606:4700::/32 13335 us",
        contains: IPLOCATE_SAMPLE,
    },
];

/// Every entry of `iplocate_ip-to-asn.sample.csv`, in order.
const IPLOCATE_SAMPLE: &[&str] = &[
    "1.0.0.0/24 13335 us",
    "1.0.4.0/22 38803 au",
    "198.51.100.0/24 64496 -",
    "203.0.113.0/24 - fr",
    "2001:db8::/32 64497 nl",
    "2001:db8:1::/48 64498 de",
    "2606:4700::/32 13335 us",
];

#[test]
fn fixtures_parse_with_exact_counts() {
    for expect in FIXTURES {
        let (entries, report) = expect
            .format
            .run(&data(expect.file), &Limits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", expect.file));
        assert_eq!(
            counts(&report),
            expect.counts,
            "{}: {report:?}",
            expect.file
        );
        assert_eq!(entries.len(), expect.entries, "{}", expect.file);
        assert_eq!(
            entries.first().map(String::as_str),
            Some(expect.first),
            "{}",
            expect.file
        );
        assert_eq!(
            entries.last().map(String::as_str),
            Some(expect.last),
            "{}",
            expect.file
        );
        for want in expect.contains {
            assert!(
                entries.iter().any(|e| e == want),
                "{}: no {want}",
                expect.file
            );
        }
        assert_eq!(report.duplicates, 0, "{}", expect.file);
        assert_sorted_unique(&entries, expect.file);
        assert_report_adds_up(&report, expect.file);
    }
}

#[test]
fn iplocate_sample_is_exact_and_the_reordered_file_agrees() {
    let (entries, report) = Format::IplocateCsv
        .run(&data("iplocate_ip-to-asn.sample.csv"), &Limits::default())
        .unwrap();
    assert_eq!(entries, IPLOCATE_SAMPLE);
    // The one rejected row: asn 0 and no country.
    assert_eq!(report.first_rejects.len(), 1);
    assert_eq!(report.first_rejects[0].line, 6);
    assert!(report.first_rejects[0].reason.contains("192.0.2.0/24"));
    let reordered = Format::IplocateCsv
        .run(
            &data("iplocate_ip-to-asn.reordered.csv"),
            &Limits::default(),
        )
        .unwrap();
    assert_eq!(reordered.0, entries);
}

#[test]
fn firehol_header_is_all_comments() {
    let body = data("firehol_level1.netset");
    let header_end = body
        .windows(2)
        .position(|w| w == b"\n0")
        .expect("first entry")
        + 1;
    // The 33 header lines alone: all comments, so no data.
    match parse::firehol(&body[..header_end], &Limits::default()) {
        Err(ParseError::NoData { report }) => {
            assert_eq!(counts(&report), (33, 0, 33, 0, 0));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn feodo_crlf_file_lists_8_8_8_8() {
    let parsed = parse::feodo(
        &data("feodo_ipblocklist_recommended.txt"),
        &Limits::default(),
    )
    .unwrap();
    let google: meds_proto::Cidr = "8.8.8.8/32".parse().unwrap();
    assert!(parsed.entries.contains(&google));
}

#[test]
fn asn_drop_metadata_line_is_a_comment() {
    let body = data("spamhaus_asndrop.json");
    let parsed = parse::asn_drop(&body, &Limits::default()).unwrap();
    assert_eq!(parsed.report.comments, 1);
    assert_eq!(parsed.report.rejected, 0);
    // The metadata record is the last line.
    let last = body
        .split(|&b| b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap();
    assert!(last.starts_with(b"{\"type\":\"metadata\""));
    match parse::asn_drop(last, &Limits::default()) {
        Err(ParseError::NoData { report }) => assert_eq!(counts(&report), (1, 0, 1, 0, 0)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn spamhaus_json_and_text_agree() {
    let text = parse::spamhaus_drop(&data("spamhaus_drop.txt"), &Limits::default()).unwrap();
    let json = parse::spamhaus_drop(&data("spamhaus_drop_v4.json"), &Limits::default()).unwrap();
    // The two excerpts are of different days; most entries are in both.
    let text: BTreeSet<_> = text.entries.into_iter().collect();
    let both = json.entries.iter().filter(|c| text.contains(c)).count();
    assert!(both >= 100, "{both}");
}

// ---------------------------------------------------------------------------------------------
// ZIP

/// A ZIP with the given members; `None` content makes a directory.
fn build_zip(members: &[(&str, Option<&[u8]>, CompressionMethod)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, content, method) in members {
        let options = SimpleFileOptions::default().compression_method(*method);
        match content {
            Some(bytes) => {
                writer.start_file(*name, options).unwrap();
                writer.write_all(bytes).unwrap();
            }
            None => writer.add_directory(*name, options).unwrap(),
        }
    }
    writer.finish().unwrap().into_inner()
}

/// The sample split into a v4 and a v6 file, each with its header.
fn split_sample() -> (Vec<u8>, Vec<u8>) {
    let sample = String::from_utf8(data("iplocate_ip-to-asn.sample.csv")).unwrap();
    let mut lines = sample.lines();
    let header = lines.next().unwrap();
    let (mut v4, mut v6) = (format!("{header}\n"), format!("{header}\r\n"));
    for line in lines {
        if line.contains(':') {
            v6.push_str(line);
            v6.push_str("\r\n");
        } else {
            v4.push_str(line);
            v4.push('\n');
        }
    }
    (v4.into_bytes(), v6.into_bytes())
}

#[test]
fn zip_members_are_merged() {
    let (v4, v6) = split_sample();
    let body = build_zip(&[
        ("ip-to-asn/", None, CompressionMethod::Stored),
        (
            "ip-to-asn/ip-to-asn-ipv4.csv",
            Some(&v4),
            CompressionMethod::Deflated,
        ),
        (
            "ip-to-asn/ip-to-asn-ipv6.csv",
            Some(&v6),
            CompressionMethod::Stored,
        ),
        (
            "__MACOSX/ip-to-asn/._ip-to-asn-ipv4.csv",
            Some(b"\0\x05\x16\x07\0\x02"),
            CompressionMethod::Stored,
        ),
    ]);
    let (entries, report) = Format::IplocateZip.run(&body, &Limits::default()).unwrap();
    assert_eq!(entries, IPLOCATE_SAMPLE);
    // Two headers, 7 rows accepted, 1 rejected (its reason names the member).
    assert_eq!(counts(&report), (10, 7, 2, 0, 1));
    assert!(
        report.first_rejects[0]
            .reason
            .starts_with("ip-to-asn/ip-to-asn-ipv4.csv: "),
        "{:?}",
        report.first_rejects
    );
    assert_eq!(report.first_rejects[0].line, 6);

    // The single-member layout as published.
    let single = build_zip(&[(
        "ip-to-asn.csv",
        Some(&data("iplocate_ip-to-asn.sample.csv")),
        CompressionMethod::Deflated,
    )]);
    let (entries, _) = Format::IplocateZip
        .run(&single, &Limits::default())
        .unwrap();
    assert_eq!(entries, IPLOCATE_SAMPLE);
}

#[test]
fn zip_refusals() {
    let (v4, _) = split_sample();
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        ..Limits::default()
    };
    // A bomb-ish member: 1 MiB of one repeated row packs into a few KiB.
    let row = b"203.0.113.0/24,64496,FR,x,y,z\n";
    let bomb: Vec<u8> = row.iter().copied().cycle().take(1024 * 1024).collect();
    let body = build_zip(&[("ip-to-asn.csv", Some(&bomb), CompressionMethod::Deflated)]);
    assert!(body.len() < 16 * 1024, "{}", body.len());
    assert_eq!(
        parse::iplocate_zip(&body, &limits),
        Err(ParseError::UnpackedTooLarge {
            member: "ip-to-asn.csv".into(),
            limit: 64 * 1024
        })
    );
    // The bound is on all members together: two of 40 KiB are over 64 KiB.
    let forty: Vec<u8> = row.iter().copied().cycle().take(40 * 1024).collect();
    let body = build_zip(&[
        ("a.csv", Some(&forty), CompressionMethod::Deflated),
        ("b.csv", Some(&forty), CompressionMethod::Deflated),
    ]);
    assert!(matches!(
        parse::iplocate_zip(&body, &limits),
        Err(ParseError::UnpackedTooLarge { member, .. }) if member == "b.csv"
    ));
    // ... and one of them alone is fine.
    let body = build_zip(&[("a.csv", Some(&forty), CompressionMethod::Deflated)]);
    assert!(parse::iplocate_zip(&body, &limits).is_ok());

    // Too many members.
    let names: Vec<String> = (0..17).map(|i| format!("m{i}.csv")).collect();
    let members: Vec<_> = names
        .iter()
        .map(|n| (n.as_str(), Some(&v4[..]), CompressionMethod::Stored))
        .collect();
    assert_eq!(
        parse::iplocate_zip(&build_zip(&members), &Limits::default()),
        Err(ParseError::TooManyMembers {
            count: 17,
            limit: 16
        })
    );
    assert!(parse::iplocate_zip(&build_zip(&members[..16]), &Limits::default()).is_ok());

    // Only a directory: no data. A member that is binary: refused.
    let dir_only = build_zip(&[("ip-to-asn/", None, CompressionMethod::Stored)]);
    assert!(matches!(
        parse::iplocate_zip(&dir_only, &Limits::default()),
        Err(ParseError::NoData { .. })
    ));
    let binary = build_zip(&[(
        "ip-to-asn.csv",
        Some(b"1.0.0.0/24,1,US\n\0\0"),
        CompressionMethod::Deflated,
    )]);
    assert_eq!(
        parse::iplocate_zip(&binary, &Limits::default()),
        Err(ParseError::Binary { line: 2 })
    );
    // A CSV body is not a ZIP; an HTML page is reported as such.
    assert!(matches!(
        parse::iplocate_zip(&v4, &Limits::default()),
        Err(ParseError::Zip(_))
    ));
    assert_eq!(
        parse::iplocate_zip(HTML_PAGE.as_bytes(), &Limits::default()),
        Err(ParseError::Html { line: 1 })
    );
    // The packed body has its own bound.
    let body = build_zip(&[("a.csv", Some(&v4), CompressionMethod::Stored)]);
    let tight = Limits {
        max_body_bytes: body.len() - 1,
        ..Limits::default()
    };
    assert!(matches!(
        parse::iplocate_zip(&body, &tight),
        Err(ParseError::TooLarge { .. })
    ));
}

#[test]
fn corrupt_zip_members_are_refused() {
    let sample = data("iplocate_ip-to-asn.sample.csv");
    let mut body = build_zip(&[("ip-to-asn.csv", Some(&sample), CompressionMethod::Stored)]);
    // Flip a byte of the stored data: the CRC check fails at the end of the member.
    let at = body.windows(7).position(|w| w == b"network").unwrap();
    body[at] ^= 0x20;
    assert!(matches!(
        parse::iplocate_zip(&body, &Limits::default()),
        Err(ParseError::Zip(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Whole-body refusals, for every format

const HTML_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>429 Too Many Requests</title></head>\n<body><h1>Too Many Requests</h1></body></html>\n";

#[test]
fn error_pages_empty_bodies_and_garbage_are_refused() {
    for format in ALL {
        let run = |body: &[u8]| format.run(body, &Limits::default());
        assert_eq!(
            run(HTML_PAGE.as_bytes()),
            Err(ParseError::Html { line: 1 }),
            "{format:?}"
        );
        assert!(
            matches!(run(b""), Err(ParseError::NoData { .. })),
            "{format:?}"
        );
        if format == Format::IplocateZip {
            assert!(matches!(
                run(b"hello world\nfoo bar\n"),
                Err(ParseError::Zip(_))
            ));
            continue;
        }
        let indented = format!("\r\n   \r\n{}", HTML_PAGE.to_uppercase());
        assert_eq!(
            run(indented.as_bytes()),
            Err(ParseError::Html { line: 3 }),
            "{format:?}"
        );
        // A BOM that is not at the start is not whitespace: that line is rejected.
        match run(b"# comment\n\n\xEF\xBB\xBF\n") {
            Err(ParseError::NoData { report }) => {
                assert_eq!(counts(&report), (3, 0, 2, 0, 1), "{format:?}");
                assert_eq!(report.first_rejects[0].line, 3);
            }
            other => panic!("{format:?}: {other:?}"),
        }
        match run(b"hello world\nfoo, bar\n") {
            Err(ParseError::NoData { report }) => {
                assert_eq!(counts(&report), (2, 0, 0, 0, 2), "{format:?}");
            }
            other => panic!("{format:?}: {other:?}"),
        }
        assert_eq!(
            run(b"1.2.3.4\n\x7fELF\x02\x01\x01\0\0\0"),
            Err(ParseError::Binary { line: 2 })
        );
    }
}

#[test]
fn limits_are_enforced_for_every_format() {
    let (v4, _) = split_sample();
    for format in ALL {
        let body = match format {
            Format::IplocateZip => build_zip(&[("a.csv", Some(&v4), CompressionMethod::Stored)]),
            _ => b"203.0.113.0/24\n".to_vec(),
        };
        let limits = Limits {
            max_body_bytes: body.len() - 1,
            ..Limits::default()
        };
        assert_eq!(
            format.run(&body, &limits),
            Err(ParseError::TooLarge {
                size: body.len(),
                limit: body.len() - 1
            }),
            "{format:?}"
        );
        if format == Format::IplocateZip {
            continue;
        }
        let mut long = b"1.2.3.4\n".to_vec();
        long.extend(std::iter::repeat_n(b'1', 4097));
        assert_eq!(
            format.run(&long, &Limits::default()),
            Err(ParseError::LineTooLong {
                line: 2,
                limit: 4096
            }),
            "{format:?}"
        );
    }
    // The entry limit counts distinct entries: a range line's prefixes count one by one.
    let one_range = b"1.0.0.1\t1.0.0.6\t13335\tUS\tX\n"; // .1/32 .2/31 .4/31 .6/32
    let limits = |n| Limits {
        max_entries: n,
        ..Limits::default()
    };
    assert!(parse::iptoasn_tsv(one_range, &limits(4)).is_ok());
    assert_eq!(
        parse::iptoasn_tsv(one_range, &limits(3)),
        Err(ParseError::TooManyEntries { limit: 3 })
    );
}

// ---------------------------------------------------------------------------------------------
// Truncation and random input never panic

fn fixture_bodies() -> Vec<(String, Format, Vec<u8>)> {
    let mut out: Vec<_> = FIXTURES
        .iter()
        .map(|e| (e.file.to_string(), e.format, data(e.file)))
        .collect();
    let (v4, v6) = split_sample();
    out.push((
        "built ZIP".into(),
        Format::IplocateZip,
        build_zip(&[
            ("v4.csv", Some(&v4), CompressionMethod::Deflated),
            ("v6.csv", Some(&v6), CompressionMethod::Deflated),
        ]),
    ));
    out
}

#[test]
fn every_truncation_of_every_fixture_is_handled() {
    for (name, format, body) in fixture_bodies() {
        let (full, full_report) = format.run(&body, &Limits::default()).unwrap();
        let full: BTreeSet<String> = full.into_iter().collect();
        for step in 0..=50 {
            let cut = body.len() * step / 50;
            let result = format.run(&body[..cut], &Limits::default());
            if format == Format::IplocateZip {
                // A cut archive has no central directory.
                if cut < body.len() {
                    assert!(result.is_err(), "{name} cut at {cut}");
                }
                continue;
            }
            match result {
                Ok((entries, report)) => {
                    assert!(report.lines <= full_report.lines, "{name} cut at {cut}");
                    assert_report_adds_up(&report, &name);
                    // Only the cut line may give something the whole file does not.
                    let novel = entries.iter().filter(|e| !full.contains(*e)).count();
                    // A range line gives up to 254 prefixes.
                    let cut_line_max = match format {
                        Format::Iptoasn | Format::IpLocationDb => 254,
                        _ => 1,
                    };
                    assert!(
                        novel <= cut_line_max,
                        "{name} cut at {cut}: {novel} new entries"
                    );
                }
                Err(ParseError::NoData { .. }) => {}
                Err(other) => panic!("{name} cut at {cut}: {other}"),
            }
        }
    }
}

fn check_any(format: Format, body: &[u8]) {
    let small = Limits {
        max_entries: 1000,
        ..Limits::default()
    };
    if let Ok((entries, report)) = format.run(body, &small) {
        assert!(!entries.is_empty());
        assert!(entries.len() <= 1000);
        assert_report_adds_up(&report, &format!("{format:?}"));
        for r in &report.first_rejects {
            assert!(r.reason.chars().count() <= parse::MAX_REASON_CHARS);
            assert!(r.line >= 1 && r.line <= report.lines);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        for format in ALL {
            check_any(format, &body);
        }
        let mut zipish = b"PK\x03\x04".to_vec();
        zipish.extend_from_slice(&body);
        check_any(Format::IplocateZip, &zipish);
    }

    #[test]
    fn feed_like_text_never_panics(
        lines in proptest::collection::vec("[0-9a-fA-F:./,;#\" {}\\t\\[\\]ASNone_-]{0,48}", 0..24),
        crlf in any::<bool>(),
    ) {
        let body = lines.join(if crlf { "\r\n" } else { "\n" });
        for format in ALL {
            check_any(format, body.as_bytes());
        }
    }
}

/// Random bytes spliced into a real fixture at random places.
#[test]
fn mutated_fixtures_never_panic() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    let bodies = fixture_bodies();
    let strategy = (
        0..bodies.len(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 1..16),
    );
    runner
        .run(&strategy, |(which, at, noise)| {
            let (_, format, body) = &bodies[which];
            let at = at as usize % body.len();
            let mut mutated = body.clone();
            mutated.splice(at..(at + noise.len()).min(body.len()), noise);
            check_any(*format, &mutated);
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Committed fuzz corpus

/// Replays `fuzz/corpus/feed_*` so that a crash found by fuzzing stays fixed.
#[test]
fn fuzz_corpus_replays() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let targets = [
        ("feed_firehol", Format::Firehol),
        ("feed_spamhaus_drop", Format::SpamhausDrop),
        ("feed_asn_drop", Format::AsnDrop),
        ("feed_iplocate_csv", Format::IplocateCsv),
        ("feed_iplocate_zip", Format::IplocateZip),
    ];
    for (target, format) in targets {
        let dir = root.join(target);
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|f| f.unwrap().path())
            .collect();
        assert!(!files.is_empty(), "{target}: empty corpus");
        for file in files {
            let body = std::fs::read(&file).unwrap();
            let _ = format.run(&body, &Limits::default());
        }
    }
}
