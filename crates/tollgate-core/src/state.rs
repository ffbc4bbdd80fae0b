//! The state: a fold of the ledger's events.
//!
//! Maps are persistent (`imbl`), so cloning the whole state is O(1) and a writer can
//! build the next state while readers keep the last committed one. Values sit behind
//! `Arc` so that copying a tree node copies pointers, not licenses.

use std::sync::Arc;

use imbl::{HashMap, OrdMap};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::{Plan, Product};
use crate::event::{Event, EventKind};
use crate::ids::{LicenseId, PlanKey, ProductKey};
use crate::key::LicenseKey;
use crate::keys::{KeyRing, SigningKeyInfo};
use crate::lease::LeaseId;
use crate::license::{License, Status};
use crate::models::Models;
type Hash = [u8; 32];

#[derive(Clone, Default, Debug)]
pub struct State {
    /// Number of events folded in: sequence N is the state after the first N events.
    seq: u64,
    products: OrdMap<ProductKey, Arc<Product>>,
    /// Token signing keys (public halves).
    keys: KeyRing,
    pub(crate) plans: OrdMap<PlanKey, Arc<Plan>>,
    pub(crate) licenses: OrdMap<LicenseId, Arc<License>>,
    /// Machines, seats, leases, usage and overrides, only for licenses that have any
    /// (see `models`): a plain license pays nothing for them.
    pub(crate) models: HashMap<LicenseId, Arc<Models>>,
    /// Derived index (lease id to license), rebuilt on load; not part of the digest.
    pub(crate) lease_index: HashMap<LeaseId, LicenseId>,
    /// Derived index, rebuilt on load; not part of the digest.
    by_key: HashMap<LicenseKey, LicenseId>,
    /// Derived index of external ids, rebuilt on load; not part of the digest.
    by_external: HashMap<Arc<str>, LicenseId>,
    /// Gates (every version) and their segments; compiled forms rebuilt on load.
    pub(crate) gates: crate::gate::Gates,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("event {seq} ({kind}) refers to {what} '{name}', which does not exist at that point")]
    Missing { seq: u64, kind: &'static str, what: &'static str, name: String },
    #[error("event {seq} ({kind}) creates {what} '{name}', which already exists")]
    Duplicate { seq: u64, kind: &'static str, what: &'static str, name: String },
}

/// The serialized form of the state, for snapshots and the state digest.
#[derive(Serialize, Deserialize)]
struct Doc {
    format: u32,
    seq: u64,
    products: Vec<Arc<Product>>,
    plans: Vec<Arc<Plan>>,
    licenses: Vec<Arc<License>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    keys: Vec<Arc<SigningKeyInfo>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    models: Vec<Arc<Models>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gates: Vec<crate::gate::GateDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gate_segments: Vec<Arc<crate::gate::Segment>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is not a state document: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("snapshot format {0} is not understood by this build")]
    Format(u32),
    #[error("canonical encoding failed: {0}")]
    Encode(String),
}

impl State {
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Token signing keys.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    pub fn product(&self, key: &str) -> Option<&Arc<Product>> {
        self.products.get(key)
    }

    pub fn products(&self) -> impl Iterator<Item = &Arc<Product>> {
        self.products.values()
    }

    pub fn plan(&self, key: &str) -> Option<&Arc<Plan>> {
        self.plans.get(key)
    }

    pub fn plans(&self) -> impl Iterator<Item = &Arc<Plan>> {
        self.plans.values()
    }

    pub fn license(&self, id: &str) -> Option<&Arc<License>> {
        self.licenses.get(id)
    }

    pub fn license_count(&self) -> usize {
        self.licenses.len()
    }

    /// Looks a license up by its canonical key text.
    /// Looks a license up by its id in another system.
    pub fn license_by_external_id(&self, external_id: &str) -> Option<&Arc<License>> {
        self.by_external.get(external_id).and_then(|id| self.licenses.get(id))
    }

    pub fn license_by_key(&self, key: &str) -> Option<&Arc<License>> {
        self.by_key.get(key).and_then(|id| self.licenses.get(id))
    }

