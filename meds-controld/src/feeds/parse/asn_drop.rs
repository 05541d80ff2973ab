//! `asn_drop`: Spamhaus ASN-DROP (`asndrop.json`): NDJSON records `{"asn":932,"rir":"arin",…}`
//! and a final `{"type":"metadata",…}` record, which counts as a comment. The older text layout
//! (`AS932 ; US | XNNET`, `;` comments) is read too.
//!
//! Reserved numbers (0, 23456, 4294967295) are rejected: they never originate traffic.

use meds_proto::Asn;
use serde::Deserialize;

use super::{Limits, Line, ParseError, Parsed, parse_text, sample, strip_comment};

#[derive(Deserialize)]
struct Record {
    asn: Option<u64>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Parse a Spamhaus ASN-DROP list.
pub fn asn_drop(body: &[u8], limits: &Limits) -> Result<Parsed<Asn>, ParseError> {
    parse_text(body, limits, |line| {
        if line.starts_with('{') {
            return json_line(line);
        }
        match strip_comment(line, &[';', '#']) {
            "" => Line::Comment,
            value => match value.parse::<Asn>() {
                Ok(asn) => Line::Entry(asn),
                Err(err) => Line::Rejected(err.to_string()),
            },
        }
    })
}

fn json_line(line: &str) -> Line<Asn> {
    match serde_json::from_str::<Record>(line) {
        Ok(Record { asn: Some(n), .. }) => {
            match u32::try_from(n)
                .map_err(|_| ())
                .and_then(|n| Asn::new(n).map_err(|_| ()))
            {
                Ok(asn) => Line::Entry(asn),
                Err(()) => Line::Rejected(format!("{n} is not a usable AS number")),
            }
        }
        Ok(Record {
            kind: Some(kind), ..
        }) if kind == "metadata" => Line::Comment,
        Ok(_) => Line::Rejected(format!(
            "JSON record without an \"asn\" field: {}",
            sample(line)
        )),
        Err(err) => Line::Rejected(format!("not a JSON record: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records() {
        let body = concat!(
            "{\"asn\":932,\"rir\":\"arin\",\"domain\":\"xn.net\",\"cc\":\"US\",\"asname\":\"XNNET\"}\n",
            "{\"asn\":4294967294}\n",
            "{\"asn\":0}\n",
            "{\"asn\":23456}\n",
            "{\"asn\":4294967296}\n",
            "{\"asn\":-1}\n",
            "{\"asn\":\"AS1\"}\n",
            "{\"rir\":\"arin\"}\n",
            "; ASN-DROP text\n",
            "AS64496 ; US | EXAMPLE\n",
            "{\"type\":\"metadata\",\"timestamp\":1709006105,\"size\":17905,\"records\":201}\n",
        );
        let parsed = asn_drop(body.as_bytes(), &Limits::default()).unwrap();
        let got: Vec<u32> = parsed.entries.iter().map(|a| a.get()).collect();
        assert_eq!(got, [932, 64496, 4_294_967_294]);
        let r = &parsed.report;
        assert_eq!((r.lines, r.accepted, r.comments, r.rejected), (11, 3, 2, 6));
        assert_eq!(r.first_rejects[0].reason, "0 is not a usable AS number");
        assert_eq!(
            r.first_rejects[2].reason,
            "4294967296 is not a usable AS number"
        );
    }
}
