//! C2SP signed notes with Ed25519: the envelope around checkpoints.
//!
//! The format and the rules for opening a note follow
//! `golang.org/x/mod/sumdb/note`, which C2SP `signed-note` codifies, so that
//! existing transparency-log tooling (witnesses, monitors, the Go libraries)
//! can check what Tollgate signs, and Tollgate can check what they sign.

use std::collections::HashSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The signature type byte of Ed25519 in key IDs and encoded keys.
const ALG_ED25519: u8 = 0x01;

/// Every signature line starts with U+2014 EM DASH and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// A note with more signatures than this is refused, as the Go
/// implementation does, so that a hostile note cannot make us verify forever.
pub const MAX_SIGNATURES: usize = 100;

/// Why a key, a text or a note was refused.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum NoteError {
    #[error("invalid key name {0:?}: it must be non-empty, without spaces, '+' or control characters")]
    InvalidName(String),
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    #[error("unknown signature algorithm {0:#04x}")]
    UnknownAlgorithm(u8),
    #[error("key ID {stated:08x} does not match the key, whose ID is {computed:08x}")]
    KeyIdMismatch { stated: u32, computed: u32 },
    #[error("text cannot be signed: {0}")]
    InvalidText(&'static str),
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    #[error("note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("more than one known key is {name}+{key_id:08x}")]
    AmbiguousKey { name: String, key_id: u32 },
    #[error("invalid signature by known key {name}+{key_id:08x}")]
    InvalidSignature { name: String, key_id: u32 },
    /// The note is well formed but none of its signatures is by a known key;
    /// the parsed note is kept for callers that want to report who did sign.
    #[error("note has no signature by a known key")]
    Unverified(Box<Note>),
}

/// The C2SP key ID: it lets a verifier pick the right key for a signature
/// line without trying them all, and commits to the name and algorithm.
pub fn key_id(name: &str, public: &VerifyingKey) -> u32 {
    let mut encoded = [0u8; 33];
    encoded[0] = ALG_ED25519;
    encoded[1..].copy_from_slice(public.as_bytes());
    key_id_of_encoded(name, &encoded)
}

/// The key ID over an encoded key (type byte ‖ key), whatever its type, so a
/// stated ID can be checked before the key itself is understood.
fn key_id_of_encoded(name: &str, encoded: &[u8]) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update(encoded);
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Names end at the first space of a signature line and at the first '+' of
/// an encoded key, and control characters cannot appear in a note at all.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+' || c < ' ')
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if is_valid_name(name) { Ok(()) } else { Err(NoteError::InvalidName(name.to_owned())) }
}

/// Signed notes carry no ASCII control characters other than newline.
fn has_control_character(s: &str) -> bool {
    s.bytes().any(|b| b < b' ' && b != b'\n')
}

/// Splits "<name>+<8 hex digits>+<base64 key>" (the base64 may itself hold
/// '+', which is why only the first two are separators).
fn split_key(s: &str) -> Result<(&str, u32, Vec<u8>), NoteError> {
    let (name, rest) = s.split_once('+').ok_or(NoteError::MalformedKey("missing '+'"))?;
    let (id_hex, key_b64) = rest.split_once('+').ok_or(NoteError::MalformedKey("missing second '+'"))?;
    check_name(name)?;
    if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NoteError::MalformedKey("key ID must be 8 hex digits"));
    }
    let stated = u32::from_str_radix(id_hex, 16).map_err(|_| NoteError::MalformedKey("key ID must be 8 hex digits"))?;
    let key = STANDARD.decode(key_b64).map_err(|_| NoteError::MalformedKey("key is not standard base64"))?;
    if key.is_empty() {
        return Err(NoteError::MalformedKey("empty key"));
    }
    Ok((name, stated, key))
}

/// The Ed25519 key bytes of an encoded key, once its type is known good.
fn ed25519_bytes(encoded: &[u8]) -> Result<[u8; 32], NoteError> {
    match encoded.split_first() {
        Some((&ALG_ED25519, key)) => {
            <[u8; 32]>::try_from(key).map_err(|_| NoteError::MalformedKey("Ed25519 key must be 32 bytes"))
        }
        Some((&alg, _)) => Err(NoteError::UnknownAlgorithm(alg)),
        None => Err(NoteError::MalformedKey("empty key")),
    }
}

