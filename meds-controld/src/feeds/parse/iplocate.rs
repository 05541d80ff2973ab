//! `iplocate`: the IPLocate ip-to-asn database, `network,asn,country_code,name,org,domain`, as a
//! bare CSV ([`iplocate_csv`]) or zipped ([`iplocate_zip`], the published `ip-to-asn.csv.zip`).
//!
//! * Columns are found by their header names (`network`, `asn`, `country_code`), so a file with
//!   reordered or extra columns works. A header may appear again (concatenated files) and is
//!   re-read. Without any header the published order is assumed.
//! * `asn` empty, `0` or another reserved number → no ASN; `country_code` empty → no country;
//!   a row with neither is rejected. A malformed ASN or country rejects the row.
//! * Fields are CSV with quotes (`"Foo, Inc."`); `#` lines are comments.
//!
//! Country here is the ASN's registration country, not IP geolocation (upstream W18).
//!
//! ZIP: every regular member is parsed as such a CSV and the rows merged; directories,
//! symlinks and macOS resource forks (`__MACOSX/`, `._*`) are passed over. The members'
//! unpacked sizes together are bounded by [`Limits::max_body_bytes`], counted as the bytes
//! come out of the decompressor (a lying size field does not help a zip bomb), and the number
//! of members by [`Limits::max_zip_members`]. Only stored and deflated members are readable.
//! Reject reasons name the member; line numbers are within the member.

use std::io::{Cursor, Read};

use meds_proto::{Asn, AsnError, Cidr, CountryCode, IpAsn};

use super::csv::split_csv;
use super::{
    BOM, Collector, Limits, Line, ParseError, Parsed, check_size, clip, is_markup, parse_text,
    sample, scan_text,
};

/// Where the fields of a row are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Columns {
    network: usize,
    asn: Option<usize>,
    country: Option<usize>,
}

/// The published layout: `network,asn,country_code,name,org,domain`.
const PUBLISHED: Columns = Columns {
    network: 0,
    asn: Some(1),
    country: Some(2),
};

/// Line classifier for one CSV file; remembers the header.
struct Rows {
    columns: Columns,
}

impl Rows {
    fn new() -> Rows {
        Rows { columns: PUBLISHED }
    }

    fn line(&mut self, line: &str) -> Line<IpAsn> {
        if line.starts_with('#') {
            return Line::Comment;
        }
        let fields = match split_csv(line, ',') {
            Ok(fields) => fields,
            Err(err) => return Line::Rejected(format!("{err}: {}", sample(line))),
        };
        let named = |name: &str| fields.iter().position(|f| f.eq_ignore_ascii_case(name));
        // A header names a `network` column and holds no prefix (an org may be called "Network").
        if let Some(network) = named("network")
            && !fields.iter().any(|f| f.parse::<Cidr>().is_ok())
        {
            self.columns = Columns {
                network,
                asn: named("asn"),
                country: named("country_code"),
            };
            return Line::Comment;
        }
        let field = |at: Option<usize>| at.and_then(|i| fields.get(i)).map(|f| f.trim());
        let Some(network) = field(Some(self.columns.network)) else {
            return Line::Rejected(format!("no column {} (network)", self.columns.network + 1));
        };
        let prefix = match network.parse::<Cidr>() {
            Ok(prefix) => prefix,
            Err(err) => return Line::Rejected(err.to_string()),
        };
        let asn = match field(self.columns.asn).map(optional_asn).transpose() {
            Ok(asn) => asn.flatten(),
            Err(reason) => return Line::Rejected(reason),
        };
        let country = match field(self.columns.country) {
            None | Some("") => None,
            Some(code) => match CountryCode::from_feed(code) {
                Ok(code) => Some(code),
                Err(err) => return Line::Rejected(err.to_string()),
            },
        };
        if asn.is_none() && country.is_none() {
            return Line::Rejected(format!("{prefix}: neither an ASN nor a country"));
        }
        Line::Entry(IpAsn {
            prefix,
            asn,
            country,
        })
    }
}

