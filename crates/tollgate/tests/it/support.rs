use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const ADMIN: &str = "tg_binary_test_admin_token_42";

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

pub struct Server {
    pub child: Child,
    pub base: String,
}

/// Starts `tollgate serve` on a free port and waits for its "listening on" line.
pub fn start(data: &Path) -> Server {
    start_with(data, &[], None)
}

/// Like `start`, with extra flags, and the server's log written to `log` if given.
pub fn start_with(data: &Path, extra: &[&str], log: Option<&Path>) -> Server {
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).expect("log file")),
        None => Stdio::inherit(),
    };
    let mut child = bin()
        .args(["serve", "--data"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("TOLLGATE_BOOTSTRAP_TOKEN", ADMIN)
        .env("TOLLGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn tollgate");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read listening line");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    Server { child, base }
}

impl Server {
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM").success();
        assert!(ok);
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "server exited with {status}");
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(128).build().unwrap()
}

pub async fn seed(c: &reqwest::Client, base: &str) {
    let r = c
        .post(format!("{base}/v1/products"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"key":"app","name":"App","features":[{"key":"a","name":"A"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .post(format!("{base}/v1/plans"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"key":"std","product":"app","name":"Std","features":["a"],"duration_days":30}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

pub fn verify(data: &Path) -> (bool, String) {
    let out =
        bin().args(["ledger", "verify", "--data"]).arg(data).env("TOLLGATE_LOG", "warn").output().expect("run verify");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Runs the binary with these arguments; success, and stdout followed by stderr.
pub fn run(args: &[&str]) -> (bool, String) {
    output(bin().args(args))
}

/// Runs a command that talks to the server at `base` as the admin
/// (`TOLLGATE_URL`, `TOLLGATE_TOKEN`); success, and stdout followed by stderr.
pub fn run_remote(args: &[&str], base: &str) -> (bool, String) {
    output(bin().args(args).env("TOLLGATE_URL", base).env("TOLLGATE_TOKEN", ADMIN))
}

fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd.env("TOLLGATE_LOG", "warn").output().expect("run tollgate");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// An authenticated GET, as JSON.
pub async fn get_json(c: &reqwest::Client, url: &str) -> serde_json::Value {
    c.get(url).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap()
}

/// How many licenses the server lists (up to one page of 500).
pub async fn count(c: &reqwest::Client, base: &str) -> usize {
    get_json(c, &format!("{base}/v1/licenses?limit=500")).await["items"].as_array().unwrap().len()
}
