//! `store`: the controller's durable policy state in SQLite.
//!
//! What it keeps: the IP prefix lists ([`ListKind`]) and the policy *generation*, a counter that
//! goes up by exactly one with every committed change to any list. The generation is bumped in
//! the same transaction as the change, so a crash can never leave a change without a new
//! generation (or the reverse).
//!
//! Schema (migration 1; migrations live in `MIGRATIONS`, append-only):
//! * `meta(key TEXT PRIMARY KEY, value INTEGER)` holds `generation`.
//! * `ip_prefix(id, list, prefix, family, prefix_len, created_at)` with `UNIQUE(list, prefix)`.
//!   `list` is [`ListKind::name`]; `prefix` is the canonical, masked text of a [`Cidr`]
//!   (`10.1.2.3/8` is stored as `10.0.0.0/8`), so a prefix is stored at most once per list and a
//!   removal always finds what an addition stored.
//!
//! Migrations are versioned with `PRAGMA user_version`; each runs in its own `BEGIN IMMEDIATE`
//! transaction that re-reads the version first, so two processes opening a new file at once do
//! not both migrate it. A file written by a newer schema is refused, not guessed at.
//!
//! The default allowlist ([`DEFAULT_ALLOWLIST`]) is seeded by migration 1 only, that is exactly
//! once, when the database is created. Emptying the allowlist and restarting keeps it empty
//! (the original re-seeded whenever the table was empty, upstream W13).
//!
//! Connection settings: WAL journal (readers never block the writer), `busy_timeout` (a second
//! process waits instead of failing at once), `foreign_keys=ON`, and `synchronous=FULL`: writes
//! are rare administrator actions whose success is reported to the caller, so the last committed
//! change must survive a power loss; `NORMAL` in WAL mode may lose it, and the cost of FULL (one
//! more fsync per commit) does not matter at this write rate.
//!
//! What it must not do: this module knows nothing about the dataplane, HTTP or gRPC, and never
//! trusts its own file blindly: every row is validated on load, and a row that does not parse is
//! an error naming the row (the file is ours; silently dropping a blocklist entry is worse than
//! refusing to start).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use meds_proto::{Cidr, ListKind};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

/// Prefixes put on the allowlist when a database is created: loopback, private, CGNAT,
/// link-local, benchmarking, multicast and reserved ranges (upstream W10), IPv4 and IPv6.
pub const DEFAULT_ALLOWLIST: &[&str] = &[
    "127.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "ff00::/8",
];

/// How long a statement waits for another connection's lock before failing with "busy".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema version this build writes and understands (`PRAGMA user_version`).
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// A schema migration: `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
struct Migration {
    /// What the migration does, for errors and logs.
    description: &'static str,
    apply: fn(&rusqlite::Transaction<'_>) -> Result<(), MigrationError>,
}

/// Why a migration step failed (wrapped into [`StoreError::Migration`]).
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("default allowlist entry {entry:?} is invalid: {source}")]
    BadDefault {
        entry: &'static str,
        source: meds_proto::CidrError,
    },
}

/// Every migration, in order. Append only: never edit a migration that has shipped.
const MIGRATIONS: &[Migration] = &[Migration {
    description: "create meta and ip_prefix, seed the default allowlist",
    apply: migration_1,
}];

fn migration_1(tx: &rusqlite::Transaction<'_>) -> Result<(), MigrationError> {
    tx.execute_batch(
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
         INSERT INTO meta (key, value) VALUES ('generation', 0);",
    )?;
    let mut seeded = BTreeSet::new();
    for &entry in DEFAULT_ALLOWLIST {
        let cidr =
            Cidr::from_str(entry).map_err(|source| MigrationError::BadDefault { entry, source })?;
        seeded.insert(cidr);
    }
    let mut insert = tx.prepare(INSERT_SQL)?;
    for cidr in &seeded {
        insert.execute(row_params(ListKind::IpAllow, cidr))?;
    }
    // The seeded lists are policy generation 1; 0 is left to mean "no policy yet" elsewhere.
    tx.execute("UPDATE meta SET value = 1 WHERE key = 'generation'", [])?;
    Ok(())
}

const INSERT_SQL: &str = "INSERT INTO ip_prefix (list, prefix, family, prefix_len)
     VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (list, prefix) DO NOTHING";

fn row_params(list: ListKind, cidr: &Cidr) -> (&'static str, String, i64, i64) {
    let family = if cidr.is_ipv4() { 4 } else { 6 };
    (list.name(), cidr.to_string(), family, i64::from(cidr.len()))
}

