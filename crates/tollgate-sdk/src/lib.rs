//! Tollgate's client library for vendors' applications.
//!
//! - [`Client::validate`] asks the server, caches the answer for a TTL, keeps the
//!   signed token that comes with it, and when the network fails answers from the last
//!   verified token while it is valid, saying so in [`Validation::source`].
//! - [`offline`]: [`verify_token`] checks a license token against a JWKS with no
//!   network, with core's code, exactly as the server signs it.
//! - [`activation`]: air-gapped activation requests, license files and deactivation
//!   proofs.
//! - [`gates`]: [`GateClient`] evaluates rollout gates locally from the server's
//!   signed ruleset, refreshed in the background; [`provider`] is an OpenFeature
//!   provider over it.
#![forbid(unsafe_code)]

pub mod activation;
mod fallback;
pub mod gates;
pub mod offline;
pub mod provider;

use std::sync::Arc;

pub use fallback::ClientConfig;
pub use gates::{GateClient, GateConfig};
pub use offline::{Claims, Jwks, Revocations, TokenError, VerifyOptions, verify_token, verify_token_with};
pub use provider::TollgateProvider;

use serde::Deserialize;

/// Why validation said no (or yes): the server's stable codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    Valid,
    GracePeriod,
    MalformedKey,
    NotFound,
    Suspended,
    Revoked,
    Expired,
    FeatureNotEntitled,
    /// This machine's fingerprint is neither activated on the license nor holding a lease.
    FingerprintNotActivated,
    /// The user holds no seat on the license.
    UserNotAssigned,
    /// This machine is activated, but beyond a machine limit lowered since.
    TooManyMachines,
    /// The user holds a seat, but beyond a seat limit lowered since.
    TooManyUsers,
    /// A code this SDK version does not know yet; treat as invalid.
    #[serde(other)]
    Unknown,
}

#[derive(Clone, Debug, Deserialize)]
pub struct LicenseInfo {
    pub id: String,
    pub status: String,
    pub product: String,
    pub plan: String,
    pub licensee: String,
    pub expires_at: Option<String>,
    #[serde(default)]
    pub grace_ends_at: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Validation {
    pub valid: bool,
    pub code: Code,
    #[serde(default)]
    pub detail: Option<String>,
    pub license: Option<LicenseInfo>,
    #[serde(default)]
    pub features: Vec<String>,
    /// The signed license token the server sent with the answer.
    #[serde(default)]
    pub token: Option<String>,
    /// Where the answer came from.
    #[serde(skip)]
    pub source: Source,
}

/// Where an answer came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Source {
    /// The server, just now.
    #[default]
    Online,
    /// An online answer younger than the cache TTL.
    Cached,
    /// The server could not be reached: answered from the last verified token, valid
    /// until `token_expires_at` (seconds since the epoch).
    Offline { token_expires_at: i64, license: String },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the server could not be reached: {0}")]
    Network(#[source] reqwest::Error),
    #[error("the server refused the request ({status} {code}): {detail}")]
    Refused { status: u16, code: String, detail: String },
    #[error("the server's answer was not understood: {0}")]
    Protocol(String),
    /// A token was refused: forged, expired, for another product or machine, revoked…
    #[error("token refused: {0}")]
    Token(TokenError),
    /// The client cannot be built as configured (a CA file that is not PEM…).
    #[error("the client cannot be set up: {0}")]
    Config(String),
}

#[derive(Deserialize)]
struct Problem {
    code: String,
    #[serde(default)]
    detail: String,
}

/// A client for one Tollgate server with one token (typically a product-role token).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    config: ClientConfig,
    memory: Arc<fallback::Shared>,
    /// Held while the revocation feed is read and applied.
    syncing: Arc<tokio::sync::Mutex<()>>,
}

/// The most of a server's answer read into memory, unless the caller allows more: a
/// validation, a JWKS or a problem is a few KiB.
pub(crate) const MAX_ANSWER: usize = 1024 * 1024;

