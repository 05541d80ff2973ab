//! Any text through the prefix parser; a parsed prefix must survive a text round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meds_proto::Cidr;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(cidr) = text.parse::<Cidr>()
    {
        assert_eq!(cidr.to_string().parse::<Cidr>().ok(), Some(cidr));
    }
});
