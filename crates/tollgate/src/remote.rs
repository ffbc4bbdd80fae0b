//! Talking to a running server from the command line: where it is, the token, and
//! one request with its failure turned into a readable error.

use anyhow::Context;
use clap::Args;

#[derive(Args, Clone)]
pub struct Remote {
    /// The server's base URL.
    #[arg(long, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API token: admin for `keys rotate` and `gates`, issuer or admin for
    /// `offline activate`.
    #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true)]
    token: String,
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// One request; a status other than 2xx is an error carrying the server's answer.
pub async fn call(
    remote: &Remote,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<String> {
    let url = format!("{}{path}", remote.url.trim_end_matches('/'));
    let mut req = reqwest::Client::new().request(method, &url).bearer_auth(&remote.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.with_context(|| format!("cannot reach {url}"))?;
    let status = res.status();
    let text = res.text().await?;
    if !status.is_success() {
        anyhow::bail!("{url}: {status}: {text}");
    }
    Ok(text)
}

/// The answer indented when it is JSON, as it came otherwise.
pub fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| text.to_string())
}
