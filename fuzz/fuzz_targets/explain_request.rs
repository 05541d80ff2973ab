//! Any bytes decoded as an `ExplainRequest` (what the controller sends over the sync stream)
//! and answered by `explain::wire::respond` against a rule set with every kind of list: the
//! answer either names the refused field or explains the whole chain, and never panics.
//! The rule set is the one `meds-dataplane/tests/fuzz_corpus.rs` replays the corpus with.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meds_dataplane::chain::RuleSet;
use meds_proto::{Asn, Cidr, CountryCode, DomainName, Entry, IpAsn, ListKind, pb};
use prost::Message;

include!("../shared/explain_rules.rs");

fuzz_target!(|data: &[u8]| {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    let rules = RULES.get_or_init(explain_rules);
    if let Ok(request) = pb::ExplainRequest::decode(data) {
        for offload in [false, true] {
            let answer = meds_dataplane::explain::wire::respond(rules, None, offload, &request);
            assert_eq!(answer.id, request.id);
            // Refused with a reason, or explained step by step; never both, never neither.
            assert!(answer.error.is_empty() != answer.steps.is_empty());
        }
    }
});
