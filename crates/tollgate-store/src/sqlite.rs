//! The embedded backend: one SQLite file in WAL mode.
//!
//! One writer connection (the server's writer thread) and any number of read-only
//! connections, one per reading thread. WAL lets readers run while the writer commits;
//! `synchronous=FULL` makes every commit durable before `append` returns.

mod schema;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};

use crate::{
    CheckpointRecord, Hash, IdempotencyRecord, LedgerStore, NewEvent, SnapshotRecord, StoreError, StoredEvent,
    TokenRecord, Unique,
};

/// How long a connection waits for another one's lock before giving up with
/// [`StoreError::Busy`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Enough for every statement below, so none is ever re-prepared.
const STATEMENT_CACHE: usize = 64;

/// Events per `INSERT` statement in `append` (the rest of a batch one by one).
const INSERT_ROWS: usize = 16;

/// `INSERT INTO events … VALUES (?, ?, ?), …` for [`INSERT_ROWS`] rows.
fn insert_many() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let rows = vec!["(?, ?, ?)"; INSERT_ROWS].join(", ");
        format!("INSERT INTO events (idx, leaf, leaf_hash) VALUES {rows}")
    });
    &SQL
}

/// A [`LedgerStore`] in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens the ledger at `path` for reading and writing, creating the file and the schema
    /// if missing and migrating an older schema.
    ///
    /// Fails with [`StoreError::Incompatible`] for a file that belongs to another
    /// application or has a schema newer than this build.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Incompatible(format!(
                "{} cannot use WAL (journal_mode is {mode})",
                path.display()
            )));
        }
        // Per connection, not stored in the file: must be set on every open.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        schema::migrate(&mut conn, path)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Self { conn, path: path.to_owned() })
    }

    /// Opens an existing ledger read-only, for a reading thread. Creates nothing, not even
    /// the file: a missing file is [`StoreError::NotFound`]. Every write method fails.
    ///
    /// The directory must be writable (or the `-wal` and `-shm` files must exist), as
    /// SQLite needs them to read a WAL database.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        if !path.is_file() {
            return Err(StoreError::NotFound(format!("ledger database {}", path.display())));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        schema::check_current(&conn, path)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Self { conn, path: path.to_owned() })
    }

    /// The path this store was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a consistent copy of the whole database to `dest` (which must not exist) with
    /// `VACUUM INTO`, and syncs it. Readers and the writer may keep working meanwhile.
    pub fn backup_to(&self, dest: &Path) -> Result<(), StoreError> {
        let dest_str = dest
            .to_str()
            .ok_or_else(|| StoreError::Invalid(format!("backup path is not UTF-8: {}", dest.display())))?;
        if dest.exists() {
            return Err(StoreError::Invalid(format!("backup destination already exists: {}", dest.display())));
        }
        self.conn.execute("VACUUM INTO ?1", [dest_str])?;
        // Owner-only, as the data directory is: the copy holds license keys in the clear.
        #[cfg(unix)]
        std::fs::set_permissions(dest, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        std::fs::File::open(dest)?.sync_all()?;
        #[cfg(unix)]
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Cuts the ledger back to its first `len` events, for point-in-time restore.
    ///
    /// Only restore calls this, on a fresh copy of a backup, never on a live ledger: it
    /// lifts the append-only triggers for the length of one transaction. Checkpoints and
    /// snapshots past the cut go with the events; idempotency records are cleared, since
    /// they may describe responses for events that were cut (the claims of writes
    /// outside the ledger among them, for the same reason).
    pub fn truncate_for_restore(&mut self, len: u64) -> Result<(), StoreError> {
        let len = i64::try_from(len).map_err(|_| StoreError::Invalid("length out of range".into()))?;
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch("DROP TRIGGER IF EXISTS events_no_update; DROP TRIGGER IF EXISTS events_no_delete;")?;
        tx.execute("DELETE FROM events WHERE idx >= ?1", [len])?;
        tx.execute("DELETE FROM checkpoints WHERE size > ?1", [len])?;
        tx.execute("DELETE FROM snapshots WHERE seq > ?1", [len])?;
        tx.execute("DELETE FROM idempotency", [])?;
        tx.execute_batch(schema::APPEND_ONLY_TRIGGERS)?;
        tx.commit()?;
        Ok(())
    }
}

impl LedgerStore for SqliteStore {
    fn append(
        &mut self,
        expected_len: u64,
        events: &[NewEvent<'_>],
        idempotency: &[IdempotencyRecord],
    ) -> Result<(), StoreError> {
        // IMMEDIATE takes the write lock now, so the length read below cannot change
        // before the commit, even with other processes writing the same file.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let actual = log_len(&tx)?;
        if actual != expected_len {
            return Err(StoreError::Conflict { expected: expected_len, actual });
        }
        {
            // Rows go in by sixteen per statement: one statement's run for sixteen rows
            // instead of sixteen, which shortens the writer's part of every commit.
            let mut idx = to_sql_int(actual, "log length")?;
            let mut chunks = events.chunks_exact(INSERT_ROWS);
            let mut many = tx.prepare_cached(insert_many())?;
            for chunk in &mut chunks {
                for (j, event) in chunk.iter().enumerate() {
                    many.raw_bind_parameter(3 * j + 1, idx)?;
                    many.raw_bind_parameter(3 * j + 2, event.leaf)?;
                    many.raw_bind_parameter(3 * j + 3, &event.leaf_hash[..])?;
                    idx += 1;
                }
                many.raw_execute()?;
            }
            let mut insert = tx.prepare_cached("INSERT INTO events (idx, leaf, leaf_hash) VALUES (?1, ?2, ?3)")?;
            for event in chunks.remainder() {
                insert.execute(params![idx, event.leaf, &event.leaf_hash[..]])?;
                idx += 1;
            }
            for r in idempotency {
                if !insert_record(&tx, r)? {
                    return Err(StoreError::Duplicate {
                        what: Unique::IdempotencyKey,
                        key: format!("{}/{}", r.scope, r.key),
                    });
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn len(&self) -> Result<u64, StoreError> {
        log_len(&self.conn)
    }

    fn claim_idempotency(&mut self, r: &IdempotencyRecord) -> Result<IdempotencyRecord, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        insert_record(&tx, r)?;
        let stood = idempotency_in(&tx, &r.scope, &r.key)?;
        tx.commit()?;
        stood.ok_or_else(|| corrupt(format!("idempotency record {}/{} vanished as it was claimed", r.scope, r.key)))
    }

    fn adopt_legacy_claims(&mut self, now: &str) -> Result<usize, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let legacy: Vec<(String, Vec<u8>)> = tx
            .prepare_cached("SELECT key, value FROM meta WHERE substr(key, 1, ?1) = ?2 LIMIT ?3")?
            .query_map(
                params![crate::LEGACY_CLAIM_PREFIX.len() as i64, crate::LEGACY_CLAIM_PREFIX, crate::ADOPT_CHUNK],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?
            .collect::<Result<_, _>>()?;
        for (key, value) in &legacy {
            if let Some(r) = crate::legacy_claim(key, value, now) {
                insert_record(&tx, &r)?;
            }
            tx.prepare_cached("DELETE FROM meta WHERE key = ?1")?.execute([key])?;
        }
        tx.commit()?;
        Ok(legacy.len())
    }

    fn prune_idempotency(&mut self, before: &str, limit: usize) -> Result<usize, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let n = self.conn.execute(
            "DELETE FROM idempotency WHERE (scope, key) IN (
                 SELECT scope, key FROM idempotency WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
            params![before, limit],
        )?;
        Ok(n)
    }

    fn read(&self, start: u64, end: u64) -> Result<Vec<StoredEvent>, StoreError> {
        if start > end {
            return Err(StoreError::Invalid(format!("read range {start}..{end} is reversed")));
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT idx, leaf, leaf_hash FROM events WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")?;
        let mut rows = stmt.query(params![clamp(start), clamp(end)])?;
        let mut events = Vec::with_capacity((end - start).min(1024) as usize);
        let mut next = start;
        while let Some(row) = rows.next()? {
            events.push(event_from_row(row, next)?);
            next += 1;
        }
        Ok(events)
    }

    fn scan(&self, start: u64, f: &mut dyn FnMut(StoredEvent) -> Result<(), StoreError>) -> Result<(), StoreError> {
        // One statement stepped row by row: SQLite reads pages as it goes, and the read
        // transaction it holds gives the scan a consistent view of the log.
        let mut stmt =
            self.conn.prepare_cached("SELECT idx, leaf, leaf_hash FROM events WHERE idx >= ?1 ORDER BY idx")?;
        let mut rows = stmt.query([clamp(start)])?;
        let mut next = start;
        while let Some(row) = rows.next()? {
            f(event_from_row(row, next)?)?;
            next += 1;
        }
        Ok(())
    }

    fn idempotency(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        idempotency_in(&self.conn, scope, key)
    }

    fn put_checkpoint(&mut self, cp: &CheckpointRecord) -> Result<(), StoreError> {
        let size = to_sql_int(cp.size, "checkpoint size")?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let len = log_len(&tx)?;
        if cp.size > len {
            return Err(StoreError::Invalid(format!("checkpoint size {} exceeds log length {len}", cp.size)));
        }
        let inserted = tx
            .prepare_cached(
                "INSERT INTO checkpoints (size, root, note) VALUES (?1, ?2, ?3)
                 ON CONFLICT (size) DO NOTHING",
            )?
            .execute(params![size, &cp.root[..], cp.note])?;
        if inserted == 0 {
            let root: Vec<u8> = tx
                .prepare_cached("SELECT root FROM checkpoints WHERE size = ?1")?
                .query_row([size], |row| row.get(0))?;
            if root != cp.root {
                return Err(StoreError::Duplicate { what: Unique::Checkpoint, key: format!("size {}", cp.size) });
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>, StoreError> {
        let mut stmt =
            self.conn.prepare_cached("SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1")?;
        let mut rows = stmt.query([])?;
        rows.next()?.map(checkpoint_from_row).transpose()
    }

    fn checkpoints(&self) -> Result<Vec<CheckpointRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT size, root, note FROM checkpoints ORDER BY size")?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(checkpoint_from_row(row)?);
        }
        Ok(out)
    }

    fn put_snapshot(&mut self, s: &SnapshotRecord) -> Result<(), StoreError> {
        let seq = to_sql_int(s.seq, "snapshot seq")?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let len = log_len(&tx)?;
        if s.seq > len {
            return Err(StoreError::Invalid(format!("snapshot seq {} exceeds log length {len}", s.seq)));
        }
        let inserted = tx
            .prepare_cached(
                "INSERT INTO snapshots (seq, digest, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (seq) DO NOTHING",
            )?
            .execute(params![seq, &s.digest[..], s.state])?;
        if inserted == 0 {
            let digest: Vec<u8> =
                tx.prepare_cached("SELECT digest FROM snapshots WHERE seq = ?1")?.query_row([seq], |row| row.get(0))?;
            if digest != s.digest {
                return Err(StoreError::Duplicate { what: Unique::Snapshot, key: format!("seq {}", s.seq) });
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn snapshot_seqs(&self) -> Result<Vec<(u64, Hash)>, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT seq, digest FROM snapshots ORDER BY seq DESC")?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let seq = from_sql_int(row.get(0)?, "snapshot seq")?;
            out.push((seq, hash_at(row, 1, || format!("snapshot {seq}"))?));
        }
        Ok(out)
    }

    fn load_snapshot(&self, seq: u64) -> Result<Option<SnapshotRecord>, StoreError> {
        let Ok(sql_seq) = i64::try_from(seq) else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare_cached("SELECT digest, state FROM snapshots WHERE seq = ?1")?;
        let mut rows = stmt.query([sql_seq])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let what = || format!("snapshot {seq}");
        Ok(Some(SnapshotRecord { seq, digest: hash_at(row, 0, what)?, state: blob_at(row, 1, what)? }))
    }

    fn prune_snapshots(&mut self, keep: usize) -> Result<(), StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.conn
            .prepare_cached(
                "DELETE FROM snapshots WHERE seq NOT IN
                 (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?1)",
            )?
            .execute([keep])?;
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?;
        let mut rows = stmt.query([key])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        Ok(Some(blob_at(row, 0, || format!("meta {key}"))?))
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, value])?;
        Ok(())
    }

    fn insert_token(&mut self, t: &TokenRecord) -> Result<(), StoreError> {
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO tokens (id, hash, role, name, product, created_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
            )?
            .execute(params![t.id, &t.hash[..], t.role, t.name, t.product, t.created_at, t.revoked_at])?;
        if inserted == 1 {
            return Ok(());
        }
        // Tokens are never deleted, so whichever key clashed still does.
        let id_taken = self
            .conn
            .prepare_cached("SELECT 1 FROM tokens WHERE id = ?1")?
            .query_row([&t.id], |_| Ok(()))
            .optional()?
            .is_some();
        Err(if id_taken {
            StoreError::Duplicate { what: Unique::TokenId, key: t.id.clone() }
        } else {
            StoreError::Duplicate { what: Unique::TokenHash, key: format!("for token {}", t.id) }
        })
    }

    fn token_by_hash(&self, hash: &Hash) -> Result<Option<TokenRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, hash, role, name, product, created_at, revoked_at FROM tokens
             WHERE hash = ?1",
        )?;
        let mut rows = stmt.query([&hash[..]])?;
        rows.next()?.map(token_from_row).transpose()
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, hash, role, name, product, created_at, revoked_at FROM tokens
             ORDER BY created_at, id",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(token_from_row(row)?);
        }
        Ok(out)
    }

    fn revoke_token(&mut self, id: &str, at: &str) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .prepare_cached("UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")?
            .execute([id, at])?;
        Ok(changed == 1)
    }

    fn reader(&self) -> Result<Box<dyn LedgerStore>, StoreError> {
        Ok(Box::new(SqliteStore::open_read_only(&self.path)?))
    }
}

