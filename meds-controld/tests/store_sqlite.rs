//! Component tests of the SQLite store on real files in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use meds_controld::store::{DEFAULT_ALLOWLIST, SCHEMA_VERSION, Store, StoreError};
use meds_proto::{Asn, Cidr, CountryCode, Entry, EntryKind, ListKind};
use rusqlite::Connection;

/// A prefix entry.
fn c(s: &str) -> Entry {
    Entry::Prefix(s.parse::<Cidr>().unwrap_or_else(|e| panic!("{s}: {e}")))
}

fn cs(list: &[&str]) -> Vec<Entry> {
    list.iter().map(|s| c(s)).collect()
}

fn set(list: &[&str]) -> BTreeSet<Entry> {
    list.iter().map(|s| c(s)).collect()
}

/// A country entry (user input form).
fn cc(s: &str) -> Entry {
    Entry::Country(
        s.parse::<CountryCode>()
            .unwrap_or_else(|e| panic!("{s}: {e}")),
    )
}

/// An ASN entry (user input form).
fn asn(s: &str) -> Entry {
    Entry::Asn(s.parse::<Asn>().unwrap_or_else(|e| panic!("{s}: {e}")))
}

fn db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meds.db");
    (dir, path)
}

/// The raw `prefix` column of `list`, in insertion order.
fn raw_rows(path: &Path, list: ListKind) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT prefix FROM ip_prefix WHERE list = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([list.name()], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_new_database_is_seeded_with_the_default_allowlist_at_generation_1() {
    for in_memory in [false, true] {
        let (_dir, path) = db();
        let store = if in_memory {
            Store::open_in_memory().unwrap()
        } else {
            Store::open(&path).unwrap()
        };
        let loaded = store.load().unwrap();
        assert_eq!(loaded.generation, 1, "in_memory={in_memory}");
        assert_eq!(loaded.lists[&ListKind::IpAllow], set(DEFAULT_ALLOWLIST));
        assert!(loaded.lists[&ListKind::IpBlock].is_empty());
        for kind in ListKind::ALL {
            assert!(loaded.lists.contains_key(&kind), "{kind} missing");
        }
        // IPv6 entries are there too (the original listed only IPv4).
        assert!(loaded.lists[&ListKind::IpAllow].contains(&c("fe80::/10")));
    }
}

#[test]
fn user_version_is_set_and_a_newer_schema_is_refused() {
    let (_dir, path) = db();
    drop(Store::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    match Store::open(&path) {
        Err(StoreError::SchemaTooNew {
            found, supported, ..
        }) => {
            assert_eq!(found, i64::from(SCHEMA_VERSION + 1));
            assert_eq!(supported, SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn emptying_the_allowlist_survives_a_restart_without_reseeding() {
    let (_dir, path) = db();
    let mut store = Store::open(&path).unwrap();
    let all = cs(DEFAULT_ALLOWLIST);
    let applied = store.remove(ListKind::IpAllow, &all).unwrap();
    assert_eq!(applied.changed.len(), DEFAULT_ALLOWLIST.len());
    assert_eq!(applied.generation, 2);
    drop(store);

    for _ in 0..2 {
        let store = Store::open(&path).unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.lists[&ListKind::IpAllow].is_empty());
        assert_eq!(loaded.generation, 2);
    }
}

#[test]
fn prefixes_are_stored_masked_and_canonical() {
    let (_dir, path) = db();
    let mut store = Store::open(&path).unwrap();
    let cases = [
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("203.0.113.7", "203.0.113.7/32"),
        ("2001:DB8:0:0::1/32", "2001:db8::/32"),
        ("2001:db8::1", "2001:db8::1/128"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ];
    let input: Vec<Entry> = cases.iter().map(|(i, _)| c(i)).collect();
    store.add(ListKind::IpBlock, &input).unwrap();
    let rows: BTreeSet<String> = raw_rows(&path, ListKind::IpBlock).into_iter().collect();
    let want: BTreeSet<String> = cases.iter().map(|(_, w)| w.to_string()).collect();
    assert_eq!(rows, want);
    // Removing by the canonical form removes what the unmasked form added (upstream W13).
    let applied = store.remove(ListKind::IpBlock, &[c("10.0.0.0/8")]).unwrap();
    assert_eq!(applied.changed, vec![c("10.0.0.0/8")]);
    drop(store);
    let loaded = Store::open(&path).unwrap().load().unwrap();
    assert!(!loaded.lists[&ListKind::IpBlock].contains(&c("10.0.0.0/8")));
}

#[test]
fn add_is_idempotent_and_deduplicates_its_input() {
    let mut store = Store::open_in_memory().unwrap();
    let first = store
        .add(
            ListKind::IpBlock,
            &cs(&[
                "203.0.113.7",
                "203.0.113.7/32",
                "2001:db8::/32",
                "2001:db8::1/32",
            ]),
        )
        .unwrap();
    assert_eq!(first.changed, cs(&["203.0.113.7/32", "2001:db8::/32"]));
    assert_eq!(first.generation, 2);

    let again = store
        .add(ListKind::IpBlock, &cs(&["203.0.113.7", "2001:db8::/32"]))
        .unwrap();
    assert!(again.changed.is_empty());
    assert_eq!(again.generation, 2, "no change, no new generation");

    // Partly new: only the new entry is a change; one generation step.
    let partly = store
        .add(ListKind::IpBlock, &cs(&["203.0.113.7", "198.51.100.0/24"]))
        .unwrap();
    assert_eq!(partly.changed, cs(&["198.51.100.0/24"]));
    assert_eq!(partly.generation, 3);

    let empty = store.add(ListKind::IpBlock, &[]).unwrap();
    assert!(empty.changed.is_empty());
    assert_eq!(empty.generation, 3);

    let loaded = store.load().unwrap();
    assert_eq!(
        loaded.lists[&ListKind::IpBlock],
        set(&["203.0.113.7/32", "198.51.100.0/24", "2001:db8::/32"])
    );
}

#[test]
fn lists_are_independent() {
    let mut store = Store::open_in_memory().unwrap();
    // 10.0.0.0/8 is on the seeded allowlist; adding it to the blocklist is a change there.
    let applied = store.add(ListKind::IpBlock, &cs(&["10.0.0.0/8"])).unwrap();
    assert_eq!(applied.changed, cs(&["10.0.0.0/8"]));
    let applied = store
        .remove(ListKind::IpAllow, &cs(&["10.0.0.0/8"]))
        .unwrap();
    assert_eq!(applied.changed, cs(&["10.0.0.0/8"]));
    let loaded = store.load().unwrap();
    assert!(loaded.lists[&ListKind::IpBlock].contains(&c("10.0.0.0/8")));
    assert!(!loaded.lists[&ListKind::IpAllow].contains(&c("10.0.0.0/8")));
}

#[test]
fn remove_takes_exactly_the_given_prefixes() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .add(
            ListKind::IpBlock,
            &cs(&[
                "203.0.113.0/24",
                "203.0.113.7",
                "203.0.0.0/16",
                "2001:db8::/48",
            ]),
        )
        .unwrap();
    let g = store.load().unwrap().generation;
    // (entries to remove, expected changed, expected remaining)
    let steps: [(&[&str], &[&str], &[&str]); 4] = [
        // Neither a covering nor a covered prefix is removed by a near miss.
        (
            &["203.0.113.0/25", "203.0.0.0/8", "2001:db8::/32"],
            &[],
            &[
                "203.0.113.0/24",
                "203.0.113.7/32",
                "203.0.0.0/16",
                "2001:db8::/48",
            ],
        ),
        (
            &["203.0.113.0/24"],
            &["203.0.113.0/24"],
            &["203.0.113.7/32", "203.0.0.0/16", "2001:db8::/48"],
        ),
        (
            &["2001:db8::/48", "2001:db8::/48", "203.0.113.7"],
            &["203.0.113.7/32", "2001:db8::/48"],
            &["203.0.0.0/16"],
        ),
        (&["203.0.113.0/24"], &[], &["203.0.0.0/16"]),
    ];
    let mut expected_generation = g;
    for (remove, changed, remaining) in steps {
        let applied = store.remove(ListKind::IpBlock, &cs(remove)).unwrap();
        assert_eq!(applied.changed, cs(changed), "removing {remove:?}");
        if !changed.is_empty() {
            expected_generation += 1;
        }
        assert_eq!(
            applied.generation, expected_generation,
            "removing {remove:?}"
        );
        assert_eq!(
            store.load().unwrap().lists[&ListKind::IpBlock],
            set(remaining),
            "after removing {remove:?}"
        );
    }
}

#[test]
fn generation_is_monotonic_across_reopen() {
    let (_dir, path) = db();
    let mut last = 0;
    for round in 0..4u8 {
        let mut store = Store::open(&path).unwrap();
        let at_open = store.load().unwrap().generation;
        assert!(at_open >= last, "round {round}: {at_open} < {last}");
        let entry = c(&format!("203.0.113.{round}"));
        let added = store
            .add(ListKind::IpBlock, std::slice::from_ref(&entry))
            .unwrap();
        assert_eq!(added.generation, at_open + 1);
        let removed = store.remove(ListKind::IpBlock, &[entry]).unwrap();
        assert_eq!(removed.generation, at_open + 2);
        last = removed.generation;
    }
    assert_eq!(last, 1 + 4 * 2);
}

#[test]
fn a_failing_statement_rolls_back_the_whole_call() {
    let (_dir, path) = db();
    let mut store = Store::open(&path).unwrap();
    store
        .add(ListKind::IpBlock, &cs(&["198.51.100.0/24", "203.0.113.1"]))
        .unwrap();
    let before = store.load().unwrap();

    // Inject failures from outside, as another writer of the file could.
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER fail_insert BEFORE INSERT ON ip_prefix
             WHEN NEW.prefix = '203.0.113.99/32'
             BEGIN SELECT RAISE(ABORT, 'injected insert failure'); END;
         CREATE TRIGGER fail_delete BEFORE DELETE ON ip_prefix
             WHEN OLD.prefix = '203.0.113.1/32'
             BEGIN SELECT RAISE(ABORT, 'injected delete failure'); END;",
    )
    .unwrap();
    drop(conn);

    // Entries sort before and after the failing one, so some inserts ran before the failure.
    let err = store
        .add(
            ListKind::IpBlock,
            &cs(&["192.0.2.1", "203.0.113.99", "2001:db8::1"]),
        )
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            StoreError::Write {
                list: ListKind::IpBlock,
                op: "add",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        text.contains("ip_block") && text.contains("meds.db"),
        "{text}"
    );
    assert_eq!(store.load().unwrap(), before);

    let err = store
        .remove(ListKind::IpBlock, &cs(&["198.51.100.0/24", "203.0.113.1"]))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Write { op: "remove", .. }),
        "{err:?}"
    );
    assert_eq!(store.load().unwrap(), before);

    // The store stays usable after a failed call.
    let ok = store.add(ListKind::IpBlock, &cs(&["192.0.2.1"])).unwrap();
    assert_eq!(ok.generation, before.generation + 1);
    drop(store);
    let reopened = Store::open(&path).unwrap().load().unwrap();
    assert_eq!(reopened.generation, before.generation + 1);
}

#[test]
fn a_second_connection_sees_committed_changes() {
    let (_dir, path) = db();
    let mut writer = Store::open(&path).unwrap();
    let reader = Store::open(&path).unwrap();
    writer
        .add(ListKind::IpBlock, &cs(&["2001:db8:1::/48"]))
        .unwrap();
    let loaded = reader.load().unwrap();
    assert_eq!(loaded.generation, 2);
    assert_eq!(loaded.lists[&ListKind::IpBlock], set(&["2001:db8:1::/48"]));
}

#[test]
fn opening_in_a_missing_directory_names_the_path() {
    let (dir, _) = db();
    let path = dir.path().join("no-such-dir").join("meds.db");
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::MissingDirectory { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("does not exist"), "{text}");
    assert!(!path.exists());
}

#[test]
fn opening_something_that_is_not_a_database_is_an_error() {
    let (_dir, path) = db();
    std::fs::write(
        &path,
        b"this is not an SQLite database, just some text long enough",
    )
    .unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(err.to_string().contains("meds.db"), "{err}");
    // A directory at the path is an error too, not a panic.
    let (dir, _) = db();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn a_corrupt_row_is_an_error_naming_the_row() {
    let (_dir, path) = db();
    drop(Store::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO ip_prefix (id, list, prefix, family, prefix_len)
         VALUES (777, 'ip_block', '300.1.1.1/32', 4, 32)",
        [],
    )
    .unwrap();
    drop(conn);
    let store = Store::open(&path).unwrap();
    match store.load() {
        Err(e @ StoreError::BadPrefixRow { id: 777, .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("row 777") && text.contains("300.1.1.1/32"),
                "{text}"
            );
        }
        other => panic!("expected BadPrefixRow, got {other:?}"),
    }
}

/// The raw `value` column of `list_entry` for `list`, in insertion order.
fn raw_entry_rows(path: &Path, list: ListKind) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT value FROM list_entry WHERE list = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([list.name()], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn countries_and_asns_are_stored_canonical_and_survive_a_restart() {
    let (_dir, path) = db();
    let mut store = Store::open(&path).unwrap();
    let loaded = store.load().unwrap();
    assert!(loaded.lists[&ListKind::CountryBlock].is_empty());
    assert!(loaded.lists[&ListKind::AsnBlock].is_empty());

    // Upper case in, lower case stored; AS64496 and 64496 are one entry.
    let added = store
        .add(
            ListKind::CountryBlock,
            &[cc("FR"), cc("de"), cc("fr"), cc("xk")],
        )
        .unwrap();
    assert_eq!(added.changed, vec![cc("de"), cc("fr"), cc("xk")]);
    assert_eq!(added.generation, 2);
    let added = store
        .add(
            ListKind::AsnBlock,
            &[asn("AS64496"), asn("64496"), asn("4294967294"), asn("as1")],
        )
        .unwrap();
    assert_eq!(
        added.changed,
        vec![asn("1"), asn("64496"), asn("4294967294")]
    );
    assert_eq!(added.generation, 3);

    let countries: BTreeSet<String> = raw_entry_rows(&path, ListKind::CountryBlock)
        .into_iter()
        .collect();
    assert_eq!(
        countries,
        ["de", "fr", "xk"].map(String::from).into_iter().collect()
    );
    let asns: BTreeSet<String> = raw_entry_rows(&path, ListKind::AsnBlock)
        .into_iter()
        .collect();
    assert_eq!(
        asns,
        ["1", "64496", "4294967294"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    drop(store);

    let loaded = Store::open(&path).unwrap().load().unwrap();
    assert_eq!(loaded.generation, 3);
    assert_eq!(
        loaded.lists[&ListKind::CountryBlock],
        [cc("de"), cc("fr"), cc("xk")].into_iter().collect()
    );
    assert_eq!(
        loaded.lists[&ListKind::AsnBlock],
        [asn("1"), asn("64496"), asn("4294967294")]
            .into_iter()
            .collect()
    );
    // Prefix lists are untouched by entries of other lists.
    assert!(loaded.lists[&ListKind::IpBlock].is_empty());
}

const JA3: &str = "b386946a5a44d1ddcc843bc75336dfce";
const JA4: &str = "t13d1516h2_8daaf6152771_02713d6af862";

fn dom(s: &str) -> Entry {
    Entry::parse_user(EntryKind::Domain, s).unwrap()
}

fn ja3(s: &str) -> Entry {
    Entry::parse_user(EntryKind::Ja3, s).unwrap()
}

fn ja4(s: &str) -> Entry {
    Entry::parse_user(EntryKind::Ja4, s).unwrap()
}

#[test]
fn domains_and_fingerprints_are_stored_canonical_and_survive_a_restart() {
    let (_dir, path) = db();
    let mut store = Store::open(&path).unwrap();
    // (list, entries as typed, changed, raw rows stored)
    type Step = (ListKind, Vec<Entry>, Vec<Entry>, &'static [&'static str]);
    let steps: Vec<Step> = vec![
        (
            ListKind::DomainBlock,
            vec![
                dom("Bad.COM."),
                dom("www.bad.com"),
                dom("Bücher.example"),
                dom("bad.com"),
            ],
            vec![
                dom("bad.com"),
                dom("www.bad.com"),
                dom("xn--bcher-kva.example"),
            ],
            &["bad.com", "www.bad.com", "xn--bcher-kva.example"],
        ),
        // The same name in the other list is another entry.
        (
            ListKind::DomainAllow,
            vec![dom("bad.com")],
            vec![dom("bad.com")],
            &["bad.com"],
        ),
        (
            ListKind::Ja3Block,
            vec![ja3("B386946A5A44D1DDCC843BC75336DFCE"), ja3(JA3)],
            vec![ja3(JA3)],
            &[JA3],
        ),
        (
            ListKind::Ja4Block,
            vec![ja4("T13D1516H2_8DAAF6152771_02713D6AF862")],
            vec![ja4(JA4)],
            &[JA4],
        ),
    ];
    let mut generation = store.load().unwrap().generation;
    for (list, entries, changed, raw) in steps {
        let applied = store.add(list, &entries).unwrap();
        generation += 1;
        assert_eq!(applied.changed, changed, "{list}");
        assert_eq!(applied.generation, generation, "{list}");
        let mut rows = raw_entry_rows(&path, list);
        rows.sort();
        assert_eq!(rows, raw, "{list}");
        // Idempotent.
        let again = store.add(list, &entries).unwrap();
        assert!(again.changed.is_empty(), "{list}");
        assert_eq!(again.generation, generation, "{list}");
    }
    // Removal is exact: the parent goes, the subdomain entry stays.
    let removed = store
        .remove(
            ListKind::DomainBlock,
            &[dom("BAD.com"), dom("absent.example")],
        )
        .unwrap();
    assert_eq!(removed.changed, vec![dom("bad.com")]);
    drop(store);

    let loaded = Store::open(&path).unwrap().load().unwrap();
    assert_eq!(loaded.generation, generation + 1);
    let want: [(ListKind, Vec<Entry>); 4] = [
        (
            ListKind::DomainBlock,
            vec![dom("www.bad.com"), dom("xn--bcher-kva.example")],
        ),
        (ListKind::DomainAllow, vec![dom("bad.com")]),
        (ListKind::Ja3Block, vec![ja3(JA3)]),
        (ListKind::Ja4Block, vec![ja4(JA4)]),
    ];
    for (list, entries) in want {
        assert_eq!(loaded.lists[&list], entries.into_iter().collect(), "{list}");
    }
    for feed in [
        ListKind::FeedStevenBlack,
        ListKind::FeedSomeoneWhoCares,
        ListKind::FeedSslblJa3,
    ] {
        assert!(loaded.lists[&feed].is_empty(), "{feed}");
    }
}

#[test]
fn country_and_asn_changes_are_idempotent_and_exact() {
    let mut store = Store::open_in_memory().unwrap();
    // (list, op, entries, expected changed, expected generation afterwards)
    type Step = (ListKind, bool, Vec<Entry>, Vec<Entry>, u64);
    let steps: Vec<Step> = vec![
        (
            ListKind::CountryBlock,
            true,
            vec![cc("ru"), cc("CN")],
            vec![cc("cn"), cc("ru")],
            2,
        ),
        // Adding again: no change, no generation.
        (ListKind::CountryBlock, true, vec![cc("RU")], vec![], 2),
        // Removing with another case removes the stored entry (upstream kept it in the DB).
        (
            ListKind::CountryBlock,
            false,
            vec![cc("RU"), cc("fr")],
            vec![cc("ru")],
            3,
        ),
        (ListKind::CountryBlock, false, vec![cc("ru")], vec![], 3),
        (
            ListKind::AsnBlock,
            true,
            vec![asn("64496"), asn("AS64497")],
            vec![asn("64496"), asn("64497")],
            4,
        ),
        (ListKind::AsnBlock, true, vec![asn("as64496")], vec![], 4),
        (
            ListKind::AsnBlock,
            false,
            vec![asn("AS64497"), asn("64511")],
            vec![asn("64497")],
            5,
        ),
        (ListKind::AsnBlock, false, vec![], vec![], 5),
        // The same value in another list is another entry.
        (ListKind::CountryBlock, true, vec![cc("cn")], vec![], 5),
    ];
    for (list, add, entries, changed, generation) in steps {
        let applied = if add {
            store.add(list, &entries).unwrap()
        } else {
            store.remove(list, &entries).unwrap()
        };
        assert_eq!(applied.changed, changed, "{list} add={add} {entries:?}");
        assert_eq!(
            applied.generation, generation,
            "{list} add={add} {entries:?}"
        );
    }
    let loaded = store.load().unwrap();
    assert_eq!(
        loaded.lists[&ListKind::CountryBlock],
        [cc("cn")].into_iter().collect()
    );
    assert_eq!(
        loaded.lists[&ListKind::AsnBlock],
        [asn("64496")].into_iter().collect()
    );
    assert_eq!(loaded.generation, 5);
}

#[test]
fn feed_lists_and_wrong_entry_kinds_are_refused_without_a_change() {
    let mut store = Store::open_in_memory().unwrap();
    let before = store.load().unwrap();
    let feeds = [
        (ListKind::FeedFireHol, c("203.0.113.0/24")),
        (ListKind::FeedSpamhaus, c("203.0.113.0/24")),
        (ListKind::FeedFeodo, c("203.0.113.7")),
        (ListKind::FeedAsnDrop, asn("64496")),
        (ListKind::FeedStevenBlack, dom("ads.example")),
        (ListKind::FeedSomeoneWhoCares, dom("ads.example")),
        (ListKind::FeedSslblJa3, ja3(JA3)),
    ];
    for (list, entry) in feeds {
        for add in [true, false] {
            let result = if add {
                store.add(list, std::slice::from_ref(&entry))
            } else {
                store.remove(list, std::slice::from_ref(&entry))
            };
            match result {
                Err(e @ StoreError::FeedList { .. }) => {
                    assert!(e.to_string().contains(list.name()), "{e}");
                }
                other => panic!("{list}: expected FeedList, got {other:?}"),
            }
        }
    }
    let wrong = [
        (ListKind::IpBlock, asn("64496")),
        (ListKind::IpAllow, cc("fr")),
        (ListKind::CountryBlock, c("203.0.113.7")),
        (ListKind::CountryBlock, asn("64496")),
        (ListKind::AsnBlock, cc("fr")),
        (ListKind::DomainBlock, ja3(JA3)),
        (ListKind::DomainAllow, c("203.0.113.7")),
        (ListKind::Ja3Block, ja4(JA4)),
        (ListKind::Ja4Block, ja3(JA3)),
        (ListKind::Ja3Block, dom("ads.example")),
    ];
    for (list, entry) in wrong {
        // A good entry first: the whole call is refused, not just the bad entry.
        let good = match list.entry_kind() {
            meds_proto::EntryKind::Prefix => c("198.51.100.0/24"),
            meds_proto::EntryKind::Country => cc("de"),
            meds_proto::EntryKind::Domain => dom("good.example"),
            meds_proto::EntryKind::Ja3 => ja3(JA3),
            meds_proto::EntryKind::Ja4 => ja4(JA4),
            _ => asn("64511"),
        };
        match store.add(list, &[good, entry.clone()]) {
            Err(StoreError::WrongEntry {
                list: l,
                expected,
                found,
            }) => {
                assert_eq!(l, list);
                assert_eq!(expected, list.entry_kind());
                assert_eq!(found, entry.kind());
            }
            other => panic!("{list} {entry:?}: expected WrongEntry, got {other:?}"),
        }
    }
    assert_eq!(store.load().unwrap(), before);
}

#[test]
fn bump_generation_is_durable_and_touches_no_list() {
    let (_dir, path) = db();
    let mut store = Store::open(&path).unwrap();
    let before = store.load().unwrap();
    assert_eq!(store.bump_generation().unwrap(), 2);
    assert_eq!(store.bump_generation().unwrap(), 3);
    // A user change continues from the bumped generation.
    let applied = store.add(ListKind::AsnBlock, &[asn("64496")]).unwrap();
    assert_eq!(applied.generation, 4);
    drop(store);
    let mut store = Store::open(&path).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.generation, 4);
    assert_eq!(
        loaded.lists[&ListKind::IpAllow],
        before.lists[&ListKind::IpAllow]
    );
    assert_eq!(store.bump_generation().unwrap(), 5);

    // A missing generation row is an error, not a silent 0.
    let conn = Connection::open(&path).unwrap();
    conn.execute("DELETE FROM meta WHERE key = 'generation'", [])
        .unwrap();
    drop(conn);
    assert!(matches!(
        store.bump_generation(),
        Err(StoreError::MissingGeneration { .. })
    ));
}

#[test]
fn a_schema_1_database_is_migrated_keeping_its_prefixes() {
    let (_dir, path) = db();
    // What a build with schema version 1 wrote (a fixture: migration 1 must never change).
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE meta (
             key   TEXT PRIMARY KEY NOT NULL,
             value INTEGER NOT NULL
         ) STRICT;
         CREATE TABLE ip_prefix (
             id         INTEGER PRIMARY KEY,
             list       TEXT NOT NULL,
             prefix     TEXT NOT NULL,
             family     INTEGER NOT NULL CHECK (family IN (4, 6)),
             prefix_len INTEGER NOT NULL CHECK (prefix_len BETWEEN 0 AND 128),
             created_at INTEGER NOT NULL DEFAULT (unixepoch()),
             UNIQUE (list, prefix)
         ) STRICT;
         INSERT INTO meta (key, value) VALUES ('generation', 7);
         INSERT INTO ip_prefix (list, prefix, family, prefix_len)
             VALUES ('ip_block', '203.0.113.0/24', 4, 24), ('ip_allow', '10.0.0.0/8', 4, 8);
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);

    let mut store = Store::open(&path).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.generation, 7);
    assert_eq!(loaded.lists[&ListKind::IpBlock], set(&["203.0.113.0/24"]));
    assert_eq!(loaded.lists[&ListKind::IpAllow], set(&["10.0.0.0/8"]));
    assert!(loaded.lists[&ListKind::CountryBlock].is_empty());
    assert!(loaded.lists[&ListKind::AsnBlock].is_empty());
    // The new table works.
    let applied = store.add(ListKind::CountryBlock, &[cc("fr")]).unwrap();
    assert_eq!(applied.changed, vec![cc("fr")]);
    assert_eq!(applied.generation, 8);
    let conn = Connection::open(&path).unwrap();
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn a_corrupt_list_entry_row_is_an_error_naming_the_row() {
    // (list, value, expected error kind)
    let cases = [
        ("domain_block", "Bad.com", "invalid value"),
        ("domain_block", "bad.com.", "invalid value"),
        ("domain_block", " bad.com", "invalid value"),
        ("domain_allow", "bücher.example", "invalid value"),
        ("domain_allow", "*.example.com", "invalid value"),
        ("domain_allow", "", "invalid value"),
        ("domain_block", "a..b", "invalid value"),
        (
            "ja3_block",
            "B386946A5A44D1DDCC843BC75336DFCE",
            "invalid value",
        ),
        (
            "ja3_block",
            "b386946a5a44d1ddcc843bc75336dfc",
            "invalid value",
        ),
        (
            "ja4_block",
            "T13D1516H2_8DAAF6152771_02713D6AF862",
            "invalid value",
        ),
        (
            "ja4_block",
            "b386946a5a44d1ddcc843bc75336dfce",
            "invalid value",
        ),
        ("feed_stevenblack", "ads.example", "unknown list"),
        ("feed_someonewhocares", "ads.example", "unknown list"),
        (
            "feed_sslbl_ja3",
            "b386946a5a44d1ddcc843bc75336dfce",
            "unknown list",
        ),
        ("country_block", "FR", "invalid value"),
        ("country_block", "zz", "invalid value"),
        ("country_block", "fra", "invalid value"),
        ("asn_block", "AS64496", "invalid value"),
        ("asn_block", "0", "invalid value"),
        ("asn_block", "064496", "invalid value"),
        ("asn_block", "fr", "invalid value"),
        ("feed_asn_drop", "64496", "unknown list"),
        ("ip_block", "64496", "invalid value"),
        ("asn_nope", "64496", "unknown list"),
    ];
    for (list, value, want) in cases {
        let (_dir, path) = db();
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO list_entry (id, list, value) VALUES (888, ?1, ?2)",
            [list, value],
        )
        .unwrap();
        drop(conn);
        let err = Store::open(&path).unwrap().load().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("row 888"), "{list}/{value}: {text}");
        assert!(text.contains(want), "{list}/{value}: {text}");
        assert!(text.contains("meds.db"), "{list}/{value}: {text}");
    }
}
