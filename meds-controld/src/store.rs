//! `store`: the controller's durable policy state in SQLite.
//!
//! What it keeps: the user lists ([`ListKind`]: IP prefixes, countries, ASNs, domain names, JA3
//! and JA4 fingerprints), the feeds' settings and last good copies, and the policy
//! *generation*, a counter that goes up by exactly one with every committed change to any list. The generation is bumped in
//! the same transaction as the change, so a crash can never leave a change without a new
//! generation (or the reverse).
//!
//! Schema (migrations live in `MIGRATIONS`, append-only; 2 adds `list_entry`, 3 adds
//! `feed_state`, the feeds' run-time settings and last good copies, 4 adds `metric_total`, the
//! dataplane's counter totals folded per instance, see [`crate::totals`]):
//! * `meta(key TEXT PRIMARY KEY, value INTEGER)` holds `generation`.
//! * `ip_prefix(id, list, prefix, family, prefix_len, created_at)` with `UNIQUE(list, prefix)`.
//!   `list` is [`ListKind::name`]; `prefix` is the canonical, masked text of a [`Cidr`]
//!   (`10.1.2.3/8` is stored as `10.0.0.0/8`), so a prefix is stored at most once per list and a
//!   removal always finds what an addition stored.
//! * `list_entry(id, list, value, created_at)` with `UNIQUE(list, value)`: every other user
//!   list, `value` being the canonical text of the [`Entry`] (`fr`, `64496`, `bad.com`,
//!   `xn--bcher-kva.example`, a lower-case JA3 or JA4). A row not in canonical form was not
//!   written by us and is refused on load. Feed lists are never stored here.
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

use meds_proto::{Asn, Cidr, CountryCode, DomainName, Entry, EntryKind, Ja3Hash, Ja4, ListKind};
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
const MIGRATIONS: &[Migration] = &[
    Migration {
        description: "create meta and ip_prefix, seed the default allowlist",
        apply: migration_1,
    },
    Migration {
        description: "create list_entry for the country and ASN blocklists",
        apply: migration_2,
    },
    Migration {
        description: "create feed_state for the feeds' settings and last good copies",
        apply: migration_3,
    },
    Migration {
        description: "create metric_total for the dataplane's counter totals",
        apply: migration_4,
    },
];

/// `metric_total`: one row per counter series ([`crate::totals`]): the metric name, its label
/// values as a JSON array of strings, `base` (finished instances) and `last` (the current
/// instance). The current instance is the `meta` row `metrics_instance` (absent: none yet).
/// Counters are u64 stored bit for bit in SQLite's i64.
fn migration_4(tx: &rusqlite::Transaction<'_>) -> Result<(), MigrationError> {
    tx.execute_batch(
        "CREATE TABLE metric_total (
             metric TEXT NOT NULL,
             labels TEXT NOT NULL,
             base   INTEGER NOT NULL,
             last   INTEGER NOT NULL,
             PRIMARY KEY (metric, labels)
         ) STRICT;",
    )?;
    Ok(())
}

/// `feed_state`: one row per feed that has a run-time setting or a last good copy.
/// `enabled` and `url_override` are NULL unless set at run time (then they win over the
/// flags); `body` is the raw body of the last good copy (re-parsed at start), `source_url` the
/// URL it came from (conditional requests are only sent to that URL), `fetched_at` the Unix
/// time of the last successful fetch (a 304 counts).
fn migration_3(tx: &rusqlite::Transaction<'_>) -> Result<(), MigrationError> {
    tx.execute_batch(
        "CREATE TABLE feed_state (
             name          TEXT PRIMARY KEY NOT NULL,
             enabled       INTEGER CHECK (enabled IN (0, 1)),
             url_override  TEXT,
             body          BLOB,
             source_url    TEXT,
             etag          TEXT,
             last_modified TEXT,
             fetched_at    INTEGER,
             entries       INTEGER NOT NULL DEFAULT 0 CHECK (entries >= 0),
             rejected      INTEGER NOT NULL DEFAULT 0 CHECK (rejected >= 0)
         ) STRICT;",
    )?;
    Ok(())
}

