//! Mutation bodies of the list routes: a JSON object with exactly one field, an array
//! (`{"subnets":["10.0.0.0/8"]}`, `{"countries":["fr","DE"]}`, `{"asns":[64496,"AS64497"]}`,
//! `{"domains":["example.com"]}`), decoded into the array's elements before any of them is
//! interpreted, and the `Content-Type` rule every mutation follows ([`require_json`]).
//!
//! The decoder streams the array (no intermediate `serde_json::Value` tree), refuses unknown and
//! duplicate fields, and records the JSON type of every element so that the route can name the
//! index of a bad one (`asns[2]: expected a string or a number, got null`). Interpreting the
//! elements (which strings and numbers are valid) is the route's business.
//!
//! Must not: touch the controller; everything here happens before a change is attempted.

use std::fmt;

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::error::ApiError;

/// JSON types of [`Element::Other`] that are numbers.
const NEGATIVE: &str = "a negative number";
const FRACTIONAL: &str = "a fractional number";

/// What the array may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Items {
    /// Any JSON values; the route interprets each element and names a bad one.
    Any,
    /// Strings only, checked while decoding: any other value makes the body invalid JSON
    /// (`invalid JSON body: subnets[1]: expected a string, got a number at line 1 column 28`),
    /// and `expecting` names the array in type errors. The subnet routes have always answered
    /// this way; their messages are kept.
    Strings { expecting: &'static str },
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

/// One array element as found in the body.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Element {
    Text(String),
    /// A non-negative integer.
    Number(u64),
    /// Anything else: its JSON type, for the error message.
    Other(&'static str),
}

impl Element {
    /// The JSON type, for "expected …, got …" messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Element::Text(_) => "a string",
            Element::Number(_) => "a number",
            Element::Other(kind) => kind,
        }
    }

    /// [`Element::kind`], with every number just "a number".
    fn coarse_kind(&self) -> &'static str {
        match self {
            Element::Other(kind) if *kind == NEGATIVE || *kind == FRACTIONAL => "a number",
            other => other.kind(),
        }
    }
}

/// Check the content type and decode `{"<field>":[…]}` into its elements, refusing more than
/// `max_entries` of them (413).
pub(super) fn decode_list(
    headers: &HeaderMap,
    body: &Bytes,
    field: &'static str,
    items: Items,
    max_entries: usize,
) -> Result<Vec<Element>, ApiError> {
    require_json(headers)?;
    let shape = format!("{{\"{field}\":[...]}}");
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::BadRequest(format!(
                "request body is empty: expected {shape}"
            )));
        }
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "invalid JSON body: expected a JSON object {shape}"
            )));
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let elements = ListBody { field, items }
        .deserialize(&mut deserializer)
        .and_then(|elements| deserializer.end().map(|()| elements))
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    if elements.len() > max_entries {
        return Err(ApiError::TooLarge(format!(
            "{} entries in one request: the limit is {max_entries}",
            elements.len()
        )));
    }
    Ok(elements)
}

/// The body object: exactly one field, `field`.
struct ListBody {
    field: &'static str,
    items: Items,
}

