//! Import and export through the real binary.

use crate::support::*;

#[tokio::test]
async fn csv_import_is_all_or_nothing_idempotent_and_export_round_trips_the_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = start(&data);
    let c = client();
    seed(&c, &server.base).await;
    let base = server.base.clone();

    let good = tmp.path().join("good.csv");
    std::fs::write(
        &good,
        "external_id,product,plan,licensee,status,machines,crm\n\
         K-1,app,std,Acme,,,C-17\n\
         K-2,app,std,Globex,suspended,,\n\
         K-3,app,std,Initech,,fp-a;fp-b,\n",
    )
    .unwrap();
    let args = |file: &std::path::Path, extra: &[&str]| {
        let mut v = vec![
            "import".to_string(),
            "--format".into(),
            "csv".into(),
            file.display().to_string(),
            "--url".into(),
            base.clone(),
            "--token".into(),
            ADMIN.into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let call = |v: Vec<String>| run(&v.iter().map(String::as_str).collect::<Vec<_>>());

    let (ok, out) = call(args(&good, &["--dry-run"]));
    assert!(ok, "{out}");
    assert!(out.contains("would import 3 new, 0 unchanged, 0 refused, of 3 rows"), "{out}");
    assert_eq!(count(&c, &base).await, 0, "a dry run writes nothing");

    let (ok, out) = call(args(&good, &[]));
    assert!(ok, "{out}");
    assert!(out.contains("imported 3 new"), "{out}");
    let k1_id = out.lines().find_map(|l| l.strip_prefix("K-1\t")).expect("the id map names K-1").to_string();
    let r: serde_json::Value = get_json(&c, &format!("{base}/v1/licenses?external_id=K-1")).await;
    assert_eq!(r["items"][0]["id"], k1_id.as_str());
    assert_eq!(r["items"][0]["metadata"]["crm"], "C-17", "other columns become metadata");
    let r: serde_json::Value = get_json(&c, &format!("{base}/v1/licenses?external_id=K-2")).await;
    assert_eq!(r["items"][0]["status"], "suspended");
    let k3 = get_json(&c, &format!("{base}/v1/licenses?external_id=K-3")).await;
    let k3_id = k3["items"][0]["id"].as_str().unwrap();
    let machines: serde_json::Value = get_json(&c, &format!("{base}/v1/licenses/{k3_id}/machines")).await;
    assert_eq!(machines.to_string().matches("fp-").count(), 2, "machines came along: {machines}");

    // The variable this command read before TOLLGATE_URL still points it at the server.
    let out = bin()
        .args(["import", "--format", "csv", good.to_str().unwrap(), "--dry-run", "--token", ADMIN])
        .env_remove("TOLLGATE_URL")
        .env("TOLLGATE_SERVER", &base)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("0 new, 3 unchanged"), "{text}");

    // Running it again adds nothing.
    let (ok, out) = call(args(&good, &[]));
    assert!(ok, "{out}");
    assert!(out.contains("0 new, 3 unchanged"), "{out}");
    assert_eq!(count(&c, &base).await, 3);

    // One bad row refuses the whole file, and the report says which line and why.
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "external_id,product,plan,licensee\nK-4,app,std,Hooli\nK-5,app,nope,Umbrella\nK-6,app,std,\n")
        .unwrap();
    let (ok, out) = call(args(&bad, &[]));
    assert!(!ok, "{out}");
    assert!(out.contains("imported nothing"), "{out}");
    assert!(out.contains("line 3: K-5 (PLAN_NOT_FOUND)"), "{out}");
    assert!(out.contains("line 4: K-6 (INVALID_INPUT): missing field `licensee`"), "{out}");
    assert!(!out.contains("K-4\t"), "a refused import lists no ids, as it made no licenses: {out}");
    assert_eq!(count(&c, &base).await, 3, "nothing half-imported");
    let kids = |jwks: serde_json::Value| -> Vec<String> {
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
    };
    let old_kids = kids(get_json(&c, &format!("{base}/.well-known/jwks.json")).await);
    assert!(!old_kids.is_empty());
    server.stop();

    // Export, then import into an empty store: the same root and state digest.
    let export = tmp.path().join("ledger.jsonl");
    let (ok, out) =
        run(&["export", "--format", "jsonl", "--data", data.to_str().unwrap(), "--out", export.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (_, before) = run(&["ledger", "digest", "--data", data.to_str().unwrap()]);
    let copy = tmp.path().join("copy");
    let (ok, out) = run(&["import", "--format", "jsonl", export.to_str().unwrap(), "--data", copy.to_str().unwrap()]);
    assert!(ok, "{out}");
    let digest = |s: &str| s.lines().find(|l| l.starts_with("state digest:")).map(str::to_string).unwrap();
    assert_eq!(digest(&out), digest(&before), "export then import gives the same state digest");
    let (_, after) = run(&["ledger", "digest", "--data", copy.to_str().unwrap()]);
    assert_eq!(digest(&after), digest(&before));
    let (ok, out) = run(&["import", "--format", "jsonl", export.to_str().unwrap(), "--data", copy.to_str().unwrap()]);
    assert!(!ok && out.contains("already holds a ledger"), "{out}");

    // The copy cannot sign with the exported server's token key (its private half is
    // not in the export): it rotates to its own, which mints tokens, and the old key
    // leaves its JWKS. It used to answer every mint with 500.
    let server = start(&copy);
    let minted = c
        .post(format!("{}/v1/licenses/{k1_id}/tokens", server.base))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 200, "{}", minted.text().await.unwrap());
    let new_kids = kids(get_json(&c, &format!("{}/.well-known/jwks.json", server.base)).await);
    assert!(!new_kids.is_empty() && new_kids.iter().all(|k| !old_kids.contains(k)), "{old_kids:?} {new_kids:?}");
    server.stop();

    // An export never writes over a file, the live database least of all.
    let (ok, out) =
        run(&["export", "--format", "jsonl", "--data", data.to_str().unwrap(), "--out", export.to_str().unwrap()]);
    assert!(!ok && out.contains("a new file"), "{out}");
    // A bad line anywhere leaves nothing: the whole file is checked before any is written.
    let mut lines: Vec<String> = std::fs::read_to_string(&export).unwrap().lines().map(String::from).collect();
    let last = lines.len() - 1;
    lines[last] = "{\"v\":1,\"not\":\"an event\"}".into();
    let spoiled = tmp.path().join("spoiled.jsonl");
    std::fs::write(&spoiled, lines.join("\n") + "\n").unwrap();
    let empty = tmp.path().join("empty");
    let (ok, out) = run(&["import", "--format", "jsonl", spoiled.to_str().unwrap(), "--data", empty.to_str().unwrap()]);
    assert!(!ok && out.contains(&format!(":{}:", last + 1)), "{out}");
    let store = tollgate_store::SqliteStore::open_read_only(&tollgate_server::db_path(&empty));
    assert!(store.is_err() || tollgate_store::LedgerStore::len(&store.unwrap()).unwrap() == 0, "nothing was written");
    // So does a line that decodes and folds but is not its event's canonical form (the
    // same event with a space added): its leaf hash would not be the ledger's.
    let mut lines: Vec<String> = std::fs::read_to_string(&export).unwrap().lines().map(String::from).collect();
    lines[1] = lines[1].replacen(':', ": ", 1);
    std::fs::write(&spoiled, lines.join("\n") + "\n").unwrap();
    let (ok, out) = run(&["import", "--format", "jsonl", spoiled.to_str().unwrap(), "--data", empty.to_str().unwrap()]);
    assert!(!ok && out.contains(":2: not in canonical form"), "{out}");

    // A damaged event is not exported: an import recomputes hashes from the bytes and
    // would take it as sound.
    {
        let db = rusqlite::Connection::open(tollgate_server::db_path(&data)).unwrap();
        db.execute_batch("DROP TRIGGER events_no_update;").unwrap();
        let mut leaf: Vec<u8> = db.query_row("SELECT leaf FROM events WHERE idx = 2", [], |r| r.get(0)).unwrap();
        let at = leaf.windows(2).position(|w| w == b"\":").unwrap() + 5;
        leaf[at] ^= 0x01;
        db.execute("UPDATE events SET leaf = ?1 WHERE idx = 2", rusqlite::params![leaf]).unwrap();
    }
    let damaged = tmp.path().join("damaged.jsonl");
    let (ok, out) =
        run(&["export", "--format", "jsonl", "--data", data.to_str().unwrap(), "--out", damaged.to_str().unwrap()]);
    assert!(!ok && out.contains("event 2 is damaged"), "{out}");
}

