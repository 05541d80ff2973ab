//! The REST API through the real router (auth, routing, decoding, errors) on a controller with
//! an in-memory store, without sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine as _;
use meds_controld::api::{Credentials, Limits, router};
use meds_controld::core::Controller;
use meds_controld::store::DEFAULT_ALLOWLIST;
use meds_proto::{Cidr, Entry, ListKind};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const USER: &str = "admin";
const PASS: &str = "correct horse:battery";

struct Api {
    controller: Arc<Controller>,
    router: Router,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

fn api() -> Api {
    api_with(Limits::default())
}

fn api_with(limits: Limits) -> Api {
    let controller = Controller::new_for_tests();
    let credentials = Credentials::new(USER, PASS).unwrap();
    let router = router(Arc::clone(&controller), credentials, limits);
    Api { controller, router }
}

fn basic(user: &str, pass: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {token}")
}

impl Api {
    async fn send(&self, request: Request<Body>) -> Reply {
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            self.router.clone().oneshot(request),
        )
        .await
        .expect("router answered in time")
        .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: body is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply {
            status,
            headers,
            json,
        }
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, basic(USER, PASS));
        let body = match body {
            Some(v) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, None).await
    }

    async fn list(&self, list: &str) -> Vec<String> {
        let reply = self.get(&format!("/v1/{list}/subnets")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        serde_json::from_value(reply.json["subnets"].clone()).unwrap()
    }
}

fn assert_error(reply: &Reply, status: StatusCode, contains: &str) {
    assert_eq!(reply.status, status, "{}", reply.json);
    assert_eq!(
        reply.headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json",
        "{}",
        reply.json
    );
    let obj = reply.json.as_object().expect("error body is an object");
    assert_eq!(obj.len(), 1, "only an error field: {}", reply.json);
    let message = obj["error"].as_str().expect("error is a string");
    assert!(
        message.contains(contains),
        "{message:?} should contain {contains:?}"
    );
}

fn sorted_defaults() -> Vec<String> {
    let mut v: Vec<Cidr> = DEFAULT_ALLOWLIST
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    v.sort();
    v.iter().map(Cidr::to_string).collect()
}

#[tokio::test]
async fn every_route_needs_credentials() {
    let api = api();
    let wrong = [
        None,
        Some(basic(USER, "wrong")),
        Some(basic("root", PASS)),
        Some(basic(USER, "")),
        Some(basic(USER, &format!("{PASS}x"))),
        Some(format!("Bearer {PASS}")),
        Some("Basic %%%".to_string()),
    ];
    let routes: [(Method, &str); 30] = [
        (Method::GET, "/v1/whitelist/domains"),
        (Method::POST, "/v1/whitelist/domains"),
        (Method::DELETE, "/v1/blacklist/domains"),
        (Method::GET, "/v1/blacklist/domains/bad.com"),
        (Method::GET, "/v1/blacklist/ja3"),
        (Method::POST, "/v1/blacklist/ja3"),
        (Method::DELETE, "/v1/blacklist/ja3"),
        (
            Method::GET,
            "/v1/blacklist/ja3/b386946a5a44d1ddcc843bc75336dfce",
        ),
        (Method::GET, "/v1/blacklist/ja4"),
        (Method::POST, "/v1/blacklist/ja4"),
        (Method::DELETE, "/v1/blacklist/ja4"),
        (
            Method::GET,
            "/v1/blacklist/ja4/t13d1516h2_8daaf6152771_02713d6af862",
        ),
        (Method::GET, "/v1/blacklist/countries"),
        (Method::POST, "/v1/blacklist/countries"),
        (Method::DELETE, "/v1/blacklist/countries"),
        (Method::GET, "/v1/blacklist/countries/fr"),
        (Method::GET, "/v1/blacklist/asns"),
        (Method::POST, "/v1/blacklist/asns"),
        (Method::DELETE, "/v1/blacklist/asns"),
        (Method::GET, "/v1/blacklist/asns/AS64496"),
        (Method::GET, "/v1/check/203.0.113.7"),
        (Method::GET, "/v1/whitelist/subnets"),
        (Method::POST, "/v1/blacklist/subnets"),
        (Method::DELETE, "/v1/whitelist/subnets"),
        (Method::GET, "/v1/blacklist/subnets/203.0.113.7"),
        (Method::GET, "/v1/status"),
        (Method::GET, "/no/such/path"),
        (Method::GET, "/"),
        (Method::PUT, "/v1/status"),
        (Method::PATCH, "/v1/whitelist/subnets"),
    ];
    for (method, path) in routes {
        for auth in &wrong {
            let mut request = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(auth) = auth {
                request = request.header(header::AUTHORIZATION, auth);
            }
            let body = Body::from(
                json!({
                    "subnets": ["0.0.0.0/0"],
                    "countries": ["fr"],
                    "asns": [64496],
                    "domains": ["example.com"],
                    "ja3": ["b386946a5a44d1ddcc843bc75336dfce"],
                    "ja4": ["t13d1516h2_8daaf6152771_02713d6af862"],
                })
                .to_string(),
            );
            let reply = api.send(request.body(body).unwrap()).await;
            assert_error(&reply, StatusCode::UNAUTHORIZED, "");
            assert_eq!(
                reply.headers.get(header::WWW_AUTHENTICATE).unwrap(),
                "Basic realm=\"meds\"",
                "{method} {path}"
            );
            let message = reply.json["error"].as_str().unwrap();
            assert!(!message.contains(PASS), "{message}");
        }
    }
    // Nothing was added by any unauthenticated POST.
    for list in [
        ListKind::IpBlock,
        ListKind::CountryBlock,
        ListKind::AsnBlock,
        ListKind::DomainAllow,
        ListKind::DomainBlock,
        ListKind::Ja3Block,
        ListKind::Ja4Block,
    ] {
        assert!(api.controller.list(list).is_empty(), "{list}");
    }
    assert!(
        !api.controller
            .list(ListKind::IpAllow)
            .contains(&Entry::Prefix("0.0.0.0/0".parse().unwrap()))
    );
}

