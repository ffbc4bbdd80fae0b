//! What only the SQLite backend has: the file, its schema version, corruption on disk,
//! backups and locks.

use std::time::{Duration, Instant};

use rusqlite::Connection;
use tollgate_store::{CheckpointRecord, LedgerStore, NewEvent, SqliteStore, StoreError, StoredEvent};

use crate::SqliteHarness;

fn append(store: &mut SqliteStore, n: u64) {
    let from = store.len().unwrap();
    let leaves: Vec<String> = (from..from + n).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
    let events: Vec<NewEvent<'_>> =
        leaves.iter().map(|l| NewEvent { leaf: l.as_bytes(), leaf_hash: [0x11; 32] }).collect();
    store.append(from, &events, &[]).unwrap();
}

/// A raw connection, for doing to the file what the store never would.
fn raw(h: &SqliteHarness) -> Connection {
    Connection::open(h.path()).unwrap()
}

#[test]
fn open_creates_a_wal_database_with_a_schema_version() {
    let h = SqliteHarness::new();
    let store = SqliteStore::open(h.path()).unwrap();
    assert_eq!(store.path(), h.path());
    let conn = raw(&h);
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, 2);
}

#[test]
fn a_file_of_the_first_schema_is_read_as_it_is_and_migrated_by_a_writer() {
    let h = SqliteHarness::new();
    {
        let mut store = SqliteStore::open(h.path()).unwrap();
        store.append(0, &[NewEvent { leaf: b"e", leaf_hash: [1; 32] }], &[]).unwrap();
    }
    // As the first build left it: no index on idempotency records, version 1.
    let conn = raw(&h);
    conn.execute_batch("DROP INDEX idempotency_created_at; PRAGMA user_version = 1;").unwrap();
    let index = |conn: &rusqlite::Connection| -> bool {
        conn.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'idempotency_created_at')", [], |r| {
            r.get(0)
        })
        .unwrap()
    };

    // A reader (ledger verify, export) reads it without writing.
    let reader = SqliteStore::open_read_only(h.path()).unwrap();
    assert_eq!(reader.len().unwrap(), 1);
    drop(reader);
    assert!(!index(&conn));
    // A writer brings it up to date.
    drop(SqliteStore::open(h.path()).unwrap());
    assert!(index(&conn));
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, 2);
}

#[test]
fn open_read_only_creates_nothing() {
    let h = SqliteHarness::new();
    let err = SqliteStore::open_read_only(h.path()).unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(std::fs::read_dir(h.dir()).unwrap().count(), 0);
}

#[test]
fn another_applications_database_is_refused_and_left_alone() {
    let h = SqliteHarness::new();
    raw(&h).execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');").unwrap();

    for err in [SqliteStore::open(h.path()).unwrap_err(), SqliteStore::open_read_only(h.path()).unwrap_err()] {
        assert!(matches!(err, StoreError::Incompatible(_)), "{err:?}");
    }
    let conn = raw(&h);
    let body: String = conn.query_row("SELECT body FROM notes", [], |r| r.get(0)).unwrap();
    assert_eq!(body, "hi");
    let events: bool =
        conn.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'events')", [], |r| r.get(0)).unwrap();
    assert!(!events);
}

#[test]
fn a_newer_schema_is_refused() {
    let h = SqliteHarness::new();
    drop(SqliteStore::open(h.path()).unwrap());
    raw(&h).pragma_update(None, "user_version", 99).unwrap();
    for err in [SqliteStore::open(h.path()).unwrap_err(), SqliteStore::open_read_only(h.path()).unwrap_err()] {
        assert!(matches!(err, StoreError::Incompatible(ref m) if m.contains("99")), "{err:?}");
    }
}

