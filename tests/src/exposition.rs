//! A strict parser of the Prometheus text exposition format (version 0.0.4), for tests.
//!
//! Self-contained (std only): meds-controld's tests include this file too (`#[path]`), so the
//! unit, REST and end-to-end tests check the exposition with one parser. Strict: every line is
//! a `# HELP`, a `# TYPE` (before the family's samples, once per family) or a sample of a
//! declared family (histograms: `_bucket` with an `le` label, `_sum`, `_count`), metric and
//! label names must be valid, label values properly quoted and escaped, a label appears at
//! most once per sample, a series at most once, values are floats (`+Inf`, `-Inf`, `NaN`), and
//! the text ends with a newline.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

/// One sample: metric name, labels (sorted) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// Family name → type (`counter`, `gauge`, `histogram`, `summary`, `untyped`).
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the sample `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Every sample of `name`.
    pub fn samples_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Sum of the values of `name` (all label sets).
    pub fn sum(&self, name: &str) -> f64 {
        self.samples_of(name).map(|s| s.value).sum()
    }
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) && !s.is_empty() => {
            s.parse().map_err(|_| format!("bad value {s:?}"))
        }
        _ => Err(format!("bad value {s:?}")),
    }
}

/// The family a sample name belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            )
        {
            return Some(base);
        }
    }
    None
}

/// Parse the labels of `{...}` starting after the `{`; returns the labels and the rest after
/// the closing `}`.
fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let name = &s[..eq];
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        s = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("newline in label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} repeated"));
        }
        s = &s[end + 1..];
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// Parse `text`; the error names the line.
pub fn parse(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition does not end with a newline".into());
    }
    let mut out = Exposition::default();
    let mut seen_samples = BTreeSet::new();
    let mut families_with_samples = BTreeSet::new();
    let mut helped = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !valid_metric_name(name) || !helped.insert(name.to_owned()) {
                return Err(at("bad or repeated HELP".into()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (Some(name), Some(kind), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(at("TYPE needs a name and a type".into()));
            };
            if !valid_metric_name(name) {
                return Err(at("bad metric name".into()));
            }
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind}")));
            }
            if families_with_samples.contains(name)
                || out.types.insert(name.to_owned(), kind.to_owned()).is_some()
            {
                return Err(at("TYPE repeated or after samples".into()));
            }
            continue;
        }
        if line.starts_with('#') {
            continue; // a comment
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("sample without a value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(inner) => parse_labels(inner).map_err(at)?,
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or_default()).map_err(at)?;
        if let Some(ts) = fields.next()
            && ts.parse::<i64>().is_err()
        {
            return Err(at("bad timestamp".into()));
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &out.types)
            .ok_or_else(|| at("sample of an undeclared family".into()))?
            .to_owned();
        if name.ends_with("_bucket") && family != name && !labels.contains_key("le") {
            return Err(at("histogram bucket without le".into()));
        }
        let kind = out.types.get(&family).cloned().unwrap_or_default();
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("negative or NaN counter".into()));
        }
        if !seen_samples.insert(format!("{name}{labels:?}")) {
            return Err(at("series repeated".into()));
        }
        families_with_samples.insert(family);
        out.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_valid_exposition() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total{filter=\"ip\",reason=\"Black\\\"List\"} 3\n\
                    # TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.7\nh_count 2\n\
                    # TYPE g gauge\ng 1.5e3\n";
        let e = parse(text).unwrap();
        assert_eq!(
            e.value("a_total", &[("filter", "ip"), ("reason", "Black\"List")]),
            Some(3.0)
        );
        assert_eq!(e.value("h_count", &[]), Some(2.0));
        assert_eq!(e.value("g", &[]), Some(1500.0));
    }

    #[test]
    fn refuses_malformed_lines() {
        let bad = [
            "a_total 1\n",                              // undeclared
            "# TYPE a counter\na{x=\"1\" 1\n",          // unterminated labels
            "# TYPE a counter\na{x=1} 1\n",             // unquoted
            "# TYPE a counter\na{x=\"1\",x=\"2\"} 1\n", // repeated label
            "# TYPE a counter\na one\n",                // bad value
            "# TYPE a counter\na -1\n",                 // negative counter
            "# TYPE a counter\na 1\na 2\n",             // repeated series
            "# TYPE a counter\na 1",                    // no final newline
            "# TYPE a counter\n# TYPE a gauge\n",       // repeated TYPE
            "# TYPE 1a counter\n",                      // bad name
            "# TYPE a widget\n",                        // bad type
            "# TYPE a counter\na{1x=\"1\"} 1\n",        // bad label name
            "# TYPE a counter\na{x=\"\\q\"} 1\n",       // bad escape
            "# TYPE h histogram\nh_bucket 1\n",         // bucket without le
            "# TYPE a counter\na  1\n",                 // double space
        ];
        for text in bad {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }
}
