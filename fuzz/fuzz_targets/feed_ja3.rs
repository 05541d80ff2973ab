//! Any bytes through the `feeds::parse::ja3_sslbl` feed parser: it must never panic, and whatever it
//! accepts is sorted, deduplicated and within the limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meds_controld::feeds::parse::{Limits, ja3_sslbl};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(parsed) = ja3_sslbl(data, &limits) {
        assert!(!parsed.entries.is_empty());
        assert!(parsed.entries.len() <= limits.max_entries);
        assert!(parsed.entries.windows(2).all(|w| w[0] < w[1]));
        let r = &parsed.report;
        assert_eq!(r.lines, r.accepted + r.comments + r.skipped + r.rejected);
    }
});
