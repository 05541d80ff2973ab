//! Any byte string through the packet parser and the whole chain.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meds_dataplane::chain::{RuleSet, UnparsableVerdict, decide};

fuzz_target!(|data: &[u8]| {
    let _ = meds_dataplane::packet::parse(data);
    let _ = decide(&RuleSet::empty(), data, UnparsableVerdict::Accept);
});