/// A 2xx that is no import report (a proxy's page, another service at that address) is
/// not taken for an import of nothing: it fails, saying what to check.
#[tokio::test]
async fn an_answer_that_is_no_import_report_fails_the_import() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut n = 0;
        while let Ok((mut conn, _)) = listener.accept().await {
            n += 1;
            let mut buf = vec![0u8; 65536];
            let _ = conn.read(&mut buf).await;
            let page = "<html>welcome</html>";
            // The second answer says it is 100 MB long (and is not sent).
            let length = if n == 1 { page.len() } else { 100_000_000 };
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n{page}"
            );
            let _ = conn.write_all(answer.as_bytes()).await;
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("rows.csv");
    std::fs::write(&csv, "external_id,product,plan,licensee\nK-1,app,std,Hooli\n").unwrap();
    let url = format!("http://{addr}");
    let csv_again = csv.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run(&["import", "--format", "csv", csv.to_str().unwrap(), "--url", url.as_str(), "--token", ADMIN])
    })
    .await
    .unwrap();
    assert!(!ok && out.contains("without an import report"), "{out}");
    // An answer longer than the CLI reads is refused before it is in memory.
    let url = format!("http://{addr}");
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run(&["import", "--format", "csv", csv_again.to_str().unwrap(), "--url", url.as_str(), "--token", ADMIN])
    })
    .await
    .unwrap();
    assert!(!ok && out.contains("longer than"), "{out}");
}
