//! Bad input of every kind gets a 4xx problem, never a 5xx or a panic.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

struct Case {
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn j(method: Method, path: &'static str, body: Value, status: u16, code: &'static str) -> Case {
    Case { method, path, content_type: Some("application/json"), body: body.to_string().into_bytes(), status, code }
}

fn raw(
    method: Method,
    path: &'static str,
    ct: Option<&'static str>,
    body: &[u8],
    status: u16,
    code: &'static str,
) -> Case {
    Case { method, path, content_type: ct, body: body.to_vec(), status, code }
}

async fn check(app: &TestApp, c: &Case) {
    let mut req = app.client.request(c.method.clone(), format!("{}{}", app.base, c.path)).bearer_auth(ADMIN);
    if let Some(ct) = c.content_type {
        req = req.header("content-type", ct);
    }
    let res = req.body(c.body.clone()).send().await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    let r = Resp { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::Null), text };
    let shown = String::from_utf8_lossy(&c.body).chars().take(80).collect::<String>();
    assert_eq!(r.status.as_u16(), c.status, "{} {} {shown}: {}", c.method, c.path, r.text);
    assert_problem(&r, c.status, c.code);
}

#[tokio::test]
async fn every_kind_of_bad_input_is_a_clear_problem() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    app.post("/v1/products", json!({"key":"other","name":"Other","features":[{"key":"z","name":"Z"}]})).await;
    app.post("/v1/plans", json!({"key":"other-plan","product":"other","name":"O","features":["z"]})).await;
    let lic = app.issue("basic", "x").await;
    let _ = lic;
    let long = "x".repeat(10_000);
    let past = "2001-01-01T00:00:00Z";
    let nested = format!(
        r#"{{"product":"cad","plan":"basic","licensee":"x","metadata":{{"a":{}{}}}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let big = vec![b' '; 2 * 1024 * 1024];
    use Method as M;
    let cases = vec![
        raw(M::POST, "/v1/licenses", Some("application/json"), b"not json", 400, "MALFORMED_JSON"),
        raw(M::POST, "/v1/licenses", Some("application/json"), b"{\"product\":", 400, "MALFORMED_JSON"),
        raw(M::POST, "/v1/licenses", Some("application/json"), b"\xff\xfe{}", 400, "MALFORMED_JSON"),
        raw(M::POST, "/v1/licenses", Some("application/json"), nested.as_bytes(), 400, "MALFORMED_JSON"),
        raw(M::POST, "/v1/licenses", Some("text/plain"), b"{}", 415, "UNSUPPORTED_MEDIA_TYPE"),
        raw(M::POST, "/v1/licenses", Some("application/json"), &big, 413, "PAYLOAD_TOO_LARGE"),
        j(M::POST, "/v1/licenses", json!({}), 422, "INVALID_INPUT"),
        j(M::POST, "/v1/licenses", json!([]), 422, "INVALID_INPUT"),
        j(M::POST, "/v1/licenses", json!("string"), 422, "INVALID_INPUT"),
        j(
            M::POST,
            "/v1/licenses",
            json!({"product":"cad","plan":"basic","licensee":"x","bogus":1}),
            422,
            "INVALID_INPUT",
        ),
        j(M::POST, "/v1/licenses", json!({"product":"BAD KEY","plan":"basic","licensee":"x"}), 422, "INVALID_INPUT"),
        j(M::POST, "/v1/licenses", json!({"product":"cad","plan":"basic","licensee":""}), 422, "INVALID_INPUT"),
        j(M::POST, "/v1/licenses", json!({"product":"cad","plan":"basic","licensee":long}), 422, "INVALID_INPUT"),
        j(M::POST, "/v1/licenses", json!({"product":"cad","plan":"basic","licensee":"a\u{0}b"}), 422, "INVALID_INPUT"),
        j(M::POST, "/v1/licenses", json!({"product":"cad","plan":"basic","licensee":5}), 422, "INVALID_INPUT"),
        j(
            M::POST,
            "/v1/licenses",
            json!({"product":"cad","plan":"basic","licensee":"x","expires_at":"tomorrow"}),
            422,
            "INVALID_INPUT",
        ),
        j(
            M::POST,
            "/v1/licenses",
            json!({"product":"cad","plan":"basic","licensee":"x","expires_at":past}),
            422,
            "INVALID_EXPIRY",
        ),
        j(
            M::POST,
            "/v1/licenses",
            json!({"product":"cad","plan":"basic","licensee":"x","metadata":"nope"}),
            422,
            "INVALID_INPUT",
        ),
        j(
            M::POST,
            "/v1/licenses",
            json!({"product":"cad","plan":"basic","licensee":"x","metadata":{"blob":long.repeat(2)}}),
            422,
            "INVALID_INPUT",
        ),
        j(M::POST, "/v1/licenses", json!({"product":"cad","plan":"nope","licensee":"x"}), 404, "PLAN_NOT_FOUND"),
        j(
            M::POST,
            "/v1/licenses",
            json!({"product":"cad","plan":"other-plan","licensee":"x"}),
            422,
            "PLAN_PRODUCT_MISMATCH",
        ),
        j(
            M::POST,
            "/v1/products",
            json!({"key":"p","name":"P","features":[{"key":"a","name":"A"},{"key":"a","name":"A"}]}),
            422,
            "INVALID_INPUT",
        ),
        j(M::POST, "/v1/products", json!({"key":"p","name":long}), 422, "INVALID_INPUT"),
        j(M::POST, "/v1/products", json!({"key":"p","name":"   "}), 422, "INVALID_INPUT"),
        j(M::POST, "/v1/plans", json!({"key":"q","product":"cad","name":"Q","duration_days":0}), 422, "INVALID_INPUT"),
        j(M::POST, "/v1/plans", json!({"key":"q","product":"cad","name":"Q","duration_days":-1}), 422, "INVALID_INPUT"),
        j(
            M::POST,
            "/v1/plans",
            json!({"key":"q","product":"cad","name":"Q","duration_days":99999999999u64}),
            422,
            "INVALID_INPUT",
        ),
        j(M::POST, "/v1/plans", json!({"key":"q","product":"cad","name":"Q","trial_days":40000}), 422, "INVALID_INPUT"),
        j(
            M::POST,
            "/v1/plans",
            json!({"key":"q","product":"cad","name":"Q","max_machines":"two"}),
            422,
            "INVALID_INPUT",
        ),
        j(M::PUT, "/v1/plans/basic", json!({"key":"other","product":"cad","name":"Q"}), 422, "KEY_MISMATCH"),
        j(M::PUT, "/v1/plans/nope", json!({"key":"nope","product":"cad","name":"Q"}), 404, "PLAN_NOT_FOUND"),
        j(M::POST, "/v1/validate", json!({}), 422, "INVALID_INPUT"),
        j(M::POST, "/v1/validate", json!({"key":5}), 422, "INVALID_INPUT"),
        j(M::POST, "/v1/validate", json!({"key":long}), 422, "INVALID_INPUT"),
        j(M::POST, "/v1/licenses/lic_nope/suspend", json!({}), 404, "LICENSE_NOT_FOUND"),
        j(M::POST, "/v1/licenses/lic_0000000000000000000000000a/revoke", json!({}), 404, "LICENSE_NOT_FOUND"),
        j(M::POST, "/v1/licenses/lic_0000000000000000000000000a/change-plan", json!({}), 422, "INVALID_INPUT"),
        j(
            M::POST,
            "/v1/licenses/lic_0000000000000000000000000a/suspend",
            json!({"reason": long}),
            422,
            "INVALID_INPUT",
        ),
        j(M::POST, "/v1/tokens", json!({"role":"god"}), 422, "INVALID_INPUT"),
        raw(M::GET, "/v1/licenses/lic_nope", None, b"", 404, "LICENSE_NOT_FOUND"),
        raw(M::GET, "/v1/licenses/lic_0000000000000000000000000a", None, b"", 404, "LICENSE_NOT_FOUND"),
        raw(M::GET, "/v1/licenses?limit=0", None, b"", 400, "INVALID_QUERY"),
        raw(M::GET, "/v1/licenses?limit=abc", None, b"", 400, "INVALID_QUERY"),
        raw(M::GET, "/v1/licenses?status=weird", None, b"", 400, "INVALID_QUERY"),
        raw(M::GET, "/v1/licenses?cursor=zzz", None, b"", 400, "INVALID_QUERY"),
        raw(M::GET, "/v1/events?type=nope", None, b"", 400, "INVALID_QUERY"),
        raw(M::GET, "/v1/licenses?unknown=1", None, b"", 400, "INVALID_QUERY"),
        raw(M::GET, "/v1/products/nope", None, b"", 404, "PRODUCT_NOT_FOUND"),
        raw(M::GET, "/v1/ledger/entries?start=-1", None, b"", 400, "INVALID_QUERY"),
        raw(M::GET, "/v1/nope", None, b"", 404, "ROUTE_NOT_FOUND"),
        raw(M::DELETE, "/v1/licenses", None, b"", 405, "METHOD_NOT_ALLOWED"),
        raw(M::DELETE, "/v1/tokens/tok_nope", None, b"", 404, "TOKEN_NOT_FOUND"),
        // Path parameters that are not UTF-8: axum's own plain-text 400 before.
        raw(M::GET, "/v1/products/%FF", None, b"", 400, "INVALID_PATH"),
        raw(M::POST, "/v1/licenses/%C3/suspend", None, b"", 400, "INVALID_PATH"),
        raw(M::DELETE, "/v1/tokens/%FF", None, b"", 400, "INVALID_PATH"),
        raw(M::DELETE, "/v1/licenses/lic_x/machines/%FF%FE", None, b"", 400, "INVALID_PATH"),
    ];
    for c in &cases {
        check(&app, c).await;
    }
    let r = app
        .client
        .post(format!("{}/v1/licenses", app.base))
        .bearer_auth(ADMIN)
        .header("idempotency-key", "k".repeat(300))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    app.stop().await;
}

