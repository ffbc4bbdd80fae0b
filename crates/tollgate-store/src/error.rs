use std::fmt;

/// Why a store operation failed.
///
/// `Conflict` and `Duplicate` are expected outcomes of concurrency and retries (the server
/// catches up or replays the stored response); `Busy` is worth retrying later; the rest
/// are bugs in the caller (`Invalid`), or trouble with the database itself.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The log does not have the length the writer expected: someone else appended first.
    #[error("log length is {actual}, expected {expected}")]
    Conflict { expected: u64, actual: u64 },

    /// A record with this unique key already exists (with different content, where the
    /// operation is otherwise idempotent).
    #[error("{what} already exists: {key}")]
    Duplicate { what: Unique, key: String },

    /// The thing named does not exist (for example the database file of a read-only open).
    #[error("not found: {0}")]
    NotFound(String),

    /// A stored row is malformed. `index` names the event when the row is one.
    #[error("corrupt store{}: {detail}", index.map(|i| format!(" at event {i}")).unwrap_or_default())]
    Corrupt { index: Option<u64>, detail: String },

    /// The arguments cannot be right (for example a checkpoint beyond the end of the log).
    #[error("invalid argument: {0}")]
    Invalid(String),

    /// The database is not one this build can use: another application's file, or a schema
    /// version it does not know.
    #[error("incompatible database: {0}")]
    Incompatible(String),

    /// Another connection held the lock for longer than the busy timeout.
    #[error("database is busy")]
    Busy(#[source] rusqlite::Error),

    #[error(transparent)]
    Sqlite(rusqlite::Error),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy(e),
            Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt { index: None, detail: e.to_string() },
            _ => StoreError::Sqlite(e),
        }
    }
}

/// Which unique key a [`StoreError::Duplicate`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unique {
    IdempotencyKey,
    Checkpoint,
    Snapshot,
    TokenId,
    TokenHash,
}

impl fmt::Display for Unique {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unique::IdempotencyKey => "idempotency key",
            Unique::Checkpoint => "checkpoint with another root",
            Unique::Snapshot => "snapshot with another digest",
            Unique::TokenId => "token id",
            Unique::TokenHash => "token hash",
        })
    }
}
