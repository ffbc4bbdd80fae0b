//! The engine: the one writer that turns commands into ledger events.
//!
//! A request decides its own command, in its own task, under the *decider* lock:
//! against a speculative state (the committed state plus every batch decided but not
//! yet committed), into the *open batch*. The *committer* thread takes the open batch
//! whenever it is free (group commit: everything decided while the last transaction
//! was made durable), appends it and its idempotency records in one durable
//! transaction, and only then publishes the new state and answers. Deciding in the
//! request's task, not on a thread of its own, saves a wake-up on every request's path:
//! on a virtual machine whose idle cores halt, each one cost tens of microseconds of a
//! round trip that is mostly waiting (docs/BENCHMARKS.md). A waiting committer is woken
//! by the decision that opens a batch. The *decider thread* takes the rest, in order
//! with the decisions: checkpoints, snapshots, catching up, requests the committer
//! handed back, and, on a shared store (read across the network while deciding, so not
//! from an async task, nor under a lock an async task may wait on), every request. A
//! third thread, the *publisher*, answers the requests of a published commit and drops
//! the state it replaced, so the committer goes straight back to the disk.
//!
//! Readers see committed state only. If a commit fails, the committer bumps the epoch:
//! it refuses every batch decided under the old epoch (they built on the failed one),
//! and the decider starts again from the committed state.
//!
//! On a shared store (PostgreSQL, several nodes) another node may append first: the
//! append then fails with `Conflict`, the committer folds the events it missed (the
//! same checks as replay), decides the batch's commands again against the new state
//! and retries, a bounded number of times (holding the other nodes' appends meanwhile,
//! so it cannot lose twice). Whenever the committed state moves other than by the
//! decider's own next batch (events folded from other nodes, a batch decided again),
//! the epoch moves after it: batches decided on the old state are handed back to the
//! decider, which decides them again on the new one, rather than refused. A batch
//! with no events still confirms the log's length under the append lock, so that no
//! answer comes from a state other nodes have already moved past. The follower
//! (`crate::tail`) asks the committer to catch up whenever any node appends, so every
//! node's state follows the one log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread;
use std::time::Duration;

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch};
use tollgate_core::checkpoint::{self, Checkpoint};
use tollgate_core::merkle::{self, MerkleLog};
use tollgate_core::note;
use tollgate_core::{Command, Meta, Refusal, State, Timestamp, decide};
use tollgate_store::{CheckpointRecord, IdempotencyRecord, LedgerStore, NewEvent, SnapshotRecord, StoreError, Unique};

use crate::replay;

const QUEUE: usize = 8192;
/// How many events one transaction takes at most when the committer merges the
/// batches decided while it waited for the disk.
const MAX_MERGE: usize = 4096;
/// How many times a batch is decided again after other nodes appended first, before its
/// requests are answered with `Contended`.
const MAX_RETRIES: usize = 8;
/// Events read per query while catching up.
const CATCH_UP_PAGE: u64 = 2_000;
/// How many times the committer hands a request back to the decider (its batch was
/// decided on a state other nodes' events replaced) before deciding it itself.
const MAX_HAND_BACKS: u8 = 4;

/// Renders the response of a command from the state it produced. `Fn`, not `FnOnce`:
/// on a shared store a command may be decided, and so rendered, more than once.
pub type Render = Box<dyn Fn(&State, Timestamp) -> serde_json::Value + Send>;

/// An idempotency key with the hash of the request it came with.
#[derive(Clone, Debug)]
pub struct Idempotency {
    pub scope: String,
    pub key: String,
    pub request_hash: [u8; 32],
}

#[derive(Debug)]
pub struct Outcome {
    pub status: u16,
    pub body: Vec<u8>,
    /// The sequence (number of events) the answer reflects.
    pub seq: u64,
    /// True when the answer is a stored one for a repeated idempotency key.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Refused(Refusal),
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyMismatch,
    #[error("the ledger could not be written: {0}")]
    Store(#[from] StoreError),
    #[error("the engine has stopped")]
    Stopped,
    #[error("{0}")]
    Internal(String),
    /// The batch's next state can no longer be trusted; nothing of it is committed.
    #[error("{0}")]
    Poisoned(String),
    /// Other nodes appended first every time this write was tried; nothing of it is
    /// committed, and it may be retried.
    #[error("other nodes kept appending first ({0} attempts)")]
    Contended(usize),
    /// The ledger could not be written, and nothing of this write is in it: it may be
    /// retried as it is.
    #[error("not written: {0}")]
    NotWritten(String),
    /// The store reported an error for the transaction holding this write, and whether
    /// it committed could not be checked: it may be in the ledger. A retry with the same
    /// idempotency key is answered from it if it is.
    #[error("unconfirmed: {0}")]
    Unconfirmed(String),
}

/// Whether a batch whose append reported an error is in the store after all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Landed {
    Yes,
    No,
    /// The store could not be read to tell.
    Unknown,
}

pub(crate) struct Submit {
    command: Command,
    meta: Meta,
    status: u16,
    idempotency: Option<Idempotency>,
    render: Render,
    reply: oneshot::Sender<Result<Outcome, EngineError>>,
    /// How many times the committer handed it back to be decided again.
    handed_back: u8,
}

pub(crate) enum Job {
    Submit(Box<Submit>),
    Checkpoint(oneshot::Sender<Result<CheckpointRecord, EngineError>>),
    Snapshot(SnapshotRecord),
    /// Fold what other nodes appended (from the follower, or a request waiting for a
    /// sequence).
    CatchUp,
    /// Requests the committer handed back are waiting (see `Decider::bounced`).
    Wake,
    Prune(Prune),
}

/// Delete up to `limit` idempotency records created before `before` (see
/// `LedgerStore::prune_idempotency`): on the committer, the one writer, between batches,
/// so that it never waits for a lock with a batch.
pub(crate) struct Prune {
    before: String,
    limit: usize,
    reply: oneshot::Sender<Result<usize, EngineError>>,
}

/// The log as readers see it: leaf hashes of committed events, for roots and proofs.
pub type SharedLog = Arc<RwLock<MerkleLog>>;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Take a snapshot of the state every this many events (0: never by count).
    pub snapshot_every: u64,
    /// Also take one when this much time has passed and the state has changed since the
    /// last (`None`: never by time).
    pub snapshot_interval: Option<std::time::Duration>,
    /// Keep this many snapshots.
    pub snapshot_keep: usize,
    /// Seals the checkpoint signing key at rest (`None`: kept in plaintext, as before).
    pub master_key: Option<Arc<crate::kek::MasterKey>>,
    /// The data directory's lock (`crate::lock_data_dir`), held for as long as the
    /// committer runs, so a second server cannot start on the directory before this one
    /// has written its last checkpoint.
    pub data_lock: Option<Arc<std::fs::File>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { snapshot_every: 10_000, snapshot_interval: None, snapshot_keep: 3, master_key: None, data_lock: None }
    }
}

#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Job>,
    /// Requests are decided in the task that submits them, under this lock: a hop to
    /// another thread costs a wake-up on every request's path.
    decider: Arc<Mutex<Decider>>,
    committer_gone: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    /// Why the last attempt to fold what other nodes appended failed; `None` once one
    /// succeeds. A node that cannot follow the shared ledger serves an old state.
    behind: Arc<Mutex<Option<String>>>,
    state: Arc<ArcSwap<State>>,
    log: SharedLog,
    verifier_key: Arc<str>,
    /// The committed sequence, for requests that wait for one (`Tollgate-Min-Seq`).
    seq: watch::Receiver<u64>,
    shared: bool,
}

struct Decider {
    /// Reads idempotency records that are already committed.
    reader: Box<dyn LedgerStore>,
    committed: Arc<ArcSwap<State>>,
    epoch: Arc<AtomicU64>,
    /// The number of the last batch the committer made durable.
    published: Arc<AtomicU64>,
    /// Unbounded, so that no sender ever waits while holding the decider's lock (the
    /// committer takes it too); requests bound what is in flight.
    to_committer: std::sync::mpsc::Sender<Work>,
    /// Requests of batches decided on a state that is no longer the committed one,
    /// handed back by the committer to be decided again (before newer ones). Unbounded,
    /// so that the committer never waits on the decider, which may be waiting on it.
    bounced: std::sync::mpsc::Receiver<Vec<Submit>>,
    /// The epoch `spec` was built in.
    seen_epoch: u64,
    /// The committed state plus every batch handed to the committer.
    spec: State,
    /// Idempotency records decided but perhaps not yet committed (the reader cannot
    /// see them yet), with the number of their batch.
    recent: Vec<(u64, IdempotencyRecord)>,
    /// Batches numbered so far.
    number: u64,
    /// Decided on top of `spec`, not yet taken by the committer.
    open: Option<Open>,
    /// The committer found nothing to take and waits to be woken.
    committer_idle: bool,
    /// Set when the committer's thread ends: nothing decided could be committed.
    committer_gone: Arc<AtomicBool>,
}

type Reply = (oneshot::Sender<Result<Outcome, EngineError>>, Result<Outcome, EngineError>);

/// What the committer hands the publisher after a commit: the answers, and the state
/// the commit replaced, to be dropped off the committer's thread.
struct Published {
    replies: Vec<Reply>,
    replaced: Arc<State>,
}

/// Answers requests and drops replaced states, so that the committer goes back to the
/// disk as soon as a batch is durable and visible. Dropping a replaced state frees the
/// persistent-map nodes the next one copied, a large part of a commit's CPU time.
fn publisher(rx: std::sync::mpsc::Receiver<Published>) {
    for p in rx {
        for (reply, result) in p.replies {
            let _ = reply.send(result);
        }
        drop(p.replaced);
    }
}