#[tokio::test]
async fn lists_start_with_the_default_allowlist_and_an_empty_blocklist() {
    let api = api();
    let whitelist = api.list("whitelist").await;
    assert_eq!(whitelist, sorted_defaults());
    // IPv4 first, then IPv6 (the original listed IPv4 only).
    assert_eq!(whitelist.first().unwrap(), "10.0.0.0/8");
    assert!(whitelist.contains(&"fe80::/10".to_string()));
    assert!(api.list("blacklist").await.is_empty());
    let reply = api.get("/v1/blacklist/subnets").await;
    assert_eq!(reply.json, json!({"subnets": []}));
    assert_eq!(
        reply.headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
}

#[tokio::test]
async fn add_list_check_remove_round_trip_on_both_lists() {
    for (list, kind) in [
        ("blacklist", ListKind::IpBlock),
        ("whitelist", ListKind::IpAllow),
    ] {
        let api = api();
        let g0 = api.controller.generation();
        let before = api.list(list).await;
        let base = format!("/v1/{list}/subnets");

        let added = api
            .call(
                Method::POST,
                &base,
                Some(json!({"subnets": ["203.0.113.7", "198.51.100.0/24", "2001:db8:1::/48", "10.1.2.3/8"]})),
            )
            .await;
        assert_eq!(added.status, StatusCode::ACCEPTED, "{}", added.json);
        // 10.0.0.0/8 is already on the default allowlist, so it is a change only on the blocklist.
        let expected_changed = if kind == ListKind::IpAllow { 3 } else { 4 };
        assert_eq!(
            added.json,
            json!({"changed": expected_changed, "generation": g0 + 1, "applied": false}),
            "{list}"
        );

        let now = api.list(list).await;
        for entry in [
            "203.0.113.7/32",
            "198.51.100.0/24",
            "2001:db8:1::/48",
            "10.0.0.0/8",
        ] {
            assert!(
                now.contains(&entry.to_string()),
                "{list}: {entry} missing from {now:?}"
            );
        }
        assert!(!now.contains(&"10.1.2.3/8".to_string()), "stored masked");
        let mut sorted: Vec<Cidr> = now.iter().map(|s| s.parse().unwrap()).collect();
        sorted.sort();
        let sorted: Vec<String> = sorted.iter().map(Cidr::to_string).collect();
        assert_eq!(now, sorted, "canonical sorted order");

        let check = api.get(&format!("{base}/203.0.113.7")).await;
        assert_eq!(
            check.json,
            json!({"found": true, "matches": ["203.0.113.7/32"]})
        );

        let removed = api
            .call(
                Method::DELETE,
                &base,
                Some(json!({"subnets": ["203.0.113.7", "198.51.100.0/24", "2001:db8:1::/48", "192.0.2.0/24"]})),
            )
            .await;
        assert_eq!(removed.status, StatusCode::ACCEPTED, "{}", removed.json);
        assert_eq!(
            removed.json,
            json!({"changed": 3, "generation": g0 + 2, "applied": false})
        );
        let after = api.list(list).await;
        let mut expected = before.clone();
        if !expected.contains(&"10.0.0.0/8".to_string()) {
            expected.push("10.0.0.0/8".to_string());
            expected.sort_by_key(|s| s.parse::<Cidr>().unwrap());
        }
        assert_eq!(after, expected, "{list}");
        let check = api.get(&format!("{base}/203.0.113.7")).await;
        assert_eq!(check.json, json!({"found": false, "matches": []}));
    }
}

#[tokio::test]
async fn post_is_idempotent() {
    let api = api();
    let body = json!({"subnets": ["203.0.113.7", "203.0.113.7/32", "2001:db8::1"]});
    let first = api
        .call(Method::POST, "/v1/blacklist/subnets", Some(body.clone()))
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(first.json["changed"], 2);
    let generation = first.json["generation"].clone();
    for _ in 0..2 {
        let again = api
            .call(Method::POST, "/v1/blacklist/subnets", Some(body.clone()))
            .await;
        assert_eq!(again.status, StatusCode::ACCEPTED);
        assert_eq!(
            again.json,
            json!({"changed": 0, "generation": generation, "applied": false})
        );
    }
    assert_eq!(
        api.list("blacklist").await,
        ["203.0.113.7/32", "2001:db8::1/128"]
    );
    // Deleting something absent is also a no-op.
    let gone = api
        .call(
            Method::DELETE,
            "/v1/blacklist/subnets",
            Some(json!({"subnets": ["192.0.2.1"]})),
        )
        .await;
    assert_eq!(gone.status, StatusCode::ACCEPTED);
    assert_eq!(gone.json["changed"], 0);
    assert_eq!(gone.json["generation"], generation);
}

#[tokio::test]
async fn a_bad_entry_is_400_and_changes_nothing() {
    let api = api();
    let g0 = api.controller.generation();
    let cases: [(&str, Value, &str); 6] = [
        (
            "POST",
            json!({"subnets": ["203.0.113.7", "198.51.100.0/24", "2001:db8::/32", "300.1.1.1"]}),
            r#"subnets[3]: "300.1.1.1" is not a valid IPv4 or IPv6 address"#,
        ),
        (
            "POST",
            json!({"subnets": ["203.0.113.0/33"]}),
            r#"subnets[0]: "203.0.113.0/33": prefix length must be a number from 0 to 32"#,
        ),
        (
            "POST",
            json!({"subnets": ["203.0.113.7", "::ffff:192.0.2.1"]}),
            "subnets[1]: \"::ffff:192.0.2.1\" is an IPv4-mapped IPv6 address",
        ),
        (
            "POST",
            json!({"subnets": ["203.0.113.7", 7]}),
            "subnets[1]: expected a string, got a number",
        ),
        (
            "DELETE",
            json!({"subnets": ["10.0.0.0/8", "not-an-ip"]}),
            r#"subnets[1]: "not-an-ip" is not a valid IPv4 or IPv6 address"#,
        ),
        (
            "DELETE",
            json!({"subnets": ["10.0.0.0/8"], "extra": true}),
            "unknown field `extra`",
        ),
    ];
    for (method, body, message) in cases {
        for list in ["whitelist", "blacklist"] {
            let before = api.list(list).await;
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let reply = api
                .call(
                    method.clone(),
                    &format!("/v1/{list}/subnets"),
                    Some(body.clone()),
                )
                .await;
            assert_error(&reply, StatusCode::BAD_REQUEST, message);
            assert_eq!(api.list(list).await, before, "{method} {body}");
        }
    }
    assert_eq!(api.controller.generation(), g0);
    // The exact message for the documented example.
    let reply = api
        .call(
            Method::POST,
            "/v1/blacklist/subnets",
            Some(json!({"subnets": ["1.2.3.4", "5.6.7.0/24", "203.0.113.0/24", "300.1.1.1"]})),
        )
        .await;
    assert_eq!(
        reply.json,
        json!({"error": "subnets[3]: \"300.1.1.1\" is not a valid IPv4 or IPv6 address"})
    );
}

#[tokio::test]
async fn malformed_bodies_are_precise_400s() {
    let api = api();
    // (content type, raw body, expected message part)
    let cases: [(Option<&str>, &str, &str); 11] = [
        (Some("application/json"), "", "request body is empty"),
        (
            Some("application/json"),
            "{\"subnets\":",
            "invalid JSON body: EOF while parsing",
        ),
        (Some("application/json"), "{}", "missing field `subnets`"),
        (
            Some("application/json"),
            r#"{"subnets":null}"#,
            "invalid type: null",
        ),
        (
            Some("application/json"),
            r#"{"subnets":"203.0.113.7"}"#,
            "invalid type: string",
        ),
        (
            Some("application/json"),
            r#"["203.0.113.7"]"#,
            "expected a JSON object",
        ),
        (
            Some("application/json"),
            r#"{"subnets":[true]}"#,
            "subnets[0]: expected a string, got a boolean",
        ),
        (
            Some("application/json"),
            "\u{feff}{\"subnets\":[]}",
            "expected a JSON object",
        ),
        (
            None,
            r#"{"subnets":["203.0.113.7"]}"#,
            "missing Content-Type",
        ),
        (
            Some("text/plain"),
            r#"{"subnets":["203.0.113.7"]}"#,
            "\"text/plain\" is not supported",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            r#"{"subnets":["203.0.113.7"]}"#,
            "send the body as application/json",
        ),
    ];
    for (content_type, body, message) in cases {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/v1/blacklist/subnets")
            .header(header::AUTHORIZATION, basic(USER, PASS));
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let reply = api
            .send(request.body(Body::from(body.to_string())).unwrap())
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, message);
    }
    assert!(api.controller.list(ListKind::IpBlock).is_empty());
}

