//! Backup, point-in-time restore, and the state digest at any sequence.
//!
//! A backup is a consistent copy of the store (SQLite `VACUUM INTO`, safe while the
//! server runs) that is verified in full before it is reported. A restore copies a
//! backup into a new data directory, cuts the ledger at the target, and verifies what
//! is left: every leaf hash, every fold, every checkpoint at or below the cut.
//!
//! Sequence N is the state after the first N events, the state a checkpoint of tree
//! size N describes.

use std::path::{Path, PathBuf};

use tollgate_core::merkle::{Hash, MerkleLog};
use tollgate_core::{State, Timestamp};
use tollgate_store::{CheckpointRecord, LedgerStore, SqliteStore, StoreError};

use crate::replay::{self, ReplayError, check_event};

#[derive(Debug, thiserror::Error)]
pub enum DurabilityError {
    #[error("{0}")]
    Replay(#[from] ReplayError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Usage(String),
}

/// Where a fold ended: the tree size, its root and the state digest there.
#[derive(Debug, Clone)]
pub struct Reached {
    pub size: u64,
    pub root: Hash,
    pub digest: Hash,
    /// The newest signed checkpoint at or below `size`.
    pub checkpoint: Option<CheckpointRecord>,
}

/// Called with (events done, events in all) while long work runs.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

fn open_existing(data_dir: &Path) -> Result<SqliteStore, DurabilityError> {
    let path = crate::db_path(data_dir);
    if !path.exists() {
        return Err(DurabilityError::Usage(format!(
            "no ledger at {}: pass the data directory the server uses",
            path.display()
        )));
    }
    Ok(SqliteStore::open_read_only(&path)?)
}

fn reached(store: &dyn LedgerStore, state: &State, log: &MerkleLog) -> Result<Reached, DurabilityError> {
    let digest = state.digest().map_err(|e| ReplayError::Internal(e.to_string()))?;
    let checkpoint = store.checkpoints()?.into_iter().rev().find(|c| c.size <= log.len());
    Ok(Reached { size: log.len(), root: log.root(), digest, checkpoint })
}

/// Full verification (hashes, folds, checkpoint roots and signatures) and where it ends.
fn verified_reach(store: &dyn LedgerStore, progress: &mut dyn FnMut(u64)) -> Result<Reached, DurabilityError> {
    let r = replay::verify(store, progress)?;
    let checkpoint = store.checkpoints()?.into_iter().rev().find(|c| c.size <= r.events);
    Ok(Reached { size: r.events, root: r.root, digest: r.digest, checkpoint })
}

/// The state digest (and tree root) at sequence `at`, or at the end.
pub fn digest_at(data_dir: &Path, at: Option<u64>, progress: Progress<'_>) -> Result<Reached, DurabilityError> {
    let store = open_existing(data_dir)?;
    let (state, log) = replay::fold(&store, at, progress)?;
    reached(&store, &state, &log)
}

#[derive(Debug)]
pub struct BackupReport {
    pub path: PathBuf,
    pub reached: Reached,
    /// The newest signed checkpoint, also written beside the backup as `<file>.checkpoint`.
    pub checkpoint_path: Option<PathBuf>,
}

/// Copies the store consistently (the server may be running), then verifies the copy in
/// full before reporting success.
pub fn backup(data_dir: &Path, out: &Path, progress: Progress<'_>) -> Result<BackupReport, DurabilityError> {
    // The backup and the files written beside it are all new (`symlink_metadata`: a
    // dangling link counts too).
    for path in [
        out.to_path_buf(),
        PathBuf::from(format!("{}.checkpoint", out.display())),
        PathBuf::from(format!("{}.master.key", out.display())),
    ] {
        if std::fs::symlink_metadata(&path).is_ok() {
            return Err(DurabilityError::Usage(format!("{} already exists; choose a new file name", path.display())));
        }
    }
    let store = open_existing(data_dir)?;
    store.backup_to(out)?;
    let copy = SqliteStore::open_read_only(out)?;
    let total = copy.len()?;
    let verified = verified_reach(&copy, &mut |n| progress(n, total));
    let reached = match verified {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(out);
            return Err(e);
        }
    };
    let checkpoint_path = match &reached.checkpoint {
        Some(cp) => {
            let p = PathBuf::from(format!("{}.checkpoint", out.display()));
            // Only a new file: never over (or through a symlink at) one already there.
            let written =
                std::fs::OpenOptions::new().write(true).create_new(true).open(&p).and_then(|mut f| {
                    std::io::Write::write_all(&mut f, cp.note.as_bytes()).and_then(|()| f.sync_all())
                });
            if let Err(e) = written {
                let _ = std::fs::remove_file(out);
                return Err(StoreError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))).into());
            }
            Some(p)
        }
        None => None,
    };
    // The sealed keys travel in the copy; a master key generated into the data directory
    // must travel with it (as `<file>.master.key`, 0600), or the copy cannot sign again.
    let master = data_dir.join(crate::kek::MASTER_KEY_FILE);
    if master.exists() {
        let text = std::fs::read_to_string(&master).map_err(StoreError::Io)?;
        crate::write_new_secret(&PathBuf::from(format!("{}.master.key", out.display())), text.trim())
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
    }
    Ok(BackupReport { path: out.to_path_buf(), reached, checkpoint_path })
}