/// Stores `r` on `conn` (a transaction's) unless its `(scope, key)` is taken; whether
/// it did.
fn insert_record(conn: &Connection, r: &IdempotencyRecord) -> Result<bool, StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO idempotency (scope, key, request_hash, status, body, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )?
        .execute(params![r.scope, r.key, &r.request_hash[..], r.status, r.body, r.created_at])?;
    Ok(inserted == 1)
}

/// The idempotency record of `(scope, key)`, read on `conn` (a transaction's, too).
fn idempotency_in(conn: &Connection, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT request_hash, status, body, created_at FROM idempotency
         WHERE scope = ?1 AND key = ?2",
    )?;
    let mut rows = stmt.query([scope, key])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let what = || format!("idempotency record {scope}/{key}");
    let status: i64 = row.get(1)?;
    Ok(Some(IdempotencyRecord {
        scope: scope.to_owned(),
        key: key.to_owned(),
        request_hash: hash_at(row, 0, what)?,
        status: u16::try_from(status).map_err(|_| corrupt(format!("{}: status {status}", what())))?,
        body: blob_at(row, 2, what)?,
        created_at: row.get(3)?,
    }))
}

/// The log length: one past the largest index, which the primary key b-tree gives in
/// O(log n). Events are contiguous from 0, so this is also the count; a gap would be
/// corruption, and `read` and `scan` report it.
fn log_len(conn: &Connection) -> Result<u64, StoreError> {
    let next: i64 =
        conn.prepare_cached("SELECT COALESCE(MAX(idx) + 1, 0) FROM events")?.query_row([], |row| row.get(0))?;
    from_sql_int(next, "log length")
}

