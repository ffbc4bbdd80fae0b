//! The licensing models' state of one license: machines, seats, leases, metered
//! usage and overrides; the commands that change it (`decide`) and the fold of their
//! events.
//!
//! A license that uses none of them has no entry at all: the state keeps these records
//! in a separate map keyed by license id, so plain licenses pay nothing for them.
//! Persistent maps inside keep each change O(log n) however many machines a license has.

use std::sync::Arc;

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::command::{Command, IssueLicense};
use crate::event::{Event, EventKind};
use crate::ids::{LicenseId, MeterKey};
use crate::lease::{Lease, LeaseId};
use crate::license::{License, Standing};
use crate::machine::{Fingerprint, Machine, MachineSpec};
use crate::meter::{MAX_AMOUNT, MAX_USED, MeterSpec, MeterUsage};
use crate::overrides::{Effective, Overrides};
use crate::refusal::Refusal;
use crate::seat::{Seat, UserId};
use crate::state::{ApplyError, State};
use crate::timestamp::Timestamp;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Models {
    #[serde(default, skip_serializing_if = "OrdMap::is_empty")]
    pub leases: OrdMap<LeaseId, Lease>,
    pub license: LicenseId,
    #[serde(default, skip_serializing_if = "OrdMap::is_empty")]
    pub machines: OrdMap<Fingerprint, Machine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<Overrides>,
    #[serde(default, skip_serializing_if = "OrdMap::is_empty")]
    pub seats: OrdMap<UserId, Seat>,
    #[serde(default, skip_serializing_if = "OrdMap::is_empty")]
    pub usage: OrdMap<MeterKey, MeterUsage>,
}

impl Models {
    fn new(license: LicenseId) -> Self {
        Models {
            license,
            overrides: None,
            machines: OrdMap::new(),
            seats: OrdMap::new(),
            leases: OrdMap::new(),
            usage: OrdMap::new(),
        }
    }

    pub fn live_leases(&self, now: Timestamp) -> impl Iterator<Item = &Lease> {
        self.leases.values().filter(move |l| l.live(now))
    }

    /// Whether a fingerprint is activated, or holds a lease alive at `now`.
    pub fn knows_fingerprint(&self, fingerprint: &str, now: Timestamp) -> bool {
        self.machines.contains_key(fingerprint) || self.live_leases(now).any(|l| l.fingerprint.as_str() == fingerprint)
    }

    /// Whether activated machine `fingerprint` is among the oldest `max` (ties by
    /// fingerprint). A limit lowered below the machines already activated (a change of
    /// plan, an override) leaves the newest over it: they stop validating, and the
    /// others go on, until machines are deactivated. A fingerprint that is not an
    /// activated machine (a lease holder: leases keep their own limit) is within.
    pub fn machine_within(&self, fingerprint: &str, max: Option<u32>) -> bool {
        let (Some(max), Some(m)) = (max, self.machines.get(fingerprint)) else { return true };
        among_oldest(self.machines.values(), m, max, |m| (m.activated_at, &m.fingerprint))
    }

    /// Whether `user`'s seat is among the oldest `max` (as [`Self::machine_within`]).
    pub fn seat_within(&self, user: &str, max: Option<u32>) -> bool {
        let (Some(max), Some(seat)) = (max, self.seats.get(user)) else { return true };
        among_oldest(self.seats.values(), seat, max, |s| (s.assigned_at, &s.user))
    }

    /// The amount of a meter used in the period that contains `now`.
    pub fn used(&self, meter: &MeterSpec, now: Timestamp) -> u64 {
        self.usage.get(&meter.key).map_or(0, |u| u.used_at(meter.period, now))
    }
}

/// Whether `this`, one of `all`, is among the `max` oldest by `age` (its instant, and
/// a key to break ties). Counted only when there are more than `max`.
fn among_oldest<'v, V: 'v, K: Ord>(
    all: impl ExactSizeIterator<Item = &'v V>,
    this: &V,
    max: u32,
    age: impl Fn(&V) -> (Timestamp, &K),
) -> bool {
    let max = max as usize;
    all.len() <= max || all.filter(|o| age(o) < age(this)).count() < max
}

