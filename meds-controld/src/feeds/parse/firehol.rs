//! `firehol`: FireHOL `*.netset` (and any plain list of addresses): one IPv4 or IPv6 address or
//! CIDR per line, `#` comments, also after a value.
//!
//! Unlike the original, a bare IPv6 address is accepted (as a /128), and a CIDR with host bits
//! set is masked (`10.1.2.3/8` is `10.0.0.0/8`).

use meds_proto::Cidr;

use super::{Limits, ParseError, Parsed, parse_text, prefix, strip_comment};

/// Parse a FireHOL netset.
pub fn firehol(body: &[u8], limits: &Limits) -> Result<Parsed<Cidr>, ParseError> {
    parse_text(body, limits, |line| match strip_comment(line, &['#']) {
        "" => super::Line::Comment,
        value => prefix(value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let body = b"#\n# firehol_level1\n#\n0.0.0.0/8\n45.33.2.79\n2001:db8::1\n10.1.2.3/8 # masked\n45.33.2.79\n1.2.3.4 5.6.7.8\n";
        let parsed = firehol(body, &Limits::default()).unwrap();
        let got: Vec<String> = parsed.entries.iter().map(Cidr::to_string).collect();
        assert_eq!(
            got,
            [
                "0.0.0.0/8",
                "10.0.0.0/8",
                "45.33.2.79/32",
                "2001:db8::1/128"
            ]
        );
        let r = &parsed.report;
        assert_eq!(
            (r.lines, r.accepted, r.comments, r.rejected, r.duplicates),
            (9, 5, 3, 1, 1)
        );
        assert_eq!(r.first_rejects[0].line, 9);
    }
}
