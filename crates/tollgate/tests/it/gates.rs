//! `tollgate gates import --unleash FILE` and `gates list` against a child `tollgate serve`.

use serde_json::{Value, json};

use crate::support::{client, get_json, run_remote, seed, start};

#[tokio::test]
async fn gates_import_from_an_unleash_file_and_list() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path());
    let base = server.base.clone();
    let c = client();
    seed(&c, &base).await;
    let file = tmp.path().join("features.json");
    let doc = json!({
        "version": 2,
        "features": [
            {"name":"beta","enabled":true,"strategies":[{"name":"userWithId","parameters":{"userIds":"u1"}}]},
            {"name":"export","enabled":true,"strategies":[{"name":"default","parameters":{}}]}
        ],
        "segments": []
    });
    std::fs::write(&file, doc.to_string()).unwrap();
    let path = file.to_str().unwrap();

    let (ok, out) = run_remote(&["gates", "import", "--unleash", path, "--map", "export=app/a"], &base);
    assert!(ok, "{out}");
    assert!(out.contains("imported 2 gates and 0 segments"), "{out}");
    let g = get_json(&c, &format!("{base}/v1/gates/export")).await;
    assert_eq!(g["definition"]["feature"], json!({"product":"app","feature":"a"}), "{g}");
    let g = get_json(&c, &format!("{base}/v1/gates/beta")).await;
    assert_eq!(g["definition"]["license_required"], false, "{g}");

    let (ok, out) = run_remote(&["gates", "list"], &base);
    assert!(ok, "{out}");
    let listed: Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    let keys: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|g| g["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["beta", "export"]);

    let (ok, out) = run_remote(&["gates", "import", "--unleash", path, "--map", "export"], &base);
    assert!(!ok && out.contains("expected GATE=PRODUCT/FEATURE"), "{out}");
    let (ok, out) = run_remote(&["gates", "import", "--unleash", path, "--map", "export=app/nope"], &base);
    assert!(!ok && out.contains("UNKNOWN_FEATURE: "), "the server's refusal is shown: {out}");
    assert!(
        out.contains("has no feature 'nope'") && !out.contains("\"type\""),
        "as code and detail, not raw JSON: {out}"
    );
    std::fs::write(&file, "{not json").unwrap();
    let (ok, out) = run_remote(&["gates", "import", "--unleash", path], &base);
    assert!(!ok && out.contains("is not JSON"), "{out}");
    server.stop();
}
