//! Dry-run: which existing licenses a proposed definition would change the answer
//! for, before anything is saved.

use serde::Serialize;

use super::eval::{Context, LicenseFacts, evaluate_gate};
use super::spec::GateSpec;
use crate::refusal::Refusal;
use crate::state::State;
use crate::timestamp::Timestamp;

/// The most changes one page may list.
pub const MAX_PAGE: usize = 1_000;

#[derive(Clone, Copy, Debug)]
pub struct PreviewQuery<'a> {
    /// The context every license is evaluated in; `licenseKey` is set per license, and
    /// `userId` to the license id when the template has none, so that default
    /// stickiness buckets per license.
    pub context: &'a Context,
    pub now: Timestamp,
    pub random: u32,
    /// List changes for licenses with ids strictly after this one.
    pub after: Option<&'a str>,
    pub limit: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PreviewChange {
    pub license: String,
    pub licensee: String,
    pub before: bool,
    pub after: bool,
    pub before_variant: String,
    pub after_variant: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Preview {
    /// Licenses evaluated (all of them).
    pub evaluated: u64,
    /// Licenses whose answer (on/off or variant) would change.
    pub changed: u64,
    /// One page of them, in license id order.
    pub changes: Vec<PreviewChange>,
    /// Pass as `after` for the next page; `None` on the last.
    pub next_after: Option<String>,
}

/// Compares the current gate (off when it does not exist yet) with `proposed` for
/// every license. The proposal is checked as a put would check it.
pub fn preview(state: &State, proposed: &GateSpec, q: PreviewQuery<'_>) -> Result<Preview, Refusal> {
    proposed.check()?;
    let version = state.gate(proposed.key.as_str()).map_or(1, |e| e.current().version + 1);
    let candidate = state.compile_gate(proposed, version);
    let current = state.gate(proposed.key.as_str()).map(|e| e.compiled());
    let limit = q.limit.clamp(1, MAX_PAGE);
    let mut out = Preview { evaluated: 0, changed: 0, changes: Vec::new(), next_after: None };
    let mut ctx = q.context.clone();
    for license in state.licenses_after(None) {
        ctx.license_key = Some(license.key.to_string());
        if q.context.user_id.is_none() {
            ctx.user_id = Some(license.id.to_string());
        }
        let facts = LicenseFacts::from_state(state, license.key.as_str(), q.now);
        let after = evaluate_gate(state, &candidate, &ctx, Some(&facts), q.now, q.random);
        let before = current.map(|g| evaluate_gate(state, g, &ctx, Some(&facts), q.now, q.random));
        let (before_on, before_variant) = before.map_or((false, "disabled"), |b| (b.enabled, b.variant.name));
        out.evaluated += 1;
        if before_on == after.enabled && before_variant == after.variant.name {
            continue;
        }
        out.changed += 1;
        if q.after.is_some_and(|a| license.id.as_str() <= a) {
            continue;
        }
        if out.changes.len() < limit {
            out.changes.push(PreviewChange {
                license: license.id.to_string(),
                licensee: license.licensee.clone(),
                before: before_on,
                after: after.enabled,
                before_variant: before_variant.to_string(),
                after_variant: after.variant.name.to_string(),
            });
        } else if out.next_after.is_none() {
            out.next_after = out.changes.last().map(|c| c.license.clone());
        }
    }
    Ok(out)
}
