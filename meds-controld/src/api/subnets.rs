//! `/v1/{whitelist,blacklist}/subnets`: decode the request, call the [`Controller`], encode the
//! answer. No policy logic lives here.
//!
//! Mutation bodies are `{"subnets":["203.0.113.7","2001:db8::/32"]}` (no other field) sent as
//! `Content-Type: application/json`. Validation is all-or-nothing: every entry is parsed before
//! anything is changed, and the first bad one is reported with its index.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::{HeaderMap, StatusCode, header};
use meds_proto::{Cidr, Entry, ListKind};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::error::ApiError;
use crate::core::{Change, CoreError};

/// `GET …/subnets`.
#[derive(Debug, Serialize)]
pub struct SubnetsResponse {
    pub subnets: Vec<String>,
}

/// `POST` / `DELETE …/subnets` (202).
#[derive(Debug, Serialize)]
pub struct ChangeResponse {
    /// How many entries were actually added or removed.
    pub changed: usize,
    /// The policy generation after the request.
    pub generation: u64,
    /// True when the dataplane acknowledged the generation before the answer.
    pub applied: bool,
}

/// `GET …/subnets/{subnet}`.
#[derive(Debug, Serialize)]
pub struct CheckResponse {
    pub found: bool,
    /// Stored prefixes containing the query, most specific first.
    pub matches: Vec<String>,
}

pub(crate) async fn list(state: Arc<ApiState>, list: ListKind) -> Json<SubnetsResponse> {
    let subnets = state
        .controller
        .list(list)
        .iter()
        .map(Entry::to_string)
        .collect();
    Json(SubnetsResponse { subnets })
}

pub(crate) async fn add(
    state: Arc<ApiState>,
    list: ListKind,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ChangeResponse>), ApiError> {
    let entries = decode_entries(&headers, body?, state.max_entries)?;
    let controller = Arc::clone(&state.controller);
    let change =
        run_to_completion(async move { controller.add(list, entries, true).await }).await?;
    Ok(accepted(change))
}

pub(crate) async fn remove(
    state: Arc<ApiState>,
    list: ListKind,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ChangeResponse>), ApiError> {
    let entries = decode_entries(&headers, body?, state.max_entries)?;
    let controller = Arc::clone(&state.controller);
    let change =
        run_to_completion(async move { controller.remove(list, entries, true).await }).await?;
    Ok(accepted(change))
}

pub(crate) async fn check(
    state: Arc<ApiState>,
    list: ListKind,
    subnet: Result<Path<String>, PathRejection>,
) -> Result<Json<CheckResponse>, ApiError> {
    let Path(subnet) = subnet?;
    let query =
        Cidr::from_str(&subnet).map_err(|e| ApiError::BadRequest(format!("subnet: {e}")))?;
    let result = state.controller.check(list, &query);
    Ok(Json(CheckResponse {
        found: result.found,
        matches: result.matches.iter().map(Cidr::to_string).collect(),
    }))
}

/// Run a policy change on its own task. A handler future is dropped when the client goes away
/// or the request times out; the change itself must still run to its end (commit, in-memory
/// view, delta to the dataplane) rather than stop halfway between those steps.
pub(super) async fn run_to_completion(
    change: impl Future<Output = Result<Change, CoreError>> + Send + 'static,
) -> Result<Change, ApiError> {
    match tokio::spawn(change).await {
        Ok(result) => Ok(result?),
        Err(join) => Err(ApiError::Internal {
            detail: format!("policy change task failed: {join}"),
        }),
    }
}

pub(super) fn accepted(change: Change) -> (StatusCode, Json<ChangeResponse>) {
    (
        StatusCode::ACCEPTED,
        Json(ChangeResponse {
            changed: change.changed.len(),
            generation: change.generation,
            applied: change.applied,
        }),
    )
}

