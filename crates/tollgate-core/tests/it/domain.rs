//! The domain through `decide` and `apply` with an injected clock: catalog and
//! lifecycle refusals, expiry math, validation codes at chosen instants, determinism
//! of the fold, and properties over generated events and command sequences.
//!
//! Every table goes through [`check`]. A row is an instant (`day(n)`, days after
//! 2026-01-01), a step (a command to decide and apply, or a key to validate) and
//! the expected outcome as text:
//! - the decided events, `;`-separated, with the expiry they set as a day relative
//!   to the same origin (`license_renewed expires_at=d730`);
//! - `no events` when the command is an idempotent no-op;
//! - `refused CODE`;
//! - a validation code (`VALID`, `GRACE_PERIOD`, …).

mod commands;
mod determinism;
mod properties;
mod validation;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tollgate_core::catalog::{PlanSpec, ProductSpec};
use tollgate_core::command::IssueLicense;
use tollgate_core::ids::{LicenseId, PlanKey, ProductKey};
use tollgate_core::key::LicenseKey;
use tollgate_core::license::{License, Status};
use tollgate_core::state::ApplyError;
use tollgate_core::validate::{Scope, validate};
use tollgate_core::{Command, Event, EventKind, Meta, State, Timestamp, decide};

const DAY: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z: the origin of every instant in the tables.
const ORIGIN: i64 = 1_767_225_600_000;

fn day(n: i64) -> Timestamp {
    Timestamp::from_millis(ORIGIN + n * DAY).unwrap()
}

/// `ms` milliseconds after `day(n)`: for the boundaries.
fn day_ms(n: i64, ms: i64) -> Timestamp {
    Timestamp::from_millis(ORIGIN + n * DAY + ms).unwrap()
}

/// An instant as the tables write it: `d365`, or `d0+1ms` off a day boundary.
fn rel(at: Option<Timestamp>) -> String {
    let Some(at) = at else { return "never".into() };
    let ms = at.millis() - ORIGIN;
    match ms.rem_euclid(DAY) {
        0 => format!("d{}", ms.div_euclid(DAY)),
        r => format!("d{}+{r}ms", ms.div_euclid(DAY)),
    }
}

fn meta() -> Meta {
    Meta { actor: "test".into(), reason: None, request_id: "req".into() }
}

/// A license's drawn id and key, fixed by a small number so tables can name it.
#[derive(Clone)]
struct Lic {
    id: LicenseId,
    key: LicenseKey,
}

fn lic(n: u8) -> Lic {
    Lic { id: LicenseId::from_random([n; 16]), key: LicenseKey::from_random([n; 15]) }
}

#[allow(clippy::large_enum_variant)] // test steps, made a few hundred at a time: their size does not matter
enum Step {
    Run(Command),
    Validate { key: String, feature: Option<&'static str>, product: Option<&'static str> },
}

/// Issuing on product `cad`.
fn issue_cmd(l: &Lic, plan: &str) -> IssueLicense {
    IssueLicense {
        id: l.id.clone(),
        key: l.key.clone(),
        product: ProductKey::parse("cad").unwrap(),
        plan: PlanKey::parse(plan).unwrap(),
        licensee: "Acme Ltd".into(),
        expires_at: None,
        metadata: Default::default(),
        external_id: None,
    }
}

fn issue(l: &Lic, plan: &str) -> Step {
    issue_with(l, plan, |_| {})
}

fn issue_with(l: &Lic, plan: &str, edit: impl FnOnce(&mut IssueLicense)) -> Step {
    let mut c = issue_cmd(l, plan);
    edit(&mut c);
    Step::Run(Command::IssueLicense(c))
}

fn suspend(l: &Lic) -> Step {
    Step::Run(Command::Suspend(l.id.clone()))
}

fn reinstate(l: &Lic) -> Step {
    Step::Run(Command::Reinstate(l.id.clone()))
}

fn revoke(l: &Lic) -> Step {
    Step::Run(Command::Revoke(l.id.clone()))
}

fn renew(l: &Lic) -> Step {
    Step::Run(Command::Renew(l.id.clone()))
}

fn change_plan(l: &Lic, plan: &str) -> Step {
    Step::Run(Command::ChangePlan { license: l.id.clone(), plan: PlanKey::parse(plan).unwrap() })
}

fn create_product(spec: Value) -> Step {
    Step::Run(Command::CreateProduct(serde_json::from_value::<ProductSpec>(spec).unwrap()))
}

fn update_product(spec: Value) -> Step {
    Step::Run(Command::UpdateProduct(serde_json::from_value::<ProductSpec>(spec).unwrap()))
}

fn create_plan(spec: Value) -> Step {
    Step::Run(Command::CreatePlan(serde_json::from_value::<PlanSpec>(spec).unwrap()))
}

fn update_plan(spec: Value) -> Step {
    Step::Run(Command::UpdatePlan(serde_json::from_value::<PlanSpec>(spec).unwrap()))
}

fn valid(l: &Lic) -> Step {
    valid_text(l.key.as_str())
}

