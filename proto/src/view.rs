//! The JSON documents the REST API and `medsctl --json` both print for the observation RPCs, so
//! that the two never differ: a drop event (`GET /v1/events`, `medsctl events --json`) and an
//! explanation (`GET /v1/explain/{ip}`, `medsctl explain --json`), plus the small text forms
//! they are made of (RFC 3339 times, protocol names, outcome words, event addresses).
//!
//! Must not: validate (these render what was already validated, and render anything else
//! harmlessly: an address that is not 4 or 16 bytes is `""`, an unknown outcome `unspecified`).

use std::net::IpAddr;

use serde_json::{Map, Value, json};

use crate::pb;

/// Latest second [`rfc3339`] renders as a date (9999-12-31T23:59:59Z); later ones are `@N`.
pub const MAX_RFC3339_SECS: u64 = 253_402_300_799;

/// `2026-11-29T02:30:00Z` (UTC); `@N` past year 9999.
pub fn rfc3339(secs: u64) -> String {
    if secs > MAX_RFC3339_SECS {
        return format!("@{secs}");
    }
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `2026-11-29T02:30:00.123Z` (UTC, milliseconds); `@N` (seconds) past year 9999.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = rfc3339(unix_ms / 1000);
    match secs.strip_suffix('Z') {
        Some(base) => format!("{base}.{:03}Z", unix_ms % 1000),
        None => secs,
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm,
/// restricted to non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The address of a 4- or 16-byte field (`DropEvent.source`); `None` for any other length.
pub fn address(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(a) = <[u8; 4]>::try_from(bytes) {
        Some(IpAddr::from(a))
    } else if let Ok(a) = <[u8; 16]>::try_from(bytes) {
        Some(IpAddr::from(a))
    } else {
        None
    }
}

/// `tcp`, `udp`, `icmp`, `icmpv6`; `None` for other protocol numbers.
pub fn protocol_name(protocol: u32) -> Option<&'static str> {
    match protocol {
        6 => Some("tcp"),
        17 => Some("udp"),
        1 => Some("icmp"),
        58 => Some("icmpv6"),
        _ => None,
    }
}

/// The lower-case word of an explain outcome: `match`, `no_match`, `not_reached`, `skipped`,
/// else `unspecified`.
pub fn outcome_word(raw: i32) -> &'static str {
    match pb::ExplainOutcome::try_from(raw) {
        Ok(pb::ExplainOutcome::Match) => "match",
        Ok(pb::ExplainOutcome::NoMatch) => "no_match",
        Ok(pb::ExplainOutcome::NotReached) => "not_reached",
        Ok(pb::ExplainOutcome::Skipped) => "skipped",
        Ok(pb::ExplainOutcome::Unspecified) | Err(_) => "unspecified",
    }
}

/// One drop event: `time` (RFC 3339, UTC, milliseconds), `source`, `source_port`,
/// `destination_port`, `protocol` (name where known, else the number), `filter`, `reason`,
/// `sni`/`dns`/`ja3`/`ja4` only when present, `queue`.
pub fn event_json(e: &pb::DropEvent) -> Value {
    let mut m = Map::new();
    m.insert("time".into(), Value::from(rfc3339_ms(e.time_unix_ms)));
    m.insert(
        "source".into(),
        Value::from(address(&e.source).map_or_else(String::new, |a| a.to_string())),
    );
    m.insert("source_port".into(), Value::from(e.source_port));
    m.insert("destination_port".into(), Value::from(e.destination_port));
    m.insert(
        "protocol".into(),
        protocol_name(e.protocol).map_or_else(|| Value::from(e.protocol), Value::from),
    );
    m.insert("filter".into(), Value::from(e.filter.as_str()));
    m.insert("reason".into(), Value::from(e.reason.as_str()));
    for (key, value) in [
        ("sni", &e.sni),
        ("dns", &e.dns),
        ("ja3", &e.ja3),
        ("ja4", &e.ja4),
    ] {
        if !value.is_empty() {
            m.insert(key.into(), Value::from(value.as_str()));
        }
    }
    m.insert("queue".into(), Value::from(e.queue));
    Value::Object(m)
}

