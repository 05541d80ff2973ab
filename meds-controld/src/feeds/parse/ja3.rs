//! `ja3`: abuse.ch SSLBL JA3 fingerprint blocklist (`ja3_fingerprints.csv`).
//!
//! Layout: a `#` banner (the column header `# ja3_md5,Firstseen,Lastseen,Listingreason` is part
//! of it, and the file ends with `# END (N) entries`, often without a final line end), then one
//! row per fingerprint: `ja3_md5,Firstseen,Lastseen,Listingreason`. Only the first column is
//! used; it must be 32 hexadecimal digits (either case). An uncommented header row counts as a
//! comment. Rows are told apart by their first field only, so a listing reason with commas or
//! quotes does not matter.

use meds_proto::Ja3Hash;

use super::{FeedEntry, Limits, Line, ParseError, Parsed, parse_text, sample};

/// Name of the first column in the header row.
const HEADER: &str = "ja3_md5";

impl FeedEntry for Ja3Hash {
    type Key = Ja3Hash;
    fn key(&self) -> &Ja3Hash {
        self
    }
}

/// Parse the SSLBL JA3 fingerprint CSV.
pub fn ja3_sslbl(body: &[u8], limits: &Limits) -> Result<Parsed<Ja3Hash>, ParseError> {
    parse_text(body, limits, |line| {
        if line.starts_with('#') {
            return Line::Comment;
        }
        let first = line.split(',').next().unwrap_or(line).trim();
        if first.eq_ignore_ascii_case(HEADER) {
            return Line::Comment;
        }
        match first.parse::<Ja3Hash>() {
            Ok(hash) => Line::Entry(hash),
            Err(_) => Line::Rejected(format!(
                "{} is not a JA3 hash (32 hexadecimal digits)",
                sample(first)
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows() {
        let body = concat!(
            "# abuse.ch banner\n",
            "# ja3_md5,Firstseen,Lastseen,Listingreason\n",
            "ja3_md5,Firstseen,Lastseen,Listingreason\n",
            "B386946A5A44D1DDCC843BC75336DFCE,2017-07-14 18:08:15,2019-07-27 20:42:54,Dridex\n",
            "b386946a5a44d1ddcc843bc75336dfce,2017-07-14 18:08:15,2019-07-27 20:42:54,Dridex\n",
            "1aa7bf8b97e540ca5edd75f7b8384bfa , x, y, \"Trickbot, maybe\"\n",
            "1aa7bf8b97e540ca5edd75f7b8384bf,2017-07-14,2019-07-27,short\n",
            ",,,\n",
            "# END (4) entries",
        );
        let parsed = ja3_sslbl(body.as_bytes(), &Limits::default()).unwrap();
        let got: Vec<String> = parsed.entries.iter().map(Ja3Hash::to_string).collect();
        assert_eq!(
            got,
            [
                "1aa7bf8b97e540ca5edd75f7b8384bfa",
                "b386946a5a44d1ddcc843bc75336dfce"
            ]
        );
        let r = &parsed.report;
        assert_eq!(
            (r.lines, r.accepted, r.comments, r.rejected, r.duplicates),
            (9, 3, 4, 2, 1)
        );
        assert_eq!(r.first_rejects[0].line, 7);
        assert!(
            r.first_rejects[0]
                .reason
                .contains("\"1aa7bf8b97e540ca5edd75f7b8384bf\"")
        );
        assert_eq!(r.first_rejects[1].line, 8);
    }

    #[test]
    fn refusals() {
        let limits = Limits::default();
        assert!(matches!(
            ja3_sslbl(b"# only a banner\n# END (0) entries", &limits),
            Err(ParseError::NoData { .. })
        ));
        assert_eq!(
            ja3_sslbl(b"<html><body>404</body></html>", &limits),
            Err(ParseError::Html { line: 1 })
        );
    }
}