impl<'de> DeserializeSeed<'de> for ListBody {
    type Value = Vec<Element>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Element>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ListBody {
    type Value = Vec<Element>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a JSON object {{\"{}\":[...]}}", self.field)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Element>, A::Error> {
        let mut found: Option<Vec<Element>> = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != self.field {
                return Err(de::Error::custom(format_args!(
                    "unknown field `{}`, expected `{}`",
                    key.chars().take(64).collect::<String>(),
                    self.field
                )));
            }
            if found.is_some() {
                return Err(de::Error::custom(format_args!(
                    "duplicate field `{}`",
                    self.field
                )));
            }
            found = Some(map.next_value_seed(Elements {
                field: self.field,
                items: self.items,
            })?);
        }
        found.ok_or_else(|| de::Error::custom(format_args!("missing field `{}`", self.field)))
    }
}

/// The array.
struct Elements {
    field: &'static str,
    items: Items,
}

impl<'de> DeserializeSeed<'de> for Elements {
    type Value = Vec<Element>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Element>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Elements {
    type Value = Vec<Element>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.items {
            Items::Any => f.write_str("an array"),
            Items::Strings { expecting } => f.write_str(expecting),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Element>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(element) = seq.next_element::<Element>()? {
            if let (Items::Strings { .. }, Element::Number(_) | Element::Other(_)) =
                (self.items, &element)
            {
                return Err(de::Error::custom(format_args!(
                    "{}[{}]: expected a string, got {}",
                    self.field,
                    out.len(),
                    element.coarse_kind()
                )));
            }
            out.push(element);
        }
        Ok(out)
    }
}

impl<'de> serde::Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Element, D::Error> {
        struct ElementVisitor;
        impl<'de> Visitor<'de> for ElementVisitor {
            type Value = Element;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Element, E> {
                Ok(Element::Text(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Element, E> {
                Ok(Element::Text(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Element, E> {
                Ok(Element::Number(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Element, E> {
                Ok(u64::try_from(v).map_or(Element::Other(NEGATIVE), Element::Number))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Element, E> {
                Ok(Element::Other(FRACTIONAL))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Element, E> {
                Ok(Element::Other("a boolean"))
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
    use axum::http::{HeaderValue, StatusCode};

    fn json_headers(ct: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ct) = ct {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        h
    }

    fn decode_as(body: &str, field: &'static str, items: Items) -> Result<Vec<Element>, String> {
        decode_list(
            &json_headers(Some("application/json")),
            &Bytes::from(body.to_string()),
            field,
            items,
            4,
        )
        .map_err(|e| format!("{} {e}", e.status().as_u16()))
    }

    fn decode(body: &str) -> Result<Vec<Element>, String> {
        decode_as(body, "asns", Items::Any)
    }

    const SUBNETS: Items = Items::Strings {
        expecting: "an array of IP address or CIDR prefix strings",
    };

    /// The strings-only form, with the subnet routes' messages.
    #[test]
    fn strings_only_table() {
        use Element::Text;
        let cases: Vec<(&str, Result<Vec<Element>, &str>)> = vec![
            (r#"{"subnets":[]}"#, Ok(vec![])),
            (
                r#"{"subnets":["a","b"]}"#,
                Ok(vec![Text("a".into()), Text("b".into())]),
            ),
            (
                r#"{"subnets":null}"#,
                Err(
                    "400 invalid JSON body: invalid type: null, expected an array of IP address or CIDR prefix strings at line 1 column 15",
                ),
            ),
            (
                r#"{"subnets":["203.0.113.7",5]}"#,
                Err(
                    "400 invalid JSON body: subnets[1]: expected a string, got a number at line 1 column 28",
                ),
            ),
            (
                r#"{"subnets":[-5]}"#,
                Err("400 invalid JSON body: subnets[0]: expected a string, got a number"),
            ),
            (
                r#"{"subnets":[1.5]}"#,
                Err("400 invalid JSON body: subnets[0]: expected a string, got a number"),
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
                r#"{"subnets":[{"a":1}]}"#,
                Err("400 invalid JSON body: subnets[0]: expected a string, got an object"),
            ),
            // The first non-string fails the body before later syntax is looked at.
            (
                r#"{"subnets":[true, oops"#,
                Err("400 invalid JSON body: subnets[0]: expected a string, got a boolean"),
            ),
            (
                r#"{"subnets":[],"extra":1}"#,
                Err("400 invalid JSON body: unknown field `extra`, expected `subnets`"),
            ),
        ];
        assert_table(cases, |body| decode_as(body, "subnets", SUBNETS));
    }

    /// Every body decodes to its elements, or fails with a message starting as given.
    fn assert_table(
        cases: Vec<(&str, Result<Vec<Element>, &str>)>,
        decode: impl Fn(&str) -> Result<Vec<Element>, String>,
    ) {
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

    #[test]
    fn body_decoding_table() {
        use Element::{Number, Other, Text};
        let cases: Vec<(&str, Result<Vec<Element>, &str>)> = vec![
            (r#"{"asns":[]}"#, Ok(vec![])),
            (
                r#" {"asns":[64496,"AS64497",0]} "#,
                Ok(vec![Number(64496), Text("AS64497".into()), Number(0)]),
            ),
            (
                r#"{"asns":[-1,1.5,1e3]}"#,
                Ok(vec![
                    Other("a negative number"),
                    Other("a fractional number"),
                    Other("a fractional number"),
                ]),
            ),
            (
                r#"{"asns":[null,true,[1],{"a":1}]}"#,
                Ok(vec![
                    Other("null"),
                    Other("a boolean"),
                    Other("an array"),
                    Other("an object"),
                ]),
            ),
            (
                r#"{"asns":[18446744073709551615]}"#,
                Ok(vec![Number(u64::MAX)]),
            ),
            (
                "",
                Err("400 request body is empty: expected {\"asns\":[...]}"),
            ),
            ("  \n", Err("400 request body is empty")),
            ("[]", Err("400 invalid JSON body: expected a JSON object")),
            ("null", Err("400 invalid JSON body: expected a JSON object")),
            ("{", Err("400 invalid JSON body: EOF while parsing")),
            ("{}", Err("400 invalid JSON body: missing field `asns`")),
            (
                r#"{"asns":null}"#,
                Err("400 invalid JSON body: invalid type: null, expected an array"),
            ),
            (
                r#"{"asns":64496}"#,
                Err("400 invalid JSON body: invalid type: integer `64496`, expected an array"),
            ),
            (
                r#"{"asns":[],"extra":1}"#,
                Err("400 invalid JSON body: unknown field `extra`, expected `asns`"),
            ),
            (
                r#"{"countries":["fr"]}"#,
                Err("400 invalid JSON body: unknown field `countries`, expected `asns`"),
            ),
            (
                r#"{"asns":[],"asns":[]}"#,
                Err("400 invalid JSON body: duplicate field `asns`"),
            ),
            (
                r#"{"asns":[]} trailing"#,
                Err("400 invalid JSON body: trailing characters"),
            ),
            (
                r#"{"asns":[1,2,3,4,5]}"#,
                Err("413 5 entries in one request: the limit is 4"),
            ),
        ];
        assert_table(cases, decode);
    }

    #[test]
    fn content_type_is_required() {
        let err = decode_list(
            &HeaderMap::new(),
            &Bytes::from_static(b"{\"asns\":[]}"),
            "asns",
            Items::Any,
            3,
        )
        .unwrap_err();
        assert_eq!(err.status().as_u16(), 400);
        assert!(err.to_string().contains("Content-Type"), "{err}");
    }
}
