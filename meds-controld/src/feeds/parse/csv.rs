//! `csv`: the fields of one CSV line (RFC 4180 quoting, one line at a time).
//!
//! A field that starts with `"` is quoted: it runs to the next lone `"`, `""` inside it is one
//! `"`, and commas inside it are data (`"Foo, Inc."`). After the closing quote only the
//! separator or the end of the line may follow. An unquoted field is taken as it is (a `"`
//! inside it is data). Unquoted fields are trimmed; quoted ones are kept exactly.
//!
//! Feeds are read line by line, so a quoted field cannot span lines: such a line is refused
//! ([`CsvError::Unterminated`]) and so, most likely, is the line that continues it.

use std::borrow::Cow;

/// Why a line is not well-formed CSV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("quoted field {field} is not closed on this line")]
    Unterminated { field: usize },
    #[error("text after the closing quote of field {field}")]
    TextAfterQuote { field: usize },
}

/// Split one line (without its line end) on `separator`. Fields borrow from `line` unless they
/// contain doubled quotes.
pub fn split_csv(line: &str, separator: char) -> Result<Vec<Cow<'_, str>>, CsvError> {
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        let field = fields.len() + 1;
        let trimmed = rest.trim_start();
        if let Some(quoted) = trimmed.strip_prefix('"') {
            let (value, after) = quoted_field(quoted).ok_or(CsvError::Unterminated { field })?;
            fields.push(value);
            let after = after.trim_start();
            match after.strip_prefix(separator) {
                Some(next) => rest = next,
                None if after.is_empty() => return Ok(fields),
                None => return Err(CsvError::TextAfterQuote { field }),
            }
        } else {
            match rest.split_once(separator) {
                Some((value, next)) => {
                    fields.push(Cow::Borrowed(value.trim()));
                    rest = next;
                }
                None => {
                    fields.push(Cow::Borrowed(rest.trim()));
                    return Ok(fields);
                }
            }
        }
    }
}

/// The value of a quoted field (after its opening quote) and the text after its closing quote.
fn quoted_field(text: &str) -> Option<(Cow<'_, str>, &str)> {
    let mut owned: Option<String> = None;
    let mut start = 0;
    let mut search = 0;
    loop {
        let at = search + text[search..].find('"')?;
        if text[at + 1..].starts_with('"') {
            // A doubled quote: keep one.
            owned
                .get_or_insert_with(String::new)
                .push_str(&text[start..=at]);
            start = at + 2;
            search = at + 2;
        } else {
            let value = match owned {
                Some(mut s) => {
                    s.push_str(&text[start..at]);
                    Cow::Owned(s)
                }
                None => Cow::Borrowed(&text[..at]),
            };
            return Some((value, &text[at + 1..]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(line: &str) -> Result<Vec<String>, CsvError> {
        split_csv(line, ',').map(|f| f.into_iter().map(Cow::into_owned).collect())
    }

    #[test]
    fn splits() {
        let cases: [(&str, &[&str]); 12] = [
            ("", &[""]),
            ("a", &["a"]),
            ("a,b,c", &["a", "b", "c"]),
            ("a,,c,", &["a", "", "c", ""]),
            (" a , b ", &["a", "b"]),
            ("\"Foo, Inc.\",x", &["Foo, Inc.", "x"]),
            ("1,\"say \"\"hi\"\"\",2", &["1", "say \"hi\"", "2"]),
            ("\"\"", &[""]),
            ("\"\"\"\"", &["\""]),
            ("\"a\" , b", &["a", "b"]),
            ("a\"b,c", &["a\"b", "c"]),
            ("\"é,ü\",ß", &["é,ü", "ß"]),
        ];
        for (line, want) in cases {
            assert_eq!(split(line).unwrap(), want, "{line:?}");
        }
    }

    #[test]
    fn refuses_broken_quoting() {
        assert_eq!(split("\"open"), Err(CsvError::Unterminated { field: 1 }));
        assert_eq!(
            split("a,\"open\"\""),
            Err(CsvError::Unterminated { field: 2 })
        );
        assert_eq!(
            split("\"a\"b,c"),
            Err(CsvError::TextAfterQuote { field: 1 })
        );
    }

    #[test]
    fn tab_separator() {
        assert_eq!(
            split_csv("1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET, Inc.", '\t').unwrap(),
            ["1.0.0.0", "1.0.0.255", "13335", "US", "CLOUDFLARENET, Inc."]
        );
    }

    fn quote(field: &str) -> String {
        format!("\"{}\"", field.replace('"', "\"\""))
    }

    proptest! {
        #[test]
        fn quoted_fields_round_trip(fields in proptest::collection::vec("[^\\r\\n]{0,12}", 1..6)) {
            let line: Vec<String> = fields.iter().map(|f| quote(f)).collect();
            let got = split(&line.join(",")).unwrap();
            prop_assert_eq!(got, fields);
        }

        #[test]
        fn never_panics(line in "\\PC{0,60}") {
            let _ = split_csv(&line, ',');
        }
    }
}
