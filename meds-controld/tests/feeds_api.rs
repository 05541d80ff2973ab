//! `/v1/feeds` through the real router, and the feed RPCs of the admin service over a Unix
//! socket: list, update on demand, configure; 404 for unknown feeds, 400 for bad URLs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod feeds_support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use feeds_support::{FeedServer, config, eventually, feeds, fixture};
use hyper_util::rt::TokioIo;
use meds_controld::api::{Credentials, Limits, router, router_with_feeds};
use meds_controld::feeds::FEEDS;
use meds_controld::grpc::AdminService;
use meds_proto::ListKind;
use meds_proto::pb::{self, admin_client::AdminClient};
use serde_json::{Value, json};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Endpoint;
use tower::ServiceExt as _;

fn auth() -> String {
    let token = base64::engine::general_purpose::STANDARD.encode("admin:pw");
    format!("Basic {token}")
}

async fn call(
    app: &axum::Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let is_post = method == Method::POST;
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, auth());
    if body.is_some() || is_post {
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
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{status}: not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, json)
}

#[tokio::test]
async fn rest_lists_updates_and_configures_feeds() {
    let server = FeedServer::start().await;
    server.ok("/feodo", &fixture("feodo_ipblocklist.txt"));
    server.ok("/firehol", &fixture("firehol_level1.netset"));
    let (controller, feeds) = feeds(config(&[
        ("feodo", server.url("/feodo")),
        ("firehol_level1", server.url("/firehol")),
    ]))
    .await;
    let app = router_with_feeds(
        Arc::clone(&controller),
        Some(Arc::clone(&feeds)),
        Credentials::new("admin", "pw").unwrap(),
        Limits::default(),
    );

    let (status, body) = call(&app, Method::GET, "/v1/feeds", None).await;
    assert_eq!(status, StatusCode::OK);
    let list = body["feeds"].as_array().unwrap();
    assert_eq!(list.len(), FEEDS.len());
    let feodo = list.iter().find(|f| f["name"] == "feodo").unwrap();
    assert_eq!(feodo["list"], "feodo");
    assert_eq!(feodo["enabled"], true);
    assert_eq!(feodo["url"], server.url("/feodo"));
    assert_eq!(feodo["entries"], 0);
    for key in [
        "last_success_unix",
        "last_attempt_unix",
        "next_update_unix",
        "failures",
        "rejected_lines",
    ] {
        assert!(feodo[key].is_u64(), "{key}: {feodo}");
    }
    assert_eq!(feodo["last_error"], "");
    let iplocate = list.iter().find(|f| f["name"] == "iplocate").unwrap();
    assert_eq!(iplocate["enabled"], false);
    // The domain and fingerprint feeds, at their default URLs (disabled in this test).
    for (name, list_name, url) in [
        (
            "stevenblack",
            "stevenblack",
            "https://raw.githubusercontent.com/StevenBlack/hosts/master/hosts",
        ),
        (
            "someonewhocares",
            "someonewhocares",
            "https://someonewhocares.org/hosts/zero/hosts",
        ),
        (
            "sslbl_ja3",
            "sslbl_ja3",
            "https://sslbl.abuse.ch/blacklist/ja3_fingerprints.csv",
        ),
    ] {
        let feed = list.iter().find(|f| f["name"] == name).unwrap();
        assert_eq!(feed["list"], list_name, "{feed}");
        assert_eq!(feed["url"], url, "{feed}");
        assert_eq!(feed["enabled"], false, "{feed}");
    }

    // Update one feed by name, then every enabled one (no body).
    let (status, body) = call(
        &app,
        Method::POST,
        "/v1/feeds/update",
        Some(r#"{"names":["feodo"]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["feeds"].as_array().unwrap().len(), 1);
    assert!(body["feeds"][0]["entries"].as_u64().unwrap() > 0);
    assert!(!controller.list(ListKind::FeedFeodo).is_empty());
    // Without the JSON Content-Type (a cross-site form or no-cors request could do that): 400.
    let bare = Request::builder()
        .method(Method::POST)
        .uri("/v1/feeds/update")
        .header(header::AUTHORIZATION, auth())
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(bare).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let (status, body) = call(&app, Method::POST, "/v1/feeds/update", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> = body["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["firehol_level1", "feodo"]);

    // /v1/status carries every feed and names a failing one as a health problem.
    let (status, body) = call(&app, Method::GET, "/v1/status", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["feeds"].as_array().unwrap().len(),
        FEEDS.len(),
        "{body}"
    );
    assert_eq!(
        body["health"],
        json!({"ok": false, "problems": ["no dataplane connected"]})
    );
    let missing = server.url("/no-such-feed");
    let (status, body) = call(
        &app,
        Method::PATCH,
        "/v1/feeds/firehol_level1",
        Some(&format!(r#"{{"url":"{missing}"}}"#)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(
        &app,
        Method::POST,
        "/v1/feeds/update",
        Some(r#"{"names":["firehol_level1"]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = call(&app, Method::GET, "/v1/status", None).await;
    let problems = body["health"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{body}");
    let failing = problems[1].as_str().unwrap();
    assert!(
        failing.starts_with("feed firehol_level1 failing: "),
        "{failing}"
    );
    let (status, body) = call(
        &app,
        Method::PATCH,
        "/v1/feeds/firehol_level1",
        Some(&format!(r#"{{"url":"{}"}}"#, server.url("/firehol"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Configure: disable, bad URL, unknown feed, empty body.
    let (status, body) = call(
        &app,
        Method::PATCH,
        "/v1/feeds/feodo",
        Some(r#"{"enabled":false}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["enabled"], false);
    assert!(controller.list(ListKind::FeedFeodo).is_empty());

    let cases: [(Method, &str, Option<&str>, StatusCode, &str); 8] = [
        (
            Method::PATCH,
            "/v1/feeds/feodo",
            Some(r#"{"url":"ftp://x.example/f"}"#),
            StatusCode::BAD_REQUEST,
            "scheme \"ftp\" is not allowed",
        ),
        (
            Method::PATCH,
            "/v1/feeds/feodo",
            Some(r#"{}"#),
            StatusCode::BAD_REQUEST,
            "nothing to change",
        ),
        (
            Method::PATCH,
            "/v1/feeds/feodo",
            Some(r#"{"enabled":"yes"}"#),
            StatusCode::BAD_REQUEST,
            "invalid JSON body",
        ),
        (
            Method::PATCH,
            "/v1/feeds/feodo",
            Some(r#"{"enabled":true,"colour":1}"#),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            Method::PATCH,
            "/v1/feeds/nope",
            Some(r#"{"enabled":true}"#),
            StatusCode::NOT_FOUND,
            "unknown feed \"nope\"",
        ),
        (
            Method::POST,
            "/v1/feeds/update",
            Some(r#"{"names":["nope"]}"#),
            StatusCode::NOT_FOUND,
            "unknown feed",
        ),
        (
            Method::POST,
            "/v1/feeds/update",
            Some(r#"{"names":["feodo"]}"#),
            StatusCode::BAD_REQUEST,
            "feodo is disabled",
        ),
        (
            Method::DELETE,
            "/v1/feeds/feodo",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "not allowed",
        ),
    ];
    for (method, uri, body, want, needle) in cases {
        let (status, json) = call(&app, method.clone(), uri, body).await;
        assert_eq!(status, want, "{method} {uri} {body:?}: {json}");
        assert!(
            json["error"].as_str().unwrap().contains(needle),
            "{method} {uri}: {json}"
        );
    }

    // Enabling with a new URL fetches it in the background.
    server.ok("/mirror", &fixture("feodo_ipblocklist_recommended.txt"));
    let patch = json!({"enabled": true, "url": server.url("/mirror")}).to_string();
    let (status, body) = call(&app, Method::PATCH, "/v1/feeds/feodo", Some(&patch)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["url"], server.url("/mirror"));
    eventually("mirror fetched", || !server.seen("/mirror").is_empty()).await;
    eventually("mirror in force", || {
        controller
            .list(ListKind::FeedFeodo)
            .iter()
            .any(|e| e.to_string() == "8.8.8.8/32")
    })
    .await;

    // Without feeds the routes do not exist; authentication still comes first.
    let plain = router(
        Arc::clone(&controller),
        Credentials::new("admin", "pw").unwrap(),
        Limits::default(),
    );
    let (status, _) = call(&plain, Method::GET, "/v1/feeds", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let unauthenticated = Request::builder()
        .uri("/v1/feeds")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(unauthenticated).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_rpcs_list_update_and_configure_feeds() {
    let server = FeedServer::start().await;
    server.ok("/asndrop", &fixture("spamhaus_asndrop.json"));
    let (controller, feeds) = feeds(config(&[("spamhaus_asndrop", server.url("/asndrop"))])).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let with = AdminService::new(Arc::clone(&controller)).with_feeds(Arc::clone(&feeds));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(pb::admin_server::AdminServer::new(with))
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
    let socket = path.clone();
    let channel = Endpoint::try_from("http://meds.invalid")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let p = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(p).await?)) }
        }))
        .await
        .unwrap();
    let mut client = AdminClient::new(channel);

    let listed = client
        .list_feeds(pb::ListFeedsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.feeds.len(), FEEDS.len());
    let updated = client
        .update_feeds(pb::UpdateFeedsRequest { names: vec![] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.feeds.len(), 1);
    let asndrop = &updated.feeds[0];
    assert_eq!(asndrop.name, "spamhaus_asndrop");
    assert_eq!(asndrop.list, "spamhaus_asndrop");
    assert!(
        asndrop.entries > 0 && asndrop.last_error.is_empty(),
        "{asndrop:?}"
    );
    assert_eq!(
        controller.list_len(ListKind::FeedAsnDrop) as u64,
        asndrop.entries
    );

    let off = client
        .configure_feed(pb::ConfigureFeedRequest {
            name: "spamhaus_asndrop".into(),
            enabled: Some(false),
            url: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!off.enabled);
    assert_eq!(controller.list_len(ListKind::FeedAsnDrop), 0);

    let codes = [
        (
            client
                .configure_feed(pb::ConfigureFeedRequest {
                    name: "nope".into(),
                    enabled: Some(true),
                    url: None,
                })
                .await
                .unwrap_err(),
            tonic::Code::NotFound,
        ),
        (
            client
                .configure_feed(pb::ConfigureFeedRequest {
                    name: "feodo".into(),
                    enabled: None,
                    url: Some("gopher://x.example/".into()),
                })
                .await
                .unwrap_err(),
            tonic::Code::InvalidArgument,
        ),
        (
            client
                .update_feeds(pb::UpdateFeedsRequest {
                    names: vec!["spamhaus_asndrop".into()],
                })
                .await
                .unwrap_err(),
            tonic::Code::FailedPrecondition,
        ),
    ];
    for (status, code) in codes {
        assert_eq!(status.code(), code, "{status:?}");
    }

    // A service without feeds says so.
    let bare = AdminService::new(Arc::clone(&controller));
    let err =
        pb::admin_server::Admin::list_feeds(&bare, tonic::Request::new(pb::ListFeedsRequest {}))
            .await
            .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
}