/// Decodes an event row that must be at index `expected`.
fn event_from_row(row: &Row<'_>, expected: u64) -> Result<StoredEvent, StoreError> {
    let idx: i64 = row.get(0)?;
    if u64::try_from(idx) != Ok(expected) {
        return Err(StoreError::Corrupt {
            index: Some(expected),
            detail: format!("event is missing (the next stored index is {idx})"),
        });
    }
    let at = |col, name: &str| -> Result<&[u8], StoreError> {
        match row.get_ref(col)? {
            ValueRef::Blob(b) => Ok(b),
            other => Err(StoreError::Corrupt {
                index: Some(expected),
                detail: format!("{name} is {}, not a blob", other.data_type()),
            }),
        }
    };
    let leaf = at(1, "leaf")?.to_vec();
    let hash = at(2, "leaf_hash")?;
    let leaf_hash = Hash::try_from(hash).map_err(|_| StoreError::Corrupt {
        index: Some(expected),
        detail: format!("leaf_hash is {} bytes, not 32", hash.len()),
    })?;
    Ok(StoredEvent { index: expected, leaf, leaf_hash })
}

fn checkpoint_from_row(row: &Row<'_>) -> Result<CheckpointRecord, StoreError> {
    let size = from_sql_int(row.get(0)?, "checkpoint size")?;
    Ok(CheckpointRecord { size, root: hash_at(row, 1, || format!("checkpoint {size}"))?, note: row.get(2)? })
}

