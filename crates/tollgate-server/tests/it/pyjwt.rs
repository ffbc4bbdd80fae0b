//! Interoperability: Python's PyJWT, loading the server's JWKS, verifies Tollgate
//! tokens before and after a key rotation. Needs `python3` with `pyjwt` and
//! `cryptography` (`.ci/run` installs them). Without them the test fails under CI=true
//! and is skipped, saying why, elsewhere.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::spawn_app;
use crate::tokens::{seed, token};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pyjwt/verify_tokens.py")
}

fn python_ready() -> Result<(), String> {
    match Command::new("python3").args(["-c", "import jwt, cryptography; print(jwt.__version__)"]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            Err(format!("python3 cannot import jwt and cryptography: {}", String::from_utf8_lossy(&o.stderr).trim()))
        }
        Err(e) => Err(format!("python3 is not runnable: {e}")),
    }
}

fn pyjwt(jwks_url: &str, tokens: &[&str]) -> Vec<Value> {
    let out = Command::new("python3")
        .arg(script())
        .args([jwks_url, "cad", "tollgate"])
        .args(tokens)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "PyJWT refused a Tollgate token:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

// Multi-threaded: python3 runs blocking while the server answers its JWKS fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_verifies_tokens_before_and_after_rotation() {
    if let Err(why) = python_ready() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but the PyJWT interoperability test cannot run: {why}");
        }
        eprintln!("SKIPPED pyjwt_verifies_tokens_before_and_after_rotation: {why} (pip install pyjwt cryptography)");
        return;
    }
    let app = spawn_app().await;
    let lic = seed(&app).await;
    let id = lic["id"].as_str().unwrap();
    let url = format!("{}/.well-known/jwks.json", app.base);

    let (before, _) = token(&app, id, json!({})).await;
    crate::tokens::activate(&app, id, "fp").await;
    let (offline, _) = token(&app, id, json!({"offline": true, "fingerprint": "fp"})).await;
    let out = pyjwt(&url, &[&before, &offline]);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["sub"], id);
    let old_kid = out[0]["kid"].clone();

    let r = app.post("/v1/keys/rotate", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (after, _) = token(&app, id, json!({})).await;
    let out = pyjwt(&url, &[&before, &offline, &after]);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["kid"], old_kid, "the token signed before rotation still verifies");
    assert_ne!(out[2]["kid"], old_kid, "the new key signs after rotation");
    assert_eq!(out[2]["kid"], r.body["current"]);
}
