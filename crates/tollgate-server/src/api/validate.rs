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
}

#[utoipa::path(post, path = "/v1/validate", tag = "validation", request_body(content = Object, description = "{key, feature?}"), responses((status = 200, description = "{valid, code, license, features}; code is VALID, GRACE_PERIOD, NOT_FOUND, SUSPENDED, REVOKED, EXPIRED, FEATURE_NOT_ENTITLED or MALFORMED_KEY")), security(("bearer" = [])))]
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
    let scope = Scope { feature: b.feature.as_deref(), product: principal.product.as_deref() };
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
        _ => None,
    };
    json(
        &ValidateResponse { valid: v.valid(), code: v.code.as_str(), detail, grace_ends_at, license: view, features },
        s.seq(),
    )
}
