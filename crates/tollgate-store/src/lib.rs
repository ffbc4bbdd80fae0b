//! The ledger store: where Tollgate's events, checkpoints, snapshots, idempotency records and
//! API tokens live.
//!
//! - [`LedgerStore`] is the trait the server programs against. It is blocking and
//!   object-safe, so the server holds a `Box<dyn LedgerStore>` and a PostgreSQL backend can
//!   sit beside SQLite later.
//! - [`SqliteStore`] (in `sqlite`) is the embedded default: one file, WAL, `synchronous=FULL`.
//! - [`conformance`] is the one test suite every backend must pass.
//!
//! Invariants, stated as absences:
//! - The store never interprets a leaf: it keeps the exact bytes and the leaf hash the
//!   caller computed, and never hashes anything itself.
//! - No index is ever skipped, rewritten or deleted: events sit at `0..len` and `append`
//!   only adds at `len` (checked inside the writing transaction, so two writers can never
//!   both succeed).
//! - Nothing returns `Ok` from a write before its transaction is durable.
//! - A malformed row is an error ([`StoreError::Corrupt`]), never a panic.

#![forbid(unsafe_code)]

pub mod conformance;
mod error;
mod postgres;
mod sqlite;
pub mod test_schema;

pub use error::{StoreError, Unique};
pub use postgres::PgFollower;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// A SHA-256 digest: an RFC 6962 leaf hash, a tree root or a state digest.
///
/// Defined here rather than taken from `tollgate-core` so that the store does not depend on
/// the domain.
pub type Hash = [u8; 32];

/// An event to append: its canonical bytes and the leaf hash the caller computed for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEvent<'a> {
    pub leaf: &'a [u8],
    pub leaf_hash: Hash,
}

/// An event as stored, at its 0-based leaf index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub index: u64,
    pub leaf: Vec<u8>,
    pub leaf_hash: Hash,
}

/// The response remembered for an idempotency key, written in the same transaction as the
/// events the request produced, so a retry finds either both or neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub scope: String,
    pub key: String,
    pub request_hash: Hash,
    pub status: u16,
    pub body: Vec<u8>,
    /// RFC 3339.
    pub created_at: String,
}

/// A signed checkpoint of the log at `size` leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRecord {
    pub size: u64,
    pub root: Hash,
    /// The signed note, as served.
    pub note: String,
}

/// A snapshot of the fold: `state` after applying events `0..seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub seq: u64,
    pub digest: Hash,
    pub state: Vec<u8>,
}

/// One server's last heartbeat into a shared store: where it is in the log and the
/// digest of its state there, so that nodes which disagree can be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    pub address: String,
    pub seq: u64,
    pub digest: Hash,
    /// Milliseconds since the heartbeat, by the database's clock (0 when writing).
    pub age_ms: u64,
}

/// Wakes a follower of a shared log when another writer appended.
pub trait Follow: Send {
    /// Waits up to `timeout` for an append by anyone; `true` if one was announced.
    /// Announcements that arrived meanwhile are drained together.
    fn wait(&mut self, timeout: std::time::Duration) -> Result<bool, StoreError>;
}

/// An API token, stored by the hash of its secret (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub hash: Hash,
    pub role: String,
    pub name: String,
    pub product: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub revoked_at: Option<String>,
}

/// The idempotency scope of the writes that are not ledger events (API tokens, minted
/// license tokens): their claims are idempotency records under this scope
/// ([`LedgerStore::claim_idempotency`]), pruned by age and cleared by a point-in-time
/// restore with every other record. Ledger writes are scoped by token ids (`tok_…`).
/// (Earlier builds kept them in `meta`, under [`LEGACY_CLAIM_PREFIX`], where nothing
/// pruned them: [`LedgerStore::adopt_legacy_claims`] moves them here.)
pub const OUTSIDE_LEDGER_SCOPE: &str = "outside-ledger";

/// Where earlier builds kept those claims in `meta`.
pub const LEGACY_CLAIM_PREFIX: &str = "idempotency/";