struct Committer {
    /// Weak: the engine's handles own the decider, and it owns the committer's channel,
    /// which closes (and so stops the committer) when the last handle goes.
    decider: Weak<Mutex<Decider>>,
    /// See [`Engine::behind`].
    behind: Arc<Mutex<Option<String>>>,
    publish: std::sync::mpsc::Sender<Published>,
    store: Box<dyn LedgerStore>,
    shared: bool,
    /// This committer holds the other nodes' appends (after a lost race).
    holding: bool,
    commits: Arc<AtomicU64>,
    state: Arc<ArcSwap<State>>,
    seq: watch::Sender<u64>,
    epoch: Arc<AtomicU64>,
    published: Arc<AtomicU64>,
    bounce: std::sync::mpsc::Sender<Vec<Submit>>,
    log: SharedLog,
    signer: note::Signer,
    origin: String,
    config: EngineConfig,
    /// Weak, so that the engine's own handle does not keep the channel open at shutdown.
    snapshot_tx: mpsc::WeakSender<Job>,
    last_snapshot: u64,
    last_snapshot_at: std::time::Instant,
}

/// What the decider hands the committer, in order.
enum Work {
    Batch(Batch),
    /// Something was decided while the committer waited: it takes the open batch.
    Wake,
    Checkpoint(oneshot::Sender<Result<CheckpointRecord, EngineError>>),
    Snapshot(SnapshotRecord),
    CatchUp,
    Prune(Prune),
}

impl Batch {
    /// Appends `next`, decided right after this batch on top of its state, so that
    /// both commit in one transaction.
    fn merge(&mut self, next: Batch) {
        self.leaves.extend(next.leaves);
        self.records.extend(next.records);
        self.pending.extend(next.pending);
        self.state = next.state;
        self.number = next.number;
    }
}

struct Batch {
    /// The decider's count of batches: the committer publishes the last one it made
    /// durable, so the decider knows which idempotency records the store now holds.
    number: u64,
    epoch: u64,
    expected_len: u64,
    leaves: Vec<(Vec<u8>, merkle::Hash)>,
    records: Vec<IdempotencyRecord>,
    pending: Vec<Pending>,
    state: Arc<State>,
}

pub fn now() -> Timestamp {
    Timestamp::from_datetime(OffsetDateTime::now_utc())
        .unwrap_or_else(|| Timestamp::from_millis(0).expect("epoch is in range"))
}

impl Engine {
    /// Opens the ledger: newest valid snapshot plus replay of the rest with every leaf
    /// hash verified, then starts the decider and committer threads (and, on a shared
    /// store, the follower). Joining the returned handle waits for both writers, after
    /// the last engine handle is dropped.
    pub fn start(
        mut store: Box<dyn LedgerStore>,
        config: EngineConfig,
    ) -> Result<(Engine, thread::JoinHandle<()>), replay::ReplayError> {
        let identity = replay::identity(&mut *store, config.master_key.as_deref())?;
        let loaded = replay::load(&*store)?;
        let reader = store.reader()?;
        let shared = store.shared();
        let follower = if shared { Some(store.reader()?) } else { None };
        let (seq_tx, seq_rx) = watch::channel(loaded.state.seq());
        let state = Arc::new(ArcSwap::from_pointee(loaded.state));
        let log = Arc::new(RwLock::new(loaded.log));
        let (tx, rx) = mpsc::channel(QUEUE);
        let (work_tx, work_rx) = std::sync::mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let epoch = Arc::new(AtomicU64::new(0));
        let published = Arc::new(AtomicU64::new(0));
        let (bounce_tx, bounce_rx) = std::sync::mpsc::channel();
        let (publish_tx, publish_rx) = std::sync::mpsc::channel();
        let committer_gone = Arc::new(AtomicBool::new(false));
        let decider = Arc::new(Mutex::new(Decider::new(
            reader,
            state.clone(),
            epoch.clone(),
            published.clone(),
            work_tx,
            bounce_rx,
            committer_gone.clone(),
        )));
        let behind: Arc<Mutex<Option<String>>> = Arc::default();
        let committer = Committer {
            decider: Arc::downgrade(&decider),
            behind: behind.clone(),
            publish: publish_tx,
            store,
            shared,
            holding: false,
            commits: commits.clone(),
            state: state.clone(),
            seq: seq_tx,
            epoch: epoch.clone(),
            published: published.clone(),
            bounce: bounce_tx,
            log: log.clone(),
            origin: identity.origin.clone(),
            signer: identity.signer,
            config,
            snapshot_tx: tx.downgrade(),
            last_snapshot: loaded.snapshot_seq,
            last_snapshot_at: std::time::Instant::now(),
        };
        let spawn_err = |e: std::io::Error| replay::ReplayError::Internal(e.to_string());
        if let Some(follower) = follower {
            crate::tail::spawn(follower, tx.downgrade()).map_err(spawn_err)?;
        }
        let publisher = thread::Builder::new()
            .name("tollgate-publish".into())
            .spawn(move || publisher(publish_rx))
            .map_err(spawn_err)?;
        let gone = CommitterGone { decider: Arc::downgrade(&decider), gone: committer_gone.clone() };
        let committer = thread::Builder::new()
            .name("tollgate-commit".into())
            .spawn(move || {
                let _gone = gone;
                committer.run(work_rx);
            })
            .map_err(spawn_err)?;
        let jobs = decider.clone();
        let handle = thread::Builder::new()
            .name("tollgate-decide".into())
            .spawn(move || {
                run_jobs(jobs, rx);
                let _ = committer.join();
                let _ = publisher.join();
            })
            .map_err(spawn_err)?;
        let engine = Engine {
            tx,
            decider,
            committer_gone,
            commits,
            behind,
            state,
            log,
            verifier_key: identity.verifier_key.into(),
            seq: seq_rx,
            shared,
        };
        Ok((engine, handle))
    }

    /// Why this node cannot fold what other nodes appended to the shared ledger (an
    /// event of a newer build, a damaged one), while it cannot: it serves an older
    /// state meanwhile, and `/readyz` says so.
    pub fn behind(&self) -> Option<String> {
        self.behind.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Durable transactions committed since start: events / commits is the group-commit
    /// batch size.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// False once the writer threads have stopped.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed() && !self.committer_gone.load(Ordering::Acquire)
    }

    /// True when other nodes write the same ledger.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The last committed state. Lock-free.
    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    pub fn log(&self) -> &SharedLog {
        &self.log
    }

    /// The C2SP verifier key of the checkpoint signer.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// Asks the committer to fold what other nodes appended, without waiting for the
    /// follower. A full queue means it is busy and will catch up soon anyway.
    pub fn nudge(&self) {
        if self.shared {
            let _ = self.tx.try_send(Job::CatchUp);
        }
    }

    /// Waits until the committed state has reached `seq`, at most `timeout`; returns
    /// the sequence reached.
    pub async fn wait_for_seq(&self, seq: u64, timeout: Duration) -> u64 {
        let mut rx = self.seq.clone();
        if *rx.borrow() >= seq {
            return *rx.borrow();
        }
        self.nudge();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|s| *s >= seq)).await;
        *rx.borrow()
    }

    pub async fn submit(
        &self,
        command: Command,
        meta: Meta,
        status: u16,
        idempotency: Option<Idempotency>,
        render: Render,
    ) -> Result<Outcome, EngineError> {
        let (reply, rx) = oneshot::channel();
        let submit = Submit { command, meta, status, idempotency, render, reply, handed_back: 0 };
        if self.shared {
            // A shared store is read across the network while deciding (idempotency
            // keys, requests handed back): that happens on the decider thread, under the
            // decider lock, and no async task may wait on that lock meanwhile, so on a
            // shared store every request is decided there, as before.
            self.tx.send(Job::Submit(Box::new(submit))).await.map_err(|_| EngineError::Stopped)?;
        } else if self.is_running() {
            self.decider.lock().unwrap_or_else(|p| p.into_inner()).decide(submit);
        } else {
            return Err(EngineError::Stopped);
        }
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Signs a checkpoint of the committed tree if the newest one is older.
    pub async fn checkpoint(&self) -> Result<CheckpointRecord, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job::Checkpoint(reply)).await.map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Deletes up to `limit` idempotency records whose `created_at` sorts before
    /// `before`, in the committer's own short transaction; returns how many.
    pub async fn prune_idempotency(&self, before: String, limit: usize) -> Result<usize, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job::Prune(Prune { before, limit, reply })).await.map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }
}

/// A decided command: the request it came from (kept, so that it can be decided again)
/// and its result so far.
struct Pending {
    submit: Submit,
    result: Result<Outcome, EngineError>,
}

impl Pending {
    fn answer(self, result: Result<Outcome, EngineError>) {
        let _ = self.submit.reply.send(result);
    }
}

/// A batch's next state, events (leaf bytes and hashes), idempotency records and
/// requests, as `decide_all` leaves them.
type Decided = (State, Vec<(Vec<u8>, merkle::Hash)>, Vec<IdempotencyRecord>, Vec<Pending>);

