//! Feed updates against a local HTTP server: a good copy goes in force; every kind of bad
//! download is refused, counted and leaves the last good copy in force; 304 keeps it as a
//! success; several sources of one list are unioned; file:// URLs work.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod feeds_support;

use std::collections::BTreeSet;
use std::time::Duration;

use feeds_support::{
    FeedServer, Reply, config, eventually, feeds, fixture, status, texts, update, zipped,
};
use meds_controld::feeds::parse::Limits;
use meds_controld::feeds::{FeedsConfig, Format};
use meds_proto::{Entry, ListKind};

const PATH: &str = "/firehol_level1.netset";

fn parsed(format: Format, body: &[u8]) -> BTreeSet<Entry> {
    format.parse(body, &Limits::default()).unwrap().entries
}

#[tokio::test]
async fn bad_downloads_keep_the_last_good_copy_and_are_counted() {
    let server = FeedServer::start().await;
    let good = fixture("firehol_level1.netset");
    server.set(
        PATH,
        Reply::Ok {
            body: good.clone(),
            etag: Some("\"v1\"".into()),
        },
    );
    let mut cfg = config(&[("firehol_level1", server.url(PATH))]);
    cfg.fetch.timeout = Duration::from_millis(700);
    cfg.fetch.max_body_bytes = 64 * 1024;
    let (controller, feeds) = feeds(cfg).await;
    assert!(controller.list(ListKind::FeedFireHol).is_empty());

    let first = update(&feeds, "firehol_level1").await;
    let expected: Vec<Entry> = parsed(Format::FireHol, &good).into_iter().collect();
    assert!(expected.len() > 50, "fixture too small: {}", expected.len());
    assert_eq!(controller.list(ListKind::FeedFireHol), expected);
    assert_eq!(first.entries, expected.len() as u64);
    assert_eq!(first.failures, 0);
    assert_eq!(first.last_error, "");
    assert!(first.last_success_unix > 0);
    assert_eq!(first.list, "firehol");
    let ua = &server.seen(PATH)[0].headers["user-agent"];
    assert!(ua.starts_with("meds/") && ua.ends_with("(+feeds)"), "{ua}");

    // Half the list plus one line: a shrink of exactly 50% - 1 entry is allowed later; here
    // a quarter is not.
    let quarter: Vec<u8> = expected[..expected.len() / 4]
        .iter()
        .map(|e| format!("{e}\n"))
        .collect::<String>()
        .into_bytes();
    let html = b"<!DOCTYPE html>\n<html><body><h1>Rate limited</h1></body></html>\n".to_vec();
    let garbage = b"hello world\nthis is not a feed\n\xff\xfe\n".to_vec();
    // A few lines that look like entries inside a body that is mostly something else.
    let mostly_garbage: Vec<u8> = std::iter::once("203.0.113.9\n".to_string())
        .chain((0..200).map(|i| format!("<tr><td>row {i}</td></tr>\n")))
        .collect::<String>()
        .into_bytes();
    let big: Vec<u8> = (0..5000u32)
        .map(|i| format!("10.{}.{}.0/24\n", i / 256, i % 256))
        .collect::<String>()
        .into_bytes();
    // (reply, needle in last_error, requests the attempt may make)
    let cases: Vec<(Reply, &str, usize)> = vec![
        (
            Reply::Status(404, b"not found".to_vec()),
            "HTTP status 404",
            1,
        ),
        (
            Reply::Status(403, b"forbidden".to_vec()),
            "HTTP status 403",
            1,
        ),
        (Reply::Status(500, b"oops".to_vec()), "HTTP status 500", 3),
        (Reply::Status(503, good.clone()), "HTTP status 503", 3),
        (
            Reply::Truncated {
                declared: good.len(),
                body: good[..good.len() / 2].to_vec(),
            },
            "fetch failed",
            3,
        ),
        (
            Reply::Ok {
                body: Vec::new(),
                etag: None,
            },
            "no entries",
            1,
        ),
        (
            Reply::Ok {
                body: garbage,
                etag: None,
            },
            "no entries",
            1,
        ),
        (
            Reply::Ok {
                body: mostly_garbage,
                etag: None,
            },
            "do not parse",
            1,
        ),
        (
            Reply::Ok {
                body: html,
                etag: None,
            },
            "HTML",
            1,
        ),
        (
            Reply::Ok {
                body: b"1.2.3.4\n\0\0\0".to_vec(),
                etag: None,
            },
            "binary",
            1,
        ),
        (
            Reply::Slow(Duration::from_secs(5), good.clone()),
            "no complete answer within",
            1,
        ),
        (
            Reply::Ok {
                body: quarter,
                etag: None,
            },
            "shrink of more than 50%",
            1,
        ),
        (
            Reply::Ok {
                body: big,
                etag: None,
            },
            "larger than the limit",
            1,
        ),
    ];
    let mut failures = 0;
    for (reply, needle, max_requests) in cases {
        let label = format!("{reply:?}").chars().take(60).collect::<String>();
        let before = server.seen(PATH).len();
        server.set(PATH, reply);
        let st = update(&feeds, "firehol_level1").await;
        failures += 1;
        assert_eq!(controller.list(ListKind::FeedFireHol), expected, "{label}");
        assert_eq!(st.failures, failures, "{label}");
        assert!(st.last_error.contains(needle), "{label}: {}", st.last_error);
        assert_eq!(st.entries, expected.len() as u64, "{label}");
        let requests = server.seen(PATH).len() - before;
        assert!(
            (1..=max_requests).contains(&requests),
            "{label}: {requests} requests"
        );
    }

    // 304 with the ETag of the copy: a success, nothing changes, the validator was sent.
    server.set(
        PATH,
        Reply::Ok {
            body: good.clone(),
            etag: Some("\"v1\"".into()),
        },
    );
    let generation = controller.generation();
    let st = update(&feeds, "firehol_level1").await;
    let last = server.seen(PATH).pop().unwrap();
    assert_eq!(
        last.headers.get("if-none-match").map(String::as_str),
        Some("\"v1\"")
    );
    assert_eq!(st.last_error, "");
    assert_eq!(st.failures, failures);
    assert_eq!(controller.generation(), generation);
    assert_eq!(controller.list(ListKind::FeedFireHol), expected);

    // A new version replaces the list; losing exactly half is still allowed.
    let half: String = expected[..expected.len() / 2]
        .iter()
        .map(|e| format!("{e}\n"))
        .collect();
    let keep = expected.len() / 2;
    let mut body = half.clone();
    if keep * 2 < expected.len() {
        body.push_str("203.0.113.0/24\n");
    }
    server.set(
        PATH,
        Reply::Ok {
            body: body.clone().into_bytes(),
            etag: Some("\"v2\"".into()),
        },
    );
    let st = update(&feeds, "firehol_level1").await;
    assert_eq!(st.last_error, "", "{st:?}");
    let now: Vec<Entry> = parsed(Format::FireHol, body.as_bytes())
        .into_iter()
        .collect();
    assert_eq!(controller.list(ListKind::FeedFireHol), now);
    assert_eq!(st.entries, now.len() as u64);
    assert!(controller.generation() > generation);
}