/// Commands of the licensing models. Ids are drawn by the caller, like license ids.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelCommand {
    /// Issues a license with overrides, in one decision.
    IssueWithOverrides {
        issue: IssueLicense,
        overrides: Overrides,
    },
    ActivateMachine {
        license: LicenseId,
        machine: MachineSpec,
    },
    DeactivateMachine {
        license: LicenseId,
        fingerprint: Fingerprint,
    },
    AssignUser {
        license: LicenseId,
        user: UserId,
    },
    UnassignUser {
        license: LicenseId,
        user: UserId,
    },
    /// Checks out `lease`, or extends the live lease the fingerprint already holds.
    CheckoutLease {
        license: LicenseId,
        lease: LeaseId,
        fingerprint: Fingerprint,
    },
    Heartbeat {
        lease: LeaseId,
    },
    ReleaseLease {
        lease: LeaseId,
    },
    /// From the reaper: records the expiry of those of these leases still expired at `now`.
    ExpireLeases {
        leases: Vec<LeaseId>,
    },
    RecordUsage {
        license: LicenseId,
        meter: MeterKey,
        quantity: u64,
    },
    SetOverrides {
        license: LicenseId,
        overrides: Overrides,
    },
}

fn license<'s>(state: &'s State, id: &LicenseId) -> Result<&'s License, Refusal> {
    state
        .license(id.as_str())
        .map(|l| &**l)
        .ok_or_else(|| Refusal::not_found("LICENSE_NOT_FOUND", format!("no license with id '{id}'")))
}

/// The license's plan seen through its overrides.
pub fn effective<'s>(state: &'s State, l: &License) -> Result<Effective<'s>, Refusal> {
    let plan = state
        .plan(l.plan.as_str())
        .ok_or_else(|| Refusal::not_found("PLAN_NOT_FOUND", format!("no plan with key '{}'", l.plan)))?;
    Ok(Effective { plan, overrides: state.models(l.id.as_str()).and_then(|m| m.overrides.as_ref()) })
}

/// Machines, seats, leases and usage are taken only by a license valid at `now`.
fn usable<'s>(state: &'s State, l: &License, now: Timestamp) -> Result<Effective<'s>, Refusal> {
    let e = effective(state, l)?;
    let (code, what) = match l.standing(e.plan, now) {
        Standing::Active | Standing::Grace { .. } => return Ok(e),
        Standing::Expired => ("LICENSE_EXPIRED", "expired"),
        Standing::Suspended => ("LICENSE_SUSPENDED", "suspended"),
        Standing::Revoked => ("LICENSE_REVOKED", "revoked"),
    };
    Err(Refusal::conflict(code, format!("license '{}' is {what}", l.id)))
}

/// A live lease renews only while it is among the `max` oldest live leases: after the
/// limit was lowered (a smaller plan, an override), the newest ones beyond it are
/// refused and run out, so the limit holds within one lease term without evicting
/// anyone outright.
fn renewable(m: &Models, held: &Lease, max: u32, now: Timestamp, id: &LicenseId) -> Result<(), Refusal> {
    let older = m
        .live_leases(now)
        .filter(|x| (x.checked_out_at, x.id.as_str()) < (held.checked_out_at, held.id.as_str()))
        .count();
    if older >= max as usize {
        return Err(Refusal::conflict(
            "LEASE_LIMIT",
            format!(
                "license '{id}' now allows {max} leases and {older} older ones are live: lease '{}' is not renewed and runs out at {}",
                held.id, held.expires_at
            ),
        ));
    }
    Ok(())
}

fn lease_of<'s>(state: &'s State, id: &LeaseId) -> Result<(&'s License, &'s Lease), Refusal> {
    state
        .lease(id.as_str())
        .ok_or_else(|| Refusal::not_found("LEASE_NOT_FOUND", format!("no lease with id '{id}'; it may have expired")))
}

fn limit(code: &'static str, what: &str, max: u32, id: &LicenseId) -> Refusal {
    Refusal::conflict(code, format!("license '{id}' already has {max} {what}, its limit"))
}

