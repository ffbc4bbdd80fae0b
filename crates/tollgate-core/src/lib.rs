//! Tollgate's pure domain: everything that decides, folds, validates and proves.
//!
//! Layout, in the order data flows:
//! - [`catalog`], [`license`], [`ids`], [`key`], [`timestamp`]: the nouns.
//! - [`command`]: `decide(state, command, meta, now) -> events | refusal`.
//! - [`event`]: the events and their canonical (RFC 8785) encoding, the ledger's leaves.
//! - [`state`]: the fold of events (`State::apply`), its canonical encoding and digest.
//! - [`validate`]: online validation against a state at an instant.
//! - [`gate`]: feature gates (phased rollouts, Unleash-compatible) bound to licenses.
//! - [`models`]: the licensing models of a license ([`machine`], [`seat`], [`lease`],
//!   [`meter`], [`overrides`]), decided and folded beside it.
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
pub mod entitlements;
pub mod event;
pub mod gate;
pub mod ids;
pub mod import;
pub mod key;
pub mod keys;
pub mod lease;
pub mod license;
pub mod machine;
pub mod merkle;
pub mod meter;
pub mod models;
pub mod note;
pub mod overrides;
pub mod refusal;
pub mod seat;
pub mod state;
pub mod timestamp;
pub mod token;
pub mod validate;

pub use command::{Command, decide};
pub use event::{Event, EventKind, Meta};
pub use refusal::{Refusal, RefusalKind};
pub use state::State;
pub use timestamp::Timestamp;
