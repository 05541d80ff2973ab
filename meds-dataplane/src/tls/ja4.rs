//! JA4 (FoxIO, "technical details"): `a_b_c`, and its raw form `ja4_r`.
//!
//! * a, 10 characters: transport (`t` TCP, `q` QUIC, `d` DTLS); version, the highest
//!   non-GREASE supported_versions value (numerically) or else `legacy_version`: `13`, `12`,
//!   `11`, `10`, `s3`, `s2`, and `d1`/`d2`/`d3` for DTLS 1.0/1.2/1.3 (FoxIO's table), `00` for
//!   anything else (draft versions included); `d` if the hello carries a host name SNI, else
//!   `i`; the number of cipher suites and of extensions (GREASE excluded, SNI and ALPN
//!   counted), two digits each, capped at 99; the ALPN pair.
//! * ALPN pair: the first and last character of the first ALPN protocol (`h2`; `h1` for
//!   `http/1.1`); `00` without ALPN or when the first protocol is a GREASE value. If either
//!   character is not an ASCII letter or digit we follow the written definition (and
//!   Suricata): the first hex digit of the first byte and the last hex digit of the last byte
//!   (`0xab 0xcd` → `ad`). FoxIO's own tools substitute `9` instead; we do not.
//! * b: the first 12 hex digits of SHA-256 over the cipher suites as 4-digit lower-case hex,
//!   sorted, joined by `,` (GREASE removed); `000000000000` when there are none.
//! * c: the first 12 hex digits of SHA-256 over the extension types, sorted, without GREASE,
//!   SNI (0000) and ALPN (0010), then `_` and the signature_algorithms (extension 13 only, not
//!   50) in the order sent; without signature algorithms the string has no `_`. When both parts
//!   are empty c is `000000000000`.
//! * `ja4_r` has the un-hashed strings in place of b and c (empty when there is nothing).

use std::fmt::{self, Write as _};

use meds_proto::Ja4;
use sha2::{Digest, Sha256};

use super::client_hello::{ClientHello, MAX_HELLO_LEN, ext};
use super::is_grease;

/// The transport a ClientHello came over (JA4's first character).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Quic,
    Dtls,
}

impl Transport {
    fn code(self) -> char {
        match self {
            Transport::Tcp => 't',
            Transport::Quic => 'q',
            Transport::Dtls => 'd',
        }
    }
}

const ZERO_HASH: &str = "000000000000";

/// Reusable buffers for [`Ja4Builder::fingerprint`]: after [`Ja4Builder::new`] computing a JA4
/// never allocates (the value list is sized for the largest hello the parser accepts, the text
/// buffer for the 36-character result).
#[derive(Debug, Clone)]
pub struct Ja4Builder {
    values: Vec<u16>,
    text: String,
}

impl Default for Ja4Builder {
    fn default() -> Ja4Builder {
        Ja4Builder::new()
    }
}

impl Ja4Builder {
    pub fn new() -> Ja4Builder {
        Ja4Builder {
            // A hello body of MAX_HELLO_LEN bytes cannot hold more u16 values than this.
            values: Vec::with_capacity(MAX_HELLO_LEN / 2),
            text: String::with_capacity(64),
        }
    }

    /// The JA4 of `hello` as the shared domain type (what the JA4 blocklist holds).
    pub fn fingerprint(&mut self, hello: &ClientHello<'_>, transport: Transport) -> Option<Ja4> {
        self.text.clear();
        write_ja4(hello, transport, &mut self.values, &mut self.text);
        // Always a valid JA4 (see `write_a`); `None` would only mean a bug here.
        self.text.parse().ok()
    }

