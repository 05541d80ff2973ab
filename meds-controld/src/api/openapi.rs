//! The REST API described as an OpenAPI 3.0 document (`GET /v1/openapi.json`) and a
//! browsable page (`GET /v1/docs`, which renders that document in the browser without any
//! resource from outside the controller). The Go original's Swagger locations
//! (`/swagger/doc.json`, `/swagger/index.html`) serve the same two documents.
//!
//! The list routes are described from the same [`ROUTES`] table that registers them, so a
//! list route cannot exist undocumented; a test sends every documented operation to the
//! router and fails on a route that does not exist, and another walks the document for
//! dangling references and undeclared path parameters.
//!
//! Must not: describe a route the router does not serve, or serve anything without the
//! authentication every other route has (the auth layer wraps these routes too).

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};

use super::lists::{ListRoute, ROUTES};

/// The document, built once.
pub fn document() -> Arc<Value> {
    static DOC: OnceLock<Arc<Value>> = OnceLock::new();
    Arc::clone(DOC.get_or_init(|| Arc::new(build())))
}

pub(crate) async fn openapi_json() -> Json<Value> {
    Json(document().as_ref().clone())
}

/// The page's content security policy: its own script and the document only.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                        connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                        form-action 'none'; frame-ancestors 'none'";

pub(crate) async fn docs_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, DOCS_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        DOCS_HTML,
    )
}

pub(crate) async fn docs_script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        DOCS_JS,
    )
}

pub(crate) async fn docs_style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        DOCS_CSS,
    )
}

const DOCS_HTML: &str = include_str!("docs/index.html");
const DOCS_JS: &str = include_str!("docs/docs.js");
const DOCS_CSS: &str = include_str!("docs/docs.css");

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

/// The responses every operation may give besides its own.
fn common_errors(responses: &mut Map<String, Value>) {
    responses.insert(
        "401".into(),
        json!({
            "description": "missing or wrong credentials",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Basic realm=\"meds\""}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        }),
    );
    responses.insert(
        "408".into(),
        error_response("the request did not complete within --api-timeout"),
    );
    responses.insert(
        "500".into(),
        error_response("internal error (details only in the controller's log)"),
    );
}

fn operation(
    id: &str,
    tag: &str,
    summary: &str,
    description: &str,
    parameters: Vec<Value>,
    body: Option<Value>,
    mut responses: Map<String, Value>,
) -> Value {
    common_errors(&mut responses);
    let mut op = json!({
        "operationId": id,
        "tags": [tag],
        "summary": summary,
        "description": description,
        "responses": responses,
    });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if let Some(body) = body {
        op["requestBody"] = body;
    }
    op
}

fn responses(entries: Vec<(&str, Value)>) -> Map<String, Value> {
    entries
        .into_iter()
        .map(|(code, v)| (code.to_string(), v))
        .collect()
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn path_param(name: &str, description: &str, example: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": {"type": "string"}, "example": example
    })
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

