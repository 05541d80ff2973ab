//! `iptoasn`: IP-to-ASN tables published as address ranges, turned into prefixes with
//! [`range_to_cidrs`](super::range_to_cidrs) (a range gives up to 62 IPv4 or 254 IPv6 rows):
//!
//! * [`iptoasn_tsv`]: iptoasn.com `ip2asn-v4.tsv` / `ip2asn-v6.tsv` / `ip2asn-combined.tsv`,
//!   `range_start\trange_end\tAS_number\tcountry_code\tAS_description`. AS 0 marks an unrouted
//!   range ("Not routed", country `None`): such lines are counted as skipped. A country of
//!   `None` or `Unknown`, or empty, means no country.
//! * [`ip_location_db_asn_csv`]: sapics/ip-location-db `asn-ipv4.csv` / `asn-ipv6.csv`,
//!   `range_start,range_end,AS_number,AS_organization` (CSV with quotes, no header, no country).
//!
//! Reserved AS numbers other than 0 mean "no ASN"; a row left with neither an ASN nor a country
//! is rejected. `#` lines are comments.

use std::net::IpAddr;

use meds_proto::{Asn, CountryCode, IpAsn};

use super::csv::split_csv;
use super::iplocate::optional_asn;
use super::{Limits, Line, ParseError, Parsed, parse_text, range_to_cidrs, sample};

/// Parse an iptoasn.com `ip2asn-*.tsv` body.
pub fn iptoasn_tsv(body: &[u8], limits: &Limits) -> Result<Parsed<IpAsn>, ParseError> {
    parse_text(body, limits, |line| {
        if line.starts_with('#') {
            return Line::Comment;
        }
        let mut fields = line.split('\t').map(str::trim);
        let (Some(start), Some(end), Some(asn)) = (fields.next(), fields.next(), fields.next())
        else {
            return Line::Rejected(format!(
                "expected start, end and AS number: {}",
                sample(line)
            ));
        };
        let country = match fields.next() {
            None | Some("" | "None" | "Unknown") => None,
            Some(code) => match CountryCode::from_feed(code) {
                Ok(code) => Some(code),
                Err(err) => return Line::Rejected(err.to_string()),
            },
        };
        range_row(start, end, asn, country)
    })
}

/// Parse a sapics/ip-location-db `asn-ipv4.csv` / `asn-ipv6.csv` body.
pub fn ip_location_db_asn_csv(body: &[u8], limits: &Limits) -> Result<Parsed<IpAsn>, ParseError> {
    parse_text(body, limits, |line| {
        if line.starts_with('#') {
            return Line::Comment;
        }
        match split_csv(line, ',') {
            Ok(fields) => match (fields.first(), fields.get(1), fields.get(2)) {
                (Some(start), Some(end), Some(asn)) => range_row(start, end, asn, None),
                _ => Line::Rejected(format!(
                    "expected start, end and AS number: {}",
                    sample(line)
                )),
            },
            Err(err) => Line::Rejected(format!("{err}: {}", sample(line))),
        }
    })
}

/// One range row: `Skipped` for AS 0, otherwise its prefixes.
fn range_row(start: &str, end: &str, asn: &str, country: Option<CountryCode>) -> Line<IpAsn> {
    if asn == "0" {
        return Line::Skipped;
    }
    let asn: Option<Asn> = match optional_asn(asn) {
        Ok(asn) => asn,
        Err(reason) => return Line::Rejected(reason),
    };
    let (start, end) = match (start.parse::<IpAddr>(), end.parse::<IpAddr>()) {
        (Ok(start), Ok(end)) => (start, end),
        (Err(_), _) => return Line::Rejected(format!("{} is not an IP address", sample(start))),
        (_, Err(_)) => return Line::Rejected(format!("{} is not an IP address", sample(end))),
    };
    if asn.is_none() && country.is_none() {
        return Line::Rejected(format!("{start} - {end}: neither an ASN nor a country"));
    }
    match range_to_cidrs(start, end) {
        Ok(prefixes) => Line::Entries(
            prefixes
                .into_iter()
                .map(|prefix| IpAsn {
                    prefix,
                    asn,
                    country,
                })
                .collect(),
        ),
        Err(err) => Line::Rejected(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(parsed: &Parsed<IpAsn>) -> Vec<String> {
        parsed
            .entries
            .iter()
            .map(|r| meds_proto::Entry::IpAsn(*r).to_string())
            .collect()
    }

    #[test]
    fn tsv_rows() {
        let body = concat!(
            "1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET - Cloudflare, Inc.\n",
            "1.0.1.0\t1.0.3.255\t0\tNone\tNot routed\n",
            "1.0.4.0\t1.0.5.255\t38803\tAU\tGTELECOM-AUSTRALIA\n",
            "1.0.6.0\t1.0.6.0\t64496\tNone\tX\n",
            "2001:db8::\t2001:db8::ffff\t64497\tUnknown\n",
            "1.0.7.0\t1.0.7.255\t23456\tNone\tAS_TRANS\n",
            "1.0.8.0\t1.0.7.255\t64496\tUS\treversed\n",
            "1.0.9.0\t2001:db8::\t64496\tUS\tmixed\n",
            "1.0.10.0\t1.0.10.255\n",
            "1.0.11.0\t1.0.11.255\t64496\tUSA\n",
            "1.0.12.0\t1.0.12.255\tAS64496x\tUS\n",
        );
        let parsed = iptoasn_tsv(body.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            rows(&parsed),
            [
                "1.0.0.0/24 13335 us",
                "1.0.4.0/23 38803 au",
                "1.0.6.0/32 64496 -",
                "2001:db8::/112 64497 -",
            ]
        );
        let r = &parsed.report;
        assert_eq!((r.lines, r.accepted, r.skipped, r.rejected), (11, 4, 1, 6));
        assert_eq!(r.first_rejects[0].line, 6);
        assert!(r.first_rejects[0].reason.contains("neither"));
        assert!(r.first_rejects[1].reason.contains("ends before it starts"));
        assert!(r.first_rejects[2].reason.contains("mixes"));
    }

    #[test]
    fn csv_rows() {
        let body = concat!(
            "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n",
            "5.133.248.0,5.133.255.255,197227,\"Poznanska \"\"Winogrady\"\" w Poznaniu\"\n",
            "1.0.1.0,1.0.1.255,0,none\n",
            "2001:200:1ba::,2001:200:1ba:ffff:ffff:ffff:ffff:ffff,24047,\"ISC, Inc.\"\n",
            "1.0.2.0,1.0.2.255\n",
            "::ffff:1.0.0.0,::ffff:1.0.0.255,1,mapped\n",
        );
        let parsed = ip_location_db_asn_csv(body.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            rows(&parsed),
            [
                "1.0.0.0/24 13335 -",
                "5.133.248.0/21 197227 -",
                "2001:200:1ba::/48 24047 -"
            ]
        );
        let r = &parsed.report;
        assert_eq!((r.lines, r.accepted, r.skipped, r.rejected), (6, 3, 1, 2));
        assert!(r.first_rejects[1].reason.contains("IPv4-mapped"));
    }
}
