//! The SDK against the real server on a random port.

mod gates;
mod support;
mod tokens;

use serde_json::json;
use support::Server;
use tollgate_sdk::{Client, Code, Error};

#[tokio::test]
async fn validates_through_the_real_server() {
    let mut server = Server::start().await;
    server
        .post(
            "/v1/products",
            json!({"key":"app","name":"App","features":[{"key":"pro","name":"Pro"},{"key":"x","name":"X"}]}),
        )
        .await;
    server.post("/v1/plans", json!({"key":"p","product":"app","name":"P","features":["pro"]})).await;
    let lic = server.post("/v1/licenses", json!({"product":"app","plan":"p","licensee":"l"})).await;
    let token = server.post("/v1/tokens", json!({"role":"product","product":"app"})).await;

    let client = Client::new(&server.base, token["token"].as_str().unwrap()).unwrap();
    let key = lic["key"].as_str().unwrap();
    let v = client.validate(key, Some("pro")).await.unwrap();
    assert!(v.valid);
    assert_eq!(v.code, Code::Valid);
    assert_eq!(v.features, vec!["pro".to_string()]);
    assert_eq!(v.license.unwrap().licensee, "l");
    assert_eq!(client.validate(key, Some("x")).await.unwrap().code, Code::FeatureNotEntitled);
    assert_eq!(client.validate("nope", None).await.unwrap().code, Code::MalformedKey);

    let bad = Client::new(&server.base, "tg_wrong").unwrap();
    match bad.validate(key, None).await {
        Err(Error::Refused { status: 401, code, .. }) => assert_eq!(code, "UNAUTHORIZED"),
        other => panic!("expected a 401 refusal, got {other:?}"),
    }
    server.stop().await;
    let down = Client::new(&server.base, "t").unwrap();
    assert!(matches!(down.validate(key, None).await, Err(Error::Network(_))), "a stopped server is a network error");
}
