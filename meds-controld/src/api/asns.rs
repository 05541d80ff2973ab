//! `/v1/blacklist/asns`: the user ASN blocklist (the original has none). Decode, call the
//! [`Controller`](crate::core::Controller), encode; no policy logic lives here.
//!
//! Bodies carry numbers or strings (`{"asns":[64496,"AS64497"]}`); answers carry numbers
//! (`{"asns":[64496,64497]}`). Reserved numbers (0, 23456, 4294967295) and anything that is not
//! an AS number are a 400 naming the element, and nothing changes.

use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::{HeaderMap, StatusCode};
use meds_proto::{Asn, AsnError, Entry, ListKind};
use serde::Serialize;

use super::ApiState;
use super::body::{Element, decode_list};
use super::countries::FoundResponse;
use super::error::ApiError;
use super::subnets::{ChangeResponse, accepted, run_to_completion};

const LIST: ListKind = ListKind::AsnBlock;

/// `GET /v1/blacklist/asns`.
#[derive(Debug, Serialize)]
pub struct AsnsResponse {
    /// AS numbers, ascending.
    pub asns: Vec<u32>,
}

pub(crate) async fn list(state: Arc<ApiState>) -> Json<AsnsResponse> {
    let asns = state
        .controller
        .list(LIST)
        .iter()
        .filter_map(|e| match e {
            Entry::Asn(a) => Some(a.get()),
            _ => None,
        })
        .collect();
    Json(AsnsResponse { asns })
}

pub(crate) async fn add(
    state: Arc<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ChangeResponse>), ApiError> {
    let entries = decode(&headers, &body?, state.max_entries)?;
    let controller = Arc::clone(&state.controller);
    let change =
        run_to_completion(async move { controller.add(LIST, entries, true).await }).await?;
    Ok(accepted(change))
}

pub(crate) async fn remove(
    state: Arc<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ChangeResponse>), ApiError> {
    let entries = decode(&headers, &body?, state.max_entries)?;
    let controller = Arc::clone(&state.controller);
    let change =
        run_to_completion(async move { controller.remove(LIST, entries, true).await }).await?;
    Ok(accepted(change))
}

pub(crate) async fn check(
    state: Arc<ApiState>,
    asn: Result<Path<String>, PathRejection>,
) -> Result<Json<FoundResponse>, ApiError> {
    let Path(asn) = asn?;
    let asn = Asn::from_str(&asn).map_err(|e| ApiError::BadRequest(format!("asn: {e}")))?;
    Ok(Json(FoundResponse {
        found: state.controller.contains(LIST, &Entry::Asn(asn)),
    }))
}

/// A number or a string (`64496`, `"64496"`, `"AS64496"`).
fn parse_element(element: Element) -> Result<Asn, String> {
    match element {
        Element::Text(text) => Asn::from_str(&text).map_err(|e| e.to_string()),
        Element::Number(n) => u32::try_from(n)
            .map_err(|_| AsnError::Invalid(n.to_string()))
            .and_then(Asn::new)
            .map_err(|e| e.to_string()),
        other => Err(format!(
            "expected a number or a string, got {}",
            other.kind()
        )),
    }
}

/// Every element must be an AS number; the first bad one is reported.
fn decode(headers: &HeaderMap, body: &Bytes, max_entries: usize) -> Result<Vec<Entry>, ApiError> {
    decode_list(headers, body, "asns", max_entries)?
        .into_iter()
        .enumerate()
        .map(|(i, element)| {
            parse_element(element)
                .map(Entry::Asn)
                .map_err(|e| ApiError::BadRequest(format!("asns[{i}]: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, header};

    fn run(body: &str) -> Result<Vec<u32>, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        decode(&headers, &Bytes::from(body.to_string()), 10)
            .map(|v| {
                v.iter()
                    .map(|e| match e {
                        Entry::Asn(a) => a.get(),
                        other => panic!("not an ASN: {other:?}"),
                    })
                    .collect()
            })
            .map_err(|e| format!("{} {e}", e.status().as_u16()))
    }

    #[test]
    fn decoding_table() {
        let cases: Vec<(&str, Result<Vec<u32>, &str>)> = vec![
            (r#"{"asns":[]}"#, Ok(vec![])),
            (
                r#"{"asns":[64496,"AS64497","as64498","64499",1,4294967294]}"#,
                Ok(vec![64496, 64497, 64498, 64499, 1, 4_294_967_294]),
            ),
            (
                r#"{"asns":[64496,0]}"#,
                Err("400 asns[1]: AS0 is reserved and never originates traffic"),
            ),
            (
                r#"{"asns":[23456]}"#,
                Err("400 asns[0]: AS23456 is reserved"),
            ),
            (
                r#"{"asns":[4294967295]}"#,
                Err("400 asns[0]: AS4294967295 is reserved"),
            ),
            (
                r#"{"asns":[4294967296]}"#,
                Err(r#"400 asns[0]: "4294967296" is not an AS number"#),
            ),
            (r#"{"asns":["AS0"]}"#, Err("400 asns[0]: AS0 is reserved")),
            (
                r#"{"asns":["ASN1"]}"#,
                Err(r#"400 asns[0]: "ASN1" is not an AS number"#),
            ),
            (r#"{"asns":[""]}"#, Err("400 asns[0]: empty value")),
            (
                r#"{"asns":[-1]}"#,
                Err("400 asns[0]: expected a number or a string, got a negative number"),
            ),
            (
                r#"{"asns":[1.5]}"#,
                Err("400 asns[0]: expected a number or a string, got a fractional number"),
            ),
            (
                r#"{"asns":[1,null]}"#,
                Err("400 asns[1]: expected a number or a string, got null"),
            ),
            (
                r#"{"asns":[[64496]]}"#,
                Err("400 asns[0]: expected a number or a string, got an array"),
            ),
            (
                r#"{"asns":64496}"#,
                Err("400 invalid JSON body: invalid type: integer"),
            ),
        ];
        for (body, want) in cases {
            let got = run(body);
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{body}"),
                (Err(g), Err(w)) => assert!(g.starts_with(w), "{body}: got {g:?}, want {w:?}"),
                _ => panic!("{body}: got {got:?}, want {want:?}"),
            }
        }
    }
}
