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
    /// Bytes whose hash verified, of a shape this build does not know: a field or an
    /// event type a newer build writes (or an alteration whose hash was recomputed,
    /// which the newer build's `ledger verify --key` tells apart by the checkpoints).
    #[error(
        "event seq {seq} (leaf index {index}) holds what this build of Tollgate does not know ({detail}): it was most likely written by a newer build, so run that build (or a later one); if no newer build ever ran on this ledger, treat it as altered and run `tollgate ledger verify --key` there"
    )]
    Newer { seq: u64, index: u64, detail: String },
    #[error("checkpoint at tree size {size} does not match the ledger: {detail}")]
    Checkpoint { size: u64, detail: String },
    #[error(
        "snapshot at seq {seq} does not match the ledger: {detail}. The server would start from it; restore from a backup, or remove the snapshot so that state is folded from the ledger"
    )]
    Snapshot { seq: u64, detail: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl ReplayError {
    fn corrupt(index: u64, detail: impl Into<String>) -> Self {
        ReplayError::Corrupt { seq: index + 1, index, detail: detail.into() }
    }

    /// An event whose hash verified and that does not decode: written by a newer build
    /// (a schema version, a field or an event type this one does not know), or damaged
    /// before it was hashed.
    fn undecodable(index: u64, leaf: &[u8], err: tollgate_core::event::CodecError) -> Self {
        let detail = err.to_string();
        // An event envelope (a version and an event) holding what this build does not
        // know; anything else is damage.
        let envelope = || {
            serde_json::from_slice::<serde_json::Value>(leaf)
                .is_ok_and(|v| v.get("v").is_some_and(|v| v.as_u64().is_some()) && v.get("event").is_some())
        };
        let newer = matches!(err, tollgate_core::event::CodecError::Version(_))
            || ((detail.contains("unknown field") || detail.contains("unknown variant")) && envelope());
        if newer { ReplayError::Newer { seq: index + 1, index, detail } } else { Self::corrupt(index, detail) }
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
    Event::decode(&e.leaf).map_err(|err| ReplayError::undecodable(e.index, &e.leaf, err))
}

/// The most license keys a replay from genesis reserves room for up front.
const GENESIS_KEY_CAPACITY: usize = 1 << 20;

/// Newest valid snapshot + replay of the rest, verifying every leaf hash.
///
/// The snapshot is checked and decoded on a thread of its own while the log's leaf
/// hashes are verified (which does not need it), so that start-up from a snapshot costs
/// about the longer of the two instead of their sum. An unusable snapshot (wrong digest,
/// undecodable, another sequence) is skipped for the next older one, or genesis.
pub fn load(store: &dyn LedgerStore) -> Result<Loaded, ReplayError> {
    for (seq, digest) in store.snapshot_seqs()? {
        let Some(snap) = store.load_snapshot(seq)? else { continue };
        let replayed = std::thread::scope(|scope| {
            let decoding = scope.spawn(move || decode_snapshot(&snap.state, seq, &digest));
            let base =
                Base::Pending(Box::new(move || decoding.join().unwrap_or_else(|_| Err("decoding it panicked".into()))));
            replay_events(store, base, seq)
        });
        match replayed {
            Ok((state, log)) => return finish(store, state, log, seq),
            Err(Unusable::Snapshot(why)) => tracing::warn!(seq, "snapshot skipped: {why}"),
            Err(Unusable::Ledger(e)) => return Err(e),
        }
    }
    // At most one license per event; capped, so that a long ledger of usage and leases
    // does not reserve room for licenses it never had.
    let events = usize::try_from(store.len()?).unwrap_or(usize::MAX);
    let state = State::with_capacity(events.min(GENESIS_KEY_CAPACITY));
    match replay_events(store, Base::Ready(Box::new(state)), 0) {
        Ok((state, log)) => finish(store, state, log, 0),
        Err(Unusable::Ledger(e)) => Err(e),
        Err(Unusable::Snapshot(why)) => Err(ReplayError::Internal(why)),
    }
}

/// Checks a snapshot against its digest and decodes it; why not, as text.
fn decode_snapshot(bytes: &[u8], seq: u64, digest: &merkle::Hash) -> Result<State, String> {
    if digest_of(bytes) != *digest {
        return Err("its digest does not match its content".into());
    }
    match State::decode(bytes) {
        Ok(s) if s.seq() == seq => Ok(s),
        Ok(s) => Err(format!("it claims sequence {}", s.seq())),
        Err(e) => Err(format!("it does not decode: {e}")),
    }
}

/// The replayed state and log, checked against the newest checkpoint they cover.
fn finish(store: &dyn LedgerStore, state: State, log: MerkleLog, snapshot_seq: u64) -> Result<Loaded, ReplayError> {
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

/// The state a replay folds onto: ready, or a snapshot still being decoded, waited
/// for when the first event past it is folded (or at the end).
enum Base<'a> {
    Ready(Box<State>),
    Pending(Box<dyn FnOnce() -> Result<State, String> + 'a>),
    Taken,
}

impl Base<'_> {
    fn into_state(mut self) -> Result<State, Unusable> {
        self.get()?;
        match self {
            Base::Ready(state) => Ok(*state),
            _ => Err(Unusable::Snapshot("it was already found unusable".into())),
        }
    }

    fn get(&mut self) -> Result<&mut State, Unusable> {
        if let Base::Pending(_) = self
            && let Base::Pending(decode) = std::mem::replace(self, Base::Taken)
        {
            *self = Base::Ready(Box::new(decode().map_err(Unusable::Snapshot)?));
        }
        match self {
            Base::Ready(state) => Ok(state),
            _ => Err(Unusable::Snapshot("it was already found unusable".into())),
        }
    }
}

/// Why a replay stopped: the snapshot it started from is unusable (try another), or
/// the ledger itself is not sound (stop).
enum Unusable {
    Snapshot(String),
    Ledger(ReplayError),
}

impl From<ReplayError> for Unusable {
    fn from(e: ReplayError) -> Self {
        Unusable::Ledger(e)
    }
}

impl From<StoreError> for Unusable {
    fn from(e: StoreError) -> Self {
        Unusable::Ledger(ReplayError::Store(e))
    }
}

/// What the decoder thread hands back for one event: its verified leaf hash, and the
/// event when it is past the snapshot.
type Decoded = (merkle::Hash, Option<Event>);

/// Events per chunk: small enough that the two threads share the work evenly (256
/// beat 512 in five of six back-to-back runs).
const CHUNK: usize = 256;

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
                Some(Event::decode(&e.leaf).map_err(|err| ReplayError::undecodable(e.index, &e.leaf, err))?)
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
/// Two threads share the work. This one scans the store in chunks, keeps them in
/// order and folds them; hashing and decoding a chunk (the larger part of the cost)
/// goes to a second thread, or is done here when that thread already has enough
/// queued, so that both cores stay busy whichever part is slower on the machine.
/// Chunks are folded in ledger order, so errors come out in ledger order too: before
/// reporting a gap it found while scanning, this thread folds everything before it.
fn replay_events(
    store: &dyn LedgerStore,
    mut base: Base<'_>,
    snapshot_seq: u64,
) -> Result<(State, MerkleLog), Unusable> {
    type Numbered = (u64, Result<Vec<Decoded>, ReplayError>);
    let mut log = MerkleLog::new();
    let (to_decoder, decoder_in) = std::sync::mpsc::sync_channel::<(u64, Vec<StoredEvent>)>(2);
    let (decoder_out, from_decoder) = std::sync::mpsc::channel::<Numbered>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for (n, chunk) in decoder_in {
                let r = decode_chunk(chunk, snapshot_seq);
                let stop = r.is_err();
                if decoder_out.send((n, r)).is_err() || stop {
                    return;
                }
            }
        });
        // Decoded chunks by number, until their turn to be folded comes.
        let mut ready: std::collections::BTreeMap<u64, Result<Vec<Decoded>, ReplayError>> = Default::default();
        let mut next_fold = 0u64;
        // Folds every chunk whose turn has come; with `upto`, waits for the decoder
        // until every chunk numbered below it is folded.
        let mut fold = |base: &mut Base<'_>,
                        log: &mut MerkleLog,
                        ready_now: Option<Numbered>,
                        upto: Option<u64>|
         -> Result<(), Unusable> {
            if let Some((n, r)) = ready_now {
                ready.insert(n, r);
            }
            while let Ok((n, r)) = from_decoder.try_recv() {
                ready.insert(n, r);
            }
            loop {
                let decoded = match ready.remove(&next_fold) {
                    Some(d) => d,
                    None if upto.is_some_and(|u| next_fold < u) => match from_decoder.recv() {
                        Ok((n, r)) => {
                            ready.insert(n, r);
                            continue;
                        }
                        Err(_) => {
                            let lost = format!("chunk {next_fold} of the replay was lost");
                            return Err(Unusable::Ledger(ReplayError::Internal(lost)));
                        }
                    },
                    None => return Ok(()),
                };
                for (hash, event) in decoded? {
                    if let Some(event) = event {
                        let state = base.get()?;
                        state.apply_owned(event).map_err(|err| ReplayError::corrupt(log.len(), err.to_string()))?;
                    }
                    log.push(hash);
                }
                next_fold += 1;
            }
        };
        // Hands a chunk to the decoder, or decodes it here when the decoder is busy
        // (or has stopped on a bad event, which folding then reports).
        let dispatch = |n: u64, chunk: Vec<StoredEvent>| -> Option<Numbered> {
            match to_decoder.try_send((n, chunk)) {
                Ok(()) => None,
                Err(
                    std::sync::mpsc::TrySendError::Full((n, chunk))
                    | std::sync::mpsc::TrySendError::Disconnected((n, chunk)),
                ) => Some((n, decode_chunk(chunk, snapshot_seq))),
            }
        };
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut chunks = 0u64;
        let mut expected = 0u64;
        // The first error folding met (the earliest in the ledger), or a gap the scan met.
        let mut folding_failed: Option<Unusable> = None;
        let mut gap: Option<ReplayError> = None;
        let stop = || StoreError::Invalid("replay stopped".into());
        let scanned = store.scan(0, &mut |e| {
            if e.index != expected {
                gap = Some(ReplayError::corrupt(expected, "missing from the store"));
                return Err(stop());
            }
            expected += 1;
            chunk.push(e);
            if chunk.len() == CHUNK {
                let here = dispatch(chunks, std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)));
                chunks += 1;
                if let Err(err) = fold(&mut base, &mut log, here, None) {
                    folding_failed = Some(err);
                    return Err(stop());
                }
            }
            Ok(())
        });
        if let Some(err) = folding_failed {
            return Err(err);
        }
        let mut last = None;
        if gap.is_none() && !chunk.is_empty() {
            last = dispatch(chunks, chunk);
            chunks += 1;
        }
        drop(to_decoder);
        // Everything before a gap is folded first, so the earliest error wins.
        fold(&mut base, &mut log, last, Some(chunks))?;
        if let Some(gap) = gap {
            return Err(Unusable::Ledger(gap));
        }
        scanned.map_err(Unusable::from)
    })?;
    Ok((base.into_state()?, log))
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
    /// The largest tree size a verified checkpoint covers (0: none).
    pub signed_size: u64,
    /// Snapshots whose digest is that of the state folded at their sequence.
    pub snapshots: usize,
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
    fold_seeing(store, upto, progress, &mut |_, _| Ok(()))
}

