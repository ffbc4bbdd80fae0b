//! Health, the OpenAPI document, and API tokens.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tollgate_core::ids::ProductKey;
use utoipa::OpenApi;

use super::outside_ledger;
use super::{json, json_response};
use crate::AppState;
use crate::auth::{Permission, Principal, Role, new_token};
use crate::extract::{ApiJson, ApiPath, IdempotencyKey};
use crate::problem::ApiError;

#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, description = "the process is up")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz", tag = "system", responses((status = 200, description = "the ledger is loaded and the writer is running"), (status = 503, description = "NOT_READY: the ledger writer is not running, or this node cannot fold what other nodes appended to the shared ledger (an event it cannot read, acknowledged events gone: the detail says why) and serves an older state", body = crate::problem::Problem)))]
pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if let Some(why) = app.engine.behind() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NOT_READY",
            format!("this node cannot follow the shared ledger, so it serves an older state: {why}"),
        )
        .into_response();
    }
    if app.engine.is_running() {
        json(&serde_json::json!({"ready": true, "seq": app.engine.state().seq()}), app.engine.state().seq())
            .into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NOT_READY", "the ledger writer is not running").into_response()
    }
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "system", responses((status = 200, description = "this document (OpenAPI 3.1)")))]
pub async fn openapi() -> Response {
    let doc = crate::openapi::ApiDoc::openapi();
    json_response(StatusCode::OK, doc.to_json().unwrap_or_default().into_bytes(), 0)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    #[schema(value_type = crate::auth::Role)]
    role: String,
    #[serde(default)]
    name: Option<String>,
    /// Restricts a product token to one product's licenses.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    product: Option<ProductKey>,
}

#[derive(Serialize)]
struct TokenView {
    id: String,
    role: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    product: Option<String>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    /// Shown once, on creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl From<tollgate_store::TokenRecord> for TokenView {
    fn from(t: tollgate_store::TokenRecord) -> Self {
        TokenView {
            id: t.id,
            role: t.role,
            name: t.name,
            product: t.product,
            created_at: t.created_at,
            revoked_at: t.revoked_at,
            token: None,
        }
    }
}

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateToken, responses((status = 201, description = "the token; its secret is shown only here"), (status = 404, description = "`PRODUCT_NOT_FOUND`: no such product to scope a product token to", body = crate::problem::Problem), (status = 409, description = "`TOKEN_ALREADY_CREATED`: this Idempotency-Key already created a token (named in `detail`); its secret is not stored, so it cannot be shown again", body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn create_token(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    idempotency: IdempotencyKey,
    body: ApiJson<CreateToken>,
) -> Result<Response, ApiError> {
    principal.require(Permission::TokensManage)?;
    // A repeat must not create a second token, and the secret is never stored, so a
    // repeat is told which token its key created instead of getting the secret again.
    let idem = idempotency.0.map(|k| outside_ledger::claim_key("token", &principal.token_id, &k));
    let request = outside_ledger::request("/v1/tokens", &body.request_hash);
    let repeat = |earlier: &outside_ledger::Claim| -> ApiError {
        if let Err(e) = outside_ledger::check_same(earlier, &request) {
            return e;
        }
        let id = earlier.answer["id"].as_str().unwrap_or_default();
        ApiError::new(
            StatusCode::CONFLICT,
            "TOKEN_ALREADY_CREATED",
            format!(
                "this Idempotency-Key already created token {id}; its secret was shown once and is not stored. \
                 If that answer was lost, revoke it (DELETE /v1/tokens/{id}) and create another with a new key"
            ),
        )
    };
    if let Some(earlier) = idem.as_deref().map(|mk| outside_ledger::find(&app, mk)).transpose()?.flatten() {
        return Err(repeat(&earlier));
    }
    let b = body.value;
    let role = Role::parse(&b.role).ok_or_else(|| {
        ApiError::unprocessable("INVALID_INPUT", "role must be one of admin, issuer, auditor, product")
    })?;
    crate::auth::check_scope(role, b.product.as_ref().map(|p| p.as_str()))
        .map_err(|why| ApiError::unprocessable("INVALID_INPUT", why))?;
    if let Some(p) = &b.product
        && app.engine.state().product(p.as_str()).is_none()
    {
        return Err(ApiError::not_found("PRODUCT_NOT_FOUND", format!("no product '{p}' to scope the token to")));
    }
    let name = b.name.unwrap_or_default();
    if name.len() > 200 {
        return Err(ApiError::unprocessable("INVALID_INPUT", "name is at most 200 bytes"));
    }
    let (secret, record) = new_token(role, &name, b.product.map(|p| p.to_string()), crate::engine::now().to_string());
    {
        let mut store = app.reader.lock().unwrap_or_else(|p| p.into_inner());
        store.insert_token(&record)?;
        if let Some(mk) = &idem {
            let mine = outside_ledger::Claim { request, answer: serde_json::json!({ "id": record.id }) };
            let claimed = outside_ledger::claim(&mut **store, mk, &mine);
            if claimed.as_ref().ok() != Some(&mine) {
                // Another request with this key got there first (or the claim failed):
                // the token made here never leaves the server, so it goes.
                if let Err(e) = store.revoke_token(&record.id, &crate::engine::now().to_string()) {
                    tracing::warn!(token = %record.id, error = %e, "could not revoke a token whose secret was never shown");
                }
                return Err(match claimed {
                    Ok(earlier) => repeat(&earlier),
                    Err(e) => e,
                });
            }
        }
    }
    // Known here at once (other nodes read it within a second of its first use).
    app.tokens.forget();
    let mut view = TokenView::from(record);
    view.token = Some(secret);
    let body = serde_json::to_vec(&view).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(json_response(StatusCode::CREATED, body, app.engine.state().seq()))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", responses((status = 200, description = "all tokens, without secrets")), security(("bearer" = [])))]
pub async fn list_tokens(State(app): State<Arc<AppState>>, principal: Principal) -> Result<Response, ApiError> {
    principal.require(Permission::TokensManage)?;
    let tokens = app.reader.lock().unwrap_or_else(|p| p.into_inner()).tokens()?;
    let items: Vec<TokenView> = tokens.into_iter().map(TokenView::from).collect();
    json(&serde_json::json!({ "items": items }), app.engine.state().seq())
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", responses((status = 204, description = "revoked"), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn revoke_token(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(Permission::TokensManage)?;
    let found =
        app.reader.lock().unwrap_or_else(|p| p.into_inner()).revoke_token(&id, &crate::engine::now().to_string())?;
    if !found {
        return Err(ApiError::not_found("TOKEN_NOT_FOUND", format!("no active token with id '{id}'")));
    }
    app.tokens.revoked(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}
