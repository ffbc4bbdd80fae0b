//! Talking to a running server from the command line: where it is, the token, and
//! one request with its failure turned into a readable error.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

/// Where client commands look for the server unless told.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Args, Clone)]
pub struct Remote {
    /// The server's base URL.
    #[arg(long, env = "TOLLGATE_URL", default_value = DEFAULT_URL)]
    url: String,
    /// An API token: admin for `keys rotate` and `gates`, issuer or admin for
    /// `offline activate`.
    #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true)]
    token: String,
    /// A PEM file of CA certificates to trust for an https:// --url, besides the
    /// system's (a private CA, or a self-signed server certificate).
    #[arg(long, env = CA_CERT_ENV)]
    ca_cert: Option<PathBuf>,
}

/// Where commands without `--ca-cert` (token verify) look for extra CAs, and the
/// environment variable of those with it.
pub const CA_CERT_ENV: &str = "TOLLGATE_CA_CERT";

/// An HTTP client trusting the system's CAs and those in `ca_cert` (or, when `None`,
/// in the file `TOLLGATE_CA_CERT` names).
pub fn http_client(ca_cert: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let from_env = std::env::var_os(CA_CERT_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut builder = reqwest::Client::builder();
    if let Some(path) = ca_cert.map(Path::to_path_buf).or(from_env) {
        let pem =
            std::fs::read(&path).with_context(|| format!("cannot read the CA certificates {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .with_context(|| format!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display()))?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().context("cannot set up the HTTP client")
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// `base` joined with `path`, once `base` is checked to be an http(s) URL.
pub fn endpoint(base: &str, path: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(base).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
    if parsed.is_none() {
        anyhow::bail!(
            "--url (or TOLLGATE_URL) must be the server's address with its scheme, such as http://127.0.0.1:8080; got '{base}'"
        );
    }
    Ok(format!("{}{path}", base.trim_end_matches('/')))
}

/// Why a request could not be sent, with what to check.
pub fn unreachable(url: &str) -> String {
    format!("cannot reach {url}: is the server running there? (give its address with --url or TOLLGATE_URL)")
}

/// A server's refusal in a line: status, the problem's `code` and `detail` when it sent
/// one (RFC 9457), its text otherwise.
pub fn refusal(url: &str, status: reqwest::StatusCode, text: &str) -> String {
    let problem: Option<serde_json::Value> = serde_json::from_str(text).ok();
    match problem.as_ref().and_then(|p| Some((p["code"].as_str()?, p["detail"].as_str()?))) {
        Some((code, detail)) => format!("{url}: {status}: {code}: {detail}"),
        None => format!("{url}: {status}: {text}"),
    }
}

/// One request; a status other than 2xx is an error carrying the server's answer.
pub async fn call(
    remote: &Remote,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<String> {
    let url = endpoint(&remote.url, path)?;
    let mut req = http_client(remote.ca_cert.as_deref())?.request(method, &url).bearer_auth(&remote.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.with_context(|| unreachable(&url))?;
    let status = res.status();
    let text = String::from_utf8_lossy(&read_limited(res).await?).into_owned();
    if !status.is_success() {
        anyhow::bail!(refusal(&url, status, &text));
    }
    Ok(text)
}

/// The most of an answer the CLI reads: an import report of 10,000 rows is a few MiB.
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// An answer's body, read as it comes up to [`MAX_ANSWER`]: whatever answers at the
/// address (a proxy, another service) cannot fill the machine's memory.
pub async fn read_limited(res: reqwest::Response) -> anyhow::Result<Vec<u8>> {
    Ok(tollgate_sdk::read_capped(res, MAX_ANSWER).await?)
}

/// The answer indented when it is JSON, as it came otherwise.
pub fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| text.to_string())
}
