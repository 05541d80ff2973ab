//! `feodo`: abuse.ch Feodo Tracker IP blocklists.
//!
//! Two layouts, told apart line by line:
//! * text (`ipblocklist.txt`, `ipblocklist_recommended.txt`): one IP per line, `#` comments,
//!   often CRLF line ends;
//! * CSV (`ipblocklist.csv`): `"first_seen_utc","dst_ip","dst_port",…` rows with `#` comments.
//!   The header (plain or commented out) is recognised and names the `dst_ip` column; a CSV row
//!   seen before any header uses the published layout (`dst_ip` is the second column).
//!
//! A line is a CSV row when it contains a comma; an IP never does.

use meds_proto::Cidr;

use super::{
    Limits, Line, ParseError, Parsed, csv::split_csv, parse_text, prefix, sample, strip_comment,
};

/// Position of `dst_ip` in the published CSV layout.
const DEFAULT_DST_IP_COLUMN: usize = 1;
const DST_IP: &str = "dst_ip";

/// Parse a Feodo Tracker blocklist (text or CSV).
pub fn feodo(body: &[u8], limits: &Limits) -> Result<Parsed<Cidr>, ParseError> {
    let mut dst_ip = DEFAULT_DST_IP_COLUMN;
    parse_text(body, limits, |line| {
        if let Some(comment) = line.strip_prefix('#') {
            if let Some(column) = header_column(comment) {
                dst_ip = column;
            }
            return Line::Comment;
        }
        if !line.contains(',') {
            return match strip_comment(line, &['#']) {
                "" => Line::Comment,
                value => prefix(value),
            };
        }
        if let Some(column) = header_column(line) {
            dst_ip = column;
            return Line::Comment;
        }
        match split_csv(line, ',') {
            Ok(fields) => match fields.get(dst_ip) {
                Some(value) => prefix(value),
                None => Line::Rejected(format!("no column {} ({DST_IP})", dst_ip + 1)),
            },
            Err(err) => Line::Rejected(format!("{err}: {}", sample(line))),
        }
    })
}

/// The index of the `dst_ip` column if `line` is the CSV header.
fn header_column(line: &str) -> Option<usize> {
    let fields = split_csv(line.trim(), ',').ok()?;
    fields
        .iter()
        .position(|f| f.trim().eq_ignore_ascii_case(DST_IP))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &str) -> Result<Vec<String>, ParseError> {
        feodo(body.as_bytes(), &Limits::default())
            .map(|p| p.entries.iter().map(Cidr::to_string).collect())
    }

    #[test]
    fn layouts() {
        let cases: [(&str, &[&str]); 5] = [
            (
                "# DstIP\r\n8.8.8.8\r\n203.0.113.9\r\n# END 2 entries",
                &["8.8.8.8/32", "203.0.113.9/32"],
            ),
            (
                "#\n\"first_seen_utc\",\"dst_ip\",\"dst_port\"\n\"2024-01-01 00:00:00\",\"203.0.113.9\",\"443\"\n",
                &["203.0.113.9/32"],
            ),
            // Commented header naming another column.
            (
                "# \"dst_port\",\"dst_ip\"\n\"443\",\"203.0.113.9\"\n",
                &["203.0.113.9/32"],
            ),
            // Reordered plain header.
            (
                "dst_ip,first_seen_utc\n203.0.113.9,2024-01-01\n",
                &["203.0.113.9/32"],
            ),
            // No header: the published layout.
            (
                "\"2024-01-01 00:00:00\",\"203.0.113.9\",\"443\"\n",
                &["203.0.113.9/32"],
            ),
        ];
        for (body, want) in cases {
            assert_eq!(run(body).unwrap(), want, "{body:?}");
        }
    }

    #[test]
    fn bad_rows_are_rejected() {
        let body = b"a,b,dst_ip\n1,2,203.0.113.9\nx,y\n\"a\",\"b\n1,2,nope\n";
        let parsed = feodo(body, &Limits::default()).unwrap();
        let r = &parsed.report;
        assert_eq!((r.lines, r.accepted, r.comments, r.rejected), (5, 1, 1, 3));
        assert!(r.first_rejects[0].reason.contains("no column 3"), "{r:?}");
        assert!(r.first_rejects[1].reason.contains("not closed"));
        assert!(r.first_rejects[2].reason.contains("nope"));
    }
}
