//! Gates: Tollgate's feature flags, phased rollouts bound to licenses.
//!
//! A gate carries Unleash-compatible strategies, constraints, segments, variants and
//! dependencies, so vendors bring their existing flags and every user stays in the
//! bucket Unleash put them in ([`bucket`]). Before any strategy runs, the subject's
//! license must be valid and entitled to the gate's catalog feature ([`eval`]).
//!
//! - [`spec`]: the definition as written and stored (`GateSpec`), and its checks.
//! - [`unleash`]: Unleash's document types (strategies, constraints, variants, segments).
//! - [`compile`]: the definition compiled for evaluation, rebuilt on publish and load.
//! - [`eval`]: `evaluate(rules, key, context, license facts, now, random)`.
//! - [`preview`]: which licenses a proposed definition would change the answer for.
//! - here: versions and history in the state, commands and their events.
//!
//! Every change is a new version (a ledger event); history is never rewritten. A
//! rollback publishes an old version's definition again as a new version; a kill
//! publishes the current one with `enabled: false`.

pub mod bucket;
pub mod compile;
pub mod eval;
pub mod preview;
pub mod spec;
pub mod unleash;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::{OrdMap, Vector};
use serde::{Deserialize, Serialize};

pub use compile::CompiledGate;
pub use eval::{
    Context, Evaluation, LicenseCode, LicenseFacts, LicenseStanding, Reason, Rules, Ruleset, RulesetDoc, VariantAnswer,
    evaluate, evaluate_gate,
};
pub use preview::{Preview, PreviewChange, PreviewQuery, preview};
pub use spec::{FeatureRef, GateKey, GateSpec, ScheduleStep};
pub use unleash::{
    Constraint, Dependency, FeaturesDocument, Override, Payload, Segment, Strategy, StrategyVariant, UnleashFeature,
    Variant, parse_features_document,
};

use crate::event::EventKind;
use crate::refusal::{Refusal, RefusalKind};
use crate::state::State;
use crate::timestamp::Timestamp;

/// How a version came about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    Put,
    Import,
    Rollback { to: u64 },
    Kill,
}

/// One version of a gate, as history shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateVersion {
    pub actor: String,
    pub at: Timestamp,
    pub change: Change,
    pub definition: Arc<GateSpec>,
    pub version: u64,
}

/// A gate in the state: every version (oldest first) and the current one compiled.
#[derive(Clone, Debug)]
pub struct GateEntry {
    versions: Vector<Arc<GateVersion>>,
    /// The last of `versions`, held apart so that reading it cannot fail.
    current: Arc<GateVersion>,
    compiled: Arc<CompiledGate>,
}

impl GateEntry {
    pub fn current(&self) -> &GateVersion {
        &self.current
    }

    pub fn version(&self, v: u64) -> Option<&GateVersion> {
        let i = usize::try_from(v.checked_sub(1)?).ok()?;
        self.versions.get(i).map(|v| &**v)
    }

    /// Oldest first.
    pub fn history(&self) -> impl DoubleEndedIterator<Item = &GateVersion> + ExactSizeIterator {
        self.versions.iter().map(|v| &**v)
    }

    pub fn compiled(&self) -> &CompiledGate {
        &self.compiled
    }
}

/// The gates part of the state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Gates {
    pub(crate) entries: OrdMap<GateKey, Arc<GateEntry>>,
    pub(crate) segments: OrdMap<u32, Arc<Segment>>,
    /// Each segment compiled once, for every gate that names it.
    compiled_segments: OrdMap<u32, compile::CompiledSegment>,
}

/// A gate's history as snapshots store it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GateDoc {
    pub(crate) key: GateKey,
    pub(crate) versions: Vec<Arc<GateVersion>>,
}

impl Gates {
    fn compile(&self, spec: &GateSpec, version: u64) -> CompiledGate {
        compile::compile_with(spec, version, |id| self.compiled_segments.get(&id).cloned())
    }

    fn put_segment(&mut self, segment: Arc<Segment>) {
        self.compiled_segments.insert(segment.id, compile::CompiledSegment::new(&segment));
        self.segments.insert(segment.id, segment);
    }

    pub(crate) fn to_docs(&self) -> (Vec<GateDoc>, Vec<Arc<Segment>>) {
        let gates = self
            .entries
            .iter()
            .map(|(k, e)| GateDoc { key: k.clone(), versions: e.versions.iter().cloned().collect() })
            .collect();
        (gates, self.segments.values().cloned().collect())
    }

