//! Evaluating a gate for a subject: license binding first, then dependencies,
//! strategies and variants, exactly as Unleash would for the same definition.
//!
//! The evaluator reads a [`Rules`] lookup and facts about the subject's license, not
//! the server's `State`, so that the SDK evaluates locally from a signed ruleset with
//! the same code. It allocates nothing on the common path: the answer borrows names
//! and payloads from the compiled gate.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::bucket;
use super::compile::{
    CompiledGate, CompiledSegment, CompiledStrategy, CompiledVariant, Field, Kind, Op, Stickiness, Variants,
    compile_with,
};
use super::spec::GateSpec;
use super::unleash::{FeaturesDocument, Payload, Segment};
use crate::license::Standing;
use crate::state::State;
use crate::timestamp::Timestamp;
use crate::validate::{Code, Scope, validate};

/// Who is asking, in Unleash's context shape plus the license key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_key: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "super::unleash::text_map")]
    pub properties: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// Where the subject's license stands, as far as a gate cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseStanding {
    Active,
    Grace,
    Expired,
    Suspended,
    Revoked,
    NotFound,
    Malformed,
}

impl LicenseStanding {
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseStanding::Active => "active",
            LicenseStanding::Grace => "grace",
            LicenseStanding::Expired => "expired",
            LicenseStanding::Suspended => "suspended",
            LicenseStanding::Revoked => "revoked",
            LicenseStanding::NotFound => "not_found",
            LicenseStanding::Malformed => "malformed",
        }
    }
}

/// What a gate may know about the subject's license. On the server it comes from
/// the state ([`LicenseFacts::from_state`]); in the SDK from a validation or token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseFacts {
    /// Effective features (plan plus overrides); empty unless the license is valid.
    #[serde(default)]
    pub features: BTreeSet<String>,
    #[serde(default)]
    pub license_id: String,
    #[serde(default)]
    pub licensee: String,
    #[serde(default)]
    pub plan: String,
    #[serde(default)]
    pub product: String,
    pub standing: LicenseStanding,
}

impl LicenseFacts {
    /// Facts of a license that cannot be used: its standing, and nothing else.
    pub fn unresolved(standing: LicenseStanding) -> Self {
        LicenseFacts {
            features: BTreeSet::new(),
            license_id: String::new(),
            licensee: String::new(),
            plan: String::new(),
            product: String::new(),
            standing,
        }
    }

    /// The facts the server knows about a license key at `now`, through the same
    /// validation (and overrides) as `POST /v1/validate`.
    pub fn from_state(state: &State, key_text: &str, now: Timestamp) -> LicenseFacts {
        let v = validate(state, key_text, Scope::default(), now);
        let standing = match (v.code, v.standing) {
            (Code::MalformedKey, _) => LicenseStanding::Malformed,
            (_, None) => LicenseStanding::NotFound,
            (_, Some(Standing::Active)) => LicenseStanding::Active,
            (_, Some(Standing::Grace { .. })) => LicenseStanding::Grace,
            (_, Some(Standing::Expired)) => LicenseStanding::Expired,
            (_, Some(Standing::Suspended)) => LicenseStanding::Suspended,
            (_, Some(Standing::Revoked)) => LicenseStanding::Revoked,
        };
        let (Some(license), Some(plan)) = (v.license, v.plan) else { return Self::unresolved(standing) };
        let features = if v.code.is_valid() {
            let overrides = state.models(license.id.as_str()).and_then(|m| m.overrides.as_ref());
            let effective = crate::overrides::Effective { plan, overrides };
            effective.features().map(|f| f.to_string()).collect()
        } else {
            BTreeSet::new()
        };
        LicenseFacts {
            features,
            license_id: license.id.to_string(),
            licensee: license.licensee.clone(),
            plan: license.plan.to_string(),
            product: license.product.to_string(),
            standing,
        }
    }