#[tokio::test]
async fn retries_recover_from_a_transient_error_within_one_round() {
    let server = FeedServer::start().await;
    let mut cfg = config(&[("feodo", server.url("/feodo"))]);
    cfg.fetch.backoff = Duration::from_millis(300);
    cfg.fetch.max_backoff = Duration::from_millis(300);
    let (controller, feeds) = feeds(cfg).await;
    server.set("/feodo", Reply::Status(502, Vec::new()));
    let body = fixture("feodo_ipblocklist.txt");
    let fixed = body.clone();
    let flip = async {
        eventually("first attempt seen", || !server.seen("/feodo").is_empty()).await;
        server.ok("/feodo", &fixed);
    };
    let (st, ()) = tokio::join!(update(&feeds, "feodo"), flip);
    assert_eq!(st.failures, 0, "{st:?}");
    assert_eq!(st.last_error, "");
    assert!(server.seen("/feodo").len() >= 2);
    let expected: Vec<Entry> = parsed(Format::Feodo, &body).into_iter().collect();
    assert_eq!(controller.list(ListKind::FeedFeodo), expected);
}

#[tokio::test]
async fn spamhaus_v4_and_v6_are_unioned_and_asn_drop_and_iplocate_fill_their_lists() {
    let server = FeedServer::start().await;
    let v4 = fixture("spamhaus_drop.txt");
    let v6 = fixture("spamhaus_dropv6.txt");
    let asn = fixture("spamhaus_asndrop.json");
    let ipasn = zipped(&fixture("iplocate_ip-to-asn.sample.csv"));
    server.ok("/drop.txt", &v4);
    server.ok("/dropv6.txt", &v6);
    server.ok("/asndrop.json", &asn);
    server.ok("/ip-to-asn.csv.zip", &ipasn);
    let (controller, feeds) = feeds(config(&[
        ("spamhaus_drop", server.url("/drop.txt")),
        ("spamhaus_drop_v6", server.url("/dropv6.txt")),
        ("spamhaus_asndrop", server.url("/asndrop.json")),
        ("iplocate", server.url("/ip-to-asn.csv.zip")),
    ]))
    .await;
    let statuses = feeds.update(&[]).await.unwrap();
    let names: Vec<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "spamhaus_drop",
            "spamhaus_drop_v6",
            "spamhaus_asndrop",
            "iplocate"
        ]
    );
    assert!(
        statuses.iter().all(|s| s.last_error.is_empty()),
        "{statuses:?}"
    );

    let mut union = parsed(Format::SpamhausDrop, &v4);
    let v6_entries = parsed(Format::SpamhausDrop, &v6);
    union.extend(v6_entries.iter().cloned());
    let got: BTreeSet<Entry> = controller
        .list(ListKind::FeedSpamhaus)
        .into_iter()
        .collect();
    assert_eq!(got, union);
    assert!(got.iter().any(|e| e.to_string() == "1.10.16.0/20"));
    assert!(got.iter().any(|e| e.to_string() == "2001:678:254::/48"));
    assert_eq!(
        status(&feeds, "spamhaus_drop_v6").entries,
        v6_entries.len() as u64
    );

    let asns: BTreeSet<Entry> = controller.list(ListKind::FeedAsnDrop).into_iter().collect();
    assert_eq!(asns, parsed(Format::AsnDrop, &asn));
    assert!(asns.iter().any(|e| e.to_string() == "932"));
    let rows = texts(&controller, ListKind::IpAsn);
    assert!(
        rows.contains(&"1.0.0.0/24 13335 us".to_string()),
        "{rows:?}"
    );

    // One source failing leaves the union, including its own last good part, in force.
    server.set("/dropv6.txt", Reply::Status(500, Vec::new()));
    let st = update(&feeds, "spamhaus_drop_v6").await;
    assert_eq!(st.failures, 1);
    let got: BTreeSet<Entry> = controller
        .list(ListKind::FeedSpamhaus)
        .into_iter()
        .collect();
    assert_eq!(got, union);
}

