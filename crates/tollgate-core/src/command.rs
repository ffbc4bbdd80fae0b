//! Commands and `decide`: what a request asks for, checked against the state, becomes
//! events or a refusal. Nothing here changes state; `State::apply` does.
//!
//! Commands that would change nothing (suspending a suspended license) decide to no
//! events, so every lifecycle command is idempotent by construction.

use std::sync::Arc;

use crate::catalog::{Plan, PlanSpec, Product, ProductSpec};
use crate::event::{Event, EventKind, Meta};
use crate::ids::{LicenseId, PlanKey, ProductKey};
use crate::key::LicenseKey;
use crate::license::{License, Metadata, Status};
use crate::refusal::Refusal;
use crate::state::State;
use crate::timestamp::Timestamp;

const MAX_LICENSEE: usize = 256;
const MAX_METADATA_BYTES: usize = 16 * 1024;

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    CreateProduct(ProductSpec),
    UpdateProduct(ProductSpec),
    CreatePlan(PlanSpec),
    UpdatePlan(PlanSpec),
    IssueLicense(IssueLicense),
    Suspend(LicenseId),
    Reinstate(LicenseId),
    Revoke(LicenseId),
    Renew(LicenseId),
    ChangePlan {
        license: LicenseId,
        plan: PlanKey,
    },
    Keys(crate::keys::KeyCommand),
    RevokeToken {
        fingerprint: Option<String>,
        jti: String,
        license: LicenseId,
        /// When the token was issued: its machine is deactivated only if it has been
        /// activated since before then (a proof of an earlier activation, posted again
        /// after the machine came back, leaves the new activation alone).
        issued_at: Option<Timestamp>,
    },
    /// Machines, seats, leases, usage and overrides (see [`crate::models`]).
    Models(crate::models::ModelCommand),
    /// Licenses from another system, all or nothing (see [`crate::import`]).
    ImportLicenses(Vec<crate::import::ImportRow>),
    /// Gates and their segments (see [`crate::gate`]).
    Gates(crate::gate::GateCommand),
}

/// Issuing a license. The id and key are drawn at random by the caller (core has no
/// random source); a collision is refused, never silently merged.
#[derive(Clone, Debug, PartialEq)]
pub struct IssueLicense {
    pub id: LicenseId,
    pub key: LicenseKey,
    pub product: ProductKey,
    pub plan: PlanKey,
    pub licensee: String,
    /// Overrides the expiry the plan would give.
    pub expires_at: Option<Timestamp>,
    pub metadata: Metadata,
    /// The license's id elsewhere; unique.
    pub external_id: Option<String>,
}

fn license<'a>(state: &'a State, id: &LicenseId) -> Result<&'a License, Refusal> {
    state
        .license(id.as_str())
        .map(|l| &**l)
        .ok_or_else(|| Refusal::not_found("LICENSE_NOT_FOUND", format!("no license with id '{id}'")))
}

fn plan<'a>(state: &'a State, key: &PlanKey) -> Result<&'a Plan, Refusal> {
    state
        .plan(key.as_str())
        .map(|p| &**p)
        .ok_or_else(|| Refusal::not_found("PLAN_NOT_FOUND", format!("no plan with key '{key}'")))
}

fn product<'a>(state: &'a State, key: &ProductKey) -> Result<&'a Product, Refusal> {
    state
        .product(key.as_str())
        .map(|p| &**p)
        .ok_or_else(|| Refusal::not_found("PRODUCT_NOT_FOUND", format!("no product with key '{key}'")))
}

fn not_revoked(l: &License, action: &str) -> Result<(), Refusal> {
    if l.status == Status::Revoked {
        return Err(Refusal::conflict(
            "LICENSE_REVOKED",
            format!("license '{}' is revoked; revocation is final, so it cannot be {action}", l.id),
        ));
    }
    Ok(())
}

/// Expiry and trial flag of a license starting on `plan` at `now`.
fn initial_term(plan: &Plan, now: Timestamp) -> (Option<Timestamp>, bool) {
    match (plan.trial_days, plan.duration_days) {
        (Some(t), _) => (Some(now.plus_days(t)), true),
        (None, Some(d)) => (Some(now.plus_days(d)), false),
        (None, None) => (None, false),
    }
}

