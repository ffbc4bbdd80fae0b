//! A gate's definition as vendors write it and the ledger stores it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

use super::unleash::{Dependency, Strategy, UnleashFeature, Variant};
use crate::ids::{FeatureKey, IdError, ProductKey};
use crate::refusal::{Refusal, RefusalKind};
use crate::timestamp::Timestamp;

const MAX_KEY: usize = 200;
const MAX_DESCRIPTION: usize = 2_000;
const MAX_STRATEGIES: usize = 100;
const MAX_CONSTRAINTS: usize = 100;
const MAX_VALUES: usize = 10_000;
const MAX_VARIANTS: usize = 100;
const MAX_SCHEDULE: usize = 100;
const MAX_DEPENDENCIES: usize = 20;
/// Segments one strategy may name (Unleash's default limit is 5), and all strategies
/// together: a reference costs a few bytes and can stand for a thousand constraints,
/// so the definition's size does not bound it.
const MAX_STRATEGY_SEGMENTS: usize = 10;
const MAX_GATE_SEGMENTS: usize = 50;
/// The canonical JSON of one definition; it is stored whole in every version's event.
pub const MAX_GATE_BYTES: usize = 256 * 1024;
/// Unleash's variant weights are per mille of 1000; anything that sums beyond this is a typo.
const MAX_WEIGHT: u32 = 1_000_000;

/// A gate's name. Unleash flag names are free text (including UTF-8), so this is
/// looser than a catalog slug: printable, no `/` (it is a URL path segment).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct GateKey(Arc<str>);

impl GateKey {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > MAX_KEY || s.chars().any(|c| c.is_control() || c == '/') || s.trim() != s {
            return Err(IdError {
                what: "gate key",
                value: s.into(),
                rule: "use 1 to 200 bytes of printable text without '/' or surrounding spaces",
            });
        }
        Ok(Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl std::borrow::Borrow<str> for GateKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for GateKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The catalog feature a gate is bound to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureRef {
    pub feature: FeatureKey,
    pub product: ProductKey,
}

/// From `at` on, the gate's ramp serves `rollout` percent: its flexible rollouts open to
/// everyone (no constraints or segments), or all of them when every one is targeted.
/// Cohorts let in by constraints or segments keep their own rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleStep {
    pub at: Timestamp,
    pub rollout: u8,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A gate's whole definition: what `PUT /v1/gates/{key}` takes and every version
/// records. Fields are in sorted order (see the RULE in `event`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Dependency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<FeatureRef>,
    pub key: GateKey,
    /// `false` serves subjects without a valid license too (graceful degradation).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub license_required: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<ScheduleStep>,
    #[serde(default)]
    pub strategies: Vec<Strategy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
}

/// Keys no gate may take: `GET /v1/gates/{key}` could never reach it, because the name
/// is one of the gate endpoints' own paths or a path segment clients rewrite.
pub const RESERVED_KEYS: [&str; 4] = ["ruleset", "import", ".", ".."];

fn invalid(key: &GateKey, detail: impl fmt::Display) -> Refusal {
    Refusal::new(RefusalKind::Invalid, "INVALID_GATE", format!("gate '{key}': {detail}"))
}

impl GateSpec {
    /// An imported Unleash feature: evaluated exactly as Unleash would (no license)
    /// unless it is mapped to a catalog feature.
    pub fn from_unleash(f: &UnleashFeature, feature: Option<FeatureRef>) -> Result<Self, Refusal> {
        let key =
            GateKey::parse(&f.name).map_err(|e| Refusal::new(RefusalKind::Invalid, "INVALID_GATE", e.to_string()))?;
        Ok(GateSpec {
            dependencies: f.dependencies.clone(),
            description: f.description.clone().filter(|d| !d.is_empty()),
            enabled: f.enabled,
            license_required: feature.is_some(),
            feature,
            key,
            schedule: Vec::new(),
            strategies: f.strategies.clone(),
            variants: f.variants.clone(),
        })
    }

