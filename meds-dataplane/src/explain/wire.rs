//! The wire side of `explain`: validate an `ExplainRequest` from the sync stream (a trust
//! boundary: nothing in it is assumed valid), run [`super::explain`] on the live rule set and
//! encode the `ExplainResponse`. A request that does not validate gets a response with its
//! `id` and an `error` naming the field, and nothing else. Never panics, whatever the input.

use std::net::IpAddr;

use meds_proto::pb;
use meds_proto::{DomainName, Ja3Hash, Ja4};

use super::{Explanation, Outcome, Query, explain};
use crate::chain::RuleSet;
use crate::ratelimit::RateLimiter;

/// Most DNS names one request may carry.
pub const MAX_DNS_NAMES: usize = 16;
/// Longest part of an offending value quoted in an error, in characters.
const MAX_QUOTED_CHARS: usize = 64;

/// Why an `ExplainRequest` was refused. Every message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("source: expected 4 or 16 bytes (an IPv4 or IPv6 address), got {0}")]
    Source(usize),
    #[error("port: {0} is over 65535")]
    Port(u32),
    #[error("sni: {value:?} is not a canonical domain name{why}")]
    Sni { value: String, why: String },
    #[error("dns: {count} names, at most {MAX_DNS_NAMES}")]
    TooManyDns { count: usize },
    #[error("dns[{index}]: {value:?} is not a canonical domain name{why}")]
    Dns {
        index: usize,
        value: String,
        why: String,
    },
    #[error("ja3: expected 16 bytes (an MD5) or none, got {0}")]
    Ja3(usize),
    #[error("ja4: {value:?} is not a canonical JA4 fingerprint{why}")]
    Ja4 { value: String, why: String },
}

/// At most [`MAX_QUOTED_CHARS`] characters of `value`.
fn quote(value: &str) -> String {
    let mut out: String = value.chars().take(MAX_QUOTED_CHARS).collect();
    if out.len() < value.len() {
        out.push('…');
    }
    out
}

/// A domain name in its canonical wire form (the rule of `meds_proto::Entry::from_wire`: the
/// lenient parser's output must equal the input). `Err` carries the reason, for the message.
fn canonical_domain(raw: &str) -> Result<DomainName, String> {
    match DomainName::from_feed(raw) {
        Ok(name) if name.as_str() == raw => Ok(name),
        Ok(name) => Err(format!(
            " (the canonical form is {:?})",
            quote(name.as_str())
        )),
        Err(e) => Err(format!(": {e}")),
    }
}

