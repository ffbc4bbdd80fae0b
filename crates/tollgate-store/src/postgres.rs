//! The PostgreSQL backend: the same ledger, for several Tollgate nodes on one database.
//!
//! Appends are optimistic: a writer inserts at the index it expects, and the primary key
//! on `events.idx` lets exactly one of two racing writers win; the other gets
//! `Conflict` and catches up. The events table is append-only by trigger, as in SQLite.
//!
//! The sync `postgres` client drives its own small runtime, which must not run inside
//! another runtime. Every call therefore goes through `offload`: directly on a plain
//! thread (the engine's), on a scoped thread when called from async code, so the store
//! is safe wherever it is called.

use std::sync::Mutex;

use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Row};

mod tls;

use crate::{
    CheckpointRecord, Hash, IdempotencyRecord, LedgerStore, NewEvent, NodeRecord, SnapshotRecord, StoreError,
    StoredEvent, TokenRecord, Unique,
};

/// Versioned migrations; entry N takes the schema from version N to N+1.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE events (
    idx       BIGINT PRIMARY KEY CHECK (idx >= 0),
    leaf      BYTEA NOT NULL,
    leaf_hash BYTEA NOT NULL CHECK (octet_length(leaf_hash) = 32)
);
CREATE FUNCTION tollgate_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the ledger is append-only'; END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION tollgate_append_only();
CREATE TABLE idempotency (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    status       INTEGER NOT NULL,
    body         BYTEA NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE checkpoints (size BIGINT PRIMARY KEY CHECK (size >= 0), root BYTEA NOT NULL, note TEXT NOT NULL);
CREATE TABLE snapshots (seq BIGINT PRIMARY KEY CHECK (seq >= 0), digest BYTEA NOT NULL, state BYTEA NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    hash       BYTEA NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    name       TEXT NOT NULL,
    product    TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
",
    "
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    seq          BIGINT NOT NULL CHECK (seq >= 0),
    digest       BYTEA NOT NULL CHECK (octet_length(digest) = 32),
    heartbeat_at TIMESTAMPTZ NOT NULL
);
",
    // Idempotency records are pruned by age (`LedgerStore::prune_idempotency`).
    // `COLLATE "C"`, as the pruning query compares: an index of another collation is not
    // used for it.
    "CREATE INDEX idempotency_created_at ON idempotency (created_at COLLATE \"C\");",
];

/// Stores an idempotency record unless its `(scope, key)` is taken (the count says).
const INSERT_RECORD: &str = "INSERT INTO idempotency (scope, key, request_hash, status, body, created_at)
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";

/// The advisory lock every append takes for its transaction, and `hold_appends` for
/// its session (advisory locks are re-entrant within a session).
const APPEND_LOCK: i64 = 7_347_002;

pub struct PostgresStore {
    url: String,
    /// The LISTEN/NOTIFY channel of this schema's log. Channels are per database, so
    /// the schema is part of the name: ledgers in other schemas do not wake this one.
    channel: String,
    /// Sessions of this handle refuse writes (also after a reconnect).
    read_only: bool,
    /// `Some` until drop, which closes the connection off any async thread.
    client: Mutex<Option<Client>>,
    /// How long an append (or `hold_appends`) waits for another node's hold on the
    /// appends before it gives up: a node frozen while holding it (paused, cut off
    /// without a reset) must not hang every other node's writes.
    append_lock_timeout: std::time::Duration,
}

/// See [`PostgresStore::set_append_lock_timeout`].
pub const APPEND_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `f` where the sync client may block: directly on a plain thread (the engine's),
/// and on a scoped thread of its own when called from inside a tokio runtime (a
/// handler, a test), where the client's own `block_on` would panic. `block_in_place` is
/// not enough: it does not leave a runtime entered by `block_on`.
fn offload<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| s.spawn(f).join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(client) = self.client.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            offload(move || drop(client));
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

/// The server's own message where there is one: the client's `Display` says only
/// "db error".
fn pg(e: postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Invalid(format!("PostgreSQL: {} ({})", db.message(), db.code().code())),
        None => {
            // The reason (refused, a certificate not trusted) is in the sources.
            let mut text = format!("PostgreSQL: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            StoreError::Invalid(text)
        }
    }
}

fn int(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} {v} is too large")))
}