/// Mutations of valid bodies (deterministic, so a failure reproduces): whatever comes
/// back is never a 5xx, and every 4xx is a problem document.
#[tokio::test]
async fn mutated_bodies_never_cause_a_server_error() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let lic = app.issue("basic", "m").await;
    let id = lic["id"].as_str().unwrap().to_string();
    let key = lic["key"].as_str().unwrap().to_string();
    let seeds: Vec<(String, String)> = vec![
        ("/v1/licenses".into(), json!({"product":"cad","plan":"basic","licensee":"x","expires_at":"2099-01-01T00:00:00Z","metadata":{"a":1}}).to_string()),
        ("/v1/validate".into(), json!({"key":key,"feature":"a"}).to_string()),
        ("/v1/plans".into(), json!({"key":"m","product":"cad","name":"M","features":["a"],"duration_days":30,"grace_days":3}).to_string()),
        ("/v1/products".into(), json!({"key":"mp","name":"MP","features":[{"key":"f","name":"F"}]}).to_string()),
        (format!("/v1/licenses/{id}/change-plan"), json!({"plan":"pro","reason":"r"}).to_string()),
        (format!("/v1/licenses/{id}/renew"), json!({"reason":"r"}).to_string()),
    ];
    let alphabet = b"{}[]\":,0123456789-.eE truefalsnul\\u00ZAz\x00\xff";
    let mut rng: u64 = 0x5eed_1234_abcd_0001;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut count = 0;
    for (path, body) in &seeds {
        for _ in 0..60 {
            let mut b = body.clone().into_bytes();
            for _ in 0..(1 + next() % 4) {
                let pos = (next() as usize) % (b.len() + 1);
                match next() % 3 {
                    0 if pos < b.len() => {
                        b.remove(pos);
                    }
                    1 if pos < b.len() => b[pos] = alphabet[(next() as usize) % alphabet.len()],
                    _ => b.insert(pos, alphabet[(next() as usize) % alphabet.len()]),
                }
            }
            let res = app
                .client
                .post(format!("{}{}", app.base, path))
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .body(b.clone())
                .send()
                .await
                .unwrap();
            let status = res.status();
            let ct =
                res.headers().get("content-type").map(|v| v.to_str().unwrap_or("").to_string()).unwrap_or_default();
            let text = res.text().await.unwrap();
            assert!(status.as_u16() < 500, "{path} {}: {status} {text}", String::from_utf8_lossy(&b));
            if status.is_client_error() {
                assert_eq!(ct, "application/problem+json", "{path}: {text}");
            }
            count += 1;
        }
    }
    assert_eq!(count, seeds.len() * 60);
    assert_eq!(app.call(Method::GET, "/healthz", None, None).await.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn openapi_document_describes_the_api() {
    let app = spawn_app().await;
    let r = app.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(r.status, 200);
    let paths = r.body["paths"].as_object().expect("paths");
    for p in [
        "/v1/licenses",
        "/v1/licenses/{id}/change-plan",
        "/v1/validate",
        "/v1/ledger/proof/inclusion",
        "/v1/products",
        "/v1/plans",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3."));
    assert!(paths.contains_key("/v1/openapi.json"), "the document describes itself");
    // Operation ids are unique (code generators need them so); errors are problem+json;
    // a secured operation documents 401, and one with a body 400 and 422.
    let mut ids = std::collections::HashSet::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let Some(op) = op.as_object() else { continue };
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_string()), "operationId {id} is used twice ({method} {path})");
            let responses = op["responses"].as_object().unwrap();
            for (status, resp) in responses {
                let content = resp.get("content").and_then(|c| c.as_object());
                for (kind, c) in content.into_iter().flatten() {
                    let problem = c["schema"]["$ref"].as_str().is_some_and(|r| r.ends_with("/Problem"));
                    assert_eq!(problem, kind == "application/problem+json", "{method} {path} {status}: {kind}");
                }
            }
            if op.get("security").and_then(|s| s.as_array()).is_some_and(|s| !s.is_empty()) {
                assert!(responses.contains_key("401"), "{method} {path} documents no 401");
            }
            if op.contains_key("requestBody") {
                assert!(responses.contains_key("400") && responses.contains_key("422"), "{method} {path}");
            }
            // Every `{name}` of the path is a declared path parameter.
            let declared: Vec<&str> = op
                .get("parameters")
                .and_then(|p| p.as_array())
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            for name in path.split('/').filter_map(|w| w.strip_prefix('{').and_then(|w| w.strip_suffix('}'))) {
                assert!(declared.contains(&name), "{method} {path} does not declare '{name}'");
            }
        }
    }
    assert!(ids.len() > 60, "{} operations", ids.len());
    app.stop().await;
}

/// A body documented as optional may be left out, empty, or `null`; a body that is
/// required is still required when it is `null`.
#[tokio::test]
async fn an_optional_body_may_be_absent_empty_or_null() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let lic = app.issue("basic", "optional-body").await;
    let id = lic["id"].as_str().unwrap();
    let send = |path: String, body: Option<&'static str>| {
        let mut req = app.client.post(format!("{}{path}", app.base)).bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(send(format!("/v1/licenses/{id}/suspend"), None).await, 200);
    assert_eq!(send(format!("/v1/licenses/{id}/reinstate"), Some("null")).await, 200);
    assert_eq!(send(format!("/v1/licenses/{id}/suspend"), Some(" ")).await, 200);
    assert_eq!(app.get(&format!("/v1/licenses/{id}")).await.body["status"], "suspended");
    assert_eq!(send("/v1/licenses".to_string(), Some("null")).await, 422, "a required body");
    app.stop().await;
}
