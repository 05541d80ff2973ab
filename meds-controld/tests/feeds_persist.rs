//! The last good copies and run-time settings survive a restart: a controller re-created on
//! the same SQLite file, with the feed server down, enforces every persisted feed before any
//! fetch. Disabling a feed at run time takes its entries out of force at once; enabling it
//! puts its copy back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod feeds_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use feeds_support::{FeedServer, Reply, config, eventually, fixture, status, texts, update};
use meds_controld::core::Controller;
use meds_controld::feeds::parse::Limits;
use meds_controld::feeds::{Feeds, FeedsConfig, Format};
use meds_controld::store::Store;
use meds_proto::{Entry, ListKind};

async fn on_file(db: &Path, cfg: FeedsConfig) -> (Arc<Controller>, Arc<Feeds>) {
    let controller = Controller::new(Store::open(db).unwrap()).unwrap();
    let feeds = Feeds::new(Arc::clone(&controller), cfg).unwrap();
    feeds.load_persisted().await.unwrap();
    (controller, feeds)
}

fn set(controller: &Controller, list: ListKind) -> BTreeSet<Entry> {
    controller.list(list).into_iter().collect()
}

fn parsed(format: Format, body: &[u8]) -> BTreeSet<Entry> {
    format.parse(body, &Limits::default()).unwrap().entries
}

#[tokio::test]
async fn a_restart_without_network_enforces_the_persisted_copies_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("meds.db");
    let server = FeedServer::start().await;
    let firehol = fixture("firehol_level1.netset");
    let v4 = fixture("spamhaus_drop.txt");
    let v6 = fixture("spamhaus_dropv6.txt");
    server.set(
        "/firehol",
        Reply::Ok {
            body: firehol.clone(),
            etag: Some("\"f1\"".into()),
        },
    );
    server.ok("/v4", &v4);
    server.ok("/v6", &v6);
    let steven = fixture("stevenblack_hosts");
    let ja3 = fixture("sslbl_ja3_fingerprints.csv");
    server.ok("/hosts", &steven);
    server.ok("/ja3", &ja3);
    let urls = [
        ("firehol_level1", server.url("/firehol")),
        ("spamhaus_drop", server.url("/v4")),
        ("spamhaus_drop_v6", server.url("/v6")),
        ("stevenblack", server.url("/hosts")),
        ("sslbl_ja3", server.url("/ja3")),
    ];
    let mut union = parsed(Format::SpamhausDrop, &v4);
    union.extend(parsed(Format::SpamhausDrop, &v6));
    let first_success;
    {
        let (controller, feeds) = on_file(&db, config(&urls)).await;
        let statuses = feeds.update(&[]).await.unwrap();
        assert!(
            statuses.iter().all(|s| s.last_error.is_empty()),
            "{statuses:?}"
        );
        assert_eq!(set(&controller, ListKind::FeedSpamhaus), union);
        first_success = status(&feeds, "firehol_level1").last_success_unix;
    }
    server.stop();

    let (controller, feeds) = on_file(&db, config(&urls)).await;
    // Before any fetch: every feed is in force from its stored copy.
    assert_eq!(
        set(&controller, ListKind::FeedFireHol),
        parsed(Format::FireHol, &firehol)
    );
    assert_eq!(set(&controller, ListKind::FeedSpamhaus), union);
    assert_eq!(
        set(&controller, ListKind::FeedStevenBlack),
        parsed(Format::Hosts, &steven)
    );
    assert_eq!(
        set(&controller, ListKind::FeedSslblJa3),
        parsed(Format::SslblJa3, &ja3)
    );
    assert_eq!(status(&feeds, "stevenblack").entries, 111);
    assert_eq!(status(&feeds, "sslbl_ja3").entries, 98);
    let st = status(&feeds, "firehol_level1");
    assert_eq!(st.entries, parsed(Format::FireHol, &firehol).len() as u64);
    assert_eq!(st.last_success_unix, first_success);
    assert_eq!(st.failures, 0);
    assert!(controller.list(ListKind::FeedFeodo).is_empty());

    // The server is down: the update fails, is counted, and changes nothing.
    let generation = controller.generation();
    let st = update(&feeds, "firehol_level1").await;
    assert_eq!(st.failures, 1);
    assert!(st.last_error.contains("fetch failed"), "{}", st.last_error);
    assert_eq!(controller.generation(), generation);
    assert_eq!(set(&controller, ListKind::FeedSpamhaus), union);
}

#[tokio::test]
async fn a_stored_copy_the_parser_refuses_is_left_out_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("meds.db");
    let server = FeedServer::start().await;
    server.ok("/feodo", &fixture("feodo_ipblocklist.txt"));
    let urls = [("feodo", server.url("/feodo"))];
    {
        let (_c, feeds) = on_file(&db, config(&urls)).await;
        update(&feeds, "feodo").await;
    }
    // Damage the stored body behind the controller's back.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE feed_state SET body = x'3c68746d6c3e' WHERE name = 'feodo'",
        [],
    )
    .unwrap();
    drop(conn);
    let (controller, feeds) = on_file(&db, config(&urls)).await;
    assert!(controller.list(ListKind::FeedFeodo).is_empty());
    let st = status(&feeds, "feodo");
    assert!(st.last_error.starts_with("stored copy refused"), "{st:?}");
    assert_eq!(st.entries, 0);
    // The next fetch restores it.
    let st = update(&feeds, "feodo").await;
    assert_eq!(st.last_error, "");
    assert!(!controller.list(ListKind::FeedFeodo).is_empty());
}

