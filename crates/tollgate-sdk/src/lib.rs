//! Tollgate's client library for vendors' applications.
//!
//! This first cut validates online: [`Client::validate`] asks the server and returns
//! a typed answer. Offline verification of signed tokens, JWKS handling and local gate
//! evaluation arrive with the issues that add tokens and rollouts; they will reuse the
//! core crate's verification, exactly as the server does.
#![forbid(unsafe_code)]

use std::time::Duration;

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
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the server could not be reached: {0}")]
    Network(#[source] reqwest::Error),
    #[error("the server refused the request ({status} {code}): {detail}")]
    Refused { status: u16, code: String, detail: String },
    #[error("the server's answer was not understood: {0}")]
    Protocol(String),
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
}

impl Client {
    pub fn new(base_url: &str, token: &str) -> Result<Self, Error> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(Error::Network)?;
        Ok(Self { http, base: base_url.trim_end_matches('/').to_string(), token: token.to_string() })
    }

    /// Validates a license key, optionally for one feature.
    pub async fn validate(&self, key: &str, feature: Option<&str>) -> Result<Validation, Error> {
        let mut body = serde_json::json!({ "key": key });
        if let Some(f) = feature {
            body["feature"] = serde_json::Value::from(f);
        }
        let res = self
            .http
            .post(format!("{}/v1/validate", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(Error::Network)?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(Error::Network)?;
        if !status.is_success() {
            let p: Problem = serde_json::from_slice(&bytes).map_err(|e| Error::Protocol(format!("{status}: {e}")))?;
            return Err(Error::Refused { status: status.as_u16(), code: p.code, detail: p.detail });
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Protocol(e.to_string()))
    }
}
