//! Component tests of the SQLite store on real files in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use meds_controld::store::{DEFAULT_ALLOWLIST, SCHEMA_VERSION, Store, StoreError};
use meds_proto::{Cidr, ListKind};
use rusqlite::Connection;

fn c(s: &str) -> Cidr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn cs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|s| c(s)).collect()
}

fn set(list: &[&str]) -> BTreeSet<Cidr> {
    list.iter().map(|s| c(s)).collect()
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
    let input: Vec<Cidr> = cases.iter().map(|(i, _)| c(i)).collect();
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
        let added = store.add(ListKind::IpBlock, &[entry]).unwrap();
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
