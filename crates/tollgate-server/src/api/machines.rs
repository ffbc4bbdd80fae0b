//! Node-locked machines and user seats of a license (issue 3). Activation, seats and
//! the limits are decided in core (`tollgate_core::models`); this only adapts HTTP.
//!
//! Who may do what: activating and deactivating a machine are what a vendor's
//! application does, so a `product` token (validate permission) may do them for its
//! product's licenses; seats are assigned by issuers.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tollgate_core::Command;
use tollgate_core::ids::LicenseId;
use tollgate_core::machine::{Fingerprint, Machine, MachineSpec};
use tollgate_core::models::{ModelCommand, effective};
use tollgate_core::seat::{Seat, UserId};

use super::{WriteCtx, execute, json};
use crate::AppState;
use crate::auth::{Permission, Principal, Role};
use crate::extract::{ApiJson, ApiPath, IdempotencyKey, RequestId};
use crate::problem::ApiError;

/// Resolves the license the path names, by id or by key, for a principal with
/// `permission`.
///
/// A `product` token is built into applications, so whoever runs one holds it: it may
/// act on a license only by the license's key, the secret its customer holds, never
/// by its id (ids are not secret: the revocation feed lists them). A license of
/// another product than a product-scoped token's is not found, as if absent.
pub(crate) fn license_for(
    app: &AppState,
    principal: &Principal,
    id: &str,
    permission: Permission,
) -> Result<LicenseId, ApiError> {
    principal.require(permission)?;
    let not_found = || ApiError::not_found("LICENSE_NOT_FOUND", format!("no license with id or key '{id}'"));
    let s = app.engine.state();
    let by_key = || {
        let canonical = tollgate_core::key::normalize(id).ok()?;
        s.license_by_key(std::str::from_utf8(&canonical).ok()?)
    };
    if principal.role == Role::Product {
        let Some(l) = by_key() else {
            if LicenseId::parse(id).is_ok() {
                return Err(ApiError::not_found(
                    "LICENSE_NOT_FOUND",
                    "a product token names a license by its key (the secret its customer holds), not by its id",
                ));
            }
            return Err(not_found());
        };
        if principal.product.as_deref().is_some_and(|p| p != l.product.as_str()) {
            return Err(not_found());
        }
        return Ok(l.id.clone());
    }
    match LicenseId::parse(id) {
        Ok(id) => Ok(id),
        Err(_) => by_key().map(|l| l.id.clone()).ok_or_else(not_found),
    }
}

/// An optional `{reason}` body, for deletions.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Serialize)]
struct MachineList<'a> {
    license: &'a str,
    /// `null` is unlimited.
    max_machines: Option<u32>,
    items: Vec<&'a Machine>,
}

fn machine_list(s: &tollgate_core::State, id: &LicenseId) -> serde_json::Value {
    let Some(l) = s.license(id.as_str()) else { return serde_json::Value::Null };
    let m = s.models(id.as_str());
    serde_json::to_value(MachineList {
        license: id.as_str(),
        max_machines: effective(s, l).ok().and_then(|e| e.max_machines()),
        items: m.map(|m| m.machines.values().collect()).unwrap_or_default(),
    })
    .unwrap_or_default()
}

#[utoipa::path(post, path = "/v1/licenses/{id}/machines", tag = "machines", request_body = crate::openapi::schemas::MachineSpec, responses((status = 201, description = "the machine; activating an active fingerprint again changes nothing"), (status = 409, description = "MACHINE_LIMIT, LICENSE_SUSPENDED, LICENSE_REVOKED, LICENSE_EXPIRED", body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn activate(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<MachineSpec>,
) -> Result<Response, ApiError> {
    let id = license_for(&app, &principal, &id, Permission::Validate)?;
    let ApiJson { value: machine, request_hash } = body;
    let fingerprint = machine.fingerprint.clone();
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash };
    let render_id = id.clone();
    let render: crate::engine::Render = Box::new(move |s, _| {
        s.models(render_id.as_str())
            .and_then(|m| m.machines.get(&fingerprint))
            .map(|m| serde_json::to_value(m).unwrap_or_default())
            .unwrap_or_default()
    });
    let command = Command::Models(ModelCommand::ActivateMachine { license: id, machine });
    execute(&app, ctx, None, command, StatusCode::CREATED, render).await
}

