//! The engine: the one writer that turns commands into ledger events.
//!
//! Requests send commands over a channel to a dedicated thread. The thread drains
//! whatever is queued (group commit), decides each command against the state plus the
//! events decided before it in the same batch, appends the whole batch and its
//! idempotency records in one durable transaction, and only then publishes the new
//! state and answers. Readers see committed state only: the next state is a cheap
//! persistent copy that is thrown away if the commit fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tollgate_core::checkpoint::{self, Checkpoint};
use tollgate_core::merkle::{self, MerkleLog};
use tollgate_core::note;
use tollgate_core::{Command, Meta, Refusal, State, Timestamp, decide};
use tollgate_store::{CheckpointRecord, IdempotencyRecord, LedgerStore, NewEvent, SnapshotRecord, StoreError};

use crate::replay;

/// How many commands one transaction takes at most.
const MAX_BATCH: usize = 512;
const QUEUE: usize = 8192;

/// Renders the response of a command from the state it produced.
pub type Render = Box<dyn FnOnce(&State, Timestamp) -> serde_json::Value + Send>;

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
}

struct Submit {
    command: Command,
    meta: Meta,
    status: u16,
    idempotency: Option<Idempotency>,
    render: Render,
    reply: oneshot::Sender<Result<Outcome, EngineError>>,
}

enum Job {
    Submit(Box<Submit>),
    Checkpoint(oneshot::Sender<Result<CheckpointRecord, EngineError>>),
    Snapshot(SnapshotRecord),
}

/// The log as readers see it: leaf hashes of committed events, for roots and proofs.
pub type SharedLog = Arc<RwLock<MerkleLog>>;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Take a snapshot of the state every this many events (0: never).
    pub snapshot_every: u64,
    /// Keep this many snapshots.
    pub snapshot_keep: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { snapshot_every: 10_000, snapshot_keep: 3 }
    }
}

#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Job>,
    commits: Arc<AtomicU64>,
    state: Arc<ArcSwap<State>>,
    log: SharedLog,
    verifier_key: Arc<str>,
}

pub struct Writer {
    store: Box<dyn LedgerStore>,
    commits: Arc<AtomicU64>,
    state: Arc<ArcSwap<State>>,
    log: SharedLog,
    signer: note::Signer,
    origin: String,
    config: EngineConfig,
    /// Weak, so that the writer's own handle does not keep the channel open at shutdown.
    snapshot_tx: mpsc::WeakSender<Job>,
    last_snapshot: u64,
}

pub fn now() -> Timestamp {
    Timestamp::from_datetime(OffsetDateTime::now_utc())
        .unwrap_or_else(|| Timestamp::from_millis(0).expect("epoch is in range"))
}

impl Engine {
    /// Opens the ledger: newest valid snapshot plus replay of the rest with every leaf
    /// hash verified, then starts the writer thread.
    pub fn start(
        mut store: Box<dyn LedgerStore>,
        config: EngineConfig,
    ) -> Result<(Engine, thread::JoinHandle<()>), replay::ReplayError> {
        let identity = replay::identity(&mut *store)?;
        let loaded = replay::load(&*store)?;
        let state = Arc::new(ArcSwap::from_pointee(loaded.state));
        let log = Arc::new(RwLock::new(loaded.log));
        let (tx, rx) = mpsc::channel(QUEUE);
        let last_snapshot = loaded.snapshot_seq;
        let commits = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            store,
            commits: commits.clone(),
            state: state.clone(),
            log: log.clone(),
            origin: identity.origin.clone(),
            signer: identity.signer,
            config,
            snapshot_tx: tx.downgrade(),
            last_snapshot,
        };
        let handle = thread::Builder::new()
            .name("tollgate-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| replay::ReplayError::Internal(e.to_string()))?;
        Ok((Engine { tx, commits, state, log, verifier_key: identity.verifier_key.into() }, handle))
    }

    /// Durable transactions committed since start: events / commits is the group-commit
    /// batch size.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// False once the writer thread has stopped.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
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

    pub async fn submit(
        &self,
        command: Command,
        meta: Meta,
        status: u16,
        idempotency: Option<Idempotency>,
        render: Render,
    ) -> Result<Outcome, EngineError> {
        let (reply, rx) = oneshot::channel();
        let job = Job::Submit(Box::new(Submit { command, meta, status, idempotency, render, reply }));
        self.tx.send(job).await.map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Signs a checkpoint of the current tree if the newest one is older.
    pub async fn checkpoint(&self) -> Result<CheckpointRecord, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job::Checkpoint(reply)).await.map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }
}

