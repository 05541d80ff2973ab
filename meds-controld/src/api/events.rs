//! `GET /v1/events?recent=N&follow=BOOL`: sampled drop decisions as NDJSON
//! (`Content-Type: application/x-ndjson`), one JSON object per line: first the `recent` most
//! recent ones (default 100, at most 1000), then with `follow=true` new ones as they come until
//! the client goes away or the controller stops.
//!
//! ```json
//! {"time":"2026-11-29T02:30:00.123Z","source":"203.0.113.7","source_port":40000,
//!  "destination_port":443,"protocol":"tcp","filter":"ip","reason":"BlackList","queue":0}
//! {"time":"…","source":"198.51.100.9","source_port":5353,"destination_port":53,
//!  "protocol":"udp","filter":"domain","reason":"BlackList","dns":"bad.example","queue":1}
//! {"suppressed":12}
//! ```
//! `protocol` is `tcp`, `udp`, `icmp` or `icmpv6`, else the protocol number. `sni`, `dns`,
//! `ja3` and `ja4` are present only when the event has them. A `{"suppressed":N}` line comes
//! before the events of a batch when N drop decisions were not sampled by the dataplane, or
//! were missed by this (slow) reader.
//!
//! The request timeout of the router bounds only the time to the response head, so a
//! following stream is not cut by it; controller shutdown ends it (the hub is closed).

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::Query as QueryParams;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use meds_proto::pb;
use serde_json::{Map, Value, json};
use tokio_stream::StreamExt;

use super::ApiState;
use super::error::ApiError;

/// `recent` when not given.
pub const DEFAULT_RECENT: usize = 100;

pub(crate) async fn events(
    state: Arc<ApiState>,
    params: Result<QueryParams<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let QueryParams(params) =
        params.map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))?;
    let (recent, follow) = parse_params(&params)?;
    let stream = state
        .controller
        .events()
        .stream(recent, follow)
        .map(|batch| Ok::<Bytes, Infallible>(Bytes::from(batch_lines(&batch))));
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

fn parse_params(params: &[(String, String)]) -> Result<(usize, bool), ApiError> {
    let mut recent = DEFAULT_RECENT;
    let mut follow = false;
    for (key, value) in params {
        let shown: String = value.chars().take(32).collect();
        match key.as_str() {
            "recent" => {
                recent = value.trim().parse::<usize>().map_err(|_| {
                    ApiError::BadRequest(format!("recent: {shown:?} is not a number of events"))
                })?;
            }
            "follow" => {
                follow = match value.trim() {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(ApiError::BadRequest(format!(
                            "follow: {shown:?} is not true or false"
                        )));
                    }
                };
            }
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter {shown:?} (recent, follow)"
                )));
            }
        }
    }
    Ok((recent, follow))
}

/// The NDJSON lines of one batch: `{"suppressed":N}` first when N > 0, then one per event.
pub fn batch_lines(batch: &pb::EventBatch) -> String {
    let mut out = String::new();
    if batch.suppressed > 0 {
        out.push_str(&json!({ "suppressed": batch.suppressed }).to_string());
        out.push('\n');
    }
    for e in &batch.events {
        out.push_str(&event_json(e).to_string());
        out.push('\n');
    }
    out
}

/// One event as JSON (see the module docs).
pub fn event_json(e: &pb::DropEvent) -> Value {
    let mut m = Map::new();
    m.insert("time".into(), Value::String(rfc3339_ms(e.time_unix_ms)));
    m.insert("source".into(), Value::String(source_text(&e.source)));
    m.insert("source_port".into(), json!(e.source_port));
    m.insert("destination_port".into(), json!(e.destination_port));
    m.insert("protocol".into(), protocol_json(e.protocol));
    m.insert("filter".into(), Value::String(e.filter.clone()));
    m.insert("reason".into(), Value::String(e.reason.clone()));
    for (key, value) in [
        ("sni", &e.sni),
        ("dns", &e.dns),
        ("ja3", &e.ja3),
        ("ja4", &e.ja4),
    ] {
        if !value.is_empty() {
            m.insert(key.into(), Value::String(value.clone()));
        }
    }
    m.insert("queue".into(), json!(e.queue));
    Value::Object(m)
}

/// `tcp`, `udp`, `icmp`, `icmpv6`, else the number.
pub fn protocol_json(protocol: u32) -> Value {
    match protocol {
        6 => json!("tcp"),
        17 => json!("udp"),
        1 => json!("icmp"),
        58 => json!("icmpv6"),
        n => json!(n),
    }
}

fn source_text(bytes: &[u8]) -> String {
    if let Ok(a) = <[u8; 4]>::try_from(bytes) {
        IpAddr::from(a).to_string()
    } else if let Ok(a) = <[u8; 16]>::try_from(bytes) {
        IpAddr::from(a).to_string()
    } else {
        String::new()
    }
}

/// `2026-11-29T02:30:00.123Z` (UTC, milliseconds).
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        unix_ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm,
/// non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_001), "2000-02-29T00:00:00.001Z");
        assert_eq!(rfc3339_ms(1_704_067_199_999), "2023-12-31T23:59:59.999Z");
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
        assert_eq!(protocol_json(47), json!(47));
        let lines = batch_lines(&pb::EventBatch {
            events: vec![e],
            suppressed: 3,
        });
        let mut it = lines.lines();
        assert_eq!(it.next(), Some("{\"suppressed\":3}"));
        assert!(it.next().unwrap().contains("\"dns\":\"bad.example\""));
        assert_eq!(it.next(), None);
    }

    #[test]
    fn params() {
        let p = |pairs: &[(&str, &str)]| {
            parse_params(
                &pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(p(&[]).unwrap(), (100, false));
        assert_eq!(
            p(&[("follow", "true"), ("recent", "5")]).unwrap(),
            (5, true)
        );
        assert_eq!(p(&[("follow", "0")]).unwrap(), (100, false));
        assert!(
            p(&[("recent", "-1")])
                .unwrap_err()
                .to_string()
                .starts_with("recent: ")
        );
        assert!(
            p(&[("follow", "yes")])
                .unwrap_err()
                .to_string()
                .starts_with("follow: ")
        );
        assert!(
            p(&[("x", "1")])
                .unwrap_err()
                .to_string()
                .contains("unknown parameter")
        );
    }
}