    /// The text of the last [`Ja4Builder::fingerprint`].
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// The JA4 fingerprint, e.g. `t13d1516h2_8daaf6152771_02713d6af862`.
pub fn ja4(hello: &ClientHello<'_>, transport: Transport) -> String {
    let mut out = String::with_capacity(36);
    write_ja4(hello, transport, &mut Vec::new(), &mut out);
    out
}

/// Write the JA4 into `out`, streaming the sorted lists into SHA-256 (no intermediate string);
/// `values` is scratch space.
fn write_ja4(
    hello: &ClientHello<'_>,
    transport: Transport,
    values: &mut Vec<u16>,
    out: &mut String,
) {
    write_a(out, hello, transport);
    out.push('_');
    sorted_ciphers(hello, values);
    if values.is_empty() {
        out.push_str(ZERO_HASH);
    } else {
        let mut sink = ShaSink(Sha256::new());
        let _ = write_hex_list(&mut sink, values.iter().copied());
        push_hash12(out, sink.0);
    }
    out.push('_');
    sorted_extensions(hello, values);
    if values.is_empty() && hello.signature_algorithms.is_empty() {
        out.push_str(ZERO_HASH);
    } else {
        let mut sink = ShaSink(Sha256::new());
        let _ = write_c(&mut sink, values, hello);
        push_hash12(out, sink.0);
    }
}

/// The raw JA4 (`ja4_r`): part a, then the sorted cipher list, then the extension and
/// signature-algorithm lists, un-hashed (the very strings [`ja4`] hashes).
pub fn ja4_r(hello: &ClientHello<'_>, transport: Transport) -> String {
    let mut values = Vec::new();
    let mut out = String::with_capacity(256);
    write_a(&mut out, hello, transport);
    out.push('_');
    sorted_ciphers(hello, &mut values);
    // Writing into a String cannot fail.
    let _ = write_hex_list(&mut out, values.iter().copied());
    out.push('_');
    sorted_extensions(hello, &mut values);
    let _ = write_c(&mut out, &values, hello);
    out
}

/// The cipher suites of part b: GREASE removed, sorted.
fn sorted_ciphers(hello: &ClientHello<'_>, values: &mut Vec<u16>) {
    values.clear();
    values.extend(hello.cipher_suites.iter().filter(|v| !is_grease(*v)));
    values.sort_unstable();
}

/// The extension types of part c: GREASE, SNI and ALPN removed, sorted.
fn sorted_extensions(hello: &ClientHello<'_>, values: &mut Vec<u16>) {
    values.clear();
    values.extend(
        hello
            .extensions
            .types()
            .filter(|t| !is_grease(*t) && *t != ext::SERVER_NAME && *t != ext::ALPN),
    );
    values.sort_unstable();
}

/// The string of part c: the sorted extensions, then `_` and the signature algorithms in the
/// order sent (only when there are any).
fn write_c(out: &mut impl fmt::Write, extensions: &[u16], hello: &ClientHello<'_>) -> fmt::Result {
    write_hex_list(out, extensions.iter().copied())?;
    if !hello.signature_algorithms.is_empty() {
        out.write_char('_')?;
        write_hex_list(out, hello.signature_algorithms.iter())?;
    }
    Ok(())
}

fn write_hex_list(out: &mut impl fmt::Write, values: impl IntoIterator<Item = u16>) -> fmt::Result {
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        write!(out, "{v:04x}")?;
    }
    Ok(())
}

struct ShaSink(Sha256);

impl fmt::Write for ShaSink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

fn push_hash12(out: &mut String, hasher: Sha256) {
    let digest = hasher.finalize();
    for b in digest.iter().take(6) {
        // Writing into a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
}

fn write_a(out: &mut String, hello: &ClientHello<'_>, transport: Transport) {
    out.push(transport.code());
    out.push_str(version_code(hello));
    out.push(if hello.sni.is_some() { 'd' } else { 'i' });
    let ciphers = hello
        .cipher_suites
        .iter()
        .filter(|v| !is_grease(*v))
        .count();
    let extensions = hello.extensions.types().filter(|t| !is_grease(*t)).count();
    // Writing into a String cannot fail.
    let _ = write!(out, "{:02}{:02}", ciphers.min(99), extensions.min(99));
    let [first, last] = alpn_pair(hello.alpn_first);
    out.push(first);
    out.push(last);
}

fn version_code(hello: &ClientHello<'_>) -> &'static str {
    let version = hello
        .supported_versions
        .iter()
        .filter(|v| !is_grease(*v))
        .max()
        .unwrap_or(hello.legacy_version);
    match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

fn alpn_pair(first: Option<&[u8]>) -> [char; 2] {
    let Some(protocol) = first else {
        return ['0', '0'];
    };
    let (Some(&a), Some(&z)) = (protocol.first(), protocol.last()) else {
        return ['0', '0'];
    };
    if let [hi, lo] = protocol
        && is_grease(u16::from_be_bytes([*hi, *lo]))
    {
        return ['0', '0'];
    }
    if a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric() {
        [char::from(a), char::from(z)]
    } else {
        [hex_digit(a >> 4), hex_digit(z & 0x0f)]
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble & 0x0f), 16).unwrap_or('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_pair_cases() {
        let cases: &[(Option<&[u8]>, &str)] = &[
            (None, "00"),
            (Some(b""), "00"),
            (Some(b"h2"), "h2"),
            (Some(b"http/1.1"), "h1"),
            (Some(b"spdy/3"), "s3"),
            (Some(b"x"), "xx"),
            (Some(b"h3-29"), "h9"),
            // GREASE ALPN values (RFC 8701 §3.3) give 00.
            (Some(&[0x0a, 0x0a]), "00"),
            (Some(&[0xfa, 0xfa]), "00"),
            // Not GREASE: unequal bytes use the hex rule.
            (Some(&[0x0a, 0x1a]), "0a"),
            // Non-alphanumeric first or last character: hex rule.
            (Some(&[0xab, b'x', 0xcd]), "ad"),
            (Some(b"/h2"), "22"),
            (Some(b"h2/"), "6f"),
            (Some(&[0xff]), "ff"),
            (Some("é".as_bytes()), "c9"),
        ];
        for (protocol, expected) in cases {
            let pair: String = alpn_pair(*protocol).iter().collect();
            assert_eq!(&pair, expected, "{protocol:?}");
        }
    }

    #[test]
    fn hex_list_formats_four_digits() {
        let hex_list = |values: &[u16]| {
            let mut out = String::new();
            write_hex_list(&mut out, values.iter().copied()).unwrap();
            out
        };
        assert_eq!(hex_list(&[]), "");
        assert_eq!(hex_list(&[0x2f]), "002f");
        assert_eq!(hex_list(&[0x2f, 0xc02b, 0xffff]), "002f,c02b,ffff");
    }
}
