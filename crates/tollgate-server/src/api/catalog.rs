//! Products and plans.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use tollgate_core::Command;
use tollgate_core::catalog::{PlanSpec, ProductSpec};
use tollgate_core::ids::{PlanKey, ProductKey};

use super::{WriteCtx, execute, json};
use crate::AppState;
use crate::auth::{Permission, Principal};
use crate::extract::{ApiJson, ApiPath, IdempotencyKey, RequestId};
use crate::problem::ApiError;

#[derive(Serialize)]
struct List<T> {
    items: Vec<T>,
}

fn product_view(s: &tollgate_core::State, key: &ProductKey) -> serde_json::Value {
    serde_json::to_value(s.product(key.as_str())).unwrap_or_default()
}

fn plan_view(s: &tollgate_core::State, key: &PlanKey) -> serde_json::Value {
    serde_json::to_value(s.plan(key.as_str())).unwrap_or_default()
}

#[utoipa::path(post, path = "/v1/products", tag = "catalog", request_body = crate::openapi::schemas::ProductSpec, responses((status = 201, description = "created (or already identical)", body = crate::openapi::schemas::Product), (status = 409, description = "exists with other content", body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn create_product(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<ProductSpec>,
) -> Result<Response, ApiError> {
    principal.require(Permission::CatalogWrite)?;
    let key = body.value.key.clone();
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash: body.request_hash };
    execute(
        &app,
        ctx,
        None,
        Command::CreateProduct(body.value),
        StatusCode::CREATED,
        Box::new(move |s, _| product_view(s, &key)),
    )
    .await
}

#[utoipa::path(put, path = "/v1/products/{key}", tag = "catalog", request_body(content = crate::openapi::schemas::ProductSpec, description = "the whole product; its key must be the path's"), responses((status = 200, description = "updated: a new version", body = crate::openapi::schemas::Product), (status = 409, description = "`FEATURE_IN_USE`: a plan or a license's overrides grant, or a gate is bound to, a feature the update removes", body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn update_product(
    State(app): State<Arc<AppState>>,
    ApiPath(key): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<ProductSpec>,
) -> Result<Response, ApiError> {
    principal.require(Permission::CatalogWrite)?;
    if body.value.key.as_str() != key {
        return Err(ApiError::unprocessable(
            "KEY_MISMATCH",
            format!("the body's key '{}' differs from the path's '{key}'", body.value.key),
        ));
    }
    let key = body.value.key.clone();
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash: body.request_hash };
    execute(
        &app,
        ctx,
        None,
        Command::UpdateProduct(body.value),
        StatusCode::OK,
        Box::new(move |s, _| product_view(s, &key)),
    )
    .await
}

#[utoipa::path(get, path = "/v1/products", tag = "catalog", responses((status = 200, description = "all products", body = crate::openapi::schemas::ProductList)), security(("bearer" = [])))]
pub async fn list_products(State(app): State<Arc<AppState>>, principal: Principal) -> Result<Response, ApiError> {
    principal.require(Permission::CatalogRead)?;
    let s = app.engine.state();
    json(&List { items: s.products().collect() }, s.seq())
}

#[utoipa::path(get, path = "/v1/products/{key}", tag = "catalog", responses((status = 200, description = "the product", body = crate::openapi::schemas::Product), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn get_product(
    State(app): State<Arc<AppState>>,
    ApiPath(key): ApiPath<String>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(Permission::CatalogRead)?;
    let s = app.engine.state();
    let p = s
        .product(&key)
        .ok_or_else(|| ApiError::not_found("PRODUCT_NOT_FOUND", format!("no product with key '{key}'")))?;
    json(p, s.seq())
}

#[utoipa::path(post, path = "/v1/plans", tag = "catalog", request_body = crate::openapi::schemas::PlanSpec, responses((status = 201, description = "created", body = crate::openapi::schemas::Plan), (status = 404, description = "`PRODUCT_NOT_FOUND`", body = crate::problem::Problem), (status = 409, description = "`PLAN_EXISTS`", body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn create_plan(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<PlanSpec>,
) -> Result<Response, ApiError> {
    principal.require(Permission::CatalogWrite)?;
    let key = body.value.key.clone();
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash: body.request_hash };
    execute(
        &app,
        ctx,
        None,
        Command::CreatePlan(body.value),
        StatusCode::CREATED,
        Box::new(move |s, _| plan_view(s, &key)),
    )
    .await
}

#[utoipa::path(put, path = "/v1/plans/{key}", tag = "catalog", request_body(content = crate::openapi::schemas::PlanSpec, description = "the whole plan, as for POST /v1/plans"), responses((status = 200, description = "updated: a new version", body = crate::openapi::schemas::Plan), (status = 404, description = "`PLAN_NOT_FOUND`", body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn update_plan(
    State(app): State<Arc<AppState>>,
    ApiPath(key): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<PlanSpec>,
) -> Result<Response, ApiError> {
    principal.require(Permission::CatalogWrite)?;
    if body.value.key.as_str() != key {
        return Err(ApiError::unprocessable(
            "KEY_MISMATCH",
            format!("the body's key '{}' differs from the path's '{key}'", body.value.key),
        ));
    }
    let key = body.value.key.clone();
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash: body.request_hash };
    execute(&app, ctx, None, Command::UpdatePlan(body.value), StatusCode::OK, Box::new(move |s, _| plan_view(s, &key)))
        .await
}

#[utoipa::path(get, path = "/v1/plans", tag = "catalog", responses((status = 200, description = "all plans", body = crate::openapi::schemas::PlanList)), security(("bearer" = [])))]
pub async fn list_plans(State(app): State<Arc<AppState>>, principal: Principal) -> Result<Response, ApiError> {
    principal.require(Permission::CatalogRead)?;
    let s = app.engine.state();
    json(&List { items: s.plans().collect() }, s.seq())
}

#[utoipa::path(get, path = "/v1/plans/{key}", tag = "catalog", responses((status = 200, description = "the plan", body = crate::openapi::schemas::Plan), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn get_plan(
    State(app): State<Arc<AppState>>,
    ApiPath(key): ApiPath<String>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(Permission::CatalogRead)?;
    let s = app.engine.state();
    let p = s.plan(&key).ok_or_else(|| ApiError::not_found("PLAN_NOT_FOUND", format!("no plan with key '{key}'")))?;
    json(p, s.seq())
}