fn migration_2(tx: &rusqlite::Transaction<'_>) -> Result<(), MigrationError> {
    tx.execute_batch(
        "CREATE TABLE list_entry (
             id         INTEGER PRIMARY KEY,
             list       TEXT NOT NULL,
             value      TEXT NOT NULL,
             created_at INTEGER NOT NULL DEFAULT (unixepoch()),
             UNIQUE (list, value)
         ) STRICT;",
    )?;
    Ok(())
}

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
    #[error("database {path}: list_entry row {id} (list {list}) has invalid value {value:?}")]
    BadEntryRow {
        path: PathBuf,
        id: i64,
        list: ListKind,
        value: String,
    },
    #[error("list {list} is filled by its feed, not by users")]
    FeedList { list: ListKind },
    #[error("list {list} holds {expected:?} entries, not {found:?}")]
    WrongEntry {
        list: ListKind,
        expected: EntryKind,
        found: EntryKind,
    },
    #[error("database {path}: {op} of feed {feed}: {source}")]
    FeedWrite {
        path: PathBuf,
        feed: Box<str>,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path}: saving the counter totals: {source}")]
    MetricWrite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path}: metric_total row {metric:?} has invalid labels {labels:?}")]
    BadMetricRow {
        path: PathBuf,
        metric: String,
        labels: String,
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
    /// Every [`ListKind::ALL`] key is present (possibly with an empty set); feed lists are
    /// always empty here (feeds keep their own last good copy).
    pub lists: BTreeMap<ListKind, BTreeSet<Entry>>,
}

/// The outcome of one committed [`Store::add`] or [`Store::remove`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The entries that were actually inserted or deleted, sorted and without duplicates.
    pub changed: Vec<Entry>,
    /// The generation after the call: one more than before iff `changed` is not empty.
    pub generation: u64,
}

/// One `feed_state` row as stored (see migration 3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedRow {
    pub name: String,
    /// Set at run time; `None`: the flags decide.
    pub enabled: Option<bool>,
    /// Set at run time; `None`: the flag or the built-in URL.
    pub url_override: Option<String>,
    /// The last good copy, if any.
    pub copy: Option<FeedCopy>,
}

/// The last good copy of a feed: the raw body as validated, and what came with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedCopy {
    pub body: Vec<u8>,
    /// The URL the body was fetched from.
    pub source_url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Unix seconds of the last successful fetch (a 304 counts).
    pub fetched_at: u64,
    /// Entries the body gave.
    pub entries: u64,
    /// Lines the parser rejected.
    pub rejected: u64,
}

/// One counter series as stored (see migration 4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricRow {
    pub metric: String,
    pub labels: Vec<String>,
    pub base: u64,
    pub last: u64,
}

