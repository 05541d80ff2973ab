//! Mutation bodies of the country and ASN routes: a JSON object with exactly one field, an
//! array (`{"countries":["fr","DE"]}`, `{"asns":[64496,"AS64497"]}`), decoded into the array's
//! elements before any of them is interpreted.
//!
//! The decoder streams the array (no intermediate `serde_json::Value` tree), refuses unknown and
//! duplicate fields, and records the JSON type of every element so that the route can name the
//! index of a bad one (`asns[2]: expected a string or a number, got null`). Interpreting the
//! elements (which strings and numbers are valid) is the route's business.
//!
//! Must not: touch the controller; everything here happens before a change is attempted.

use std::fmt;

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::error::ApiError;
use super::subnets::require_json;

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
}

/// Check the content type and decode `{"<field>":[…]}` into its elements, refusing more than
/// `max_entries` of them (413).
pub(super) fn decode_list(
    headers: &HeaderMap,
    body: &Bytes,
    field: &'static str,
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
    let elements = ListBody { field }
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
            found = Some(map.next_value_seed(Elements)?);
        }
        found.ok_or_else(|| de::Error::custom(format_args!("missing field `{}`", self.field)))
    }
}

/// The array.
struct Elements;

impl<'de> DeserializeSeed<'de> for Elements {
    type Value = Vec<Element>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Element>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Elements {
    type Value = Vec<Element>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Element>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(element) = seq.next_element::<Element>()? {
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
                Ok(u64::try_from(v).map_or(Element::Other("a negative number"), Element::Number))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Element, E> {
                Ok(Element::Other("a fractional number"))
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
    use axum::http::{HeaderValue, header};

    fn decode(body: &str) -> Result<Vec<Element>, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        decode_list(&headers, &Bytes::from(body.to_string()), "asns", 4)
            .map_err(|e| format!("{} {e}", e.status().as_u16()))
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
    fn content_type_is_required() {
        let err = decode_list(
            &HeaderMap::new(),
            &Bytes::from_static(b"{\"asns\":[]}"),
            "asns",
            3,
        )
        .unwrap_err();
        assert_eq!(err.status().as_u16(), 400);
        assert!(err.to_string().contains("Content-Type"), "{err}");
    }
}
