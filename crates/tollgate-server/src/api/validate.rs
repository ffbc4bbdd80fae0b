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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    /// The license key (a malformed one is answered with `MALFORMED_KEY`, not refused).
    #[schema(example = "TG-7KQM-2XHD-9PWC-4RJV")]
    key: String,
    /// Validate for this feature too (`FEATURE_NOT_ENTITLED` when the plan lacks it).
    #[serde(default)]
    feature: Option<String>,
    /// This machine: it must be activated on node-locked plans.
    #[serde(default)]
    fingerprint: Option<String>,
    /// This user: it must hold a seat on seat plans.
    #[serde(default)]
    user: Option<String>,
    /// Also return a fresh license token: short-lived, or with `offline` one bound to
    /// `fingerprint` and lasting the plan's `offline_days`.
    #[serde(default)]
    token: bool,
    #[serde(default)]
    offline: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Validation)]
pub(crate) struct ValidateResponse<'a> {
    valid: bool,
    #[schema(value_type = String, pattern = "^(VALID|GRACE_PERIOD|NOT_FOUND|SUSPENDED|REVOKED|EXPIRED|FEATURE_NOT_ENTITLED|FINGERPRINT_NOT_ACTIVATED|USER_NOT_ASSIGNED|TOO_MANY_MACHINES|TOO_MANY_USERS|MALFORMED_KEY)$")]
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    grace_ends_at: Option<Timestamp>,
    /// Null when no license has the key.
    license: Option<LicenseView<'a>>,
    features: Vec<&'a str>,
    /// Per meter of the plan: used and remaining in the current period.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    usage: Vec<super::usage::MeterReport<'a>>,
    /// With `"token": true` and a valid license: a license token, a compact EdDSA JWS
    /// verifiable against `/.well-known/jwks.json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    token_expires_at: Option<Timestamp>,
    /// Why an offline token was asked for and an online one given.
    #[serde(skip_serializing_if = "Option::is_none")]
    offline_refused: Option<String>,
}

#[utoipa::path(post, path = "/v1/validate", tag = "validation", request_body = ValidateBody, responses((status = 200, description = "the answer: `valid` and its `code` (every key gets a 200, a refusal included); `offline_refused` says why an offline token asked for was not given (an online one was)", body = ValidateResponse)), security(("bearer" = [])))]
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
        (None, tollgate_core::validate::Code::TooManyMachines) => Some(
            "the license has more machines activated than its limit now allows, and this one is among the newest \
             beyond it: deactivate machines to bring it back"
                .to_string(),
        ),
        (None, tollgate_core::validate::Code::TooManyUsers) => Some(
            "the license has more seats assigned than its limit now allows, and this user's is among the newest \
             beyond it: unassign users to bring it back"
                .to_string(),
        ),
        _ => None,
    };
    let mut offline_refused = None;
    let token = match (b.token, v.valid(), v.license) {
        (true, true, Some(l)) => {
            // Judged on this validation's state and instant: the token agrees with the
            // answer, whatever committed or ticked meanwhile.
            let at = Some((s.clone(), now));
            let m = super::license_tokens::Mint {
                fingerprint: b.fingerprint.clone(),
                offline: b.offline,
                at: at.clone(),
                ..Default::default()
            };
            match super::license_tokens::mint(&app, l.id.as_str(), m).await {
                Ok(t) => Some(t.part()),
                // The offline token is judged on the latest state: a license no longer
                // valid since gets no token at all, not even an online one claiming it
                // active.
                Err(e) if b.offline && e.code == "LICENSE_NOT_VALID" => {
                    offline_refused = Some(e.detail);
                    None
                }
                // A fingerprint valid through a floating lease, a plan without offline
                // use, or a machine limit lowered since: the answer stands with an
                // online token, and says why there is no offline one.
                Err(e)
                    if b.offline
                        && matches!(e.code, "MACHINE_NOT_ACTIVATED" | "OFFLINE_NOT_ALLOWED" | "TOO_MANY_MACHINES") =>
                {
                    offline_refused = Some(e.detail);
                    let m =
                        super::license_tokens::Mint { fingerprint: b.fingerprint.clone(), at, ..Default::default() };
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
            token_expires_at: token.as_ref().map(|t| t.token_expires_at),
            token: token.map(|t| t.token),
            offline_refused,
        },
        s.seq(),
    )
}