/// Check the content type, parse the JSON and every entry, all before anything changes.
fn decode_entries(
    headers: &HeaderMap,
    body: Bytes,
    max_entries: usize,
) -> Result<Vec<Entry>, ApiError> {
    require_json(headers)?;
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::BadRequest(
                "request body is empty: expected {\"subnets\":[...]}".to_string(),
            ));
        }
        // serde would also accept a struct written as an array (`[["10.0.0.0/8"]]`).
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::BadRequest(
                "invalid JSON body: expected a JSON object {\"subnets\":[...]}".to_string(),
            ));
        }
    }
    let parsed: SubnetsBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    if parsed.subnets.len() > max_entries {
        return Err(ApiError::TooLarge(format!(
            "{} entries in one request: the limit is {max_entries}",
            parsed.subnets.len()
        )));
    }
    parsed
        .subnets
        .iter()
        .enumerate()
        .map(|(i, text)| {
            Cidr::from_str(text)
                .map(Entry::Prefix)
                .map_err(|e| ApiError::BadRequest(format!("subnets[{i}]: {e}")))
        })
        .collect()
}

/// Mutations must say `application/json` (or `application/<x>+json`). Besides being honest,
/// this makes every cross-site browser POST a CORS-preflighted request, which we never
/// approve, so a page cannot ride a browser's cached Basic credentials (CSRF).
pub(super) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::BadRequest(
            "missing Content-Type: send the body as application/json".to_string(),
        ));
    };
    let text = value.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        let shown: String = text.chars().take(100).collect();
        Err(ApiError::BadRequest(format!(
            "Content-Type {shown:?} is not supported: send the body as application/json"
        )))
    }
}

/// The mutation body. Unknown fields are refused rather than ignored, so a typo such as
/// `{"subnet":[…]}` is an error instead of a silent no-op.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object {\"subnets\":[...]}")]
struct SubnetsBody {
    #[serde(deserialize_with = "entries")]
    subnets: Vec<String>,
}

/// An array of strings; a non-string element is reported with its index and JSON type.
fn entries<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of IP address or CIDR prefix strings")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(element) = seq.next_element::<Element>()? {
                match element {
                    Element::Text(text) => out.push(text),
                    Element::Other(kind) => {
                        return Err(de::Error::custom(format_args!(
                            "subnets[{}]: expected a string, got {kind}",
                            out.len()
                        )));
                    }
                }
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(Entries)
}