#[tokio::test]
async fn a_prefix_can_be_checked_with_an_encoded_or_a_raw_slash() {
    let api = api();
    let added = api
        .call(
            Method::POST,
            "/v1/blacklist/subnets",
            Some(json!({"subnets": ["203.0.113.0/24", "203.0.0.0/16", "2001:db8::/32"]})),
        )
        .await;
    assert_eq!(added.status, StatusCode::ACCEPTED);
    // (path after /v1/blacklist/subnets/, found, matches)
    let cases: [(&str, bool, &[&str]); 12] = [
        ("203.0.113.7", true, &["203.0.113.0/24", "203.0.0.0/16"]),
        (
            "203.0.113.0%2F24",
            true,
            &["203.0.113.0/24", "203.0.0.0/16"],
        ),
        (
            "203.0.113.0%2f25",
            true,
            &["203.0.113.0/24", "203.0.0.0/16"],
        ),
        ("203.0.113.0/24", true, &["203.0.113.0/24", "203.0.0.0/16"]),
        ("203.0.114.0/24", true, &["203.0.0.0/16"]),
        ("203.0.0.0/8", false, &[]),
        ("198.51.100.1", false, &[]),
        ("2001:db8::1", true, &["2001:db8::/32"]),
        ("2001:db8:ffff::/48", true, &["2001:db8::/32"]),
        ("2001:db8::%2F16", false, &[]),
        ("2001:db9::1", false, &[]),
        ("10.0.0.1", false, &[]),
    ];
    for (query, found, matches) in cases {
        let reply = api.get(&format!("/v1/blacklist/subnets/{query}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.json);
        assert_eq!(
            reply.json,
            json!({"found": found, "matches": matches}),
            "{query}"
        );
    }
    // The allowlist is checked separately.
    let reply = api.get("/v1/whitelist/subnets/10.0.0.0/8").await;
    assert_eq!(
        reply.json,
        json!({"found": true, "matches": ["10.0.0.0/8"]})
    );
    let reply = api.get("/v1/whitelist/subnets/fe80::1").await;
    assert_eq!(reply.json, json!({"found": true, "matches": ["fe80::/10"]}));
}

#[tokio::test]
async fn a_bad_check_query_is_a_400() {
    let api = api();
    let cases: [(&str, &str); 6] = [
        (
            "not-an-ip",
            r#"subnet: "not-an-ip" is not a valid IPv4 or IPv6 address"#,
        ),
        ("300.1.1.1", r#""300.1.1.1" is not a valid"#),
        ("10.0.0.0/33", "prefix length must be a number from 0 to 32"),
        ("10.0.0.0/8/extra", "prefix length"),
        ("%20", "empty value"),
        ("%FF", "UTF-8"),
    ];
    for (query, message) in cases {
        let reply = api.get(&format!("/v1/whitelist/subnets/{query}")).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, message);
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let api = api();
    let not_found = [
        (Method::GET, "/v1/greylist/subnets"),
        (Method::GET, "/v1/greylist/domains"),
        (Method::GET, "/v1/whitelist/ja3"),
        (Method::GET, "/v1/whitelist/ja4"),
        (Method::GET, "/v1/blacklist/domains/a/b"),
        (Method::GET, "/v1/stevenblack/domains"),
        (Method::GET, "/v1/whitelist/countries"),
        (Method::GET, "/v1/whitelist/asns"),
        (Method::GET, "/v1/countries/subnets"),
        (Method::GET, "/v1/firehol/subnets"),
        (Method::POST, "/v1/iplocate/subnets"),
        (Method::GET, "/v1/check"),
        (Method::POST, "/v2/whitelist/subnets"),
        (Method::GET, "/"),
        (Method::GET, "/v2/metrics"),
    ];
    for (method, path) in not_found {
        let reply = api.call(method, path, None).await;
        assert_error(
            &reply,
            StatusCode::NOT_FOUND,
            &format!("no such route: {path}"),
        );
    }
    let not_allowed = [
        (Method::PUT, "/v1/whitelist/subnets"),
        (Method::PATCH, "/v1/blacklist/subnets"),
        (Method::POST, "/v1/blacklist/subnets/203.0.113.7"),
        (Method::DELETE, "/v1/blacklist/subnets/203.0.113.7"),
        (Method::POST, "/v1/status"),
        (Method::POST, "/metrics"),
        (Method::DELETE, "/v1/metrics"),
        (Method::PUT, "/v1/blacklist/countries"),
        (Method::POST, "/v1/blacklist/countries/fr"),
        (Method::DELETE, "/v1/blacklist/asns/64496"),
        (Method::PATCH, "/v1/blacklist/asns"),
        (Method::POST, "/v1/check/203.0.113.7"),
        (Method::PUT, "/v1/whitelist/domains"),
        (Method::POST, "/v1/blacklist/domains/bad.com"),
        (Method::PATCH, "/v1/blacklist/ja3"),
        (
            Method::DELETE,
            "/v1/blacklist/ja4/t13d1516h2_8daaf6152771_02713d6af862",
        ),
    ];
    for (method, path) in not_allowed {
        let reply = api.call(method.clone(), path, None).await;
        assert_error(
            &reply,
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method {method} is not allowed here"),
        );
    }
}

#[tokio::test]
async fn bodies_and_entry_counts_over_the_limits_are_413() {
    let api = api_with(Limits {
        body_bytes: 1024,
        max_entries: 3,
        ..Limits::default()
    });
    let many: Vec<String> = (0..200).map(|i| format!("203.0.113.{}", i % 256)).collect();
    let big = json!({ "subnets": many });
    assert!(big.to_string().len() > 1024);
    let reply = api
        .call(Method::POST, "/v1/blacklist/subnets", Some(big))
        .await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body is larger than",
    );

    let four = json!({"subnets": ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"]});
    let reply = api
        .call(Method::DELETE, "/v1/blacklist/subnets", Some(four))
        .await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "4 entries in one request: the limit is 3",
    );

    let three = json!({"subnets": ["203.0.113.1", "203.0.113.2", "203.0.113.3"]});
    let reply = api
        .call(Method::POST, "/v1/blacklist/subnets", Some(three))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "at the limit is fine");
    assert_eq!(api.controller.list(ListKind::IpBlock).len(), 3);
}

#[tokio::test]
async fn a_body_that_never_arrives_times_out_with_json() {
    let api = api_with(Limits {
        request_timeout: Duration::from_millis(200),
        ..Limits::default()
    });
    let stream = tokio_stream::pending::<Result<Bytes, std::io::Error>>();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/blacklist/subnets")
        .header(header::AUTHORIZATION, basic(USER, PASS))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap();
    let reply = api.send(request).await;
    assert_error(
        &reply,
        StatusCode::REQUEST_TIMEOUT,
        "request did not complete within 0.2 s",
    );
}

#[tokio::test]
async fn status_reports_generation_and_list_sizes() {
    let api = api();
    api.call(
        Method::POST,
        "/v1/blacklist/subnets",
        Some(json!({"subnets": ["203.0.113.7", "2001:db8::/32"]})),
    )
    .await;
    let reply = api.get("/v1/status").await;
    assert_eq!(reply.status, StatusCode::OK);
    let s = &reply.json;
    assert_eq!(s["generation"], 2);
    assert_eq!(s["dataplane_connected"], false);
    // No dataplane seen: its settings are unknown, not defaults.
    assert_eq!(s["dataplane_settings"], Value::Null);
    assert_eq!(
        s["health"],
        json!({"ok": false, "problems": ["no dataplane connected"]})
    );
    // A router without feeds reports none.
    assert_eq!(s["feeds"], json!([]));
    assert_eq!(
        s["lists"],
        json!({
            "whitelist": DEFAULT_ALLOWLIST.len(),
            "blacklist": 2,
            "firehol": 0,
            "spamhaus": 0,
            "feodo": 0,
            "countries": 0,
            "asns": 0,
            "spamhaus_asndrop": 0,
            "iplocate": 0,
            "domain_whitelist": 0,
            "domain_blacklist": 0,
            "stevenblack": 0,
            "someonewhocares": 0,
            "sslbl_ja3": 0,
            "ja3": 0,
            "ja4": 0,
        })
    );
    assert!(s["controller_version"].is_string());
    assert!(s["controller_uptime_seconds"].is_u64());
}

#[tokio::test]
async fn applied_reports_the_dataplane_acknowledgement() {
    let api = api();
    let connection = api.controller.dataplane_connected("test".into(), vec![0]);
    let target = api.controller.generation() + 1;
    let acker = {
        let controller = Arc::clone(&api.controller);
        tokio::spawn(async move {
            while controller.generation() < target {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            controller.dataplane_acked(connection, target);
        })
    };
    let reply = api
        .call(
            Method::POST,
            "/v1/blacklist/subnets",
            Some(json!({"subnets": ["203.0.113.7"]})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(
        reply.json,
        json!({"changed": 1, "generation": target, "applied": true})
    );
    acker.await.unwrap();
}

#[tokio::test]
async fn a_change_outliving_the_request_timeout_still_completes() {
    // A dataplane that never acknowledges makes the mutation wait longer than the timeout.
    let api = api_with(Limits {
        request_timeout: Duration::from_millis(200),
        ..Limits::default()
    });
    api.controller.dataplane_connected("silent".into(), vec![0]);
    let g0 = api.controller.generation();
    let reply = api
        .call(
            Method::POST,
            "/v1/blacklist/subnets",
            Some(json!({"subnets": ["203.0.113.9"]})),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::REQUEST_TIMEOUT,
        "request did not complete",
    );
    assert_eq!(api.controller.generation(), g0 + 1);
    assert_eq!(api.list("blacklist").await, ["203.0.113.9/32"]);
}

impl Api {
    /// A GET that must answer 200; its JSON.
    async fn get_ok(&self, uri: &str) -> Value {
        let reply = self.get(uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.json);
        assert_eq!(
            reply.headers.get(header::CONTENT_TYPE).unwrap(),
            "application/json",
            "{uri}"
        );
        reply.json
    }
}

#[tokio::test]
async fn countries_round_trip_lower_case_out() {
    let api = api();
    let g0 = api.controller.generation();
    assert_eq!(
        api.get_ok("/v1/blacklist/countries").await,
        json!({"countries": []})
    );

    let added = api
        .call(
            Method::POST,
            "/v1/blacklist/countries",
            Some(json!({"countries": ["fr", "DE", "Fr", "xk"]})),
        )
        .await;
    assert_eq!(added.status, StatusCode::ACCEPTED, "{}", added.json);
    assert_eq!(
        added.json,
        json!({"changed": 3, "generation": g0 + 1, "applied": false})
    );
    assert_eq!(
        api.get_ok("/v1/blacklist/countries").await,
        json!({"countries": ["de", "fr", "xk"]})
    );

    // Idempotent.
    let again = api
        .call(
            Method::POST,
            "/v1/blacklist/countries",
            Some(json!({"countries": ["DE"]})),
        )
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(
        again.json,
        json!({"changed": 0, "generation": g0 + 1, "applied": false})
    );

    // The check is case-insensitive; (path segment, found)
    for (cc, found) in [
        ("fr", true),
        ("FR", true),
        ("De", true),
        ("xk", true),
        ("us", false),
        ("ad", false),
    ] {
        assert_eq!(
            api.get_ok(&format!("/v1/blacklist/countries/{cc}")).await,
            json!({"found": found}),
            "{cc}"
        );
    }

    // Removing with another case removes the entry (the original kept it in its DB).
    let removed = api
        .call(
            Method::DELETE,
            "/v1/blacklist/countries",
            Some(json!({"countries": ["FR", "us"]})),
        )
        .await;
    assert_eq!(removed.status, StatusCode::ACCEPTED, "{}", removed.json);
    assert_eq!(
        removed.json,
        json!({"changed": 1, "generation": g0 + 2, "applied": false})
    );
    assert_eq!(
        api.get_ok("/v1/blacklist/countries").await,
        json!({"countries": ["de", "xk"]})
    );
    assert_eq!(
        api.get_ok("/v1/blacklist/countries/fr").await,
        json!({"found": false})
    );
    // The other lists are untouched.
    assert!(api.list("blacklist").await.is_empty());
    assert_eq!(api.get_ok("/v1/blacklist/asns").await, json!({"asns": []}));
}

#[tokio::test]
async fn a_bad_country_is_400_naming_it_and_changes_nothing() {
    let api = api();
    api.call(
        Method::POST,
        "/v1/blacklist/countries",
        Some(json!({"countries": ["ru"]})),
    )
    .await;
    let g0 = api.controller.generation();
    // (method, body, message)
    let cases: [(Method, Value, &str); 9] = [
        (
            Method::POST,
            json!({"countries": ["fr", "zz"]}),
            r#"countries[1]: "zz" is not an assigned ISO 3166-1 alpha-2 country code"#,
        ),
        (
            Method::POST,
            json!({"countries": ["fr", "de", "USA"]}),
            r#"countries[2]: "USA" is not a country code"#,
        ),
        (
            Method::POST,
            json!({"countries": [""]}),
            r#"countries[0]: "" is not a country code"#,
        ),
        (
            Method::POST,
            json!({"countries": ["fr", 33]}),
            "countries[1]: expected a string, got a number",
        ),
        (
            Method::POST,
            json!({"countries": "fr"}),
            "invalid JSON body: invalid type: string",
        ),
        (
            Method::POST,
            json!({"countries": null}),
            "invalid JSON body: invalid type: null",
        ),
        (Method::POST, json!({}), "missing field `countries`"),
        (
            Method::DELETE,
            json!({"countries": ["ru", "eu"]}),
            r#"countries[1]: "eu" is not an assigned"#,
        ),
        (
            Method::DELETE,
            json!({"countries": ["ru"], "subnets": []}),
            "unknown field `subnets`, expected `countries`",
        ),
    ];
    for (method, body, message) in cases {
        let reply = api
            .call(
                method.clone(),
                "/v1/blacklist/countries",
                Some(body.clone()),
            )
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, message);
        assert_eq!(
            api.get_ok("/v1/blacklist/countries").await,
            json!({"countries": ["ru"]}),
            "{method} {body}"
        );
    }
    assert_eq!(api.controller.generation(), g0);
    // The exact body for the documented example.
    let reply = api
        .call(
            Method::POST,
            "/v1/blacklist/countries",
            Some(json!({"countries": ["fr", "xx"]})),
        )
        .await;
    assert_eq!(
        reply.json,
        json!({"error": "countries[1]: \"xx\" is not an assigned ISO 3166-1 alpha-2 country code"})
    );
    // A bad check value is a 400 too.
    for (cc, message) in [
        ("zz", r#"country: "zz" is not an assigned"#),
        ("fra", r#"country: "fra" is not a country code"#),
        ("f1", r#"country: "f1" is not a country code"#),
        ("%20", "country: \" \" is not a country code"),
    ] {
        let reply = api.get(&format!("/v1/blacklist/countries/{cc}")).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, message);
    }
}

#[tokio::test]
async fn asns_round_trip_numbers_out() {
    let api = api();
    let g0 = api.controller.generation();
    let added = api
        .call(
            Method::POST,
            "/v1/blacklist/asns",
            Some(json!({"asns": [64497, "AS64496", "as64497", "4294967294"]})),
        )
        .await;
    assert_eq!(added.status, StatusCode::ACCEPTED, "{}", added.json);
    assert_eq!(
        added.json,
        json!({"changed": 3, "generation": g0 + 1, "applied": false})
    );
    assert_eq!(
        api.get_ok("/v1/blacklist/asns").await,
        json!({"asns": [64496, 64497, 4_294_967_294u32]})
    );
    for (asn, found) in [
        ("64496", true),
        ("AS64496", true),
        ("as64497", true),
        ("4294967294", true),
        ("64498", false),
        ("AS1", false),
    ] {
        assert_eq!(
            api.get_ok(&format!("/v1/blacklist/asns/{asn}")).await,
            json!({"found": found}),
            "{asn}"
        );
    }
    let removed = api
        .call(
            Method::DELETE,
            "/v1/blacklist/asns",
            Some(json!({"asns": ["AS64496", 64511]})),
        )
        .await;
    assert_eq!(removed.status, StatusCode::ACCEPTED, "{}", removed.json);
    assert_eq!(
        removed.json,
        json!({"changed": 1, "generation": g0 + 2, "applied": false})
    );
    assert_eq!(
        api.get_ok("/v1/blacklist/asns").await,
        json!({"asns": [64497, 4_294_967_294u32]})
    );
    assert!(
        api.get_ok("/v1/blacklist/countries").await["countries"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_bad_asn_is_400_naming_it_and_changes_nothing() {
    let api = api();
    api.call(
        Method::POST,
        "/v1/blacklist/asns",
        Some(json!({"asns": [64496]})),
    )
    .await;
    let g0 = api.controller.generation();
    let cases: [(Method, Value, &str); 9] = [
        (
            Method::POST,
            json!({"asns": [64497, 0]}),
            "asns[1]: AS0 is reserved and never originates traffic",
        ),
        (
            Method::POST,
            json!({"asns": ["AS23456"]}),
            "asns[0]: AS23456 is reserved",
        ),
        (
            Method::POST,
            json!({"asns": [4_294_967_296u64]}),
            r#"asns[0]: "4294967296" is not an AS number"#,
        ),
        (
            Method::POST,
            json!({"asns": [1, 2, "ASN3"]}),
            r#"asns[2]: "ASN3" is not an AS number"#,
        ),
        (
            Method::POST,
            json!({"asns": [-5]}),
            "asns[0]: expected a number or a string, got a negative number",
        ),
        (
            Method::POST,
            json!({"asns": [1.5]}),
            "asns[0]: expected a number or a string, got a fractional number",
        ),
        (
            Method::POST,
            json!({"asns": 64497}),
            "invalid JSON body: invalid type: integer",
        ),
        (
            Method::DELETE,
            json!({"asns": [64496, true]}),
            "asns[1]: expected a number or a string, got a boolean",
        ),
        (
            Method::DELETE,
            json!({"asn": [64496]}),
            "unknown field `asn`, expected `asns`",
        ),
    ];
    for (method, body, message) in cases {
        let reply = api
            .call(method.clone(), "/v1/blacklist/asns", Some(body.clone()))
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, message);
        assert_eq!(
            api.get_ok("/v1/blacklist/asns").await,
            json!({"asns": [64496]}),
            "{method} {body}"
        );
    }
    assert_eq!(api.controller.generation(), g0);
    for (asn, message) in [
        ("0", "asn: AS0 is reserved"),
        ("AS", r#"asn: "AS" is not an AS number"#),
        ("x", r#"asn: "x" is not an AS number"#),
        ("-1", r#"asn: "-1" is not an AS number"#),
    ] {
        let reply = api.get(&format!("/v1/blacklist/asns/{asn}")).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, message);
    }
}

#[tokio::test]
async fn country_and_asn_mutations_need_json_and_respect_the_entry_limit() {
    let api = api_with(Limits {
        max_entries: 2,
        ..Limits::default()
    });
    for (path, body) in [
        ("/v1/blacklist/countries", r#"{"countries":["fr"]}"#),
        ("/v1/blacklist/asns", r#"{"asns":[64496]}"#),
        ("/v1/whitelist/domains", r#"{"domains":["good.example"]}"#),
        ("/v1/blacklist/domains", r#"{"domains":["bad.example"]}"#),
        (
            "/v1/blacklist/ja3",
            r#"{"ja3":["b386946a5a44d1ddcc843bc75336dfce"]}"#,
        ),
        (
            "/v1/blacklist/ja4",
            r#"{"ja4":["t13d1516h2_8daaf6152771_02713d6af862"]}"#,
        ),
    ] {
        for (content_type, message) in [
            (None, "missing Content-Type"),
            (Some("text/plain"), "\"text/plain\" is not supported"),
        ] {
            let mut request = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(header::AUTHORIZATION, basic(USER, PASS));
            if let Some(ct) = content_type {
                request = request.header(header::CONTENT_TYPE, ct);
            }
            let reply = api
                .send(request.body(Body::from(body.to_string())).unwrap())
                .await;
            assert_error(&reply, StatusCode::BAD_REQUEST, message);
        }
        let reply = api.call(Method::POST, path, None).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "missing Content-Type");
    }
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/blacklist/countries",
            json!({"countries": ["fr", "de", "nl"]}),
        ),
        (
            Method::DELETE,
            "/v1/blacklist/asns",
            json!({"asns": [1, 2, 3]}),
        ),
        (
            Method::POST,
            "/v1/blacklist/domains",
            json!({"domains": ["a.example", "b.example", "c.example"]}),
        ),
        (
            Method::POST,
            "/v1/blacklist/ja3",
            json!({"ja3": ["0", "1", "2"]}),
        ),
    ] {
        let reply = api.call(method, path, Some(body)).await;
        assert_error(
            &reply,
            StatusCode::PAYLOAD_TOO_LARGE,
            "3 entries in one request: the limit is 2",
        );
    }
    for list in [
        ListKind::CountryBlock,
        ListKind::AsnBlock,
        ListKind::DomainAllow,
        ListKind::DomainBlock,
        ListKind::Ja3Block,
        ListKind::Ja4Block,
    ] {
        assert!(api.controller.list(list).is_empty(), "{list}");
    }
}

/// An IP-to-ASN row for `replace_feed`.
fn ip_asn(prefix: &str, asn: u32, country: &str) -> Entry {
    Entry::IpAsn(meds_proto::IpAsn {
        prefix: prefix.parse().unwrap(),
        asn: (asn != 0).then(|| meds_proto::Asn::new(asn).unwrap()),
        country: (!country.is_empty())
            .then(|| meds_proto::CountryCode::from_feed(country).unwrap()),
    })
}

fn prefix(s: &str) -> Entry {
    Entry::Prefix(s.parse().unwrap())
}

#[tokio::test]
async fn check_reports_lists_feeds_asn_and_country() {
    let api = api();
    let ctl = &api.controller;
    ctl.replace_feed(
        ListKind::IpAsn,
        [
            ip_asn("203.0.0.0/16", 64496, "fr"),
            ip_asn("203.0.113.0/24", 64497, "de"),
            ip_asn("2001:db8::/32", 64500, ""),
        ]
        .into_iter()
        .collect(),
    )
    .await
    .unwrap();
    ctl.replace_feed(
        ListKind::FeedFireHol,
        [prefix("203.0.0.0/16")].into_iter().collect(),
    )
    .await
    .unwrap();
    ctl.replace_feed(
        ListKind::FeedSpamhaus,
        [prefix("203.0.113.0/24"), prefix("203.0.113.0/25")]
            .into_iter()
            .collect(),
    )
    .await
    .unwrap();
    ctl.replace_feed(
        ListKind::FeedAsnDrop,
        [Entry::Asn(meds_proto::Asn::new(64497).unwrap())]
            .into_iter()
            .collect(),
    )
    .await
    .unwrap();
    for (path, body) in [
        ("/v1/blacklist/subnets", json!({"subnets": ["203.0.113.7"]})),
        ("/v1/blacklist/countries", json!({"countries": ["DE"]})),
        ("/v1/blacklist/asns", json!({"asns": ["AS64497", 64500]})),
    ] {
        let reply = api.call(Method::POST, path, Some(body)).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{path}: {}", reply.json);
    }

    assert_eq!(
        api.get_ok("/v1/check/203.0.113.7").await,
        json!({
            "ip": "203.0.113.7",
            "lists": {
                "blacklist": "203.0.113.7/32",
                "firehol": "203.0.0.0/16",
                "spamhaus": "203.0.113.0/25",
            },
            "asn": 64497,
            "country": "de",
            "network": "203.0.113.0/24",
            "country_blocked": true,
            "asn_lists": ["asns", "spamhaus_asndrop"],
        })
    );
    // Outside the /24: the /16 row, country not blocked, ASN on no list.
    assert_eq!(
        api.get_ok("/v1/check/203.0.114.1").await,
        json!({
            "ip": "203.0.114.1",
            "lists": {"firehol": "203.0.0.0/16"},
            "asn": 64496,
            "country": "fr",
            "network": "203.0.0.0/16",
            "country_blocked": false,
            "asn_lists": [],
        })
    );
    assert_eq!(
        api.get_ok("/v1/check/2001:DB8::1").await,
        json!({
            "ip": "2001:db8::1",
            "lists": {},
            "asn": 64500,
            "country": null,
            "network": "2001:db8::/32",
            "country_blocked": false,
            "asn_lists": ["asns"],
        })
    );
    assert_eq!(
        api.get_ok("/v1/check/10.9.8.7").await,
        json!({
            "ip": "10.9.8.7",
            "lists": {"whitelist": "10.0.0.0/8"},
            "asn": null,
            "country": null,
            "network": null,
            "country_blocked": false,
            "asn_lists": [],
        })
    );
    for (ip, message) in [
        (
            "not-an-ip",
            r#"ip: "not-an-ip" is not a valid IPv4 or IPv6 address"#,
        ),
        ("300.1.1.1", r#"ip: "300.1.1.1" is not a valid"#),
        ("203.0.113.0/24", r#"ip: "203.0.113.0/24" is a prefix"#),
        ("203.0.113.0%2F24", r#"ip: "203.0.113.0/24" is a prefix"#),
        ("::ffff:192.0.2.1", "IPv4-mapped IPv6 address"),
        ("%20", "ip: empty value"),
    ] {
        let reply = api.get(&format!("/v1/check/{ip}")).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, message);
    }
}

#[tokio::test]
async fn domains_round_trip_on_both_lists_with_label_aware_checks() {
    let api = api();
    for (list, other) in [("whitelist", "blacklist"), ("blacklist", "whitelist")] {
        let base = format!("/v1/{list}/domains");
        let g0 = api.controller.generation();
        assert_eq!(api.get_ok(&base).await, json!({"domains": []}));

        // Normalised: case, one trailing dot, Unicode to punycode, surrounding spaces.
        let added = api
            .call(
                Method::POST,
                &base,
                Some(
                    json!({"domains": ["Bad.COM.", "www.bad.com", "bücher.example", " bad.com "]}),
                ),
            )
            .await;
        assert_eq!(added.status, StatusCode::ACCEPTED, "{}", added.json);
        assert_eq!(
            added.json,
            json!({"changed": 3, "generation": g0 + 1, "applied": false})
        );
        assert_eq!(
            api.get_ok(&base).await,
            json!({"domains": ["bad.com", "www.bad.com", "xn--bcher-kva.example"]})
        );

        // Idempotent.
        let again = api
            .call(Method::POST, &base, Some(json!({"domains": ["BAD.com"]})))
            .await;
        assert_eq!(again.status, StatusCode::ACCEPTED);
        assert_eq!(
            again.json,
            json!({"changed": 0, "generation": g0 + 1, "applied": false})
        );

        // (path segment, matches): the name and its parents, most specific first; label-aware.
        let cases: [(&str, &[&str]); 10] = [
            ("bad.com", &["bad.com"]),
            ("BAD.Com.", &["bad.com"]),
            ("www.bad.com", &["www.bad.com", "bad.com"]),
            ("a.www.bad.com", &["www.bad.com", "bad.com"]),
            ("mail.bad.com", &["bad.com"]),
            ("badge.com", &[]),
            ("notbad.com", &[]),
            ("bad.community", &[]),
            ("B%C3%BCcher.example", &["xn--bcher-kva.example"]),
            ("shop.xn--bcher-kva.example", &["xn--bcher-kva.example"]),
        ];
        for (query, matches) in cases {
            assert_eq!(
                api.get_ok(&format!("{base}/{query}")).await,
                json!({"found": !matches.is_empty(), "matches": matches}),
                "{list} {query}"
            );
        }
        // The other list is separate.
        assert_eq!(
            api.get_ok(&format!("/v1/{other}/domains/bad.com")).await,
            json!({"found": false, "matches": []})
        );

        // Removal is exact: `bad.com` goes, its subdomain entry stays.
        let removed = api
            .call(
                Method::DELETE,
                &base,
                Some(json!({"domains": ["Bad.com.", "absent.example"]})),
            )
            .await;
        assert_eq!(removed.status, StatusCode::ACCEPTED, "{}", removed.json);
        assert_eq!(
            removed.json,
            json!({"changed": 1, "generation": g0 + 2, "applied": false})
        );
        assert_eq!(
            api.get_ok(&base).await,
            json!({"domains": ["www.bad.com", "xn--bcher-kva.example"]})
        );
        assert_eq!(
            api.get_ok(&format!("{base}/mail.bad.com")).await,
            json!({"found": false, "matches": []})
        );
        assert_eq!(
            api.get_ok(&format!("{base}/x.www.bad.com")).await,
            json!({"found": true, "matches": ["www.bad.com"]})
        );
        let rest = api
            .call(
                Method::DELETE,
                &base,
                Some(json!({"domains": ["www.bad.com", "xn--bcher-kva.example"]})),
            )
            .await;
        assert_eq!(rest.json["changed"], 2);
    }
    // The IP lists were not touched.
    assert!(api.list("blacklist").await.is_empty());
    assert_eq!(api.list("whitelist").await, sorted_defaults());
}

#[tokio::test]
async fn a_bad_domain_is_400_naming_it_and_changes_nothing() {
    let api = api();
    api.call(
        Method::POST,
        "/v1/blacklist/domains",
        Some(json!({"domains": ["keep.example"]})),
    )
    .await;
    let g = api.controller.generation();
    let long_label = "a".repeat(64);
    let long_name = vec!["a".repeat(63); 4].join(".");
    // (body element, message)
    let cases: Vec<(Value, String)> = vec![
        (
            json!("*"),
            "domains[1]: \"*\": wildcards are not supported".into(),
        ),
        (
            json!("*.bad.com"),
            "domains[1]: \"*.bad.com\": wildcards are not supported".into(),
        ),
        (
            json!("bad .com"),
            "domains[1]: \"bad .com\": character ' ' is not allowed".into(),
        ),
        (
            json!(""),
            "domains[1]: empty value: expected a domain name".into(),
        ),
        (json!("."), "domains[1]: empty value".into()),
        (
            json!("bad.com.."),
            "domains[1]: \"bad.com..\" has an empty label".into(),
        ),
        (
            json!(format!("{long_label}.com")),
            format!(
                "domains[1]: \"{long_label}.com\": label \"{long_label}\" is 64 bytes long, over the limit of 63"
            ),
        ),
        (
            json!(long_name),
            "is 255 bytes long, over the limit of 253".into(),
        ),
        (
            json!("http://bad.com/"),
            "domains[1]: \"http://bad.com/\": character ':' is not allowed".into(),
        ),
        (
            json!(5),
            "domains[1]: expected a string, got a number".into(),
        ),
        (
            json!(null),
            "domains[1]: expected a string, got null".into(),
        ),
    ];
    for (list, _) in [("whitelist", 0), ("blacklist", 1)] {
        for (bad, message) in &cases {
            for method in [Method::POST, Method::DELETE] {
                let reply = api
                    .call(
                        method.clone(),
                        &format!("/v1/{list}/domains"),
                        Some(json!({"domains": ["ok.example", bad]})),
                    )
                    .await;
                assert_error(&reply, StatusCode::BAD_REQUEST, message);
            }
        }
    }
    assert_eq!(api.controller.generation(), g);
    assert!(api.controller.list(ListKind::DomainAllow).is_empty());
    assert_eq!(
        api.get_ok("/v1/blacklist/domains").await,
        json!({"domains": ["keep.example"]})
    );

    // A bad check query is a 400 naming it.
    for (segment, message) in [
        (
            "bad%20.com",
            "domain: \"bad .com\": character ' ' is not allowed",
        ),
        ("*", "domain: \"*\": wildcards are not supported"),
        ("a..b", "domain: \"a..b\" has an empty label"),
        ("%20", "domain: empty value"),
        (
            "1.2.3.4",
            "domain: \"1.2.3.4\": top-level label \"4\" is all digits",
        ),
    ] {
        let reply = api.get(&format!("/v1/blacklist/domains/{segment}")).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, message);
    }
    let reply = api
        .get(&format!("/v1/whitelist/domains/{long_label}.com"))
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "over the limit of 63");
}

#[tokio::test]
async fn ja3_and_ja4_round_trip_with_exact_checks() {
    let api = api();
    let ja3 = "b386946a5a44d1ddcc843bc75336dfce";
    let ja4 = "t13d1516h2_8daaf6152771_02713d6af862";
    // (path, key, value as sent, canonical value, a near miss)
    let cases = [
        (
            "/v1/blacklist/ja3",
            "ja3",
            "B386946A5A44D1DDCC843BC75336DFCE",
            ja3,
            "b386946a5a44d1ddcc843bc75336dfcf",
        ),
        (
            "/v1/blacklist/ja4",
            "ja4",
            "T13D1516H2_8DAAF6152771_02713D6AF862",
            ja4,
            "t13d1516h2_8daaf6152771_02713d6af863",
        ),
    ];
    for (path, key, sent, canonical, near) in cases {
        let g0 = api.controller.generation();
        assert_eq!(api.get_ok(path).await, json!({ key: [] }));
        let added = api
            .call(Method::POST, path, Some(json!({ key: [sent, canonical] })))
            .await;
        assert_eq!(added.status, StatusCode::ACCEPTED, "{}", added.json);
        assert_eq!(
            added.json,
            json!({"changed": 1, "generation": g0 + 1, "applied": false})
        );
        let again = api
            .call(Method::POST, path, Some(json!({ key: [canonical] })))
            .await;
        assert_eq!(again.json["changed"], 0);
        assert_eq!(api.get_ok(path).await, json!({ key: [canonical] }));
        // Exact checks answer `found` only.
        assert_eq!(
            api.get_ok(&format!("{path}/{sent}")).await,
            json!({"found": true})
        );
        assert_eq!(
            api.get_ok(&format!("{path}/{near}")).await,
            json!({"found": false})
        );
        let removed = api
            .call(Method::DELETE, path, Some(json!({ key: [near, sent] })))
            .await;
        assert_eq!(
            removed.json,
            json!({"changed": 1, "generation": g0 + 2, "applied": false})
        );
        assert_eq!(api.get_ok(path).await, json!({ key: [] }));
    }

    // Bad values: 400 naming the element; nothing changes.
    let g = api.controller.generation();
    let bad = [
        (
            "/v1/blacklist/ja3",
            json!({"ja3": [ja3, "b386946a5a44d1ddcc843bc75336dfcg"]}),
            "ja3[1]: \"b386946a5a44d1ddcc843bc75336dfcg\" is not a JA3 hash: expected 32 hexadecimal digits",
        ),
        (
            "/v1/blacklist/ja3",
            json!({"ja3": ["b386946a5a44d1ddcc843bc75336dfc"]}),
            "ja3[0]: \"b386946a5a44d1ddcc843bc75336dfc\" is not a JA3 hash",
        ),
        (
            "/v1/blacklist/ja3",
            json!({"ja3": [ja4]}),
            "ja3[0]: \"t13d1516h2_8daaf6152771_02713d6af862\" is not a JA3 hash",
        ),
        (
            "/v1/blacklist/ja4",
            json!({"ja4": [ja4, "t13d1516h2-8daaf6152771-02713d6af862"]}),
            "ja4[1]: \"t13d1516h2-8daaf6152771-02713d6af862\" is not a JA4 fingerprint (expected three parts",
        ),
        (
            "/v1/blacklist/ja4",
            json!({"ja4": ["t13d1516h2_8daaf6152771"]}),
            "ja4[0]: \"t13d1516h2_8daaf6152771\" is not a JA4 fingerprint (not 36 characters long)",
        ),
        (
            "/v1/blacklist/ja4",
            json!({"ja4": ["t13x1516h2_8daaf6152771_02713d6af862"]}),
            "SNI flag must be 'd' or 'i'",
        ),
        (
            "/v1/blacklist/ja4",
            json!({"ja4": ["t13d1516h2_8daaf615277z_02713d6af862"]}),
            "the b and c parts must be 12 hexadecimal digits each",
        ),
        (
            "/v1/blacklist/ja4",
            json!({"ja3": [ja4]}),
            "invalid JSON body: unknown field `ja3`, expected `ja4`",
        ),
    ];
    for (path, body, message) in bad {
        for method in [Method::POST, Method::DELETE] {
            let reply = api.call(method, path, Some(body.clone())).await;
            assert_error(&reply, StatusCode::BAD_REQUEST, message);
        }
    }
    assert_eq!(api.controller.generation(), g);
    for (path, message) in [
        ("/v1/blacklist/ja3/xyz", "ja3: \"xyz\" is not a JA3 hash"),
        (
            "/v1/blacklist/ja4/xyz",
            "ja4: \"xyz\" is not a JA4 fingerprint",
        ),
    ] {
        assert_error(&api.get(path).await, StatusCode::BAD_REQUEST, message);
    }
}
