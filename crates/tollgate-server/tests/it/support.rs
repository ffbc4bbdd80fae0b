use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const ADMIN: &str = "tg_test_admin_token_0123456789";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    pub app: Option<std::sync::Arc<tollgate_server::AppState>>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

pub async fn spawn_app() -> TestApp {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().to_path_buf();
    let mut app = spawn_at(&dir).await;
    app._tmp = Some(tmp);
    app
}

pub async fn spawn_at(dir: &Path) -> TestApp {
    spawn_config(tollgate_server::Config::new(dir)).await
}

/// Starts a server with this configuration (the admin token is always `ADMIN`).
pub async fn spawn_config(mut cfg: tollgate_server::Config) -> TestApp {
    cfg.bootstrap_token = Some(ADMIN.into());
    let dir = cfg.data_dir.clone();
    let dir = dir.as_path();
    let opened = tollgate_server::open(&cfg).expect("server opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let app = opened.app.clone();
    let server = tokio::spawn(tollgate_server::serve(listener, app, async {
        let _ = rx.await;
    }));
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        dir: dir.to_path_buf(),
        _tmp: None,
        stop: Some(tx),
        server: Some(server),
        writer: Some(opened.writer),
        app: Some(opened.app),
    }
}

impl TestApp {
    /// Stops the server gracefully and waits for the writer to finish; the data
    /// directory is kept (returned) for a restart.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            s.await.expect("server task").expect("server ran");
        }
        self.app.take();
        if let Some(w) = self.writer.take() {
            tokio::task::spawn_blocking(move || w.join().expect("writer thread")).await.unwrap();
        }
        self._tmp.take()
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let mut req = self.client.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, headers, body, text }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, Some(ADMIN), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(ADMIN), Some(body)).await
    }

    /// A POST as the admin with an `Idempotency-Key`.
    pub async fn post_keyed(&self, path: &str, key: &str, body: Value) -> Resp {
        let req = self.client.post(format!("{}{}", self.base, path)).bearer_auth(ADMIN).header("idempotency-key", key);
        let res = req.json(&body).send().await.expect("request sent");
        let (status, headers) = (res.status(), res.headers().clone());
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, headers, body, text }
    }

    /// A product `cad` with features a..e, and plans `basic` (a, b; 365 days, 10 days
    /// grace) and `pro` (all; perpetual).
    pub async fn seed_catalog(&self) {
        let r = self
            .post(
                "/v1/products",
                json!({"key":"cad","name":"CAD","features":[{"key":"a","name":"A"},{"key":"b","name":"B"},{"key":"c","name":"C"},{"key":"d","name":"D"},{"key":"e","name":"E"}]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = self.post("/v1/plans", json!({"key":"basic","product":"cad","name":"Basic","features":["a","b"],"duration_days":365,"grace_days":10,"max_machines":2})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = self
            .post("/v1/plans", json!({"key":"pro","product":"cad","name":"Pro","features":["a","b","c","d","e"]}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = self
            .post("/v1/plans", json!({"key":"trial","product":"cad","name":"Trial","features":["a"],"trial_days":14}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }

    pub async fn issue(&self, plan: &str, licensee: &str) -> Value {
        let r = self.post("/v1/licenses", json!({"product":"cad","plan":plan,"licensee":licensee})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.body
    }

    pub async fn validate(&self, key: &str, feature: Option<&str>) -> Value {
        let mut body = json!({ "key": key });
        if let Some(f) = feature {
            body["feature"] = json!(f);
        }
        let r = self.post("/v1/validate", body).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
    }
}

/// Asserts a response is an RFC 9457 problem with this status and code.
pub fn assert_problem(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "expected {status} {code}, got: {}", r.text);
    let ct = r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(ct, "application/problem+json", "problem content type for {}", r.text);
    assert_eq!(r.body["code"], code, "{}", r.text);
    assert_eq!(r.body["status"], status);
    assert!(r.body["title"].is_string() && r.body["detail"].is_string() && r.body["type"].is_string(), "{}", r.text);
}
