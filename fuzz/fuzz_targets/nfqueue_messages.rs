//! Any datagram through the NFQUEUE netlink message walker.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for packet in meds_dataplane::nfqueue::packets(data).take(1024) {
        let _ = packet;
    }
});