#[utoipa::path(delete, path = "/v1/licenses/{id}/machines/{fingerprint}", tag = "machines", responses((status = 200, description = "the machines left; deactivating an inactive fingerprint changes nothing")), security(("bearer" = [])))]
pub async fn deactivate(
    State(app): State<Arc<AppState>>,
    ApiPath((id, fingerprint)): ApiPath<(String, String)>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<ReasonBody>,
) -> Result<Response, ApiError> {
    let id = license_for(&app, &principal, &id, Permission::Validate)?;
    let fingerprint = Fingerprint::parse(&fingerprint).map_err(ApiError::from)?;
    let ApiJson { value, request_hash } = body;
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash };
    let render_id = id.clone();
    let command = Command::Models(ModelCommand::DeactivateMachine { license: id, fingerprint });
    execute(&app, ctx, value.reason, command, StatusCode::OK, Box::new(move |s, _| machine_list(s, &render_id))).await
}

#[utoipa::path(get, path = "/v1/licenses/{id}/machines", tag = "machines", responses((status = 200, description = "{license, max_machines, items}")), security(("bearer" = [])))]
pub async fn list(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
) -> Result<Response, ApiError> {
    let permission = if principal.role == Role::Product { Permission::Validate } else { Permission::LicenseRead };
    let id = license_for(&app, &principal, &id, permission)?;
    let s = app.engine.state();
    if s.license(id.as_str()).is_none() {
        return Err(ApiError::not_found("LICENSE_NOT_FOUND", format!("no license with id '{id}'")));
    }
    json(&machine_list(&s, &id), s.seq())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// 1 to 256 bytes of printable text: an email, an account id.
    #[schema(value_type = String, example = "ada@example.com")]
    user: UserId,
}

#[derive(Serialize)]
struct SeatList<'a> {
    license: &'a str,
    /// `null` is unlimited.
    max_users: Option<u32>,
    items: Vec<&'a Seat>,
}

fn seat_list(s: &tollgate_core::State, id: &LicenseId) -> serde_json::Value {
    let Some(l) = s.license(id.as_str()) else { return serde_json::Value::Null };
    let m = s.models(id.as_str());
    serde_json::to_value(SeatList {
        license: id.as_str(),
        max_users: effective(s, l).ok().and_then(|e| e.max_users()),
        items: m.map(|m| m.seats.values().collect()).unwrap_or_default(),
    })
    .unwrap_or_default()
}

fn seat_view(s: &tollgate_core::State, id: &LicenseId, user: &UserId) -> serde_json::Value {
    s.models(id.as_str())
        .and_then(|m| m.seats.get(user))
        .map(|seat| serde_json::to_value(seat).unwrap_or_default())
        .unwrap_or_default()
}

#[utoipa::path(post, path = "/v1/licenses/{id}/users", tag = "seats", request_body = AssignBody, responses((status = 201, description = "the seat; assigning an assigned user again changes nothing"), (status = 409, description = "SEAT_LIMIT, LICENSE_SUSPENDED, LICENSE_REVOKED, LICENSE_EXPIRED", body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn assign(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<AssignBody>,
) -> Result<Response, ApiError> {
    let id = license_for(&app, &principal, &id, Permission::LicenseWrite)?;
    let ApiJson { value, request_hash } = body;
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash };
    let (render_id, user) = (id.clone(), value.user.clone());
    let command = Command::Models(ModelCommand::AssignUser { license: id, user: value.user });
    execute(&app, ctx, None, command, StatusCode::CREATED, Box::new(move |s, _| seat_view(s, &render_id, &user))).await
}

#[utoipa::path(delete, path = "/v1/licenses/{id}/users/{user}", tag = "seats", responses((status = 200, description = "the seats left; unassigning an unassigned user changes nothing")), security(("bearer" = [])))]
pub async fn unassign(
    State(app): State<Arc<AppState>>,
    ApiPath((id, user)): ApiPath<(String, String)>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<ReasonBody>,
) -> Result<Response, ApiError> {
    let id = license_for(&app, &principal, &id, Permission::LicenseWrite)?;
    let user = UserId::parse(&user).map_err(ApiError::from)?;
    let ApiJson { value, request_hash } = body;
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash };
    let render_id = id.clone();
    let command = Command::Models(ModelCommand::UnassignUser { license: id, user });
    execute(&app, ctx, value.reason, command, StatusCode::OK, Box::new(move |s, _| seat_list(s, &render_id))).await
}

#[utoipa::path(get, path = "/v1/licenses/{id}/users", tag = "seats", responses((status = 200, description = "{license, max_users, items}")), security(("bearer" = [])))]
pub async fn users(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
) -> Result<Response, ApiError> {
    let id = license_for(&app, &principal, &id, Permission::LicenseRead)?;
    let s = app.engine.state();
    if s.license(id.as_str()).is_none() {
        return Err(ApiError::not_found("LICENSE_NOT_FOUND", format!("no license with id '{id}'")));
    }
    json(&seat_list(&s, &id), s.seq())
}