pub fn decide(state: &State, command: &ModelCommand, now: Timestamp) -> Result<Vec<EventKind>, Refusal> {
    let models = |id: &LicenseId| state.models(id.as_str());
    match command {
        ModelCommand::IssueWithOverrides { issue, overrides } => {
            let mut events = crate::command::decide_kinds(state, &Command::IssueLicense(issue.clone()), now)?;
            let product = state.product(issue.product.as_str());
            let plan = state.plan(issue.plan.as_str());
            if let (Some(product), Some(plan)) = (product, plan) {
                overrides.check(product, plan)?;
            }
            if !overrides.is_empty() {
                events.push(EventKind::LicenseOverridesSet { license: issue.id.clone(), overrides: overrides.clone() });
            }
            Ok(events)
        }
        ModelCommand::ActivateMachine { license: id, machine } => {
            machine.check()?;
            let l = license(state, id)?;
            let e = usable(state, l, now)?;
            let m = models(id);
            if m.is_some_and(|m| m.machines.contains_key(&machine.fingerprint)) {
                return Ok(vec![]);
            }
            if let Some(max) = e.max_machines()
                && m.map_or(0, |m| m.machines.len()) >= max as usize
            {
                return Err(limit("MACHINE_LIMIT", "machines", max, id));
            }
            Ok(vec![EventKind::MachineActivated { license: id.clone(), machine: Machine::new(machine, now) }])
        }
        ModelCommand::DeactivateMachine { license: id, fingerprint } => {
            license(state, id)?;
            Ok(if models(id).is_some_and(|m| m.machines.contains_key(fingerprint)) {
                vec![EventKind::MachineDeactivated { license: id.clone(), fingerprint: fingerprint.clone() }]
            } else {
                vec![]
            })
        }
        ModelCommand::AssignUser { license: id, user } => {
            let l = license(state, id)?;
            let e = usable(state, l, now)?;
            let m = models(id);
            if m.is_some_and(|m| m.seats.contains_key(user)) {
                return Ok(vec![]);
            }
            if let Some(max) = e.max_users()
                && m.map_or(0, |m| m.seats.len()) >= max as usize
            {
                return Err(limit("SEAT_LIMIT", "users", max, id));
            }
            Ok(vec![EventKind::UserAssigned { license: id.clone(), user: user.clone() }])
        }
        ModelCommand::UnassignUser { license: id, user } => {
            license(state, id)?;
            Ok(if models(id).is_some_and(|m| m.seats.contains_key(user)) {
                vec![EventKind::UserUnassigned { license: id.clone(), user: user.clone() }]
            } else {
                vec![]
            })
        }
        ModelCommand::CheckoutLease { license: id, lease, fingerprint } => {
            let l = license(state, id)?;
            let e = usable(state, l, now)?;
            let (Some(floating), Some(max)) = (e.plan.floating, e.max_leases()) else {
                return Err(Refusal::conflict(
                    "NOT_FLOATING",
                    format!("plan '{}' has no floating leases; set \"floating\" on the plan", e.plan.key),
                ));
            };
            let expires_at = floating.expiry(now);
            let m = models(id);
            if let Some((m, held)) =
                m.and_then(|m| m.live_leases(now).find(|x| &x.fingerprint == fingerprint).map(|held| (m, held)))
            {
                renewable(m, held, max, now, id)?;
                return Ok(vec![EventKind::LeaseRenewed { license: id.clone(), lease: held.id.clone(), expires_at }]);
            }
            if state.lease(lease.as_str()).is_some() {
                return Err(Refusal::conflict("LEASE_EXISTS", "the drawn lease id is taken; retry"));
            }
            if m.map_or(0, |m| m.live_leases(now).count()) >= max as usize {
                return Err(limit("LEASE_LIMIT", "leases checked out", max, id));
            }
            Ok(vec![EventKind::LeaseCheckedOut {
                license: id.clone(),
                lease: Lease { id: lease.clone(), fingerprint: fingerprint.clone(), checked_out_at: now, expires_at },
            }])
        }
        ModelCommand::Heartbeat { lease } => {
            let (l, held) = lease_of(state, lease)?;
            if !held.live(now) {
                return Err(Refusal::conflict(
                    "LEASE_EXPIRED",
                    format!("lease '{lease}' expired at {}; check out a new one", held.expires_at),
                ));
            }
            let e = usable(state, l, now)?;
            let (Some(floating), Some(max)) = (e.plan.floating, e.max_leases()) else {
                return Err(Refusal::conflict(
                    "NOT_FLOATING",
                    format!("plan '{}' no longer has floating leases", e.plan.key),
                ));
            };
            if let Some(m) = state.models(l.id.as_str()) {
                renewable(m, held, max, now, &l.id)?;
            }
            Ok(vec![EventKind::LeaseRenewed {
                license: l.id.clone(),
                lease: lease.clone(),
                expires_at: floating.expiry(now),
            }])
        }
        ModelCommand::ReleaseLease { lease } => {
            let (l, _) = lease_of(state, lease)?;
            Ok(vec![EventKind::LeaseReleased { license: l.id.clone(), lease: lease.clone() }])
        }
        ModelCommand::ExpireLeases { leases } => Ok(leases
            .iter()
            .filter_map(|id| state.lease(id.as_str()))
            .filter(|(_, held)| !held.live(now))
            .map(|(l, held)| EventKind::LeaseExpired { license: l.id.clone(), lease: held.id.clone() })
            .collect()),
        ModelCommand::RecordUsage { license: id, meter, quantity } => {
            if !(1..=MAX_AMOUNT).contains(quantity) {
                return Err(Refusal::invalid(format!("quantity must be between 1 and {MAX_AMOUNT}")));
            }
            let l = license(state, id)?;
            let e = usable(state, l, now)?;
            let Some(spec) = e.plan.meters.iter().find(|m| &m.key == meter) else {
                return Err(Refusal::not_found(
                    "METER_NOT_FOUND",
                    format!("plan '{}' has no meter '{meter}'", e.plan.key),
                ));
            };
            let used = models(id).map_or(0, |m| m.used(spec, now));
            let quota = e.quota(spec);
            if let Some(ceiling) = spec.ceiling(quota)
                && used.saturating_add(*quantity) > ceiling
            {
                return Err(Refusal::conflict(
                    "QUOTA_EXCEEDED",
                    format!(
                        "meter '{meter}' has {used} of {ceiling} used this period; {quantity} more would exceed it"
                    ),
                ));
            }
            if used.saturating_add(*quantity) > MAX_USED {
                return Err(Refusal::conflict(
                    "METER_FULL",
                    format!("meter '{meter}' has {used} used this period, and a period holds at most {MAX_USED}"),
                ));
            }
            Ok(vec![EventKind::UsageRecorded { license: id.clone(), meter: meter.clone(), quantity: *quantity }])
        }
        ModelCommand::SetOverrides { license: id, overrides } => {
            let l = license(state, id)?;
            if l.standing(effective(state, l)?.plan, now) == Standing::Revoked {
                return Err(Refusal::conflict("LICENSE_REVOKED", format!("license '{id}' is revoked")));
            }
            check_overrides(state, l, overrides)?;
            let current = models(id).and_then(|m| m.overrides.as_ref());
            if current.unwrap_or(&Overrides::default()) == overrides {
                return Ok(vec![]);
            }
            Ok(vec![EventKind::LicenseOverridesSet { license: id.clone(), overrides: overrides.clone() }])
        }
    }
}

