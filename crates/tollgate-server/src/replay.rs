//! Rebuilding and checking the fold from the ledger.
//!
//! Start-up loads the newest snapshot whose digest checks out and replays the rest,
//! recomputing every leaf hash from the stored bytes. `verify` is the offline audit
//! behind `tollgate ledger verify`: it folds the whole ledger from genesis and checks
//! every stored checkpoint's root and signature, naming the first bad sequence number.

use ed25519_dalek::SigningKey;
use tollgate_core::checkpoint;
use tollgate_core::merkle::{self, MerkleLog};
use tollgate_core::note;
use tollgate_core::state::digest_of;
use tollgate_core::{Event, State};
use tollgate_store::{LedgerStore, StoreError, StoredEvent};

use crate::kek::MasterKey;

const META_SIGNING_KEY: &str = "ledger_signing_key";
const META_ORIGIN: &str = "ledger_origin";
pub const DEFAULT_ORIGIN: &str = "tollgate.local/ledger";

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "event seq {seq} (leaf index {index}) is corrupt: {detail}. Run `tollgate ledger verify --data DIR` to see the whole damage, then restore from a backup"
    )]
    Corrupt { seq: u64, index: u64, detail: String },
    #[error("checkpoint at tree size {size} does not match the ledger: {detail}")]
    Checkpoint { size: u64, detail: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl ReplayError {
    fn corrupt(index: u64, detail: impl Into<String>) -> Self {
        ReplayError::Corrupt { seq: index + 1, index, detail: detail.into() }
    }
}

/// The log's signing identity, created on first use.
pub struct Identity {
    pub origin: String,
    pub signer: note::Signer,
    pub verifier_key: String,
}

fn random_seed() -> Result<[u8; 32], ReplayError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| ReplayError::Internal(format!("no randomness: {e}")))?;
    Ok(seed)
}

/// Reads the checkpoint signing key, or creates it on first start. With a master key
/// the seed is kept sealed (`crate::kek`), and a plaintext seed left by an older build
/// is sealed and then blanked.
///
/// On a shared store every node starts here at once: creation is insert-if-absent and
/// each node then uses whatever was stored first, so there is one log key, never one
/// per node.
pub fn identity(store: &mut dyn LedgerStore, kek: Option<&MasterKey>) -> Result<Identity, ReplayError> {
    let origin = store.meta_insert(META_ORIGIN, DEFAULT_ORIGIN.as_bytes())?;
    let origin =
        String::from_utf8(origin).map_err(|_| ReplayError::Internal("stored ledger origin is not UTF-8".into()))?;
    let plain = store.meta(META_SIGNING_KEY)?.filter(|p| !p.is_empty());
    let seed: [u8; 32] = match kek {
        Some(kek) => {
            let sealed = match store.meta(META_SEALED_SIGNING_KEY)? {
                Some(sealed) => sealed,
                None => {
                    let seed = match &plain {
                        Some(p) => seed_of(p)?,
                        None => random_seed()?,
                    };
                    let sealed = kek
                        .seal(META_SEALED_SIGNING_KEY, &seed)
                        .map_err(|e| ReplayError::Internal(format!("sealing failed: {e}")))?;
                    store.meta_insert(META_SEALED_SIGNING_KEY, &sealed)?
                }
            };
            open_seed(kek, &sealed)?
        }
        None => match (store.meta(META_SEALED_SIGNING_KEY)?, &plain) {
            (_, Some(p)) => seed_of(p)?,
            (Some(_), None) => {
                return Err(ReplayError::Internal("the ledger signing key is sealed: the master key is needed".into()));
            }
            (None, None) => {
                let fresh = random_seed()?;
                seed_of(&store.meta_insert(META_SIGNING_KEY, &fresh)?)?
            }
        },
    };
    let signer =
        note::Signer::new(&origin, SigningKey::from_bytes(&seed)).map_err(|e| ReplayError::Internal(e.to_string()))?;
    let verifier_key = signer.verifier_key();
    if kek.is_some() {
        // The public key, so that `ledger verify` needs no master key; then the
        // plaintext goes, in that order, so a crash at any point leaves a readable key.
        if store.meta(META_VERIFIER_KEY)?.is_none() {
            store.meta_insert(META_VERIFIER_KEY, verifier_key.as_bytes())?;
        }
        if plain.is_some() {
            store.set_meta(META_SIGNING_KEY, &[])?;
        }
    }
    Ok(Identity { origin, signer, verifier_key })
}

