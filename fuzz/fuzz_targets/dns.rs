//! Any byte string through the DNS name extractor, as a UDP payload and as a TCP payload.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meds_dataplane::dns::{DnsNames, parse, parse_tcp};

fuzz_target!(|data: &[u8]| {
    let mut out = DnsNames::new();
    let _ = parse(data, &mut out);
    for name in out.iter() {
        assert!(!name.text.is_empty() && name.text.is_ascii());
        assert!(name.text.split('.').all(|label| !label.is_empty()));
    }
    out.clear();
    let _ = parse_tcp(data, &mut out);
});
