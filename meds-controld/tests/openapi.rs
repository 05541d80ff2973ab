//! The OpenAPI document (`GET /v1/openapi.json`): it is a valid OpenAPI 3.0 document (typed
//! parse with `openapiv3`, then our own checks of what a typed parse cannot see: references,
//! path parameters, operation ids, the security scheme), and it describes the router as it
//! is: every documented operation is served (never the router's 404/405 fallbacks) and
//! refuses a request without credentials, and the browsable page and its assets are served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod feeds_support;

use std::collections::BTreeSet;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use feeds_support::{FeedServer, config, feeds};
use meds_controld::api::{Credentials, Limits, openapi, router_with_feeds};
use serde_json::Value;
use tower::ServiceExt as _;

async fn app() -> (axum::Router, FeedServer) {
    let server = FeedServer::start().await;
    let (controller, feeds) = feeds(config(&[("feodo", server.url("/feodo"))])).await;
    let router = router_with_feeds(
        controller,
        Some(feeds),
        Credentials::new("admin", "pw").unwrap(),
        Limits {
            request_timeout: Duration::from_secs(10),
            ..Limits::default()
        },
    );
    (router, server)
}

fn auth() -> String {
    let token = base64::engine::general_purpose::STANDARD.encode("admin:pw");
    format!("Basic {token}")
}

async fn send(
    app: &axum::Router,
    method: &Method,
    uri: &str,
    body: Option<&Value>,
    authenticated: bool,
) -> (StatusCode, String, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(uri);
    if authenticated {
        request = request.header(header::AUTHORIZATION, auth());
    }
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), app.clone().oneshot(request))
        .await
        .expect("answered in time")
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = tokio::time::timeout(
        Duration::from_secs(5),
        axum::body::to_bytes(response.into_body(), 1 << 24),
    )
    .await
    .expect("body ends")
    .unwrap();
    (status, content_type, bytes.to_vec())
}

fn resolve_ref<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

/// Every `$ref` anywhere in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == "$ref" {
                    out.push(child.as_str().unwrap().to_string());
                } else {
                    refs(child, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|c| refs(c, out)),
        _ => {}
    }
}

fn operations(doc: &Value) -> Vec<(String, Method, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            out.push((path.clone(), method, op.clone()));
        }
    }
    out
}

/// The path with every `{name}` replaced by its parameter's example.
fn concrete(path: &str, op: &Value) -> String {
    let mut uri = path.to_string();
    for p in op["parameters"].as_array().into_iter().flatten() {
        if p["in"] == "path" {
            let name = p["name"].as_str().unwrap();
            let example = p["example"]
                .as_str()
                .expect("path parameters have examples");
            uri = uri.replace(&format!("{{{name}}}"), example);
        }
    }
    uri
}

#[test]
fn the_document_is_valid_openapi_3() {
    let doc = openapi::document();
    let typed: openapiv3::OpenAPI =
        serde_json::from_value(doc.as_ref().clone()).expect("parses as OpenAPI 3.0");
    assert!(typed.openapi.starts_with("3.0."), "{}", typed.openapi);
    assert_eq!(typed.info.version, env!("CARGO_PKG_VERSION"));

    // Basic Auth declared and required everywhere.
    let scheme = &doc["components"]["securitySchemes"]["basicAuth"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "basic");
    assert_eq!(doc["security"], serde_json::json!([{"basicAuth": []}]));

    // References resolve.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in &all {
        assert!(resolve_ref(&doc, r).is_some(), "dangling $ref {r}");
    }

    let mut ids = BTreeSet::new();
    let ops = operations(&doc);
    assert!(ops.len() >= 40, "{} operations", ops.len());
    for (path, method, op) in &ops {
        let id = op["operationId"].as_str().expect("operationId");
        assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{method} {path}"
        );
        // Path templates and path parameters agree.
        let in_path: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_string)
            .collect();
        let declared: BTreeSet<String> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{method} {path}");
                p["name"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(in_path, declared, "{method} {path}");
        // Every operation documents the authentication failure and at least one success.
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.contains_key("401"), "{method} {path}");
        assert!(
            responses.keys().any(|k| k.starts_with('2')),
            "{method} {path}"
        );
        for (code, r) in responses {
            assert!(r["description"].is_string(), "{method} {path} {code}");
        }
    }
}

