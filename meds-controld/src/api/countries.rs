//! `/v1/blacklist/countries`: the country blocklist. Decode, call the [`Controller`](crate::core::Controller),
//! encode; no policy logic lives here.
//!
//! Codes are ISO 3166-1 alpha-2 (plus `xk`), accepted in any case and answered in lower case.
//! Unlike the original, anything else (`"xx"`, `"USA"`, `""`) is a 400 naming the element, and
//! nothing changes.

use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::{HeaderMap, StatusCode};
use meds_proto::{CountryCode, Entry, ListKind};
use serde::Serialize;

use super::ApiState;
use super::body::{Element, decode_list};
use super::error::ApiError;
use super::subnets::{ChangeResponse, accepted, run_to_completion};

const LIST: ListKind = ListKind::CountryBlock;

/// `GET /v1/blacklist/countries`.
#[derive(Debug, Serialize)]
pub struct CountriesResponse {
    /// Lower-case codes, sorted.
    pub countries: Vec<String>,
}

/// `GET /v1/blacklist/countries/{cc}` and `GET /v1/blacklist/asns/{asn}`.
#[derive(Debug, Serialize)]
pub struct FoundResponse {
    pub found: bool,
}

pub(crate) async fn list(state: Arc<ApiState>) -> Json<CountriesResponse> {
    let countries = state
        .controller
        .list(LIST)
        .iter()
        .map(Entry::to_string)
        .collect();
    Json(CountriesResponse { countries })
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
    country: Result<Path<String>, PathRejection>,
) -> Result<Json<FoundResponse>, ApiError> {
    let Path(country) = country?;
    let code = CountryCode::from_str(&country)
        .map_err(|e| ApiError::BadRequest(format!("country: {e}")))?;
    Ok(Json(FoundResponse {
        found: state.controller.contains(LIST, &Entry::Country(code)),
    }))
}

/// Every element must be a string holding an assigned code; the first bad one is reported.
fn decode(headers: &HeaderMap, body: &Bytes, max_entries: usize) -> Result<Vec<Entry>, ApiError> {
    decode_list(headers, body, "countries", max_entries)?
        .into_iter()
        .enumerate()
        .map(|(i, element)| match element {
            Element::Text(text) => CountryCode::from_str(&text)
                .map(Entry::Country)
                .map_err(|e| ApiError::BadRequest(format!("countries[{i}]: {e}"))),
            other => Err(ApiError::BadRequest(format!(
                "countries[{i}]: expected a string, got {}",
                other.kind()
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, header};

    fn run(body: &str) -> Result<Vec<String>, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        decode(&headers, &Bytes::from(body.to_string()), 10)
            .map(|v| v.iter().map(Entry::to_string).collect())
            .map_err(|e| format!("{} {e}", e.status().as_u16()))
    }

    #[test]
    fn decoding_table() {
        let ok = |v: &[&str]| Ok(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let cases: Vec<(&str, Result<Vec<String>, &str>)> = vec![
            (r#"{"countries":[]}"#, ok(&[])),
            (
                r#"{"countries":["fr","DE"," us ","Xk","ad","zw"]}"#,
                ok(&["fr", "de", "us", "xk", "ad", "zw"]),
            ),
            (
                r#"{"countries":["fr","zz"]}"#,
                Err(r#"400 countries[1]: "zz" is not an assigned ISO 3166-1 alpha-2 country code"#),
            ),
            (
                r#"{"countries":["USA"]}"#,
                Err(r#"400 countries[0]: "USA" is not a country code"#),
            ),
            (
                r#"{"countries":[""]}"#,
                Err(r#"400 countries[0]: "" is not a country code"#),
            ),
            (
                r#"{"countries":["f1"]}"#,
                Err(r#"400 countries[0]: "f1" is not a country code"#),
            ),
            (
                r#"{"countries":["uk"]}"#,
                Err(r#"400 countries[0]: "uk" is not an assigned"#),
            ),
            (
                r#"{"countries":["fr",250]}"#,
                Err("400 countries[1]: expected a string, got a number"),
            ),
            (
                r#"{"countries":[null]}"#,
                Err("400 countries[0]: expected a string, got null"),
            ),
            (
                r#"{"countries":"fr"}"#,
                Err("400 invalid JSON body: invalid type: string"),
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