pub fn decide(state: &State, command: &Command, meta: &Meta, now: Timestamp) -> Result<Vec<Event>, Refusal> {
    let kinds = decide_kinds(state, command, now)?;
    Ok(kinds.into_iter().map(|k| Event::new(now, meta.clone(), k)).collect())
}

pub(crate) fn decide_kinds(state: &State, command: &Command, now: Timestamp) -> Result<Vec<EventKind>, Refusal> {
    match command {
        Command::CreateProduct(spec) => {
            spec.check()?;
            if let Some(existing) = state.product(spec.key.as_str()) {
                if existing.name == spec.name && existing.features == spec.features {
                    return Ok(vec![]);
                }
                return Err(Refusal::conflict(
                    "PRODUCT_EXISTS",
                    format!(
                        "product '{}' already exists with other content; update it with PUT /v1/products/{}",
                        spec.key, spec.key
                    ),
                ));
            }
            Ok(vec![EventKind::ProductCreated(Product {
                key: spec.key.clone(),
                name: spec.name.clone(),
                features: spec.features.clone(),
                version: 1,
                created_at: now,
                updated_at: now,
            })])
        }
        Command::UpdateProduct(spec) => {
            spec.check()?;
            let old = product(state, &spec.key)?;
            if old.name == spec.name && old.features == spec.features {
                return Ok(vec![]);
            }
            // A feature the update takes out must be one nothing uses: no plan grants it,
            // no gate is bound to it, no license's overrides add it.
            let removed = |f: &crate::ids::FeatureKey| !spec.features.iter().any(|sf| &sf.key == f);
            if let Some((plan, feature)) = state
                .plans()
                .filter(|p| p.product == spec.key)
                .find_map(|p| p.features.iter().find(|f| removed(f)).map(|f| (p.key.clone(), f.clone())))
            {
                return Err(Refusal::conflict(
                    "FEATURE_IN_USE",
                    format!("feature '{feature}' is granted by plan '{plan}'; remove it from the plan first"),
                ));
            }
            // A gate bound to it would be off for everyone, and refused on its next import.
            if let Some((gate, feature)) = state.gates().find_map(|g| {
                let f = g.current().definition.feature.as_ref()?;
                (f.product == spec.key && removed(&f.feature))
                    .then(|| (g.current().definition.key.clone(), f.feature.clone()))
            }) {
                return Err(Refusal::conflict(
                    "FEATURE_IN_USE",
                    format!("feature '{feature}' is the one gate '{gate}' is bound to; bind the gate to another first"),
                ));
            }
            // (A rare write, so a walk over the licenses is affordable here.)
            if let Some((license, feature)) =
                state.licenses_after(None).filter(|l| l.product == spec.key).find_map(|l| {
                    let o = state.models(l.id.as_str())?.overrides.as_ref()?;
                    o.features_add.iter().find(|f| removed(f)).map(|f| (l.id.clone(), f.clone()))
                })
            {
                return Err(Refusal::conflict(
                    "FEATURE_IN_USE",
                    format!(
                        "feature '{feature}' is granted by the overrides of license '{license}'; change them first"
                    ),
                ));
            }
            Ok(vec![EventKind::ProductUpdated(Product {
                name: spec.name.clone(),
                features: spec.features.clone(),
                version: old.version.saturating_add(1),
                updated_at: now,
                ..old.clone()
            })])
        }
        Command::CreatePlan(spec) => {
            let p = product(state, &spec.product)?;
            spec.check(p)?;
            if let Some(existing) = state.plan(spec.key.as_str()) {
                if same_plan(existing, spec) {
                    return Ok(vec![]);
                }
                return Err(Refusal::conflict(
                    "PLAN_EXISTS",
                    format!(
                        "plan '{}' already exists with other content; update it with PUT /v1/plans/{}",
                        spec.key, spec.key
                    ),
                ));
            }
            Ok(vec![EventKind::PlanCreated(new_plan(spec, 1, now, now))])
        }
        Command::UpdatePlan(spec) => {
            let old = plan(state, &spec.key)?;
            if old.product != spec.product {
                return Err(Refusal::invalid(format!(
                    "plan '{}' belongs to product '{}'; a plan cannot move to another product",
                    old.key, old.product
                )));
            }
            spec.check(product(state, &spec.product)?)?;
            if same_plan(old, spec) {
                return Ok(vec![]);
            }
            Ok(vec![EventKind::PlanUpdated(new_plan(spec, old.version.saturating_add(1), old.created_at, now))])
        }
        Command::IssueLicense(c) => {
            let plan = plan(state, &c.plan)?;
            if plan.product != c.product {
                return Err(Refusal::new(
                    crate::refusal::RefusalKind::Invalid,
                    "PLAN_PRODUCT_MISMATCH",
                    format!("plan '{}' belongs to product '{}', not '{}'", plan.key, plan.product, c.product),
                ));
            }
            product(state, &c.product)?;
            check_licensee(&c.licensee)?;
            // Checked as sent (an integer past 2^53 is refused, not rounded) and as kept
            // (a float such as 1e19 is such an integer).
            check_metadata(&c.metadata)?;
            let metadata = canonical_metadata(&c.metadata)?;
            check_metadata(&metadata)?;
            if let Some(x) = &c.external_id {
                check_external_id(x)?;
                if let Some(other) = state.license_by_external_id(x) {
                    return Err(Refusal::conflict(
                        "EXTERNAL_ID_EXISTS",
                        format!("external id '{x}' already belongs to license '{}'", other.id),
                    ));
                }
            }
            if state.license(c.id.as_str()).is_some() || state.license_by_key(c.key.as_str()).is_some() {
                return Err(Refusal::conflict(
                    "LICENSE_EXISTS",
                    "the drawn license id or key is taken; retry".to_string(),
                ));
            }
            let (mut expires_at, trial) = initial_term(plan, now);
            if let Some(e) = c.expires_at {
                if e <= now {
                    return Err(Refusal::new(
                        crate::refusal::RefusalKind::Invalid,
                        "INVALID_EXPIRY",
                        format!("expires_at {e} is not in the future"),
                    ));
                }
                expires_at = Some(e);
            }
            Ok(vec![EventKind::LicenseIssued(Arc::new(License {
                id: c.id.clone(),
                key: c.key.clone(),
                product: c.product.clone(),
                plan: c.plan.clone(),
                licensee: c.licensee.clone(),
                status: Status::Active,
                trial,
                issued_at: now,
                expires_at,
                updated_at: now,
                metadata,
                external_id: c.external_id.clone(),
                version: 1,
            }))])
        }
        Command::Suspend(id) => {
            let l = license(state, id)?;
            not_revoked(l, "suspended")?;
            Ok(if l.status == Status::Suspended {
                vec![]
            } else {
                vec![EventKind::LicenseSuspended { license: id.clone() }]
            })
        }
        Command::Reinstate(id) => {
            let l = license(state, id)?;
            not_revoked(l, "reinstated")?;
            Ok(if l.status == Status::Active {
                vec![]
            } else {
                vec![EventKind::LicenseReinstated { license: id.clone() }]
            })
        }
        Command::Revoke(id) => {
            let l = license(state, id)?;
            Ok(if l.status == Status::Revoked {
                vec![]
            } else {
                vec![EventKind::LicenseRevoked { license: id.clone() }]
            })
        }
        Command::Renew(id) => {
            let l = license(state, id)?;
            not_revoked(l, "renewed")?;
            let p = plan(state, &l.plan)?;
            let period = if l.trial { p.trial_days.or(p.duration_days) } else { p.duration_days };
            let (Some(expires), Some(days)) = (l.expires_at, period) else {
                let why = if l.expires_at.is_none() {
                    format!("license '{}' does not expire on plan '{}', so there is nothing to renew", l.id, p.key)
                } else {
                    format!(
                        "plan '{}' has no term to renew license '{}' by; change it to a plan with duration_days",
                        p.key, l.id
                    )
                };
                return Err(Refusal::conflict("NOT_RENEWABLE", why));
            };
            // Renewal continues the current term while it is running or in grace, so a
            // late payer neither loses days nor gains the grace days; once expired, a
            // renewal starts a fresh term from now.
            let in_term = l.grace_ends_at(p).is_some_and(|g| now < g);
            let base = if in_term { expires } else { now };
            Ok(vec![EventKind::LicenseRenewed { license: id.clone(), expires_at: Some(base.plus_days(days)) }])
        }
        Command::Keys(k) => state.keys().decide(k, now),
        Command::RevokeToken { fingerprint, jti, license: id, issued_at } => {
            license(state, id)?;
            if jti.is_empty() || jti.len() > 128 {
                return Err(Refusal::invalid("jti must be 1 to 128 bytes"));
            }
            let mut events = vec![EventKind::LicenseTokenRevoked {
                fingerprint: fingerprint.clone(),
                jti: jti.clone(),
                license: id.clone(),
            }];
            // A machine giving its license back frees its place, as deactivating it
            // online does (and its other tokens go with it, through the feed).
            if let Some(fp) = fingerprint.as_deref().and_then(|f| crate::machine::Fingerprint::parse(f).ok())
                && let Some(issued_at) = issued_at
                && state
                    .models(id.as_str())
                    .and_then(|m| m.machines.get(&fp))
                    .is_some_and(|m| m.activated_at <= *issued_at)
            {
                events.push(EventKind::MachineDeactivated { license: id.clone(), fingerprint: fp });
            }
            Ok(events)
        }
        Command::ChangePlan { license: id, plan: new } => {
            let l = license(state, id)?;
            not_revoked(l, "changed")?;
            let p = plan(state, new)?;
            if p.product != l.product {
                return Err(Refusal::new(
                    crate::refusal::RefusalKind::Invalid,
                    "PLAN_PRODUCT_MISMATCH",
                    format!(
                        "plan '{}' belongs to product '{}', but the license is for '{}'",
                        p.key, p.product, l.product
                    ),
                ));
            }
            let old = plan(state, &l.plan)?;
            // A trial converts: to the plan's paid term from now (perpetual when it has
            // none), and that includes changing to the plan it is on (how a trial that
            // was paid for becomes a paid license in place). A trial never starts again:
            // moved to a plan that only offers trials, it goes on as it was.
            // Otherwise the paid term already bought is kept; a perpetual plan drops the
            // expiry a term gave (but keeps one set by hand on a perpetual plan). A paid
            // license starting a term (it was perpetual) gets the plan's paid term, not
            // the trial the plan offers to new licenses.
            let (expires_at, trial) = if l.trial {
                match (p.duration_days, p.trial_days) {
                    (Some(d), _) => (Some(now.plus_days(d)), false),
                    (None, None) => (None, false),
                    (None, Some(_)) => (l.expires_at, true),
                }
            } else if p.duration_days.is_none() && p.trial_days.is_none() {
                let set_by_hand = old.duration_days.is_none() && old.trial_days.is_none();
                (if set_by_hand { l.expires_at } else { None }, false)
            } else {
                // (A plan that offers only trials gives a paid license no term: it goes
                // on as it was.)
                (l.expires_at.or_else(|| p.duration_days.map(|d| now.plus_days(d))), false)
            };
            if &l.plan == new && expires_at == l.expires_at && trial == l.trial {
                return Ok(vec![]);
            }
            // A lapsed term stays lapsed: grace is read from the plan, so a move that
            // keeps the term to a plan with a longer grace would bring it back unpaid
            // (whatever its status: suspended, it would be back once reinstated). A move
            // that starts a term (a trial converting) or drops it (perpetual) is a new
            // decision, and stands.
            if &l.plan != new
                && expires_at.is_some()
                && expires_at == l.expires_at
                && l.grace_ends_at(old).is_some_and(|g| now >= g)
            {
                return Err(Refusal::conflict(
                    "LICENSE_EXPIRED",
                    format!(
                        "license '{}' is past its term and grace; renew it (or move it to a plan that starts a term) first",
                        l.id
                    ),
                ));
            }
            Ok(vec![EventKind::LicensePlanChanged { license: id.clone(), plan: new.clone(), expires_at, trial }])
        }
        Command::Models(c) => crate::models::decide(state, c, now),
        Command::ImportLicenses(rows) => crate::import::decide(state, rows, now),
        Command::Gates(c) => crate::gate::decide(state, c, now),
    }
}