#[tokio::test]
async fn every_documented_operation_is_served_and_authenticated() {
    let (app, _server) = app().await;
    let doc = openapi::document();
    for (path, method, op) in operations(&doc) {
        let mut uri = concrete(&path, &op);
        if path == "/v1/events" {
            // Without follow the answer ends after the recent events.
            uri.push_str("?recent=5");
        }
        let body = op["requestBody"]["content"]["application/json"]["example"].clone();
        let body = (!body.is_null()).then_some(body);

        let (status, _, bytes) = send(&app, &method, &uri, body.as_ref(), false).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {uri} without credentials: {}",
            String::from_utf8_lossy(&bytes)
        );

        let (status, _, bytes) = send(&app, &method, &uri, body.as_ref(), true).await;
        let text = String::from_utf8_lossy(&bytes);
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}: {text}"
        );
        assert!(
            !(status == StatusCode::NOT_FOUND && text.contains("no such route")),
            "{method} {uri} is documented but not routed: {text}"
        );
        let documented = op["responses"]
            .as_object()
            .unwrap()
            .contains_key(status.as_str());
        assert!(
            documented,
            "{method} {uri} answered {status}, which its description does not list: {text}"
        );
    }
}

#[tokio::test]
async fn the_document_and_the_page_are_served() {
    let (app, _server) = app().await;
    for uri in ["/v1/openapi.json", "/swagger/doc.json"] {
        let (status, content_type, bytes) = send(&app, &Method::GET, uri, None, true).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        let served: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(&served, openapi::document().as_ref(), "{uri}");
    }
    for uri in ["/v1/docs", "/swagger/index.html"] {
        let (status, content_type, bytes) = send(&app, &Method::GET, uri, None, true).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(content_type.starts_with("text/html"), "{content_type}");
        let html = String::from_utf8(bytes).unwrap();
        // The page loads only its own assets, which are served.
        for asset in ["/v1/docs/docs.js", "/v1/docs/docs.css"] {
            assert!(html.contains(asset), "{asset}");
            let (status, _, bytes) = send(&app, &Method::GET, asset, None, true).await;
            assert_eq!(status, StatusCode::OK, "{asset}");
            assert!(!bytes.is_empty());
        }
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}

/// `(method, path)` of every `curl` example line of README.md (`-X METHOD`, else GET; the URL
/// is the word starting with `$M/`, quotes and query dropped).
fn readme_examples() -> Vec<(Method, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let mut out = Vec::new();
    for line in readme.lines().filter(|l| l.starts_with("curl ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let method = words
            .windows(2)
            .find(|w| w[0] == "-X")
            .map_or(Method::GET, |w| {
                Method::from_bytes(w[1].as_bytes()).expect("method")
            });
        let Some(url) = words
            .iter()
            .map(|w| w.trim_matches('"'))
            .find_map(|w| w.strip_prefix("$M/"))
        else {
            continue;
        };
        let path = url.split('?').next().unwrap_or(url);
        out.push((method, format!("/{path}")));
    }
    out
}

/// `template` (`/v1/check/{ip}`) matches `path` (`/v1/check/203.0.113.7`).
fn matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}

#[test]
fn readme_has_an_example_for_every_route() {
    let examples = readme_examples();
    assert!(examples.len() >= 40, "{examples:?}");
    let doc = openapi::document();
    let ops = operations(&doc);
    for (path, method, _) in &ops {
        assert!(
            examples
                .iter()
                .any(|(m, p)| m == method && matches(path, p)),
            "README.md has no curl example for {method} {path}"
        );
    }
    // And no example of a route that does not exist.
    for (method, path) in &examples {
        assert!(
            ops.iter().any(|(t, m, _)| m == method && matches(t, path)),
            "README.md shows {method} {path}, which is not a documented route"
        );
    }
}
