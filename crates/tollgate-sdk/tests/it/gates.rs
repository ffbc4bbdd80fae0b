//! Local gate evaluation against the real server: the signed ruleset, background
//! refresh after a kill, evaluation with the server gone, the license binding from the
//! SDK's own validation, agreement with the server's OFREP answers, and the
//! OpenFeature provider.

use std::sync::Arc;
use std::time::{Duration, Instant};

use open_feature::provider::FeatureProvider;
use open_feature::{EvaluationContext, EvaluationErrorCode, EvaluationReason};
use serde_json::{Value, json};
use tollgate_sdk::gates::{Context, Reason};
use tollgate_sdk::{Client, GateClient, GateConfig, TollgateProvider};

use crate::support::{ADMIN, Server};

/// Product `app` (features pro, x), plan `p` with pro; gates `pro-ui` (bound to
/// app/pro, 100% rollout) and `colour` (no license, variants with payloads).
async fn seed(s: &Server) -> (String, String) {
    s.post(
        "/v1/products",
        json!({"key":"app","name":"App","features":[{"key":"pro","name":"Pro"},{"key":"x","name":"X"}]}),
    )
    .await;
    s.post("/v1/plans", json!({"key":"p","product":"app","name":"P","features":["pro"]})).await;
    let lic = s.post("/v1/licenses", json!({"product":"app","plan":"p","licensee":"l"})).await;
    let tok = s.post("/v1/tokens", json!({"role":"product","product":"app"})).await;
    s.send(
        reqwest::Method::PUT,
        "/v1/gates/pro-ui",
        ADMIN,
        json!({"feature":{"product":"app","feature":"pro"},
               "strategies":[{"name":"flexibleRollout","parameters":{"rollout":"100","stickiness":"default","groupId":"pro-ui"}}]}),
    )
    .await;
    s.send(
        reqwest::Method::PUT,
        "/v1/gates/colour",
        ADMIN,
        json!({"license_required": false,
               "strategies":[{"name":"flexibleRollout","parameters":{"rollout":"50","stickiness":"userId","groupId":"colour"}}],
               "variants":[
                 {"name":"blue","weight":500,"stickiness":"userId","payload":{"type":"string","value":"blue"}},
                 {"name":"size","weight":500,"stickiness":"userId","payload":{"type":"json","value":"{\"px\":12}"}}]}),
    )
    .await;
    (lic["key"].as_str().unwrap().to_string(), tok["token"].as_str().unwrap().to_string())
}

