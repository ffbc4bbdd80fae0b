//! Backup and point-in-time restore drills, through the real binary.

use crate::support::*;

fn field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no '{name}' in: {out}"))
}

async fn issue(c: &reqwest::Client, base: &str, licensee: &str) -> (String, u64) {
    let r = c
        .post(format!("{base}/v1/licenses"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"product":"app","plan":"std","licensee":licensee}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let seq = r.headers()["tollgate-seq"].to_str().unwrap().parse().unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    (v["id"].as_str().unwrap().to_string(), seq)
}

#[tokio::test]
async fn backup_wipe_and_restore_to_a_time_or_sequence_gives_the_recorded_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = start(&data);
    let c = client();
    seed(&c, &server.base).await;

    // Phase A.
    let mut phase_a = Vec::new();
    let mut seq_a = 0;
    for i in 0..5 {
        let (id, seq) = issue(&c, &server.base, &format!("a{i}")).await;
        phase_a.push(id);
        seq_a = seq;
    }
    // The instant between the phases: after every phase-A event, before any phase-B one.
    let t = tollgate_server::engine::now();
    while tollgate_server::engine::now() <= t {
        std::hint::spin_loop();
    }
    let (ok, at_a) = run(&["ledger", "digest", "--data", data.to_str().unwrap(), "--at", &seq_a.to_string()]);
    assert!(ok, "{at_a}");
    let digest_a = field(&at_a, "state digest:");

    // Phase B: more licenses and a suspension.
    let mut phase_b = Vec::new();
    for i in 0..4 {
        phase_b.push(issue(&c, &server.base, &format!("b{i}")).await.0);
    }
    let r =
        c.post(format!("{}/v1/licenses/{}/suspend", server.base, phase_a[0])).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // One request that writes two events (the license, then its overrides).
    let r = c
        .post(format!("{}/v1/licenses", server.base))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"product":"app","plan":"std","licensee":"pair","overrides":{"max_machines":3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let pair_end: u64 = r.headers()["tollgate-seq"].to_str().unwrap().parse().unwrap();
    c.get(format!("{}/v1/ledger/checkpoint", server.base)).send().await.unwrap();

    // Backup while the server runs, then record the end state and wipe.
    let backup = tmp.path().join("backup.db");
    let (ok, out) = run(&["backup", "--data", data.to_str().unwrap(), "--out", backup.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("backup written and verified"), "{out}");
    assert!(std::path::Path::new(&format!("{}.checkpoint", backup.display())).exists());
    let (_, end) = run(&["ledger", "digest", "--data", data.to_str().unwrap()]);
    server.stop();
    std::fs::remove_dir_all(&data).unwrap();

    // Restore to the instant between the phases.
    let by_time = tmp.path().join("by-time");
    let (ok, out) = run(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--data",
        by_time.to_str().unwrap(),
        "--until-time",
        &t.to_string(),
    ]);
    assert!(ok, "{out}");
    assert_eq!(field(&out, "state digest:"), digest_a, "restore --until-time reaches the digest recorded at T");
    assert_eq!(field(&out, "tree size:"), seq_a.to_string());

    // The same by sequence number.
    let by_seq = tmp.path().join("by-seq");
    let (ok, out) = run(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--data",
        by_seq.to_str().unwrap(),
        "--until-seq",
        &seq_a.to_string(),
    ]);
    assert!(ok, "{out}");
    assert_eq!(field(&out, "state digest:"), digest_a);

    // All of it.
    let full = tmp.path().join("full");
    let (ok, out) = run(&["restore", "--from", backup.to_str().unwrap(), "--data", full.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert_eq!(field(&out, "state digest:"), field(&end, "state digest:"));
    // Owner-only, as the server's own data directory: both hold license keys in the clear.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&backup), 0o600, "the backup");
        assert_eq!(mode(&full), 0o700, "the restored directory");
        assert_eq!(mode(&tollgate_server::db_path(&full)) & 0o077, 0, "the restored database");
        let export = tmp.path().join("ledger.jsonl");
        let (ok, out) =
            run(&["export", "--format", "jsonl", "--data", full.to_str().unwrap(), "--out", export.to_str().unwrap()]);
        assert!(ok, "{out}");
        assert_eq!(mode(&export), 0o600, "the export");
    }

    // A server on the point-in-time copy has phase A as it was and no phase B.
    let server = start(&by_time);
    for id in &phase_a {
        let r: serde_json::Value = c
            .get(format!("{}/v1/licenses/{id}", server.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["status"], "active", "phase A as it was at T (the suspension came later)");
    }
    for id in &phase_b {
        let r = c.get(format!("{}/v1/licenses/{id}", server.base)).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(r.status(), 404);
    }
    // And it keeps writing, with the restored log verifying.
    issue(&c, &server.base, "after-restore").await;
    server.stop();
    let (ok, out) = verify(&by_time);
    assert!(ok, "{out}");

    // Refusals say what to do.
    let (ok, out) = run(&["restore", "--from", backup.to_str().unwrap(), "--data", by_time.to_str().unwrap()]);
    assert!(!ok && out.contains("already holds a ledger"), "{out}");
    let (ok, out) = run(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--data",
        tmp.path().join("x").to_str().unwrap(),
        "--until-seq",
        "99999",
    ]);
    assert!(!ok && out.contains("cannot restore to sequence 99999"), "{out}");
    // A cut between two events of one request is refused, naming the cuts around it.
    let inside = tmp.path().join("inside");
    let (ok, out) = run(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--data",
        inside.to_str().unwrap(),
        "--until-seq",
        &(pair_end - 1).to_string(),
    ]);
    assert!(!ok && out.contains("falls inside the events of one request"), "{out}");
    assert!(
        out.contains(&format!("--until-seq {}", pair_end - 2)) && out.contains(&format!("--until-seq {pair_end}")),
        "{out}"
    );
    assert!(!inside.join("tollgate.db").exists());
    // A restore leaves nothing half-built beside the ledger.
    let left: Vec<_> = std::fs::read_dir(&full).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!left.iter().any(|n| n.to_string_lossy().contains("restoring")), "{left:?}");
    let (ok, out) = run(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--data",
        tmp.path().join("y").to_str().unwrap(),
        "--until-time",
        "yesterday",
    ]);
    assert!(!ok && out.contains("--until-time"), "{out}");
    // A point before the first event would restore an empty ledger: refused, saying so.
    let early = tmp.path().join("early");
    let (ok, out) = run(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--data",
        early.to_str().unwrap(),
        "--until-time",
        "2000-01-01T00:00:00Z",
    ]);
    assert!(!ok && out.contains("the restored ledger would be empty"), "{out}");
    assert!(!early.join("tollgate.db").exists());
    let (ok, out) = run(&["backup", "--data", full.to_str().unwrap(), "--out", backup.to_str().unwrap()]);
    assert!(!ok && out.contains("already exists"), "{out}");
    // Nor over a file that would be written beside it.
    let second = tmp.path().join("second.db");
    std::fs::write(tmp.path().join("second.db.checkpoint"), "keep me").unwrap();
    let (ok, out) = run(&["backup", "--data", full.to_str().unwrap(), "--out", second.to_str().unwrap()]);
    assert!(!ok && out.contains("second.db.checkpoint already exists"), "{out}");
    assert!(!second.exists());
    assert_eq!(std::fs::read_to_string(tmp.path().join("second.db.checkpoint")).unwrap(), "keep me");
}
