//! Metered usage (issue 3): record against a plan's meters, and the per-meter report
//! that validation includes. Periods and quotas are decided in core.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tollgate_core::ids::{LicenseId, MeterKey};
use tollgate_core::license::License;
use tollgate_core::meter::{Overage, Period};
use tollgate_core::models::{ModelCommand, effective};
use tollgate_core::{Command, Timestamp};

use super::WriteCtx;
use super::execute;
use super::machines::license_for;
use crate::AppState;
use crate::auth::{Permission, Principal};
use crate::extract::{ApiJson, ApiPath, IdempotencyKey, RequestId};
use crate::problem::ApiError;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBody {
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", example = "exports")]
    meter: MeterKey,
    quantity: u64,
}

/// One meter in the current period.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MeterReport<'a> {
    pub meter: &'a str,
    #[schema(value_type = crate::openapi::schemas::Period)]
    pub period: Period,
    pub quota: u64,
    pub used: u64,
    /// Quota left this period (0 once over it); overage does not add to it.
    pub remaining: u64,
    #[schema(value_type = crate::openapi::schemas::Overage)]
    pub overage: Overage,
    /// When the current period ends; absent for `total`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub resets_at: Option<Timestamp>,
}

/// Every meter of the license's plan, at `now`.
pub fn report<'a>(s: &'a tollgate_core::State, l: &License, now: Timestamp) -> Vec<MeterReport<'a>> {
    let Ok(e) = effective(s, l) else { return Vec::new() };
    let m = s.models(l.id.as_str());
    e.plan
        .meters
        .iter()
        .map(|spec| {
            let used = m.map_or(0, |m| m.used(spec, now));
            let quota = e.quota(spec);
            MeterReport {
                meter: spec.key.as_str(),
                period: spec.period,
                quota,
                used,
                remaining: quota.saturating_sub(used),
                overage: spec.overage,
                resets_at: spec.period.end(now),
            }
        })
        .collect()
}

#[utoipa::path(post, path = "/v1/licenses/{id}/usage", tag = "usage", request_body = UsageBody, responses((status = 201, description = "the meter in the current period", body = MeterReport), (status = 404, description = "METER_NOT_FOUND", body = crate::problem::Problem), (status = 409, description = "QUOTA_EXCEEDED (nothing recorded); METER_FULL once a period holds 2^53, the most the ledger writes exactly", body = crate::problem::Problem)), security(("bearer" = [])))]
pub async fn record(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<UsageBody>,
) -> Result<Response, ApiError> {
    let id: LicenseId = license_for(&app, &principal, &id, Permission::Validate)?;
    let ApiJson { value, request_hash } = body;
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash };
    let (render_id, meter) = (id.clone(), value.meter.clone());
    let render: crate::engine::Render = Box::new(move |s, now| {
        let Some(l) = s.license(render_id.as_str()) else { return serde_json::Value::Null };
        report(s, l, now)
            .into_iter()
            .find(|r| r.meter == meter.as_str())
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .unwrap_or_default()
    });
    let command =
        Command::Models(ModelCommand::RecordUsage { license: id, meter: value.meter, quantity: value.quantity });
    execute(&app, ctx, None, command, StatusCode::CREATED, render).await
}