/// How far a restore goes.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    End,
    /// The state after the first N events.
    Seq(u64),
    /// Every event stamped at or before this instant (the longest such prefix).
    Time(Timestamp),
}

/// The sequence a point in time corresponds to: the number of events before the first
/// one stamped after `t`.
pub fn seq_at_time(store: &dyn LedgerStore, t: Timestamp) -> Result<u64, DurabilityError> {
    let mut n = 0u64;
    let mut failure = None;
    let stop = || StoreError::Invalid("found".into());
    let r = store.scan(0, &mut |e| match check_event(&e) {
        Ok(ev) if ev.at > t => Err(stop()),
        Ok(_) => {
            n += 1;
            Ok(())
        }
        Err(err) => {
            failure = Some(err);
            Err(stop())
        }
    });
    if let Some(f) = failure {
        return Err(f.into());
    }
    if let Err(e) = r
        && !matches!(e, StoreError::Invalid(_))
    {
        return Err(e.into());
    }
    Ok(n)
}

/// Restores a backup into a new data directory, up to `until`, and verifies the result.
pub fn restore(from: &Path, data_dir: &Path, until: Until, progress: Progress<'_>) -> Result<Reached, DurabilityError> {
    let dest = crate::db_path(data_dir);
    if dest.exists() {
        return Err(DurabilityError::Usage(format!(
            "{} already holds a ledger; restore into a new, empty directory",
            data_dir.display()
        )));
    }
    if !from.exists() {
        return Err(DurabilityError::Usage(format!("no backup at {}", from.display())));
    }
    let source = SqliteStore::open_read_only(from)?;
    let total = source.len()?;
    let n = match until {
        Until::End => total,
        Until::Seq(n) if n > total => {
            return Err(DurabilityError::Usage(format!(
                "the backup has {total} events; cannot restore to sequence {n}"
            )));
        }
        Until::Seq(n) => {
            inside_request(&source, n, total)?;
            n
        }
        Until::Time(t) => seq_at_time(&source, t)?,
    };
    if n == 0 && total > 0 {
        // Nothing to serve: a server on it would start as a new one, with new keys.
        return Err(DurabilityError::Usage(
            "no event of the backup is at or before that point, so the restored ledger would be empty; give a later \
             --until-time (GET /v1/events?order=asc shows the first events' times) or an --until-seq of 1 or more"
                .into(),
        ));
    }
    crate::create_private_dir(data_dir).map_err(StoreError::Io)?;
    // Built beside its final name and renamed there only once cut and verified: a crash
    // or Ctrl-C on the way leaves no ledger the server would start from.
    let building = data_dir.join(format!("{}.restoring", crate::DB_FILE));
    let remove = |path: &Path| {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    };
    remove(&building);
    let master = PathBuf::from(format!("{}.master.key", from.display()));
    let master_dest = data_dir.join(crate::kek::MASTER_KEY_FILE);
    let wrote_master = master.exists() && !master_dest.exists();
    if wrote_master {
        let text = std::fs::read_to_string(&master).map_err(StoreError::Io)?;
        crate::write_new_secret(&master_dest, text.trim())
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
    }
    let result = (|| {
        source.backup_to(&building)?;
        let reached = {
            let mut restored = SqliteStore::open(&building)?;
            restored.truncate_for_restore(n)?;
            verified_reach(&restored, &mut |done| progress(done, n))?
        };
        // Closing the last connection folds the WAL into the file; one left behind
        // would not follow the rename.
        let wal = PathBuf::from(format!("{}-wal", building.display()));
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            return Err(DurabilityError::Usage(format!("{} was not folded into the restored file", wal.display())));
        }
        remove(&wal);
        std::fs::File::open(&building).and_then(|f| f.sync_all()).map_err(StoreError::Io)?;
        std::fs::rename(&building, &dest).map_err(StoreError::Io)?;
        #[cfg(unix)]
        std::fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(StoreError::Io)?;
        Ok(reached)
    })();
    if result.is_err() {
        remove(&building);
        if wrote_master {
            let _ = std::fs::remove_file(&master_dest);
        }
    }
    result
}

/// Refuses a cut at `n` that falls inside the events of one request (they share their
/// request id and instant: an import can write thousands), which would restore a state
/// the ledger never had; names the nearest cuts on either side.
fn inside_request(source: &dyn LedgerStore, n: u64, total: u64) -> Result<(), DurabilityError> {
    if n == 0 || n >= total {
        return Ok(());
    }
    let origin = |i: u64| -> Result<(String, Timestamp), DurabilityError> {
        let e = source.read(i, i + 1)?.pop().ok_or_else(|| ReplayError::Internal(format!("event {i} is missing")))?;
        let event = check_event(&e)?;
        Ok((event.request_id, event.at))
    };
    let cut = origin(n)?;
    if origin(n - 1)? != cut {
        return Ok(());
    }
    let mut before = n - 1;
    while before > 0 && origin(before - 1)? == cut {
        before -= 1;
    }
    let mut after = n + 1;
    while after < total && origin(after)? == cut {
        after += 1;
    }
    Err(DurabilityError::Usage(format!(
        "sequence {n} falls inside the events of one request ({}): restoring to it would give a state the ledger never had; use --until-seq {before} or --until-seq {after}",
        cut.0
    )))
}

pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn b64(h: &Hash) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(h)
}
