//! Licenses: issue, read, list, and the lifecycle actions.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tollgate_core::command::IssueLicense;
use tollgate_core::ids::{LicenseId, PlanKey, ProductKey};
use tollgate_core::key::LicenseKey;
use tollgate_core::license::{License, Metadata, Standing};
use tollgate_core::{Command, Timestamp};

use super::{WriteCtx, execute, json};
use crate::AppState;
use crate::auth::{Permission, Principal};
use crate::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey, RequestId};
use crate::problem::ApiError;

/// A license as the API shows it: the stored record plus what follows from it at the
/// instant of the answer (effective status, features, grace end).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = License)]
pub struct LicenseView<'a> {
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<&'a str>,
    /// The license key, as the customer types it.
    pub key: &'a str,
    /// At the instant of the answer: `active` (also during a trial or grace), `suspended`,
    /// `revoked` or `expired`.
    #[schema(value_type = String, pattern = "^(active|suspended|revoked|expired)$")]
    pub status: &'static str,
    pub product: &'a str,
    pub plan: &'a str,
    pub licensee: &'a str,
    pub trial: bool,
    #[schema(value_type = String, format = DateTime)]
    pub issued_at: Timestamp,
    /// Absent (null): perpetual.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub grace_ends_at: Option<Timestamp>,
    pub in_grace: bool,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// The plan's features seen through the license's overrides.
    pub features: Vec<&'a str>,
    pub max_machines: Option<u32>,
    pub max_users: Option<u32>,
    #[schema(value_type = Object)]
    pub metadata: &'a Metadata,
    pub version: u64,
}

pub fn license_view<'a>(s: &'a tollgate_core::State, l: &'a License, now: Timestamp) -> LicenseView<'a> {
    let plan = s.plan(l.plan.as_str());
    let standing = plan.map(|p| l.standing(p, now));
    let effective = tollgate_core::models::effective(s, l).ok();
    LicenseView {
        id: l.id.as_str(),
        external_id: l.external_id.as_deref(),
        key: l.key.as_str(),
        status: standing.map(Standing::as_str).unwrap_or("active"),
        product: l.product.as_str(),
        plan: l.plan.as_str(),
        licensee: &l.licensee,
        trial: l.trial,
        issued_at: l.issued_at,
        expires_at: l.expires_at,
        grace_ends_at: plan.and_then(|p| l.grace_ends_at(p)).filter(|g| Some(*g) != l.expires_at),
        in_grace: matches!(standing, Some(Standing::Grace { .. })),
        updated_at: l.updated_at,
        // The plan seen through the license's overrides (issue 3).
        features: effective.map(|e| e.features().map(|f| f.as_str()).collect()).unwrap_or_default(),
        max_machines: effective.and_then(|e| e.max_machines()),
        max_users: effective.and_then(|e| e.max_users()),
        metadata: &l.metadata,
        version: l.version,
    }
}

