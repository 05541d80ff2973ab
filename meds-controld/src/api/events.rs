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

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::Query as QueryParams;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use meds_proto::pb;
use serde_json::json;
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
        out.push_str(&meds_proto::view::event_json(e).to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_lines_put_suppressed_first() {
        let e = pb::DropEvent {
            dns: "bad.example".into(),
            ..pb::DropEvent::default()
        };
        let lines = batch_lines(&pb::EventBatch {
            events: vec![e],
            suppressed: 3,
        });
        let mut it = lines.lines();
        assert_eq!(it.next(), Some("{\"suppressed\":3}"));
        assert!(it.next().unwrap().contains("\"dns\":\"bad.example\""));
        assert_eq!(it.next(), None);
        let quiet = batch_lines(&pb::EventBatch::default());
        assert_eq!(quiet, "");
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