/// The idempotency record of a claim an earlier build kept in `meta` (`{"request":
/// "<hex SHA-256>", "answer": {…}}` under `idempotency/<key>`), stamped `now`; `None`
/// for a value that is not one (it could only fail the request that found it).
pub fn legacy_claim(meta_key: &str, value: &[u8], now: &str) -> Option<IdempotencyRecord> {
    let key = meta_key.strip_prefix(LEGACY_CLAIM_PREFIX)?;
    let claim: serde_json::Value = serde_json::from_slice(value).ok()?;
    let request: Hash = hex::decode(claim.get("request")?.as_str()?).ok()?.try_into().ok()?;
    let answer = claim.get("answer").filter(|a| a.is_object())?;
    Some(IdempotencyRecord {
        scope: OUTSIDE_LEDGER_SCOPE.to_owned(),
        key: key.to_owned(),
        request_hash: request,
        status: 0,
        body: serde_json::to_vec(answer).ok()?,
        created_at: now.to_owned(),
    })
}

/// Legacy claims moved per call, each call one transaction.
pub(crate) const ADOPT_CHUNK: i64 = 1_000;

/// Durable storage for the ledger and what hangs off it.
///
/// Writes take `&mut self`: the server has one writer that owns its store and batches the
/// events of many requests into one `append` (group commit). Readers open their own
/// handles.
#[expect(
    clippy::len_without_is_empty,
    reason = "`len` is the next index, used for appends; a fallible `is_empty` would be noise"
)]
pub trait LedgerStore: Send {
    /// Appends `events` at indexes `expected_len..` and stores `idempotency`, in one
    /// transaction.
    ///
    /// Nothing is written, and the call fails, if the log length is not `expected_len`
    /// ([`StoreError::Conflict`]) or if one of the `(scope, key)` pairs already exists or is
    /// repeated in `idempotency` ([`StoreError::Duplicate`]).
    fn append(
        &mut self,
        expected_len: u64,
        events: &[NewEvent<'_>],
        idempotency: &[IdempotencyRecord],
    ) -> Result<(), StoreError>;

    /// The number of events in the log, which is also the index the next event gets.
    fn len(&self) -> Result<u64, StoreError>;

    /// The events with index in `start..end`, ascending; fewer (possibly none) if the log
    /// ends before `end`. `start > end` is [`StoreError::Invalid`].
    fn read(&self, start: u64, end: u64) -> Result<Vec<StoredEvent>, StoreError>;

    /// Calls `f` with every event from `start` to the end of the log, ascending, one at a
    /// time, without holding them all in memory. It sees the log as it was when the scan
    /// began. An error from `f` stops the scan and is returned as is.
    fn scan(&self, start: u64, f: &mut dyn FnMut(StoredEvent) -> Result<(), StoreError>) -> Result<(), StoreError>;

    fn idempotency(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Deletes up to `limit` idempotency records whose `created_at` sorts before `before`
    /// byte by byte (the server passes its cutoff cut to the second, `YYYY-MM-DDTHH:MM:SS`,
    /// which every stamp of that second or later sorts after), oldest first, in one
    /// short transaction, and returns how many it deleted. A key whose record is gone is new
    /// again: a retry after the retention period is a new request.
    fn prune_idempotency(&mut self, before: &str, limit: usize) -> Result<usize, StoreError>;

    /// Stores `record` unless its `(scope, key)` is taken, in a transaction of its own,
    /// and returns the record that stands afterwards: `record`, or the first writer's
    /// when several race (across nodes too). For writes outside the ledger, whose
    /// idempotency cannot ride on an `append`; pruned like every record.
    fn claim_idempotency(&mut self, record: &IdempotencyRecord) -> Result<IdempotencyRecord, StoreError>;

    /// Moves up to a thousand claims that earlier builds kept in `meta` (never pruned)
    /// to idempotency records stamped `now`, so that they are pruned a retention later;
    /// drops a value there that is not a claim. Returns how many it took off `meta`
    /// (0 once none is left). The server calls it at start and at every pruning tick,
    /// so claims that nodes of an earlier build still make during a rolling upgrade
    /// are moved too.
    fn adopt_legacy_claims(&mut self, now: &str) -> Result<usize, StoreError>;

    /// Stores a checkpoint. Storing the same size and root again succeeds and keeps the first
    /// note; the same size with another root is [`StoreError::Duplicate`]; a size beyond the
    /// log length is [`StoreError::Invalid`].
    fn put_checkpoint(&mut self, cp: &CheckpointRecord) -> Result<(), StoreError>;

    /// The checkpoint with the largest size.
    fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>, StoreError>;

    /// All checkpoints, ascending by size.
    fn checkpoints(&self) -> Result<Vec<CheckpointRecord>, StoreError>;

    /// Stores a snapshot. The same seq and digest again succeeds and keeps the first state;
    /// the same seq with another digest (a fold that is not deterministic) is
    /// [`StoreError::Duplicate`]; a seq beyond the log length is [`StoreError::Invalid`].
    fn put_snapshot(&mut self, s: &SnapshotRecord) -> Result<(), StoreError>;

    /// `(seq, digest)` of every snapshot, newest (largest seq) first.
    fn snapshot_seqs(&self) -> Result<Vec<(u64, Hash)>, StoreError>;

    fn load_snapshot(&self, seq: u64) -> Result<Option<SnapshotRecord>, StoreError>;

    /// Deletes all but the `keep` newest snapshots.
    fn prune_snapshots(&mut self, keep: usize) -> Result<(), StoreError>;

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Inserts or replaces.
    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Inserts `value` unless `key` is set, and returns what is stored afterwards: the
    /// first writer's value when several race (nodes starting together create one
    /// identity, not one each). The default is enough for a store with one writer.
    fn meta_insert(&mut self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        if let Some(v) = self.meta(key)? {
            return Ok(v);
        }
        self.set_meta(key, value)?;
        Ok(value.to_vec())
    }

    /// Raises the number stored under `key` (8 bytes, big-endian) to at least `value`,
    /// never lowering it, and returns what is stored afterwards: several nodes raising
    /// one mark end at the highest, whatever their order. `value` must not be negative
    /// (stores may compare the bytes). The default is enough for a store with one
    /// writer.
    fn meta_raise(&mut self, key: &str, value: i64) -> Result<i64, StoreError> {
        let stored = self.meta(key)?.and_then(|b| <[u8; 8]>::try_from(b).ok()).map(i64::from_be_bytes);
        match stored {
            Some(s) if s >= value => Ok(s),
            _ => {
                self.set_meta(key, &value.to_be_bytes())?;
                Ok(value)
            }
        }
    }

    /// Fails with [`StoreError::Duplicate`] if the id or the hash is already stored.
    fn insert_token(&mut self, t: &TokenRecord) -> Result<(), StoreError>;

    fn token_by_hash(&self, hash: &Hash) -> Result<Option<TokenRecord>, StoreError>;

    /// All tokens, revoked ones included, ordered by `created_at` then `id`.
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Marks the token revoked at `at`. Returns `false` if there is no such token or it was
    /// already revoked (its first `revoked_at` is kept).
    fn revoke_token(&mut self, id: &str, at: &str) -> Result<bool, StoreError>;

    /// Another handle on the same store for reads, usable from another thread while this
    /// one writes. It sees what is committed.
    fn reader(&self) -> Result<Box<dyn LedgerStore>, StoreError>;

    /// True when other processes may append to the same log (PostgreSQL): a writer must
    /// then expect [`StoreError::Conflict`], catch up and follow the log.
    fn shared(&self) -> bool {
        false
    }

    /// While held, no other writer can append (`append` waits for it): a writer that
    /// lost a race takes it to catch up and append without losing again. Released by
    /// `hold_appends(false)` or when the connection ends. A no-op where the store is
    /// not shared.
    fn hold_appends(&mut self, hold: bool) -> Result<(), StoreError> {
        let _ = hold;
        Ok(())
    }

    /// A listener for appends made by any writer (`None`: nobody else appends).
    fn follow(&self) -> Result<Option<Box<dyn Follow>>, StoreError> {
        Ok(None)
    }

    /// Records that node `n.id` is alive at `n.seq` with `n.digest` (a no-op where the
    /// store is not shared).
    fn heartbeat(&mut self, n: &NodeRecord) -> Result<(), StoreError> {
        let _ = n;
        Ok(())
    }

    /// The nodes that sent a heartbeat within `within`, by id.
    fn nodes(&self, within: std::time::Duration) -> Result<Vec<NodeRecord>, StoreError> {
        let _ = within;
        Ok(Vec::new())
    }
}
