//! The sync and admin gRPC services over a real Unix socket, with a scripted dataplane client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use meds_controld::core::Controller;
use meds_controld::grpc::{AdminService, SyncService};
use meds_proto::pb::{self, admin_client::AdminClient, sync_client::SyncClient};
use meds_proto::sync::Stager;
use meds_proto::{Cidr, Entry, ListKind};
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

fn c(s: &str) -> Entry {
    Entry::Prefix(s.parse().unwrap())
}

struct FakeDataplane {
    tx: tokio::sync::mpsc::Sender<pb::DataplaneMessage>,
    rx: tonic::Streaming<pb::ControllerMessage>,
    stager: Stager,
}

impl FakeDataplane {
    /// A dataplane that reports no settings (like one older than the field).
    async fn connect(ch: Channel) -> FakeDataplane {
        FakeDataplane::connect_with(ch, None).await
    }

    async fn connect_with(ch: Channel, settings: Option<pb::DataplaneSettings>) -> FakeDataplane {
        let (tx, out) = tokio::sync::mpsc::channel(16);
        tx.send(pb::DataplaneMessage {
            msg: Some(pb::dataplane_message::Msg::Hello(pb::Hello {
                version: "test".into(),
                applied_generation: 0,
                queues: vec![3],
                pid: 1,
                observer: false,
                settings,
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
    let many: Vec<Entry> = (0..20_000u32)
        .map(|i| Entry::Prefix(Cidr::host(std::net::IpAddr::V4((0xC633_0000 + i).into()))))
        .collect();
    ctl.add(ListKind::IpBlock, many.clone(), false)
        .await
        .unwrap();
    let (_dir, path) = serve(Arc::clone(&ctl)).await;
    let mut dp = FakeDataplane::connect(channel(path).await).await;
    let snap = dp.next_update().await;
    assert_eq!(snap.lists[&ListKind::IpBlock].add.len(), 20_000);
}

fn asn(n: u32) -> Entry {
    Entry::Asn(meds_proto::Asn::new(n).unwrap())
}

fn ip_asn(prefix: &str, asn: u32, country: &str) -> Entry {
    Entry::IpAsn(meds_proto::IpAsn {
        prefix: prefix.parse().unwrap(),
        asn: (asn != 0).then(|| meds_proto::Asn::new(asn).unwrap()),
        country: (!country.is_empty())
            .then(|| meds_proto::CountryCode::from_feed(country).unwrap()),
    })
}

#[tokio::test]
async fn admin_edits_countries_and_asns_and_reports_an_address() {
    let ctl = Controller::new_for_tests();
    let (_dir, path) = serve(Arc::clone(&ctl)).await;
    let mut admin = AdminClient::new(channel(path).await);
    let modify = |list: pb::ListKind, entries: &[&str]| pb::ModifyEntriesRequest {
        list: list as i32,
        entries: entries.iter().map(|s| s.to_string()).collect(),
        wait_applied: false,
    };
    let list = |list: pb::ListKind| pb::ListEntriesRequest { list: list as i32 };
    let check = |list: pb::ListKind, query: &str| pb::CheckEntryRequest {
        list: list as i32,
        query: query.to_string(),
    };

    let r = admin
        .add_entries(modify(pb::ListKind::CountryBlock, &["FR", "de", "fr"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.changed, 2);
    let r = admin
        .add_entries(modify(pb::ListKind::AsnBlock, &["AS64497", "64496"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.changed, 2);
    let entries = |r: pb::ListEntriesResponse| r.entries;
    assert_eq!(
        entries(
            admin
                .list_entries(list(pb::ListKind::CountryBlock))
                .await
                .unwrap()
                .into_inner()
        ),
        ["de", "fr"]
    );
    assert_eq!(
        entries(
            admin
                .list_entries(list(pb::ListKind::AsnBlock))
                .await
                .unwrap()
                .into_inner()
        ),
        ["64496", "64497"]
    );
    // (list, query, found, matches)
    let cases = [
        (pb::ListKind::CountryBlock, "Fr", true, vec!["fr"]),
        (pb::ListKind::CountryBlock, "us", false, vec![]),
        (pb::ListKind::AsnBlock, "as64496", true, vec!["64496"]),
        (pb::ListKind::AsnBlock, "64498", false, vec![]),
        (pb::ListKind::FeedAsnDrop, "64496", false, vec![]),
    ];
    for (kind, query, found, matches) in cases {
        let r = admin
            .check_entry(check(kind, query))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (r.found, r.matches),
            (found, matches.iter().map(|s| s.to_string()).collect()),
            "{kind:?} {query}"
        );
    }

    // Refusals: INVALID_ARGUMENT naming the element, nothing changed.
    let g = ctl.generation();
    let refusals = [
        (
            admin
                .add_entries(modify(pb::ListKind::CountryBlock, &["nl", "zz"]))
                .await,
            "entries[1]",
        ),
        (
            admin
                .remove_entries(modify(pb::ListKind::AsnBlock, &["AS0"]))
                .await,
            "entries[0]",
        ),
        (
            admin
                .add_entries(modify(pb::ListKind::FeedFirehol, &["203.0.113.0/24"]))
                .await,
            "firehol",
        ),
        (
            admin
                .add_entries(modify(pb::ListKind::FeedAsnDrop, &["64496"]))
                .await,
            "spamhaus_asndrop",
        ),
        (
            admin
                .add_entries(modify(pb::ListKind::IpAsn, &["203.0.113.0/24"]))
                .await,
            "entries[0]",
        ),
    ];
    for (result, needle) in refusals {
        let err = result.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains(needle),
            "{needle}: {}",
            err.message()
        );
    }
    let err = admin
        .check_entry(check(pb::ListKind::CountryBlock, "xx"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(ctl.generation(), g);
    assert_eq!(ctl.list_len(ListKind::CountryBlock), 2);

    // CheckIp combines everything.
    ctl.replace_feed(
        ListKind::IpAsn,
        [
            ip_asn("203.0.113.0/24", 64496, "fr"),
            ip_asn("203.0.0.0/16", 64511, "nl"),
        ]
        .into_iter()
        .collect(),
    )
    .await
    .unwrap();
    ctl.replace_feed(
        ListKind::FeedFeodo,
        [c("203.0.113.7")].into_iter().collect(),
    )
    .await
    .unwrap();
    ctl.replace_feed(ListKind::FeedAsnDrop, [asn(64496)].into_iter().collect())
        .await
        .unwrap();
    let r = admin
        .check_ip(pb::CheckIpRequest {
            ip: " 203.0.113.7 ".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r,
        pb::CheckIpResponse {
            ip: "203.0.113.7".into(),
            lists: vec![pb::ListMatch {
                list: "feodo".into(),
                entry: "203.0.113.7/32".into(),
            }],
            asn: 64496,
            country: "fr".into(),
            network: "203.0.113.0/24".into(),
            country_blocked: true,
            asn_lists: vec!["asns".into(), "spamhaus_asndrop".into()],
        }
    );
    let r = admin
        .check_ip(pb::CheckIpRequest {
            ip: "192.0.2.1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r,
        pb::CheckIpResponse {
            ip: "192.0.2.1".into(),
            ..Default::default()
        }
    );
    for bad in ["", "not-an-ip", "203.0.113.0/24", "300.1.1.1"] {
        let err = admin
            .check_ip(pb::CheckIpRequest { ip: bad.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
    }

    // Status reports every list.
    let status = admin
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let sizes: Vec<(i32, u64)> = status.lists.iter().map(|s| (s.list, s.entries)).collect();
    let want: Vec<(i32, u64)> = ListKind::ALL
        .iter()
        .map(|k| (k.to_wire() as i32, ctl.list_len(*k) as u64))
        .collect();
    assert_eq!(sizes, want);
    assert_eq!(want.len(), ListKind::ALL.len());
    assert_eq!(want.len(), 16);
}

#[tokio::test]
async fn admin_edits_domain_and_fingerprint_lists() {
    let ctl = Controller::new_for_tests();
    let (_dir, path) = serve(Arc::clone(&ctl)).await;
    let mut admin = AdminClient::new(channel(path).await);
    let modify = |list: pb::ListKind, entries: &[&str]| pb::ModifyEntriesRequest {
        list: list as i32,
        entries: entries.iter().map(|s| s.to_string()).collect(),
        wait_applied: false,
    };
    let ja3 = "b386946a5a44d1ddcc843bc75336dfce";
    let ja4 = "t13d1516h2_8daaf6152771_02713d6af862";
    // (list, entries, changed, listed afterwards)
    let adds: [(pb::ListKind, &[&str], u32, &[&str]); 4] = [
        (
            pb::ListKind::DomainBlock,
            &["Bad.COM.", "www.bad.com", "bücher.example", "bad.com"],
            3,
            &["bad.com", "www.bad.com", "xn--bcher-kva.example"],
        ),
        (
            pb::ListKind::DomainAllow,
            &["good.example"],
            1,
            &["good.example"],
        ),
        (
            pb::ListKind::Ja3Block,
            &["B386946A5A44D1DDCC843BC75336DFCE"],
            1,
            &[ja3],
        ),
        (pb::ListKind::Ja4Block, &[ja4, ja4], 1, &[ja4]),
    ];
    for (kind, entries, changed, listed) in adds {
        let r = admin
            .add_entries(modify(kind, entries))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.changed, changed, "{kind:?}");
        let got = admin
            .list_entries(pb::ListEntriesRequest { list: kind as i32 })
            .await
            .unwrap()
            .into_inner()
            .entries;
        assert_eq!(got, listed, "{kind:?}");
    }
    // (list, query, found, matches): domains match their parents, most specific first, and
    // are label-aware; fingerprints are exact.
    let cases: [(pb::ListKind, &str, bool, &[&str]); 9] = [
        (
            pb::ListKind::DomainBlock,
            "a.www.bad.com",
            true,
            &["www.bad.com", "bad.com"],
        ),
        (pb::ListKind::DomainBlock, "BAD.com.", true, &["bad.com"]),
        (pb::ListKind::DomainBlock, "badge.com", false, &[]),
        (
            pb::ListKind::DomainBlock,
            "Bücher.example",
            true,
            &["xn--bcher-kva.example"],
        ),
        (pb::ListKind::DomainAllow, "bad.com", false, &[]),
        (
            pb::ListKind::Ja3Block,
            "B386946A5A44D1DDCC843BC75336DFCE",
            true,
            &[ja3],
        ),
        (
            pb::ListKind::Ja3Block,
            "b386946a5a44d1ddcc843bc75336dfcf",
            false,
            &[],
        ),
        (pb::ListKind::Ja4Block, ja4, true, &[ja4]),
        (pb::ListKind::FeedSslblJa3, ja3, false, &[]),
    ];
    for (kind, query, found, matches) in cases {
        let r = admin
            .check_entry(pb::CheckEntryRequest {
                list: kind as i32,
                query: query.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.found, found, "{kind:?} {query}");
        assert_eq!(r.matches, matches, "{kind:?} {query}");
    }

    // Removal is exact: `bad.com` goes, `www.bad.com` stays.
    let r = admin
        .remove_entries(modify(pb::ListKind::DomainBlock, &["bad.com"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.changed, 1);
    assert_eq!(
        ctl.list(ListKind::DomainBlock),
        vec![
            Entry::parse_user(meds_proto::EntryKind::Domain, "www.bad.com").unwrap(),
            Entry::parse_user(meds_proto::EntryKind::Domain, "xn--bcher-kva.example").unwrap(),
        ]
    );

    // Refusals: INVALID_ARGUMENT naming the element or the list; nothing changed.
    let g = ctl.generation();
    let refusals: [(pb::ListKind, &[&str], &str); 8] = [
        (
            pb::ListKind::DomainBlock,
            &["ok.example", "*"],
            "entries[1]: \"*\": wildcards",
        ),
        (
            pb::ListKind::DomainAllow,
            &["bad .com"],
            "entries[0]: \"bad .com\": character ' '",
        ),
        (pb::ListKind::DomainBlock, &[""], "entries[0]: empty value"),
        (
            pb::ListKind::Ja3Block,
            &["xyz"],
            "entries[0]: \"xyz\" is not a JA3 hash",
        ),
        (
            pb::ListKind::Ja4Block,
            &["t13d1516h2"],
            "is not a JA4 fingerprint",
        ),
        (
            pb::ListKind::FeedStevenblack,
            &["ads.example"],
            "stevenblack list is filled by its feed",
        ),
        (
            pb::ListKind::FeedSomeonewhocares,
            &["ads.example"],
            "someonewhocares list is filled by its feed",
        ),
        (
            pb::ListKind::FeedSslblJa3,
            &[ja3],
            "sslbl_ja3 list is filled by its feed",
        ),
    ];
    for (kind, entries, needle) in refusals {
        for remove in [false, true] {
            let result = if remove {
                admin.remove_entries(modify(kind, entries)).await
            } else {
                admin.add_entries(modify(kind, entries)).await
            };
            let err = result.unwrap_err();
            assert_eq!(
                err.code(),
                tonic::Code::InvalidArgument,
                "{kind:?}: {err:?}"
            );
            assert!(
                err.message().contains(needle),
                "{needle}: {}",
                err.message()
            );
        }
    }
    let err = admin
        .check_entry(pb::CheckEntryRequest {
            list: pb::ListKind::DomainBlock as i32,
            query: "bad .com".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().starts_with("query: \"bad .com\""),
        "{}",
        err.message()
    );
    assert_eq!(ctl.generation(), g);
}

#[tokio::test]
async fn feed_replacements_stream_only_the_difference() {
    let ctl = Controller::new_for_tests();
    ctl.add(
        ListKind::CountryBlock,
        vec![Entry::Country("fr".parse().unwrap())],
        false,
    )
    .await
    .unwrap();
    let (_dir, path) = serve(Arc::clone(&ctl)).await;
    let mut dp = FakeDataplane::connect(channel(path).await).await;
    let snap = dp.next_update().await;
    assert!(snap.full);
    assert_eq!(
        snap.lists[&ListKind::CountryBlock].add,
        vec![Entry::Country("fr".parse().unwrap())]
    );
    dp.ack(snap.generation).await;

    let base: std::collections::BTreeSet<Entry> = (0..10_000u32)
        .map(|i| Entry::Prefix(Cidr::host(std::net::IpAddr::V4((0xC633_0000 + i).into()))))
        .collect();
    ctl.replace_feed(ListKind::FeedFireHol, base.clone())
        .await
        .unwrap();
    let first = dp.next_update().await;
    assert!(!first.full);
    assert_eq!(first.generation, snap.generation + 1);
    assert_eq!(first.lists[&ListKind::FeedFireHol].add.len(), 10_000);

    // The same feed again publishes nothing; one more row publishes that row only.
    let same = ctl
        .replace_feed(ListKind::FeedFireHol, base.clone())
        .await
        .unwrap();
    assert!(same.changed.is_empty());
    let mut plus = base;
    plus.insert(c("203.0.113.0/24"));
    ctl.replace_feed(ListKind::FeedFireHol, plus).await.unwrap();
    let one = dp.next_update().await;
    assert_eq!(one.generation, first.generation + 1, "no update in between");
    assert_eq!(one.lists.len(), 1);
    assert_eq!(
        one.lists[&ListKind::FeedFireHol].add,
        vec![c("203.0.113.0/24")]
    );
    assert!(one.lists[&ListKind::FeedFireHol].remove.is_empty());
    assert_eq!(one.entries(), 1);
}

#[tokio::test]
async fn an_observer_gets_the_policy_without_replacing_the_dataplane() {
    let ctl = Controller::new_for_tests();
    let (_dir, path) = serve(Arc::clone(&ctl)).await;
    let ch = channel(path).await;
    let mut dp = FakeDataplane::connect(ch.clone()).await;
    let snap = dp.next_update().await;
    dp.ack(snap.generation).await;

    let (tx, out) = tokio::sync::mpsc::channel(4);
    tx.send(pb::DataplaneMessage {
        msg: Some(pb::dataplane_message::Msg::Hello(pb::Hello {
            version: "replay".into(),
            applied_generation: 0,
            queues: vec![],
            pid: 2,
            observer: true,
            // An observer's settings are not the dataplane's: never shown.
            settings: Some(pb::DataplaneSettings {
                fail_open: true,
                ..Default::default()
            }),
        })),
    })
    .await
    .unwrap();
    let mut rx = SyncClient::new(ch)
        .stream(ReceiverStream::new(out))
        .await
        .unwrap()
        .into_inner();
    let mut stager = Stager::new();
    let update = loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), rx.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Some(pb::controller_message::Msg::Update(chunk)) = msg.msg else {
            panic!("unexpected message")
        };
        if let Some(u) = stager.push(&chunk).unwrap() {
            break u;
        }
    };
    assert!(update.full);
    assert_eq!(update.generation, snap.generation);
    // An ack from the observer is ignored; the real dataplane stays the one in the status.
    tx.send(pb::DataplaneMessage {
        msg: Some(pb::dataplane_message::Msg::Ack(pb::Ack { generation: 999 })),
    })
    .await
    .unwrap();
    let status = ctl.status();
    assert!(status.dataplane_connected);
    assert_eq!(status.dataplane_version, "test");
    assert_eq!(status.applied_generation, snap.generation);
    assert_eq!(status.dataplane_settings, None);
}

/// Poll (bounded) until the controller's view of the dataplane satisfies `done`.
async fn eventually(ctl: &Controller, done: impl Fn(&meds_controld::core::Status) -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !done(&ctl.status()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the status changes within 5 s");
}

#[tokio::test]
async fn hello_settings_show_in_the_status_until_a_dataplane_without_them_connects() {
    let ctl = Controller::new_for_tests();
    let (_dir, path) = serve(Arc::clone(&ctl)).await;
    let ch = channel(path).await;
    let mut admin = AdminClient::new(ch.clone());
    let settings = pb::DataplaneSettings {
        fail_open: false,
        queue_bypass: true,
        offload: true,
        mark_trusted: 0x10_0000,
        mark_blocked: 0x20_0000,
        gso: false,
        recv_batch: 64,
        rate_limiter: true,
        rate_limiter_rate: 3000,
        rate_limiter_burst: 1500,
        rate_limiter_ipv6_prefix: 64,
        rate_limiter_cache_size: 100_000,
        readers: 2,
        queue_max_len: 4096,
        copy_range: 256,
    };

    // Before any dataplane: unknown.
    let status = admin
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.dataplane_settings, None);

    let mut dp = FakeDataplane::connect_with(ch.clone(), Some(settings)).await;
    dp.next_update().await;
    let status = admin
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.dataplane_connected);
    assert_eq!(status.dataplane_settings, Some(settings));
    // The REST view (the same Status, serialized) carries every field under its proto name.
    let rest = serde_json::to_value(ctl.status()).unwrap();
    assert_eq!(
        rest["dataplane_settings"],
        serde_json::json!({
            "fail_open": false,
            "queue_bypass": true,
            "offload": true,
            "mark_trusted": 0x10_0000,
            "mark_blocked": 0x20_0000,
            "gso": false,
            "recv_batch": 64,
            "rate_limiter": true,
            "rate_limiter_rate": 3000,
            "rate_limiter_burst": 1500,
            "rate_limiter_ipv6_prefix": 64,
            "rate_limiter_cache_size": 100_000,
            "readers": 2,
            "queue_max_len": 4096,
            "copy_range": 256,
        })
    );

    // Disconnected: the last dataplane's settings stay, like its version and queues.
    drop(dp);
    eventually(&ctl, |s| !s.dataplane_connected).await;
    let status = admin
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.dataplane_version, "test");
    assert_eq!(status.dataplane_settings, Some(settings));

    // A dataplane that reports none replaces them with unknown, not with the old ones.
    let mut old = FakeDataplane::connect(ch).await;
    old.next_update().await;
    eventually(&ctl, |s| s.dataplane_connected).await;
    let status = admin
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.dataplane_settings, None);
    assert_eq!(
        serde_json::to_value(ctl.status()).unwrap()["dataplane_settings"],
        serde_json::Value::Null
    );
}
