//! Corruption drills: each damage has its documented outcome (docs/OPERATIONS.md).

use tollgate_store::LedgerStore;

use crate::support::*;

async fn licenses(c: &reqwest::Client, base: &str, n: usize) {
    for i in 0..n {
        let r = c
            .post(format!("{base}/v1/licenses"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({"product":"app","plan":"std","licensee":format!("c{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
}

/// The catalog and 12 licenses, with a snapshot every 5 events; the server stopped.
async fn ledger_with_snapshots(dir: &std::path::Path, c: &reqwest::Client) {
    let server = start_with(dir, &["--snapshot-every", "5"], None);
    seed(c, &server.base).await;
    licenses(c, &server.base, 12).await;
    server.stop();
}

#[tokio::test]
async fn a_corrupt_snapshot_is_skipped_with_a_warning_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let c = client();
    ledger_with_snapshots(tmp.path(), &c).await;
    let db = tmp.path().join("tollgate.db");
    let newest = {
        let store = tollgate_store::SqliteStore::open_read_only(&db).unwrap();
        let seqs = store.snapshot_seqs().unwrap();
        assert!(!seqs.is_empty(), "snapshots were taken every 5 events");
        seqs[0].0
    };
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut state: Vec<u8> =
            conn.query_row("SELECT state FROM snapshots WHERE seq = ?1", [newest as i64], |r| r.get(0)).unwrap();
        let mid = state.len() / 2;
        state[mid] ^= 0x20;
        conn.execute("UPDATE snapshots SET state = ?1 WHERE seq = ?2", rusqlite::params![state, newest as i64])
            .unwrap();
    }
    let log = tmp.path().join("server.log");
    let server = start_with(tmp.path(), &[], Some(&log));
    assert_eq!(count(&c, &server.base).await, 12, "replay from an older snapshot or genesis lost nothing");
    server.stop();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("snapshot skipped: its digest does not match its content"), "warned: {log}");
    let (ok, out) = verify(tmp.path());
    assert!(ok, "{out}");
}

#[tokio::test]
async fn a_truncated_database_file_stops_start_up_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path());
    let c = client();
    seed(&c, &server.base).await;
    licenses(&c, &server.base, 200).await;
    server.stop();
    let db = tmp.path().join("tollgate.db");
    let len = std::fs::metadata(&db).unwrap().len();
    assert!(len > 16 * 1024, "a database big enough to cut: {len}");
    std::fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(len / 2).unwrap();
    let _ = std::fs::remove_file(tmp.path().join("tollgate.db-wal"));
    let _ = std::fs::remove_file(tmp.path().join("tollgate.db-shm"));

    let out = bin()
        .args(["serve", "--data"])
        .arg(tmp.path())
        .args(["--listen", "127.0.0.1:0"])
        .env("TOLLGATE_BOOTSTRAP_TOKEN", ADMIN)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must not start on a truncated ledger");
    assert!(err.contains("error:"), "{err}");
    assert!(!err.contains("panicked"), "a clear error, not a panic: {err}");
    let (ok, out) = verify(tmp.path());
    assert!(!ok, "verify fails too: {out}");
}

/// A snapshot forged to hold another state (with the digest of its own bytes, so start-up
/// would take it) is caught by `ledger verify`, which folds the ledger and compares
/// the state at the snapshot's sequence.
#[tokio::test]
async fn a_forged_snapshot_fails_ledger_verify_naming_its_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let c = client();
    ledger_with_snapshots(tmp.path(), &c).await;
    let (ok, out) = verify(tmp.path());
    assert!(ok && out.contains("snapshots verified"), "{out}");
    let db = tmp.path().join("tollgate.db");
    let seq = {
        let store = tollgate_store::SqliteStore::open_read_only(&db).unwrap();
        store.snapshot_seqs().unwrap()[0].0
    };
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let state: Vec<u8> =
            conn.query_row("SELECT state FROM snapshots WHERE seq = ?1", [seq as i64], |r| r.get(0)).unwrap();
        // Another licensee on the first license, and a digest that matches the bytes.
        let text = String::from_utf8(state).unwrap();
        let forged = text.replacen("\"licensee\":\"c0\"", "\"licensee\":\"mallory\"", 1).into_bytes();
        assert_ne!(forged, text.as_bytes(), "the snapshot names licensee c0");
        let digest = tollgate_core::state::digest_of(&forged);
        conn.execute(
            "UPDATE snapshots SET state = ?1, digest = ?2 WHERE seq = ?3",
            rusqlite::params![forged, &digest[..], seq as i64],
        )
        .unwrap();
    }
    let (ok, out) = verify(tmp.path());
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("snapshot at seq {seq} does not match the ledger")), "{out}");

    // The same forged state filed as a snapshot at sequence 0, the others gone: start-up
    // would take it as its base and replay every event on top. Verify folds from 1 and
    // used to pass it by.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute("UPDATE snapshots SET seq = 0 WHERE seq = ?1", [seq as i64]).unwrap();
        conn.execute("DELETE FROM snapshots WHERE seq <> 0", []).unwrap();
    }
    let (ok, out) = verify(tmp.path());
    assert!(!ok, "{out}");
    assert!(out.contains("snapshot at seq 0 does not match the ledger"), "{out}");
}