    pub(crate) fn from_docs(gates: Vec<GateDoc>, segments: Vec<Arc<Segment>>) -> Self {
        let mut g = Gates::default();
        for s in segments {
            g.put_segment(s);
        }
        for doc in gates {
            let Some(last) = doc.versions.last() else { continue };
            let current = last.clone();
            let compiled = Arc::new(g.compile(&current.definition, current.version));
            let versions = doc.versions.into_iter().collect();
            g.entries.insert(doc.key, Arc::new(GateEntry { versions, current, compiled }));
        }
        g
    }

    /// Folds a gate event; `Err` names what was missing or out of order.
    pub(crate) fn apply(&mut self, kind: &EventKind, at: Timestamp, actor: &str) -> Result<(), (&'static str, String)> {
        let (key, definition, version, change) = match kind {
            EventKind::GatePublished { gate, imported, version } => (
                gate.key.clone(),
                Arc::new(gate.clone()),
                *version,
                if *imported { Change::Import } else { Change::Put },
            ),
            EventKind::GateRolledBack { gate, to, version } => {
                (gate.key.clone(), Arc::new(gate.clone()), *version, Change::Rollback { to: *to })
            }
            EventKind::GateKilled { key, version } => {
                let entry = self.entries.get(key).ok_or(("gate", key.to_string()))?;
                let killed = GateSpec { enabled: false, ..(*entry.current().definition).clone() };
                (key.clone(), Arc::new(killed), *version, Change::Kill)
            }
            EventKind::GateSegmentPublished { segment } => {
                self.put_segment(Arc::new(segment.clone()));
                let users: Vec<GateKey> = self
                    .entries
                    .iter()
                    .filter(|(_, e)| e.current().definition.strategies.iter().any(|s| s.segments.contains(&segment.id)))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in users {
                    if let Some(e) = self.entries.get(&k).cloned() {
                        let cur = e.current();
                        let compiled = Arc::new(self.compile(&cur.definition, cur.version));
                        let entry = GateEntry { versions: e.versions.clone(), current: e.current.clone(), compiled };
                        self.entries.insert(k, Arc::new(entry));
                    }
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        let mut versions = self.entries.get(&key).map(|e| e.versions.clone()).unwrap_or_default();
        let expected = versions.len() as u64 + 1;
        if version != expected {
            return Err(("gate version", format!("{key} v{version} (expected v{expected})")));
        }
        let compiled = Arc::new(self.compile(&definition, version));
        let current = Arc::new(GateVersion { actor: actor.to_string(), at, change, definition, version });
        versions.push_back(current.clone());
        self.entries.insert(key, Arc::new(GateEntry { versions, current, compiled }));
        Ok(())
    }
}

impl Rules for State {
    fn gate(&self, key: &str) -> Option<&CompiledGate> {
        self.gates.entries.get(key).map(|e| &*e.compiled)
    }
}

impl State {
    pub fn gate(&self, key: &str) -> Option<&GateEntry> {
        self.gates.entries.get(key).map(|e| &**e)
    }

    /// In key order.
    pub fn gates(&self) -> impl Iterator<Item = &GateEntry> {
        self.gates.entries.values().map(|e| &**e)
    }

    pub fn gate_segment(&self, id: u32) -> Option<&Arc<Segment>> {
        self.gates.segments.get(&id)
    }

    /// `spec` compiled against this state's segments, compiled once already (a preview
    /// compiles no segment again).
    pub fn compile_gate(&self, spec: &GateSpec, version: u64) -> CompiledGate {
        self.gates.compile(spec, version)
    }

    pub fn gate_segments(&self) -> impl Iterator<Item = &Arc<Segment>> {
        self.gates.segments.values()
    }
}

/// Every current definition and segment: what the server signs and ships to SDKs.
pub fn ruleset_of(state: &State) -> RulesetDoc {
    let mut doc = RulesetDoc::default();
    for e in state.gates() {
        let cur = e.current();
        doc.versions.insert(cur.definition.key.to_string(), cur.version);
        doc.gates.push((*cur.definition).clone());
    }
    doc.segments = state.gate_segments().map(|s| (**s).clone()).collect();
    doc
}

#[derive(Clone, Debug, PartialEq)]
pub enum GateCommand {
    /// Publishes a definition; identical to the current one decides to nothing.
    Put(GateSpec),
    /// Publishes version `version`'s definition again, as a new version.
    Rollback {
        key: GateKey,
        version: u64,
    },
    /// Publishes the current definition with `enabled: false`.
    Kill {
        key: GateKey,
    },
    PutSegment(Segment),
    /// An Unleash features document, all or nothing.
    Import(GateImport),
}

#[derive(Clone, Debug, PartialEq)]
pub struct GateImport {
    pub document: FeaturesDocument,
    /// Unleash feature name → catalog feature. Mapped gates require an entitled
    /// license; the others evaluate exactly as Unleash would.
    pub mappings: BTreeMap<String, FeatureRef>,
}

const MAX_IMPORT: usize = 10_000;
const MAX_SEGMENT_CONSTRAINTS: usize = 1_000;

fn invalid(detail: impl Into<String>) -> Refusal {
    Refusal::new(RefusalKind::Invalid, "INVALID_GATE", detail)
}

fn gate_not_found(key: &str) -> Refusal {
    Refusal::not_found("GATE_NOT_FOUND", format!("no gate with key '{key}'"))
}

fn next_version(state: &State, key: &GateKey) -> u64 {
    state.gate(key.as_str()).map_or(1, |e| e.current().version + 1)
}

/// The catalog feature exists.
fn check_feature(state: &State, f: &FeatureRef) -> Result<(), Refusal> {
    let product = state
        .product(f.product.as_str())
        .ok_or_else(|| Refusal::not_found("PRODUCT_NOT_FOUND", format!("no product with key '{}'", f.product)))?;
    if !product.has_feature(f.feature.as_str()) {
        return Err(Refusal::unknown_feature(&f.product, &f.feature));
    }
    Ok(())
}

/// Segments and parents named exist, and parents have no parents of their own
/// (Unleash evaluates one level): a gate written here is refused what an import takes.
fn check_references(state: &State, spec: &GateSpec) -> Result<(), Refusal> {
    for id in spec.strategies.iter().flat_map(|s| &s.segments) {
        if state.gate_segment(*id).is_none() {
            return Err(Refusal::new(
                RefusalKind::Invalid,
                "SEGMENT_NOT_FOUND",
                format!("gate '{}' uses segment {id}, which does not exist", spec.key),
            ));
        }
    }
    for d in &spec.dependencies {
        let parent_has_parents = match state.gate(&d.feature) {
            Some(e) => !e.current().definition.dependencies.is_empty(),
            None => {
                return Err(invalid(format!("gate '{}' depends on '{}', which does not exist", spec.key, d.feature)));
            }
        };
        if parent_has_parents {
            return Err(invalid(format!(
                "gate '{}' depends on '{}', which has dependencies itself; only one level is evaluated",
                spec.key, d.feature
            )));
        }
    }
    Ok(())
}

fn check_segment(s: &Segment) -> Result<(), Refusal> {
    if s.constraints.len() > MAX_SEGMENT_CONSTRAINTS {
        return Err(invalid(format!("segment {}: at most {MAX_SEGMENT_CONSTRAINTS} constraints", s.id)));
    }
    let regexes = s.constraints.iter().filter(|c| c.operator == "REGEX").count();
    if regexes > compile::MAX_REGEX {
        return Err(invalid(format!(
            "segment {}: at most {} REGEX constraints, not {regexes}",
            s.id,
            compile::MAX_REGEX
        )));
    }
    Ok(())
}

pub(crate) fn decide(state: &State, c: &GateCommand, _now: Timestamp) -> Result<Vec<EventKind>, Refusal> {
    match c {
        GateCommand::Put(spec) => {
            spec.check()?;
            if let Some(f) = &spec.feature {
                check_feature(state, f)?;
            }
            check_references(state, spec)?;
            if state.gate(spec.key.as_str()).is_some_and(|e| *e.current().definition == *spec) {
                return Ok(vec![]);
            }
            Ok(vec![EventKind::GatePublished {
                gate: spec.clone(),
                imported: false,
                version: next_version(state, &spec.key),
            }])
        }
        GateCommand::Rollback { key, version } => {
            let entry = state.gate(key.as_str()).ok_or_else(|| gate_not_found(key.as_str()))?;
            let old = entry.version(*version).ok_or_else(|| {
                Refusal::not_found(
                    "GATE_VERSION_NOT_FOUND",
                    format!("gate '{key}' has versions 1 to {}, not {version}", entry.current().version),
                )
            })?;
            if *old.definition == *entry.current().definition {
                return Ok(vec![]);
            }
            if let Some(f) = &old.definition.feature {
                check_feature(state, f)?;
            }
            Ok(vec![EventKind::GateRolledBack {
                gate: (*old.definition).clone(),
                to: *version,
                version: entry.current().version + 1,
            }])
        }
        GateCommand::Kill { key } => {
            let entry = state.gate(key.as_str()).ok_or_else(|| gate_not_found(key.as_str()))?;
            if !entry.current().definition.enabled {
                return Ok(vec![]);
            }
            Ok(vec![EventKind::GateKilled { key: key.clone(), version: entry.current().version + 1 }])
        }
        GateCommand::PutSegment(s) => {
            check_segment(s)?;
            if state.gate_segment(s.id).is_some_and(|old| **old == *s) {
                return Ok(vec![]);
            }
            Ok(vec![EventKind::GateSegmentPublished { segment: s.clone() }])
        }
        GateCommand::Import(import) => decide_import(state, import),
    }
}

fn decide_import(state: &State, import: &GateImport) -> Result<Vec<EventKind>, Refusal> {
    let doc = &import.document;
    if doc.features.len() > MAX_IMPORT {
        return Err(invalid(format!("at most {MAX_IMPORT} features per import")));
    }
    let names: BTreeSet<&str> = doc.features.iter().map(|f| f.name.as_str()).collect();
    if names.len() != doc.features.len() {
        return Err(invalid("the document names a feature twice"));
    }
    if let Some(name) = import.mappings.keys().find(|n| !names.contains(n.as_str())) {
        return Err(invalid(format!("mapping names '{name}', which is not a feature of the document")));
    }
    let mut segment_ids = BTreeSet::new();
    for s in &doc.segments {
        check_segment(s)?;
        if !segment_ids.insert(s.id) {
            return Err(invalid(format!("the document defines segment {} twice", s.id)));
        }
    }
    let specs = doc
        .features
        .iter()
        .map(|f| {
            // An Unleash document says nothing of licenses: a gate that exists keeps the
            // license binding it has unless a mapping gives it another (taking it away
            // would serve the gate to every subject, licensed or not, without a word).
            let (feature, required) = match import.mappings.get(&f.name) {
                Some(mapped) => (Some(mapped.clone()), false),
                None => state.gate(&f.name).map_or((None, false), |e| {
                    let kept = &e.current().definition;
                    (kept.feature.clone(), kept.license_required)
                }),
            };
            let mut spec = GateSpec::from_unleash(f, feature)?;
            spec.license_required |= required;
            Ok(spec)
        })
        .collect::<Result<Vec<_>, Refusal>>()?;
    let mut events = Vec::new();
    for s in &doc.segments {
        if !state.gate_segment(s.id).is_some_and(|old| **old == *s) {
            events.push(EventKind::GateSegmentPublished { segment: s.clone() });
        }
    }
    for spec in &specs {
        spec.check_limits()?;
        if let Some(f) = &spec.feature {
            check_feature(state, f)?;
        }
        // No reference check here, unlike a put: an Unleash document may name a segment
        // it does not carry or chain dependencies two deep, and Unleash imports it and
        // evaluates those strategies and gates as off; so does the compiled form, so an
        // imported gate answers exactly as it did in Unleash.
        if state.gate(spec.key.as_str()).is_some_and(|e| *e.current().definition == *spec) {
            continue;
        }
        events.push(EventKind::GatePublished {
            gate: spec.clone(),
            imported: true,
            version: next_version(state, &spec.key),
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gates naming one segment share its compiled constraints, in the state and in an
    /// SDK's ruleset: a large segment named by many gates is held once, not once per gate
    /// (compiled per gate, one import could make it thousands of copies).
    #[test]
    fn gates_naming_a_segment_share_its_compiled_constraints() {
        let segment: Segment = serde_json::from_value(serde_json::json!(
            {"id":1,"name":"s","constraints":[{"contextName":"region","operator":"IN","values":["eu","us"]}]}))
        .unwrap();
        let gate = |key: &str| -> GateSpec {
            serde_json::from_value(serde_json::json!(
                {"key":key,"license_required":false,"strategies":[{"name":"default","segments":[1]}]}))
            .unwrap()
        };
        let at = Timestamp::parse("2026-11-29T00:00:00Z").unwrap();
        let mut g = Gates::default();
        g.apply(&EventKind::GateSegmentPublished { segment: segment.clone() }, at, "t").unwrap();
        for key in ["a", "b"] {
            g.apply(&EventKind::GatePublished { gate: gate(key), imported: false, version: 1 }, at, "t").unwrap();
        }
        let seg = |key: &str| g.entries.get(key).unwrap().compiled.strategies[0].segments[0].clone();
        assert!(Arc::ptr_eq(&seg("a"), &seg("b")), "one compiled segment for both gates");

        let doc =
            RulesetDoc { gates: vec![gate("a"), gate("b")], segments: vec![segment], versions: Default::default() };
        let rules = Ruleset::new(&doc);
        let seg = |key: &str| rules.gate(key).unwrap().strategies[0].segments[0].clone();
        assert!(Arc::ptr_eq(&seg("a"), &seg("b")), "and in a ruleset");
    }
}
