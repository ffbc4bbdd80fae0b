//! `tollgate ledger verify` and the CLI's errors.

use crate::support::*;

async fn make_ledger(dir: &std::path::Path, licenses: usize) {
    let server = start(dir);
    let c = client();
    seed(&c, &server.base).await;
    for i in 0..licenses {
        let r = c
            .post(format!("{}/v1/licenses", server.base))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({"product":"app","plan":"std","licensee":format!("l{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    // Make sure a checkpoint covers everything before stopping.
    c.get(format!("{}/v1/ledger/checkpoint", server.base)).send().await.unwrap();
    server.stop();
}

/// Opens the database as an attacker or a failing disk would: the append-only
/// triggers are no obstacle to someone with the file.
fn tamper(dir: &std::path::Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(dir.join("tollgate.db")).unwrap();
    db.execute_batch("DROP TRIGGER events_no_update;").unwrap();
    db
}

fn flip_byte(dir: &std::path::Path, index: i64) {
    let db = tamper(dir);
    let mut leaf: Vec<u8> = db.query_row("SELECT leaf FROM events WHERE idx = ?1", [index], |r| r.get(0)).unwrap();
    let mid = leaf.len() / 2;
    leaf[mid] ^= 0x01;
    db.execute("UPDATE events SET leaf = ?1 WHERE idx = ?2", rusqlite::params![leaf, index]).unwrap();
}

#[tokio::test]
async fn verify_passes_on_a_good_ledger_and_names_the_first_bad_event() {
    let tmp = tempfile::tempdir().unwrap();
    make_ledger(tmp.path(), 8).await;
    let (ok, out) = verify(tmp.path());
    assert!(ok, "{out}");
    // The catalog (2), the 8 licenses, and whatever the server itself recorded at start.
    let events: u64 = out.split("ok: ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    assert!(events >= 10, "{out}");

    flip_byte(tmp.path(), 6);
    let (ok, out) = verify(tmp.path());
    assert!(!ok, "a flipped byte must fail verification: {out}");
    assert!(out.contains("event seq 7 (leaf index 6)"), "names the sequence number: {out}");

    // The server refuses to start on it too, naming the same event and what to do.
    let out = bin()
        .args(["serve", "--data"])
        .arg(tmp.path())
        .args(["--listen", "127.0.0.1:0"])
        .env("TOLLGATE_BOOTSTRAP_TOKEN", ADMIN)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("event seq 7") && err.contains("ledger verify"), "{err}");
}

#[tokio::test]
async fn a_rewritten_event_with_a_matching_hash_is_caught_by_the_signed_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    make_ledger(tmp.path(), 3).await;
    // A forger who also recomputes the stored leaf hash still cannot match the
    // signed root.
    let db = tamper(tmp.path());
    let (idx, leaf): (i64, Vec<u8>) = db
        .query_row("SELECT idx, leaf FROM events WHERE CAST(leaf AS TEXT) LIKE '%\"licensee\":\"l1\"%'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let forged = String::from_utf8(leaf).unwrap().replace("\"l1\"", "\"lX\"").into_bytes();
    let hash = tollgate_core::merkle::leaf_hash(&forged);
    db.execute(
        "UPDATE events SET leaf = ?1, leaf_hash = ?2 WHERE idx = ?3",
        rusqlite::params![forged, hash.to_vec(), idx],
    )
    .unwrap();
    drop(db);
    let (ok, out) = verify(tmp.path());
    assert!(!ok, "{out}");
    assert!(out.contains("checkpoint at tree size"), "{out}");
}

#[test]
fn cli_errors_say_what_to_do() {
    let out = bin().args(["ledger", "verify", "--data", "/nonexistent/dir"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no ledger at") && err.contains("--data"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let out = bin().args(["token", "create", "--role", "wizard", "--data"]).arg(tmp.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use admin, issuer, auditor or product"));

    let out = bin().args(["serve", "--listen", "not-an-address"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap rejects it");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

#[tokio::test]
async fn token_create_works_against_a_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path());
    let out = bin()
        .args(["token", "create", "--role", "auditor", "--name", "ci", "--data"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(secret.starts_with("tg_"));
    let c = client();
    let r = c.get(format!("{}/v1/ledger/entries", server.base)).bearer_auth(&secret).send().await.unwrap();
    assert_eq!(r.status(), 200, "the new auditor token reads the ledger");
    let r = c
        .post(format!("{}/v1/products", server.base))
        .bearer_auth(&secret)
        .json(&serde_json::json!({"key":"x","name":"X"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "and only reads");
    server.stop();
}