/// An ASN field: `Ok(None)` for "no ASN" (empty, 0, reserved), `Err` for a malformed value.
pub(crate) fn optional_asn(text: &str) -> Result<Option<Asn>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<Asn>() {
        Ok(asn) => Ok(Some(asn)),
        Err(AsnError::Reserved(_)) => Ok(None),
        Err(err) => Err(err.to_string()),
    }
}

/// Parse an IPLocate ip-to-asn CSV body.
pub fn iplocate_csv(body: &[u8], limits: &Limits) -> Result<Parsed<IpAsn>, ParseError> {
    let mut rows = Rows::new();
    parse_text(body, limits, |line| rows.line(line))
}

/// Parse an IPLocate ip-to-asn ZIP: every CSV member, merged.
pub fn iplocate_zip(body: &[u8], limits: &Limits) -> Result<Parsed<IpAsn>, ParseError> {
    check_size(body, limits)?;
    let start = body.strip_prefix(BOM).unwrap_or(body).trim_ascii_start();
    if start.is_empty() {
        return Collector::<IpAsn>::new(limits).finish();
    }
    let first_line = start.split(|&b| b == b'\n').next().unwrap_or(start);
    if is_markup(&String::from_utf8_lossy(
        &first_line[..first_line.len().min(16)],
    )) {
        return Err(ParseError::Html {
            line: line_of(body, start),
        });
    }
    let mut archive =
        zip::ZipArchive::new(Cursor::new(body)).map_err(|e| ParseError::Zip(e.to_string()))?;
    if archive.len() > limits.max_zip_members {
        return Err(ParseError::TooManyMembers {
            count: archive.len(),
            limit: limits.max_zip_members,
        });
    }
    let mut collector = Collector::new(limits);
    let mut unpacked = 0usize;
    for index in 0..archive.len() {
        let mut member = archive
            .by_index(index)
            .map_err(|e| ParseError::Zip(format!("member {index}: {e}")))?;
        let name = match member.name() {
            Ok(name) => clip(&name, 60),
            Err(_) => format!("#{index}"),
        };
        if !member.is_file() || is_resource_fork(&name) {
            continue;
        }
        let remaining = limits.max_body_bytes.saturating_sub(unpacked);
        let too_large = || ParseError::UnpackedTooLarge {
            member: name.clone(),
            limit: limits.max_body_bytes,
        };
        if member.size() > remaining as u64 {
            return Err(too_large());
        }
        let capacity = usize::try_from(member.size()).unwrap_or(remaining);
        let data = read_bounded(&mut member, remaining, capacity)
            .map_err(|e| ParseError::Zip(format!("member {name:?}: {e}")))?
            .ok_or_else(too_large)?;
        unpacked += data.len();
        let mut rows = Rows::new();
        scan_text(&data, limits, &mut collector, Some(&name), |line| {
            rows.line(line)
        })?;
    }
    collector.finish()
}

/// The 1-based line number of `at` (a suffix of `body`).
fn line_of(body: &[u8], at: &[u8]) -> u64 {
    let before = &body[..body.len() - at.len()];
    before.iter().filter(|&&b| b == b'\n').count() as u64 + 1
}

/// macOS archivers add `__MACOSX/…` and `._name` entries holding resource forks, not data.
fn is_resource_fork(name: &str) -> bool {
    name.starts_with("__MACOSX/")
        || name
            .rsplit('/')
            .next()
            .is_some_and(|base| base.starts_with("._"))
}

