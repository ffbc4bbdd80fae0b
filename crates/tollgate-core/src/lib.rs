//! Tollgate's pure domain: everything that decides, folds, validates and proves.
//!
//! Layout, in the order data flows:
//! - [`catalog`], [`license`], [`ids`], [`key`], [`timestamp`]: the nouns.
//! - [`command`]: `decide(state, command, meta, now) -> events | refusal`.
//! - [`event`]: the events and their canonical (RFC 8785) encoding, the ledger's leaves.
//! - [`state`]: the fold of events (`State::apply`), its canonical encoding and digest.
//! - [`validate`]: online validation against a state at an instant.
//! - [`merkle`], [`note`], [`checkpoint`]: the RFC 6962 log, C2SP signed notes and
//!   checkpoints that make the ledger tamper-evident.
//!
//! Invariant: no IO, no async, no clock, no randomness. Time and random draws are
//! arguments, so the same ledger always folds into the same state.
#![forbid(unsafe_code)]

pub mod canonical;
pub mod catalog;
pub mod checkpoint;
pub mod command;
pub mod event;
pub mod ids;
pub mod key;
pub mod license;
pub mod merkle;
pub mod note;
pub mod refusal;
pub mod state;
pub mod timestamp;
pub mod validate;

pub use command::{Command, decide};
pub use event::{Event, EventKind, Meta};
pub use refusal::{Refusal, RefusalKind};
pub use state::State;
pub use timestamp::Timestamp;