#[tokio::test]
async fn disabling_at_run_time_removes_entries_and_enabling_restores_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("meds.db");
    let server = FeedServer::start().await;
    let firehol = fixture("firehol_level1.netset");
    let v4 = fixture("spamhaus_drop.txt");
    let v6 = fixture("spamhaus_dropv6.txt");
    server.ok("/firehol", &firehol);
    server.ok("/v4", &v4);
    server.ok("/v6", &v6);
    let steven = fixture("stevenblack_hosts");
    let ja3 = fixture("sslbl_ja3_fingerprints.csv");
    server.ok("/hosts", &steven);
    server.ok("/ja3", &ja3);
    let urls = [
        ("firehol_level1", server.url("/firehol")),
        ("spamhaus_drop", server.url("/v4")),
        ("spamhaus_drop_v6", server.url("/v6")),
        ("stevenblack", server.url("/hosts")),
        ("sslbl_ja3", server.url("/ja3")),
    ];
    let (controller, feeds) = on_file(&db, config(&urls)).await;
    feeds.update(&[]).await.unwrap();
    let v4_set = parsed(Format::SpamhausDrop, &v4);
    let mut union = v4_set.clone();
    union.extend(parsed(Format::SpamhausDrop, &v6));

    // Disabling one of two sources leaves the other's entries.
    let st = feeds
        .configure("spamhaus_drop_v6", Some(false), None)
        .await
        .unwrap();
    assert!(!st.enabled);
    assert_eq!(st.next_update_unix, 0);
    assert_eq!(set(&controller, ListKind::FeedSpamhaus), v4_set);
    // Disabling a single-source feed empties its list.
    feeds
        .configure("firehol_level1", Some(false), None)
        .await
        .unwrap();
    assert!(controller.list(ListKind::FeedFireHol).is_empty());
    // The same for a hosts feed.
    let steven_set = parsed(Format::Hosts, &steven);
    assert_eq!(set(&controller, ListKind::FeedStevenBlack), steven_set);
    feeds
        .configure("stevenblack", Some(false), None)
        .await
        .unwrap();
    assert!(controller.list(ListKind::FeedStevenBlack).is_empty());
    // A disabled feed is not fetched by a round.
    let before = server.seen("/firehol").len();
    let statuses = feeds.update(&[]).await.unwrap();
    assert_eq!(
        statuses.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["spamhaus_drop", "sslbl_ja3"]
    );
    assert_eq!(server.seen("/firehol").len(), before);

    // The setting survives a restart and wins over the flags.
    drop(feeds);
    drop(controller);
    let (controller, feeds) = on_file(&db, config(&urls)).await;
    assert!(!status(&feeds, "firehol_level1").enabled);
    assert!(controller.list(ListKind::FeedFireHol).is_empty());
    assert!(controller.list(ListKind::FeedStevenBlack).is_empty());
    assert_eq!(set(&controller, ListKind::FeedSpamhaus), v4_set);
    assert_eq!(
        set(&controller, ListKind::FeedSslblJa3),
        parsed(Format::SslblJa3, &ja3)
    );
    // Enabling the hosts feed puts its stored copy back before any fetch.
    server.set("/hosts", Reply::Status(503, Vec::new()));
    feeds
        .configure("stevenblack", Some(true), None)
        .await
        .unwrap();
    assert_eq!(set(&controller, ListKind::FeedStevenBlack), steven_set);

    // Enabling puts the stored copy back at once, then fetches.
    server.set("/v6", Reply::Status(503, Vec::new()));
    let before = server.seen("/v6").len();
    let st = feeds
        .configure("spamhaus_drop_v6", Some(true), None)
        .await
        .unwrap();
    assert!(st.enabled);
    assert_eq!(set(&controller, ListKind::FeedSpamhaus), union);
    eventually("the enabled feed is fetched", || {
        status(&feeds, "spamhaus_drop_v6").failures == 1
    })
    .await;
    assert!(server.seen("/v6").len() > before);
    assert_eq!(set(&controller, ListKind::FeedSpamhaus), union);
}

#[tokio::test]
async fn a_url_override_at_run_time_is_validated_persisted_and_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("meds.db");
    let server = FeedServer::start().await;
    let old = fixture("feodo_ipblocklist.txt");
    let mirror = fixture("feodo_ipblocklist_recommended.txt");
    server.ok("/feodo", &old);
    server.ok("/mirror", &mirror);
    let urls = [("feodo", server.url("/feodo"))];
    let (controller, feeds) = on_file(&db, config(&urls)).await;
    update(&feeds, "feodo").await;

    for bad in ["ftp://x.example/feodo", "not a url", "file://relative/path"] {
        let err = feeds.configure("feodo", None, Some(bad)).await.unwrap_err();
        assert!(
            matches!(err, meds_controld::feeds::FeedsError::Url(_)),
            "{bad}: {err}"
        );
    }
    let err = feeds
        .configure("nope", Some(true), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown feed"), "{err}");

    let st = feeds
        .configure("feodo", None, Some(&server.url("/mirror")))
        .await
        .unwrap();
    assert_eq!(st.url, server.url("/mirror"));
    eventually("the new URL is fetched", || {
        set(&controller, ListKind::FeedFeodo) == parsed(Format::Feodo, &mirror)
    })
    .await;

    drop(feeds);
    drop(controller);
    let (controller, feeds) = on_file(&db, config(&urls)).await;
    assert_eq!(status(&feeds, "feodo").url, server.url("/mirror"));
    assert!(texts(&controller, ListKind::FeedFeodo).contains(&"8.8.8.8/32".to_string()));
    // An empty URL goes back to the flag's URL.
    let st = feeds.configure("feodo", None, Some("")).await.unwrap();
    assert_eq!(st.url, server.url("/feodo"));
}