/// One array element: a string, or the kind of JSON value found instead.
enum Element {
    Text(String),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Element, D::Error> {
        struct ElementVisitor;
        impl<'de> Visitor<'de> for ElementVisitor {
            type Value = Element;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Element, E> {
                Ok(Element::Text(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Element, E> {
                Ok(Element::Text(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Element, E> {
                Ok(Element::Other("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Element, E> {
                Ok(Element::Other("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Element, E> {
                Ok(Element::Other("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Element, E> {
                Ok(Element::Other("a number"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Element, E> {
                Ok(Element::Other("null"))
            }
            fn visit_none<E: de::Error>(self) -> Result<Element, E> {
                Ok(Element::Other("null"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Element::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Element::Other("an object"))
            }
        }
        deserializer.deserialize_any(ElementVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn json_headers(ct: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ct) = ct {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        h
    }

    fn decode(body: &str) -> Result<Vec<String>, String> {
        decode_entries(
            &json_headers(Some("application/json")),
            Bytes::from(body.to_string()),
            3,
        )
        .map(|v| v.iter().map(Entry::to_string).collect())
        .map_err(|e| format!("{} {e}", e.status().as_u16()))
    }

    #[test]
    fn body_decoding_table() {
        let ok = |v: &[&str]| Ok(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let cases: Vec<(&str, Result<Vec<String>, &str>)> = vec![
            (r#"{"subnets":[]}"#, ok(&[])),
            (
                r#" {"subnets":["203.0.113.7","10.1.2.3/8","2001:db8::/32"]} "#,
                ok(&["203.0.113.7/32", "10.0.0.0/8", "2001:db8::/32"]),
            ),
            ("", Err("400 request body is empty")),
            ("   ", Err("400 request body is empty")),
            ("{", Err("400 invalid JSON body: EOF while parsing")),
            ("{}", Err("400 invalid JSON body: missing field `subnets`")),
            (
                r#"{"subnets":null}"#,
                Err("400 invalid JSON body: invalid type: null, expected an array"),
            ),
            (
                r#"{"subnets":"203.0.113.7"}"#,
                Err("400 invalid JSON body: invalid type: string"),
            ),
            (
                r#"{"subnets":{}}"#,
                Err("400 invalid JSON body: invalid type: map"),
            ),
            (
                r#"{"subnets":["203.0.113.7",5]}"#,
                Err("400 invalid JSON body: subnets[1]: expected a string, got a number"),
            ),
            (
                r#"{"subnets":[null]}"#,
                Err("400 invalid JSON body: subnets[0]: expected a string, got null"),
            ),
            (
                r#"{"subnets":["a",["b"]]}"#,
                Err("400 invalid JSON body: subnets[1]: expected a string, got an array"),
            ),
            (
                r#"{"subnets":[],"extra":1}"#,
                Err("400 invalid JSON body: unknown field `extra`, expected `subnets`"),
            ),
            (
                r#"[]"#,
                Err("400 invalid JSON body: expected a JSON object"),
            ),
            (
                r#"[["203.0.113.7"]]"#,
                Err("400 invalid JSON body: expected a JSON object"),
            ),
            ("null", Err("400 invalid JSON body: expected a JSON object")),
            (
                "subnets=1.2.3.4",
                Err("400 invalid JSON body: expected a JSON object"),
            ),
            (
                r#"{"subnets":["a"]"#,
                Err("400 invalid JSON body: EOF while parsing"),
            ),
            (
                r#"{"subnets":[]} trailing"#,
                Err("400 invalid JSON body: trailing characters"),
            ),
            (
                r#"{"subnets":[],"subnets":[]}"#,
                Err("400 invalid JSON body: duplicate field `subnets`"),
            ),
            (
                r#"{"subnets":["203.0.113.7","10.0.0.0/8","2001:db8::1","300.1.1.1"]}"#,
                Err("413 4 entries in one request: the limit is 3"),
            ),
            (
                r#"{"subnets":["203.0.113.7","10.0.0.0/8","300.1.1.1"]}"#,
                Err(r#"400 subnets[2]: "300.1.1.1" is not a valid IPv4 or IPv6 address"#),
            ),
            (
                r#"{"subnets":["10.0.0.0/33"]}"#,
                Err("400 subnets[0]: \"10.0.0.0/33\": prefix length must be a number from 0 to 32"),
            ),
            (r#"{"subnets":[""]}"#, Err("400 subnets[0]: empty value")),
        ];
        for (body, want) in cases {
            let got = decode(body);
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{body}"),
                (Err(g), Err(w)) => assert!(g.starts_with(w), "{body}: got {g:?}, want {w:?}"),
                _ => panic!("{body}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn content_type_table() {
        let cases: [(Option<&'static str>, bool); 8] = [
            (Some("application/json"), true),
            (Some("application/json; charset=utf-8"), true),
            (Some("Application/JSON"), true),
            (Some("application/merge-patch+json"), true),
            (None, false),
            (Some("text/plain"), false),
            (Some("application/x-www-form-urlencoded"), false),
            (Some("multipart/form-data; boundary=x"), false),
        ];
        for (ct, ok) in cases {
            let got = require_json(&json_headers(ct));
            assert_eq!(got.is_ok(), ok, "{ct:?}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.status(), StatusCode::BAD_REQUEST);
                assert!(e.to_string().contains("application/json"), "{e}");
            }
        }
    }
}
