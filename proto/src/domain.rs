//! [`DomainName`]: a validated, normalised DNS name, the unit of the domain allowlist, the
//! domain blocklist and the hosts-file feeds.
//!
//! Normalisation (both constructors):
//! * surrounding ASCII whitespace is trimmed, then **one** trailing dot (the DNS root) is dropped:
//!   `Example.COM.` is `example.com`;
//! * ASCII letters are lower-cased (DNS names are case-insensitive);
//! * a name with non-ASCII characters goes through IDNA (UTS #46 ToASCII, non-transitional,
//!   via the `idna` crate): `Bücher.example` is `xn--bcher-kva.example`. Matching only ever sees
//!   the ASCII form, which is what DNS queries and TLS SNI carry.
//!
//! Rules (both constructors):
//! * labels are 1..=63 bytes, the whole name (without the trailing dot) at most 253 bytes,
//!   i.e. at most 255 bytes on the wire;
//! * characters are letters, digits, `-` and `_`. The underscore is not a hostname character
//!   (RFC 952/1123) but it is a valid DNS byte, used by service labels (`_dmarc`, `_sip._tcp`),
//!   and real blocklists carry names with it; refusing it would drop real entries;
//! * no empty label (`a..b`, a leading dot, a lone `.`), no `*` (there are no wildcards: an entry
//!   already matches every subdomain), no spaces or other punctuation;
//! * the last label is not all digits: that is an IPv4 address or a typo, never a registrable
//!   name (RFC 3696 §2), and as a suffix it would match nothing useful;
//! * a single label is allowed (`zip`, `internal`): blocking a whole top-level domain is a real
//!   use for a user. Callers that read less trusted sources (the hosts feeds) decide for
//!   themselves whether to accept single-label entries.
//!
//! The two constructors differ where real data and typed input differ:
//! * [`DomainName::parse_user`] (also [`FromStr`]), for names a person typed: a label must not
//!   start or end with `-` (RFC 1123, RFC 5891 §4.2.3.1), and an `xn--` label must be a valid
//!   A-label (it decodes to Unicode that passes the UTS #46 validity checks). The RFC 5891 rule
//!   against `--` in the third and fourth positions is *not* applied to other labels: real names
//!   such as YouTube's `r3---sn-…` CDN nodes have it.
//! * [`DomainName::from_feed`], for names read from blocklists: leading and trailing hyphens are
//!   accepted and `xn--` labels are only checked for their characters, since DNS itself carries
//!   such names and a blocklist entry that never resolves costs nothing.
//!
//! No I/O; errors name the offending value (clipped to [`MAX_QUOTED_CHARS`]).

use std::fmt;
use std::str::FromStr;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

/// Longest label, in bytes (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// Longest name in text form without the trailing dot, in bytes (255 on the wire).
pub const MAX_NAME_LEN: usize = 253;
/// Longest part of an offending value quoted in an error message, in characters.
pub const MAX_QUOTED_CHARS: usize = 80;
/// Longest input looked at: anything longer cannot become a valid name, even after IDNA
/// mapping removes characters (UTS #46 removes only a few, such as soft hyphens), and is refused
/// before any processing, so that a hostile value costs nothing.
const MAX_INPUT_BYTES: usize = 1024;

/// A validated DNS name: lower-case ASCII, labels of letters, digits, `-` and `_`, no trailing
/// dot. Ordered and compared as its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(Box<str>);

/// Why a value is not a valid domain name. Every message names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("empty value: expected a domain name such as \"example.com\"")]
    Empty,
    #[error("{name:?} is {len} bytes long, over the limit of {MAX_NAME_LEN}")]
    TooLong { name: String, len: usize },
    #[error("{name:?} has an empty label (a leading dot, \"..\" or more than one trailing dot)")]
    EmptyLabel { name: String },
    #[error("{name:?}: label {label:?} is {len} bytes long, over the limit of {MAX_LABEL_LEN}")]
    LabelTooLong {
        name: String,
        label: String,
        len: usize,
    },
    #[error(
        "{name:?}: wildcards are not supported; an entry such as \"example.com\" already matches every subdomain"
    )]
    Wildcard { name: String },
    #[error("{name:?}: character {ch:?} is not allowed (letters, digits, '-', '_' and '.' only)")]
    InvalidChar { name: String, ch: char },
    #[error("{name:?}: label {label:?} starts or ends with '-'")]
    Hyphen { name: String, label: String },
    #[error("{name:?}: top-level label {label:?} is all digits (an IP address is not a domain)")]
    NumericTld { name: String, label: String },
    #[error("{name:?} is not a valid internationalised domain name (IDNA/UTS #46)")]
    Idna { name: String },
}

/// Which rule set a constructor applies; see the module documentation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rules {
    User,
    Feed,
}

