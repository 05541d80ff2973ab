//! Drop events and explain through the controller, with a scripted dataplane on the sync
//! stream: Admin gRPC (`Explain`, `Events`) over a real Unix socket and the REST routes
//! (`/v1/explain/{ip}`, `/v1/events`) through the router.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use hyper_util::rt::TokioIo;
use meds_controld::api::{Credentials, Limits, router};
use meds_controld::core::Controller;
use meds_controld::grpc::{AdminService, SyncService};
use meds_proto::ListKind;
use meds_proto::pb::{self, admin_client::AdminClient, sync_client::SyncClient};
use serde_json::{Value, json};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt as _;

const USER: &str = "admin";
const PASS: &str = "pw";

async fn serve(controller: Arc<Controller>) -> (tempfile::TempDir, Channel) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(pb::sync_server::SyncServer::new(SyncService::new(
                Arc::clone(&controller),
            )))
            .add_service(pb::admin_server::AdminServer::new(AdminService::new(
                controller,
            )))
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
    let channel = Endpoint::try_from("http://meds.invalid")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let p = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(p).await?)) }
        }))
        .await
        .unwrap();
    (dir, channel)
}

struct FakeDataplane {
    tx: tokio::sync::mpsc::Sender<pb::DataplaneMessage>,
    rx: tonic::Streaming<pb::ControllerMessage>,
}

impl FakeDataplane {
    async fn connect(ch: Channel, observer: bool) -> FakeDataplane {
        let (tx, out) = tokio::sync::mpsc::channel(16);
        tx.send(pb::DataplaneMessage {
            msg: Some(pb::dataplane_message::Msg::Hello(pb::Hello {
                version: "test".into(),
                queues: vec![0],
                pid: 1,
                observer,
                ..pb::Hello::default()
            })),
        })
        .await
        .unwrap();
        let rx = SyncClient::new(ch)
            .stream(ReceiverStream::new(out))
            .await
            .unwrap()
            .into_inner();
        FakeDataplane { tx, rx }
    }

    /// The next explain request (update chunks are skipped).
    async fn next_explain(&mut self) -> pb::ExplainRequest {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.rx.message())
                .await
                .expect("a message within 5 s")
                .unwrap()
                .expect("stream open");
            if let Some(pb::controller_message::Msg::Explain(r)) = msg.msg {
                return r;
            }
        }
    }

    async fn send(&self, msg: pb::dataplane_message::Msg) {
        self.tx
            .send(pb::DataplaneMessage { msg: Some(msg) })
            .await
            .unwrap();
    }

    /// Answer explain requests with [`answer`] until the stream ends.
    fn answer_forever(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let Ok(Some(msg)) = self.rx.message().await else {
                    return;
                };
                if let Some(pb::controller_message::Msg::Explain(r)) = msg.msg {
                    self.send(pb::dataplane_message::Msg::Explain(answer(&r)))
                        .await;
                }
            }
        })
    }
}

/// What a dataplane blocking 203.0.113.0/24 would answer.
fn answer(r: &pb::ExplainRequest) -> pb::ExplainResponse {
    let blocked = r.source.len() == 4 && r.source[..3] == [203, 0, 113];
    let step =
        |list: &str, outcome: pb::ExplainOutcome, detail: &str, verdict: &str, reason: &str| {
            pb::ExplainStep {
                filter: "ip".into(),
                list: list.into(),
                outcome: outcome as i32,
                detail: detail.into(),
                verdict: verdict.into(),
                reason: reason.into(),
            }
        };
    let (steps, verdict, filter, reason) = if blocked {
        (
            vec![
                step("whitelist", pb::ExplainOutcome::NoMatch, "", "", ""),
                step(
                    "blacklist",
                    pb::ExplainOutcome::Match,
                    "203.0.113.0/24",
                    "drop",
                    "BlackList",
                ),
                step("firehol", pb::ExplainOutcome::NotReached, "", "", ""),
            ],
            "drop",
            "ip",
            "BlackList",
        )
    } else {
        (
            vec![
                step("whitelist", pb::ExplainOutcome::NoMatch, "", "", ""),
                step("blacklist", pb::ExplainOutcome::NoMatch, "", "", ""),
                step("firehol", pb::ExplainOutcome::Skipped, "empty list", "", ""),
            ],
            "accept",
            "empty",
            "default",
        )
    };
    pb::ExplainResponse {
        id: r.id,
        steps,
        verdict: verdict.into(),
        filter: filter.into(),
        reason: reason.into(),
        generation: 7,
        offload: format!("port {} sni {:?} dns {:?}", r.port, r.sni, r.dns),
        ..pb::ExplainResponse::default()
    }
}

