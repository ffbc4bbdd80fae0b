//! The SDK against the real server on a random port.

mod gates;
mod tokens;

use tollgate_sdk::{Client, Code, Error};

#[tokio::test]
async fn validates_through_the_real_server() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tollgate_server::Config::new(tmp.path());
    let admin = "tg_sdk_test_admin_0123456789";
    cfg.bootstrap_token = Some(admin.into());
    let opened = tollgate_server::open(&cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tollgate_server::serve(listener, opened.app.clone(), async {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let post =
        |path: &str, body: serde_json::Value| http.post(format!("{base}{path}")).bearer_auth(admin).json(&body).send();
    post(
        "/v1/products",
        serde_json::json!({"key":"app","name":"App","features":[{"key":"pro","name":"Pro"},{"key":"x","name":"X"}]}),
    )
    .await
    .unwrap();
    post("/v1/plans", serde_json::json!({"key":"p","product":"app","name":"P","features":["pro"]})).await.unwrap();
    let lic: serde_json::Value = post("/v1/licenses", serde_json::json!({"product":"app","plan":"p","licensee":"l"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token: serde_json::Value =
        post("/v1/tokens", serde_json::json!({"role":"product","product":"app"})).await.unwrap().json().await.unwrap();

    let client = Client::new(&base, token["token"].as_str().unwrap()).unwrap();
    let key = lic["key"].as_str().unwrap();
    let v = client.validate(key, Some("pro")).await.unwrap();
    assert!(v.valid);
    assert_eq!(v.code, Code::Valid);
    assert_eq!(v.features, vec!["pro".to_string()]);
    assert_eq!(v.license.unwrap().licensee, "l");
    assert_eq!(client.validate(key, Some("x")).await.unwrap().code, Code::FeatureNotEntitled);
    assert_eq!(client.validate("nope", None).await.unwrap().code, Code::MalformedKey);

    let bad = Client::new(&base, "tg_wrong").unwrap();
    match bad.validate(key, None).await {
        Err(Error::Refused { status: 401, code, .. }) => assert_eq!(code, "UNAUTHORIZED"),
        other => panic!("expected a 401 refusal, got {other:?}"),
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    drop(opened.app);
    opened.writer.join().unwrap();
    let down = Client::new(&base, "t").unwrap();
    assert!(matches!(down.validate(key, None).await, Err(Error::Network(_))), "a stopped server is a network error");
}
