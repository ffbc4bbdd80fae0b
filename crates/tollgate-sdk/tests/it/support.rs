//! The real server on a random port over a temp SQLite file, for the SDK's tests.

use serde_json::Value;

pub use crate::pki::test_pki;

pub const ADMIN: &str = "tg_sdk_test_admin_0123456789";

pub struct Server {
    pub base: String,
    /// Trusts the test CA when the server speaks HTTPS.
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    opened: Option<tollgate_server::Opened>,
    _tmp: tempfile::TempDir,
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(None).await
    }

    /// Serves HTTPS with a certificate from [`test_pki`]; also returns its CA in PEM.
    pub async fn start_tls() -> (Server, String) {
        let (ca, cert, key) = test_pki();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        let tls =
            tollgate_server::tls::TlsConfig::from_pem_files(&dir.path().join("cert.pem"), &dir.path().join("key.pem"))
                .unwrap();
        (Self::start_with(Some((tls, &ca))).await, ca)
    }

    async fn start_with(tls: Option<(tollgate_server::tls::TlsConfig, &str)>) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(tmp, listener, tls)
    }

    /// Stops the server, cuts its ledger back to its first `len` events as a
    /// point-in-time restore does, and serves that at the same address (plain HTTP).
    pub async fn restart_restored(&mut self, len: u64) {
        self.stop().await;
        let path = tollgate_server::db_path(self._tmp.path());
        tollgate_store::SqliteStore::open(&path).unwrap().truncate_for_restore(len).unwrap();
        let addr: std::net::SocketAddr = self.base.trim_start_matches("http://").parse().unwrap();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let tmp = std::mem::replace(&mut self._tmp, tempfile::tempdir().unwrap());
        *self = Self::serve(tmp, listener, None);
    }

    fn serve(
        tmp: tempfile::TempDir,
        listener: tokio::net::TcpListener,
        tls: Option<(tollgate_server::tls::TlsConfig, &str)>,
    ) -> Server {
        let mut cfg = tollgate_server::Config::new(tmp.path());
        cfg.bootstrap_token = Some(ADMIN.into());
        let opened = tollgate_server::open(&cfg).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        let app = opened.app.clone();
        let (base, client, task) = match tls {
            None => (
                format!("http://{addr}"),
                reqwest::Client::new(),
                tokio::spawn(tollgate_server::serve(listener, app, stopped)),
            ),
            Some((tls, ca)) => {
                let ca = reqwest::Certificate::from_pem(ca.as_bytes()).unwrap();
                let client = reqwest::Client::builder().tls_certs_merge([ca]).build().unwrap();
                let task = tokio::spawn(async move { tollgate_server::serve_tls(listener, &tls, app, stopped).await });
                (format!("https://localhost:{}", addr.port()), client, task)
            }
        };
        Server { base, client, stop: Some(stop), task: Some(task), opened: Some(opened), _tmp: tmp }
    }

    /// Sends a request and returns its JSON answer, which must be a success.
    pub async fn send(&self, method: reqwest::Method, path: &str, token: &str, body: Value) -> Value {
        let r = self
            .client
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
