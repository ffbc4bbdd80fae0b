//! A licensee's entitlements across its licenses, and per-license overrides (issue 3).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use tollgate_core::Command;
use tollgate_core::models::ModelCommand;
use tollgate_core::overrides::Overrides;

use super::licenses::license_view;
use super::machines::license_for;
use super::{WriteCtx, execute, json};
use crate::AppState;
use crate::auth::{Permission, Principal};
use crate::extract::{ApiJson, ApiPath, IdempotencyKey, RequestId};
use crate::problem::ApiError;

#[utoipa::path(get, path = "/v1/licensees/{licensee}/entitlements", tag = "licenses", responses((status = 200, description = "{licensee, licenses, features: [{product, feature, license, licenses}], products: [{product, max_machines, max_users, max_leases?, meters}]}; only valid licenses count and the most permissive wins on limits")), security(("bearer" = [])))]
pub async fn entitlements(
    State(app): State<Arc<AppState>>,
    ApiPath(licensee): ApiPath<String>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(Permission::LicenseRead)?;
    let s = app.engine.state();
    let e = tollgate_core::entitlements::entitlements(&s, &licensee, crate::engine::now());
    json(&e, s.seq())
}

#[utoipa::path(post, path = "/v1/licenses/{id}/overrides", tag = "licenses", request_body(content = crate::openapi::schemas::Overrides, description = "replaces the license's overrides; {} clears them"), responses((status = 200, description = "the license with its overrides applied")), security(("bearer" = [])))]
pub async fn set_overrides(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<Overrides>,
) -> Result<Response, ApiError> {
    let id = license_for(&app, &principal, &id, Permission::LicenseWrite)?;
    let ApiJson { value, request_hash } = body;
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash };
    let render_id = id.clone();
    let render: crate::engine::Render = Box::new(move |s, now| match s.license(render_id.as_str()) {
        Some(l) => {
            let mut v = serde_json::to_value(license_view(s, l, now)).unwrap_or_default();
            v["overrides"] =
                serde_json::to_value(s.models(l.id.as_str()).and_then(|m| m.overrides.as_ref())).unwrap_or_default();
            v
        }
        None => serde_json::Value::Null,
    });
    let command = Command::Models(ModelCommand::SetOverrides { license: id, overrides: value });
    execute(&app, ctx, None, command, StatusCode::OK, render).await
}
