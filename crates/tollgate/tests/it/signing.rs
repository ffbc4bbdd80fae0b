//! `tollgate token verify`, `keys rotate|list` and `offline activate` against a child
//! `tollgate serve`.

use serde_json::{Value, json};

use crate::support::{ADMIN, client, run_remote, start};

async fn post(base: &str, path: &str, body: Value) -> Value {
    let r = client().post(format!("{base}{path}")).bearer_auth(ADMIN).json(&body).send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

#[tokio::test]
async fn token_verify_key_rotation_and_offline_activation_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path());
    let base = server.base.clone();
    assert!(tmp.path().join("master.key").exists(), "a master key is generated when none is given");
    post(&base, "/v1/products", json!({"key":"cad","name":"CAD","features":[{"key":"a","name":"A"}]})).await;
    post(&base, "/v1/plans", json!({"key":"p","product":"cad","name":"P","features":["a"],"offline_days":3})).await;
    let lic = post(&base, "/v1/licenses", json!({"product":"cad","plan":"p","licensee":"x"})).await;
    let id = lic["id"].as_str().unwrap();
    let token =
        post(&base, &format!("/v1/licenses/{id}/tokens"), json!({})).await["token"].as_str().unwrap().to_string();

    let jwks_url = format!("{base}/.well-known/jwks.json");
    let (ok, out) = run_remote(&["token", "verify", "--jwks", &jwks_url, "--audience", "cad", &token], &base);
    assert!(ok && out.contains(id), "{out}");
    let (ok, out) = run_remote(&["token", "verify", "--jwks", &jwks_url, "--audience", "other", &token], &base);
    assert!(!ok && out.contains("REFUSED TOKEN_WRONG_AUDIENCE"), "{out}");
    let file = tmp.path().join("jwks.json");
    std::fs::write(&file, client().get(&jwks_url).send().await.unwrap().text().await.unwrap()).unwrap();
    let (ok, out) = run_remote(&["token", "verify", "--jwks", file.to_str().unwrap(), &token], &base);
    assert!(ok, "{out}");

    let (ok, out) = run_remote(&["keys", "rotate", "--reason", "cli test"], &base);
    assert!(ok && out.contains("current"), "{out}");
    let (ok, out) = run_remote(&["keys", "list"], &base);
    assert!(ok, "{out}");
    let listed: Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2);
    // The old token still verifies against the live JWKS; the saved file lacks the new key.
    let (ok, out) = run_remote(&["token", "verify", "--jwks", &jwks_url, &token], &base);
    assert!(ok, "{out}");

    let (request, _secret) =
        tollgate_sdk::activation::activation_request(lic["key"].as_str().unwrap(), "fp-cli").unwrap();
    let req_path = tmp.path().join("req.json");
    let out_path = tmp.path().join("license.json");
    std::fs::write(&req_path, serde_json::to_string(&request).unwrap()).unwrap();
    let (ok, out) = run_remote(
        &["offline", "activate", "--request", req_path.to_str().unwrap(), "--out", out_path.to_str().unwrap()],
        &base,
    );
    assert!(ok, "{out}");
    let license: tollgate_core::token::LicenseFile =
        serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    let jwks: tollgate_sdk::Jwks =
        serde_json::from_str(&client().get(&jwks_url).send().await.unwrap().text().await.unwrap()).unwrap();
    let claims = tollgate_sdk::activation::verify_license_file(&license, &request, &jwks, "cad", None).unwrap();
    assert_eq!(claims.sub, id);
    server.stop();
}