/// u64 counters are stored bit for bit in SQLite's signed 64-bit integers.
fn to_sql_u64(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

fn from_sql_u64(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
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
        let mut lists: BTreeMap<ListKind, BTreeSet<Entry>> = ListKind::ALL
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
            lists.entry(list).or_default().insert(Entry::Prefix(cidr));
        }
        drop(rows);
        drop(stmt);
        let mut stmt = tx
            .prepare("SELECT id, list, value FROM list_entry ORDER BY id")
            .map_err(read_err("list_entry"))?;
        let mut rows = stmt.query([]).map_err(read_err("list_entry"))?;
        while let Some(row) = rows.next().map_err(read_err("list_entry"))? {
            let id: i64 = row.get(0).map_err(read_err("list_entry.id"))?;
            let name: String = row.get(1).map_err(read_err("list_entry.list"))?;
            let value: String = row.get(2).map_err(read_err("list_entry.value"))?;
            let list = ListKind::from_name(&name)
                .filter(|l| !l.is_feed())
                .ok_or_else(|| StoreError::UnknownList {
                    path: self.path.clone(),
                    id,
                    list: name.clone(),
                })?;
            let entry = parse_entry_row(list, &value).ok_or_else(|| StoreError::BadEntryRow {
                path: self.path.clone(),
                id,
                list,
                value: value.clone(),
            })?;
            lists.entry(list).or_default().insert(entry);
        }
        Ok(Loaded { generation, lists })
    }

    /// Every `feed_state` row, by name. Rows are ours, but a copy is only trusted after the
    /// feed's parser accepts it again.
    pub fn load_feed_states(&self) -> Result<Vec<FeedRow>, StoreError> {
        let read_err = |what: &'static str| {
            let path = self.path.clone();
            move |source| StoreError::Read { path, what, source }
        };
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, enabled, url_override, body, source_url, etag, last_modified,
                        fetched_at, entries, rejected
                 FROM feed_state ORDER BY name",
            )
            .map_err(read_err("feed_state"))?;
        let mut rows = stmt.query([]).map_err(read_err("feed_state"))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(read_err("feed_state"))? {
            let enabled: Option<i64> = row.get(1).map_err(read_err("feed_state.enabled"))?;
            let body: Option<Vec<u8>> = row.get(3).map_err(read_err("feed_state.body"))?;
            let non_negative = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
            let copy = match body {
                Some(body) => Some(FeedCopy {
                    body,
                    source_url: row
                        .get::<_, Option<String>>(4)
                        .map_err(read_err("feed_state.source_url"))?
                        .unwrap_or_default(),
                    etag: row.get(5).map_err(read_err("feed_state.etag"))?,
                    last_modified: row.get(6).map_err(read_err("feed_state.last_modified"))?,
                    fetched_at: non_negative(
                        row.get(7).map_err(read_err("feed_state.fetched_at"))?,
                    ),
                    entries: non_negative(row.get(8).map_err(read_err("feed_state.entries"))?),
                    rejected: non_negative(row.get(9).map_err(read_err("feed_state.rejected"))?),
                }),
                None => None,
            };
            out.push(FeedRow {
                name: row.get(0).map_err(read_err("feed_state.name"))?,
                enabled: enabled.map(|v| v != 0),
                url_override: row.get(2).map_err(read_err("feed_state.url_override"))?,
                copy,
            });
        }
        Ok(out)
    }

    /// Store `copy` as the last good copy of feed `name` (replacing the previous one; the
    /// run-time settings are kept).
    pub fn save_feed_body(&mut self, name: &str, copy: &FeedCopy) -> Result<(), StoreError> {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.conn
            .execute(
                "INSERT INTO feed_state (name, body, source_url, etag, last_modified, fetched_at,
                                         entries, rejected)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (name) DO UPDATE SET
                     body = excluded.body, source_url = excluded.source_url,
                     etag = excluded.etag, last_modified = excluded.last_modified,
                     fetched_at = excluded.fetched_at, entries = excluded.entries,
                     rejected = excluded.rejected",
                params![
                    name,
                    copy.body,
                    copy.source_url,
                    copy.etag,
                    copy.last_modified,
                    clamp(copy.fetched_at),
                    clamp(copy.entries),
                    clamp(copy.rejected),
                ],
            )
            .map_err(|source| StoreError::FeedWrite {
                path: self.path.clone(),
                feed: name.into(),
                op: "saving the last good copy",
                source,
            })?;
        Ok(())
    }

    /// Record a successful fetch that brought nothing new (HTTP 304) for feed `name`.
    pub fn touch_feed(&mut self, name: &str, fetched_at: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE feed_state SET fetched_at = ?2 WHERE name = ?1",
                params![name, i64::try_from(fetched_at).unwrap_or(i64::MAX)],
            )
            .map_err(|source| StoreError::FeedWrite {
                path: self.path.clone(),
                feed: name.into(),
                op: "recording a fetch",
                source,
            })?;
        Ok(())
    }

    /// Set the run-time settings of feed `name` (`None` clears a setting, so the flags decide).
    pub fn save_feed_config(
        &mut self,
        name: &str,
        enabled: Option<bool>,
        url_override: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO feed_state (name, enabled, url_override) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET
                     enabled = excluded.enabled, url_override = excluded.url_override",
                params![name, enabled.map(i64::from), url_override],
            )
            .map_err(|source| StoreError::FeedWrite {
                path: self.path.clone(),
                feed: name.into(),
                op: "saving the settings",
                source,
            })?;
        Ok(())
    }

    /// The counter totals: the current instance (`None`: none yet) and every series.
    pub fn load_metric_totals(&self) -> Result<(Option<u64>, Vec<MetricRow>), StoreError> {
        let path = &self.path;
        let read_err = |source| StoreError::Read {
            path: path.clone(),
            what: "metric_total",
            source,
        };
        let instance: Option<i64> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'metrics_instance'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(read_err)?;
        let mut stmt = self
            .conn
            .prepare("SELECT metric, labels, base, last FROM metric_total ORDER BY metric, labels")
            .map_err(read_err)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .map_err(read_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (metric, labels, base, last) = row.map_err(read_err)?;
            let Ok(parsed) = serde_json::from_str::<Vec<String>>(&labels) else {
                return Err(StoreError::BadMetricRow {
                    path: path.clone(),
                    metric,
                    labels,
                });
            };
            out.push(MetricRow {
                metric,
                labels: parsed,
                base: from_sql_u64(base),
                last: from_sql_u64(last),
            });
        }
        Ok((instance.map(from_sql_u64), out))
    }

    /// Save the current instance and the changed series `rows`, in one transaction.
    pub fn save_metric_totals(
        &mut self,
        instance: u64,
        rows: &[MetricRow],
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let write_err = |source| StoreError::MetricWrite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(write_err)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('metrics_instance', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![to_sql_u64(instance)],
        )
        .map_err(write_err)?;
        {
            let mut upsert = tx
                .prepare(
                    "INSERT INTO metric_total (metric, labels, base, last) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (metric, labels) DO UPDATE SET
                         base = excluded.base, last = excluded.last",
                )
                .map_err(write_err)?;
            for row in rows {
                // A Vec<String> always serialises; the fallback is never used.
                let labels = serde_json::to_string(&row.labels).unwrap_or_else(|_| "[]".into());
                upsert
                    .execute(params![
                        row.metric,
                        labels,
                        to_sql_u64(row.base),
                        to_sql_u64(row.last)
                    ])
                    .map_err(write_err)?;
            }
        }
        tx.commit().map_err(write_err)?;
        Ok(())
    }

    /// Bump the generation for a change that lives outside this store (a feed update).
    pub fn bump_generation(&mut self) -> Result<u64, StoreError> {
        let path = &self.path;
        let write_err = |source| StoreError::Read {
            path: path.clone(),
            what: "meta.generation (bump)",
            source,
        };
        let value: Option<i64> = self
            .conn
            .query_row(
                "UPDATE meta SET value = value + 1 WHERE key = 'generation' RETURNING value",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(write_err)?;
        let value = value.ok_or_else(|| StoreError::MissingGeneration { path: path.clone() })?;
        u64::try_from(value).map_err(|_| StoreError::BadGeneration {
            path: path.clone(),
            value,
        })
    }

    /// Add `entries` to `list` in one transaction. Entries already present are not changes;
    /// duplicates in `entries` count once. The generation goes up by one iff something changed.
    pub fn add(&mut self, list: ListKind, entries: &[Entry]) -> Result<Applied, StoreError> {
        self.apply(list, entries, Op::Add)
    }

    /// Remove exactly the given prefixes from `list` (not the prefixes they cover) in one
    /// transaction. Absent entries are not changes. The generation goes up by one iff something
    /// changed.
    pub fn remove(&mut self, list: ListKind, entries: &[Entry]) -> Result<Applied, StoreError> {
        self.apply(list, entries, Op::Remove)
    }

    fn apply(&mut self, list: ListKind, entries: &[Entry], op: Op) -> Result<Applied, StoreError> {
        if list.is_feed() {
            return Err(StoreError::FeedList { list });
        }
        let expected = list.entry_kind();
        if let Some(bad) = entries.iter().find(|e| e.kind() != expected) {
            return Err(StoreError::WrongEntry {
                list,
                expected,
                found: bad.kind(),
            });
        }
        let path = &self.path;
        let write_err = |source| StoreError::Write {
            path: path.clone(),
            list,
            op: op.name(),
            source,
        };
        let unique: BTreeSet<&Entry> = entries.iter().collect();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(write_err)?;
        let mut changed = Vec::new();
        {
            let prefixes = expected == EntryKind::Prefix;
            let mut stmt = match (op, prefixes) {
                (Op::Add, true) => tx.prepare(INSERT_SQL),
                (Op::Remove, true) => {
                    tx.prepare("DELETE FROM ip_prefix WHERE list = ?1 AND prefix = ?2")
                }
                (Op::Add, false) => tx.prepare(
                    "INSERT INTO list_entry (list, value) VALUES (?1, ?2)
                     ON CONFLICT (list, value) DO NOTHING",
                ),
                (Op::Remove, false) => {
                    tx.prepare("DELETE FROM list_entry WHERE list = ?1 AND value = ?2")
                }
            }
            .map_err(write_err)?;
            for entry in &unique {
                let n = match (op, *entry) {
                    (Op::Add, Entry::Prefix(cidr)) => stmt.execute(row_params(list, cidr)),
                    _ => stmt.execute(params![list.name(), entry.to_string()]),
                }
                .map_err(write_err)?;
                if n > 0 {
                    changed.push((*entry).clone());
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

/// A `list_entry` value, which we only ever write in canonical form.
fn parse_entry_row(list: ListKind, value: &str) -> Option<Entry> {
    let entry = match list.entry_kind() {
        EntryKind::Asn => Entry::Asn(Asn::from_str(value).ok()?),
        EntryKind::Country => Entry::Country(CountryCode::from_str(value).ok()?),
        // Written from user input; read back with the lenient rules (a name is only ever
        // stored canonical, and the check below refuses anything else).
        EntryKind::Domain => Entry::Domain(DomainName::from_feed(value).ok()?),
        EntryKind::Ja3 => Entry::Ja3(Ja3Hash::from_str(value).ok()?),
        EntryKind::Ja4 => Entry::Ja4(Ja4::from_str(value).ok()?),
        EntryKind::Prefix | EntryKind::IpAsn => return None,
    };
    (entry.to_string() == value).then_some(entry)
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
    fn entry_rows_parse_only_in_canonical_form() {
        // (list, stored value, parses)
        let cases = [
            (ListKind::CountryBlock, "fr", true),
            (ListKind::CountryBlock, "xk", true),
            (ListKind::CountryBlock, "FR", false),
            (ListKind::CountryBlock, " fr", false),
            (ListKind::CountryBlock, "zz", false),
            (ListKind::CountryBlock, "", false),
            (ListKind::AsnBlock, "1", true),
            (ListKind::AsnBlock, "4294967294", true),
            (ListKind::AsnBlock, "AS64496", false),
            (ListKind::AsnBlock, "064496", false),
            (ListKind::AsnBlock, "0", false),
            (ListKind::AsnBlock, "23456", false),
            (ListKind::AsnBlock, "4294967295", false),
            (ListKind::FeedAsnDrop, "64496", true),
            (ListKind::IpBlock, "10.0.0.0/8", false),
            (ListKind::IpAsn, "10.0.0.0/8 1 fr", false),
            (ListKind::DomainBlock, "bad.com", true),
            (ListKind::DomainAllow, "xn--bcher-kva.example", true),
            (ListKind::DomainBlock, "_dmarc.example.com", true),
            (ListKind::DomainBlock, "zip", true),
            (ListKind::DomainBlock, "Bad.com", false),
            (ListKind::DomainBlock, "bad.com.", false),
            (ListKind::DomainBlock, "bücher.example", false),
            (ListKind::DomainBlock, "*.bad.com", false),
            (ListKind::DomainBlock, "", false),
            (ListKind::Ja3Block, "b386946a5a44d1ddcc843bc75336dfce", true),
            (
                ListKind::Ja3Block,
                "B386946A5A44D1DDCC843BC75336DFCE",
                false,
            ),
            (ListKind::Ja3Block, "b386946a5a44d1ddcc843bc75336dfc", false),
            (
                ListKind::Ja4Block,
                "t13d1516h2_8daaf6152771_02713d6af862",
                true,
            ),
            (
                ListKind::Ja4Block,
                "T13D1516H2_8DAAF6152771_02713D6AF862",
                false,
            ),
            (
                ListKind::Ja4Block,
                " t13d1516h2_8daaf6152771_02713d6af862",
                false,
            ),
        ];
        for (list, value, ok) in cases {
            let parsed = parse_entry_row(list, value);
            assert_eq!(parsed.is_some(), ok, "{list} {value:?}: {parsed:?}");
            if let Some(entry) = parsed {
                assert_eq!(entry.kind(), list.entry_kind());
                assert_eq!(entry.to_string(), value);
            }
        }
    }

    #[test]
    fn list_entry_row_defects_are_reported_with_their_row() {
        // (list, value, expected substring)
        let cases = [
            ("country_block", "FR", "invalid value \"FR\""),
            ("asn_block", "AS1", "invalid value \"AS1\""),
            ("feed_asn_drop", "64496", "unknown list \"feed_asn_drop\""),
            ("nope", "fr", "unknown list \"nope\""),
        ];
        for (list, value, want) in cases {
            let store = Store::open_in_memory().unwrap();
            store
                .conn
                .execute(
                    "INSERT INTO list_entry (id, list, value) VALUES (4343, ?1, ?2)",
                    params![list, value],
                )
                .unwrap();
            let err = store.load().expect_err(value).to_string();
            assert!(err.contains("row 4343"), "{value}: {err}");
            assert!(err.contains(want), "{value}: {err}");
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