fn same_plan(p: &Plan, s: &PlanSpec) -> bool {
    p.product == s.product
        && p.name == s.name
        && p.features == s.features
        && p.duration_days == s.duration_days
        && p.trial_days == s.trial_days
        && p.grace_days == s.grace_days
        && p.max_machines == s.max_machines
        && p.max_users == s.max_users
        && p.offline_days == s.offline_days
        && p.floating == s.floating
        && p.meters == s.meters
}

fn new_plan(s: &PlanSpec, version: u64, created_at: Timestamp, now: Timestamp) -> Plan {
    Plan {
        key: s.key.clone(),
        product: s.product.clone(),
        name: s.name.clone(),
        features: s.features.clone(),
        duration_days: s.duration_days,
        trial_days: s.trial_days,
        grace_days: s.grace_days,
        max_machines: s.max_machines,
        max_users: s.max_users,
        offline_days: s.offline_days,
        floating: s.floating,
        meters: s.meters.clone(),
        version,
        created_at,
        updated_at: now,
    }
}

fn check_licensee(licensee: &str) -> Result<(), Refusal> {
    if licensee.trim().is_empty() || licensee.len() > MAX_LICENSEE || licensee.chars().any(char::is_control) {
        return Err(Refusal::invalid(format!("licensee must be 1 to {MAX_LICENSEE} bytes of printable text")));
    }
    Ok(())
}