#[tokio::test]
async fn hosts_and_ja3_feeds_fill_their_lists_and_refuse_bad_downloads() {
    let server = FeedServer::start().await;
    let steven = fixture("stevenblack_hosts");
    let swc = fixture("someonewhocares_hosts_zero");
    let ja3 = fixture("sslbl_ja3_fingerprints.csv");
    server.ok("/StevenBlack/hosts", &steven);
    server.ok("/hosts/zero/hosts", &swc);
    server.ok("/ja3_fingerprints.csv", &ja3);
    let (controller, feeds) = feeds(config(&[
        ("stevenblack", server.url("/StevenBlack/hosts")),
        ("someonewhocares", server.url("/hosts/zero/hosts")),
        ("sslbl_ja3", server.url("/ja3_fingerprints.csv")),
    ]))
    .await;
    let statuses = feeds.update(&[]).await.unwrap();
    let got: Vec<(&str, &str, u64, &str)> = statuses
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.list.as_str(),
                s.entries,
                s.last_error.as_str(),
            )
        })
        .collect();
    // Entry counts taken independently of the parsers (see feed_parsers_domains.rs).
    assert_eq!(
        got,
        [
            ("stevenblack", "stevenblack", 111, ""),
            ("someonewhocares", "someonewhocares", 34, ""),
            ("sslbl_ja3", "sslbl_ja3", 98, ""),
        ]
    );
    // (list, format, body, present, absent)
    type Case<'a> = (ListKind, Format, &'a [u8], &'a [&'a str], &'a [&'a str]);
    let cases: [Case; 3] = [
        (
            ListKind::FeedStevenBlack,
            Format::Hosts,
            &steven,
            &["n2019cov.000webhostapp.com", "www.prebid.adnxs.com"],
            &[
                "localhost",
                "localhost.localdomain",
                "local",
                "broadcasthost",
                "ip6-localhost",
                "0.0.0.0",
            ],
        ),
        (
            ListKind::FeedSomeoneWhoCares,
            Format::Hosts,
            &swc,
            &["goatse.cx", "www.shafou.com"],
            &["localhost", "local", "broadcasthost", "ip6-allnodes"],
        ),
        (
            ListKind::FeedSslblJa3,
            Format::SslblJa3,
            &ja3,
            &["b386946a5a44d1ddcc843bc75336dfce"],
            &["ja3_md5"],
        ),
    ];
    for (list, format, body, present, absent) in cases {
        let entries = controller.list(list);
        assert_eq!(
            entries,
            parsed(format, body).into_iter().collect::<Vec<_>>(),
            "{list}"
        );
        let text = texts(&controller, list);
        for want in present {
            assert!(text.iter().any(|t| t == want), "{list}: missing {want}");
        }
        for unwanted in absent {
            assert!(
                !text.iter().any(|t| t == unwanted),
                "{list}: has {unwanted}"
            );
        }
    }
    // A subdomain of a feed entry is covered; a look-alike is not.
    let check = |name: &str| {
        controller
            .check(
                ListKind::FeedSomeoneWhoCares,
                &Entry::parse_user(meds_proto::EntryKind::Domain, name).unwrap(),
            )
            .found
    };
    assert!(check("cdn.goatse.cx"));
    assert!(!check("notgoatse.cx"));

    // Every refusal rule applies to the new feeds; the last good copy stays in force.
    let html = b"<!DOCTYPE html>\n<html><body>blocked</body></html>\n".to_vec();
    let hosts_garbage: Vec<u8> = std::iter::once("0.0.0.0 real.example\n".to_string())
        .chain((0..50).map(|i| format!("line {i} of a page\n")))
        .collect::<String>()
        .into_bytes();
    let ja3_garbage: Vec<u8> =
        std::iter::once("b386946a5a44d1ddcc843bc75336dfce,a,b,c\n".to_string())
            .chain((0..50).map(|i| format!("row{i},x,y,z\n")))
            .collect::<String>()
            .into_bytes();
    let few_hosts = b"0.0.0.0 a.example\n0.0.0.0 b.example\n".to_vec();
    let few_ja3 = b"b386946a5a44d1ddcc843bc75336dfce,2017-07-14,2019-07-27,Dridex\n".to_vec();
    let only_header =
        b"127.0.0.1 localhost\n::1 ip6-localhost ip6-loopback\n255.255.255.255 broadcasthost\n"
            .to_vec();
    // (feed, path, list, reply, needle in last_error)
    let refusals: Vec<(&str, &str, ListKind, Reply, &str)> = vec![
        (
            "stevenblack",
            "/StevenBlack/hosts",
            ListKind::FeedStevenBlack,
            Reply::Status(404, steven.clone()),
            "HTTP status 404",
        ),
        (
            "stevenblack",
            "/StevenBlack/hosts",
            ListKind::FeedStevenBlack,
            Reply::Ok {
                body: html.clone(),
                etag: None,
            },
            "HTML",
        ),
        (
            "stevenblack",
            "/StevenBlack/hosts",
            ListKind::FeedStevenBlack,
            Reply::Ok {
                body: hosts_garbage.clone(),
                etag: None,
            },
            "do not parse",
        ),
        (
            "stevenblack",
            "/StevenBlack/hosts",
            ListKind::FeedStevenBlack,
            Reply::Ok {
                body: few_hosts.clone(),
                etag: None,
            },
            "shrink of more than 50%",
        ),
        (
            "someonewhocares",
            "/hosts/zero/hosts",
            ListKind::FeedSomeoneWhoCares,
            Reply::Ok {
                body: only_header,
                etag: None,
            },
            "no entries",
        ),
        (
            "someonewhocares",
            "/hosts/zero/hosts",
            ListKind::FeedSomeoneWhoCares,
            Reply::Ok {
                body: few_hosts,
                etag: None,
            },
            "shrink of more than 50%",
        ),
        (
            "someonewhocares",
            "/hosts/zero/hosts",
            ListKind::FeedSomeoneWhoCares,
            Reply::Truncated {
                declared: swc.len(),
                body: swc[..swc.len() / 2].to_vec(),
            },
            "fetch failed",
        ),
        (
            "sslbl_ja3",
            "/ja3_fingerprints.csv",
            ListKind::FeedSslblJa3,
            Reply::Ok {
                body: html,
                etag: None,
            },
            "HTML",
        ),
        (
            "sslbl_ja3",
            "/ja3_fingerprints.csv",
            ListKind::FeedSslblJa3,
            Reply::Ok {
                body: ja3_garbage,
                etag: None,
            },
            "do not parse",
        ),
        (
            "sslbl_ja3",
            "/ja3_fingerprints.csv",
            ListKind::FeedSslblJa3,
            Reply::Ok {
                body: few_ja3,
                etag: None,
            },
            "shrink of more than 50%",
        ),
        (
            "sslbl_ja3",
            "/ja3_fingerprints.csv",
            ListKind::FeedSslblJa3,
            Reply::Status(500, Vec::new()),
            "HTTP status 500",
        ),
    ];
    for (feed, path, list, reply, needle) in refusals {
        let before = controller.list(list);
        let failures = status(&feeds, feed).failures;
        let label = format!("{feed} {reply:?}")
            .chars()
            .take(80)
            .collect::<String>();
        server.set(path, reply);
        let st = update(&feeds, feed).await;
        assert_eq!(st.failures, failures + 1, "{label}");
        assert!(st.last_error.contains(needle), "{label}: {}", st.last_error);
        assert_eq!(controller.list(list), before, "{label}");
    }
}

