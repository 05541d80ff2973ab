//! The sync and admin gRPC services over a real Unix socket, with a scripted dataplane client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use meds_controld::core::Controller;
use meds_controld::grpc::{AdminService, SyncService};
use meds_proto::pb::{self, admin_client::AdminClient, sync_client::SyncClient};
use meds_proto::sync::Stager;
use meds_proto::{Cidr, ListKind};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::transport::{Channel, Endpoint};

async fn serve(controller: Arc<Controller>) -> (tempfile::TempDir, std::path::PathBuf) {
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
    (dir, path)
}

async fn channel(path: std::path::PathBuf) -> Channel {
    Endpoint::try_from("http://meds.invalid")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let p = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(p).await?)) }
        }))
        .await
        .unwrap()
}

fn c(s: &str) -> Cidr {
    s.parse().unwrap()
}

struct FakeDataplane {
    tx: tokio::sync::mpsc::Sender<pb::DataplaneMessage>,
    rx: tonic::Streaming<pb::ControllerMessage>,
    stager: Stager,
}

impl FakeDataplane {
    async fn connect(ch: Channel) -> FakeDataplane {
        let (tx, out) = tokio::sync::mpsc::channel(16);
        tx.send(pb::DataplaneMessage {
            msg: Some(pb::dataplane_message::Msg::Hello(pb::Hello {
                version: "test".into(),
                applied_generation: 0,
                queues: vec![3],
                pid: 1,
            })),
        })
        .await
        .unwrap();
        let rx = SyncClient::new(ch)
            .stream(ReceiverStream::new(out))
            .await
            .unwrap()
            .into_inner();
        FakeDataplane {
            tx,
            rx,
            stager: Stager::new(),
        }
    }

    async fn next_update(&mut self) -> meds_proto::sync::Update {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.rx.message())
                .await
                .expect("update within 5 s")
                .unwrap()
                .expect("stream open");
            let Some(pb::controller_message::Msg::Update(chunk)) = msg.msg else {
                panic!("unexpected message")
            };
            if let Some(u) = self.stager.push(&chunk).unwrap() {
                return u;
            }
        }
    }

    async fn ack(&self, generation: u64) {
        self.tx
            .send(pb::DataplaneMessage {
                msg: Some(pb::dataplane_message::Msg::Ack(pb::Ack { generation })),
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn snapshot_then_deltas_then_acks_make_changes_applied() {
    let ctl = Controller::new_for_tests();
    let (_dir, path) = serve(Arc::clone(&ctl)).await;
    let ch = channel(path).await;
    let mut dp = FakeDataplane::connect(ch.clone()).await;

    let snap = dp.next_update().await;
    assert!(snap.full);
    assert_eq!(snap.generation, ctl.generation());
    assert!(
        snap.lists[&ListKind::IpAllow]
            .add
            .contains(&c("10.0.0.0/8"))
    );
    dp.ack(snap.generation).await;

    let mut admin = AdminClient::new(ch);
    // The add waits for the ack, which our fake sends after seeing the delta.
    let add = tokio::spawn({
        let mut admin = admin.clone();
        async move {
            admin
                .add_entries(pb::ModifyEntriesRequest {
                    list: pb::ListKind::IpBlock as i32,
                    entries: vec!["203.0.113.7".into(), "2001:db8::/64".into()],
                    wait_applied: true,
                })
                .await
                .unwrap()
                .into_inner()
        }
    });
    let delta = dp.next_update().await;
    assert!(!delta.full);
    assert_eq!(delta.generation, snap.generation + 1);
    assert_eq!(
        delta.lists[&ListKind::IpBlock].add,
        vec![c("203.0.113.7"), c("2001:db8::/64")]
    );
    dp.ack(delta.generation).await;
    let resp = add.await.unwrap();
    assert!(resp.applied);
    assert_eq!(resp.changed, 2);

    let status = admin
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.dataplane_connected);
    assert_eq!(status.applied_generation, delta.generation);
    assert_eq!(status.dataplane_queues, vec![3]);

    // A bad entry is refused with INVALID_ARGUMENT naming it; nothing changes.
    let err = admin
        .add_entries(pb::ModifyEntriesRequest {
            list: pb::ListKind::IpBlock as i32,
            entries: vec!["203.0.113.8".into(), "300.1.1.1".into()],
            wait_applied: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("entries[1]") && err.message().contains("300.1.1.1"));
    assert_eq!(ctl.list(ListKind::IpBlock).len(), 2);

    // Disconnecting is noticed.
    drop(dp);
    for _ in 0..100 {
        if !ctl.status().dataplane_connected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!ctl.status().dataplane_connected);
}

#[tokio::test]
async fn an_ack_for_a_generation_never_sent_closes_the_stream() {
    let ctl = Controller::new_for_tests();
    let (_dir, path) = serve(Arc::clone(&ctl)).await;
    let mut dp = FakeDataplane::connect(channel(path).await).await;
    let snap = dp.next_update().await;
    dp.ack(snap.generation + 10).await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if !ctl.status().dataplane_connected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(end.is_ok(), "controller kept a lying dataplane connected");
    assert_eq!(ctl.status().applied_generation, 0);
}

#[tokio::test]
async fn a_stream_must_start_with_hello() {
    let ctl = Controller::new_for_tests();
    let (_dir, path) = serve(Arc::clone(&ctl)).await;
    let (tx, out) = tokio::sync::mpsc::channel(4);
    tx.send(pb::DataplaneMessage {
        msg: Some(pb::dataplane_message::Msg::Ack(pb::Ack { generation: 1 })),
    })
    .await
    .unwrap();
    let err = SyncClient::new(channel(path).await)
        .stream(ReceiverStream::new(out))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(!ctl.status().dataplane_connected);
}

#[tokio::test]
async fn large_snapshots_arrive_in_bounded_chunks() {
    let ctl = Controller::new_for_tests();
    let many: Vec<Cidr> = (0..20_000u32)
        .map(|i| Cidr::host(std::net::IpAddr::V4((0xC633_0000 + i).into())))
        .collect();
    ctl.add(ListKind::IpBlock, many.clone(), false)
        .await
        .unwrap();
    let (_dir, path) = serve(Arc::clone(&ctl)).await;
    let mut dp = FakeDataplane::connect(channel(path).await).await;
    let snap = dp.next_update().await;
    assert_eq!(snap.lists[&ListKind::IpBlock].add.len(), 20_000);
}