fn uint(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt { index: None, detail: format!("{what} is negative: {v}") })
}

fn hash(bytes: &[u8], what: impl Fn() -> String) -> Result<Hash, StoreError> {
    Hash::try_from(bytes).map_err(|_| StoreError::Corrupt {
        index: None,
        detail: format!("{}: hash is {} bytes, not 32", what(), bytes.len()),
    })
}

/// An idempotency record from `request_hash, status, body, created_at`.
fn idempotency_from_row(row: &postgres::Row, scope: &str, key: &str) -> Result<IdempotencyRecord, StoreError> {
    let status: i32 = row.get(1);
    Ok(IdempotencyRecord {
        scope: scope.to_owned(),
        key: key.to_owned(),
        request_hash: hash(row.get(0), || format!("idempotency record {scope}/{key}"))?,
        status: u16::try_from(status)
            .map_err(|_| StoreError::Corrupt { index: None, detail: format!("idempotency status {status}") })?,
        body: row.get(2),
        created_at: row.get(3),
    })
}

fn is_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

impl PostgresStore {
    /// Connects and migrates the schema to the current version (in one transaction,
    /// under an advisory lock, so nodes starting together do not race).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        offload(|| Self::open_here(url))
    }

    fn open_here(url: &str) -> Result<Self, StoreError> {
        let mut client = tls::connect(url)?;
        let mut tx = client.transaction().map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock(7347001)", &[]).map_err(pg)?;
        // `IF NOT EXISTS` on a table that exists is a NOTICE, which the client would log
        // on every start; this transaction does not need to hear it.
        tx.batch_execute("SET LOCAL client_min_messages = warning").map_err(pg)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS tollgate_schema (version INTEGER NOT NULL)").map_err(pg)?;
        let version: i32 = match tx.query_opt("SELECT version FROM tollgate_schema", &[]).map_err(pg)? {
            Some(row) => row.get(0),
            None => {
                tx.execute("INSERT INTO tollgate_schema (version) VALUES (0)", &[]).map_err(pg)?;
                0
            }
        };
        let current = MIGRATIONS.len() as i32;
        if version > current {
            return Err(StoreError::Incompatible(format!(
                "the database has schema version {version}, newer than this build knows ({current}); upgrade Tollgate"
            )));
        }
        let Ok(applied) = usize::try_from(version) else {
            return Err(StoreError::Incompatible(format!(
                "the database has schema version {version}, which no Tollgate build wrote; restore the database from a backup"
            )));
        };
        for step in &MIGRATIONS[applied..] {
            tx.batch_execute(step).map_err(pg)?;
        }
        tx.execute("UPDATE tollgate_schema SET version = $1", &[&current]).map_err(pg)?;
        tx.commit().map_err(pg)?;
        let channel = channel_of(&mut client)?;
        Ok(Self::with(url, channel, false, client))
    }

    fn with(url: &str, channel: String, read_only: bool, client: Client) -> Self {
        Self {
            url: url.to_owned(),
            channel,
            read_only,
            client: Mutex::new(Some(client)),
            append_lock_timeout: APPEND_LOCK_TIMEOUT,
        }
    }

    fn run<R: Send>(&self, f: impl FnOnce(&mut Client) -> R + Send) -> R {
        offload(|| {
            let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
            // Only `drop` takes the client out, and nothing runs after it.
            let client = guard.as_mut().expect("the connection is open until the store is dropped");
            // After a network blip or a server restart the connection is closed for
            // good: the call that saw it fail returned an error, this one reconnects
            // (the writer then catches up from the sequence it has).
            if client.is_closed()
                && let Ok(fresh) = Self::connect(&self.url, self.read_only)
            {
                *client = fresh;
            }
            f(client)
        })
    }

    fn connect(url: &str, read_only: bool) -> Result<Client, StoreError> {
        let mut client = tls::connect(url)?;
        if read_only {
            client.batch_execute("SET default_transaction_read_only = on").map_err(pg)?;
        }
        Ok(client)
    }

    /// A handle for reads only: the session refuses every write.
    pub fn open_read_only(url: &str) -> Result<Self, StoreError> {
        offload(|| {
            let mut client = Self::connect(url, true)?;
            let channel = channel_of(&mut client)?;
            Ok(Self::with(url, channel, true, client))
        })
    }

    /// How long an append waits for the appends another node holds (default
    /// [`APPEND_LOCK_TIMEOUT`]); past it the append fails and its batch is refused.
    pub fn set_append_lock_timeout(&mut self, timeout: std::time::Duration) {
        self.append_lock_timeout = timeout;
    }

    /// `SET [LOCAL] lock_timeout` to the append lock timeout.
    fn lock_timeout_sql(&self, local: bool) -> String {
        let ms = self.append_lock_timeout.as_millis().clamp(1, i32::MAX as u128);
        format!("SET {}lock_timeout = {ms}", if local { "LOCAL " } else { "" })
    }

    /// Whether this handle's connection is encrypted (TLS), as the server sees it.
    pub fn encrypted(&self) -> Result<bool, StoreError> {
        let row =
            self.run(|c| c.query_opt("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])).map_err(pg)?;
        Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
    }

    fn len_in(client: &mut impl postgres::GenericClient) -> Result<u64, StoreError> {
        let row = client.query_one("SELECT COALESCE(MAX(idx) + 1, 0) FROM events", &[]).map_err(pg)?;
        uint(row.get(0), "log length")
    }
}

/// The notification channel of the ledger in the current schema: its name, or its MD5
/// when the name would pass the 63 bytes PostgreSQL allows a channel (`pg_notify`
/// refuses a longer one, and `LISTEN` cuts it short).
fn channel_of(client: &mut Client) -> Result<String, StoreError> {
    let row = client
        .query_one(
            "SELECT CASE WHEN octet_length('tollgate_ledger_' || s) <= 63 THEN 'tollgate_ledger_' || s
                         ELSE 'tollgate_ledger_' || md5(s) END
             FROM (SELECT COALESCE(current_schema(), '') AS s) AS t",
            &[],
        )
        .map_err(pg)?;
    Ok(row.get(0))
}

/// Double-quotes an identifier for LISTEN, which takes no parameters.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A connection that LISTENs to the log's channel, for one follower thread.
pub struct PgFollower {
    client: Option<Client>,
}

impl Drop for PgFollower {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            offload(move || drop(client));
        }
    }
}

