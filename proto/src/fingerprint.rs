//! TLS client fingerprints the blocklists hold: [`Ja3Hash`] and [`Ja4`].
//!
//! * [`Ja3Hash`]: the MD5 of a JA3 string (Salesforce's definition), 32 hexadecimal digits.
//!   Parsed case-insensitively, shown in lower case (as abuse.ch SSLBL publishes it).
//! * [`Ja4`]: a JA4 TLS client fingerprint (FoxIO's definition), `a_b_c` such as
//!   `t13d1516h2_8daaf6152771_02713d6af862`:
//!   * `a`, 10 characters: protocol (`t` TCP, `q` QUIC, `d` DTLS), TLS version (2 letters or
//!     digits: `13`, `12`, `s3`, `d1`, `00`, …), SNI (`d` a domain was sent, `i` none), number
//!     of cipher suites (2 digits), number of extensions (2 digits), first and last character
//!     of the first ALPN value (2 letters or digits, `00` for none);
//!   * `b`, `c`: 12 hexadecimal digits each (truncated SHA-256 of the sorted cipher suites and
//!     of the extensions and signature algorithms).
//!
//!   Parsed case-insensitively, shown in lower case. Only the shape is checked: a well-formed
//!   fingerprint that no client produces is harmless in a blocklist.
//!
//! Surrounding ASCII whitespace is trimmed. No I/O; errors name the value (clipped).

use std::fmt;
use std::str::FromStr;

/// Longest part of an offending value quoted in an error message, in characters.
const MAX_QUOTED_CHARS: usize = 48;

/// Why a value is not a valid fingerprint. Messages name the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    #[error("{0:?} is not a JA3 hash: expected 32 hexadecimal digits (an MD5)")]
    Ja3(String),
    #[error(
        "{value:?} is not a JA4 fingerprint ({why}); expected e.g. \"t13d1516h2_8daaf6152771_02713d6af862\""
    )]
    Ja4 { value: String, why: &'static str },
}

/// The MD5 of a JA3 string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ja3Hash([u8; 16]);

impl Ja3Hash {
    /// From the 16 bytes of an MD5 digest.
    pub fn from_digest(digest: [u8; 16]) -> Ja3Hash {
        Ja3Hash(digest)
    }

    /// The 16 digest bytes.
    pub fn digest(&self) -> [u8; 16] {
        self.0
    }
}

impl FromStr for Ja3Hash {
    type Err = FingerprintError;

    fn from_str(raw: &str) -> Result<Ja3Hash, FingerprintError> {
        let value = raw
            .trim_matches(|c: char| c.is_ascii_whitespace())
            .as_bytes();
        let bad = || FingerprintError::Ja3(quote(raw));
        if value.len() != 32 {
            return Err(bad());
        }
        let mut digest = [0u8; 16];
        for (byte, pair) in digest.iter_mut().zip(value.chunks_exact(2)) {
            let hi = hex_value(pair[0]).ok_or_else(bad)?;
            let lo = hex_value(pair[1]).ok_or_else(bad)?;
            *byte = (hi << 4) | lo;
        }
        Ok(Ja3Hash(digest))
    }
}

impl fmt::Display for Ja3Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Length of a JA4 fingerprint's text form.
const JA4_LEN: usize = 36;

/// A JA4 TLS client fingerprint, kept as its canonical (lower-case ASCII) text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ja4([u8; JA4_LEN]);

impl Ja4 {
    /// The canonical text, `a_b_c`, lower case.
    pub fn as_str(&self) -> &str {
        // INVARIANT: every byte was checked to be ASCII on construction.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The `a` part (protocol, version, SNI, counts, ALPN).
    pub fn a(&self) -> &str {
        &self.as_str()[..10]
    }

    /// The `b` part (cipher suites hash).
    pub fn b(&self) -> &str {
        &self.as_str()[11..23]
    }

    /// The `c` part (extensions and signature algorithms hash).
    pub fn c(&self) -> &str {
        &self.as_str()[24..]
    }
}

impl FromStr for Ja4 {
    type Err = FingerprintError;

