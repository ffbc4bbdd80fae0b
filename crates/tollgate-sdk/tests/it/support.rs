//! The real server on a random port over a temp SQLite file, for the SDK's tests.

use serde_json::Value;

pub const ADMIN: &str = "tg_sdk_test_admin_0123456789";

pub struct Server {
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    opened: Option<tollgate_server::Opened>,
    _tmp: tempfile::TempDir,
}

impl Server {
    pub async fn start() -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = tollgate_server::Config::new(tmp.path());
        cfg.bootstrap_token = Some(ADMIN.into());
        let opened = tollgate_server::open(&cfg).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(tollgate_server::serve(listener, opened.app.clone(), async {
            let _ = stopped.await;
        }));
        Server { base, stop: Some(stop), task: Some(task), opened: Some(opened), _tmp: tmp }
    }

    /// Sends a request and returns its JSON answer, which must be a success.
    pub async fn send(&self, method: reqwest::Method, path: &str, token: &str, body: Value) -> Value {
        let r = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    /// A POST as the admin.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.send(reqwest::Method::POST, path, ADMIN, body).await
    }

    /// Stops serving and waits for the writer threads, as a shutdown does.
    pub async fn stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
        let opened = self.opened.take().unwrap();
        drop(opened.app);
        tokio::task::spawn_blocking(move || opened.writer.join().unwrap()).await.unwrap();
    }
}
