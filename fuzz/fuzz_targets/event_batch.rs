//! Any bytes decoded as an `EventBatch` (sampled drop events from the dataplane, across the
//! sync socket's trust boundary) and published to the controller's event hub: events are kept
//! only when valid, every one is counted (kept, invalid or over the batch limit), no panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meds_controld::events::EventHub;
use meds_proto::pb;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let hub = EventHub::new(8);
    for part in data.split(|b| *b == 0xff).take(4) {
        if let Ok(batch) = pb::EventBatch::decode(part) {
            let total = batch.events.len();
            let accepted = hub.publish(batch);
            assert_eq!(
                accepted.events + accepted.invalid + accepted.over_limit,
                total
            );
        }
    }
});