    fn from_str(raw: &str) -> Result<Ja4, FingerprintError> {
        let value = raw
            .trim_matches(|c: char| c.is_ascii_whitespace())
            .as_bytes();
        let bad = |why| FingerprintError::Ja4 {
            value: quote(raw),
            why,
        };
        if value.len() != JA4_LEN {
            return Err(bad("not 36 characters long"));
        }
        let mut text = [0u8; JA4_LEN];
        for (out, b) in text.iter_mut().zip(value) {
            *out = b.to_ascii_lowercase();
        }
        if text[10] != b'_' || text[23] != b'_' {
            return Err(bad(
                "expected three parts a_b_c of 10, 12 and 12 characters",
            ));
        }
        if !matches!(text[0], b't' | b'q' | b'd') {
            return Err(bad("protocol must be 't', 'q' or 'd'"));
        }
        if !text[1..3].iter().all(u8::is_ascii_alphanumeric) {
            return Err(bad("version must be 2 letters or digits"));
        }
        if !matches!(text[3], b'd' | b'i') {
            return Err(bad("SNI flag must be 'd' or 'i'"));
        }
        if !text[4..8].iter().all(u8::is_ascii_digit) {
            return Err(bad("cipher and extension counts must be 2 digits each"));
        }
        if !text[8..10].iter().all(u8::is_ascii_alphanumeric) {
            return Err(bad("ALPN must be 2 letters or digits"));
        }
        if !text[11..23]
            .iter()
            .chain(&text[24..])
            .all(u8::is_ascii_hexdigit)
        {
            return Err(bad("the b and c parts must be 12 hexadecimal digits each"));
        }
        Ok(Ja4(text))
    }
}

impl fmt::Display for Ja4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Ja4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ja4({:?})", self.as_str())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn quote(value: &str) -> String {
    let mut chars = value.char_indices();
    match chars.nth(MAX_QUOTED_CHARS) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ja3_parse_and_display() {
        let cases = [
            (
                "e7d705a3286e19ea42f587b344ee6865",
                "e7d705a3286e19ea42f587b344ee6865",
            ),
            (
                "E7D705A3286E19EA42F587B344EE6865",
                "e7d705a3286e19ea42f587b344ee6865",
            ),
            (
                " 00000000000000000000000000000000\n",
                "00000000000000000000000000000000",
            ),
            (
                "ffffffffffffffffffffffffffffffff",
                "ffffffffffffffffffffffffffffffff",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                input.parse::<Ja3Hash>().unwrap().to_string(),
                want,
                "{input:?}"
            );
        }
        let h: Ja3Hash = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
        assert_eq!(
            h.digest(),
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
        );
        assert_eq!(Ja3Hash::from_digest(h.digest()), h);
    }

    #[test]
    fn ja3_refusals() {
        for bad in [
            "",
            "e7d705a3286e19ea42f587b344ee686",   // 31
            "e7d705a3286e19ea42f587b344ee68655", // 33
            "g7d705a3286e19ea42f587b344ee6865",
            "e7d705a3286e19ea42f587b344ee686 ",
            "e7d705a3286e19ea 42f587b344ee6865",
            "+7d705a3286e19ea42f587b344ee6865",
            "é7d705a3286e19ea42f587b344ee686",
        ] {
            let err = bad.parse::<Ja3Hash>().unwrap_err();
            assert!(err.to_string().contains(&format!("{:?}", bad)), "{err}");
        }
    }

    #[test]
    fn ja4_parse_and_parts() {
        let cases = [
            (
                "t13d1516h2_8daaf6152771_02713d6af862",
                "t13d1516h2_8daaf6152771_02713d6af862",
            ),
            (
                "T13D1516H2_8DAAF6152771_02713D6AF862",
                "t13d1516h2_8daaf6152771_02713d6af862",
            ),
            (
                "q13d0310h3_55b375c5d22e_cd85d2d88918",
                "q13d0310h3_55b375c5d22e_cd85d2d88918",
            ),
            (
                "t12i000000_000000000000_000000000000",
                "t12i000000_000000000000_000000000000",
            ),
            (
                "ds3i9999zz_ffffffffffff_abcdefabcdef",
                "ds3i9999zz_ffffffffffff_abcdefabcdef",
            ),
        ];
        for (input, want) in cases {
            let ja4: Ja4 = input.parse().unwrap();
            assert_eq!(ja4.to_string(), want, "{input:?}");
            assert_eq!(format!("{}_{}_{}", ja4.a(), ja4.b(), ja4.c()), want);
        }
    }

    #[test]
    fn ja4_refusals() {
        let cases = [
            ("", "36 characters"),
            ("t13d1516h2_8daaf6152771_02713d6af86", "36 characters"),
            ("t13d1516h2-8daaf6152771_02713d6af862", "three parts"),
            ("t13d1516h2_8daaf6152771-02713d6af862", "three parts"),
            ("x13d1516h2_8daaf6152771_02713d6af862", "protocol"),
            ("t1_d1516h2_8daaf6152771_02713d6af862", "version"),
            ("t13x1516h2_8daaf6152771_02713d6af862", "SNI"),
            ("t13d15a6h2_8daaf6152771_02713d6af862", "counts"),
            ("t13d1516h-_8daaf6152771_02713d6af862", "ALPN"),
            ("t13d1516h2_8daaf615277g_02713d6af862", "hexadecimal"),
            ("t13d1516h2_8daaf6152771_02713d6af86z", "hexadecimal"),
            ("t13d1516h2_8daaf6152771_02713d6af86é", "36 characters"),
        ];
        for (input, why) in cases {
            let err = input.parse::<Ja4>().unwrap_err().to_string();
            assert!(err.contains(why), "{input:?}: {err}");
            assert!(err.contains(&format!("{input:?}")), "{err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_never_panics_and_round_trips(raw in "\\PC{0,40}") {
            if let Ok(h) = raw.parse::<Ja3Hash>() {
                proptest::prop_assert_eq!(h.to_string().parse::<Ja3Hash>().ok(), Some(h));
            }
            if let Ok(j) = raw.parse::<Ja4>() {
                proptest::prop_assert_eq!(j.to_string().parse::<Ja4>().ok(), Some(j));
            }
        }

        #[test]
        fn ja3_round_trip(digest in proptest::array::uniform16(0u8..)) {
            let h = Ja3Hash::from_digest(digest);
            proptest::prop_assert_eq!(h.to_string().parse::<Ja3Hash>().ok(), Some(h));
        }
    }
}
