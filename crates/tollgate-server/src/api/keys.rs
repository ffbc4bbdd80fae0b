//! Token signing keys: the public JWKS, rotation and the list.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tollgate_core::Timestamp;

use super::{WriteCtx, execute, json};
use crate::AppState;
use crate::auth::{Permission, Principal, Role};
use crate::extract::{ApiJson, IdempotencyKey, RequestId};
use crate::keys::KeyVault;
use crate::problem::ApiError;

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "tokens", responses((status = 200, description = "RFC 7517 JWKS: the current signing key and retired keys whose tokens may still be alive (kty OKP, crv Ed25519, alg EdDSA, use sig, kid)")))]
pub async fn jwks(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let s = app.engine.state();
    let mut res = json(&KeyVault::jwks(&app, crate::engine::now()), s.seq())?;
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jwk-set+json"));
    Ok(res)
}

#[derive(Serialize)]
struct KeyView<'a> {
    kid: &'a str,
    current: bool,
    published: bool,
    created_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    retired_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_until: Option<Timestamp>,
}

fn keys_view(s: &tollgate_core::State, now: Timestamp) -> serde_json::Value {
    let current = s.keys().current().map(|k| k.kid.clone());
    let keys: Vec<KeyView<'_>> = s
        .keys()
        .all()
        .map(|k| KeyView {
            kid: &k.kid,
            current: current.as_deref() == Some(k.kid.as_str()),
            published: k.published(now),
            created_at: k.created_at,
            retired_at: k.retired_at,
            keep_until: k.keep_until,
        })
        .collect();
    serde_json::json!({ "current": current, "keys": keys })
}

#[utoipa::path(get, path = "/v1/keys", tag = "tokens", responses((status = 200, description = "{current, keys: [{kid, current, published, created_at, retired_at?, keep_until?}]}")), security(("bearer" = [])))]
pub async fn list(State(app): State<Arc<AppState>>, principal: Principal) -> Result<Response, ApiError> {
    principal.require(Permission::LedgerRead)?;
    let s = app.engine.state();
    json(&keys_view(&s, crate::engine::now()), s.seq())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    #[serde(default)]
    reason: Option<String>,
}

#[utoipa::path(post, path = "/v1/keys/rotate", tag = "tokens", request_body(content = Option<RotateBody>, description = "may be left out"), responses((status = 200, description = "the keys after rotation; the new key signs from now on"), (status = 403, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn rotate(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<RotateBody>,
) -> Result<Response, ApiError> {
    if principal.role != Role::Admin {
        return Err(ApiError::forbidden("only an admin token may rotate signing keys"));
    }
    let now = crate::engine::now();
    let (_guard, command, kid) = app.keys.prepare_rotation(&app, now).await?;
    tracing::info!(kid = %kid, "rotating the token signing key");
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash: body.request_hash };
    let reason = body.value.reason.or_else(|| Some("key rotation".into()));
    execute(&app, ctx, reason, command, StatusCode::OK, Box::new(keys_view)).await
}