/// Errors of the store. Each carries what it was doing and where (file, list, row).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: directory {dir} does not exist")]
    MissingDirectory { path: PathBuf, dir: PathBuf },
    #[error("database {path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path}: cannot set {setting}: {source}")]
    Setting {
        path: PathBuf,
        setting: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "database {path}: schema version {found} is newer than this build supports ({supported}); \
         refusing to use it"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: u32,
    },
    #[error(
        "database {path}: migration to schema version {version} ({description}) failed: {source}"
    )]
    Migration {
        path: PathBuf,
        version: u32,
        description: &'static str,
        #[source]
        source: MigrationError,
    },
    #[error("database {path}: reading {what}: {source}")]
    Read {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path}: {op} on list {list}: {source}")]
    Write {
        path: PathBuf,
        list: ListKind,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path}: ip_prefix row {id} has unknown list {list:?}")]
    UnknownList {
        path: PathBuf,
        id: i64,
        list: String,
    },
    #[error(
        "database {path}: ip_prefix row {id} (list {list}) has invalid prefix {value:?}: {reason}"
    )]
    BadPrefixRow {
        path: PathBuf,
        id: i64,
        list: ListKind,
        value: String,
        reason: String,
    },
    #[error("database {path}: meta row 'generation' is missing")]
    MissingGeneration { path: PathBuf },
    #[error("database {path}: meta row 'generation' holds {value}, not a non-negative integer")]
    BadGeneration { path: PathBuf, value: i64 },
}

/// The whole policy as stored, read at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub generation: u64,
    /// Every [`ListKind::ALL`] key is present (possibly with an empty set).
    pub lists: BTreeMap<ListKind, BTreeSet<Cidr>>,
}

/// The outcome of one committed [`Store::add`] or [`Store::remove`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The entries that were actually inserted or deleted, sorted and without duplicates.
    pub changed: Vec<Cidr>,
    /// The generation after the call: one more than before iff `changed` is not empty.
    pub generation: u64,
}

/// The SQLite store. One connection; `Send` (not `Sync`): share it behind a `Mutex`.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    /// The file path, or `:memory:`; used in error messages.
    path: PathBuf,
}