impl DomainName {
    /// A name a person typed (REST API, `medsctl`): the strict rules.
    pub fn parse_user(raw: &str) -> Result<DomainName, DomainError> {
        DomainName::parse(raw, Rules::User)
    }

    /// A name read from a blocklist feed: the lenient rules.
    pub fn from_feed(raw: &str) -> Result<DomainName, DomainError> {
        DomainName::parse(raw, Rules::Feed)
    }

    fn parse(raw: &str, rules: Rules) -> Result<DomainName, DomainError> {
        let trimmed = raw.trim_matches(|c: char| c.is_ascii_whitespace());
        if trimmed.len() > MAX_INPUT_BYTES {
            return Err(DomainError::TooLong {
                name: quote(trimmed),
                len: trimmed.len(),
            });
        }
        let value = trimmed.strip_suffix('.').unwrap_or(trimmed);
        if value.is_empty() {
            return Err(DomainError::Empty);
        }
        if value.contains('*') {
            return Err(DomainError::Wildcard { name: quote(raw) });
        }
        let ascii = if value.is_ascii() {
            value.to_ascii_lowercase()
        } else {
            // Refuse what IDNA would map away or into something else entirely, so that the
            // error names the character the user typed (a space, a '/', …).
            if let Some(ch) = value
                .chars()
                .find(|c| c.is_ascii() && !is_name_char(*c as u8) && *c != '.')
            {
                return Err(DomainError::InvalidChar {
                    name: quote(trimmed),
                    ch,
                });
            }
            to_ascii(value.as_bytes(), Hyphens::Allow).ok_or_else(|| DomainError::Idna {
                name: quote(trimmed),
            })?
        };
        check(&ascii, trimmed, rules)?;
        Ok(DomainName(ascii.into_boxed_str()))
    }

    /// The name as text: lower-case ASCII, no trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as bytes (the same as [`DomainName::as_str`]).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Length of the text form, in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a domain name has at least one label. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The labels, left to right (`www`, `example`, `com`).
    pub fn labels(&self) -> impl DoubleEndedIterator<Item = &str> + '_ {
        self.0.split('.')
    }

    /// The labels, right to left (`com`, `example`, `www`): the order of a suffix tree.
    pub fn labels_rev(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.rsplit('.')
    }

    /// Number of labels.
    pub fn label_count(&self) -> usize {
        self.0.bytes().filter(|&b| b == b'.').count() + 1
    }

    /// True when `self` is `other` or a subdomain of it (label-aware: `badge.com` is not a
    /// subdomain of `bad.com`).
    pub fn is_within(&self, other: &DomainName) -> bool {
        match self.0.strip_suffix(&*other.0) {
            Some("") => true,
            Some(rest) => rest.ends_with('.'),
            None => false,
        }
    }
}

impl FromStr for DomainName {
    type Err = DomainError;

    /// User input: [`DomainName::parse_user`].
    fn from_str(raw: &str) -> Result<DomainName, DomainError> {
        DomainName::parse_user(raw)
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DomainName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Letters (either case), digits, `-`, `_`.
fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// UTS #46 ToASCII without a deny list (our own character check runs afterwards, so that `_`
/// stays allowed) and without the DNS length check (ours runs afterwards, with precise errors).
fn to_ascii(value: &[u8], hyphens: Hyphens) -> Option<String> {
    Uts46::new()
        .to_ascii(value, AsciiDenyList::EMPTY, hyphens, DnsLength::Ignore)
        .ok()
        .map(|cow| cow.into_owned())
}

/// Validate an ASCII, lower-cased name without a trailing dot. `raw` is quoted in errors.
fn check(ascii: &str, raw: &str, rules: Rules) -> Result<(), DomainError> {
    let name = || quote(raw);
    if ascii.is_empty() {
        return Err(DomainError::Empty);
    }
    if let Some(ch) = ascii.chars().find(|&c| c != '.' && !is_name_char_lower(c)) {
        return Err(DomainError::InvalidChar { name: name(), ch });
    }
    let mut last = "";
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err(DomainError::EmptyLabel { name: name() });
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(DomainError::LabelTooLong {
                name: name(),
                label: quote(label),
                len: label.len(),
            });
        }
        if rules == Rules::User {
            if label.starts_with('-') || label.ends_with('-') {
                return Err(DomainError::Hyphen {
                    name: name(),
                    label: label.to_string(),
                });
            }
            if label.starts_with("xn--") && to_ascii(label.as_bytes(), Hyphens::Allow).is_none() {
                return Err(DomainError::Idna { name: name() });
            }
        }
        last = label;
    }
    if ascii.len() > MAX_NAME_LEN {
        return Err(DomainError::TooLong {
            name: name(),
            len: ascii.len(),
        });
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DomainError::NumericTld {
            name: name(),
            label: last.to_string(),
        });
    }
    Ok(())
}