impl crate::Follow for PgFollower {
    fn wait(&mut self, timeout: std::time::Duration) -> Result<bool, StoreError> {
        let Some(client) = self.client.as_mut() else { return Ok(false) };
        offload(|| {
            let woken = {
                let mut notifications = client.notifications();
                let woken = notifications.timeout_iter(timeout).next().map_err(pg)?.is_some();
                // Several appends while this node was busy need one catch-up, not one each.
                let mut pending = notifications.iter();
                while pending.next().map_err(pg)?.is_some() {}
                woken
            };
            // A dropped connection ends the iterator without an error: ask the server.
            if client.is_closed() {
                return Err(StoreError::Invalid("PostgreSQL: the LISTEN connection was closed".into()));
            }
            Ok(woken)
        })
    }
}

fn event_from_row(row: &Row, expected: u64) -> Result<StoredEvent, StoreError> {
    let idx: i64 = row.get(0);
    if u64::try_from(idx) != Ok(expected) {
        return Err(StoreError::Corrupt {
            index: Some(expected),
            detail: format!("event is missing (the next stored index is {idx})"),
        });
    }
    let leaf: Vec<u8> = row.get(1);
    let h: &[u8] = row.get(2);
    let leaf_hash = Hash::try_from(h).map_err(|_| StoreError::Corrupt {
        index: Some(expected),
        detail: format!("leaf_hash is {} bytes, not 32", h.len()),
    })?;
    Ok(StoredEvent { index: expected, leaf, leaf_hash })
}

fn checkpoint_from_row(row: &Row) -> Result<CheckpointRecord, StoreError> {
    let size = uint(row.get(0), "checkpoint size")?;
    Ok(CheckpointRecord { size, root: hash(row.get(1), || format!("checkpoint {size}"))?, note: row.get(2) })
}

fn token_from_row(row: &Row) -> Result<TokenRecord, StoreError> {
    let id: String = row.get(0);
    Ok(TokenRecord {
        hash: hash(row.get(1), || format!("token {id}"))?,
        role: row.get(2),
        name: row.get(3),
        product: row.get(4),
        created_at: row.get(5),
        revoked_at: row.get(6),
        id,
    })
}

