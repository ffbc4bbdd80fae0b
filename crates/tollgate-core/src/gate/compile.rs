//! A gate definition compiled for evaluation: numbers, dates, versions, regexes and
//! address ranges parsed once, segment references resolved, case-insensitive values
//! lowered, hash prefixes built. Rebuilt whenever a definition is published or
//! loaded; never serialized.
//!
//! Semantics follow Unleash's reference engine (yggdrasil) where the client
//! specification leaves room: a constraint whose value cannot be parsed (a broken
//! regex, a `v`-prefixed semver, an unparsable number or date) never matches, even
//! when inverted; a strategy naming a missing segment never matches; an unknown
//! (custom) strategy never matches, since core cannot run vendor code.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use regex::{Regex, RegexBuilder};

use super::bucket;
use super::spec::GateSpec;
use super::unleash::{Constraint, Payload, Segment, Strategy};

/// Where a constraint, stickiness or override reads its value from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    UserId,
    SessionId,
    RemoteAddress,
    Environment,
    AppName,
    CurrentTime,
    LicenseId,
    Licensee,
    LicenseProduct,
    LicensePlan,
    LicenseStatus,
    Property(Box<str>),
}

impl Field {
    pub(crate) fn parse(name: &str) -> Field {
        match name {
            "userId" => Field::UserId,
            "sessionId" => Field::SessionId,
            "remoteAddress" => Field::RemoteAddress,
            "environment" => Field::Environment,
            "appName" => Field::AppName,
            "currentTime" => Field::CurrentTime,
            "licenseId" => Field::LicenseId,
            "licensee" => Field::Licensee,
            "licenseProduct" => Field::LicenseProduct,
            "licensePlan" => Field::LicensePlan,
            "licenseStatus" => Field::LicenseStatus,
            other => Field::Property(other.into()),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Cmp {
    Eq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl Cmp {
    fn holds<T: PartialOrd>(self, left: &T, right: &T) -> bool {
        match self {
            Cmp::Eq => left == right,
            Cmp::Lt => left < right,
            Cmp::Lte => left <= right,
            Cmp::Gt => left > right,
            Cmp::Gte => left >= right,
        }
    }
}

/// A set of strings: a scan for the few values typical of constraints, a binary
/// search beyond that.
#[derive(Debug)]
pub(crate) struct TextSet(Vec<Box<str>>);

const SCAN_LIMIT: usize = 8;

impl TextSet {
    fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut v: Vec<Box<str>> = values.into_iter().map(String::into_boxed_str).collect();
        if v.len() > SCAN_LIMIT {
            v.sort_unstable();
            v.dedup();
        }
        TextSet(v)
    }

    pub(crate) fn contains(&self, s: &str) -> bool {
        if self.0.len() > SCAN_LIMIT {
            self.0.binary_search_by(|x| (**x).cmp(s)).is_ok()
        } else {
            self.0.iter().any(|x| &**x == s)
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum TextOp {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug)]
pub(crate) enum Op {
    In(TextSet),
    NotIn(TextSet),
    Text {
        op: TextOp,
        values: Vec<Box<str>>,
        ignore_case: bool,
    },
    Num(Cmp, f64),
    /// Nanoseconds since the epoch.
    Date(Cmp, i128),
    Semver(Cmp, semver::Version),
    Regex(Regex),
    Cidr(Vec<IpNet>),
    /// Unparsable value or unknown operator: matches nothing, whatever `inverted` says.
    Never,
}

#[derive(Debug)]
pub(crate) struct CompiledConstraint {
    pub(crate) field: Field,
    pub(crate) op: Op,
    pub(crate) inverted: bool,
}

/// How a rollout picks the identifier it hashes.
#[derive(Debug)]
pub(crate) enum Stickiness {
    /// `userId`, else `sessionId`, else a random draw.
    Default,
    Random,
    Field(Field),
}

#[derive(Debug)]
pub(crate) enum Kind {
    Default,
    UserWithId(TextSet),
    /// gradualRolloutUserId / gradualRolloutSessionId.
    Gradual {
        field: Field,
        percent: u32,
        prefix: Box<[u8]>,
    },
    GradualRandom {
        percent: u32,
    },
    Flexible {
        rollout: u32,
        stickiness: Stickiness,
        prefix: Box<[u8]>,
        /// Whether the gate's schedule moves this rollout (see [`ramped`]).
        ramped: bool,
    },
    RemoteAddress(Vec<IpNet>),
    /// Lower-cased host names, matched against `properties.hostname`.
    Hostname(Vec<String>),
    Never,
}

#[derive(Debug)]
pub(crate) struct CompiledVariant {
    pub(crate) name: String,
    pub(crate) payload: Option<Payload>,
    pub(crate) weight: u32,
    pub(crate) overrides: Vec<(Field, TextSet)>,
}

/// A weighted list of variants with the stickiness and group they hash by.
#[derive(Debug, Default)]
pub(crate) struct Variants {
    pub(crate) list: Vec<CompiledVariant>,
    pub(crate) total: u32,
    /// `None` is Unleash's default: `userId`, else `sessionId`, else random.
    pub(crate) stickiness: Option<Field>,
    pub(crate) prefix: Box<[u8]>,
}

#[derive(Debug)]
pub(crate) struct CompiledStrategy {
    pub(crate) kind: Kind,
    /// The strategy's own constraints.
    pub(crate) constraints: Vec<CompiledConstraint>,
    /// The constraints of the segments it names, each segment compiled once for every
    /// gate of a state or ruleset and shared, so that naming one segment many times, in
    /// one gate or in many, does not multiply it.
    pub(crate) segments: Vec<Arc<[CompiledConstraint]>>,
    pub(crate) variants: Variants,
}

#[derive(Debug)]
pub(crate) struct CompiledDependency {
    pub(crate) gate: String,
    pub(crate) enabled: bool,
    pub(crate) variants: Option<Vec<String>>,
}

/// A gate ready to evaluate. Built by [`compile`]; see [`super::evaluate`].
#[derive(Debug)]
pub struct CompiledGate {
    pub(crate) version: u64,
    pub(crate) enabled: bool,
    pub(crate) license_required: bool,
    /// (product, feature) the license must be entitled to.
    pub(crate) feature: Option<(String, String)>,
    pub(crate) strategies: Vec<CompiledStrategy>,
    pub(crate) variants: Variants,
    pub(crate) dependencies: Vec<CompiledDependency>,
    /// (instant in ms, rollout), sorted by instant.
    pub(crate) schedule: Vec<(i64, u32)>,
}

impl CompiledGate {
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// A segment's constraints, compiled: shared by every gate that names the segment.
#[derive(Clone, Debug)]
pub struct CompiledSegment(Arc<[CompiledConstraint]>);

impl CompiledSegment {
    pub fn new(segment: &Segment) -> Self {
        CompiledSegment(segment.constraints.iter().map(compile_constraint).collect())
    }
}

/// Compiles a definition. `segment` resolves a segment id; a strategy naming one it
/// cannot resolve never matches (as in Unleash). Each segment is compiled once here;
/// a caller compiling many gates should use [`compile_with`] and compile each segment
/// once for all of them (a large segment named by many gates would otherwise be
/// compiled, and held, once per gate).
pub fn compile<'s>(spec: &GateSpec, version: u64, segment: impl Fn(u32) -> Option<&'s Segment>) -> CompiledGate {
    let mut compiled: BTreeMap<u32, Option<CompiledSegment>> = BTreeMap::new();
    compile_with(spec, version, |id| {
        compiled.entry(id).or_insert_with(|| segment(id).map(CompiledSegment::new)).clone()
    })
}

/// [`compile`] with segments compiled already.
pub fn compile_with(
    spec: &GateSpec,
    version: u64,
    mut segment: impl FnMut(u32) -> Option<CompiledSegment>,
) -> CompiledGate {
    let name = spec.key.as_str();
    let mut segment = |id: u32| segment(id).map(|s| s.0);
    CompiledGate {
        version,
        enabled: spec.enabled,
        license_required: spec.license_required,
        feature: spec.feature.as_ref().map(|f| (f.product.to_string(), f.feature.to_string())),
        strategies: spec.strategies.iter().map(|s| compile_strategy(s, name, ramped(spec, s), &mut segment)).collect(),
        variants: variants(
            spec.variants.iter().map(|v| CompiledVariant {
                name: v.name.clone(),
                payload: v.payload.clone(),
                weight: v.weight,
                overrides: v
                    .overrides
                    .iter()
                    .map(|o| (Field::parse(&o.context_name), TextSet::new(o.values.iter().cloned())))
                    .collect(),
            }),
            spec.variants.first().and_then(|v| v.stickiness.as_deref()),
            name,
        ),
        dependencies: spec
            .dependencies
            .iter()
            .map(|d| CompiledDependency {
                gate: d.feature.clone(),
                enabled: d.enabled.unwrap_or(true),
                variants: d.variants.clone(),
            })
            .collect(),
        schedule: spec.schedule.iter().map(|s| (s.at.millis(), u32::from(s.rollout))).collect(),
    }
}

fn variants(list: impl Iterator<Item = CompiledVariant>, stickiness: Option<&str>, group: &str) -> Variants {
    let list: Vec<CompiledVariant> = list.collect();
    Variants {
        total: list.iter().fold(0u32, |t, v| t.saturating_add(v.weight)),
        list,
        stickiness: match stickiness {
            None | Some("default") => None,
            Some(s) => Some(Field::parse(s)),
        },
        prefix: bucket::prefix(group),
    }
}

/// Whether a schedule moves strategy `s`: the flexible rollouts open to everyone (no
/// constraints, no segments), the gate's ramp. Cohorts a gate lets in by constraints or
/// segments keep their own rollout as the ramp moves (the ramp starting at 10% used to
/// cut an opt-in cohort at 100% down to 10% too); a gate whose flexible rollouts are all
/// targeted has them all moved.
fn ramped(spec: &GateSpec, s: &Strategy) -> bool {
    let open = |s: &Strategy| s.constraints.is_empty() && s.segments.is_empty();
    let flexible = |s: &Strategy| s.name == "flexibleRollout";
    flexible(s) && (open(s) || !spec.strategies.iter().any(|o| flexible(o) && open(o)))
}

fn compile_strategy(
    s: &Strategy,
    gate: &str,
    ramped: bool,
    segment: &mut impl FnMut(u32) -> Option<Arc<[CompiledConstraint]>>,
) -> CompiledStrategy {
    let param = |k: &str| s.parameters.get(k).map(String::as_str);
    let percent = |k: &str| param(k).and_then(|p| p.parse::<u8>().ok()).map(u32::from);
    let group = param("groupId").unwrap_or(gate);
    let mut kind = match s.name.as_str() {
        "default" => Kind::Default,
        "userWithId" => match param("userIds") {
            Some(ids) => Kind::UserWithId(TextSet::new(ids.split(',').map(|i| i.trim().to_string()))),
            None => Kind::Never,
        },
        "gradualRolloutUserId" | "gradualRolloutSessionId" => match (percent("percentage"), param("groupId")) {
            (Some(percent), Some(group)) => Kind::Gradual {
                field: if s.name == "gradualRolloutUserId" { Field::UserId } else { Field::SessionId },
                percent,
                prefix: bucket::prefix(group),
            },
            _ => Kind::Never,
        },
        "gradualRolloutRandom" => match percent("percentage") {
            Some(percent) => Kind::GradualRandom { percent },
            None => Kind::Never,
        },
        "flexibleRollout" => match percent("rollout") {
            Some(rollout) => Kind::Flexible {
                rollout,
                stickiness: match param("stickiness") {
                    None | Some("default") => Stickiness::Default,
                    Some("random") => Stickiness::Random,
                    Some(f) => Stickiness::Field(Field::parse(f)),
                },
                prefix: bucket::prefix(group),
                ramped,
            },
            None => Kind::Never,
        },
        "remoteAddress" => match param("IPs") {
            Some(ips) => Kind::RemoteAddress(ips.split(',').filter_map(|ip| net(ip.trim())).collect()),
            None => Kind::Never,
        },
        "applicationHostname" => {
            Kind::Hostname(param("hostNames").unwrap_or("").split(',').map(|h| h.trim().to_lowercase()).collect())
        }
        _ => Kind::Never,
    };
    let constraints: Vec<CompiledConstraint> = s.constraints.iter().map(compile_constraint).collect();
    let mut segments: Vec<Arc<[CompiledConstraint]>> = Vec::new();
    for (i, id) in s.segments.iter().enumerate() {
        if s.segments[..i].contains(id) {
            continue;
        }
        match segment(*id) {
            Some(seg) => segments.push(seg),
            None => kind = Kind::Never,
        }
    }
    let stickiness = param("stickiness").unwrap_or("default");
    CompiledStrategy {
        kind,
        constraints,
        segments,
        variants: variants(
            s.variants.iter().map(|v| CompiledVariant {
                name: v.name.clone(),
                payload: v.payload.clone(),
                weight: v.weight,
                overrides: Vec::new(),
            }),
            Some(stickiness),
            group,
        ),
    }
}

/// An address or a range: a bare address is a range of one.
fn net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>().ok().or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The most a compiled regex may take, and the most its lazy DFA's cache may grow to
/// while matching, so that one definition cannot exhaust memory (with at most
/// [`MAX_REGEX`] regexes in a definition).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const REGEX_DFA_LIMIT: usize = 256 * 1024;

/// `REGEX` constraints in one definition (a gate's strategies together, or a segment).
pub(crate) const MAX_REGEX: usize = 16;

fn regex(c: &Constraint) -> Result<Regex, regex::Error> {
    RegexBuilder::new(c.value.as_deref().unwrap_or(""))
        .case_insensitive(c.case_insensitive)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_LIMIT)
        .build()
}

/// Why a `REGEX` constraint's pattern does not compile, if it does not. Evaluation
/// takes such a pattern to match nothing, as Unleash does; a definition written by
/// hand is told instead.
pub(crate) fn regex_error(c: &Constraint) -> Option<String> {
    (c.operator == "REGEX").then(|| regex(c).err().map(|e| e.to_string())).flatten()
}

fn compile_constraint(c: &Constraint) -> CompiledConstraint {
    let value = c.value.as_deref().unwrap_or("");
    let cmp = |op: &str| match op {
        "NUM_EQ" | "SEMVER_EQ" => Cmp::Eq,
        "NUM_LT" | "SEMVER_LT" | "DATE_BEFORE" => Cmp::Lt,
        "NUM_LTE" | "SEMVER_LTE" => Cmp::Lte,
        "NUM_GT" | "SEMVER_GT" | "DATE_AFTER" => Cmp::Gt,
        _ => Cmp::Gte,
    };
    let text = |op| {
        let values = c.values.iter().map(|v| if c.case_insensitive { v.to_lowercase() } else { v.clone() });
        Op::Text { op, values: values.map(String::into_boxed_str).collect(), ignore_case: c.case_insensitive }
    };
    let op = match c.operator.as_str() {
        "IN" => Op::In(TextSet::new(c.values.iter().cloned())),
        "NOT_IN" => Op::NotIn(TextSet::new(c.values.iter().cloned())),
        "STR_CONTAINS" => text(TextOp::Contains),
        "STR_STARTS_WITH" => text(TextOp::StartsWith),
        "STR_ENDS_WITH" => text(TextOp::EndsWith),
        o @ ("NUM_EQ" | "NUM_LT" | "NUM_LTE" | "NUM_GT" | "NUM_GTE") => {
            value.trim().parse::<f64>().map_or(Op::Never, |n| Op::Num(cmp(o), n))
        }
        o @ ("DATE_AFTER" | "DATE_BEFORE") => date_nanos(value).map_or(Op::Never, |d| Op::Date(cmp(o), d)),
        o @ ("SEMVER_EQ" | "SEMVER_LT" | "SEMVER_LTE" | "SEMVER_GT" | "SEMVER_GTE") => {
            // Unleash refuses a leading `v` rather than guess.
            match semver::Version::parse(value) {
                Ok(v) if !value.starts_with('v') => Op::Semver(cmp(o), v),
                _ => Op::Never,
            }
        }
        "REGEX" => regex(c).map_or(Op::Never, Op::Regex),
        "IN_CIDR" => Op::Cidr(c.values.iter().filter_map(|v| net(v.trim())).collect()),
        _ => Op::Never,
    };
    CompiledConstraint { field: Field::parse(&c.context_name), op, inverted: c.inverted }
}

/// RFC 3339 instant as nanoseconds since the epoch.
pub(crate) fn date_nanos(s: &str) -> Option<i128> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|d| d.unix_timestamp_nanos())
}

impl CompiledConstraint {
    /// Whether the constraint holds for a context value (`None`: the field is absent).
    pub(crate) fn holds(&self, value: Option<&str>) -> bool {
        let matched = match (&self.op, value) {
            (Op::Never, _) => return false,
            (Op::NotIn(set), v) => !v.is_some_and(|v| set.contains(v)),
            (_, None) => false,
            (Op::In(set), Some(v)) => set.contains(v),
            (Op::Text { op, values, ignore_case }, Some(v)) => {
                let lowered;
                let v = if *ignore_case {
                    lowered = v.to_lowercase();
                    lowered.as_str()
                } else {
                    v
                };
                values.iter().any(|x| match op {
                    TextOp::Contains => v.contains(&**x),
                    TextOp::StartsWith => v.starts_with(&**x),
                    TextOp::EndsWith => v.ends_with(&**x),
                })
            }
            (Op::Num(cmp, n), Some(v)) => v.trim().parse::<f64>().is_ok_and(|x| match cmp {
                Cmp::Eq => (x - n).abs() < f64::EPSILON,
                _ => cmp.holds(&x, n),
            }),
            (Op::Date(cmp, d), Some(v)) => date_nanos(v).is_some_and(|x| cmp.holds(&x, d)),
            (Op::Semver(cmp, s), Some(v)) => semver::Version::parse(v).is_ok_and(|x| cmp.holds(&x, s)),
            (Op::Regex(r), Some(v)) => r.is_match(v),
            (Op::Cidr(nets), Some(v)) => {
                v.trim().parse::<IpAddr>().is_ok_and(|ip| nets.iter().any(|n| n.contains(&ip)))
            }
        };
        matched != self.inverted
    }
}

pub(crate) fn remote_address_matches(nets: &[IpNet], value: Option<&str>) -> bool {
    value.and_then(|v| v.trim().parse::<IpAddr>().ok()).is_some_and(|ip| nets.iter().any(|n| n.contains(&ip)))
}