/// Lower-case letters, digits, `-`, `_`.
fn is_name_char_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

/// At most [`MAX_QUOTED_CHARS`] characters of `value`, with `…` when clipped.
fn quote(value: &str) -> String {
    let mut chars = value.char_indices();
    match chars.nth(MAX_QUOTED_CHARS) {
        Some((at, _)) => {
            let mut out = value[..at].to_string();
            out.push('…');
            out
        }
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(raw: &str) -> Result<String, DomainError> {
        DomainName::parse_user(raw).map(|d| d.to_string())
    }

    fn feed(raw: &str) -> Result<String, DomainError> {
        DomainName::from_feed(raw).map(|d| d.to_string())
    }

    #[test]
    fn normalisation() {
        let label63 = "a".repeat(63);
        // 4 labels of 63 + 3 dots = 255 > 253; 3 × 63 + 61 + 3 dots = 253.
        let name253 = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
        let cases: Vec<(&str, String)> = vec![
            ("example.com", "example.com".into()),
            ("Example.COM", "example.com".into()),
            ("example.com.", "example.com".into()),
            (" example.com \t", "example.com".into()),
            ("WWW.EXAMPLE.COM.", "www.example.com".into()),
            ("bücher.example", "xn--bcher-kva.example".into()),
            ("BÜCHER.example.", "xn--bcher-kva.example".into()),
            ("xn--bcher-kva.example", "xn--bcher-kva.example".into()),
            ("XN--BCHER-KVA.EXAMPLE", "xn--bcher-kva.example".into()),
            ("例え.テスト", "xn--r8jz45g.xn--zckzah".into()),
            // UTS #46 maps the ideographic full stop to '.'.
            ("bücher。example", "xn--bcher-kva.example".into()),
            ("zip", "zip".into()),
            ("com.", "com".into()),
            ("_dmarc.example.com", "_dmarc.example.com".into()),
            ("ad_server.example", "ad_server.example".into()),
            (
                "r3---sn-abc.googlevideo.com",
                "r3---sn-abc.googlevideo.com".into(),
            ),
            ("1.2.3.example", "1.2.3.example".into()),
            ("a", "a".into()),
            (&label63, label63.clone()),
            (&name253, name253.clone()),
        ];
        for (input, want) in &cases {
            assert_eq!(user(input).as_deref(), Ok(want.as_str()), "user {input:?}");
            assert_eq!(feed(input).as_deref(), Ok(want.as_str()), "feed {input:?}");
        }
    }

    #[test]
    fn refusals_for_both() {
        let label64 = "a".repeat(64);
        let long = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "a".repeat(63),
            "a".repeat(63),
            "b".repeat(62)
        );
        let huge = "a.".repeat(2000);
        let label64_name = format!("{label64}.com");
        type Check = fn(&DomainError) -> bool;
        let cases: Vec<(&str, Check)> = vec![
            ("", |e| *e == DomainError::Empty),
            ("   ", |e| *e == DomainError::Empty),
            (".", |e| *e == DomainError::Empty),
            ("..", |e| matches!(e, DomainError::EmptyLabel { .. })),
            ("example.com..", |e| {
                matches!(e, DomainError::EmptyLabel { .. })
            }),
            (".example.com", |e| {
                matches!(e, DomainError::EmptyLabel { .. })
            }),
            ("a..com", |e| matches!(e, DomainError::EmptyLabel { .. })),
            ("*", |e| matches!(e, DomainError::Wildcard { .. })),
            ("*.example.com", |e| {
                matches!(e, DomainError::Wildcard { .. })
            }),
            ("ex*mple.com", |e| matches!(e, DomainError::Wildcard { .. })),
            ("exa mple.com", |e| {
                matches!(e, DomainError::InvalidChar { ch: ' ', .. })
            }),
            ("bad.com/x", |e| {
                matches!(e, DomainError::InvalidChar { ch: '/', .. })
            }),
            ("bad.com:443", |e| {
                matches!(e, DomainError::InvalidChar { ch: ':', .. })
            }),
            ("2001:db8::1", |e| {
                matches!(e, DomainError::InvalidChar { ch: ':', .. })
            }),
            ("a@b.com", |e| {
                matches!(e, DomainError::InvalidChar { ch: '@', .. })
            }),
            ("tab\there.com", |e| {
                matches!(e, DomainError::InvalidChar { ch: '\t', .. })
            }),
            ("bü cher.example", |e| {
                matches!(e, DomainError::InvalidChar { ch: ' ', .. })
            }),
            ("bücher.exa/mple", |e| {
                matches!(e, DomainError::InvalidChar { ch: '/', .. })
            }),
            (&label64_name, |e| {
                matches!(e, DomainError::LabelTooLong { len: 64, .. })
            }),
            (&long, |e| {
                matches!(e, DomainError::TooLong { len: 254, .. })
            }),
            (&huge, |e| {
                matches!(e, DomainError::TooLong { len: 4000, .. })
            }),
            ("203.0.113.7", |e| {
                matches!(e, DomainError::NumericTld { .. })
            }),
            ("example.123", |e| {
                matches!(e, DomainError::NumericTld { .. })
            }),
            ("0", |e| matches!(e, DomainError::NumericTld { .. })),
            // Disallowed in IDNA (U+2488 DIGIT ONE FULL STOP is fine, U+FFFD is not).
            ("a\u{FFFD}b.example", |e| {
                matches!(e, DomainError::Idna { .. })
            }),
            // A right-to-left label next to a left-to-right one breaks the Bidi rule.
            ("\u{05D0}a.example", |e| {
                matches!(e, DomainError::Idna { .. })
            }),
        ];
        for (input, ok) in &cases {
            for (which, got) in [("user", user(input)), ("feed", feed(input))] {
                match got {
                    Err(e) => assert!(ok(&e), "{which} {input:?}: unexpected error {e:?}"),
                    Ok(v) => panic!("{which} {input:?}: accepted as {v:?}"),
                }
            }
        }
    }

    #[test]
    fn user_is_stricter_than_feed() {
        let cases: [(&str, &str); 5] = [
            ("-ads.example.com", "-ads.example.com"),
            ("ads-.example.com", "ads-.example.com"),
            ("example.com-", "example.com-"),
            ("xn--zz.example", "xn--zz.example"),
            ("xn--.example", "xn--.example"),
        ];
        for (input, want) in cases {
            assert_eq!(feed(input).as_deref(), Ok(want), "feed {input:?}");
            assert!(user(input).is_err(), "user {input:?} accepted");
        }
        assert!(matches!(
            user("-ads.example.com"),
            Err(DomainError::Hyphen { .. })
        ));
        assert!(matches!(
            user("xn--zz.example"),
            Err(DomainError::Idna { .. })
        ));
    }

    #[test]
    fn errors_name_the_value_and_are_clipped() {
        let err = user("exa mple.com").unwrap_err().to_string();
        assert!(err.contains("\"exa mple.com\""), "{err}");
        let err = user("*.bad.com").unwrap_err().to_string();
        assert!(
            err.contains("*.bad.com") && err.contains("wildcard"),
            "{err}"
        );
        let err = user(&"x".repeat(5000)).unwrap_err().to_string();
        assert!(err.chars().count() < 200, "{err}");
        assert!(err.contains('…'));
    }

    #[test]
    fn labels_and_containment() {
        let name: DomainName = "WWW.Example.com.".parse().unwrap();
        assert_eq!(name.labels().collect::<Vec<_>>(), ["www", "example", "com"]);
        assert_eq!(
            name.labels_rev().collect::<Vec<_>>(),
            ["com", "example", "www"]
        );
        assert_eq!(name.label_count(), 3);
        assert_eq!(name.len(), 15);
        assert!(!name.is_empty());
        let d = |s: &str| DomainName::parse_user(s).unwrap();
        assert!(d("bad.com").is_within(&d("bad.com")));
        assert!(d("x.bad.com").is_within(&d("bad.com")));
        assert!(d("x.bad.com").is_within(&d("com")));
        assert!(!d("badge.com").is_within(&d("bad.com")));
        assert!(!d("notbad.com").is_within(&d("bad.com")));
        assert!(!d("bad.com").is_within(&d("x.bad.com")));
        assert!(!d("bad.community").is_within(&d("bad.com")));
    }

    #[test]
    fn round_trip_and_order() {
        for s in ["a.b", "xn--bcher-kva.example", "_x.y", "zip"] {
            let name = DomainName::parse_user(s).unwrap();
            assert_eq!(DomainName::parse_user(name.as_str()).unwrap(), name);
            assert_eq!(name.to_string(), name.as_str());
            assert_eq!(DomainName::from_feed(name.as_str()).unwrap(), name);
        }
        assert!(
            DomainName::parse_user("a.com").unwrap() < DomainName::parse_user("b.com").unwrap()
        );
    }

    proptest::proptest! {
        /// Any text: never panics; whatever is accepted is canonical and parses to itself.
        #[test]
        fn any_text(raw in "\\PC{0,80}") {
            for parse in [DomainName::parse_user, DomainName::from_feed] {
                if let Ok(name) = parse(&raw) {
                    proptest::prop_assert!(name.len() <= MAX_NAME_LEN);
                    proptest::prop_assert!(name.as_str().bytes().all(|b| b == b'.' || is_name_char_lower(b as char)));
                    proptest::prop_assert_eq!(DomainName::from_feed(name.as_str()).ok(), Some(name));
                }
            }
        }
    }
}
