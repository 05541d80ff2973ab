//! `spamhaus`: Spamhaus DROP (`drop.txt`, `dropv6.txt`, `drop_v4.json`, `drop_v6.json`).
//!
//! Two layouts, told apart line by line:
//! * text: `1.10.16.0/20 ; SBL256894`, with `;` comment lines (`; Spamhaus DROP List …`,
//!   `; EOF`);
//! * NDJSON: one object per line, `{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}`,
//!   and a final `{"type":"metadata",…}` record, which counts as a comment.

use meds_proto::Cidr;
use serde::Deserialize;

use super::{Limits, Line, ParseError, Parsed, parse_text, prefix, strip_comment};

#[derive(Deserialize)]
struct Record {
    cidr: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Parse a Spamhaus DROP list (text or NDJSON, IPv4 or IPv6).
pub fn spamhaus_drop(body: &[u8], limits: &Limits) -> Result<Parsed<Cidr>, ParseError> {
    parse_text(body, limits, |line| {
        if line.starts_with('{') {
            return json_line(line);
        }
        match strip_comment(line, &[';', '#']) {
            "" => Line::Comment,
            value => prefix(value),
        }
    })
}

fn json_line(line: &str) -> Line<Cidr> {
    match serde_json::from_str::<Record>(line) {
        Ok(Record {
            cidr: Some(cidr), ..
        }) => prefix(&cidr),
        Ok(Record {
            kind: Some(kind), ..
        }) if kind == "metadata" => Line::Comment,
        Ok(_) => Line::Rejected("JSON record without a \"cidr\" field".to_string()),
        Err(err) => Line::Rejected(format!("not a JSON record: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_lines() {
        let body = concat!(
            "; Spamhaus DROP List\n",
            "1.10.16.0/20 ; SBL256894\n",
            "2001:678:254::/48 ; SBL697648\n",
            "{\"cidr\":\"1.19.0.0/16\",\"sblid\":\"SBL434604\",\"rir\":\"apnic\"}\n",
            "{\"type\":\"metadata\",\"timestamp\":1784798042,\"records\":1670}\n",
            "{\"sblid\":\"SBL1\"}\n",
            "{\"cidr\":12}\n",
            "{\"cidr\":\"1.2.3.0/24\"\n",
            "; EOF\n",
        );
        let parsed = spamhaus_drop(body.as_bytes(), &Limits::default()).unwrap();
        let got: Vec<String> = parsed.entries.iter().map(Cidr::to_string).collect();
        assert_eq!(got, ["1.10.16.0/20", "1.19.0.0/16", "2001:678:254::/48"]);
        let r = &parsed.report;
        assert_eq!((r.lines, r.accepted, r.comments, r.rejected), (9, 3, 3, 3));
        assert!(r.first_rejects[0].reason.contains("without a \"cidr\""));
        assert!(r.first_rejects[1].reason.starts_with("not a JSON record"));
        assert_eq!(r.first_rejects[2].line, 8);
    }
}