    /// Size limits and the key: what any stored definition, imported or not, must
    /// respect.
    pub(crate) fn check_limits(&self) -> Result<(), Refusal> {
        let k = &self.key;
        if RESERVED_KEYS.contains(&k.as_str()) {
            return Err(invalid(
                k,
                "this key is reserved: /v1/gates/ruleset and /v1/gates/import are endpoints, and clients rewrite '.' and '..' in paths, so such a gate could not be read back at /v1/gates/{key}; choose another key",
            ));
        }
        if self.description.as_ref().is_some_and(|d| d.len() > MAX_DESCRIPTION) {
            return Err(invalid(k, format!("description is longer than {MAX_DESCRIPTION} bytes")));
        }
        if self.strategies.len() > MAX_STRATEGIES {
            return Err(invalid(k, format!("at most {MAX_STRATEGIES} strategies")));
        }
        if self.strategies.iter().any(|s| s.constraints.len() > MAX_CONSTRAINTS) {
            return Err(invalid(k, format!("at most {MAX_CONSTRAINTS} constraints per strategy")));
        }
        if self.strategies.iter().any(|s| s.segments.len() > MAX_STRATEGY_SEGMENTS) {
            return Err(invalid(k, format!("at most {MAX_STRATEGY_SEGMENTS} segments per strategy")));
        }
        if self.strategies.iter().map(|s| s.segments.len()).sum::<usize>() > MAX_GATE_SEGMENTS {
            return Err(invalid(k, format!("at most {MAX_GATE_SEGMENTS} segment references across strategies")));
        }
        let regexes = self.strategies.iter().flat_map(|s| &s.constraints).filter(|c| c.operator == "REGEX").count();
        if regexes > super::compile::MAX_REGEX {
            return Err(invalid(
                k,
                format!("at most {} REGEX constraints across strategies, not {regexes}", super::compile::MAX_REGEX),
            ));
        }
        if self.strategies.iter().flat_map(|s| &s.constraints).any(|c| c.values.len() > MAX_VALUES) {
            return Err(invalid(k, format!("at most {MAX_VALUES} values per constraint")));
        }
        if self.variants.len() > MAX_VARIANTS || self.strategies.iter().any(|s| s.variants.len() > MAX_VARIANTS) {
            return Err(invalid(k, format!("at most {MAX_VARIANTS} variants")));
        }
        if self.schedule.len() > MAX_SCHEDULE {
            return Err(invalid(k, format!("at most {MAX_SCHEDULE} schedule steps")));
        }
        if self.dependencies.len() > MAX_DEPENDENCIES {
            return Err(invalid(k, format!("at most {MAX_DEPENDENCIES} dependencies")));
        }
        let size = serde_json::to_vec(self).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > MAX_GATE_BYTES {
            return Err(invalid(k, format!("definition is {size} bytes; at most {MAX_GATE_BYTES}")));
        }
        Ok(())
    }

    /// What a definition written by hand must also get right: rollouts are whole
    /// percentages, weights add up, the schedule runs forward. (An import keeps what
    /// Unleash accepted, so it is only held to [`Self::check_limits`].)
    pub(crate) fn check(&self) -> Result<(), Refusal> {
        self.check_limits()?;
        let k = &self.key;
        for s in &self.strategies {
            for p in ["rollout", "percentage"] {
                if let Some(v) = s.parameters.get(p)
                    && !v.parse::<u8>().is_ok_and(|n| n <= 100)
                {
                    return Err(invalid(k, format!("strategy '{}': {p} must be 0 to 100, not '{v}'", s.name)));
                }
            }
            if s.name == "flexibleRollout" && !s.parameters.contains_key("rollout") {
                return Err(invalid(k, "flexibleRollout needs a rollout parameter"));
            }
            for c in &s.constraints {
                check_operator(k, &c.operator)?;
                if c.context_name.is_empty() {
                    return Err(invalid(k, "a constraint needs a contextName"));
                }
                if let Some(why) = super::compile::regex_error(c) {
                    return Err(invalid(
                        k,
                        format!("strategy '{}': the REGEX pattern does not compile: {why}", s.name),
                    ));
                }
            }
            check_weights(k, s.variants.iter().map(|v| v.weight))?;
        }
        check_weights(k, self.variants.iter().map(|v| v.weight))?;
        if self.schedule.iter().any(|s| s.rollout > 100) {
            return Err(invalid(k, "a schedule step's rollout must be 0 to 100"));
        }
        if self.schedule.windows(2).any(|w| w[0].at >= w[1].at) {
            return Err(invalid(k, "schedule steps must be in strictly increasing time order"));
        }
        if !self.schedule.is_empty() && !self.strategies.iter().any(|s| s.name == "flexibleRollout") {
            return Err(invalid(k, "a schedule moves flexibleRollout strategies, and the gate has none"));
        }
        if self.dependencies.iter().any(|d| d.feature == self.key.as_str()) {
            return Err(invalid(k, "a gate cannot depend on itself"));
        }
        Ok(())
    }
}

const OPERATORS: &[&str] = &[
    "IN",
    "NOT_IN",
    "STR_CONTAINS",
    "STR_STARTS_WITH",
    "STR_ENDS_WITH",
    "NUM_EQ",
    "NUM_GT",
    "NUM_GTE",
    "NUM_LT",
    "NUM_LTE",
    "DATE_AFTER",
    "DATE_BEFORE",
    "SEMVER_EQ",
    "SEMVER_GT",
    "SEMVER_GTE",
    "SEMVER_LT",
    "SEMVER_LTE",
    "REGEX",
    "IN_CIDR",
];

fn check_operator(k: &GateKey, op: &str) -> Result<(), Refusal> {
    if OPERATORS.contains(&op) {
        Ok(())
    } else {
        Err(invalid(k, format!("unknown constraint operator '{op}'; known: {}", OPERATORS.join(", "))))
    }
}

fn check_weights(k: &GateKey, weights: impl Iterator<Item = u32>) -> Result<(), Refusal> {
    let mut total = 0u32;
    for w in weights {
        total = total.saturating_add(w);
    }
    if total > MAX_WEIGHT {
        return Err(invalid(k, format!("variant weights add up to {total}; at most {MAX_WEIGHT}")));
    }
    Ok(())
}
