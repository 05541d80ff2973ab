//! The user-editable lists over REST: one set of handlers, driven by the [`ROUTES`] table, serves
//! every list route. Decode, call the [`Controller`](crate::core::Controller), encode; no policy
//! logic lives here.
//!
//! For a route at `PATH` with body key `KEY`:
//! * `GET PATH` → 200 `{"KEY":[…]}`, the entries in canonical form, sorted (AS numbers as JSON
//!   numbers, everything else as strings);
//! * `POST PATH` / `DELETE PATH` with `{"KEY":[…]}` → 202 `{"changed":N,"generation":G,"applied":bool}`;
//!   idempotent, all-or-nothing (the first bad element is a 400 naming `KEY[i]` and the value,
//!   and nothing changes); removal is exact (removing `a.com` leaves `x.a.com`);
//! * `GET PATH/{value}` → 200 `{"found":bool}`, plus `"matches":[…]` (most specific first) for
//!   the lists that match more than the value itself: subnets (covering prefixes) and domains
//!   (the name and its parent domains). A bad value is a 400 naming it.
//!
//! Elements are read with [`Entry::parse_user`] for the list's entry kind; AS numbers may also
//! be JSON numbers.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use meds_proto::{Asn, AsnError, Entry, EntryKind, ListKind};
use serde::Serialize;
use serde_json::{Map, Value};

use super::ApiState;
use super::body::{Element, Items, decode_list};
use super::error::ApiError;
use crate::core::{Change, CoreError};

/// How one list is served.
#[derive(Debug)]
pub(super) struct ListRoute {
    pub(super) list: ListKind,
    /// `GET`, `POST` and `DELETE` here; `GET {path}/{value}` checks one value.
    pub(super) path: &'static str,
    /// The body's and the answer's only field.
    pub(super) key: &'static str,
    /// What a bad `{value}` is called in a 400 (`domain: "bad .com": …`).
    pub(super) value: &'static str,
    /// What the body's array may hold.
    pub(super) items: Items,
}

/// The subnet routes' body: strings only, checked while decoding (their historical messages).
const SUBNET_ITEMS: Items = Items::Strings {
    expecting: "an array of IP address or CIDR prefix strings",
};

/// Every list route.
pub(super) const ROUTES: [ListRoute; 8] = [
    ListRoute {
        list: ListKind::IpAllow,
        path: "/v1/whitelist/subnets",
        key: "subnets",
        value: "subnet",
        items: SUBNET_ITEMS,
    },
    ListRoute {
        list: ListKind::IpBlock,
        path: "/v1/blacklist/subnets",
        key: "subnets",
        value: "subnet",
        items: SUBNET_ITEMS,
    },
    ListRoute {
        list: ListKind::CountryBlock,
        path: "/v1/blacklist/countries",
        key: "countries",
        value: "country",
        items: Items::Any,
    },
    ListRoute {
        list: ListKind::AsnBlock,
        path: "/v1/blacklist/asns",
        key: "asns",
        value: "asn",
        items: Items::Any,
    },
    ListRoute {
        list: ListKind::DomainAllow,
        path: "/v1/whitelist/domains",
        key: "domains",
        value: "domain",
        items: Items::Any,
    },
    ListRoute {
        list: ListKind::DomainBlock,
        path: "/v1/blacklist/domains",
        key: "domains",
        value: "domain",
        items: Items::Any,
    },
    ListRoute {
        list: ListKind::Ja3Block,
        path: "/v1/blacklist/ja3",
        key: "ja3",
        value: "ja3",
        items: Items::Any,
    },
    ListRoute {
        list: ListKind::Ja4Block,
        path: "/v1/blacklist/ja4",
        key: "ja4",
        value: "ja4",
        items: Items::Any,
    },
];

/// `POST` / `DELETE` (202).
#[derive(Debug, Serialize)]
pub struct ChangeResponse {
    /// How many entries were actually added or removed.
    pub changed: usize,
    /// The policy generation after the request.
    pub generation: u64,
    /// True when the dataplane acknowledged the generation before the answer.
    pub applied: bool,
}

/// `GET {path}/{value}`.
#[derive(Debug, Serialize)]
pub struct CheckResponse {
    pub found: bool,
    /// Stored entries matching the query, most specific first; only for subnets and domains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<String>>,
}

