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
    /// Derived index, rebuilt on load; not part of the digest. See [`KeyIndex`].
    by_key: KeyIndex,
    /// Derived index of external ids, rebuilt on load; not part of the digest.
    by_external: HashMap<Arc<str>, LicenseId>,
    /// Gates (every version) and their segments; compiled forms rebuilt on load.
    pub(crate) gates: crate::gate::Gates,
}

/// License key to license id, one index shared by every version of the state.
///
/// Keys are random, so a persistent map of them changes in a random place with every
/// issued license: each new version copied a path of wide tree nodes and each replaced
/// one freed it, a third of the writer's CPU time. Instead, this index only grows and
/// is shared (not copied) when the state is cloned, and every lookup is confirmed
/// against the version's own license map, which is persistent: an entry for a license
/// that this version does not hold (one a later version issued, or one a batch that
/// was never committed decided) reads as absent, exactly as if it were not there. A key
/// never names two licenses (keys are 120 random bits drawn by the server), so an
/// entry is never wrong for a version that holds its license: the writer only ever
/// extends the one live history, or a branch it then discards. Core stays pure: the
/// index is memory only, and nothing in it depends on time or order beyond the events
/// folded.
///
/// A dry run (an import's report) must not grow the shared index with licenses that
/// will never be committed: its copy of the state ([`State::scratch`]) keeps the keys
/// it adds in an overlay of its own.
#[derive(Clone)]
struct KeyIndex {
    shared: Arc<papaya::HashMap<LicenseKey, LicenseId, foldhash::fast::RandomState>>,
    scratch: Option<OrdMap<LicenseKey, LicenseId>>,
}

impl Default for KeyIndex {
    /// One writer at a time (the thread folding events) and doubling growth: a whole
    /// resize at once costs the writer less than papaya's default of copying a little
    /// on every insert (a tenth of replay), and readers are not held up by it.
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl KeyIndex {
    /// Room for `n` keys before the first resize: loading a snapshot or replaying a
    /// ledger knows about how many licenses are coming, and growing by doubling copied
    /// every entry about twice (a tenth of start-up from a snapshot).
    fn with_capacity(n: usize) -> Self {
        let map = papaya::HashMap::builder()
            .hasher(foldhash::fast::RandomState::default())
            .resize_mode(papaya::ResizeMode::Blocking)
            .capacity(n)
            .build();
        Self { shared: Arc::new(map), scratch: None }
    }

    fn get(&self, key: &str) -> Option<LicenseId> {
        if let Some(id) = self.scratch.as_ref().and_then(|s| s.get(key)) {
            return Some(id.clone());
        }
        self.shared.pin().get(key).cloned()
    }

    /// Points `key` at `id` unless it already points somewhere: then returns where,
    /// and changes nothing.
    fn claim(&mut self, key: &LicenseKey, id: &LicenseId) -> Option<LicenseId> {
        match &mut self.scratch {
            None => self.shared.pin().try_insert(key.clone(), id.clone()).err().map(|taken| taken.current.clone()),
            Some(own) => {
                if let Some(taken) = own.get(key).cloned().or_else(|| self.shared.pin().get(key).cloned()) {
                    return Some(taken);
                }
                own.insert(key.clone(), id.clone());
                None
            }
        }
    }

    fn set(&mut self, key: LicenseKey, id: LicenseId) {
        match &mut self.scratch {
            None => {
                self.shared.pin().insert(key, id);
            }
            Some(own) => {
                own.insert(key, id);
            }
        }
    }
}

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let own = self.scratch.as_ref().map_or(0, OrdMap::len);
        write!(f, "KeyIndex({} keys shared, {own} of its own)", self.shared.len())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("event {seq} ({kind}) refers to {what} '{name}', which does not exist at that point")]
    Missing { seq: u64, kind: &'static str, what: &'static str, name: String },
    #[error("event {seq} ({kind}) creates {what} '{name}', which already exists")]
    Duplicate { seq: u64, kind: &'static str, what: &'static str, name: String },
    /// A number no decision writes: only a crafted ledger holds it, and canonical JSON
    /// would not keep it exactly.
    #[error("event {seq} ({kind}) makes {what} {value}, beyond the {max} any decision allows")]
    OutOfRange { seq: u64, kind: &'static str, what: &'static str, value: u64, max: u64 },
}

