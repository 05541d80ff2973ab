//! Any byte string through the TLS ClientHello parser and both fingerprints.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meds_dataplane::tls::{
    HelloOutcome, Transport, client_hello, ja3_hash, ja3_string, ja4, ja4_r,
};

fuzz_target!(|data: &[u8]| {
    let mut scratch = Vec::new();
    if let Ok(HelloOutcome::Complete(hello)) = client_hello::parse(data, &mut scratch) {
        let _ = ja3_string(&hello);
        let _ = ja3_hash(&hello);
        assert_eq!(ja4(&hello, Transport::Tcp).len(), 36);
        let _ = ja4_r(&hello, Transport::Quic);
        let _ = hello.host_names().count();
    }
    // The bare handshake body parser (QUIC CRYPTO frames) on the same bytes.
    if let Ok(hello) = client_hello::parse_body(data) {
        let _ = ja3_string(&hello);
        let _ = ja4(&hello, Transport::Dtls);
    }
});