/// Checks overrides against the license's product and plan.
pub fn check_overrides(state: &State, l: &License, overrides: &Overrides) -> Result<(), Refusal> {
    let product = state
        .product(l.product.as_str())
        .ok_or_else(|| Refusal::not_found("PRODUCT_NOT_FOUND", format!("no product with key '{}'", l.product)))?;
    let plan = state
        .plan(l.plan.as_str())
        .ok_or_else(|| Refusal::not_found("PLAN_NOT_FOUND", format!("no plan with key '{}'", l.plan)))?;
    overrides.check(product, plan)
}

impl State {
    /// The licensing models' record of a license; `None` when it uses none of them.
    pub fn models(&self, license: &str) -> Option<&Arc<Models>> {
        self.models.get(license)
    }

    /// A lease and the license it belongs to.
    pub fn lease(&self, id: &str) -> Option<(&License, &Lease)> {
        let license = self.lease_index.get(id)?;
        let lease = self.models.get(license)?.leases.get(id)?;
        Some((self.licenses.get(license)?, lease))
    }

    /// Leases expired at `now` whose expiry is not yet recorded: the reaper's work.
    pub fn expired_leases(&self, now: Timestamp) -> Vec<LeaseId> {
        let mut out: Vec<LeaseId> = self
            .lease_index
            .iter()
            .filter_map(|(id, license)| self.models.get(license)?.leases.get(id))
            .filter(|l| !l.live(now))
            .map(|l| l.id.clone())
            .collect();
        out.sort();
        out
    }

