//! `POST /v1/import/licenses`: licenses from another system, all or nothing.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tollgate_core::Command;
use tollgate_core::command::IssueLicense;
use tollgate_core::ids::{PlanKey, ProductKey};
use tollgate_core::import::{self, ImportReport, ImportRow, Rejected};
use tollgate_core::license::{Metadata, Status};
use tollgate_core::machine::MachineSpec;

use super::{WriteCtx, execute, json};
use crate::AppState;
use crate::auth::{Permission, Principal};
use crate::extract::{ApiJson, IdempotencyKey, RequestId};
use crate::problem::{ApiError, PROBLEM_JSON};

const MAX_ROWS: usize = 10_000;
/// Machines one row may activate, and one import in all: each is an event of the
/// import's one batch, decided while every other write waits.
const MAX_ROW_MACHINES: usize = 1_000;
const MAX_IMPORT_MACHINES: usize = 100_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    #[serde(default)]
    dry_run: bool,
    rows: Rows,
}

/// The rows, refused as they are read once there are more than [`MAX_ROWS`]: a body of
/// 32 MiB of tiny rows would otherwise be millions of values in memory before the
/// count was looked at.
struct Rows(Vec<serde_json::Value>);

impl<'de> Deserialize<'de> for Rows {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bounded;
        impl<'de> serde::de::Visitor<'de> for Bounded {
            type Value = Rows;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "an array of at most {MAX_ROWS} rows")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Rows, A::Error> {
                let mut rows = Vec::new();
                while let Some(row) = seq.next_element()? {
                    if rows.len() == MAX_ROWS {
                        return Err(serde::de::Error::custom(format!(
                            "at most {MAX_ROWS} rows per request; split the file"
                        )));
                    }
                    rows.push(row);
                }
                Ok(Rows(rows))
            }
        }
        d.deserialize_seq(Bounded)
    }
}

/// One row as sent: the columns of the CSV, or a JSONL object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RowIn {
    line: Option<u64>,
    external_id: String,
    product: ProductKey,
    plan: PlanKey,
    licensee: String,
    #[serde(default)]
    expires_at: Option<tollgate_core::Timestamp>,
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    machines: Vec<MachineIn>,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MachineIn {
    Fingerprint(String),
    Spec(MachineSpec),
}

fn parse_rows(rows: &[serde_json::Value]) -> (Vec<ImportRow>, Vec<Rejected>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let mut machines_so_far = 0usize;
    for (i, raw) in rows.iter().enumerate() {
        let line = raw.get("line").and_then(|l| l.as_u64()).unwrap_or(i as u64 + 1);
        let external_id = raw.get("external_id").and_then(|x| x.as_str()).map(str::to_string);
        let row: RowIn = match serde_path_to_error::deserialize(raw) {
            Ok(r) => r,
            Err(e) => {
                bad.push(Rejected {
                    line,
                    external_id,
                    code: "INVALID_INPUT",
                    detail: match e.path().to_string().as_str() {
                        // The row itself (a missing column): no place to name.
                        "." | "?" => e.inner().to_string(),
                        path => format!("{path}: {}", e.inner()),
                    },
                });
                continue;
            }
        };
        let too_many = if row.machines.len() > MAX_ROW_MACHINES {
            Some(format!("machines: at most {MAX_ROW_MACHINES} per row, not {}", row.machines.len()))
        } else if machines_so_far + row.machines.len() > MAX_IMPORT_MACHINES {
            // Counted only for rows taken, so that the report names this row alone.
            Some(format!("machines: at most {MAX_IMPORT_MACHINES} in one import; split the file"))
        } else {
            machines_so_far += row.machines.len();
            None
        };
        if let Some(detail) = too_many {
            bad.push(Rejected { line, external_id: Some(row.external_id), code: "INVALID_INPUT", detail });
            continue;
        }
        let mut machines = Vec::new();
        for m in row.machines {
            let spec = match m {
                MachineIn::Spec(s) => Ok(s),
                MachineIn::Fingerprint(f) => {
                    serde_json::from_value::<MachineSpec>(serde_json::json!({ "fingerprint": f }))
                }
            };
            match spec {
                Ok(s) => machines.push(s),
                Err(e) => bad.push(Rejected {
                    line,
                    external_id: external_id.clone(),
                    code: "INVALID_INPUT",
                    detail: format!("machines: {e}"),
                }),
            }
        }
        let issue = IssueLicense {
            id: super::licenses::new_license_id(),
            key: super::licenses::new_license_key(),
            product: row.product,
            plan: row.plan,
            licensee: row.licensee,
            expires_at: row.expires_at,
            metadata: row.metadata,
            external_id: Some(row.external_id),
        };
        ok.push(ImportRow {
            line: row.line.unwrap_or(line),
            issue,
            status: row.status.unwrap_or(Status::Active),
            machines,
        });
    }
    (ok, bad)
}