struct Pending {
    reply: oneshot::Sender<Result<Outcome, EngineError>>,
    result: Result<Outcome, EngineError>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let mut submits = Vec::new();
            for job in batch.drain(..) {
                match job {
                    Job::Submit(s) => submits.push(*s),
                    Job::Checkpoint(reply) => {
                        let r = self.sign_checkpoint();
                        let _ = reply.send(r);
                    }
                    Job::Snapshot(s) => {
                        if let Err(e) = self
                            .store
                            .put_snapshot(&s)
                            .and_then(|()| self.store.prune_snapshots(self.config.snapshot_keep))
                        {
                            tracing::warn!(seq = s.seq, error = %e, "could not store snapshot");
                        } else {
                            tracing::info!(seq = s.seq, "snapshot stored");
                        }
                    }
                }
            }
            if !submits.is_empty() {
                self.commit(submits);
            }
        }
        // The channel closed: every Engine handle is gone. Leave a final checkpoint.
        if let Err(e) = self.sign_checkpoint() {
            tracing::warn!(error = %e, "final checkpoint failed");
        }
        tracing::info!("writer stopped");
    }

    fn commit(&mut self, submits: Vec<Submit>) {
        let current = self.state.load_full();
        let mut next = (*current).clone();
        let mut leaves: Vec<(Vec<u8>, merkle::Hash)> = Vec::new();
        let mut records: Vec<IdempotencyRecord> = Vec::new();
        let mut pending: Vec<Pending> = Vec::with_capacity(submits.len());
        let now = now();
        let created_at = now.to_string();

        for s in submits {
            let Submit { command, meta, status, idempotency, render, reply } = s;
            let result = self.decide_one(
                &mut next,
                &command,
                &meta,
                status,
                idempotency.as_ref(),
                render,
                now,
                &created_at,
                &mut leaves,
                &mut records,
            );
            pending.push(Pending { reply, result });
        }

        if !leaves.is_empty() || !records.is_empty() {
            let events: Vec<NewEvent<'_>> =
                leaves.iter().map(|(leaf, hash)| NewEvent { leaf, leaf_hash: *hash }).collect();
            let expected = current.seq();
            if let Err(e) = self.store.append(expected, &events, &records) {
                tracing::error!(error = %e, "append failed; the batch is refused and nothing is published");
                let msg = e.to_string();
                for p in pending {
                    let _ = p.reply.send(Err(EngineError::Internal(format!("the ledger could not be written: {msg}"))));
                }
                return;
            }
            self.commits.fetch_add(1, Ordering::Relaxed);
            let mut log = self.log.write().unwrap_or_else(|p| p.into_inner());
            for (_, hash) in &leaves {
                log.push(*hash);
            }
        }
        let seq = next.seq();
        let next = Arc::new(next);
        self.state.store(next.clone());
        for mut p in pending {
            if let Ok(o) = &mut p.result
                && !o.replayed
            {
                o.seq = seq;
            }
            let _ = p.reply.send(p.result);
        }
        self.maybe_snapshot(next);
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_one(
        &mut self,
        next: &mut State,
        command: &Command,
        meta: &Meta,
        status: u16,
        idempotency: Option<&Idempotency>,
        render: Render,
        now: Timestamp,
        created_at: &str,
        leaves: &mut Vec<(Vec<u8>, merkle::Hash)>,
        records: &mut Vec<IdempotencyRecord>,
    ) -> Result<Outcome, EngineError> {
        if let Some(idem) = idempotency {
            let earlier = match records.iter().find(|r| r.scope == idem.scope && r.key == idem.key) {
                Some(r) => Some(r.clone()),
                None => self.store.idempotency(&idem.scope, &idem.key)?,
            };
            if let Some(r) = earlier {
                if r.request_hash != idem.request_hash {
                    return Err(EngineError::IdempotencyMismatch);
                }
                return Ok(Outcome { status: r.status, body: r.body, seq: next.seq(), replayed: true });
            }
        }
        let events = decide(next, command, meta, now).map_err(EngineError::Refused)?;
        // Applied straight to the batch's next state: an event that `decide` produced
        // and `apply` rejects is a bug, and the caller drops the whole batch for it.
        for e in &events {
            let bytes = e.encode().map_err(|e| EngineError::Internal(e.to_string()))?;
            next.apply(e)
                .map_err(|err| EngineError::Poisoned(format!("decided an event that does not apply: {err}")))?;
            let hash = merkle::leaf_hash(&bytes);
            leaves.push((bytes, hash));
        }
        let body = serde_json::to_vec(&render(next, now)).map_err(|e| EngineError::Internal(e.to_string()))?;
        if let Some(idem) = idempotency {
            records.push(IdempotencyRecord {
                scope: idem.scope.clone(),
                key: idem.key.clone(),
                request_hash: idem.request_hash,
                status,
                body: body.clone(),
                created_at: created_at.to_string(),
            });
        }
        Ok(Outcome { status, body, seq: next.seq(), replayed: false })
    }

    fn sign_checkpoint(&mut self) -> Result<CheckpointRecord, EngineError> {
        let size = self.state.load().seq();
        if let Some(latest) = self.store.latest_checkpoint()?
            && latest.size == size
        {
            return Ok(latest);
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

    /// Snapshots are encoded off the writer thread: the state is an immutable, shared
    /// copy, so the writer goes on committing while it is serialized.
    fn maybe_snapshot(&mut self, state: Arc<State>) {
        let every = self.config.snapshot_every;
        if every == 0 || state.seq() < self.last_snapshot + every {
            return;
        }
        self.last_snapshot = state.seq();
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