/// A named Ed25519 key that signs notes.
pub struct Signer {
    name: String,
    key_id: u32,
    key: SigningKey,
}

/// Leaves the secret out of logs.
impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(name: impl Into<String>, key: SigningKey) -> Result<Self, NoteError> {
        let name = name.into();
        check_name(&name)?;
        let key_id = key_id(&name, &key.verifying_key());
        Ok(Self { name, key_id, key })
    }

    /// Parses the Go signer-key format
    /// `PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 ‖ 32-byte seed)>`; the
    /// prefix is there so that a secret is never mistaken for a public key.
    pub fn parse(skey: &str) -> Result<Self, NoteError> {
        let rest = skey
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::MalformedKey("signer key must start with PRIVATE+KEY+"))?;
        let (name, stated, encoded) = split_key(rest)?;
        let signer = Self::new(name, SigningKey::from_bytes(&ed25519_bytes(&encoded)?))?;
        // The stated ID names the public key, which only now is known.
        if signer.key_id != stated {
            return Err(NoteError::KeyIdMismatch { stated, computed: signer.key_id });
        }
        Ok(signer)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The verifier for this key, for tests and for serving it.
    pub fn verifier(&self) -> Verifier {
        Verifier { name: self.name.clone(), key_id: self.key_id, key: self.key.verifying_key() }
    }

    /// The public verifier key, `<name>+<hex key ID>+<base64(0x01 ‖ key)>`,
    /// which is what clients are configured with.
    pub fn verifier_key(&self) -> String {
        self.verifier().to_string()
    }

    /// Signs `text` into a note with one signature line.
    ///
    /// Refuses texts that [`open`] would refuse, so that signing never
    /// produces a note nobody can read.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if text.is_empty() {
            return Err(NoteError::InvalidText("text is empty"));
        }
        if !text.ends_with('\n') {
            return Err(NoteError::InvalidText("text must end in a newline"));
        }
        if has_control_character(text) {
            return Err(NoteError::InvalidText("control character other than newline"));
        }
        let signature = self.key.sign(text.as_bytes());
        let mut raw = Vec::with_capacity(4 + Signature::BYTE_SIZE);
        raw.extend_from_slice(&self.key_id.to_be_bytes());
        raw.extend_from_slice(&signature.to_bytes());
        Ok(format!("{text}\n{SIG_PREFIX}{} {}\n", self.name, STANDARD.encode(raw)))
    }
}

/// A named Ed25519 public key that checks notes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl Verifier {
    pub fn new(name: impl Into<String>, key: VerifyingKey) -> Result<Self, NoteError> {
        let name = name.into();
        check_name(&name)?;
        if key.is_weak() {
            return Err(NoteError::MalformedKey("Ed25519 key of small order"));
        }
        let key_id = key_id(&name, &key);
        Ok(Self { name, key_id, key })
    }

    /// Parses a verifier key `<name>+<hex key ID>+<base64(0x01 ‖ key)>`,
    /// refusing one whose stated ID is not the key's: the ID is how signature
    /// lines find their key, so a wrong one would silently verify nothing.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let (name, stated, encoded) = split_key(vkey)?;
        let computed = key_id_of_encoded(name, &encoded);
        if computed != stated {
            return Err(NoteError::KeyIdMismatch { stated, computed });
        }
        let key = VerifyingKey::from_bytes(&ed25519_bytes(&encoded)?)
            .map_err(|_| NoteError::MalformedKey("not an Ed25519 public key"))?;
        Self::new(name, key)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Strict verification: rejects non-canonical and small-order encodings,
    /// which an honest signer never produces.
    fn verifies(&self, text: &str, signature: &[u8]) -> bool {
        Signature::from_slice(signature).is_ok_and(|sig| self.key.verify_strict(text.as_bytes(), &sig).is_ok())
    }
}