/// The server's OFREP answer for one flag and context.
async fn ofrep(base: &str, token: &str, flag: &str, ctx: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{base}/ofrep/v1/evaluate/flags/{flag}"))
        .bearer_auth(token)
        .json(&json!({ "context": ctx }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn user(id: &str) -> Context {
    Context { user_id: Some(id.into()), ..Context::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluates_locally_refreshes_in_the_background_and_survives_the_server() {
    let mut s = Server::start().await;
    let (key, token) = seed(&s).await;
    let client = Client::new(&s.base, &token).unwrap();
    let gates = GateClient::connect(&client, GateConfig { refresh_interval: Duration::from_millis(50) }).await.unwrap();
    let first_seq = gates.seq();
    assert!(first_seq > 0);

    // Bound to a license feature: off until the application's license is known.
    let a = gates.evaluate("pro-ui", &user("u1")).unwrap();
    assert_eq!((a.enabled, a.reason, a.license_code), (false, Reason::Unlicensed, Some("LICENSE_MISSING")));
    let facts = gates.use_license(&key).await.unwrap();
    assert!(facts.features.contains("pro"));
    assert!(gates.is_enabled("pro-ui", &user("u1")));
    assert!(!gates.is_enabled("no-such-gate", &user("u1")));

    // The same answers as the server's OFREP endpoint, subject by subject.
    for i in 0..40 {
        let id = format!("user-{i}");
        let remote = ofrep(&s.base, &token, "colour", json!({"targetingKey": id})).await;
        let local = gates.evaluate("colour", &user(&id)).unwrap();
        assert_eq!(Some(local.enabled), remote["metadata"]["enabled"].as_bool(), "{id}: {remote}");
        let name = local.variant.as_ref().map_or(if local.enabled { "on" } else { "off" }, |v| v.name.as_str());
        assert_eq!(remote["variant"], name, "{id}");
    }

    // A kill on the server reaches the SDK through the background refresh.
    s.post("/v1/gates/pro-ui/kill", json!({"reason":"incident"})).await;
    let started = Instant::now();
    while gates.is_enabled("pro-ui", &user("u1")) {
        assert!(started.elapsed() < Duration::from_secs(10), "the kill never arrived: {:?}", gates.last_error());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gates.evaluate("pro-ui", &user("u1")).unwrap().reason, Reason::Disabled);
    assert!(gates.seq() > first_seq);
    assert!(!gates.refresh().await.unwrap(), "nothing changed since: the server answers 304");

    // With the server gone, evaluation goes on from the last verified ruleset.
    s.stop().await;
    assert!(gates.refresh().await.is_err());
    let on = (0..40).filter(|i| gates.is_enabled("colour", &user(&format!("user-{i}")))).count();
    assert!((5..=35).contains(&on), "a 50% rollout still splits the users: {on} of 40");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openfeature_provider_resolves_from_the_local_ruleset() {
    let mut s = Server::start().await;
    let (key, token) = seed(&s).await;
    let client = Client::new(&s.base, &token).unwrap();
    let gates = Arc::new(GateClient::connect(&client, GateConfig::default()).await.unwrap());
    gates.use_license(&key).await.unwrap();
    let provider = TollgateProvider::new(gates.clone());
    assert_eq!(provider.metadata().name, "tollgate");

    let ctx = EvaluationContext::default().with_targeting_key("u1").with_custom_field("plan", "gold");
    let d = provider.resolve_bool_value("pro-ui", &ctx).await.unwrap();
    assert!(d.value);
    assert_eq!(d.reason, Some(EvaluationReason::Static), "a 100% rollout holds for everyone");
    assert_eq!(d.variant.as_deref(), Some("on"));

    // Find one user in each variant of `colour`, and read their payloads typed.
    let mut seen = (false, false);
    for i in 0..200 {
        let ctx = EvaluationContext::default().with_targeting_key(format!("user-{i}"));
        let on = provider.resolve_bool_value("colour", &ctx).await.unwrap();
        match on.variant.as_deref() {
            Some("blue") => {
                assert_eq!(provider.resolve_string_value("colour", &ctx).await.unwrap().value, "blue");
                let e = provider.resolve_struct_value("colour", &ctx).await.unwrap_err();
                assert_eq!(e.code, EvaluationErrorCode::TypeMismatch, "a string payload is no structure");
                seen.0 = true;
            }
            Some("size") => {
                let v = provider.resolve_struct_value("colour", &ctx).await.unwrap().value;
                assert_eq!(v.fields.get("px").and_then(|p| p.as_i64()), Some(12));
                seen.1 = true;
            }
            Some("off") => assert!(!on.value),
            other => panic!("unexpected variant {other:?}"),
        }
    }
    assert_eq!(seen, (true, true), "200 users land in both variants");

    let e = provider.resolve_bool_value("missing", &ctx).await.unwrap_err();
    assert_eq!(e.code, EvaluationErrorCode::FlagNotFound);
    let bad = EvaluationContext::default()
        .with_custom_field("obj", open_feature::EvaluationContextFieldValue::new_struct(vec![1u8]));
    assert_eq!(
        provider.resolve_bool_value("pro-ui", &bad).await.unwrap_err().code,
        EvaluationErrorCode::InvalidContext
    );

    // Through OpenFeature's own client, as an application would use it.
    let mut api = open_feature::OpenFeature::singleton_mut().await;
    api.set_provider(TollgateProvider::new(gates.clone())).await;
    let of = api.create_client();
    drop(api);
    assert!(of.get_bool_value("pro-ui", Some(&ctx), None).await.unwrap());
    assert!(of.get_bool_value("missing", Some(&ctx), None).await.is_err());
    s.stop().await;
}

/// A seeded server, and gates refreshed every 50 ms (answers not cached) with the
/// seeded license in use: `pro-ui` is on.
async fn licensed_gates() -> (Server, GateClient) {
    let s = Server::start().await;
    let (key, token) = seed(&s).await;
    let config = tollgate_sdk::ClientConfig { cache_ttl: Duration::ZERO, ..Default::default() };
    let client = Client::with_config(&s.base, &token, config).unwrap();
    let gates = GateClient::connect(&client, GateConfig { refresh_interval: Duration::from_millis(50) }).await.unwrap();
    gates.use_license(&key).await.unwrap();
    assert!(gates.is_enabled("pro-ui", &user("u1")));
    (s, gates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_license_revoked_after_use_license_turns_its_gates_off_at_the_next_refresh() {
    let (s, gates) = licensed_gates().await;
    let id = s.send(reqwest::Method::GET, "/v1/licenses?licensee=l", ADMIN, Value::Null).await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.post(&format!("/v1/licenses/{id}/revoke"), json!({})).await;
    let started = Instant::now();
    while gates.is_enabled("pro-ui", &user("u1")) {
        assert!(started.elapsed() < Duration::from_secs(10), "the revocation never arrived: {:?}", gates.last_error());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = gates.evaluate("pro-ui", &user("u1")).unwrap();
    assert_eq!((a.reason, a.license_code), (Reason::Unlicensed, Some("LICENSE_REVOKED")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_evaluates_the_license_a_context_names_as_the_server_does() {
    let mut s = Server::start().await;
    let (key, token) = seed(&s).await;
    // This machine's fingerprint is configured, and is activated on no license: a license
    // a context names is another customer's, judged without regard to this machine.
    let config = tollgate_sdk::ClientConfig { fingerprint: Some("this-machine".into()), ..Default::default() };
    let client = Client::with_config(&s.base, &token, config).unwrap();
    // No use_license: the application's own license is not set.
    let config = GateConfig { refresh_interval: Duration::from_millis(50) };
    let gates = Arc::new(GateClient::connect(&client, config).await.unwrap());
    let provider = TollgateProvider::new(gates.clone());
    let remote = |ctx: Value| {
        let (base, token) = (s.base.clone(), token.clone());
        async move { ofrep(&base, &token, "pro-ui", ctx).await["value"].as_bool().unwrap() }
    };
    let named = EvaluationContext::default().with_targeting_key("u1").with_custom_field("licenseKey", key.clone());
    assert!(remote(json!({"targetingKey":"u1","licenseKey": key})).await);
    assert!(provider.resolve_bool_value("pro-ui", &named).await.unwrap().value, "as OFREP answers");
    assert!(gates.knows_license(&key));
    let unknown = EvaluationContext::default().with_targeting_key("u1").with_custom_field("licenseKey", "NOPE-NOPE");
    assert!(!remote(json!({"targetingKey":"u1","licenseKey":"NOPE-NOPE"})).await);
    assert!(!provider.resolve_bool_value("pro-ui", &unknown).await.unwrap().value);
    // A context naming no license has none (the application set none).
    let none = EvaluationContext::default().with_targeting_key("u1");
    assert!(!provider.resolve_bool_value("pro-ui", &none).await.unwrap().value);
    // The context's answer (asked without this machine) is not this machine's: the
    // application's own validation still asks the server, which sees the fingerprint.
    let mine = client.validate(&key, None).await.unwrap();
    assert_eq!(
        (mine.valid, mine.code, mine.source),
        (false, tollgate_sdk::Code::FingerprintNotActivated, tollgate_sdk::Source::Online)
    );
    // Revoked, the feed says so, and the server goes away: the context's license is
    // revoked here too (it has no token on this machine to be refused by), not kept on
    // for the length of the outage.
    let id = s.send(reqwest::Method::GET, "/v1/licenses?licensee=l", ADMIN, Value::Null).await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.post(&format!("/v1/licenses/{id}/revoke"), json!({})).await;
    client.sync_revocations().await.unwrap();
    s.stop().await;
    let started = Instant::now();
    while provider.resolve_bool_value("pro-ui", &named).await.unwrap().value {
        assert!(started.elapsed() < Duration::from_secs(10), "the revoked license stayed on: {:?}", gates.last_error());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The license facts go when the server refuses the SDK itself (the vendor revoked the
/// API token a leaked build carries): a refusal is not an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_turn_off_when_the_server_refuses_the_api_token() {
    let (s, gates) = licensed_gates().await;
    let tokens = s.send(reqwest::Method::GET, "/v1/tokens", ADMIN, Value::Null).await;
    let id = tokens["items"].as_array().unwrap().iter().find(|t| t["role"] == "product").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = reqwest::Client::new().delete(format!("{}/v1/tokens/{id}", s.base)).bearer_auth(ADMIN).send().await;
    assert!(r.unwrap().status().is_success());
    let started = Instant::now();
    while gates.is_enabled("pro-ui", &user("u1")) {
        assert!(started.elapsed() < Duration::from_secs(10), "the gate stayed on: {:?}", gates.last_error());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gates.last_error().unwrap().contains("401"), "{:?}", gates.last_error());
}

/// A ledger restored to an earlier point serves rulesets older than the one a client
/// holds: the feed says the history changed (FEED_DIVERGED), so the older one is taken
/// and a kill switch thrown after the restore acts. An older ruleset from a node that
/// is only behind is not (the feed does not diverge there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ruleset_from_a_ledger_restored_to_an_earlier_point_is_taken() {
    let mut s = Server::start().await;
    let (_, token) = seed(&s).await;
    let client = Client::new(&s.base, &token).unwrap();
    // No background refresh: the test drives them. The first ruleset makes the signing
    // key (an event); the restore keeps it.
    let connect = || GateClient::connect(&client, GateConfig { refresh_interval: Duration::from_secs(3600) });
    drop(connect().await.unwrap());
    let len = connect().await.unwrap().seq();
    for i in 0..5 {
        s.post("/v1/licenses", json!({"product":"app","plan":"p","licensee": format!("later-{i}")})).await;
    }
    let gates = connect().await.unwrap();
    let held = gates.seq();
    assert_eq!(held, len + 5);
    let on = |g: &GateClient| (0..50).filter(|i| g.is_enabled("colour", &user(&format!("u{i}")))).count();
    assert!(on(&gates) > 0, "half the users get the colour");
    s.restart_restored(len).await;
    s.post("/v1/gates/colour/kill", json!({"reason": "after the restore"})).await;
    let killed = s.send(reqwest::Method::GET, "/v1/gates/colour", ADMIN, Value::Null).await;
    assert_eq!(killed["definition"]["enabled"], false);
    assert!(gates.refresh().await.unwrap(), "the feed says the history changed: the older ruleset is taken");
    assert!(gates.seq() < held);
    assert_eq!(on(&gates), 0, "the kill switch acts");
}

/// A license whose term ends during an outage turns its gates off when it ends, not
/// when the server comes back: the facts last only as long as the license's term and
/// grace, as the server last gave them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_license_that_expires_during_an_outage_turns_its_gates_off_when_it_expires() {
    let mut s = Server::start().await;
    let (_, token) = seed(&s).await;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let ends = tollgate_core::Timestamp::from_millis(now_ms + 3_000).unwrap();
    let lic = s
        .post("/v1/licenses", json!({"product":"app","plan":"p","licensee":"short","expires_at": ends.to_string()}))
        .await;
    // Another customer's, named by a context: no token of it is kept on this machine.
    let other = s
        .post("/v1/licenses", json!({"product":"app","plan":"p","licensee":"other","expires_at": ends.to_string()}))
        .await;
    let other_key = other["key"].as_str().unwrap();
    let named = Context { user_id: Some("u1".into()), license_key: Some(other_key.into()), ..Context::default() };
    let config = tollgate_sdk::ClientConfig { cache_ttl: Duration::ZERO, ..Default::default() };
    let client = Client::with_config(&s.base, &token, config).unwrap();
    let gates = GateClient::connect(&client, GateConfig { refresh_interval: Duration::from_millis(50) }).await.unwrap();
    gates.use_license(lic["key"].as_str().unwrap()).await.unwrap();
    gates.use_context_license(other_key).await.unwrap();
    assert!(gates.is_enabled("pro-ui", &user("u1")));
    assert!(gates.is_enabled("pro-ui", &named));
    s.stop().await;
    let started = Instant::now();
    while gates.is_enabled("pro-ui", &user("u1")) || gates.is_enabled("pro-ui", &named) {
        assert!(started.elapsed() < Duration::from_secs(15), "the gate outlived the license: {:?}", gates.last_error());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let off_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    // Token claims count whole seconds: the end is read as its second.
    assert!(off_ms >= ends.millis() / 1000 * 1000, "turned off before the license ended");
    let a = gates.evaluate("pro-ui", &user("u1")).unwrap();
    assert_eq!(a.license_code, Some("LICENSE_EXPIRED"));
}