    /// The facts for a context's `licenseKey`, if it has one.
    pub fn for_context(state: &State, ctx: &Context, now: Timestamp) -> Option<LicenseFacts> {
        ctx.license_key.as_deref().map(|k| Self::from_state(state, k, now))
    }
}

/// Why a gate's answer is what it is; OpenFeature's reasons plus `UNLICENSED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// On, and nothing about the subject was consulted.
    Static,
    /// A constraint, id list, address or host matched.
    TargetingMatch,
    /// A percentage put the subject in.
    Split,
    /// The gate is disabled (killed).
    Disabled,
    /// No strategy matched, or a dependency is not met.
    Default,
    /// The license binding refused the subject; `license_code` says why.
    Unlicensed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Disabled => "DISABLED",
            Reason::Default => "DEFAULT",
            Reason::Unlicensed => "UNLICENSED",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LicenseCode {
    LicenseMissing,
    LicenseMalformed,
    LicenseNotFound,
    LicenseExpired,
    LicenseSuspended,
    LicenseRevoked,
    NotEntitled,
}

impl LicenseCode {
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseCode::LicenseMissing => "LICENSE_MISSING",
            LicenseCode::LicenseMalformed => "LICENSE_MALFORMED",
            LicenseCode::LicenseNotFound => "LICENSE_NOT_FOUND",
            LicenseCode::LicenseExpired => "LICENSE_EXPIRED",
            LicenseCode::LicenseSuspended => "LICENSE_SUSPENDED",
            LicenseCode::LicenseRevoked => "LICENSE_REVOKED",
            LicenseCode::NotEntitled => "NOT_ENTITLED",
        }
    }
}

/// The variant served, in Unleash's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VariantAnswer<'r> {
    pub name: &'r str,
    pub enabled: bool,
    pub feature_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'r Payload>,
}

/// A gate's answer for one subject at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Evaluation<'r> {
    pub enabled: bool,
    pub reason: Reason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_code: Option<LicenseCode>,
    pub variant: VariantAnswer<'r>,
    /// The gate version that answered.
    pub version: u64,
}

/// Where the evaluator finds compiled gates: the server's state or an SDK's ruleset.
pub trait Rules {
    fn gate(&self, key: &str) -> Option<&CompiledGate>;
}

/// The serialized ruleset the server signs and ships to SDKs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesetDoc {
    pub gates: Vec<GateSpec>,
    #[serde(default)]
    pub segments: Vec<Segment>,
    /// Gate key → version, for answers that say which version decided.
    #[serde(default)]
    pub versions: BTreeMap<String, u64>,
}

/// Compiled gates for local evaluation (SDK, benches, the conformance suite).
#[derive(Debug, Default)]
pub struct Ruleset {
    gates: HashMap<Arc<str>, CompiledGate>,
}

impl Ruleset {
    pub fn new(doc: &RulesetDoc) -> Self {
        // Each segment compiled once, for every gate that names it.
        let segments: HashMap<u32, CompiledSegment> =
            doc.segments.iter().map(|s| (s.id, CompiledSegment::new(s))).collect();
        let gates = doc
            .gates
            .iter()
            .map(|g| {
                let version = doc.versions.get(g.key.as_str()).copied().unwrap_or(0);
                (Arc::from(g.key.as_str()), compile_with(g, version, |id| segments.get(&id).cloned()))
            })
            .collect();
        Ruleset { gates }
    }

    /// An Unleash document as Unleash evaluates it: no license binding. Features whose
    /// name is not a valid gate key are skipped (they could not be stored either).
    pub fn from_unleash(doc: &FeaturesDocument) -> Self {
        let gates = doc.features.iter().filter_map(|f| GateSpec::from_unleash(f, None).ok()).collect();
        Self::new(&RulesetDoc { gates, segments: doc.segments.clone(), versions: BTreeMap::new() })
    }

    pub fn len(&self) -> usize {
        self.gates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gates.is_empty()
    }
}