#[tokio::test]
async fn file_urls_are_read_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror feodo.txt");
    let body = fixture("feodo_ipblocklist_recommended.txt");
    std::fs::write(&path, &body).unwrap();
    let url = format!("file://{}", path.display()).replace(' ', "%20");
    let (controller, feeds) = feeds(config(&[("feodo", url.clone())])).await;
    let st = update(&feeds, "feodo").await;
    assert_eq!(st.last_error, "");
    assert_eq!(st.url, url);
    let list = texts(&controller, ListKind::FeedFeodo);
    assert!(list.contains(&"8.8.8.8/32".to_string()), "{list:?}");

    // A missing file is a failure that keeps the copy.
    std::fs::remove_file(&path).unwrap();
    let st = update(&feeds, "feodo").await;
    assert_eq!(st.failures, 1);
    assert!(st.last_error.contains("reading"), "{}", st.last_error);
    assert!(texts(&controller, ListKind::FeedFeodo).contains(&"8.8.8.8/32".to_string()));
}

#[tokio::test]
async fn naming_unknown_or_disabled_feeds_is_refused_before_fetching() {
    let server = FeedServer::start().await;
    let (_controller, feeds) = feeds(config(&[("feodo", server.url("/feodo"))])).await;
    let err = feeds
        .update(&["nope".into()])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown feed \"nope\"") && err.contains("firehol_level1"),
        "{err}"
    );
    let err = feeds
        .update(&["iplocate".into()])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("iplocate is disabled"), "{err}");
    let err = feeds
        .update(&["feodo".into(), "nope".into()])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
    assert!(server.seen("/feodo").is_empty());
}

#[tokio::test]
async fn the_loop_runs_a_first_round_at_once_and_stops_on_shutdown() {
    let server = FeedServer::start().await;
    server.ok("/feodo", &fixture("feodo_ipblocklist.txt"));
    let cfg = FeedsConfig {
        interval: Duration::from_secs(3600),
        ..config(&[("feodo", server.url("/feodo"))])
    };
    let (controller, feeds) = feeds(cfg).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(std::sync::Arc::clone(&feeds).run(async {
        let _ = stop_rx.await;
    }));
    eventually("first round", || {
        !controller.list(ListKind::FeedFeodo).is_empty()
    })
    .await;
    let st = status(&feeds, "feodo");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 3500..=now + 3700).contains(&st.next_update_unix),
        "{st:?}"
    );
    assert_eq!(status(&feeds, "iplocate").next_update_unix, 0);
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("loop stops")
        .unwrap();
    assert_eq!(status(&feeds, "feodo").next_update_unix, 0);
    assert_eq!(server.seen("/feodo").len(), 1);
}