/// An answer's body, whatever its status, read as it comes and refused past `limit`
/// bytes ([`Error::Protocol`]), so that a broken proxy or a hostile server cannot fill
/// the application's memory. The CLI reads its answers with it too.
pub async fn read_capped(mut res: reqwest::Response, limit: usize) -> Result<Vec<u8>, Error> {
    let (status, url) = (res.status(), res.url().clone());
    let too_long = || Error::Protocol(format!("{status} from {url}: the answer is longer than {limit} bytes"));
    if res.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_long());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(Error::Network)? {
        if bytes.len() + chunk.len() > limit {
            return Err(too_long());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The body of a 2xx answer, or the problem of any other; at most `limit` bytes.
pub(crate) async fn read_ok(res: reqwest::Response, limit: usize) -> Result<Vec<u8>, Error> {
    let status = res.status();
    let bytes = read_capped(res, limit).await?;
    if !status.is_success() {
        let p: Problem = serde_json::from_slice(&bytes).map_err(|e| Error::Protocol(format!("{status}: {e}")))?;
        return Err(Error::Refused { status: status.as_u16(), code: p.code, detail: p.detail });
    }
    Ok(bytes)
}

impl Client {
    pub fn new(base_url: &str, token: &str) -> Result<Self, Error> {
        Self::with_config(base_url, token, ClientConfig::default())
    }

    pub fn with_config(base_url: &str, token: &str, config: ClientConfig) -> Result<Self, Error> {
        // The server closes a keep-alive connection idle for 20 s (its header read
        // timeout): drop them here first, so that no request goes out on one the
        // server is closing.
        let mut builder = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(15));
        if !config.ca_certificates_pem.is_empty() {
            let certs = reqwest::Certificate::from_pem_bundle(&config.ca_certificates_pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| Error::Config("ca_certificates_pem holds no PEM certificate".into()))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(Error::Network)?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            config,
            memory: Arc::default(),
            syncing: Arc::default(),
        })
    }

    /// Validates a license key, optionally for one feature (the scope). Answers from the
    /// cache within its TTL; otherwise asks the server (which also sends a signed token,
    /// verified here and kept) and applies the revocation feed. If the server cannot be
    /// reached, answers from the last verified token while it is valid, with
    /// [`Source::Offline`]; a refused token is [`Error::Token`].
    pub async fn validate(&self, key: &str, feature: Option<&str>) -> Result<Validation, Error> {
        self.validate_on(key, feature, true).await
    }

    /// [`Self::validate`], sending this machine's fingerprint only with `this_machine`:
    /// a license a gate context names is another customer's, judged as the server's
    /// OFREP endpoint judges it, without regard to this machine.
    pub(crate) async fn validate_on(
        &self,
        key: &str,
        feature: Option<&str>,
        this_machine: bool,
    ) -> Result<Validation, Error> {
        if let Some(v) = self.cached(key, feature, this_machine) {
            return Ok(v);
        }
        let mut body = serde_json::json!({ "key": key, "token": true });
        if let Some(f) = feature {
            body["feature"] = serde_json::Value::from(f);
        }
        if this_machine {
            if let Some(fp) = &self.config.fingerprint {
                body["fingerprint"] = serde_json::Value::from(fp.as_str());
                body["offline"] = serde_json::Value::from(self.config.offline_tokens);
            }
            if let Some(user) = &self.config.user {
                body["user"] = serde_json::Value::from(user.as_str());
            }
        }
        let sent =
            self.http.post(format!("{}/v1/validate", self.base)).bearer_auth(&self.token).json(&body).send().await;
        let res = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                return self.fallback(key, feature, Error::Network(e));
            }
            Err(e) => return Err(Error::Network(e)),
        };
        let bytes = match read_ok(res, MAX_ANSWER).await {
            Ok(b) => b,
            // The server, or a proxy in front of it, failed, or the answer broke off:
            // as good as unreachable.
            Err(e @ (Error::Network(_) | Error::Protocol(_))) => return self.fallback(key, feature, e),
            Err(e) if matches!(e, Error::Refused { status, .. } if status >= 500) => {
                return self.fallback(key, feature, e);
            }
            Err(e) => return Err(e),
        };
        let v: Validation = match serde_json::from_slice(&bytes) {
            Ok(v) => self.for_this_product(v),
            // A 2xx that is no answer (a captive portal's login page, a proxy's error
            // page): as good as unreachable too.
            Err(e) => return self.fallback(key, feature, Error::Protocol(format!("not a validation: {e}"))),
        };
        // The feed first, so that the new token is checked against what it says now (a
        // license reinstated since the last sync). Best effort: a feed that cannot be
        // read now is read at the next contact.
        let _ = self.sync_revocations_once().await;
        self.remember(key, feature, this_machine, &v).await;
        Ok(v)
    }

    /// With [`ClientConfig::product`], a license of another product is no license
    /// here: a product token not scoped to one product validates every product's keys,
    /// and a cheaper product's key must not unlock this one.
    fn for_this_product(&self, v: Validation) -> Validation {
        match (&self.config.product, &v.license) {
            (Some(mine), Some(l)) if l.product != *mine => Validation {
                valid: false,
                code: Code::NotFound,
                detail: Some(format!("the license is for product '{}', not '{mine}'", l.product)),
                license: None,
                features: Vec::new(),
                token: None,
                source: v.source,
            },
            _ => v,
        }
    }
}
