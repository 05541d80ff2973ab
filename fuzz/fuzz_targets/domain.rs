//! Any text through both domain-name constructors: never a panic; an accepted name is canonical
//! (it parses to itself with either rule set) and within the DNS limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meds_proto::DomainName;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for parse in [DomainName::parse_user, DomainName::from_feed] {
        if let Ok(name) = parse(text) {
            assert!(name.len() <= 253);
            assert!(name.labels().all(|l| !l.is_empty() && l.len() <= 63));
            assert_eq!(DomainName::from_feed(name.as_str()).as_ref(), Ok(&name));
        }
    }
    if let Ok(user) = DomainName::parse_user(text) {
        // The user rules are stricter: whatever they accept, the feed rules accept the same way.
        assert_eq!(DomainName::from_feed(text).as_ref(), Ok(&user));
    }
});