/// Add `route`'s two paths to `app`.
pub(super) fn routes(app: Router, state: &Arc<ApiState>, route: &'static ListRoute) -> Router {
    let (s_list, s_add, s_remove, s_check) = (
        Arc::clone(state),
        Arc::clone(state),
        Arc::clone(state),
        Arc::clone(state),
    );
    // A prefix holds a '/', raw or encoded: the subnet check takes the rest of the path.
    let check_path = if route.list.entry_kind() == EntryKind::Prefix {
        format!("{}/{{*value}}", route.path)
    } else {
        format!("{}/{{value}}", route.path)
    };
    app.route(
        route.path,
        get(move || list(Arc::clone(&s_list), route))
            .post(
                move |headers: HeaderMap, body: Result<Bytes, BytesRejection>| {
                    modify(Arc::clone(&s_add), route, Op::Add, headers, body)
                },
            )
            .delete(
                move |headers: HeaderMap, body: Result<Bytes, BytesRejection>| {
                    modify(Arc::clone(&s_remove), route, Op::Remove, headers, body)
                },
            ),
    )
    .route(
        &check_path,
        get(move |value: Result<Path<String>, PathRejection>| {
            check(Arc::clone(&s_check), route, value)
        }),
    )
}

async fn list(state: Arc<ApiState>, route: &'static ListRoute) -> Json<Value> {
    let values = state
        .controller
        .list(route.list)
        .iter()
        .map(|entry| match entry {
            Entry::Asn(asn) => Value::from(asn.get()),
            other => Value::from(other.to_string()),
        })
        .collect();
    let mut answer = Map::new();
    answer.insert(route.key.to_string(), Value::Array(values));
    Json(Value::Object(answer))
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Add,
    Remove,
}

async fn modify(
    state: Arc<ApiState>,
    route: &'static ListRoute,
    op: Op,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ChangeResponse>), ApiError> {
    let entries = decode(route, &headers, &body?, state.max_entries)?;
    let controller = Arc::clone(&state.controller);
    let list = route.list;
    let change = run_to_completion(async move {
        match op {
            Op::Add => controller.add(list, entries, true).await,
            Op::Remove => controller.remove(list, entries, true).await,
        }
    })
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ChangeResponse {
            changed: change.changed.len(),
            generation: change.generation,
            applied: change.applied,
        }),
    ))
}

async fn check(
    state: Arc<ApiState>,
    route: &'static ListRoute,
    value: Result<Path<String>, PathRejection>,
) -> Result<Json<CheckResponse>, ApiError> {
    let Path(value) = value?;
    let kind = route.list.entry_kind();
    let query = Entry::parse_user(kind, &value)
        .map_err(|e| ApiError::BadRequest(format!("{}: {e}", route.value)))?;
    let result = state.controller.check(route.list, &query);
    let matches = matches!(kind, EntryKind::Prefix | EntryKind::Domain)
        .then(|| result.matches.iter().map(Entry::to_string).collect());
    Ok(Json(CheckResponse {
        found: result.found,
        matches,
    }))
}

/// Run a policy change on its own task. A handler future is dropped when the client goes away
/// or the request times out; the change itself must still run to its end (commit, in-memory
/// view, delta to the dataplane) rather than stop halfway between those steps.
async fn run_to_completion(
    change: impl Future<Output = Result<Change, CoreError>> + Send + 'static,
) -> Result<Change, ApiError> {
    match tokio::spawn(change).await {
        Ok(result) => Ok(result?),
        Err(join) => Err(ApiError::Internal {
            detail: format!("policy change task failed: {join}"),
        }),
    }
}

/// Check the content type, decode the body and parse every element, all before anything
/// changes; the first bad element is reported with its index.
fn decode(
    route: &ListRoute,
    headers: &HeaderMap,
    body: &Bytes,
    max_entries: usize,
) -> Result<Vec<Entry>, ApiError> {
    let kind = route.list.entry_kind();
    decode_list(headers, body, route.key, route.items, max_entries)?
        .into_iter()
        .enumerate()
        .map(|(i, element)| {
            parse_element(kind, element)
                .map_err(|e| ApiError::BadRequest(format!("{}[{i}]: {e}", route.key)))
        })
        .collect()
}

