//! Signing keys, license tokens and air-gapped activation from the command line:
//! `keys rotate|list` and `offline activate` talk to a running server over HTTP;
//! `token verify` is offline and uses the SDK's verification (core's code).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::remote::{Remote, call, pretty, runtime};

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Retire the current token signing key (it stays in the JWKS while its tokens live) and start signing with a new one.
    Rotate {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        reason: Option<String>,
    },
    /// List the signing keys: current, retired, and until when each is published.
    List {
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
pub enum OfflineCmd {
    /// Turn an activation request file into a signed license file bound to its machine.
    Activate {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        request: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The JWKS: an http(s) URL (e.g. http://host/.well-known/jwks.json) or a file.
    #[arg(long)]
    jwks: String,
    /// The product key the token must be for.
    #[arg(long)]
    audience: Option<String>,
    /// This machine's fingerprint, for tokens bound to one.
    #[arg(long)]
    fingerprint: Option<String>,
    /// Clock-skew leeway in seconds for exp and nbf.
    #[arg(long, default_value_t = tollgate_sdk::offline::DEFAULT_LEEWAY_SECONDS)]
    leeway: i64,
    token: String,
}

pub fn keys(cmd: KeysCmd) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let text = rt.block_on(async {
        match &cmd {
            KeysCmd::Rotate { remote, reason } => {
                call(remote, reqwest::Method::POST, "/v1/keys/rotate", Some(serde_json::json!({ "reason": reason })))
                    .await
            }
            KeysCmd::List { remote } => call(remote, reqwest::Method::GET, "/v1/keys", None).await,
        }
    })?;
    say!("{}", pretty(&text));
    Ok(ExitCode::SUCCESS)
}

pub fn offline(cmd: OfflineCmd) -> anyhow::Result<ExitCode> {
    let OfflineCmd::Activate { remote, request, out } = cmd;
    let body: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&request).with_context(|| format!("cannot read {}", request.display()))?,
    )
    .with_context(|| format!("{} is not JSON", request.display()))?;
    let text = runtime()?.block_on(call(&remote, reqwest::Method::POST, "/v1/offline/activate", Some(body)))?;
    std::fs::write(&out, pretty(&text) + "\n").with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("wrote the license file {}", out.display());
    Ok(ExitCode::SUCCESS)
}

async fn load_jwks(source: &str) -> anyhow::Result<tollgate_sdk::Jwks> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        let res = crate::remote::http_client(None)?
            .get(source)
            .send()
            .await
            .with_context(|| format!("cannot fetch {source}"))?;
        anyhow::ensure!(res.status().is_success(), "{source}: {}", res.status());
        String::from_utf8(crate::remote::read_limited(res).await?).with_context(|| format!("{source} is not text"))?
    } else {
        std::fs::read_to_string(Path::new(source)).with_context(|| format!("cannot read {source}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("{source} is not a JWKS"))
}

pub fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let jwks = runtime()?.block_on(load_jwks(&a.jwks))?;
    let o = tollgate_sdk::VerifyOptions {
        audience: a.audience,
        fingerprint: a.fingerprint,
        leeway_seconds: a.leeway,
        now: None,
    };
    match tollgate_sdk::verify_token_with(a.token.trim(), &jwks, &o, None) {
        Ok(claims) => {
            say!("{}", serde_json::to_string_pretty(&claims)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            say!("REFUSED {}: {e}", e.code());
            Ok(ExitCode::from(1))
        }
    }
}

/// The master key for sealing signing keys: `TOLLGATE_MASTER_KEY` (base64 of 32 bytes)
/// or `TOLLGATE_MASTER_KEY_FILE`; neither: the server generates one into the data
/// directory and warns.
pub fn master_key_from_env() -> Option<tollgate_server::kek::MasterKeySource> {
    use tollgate_server::kek::MasterKeySource;
    let var = |n: &str| std::env::var(n).ok().filter(|s| !s.trim().is_empty());
    var("TOLLGATE_MASTER_KEY")
        .map(MasterKeySource::Inline)
        .or_else(|| var("TOLLGATE_MASTER_KEY_FILE").map(|p| MasterKeySource::File(p.into())))
}