fn seed_of(bytes: &[u8]) -> Result<[u8; 32], ReplayError> {
    bytes.try_into().map_err(|_| ReplayError::Internal("stored ledger signing key is not 32 bytes".into()))
}

const META_SEALED_SIGNING_KEY: &str = "ledger_signing_key_sealed";
const META_VERIFIER_KEY: &str = "ledger_verifier_key";

/// The message a node given another master key than the one that sealed the key stops
/// with.
pub const WRONG_MASTER_KEY: &str =
    "the master key does not open this database's signing key: every node must be given the same TOLLGATE_MASTER_KEY";

fn open_seed(kek: &MasterKey, sealed: &[u8]) -> Result<[u8; 32], ReplayError> {
    kek.open(META_SEALED_SIGNING_KEY, sealed)
        .map_err(|e| ReplayError::Internal(format!("{WRONG_MASTER_KEY} ({e})")))?
        .try_into()
        .map_err(|_| ReplayError::Internal("the sealed ledger signing key is not 32 bytes".into()))
}

/// The verifier key of a store's log, without creating anything.
pub fn verifier(store: &dyn LedgerStore) -> Result<Option<note::Verifier>, ReplayError> {
    if let Some(vkey) = store.meta(META_VERIFIER_KEY)? {
        let text = String::from_utf8(vkey).map_err(|_| ReplayError::Internal("verifier key is not UTF-8".into()))?;
        return note::Verifier::parse(&text).map(Some).map_err(|e| ReplayError::Internal(e.to_string()));
    }
    let (Some(origin), Some(seed)) = (store.meta(META_ORIGIN)?, store.meta(META_SIGNING_KEY)?) else {
        return Ok(None);
    };
    let origin =
        String::from_utf8(origin).map_err(|_| ReplayError::Internal("stored ledger origin is not UTF-8".into()))?;
    let seed: [u8; 32] =
        seed.try_into().map_err(|_| ReplayError::Internal("stored ledger signing key is not 32 bytes".into()))?;
    let signer =
        note::Signer::new(&origin, SigningKey::from_bytes(&seed)).map_err(|e| ReplayError::Internal(e.to_string()))?;
    note::Verifier::parse(&signer.verifier_key()).map(Some).map_err(|e| ReplayError::Internal(e.to_string()))
}

pub struct Loaded {
    pub state: State,
    pub log: MerkleLog,
    /// The sequence of the snapshot start-up began from (0: genesis).
    pub snapshot_seq: u64,
}

/// Checks one stored event's hash and decodes it.
pub fn check_event(e: &StoredEvent) -> Result<Event, ReplayError> {
    let hash = merkle::leaf_hash(&e.leaf);
    if hash != e.leaf_hash {
        return Err(ReplayError::corrupt(e.index, "its bytes do not hash to the stored leaf hash"));
    }
    Event::decode(&e.leaf).map_err(|err| ReplayError::corrupt(e.index, err.to_string()))
}

