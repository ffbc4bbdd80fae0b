//! Floating leases (issue 3): checkout, heartbeat, release, and the reaper that
//! records expiry in the ledger. The limit is decided in core against leases
//! unexpired at the decision instant, one command at a time on the writer thread, so
//! it is exact under any contention and has no window while the reaper lags.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tollgate_core::ids::LicenseId;
use tollgate_core::lease::{Lease, LeaseId};
use tollgate_core::machine::Fingerprint;
use tollgate_core::models::ModelCommand;
use tollgate_core::{Command, Meta, Timestamp};

use super::machines::{ReasonBody, license_for};
use super::{WriteCtx, execute, json};
use crate::AppState;
use crate::auth::{Permission, Principal, Role};
use crate::extract::{ApiJson, ApiPath, IdempotencyKey, RequestId};
use crate::problem::ApiError;

/// How often the reaper looks for leases whose heartbeat stopped.
pub const REAP_EVERY: Duration = Duration::from_millis(500);

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    #[schema(value_type = String, pattern = "^[!-~]{1,256}$")]
    fingerprint: Fingerprint,
}

#[derive(Serialize)]
struct LeaseView<'a> {
    lease_id: &'a str,
    license: &'a str,
    fingerprint: &'a str,
    checked_out_at: Timestamp,
    expires_at: Timestamp,
}

fn view<'a>(license: &'a LicenseId, l: &'a Lease) -> serde_json::Value {
    serde_json::to_value(LeaseView {
        lease_id: l.id.as_str(),
        license: license.as_str(),
        fingerprint: l.fingerprint.as_str(),
        checked_out_at: l.checked_out_at,
        expires_at: l.expires_at,
    })
    .unwrap_or_default()
}

fn random_lease_id() -> LeaseId {
    LeaseId::from_random(super::random())
}

fn parse_lease(id: &str) -> Result<LeaseId, ApiError> {
    LeaseId::parse(id).map_err(|e| ApiError::not_found("LEASE_NOT_FOUND", e.to_string()))
}

/// Leases are addressed by id alone; a product-scoped token reaches only its own.
fn lease_for(app: &AppState, principal: &Principal, id: &str) -> Result<LeaseId, ApiError> {
    principal.require(Permission::Validate)?;
    let lease = parse_lease(id)?;
    if let Some(product) = principal.product.as_deref() {
        let s = app.engine.state();
        if s.lease(lease.as_str()).is_some_and(|(l, _)| l.product.as_str() != product) {
            // Worded as for a lease that does not exist: nothing to tell the two apart.
            return Err(ApiError::not_found(
                "LEASE_NOT_FOUND",
                format!("no lease with id '{lease}'; it may have expired"),
            ));
        }
    }
    Ok(lease)
}

#[utoipa::path(post, path = "/v1/licenses/{id}/leases", tag = "leases", request_body = CheckoutBody, responses((status = 201, description = "{lease_id, expires_at, license, fingerprint, checked_out_at}; a fingerprint holding a live lease gets it back, extended"), (status = 409, description = "LEASE_LIMIT, NOT_FLOATING, LICENSE_SUSPENDED, LICENSE_REVOKED, LICENSE_EXPIRED", body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn checkout(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<CheckoutBody>,
) -> Result<Response, ApiError> {
    let id = license_for(&app, &principal, &id, Permission::Validate)?;
    let ApiJson { value, request_hash } = body;
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash };
    let (render_id, fingerprint) = (id.clone(), value.fingerprint.clone());
    let render: crate::engine::Render = Box::new(move |s, now| {
        s.models(render_id.as_str())
            .and_then(|m| m.live_leases(now).find(|l| l.fingerprint == fingerprint))
            .map(|l| view(&render_id, l))
            .unwrap_or_default()
    });
    let command = Command::Models(ModelCommand::CheckoutLease {
        license: id,
        lease: random_lease_id(),
        fingerprint: value.fingerprint,
    });
    execute(&app, ctx, None, command, StatusCode::CREATED, render).await
}

fn render_lease(lease: LeaseId) -> crate::engine::Render {
    Box::new(move |s, _| match s.lease(lease.as_str()) {
        Some((l, held)) => view(&l.id, held),
        None => serde_json::Value::Null,
    })
}

#[utoipa::path(post, path = "/v1/leases/{lease_id}/heartbeat", tag = "leases", responses((status = 200, description = "the lease with its new expires_at"), (status = 404, description = "LEASE_NOT_FOUND", body = crate::problem::Problem), (status = 409, description = "LEASE_EXPIRED", body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn heartbeat(
    State(app): State<Arc<AppState>>,
    ApiPath(lease): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<ReasonBody>,
) -> Result<Response, ApiError> {
    let lease = lease_for(&app, &principal, &lease)?;
    let ApiJson { value, request_hash } = body;
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash };
    let command = Command::Models(ModelCommand::Heartbeat { lease: lease.clone() });
    execute(&app, ctx, value.reason, command, StatusCode::OK, render_lease(lease)).await
}

#[utoipa::path(delete, path = "/v1/leases/{lease_id}", tag = "leases", responses((status = 200, description = "{released: lease_id}"), (status = 404, description = "LEASE_NOT_FOUND", body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn release(
    State(app): State<Arc<AppState>>,
    ApiPath(lease): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<ReasonBody>,
) -> Result<Response, ApiError> {
    let lease = lease_for(&app, &principal, &lease)?;
    let ApiJson { value, request_hash } = body;
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash };
    let released = lease.to_string();
    let command = Command::Models(ModelCommand::ReleaseLease { lease });
    execute(
        &app,
        ctx,
        value.reason,
        command,
        StatusCode::OK,
        Box::new(move |_, _| serde_json::json!({ "released": released })),
    )
    .await
}

#[utoipa::path(get, path = "/v1/licenses/{id}/leases", tag = "leases", responses((status = 200, description = "{license, max_leases, items}: the leases live now")), security(("bearer" = [])))]
pub async fn list(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
) -> Result<Response, ApiError> {
    let permission = if principal.role == Role::Product { Permission::Validate } else { Permission::LicenseRead };
    let id = license_for(&app, &principal, &id, permission)?;
    let s = app.engine.state();
    let Some(l) = s.license(id.as_str()) else {
        return Err(ApiError::not_found("LICENSE_NOT_FOUND", format!("no license with id '{id}'")));
    };
    let now = crate::engine::now();
    let items: Vec<_> =
        s.models(id.as_str()).map(|m| m.live_leases(now).map(|x| view(&id, x)).collect()).unwrap_or_default();
    let max_leases = tollgate_core::models::effective(&s, l).ok().and_then(|e| e.max_leases());
    json(&serde_json::json!({ "license": id.as_str(), "max_leases": max_leases, "items": items }), s.seq())
}

/// Records the expiry of leases whose heartbeat stopped, every [`REAP_EVERY`], until
/// `stop` changes. Expiry already took effect at `expires_at` (decisions count only
/// live leases); the event makes it visible in the ledger.
pub async fn reaper(app: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let leases = app.engine.state().expired_leases(crate::engine::now());
                if leases.is_empty() {
                    continue;
                }
                let meta = Meta { actor: "system:reaper".into(), reason: Some("heartbeat stopped".into()), request_id: format!("req_{}", crate::auth::random_hex(8)) };
                let command = Command::Models(ModelCommand::ExpireLeases { leases });
                if let Err(e) = app.engine.submit(command, meta, 200, None, Box::new(|_, _| serde_json::Value::Null)).await {
                    tracing::warn!(error = %e, "lease reaper could not record expiries");
                }
            }
            _ = stop.changed() => return,
        }
    }
}