/// [`fold`], showing `at` the state at every sequence: the empty state at 0, then the
/// state after every event.
fn fold_seeing(
    store: &dyn LedgerStore,
    upto: Option<u64>,
    progress: &mut dyn FnMut(u64, u64),
    at: &mut dyn FnMut(u64, &State) -> Result<(), ReplayError>,
) -> Result<(State, MerkleLog), ReplayError> {
    let total = store.len()?;
    let n = upto.unwrap_or(total);
    if n > total {
        return Err(ReplayError::Internal(format!("the ledger has only {total} events; cannot go to sequence {n}")));
    }
    let mut state = State::default();
    let mut log = MerkleLog::new();
    at(0, &state)?;
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
        if let Err(err) = at(log.len(), &state) {
            failure = Some(err);
            return Err(stop());
        }
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

/// Checks the verified log against a checkpoint kept outside it (the `.checkpoint` file
/// a backup writes, or one fetched from `/v1/ledger/checkpoint` and kept): it must
/// verify under `key` (else the store's own key, `ours`), and the log must hold that
/// many events with that root there. With `key`, the store must also be signed by that
/// key, so a ledger rewritten and re-signed under a key of its own does not pass.
/// Returns the checkpoint's size, if one was given.
fn check_outside(
    log: &MerkleLog,
    ours: Option<&note::Verifier>,
    signed: Option<&str>,
    key: Option<&note::Verifier>,
) -> Result<Option<u64>, ReplayError> {
    if key.is_some() && ours.is_none() {
        return Err(ReplayError::Checkpoint {
            size: 0,
            detail: "the ledger holds no verifier key, so it cannot be shown to be signed by the key given".into(),
        });
    }
    if let (Some(given), Some(stored)) = (key, ours)
        && (given.key() != stored.key() || given.name() != stored.name())
    {
        return Err(ReplayError::Checkpoint {
            size: 0,
            detail: format!(
                "the ledger is signed by '{}' ({:08x}), not by the key given ('{}', {:08x}): its checkpoints were re-signed",
                stored.name(),
                stored.key_id(),
                given.name(),
                given.key_id()
            ),
        });
    }
    let Some(signed) = signed else { return Ok(None) };
    let Some(v) = key.or(ours) else {
        return Err(ReplayError::Internal("the store has no signing key: pass the verifier key with --key".into()));
    };
    let cp = checkpoint::open(signed, v).map_err(|e| ReplayError::Checkpoint {
        // The size it claims, read without trusting it: only for the message.
        size: signed.lines().nth(1).and_then(|l| l.parse().ok()).unwrap_or(0),
        detail: format!(
            "the given checkpoint does not verify under '{}' ({:08x}): {e}; it is another ledger's, or was altered",
            v.name(),
            v.key_id()
        ),
    })?;
    let Ok(root) = log.root_at(cp.size) else {
        return Err(ReplayError::Checkpoint {
            size: cp.size,
            detail: format!("the ledger has only {} events: events it once held are gone", log.len()),
        });
    };
    if root != cp.root {
        return Err(ReplayError::Checkpoint {
            size: cp.size,
            detail: "the ledger's root at this size is not the given checkpoint's: the ledger was rewritten".into(),
        });
    }
    Ok(Some(cp.size))
}

/// The full offline audit: every leaf hash, every event folds, every checkpoint's root
/// and signature, and every snapshot is the state folded at its sequence. `progress` is
/// called with the events done so far.
pub fn verify(store: &dyn LedgerStore, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport, ReplayError> {
    verify_against(store, progress, None, None).map(|(report, _)| report)
}

/// [`verify`], then the verified log against a checkpoint and a verifier key kept
/// outside the ledger (see `check_outside`); also returns the checkpoint's size.
pub fn verify_against(
    store: &dyn LedgerStore,
    progress: &mut dyn FnMut(u64),
    signed: Option<&str>,
    key: Option<&note::Verifier>,
) -> Result<(VerifyReport, Option<u64>), ReplayError> {
    // Read before the log: on a live ledger, checkpoints signed while it is folded would
    // name sizes beyond what was read, and look like a removed tail.
    let checkpoints = store.checkpoints()?;
    let snapshots: std::collections::BTreeMap<u64, merkle::Hash> = store.snapshot_seqs()?.into_iter().collect();
    let mismatch = |seq, detail: String| ReplayError::Snapshot { seq, detail };
    if key.is_some() && signed.is_none() && checkpoints.is_empty() {
        // Nothing to check the key against: a ledger rewritten with its checkpoints
        // deleted would otherwise pass as signed by it.
        return Err(ReplayError::Checkpoint {
            size: 0,
            detail: "the ledger holds no checkpoint, so nothing in it is shown to be signed by the key given \
                     (were its checkpoints deleted?); pass a checkpoint kept outside it with --checkpoint"
                .into(),
        });
    }
    let (state, log) = fold_seeing(store, None, &mut |done, _| progress(done), &mut |seq, state| {
        let Some(stored) = snapshots.get(&seq) else { return Ok(()) };
        let folded = state.digest().map_err(|e| ReplayError::Internal(e.to_string()))?;
        if folded != *stored {
            return Err(mismatch(seq, "its digest is not the digest of the state folded from the ledger".into()));
        }
        Ok(())
    })?;
    // (A snapshot whose bytes do not hash to its digest is harmless: start-up skips it.)
    if let Some((&seq, _)) = snapshots.iter().find(|(seq, _)| **seq > log.len()) {
        return Err(mismatch(seq, format!("the ledger has only {} events", log.len())));
    }
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
    let extends = check_outside(&log, verifier.as_ref(), signed, key)?;
    let digest = state.digest().map_err(|e| ReplayError::Internal(e.to_string()))?;
    let report = VerifyReport {
        events: log.len(),
        checkpoints: checkpoints.len(),
        signed_size: checkpoints.iter().map(|c| c.size).chain(extends).max().unwrap_or(0),
        snapshots: snapshots.len(),
        root: log.root(),
        digest,
    };
    Ok((report, extends))
}

#[cfg(test)]
mod tests {
    use tollgate_core::catalog::ProductSpec;
    use tollgate_core::ids::ProductKey;
    use tollgate_core::{Command, Meta, Timestamp, decide};
    use tollgate_store::{NewEvent, SnapshotRecord, SqliteStore};

    use super::*;

    /// A ledger of `n` product events (many chunks, so both threads decode some),
    /// with `bad(index, leaf, hash)` free to spoil any of them.
    fn ledger(
        n: u64,
        bad: impl Fn(u64, &mut Vec<u8>, &mut merkle::Hash),
    ) -> (tempfile::TempDir, Vec<u8>, merkle::Hash) {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&tmp.path().join("l.db")).unwrap();
        let mut state = State::default();
        let now = Timestamp::parse("2026-11-23T00:00:00Z").unwrap();
        let meta = Meta { actor: "test".into(), reason: None, request_id: "r".into() };
        let mut leaves = Vec::new();
        for i in 0..n {
            let spec =
                ProductSpec { key: ProductKey::parse(&format!("p{i}")).unwrap(), name: "P".into(), features: vec![] };
            for e in decide(&state, &Command::CreateProduct(spec), &meta, now).unwrap() {
                state.apply(&e).unwrap();
                let mut leaf = e.encode().unwrap();
                let mut hash = merkle::leaf_hash(&leaf);
                bad(leaves.len() as u64, &mut leaf, &mut hash);
                leaves.push((leaf, hash));
            }
        }
        for (i, part) in leaves.chunks(1_000).enumerate() {
            let evs: Vec<NewEvent<'_>> = part.iter().map(|(l, h)| NewEvent { leaf: l, leaf_hash: *h }).collect();
            store.append((i * 1_000) as u64, &evs, &[]).unwrap();
        }
        let mut log = MerkleLog::new();
        for (_, h) in &leaves {
            log.push(*h);
        }
        (tmp, state.encode().unwrap(), log.root())
    }

    fn load_at(tmp: &tempfile::TempDir) -> Result<Loaded, ReplayError> {
        load(&SqliteStore::open_read_only(&tmp.path().join("l.db")).unwrap())
    }

    #[test]
    fn replay_over_both_threads_folds_every_event_in_order() {
        let (tmp, expected, root) = ledger(5_000, |_, _, _| {});
        for _ in 0..3 {
            let loaded = load_at(&tmp).unwrap();
            assert_eq!(loaded.state.seq(), 5_000);
            assert_eq!(loaded.state.encode().unwrap(), expected, "same state as folding one by one");
            assert_eq!(loaded.log.len(), 5_000);
            assert_eq!(loaded.log.root(), root, "leaf hashes pushed in ledger order");
        }
    }

    /// Start-up from a snapshot folds the events after it onto it and gives the state
    /// genesis gives; a snapshot that does not match its digest, does not decode or
    /// claims another sequence is skipped for the next older one.
    #[test]
    fn snapshots_load_while_the_log_is_verified_and_bad_ones_are_skipped() {
        let (tmp, expected, root) = ledger(5_000, |_, _, _| {});
        let path = tmp.path().join("l.db");
        let snapshot_at = |seq: u64| {
            let store = SqliteStore::open_read_only(&path).unwrap();
            let (state, _) = fold(&store, Some(seq), &mut |_, _| {}).unwrap();
            let bytes = state.encode().unwrap();
            SnapshotRecord { seq, digest: digest_of(&bytes), state: bytes }
        };
        let (older, newer) = (snapshot_at(2_000), snapshot_at(4_000));
        let mut store = SqliteStore::open(&path).unwrap();
        store.put_snapshot(&older).unwrap();
        store.put_snapshot(&newer).unwrap();
        let check = |snapshot_seq: u64| {
            let loaded = load_at(&tmp).unwrap();
            assert_eq!(loaded.snapshot_seq, snapshot_seq);
            assert_eq!(loaded.state.encode().unwrap(), expected, "the state genesis gives");
            assert_eq!(loaded.log.root(), root);
        };
        check(4_000);

        let spoiled = [
            // Another digest.
            SnapshotRecord { digest: [7; 32], ..snapshot_at(4_000) },
            // Not a state document, under its own digest.
            SnapshotRecord { seq: 4_000, digest: digest_of(b"[]"), state: b"[]".to_vec() },
            // A sound state, but of another sequence.
            SnapshotRecord { seq: 4_000, ..snapshot_at(3_000) },
        ];
        for bad in spoiled {
            store.prune_snapshots(0).unwrap();
            store.put_snapshot(&older).unwrap();
            store.put_snapshot(&bad).unwrap();
            check(2_000);
        }
        // Nothing usable: genesis.
        store.prune_snapshots(0).unwrap();
        store.put_snapshot(&SnapshotRecord { digest: [7; 32], ..snapshot_at(4_000) }).unwrap();
        check(0);
    }

    /// Whichever thread decodes the chunk, the error names the earliest bad event.
    /// A sound event (its hash verified) with a field this build does not know was
    /// written by a newer build: said so, not called damage to restore from a backup.
    #[test]
    fn an_event_of_a_newer_build_is_not_called_corrupt() {
        let (tmp, _, _) = ledger(10, |i, leaf, hash| {
            if i == 7 {
                let text = String::from_utf8(leaf.clone()).unwrap().replacen("{", "{\"added_later\":1,", 1);
                *leaf = text.into_bytes();
                *hash = merkle::leaf_hash(leaf);
            }
        });
        match load_at(&tmp) {
            Err(e @ ReplayError::Newer { index: 7, .. }) => {
                assert!(e.to_string().contains("a newer build") && e.to_string().contains("added_later"), "{e}")
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("an event of a newer build was folded without its field"),
        }
    }

    #[test]
    fn replay_names_the_earliest_bad_event() {
        for (first, second) in [(0, 4_999), (511, 512), (700, 2_600), (3_071, 4_000), (4_999, 4_999)] {
            // The first is an undecodable event with a correct leaf hash; the second a
            // leaf whose hash does not match.
            let (tmp, _, _) = ledger(5_000, |i, leaf, hash| {
                if i == first {
                    *leaf = br#"{"not": "an event"}"#.to_vec();
                    *hash = merkle::leaf_hash(leaf);
                } else if i == second {
                    hash[0] ^= 1;
                }
            });
            for _ in 0..3 {
                match load_at(&tmp) {
                    Err(ReplayError::Corrupt { index, .. }) => {
                        assert_eq!(index, first, "bad events at {first} and {second}")
                    }
                    Err(e) => panic!("unexpected error {e}"),
                    Ok(_) => panic!("a ledger with a bad event at {first} loaded"),
                }
            }
        }
    }
}