    /// Folds an event of the licensing models in; `seq` and `kind` name it in errors.
    /// A refused event changes nothing: not even the license's empty models, made for it.
    pub(crate) fn apply_model(&mut self, seq: u64, event: &Event) -> Result<(), ApplyError> {
        let Some(id) = event.event.license() else { return Ok(()) };
        let made = !self.models.contains_key(id);
        let applied = self.apply_model_to(id, seq, event);
        if applied.is_err() && made {
            self.models.remove(id);
        }
        applied
    }

    fn apply_model_to(&mut self, id: &LicenseId, seq: u64, event: &Event) -> Result<(), ApplyError> {
        let kind = event.event.type_name();
        if !self.licenses.contains_key(id) {
            return Err(ApplyError::Missing { seq, kind, what: "license", name: id.to_string() });
        }
        let missing =
            |what, name: &dyn std::fmt::Display| ApplyError::Missing { seq, kind, what, name: name.to_string() };
        let slot = self.models.entry(id.clone()).or_insert_with(|| Arc::new(Models::new(id.clone())));
        let m = Arc::make_mut(slot);
        match &event.event {
            EventKind::MachineActivated { machine, .. } => {
                m.machines.insert(machine.fingerprint.clone(), machine.clone());
            }
            EventKind::MachineDeactivated { fingerprint, .. } => {
                m.machines.remove(fingerprint).ok_or_else(|| missing("machine", fingerprint))?;
            }
            EventKind::UserAssigned { user, .. } => {
                m.seats.insert(user.clone(), Seat { user: user.clone(), assigned_at: event.at });
            }
            EventKind::UserUnassigned { user, .. } => {
                m.seats.remove(user).ok_or_else(|| missing("user", user))?;
            }
            EventKind::LeaseCheckedOut { lease, .. } => {
                m.leases.insert(lease.id.clone(), lease.clone());
                self.lease_index.insert(lease.id.clone(), id.clone());
            }
            EventKind::LeaseRenewed { lease, expires_at, .. } => {
                m.leases.get_mut(lease).ok_or_else(|| missing("lease", lease))?.expires_at = *expires_at;
            }
            EventKind::LeaseReleased { lease, .. } | EventKind::LeaseExpired { lease, .. } => {
                m.leases.remove(lease).ok_or_else(|| missing("lease", lease))?;
                self.lease_index.remove(lease);
            }
            EventKind::UsageRecorded { meter, quantity, .. } => {
                // The period is the plan's at the time of the event; a meter the plan
                // no longer has still folds (as a total), so old ledgers always replay.
                let period = self
                    .licenses
                    .get(id)
                    .and_then(|l| self.plans.get(&l.plan))
                    .and_then(|p| p.meters.iter().find(|s| &s.key == meter))
                    .map_or(crate::meter::Period::Total, |s| s.period);
                let current = m.usage.get(meter).copied();
                let usage = MeterUsage::record(current, period, event.at, *quantity);
                // What decide holds a record and a period to: a larger number would be
                // rounded by a snapshot's canonical JSON, and nodes would disagree.
                for (what, value, max) in
                    [("a quantity", *quantity, MAX_AMOUNT), ("a period's total", usage.used, MAX_USED)]
                {
                    if value > max {
                        return Err(ApplyError::OutOfRange { seq, kind, what, value, max });
                    }
                }
                m.usage.insert(meter.clone(), usage);
            }
            EventKind::LicenseOverridesSet { overrides, .. } => {
                m.overrides = (!overrides.is_empty()).then(|| overrides.clone());
            }
            _ => {}
        }
        Ok(())
    }
}