impl Store {
    /// Open (creating if missing) the database file at `path` and migrate it to
    /// [`SCHEMA_VERSION`]. The parent directory must already exist.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(StoreError::MissingDirectory {
                path: path.to_path_buf(),
                dir: dir.to_path_buf(),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Store::init(conn, path.to_path_buf())
    }

    /// A private in-memory database (tests and dry runs), migrated and seeded like a new file.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        Store::init(conn, path)
    }

    fn init(conn: Connection, path: PathBuf) -> Result<Store, StoreError> {
        let mut store = Store { conn, path };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    fn configure(&self) -> Result<(), StoreError> {
        let setting_err = |setting: &'static str| {
            let path = self.path.clone();
            move |source| StoreError::Setting {
                path,
                setting,
                source,
            }
        };
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(setting_err("busy_timeout"))?;
        // An in-memory database answers "memory": WAL does not apply there.
        let mode: String = self
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(setting_err("journal_mode=WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            return Err(StoreError::Setting {
                path: self.path.clone(),
                setting: "journal_mode=WAL",
                source: rusqlite::Error::InvalidParameterName(format!(
                    "journal_mode stayed {mode:?}"
                )),
            });
        }
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(setting_err("synchronous=FULL"))?;
        self.conn
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(setting_err("foreign_keys=ON"))?;
        Ok(())
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = &self.path;
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            let target = index as u32 + 1;
            let migration_err = |source: MigrationError| StoreError::Migration {
                path: path.clone(),
                version: target,
                description: migration.description,
                source,
            };
            // IMMEDIATE takes the write lock first, so the version read below cannot be stale.
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| migration_err(e.into()))?;
            let current: i64 = tx
                .pragma_query_value(None, "user_version", |row| row.get(0))
                .map_err(|source| StoreError::Read {
                    path: path.clone(),
                    what: "user_version",
                    source,
                })?;
            if current > i64::from(SCHEMA_VERSION) {
                return Err(StoreError::SchemaTooNew {
                    path: path.clone(),
                    found: current,
                    supported: SCHEMA_VERSION,
                });
            }
            if current >= i64::from(target) {
                continue; // dropping `tx` rolls back the empty transaction
            }
            (migration.apply)(&tx).map_err(migration_err)?;
            tx.pragma_update(None, "user_version", target)
                .map_err(|e| migration_err(e.into()))?;
            tx.commit().map_err(|e| migration_err(e.into()))?;
            tracing::info!(
                path = %path.display(),
                version = target,
                migration = migration.description,
                "database migrated"
            );
        }
        Ok(())
    }

    /// Read every list and the generation. Every row is validated.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let read_err = |what: &'static str| {
            let path = self.path.clone();
            move |source| StoreError::Read { path, what, source }
        };
        // One read transaction, so the lists and the generation are one consistent snapshot.
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(read_err("snapshot"))?;
        let generation = read_generation(&tx, &self.path)?;
        let mut lists: BTreeMap<ListKind, BTreeSet<Cidr>> = ListKind::ALL
            .iter()
            .map(|&k| (k, BTreeSet::new()))
            .collect();
        let mut stmt = tx
            .prepare("SELECT id, list, prefix, family, prefix_len FROM ip_prefix ORDER BY id")
            .map_err(read_err("ip_prefix"))?;
        let mut rows = stmt.query([]).map_err(read_err("ip_prefix"))?;
        while let Some(row) = rows.next().map_err(read_err("ip_prefix"))? {
            let raw = RawRow {
                id: row.get(0).map_err(read_err("ip_prefix.id"))?,
                list: row.get(1).map_err(read_err("ip_prefix.list"))?,
                prefix: row.get(2).map_err(read_err("ip_prefix.prefix"))?,
                family: row.get(3).map_err(read_err("ip_prefix.family"))?,
                prefix_len: row.get(4).map_err(read_err("ip_prefix.prefix_len"))?,
            };
            let (list, cidr) = raw.validate(&self.path)?;
            lists.entry(list).or_default().insert(cidr);
        }
        Ok(Loaded { generation, lists })
    }

    /// Add `entries` to `list` in one transaction. Entries already present are not changes;
    /// duplicates in `entries` count once. The generation goes up by one iff something changed.
    pub fn add(&mut self, list: ListKind, entries: &[Cidr]) -> Result<Applied, StoreError> {
        self.apply(list, entries, Op::Add)
    }

    /// Remove exactly the given prefixes from `list` (not the prefixes they cover) in one
    /// transaction. Absent entries are not changes. The generation goes up by one iff something
    /// changed.
    pub fn remove(&mut self, list: ListKind, entries: &[Cidr]) -> Result<Applied, StoreError> {
        self.apply(list, entries, Op::Remove)
    }

    fn apply(&mut self, list: ListKind, entries: &[Cidr], op: Op) -> Result<Applied, StoreError> {
        let path = &self.path;
        let write_err = |source| StoreError::Write {
            path: path.clone(),
            list,
            op: op.name(),
            source,
        };
        let unique: BTreeSet<Cidr> = entries.iter().copied().collect();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(write_err)?;
        let mut changed = Vec::new();
        {
            let mut stmt = match op {
                Op::Add => tx.prepare(INSERT_SQL),
                Op::Remove => tx.prepare("DELETE FROM ip_prefix WHERE list = ?1 AND prefix = ?2"),
            }
            .map_err(write_err)?;
            for cidr in &unique {
                let n = match op {
                    Op::Add => stmt.execute(row_params(list, cidr)),
                    Op::Remove => stmt.execute(params![list.name(), cidr.to_string()]),
                }
                .map_err(write_err)?;
                if n > 0 {
                    changed.push(*cidr);
                }
            }
        }
        let generation = if changed.is_empty() {
            read_generation(&tx, path)?
        } else {
            let value: Option<i64> = tx
                .query_row(
                    "UPDATE meta SET value = value + 1 WHERE key = 'generation' RETURNING value",
                    [],
                    |row| row.get(0),
                )
                .optional()
                .map_err(write_err)?;
            let value =
                value.ok_or_else(|| StoreError::MissingGeneration { path: path.clone() })?;
            u64::try_from(value).map_err(|_| StoreError::BadGeneration {
                path: path.clone(),
                value,
            })?
        };
        tx.commit().map_err(write_err)?;
        Ok(Applied {
            changed,
            generation,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Add,
    Remove,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Remove => "remove",
        }
    }
}

/// One `ip_prefix` row as read, before validation.
struct RawRow {
    id: i64,
    list: String,
    prefix: String,
    family: i64,
    prefix_len: i64,
}