/// Validate a request into a [`Query`].
pub fn query_from_wire(request: &pb::ExplainRequest) -> Result<Query, RequestError> {
    let source = match request.source.len() {
        4 => {
            let mut b = [0u8; 4];
            b.copy_from_slice(&request.source);
            IpAddr::from(b)
        }
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&request.source);
            IpAddr::from(b)
        }
        n => return Err(RequestError::Source(n)),
    };
    let port = match request.port {
        0 => None,
        p => Some(u16::try_from(p).map_err(|_| RequestError::Port(p))?),
    };
    let sni = match request.sni.as_str() {
        "" => None,
        raw => Some(canonical_domain(raw).map_err(|why| RequestError::Sni {
            value: quote(raw),
            why,
        })?),
    };
    if request.dns.len() > MAX_DNS_NAMES {
        return Err(RequestError::TooManyDns {
            count: request.dns.len(),
        });
    }
    let dns = request
        .dns
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            canonical_domain(raw).map_err(|why| RequestError::Dns {
                index,
                value: quote(raw),
                why,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ja3 = match request.ja3.len() {
        0 => None,
        16 => {
            let mut digest = [0u8; 16];
            digest.copy_from_slice(&request.ja3);
            Some(Ja3Hash::from_digest(digest))
        }
        n => return Err(RequestError::Ja3(n)),
    };
    let ja4 = match request.ja4.as_str() {
        "" => None,
        raw => match raw.parse::<Ja4>() {
            Ok(f) if f.as_str() == raw => Some(f),
            Ok(f) => {
                return Err(RequestError::Ja4 {
                    value: quote(raw),
                    why: format!(" (the canonical form is {:?})", f.as_str()),
                });
            }
            Err(e) => {
                return Err(RequestError::Ja4 {
                    value: quote(raw),
                    why: format!(": {e}"),
                });
            }
        },
    };
    Ok(Query {
        source,
        port,
        sni,
        dns,
        ja3,
        ja4,
    })
}

/// Answer an `ExplainRequest` from the live rule set. `limiter` is the running rate limiter
/// (only its configuration is read: no token is consumed); `offload` whether connection-mark
/// offload is on.
pub fn respond(
    rules: &RuleSet,
    limiter: Option<&RateLimiter>,
    offload: bool,
    request: &pb::ExplainRequest,
) -> pb::ExplainResponse {
    match query_from_wire(request) {
        Ok(query) => {
            let explanation = explain(rules, limiter.map(RateLimiter::config), offload, &query);
            to_wire(request.id, &explanation)
        }
        Err(e) => pb::ExplainResponse {
            id: request.id,
            error: e.to_string(),
            ..Default::default()
        },
    }
}

fn outcome_to_wire(outcome: Outcome) -> pb::ExplainOutcome {
    match outcome {
        Outcome::NoMatch => pb::ExplainOutcome::NoMatch,
        Outcome::Match => pb::ExplainOutcome::Match,
        Outcome::NotReached => pb::ExplainOutcome::NotReached,
        Outcome::Skipped => pb::ExplainOutcome::Skipped,
    }
}

/// Encode an explanation.
pub fn to_wire(id: u64, explanation: &Explanation) -> pb::ExplainResponse {
    let steps = explanation
        .steps
        .iter()
        .map(|s| pb::ExplainStep {
            filter: s.filter.label().to_string(),
            list: s.list.to_string(),
            outcome: outcome_to_wire(s.outcome) as i32,
            detail: s.detail.clone(),
            verdict: s
                .decision
                .map(|d| d.verdict.label().to_string())
                .unwrap_or_default(),
            reason: s
                .decision
                .map(|d| d.reason.label().to_string())
                .unwrap_or_default(),
        })
        .collect();
    let d = explanation.decision;
    pb::ExplainResponse {
        id,
        error: String::new(),
        steps,
        verdict: d.verdict.label().to_string(),
        filter: d.filter.label().to_string(),
        reason: d.reason.label().to_string(),
        generation: explanation.generation,
        offload: explanation.offload.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meds_proto::{Cidr, Entry, ListKind};
    use proptest::prelude::*;

    fn request() -> pb::ExplainRequest {
        pb::ExplainRequest {
            id: 7,
            source: vec![203, 0, 113, 7],
            port: 443,
            sni: "www.example.com".into(),
            dns: vec![],
            ja3: vec![0xab; 16],
            ja4: "t13d1516h2_8daaf6152771_02713d6af862".into(),
        }
    }

    #[test]
    fn a_valid_request_is_answered() {
        let rules = RuleSet::empty()
            .with_list(
                ListKind::IpBlock,
                &[Entry::Prefix("203.0.113.0/24".parse::<Cidr>().unwrap())],
            )
            .with_generation(42);
        let r = respond(&rules, None, true, &request());
        assert_eq!(r.id, 7);
        assert_eq!(r.error, "");
        assert_eq!(
            (r.verdict.as_str(), r.filter.as_str(), r.reason.as_str()),
            ("drop", "ip", "BlackList")
        );
        assert_eq!(r.generation, 42);
        assert_eq!(
            r.offload,
            "blocked (offloaded to the kernel): the source is blocked"
        );
        let lists: Vec<&str> = r.steps.iter().map(|s| s.list.as_str()).collect();
        assert_eq!(
            lists,
            [
                "whitelist",
                "rate_limiter",
                "blacklist",
                "firehol",
                "spamhaus",
                "feodo",
                "countries",
                "spamhaus_asndrop",
                "asns",
                "domain_whitelist",
                "domain_blacklist",
                "stevenblack",
                "someonewhocares",
                "sslbl_ja3",
                "ja3",
                "ja4",
                "default",
            ]
        );
        let block = &r.steps[2];
        assert_eq!(block.outcome, pb::ExplainOutcome::Match as i32);
        assert_eq!(block.detail, "203.0.113.7 is in 203.0.113.0/24");
        assert_eq!(
            (block.verdict.as_str(), block.reason.as_str()),
            ("drop", "BlackList")
        );
        assert_eq!(r.steps[1].detail, "off");
        assert!(
            r.steps[3..]
                .iter()
                .all(|s| s.outcome == pb::ExplainOutcome::NotReached as i32 && s.verdict.is_empty())
        );
        // IPv6 and no optional fields.
        let v6 = pb::ExplainRequest {
            id: 8,
            source: vec![0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ..Default::default()
        };
        let r = respond(&RuleSet::empty(), None, false, &v6);
        assert_eq!(
            (r.id, r.error.as_str(), r.verdict.as_str()),
            (8, "", "accept")
        );
        assert_eq!(r.offload, "offload disabled");
    }

    #[test]
    fn bad_requests_name_the_field() {
        type Edit = fn(&mut pb::ExplainRequest);
        let cases: &[(&str, Edit, &str)] = &[
            (
                "no source",
                |r| r.source.clear(),
                "source: expected 4 or 16 bytes",
            ),
            ("5-byte source", |r| r.source = vec![1; 5], "got 5"),
            ("17-byte source", |r| r.source = vec![1; 17], "got 17"),
            ("port", |r| r.port = 65_536, "port: 65536 is over 65535"),
            (
                "sni upper case",
                |r| r.sni = "WWW.example.com".into(),
                "sni: \"WWW.example.com\" is not a canonical domain name (the canonical form is \"www.example.com\")",
            ),
            (
                "sni trailing dot",
                |r| r.sni = "example.com.".into(),
                "sni: \"example.com.\"",
            ),
            (
                "sni garbage",
                |r| r.sni = "a b".into(),
                "sni: \"a b\" is not a canonical domain name: ",
            ),
            ("sni numeric", |r| r.sni = "1.2.3.4".into(), "sni: "),
            (
                "dns name",
                |r| r.dns = vec!["ok.example".into(), "bad..example".into()],
                "dns[1]: \"bad..example\"",
            ),
            (
                "dns empty name",
                |r| r.dns = vec![String::new()],
                "dns[0]: \"\"",
            ),
            (
                "too many dns",
                |r| r.dns = vec!["a.example".into(); MAX_DNS_NAMES + 1],
                "dns: 17 names, at most 16",
            ),
            (
                "ja3 short",
                |r| r.ja3 = vec![0; 15],
                "ja3: expected 16 bytes (an MD5) or none, got 15",
            ),
            ("ja3 long", |r| r.ja3 = vec![0; 17], "ja3: "),
            (
                "ja4 upper case",
                |r| r.ja4 = "T13D1516H2_8DAAF6152771_02713D6AF862".into(),
                "ja4: \"T13D1516H2_8DAAF6152771_02713D6AF862\" is not a canonical JA4 fingerprint (the canonical form is \"t13d1516h2_8daaf6152771_02713d6af862\")",
            ),
            (
                "ja4 garbage",
                |r| r.ja4 = "nope".into(),
                "ja4: \"nope\" is not a canonical JA4 fingerprint: ",
            ),
        ];
        for (name, edit, want) in cases {
            let mut req = request();
            edit(&mut req);
            let r = respond(&RuleSet::empty(), None, true, &req);
            assert_eq!(r.id, 7, "{name}");
            assert!(
                r.error.starts_with(want) || r.error.contains(want),
                "{name}: {}",
                r.error
            );
            assert!(
                r.steps.is_empty() && r.verdict.is_empty() && r.offload.is_empty(),
                "{name}"
            );
            assert_eq!(
                (r.generation, r.filter.as_str(), r.reason.as_str()),
                (0, "", ""),
                "{name}"
            );
        }
        // Exactly at the limits is fine.
        let mut req = request();
        req.port = 65_535;
        req.dns = vec!["a.example".into(); MAX_DNS_NAMES];
        assert_eq!(respond(&RuleSet::empty(), None, true, &req).error, "");
    }

    fn arbitrary_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,40}",
            "[a-zA-Z0-9._-]{0,40}",
            Just("t13d1516h2_8daaf6152771_02713d6af862".to_string()),
            Just("www.example.com".to_string()),
        ]
    }

    proptest! {
        #[test]
        fn respond_never_panics(
            id in any::<u64>(),
            source in proptest::collection::vec(any::<u8>(), 0..20),
            port in any::<u32>(),
            sni in arbitrary_text(),
            dns in proptest::collection::vec(arbitrary_text(), 0..20),
            ja3 in proptest::collection::vec(any::<u8>(), 0..20),
            ja4 in arbitrary_text(),
            offload in any::<bool>(),
        ) {
            let rules = super::super::tests::full_rules();
            let req = pb::ExplainRequest { id, source, port, sni, dns, ja3, ja4 };
            let r = respond(&rules, None, offload, &req);
            prop_assert_eq!(r.id, id);
            if r.error.is_empty() {
                prop_assert_eq!(r.steps.len(), 17);
                prop_assert!(!r.verdict.is_empty());
            } else {
                prop_assert!(r.steps.is_empty());
            }
        }
    }
}
