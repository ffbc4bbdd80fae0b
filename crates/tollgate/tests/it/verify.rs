//! `tollgate ledger verify` and the CLI's errors.

use crate::support::*;

async fn issue(c: &reqwest::Client, base: &str, licenses: usize) {
    for i in 0..licenses {
        let r = c
            .post(format!("{base}/v1/licenses"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({"product":"app","plan":"std","licensee":format!("l{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
}

pub async fn make_ledger(dir: &std::path::Path, licenses: usize) {
    let server = start(dir);
    let c = client();
    seed(&c, &server.base).await;
    issue(&c, &server.base, licenses).await;
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
    assert!(out.contains("verifying the SQLite ledger"), "says which ledger: {out}");
    // The PostgreSQL one when TOLLGATE_DATABASE_URL is set, whatever --data says, and
    // without the URL's password.
    let pg = bin()
        .args(["ledger", "verify", "--data"])
        .arg(tmp.path())
        .env("TOLLGATE_DATABASE_URL", "postgres://tg:s3cret@127.0.0.1:1/none")
        .env("TOLLGATE_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&pg.stderr);
    assert!(
        !pg.status.success() && text.contains("verifying the PostgreSQL ledger at postgres://127.0.0.1:1/none"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
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

    // Client commands say how to point them at the server.
    let out = bin().args(["keys", "list", "--url", "127.0.0.1:9", "--token", "t"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("such as http://127.0.0.1:8080"), "{err}");
    let out = bin().args(["keys", "list", "--url", "http://127.0.0.1:9", "--token", "t"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is the server running there") && err.contains("--url"), "{err}");

    // A port in use is refused before anything is written.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fresh = tmp.path().join("fresh");
    let out = bin()
        .args(["serve", "--listen", &taken.local_addr().unwrap().to_string(), "--data"])
        .arg(&fresh)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot listen on"), "{err}");
    assert!(!fresh.exists(), "no data directory, token or key was made");

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

/// A ledger rewritten whole (every hash and checkpoint recomputed and re-signed under a
/// new key), or cut short with its checkpoints, passes a check that trusts only what the
/// file holds. Against a checkpoint and key kept outside it, neither passes.
#[tokio::test]
async fn verify_against_a_checkpoint_and_key_kept_outside_the_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, other) = (tmp.path().join("one"), tmp.path().join("other"));
    make_ledger(&other, 1).await;
    let server = start(&one);
    let c = client();
    seed(&c, &server.base).await;
    issue(&c, &server.base, 6).await;
    let text = |path: &str| {
        let c = c.clone();
        let url = format!("{}{path}", server.base);
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let note = tmp.path().join("kept.checkpoint");
    std::fs::write(&note, text("/v1/ledger/checkpoint").await).unwrap();
    let key = text("/v1/ledger/key").await.trim().to_string();
    server.stop();
    let dir = |d: &std::path::Path| d.to_str().unwrap().to_string();
    let check = |data: &str, with_key: bool| {
        let mut args = vec!["ledger", "verify", "--data", data, "--checkpoint", note.to_str().unwrap()];
        if with_key {
            args.extend(["--key", key.as_str()]);
        }
        run(&args)
    };

    let (ok, out) = check(&dir(&one), true);
    assert!(ok && out.contains("extends the checkpoint") && out.contains("signed by the key given"), "{out}");
    // The key may be given as the file it was saved to.
    let key_file = tmp.path().join("key.txt");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let (ok, out) = run(&[
        "ledger",
        "verify",
        "--data",
        &dir(&one),
        "--checkpoint",
        note.to_str().unwrap(),
        "--key",
        key_file.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("signed by the key given"), "{out}");
    // Another ledger, signed by another key: refused with the key, and without it.
    let (ok, out) = check(&dir(&other), true);
    assert!(!ok && out.contains("not by the key given"), "{out}");
    let (ok, out) = check(&dir(&other), false);
    assert!(!ok && out.contains("does not verify"), "{out}");
    let size: u64 = std::fs::read_to_string(&note).unwrap().lines().nth(1).unwrap().parse().unwrap();
    assert!(out.contains(&format!("tree size {size} ")), "names the checkpoint's size, {size}: {out}");
    // The same ledger cut back (a restore to an earlier point): events it held are gone.
    let backup = tmp.path().join("one.db");
    let (ok, out) = run(&["backup", "--data", &dir(&one), "--out", backup.to_str().unwrap()]);
    assert!(ok, "{out}");
    let cut = tmp.path().join("cut");
    let (ok, out) = run(&["restore", "--from", backup.to_str().unwrap(), "--data", &dir(&cut), "--until-seq", "3"]);
    assert!(ok, "{out}");
    let (ok, out) = check(&dir(&cut), true);
    assert!(!ok && out.contains("has only 3 events"), "{out}");
    // With the key alone, the ledger's own checkpoints are what the key is checked
    // against; a ledger whose checkpoints were deleted has nothing to show for it.
    let (ok, out) = run(&["ledger", "verify", "--data", &dir(&one), "--key", key.as_str()]);
    assert!(ok && out.contains("signed by the key given"), "{out}");
    let bare = tmp.path().join("bare");
    let (ok, out) = run(&["restore", "--from", backup.to_str().unwrap(), "--data", &dir(&bare)]);
    assert!(ok, "{out}");
    rusqlite::Connection::open(bare.join("tollgate.db")).unwrap().execute("DELETE FROM checkpoints", []).unwrap();
    let (ok, out) = run(&["ledger", "verify", "--data", &dir(&bare), "--key", key.as_str()]);
    assert!(!ok && out.contains("holds no checkpoint"), "{out}");
    let (ok, out) = run(&["ledger", "verify", "--data", &dir(&one), "--key", "nonsense"]);
    assert!(!ok && out.contains("--key is not a note verifier key"), "{out}");
}

/// Output into a pipe nobody reads (`tollgate … | head -1` after `head` left) does not
/// crash the command: it did its work, and says so by its exit code. It used to panic
/// in `println!` and exit 101.
#[tokio::test]
async fn a_closed_stdout_is_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    make_ledger(tmp.path(), 1).await;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status =
        bin().args(["ledger", "verify", "--data"]).arg(tmp.path()).stdout(writer).env("TOLLGATE_LOG", "warn").status();
    assert_eq!(status.unwrap().code(), Some(0));
}