impl LedgerStore for PostgresStore {
    fn append(
        &mut self,
        expected_len: u64,
        events: &[NewEvent<'_>],
        idempotency: &[IdempotencyRecord],
    ) -> Result<(), StoreError> {
        let self_channel = self.channel.clone();
        let lock_timeout = self.lock_timeout_sql(true);
        self.run(|client| {
            let mut tx = client.transaction().map_err(pg)?;
            // Waits while a writer that lost a race holds the appends (`hold_appends`),
            // for a bounded time.
            tx.batch_execute(&lock_timeout).map_err(pg)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPEND_LOCK]).map_err(pg)?;
            let actual = Self::len_in(&mut tx)?;
            if actual != expected_len {
                return Err(StoreError::Conflict { expected: expected_len, actual });
            }
            let first = int(actual, "log length")?;
            // An append of nothing only confirms the length: nothing to prepare.
            if !events.is_empty() {
                let insert = tx.prepare("INSERT INTO events (idx, leaf, leaf_hash) VALUES ($1, $2, $3)").map_err(pg)?;
                for (idx, e) in (first..).zip(events) {
                    if let Err(err) = tx.execute(&insert, &[&idx, &e.leaf, &&e.leaf_hash[..]]) {
                        // Another node appended at this index first: the caller catches up.
                        if is_unique_violation(&err) {
                            drop(tx);
                            let actual = Self::len_in(client)?;
                            return Err(StoreError::Conflict { expected: expected_len, actual });
                        }
                        return Err(pg(err));
                    }
                }
            }
            if !idempotency.is_empty() {
                let remember = tx.prepare(INSERT_RECORD).map_err(pg)?;
                for r in idempotency {
                    let status = i32::from(r.status);
                    let n = tx
                        .execute(&remember, &[&r.scope, &r.key, &&r.request_hash[..], &status, &r.body, &r.created_at])
                        .map_err(pg)?;
                    if n == 0 {
                        return Err(StoreError::Duplicate {
                            what: Unique::IdempotencyKey,
                            key: format!("{}/{}", r.scope, r.key),
                        });
                    }
                }
            }
            // Delivered at commit, to every node that LISTENs: they fold the new events.
            // (An append of no events only confirmed the length under the lock.)
            if !events.is_empty() {
                tx.execute("SELECT pg_notify($1, '')", &[&self_channel]).map_err(pg)?;
            }
            match tx.commit() {
                Ok(()) => Ok(()),
                Err(err) if is_unique_violation(&err) => {
                    let actual = Self::len_in(client)?;
                    Err(StoreError::Conflict { expected: expected_len, actual })
                }
                Err(err) => Err(pg(err)),
            }
        })
    }

    fn len(&self) -> Result<u64, StoreError> {
        self.run(Self::len_in)
    }

    fn read(&self, start: u64, end: u64) -> Result<Vec<StoredEvent>, StoreError> {
        if start > end {
            return Err(StoreError::Invalid(format!("read range {start}..{end} is reversed")));
        }
        let (s, e) = (int(start, "start").unwrap_or(i64::MAX), int(end, "end").unwrap_or(i64::MAX));
        let rows = self
            .run(|c| {
                c.query("SELECT idx, leaf, leaf_hash FROM events WHERE idx >= $1 AND idx < $2 ORDER BY idx", &[&s, &e])
            })
            .map_err(pg)?;
        rows.iter().zip(start..).map(|(row, next)| event_from_row(row, next)).collect()
    }

    fn scan(&self, start: u64, f: &mut dyn FnMut(StoredEvent) -> Result<(), StoreError>) -> Result<(), StoreError> {
        // Pages by primary key, up to the length the log had when the scan began: events
        // never change once written, so the pages together are that log exactly.
        const PAGE: u64 = 2_000;
        let end = self.len()?;
        let mut next = start;
        while next < end {
            let page = self.read(next, (next + PAGE).min(end))?;
            if page.is_empty() {
                // The length said there were more: a gap, which a loop would never pass.
                return Err(StoreError::Corrupt {
                    index: Some(next),
                    detail: "the event is missing from the events table".into(),
                });
            }
            for e in page {
                next = e.index + 1;
                f(e)?;
            }
        }
        Ok(())
    }

    fn idempotency(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row = self
            .run(|c| {
                c.query_opt(
                    "SELECT request_hash, status, body, created_at FROM idempotency WHERE scope = $1 AND key = $2",
                    &[&scope, &key],
                )
            })
            .map_err(pg)?;
        row.map(|row| idempotency_from_row(&row, scope, key)).transpose()
    }

    fn claim_idempotency(&mut self, r: &IdempotencyRecord) -> Result<IdempotencyRecord, StoreError> {
        // One statement, which inserts or returns the row that stands (the no-op update
        // only locks it): an insert and a read apart would miss a record another node
        // pruned between them, and a second statement could see another snapshot.
        let status = i32::from(r.status);
        let row = self
            .run(|c| {
                c.query_one(
                    "INSERT INTO idempotency (scope, key, request_hash, status, body, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (scope, key) DO UPDATE SET key = idempotency.key
                     RETURNING request_hash, status, body, created_at",
                    &[&r.scope, &r.key, &&r.request_hash[..], &status, &r.body, &r.created_at],
                )
            })
            .map_err(pg)?;
        idempotency_from_row(&row, &r.scope, &r.key)
    }

    fn adopt_legacy_claims(&mut self, now: &str) -> Result<usize, StoreError> {
        // One transaction, the rows locked: two nodes adopting at once move each claim
        // once (the other skips the locked rows, and finds them gone next time).
        self.run(|c| {
            let mut tx = c.transaction()?;
            let legacy = tx.query(
                "SELECT key, value FROM meta WHERE substr(key, 1, $1) = $2 LIMIT $3 FOR UPDATE SKIP LOCKED",
                &[&(crate::LEGACY_CLAIM_PREFIX.len() as i32), &crate::LEGACY_CLAIM_PREFIX, &crate::ADOPT_CHUNK],
            )?;
            for row in &legacy {
                let (key, value): (String, Vec<u8>) = (row.get(0), row.get(1));
                if let Some(r) = crate::legacy_claim(&key, &value, now) {
                    tx.execute(
                        INSERT_RECORD,
                        &[&r.scope, &r.key, &&r.request_hash[..], &i32::from(r.status), &r.body, &r.created_at],
                    )?;
                }
                tx.execute("DELETE FROM meta WHERE key = $1", &[&key])?;
            }
            tx.commit()?;
            Ok(legacy.len())
        })
        .map_err(pg)
    }

    fn prune_idempotency(&mut self, before: &str, limit: usize) -> Result<usize, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // `COLLATE "C"`: RFC 3339 texts order by bytes, whatever the database's collation.
        let n = self
            .run(|c| {
                c.execute(
                    "DELETE FROM idempotency WHERE (scope, key) IN (
                         SELECT scope, key FROM idempotency WHERE created_at < $1 COLLATE \"C\"
                         ORDER BY created_at COLLATE \"C\" LIMIT $2)",
                    &[&before, &limit],
                )
            })
            .map_err(pg)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn put_checkpoint(&mut self, cp: &CheckpointRecord) -> Result<(), StoreError> {
        let size = int(cp.size, "checkpoint size")?;
        self.run(|client| {
            let mut tx = client.transaction().map_err(pg)?;
            let len = Self::len_in(&mut tx)?;
            if cp.size > len {
                return Err(StoreError::Invalid(format!("checkpoint size {} exceeds log length {len}", cp.size)));
            }
            let n = tx
                .execute(
                    "INSERT INTO checkpoints (size, root, note) VALUES ($1, $2, $3) ON CONFLICT (size) DO NOTHING",
                    &[&size, &&cp.root[..], &cp.note],
                )
                .map_err(pg)?;
            if n == 0 {
                let root: Vec<u8> =
                    tx.query_one("SELECT root FROM checkpoints WHERE size = $1", &[&size]).map_err(pg)?.get(0);
                if root != cp.root {
                    return Err(StoreError::Duplicate { what: Unique::Checkpoint, key: format!("size {}", cp.size) });
                }
            }
            tx.commit().map_err(pg)
        })
    }

    fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>, StoreError> {
        let row = self
            .run(|c| c.query_opt("SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1", &[]))
            .map_err(pg)?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    fn checkpoints(&self) -> Result<Vec<CheckpointRecord>, StoreError> {
        let rows = self.run(|c| c.query("SELECT size, root, note FROM checkpoints ORDER BY size", &[])).map_err(pg)?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    fn put_snapshot(&mut self, s: &SnapshotRecord) -> Result<(), StoreError> {
        let seq = int(s.seq, "snapshot seq")?;
        self.run(|client| {
            let mut tx = client.transaction().map_err(pg)?;
            let len = Self::len_in(&mut tx)?;
            if s.seq > len {
                return Err(StoreError::Invalid(format!("snapshot seq {} exceeds log length {len}", s.seq)));
            }
            let n = tx
                .execute(
                    "INSERT INTO snapshots (seq, digest, state) VALUES ($1, $2, $3) ON CONFLICT (seq) DO NOTHING",
                    &[&seq, &&s.digest[..], &s.state],
                )
                .map_err(pg)?;
            if n == 0 {
                let digest: Vec<u8> =
                    tx.query_one("SELECT digest FROM snapshots WHERE seq = $1", &[&seq]).map_err(pg)?.get(0);
                if digest != s.digest {
                    return Err(StoreError::Duplicate { what: Unique::Snapshot, key: format!("seq {}", s.seq) });
                }
            }
            tx.commit().map_err(pg)
        })
    }

    fn snapshot_seqs(&self) -> Result<Vec<(u64, Hash)>, StoreError> {
        let rows = self.run(|c| c.query("SELECT seq, digest FROM snapshots ORDER BY seq DESC", &[])).map_err(pg)?;
        rows.iter()
            .map(|row| {
                let seq = uint(row.get(0), "snapshot seq")?;
                Ok((seq, hash(row.get(1), || format!("snapshot {seq}"))?))
            })
            .collect()
    }

    fn load_snapshot(&self, seq: u64) -> Result<Option<SnapshotRecord>, StoreError> {
        let Ok(s) = i64::try_from(seq) else { return Ok(None) };
        let row = self.run(|c| c.query_opt("SELECT digest, state FROM snapshots WHERE seq = $1", &[&s])).map_err(pg)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(SnapshotRecord { seq, digest: hash(row.get(0), || format!("snapshot {seq}"))?, state: row.get(1) }))
    }

    fn prune_snapshots(&mut self, keep: usize) -> Result<(), StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.run(|c| {
            c.execute(
                "DELETE FROM snapshots WHERE seq NOT IN (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT $1)",
                &[&keep],
            )
        })
        .map_err(pg)?;
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self.run(|c| c.query_opt("SELECT value FROM meta WHERE key = $1", &[&key])).map_err(pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.run(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )
        })
        .map_err(pg)?;
        Ok(())
    }

    fn meta_insert(&mut self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        // One transaction: an insert whose answer could not be read stands for nothing
        // (a caller told of an error must not find its value claimed afterwards).
        self.run(|c| {
            let mut tx = c.transaction()?;
            tx.execute("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", &[&key, &value])?;
            let stored: Vec<u8> = tx.query_one("SELECT value FROM meta WHERE key = $1", &[&key])?.get(0);
            tx.commit()?;
            Ok(stored)
        })
        .map_err(pg)
    }

    fn meta_raise(&mut self, key: &str, value: i64) -> Result<i64, StoreError> {
        if value < 0 {
            return Err(StoreError::Invalid(format!("meta mark {value} is negative")));
        }
        // One statement: the row lock orders nodes raising the same mark. Big-endian
        // bytes of non-negative numbers compare as the numbers do.
        let stored: Vec<u8> = self
            .run(|c| {
                c.query_one(
                    "INSERT INTO meta (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = GREATEST(meta.value, excluded.value)
                     RETURNING value",
                    &[&key, &&value.to_be_bytes()[..]],
                )
                .map(|r| r.get(0))
            })
            .map_err(pg)?;
        <[u8; 8]>::try_from(stored.as_slice())
            .map(i64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt { index: None, detail: format!("meta '{key}' is not an 8-byte number") })
    }

    fn insert_token(&mut self, t: &TokenRecord) -> Result<(), StoreError> {
        self.run(|client| {
            let n = client
                .execute(
                    "INSERT INTO tokens (id, hash, role, name, product, created_at, revoked_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    &[&t.id, &&t.hash[..], &t.role, &t.name, &t.product, &t.created_at, &t.revoked_at],
                )
                .map_err(pg)?;
            if n == 1 {
                return Ok(());
            }
            let id_taken = client.query_opt("SELECT 1 FROM tokens WHERE id = $1", &[&t.id]).map_err(pg)?.is_some();
            Err(if id_taken {
                StoreError::Duplicate { what: Unique::TokenId, key: t.id.clone() }
            } else {
                StoreError::Duplicate { what: Unique::TokenHash, key: format!("for token {}", t.id) }
            })
        })
    }

    fn token_by_hash(&self, h: &Hash) -> Result<Option<TokenRecord>, StoreError> {
        let row = self
            .run(|c| {
                c.query_opt(
                    "SELECT id, hash, role, name, product, created_at, revoked_at FROM tokens WHERE hash = $1",
                    &[&&h[..]],
                )
            })
            .map_err(pg)?;
        row.as_ref().map(token_from_row).transpose()
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = self
            .run(|c| {
                c.query(
                    "SELECT id, hash, role, name, product, created_at, revoked_at FROM tokens ORDER BY created_at, id",
                    &[],
                )
            })
            .map_err(pg)?;
        rows.iter().map(token_from_row).collect()
    }

    fn revoke_token(&mut self, id: &str, at: &str) -> Result<bool, StoreError> {
        let n = self
            .run(|c| c.execute("UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", &[&id, &at]))
            .map_err(pg)?;
        Ok(n == 1)
    }

    fn reader(&self) -> Result<Box<dyn LedgerStore>, StoreError> {
        Ok(Box::new(PostgresStore::open_read_only(&self.url)?))
    }

    fn shared(&self) -> bool {
        true
    }

    fn hold_appends(&mut self, hold: bool) -> Result<(), StoreError> {
        let sql = if hold { "SELECT pg_advisory_lock($1)" } else { "SELECT pg_advisory_unlock($1)" };
        let lock_timeout = self.lock_timeout_sql(false);
        self.run(|c| {
            c.batch_execute(&lock_timeout)?;
            let taken = c.execute(sql, &[&APPEND_LOCK]);
            let reset = c.batch_execute("RESET lock_timeout");
            taken.and(reset)
        })
        .map_err(pg)?;
        Ok(())
    }

    fn follow(&self) -> Result<Option<Box<dyn crate::Follow>>, StoreError> {
        let listen = format!("LISTEN {}", quote_ident(&self.channel));
        let client = offload(|| {
            let mut client = tls::connect(&self.url)?;
            client.batch_execute(&listen).map_err(pg)?;
            Ok::<_, StoreError>(client)
        })?;
        Ok(Some(Box::new(PgFollower { client: Some(client) })))
    }

    fn heartbeat(&mut self, n: &NodeRecord) -> Result<(), StoreError> {
        let seq = int(n.seq, "node seq")?;
        self.run(|c| {
            c.execute(
                "INSERT INTO nodes (id, address, seq, digest, heartbeat_at) VALUES ($1, $2, $3, $4, now())
                 ON CONFLICT (id) DO UPDATE SET address = excluded.address, seq = excluded.seq,
                     digest = excluded.digest, heartbeat_at = excluded.heartbeat_at",
                &[&n.id, &n.address, &seq, &&n.digest[..]],
            )
        })
        .map_err(pg)?;
        Ok(())
    }

    fn nodes(&self, within: std::time::Duration) -> Result<Vec<NodeRecord>, StoreError> {
        let ms = i64::try_from(within.as_millis()).unwrap_or(i64::MAX);
        let rows = self
            .run(|c| {
                c.query(
                    "SELECT id, address, seq, digest,
                            GREATEST(0, (EXTRACT(EPOCH FROM (now() - heartbeat_at)) * 1000))::BIGINT
                     FROM nodes WHERE heartbeat_at > now() - make_interval(secs => $1::BIGINT / 1000.0)
                     ORDER BY id",
                    &[&ms],
                )
            })
            .map_err(pg)?;
        rows.iter()
            .map(|row| {
                let id: String = row.get(0);
                Ok(NodeRecord {
                    address: row.get(1),
                    seq: uint(row.get(2), "node seq")?,
                    digest: hash(row.get(3), || format!("node {id}"))?,
                    age_ms: uint(row.get(4), "heartbeat age")?,
                    id,
                })
            })
            .collect()
    }
}