#[derive(Serialize)]
struct Report<'a> {
    dry_run: bool,
    imported: bool,
    #[serde(flatten)]
    report: &'a ImportReport,
}

fn merge(mut report: ImportReport, parse_rejects: Vec<Rejected>, total: usize) -> ImportReport {
    report.total = total;
    report.rejected.extend(parse_rejects);
    report.rejected.sort_by_key(|r| r.line);
    report
}

#[utoipa::path(post, path = "/v1/import/licenses", tag = "licenses", request_body(content = Object, description = "{dry_run?, rows:[{line?, external_id, product, plan, licensee, expires_at?, status?, machines?, metadata?}]}"), responses((status = 200, description = "{dry_run, imported, total, created:[[external_id, id]], unchanged, rejected:[{line, external_id, code, detail}]}"), (status = 422, description = "IMPORT_REJECTED: nothing was imported; the problem carries the report")), security(("bearer" = [])))]
pub async fn licenses(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    request_id: RequestId,
    idempotency: IdempotencyKey,
    body: ApiJson<ImportBody>,
) -> Result<Response, ApiError> {
    principal.require(Permission::LicenseWrite)?;
    let ImportBody { dry_run, rows: Rows(rows) } = body.value;
    let total = rows.len();
    let (parsed, parse_rejects) = parse_rows(&rows);
    let state = app.engine.state();
    let (_, planned) = import::plan(&state, &parsed, crate::engine::now());
    let report = merge(planned, parse_rejects, total);
    if dry_run {
        return json(&Report { dry_run: true, imported: false, report: &report }, state.seq());
    }
    if !report.rejected.is_empty() {
        let problem = serde_json::json!({
            "type": "urn:tollgate:problem:import-rejected",
            "title": "Unprocessable Entity",
            "status": 422,
            "code": "IMPORT_REJECTED",
            "detail": format!("{} of {} rows were refused, so nothing was imported; fix them and run the import again", report.rejected.len(), total),
            "report": Report { dry_run: false, imported: false, report: &report },
        });
        let mut res =
            (StatusCode::UNPROCESSABLE_ENTITY, serde_json::to_vec(&problem).unwrap_or_default()).into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        return Ok(res);
    }
    let rows_for_render = parsed.clone();
    let render = Box::new(move |s: &tollgate_core::State, _| {
        let mut report = ImportReport { total, ..ImportReport::default() };
        for row in &rows_for_render {
            let Some(x) = &row.issue.external_id else { continue };
            if let Some(l) = s.license_by_external_id(x) {
                let pair = (x.clone(), l.id.to_string());
                if l.id == row.issue.id { report.created.push(pair) } else { report.unchanged.push(pair) }
            }
        }
        serde_json::to_value(Report { dry_run: false, imported: true, report: &report }).unwrap_or_default()
    });
    let ctx = WriteCtx { principal, request_id, idempotency, request_hash: body.request_hash };
    execute(&app, ctx, None, Command::ImportLicenses(parsed), StatusCode::OK, render).await
}