impl RawRow {
    fn validate(self, path: &Path) -> Result<(ListKind, Cidr), StoreError> {
        let Some(list) = ListKind::ALL.into_iter().find(|k| k.name() == self.list) else {
            return Err(StoreError::UnknownList {
                path: path.to_path_buf(),
                id: self.id,
                list: self.list,
            });
        };
        let bad = |reason: String| StoreError::BadPrefixRow {
            path: path.to_path_buf(),
            id: self.id,
            list,
            value: self.prefix.clone(),
            reason,
        };
        if !self.prefix.contains('/') {
            return Err(bad("missing the /length".to_string()));
        }
        let cidr = Cidr::from_str(&self.prefix).map_err(|e| bad(e.to_string()))?;
        // We only ever write the canonical form; anything else was not written by us.
        if cidr.to_string() != self.prefix {
            return Err(bad(format!("not in canonical form (expected {cidr})")));
        }
        let family = if cidr.is_ipv4() { 4 } else { 6 };
        if self.family != family || self.prefix_len != i64::from(cidr.len()) {
            return Err(bad(format!(
                "family/prefix_len columns say IPv{}/{}",
                self.family, self.prefix_len
            )));
        }
        Ok((list, cidr))
    }
}

fn read_generation(conn: &Connection, path: &Path) -> Result<u64, StoreError> {
    let value: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'generation'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(|source| StoreError::Read {
            path: path.to_path_buf(),
            what: "meta.generation",
            source,
        })?;
    let value = value.ok_or_else(|| StoreError::MissingGeneration {
        path: path.to_path_buf(),
    })?;
    u64::try_from(value).map_err(|_| StoreError::BadGeneration {
        path: path.to_path_buf(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn default_allowlist_entries_are_canonical() {
        for entry in DEFAULT_ALLOWLIST {
            assert_eq!(c(entry).to_string(), *entry);
        }
    }

    #[test]
    fn every_row_defect_is_reported_with_its_row() {
        // (list, prefix, family, prefix_len, expected substring of the error)
        let cases: [(&str, &str, i64, i64, &str); 6] = [
            ("ip_block", "300.1.1.1/32", 4, 32, "\"300.1.1.1/32\""),
            (
                "ip_block",
                "10.1.2.3/8",
                4,
                8,
                "not in canonical form (expected 10.0.0.0/8)",
            ),
            ("ip_block", "203.0.113.7", 4, 32, "missing the /length"),
            ("ip_block", "203.0.113.0/24", 6, 24, "family/prefix_len"),
            ("ip_block", "203.0.113.0/24", 4, 25, "family/prefix_len"),
            (
                "ip_nope",
                "203.0.113.0/24",
                4,
                24,
                "unknown list \"ip_nope\"",
            ),
        ];
        for (list, prefix, family, len, want) in cases {
            let store = Store::open_in_memory().unwrap();
            store
                .conn
                .execute(
                    "INSERT INTO ip_prefix (id, list, prefix, family, prefix_len)
                     VALUES (4242, ?1, ?2, ?3, ?4)",
                    params![list, prefix, family, len],
                )
                .unwrap();
            let err = store.load().expect_err(prefix).to_string();
            assert!(err.contains("row 4242"), "{prefix}: {err}");
            assert!(err.contains(want), "{prefix}: {err}");
            assert!(err.contains(":memory:"), "{prefix}: {err}");
        }
    }

    #[test]
    fn generation_row_defects_are_errors() {
        let store = Store::open_in_memory().unwrap();
        store
            .conn
            .execute("UPDATE meta SET value = -1 WHERE key = 'generation'", [])
            .unwrap();
        assert!(matches!(
            store.load(),
            Err(StoreError::BadGeneration { value: -1, .. })
        ));
        store
            .conn
            .execute("DELETE FROM meta WHERE key = 'generation'", [])
            .unwrap();
        assert!(matches!(
            store.load(),
            Err(StoreError::MissingGeneration { .. })
        ));
    }

    #[test]
    fn connection_settings_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("meds.db")).unwrap();
        let get = |pragma: &str| -> String {
            store
                .conn
                .pragma_query_value(None, pragma, |row| {
                    Ok(match row.get_ref(0)? {
                        rusqlite::types::ValueRef::Text(t) => {
                            String::from_utf8_lossy(t).into_owned()
                        }
                        rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                        other => format!("{other:?}"),
                    })
                })
                .unwrap()
        };
        assert_eq!(get("journal_mode"), "wal");
        assert_eq!(get("foreign_keys"), "1");
        assert_eq!(get("synchronous"), "2"); // FULL
        assert_eq!(get("busy_timeout"), "5000");
        assert_eq!(get("user_version"), SCHEMA_VERSION.to_string());
    }
}