fn render_license(id: LicenseId) -> crate::engine::Render {
    Box::new(move |s, now| match s.license(id.as_str()) {
        Some(l) => serde_json::to_value(license_view(s, l, now)).unwrap_or_default(),
        None => serde_json::Value::Null,
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", example = "acme-cad")]
    product: ProductKey,
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", example = "cad-pro")]
    plan: PlanKey,
    #[schema(example = "Initech")]
    licensee: String,
    /// Overrides the plan's duration; absent: the plan's.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<Timestamp>,
    /// A JSON object of at most 16 KiB, nested at most 32 levels, integers within ±2^53
    /// (the ledger keeps numbers as RFC 8785 doubles).
    #[serde(default)]
    #[schema(value_type = Object)]
    metadata: Metadata,
    /// Per-license overrides of the plan (issue 3).
    #[serde(default)]
    #[schema(value_type = Option<crate::openapi::schemas::Overrides>)]
    overrides: Option<tollgate_core::overrides::Overrides>,
    /// The license's id in another system; unique.
    #[serde(default)]
    external_id: Option<String>,
}

/// A new license id: creation time first, then 80 random bits (see
/// `LicenseId::from_time_and_random`), so ids issued later sort later.
pub fn new_license_id() -> LicenseId {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    LicenseId::from_time_and_random(millis, super::random())
}

/// A new license key: 120 random bits and a check character.
pub fn new_license_key() -> LicenseKey {
    LicenseKey::from_random(super::random())
}

#[utoipa::path(post, path = "/v1/licenses", tag = "licenses", request_body = IssueBody, responses((status = 201, description = "the new license with its key", body = LicenseView), (status = 404, body = crate::problem::Problem), (status = 409, description = "`EXTERNAL_ID_EXISTS`", body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn issue(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<IssueBody>,
) -> Result<Response, ApiError> {
    principal.require(Permission::LicenseWrite)?;
    let b = body.value;
    let id = new_license_id();
    let issue = IssueLicense {
        id: id.clone(),
        key: new_license_key(),
        product: b.product,
        plan: b.plan,
        licensee: b.licensee,
        expires_at: b.expires_at,
        metadata: b.metadata,
        external_id: b.external_id,
    };
    let command = match b.overrides {
        Some(overrides) => {
            Command::Models(tollgate_core::models::ModelCommand::IssueWithOverrides { issue, overrides })
        }
        None => Command::IssueLicense(issue),
    };
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash: body.request_hash };
    execute(&app, ctx, None, command, StatusCode::CREATED, render_license(id)).await
}

fn parse_id(id: &str) -> Result<LicenseId, ApiError> {
    LicenseId::parse(id).map_err(|e| ApiError::not_found("LICENSE_NOT_FOUND", e.to_string()))
}

#[utoipa::path(get, path = "/v1/licenses/{id}", tag = "licenses", responses((status = 200, description = "the license", body = LicenseView), (status = 404, body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn get(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(Permission::LicenseRead)?;
    let id = parse_id(&id)?;
    let s = app.engine.state();
    let l = s
        .license(id.as_str())
        .ok_or_else(|| ApiError::not_found("LICENSE_NOT_FOUND", format!("no license with id '{id}'")))?;
    json(&license_view(&s, l, crate::engine::now()), s.seq())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    external_id: Option<String>,
    licensee: Option<String>,
    status: Option<String>,
    product: Option<String>,
    plan: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = LicensePage)]
pub(crate) struct Page<'a> {
    items: Vec<LicenseView<'a>>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<&'a str>,
}

const STATUSES: [&str; 4] = ["active", "suspended", "revoked", "expired"];

#[utoipa::path(get, path = "/v1/licenses", tag = "licenses", params(("external_id" = Option<String>, Query, description = "the license's id in another system"), ("licensee" = Option<String>, Query), ("status" = Option<String>, Query, description = "active|suspended|revoked|expired"), ("product" = Option<String>, Query), ("plan" = Option<String>, Query), ("limit" = Option<usize>, Query, description = "1..=500, default 50"), ("cursor" = Option<String>, Query)), responses((status = 200, description = "a page of licenses in id order", body = Page)), security(("bearer" = [])))]
pub async fn list(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    principal.require(Permission::LicenseRead)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("INVALID_QUERY", "limit must be between 1 and 500"));
    }
    if let Some(st) = &q.status
        && !STATUSES.contains(&st.as_str())
    {
        return Err(ApiError::bad_request("INVALID_QUERY", format!("status must be one of {}", STATUSES.join(", "))));
    }
    if let Some(c) = &q.cursor
        && tollgate_core::ids::LicenseId::parse(c).is_err()
    {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            "cursor is not a license id: pass the next_cursor of the previous page, or no cursor for the first",
        ));
    }
    let s = app.engine.state();
    let now = crate::engine::now();
    let mut items = Vec::with_capacity(limit.min(64));
    let mut next = None;
    // An external id names at most one license: look it up instead of scanning.
    let by_external: Vec<&std::sync::Arc<tollgate_core::license::License>> = match &q.external_id {
        Some(x) => s
            .license_by_external_id(x)
            .into_iter()
            .filter(|l| q.cursor.as_deref().is_none_or(|c| l.id.as_str() > c))
            .collect(),
        None => Vec::new(),
    };
    let source: Box<dyn Iterator<Item = &std::sync::Arc<tollgate_core::license::License>>> =
        if q.external_id.is_some() { Box::new(by_external.into_iter()) } else { s.licenses_after(q.cursor.as_deref()) };
    let matching = source
        .filter(|l| q.licensee.as_deref().is_none_or(|x| x == l.licensee))
        .filter(|l| q.product.as_deref().is_none_or(|x| x == l.product.as_str()))
        .filter(|l| q.plan.as_deref().is_none_or(|x| x == l.plan.as_str()));
    for l in matching {
        let view = license_view(&s, l, now);
        if q.status.as_deref().is_some_and(|x| x != view.status) {
            continue;
        }
        if items.len() == limit {
            next = items.last().map(|v: &LicenseView<'_>| v.id);
            break;
        }
        items.push(view);
    }
    json(&Page { items, next_cursor: next }, s.seq())
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePlanBody {
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    plan: PlanKey,
    #[serde(default)]
    reason: Option<String>,
}

async fn act(
    app: Arc<AppState>,
    id: String,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<ReasonBody>,
    make: fn(LicenseId) -> Command,
) -> Result<Response, ApiError> {
    principal.require(Permission::LicenseWrite)?;
    let id = parse_id(&id)?;
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash: body.request_hash };
    execute(&app, ctx, body.value.reason, make(id.clone()), StatusCode::OK, render_license(id)).await
}