fn token_from_row(row: &Row<'_>) -> Result<TokenRecord, StoreError> {
    let id: String = row.get(0)?;
    Ok(TokenRecord {
        hash: hash_at(row, 1, || format!("token {id}"))?,
        role: row.get(2)?,
        name: row.get(3)?,
        product: row.get(4)?,
        created_at: row.get(5)?,
        revoked_at: row.get(6)?,
        id,
    })
}

fn blob_at(row: &Row<'_>, col: usize, what: impl Fn() -> String) -> Result<Vec<u8>, StoreError> {
    match row.get_ref(col)? {
        ValueRef::Blob(b) => Ok(b.to_vec()),
        other => Err(corrupt(format!("{}: {} is not a blob", what(), other.data_type()))),
    }
}

fn hash_at(row: &Row<'_>, col: usize, what: impl Fn() -> String) -> Result<Hash, StoreError> {
    let bytes = blob_at(row, col, &what)?;
    Hash::try_from(bytes.as_slice()).map_err(|_| corrupt(format!("{}: hash is {} bytes, not 32", what(), bytes.len())))
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt { index: None, detail }
}

/// SQLite integers are i64; our counts are u64. A count that does not fit is refused, not
/// wrapped.
fn to_sql_int(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} {v} is too large")))
}

fn from_sql_int(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(format!("{what} is negative: {v}")))
}

