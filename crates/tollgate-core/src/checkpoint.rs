//! C2SP tlog-checkpoint: the signed statement "the ledger had this many
//! entries and this root".
//!
//! The server signs one per batch or tick; a client that keeps the last one
//! it saw can ask for a consistency proof to the next and so detect a ledger
//! that was rewritten. The body is a signed note's text, so the same parser
//! must accept exactly what [`Checkpoint::body`] writes and nothing looser.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::merkle::Hash;
use crate::note::{self, NoteError, Signer, Verifier};

/// A log's size and root at one moment, under the log's origin name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Names the log, so that two logs never produce the same checkpoint.
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Opaque extra lines that the signature also covers.
    pub extensions: Vec<String>,
}

/// Why a checkpoint was refused.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("checkpoint body must end in a newline")]
    MissingNewline,
    #[error("checkpoint has no {0} line")]
    MissingLine(&'static str),
    #[error("checkpoint origin is empty")]
    EmptyOrigin,
    #[error("checkpoint origin or extension holds a newline or control character")]
    ControlCharacter,
    #[error("tree size {0:?} is not a decimal number without leading zeros")]
    InvalidSize(String),
    #[error("root {0:?} is not the standard base64 of 32 bytes")]
    InvalidRoot(String),
    #[error("extension line {0} is empty")]
    EmptyExtension(usize),
    #[error(transparent)]
    Note(#[from] NoteError),
}

impl Checkpoint {
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self { origin: origin.into(), size, root, extensions: Vec::new() }
    }

    /// The text that gets signed. Fields that [`Checkpoint::parse`] would
    /// refuse are written as they are; [`sign`] checks them first.
    pub fn body(&self) -> String {
        let mut body = format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root));
        for line in &self.extensions {
            body.push_str(line);
            body.push('\n');
        }
        body
    }

    /// Parses a checkpoint body strictly: one spelling per checkpoint, so
    /// that two parties comparing checkpoints compare the same bytes.
    pub fn parse(body: &str) -> Result<Self, CheckpointError> {
        let content = body.strip_suffix('\n').ok_or(CheckpointError::MissingNewline)?;
        if content.bytes().any(|b| b < b' ' && b != b'\n') {
            return Err(CheckpointError::ControlCharacter);
        }
        let mut lines = content.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        let size = lines.next().ok_or(CheckpointError::MissingLine("tree size"))?;
        let root = lines.next().ok_or(CheckpointError::MissingLine("root hash"))?;
        let extensions = lines
            .enumerate()
            .map(
                |(i, line)| {
                    if line.is_empty() { Err(CheckpointError::EmptyExtension(i)) } else { Ok(line.to_owned()) }
                },
            )
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { origin: origin.to_owned(), size: parse_size(size)?, root: parse_root(root)?, extensions })
    }

    /// Checks that [`Checkpoint::body`] parses back into `self`.
    fn validate(&self) -> Result<(), CheckpointError> {
        if self.origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        let has_control = |s: &str| s.bytes().any(|b| b < b' ');
        if has_control(&self.origin) || self.extensions.iter().any(|e| has_control(e)) {
            return Err(CheckpointError::ControlCharacter);
        }
        if let Some(i) = self.extensions.iter().position(String::is_empty) {
            return Err(CheckpointError::EmptyExtension(i));
        }
        Ok(())
    }
}

/// Decimal, ASCII digits only, no sign and no leading zero except "0".
fn parse_size(line: &str) -> Result<u64, CheckpointError> {
    let canonical =
        !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) && (line == "0" || !line.starts_with('0'));
    if !canonical {
        return Err(CheckpointError::InvalidSize(line.to_owned()));
    }
    line.parse().map_err(|_| CheckpointError::InvalidSize(line.to_owned()))
}

/// The base64 engine refuses non-canonical padding and trailing bits, so
/// each root has a single spelling.
fn parse_root(line: &str) -> Result<Hash, CheckpointError> {
    STANDARD
        .decode(line)
        .ok()
        .and_then(|bytes| Hash::try_from(bytes).ok())
        .ok_or_else(|| CheckpointError::InvalidRoot(line.to_owned()))
}

/// Signs a checkpoint into a signed note.
pub fn sign(checkpoint: &Checkpoint, signer: &Signer) -> Result<String, CheckpointError> {
    checkpoint.validate()?;
    Ok(signer.sign(&checkpoint.body())?)
}

/// Opens a signed checkpoint, requiring a valid signature by `verifier`.
///
/// The origin need not equal the verifier's key name: C2SP lets a log sign
/// under another name. Signatures by other keys (witnesses) are ignored.
pub fn open(signed: &str, verifier: &Verifier) -> Result<Checkpoint, CheckpointError> {
    let note = note::open(signed, std::slice::from_ref(verifier))?;
    Checkpoint::parse(&note.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_one_spelling() {
        for (line, want) in [("0", Some(0)), ("7", Some(7)), ("18446744073709551615", Some(u64::MAX))] {
            assert_eq!(parse_size(line).ok(), want, "{line:?}");
        }
        for line in ["", "00", "01", "+1", "-1", " 1", "1 ", "1_000", "0x10", "18446744073709551616", "１"] {
            assert!(parse_size(line).is_err(), "{line:?}");
        }
    }
}