#[utoipa::path(post, path = "/v1/licenses/{id}/suspend", tag = "licenses", request_body(content = Option<ReasonBody>, description = "may be left out"), responses((status = 200, description = "the license; suspending a suspended license changes nothing", body = LicenseView)), security(("bearer" = [])))]
pub async fn suspend(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<ReasonBody>,
) -> Result<Response, ApiError> {
    act(app, id, principal, request_id, idempotency, body, Command::Suspend).await
}

#[utoipa::path(post, path = "/v1/licenses/{id}/reinstate", tag = "licenses", request_body(content = Option<ReasonBody>, description = "may be left out"), responses((status = 200, description = "the license", body = LicenseView)), security(("bearer" = [])))]
pub async fn reinstate(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<ReasonBody>,
) -> Result<Response, ApiError> {
    act(app, id, principal, request_id, idempotency, body, Command::Reinstate).await
}

#[utoipa::path(post, path = "/v1/licenses/{id}/revoke", tag = "licenses", request_body(content = Option<ReasonBody>, description = "may be left out"), responses((status = 200, description = "the license; revocation is final", body = LicenseView)), security(("bearer" = [])))]
pub async fn revoke(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<ReasonBody>,
) -> Result<Response, ApiError> {
    act(app, id, principal, request_id, idempotency, body, Command::Revoke).await
}

#[utoipa::path(post, path = "/v1/licenses/{id}/renew", tag = "licenses", request_body(content = Option<ReasonBody>, description = "may be left out"), responses((status = 200, description = "the license with its new expiry", body = LicenseView), (status = 409, description = "NOT_RENEWABLE (the license does not expire, or its plan has no term to renew by), LICENSE_REVOKED", body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn renew(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<ReasonBody>,
) -> Result<Response, ApiError> {
    act(app, id, principal, request_id, idempotency, body, Command::Renew).await
}

#[utoipa::path(post, path = "/v1/licenses/{id}/change-plan", tag = "licenses", request_body = ChangePlanBody, responses((status = 200, description = "the license on its new plan", body = LicenseView), (status = 409, description = "LICENSE_REVOKED; LICENSE_EXPIRED: past its term and grace, and the move would keep that term (renew first; a trial converting, or a move to a perpetual plan, stands)", body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn change_plan(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<ChangePlanBody>,
) -> Result<Response, ApiError> {
    principal.require(Permission::LicenseWrite)?;
    let id = parse_id(&id)?;
    let ApiJson { value, request_hash } = body;
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash };
    execute(
        &app,
        ctx,
        value.reason,
        Command::ChangePlan { license: id.clone(), plan: value.plan },
        StatusCode::OK,
        render_license(id),
    )
    .await
}
