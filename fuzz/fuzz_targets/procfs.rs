//! Any text as /proc/net/netfilter/nfnetlink_queue and /proc/self/statm: the parsers skip what
//! they cannot read and never panic; only the asked-for queues come back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meds_dataplane::procfs;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in procfs::parse_queues(&text, &[0, 1, 7, 65535]) {
        assert!([0, 1, 7, 65535].contains(&line.queue));
    }
    let _ = procfs::parse_statm(&text, 4096);
});