/// A string in the text form of `kind`; for AS numbers, also a JSON number.
fn parse_element(kind: EntryKind, element: Element) -> Result<Entry, String> {
    match (kind, element) {
        (kind, Element::Text(text)) => Entry::parse_user(kind, &text).map_err(|e| e.to_string()),
        (EntryKind::Asn, Element::Number(n)) => u32::try_from(n)
            .map_err(|_| AsnError::Invalid(n.to_string()))
            .and_then(Asn::new)
            .map(Entry::Asn)
            .map_err(|e| e.to_string()),
        (EntryKind::Asn, other) => Err(format!(
            "expected a number or a string, got {}",
            other.kind()
        )),
        (_, other) => Err(format!("expected a string, got {}", other.kind())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, header};

    fn route(path: &str) -> &'static ListRoute {
        ROUTES
            .iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("no route {path}"))
    }

    fn run(path: &str, body: &str) -> Result<Vec<String>, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        decode(route(path), &headers, &Bytes::from(body.to_string()), 10)
            .map(|v| v.iter().map(Entry::to_string).collect())
            .map_err(|e| format!("{} {e}", e.status().as_u16()))
    }

    #[test]
    fn routes_are_unique_user_lists_of_their_kind() {
        let mut paths = std::collections::BTreeSet::new();
        for r in &ROUTES {
            assert!(paths.insert(r.path), "{}", r.path);
            assert!(!r.list.is_feed(), "{}", r.path);
            assert!(r.path.ends_with(&format!("/{}", r.key)), "{}", r.path);
        }
        // Every user list has a route.
        for list in ListKind::ALL.into_iter().filter(|l| !l.is_feed()) {
            assert!(ROUTES.iter().any(|r| r.list == list), "{list}");
        }
    }

    /// (route, body, entries or error prefix). Messages of the routes that existed before the
    /// table are kept as they were.
    #[test]
    fn decoding_table() {
        type Case = (
            &'static str,
            &'static str,
            Result<&'static [&'static str], &'static str>,
        );
        let cases: Vec<Case> = vec![
            // Subnets.
            ("/v1/blacklist/subnets", r#"{"subnets":[]}"#, Ok(&[])),
            (
                "/v1/whitelist/subnets",
                r#" {"subnets":["203.0.113.7","10.1.2.3/8","2001:db8::/32"]} "#,
                Ok(&["203.0.113.7/32", "10.0.0.0/8", "2001:db8::/32"]),
            ),
            (
                "/v1/blacklist/subnets",
                "",
                Err("400 request body is empty: expected {\"subnets\":[...]}"),
            ),
            (
                "/v1/blacklist/subnets",
                "{}",
                Err("400 invalid JSON body: missing field `subnets`"),
            ),
            (
                "/v1/blacklist/subnets",
                r#"{"subnets":"203.0.113.7"}"#,
                Err("400 invalid JSON body: invalid type: string"),
            ),
            (
                "/v1/blacklist/subnets",
                r#"[["203.0.113.7"]]"#,
                Err("400 invalid JSON body: expected a JSON object"),
            ),
            (
                "/v1/blacklist/subnets",
                r#"{"subnets":["203.0.113.7",5]}"#,
                Err("400 invalid JSON body: subnets[1]: expected a string, got a number"),
            ),
            (
                "/v1/blacklist/subnets",
                r#"{"subnets":["203.0.113.7","10.0.0.0/8","300.1.1.1"]}"#,
                Err(r#"400 subnets[2]: "300.1.1.1" is not a valid IPv4 or IPv6 address"#),
            ),
            (
                "/v1/blacklist/subnets",
                r#"{"subnets":["10.0.0.0/33"]}"#,
                Err("400 subnets[0]: \"10.0.0.0/33\": prefix length must be a number from 0 to 32"),
            ),
            (
                "/v1/blacklist/subnets",
                r#"{"subnets":[""]}"#,
                Err("400 subnets[0]: empty value"),
            ),
            (
                "/v1/blacklist/subnets",
                r#"{"subnets":["1","2","3","4","5","6","7","8","9","10","11"]}"#,
                Err("413 11 entries in one request: the limit is 10"),
            ),
            // Countries.
            (
                "/v1/blacklist/countries",
                r#"{"countries":["fr","DE"," us ","Xk","ad","zw"]}"#,
                Ok(&["fr", "de", "us", "xk", "ad", "zw"]),
            ),
            (
                "/v1/blacklist/countries",
                r#"{"countries":["fr","zz"]}"#,
                Err(r#"400 countries[1]: "zz" is not an assigned ISO 3166-1 alpha-2 country code"#),
            ),
            (
                "/v1/blacklist/countries",
                r#"{"countries":["USA"]}"#,
                Err(r#"400 countries[0]: "USA" is not a country code"#),
            ),
            (
                "/v1/blacklist/countries",
                r#"{"countries":[""]}"#,
                Err(r#"400 countries[0]: "" is not a country code"#),
            ),
            (
                "/v1/blacklist/countries",
                r#"{"countries":["uk"]}"#,
                Err(r#"400 countries[0]: "uk" is not an assigned"#),
            ),
            (
                "/v1/blacklist/countries",
                r#"{"countries":["fr",250]}"#,
                Err("400 countries[1]: expected a string, got a number"),
            ),
            (
                "/v1/blacklist/countries",
                r#"{"countries":[null]}"#,
                Err("400 countries[0]: expected a string, got null"),
            ),
            (
                "/v1/blacklist/countries",
                r#"{"countries":"fr"}"#,
                Err("400 invalid JSON body: invalid type: string"),
            ),
            // ASNs.
            (
                "/v1/blacklist/asns",
                r#"{"asns":[64496,"AS64497","as64498","64499",1,4294967294]}"#,
                Ok(&["64496", "64497", "64498", "64499", "1", "4294967294"]),
            ),
            (
                "/v1/blacklist/asns",
                r#"{"asns":[64496,0]}"#,
                Err("400 asns[1]: AS0 is reserved and never originates traffic"),
            ),
            (
                "/v1/blacklist/asns",
                r#"{"asns":[23456]}"#,
                Err("400 asns[0]: AS23456 is reserved"),
            ),
            (
                "/v1/blacklist/asns",
                r#"{"asns":[4294967295]}"#,
                Err("400 asns[0]: AS4294967295 is reserved"),
            ),
            (
                "/v1/blacklist/asns",
                r#"{"asns":[4294967296]}"#,
                Err(r#"400 asns[0]: "4294967296" is not an AS number"#),
            ),
            (
                "/v1/blacklist/asns",
                r#"{"asns":["AS0"]}"#,
                Err("400 asns[0]: AS0 is reserved"),
            ),
            (
                "/v1/blacklist/asns",
                r#"{"asns":["ASN1"]}"#,
                Err(r#"400 asns[0]: "ASN1" is not an AS number"#),
            ),
            (
                "/v1/blacklist/asns",
                r#"{"asns":[""]}"#,
                Err("400 asns[0]: empty value"),
            ),
            (
                "/v1/blacklist/asns",
                r#"{"asns":[-1]}"#,
                Err("400 asns[0]: expected a number or a string, got a negative number"),
            ),
            (
                "/v1/blacklist/asns",
                r#"{"asns":[1.5]}"#,
                Err("400 asns[0]: expected a number or a string, got a fractional number"),
            ),
            (
                "/v1/blacklist/asns",
                r#"{"asns":[1,null]}"#,
                Err("400 asns[1]: expected a number or a string, got null"),
            ),
            (
                "/v1/blacklist/asns",
                r#"{"asns":[[64496]]}"#,
                Err("400 asns[0]: expected a number or a string, got an array"),
            ),
            (
                "/v1/blacklist/asns",
                r#"{"asns":64496}"#,
                Err("400 invalid JSON body: invalid type: integer"),
            ),
            // Domains.
            (
                "/v1/blacklist/domains",
                r#"{"domains":["Bad.COM.","bücher.example"," www.example.org ","zip","_dmarc.example.com"]}"#,
                Ok(&[
                    "bad.com",
                    "xn--bcher-kva.example",
                    "www.example.org",
                    "zip",
                    "_dmarc.example.com",
                ]),
            ),
            (
                "/v1/whitelist/domains",
                r#"{"domains":["ok.example","*"]}"#,
                Err("400 domains[1]: \"*\": wildcards are not supported"),
            ),
            (
                "/v1/whitelist/domains",
                r#"{"domains":["*.example.com"]}"#,
                Err("400 domains[0]: \"*.example.com\": wildcards are not supported"),
            ),
            (
                "/v1/blacklist/domains",
                r#"{"domains":["bad .com"]}"#,
                Err("400 domains[0]: \"bad .com\": character ' ' is not allowed"),
            ),
            (
                "/v1/blacklist/domains",
                r#"{"domains":[""]}"#,
                Err("400 domains[0]: empty value: expected a domain name"),
            ),
            (
                "/v1/blacklist/domains",
                r#"{"domains":["a..b.com"]}"#,
                Err("400 domains[0]: \"a..b.com\" has an empty label"),
            ),
            (
                "/v1/blacklist/domains",
                r#"{"domains":["-bad.com"]}"#,
                Err("400 domains[0]: \"-bad.com\": label \"-bad\" starts or ends with '-'"),
            ),
            (
                "/v1/blacklist/domains",
                r#"{"domains":["1.2.3.4"]}"#,
                Err("400 domains[0]: \"1.2.3.4\": top-level label \"4\" is all digits"),
            ),
            (
                "/v1/blacklist/domains",
                r#"{"domains":["example.com",7]}"#,
                Err("400 domains[1]: expected a string, got a number"),
            ),
            (
                "/v1/blacklist/domains",
                r#"{"subnets":["example.com"]}"#,
                Err("400 invalid JSON body: unknown field `subnets`, expected `domains`"),
            ),
            // JA3.
            (
                "/v1/blacklist/ja3",
                r#"{"ja3":["B386946A5A44D1DDCC843BC75336DFCE"]}"#,
                Ok(&["b386946a5a44d1ddcc843bc75336dfce"]),
            ),
            (
                "/v1/blacklist/ja3",
                r#"{"ja3":["b386946a5a44d1ddcc843bc75336dfcg"]}"#,
                Err(
                    "400 ja3[0]: \"b386946a5a44d1ddcc843bc75336dfcg\" is not a JA3 hash: expected 32 hexadecimal digits",
                ),
            ),
            (
                "/v1/blacklist/ja3",
                r#"{"ja3":["b386946a5a44d1ddcc843bc75336dfc"]}"#,
                Err("400 ja3[0]: \"b386946a5a44d1ddcc843bc75336dfc\" is not a JA3 hash"),
            ),
            (
                "/v1/blacklist/ja3",
                r#"{"ja3":[null]}"#,
                Err("400 ja3[0]: expected a string, got null"),
            ),
            // JA4.
            (
                "/v1/blacklist/ja4",
                r#"{"ja4":["T13D1516H2_8DAAF6152771_02713D6AF862"]}"#,
                Ok(&["t13d1516h2_8daaf6152771_02713d6af862"]),
            ),
            (
                "/v1/blacklist/ja4",
                r#"{"ja4":["t13d1516h2_8daaf6152771_02713d6af86"]}"#,
                Err(
                    "400 ja4[0]: \"t13d1516h2_8daaf6152771_02713d6af86\" is not a JA4 fingerprint (not 36 characters long)",
                ),
            ),
            (
                "/v1/blacklist/ja4",
                r#"{"ja4":["x13d1516h2_8daaf6152771_02713d6af862"]}"#,
                Err(
                    "400 ja4[0]: \"x13d1516h2_8daaf6152771_02713d6af862\" is not a JA4 fingerprint (protocol must be",
                ),
            ),
            (
                "/v1/blacklist/ja4",
                r#"{"ja3":[]}"#,
                Err("400 invalid JSON body: unknown field `ja3`, expected `ja4`"),
            ),
        ];
        for (path, body, want) in cases {
            let got = run(path, body);
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{path} {body}"),
                (Err(g), Err(w)) => {
                    assert!(g.starts_with(w), "{path} {body}: got {g:?}, want {w:?}")
                }
                _ => panic!("{path} {body}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn over_long_labels_and_names_are_refused_naming_the_value() {
        let label = "a".repeat(64);
        let body = format!(r#"{{"domains":["{label}.example"]}}"#);
        let err = run("/v1/blacklist/domains", &body).unwrap_err();
        assert!(
            err.starts_with(&format!("400 domains[0]: \"{label}.example\": label \"{label}\" is 64 bytes long, over the limit of 63")),
            "{err}"
        );
        let ok = "a".repeat(63);
        assert_eq!(
            run(
                "/v1/blacklist/domains",
                &format!(r#"{{"domains":["{ok}.example"]}}"#)
            ),
            Ok(vec![format!("{ok}.example")])
        );
        let long = vec!["a".repeat(63); 4].join(".");
        let err = run(
            "/v1/blacklist/domains",
            &format!(r#"{{"domains":["{long}"]}}"#),
        )
        .unwrap_err();
        assert!(
            err.contains("is 255 bytes long, over the limit of 253"),
            "{err}"
        );
    }
}