/// Decides `submits` in order on top of `base`. `None` when the batch was dropped (a
/// poisoned state); every request has then been answered.
fn decide_all(
    base: &State,
    submits: impl IntoIterator<Item = Submit>,
    lookup: &dyn LedgerStore,
    recent: &[(u64, IdempotencyRecord)],
) -> Option<Decided> {
    let mut next = base.clone();
    let mut submits = submits.into_iter();
    let n = submits.size_hint().0;
    let mut leaves: Vec<(Vec<u8>, merkle::Hash)> = Vec::with_capacity(n);
    let mut records: Vec<IdempotencyRecord> = Vec::new();
    let mut pending: Vec<Pending> = Vec::with_capacity(n);
    let now = now();
    while let Some(submit) = submits.next() {
        let ctx = DecideCtx { now, recent, lookup };
        let result = decide_one(&mut next, &submit, &ctx, &mut leaves, &mut records);
        if let Err(EngineError::Poisoned(why)) = &result {
            let replies = pending.into_iter().map(|p| p.submit.reply);
            drop_batch(why, std::iter::once(submit.reply).chain(replies).chain(submits.map(|s| s.reply)));
            return None;
        }
        pending.push(Pending { submit, result });
    }
    Some((next, leaves, records, pending))
}

/// The batch's next state can no longer be trusted (a decision was `Poisoned`): every
/// request in it is answered with an error and nothing of it is committed.
fn drop_batch(why: &str, replies: impl Iterator<Item = oneshot::Sender<Result<Outcome, EngineError>>>) {
    tracing::error!(error = %why, "batch dropped");
    for r in replies {
        let _ = r.send(Err(EngineError::Internal(format!("batch dropped: {why}"))));
    }
}

/// Decides one request on top of `next`. A panic in it (a bug: in `decide`, `apply`
/// or the request's renderer) would leave `next` half-changed; it comes back as
/// `Poisoned`, so the caller drops the whole batch, as for any decision that cannot be
/// trusted, rather than commit part of a request.
fn decide_one(
    next: &mut State,
    s: &Submit,
    ctx: &DecideCtx<'_>,
    leaves: &mut Vec<(Vec<u8>, merkle::Hash)>,
    records: &mut Vec<IdempotencyRecord>,
) -> Result<Outcome, EngineError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decide_unguarded(next, s, ctx, leaves, records)))
        .unwrap_or_else(|_| Err(EngineError::Poisoned("deciding a request panicked".into())))
}

fn decide_unguarded(
    next: &mut State,
    s: &Submit,
    ctx: &DecideCtx<'_>,
    leaves: &mut Vec<(Vec<u8>, merkle::Hash)>,
    records: &mut Vec<IdempotencyRecord>,
) -> Result<Outcome, EngineError> {
    if let Some(idem) = &s.idempotency {
        let same = |r: &&IdempotencyRecord| r.scope == idem.scope && r.key == idem.key;
        let earlier = match records.iter().find(same).or_else(|| ctx.recent.iter().map(|(_, r)| r).find(same)) {
            Some(r) => Some(r.clone()),
            None => ctx.lookup.idempotency(&idem.scope, &idem.key)?,
        };
        if let Some(r) = earlier {
            if r.request_hash != idem.request_hash {
                return Err(EngineError::IdempotencyMismatch);
            }
            return Ok(Outcome { status: r.status, body: r.body, seq: next.seq(), replayed: true });
        }
    }
    let events = decide(next, &s.command, &s.meta, ctx.now).map_err(EngineError::Refused)?;
    // Applied straight to the batch's next state: an event that `decide` produced
    // and `apply` rejects is a bug, and the whole batch is dropped for it.
    for e in &events {
        let bytes = e.encode().map_err(|e| EngineError::Poisoned(e.to_string()))?;
        next.apply(e).map_err(|err| EngineError::Poisoned(format!("decided an event that does not apply: {err}")))?;
        let hash = merkle::leaf_hash(&bytes);
        leaves.push((bytes, hash));
    }
    let body = serde_json::to_vec(&(s.render)(next, ctx.now)).map_err(|e| EngineError::Internal(e.to_string()))?;
    if let Some(idem) = &s.idempotency {
        records.push(IdempotencyRecord {
            scope: idem.scope.clone(),
            key: idem.key.clone(),
            request_hash: idem.request_hash,
            status: s.status,
            body: body.clone(),
            created_at: ctx.now.to_string(),
        });
    }
    Ok(Outcome { status: s.status, body, seq: next.seq(), replayed: false })
}

impl Decider {
    fn new(
        reader: Box<dyn LedgerStore>,
        committed: Arc<ArcSwap<State>>,
        epoch: Arc<AtomicU64>,
        published: Arc<AtomicU64>,
        to_committer: std::sync::mpsc::Sender<Work>,
        bounced: std::sync::mpsc::Receiver<Vec<Submit>>,
        committer_gone: Arc<AtomicBool>,
    ) -> Self {
        let seen_epoch = epoch.load(Ordering::Acquire);
        let spec = (*committed.load_full()).clone();
        Self {
            reader,
            committed,
            epoch,
            published,
            to_committer,
            bounced,
            seen_epoch,
            spec,
            recent: Vec::new(),
            number: 0,
            open: None,
            committer_idle: false,
            committer_gone,
        }
    }

    /// Decides `submit` into the open batch, in the request's task, and wakes the
    /// committer if it waits for work. Requests the committer handed back are left to
    /// the decider thread: on a shared store deciding them may read the store.
    fn decide(&mut self, submit: Submit) {
        self.refresh();
        self.decide_one(submit);
        self.wake_committer();
    }

    /// On the decider thread: decides the requests the committer handed back (first,
    /// as they came first), then `submit`, and wakes the committer if it waits.
    fn decide_on_thread(&mut self, submit: Option<Submit>) {
        // Taken before the epoch is read: the committer moves the epoch before it hands
        // anything back, so `refresh` resets the state for these.
        let mut back = Vec::new();
        while let Ok(more) = self.bounced.try_recv() {
            back.extend(more);
        }
        self.refresh();
        for s in back {
            self.decide_one(s);
        }
        if let Some(s) = submit {
            self.decide_one(s);
        }
        self.wake_committer();
    }

    fn wake_committer(&mut self) {
        if self.open.is_some() && std::mem::take(&mut self.committer_idle) {
            let _ = self.to_committer.send(Work::Wake);
        }
    }

    /// Starts again from the committed state if the epoch moved (a commit failed, or
    /// other nodes appended: everything speculative is void; the open batch goes to the
    /// committer, which refuses it or hands it back), and forgets the idempotency
    /// records the store now holds.
    fn refresh(&mut self) {
        let current = self.epoch.load(Ordering::Acquire);
        if current != self.seen_epoch {
            self.close();
            self.seen_epoch = current;
            self.spec = (*self.committed.load_full()).clone();
            self.recent.clear();
        }
        // Records of batches the store holds are found there from now on. (Not by
        // sequence: a batch of no events but a record ends where it began.)
        let published = self.published.load(Ordering::Acquire);
        self.recent.retain(|(n, _)| *n > published);
    }

    fn decide_one(&mut self, submit: Submit) {
        if self.committer_gone.load(Ordering::Acquire) {
            // Nothing would commit it: its reply drops, which the caller sees as a
            // stopped engine.
            return;
        }
        let Self { open, spec, number, seen_epoch, recent, reader, .. } = self;
        let open = open.get_or_insert_with(|| {
            *number += 1;
            Open {
                number: *number,
                epoch: *seen_epoch,
                expected_len: spec.seq(),
                next: spec.clone(),
                leaves: Vec::new(),
                records: Vec::new(),
                pending: Vec::new(),
            }
        });
        let ctx = DecideCtx { now: now(), recent, lookup: &**reader };
        let result = decide_one(&mut open.next, &submit, &ctx, &mut open.leaves, &mut open.records);
        if let Err(EngineError::Poisoned(why)) = &result {
            let replies = self.open.take().into_iter().flat_map(|o| o.pending).map(|p| p.submit.reply);
            drop_batch(why, std::iter::once(submit.reply).chain(replies));
            return;
        }
        open.pending.push(Pending { submit, result });
        if open.leaves.len() >= MAX_MERGE {
            self.close();
        }
    }

    /// Hands the open batch to the committer. Every batch goes through the one channel,
    /// under this lock, so the committer takes them in the order they were decided.
    fn close(&mut self) {
        let Some(open) = self.open.take() else { return };
        self.recent.extend(open.records.iter().map(|r| (open.number, r.clone())));
        let state = Arc::new(open.next);
        self.spec = (*state).clone();
        let batch = Batch {
            number: open.number,
            epoch: open.epoch,
            expected_len: open.expected_len,
            leaves: open.leaves,
            records: open.records,
            pending: open.pending,
            state,
        };
        // A closed channel means the committer stopped; the replies drop, which callers
        // see as a stopped engine.
        let _ = self.to_committer.send(Work::Batch(batch));
    }

    /// Called by the committer when it has nothing queued: takes the open batch, or
    /// notes that the committer is about to wait (the next decision wakes it).
    fn committer_ready(&mut self) {
        if self.open.is_some() {
            self.close();
        } else {
            self.committer_idle = true;
        }
    }
}

impl Drop for Decider {
    /// Whatever is still open goes to the committer before it stops.
    fn drop(&mut self) {
        self.close();
    }
}

/// The thread that takes the engine's jobs other than the requests decided in place:
/// checkpoints, snapshots and catching up go to the committer after everything
/// decided before them; requests handed back, and every request on a shared store,
/// are decided here.
fn run_jobs(decider: Arc<Mutex<Decider>>, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.blocking_recv() {
        let (submit, forward) = match job {
            Job::Submit(s) => (Some(*s), None),
            Job::Wake => (None, None),
            Job::Checkpoint(reply) => (None, Some(Work::Checkpoint(reply))),
            Job::Snapshot(s) => (None, Some(Work::Snapshot(s))),
            Job::CatchUp => (None, Some(Work::CatchUp)),
            Job::Prune(p) => (None, Some(Work::Prune(p))),
        };
        let mut d = decider.lock().unwrap_or_else(|p| p.into_inner());
        // Every job takes what was handed back (the committer's `Wake` may have been
        // dropped on a full queue).
        d.decide_on_thread(submit);
        let Some(forward) = forward else { continue };
        // Keep order: a checkpoint asked for after a write covers it.
        d.close();
        if d.to_committer.send(forward).is_err() {
            return;
        }
    }
    tracing::info!("decider stopped");
}

