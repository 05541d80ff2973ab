//! [`CountryCode`]: an ISO 3166-1 alpha-2 country code, case-insensitive in, lower-case out.
//!
//! User input is checked against the officially assigned codes plus `xk` (Kosovo: user-assigned
//! in ISO 3166, but used by the RIRs and by IP-to-country databases). Feed data is parsed with
//! [`CountryCode::from_feed`], which accepts any two ASCII letters (a database may carry codes
//! such as `eu` or `zz`; they can be matched but never typed by a user).

use std::fmt;
use std::str::FromStr;

/// Two lower-case ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountryError {
    #[error("{0:?} is not a country code: expected two letters (ISO 3166-1 alpha-2, e.g. \"fr\")")]
    Malformed(String),
    #[error("{0:?} is not an assigned ISO 3166-1 alpha-2 country code")]
    Unassigned(String),
}

/// Officially assigned ISO 3166-1 alpha-2 codes, plus `xk`, sorted.
const ASSIGNED: &[&str] = &[
    "ad", "ae", "af", "ag", "ai", "al", "am", "ao", "aq", "ar", "as", "at", "au", "aw", "ax", "az",
    "ba", "bb", "bd", "be", "bf", "bg", "bh", "bi", "bj", "bl", "bm", "bn", "bo", "bq", "br", "bs",
    "bt", "bv", "bw", "by", "bz", "ca", "cc", "cd", "cf", "cg", "ch", "ci", "ck", "cl", "cm", "cn",
    "co", "cr", "cu", "cv", "cw", "cx", "cy", "cz", "de", "dj", "dk", "dm", "do", "dz", "ec", "ee",
    "eg", "eh", "er", "es", "et", "fi", "fj", "fk", "fm", "fo", "fr", "ga", "gb", "gd", "ge", "gf",
    "gg", "gh", "gi", "gl", "gm", "gn", "gp", "gq", "gr", "gs", "gt", "gu", "gw", "gy", "hk", "hm",
    "hn", "hr", "ht", "hu", "id", "ie", "il", "im", "in", "io", "iq", "ir", "is", "it", "je", "jm",
    "jo", "jp", "ke", "kg", "kh", "ki", "km", "kn", "kp", "kr", "kw", "ky", "kz", "la", "lb", "lc",
    "li", "lk", "lr", "ls", "lt", "lu", "lv", "ly", "ma", "mc", "md", "me", "mf", "mg", "mh", "mk",
    "ml", "mm", "mn", "mo", "mp", "mq", "mr", "ms", "mt", "mu", "mv", "mw", "mx", "my", "mz", "na",
    "nc", "ne", "nf", "ng", "ni", "nl", "no", "np", "nr", "nu", "nz", "om", "pa", "pe", "pf", "pg",
    "ph", "pk", "pl", "pm", "pn", "pr", "ps", "pt", "pw", "py", "qa", "re", "ro", "rs", "ru", "rw",
    "sa", "sb", "sc", "sd", "se", "sg", "sh", "si", "sj", "sk", "sl", "sm", "sn", "so", "sr", "ss",
    "st", "sv", "sx", "sy", "sz", "tc", "td", "tf", "tg", "th", "tj", "tk", "tl", "tm", "tn", "to",
    "tr", "tt", "tv", "tw", "tz", "ua", "ug", "um", "us", "uy", "uz", "va", "vc", "ve", "vg", "vi",
    "vn", "vu", "wf", "ws", "xk", "ye", "yt", "za", "zm", "zw",
];

impl CountryCode {
    /// Any two ASCII letters (feed data); lower-cased.
    pub fn from_feed(raw: &str) -> Result<CountryCode, CountryError> {
        let b = raw.trim().as_bytes();
        match b {
            [a, c] if a.is_ascii_alphabetic() && c.is_ascii_alphabetic() => Ok(CountryCode([
                a.to_ascii_lowercase(),
                c.to_ascii_lowercase(),
            ])),
            _ => Err(CountryError::Malformed(raw.chars().take(16).collect())),
        }
    }

    /// The two bytes, lower-case.
    pub fn bytes(self) -> [u8; 2] {
        self.0
    }

    /// A dense index in 0..676, for bitmaps.
    pub fn index(self) -> usize {
        usize::from(self.0[0] - b'a') * 26 + usize::from(self.0[1] - b'a')
    }

    pub fn as_str(&self) -> &str {
        // INVARIANT: both bytes are ASCII lower-case letters (checked on construction).
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl FromStr for CountryCode {
    type Err = CountryError;

    /// User input: two letters that form an assigned code.
    fn from_str(raw: &str) -> Result<CountryCode, CountryError> {
        let code = CountryCode::from_feed(raw)?;
        if ASSIGNED.binary_search(&code.as_str()).is_ok() {
            Ok(code)
        } else {
            Err(CountryError::Unassigned(raw.trim().to_string()))
        }
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigned_list_is_sorted_unique_and_complete() {
        assert!(ASSIGNED.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ASSIGNED.len(), 250, "249 ISO codes + xk");
    }

    #[test]
    fn user_input() {
        for (input, want) in [("FR", "fr"), ("de", "de"), (" Us ", "us"), ("xk", "xk")] {
            assert_eq!(input.parse::<CountryCode>().unwrap().to_string(), want);
        }
        for bad in ["", "f", "fra", "f1", "é", "zz", "eu", "xx", "uk"] {
            assert!(bad.parse::<CountryCode>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn feed_input_and_index_edges() {
        assert_eq!(CountryCode::from_feed("EU").unwrap().to_string(), "eu");
        assert!(CountryCode::from_feed("e1").is_err());
        assert_eq!(CountryCode::from_feed("aa").unwrap().index(), 0);
        assert_eq!(CountryCode::from_feed("zz").unwrap().index(), 675);
    }
}