fn rest(controller: &Arc<Controller>, limits: Limits) -> axum::Router {
    router(
        Arc::clone(controller),
        Credentials::new(USER, PASS).unwrap(),
        limits,
    )
}

fn get(uri: &str) -> Request<Body> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    Request::get(uri)
        .header(header::AUTHORIZATION, format!("Basic {token}"))
        .body(Body::empty())
        .unwrap()
}

async fn get_json(router: &axum::Router, uri: &str) -> (StatusCode, Value) {
    let response = router.clone().oneshot(get(uri)).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// Eventually true, polling every 10 ms for up to 5 s.
async fn eventually(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn explain_round_trip_over_admin_grpc_and_rest() {
    let ctl = Controller::new_for_tests();
    let (_dir, ch) = serve(Arc::clone(&ctl)).await;
    let dp = FakeDataplane::connect(ch.clone(), false).await;
    eventually(|| ctl.dataplane().connected, "dataplane connected").await;
    let _answering = dp.answer_forever();

    let mut admin = AdminClient::new(ch);
    let r = admin
        .explain(pb::ExplainQuery {
            ip: "203.0.113.7".into(),
            port: 443,
            sni: "WWW.Bad.Example".into(),
            ..pb::ExplainQuery::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.verdict.as_str(), r.reason.as_str()),
        ("drop", "BlackList")
    );
    assert_eq!(r.steps[1].outcome, pb::ExplainOutcome::Match as i32);
    // the dataplane received the validated, canonical query
    assert_eq!(r.offload, "port 443 sni \"www.bad.example\" dns []");

    let api = rest(&ctl, Limits::default());
    let (status, body) = get_json(
        &api,
        "/v1/explain/198.51.100.9?port=53&dns=a.example,b.example&dns=c.example",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({
            "ip": "198.51.100.9",
            "generation": 7,
            "steps": [
                {"filter":"ip","list":"whitelist","outcome":"no_match","detail":"","verdict":"","reason":""},
                {"filter":"ip","list":"blacklist","outcome":"no_match","detail":"","verdict":"","reason":""},
                {"filter":"ip","list":"firehol","outcome":"skipped","detail":"empty list","verdict":"","reason":""}
            ],
            "verdict": "accept",
            "filter": "empty",
            "reason": "default",
            "offload": "port 53 sni \"\" dns [\"a.example\", \"b.example\", \"c.example\"]"
        })
    );
    let (status, body) = get_json(&api, "/v1/explain/203.0.113.7").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["steps"][1]["outcome"], "match");
    assert_eq!(body["steps"][2]["outcome"], "not_reached");
}

#[tokio::test]
async fn explain_names_the_stored_entry_behind_a_merged_prefix() {
    let ctl = Controller::new_for_tests();
    // Two adjacent entries: the dataplane's prefix set merges them into 203.0.113.0/24.
    let halves: Vec<meds_proto::Entry> = ["203.0.113.0/25", "203.0.113.128/25"]
        .iter()
        .map(|p| meds_proto::Entry::Prefix(p.parse().unwrap()))
        .collect();
    ctl.add(ListKind::IpBlock, halves, false).await.unwrap();
    let (_dir, ch) = serve(Arc::clone(&ctl)).await;
    let mut dp = FakeDataplane::connect(ch.clone(), false).await;
    eventually(|| ctl.dataplane().connected, "dataplane connected").await;
    let admin = AdminClient::new(ch);
    for (generation, want) in [
        // The generation the controller holds: the stored entry replaces the merged block.
        (
            ctl.generation(),
            "203.0.113.7 is in 203.0.113.0/25 (stored entry)",
        ),
        // Another generation: the dataplane's own text stays.
        (ctl.generation() + 1, "203.0.113.0/24"),
    ] {
        let call = tokio::spawn({
            let mut admin = admin.clone();
            async move {
                admin
                    .explain(pb::ExplainQuery {
                        ip: "203.0.113.7".into(),
                        ..pb::ExplainQuery::default()
                    })
                    .await
            }
        });
        let request = dp.next_explain().await;
        let mut response = answer(&request);
        response.generation = generation;
        dp.send(pb::dataplane_message::Msg::Explain(response)).await;
        let r = call.await.unwrap().unwrap().into_inner();
        assert_eq!(r.steps[1].detail, want, "generation {generation}");
        // Steps that did not match are left as they were.
        assert_eq!(r.steps[0].detail, "");
    }
}

#[tokio::test]
async fn explain_validation_names_the_field() {
    let ctl = Controller::new_for_tests();
    let (_dir, ch) = serve(Arc::clone(&ctl)).await;
    let mut admin = AdminClient::new(ch);
    let err = admin
        .explain(pb::ExplainQuery {
            ip: "203.0.113.7".into(),
            ja3: "nothex".into(),
            ..pb::ExplainQuery::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("ja3: "), "{}", err.message());
    let api = rest(&ctl, Limits::default());
    for (uri, want) in [
        ("/v1/explain/300.1.1.1", "ip: "),
        ("/v1/explain/10.0.0.0/8", "ip: "),
        ("/v1/explain/203.0.113.7?port=65536", "port: "),
        ("/v1/explain/203.0.113.7?sni=a%20b.com", "sni: "),
        ("/v1/explain/203.0.113.7?dns=ok.example,*.x", "dns[1]: "),
        ("/v1/explain/203.0.113.7?ja4=t13", "ja4: "),
        ("/v1/explain/203.0.113.7?bogus=1", "unknown parameter"),
    ] {
        let (status, body) = get_json(&api, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(msg.starts_with(want), "{uri}: {msg}");
    }
}

#[tokio::test]
async fn explain_without_an_enforcing_dataplane_is_unavailable() {
    let ctl = Controller::new_for_tests();
    let (_dir, ch) = serve(Arc::clone(&ctl)).await;
    // an observer (e.g. replay) does not count
    let _observer = FakeDataplane::connect(ch.clone(), true).await;
    let mut admin = AdminClient::new(ch);
    let query = pb::ExplainQuery {
        ip: "203.0.113.7".into(),
        ..pb::ExplainQuery::default()
    };
    let err = admin.explain(query).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let (status, body) = get_json(&rest(&ctl, Limits::default()), "/v1/explain/203.0.113.7").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no enforcing dataplane")
    );
}

#[tokio::test]
async fn an_unanswered_explain_times_out_and_a_refusal_is_internal() {
    let ctl = Controller::new_for_tests();
    let (_dir, ch) = serve(Arc::clone(&ctl)).await;
    let mut dp = FakeDataplane::connect(ch.clone(), false).await;
    eventually(|| ctl.dataplane().connected, "dataplane connected").await;
    let api = rest(&ctl, Limits::default());

    // never answered: 504 after the 2 s timeout (not much later)
    let started = Instant::now();
    let (status, body) = get_json(&api, "/v1/explain/203.0.113.7").await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let unanswered = dp.next_explain().await;
    // and over gRPC: DEADLINE_EXCEEDED
    let mut admin = AdminClient::new(ch);
    let query = pb::ExplainQuery {
        ip: "203.0.113.7".into(),
        ..pb::ExplainQuery::default()
    };
    let err = admin.explain(query.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    let _ = dp.next_explain().await;
    // a late answer is ignored
    dp.send(pb::dataplane_message::Msg::Explain(answer(&unanswered)))
        .await;

    // refused by the dataplane: INTERNAL / 500 with its text
    let asking = tokio::spawn(async move { admin.explain(query).await });
    let r = dp.next_explain().await;
    dp.send(pb::dataplane_message::Msg::Explain(pb::ExplainResponse {
        id: r.id,
        error: "source: 5 bytes".into(),
        ..pb::ExplainResponse::default()
    }))
    .await;
    let err = asking.await.unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal);
    assert!(
        err.message().contains("source: 5 bytes"),
        "{}",
        err.message()
    );
    let rest_call = {
        let api = api.clone();
        tokio::spawn(async move { get_json(&api, "/v1/explain/203.0.113.8").await })
    };
    let r = dp.next_explain().await;
    dp.send(pb::dataplane_message::Msg::Explain(pb::ExplainResponse {
        id: r.id,
        error: "nope".into(),
        ..pb::ExplainResponse::default()
    }))
    .await;
    let (status, body) = rest_call.await.unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
}

fn event(last: u8) -> pb::DropEvent {
    pb::DropEvent {
        time_unix_ms: 1_764_383_400_000 + u64::from(last),
        source: vec![203, 0, 113, last],
        source_port: 40_000,
        destination_port: 443,
        protocol: 6,
        filter: "ip".into(),
        reason: "BlackList".into(),
        ..pb::DropEvent::default()
    }
}

#[tokio::test]
async fn events_reach_grpc_and_rest_followers_and_invalid_ones_are_dropped() {
    let ctl = Controller::new_for_tests();
    let (_dir, ch) = serve(Arc::clone(&ctl)).await;
    let dp = FakeDataplane::connect(ch.clone(), false).await;
    eventually(|| ctl.dataplane().connected, "dataplane connected").await;

    // two recent ones first (one invalid: a 5-byte source)
    let mut bad = event(99);
    bad.source.push(1);
    dp.send(pb::dataplane_message::Msg::Events(pb::EventBatch {
        events: vec![event(1), bad, event(2)],
        suppressed: 0,
    }))
    .await;
    eventually(|| ctl.events().invalid() == 1, "invalid event counted").await;

    let mut admin = AdminClient::new(ch);
    let mut follow = admin
        .events(pb::EventsRequest {
            follow: true,
            recent: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let first = follow.message().await.unwrap().unwrap();
    let sources: Vec<u8> = first.events.iter().map(|e| e.source[3]).collect();
    assert_eq!(
        sources,
        [1, 2],
        "recent, oldest first, the invalid one dropped"
    );

    // a REST follower that outlives the router's request timeout
    let api = rest(
        &ctl,
        Limits {
            request_timeout: Duration::from_millis(200),
            ..Limits::default()
        },
    );
    let response = api
        .clone()
        .oneshot(get("/v1/events?follow=true&recent=1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/x-ndjson"
    );
    let mut body = response.into_body().into_data_stream();
    let recent = body.next().await.unwrap().unwrap();
    let line: Value = serde_json::from_slice(&recent).unwrap();
    assert_eq!(line["source"], "203.0.113.2");
    tokio::time::sleep(Duration::from_millis(400)).await;

    // new events (with not-sampled drops) reach both followers
    dp.send(pb::dataplane_message::Msg::Events(pb::EventBatch {
        events: vec![event(3)],
        suppressed: 5,
    }))
    .await;
    let next = tokio::time::timeout(Duration::from_secs(5), follow.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((next.events.len(), next.suppressed), (1, 5));
    assert_eq!(next.events[0].source, vec![203, 0, 113, 3]);
    let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("the stream was not cut by the request timeout")
        .unwrap()
        .unwrap();
    let text = String::from_utf8(chunk.to_vec()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0], json!({"suppressed": 5}));
    assert_eq!(
        lines[1],
        json!({"time":"2025-11-29T02:30:00.003Z","source":"203.0.113.3","source_port":40000,
               "destination_port":443,"protocol":"tcp","filter":"ip","reason":"BlackList",
               "queue":0})
    );

    // shutdown ends both streams
    ctl.events().close();
    let end = tokio::time::timeout(Duration::from_secs(5), follow.message())
        .await
        .unwrap()
        .unwrap();
    assert!(end.is_none());
    let end = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .unwrap();
    assert!(end.is_none());

    // without follow: the recent ones, then the end
    let (status, _) = {
        let response = api
            .clone()
            .oneshot(get("/v1/events?recent=2"))
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let sources: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["source"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(sources, ["203.0.113.2", "203.0.113.3"]);
        (status, ())
    };
    assert_eq!(status, StatusCode::OK);
}

/// Replays `fuzz/corpus/event_batch` (the `event_batch` fuzz target's framing) so that a
/// crash found by fuzzing stays fixed.
#[test]
fn event_batch_corpus() {
    use prost::Message;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/event_batch");
    let mut kept = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let hub = meds_controld::events::EventHub::new(8);
        for part in data.split(|b| *b == 0xff).take(4) {
            if let Ok(batch) = pb::EventBatch::decode(part) {
                let total = batch.events.len();
                let accepted = hub.publish(batch);
                assert_eq!(
                    accepted.events + accepted.invalid + accepted.over_limit,
                    total
                );
                kept += accepted.events;
            }
        }
    }
    assert!(kept > 0, "the seeds hold valid events");
}