/// Marks the committer gone when its thread ends, however it ends (a panic included):
/// the open batch is dropped (its callers see a stopped engine) and nothing is decided
/// from then on, rather than left waiting for a commit that cannot come.
struct CommitterGone {
    decider: Weak<Mutex<Decider>>,
    gone: Arc<AtomicBool>,
}

impl Drop for CommitterGone {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::Release);
        if let Some(d) = self.decider.upgrade() {
            let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
            let open = d.open.take();
            // Requests the committer handed back before it went: nothing will decide
            // them now (its sender is gone with it, so this empties the queue for good).
            let back: Vec<Vec<Submit>> = d.bounced.try_iter().collect();
            drop(d);
            drop((open, back));
        }
    }
}

/// Decided requests the committer has not taken yet, on top of the speculative state.
struct Open {
    number: u64,
    epoch: u64,
    expected_len: u64,
    next: State,
    leaves: Vec<(Vec<u8>, merkle::Hash)>,
    records: Vec<IdempotencyRecord>,
    pending: Vec<Pending>,
}

struct DecideCtx<'a> {
    now: Timestamp,
    recent: &'a [(u64, IdempotencyRecord)],
    lookup: &'a dyn LedgerStore,
}

impl Committer {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Work>) {
        // A work item taken off the channel while merging batches, to handle next.
        let mut carry: Option<Work> = None;
        loop {
            // The open batch was taken just before this work: taking it again at once
            // would only contend with the requests deciding into the next one.
            let mut took_open = false;
            let work = match carry.take() {
                Some(w) => w,
                None => match rx.try_recv() {
                    Ok(w) => w,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                    Err(std::sync::mpsc::TryRecvError::Empty) => {
                        // Nothing queued: take what was decided meanwhile, or wait for
                        // the next decision to wake this thread.
                        self.with_decider(Decider::committer_ready);
                        took_open = true;
                        match rx.recv() {
                            Ok(w) => w,
                            Err(_) => break,
                        }
                    }
                },
            };
            match work {
                Work::Wake => {}
                Work::Batch(mut b) => {
                    // Group commit across batches: whatever was decided while the last
                    // transaction was being made durable goes into this one, the open
                    // batch included.
                    while b.leaves.len() < MAX_MERGE {
                        match rx.try_recv() {
                            Ok(Work::Batch(next)) if next.epoch == b.epoch && next.expected_len == b.state.seq() => {
                                b.merge(next);
                            }
                            Ok(Work::Wake) => {}
                            Ok(other) => {
                                carry = Some(other);
                                break;
                            }
                            Err(_) if !took_open => {
                                took_open = true;
                                self.with_decider(Decider::close);
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit(b);
                }
                Work::Checkpoint(reply) => {
                    let _ = reply.send(self.sign_checkpoint());
                }
                Work::Snapshot(s) => {
                    if let Err(e) =
                        self.store.put_snapshot(&s).and_then(|()| self.store.prune_snapshots(self.config.snapshot_keep))
                    {
                        tracing::warn!(seq = s.seq, error = %e, "could not store snapshot");
                    } else {
                        tracing::info!(seq = s.seq, "snapshot stored");
                    }
                }
                Work::CatchUp => {
                    let outcome = self.catch_up();
                    let mut behind = self.behind.lock().unwrap_or_else(|p| p.into_inner());
                    match outcome {
                        Ok(_) => *behind = None,
                        // The store out of reach for a moment: every node sees the same,
                        // and taking them all out of a load balancer for it would turn a
                        // blip into an outage; the next poll tries again.
                        Err(e @ EngineError::Store(_)) => {
                            tracing::warn!(error = %e, "could not read the events other nodes appended; retrying");
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "could not fold the events other nodes appended");
                            *behind = Some(e.to_string());
                        }
                    }
                }
                Work::Prune(p) => {
                    let _ = p.reply.send(self.store.prune_idempotency(&p.before, p.limit).map_err(EngineError::from));
                }
            }
        }
        // The decider is gone: every Engine handle was dropped. Leave a final checkpoint.
        if let Err(e) = self.sign_checkpoint() {
            tracing::warn!(error = %e, "final checkpoint failed");
        }
        tracing::info!("committer stopped");
    }

    fn with_decider(&self, f: impl FnOnce(&mut Decider)) {
        if let Some(d) = self.decider.upgrade() {
            f(&mut d.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// Folds the events other nodes appended since this node's last, checking every leaf
    /// hash and that each event applies, and publishes the new state. Anything decided
    /// on the old state is void (the epoch moves). Returns how many events were folded.
    fn catch_up(&mut self) -> Result<u64, EngineError> {
        if !self.shared {
            return Ok(0);
        }
        self.fold_appended()
    }

    /// Folds every event the store holds beyond the state, as [`Self::catch_up`]
    /// describes, on any store.
    fn fold_appended(&mut self) -> Result<u64, EngineError> {
        let end = self.store.len()?;
        let mut state = self.state.load_full();
        let start = state.seq();
        // The store must still hold what this node folded, ending with the same event:
        // a ledger that lost events (a failover to a replica that was behind, a restore
        // under a running node) and was appended to past them would otherwise be folded
        // from here onto a state that holds what it lost, and the nodes would part ways.
        let gone = |what: String| {
            EngineError::Internal(format!(
                "{what}: events this node acknowledged are gone from the ledger (a failover to a replica that \
                 was behind, or a restore under a running node); it refuses writes until it is restarted on the \
                 ledger as it is now"
            ))
        };
        if end < start {
            return Err(gone(format!("the ledger holds {end} events but this node has folded {start}")));
        }
        if start > 0 {
            let ours = self.log.read().unwrap_or_else(|p| p.into_inner()).leaf(start - 1);
            let stored = self.store.read(start - 1, start)?;
            if stored.first().map(|e| e.leaf_hash) != ours {
                return Err(gone(format!("event {} in the ledger is not the one this node folded", start - 1)));
            }
        }
        if end == start {
            return Ok(0);
        }
        let mut next = (*state).clone();
        let mut hashes = Vec::new();
        let mut at = start;
        while at < end {
            let events = self.store.read(at, (at + CATCH_UP_PAGE).min(end))?;
            if events.is_empty() {
                return Err(EngineError::Internal(format!("event {at} is missing from the store")));
            }
            for e in events {
                if e.index != at {
                    return Err(EngineError::Internal(format!("event {at} is missing from the store")));
                }
                let event = replay::check_event(&e).map_err(|err| EngineError::Internal(err.to_string()))?;
                next.apply_owned(event).map_err(|err| {
                    EngineError::Internal(format!(
                        "event seq {} appended by another node does not apply: {err}",
                        at + 1
                    ))
                })?;
                hashes.push(e.leaf_hash);
                at += 1;
            }
        }
        {
            let mut log = self.log.write().unwrap_or_else(|p| p.into_inner());
            if log.len() != start {
                return Err(EngineError::Internal("the log and the state disagree".into()));
            }
            for h in hashes {
                log.push(h);
            }
        }
        state = Arc::new(next);
        self.state.store(state.clone());
        self.seq.send_replace(state.seq());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        tracing::debug!(from = start, to = end, "folded events from other nodes");
        Ok(end - start)
    }

    /// Counts a durable append and adds its leaves to the readers' log.
    fn appended(&self, b: &Batch) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.write().unwrap_or_else(|p| p.into_inner());
        for (_, hash) in &b.leaves {
            log.push(*hash);
        }
    }

    /// Whether the batch's events are in the store although its append reported an
    /// error (a connection lost during `COMMIT`): the leaf hashes at its positions are
    /// its own (they cover request ids, instants and random ids, so no other batch has
    /// them). `Unknown` when the store cannot be read to tell.
    fn landed(&self, b: &Batch) -> Landed {
        let n = b.leaves.len() as u64;
        if n == 0 && b.records.is_empty() {
            // It wrote nothing, so nothing of it can have landed.
            return Landed::No;
        }
        // Whether the store holds it: `None` when it cannot be read.
        let found: Option<bool> = if n == 0 {
            // Records alone: each stored as this batch wrote it (every one is read: a
            // read that fails makes the answer unknown even after a mismatch).
            b.records
                .iter()
                .map(|r| match self.store.idempotency(&r.scope, &r.key) {
                    Ok(s) => Some(s.is_some_and(|s| s.request_hash == r.request_hash && s.body == r.body)),
                    Err(_) => None,
                })
                .try_fold(true, |all, here| Some(here? && all))
        } else {
            self.store.read(b.expected_len, b.expected_len + n).ok().map(|stored| {
                stored.len() as u64 == n && stored.iter().zip(&b.leaves).all(|(s, (_, hash))| s.leaf_hash == *hash)
            })
        };
        match found {
            Some(true) => Landed::Yes,
            // Absent on a store across the network may still mean "not yet": a COMMIT
            // that lost its connection can land after this read (in flight, or waiting
            // for a synchronous standby). Only the embedded store's answer is final.
            Some(false) if !self.shared => Landed::No,
            _ => Landed::Unknown,
        }
    }

    /// Hands requests back to the decider, to be decided again on the committed state.
    fn hand_back(&self, pending: Vec<Pending>) {
        if pending.is_empty() {
            return;
        }
        let submits: Vec<Submit> =
            pending.into_iter().map(|p| Submit { handed_back: p.submit.handed_back + 1, ..p.submit }).collect();
        if let Err(back) = self.bounce.send(submits) {
            // The decider has stopped: the replies drop, which callers see as a stopped
            // engine.
            drop(back);
            return;
        }
        // A full queue wakes the decider anyway; a closed one means it has stopped.
        if let Some(tx) = self.snapshot_tx.upgrade() {
            let _ = tx.try_send(Job::Wake);
        }
    }

    /// Decides the batch's commands again on the committed state.
    fn redecide(&self, b: Batch) -> Option<Batch> {
        let base = self.state.load_full();
        let submits = b.pending.into_iter().map(|p| p.submit);
        let (next, leaves, records, pending) = decide_all(&base, submits, &*self.store, &[])?;
        let epoch = self.epoch.load(Ordering::Acquire);
        Some(Batch {
            number: b.number,
            epoch,
            expected_len: base.seq(),
            leaves,
            records,
            pending,
            state: Arc::new(next),
        })
    }

    fn commit(&mut self, b: Batch) {
        self.commit_batch(b);
        if self.holding {
            self.holding = false;
            if let Err(e) = self.store.hold_appends(false) {
                tracing::warn!(error = %e, "could not release the append lock (the connection's end will)");
            }
        }
    }

    fn commit_batch(&mut self, mut b: Batch) {
        let fail_all = |pending: Vec<Pending>, e: &dyn Fn() -> EngineError| {
            for p in pending {
                p.answer(Err(e()));
            }
        };
        let stale = b.epoch != self.epoch.load(Ordering::Acquire);
        // Decided again here: the decider's next batches were not decided on what this
        // one commits.
        let mut redecided = false;
        if stale || (self.shared && b.expected_len != self.state.load().seq()) {
            if !self.shared {
                let msg = "an earlier write failed, so this one was not committed; retry it";
                fail_all(b.pending, &|| EngineError::NotWritten(msg.into()));
                return;
            }
            // Decided on a state that other nodes' events (or a batch decided again)
            // replaced. The decider starts again from the committed state once it sees
            // the epoch move (it has, unless the length alone gave the batch away), and
            // decides these requests again there: deciding them here instead would move
            // the state under every batch it has decided since, on and on.
            if !stale {
                self.epoch.fetch_add(1, Ordering::AcqRel);
            }
            // A request handed back many times (other nodes keep appending between its
            // decision and its commit) is decided here, on the committed state, so that
            // it is not starved.
            let (again, back): (Vec<Pending>, Vec<Pending>) =
                b.pending.into_iter().partition(|p| p.submit.handed_back >= MAX_HAND_BACKS);
            self.hand_back(back);
            if again.is_empty() {
                return;
            }
            b.pending = again;
            match self.redecide(b) {
                Some(nb) => b = nb,
                None => {
                    // Answered as dropped; the decider's batches after it are void.
                    self.epoch.fetch_add(1, Ordering::AcqRel);
                    return;
                }
            }
            redecided = true;
        }
        let mut attempt = 0;
        loop {
            // On a shared store even a batch of no events goes to the store, which
            // confirms under the append lock that no other node has appended since the
            // state its answers were decided on.
            if b.leaves.is_empty() && b.records.is_empty() && !self.shared {
                break;
            }
            let events: Vec<NewEvent<'_>> =
                b.leaves.iter().map(|(leaf, hash)| NewEvent { leaf, leaf_hash: *hash }).collect();
            match self.store.append(b.expected_len, &events, &b.records) {
                Ok(()) => {
                    self.appended(&b);
                    break;
                }
                Err(e @ (StoreError::Conflict { .. } | StoreError::Duplicate { what: Unique::IdempotencyKey, .. }))
                    if self.shared || matches!(e, StoreError::Conflict { .. }) =>
                {
                    // Another node appended first (or answered the same idempotency key).
                    // With one writer the log can only be longer than the state after a
                    // commit whose answer was lost and could not be confirmed: folding
                    // it back is the same catching up.
                    attempt += 1;
                    if attempt > MAX_RETRIES {
                        tracing::warn!(attempts = attempt, "the ledger is contended; the batch is refused");
                        self.epoch.fetch_add(1, Ordering::AcqRel);
                        fail_all(b.pending, &|| EngineError::Contended(attempt));
                        return;
                    }
                    // Hold the others' appends while catching up and appending again, so
                    // that this node cannot lose the race twice in a row.
                    if !self.holding {
                        match self.store.hold_appends(true) {
                            Ok(()) => self.holding = true,
                            Err(e) => tracing::warn!(error = %e, "could not hold appends; retrying without"),
                        }
                    }
                    if let Err(e) = self.fold_appended() {
                        tracing::error!(error = %e, "catching up after a conflict failed");
                        self.epoch.fetch_add(1, Ordering::AcqRel);
                        fail_all(b.pending, &|| EngineError::Internal(format!("catching up failed: {e}")));
                        return;
                    }
                    match self.redecide(b) {
                        Some(nb) => b = nb,
                        None => {
                            self.epoch.fetch_add(1, Ordering::AcqRel);
                            return;
                        }
                    }
                    redecided = true;
                }
                Err(e) => match self.landed(&b) {
                    Landed::Yes => {
                        // The connection broke as the transaction committed: the answer
                        // was lost, not the write. Its events are in the log, so it stands.
                        tracing::warn!(error = %e, "the append reported an error, but its events are in the log: it committed");
                        self.appended(&b);
                        break;
                    }
                    landed => {
                        tracing::error!(error = %e, ?landed, "append failed; the batch and every batch decided after it are refused");
                        self.epoch.fetch_add(1, Ordering::AcqRel);
                        // If it did land, the next append finds the log longer than the
                        // state and folds it back in (`fold_appended`), idempotency
                        // records included, so a retry with the same key gets its answer.
                        if landed == Landed::Unknown {
                            fail_all(b.pending, &|| EngineError::Unconfirmed(e.to_string()));
                        } else {
                            fail_all(b.pending, &|| EngineError::NotWritten(e.to_string()));
                        }
                        return;
                    }
                },
            }
        }
        let seq = b.state.seq();
        let replaced = self.state.swap(b.state.clone());
        self.seq.send_replace(seq);
        self.published.store(b.number, Ordering::Release);
        if redecided {
            // After the new state is in place, so that a decider that sees the epoch
            // move starts from it.
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        let mut replies = Vec::with_capacity(b.pending.len());
        for mut p in b.pending {
            if let Ok(o) = &mut p.result
                && !o.replayed
            {
                o.seq = seq;
            }
            replies.push((p.submit.reply, p.result));
        }
        let published = Published { replies, replaced };
        if let Err(unsent) = self.publish.send(published) {
            // The publisher stops only after the committer; answer here all the same.
            for (reply, result) in unsent.0.replies {
                let _ = reply.send(result);
            }
        }
        self.maybe_snapshot(b.state);
    }

    /// Signs the tree this node has verified, at its own size: every node's tree is a
    /// prefix of the one log, so checkpoints signed by any of them are consistent.
    fn sign_checkpoint(&mut self) -> Result<CheckpointRecord, EngineError> {
        self.catch_up()?;
        let size = self.state.load().seq();
        if let Some(latest) = self.store.latest_checkpoint()?
            && latest.size >= size
        {
            if latest.size == size {
                return Ok(latest);
            }
            // Another node signed a larger tree than this one has folded: sign our own
            // size, which is consistent with it, rather than serve a tree we cannot prove.
            if let Some(mine) = self.store.checkpoints()?.into_iter().find(|c| c.size == size) {
                return Ok(mine);
            }
        }
        let root = {
            let log = self.log.read().unwrap_or_else(|p| p.into_inner());
            log.root()
        };
        let cp = Checkpoint { origin: self.origin.clone(), size, root, extensions: vec![] };
        let note = checkpoint::sign(&cp, &self.signer).map_err(|e| EngineError::Internal(e.to_string()))?;
        let rec = CheckpointRecord { size, root, note };
        self.store.put_checkpoint(&rec)?;
        Ok(rec)
    }

    /// Snapshots are encoded off the writer threads: the state is an immutable, shared
    /// copy, so commits go on while it is serialized.
    fn maybe_snapshot(&mut self, state: Arc<State>) {
        let by_count = self.config.snapshot_every > 0
            && state.seq() >= self.last_snapshot.saturating_add(self.config.snapshot_every);
        let by_time = self.config.snapshot_interval.is_some_and(|t| self.last_snapshot_at.elapsed() >= t)
            && state.seq() > self.last_snapshot;
        if !(by_count || by_time) {
            return;
        }
        self.last_snapshot = state.seq();
        self.last_snapshot_at = std::time::Instant::now();
        let Some(tx) = self.snapshot_tx.upgrade() else { return };
        thread::spawn(move || match state.encode() {
            Ok(bytes) => {
                let digest = tollgate_core::state::digest_of(&bytes);
                let _ = tx.blocking_send(Job::Snapshot(SnapshotRecord { seq: state.seq(), digest, state: bytes }));
            }
            Err(e) => tracing::warn!(error = %e, "could not encode snapshot"),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tollgate_core::catalog::ProductSpec;
    use tollgate_core::ids::ProductKey;
    use tollgate_store::{
        CheckpointRecord, Hash, IdempotencyRecord, SnapshotRecord, SqliteStore, StoreError, StoredEvent, TokenRecord,
    };

    use super::*;

    /// A real store, with a hook that runs before every append: it may fail it (a full
    /// disk) or hold it (to order what the engine's threads do).
    struct Hooked {
        inner: Box<dyn LedgerStore>,
        before_append: Hook,
        /// Runs after the append committed: an error here is one reported for a
        /// transaction that did commit.
        after_append: Hook,
        /// Runs before every read of events or idempotency records: it may fail them.
        before_read: Hook,
    }

    type Hook = Arc<dyn Fn() -> Result<(), StoreError> + Send + Sync>;

    fn no_hook() -> Hook {
        Arc::new(|| Ok(()))
    }

    /// An after-append hook that reports the next commit as failed once `flag` is set
    /// (the commit itself stands): a connection lost during `COMMIT`.
    fn lose_once(flag: Arc<AtomicBool>) -> Hook {
        Arc::new(move || match flag.swap(false, Ordering::SeqCst) {
            true => Err(StoreError::Invalid("connection reset during COMMIT (injected)".into())),
            false => Ok(()),
        })
    }

    impl LedgerStore for Hooked {
        fn append(&mut self, n: u64, e: &[NewEvent<'_>], r: &[IdempotencyRecord]) -> Result<(), StoreError> {
            (self.before_append)()?;
            self.inner.append(n, e, r)?;
            (self.after_append)()
        }
        fn shared(&self) -> bool {
            self.inner.shared()
        }
        fn hold_appends(&mut self, hold: bool) -> Result<(), StoreError> {
            self.inner.hold_appends(hold)
        }
        fn len(&self) -> Result<u64, StoreError> {
            self.inner.len()
        }
        fn read(&self, s: u64, e: u64) -> Result<Vec<StoredEvent>, StoreError> {
            (self.before_read)()?;
            self.inner.read(s, e)
        }
        fn scan(&self, s: u64, f: &mut dyn FnMut(StoredEvent) -> Result<(), StoreError>) -> Result<(), StoreError> {
            self.inner.scan(s, f)
        }
        fn idempotency(&self, s: &str, k: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
            (self.before_read)()?;
            self.inner.idempotency(s, k)
        }
        fn claim_idempotency(&mut self, r: &IdempotencyRecord) -> Result<IdempotencyRecord, StoreError> {
            self.inner.claim_idempotency(r)
        }
        fn adopt_legacy_claims(&mut self, now: &str) -> Result<usize, StoreError> {
            self.inner.adopt_legacy_claims(now)
        }
        fn prune_idempotency(&mut self, before: &str, limit: usize) -> Result<usize, StoreError> {
            self.inner.prune_idempotency(before, limit)
        }
        fn put_checkpoint(&mut self, c: &CheckpointRecord) -> Result<(), StoreError> {
            self.inner.put_checkpoint(c)
        }
        fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>, StoreError> {
            self.inner.latest_checkpoint()
        }
        fn checkpoints(&self) -> Result<Vec<CheckpointRecord>, StoreError> {
            self.inner.checkpoints()
        }
        fn put_snapshot(&mut self, s: &SnapshotRecord) -> Result<(), StoreError> {
            self.inner.put_snapshot(s)
        }
        fn snapshot_seqs(&self) -> Result<Vec<(u64, Hash)>, StoreError> {
            self.inner.snapshot_seqs()
        }
        fn load_snapshot(&self, seq: u64) -> Result<Option<SnapshotRecord>, StoreError> {
            self.inner.load_snapshot(seq)
        }
        fn prune_snapshots(&mut self, keep: usize) -> Result<(), StoreError> {
            self.inner.prune_snapshots(keep)
        }
        fn meta(&self, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.meta(k)
        }
        fn set_meta(&mut self, k: &str, v: &[u8]) -> Result<(), StoreError> {
            self.inner.set_meta(k, v)
        }
        fn insert_token(&mut self, t: &TokenRecord) -> Result<(), StoreError> {
            self.inner.insert_token(t)
        }
        fn token_by_hash(&self, h: &Hash) -> Result<Option<TokenRecord>, StoreError> {
            self.inner.token_by_hash(h)
        }
        fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
            self.inner.tokens()
        }
        fn revoke_token(&mut self, id: &str, at: &str) -> Result<bool, StoreError> {
            self.inner.revoke_token(id, at)
        }
        fn reader(&self) -> Result<Box<dyn LedgerStore>, StoreError> {
            self.inner.reader()
        }
    }

    fn product(n: usize) -> Command {
        Command::CreateProduct(ProductSpec {
            key: ProductKey::parse(&format!("p{n}")).unwrap(),
            name: format!("P{n}"),
            features: vec![],
        })
    }

    async fn submit(engine: &Engine, n: usize) -> Result<Outcome, EngineError> {
        run(engine, product(n), None).await
    }

    async fn run(engine: &Engine, command: Command, idempotency: Option<Idempotency>) -> Result<Outcome, EngineError> {
        let meta = Meta { actor: "test".into(), reason: None, request_id: "r".into() };
        engine.submit(command, meta, 201, idempotency, Box::new(|_, _| serde_json::Value::Null)).await
    }

    fn named_product(key: &str, name: &str) -> Command {
        Command::CreateProduct(ProductSpec {
            key: ProductKey::parse(key).unwrap(),
            name: name.into(),
            features: vec![],
        })
    }

    /// A product `cad`, a plan `basic` and one license on it, whose id is returned.
    async fn one_license(engine: &Engine) -> tollgate_core::ids::LicenseId {
        run(engine, named_product("cad", "CAD"), None).await.unwrap();
        let plan = serde_json::from_value(serde_json::json!({"key":"basic","product":"cad","name":"Basic"})).unwrap();
        run(engine, Command::CreatePlan(plan), None).await.unwrap();
        let id = tollgate_core::ids::LicenseId::from_random([1; 16]);
        let issue = tollgate_core::command::IssueLicense {
            id: id.clone(),
            key: tollgate_core::key::LicenseKey::from_random([2; 15]),
            product: ProductKey::parse("cad").unwrap(),
            plan: tollgate_core::ids::PlanKey::parse("basic").unwrap(),
            licensee: "acme".into(),
            expires_at: None,
            metadata: Default::default(),
            external_id: None,
        };
        run(engine, Command::IssueLicense(issue), None).await.unwrap();
        id
    }

    /// Stops the engine and verifies the SQLite ledger it wrote; returns its length.
    fn stop_and_verify(engine: Engine, writer: thread::JoinHandle<()>, path: &std::path::Path) -> u64 {
        drop(engine);
        writer.join().unwrap();
        replay::verify(&SqliteStore::open(path).unwrap(), &mut |_| {}).unwrap().events
    }

    /// An engine on a new SQLite ledger in `tmp` that holds one product already.
    async fn started(tmp: &tempfile::TempDir) -> (std::path::PathBuf, Engine, thread::JoinHandle<()>) {
        started_with(tmp, |store| store).await
    }

    /// [`started`], with the store wrapped by `wrap` (in hooks, say).
    async fn started_with(
        tmp: &tempfile::TempDir,
        wrap: impl FnOnce(Box<dyn LedgerStore>) -> Box<dyn LedgerStore>,
    ) -> (std::path::PathBuf, Engine, thread::JoinHandle<()>) {
        let path = tmp.path().join("l.db");
        let store = wrap(Box::new(SqliteStore::open(&path).unwrap()));
        let (engine, writer) = Engine::start(store, EngineConfig::default()).unwrap();
        submit(&engine, 0).await.unwrap();
        (path, engine, writer)
    }

    /// Appends products `ns`, decided on `state` outside the engine, straight to the
    /// SQLite ledger at `path` after `state`'s events, as another writer would.
    fn append_behind(path: &std::path::Path, state: &State, ns: impl IntoIterator<Item = usize>) {
        let mut state = state.clone();
        let meta = Meta { actor: "other".into(), reason: None, request_id: "other".into() };
        let at = state.seq();
        let mut leaves = Vec::new();
        for n in ns {
            for e in decide(&state, &product(n), &meta, now()).unwrap() {
                state.apply(&e).unwrap();
                let leaf = e.encode().unwrap();
                leaves.push((merkle::leaf_hash(&leaf), leaf));
            }
        }
        let events: Vec<NewEvent<'_>> = leaves.iter().map(|(h, l)| NewEvent { leaf: l, leaf_hash: *h }).collect();
        SqliteStore::open(path).unwrap().append(at, &events, &[]).unwrap();
    }

    fn shared(url: &str) -> Box<dyn LedgerStore> {
        Box::new(tollgate_store::PostgresStore::open(url).expect("open PostgreSQL store"))
    }

    /// A decision that panics (a bug: here its renderer) drops the open batch, as a
    /// decision that cannot be trusted does: none of that request's events commits, and
    /// the engine goes on. Before, the lock it held was recovered by the next request
    /// with the panicked request's events still in the open batch, and they committed
    /// although its caller got a 500 (a retry would have applied them twice).
    #[tokio::test]
    async fn a_decision_that_panics_commits_nothing_of_its_request() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, engine, writer) = started(&tmp).await;
        let meta = Meta { actor: "test".into(), reason: None, request_id: "r".into() };
        let panics: Render = Box::new(|_, _| panic!("renderer bug (injected)"));
        let r = engine.submit(product(1), meta, 201, None, panics).await;
        assert!(matches!(r, Err(EngineError::Internal(_))), "the caller is told it failed: {r:?}");
        let o = submit(&engine, 2).await.unwrap();
        assert_eq!(o.seq, 2, "product 2 follows product 0: nothing of product 1 was committed");
        assert!(engine.state().product("p1").is_none());
        // And product 1 can be created now, once.
        assert_eq!(submit(&engine, 1).await.unwrap().seq, 3);
        assert_eq!(stop_and_verify(engine, writer, &path), 3);
    }

    /// A committer that stops (here it panics inside a store) fails every request from
    /// then on as a stopped engine, instead of leaving them waiting for a commit that
    /// cannot come.
    #[tokio::test]
    async fn requests_fail_as_stopped_once_the_committer_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let explode = Arc::new(AtomicBool::new(false));
        let armed = explode.clone();
        let (_, engine, writer) = started_with(&tmp, |inner| {
            Box::new(Hooked {
                inner,
                before_append: Arc::new(move || {
                    if armed.load(Ordering::SeqCst) {
                        panic!("store bug (injected)");
                    }
                    Ok(())
                }),
                after_append: no_hook(),
                before_read: no_hook(),
            })
        })
        .await;
        explode.store(true, Ordering::SeqCst);
        let bounded = |e: Engine, n| async move {
            tokio::time::timeout(Duration::from_secs(10), async move { submit(&e, n).await })
                .await
                .expect("answered, not left waiting")
        };
        let r = bounded(engine.clone(), 1).await;
        assert!(matches!(r, Err(EngineError::Stopped)), "{r:?}");
        // Later requests too, whether or not they got in before the engine noticed.
        for n in 2..5 {
            let r = bounded(engine.clone(), n).await;
            assert!(matches!(r, Err(EngineError::Stopped)), "{r:?}");
        }
        assert!(!engine.is_running());
        drop(engine);
        let _ = writer.join();
    }

    /// An append whose transaction committed but whose answer was lost (the connection
    /// broke during `COMMIT`) stands: its requests are answered as written, and the
    /// engine goes on at the right sequence. It used to answer 500 for writes that were
    /// in the ledger, and on SQLite every later append then failed on the length.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_whose_answer_was_lost_stands() {
        let tmp = tempfile::tempdir().unwrap();
        let lose = Arc::new(AtomicBool::new(false));
        let losing = lose.clone();
        let (path, engine, writer) = started_with(&tmp, |inner| {
            Box::new(Hooked {
                inner,
                before_append: no_hook(),
                after_append: lose_once(losing),
                before_read: no_hook(),
            })
        })
        .await;
        lose.store(true, Ordering::SeqCst);
        let o = submit(&engine, 1).await.expect("the write is in the ledger, so it is answered as written");
        assert_eq!(o.seq, 2);
        for n in 2..6 {
            submit(&engine, n).await.unwrap();
        }
        assert_eq!(engine.state().seq(), 6);
        assert_eq!(stop_and_verify(engine, writer, &path), 6);
    }

    /// On one node too, a log longer than the state (a commit whose answer was lost and
    /// could not be confirmed, written here by a second connection) is folded back in
    /// at the next append, which then goes on: it used to fail on the length, and so
    /// did every append after it until a restart.
    /// An append that reported an error and whose store could not be read back to check
    /// it is answered as unconfirmed, not as "not written": it did commit here. A retry
    /// with the same idempotency key gets the original answer and writes nothing twice,
    /// and the write is in the state once the next append folds the log back in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_cannot_be_checked_is_unconfirmed_and_its_retry_gets_its_answer() {
        let tmp = tempfile::tempdir().unwrap();
        let lose = Arc::new(AtomicBool::new(false));
        let blind = Arc::new(AtomicBool::new(false));
        let (losing, blinding) = (lose.clone(), blind.clone());
        let (path, engine, writer) = started_with(&tmp, |inner| {
            Box::new(Hooked {
                inner,
                before_append: no_hook(),
                after_append: lose_once(losing),
                before_read: Arc::new(move || match blinding.load(Ordering::SeqCst) {
                    true => Err(StoreError::Invalid("connection refused (injected)".into())),
                    false => Ok(()),
                }),
            })
        })
        .await;
        let key = || Some(Idempotency { scope: "s".into(), key: "k".into(), request_hash: [7; 32] });
        lose.store(true, Ordering::SeqCst);
        blind.store(true, Ordering::SeqCst);
        let r = run(&engine, product(1), key()).await;
        assert!(matches!(r, Err(EngineError::Unconfirmed(_))), "{r:?}");
        assert_eq!(engine.state().seq(), 1, "readers do not see an unconfirmed write");

        blind.store(false, Ordering::SeqCst);
        let again = run(&engine, product(1), key()).await.expect("the retry is answered from the write that landed");
        assert!(again.replayed, "answered from the stored record, not decided again");
        assert_eq!(again.body, b"null");
        submit(&engine, 2).await.unwrap();
        assert!(engine.state().product("p1").is_some(), "the landed write is folded back into the state");
        assert_eq!(engine.state().seq(), 3);
        assert_eq!(stop_and_verify(engine, writer, &path), 3, "product p1 was written once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_longer_than_the_state_is_folded_back_in() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, engine, writer) = started(&tmp).await;
        append_behind(&path, &engine.state(), [99]);

        let o = submit(&engine, 1).await.expect("the append folds the longer log and goes on");
        assert_eq!(o.seq, 3);
        assert!(engine.state().product("p99").is_some(), "the lost commit is in the state");
        submit(&engine, 2).await.unwrap();
        assert_eq!(stop_and_verify(engine, writer, &path), 4);
    }

    /// A ledger cut back under a running node (as a failover to a replica that was
    /// behind leaves it) is not folded over: the node refuses writes, saying why. It
    /// used to decide again on its own longer state, refuse as contended, and once
    /// the ledger grew past it, fold the others' events onto a state that held what
    /// was lost.
    #[tokio::test]
    async fn a_ledger_that_lost_acknowledged_events_is_not_folded_over() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, engine, writer) = started(&tmp).await;
        for n in 1..4 {
            submit(&engine, n).await.unwrap();
        }
        SqliteStore::open(&path).unwrap().truncate_for_restore(2).unwrap();
        let r = submit(&engine, 7).await;
        assert!(
            matches!(&r, Err(EngineError::Internal(m)) if m.contains("holds 2 events but this node has folded 4")),
            "{r:?}"
        );
        // Appended past where it was, with other events: still refused, by the event
        // at its end.
        let cut = replay::load(&SqliteStore::open(&path).unwrap()).unwrap().state;
        append_behind(&path, &cut, 20..23);
        let r = submit(&engine, 8).await;
        assert!(
            matches!(&r, Err(EngineError::Internal(m)) if m.contains("event 3 in the ledger is not the one this node folded")),
            "{r:?}"
        );
        assert!(engine.state().product("p20").is_none(), "nothing of the other history was folded");
        drop(engine);
        writer.join().unwrap();
    }

    /// A repeated idempotency key on a write of no events (suspending a suspended
    /// license) is answered from the first, however the repeats fall into batches.
    /// Its record once left the decider's memory before it was durable, so a repeat
    /// decided meanwhile wrote the key a second time, the append failed on the
    /// duplicate, and every write decided after it was refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repeated_key_on_a_write_of_no_events_is_answered_from_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&tmp.path().join("l.db")).unwrap();
        let (engine, writer) = Engine::start(Box::new(store), EngineConfig::default()).unwrap();
        let id = one_license(&engine).await;
        run(&engine, Command::Suspend(id.clone()), None).await.unwrap();
        let seq = engine.state().seq();
        for round in 0..20 {
            let idem = Idempotency { scope: "s".into(), key: format!("k{round}"), request_hash: [round; 32] };
            let tasks: Vec<_> = (0..16)
                .map(|n| {
                    let (e, id, idem) = (engine.clone(), id.clone(), idem.clone());
                    tokio::spawn(async move {
                        // Spread over batches: the first wakes the decider alone.
                        tokio::time::sleep(Duration::from_micros(50 * n)).await;
                        run(&e, Command::Suspend(id), Some(idem)).await
                    })
                })
                .collect();
            let mut fresh = 0;
            for t in tasks {
                let o = t.await.unwrap().expect("every repeat is answered");
                fresh += usize::from(!o.replayed);
            }
            assert_eq!(fresh, 1, "one answer was decided, the others replayed it");
        }
        assert_eq!(engine.state().seq(), seq, "no events");
        drop(engine);
        writer.join().unwrap();
    }