/// Read everything from `reader` if it is at most `limit` bytes; `Ok(None)` as soon as it is
/// more (at most `limit + 1` bytes are ever read). `capacity` is a hint, capped at `limit`.
fn read_bounded(
    reader: &mut impl Read,
    limit: usize,
    capacity: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut data = Vec::with_capacity(capacity.min(limit));
    reader
        .take((limit as u64).saturating_add(1))
        .read_to_end(&mut data)?;
    if data.len() > limit {
        return Ok(None);
    }
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(p: &str, asn: Option<u32>, cc: Option<&str>) -> IpAsn {
        IpAsn {
            prefix: p.parse().unwrap(),
            asn: asn.map(|n| Asn::new(n).unwrap()),
            country: cc.map(|c| CountryCode::from_feed(c).unwrap()),
        }
    }

    #[test]
    fn rows_published_layout_and_edges() {
        let body = concat!(
            "network,asn,country_code,name,org,domain\n",
            "1.0.0.0/24,13335,US,\"Cloudflare, Inc.\",\"Cloudflare, Inc.\",cloudflare.com\n",
            "203.0.113.0/24,0,FR,,,\n",
            "198.51.100.0/24,AS64496,,\"Quote \"\"Q\"\" Ltd\",,\n",
            "192.0.2.0/24,23456,DE,,,\n",
            "192.0.2.128/25,0,,,,\n",
            "2001:db8::/32,64497,nl,x,y,z\n",
            "not-a-net,1,US,,,\n",
            "10.0.0.0/8,notanasn,US,,,\n",
            "10.0.0.0/8,1,USA,,,\n",
            "10.0.0.0/8,1,\"US,\n",
            "10.0.0.0/8\n",
        );
        let parsed = iplocate_csv(body.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            parsed.entries,
            [
                row("1.0.0.0/24", Some(13335), Some("us")),
                row("192.0.2.0/24", None, Some("de")),
                row("198.51.100.0/24", Some(64496), None),
                row("203.0.113.0/24", None, Some("fr")),
                row("2001:db8::/32", Some(64497), Some("nl")),
            ]
        );
        let r = &parsed.report;
        assert_eq!((r.lines, r.accepted, r.comments, r.rejected), (12, 5, 1, 6));
        assert!(
            r.first_rejects[0].reason.contains("neither"),
            "{:?}",
            r.first_rejects
        );
        assert_eq!(r.first_rejects[0].line, 6);
    }

    #[test]
    fn header_by_name_and_missing_columns() {
        let reordered = "domain,country_code,asn,network\nx,us,13335,1.0.0.0/24\n";
        let parsed = iplocate_csv(reordered.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(parsed.entries, [row("1.0.0.0/24", Some(13335), Some("us"))]);
        // No country column: rows need an ASN.
        let asn_only = "network,asn\n1.0.0.0/24,13335\n2.0.0.0/24,0\n";
        let parsed = iplocate_csv(asn_only.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(parsed.entries, [row("1.0.0.0/24", Some(13335), None)]);
        assert_eq!(parsed.report.rejected, 1);
        // No header at all: the published order.
        let bare = "1.0.0.0/24,13335,US\n";
        let parsed = iplocate_csv(bare.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(parsed.entries, [row("1.0.0.0/24", Some(13335), Some("us"))]);
        // An org called "Network" does not make a row a header.
        let org = "network,asn,country_code,name\n1.0.0.0/24,13335,US,Network\n";
        let parsed = iplocate_csv(org.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(parsed.report.accepted, 1);
    }

    #[test]
    fn read_bounded_stops_past_the_limit() {
        let data = [7u8; 100];
        for (limit, want) in [(100, Some(100)), (99, None), (0, None), (1000, Some(100))] {
            let got = read_bounded(&mut &data[..], limit, usize::MAX).unwrap();
            assert_eq!(got.map(|d| d.len()), want, "limit {limit}");
        }
        // An endless reader is cut off after limit + 1 bytes.
        let got = read_bounded(&mut std::io::repeat(1), 4096, 0).unwrap();
        assert_eq!(got, None);
    }

    #[test]
    fn resource_forks() {
        for (name, fork) in [
            ("__MACOSX/ip-to-asn.csv", true),
            ("._ip-to-asn.csv", true),
            ("dir/._x.csv", true),
            ("ip-to-asn.csv", false),
            ("dir/ip-to-asn.csv", false),
        ] {
            assert_eq!(is_resource_fork(name), fork, "{name}");
        }
    }

    #[test]
    fn html_instead_of_zip() {
        let page = b"\r\n  <!DOCTYPE html><html><body>404</body></html>";
        assert_eq!(
            iplocate_zip(page, &Limits::default()),
            Err(ParseError::Html { line: 2 })
        );
        assert!(matches!(
            iplocate_zip(b"PK\x03\x04junk", &Limits::default()),
            Err(ParseError::Zip(_))
        ));
        assert!(matches!(
            iplocate_zip(b"", &Limits::default()),
            Err(ParseError::NoData { .. })
        ));
    }
}
