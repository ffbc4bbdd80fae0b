//! Following a shared ledger: every node folds what the others append.
//!
//! One thread per node LISTENs for the notification each append sends in its
//! transaction, and asks the engine to catch up when one arrives; it also asks every
//! second without one, so a lost notification (or a connection that dropped and came
//! back) costs at most a second. The committer does the folding (`Work::CatchUp`), so
//! the decider and committer never see events the other has not.

use std::thread;
use std::time::Duration;

use tokio::sync::mpsc;
use tollgate_store::{Follow, LedgerStore};

use crate::engine::Job;

/// How long the follower waits for a notification before polling anyway.
pub const POLL: Duration = Duration::from_secs(1);

/// Starts the follower thread. It holds the engine's queue weakly and stops when the
/// engine does.
pub(crate) fn spawn(store: Box<dyn LedgerStore>, tx: mpsc::WeakSender<Job>) -> std::io::Result<()> {
    thread::Builder::new().name("tollgate-tail".into()).spawn(move || run(&*store, &tx))?;
    Ok(())
}

fn run(store: &dyn LedgerStore, tx: &mpsc::WeakSender<Job>) {
    let mut listener: Option<Box<dyn Follow>> = None;
    loop {
        if listener.is_none() {
            match store.follow() {
                Ok(l) => listener = l,
                Err(e) => tracing::warn!(error = %e, "cannot LISTEN for appends; polling until it can"),
            }
        }
        match listener.as_mut() {
            Some(l) => {
                if let Err(e) = l.wait(POLL) {
                    tracing::warn!(error = %e, "the LISTEN connection failed; reconnecting");
                    listener = None;
                    thread::sleep(POLL);
                }
            }
            None => thread::sleep(POLL),
        }
        let Some(tx) = tx.upgrade() else { return };
        // A full queue means the engine is busy: it folds on the next wake-up.
        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Job::CatchUp) {
            return;
        }
    }
}