/// Newest valid snapshot + replay of the rest, verifying every leaf hash.
pub fn load(store: &dyn LedgerStore) -> Result<Loaded, ReplayError> {
    let mut state = State::default();
    let mut snapshot_seq = 0;
    for (seq, digest) in store.snapshot_seqs()? {
        let Some(snap) = store.load_snapshot(seq)? else { continue };
        if digest_of(&snap.state) != digest {
            tracing::warn!(seq, "snapshot digest does not match its content; skipping it");
            continue;
        }
        match State::decode(&snap.state) {
            Ok(s) if s.seq() == seq => {
                state = s;
                snapshot_seq = seq;
                break;
            }
            Ok(_) => tracing::warn!(seq, "snapshot claims another sequence; skipping it"),
            Err(e) => tracing::warn!(seq, error = %e, "snapshot does not decode; skipping it"),
        }
    }
    let (state, log) = replay_events(store, state, snapshot_seq)?;
    if log.len() < snapshot_seq {
        return Err(ReplayError::Internal(format!(
            "snapshot at seq {snapshot_seq} is ahead of the ledger ({} events)",
            log.len()
        )));
    }
    let mut latest = store.latest_checkpoint()?;
    if store.shared() && latest.as_ref().is_some_and(|cp| cp.size > log.len()) {
        // Other nodes appended and signed after this scan: check the newest checkpoint
        // within what was read; catching up checks the rest.
        latest = store.checkpoints()?.into_iter().rev().find(|cp| cp.size <= log.len());
    }
    if let Some(cp) = latest {
        check_checkpoint_root(&log, cp.size, &cp.root)?;
    }
    Ok(Loaded { state, log, snapshot_seq })
}

/// What the decoder thread hands back for one event: its verified leaf hash, and the
/// event when it is past the snapshot.
type Decoded = (merkle::Hash, Option<Event>);

const CHUNK: usize = 512;

/// Hashes and decodes one chunk, in order; stops at the first bad event.
fn decode_chunk(chunk: Vec<StoredEvent>, snapshot_seq: u64) -> Result<Vec<Decoded>, ReplayError> {
    chunk
        .into_iter()
        .map(|e| {
            let hash = merkle::leaf_hash(&e.leaf);
            if hash != e.leaf_hash {
                return Err(ReplayError::corrupt(e.index, "its bytes do not hash to the stored leaf hash"));
            }
            let event = if e.index >= snapshot_seq {
                Some(Event::decode(&e.leaf).map_err(|err| ReplayError::corrupt(e.index, err.to_string()))?)
            } else {
                None
            };
            Ok((hash, event))
        })
        .collect()
}

/// Replays the log onto `state` (the snapshot at `snapshot_seq`, or empty), verifying
/// every leaf hash.
///
/// Two threads share the work: this one scans the store, keeps the events in order and
/// folds them; a second one hashes and decodes chunks of them, which is the larger half
/// of the cost. Errors come out in ledger order: before reporting a gap it found while
/// scanning, this thread waits for the decoder to finish what came before it.
fn replay_events(
    store: &dyn LedgerStore,
    mut state: State,
    snapshot_seq: u64,
) -> Result<(State, MerkleLog), ReplayError> {
    let mut log = MerkleLog::new();
    let (to_decoder, decoder_in) = std::sync::mpsc::sync_channel::<Vec<StoredEvent>>(4);
    let (decoder_out, from_decoder) = std::sync::mpsc::channel::<Result<Vec<Decoded>, ReplayError>>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for chunk in decoder_in {
                let r = decode_chunk(chunk, snapshot_seq);
                let stop = r.is_err();
                if decoder_out.send(r).is_err() || stop {
                    return;
                }
            }
        });
        // Folds whatever the decoder has finished; `wait` drains it completely.
        let fold = |state: &mut State, log: &mut MerkleLog, wait: bool| -> Result<(), ReplayError> {
            loop {
                let next = if wait { from_decoder.recv().ok() } else { from_decoder.try_recv().ok() };
                let Some(decoded) = next else { return Ok(()) };
                for (hash, event) in decoded? {
                    if let Some(event) = event {
                        state.apply_owned(event).map_err(|err| ReplayError::corrupt(log.len(), err.to_string()))?;
                    }
                    log.push(hash);
                }
            }
        };
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut expected = 0u64;
        let mut failure: Option<ReplayError> = None;
        let stop = || StoreError::Invalid("replay stopped".into());
        let scanned = store.scan(0, &mut |e| {
            if e.index != expected {
                failure = Some(ReplayError::corrupt(expected, "missing from the store"));
                return Err(stop());
            }
            expected += 1;
            chunk.push(e);
            if chunk.len() == CHUNK {
                if to_decoder.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))).is_err() {
                    // The decoder stopped on a bad event; `fold` below reports it.
                    return Err(stop());
                }
                if let Err(err) = fold(&mut state, &mut log, false) {
                    failure = Some(err);
                    return Err(stop());
                }
            }
            Ok(())
        });
        if failure.is_none() && !chunk.is_empty() {
            let _ = to_decoder.send(chunk);
        }
        drop(to_decoder);
        // Everything before a scan failure is folded first, so the earliest error wins.
        fold(&mut state, &mut log, true)?;
        if let Some(f) = failure {
            return Err(f);
        }
        scanned.map_err(ReplayError::Store)
    })?;
    Ok((state, log))
}

