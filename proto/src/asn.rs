//! [`Asn`]: an autonomous system number, parsed from `64496` or `AS64496` (any case).
//!
//! 0 and 4294967295 are reserved (RFC 7607, RFC 7300) and refused; 23456 (AS_TRANS) is refused
//! too, since no network originates from it. Everything else in 1..=4294967294 is accepted.

use std::fmt;
use std::str::FromStr;

/// A valid autonomous system number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Asn(u32);

/// Why a value is not a usable ASN. Messages name the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AsnError {
    #[error("empty value: expected an AS number such as 64496 or AS64496")]
    Empty,
    #[error("{0:?} is not an AS number (expected 64496 or AS64496)")]
    Invalid(String),
    #[error("AS{0} is reserved and never originates traffic")]
    Reserved(u32),
}

impl Asn {
    /// Validate a raw number.
    pub fn new(n: u32) -> Result<Asn, AsnError> {
        match n {
            0 | 23456 | u32::MAX => Err(AsnError::Reserved(n)),
            _ => Ok(Asn(n)),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl FromStr for Asn {
    type Err = AsnError;

    fn from_str(raw: &str) -> Result<Asn, AsnError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(AsnError::Empty);
        }
        let digits = match text.get(..2) {
            Some(p) if p.eq_ignore_ascii_case("as") => &text[2..],
            _ => text,
        };
        if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AsnError::Invalid(text.chars().take(32).collect()));
        }
        let n: u32 = digits
            .parse()
            .map_err(|_| AsnError::Invalid(text.to_string()))?;
        Asn::new(n)
    }
}

impl fmt::Display for Asn {
    /// The bare number (the REST bodies carry numbers); see [`Asn::label`] for `AS64496`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Asn {
    /// The `AS64496` form, for people.
    pub fn label(self) -> String {
        format!("AS{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_refuses_the_rest() {
        for (input, want) in [
            ("64496", 64496),
            ("AS64496", 64496),
            ("as64496", 64496),
            (" AS1 ", 1),
            ("4294967294", 4_294_967_294),
        ] {
            assert_eq!(input.parse::<Asn>().unwrap().get(), want, "{input}");
        }
        for bad in [
            "",
            "AS",
            "ASN1",
            "-1",
            "+5",
            "1.5",
            "4294967296",
            "99999999999",
            "AS 1",
            "0x10",
        ] {
            assert!(bad.parse::<Asn>().is_err(), "{bad:?}");
        }
        for reserved in ["0", "AS0", "23456", "4294967295"] {
            assert!(
                matches!(reserved.parse::<Asn>(), Err(AsnError::Reserved(_))),
                "{reserved}"
            );
        }
        assert_eq!(Asn::new(64496).unwrap().label(), "AS64496");
        assert_eq!(Asn::new(64496).unwrap().to_string(), "64496");
    }
}