/// The explanation of `ip`: `{"ip","generation","steps":[{"filter","list","outcome","detail",
/// "verdict","reason"}],"verdict","filter","reason","offload"}`, `outcome` as
/// [`outcome_word`].
pub fn explain_json(ip: &str, r: &pb::ExplainResponse) -> Value {
    let steps: Vec<Value> = r
        .steps
        .iter()
        .map(|s| {
            json!({
                "filter": s.filter,
                "list": s.list,
                "outcome": outcome_word(s.outcome),
                "detail": s.detail,
                "verdict": s.verdict,
                "reason": s.reason,
            })
        })
        .collect();
    json!({
        "ip": ip,
        "generation": r.generation,
        "steps": steps,
        "verdict": r.verdict,
        "filter": r.filter,
        "reason": r.reason,
        "offload": r.offload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_at_calendar_edges() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (951_868_799, "2000-02-29T23:59:59Z"),
            (4_107_456_000, "2100-02-28T00:00:00Z"),
            (4_107_542_399, "2100-02-28T23:59:59Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (1_709_251_200, "2024-03-01T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (MAX_RFC3339_SECS, "9999-12-31T23:59:59Z"),
            (MAX_RFC3339_SECS + 1, "@253402300800"),
            (u64::MAX, "@18446744073709551615"),
        ];
        for (secs, want) in cases {
            assert_eq!(rfc3339(secs), want, "{secs}");
        }
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_001), "2000-02-29T00:00:00.001Z");
        assert_eq!(rfc3339_ms(1_704_067_199_999), "2023-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(u64::MAX), format!("@{}", u64::MAX / 1000));
    }

    #[test]
    fn words_names_and_addresses() {
        assert_eq!(
            [1, 2, 3, 4, 0, 99].map(outcome_word),
            [
                "no_match",
                "match",
                "not_reached",
                "skipped",
                "unspecified",
                "unspecified"
            ]
        );
        assert_eq!(protocol_name(58), Some("icmpv6"));
        assert_eq!(protocol_name(47), None);
        assert_eq!(address(&[203, 0, 113, 7]), Some([203, 0, 113, 7].into()));
        assert_eq!(address(&[1, 2, 3]), None);
    }

    #[test]
    fn event_shape() {
        let e = pb::DropEvent {
            time_unix_ms: 1_704_067_200_000,
            source: vec![0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            source_port: 5353,
            destination_port: 53,
            protocol: 17,
            filter: "domain".into(),
            reason: "BlackList".into(),
            dns: "bad.example".into(),
            queue: 2,
            ..pb::DropEvent::default()
        };
        assert_eq!(
            event_json(&e),
            json!({"time":"2024-01-01T00:00:00.000Z","source":"2001:db8::1","source_port":5353,
                   "destination_port":53,"protocol":"udp","filter":"domain","reason":"BlackList",
                   "dns":"bad.example","queue":2})
        );
        let other = pb::DropEvent {
            protocol: 47,
            source: vec![1],
            ..pb::DropEvent::default()
        };
        assert_eq!(event_json(&other)["protocol"], json!(47));
        assert_eq!(event_json(&other)["source"], json!(""));
    }

    #[test]
    fn explain_shape() {
        let r = pb::ExplainResponse {
            generation: 4,
            steps: vec![pb::ExplainStep {
                filter: "ip".into(),
                list: "blacklist".into(),
                outcome: pb::ExplainOutcome::Match as i32,
                detail: "203.0.113.7 is in 203.0.113.0/24".into(),
                verdict: "drop".into(),
                reason: "BlackList".into(),
            }],
            verdict: "drop".into(),
            filter: "ip".into(),
            reason: "BlackList".into(),
            offload: "blocked (offloaded to the kernel)".into(),
            ..pb::ExplainResponse::default()
        };
        assert_eq!(
            explain_json("203.0.113.7", &r),
            json!({"ip":"203.0.113.7","generation":4,"steps":[{"filter":"ip","list":"blacklist",
                   "outcome":"match","detail":"203.0.113.7 is in 203.0.113.0/24","verdict":"drop",
                   "reason":"BlackList"}],"verdict":"drop","filter":"ip","reason":"BlackList",
                   "offload":"blocked (offloaded to the kernel)"})
        );
    }
}