impl Rules for Ruleset {
    fn gate(&self, key: &str) -> Option<&CompiledGate> {
        self.gates.get(key)
    }
}

/// The subject and the instant, with values resolved on demand.
struct Env<'a> {
    ctx: &'a Context,
    license: Option<&'a LicenseFacts>,
    now: Timestamp,
    random: u32,
    /// Random draws made so far: each draw is its own, as Unleash draws anew for every
    /// random strategy, dependency and variant.
    draws: std::cell::Cell<u32>,
}

impl<'a> Env<'a> {
    /// The next random draw: the caller's for the first, then draws derived from it
    /// (murmur3's finalizer over the draw's number), so that two random strategies
    /// are two chances, not one.
    fn draw(&self) -> u32 {
        let n = self.draws.get();
        self.draws.set(n.wrapping_add(1));
        if n == 0 {
            return self.random;
        }
        let mut h = self.random ^ n.wrapping_mul(0x9E37_79B9);
        h ^= h >> 16;
        h = h.wrapping_mul(0x85EB_CA6B);
        h ^= h >> 13;
        h = h.wrapping_mul(0xC2B2_AE35);
        h ^ (h >> 16)
    }

    fn field(&self, f: &Field) -> Option<&'a str> {
        let c = self.ctx;
        let lic = |get: fn(&'a LicenseFacts) -> &'a str| self.license.map(get).filter(|s| !s.is_empty());
        match f {
            Field::UserId => c.user_id.as_deref(),
            Field::SessionId => c.session_id.as_deref(),
            Field::RemoteAddress => c.remote_address.as_deref(),
            Field::Environment => c.environment.as_deref(),
            Field::AppName => c.app_name.as_deref(),
            Field::CurrentTime => c.current_time.as_deref(),
            Field::LicenseId => lic(|l| &l.license_id),
            Field::Licensee => lic(|l| &l.licensee),
            Field::LicenseProduct => lic(|l| &l.product),
            Field::LicensePlan => lic(|l| &l.plan),
            Field::LicenseStatus => self.license.map(|l| l.standing.as_str()),
            Field::Property(name) => c.properties.get(&**name).map(String::as_str),
        }
    }

    fn constraints_hold(&self, s: &CompiledStrategy) -> bool {
        s.constraints.iter().chain(s.segments.iter().flat_map(|seg| seg.iter())).all(|c| {
            match (&c.field, &c.op, self.ctx.current_time.as_ref()) {
                // Without a currentTime in the context, dates compare against the request time.
                (Field::CurrentTime, Op::Date(cmp, d), None) => {
                    cmp_holds(*cmp, i128::from(self.now.millis()) * 1_000_000, *d) != c.inverted
                }
                _ => c.holds(self.field(&c.field)),
            }
        })
    }
}

fn cmp_holds(cmp: super::compile::Cmp, left: i128, right: i128) -> bool {
    use super::compile::Cmp;
    match cmp {
        Cmp::Eq => left == right,
        Cmp::Lt => left < right,
        Cmp::Lte => left <= right,
        Cmp::Gt => left > right,
        Cmp::Gte => left >= right,
    }
}

/// The rollout a flexible strategy serves at `now`: the schedule's last step that has
/// started, else its own.
fn scheduled(gate: &CompiledGate, own: u32, now: Timestamp) -> u32 {
    let now = now.millis();
    gate.schedule.iter().take_while(|(at, _)| *at <= now).last().map_or(own, |(_, r)| *r)
}

