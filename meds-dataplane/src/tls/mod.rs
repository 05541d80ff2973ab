//! TLS ClientHello extraction and client fingerprints: the pure part of the TLS filters.
//!
//! * [`client_hello`] turns one TCP payload (one or more TLS records) into a borrowed
//!   [`ClientHello`] view: SNI, ALPN, cipher suites, extensions and the lists the fingerprints
//!   need. It is total: every length is checked before use, hostile bytes give an error or
//!   "incomplete", never a panic, and the work is bounded by [`client_hello::MAX_HELLO_LEN`].
//! * [`ja3`] builds the JA3 string and its MD5 ([`meds_proto::Ja3Hash`]); [`ja4`] builds JA4 and its raw
//!   form `ja4_r`.
//!
//! This module does no I/O, keeps no state between packets and does not decide verdicts; the
//! per-flow reassembly of a ClientHello spread over several TCP segments lives with the flow
//! table, which feeds the reassembled bytes back into [`client_hello::parse`].
//!
//! Why not the `tls-parser` crate (the project's first choice): its ClientHello parser silently
//! drops what it cannot parse instead of failing (`opt(complete(length_data(be_u16)))` turns a
//! bad extensions length into "no extensions", and `many0(complete(..))` turns a bad extension,
//! or the W8a-style SNI entry whose length overruns the list, into a shorter list), so a
//! malformed hello would get a wrong but plausible JA3/JA4 or no SNI; it also rejects a whole
//! hello when the body of an extension fingerprints do not read (heartbeat, post-handshake
//! auth, ESNI, …) is unusual, which would let a client dodge JA3/JA4 matching; and it allocates
//! a `Vec` per list and per extension. Fingerprints need the raw extension order with GREASE and
//! five small extension bodies, so a small bounds-checked reader fits the job better.

pub mod client_hello;
pub mod ja3;
pub mod ja4;

pub use client_hello::{ClientHello, ClientHelloError, HelloOutcome, U16List, parse};
pub use ja3::{ja3_hash, ja3_string, write_ja3};
pub use ja4::{Ja4Builder, Transport, ja4, ja4_r};

/// GREASE values (RFC 8701): `0x?a?a` with both bytes equal (0x0a0a, 0x1a1a, …, 0xfafa).
/// JA3 and JA4 ignore them in cipher suites, extensions, supported groups and versions.
pub const fn is_grease(value: u16) -> bool {
    value & 0x0f0f == 0x0a0a && (value >> 8) == (value & 0xff)
}

#[cfg(test)]
mod tests {
    use super::is_grease;

    #[test]
    fn grease_values_are_exactly_the_sixteen_codepoints() {
        let all: Vec<u16> = (0..=u16::MAX).filter(|v| is_grease(*v)).collect();
        let expected: Vec<u16> = (0..16u16)
            .map(|n| (n << 12) | 0x0a00 | (n << 4) | 0x0a)
            .collect();
        assert_eq!(all, expected);
        assert_eq!(all.first(), Some(&0x0a0a));
        assert_eq!(all.last(), Some(&0xfafa));
        // Near misses: the pattern with unequal bytes, and neighbours.
        for v in [
            0x0a1a, 0x1a0a, 0x0a0b, 0x0b0a, 0x0000, 0xffff, 0x000a, 0x0a00,
        ] {
            assert!(!is_grease(v), "{v:#06x}");
        }
    }
}