fn check_external_id(x: &str) -> Result<(), Refusal> {
    if x.trim().is_empty() || x.len() > 128 || x.chars().any(char::is_control) {
        return Err(Refusal::invalid("external_id must be 1 to 128 bytes of printable text"));
    }
    Ok(())
}

/// Metadata as the ledger gives it back: through canonical JSON (RFC 8785), which
/// writes `5.0` as `5`, `-0.0` as `0` and `1e19` as an integer. The event holds this
/// form, so the node that decided it answers as every node that folds the stored event
/// does.
fn canonical_metadata(m: &Metadata) -> Result<Metadata, Refusal> {
    if m.is_empty() {
        return Ok(Metadata::new());
    }
    let bytes = crate::canonical::to_vec(m).map_err(|e| Refusal::invalid(format!("metadata: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| Refusal::invalid(format!("metadata: {e}")))
}

fn check_metadata(m: &Metadata) -> Result<(), Refusal> {
    let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(Refusal::invalid(format!(
            "metadata is {size} bytes; at most {MAX_METADATA_BYTES} are kept per license"
        )));
    }
    for (key, value) in m {
        match metadata_value(value, 1) {
            Ok(()) => {}
            Err(MetadataValue::TooDeep) => {
                return Err(Refusal::invalid(format!(
                    "metadata '{key}' nests deeper than {MAX_METADATA_DEPTH} levels; flatten it"
                )));
            }
            Err(MetadataValue::Inexact(n)) => {
                return Err(Refusal::invalid(format!(
                    "metadata '{key}' holds {n}, beyond 2^53: the ledger keeps numbers as IEEE doubles (RFC 8785), which would round it; send it as a string"
                )));
            }
        }
    }
    Ok(())
}

/// How deep metadata may nest. A stored event wraps metadata in four more levels, and
/// serde_json refuses to read JSON nested deeper than 128: an event nested deeper than
/// it can read would be written once and then never read back (start-up would refuse
/// the ledger), so the limit sits well below that.
const MAX_METADATA_DEPTH: usize = 32;

/// The ledger keeps numbers as RFC 8785 does, as IEEE doubles: a larger integer would
/// be answered exactly now and rounded after a restart.
const MAX_EXACT_INTEGER: u64 = 1 << 53;

enum MetadataValue {
    TooDeep,
    Inexact(serde_json::Number),
}

fn metadata_value(v: &serde_json::Value, depth: usize) -> Result<(), MetadataValue> {
    use serde_json::Value;
    if depth > MAX_METADATA_DEPTH {
        return Err(MetadataValue::TooDeep);
    }
    match v {
        Value::Number(n) => {
            let exact = n.as_i64().map(i64::unsigned_abs).or_else(|| n.as_u64()).is_none_or(|i| i <= MAX_EXACT_INTEGER);
            if !exact {
                return Err(MetadataValue::Inexact(n.clone()));
            }
        }
        Value::Array(items) => items.iter().try_for_each(|item| metadata_value(item, depth + 1))?,
        Value::Object(map) => map.values().try_for_each(|item| metadata_value(item, depth + 1))?,
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
    Ok(())
}