fn check_checkpoint_root(log: &MerkleLog, size: u64, root: &merkle::Hash) -> Result<(), ReplayError> {
    let actual = log.root_at(size).map_err(|e| ReplayError::Checkpoint {
        size,
        detail: format!("the ledger has only {} events: {e}", log.len()),
    })?;
    if &actual != root {
        return Err(ReplayError::Checkpoint { size, detail: "the root recomputed from the stored events differs from the signed one; an event at or below this size was altered".into() });
    }
    Ok(())
}

#[derive(Debug)]
pub struct VerifyReport {
    pub events: u64,
    pub checkpoints: usize,
    pub root: merkle::Hash,
    pub digest: merkle::Hash,
}

/// Folds the first `upto` events (all when `None`) from genesis, checking that they
/// are contiguous and that every leaf hash matches; reports (done, total) every 10,000
/// events. Used by `verify`, `ledger digest` and restore.
pub fn fold(
    store: &dyn LedgerStore,
    upto: Option<u64>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(State, MerkleLog), ReplayError> {
    let total = store.len()?;
    let n = upto.unwrap_or(total);
    if n > total {
        return Err(ReplayError::Internal(format!("the ledger has only {total} events; cannot go to sequence {n}")));
    }
    let mut state = State::default();
    let mut log = MerkleLog::new();
    let mut failure = None;
    let stop = || StoreError::Invalid("fold stopped".into());
    let r = store.scan(0, &mut |e| {
        if e.index >= n {
            return Err(stop());
        }
        let result = if e.index != log.len() {
            Err(ReplayError::corrupt(log.len(), "missing from the store"))
        } else {
            check_event(&e).and_then(|event| {
                state.apply_owned(event).map_err(|err| ReplayError::corrupt(e.index, err.to_string()))
            })
        };
        if let Err(err) = result {
            failure = Some(err);
            return Err(stop());
        }
        log.push(e.leaf_hash);
        if log.len().is_multiple_of(10_000) {
            progress(log.len(), n);
        }
        Ok(())
    });
    if let Some(f) = failure {
        return Err(f);
    }
    if let Err(e) = r
        && log.len() < n
    {
        return Err(e.into());
    }
    progress(n, n);
    Ok((state, log))
}

/// The full offline audit: every leaf hash, every event folds, every checkpoint's root
/// and signature. `progress` is called with the events done so far.
pub fn verify(store: &dyn LedgerStore, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport, ReplayError> {
    let (state, log) = fold(store, None, &mut |done, _| progress(done))?;
    let checkpoints = store.checkpoints()?;
    let verifier = verifier(store)?;
    for cp in &checkpoints {
        check_checkpoint_root(&log, cp.size, &cp.root)?;
        let Some(v) = &verifier else {
            return Err(ReplayError::Checkpoint {
                size: cp.size,
                detail: "the store has checkpoints but no signing key".into(),
            });
        };
        let parsed = checkpoint::open(&cp.note, v).map_err(|e| ReplayError::Checkpoint {
            size: cp.size,
            detail: format!("signature does not verify: {e}"),
        })?;
        if parsed.size != cp.size || parsed.root != cp.root {
            return Err(ReplayError::Checkpoint {
                size: cp.size,
                detail: "the signed note names another size or root than its row".into(),
            });
        }
    }
    let digest = state.digest().map_err(|e| ReplayError::Internal(e.to_string()))?;
    Ok(VerifyReport { events: log.len(), checkpoints: checkpoints.len(), root: log.root(), digest })
}