/// Whether one strategy lets the subject in, and why.
fn strategy_matches(gate: &CompiledGate, s: &CompiledStrategy, env: &Env<'_>) -> Option<Reason> {
    let targeted = !s.constraints.is_empty() || s.segments.iter().any(|seg| !seg.is_empty());
    let reason = match &s.kind {
        Kind::Never => return None,
        Kind::Default => {
            if targeted {
                Reason::TargetingMatch
            } else {
                Reason::Static
            }
        }
        Kind::UserWithId(ids) => {
            if !env.ctx.user_id.as_deref().is_some_and(|u| ids.contains(u)) {
                return None;
            }
            Reason::TargetingMatch
        }
        Kind::Gradual { field, percent, prefix } => {
            let id = env.field(field)?;
            if bucket::normalized(prefix, id, 100, 0)? > *percent {
                return None;
            }
            Reason::Split
        }
        Kind::GradualRandom { percent } => {
            if bucket::random_percent(env.draw()) > *percent {
                return None;
            }
            Reason::Split
        }
        Kind::Flexible { rollout, stickiness, prefix, ramped } => {
            let rollout = if *ramped { scheduled(gate, *rollout, env.now) } else { *rollout };
            let id = match stickiness {
                Stickiness::Default => env.ctx.user_id.as_deref().or(env.ctx.session_id.as_deref()),
                Stickiness::Random => None,
                Stickiness::Field(f) => Some(env.field(f)?),
            };
            let bucket = match id {
                Some(id) => bucket::normalized(prefix, id, 100, 0)?,
                None => bucket::random_percent(env.draw()),
            };
            if bucket > rollout {
                return None;
            }
            match (rollout >= 100, targeted) {
                (false, _) => Reason::Split,
                (true, false) => Reason::Static,
                (true, true) => Reason::TargetingMatch,
            }
        }
        Kind::RemoteAddress(nets) => {
            if !super::compile::remote_address_matches(nets, env.ctx.remote_address.as_deref()) {
                return None;
            }
            Reason::TargetingMatch
        }
        Kind::Hostname(hosts) => {
            let host = env.ctx.properties.get("hostname")?.to_lowercase();
            if !hosts.contains(&host) {
                return None;
            }
            Reason::TargetingMatch
        }
    };
    env.constraints_hold(s).then_some(reason)
}

/// The first strategy that lets the subject in (Unleash's `or`), ignoring whether the
/// gate itself is enabled. No strategies at all means on for everyone.
fn decide<'g>(gate: &'g CompiledGate, env: &Env<'_>) -> Option<(Reason, Option<&'g CompiledStrategy>)> {
    if gate.strategies.is_empty() {
        return Some((Reason::Static, None));
    }
    gate.strategies.iter().find_map(|s| strategy_matches(gate, s, env).map(|r| (r, Some(s))))
}

fn pick<'v>(v: &'v Variants, env: &Env<'_>) -> Option<&'v CompiledVariant> {
    if v.list.is_empty() {
        return None;
    }
    if let Some(found) = v
        .list
        .iter()
        .find(|var| var.overrides.iter().any(|(f, values)| env.field(f).is_some_and(|x| values.contains(x))))
    {
        return Some(found);
    }
    let seed = match &v.stickiness {
        None => env.ctx.user_id.as_deref().or(env.ctx.session_id.as_deref()),
        Some(f) => env.field(f),
    };
    let target = match seed {
        Some(id) => bucket::normalized(&v.prefix, id, v.total, bucket::VARIANT_SEED)?,
        None if v.total == 0 => return None,
        None => env.draw() % v.total + 1,
    };
    let mut sum = 0u32;
    v.list.iter().find(|var| {
        sum = sum.saturating_add(var.weight);
        sum >= target
    })
}

/// The variant a decision serves: the matched strategy's own variants when it has
/// any, else the gate's.
fn variant_of<'g>(
    gate: &'g CompiledGate,
    matched: Option<&'g CompiledStrategy>,
    env: &Env<'_>,
) -> Option<&'g CompiledVariant> {
    match matched {
        Some(s) if !s.variants.list.is_empty() => pick(&s.variants, env),
        _ => pick(&gate.variants, env),
    }
}