fn valid_text(key: &str) -> Step {
    Step::Validate { key: key.into(), feature: None, product: None }
}

fn valid_feature(l: &Lic, feature: &'static str) -> Step {
    Step::Validate { key: l.key.to_string(), feature: Some(feature), product: None }
}

fn valid_in(l: &Lic, product: &'static str) -> Step {
    Step::Validate { key: l.key.to_string(), feature: None, product: Some(product) }
}

/// `spec` with `field` set to `value`.
fn with(mut spec: Value, field: &str, value: Value) -> Value {
    spec[field] = value;
    spec
}

/// Product `cad` (features export, render, cloud, legacy; no plan grants legacy).
fn cad() -> Value {
    json!({"key":"cad","name":"CAD","features":[
        {"key":"export","name":"Export"},{"key":"render","name":"Render"},
        {"key":"cloud","name":"Cloud"},{"key":"legacy","name":"Legacy"}]})
}

fn other() -> Value {
    json!({"key":"other","name":"Other","features":[{"key":"x","name":"X"}]})
}

/// 365 days and 14 days of grace.
fn annual() -> Value {
    json!({"key":"annual","product":"cad","name":"Annual","features":["export","render"],
        "duration_days":365,"grace_days":14})
}

/// 30 days, no grace.
fn monthly() -> Value {
    json!({"key":"monthly","product":"cad","name":"Monthly","features":["export"],"duration_days":30})
}

/// 14 days of trial, then 365-day terms; 3 days of grace.
fn trial() -> Value {
    json!({"key":"trial","product":"cad","name":"Pro with trial","features":["export","render","cloud"],
        "trial_days":14,"duration_days":365,"grace_days":3})
}

fn perpetual() -> Value {
    json!({"key":"perpetual","product":"cad","name":"Perpetual","features":["export"]})
}

fn other_basic() -> Value {
    json!({"key":"other-basic","product":"other","name":"Other basic","features":["x"],"duration_days":365})
}

/// A state and the events folded into it.
struct World {
    state: State,
    log: Vec<Event>,
}

impl World {
    /// The catalog above, created through `check` at day 0.
    fn new() -> Self {
        let mut w = World { state: State::default(), log: Vec::new() };
        check(
            &mut w,
            vec![
                (day(0), create_product(cad()), "product_created"),
                (day(0), create_product(other()), "product_created"),
                (day(0), create_plan(annual()), "plan_created"),
                (day(0), create_plan(monthly()), "plan_created"),
                (day(0), create_plan(trial()), "plan_created"),
                (day(0), create_plan(perpetual()), "plan_created"),
                (day(0), create_plan(other_basic()), "plan_created"),
            ],
        );
        w
    }
}

/// Runs each row at its instant: a command is decided and its events applied (so a
/// later row sees them); a key is validated. Compares each outcome with the row's.
fn check(w: &mut World, rows: Vec<(Timestamp, Step, &str)>) {
    for (i, (now, step, expected)) in rows.into_iter().enumerate() {
        let (what, actual) = match step {
            Step::Run(command) => {
                let what = format!("{command:?}");
                let actual = match decide(&w.state, &command, &meta(), now) {
                    Err(refusal) => format!("refused {}", refusal.code),
                    Ok(events) if events.is_empty() => "no events".into(),
                    Ok(events) => {
                        for e in &events {
                            w.state.apply(e).unwrap_or_else(|err| panic!("row {i}: {what}: apply: {err}"));
                        }
                        let shown = events.iter().map(|e| show(&e.event)).collect::<Vec<_>>().join("; ");
                        w.log.extend(events);
                        shown
                    }
                };
                (what, actual)
            }
            Step::Validate { key, feature, product } => {
                let scope = Scope { feature, product, ..Scope::default() };
                let v = validate(&w.state, &key, scope, now);
                if !v.code.is_valid() && v.license.is_none() {
                    assert!(v.plan.is_none() && v.standing.is_none(), "row {i}: a key not found reveals nothing");
                }
                (format!("validate {key:?} {scope:?} at {}", rel(Some(now))), v.code.as_str().to_string())
            }
        };
        assert_eq!(actual, expected, "row {i}: {what}");
    }
}

fn show(e: &EventKind) -> String {
    let name = e.type_name();
    match e {
        EventKind::LicenseIssued(l) => {
            format!("{name} expires_at={}{}", rel(l.expires_at), if l.trial { " trial" } else { "" })
        }
        EventKind::LicenseRenewed { expires_at, .. } => format!("{name} expires_at={}", rel(*expires_at)),
        EventKind::LicensePlanChanged { expires_at, plan, trial, .. } => {
            format!("{name} plan={plan} expires_at={}{}", rel(*expires_at), if *trial { " trial" } else { "" })
        }
        _ => name.into(),
    }
}

/// A fresh state with `events` folded in.
fn fold(events: &[Event]) -> State {
    let mut s = State::default();
    for e in events {
        s.apply(e).unwrap();
    }
    s
}
