//! Any bytes decoded as a sync chunk and fed to a stager (twice, to reach the delta paths).
#![no_main]
use libfuzzer_sys::fuzz_target;
use meds_proto::{pb, sync::Stager};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let mut stager = Stager::new();
    for part in data.split(|b| *b == 0xff).take(8) {
        if let Ok(chunk) = pb::UpdateChunk::decode(part) {
            let _ = stager.push(&chunk);
        }
    }
});