fn license_refusal(gate: &CompiledGate, license: Option<&LicenseFacts>) -> Option<LicenseCode> {
    if !gate.license_required {
        return None;
    }
    let Some(l) = license else { return Some(LicenseCode::LicenseMissing) };
    let refused = match l.standing {
        LicenseStanding::Active | LicenseStanding::Grace => None,
        LicenseStanding::Expired => Some(LicenseCode::LicenseExpired),
        LicenseStanding::Suspended => Some(LicenseCode::LicenseSuspended),
        LicenseStanding::Revoked => Some(LicenseCode::LicenseRevoked),
        LicenseStanding::NotFound => Some(LicenseCode::LicenseNotFound),
        LicenseStanding::Malformed => Some(LicenseCode::LicenseMalformed),
    };
    refused.or_else(|| match &gate.feature {
        Some((product, feature)) if l.product != *product || !l.features.contains(feature) => {
            Some(LicenseCode::NotEntitled)
        }
        _ => None,
    })
}

/// A parent's answer as a dependency sees it: enabled, and the variant it would
/// serve (Unleash resolves the parent's variant whether or not it is enabled).
fn parent_satisfies<R: Rules + ?Sized>(rules: &R, dep: &super::compile::CompiledDependency, env: &Env<'_>) -> bool {
    let Some(parent) = rules.gate(&dep.gate) else { return false };
    // Unleash evaluates one level of dependencies only.
    if !parent.dependencies.is_empty() {
        return false;
    }
    let decision = decide(parent, env);
    let enabled = parent.enabled && license_refusal(parent, env.license).is_none() && decision.is_some();
    if let Some(wanted) = dep.variants.as_ref().filter(|w| !w.is_empty()) {
        let matched = decision.and_then(|(_, s)| s);
        if let Some(v) = variant_of(parent, matched, env)
            && !wanted.contains(&v.name)
        {
            return false;
        }
    }
    enabled == dep.enabled
}

const DISABLED_VARIANT: &str = "disabled";

/// Evaluates gate `key` for a subject. `license` is what is known about the subject's
/// license (`None`: none given). `random` is a draw from the caller's random source,
/// used where Unleash would draw (random rollouts, no id to stick to). `None` when
/// the gate does not exist.
pub fn evaluate<'r, R: Rules + ?Sized>(
    rules: &'r R,
    key: &str,
    ctx: &Context,
    license: Option<&LicenseFacts>,
    now: Timestamp,
    random: u32,
) -> Option<Evaluation<'r>> {
    let gate = rules.gate(key)?;
    Some(evaluate_gate(rules, gate, ctx, license, now, random))
}

/// [`evaluate`] for a gate already in hand (a proposed definition in a preview).
pub fn evaluate_gate<'r, R: Rules + ?Sized>(
    rules: &R,
    gate: &'r CompiledGate,
    ctx: &Context,
    license: Option<&LicenseFacts>,
    now: Timestamp,
    random: u32,
) -> Evaluation<'r> {
    let env = Env { ctx, license, now, random, draws: std::cell::Cell::new(0) };
    let off = |reason, license_code| Evaluation {
        enabled: false,
        reason,
        license_code,
        variant: VariantAnswer { name: DISABLED_VARIANT, enabled: false, feature_enabled: false, payload: None },
        version: gate.version,
    };
    if !gate.enabled {
        return off(Reason::Disabled, None);
    }
    if let Some(code) = license_refusal(gate, license) {
        return off(Reason::Unlicensed, Some(code));
    }
    if !gate.dependencies.iter().all(|d| parent_satisfies(rules, d, &env)) {
        return off(Reason::Default, None);
    }
    let Some((reason, matched)) = decide(gate, &env) else { return off(Reason::Default, None) };
    let variant = match variant_of(gate, matched, &env) {
        Some(v) => VariantAnswer { name: &v.name, enabled: true, feature_enabled: true, payload: v.payload.as_ref() },
        None => VariantAnswer { name: DISABLED_VARIANT, enabled: false, feature_enabled: true, payload: None },
    };
    Evaluation { enabled: true, reason, license_code: None, variant, version: gate.version }
}