#[test]
fn events_cannot_be_updated_or_deleted() {
    let h = SqliteHarness::new();
    let mut store = SqliteStore::open(h.path()).unwrap();
    append(&mut store, 2);
    let conn = raw(&h);
    assert!(conn.execute("UPDATE events SET leaf = x'00' WHERE idx = 0", []).is_err());
    assert!(conn.execute("DELETE FROM events WHERE idx = 1", []).is_err());
    assert!(conn.execute("INSERT INTO events VALUES (2, x'00', x'00')", []).is_err(), "hash length");
    assert_eq!(store.len().unwrap(), 2);
}

#[test]
fn a_malformed_leaf_hash_is_corruption_at_its_index() {
    let h = SqliteHarness::new();
    let mut store = SqliteStore::open(h.path()).unwrap();
    append(&mut store, 3);
    raw(&h)
        .execute_batch(
            "PRAGMA ignore_check_constraints = ON;
             DROP TRIGGER events_no_update;
             UPDATE events SET leaf_hash = x'0102' WHERE idx = 1;",
        )
        .unwrap();

    assert_eq!(store.read(0, 1).unwrap().len(), 1);
    let err = store.read(0, 3).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { index: Some(1), .. }), "{err:?}");
    let mut seen = Vec::new();
    let err = store
        .scan(0, &mut |e: StoredEvent| {
            seen.push(e.index);
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { index: Some(1), .. }), "{err:?}");
    assert_eq!(seen, vec![0]);
    assert!(err.to_string().contains("at event 1"), "{err}");
}

#[test]
fn a_missing_event_is_corruption_at_its_index() {
    let h = SqliteHarness::new();
    let mut store = SqliteStore::open(h.path()).unwrap();
    append(&mut store, 3);
    raw(&h).execute_batch("DROP TRIGGER events_no_delete; DELETE FROM events WHERE idx = 1;").unwrap();

    let err = store.read(0, 3).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { index: Some(1), .. }), "{err:?}");
    let err = store.scan(0, &mut |_| Ok(())).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { index: Some(1), .. }), "{err:?}");
    // A tail read past the gap is fine.
    assert_eq!(store.read(2, 3).unwrap().len(), 1);
}

#[test]
fn other_malformed_rows_are_corruption_too() {
    let h = SqliteHarness::new();
    let mut store = SqliteStore::open(h.path()).unwrap();
    append(&mut store, 1);
    store.put_checkpoint(&CheckpointRecord { size: 1, root: [1; 32], note: "n".into() }).unwrap();
    raw(&h)
        .execute_batch(
            "UPDATE checkpoints SET root = x'01';
             INSERT INTO idempotency VALUES ('s', 'k', zeroblob(32), 70000, x'', 't');
             INSERT INTO tokens VALUES ('t', x'0203', 'admin', 'n', NULL, 't', NULL);",
        )
        .unwrap();
    for err in [
        store.latest_checkpoint().unwrap_err(),
        store.checkpoints().unwrap_err(),
        store.idempotency("s", "k").unwrap_err(),
        store.tokens().unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::Corrupt { index: None, .. }), "{err:?}");
    }
}

#[test]
fn backup_is_a_complete_database() {
    let h = SqliteHarness::new();
    let mut store = SqliteStore::open(h.path()).unwrap();
    append(&mut store, 10);
    store.set_meta("m", b"v").unwrap();

    let dest = h.dir().join("backup.db");
    store.backup_to(&dest).unwrap();
    let err = store.backup_to(&dest).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");

    let copy = SqliteStore::open(&dest).unwrap();
    assert_eq!(copy.read(0, 10).unwrap(), store.read(0, 10).unwrap());
    assert_eq!(copy.meta("m").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn a_held_lock_is_busy_after_the_timeout() {
    let h = SqliteHarness::new();
    let mut store = SqliteStore::open(h.path()).unwrap();
    let conn = raw(&h);
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();

    let started = Instant::now();
    let err = store.append(0, &[], &[]).unwrap_err();
    assert!(matches!(err, StoreError::Busy(_)), "{err:?}");
    assert!(started.elapsed() >= Duration::from_secs(4), "waited {:?}", started.elapsed());

    conn.execute_batch("ROLLBACK").unwrap();
    store.append(0, &[], &[]).unwrap();
}
