//! `GET /metrics` and `GET /v1/metrics` through the real router: Basic Auth, content type, and
//! an exposition that parses (strictly) and holds the dataplane's folded counters.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

#[path = "../../tests/src/exposition.rs"]
mod exposition;
mod feeds_support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use feeds_support::{FeedServer, config, feeds, fixture, update};
use meds_controld::api::{Credentials, Limits, router, router_with_feeds};
use meds_controld::core::{Controller, DataplaneStats, DecisionStat};
use tower::ServiceExt as _;

const USER: &str = "admin";
const PASS: &str = "s3cret";
const PATHS: [&str; 2] = ["/metrics", "/v1/metrics"];

fn basic(user: &str, pass: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {token}")
}

async fn get(app: &axum::Router, path: &str, auth: Option<String>) -> (StatusCode, String, String) {
    let mut request = Request::get(path);
    if let Some(auth) = auth {
        request = request.header(header::AUTHORIZATION, auth);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        app.clone().oneshot(request.body(Body::empty()).unwrap()),
    )
    .await
    .expect("router answered in time")
    .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

fn app() -> (Arc<Controller>, axum::Router) {
    let controller = Controller::new_for_tests();
    let credentials = Credentials::new(USER, PASS).unwrap();
    let app = router(Arc::clone(&controller), credentials, Limits::default());
    (controller, app)
}

#[tokio::test]
async fn metrics_need_credentials() {
    let (_, app) = app();
    for path in PATHS {
        let (status, _, body) = get(&app, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(!body.contains("meds_"), "{path}: {body}");
        let (status, _, _) = get(&app, path, Some(basic(USER, "wrong"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test]
async fn metrics_are_served_as_prometheus_text() {
    let (controller, app) = app();
    let connection = controller.dataplane_connected("test".into(), vec![0]);
    let stats = DataplaneStats {
        instance_id: 5,
        packets_processed: 9,
        decisions: vec![DecisionStat {
            verdict: "drop".into(),
            filter: "ip".into(),
            reason: "BlackList".into(),
            packets: 9,
        }],
        ..DataplaneStats::default()
    };
    controller.dataplane_stats(connection, stats.clone());
    controller.fold_stats(&stats).await.unwrap();
    for path in PATHS {
        let (status, content_type, body) = get(&app, path, Some(basic(USER, PASS))).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        let e = exposition::parse(&body).unwrap_or_else(|err| panic!("{err}\n{body}"));
        assert_eq!(
            e.value(
                "meds_core_packets_dropped_total",
                &[("filter", "ip"), ("reason", "BlackList")]
            ),
            Some(9.0),
            "{body}"
        );
        assert_eq!(e.value("meds_core_packets_processed_total", &[]), Some(9.0));
        assert_eq!(e.value("meds_dataplane_connected", &[]), Some(1.0));
        assert!(e.types.contains_key("meds_list_entries"));
    }
}

#[tokio::test]
async fn feed_metrics_follow_the_feeds() {
    let server = FeedServer::start().await;
    server.ok("/feodo", &fixture("feodo_ipblocklist.txt"));
    let (controller, feeds) = feeds(config(&[("feodo", server.url("/feodo"))])).await;
    let app = router_with_feeds(
        Arc::clone(&controller),
        Some(Arc::clone(&feeds)),
        Credentials::new(USER, PASS).unwrap(),
        Limits::default(),
    );
    let scrape = || async {
        let (status, _, body) = get(&app, "/metrics", Some(basic(USER, PASS))).await;
        assert_eq!(status, StatusCode::OK);
        exposition::parse(&body).unwrap_or_else(|err| panic!("{err}\n{body}"))
    };
    let before = scrape().await;
    let feed = [("feed", "feodo")];
    assert_eq!(before.value("meds_feed_entries", &feed), Some(0.0));
    assert_eq!(before.value("meds_feed_failures_total", &feed), Some(0.0));
    // never fetched: no last-success timestamp
    assert_eq!(
        before.value("meds_feed_last_success_timestamp_seconds", &feed),
        None
    );

    let status = update(&feeds, "feodo").await;
    assert!(status.entries > 0, "{status:?}");
    let after = scrape().await;
    assert_eq!(
        after.value("meds_feed_entries", &feed),
        Some(status.entries as f64)
    );
    assert_eq!(
        after.value("meds_feed_last_success_timestamp_seconds", &feed),
        Some(status.last_success_unix as f64)
    );
    assert_eq!(
        after.value("meds_feed_rejected_lines", &feed),
        Some(status.rejected_lines as f64)
    );
    assert_eq!(
        after.value("meds_list_entries", &[("list", "feodo")]),
        Some(status.entries as f64)
    );

    // a failed fetch is counted
    server.set("/feodo", feeds_support::Reply::Status(500, Vec::new()));
    let failed = update(&feeds, "feodo").await;
    assert_eq!(failed.failures, 1, "{failed:?}");
    let e = scrape().await;
    assert_eq!(e.value("meds_feed_failures_total", &feed), Some(1.0));
    assert_eq!(
        e.value("meds_feed_entries", &feed),
        Some(status.entries as f64),
        "the last good copy stays"
    );
    server.stop();
}
