//! The schema and its migrations.
//!
//! `PRAGMA user_version` holds how many entries of [`MIGRATIONS`] have run;
//! `PRAGMA application_id` marks the file as Tollgate's, so a path that points at another
//! application's database is refused rather than written into.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// "Tolg".
const APPLICATION_ID: i32 = 0x546f_6c67;

/// Entry `i` takes the schema from version `i` to `i + 1`. Never edit an entry that has
/// shipped: append a new one.
const MIGRATIONS: &[&str] = &[V1, V2];

/// The oldest schema version a read-only connection can read: the migrations after it
/// add nothing that readers use (V2: an index for pruning idempotency records), so a
/// backup written by an older build can be verified or exported without a write.
const READERS_FROM: i64 = 1;

/// Idempotency records are pruned by age (`LedgerStore::prune_idempotency`).
const V2: &str = "CREATE INDEX idempotency_created_at ON idempotency (created_at);";

/// Tables are STRICT so a value of the wrong type cannot get in. The events table refuses
/// updates and deletes: the ledger is append-only even for someone at a `sqlite3` prompt.
const V1: &str = "
CREATE TABLE events (
    idx       INTEGER PRIMARY KEY CHECK (idx >= 0),
    leaf      BLOB NOT NULL,
    leaf_hash BLOB NOT NULL CHECK (length(leaf_hash) = 32)
) STRICT;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;

CREATE TABLE idempotency (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    status       INTEGER NOT NULL,
    body         BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (scope, key)
) STRICT, WITHOUT ROWID;

CREATE TABLE checkpoints (
    size INTEGER PRIMARY KEY CHECK (size >= 0),
    root BLOB NOT NULL,
    note TEXT NOT NULL
) STRICT;

CREATE TABLE snapshots (
    seq    INTEGER PRIMARY KEY CHECK (seq >= 0),
    digest BLOB NOT NULL,
    state  BLOB NOT NULL
) STRICT;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    hash       BLOB NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    name       TEXT NOT NULL,
    product    TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT
) STRICT;
";

/// The schema version this build writes and reads.
pub(super) const CURRENT: i64 = MIGRATIONS.len() as i64;

/// Brings the schema up to [`CURRENT`], creating it in an empty file.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    // The common case, an up-to-date file, takes no write lock.
    if ids(conn)? == (APPLICATION_ID, CURRENT) {
        return Ok(());
    }
    // Under the write lock, so two processes opening a new file do not both create it.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (app_id, version) = ids(&tx)?;
    if app_id != APPLICATION_ID {
        let empty = app_id == 0 && version == 0 && !has_tables(&tx)?;
        if !empty {
            return Err(foreign(path));
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    }
    let from =
        usize::try_from(version).ok().filter(|&v| v <= MIGRATIONS.len()).ok_or_else(|| unsupported(path, version))?;
    for sql in &MIGRATIONS[from..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", CURRENT)?;
    tx.commit()?;
    tracing::info!(path = %path.display(), from = version, to = CURRENT, "ledger schema migrated");
    Ok(())
}

/// For read-only connections, which cannot migrate.
pub(super) fn check_current(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    match ids(conn)? {
        (APPLICATION_ID, version) if (READERS_FROM..=CURRENT).contains(&version) => Ok(()),
        (APPLICATION_ID, version) => Err(unsupported(path, version)),
        _ => Err(foreign(path)),
    }
}

fn ids(conn: &Connection) -> Result<(i32, i64), StoreError> {
    let app_id = conn.pragma_query_value(None, "application_id", |row| row.get(0))?;
    let version = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    Ok((app_id, version))
}

fn has_tables(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_schema)", [], |row| row.get(0))?)
}

fn foreign(path: &Path) -> StoreError {
    StoreError::Incompatible(format!("{} is not a Tollgate ledger", path.display()))
}

fn unsupported(path: &Path, version: i64) -> StoreError {
    StoreError::Incompatible(format!(
        "{} has schema version {version}; this build reads versions {READERS_FROM} to {CURRENT} and writes {CURRENT}: open it with the Tollgate that wrote it, or a newer one",
        path.display()
    ))
}

/// The triggers that keep `events` append-only, as created by migration 1; restore
/// re-creates them after cutting a copy back.
pub(crate) const APPEND_ONLY_TRIGGERS: &str = "CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;";
