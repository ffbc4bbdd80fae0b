//! The SDK against the real server on a random port.

mod gates;
mod pki;
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

/// HTTPS end to end: the server's own TLS (`serve --tls-cert/--tls-key`), and the SDK
/// trusting a private CA it is given, and only what it trusts.
#[tokio::test]
async fn validates_over_https_with_a_private_ca() {
    let (mut server, ca) = Server::start_tls().await;
    assert!(server.base.starts_with("https://"), "{}", server.base);
    server.post("/v1/products", json!({"key":"app","name":"App","features":[{"key":"pro","name":"Pro"}]})).await;
    server.post("/v1/plans", json!({"key":"p","product":"app","name":"P","features":["pro"]})).await;
    let lic = server.post("/v1/licenses", json!({"product":"app","plan":"p","licensee":"tls"})).await;
    let token = server.post("/v1/tokens", json!({"role":"product","product":"app"})).await;
    let (key, token) = (lic["key"].as_str().unwrap(), token["token"].as_str().unwrap());

    let config = tollgate_sdk::ClientConfig { ca_certificates_pem: ca.into_bytes(), ..Default::default() };
    let client = Client::with_config(&server.base, token, config.clone()).unwrap();
    let v = client.validate(key, Some("pro")).await.unwrap();
    assert_eq!((v.valid, v.code), (true, Code::Valid));
    assert_eq!(v.source, tollgate_sdk::Source::Online);

    // Handshakes run side by side: clients that connect and say nothing (each would hold
    // a one-at-a-time listener for its 10 s deadline) hold up no one.
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let silent: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap()).collect();
    let fresh = Client::with_config(&server.base, token, config).unwrap();
    let v = tokio::time::timeout(std::time::Duration::from_secs(5), fresh.validate(key, None))
        .await
        .expect("answered while silent connections wait for their handshake")
        .unwrap();
    assert!(v.valid);
    drop(silent);

    // Without the CA the certificate is not trusted: no answer, and none from a cache.
    let untrusting = Client::new(&server.base, token).unwrap();
    match untrusting.validate(key, Some("pro")).await {
        Err(Error::Network(e)) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            assert!(text.to_lowercase().contains("certificate"), "{text}");
        }
        other => panic!("expected the certificate to be refused, got {other:?}"),
    }
    // Plain HTTP to the HTTPS port gets no answer either.
    let plain = Client::new(&server.base.replace("https://", "http://"), token).unwrap();
    assert!(matches!(plain.validate(key, None).await, Err(Error::Network(_))));
    // A CA file that is not PEM is refused when the client is built.
    let bad = tollgate_sdk::ClientConfig { ca_certificates_pem: b"not a certificate".to_vec(), ..Default::default() };
    assert!(matches!(Client::with_config(&server.base, token, bad), Err(Error::Config(_))));
    server.stop().await;
}
