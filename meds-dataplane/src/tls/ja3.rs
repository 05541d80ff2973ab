//! JA3 (salesforce/ja3): `SSLVersion,Ciphers,Extensions,EllipticCurves,EllipticCurvePointFormats`.
//!
//! * SSLVersion is the hello's `legacy_version` in decimal (771 for TLS 1.2 and 1.3 clients).
//! * Each list is decimal values joined by `-`, in the order sent; an absent list is empty and
//!   the commas stay (`771,4865,,,`).
//! * GREASE values are removed from ciphers, extensions and supported groups, not from point
//!   formats (these are bytes and can never be GREASE anyway).
//! * The JA3 hash is the MD5 of that string, shown as 32 lower-case hex digits.
//!
//! [`ja3_hash`] streams the string into MD5 without building it and returns the shared domain
//! type [`meds_proto::Ja3Hash`] (what the JA3 blocklists hold).

use std::fmt;

use md5::{Digest, Md5};
use meds_proto::Ja3Hash;

use super::client_hello::ClientHello;
use super::is_grease;

/// The JA3 string of a hello.
pub fn ja3_string(hello: &ClientHello<'_>) -> String {
    let mut out = String::with_capacity(256);
    // Writing into a String cannot fail.
    let _ = write_ja3(hello, &mut out);
    out
}

/// The MD5 of the JA3 string.
pub fn ja3_hash(hello: &ClientHello<'_>) -> Ja3Hash {
    let mut sink = Md5Sink(Md5::new());
    // Md5Sink never fails.
    let _ = write_ja3(hello, &mut sink);
    Ja3Hash::from_digest(sink.0.finalize().into())
}

/// The MD5 of a JA3 string already written (e.g. by [`write_ja3`] into a reused buffer).
pub fn ja3_hash_of_text(text: &str) -> Ja3Hash {
    Ja3Hash::from_digest(Md5::digest(text.as_bytes()).into())
}

/// Write the JA3 string of `hello` into `out`.
pub fn write_ja3(hello: &ClientHello<'_>, out: &mut impl fmt::Write) -> fmt::Result {
    write!(out, "{},", hello.legacy_version)?;
    write_list(out, hello.cipher_suites.iter().filter(|v| !is_grease(*v)))?;
    out.write_char(',')?;
    write_list(out, hello.extensions.types().filter(|v| !is_grease(*v)))?;
    out.write_char(',')?;
    write_list(
        out,
        hello.supported_groups.iter().filter(|v| !is_grease(*v)),
    )?;
    out.write_char(',')?;
    write_list(out, hello.ec_point_formats.iter().copied())
}

fn write_list<T: fmt::Display>(
    out: &mut impl fmt::Write,
    values: impl Iterator<Item = T>,
) -> fmt::Result {
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.write_char('-')?;
        }
        write!(out, "{v}")?;
    }
    Ok(())
}

struct Md5Sink(Md5);

impl fmt::Write for Md5Sink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_of_known_string() {
        // The upstream spec's verified example (upstream-meds.md §9).
        let digest: [u8; 16] = Md5::digest(b"771,4865-49195,0-10-11,29-23,0").into();
        assert_eq!(
            Ja3Hash::from_digest(digest).to_string(),
            "3e916670429427a5a33c947802616cdc"
        );
    }
}
