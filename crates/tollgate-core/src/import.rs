//! Importing licenses from another system, all or nothing.
//!
//! Each row is decided against the state left by the rows before it (issue, then the
//! row's status, then its machines). A row whose external id is already known is left
//! as it is, so running the same import twice adds nothing. If any row is refused,
//! the whole import is: a vendor fixes the file and runs it again, and never has to
//! find out which half of a file made it in.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::command::{Command, IssueLicense, decide_kinds};
use crate::event::EventKind;
use crate::ids::LicenseId;
use crate::license::Status;
use crate::machine::MachineSpec;
use crate::models::ModelCommand;
use crate::refusal::Refusal;
use crate::state::State;
use crate::timestamp::Timestamp;

/// One row of an import file, with the id and key drawn for it by the caller.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportRow {
    /// 1-based line in the file, for the report.
    pub line: u64,
    pub issue: IssueLicense,
    pub status: Status,
    pub machines: Vec<MachineSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub code: &'static str,
    pub detail: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub total: usize,
    /// External id → license id, for rows imported now.
    pub created: Vec<(String, String)>,
    /// External id → license id, for rows whose external id was already known.
    pub unchanged: Vec<(String, String)>,
    pub rejected: Vec<Rejected>,
}

fn apply_all(
    state: &mut State,
    kinds: Vec<EventKind>,
    now: Timestamp,
    out: &mut Vec<EventKind>,
) -> Result<(), Refusal> {
    for k in kinds {
        let e = crate::event::Event::new(
            now,
            crate::event::Meta { actor: String::new(), reason: None, request_id: String::new() },
            k,
        );
        state.apply(&e).map_err(|err| Refusal::invalid(err.to_string()))?;
        out.push(e.event);
    }
    Ok(())
}

fn one_row(state: &mut State, row: &ImportRow, now: Timestamp, out: &mut Vec<EventKind>) -> Result<(), Refusal> {
    let id: LicenseId = row.issue.id.clone();
    let kinds = decide_kinds(state, &Command::IssueLicense(row.issue.clone()), now)?;
    apply_all(state, kinds, now, out)?;
    let follow = match row.status {
        Status::Active => None,
        Status::Suspended => Some(Command::Suspend(id.clone())),
        Status::Revoked => Some(Command::Revoke(id.clone())),
    };
    for machine in &row.machines {
        let cmd = Command::Models(ModelCommand::ActivateMachine { license: id.clone(), machine: machine.clone() });
        let kinds = decide_kinds(state, &cmd, now)?;
        apply_all(state, kinds, now, out)?;
    }
    if let Some(cmd) = follow {
        let kinds = decide_kinds(state, &cmd, now)?;
        apply_all(state, kinds, now, out)?;
    }
    Ok(())
}

/// Decides every row; returns the events of the whole import and its report. The
/// events are only to be used when `report.rejected` is empty.
pub fn plan(state: &State, rows: &[ImportRow], now: Timestamp) -> (Vec<EventKind>, ImportReport) {
    let mut scratch = state.scratch();
    let mut events = Vec::new();
    let mut report = ImportReport { total: rows.len(), ..ImportReport::default() };
    let mut seen = BTreeSet::new();
    for row in rows {
        let Some(external) = row.issue.external_id.clone() else {
            report.rejected.push(Rejected {
                line: row.line,
                external_id: None,
                code: "INVALID_INPUT",
                detail: "every imported row needs an external_id, so that running the import again adds nothing".into(),
            });
            continue;
        };
        if !seen.insert(external.clone()) {
            report.rejected.push(Rejected {
                line: row.line,
                external_id: Some(external),
                code: "DUPLICATE_EXTERNAL_ID",
                detail: "this external_id appears earlier in the same file".into(),
            });
            continue;
        }
        if let Some(existing) = scratch.license_by_external_id(&external) {
            report.unchanged.push((external, existing.id.to_string()));
            continue;
        }
        // Each row lands whole or not at all, even within a refused import's report.
        let mut row_state = scratch.clone();
        let mut row_events = Vec::new();
        match one_row(&mut row_state, row, now, &mut row_events) {
            Ok(()) => {
                scratch = row_state;
                events.extend(row_events);
                report.created.push((external, row.issue.id.to_string()));
            }
            Err(r) => report.rejected.push(Rejected {
                line: row.line,
                external_id: Some(external),
                code: r.code,
                detail: r.detail,
            }),
        }
    }
    (events, report)
}

/// The decision of `Command::ImportLicenses`: every row, or none.
pub(crate) fn decide(state: &State, rows: &[ImportRow], now: Timestamp) -> Result<Vec<EventKind>, Refusal> {
    let (events, report) = plan(state, rows, now);
    if let Some(first) = report.rejected.first() {
        return Err(Refusal::new(
            crate::refusal::RefusalKind::Invalid,
            "IMPORT_REJECTED",
            format!(
                "{} of {} rows were refused, so nothing was imported; the first, line {}: {} ({}). Run with --dry-run for the full report",
                report.rejected.len(),
                report.total,
                first.line,
                first.detail,
                first.code
            ),
        ));
    }
    Ok(events)
}

impl ImportRow {
    pub fn new(line: u64, issue: IssueLicense) -> Self {
        Self { line, issue, status: Status::Active, machines: Vec::new() }
    }
}