/// Writes the verifier key that [`Verifier::parse`] reads.
impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut encoded = [0u8; 33];
        encoded[0] = ALG_ED25519;
        encoded[1..].copy_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.key_id, STANDARD.encode(encoded))
    }
}

/// An opened note: its text, and who signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The signed text, including its final newline.
    pub text: String,
    /// Every distinct signature line, in order.
    pub signatures: Vec<NoteSignature>,
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    /// True when a known verifier checked it; lines by unknown keys are kept
    /// but unchecked, as C2SP requires.
    pub verified: bool,
}

/// Opens a signed note, checking its signatures against the known
/// `verifiers`.
///
/// As in Go's `note.Open`: a signature by an unknown key is recorded
/// unverified; a bad signature by a known key fails the whole note (it is an
/// attack or a bug, never noise); repeated lines are dropped; and a note with
/// no signature by a known key fails with [`NoteError::Unverified`].
pub fn open(msg: &str, verifiers: &[Verifier]) -> Result<Note, NoteError> {
    if has_control_character(msg) {
        return Err(NoteError::Malformed("control character other than newline"));
    }
    // Signature lines never contain a blank line, so the last one separates
    // them from the text, which may contain blank lines of its own.
    let split = msg.rfind("\n\n").ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let text = &msg[..=split];
    let block = &msg[split + 2..];
    let lines = block
        .strip_suffix('\n')
        .filter(|lines| !lines.is_empty())
        .ok_or(NoteError::Malformed("signature lines must end in a newline"))?;

    let mut note = Note { text: text.to_owned(), signatures: Vec::new() };
    let mut seen_known: HashSet<(&str, u32)> = HashSet::new();
    let mut seen_unknown: HashSet<&str> = HashSet::new();
    for (count, line) in lines.split('\n').enumerate() {
        if count >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        let (name, key_id, signature) = parse_signature_line(line)?;
        let mut known = verifiers.iter().filter(|v| v.name == name && v.key_id == key_id);
        let verified = match (known.next(), known.next()) {
            (None, _) => {
                if !seen_unknown.insert(line) {
                    continue;
                }
                false
            }
            (Some(_), Some(_)) => {
                return Err(NoteError::AmbiguousKey { name: name.to_owned(), key_id });
            }
            (Some(verifier), None) => {
                if !seen_known.insert((name, key_id)) {
                    continue;
                }
                if !verifier.verifies(text, &signature) {
                    return Err(NoteError::InvalidSignature { name: name.to_owned(), key_id });
                }
                true
            }
        };
        note.signatures.push(NoteSignature { name: name.to_owned(), key_id, verified });
    }
    if !note.signatures.iter().any(|s| s.verified) {
        return Err(NoteError::Unverified(Box::new(note)));
    }
    Ok(note)
}

/// Splits "— <name> <base64(key ID ‖ signature)>" into its parts.
fn parse_signature_line(line: &str) -> Result<(&str, u32, Vec<u8>), NoteError> {
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or(NoteError::Malformed("signature line must start with an em dash and a space"))?;
    let (name, b64) = rest.split_once(' ').ok_or(NoteError::Malformed("signature line has no signature"))?;
    if !is_valid_name(name) {
        return Err(NoteError::Malformed("invalid key name in signature line"));
    }
    let raw = STANDARD.decode(b64).map_err(|_| NoteError::Malformed("signature is not standard base64"))?;
    match raw.split_first_chunk::<4>() {
        Some((id, signature)) if !signature.is_empty() => Ok((name, u32::from_be_bytes(*id), signature.to_vec())),
        _ => Err(NoteError::Malformed("signature is too short")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_go_rules() {
        for good in ["PeterNeumann", "example.com/log", "ünïcode", "a"] {
            assert!(is_valid_name(good), "{good:?}");
        }
        for bad in ["", "a b", "a+b", "a\tb", "a\u{a0}b", "a\u{2003}b", "a\x01b"] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn debug_leaves_the_secret_out() {
        let signer = Signer::new("test", SigningKey::from_bytes(&[7; 32])).expect("valid name");
        let shown = format!("{signer:?}");
        assert!(shown.contains("test"));
        assert!(!shown.contains("key:"), "{shown}");
    }
}