/// `/v1/blacklist/subnets` → `BlacklistSubnets`.
fn camel(path: &str) -> String {
    path.trim_start_matches("/v1/")
        .split(['/', '_'])
        .filter(|s| !s.is_empty())
        .map(|s| {
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// What one element of a list looks like, with an example.
fn list_items(route: &ListRoute) -> (Value, Value, &'static str) {
    match route.key {
        "subnets" => (
            json!({"type": "string", "description": "IPv4 or IPv6 address or CIDR prefix; host bits are masked (10.1.2.3/8 is 10.0.0.0/8)"}),
            json!(["203.0.113.7", "198.51.100.0/24", "2001:db8::/32"]),
            "203.0.113.7",
        ),
        "countries" => (
            json!({"type": "string", "description": "ISO 3166-1 alpha-2 country code (plus xk), any case", "pattern": "^[A-Za-z]{2}$"}),
            json!(["fr", "DE"]),
            "fr",
        ),
        "asns" => (
            json!({"oneOf": [
                {"type": "integer", "minimum": 1, "maximum": 4294967294_u64},
                {"type": "string", "pattern": "^([Aa][Ss])?[0-9]+$"}
            ], "description": "AS number (not 0, 23456 or 4294967295), as a number or \"AS64496\""}),
            json!([64496, "AS64497"]),
            "AS64496",
        ),
        "domains" => (
            json!({"type": "string", "description": "domain name; normalised to lower-case punycode without a trailing dot; matches the name and every subdomain"}),
            json!(["bad.example", "Bücher.example."]),
            "www.bad.example",
        ),
        "ja3" => (
            json!({"type": "string", "pattern": "^[0-9A-Fa-f]{32}$", "description": "JA3 hash (MD5, 32 hexadecimal digits, any case)"}),
            json!(["e7d705a3286e19ea42f587b344ee6865"]),
            "e7d705a3286e19ea42f587b344ee6865",
        ),
        _ => (
            json!({"type": "string", "description": "JA4 fingerprint a_b_c (FoxIO definition)", "pattern": "^[a-z0-9]{10}_[0-9a-f]{12}_[0-9a-f]{12}$"}),
            json!(["t13d1516h2_8daaf6152771_02713d6af862"]),
            "t13d1516h2_8daaf6152771_02713d6af862",
        ),
    }
}

fn list_paths(paths: &mut Map<String, Value>) {
    for route in &ROUTES {
        let name = camel(route.path);
        let tag = if route.path.starts_with("/v1/whitelist") {
            "allowlist"
        } else {
            "blocklist"
        };
        let (items, example, value_example) = list_items(route);
        let body_schema = json!({
            "type": "object",
            "required": [route.key],
            "additionalProperties": false,
            "properties": {route.key: {"type": "array", "items": items}},
        });
        let list_schema = json!({
            "type": "object",
            "required": [route.key],
            "properties": {route.key: {"type": "array", "items": items}},
        });
        let body = json!({
            "required": true,
            "description": "All or nothing: the first bad element is a 400 naming it and nothing changes. Content-Type must be application/json.",
            "content": {"application/json": {"schema": body_schema, "example": {route.key: example}}}
        });
        let mut changed = responses(vec![(
            "202",
            json_response(
                "the change is stored; `applied` tells whether the dataplane enforces it already",
                schema_ref("Change"),
            ),
        )]);
        changed.insert(
            "400".into(),
            error_response("bad JSON, wrong Content-Type or a bad element"),
        );
        changed.insert(
            "413".into(),
            error_response("body or entry count over the limit"),
        );
        let list_name = route.path.trim_start_matches("/v1/");
        let item = json!({
            "get": operation(
                &format!("list{name}"), tag,
                &format!("Entries of {list_name}"),
                "Every entry in canonical form, sorted.",
                vec![], None,
                responses(vec![("200", json_response("the entries", list_schema))]),
            ),
            "post": operation(
                &format!("add{name}"), tag,
                &format!("Add entries to {list_name}"),
                "Idempotent: adding a present entry changes nothing. Waits (bounded) until the dataplane applied the change.",
                vec![], Some(body.clone()), changed.clone(),
            ),
            "delete": operation(
                &format!("remove{name}"), tag,
                &format!("Remove entries from {list_name}"),
                "Removes exactly the given entries (removing a.example leaves x.a.example).",
                vec![], Some(body), changed,
            ),
        });
        paths.insert(route.path.to_string(), item);

        let mut check = responses(vec![(
            "200",
            json_response("whether the value is covered", schema_ref("Found")),
        )]);
        check.insert("400".into(), error_response("the value is not valid"));
        let description = match route.key {
            "subnets" => {
                "An address or a prefix; found when a stored prefix covers it. The slash of a prefix may be sent raw (/v1/blacklist/subnets/10.0.0.0/8) or encoded (%2F)."
            }
            "domains" => {
                "Found when the name or one of its parent domains is stored (label-aware)."
            }
            _ => "Exact match, any case.",
        };
        paths.insert(
            format!("{}/{{{}}}", route.path, route.value),
            json!({"get": operation(
                &format!("check{name}"), tag,
                &format!("Check one value against {list_name}"),
                description,
                vec![path_param(route.value, "the value to check", value_example)],
                None, check,
            )}),
        );
    }
}

fn build() -> Value {
    let mut paths = Map::new();
    list_paths(&mut paths);
    let bad_request = |what: &str| ("400", error_response(what));

    paths.insert(
        "/v1/check/{ip}".into(),
        json!({"get": operation(
            "checkIp", "check", "Everything known about one address",
            "Which lists and feeds contain the address (the most specific entry of each), its ASN, country and IP-to-ASN row, whether the country is blocked and which ASN lists hold the ASN.",
            vec![path_param("ip", "an IPv4 or IPv6 address (not a prefix)", "203.0.113.7")],
            None,
            responses(vec![
                ("200", json_response("the report", schema_ref("IpReport"))),
                bad_request("not an address"),
            ]),
        )}),
    );
    paths.insert(
        "/v1/explain/{ip}".into(),
        json!({"get": operation(
            "explain", "explain", "Why would this packet be accepted or dropped?",
            "The dataplane evaluates its live chain for a packet from the address (with the given SNI, DNS names and TLS fingerprints) and answers every filter in order with its outcome, then the final decision. Nothing is counted or rate-limited.",
            vec![
                path_param("ip", "source address", "203.0.113.7"),
                query_param("port", "destination port (53: DNS)", json!({"type": "integer", "minimum": 0, "maximum": 65535})),
                query_param("sni", "TLS server name", json!({"type": "string"})),
                query_param("dns", "DNS question name(s), comma-separated; the parameter may repeat", json!({"type": "string"})),
                query_param("ja3", "JA3 hash, 32 hexadecimal digits", json!({"type": "string"})),
                query_param("ja4", "JA4 fingerprint", json!({"type": "string"})),
            ],
            None,
            responses(vec![
                ("200", json_response("the explanation", schema_ref("Explanation"))),
                bad_request("a bad address, port, name or fingerprint (named in the message)"),
                ("503", error_response("no dataplane connected")),
                ("504", error_response("the dataplane did not answer in time")),
            ]),
        )}),
    );
    paths.insert(
        "/v1/events".into(),
        json!({"get": operation(
            "events", "events", "Sampled drop decisions",
            "The most recent sampled drop decisions, then (with follow=true) new ones as the dataplane reports them, as newline-delimited JSON: one Event object per line, and {\"suppressed\":N} lines when drops were not sampled or a slow reader missed events. The dataplane samples drops (--event-rate per reader), so this is a view, not a count: use the metrics for counts.",
            vec![
                query_param("follow", "keep the response open and stream new events", json!({"type": "boolean", "default": false})),
                query_param("recent", "how many of the most recent events to send first", json!({"type": "integer", "minimum": 0, "default": 100})),
            ],
            None,
            responses(vec![
                ("200", json!({
                    "description": "a stream of JSON lines",
                    "content": {"application/x-ndjson": {"schema": {"oneOf": [schema_ref("Event"), schema_ref("Suppressed")]}}}
                })),
                bad_request("a bad query parameter"),
            ]),
        )}),
    );
    paths.insert(
        "/v1/status".into(),
        json!({"get": operation(
            "status", "status", "Controller and dataplane health",
            "Versions, generations, dataplane connection, settings and counters, list sizes, feeds, and the problems that need attention (health.ok is false when there are any).",
            vec![], None,
            responses(vec![("200", json_response("the status", schema_ref("Status")))]),
        )}),
    );
    paths.insert(
        "/v1/feeds".into(),
        json!({"get": operation(
            "listFeeds", "feeds", "Every feed's status", "", vec![], None,
            responses(vec![("200", json_response("the feeds", schema_ref("Feeds")))]),
        )}),
    );
    paths.insert(
        "/v1/feeds/update".into(),
        json!({"post": operation(
            "updateFeeds", "feeds", "Fetch feeds now",
            "Fetches the named feeds (or every enabled one without a body) and answers once every attempt has ended. A refused download keeps the last good copy.",
            vec![],
            Some(json!({
                "required": false,
                "content": {"application/json": {
                    "schema": {"type": "object", "additionalProperties": false,
                               "properties": {"names": {"type": "array", "items": {"type": "string"}}}},
                    "example": {"names": ["feodo"]}
                }}
            })),
            responses(vec![
                ("200", json_response("the feeds attempted", schema_ref("Feeds"))),
                bad_request("bad body or a disabled feed"),
                ("404", error_response("no such feed")),
            ]),
        )}),
    );
    paths.insert(
        "/v1/feeds/{name}".into(),
        json!({"patch": operation(
            "configureFeed", "feeds", "Enable, disable or re-point a feed",
            "Persisted. An empty url returns to the feed's default URL; only http, https and file URLs.",
            vec![path_param("name", "feed name", "feodo")],
            Some(json!({
                "required": true,
                "content": {"application/json": {
                    "schema": {"type": "object", "additionalProperties": false, "minProperties": 1,
                               "properties": {"enabled": {"type": "boolean"}, "url": {"type": "string"}}},
                    "example": {"enabled": false}
                }}
            })),
            responses(vec![
                ("200", json_response("the feed's status", schema_ref("FeedStatus"))),
                bad_request("bad body or URL"),
                ("404", error_response("no such feed")),
            ]),
        )}),
    );
    let metrics = |id: &str, summary: &str| {
        json!({"get": operation(
            id, "metrics", summary,
            "Prometheus text exposition format 0.0.4. Packet counters are totals over every dataplane run and never go backwards, also across controller restarts. Labels are low-cardinality (filter, reason, feed, list, queue).",
            vec![], None,
            responses(vec![("200", json!({
                "description": "the metrics",
                "content": {"text/plain": {"schema": {"type": "string"}, "example": "meds_core_packets_processed_total 3417\n"}}
            }))]),
        )})
    };
    paths.insert(
        "/v1/metrics".into(),
        metrics("metrics", "Prometheus metrics"),
    );
    paths.insert(
        "/metrics".into(),
        metrics("metricsRoot", "Prometheus metrics (the original's path)"),
    );
    // The description itself, as JSON (`doc`) or as the browsable page (`page`).
    let described = |id: &str, summary: &str, deprecated: bool, ok: Value| {
        let mut op = operation(
            id,
            "api",
            summary,
            "",
            vec![],
            None,
            responses(vec![("200", ok)]),
        );
        op["deprecated"] = Value::Bool(deprecated);
        json!({ "get": op })
    };
    let doc = |id: &str, summary: &str, deprecated: bool| {
        described(
            id,
            summary,
            deprecated,
            json!({"description": "the OpenAPI 3.0 document", "content": {"application/json": {"schema": {"type": "object"}}}}),
        )
    };
    let page = |id: &str, summary: &str, deprecated: bool| {
        described(
            id,
            summary,
            deprecated,
            json!({"description": "an HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}),
        )
    };
    paths.insert(
        "/v1/openapi.json".into(),
        doc("openapi", "This document", false),
    );
    paths.insert(
        "/v1/docs".into(),
        page("docs", "This document as a browsable page", false),
    );
    paths.insert(
        "/swagger/doc.json".into(),
        doc(
            "swaggerDoc",
            "This document at the original's Swagger location",
            true,
        ),
    );
    paths.insert(
        "/swagger/index.html".into(),
        page(
            "swaggerIndex",
            "The browsable page at the original's Swagger location",
            true,
        ),
    );

    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Meds REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The REST API of meds-controld: the allow and block lists, feeds, status, metrics, sampled drop events and explain. Every route needs HTTP Basic credentials (MEDS_USERNAME / MEDS_PASSWORD). Errors are JSON {\"error\":\"…\"}.",
            "license": {"name": "MIT"}
        },
        "servers": [{"url": "/", "description": "this controller (default 127.0.0.1:8000)"}],
        "security": [{"basicAuth": []}],
        "tags": [
            {"name": "allowlist", "description": "the global allowlists: a match accepts"},
            {"name": "blocklist", "description": "the global blocklists: a match drops"},
            {"name": "check", "description": "what the controller knows about an address"},
            {"name": "explain", "description": "the dataplane's live chain for a hypothetical packet"},
            {"name": "events", "description": "sampled drop decisions"},
            {"name": "feeds", "description": "threat and domain feeds"},
            {"name": "status", "description": "health"},
            {"name": "metrics", "description": "Prometheus"},
            {"name": "api", "description": "this description"}
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}},
            "schemas": schemas(),
        }
    })
}

fn schemas() -> Value {
    let u64_ = json!({"type": "integer", "format": "int64", "minimum": 0});
    let string = json!({"type": "string"});
    json!({
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {"type": "string", "description": "what was wrong, naming the bad element"}},
            "example": {"error": "subnets[0]: \"300.1.1.1\" is not a valid IPv4 or IPv6 address"}
        },
        "Change": {
            "type": "object", "required": ["changed", "generation", "applied"],
            "properties": {
                "changed": {"type": "integer", "minimum": 0, "description": "entries actually added or removed"},
                "generation": {"type": "integer", "minimum": 0, "description": "policy generation after the request"},
                "applied": {"type": "boolean", "description": "the dataplane acknowledged the generation before the answer"}
            }
        },
        "Found": {
            "type": "object", "required": ["found"],
            "properties": {
                "found": {"type": "boolean"},
                "matches": {"type": "array", "items": string, "description": "stored entries covering the value, most specific first (subnets and domains)"}
            }
        },
        "IpReport": {
            "type": "object", "required": ["ip", "lists", "country_blocked", "asn_lists"],
            "properties": {
                "ip": string,
                "lists": {"type": "object", "additionalProperties": string, "description": "list or feed name → the most specific entry containing the address"},
                "asn": {"type": "integer", "nullable": true},
                "country": {"type": "string", "nullable": true},
                "network": {"type": "string", "nullable": true},
                "country_blocked": {"type": "boolean"},
                "asn_lists": {"type": "array", "items": string}
            }
        },
        "FeedStatus": {
            "type": "object",
            "required": ["name", "list", "enabled", "url", "entries", "last_success_unix", "last_attempt_unix", "next_update_unix", "last_error", "failures", "rejected_lines"],
            "properties": {
                "name": string, "list": string, "enabled": {"type": "boolean"},
                "url": {"type": "string", "description": "a password in it is shown as ***"},
                "entries": u64_,
                "last_success_unix": {"type": "integer", "minimum": 0, "description": "Unix seconds; 0: never"},
                "last_attempt_unix": u64_, "next_update_unix": u64_,
                "last_error": {"type": "string", "description": "empty when the last attempt succeeded"},
                "failures": {"type": "integer", "minimum": 0, "description": "failed attempts since the controller started"},
                "rejected_lines": {"type": "integer", "minimum": 0, "description": "lines the parser rejected in the last good copy"}
            }
        },
        "Feeds": {
            "type": "object", "required": ["feeds"],
            "properties": {"feeds": {"type": "array", "items": schema_ref("FeedStatus")}}
        },
        "Status": {
            "type": "object",
            "required": ["health", "controller_version", "controller_uptime_seconds", "generation", "dataplane_connected", "applied_generation", "dataplane_version", "dataplane_queues", "lists", "feeds"],
            "properties": {
                "health": {
                    "type": "object", "required": ["ok", "problems"],
                    "properties": {"ok": {"type": "boolean"}, "problems": {"type": "array", "items": string}}
                },
                "controller_version": string,
                "controller_uptime_seconds": u64_,
                "generation": {"type": "integer", "minimum": 0, "description": "policy generation in the store"},
                "dataplane_connected": {"type": "boolean"},
                "applied_generation": {"type": "integer", "minimum": 0, "description": "generation the dataplane acknowledged (0: none)"},
                "dataplane_version": string,
                "dataplane_queues": {"type": "array", "items": {"type": "integer"}},
                "lists": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "entries per list"},
                "dataplane_stats": {"type": "object", "nullable": true, "additionalProperties": true, "description": "the dataplane's latest counters (see the metrics for the totals)"},
                "dataplane_settings": {"type": "object", "nullable": true, "additionalProperties": true, "description": "how the dataplane runs (fail modes, offload, rate limiter, queues)"},
                "feeds": {"type": "array", "items": schema_ref("FeedStatus")}
            }
        },
        "ExplainStep": {
            "type": "object", "required": ["filter", "list", "outcome", "detail"],
            "properties": {
                "filter": {"type": "string", "description": "chain filter label: ip, rate, geo, asn, domain, ja3, ja4, empty"},
                "list": {"type": "string", "description": "what was consulted (a list or feed name, rate_limiter, default)"},
                "outcome": {"type": "string", "enum": ["match", "no_match", "not_reached", "skipped"]},
                "detail": string,
                "verdict": {"type": "string", "description": "with match: accept or drop"},
                "reason": {"type": "string", "description": "with match: the reason label"}
            }
        },
        "Explanation": {
            "type": "object", "required": ["ip", "generation", "steps", "verdict", "filter", "reason"],
            "properties": {
                "ip": string,
                "generation": {"type": "integer", "minimum": 0, "description": "policy generation the dataplane evaluated"},
                "steps": {"type": "array", "items": schema_ref("ExplainStep")},
                "verdict": {"type": "string", "enum": ["accept", "drop"]},
                "filter": string,
                "reason": string,
                "offload": {"type": "string", "description": "what the dataplane would do with the flow in the kernel"}
            }
        },
        "Event": {
            "type": "object", "required": ["time", "source", "filter", "reason"],
            "properties": {
                "time": {"type": "string", "format": "date-time"},
                "source": string,
                "source_port": {"type": "integer"},
                "destination_port": {"type": "integer"},
                "protocol": {"type": "string", "description": "tcp, udp, icmp, icmpv6, or the protocol number"},
                "filter": string,
                "reason": string,
                "sni": string, "dns": string, "ja3": string, "ja4": string,
                "queue": {"type": "integer"}
            }
        },
        "Suppressed": {
            "type": "object", "required": ["suppressed"],
            "properties": {"suppressed": {"type": "integer", "minimum": 1, "description": "drop decisions not shown (not sampled, or missed by a slow reader)"}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::body::Items;
    use super::*;

    #[test]
    fn camel_case_operation_names() {
        assert_eq!(camel("/v1/blacklist/subnets"), "BlacklistSubnets");
        assert_eq!(camel("/v1/blacklist/ja3"), "BlacklistJa3");
        assert_eq!(camel("/v1/whitelist/domains"), "WhitelistDomains");
    }

    #[test]
    fn every_list_route_is_described_with_its_check_route() {
        let doc = document();
        for route in &ROUTES {
            let item = &doc["paths"][route.path];
            for method in ["get", "post", "delete"] {
                assert!(item[method].is_object(), "{} {method}", route.path);
            }
            let check = format!("{}/{{{}}}", route.path, route.value);
            assert!(doc["paths"][&check]["get"].is_object(), "{check}");
        }
    }

    #[test]
    fn items_match_the_routes_decoding() {
        for route in &ROUTES {
            let (items, _, _) = list_items(route);
            // Only the AS numbers accept JSON numbers, exactly where the decoder does.
            let numbers = items.get("oneOf").is_some();
            assert_eq!(numbers, route.key == "asns", "{}", route.path);
            if let Items::Strings { .. } = route.items {
                assert_eq!(items["type"], "string", "{}", route.path);
            }
        }
    }
}
