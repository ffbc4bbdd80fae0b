//! `POST /v1/validate`: the hot path. Reads the committed state from memory only.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tollgate_core::Timestamp;
use tollgate_core::validate::{Scope, validate as core_validate};

use super::json;
use super::licenses::{LicenseView, license_view};
use crate::AppState;
use crate::auth::{Permission, Principal};
use crate::extract::ApiJson;
use crate::problem::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    key: String,
    #[serde(default)]
    feature: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    user: Option<String>,
    /// Also return a fresh license token: short-lived, or with `offline` one bound to
    /// `fingerprint` and lasting the plan's `offline_days`.
    #[serde(default)]
    token: bool,
    #[serde(default)]
    offline: bool,
}

#[derive(Serialize)]
struct ValidateResponse<'a> {
    valid: bool,
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grace_ends_at: Option<Timestamp>,
    license: Option<LicenseView<'a>>,
    features: Vec<&'a str>,
    /// Per meter of the plan: used and remaining in the current period.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    usage: Vec<super::usage::MeterReport<'a>>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    token: Option<super::license_tokens::TokenPart>,
    /// Why an offline token was asked for and an online one given.
    #[serde(skip_serializing_if = "Option::is_none")]
    offline_refused: Option<String>,
}

#[utoipa::path(post, path = "/v1/validate", tag = "validation", request_body(content = Object, description = "{key, feature?, fingerprint?, user?, token?, offline?}"), responses((status = 200, description = "{valid, code, detail?, license, features, grace_ends_at?, usage?, token?, token_expires_at?, offline_refused?}; offline_refused says why an offline token asked for was not given (an online one was); code is VALID, GRACE_PERIOD, NOT_FOUND, SUSPENDED, REVOKED, EXPIRED, FEATURE_NOT_ENTITLED, FINGERPRINT_NOT_ACTIVATED, USER_NOT_ASSIGNED or MALFORMED_KEY")), security(("bearer" = [])))]
pub async fn validate(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    body: ApiJson<ValidateBody>,
) -> Result<Response, ApiError> {
    principal.require(Permission::Validate)?;
    let b = body.value;
    if b.key.len() > 200 {
        return Err(ApiError::unprocessable("INVALID_INPUT", "key is at most 200 characters"));
    }
    let s = app.engine.state();
    let now = crate::engine::now();
    let scope = Scope {
        feature: b.feature.as_deref(),
        product: principal.product.as_deref(),
        fingerprint: b.fingerprint.as_deref(),
        user: b.user.as_deref(),
    };
    let v = core_validate(&s, &b.key, scope, now);
    let grace_ends_at = match v.standing {
        Some(tollgate_core::license::Standing::Grace { ends_at }) => Some(ends_at),
        _ => None,
    };
    let view = v.license.map(|l| license_view(&s, l, now));
    let features = if v.valid() { view.as_ref().map(|l| l.features.clone()).unwrap_or_default() } else { Vec::new() };
    let detail = match (&v.detail, v.code) {
        (Some(e), _) => Some(e.to_string()),
        (None, tollgate_core::validate::Code::FeatureNotEntitled) => {
            b.feature.as_ref().map(|f| format!("the license's plan does not include feature '{f}'"))
        }
        (None, tollgate_core::validate::Code::FingerprintNotActivated) => {
            Some("the fingerprint is not activated on the license and holds no lease".to_string())
        }
        (None, tollgate_core::validate::Code::UserNotAssigned) => {
            Some("the user holds no seat on the license".to_string())
        }
        _ => None,
    };
    let mut offline_refused = None;
    let token = match (b.token, v.valid(), v.license) {
        (true, true, Some(l)) => {
            let m = super::license_tokens::Mint {
                fingerprint: b.fingerprint.clone(),
                offline: b.offline,
                ..Default::default()
            };
            match super::license_tokens::mint(&app, l.id.as_str(), m).await {
                Ok(t) => Some(t.part()),
                // A fingerprint valid through a floating lease, or a plan without offline
                // use: the answer stands, with an online token, and says why there is no
                // offline one.
                Err(e) if b.offline && matches!(e.code, "MACHINE_NOT_ACTIVATED" | "OFFLINE_NOT_ALLOWED") => {
                    offline_refused = Some(e.detail);
                    let m = super::license_tokens::Mint { fingerprint: b.fingerprint.clone(), ..Default::default() };
                    Some(super::license_tokens::mint(&app, l.id.as_str(), m).await?.part())
                }
                Err(e) => return Err(e),
            }
        }
        _ => None,
    };
    let usage = v.license.map(|l| super::usage::report(&s, l, now)).unwrap_or_default();
    json(
        &ValidateResponse {
            valid: v.valid(),
            code: v.code.as_str(),
            detail,
            grace_ends_at,
            license: view,
            features,
            usage,
            token,
            offline_refused,
        },
        s.seq(),
    )
}