/// The serialized form of the state, for snapshots and the state digest.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

    /// An empty state with room for about `licenses` license keys in its key index, for
    /// a replay that knows roughly how many are coming (at most one per event).
    pub fn with_capacity(licenses: usize) -> Self {
        State { by_key: KeyIndex::with_capacity(licenses), ..State::default() }
    }

    /// A copy for a dry run, which is folded into and then dropped: the license keys it
    /// adds stay in an index of its own instead of the one every version of the state
    /// shares (which only grows), and so go when it goes.
    pub fn scratch(&self) -> State {
        let mut s = self.clone();
        s.by_key.scratch.get_or_insert_with(OrdMap::new);
        s
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

    /// Looks a license up by its id in another system.
    pub fn license_by_external_id(&self, external_id: &str) -> Option<&Arc<License>> {
        self.by_external.get(external_id).and_then(|id| self.licenses.get(id))
    }

    /// Looks a license up by its canonical key text.
    pub fn license_by_key(&self, key: &str) -> Option<&Arc<License>> {
        let id = self.by_key.get(key)?;
        self.licenses.get(&id).filter(|l| l.key.as_str() == key)
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
        // Every test that folds an event checks the list callers filter by is complete.
        debug_assert!(crate::event::EventKind::TYPE_NAMES.contains(&kind), "{kind} is missing from TYPE_NAMES");
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
            EventKind::LicenseIssued(l) => self.issue(seq, l.clone())?,
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
            | EventKind::GateSegmentPublished { .. } => {
                self.gates.apply(&event.event, event.at, &event.actor).map_err(|(what, name)| missing(what, &name))?
            }
        }
        self.seq = seq;
        Ok(())
    }

    /// Like [`State::apply`], but takes the event, so that what it carries moves into
    /// the state: replay decodes each event only to fold it.
    pub fn apply_owned(&mut self, event: Event) -> Result<(), ApplyError> {
        match event {
            Event { event: EventKind::LicenseIssued(l), .. } => {
                let seq = self.seq + 1;
                self.issue(seq, l)?;
                self.seq = seq;
                Ok(())
            }
            event => self.apply(&event),
        }
    }

    /// Adds an issued license and its index entries, or refuses a duplicate id, key or
    /// external id (checked in that order) and leaves the state as it was. Each map is
    /// touched once on the common path: insert, and put back what was there on the
    /// rare duplicate, rather than a lookup before every insert; with 100,000 licenses
    /// the lookups were a third of folding an issue.
    fn issue(&mut self, seq: u64, l: Arc<License>) -> Result<(), ApplyError> {
        let duplicate =
            |what, l: &License| ApplyError::Duplicate { seq, kind: "license_issued", what, name: l.id.to_string() };
        if let Some(old) = self.licenses.insert(l.id.clone(), l.clone()) {
            self.licenses.insert(l.id.clone(), old);
            return Err(duplicate("license", &l));
        }
        // One hash on the common path: claim the key, and look closer only when it is
        // taken. The entry may be stale (see `KeyIndex`), or this very license's: the
        // same command decided again after a commit that failed or lost a race.
        if let Some(current) = self.by_key.claim(&l.key, &l.id) {
            if current != l.id && self.licenses.get(&current).is_some_and(|other| other.key == l.key) {
                self.licenses.remove(&l.id);
                return Err(duplicate("license key", &l));
            }
            self.by_key.set(l.key.clone(), l.id.clone());
        }
        if let Some(x) = &l.external_id {
            if self.by_external.contains_key(x.as_str()) {
                // The key's entry stays, naming a license this version does not hold.
                self.licenses.remove(&l.id);
                return Err(duplicate("external id", &l));
            }
            self.by_external.insert(Arc::from(x.as_str()), l.id.clone());
        }
        Ok(())
    }

    fn update(&mut self, id: &LicenseId, event: &Event, f: impl FnOnce(&mut License)) -> Result<(), ()> {
        let slot = self.licenses.get_mut(id).ok_or(())?;
        let l = Arc::make_mut(slot);
        f(l);
        l.updated_at = event.at;
        // Saturating: only a crafted ledger gets near the end of a u64.
        l.version = l.version.saturating_add(1);
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
        // One UTF-8 check over the whole document, as for events: cheaper than serde_json
        // checking every string on its own. Invalid UTF-8 takes the byte path, which
        // refuses it with serde_json's error.
        let doc: Doc = match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str(text)?,
            Err(_) => serde_json::from_slice(bytes)?,
        };
        if doc.format != 1 {
            return Err(SnapshotError::Format(doc.format));
        }
        let mut s = State {
            seq: doc.seq,
            by_key: KeyIndex::with_capacity(doc.licenses.len()),
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
        let index = s.by_key.shared.pin();
        for l in doc.licenses {
            index.insert(l.key.clone(), l.id.clone());
            if let Some(x) = &l.external_id {
                s.by_external.insert(Arc::from(x.as_str()), l.id.clone());
            }
            s.licenses.insert(l.id.clone(), l);
        }
        drop(index);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Meta;
    use crate::Timestamp;

    fn license(n: u8, key: u8, external: Option<&str>) -> License {
        let at = Timestamp::from_millis(1_800_000_000_000).unwrap();
        License {
            expires_at: None,
            external_id: external.map(String::from),
            id: LicenseId::from_random([n; 16]),
            issued_at: at,
            key: LicenseKey::from_random([key; 15]),
            licensee: format!("licensee {n}"),
            metadata: Default::default(),
            plan: PlanKey::parse("plan").unwrap(),
            product: ProductKey::parse("product").unwrap(),
            status: Status::Active,
            trial: false,
            updated_at: at,
            version: 1,
        }
    }

    fn issued(l: License) -> Event {
        let meta = Meta { actor: "test".into(), reason: None, request_id: "req".into() };
        Event::new(l.issued_at, meta, EventKind::LicenseIssued(Arc::new(l)))
    }

    /// A refused issue must leave the derived indexes as they were too (the digest
    /// does not cover them), whichever of id, key or external id collides.
    #[test]
    fn a_refused_issue_leaves_every_index_as_it_was() {
        let mut s = State::default();
        s.apply(&issued(license(1, 1, Some("crm-1")))).unwrap();
        s.apply_owned(issued(license(2, 2, None))).unwrap();
        let before = s.clone();
        for (l, what) in [
            (license(1, 3, Some("crm-3")), "license"),
            (license(3, 1, Some("crm-3")), "license key"),
            (license(3, 3, Some("crm-1")), "external id"),
        ] {
            let id = l.id.to_string();
            for owned in [false, true] {
                let mut t = before.clone();
                let e = issued(l.clone());
                let err = if owned { t.apply_owned(e) } else { t.apply(&e) };
                assert_eq!(err, Err(ApplyError::Duplicate { seq: 3, kind: "license_issued", what, name: id.clone() }));
                assert_eq!(t.seq(), 2);
                assert_eq!(t.digest().unwrap(), before.digest().unwrap());
                for n in [1, 2] {
                    let k = license(n, n, None).key;
                    assert_eq!(t.license_by_key(k.as_str()).unwrap().id, license(n, n, None).id);
                }
                assert!(t.license_by_key(license(3, 3, None).key.as_str()).is_none());
                assert!(t.license(license(3, 3, None).id.as_str()).is_none());
                assert_eq!(t.license_by_external_id("crm-1").unwrap().id, license(1, 1, None).id);
                assert!(t.license_by_external_id("crm-3").is_none());
            }
        }
    }

    /// The key index is shared by every version of the state, yet each version finds
    /// exactly its own licenses by key: not a later version's, not one a discarded
    /// version issued; and a license issued again on an older version after a
    /// discarded one (a batch decided again) is neither refused nor lost.
    #[test]
    fn every_version_finds_only_its_own_licenses_by_key() {
        let mut committed = State::default();
        committed.apply(&issued(license(1, 1, None))).unwrap();
        let mut later = committed.clone();
        later.apply(&issued(license(2, 2, None))).unwrap();
        let key2 = license(2, 2, None).key;
        assert_eq!(later.license_by_key(key2.as_str()).unwrap().id, license(2, 2, None).id);
        assert!(committed.license_by_key(key2.as_str()).is_none(), "an older version does not see a later license");
        assert!(committed.license_by_key(license(1, 1, None).key.as_str()).is_some());

        // `later` is discarded (its commit failed); the same license is issued again
        // on the committed version: no duplicate, and found afterwards.
        drop(later);
        let mut again = committed.clone();
        again.apply(&issued(license(2, 2, None))).unwrap();
        assert_eq!(again.license_by_key(key2.as_str()).unwrap().id, license(2, 2, None).id);

        // A real duplicate key within one version is still refused, and the index
        // still names the license that holds it.
        let err = again.apply(&issued(license(10, 2, None))).unwrap_err();
        assert!(matches!(err, ApplyError::Duplicate { what: "license key", .. }), "{err:?}");
        assert_eq!(again.license_by_key(key2.as_str()).unwrap().id, license(2, 2, None).id);
    }

    /// A dry run's copy finds what it folded, refuses duplicates as any version does,
    /// and leaves nothing in the shared index when it is dropped.
    #[test]
    fn a_scratch_copy_keeps_its_keys_to_itself() {
        let mut committed = State::default();
        committed.apply(&issued(license(1, 1, None))).unwrap();
        let shared = committed.by_key.shared.len();
        let mut scratch = committed.scratch();
        for n in 2..50 {
            scratch.apply(&issued(license(n, n, None))).unwrap();
        }
        let mut row = scratch.clone();
        row.apply(&issued(license(60, 60, None))).unwrap();
        assert!(row.license_by_key(license(60, 60, None).key.as_str()).is_some());
        assert!(scratch.license_by_key(license(60, 60, None).key.as_str()).is_none(), "a dropped row's copy");
        drop(row);
        assert_eq!(scratch.license_by_key(license(7, 7, None).key.as_str()).unwrap().id, license(7, 7, None).id);
        assert!(scratch.license_by_key(license(1, 1, None).key.as_str()).is_some(), "and the committed ones");
        let err = scratch.apply(&issued(license(99, 7, None))).unwrap_err();
        assert!(matches!(err, ApplyError::Duplicate { what: "license key", .. }), "{err:?}");
        let err = scratch.apply(&issued(license(98, 1, None))).unwrap_err();
        assert!(matches!(err, ApplyError::Duplicate { what: "license key", .. }), "{err:?}");
        assert_eq!(committed.by_key.shared.len(), shared, "the shared index did not grow");
        assert!(committed.license_by_key(license(7, 7, None).key.as_str()).is_none());
    }

    /// Folding owned events gives the same state as folding borrowed ones.
    #[test]
    fn apply_owned_folds_like_apply() {
        let events: Vec<Event> = (1..=5).map(|n| issued(license(n, n, Some(&format!("x{n}"))))).collect();
        let (mut a, mut b) = (State::default(), State::default());
        for e in &events {
            a.apply(e).unwrap();
            b.apply_owned(e.clone()).unwrap();
        }
        let suspend = Event::new(
            events[0].at,
            Meta { actor: "test".into(), reason: None, request_id: "r".into() },
            EventKind::LicenseSuspended { license: license(3, 3, None).id },
        );
        a.apply(&suspend).unwrap();
        b.apply_owned(suspend).unwrap();
        assert_eq!(a.seq(), 6);
        assert_eq!(b.seq(), 6);
        assert_eq!(a.encode().unwrap(), b.encode().unwrap());
        assert_eq!(b.license_by_external_id("x4").unwrap().id, license(4, 4, None).id);
        assert_eq!(b.license(license(3, 3, None).id.as_str()).unwrap().status, Status::Suspended);
    }
}