    /// On a shared store, a write that decides to no events is still decided on the
    /// log's latest state: here, suspending a license another node has just
    /// reinstated is an event, not "already suspended" from this node's older state.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_of_no_events_on_a_shared_store_is_decided_on_the_latest_state() {
        let Some(schema) = tollgate_store::test_schema::TestSchema::create("tg_engine") else { return };
        let (x, xw) = Engine::start(shared(&schema.url), EngineConfig::default()).unwrap();
        let (y, yw) = Engine::start(shared(&schema.url), EngineConfig::default()).unwrap();
        let id = one_license(&x).await;
        for _ in 0..10 {
            run(&x, Command::Suspend(id.clone()), None).await.unwrap();
            let seq = x.state().seq();
            assert_eq!(y.wait_for_seq(seq, Duration::from_secs(10)).await, seq);
            let reinstated = run(&y, Command::Reinstate(id.clone()), None).await.unwrap();
            let suspended = run(&x, Command::Suspend(id.clone()), None).await.unwrap();
            assert_eq!(suspended.seq, reinstated.seq + 1, "decided after the reinstatement, as one new event");
            let l =
                tollgate_store::PostgresStore::open_read_only(&schema.url).map(|s| replay::load(&s).unwrap()).unwrap();
            assert_eq!(l.state.license(id.as_str()).unwrap().status, tollgate_core::license::Status::Suspended);
            run(&x, Command::Reinstate(id.clone()), None).await.unwrap();
        }
        drop((x, y));
        xw.join().unwrap();
        yw.join().unwrap();
    }

    /// A node that cannot fold what another node appended (here an event of a newer
    /// build, with a field this one does not know) says so, for `/readyz`, instead of
    /// serving its older state as if it were current.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_that_cannot_follow_the_shared_ledger_says_why() {
        let Some(schema) = tollgate_store::test_schema::TestSchema::create("tg_engine") else { return };
        let blind = Arc::new(AtomicBool::new(false));
        let blinding = blind.clone();
        let store = Box::new(Hooked {
            inner: shared(&schema.url),
            before_append: no_hook(),
            after_append: no_hook(),
            before_read: Arc::new(move || match blinding.load(Ordering::SeqCst) {
                true => Err(StoreError::Invalid("connection refused (injected)".into())),
                false => Ok(()),
            }),
        });
        let (x, xw) = Engine::start(store, EngineConfig::default()).unwrap();
        submit(&x, 1).await.unwrap();
        assert_eq!(x.behind(), None);
        // Another node appends while this one cannot read the store for a moment: a
        // blip every node sees at once is no reason to leave the load balancer.
        let (y, yw) = Engine::start(shared(&schema.url), EngineConfig::default()).unwrap();
        blind.store(true, Ordering::SeqCst);
        submit(&y, 3).await.unwrap();
        for _ in 0..10 {
            x.nudge();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(x.behind(), None, "a store out of reach for a moment");
        blind.store(false, Ordering::SeqCst);
        let reached = y.state().seq();
        assert_eq!(x.wait_for_seq(reached, Duration::from_secs(10)).await, reached, "caught up after the blip");
        drop(y);
        yw.join().unwrap();
        let state = x.state();
        let meta = Meta { actor: "newer".into(), reason: None, request_id: "r".into() };
        let e = decide(&state, &product(2), &meta, now()).unwrap().remove(0);
        let leaf = String::from_utf8(e.encode().unwrap()).unwrap().replacen('{', "{\"added_later\":1,", 1);
        let mut other = tollgate_store::PostgresStore::open(&schema.url).unwrap();
        let event = NewEvent { leaf: leaf.as_bytes(), leaf_hash: merkle::leaf_hash(leaf.as_bytes()) };
        other.append(state.seq(), &[event], &[]).unwrap();
        let started = std::time::Instant::now();
        let why = loop {
            x.nudge();
            if let Some(why) = x.behind() {
                break why;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the node never said it could not follow");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(why.contains("newer build") && why.contains("added_later"), "{why}");
        assert_eq!(x.state().seq(), state.seq(), "nothing of it was folded");
        drop(x);
        xw.join().unwrap();
    }

    /// Holds appends until they are let through, and counts those begun.
    #[derive(Default)]
    struct Gate {
        /// (appends let through and not yet begun, appends begun)
        counts: std::sync::Mutex<(u64, u64)>,
        moved: std::sync::Condvar,
    }

    impl Gate {
        fn pass(&self) {
            let mut c = self.counts.lock().unwrap();
            c.1 += 1;
            while c.0 == 0 {
                c = self.moved.wait(c).unwrap();
            }
            c.0 -= 1;
        }
        fn allow(&self, n: u64) {
            self.counts.lock().unwrap().0 += n;
            self.moved.notify_all();
        }
        async fn begun(&self, n: u64) {
            for _ in 0..5_000 {
                if self.counts.lock().unwrap().1 >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            panic!("append {n} never began");
        }
    }

    /// After the committer decides a batch again (it lost a race to another node), the
    /// batches the decider built on the batch's first decision must not commit as they
    /// are. Here the decider, restarted on the state that lacks the batch's product
    /// `k`, decides another `k`, which the committer then refuses; `d`, decided after
    /// that on the decider's state, used to commit with a state holding the refused
    /// `k`, which the node then served (and built on) while the ledger said otherwise.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_decided_on_a_batch_the_committer_decided_again_commits_as_it_was() {
        let Some(schema) = tollgate_store::test_schema::TestSchema::create("tg_engine") else { return };
        let gate = Arc::new(Gate::default());
        let passing = gate.clone();
        let store = Hooked {
            inner: shared(&schema.url),
            before_append: Arc::new(move || {
                passing.pass();
                Ok(())
            }),
            after_append: no_hook(),
            before_read: no_hook(),
        };
        let (x, xw) = Engine::start(Box::new(store), EngineConfig::default()).unwrap();
        let (y, yw) = Engine::start(shared(&schema.url), EngineConfig::default()).unwrap();
        let spawn = |command: Command| {
            let x = x.clone();
            tokio::spawn(async move { run(&x, command, None).await })
        };
        // x decides `k` = "a" and is held at the append; y appends meanwhile.
        let a = spawn(named_product("k", "a"));
        gate.begun(1).await;
        run(&y, named_product("foreign", "F"), None).await.unwrap();
        // x's append conflicts: it folds y's event, decides `k` again, and is held again.
        gate.allow(1);
        gate.begun(2).await;
        // The decider starts again from the folded state, where `k` does not exist.
        let b = spawn(named_product("k", "b"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        gate.allow(u64::MAX / 2);
        assert!(!a.await.unwrap().unwrap().replayed);
        match b.await.unwrap() {
            Err(EngineError::Refused(r)) => assert_eq!(r.code, "PRODUCT_EXISTS"),
            other => panic!("the second `k` is refused: {other:?}"),
        }
        // Decided after that refusal: on the committed state, not on the refused `k`.
        run(&x, named_product("d", "D"), None).await.unwrap();
        assert_eq!(x.state().product("k").unwrap().name, "a");
        assert!(x.state().product("d").is_some());
        let store = tollgate_store::PostgresStore::open_read_only(&schema.url).unwrap();
        let folded = replay::load(&store).unwrap().state;
        assert_eq!(x.state().digest().unwrap(), folded.digest().unwrap(), "x holds the fold of the ledger");
        drop((x, y));
        xw.join().unwrap();
        yw.join().unwrap();
    }

    /// Two nodes race to create the same products, with writes of their own between,
    /// so that batches are decided on states the other node's events replace. Each
    /// node must end holding exactly the fold of the ledger.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_racing_on_one_ledger_publish_only_what_it_holds() {
        let Some(schema) = tollgate_store::test_schema::TestSchema::create("tg_engine") else { return };
        let (x, xw) = Engine::start(shared(&schema.url), EngineConfig::default()).unwrap();
        let (y, yw) = Engine::start(shared(&schema.url), EngineConfig::default()).unwrap();
        let mut tasks = Vec::new();
        for (node, engine) in [("x", &x), ("y", &y)] {
            for t in 0..16 {
                let e = engine.clone();
                tasks.push(tokio::spawn(async move {
                    for round in 0..25 {
                        // Refused for all but the first to get there: a decision that
                        // depends on what the other node did.
                        let _ = run(&e, named_product(&format!("k{round}"), &format!("{node}{t}")), None).await;
                        run(&e, named_product(&format!("{node}-{t}-{round}"), "own"), None).await.unwrap();
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let store = tollgate_store::PostgresStore::open_read_only(&schema.url).unwrap();
        let len = store.len().unwrap();
        let folded = replay::load(&store).unwrap().state;
        for (node, engine) in [("x", &x), ("y", &y)] {
            assert_eq!(engine.wait_for_seq(len, Duration::from_secs(10)).await, len);
            assert_eq!(
                engine.state().digest().unwrap(),
                folded.digest().unwrap(),
                "node {node} holds a state other than the fold of the ledger"
            );
        }
        drop((x, y));
        xw.join().unwrap();
        yw.join().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_refuses_its_batch_and_nothing_built_on_it_then_recovers() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("l.db");
        let fail = Arc::new(AtomicBool::new(false));
        let failing = fail.clone();
        let store = Hooked {
            inner: Box::new(SqliteStore::open(&path).unwrap()),
            before_append: Arc::new(move || match failing.load(Ordering::SeqCst) {
                true => Err(StoreError::Invalid("disk full (injected)".into())),
                false => Ok(()),
            }),
            after_append: no_hook(),
            before_read: no_hook(),
        };
        let (engine, writer) = Engine::start(Box::new(store), EngineConfig::default()).unwrap();
        for n in 0..5 {
            submit(&engine, n).await.unwrap();
        }
        assert_eq!(engine.state().seq(), 5);

        fail.store(true, Ordering::SeqCst);
        // Many concurrent writes while the disk is full: none is acknowledged.
        let tasks: Vec<_> = (5..40)
            .map(|n| (n, engine.clone()))
            .map(|(n, e)| tokio::spawn(async move { submit(&e, n).await }))
            .collect();
        for t in tasks {
            let r = t.await.unwrap();
            assert!(
                matches!(r, Err(EngineError::NotWritten(_))),
                "nothing is acknowledged while appends fail, and each is told it was not written: {r:?}"
            );
        }
        assert_eq!(engine.state().seq(), 5, "readers never saw the refused writes");

        fail.store(false, Ordering::SeqCst);
        // The decider starts again from the committed state: product 5 was never
        // committed, so creating it now is a fresh event at sequence 6.
        let o = submit(&engine, 5).await.unwrap();
        assert_eq!(o.seq, 6);
        for n in 6..10 {
            submit(&engine, n).await.unwrap();
        }
        assert_eq!(engine.state().seq(), 10);
        assert_eq!(stop_and_verify(engine, writer, &path), 10, "the store holds exactly the acknowledged events");
    }
}