    /// Licenses in id order, strictly after `after` when given.
    pub fn licenses_after<'a>(&'a self, after: Option<&str>) -> Box<dyn Iterator<Item = &'a Arc<License>> + 'a> {
        match after {
            Some(a) => Box::new(
                self.licenses
                    .range::<_, str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                    .map(|(_, l)| l),
            ),
            None => Box::new(self.licenses.values()),
        }
    }

    /// Folds one event in. Uses only the event's own time: replay is deterministic.
    pub fn apply(&mut self, event: &Event) -> Result<(), ApplyError> {
        let seq = self.seq + 1;
        let kind = event.event.type_name();
        let missing =
            |what, name: &dyn std::fmt::Display| ApplyError::Missing { seq, kind, what, name: name.to_string() };
        let duplicate =
            |what, name: &dyn std::fmt::Display| ApplyError::Duplicate { seq, kind, what, name: name.to_string() };
        match &event.event {
            EventKind::ProductCreated(p) => {
                if self.products.contains_key(&p.key) {
                    return Err(duplicate("product", &p.key));
                }
                self.products.insert(p.key.clone(), Arc::new(p.clone()));
            }
            EventKind::ProductUpdated(p) => {
                if !self.products.contains_key(&p.key) {
                    return Err(missing("product", &p.key));
                }
                self.products.insert(p.key.clone(), Arc::new(p.clone()));
            }
            EventKind::PlanCreated(p) => {
                if self.plans.contains_key(&p.key) {
                    return Err(duplicate("plan", &p.key));
                }
                self.plans.insert(p.key.clone(), Arc::new(p.clone()));
            }
            EventKind::PlanUpdated(p) => {
                if !self.plans.contains_key(&p.key) {
                    return Err(missing("plan", &p.key));
                }
                self.plans.insert(p.key.clone(), Arc::new(p.clone()));
            }
            EventKind::LicenseIssued(l) => {
                if self.licenses.contains_key(&l.id) {
                    return Err(duplicate("license", &l.id));
                }
                if self.by_key.contains_key(&l.key) {
                    return Err(duplicate("license key", &l.id));
                }
                if let Some(x) = &l.external_id {
                    if self.by_external.contains_key(x.as_str()) {
                        return Err(duplicate("external id", &l.id));
                    }
                    self.by_external.insert(Arc::from(x.as_str()), l.id.clone());
                }
                self.by_key.insert(l.key.clone(), l.id.clone());
                self.licenses.insert(l.id.clone(), Arc::new(l.clone()));
            }
            EventKind::LicenseSuspended { license } => self
                .update(license, event, |l| l.status = Status::Suspended)
                .map_err(|()| missing("license", license))?,
            EventKind::LicenseReinstated { license } => {
                self.update(license, event, |l| l.status = Status::Active).map_err(|()| missing("license", license))?
            }
            EventKind::LicenseRevoked { license } => {
                self.update(license, event, |l| l.status = Status::Revoked).map_err(|()| missing("license", license))?
            }
            EventKind::LicenseRenewed { license, expires_at } => {
                self.update(license, event, |l| l.expires_at = *expires_at).map_err(|()| missing("license", license))?
            }
            EventKind::LicensePlanChanged { license, plan, expires_at, trial } => {
                if !self.plans.contains_key(plan) {
                    return Err(missing("plan", plan));
                }
                self.update(license, event, |l| {
                    l.plan = plan.clone();
                    l.expires_at = *expires_at;
                    l.trial = *trial;
                })
                .map_err(|()| missing("license", license))?
            }
            EventKind::MachineActivated { .. }
            | EventKind::MachineDeactivated { .. }
            | EventKind::UserAssigned { .. }
            | EventKind::UserUnassigned { .. }
            | EventKind::LeaseCheckedOut { .. }
            | EventKind::LeaseRenewed { .. }
            | EventKind::LeaseReleased { .. }
            | EventKind::LeaseExpired { .. }
            | EventKind::UsageRecorded { .. }
            | EventKind::LicenseOverridesSet { .. } => self.apply_model(seq, event)?,
            EventKind::SigningKeyCreated { .. } | EventKind::SigningKeyRetired { .. } => {
                self.keys.apply(&event.event, event.at).map_err(|(how, kid)| match how {
                    "duplicate" => duplicate("signing key", &kid),
                    _ => missing("signing key", &kid),
                })?
            }
            EventKind::LicenseTokenRevoked { license, .. } => {
                if !self.licenses.contains_key(license) {
                    return Err(missing("license", license));
                }
            }
            EventKind::GatePublished { .. }
            | EventKind::GateRolledBack { .. }
            | EventKind::GateKilled { .. }
            | EventKind::GateSegmentPublished { .. } => self
                .gates
                .apply(&event.event, event.at, &event.actor)
                .map_err(|(what, name)| missing(what, &name))?,
        }
        self.seq = seq;
        Ok(())
    }

    fn update(&mut self, id: &LicenseId, event: &Event, f: impl FnOnce(&mut License)) -> Result<(), ()> {
        let slot = self.licenses.get_mut(id).ok_or(())?;
        let l = Arc::make_mut(slot);
        f(l);
        l.updated_at = event.at;
        l.version += 1;
        Ok(())
    }

    /// The canonical (RFC 8785) encoding of the state: the snapshot payload.
    pub fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        let (gates, gate_segments) = self.gates.to_docs();
        let doc = Doc {
            format: 1,
            seq: self.seq,
            products: self.products.values().cloned().collect(),
            plans: self.plans.values().cloned().collect(),
            licenses: self.licenses.values().cloned().collect(),
            keys: self.keys.to_vec(),
            models: {
                let mut m: Vec<_> = self.models.values().cloned().collect();
                m.sort_by(|a, b| a.license.cmp(&b.license));
                m
            },
            gates,
            gate_segments,
        };
        crate::canonical::to_vec(&doc).map_err(|e| SnapshotError::Encode(e.to_string()))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let doc: Doc = serde_json::from_slice(bytes)?;
        if doc.format != 1 {
            return Err(SnapshotError::Format(doc.format));
        }
        let mut s = State {
            seq: doc.seq,
            keys: KeyRing::from_vec(doc.keys),
            gates: crate::gate::Gates::from_docs(doc.gates, doc.gate_segments),
            ..State::default()
        };
        for p in doc.products {
            s.products.insert(p.key.clone(), p);
        }
        for p in doc.plans {
            s.plans.insert(p.key.clone(), p);
        }
        for l in doc.licenses {
            s.by_key.insert(l.key.clone(), l.id.clone());
            if let Some(x) = &l.external_id {
                s.by_external.insert(Arc::from(x.as_str()), l.id.clone());
            }
            s.licenses.insert(l.id.clone(), l);
        }
        for m in doc.models {
            for id in m.leases.keys() {
                s.lease_index.insert(id.clone(), m.license.clone());
            }
            s.models.insert(m.license.clone(), m);
        }
        Ok(s)
    }

    /// SHA-256 of the canonical encoding: two nodes at the same sequence agree on it.
    pub fn digest(&self) -> Result<Hash, SnapshotError> {
        Ok(digest_of(&self.encode()?))
    }
}

pub fn digest_of(encoded: &[u8]) -> Hash {
    Sha256::digest(encoded).into()
}