/// For range bounds: nothing is stored beyond `i64::MAX`, so clamping changes no result.
fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_commit_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("ledger.db")).unwrap();
        let pragma = |name| -> i64 { store.conn.pragma_query_value(None, name, |r| r.get(0)).unwrap() };
        assert_eq!(pragma("synchronous"), 2, "FULL");
        assert_eq!(pragma("foreign_keys"), 1);
        assert_eq!(pragma("busy_timeout"), 5000);
    }

    /// A restore forgets the idempotency claims of writes outside the ledger, as it
    /// forgets the records of ledger writes: they may describe what the cut removed.
    #[test]
    fn a_restore_forgets_idempotency_claims_and_keeps_meta() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("ledger.db")).unwrap();
        let claim = IdempotencyRecord {
            scope: crate::OUTSIDE_LEDGER_SCOPE.into(),
            key: "license-token/tok_1/k".into(),
            request_hash: [7; 32],
            status: 0,
            body: b"{}".to_vec(),
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        assert_eq!(store.claim_idempotency(&claim).unwrap(), claim);
        store.set_meta("signing-key", b"kept").unwrap();
        store.truncate_for_restore(0).unwrap();
        assert_eq!(store.idempotency(&claim.scope, &claim.key).unwrap(), None);
        assert_eq!(store.meta("signing-key").unwrap().as_deref(), Some(&b"kept"[..]));
    }
}
